//! Artifacts fetched from where software is published (Helm repositories, OCI
//! registries): content-addressed by their SHA-256 digest, kept in a cache under
//! `state_dir` so a restart does not download again, and unpacked confined to one
//! directory.
//!
//! - [`digest`]: `sha256:<hex>`, parsed and computed.
//! - [`archive`]: tar(+gzip) unpacked safely (no absolute paths, no `..`, no link
//!   leading outside, no decompression bomb) and a directory packed reproducibly.
//! - [`cache`]: blobs by digest, verified on the way in and out, and their unpacked
//!   trees.
//! - [`version`]: Helm's version constraints, choosing among published versions.
//! - [`oci`]: OCI registries: artifacts and charts pulled, directories pushed.
//! - [`helm_repo`]: Helm (HTTP) repositories: index.yaml with conditional requests,
//!   charts downloaded capped and checked against the index's digest.

pub(crate) mod archive;
pub(crate) mod cache;
pub(crate) mod digest;
pub(crate) mod helm_repo;
pub(crate) mod oci;
pub(crate) mod version;

pub(crate) use cache::{ArtifactCache, CacheError};
pub(crate) use digest::Digest;
pub(crate) use version::VersionConstraint;
