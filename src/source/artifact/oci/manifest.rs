//! OCI image manifests as converge reads and writes them (pure): which layer of a
//! manifest holds the content for a kind of artifact, and the manifest
//! `converge push` writes (Flux's media types, so `flux` and converge read each
//! other's artifacts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::digest::Digest;

/// The manifest media type converge asks for and writes.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's schema 2 manifest, which `crane` writes for Docker-typed images.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// An index of manifests (a multi-platform image): not an artifact converge reads.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Flux's artifact config and layer (`flux push artifact`).
pub(crate) const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
pub(crate) const FLUX_LAYER: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";
/// A plain image layer: tar+gzip (OCI's and Docker's names).
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Helm's chart layout (`helm push`).
const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The `Accept` header of a manifest request: every manifest converge can read, and
/// the index types so that a multi-platform image gets a clear error, not a 404.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest is expected to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArtifactKind {
    /// A directory of manifests: Flux's layer or a plain tar(+gzip) layer.
    Manifests,
    /// A Helm chart as `helm push` writes it.
    HelmChart,
}

/// A content descriptor: what a manifest says about one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker schema 2: the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) artifact_type: Option<String>,
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// Why a manifest does not hold what the source expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("the manifest is not valid JSON of an OCI image manifest: {0}")]
    Invalid(String),
    #[error(
        "the reference names an index of manifests ({0}), e.g. a multi-platform image; \
         name an artifact's own manifest (its digest) instead"
    )]
    Index(String),
    #[error("unknown manifest media type {0:?}; expected {OCI_MANIFEST}")]
    UnknownManifestType(String),
    #[error(
        "no layer of a media type converge reads (layers: {found}); a manifests artifact has \
         one layer of {FLUX_LAYER} (flux push artifact, converge push) or {OCI_LAYER}"
    )]
    NoManifestsLayer { found: String },
    #[error(
        "not a Helm chart: expected config {HELM_CONFIG} and one layer of {HELM_LAYER} (as \
         helm push writes them), found config {config} and layers {found}"
    )]
    NotAChart { config: String, found: String },
    #[error("{count} layers of a content media type; an artifact holds one")]
    SeveralLayers { count: usize },
    #[error("layer digest {0:?} is not a sha256 digest")]
    LayerDigest(String),
}

/// The layer holding the content of an artifact of `kind`, and its digest.
pub(crate) fn content_layer(
    raw: &[u8],
    kind: ArtifactKind,
) -> Result<(Descriptor, Digest), ManifestError> {
    let manifest = parse(raw)?;
    let listed = || {
        let types: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        match types.is_empty() {
            true => "none".to_string(),
            false => types.join(", "),
        }
    };
    let wanted: &[&str] = match kind {
        ArtifactKind::Manifests => &[FLUX_LAYER, OCI_LAYER, DOCKER_LAYER],
        ArtifactKind::HelmChart => &[HELM_LAYER],
    };
    let layers: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| wanted.contains(&l.media_type.as_str()))
        .collect();
    let chart_config = manifest.config.media_type == HELM_CONFIG;
    let layer = match (kind, layers.as_slice()) {
        (ArtifactKind::HelmChart, [layer]) if chart_config => *layer,
        (ArtifactKind::HelmChart, _) => {
            return Err(ManifestError::NotAChart {
                config: manifest.config.media_type.clone(),
                found: listed(),
            });
        }
        (ArtifactKind::Manifests, [layer]) => *layer,
        (ArtifactKind::Manifests, []) => {
            return Err(ManifestError::NoManifestsLayer { found: listed() });
        }
        (ArtifactKind::Manifests, several) => {
            return Err(ManifestError::SeveralLayers {
                count: several.len(),
            });
        }
    };
    let digest = Digest::parse(&layer.digest)
        .map_err(|_| ManifestError::LayerDigest(layer.digest.clone()))?;
    Ok((layer.clone(), digest))
}

fn parse(raw: &[u8]) -> Result<Manifest, ManifestError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(raw).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    match probe.media_type.as_deref() {
        Some(t @ (OCI_INDEX | DOCKER_LIST)) => return Err(ManifestError::Index(t.into())),
        None if probe.manifests.is_some() => return Err(ManifestError::Index(OCI_INDEX.into())),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) | None => {}
        Some(other) => return Err(ManifestError::UnknownManifestType(other.into())),
    }
    serde_json::from_slice(raw).map_err(|e| ManifestError::Invalid(e.to_string()))
}

/// The manifest `converge push` writes: Flux's config and layer types, the
/// annotations Flux writes (`created`, and `source`/`revision` when given).
pub(crate) fn flux_artifact(
    config: &[u8],
    layer: &[u8],
    annotations: BTreeMap<String, String>,
) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor {
            media_type: FLUX_CONFIG.into(),
            digest: Digest::of(config).to_string(),
            size: config.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: vec![Descriptor {
            media_type: FLUX_LAYER.into(),
            digest: Digest::of(layer).to_string(),
            size: layer.len() as u64,
            annotations: BTreeMap::new(),
        }],
        annotations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let hex = "b".repeat(64);
        let layers: Vec<_> = layers
            .iter()
            .map(|t| serde_json::json!({"mediaType": t, "digest": format!("sha256:{hex}"), "size": 3}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": format!("sha256:{hex}"), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn picks_flux_and_plain_layers_for_manifests() {
        for layer in [FLUX_LAYER, OCI_LAYER, DOCKER_LAYER] {
            let raw = manifest(FLUX_CONFIG, &[layer]);
            let (found, digest) = content_layer(&raw, ArtifactKind::Manifests).unwrap();
            assert_eq!(found.media_type, layer);
            assert_eq!(digest.hex(), "b".repeat(64));
        }
    }

    #[test]
    fn an_unknown_layer_type_is_named() {
        let raw = manifest(FLUX_CONFIG, &["application/x-zip"]);
        let error = content_layer(&raw, ArtifactKind::Manifests).unwrap_err();
        assert!(error.to_string().contains("application/x-zip"), "{error}");
        let raw = manifest(FLUX_CONFIG, &[FLUX_LAYER, OCI_LAYER]);
        assert_eq!(
            content_layer(&raw, ArtifactKind::Manifests).unwrap_err(),
            ManifestError::SeveralLayers { count: 2 }
        );
    }

    #[test]
    fn charts_need_helms_config_and_layer() {
        let raw = manifest(HELM_CONFIG, &[HELM_LAYER]);
        content_layer(&raw, ArtifactKind::HelmChart).unwrap();
        let raw = manifest(FLUX_CONFIG, &[FLUX_LAYER]);
        let error = content_layer(&raw, ArtifactKind::HelmChart).unwrap_err();
        assert!(error.to_string().starts_with("not a Helm chart"), "{error}");
    }

    #[test]
    fn an_index_is_refused_by_name() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(
            content_layer(raw, ArtifactKind::Manifests),
            Err(ManifestError::Index(_))
        ));
    }

    #[test]
    fn pushed_manifests_read_back() {
        let raw = serde_json::to_vec(&flux_artifact(b"{}", b"layer", BTreeMap::new())).unwrap();
        let (layer, digest) = content_layer(&raw, ArtifactKind::Manifests).unwrap();
        assert_eq!(layer.media_type, FLUX_LAYER);
        assert_eq!(digest, Digest::of(b"layer"));
    }
}
