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

mod error;
pub(crate) mod events;
mod leader;
mod lease;
mod metrics;
mod needs;
pub(crate) mod reconcile;
mod record;
mod scheduler;
mod server;
mod settings;
mod shard;
pub mod shutdown;
mod source_task;
mod state;
mod status;
mod targeting;

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
pub use metrics::{ApplyAction, Metrics, ReconcileResult};
pub use server::{ServerState, Webhook, fetch_status, serve};
pub use status::{ObjectRow, SourceRow, object_rows, objects_table, source_rows, sources_table};
pub use status::{
    ObjectState, ObjectStatus, SourceKind, SourceStatus, StatusBoard, SyncResult, status_text,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long an in-flight reconcile may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Clone)]
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
        record: Recorder {
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
    let (election, mut leadership) = match options.election {
        Some(election) => start_election(election, &names, &reconciler.record.status, &metrics),
        None => (None, BTreeMap::new()),
    };
    let mut hooks = HashMap::new();
    let mut tasks = Vec::new();
    let board = Arc::new(watch::Sender::new(Board::new()));
    for mut spec in specs {
        if options.dry_run {
            spec.settings.self_heal = false;
        }
        reconciler
            .record
            .status
            .register(&spec.settings.name, spec.kind, &spec.location);
        let (hook_tx, hook_rx) = mpsc::channel(1);
        hooks.insert(
            spec.settings.name.clone(),
            Webhook {
                secret: spec.webhook_secret.take(),
                trigger: hook_tx,
            },
        );
        let inputs = Inputs {
            hook: hook_rx,
            shutdown: shutdown.clone(),
            board: board.clone(),
            leadership: leadership
                .remove(&spec.settings.name)
                .unwrap_or_else(Leadership::sole),
        };
        let mut acting = reconciler.clone();
        acting.engine = (acting.engine.acting_as(spec.settings.acting_as.clone()))
            .with_health_rules(spec.settings.health.clone());
        let remote = spec.cluster.as_ref().and_then(|name| {
            let access = options.clusters.get(name)?.clone();
            Some(Remote {
                name: name.clone(),
                access,
            })
        });
        let task = SourceTask::new(acting, spec, inputs).on(remote);
        tasks.push(tokio::spawn(task.run()));
    }
    let state = ServerState {
        status: reconciler.record.status.clone(),
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
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!("a reconcile did not finish within the shutdown grace period; stopping it");
            task.abort();
            let _ = task.await;
        }
    }
    // Only now that nothing writes may the Lease go to another replica.
    if let Some((stop, task)) = election {
        stop.fire();
        let _ = tokio::time::timeout(RELEASE_GRACE, task).await;
    }
    let _ = tokio::time::timeout_at(deadline + Duration::from_millis(500), server).await;
    info!("stopped");
    Ok(())
}

/// A running election: its stop trigger and task.
type Running = (shutdown::Trigger, JoinHandle<()>);

/// Starts the election task; returns it and each source's view of it.
fn start_election(
    options: ElectionOptions,
    sources: &[String],
    status: &StatusBoard,
    metrics: &Metrics,
) -> (Option<Running>, BTreeMap<String, Leadership>) {
    let observer = metrics.clone();
    options
        .client
        .observe_requests(Arc::new(move |_| observer.count_api_request("lease")));
    let leases = Leases::new(options.client.clone(), &options.namespace, &options.name);
    let (trigger, stop) = shutdown::channel();
    let (task, leadership) = match options.scope {
        ElectionScope::Daemon => start_leader(&options, leases, sources, status, metrics, stop),
        ElectionScope::Source => start_shard(&options, leases, sources, status, metrics, stop),
    };
    (Some((trigger, task)), leadership)
}

/// One Lease elects the writer of every source.
fn start_leader(
    options: &ElectionOptions,
    leases: Leases,
    sources: &[String],
    status: &StatusBoard,
    metrics: &Metrics,
    stop: Shutdown,
) -> (JoinHandle<()>, BTreeMap<String, Leadership>) {
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
    let leadership = sources
        .iter()
        .map(|source| (source.clone(), shared.clone()))
        .collect();
    (tokio::spawn(election.run(stop)), leadership)
}

/// One Lease per source, shared out among the replicas.
fn start_shard(
    options: &ElectionOptions,
    leases: Leases,
    sources: &[String],
    status: &StatusBoard,
    metrics: &Metrics,
    stop: Shutdown,
) -> (JoinHandle<()>, BTreeMap<String, Leadership>) {
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
    (tokio::spawn(shard.run(stop)), leadership)
}
