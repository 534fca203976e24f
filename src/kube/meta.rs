//! An object's metadata read from its JSON, as kube-rs's `ResourceExt` reads it
//! from typed objects: one accessor per field instead of `"/metadata/…"` pointer
//! strings written out at every use.

use serde_json::{Map, Value};

/// Accessors for the `metadata` of an object held as JSON. Each answers `None` when
/// the field is absent or not of its type.
pub trait Meta {
    fn name(&self) -> Option<&str>;
    fn generate_name(&self) -> Option<&str>;
    fn namespace(&self) -> Option<&str>;
    fn uid(&self) -> Option<&str>;
    fn resource_version(&self) -> Option<&str>;
    fn generation(&self) -> Option<i64>;
    fn creation_timestamp(&self) -> Option<&str>;
    fn labels(&self) -> Option<&Map<String, Value>>;
    fn managed_fields(&self) -> Option<&Vec<Value>>;
    fn owner_references(&self) -> Option<&Vec<Value>>;
    /// Whether a deletion has begun (`deletionTimestamp` is set): finalizers may
    /// still hold the object.
    fn is_deleting(&self) -> bool;
}

impl Meta for Value {
    fn name(&self) -> Option<&str> {
        text(self, "name")
    }

    fn generate_name(&self) -> Option<&str> {
        text(self, "generateName")
    }

    fn namespace(&self) -> Option<&str> {
        text(self, "namespace")
    }

    fn uid(&self) -> Option<&str> {
        text(self, "uid")
    }

    fn resource_version(&self) -> Option<&str> {
        text(self, "resourceVersion")
    }

    fn generation(&self) -> Option<i64> {
        field(self, "generation")?.as_i64()
    }

    fn creation_timestamp(&self) -> Option<&str> {
        text(self, "creationTimestamp")
    }

    fn labels(&self) -> Option<&Map<String, Value>> {
        field(self, "labels")?.as_object()
    }

    fn managed_fields(&self) -> Option<&Vec<Value>> {
        field(self, "managedFields")?.as_array()
    }

    fn owner_references(&self) -> Option<&Vec<Value>> {
        field(self, "ownerReferences")?.as_array()
    }

    fn is_deleting(&self) -> bool {
        field(self, "deletionTimestamp").is_some_and(|t| !t.is_null())
    }
}

fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object.get("metadata")?.get(name)
}

fn text<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    field(object, name)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_metadata_and_answers_none_for_what_is_missing_or_mistyped() {
        let object = json!({"metadata": {
            "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
            "generation": 3, "labels": {"app": "web"}, "deletionTimestamp": "2026-01-01T00:00:00Z",
        }});
        assert_eq!(object.name(), Some("web"));
        assert_eq!(object.namespace(), Some("shop"));
        assert_eq!(object.uid(), Some("u-1"));
        assert_eq!(object.resource_version(), Some("42"));
        assert_eq!(object.generation(), Some(3));
        assert_eq!(
            object.labels().and_then(|l| l.get("app")),
            Some(&json!("web"))
        );
        assert!(object.is_deleting());
        let bare = json!({"metadata": {"name": 7, "deletionTimestamp": null}});
        assert_eq!(bare.name(), None);
        assert_eq!(bare.uid(), None);
        assert!(!bare.is_deleting());
        assert_eq!(json!("not an object").name(), None);
    }
}
