//! Reading manifest files: the paths given, directories walked in a stable order.

use super::error::problem;
use super::parse::{Parsed, parse_into};
use super::{Manifest, ManifestError, Problem};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Loads every manifest under `paths` (files or directories), in file order and then
/// document order, or reports every problem found in all of them.
///
/// Directories are walked recursively in name order so the result is deterministic;
/// only `.yaml`, `.yml` and `.json` files are read there, and hidden entries are
/// skipped (which also skips ConfigMap-mount internals such as `..data`). A file named
/// explicitly is read whatever its extension: the user asked for it.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut parsed = Parsed::default();
    for file in manifest_files(paths)? {
        if let Some(text) = decode_text(&file, read(&file)?, &mut parsed.problems) {
            parse_into(&text, &file, &mut parsed);
        }
    }
    parsed.finish()
}

pub(super) fn read(file: &Path) -> Result<Vec<u8>, ManifestError> {
    fs::read(file).map_err(|source| ManifestError::Io {
        path: file.to_path_buf(),
        source,
    })
}

/// The files to read, each once (a file named both directly and through its directory
/// would otherwise be reported as a duplicate of itself).
pub(super) fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut walk = Walk::default();
    for path in paths {
        if metadata(path)?.is_dir() {
            walk.dir(path)?;
        } else {
            walk.file(path);
        }
    }
    Ok(walk.files)
}

/// State of a directory walk: the files found and what was already visited, keyed by
/// canonical path so symlink loops and repeated paths are harmless.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
}

impl Walk {
    fn file(&mut self, path: &Path) {
        if self.seen_files.insert(canonical(path)) {
            self.files.push(path.to_path_buf());
        }
    }

    fn dir(&mut self, dir: &Path) -> Result<(), ManifestError> {
        if !self.seen_dirs.insert(canonical(dir)) {
            return Ok(());
        }
        for path in sorted_entries(dir)? {
            self.entry(&path)?;
        }
        Ok(())
    }

    /// A directory entry: hidden entries are skipped, directories descended into and
    /// manifest files kept. Symlinks are followed (ConfigMap mounts are symlinks).
    fn entry(&mut self, path: &Path) -> Result<(), ManifestError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with('.') {
            return Ok(());
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => self.dir(path)?,
            Ok(meta) if meta.is_file() && has_manifest_extension(path) => self.file(path),
            Ok(_) => {}
            // A broken link only matters if it should have been a manifest.
            Err(source) if has_manifest_extension(path) => {
                let path = path.to_path_buf();
                return Err(ManifestError::Io { path, source });
            }
            Err(_) => {}
        }
        Ok(())
    }
}

fn metadata(path: &Path) -> Result<fs::Metadata, ManifestError> {
    fs::metadata(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The entries of `dir` sorted by name, joined onto `dir` as the user spelled it.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io_error = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        names.push(entry.map_err(io_error)?.file_name());
    }
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

fn has_manifest_extension(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("yaml" | "yml" | "json"))
}

/// Reads a file as text. Bytes that are not UTF-8 are a problem in the file (reported
/// with the line they are on), not an I/O failure, so other files are still checked.
pub(super) fn decode_text(
    file: &Path,
    bytes: Vec<u8>,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(err) => {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let message = "the file is not valid UTF-8; save it as UTF-8".to_string();
            problems.push(problem(file, line, None, message));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::*;

    fn write(dir: &Path, relative: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn cm(name: &str) -> String {
        format!("{CM}{name}\n")
    }

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden_and_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "b.yml", cm("b"));
        write(
            dir,
            "a/z.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"z"}}"#,
        );
        write(dir, "a/y.YAML", cm("y"));
        write(dir, "c.yaml", format!("{}---\n{}", cm("c1"), cm("c2")));
        write(dir, ".hidden/h.yaml", cm("hidden"));
        write(dir, "..data/d.yaml", cm("data"));
        write(dir, ".dot.yaml", cm("dot"));
        write(dir, "notes.txt", "not: a manifest");
        write(dir, "kustomize/README.md", "# not yaml");
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["y", "z", "b", "c1", "c2"]);
        assert_eq!(manifests[0].origin.file, dir.join("a/y.YAML"));
        assert_eq!(manifests[4].origin.line, 6);
    }

    /// A ConfigMap volume: `x.yaml -> ..data/x.yaml`, `..data -> ..2024_01_01…`.
    #[cfg(unix)]
    #[test]
    fn configmap_mount_symlinks_are_followed_once() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "..2024_01_01/x.yaml", cm("x"));
        symlink("..2024_01_01", dir.join("..data")).unwrap();
        symlink("..data/x.yaml", dir.join("x.yaml")).unwrap();
        symlink(".", dir.join("loop")).unwrap();
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["x"]);
        assert_eq!(manifests[0].origin.file, dir.join("x.yaml"));
    }

    #[test]
    fn explicit_file_of_any_extension_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let txt = write(tmp.path(), "objects.txt", cm("t"));
        let hidden = write(tmp.path(), ".hidden.yaml", cm("h"));
        let manifests = load(&[txt, hidden]).unwrap();
        assert_eq!(names(&manifests), ["t", "h"]);
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "a.yaml", cm("a"));
        let manifests = load(&[tmp.path().to_path_buf(), file]).unwrap();
        assert_eq!(names(&manifests), ["a"]);
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let missing = PathBuf::from("no/such/manifests");
        let err = load(&[missing]).unwrap_err();
        assert!(matches!(err, ManifestError::Io { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read no/such/manifests: "),
            "{err}"
        );
    }

    #[test]
    fn errors_across_files_are_all_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(
            tmp.path(),
            "a.yaml",
            format!("{}---\nkind: Secret\n", cm("x")),
        );
        let b = write(tmp.path(), "b.yaml", "apiVersion: v1\nkind: [\n");
        let c = write(tmp.path(), "c.yaml", format!("# c\n{}", cm("x")));
        write(tmp.path(), "d.yaml", [0x61, 0x0a, 0xff, 0x0a]);
        let err = load(&[tmp.path().to_path_buf()]).unwrap_err();
        let found: Vec<String> = err.problems().iter().map(Problem::to_string).collect();
        assert_eq!(found.len(), 5, "{err}");
        let (a, b, c) = (a.display(), b.display(), c.display());
        assert!(found[0].starts_with(&format!("{a}:6: Secret: apiVersion is missing")));
        assert!(found[1].starts_with(&format!("{a}:6: Secret: metadata.name is missing")));
        assert!(
            found[2].starts_with(&format!("{b}:3: invalid YAML: ")),
            "{err}"
        );
        assert!(found[3].ends_with("d.yaml:2: the file is not valid UTF-8; save it as UTF-8"));
        assert_eq!(
            found[4],
            format!(
                "{c}:2: ConfigMap/x: duplicate object, also defined at {a}:1; keep only one of them"
            )
        );
        assert_eq!(err.to_string().lines().count(), 5, "one problem per line");
    }
}
