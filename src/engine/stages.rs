//! The stages of a sync, from a plan's steps and their placements
//! ([`super::order`]): pre-sync hooks (by weight), then waves in ascending order
//! (each with its sync hooks), then post-sync hooks; sync-fail hooks when any of
//! that fails. Which stages wait for health, and which hooks run together.
//!
//! Pure: unit-tested here; [`super::sequence`] carries the stages out.

use crate::engine::order::{Dialect, Phase, StageKind};
use crate::engine::plan::{Step, StepAction, apply_rank, is_first_stage};
use std::collections::BTreeMap;

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
                    StepAction::Create | StepAction::Configure | StepAction::Recreate
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::order::{
        ARGO_HOOK, ARGO_WAVE, HELM_HOOK, HELM_WEIGHT, HOOK, WAVE, placement_of,
    };
    use crate::manifest::{Manifest, ObjectRef, Origin};
    use serde_json::{Value, json};
    use std::path::PathBuf;

    fn is_ordered(steps: &[Step]) -> bool {
        crate::engine::plan::Plan {
            steps: steps.to_vec(),
        }
        .is_ordered()
    }

    fn step(name: &str, action: StepAction, annotations: Value) -> Step {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "annotations": annotations}});
        let placement = placement_of(
            &json!({"metadata": {"name": name, "annotations": annotations}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
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
            step("migrate", StepAction::Run, json!({HOOK: "pre-sync"})),
            step(
                "schema",
                StepAction::Run,
                json!({HOOK: "pre-sync", WAVE: "-1"}),
            ),
            step("config", StepAction::Create, json!({})),
            step("web", StepAction::Configure, json!({WAVE: "1"})),
            step("seed", StepAction::Run, json!({HOOK: "sync", WAVE: "1"})),
            step("smoke", StepAction::Run, json!({HOOK: "post-sync"})),
            step("notify", StepAction::Run, json!({HOOK: "sync-fail"})),
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
        assert!(is_ordered(&steps));
    }

    #[test]
    fn the_last_wave_waits_only_for_its_hooks_and_quiet_waves_only_when_waited_for() {
        let steps = vec![
            step("a", StepAction::Unchanged, json!({WAVE: "-1"})),
            step("b", StepAction::Create, json!({})),
            step("c", StepAction::Unchanged, json!({WAVE: "2"})),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(summary(&stages.run), ["wave -1 (wait): a", "wave 0: b"]);
        let steps = vec![
            step("a", StepAction::Create, json!({})),
            step("b", StepAction::Unchanged, json!({WAVE: "1"})),
            step("smoke", StepAction::Run, json!({HOOK: "post-sync"})),
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
            step("a", StepAction::Create, json!({})),
            step("b", StepAction::Create, json!({})),
        ];
        assert!(!is_ordered(&steps));
        assert_eq!(summary(&Stages::of(&steps).run), ["wave 0: a b"]);
        let steps = vec![step("a", StepAction::Create, json!({WAVE: "3"}))];
        assert!(!is_ordered(&steps), "one wave, whatever its number");
        let steps = vec![
            step("a", StepAction::Create, json!({})),
            step("b", StepAction::Create, json!({WAVE: "1"})),
        ];
        assert!(is_ordered(&steps));
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
            step("web-job", StepAction::Run, helm("1")),
            with_kind(
                step("web-sa", StepAction::Run, helm("-5")),
                "ServiceAccount",
            ),
            with_kind(step("web-role", StepAction::Run, helm("-5")), "Role"),
            with_kind(step("web-rb", StepAction::Run, helm("-5")), "RoleBinding"),
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
            step("web-job", StepAction::Run, ours("1")),
            with_kind(
                step("web-sa", StepAction::Run, ours("-5")),
                "ServiceAccount",
            ),
            with_kind(step("web-role", StepAction::Run, ours("-5")), "Role"),
            with_kind(step("web-rb", StepAction::Run, ours("-5")), "RoleBinding"),
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
            step("b", StepAction::Run, argo("0")),
            step("a", StepAction::Run, argo("0")),
            step("c", StepAction::Run, argo("1")),
            step("d", StepAction::Run, json!({HOOK: "pre-sync", WAVE: "1"})),
        ];
        let stages = Stages::of(&steps);
        assert_eq!(batch_names(&stages.run[0]), ["a+b", "c", "d"]);
        assert!(Dialect::ArgoCd.deletes_at_sync_end());
        assert!(!Dialect::Helm.deletes_at_sync_end());
    }

    #[test]
    fn a_hook_in_two_phases_runs_in_both() {
        let steps = vec![
            step("page", StepAction::Run, json!({HOOK: "pre-sync,post-sync"})),
            step("a", StepAction::Create, json!({})),
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
