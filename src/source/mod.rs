//! Sources: where manifests come from, at which revision, and when that changes.
//!
//! A [`Source`] is a local directory ([`dir`]) or a Git repository ([`git`]). The
//! daemon asks it for a [`Snapshot`] (a revision and a directory to load manifests
//! from) and subscribes to changes with [`Source::watch`]. Sources never parse YAML:
//! that is [`crate::manifest`]'s job.

pub(crate) mod artifact;
mod chart;
pub(crate) mod dir;
pub(crate) mod git;
pub(crate) mod known_hosts;
pub mod oci;
mod webhook;

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::config::{
    ArtifactLimits, EnvLookup, HelmChartConfig, SourceConfig, SourceLocation, process_env,
};
use crate::manifest::{LinkError, WalkError};

pub use webhook::{sign_github_signature, verify_github_signature, verify_token};

/// One revision of a source, ready to be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// For Git the commit id; for a directory `dir:` and 12 hex digits of a content
    /// hash, so an unchanged directory keeps its revision.
    pub revision: String,
    /// The directory to load manifests from: the Git checkout's `path` subdirectory
    /// or the source directory. For Git it stays valid until the next `fetch`.
    pub root: PathBuf,
    /// What a render of `root` may read: the whole checkout (so an overlay may reach
    /// `../base` in its repository) or the source directory.
    pub base: PathBuf,
}

/// A revision as people read it in logs and Events: Git ids are long, so the first
/// 12 characters (a directory's `dir:` revision is short already).
pub(crate) fn short_revision(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// Why a source could not produce a snapshot or be watched. Messages never contain a
/// password or token, and say what to check.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading the source directory (or the Git state directory) failed.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// An environment variable named by the config is missing (it was set at start-up).
    #[error("environment variable {var} (from {key}) is not set; export it and restart")]
    MissingEnv { key: &'static str, var: String },
    /// The remote could not be reached: DNS, connection refused, TLS, HTTP errors.
    #[error("cannot reach Git remote {url}: {detail}; check the URL, the network and the server")]
    Unreachable { url: String, detail: String },
    /// The remote refused our credentials, or wanted some and none are configured.
    #[error("authentication to {url} failed: {detail}")]
    AuthFailed { url: String, detail: String },
    /// The SSH server's host key is not in known_hosts.
    #[error(
        "SSH host {host} is not in {} (it offered {fingerprint}); verify that fingerprint with \
         the server's owner, then add the key: `ssh-keyscan -H {host_arg} >> {}`",
        known_hosts.display(), known_hosts.display()
    )]
    HostKeyUnknown {
        host: String,
        host_arg: String,
        known_hosts: PathBuf,
        fingerprint: String,
    },
    /// The SSH server's host key differs from the one in known_hosts.
    #[error(
        "SSH host key for {host} does NOT match {}: the server offered {fingerprint}. Someone \
         may be intercepting the connection; if the key really changed, replace the entry for \
         {host} in known_hosts",
        known_hosts.display()
    )]
    HostKeyMismatch {
        host: String,
        known_hosts: PathBuf,
        fingerprint: String,
    },
    /// The branch, tag or commit does not exist on the remote.
    #[error("{reference} not found in {url}; check the source's branch/tag/commit{hint}")]
    RefNotFound {
        url: String,
        reference: String,
        hint: String,
    },
    /// The configured `path` is not a directory at this revision.
    #[error("path {path:?} is not a directory at revision {revision}; check the source's path")]
    PathNotFound { path: PathBuf, revision: String },
    /// A symlink leads outside the source (or its `path` does), or never ends.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// An OCI reference that does not parse (from the command line; the config's
    /// are checked when it is read).
    #[error("{reference:?}: {detail}")]
    InvalidReference { reference: String, detail: String },
    /// Pulling from or pushing to an OCI registry failed.
    #[error(transparent)]
    Oci(oci::OciFailure),
    /// Any other libgit2 failure (corrupt state directory, disk full, …).
    #[error("git error for {url}: {detail}")]
    Git { url: String, detail: String },
    /// The file watcher could not be started (e.g. inotify limits reached).
    #[error("cannot watch {}: {detail}; raise fs.inotify.max_user_watches if it is the limit", path.display())]
    Watch { path: PathBuf, detail: String },
    /// The blocking worker failed (a bug, or shutdown).
    #[error("source worker failed: {0}")]
    Worker(String),
    /// A chart or artifact could not be fetched, verified or unpacked (the message
    /// names the repository, chart and version, and what to do).
    #[error("{message}")]
    Artifact { message: String, transient: bool },
}

impl SourceError {
    /// Whether fetching again soon may well succeed: the remote or the disk failed
    /// for now. The others (credentials, host keys, a missing ref or path, a
    /// missing variable) repeat until someone changes the source or its settings.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Io { .. }
            | SourceError::Unreachable { .. }
            | SourceError::Git { .. }
            | SourceError::Worker(_) => true,
            SourceError::Oci(error) => error.is_transient(),
            SourceError::Artifact { transient, .. } => *transient,
            SourceError::MissingEnv { .. }
            | SourceError::AuthFailed { .. }
            | SourceError::HostKeyUnknown { .. }
            | SourceError::HostKeyMismatch { .. }
            | SourceError::RefNotFound { .. }
            | SourceError::PathNotFound { .. }
            | SourceError::Link(_)
            | SourceError::InvalidReference { .. }
            | SourceError::Watch { .. } => false,
        }
    }
}

impl From<WalkError> for SourceError {
    fn from(error: WalkError) -> Self {
        match error {
            WalkError::Io { path, source } => SourceError::Io {
                path,
                error: source,
            },
            WalkError::Link(link) => SourceError::Link(link),
        }
    }
}

/// A source of manifests, as configured.
pub struct Source {
    name: String,
    kind: Kind,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

enum Kind {
    Dir(dir::DirSource),
    Git(git::GitSource),
    // Boxed: a pull's settings are large beside the others' paths.
    Oci(Box<oci::OciSource>),
    Chart(Box<chart::ChartSource>),
}

impl Source {
    /// Builds the source described by `config`, reading credentials from the process
    /// environment. Git checkouts go to `<state_dir>/<name>/`, charts to the artifact
    /// cache under `state_dir`. No network I/O happens yet.
    pub fn new(config: &SourceConfig, state_dir: &Path) -> Result<Source, SourceError> {
        Source::with_env(config, state_dir, &process_env)
    }

    /// Like [`Source::new`], with OCI artifacts capped by `limits` (`[limits]`
    /// `max_artifact_mib`, `max_unpacked_mib`) instead of the defaults.
    pub fn with_limits(
        config: &SourceConfig,
        state_dir: &Path,
        artifact_limits: &ArtifactLimits,
    ) -> Result<Source, SourceError> {
        Source::build(config, state_dir, &process_env, artifact_limits)
    }

    /// Like [`Source::new`] with environment lookups answered by `env` (for tests).
    pub fn with_env(
        config: &SourceConfig,
        state_dir: &Path,
        env: EnvLookup,
    ) -> Result<Source, SourceError> {
        Source::build(config, state_dir, env, &ArtifactLimits::default())
    }

    fn build(
        config: &SourceConfig,
        state_dir: &Path,
        env: EnvLookup,
        artifact_limits: &ArtifactLimits,
    ) -> Result<Source, SourceError> {
        let kind = match &config.kind {
            SourceLocation::Dir { path } => Kind::Dir(dir::DirSource::new(path.clone())),
            SourceLocation::Git(git) => {
                let checkout = state_dir.join(&config.name);
                Kind::Git(git::GitSource::new(git, checkout, env)?)
            }
            SourceLocation::OciArtifact(config) => Kind::Oci(Box::new(oci::OciSource::new(
                config,
                artifact::oci::ArtifactKind::Manifests,
                state_dir,
                *artifact_limits,
                env,
            )?)),
            SourceLocation::OciChart(config) => Kind::Oci(Box::new(oci::OciSource::new(
                config,
                artifact::oci::ArtifactKind::HelmChart,
                state_dir,
                *artifact_limits,
                env,
            )?)),
            SourceLocation::HelmChart(chart) => Kind::Chart(Box::new(chart::ChartSource::new(
                chart,
                state_dir,
                *artifact_limits,
                env,
            )?)),
        };
        Ok(Source {
            name: config.name.clone(),
            kind,
        })
    }

    /// Where the source reads from, for logs and `/status` (no credentials):
    /// `dir /path` or `git https://host/repo.git branch "main"`.
    pub fn location(&self) -> String {
        match &self.kind {
            Kind::Dir(d) => format!("dir {}", d.path().display()),
            Kind::Git(g) => g.location(),
            Kind::Oci(o) => o.location(),
            Kind::Chart(c) => c.location(),
        }
    }

    /// The secret that signs webhook calls for this source, if configured.
    pub fn webhook_secret(&self) -> Option<&[u8]> {
        match &self.kind {
            Kind::Dir(_) | Kind::Oci(_) => None,
            Kind::Git(g) => g.webhook_secret(),
            Kind::Chart(c) => c.webhook_secret(),
        }
    }

    /// Produces the current snapshot: for Git, fetches (cheaply: only the ref list
    /// when nothing changed) and checks out; for a directory, hashes its manifests.
    /// Runs on a blocking thread because libgit2 and file hashing block.
    pub async fn fetch(&self) -> Result<Snapshot, SourceError> {
        match &self.kind {
            Kind::Dir(d) => {
                let d = d.clone();
                blocking(move || d.snapshot()).await
            }
            Kind::Git(g) => {
                let g = g.clone();
                blocking(move || g.sync()).await
            }
            Kind::Oci(o) => o.snapshot().await,
            Kind::Chart(c) => c.snapshot().await,
        }
    }

    /// Sends this source's name on `tx` whenever its directory's content changes
    /// (inotify, ~150 ms debounce); the daemon then calls [`Source::fetch`] and
    /// compares revisions. A Git source has nothing to watch: the daemon's scheduler
    /// polls it every `interval`, so its handle does nothing. Dropping the handle
    /// stops the watch. Start watching before the first fetch so no change falls in
    /// between. Must be called inside a Tokio runtime.
    pub fn watch(&self, tx: mpsc::Sender<String>) -> Result<WatchHandle, SourceError> {
        let watcher = match &self.kind {
            Kind::Dir(d) => Some(dir::watch(d.path(), self.name.clone(), tx)?),
            Kind::Git(_) | Kind::Oci(_) | Kind::Chart(_) => None,
        };
        Ok(WatchHandle { _watcher: watcher })
    }
}

/// Fetches the chart `config` names (credentials from the process environment),
/// caching it under `state_dir`: what `converge diff/apply --helm-repo` run, the
/// daemon's own fetch code, so a preview works before a source exists.
pub async fn fetch_helm_chart(
    config: &HelmChartConfig,
    state_dir: &Path,
    limits: ArtifactLimits,
) -> Result<Snapshot, SourceError> {
    chart::ChartSource::new(config, state_dir, limits, &process_env)?
        .snapshot()
        .await
}

/// Keeps a watch alive; dropping it stops the watch.
pub struct WatchHandle {
    _watcher: Option<dir::DirWatcher>,
}

async fn blocking<T, F>(work: F) -> Result<T, SourceError>
where
    F: FnOnce() -> Result<T, SourceError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SourceError::Worker(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_shortened_for_people() {
        assert_eq!(short_revision("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_revision("dir:abc"), "dir:abc");
    }
}
