//! A [`Preview`] as a pull-request comment (GitHub-flavoured Markdown).
//!
//! The comment reads top-down: a title, the counts, a table of every object that
//! would change (with its stage), a table of the hooks that would run (phase and
//! weight), then each diff folded in a `<details>` block. Forges cap comments
//! (GitHub at 65,536 characters), so the whole comment stays within
//! [`MarkdownOptions::max_bytes`]: the tables come first and always fit when
//! anything can; diffs are added in order while they fit, and a note says how
//! many were left out. Diffs are the engine's, with Secret values already masked.

use super::{ChangeAction, Preview, summary};
use std::fmt::Write as _;

/// How the comment is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownOptions {
    /// The heading's text (Markdown allowed), e.g. ``converge preview of `feature` ``.
    pub title: String,
    /// The most bytes the comment may take, note included.
    pub max_bytes: usize,
}

/// The smallest `max_bytes` that leaves room for a title, the counts and the note.
pub const MIN_MARKDOWN_BYTES: usize = 1024;

/// Room kept for the truncation note.
const NOTE_ROOM: usize = 320;

/// The comment, at most `options.max_bytes` long (and at least
/// [`MIN_MARKDOWN_BYTES`], whatever is asked).
pub fn markdown(preview: &Preview, options: &MarkdownOptions) -> String {
    let limit = options.max_bytes.max(MIN_MARKDOWN_BYTES);
    let mut head = String::new();
    let _ = writeln!(head, "### {}\n", one_line(&options.title));
    let _ = writeln!(head, "**{}**\n", summary(&preview.counts()));
    if !preview.has_changes() && preview.changes.is_empty() {
        head.push_str("No changes.\n");
    }
    // Rows and diffs are blocks, added in order while they fit.
    let mut blocks: Vec<String> = Vec::new();
    if !preview.changes.is_empty() {
        blocks.push("| Change | Object | Stage |\n|---|---|---|\n".into());
        for change in &preview.changes {
            blocks.push(format!(
                "| {} {} | `{}` | {} |\n",
                icon(change.action),
                change.action,
                change.object,
                change.stage
            ));
        }
        blocks.push("\n".into());
    }
    if !preview.hooks.is_empty() {
        blocks.push("#### Hooks that would run\n\n| Hook | Phase | Runs |\n|---|---|---|\n".into());
        for hook in &preview.hooks {
            let runs = match hook.only_on_failure {
                true => "only if the sync fails",
                false => "every sync that writes",
            };
            blocks.push(format!(
                "| `{}` | {} | {runs} |\n",
                hook.object,
                hook.when()
            ));
        }
        blocks.push("\n".into());
    }
    let tables = blocks.len();
    let diffs: Vec<(String, String)> = preview
        .changes
        .iter()
        .filter_map(|c| {
            let diff = c.diff.as_ref()?;
            Some((
                format!("{} {}", escape_html(&c.object), c.action),
                diff.unified.clone(),
            ))
        })
        .collect();
    if !diffs.is_empty() {
        blocks.push("#### Diffs\n\n".into());
        for (summary, unified) in &diffs {
            blocks.push(details(summary, unified));
        }
    }
    let mut out = head;
    let mut left_out = 0;
    let mut diffs_left_out = 0;
    for (index, block) in blocks.iter().enumerate() {
        let fits = out.len() + block.len() + NOTE_ROOM <= limit;
        if left_out == 0 && fits {
            out.push_str(block);
            continue;
        }
        left_out += 1;
        if index > tables {
            diffs_left_out += 1;
        }
    }
    if left_out > 0 {
        // Close a table that was cut, so the note is a paragraph of its own.
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        let what = match left_out - diffs_left_out {
            0 => format!("{diffs_left_out} of {} diffs", diffs.len()),
            _ => "some rows and diffs".to_string(),
        };
        let _ = writeln!(
            out,
            "> **Note:** truncated to {limit} bytes (`--max-bytes`): {what} left out. \
             Run `converge diff` for the whole preview."
        );
    }
    if out.len() > limit {
        // Only a title longer than the limit gets here.
        let mut end = limit;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

fn icon(action: ChangeAction) -> &'static str {
    match action {
        ChangeAction::Create => "➕",
        ChangeAction::Change => "✏️",
        ChangeAction::Recreate => "♻️",
        ChangeAction::Prune => "🗑️",
        ChangeAction::Keep => "⏸️",
    }
}

/// A diff folded under its summary, in a fence longer than any run of backticks
/// inside it, so no manifest can end the block early.
fn details(summary: &str, unified: &str) -> String {
    let longest = unified.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let body = unified.trim_end_matches('\n');
    format!(
        "<details><summary><code>{summary}</code></summary>\n\n{fence}diff\n{body}\n{fence}\n\n</details>\n\n"
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A heading is one line.
fn one_line(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::diff::ObjectDiff;
    use crate::engine::order::Phase;
    use crate::manifest::ObjectRef;
    use crate::preview::{Change, HookRun};

    fn change(name: &str, action: ChangeAction, diff_lines: usize) -> Change {
        let object = ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        };
        let mut unified = format!("--- base/{object}\n+++ head/{object}\n@@ -1 +1 @@\n");
        for i in 0..diff_lines {
            unified.push_str(&format!("+  key{i}: value\n"));
        }
        Change {
            object: object.to_string(),
            action,
            stage: "wave 0".into(),
            diff: Some(ObjectDiff {
                object,
                unified,
                changed_paths: vec!["data".into()],
            }),
        }
    }

    fn preview(diffs: usize, lines: usize) -> Preview {
        Preview {
            changes: (0..diffs)
                .map(|i| change(&format!("c{i}"), ChangeAction::Change, lines))
                .collect(),
            unchanged: 2,
            hooks: vec![HookRun {
                object: "Job.batch/shop/migrate-*".into(),
                phases: vec![Phase::PreSync],
                wave: -1,
                only_on_failure: false,
            }],
        }
    }

    fn options(max_bytes: usize) -> MarkdownOptions {
        MarkdownOptions {
            title: "converge preview of `feature`".into(),
            max_bytes,
        }
    }

    #[test]
    fn every_change_hook_and_diff_is_shown_when_it_fits() {
        let text = markdown(&preview(2, 3), &options(65_536));
        assert!(text.starts_with("### converge preview of `feature`\n"));
        assert!(text.contains("**0 created, 2 changed, 0 pruned, 2 unchanged, 1 hook would run**"));
        assert!(text.contains("| ✏️ changed | `ConfigMap/shop/c0` | wave 0 |"));
        assert!(text.contains("| `Job.batch/shop/migrate-*` | pre-sync, weight -1 |"));
        assert_eq!(text.matches("<details>").count(), 2);
        assert_eq!(text.matches("</details>").count(), 2);
        assert!(text.contains("```diff\n--- base/ConfigMap/shop/c0"));
        assert!(!text.contains("truncated"));
    }

    #[test]
    fn a_large_preview_is_capped_and_says_so() {
        let text = markdown(&preview(40, 200), &options(8_000));
        assert!(text.len() <= 8_000, "{}", text.len());
        // The tables are whole; some diffs are left out, and the note counts them.
        assert!(text.contains("`ConfigMap/shop/c39`"));
        assert!(
            text.contains("> **Note:** truncated to 8000 bytes"),
            "{text}"
        );
        let shown = text.matches("</details>").count();
        assert!(shown < 40);
        assert!(
            text.contains(&format!("{} of 40 diffs left out", 40 - shown)),
            "{text}"
        );
    }

    #[test]
    fn even_the_tables_are_cut_at_the_minimum() {
        let text = markdown(&preview(200, 1), &options(10));
        assert!(text.len() <= MIN_MARKDOWN_BYTES);
        assert!(text.contains("some rows and diffs left out"), "{text}");
    }

    #[test]
    fn a_manifest_with_backticks_cannot_close_the_fence() {
        let mut p = preview(1, 0);
        if let Some(diff) = p.changes[0].diff.as_mut() {
            diff.unified.push_str("+  script: \"```\\n<details>\"\n");
        }
        let text = markdown(&p, &options(65_536));
        assert!(text.contains("````diff\n"), "{text}");
    }

    #[test]
    fn no_changes_says_so() {
        let text = markdown(&Preview::default(), &options(65_536));
        assert!(text.contains("No changes."));
        assert!(!text.contains("<details>"));
    }
}
