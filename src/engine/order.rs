//! Where each object goes in a sync: its wave, or the hook phase it runs in, read
//! from annotations (converge's own, and Argo CD's and Helm's as aliases, so that
//! repositories written for them run unchanged), and the stages a sync runs in.
//!
//! A sync is: pre-sync hooks (by weight), then waves in ascending order (each with
//! its sync hooks; the next starts once it is healthy), then prunes in descending
//! wave order, then post-sync hooks. Sync-fail hooks run when any of that fails.
//! Hooks are steps, not live state: they run only when the sync writes something.
//!
//! Pure: unit-tested here; [`crate::engine::sequence`] carries the stages out.

use crate::engine::plan::{Action, Step, apply_rank, is_first_stage};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `converge.dev/wave: "<int>"`: the wave an object is applied in (default 0), or a
/// hook's order within its phase.
pub(crate) const WAVE: &str = "converge.dev/wave";
/// `converge.dev/hook: pre-sync | sync | post-sync | sync-fail` (comma-separated for
/// more than one phase).
pub(crate) const HOOK: &str = "converge.dev/hook";
/// `converge.dev/hook-delete-policy: before-hook-creation | hook-succeeded |
/// hook-failed` (comma-separated; default before-hook-creation).
pub(crate) const HOOK_DELETE_POLICY: &str = "converge.dev/hook-delete-policy";

const ARGO_WAVE: &str = "argocd.argoproj.io/sync-wave";
const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
const ARGO_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
const HELM_HOOK: &str = "helm.sh/hook";
const HELM_WEIGHT: &str = "helm.sh/hook-weight";
const HELM_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before anything else is written; must complete first.
    PreSync,
    /// In its wave, with the wave's objects.
    Sync,
    /// Once every wave is written and healthy, and prunes are done.
    PostSync,
    /// When the sync failed.
    SyncFail,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::PreSync => "pre-sync",
            Phase::Sync => "sync",
            Phase::PostSync => "post-sync",
            Phase::SyncFail => "sync-fail",
        })
    }
}

/// When a hook object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeleteWhen {
    /// The previous instance, just before the hook is created again (the default).
    BeforeHookCreation,
    /// Once it completed.
    HookSucceeded,
    /// Once it failed (after its evidence was gathered).
    HookFailed,
}

impl fmt::Display for DeleteWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeleteWhen::BeforeHookCreation => "before-hook-creation",
            DeleteWhen::HookSucceeded => "hook-succeeded",
            DeleteWhen::HookFailed => "hook-failed",
        })
    }
}

/// Whose annotations made an object a hook. Each runs as its own tool runs it, so
/// that a chart or an Argo CD repository behaves as it did there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// `converge.dev/hook`: Helm's run (one hook at a time, deletions at the end of
    /// the phase), ordered by weight, kind, then name.
    Converge,
    /// `argocd.argoproj.io/hook`: the hooks of one wave created together and waited
    /// for together; `HookSucceeded`/`HookFailed` once the whole sync succeeded or
    /// failed; every phase at every sync.
    ArgoCd,
    /// `helm.sh/hook`: one hook at a time by weight, then name (Helm's own sort);
    /// `hook-succeeded` once the whole phase succeeded, in reverse order;
    /// `*-install` hooks at the first sync only, `*-upgrade` hooks at later ones.
    Helm,
}

impl Dialect {
    /// Whether a phase's hooks of this dialect are deleted by policy only when the
    /// whole sync ends (Argo CD), rather than when their phase ends.
    pub fn deletes_at_sync_end(self) -> bool {
        self == Dialect::ArgoCd
    }
}

/// Whether a sync installs the ApplySet (it has no parent yet: the first sync) or
/// upgrades it. Helm's `pre-install` and `pre-upgrade` hooks tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncKind {
    Install,
    Upgrade,
}

/// At which syncs a hook runs in one of its phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Occasion {
    Every,
    Only(SyncKind),
}

impl Occasion {
    fn includes(self, sync: SyncKind) -> bool {
        match self {
            Occasion::Every => true,
            Occasion::Only(only) => only == sync,
        }
    }

    /// Both occasions together.
    fn or(self, other: Occasion) -> Occasion {
        match (self, other) {
            (Occasion::Only(a), Occasion::Only(b)) if a == b => self,
            _ => Occasion::Every,
        }
    }
}

/// An object that runs as a step of the sync rather than being live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// At least one, each with the syncs it runs at.
    pub phases: BTreeMap<Phase, Occasion>,
    pub delete: BTreeSet<DeleteWhen>,
    pub dialect: Dialect,
}

impl Hook {
    pub fn deletes(&self, when: DeleteWhen) -> bool {
        self.delete.contains(&when)
    }

    /// The phase it is listed under in a plan: its first.
    pub fn first_phase(&self) -> Phase {
        self.phases.keys().next().copied().unwrap_or(Phase::Sync)
    }

    /// The phases, for reports.
    pub fn phase_list(&self) -> Vec<Phase> {
        self.phases.keys().copied().collect()
    }

    /// The hook as it runs at a sync of `sync`: only its phases that run then;
    /// `None` when it does not run at all.
    pub fn at(&self, sync: SyncKind) -> Option<Hook> {
        let phases: BTreeMap<Phase, Occasion> = self
            .phases
            .iter()
            .filter(|(_, occasion)| occasion.includes(sync))
            .map(|(phase, occasion)| (*phase, *occasion))
            .collect();
        (!phases.is_empty()).then(|| Hook {
            phases,
            ..self.clone()
        })
    }
}

/// Where an applied object goes in a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Waves apply in ascending order; for a hook, its order within its phase.
    pub wave: i32,
    pub hook: Option<Hook>,
}

impl Placement {
    pub fn is_hook(&self) -> bool {
        self.hook.is_some()
    }
}

/// What an object's annotations make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    Placed(Placement),
    /// Never applied: Argo CD's `Skip`, or only Helm hooks a sync never runs
    /// (`test`, `pre-delete`, `pre-rollback`, …). The reason says which.
    Skipped(String),
}

/// Reads an object's ordering annotations: converge's own first, then Argo CD's,
/// then Helm's. Errors name the annotation and the values it takes.
pub(crate) fn role(metadata: Option<&Map<String, Value>>) -> Result<Role, String> {
    let annotations = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let get = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    let hook = match (get(HOOK), get(ARGO_HOOK), get(HELM_HOOK)) {
        (Some(value), _, _) => converge_phases(value)?.map(|p| (every(p), Dialect::Converge)),
        (None, Some(value), _) => match argo_phases(value)? {
            Some(phases) => Some((every(phases), Dialect::ArgoCd)),
            None => return Ok(Role::Skipped(format!("{ARGO_HOOK}: {value}"))),
        },
        (None, None, Some(value)) => match helm_phases(value) {
            Some(phases) => Some((phases, Dialect::Helm)),
            None => {
                return Ok(Role::Skipped(format!(
                    "{HELM_HOOK}: {value} (hooks a sync never runs)"
                )));
            }
        },
        (None, None, None) => None,
    };
    let weight_keys: &[&str] = match hook {
        Some(_) => &[WAVE, ARGO_WAVE, HELM_WEIGHT],
        None => &[WAVE, ARGO_WAVE],
    };
    let wave = match weight_keys.iter().find_map(|k| Some((*k, get(k)?))) {
        Some((key, value)) => whole_number(key, value)?,
        None => 0,
    };
    let hook = match hook {
        Some((phases, dialect)) => Some(Hook {
            phases,
            delete: delete_policy(&get)?,
            dialect,
        }),
        None => None,
    };
    Ok(Role::Placed(Placement { wave, hook }))
}

/// The placement of an object (a manifest's body, or a live object: for prune
/// order and to recognise hooks), with anything unreadable taken as wave 0.
pub(crate) fn placement_of(object: &Map<String, Value>) -> Placement {
    match role(object.get("metadata").and_then(Value::as_object)) {
        Ok(Role::Placed(placement)) => placement,
        Ok(Role::Skipped(_)) | Err(_) => Placement::default(),
    }
}

/// [`placement_of`] a live object.
pub(crate) fn live_placement(live: &Value) -> Placement {
    live.as_object().map(placement_of).unwrap_or_default()
}

/// Whether a live object is a hook instance: never pruned, never drift.
pub(crate) fn is_live_hook(live: &Value) -> bool {
    live_placement(live).is_hook()
}

fn whole_number(key: &str, value: &str) -> Result<i32, String> {
    value.trim().parse().map_err(|_| {
        format!(
            "{key}: {value:?} is not a whole number; waves are integers such as \"-1\" or \"2\""
        )
    })
}

fn split(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

fn converge_phases(value: &str) -> Result<Option<BTreeSet<Phase>>, String> {
    let mut phases = BTreeSet::new();
    for word in split(value) {
        phases.insert(match word {
            "pre-sync" => Phase::PreSync,
            "sync" => Phase::Sync,
            "post-sync" => Phase::PostSync,
            "sync-fail" => Phase::SyncFail,
            other => {
                return Err(format!(
                    "{HOOK}: {other:?} is not a hook phase; use pre-sync, sync, post-sync or sync-fail"
                ));
            }
        });
    }
    if phases.is_empty() {
        return Err(format!(
            "{HOOK} is empty; use pre-sync, sync, post-sync or sync-fail"
        ));
    }
    Ok(Some(phases))
}

/// Argo CD's phases; `None` for `Skip` (and `PostDelete`, which a sync never runs).
fn argo_phases(value: &str) -> Result<Option<BTreeSet<Phase>>, String> {
    let mut phases = BTreeSet::new();
    for word in split(value) {
        phases.insert(match word {
            "PreSync" => Phase::PreSync,
            "Sync" => Phase::Sync,
            "PostSync" => Phase::PostSync,
            "SyncFail" => Phase::SyncFail,
            "Skip" => return Ok(None),
            "PostDelete" => continue,
            other => {
                return Err(format!(
                    "{ARGO_HOOK}: {other:?} is not an Argo CD hook; use PreSync, Sync, PostSync, \
                     SyncFail or Skip"
                ));
            }
        });
    }
    Ok((!phases.is_empty()).then_some(phases))
}

/// Phases that run at every sync.
fn every(phases: BTreeSet<Phase>) -> BTreeMap<Phase, Occasion> {
    phases.into_iter().map(|p| (p, Occasion::Every)).collect()
}

/// Helm's hooks that a sync runs, with the syncs they run at; `None` when there are
/// none (`test`, `pre-delete`, `post-rollback`, …: Helm runs those on commands
/// converge does not have).
fn helm_phases(value: &str) -> Option<BTreeMap<Phase, Occasion>> {
    use SyncKind::{Install, Upgrade};
    let mut phases: BTreeMap<Phase, Occasion> = BTreeMap::new();
    for word in split(value) {
        let (phase, sync) = match word {
            "pre-install" => (Phase::PreSync, Install),
            "pre-upgrade" => (Phase::PreSync, Upgrade),
            "post-install" => (Phase::PostSync, Install),
            "post-upgrade" => (Phase::PostSync, Upgrade),
            _ => continue,
        };
        let occasion = Occasion::Only(sync);
        phases
            .entry(phase)
            .and_modify(|o| *o = o.or(occasion))
            .or_insert(occasion);
    }
    (!phases.is_empty()).then_some(phases)
}

fn delete_policy<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<BTreeSet<DeleteWhen>, String> {
    let Some((key, value)) = [HOOK_DELETE_POLICY, ARGO_DELETE_POLICY, HELM_DELETE_POLICY]
        .iter()
        .find_map(|k| Some((*k, get(k)?)))
    else {
        return Ok(BTreeSet::from([DeleteWhen::BeforeHookCreation]));
    };
    let mut policy = BTreeSet::new();
    for word in split(value) {
        policy.insert(match word {
            "before-hook-creation" | "BeforeHookCreation" => DeleteWhen::BeforeHookCreation,
            "hook-succeeded" | "HookSucceeded" => DeleteWhen::HookSucceeded,
            "hook-failed" | "HookFailed" => DeleteWhen::HookFailed,
            other => {
                return Err(format!(
                    "{key}: {other:?} is not a delete policy; use before-hook-creation, \
                     hook-succeeded or hook-failed"
                ));
            }
        });
    }
    Ok(policy)
}

/// The message for an object with only a `generateName` that is not a hook.
pub(crate) fn generate_name_outside_hook() -> String {
    format!(
        "metadata.generateName without a hook annotation: every sync would create another \
         object. Give it a metadata.name, or run it as a hook with `{HOOK}: pre-sync` (or \
         sync, post-sync, sync-fail; Argo CD's `{ARGO_HOOK}` and Helm's `{HELM_HOOK}` work \
         too)"
    )
}

/// What a stage of a sync is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "stage", rename_all = "kebab-case")]
pub enum StageKind {
    /// The hooks of one phase (pre-sync, post-sync, sync-fail), by weight.
    Hooks { phase: Phase },
    /// One wave: its objects (by kind rank) and its sync hooks.
    Wave { wave: i32 },
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageKind::Hooks { phase, .. } => write!(f, "{phase} hooks"),
            StageKind::Wave { wave } => write!(f, "wave {wave}"),
        }
    }
}

/// How much of a stage must be healthy before the sync goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Only the hooks it created must complete (nothing later depends on the rest).
    Hooks,
    /// Every object of the stage, and its hooks.
    All,
}

/// One stage of a sync: the plan's steps it covers, in plan order.
#[derive(Debug, Clone)]
pub(crate) struct Stage<'a> {
    pub kind: StageKind,
    pub steps: Vec<&'a Step>,
    pub wait: Wait,
}

impl<'a> Stage<'a> {
    /// The steps to write (the first-stage objects, Namespaces and CRDs, are written
    /// before every stage and left out).
    pub(crate) fn writes(&self) -> impl Iterator<Item = &'a Step> + '_ {
        self.steps.iter().copied().filter(|s| {
            !s.placement.is_hook()
                && matches!(
                    s.action,
                    Action::Create | Action::Configure | Action::Recreate
                )
                && !is_first_stage(&s.object.group, &s.object.kind)
        })
    }

    /// The hooks it runs.
    pub(crate) fn hooks(&self) -> impl Iterator<Item = &'a Step> + '_ {
        self.steps.iter().copied().filter(|s| s.placement.is_hook())
    }

    /// Its hooks in the groups that run together, in order: each created, then
    /// waited for until it completes, before the next group starts. Argo CD's hooks
    /// of one weight form one group (Argo CD runs a wave's hooks together); every
    /// other hook runs alone (Helm runs one at a time).
    pub(crate) fn batches(&self) -> Vec<Vec<&'a Step>> {
        let mut batches: Vec<Vec<&'a Step>> = Vec::new();
        for step in self.hooks() {
            let joins = |last: &&Step| {
                is_argo(last) && is_argo(step) && last.placement.wave == step.placement.wave
            };
            match batches.last_mut() {
                Some(batch) if batch.last().is_some_and(joins) => batch.push(step),
                _ => batches.push(vec![step]),
            }
        }
        batches
    }

    fn is_empty(&self) -> bool {
        self.writes().next().is_none() && self.hooks().next().is_none()
    }
}

/// The stages of a sync that writes something, in order: what runs, and what runs
/// when it fails (sync-fail hooks). A wave waits for health when a later stage
/// does something; hooks are always waited for. Waves with nothing to write are
/// kept only when a later stage must wait for them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stages<'a> {
    pub run: Vec<Stage<'a>>,
    pub on_failure: Vec<Stage<'a>>,
}

fn is_argo(step: &Step) -> bool {
    step.placement
        .hook
        .as_ref()
        .is_some_and(|h| h.dialect == Dialect::ArgoCd)
}

/// The order of the hooks within a phase: by weight, then as their tool orders
/// them. Helm sorts by name within a weight (its install order by kind only breaks
/// ties of names); converge and Argo CD by kind, then name.
fn hook_order(step: &Step) -> (i32, String, u16) {
    let name = match step.object.name.as_str() {
        "" => step
            .manifest
            .as_ref()
            .and_then(|m| m.generate_name())
            .unwrap_or_default(),
        name => name,
    }
    .to_string();
    let rank = apply_rank(&step.object.group, &step.object.kind);
    match step.placement.hook.as_ref().map(|h| h.dialect) {
        Some(Dialect::Helm) => (step.placement.wave, name, rank),
        _ => (step.placement.wave, format!("{rank:05}/{name}"), 0),
    }
}

impl<'a> Stages<'a> {
    pub(crate) fn of(steps: &'a [Step]) -> Self {
        let mut hooks: BTreeMap<Phase, Vec<&Step>> = BTreeMap::new();
        let mut waves: BTreeMap<i32, Vec<&Step>> = BTreeMap::new();
        for step in steps.iter().filter(|s| s.manifest.is_some()) {
            let wave = step.placement.wave;
            match &step.placement.hook {
                None => waves.entry(wave).or_default().push(step),
                Some(hook) => {
                    for &phase in hook.phases.keys() {
                        match phase {
                            Phase::Sync => waves.entry(wave).or_default().push(step),
                            phase => hooks.entry(phase).or_default().push(step),
                        }
                    }
                }
            }
        }
        let stage = |kind, steps| Stage {
            kind,
            steps,
            wait: Wait::Hooks,
        };
        let mut run = Vec::new();
        let mut on_failure = Vec::new();
        let mut post = Vec::new();
        for (phase, mut steps) in hooks {
            steps.sort_by_cached_key(|s| hook_order(s));
            let s = stage(StageKind::Hooks { phase }, steps);
            match phase {
                Phase::PreSync => run.push(s),
                Phase::PostSync => post.push(s),
                Phase::SyncFail => on_failure.push(s),
                Phase::Sync => {}
            }
        }
        run.extend(
            waves
                .into_iter()
                .map(|(wave, steps)| stage(StageKind::Wave { wave }, steps)),
        );
        run.extend(post);
        // From the end: a stage waits when something after it does anything.
        let mut later_acts = false;
        for stage in run.iter_mut().rev() {
            if later_acts && matches!(stage.kind, StageKind::Wave { .. }) {
                stage.wait = Wait::All;
            }
            later_acts |= !stage.is_empty();
        }
        run.retain(|s| s.wait == Wait::All || !s.is_empty());
        Stages { run, on_failure }
    }

    /// Whether the sync has more than one stage or any hook: then its plan and
    /// report show waves and phases.
    pub(crate) fn is_ordered(steps: &[Step]) -> bool {
        let mut waves = steps
            .iter()
            .filter(|s| s.manifest.is_some())
            .map(|s| (s.placement.is_hook(), s.placement.wave));
        let first = waves.next();
        first.is_some_and(|f| f.0) || waves.any(|w| w.0 || Some(w) != first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Step;
    use crate::manifest::{Manifest, ObjectRef, Origin};
    use serde_json::json;
    use std::path::PathBuf;

    fn role_of(annotations: Value) -> Result<Role, String> {
        let metadata = json!({"name": "x", "annotations": annotations});
        role(metadata.as_object())
    }

    fn placed(annotations: Value) -> Placement {
        match role_of(annotations) {
            Ok(Role::Placed(p)) => p,
            other => panic!("not placed: {other:?}"),
        }
    }

    fn hook(phases: &[Phase], delete: &[DeleteWhen]) -> Option<Hook> {
        dialect_hook(Dialect::Converge, phases, delete)
    }

    fn argo(phases: &[Phase], delete: &[DeleteWhen]) -> Option<Hook> {
        dialect_hook(Dialect::ArgoCd, phases, delete)
    }

    fn dialect_hook(dialect: Dialect, phases: &[Phase], delete: &[DeleteWhen]) -> Option<Hook> {
        Some(Hook {
            phases: phases.iter().map(|p| (*p, Occasion::Every)).collect(),
            delete: delete.iter().copied().collect(),
            dialect,
        })
    }

    fn helm(phases: &[(Phase, Occasion)], delete: &[DeleteWhen]) -> Option<Hook> {
        Some(Hook {
            phases: phases.iter().copied().collect(),
            delete: delete.iter().copied().collect(),
            dialect: Dialect::Helm,
        })
    }

    use DeleteWhen::*;
    use Phase::*;

    #[test]
    fn objects_without_annotations_are_wave_zero() {
        assert_eq!(role(None), Ok(Role::Placed(Placement::default())));
        assert_eq!(placed(json!({"other": "x"})), Placement::default());
        assert_eq!(placed(json!({WAVE: "-2"})).wave, -2);
        assert_eq!(placed(json!({ARGO_WAVE: " 5 "})).wave, 5);
        // converge's own wins over the alias.
        assert_eq!(placed(json!({WAVE: "1", ARGO_WAVE: "5"})).wave, 1);
        // A Helm weight orders hooks only.
        assert_eq!(placed(json!({HELM_WEIGHT: "3"})).wave, 0);
    }

    #[test]
    fn converge_hooks_with_phases_and_delete_policies() {
        let p = placed(json!({HOOK: "pre-sync"}));
        assert_eq!(
            p.hook,
            hook(&[PreSync], &[BeforeHookCreation]),
            "default policy"
        );
        let p = placed(json!({HOOK: "pre-sync, post-sync", WAVE: "-1",
            HOOK_DELETE_POLICY: "hook-succeeded,hook-failed"}));
        assert_eq!(p.wave, -1);
        assert_eq!(
            p.hook,
            hook(&[PreSync, PostSync], &[HookSucceeded, HookFailed])
        );
        assert_eq!(p.hook.as_ref().map(Hook::first_phase), Some(PreSync));
        assert!(role_of(json!({HOOK: "presync"})).is_err_and(|e| e.contains("\"presync\"")));
        assert!(role_of(json!({HOOK: ""})).is_err());
        assert!(
            role_of(json!({HOOK: "sync", HOOK_DELETE_POLICY: "never"}))
                .is_err_and(|e| e.contains("not a delete policy"))
        );
        assert!(
            role_of(json!({WAVE: "one"}))
                .is_err_and(|e| e.starts_with("converge.dev/wave: \"one\" is not a whole number"))
        );
    }

    #[test]
    fn argo_cd_annotations_are_aliases() {
        let p = placed(json!({ARGO_HOOK: "PreSync", ARGO_WAVE: "2",
            ARGO_DELETE_POLICY: "HookSucceeded"}));
        assert_eq!(p.wave, 2);
        assert_eq!(p.hook, argo(&[PreSync], &[HookSucceeded]));
        assert_eq!(
            placed(json!({ARGO_HOOK: "Sync"})).hook,
            argo(&[Sync], &[BeforeHookCreation])
        );
        assert_eq!(
            placed(json!({ARGO_HOOK: "PostSync"})).hook,
            argo(&[PostSync], &[BeforeHookCreation])
        );
        assert_eq!(
            placed(json!({ARGO_HOOK: "SyncFail"})).hook,
            argo(&[SyncFail], &[BeforeHookCreation])
        );
        assert!(matches!(
            role_of(json!({ARGO_HOOK: "Skip"})),
            Ok(Role::Skipped(_))
        ));
        assert!(matches!(
            role_of(json!({ARGO_HOOK: "PostDelete"})),
            Ok(Role::Skipped(_))
        ));
        assert!(role_of(json!({ARGO_HOOK: "presync"})).is_err());
        // converge's annotation wins.
        assert_eq!(
            placed(json!({HOOK: "post-sync", ARGO_HOOK: "PreSync"})).hook,
            hook(&[PostSync], &[BeforeHookCreation])
        );
    }

    #[test]
    fn helm_hooks_map_to_phases_and_weights() {
        let p = placed(
            json!({HELM_HOOK: "pre-install,pre-upgrade", HELM_WEIGHT: "-5",
            HELM_DELETE_POLICY: "before-hook-creation,hook-succeeded"}),
        );
        assert_eq!(p.wave, -5);
        let every = Occasion::Every;
        assert_eq!(
            p.hook,
            helm(&[(PreSync, every)], &[BeforeHookCreation, HookSucceeded])
        );
        let install = Occasion::Only(SyncKind::Install);
        let upgrade = Occasion::Only(SyncKind::Upgrade);
        assert_eq!(
            placed(json!({HELM_HOOK: "post-install"})).hook,
            helm(&[(PostSync, install)], &[BeforeHookCreation])
        );
        // Unsupported types are dropped; with none left, the object is skipped.
        assert_eq!(
            placed(json!({HELM_HOOK: "pre-delete,post-upgrade"})).hook,
            helm(&[(PostSync, upgrade)], &[BeforeHookCreation])
        );
        let mixed = placed(json!({HELM_HOOK: "pre-install,post-upgrade,post-install"})).hook;
        assert_eq!(
            mixed,
            helm(
                &[(PreSync, install), (PostSync, every)],
                &[BeforeHookCreation]
            )
        );
        let at_upgrade = mixed.as_ref().and_then(|h| h.at(SyncKind::Upgrade));
        assert_eq!(
            at_upgrade,
            helm(&[(PostSync, every)], &[BeforeHookCreation]),
            "pre-install does not run at an upgrade"
        );
        let only_upgrade = placed(json!({HELM_HOOK: "pre-upgrade"})).hook;
        assert_eq!(only_upgrade.and_then(|h| h.at(SyncKind::Install)), None);
        for value in [
            "test",
            "test-success",
            "pre-delete",
            "post-rollback",
            "crd-install",
        ] {
            assert!(
                matches!(role_of(json!({HELM_HOOK: value})), Ok(Role::Skipped(_))),
                "{value}"
            );
        }
    }

    #[test]
    fn live_hooks_are_recognised_by_any_alias() {
        let live =
            |annotations: Value| json!({"metadata": {"name": "x", "annotations": annotations}});
        assert!(is_live_hook(&live(json!({HOOK: "pre-sync"}))));
        assert!(is_live_hook(&live(json!({ARGO_HOOK: "PostSync"}))));
        assert!(is_live_hook(&live(json!({HELM_HOOK: "post-install"}))));
        assert!(!is_live_hook(&live(json!({WAVE: "3"}))));
        assert!(!is_live_hook(&json!({"metadata": {"name": "x"}})));
        assert_eq!(
            live_placement(&live(json!({WAVE: "x"}))),
            Placement::default()
        );
    }

    fn step(name: &str, action: Action, annotations: Value) -> Step {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "annotations": annotations}});
        let placement = placed(annotations);
        let manifest = Manifest {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            body: body.as_object().cloned().unwrap_or_default(),
            origin: Origin {
                file: PathBuf::from("a.yaml"),
                line: 1,
            },
        };
        Step {
            object: ObjectRef {
                group: String::new(),
                kind: "ConfigMap".into(),
                namespace: Some("ns".into()),
                name: name.into(),
            },
            action,
            diff: None,
            manifest: Some(manifest),
            live_uid: None,
            takeover: None,
            placement,
            owner: None,
        }
    }

    fn summary(stages: &[Stage]) -> Vec<String> {
        stages
            .iter()
            .map(|s| {
                let names: Vec<&str> = s.steps.iter().map(|s| s.object.name.as_str()).collect();
                let wait = match s.wait {
                    Wait::Hooks => "",
                    Wait::All => " (wait)",
                };
                format!("{}{wait}: {}", s.kind, names.join(" "))
            })
            .collect()
    }

    #[test]
    fn stages_run_pre_sync_waves_then_post_sync_and_waves_wait_for_what_follows() {
        let steps = vec![
            step("migrate", Action::Run, json!({HOOK: "pre-sync"})),
            step("schema", Action::Run, json!({HOOK: "pre-sync", WAVE: "-1"})),
            step("config", Action::Create, json!({})),
            step("web", Action::Configure, json!({WAVE: "1"})),
            step("seed", Action::Run, json!({HOOK: "sync", WAVE: "1"})),
            step("smoke", Action::Run, json!({HOOK: "post-sync"})),
            step("notify", Action::Run, json!({HOOK: "sync-fail"})),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(
            summary(&stages.run),
            [
                "pre-sync hooks: schema migrate",
                "wave 0 (wait): config",
                "wave 1 (wait): web seed",
                "post-sync hooks: smoke"
            ]
        );
        assert_eq!(summary(&stages.on_failure), ["sync-fail hooks: notify"]);
        assert!(Stages::is_ordered(&steps));
    }

    #[test]
    fn the_last_wave_waits_only_for_its_hooks_and_quiet_waves_only_when_waited_for() {
        let steps = vec![
            step("a", Action::Unchanged, json!({WAVE: "-1"})),
            step("b", Action::Create, json!({})),
            step("c", Action::Unchanged, json!({WAVE: "2"})),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(summary(&stages.run), ["wave -1 (wait): a", "wave 0: b"]);
        let steps = vec![
            step("a", Action::Create, json!({})),
            step("b", Action::Unchanged, json!({WAVE: "1"})),
            step("smoke", Action::Run, json!({HOOK: "post-sync"})),
        ];
        assert_eq!(
            summary(&Stages::of(&steps).run),
            [
                "wave 0 (wait): a",
                "wave 1 (wait): b",
                "post-sync hooks: smoke"
            ],
            "post-sync hooks wait for every wave"
        );
    }

    #[test]
    fn one_wave_without_hooks_is_not_ordered() {
        let steps = vec![
            step("a", Action::Create, json!({})),
            step("b", Action::Create, json!({})),
        ];
        assert!(!Stages::is_ordered(&steps));
        assert_eq!(summary(&Stages::of(&steps).run), ["wave 0: a b"]);
        let steps = vec![step("a", Action::Create, json!({WAVE: "3"}))];
        assert!(!Stages::is_ordered(&steps), "one wave, whatever its number");
        let steps = vec![
            step("a", Action::Create, json!({})),
            step("b", Action::Create, json!({WAVE: "1"})),
        ];
        assert!(Stages::is_ordered(&steps));
    }

    fn batch_names(stage: &Stage) -> Vec<String> {
        stage
            .batches()
            .iter()
            .map(|b| {
                let names: Vec<&str> = b.iter().map(|s| s.object.name.as_str()).collect();
                names.join("+")
            })
            .collect()
    }

    fn with_kind(mut step: Step, kind: &str) -> Step {
        step.object.kind = kind.into();
        step
    }

    #[test]
    fn helm_hooks_run_one_at_a_time_by_weight_then_name() {
        let helm = |weight: &str| json!({HELM_HOOK: "post-install", HELM_WEIGHT: weight});
        let steps = vec![
            step("web-job", Action::Run, helm("1")),
            with_kind(step("web-sa", Action::Run, helm("-5")), "ServiceAccount"),
            with_kind(step("web-role", Action::Run, helm("-5")), "Role"),
            with_kind(step("web-rb", Action::Run, helm("-5")), "RoleBinding"),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(
            batch_names(&stages.run[0]),
            ["web-rb", "web-role", "web-sa", "web-job"],
            "Helm sorts by weight, then name"
        );
    }

    #[test]
    fn converge_hooks_run_one_at_a_time_by_weight_kind_then_name() {
        let ours = |weight: &str| json!({HOOK: "post-sync", WAVE: weight});
        let steps = vec![
            step("web-job", Action::Run, ours("1")),
            with_kind(step("web-sa", Action::Run, ours("-5")), "ServiceAccount"),
            with_kind(step("web-role", Action::Run, ours("-5")), "Role"),
            with_kind(step("web-rb", Action::Run, ours("-5")), "RoleBinding"),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(
            batch_names(&stages.run[0]),
            ["web-sa", "web-role", "web-rb", "web-job"]
        );
    }

    #[test]
    fn argo_cd_hooks_of_one_wave_run_together() {
        let argo = |wave: &str| json!({ARGO_HOOK: "PreSync", ARGO_WAVE: wave});
        let steps = vec![
            step("b", Action::Run, argo("0")),
            step("a", Action::Run, argo("0")),
            step("c", Action::Run, argo("1")),
            step("d", Action::Run, json!({HOOK: "pre-sync", WAVE: "1"})),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(batch_names(&stages.run[0]), ["a+b", "c", "d"]);
        assert!(Dialect::ArgoCd.deletes_at_sync_end());
        assert!(!Dialect::Helm.deletes_at_sync_end());
    }

    #[test]
    fn a_hook_in_two_phases_runs_in_both() {
        let steps = vec![
            step("page", Action::Run, json!({HOOK: "pre-sync,post-sync"})),
            step("a", Action::Create, json!({})),
        ];
        assert_eq!(
            summary(&Stages::of(&steps).run),
            [
                "pre-sync hooks: page",
                "wave 0 (wait): a",
                "post-sync hooks: page"
            ]
        );
    }
}
