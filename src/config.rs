//! The daemon's `config.toml`: schema, defaults and validation.
//!
//! Loading happens in two steps so that a user sees every mistake at once instead of
//! fixing them one start-up at a time:
//!
//! 1. serde reads the TOML into loose `Raw*` structs (`deny_unknown_fields` catches
//!    misspelt keys; durations and paths stay strings so they cannot fail here);
//! 2. [`Checker`] turns those into the typed [`Config`], collecting one message per
//!    problem, each naming the key (`source[1] "shop": interval = "soon": …`) and
//!    what to do about it.
//!
//! Nothing here touches the network. Files named by the config (directories, SSH keys,
//! known_hosts, kubeconfig) must exist: relative paths resolve against the config
//! file's directory and a leading `~` expands to `$HOME`. Environment variables named
//! by `*_env` keys must be set, but their values are not kept here: [`crate::source`]
//! reads them when it builds a source, so a secret never sits in a struct that might
//! be printed.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::ignore::{IgnoreRule, IgnoreRules, Selector};
use crate::engine::recreate::Recreate;
use crate::engine::takeover::DriftManagers;
use crate::engine::{Adoption, ClusterScoped, DriftRules, NamespacePattern, Tenancy};
use crate::kube::Impersonation;
use crate::kube::is_dns_label;
use crate::manifest;
use crate::render::{HelmSettings, Limits, RenderSettings, ToolPaths, Vars, VarsFrom, is_var_name};

/// The HTTP listen address when `[server] listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9476";
/// `[cluster] request_timeout` when unset: the client's own default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = crate::kube::DEFAULT_REQUEST_TIMEOUT;
/// Git poll and resync interval when a source sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// One resync in this many runs a full reconcile even when nothing changed.
pub const DEFAULT_FULL_RESYNC_EVERY: u32 = 10;
/// How long each wave and hook may take to become healthy when a source sets none.
pub const DEFAULT_WAVE_TIMEOUT: Duration = crate::engine::DEFAULT_STAGE_TIMEOUT;
/// Namespace for namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The branch a Git source follows when it names no branch, tag or commit.
pub const DEFAULT_BRANCH: &str = "main";
/// The Lease leader election takes when `[leader_election]` names none.
pub const DEFAULT_LEASE_NAME: &str = "converge";

/// Looks up an environment variable; injectable so tests need not mutate the process
/// environment (which is `unsafe` and racy with parallel tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// The file parsed but its settings are wrong; every problem is listed.
    #[error("{}: {} problem{}:\n  {}", path.display(), problems.len(),
            if problems.len() == 1 { "" } else { "s" }, problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The validated configuration of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was loaded from (absolute); relative paths in it were resolved
    /// against its directory.
    pub path: PathBuf,
    /// How to reach the cluster.
    pub cluster: ClusterSettings,
    /// The HTTP server (health, metrics, status, webhooks).
    pub server: ServerConfig,
    /// Where Git checkouts live, one directory per source: `<state_dir>/<source name>/`.
    /// Defaults to `$XDG_STATE_HOME/converge` (or `~/.local/state/converge`).
    pub state_dir: PathBuf,
    /// The sources, in file order; names are unique.
    pub sources: Vec<SourceConfig>,
    /// `[render]`: the rendering tools and their limits.
    pub render: RenderConfig,
    /// `[limits]`: the largest and deepest manifest file converge reads.
    pub limits: manifest::Limits,
    /// `[leader_election]`: which replica writes, when several run.
    pub leader_election: LeaderElectionConfig,
    /// `[[clusters]]`: clusters other than `[cluster]` (the home cluster, where the
    /// Leases stay) that sources may name with `cluster = "NAME"`.
    pub clusters: Vec<ClusterEntry>,
}

/// One `[[clusters]]` entry: another cluster, reached with its own kubeconfig.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterEntry {
    /// A DNS label that sources name.
    pub name: String,
    /// Where its kubeconfig is.
    pub kubeconfig: KubeconfigFrom,
    /// The context to use instead of the file's `current-context`.
    pub context: Option<String>,
}

/// Where a `[[clusters]]` entry's kubeconfig is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigFrom {
    /// `kubeconfig = "PATH"` (checked to exist).
    File(PathBuf),
    /// `secret = "NAMESPACE/NAME"`: a Secret on the home cluster whose `value`
    /// (Flux's key), `value.yaml` or `kubeconfig` entry holds it; read when the
    /// cluster's sources connect.
    Secret { namespace: String, name: String },
}

/// `[leader_election]`: replicas elect who writes with `coordination.k8s.io/v1`
/// Leases, with client-go's semantics and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElectionConfig {
    /// Off unless `enabled = true` (or `converge run --leader-elect`).
    pub enabled: bool,
    /// One Lease for the daemon, or one per source shared out among replicas.
    pub scope: ElectionScope,
    /// Where the Leases live; `None`: the kubeconfig context's (or the service
    /// account's) namespace.
    pub namespace: Option<String>,
    /// The Lease's name (default "converge"); per-source Leases are `<name>-<source>`.
    pub name: String,
    pub timing: LeaseTiming,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            scope: ElectionScope::Daemon,
            namespace: None,
            name: DEFAULT_LEASE_NAME.into(),
            timing: LeaseTiming::default(),
        }
    }
}

/// What one Lease elects a writer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionScope {
    /// One leader writes every source; the others stand by (`shard = false`).
    Daemon,
    /// Every source has its own Lease and replicas share them out (`shard = true`).
    Source,
}

/// client-go's three leader-election durations. Invariant (checked when read):
/// `lease_duration > renew_deadline > 1.2 × retry_period > 0`, and the lease
/// duration is whole seconds (the Lease stores `leaseDurationSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease holds after its last renewal, as others measure it.
    pub lease_duration: Duration,
    /// How long a leader keeps writing without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a Lease is renewed or tried.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's (and kube-controller-manager's) 15 s, 10 s, 2 s.
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Why these durations cannot elect safely, if they cannot. client-go's rules:
    /// a leader must give up before others may take over, and must get more than
    /// one try at renewing before it gives up.
    pub fn problem(&self) -> Option<String> {
        let LeaseTiming {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if retry_period.is_zero() {
            return Some("retry_period must be more than zero".into());
        }
        if lease_duration.subsec_nanos() != 0 {
            return Some(format!(
                "lease_duration = {:?}: must be whole seconds (a Lease holds leaseDurationSeconds)",
                lease_duration
            ));
        }
        if lease_duration <= renew_deadline {
            return Some(format!(
                "lease_duration ({lease_duration:?}) must be longer than renew_deadline \
                 ({renew_deadline:?}): a leader must stop writing before others may take over"
            ));
        }
        if renew_deadline.as_secs_f64() <= 1.2 * retry_period.as_secs_f64() {
            return Some(format!(
                "renew_deadline ({renew_deadline:?}) must be longer than 1.2 × retry_period \
                 ({retry_period:?}): a leader needs more than one try to renew"
            ));
        }
        None
    }
}

/// `[render]`: where kustomize and helm are (default: on `PATH`; `kubectl
/// kustomize` when there is no kustomize) and how long one render may take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderConfig {
    pub tools: ToolPaths,
    pub limits: Limits,
}

/// `[cluster]`: which cluster to converge. Both unset means `$KUBECONFIG`, else the
/// in-cluster service account.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// A kubeconfig file (checked to exist).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its `current-context`.
    pub context: Option<String>,
    /// How long one API request may take, retries included (default 60 s).
    pub request_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            kubeconfig: None,
            context: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// `[server]`: the HTTP endpoints `/healthz /readyz /metrics /status /hooks/git/<source>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The address to listen on (default 127.0.0.1:9476: loopback only, on purpose).
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9476)),
        }
    }
}

/// One `[[source]]`: where manifests come from and how to converge them.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique DNS label; becomes the ApplySet name and the webhook path part.
    pub name: String,
    /// A local directory or a Git repository.
    pub kind: SourceKind,
    /// Git poll interval and, for every source, the resync interval (default 30s).
    pub interval: Duration,
    /// One resync in this many is a full reconcile even when nothing changed: the
    /// safety net under the watches (default 10; 1 makes every resync full).
    pub full_resync_every: u32,
    /// Namespace for namespaced objects that name none (default "default").
    pub namespace: String,
    /// Delete owned objects that left the source (default true).
    pub prune: bool,
    /// Undo out-of-band changes to owned objects; false only reports drift (default true).
    pub self_heal: bool,
    /// Allow a revision to prune more than the mass-prune limit, or everything (default false).
    pub allow_mass_prune: bool,
    /// Create `namespace` when it does not exist (default false), as Helm's
    /// `--create-namespace`; never pruned.
    pub create_namespace: bool,
    /// Take over objects another source owns (default false: only those annotated
    /// `converge.dev/adopt: allowed`; others are shared or refused).
    pub adopt: Adoption,
    /// `service_account = "NS/NAME"` (or `[tenancy] default_service_account`): the
    /// ServiceAccount every request for this source is authorized as.
    pub acting_as: Option<Impersonation>,
    /// `allowed_namespaces` and `allow_cluster_scoped` (default false with a
    /// service account): what the source may write.
    pub tenancy: Tenancy,
    /// The `[[clusters]]` entry the source's objects go to; `None`: the home cluster.
    pub cluster: Option<String>,
    /// `drift_managers` (default: the kubectl family), `[[source.ignore]]` and
    /// `recreate` (default false: only objects annotated `converge.dev/recreate`).
    pub drift: DriftRules,
    /// How a kustomization or chart at the root is rendered, and the variables of
    /// post-build substitution.
    pub render: RenderSettings,
    /// How long each wave and hook may take to become healthy (default 5m).
    pub wave_timeout: Duration,
    /// Sources that must be synced at their current revision and healthy before
    /// this one reconciles (checked to exist, without cycles).
    pub depends_on: Vec<String>,
}

/// Where a source's manifests live.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A local directory (absolute, checked to exist), watched for changes.
    Dir { path: PathBuf },
    /// A Git repository, polled at the source's interval and on webhook calls.
    Git(GitConfig),
}

/// A Git source's settings. Credentials are named by environment variable and read
/// by [`crate::source`], never stored here.
#[derive(Clone, PartialEq)]
pub struct GitConfig {
    /// The remote URL as written (https, http, ssh, `user@host:path` or file).
    /// May embed credentials: print [`GitConfig::display_url`] instead.
    pub url: String,
    /// What to check out (default: branch "main").
    pub reference: GitRef,
    /// Subdirectory of the repository holding the manifests (relative, no `..`).
    pub path: Option<PathBuf>,
    /// Environment variable with the HTTPS user name (default "git").
    pub username_env: Option<String>,
    /// Environment variable with the HTTPS password or token.
    pub password_env: Option<String>,
    /// Private key for SSH remotes (checked to exist).
    pub ssh_key_file: Option<PathBuf>,
    /// known_hosts for SSH remotes (checked to exist); default `~/.ssh/known_hosts`.
    pub known_hosts_file: Option<PathBuf>,
    /// Environment variable with the secret that signs `POST /hooks/git/<source>`.
    pub webhook_secret_env: Option<String>,
}

impl GitConfig {
    /// The URL without any password embedded in it, for logs and messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Whether the URL uses SSH (`ssh://` or scp-like `user@host:path`).
    pub fn is_ssh(&self) -> bool {
        transport(&self.url) == Some(Transport::Ssh)
    }
}

// Hand-written so that `{:?}` of a config never prints a password embedded in the URL.
impl fmt::Debug for GitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitConfig")
            .field("url", &self.display_url())
            .field("reference", &self.reference)
            .field("path", &self.path)
            .field("username_env", &self.username_env)
            .field("password_env", &self.password_env)
            .field("ssh_key_file", &self.ssh_key_file)
            .field("known_hosts_file", &self.known_hosts_file)
            .field("webhook_secret_env", &self.webhook_secret_env)
            .finish()
    }
}

/// The revision a Git source follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// Follow a branch; force-pushes are taken as they are.
    Branch(String),
    /// Follow a tag (re-pointed tags are followed too).
    Tag(String),
    /// Pin one commit (full hex id, lowercase); never changes.
    Commit(String),
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b:?}"),
            GitRef::Tag(t) => write!(f, "tag {t:?}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

impl Config {
    /// Reads and validates `path`, with `*_env` checks against the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (which anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigFileError> {
        Config::parse_with_env(text, path, &process_env)
    }

    /// Like [`Config::parse`], with environment lookups (`*_env`, `$HOME`,
    /// `$XDG_STATE_HOME`) answered by `env`.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        env: EnvLookup,
    ) -> Result<Config, ConfigFileError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigFileError::Syntax {
            path: path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut checker = Checker {
            base: &base,
            env,
            problems: Vec::new(),
            default_service_account: None,
        };
        let config = checker.config(raw, path.clone());
        if checker.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigFileError::Invalid {
                path,
                problems: checker.problems,
            })
        }
    }

    /// The source called `name`.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------------
// The TOML as written

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    server: RawServer,
    state_dir: Option<String>,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    render: RawRender,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    leader_election: RawLeaderElection,
    #[serde(default)]
    tenancy: RawTenancy,
    #[serde(default)]
    clusters: Vec<RawClusterEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterEntry {
    name: Option<String>,
    kubeconfig: Option<String>,
    secret: Option<String>,
    context: Option<String>,
}

/// `[tenancy]`: defaults every source shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenancy {
    /// Every source without a `service_account` acts as this ServiceAccount in its
    /// own namespace (Flux's lockdown).
    default_service_account: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeaderElection {
    enabled: Option<bool>,
    shard: Option<bool>,
    namespace: Option<String>,
    name: Option<String>,
    lease_duration: Option<toml::Value>,
    renew_deadline: Option<toml::Value>,
    retry_period: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_file_mib: Option<u64>,
    max_depth: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRender {
    kustomize: Option<String>,
    helm: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelm {
    release: Option<String>,
    #[serde(default)]
    values_files: Vec<String>,
    #[serde(default)]
    values: toml::Table,
    #[serde(default)]
    set: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    kubeconfig: Option<String>,
    context: Option<String>,
    request_timeout: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    dir: Option<String>,
    git: Option<String>,
    branch: Option<String>,
    tag: Option<String>,
    commit: Option<String>,
    path: Option<String>,
    /// A value, not a string, so `interval = 30` gets a helpful message of its own.
    interval: Option<toml::Value>,
    full_resync_every: Option<i64>,
    username_env: Option<String>,
    password_env: Option<String>,
    ssh_key_file: Option<String>,
    known_hosts_file: Option<String>,
    webhook_secret_env: Option<String>,
    namespace: Option<String>,
    prune: Option<bool>,
    self_heal: Option<bool>,
    allow_mass_prune: Option<bool>,
    create_namespace: Option<bool>,
    adopt: Option<bool>,
    service_account: Option<String>,
    cluster: Option<String>,
    allowed_namespaces: Option<Vec<String>>,
    allow_cluster_scoped: Option<bool>,
    drift_managers: Option<Vec<String>>,
    #[serde(default)]
    ignore: Vec<RawIgnore>,
    recreate: Option<bool>,
    allow_remote_bases: Option<bool>,
    vars: Option<toml::Table>,
    vars_from: Option<Vec<String>>,
    helm: Option<RawHelm>,
    wave_timeout: Option<toml::Value>,
    depends_on: Option<Vec<String>>,
}

/// A `[[source.ignore]]` table: JSON pointers, and which objects they apply to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIgnore {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

impl RawSource {
    /// The Git-only keys that are set, by name, for rejecting them on a dir source.
    fn git_only_keys(&self) -> Vec<(&'static str, &str)> {
        let keys = [
            ("branch", &self.branch),
            ("tag", &self.tag),
            ("commit", &self.commit),
            ("path", &self.path),
            ("username_env", &self.username_env),
            ("password_env", &self.password_env),
            ("ssh_key_file", &self.ssh_key_file),
            ("known_hosts_file", &self.known_hosts_file),
            ("webhook_secret_env", &self.webhook_secret_env),
        ];
        keys.into_iter()
            .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// Validation

/// Turns raw settings into typed ones, recording every problem instead of stopping.
struct Checker<'a> {
    base: &'a Path,
    env: EnvLookup<'a>,
    problems: Vec<String>,
    /// `[tenancy] default_service_account`, read before the sources.
    default_service_account: Option<String>,
}

impl Checker<'_> {
    fn problem(&mut self, at: &str, message: impl fmt::Display) {
        self.problems.push(format!("{at}: {message}"));
    }

    fn config(&mut self, raw: RawConfig, path: PathBuf) -> Config {
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
        let clusters = self.clusters(raw.clusters);
        let sources = self.sources(raw.sources);
        self.source_clusters(&sources, &clusters);
        let render = self.render(raw.render);
        let limits = self.limits(raw.limits);
        let leader_election = self.leader_election(raw.leader_election, &sources);
        Config {
            path,
            cluster,
            server,
            state_dir,
            sources,
            render,
            limits,
            leader_election,
            clusters,
        }
    }

    /// `[[clusters]]`: unique names, existing kubeconfig files.
    fn clusters(&mut self, raws: Vec<RawClusterEntry>) -> Vec<ClusterEntry> {
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
    fn source_clusters(&mut self, sources: &[SourceConfig], clusters: &[ClusterEntry]) {
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

    fn leader_election(
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

    fn cluster(&mut self, raw: RawCluster) -> ClusterSettings {
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

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let Some(listen) = raw.listen else {
            return ServerConfig::default();
        };
        match listen.parse() {
            Ok(listen) => ServerConfig { listen },
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

    fn sources(&mut self, raws: Vec<RawSource>) -> Vec<SourceConfig> {
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
        Some(SourceConfig {
            name: name?,
            kind: kind?,
            interval,
            full_resync_every,
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
            depends_on: raw.depends_on.unwrap_or_default(),
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

    /// A duration key (`interval`, `wave_timeout`): more than zero, `default` if unset.
    fn duration(
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

    fn source_kind(&mut self, at: &str, raw: &RawSource) -> Option<SourceKind> {
        match (&raw.dir, &raw.git) {
            (Some(_), Some(_)) => {
                self.problem(
                    at,
                    "both dir and git are set; a source is one or the other, keep one",
                );
                None
            }
            (None, None) => {
                self.problem(
                    at,
                    "neither dir nor git is set; add dir = \"path/to/manifests\" or git = \"https://…\"",
                );
                None
            }
            (Some(dir), None) => self.dir_source(at, dir, raw),
            (None, Some(url)) => self.git_source(at, url, raw).map(SourceKind::Git),
        }
    }

    fn dir_source(&mut self, at: &str, dir: &str, raw: &RawSource) -> Option<SourceKind> {
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
        Some(SourceKind::Dir { path })
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

    fn env_var(&mut self, at: &str, key: &str, var: &str) {
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
    fn limits(&mut self, raw: RawLimits) -> manifest::Limits {
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

    fn render(&mut self, raw: RawRender) -> RenderConfig {
        let mut limits = Limits::default();
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
        RenderSettings {
            helm,
            allow_remote_bases: raw.allow_remote_bases.unwrap_or(false),
            vars,
            vars_from,
        }
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

    fn existing_file(&mut self, at: &str, value: &str) -> PathBuf {
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

    fn existing_dir(&mut self, at: &str, value: &str) -> PathBuf {
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
    fn resolve(&self, value: &str) -> PathBuf {
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

    fn default_state_dir(&self) -> PathBuf {
        let state_home = (self.env)("XDG_STATE_HOME").filter(|s| Path::new(s).is_absolute());
        match state_home {
            Some(dir) => PathBuf::from(dir).join("converge"),
            None if (self.env)("HOME").is_some() => self.resolve("~/.local/state/converge"),
            None => std::env::temp_dir().join("converge-state"),
        }
    }
}

/// A TOML value as the user wrote it, near enough for a message.
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

fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("<{}>", other.type_str()),
    }
}

// ---------------------------------------------------------------------------------
// Small parsers, public where the daemon and CLI can reuse them.

/// A duration that cannot be read, with how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; write a number and a unit, e.g. \"30s\", \"1m30s\", \"2h\" or \"5 minutes\"")]
pub struct InvalidDuration {
    reason: String,
}

/// Parses a duration the way both `config.toml` (`interval`) and the command line
/// (`--timeout`) read it: humantime's syntax (`"30s"`, `"1m30s"`, `"500ms"`,
/// `"5 minutes"`, `"1.5h"`), surrounding blanks ignored; negative durations refused.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    use humantime::DurationError as E;
    let text = text.trim();
    let reason = if text.is_empty() {
        "empty".to_string()
    } else if text.starts_with('-') {
        "negative durations are not allowed".to_string()
    } else {
        match humantime::parse_duration(text) {
            Ok(duration) => return Ok(duration),
            Err(E::UnknownUnit { unit, value, .. }) if unit.is_empty() => {
                format!("\"{value}\" has no unit")
            }
            Err(E::UnknownUnit { unit, .. }) => format!("unknown unit {unit:?}"),
            Err(E::NumberOverflow) => "too long or too precise".to_string(),
            Err(E::Empty | E::InvalidCharacter(_) | E::NumberExpected(_)) => {
                "not a duration".to_string()
            }
        }
    };
    Err(InvalidDuration { reason })
}

/// How a Git URL is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://` or `http://` (plain HTTP is for loopback tests and trusted networks).
    Http,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `file://` or an absolute path: a repository on this machine.
    File,
}

/// The transport of a Git URL, or None when converge does not support it.
pub fn transport(url: &str) -> Option<Transport> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if rest.is_empty() {
            return None;
        }
        return match scheme.to_ascii_lowercase().as_str() {
            "https" | "http" => Some(Transport::Http),
            "ssh" | "git+ssh" | "ssh+git" => Some(Transport::Ssh),
            "file" => Some(Transport::File),
            _ => None,
        };
    }
    if url.starts_with('/') {
        return Some(Transport::File);
    }
    // scp-like: [user@]host:path, with no slash before the colon.
    match url.split_once(':') {
        Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => {
            Some(Transport::Ssh)
        }
        _ => None,
    }
}

/// `url` with any password in it replaced by `***` (`https://user:***@host/…`), so it
/// can be logged and put in error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // A lone userinfo on https is usually a token (https://<token>@host).
                if scheme.starts_with("http") {
                    "***".into()
                } else {
                    user.to_string()
                }
            };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A config directory with a manifests dir, an SSH key, known_hosts and a
    /// kubeconfig, and an environment where only `GIT_TOKEN` and `HOOK` are set.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("manifests")).unwrap();
            fs::create_dir_all(dir.path().join("home/.kube")).unwrap();
            fs::write(dir.path().join("home/.kube/config"), "apiVersion: v1\n").unwrap();
            fs::write(dir.path().join("id_ed25519"), "key").unwrap();
            fs::write(dir.path().join("known_hosts"), "").unwrap();
            Fixture { dir }
        }

        fn env(&self) -> impl Fn(&str) -> Option<String> + '_ {
            move |name| match name {
                "HOME" => Some(self.dir.path().join("home").display().to_string()),
                "GIT_TOKEN" => Some("s3cret".into()),
                "HOOK" => Some("hook".into()),
                "EMPTY" => Some(String::new()),
                _ => None,
            }
        }

        fn parse(&self, text: &str) -> Result<Config, ConfigFileError> {
            let path = self.dir.path().join("config.toml");
            Config::parse_with_env(text, &path, &self.env())
        }

        /// The problems of an invalid config (panics on anything else).
        fn problems(&self, text: &str) -> Vec<String> {
            match self.parse(text) {
                Err(ConfigFileError::Invalid { problems, .. }) => problems,
                other => panic!("expected Invalid, got {other:?}"),
            }
        }

        /// The single problem of an invalid config.
        fn problem(&self, text: &str) -> String {
            let problems = self.problems(text);
            assert_eq!(problems.len(), 1, "{problems:#?}");
            problems.into_iter().next().unwrap()
        }
    }

    const DIR: &str = "[[source]]\nname = \"app\"\ndir = \"manifests\"\n";
    const GIT: &str = "[[source]]\nname = \"shop\"\ngit = \"https://example.com/org/shop.git\"\n";

    fn assert_contains(text: &str, parts: &[&str]) {
        for part in parts {
            assert!(text.contains(part), "{text:?} does not contain {part:?}");
        }
    }

    #[test]
    fn minimal_dir_source_gets_every_default() {
        let fx = Fixture::new();
        let config = fx.parse(DIR).unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.cluster, ClusterSettings::default());
        assert_eq!(
            config.state_dir,
            fx.dir.path().join("home/.local/state/converge")
        );
        let source = &config.sources[0];
        assert_eq!(source.name, "app");
        assert_eq!(
            source.kind,
            SourceKind::Dir {
                path: fx.dir.path().join("manifests")
            }
        );
        assert_eq!(source.interval, Duration::from_secs(30));
        assert_eq!(source.full_resync_every, DEFAULT_FULL_RESYNC_EVERY);
        assert_eq!(source.namespace, "default");
        assert!(source.prune && source.self_heal && !source.allow_mass_prune);
        assert_eq!(
            source.drift,
            DriftRules::default(),
            "the kubectl family, no rules"
        );
        assert_eq!(source.wave_timeout, Duration::from_secs(300));
        assert!(source.depends_on.is_empty());
    }

    /// A dir source called `name` with `extra` keys.
    fn dir_source(name: &str, extra: &str) -> String {
        format!("[[source]]\nname = \"{name}\"\ndir = \"manifests\"\n{extra}")
    }

    #[test]
    fn dependencies_and_wave_timeouts_are_read() {
        let fx = Fixture::new();
        let text = dir_source("infra", "")
            + &dir_source("app", "depends_on = [\"infra\"]\nwave_timeout = \"90s\"\n");
        let config = fx.parse(&text).unwrap();
        let app = config.source("app").unwrap();
        assert_eq!(app.depends_on, ["infra"]);
        assert_eq!(app.wave_timeout, Duration::from_secs(90));
        let bad = fx.problem(&dir_source("app", "wave_timeout = 30\n"));
        assert_contains(&bad, &["wave_timeout = 30: not a duration string"]);
    }

    #[test]
    fn sources_act_as_service_accounts_within_their_namespaces() {
        let fx = Fixture::new();
        let text = dir_source(
            "team",
            "namespace = \"team-a\"\nservice_account = \"team-a/deployer\"\n\
             allowed_namespaces = [\"team-a\", \"team-a-*\"]\n",
        ) + "[tenancy]\ndefault_service_account = \"gitops\"\n"
            + &dir_source("other", "namespace = \"team-b\"\n");
        let config = fx.parse(&text).unwrap();
        let team = config.source("team").unwrap();
        let acting = team.acting_as.as_ref().map(|a| a.user.as_str());
        assert_eq!(acting, Some("system:serviceaccount:team-a:deployer"));
        assert_eq!(team.tenancy.cluster_scoped, ClusterScoped::Refused);
        assert!(team.tenancy.allows_namespace("team-a-dev"));
        assert!(!team.tenancy.allows_namespace("team-b"));
        let other = config.source("other").unwrap();
        let acting = other.acting_as.as_ref().map(|a| a.user.as_str());
        assert_eq!(
            acting,
            Some("system:serviceaccount:team-b:gitops"),
            "the default, in the source's own namespace"
        );
        assert!(other.tenancy.allows_namespace("anything"));
        let open = fx.parse(DIR).unwrap();
        assert_eq!(open.sources[0].acting_as, None);
        assert_eq!(open.sources[0].tenancy, Tenancy::default());
    }

    #[test]
    fn tenancy_settings_are_checked() {
        let fx = Fixture::new();
        let bad = fx.problem(&dir_source("app", "service_account = \"deployer\"\n"));
        assert_contains(
            &bad,
            &["service_account = \"deployer\": write NAMESPACE/NAME"],
        );
        let outside = fx.problem(&dir_source(
            "app",
            "namespace = \"web\"\nallowed_namespaces = [\"team-*\"]\n",
        ));
        assert_contains(
            &outside,
            &["namespace = \"web\" is not among its allowed_namespaces"],
        );
        let reads = fx.problem(
            &(dir_source("infra", "namespace = \"ops\"\n")
                + &dir_source(
                    "app",
                    "namespace = \"team\"\nallowed_namespaces = [\"team\"]\n\
                     depends_on = [\"infra\"]\n",
                )),
        );
        assert_contains(
            &reads,
            &["depends_on \"infra\": that source is in namespace \"ops\""],
        );
    }

    #[test]
    fn dependencies_must_exist_and_never_form_a_cycle() {
        let fx = Fixture::new();
        let unknown = fx.problem(&dir_source("app", "depends_on = [\"infra\"]\n"));
        assert_contains(
            &unknown,
            &["source \"app\": depends_on: no source is called \"infra\""],
        );
        let itself = fx.problem(&dir_source("app", "depends_on = [\"app\"]\n"));
        assert_contains(&itself, &["\"app\" is this source itself"]);
        let text = dir_source("a", "depends_on = [\"b\"]\n")
            + &dir_source("b", "depends_on = [\"c\"]\n")
            + &dir_source("c", "depends_on = [\"a\"]\n")
            + &dir_source("d", "depends_on = [\"a\"]\n");
        let cycle = fx.problem(&text);
        assert_contains(
            &cycle,
            &["depends_on: the sources depend on each other in a cycle: a → b → c → a"],
        );
        // Two sources depending on one: no cycle.
        let diamond = dir_source("base", "")
            + &dir_source("x", "depends_on = [\"base\"]\n")
            + &dir_source("y", "depends_on = [\"base\", \"x\"]\n");
        assert!(fx.parse(&diamond).is_ok());
    }

    #[test]
    fn drift_rules_are_read() {
        let fx = Fixture::new();
        let text = format!(
            "{DIR}recreate = true\ndrift_managers = [\"kubectl-edit\", \"helm\"]\n\
             [[source.ignore]]\nkind = \"Deployment\"\npaths = [\"/spec/replicas\"]\n\
             [[source.ignore]]\nnamespace = \"shop\"\nname = \"web\"\n\
             paths = [\"/metadata/annotations/example.com~1owner\"]\n"
        );
        let config = fx.parse(&text).unwrap();
        let drift = &config.sources[0].drift;
        assert_eq!(drift.recreate, Recreate::Allowed);
        let managers: Vec<&str> = drift.managers.names().collect();
        assert_eq!(managers, ["helm", "kubectl-edit"]);
        let rules = &drift.ignore.0;
        assert_eq!(rules[0].selector.kind.as_deref(), Some("Deployment"));
        assert_eq!(rules[0].paths[0].to_string(), "/spec/replicas");
        assert_eq!(rules[1].selector.namespace.as_deref(), Some("shop"));
        assert_eq!(rules[1].selector.name.as_deref(), Some("web"));
    }

    #[test]
    fn ignore_rules_need_json_pointers() {
        let fx = Fixture::new();
        let problems = fx.problems(&format!(
            "{DIR}[[source.ignore]]\npaths = [\"spec.replicas\"]\n\
             [[source.ignore]]\nkind = \"Deployment\"\n"
        ));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_contains(
            &problems[0],
            &["ignore[0]", "spec.replicas", "JSON pointer"],
        );
        assert_contains(&problems[1], &["ignore[1]", "paths is missing"]);
        let err = fx.parse(&format!("{DIR}[[source.ignore]]\npath = [\"/a\"]\n"));
        assert_contains(&err.unwrap_err().to_string(), &["unknown field", "path"]);
    }

    #[test]
    fn git_source_defaults_to_branch_main() {
        let fx = Fixture::new();
        let config = fx.parse(GIT).unwrap();
        let SourceKind::Git(git) = &config.sources[0].kind else {
            panic!("not git")
        };
        assert_eq!(git.reference, GitRef::Branch("main".into()));
        assert_eq!(git.path, None);
        assert!(!git.is_ssh());
    }

    #[test]
    fn full_git_source_is_read() {
        let fx = Fixture::new();
        let text = format!(
            "{GIT}tag = \"v1.2.0\"\npath = \"./clusters/dev/\"\ninterval = \"1h30m\"\n\
             username_env = \"GIT_TOKEN\"\npassword_env = \"GIT_TOKEN\"\n\
             webhook_secret_env = \"HOOK\"\nnamespace = \"shop\"\nprune = false\n\
             self_heal = false\nallow_mass_prune = true\nfull_resync_every = 3\n"
        );
        let config = fx.parse(&text).unwrap();
        let source = &config.sources[0];
        let SourceKind::Git(git) = &source.kind else {
            panic!("not git")
        };
        assert_eq!(git.reference, GitRef::Tag("v1.2.0".into()));
        assert_eq!(git.path, Some(PathBuf::from("clusters/dev")));
        assert_eq!(git.password_env.as_deref(), Some("GIT_TOKEN"));
        assert_eq!(source.interval, Duration::from_secs(5400));
        assert_eq!(source.full_resync_every, 3);
        assert_eq!(source.namespace, "shop");
        assert!(!source.prune && !source.self_heal && source.allow_mass_prune);
    }

    #[test]
    fn commit_pin_is_lowercased() {
        let fx = Fixture::new();
        let sha = "ABCDEF0123456789abcdef0123456789ABCDEF01";
        let config = fx.parse(&format!("{GIT}commit = \"{sha}\"\n")).unwrap();
        let SourceKind::Git(git) = &config.sources[0].kind else {
            panic!("not git")
        };
        assert_eq!(git.reference, GitRef::Commit(sha.to_ascii_lowercase()));
    }

    #[test]
    fn ssh_source_with_key_and_known_hosts() {
        let fx = Fixture::new();
        let text = "[[source]]\nname = \"s\"\ngit = \"git@github.com:org/repo.git\"\n\
                    ssh_key_file = \"id_ed25519\"\nknown_hosts_file = \"known_hosts\"\n";
        let config = fx.parse(text).unwrap();
        let SourceKind::Git(git) = &config.sources[0].kind else {
            panic!("not git")
        };
        assert!(git.is_ssh());
        assert_eq!(git.ssh_key_file, Some(fx.dir.path().join("id_ed25519")));
        assert_eq!(
            git.known_hosts_file,
            Some(fx.dir.path().join("known_hosts"))
        );
    }

    #[test]
    fn request_timeout_is_a_positive_duration() {
        let fx = Fixture::new();
        let config = fx.parse(DIR).unwrap();
        assert_eq!(config.cluster.request_timeout, Duration::from_secs(60));
        let text = format!("[cluster]\nrequest_timeout = \"2m\"\n{DIR}");
        let config = fx.parse(&text).unwrap();
        assert_eq!(config.cluster.request_timeout, Duration::from_secs(120));
        for (value, says) in [
            ("60", "request_timeout = 60: not a duration string"),
            ("\"0s\"", "request_timeout = \"0s\": must be more than zero"),
            ("\"soon\"", "request_timeout = \"soon\""),
        ] {
            let problem = fx.problem(&format!("[cluster]\nrequest_timeout = {value}\n{DIR}"));
            assert_contains(&problem, &["[cluster]: ", says]);
        }
    }

    #[test]
    fn cluster_and_server_sections() {
        let fx = Fixture::new();
        let text = format!(
            "state_dir = \"state\"\n[cluster]\nkubeconfig = \"~/.kube/config\"\ncontext = \"dev\"\n\
             [server]\nlisten = \"0.0.0.0:8080\"\n{DIR}"
        );
        let config = fx.parse(&text).unwrap();
        assert_eq!(
            config.cluster.kubeconfig,
            Some(fx.dir.path().join("home/.kube/config"))
        );
        assert_eq!(config.cluster.context.as_deref(), Some("dev"));
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.state_dir, fx.dir.path().join("state"));
    }

    #[test]
    fn unknown_key_is_a_syntax_error_naming_it() {
        let fx = Fixture::new();
        let err = fx.parse(&format!("{DIR}intervall = \"5m\"\n")).unwrap_err();
        assert!(matches!(err, ConfigFileError::Syntax { .. }), "{err:?}");
        assert_contains(&err.to_string(), &["intervall", "line 4", "interval"]);
        let err = fx.parse("[servr]\nlisten = \"x\"\n").unwrap_err();
        assert_contains(&err.to_string(), &["servr"]);
    }

    #[test]
    fn wrong_type_is_a_syntax_error() {
        let fx = Fixture::new();
        let err = fx.parse(&format!("{DIR}prune = \"yes\"\n")).unwrap_err();
        assert_contains(&err.to_string(), &["prune", "line 4"]);
    }

    /// The CLI's `--timeout "5 minutes"` works, so `interval = "5 minutes"` must too.
    #[test]
    fn interval_in_words_is_accepted() {
        let fx = Fixture::new();
        for (value, secs) in [("5 minutes", 300), ("90s", 90), ("1m30s", 90)] {
            let config = fx.parse(&format!("{GIT}interval = \"{value}\"\n")).unwrap();
            assert_eq!(
                config.sources[0].interval,
                Duration::from_secs(secs),
                "{value}"
            );
        }
    }

    #[test]
    fn limits_are_read_and_bounded() {
        let fx = Fixture::new();
        let config = fx.parse(GIT).unwrap();
        assert_eq!(config.limits, manifest::Limits::default());
        let config = fx
            .parse(&format!(
                "[limits]\nmax_file_mib = 2\nmax_depth = 20\n{GIT}"
            ))
            .unwrap();
        assert_eq!(config.limits.max_file_bytes, 2 << 20);
        assert_eq!(config.limits.max_depth, 20);
        let problems = fx.problems(&format!(
            "[limits]\nmax_file_mib = 0\nmax_depth = 500\n{GIT}"
        ));
        assert!(
            problems.contains(&"[limits]: max_file_mib = 0: use 1 to 1024".to_string()),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"[limits]: max_depth = 500: use 1 to 120".to_string()),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_intervals_name_the_key_and_how_to_write_one() {
        let fx = Fixture::new();
        let cases = [
            (
                "\"5 parsecs\"",
                "interval = \"5 parsecs\": unknown unit \"parsecs\"",
            ),
            ("\"0s\"", "interval = \"0s\": must be more than zero"),
            (
                "\"-5s\"",
                "interval = \"-5s\": negative durations are not allowed",
            ),
            ("\"soon\"", "interval = \"soon\": not a duration"),
            ("\"30\"", "interval = \"30\": \"30\" has no unit"),
            ("30", "interval = 30: not a duration string"),
        ];
        for (value, expected) in cases {
            let problem = fx.problem(&format!("{GIT}interval = {value}\n"));
            assert_contains(&problem, &["source[0] \"shop\": ", expected, "e.g."]);
        }
    }

    #[test]
    fn full_resync_every_is_at_least_one() {
        let fx = Fixture::new();
        for value in ["0", "-1", "4294967296"] {
            let problem = fx.problem(&format!("{GIT}full_resync_every = {value}\n"));
            let expected = format!("full_resync_every = {value}: must be a whole number from 1");
            assert_contains(&problem, &["source[0] \"shop\": ", &expected]);
        }
    }

    #[test]
    fn missing_files_are_reported_with_the_resolved_path() {
        let fx = Fixture::new();
        let problem = fx.problem("[[source]]\nname = \"a\"\ndir = \"nope\"\n");
        let resolved = fx.dir.path().join("nope");
        assert_contains(
            &problem,
            &[
                "source[0] \"a\": dir = \"nope\": no such directory",
                &resolved.display().to_string(),
            ],
        );
        let problem = fx.problem(&format!("[cluster]\nkubeconfig = \"~/missing\"\n{DIR}"));
        assert_contains(
            &problem,
            &["[cluster] kubeconfig = \"~/missing\": no such file"],
        );
        let text = "[[source]]\nname = \"s\"\ngit = \"ssh://git@host/repo.git\"\n\
                    ssh_key_file = \"nokey\"\nknown_hosts_file = \"/no/known_hosts\"\n";
        let problems = fx.problems(text);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_contains(&problems[0], &["ssh_key_file = \"nokey\": no such file"]);
        assert_contains(
            &problems[1],
            &["known_hosts_file = \"/no/known_hosts\": no such file"],
        );
    }

    #[test]
    fn a_file_where_a_directory_belongs() {
        let fx = Fixture::new();
        let problem = fx.problem("[[source]]\nname = \"a\"\ndir = \"id_ed25519\"\n");
        assert_contains(&problem, &["not a directory"]);
    }

    #[test]
    fn dir_and_git_conflicts() {
        let fx = Fixture::new();
        let both = fx.problem(&format!("{DIR}git = \"https://h/r.git\"\n"));
        assert_contains(&both, &["source[0] \"app\": both dir and git are set"]);
        let neither = fx.problem("[[source]]\nname = \"x\"\n");
        assert_contains(&neither, &["source[0] \"x\": neither dir nor git is set"]);
    }

    #[test]
    fn more_than_one_of_branch_tag_commit() {
        let fx = Fixture::new();
        let problem = fx.problem(&format!("{GIT}branch = \"dev\"\ntag = \"v1\"\n"));
        assert_contains(
            &problem,
            &["branch and tag are both set; keep one of branch, tag, commit"],
        );
    }

    #[test]
    fn git_only_keys_on_a_dir_source() {
        let fx = Fixture::new();
        let problems = fx.problems(&format!("{DIR}branch = \"main\"\npath = \"x\"\n"));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_contains(
            &problems[0],
            &["branch = \"main\": only Git sources have branch"],
        );
        assert_contains(&problems[1], &["path = \"x\": only Git sources have path"]);
    }

    #[test]
    fn duplicate_and_malformed_names() {
        let fx = Fixture::new();
        let dup = fx.problem(&format!("{DIR}{DIR}"));
        assert_contains(
            &dup,
            &["source[1] \"app\": name = \"app\": already used by source[0]"],
        );
        for bad in ["Shop", "shop_1", "-shop", "shop-", "a/b", ""] {
            let problem = fx.problem(&format!(
                "[[source]]\nname = {bad:?}\ndir = \"manifests\"\n"
            ));
            assert_contains(&problem, &["not a DNS label", "/hooks/git/<name>"]);
        }
        let missing = fx.problem("[[source]]\ndir = \"manifests\"\n");
        assert_contains(&missing, &["source[0]: name is missing"]);
    }

    #[test]
    fn env_vars_must_be_set_and_not_empty() {
        let fx = Fixture::new();
        let problems = fx.problems(&format!(
            "{GIT}username_env = \"NOPE_USER\"\npassword_env = \"EMPTY\"\nwebhook_secret_env = \"HOOK\"\n"
        ));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_contains(
            &problems[0],
            &["username_env = \"NOPE_USER\": the environment variable NOPE_USER is not set"],
        );
        assert_contains(
            &problems[1],
            &["password_env = \"EMPTY\": the environment variable EMPTY is empty"],
        );
    }

    #[test]
    fn auth_keys_must_fit_the_url() {
        let fx = Fixture::new();
        let ssh_on_https = fx.problem(&format!("{GIT}ssh_key_file = \"id_ed25519\"\n"));
        assert_contains(
            &ssh_on_https,
            &["ssh_key_file = \"id_ed25519\": only for ssh://"],
        );
        let pass_on_ssh = fx.problems(
            "[[source]]\nname = \"s\"\ngit = \"git@host:r.git\"\nssh_key_file = \"id_ed25519\"\n\
             known_hosts_file = \"known_hosts\"\npassword_env = \"GIT_TOKEN\"\n",
        );
        assert_eq!(pass_on_ssh.len(), 1, "{pass_on_ssh:#?}");
        assert_contains(
            &pass_on_ssh[0],
            &["password_env = \"GIT_TOKEN\": only for https URLs"],
        );
        let no_key = fx.problems("[[source]]\nname = \"s\"\ngit = \"ssh://git@host/r.git\"\n");
        assert_contains(&no_key[0], &["ssh_key_file is missing"]);
        assert_contains(&no_key[1], &["known_hosts_file is missing", "ssh-keyscan"]);
        let user_only = fx.problem(&format!("{GIT}username_env = \"GIT_TOKEN\"\n"));
        assert_contains(&user_only, &["username_env is set without password_env"]);
    }

    #[test]
    fn bad_git_settings() {
        let fx = Fixture::new();
        let url = fx.problem("[[source]]\nname = \"s\"\ngit = \"ftp://user:pw@host/r\"\n");
        assert_contains(&url, &["not a supported Git URL", "ftp://user:***@host/r"]);
        assert!(!url.contains("pw"), "{url}");
        let commit = fx.problem(&format!("{GIT}commit = \"abc123\"\n"));
        assert_contains(&commit, &["commit = \"abc123\": not a full commit id"]);
        let branch = fx.problem(&format!("{GIT}branch = \"bad..name\"\n"));
        assert_contains(
            &branch,
            &["branch = \"bad..name\": not a valid Git branch name"],
        );
        let path = fx.problem(&format!("{GIT}path = \"../etc\"\n"));
        assert_contains(
            &path,
            &["path = \"../etc\": must be a directory inside the repository"],
        );
        let abs = fx.problem(&format!("{GIT}path = \"/etc\"\n"));
        assert_contains(&abs, &["path = \"/etc\""]);
        let climbs = fx.problem(&format!("{GIT}path = \"apps/../../etc\"\n"));
        assert_contains(
            &climbs,
            &["path = \"apps/../../etc\": must be a directory inside"],
        );
    }

    #[test]
    fn bad_listen_namespace_and_context() {
        let fx = Fixture::new();
        let text = format!(
            "[cluster]\ncontext = \" \"\n[server]\nlisten = \"localhost\"\n{DIR}namespace = \"Prod\"\n"
        );
        let problems = fx.problems(&text);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_contains(&problems[0], &["[cluster] context", "empty"]);
        assert_contains(
            &problems[1],
            &["[server] listen = \"localhost\": not an IP address and port"],
        );
        assert_contains(
            &problems[2],
            &["namespace = \"Prod\": not a valid namespace name"],
        );
    }

    #[test]
    fn no_sources_is_an_error() {
        let fx = Fixture::new();
        assert_contains(&fx.problem(""), &["no [[source]] table"]);
    }

    #[test]
    fn every_problem_is_collected_and_displayed() {
        let fx = Fixture::new();
        let text = "[[source]]\nname = \"a\"\ndir = \"nope\"\ninterval = \"0s\"\n\
                    [[source]]\nname = \"B\"\ngit = \"https://h/r.git\"\ncommit = \"x\"\n";
        let err = fx.parse(text).unwrap_err();
        let shown = err.to_string();
        assert_contains(
            &shown,
            &[
                "4 problems:",
                "interval = \"0s\"",
                "dir = \"nope\"",
                "name = \"B\"",
                "commit = \"x\"",
            ],
        );
    }

    #[test]
    fn load_reports_a_missing_file() {
        let err = Config::load(Path::new("/nonexistent/config.toml")).unwrap_err();
        assert_contains(
            &err.to_string(),
            &["cannot read config file /nonexistent/config.toml"],
        );
    }

    #[test]
    fn debug_output_hides_url_passwords() {
        let fx = Fixture::new();
        let text = "[[source]]\nname = \"s\"\ngit = \"https://me:hunter2@example.com/r.git\"\n";
        let config = fx.parse(text).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("https://me:***@example.com/r.git"),
            "{shown}"
        );
    }

    /// The quickstart runs the repository's own config.toml: it must stay valid.
    #[test]
    fn repository_config_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let source = config.source("examples").expect("source \"examples\"");
        let guestbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/guestbook");
        assert_eq!(source.kind, SourceKind::Dir { path: guestbook });
        assert_eq!(source.namespace, "default");
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn durations_parse() {
        let ok = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("90s", 90_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            (" 2h ", 7_200_000),
            ("5 minutes", 300_000),
            ("5 m", 300_000),
            ("1.5s", 1_500),
            ("1d", 86_400_000),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "-1s",
            "s",
            "10",
            "soon",
            "5 parsecs",
            "99999999999999999999h",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("e.g. \"30s\""), "{err}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        let cases = [
            (
                "https://user:pa55@host/r.git",
                "https://user:***@host/r.git",
            ),
            ("https://tok3n@host/r.git", "https://***@host/r.git"),
            ("ssh://git@host/r.git", "ssh://git@host/r.git"),
            ("https://host/r.git", "https://host/r.git"),
            ("git@host:r.git", "git@host:r.git"),
            ("https://u:p@ss@host/x", "https://u:***@host/x"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn url_transports() {
        assert_eq!(transport("https://h/r"), Some(Transport::Http));
        assert_eq!(transport("http://127.0.0.1:8080/r"), Some(Transport::Http));
        assert_eq!(transport("ssh://git@h:22/r"), Some(Transport::Ssh));
        assert_eq!(transport("git@github.com:org/r.git"), Some(Transport::Ssh));
        assert_eq!(transport("file:///srv/r.git"), Some(Transport::File));
        assert_eq!(transport("/srv/r.git"), Some(Transport::File));
        assert_eq!(transport("git://h/r"), None);
        assert_eq!(transport("r.git"), None);
        assert_eq!(transport("https://"), None);
    }
    #[test]
    fn render_settings_are_read_and_checked() {
        let fx = Fixture::new();
        let text = format!(
            "{GIT}allow_remote_bases = true\nvars_from = [\"configmap/flux/vars\", \"secret/flux/creds\"]\n\
             [source.vars]\nCLUSTER = \"prod\"\nREPLICAS = 3\n\
             [source.helm]\nrelease = \"web\"\nvalues_files = [\"values-prod.yaml\"]\n\
             set = [\"image.tag=6.0\"]\nvalues = {{ replicaCount = 2, ui = {{ color = \"red\" }} }}\n\
             [render]\ntimeout = \"2m\"\n"
        );
        let config = fx.parse(&text).unwrap();
        let render = &config.sources[0].render;
        assert!(render.allow_remote_bases);
        assert_eq!(format!("{:?}", render.vars), "{\"CLUSTER\", \"REPLICAS\"}");
        assert_eq!(render.vars_from[1].to_string(), "secret/flux/creds");
        assert_eq!(render.helm.release.as_deref(), Some("web"));
        assert_eq!(render.helm.values["ui"]["color"], "red");
        assert_eq!(render.helm.set, ["image.tag=6.0"]);
        assert_eq!(config.render.limits.timeout, Duration::from_secs(120));
        assert_eq!(config.render.tools, ToolPaths::default());

        let bad = format!(
            "{DIR}vars_from = [\"pod/ns/x\"]\n[source.vars]\n1X = \"a\"\n\
             [source.helm]\nvalues_files = [\"../x.yaml\"]\nset = [\"novalue\"]\n\
             [render]\nhelm = \"/no/such/helm\"\n"
        );
        let problems = fx.problems(&bad).join("\n");
        for part in [
            "vars.1X: not a variable name",
            "vars_from \"pod/ns/x\"",
            "helm.values_files \"../x.yaml\"",
            "helm.set \"novalue\"",
            "[render] helm = \"/no/such/helm\"",
        ] {
            assert!(problems.contains(part), "{part:?} not in {problems}");
        }
    }

    #[test]
    fn leader_election_is_off_with_client_go_defaults() {
        let fx = Fixture::new();
        let election = fx.parse(DIR).unwrap().leader_election;
        assert_eq!(election, LeaderElectionConfig::default());
        assert!(!election.enabled);
        assert_eq!(election.name, "converge");
        assert_eq!(
            (
                election.timing.lease_duration.as_secs(),
                election.timing.renew_deadline.as_secs(),
                election.timing.retry_period.as_secs()
            ),
            (15, 10, 2)
        );
    }

    #[test]
    fn leader_election_is_read() {
        let fx = Fixture::new();
        let text = format!(
            "{DIR}[leader_election]\nenabled = true\nshard = true\nnamespace = \"ops\"\n\
             name = \"gitops\"\nlease_duration = \"6s\"\nrenew_deadline = \"4s\"\n\
             retry_period = \"500ms\"\n"
        );
        let election = fx.parse(&text).unwrap().leader_election;
        assert!(election.enabled);
        assert_eq!(election.scope, ElectionScope::Source);
        assert_eq!(election.namespace.as_deref(), Some("ops"));
        assert_eq!(election.name, "gitops");
        assert_eq!(election.timing.retry_period, Duration::from_millis(500));
    }

    #[test]
    fn leader_election_timings_must_let_a_leader_stop_first() {
        let fx = Fixture::new();
        let bad = |keys: &str| fx.problem(&format!("{DIR}[leader_election]\n{keys}"));
        assert_contains(
            &bad("lease_duration = \"10s\"\n"),
            &["[leader_election]", "longer than renew_deadline"],
        );
        assert_contains(&bad("retry_period = \"9s\"\n"), &["1.2 × retry_period"]);
        assert_contains(&bad("lease_duration = \"15.5s\"\n"), &["whole seconds"]);
        assert_contains(&bad("retry_period = 2\n"), &["retry_period = 2", "quoted"]);
        assert_contains(&bad("name = \"Con_verge\"\n"), &["name = \"Con_verge\""]);
        let long = "x".repeat(60);
        assert_contains(
            &bad(&format!("shard = true\nname = \"{long}\"\n")),
            &["at most 59 characters"],
        );
    }
}
