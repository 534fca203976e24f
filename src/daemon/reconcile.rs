//! One reconcile of one source: snapshot → manifests → engine → status, metrics and
//! events. It neither loops nor sleeps: the daemon's `scheduler` decides when
//! to call it, and what a failure leads to.

use crate::daemon::events::{EventReason, Events};
use crate::daemon::leader::Duty;
use crate::daemon::metrics::{ApplyAction, Foreign, Metrics, ReconcileResult};
use crate::daemon::scheduler::{self, Reason};
use crate::daemon::state::{Render, SourceState};
use crate::daemon::status::{
    ClusterReach, ObjectHealth, ObjectState, ObjectStatus, StatusBoard, SyncResult,
};
use crate::daemon::targeting::Selection;
use crate::engine::applyset::ApplySet;
use crate::engine::plan::{self, Action, LoadedFrom, PlanOptions, Step};
use crate::engine::{
    Adoption, DriftRules, Engine, EngineError, Outcome, RunOptions, Scope, Tenancy,
};
use crate::health::{self, Health, State};
use crate::kube::Impersonation;
use crate::kube::watch::Change;
use crate::manifest::{Limits, ManifestError, ObjectRef, Problem};
use crate::render::{RenderError, RenderSettings, Renderer};
use crate::report;
use crate::source::{Snapshot, SourceError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};
use tracing::{Instrument, info, info_span, warn};

/// How one source is converged (from its `[[source]]` table and global flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub namespace: String,
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// Create the namespace when it does not exist.
    pub create_namespace: bool,
    /// Whether objects other sources own may be taken over.
    pub adoption: Adoption,
    /// The namespaces and scopes the source may write.
    pub tenancy: Tenancy,
    /// The ServiceAccount the source acts as, if any.
    pub acting_as: Option<Impersonation>,
    /// Write (heal) or only report drift.
    pub self_heal: bool,
    /// What counts as drift, and what converge may do about it.
    pub drift: DriftRules,
    /// How its root is rendered (a kustomization, a chart), and its variables.
    pub render: RenderSettings,
    /// The largest and deepest manifest file read.
    pub limits: Limits,
    /// How long each wave and hook may take to become healthy.
    pub wave_timeout: Duration,
    /// Whether this replica converges the source now or stands by (leader election).
    pub duty: Duty,
    /// The `[[clusters]]` entry it writes to; `None`: the home cluster.
    pub cluster: Option<String>,
}

impl Settings {
    /// Whether this run writes: the source heals, and this replica holds its Lease.
    fn writes(&self) -> bool {
        self.self_heal && self.duty == Duty::Converge
    }
}

/// Why a reconcile failed. The last good state stays applied in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// The source could not be fetched (no revision to reconcile).
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A hook or a wave failed: the sync stopped there. The message has the
    /// stages as they ran and the evidence.
    #[error("{0}")]
    Sync(String),
}

impl ReconcileError {
    /// Whether the failure is of the moment (the remote, the server, the network,
    /// the disk) and worth a retry soon; otherwise it is the revision's own (a
    /// parse error, a rejection, a mass prune, an empty source, a missing ref, a
    /// refused password) and repeats until the revision or the settings change.
    /// The objects the API server refused, each with its reason (a validation
    /// error, an admission webhook, RBAC's "cannot patch resource …").
    pub(crate) fn refused(&self) -> &[Problem] {
        match self {
            ReconcileError::Engine(
                EngineError::Rejected(problems)
                | EngineError::RejectedAfterFirstStage(problems)
                | EngineError::Owned(problems),
            ) => problems,
            _ => &[],
        }
    }

    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Source(e) => e.is_transient(),
            ReconcileError::Manifest(e) => matches!(e, ManifestError::Io { .. }),
            ReconcileError::Render(e) => e.is_transient(),
            ReconcileError::Engine(e) => e.is_transient(),
            // The revision's own until shown otherwise: the next tick tries again.
            ReconcileError::Sync(_) => false,
        }
    }
}

/// Runs reconciles and reports them. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reconciler {
    pub engine: Engine,
    pub status: StatusBoard,
    pub metrics: Metrics,
    pub events: Events,
    /// Runs kustomize and helm for sources whose root is rendered.
    pub renderer: Renderer,
}

impl Reconciler {
    /// One reconcile of `settings`' source at `snapshot`: only what changed when
    /// `reason` and the changes allow, else everything. Records the result in
    /// status, metrics and (on news) Events. Success awaits the next change: the
    /// periodic tick is the scheduler's own.
    pub(crate) async fn reconcile(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        snapshot: &Snapshot,
        reason: Reason,
    ) -> Result<scheduler::Action, ReconcileError> {
        let revision = snapshot.revision.as_str();
        let span = info_span!("reconcile", source = %settings.name, revision = %short(revision));
        let started = Instant::now();
        let result = self
            .run(settings, state, snapshot, reason)
            .instrument(span)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok((outcome, scope)) => {
                state.applied_revision = Some(revision.to_string());
                self.record_success(settings, revision, outcome, seconds, scope);
                match scope {
                    Scope::Full => self.refresh_health(settings, state),
                    Scope::Targeted { .. } => {
                        for object in outcome.plan.named_desired() {
                            self.reassess(settings, state, object);
                        }
                    }
                }
            }
            Err(error) => self.record_failure(settings, revision, error, seconds),
        }
        result.map(|_| scheduler::Action::AwaitChange)
    }

    /// The run itself: its outcome and how much of the source it covered.
    async fn run(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        snapshot: &Snapshot,
        reason: Reason,
    ) -> Result<(Outcome, Scope), ReconcileError> {
        let render = Render {
            renderer: &self.renderer,
            engine: &self.engine,
            metrics: &self.metrics,
        };
        state.load(snapshot, settings, render, reason).await?;
        let Selection { manifests, scope } = state.select(reason, &settings.namespace);
        let guard = PlanOptions {
            prune: settings.prune,
            allow_mass_prune: settings.allow_mass_prune,
        };
        plan::check_not_empty(&manifests, guard, LoadedFrom::Source(snapshot.root.clone()))
            .map_err(EngineError::from)?;
        info!(%scope, objects = manifests.len(), "reconciling");
        self.metrics
            .count_reconciled_objects(&settings.name, manifests.len() as u64);
        let options = RunOptions {
            name: settings.name.clone(),
            namespace: settings.namespace.clone(),
            prune: settings.prune,
            allow_mass_prune: settings.allow_mass_prune,
            create_namespace: settings.create_namespace,
            adoption: settings.adoption,
            tenancy: settings.tenancy.clone(),
            dry_run: !settings.writes(),
            scope,
            drift: settings.drift.clone(),
            timeout: settings.wave_timeout,
            progress: None,
        };
        let mut outcome = self.engine.run(manifests, &options, state.cache()).await?;
        let applyset = ApplySet::new(&settings.name, &settings.namespace);
        // What was written is remembered even when a hook or wave failed, so that
        // the echo of those writes is not taken for drift.
        state.record_run(&self.engine, &applyset, &mut outcome, &options.scope);
        if let Some(failure) = outcome.failure() {
            let stages = report::sync_text(&outcome.sync);
            return Err(ReconcileError::Sync(format!(
                "{}\n{}",
                failure.message,
                stages.trim_end()
            )));
        }
        Ok((outcome, options.scope))
    }

    /// Re-assesses the health of every desired object from the store, after a
    /// reconcile. Costs no request (evidence aside, once per failure).
    pub(crate) fn refresh_health(&self, settings: &Settings, state: &mut SourceState) {
        let assessed: Vec<(ObjectRef, Health)> = state
            .desired
            .iter()
            .map(|object| (object.clone(), state.health_of(object)))
            .collect();
        let objects = assessed
            .iter()
            .map(|(object, health)| ObjectHealth {
                object: object.to_string(),
                health: health.clone(),
                evidence: None,
            })
            .collect();
        let mut counts = Vec::new();
        self.status.update(&settings.name, |s| {
            s.health.set_objects(objects);
            counts = health_counts(&s.health);
        });
        self.metrics.set_health(&settings.name, &counts);
        for (object, health) in assessed {
            self.explain_once(settings, state, &object, health.state);
        }
    }

    /// Re-assesses the object a reflector reported changed (a controller's status
    /// update, typically): how `/status` follows a rollout between reconciles.
    pub(crate) fn observe_health(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        change: &Change,
    ) {
        if state.desired.contains(&change.object) {
            self.reassess(settings, state, &change.object);
        }
    }

    /// Re-assesses one desired object's health from the store.
    fn reassess(&self, settings: &Settings, state: &mut SourceState, object: &ObjectRef) {
        let health = state.health_of(object);
        let health_state = health.state;
        let key = object.to_string();
        let mut counts = Vec::new();
        self.status.update(&settings.name, |s| {
            s.health.set(&key, health);
            counts = health_counts(&s.health);
        });
        self.metrics.set_health(&settings.name, &counts);
        self.explain_once(settings, state, object, health_state);
    }

    /// Gathers evidence in the background when `object` has just turned failed;
    /// forgets that it did once the object recovers, so a new failure is explained.
    fn explain_once(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        object: &ObjectRef,
        health_state: State,
    ) {
        if health_state != State::Failed {
            state.explained.remove(object);
            return;
        }
        if !state.explained.insert(object.clone()) {
            return;
        }
        let Some(live) = state.store.get_shared(object) else {
            return;
        };
        let client = self.engine.client().clone();
        let status = self.status.clone();
        let source = settings.name.clone();
        let key = object.to_string();
        info!(source = %source, object = %key, "object failed; gathering evidence");
        tokio::spawn(async move {
            let evidence = health::gather(&client, &live).await;
            status.update(&source, |s| s.health.set_evidence(&key, evidence));
        });
    }

    /// A targeted `scope`: the outcome covers only the objects the run looked at.
    fn record_success(
        &self,
        settings: &Settings,
        revision: &str,
        outcome: &Outcome,
        seconds: f64,
        scope: &Scope,
    ) {
        // Hooks are steps of the sync, not live state.
        let objects: Vec<ObjectStatus> = outcome
            .plan
            .steps
            .iter()
            .filter(|step| !step.placement.is_hook())
            .map(|step| object_status(step, outcome.applied))
            .collect();
        let now = SystemTime::now();
        let mut drifted = 0;
        self.status.update(&settings.name, |s| {
            match scope {
                Scope::Targeted { .. } => merge_objects(&mut s.objects, objects),
                Scope::Full => s.objects = objects,
            }
            drifted = s
                .objects
                .iter()
                .filter(|o| !matches!(o.state, ObjectState::InSync | ObjectState::Shared))
                .count();
            s.revision = Some(revision.to_string());
            s.attempted_revision = Some(revision.to_string());
            s.last_attempt = Some(now);
            s.last_success = Some(now);
            s.result = match drifted {
                0 => SyncResult::Synced,
                _ => SyncResult::Drifted,
            };
            s.error = None;
            s.reconciles += 1;
            s.dry_run = !settings.self_heal;
            s.waiting_for.clear();
        });
        let counts = outcome.plan.counts();
        info!(source = %settings.name, revision = %short(revision), applied = outcome.applied,
              created = counts.created, configured = counts.configured, pruned = counts.pruned,
              unchanged = counts.unchanged, drifted, seconds, "reconciled");
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Success, seconds);
        self.metrics.set_drifted(&settings.name, drifted as i64);
        self.record_reach(settings, true);
        let name = &settings.name;
        if scope.is_full() {
            self.metrics
                .set_foreign(name, Foreign::Shared, counts.shared);
        }
        self.metrics.set_foreign(name, Foreign::Conflict, 0);
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.set_last_success(&settings.name, unix);
        if outcome.applied {
            debug_assert!(settings.writes(), "a stand-by replica applied");
            for (kind, action, n) in action_counts(&outcome.plan.steps) {
                self.metrics.count_action(&settings.name, &kind, action, n);
            }
            let message = format!(
                "revision {}: {} created, {} configured, {} pruned",
                short(revision),
                counts.created,
                counts.configured,
                counts.pruned
            );
            self.events.emit(
                &settings.name,
                &settings.namespace,
                EventReason::Applied,
                &message,
            );
        }
    }

    fn record_failure(
        &self,
        settings: &Settings,
        revision: &str,
        error: &ReconcileError,
        seconds: f64,
    ) {
        warn!(source = %settings.name, revision = %short(revision), error = %error,
              "reconcile failed; the last good revision stays applied");
        let now = SystemTime::now();
        let message = error.to_string();
        let refused = error
            .refused()
            .iter()
            .filter_map(|problem| {
                Some(ObjectStatus {
                    object: problem.object.clone()?,
                    state: ObjectState::Failed,
                    diff: None,
                    reason: Some(problem.message.clone()),
                    origin: Some(problem.origin.to_string()),
                })
            })
            .collect();
        self.status.update(&settings.name, |s| {
            s.attempted_revision = Some(revision.to_string());
            s.last_attempt = Some(now);
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
            s.reconciles += 1;
            s.waiting_for.clear();
            merge_objects(&mut s.objects, refused);
        });
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Failure, seconds);
        if error.is_transient() {
            self.record_reach(settings, false);
        }
        if let ReconcileError::Engine(EngineError::Owned(conflicts)) = error {
            let name = &settings.name;
            self.metrics
                .set_foreign(name, Foreign::Conflict, conflicts.len());
        }
        if settings.duty == Duty::StandBy {
            return;
        }
        let event = format!("revision {} not applied: {message}", short(revision));
        self.events.emit(
            &settings.name,
            &settings.namespace,
            EventReason::ReconcileFailed,
            &event,
        );
    }

    /// Whether the source's cluster (a `[[clusters]]` entry) answered: in `/status`
    /// and `converge_cluster_reachable`.
    pub(crate) fn record_reach(&self, settings: &Settings, reachable: bool) {
        let Some(name) = &settings.cluster else {
            return;
        };
        self.status.update(&settings.name, |s| {
            s.cluster = Some(ClusterReach {
                name: name.clone(),
                reachable,
            });
        });
        self.metrics.set_cluster_reachable(name, reachable);
    }

    /// The source's cluster could not be reached (discovery failed): reported; its
    /// other sources' clusters are not affected.
    pub(crate) fn record_unreachable(&self, settings: &Settings, error: &str) {
        let cluster = settings.cluster.as_deref().unwrap_or("home");
        let message = format!("cluster {cluster:?} cannot be reached: {error}");
        self.status.update(&settings.name, |s| {
            s.last_attempt = Some(SystemTime::now());
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
        });
        self.record_reach(settings, false);
    }

    /// An unreachable remote or a wrong password: reported; the last good revision
    /// stays applied.
    pub(crate) fn record_fetch_failure(&self, settings: &Settings, error: &SourceError) {
        warn!(source = %settings.name, %error, "fetching the source failed; the last good revision stays applied");
        let now = SystemTime::now();
        let message = error.to_string();
        self.status.update(&settings.name, |s| {
            s.last_attempt = Some(now);
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
            s.reconciles += 1;
            s.waiting_for.clear();
        });
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Failure, 0.0);
    }

    /// A reconcile that came due waits for `dependencies` (not synced and healthy
    /// yet): `/status` says so.
    pub(crate) fn record_waiting(&self, settings: &Settings, dependencies: &[String]) {
        let mut news = false;
        self.status.update(&settings.name, |s| {
            news = s.waiting_for != dependencies;
            s.result = SyncResult::Waiting;
            s.waiting_for = dependencies.to_vec();
        });
        if news {
            info!(source = %settings.name, waiting_for = %dependencies.join(", "), "waiting for its dependencies");
        }
    }

    /// Whether every object the source applied is healthy (its dependents wait for it).
    pub(crate) fn is_healthy(&self, settings: &Settings) -> bool {
        self.status.health_state(&settings.name) == Some(State::Ready)
    }

    /// A quiet resync: nothing changed, so nothing ran.
    pub(crate) fn record_skipped(&self, settings: &Settings, seconds: f64) {
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Skipped, seconds);
    }
}

/// How an object stands after a run: applied changes are in sync; changes a
/// report-only source did not make are drift.
fn object_status(step: &Step, applied: bool) -> ObjectStatus {
    let (state, reason) = match (step.action, applied) {
        (Action::Unchanged, _) | (Action::Create | Action::Configure, true) => {
            (ObjectState::InSync, None)
        }
        (Action::Recreate, true) => (
            ObjectState::InSync,
            Some("recreated: an immutable field changed".into()),
        ),
        (Action::Recreate, false) => (
            ObjectState::Drifted,
            Some("an immutable field changed; would be recreated".into()),
        ),
        (Action::Create, false) => (ObjectState::Missing, None),
        (Action::Configure, false) => (ObjectState::Drifted, None),
        (Action::Prune, true) => (ObjectState::Pruned, None),
        (Action::Prune, false) => (
            ObjectState::Drifted,
            Some("no longer in the source; would be pruned".into()),
        ),
        (Action::KeepPruneDisabled, _) => (
            ObjectState::InSync,
            Some("no longer in the source; kept (converge.dev/prune: disabled)".into()),
        ),
        (Action::Run, _) => (
            ObjectState::InSync,
            Some("a hook: runs when a sync writes something".into()),
        ),
        (Action::Shared, _) => (
            ObjectState::Shared,
            Some(format!(
                "owned by {}, declared the same here: never written or pruned by this source",
                step.owner.as_deref().unwrap_or("another source")
            )),
        ),
        (Action::Completed, _) => (
            ObjectState::InSync,
            Some("a run-once Job: completed, and deleted since; runs again when its manifest changes".into()),
        ),
    };
    let diff = (state != ObjectState::InSync)
        .then(|| step.diff.as_ref().map(|d| d.unified.clone()))
        .flatten();
    ObjectStatus {
        object: step.object.to_string(),
        state,
        diff,
        reason,
        origin: step.origin().map(ToString::to_string),
    }
}

/// Replaces the statuses of the objects a targeted run looked at.
fn merge_objects(objects: &mut Vec<ObjectStatus>, updates: Vec<ObjectStatus>) {
    let mut updates: BTreeMap<String, ObjectStatus> =
        updates.into_iter().map(|o| (o.object.clone(), o)).collect();
    for object in objects.iter_mut() {
        if let Some(update) = updates.remove(&object.object) {
            *object = update;
        }
    }
    objects.extend(updates.into_values());
}

/// Writes by (kind, action) for the actions metric.
fn action_counts(steps: &[Step]) -> Vec<(String, ApplyAction, u64)> {
    let mut counts: BTreeMap<(String, ApplyAction), u64> = BTreeMap::new();
    for step in steps {
        let action = match step.action {
            Action::Create => ApplyAction::Create,
            Action::Configure => ApplyAction::Configure,
            Action::Recreate => ApplyAction::Recreate,
            Action::Prune => ApplyAction::Prune,
            Action::Unchanged
            | Action::KeepPruneDisabled
            | Action::Run
            | Action::Completed
            | Action::Shared => {
                continue;
            }
        };
        *counts
            .entry((step.object.kind.clone(), action))
            .or_default() += 1;
    }
    counts.into_iter().map(|((k, a), n)| (k, a, n)).collect()
}

/// Objects by health state, for the metrics.
fn health_counts(health: &crate::daemon::status::SourceHealth) -> Vec<(State, usize)> {
    vec![
        (State::Ready, health.ready),
        (State::Progressing, health.progressing),
        (State::Failed, health.failed),
        (State::Missing, health.missing),
    ]
}

/// Git shas are long; logs and events show the first 12 characters.
pub(crate) fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::diff::ObjectDiff;

    fn step(action: Action) -> Step {
        let object = ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        };
        Step {
            diff: Some(ObjectDiff {
                object: object.clone(),
                unified: "-a\n+b\n".into(),
                changed_paths: vec!["spec.replicas".into()],
            }),
            object,
            action,
            manifest: None,
            live_uid: None,
            takeover: None,
            placement: Default::default(),
            owner: None,
        }
    }

    #[test]
    fn report_only_changes_are_drift_with_their_diff() {
        let drifted = object_status(&step(Action::Configure), false);
        assert_eq!(drifted.state, ObjectState::Drifted);
        assert_eq!(drifted.diff.as_deref(), Some("-a\n+b\n"));
        assert_eq!(
            object_status(&step(Action::Create), false).state,
            ObjectState::Missing
        );
        assert_eq!(
            object_status(&step(Action::Prune), false).state,
            ObjectState::Drifted
        );
    }

    #[test]
    fn applied_changes_are_in_sync_without_diffs() {
        for action in [Action::Create, Action::Configure, Action::Unchanged] {
            let status = object_status(&step(action), true);
            assert_eq!(status.state, ObjectState::InSync, "{action:?}");
            assert!(status.diff.is_none());
        }
        assert_eq!(
            object_status(&step(Action::Prune), true).state,
            ObjectState::Pruned
        );
    }

    #[test]
    fn actions_are_counted_by_kind() {
        let steps = [
            step(Action::Create),
            step(Action::Create),
            step(Action::Unchanged),
            step(Action::Prune),
        ];
        assert_eq!(
            action_counts(&steps),
            [
                ("Deployment".to_string(), ApplyAction::Create, 2),
                ("Deployment".to_string(), ApplyAction::Prune, 1)
            ]
        );
    }

    #[test]
    fn revisions_are_shortened_for_people() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("dir:abc"), "dir:abc");
    }
}
