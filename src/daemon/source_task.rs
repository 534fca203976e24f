//! The loop of one source: wait for what the [`Scheduler`] says is due, fetch,
//! reconcile, hand the result back. All of a source's I/O happens here; every
//! decision (when, why, how much, what next) is the scheduler's.
//!
//! Inputs: the directory watcher (a Git source has none: the scheduler's tick
//! polls it), the webhook, the control API (suspend, resume, reconcile now), the
//! reflectors' changes (drift), and shutdown.

use crate::daemon::control::{Command, ControlError, Reply, SuspendRequest};
use crate::daemon::error::ReconcileError;
use crate::daemon::leader::{Duty, Leadership};
use crate::daemon::needs::ObjectNeeds;
use crate::daemon::reconcile::Reconciler;
use crate::daemon::relist::Relister;
use crate::daemon::scheduler::{self, Action, Board, Decision, Found, Readiness, Reason};
use crate::daemon::scheduler::{Mode, Scheduler, Timing};
use crate::daemon::settings::Settings;
use crate::daemon::settings::SourceSpec;
use crate::daemon::shutdown::Shutdown;
use crate::daemon::state::SourceState;
use crate::daemon::status::{SourceKind, SourceStatus, Suspension};
use crate::daemon::suspend;
use crate::engine::Engine;
use crate::engine::applyset::ApplySet;
use crate::kube::backoff::Backoff;
use crate::kube::watch::Change;
use crate::kube::{ApiResource, Client, ClientOptions, ClusterConfig};
use crate::source::short_revision;
use crate::source::{Snapshot, SourceError};
use base64::Engine as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

/// The channels a source task listens on.
pub(super) struct Inputs {
    /// `POST /hooks/git/<source>`.
    pub hook: mpsc::Receiver<()>,
    /// The control API: resume, reconcile now.
    pub control: mpsc::Receiver<Command>,
    /// The control API's suspend, apart: it also stops a reconcile in flight.
    pub urgent: mpsc::Receiver<Command>,
    pub shutdown: Shutdown,
    /// Every source's readiness: this one's is published there, and its
    /// dependencies' are read from it.
    pub board: Arc<watch::Sender<Board>>,
    /// Whether this replica writes the source (leader election).
    pub leadership: Leadership,
}

/// A `[[clusters]]` entry a source writes to, not connected yet.
pub(super) struct Remote {
    pub name: String,
    pub access: RemoteAccess,
}

/// How to reach another cluster.
#[derive(Clone)]
pub enum RemoteAccess {
    /// With a client built from its kubeconfig file.
    Client(Client),
    /// With the kubeconfig in a Secret on the home cluster, read at each attempt
    /// to connect (so a rotated one is picked up).
    Secret {
        namespace: String,
        name: String,
        context: Option<String>,
        options: ClientOptions,
    },
}

/// The Secret's entries that may hold a kubeconfig, Flux's first.
const KUBECONFIG_KEYS: [&str; 3] = ["value", "value.yaml", "kubeconfig"];

impl RemoteAccess {
    /// The client; for a Secret, read with converge's own client on the home
    /// cluster. Errors never quote the Secret's content.
    async fn client(&self, home: &Client) -> Result<Client, String> {
        let (namespace, name, context, options) = match self {
            RemoteAccess::Client(client) => return Ok(client.clone()),
            RemoteAccess::Secret {
                namespace,
                name,
                context,
                options,
            } => (namespace, name, context, options),
        };
        let origin = format!("Secret {namespace}/{name}");
        let path = ApiResource::secrets().path(Some(namespace), Some(name));
        let secret = home
            .get(&path)
            .await
            .map_err(|e| format!("{origin}: {e}"))?;
        let encoded = KUBECONFIG_KEYS
            .iter()
            .find_map(|key| secret.pointer(&format!("/data/{key}"))?.as_str())
            .ok_or_else(|| format!("{origin} has no {KUBECONFIG_KEYS:?} entry"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| format!("{origin}: the kubeconfig entry is not base64"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{origin}: the kubeconfig is not UTF-8 text"))?;
        let config = ClusterConfig::from_kubeconfig_text(&text, &origin, context.as_deref())
            .map_err(|e| e.to_string())?;
        Client::with_options(config, options.clone()).map_err(|e| e.to_string())
    }
}

pub(super) struct SourceTask {
    reconciler: Reconciler,
    /// The other cluster to connect to before the first reconcile (discovery).
    remote: Option<Remote>,
    spec: SourceSpec,
    state: SourceState,
    scheduler: Scheduler,
    inputs: Inputs,
    /// The directory watcher's changes.
    source_changes: mpsc::Receiver<String>,
    source_changes_tx: mpsc::Sender<String>,
    /// The reflectors' changes.
    drift: mpsc::UnboundedReceiver<Change>,
    /// The last snapshot fetched: drift is healed from it without fetching again.
    last_snapshot: Option<Snapshot>,
    /// Changes of the readiness board, when the source has dependencies.
    dependencies: Option<watch::Receiver<Board>>,
    /// The objects it waits for (`depends_on = [{ object = … }]`), watched once
    /// the source's cluster is connected.
    needs: Option<ObjectNeeds>,
    /// Whether a due reconcile is held for its dependencies (then `/status` says
    /// what it waits for, and follows each change of why).
    held: bool,
    /// Whether the last reconcile succeeded (its dependents need that).
    last_ok: bool,
    /// `converge reconcile` calls waiting for the next reconcile to end.
    waiters: Vec<Reply<SourceStatus>>,
    /// Whether the suspension on the ApplySet parent has been read.
    suspension: Recorded,
    /// The periodic relist that checks the watch cache (`relist_every`).
    relister: Relister,
}

/// How a reconcile in flight ended.
enum Ended {
    Finished(Result<Action, ReconcileError>),
    /// This replica stopped holding the Lease.
    Demoted,
    /// A suspend arrived; it is handled once the reconcile is dropped.
    Interrupted(Command),
}

/// Whether a source task knows if its source is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Not read yet (or the read failed): read before the next reconcile.
    Unread,
    Read,
}

/// An engine on another cluster: its client, then discovery.
async fn connect(access: &RemoteAccess, home: &Client) -> Result<Engine, String> {
    let client = access.client(home).await?;
    Engine::connect(client).await.map_err(|e| e.to_string())
}

impl SourceTask {
    pub(super) fn new(reconciler: Reconciler, spec: SourceSpec, inputs: Inputs) -> Self {
        let (changes_tx, drift) = mpsc::unbounded_channel();
        let (source_changes_tx, source_changes) = mpsc::channel(1);
        let timing = Timing {
            interval: spec.interval,
            full_resync_every: spec.full_resync_every,
        };
        let state = SourceState::new(changes_tx, spec.settings.limits);
        let dependencies = (!spec.depends_on.is_empty()).then(|| inputs.board.subscribe());
        let spec_relist_every = spec.relist_every;
        SourceTask {
            reconciler,
            remote: None,
            spec,
            state,
            scheduler: Scheduler::new(timing, Instant::now()),
            inputs,
            source_changes,
            source_changes_tx,
            drift,
            last_snapshot: None,
            dependencies,
            needs: None,
            held: false,
            last_ok: false,
            waiters: Vec::new(),
            suspension: Recorded::Unread,
            relister: Relister::new(spec_relist_every, Instant::now()),
        }
    }

    /// The task for a source whose objects go to `remote` (`None`: home).
    pub(super) fn on(mut self, remote: Option<Remote>) -> Self {
        self.remote = remote;
        self
    }

    pub(super) async fn run(mut self) {
        self.record_owner();
        if let Some(remote) = self.remote.take() {
            if !self.connect(remote).await {
                return;
            }
        }
        if !self.spec.depends_on_objects.is_empty() {
            let engine = &self.reconciler.engine;
            let namespace = &self.spec.settings.namespace;
            self.needs = Some(ObjectNeeds::start(
                engine,
                &self.spec.depends_on_objects,
                namespace,
            ));
        }
        // Watch before the first fetch so that no change falls in between.
        let _watch = match self.spec.source.watch(self.source_changes_tx.clone()) {
            Ok(handle) => Some(handle),
            Err(e) => {
                warn!(source = %self.spec.settings.name, error = %e, "cannot watch the source; relying on resync");
                None
            }
        };
        while self.wait().await {
            let Some(reason) = self.scheduler.due(Instant::now()) else {
                continue;
            };
            let waiting = self.waiting_for();
            self.held = !waiting.is_empty();
            if waiting.is_empty() {
                self.attempt(reason).await;
                self.publish();
            } else {
                self.scheduler.hold(reason);
                self.reconciler
                    .record
                    .waiting(&self.spec.settings, &waiting);
            }
            self.answer_waiters();
        }
    }

    /// Answers the `converge reconcile` calls with the status after the reconcile
    /// (or, held for dependencies, with what it waits for).
    fn answer_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let status = self
            .reconciler
            .record
            .status
            .source(&self.spec.settings.name);
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(status.clone().ok_or(ControlError::Gone));
        }
    }

    /// The source's ApplySet parent, where its suspension is kept.
    fn applyset(&self) -> ApplySet {
        ApplySet::new(&self.spec.settings.name, &self.spec.settings.namespace)
    }

    /// Reads the suspension from the ApplySet parent (at start, and when this
    /// replica becomes the writer: the last one may have suspended the source).
    /// A failed read is retried before the next reconcile.
    async fn read_suspension(&mut self) {
        let client = self.reconciler.engine.reader().clone();
        let name = self.spec.settings.name.clone();
        match suspend::read(&client, &self.applyset()).await {
            Ok(suspension) => {
                self.suspension = Recorded::Read;
                if let Some(s) = &suspension {
                    info!(source = %name, by = %s.by, reason = s.reason.as_deref().unwrap_or(""), "suspended: reconciles are report-only");
                }
                self.set_suspension(suspension);
            }
            Err(error) => {
                self.suspension = Recorded::Unread;
                warn!(source = %name, %error, "cannot read whether the source is suspended; reading again before the next reconcile");
            }
        }
    }

    /// Sets the scheduler's mode and `/status` to `suspension`.
    fn set_suspension(&mut self, suspension: Option<Suspension>) {
        match suspension {
            Some(_) => self.scheduler.suspend(),
            None => self.scheduler.resume(Instant::now()),
        }
        self.reconciler
            .record
            .status
            .update(&self.spec.settings.name, |s| s.suspended = suspension);
    }

    /// A request of the control API. Only the replica that writes the source acts.
    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Suspend(request, reply) => {
                let answer = self.suspend(request).await;
                let _ = reply.send(answer);
            }
            Command::Resume(reply) => {
                let answer = self.resume().await;
                let _ = reply.send(answer);
            }
            Command::Reconcile(reply) => match self.may_reconcile() {
                Ok(()) => {
                    info!(source = %self.spec.settings.name, "reconcile requested");
                    self.scheduler.on_event(Reason::Requested, Instant::now());
                    self.waiters.push(reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
        }
    }

    /// This replica writes the source, or the error naming the one that does.
    fn must_lead(&self) -> Result<(), ControlError> {
        match self.inputs.leadership.duty() {
            Duty::StandBy => Err(ControlError::NotLeader {
                name: self.spec.settings.name.clone(),
                leader: self.inputs.leadership.owner(),
            }),
            Duty::Converge | Duty::Suspended => Ok(()),
        }
    }

    fn may_reconcile(&self) -> Result<(), ControlError> {
        self.must_lead()?;
        let status = self
            .reconciler
            .record
            .status
            .source(&self.spec.settings.name);
        match (self.scheduler.mode(), status.and_then(|s| s.suspended)) {
            (Mode::Suspended, Some(suspension)) => Err(ControlError::Suspended {
                name: self.spec.settings.name.clone(),
                suspension,
            }),
            _ => Ok(()),
        }
    }

    async fn suspend(&mut self, request: SuspendRequest) -> Result<Suspension, ControlError> {
        self.must_lead()?;
        let suspension = Suspension {
            by: request.by,
            at: Some(SystemTime::now()),
            reason: request.reason,
        };
        self.persist(Some(&suspension)).await?;
        info!(source = %self.spec.settings.name, by = %suspension.by, reason = suspension.reason.as_deref().unwrap_or(""), "suspended: reconciles are report-only");
        self.set_suspension(Some(suspension.clone()));
        Ok(suspension)
    }

    async fn resume(&mut self) -> Result<SourceStatus, ControlError> {
        self.must_lead()?;
        self.persist(None).await?;
        info!(source = %self.spec.settings.name, "resumed: converging at once");
        self.set_suspension(None);
        let status = self
            .reconciler
            .record
            .status
            .source(&self.spec.settings.name);
        status.ok_or(ControlError::Gone)
    }

    /// Writes the suspension (or its absence) on the ApplySet parent.
    async fn persist(&self, suspension: Option<&Suspension>) -> Result<(), ControlError> {
        let client = self.reconciler.engine.reader().clone();
        suspend::write(&client, &self.applyset(), suspension)
            .await
            .map_err(|e| ControlError::Persist {
                name: self.spec.settings.name.clone(),
                detail: e.to_string(),
            })
    }

    /// Connects to the source's cluster (discovery), retrying with backoff while it
    /// cannot be reached and saying so in `/status`; `false` on shutdown. A cluster
    /// that is down keeps only its own sources waiting.
    async fn connect(&mut self, remote: Remote) -> bool {
        let mut delays = Backoff::WATCH.delays();
        loop {
            let home = self.reconciler.engine.reader().clone();
            let attempt = tokio::select! {
                _ = self.inputs.shutdown.wait() => return false,
                attempt = connect(&remote.access, &home) => attempt,
            };
            let settings = &self.spec.settings;
            match attempt {
                Ok(engine) => {
                    info!(source = %settings.name, cluster = %remote.name, "connected");
                    // Its requests count in the metrics; its Events go where its parent is.
                    let metrics = self.reconciler.record.metrics.clone();
                    let observer = move |verb| metrics.count_api_request(verb);
                    engine.reader().observe_requests(Arc::new(observer));
                    self.reconciler.record.events =
                        self.reconciler.record.events.on(engine.reader().clone());
                    self.reconciler.engine = (engine.acting_as(settings.acting_as.clone()))
                        .with_health_rules(settings.health.clone());
                    self.reconciler.record.reach(settings, true);
                    return true;
                }
                Err(error) => {
                    warn!(source = %settings.name, cluster = %remote.name, %error, "cannot reach the cluster; retrying");
                    self.reconciler.record.unreachable(settings, &error);
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(20));
            tokio::select! {
                _ = self.inputs.shutdown.wait() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The dependencies (`depends_on`) that are not synced and healthy yet: the
    /// sources by name, then the objects with why.
    fn waiting_for(&self) -> Vec<String> {
        let mut waiting = match &self.dependencies {
            Some(board) => scheduler::waiting_for(&self.spec.depends_on, &board.borrow()),
            None => Vec::new(),
        };
        if let Some(needs) = &self.needs {
            waiting.extend(needs.waiting_for());
        }
        waiting
    }

    /// A dependency changed: run what was held once none is left; otherwise say
    /// what is still awaited, and why, while a reconcile is held.
    fn dependencies_changed(&mut self) {
        let waiting = self.waiting_for();
        if waiting.is_empty() {
            self.scheduler.release(Instant::now());
        } else if self.held {
            self.reconciler
                .record
                .waiting(&self.spec.settings, &waiting);
        }
    }

    /// Publishes this source's readiness for its dependents (only changes wake them).
    fn publish(&self) {
        let applied = self.state.applied_revision.as_deref();
        let fetched = self.last_snapshot.as_ref().map(|s| s.revision.as_str());
        let readiness = Readiness {
            synced: self.last_ok && applied.is_some() && applied == fetched,
            healthy: self.reconciler.record.is_healthy(&self.spec.settings),
        };
        let name = &self.spec.settings.name;
        self.inputs
            .board
            .send_if_modified(|board| board.insert(name.clone(), readiness) != Some(readiness));
    }

    /// Waits for an input or the scheduler's next deadline and hands events to the
    /// scheduler; `false` on shutdown.
    async fn wait(&mut self) -> bool {
        let wake = self.scheduler.next_wake();
        tokio::select! {
            biased;
            _ = self.inputs.shutdown.wait() => return false,
            duty = self.inputs.leadership.changed() => self.on_duty(duty).await,
            Some(()) = self.inputs.hook.recv() => self.scheduler.on_event(Reason::Changed, Instant::now()),
            Some(command) = self.inputs.urgent.recv() => self.on_command(command).await,
            Some(command) = self.inputs.control.recv() => self.on_command(command).await,
            Some(_) = self.source_changes.recv() => self.scheduler.on_event(Reason::Changed, Instant::now()),
            Some(change) = self.drift.recv() => {
                if self.take_change(&change) {
                    self.scheduler.on_event(Reason::Drift, Instant::now());
                }
                self.publish();
            }
            true = board_changed(&mut self.dependencies) => self.dependencies_changed(),
            true = needs_changed(&mut self.needs) => self.dependencies_changed(),
            _ = sleep_until(self.relister.due()) => self.relist(),
            _ = sleep_until(wake) => {}
        }
        true
    }

    /// Starts the periodic relist of the watched kinds (in a task of its own: its
    /// repairs arrive as drift).
    fn relist(&mut self) {
        let job = self.state.relist_job(
            &self.spec.settings.name,
            self.reconciler.engine.reader(),
            &self.reconciler.record.metrics,
        );
        self.relister.start(job, Instant::now());
    }

    /// This replica started or stopped writing the source. A new leader reconciles
    /// everything at once: its warm state knows what the old one left undone.
    async fn on_duty(&mut self, duty: Duty) {
        self.record_owner();
        if duty == Duty::Converge {
            self.read_suspension().await;
            self.scheduler.on_event(Reason::Start, Instant::now());
        }
    }

    /// Records who writes the source; the spec's `duty` follows, so what is
    /// recorded between reconciles (health, waits) knows whether this replica
    /// tells people about it.
    fn record_owner(&mut self) {
        self.spec.settings.duty = self.inputs.leadership.duty();
        let owner = self.inputs.leadership.owner();
        self.reconciler
            .record
            .status
            .update(&self.spec.settings.name, |s| s.owner = owner);
    }

    /// Records a reflector's change (health, memo); whether it is drift. Every
    /// change is taken: a status-only update must refresh the memo, or the next
    /// reconcile would dry-run the object again.
    fn take_change(&mut self, change: &Change) -> bool {
        self.reconciler
            .observe_health(&self.spec.settings, &mut self.state, change);
        let drift = self.state.is_drift(change);
        if drift {
            info!(source = %self.spec.settings.name, object = %change.object, "live object changed");
        }
        drift
    }

    /// One attempt, then the memory it freed handed back: a quiet resync, which
    /// reads and hashes every file, churns as much as a small reconcile, and the
    /// idle daemon kept that (and the reflectors' first lists) until the next
    /// reconcile, that is, for as long as nothing changes.
    async fn attempt(&mut self, reason: Reason) {
        // A follower reads it before each reconcile: the leader may have suspended
        // or resumed the source meanwhile, and the follower's /status should say so.
        let standing_by = self.inputs.leadership.duty() == Duty::StandBy;
        if self.suspension == Recorded::Unread || standing_by {
            self.read_suspension().await;
        }
        self.fetch_and_reconcile(reason).await;
        release_free_memory();
    }

    /// Fetches for `reason`, lets the scheduler decide, reconciles, and hands the
    /// result back to the scheduler.
    async fn fetch_and_reconcile(&mut self, reason: Reason) {
        let started = Instant::now();
        let snapshot = match self.snapshot(reason).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                self.reconciler
                    .record
                    .fetch_failure(&self.spec.settings, &error);
                return self.finished(reason, Err(error.into()), started);
            }
        };
        let applied = self.state.applied_revision.as_deref() == Some(snapshot.revision.as_str());
        // Back at the last good revision after a failed one: reconcile it, so that
        // the failure is not reported for a revision no longer there.
        let found = if applied && self.last_ok && !self.state.has_pending_drift() {
            Found::Nothing
        } else {
            Found::Changes
        };
        let reason = match self.scheduler.decide(reason, found) {
            Decision::Nothing => return,
            Decision::Quiet => {
                let seconds = started.elapsed().as_secs_f64();
                return self.reconciler.record.skipped(&self.spec.settings, seconds);
            }
            Decision::Reconcile(reason) => reason,
        };
        let settings = Settings {
            duty: self.scheduler.duty(self.inputs.leadership.duty()),
            ..self.spec.settings.clone()
        };
        info!(source = %settings.name, revision = %short_revision(&snapshot.revision), ?reason, duty = ?settings.duty, "reconciling");
        let mut leadership = self.inputs.leadership.clone();
        let reconcile = self
            .reconciler
            .reconcile(&settings, &mut self.state, &snapshot, reason);
        // Fencing: a leader whose term ends mid-reconcile stops at once; so does a
        // source suspended mid-reconcile (a wave may wait minutes for health, and a
        // person suspending during an incident wants the writing to stop now).
        let ended = match settings.duty {
            Duty::Converge => tokio::select! {
                result = reconcile => Ended::Finished(result),
                () = leadership.demoted() => Ended::Demoted,
                Some(command) = self.inputs.urgent.recv() => Ended::Interrupted(command),
            },
            Duty::StandBy | Duty::Suspended => Ended::Finished(reconcile.await),
        };
        match ended {
            Ended::Finished(result) => self.finished(reason, result, started),
            Ended::Demoted => {
                warn!(source = %settings.name, "no longer the leader: the reconcile stopped before it finished");
                self.scheduler.on_event(Reason::Start, Instant::now());
            }
            Ended::Interrupted(command) => {
                warn!(source = %settings.name, "suspended: the reconcile stopped before it finished");
                self.scheduler.on_event(Reason::Start, Instant::now());
                self.on_command(command).await;
            }
        }
    }

    /// The snapshot to reconcile for `reason`: drift is healed from the last one,
    /// everything else fetches.
    async fn snapshot(&mut self, reason: Reason) -> Result<Snapshot, SourceError> {
        if let (Reason::Drift, Some(last)) = (reason, &self.last_snapshot) {
            return Ok(last.clone());
        }
        let started = Instant::now();
        let result = self.spec.source.fetch().await;
        if self.spec.kind == SourceKind::Git {
            let seconds = started.elapsed().as_secs_f64();
            self.reconciler.record.metrics.observe_git_fetch(
                &self.spec.settings.name,
                seconds,
                result.is_ok(),
            );
        }
        if let Ok(snapshot) = &result {
            self.last_snapshot = Some(snapshot.clone());
        }
        result
    }

    /// Hands the result to the scheduler and says what the error policy made of a
    /// failure (the failure itself was reported by the reconciler).
    fn finished(
        &mut self,
        reason: Reason,
        result: Result<Action, ReconcileError>,
        started: Instant,
    ) {
        let now = Instant::now();
        let action = self
            .scheduler
            .finished(reason, result.as_ref().copied(), now - started, now);
        self.last_ok = result.is_ok();
        if result.is_err() {
            let name = &self.spec.settings.name;
            match action {
                Action::Requeue(delay) => {
                    info!(source = %name, ?delay, "a transient failure; retrying")
                }
                Action::AwaitChange => {
                    info!(source = %name, "the revision's own error; waiting for the next revision or resync")
                }
            }
        }
    }
}

/// Whether the readiness board changed; never, for a source without dependencies.
async fn board_changed(board: &mut Option<watch::Receiver<Board>>) -> bool {
    match board {
        Some(board) => board.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Whether an object dependency's verdict changed; never, for a source without.
async fn needs_changed(needs: &mut Option<ObjectNeeds>) -> bool {
    match needs {
        Some(needs) => needs.changed().await,
        None => std::future::pending().await,
    }
}

/// Hands memory freed by an attempt back to the OS. glibc's malloc keeps freed
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
