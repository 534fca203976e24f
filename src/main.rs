//! The `converge` binary: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use anyhow::{Context, Result};
use clap::Parser;
use converge::cli::{
    Cli, Command, LogFormat, OutputFormat, RunArgs, StatusArgs, SyncArgs, version_line,
};
use converge::config::Config;
use converge::daemon::shutdown;
use converge::daemon::{self, DaemonOptions, SourceSpec};
use converge::engine::applyset::ApplySet;
use converge::engine::{Engine, Outcome, RunOptions, Scope};
use converge::health::{self, WaitOptions, WaitOutcome};
use converge::http::status::SyncResult;
use converge::kube::{Client, ClusterConfig};
use converge::manifest;
use converge::report::{self, TextOptions};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Exit codes scripts can rely on (`diff` follows `diff(1)`).
const CHANGES: u8 = 1;
const ERROR: u8 = 2;
/// `apply --wait`: applied, but something failed or was not ready in time.
const NOT_READY: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Version => {
            println!("{}", version_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => {
            init_logging(cli.verbose, LogFormat::Text, "warn");
            let wait = args.wait.then_some(WaitOptions {
                timeout: args.timeout,
            });
            block_on(sync(args.sync, args.dry_run, false, wait))
        }
        Command::Diff(args) => {
            init_logging(cli.verbose, LogFormat::Text, "warn");
            block_on(sync(args, true, true, None))
        }
        Command::Run(args) => {
            // A daemon says what it does and why by default.
            init_logging(cli.verbose, args.log_format, "info");
            block_on(run_daemon(args))
        }
        Command::Status(args) => {
            init_logging(cli.verbose, LogFormat::Text, "warn");
            block_on(status(args))
        }
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(ERROR)
    })
}

fn block_on<F: Future<Output = Result<ExitCode>>>(future: F) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// `apply` and `diff`: load, plan against the cluster, write unless previewing,
/// report, and (`apply --wait`) wait for health. `diff` exits 1 when there are
/// changes; `apply --wait` exits 3 when something is not ready.
async fn sync(
    args: SyncArgs,
    dry_run: bool,
    is_diff: bool,
    wait: Option<WaitOptions>,
) -> Result<ExitCode> {
    let name = args.applyset_name().map_err(anyhow::Error::msg)?;
    let manifests = manifest::load(&args.paths)?;
    if manifests.is_empty() && !(args.prune && args.allow_mass_prune) {
        anyhow::bail!(
            "no manifests found in {}: nothing was changed. With --prune an empty source \
             would delete every object converge owns there; check the path, or pass \
             --prune --allow-mass-prune to delete them on purpose",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let config = ClusterConfig::load(args.kubeconfig.as_deref(), args.context.as_deref())?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::new(config)?;
    let options = RunOptions {
        name,
        namespace,
        prune: args.prune,
        allow_mass_prune: args.allow_mass_prune,
        dry_run,
        scope: Scope::Full,
    };
    let engine = Engine::connect(client).await?;
    let outcome = engine.run(manifests, &options, None).await?;
    if args.output == OutputFormat::Text {
        let text_options = TextOptions {
            diffs: dry_run,
            color: args.color.enabled(),
            dry_run,
        };
        print!("{}", report::text(&outcome.plan, text_options));
    }
    let waited = match wait {
        Some(wait) => Some(wait_for_health(&engine, &options, &outcome, wait, args.output).await),
        None => None,
    };
    if args.output == OutputFormat::Json {
        let mut document = report::json(&outcome.plan, dry_run);
        if let Some(waited) = &waited {
            report::add_wait(&mut document, waited);
        }
        println!("{document:#}");
    }
    Ok(match waited {
        Some(waited) if !waited.all_ready() => ExitCode::from(NOT_READY),
        _ if is_diff && outcome.plan.has_changes() => ExitCode::from(CHANGES),
        _ => ExitCode::SUCCESS,
    })
}

/// `apply --wait`: watches every desired object until all are ready, one fails or
/// the timeout passes; gathers evidence for what is not ready. Progress goes to
/// stderr when it is a terminal, the verdict to stdout.
async fn wait_for_health(
    engine: &Engine,
    options: &RunOptions,
    outcome: &Outcome,
    wait: WaitOptions,
    output: OutputFormat,
) -> WaitOutcome {
    // generateName objects get their name from the server; they are not tracked.
    let objects: Vec<_> = outcome.plan.named_desired().cloned().collect();
    let selector = ApplySet::new(&options.name, &options.namespace).member_selector();
    let mut line = ProgressLine::new();
    let mut waited = health::wait::wait(
        engine.client(),
        engine.discovery(),
        &selector,
        &objects,
        wait,
        |progress| line.show(&report::progress_line(progress)),
    )
    .await;
    line.clear();
    health::wait::explain(engine.client(), &mut waited).await;
    if output == OutputFormat::Text {
        print!("\n{}", report::wait_text(&waited));
    }
    waited
}

/// A progress line redrawn in place on stderr, only in a terminal and only once
/// the wait has lasted a moment (a wait that ends at once shows nothing).
struct ProgressLine {
    enabled: bool,
    shown: bool,
    started: std::time::Instant,
}

impl ProgressLine {
    const AFTER: std::time::Duration = std::time::Duration::from_secs(1);

    fn new() -> Self {
        ProgressLine {
            enabled: std::io::stderr().is_terminal(),
            shown: false,
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, text: &str) {
        if !self.enabled || self.started.elapsed() < Self::AFTER {
            return;
        }
        let width = terminal_width();
        let text: String = text.chars().take(width.saturating_sub(1)).collect();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K{text}");
        let _ = stderr.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// `$COLUMNS`, else 80: a progress line longer than the terminal would wrap and
/// no longer be redrawn in place.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}

/// `converge run`: the daemon, until SIGTERM or SIGINT.
async fn run_daemon(args: RunArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let kubeconfig = args
        .kubeconfig
        .or_else(|| config.cluster.kubeconfig.clone());
    let context = args.context.or_else(|| config.cluster.context.clone());
    let cluster = ClusterConfig::load(kubeconfig.as_deref(), context.as_deref())?;
    let engine = Engine::connect(Client::new(cluster)?)
        .await
        .context("cannot reach the cluster")?;
    let specs = config
        .sources
        .iter()
        .map(|source| SourceSpec::from_config(source, &config.state_dir))
        .collect::<Result<Vec<_>, _>>()?;
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::signal().await;
        trigger.fire();
    });
    let options = DaemonOptions {
        listen: args.listen.unwrap_or(config.server.listen),
        dry_run: args.dry_run,
    };
    daemon::run(engine, specs, options, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `converge status`: the daemon's /status as a table or JSON.
async fn status(args: StatusArgs) -> Result<ExitCode> {
    let report = converge::http::server::fetch_status(&args.addr).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", report::status_text(&report, args.color.enabled())),
    }
    let all_synced = report
        .sources
        .iter()
        .all(|s| s.result == SyncResult::Synced);
    Ok(if all_synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(CHANGES)
    })
}

/// Logs go to stderr so that stdout stays the command's output. `-v` raises the
/// level from `default`; RUST_LOG overrides both.
fn init_logging(verbose: u8, format: LogFormat, default: &str) {
    let level = match (verbose, default) {
        (0, level) => level,
        (1, "warn") => "info",
        (1, _) | (2, "warn") => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("converge={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
