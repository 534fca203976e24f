//! One Git revision checked out for a preview: the daemon's own Git source
//! ([`crate::source::git`], libgit2) pointed at a scratch directory, so a preview
//! fetches, resolves refs, follows symlinks and reports errors exactly as a source
//! would.

use crate::config::{GitConfig, GitRef, Transport, transport};
use crate::source::git::GitSource;
use crate::source::{Snapshot, SourceError};
use std::path::{Component, Path, PathBuf};

/// What `--ref` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefSpec {
    /// 40 hex digits.
    Commit(String),
    /// `refs/…` or `HEAD`: as the remote lists it (`refs/pull/12/head`).
    Full(String),
    /// A short name: a branch, else a tag, else a remote-tracking branch of
    /// that name (`origin/main` in a local clone).
    Short(String),
}

impl RefSpec {
    pub fn parse(text: &str) -> RefSpec {
        let text = text.trim();
        if text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            RefSpec::Commit(text.to_ascii_lowercase())
        } else if text.starts_with("refs/") || text == "HEAD" {
            RefSpec::Full(text.to_string())
        } else {
            RefSpec::Short(text.to_string())
        }
    }

    /// What to ask the remote for, in order.
    fn candidates(&self) -> Vec<GitRef> {
        match self {
            RefSpec::Commit(c) => vec![GitRef::Commit(c.clone())],
            RefSpec::Full(r) => vec![GitRef::Ref(r.clone())],
            RefSpec::Short(s) => vec![
                GitRef::Branch(s.clone()),
                GitRef::Tag(s.clone()),
                GitRef::Ref(format!("refs/remotes/{s}")),
            ],
        }
    }
}

/// A revision of a repository: `--git URL --ref REF [--path P]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRevision {
    /// A remote URL (https, ssh, file) or a local repository's directory.
    pub url: String,
    pub reference: RefSpec,
    /// The manifests' directory inside the repository (relative, no `..`).
    pub path: Option<PathBuf>,
    pub credentials: Credentials,
}

/// How a private repository is reached, as a Git source's settings name them:
/// HTTPS credentials by environment variable, an SSH key and known_hosts by file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub ssh_key_file: Option<PathBuf>,
    /// For SSH; default `~/.ssh/known_hosts`.
    pub known_hosts_file: Option<PathBuf>,
}

/// Fetches `revision` into `scratch/<name>` (created if needed, reused when it is
/// a checkout converge made) and returns its snapshot. Blocking: call it on a
/// blocking thread.
pub fn checkout(
    revision: &GitRevision,
    scratch: &Path,
    name: &str,
) -> Result<Snapshot, SourceError> {
    let url = resolve_url(&revision.url)?;
    if let Some(path) = &revision.path {
        let escapes = path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
        if escapes {
            return Err(SourceError::PathNotFound {
                path: path.clone(),
                revision: "(any): the path must be relative to the repository, without `..`".into(),
            });
        }
    }
    let credentials = &revision.credentials;
    let known_hosts = match transport(&url) {
        Some(Transport::Ssh) => credentials.known_hosts_file.clone().or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
        }),
        _ => None,
    };
    let mut last = None;
    for reference in revision.reference.candidates() {
        let config = GitConfig {
            url: url.clone(),
            reference,
            path: revision.path.clone(),
            username_env: credentials.username_env.clone(),
            password_env: credentials.password_env.clone(),
            ssh_key_file: credentials.ssh_key_file.clone(),
            known_hosts_file: known_hosts.clone(),
            webhook_secret_env: None,
        };
        let source = GitSource::new(&config, scratch.join(name), &crate::config::process_env)?;
        match source.sync() {
            Err(error @ SourceError::RefNotFound { .. }) => last = Some(error),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| SourceError::Worker("no reference to fetch".into())))
}

/// A URL as given, or a local directory made absolute (libgit2's local transport).
fn resolve_url(url: &str) -> Result<String, SourceError> {
    if transport(url).is_some_and(|t| t != Transport::File) || url.contains("://") {
        return Ok(url.to_string());
    }
    let path = Path::new(url);
    let absolute = std::path::absolute(path).map_err(|error| SourceError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    if !absolute.is_dir() {
        return Err(SourceError::Unreachable {
            url: url.to_string(),
            detail: "not a URL converge reads (https, http, ssh, file) nor a directory".into(),
        });
    }
    Ok(absolute.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_read_as_commits_full_names_or_short_names() {
        let sha = "0123456789ABCDEF0123456789abcdef01234567";
        assert_eq!(
            RefSpec::parse(sha),
            RefSpec::Commit(sha.to_ascii_lowercase())
        );
        assert_eq!(
            RefSpec::parse("refs/pull/12/head"),
            RefSpec::Full("refs/pull/12/head".into())
        );
        assert_eq!(RefSpec::parse("HEAD"), RefSpec::Full("HEAD".into()));
        let short = RefSpec::parse("feature/x");
        assert_eq!(
            short.candidates(),
            [
                GitRef::Branch("feature/x".into()),
                GitRef::Tag("feature/x".into()),
                GitRef::Ref("refs/remotes/feature/x".into()),
            ]
        );
    }

    #[test]
    fn a_path_leaving_the_repository_is_refused_before_any_fetch() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let revision = GitRevision {
            url: scratch.path().display().to_string(),
            reference: RefSpec::parse("main"),
            path: Some("../etc".into()),
            credentials: Credentials::default(),
        };
        let error = checkout(&revision, scratch.path(), "x").expect_err("refused");
        assert!(error.to_string().contains("without `..`"), "{error}");
    }

    #[test]
    fn a_local_path_that_is_not_a_directory_is_refused() {
        let error = resolve_url("./no/such/repository").expect_err("refused");
        assert!(error.to_string().contains("nor a directory"), "{error}");
        assert_eq!(
            resolve_url("https://example.com/r.git").ok().as_deref(),
            Some("https://example.com/r.git")
        );
    }
}
