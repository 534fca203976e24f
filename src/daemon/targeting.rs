//! How much of a source one daemon reconcile must look at.
//!
//! Why: a full reconcile resolves, plans and reports every object, so its cost grows
//! with the size of the source. When the daemon knows what changed (the files of a
//! new revision that differ from what it last applied, or the live objects a watch
//! reported drifted) it reconciles only those objects: a *targeted* reconcile.
//! Anything that could need a prune or a new ApplySet record takes a full one: a
//! removed or added file or object, a Namespace or CRD, an object with only a
//! `generateName`, a changed member that is no longer desired, and any change to a
//! source with hooks (a sync that writes runs all of them). So do the first
//! reconcile, retries and every `full_resync_every`-th resync: the scheduler's
//! [`Reason`](crate::daemon::scheduler::Reason) says when only a full one will do.

use crate::engine::{Scope, order, plan};
use crate::manifest::{CachedManifest, Digest, FileCache, Manifest, ObjectRef, ParsedFile};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What the last successful reconcile applied, file by file: what a new revision is
/// compared with.
#[derive(Debug, Default)]
pub(super) struct Baseline {
    files: HashMap<PathBuf, (Digest, Vec<ObjectRef>)>,
    /// Whether the source has hooks: a sync that writes runs every one of them, so
    /// only a full reconcile will do. (Only a full one can add or remove them.)
    has_hooks: bool,
}

impl Baseline {
    /// Every file of `files` as it is now, applied by a run whose plan `has_hooks`.
    pub(super) fn of(files: &FileCache, has_hooks: bool) -> Self {
        Baseline {
            files: files.parsed().map(|(path, p)| entry(path, p)).collect(),
            has_hooks,
        }
    }

    /// Records the `changed` files of `files` as applied.
    pub(super) fn update(&mut self, files: &FileCache, changed: &[PathBuf]) {
        for (path, parsed) in files
            .parsed()
            .filter(|(p, _)| changed.iter().any(|c| c == p))
        {
            let (path, entry) = entry(path, parsed);
            self.files.insert(path, entry);
        }
    }
}

fn is_hook(manifest: &CachedManifest) -> bool {
    order::placement_of(&manifest.manifest().body).is_hook()
}

fn entry(path: &Path, parsed: &ParsedFile) -> (PathBuf, (Digest, Vec<ObjectRef>)) {
    let refs = parsed
        .manifests
        .iter()
        .map(|m| m.object_ref().clone())
        .collect();
    (path.to_path_buf(), (parsed.digest, refs))
}

/// The manifests one reconcile converges, and how much of the set they are.
#[derive(Debug)]
pub(crate) struct Selection {
    pub manifests: Vec<Manifest>,
    pub scope: Scope,
}

impl Selection {
    /// Every manifest of `files`.
    fn full(files: &FileCache) -> Self {
        Selection {
            manifests: files.manifests().map(CachedManifest::manifest).collect(),
            scope: Scope::Full,
        }
    }
}

/// What changed since the last full reconcile: what a targeted one looks at.
pub(super) struct Since<'a> {
    pub baseline: &'a Baseline,
    /// Live objects that drifted.
    pub drifted: &'a BTreeSet<ObjectRef>,
}

/// What to converge of `files`: only what changed `since` when that is possible
/// and worth it, else everything (always when `since` is `None`).
/// `default_namespace` is where the source's objects without a namespace live
/// (drifted objects are live ones).
pub(super) fn select(
    files: &FileCache,
    since: Option<Since<'_>>,
    default_namespace: &str,
) -> Selection {
    since
        .and_then(|since| targeted(files, &since, default_namespace))
        .unwrap_or_else(|| Selection::full(files))
}

/// The part of `files` that differs from the baseline, plus the drifted objects;
/// `None` when only a full reconcile will do.
fn targeted(files: &FileCache, since: &Since<'_>, default_namespace: &str) -> Option<Selection> {
    let &Since { baseline, drifted } = since;
    if baseline.has_hooks {
        return None;
    }
    let mut manifests: Vec<&CachedManifest> = Vec::new();
    let mut changed_files = Vec::new();
    let mut total = 0;
    let mut present = 0;
    for (path, parsed) in files.parsed() {
        total += parsed.manifests.len();
        let (digest, refs) = baseline.files.get(path)?;
        present += 1;
        if *digest == parsed.digest {
            continue;
        }
        let now: HashSet<&ObjectRef> = parsed.manifests.iter().map(|m| m.object_ref()).collect();
        if now.len() != parsed.manifests.len() || now != refs.iter().collect() {
            return None;
        }
        manifests.extend(&parsed.manifests);
        changed_files.push(path.to_path_buf());
    }
    if present != baseline.files.len() {
        return None;
    }
    let mut seen: HashSet<&ObjectRef> = manifests.iter().map(|m| m.object_ref()).collect();
    for object in drifted {
        let manifest = files
            .manifests()
            .find(|m| names(m.object_ref(), object, default_namespace))?;
        if seen.insert(manifest.object_ref()) {
            manifests.push(manifest);
        }
    }
    let targetable = |m: &&CachedManifest| {
        let object = m.object_ref();
        !object.name.is_empty() && !plan::is_first_stage(&object.group, &object.kind) && !is_hook(m)
    };
    let worth_it = !manifests.is_empty() && manifests.len() * 2 <= total;
    (worth_it && manifests.iter().all(targetable)).then(|| Selection {
        manifests: manifests
            .into_iter()
            .map(CachedManifest::manifest)
            .collect(),
        scope: Scope::Targeted { changed_files },
    })
}

/// Whether the manifest written as `written` (namespace as written) is the live
/// `object` (whose namespace is filled in).
fn names(written: &ObjectRef, object: &ObjectRef, default_namespace: &str) -> bool {
    let namespace = match written.namespace.as_deref() {
        Some(ns) => Some(ns),
        None => object
            .namespace
            .as_deref()
            .filter(|ns| *ns == default_namespace),
    };
    written.kind == object.kind
        && written.group == object.group
        && written.name == object.name
        && namespace == object.namespace.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    struct Source {
        dir: tempfile::TempDir,
        files: FileCache,
    }

    impl Source {
        fn new(files: &[(&str, &str)]) -> Self {
            let mut source = Source {
                dir: tempfile::tempdir().expect("tempdir"),
                files: FileCache::default(),
            };
            for (name, text) in files {
                source.write(name, text);
            }
            source
        }

        fn write(&mut self, name: &str, text: &str) {
            fs::write(self.dir.path().join(name), text).expect("write");
            self.files
                .refresh(&[self.dir.path().to_path_buf()])
                .expect("valid manifests");
        }

        fn remove(&mut self, name: &str) {
            fs::remove_file(self.dir.path().join(name)).expect("remove");
            self.files
                .refresh(&[self.dir.path().to_path_buf()])
                .expect("valid manifests");
        }

        fn targeted(&self, baseline: &Baseline, drifted: &[ObjectRef]) -> Option<Vec<String>> {
            let drifted = drifted.iter().cloned().collect();
            let since = Since {
                baseline,
                drifted: &drifted,
            };
            let selection = select(&self.files, Some(since), "default");
            let names = selection.manifests.iter().map(|m| m.name().to_string());
            match selection.scope {
                Scope::Targeted { .. } => Some(names.collect()),
                Scope::Full => {
                    assert_eq!(names.count(), self.files.manifests().count(), "everything");
                    None
                }
            }
        }
    }

    fn cm(name: &str, value: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{value}\"\n"
        )
    }

    fn four_files() -> Source {
        let files: Vec<(String, String)> = (0..4)
            .map(|i| (format!("{i}.yaml"), cm(&format!("c{i}"), "1")))
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Source::new(&files)
    }

    fn live(name: &str, namespace: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_changed_file_is_all_a_new_revision_needs() {
        let mut source = four_files();
        let baseline = Baseline::of(&source.files, false);
        assert_eq!(
            source.targeted(&baseline, &[]),
            None,
            "nothing changed: nothing to target"
        );
        source.write("2.yaml", &cm("c2", "2"));
        assert_eq!(source.targeted(&baseline, &[]), Some(vec!["c2".into()]));
    }

    #[test]
    fn without_a_baseline_everything_is_selected() {
        let source = four_files();
        let selection = select(&source.files, None, "default");
        assert_eq!(selection.scope, Scope::Full);
        assert_eq!(selection.manifests.len(), 4);
    }

    #[test]
    fn the_changed_files_are_named_for_the_baseline() {
        let mut source = four_files();
        let mut baseline = Baseline::of(&source.files, false);
        source.write("2.yaml", &cm("c2", "2"));
        let drifted = BTreeSet::new();
        let since = Since {
            baseline: &baseline,
            drifted: &drifted,
        };
        let Scope::Targeted { changed_files } = select(&source.files, Some(since), "default").scope
        else {
            panic!("one file of four changed: targeted")
        };
        assert_eq!(changed_files, [source.dir.path().join("2.yaml")]);
        baseline.update(&source.files, &changed_files);
        assert_eq!(
            source.targeted(&baseline, &[]),
            None,
            "nothing left to target"
        );
    }

    #[test]
    fn drifted_objects_are_found_in_the_default_namespace_and_added() {
        let mut source = four_files();
        let baseline = Baseline::of(&source.files, false);
        assert_eq!(
            source.targeted(&baseline, &[live("c1", "default")]),
            Some(vec!["c1".into()])
        );
        assert_eq!(
            source.targeted(&baseline, &[live("c1", "other")]),
            None,
            "not desired"
        );
        source.write("2.yaml", &cm("c2", "2"));
        let both = source.targeted(&baseline, &[live("c1", "default"), live("c2", "default")]);
        assert_eq!(both, Some(vec!["c2".into(), "c1".into()]));
    }

    #[test]
    fn added_removed_or_renamed_objects_take_a_full_reconcile() {
        let mut source = four_files();
        let baseline = Baseline::of(&source.files, false);
        source.write("4.yaml", &cm("c4", "1"));
        assert_eq!(source.targeted(&baseline, &[]), None, "a new file");
        source.remove("4.yaml");
        source.remove("3.yaml");
        assert_eq!(source.targeted(&baseline, &[]), None, "a removed file");
        source.write("3.yaml", &cm("renamed", "1"));
        assert_eq!(source.targeted(&baseline, &[]), None, "a renamed object");
        source.write("3.yaml", &(cm("c3", "1") + &cm("extra", "1")));
        assert_eq!(source.targeted(&baseline, &[]), None, "an added object");
    }

    #[test]
    fn a_source_with_hooks_is_always_reconciled_in_full() {
        let hook = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  \
                    annotations: {converge.dev/hook: pre-sync}\n";
        let mut source = four_files();
        source.write("hook.yaml", hook);
        let baseline = Baseline::of(&source.files, true);
        source.write("2.yaml", &cm("c2", "2"));
        assert_eq!(source.targeted(&baseline, &[]), None, "its hooks must run");
        // A named object that becomes a hook.
        let mut source = four_files();
        let baseline = Baseline::of(&source.files, false);
        let named = cm("c2", "1").replace(
            "  name: c2\n",
            "  name: c2\n  annotations: {argocd.argoproj.io/hook: PostSync}\n",
        );
        source.write("2.yaml", &named);
        assert_eq!(source.targeted(&baseline, &[]), None, "a new hook");
    }

    #[test]
    fn namespaces_crds_and_large_changes_take_a_full_reconcile() {
        let mut source = four_files();
        source.write(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
        );
        let mut baseline = Baseline::of(&source.files, false);
        source.write(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {a: b}\n",
        );
        assert_eq!(source.targeted(&baseline, &[]), None, "a Namespace");
        baseline.update(&source.files, &[source.dir.path().join("ns.yaml")]);
        for i in 0..3 {
            source.write(&format!("{i}.yaml"), &cm(&format!("c{i}"), "2"));
        }
        assert_eq!(
            source.targeted(&baseline, &[]),
            None,
            "3 of 5 objects changed"
        );
    }
}
