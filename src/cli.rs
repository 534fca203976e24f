//! The command line: every flag is declared, defaulted and validated here, so the
//! rest of the crate receives settings it can trust.

use clap::{Parser, Subcommand};

/// Keep a Kubernetes cluster converged with manifests from Git or a directory.
#[derive(Debug, Parser)]
#[command(name = "converge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print converge's version and build information.
    Version,
}

/// The version line printed by `converge version`.
pub fn version_line() -> String {
    format!(
        "converge {} ({} {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_crate_version() {
        assert!(version_line().contains(env!("CARGO_PKG_VERSION")));
    }
}
