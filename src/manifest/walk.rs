//! Which files a load reads: the paths given, directories walked in name order, and
//! never anything outside the directory being walked.
//!
//! The **root** of a walk is the directory it starts from: a directory given to
//! `converge apply`/`diff`, a dir source's directory, a Git source's `path` inside its
//! checkout (the checkout when there is no `path`). Symlinks are followed, since
//! ConfigMap mounts are made of them (`x.yaml -> ..data/x.yaml`, `..data ->
//! ..2024_…`), but only while they stay inside the root: a link is resolved one name
//! at a time beneath the root (as openat2's `RESOLVE_BENEATH` does), so nothing
//! outside is read, or even looked at. A link that leads outside, whatever its name,
//! or that never ends (a cycle) is refused. Why: otherwise anyone who can push to a
//! repository makes the daemon read files of its host (Argo CD's CVE-2022-24348).
//! A file named explicitly is read wherever it is: the user asked for it.

use std::collections::HashSet;
use std::fs::{self, FileType};
use std::io;
use std::path::{Component, Path, PathBuf};

/// At most this many links in a row, as Linux allows (`MAXSYMLINKS`); more is a cycle.
const MAX_LINKS: usize = 40;

/// A symlink that a load refuses to follow; nothing it points to was read.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "{} -> {}: the link leads outside {}, and converge reads nothing outside the \
         directory it loads; put the file itself there, or point the link inside it",
        link.display(), target.display(), root.display()
    )]
    Escapes {
        link: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error(
        "{} -> {}: a link cycle (following it never ends); remove the link or point it at \
         a file or a directory that does not contain it",
        link.display(), target.display()
    )]
    Cycle { link: PathBuf, target: PathBuf },
}

/// Why the files to load could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// The files to read, in load order, each once (a file named both directly and
/// through its directory would otherwise be reported as a duplicate of itself).
///
/// Directories are walked recursively in name order; only `.yaml`, `.yml` and
/// `.json` files are kept there, and hidden entries are skipped (which also skips
/// ConfigMap-mount internals such as `..data`). Paths are joined onto the directory
/// as given, so messages name files as the user spelled them.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, WalkError> {
    let mut walk = Walk::default();
    for path in paths {
        if fs::metadata(path).map_err(|e| io_error(path, e))?.is_dir() {
            let root = Root::new(path)?;
            walk.dir(&root, path, root.canonical.clone())?;
        } else {
            let resolved = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            walk.file(path.clone(), resolved);
        }
    }
    Ok(walk.files)
}

/// Where `path` (relative) leads from directory `root` once every link on the way
/// is followed, refusing any step outside `root`; for a Git source's `path`.
pub(crate) fn resolve_within(root: &Path, path: &Path) -> Result<PathBuf, WalkError> {
    let root = Root::new(root)?;
    root.resolve(&root.canonical, path)
}

/// The directory a walk may not leave.
struct Root {
    /// As given, for messages.
    given: PathBuf,
    /// With every link resolved: what resolved paths are compared with.
    canonical: PathBuf,
}

impl Root {
    fn new(dir: &Path) -> Result<Root, WalkError> {
        Ok(Root {
            given: dir.to_path_buf(),
            canonical: fs::canonicalize(dir).map_err(|e| io_error(dir, e))?,
        })
    }

    /// `resolved` (a path inside the root without links) as the user spelled the root.
    fn spelled(&self, resolved: &Path) -> PathBuf {
        match resolved.strip_prefix(&self.canonical) {
            Ok(rest) if rest.as_os_str().is_empty() => self.given.clone(),
            Ok(rest) => self.given.join(rest),
            Err(_) => resolved.to_path_buf(),
        }
    }

    /// An absolute link target relative to the root, if it is inside (spelled
    /// either way the root can be).
    fn strip<'a>(&self, target: &'a Path) -> Option<&'a Path> {
        let given = std::path::absolute(&self.given).ok();
        target
            .strip_prefix(&self.canonical)
            .ok()
            .or_else(|| target.strip_prefix(given?).ok())
    }

    /// Where `path`, taken from `from` (a directory inside the root, without links),
    /// leads: each name is looked at with `lstat` and each link's target put in its
    /// place, so no step ever looks outside the root. The result has no links in it.
    fn resolve(&self, from: &Path, path: &Path) -> Result<PathBuf, WalkError> {
        let mut at = from.to_path_buf();
        // Names still to walk, last first, each with the link it came from.
        let mut todo: Vec<(PathBuf, Option<usize>)> = Vec::new();
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        push_names(&mut todo, path, None);
        while let Some((name, via)) = todo.pop() {
            match name.components().next() {
                Some(Component::ParentDir) if at == self.canonical => {
                    return Err(self.escapes(&links, via, from, path));
                }
                Some(Component::ParentDir) => {
                    at.pop();
                }
                Some(Component::Normal(_)) => {
                    let next = at.join(&name);
                    let meta = fs::symlink_metadata(&next).map_err(|e| io_error(&next, e))?;
                    if !meta.is_symlink() {
                        at = next;
                        continue;
                    }
                    let target = fs::read_link(&next).map_err(|e| io_error(&next, e))?;
                    if links.len() == MAX_LINKS {
                        let (link, target) = (self.spelled(&links[0].0), links[0].1.clone());
                        return Err(LinkError::Cycle { link, target }.into());
                    }
                    links.push((next, target.clone()));
                    let via = Some(links.len() - 1);
                    if target.is_absolute() {
                        let Some(inside) = self.strip(&target) else {
                            return Err(self.escapes(&links, via, from, path));
                        };
                        at = self.canonical.clone();
                        push_names(&mut todo, inside, via);
                    } else {
                        push_names(&mut todo, &target, via);
                    }
                }
                _ => {}
            }
        }
        Ok(at)
    }

    /// The refusal of a step outside the root: it names the link that took it, or
    /// `path` itself when no link did.
    fn escapes(
        &self,
        links: &[(PathBuf, PathBuf)],
        via: Option<usize>,
        from: &Path,
        path: &Path,
    ) -> WalkError {
        let (link, target) = match via.and_then(|i| links.get(i)) {
            Some((link, target)) => (self.spelled(link), target.clone()),
            None => (self.spelled(&from.join(path)), path.to_path_buf()),
        };
        let root = self.given.clone();
        LinkError::Escapes { link, target, root }.into()
    }
}

/// Queues the names of `path` so that its first name is walked next.
fn push_names(todo: &mut Vec<(PathBuf, Option<usize>)>, path: &Path, via: Option<usize>) {
    let names = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir));
    let start = todo.len();
    todo.extend(names.map(|c| (PathBuf::from(c.as_os_str()), via)));
    todo[start..].reverse();
}

/// State of a walk: the files found and what was already visited, keyed by resolved
/// path so that a file or directory reached twice is read once.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
}

impl Walk {
    fn file(&mut self, path: PathBuf, resolved: PathBuf) {
        if self.seen_files.insert(resolved) {
            self.files.push(path);
        }
    }

    /// Walks `dir` (as spelled), which is `resolved` inside `root`.
    fn dir(&mut self, root: &Root, dir: &Path, resolved: PathBuf) -> Result<(), WalkError> {
        if !self.seen_dirs.insert(resolved.clone()) {
            return Ok(());
        }
        for (name, kind) in sorted_entries(dir)? {
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            if kind.is_symlink() {
                self.link(root, path, &resolved)?;
            } else if kind.is_dir() {
                self.dir(root, &path, resolved.join(&name))?;
            } else if kind.is_file() && has_manifest_extension(&path) {
                self.file(path, resolved.join(&name));
            }
        }
        Ok(())
    }

    /// A symlink in directory `within` (resolved): followed when it stays inside the
    /// root, refused when it does not or leads back to a directory containing it.
    fn link(&mut self, root: &Root, path: PathBuf, within: &Path) -> Result<(), WalkError> {
        let name = PathBuf::from(path.file_name().unwrap_or_default());
        let target = match root.resolve(within, &name) {
            Ok(target) => target,
            // A broken link only matters where a manifest should be; ConfigMap swaps
            // leave some for a moment.
            Err(WalkError::Io { .. }) if !has_manifest_extension(&path) => return Ok(()),
            Err(WalkError::Io { source, .. }) => return Err(io_error(&path, source)),
            Err(error) => return Err(error),
        };
        let meta = fs::metadata(&target).map_err(|e| io_error(&path, e))?;
        if meta.is_dir() {
            if within.starts_with(&target) {
                let target = fs::read_link(&path).unwrap_or(target);
                return Err(LinkError::Cycle { link: path, target }.into());
            }
            self.dir(root, &path, target)?;
        } else if meta.is_file() && has_manifest_extension(&path) {
            self.file(path, target);
        }
        Ok(())
    }
}

/// The entries of `dir` sorted by name, with their types (links not followed).
fn sorted_entries(dir: &Path) -> Result<Vec<(std::ffi::OsString, FileType)>, WalkError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        entries.push((entry.file_name(), kind));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

fn has_manifest_extension(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("yaml" | "yml" | "json"))
}

fn io_error(path: &Path, source: io::Error) -> WalkError {
    WalkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Editor droppings that never hold manifests: vim swap and probe files (`.x.swp`,
/// `4913`), backups (`x~`) and Emacs lock files (`.#x`). Events touching only these
/// skip the rehash.
pub(crate) fn is_editor_temp(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || [".swp", ".swo", ".swx"].iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root to walk and, next to it, a directory outside with a manifest in it.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            let outside = tmp.path().join("outside");
            fs::create_dir_all(&root).unwrap();
            fs::create_dir_all(&outside).unwrap();
            fs::write(outside.join("secret.yaml"), "kind: Secret\n").unwrap();
            Fixture {
                _tmp: tmp,
                root,
                outside,
            }
        }

        fn write(&self, relative: &str) {
            let path = self.root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "kind: A\n").unwrap();
        }

        fn link(&self, relative: &str, target: impl AsRef<Path>) {
            let path = self.root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        /// The files found, relative to the root.
        fn files(&self) -> Vec<String> {
            let found = files(std::slice::from_ref(&self.root)).unwrap_or_else(|e| panic!("{e}"));
            let relative = |p: &PathBuf| p.strip_prefix(&self.root).unwrap().display().to_string();
            found.iter().map(relative).collect()
        }

        fn refused(&self) -> LinkError {
            match files(std::slice::from_ref(&self.root)) {
                Err(WalkError::Link(error)) => error,
                other => panic!("expected a refused link, got {other:?}"),
            }
        }
    }

    /// The link and target an error names, and its message.
    fn named(error: &LinkError) -> (String, String, String) {
        let (link, target) = match error {
            LinkError::Escapes { link, target, .. } | LinkError::Cycle { link, target } => {
                (link, target)
            }
        };
        let text = error.to_string();
        (
            link.display().to_string(),
            target.display().to_string(),
            text,
        )
    }

    #[test]
    fn a_file_link_leading_outside_is_refused_naming_it() {
        let fx = Fixture::new();
        fx.write("a.yaml");
        fx.link("evil.yaml", fx.outside.join("secret.yaml"));
        let error = fx.refused();
        assert!(matches!(error, LinkError::Escapes { .. }), "{error:?}");
        let (link, target, text) = named(&error);
        assert_eq!(link, fx.root.join("evil.yaml").display().to_string());
        assert_eq!(target, fx.outside.join("secret.yaml").display().to_string());
        assert!(text.contains("leads outside"), "{text}");
        assert!(text.contains(&fx.root.display().to_string()), "{text}");
        assert!(text.contains("point the link inside it"), "{text}");
    }

    #[test]
    fn a_relative_link_climbing_out_is_refused() {
        let fx = Fixture::new();
        fx.write("sub/b.yaml");
        fx.link("sub/evil.yaml", "../../outside/secret.yaml");
        let (link, target, _) = named(&fx.refused());
        assert!(link.ends_with("root/sub/evil.yaml"), "{link}");
        assert_eq!(target, "../../outside/secret.yaml");
        // Down and back up again is still out.
        let fx = Fixture::new();
        fx.write("sub/b.yaml");
        fx.link("evil.yaml", "sub/../../outside/secret.yaml");
        assert!(matches!(fx.refused(), LinkError::Escapes { .. }));
    }

    #[test]
    fn a_directory_link_leading_outside_is_refused() {
        let fx = Fixture::new();
        fx.link("shared", &fx.outside);
        let (link, target, _) = named(&fx.refused());
        assert!(link.ends_with("root/shared"), "{link}");
        assert_eq!(target, fx.outside.display().to_string());
        // Whatever its name: what it is cannot be known without looking outside.
        let fx = Fixture::new();
        fx.link("README.md", fx.outside.join("secret.yaml"));
        assert!(matches!(fx.refused(), LinkError::Escapes { .. }));
    }

    /// `a.yaml -> .hidden/secret.yaml`, `.hidden -> ../outside`: the link that
    /// leaves the root is the one named.
    #[test]
    fn a_link_leaving_through_another_names_the_one_that_leaves() {
        let fx = Fixture::new();
        fx.link(".hidden", "../outside");
        fx.link("a.yaml", ".hidden/secret.yaml");
        let (link, target, _) = named(&fx.refused());
        assert!(link.ends_with("root/.hidden"), "{link}");
        assert_eq!(target, "../outside");
    }

    #[test]
    fn links_inside_the_root_are_followed_relative_or_absolute() {
        let fx = Fixture::new();
        fx.write("envs/prod/app.yaml");
        fx.write("base/common.yaml");
        fx.link("current", "envs/prod");
        fx.link("a-abs.yaml", fx.root.join("base/common.yaml"));
        fx.link("b-rel.yaml", "envs/../envs/prod/app.yaml");
        // One file found through three names is read once, under the first.
        assert_eq!(fx.files(), ["a-abs.yaml", "b-rel.yaml"]);
        // An absolute link spelled through the root's own link is inside too.
        let fx = Fixture::new();
        let alias = fx.root.parent().unwrap().join("alias");
        symlink(&fx.root, &alias).unwrap();
        fx.write("x/app.yaml");
        fx.link("app.yaml", alias.join("x/app.yaml"));
        let found = files(std::slice::from_ref(&alias)).unwrap();
        assert_eq!(found, [alias.join("app.yaml")]);
    }

    #[test]
    fn a_link_cycle_is_refused() {
        let fx = Fixture::new();
        fx.link("a.yaml", "b.yaml");
        fx.link("b.yaml", "a.yaml");
        let (link, target, text) = named(&fx.refused());
        assert!(link.ends_with("root/a.yaml"), "{link}");
        assert_eq!(target, "b.yaml");
        assert!(text.contains("a link cycle"), "{text}");
        // Cycles refuse whatever the name: nothing says it is not a directory.
        let fx = Fixture::new();
        fx.link("loop", "loop");
        assert!(matches!(fx.refused(), LinkError::Cycle { .. }));
    }

    #[test]
    fn a_directory_link_to_a_directory_containing_it_is_a_cycle() {
        for (link, target) in [("loop", "."), ("sub/up", ".."), ("sub/deeper/up", "../..")] {
            let fx = Fixture::new();
            fx.write("sub/a.yaml");
            fx.link(link, target);
            let (named_link, named_target, _) = named(&fx.refused());
            assert!(named_link.ends_with(link), "{named_link}");
            assert_eq!(named_target, target);
        }
    }

    #[test]
    fn broken_links_matter_only_where_a_manifest_should_be() {
        let fx = Fixture::new();
        fx.write("a.yaml");
        fx.link("notes", "missing");
        assert_eq!(fx.files(), ["a.yaml"]);
        fx.link("b.yaml", "missing.yaml");
        match files(std::slice::from_ref(&fx.root)) {
            Err(WalkError::Io { path, .. }) => assert_eq!(path, fx.root.join("b.yaml")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_named_explicitly_is_read_wherever_it_leads() {
        let fx = Fixture::new();
        fx.link("mine.yaml", fx.outside.join("secret.yaml"));
        let named = fx.root.join("mine.yaml");
        assert_eq!(files(std::slice::from_ref(&named)).unwrap(), [named]);
    }

    #[test]
    fn a_path_is_resolved_within_its_root() {
        let fx = Fixture::new();
        fx.write("clusters/dev/a.yaml");
        fx.link("current", "clusters/dev");
        fx.link("escape", "../outside");
        let canonical = fs::canonicalize(&fx.root).unwrap();
        let resolved = resolve_within(&fx.root, Path::new("current")).unwrap();
        assert_eq!(resolved, canonical.join("clusters/dev"));
        for path in ["../outside", "clusters/../../outside", "escape", "escape/x"] {
            match resolve_within(&fx.root, Path::new(path)) {
                Err(WalkError::Link(LinkError::Escapes { .. })) => {}
                other => panic!("{path}: {other:?}"),
            }
        }
        let missing = resolve_within(&fx.root, Path::new("clusters/prod"));
        assert!(matches!(missing, Err(WalkError::Io { .. })), "{missing:?}");
    }
}
