//! The `converge` binary: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use anyhow::{Context, Result};
use clap::Parser;
use converge::apply::Engine;
use converge::apply::{self, RunOptions};
use converge::cli::{
    Cli, Command, LogFormat, OutputFormat, RunArgs, StatusArgs, SyncArgs, version_line,
};
use converge::config::Config;
use converge::daemon::{self, DaemonOptions, SourceSpec};
use converge::kube::{Client, ClusterConfig};
use converge::manifest;
use converge::report::{self, TextOptions};
use converge::shutdown;
use converge::status::{SyncResult, render_table};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Exit codes scripts can rely on (`diff` follows `diff(1)`).
const CHANGES: u8 = 1;
const ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Version => {
            println!("{}", version_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => {
            init_logging(cli.verbose, LogFormat::Text, "warn");
            block_on(sync(args.sync, args.dry_run, false))
        }
        Command::Diff(args) => {
            init_logging(cli.verbose, LogFormat::Text, "warn");
            block_on(sync(args, true, true))
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
/// report. `diff` exits 1 when there are changes.
async fn sync(args: SyncArgs, dry_run: bool, is_diff: bool) -> Result<ExitCode> {
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
    };
    let outcome = apply::run(&client, manifests, &options).await?;
    match args.output {
        OutputFormat::Json => println!("{:#}", report::json(&outcome.plan, dry_run)),
        OutputFormat::Text => {
            let text_options = TextOptions {
                diffs: dry_run,
                color: args.color.enabled(),
                dry_run,
            };
            print!("{}", report::text(&outcome.plan, text_options));
        }
    }
    Ok(if is_diff && outcome.plan.has_changes() {
        ExitCode::from(CHANGES)
    } else {
        ExitCode::SUCCESS
    })
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
    let report = converge::server::fetch_status(&args.addr).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", render_table(&report, args.color.enabled())),
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
