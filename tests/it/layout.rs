//! docs/ARCHITECTURE.md describes `src/` as it is: every folder (nested ones too) and top-level file
//! is named there, and every `src/…` path it names exists. A new room without a
//! line in the map, or a map line for a file that moved, fails here.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    let path = root().join("docs/ARCHITECTURE.md");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `src/` entries as the map names them, nested folders included: `src/engine/`
/// and `src/manifest/yaml/` for folders, `src/lib.rs` for files at the top.
fn src_entries() -> BTreeSet<String> {
    let mut entries = BTreeSet::new();
    let top = root().join("src");
    for entry in fs::read_dir(&top).expect("src/ is readable") {
        let entry = entry.expect("src/ entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        match entry.path().is_dir() {
            true => folders_under(&entry.path(), &format!("src/{name}/"), &mut entries),
            false => {
                entries.insert(format!("src/{name}"));
            }
        }
    }
    entries
}

/// `folder` (named `label`) and every folder below it, as `src/a/b/`.
fn folders_under(folder: &Path, label: &str, entries: &mut BTreeSet<String>) {
    entries.insert(label.to_string());
    for entry in fs::read_dir(folder).expect("readable folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            folders_under(&path, &format!("{label}{name}/"), entries);
        }
    }
}

#[test]
fn every_room_of_src_is_in_the_architecture_map() {
    let doc = architecture();
    let entries = src_entries();
    let missing: Vec<&String> = entries
        .iter()
        .filter(|e| !doc.contains(&format!("`{e}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's module map does not name {missing:?}; add a line for each"
    );
    let top_files = entries.iter().filter(|e| !e.ends_with('/')).count();
    assert!(
        entries.contains("src/daemon/status/") && entries.contains("src/manifest/yaml/"),
        "nested folders are checked too: {entries:?}"
    );
    assert!(
        top_files <= 8,
        "at most 8 files at the top of src/: {entries:?}"
    );
}

#[test]
fn every_file_the_map_names_exists() {
    let doc = architecture();
    let mut stale = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with("| `src/")) {
        let folder = row
            .trim_start_matches("| `")
            .split('`')
            .next()
            .expect("a path in backticks");
        for file in row
            .split('`')
            .filter(|s| s.ends_with(".rs") && !s.contains('/'))
        {
            let path = match folder.ends_with('/') {
                true => format!("{folder}{file}"),
                false => continue,
            };
            if !root().join(&path).is_file() {
                stale.push(path);
            }
        }
        if !root().join(folder).exists() {
            stale.push(folder.to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "docs/ARCHITECTURE.md names files that do not exist: {stale:?}"
    );
}

#[test]
fn every_file_of_a_room_is_named_in_its_row() {
    let doc = architecture();
    let mut unnamed = Vec::new();
    for folder in src_entries().iter().filter(|e| e.ends_with('/')) {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{folder}`")))
            .unwrap_or_default();
        for entry in fs::read_dir(root().join(folder)).expect("readable folder") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name != "mod.rs" && !row.contains(&format!("`{name}`")) {
                unnamed.push(format!("{folder}{name}"));
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "docs/ARCHITECTURE.md's module map does not name {unnamed:?} in its folder's row"
    );
}
