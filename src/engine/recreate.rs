//! Immutable fields: an object whose Deployment selector, Job template or Service
//! clusterIP changed cannot be updated, only deleted and created again. That loses
//! its pods, history and IP, so converge does it only when allowed: the manifest is
//! annotated `converge.dev/recreate: allowed`, or the source says `recreate = true`.
//! Otherwise the server's rejection stands, naming the field and the way out.

use crate::kube::Error as KubeError;
use crate::manifest::Manifest;
use serde_json::Value;

/// `converge.dev/recreate: allowed` on a manifest lets converge re-create it.
pub const RECREATE_ANNOTATION: &str = "converge.dev/recreate";
const ALLOWED: &str = "allowed";

/// When an object whose immutable fields changed may be deleted and re-created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recreate {
    /// Only objects annotated `converge.dev/recreate: allowed`.
    #[default]
    Annotated,
    /// Every object (a source's `recreate = true`, `--recreate`), except
    /// Namespaces and CRDs: deleting those deletes everything in them.
    Allowed,
}

impl Recreate {
    /// A source's `recreate = true` (`--recreate`) allows every object.
    pub fn allowed_for_all(all: bool) -> Self {
        match all {
            true => Recreate::Allowed,
            false => Recreate::Annotated,
        }
    }

    pub fn allows(self, manifest: &Manifest) -> bool {
        let annotated = manifest
            .body
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(RECREATE_ANNOTATION))
            .and_then(Value::as_str)
            == Some(ALLOWED);
        let contains_others = matches!(
            (manifest.group(), manifest.kind.as_str()),
            ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
        );
        !contains_others && (annotated || self == Recreate::Allowed)
    }
}

/// The fields a rejection says cannot change (empty: not such a rejection).
pub(crate) fn immutable_fields(error: &KubeError) -> Vec<String> {
    let Some(status) = error.status().filter(|_| error.is_invalid()) else {
        return Vec::new();
    };
    let causes = status.details.iter().flat_map(|d| &d.causes);
    causes
        .filter(|c| {
            c.message.contains("immutable") || c.message.contains("may not change once set")
        })
        .map(|c| c.field.clone())
        .collect()
}

/// What to add to an immutable-field rejection: which fields, and how to let
/// converge re-create the object.
pub(crate) fn hint(fields: &[String]) -> String {
    format!(
        "{} cannot change once set; to let converge delete and re-create the object, \
         annotate it `{RECREATE_ANNOTATION}: {ALLOWED}` (or set `recreate = true` on the \
         source, `--recreate` on the command line)",
        fields.join(", ")
    )
}

/// The manifest as a creation under a generated name: the server validates and
/// defaults it (the real name is taken by the object to replace) and answers with
/// what the new object will be.
pub(crate) fn probe_body(manifest: &Manifest) -> Value {
    let mut body = Value::Object(manifest.body.clone());
    if let Some(Value::Object(metadata)) = body.get_mut("metadata") {
        metadata.remove("name");
        metadata.insert(
            "generateName".into(),
            Value::String(format!("{}-", manifest.name())),
        );
    }
    body
}

/// The probe's answer with the real name back: what the re-created object will be.
pub(crate) fn as_named(mut answer: Value, manifest: &Manifest) -> Value {
    if let Some(Value::Object(metadata)) = answer.get_mut("metadata") {
        metadata.remove("generateName");
        metadata.insert("name".into(), Value::String(manifest.name().to_string()));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::{Status, StatusCause, StatusDetails};
    use std::path::Path;

    fn manifest(text: &str) -> Manifest {
        crate::manifest::parse_str(text, Path::new("a.yaml")).expect("valid")[0].clone()
    }

    const ANNOTATED: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  \
        annotations: {converge.dev/recreate: allowed}\n";
    const PLAIN: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
    const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

    #[test]
    fn the_annotation_or_the_source_allows_it_but_never_for_namespaces() {
        assert!(Recreate::Annotated.allows(&manifest(ANNOTATED)));
        assert!(!Recreate::Annotated.allows(&manifest(PLAIN)));
        assert!(Recreate::Allowed.allows(&manifest(PLAIN)));
        assert!(!Recreate::Allowed.allows(&manifest(NAMESPACE)));
    }

    fn invalid(message: &str, field: &str) -> KubeError {
        let cause = StatusCause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: field.into(),
        };
        KubeError::Api {
            request: "PATCH /apis/apps/v1/namespaces/a/deployments/web".into(),
            status: Box::new(Status {
                reason: "Invalid".into(),
                code: 422,
                details: Some(StatusDetails {
                    causes: vec![cause],
                    ..StatusDetails::default()
                }),
                ..Status::default()
            }),
        }
    }

    #[test]
    fn immutable_rejections_name_their_fields() {
        let selector = invalid("Invalid value: {..}: field is immutable", "spec.selector");
        assert_eq!(immutable_fields(&selector), ["spec.selector"]);
        let ip = invalid(
            "Invalid value: [..]: may not change once set",
            "spec.clusterIPs[0]",
        );
        assert_eq!(immutable_fields(&ip), ["spec.clusterIPs[0]"]);
        let range = invalid(
            "must be between 1 and 65535, inclusive",
            "spec.ports[0].port",
        );
        assert!(immutable_fields(&range).is_empty());
        let text = hint(&immutable_fields(&selector));
        assert!(
            text.starts_with("spec.selector cannot change")
                && text.contains("converge.dev/recreate: allowed")
        );
    }

    #[test]
    fn the_probe_is_created_under_a_generated_name() {
        let manifest = manifest(PLAIN);
        let probe = probe_body(&manifest);
        assert_eq!(
            probe["metadata"],
            serde_json::json!({"generateName": "web-"})
        );
        let answer = serde_json::json!({"metadata": {"name": "web-x7k2p", "generateName": "web-"}});
        assert_eq!(
            as_named(answer, &manifest)["metadata"],
            serde_json::json!({"name": "web"})
        );
    }
}
