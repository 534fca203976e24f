//! A Git revision as the command line reads it (`--git`, `--ref`, `--path`):
//! checked out through the daemon's Git source, loaded as a source would be, and
//! described for people. `sync` (`diff`/`apply --git`) and `preview` (`--base`)
//! both read revisions through here.

use super::args::SyncArgs;
use super::render::{self, Cluster, Reach, Root};
use anyhow::{Context, Result};
use converge::config::redact_url;
use converge::manifest::Manifest;
use converge::preview::{self, Credentials, GitRevision, RefSpec};
use converge::source::{Snapshot, SourceError};
use std::path::Path;

/// The revision `--git`, `--ref` and `--path` name.
pub(super) fn head(args: &SyncArgs) -> GitRevision {
    revision(args, args.revision.reference.as_deref().unwrap_or("HEAD"))
}

pub(super) fn revision(args: &SyncArgs, reference: &str) -> GitRevision {
    let flags = &args.revision;
    GitRevision {
        url: flags.git.clone().unwrap_or_default(),
        reference: RefSpec::parse(reference),
        path: flags.path.clone(),
        credentials: Credentials {
            username_env: flags.git_username_env.clone(),
            password_env: flags.git_password_env.clone(),
            ssh_key_file: flags.git_ssh_key.clone(),
            known_hosts_file: flags.git_known_hosts.clone(),
        },
    }
}

/// A revision's manifests, the cluster if rendering connected to it, and where
/// they were checked out.
pub(super) struct Loaded {
    pub manifests: Vec<Manifest>,
    pub cluster: Option<Cluster>,
    pub snapshot: Snapshot,
}

/// Checks `revision` out under `scratch` and renders it.
pub(super) async fn load(
    args: &SyncArgs,
    name: &str,
    revision: &GitRevision,
    scratch: &Path,
    reach: Reach,
) -> Result<Loaded> {
    let slot = format!("checkout-{}", std::fs::read_dir(scratch)?.count());
    let (owned, scratch_dir) = (revision.clone(), scratch.to_path_buf());
    let snapshot =
        tokio::task::spawn_blocking(move || preview::checkout(&owned, &scratch_dir, &slot))
            .await
            .map_err(|e| SourceError::Worker(e.to_string()))?
            .with_context(|| format!("cannot check out {}", shown(args, revision)))?;
    let root = Root {
        root: snapshot.root.clone(),
        base: snapshot.base.clone(),
    };
    // Files are named as the repository names them, not by the scratch directory.
    let scratch_prefix = format!("{}/", snapshot.base.display());
    let (mut manifests, cluster) = render::load_roots(args, name, &[root], reach)
        .await
        .map_err(|error| anyhow::anyhow!("{}", message(&error).replace(&scratch_prefix, "")))
        .with_context(|| format!("cannot render {}", shown(args, revision)))?;
    for manifest in &mut manifests {
        if let Ok(relative) = manifest.origin.file.strip_prefix(&snapshot.base) {
            manifest.origin.file = relative.to_path_buf();
        }
    }
    Ok(Loaded {
        manifests,
        cluster,
        snapshot,
    })
}

/// The error and its causes, each cause only when the text does not quote it yet
/// (as `main` prints errors).
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// `` `https://host/repo` ref `feature` `` without credentials.
fn shown(args: &SyncArgs, revision: &GitRevision) -> String {
    let url = redact_url(args.revision.git.as_deref().unwrap_or_default());
    let reference = match &revision.reference {
        RefSpec::Commit(c) | RefSpec::Full(c) | RefSpec::Short(c) => c,
    };
    let path = match &args.revision.path {
        Some(path) => format!(" path `{}`", path.display()),
        None => String::new(),
    };
    format!("`{url}` at `{reference}`{path}")
}

/// `` `URL` at `feature` (0123456789ab) ``: a revision as reports name it.
pub(super) fn describe(args: &SyncArgs, revision: &GitRevision, snapshot: &Snapshot) -> String {
    let short = snapshot.revision.get(..12).unwrap_or(&snapshot.revision);
    format!("{} ({short})", shown(args, revision))
}
