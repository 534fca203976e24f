//! How reconciles are written down: the source's `/status`, the metrics and, on
//! news, Kubernetes Events and notifications. Pure bookkeeping: it decides nothing
//! and sends no request but the Events; notifications are handed to the
//! [`Notifier`]'s queues, which never wait.

use crate::daemon::error::ReconcileError;
use crate::daemon::events::{EventReason, Events};
use crate::daemon::leader::Duty;
use crate::daemon::metrics::{ApplyAction, Foreign, Metrics, ReconcileResult};
use crate::daemon::notify::{Notifier, Observation};
use crate::daemon::settings::Settings;
use crate::daemon::status::{
    ClusterReach, ObjectHealth, ObjectState, ObjectStatus, SourceHealth, StatusBoard, SyncCounts,
    SyncRecord, SyncResult, Written, push_history,
};
use crate::engine::plan::{Step, StepAction};
use crate::engine::{EngineError, Outcome, Scope, SyncLog};
use crate::health::{Health, State};
use crate::manifest::ObjectRef;
use crate::source::{SourceError, short_revision};
use std::collections::BTreeMap;
use std::time::SystemTime;
use tracing::{info, warn};

/// Where the daemon records what its sources did. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub status: StatusBoard,
    pub metrics: Metrics,
    pub events: Events,
    /// `[[notify]]` targets; without any, a no-op.
    pub notify: Notifier,
}

impl Recorder {
    /// A targeted `scope`: the outcome covers only the objects the run looked at.
    pub(crate) fn success(
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
        let mut drifted_objects = Vec::new();
        let notify = self.notify.wants(&settings.name);
        let counts = outcome.plan.counts();
        let last_sync = SyncCounts {
            written: if outcome.applied {
                Written::Applied
            } else {
                Written::ReportOnly
            },
            created: counts.created,
            configured: counts.configured + counts.recreated,
            pruned: counts.pruned,
            unchanged: counts.unchanged,
        };
        self.status.update(&settings.name, |s| {
            s.last_sync = Some(last_sync.clone());
            match scope {
                Scope::Targeted { .. } => merge_objects(&mut s.objects, objects),
                Scope::Full => s.objects = objects,
            }
            drifted = drift_count(&s.objects);
            if notify {
                drifted_objects = drifted_names(&s.objects);
            }
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
            let record = SyncRecord {
                revision: revision.to_string(),
                at: Some(now),
                result: s.result,
                counts: Some(last_sync),
                error: None,
                stages: stages_run(&outcome.sync),
                times: 1,
            };
            push_history(&mut s.history, record);
        });
        info!(source = %settings.name, revision = %short_revision(revision), applied = outcome.applied,
              created = counts.created, configured = counts.configured, pruned = counts.pruned,
              unchanged = counts.unchanged, drifted, seconds, "reconciled");
        if notify {
            let observation = Observation::Succeeded {
                revision,
                applied: outcome.applied,
                written: written(&outcome.plan.steps, outcome.applied),
                drifted: drifted_objects,
            };
            self.notify.observe(settings, observation);
        }
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Success, seconds);
        self.metrics.set_drifted(&settings.name, drifted as i64);
        self.reach(settings, true);
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
                short_revision(revision),
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

    pub(crate) fn failure(
        &self,
        settings: &Settings,
        revision: &str,
        error: &ReconcileError,
        seconds: f64,
    ) {
        warn!(source = %settings.name, revision = %short_revision(revision), error = %error,
              "reconcile failed; the last good revision stays applied");
        let now = SystemTime::now();
        let message = error.to_string();
        let refused: Vec<ObjectStatus> = error
            .refused()
            .iter()
            .filter_map(|problem| {
                Some(ObjectStatus {
                    object: problem.object.clone()?,
                    state: ObjectState::Failed,
                    diff: None,
                    reason: Some(problem.message.clone()),
                    origin: Some(problem.origin.to_string()),
                    wave: 0,
                })
            })
            .collect();
        self.status.update(&settings.name, |s| {
            s.attempted_revision = Some(revision.to_string());
            s.last_attempt = Some(now);
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
            // Nothing of the last success's counts was written by this attempt.
            s.last_sync = None;
            s.reconciles += 1;
            s.waiting_for.clear();
            merge_objects(&mut s.objects, refused.clone());
            let record = SyncRecord {
                revision: revision.to_string(),
                at: Some(now),
                result: SyncResult::Failed,
                counts: None,
                error: Some(message.clone()),
                stages: Vec::new(),
                times: 1,
            };
            push_history(&mut s.history, record);
        });
        let observation = Observation::Failed {
            revision: Some(revision),
            message: &message,
            objects: refused.into_iter().map(|o| o.object).collect(),
        };
        self.notify.observe(settings, observation);
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Failure, seconds);
        if error.is_transient() {
            self.reach(settings, false);
        }
        if let ReconcileError::Engine(EngineError::Owned(conflicts)) = error {
            let name = &settings.name;
            self.metrics
                .set_foreign(name, Foreign::Conflict, conflicts.len());
        }
        // Events are writes: only the replica that converges the source posts them.
        if settings.duty != Duty::Converge {
            return;
        }
        let event = format!(
            "revision {} not applied: {message}",
            short_revision(revision)
        );
        self.events.emit(
            &settings.name,
            &settings.namespace,
            EventReason::ReconcileFailed,
            &event,
        );
    }

    /// Whether the source's cluster (a `[[clusters]]` entry) answered: in `/status`
    /// and `converge_cluster_reachable`.
    pub(crate) fn reach(&self, settings: &Settings, reachable: bool) {
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
    pub(crate) fn unreachable(&self, settings: &Settings, error: &str) {
        let cluster = settings.cluster.as_deref().unwrap_or("home");
        let message = format!("cluster {cluster:?} cannot be reached: {error}");
        self.status.update(&settings.name, |s| {
            s.last_attempt = Some(SystemTime::now());
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
        });
        self.reach(settings, false);
    }

    /// An unreachable remote or a wrong password: reported; the last good revision
    /// stays applied.
    pub(crate) fn fetch_failure(&self, settings: &Settings, error: &SourceError) {
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
        let observation = Observation::Failed {
            revision: None,
            message: &message,
            objects: Vec::new(),
        };
        self.notify.observe(settings, observation);
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Failure, 0.0);
    }

    /// A reconcile that came due waits for `dependencies` (not synced and healthy
    /// yet): `/status` says so.
    pub(crate) fn waiting(&self, settings: &Settings, dependencies: &[String]) {
        let mut news = false;
        self.status.update(&settings.name, |s| {
            news = s.waiting_for != dependencies;
            s.result = SyncResult::Waiting;
            s.waiting_for = dependencies.to_vec();
        });
        if news {
            let waiting_for = dependencies.join("; ");
            info!(source = %settings.name, %waiting_for, "waiting for its dependencies");
            self.events.emit(
                &settings.name,
                &settings.namespace,
                EventReason::DependencyNotReady,
                &format!("waiting for {waiting_for}"),
            );
            let observation = Observation::Waiting { dependencies };
            self.notify.observe(settings, observation);
        }
    }

    /// Whether every object the source applied is healthy (its dependents wait for it).
    pub(crate) fn is_healthy(&self, settings: &Settings) -> bool {
        self.status.health_state(&settings.name) == Some(State::Ready)
    }

    /// A quiet resync: nothing changed, so nothing ran.
    pub(crate) fn skipped(&self, settings: &Settings, seconds: f64) {
        self.metrics
            .observe_reconcile(&settings.name, ReconcileResult::Skipped, seconds);
    }

    /// The health of every desired object, after a full reconcile.
    pub(crate) fn health(&self, settings: &Settings, objects: Vec<ObjectHealth>) {
        let mut counts = Vec::new();
        let mut observed = None;
        let notify = self.notify.wants(&settings.name);
        self.status.update(&settings.name, |s| {
            s.health.set_objects(objects);
            counts = health_counts(&s.health);
            observed = notify.then(|| health_observation(&s.health));
        });
        self.metrics.set_health(&settings.name, &counts);
        if let Some(observation) = observed {
            self.notify.observe(settings, observation);
        }
    }

    /// The health of one object, as it changed.
    pub(crate) fn object_health(&self, settings: &Settings, object: &ObjectRef, health: Health) {
        let key = object.to_string();
        let mut counts = Vec::new();
        let mut observed = None;
        let notify = self.notify.wants(&settings.name);
        self.status.update(&settings.name, |s| {
            let before = s.health.state;
            s.health.set(&key, health);
            counts = health_counts(&s.health);
            // A rollout's many status updates leave the source's health as it
            // was; only a change of it (or of which objects failed) is looked at.
            let failed_changed = s.health.state == Some(State::Failed);
            if notify && (before != s.health.state || failed_changed) {
                observed = Some(health_observation(&s.health));
            }
        });
        self.metrics.set_health(&settings.name, &counts);
        if let Some(observation) = observed {
            self.notify.observe(settings, observation);
        }
    }
}

/// How an object stands after a run: applied changes are in sync; changes a
/// report-only source did not make are drift.
fn object_status(step: &Step, applied: bool) -> ObjectStatus {
    let (state, reason) = match (step.action, applied) {
        (StepAction::Unchanged, _) | (StepAction::Create | StepAction::Configure, true) => {
            (ObjectState::InSync, None)
        }
        (StepAction::Recreate, true) => (
            ObjectState::InSync,
            Some("recreated: an immutable field changed".into()),
        ),
        (StepAction::Recreate, false) => (
            ObjectState::Drifted,
            Some("an immutable field changed; would be recreated".into()),
        ),
        (StepAction::Create, false) => (ObjectState::Missing, None),
        (StepAction::Configure, false) => (ObjectState::Drifted, None),
        (StepAction::Prune, true) => (ObjectState::Pruned, None),
        (StepAction::Prune, false) => (
            ObjectState::Drifted,
            Some("no longer in the source; would be pruned".into()),
        ),
        (StepAction::KeepPruneDisabled, _) => (
            ObjectState::InSync,
            Some("no longer in the source; kept (converge.dev/prune: disabled)".into()),
        ),
        (StepAction::Run, _) => (
            ObjectState::InSync,
            Some("a hook: runs when a sync writes something".into()),
        ),
        (StepAction::Shared, _) => (
            ObjectState::Shared,
            Some(format!(
                "owned by {}, declared the same here: never written or pruned by this source",
                step.owner.as_deref().unwrap_or("another source")
            )),
        ),
        (StepAction::Completed, _) => (
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
        wave: step.placement.wave,
    }
}

/// The stages of a sync that wrote or ran something, for the history: `wave 1:
/// 3 written`, `pre-sync hooks: 1 written (migrate-x7k2q)`.
fn stages_run(sync: &SyncLog) -> Vec<String> {
    sync.stages
        .iter()
        .filter(|stage| stage.written > 0 || !stage.hooks.is_empty())
        .map(|stage| match stage.hooks.is_empty() {
            true => format!("{}: {} written", stage.kind, stage.written),
            false => format!(
                "{}: {} written ({})",
                stage.kind,
                stage.written,
                stage.hooks.join(", ")
            ),
        })
        .collect()
}

/// The objects a run wrote (hooks are steps, not objects people follow).
fn written(steps: &[Step], applied: bool) -> Vec<String> {
    if !applied {
        return Vec::new();
    }
    (steps.iter())
        .filter(|step| !step.placement.is_hook())
        .filter(|step| {
            matches!(
                step.action,
                StepAction::Create
                    | StepAction::Configure
                    | StepAction::Recreate
                    | StepAction::Prune
            )
        })
        .map(|step| step.object.to_string())
        .collect()
}

/// The objects that differ from the source: drifted, or missing from the cluster.
fn drifted_names(objects: &[ObjectStatus]) -> Vec<String> {
    (objects.iter())
        .filter(|o| matches!(o.state, ObjectState::Drifted | ObjectState::Missing))
        .map(|o| o.object.clone())
        .collect()
}

/// A source's health as notifications read it: which objects failed and why.
fn health_observation(health: &SourceHealth) -> Observation<'static> {
    let failed = (health.objects.iter())
        .filter(|o| o.health.state == State::Failed)
        .map(|o| (o.object.clone(), o.health.message.clone()))
        .collect();
    Observation::Health {
        failed,
        all_ready: health.state == Some(State::Ready),
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
            StepAction::Create => ApplyAction::Create,
            StepAction::Configure => ApplyAction::Configure,
            StepAction::Recreate => ApplyAction::Recreate,
            StepAction::Prune => ApplyAction::Prune,
            StepAction::Unchanged
            | StepAction::KeepPruneDisabled
            | StepAction::Run
            | StepAction::Completed
            | StepAction::Shared => {
                continue;
            }
        };
        *counts
            .entry((step.object.kind.clone(), action))
            .or_default() += 1;
    }
    counts.into_iter().map(|((k, a), n)| (k, a, n)).collect()
}

/// How many objects differ from the source. A pruned object is done, not drift: a
/// revision that pruned something is synced, not `drifted` until the next full run.
fn drift_count(objects: &[ObjectStatus]) -> usize {
    let settled = |state| {
        matches!(
            state,
            ObjectState::InSync | ObjectState::Shared | ObjectState::Pruned
        )
    };
    objects.iter().filter(|o| !settled(o.state)).count()
}

/// Objects by health state, for the metrics.
fn health_counts(health: &SourceHealth) -> Vec<(State, usize)> {
    vec![
        (State::Ready, health.ready),
        (State::Progressing, health.progressing),
        (State::Failed, health.failed),
        (State::Missing, health.missing),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::diff::ObjectDiff;

    fn step(action: StepAction) -> Step {
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
        let drifted = object_status(&step(StepAction::Configure), false);
        assert_eq!(drifted.state, ObjectState::Drifted);
        assert_eq!(drifted.diff.as_deref(), Some("-a\n+b\n"));
        assert_eq!(
            object_status(&step(StepAction::Create), false).state,
            ObjectState::Missing
        );
        assert_eq!(
            object_status(&step(StepAction::Prune), false).state,
            ObjectState::Drifted
        );
    }

    #[test]
    fn applied_changes_are_in_sync_without_diffs() {
        for action in [
            StepAction::Create,
            StepAction::Configure,
            StepAction::Unchanged,
        ] {
            let status = object_status(&step(action), true);
            assert_eq!(status.state, ObjectState::InSync, "{action:?}");
            assert!(status.diff.is_none());
        }
        assert_eq!(
            object_status(&step(StepAction::Prune), true).state,
            ObjectState::Pruned
        );
    }

    #[test]
    fn an_applied_prune_is_not_drift_and_a_pending_one_is() {
        let applied: Vec<ObjectStatus> =
            [StepAction::Create, StepAction::Prune, StepAction::Unchanged]
                .into_iter()
                .map(|action| object_status(&step(action), true))
                .collect();
        assert_eq!(drift_count(&applied), 0);
        let report_only: Vec<ObjectStatus> = [StepAction::Prune, StepAction::Unchanged]
            .into_iter()
            .map(|action| object_status(&step(action), false))
            .collect();
        assert_eq!(drift_count(&report_only), 1);
    }

    #[test]
    fn the_history_names_the_stages_that_wrote_or_ran_hooks() {
        use crate::engine::StageRun;
        use crate::engine::order::{Phase, StageKind};
        let stage = |kind, written, hooks: &[&str]| StageRun {
            kind,
            written,
            hooks: hooks.iter().map(|h| h.to_string()).collect(),
            waited: None,
            deleted: Vec::new(),
        };
        let sync = SyncLog {
            stages: vec![
                stage(
                    StageKind::Hooks {
                        phase: Phase::PreSync,
                    },
                    1,
                    &["migrate-x7k2q"],
                ),
                stage(StageKind::Wave { wave: 0 }, 0, &[]),
                stage(StageKind::Wave { wave: 1 }, 3, &[]),
            ],
            failed: None,
        };
        assert_eq!(
            stages_run(&sync),
            [
                "pre-sync hooks: 1 written (migrate-x7k2q)",
                "wave 1: 3 written"
            ]
        );
    }

    #[test]
    fn actions_are_counted_by_kind() {
        let steps = [
            step(StepAction::Create),
            step(StepAction::Create),
            step(StepAction::Unchanged),
            step(StepAction::Prune),
        ];
        assert_eq!(
            action_counts(&steps),
            [
                ("Deployment".to_string(), ApplyAction::Create, 2),
                ("Deployment".to_string(), ApplyAction::Prune, 1)
            ]
        );
    }
}
