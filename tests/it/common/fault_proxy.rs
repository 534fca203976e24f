//! A TCP proxy between converge and kube-apiserver that injects faults: an outage
//! (the port refuses connections), resets (every open connection, or each
//! connection after a random number of bytes of its answers: mid-response), stalls,
//! latency. TLS passes through untouched, so converge sees the real server's
//! certificate and the real server sees converge's credentials.
//!
//! HTTP/2 carries every request of a client, watches included, on one connection,
//! so cutting the connections is how a watch stream is cut.
//!
//! The proxy runs on its own Tokio runtime, so both plain and async tests can steer
//! it; it stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the proxy has done, for tests to prove that a fault really happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub resets: u64,
    /// Bytes of answers carried from the API server to converge.
    pub answer_bytes: u64,
    /// Chunks that arrived while stalled and were held until the stall ended:
    /// requests, answers, or the last bytes of a connection being closed.
    pub held: u64,
}

struct Shared {
    upstream: SocketAddr,
    /// Bumped by [`FaultProxy::cut_all`]: connections older than it reset.
    cut: watch::Sender<u64>,
    down: watch::Sender<bool>,
    stalled: watch::Sender<bool>,
    latency_ms: AtomicU64,
    /// Added to [`Shared::latency_ms`] for answers only.
    answer_latency_ms: AtomicU64,
    /// Each new connection resets after a random number of answer bytes in this range.
    reset_after: Mutex<Option<(u64, u64)>>,
    accepted: AtomicU64,
    resets: AtomicU64,
    answer_bytes: AtomicU64,
    held: AtomicU64,
    seed: AtomicU64,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`, without faults.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            cut: watch::channel(0).0,
            down: watch::channel(false).0,
            stalled: watch::channel(false).0,
            latency_ms: AtomicU64::new(0),
            answer_latency_ms: AtomicU64::new(0),
            reset_after: Mutex::new(None),
            accepted: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            answer_bytes: AtomicU64::new(0),
            held: AtomicU64::new(0),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(addr.port())),
        });
        runtime.spawn(serve(listener, addr, shared.clone()));
        FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `https://127.0.0.1:<port>`: the server URL for a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Resets every open connection now (a watch stream is cut with them).
    pub fn cut_all(&self) {
        self.shared.cut.send_modify(|generation| *generation += 1);
    }

    /// Down: open connections are reset and the port refuses new ones. Up: the
    /// port listens again.
    pub fn set_down(&self, down: bool) {
        // Down before the cut: a connection accepted meanwhile is either refused
        // by `serve` or older than the cut (see there).
        self.shared.down.send_replace(down);
        if down {
            self.cut_all();
        }
    }

    /// Holds every byte in both directions while stalled; connections stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.shared.stalled.send_replace(stalled);
    }

    /// Delays every chunk forwarded, in both directions.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Delays every chunk of the API server's answers (requests pass at once): a
    /// request is carried out while its answer is still in the proxy, where
    /// [`FaultProxy::cut_all`] can lose it.
    pub fn set_answer_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.answer_latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Each connection opened from now on is reset after carrying a random number
    /// of answer bytes between `min` and `max`: in the middle of a response.
    /// `None`: connections are never reset so.
    pub fn reset_after_bytes(&self, range: Option<(u64, u64)>) {
        *self
            .shared
            .reset_after
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = range;
    }

    pub fn stats(&self) -> Stats {
        Stats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            resets: self.shared.resets.load(Ordering::Relaxed),
            answer_bytes: self.shared.answer_bytes.load(Ordering::Relaxed),
            held: self.shared.held.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Accepts while up; while down the listener is closed, so connecting is refused.
async fn serve(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    let mut down = shared.down.subscribe();
    loop {
        let Some(open) = &listener else {
            let _ = down.wait_for(|d| !*d).await;
            listener = bind_again(addr).await;
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                if let Ok((client, _)) = accepted {
                    // The generation is read before `down`: a connection that
                    // passes while a `set_down` runs is older than its cut.
                    let generation = *shared.cut.borrow();
                    if *shared.down.borrow() {
                        reset(&client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(client, generation, shared.clone()));
                }
            }
            _ = down.wait_for(|d| *d) => listener = None,
        }
    }
}

async fn bind_again(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return Some(listener);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the fault proxy cannot listen on {addr} again");
}

/// Why a connection ended.
struct Reset;

/// Carries one connection until it ends or a cut newer than `generation`.
async fn connection(client: TcpStream, generation: u64, shared: Arc<Shared>) {
    let mut cut = shared.cut.subscribe();
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(&client);
        return;
    };
    // Answers always have a budget (unbounded without resets): it marks the
    // direction whose bytes are counted.
    let budget = shared.reset_budget().unwrap_or(u64::MAX);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let outcome = tokio::select! {
        pumped = async {
            tokio::try_join!(
                pump(&mut client_read, &mut upstream_write, &shared, None),
                pump(&mut upstream_read, &mut client_write, &shared, Some(budget)),
            )
        } => pumped.map(drop),
        _ = cut.wait_for(|g| *g != generation) => Err(Reset),
    };
    if outcome.is_err() {
        shared.resets.fetch_add(1, Ordering::Relaxed);
        reset(client_read.as_ref());
        reset(upstream_read.as_ref());
    }
}

/// Copies one direction until EOF (then half-closes), an error or the byte budget.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    budget: Option<u64>,
) -> Result<(), Reset> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut carried = 0u64;
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Reset)?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        shared.gate(budget.is_some()).await;
        let chunk = &buf[..n];
        if let Some(budget) = budget.filter(|b| carried + n as u64 >= *b) {
            let part = usize::try_from(budget.saturating_sub(carried)).unwrap_or(n);
            let _ = to.write_all(&chunk[..part.min(n)]).await;
            return Err(Reset);
        }
        carried += n as u64;
        if budget.is_some() {
            shared.answer_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        to.write_all(chunk).await.map_err(|_| Reset)?;
    }
}

/// Closes with RST rather than FIN: the peer sees "connection reset".
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

impl Shared {
    /// Waits out a stall and the latency before a chunk (of an answer or not) is
    /// forwarded.
    async fn gate(&self, answer: bool) {
        let mut stalled = self.stalled.subscribe();
        if *stalled.borrow_and_update() {
            self.held.fetch_add(1, Ordering::Relaxed);
            let _ = stalled.wait_for(|s| !*s).await;
        }
        let mut ms = self.latency_ms.load(Ordering::Relaxed);
        if answer {
            ms += self.answer_latency_ms.load(Ordering::Relaxed);
        }
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn reset_budget(&self) -> Option<u64> {
        let range = *self.reset_after.lock().unwrap_or_else(|p| p.into_inner());
        let (min, max) = range?;
        let span = max.saturating_sub(min).max(1);
        Some(min + self.random() % span)
    }

    /// xorshift64: enough to spread reset points, no dependency.
    fn random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }
}
