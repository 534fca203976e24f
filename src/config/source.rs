//! `[[source]]`: where a source's manifests come from and how they are converged.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{Adoption, DriftRules, Tenancy};
use crate::health::HealthRules;
use crate::health::dependency::ObjectDependency;
use crate::kube::Impersonation;
use crate::render::RenderSettings;

/// One `[[source]]`: where manifests come from and how to converge them.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique DNS label; becomes the ApplySet name and the webhook path part.
    pub name: String,
    /// A local directory or a Git repository.
    pub kind: SourceLocation,
    /// Git poll interval and, for every source, the resync interval (default 30s).
    pub interval: Duration,
    /// One resync in this many is a full reconcile even when nothing changed: the
    /// safety net under the watches (default 10; 1 makes every resync full).
    pub full_resync_every: u32,
    /// How often the kinds the source owns are re-listed (metadata only) to find
    /// what the watches missed: the safety net under the watch cache (default 6h,
    /// or the top-level `relist_every`).
    pub relist_every: Duration,
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
    /// Objects that must be ready (by their health or their `ready` expression)
    /// before this one reconciles: `depends_on`'s `{ object = … }` entries.
    pub depends_on_objects: Vec<ObjectDependency>,
    /// Its `[[source.health]]` rules, then the global `[[health]]` ones.
    pub health: HealthRules,
}

/// Where a source's manifests live.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceLocation {
    /// A local directory (absolute, checked to exist), watched for changes.
    Dir { path: PathBuf },
    /// A Git repository, polled at the source's interval and on webhook calls.
    Git(GitConfig),
    /// `oci = "oci://…"`: a manifests artifact in an OCI registry, polled at the
    /// source's interval.
    OciArtifact(OciConfig),
    /// `chart = "oci://…"`: a Helm chart in an OCI registry (as `helm push` writes
    /// it), polled at the source's interval.
    OciChart(OciConfig),
    /// A chart published in a Helm (HTTP) repository, polled at the source's
    /// interval and on `POST /hooks/source/<name>`.
    HelmChart(HelmChartConfig),
}

/// An OCI source's settings. Credentials are named by environment variable and read
/// by [`crate::source`], never stored here.
#[derive(Debug, Clone, PartialEq)]
pub struct OciConfig {
    /// `oci://REGISTRY/REPOSITORY` as written (checked to parse, without tag or
    /// digest: those are [`OciConfig::pick`]).
    pub url: String,
    /// Which manifest of the repository to follow.
    pub pick: OciPick,
    /// Plain HTTP beyond loopback (`insecure = true`).
    pub insecure: Insecure,
    /// Environment variable with the registry user name.
    pub username_env: Option<String>,
    /// Environment variable with the registry password or token.
    pub password_env: Option<String>,
}

/// Which manifest an OCI source follows (the texts are checked to parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciPick {
    /// `tag = "latest"`: a moved tag is a new revision.
    Tag(String),
    /// `semver = ">=1.0"` (or a chart's `version`): the highest matching tag.
    Semver(String),
    /// A chart without `version`: the highest stable version among the tags.
    LatestStable,
    /// `digest = "sha256:…"`: one manifest, pinned.
    Digest(String),
}

/// Whether an OCI registry beyond loopback may be reached over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Insecure {
    /// HTTPS unless the registry is on loopback (the default).
    #[default]
    No,
    /// `insecure = true`: plain HTTP wherever the registry is.
    AllowPlainHttp,
}

/// A chart from a Helm repository (`chart` + `helm_repo`). Credentials are named by
/// environment variable and read when the source is built, never stored here.
#[derive(Debug, Clone, PartialEq)]
pub struct HelmChartConfig {
    /// The repository URL (`https://…` or `http://…`), the directory of its
    /// `index.yaml`, without a trailing `/`.
    pub repo: String,
    /// The chart's name as the index lists it.
    pub chart: String,
    /// A semver constraint or an exact version, as written; `None`: the latest
    /// stable version.
    pub version: Option<String>,
    /// How to authenticate to the repository.
    pub auth: HelmAuth,
    /// A PEM file of certificate authorities the repository's certificate is
    /// checked against instead of the system trust store (checked to exist).
    pub ca_file: Option<PathBuf>,
    /// Environment variable with the secret that signs `POST /hooks/source/<name>`.
    pub webhook_secret_env: Option<String>,
}

/// Credentials for an artifact repository, by the environment variables holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelmAuth {
    /// No credentials.
    Anonymous,
    /// HTTP basic auth: `username_env` (default user name "helm" when only the
    /// password is given) and `password_env`.
    Basic {
        username_env: Option<String>,
        password_env: String,
    },
    /// `Authorization: Bearer`: `token_env`.
    Bearer { token_env: String },
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
    /// A full ref name as the remote lists it (`refs/pull/12/head`, `HEAD`): what
    /// `converge diff --ref` may name; config files name branches, tags or commits.
    Ref(String),
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b:?}"),
            GitRef::Tag(t) => write!(f, "tag {t:?}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
            GitRef::Ref(r) => write!(f, "ref {r:?}"),
        }
    }
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
