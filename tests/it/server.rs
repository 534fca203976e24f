//! The daemon's HTTP endpoints over a real socket on 127.0.0.1 (no cluster needed):
//! probes, metrics exposition, `/status` through the `converge status` client,
//! signed webhooks, and graceful shutdown.

use crate::common::{github_signature, prometheus};
use converge::daemon::{
    self, ApplyAction, Metrics, ObjectState, ObjectStatus, ReconcileResult, ServerState,
    SourceKind, StatusBoard, SyncResult, Webhook,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const SECRET: &[u8] = b"it's a secret to everybody";
const PAYLOAD: &[u8] = br#"{"ref":"refs/heads/main","after":"0123456789abcdef"}"#;

/// A running server and the handles a test needs to poke and stop it.
struct Harness {
    addr: String,
    status: StatusBoard,
    metrics: Metrics,
    /// Fetch triggers of the `signed` (with secret) and `open` (without) hooks.
    signed: mpsc::Receiver<()>,
    open: mpsc::Receiver<()>,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Harness {
    start_with(|state| state).await
}

/// [`start`] with the server's state changed by `adjust` (its access, say).
async fn start_with(adjust: impl FnOnce(ServerState) -> ServerState) -> Harness {
    start_on("127.0.0.1", adjust).await
}

/// [`start_with`] listening on `ip`, reached at `ip` (for `0.0.0.0`: at this
/// machine's outward address, so that the server sees a client beyond loopback).
async fn start_on(ip: &str, adjust: impl FnOnce(ServerState) -> ServerState) -> Harness {
    let status = StatusBoard::default();
    status.register("signed", SourceKind::Git, "https://example.com/signed.git");
    status.register("open", SourceKind::Git, "https://example.com/open.git");
    status.register("local", SourceKind::Dir, "/srv/manifests");
    let (signed_tx, signed) = mpsc::channel(1);
    let (open_tx, open) = mpsc::channel(1);
    let hooks = HashMap::from([
        (
            "signed".to_owned(),
            Webhook {
                secret: Some(SECRET.to_vec()),
                trigger: signed_tx,
            },
        ),
        (
            "open".to_owned(),
            Webhook {
                secret: None,
                trigger: open_tx,
            },
        ),
    ]);
    let metrics = Metrics::new();
    let state = adjust(ServerState::new(status.clone(), metrics.clone(), hooks));
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    let addr = match ip {
        "0.0.0.0" => format!("{}:{port}", outward_ip()),
        ip => format!("{ip}:{port}"),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(daemon::serve(listener, state, shutdown));
    Harness {
        addr,
        status,
        metrics,
        signed,
        open,
        stop: Some(stop),
        served,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let response = client()
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the server");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.expect("body"))
    }

    async fn post_hook(&self, source: &str, signature: Option<&str>) -> (u16, String) {
        let mut request = client()
            .post(self.url(&format!("/hooks/git/{source}")))
            .header("X-GitHub-Event", "push")
            .body(PAYLOAD);
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        let response = request.send().await.expect("POST reaches the server");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }
}

/// reqwest is built without a default crypto provider; plain HTTP still needs one
/// to build a client, so tests hand it a ring-based config.
pub fn client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// The address this machine would send from to another host (no packet is sent).
pub fn outward_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    socket
        .connect("192.0.2.1:9")
        .expect("a route off this machine");
    let ip = socket.local_addr().expect("local addr").ip();
    assert!(!ip.is_loopback(), "no address beyond loopback: {ip}");
    ip
}

/// POST to the control API with an optional bearer token: (status, body).
async fn control(h: &Harness, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = client().post(h.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST reaches the server");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_token_guards_status_metrics_and_control_but_not_probes_or_hooks() {
    let all: std::net::SocketAddr = ([0, 0, 0, 0], 9476).into();
    let h = start_with(|s| s.with_token(all, Some("s3cret".into()))).await;
    assert_eq!(h.get("/status").await.0, 401);
    assert_eq!(h.get("/metrics").await.0, 401);
    let resume = "/api/v1/sources/open/resume";
    let (code, body) = control(&h, resume, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    assert_eq!(control(&h, resume, Some("wrong")).await.0, 401);
    let (code, body) = control(&h, resume, Some("s3cret")).await;
    assert_eq!(
        code, 503,
        "past the guard, to a source with no task: {body}"
    );
    assert_eq!(
        control(&h, "/api/v1/sources/nope/resume", Some("s3cret"))
            .await
            .0,
        404
    );
    assert_eq!(h.get("/healthz").await.0, 200);
    assert_eq!(h.get("/readyz").await.0, 503, "answers, unguarded");
    assert_eq!(h.post_hook("open", None).await.0, 202);
    let fetched = daemon::fetch_status(&h.addr, Some("s3cret")).await;
    assert!(fetched.is_ok(), "{fetched:?}");
}

#[tokio::test]
async fn beyond_loopback_without_a_token_the_api_answers_only_local_clients() {
    let all: std::net::SocketAddr = ([0, 0, 0, 0], 9476).into();
    let h = start_on("0.0.0.0", |s| s.with_token(all, None)).await;
    let (code, body) = control(&h, "/api/v1/sources/open/suspend", None).await;
    assert_eq!(code, 401, "from {}: {body}", h.addr);
    assert!(body.contains("[server] token_file"), "{body}");
    assert_eq!(h.get("/status").await.0, 401, "reads need the token too");
    assert_eq!(h.get("/healthz").await.0, 200, "probes never do");
    let h = start_with(|s| s.with_token(all, None)).await;
    let (code, body) = control(&h, "/api/v1/sources/open/resume", None).await;
    assert_eq!(code, 503, "from loopback (a port-forward): through: {body}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let h = start().await;
    let (status, _, body) = h.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn readyz_waits_for_every_source() {
    let h = start().await;
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 503);
    for name in ["signed", "open", "local"] {
        assert!(body.contains(name), "{name} not named in {body:?}");
    }
    h.status.update("signed", |s| s.result = SyncResult::Synced);
    h.status.update("open", |s| s.result = SyncResult::Drifted);
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("local") && !body.contains("signed"),
        "{body:?}"
    );
    h.status.update("local", |s| s.result = SyncResult::Failed);
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready"));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let h = start().await;
    h.metrics
        .observe_reconcile("local", ReconcileResult::Success, 0.25);
    h.metrics
        .count_action("local", "Deployment", ApplyAction::Create, 2);
    let (status, content_type, body) = h.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    prometheus::assert_valid(&body);
    assert!(body.contains(r#"converge_reconciles_total{source="local",result="success"} 1"#));
    assert!(body.contains("converge_build_info{version="));
}

#[tokio::test]
async fn status_round_trips_through_fetch_status() {
    let h = start().await;
    h.status.update("local", |s| {
        s.result = SyncResult::Drifted;
        s.revision = Some("sha256:feedface".into());
        s.last_attempt = Some(std::time::SystemTime::now());
        s.last_success = s.last_attempt;
        s.reconciles = 1;
        s.objects = vec![ObjectStatus {
            object: "ConfigMap/shop/settings".into(),
            state: ObjectState::Drifted,
            diff: Some("-a: 1\n+a: 2".into()),
            reason: None,
            origin: Some("apps/settings.yaml:1".into()),
            wave: 0,
        }];
    });
    let fetched = daemon::fetch_status(&h.addr, None)
        .await
        .expect("fetch_status");
    assert_eq!(fetched, h.status.report());
    let (status, content_type, _) = h.get("/status").await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
}

#[tokio::test]
async fn webhook_for_unknown_source_is_404() {
    let h = start().await;
    let signature = github_signature(SECRET, PAYLOAD);
    assert_eq!(h.post_hook("nope", Some(&signature)).await.0, 404);
    // A directory source has no webhook either.
    assert_eq!(h.post_hook("local", None).await.0, 404);
}

#[tokio::test]
async fn webhook_with_bad_or_missing_signature_is_401_and_triggers_nothing() {
    let mut h = start().await;
    let wrong = github_signature(b"not the secret", PAYLOAD);
    for signature in [Some(wrong.as_str()), None, Some("sha256=zz"), Some("")] {
        let (status, _) = h.post_hook("signed", signature).await;
        assert_eq!(status, 401, "signature {signature:?}");
    }
    assert!(
        h.signed.try_recv().is_err(),
        "a rejected webhook queued a fetch"
    );
}

#[tokio::test]
async fn webhook_with_good_signature_queues_a_fetch() {
    let mut h = start().await;
    let signature = github_signature(SECRET, PAYLOAD);
    let (status, body) = h.post_hook("signed", Some(&signature)).await;
    assert_eq!((status, body.as_str()), (202, "fetch queued"));
    assert!(h.signed.try_recv().is_ok(), "no fetch queued");
    // While a fetch is queued, more pushes are accepted and coalesce into it.
    for _ in 0..2 {
        assert_eq!(h.post_hook("signed", Some(&signature)).await.0, 202);
    }
    assert!(h.signed.try_recv().is_ok());
    assert!(h.signed.try_recv().is_err());
}

#[tokio::test]
async fn webhook_without_secret_queues_a_fetch() {
    let mut h = start().await;
    assert_eq!(h.post_hook("open", None).await.0, 202);
    assert!(h.open.try_recv().is_ok(), "no fetch queued");
}

#[tokio::test]
async fn webhook_body_is_limited_to_one_mib() {
    let mut h = start().await;
    let response = client()
        .post(h.url("/hooks/git/open"))
        .body(vec![b'x'; 1024 * 1024 + 1])
        .send()
        .await
        .expect("POST reaches the server");
    assert_eq!(response.status().as_u16(), 413);
    assert!(h.open.try_recv().is_err());
}

#[tokio::test]
async fn fetch_status_from_a_closed_port_says_what_to_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    drop(listener);
    let error = daemon::fetch_status(&addr, None)
        .await
        .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(
        message.contains(&format!("is `converge run` listening on {addr}?")),
        "{message}"
    );
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let mut h = start().await;
    assert_eq!(h.get("/healthz").await.0, 200);
    if let Some(stop) = h.stop.take() {
        let _ = stop.send(());
    }
    let served = tokio::time::timeout(Duration::from_secs(10), &mut h.served)
        .await
        .expect("serve returned within 10 s of shutdown")
        .expect("serve task did not panic");
    assert!(served.is_ok(), "{served:?}");
}

/// Collects what the fmt subscriber writes, to check what a request logs.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One process-wide subscriber for the test process. A thread-local one
/// (`set_default`) raced with the other tests over tracing's per-callsite interest
/// cache and missed events about one run in six; a global one cannot.
fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        captured
    })
}

#[tokio::test]
async fn requests_are_traced_without_bodies_or_signatures() {
    let captured = captured_logs();
    let h = start().await;
    let signature = github_signature(SECRET, PAYLOAD);
    assert_eq!(h.post_hook("signed", Some(&signature)).await.0, 202);
    assert_eq!(h.post_hook("signed", Some("sha256=00")).await.0, 401);
    let bytes = captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let logs = String::from_utf8_lossy(&bytes);
    assert!(logs.contains("method=POST"), "{logs}");
    assert!(logs.contains("path=/hooks/git/signed"), "{logs}");
    assert!(
        logs.contains("status=202") && logs.contains("status=401"),
        "{logs}"
    );
    assert!(
        !logs.contains(&signature[7..]) && !logs.contains("sha256=00"),
        "{logs}"
    );
    assert!(!logs.contains("refs/heads/main"), "body logged: {logs}");
}
