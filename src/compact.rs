//! Objects kept as compact JSON text and parsed again when read.
//!
//! Why: a `serde_json::Value` tree costs several times the JSON it was parsed from
//! (every map entry, key and string is its own allocation, each map its own hash
//! table). At 10000 objects, live objects held as trees were most of an idle
//! daemon's memory, while a reconcile that looks only at what changed reads a
//! handful of them. Text is one allocation per object, and parsing one back costs
//! microseconds.

use serde_json::Value;
use std::sync::Arc;

/// One object's compact JSON text; cheap to clone (shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompactObject(Arc<str>);

impl CompactObject {
    pub(crate) fn new(object: &Value) -> Self {
        // `Value`'s Display is its compact JSON and cannot fail.
        CompactObject(object.to_string().into())
    }

    /// The JSON text (to hash it).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The object, parsed again (keys in their original order).
    pub(crate) fn value(&self) -> Value {
        // The text is our own serialization of a `Value`, so it always parses; `Null`
        // only keeps this total.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// Only `apiVersion`, `kind` and `metadata`, the rest skipped while parsing.
    /// Why: what a reconcile needs of an object it knows unchanged is who it is and
    /// who owns it; its spec and status were most of a full resync's peak memory.
    pub(crate) fn head(&self) -> Value {
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(rename = "apiVersion", default)]
            api_version: Value,
            #[serde(default)]
            kind: Value,
            #[serde(default)]
            metadata: Value,
        }
        let Ok(head) = serde_json::from_str::<Head>(&self.0) else {
            return Value::Null;
        };
        let mut object = serde_json::Map::new();
        object.insert("apiVersion".into(), head.api_version);
        object.insert("kind".into(), head.kind);
        object.insert("metadata".into(), head.metadata);
        Value::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_values_and_key_order() {
        let object = json!({"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "a", "labels": {"z": "1", "a": "2"}},
            "data": {"n": "1.50", "big": 18446744073709551615u64, "f": 0.1, "neg": -3}});
        let compact = CompactObject::new(&object);
        let back = compact.value();
        assert_eq!(back, object);
        let keys: Vec<&String> = back["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["z", "a"]);
    }

    #[test]
    fn the_head_is_identity_and_metadata_only() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "labels": {"app": "a"}, "resourceVersion": "7"},
            "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        let head = CompactObject::new(&object).head();
        assert_eq!(
            head,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "a", "labels": {"app": "a"}, "resourceVersion": "7"}})
        );
    }
}
