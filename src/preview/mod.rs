//! Pull-request previews: what merging a Git revision would do, for people who
//! review it (`converge diff --git URL --ref REF`).
//!
//! A [`Preview`] is the reviewer's view of a change: the objects created, changed,
//! re-created and pruned, each with its (masked) diff, and the hooks that would run
//! with the phase and weight they run in. It comes either from the engine's plan
//! against the live cluster ([`Preview::from_plan`], the server's dry-run) or from
//! two revisions compared offline, object by object ([`compare()`], no cluster: for
//! CI without cluster access). [`markdown()`] writes it as a pull-request comment
//! within a size limit; [`text`] and [`Preview::json`] as `diff` does.
//!
//! - `revision`: a Git URL or local repository at a ref → a [`crate::source::Snapshot`],
//!   through the daemon's own Git source (libgit2), in a scratch directory;
//! - `compare`: two revisions' manifests → a [`Preview`] (pure);
//! - `markdown`: a [`Preview`] → a Markdown comment with a size cap (pure).

mod compare;
mod markdown;
mod revision;

pub use compare::{CompareError, CompareOptions, Prune, compare};
pub use markdown::{MIN_MARKDOWN_BYTES, MarkdownOptions, markdown};
pub use revision::{Credentials, GitRevision, RefSpec, checkout};

use crate::engine::diff::ObjectDiff;
use crate::engine::order::{Phase, Placement};
use crate::engine::plan::{Plan, StepAction};
use crate::report::diff_text;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt::{self, Write as _};

/// What merging a revision would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    /// Every object that would be written or pruned, in apply order (prunes last).
    pub changes: Vec<Change>,
    /// Objects that would stay as they are (only counted).
    pub unchanged: usize,
    /// The hooks that would run: only when something is written, as in a sync.
    pub hooks: Vec<HookRun>,
}

/// One object that would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Deployment.apps/shop/web`.
    pub object: String,
    pub action: ChangeAction,
    /// `wave 0`: where in the sync it is written.
    pub stage: String,
    /// The unified diff, Secret values masked; `None` for a prune without one.
    pub diff: Option<ObjectDiff>,
}

/// What would happen to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeAction {
    Create,
    Change,
    /// Deleted and created again (an immutable field changed, re-creating allowed).
    Recreate,
    Prune,
    /// No longer in the revision, but kept: prune is off or the object says so.
    Keep,
}

impl fmt::Display for ChangeAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeAction::Create => "created",
            ChangeAction::Change => "changed",
            ChangeAction::Recreate => "recreated",
            ChangeAction::Prune => "pruned",
            ChangeAction::Keep => "kept (prune disabled)",
        })
    }
}

/// A hook that would run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// `Job.batch/shop/migrate` or, with only a generateName, `Job.batch/shop/migrate-*`.
    pub object: String,
    /// The phases it runs in, in order (`pre-sync`, `post-sync`, …).
    pub phases: Vec<Phase>,
    /// Its order within the phase (for a sync hook, its wave).
    pub wave: i32,
    /// Whether it runs only when the sync fails.
    pub only_on_failure: bool,
}

impl HookRun {
    fn of(object: String, placement: &Placement) -> Option<HookRun> {
        let hook = placement.hook.as_ref()?;
        let phases = hook.phase_list();
        Some(HookRun {
            object,
            only_on_failure: phases.iter().all(|p| *p == Phase::SyncFail),
            phases,
            wave: placement.wave,
        })
    }

    /// `pre-sync, weight 0` or `sync, wave 2`.
    pub fn when(&self) -> String {
        let phases: Vec<String> = self.phases.iter().map(ToString::to_string).collect();
        let order = match self.phases.as_slice() {
            [Phase::Sync] => "wave",
            _ => "weight",
        };
        format!("{}, {order} {}", phases.join(","), self.wave)
    }
}

/// Counts of a preview, for summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: usize,
    pub changed: usize,
    pub recreated: usize,
    pub pruned: usize,
    pub kept: usize,
    pub unchanged: usize,
    pub hooks: usize,
}

impl Preview {
    /// The reviewer's view of a plan the engine computed against the cluster.
    /// Hooks are listed only when the sync writes something, as they run then.
    pub fn from_plan(plan: &Plan) -> Preview {
        let mut preview = Preview::default();
        let writes = plan.has_changes();
        for step in &plan.steps {
            let action = match step.action {
                StepAction::Create => ChangeAction::Create,
                StepAction::Configure => ChangeAction::Change,
                StepAction::Recreate => ChangeAction::Recreate,
                StepAction::Prune => ChangeAction::Prune,
                StepAction::KeepPruneDisabled => ChangeAction::Keep,
                StepAction::Run => {
                    if writes {
                        preview
                            .hooks
                            .extend(HookRun::of(step.label(), &step.placement));
                    }
                    continue;
                }
                StepAction::Unchanged | StepAction::Completed | StepAction::Shared => {
                    preview.unchanged += 1;
                    continue;
                }
            };
            preview.changes.push(Change {
                object: step.label(),
                action,
                stage: format!("wave {}", step.placement.wave),
                diff: step.diff.clone(),
            });
        }
        preview.sort_hooks();
        preview
    }

    /// Hooks in the order they run: by phase, then weight, then name.
    pub(crate) fn sort_hooks(&mut self) {
        self.hooks
            .sort_by(|a, b| (&a.phases, a.wave, &a.object).cmp(&(&b.phases, b.wave, &b.object)));
    }

    /// Whether merging would write anything (`diff`'s exit code 1).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != ChangeAction::Keep)
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            unchanged: self.unchanged,
            hooks: self.hooks.len(),
            ..Counts::default()
        };
        for change in &self.changes {
            match change.action {
                ChangeAction::Create => counts.created += 1,
                ChangeAction::Change => counts.changed += 1,
                ChangeAction::Recreate => counts.recreated += 1,
                ChangeAction::Prune => counts.pruned += 1,
                ChangeAction::Keep => counts.kept += 1,
            }
        }
        counts
    }

    /// The preview for scripts: counts, every change with its diff, the hooks.
    pub fn json(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                json!({
                    "object": c.object,
                    "action": c.action,
                    "stage": c.stage,
                    "changedPaths": c.diff.as_ref().map(|d| &d.changed_paths),
                    "diff": c.diff.as_ref().map(|d| &d.unified),
                })
            })
            .collect();
        let hooks: Vec<Value> = self
            .hooks
            .iter()
            .map(|h| {
                json!({
                    "object": h.object,
                    "phases": h.phases.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "wave": h.wave,
                    "onlyOnFailure": h.only_on_failure,
                })
            })
            .collect();
        json!({
            "changed": self.has_changes(),
            "summary": self.counts(),
            "changes": changes,
            "hooks": hooks,
        })
    }
}

/// The preview as `diff` prints a plan: one line per change, the hooks, the
/// diffs, then the counts.
pub fn text(preview: &Preview, color: bool) -> String {
    let mut out = String::new();
    for change in &preview.changes {
        let _ = writeln!(
            out,
            "[{}] {} {}",
            change.stage, change.object, change.action
        );
    }
    for hook in &preview.hooks {
        let runs = match hook.only_on_failure {
            true => "runs if the sync fails",
            false => "runs",
        };
        let _ = writeln!(out, "[{}] {} {runs}", hook.when(), hook.object);
    }
    for diff in preview.changes.iter().filter_map(|c| c.diff.as_ref()) {
        out.push('\n');
        out.push_str(&diff_text(diff, color));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary(&preview.counts()));
    out.push('\n');
    out
}

/// `1 created, 1 changed, 1 pruned, 3 unchanged, 1 hook`.
pub fn summary(counts: &Counts) -> String {
    let mut parts = vec![
        format!("{} created", counts.created),
        format!("{} changed", counts.changed),
        format!("{} pruned", counts.pruned),
        format!("{} unchanged", counts.unchanged),
    ];
    if counts.recreated > 0 {
        parts.push(format!("{} recreated", counts.recreated));
    }
    if counts.kept > 0 {
        parts.push(format!("{} kept (prune disabled)", counts.kept));
    }
    if counts.hooks > 0 {
        let s = if counts.hooks == 1 { "" } else { "s" };
        parts.push(format!("{} hook{s} would run", counts.hooks));
    }
    parts.join(", ")
}
