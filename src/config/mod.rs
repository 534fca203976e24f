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
//!
//! - `raw`: the TOML as written; `check`, `check_source`: validation;
//!   `check_notify`: `[[notify]]` tables;
//!   `source`, `leader`, `notify`: the typed settings of sources, leader election
//!   and notification targets;
//!   `duration`: the duration syntax shared with the command line;
//!   `overrides`: command-line flags laid over the file.

mod check;
mod check_notify;
mod check_oci;
mod check_source;
mod duration;
mod leader;
mod notify;
mod overrides;
mod raw;
mod source;
#[cfg(test)]
mod tests;

pub use duration::{InvalidDuration, parse_duration};
pub use leader::{ElectionScope, LeaderElectionConfig, LeaseTiming};
pub use notify::{
    DEFAULT_GITHUB_API, DEFAULT_GITLAB_API, DEFAULT_NOTIFY_TIMEOUT, NotifyConfig, NotifyEvent,
    NotifyKind, Repository, SecretFrom,
};
pub use overrides::{LeaderElection, Overrides};
pub use source::{
    GitConfig, GitRef, HelmAuth, HelmChartConfig, Insecure, OciConfig, OciPick, SourceConfig,
    SourceLocation, Transport, redact_url, transport,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::health::HealthRules;
use crate::manifest;
use crate::render::{ToolLimits, ToolPaths};
use check::Checker;
use raw::RawConfig;

/// The HTTP listen address when `[server] listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9476";
/// `[cluster] request_timeout` when unset: the client's own default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = crate::kube::DEFAULT_REQUEST_TIMEOUT;
/// Git poll and resync interval when a source sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// One resync in this many runs a full reconcile even when nothing changed.
pub const DEFAULT_FULL_RESYNC_EVERY: u32 = 10;
/// How often a source re-LISTs the kinds it owns to check its watch cache, when
/// neither it nor the top-level `relist_every` says.
pub const DEFAULT_RELIST_EVERY: Duration = Duration::from_secs(6 * 3600);
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
    /// `[limits]`: the largest artifact (chart, OCI layer) downloaded and unpacked.
    pub artifact_limits: ArtifactLimits,
    /// `[leader_election]`: which replica writes, when several run.
    pub leader_election: LeaderElectionConfig,
    /// `[[clusters]]`: clusters other than `[cluster]` (the home cluster, where the
    /// Leases stay) that sources may name with `cluster = "NAME"`.
    pub clusters: Vec<ClusterEntry>,
    /// `[[health]]`: the user's health rules for every source.
    pub health: HealthRules,
    /// `[[notify]]`: who is told about syncs, failures, drift, health and waits.
    pub notify: Vec<NotifyConfig>,
}

/// How much an artifact fetched from a registry may weigh: the download itself
/// (checked while it streams in) and what unpacking it writes, which stops a
/// decompression bomb at the byte that crosses the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactLimits {
    pub max_download_bytes: u64,
    pub max_unpacked_bytes: u64,
    /// Entries (files, directories, links) in one archive.
    pub max_entries: u64,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        ArtifactLimits {
            max_download_bytes: 64 << 20,
            max_unpacked_bytes: 256 << 20,
            max_entries: 100_000,
        }
    }
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

/// `[render]`: where kustomize and helm are (default: on `PATH`; `kubectl
/// kustomize` when there is no kustomize) and how long one render may take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderConfig {
    pub tools: ToolPaths,
    pub limits: ToolLimits,
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
    /// A file holding the bearer token that `/status`, `/metrics` and the control
    /// API (`converge suspend`, `resume`, `reconcile`) require (checked to exist).
    /// Without one those are open on loopback; listening beyond it, the control API
    /// answers only clients that connect from loopback.
    pub token_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9476)),
            token_file: None,
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
            health: HealthRules::default(),
            notify_lines: check_notify::notify_lines(text),
            relist_every: DEFAULT_RELIST_EVERY,
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
