//! `converge diff --git URL --ref REF`: a Git revision previewed as a source
//! would render it, against the cluster (through `sync`, the server's dry-run) or,
//! with `--base REF`, against another revision offline (`converge::preview`).

use super::Exit;
use super::args::{DiffArgs, ReportFormat, SyncArgs};
use super::render::Reach;
use super::revision::{describe, head, load, revision};
use super::sync::{Comment, Mode, sync};
use anyhow::Result;
use converge::config::DEFAULT_NAMESPACE;
use converge::preview::{self, CompareOptions, Prune};

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
