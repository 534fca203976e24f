//! The `converge` binary: parse the command line, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use clap::Parser;
use converge::cli::{Cli, Command, version_line};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("{}", version_line());
            ExitCode::SUCCESS
        }
    }
}
