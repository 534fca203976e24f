//! The `converge` binary: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use anyhow::{Context, Result};
use clap::Parser;
use converge::apply::{self, RunOptions};
use converge::cli::{Cli, Command, OutputFormat, SyncArgs, version_line};
use converge::kube::{Client, ClusterConfig};
use converge::manifest;
use converge::report::{self, TextOptions};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Exit codes scripts can rely on (`diff` follows `diff(1)`).
const CHANGES: u8 = 1;
const ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let outcome = match cli.command {
        Command::Version => {
            println!("{}", version_line());
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => block_on(sync(args.sync, args.dry_run, false)),
        Command::Diff(args) => block_on(sync(args, true, true)),
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

/// Logs go to stderr so that stdout stays the command's output.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("converge={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
