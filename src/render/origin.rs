//! Where a rendered object was written. The tool says the file (kustomize's
//! `config.kubernetes.io/origin` annotation, Helm's `# Source:` comment); the line
//! is found here, by looking for the object in that file, so that errors, diffs and
//! `/status` point where a person would edit.

use crate::manifest::{Manifest, Origin, parse_str};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The objects written in each file, read once per render.
#[derive(Default)]
pub(super) struct Lines {
    files: HashMap<PathBuf, Vec<Written>>,
}

/// One object as its file writes it (a template may say only its kind).
struct Written {
    kind: String,
    name: String,
    line: usize,
}

impl Lines {
    /// The origin of an object of `kind` named `name` (as rendered: a prefix,
    /// suffix or hash may have been added) written in `file`: the line of the same
    /// object, else of the only one of its kind, else the first of its kind, else 1.
    pub(super) fn origin(&mut self, file: &Path, kind: &str, name: &str) -> Origin {
        let written = self
            .files
            .entry(file.to_path_buf())
            .or_insert_with(|| read(file));
        let of_kind: Vec<&Written> = written.iter().filter(|w| w.kind == kind).collect();
        let line = of_kind
            .iter()
            .find(|w| w.name == name)
            .or_else(|| {
                of_kind
                    .iter()
                    .find(|w| !w.name.is_empty() && name.contains(&w.name))
            })
            .or(of_kind.first())
            .map_or(1, |w| w.line);
        Origin {
            file: file.to_path_buf(),
            line,
        }
    }
}

fn read(file: &Path) -> Vec<Written> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    match parse_str(&text, file) {
        Ok(manifests) => manifests.iter().map(written).collect(),
        Err(_) => kinds_in_text(&text),
    }
}

fn written(manifest: &Manifest) -> Written {
    Written {
        kind: manifest.kind.clone(),
        name: manifest.name().to_string(),
        line: manifest.origin.line,
    }
}

/// `kind: X` lines of a text that is not YAML yet (a Helm template).
fn kinds_in_text(text: &str) -> Vec<Written> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let kind = line.strip_prefix("kind:")?.trim().trim_matches(['"', '\'']);
            Some(Written {
                kind: kind.to_string(),
                name: String::new(),
                line: index + 1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_found_by_kind_and_name() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("app.yaml");
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n";
        std::fs::write(&file, text).unwrap();
        let mut lines = Lines::default();
        assert_eq!(lines.origin(&file, "Deployment", "api").line, 9);
        assert_eq!(lines.origin(&file, "Deployment", "prod-web-x").line, 5);
        assert_eq!(lines.origin(&file, "Service", "other").line, 1);
        assert_eq!(lines.origin(&file, "ConfigMap", "c").line, 1);
        let template = tmp.path().join("deployment.yaml");
        std::fs::write(
            &template,
            "{{- if .Values.on }}\napiVersion: apps/v1\nkind: Deployment\n",
        )
        .unwrap();
        assert_eq!(lines.origin(&template, "Deployment", "x").line, 3);
    }
}
