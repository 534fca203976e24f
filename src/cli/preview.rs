//! `converge diff --git URL --ref REF`: a Git revision previewed as a source
//! would render it, against the cluster (through `sync`, the server's dry-run) or,
//! with `--base REF`, against another revision offline (`converge::preview`).

use super::Exit;
use super::args::{DiffArgs, ReportFormat, SyncArgs};
use super::render::{self, Cluster, Reach, Root};
use super::sync::{Mode, sync};
use anyhow::{Context, Result};
use converge::config::{DEFAULT_NAMESPACE, redact_url};
use converge::manifest::Manifest;
use converge::preview::{
    self, CompareOptions, Credentials, GitRevision, MarkdownOptions, Preview, Prune, RefSpec,
};
use converge::source::{Snapshot, SourceError};
use std::path::Path;

/// `-o markdown`'s settings.
#[derive(Debug, Clone)]
pub(crate) struct Comment {
    pub max_bytes: usize,
    pub title: Option<String>,
}

impl Comment {
    /// `--title`, else `converge diff: ` and what was compared.
    pub(super) fn title(&self, compared: &str) -> String {
        self.title
            .clone()
            .unwrap_or_else(|| format!("converge diff: {compared}"))
    }

    pub(super) fn write(&self, preview: &Preview, title: String) -> String {
        preview::markdown(
            preview,
            &MarkdownOptions {
                title,
                max_bytes: self.max_bytes,
            },
        )
    }
}

/// `converge diff`: PATHs or a revision against the cluster, or two revisions.
pub(crate) async fn diff(args: DiffArgs) -> Result<Exit> {
    let comment = Comment {
        max_bytes: usize::try_from(args.max_bytes).unwrap_or(usize::MAX),
        title: args.title,
    };
    match args.base {
        None => sync(args.sync, Mode::Diff(comment)).await,
        Some(base) => diff_revisions(args.sync, &base, &comment).await,
    }
}

/// The revision `--git`, `--ref` and `--path` name.
pub(super) fn head(args: &SyncArgs) -> GitRevision {
    revision(args, args.revision.reference.as_deref().unwrap_or("HEAD"))
}

fn revision(args: &SyncArgs, reference: &str) -> GitRevision {
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

/// `diff --base`: both revisions rendered without a cluster and compared object
/// by object.
async fn diff_revisions(args: SyncArgs, base: &str, comment: &Comment) -> Result<Exit> {
    args.check_source().map_err(anyhow::Error::msg)?;
    let name = args.applyset_name().map_err(anyhow::Error::msg)?;
    let scratch = tempfile::tempdir()?;
    let head_revision = head(&args);
    let base_revision = revision(&args, base);
    let head = load(&args, &name, &head_revision, scratch.path(), Reach::Offline).await?;
    let base = load(&args, &name, &base_revision, scratch.path(), Reach::Offline).await?;
    let options = CompareOptions {
        namespace: args
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        prune: match args.prune {
            true => Prune::Enabled,
            false => Prune::Disabled,
        },
    };
    let result = preview::compare(&base.manifests, &head.manifests, &options)?;
    let compared = format!(
        "{} against {}",
        describe(&args, &head_revision, &head.snapshot),
        describe(&args, &base_revision, &base.snapshot)
    );
    match args.output {
        ReportFormat::Text => {
            eprintln!("{compared}");
            print!("{}", preview::text(&result, args.color.enabled()));
        }
        ReportFormat::Json => {
            let mut document = result.json();
            document["head"] = head.snapshot.revision.clone().into();
            document["base"] = base.snapshot.revision.clone().into();
            println!("{document:#}");
        }
        ReportFormat::Markdown => {
            let title = comment.title(&compared);
            print!("{}", comment.write(&result, title));
        }
    }
    Ok(match result.has_changes() {
        true => Exit::Changes,
        false => Exit::Ok,
    })
}
