//! One reconcile of one source: snapshot → manifests → engine → status, metrics and
//! events. It neither loops nor sleeps: [`crate::daemon`] decides when to call it.
//!
//! Between reconciles a source keeps a [`SourceState`]: the engine's memo, a store
//! of its live members kept current by reflectors, and the last good revision. That
//! state is what makes a steady-state reconcile free (no request) and what lets an
//! out-of-band change be told apart from the echo of our own write.

use crate::daemon::events::Events;
use crate::daemon::targeting::{self, Baseline, Targeted};
use crate::engine::applyset::{ApplySet, GroupKind};
use crate::engine::plan::{Action, Step};
use crate::engine::{Cache, Engine, EngineError, Memo, Outcome, RunOptions};
use crate::health::{self, Health, State};
use crate::http::metrics::Metrics;
use crate::http::status::{ObjectHealth, ObjectState, ObjectStatus, StatusBoard, SyncResult};
use crate::kube::watch::{Change, Reflector, Store};
use crate::manifest::{CachedManifest, FileCache, ManifestError, ObjectRef};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

/// How one source is converged (from its `[[source]]` table and global flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub namespace: String,
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// Write (heal) or only report drift.
    pub self_heal: bool,
}

/// What set a reconcile off, and so how much of the source it may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Everything: the first reconcile, periodic resyncs, retries.
    Full,
    /// The source or live objects changed: only what changed, when [`scope`] allows.
    Changes,
}

/// Why a reconcile failed. The last good state stays applied in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "no manifests found in {0}: nothing was changed (an empty revision would prune everything; set allow_mass_prune = true if that is intended)"
    )]
    Empty(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a source remembers between reconciles.
pub struct SourceState {
    memo: HashMap<ObjectRef, Memo>,
    store: Store,
    reflectors: BTreeMap<GroupKind, Reflector>,
    /// Member kinds of the last run; `None` before the first successful run.
    recorded: Option<BTreeSet<GroupKind>>,
    /// The last revision applied (or, report-only, evaluated) without error.
    pub last_good_revision: Option<String>,
    changes: mpsc::UnboundedSender<Change>,
    /// The named desired objects of the last successful run: whose health is tracked.
    desired: BTreeSet<ObjectRef>,
    /// Failed objects whose evidence was gathered: once per failure, not per change.
    explained: HashSet<ObjectRef>,
    /// The files of the last revision loaded, parsed: drift reconciles reuse them,
    /// and a new revision parses only the files that changed.
    files: FileCache,
    loaded_revision: Option<String>,
    /// What the last successful run applied; `None` before the first full one.
    baseline: Option<Baseline>,
    /// Desired objects that drifted since the last run.
    drifted: BTreeSet<ObjectRef>,
    /// A member that is no longer desired changed: only a full run (prune) handles it.
    needs_full: bool,
}

impl SourceState {
    /// Whether live objects drifted since the last run (a source event that changed
    /// nothing must not swallow them).
    pub fn has_pending_drift(&self) -> bool {
        !self.drifted.is_empty() || self.needs_full
    }

    /// Loads `revision` from `root`, parsing only the files that changed.
    fn load(&mut self, root: &Path, revision: &str) -> Result<(), ManifestError> {
        if self.loaded_revision.as_deref() == Some(revision) {
            return Ok(());
        }
        self.loaded_revision = None;
        self.files.refresh(&[root.to_path_buf()])?;
        info!(revision = %short(revision), parsed_files = self.files.parsed_last, "manifests loaded");
        self.loaded_revision = Some(revision.to_string());
        Ok(())
    }

    /// The objects a targeted run converges; `None` for a full run.
    fn targeted(&self, trigger: Trigger, namespace: &str) -> Option<Targeted> {
        if trigger == Trigger::Full || self.needs_full {
            return None;
        }
        targeting::targeted(
            &self.files,
            self.baseline.as_ref()?,
            &self.drifted,
            namespace,
        )
    }

    /// Changes seen by this source's reflectors are sent to `changes`.
    pub fn new(changes: mpsc::UnboundedSender<Change>) -> Self {
        SourceState {
            memo: HashMap::new(),
            store: Store::default(),
            reflectors: BTreeMap::new(),
            files: FileCache::default(),
            loaded_revision: None,
            baseline: None,
            drifted: BTreeSet::new(),
            needs_full: false,
            recorded: None,
            last_good_revision: None,
            changes,
            desired: BTreeSet::new(),
            explained: HashSet::new(),
        }
    }

    /// An object's health from the store (no request), once its kind is listed.
    fn health_of(&self, object: &ObjectRef) -> Health {
        let listed = self
            .reflectors
            .get(&GroupKind::from(object))
            .is_some_and(Reflector::is_synced);
        if !listed {
            return Health::progressing("not observed yet");
        }
        health::assess_opt(self.store.get_shared(object).as_deref())
    }

    /// Whether a change reported by a reflector is drift worth a reconcile: not the
    /// echo of our own write, and not a controller's status update.
    pub fn is_drift(&mut self, change: &Change) -> bool {
        let drift = match self.memo.get_mut(&change.object) {
            // The version the last run ended with (a relist repeats it): no need to
            // read the object back from the store.
            Some(memo) if memo.knows(change.resource_version.as_deref()) => false,
            Some(memo) => memo.absorb(self.store.get(&change.object).as_ref()),
            // A member we do not desire (any more): a prune candidate changed.
            None => {
                self.needs_full |= self.recorded.is_some();
                self.recorded.is_some()
            }
        };
        if drift {
            self.drifted.insert(change.object.clone());
        }
        drift
    }

    fn cache(&self) -> Option<(BTreeSet<GroupKind>, &BTreeSet<GroupKind>)> {
        let recorded = self.recorded.as_ref()?;
        let covered = self
            .reflectors
            .iter()
            .filter(|(_, r)| r.is_synced())
            .map(|(gk, _)| gk.clone())
            .collect();
        Some((covered, recorded))
    }

    /// Watches exactly the kinds that may hold members now.
    fn watch_kinds(&mut self, engine: &Engine, applyset: &ApplySet, kinds: &BTreeSet<GroupKind>) {
        self.reflectors.retain(|gk, _| kinds.contains(gk));
        for gk in kinds {
            if self.reflectors.contains_key(gk) {
                continue;
            }
            let Ok(resource) = engine.discovery().resolve(&gk.group, "", &gk.kind) else {
                continue;
            };
            let reflector = Reflector::spawn(
                engine.client().clone(),
                resource,
                applyset.member_selector(),
                self.store.clone(),
                self.changes.clone(),
            );
            self.reflectors.insert(gk.clone(), reflector);
        }
    }
}

/// Runs reconciles and reports them. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pub engine: Engine,
    pub status: StatusBoard,
    pub metrics: Metrics,
    pub events: Events,
}

impl Reconciler {
    /// One reconcile of `settings`' source at `revision`, from the manifests under
    /// `root`: targeted at what changed when `trigger` and [`scope`] allow, else
    /// full. Records the result in status, metrics and (on news) Events.
    pub async fn reconcile(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        root: &Path,
        revision: &str,
        trigger: Trigger,
    ) -> Result<(), ReconcileError> {
        let span = info_span!("reconcile", source = %settings.name, revision = %short(revision));
        let started = Instant::now();
        let result = self
            .run(settings, state, root, revision, trigger)
            .instrument(span)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok((outcome, partial)) => {
                state.last_good_revision = Some(revision.to_string());
                self.record_success(settings, revision, outcome, seconds, *partial);
                match partial {
                    false => self.refresh_health(settings, state),
                    true => {
                        for object in outcome.plan.named_desired() {
                            self.reassess(settings, state, object);
                        }
                    }
                }
            }
            Err(error) => self.record_failure(settings, revision, error, seconds),
        }
        result.map(drop)
    }

    /// The run itself; `true` with the outcome when it was targeted.
    async fn run(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        root: &Path,
        revision: &str,
        trigger: Trigger,
    ) -> Result<(Outcome, bool), ReconcileError> {
        state.load(root, revision)?;
        let (manifests, changed_files) = match state.targeted(trigger, &settings.namespace) {
            Some(t) => (t.manifests, Some(t.changed_files)),
            None => (
                state
                    .files
                    .manifests()
                    .map(CachedManifest::manifest)
                    .collect(),
                None,
            ),
        };
        let partial = changed_files.is_some();
        if manifests.is_empty() && !(settings.prune && settings.allow_mass_prune) {
            return Err(ReconcileError::Empty(root.display().to_string()));
        }
        info!(
            scope = if partial { "targeted" } else { "full" },
            objects = manifests.len(),
            "reconciling"
        );
        self.metrics
            .count_reconciled_objects(&settings.name, manifests.len() as u64);
        let options = RunOptions {
            name: settings.name.clone(),
            namespace: settings.namespace.clone(),
            prune: settings.prune,
            allow_mass_prune: settings.allow_mass_prune,
            dry_run: !settings.self_heal,
            partial,
        };
        let mut outcome = match state.cache() {
            Some((covered, recorded)) => {
                let cache = Cache {
                    store: &state.store,
                    covered: &covered,
                    recorded,
                    memo: &state.memo,
                };
                self.engine.run(manifests, &options, Some(cache)).await?
            }
            None => self.engine.run(manifests, &options, None).await?,
        };
        let memo = std::mem::take(&mut outcome.memo);
        match changed_files {
            Some(changed) => {
                state.memo.extend(memo);
                for step in &outcome.plan.steps {
                    state.drifted.remove(&step.object);
                }
                if let Some(baseline) = state.baseline.as_mut() {
                    baseline.update(&state.files, &changed);
                }
            }
            None => {
                let applyset = ApplySet::new(&settings.name, &settings.namespace);
                state.memo = memo;
                state.recorded = Some(outcome.member_kinds.clone());
                state.watch_kinds(&self.engine, &applyset, &outcome.member_kinds);
                state.desired = outcome.plan.named_desired().cloned().collect();
                state.baseline = Some(Baseline::of(&state.files));
                state.drifted.clear();
                state.needs_full = false;
            }
        }
        Ok((outcome, partial))
    }

    /// Re-assesses the health of every desired object from the store, after a
    /// reconcile. Costs no request (evidence aside, once per failure).
    pub fn refresh_health(&self, settings: &Settings, state: &mut SourceState) {
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
    pub fn observe_health(&self, settings: &Settings, state: &mut SourceState, change: &Change) {
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

    /// `partial`: the outcome covers only the objects a targeted run looked at.
    fn record_success(
        &self,
        settings: &Settings,
        revision: &str,
        outcome: &Outcome,
        seconds: f64,
        partial: bool,
    ) {
        let objects: Vec<ObjectStatus> = outcome
            .plan
            .steps
            .iter()
            .map(|step| object_status(step, outcome.applied))
            .collect();
        let now = SystemTime::now();
        let mut drifted = 0;
        self.status.update(&settings.name, |s| {
            match partial {
                true => merge_objects(&mut s.objects, objects),
                false => s.objects = objects,
            }
            drifted = s
                .objects
                .iter()
                .filter(|o| o.state != ObjectState::InSync)
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
        });
        let counts = outcome.plan.counts();
        info!(source = %settings.name, revision = %short(revision), applied = outcome.applied,
              created = counts.created, configured = counts.configured, pruned = counts.pruned,
              unchanged = counts.unchanged, drifted, seconds, "reconciled");
        self.metrics
            .observe_reconcile(&settings.name, "success", seconds);
        self.metrics.set_drifted(&settings.name, drifted as i64);
        let unix = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.set_last_success(&settings.name, unix);
        if outcome.applied {
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
                "Normal",
                "Applied",
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
        self.status.update(&settings.name, |s| {
            s.attempted_revision = Some(revision.to_string());
            s.last_attempt = Some(now);
            s.result = SyncResult::Failed;
            s.error = Some(message.clone());
            s.reconciles += 1;
        });
        self.metrics
            .observe_reconcile(&settings.name, "failure", seconds);
        let event = format!("revision {} not applied: {message}", short(revision));
        self.events.emit(
            &settings.name,
            &settings.namespace,
            "Warning",
            "ReconcileFailed",
            &event,
        );
    }
}

/// How an object stands after a run: applied changes are in sync; changes a
/// report-only source did not make are drift.
fn object_status(step: &Step, applied: bool) -> ObjectStatus {
    let (state, reason) = match (step.action, applied) {
        (Action::Unchanged, _) | (Action::Create | Action::Configure, true) => {
            (ObjectState::InSync, None)
        }
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
    };
    let diff = (state != ObjectState::InSync)
        .then(|| step.diff.as_ref().map(|d| d.unified.clone()))
        .flatten();
    ObjectStatus {
        object: step.object.to_string(),
        state,
        diff,
        reason,
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
fn action_counts(steps: &[Step]) -> Vec<(String, &'static str, u64)> {
    let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for step in steps {
        let action = match step.action {
            Action::Create => "create",
            Action::Configure => "configure",
            Action::Prune => "prune",
            Action::Unchanged | Action::KeepPruneDisabled => continue,
        };
        *counts
            .entry((step.object.kind.clone(), action))
            .or_default() += 1;
    }
    counts.into_iter().map(|((k, a), n)| (k, a, n)).collect()
}

/// Objects by health state, for the metrics.
fn health_counts(health: &crate::http::status::SourceHealth) -> Vec<(State, usize)> {
    vec![
        (State::Ready, health.ready),
        (State::Progressing, health.progressing),
        (State::Failed, health.failed),
        (State::Missing, health.missing),
    ]
}

/// Git shas are long; logs and events show the first 12 characters.
pub fn short(revision: &str) -> &str {
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
                ("Deployment".to_string(), "create", 2),
                ("Deployment".to_string(), "prune", 1)
            ]
        );
    }

    #[test]
    fn revisions_are_shortened_for_people() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("dir:abc"), "dir:abc");
    }
}
