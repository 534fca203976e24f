//! Who an object is: the identity types every layer above shares. They sit here,
//! at the bottom, so that no lower module imports from a higher one.

use super::GroupVersion;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

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

/// A kind within its API group, the unit the ApplySet parent records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

impl GroupKind {
    /// Parses the annotation form: `Deployment.apps` or `Service` (core group).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let (kind, group) = text.split_once('.').unwrap_or((text, ""));
        Some(GroupKind {
            group: group.into(),
            kind: kind.into(),
        })
    }
}

impl From<&ObjectRef> for GroupKind {
    fn from(object: &ObjectRef) -> Self {
        GroupKind {
            group: object.group.clone(),
            kind: object.kind.clone(),
        }
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}
