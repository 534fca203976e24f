//! Problems in manifests, located by file and line.

use super::Origin;
use super::walk::{LinkError, WalkError};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One thing wrong with the manifests, located so the user can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// The object concerned (`Deployment.apps/web`), when enough of it is known.
    pub object: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `file:line: [object: ]message` — the form editors and terminals link to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A path could not be read; nothing else is checked, as the set would be partial.
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A symlink leads outside the directory loaded, or never ends; nothing is read.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Every problem found in every file, so the user can fix them in one go.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ManifestError {
    /// The problems of an [`ManifestError::Invalid`] error; empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Invalid(problems) => problems,
            ManifestError::Io { .. } | ManifestError::Link(_) => &[],
        }
    }
}

impl From<WalkError> for ManifestError {
    fn from(error: WalkError) -> Self {
        match error {
            WalkError::Io { path, source } => ManifestError::Io { path, source },
            WalkError::Link(link) => ManifestError::Link(link),
        }
    }
}

fn display_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

pub(super) fn problem(
    file: &Path,
    line: usize,
    object: Option<String>,
    message: String,
) -> Problem {
    let origin = Origin {
        file: file.to_path_buf(),
        line,
    };
    Problem {
        origin,
        object,
        message,
    }
}
