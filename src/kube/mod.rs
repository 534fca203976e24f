//! converge's own small Kubernetes client, on reqwest + rustls (ring).
//!
//! It does what converge needs and no more, modelled on kube-rs's `kube-client`:
//!
//! - config: *where and who* — kubeconfig files merged the kubectl way
//!   (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, `--context`) or the in-cluster
//!   service account, resolved once into a [`ClusterConfig`] with errors that name the
//!   file, context, user or cluster.
//! - auth: the credential of each request — token files re-read as they rotate,
//!   exec credential plugins run and cached until their expiry.
//! - tls: the rustls configuration (trusted CAs, client certificate, ALPN for HTTP/2).
//! - request: the one place URLs are built — [`ApiResource`] paths with escaped
//!   segments, encoded queries — and the typed parameters of each verb
//!   ([`PatchParams`], [`PostParams`], [`DeleteParams`], [`ListParams`],
//!   [`WatchParams`], [`LogParams`]). Pure and unit-tested.
//! - client: [`Client`], JSON requests with bounded concurrency, retries
//!   (429/503/504, `Retry-After`), and the verbs converge uses: get, list, server-side
//!   apply, create, delete with a uid precondition, watch, logs.
//! - backoff: the one retry policy (backon's exponential backoff with jitter): the
//!   client's retries and the reflectors' reconnects; the crate's other retry loops
//!   share `kube::backoff::Backoff` rather than define their own.
//! - discovery: [`Discovery`], (group, version, kind) → [`ApiResource`] (plural,
//!   scope, verbs).
//! - [`watch`]: reflectors — list, then watch with bookmarks, resume from the last
//!   resourceVersion, relist on 410 Gone — keeping a [`watch::Store`] of live objects.
//! - [`relist`]: the safety net under the watches — a periodic metadata LIST of a
//!   watched kind compared with the store, repairing what a watch missed.
//! - error: [`Error`], typed from the API's `Status` (`is_not_found`,
//!   `is_conflict`, `is_gone`, `is_invalid`).
//!
//! Typical use:
//!
//! ```no_run
//! # async fn demo() -> Result<(), converge::kube::Error> {
//! use converge::kube::{Client, ClusterConfig, Discovery, PatchParams};
//! let client = Client::new(ClusterConfig::load(None, None)?)?;
//! let discovery = Discovery::new(&client).await?;
//! let cm = discovery.resolve("", "v1", "ConfigMap")?;
//! let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
//!     "metadata": {"name": "x", "namespace": "default"}, "data": {"k": "v"}});
//! let params = PatchParams::apply("converge").force();
//! client.apply(&cm.path(Some("default"), Some("x")), &body, &params).await?;
//! # Ok(()) }
//! ```
//!
//! Nothing here knows about sources, manifests or plans. No token, key or secret is
//! ever written to an error message or a log line.

mod auth;
pub(crate) mod backoff;
mod client;
mod config;
mod discovery;
mod error;
mod group_version;
mod identity;
mod meta;
mod names;
pub(crate) mod relist;
mod request;
mod tls;
pub(crate) mod watch;

pub use auth::ExecError;
pub use client::{
    APPLY_PATCH, Client, ClientOptions, DEFAULT_REQUEST_TIMEOUT, Impersonation, ObjectList,
    RequestObserver, WatchEvent, WatchStream,
};
pub use config::{Auth, ClusterConfig, ClusterConfigError, ExecConfig, LoadEnv};
pub use discovery::Discovery;
pub use error::{Error, Status, StatusCause, StatusDetails, UnservedVersion};
pub use group_version::{GroupVersion, InvalidApiVersion};
pub use identity::{GroupKind, ObjectRef};
pub use meta::Meta;
pub use names::is_dns_label;
pub use request::{
    ApiResource, DeleteParams, ListParams, LogParams, PatchParams, PostParams, Preconditions,
    PropagationPolicy, WatchParams,
};
/// The HTTP method type of [`Client::request_json`].
pub use reqwest::Method;
