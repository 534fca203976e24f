//! Where an object was written. (Who it is, [`crate::kube::ObjectRef`], lives with
//! the client: the identity types sit at the bottom of the layers.)

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Where an object was written: the file and the 1-based line its document starts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}
