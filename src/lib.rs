//! converge: a GitOps reconciliation daemon for Kubernetes.
//!
//! One reconcile is one pass through this pipeline for one source at one revision:
//!
//! ```text
//!  Source ──► Snapshot ──► Manifests ──► Plan ──► Apply ──► Report
//!                                          ▲
//!                       Live objects ──────┘
//! ```
//!
//! The crate is laid out by what each room owns (docs/ARCHITECTURE.md has the
//! full map and the decided Kubernetes semantics):
//!
//! - [`source`]: Git repositories and directories → a revision and a directory.
//! - [`manifest`]: YAML/JSON documents → objects with identity and origin.
//! - [`sops`]: SOPS files (age) decrypted in memory before they are parsed.
//! - [`engine`]: manifests + live objects → a plan → server-side applies and prunes.
//! - [`health`]: whether applied objects work, `apply --wait`, and the evidence.
//! - [`preview`]: a Git revision previewed for a pull request: against the
//!   cluster or another revision, as text, JSON or a Markdown comment.
//! - [`report`]: a run, a diff or the daemon's status, for people and for scripts.
//! - [`daemon`]: one scheduler per source, reconciles, drift, Events, shutdown, and
//!   its face: `/healthz`, `/readyz`, `/metrics`, `/status`, webhooks.
//! - [`kube`]: converge's own small Kubernetes client.
//! - [`config`]: `config.toml`, and the command line's flags laid over it.
//!   `compact` keeps objects small between reconciles.
//!
//! Modules are private by default; each room's `mod.rs` re-exports what the binary
//! (`src/main.rs`, `src/cli/`) and the integration tests use, so that dead code
//! shows.
//!
//! Pure logic (manifest parsing, planning, diffing) does no I/O and is tested
//! in-module; everything that talks to the API server is tested against a real one
//! (`tests/it/`, started by `hack/controlplane.sh`).

// These docs are written for converge's developers, who read them with
// `cargo doc --document-private-items`; links into private modules are meant.
#![allow(rustdoc::private_intra_doc_links)]

mod compact;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod kube;
pub mod manifest;
pub mod preview;
pub mod render;
pub mod report;
pub mod sops;
pub mod source;
