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
//! The crate is laid out by what each module owns (see DESIGN.md's module map):
//!
//! - [`manifest`]: YAML/JSON documents → objects with identity and origin.
//! - [`compact`]: objects kept as compact JSON between reconciles, parsed when read.
//! - [`kube`]: our Kubernetes client on reqwest: config, discovery, typed errors.
//! - [`diff`]: normalising objects, masking Secrets, rendering unified diffs.
//! - [`inventory`]: the ApplySet that records which live objects converge owns.
//! - [`plan`]: desired vs live → ordered actions, with the prune guards.
//! - [`ownership`]: proving from `managedFields` that an apply would change nothing,
//!   so that in-sync objects need no dry-run ([`quantity`] compares `500m` and `0.5`).
//! - [`apply`]: the engine that gathers what the plan needs and executes it.
//! - [`health`]: readiness of applied objects (kstatus-style), `apply --wait`, and the
//!   evidence (conditions, Events, container states, logs) that explains failures.
//! - [`report`]: a run as text lines, diffs and summary, or as JSON.
//! - [`reconcile`]: one reconcile of one source, with the state kept between them.
//! - [`scope`]: how much of a source a reconcile must look at (targeted or full).
//! - [`events`]: Kubernetes Events on each source's ApplySet parent.
//! - [`daemon`]: when to reconcile: triggers, backoff, the HTTP server, shutdown.
//! - [`shutdown`]: SIGTERM/SIGINT and the handle that tells tasks to stop.
//! - [`status`]: the drift/sync status of every source, as JSON and as a table.
//! - [`metrics`]: Prometheus metrics with bounded labels.
//! - [`server`]: HTTP `/healthz`, `/readyz`, `/metrics`, `/status`, `/hooks/git/*`.
//!
//! Pure logic (manifest parsing, planning, diffing) does no I/O and is tested
//! in-module; everything that talks to the API server is tested against a real one
//! (`tests/`, started by `hack/controlplane.sh`).

mod compact;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod http;
pub mod kube;
pub mod manifest;
pub mod report;
pub mod source;
