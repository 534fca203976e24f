//! Why a root could not be rendered. Every message names the file (and the line,
//! when the tool said one) and what to do; none holds a variable's value.

use super::process::RunError;
use super::tools::Tool;
use crate::manifest::{ManifestError, Origin};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The tool the root needs was not found; nothing was rendered or applied.
    #[error(
        "{}: rendering it needs {tool}, which was not found ({why}); put {tool} on PATH \
         (`hack/tools.sh build` builds the pinned version, `eval \"$(hack/tools.sh env)\"` \
         puts it there) or set [render] {tool} = \"/path/to/{tool}\" in config.toml",
        root.display()
    )]
    ToolMissing {
        tool: Tool,
        root: PathBuf,
        why: String,
    },
    /// The tool refused the root; where it said the problem is, when it said.
    #[error("{}{tool} failed on {}: {message}", location(file.as_deref(), *line), root.display())]
    ToolFailed {
        tool: Tool,
        root: PathBuf,
        file: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
    /// A SOPS file the kustomization reads could not be decrypted.
    #[error(transparent)]
    Decrypt(#[from] crate::sops::SopsError),
    /// The tool could not be run, ran too long or wrote too much.
    #[error("{tool} on {}: {error}", root.display())]
    Run {
        tool: Tool,
        root: PathBuf,
        #[source]
        error: RunError,
    },
    /// A kustomization or a values file reaches outside the source root.
    #[error(
        "{}: {field} {reference:?} leads to {}, outside {}; a render reads only files \
         inside the source (the Git checkout or the directory)",
        file.display(), target.display(), root.display()
    )]
    Escapes {
        file: PathBuf,
        field: &'static str,
        reference: String,
        target: PathBuf,
        root: PathBuf,
    },
    /// A reference that is not in the source: a remote base (refused unless the source
    /// allows them) or a missing file.
    #[error(
        "{}: {field} {reference:?} is not a file or directory in the source; remote bases \
         are refused unless the source sets allow_remote_bases = true",
        file.display()
    )]
    NotLocal {
        file: PathBuf,
        field: &'static str,
        reference: String,
    },
    /// A chart dependency that is not vendored.
    #[error(
        "{}: the chart depends on {name:?}, which is not in its charts/ directory; run \
         `helm dependency build {}` and commit charts/, or give the dependency an \
         http(s) repository to fetch it from",
        chart.display(), chart.display()
    )]
    MissingDependency { chart: PathBuf, name: String },
    /// A chart dependency that could not be fetched from its repository.
    #[error(
        "{}: the chart's dependency {name:?} is not in its charts/ directory, and {why}; \
         vendor it (`helm dependency build {}`) or fix its repository",
        chart.display(), chart.display()
    )]
    DependencyNotFetched {
        chart: PathBuf,
        name: String,
        why: String,
    },
    /// A chart dependency's download failed for now (the repository or the disk).
    #[error("{}: fetching the chart's dependency {name:?}: {detail}", chart.display())]
    DependencyUnreachable {
        chart: PathBuf,
        name: String,
        detail: String,
    },
    /// A file converge reads itself (a kustomization, `Chart.yaml`) is not valid.
    #[error("{at}: {message}")]
    Invalid { at: Origin, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The rendered objects have problems (missing names, duplicates…).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A `${VAR}` without a value or default (strict substitution).
    #[error(
        "{at}: {object}: variable {name} is not set and has no default; set it in \
         [source.vars] or a ConfigMap/Secret of vars_from, give a default \
         (${{{name}:=value}}), or escape it ($${{{name}}})"
    )]
    MissingVar {
        at: Origin,
        object: String,
        name: String,
    },
    /// The cluster's version could not be read (Helm's `--kube-version`).
    #[error("cannot read the cluster's version for helm template: {detail}")]
    Version { detail: String, transient: bool },
    /// A ConfigMap or Secret of `vars_from` could not be read.
    #[error("vars_from {reference}: {detail}")]
    Vars {
        reference: String,
        detail: String,
        transient: bool,
    },
}

impl RenderError {
    /// Whether rendering again soon may succeed: the disk, the cluster or a slow
    /// machine failed for now. The rest (a missing tool, a refused reference, an
    /// error in the chart or the overlay) repeats until the revision or the
    /// settings change.
    pub fn is_transient(&self) -> bool {
        match self {
            RenderError::Io { .. } | RenderError::DependencyUnreachable { .. } => true,
            RenderError::Run { error, .. } => matches!(error, RunError::Timeout(_)),
            RenderError::Vars { transient, .. } | RenderError::Version { transient, .. } => {
                *transient
            }
            RenderError::Manifest(error) => matches!(error, ManifestError::Io { .. }),
            RenderError::ToolMissing { .. }
            | RenderError::Decrypt(_)
            | RenderError::ToolFailed { .. }
            | RenderError::Escapes { .. }
            | RenderError::NotLocal { .. }
            | RenderError::MissingDependency { .. }
            | RenderError::DependencyNotFetched { .. }
            | RenderError::Invalid { .. }
            | RenderError::MissingVar { .. } => false,
        }
    }
}

/// A tool's message as people need it: `first` (the first line, already cut to
/// its innermost part by the caller, which reads the location from it) and every
/// line after it. Tools put the reason on later lines (kustomize's "trouble
/// configuring builtin HelmChartInflationGenerator with config: `" quotes the
/// entry over several lines and says what went wrong at the end), so nothing is
/// dropped but trailing blank lines and lines that are only `hint`s (`Use --debug
/// flag …`), which are about the tool's command line, not the user's files.
pub(super) fn whole_message(first: &str, rest: &str, hints: &[&str]) -> String {
    let rest: Vec<&str> = rest
        .lines()
        .filter(|line| !hints.iter().any(|hint| line.trim_start().starts_with(hint)))
        .collect();
    let rest = rest.join("\n");
    let rest = rest.trim_end();
    match rest.trim().is_empty() {
        true => first.to_string(),
        false => format!("{first}\n{rest}"),
    }
}

/// `file:line: `, `file: ` or nothing: where a tool said its problem is.
fn location(file: Option<&Path>, line: Option<usize>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!("{}:{line}: ", file.display()),
        (Some(file), None) => format!("{}: ", file.display()),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_messages_are_kept_whole() {
        assert_eq!(whole_message("boom", "", &[]), "boom");
        assert_eq!(whole_message("boom", "\n  \n", &[]), "boom");
        assert_eq!(
            whole_message(
                "trouble configuring builtin HelmChartInflationGenerator with config: `",
                "name: nope\nrepo: ./charts\n`: chart \"nope\" not found\n",
                &[]
            ),
            "trouble configuring builtin HelmChartInflationGenerator with config: `\n\
             name: nope\nrepo: ./charts\n`: chart \"nope\" not found"
        );
        assert_eq!(
            whole_message(
                "parse error",
                "in a.yaml\nUse --debug flag to render out invalid YAML\n",
                &["Use --debug flag"]
            ),
            "parse error\nin a.yaml"
        );
    }
}
