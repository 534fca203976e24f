//! A computed diff ([`crate::engine::diff`]) as people read it in a terminal.

use super::style::Style;
use crate::engine::diff::ObjectDiff;
use std::fmt::Write;

/// The unified diff for a terminal: with `color`, bold headers, cyan `@@` hunk lines,
/// red `-` and green `+` lines; without, exactly [`ObjectDiff::unified`].
pub fn diff_text(diff: &ObjectDiff, color: bool) -> String {
    if !color {
        return diff.unified.clone();
    }
    let mut out = String::with_capacity(diff.unified.len() + 64);
    // The file headers are the lines before the first hunk; after that a line starting
    // with `---` is a removed line whose content starts with `--`.
    let mut in_header = true;
    for line in diff.unified.lines() {
        let style = if line.starts_with("@@") {
            in_header = false;
            Some(Style::Cyan)
        } else if in_header && (line.starts_with("---") || line.starts_with("+++")) {
            Some(Style::Bold)
        } else if line.starts_with('-') {
            Some(Style::Red)
        } else if line.starts_with('+') {
            Some(Style::Green)
        } else {
            None
        };
        // Writing to a String cannot fail.
        let _ = match style {
            Some(style) => writeln!(out, "{}", style.paint(line)),
            None => writeln!(out, "{line}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::diff::diff_objects;
    use crate::manifest::ObjectRef;
    use crate::report::style::unstyled;
    use serde_json::json;

    #[test]
    fn colors_only_when_asked() {
        let object = ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        let deployment = |replicas: u64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"replicas": replicas, "paused": false}})
        };
        let diff = diff_objects(&object, Some(&deployment(3)), &deployment(5)).expect("drift");
        let plain = diff_text(&diff, false);
        assert_eq!(plain, diff.unified);
        assert!(!plain.contains('\x1b'));
        let colored = diff_text(&diff, true);
        let painted = |style: Style, line: &str| style.paint(line).to_string();
        assert!(colored.contains(&painted(Style::Red, "-  replicas: 3")));
        assert!(colored.contains(&painted(Style::Green, "+  replicas: 5")));
        assert!(colored.contains(&painted(Style::Bold, "--- live/Deployment.apps/shop/web")));
        let hunk = plain.lines().find(|l| l.starts_with("@@")).expect("a hunk");
        assert!(colored.contains(&painted(Style::Cyan, hunk)));
        assert_eq!(unstyled(&colored), plain);
    }
}
