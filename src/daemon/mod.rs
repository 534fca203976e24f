//! The daemon: when to reconcile each source. Triggers (a source's own watcher or
//! poll, its webhook, drift reported by the reflectors, the resync timer),
//! one reconcile per source at a time, backoff with jitter after failures, the
//! HTTP server, and graceful shutdown. What a reconcile does is
//! [`crate::daemon::reconcile`]'s business, not this module's.

pub mod events;
pub mod reconcile;
pub mod shutdown;
mod targeting;

use crate::config::{SourceConfig, SourceKind as ConfigKind};
use crate::daemon::events::Events;
use crate::daemon::reconcile::{Reconciler, Settings, SourceState, Trigger, short};
use crate::daemon::shutdown::Shutdown;
use crate::engine::Engine;
use crate::http::metrics::Metrics;
use crate::http::server::{self, Hook, ServerState};
use crate::http::status::{SourceKind, StatusBoard, SyncResult};
use crate::kube::watch::Change;
use crate::source::{Snapshot, Source, SourceError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tracing::{info, warn};

/// Changes arriving this close together are handled by one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest a change waits for others to batch with it.
const MAX_SETTLE: Duration = Duration::from_millis(500);
/// One resync in this many runs the engine even when nothing changed.
const FULL_RESYNC_EVERY: u32 = 10;
/// How long an in-flight reconcile may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// One source as the daemon runs it.
pub struct SourceSpec {
    pub settings: Settings,
    pub source: Source,
    pub kind: SourceKind,
    /// Where it comes from, for people: a directory or a Git URL (no credentials).
    pub location: String,
    /// Resync interval (and Git poll interval).
    pub interval: Duration,
    pub webhook_secret: Option<Vec<u8>>,
}

impl SourceSpec {
    /// The daemon's view of one `[[source]]` table. Git checkouts go under `state_dir`.
    pub fn from_config(config: &SourceConfig, state_dir: &Path) -> Result<Self, SourceError> {
        let source = Source::new(config, state_dir)?;
        let kind = match config.kind {
            ConfigKind::Dir { .. } => SourceKind::Dir,
            ConfigKind::Git(_) => SourceKind::Git,
        };
        Ok(SourceSpec {
            settings: Settings {
                name: config.name.clone(),
                namespace: config.namespace.clone(),
                prune: config.prune,
                allow_mass_prune: config.allow_mass_prune,
                self_heal: config.self_heal,
            },
            kind,
            location: source.location(),
            interval: config.interval,
            webhook_secret: source.webhook_secret().map(<[u8]>::to_vec),
            source,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub listen: SocketAddr,
    /// Report drift, never write (`converge run --dry-run`).
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "cannot listen on {addr}: {source} (is another converge running? set [server] listen or --listen)"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs every source until `shutdown`, then lets in-flight reconciles finish
/// (bounded) and returns.
pub async fn run(
    engine: Engine,
    specs: Vec<SourceSpec>,
    options: DaemonOptions,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: options.listen,
            source,
        })?;
    let metrics = Metrics::new();
    let observer = metrics.clone();
    engine
        .client()
        .observe_requests(Arc::new(move |verb| observer.count_api_request(verb)));
    let reconciler = Reconciler {
        events: if options.dry_run {
            Events::disabled()
        } else {
            Events::new(engine.client().clone())
        },
        engine,
        status: StatusBoard::default(),
        metrics: metrics.clone(),
    };
    let mut hooks = HashMap::new();
    let mut tasks = Vec::new();
    for mut spec in specs {
        if options.dry_run {
            spec.settings.self_heal = false;
        }
        reconciler
            .status
            .register(&spec.settings.name, spec.kind, &spec.location);
        let (hook_tx, hook_rx) = mpsc::channel(1);
        hooks.insert(
            spec.settings.name.clone(),
            Hook {
                secret: spec.webhook_secret.take(),
                trigger: hook_tx,
            },
        );
        let task = SourceTask::new(reconciler.clone(), spec, hook_rx, shutdown.clone());
        tasks.push(tokio::spawn(task.run()));
    }
    let state = ServerState {
        status: reconciler.status.clone(),
        metrics,
        hooks: Arc::new(hooks),
    };
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(server::serve(listener, state, async move {
        server_shutdown.wait().await
    }));

    let mut waiting = shutdown.clone();
    waiting.wait().await;
    info!("shutting down: letting in-flight reconciles finish");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    for task in tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            warn!("a reconcile did not finish within the shutdown grace period");
        }
    }
    let _ = tokio::time::timeout_at(deadline + Duration::from_millis(500), server).await;
    info!("stopped");
    Ok(())
}

/// Why a source is reconciled now.
#[derive(Debug, PartialEq, Eq)]
enum Reason {
    Start,
    Changed,
    Drift,
    Resync,
    Retry,
}

/// The loop of one source: wait for a reason, fetch, reconcile, repeat.
struct SourceTask {
    reconciler: Reconciler,
    spec: SourceSpec,
    state: SourceState,
    hook: mpsc::Receiver<()>,
    source_changes: mpsc::Receiver<String>,
    source_changes_tx: mpsc::Sender<String>,
    drift: mpsc::UnboundedReceiver<Change>,
    shutdown: Shutdown,
    failures: u32,
    /// Revision of the last successful reconcile.
    last_ok: Option<String>,
    /// The last snapshot fetched: drift is healed from it without fetching again.
    last_snapshot: Option<Snapshot>,
    /// Resyncs skipped in a row because nothing had changed.
    quiet_resyncs: u32,
    /// How long the last reconcile took (it paces the next batch of changes).
    last_duration: Duration,
}

impl SourceTask {
    fn new(
        reconciler: Reconciler,
        spec: SourceSpec,
        hook: mpsc::Receiver<()>,
        shutdown: Shutdown,
    ) -> Self {
        let (changes_tx, drift) = mpsc::unbounded_channel();
        let (source_changes_tx, source_changes) = mpsc::channel(1);
        SourceTask {
            reconciler,
            spec,
            state: SourceState::new(changes_tx),
            hook,
            source_changes,
            source_changes_tx,
            drift,
            shutdown,
            failures: 0,
            last_ok: None,
            last_snapshot: None,
            quiet_resyncs: 0,
            last_duration: Duration::ZERO,
        }
    }

    async fn run(mut self) {
        // Watch before the first fetch so that no change falls in between.
        let _watch = match self.spec.source.watch(self.source_changes_tx.clone()) {
            Ok(handle) => Some(handle),
            Err(e) => {
                warn!(source = %self.spec.settings.name, error = %e, "cannot watch the source; relying on resync");
                None
            }
        };
        let mut reason = Reason::Start;
        loop {
            self.reconcile(&reason).await;
            match self.next_reason().await {
                Some(next) => reason = next,
                None => return,
            }
        }
    }

    /// Waits for the next reason to reconcile; `None` on shutdown.
    async fn next_reason(&mut self) -> Option<Reason> {
        let (deadline, on_timer) = self.next_timer();
        loop {
            let reason = tokio::select! {
                biased;
                _ = self.shutdown.wait() => return None,
                Some(()) = self.hook.recv() => Reason::Changed,
                Some(_) = self.source_changes.recv() => Reason::Changed,
                Some(change) = self.drift.recv() => {
                    if !self.take_change(&change) {
                        continue;
                    }
                    Reason::Drift
                }
                _ = sleep_until(deadline.into()) => on_timer,
            };
            return Some(self.settle(reason).await);
        }
    }

    /// Records a reflector's change (health, memo); whether it is drift.
    fn take_change(&mut self, change: &Change) -> bool {
        self.reconciler
            .observe_health(&self.spec.settings, &mut self.state, change);
        let drift = self.state.is_drift(change);
        if drift {
            info!(source = %self.spec.settings.name, object = %change.object, "live object changed");
        }
        drift
    }

    /// When the timer fires next: a retry after failures (exponential, capped at
    /// the interval, with jitter), else the periodic resync.
    fn next_timer(&self) -> (Instant, Reason) {
        let interval = self.spec.interval;
        if self.failures > 0 {
            let base = Duration::from_millis(500).saturating_mul(1 << self.failures.min(10));
            let delay = base.min(interval).mul_f64(0.75 + jitter() * 0.5);
            return (Instant::now() + delay, Reason::Retry);
        }
        (Instant::now() + interval, Reason::Resync)
    }

    /// Lets a burst of changes (an editor writing several files, a rollout's
    /// status updates) arrive, then drops what is already covered. The wait grows
    /// with the last reconcile's duration, so a stream of changes to a large source
    /// is handled in batches instead of keeping a core busy.
    /// Returns the reason to reconcile for, upgraded by what arrived meanwhile: a
    /// source change wins over drift (it fetches anew), drift over a resync (which
    /// would otherwise be skipped as a no-op).
    async fn settle(&mut self, mut reason: Reason) -> Reason {
        tokio::time::sleep(DEBOUNCE.max(self.last_duration.min(MAX_SETTLE))).await;
        while self.hook.try_recv().is_ok() || self.source_changes.try_recv().is_ok() {
            reason = Reason::Changed;
        }
        while let Ok(change) = self.drift.try_recv() {
            // Every change is taken: a status-only update must refresh the memo, or
            // the next reconcile would dry-run the object again.
            if self.take_change(&change) && reason == Reason::Resync {
                reason = Reason::Drift;
            }
        }
        reason
    }

    async fn reconcile(&mut self, reason: &Reason) {
        let name = self.spec.settings.name.clone();
        let started = Instant::now();
        let snapshot = match (reason, &self.last_snapshot) {
            (Reason::Drift, Some(last)) => last.clone(),
            _ => match self.fetch().await {
                Ok(snapshot) => snapshot,
                Err(message) => return self.fetch_failed(&name, message),
            },
        };
        self.last_snapshot = Some(snapshot.clone());
        let unchanged = self.last_ok.as_deref() == Some(snapshot.revision.as_str());
        match reason {
            // A watcher or webhook fired but the content is what is applied.
            Reason::Changed if unchanged && !self.state.has_pending_drift() => return,
            // The watches keep the live side current and drift reconciles at once, so
            // a resync with an unchanged revision has nothing to do; every
            // FULL_RESYNC_EVERY-th runs anyway, as the safety net.
            Reason::Resync if unchanged && self.quiet_resyncs + 1 < FULL_RESYNC_EVERY => {
                self.quiet_resyncs += 1;
                let seconds = started.elapsed().as_secs_f64();
                self.reconciler
                    .metrics
                    .observe_reconcile(&name, "skipped", seconds);
                return;
            }
            _ => self.quiet_resyncs = 0,
        }
        info!(source = %name, revision = %short(&snapshot.revision), ?reason, "reconciling");
        let trigger = match reason {
            Reason::Drift | Reason::Changed => Trigger::Changes,
            // A poll that found a new revision.
            Reason::Resync if !unchanged => Trigger::Changes,
            Reason::Start | Reason::Resync | Reason::Retry => Trigger::Full,
        };
        let result = self
            .reconciler
            .reconcile(
                &self.spec.settings,
                &mut self.state,
                &snapshot.root,
                &snapshot.revision,
                trigger,
            )
            .await;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.last_ok = Some(snapshot.revision);
            }
            Err(_) => self.failures += 1,
        }
        self.last_duration = started.elapsed();
        release_free_memory();
    }

    /// The source's current snapshot, timing Git fetches for the metrics.
    async fn fetch(&mut self) -> Result<Snapshot, String> {
        let started = Instant::now();
        let result = self.spec.source.fetch().await;
        if self.spec.kind == SourceKind::Git {
            let seconds = started.elapsed().as_secs_f64();
            self.reconciler.metrics.observe_git_fetch(
                &self.spec.settings.name,
                seconds,
                result.is_ok(),
            );
        }
        result.map_err(|e| e.to_string())
    }

    /// An unreachable remote or a wrong password: reported, retried with backoff,
    /// and the last good revision stays applied.
    fn fetch_failed(&mut self, name: &str, message: String) {
        warn!(source = %name, error = %message, "fetching the source failed; the last good revision stays applied");
        self.failures += 1;
        let now = SystemTime::now();
        self.reconciler.status.update(name, |s| {
            s.last_attempt = Some(now);
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
            s.reconciles += 1;
        });
        self.reconciler
            .metrics
            .observe_reconcile(name, "failure", 0.0);
    }
}

/// Hands memory freed by a reconcile back to the OS. glibc's malloc keeps freed
/// chunks for reuse, which left an idle daemon at about twice the RSS it needs
/// (hack/bench.sh: 59 → 31 MiB at 1000 objects); an idle daemon should be small.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
        // pointers and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}
