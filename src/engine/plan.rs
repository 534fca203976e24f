//! The plan: desired objects and live objects in, an ordered list of actions out.
//!
//! Pure: the engine ([`crate::engine`]) gathers the live objects and the server's
//! dry-run results, this module decides. Keeping the decision free of I/O is what
//! lets the ordering, the no-false-drift rule and the prune guards be unit-tested.

use crate::engine::applyset;
use crate::engine::diff::{self, ObjectDiff};
use crate::engine::ignore::Ignored;
use crate::engine::order::{self, Phase, Placement, SyncKind};
use crate::engine::takeover::Takeover;
use crate::kube::Meta;
use crate::manifest::{Manifest, ObjectRef, Origin};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What the engine will do (or, with `--dry-run`, would do) with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepAction {
    Create,
    Configure,
    Unchanged,
    Prune,
    /// Owned, no longer desired, but annotated `converge.dev/prune: disabled`.
    KeepPruneDisabled,
    /// Changed in a field that cannot change (allowed by `converge.dev/recreate`):
    /// deleted and created again.
    Recreate,
    /// A hook: created (again) in its phase when the sync writes something, and
    /// waited for until it completes.
    Run,
    /// A run-once Job that completed and was deleted since (its TTL): not created
    /// again until its manifest changes.
    Completed,
    /// Owned by another source's ApplySet and declared the same here: never written
    /// nor pruned by this source ([`crate::engine::ownership`]).
    Shared,
}

impl fmt::Display for StepAction {
    /// The past tense kubectl users read in output: `created`, `configured`, …
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepAction::Create => "created",
            StepAction::Configure => "configured",
            StepAction::Unchanged => "unchanged",
            StepAction::Prune => "pruned",
            StepAction::KeepPruneDisabled => "kept (prune disabled)",
            StepAction::Recreate => "recreated",
            StepAction::Run => "runs",
            StepAction::Completed => "completed",
            StepAction::Shared => "shared",
        })
    }
}

impl StepAction {
    /// Whether carrying the action out writes to the cluster. A hook's run does not
    /// count: hooks run only when something else is written.
    pub fn writes(self) -> bool {
        matches!(
            self,
            StepAction::Create | StepAction::Configure | StepAction::Recreate | StepAction::Prune
        )
    }
}

/// One object's action, with its diff when it changes.
#[derive(Debug, Clone)]
pub struct Step {
    pub object: ObjectRef,
    pub action: StepAction,
    pub diff: Option<ObjectDiff>,
    /// The desired manifest (absent for prune steps).
    pub manifest: Option<Manifest>,
    /// The live object's uid: the precondition that makes a prune (or the delete
    /// of a re-create) remove exactly the object that was planned, not a successor
    /// with the same name.
    pub live_uid: Option<String>,
    /// The managedFields surgery to make before applying (kubectl-family edits).
    pub takeover: Option<Takeover>,
    /// Its wave, or the hook phases it runs in (a prune: the live object's wave).
    pub placement: Placement,
    /// For a shared object: the source that owns it.
    pub owner: Option<String>,
}

impl Step {
    pub fn origin(&self) -> Option<&Origin> {
        self.manifest.as_ref().map(|m| &m.origin)
    }

    /// `Job.batch/ns/migrate` or, for a hook with only a generateName,
    /// `Job.batch/ns/migrate-*`.
    pub fn label(&self) -> String {
        match self.manifest.as_ref().and_then(Manifest::generate_name) {
            Some(prefix) if self.object.name.is_empty() => format!("{}{prefix}*", self.object),
            _ => self.object.to_string(),
        }
    }
}

/// One desired object as the engine found it on the server.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    /// The manifest with its namespace defaulted and ApplySet label set.
    pub manifest: Manifest,
    /// Without managedFields once the ownership proof has read them.
    pub live: Option<Arc<Value>>,
    pub dry_run: Evaluation,
    /// Fields left out of the comparison (ignore rules; existing objects only).
    pub ignored: Ignored,
    /// The drift managers' fields to take over before the apply, when they own
    /// something the apply must remove.
    pub takeover: Option<Takeover>,
}

impl Desired {
    /// An object evaluated without ignore rules or a takeover.
    pub(crate) fn new(manifest: Manifest, live: Option<Arc<Value>>, dry_run: Evaluation) -> Self {
        Desired {
            manifest,
            live,
            dry_run,
            ignored: Ignored::default(),
            takeover: None,
        }
    }
}

/// What the server says the object would become if applied.
#[derive(Debug, Clone)]
pub(crate) enum Evaluation {
    /// The server's dry-run apply result.
    Server(Value),
    /// Known to equal the live object without asking: neither the manifest nor the
    /// live object changed since a dry-run said so (the daemon's memo), or the live
    /// object's managedFields prove the apply a no-op ([`crate::engine::managed_fields`]).
    /// Unchanged, no diff.
    InSync,
    /// Not evaluable yet: its CRD or Namespace is created by this same run. Compared
    /// as written; the engine dry-runs it once its CRD or Namespace exists.
    Deferred,
    /// An immutable field changed and re-creating is allowed: what the server says
    /// the new object will be (a dry-run create).
    Recreate(Value),
    /// A run-once Job that completed with this manifest and is gone since
    /// ([`crate::engine::run_once`]): nothing to do.
    Completed,
    /// Owned by another source (named here) and declared the same: nothing to do.
    Shared(String),
}

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    pub prune: bool,
    pub allow_mass_prune: bool,
}

/// Share of the owned objects one revision may prune without `--allow-mass-prune`.
pub(crate) const MAX_PRUNE_SHARE: f64 = 0.5;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(
        "refusing to prune {would_prune} of {owned} owned objects (more than half): \
         this is usually a wrong path or branch; pass --allow-mass-prune if it is intended"
    )]
    MassPrune { would_prune: usize, owned: usize },
    /// No manifests at all (see [`check_not_empty`]).
    #[error("{}", empty_message(.0))]
    Empty(LoadedFrom),
}

/// Where a run's manifests were read from: the refusal of an empty set names it and
/// says how to override the guard there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedFrom {
    /// `converge apply|diff PATH…`: overridden with `--prune --allow-mass-prune`.
    Paths(Vec<PathBuf>),
    /// A daemon source's directory or checkout: overridden with `allow_mass_prune = true`.
    Source(PathBuf),
}

/// Refuses an empty set of manifests unless both prune and allow_mass_prune are set.
/// Why: an empty source is far more often a wrong path or branch than a wish to
/// delete everything, and with prune it would delete every object converge owns.
pub fn check_not_empty(
    manifests: &[Manifest],
    options: PlanOptions,
    from: LoadedFrom,
) -> Result<(), PlanError> {
    if manifests.is_empty() && !(options.prune && options.allow_mass_prune) {
        return Err(PlanError::Empty(from));
    }
    Ok(())
}

fn empty_message(from: &LoadedFrom) -> String {
    match from {
        LoadedFrom::Paths(paths) => {
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no manifests found in {}: nothing was changed. With --prune an empty source \
                 would delete every object converge owns there; check the path, or pass \
                 --prune --allow-mass-prune to delete them on purpose",
                paths.join(", ")
            )
        }
        LoadedFrom::Source(root) => format!(
            "no manifests found in {}: nothing was changed (an empty revision would prune \
             everything; set allow_mass_prune = true if that is intended)",
            root.display()
        ),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Creates, updates and unchanged objects in apply order, then prunes in
    /// reverse apply order.
    pub steps: Vec<Step>,
}

/// Counts per action, for summary lines, JSON output and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: usize,
    pub configured: usize,
    pub unchanged: usize,
    pub pruned: usize,
    pub kept: usize,
    pub recreated: usize,
    /// Hooks that run when the sync writes something.
    pub hooks: usize,
    /// Run-once Jobs that completed and are gone: not created again.
    pub completed: usize,
    /// Objects another source owns and this one declares the same.
    pub shared: usize,
}

impl Plan {
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for step in &self.steps {
            match step.action {
                StepAction::Create => counts.created += 1,
                StepAction::Configure => counts.configured += 1,
                StepAction::Unchanged => counts.unchanged += 1,
                StepAction::Prune => counts.pruned += 1,
                StepAction::KeepPruneDisabled => counts.kept += 1,
                StepAction::Recreate => counts.recreated += 1,
                StepAction::Run => counts.hooks += 1,
                StepAction::Completed => counts.completed += 1,
                StepAction::Shared => counts.shared += 1,
            }
        }
        counts
    }

    /// The desired objects that are live state this source keeps: what is tracked
    /// after a run, e.g. for health and drift. Not hooks (steps), run-once Jobs
    /// that completed and are gone, nor objects another source owns.
    pub fn named_desired(&self) -> impl Iterator<Item = &ObjectRef> {
        self.steps
            .iter()
            .filter(|s| s.manifest.is_some() && !s.placement.is_hook())
            .filter(|s| !matches!(s.action, StepAction::Completed | StepAction::Shared))
            .map(|s| &s.object)
    }

    /// Whether the plan has hooks or more than one wave: its output shows them.
    pub fn is_ordered(&self) -> bool {
        let mut waves = self
            .steps
            .iter()
            .filter(|s| s.manifest.is_some())
            .map(|s| (s.placement.is_hook(), s.placement.wave));
        let first = waves.next();
        first.is_some_and(|f| f.0) || waves.any(|w| w.0 || Some(w) != first)
    }

    /// The plan as it runs at a sync of `sync`: Helm's `*-install` hooks only at
    /// the first sync, `*-upgrade` hooks only at later ones; a hook left with no
    /// phase is not part of it.
    pub fn at(mut self, sync: SyncKind) -> Plan {
        self.steps.retain_mut(|step| match &step.placement.hook {
            None => true,
            Some(hook) => match hook.at(sync) {
                Some(runs) => {
                    step.placement.hook = Some(runs);
                    true
                }
                None => false,
            },
        });
        self
    }

    /// Whether applying the plan would write anything.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action.writes())
    }
}

/// Decides every object's action. `owned` are the live members of the ApplySet.
pub(crate) fn plan(
    desired: Vec<Desired>,
    owned: &[impl Borrow<Value>],
    options: PlanOptions,
) -> Result<Plan, PlanError> {
    let wanted: BTreeSet<ObjectRef> = desired.iter().map(|d| d.manifest.object_ref()).collect();
    let mut steps: Vec<Step> = desired.into_iter().map(desired_step).collect();
    steps.sort_by_cached_key(|s| {
        (
            phase_rank(&s.placement),
            s.placement.wave,
            apply_rank(&s.object.group, &s.object.kind),
            s.object.clone(),
        )
    });

    if options.prune {
        // Hook instances are steps of earlier syncs: their delete policies remove
        // them, prune never does (nor counts them).
        let owned: Vec<&Value> = owned
            .iter()
            .map(Borrow::borrow)
            .filter(|live| !order::is_live_hook(live))
            .collect();
        let mut prunes: Vec<Step> = owned
            .iter()
            .filter_map(|live| Some((ObjectRef::of_live(live)?, *live)))
            .filter(|(object, _)| !wanted.contains(object))
            .map(|(object, live)| prune_step(object, live))
            .collect();
        check_mass_prune(&prunes, owned.len(), options)?;
        prunes.sort_by_cached_key(|s| {
            (
                s.placement.wave,
                apply_rank(&s.object.group, &s.object.kind),
                s.object.clone(),
            )
        });
        steps.extend(prunes.into_iter().rev());
    }
    Ok(Plan { steps })
}

/// Hooks before, in or after the waves, by their first phase.
fn phase_rank(placement: &Placement) -> u8 {
    match placement.hook.as_ref().map(order::Hook::first_phase) {
        Some(Phase::PreSync) => 0,
        None | Some(Phase::Sync) => 1,
        Some(Phase::PostSync) => 2,
        Some(Phase::SyncFail) => 3,
    }
}

fn desired_step(desired: Desired) -> Step {
    let object = desired.manifest.object_ref();
    let placement = order::placement_of(&desired.manifest.body);
    // Hooks, objects another source owns and completed run-once Jobs are steps
    // without a diff: nothing of them is compared or applied.
    let untouched = match &desired.dry_run {
        _ if placement.is_hook() => Some((StepAction::Run, None)),
        Evaluation::Shared(owner) => Some((StepAction::Shared, Some(owner.clone()))),
        Evaluation::Completed if desired.live.is_none() => Some((StepAction::Completed, None)),
        _ => None,
    };
    if let Some((action, owner)) = untouched {
        return Step {
            object,
            action,
            diff: None,
            manifest: Some(desired.manifest),
            live_uid: None,
            takeover: None,
            placement,
            owner,
        };
    }
    let live_uid = desired
        .live
        .as_deref()
        .and_then(|live| live.uid().map(str::to_string));
    // What the object would become: the server's answer when it has one, else our
    // manifest as written (only for objects the server cannot evaluate yet).
    let diff = match &desired.dry_run {
        Evaluation::InSync if desired.live.is_some() => None,
        Evaluation::Server(target) | Evaluation::Recreate(target) => {
            compare(&object, desired.live.as_deref(), target, &desired.ignored)
        }
        Evaluation::InSync
        | Evaluation::Deferred
        | Evaluation::Completed
        | Evaluation::Shared(_) => {
            let target = Value::Object(desired.manifest.body.clone());
            compare(&object, desired.live.as_deref(), &target, &desired.ignored)
        }
    };
    let action = match (&desired.live, &diff, &desired.dry_run) {
        (None, _, _) => StepAction::Create,
        (Some(_), _, Evaluation::Recreate(_)) => StepAction::Recreate,
        (Some(_), Some(_), _) => StepAction::Configure,
        (Some(_), None, _) => StepAction::Unchanged,
    };
    Step {
        object,
        action,
        diff,
        manifest: Some(desired.manifest),
        live_uid,
        takeover: desired.takeover,
        placement,
        owner: None,
    }
}

/// The diff of `live` and `target` without the ignored fields (on both sides).
fn compare(
    object: &ObjectRef,
    live: Option<&Value>,
    target: &Value,
    ignored: &Ignored,
) -> Option<ObjectDiff> {
    let (Some(live), false) = (live, ignored.is_empty()) else {
        return diff::diff_objects(object, live, target);
    };
    let (mut live, mut target) = (live.clone(), target.clone());
    ignored.mask(&mut live);
    ignored.mask(&mut target);
    diff::diff_objects(object, Some(&live), &target)
}

fn prune_step(object: ObjectRef, live: &Value) -> Step {
    let action = if applyset::prune_disabled(live) {
        StepAction::KeepPruneDisabled
    } else {
        StepAction::Prune
    };
    Step {
        object,
        action,
        diff: None,
        manifest: None,
        live_uid: live.uid().map(str::to_string),
        takeover: None,
        placement: order::live_placement(live),
        owner: None,
    }
}

fn check_mass_prune(prunes: &[Step], owned: usize, options: PlanOptions) -> Result<(), PlanError> {
    let would_prune = prunes
        .iter()
        .filter(|s| s.action == StepAction::Prune)
        .count();
    if options.allow_mass_prune || would_prune == 0 {
        return Ok(());
    }
    if would_prune as f64 > owned as f64 * MAX_PRUNE_SHARE {
        return Err(PlanError::MassPrune { would_prune, owned });
    }
    Ok(())
}

/// Objects that must exist before anything else can be validated or applied:
/// CRDs (their kinds) and Namespaces (their contents).
pub(crate) fn is_first_stage(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace")
    )
}

/// Apply order by kind (deletes run in reverse): what others depend on comes first —
/// namespaces and CRDs, then policy, identity and RBAC, configuration, storage,
/// services, workloads, routing, custom resources, and admission webhooks last so
/// that a webhook never blocks the objects it would serve.
pub fn apply_rank(group: &str, kind: &str) -> u16 {
    const ORDER: &[&str] = &[
        "CustomResourceDefinition",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
    ];
    const CUSTOM: u16 = 100;
    const WEBHOOKS: u16 = 200;
    if matches!(
        kind,
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
    ) && group == "admissionregistration.k8s.io"
    {
        return WEBHOOKS;
    }
    if !is_builtin_group(group) {
        return CUSTOM;
    }
    ORDER
        .iter()
        .position(|k| *k == kind)
        .map_or(CUSTOM - 1, |i| i as u16)
}

fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Origin;
    use serde_json::json;
    use std::path::PathBuf;

    fn manifest(body: Value) -> Manifest {
        let map = body.as_object().expect("object").clone();
        Manifest {
            api_version: map["apiVersion"].as_str().expect("apiVersion").into(),
            kind: map["kind"].as_str().expect("kind").into(),
            body: map,
            origin: Origin {
                file: PathBuf::from("fixture.yaml"),
                line: 1,
            },
        }
    }

    fn configmap(name: &str, color: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
               "data": {"color": color}})
    }

    fn desired(body: Value, live: Option<Value>) -> Desired {
        Desired::new(
            manifest(body.clone()),
            live.map(Arc::new),
            Evaluation::Server(body),
        )
    }

    /// No owned objects.
    const NONE: &[Value] = &[];

    const PRUNE: PlanOptions = PlanOptions {
        prune: true,
        allow_mass_prune: false,
    };

    #[test]
    fn actions_follow_live_state() {
        let plan = plan(
            vec![
                desired(configmap("new", "blue"), None),
                desired(configmap("same", "blue"), Some(configmap("same", "blue"))),
                desired(
                    configmap("changed", "green"),
                    Some(configmap("changed", "blue")),
                ),
            ],
            NONE,
            PRUNE,
        )
        .expect("plan");
        let actions: Vec<(String, StepAction)> = plan
            .steps
            .iter()
            .map(|s| (s.object.name.clone(), s.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("changed".to_string(), StepAction::Configure),
                ("new".to_string(), StepAction::Create),
                ("same".to_string(), StepAction::Unchanged)
            ]
        );
        let changed = plan.steps[0].diff.as_ref().expect("diff");
        assert_eq!(changed.changed_paths, ["data.color"]);
        assert!(plan.has_changes());
        assert_eq!(
            plan.counts(),
            Counts {
                created: 1,
                configured: 1,
                unchanged: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn remembered_in_sync_objects_need_no_diff() {
        let known = Desired::new(
            manifest(configmap("a", "blue")),
            Some(Arc::new(configmap("a", "blue"))),
            Evaluation::InSync,
        );
        let plan = plan(vec![known], NONE, PRUNE).expect("plan");
        assert_eq!(plan.steps[0].action, StepAction::Unchanged);
        assert!(plan.steps[0].diff.is_none());
    }

    #[test]
    fn deferred_objects_compare_as_written() {
        let deferred = Desired::new(manifest(configmap("a", "blue")), None, Evaluation::Deferred);
        let plan = plan(vec![deferred], NONE, PRUNE).expect("plan");
        assert_eq!(plan.steps[0].action, StepAction::Create);
        assert!(
            plan.steps[0]
                .diff
                .as_ref()
                .is_some_and(|d| d.unified.contains("+  color: blue"))
        );
    }

    #[test]
    fn server_noise_is_not_drift() {
        let mut live = configmap("a", "blue");
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["managedFields"] = json!([{"manager": "converge"}]);
        let plan = plan(
            vec![desired(configmap("a", "blue"), Some(live))],
            NONE,
            PRUNE,
        )
        .expect("plan");
        assert_eq!(plan.steps[0].action, StepAction::Unchanged);
        assert!(!plan.has_changes());
    }

    #[test]
    fn prune_takes_owned_objects_no_longer_desired_in_reverse_order() {
        let owned = [
            configmap("keep", "blue"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "old-ns", "uid": "u1"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "old", "namespace": "ns", "uid": "u2"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old-cm", "namespace": "ns", "uid": "u3"}}),
        ];
        let wanted = vec![
            desired(configmap("keep", "blue"), Some(configmap("keep", "blue"))),
            desired(configmap("a", "b"), None),
            desired(configmap("b", "b"), None),
            desired(configmap("c", "b"), None),
        ];
        let allowed = PlanOptions {
            allow_mass_prune: true,
            ..PRUNE
        };
        let plan = plan(wanted, &owned, allowed).expect("plan");
        let pruned: Vec<(&str, Option<&str>)> = plan
            .steps
            .iter()
            .filter(|s| s.action == StepAction::Prune)
            .map(|s| (s.object.name.as_str(), s.live_uid.as_deref()))
            .collect();
        assert_eq!(
            pruned,
            [
                ("old", Some("u2")),
                ("old-cm", Some("u3")),
                ("old-ns", Some("u1"))
            ]
        );
    }

    #[test]
    fn prune_disabled_objects_are_kept() {
        let mut kept = configmap("kept", "blue");
        kept["metadata"]["annotations"] = json!({"converge.dev/prune": "disabled"});
        let wanted = vec![desired(configmap("a", "b"), Some(configmap("a", "b")))];
        let plan = plan(wanted, &[configmap("a", "b"), kept], PRUNE).expect("plan");
        assert_eq!(plan.steps[1].action, StepAction::KeepPruneDisabled);
        assert!(!plan.has_changes());
    }

    #[test]
    fn mass_prune_is_refused_unless_allowed() {
        let owned = [
            configmap("a", "x"),
            configmap("b", "x"),
            configmap("c", "x"),
        ];
        let wanted = || vec![desired(configmap("a", "x"), Some(configmap("a", "x")))];
        assert_eq!(
            plan(wanted(), &owned, PRUNE).expect_err("2 of 3 is more than half"),
            PlanError::MassPrune {
                would_prune: 2,
                owned: 3
            }
        );
        let allowed = PlanOptions {
            allow_mass_prune: true,
            ..PRUNE
        };
        assert_eq!(
            plan(wanted(), &owned, allowed)
                .expect("allowed")
                .counts()
                .pruned,
            2
        );
        let no_prune = PlanOptions {
            prune: false,
            ..PRUNE
        };
        assert_eq!(
            plan(wanted(), &owned, no_prune)
                .expect("no prune")
                .counts()
                .pruned,
            0
        );
        // Exactly half is within the limit.
        let half = [configmap("a", "x"), configmap("b", "x")];
        assert_eq!(
            plan(wanted(), &half, PRUNE).expect("half").counts().pruned,
            1
        );
    }

    #[test]
    fn empty_set_is_refused_unless_prune_and_mass_prune_are_allowed() {
        let from = || LoadedFrom::Source(PathBuf::from("/srv/shop"));
        let allowed = PlanOptions {
            allow_mass_prune: true,
            ..PRUNE
        };
        let err = check_not_empty(&[], PRUNE, from()).expect_err("empty");
        assert_eq!(err, PlanError::Empty(from()));
        assert!(
            err.to_string()
                .starts_with("no manifests found in /srv/shop: nothing was changed")
        );
        assert!(
            err.to_string().contains("set allow_mass_prune = true"),
            "{err}"
        );
        let no_prune = PlanOptions {
            prune: false,
            ..allowed
        };
        assert!(check_not_empty(&[], no_prune, from()).is_err());
        assert_eq!(check_not_empty(&[], allowed, from()), Ok(()));
        let one = [manifest(configmap("a", "x"))];
        assert_eq!(check_not_empty(&one, PRUNE, from()), Ok(()));
        let paths = LoadedFrom::Paths(vec!["k8s/a".into(), "k8s/b".into()]);
        let err = check_not_empty(&[], PRUNE, paths).expect_err("empty");
        assert!(
            err.to_string()
                .starts_with("no manifests found in k8s/a, k8s/b:"),
            "{err}"
        );
        assert!(
            err.to_string().contains("pass --prune --allow-mass-prune"),
            "{err}"
        );
    }

    #[test]
    fn kinds_are_ordered_by_dependency() {
        let rank = |g: &str, k: &str| apply_rank(g, k);
        assert!(rank("apiextensions.k8s.io", "CustomResourceDefinition") < rank("", "Namespace"));
        assert!(rank("", "Namespace") < rank("", "ServiceAccount"));
        assert!(rank("", "ServiceAccount") < rank("rbac.authorization.k8s.io", "RoleBinding"));
        assert!(rank("", "ConfigMap") < rank("apps", "Deployment"));
        assert!(rank("", "Service") < rank("apps", "Deployment"));
        assert!(rank("apps", "Deployment") < rank("example.com", "Widget"));
        assert!(
            rank("example.com", "Widget")
                < rank(
                    "admissionregistration.k8s.io",
                    "ValidatingWebhookConfiguration"
                )
        );
        assert!(rank("", "SomethingNew") < rank("example.com", "Widget"));
        assert!(
            is_first_stage("", "Namespace")
                && is_first_stage("apiextensions.k8s.io", "CustomResourceDefinition")
        );
        assert!(!is_first_stage("", "ConfigMap"));
    }

    fn annotated(name: &str, annotations: Value) -> Value {
        let mut body = configmap(name, "x");
        body["metadata"]["annotations"] = annotations;
        body
    }

    #[test]
    fn waves_order_the_plan_and_hooks_only_run_when_something_is_written() {
        let hook = json!({"converge.dev/hook": "pre-sync"});
        let plan_of = |live_b: Option<Value>| {
            plan(
                vec![
                    desired(annotated("a", json!({"converge.dev/wave": "1"})), None),
                    desired(configmap("b", "x"), live_b),
                    desired(
                        annotated("c", json!({"argocd.argoproj.io/sync-wave": "-1"})),
                        None,
                    ),
                    desired(annotated("migrate", hook.clone()), None),
                    desired(
                        annotated("smoke", json!({"helm.sh/hook": "post-install"})),
                        None,
                    ),
                ],
                NONE,
                PRUNE,
            )
            .expect("plan")
        };
        let plan = plan_of(None);
        let order: Vec<(&str, StepAction, i32)> = plan
            .steps
            .iter()
            .map(|s| (s.object.name.as_str(), s.action, s.placement.wave))
            .collect();
        assert_eq!(
            order,
            [
                ("migrate", StepAction::Run, 0),
                ("c", StepAction::Create, -1),
                ("b", StepAction::Create, 0),
                ("a", StepAction::Create, 1),
                ("smoke", StepAction::Run, 0),
            ]
        );
        assert!(plan.is_ordered());
        assert_eq!(plan.counts().hooks, 2);
        let tracked: Vec<&str> = plan.named_desired().map(|o| o.name.as_str()).collect();
        assert_eq!(tracked, ["c", "b", "a"], "hooks are steps, not live state");
        // Nothing to write but hooks: nothing runs.
        let quiet = |name: &str, annotations: Value| {
            let body = annotated(name, annotations);
            desired(body.clone(), Some(body))
        };
        let unchanged = super::plan(
            vec![
                quiet("a", json!({"converge.dev/wave": "1"})),
                desired(annotated("migrate", hook), None),
            ],
            NONE,
            PRUNE,
        )
        .expect("plan");
        assert!(!unchanged.has_changes(), "a hook alone changes nothing");
    }

    #[test]
    fn prune_skips_hook_instances_and_deletes_later_waves_first() {
        let live = |name: &str, annotations: Value| {
            let mut body = annotated(name, annotations);
            body["metadata"]["uid"] = json!(format!("uid-{name}"));
            body
        };
        let owned = [
            live("early", json!({"converge.dev/wave": "-3"})),
            live("late", json!({"argocd.argoproj.io/sync-wave": "4"})),
            live("plain", json!({})),
            live("migrate-x7k2p", json!({"converge.dev/hook": "pre-sync"})),
            live("smoke-a1b2c", json!({"helm.sh/hook": "post-install"})),
            configmap("keep", "x"),
        ];
        let wanted = vec![desired(
            configmap("keep", "x"),
            Some(configmap("keep", "x")),
        )];
        let allowed = PlanOptions {
            allow_mass_prune: true,
            ..PRUNE
        };
        let plan = plan(wanted, &owned, allowed).expect("plan");
        let pruned: Vec<&str> = plan
            .steps
            .iter()
            .filter(|s| s.action == StepAction::Prune)
            .map(|s| s.object.name.as_str())
            .collect();
        assert_eq!(pruned, ["late", "plain", "early"]);
        // Three of four owned non-hook objects: the guard does not count hooks.
        assert_eq!(
            super::plan(
                vec![desired(
                    configmap("keep", "x"),
                    Some(configmap("keep", "x"))
                )],
                &owned,
                PRUNE
            )
            .expect_err("3 of 4"),
            PlanError::MassPrune {
                would_prune: 3,
                owned: 4
            }
        );
    }

    #[test]
    fn live_refs_come_from_api_version_kind_and_metadata() {
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "n"}});
        assert_eq!(
            ObjectRef::of_live(&live).expect("ref").to_string(),
            "Deployment.apps/n/w"
        );
        assert!(ObjectRef::of_live(&json!({"kind": "X"})).is_none());
    }
}
