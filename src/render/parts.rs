//! A large flat kustomization, built in parts.
//!
//! kustomize's build time grows with the square of the objects it holds (every
//! object added is checked against all the others): 0.11 s for 250 objects, 0.87 s
//! for 1000, 3.4 s for 2000. Most large roots are *flat*: their kustomization only
//! lists local files under `resources` (the corpus's podinfo and microservices-demo
//! bases are). Nothing then transforms, generates or renames, so nothing refers
//! across objects, and the build is the listed files' objects in order, each with
//! the file it came from. Building the files in consecutive parts of about
//! [`PART_OBJECTS`] objects and joining the outputs gives the same objects in the
//! same order: the cost grows linearly. kustomize finds an object named twice within
//! a part; across parts the caller checks (`manifest::find_duplicates`).
//!
//! Each part is kept by the digest of its files ([`PartCache`]), so a one-file
//! commit builds one part again: about 20 ms, where the whole root took a second.
//! Any other kustomization (an overlay, a `namespace:`, a generator, a directory
//! among the resources) is built whole, as before.

use super::inputs::{Base, Key, canonical};
use super::kustomize::kustomization_file;
use crate::manifest::Digest;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// About how many objects one part holds: where the per-run start-up (~8 ms) and
/// the quadratic cost balance (a 1000-object root: 0.45 s in 17 parts, 0.87 s whole).
pub(super) const PART_OBJECTS: usize = 64;

/// The fields a flat kustomization may have: anything else may transform.
const FLAT_FIELDS: [&str; 3] = ["apiVersion", "kind", "resources"];

/// The files of a flat kustomization in `root`, grouped into parts; `None` when the
/// root is not flat or too small to gain from parts (one build is as fast).
pub(super) fn plan(root: &Path, base: &Base) -> Option<Vec<Vec<PathBuf>>> {
    let files = flat_resources(root, base)?;
    let counted: Vec<(PathBuf, usize)> = files
        .into_iter()
        .map(|file| {
            let objects = std::fs::read_to_string(&file).map_or(1, |text| documents(&text));
            (file, objects)
        })
        .collect();
    let total: usize = counted.iter().map(|(_, n)| n).sum();
    (total > 2 * PART_OBJECTS).then(|| group(counted, PART_OBJECTS))
}

/// The resolved files a flat kustomization lists, in order; `None` if it has a
/// field other than `resources`, or an entry that is not a file inside `root`
/// (where kustomize's root-only restrictor would look at it: it is then built
/// whole, and kustomize says what it thinks).
fn flat_resources(root: &Path, base: &Base) -> Option<Vec<PathBuf>> {
    let text = std::fs::read_to_string(kustomization_file(root)?).ok()?;
    let Yaml::Mapping(document) = serde_yaml::from_str::<Yaml>(&text).ok()? else {
        return None;
    };
    let flat = document
        .keys()
        .all(|k| k.as_str().is_some_and(|k| FLAT_FIELDS.contains(&k)));
    let kind = document
        .get("kind")
        .map_or(Some("Kustomization"), Yaml::as_str);
    if !flat || kind != Some("Kustomization") {
        return None;
    }
    let root = canonical(root).ok()?;
    let Some(Yaml::Sequence(entries)) = document.get("resources") else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let resolved = std::fs::canonicalize(root.join(entry.as_str()?)).ok()?;
            let inside = resolved.starts_with(&root) && resolved.starts_with(&base.canonical);
            (inside && resolved.is_file()).then_some(resolved)
        })
        .collect()
}

/// How many YAML documents `text` holds (what a part's size is counted in).
fn documents(text: &str) -> usize {
    let separators = text.lines().filter(|l| l.starts_with("---")).count();
    let leading = text.trim_start().starts_with("---");
    (separators + usize::from(!leading)).max(1)
}

/// Consecutive runs of files holding at least `size` objects each (the last may
/// hold fewer). A file's edit that keeps its object count leaves every part but
/// its own as it was.
fn group(files: Vec<(PathBuf, usize)>, size: usize) -> Vec<Vec<PathBuf>> {
    let mut parts: Vec<Vec<PathBuf>> = Vec::new();
    let mut held = 0;
    for (file, objects) in files {
        match parts.last_mut() {
            Some(part) if held < size => part.push(file),
            _ => {
                parts.push(vec![file]);
                held = 0;
            }
        }
        held += objects;
    }
    parts
}

/// What built parts gave (their rendered text), by the digest of their files and
/// the tool's version.
#[derive(Debug, Default)]
pub struct PartCache {
    built: HashMap<Digest, String>,
}

/// One part's rendered text, as this render got it.
#[derive(Debug)]
pub(super) enum Part {
    /// From the cache: its files are as they were.
    Reused(String),
    /// Built by kustomize now.
    Built(String),
}

impl Part {
    pub(super) fn text(&self) -> &str {
        match self {
            Part::Reused(text) | Part::Built(text) => text,
        }
    }

    pub(super) fn into_text(self) -> String {
        match self {
            Part::Reused(text) | Part::Built(text) => text,
        }
    }
}

impl PartCache {
    /// The key of a part built by kustomize `version`.
    pub fn key(part: &[PathBuf], version: &str, base: &Base) -> Result<Digest, super::RenderError> {
        let mut key = Key {
            files: part.iter().cloned().collect::<BTreeSet<_>>(),
            settings: Vec::new(),
        };
        key.setting("kustomize part", version);
        key.digest(base)
    }

    pub fn get(&self, key: &Digest) -> Option<&String> {
        self.built.get(key)
    }

    /// Keeps exactly the parts of the latest render: what the next one may reuse.
    pub fn replace(&mut self, parts: HashMap<Digest, String>) {
        self.built = parts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::write;

    fn counted(sizes: &[usize]) -> Vec<(PathBuf, usize)> {
        let file = |i: usize| PathBuf::from(format!("f{i}.yaml"));
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (file(i), *n))
            .collect()
    }

    #[test]
    fn parts_are_consecutive_runs_of_at_least_the_size() {
        let names =
            |parts: Vec<Vec<PathBuf>>| -> Vec<usize> { parts.iter().map(Vec::len).collect() };
        assert_eq!(names(group(counted(&[3, 3, 3, 3, 3]), 6)), [2, 2, 1]);
        assert_eq!(names(group(counted(&[10, 1, 1]), 6)), [1, 2]);
        assert_eq!(names(group(counted(&[1]), 6)), [1]);
    }

    #[test]
    fn documents_are_counted_by_their_separators() {
        assert_eq!(documents("kind: A\n"), 1);
        assert_eq!(documents("---\nkind: A\n---\nkind: B\n"), 2);
        assert_eq!(documents("kind: A\n---\nkind: B\n--- # c\nkind: C\n"), 3);
        assert_eq!(documents(""), 1);
    }

    fn flat_repo(kustomization: &str, files: usize) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        for i in 0..files {
            let objects: String = (0..50)
                .map(|j| format!("---\nkind: ConfigMap\nmetadata: {{name: c{i}-{j}}}\n"))
                .collect();
            write(&root, &format!("f{i}.yaml"), &objects);
        }
        write(&root, "kustomization.yaml", kustomization);
        (tmp, root)
    }

    #[test]
    fn a_large_flat_kustomization_is_planned_in_parts_of_its_files_in_order() {
        let list = "resources:\n- f0.yaml\n- f1.yaml\n- f2.yaml\n- ./f3.yaml\n";
        let (tmp, root) = flat_repo(&format!("apiVersion: v1\nkind: Kustomization\n{list}"), 4);
        let base = Base::new(tmp.path()).unwrap();
        let parts = plan(&root, &base).expect("200 objects in flat files");
        let names: Vec<Vec<String>> = parts
            .iter()
            .map(|p| {
                p.iter()
                    .map(|f| f.file_name().unwrap().to_string_lossy().into())
                    .collect()
            })
            .collect();
        assert_eq!(names, [["f0.yaml", "f1.yaml"], ["f2.yaml", "f3.yaml"]]);
    }

    #[test]
    fn anything_but_local_files_under_resources_is_built_whole() {
        let list = "resources:\n- f0.yaml\n- f1.yaml\n- f2.yaml\n";
        for kustomization in [
            format!("namespace: prod\n{list}"),
            format!("commonLabels: {{a: b}}\n{list}"),
            format!("kind: Component\n{list}"),
            format!("{list}- sub\n"),
            format!("{list}- ../outside.yaml\n"),
            format!("{list}- missing.yaml\n"),
            format!("{list}- github.com/org/repo//base?ref=v1\n"),
            "resources:\n- f0.yaml\n- f1.yaml\n".to_string(),
        ] {
            let (tmp, root) = flat_repo(&kustomization, 3);
            write(&root, "sub/kustomization.yaml", "resources: []\n");
            write(tmp.path(), "outside.yaml", "kind: ConfigMap\n");
            let base = Base::new(tmp.path()).unwrap();
            assert_eq!(plan(&root, &base), None, "{kustomization}");
        }
    }
}
