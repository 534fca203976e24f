//! Rendering: the stage between a snapshot and its manifests, for repositories that
//! are kustomize overlays or Helm charts.
//!
//! The root decides ([`detect`]): a kustomization → `kustomize build`, a
//! `Chart.yaml` → `helm template`, anything else → plain manifests, read as they
//! are. The real tools run (no maintained Rust kustomize or Helm exists; Argo CD
//! runs them too), each bounded in time and output in a scrubbed environment
//! (`process`). Their output goes through the same manifest parser as plain files,
//! with every object's origin set to the file it was written in (`origin`).
//!
//! A render reads only inside the source root ([`Target::base`]: the Git checkout
//! or the directory), so an overlay may reach `../base` but nothing outside; what it
//! reads is listed before the tool runs and hashed into a key ([`Prepared::key`]):
//! the daemon renders again only when the key changes.
//!
//! - `tools`: which kustomize and helm, and their versions;
//! - `kustomize`, `helm`: checks, command lines, origins and errors of each tool;
//! - `parts`: a large flat kustomization built in cached parts (linear, not
//!   quadratic, and a one-file commit builds one part again);
//! - `substitute`, `vars`: Flux-style `${VAR}` post-build substitution;
//! - `inputs`: the source root, containment, the cache key;
//! - `origin`: the line of a rendered object in its file; `error`: [`RenderError`].

mod decrypt;
mod error;
mod helm;
mod inputs;
mod kustomize;
mod origin;
mod parts;
mod process;
mod substitute;
mod tools;
mod vars;

pub use error::RenderError;
pub use parts::PartCache;
pub use process::ToolLimits;
pub use substitute::{Missing, Vars, is_var_name, substitute};
pub use tools::{Program, Tool, ToolPaths, ToolStatus, Tools};
pub use vars::{VarsFrom, VarsKind, resolve as resolve_vars};

use crate::kube::{Client, Discovery};
use crate::manifest::{self, Digest, Manifest, Origin, parse_str};
use inputs::{Base, Key};
use kustomize::Wrapped;
use parts::Part;
use process::RunError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use tracing::info;

/// What a root holds, which decides how it is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A `kustomization.yaml`, `kustomization.yml` or `Kustomization`.
    Kustomize,
    /// A `Chart.yaml`.
    Helm,
    /// Manifests, read as they are (a file, or a directory of them).
    Plain,
}

/// The kind of `root`: a directory with a kustomization (first) or a chart, else
/// plain.
pub fn detect(root: &Path) -> RootKind {
    if !root.is_dir() {
        RootKind::Plain
    } else if kustomize::kustomization_file(root).is_some() {
        RootKind::Kustomize
    } else if root.join("Chart.yaml").is_file() {
        RootKind::Helm
    } else {
        RootKind::Plain
    }
}

/// Every file a render of the directory `root` may read (resolved, sorted): what
/// a directory source's revision covers when its root is rendered, as templates,
/// patches and generator files are not manifests.
pub fn files_under(root: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let base = Base::new(root)?;
    let mut files = std::collections::BTreeSet::new();
    inputs::tree(root, &base, &mut files)?;
    Ok(files.into_iter().collect())
}

/// How a source is rendered: `[source.helm]`, `allow_remote_bases`, `[source.vars]`
/// and `vars_from`, or the command line's `--values`, `--set` and `--release`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderSettings {
    pub helm: HelmSettings,
    /// Let kustomizations name remote bases (`github.com/…?ref=…`); off by default.
    pub allow_remote_bases: bool,
    pub vars: Vars,
    pub vars_from: Vec<VarsFrom>,
    /// `[source.decryption]`: the keys SOPS files are decrypted with.
    pub decryption: crate::sops::Decryption,
}

impl RenderSettings {
    /// Whether post-build substitution runs (as in Flux, only when asked for, so
    /// plain `${…}` in scripts is left alone otherwise).
    pub fn substitutes(&self) -> bool {
        !self.vars.is_empty() || !self.vars_from.is_empty()
    }
}

/// `[source.helm]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HelmSettings {
    /// The release name; default: the source (or ApplySet) name.
    pub release: Option<String>,
    /// Relative to the chart, else to the source root.
    pub values_files: Vec<PathBuf>,
    /// Inline values, applied after the files.
    pub values: Map<String, Value>,
    /// `--set` overrides (`KEY=VALUE`), applied last.
    pub set: Vec<String>,
}

/// What Helm is told about the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `v1.34.4`.
    pub kube_version: String,
    /// Every `group/version` and `group/version/Kind` served.
    pub api_versions: Vec<String>,
}

impl Capabilities {
    /// The server's version (`GET /version`) and what discovery knows it serves.
    pub async fn discover(client: &Client, discovery: &Discovery) -> Result<Self, RenderError> {
        let version = client
            .get("/version")
            .await
            .map_err(|e| RenderError::Version {
                detail: e.to_string(),
                transient: e.is_transient(),
            })?;
        let kube_version = version
            .get("gitVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Capabilities {
            kube_version,
            api_versions: discovery.api_versions(),
        })
    }
}

/// One root to render.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The directory (or file) to render: a source's root, a command line's PATH.
    pub root: &'a Path,
    /// The directory a render may read from: the Git checkout, the source
    /// directory, or (command line) the repository around PATH.
    pub base: &'a Path,
    /// The release's namespace (Helm).
    pub namespace: &'a str,
    /// The release name when the settings name none: the source or ApplySet name.
    pub name: &'a str,
    pub settings: &'a RenderSettings,
}

impl Target<'_> {
    fn release(&self) -> &str {
        self.settings.helm.release.as_deref().unwrap_or(self.name)
    }
}

/// A root checked (nothing leads outside the base, dependencies are vendored) and
/// what it reads listed.
#[derive(Debug)]
pub struct Prepared {
    build: Build,
    base: Base,
    files: Key,
}

#[derive(Debug)]
enum Build {
    /// Plain manifests: the files to read.
    Plain(Vec<PathBuf>),
    Kustomize {
        remote: bool,
        /// A flat kustomization's files in parts (`parts`); `None`: built whole.
        parts: Option<Vec<Vec<PathBuf>>>,
        /// The SOPS files it reads: decrypted into a private copy, built whole.
        encrypted: Vec<PathBuf>,
        /// Its `helmCharts`: inflated by converge's helm, built whole from a
        /// private copy that holds the charts converge fetched.
        helm: Vec<kustomize::HelmChartUse>,
    },
    Helm(helm::Chart),
}

/// Checks `target` and lists what rendering it reads. Needs no tool and no cluster.
pub fn prepare(target: &Target) -> Result<Prepared, RenderError> {
    let base = Base::new(target.base)?;
    let mut files = Key::default();
    let build = match detect(target.root) {
        RootKind::Plain => {
            let paths = manifest::files(&[target.root.to_path_buf()])
                .map_err(manifest::ManifestError::from)?;
            files
                .files
                .extend(paths.iter().filter_map(|p| p.canonicalize().ok()));
            Build::Plain(paths)
        }
        RootKind::Kustomize => {
            let tree = kustomize::reach(target.root, &base, target.settings.allow_remote_bases)?;
            files.files = tree.files;
            let encrypted = decrypt::encrypted(&files.files);
            let parts = (!tree.remote && encrypted.is_empty() && tree.helm_charts.is_empty())
                .then(|| parts::plan(target.root, &base))
                .flatten();
            Build::Kustomize {
                remote: tree.remote,
                parts,
                encrypted,
                helm: tree.helm_charts,
            }
        }
        RootKind::Helm => {
            let helm = &target.settings.helm;
            let chart = helm::prepare(target.root, &base, &helm.values_files)?;
            files.files.clone_from(&chart.files);
            Build::Helm(chart)
        }
    };
    Ok(Prepared { build, base, files })
}

impl Prepared {
    pub fn kind(&self) -> RootKind {
        match self.build {
            Build::Plain(_) => RootKind::Plain,
            Build::Kustomize { .. } => RootKind::Kustomize,
            Build::Helm(_) => RootKind::Helm,
        }
    }

    /// The same root built in one run, never in parts: what a render in parts is
    /// checked against.
    pub fn whole(mut self) -> Self {
        if let Build::Kustomize { parts, .. } = &mut self.build {
            *parts = None;
        }
        self
    }

    /// How many parts a kustomization is built in (1: whole).
    pub fn parts(&self) -> usize {
        match &self.build {
            Build::Kustomize {
                parts: Some(parts), ..
            } => parts.len(),
            _ => 1,
        }
    }

    /// Whether rendering needs the cluster's version and API versions: a chart,
    /// or a kustomization inflating charts (`helmCharts`).
    pub fn needs_cluster(&self) -> bool {
        match &self.build {
            Build::Helm(_) => true,
            Build::Kustomize { helm, .. } => !helm.is_empty(),
            Build::Plain(_) => false,
        }
    }

    /// The tool rendering needs, if any.
    pub fn tool(&self) -> Option<Tool> {
        match self.build {
            Build::Plain(_) => None,
            Build::Kustomize { .. } => Some(Tool::Kustomize),
            Build::Helm(_) => Some(Tool::Helm),
        }
    }

    /// The render cache key: every input file, the tool's version and every
    /// setting and variable that changes the output.
    pub fn key(
        &self,
        target: &Target,
        renderer: &Renderer,
        cluster: &Capabilities,
        vars: &Vars,
    ) -> RenderKey {
        if matches!(self.build, Build::Kustomize { remote: true, .. }) {
            return RenderKey::Unknown;
        }
        let mut key = Key {
            files: self.files.files.clone(),
            settings: Vec::new(),
        };
        if let Some(tool) = self.tool() {
            let version = renderer.tools.get(tool).map_or("", |p| p.version.as_str());
            key.setting(&tool.to_string(), version);
        }
        if let Build::Kustomize { helm, .. } = &self.build {
            if !helm.is_empty() {
                let version = renderer
                    .tools
                    .get(Tool::Helm)
                    .map_or("", |p| p.version.as_str());
                key.setting("helm", version);
                key.setting("kube_version", &cluster.kube_version);
                key.setting("api_versions", cluster.api_versions.join(","));
                for chart in helm.iter().filter(|c| c.fetch_from.is_some()) {
                    // A constraint may match a newer chart: never cached by key.
                    if chart.version.is_none() {
                        return RenderKey::Unknown;
                    }
                }
            }
        }
        if let Build::Helm(_) = self.build {
            let helm = &target.settings.helm;
            key.setting("release", target.release());
            key.setting("namespace", target.namespace);
            key.setting("kube_version", &cluster.kube_version);
            key.setting("api_versions", cluster.api_versions.join(","));
            key.setting("values", Value::Object(helm.values.clone()));
            key.setting("set", helm.set.join("\n"));
        }
        for (name, value) in vars.iter() {
            key.setting(&format!("var {name}"), value);
        }
        key.digest(&self.base)
            .map_or(RenderKey::Unknown, RenderKey::Inputs)
    }
}

/// What a render's output depends on, hashed: equal keys render alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderKey {
    Inputs(Digest),
    /// The inputs are not all local (a remote base): no key says the output is the
    /// same, so the root is rendered every time.
    Unknown,
}

impl RenderKey {
    /// Whether a render with key `self` would give what `earlier` gave.
    pub fn same_output_as(&self, earlier: &RenderKey) -> bool {
        matches!((self, earlier), (RenderKey::Inputs(a), RenderKey::Inputs(b)) if a == b)
    }
}

/// Runs the tools: found once, shared by every render.
#[derive(Debug, Clone)]
pub struct Renderer {
    tools: Tools,
    limits: ToolLimits,
    /// Where chart dependencies are fetched to; `None`: they must be vendored.
    artifacts: Option<Artifacts>,
}

/// The artifact cache chart dependencies are fetched through.
#[derive(Debug, Clone)]
struct Artifacts {
    state_dir: PathBuf,
    limits: crate::config::ArtifactLimits,
}

/// A dependency that could not be fetched, from an HTTP repository or a registry:
/// unreachable (worth a retry) or not fetched (the chart or repository is wrong).
fn fetch_failed(
    chart: &Path,
    dependency: &helm::Dependency,
    transient: bool,
    error: &dyn std::fmt::Display,
) -> RenderError {
    match transient {
        true => RenderError::DependencyUnreachable {
            chart: chart.to_path_buf(),
            name: dependency.name.clone(),
            detail: error.to_string(),
        },
        false => RenderError::DependencyNotFetched {
            chart: chart.to_path_buf(),
            name: dependency.name.clone(),
            why: format!("fetching it failed: {error}"),
        },
    }
}

/// A chart from an OCI registry (`repository: oci://host/path`, the chart at
/// `oci://host/path/<name>`, as `helm push` puts it), the highest tag matching
/// its version, through the same artifact cache and digest checks as an OCI
/// chart source.
async fn fetch_oci_chart(
    chart: &Path,
    dependency: &helm::Dependency,
    artifacts: &Artifacts,
) -> Result<crate::source::artifact::helm_repo::FetchedChart, RenderError> {
    use crate::source::artifact::oci::{ArtifactKind, Pick, Pull, Reference};
    use crate::source::artifact::{ArtifactCache, Digest, VersionConstraint};
    let not_fetched = |why: String| RenderError::DependencyNotFetched {
        chart: chart.to_path_buf(),
        name: dependency.name.clone(),
        why,
    };
    let text = format!("{}/{}", dependency.repository, dependency.name);
    let reference = Reference::parse(&text).map_err(|e| not_fetched(format!("{text}: {e}")))?;
    let constraint = match &dependency.version {
        Some(version) => {
            VersionConstraint::parse(version).map_err(|e| not_fetched(e.to_string()))?
        }
        None => VersionConstraint::latest_stable(),
    };
    let pull = Pull {
        repository: reference.repository_only(),
        pick: Pick::Semver(constraint),
        kind: ArtifactKind::HelmChart,
        insecure: crate::config::Insecure::No,
        credentials: None,
    };
    let cache = ArtifactCache::new(&artifacts.state_dir);
    let pulled = pull
        .run(&cache, &artifacts.limits)
        .await
        .map_err(|error| fetch_failed(chart, dependency, error.is_transient(), &error))?;
    let (version, digest) = pulled
        .revision
        .split_once('@')
        .unwrap_or((&pulled.revision, ""));
    let digest = Digest::parse(digest).map_err(|e| not_fetched(e.to_string()))?;
    Ok(crate::source::artifact::helm_repo::FetchedChart {
        version: version.to_string(),
        digest,
        tree: pulled.root.parent().unwrap_or(&pulled.root).to_path_buf(),
        dir: pulled.root,
    })
}

impl Renderer {
    pub fn new(tools: Tools, limits: ToolLimits) -> Self {
        Renderer {
            tools,
            limits,
            artifacts: None,
        }
    }

    /// Fetches a chart's dependencies that are not vendored from their HTTP
    /// repositories, into the artifact cache under `state_dir`, within `limits`.
    pub fn with_artifacts(
        mut self,
        state_dir: &Path,
        limits: crate::config::ArtifactLimits,
    ) -> Self {
        self.artifacts = Some(Artifacts {
            state_dir: state_dir.to_path_buf(),
            limits,
        });
        self
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// The objects of a prepared root, with origins in the files they were written
    /// in, `${VAR}`s substituted when `vars` is given. Parts of a kustomization
    /// found in `cache` are not built again; `cache` then holds this render's.
    /// SOPS files a kustomization reads are decrypted with `keys`.
    pub async fn render(
        &self,
        prepared: &Prepared,
        target: &Target<'_>,
        cluster: &Capabilities,
        vars: Option<&Vars>,
        cache: &mut PartCache,
        keys: &crate::sops::AgeKeys,
    ) -> Result<Vec<Manifest>, RenderError> {
        match &prepared.build {
            Build::Kustomize {
                encrypted, helm, ..
            } if !helm.is_empty() => {
                self.kustomize_helm(prepared, target, cluster, vars, (encrypted, helm), keys)
                    .await
            }
            Build::Kustomize { encrypted, .. } if !encrypted.is_empty() => {
                self.kustomize_decrypted(prepared, target, vars, encrypted, keys)
                    .await
            }
            Build::Plain(files) => plain(files, vars, keys),
            Build::Kustomize {
                parts: Some(parts), ..
            } => {
                self.kustomize_parts(parts, prepared, target, vars, cache)
                    .await
            }
            Build::Kustomize { .. } => self.kustomize(prepared, target, vars).await,
            Build::Helm(chart) => self.helm(chart, prepared, target, cluster, vars).await,
        }
    }

    fn program(&self, tool: Tool, target: &Target) -> Result<&Program, RenderError> {
        self.tools
            .get(tool)
            .map_err(|why| RenderError::ToolMissing {
                tool,
                root: target.root.to_path_buf(),
                why: why.to_string(),
            })
    }

    async fn kustomize(
        &self,
        prepared: &Prepared,
        target: &Target<'_>,
        vars: Option<&Vars>,
    ) -> Result<Vec<Manifest>, RenderError> {
        let program = self.program(Tool::Kustomize, target)?;
        let root = inputs::canonical(target.root)?;
        let (text, wrapper) = kustomize::build(program, Wrapped::Root(&root), None, self.limits)
            .await
            .map_err(|error| kustomize::failure(&root, error, &prepared.base))?;
        let stream = stream_name(target.root, Tool::Kustomize);
        let objects = |text: &str| kustomize::objects(text, &stream, &wrapper, &prepared.base);
        substituted(&text, vars, &objects, None)
    }

    /// [`Self::kustomize`] on a private copy whose SOPS files are decrypted; the
    /// copy is removed as soon as kustomize has run and origins name the base again.
    async fn kustomize_decrypted(
        &self,
        prepared: &Prepared,
        target: &Target<'_>,
        vars: Option<&Vars>,
        encrypted: &[PathBuf],
        keys: &crate::sops::AgeKeys,
    ) -> Result<Vec<Manifest>, RenderError> {
        let program = self.program(Tool::Kustomize, target)?;
        let base = &prepared.base;
        let root = inputs::canonical(target.root)?;
        let mirror = decrypt::Mirror::new(base, &prepared.files.files, encrypted, keys)?;
        let built = kustomize::build(
            program,
            Wrapped::Root(&mirror.path_of(base, &root)),
            None,
            self.limits,
        )
        .await;
        let (text, wrapper) = match built {
            Ok(built) => built,
            Err(error) => {
                mirror.remove();
                return Err(kustomize::failure(&root, error, base));
            }
        };
        let stream = stream_name(target.root, Tool::Kustomize);
        let objects = |text: &str| kustomize::objects(text, &stream, &wrapper, base);
        // On an error the copy goes with `mirror`'s drop.
        let mut manifests = substituted(&text, vars, &objects, None)?;
        mirror.restore_origins(base, &mut manifests);
        mirror.remove();
        Ok(manifests)
    }

    /// A kustomization with `helmCharts`, built from a private copy (SOPS files
    /// decrypted) into whose chartHome converge fetched the charts the source does
    /// not hold, with converge's helm told the cluster's versions.
    async fn kustomize_helm(
        &self,
        prepared: &Prepared,
        target: &Target<'_>,
        cluster: &Capabilities,
        vars: Option<&Vars>,
        (encrypted, charts): (&[PathBuf], &[kustomize::HelmChartUse]),
        keys: &crate::sops::AgeKeys,
    ) -> Result<Vec<Manifest>, RenderError> {
        let program = self.program(Tool::Kustomize, target)?;
        let helm = self.program(Tool::Helm, target)?;
        let base = &prepared.base;
        let root = inputs::canonical(target.root)?;
        let mirror = decrypt::Mirror::new(base, &prepared.files.files, encrypted, keys)?;
        for chart in charts {
            let Some(repo) = &chart.fetch_from else {
                continue;
            };
            let spelled = base.spell(&chart.chart_dir);
            let dependency = helm::Dependency {
                name: chart.name.clone(),
                repository: repo.clone(),
                version: chart.version.clone(),
            };
            let fetched = self.fetch_chart(&spelled, &dependency).await?;
            info!(chart = %chart.name, version = %fetched.version, "helmCharts chart fetched");
            inputs::copy_tree(&fetched.dir, &mirror.path_of(base, &chart.chart_dir))?;
        }
        let command = kustomize::HelmCommand {
            program: helm,
            kube_version: &cluster.kube_version,
            api_versions: &cluster.api_versions,
        };
        let built = kustomize::build(
            program,
            Wrapped::Root(&mirror.path_of(base, &root)),
            Some(&command),
            self.limits,
        )
        .await;
        let (text, wrapper) = match built {
            Ok(built) => built,
            Err(error) => {
                let error = match error {
                    RunError::Failed(message) => RunError::Failed(mirror.unmirror(base, &message)),
                    other => other,
                };
                mirror.remove();
                return Err(kustomize::failure(&root, error, base));
            }
        };
        let stream = stream_name(target.root, Tool::Kustomize);
        let objects = |text: &str| kustomize::objects(text, &stream, &wrapper, base);
        let mut manifests = substituted(&text, vars, &objects, None)?;
        mirror.restore_origins(base, &mut manifests);
        mirror.remove();
        Ok(manifests)
    }

    /// `dependency` fetched through the artifact cache (the index's digest
    /// checked); errors name `chart`, the chart that needs it.
    async fn fetch_chart(
        &self,
        chart: &Path,
        dependency: &helm::Dependency,
    ) -> Result<crate::source::artifact::helm_repo::FetchedChart, RenderError> {
        let Some(artifacts) = &self.artifacts else {
            return Err(RenderError::MissingDependency {
                chart: chart.to_path_buf(),
                name: dependency.name.clone(),
            });
        };
        if dependency.repository.starts_with("oci://") {
            return fetch_oci_chart(chart, dependency, artifacts).await;
        }
        let settings = crate::source::artifact::helm_repo::RepoSettings {
            url: dependency.repository.clone(),
            auth: crate::config::HelmAuth::Anonymous,
            ca_file: None,
        };
        let fetched = async {
            let repo = crate::source::artifact::helm_repo::HelmRepo::new(
                &settings,
                &artifacts.state_dir,
                artifacts.limits,
                &crate::config::process_env,
            )?;
            repo.fetch_chart(&dependency.name, dependency.version.as_deref())
                .await
        }
        .await;
        fetched.map_err(|error| fetch_failed(chart, dependency, error.is_transient(), &error))
    }

    /// A flat kustomization built part by part (two at a time, as the machine
    /// has cores to spare while the cluster waits), reusing the parts `cache` has.
    async fn kustomize_parts(
        &self,
        parts: &[Vec<PathBuf>],
        prepared: &Prepared,
        target: &Target<'_>,
        vars: Option<&Vars>,
        cache: &mut PartCache,
    ) -> Result<Vec<Manifest>, RenderError> {
        let program = self.program(Tool::Kustomize, target)?;
        let root = inputs::canonical(target.root)?;
        let base = &prepared.base;
        let keys = parts
            .iter()
            .map(|part| PartCache::key(part, &program.version, base))
            .collect::<Result<Vec<_>, _>>()?;
        let built = self
            .build_parts(program, parts, &keys, cache, &root, base)
            .await?;
        let fresh = built.iter().filter(|p| matches!(p, Part::Built(_))).count();
        info!(root = %target.root.display(), parts = parts.len(), built = fresh, "kustomization built in parts");
        let stream = stream_name(target.root, Tool::Kustomize);
        // A part names its files absolutely: its origins need no wrapper to be read from.
        let objects = |text: &str| kustomize::objects(text, &stream, &root, base);
        let mut all = Vec::new();
        for part in &built {
            all.extend(substituted(part.text(), vars, &objects, None)?);
        }
        let all = unique(all)?;
        cache.replace(
            keys.into_iter()
                .zip(built.into_iter().map(Part::into_text))
                .collect(),
        );
        Ok(all)
    }

    /// Every part, as cached or built, two at a time; the limits hold for the
    /// whole root as for one run: one timeout, one cap on the output.
    async fn build_parts(
        &self,
        program: &Program,
        parts: &[Vec<PathBuf>],
        keys: &[Digest],
        cache: &PartCache,
        root: &Path,
        base: &Base,
    ) -> Result<Vec<Part>, RenderError> {
        use futures::{StreamExt, TryStreamExt};
        let builds: Vec<_> = parts
            .iter()
            .zip(keys)
            .map(|(part, key)| self.part(program, part, cache.get(key), root, base))
            .collect();
        let all = futures::stream::iter(builds).buffered(2).try_collect();
        let refused = |error| kustomize::failure(root, error, base);
        let built: Vec<Part> = tokio::time::timeout(self.limits.timeout, all)
            .await
            .map_err(|_| refused(process::RunError::Timeout(self.limits.timeout)))??;
        let bytes: usize = built.iter().map(|p| p.text().len()).sum();
        if bytes as u64 > self.limits.max_output {
            return Err(refused(process::RunError::TooLarge(self.limits.max_output)));
        }
        Ok(built)
    }

    /// One part: as `cached`, else built.
    async fn part(
        &self,
        program: &Program,
        part: &[PathBuf],
        cached: Option<&String>,
        root: &Path,
        base: &Base,
    ) -> Result<Part, RenderError> {
        if let Some(text) = cached {
            return Ok(Part::Reused(text.clone()));
        }
        let (text, _) = kustomize::build(program, Wrapped::Files(part), None, self.limits)
            .await
            .map_err(|error| kustomize::failure(root, error, base))?;
        Ok(Part::Built(text))
    }

    /// A copy of `chart` in `scratch` with its missing dependencies fetched into
    /// its `charts/`: the source itself is never written.
    async fn with_dependencies(
        &self,
        chart: &helm::Chart,
        base: &Base,
        scratch: &Path,
    ) -> Result<PathBuf, RenderError> {
        let spelled = base.spell(&chart.dir);
        let copy = scratch.join("chart");
        inputs::copy_tree(&chart.dir, &copy)?;
        for dependency in &chart.fetch {
            let fetched = self.fetch_chart(&spelled, dependency).await?;
            info!(chart = %spelled.display(), dependency = %dependency.name, version = %fetched.version, "chart dependency fetched");
            inputs::copy_tree(&fetched.dir, &copy.join("charts").join(&dependency.name))?;
        }
        Ok(copy)
    }

    async fn helm(
        &self,
        chart: &helm::Chart,
        prepared: &Prepared,
        target: &Target<'_>,
        cluster: &Capabilities,
        vars: Option<&Vars>,
    ) -> Result<Vec<Manifest>, RenderError> {
        let program = self.program(Tool::Helm, target)?;
        let settings = &target.settings.helm;
        let scratch = tempfile::tempdir().map_err(|source| RenderError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut values = chart.values_files.clone();
        if !settings.values.is_empty() {
            let inline = scratch.path().join("inline-values.json");
            let text = Value::Object(settings.values.clone()).to_string();
            std::fs::write(&inline, text).map_err(|source| RenderError::Io {
                path: inline.clone(),
                source,
            })?;
            values.push(inline);
        }
        let options = helm::Options {
            release: target.release(),
            namespace: target.namespace,
            kube_version: &cluster.kube_version,
            api_versions: &cluster.api_versions,
            values,
            set: &settings.set,
        };
        let dir = match chart.fetch.is_empty() {
            true => chart.dir.clone(),
            false => {
                self.with_dependencies(chart, &prepared.base, scratch.path())
                    .await?
            }
        };
        let invocation = process::Invocation {
            program: &program.path,
            args: program
                .prefix
                .iter()
                .cloned()
                .chain(helm::args(&options))
                .collect(),
            dir: &dir,
        };
        let out = process::run(invocation, self.limits)
            .await
            .map_err(|error| helm::failure(target.root, error, chart, &prepared.base))?;
        let text = String::from_utf8_lossy(&out);
        let stream = stream_name(target.root, Tool::Helm);
        let objects = |text: &str| helm::objects(text, &stream, chart, &prepared.base);
        substituted(&text, vars, &objects, None)
    }
}

/// What problems in a tool's output are located in: `overlays/prod (kustomize
/// build)`.
fn stream_name(root: &Path, tool: Tool) -> PathBuf {
    let what = match tool {
        Tool::Kustomize => "kustomize build",
        Tool::Helm => "helm template",
    };
    PathBuf::from(format!("{} ({what})", root.display()))
}

/// Plain files, each substituted and parsed, located as written.
/// Plain files substituted: a SOPS file decrypted first (substitution runs on the
/// plaintext, as Flux substitutes after decrypting).
fn plain(
    files: &[PathBuf],
    vars: Option<&Vars>,
    keys: &crate::sops::AgeKeys,
) -> Result<Vec<Manifest>, RenderError> {
    let mut all = Vec::new();
    for file in files {
        let mut text = std::fs::read_to_string(file).map_err(|source| RenderError::Io {
            path: file.clone(),
            source,
        })?;
        if let Some(plain) = crate::sops::decrypt(file, &text, keys)? {
            text = plain.text();
        }
        let objects = |text: &str| Ok(parse_str(text, file)?);
        all.extend(substituted(&text, vars, &objects, Some(file))?);
    }
    unique(all)
}

/// `objects`, refused when two name the same object (a tool checks this within one
/// run; files and parts are read apart).
fn unique(objects: Vec<Manifest>) -> Result<Vec<Manifest>, RenderError> {
    let problems = manifest::find_duplicates(objects.iter().map(|m| (m.object_ref(), &m.origin)));
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(manifest::ManifestError::Invalid(problems).into())
    }
}

type ToObjects<'a> = dyn Fn(&str) -> Result<Vec<Manifest>, RenderError> + 'a;

/// `objects` of `text` after substitution (when `vars` is given). A missing
/// variable is reported at the object that uses it: in `file` at the variable's
/// line for a plain file, else at the object's origin.
fn substituted(
    text: &str,
    vars: Option<&Vars>,
    objects: &ToObjects,
    file: Option<&Path>,
) -> Result<Vec<Manifest>, RenderError> {
    let Some(vars) = vars else {
        return objects(text);
    };
    match substitute(text, vars) {
        Ok(text) => objects(&text),
        Err(missing) => Err(missing_var(text, missing, objects, file)),
    }
}

fn missing_var(
    text: &str,
    missing: Missing,
    objects: &ToObjects,
    file: Option<&Path>,
) -> RenderError {
    let offset = missing.offset;
    let start = text[..offset].rfind("\n---").map_or(0, |at| at + 1);
    let end = text[offset..]
        .find("\n---")
        .map_or(text.len(), |at| offset + at);
    let object = objects(&text[start..end])
        .ok()
        .and_then(|found| found.into_iter().next());
    let line = 1 + text[..offset].matches('\n').count();
    let at = match (file, &object) {
        (Some(file), _) => Origin {
            file: file.to_path_buf(),
            line,
        },
        (None, Some(object)) => object.origin.clone(),
        (None, None) => Origin {
            file: PathBuf::from("(rendered output)"),
            line,
        },
    };
    RenderError::MissingVar {
        at,
        object: object.map_or_else(|| "an object".into(), |o| o.object_ref().to_string()),
        name: missing.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_root_decides() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(detect(dir), RootKind::Plain);
        fs::write(dir.join("Chart.yaml"), "name: x\n").unwrap();
        assert_eq!(detect(dir), RootKind::Helm);
        fs::write(dir.join("Kustomization"), "resources: []\n").unwrap();
        assert_eq!(detect(dir), RootKind::Kustomize);
        assert_eq!(detect(&dir.join("Chart.yaml")), RootKind::Plain);
        assert_eq!(detect(&dir.join("missing")), RootKind::Plain);
    }

    #[test]
    fn plain_files_are_substituted_and_a_missing_variable_is_located() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("app.yaml");
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {env: \"${ENV}\"}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata:\n  \
                    r: \"${REGION:=eu}\"\n  x: \"$${ENV}\"\n";
        fs::write(&file, text).unwrap();
        let mut vars = Vars::default();
        vars.insert("ENV".into(), "prod".into());
        let objects = plain(
            std::slice::from_ref(&file),
            Some(&vars),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(objects[0].body["data"]["env"], "prod");
        assert_eq!(objects[1].body["data"]["r"], "eu");
        assert_eq!(objects[1].body["data"]["x"], "${ENV}");
        assert_eq!(objects[1].origin.line, 6);
        let err = plain(
            std::slice::from_ref(&file),
            Some(&Vars::default()),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string().split(';').next().unwrap(),
            format!(
                "{}:4: ConfigMap/a: variable ENV is not set and has no default",
                file.display()
            )
        );
        let literal = plain(&[file], None, &Default::default()).unwrap();
        assert_eq!(literal[0].body["data"]["env"], "${ENV}");
    }

    #[test]
    fn the_key_follows_what_a_render_reads_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("kustomization.yaml"), "resources: [cm.yaml]\n").unwrap();
        fs::write(root.join("cm.yaml"), "kind: ConfigMap\n").unwrap();
        fs::write(tmp.path().join("README.md"), "# repo\n").unwrap();
        let settings = RenderSettings::default();
        let target = Target {
            root: &root,
            base: tmp.path(),
            namespace: "shop",
            name: "app",
            settings: &settings,
        };
        let kustomize = |version: &str| Program {
            path: "/bin/kustomize".into(),
            prefix: Vec::new(),
            version: version.into(),
        };
        let renderer = Renderer::new(
            Tools::with(Ok(kustomize("v5.8.1")), Err("none".into())),
            ToolLimits::default(),
        );
        let cluster = Capabilities::default();
        let key = |renderer: &Renderer, vars: &Vars| match prepare(&target)
            .unwrap()
            .key(&target, renderer, &cluster, vars)
        {
            RenderKey::Inputs(digest) => digest,
            RenderKey::Unknown => panic!("local inputs have a key"),
        };
        let first = key(&renderer, &Vars::default());
        fs::write(tmp.path().join("README.md"), "# edited\n").unwrap();
        assert_eq!(key(&renderer, &Vars::default()), first, "not an input");
        fs::write(root.join("cm.yaml"), "kind: ConfigMap\ndata: {}\n").unwrap();
        let edited = key(&renderer, &Vars::default());
        assert_ne!(edited, first);
        let mut vars = Vars::default();
        vars.insert("ENV".into(), "prod".into());
        assert_ne!(key(&renderer, &vars), edited);
        let newer = Renderer::new(
            Tools::with(Ok(kustomize("v5.9.0")), Err("none".into())),
            ToolLimits::default(),
        );
        assert_ne!(key(&newer, &Vars::default()), edited);
    }
}

/// Helpers shared by the render modules' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::fs;
    use std::path::Path;

    /// Writes `text` to `dir/relative`, creating its directories.
    pub(crate) fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        fs::create_dir_all(path.parent().expect("a file inside dir")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
}
