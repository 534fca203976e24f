//! OCI registries: manifests artifacts (Flux's "Gitless GitOps") and Helm charts
//! pulled by tag, semver constraint or digest; directories pushed as artifacts.
//!
//! A pull checks everything it is given: the manifest's bytes against the digest the
//! registry announced (and against a pinned digest), the layer's size against
//! `[limits] max_artifact_mib` before and while it streams in, the layer's bytes
//! against the manifest's digest, and the archive's entries through the shared
//! unpacker. Any failure leaves nothing in the cache, so the source keeps its last
//! good revision. Blobs and trees are cached by digest, so a restart or a tag that
//! did not move downloads no layer again.
//!
//! - [`reference`](mod@reference): `oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]`, and HTTPS or HTTP.
//! - [`manifest`]: which layer of a manifest holds the content; what push writes.
//! - [`client`]: the distribution API over converge's reqwest, with token auth.

mod client;
mod manifest;
mod reference;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::cache::{ArtifactCache, CacheError};
use super::digest::Digest;
use super::version::VersionConstraint;
use crate::config::{ArtifactLimits, Insecure};
use client::Registry;

pub(crate) use manifest::ArtifactKind;
use manifest::ManifestError;
pub(crate) use reference::{Reference, is_tag};

/// A user name and password (or token) for a registry, read from the environment.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

// Hand-written so that `{:?}` never prints the password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Which manifest of a repository a source follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pick {
    /// A tag; when it moves, the new manifest is a new revision.
    Tag(String),
    /// The highest tag that is a version matching the constraint.
    Semver(VersionConstraint),
    /// One manifest, pinned: a moved tag changes nothing.
    Digest(Digest),
}

/// Why an OCI pull or push failed. Messages name the registry and what to check;
/// never a password or token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OciError {
    #[error(
        "cannot reach OCI registry {registry}: {detail}; check the address, the network \
         and that the registry runs (plain HTTP is used only for loopback registries or \
         with insecure = true)"
    )]
    Unreachable { registry: String, detail: String },
    #[error(
        "OCI registry {registry}: authentication failed: {detail}; check username_env/password_env"
    )]
    AuthFailed { registry: String, detail: String },
    #[error("not found: {url} ({body}); check the repository, tag or digest")]
    NotFound { url: String, body: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("cannot build an HTTP client for {registry}: {detail}")]
    Client { registry: String, detail: String },
    #[error(
        "{url} is larger than {limit_mib} MiB ({limit_bytes} bytes), so it was not downloaded; \
         if the artifact is genuine, raise [limits] max_artifact_mib"
    )]
    TooLarge {
        url: String,
        limit_mib: u64,
        limit_bytes: u64,
    },
    #[error("{what}: {error}")]
    Manifest {
        what: String,
        #[source]
        error: ManifestError,
    },
    #[error(
        "{what}: manifest digest mismatch: expected {expected}, received {actual}; the \
         registry or something in between altered it, so it was not used"
    )]
    ManifestDigest {
        what: String,
        expected: String,
        actual: Digest,
    },
    #[error("{what}: no tag matches version {constraint:?} (tags: {tags})")]
    NoMatchingTag {
        what: String,
        constraint: String,
        tags: String,
    },
    #[error("{what}: the chart archive holds no directory with a Chart.yaml")]
    NoChart { what: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Pack(super::archive::ArchiveError),
    #[error("OCI worker failed: {0}")]
    Worker(String),
}

impl OciError {
    /// Whether trying again soon may succeed: the registry or the network failed
    /// for now. A refusal of the content (digest, size, media type, entries) or of
    /// the credentials repeats until someone changes the artifact or the settings.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            OciError::Unreachable { .. } | OciError::Worker(_) => true,
            OciError::Status { status, .. } => *status == 429 || *status >= 500,
            OciError::Cache(CacheError::Io { .. }) => true,
            _ => false,
        }
    }
}

/// What to pull: a repository, the manifest to follow in it, and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    pub(crate) repository: Reference,
    pub(crate) pick: Pick,
    pub(crate) kind: ArtifactKind,
    pub(crate) insecure: Insecure,
    pub(crate) credentials: Option<Credentials>,
}

/// A pulled revision: its unpacked directory in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pulled {
    /// Manifests: the manifest digest. Charts: `<tag>@<manifest digest>`.
    pub(crate) revision: String,
    /// The unpacked layer (for a chart, its directory holding `Chart.yaml`).
    pub(crate) root: PathBuf,
}

impl Pull {
    /// The reference as people read it in errors: `oci://host/repo:tag`.
    fn what(&self) -> String {
        match &self.pick {
            Pick::Tag(tag) => format!("{}:{tag}", self.repository),
            Pick::Semver(constraint) => format!("{} version \"{constraint}\"", self.repository),
            Pick::Digest(digest) => format!("{}@{digest}", self.repository),
        }
    }

    /// Resolves the pick, checks and caches the manifest's layer, unpacks it.
    #[tracing::instrument(skip_all, fields(reference = %self.repository))]
    pub(crate) async fn run(
        &self,
        cache: &ArtifactCache,
        limits: &ArtifactLimits,
    ) -> Result<Pulled, OciError> {
        let what = self.what();
        let registry = Registry::new(
            &self.repository.registry,
            self.repository.transport(self.insecure),
            self.credentials.clone(),
        )?;
        let repository = self.repository.repository.as_str();
        let (reference, expected) = match &self.pick {
            Pick::Tag(tag) => (tag.clone(), None),
            Pick::Digest(digest) => (digest.to_string(), Some(digest.clone())),
            Pick::Semver(constraint) => {
                let tags = registry.tags(repository).await?;
                let tag = constraint
                    .highest(tags.iter().map(String::as_str))
                    .ok_or_else(|| OciError::NoMatchingTag {
                        what: self.repository.to_string(),
                        constraint: constraint.to_string(),
                        tags: summary(&tags),
                    })?;
                (tag.to_string(), None)
            }
        };
        // A pinned manifest never changes: once cached, no request at all.
        let cached = match &expected {
            Some(digest) => cache.blob(digest)?.map(|raw| (raw, digest.clone())),
            None => None,
        };
        let (raw, digest) = match cached {
            Some(pair) => pair,
            None => {
                let (raw, announced) = registry.manifest(repository, &reference).await?;
                let actual = Digest::of(&raw);
                let promised = expected.as_ref().map(ToString::to_string).or(announced);
                if let Some(promised) = promised {
                    if Digest::parse(&promised).ok().as_ref() != Some(&actual) {
                        return Err(OciError::ManifestDigest {
                            what,
                            expected: promised,
                            actual,
                        });
                    }
                }
                (raw, actual)
            }
        };
        let (layer, layer_digest) =
            manifest::content_layer(&raw, self.kind).map_err(|error| OciError::Manifest {
                what: what.clone(),
                error,
            })?;
        let bytes = match cache.blob(&layer_digest)? {
            Some(bytes) => bytes,
            None => {
                let url = format!("{what} layer {layer_digest}");
                if layer.size > limits.max_download_bytes {
                    return Err(OciError::TooLarge {
                        url,
                        limit_mib: limits.max_download_bytes >> 20,
                        limit_bytes: limits.max_download_bytes,
                    });
                }
                let bytes = registry
                    .blob(repository, &layer_digest, limits.max_download_bytes)
                    .await?;
                cache.store(&bytes, &layer_digest, &format!("{what} layer"))?;
                bytes
            }
        };
        let tree = {
            let (cache, limits, what) = (cache.clone(), *limits, what.clone());
            let layer_digest = layer_digest.clone();
            tokio::task::spawn_blocking(move || cache.tree(&layer_digest, &bytes, &limits, &what))
                .await
                .map_err(|e| OciError::Worker(e.to_string()))??
        };
        // The manifest last: a cached manifest means its layer is there too.
        cache.store(&raw, &digest, &what)?;
        match self.kind {
            ArtifactKind::Manifests => Ok(Pulled {
                revision: digest.to_string(),
                root: tree,
            }),
            ArtifactKind::HelmChart => Ok(Pulled {
                revision: format!("{reference}@{digest}"),
                root: chart_dir(&tree).ok_or(OciError::NoChart { what })?,
            }),
        }
    }
}

/// `helm package` puts the chart in a directory named after it.
fn chart_dir(tree: &Path) -> Option<PathBuf> {
    if tree.join("Chart.yaml").is_file() {
        return Some(tree.to_path_buf());
    }
    let mut dirs = std::fs::read_dir(tree)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("Chart.yaml").is_file());
    let dir = dirs.next()?;
    dirs.next().is_none().then_some(dir)
}

/// At most ten tags, for an error message.
fn summary(tags: &[String]) -> String {
    match tags.len() {
        0 => "none".into(),
        n if n <= 10 => tags.join(", "),
        n => format!("{}, … ({n} in all)", tags[..10].join(", ")),
    }
}

/// What `converge push` publishes besides the directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushOptions {
    /// `org.opencontainers.image.source`: where the content comes from (a repo URL).
    pub(crate) source: Option<String>,
    /// `org.opencontainers.image.revision`: which revision of it (`main@sha1:…`).
    pub(crate) revision: Option<String>,
    /// Plain HTTP to a registry that is not on loopback.
    pub(crate) insecure: Insecure,
    pub(crate) credentials: Option<Credentials>,
}

/// Publishes `dir` as a manifests artifact at `reference` (which must name a tag),
/// packed reproducibly with Flux's media types; returns the manifest's digest.
pub(crate) async fn push_dir(
    reference: &Reference,
    dir: &Path,
    options: &PushOptions,
) -> Result<Digest, OciError> {
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    let layer = {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || super::archive::pack_dir(&dir))
            .await
            .map_err(|e| OciError::Worker(e.to_string()))?
            .map_err(OciError::Pack)?
    };
    let config = b"{}".to_vec();
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    );
    if let Some(source) = &options.source {
        annotations.insert("org.opencontainers.image.source".into(), source.clone());
    }
    if let Some(revision) = &options.revision {
        annotations.insert("org.opencontainers.image.revision".into(), revision.clone());
    }
    let manifest = manifest::flux_artifact(&config, &layer, annotations);
    let raw = serde_json::to_vec(&manifest).map_err(|e| OciError::Protocol {
        url: reference.to_string(),
        detail: e.to_string(),
    })?;
    let registry = Registry::new(
        &reference.registry,
        reference.transport(options.insecure),
        options.credentials.clone(),
    )?;
    let repository = reference.repository.as_str();
    registry.push_blob(repository, &config).await?;
    registry.push_blob(repository, &layer).await?;
    registry
        .push_manifest(repository, &tag, manifest::OCI_MANIFEST, &raw)
        .await?;
    Ok(Digest::of(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_the_directory_holding_chart_yaml() {
        let tree = tempfile::tempdir().unwrap();
        assert_eq!(chart_dir(tree.path()), None);
        std::fs::create_dir(tree.path().join("podinfo")).unwrap();
        std::fs::write(tree.path().join("podinfo/Chart.yaml"), "name: podinfo\n").unwrap();
        assert_eq!(chart_dir(tree.path()), Some(tree.path().join("podinfo")));
    }

    #[test]
    fn tag_lists_are_summarised() {
        let tags: Vec<String> = (0..12).map(|i| format!("1.0.{i}")).collect();
        assert!(summary(&tags).ends_with("(12 in all)"));
        assert_eq!(summary(&[]), "none");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
