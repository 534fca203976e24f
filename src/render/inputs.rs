//! What a render reads: files checked to stay inside the source root, and their
//! digest, the key of the render cache.
//!
//! Why a digest of the inputs rather than the revision: a commit that touches
//! another application of the repository leaves this root's inputs, and so its
//! render, as they were; and a dir source's revision does not cover templates.

use super::error::RenderError;
use crate::manifest::Digest;
use crate::manifest::is_editor_temp;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The source root a render may read from, as given and with links resolved.
#[derive(Debug, Clone)]
pub struct Base {
    pub given: PathBuf,
    pub canonical: PathBuf,
}

impl Base {
    pub fn new(dir: &Path) -> Result<Base, RenderError> {
        Ok(Base {
            given: dir.to_path_buf(),
            canonical: canonical(dir)?,
        })
    }

    /// `path` (absolute, from a resolved directory) with links resolved, when it
    /// stays inside the base; `Ok(None)` when it does not exist. `field`, `reference` and `file` say who asked, for the error.
    pub fn resolve(
        &self,
        path: &Path,
        file: &Path,
        field: &'static str,
        reference: &str,
    ) -> Result<Option<PathBuf>, RenderError> {
        let escapes = |target: PathBuf| RenderError::Escapes {
            file: self.spell(file),
            field,
            reference: reference.to_string(),
            target,
            root: self.given.clone(),
        };
        // Outside as written (whether it exists or not), or once links are followed.
        let written = normalize(path);
        if !written.starts_with(&self.canonical) {
            return Err(escapes(written));
        }
        let resolved = match fs::canonicalize(path) {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                let path = path.to_path_buf();
                return Err(RenderError::Io { path, source });
            }
        };
        if resolved.starts_with(&self.canonical) {
            Ok(Some(resolved))
        } else {
            Err(escapes(resolved))
        }
    }

    /// A resolved path as the user spells the base (`repo/base/x.yaml`, not
    /// `/home/me/repo/base/x.yaml`).
    pub fn spell(&self, resolved: &Path) -> PathBuf {
        match resolved.strip_prefix(&self.canonical) {
            Ok(rest) if rest.as_os_str().is_empty() => self.given.clone(),
            Ok(rest) if self.given == Path::new(".") => rest.to_path_buf(),
            Ok(rest) => self.given.join(rest),
            Err(_) => resolved.to_path_buf(),
        }
    }
}

pub(super) fn canonical(path: &Path) -> Result<PathBuf, RenderError> {
    fs::canonicalize(path).map_err(|source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The files a render reads (resolved paths inside the base) and whatever else
/// decides its output (tool versions, options, variables), hashed in a stable order.
#[derive(Debug, Default)]
pub(super) struct Key {
    pub files: BTreeSet<PathBuf>,
    /// Settings as `name=value` lines.
    pub settings: Vec<String>,
}

impl Key {
    pub(super) fn setting(&mut self, name: &str, value: impl std::fmt::Display) {
        self.settings.push(format!("{name}={value}"));
    }

    /// SHA-256 over every setting, then every file's path (relative to `base`) and
    /// content, each length-prefixed so no two different inputs hash alike.
    pub(super) fn digest(&self, base: &Base) -> Result<Digest, RenderError> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut add = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_le_bytes());
            ctx.update(bytes);
        };
        for setting in &self.settings {
            add(setting.as_bytes());
        }
        for file in &self.files {
            let relative = file.strip_prefix(&base.canonical).unwrap_or(file);
            add(relative.as_os_str().as_encoded_bytes());
            let bytes = fs::read(file).map_err(|source| RenderError::Io {
                path: file.clone(),
                source,
            })?;
            add(&bytes);
        }
        let mut out = [0; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(out)
    }
}

/// Every regular file under `dir` (hidden ones included, as a tool may read them;
/// `.git` and editor droppings not), each checked to resolve inside `base`. Each directory is walked once,
/// so links in a cycle are harmless.
pub(super) fn tree(
    dir: &Path,
    base: &Base,
    into: &mut BTreeSet<PathBuf>,
) -> Result<(), RenderError> {
    walk(dir, base, into, &mut HashSet::new())
}

fn walk(
    dir: &Path,
    base: &Base,
    into: &mut BTreeSet<PathBuf>,
    seen: &mut HashSet<PathBuf>,
) -> Result<(), RenderError> {
    let dir = canonical(dir)?;
    if !seen.insert(dir.clone()) {
        return Ok(());
    }
    let io = |source| RenderError::Io {
        path: dir.clone(),
        source,
    };
    for entry in fs::read_dir(&dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.file_name().is_some_and(|n| n == ".git") || is_editor_temp(&path) {
            continue;
        }
        let reference = path.to_string_lossy().into_owned();
        // A dangling link is skipped: the tool says so if it matters.
        match base.resolve(&path, &path, "file", &reference)? {
            Some(resolved) if resolved.is_dir() => walk(&path, base, into, seen)?,
            Some(resolved) => {
                into.insert(resolved);
            }
            None => {}
        }
    }
    Ok(())
}

/// `path` with `.` and `..` resolved lexically (kustomize reports paths so).
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The relative path from directory `from` to `to`, both absolute and normalized.
pub(super) fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for component in &to[common..] {
        out.push(component.as_os_str());
    }
    out
}

/// Copies the directory `from` to `to` (created), following links (a chart's
/// were checked to stay inside the source when it was prepared).
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<(), RenderError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(io(&source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_directories() {
        let rel = |a: &str, b: &str| relative(Path::new(a), Path::new(b));
        assert_eq!(rel("/tmp/x", "/work/repo"), Path::new("../../work/repo"));
        assert_eq!(rel("/work", "/work/repo/app"), Path::new("repo/app"));
        assert_eq!(rel("/a/b", "/a/b"), Path::new(""));
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/tmp/w/../../repo/./base/x.yaml")),
            Path::new("/repo/base/x.yaml")
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_and_paths_leaving_the_base_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        fs::create_dir_all(repo.join("app")).unwrap();
        fs::write(tmp.path().join("secret"), "x").unwrap();
        fs::write(repo.join("app/a.yaml"), "a").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), repo.join("app/link")).unwrap();
        let base = Base::new(&repo).unwrap();
        let file = repo.join("app/kustomization.yaml");
        let inside = base.resolve(&repo.join("app/a.yaml"), &file, "resources", "a.yaml");
        assert!(inside.unwrap().is_some());
        let missing = base.resolve(&repo.join("app/b.yaml"), &file, "resources", "b.yaml");
        assert!(missing.unwrap().is_none());
        let up = base
            .resolve(
                &repo.join("app/../../secret"),
                &file,
                "resources",
                "../../secret",
            )
            .unwrap_err();
        let message = up.to_string();
        assert!(
            message.contains("resources \"../../secret\" leads to"),
            "{message}"
        );
        assert!(message.contains("outside"), "{message}");
        let mut files = BTreeSet::new();
        let err = tree(&repo, &base, &mut files).unwrap_err();
        assert!(matches!(err, RenderError::Escapes { .. }), "{err}");
    }

    #[test]
    fn the_key_covers_paths_contents_and_settings() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("a"), "1").unwrap();
        let base = Base::new(tmp.path()).unwrap();
        let mut key = Key::default();
        tree(tmp.path(), &base, &mut key.files).unwrap();
        key.setting("release", "web");
        let first = key.digest(&base).unwrap();
        assert_eq!(key.digest(&base).unwrap(), first);
        fs::write(tmp.path().join("a"), "2").unwrap();
        let edited = key.digest(&base).unwrap();
        assert_ne!(edited, first);
        key.setting("namespace", "shop");
        assert_ne!(key.digest(&base).unwrap(), edited);
    }
}
