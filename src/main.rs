//! The `converge` binary: parse the command line, run the command (in [`cli`]), map
//! the outcome to an exit code. Everything else lives in the library.

mod cli;

use anyhow::{Context, Result};
use clap::Parser;
use cli::args::{Cli, Command, LogFormat};
use cli::{Exit, Mode};
use converge::health::WaitOptions;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing::Level;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Version => block_on(cli::version()),
        Command::Apply(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            let mode = if args.dry_run {
                Mode::Preview
            } else {
                let wait = args.wait.then_some(WaitOptions {
                    timeout: args.timeout,
                });
                Mode::Apply { wait }
            };
            block_on(cli::sync(args.sync, mode))
        }
        Command::Diff(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::diff(args))
        }
        Command::Run(args) => {
            // A daemon says what it does and why by default.
            init_logging(cli.verbose, args.log_format, Level::INFO);
            block_on(cli::run_daemon(args))
        }
        Command::Push(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::push(args))
        }
        Command::Status(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::status(args))
        }
        // What is deployed, and the command line for shells and man.
        Command::Get(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::get(args))
        }
        Command::Completions { shell } => cli::completions(shell),
        Command::Man { out_dir } => cli::man(out_dir.as_deref()),
        // The daemon's control API.
        Command::Suspend(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::suspend(args))
        }
        Command::Resume(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::resume(args))
        }
        Command::Reconcile(args) => {
            init_logging(cli.verbose, LogFormat::Text, Level::WARN);
            block_on(cli::reconcile(args))
        }
    };
    let exit = outcome.unwrap_or_else(|error| {
        eprintln!("error: {}", describe(&error));
        Exit::Error
    });
    ExitCode::from(exit as u8)
}

/// The error and its causes joined by ": ", skipping a cause whose text the message
/// already holds (the library's errors quote their source; reqwest's innermost
/// cause, e.g. "Connection refused", is the one worth reading).
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn block_on<F: Future<Output = Result<Exit>>>(future: F) -> Result<Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Logs go to stderr so that stdout stays the command's output. Each `-v` raises the
/// level one step from `default`; RUST_LOG overrides both.
fn init_logging(verbose: u8, format: LogFormat, default: Level) {
    const LEVELS: [Level; 4] = [Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE];
    let from = LEVELS.iter().position(|&l| l == default).unwrap_or(0);
    let level = LEVELS[(from + usize::from(verbose)).min(LEVELS.len() - 1)];
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("converge={}", level.as_str().to_ascii_lowercase()))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
