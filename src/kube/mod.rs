//! converge's own small Kubernetes client, on reqwest + rustls (ring).
//!
//! It does what converge needs and no more, modelled on kube-rs's `kube-client`:
//!
//! - [`config`]: *where and who* — kubeconfig files merged the kubectl way
//!   (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, `--context`) or the in-cluster
//!   service account, resolved once into a [`ClusterConfig`] with errors that name the
//!   file, context, user or cluster.
//! - [`auth`]: the credential of each request — token files re-read as they rotate,
//!   exec credential plugins run and cached until their expiry.
//! - `tls`: the rustls configuration (trusted CAs, client certificate, ALPN for HTTP/2).
//! - [`client`]: [`Client`], JSON requests with bounded concurrency, retries
//!   (429/503/504, `Retry-After`), and the verbs converge uses: get, list, server-side
//!   apply, create, delete with a uid precondition.
//! - [`discovery`]: [`Discovery`], (group, version, kind) → [`ApiResource`] (plural,
//!   scope, verbs) and the URL path of an object.
//! - [`watch`]: reflectors — list, then watch with bookmarks, resume from the last
//!   resourceVersion, relist on 410 Gone — keeping a [`watch::Store`] of live objects.
//! - [`error`]: [`Error`], typed from the API's `Status` (`is_not_found`,
//!   `is_conflict`, `is_gone`, `is_invalid`).
//!
//! Typical use:
//!
//! ```no_run
//! # async fn demo() -> Result<(), converge::kube::Error> {
//! use converge::kube::{Client, ClusterConfig, Discovery};
//! let client = Client::new(ClusterConfig::load(None, None)?)?;
//! let discovery = Discovery::new(&client).await?;
//! let cm = discovery.resolve("", "v1", "ConfigMap")?;
//! let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
//!     "metadata": {"name": "x", "namespace": "default"}, "data": {"k": "v"}});
//! client.apply(&cm.path(Some("default"), Some("x")), &body, "converge", true, false).await?;
//! # Ok(()) }
//! ```
//!
//! Nothing here knows about sources, manifests or plans. No token, key or secret is
//! ever written to an error message or a log line.

pub mod auth;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
mod tls;
pub mod watch;

pub use auth::ExecError;
pub use client::{
    APPLY_PATCH, Client, ClientOptions, ObjectList, RequestObserver, WatchEvent, WatchStream,
};
pub use config::{Auth, ClusterConfig, ConfigError, ExecConfig, LoadEnv};
pub use discovery::{ApiResource, Discovery, split_api_version};
pub use error::{Error, Status, StatusCause, StatusDetails, UnservedVersion};
/// The HTTP method type of [`Client::request_json`].
pub use reqwest::Method;
