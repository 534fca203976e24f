//! The daemon's HTTP endpoints, and the client side of `converge status`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves requests (liveness) |
//! | `GET /readyz` | 200 once every source finished a reconcile, else 503 naming the rest |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /status` | the [`StatusReport`] as JSON |
//! | `POST /hooks/git/{source}` | queue a fetch of a Git source (GitHub-style signed webhook) |
//!
//! No business logic here: handlers read the [`StatusBoard`] and [`Metrics`] the
//! daemon writes, and a webhook only nudges the daemon through a channel.

use crate::daemon::metrics::Metrics;
use crate::daemon::status::{StatusBoard, StatusReport};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rustls_platform_verifier::BuilderVerifierExt;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

/// Webhook payloads are a few KiB; the limit stops a client from making us buffer
/// an arbitrary body before its signature is even checked.
const BODY_LIMIT: usize = 1024 * 1024;

/// The content type of what [`Metrics::encode`] writes (it ends in `# EOF`).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The header GitHub (and Gitea, Forgejo) sign the raw body into.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// What the handlers share: the daemon's status and metrics, and one webhook per
/// Git source, keyed by source name.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub status: StatusBoard,
    pub metrics: Metrics,
    pub hooks: Arc<HashMap<String, Webhook>>,
}

/// The webhook of one Git source: an optional shared secret and the channel on
/// which the daemon waits for "fetch now".
#[derive(Clone)]
pub struct Webhook {
    /// When set, requests must carry a valid `X-Hub-Signature-256`.
    pub secret: Option<Vec<u8>>,
    /// A bounded channel (capacity 1 is enough): one queued fetch covers any number
    /// of pushes that arrive before it runs.
    pub trigger: tokio::sync::mpsc::Sender<()>,
}

impl fmt::Debug for Webhook {
    /// Never prints the secret, so a `{:?}` in a log line cannot leak it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes, then stops accepting
/// and lets in-flight requests finish, so a rolling restart drops no scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics, /status, /hooks");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// All routes, with the body limit and a tracing span per request. Public so tests
/// can drive it without a socket.
pub(crate) fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/hooks/git/{source}", post(git_hook))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// One span per request with method, path and status. Only the path is recorded:
/// bodies and signature headers stay out of logs.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    let elapsed_ms = started.elapsed().as_millis();
    span.in_scope(|| tracing::debug!(elapsed_ms, "request served"));
    response
}

/// Liveness: answering at all is the signal.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: a Service should send traffic (and a rollout proceed) only once the
/// daemon has an answer for every source.
async fn readyz(State(state): State<ServerState>) -> Response {
    let pending = state.status.pending();
    if pending.is_empty() {
        return "ready".into_response();
    }
    let body = format!("not ready: waiting for {}", pending.join(", "));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))];
    (content_type, state.metrics.encode()).into_response()
}

async fn status(State(state): State<ServerState>) -> axum::Json<StatusReport> {
    axum::Json(state.status.report())
}

/// A push notification: check who sent it, then queue a fetch. The fetch itself
/// runs in the daemon, so the sender gets its answer at once.
async fn git_hook(
    State(state): State<ServerState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(hook) = state.hooks.get(&source) else {
        return (StatusCode::NOT_FOUND, "no such git source");
    };
    if let Some(secret) = &hook.secret {
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if !crate::source::verify_github_signature(secret, &body, signature) {
            tracing::warn!(%source, "webhook rejected: missing or bad X-Hub-Signature-256");
            return (
                StatusCode::UNAUTHORIZED,
                "bad or missing X-Hub-Signature-256",
            );
        }
    }
    match hook.trigger.try_send(()) {
        // A full channel means a fetch is already queued; it will see this push too.
        Ok(()) | Err(TrySendError::Full(())) => {
            tracing::info!(%source, "webhook: fetch queued");
            (StatusCode::ACCEPTED, "fetch queued")
        }
        Err(TrySendError::Closed(())) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

/// Why `converge status` could not show the daemon's status.
#[derive(Debug, thiserror::Error)]
pub enum StatusFetchError {
    #[error("cannot reach {url}: is `converge run` listening on {addr}?")]
    Unreachable {
        addr: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url} sent a status converge cannot read (a different converge version?)")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set up an HTTP client: {0}")]
    Client(String),
}

/// A daemon that is up answers in milliseconds; waiting longer only delays the
/// "is it running?" hint.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of `converge status`: `GET http://<addr>/status`. `addr` is the
/// daemon's listen address (`127.0.0.1:8080`) or a full base URL.
pub async fn fetch_status(addr: &str) -> Result<StatusReport, StatusFetchError> {
    let url = status_url(addr);
    let client = http_client()?;
    let unreachable = |source| StatusFetchError::Unreachable {
        addr: addr.to_owned(),
        url: url.clone(),
        source,
    };
    let response = client.get(&url).send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(StatusFetchError::Status { url, status, body });
    }
    serde_json::from_slice(&body).map_err(|source| StatusFetchError::Decode { url, source })
}

/// reqwest is built without a default crypto provider (see `kube::tls`), so it gets
/// a ring-based TLS config: plain `http://` needs none, but an `https://` address
/// (the daemon behind a TLS proxy) is checked against the system trust store.
fn http_client() -> Result<reqwest::Client, StatusFetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| StatusFetchError::Client(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| StatusFetchError::Client(e.to_string()))
}

fn status_url(addr: &str) -> String {
    let base = addr.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        format!("{base}/status")
    } else {
        format!("http://{base}/status")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_url_accepts_addresses_and_urls() {
        assert_eq!(status_url("127.0.0.1:8080"), "http://127.0.0.1:8080/status");
        assert_eq!(
            status_url("http://converge:80/"),
            "http://converge:80/status"
        );
    }

    #[test]
    fn hook_debug_hides_the_secret() {
        let (trigger, _rx) = tokio::sync::mpsc::channel(1);
        let hook = Webhook {
            secret: Some(b"hunter2".to_vec()),
            trigger,
        };
        let shown = format!("{hook:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("104"), "secret bytes leaked: {shown}");
    }
}
