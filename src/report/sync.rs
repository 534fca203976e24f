//! The stages of an ordered sync as they ran: each hook with its outcome, each
//! wave that was waited for, the failure with its evidence.

use super::evidence_text;
use crate::engine::order::{Phase, StageKind};
use crate::engine::plan::{Step, StepAction};
use crate::engine::{StageRun, SyncLog};
use crate::health::{State, WaitedObject};
use serde_json::Value;
use std::fmt::Write;

/// Where a plan's step runs: `wave 1`, or its hook phases (`pre-sync`).
pub(super) fn stage_of(step: &Step) -> String {
    match &step.placement.hook {
        Some(hook) => {
            let phases: Vec<String> = hook.phases.keys().map(ToString::to_string).collect();
            phases.join(",")
        }
        None => format!("wave {}", step.placement.wave),
    }
}

/// What a plan's line says of a step: its action, and for a hook that only runs
/// when the sync fails, that.
pub(super) fn action_of(step: &Step) -> String {
    match &step.placement.hook {
        Some(hook) if hook.phases.keys().all(|p| *p == Phase::SyncFail) => {
            "runs if the sync fails".into()
        }
        _ => match (&step.action, &step.owner) {
            (StepAction::Shared, Some(owner)) => format!("shared (owned by {owner})"),
            _ => step.action.to_string(),
        },
    }
}

/// One line per hook and per wave waited for, evidence under what is not healthy,
/// and the failure last; empty for a sync without waves or hooks.
pub fn sync_text(log: &SyncLog) -> String {
    let mut out = String::new();
    for run in &log.stages {
        push_stage(&mut out, run);
    }
    if let Some(failed) = &log.failed {
        let _ = writeln!(out, "sync failed: {}", failed.message);
        if !failed.not_run.is_empty() {
            let stages: Vec<String> = failed.not_run.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "not run: {}", stages.join(", "));
        }
    }
    out
}

/// `pre-sync`, `wave 1`: how lines of a stage are marked.
pub fn stage_label(kind: StageKind) -> String {
    match kind {
        StageKind::Hooks { phase, .. } => phase.to_string(),
        StageKind::Wave { wave } => format!("wave {wave}"),
    }
}

fn push_stage(out: &mut String, run: &StageRun) {
    let label = stage_label(run.kind);
    let Some(waited) = &run.waited else {
        let _ = writeln!(out, "[{label}] {} written", count(run.written));
        return;
    };
    let seconds = waited.elapsed.as_secs_f64();
    let hooks: Vec<&WaitedObject> = waited
        .objects
        .iter()
        .filter(|o| is_hook_of(run, o))
        .collect();
    let objects: Vec<&WaitedObject> = waited
        .objects
        .iter()
        .filter(|o| !is_hook_of(run, o))
        .collect();
    if !objects.is_empty() {
        let ready = objects
            .iter()
            .filter(|o| o.health.state == State::Ready)
            .count();
        match ready == objects.len() {
            true => {
                let _ = writeln!(out, "[{label}] {} ready after {seconds:.1}s", count(ready));
            }
            false => {
                let _ = writeln!(
                    out,
                    "[{label}] {ready} of {} ready after {seconds:.1}s{}",
                    count(objects.len()),
                    if waited.timed_out { " (timed out)" } else { "" }
                );
            }
        }
    }
    for hook in hooks {
        let deleted = match run.deleted.contains(&hook.object.to_string()) {
            true => "; deleted by its delete policy",
            false => "",
        };
        let sync = match run.kind {
            StageKind::Wave { .. } => " (sync hook)",
            StageKind::Hooks { .. } => "",
        };
        let _ = writeln!(
            out,
            "[{label}] {}{sync} {} after {seconds:.1}s: {}{deleted}",
            hook.object, hook.health.state, hook.health.message
        );
    }
    for object in waited
        .objects
        .iter()
        .filter(|o| o.health.state != State::Ready)
    {
        if !is_hook_of(run, object) {
            let health = &object.health;
            let _ = writeln!(out, "  {} {health} (by {})", object.object, health.rule);
        }
        if let Some(evidence) = &object.evidence {
            out.push_str(&evidence_text(evidence));
        }
    }
}

/// Hooks are the objects a stage created; in a wave, the rest are its objects.
fn is_hook_of(run: &StageRun, object: &WaitedObject) -> bool {
    match run.kind {
        StageKind::Hooks { .. } => true,
        StageKind::Wave { .. } => run.hooks.contains(&object.object.to_string()),
    }
}

fn count(n: usize) -> String {
    match n {
        1 => "1 object".into(),
        n => format!("{n} objects"),
    }
}

/// Adds the stages of the sync to [`super::json()`]'s document as `sync`.
pub fn add_sync(document: &mut Value, log: &SyncLog) {
    if !log.is_empty() {
        document["sync"] = serde_json::to_value(log).unwrap_or(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Failure;
    use crate::engine::order::Phase;
    use crate::health::{Health, WaitOutcome};
    use crate::manifest::ObjectRef;
    use std::time::Duration;

    fn object(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: if kind == "Job" {
                "batch".into()
            } else {
                String::new()
            },
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn waited(objects: Vec<(ObjectRef, Health)>, seconds: f64, timed_out: bool) -> WaitOutcome {
        WaitOutcome {
            objects: objects
                .into_iter()
                .map(|(object, health)| WaitedObject {
                    object,
                    health,
                    evidence: None,
                    live: None,
                })
                .collect(),
            elapsed: Duration::from_secs_f64(seconds),
            timed_out,
        }
    }

    #[test]
    fn each_hook_and_wave_gets_a_line_and_the_failure_comes_last() {
        let pre = StageKind::Hooks {
            phase: Phase::PreSync,
        };
        let migrate = object("Job", "migrate-x7k2p");
        let log = SyncLog {
            stages: vec![
                StageRun {
                    kind: pre,
                    written: 1,
                    hooks: vec![migrate.to_string()],
                    waited: Some(waited(
                        vec![(migrate.clone(), Health::ready("completed (1 succeeded)"))],
                        1.04,
                        false,
                    )),
                    deleted: vec![migrate.to_string()],
                },
                StageRun {
                    kind: StageKind::Wave { wave: 0 },
                    written: 2,
                    hooks: Vec::new(),
                    waited: Some(waited(
                        vec![
                            (object("ConfigMap", "a"), Health::ready("exists")),
                            (object("ConfigMap", "b"), Health::progressing("not yet")),
                        ],
                        5.0,
                        true,
                    )),
                    deleted: Vec::new(),
                },
            ],
            failed: Some(Failure {
                stage: StageKind::Wave { wave: 0 },
                message: "wave 0: ConfigMap/ns/b progressing: not yet (not ready after 5s)".into(),
                not_run: vec![StageKind::Wave { wave: 1 }],
            }),
        };
        assert_eq!(
            sync_text(&log),
            "[pre-sync] Job.batch/ns/migrate-x7k2p ready after 1.0s: completed (1 succeeded); \
             deleted by its delete policy\n\
             [wave 0] 1 of 2 objects ready after 5.0s (timed out)\n  \
             ConfigMap/ns/b progressing: not yet (by built-in)\n\
             sync failed: wave 0: ConfigMap/ns/b progressing: not yet (not ready after 5s)\n\
             not run: wave 1\n"
        );
        let json = serde_json::to_value(&log).expect("serializes");
        assert_eq!(json["stages"][0]["stage"], "hooks");
        assert_eq!(json["stages"][0]["phase"], "pre-sync");
        assert_eq!(json["failed"]["wave"], 0);
        assert_eq!(json["failed"]["notRun"][0]["stage"], "wave");
    }

    #[test]
    fn a_wave_not_waited_for_says_what_it_wrote() {
        let log = SyncLog {
            stages: vec![StageRun {
                kind: StageKind::Wave { wave: 2 },
                written: 3,
                hooks: Vec::new(),
                waited: None,
                deleted: Vec::new(),
            }],
            failed: None,
        };
        assert_eq!(sync_text(&log), "[wave 2] 3 objects written\n");
        assert!(SyncLog::default().is_empty());
    }
}
