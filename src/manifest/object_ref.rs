//! Who an object is and where it was written.

use crate::kube::GroupVersion;
use serde::Serialize;
use serde_json::Value;
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

/// The identity the API server keys an object by. The version is not part of it:
/// `apps/v1` and `apps/v1beta1` Deployments named `web` are the same object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// API group; empty for the core group (`v1`).
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `Deployment.apps/shop/web`, `Namespace/shop` — the form kubectl users read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

impl ObjectRef {
    /// The identity of a live object as the API server returned it (`None` when it
    /// lacks apiVersion, kind or name).
    pub fn of_live(live: &Value) -> Option<ObjectRef> {
        let gv = GroupVersion::parse(live.get("apiVersion")?.as_str()?).ok()?;
        let metadata = live.get("metadata")?;
        Some(ObjectRef {
            group: gv.group.to_string(),
            kind: live.get("kind")?.as_str()?.to_string(),
            namespace: metadata
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: metadata.get("name")?.as_str()?.to_string(),
        })
    }
}
