//! `converge apply` and `converge diff`: load, plan against the cluster, write
//! unless previewing, report, and (`apply --wait`) wait for health.

use super::Exit;
use super::args::{ReportFormat, SyncArgs};
use super::progress::ProgressLine;
use super::render::{self, Cluster, Reach};
use super::revision;
use anyhow::{Context, Result};
use converge::config::{ArtifactLimits, Insecure};
use converge::engine::ApplySet;
use converge::engine::{Adoption, LoadedFrom, PlanOptions, Tenancy, check_not_empty};
use converge::engine::{DEFAULT_STAGE_TIMEOUT, Engine, Outcome, RunOptions, Scope, StageProgress};
use converge::health::{self, HealthRules, WaitOptions, WaitOutcome};
use converge::report::{self, TextOptions};
use converge::source::oci;
use std::path::Path;
use std::sync::{Arc, Mutex};

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

    pub(super) fn write(&self, preview: &converge::preview::Preview, title: String) -> String {
        converge::preview::markdown(
            preview,
            &converge::preview::MarkdownOptions {
                title,
                max_bytes: self.max_bytes,
            },
        )
    }
}

/// `converge apply/diff oci://REGISTRY/REPOSITORY[:TAG|@DIGEST]`: the artifact is
/// pulled (with the daemon's code: digests checked, size capped, unpacked confined)
/// into `scratch` and read as a directory; the ApplySet name defaults to the
/// repository's last part. Returns the reference and digest, for the report.
async fn pull_oci_reference(args: &mut SyncArgs, scratch: &Path) -> Result<Option<String>> {
    let Some(first) = args.paths.first().and_then(|p| p.to_str()) else {
        return Ok(None);
    };
    if !first.starts_with("oci://") {
        return Ok(None);
    }
    let reference = first.to_string();
    if args.paths.len() > 1 {
        anyhow::bail!("{reference}: give one oci:// reference and no other PATH");
    }
    let snapshot = oci::fetch_reference(
        &reference,
        scratch,
        &ArtifactLimits::default(),
        Insecure::No,
    )
    .await
    .with_context(|| format!("cannot pull {reference}"))?;
    if args.name.is_none() {
        args.name = oci::repository_name(&reference);
    }
    args.paths = vec![snapshot.root];
    Ok(Some(format!("{reference} ({})", snapshot.revision)))
}

/// What a sync does with its plan.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// `diff`: show the plan (`-o markdown`: as this comment); exit 1 when it
    /// has changes.
    Diff(Comment),
    /// `apply --dry-run`: show the plan, write nothing.
    Preview,
    /// `apply`: carry the plan out, then (`--wait`) wait for health; exit 3 when
    /// something is not ready, or a hook or wave failed the sync.
    Apply { wait: Option<WaitOptions> },
}

impl Mode {
    fn dry_run(&self) -> bool {
        !matches!(self, Mode::Apply { .. })
    }
}

pub(crate) async fn sync(mut args: SyncArgs, mode: Mode) -> Result<Exit> {
    let comment = match (&mode, args.output) {
        (Mode::Diff(comment), _) => Some(comment.clone()),
        (_, ReportFormat::Markdown) => anyhow::bail!("-o markdown is for `converge diff`"),
        _ => None,
    };
    args.check_source().map_err(anyhow::Error::msg)?;
    let scratch = tempfile::tempdir()?;
    let artifact = pull_oci_reference(&mut args, scratch.path()).await?;
    let name = args.applyset_name().map_err(anyhow::Error::msg)?;
    // Before anything is read or written: a rule that does not compile is refused.
    let rules = health_rules(&args.health)?;
    let (manifests, cluster, loaded_from, revision) = match &args.revision.git {
        None if args.chart.helm_repo.is_some() => {
            let (manifests, cluster, snapshot) =
                super::chart::load(&args, &name, scratch.path()).await?;
            let from = LoadedFrom::Source(snapshot.root.clone());
            let chart = args.chart.chart.as_deref().unwrap_or_default();
            let revision = format!("chart {chart} {}", snapshot.revision);
            (manifests, cluster, from, Some(revision))
        }
        None => {
            let (manifests, cluster) = render::load(&args, &name).await?;
            let from = LoadedFrom::Paths(args.paths.clone());
            (manifests, cluster, from, artifact)
        }
        Some(_) => {
            let head = revision::head(&args);
            let loaded =
                revision::load(&args, &name, &head, scratch.path(), Reach::Cluster).await?;
            let from = LoadedFrom::Source(loaded.snapshot.root.clone());
            let revision = revision::describe(&args, &head, &loaded.snapshot);
            (loaded.manifests, loaded.cluster, from, Some(revision))
        }
    };
    let guard = PlanOptions {
        prune: args.prune,
        allow_mass_prune: args.allow_mass_prune,
    };
    check_not_empty(&manifests, guard, loaded_from)?;
    let Cluster { engine, namespace } = match cluster {
        Some(cluster) => cluster,
        None => Cluster::connect(&args).await?,
    };
    let engine = engine.with_health_rules(rules);
    let dry_run = mode.dry_run();
    let line = Arc::new(Mutex::new(ProgressLine::new()));
    let options = RunOptions {
        name,
        namespace,
        prune: args.prune,
        allow_mass_prune: args.allow_mass_prune,
        create_namespace: args.create_namespace,
        adoption: match args.adopt {
            true => Adoption::Always,
            false => Adoption::Annotated,
        },
        tenancy: Tenancy::default(),
        dry_run,
        scope: Scope::Full,
        drift: args.drift_rules(),
        timeout: match &mode {
            Mode::Apply { wait: Some(wait) } => wait.timeout,
            _ => DEFAULT_STAGE_TIMEOUT,
        },
        progress: Some(stage_progress(&line)),
    };
    let outcome = engine.run(manifests, &options, None).await;
    lock(&line).clear();
    let outcome = outcome?;
    if let Some(revision) = &revision {
        eprintln!("{revision}: against the cluster");
    }
    if let (ReportFormat::Markdown, Some(comment)) = (args.output, &comment) {
        let target = revision.as_deref().unwrap_or("the manifests");
        let title = comment.title(&format!("{target} against the cluster"));
        let plan = converge::preview::Preview::from_plan(&outcome.plan);
        print!("{}", comment.write(&plan, title));
    }
    if args.output == ReportFormat::Text {
        let text_options = TextOptions {
            diffs: dry_run,
            color: args.color.enabled(),
            dry_run,
        };
        if let Some(namespace) = &outcome.created_namespace {
            let done = if dry_run {
                "would be created"
            } else {
                "created"
            };
            println!("Namespace/{namespace} {done} (--create-namespace)");
        }
        print!("{}", report::text(&outcome.plan, text_options));
        if !outcome.sync.is_empty() {
            print!("\n{}", report::sync_text(&outcome.sync));
        }
    }
    // A failed hook or wave stopped the sync: there is nothing more to wait for.
    let waited = match (&mode, outcome.failure()) {
        (Mode::Apply { wait: Some(wait) }, None) => {
            Some(wait_for_health(&engine, &options, &outcome, *wait, args.output).await)
        }
        _ => None,
    };
    if args.output == ReportFormat::Json {
        let mut document = report::json(&outcome.plan, dry_run);
        if let Some(namespace) = &outcome.created_namespace {
            document["createdNamespace"] = serde_json::Value::String(namespace.clone());
        }
        report::add_sync(&mut document, &outcome.sync);
        if let Some(waited) = &waited {
            report::add_wait(&mut document, waited);
        }
        println!("{document:#}");
    }
    Ok(match (mode, waited) {
        _ if outcome.failure().is_some() => Exit::NotReady,
        (_, Some(waited)) if !waited.all_ready() => Exit::NotReady,
        (Mode::Diff(_), _) if outcome.plan.has_changes() => Exit::Changes,
        _ => Exit::Ok,
    })
}

/// Shows where a wave or hook stands on the progress line while the sync waits.
fn stage_progress(line: &Arc<Mutex<ProgressLine>>) -> StageProgress {
    let line = line.clone();
    StageProgress(Arc::new(move |stage, progress| {
        let text = format!(
            "[{}] {}",
            report::stage_label(stage),
            report::progress_line(progress)
        );
        lock(&line).show(&text);
    }))
}

/// The progress line; a panic while it was held leaves it usable.
/// The rules of every `--health FILE`, in order; every problem of every file at once.
fn health_rules(files: &[std::path::PathBuf]) -> Result<HealthRules> {
    let mut rules = HealthRules::default();
    let mut problems = Vec::new();
    for file in files {
        match HealthRules::load(file) {
            Ok(more) => rules = rules.then(&more),
            Err(errors) => problems.extend(errors.iter().map(ToString::to_string)),
        }
    }
    match problems.is_empty() {
        true => Ok(rules),
        false => Err(anyhow::anyhow!(
            "health rules refused:\n  {}",
            problems.join("\n  ")
        )),
    }
}

fn lock(line: &Mutex<ProgressLine>) -> std::sync::MutexGuard<'_, ProgressLine> {
    line.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `apply --wait`: watches every desired object until all are ready, one fails or
/// the timeout passes; gathers evidence for what is not ready. Progress goes to
/// stderr when it is a terminal, the verdict to stdout.
async fn wait_for_health(
    engine: &Engine,
    options: &RunOptions,
    outcome: &Outcome,
    wait: WaitOptions,
    output: ReportFormat,
) -> WaitOutcome {
    let objects = outcome.wait_list();
    let selector = ApplySet::new(&options.name, &options.namespace).member_selector();
    let mut line = ProgressLine::new();
    let mut waited = health::wait(
        engine.reader(),
        engine.discovery(),
        &engine.health_model(),
        &selector,
        &objects,
        wait,
        |progress| line.show(&report::progress_line(progress)),
    )
    .await;
    line.clear();
    health::explain(engine.reader(), &mut waited).await;
    if output == ReportFormat::Text {
        print!("\n{}", report::wait_text(&waited));
    }
    waited
}
