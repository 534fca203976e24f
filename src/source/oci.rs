//! OCI sources: a manifests artifact (`oci = "oci://…"`) or a Helm chart
//! (`chart = "oci://…"`) pulled from a registry into the artifact cache under
//! `state_dir`; the snapshot is its unpacked directory, read as a directory source
//! is (or rendered as a vendored chart is). Also the CLI's `converge push` and
//! `converge apply/diff oci://…`, so they share the daemon's pull code.
//!
//! A registry has no notifications converge can rely on, so the daemon's periodic
//! tick (`interval`) is the poll: one manifest request per tick, and the layer only
//! when the manifest's digest is new.

use std::path::Path;

use super::artifact::oci::{self, ArtifactKind, Credentials, OciError, Pick, Pull, Reference};
use super::artifact::{ArtifactCache, Digest, VersionConstraint};
use super::{Snapshot, SourceError};
use crate::config::{ArtifactLimits, EnvLookup, Insecure, OciConfig, OciPick};

/// Why an OCI pull or push failed: the registry, the reference and what to check
/// (never a credential).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OciFailure(OciError);

impl OciFailure {
    /// The registry or the network failed for now; the others repeat.
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }
}

impl From<OciError> for SourceError {
    fn from(error: OciError) -> Self {
        SourceError::Oci(OciFailure(error))
    }
}

/// What `converge push` publishes besides the directory: Flux's annotations.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// `org.opencontainers.image.source`: where the content comes from (a repo URL).
    pub source: Option<String>,
    /// `org.opencontainers.image.revision`: which revision of it (`main@sha1:…`).
    pub revision: Option<String>,
    /// Plain HTTP to a registry that is not on loopback.
    pub insecure: Insecure,
}

/// One OCI source, ready to pull.
#[derive(Debug, Clone)]
pub(crate) struct OciSource {
    pull: Pull,
    cache: ArtifactCache,
    limits: ArtifactLimits,
}

impl OciSource {
    /// The source `config` describes (texts were checked by `config`), reading its
    /// credentials through `env`; blobs are cached under `state_dir`.
    pub(crate) fn new(
        config: &OciConfig,
        kind: ArtifactKind,
        state_dir: &Path,
        limits: ArtifactLimits,
        env: EnvLookup,
    ) -> Result<OciSource, SourceError> {
        let invalid = |detail: String| SourceError::InvalidReference {
            reference: config.url.clone(),
            detail,
        };
        let repository = Reference::parse(&config.url).map_err(|e| invalid(e.to_string()))?;
        let pick = match &config.pick {
            OciPick::Tag(tag) => Pick::Tag(tag.clone()),
            OciPick::Digest(digest) => {
                Pick::Digest(Digest::parse(digest).map_err(|e| invalid(e.to_string()))?)
            }
            OciPick::Semver(text) => {
                Pick::Semver(VersionConstraint::parse(text).map_err(|e| invalid(e.to_string()))?)
            }
            OciPick::LatestStable => Pick::Semver(VersionConstraint::latest_stable()),
        };
        let credentials = credentials(config, env)?;
        Ok(OciSource {
            pull: Pull {
                repository,
                pick,
                kind,
                insecure: config.insecure,
                credentials,
            },
            cache: ArtifactCache::new(state_dir),
            limits,
        })
    }

    /// `oci oci://host/repo tag "latest"` (or `chart …`), for logs and `/status`.
    pub(crate) fn location(&self) -> String {
        let what = match self.pull.kind {
            ArtifactKind::Manifests => "oci",
            ArtifactKind::HelmChart => "chart",
        };
        let pick = match &self.pull.pick {
            Pick::Tag(tag) => format!("tag {tag:?}"),
            Pick::Semver(constraint) => format!("version \"{constraint}\""),
            Pick::Digest(digest) => format!("digest {digest}"),
        };
        format!("{what} {} {pick}", self.pull.repository)
    }

    /// Pulls the revision the source follows now (the layer only when it is new).
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let pulled = self.pull.run(&self.cache, &self.limits).await?;
        Ok(Snapshot {
            revision: pulled.revision,
            base: pulled.root.clone(),
            root: pulled.root,
        })
    }
}

fn credentials(config: &OciConfig, env: EnvLookup) -> Result<Option<Credentials>, SourceError> {
    let read = |key: &'static str, var: &Option<String>| -> Result<Option<String>, SourceError> {
        match var {
            None => Ok(None),
            Some(var) => env(var).map(Some).ok_or_else(|| SourceError::MissingEnv {
                key,
                var: var.clone(),
            }),
        }
    };
    let username = read("username_env", &config.username_env)?;
    let password = read("password_env", &config.password_env)?;
    Ok(password.map(|password| Credentials {
        username: username.unwrap_or_else(|| "oauth2".into()),
        password,
    }))
}

/// A manifests artifact named on the command line (`converge apply oci://…:TAG`,
/// `@sha256:…`), pulled into the cache under `state_dir`.
pub async fn fetch_reference(
    text: &str,
    state_dir: &Path,
    limits: &ArtifactLimits,
    insecure: Insecure,
) -> Result<Snapshot, SourceError> {
    let reference = Reference::parse(text).map_err(|e| SourceError::InvalidReference {
        reference: text.into(),
        detail: e.to_string(),
    })?;
    let pick = match (&reference.digest, &reference.tag) {
        (Some(digest), _) => Pick::Digest(digest.clone()),
        (None, Some(tag)) => Pick::Tag(tag.clone()),
        (None, None) => Pick::Tag("latest".into()),
    };
    let pull = Pull {
        repository: reference.repository_only(),
        pick,
        kind: ArtifactKind::Manifests,
        insecure,
        credentials: None,
    };
    let pulled = pull.run(&ArtifactCache::new(state_dir), limits).await?;
    Ok(Snapshot {
        revision: pulled.revision,
        base: pulled.root.clone(),
        root: pulled.root,
    })
}

/// The last part of a reference's repository (`app` of `oci://host/team/app:1`):
/// a default ApplySet name for `converge apply oci://…`.
pub fn repository_name(text: &str) -> Option<String> {
    let reference = Reference::parse(text).ok()?;
    reference.repository.rsplit('/').next().map(str::to_string)
}

/// `converge push oci://REGISTRY/REPOSITORY:TAG --path DIR`: publishes `dir` as a
/// manifests artifact (Flux's media types), returns the manifest digest
/// (`sha256:…`).
pub async fn push(text: &str, dir: &Path, options: &PushOptions) -> Result<String, SourceError> {
    let reference = Reference::parse(text).map_err(|e| SourceError::InvalidReference {
        reference: text.into(),
        detail: e.to_string(),
    })?;
    if reference.digest.is_some() {
        return Err(SourceError::InvalidReference {
            reference: text.into(),
            detail: "a push names a tag (:TAG), not a digest".into(),
        });
    }
    let options = oci::PushOptions {
        source: options.source.clone(),
        revision: options.revision.clone(),
        insecure: options.insecure,
        credentials: None,
    };
    let digest = oci::push_dir(&reference, dir, &options).await?;
    Ok(digest.to_string())
}
