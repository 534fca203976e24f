//! The daemon: one task per source, the HTTP server, and graceful shutdown.
//!
//! Each source is run by a `source_task` whose `scheduler` owns every timer of
//! that source (poll/resync, retry, the window that batches changes) and decides
//! when and why to reconcile; [`reconcile`] does one reconcile, keeping what a
//! source remembers between them in `state`; `targeting` decides how much of the
//! source a reconcile must look at; [`events`] posts Kubernetes Events.
//!
//! With leader election, `leader` (one Lease for the daemon) or `shard` (one per
//! source) tells each source task, through its `Leadership`, whether this replica
//! writes the source or stands by reconciling report-only; `lease` does the Lease
//! requests. On shutdown the sources stop first, then the Leases are released.
//!
//! People steer a source through `control` (the API behind `converge suspend`,
//! `resume` and `reconcile`), which the source task answers; a suspension is kept
//! on the source's ApplySet parent by `suspend`. A configuration reload ([`Reload`])
//! stops removed sources, restarts changed ones and starts added ones; the tasks
//! of the others, with their watches and caches, are not touched.

mod client;
mod control;
mod error;
pub(crate) mod events;
mod leader;
mod lease;
mod metrics;
mod needs;
mod notify;
pub(crate) mod reconcile;
mod record;
mod relist;
mod scheduler;
mod server;
mod settings;
mod shard;
pub mod shutdown;
mod source_task;
mod state;
mod status;
mod suspend;
mod targeting;
mod web;

use crate::config::{ElectionScope, LeaseTiming};
use crate::daemon::events::Events;
use crate::daemon::leader::{LeaderElection, Leadership};
use crate::daemon::lease::Leases;
use crate::daemon::reconcile::Reconciler;
use crate::daemon::record::Recorder;
use crate::daemon::scheduler::Board;
pub use crate::daemon::settings::SourceSpec;
use crate::daemon::shard::Shard;
use crate::daemon::shutdown::Shutdown;
pub use crate::daemon::source_task::RemoteAccess;
use crate::daemon::source_task::{Inputs, Remote, SourceTask};
use crate::daemon::status::{ReplicaRole, ReplicaStatus};
use crate::engine::Engine;
use crate::kube::Client;
use crate::render::Renderer;
pub use client::fetch_status;
pub use control::{ApiError, ControlCallError, ControlClient, SuspendRequest};
pub use metrics::{ApplyAction, Metrics, NotifyOutcome, ReconcileResult};
pub use notify::NotifyError;
use server::{Access, Registry, SourceHandle};
pub use server::{ServerState, Webhook, serve};
pub use status::{ObjectRow, SourceRow, object_rows, objects_table, source_rows, sources_table};
pub use status::{
    ObjectState, ObjectStatus, SourceKind, SourceStatus, StatusBoard, StatusReport, Suspension,
    SyncCounts, SyncRecord, SyncResult, Written, status_text,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, info_span, warn};

/// How long an in-flight reconcile may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

pub struct DaemonOptions {
    pub listen: SocketAddr,
    /// Report drift, never write (`converge run --dry-run`).
    pub dry_run: bool,
    /// kustomize and helm, found at start-up.
    pub renderer: Renderer,
    /// Elect who writes among replicas; `None`: this one always writes.
    pub election: Option<ElectionOptions>,
    /// How to reach each `[[clusters]]` entry, by name; sources that name one
    /// connect to it in their own task (a cluster that is down fails only them).
    pub clusters: BTreeMap<String, RemoteAccess>,
    /// `[server] token_file`'s token: the API's bearer token.
    pub token: Option<String>,
    /// Where reload requests come from (`None`: never reloaded).
    pub reload: Option<Reload>,
    /// `[[notify]]`: who is told about syncs, failures, drift, health and waits.
    pub notify: Vec<crate::config::NotifyConfig>,
}

/// Leader election among replicas (`[leader_election]`, `--leader-elect`).
#[derive(Clone)]
pub struct ElectionOptions {
    /// A client of its own, so a renewal never waits behind a reconcile's requests.
    pub client: Client,
    /// Where the Leases live.
    pub namespace: String,
    /// The Lease's name (shard mode: the prefix of the per-source Leases).
    pub name: String,
    /// This replica, as the Leases name their holders.
    pub identity: String,
    pub timing: LeaseTiming,
    pub scope: ElectionScope,
}

/// How long the Lease may take to be released at shutdown.
const RELEASE_GRACE: Duration = Duration::from_secs(2);

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
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// Runs every source until `shutdown`, then lets in-flight reconciles finish
/// (bounded) and returns. Each `reload` request ([`Reload`]) applies the
/// configuration's sources anew.
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
    let configs: Vec<crate::config::SourceConfig> =
        specs.iter().map(|s| s.config.clone()).collect();
    let notify = notify::Notifier::start(&options.notify, &configs, &metrics)?;
    let reconciler = Reconciler {
        record: Recorder {
            notify,
            events: if options.dry_run {
                Events::disabled()
            } else {
                Events::new(engine.client().clone())
            },
            status: StatusBoard::default(),
            metrics: metrics.clone(),
        },
        engine,
        renderer: options.renderer.clone(),
    };
    reconciler
        .record
        .status
        .set_tools(reconciler.renderer.tools().status());
    let names: Vec<String> = specs.iter().map(|s| s.settings.name.clone()).collect();
    let (election, leadership) = match options.election.clone() {
        Some(election) => start_election(election, &names, &reconciler.record.status, &metrics),
        None => (None, Elected::Sole),
    };
    let access = Access::new(options.listen, options.token.clone());
    let mut sources = Supervisor {
        reconciler,
        board: Arc::new(watch::Sender::new(Board::new())),
        registry: Registry::default(),
        leadership,
        dry_run: options.dry_run,
        clusters: options.clusters.clone(),
        running: BTreeMap::new(),
    };
    for spec in specs {
        sources.start(spec);
    }
    let state = ServerState {
        status: sources.reconciler.record.status.clone(),
        metrics,
        sources: sources.registry.clone(),
        access,
    };
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(server::serve(listener, state, async move {
        server_shutdown.wait().await
    }));

    let mut waiting = shutdown.clone();
    let mut reload = options.reload;
    loop {
        tokio::select! {
            _ = waiting.wait() => break,
            Some(specs) = next_reload(&mut reload) => sources.reload(specs).await,
        }
    }
    info!("shutting down: letting in-flight reconciles finish");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    sources.stop_all(deadline).await;
    // Only now that nothing writes may the Lease go to another replica.
    if let Some((stop, task)) = election {
        stop.fire();
        let _ = tokio::time::timeout(RELEASE_GRACE, task).await;
    }
    let _ = tokio::time::timeout_at(deadline + Duration::from_millis(500), server).await;
    info!("stopped");
    Ok(())
}

/// How the daemon reads its configuration again: `requests` fire on SIGHUP or a
/// change of config.toml; `load` reads and validates it and returns its sources,
/// `Ok(None)` when the file did not change, or the error (naming the key) that
/// keeps the running configuration.
pub struct Reload {
    pub requests: mpsc::Receiver<()>,
    pub load: Box<dyn FnMut() -> Result<Option<Vec<SourceSpec>>, String> + Send>,
}

/// The sources of the next reload that loads; never without a [`Reload`].
async fn next_reload(reload: &mut Option<Reload>) -> Option<Vec<SourceSpec>> {
    let Some(reload) = reload else {
        return std::future::pending().await;
    };
    loop {
        reload.requests.recv().await?;
        let span = info_span!("reload");
        let _entered = span.enter();
        match (reload.load)() {
            Ok(Some(specs)) => return Some(specs),
            Ok(None) => debug!("config.toml unchanged"),
            Err(error) => warn!(%error, "the new configuration is refused; the running one stays"),
        }
    }
}

/// Each source's view of the election.
enum Elected {
    /// No election: every source is written by this replica.
    Sole,
    /// One Lease for the daemon: every source shares the one view.
    Leader(Leadership),
    /// One Lease per source, started with the daemon: a source added by a reload
    /// has none, and waits for a restart.
    Shard(BTreeMap<String, Leadership>),
}

impl Elected {
    /// The view for `source`; `None` in shard mode for a source without a Lease.
    fn take(&mut self, source: &str) -> Option<Leadership> {
        match self {
            Elected::Sole => Some(Leadership::sole()),
            Elected::Leader(shared) => Some(shared.clone()),
            Elected::Shard(map) => map.remove(source),
        }
    }
}

/// One running source task and how to stop it.
struct Running {
    spec_key: SourceSpecKey,
    stop: shutdown::Trigger,
    task: JoinHandle<()>,
    /// Handed to the task that replaces it after a change.
    leadership: Leadership,
}

/// What a reload compares to tell a changed source from an unchanged one.
struct SourceSpecKey {
    config: crate::config::SourceConfig,
    limits: crate::manifest::Limits,
}

/// Starts, stops and replaces the source tasks.
struct Supervisor {
    reconciler: Reconciler,
    board: Arc<watch::Sender<Board>>,
    registry: Registry,
    leadership: Elected,
    dry_run: bool,
    clusters: BTreeMap<String, RemoteAccess>,
    running: BTreeMap<String, Running>,
}

impl Supervisor {
    /// Starts the task of `spec` with its own stop trigger.
    fn start(&mut self, spec: SourceSpec) {
        let name = spec.settings.name.clone();
        let Some(leadership) = self.leadership.take(&name) else {
            error!(source = %name, "a source added by a reload has no Lease in shard mode; restart the daemon to start it");
            return;
        };
        self.start_with(spec, leadership);
    }

    fn start_with(&mut self, mut spec: SourceSpec, leadership: Leadership) {
        if self.dry_run {
            spec.settings.self_heal = false;
        }
        let name = spec.settings.name.clone();
        let status = &self.reconciler.record.status;
        status.register(&name, spec.kind, &spec.location);
        let (hook_tx, hook_rx) = mpsc::channel(1);
        let (control_tx, control_rx) = mpsc::channel(8);
        let (urgent_tx, urgent_rx) = mpsc::channel(8);
        let webhook = Webhook {
            secret: spec.webhook_secret.take(),
            trigger: hook_tx,
        };
        let (stop, stopped) = shutdown::channel();
        let inputs = Inputs {
            hook: hook_rx,
            control: control_rx,
            urgent: urgent_rx,
            shutdown: stopped,
            board: self.board.clone(),
            leadership: leadership.clone(),
        };
        let mut acting = self.reconciler.clone();
        acting.engine = (acting.engine.acting_as(spec.settings.acting_as.clone()))
            .with_health_rules(spec.settings.health.clone());
        let remote = spec.cluster.as_ref().and_then(|cluster| {
            let access = self.clusters.get(cluster)?.clone();
            Some(Remote {
                name: cluster.clone(),
                access,
            })
        });
        let spec_key = SourceSpecKey {
            config: spec.config.clone(),
            limits: spec.settings.limits,
        };
        let task = SourceTask::new(acting, spec, inputs).on(remote);
        let task = tokio::spawn(task.run());
        self.registry.insert(
            &name,
            SourceHandle {
                webhook,
                control: control_tx,
                urgent: urgent_tx,
            },
        );
        let running = Running {
            spec_key,
            stop,
            task,
            leadership,
        };
        self.running.insert(name, running);
    }

    /// Applies a new configuration's sources: removed ones stop, changed ones
    /// restart, added ones start; the others (and their watches) run on.
    async fn reload(&mut self, specs: Vec<SourceSpec>) {
        let wanted: BTreeSet<String> = specs.iter().map(|s| s.settings.name.clone()).collect();
        let removed: Vec<String> = (self.running.keys())
            .filter(|name| !wanted.contains(*name))
            .cloned()
            .collect();
        for name in removed {
            info!(source = %name, "removed from the configuration: stopping");
            self.stop(&name).await;
            self.reconciler.record.status.remove(&name);
            self.board.send_modify(|board| {
                board.remove(&name);
            });
        }
        let (mut added, mut changed, mut unchanged) = (0, 0, 0);
        for spec in specs {
            let name = spec.settings.name.clone();
            match self.running.get(&name) {
                None => {
                    info!(source = %name, "added to the configuration: starting");
                    added += 1;
                    self.start(spec);
                }
                Some(running) if running.spec_key.differs(&spec) => {
                    info!(source = %name, "changed in the configuration: restarting it");
                    changed += 1;
                    if let Some(leadership) = self.stop(&name).await {
                        self.start_with(spec, leadership);
                    }
                }
                Some(_) => unchanged += 1,
            }
        }
        info!(added, changed, unchanged, "configuration reloaded");
    }

    /// Stops one source's task (bounded by the shutdown grace); its Leadership.
    async fn stop(&mut self, name: &str) -> Option<Leadership> {
        let running = self.running.remove(name)?;
        self.registry.remove(name);
        running.stop.fire();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        finish(running.task, deadline).await;
        Some(running.leadership)
    }

    /// Stops every task, letting in-flight reconciles finish until `deadline`.
    async fn stop_all(&mut self, deadline: tokio::time::Instant) {
        let running = std::mem::take(&mut self.running);
        for task in running.values() {
            task.stop.fire();
        }
        for (_, task) in running {
            finish(task.task, deadline).await;
        }
    }
}

impl SourceSpecKey {
    fn differs(&self, spec: &SourceSpec) -> bool {
        self.config != spec.config || self.limits != spec.settings.limits
    }
}

/// Waits for a stopping task until `deadline`, then aborts it.
async fn finish(mut task: JoinHandle<()>, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
        warn!("a reconcile did not finish within the shutdown grace period; stopping it");
        task.abort();
        let _ = task.await;
    }
}

/// A running election: its stop trigger and task.
type Election = (shutdown::Trigger, JoinHandle<()>);

/// Starts the election task; returns it and each source's view of it.
fn start_election(
    options: ElectionOptions,
    sources: &[String],
    status: &StatusBoard,
    metrics: &Metrics,
) -> (Option<Election>, Elected) {
    let observer = metrics.clone();
    options
        .client
        .observe_requests(Arc::new(move |_| observer.count_api_request("lease")));
    let leases = Leases::new(options.client.clone(), &options.namespace, &options.name);
    let (trigger, stop) = shutdown::channel();
    let (task, leadership) = match options.scope {
        ElectionScope::Daemon => start_leader(&options, leases, status, metrics, stop),
        ElectionScope::Source => start_shard(&options, leases, sources, status, metrics, stop),
    };
    (Some((trigger, task)), leadership)
}

/// One Lease elects the writer of every source.
fn start_leader(
    options: &ElectionOptions,
    leases: Leases,
    status: &StatusBoard,
    metrics: &Metrics,
    stop: Shutdown,
) -> (JoinHandle<()>, Elected) {
    status.set_replica(ReplicaStatus {
        identity: options.identity.clone(),
        election: ElectionScope::Daemon,
        lease: leases.describe(&options.name),
        role: Some(ReplicaRole::Follower),
        leader: None,
    });
    let (election, role) = LeaderElection::new(
        leases,
        &options.name,
        &options.identity,
        options.timing,
        status.clone(),
        metrics.clone(),
    );
    let shared = Leadership::new(role, &options.identity);
    (tokio::spawn(election.run(stop)), Elected::Leader(shared))
}

/// One Lease per source, shared out among the replicas.
fn start_shard(
    options: &ElectionOptions,
    leases: Leases,
    sources: &[String],
    status: &StatusBoard,
    metrics: &Metrics,
    stop: Shutdown,
) -> (JoinHandle<()>, Elected) {
    status.set_replica(ReplicaStatus {
        identity: options.identity.clone(),
        election: ElectionScope::Source,
        lease: leases.describe(&format!("{}-*", options.name)),
        role: None,
        leader: None,
    });
    let (shard, leadership) = Shard::new(
        leases,
        &options.name,
        &options.identity,
        options.timing,
        sources,
        metrics.clone(),
    );
    (tokio::spawn(shard.run(stop)), Elected::Shard(leadership))
}
