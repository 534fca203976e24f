//! An upstream repository driven by the `git` CLI: a bare repository (what the
//! server serves) and a work tree that commits and pushes into it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Fails the test unless `git` and `git http-backend` are installed.
pub fn require_git() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `git` ({e}): install Debian's `git` package (apt-get install git)")
        });
    assert!(out.status.success(), "`git --exec-path` failed");
    let exec_path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let backend = exec_path.join("git-http-backend");
    assert!(
        backend.is_file(),
        "`git http-backend` is not installed ({} is missing): install Debian's `git` package",
        backend.display()
    );
    backend
}

/// A bare repository `<root>/<name>.git` and a work tree pushing to it.
pub struct Upstream {
    pub root: PathBuf,
    pub bare: PathBuf,
    pub work: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Upstream {
    /// An empty upstream; `root` is what an HTTP server would serve.
    pub fn new(name: &str) -> Upstream {
        require_git();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("srv");
        let bare = root.join(format!("{name}.git"));
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&root).expect("mkdir srv");
        let upstream = Upstream {
            root,
            bare: bare.clone(),
            work: work.clone(),
            _tmp: tmp,
        };
        upstream.run(
            upstream.root.as_path(),
            &["init", "-q", "--bare", "-b", "main", &format!("{name}.git")],
        );
        std::fs::create_dir_all(&work).expect("mkdir work");
        upstream.git(&["init", "-q", "-b", "main"]);
        upstream.git(&["remote", "add", "origin", &bare.display().to_string()]);
        upstream
    }

    /// Writes `files` (path, contents) into the work tree, commits everything and
    /// pushes the current branch; returns the new commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        let id = self.commit_local(files, message);
        self.git(&["push", "-q", "origin", "HEAD"]);
        id
    }

    /// Like [`Upstream::commit`] without pushing.
    pub fn commit_local(&self, files: &[(&str, &str)], message: &str) -> String {
        self.write(files);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    pub fn write(&self, files: &[(&str, &str)]) {
        for (path, contents) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, contents).expect("write");
        }
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Runs git in the work tree and returns its trimmed stdout; panics with stderr.
    pub fn git(&self, args: &[&str]) -> String {
        self.run(&self.work, args)
    }

    fn run(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", &self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
