//! The daemon's HTTP endpoints (their client side is [`super::client`]).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves requests (liveness) |
//! | `GET /readyz` | 200 once every source finished a reconcile, else 503 naming the rest |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /status` | the [`StatusReport`] as JSON |
//! | `GET /`, `/sources/{name}`, `/api/events`, `/assets/*` | the web status page ([`super::web`]) |
//! | `GET`, `POST /login` | the web page's sign-in with the token (open: it checks the token) |
//! | `POST /hooks/git/{source}` | queue a fetch of a Git source (GitHub-style signed webhook) |
//! | `POST /hooks/source/{source}` | queue a fetch of any source: signed as above when it has a `webhook_secret_env`, else with the server's bearer token when there is one |
//! | `POST /api/v1/sources/{source}/{suspend,resume,reconcile}` | the control API ([`super::control`]) |
//!
//! No business logic here: handlers read the [`StatusBoard`] and [`Metrics`] the
//! daemon writes, and a webhook or a control request only hands the source's task
//! a message through a channel.
//!
//! Who may ask ([`Access`]): on a loopback address without a token, anyone who can
//! connect (they are on this machine). With `[server] token_file`, every route but
//! `/healthz`, `/readyz`, `/login` and the webhooks needs `Authorization: Bearer
//! <token>`; reads also take the web page's sign-in cookie (see `web::login`).
//! A daemon listening beyond loopback without a token answers those routes only to
//! clients on loopback (`kubectl port-forward` reaches the Pod that way) and 401
//! to everyone else: the page, `/status` and `/metrics` tell what runs where, so
//! they are not open to a whole network by default. `/healthz`, `/readyz` and the
//! webhooks (HMAC-signed) are never behind the token: kubelet and Git hosts do not
//! carry it.

use crate::daemon::control::{ApiError, Command, ControlError, SuspendRequest};
use crate::daemon::metrics::Metrics;
use crate::daemon::status::{StatusBoard, StatusReport};
use crate::daemon::web::{self, Closing};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Json, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// Webhook payloads are a few KiB; the limit stops a client from making us buffer
/// an arbitrary body before its signature is even checked.
const BODY_LIMIT: usize = 1024 * 1024;

/// The content type of what [`Metrics::encode`] writes (it ends in `# EOF`).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The header GitHub (and Gitea, Forgejo) sign the raw body into.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// What the handlers share: the daemon's status and metrics, the running sources'
/// channels, and who may ask.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub status: StatusBoard,
    pub metrics: Metrics,
    pub(crate) sources: Registry,
    pub(crate) access: Access,
}

impl ServerState {
    /// A server for sources that only have webhooks (no control API behind them:
    /// it answers 503), open as on loopback. Tests drive the server with it.
    pub fn new(status: StatusBoard, metrics: Metrics, hooks: HashMap<String, Webhook>) -> Self {
        let sources = Registry::default();
        for (name, webhook) in hooks {
            let (control, _) = mpsc::channel(1);
            let urgent = control.clone();
            let handle = SourceHandle {
                webhook,
                control,
                urgent,
            };
            sources.insert(&name, handle);
        }
        ServerState {
            status,
            metrics,
            sources,
            access: Access::Loopback,
        }
    }

    /// The access of a server on `listen`, with `[server] token_file`'s token.
    pub fn with_token(mut self, listen: std::net::SocketAddr, token: Option<String>) -> Self {
        self.access = Access::new(listen, token);
        self
    }
}

/// The channels of every running source, by name; a configuration reload adds
/// and removes entries while the server runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry(Arc<RwLock<HashMap<String, SourceHandle>>>);

/// How the server reaches one source's task.
#[derive(Clone, Debug)]
pub(crate) struct SourceHandle {
    pub webhook: Webhook,
    pub control: mpsc::Sender<Command>,
    /// Suspend requests, which the task also reads while it reconciles.
    pub urgent: mpsc::Sender<Command>,
}

impl SourceHandle {
    /// Hands `command` to the task on its channel; `false` when the task is gone.
    async fn send(&self, command: Command) -> bool {
        let channel = match command {
            Command::Suspend(..) => &self.urgent,
            Command::Resume(_) | Command::Reconcile(_) => &self.control,
        };
        channel.send(command).await.is_ok()
    }
}

impl Registry {
    pub(crate) fn insert(&self, name: &str, handle: SourceHandle) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(name.to_owned(), handle);
    }

    pub(crate) fn remove(&self, name: &str) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(name);
    }

    fn get(&self, name: &str) -> Option<SourceHandle> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(name).cloned()
    }
}

/// Who may use the protected endpoints (see the module's documentation).
#[derive(Clone)]
pub(crate) enum Access {
    /// Listening on loopback without a token: whoever can connect is local.
    Loopback,
    /// `[server] token_file`: the bearer token every protected request carries.
    Token(Arc<str>),
    /// Listening beyond loopback without a token: everything protected answers
    /// only clients connecting from loopback.
    LoopbackClients,
}

impl fmt::Debug for Access {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Loopback => "Loopback",
            Access::Token(_) => "Token(<redacted>)",
            Access::LoopbackClients => "LoopbackClients",
        })
    }
}

impl Access {
    /// Whether a token is configured (the web page's login needs one).
    pub(crate) fn has_token(&self) -> bool {
        self.token().is_some()
    }

    /// `[server] token_file`'s token, if set.
    pub(crate) fn token(&self) -> Option<&str> {
        match self {
            Access::Token(token) => Some(token),
            Access::Loopback | Access::LoopbackClients => None,
        }
    }

    /// The access of a server on `listen` with `token` (`[server] token_file`).
    pub(crate) fn new(listen: std::net::SocketAddr, token: Option<String>) -> Self {
        match token {
            Some(token) => Access::Token(token.into()),
            None if listen.ip().is_loopback() => Access::Loopback,
            None => Access::LoopbackClients,
        }
    }
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
        tracing::info!(%addr, access = ?state.access, "serving /healthz, /readyz, /metrics, /status, /hooks, /api, the web page at /");
    }
    // Open event streams end when shutdown begins, or the graceful shutdown
    // would wait for every browser tab to close.
    let (closing, closed) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    let app = router(state, Closing::new(closed))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// All routes, with the body limit and a tracing span per request. Public so tests
/// can drive it without a socket.
pub(crate) fn router(state: ServerState, closing: Closing) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/api/v1/sources/{source}/suspend", post(suspend))
        .route("/api/v1/sources/{source}/resume", post(resume))
        .route("/api/v1/sources/{source}/reconcile", post(reconcile))
        .merge(web::routes(closing))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/hooks/git/{source}", post(git_hook))
        .route("/hooks/source/{source}", post(source_hook))
        .merge(web::open_routes())
        .merge(protected)
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

/// Lets the request through, or answers 401: no or a wrong token, or a client
/// beyond loopback of a daemon that listens there without a token. A browser
/// asking for a page gets the web page's sign-in form with the 401.
async fn authorize(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    let refusal = match &state.access {
        Access::Loopback => None,
        Access::LoopbackClients if from_loopback(&request) => None,
        Access::LoopbackClients => Some(
            "this daemon listens beyond loopback: it answers other clients only with a \
             bearer token ([server] token_file), or reach it through kubectl port-forward",
        ),
        Access::Token(token) => {
            let header = bearer(request.headers()).map(|t| t.as_bytes().to_vec());
            // The web page's cookie, for reads only: no other site's page can make
            // a browser send a control request with it.
            let read = matches!(*request.method(), Method::GET | Method::HEAD);
            let cookie = read.then(|| web::cookie_token(request.headers())).flatten();
            let admitted = header
                .into_iter()
                .chain(cookie)
                .any(|offered| same_secret(&offered, token.as_bytes()));
            (!admitted).then_some("missing or wrong bearer token")
        }
    };
    let Some(message) = refusal else {
        return next.run(request).await;
    };
    tracing::warn!(path = %request.uri().path(), "refused: {message}");
    let mut response = if web::wants_html(request.headers()) {
        web::login_form(StatusCode::UNAUTHORIZED, state.access.has_token(), None)
    } else {
        api_error(StatusCode::UNAUTHORIZED, message.to_owned(), None)
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"converge\""),
    );
    response
}

/// Whether the client connected from a loopback address (unknown: no).
fn from_loopback(request: &Request) -> bool {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    peer.is_some_and(|peer| peer.0.ip().is_loopback())
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

/// Compares in time independent of where the first difference is, so the answer's
/// timing tells nothing about the token.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn api_error(code: StatusCode, error: String, leader: Option<String>) -> Response {
    (code, axum::Json(ApiError { error, leader })).into_response()
}

async fn suspend(
    State(state): State<ServerState>,
    Path(source): Path<String>,
    Json(request): Json<SuspendRequest>,
) -> Response {
    control(&state, &source, |reply| Command::Suspend(request, reply)).await
}

async fn resume(State(state): State<ServerState>, Path(source): Path<String>) -> Response {
    control(&state, &source, Command::Resume).await
}

async fn reconcile(State(state): State<ServerState>, Path(source): Path<String>) -> Response {
    control(&state, &source, Command::Reconcile).await
}

/// Hands `command` to the source's task and answers what it replies.
async fn control<T: serde::Serialize>(
    state: &ServerState,
    source: &str,
    command: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Command,
) -> Response {
    let Some(handle) = state.sources.get(source) else {
        return api_error(StatusCode::NOT_FOUND, format!("no source {source:?}"), None);
    };
    let (reply, answer) = oneshot::channel();
    if !handle.send(command(reply)).await {
        return refused(&ControlError::Gone);
    }
    match answer.await {
        Ok(Ok(body)) => axum::Json(body).into_response(),
        Ok(Err(error)) => refused(&error),
        Err(_) => refused(&ControlError::Gone),
    }
}

fn refused(error: &ControlError) -> Response {
    (error.status_code(), axum::Json(error.body())).into_response()
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
    let Some(SourceHandle { webhook: hook, .. }) = state.sources.get(&source) else {
        return (StatusCode::NOT_FOUND, "no such git source");
    };
    queue_fetch(&source, &hook, &headers, &body, None)
}

/// The generic trigger, for any source kind (a chart published by CI, a directory
/// a job rewrote): the same signature check as the Git webhook when the source has
/// a secret; without one, the server's bearer token when `[server] token_file` is
/// set (a CI job carries it; Git hosts do not, hence their own route).
async fn source_hook(
    State(state): State<ServerState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(SourceHandle { webhook: hook, .. }) = state.sources.get(&source) else {
        return (StatusCode::NOT_FOUND, "no such source");
    };
    let token = match &state.access {
        Access::Token(token) => Some(token.as_bytes()),
        Access::Loopback | Access::LoopbackClients => None,
    };
    queue_fetch(&source, &hook, &headers, &body, token)
}

/// Checks the signature (or, for a source without a secret, `token`), then queues
/// a fetch on the source's trigger.
fn queue_fetch(
    source: &str,
    hook: &Webhook,
    headers: &HeaderMap,
    body: &[u8],
    token: Option<&[u8]>,
) -> (StatusCode, &'static str) {
    if hook.secret.is_none() {
        if let Some(token) = token {
            if !bearer(headers).is_some_and(|offered| same_secret(offered.as_bytes(), token)) {
                tracing::warn!(%source, "webhook rejected: missing or wrong bearer token");
                return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            }
        }
    }
    if let Some(secret) = &hook.secret {
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if !crate::source::verify_github_signature(secret, body, signature) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_follows_the_address_and_the_token() {
        let local: std::net::SocketAddr = ([127, 0, 0, 1], 9476).into();
        let all: std::net::SocketAddr = ([0, 0, 0, 0], 9476).into();
        assert!(matches!(Access::new(local, None), Access::Loopback));
        assert!(matches!(Access::new(all, None), Access::LoopbackClients));
        let token = Access::new(all, Some("s3cret".into()));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
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
