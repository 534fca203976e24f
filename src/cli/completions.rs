//! `converge completions SHELL` and `converge man`: the shell's and man's view
//! of the command line, generated from the clap definitions in [`super::args`],
//! so they never fall behind a flag.

use super::Exit;
use super::args::{Cli, CompletionShell};
use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;
use std::path::Path;

/// Writes the completion script for `shell` to stdout.
pub(crate) fn completions(shell: CompletionShell) -> Result<Exit> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "converge", &mut out);
    write_stdout(&out).context("cannot write the completion script")?;
    Ok(Exit::Ok)
}

/// Writes to stdout; a reader that stopped early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes converge(1) to stdout, or with `out_dir` one page per command there
/// (converge.1, converge-diff.1, …).
pub(crate) fn man(out_dir: Option<&Path>) -> Result<Exit> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("cannot render the man page")?;
            write_stdout(&out).context("cannot write the man page")?;
        }
    }
    Ok(Exit::Ok)
}
