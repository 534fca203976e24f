//! Where each object goes in a sync: its wave, or the hook phase it runs in, read
//! from annotations (converge's own, and Argo CD's and Helm's as aliases, so that
//! repositories written for them run unchanged).
//!
//! A sync is: pre-sync hooks (by weight), then waves in ascending order (each with
//! its sync hooks; the next starts once it is healthy), then prunes in descending
//! wave order, then post-sync hooks. Sync-fail hooks run when any of that fails.
//! Hooks are steps, not live state: they run only when the sync writes something.
//!
//! Pure: unit-tested here; [`crate::engine::stages`] groups a plan's steps into the
//! stages of a sync and [`crate::engine::sequence`] carries them out.

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

pub(crate) const ARGO_WAVE: &str = "argocd.argoproj.io/sync-wave";
pub(crate) const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
const ARGO_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
pub(crate) const HELM_HOOK: &str = "helm.sh/hook";
pub(crate) const HELM_WEIGHT: &str = "helm.sh/hook-weight";
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
pub(crate) enum Disposition {
    Placed(Placement),
    /// Never applied: Argo CD's `Skip`, or only Helm hooks a sync never runs
    /// (`test`, `pre-delete`, `pre-rollback`, …). The reason says which.
    Skipped(String),
}

/// Reads an object's ordering annotations: converge's own first, then Argo CD's,
/// then Helm's. Errors name the annotation and the values it takes.
pub(crate) fn role(metadata: Option<&Map<String, Value>>) -> Result<Disposition, String> {
    let annotations = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let get = |key: &str| annotations.and_then(|a| a.get(key)).and_then(Value::as_str);
    let hook = match (get(HOOK), get(ARGO_HOOK), get(HELM_HOOK)) {
        (Some(value), _, _) => converge_phases(value)?.map(|p| (every(p), Dialect::Converge)),
        (None, Some(value), _) => match argo_phases(value)? {
            Some(phases) => Some((every(phases), Dialect::ArgoCd)),
            None => return Ok(Disposition::Skipped(format!("{ARGO_HOOK}: {value}"))),
        },
        (None, None, Some(value)) => match helm_phases(value) {
            Some(phases) => Some((phases, Dialect::Helm)),
            None => {
                return Ok(Disposition::Skipped(format!(
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
    Ok(Disposition::Placed(Placement { wave, hook }))
}

/// The placement of an object (a manifest's body, or a live object: for prune
/// order and to recognise hooks), with anything unreadable taken as wave 0.
pub(crate) fn placement_of(object: &Map<String, Value>) -> Placement {
    match role(object.get("metadata").and_then(Value::as_object)) {
        Ok(Disposition::Placed(placement)) => placement,
        Ok(Disposition::Skipped(_)) | Err(_) => Placement::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role_of(annotations: Value) -> Result<Disposition, String> {
        let metadata = json!({"name": "x", "annotations": annotations});
        role(metadata.as_object())
    }

    fn placed(annotations: Value) -> Placement {
        match role_of(annotations) {
            Ok(Disposition::Placed(p)) => p,
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
        assert_eq!(role(None), Ok(Disposition::Placed(Placement::default())));
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
            Ok(Disposition::Skipped(_))
        ));
        assert!(matches!(
            role_of(json!({ARGO_HOOK: "PostDelete"})),
            Ok(Disposition::Skipped(_))
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
                matches!(
                    role_of(json!({HELM_HOOK: value})),
                    Ok(Disposition::Skipped(_))
                ),
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
}
