//! Reporting a run: the lines, diffs and summary people read, and the JSON that
//! scripts read. Pure formatting of a [`Plan`]; no decisions are made here.

use crate::diff;
use crate::plan::{Action, Plan};
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
pub fn text(plan: &Plan, options: TextOptions) -> String {
    let mut out = String::new();
    for step in plan.steps.iter().filter(|s| s.action != Action::Unchanged) {
        let _ = writeln!(out, "{} {}", step.object, step.action);
    }
    if options.diffs {
        for diff in plan.steps.iter().filter_map(|s| s.diff.as_ref()) {
            out.push('\n');
            out.push_str(&diff::render(diff, options.color));
        }
    }
    let counts = plan.counts();
    let _ = write!(
        out,
        "{}{} created, {} configured, {} unchanged, {} pruned",
        if plan.steps.iter().any(|s| s.action != Action::Unchanged) {
            "\n"
        } else {
            ""
        },
        counts.created,
        counts.configured,
        counts.unchanged,
        counts.pruned
    );
    if counts.kept > 0 {
        let _ = write!(out, ", {} kept (prune disabled)", counts.kept);
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
                "group": step.object.group,
                "kind": step.object.kind,
                "namespace": step.object.namespace,
                "name": step.object.name,
                "action": step.action,
                "origin": step.origin().map(ToString::to_string),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ObjectRef;
    use crate::plan::Step;

    fn step(name: &str, action: Action, changed: Option<&str>) -> Step {
        let object = ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        };
        let diff = changed.map(|path| diff::ObjectDiff {
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
        }
    }

    fn sample() -> Plan {
        Plan {
            steps: vec![
                step("a", Action::Configure, Some("data.color")),
                step("b", Action::Unchanged, None),
                step("c", Action::Prune, None),
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
}
