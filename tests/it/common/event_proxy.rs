//! An HTTP proxy in front of the API server that can swallow one event of a watch
//! stream: the next `MODIFIED` event of an object with a given name. It shows what
//! a watch cache does with an event that never arrived (issue #28).
//!
//! Why not [`super::fault_proxy`]: that one is a TCP proxy that passes TLS through
//! untouched, so it never sees an event. This one reads the stream: converge
//! talks plain HTTP/1.1 to it on loopback, and it forwards every request to a
//! `kubectl proxy` (also on loopback), which carries it to the API server with
//! the test's credentials. A watch answer (JSON, one event per line) is passed on
//! line by line as it arrives, except the one event it was told to drop; every
//! other answer is passed on whole.
//!
//! The proxy runs on its own Tokio runtime, so plain tests can steer it; it stops
//! (and its kubectl proxy with it) when dropped.

use super::{TestEnv, kubectl_bin};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct EventProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    kubectl: Child,
}

struct Shared {
    /// `http://127.0.0.1:<port>` of the kubectl proxy.
    upstream: String,
    http: reqwest::Client,
    /// The name whose next MODIFIED event is dropped; taken when it is.
    swallow: Mutex<Option<String>>,
    swallowed: AtomicU64,
    /// Watch requests carried (so a test can tell that the watches went through).
    watches: AtomicU64,
}

impl EventProxy {
    /// A proxy on a free loopback port, in front of a `kubectl proxy` started with
    /// the test's kubeconfig.
    pub fn start(env: &TestEnv) -> EventProxy {
        // reqwest is built without a default crypto provider (converge brings its
        // own); the proxy speaks plain HTTP, but building a client needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (kubectl, upstream) = kubectl_proxy(env);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the event proxy's runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the event proxy");
        let addr = listener.local_addr().expect("the event proxy's address");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the event proxy's HTTP client");
        let shared = Arc::new(Shared {
            upstream,
            http,
            swallow: Mutex::new(None),
            swallowed: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        EventProxy {
            addr,
            shared,
            runtime: Some(runtime),
            kubectl,
        }
    }

    /// `http://127.0.0.1:<port>`: the server URL for a kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops the next `MODIFIED` event of an object named `name`, on whichever
    /// watch it comes; every event after it passes.
    pub fn swallow_next_modified(&self, name: &str) {
        *self
            .shared
            .swallow
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(name.into());
    }

    /// Events dropped so far.
    pub fn swallowed(&self) -> u64 {
        self.shared.swallowed.load(Ordering::Relaxed)
    }

    /// Watch requests carried so far.
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::Relaxed)
    }
}

impl Drop for EventProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = self.kubectl.kill();
        let _ = self.kubectl.wait();
    }
}

/// `kubectl proxy` on a free loopback port, and its URL once it serves.
fn kubectl_proxy(env: &TestEnv) -> (Child, String) {
    let mut child = Command::new(kubectl_bin())
        .args(["--kubeconfig", &env.kubeconfig, "proxy", "--port=0"])
        .args(["--address=127.0.0.1", "--keepalive=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{} proxy`: {e}", kubectl_bin()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    // kubectl prints "Starting to serve on 127.0.0.1:PORT" once it listens, or exits.
    let _ = BufReader::new(stdout).read_line(&mut line);
    let Some(addr) = line.trim().strip_prefix("Starting to serve on ") else {
        let _ = child.kill();
        panic!("`kubectl proxy` did not start serving; it printed {line:?}");
    };
    let url = format!("http://{addr}");
    (child, url)
}

/// Hop-by-hop headers and those the body's new framing replaces.
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    for name in [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let is_watch = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let upstream = shared
        .http
        .request(parts.method, format!("{}{target}", shared.upstream))
        .headers(forwardable(&parts.headers))
        .body(body)
        .send()
        .await;
    let answer = match upstream {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = forwardable(answer.headers());
    }
    let body = match is_watch && answer.status().is_success() {
        true => {
            shared.watches.fetch_add(1, Ordering::Relaxed);
            Body::from_stream(filtered(answer, shared))
        }
        false => match answer.bytes().await {
            Ok(bytes) => Body::from(bytes),
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        },
    };
    response
        .body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// A watch answer as it arrives, one complete line (event) at a time, without the
/// event [`EventProxy::swallow_next_modified`] named.
fn filtered(
    answer: reqwest::Response,
    shared: Arc<Shared>,
) -> impl futures::Stream<Item = Result<Vec<u8>, reqwest::Error>> {
    futures::stream::try_unfold(
        (answer, Vec::<u8>::new(), shared),
        |(mut answer, mut pending, shared)| async move {
            loop {
                let Some(chunk) = answer.chunk().await? else {
                    // The stream ended: whatever is left (no newline) goes as it is.
                    if pending.is_empty() {
                        return Ok(None);
                    }
                    let rest = std::mem::take(&mut pending);
                    return Ok(Some((rest, (answer, pending, shared))));
                };
                pending.extend_from_slice(&chunk);
                let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let complete: Vec<u8> = pending.drain(..=end).collect();
                let kept = complete
                    .split_inclusive(|b| *b == b'\n')
                    .filter(|line| !shared.swallows(line))
                    .flatten()
                    .copied()
                    .collect::<Vec<u8>>();
                if !kept.is_empty() {
                    return Ok(Some((kept, (answer, pending, shared))));
                }
            }
        },
    )
}

impl Shared {
    /// Whether `line` is the event to drop (then it is dropped only this once).
    fn swallows(&self, line: &[u8]) -> bool {
        let mut armed = self.swallow.lock().unwrap_or_else(|p| p.into_inner());
        let Some(name) = armed.as_deref() else {
            return false;
        };
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) else {
            return false;
        };
        let hit = event["type"] == "MODIFIED" && event["object"]["metadata"]["name"] == name;
        if hit {
            *armed = None;
            self.swallowed.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }
}
