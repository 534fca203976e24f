//! Reporting: a run's lines, diffs and summary people read and the JSON scripts read,
//! the end of `apply --wait`, and the `converge status` table. Pure formatting; no
//! decisions are made here.

mod diff;
mod style;
mod sync;

pub use diff::diff_text;
pub(crate) use style::Style;
#[cfg(test)]
pub(crate) use style::unstyled;
pub use sync::{add_sync, stage_label, sync_text};

use crate::engine::plan::{Plan, StepAction};
use crate::health::evidence::{ConditionInfo, Evidence, PodInfo};
use crate::health::{Progress, State, WaitOutcome};
use serde_json::{Value, json};
use std::fmt::Write;

/// How a plan is shown as text.
#[derive(Debug, Clone, Copy)]
pub struct TextOptions {
    /// Include a unified diff for every changed object (`diff`, `apply --dry-run`).
    pub diffs: bool,
    pub color: bool,
    /// Whether the plan was only previewed (changes the summary's wording).
    pub dry_run: bool,
}

/// One line per changed object, then (optionally) the diffs, then a summary.
/// Unchanged objects are only counted: in a large set they would drown the changes.
/// A plan with hooks or more than one wave says where each line runs (`[wave 1]`,
/// `[pre-sync]`); hooks are listed only when the sync writes something.
pub fn text(plan: &Plan, options: TextOptions) -> String {
    let mut out = String::new();
    let ordered = plan.is_ordered();
    let hooks_run = plan.has_changes();
    let listed = plan
        .steps
        .iter()
        .filter(|s| s.action != StepAction::Unchanged)
        .filter(|s| s.action != StepAction::Run || hooks_run);
    for step in listed {
        if ordered {
            let _ = write!(out, "[{}] ", sync::stage_of(step));
        }
        let _ = writeln!(out, "{} {}", step.label(), sync::action_of(step));
    }
    if options.diffs {
        for diff in plan.steps.iter().filter_map(|s| s.diff.as_ref()) {
            out.push('\n');
            out.push_str(&diff_text(diff, options.color));
        }
    }
    let counts = plan.counts();
    let _ = write!(
        out,
        "{}{} created, {} configured, {} unchanged, {} pruned",
        if out.is_empty() { "" } else { "\n" },
        counts.created,
        counts.configured,
        counts.unchanged,
        counts.pruned
    );
    if counts.recreated > 0 {
        let _ = write!(out, ", {} recreated", counts.recreated);
    }
    if counts.kept > 0 {
        let _ = write!(out, ", {} kept (prune disabled)", counts.kept);
    }
    if counts.shared > 0 {
        let _ = write!(out, ", {} shared", counts.shared);
    }
    if counts.completed > 0 {
        let _ = write!(out, ", {} completed (run once)", counts.completed);
    }
    if counts.hooks > 0 && hooks_run {
        let _ = write!(out, ", {} hooks", counts.hooks);
    }
    out.push_str(if options.dry_run {
        " (dry run: nothing written)\n"
    } else {
        "\n"
    });
    out
}

/// The plan for machines: every object with its action, changed fields and diff.
pub fn json(plan: &Plan, dry_run: bool) -> Value {
    let objects: Vec<Value> = plan
        .steps
        .iter()
        .map(|step| {
            json!({
                "object": step.object.to_string(),
                // A hook with only a generateName: `Job.batch/shop/migrate-*`.
                "label": step.label(),
                "group": step.object.group,
                "kind": step.object.kind,
                "namespace": step.object.namespace,
                "name": step.object.name,
                "action": step.action,
                "origin": step.origin().map(ToString::to_string),
                "wave": step.placement.wave,
                "hook": step.placement.hook.as_ref().map(|h| h.phase_list()),
                "changedPaths": step.diff.as_ref().map(|d| &d.changed_paths),
                "diff": step.diff.as_ref().map(|d| &d.unified),
            })
        })
        .collect();
    json!({
        "dryRun": dry_run,
        "changed": plan.has_changes(),
        "summary": plan.counts(),
        "objects": objects,
    })
}

/// The end of `apply --wait`: one line when everything is ready; otherwise a
/// count by state, then every object that is not ready with its evidence.
pub fn wait_text(outcome: &WaitOutcome) -> String {
    let seconds = outcome.elapsed.as_secs_f64();
    let total = outcome.objects.len();
    if outcome.all_ready() {
        return format!("All {total} objects ready after {seconds:.1}s.\n");
    }
    let counts: Vec<String> = [
        State::Failed,
        State::Missing,
        State::Progressing,
        State::Ready,
    ]
    .into_iter()
    .map(|state| (state, outcome.count(state)))
    .filter(|&(_, n)| n > 0)
    .map(|(state, n)| format!("{n} {state}"))
    .collect();
    let why = if outcome.timed_out {
        "timed out"
    } else {
        "a failure decided it"
    };
    let mut out = format!(
        "Not ready after {seconds:.1}s ({why}): {} of {total} objects.\n",
        counts.join(", ")
    );
    for object in outcome
        .objects
        .iter()
        .filter(|o| o.health.state != State::Ready)
    {
        let _ = writeln!(
            out,
            "\n{} {}: {}\n  decided by: {}",
            object.object, object.health.state, object.health.message, object.health.rule
        );
        if let Some(evidence) = &object.evidence {
            out.push_str(&evidence_text(evidence));
        }
    }
    out
}

/// Evidence as indented text: conditions, Events, Pods (with container states and
/// log lines) and what could not be found out.
pub fn evidence_text(evidence: &Evidence) -> String {
    let mut out = String::new();
    push_evidence(&mut out, evidence);
    out
}

fn push_evidence(out: &mut String, evidence: &Evidence) {
    if !evidence.conditions.is_empty() {
        out.push_str("  conditions:\n");
        for c in &evidence.conditions {
            let _ = writeln!(out, "    {}", condition_line(c));
        }
    }
    if !evidence.events.is_empty() {
        out.push_str("  events:\n");
        for e in &evidence.events {
            let times = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {} {} {}{times}: {}",
                e.type_, e.reason, e.object, e.message
            );
        }
    }
    for pod in &evidence.pods {
        push_pod(out, pod);
    }
    if !evidence.notes.is_empty() {
        out.push_str("  notes:\n");
        for note in &evidence.notes {
            let _ = writeln!(out, "    {note}");
        }
    }
}

fn condition_line(c: &ConditionInfo) -> String {
    let mut line = format!("{}={}", c.type_, c.status);
    if !c.reason.is_empty() {
        let _ = write!(line, " {}", c.reason);
    }
    if !c.message.is_empty() {
        let _ = write!(line, ": {}", c.message);
    }
    line
}

fn push_pod(out: &mut String, pod: &PodInfo) {
    let node = pod.node.as_deref().unwrap_or("no node");
    let _ = writeln!(out, "  pod {} ({}, {node}):", pod.name, pod.phase);
    for c in &pod.conditions {
        let _ = writeln!(out, "    {}", condition_line(c));
    }
    for c in &pod.containers {
        let init = if c.init {
            "init container"
        } else {
            "container"
        };
        let _ = write!(out, "    {init} {}: {}", c.name, c.state);
        if c.restarts > 0 {
            let _ = write!(out, ", {} restarts", c.restarts);
        }
        if let Some(last) = &c.last_state {
            let _ = write!(out, ", last: {last}");
        }
        out.push('\n');
        if let Some(log) = &c.log {
            let which = if log.previous {
                "previous run"
            } else {
                "current run"
            };
            let _ = writeln!(
                out,
                "    log of {} ({which}, last {} lines):",
                c.name,
                log.lines.len()
            );
            for line in &log.lines {
                let _ = writeln!(out, "      | {line}");
            }
        }
    }
}

/// One line of progress for a terminal: `12/35 ready, 4s: waiting for …`.
pub fn progress_line(progress: &Progress) -> String {
    let mut line = format!(
        "{}/{} ready, {}s",
        progress.ready,
        progress.total,
        progress.elapsed.as_secs()
    );
    if let Some(o) = progress.waiting_for {
        let _ = write!(line, ": waiting for {} ({})", o.object, o.health.message);
    }
    line
}

/// Adds the outcome of `apply --wait` to [`json()`]'s document: `health` (state,
/// message, evidence) on each object, and a `wait` summary.
pub fn add_wait(document: &mut Value, outcome: &WaitOutcome) {
    if let Some(objects) = document.get_mut("objects").and_then(Value::as_array_mut) {
        for entry in objects.iter_mut() {
            let name = entry.get("object").and_then(Value::as_str).unwrap_or("");
            let found = outcome
                .objects
                .iter()
                .find(|o| o.object.to_string() == name);
            if let Some(found) = found {
                entry["health"] = json!({
                    "state": found.health.state,
                    "message": found.health.message,
                    "rule": found.health.rule,
                    "evidence": found.evidence,
                });
            }
        }
    }
    document["wait"] = json!({
        "ready": outcome.all_ready(),
        "timedOut": outcome.timed_out,
        "seconds": (outcome.elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "readyObjects": outcome.count(State::Ready),
        "objects": outcome.objects.len(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::Step;
    use crate::manifest::ObjectRef;

    fn step(name: &str, action: StepAction, changed: Option<&str>) -> Step {
        let object = ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        };
        let diff = changed.map(|path| crate::engine::diff::ObjectDiff {
            object: object.clone(),
            unified: format!("--- live\n+++ desired\n@@ -1 +1 @@\n-{path}: a\n+{path}: b\n"),
            changed_paths: vec![path.to_string()],
        });
        Step {
            object,
            action,
            diff,
            manifest: None,
            live_uid: None,
            takeover: None,
            placement: Default::default(),
            owner: None,
        }
    }

    fn sample() -> Plan {
        Plan {
            steps: vec![
                step("a", StepAction::Configure, Some("data.color")),
                step("b", StepAction::Unchanged, None),
                step("c", StepAction::Prune, None),
            ],
        }
    }

    #[test]
    fn text_lists_changes_and_counts_unchanged() {
        let options = TextOptions {
            diffs: false,
            color: false,
            dry_run: false,
        };
        let out = text(&sample(), options);
        assert_eq!(
            out,
            "ConfigMap/ns/a configured\nConfigMap/ns/c pruned\n\n0 created, 1 configured, 1 unchanged, 1 pruned\n"
        );
    }

    #[test]
    fn an_ordered_plan_shows_waves_and_hooks_but_no_hook_when_nothing_is_written() {
        let manifest = |name: &str, annotations: serde_json::Value| {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "annotations": annotations}});
            crate::manifest::Manifest {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                body: body.as_object().cloned().unwrap_or_default(),
                origin: crate::manifest::Origin {
                    file: "a.yaml".into(),
                    line: 1,
                },
            }
        };
        let placed = |mut s: Step, annotations: serde_json::Value| {
            let m = manifest(&s.object.name, annotations);
            s.placement = crate::engine::order::placement_of(&m.body);
            s.manifest = Some(m);
            s
        };
        let hook = serde_json::json!({"converge.dev/hook": "pre-sync"});
        let notify = serde_json::json!({"converge.dev/hook": "sync-fail"});
        let mut plan = Plan {
            steps: vec![
                placed(step("migrate", StepAction::Run, None), hook),
                placed(step("a", StepAction::Create, None), serde_json::json!({})),
                placed(
                    step("b", StepAction::Configure, None),
                    serde_json::json!({"converge.dev/wave": "1"}),
                ),
                placed(step("notify", StepAction::Run, None), notify),
            ],
        };
        let options = TextOptions {
            diffs: false,
            color: false,
            dry_run: true,
        };
        assert_eq!(
            text(&plan, options),
            "[pre-sync] ConfigMap/ns/migrate runs
[wave 0] ConfigMap/ns/a created
\
             [wave 1] ConfigMap/ns/b configured
\
             [sync-fail] ConfigMap/ns/notify runs if the sync fails

\
             1 created, 1 configured, 0 unchanged, 0 pruned, 2 hooks (dry run: nothing written)
"
        );
        for s in &mut plan.steps {
            if s.action != StepAction::Run {
                s.action = StepAction::Unchanged;
            }
        }
        assert_eq!(
            text(&plan, options),
            "0 created, 0 configured, 2 unchanged, 0 pruned (dry run: nothing written)
"
        );
        let value = json(&plan, true);
        assert_eq!(value["objects"][0]["hook"], serde_json::json!(["pre-sync"]));
        assert_eq!(value["objects"][2]["wave"], 1);
    }

    #[test]
    fn text_shows_diffs_when_asked() {
        let options = TextOptions {
            diffs: true,
            color: false,
            dry_run: true,
        };
        let out = text(&sample(), options);
        assert!(out.contains("-data.color: a\n+data.color: b"), "{out}");
        assert!(out.ends_with("(dry run: nothing written)\n"), "{out}");
        let colored = text(
            &sample(),
            TextOptions {
                color: true,
                ..options
            },
        );
        assert!(colored.contains("\x1b["));
    }

    #[test]
    fn json_has_every_object_and_the_summary() {
        let value = json(&sample(), true);
        assert_eq!(value["changed"], true);
        assert_eq!(value["summary"]["configured"], 1);
        assert_eq!(value["objects"][0]["action"], "configure");
        assert_eq!(value["objects"][0]["changedPaths"][0], "data.color");
        assert_eq!(value["objects"][2]["action"], "prune");
    }

    fn waited(objects: Vec<(ObjectRef, crate::health::Health, Option<Evidence>)>) -> WaitOutcome {
        WaitOutcome {
            objects: objects
                .into_iter()
                .map(|(object, health, evidence)| crate::health::WaitedObject {
                    object,
                    health,
                    evidence,
                    live: None,
                })
                .collect(),
            elapsed: std::time::Duration::from_millis(60_040),
            timed_out: true,
        }
    }

    fn deployment() -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        }
    }

    fn scheduling_evidence() -> Evidence {
        use crate::health::evidence::{ContainerInfo, EventInfo, LogExcerpt};
        let unschedulable = ConditionInfo {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: "Unschedulable".into(),
            message: "0/2 nodes are available".into(),
        };
        Evidence {
            conditions: vec![ConditionInfo {
                type_: "Available".into(),
                status: "False".into(),
                reason: "MinimumReplicasUnavailable".into(),
                message: String::new(),
            }],
            events: vec![EventInfo {
                object: "Pod/web-1".into(),
                type_: "Warning".into(),
                reason: "FailedScheduling".into(),
                message: "0/2 nodes are available".into(),
                count: 3,
                last_seen: None,
            }],
            pods: vec![PodInfo {
                name: "web-1".into(),
                phase: "Pending".into(),
                node: None,
                conditions: vec![unschedulable],
                containers: vec![ContainerInfo {
                    name: "app".into(),
                    init: false,
                    ready: false,
                    restarts: 2,
                    state: "waiting: CrashLoopBackOff".into(),
                    last_state: Some("terminated: Error (exit code 1)".into()),
                    log: Some(LogExcerpt {
                        previous: true,
                        lines: vec!["panic: no database".into()],
                    }),
                }],
            }],
            notes: vec!["the log of container x is unavailable: refused".into()],
        }
    }

    #[test]
    fn wait_text_is_one_line_when_everything_is_ready() {
        let mut outcome = waited(vec![(
            deployment(),
            crate::health::Health::ready("1 of 1"),
            None,
        )]);
        outcome.timed_out = false;
        outcome.elapsed = std::time::Duration::from_millis(1_260);
        assert_eq!(wait_text(&outcome), "All 1 objects ready after 1.3s.\n");
    }

    #[test]
    fn wait_text_explains_what_is_not_ready() {
        let outcome = waited(vec![
            (
                deployment(),
                crate::health::Health::progressing("0 of 1 replicas available"),
                Some(scheduling_evidence()),
            ),
            (
                step("c", StepAction::Create, None).object,
                crate::health::Health::ready("exists"),
                None,
            ),
        ]);
        let text = wait_text(&outcome);
        let expected = "Not ready after 60.0s (timed out): 1 progressing, 1 ready of 2 objects.

Deployment.apps/ns/web progressing: 0 of 1 replicas available
  decided by: built-in
  conditions:
    Available=False MinimumReplicasUnavailable
  events:
    Warning FailedScheduling Pod/web-1 (x3): 0/2 nodes are available
  pod web-1 (Pending, no node):
    PodScheduled=False Unschedulable: 0/2 nodes are available
    container app: waiting: CrashLoopBackOff, 2 restarts, last: terminated: Error (exit code 1)
    log of app (previous run, last 1 lines):
      | panic: no database
  notes:
    the log of container x is unavailable: refused
";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_gets_health_per_object_and_a_wait_summary() {
        let plan = Plan {
            steps: vec![Step {
                object: deployment(),
                action: StepAction::Create,
                diff: None,
                manifest: None,
                live_uid: None,
                takeover: None,
                placement: Default::default(),
                owner: None,
            }],
        };
        let mut document = json(&plan, false);
        let outcome = waited(vec![(
            deployment(),
            crate::health::Health::failed("rollout failed"),
            Some(scheduling_evidence()),
        )]);
        add_wait(&mut document, &outcome);
        let health = &document["objects"][0]["health"];
        assert_eq!(health["state"], "failed");
        assert_eq!(
            health["evidence"]["events"][0]["reason"],
            "FailedScheduling"
        );
        assert_eq!(
            health["evidence"]["pods"][0]["containers"][0]["log"]["previous"],
            true
        );
        assert_eq!(document["wait"]["ready"], false);
        assert_eq!(document["wait"]["timedOut"], true);
        assert_eq!(document["wait"]["seconds"], 60.0);
    }

    #[test]
    fn progress_names_what_is_waited_for() {
        let outcome = waited(vec![(
            deployment(),
            crate::health::Health::progressing("0 of 1 replicas available"),
            None,
        )]);
        let progress = Progress {
            ready: 3,
            total: 4,
            elapsed: std::time::Duration::from_millis(4_900),
            waiting_for: outcome.objects.first(),
        };
        assert_eq!(
            progress_line(&progress),
            "3/4 ready, 4s: waiting for Deployment.apps/ns/web (0 of 1 replicas available)"
        );
    }
}
