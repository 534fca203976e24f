//! Turning the raw TOML into typed settings, one message per problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::*;
use super::*;
use crate::health::{HealthRuleSpec, HealthRules};
use crate::kube::is_dns_label;
use crate::manifest;
use crate::render::{ToolLimits, ToolPaths};

/// Turns raw settings into typed ones, recording every problem instead of stopping.
pub(super) struct Checker<'a> {
    pub(super) base: &'a Path,
    pub(super) env: EnvLookup<'a>,
    pub(super) problems: Vec<String>,
    /// `[tenancy] default_service_account`, read before the sources.
    pub(super) default_service_account: Option<String>,
    /// `[[health]]`, compiled before the sources (whose own rules come first).
    pub(super) health: HealthRules,
    /// The line of each `[[notify]]` header, for messages.
    pub(super) notify_lines: Vec<usize>,
    /// The top-level `relist_every`, read before the sources: their default.
    pub(super) relist_every: Duration,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, at: &str, message: impl fmt::Display) {
        self.problems.push(format!("{at}: {message}"));
    }

    pub(super) fn config(&mut self, raw: RawConfig, path: PathBuf) -> Config {
        let cluster = self.cluster(raw.cluster);
        let server = self.server(raw.server);
        let state_dir = match &raw.state_dir {
            Some(dir) => self.resolve(dir),
            None => self.default_state_dir(),
        };
        if raw.sources.is_empty() {
            self.problem(
                "config",
                "no [[source]] table; add one with a name and a dir or git URL (see the \
                 config.toml in the converge repository)",
            );
        }
        self.default_service_account = raw.tenancy.default_service_account;
        self.relist_every = self.duration(
            "config",
            "relist_every",
            raw.relist_every.as_ref(),
            DEFAULT_RELIST_EVERY,
        );
        self.health = self.health_rules("health", &raw.health, &HealthRules::default());
        let clusters = self.clusters(raw.clusters);
        let sources = self.sources(raw.sources);
        self.source_clusters(&sources, &clusters);
        let render = self.render(raw.render);
        let artifact_limits = self.artifact_limits(&raw.limits);
        let limits = self.limits(raw.limits);
        let leader_election = self.leader_election(raw.leader_election, &sources);
        let lines = std::mem::take(&mut self.notify_lines);
        let notify = self.notify(raw.notify, &sources, &lines);
        Config {
            path,
            cluster,
            server,
            state_dir,
            sources,
            render,
            limits,
            artifact_limits,
            leader_election,
            clusters,
            health: self.health.clone(),
            notify,
        }
    }

    /// `rules` compiled (every expression that does not parse is a problem, named
    /// by its key and position), before `fallback`.
    pub(super) fn health_rules(
        &mut self,
        at: &str,
        rules: &[HealthRuleSpec],
        fallback: &HealthRules,
    ) -> HealthRules {
        match HealthRules::compile(at, rules) {
            Ok(rules) => rules.then(fallback),
            Err(errors) => {
                self.problems.extend(errors.iter().map(ToString::to_string));
                fallback.clone()
            }
        }
    }

    /// `[[clusters]]`: unique names, existing kubeconfig files.
    pub(super) fn clusters(&mut self, raws: Vec<RawClusterEntry>) -> Vec<ClusterEntry> {
        let mut clusters: Vec<ClusterEntry> = Vec::new();
        for (index, raw) in raws.into_iter().enumerate() {
            let at = format!("clusters[{index}]");
            let name = match raw.name {
                Some(name) if is_dns_label(&name) => name,
                other => {
                    self.problem(&at, format!("name = {other:?}: a DNS label is required"));
                    continue;
                }
            };
            if clusters.iter().any(|c| c.name == name) {
                self.problem(
                    &at,
                    format!("name = {name:?}: already used; names must be unique"),
                );
            }
            let kubeconfig = match (raw.kubeconfig, raw.secret) {
                (Some(file), None) => {
                    let path = self.resolve(&file);
                    if !path.is_file() {
                        self.problem(&at, format!("kubeconfig {path:?}: no such file"));
                    }
                    KubeconfigFrom::File(path)
                }
                (None, Some(secret)) => match secret.split_once('/') {
                    Some((ns, name)) if is_dns_label(ns) && !name.is_empty() => {
                        KubeconfigFrom::Secret {
                            namespace: ns.into(),
                            name: name.into(),
                        }
                    }
                    _ => {
                        self.problem(&at, format!("secret = {secret:?}: write NAMESPACE/NAME"));
                        continue;
                    }
                },
                _ => {
                    self.problem(
                        &at,
                        "give either kubeconfig (a file) or secret (NAMESPACE/NAME of a Secret \
                         holding one)",
                    );
                    continue;
                }
            };
            clusters.push(ClusterEntry {
                name,
                kubeconfig,
                context: raw.context,
            });
        }
        clusters
    }

    /// Every source's `cluster` names a `[[clusters]]` entry.
    pub(super) fn source_clusters(&mut self, sources: &[SourceConfig], clusters: &[ClusterEntry]) {
        for source in sources {
            let Some(cluster) = &source.cluster else {
                continue;
            };
            if !clusters.iter().any(|c| c.name == *cluster) {
                let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                self.problem(
                    &format!("source {:?}", source.name),
                    format!(
                        "cluster = {cluster:?}: no [[clusters]] entry is called so (there                          are: {names:?}); the home cluster is [cluster], named by leaving                          cluster out"
                    ),
                );
            }
        }
    }

    pub(super) fn leader_election(
        &mut self,
        raw: RawLeaderElection,
        sources: &[SourceConfig],
    ) -> LeaderElectionConfig {
        let at = "[leader_election]";
        let defaults = LeaseTiming::default();
        let timing = LeaseTiming {
            lease_duration: self.duration(
                at,
                "lease_duration",
                raw.lease_duration.as_ref(),
                defaults.lease_duration,
            ),
            renew_deadline: self.duration(
                at,
                "renew_deadline",
                raw.renew_deadline.as_ref(),
                defaults.renew_deadline,
            ),
            retry_period: self.duration(
                at,
                "retry_period",
                raw.retry_period.as_ref(),
                defaults.retry_period,
            ),
        };
        if let Some(problem) = timing.problem() {
            self.problem(at, problem);
        }
        if let Some(ns) = raw.namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
            self.problem(
                at,
                format!("namespace = {ns:?}: not a valid namespace name"),
            );
        }
        let name = raw.name.unwrap_or_else(|| DEFAULT_LEASE_NAME.into());
        let scope = match raw.shard {
            Some(true) => ElectionScope::Source,
            _ => ElectionScope::Daemon,
        };
        // Per-source Leases are `<name>-<source>`: the longest must stay a DNS label.
        let longest = match scope {
            ElectionScope::Source => sources.iter().map(|s| s.name.len() + 1).max(),
            ElectionScope::Daemon => None,
        }
        .unwrap_or(0);
        if !is_dns_label(&name) || name.len() + longest > 63 {
            self.problem(
                at,
                format!(
                    "name = {name:?}: not a DNS label of at most {} characters (Leases are \
                     named <name> and <name>-<source>)",
                    63usize.saturating_sub(longest)
                ),
            );
        }
        LeaderElectionConfig {
            enabled: raw.enabled.unwrap_or(false),
            scope,
            namespace: raw.namespace,
            name,
            timing,
        }
    }

    pub(super) fn cluster(&mut self, raw: RawCluster) -> ClusterSettings {
        let kubeconfig = raw.kubeconfig.map(|value| {
            let at = format!("[cluster] kubeconfig = {value:?}");
            self.existing_file(&at, &value)
        });
        if raw.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            self.problem(
                "[cluster] context = \"\"",
                "empty; name a context of the kubeconfig or remove the key",
            );
        }
        let request_timeout = self.duration(
            "[cluster]",
            "request_timeout",
            raw.request_timeout.as_ref(),
            DEFAULT_REQUEST_TIMEOUT,
        );
        ClusterSettings {
            kubeconfig,
            context: raw.context,
            request_timeout,
        }
    }

    pub(super) fn server(&mut self, raw: RawServer) -> ServerConfig {
        let token_file = raw.token_file.map(|value| {
            let at = format!("[server] token_file = {value:?}");
            self.existing_file(&at, &value)
        });
        let Some(listen) = raw.listen else {
            return ServerConfig {
                token_file,
                ..ServerConfig::default()
            };
        };
        match listen.parse() {
            Ok(listen) => ServerConfig { listen, token_file },
            Err(_) => {
                self.problem(
                    &format!("[server] listen = {listen:?}"),
                    "not an IP address and port; write e.g. \"127.0.0.1:9476\" (this machine \
                     only) or \"0.0.0.0:9476\" (all interfaces)",
                );
                ServerConfig::default()
            }
        }
    }

    /// A duration key (`interval`, `wave_timeout`): more than zero, `default` if unset.
    pub(super) fn duration(
        &mut self,
        at: &str,
        key: &str,
        value: Option<&toml::Value>,
        default: Duration,
    ) -> Duration {
        let text = match value {
            None => return default,
            Some(toml::Value::String(text)) => text,
            Some(other) => {
                self.problem(
                    at,
                    format!(
                        "{key} = {}: not a duration string; write it quoted with a \
                         unit, e.g. \"30s\", \"5m\" or \"1h30m\"",
                        describe(other)
                    ),
                );
                return default;
            }
        };
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                let msg = "must be more than zero; e.g. \"30s\"";
                self.problem(at, format!("{key} = {text:?}: {msg}"));
                default
            }
            Ok(d) => d,
            Err(why) => {
                self.problem(at, format!("{key} = {text:?}: {why}"));
                default
            }
        }
    }

    pub(super) fn env_var(&mut self, at: &str, key: &str, var: &str) {
        match (self.env)(var) {
            Some(value) if !value.is_empty() => {}
            Some(_) => self.problem(
                at,
                format!("{key} = {var:?}: the environment variable {var} is empty; set it"),
            ),
            None => self.problem(
                at,
                format!(
                    "{key} = {var:?}: the environment variable {var} is not set; export it \
                     before starting converge"
                ),
            ),
        }
    }

    /// `[limits]`: a file size in MiB (1 to 1024) and a nesting depth (1 to
    /// [`manifest::MAX_DEPTH_ALLOWED`], where converge's JSON handling stops).
    pub(super) fn limits(&mut self, raw: RawLimits) -> manifest::Limits {
        let mut limits = manifest::Limits::default();
        match raw.max_file_mib {
            Some(mib @ 1..=1024) => limits.max_file_bytes = mib << 20,
            Some(mib) => self.problem("[limits]", format!("max_file_mib = {mib}: use 1 to 1024")),
            None => {}
        }
        match raw.max_depth {
            Some(depth @ 1..=manifest::MAX_DEPTH_ALLOWED) => limits.max_depth = depth,
            Some(depth) => self.problem(
                "[limits]",
                format!(
                    "max_depth = {depth}: use 1 to {}",
                    manifest::MAX_DEPTH_ALLOWED
                ),
            ),
            None => {}
        }
        limits
    }

    /// `[limits]`: how large a downloaded artifact (a chart, an OCI layer) and its
    /// unpacked content may be, in MiB (1 to 4096 each).
    pub(super) fn artifact_limits(&mut self, raw: &RawLimits) -> ArtifactLimits {
        let mut limits = ArtifactLimits::default();
        let keys = [
            (
                "max_artifact_mib",
                raw.max_artifact_mib,
                &mut limits.max_download_bytes,
            ),
            (
                "max_unpacked_mib",
                raw.max_unpacked_mib,
                &mut limits.max_unpacked_bytes,
            ),
        ];
        for (key, value, bytes) in keys {
            match value {
                Some(mib @ 1..=4096) => *bytes = mib << 20,
                Some(mib) => self.problem("[limits]", format!("{key} = {mib}: use 1 to 4096")),
                None => {}
            }
        }
        limits
    }

    pub(super) fn render(&mut self, raw: RawRender) -> RenderConfig {
        let mut limits = ToolLimits::default();
        if let Some(text) = &raw.timeout {
            match parse_duration(text) {
                Ok(timeout) if !timeout.is_zero() => limits.timeout = timeout,
                Ok(_) => self.problem(
                    "[render]",
                    format!("timeout = {text:?}: must be more than zero"),
                ),
                Err(why) => self.problem("[render]", format!("timeout = {text:?}: {why}")),
            }
        }
        let mut tool = |key: &str, value: Option<String>| {
            let value = value?;
            Some(self.existing_file(&format!("[render] {key} = {value:?}"), &value))
        };
        let tools = ToolPaths {
            kustomize: tool("kustomize", raw.kustomize),
            helm: tool("helm", raw.helm),
        };
        RenderConfig { tools, limits }
    }

    pub(super) fn existing_file(&mut self, at: &str, value: &str) -> PathBuf {
        let path = self.resolve(value);
        if !path.is_file() {
            let what = if path.exists() {
                "not a file"
            } else {
                "no such file"
            };
            self.problem(at, format!("{what} ({}); fix the path", path.display()));
        }
        path
    }

    pub(super) fn existing_dir(&mut self, at: &str, value: &str) -> PathBuf {
        let path = self.resolve(value);
        if !path.is_dir() {
            let what = if path.exists() {
                "not a directory"
            } else {
                "no such directory"
            };
            self.problem(
                at,
                format!("{what} ({}); create it or fix the path", path.display()),
            );
        }
        path
    }

    /// `~` expands to `$HOME`; relative paths are taken from the config file's directory.
    pub(super) fn resolve(&self, value: &str) -> PathBuf {
        let home = || {
            (self.env)("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        };
        if value == "~" {
            if let Some(home) = home() {
                return home;
            }
        }
        if let Some(rest) = value.strip_prefix("~/") {
            if let Some(home) = home() {
                return home.join(rest);
            }
        }
        self.base.join(value)
    }

    pub(super) fn default_state_dir(&self) -> PathBuf {
        let state_home = (self.env)("XDG_STATE_HOME").filter(|s| Path::new(s).is_absolute());
        match state_home {
            Some(dir) => PathBuf::from(dir).join("converge"),
            None if (self.env)("HOME").is_some() => self.resolve("~/.local/state/converge"),
            None => std::env::temp_dir().join("converge-state"),
        }
    }
}

/// A TOML value as the user wrote it, near enough for a message.
pub(super) fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("<{}>", other.type_str()),
    }
}
