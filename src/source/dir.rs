//! Local directory sources: a content-hash revision and an inotify watch.
//!
//! The revision hashes exactly the files the engine loads ([`manifest::files`]):
//! recursive, in name order, `.yaml`, `.yml` and `.json` files only, hidden entries
//! skipped, symlinks followed inside the directory and refused when they lead out
//! of it. So the revision changes exactly when what the engine would load changes,
//! a ConfigMap-style mount (`..2024_…/` data dirs, a `..data` symlink, per-file
//! symlinks, swapped atomically by rename) is hashed through its symlinks, and a
//! link to a file outside fails here as it would in the load, without reading it.

use crate::manifest::is_editor_temp;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use ring::digest;
use std::sync::mpsc::RecvTimeoutError;
use tokio::sync::mpsc;

use super::{Snapshot, SourceError};
use crate::manifest;
use crate::render::{self, RootKind};

/// How long the watcher waits for a burst of writes to settle: long enough to see a
/// whole `kubectl cp` or ConfigMap swap, short enough to apply within a second.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a burst is waited for: a directory written to more often than
/// [`DEBOUNCE`] (a tool rewriting a file in a loop) is still reconciled.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// A directory of manifests.
#[derive(Debug, Clone)]
pub(crate) struct DirSource {
    path: PathBuf,
}

impl DirSource {
    pub(crate) fn new(path: PathBuf) -> Self {
        DirSource { path }
    }

    /// The directory (as configured).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's current revision; the engine loads from the directory itself.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, SourceError> {
        Ok(Snapshot {
            revision: revision(&self.path)?,
            root: self.path.clone(),
            base: self.path.clone(),
        })
    }
}

/// `dir:` and the first 12 hex digits of a SHA-256 over each manifest file's relative
/// path and contents, in walk order. Lengths are hashed too, so moving bytes between
/// a name and a body cannot produce the same hash.
pub(crate) fn revision(dir: &Path) -> Result<String, SourceError> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for path in hashed_files(dir)? {
        let bytes = fs::read(&path).map_err(|error| io_error(&path, error))?;
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        let name = relative.to_string_lossy();
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(&bytes);
    }
    let hex: String = ctx.finish().as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("dir:{hex}"))
}

/// The files the revision covers: what the engine loads, or for a kustomization or
/// a chart every file a render may read (templates, patches, generator files).
fn hashed_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    if render::detect(dir) == RootKind::Plain {
        return Ok(manifest::files(&[dir.to_path_buf()])?);
    }
    let canonical = fs::canonicalize(dir).map_err(|e| io_error(dir, e))?;
    let files = render::files_under(dir)
        .map_err(|e| io_error(dir, std::io::Error::other(e.to_string())))?;
    // Named as the manifests are: joined onto the directory as configured.
    Ok(files
        .iter()
        .map(|f| dir.join(f.strip_prefix(&canonical).unwrap_or(f)))
        .collect())
}

fn io_error(path: &Path, error: std::io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A running directory watch; dropping it stops the watcher thread.
pub(crate) struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Watches `dir` recursively and sends `name` on `tx` when its revision changes.
///
/// Every debounced burst of events rehashes the directory and compares with the last
/// revision seen, so editor temp files, hidden files and no-op writes send nothing,
/// while a `..data` symlink swap (all of whose events are on hidden names) does.
pub(crate) fn watch(
    dir: &Path,
    name: String,
    tx: mpsc::Sender<String>,
) -> Result<DirWatcher, SourceError> {
    let watch_error = |e: notify::Error| SourceError::Watch {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    };
    // The revision as the watch starts: a change from here on is reported.
    let last = revision(dir).ok();
    let (events, arrivals) = std::sync::mpsc::channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<Event>| match result {
            Ok(event) if is_content_change(&event) => {
                let _ = events.send(());
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "directory watch error"),
        })
        .map_err(watch_error)?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(watch_error)?;
    let root = dir.to_path_buf();
    std::thread::spawn(move || debounce(&arrivals, last, &root, &name, &tx));
    Ok(DirWatcher { _watcher: watcher })
}

/// Whether an event can change what the engine loads. Opening and reading files
/// (as hashing the directory does) is not: reacting to it would wake the watcher
/// again after every hash, forever. Editor temp files are not either.
fn is_content_change(event: &Event) -> bool {
    let read_only = matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    );
    !read_only && !event.paths.iter().all(|p| is_editor_temp(p))
}

/// Waits for a burst of changes to settle (DEBOUNCE without a new one, or
/// MAX_SETTLE in all), then reports the source when its content hash changed. Ends
/// when the watcher is dropped (its sender goes away).
fn debounce(
    arrivals: &std::sync::mpsc::Receiver<()>,
    mut last: Option<String>,
    root: &Path,
    name: &str,
    tx: &mpsc::Sender<String>,
) {
    while arrivals.recv().is_ok() {
        let burst = std::time::Instant::now();
        while burst.elapsed() < MAX_SETTLE {
            match arrivals.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let current = revision(root).ok();
        if current != last {
            last = current;
            tracing::debug!(source = %name, revision = ?last, "directory changed");
            // A closed channel means the daemon is shutting down.
            if tx.blocking_send(name.to_string()).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }

    fn rev(dir: &Path) -> String {
        revision(dir).unwrap()
    }

    #[test]
    fn revision_is_short_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a.yaml", "kind: A\n");
        let first = rev(tmp.path());
        assert!(first.starts_with("dir:") && first.len() == 16, "{first}");
        assert_eq!(rev(tmp.path()), first);
    }

    #[test]
    fn revision_changes_with_content_names_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a.yaml", "kind: A\n");
        let base = rev(tmp.path());
        write(tmp.path(), "a.yaml", "kind: B\n");
        let edited = rev(tmp.path());
        assert_ne!(edited, base);
        fs::rename(tmp.path().join("a.yaml"), tmp.path().join("b.yaml")).unwrap();
        let renamed = rev(tmp.path());
        assert_ne!(renamed, edited);
        write(tmp.path(), "sub/c.json", "{}");
        assert_ne!(rev(tmp.path()), renamed);
    }

    #[test]
    fn revision_ignores_hidden_temp_and_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "a.yaml", "kind: A\n");
        let base = rev(tmp.path());
        for name in [
            ".a.yaml.swp",
            "a.yaml~",
            ".#a.yaml",
            "4913",
            ".hidden.yaml",
            ".git/x.yaml",
            "README.md",
        ] {
            write(tmp.path(), name, "junk");
        }
        assert_eq!(rev(tmp.path()), base);
    }

    /// A chart's templates and a kustomization's patches are not manifests, but
    /// what is rendered from them changes with them.
    #[test]
    fn a_rendered_root_is_hashed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "Chart.yaml", "name: app\n");
        write(
            tmp.path(),
            "templates/_helpers.tpl",
            "{{ define \"a\" }}1{{ end }}\n",
        );
        let base = rev(tmp.path());
        write(
            tmp.path(),
            "templates/_helpers.tpl",
            "{{ define \"a\" }}2{{ end }}\n",
        );
        let edited = rev(tmp.path());
        assert_ne!(edited, base);
        write(tmp.path(), "templates/.x.tpl.swp", "junk");
        assert_eq!(rev(tmp.path()), edited, "editor droppings are not inputs");
    }

    #[test]
    fn empty_directory_has_a_revision() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(rev(tmp.path()).starts_with("dir:"));
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let err = revision(Path::new("/nonexistent/converge")).unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/converge"));
    }

    #[test]
    fn configmap_mount_symlinks_are_followed() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "..2024_01_01/a.yaml", "kind: A\n");
        symlink("..2024_01_01", tmp.path().join("..data")).unwrap();
        symlink("..data/a.yaml", tmp.path().join("a.yaml")).unwrap();
        let before = rev(tmp.path());
        write(tmp.path(), "..2024_01_02/a.yaml", "kind: B\n");
        symlink("..2024_01_02", tmp.path().join("..data_tmp")).unwrap();
        fs::rename(tmp.path().join("..data_tmp"), tmp.path().join("..data")).unwrap();
        assert_ne!(rev(tmp.path()), before);
    }

    /// The hash reads what the load reads: a link out of the directory, or a cycle,
    /// fails it the same way, and nothing outside is read.
    #[test]
    fn links_leading_outside_or_in_a_cycle_fail_the_revision() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests");
        write(&dir, "a.yaml", "kind: A\n");
        write(tmp.path(), "outside/b.yaml", "kind: B\n");
        symlink(tmp.path().join("outside/b.yaml"), dir.join("evil.yaml")).unwrap();
        let err = revision(&dir).unwrap_err();
        assert!(matches!(err, SourceError::Link(_)), "{err:?}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("evil.yaml -> "), "{err}");
        fs::remove_file(dir.join("evil.yaml")).unwrap();
        symlink("../outside", dir.join("shared")).unwrap();
        assert!(matches!(revision(&dir), Err(SourceError::Link(_))));
        fs::remove_file(dir.join("shared")).unwrap();
        symlink(".", dir.join("loop")).unwrap();
        assert!(matches!(revision(&dir), Err(SourceError::Link(_))));
    }

    #[test]
    fn broken_manifest_symlink_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        symlink("missing.yaml", tmp.path().join("a.yaml")).unwrap();
        assert!(revision(tmp.path()).is_err());
        let other = tempfile::tempdir().unwrap();
        symlink("missing", other.path().join("notes")).unwrap();
        assert!(revision(other.path()).is_ok());
    }

    #[test]
    fn editor_temp_names() {
        for name in [".a.yaml.swp", ".a.yaml.swx", "a.yaml~", ".#a.yaml", "4913"] {
            assert!(is_editor_temp(Path::new(name)), "{name}");
        }
        for name in ["a.yaml", "..data", "..2024_01_01", "x.json"] {
            assert!(!is_editor_temp(Path::new(name)), "{name}");
        }
    }

    /// A directory changed more often than DEBOUNCE is still reported, after at
    /// most MAX_SETTLE, and not only once the writes stop.
    #[test]
    fn a_directory_that_never_settles_is_reported_within_max_settle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (events, arrivals) = std::sync::mpsc::channel();
        let (tx, mut rx) = mpsc::channel(16);
        let root = dir.path().to_path_buf();
        let last = revision(&root).ok();
        let watcher = std::thread::spawn(move || debounce(&arrivals, last, &root, "s", &tx));
        let started = Instant::now();
        let mut reported = None;
        for i in 0..60 {
            fs::write(dir.path().join("a.yaml"), format!("v: {i}\n")).expect("write");
            events.send(()).expect("the debouncer listens");
            std::thread::sleep(Duration::from_millis(50));
            if reported.is_none() && rx.try_recv().is_ok() {
                reported = Some(started.elapsed());
            }
        }
        drop(events);
        watcher.join().expect("the debouncer ends");
        let reported = reported.expect("reported while the writes went on");
        assert!(
            reported < MAX_SETTLE + Duration::from_millis(500),
            "{reported:?}"
        );
    }
}
