//! Checking each `[[source]]` and the relations between sources.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::check::{Checker, describe};
use super::raw::*;
use super::*;
use crate::engine::ignore::{IgnoreRule, IgnoreRules, Selector};
use crate::engine::recreate::Recreate;
use crate::engine::takeover::DriftManagers;
use crate::engine::{Adoption, ClusterScoped, DriftRules, NamespacePattern, Tenancy};
use crate::health::dependency::Dependencies;
use crate::kube::Impersonation;
use crate::kube::is_dns_label;
use crate::render::{HelmSettings, RenderSettings, Vars, VarsFrom, is_var_name};
use crate::sops::{Decryption, SecretRef};
use crate::source::artifact::VersionConstraint;

impl Checker<'_> {
    pub(super) fn sources(&mut self, raws: Vec<RawSource>) -> Vec<SourceConfig> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut sources = Vec::new();
        for (index, raw) in raws.into_iter().enumerate() {
            let at = match &raw.name {
                Some(name) => format!("source[{index}] {name:?}"),
                None => format!("source[{index}]"),
            };
            if let Some(name) = &raw.name {
                if let Some(first) = seen.insert(name.clone(), index) {
                    self.problem(
                        &at,
                        format!(
                            "name = {name:?}: already used by source[{first}]; names must be unique"
                        ),
                    );
                }
            }
            if let Some(source) = self.source(&at, raw) {
                sources.push(source);
            }
        }
        self.dependencies(&sources);
        self.tenancy_reads(&sources);
        sources
    }

    /// The ServiceAccount a source acts as: its own `service_account = "NS/NAME"`,
    /// else `[tenancy] default_service_account` in the source's namespace.
    fn acting_as(
        &mut self,
        at: &str,
        service_account: Option<&str>,
        namespace: &str,
    ) -> Option<Impersonation> {
        if let Some(text) = service_account {
            let parsed = text
                .split_once('/')
                .filter(|(ns, name)| is_dns_label(ns) && !name.is_empty());
            return match parsed {
                Some((ns, name)) => Some(Impersonation::service_account(ns, name)),
                None => {
                    self.problem(
                        at,
                        format!(
                            "service_account = {text:?}: write NAMESPACE/NAME, e.g.                              \"team-a/deployer\""
                        ),
                    );
                    None
                }
            };
        }
        let name = self.default_service_account.clone()?;
        Some(Impersonation::service_account(namespace, &name))
    }

    /// `allowed_namespaces` (the source's own namespace must be among them) and
    /// `allow_cluster_scoped` (default: false when the source acts as a
    /// ServiceAccount).
    fn tenancy(&mut self, at: &str, raw: &RawSource, namespace: &str, acting: bool) -> Tenancy {
        let mut patterns = Vec::new();
        for text in raw.allowed_namespaces.iter().flatten() {
            match NamespacePattern::parse(text) {
                Ok(pattern) => patterns.push(pattern),
                Err(why) => self.problem(at, format!("allowed_namespaces: {why}")),
            }
        }
        let tenancy = Tenancy {
            namespaces: raw.allowed_namespaces.as_ref().map(|_| patterns),
            cluster_scoped: match raw.allow_cluster_scoped.unwrap_or(!acting) {
                true => ClusterScoped::Allowed,
                false => ClusterScoped::Refused,
            },
        };
        if !tenancy.allows_namespace(namespace) {
            self.problem(
                at,
                format!(
                    "namespace = {namespace:?} is not among its allowed_namespaces; the                      ApplySet parent lives there"
                ),
            );
        }
        tenancy
    }

    /// A source may only read what it may write: `depends_on` sources in its
    /// namespaces, `vars_from` objects in them.
    fn tenancy_reads(&mut self, sources: &[SourceConfig]) {
        let namespaces: HashMap<&str, &str> = sources
            .iter()
            .map(|s| (s.name.as_str(), s.namespace.as_str()))
            .collect();
        for source in sources {
            let at = format!("source {:?}", source.name);
            for dependency in &source.depends_on {
                let Some(ns) = namespaces.get(dependency.as_str()) else {
                    continue;
                };
                if !source.tenancy.allows_namespace(ns) {
                    self.problem(
                        &at,
                        format!(
                            "depends_on {dependency:?}: that source is in namespace {ns:?},                              outside this source's allowed_namespaces"
                        ),
                    );
                }
            }
            for var in &source.render.vars_from {
                if !source.tenancy.allows_namespace(&var.namespace) {
                    self.problem(
                        &at,
                        format!(
                            "vars_from {:?}: outside this source's allowed_namespaces",
                            var.to_string()
                        ),
                    );
                }
            }
        }
    }

    /// Every `depends_on` names another source, and no chain of them comes back.
    fn dependencies(&mut self, sources: &[SourceConfig]) {
        let names: HashMap<&str, &SourceConfig> =
            sources.iter().map(|s| (s.name.as_str(), s)).collect();
        for source in sources {
            for dependency in &source.depends_on {
                let at = format!("source {:?}: depends_on", source.name);
                if *dependency == source.name {
                    self.problem(&at, format!("{dependency:?} is this source itself"));
                } else if !names.contains_key(dependency.as_str()) {
                    self.problem(&at, format!("no source is called {dependency:?}"));
                }
            }
        }
        if let Some(cycle) = dependency_cycle(sources) {
            self.problem(
                "depends_on",
                format!(
                    "the sources depend on each other in a cycle: {}; none of them could \
                     ever reconcile",
                    cycle.join(" → ")
                ),
            );
        }
    }

    fn source(&mut self, at: &str, raw: RawSource) -> Option<SourceConfig> {
        let name = self.source_name(at, raw.name.as_deref());
        let interval = self.duration(at, "interval", raw.interval.as_ref(), DEFAULT_INTERVAL);
        let wave_timeout = self.duration(
            at,
            "wave_timeout",
            raw.wave_timeout.as_ref(),
            DEFAULT_WAVE_TIMEOUT,
        );
        let full_resync_every = self.full_resync_every(at, raw.full_resync_every);
        let relist_every = self.duration(
            at,
            "relist_every",
            raw.relist_every.as_ref(),
            self.relist_every,
        );
        let namespace = raw.namespace.clone().unwrap_or(DEFAULT_NAMESPACE.into());
        if !is_dns_label(&namespace) {
            self.problem(
                at,
                format!(
                    "namespace = {namespace:?}: not a valid namespace name; use lowercase \
                     letters, digits and '-' (at most 63 characters)"
                ),
            );
        }
        let kind = self.source_kind(at, &raw);
        let acting_as = self.acting_as(at, raw.service_account.as_deref(), &namespace);
        let tenancy = self.tenancy(at, &raw, &namespace, acting_as.is_some());
        let drift = self.drift(at, &raw);
        let render = self.source_render(at, &raw);
        let global = self.health.clone();
        let health = self.health_rules(&format!("{at}: health"), &raw.health, &global);
        let (dependencies, problems) = Dependencies::read(
            &format!("{at}: depends_on"),
            raw.depends_on.unwrap_or_default(),
        );
        self.problems
            .extend(problems.iter().map(ToString::to_string));
        Some(SourceConfig {
            name: name?,
            kind: kind?,
            interval,
            full_resync_every,
            relist_every,
            namespace,
            prune: raw.prune.unwrap_or(true),
            self_heal: raw.self_heal.unwrap_or(true),
            allow_mass_prune: raw.allow_mass_prune.unwrap_or(false),
            create_namespace: raw.create_namespace.unwrap_or(false),
            adopt: match raw.adopt {
                Some(true) => Adoption::Always,
                _ => Adoption::Annotated,
            },
            acting_as: acting_as.clone(),
            tenancy,
            cluster: raw.cluster.clone(),
            drift,
            render,
            wave_timeout,
            depends_on: dependencies.sources,
            depends_on_objects: dependencies.objects,
            health,
        })
    }

    fn drift(&mut self, at: &str, raw: &RawSource) -> DriftRules {
        let managers = DriftManagers::named_or_default(raw.drift_managers.as_deref());
        let ignore = raw
            .ignore
            .iter()
            .enumerate()
            .filter_map(|(index, rule)| self.ignore_rule(&format!("{at}: ignore[{index}]"), rule))
            .collect();
        DriftRules {
            managers,
            ignore: IgnoreRules(ignore),
            recreate: Recreate::allowed_for_all(raw.recreate.unwrap_or(false)),
        }
    }

    fn ignore_rule(&mut self, at: &str, raw: &RawIgnore) -> Option<IgnoreRule> {
        if raw.paths.is_empty() {
            self.problem(
                at,
                "paths is missing; add paths = [\"/spec/replicas\"] (JSON pointers)",
            );
            return None;
        }
        let mut paths = Vec::new();
        for path in &raw.paths {
            match path.parse() {
                Ok(pointer) => paths.push(pointer),
                Err(e) => self.problem(at, format!("paths: {e}")),
            }
        }
        let selector = Selector {
            kind: raw.kind.clone(),
            namespace: raw.namespace.clone(),
            name: raw.name.clone(),
        };
        (paths.len() == raw.paths.len()).then_some(IgnoreRule { selector, paths })
    }

    fn source_name(&mut self, at: &str, name: Option<&str>) -> Option<String> {
        let Some(name) = name else {
            self.problem(
                at,
                "name is missing; add name = \"…\" (a DNS label such as \"shop\")",
            );
            return None;
        };
        if !is_dns_label(name) {
            self.problem(
                at,
                format!(
                    "name = {name:?}: not a DNS label; use lowercase letters, digits and '-', \
                     at most 63 characters, starting and ending with a letter or digit \
                     (the name becomes an ApplySet name and the URL /hooks/git/<name>)"
                ),
            );
        }
        Some(name.to_string())
    }

    fn full_resync_every(&mut self, at: &str, value: Option<i64>) -> u32 {
        let Some(value) = value else {
            return DEFAULT_FULL_RESYNC_EVERY;
        };
        match u32::try_from(value) {
            Ok(n) if n >= 1 => n,
            _ => {
                self.problem(
                    at,
                    format!(
                        "full_resync_every = {value}: must be a whole number from 1 (every \
                         resync is a full reconcile) to {}; the default is \
                         {DEFAULT_FULL_RESYNC_EVERY}",
                        u32::MAX
                    ),
                );
                DEFAULT_FULL_RESYNC_EVERY
            }
        }
    }

    fn source_kind(&mut self, at: &str, raw: &RawSource) -> Option<SourceLocation> {
        if let Some(location) = self.oci_location(at, raw) {
            return location;
        }
        let set: Vec<&str> = [
            ("dir", raw.dir.is_some()),
            ("git", raw.git.is_some()),
            ("chart", raw.chart.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if set.len() > 1 {
            self.problem(
                at,
                format!(
                    "both {} are set; a source is one of dir, git or chart, keep one",
                    set.join(" and ")
                ),
            );
            return None;
        }
        if raw.chart.is_none() {
            for (key, value) in raw.chart_only_keys() {
                self.problem(
                    at,
                    format!(
                        "{key} = {value:?}: only chart sources have {key}; remove it, or \
                         make this a chart source (chart = \"NAME\" with helm_repo = \"https://…\")"
                    ),
                );
            }
        }
        match (&raw.dir, &raw.git, &raw.chart) {
            (Some(dir), _, _) => self.dir_source(at, dir, raw),
            (_, Some(url), _) => self.git_source(at, url, raw).map(SourceLocation::Git),
            (_, _, Some(chart)) => self.chart_source(at, chart, raw),
            (None, None, None) => {
                self.problem(
                    at,
                    "neither dir nor git nor chart is set; add dir = \"path/to/manifests\", \
                     git = \"https://…\" or chart = \"NAME\" with helm_repo = \"https://…\"",
                );
                None
            }
        }
    }

    /// `chart = …`: a chart from a Helm repository (`helm_repo`); `oci://` charts
    /// are read by their own function.
    fn chart_source(&mut self, at: &str, chart: &str, raw: &RawSource) -> Option<SourceLocation> {
        if chart.starts_with("oci://") {
            self.problem(
                at,
                format!("chart = {chart:?}: OCI charts are not supported yet; use helm_repo"),
            );
            return None;
        }
        self.helm_chart_source(at, chart, raw)
            .map(SourceLocation::HelmChart)
    }

    fn dir_source(&mut self, at: &str, dir: &str, raw: &RawSource) -> Option<SourceLocation> {
        for (key, value) in raw.git_only_keys() {
            self.problem(
                at,
                format!(
                    "{key} = {value:?}: only Git sources have {key}; remove it, or replace \
                     dir with git = \"<url>\""
                ),
            );
        }
        let path = self.existing_dir(&format!("{at}: dir = {dir:?}"), dir);
        Some(SourceLocation::Dir { path })
    }

    fn git_source(&mut self, at: &str, url: &str, raw: &RawSource) -> Option<GitConfig> {
        let transport = self.git_url(at, url);
        let reference = self.git_ref(at, raw);
        let path = raw.path.as_deref().and_then(|p| self.repo_path(at, p));
        for (key, value) in [
            ("username_env", &raw.username_env),
            ("password_env", &raw.password_env),
            ("webhook_secret_env", &raw.webhook_secret_env),
        ] {
            if let Some(var) = value {
                self.env_var(at, key, var);
            }
        }
        let (ssh_key_file, known_hosts_file) = self.git_auth(at, raw, transport);
        Some(GitConfig {
            url: url.to_string(),
            reference: reference?,
            path,
            username_env: raw.username_env.clone(),
            password_env: raw.password_env.clone(),
            ssh_key_file,
            known_hosts_file,
            webhook_secret_env: raw.webhook_secret_env.clone(),
        })
    }

    /// `chart = "NAME"` with `helm_repo`, `version` and the repository's
    /// credentials and CA.
    fn helm_chart_source(
        &mut self,
        at: &str,
        chart: &str,
        raw: &RawSource,
    ) -> Option<HelmChartConfig> {
        for (key, value) in raw.git_only_keys() {
            if !matches!(key, "username_env" | "password_env" | "webhook_secret_env") {
                self.problem(
                    at,
                    format!("{key} = {value:?}: only Git sources have {key}; remove it"),
                );
            }
        }
        let valid_name = !chart.is_empty()
            && chart
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !chart.starts_with('.');
        if !valid_name {
            self.problem(
                at,
                format!(
                    "chart = {chart:?}: not a chart name; write the name as the repository's \
                     index.yaml lists it, e.g. \"podinfo\""
                ),
            );
        }
        let repo = match raw.helm_repo.as_deref() {
            None => {
                self.problem(
                    at,
                    format!(
                        "chart = {chart:?} needs helm_repo = \"https://…\" (the URL of the \
                         repository's index.yaml, without index.yaml)"
                    ),
                );
                None
            }
            Some(url) => self.helm_repo_url(at, url),
        };
        let version = raw.version.clone();
        if let Some(text) = &version {
            if let Err(error) = VersionConstraint::parse(text) {
                self.problem(at, format!("version = {text:?}: {error}"));
            }
        }
        for (key, value) in [
            ("username_env", &raw.username_env),
            ("password_env", &raw.password_env),
            ("token_env", &raw.token_env),
            ("webhook_secret_env", &raw.webhook_secret_env),
        ] {
            if let Some(var) = value {
                self.env_var(at, key, var);
            }
        }
        let auth = match (&raw.username_env, &raw.password_env, &raw.token_env) {
            (None, None, None) => HelmAuth::Anonymous,
            (_, Some(password), None) => HelmAuth::Basic {
                username_env: raw.username_env.clone(),
                password_env: password.clone(),
            },
            (None, None, Some(token)) => HelmAuth::Bearer {
                token_env: token.clone(),
            },
            (Some(_), None, None) => {
                self.problem(
                    at,
                    "username_env is set without password_env; add password_env (basic auth) \
                     or use token_env (a bearer token)",
                );
                HelmAuth::Anonymous
            }
            (_, _, Some(_)) => {
                self.problem(
                    at,
                    "token_env and username_env/password_env are both set; keep one: basic \
                     auth or a bearer token",
                );
                HelmAuth::Anonymous
            }
        };
        let ca_file = raw
            .ca_file
            .as_deref()
            .map(|file| self.existing_file(&format!("{at}: ca_file = {file:?}"), file));
        Some(HelmChartConfig {
            repo: repo?,
            chart: chart.to_string(),
            version,
            auth,
            ca_file,
            webhook_secret_env: raw.webhook_secret_env.clone(),
        })
    }

    /// An `http(s)://` URL, stored without its trailing `/`.
    fn helm_repo_url(&mut self, at: &str, url: &str) -> Option<String> {
        let parsed = reqwest::Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.password().is_none()
        });
        if parsed.is_none() {
            self.problem(
                at,
                format!(
                    "helm_repo = {:?}: not an http(s) URL without credentials; write \
                     \"https://charts.example.com/repo\" and give credentials with \
                     username_env/password_env or token_env",
                    redact_url(url)
                ),
            );
            return None;
        }
        Some(url.trim_end_matches('/').to_string())
    }

    fn git_url(&mut self, at: &str, url: &str) -> Option<Transport> {
        let transport = transport(url);
        if transport.is_none() {
            self.problem(
                at,
                format!(
                    "git = {:?}: not a supported Git URL; use https://host/org/repo.git, \
                     ssh://git@host/org/repo.git, git@host:org/repo.git or file:///path",
                    redact_url(url)
                ),
            );
        }
        transport
    }

    fn git_ref(&mut self, at: &str, raw: &RawSource) -> Option<GitRef> {
        let set: Vec<&str> = [
            ("branch", &raw.branch),
            ("tag", &raw.tag),
            ("commit", &raw.commit),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            self.problem(
                at,
                format!(
                    "{} are {} set; keep one of branch, tag, commit",
                    set.join(" and "),
                    if set.len() == 2 { "both" } else { "all" }
                ),
            );
            return None;
        }
        if let Some(commit) = &raw.commit {
            return self.commit(at, commit);
        }
        if let Some(tag) = &raw.tag {
            return self.ref_name(at, "tag", tag, "refs/tags/").map(GitRef::Tag);
        }
        let branch = raw.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
        self.ref_name(at, "branch", branch, "refs/heads/")
            .map(GitRef::Branch)
    }

    fn commit(&mut self, at: &str, commit: &str) -> Option<GitRef> {
        let full = matches!(commit.len(), 40 | 64);
        if full && commit.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(GitRef::Commit(commit.to_ascii_lowercase()));
        }
        self.problem(
            at,
            format!(
                "commit = {commit:?}: not a full commit id; give all 40 hex digits \
                 (`git rev-parse <rev>` prints it)"
            ),
        );
        None
    }

    /// A branch or tag name as Git allows it, given without its `refs/…/` prefix.
    fn ref_name(&mut self, at: &str, key: &str, name: &str, prefix: &str) -> Option<String> {
        let short = name.strip_prefix(prefix).unwrap_or(name);
        if git2::Reference::is_valid_name(&format!("{prefix}{short}")) {
            return Some(short.to_string());
        }
        self.problem(
            at,
            format!(
                "{key} = {name:?}: not a valid Git {key} name; write it as in `git {key} --list`"
            ),
        );
        None
    }

    /// A subdirectory of the repository: relative and staying inside it.
    fn repo_path(&mut self, at: &str, path: &str) -> Option<PathBuf> {
        let p = Path::new(path);
        let inside = p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            self.problem(
                at,
                format!(
                    "path = {path:?}: must be a directory inside the repository, relative and \
                     without '..', e.g. \"clusters/dev\""
                ),
            );
            return None;
        }
        let normal: PathBuf = p.components().filter(|c| *c != Component::CurDir).collect();
        (!normal.as_os_str().is_empty()).then_some(normal)
    }

    /// SSH key and known_hosts, checked against the URL's transport.
    fn git_auth(
        &mut self,
        at: &str,
        raw: &RawSource,
        transport: Option<Transport>,
    ) -> (Option<PathBuf>, Option<PathBuf>) {
        let ssh = transport == Some(Transport::Ssh);
        let key = raw
            .ssh_key_file
            .as_ref()
            .map(|v| self.existing_file(&format!("{at}: ssh_key_file = {v:?}"), v));
        let known = raw
            .known_hosts_file
            .as_ref()
            .map(|v| self.existing_file(&format!("{at}: known_hosts_file = {v:?}"), v));
        if ssh {
            self.ssh_needs(at, raw);
            let known = known.or_else(|| self.default_known_hosts(at));
            return (key, known);
        }
        for (k, v) in [
            ("ssh_key_file", &raw.ssh_key_file),
            ("known_hosts_file", &raw.known_hosts_file),
        ] {
            if let Some(v) = v {
                self.problem(
                    at,
                    format!("{k} = {v:?}: only for ssh:// or git@host:path URLs; remove it"),
                );
            }
        }
        if raw.username_env.is_some() && raw.password_env.is_none() {
            self.problem(
                at,
                "username_env is set without password_env; add password_env naming the \
                 variable with the password or token",
            );
        }
        (key, known)
    }

    /// What an SSH source must and must not have.
    fn ssh_needs(&mut self, at: &str, raw: &RawSource) {
        if raw.ssh_key_file.is_none() {
            self.problem(
                at,
                "ssh_key_file is missing; an ssh:// or git@host:path URL needs a private key \
                 file (e.g. a deploy key)",
            );
        }
        for (k, v) in [
            ("username_env", &raw.username_env),
            ("password_env", &raw.password_env),
        ] {
            if let Some(v) = v {
                self.problem(
                    at,
                    format!(
                        "{k} = {v:?}: only for https URLs; an SSH source authenticates with \
                         ssh_key_file (put the user in the URL: ssh://git@host/…)"
                    ),
                );
            }
        }
    }

    fn default_known_hosts(&mut self, at: &str) -> Option<PathBuf> {
        let default = self.resolve("~/.ssh/known_hosts");
        if default.is_file() {
            return Some(default);
        }
        self.problem(
            at,
            format!(
                "known_hosts_file is missing and {} does not exist; converge never trusts an \
                 unknown SSH host key: create one with `ssh-keyscan -H <host> > known_hosts`, \
                 check the fingerprints, and set known_hosts_file",
                default.display()
            ),
        );
        None
    }

    /// `allow_remote_bases`, `[source.vars]`, `vars_from` and `[source.helm]`.
    fn source_render(&mut self, at: &str, raw: &RawSource) -> RenderSettings {
        let mut vars = Vars::default();
        for (name, value) in raw.vars.iter().flatten() {
            let value = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    let what = describe(other);
                    self.problem(
                        at,
                        format!("vars.{name} = {what}: write a string or a number"),
                    );
                    continue;
                }
            };
            if !is_var_name(name) {
                self.problem(
                    at,
                    format!("vars.{name}: not a variable name; use letters, digits and '_', not starting with a digit"),
                );
            }
            vars.insert(name.clone(), value);
        }
        let mut vars_from = Vec::new();
        for entry in raw.vars_from.iter().flatten() {
            match VarsFrom::parse(entry) {
                Ok(found) => vars_from.push(found),
                Err(why) => self.problem(at, format!("vars_from {entry:?}: {why}")),
            }
        }
        let helm = raw
            .helm
            .as_ref()
            .map(|h| self.helm(at, h))
            .unwrap_or_default();
        let decryption = raw
            .decryption
            .as_ref()
            .map(|d| self.decryption(at, d))
            .unwrap_or_default();
        RenderSettings {
            helm,
            allow_remote_bases: raw.allow_remote_bases.unwrap_or(false),
            vars,
            vars_from,
            decryption,
        }
    }

    /// `[source.decryption]`: `provider = "sops"`, a `secret` and/or `key_files`.
    fn decryption(&mut self, at: &str, raw: &RawDecryption) -> Decryption {
        match raw.provider.as_deref() {
            Some("sops") => {}
            Some(other) => self.problem(
                at,
                format!("decryption.provider = {other:?}: only \"sops\" is supported"),
            ),
            None => self.problem(
                at,
                "decryption.provider is missing; write provider = \"sops\"",
            ),
        }
        let secret = raw
            .secret
            .as_deref()
            .and_then(|text| match SecretRef::parse(text) {
                Ok(secret) => Some(secret),
                Err(why) => {
                    self.problem(at, format!("decryption.secret: {why}"));
                    None
                }
            });
        let key_files: Vec<PathBuf> = raw
            .key_files
            .iter()
            .flatten()
            .map(|v| self.existing_file(&format!("{at}: decryption.key_files {v:?}"), v))
            .collect();
        if secret.is_none() && key_files.is_empty() {
            self.problem(
                at,
                "decryption needs a secret = \"NAMESPACE/NAME\" or key_files",
            );
        }
        Decryption { key_files, secret }
    }

    fn helm(&mut self, at: &str, raw: &RawHelm) -> HelmSettings {
        if let Some(release) = &raw.release {
            if !is_dns_label(release) || release.len() > 53 {
                self.problem(
                    at,
                    format!("helm.release = {release:?}: not a release name; use at most 53 lowercase letters, digits and '-'"),
                );
            }
        }
        for file in &raw.values_files {
            let inside = Path::new(file)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                self.problem(
                    at,
                    format!("helm.values_files {file:?}: must be relative to the chart or the source root, without '..'"),
                );
            }
        }
        for set in &raw.set {
            if set.split_once('=').is_none_or(|(key, _)| key.is_empty()) {
                self.problem(
                    at,
                    format!("helm.set {set:?}: write KEY=VALUE, as `helm --set` takes it"),
                );
            }
        }
        let values = match serde_json::to_value(&raw.values) {
            Ok(serde_json::Value::Object(values)) => values,
            _ => serde_json::Map::new(),
        };
        HelmSettings {
            release: raw.release.clone(),
            values_files: raw.values_files.iter().map(PathBuf::from).collect(),
            values,
            set: raw.set.clone(),
        }
    }
}

/// The first cycle among the sources' `depends_on`, as names from a source back to
/// itself (`a`, `b`, `a`); unknown names are ignored (reported on their own).
fn dependency_cycle(sources: &[SourceConfig]) -> Option<Vec<String>> {
    let edges: HashMap<&str, &[String]> = sources
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    // Depth-first, with the path so far: a name met again on the path closes a cycle.
    fn visit<'a>(
        name: &'a str,
        edges: &HashMap<&'a str, &'a [String]>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::HashSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[start..].iter().map(|n| n.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        path.push(name);
        for next in edges.get(name).copied().unwrap_or_default() {
            if next != name && edges.contains_key(next.as_str()) {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::HashSet::new();
    sources
        .iter()
        .find_map(|s| visit(&s.name, &edges, &mut Vec::new(), &mut done))
}
