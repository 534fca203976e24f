//! What every object needs before it can be applied, and duplicates across objects.

use super::error::problem;
use super::{Manifest, ObjectRef, Origin, Problem};
use crate::kube::GroupVersion;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

/// Checks what every object needs before it can be applied, reporting all that is
/// missing at once.
pub(super) fn validate(
    body: Map<String, Value>,
    file: &Path,
    line: usize,
) -> Result<Manifest, Vec<Problem>> {
    let object = label(&body);
    let messages = object_problems(&body);
    if !messages.is_empty() {
        let to_problem = |message| problem(file, line, object.clone(), message);
        return Err(messages.into_iter().map(to_problem).collect());
    }
    let api_version = str_field(&body, "apiVersion")
        .unwrap_or_default()
        .to_string();
    let kind = str_field(&body, "kind").unwrap_or_default().to_string();
    let origin = Origin {
        file: file.to_path_buf(),
        line,
    };
    Ok(Manifest {
        api_version,
        kind,
        body,
        origin,
    })
}

fn object_problems(body: &Map<String, Value>) -> Vec<String> {
    if is_kustomization(body) {
        return vec![
            "this is a kustomize file, not a Kubernetes object: converge applies plain \
             manifests; render it with `kustomize build DIR > manifests.yaml`, or point \
             converge at a directory without it"
                .into(),
        ];
    }
    let mut messages = Vec::new();
    let api_version = "set apiVersion, e.g. `apiVersion: v1` or `apiVersion: apps/v1`";
    messages.extend(required_string(body, "apiVersion", api_version));
    if let Some(Err(err)) = str_field(body, "apiVersion").map(GroupVersion::parse) {
        messages.push(err.to_string());
    }
    messages.extend(required_string(
        body,
        "kind",
        "set kind, e.g. `kind: Deployment`",
    ));
    match body.get("metadata") {
        Some(Value::Object(meta)) => messages.extend(metadata_problems(meta)),
        None | Some(Value::Null) => messages.push(missing_name()),
        Some(other) => messages.push(format!(
            "metadata is {}; it must be a mapping with at least `name`",
            describe_json(other)
        )),
    }
    messages
}

/// `kustomization.yaml` files sit beside manifests in many repositories; they get
/// an explanation rather than a confusing "metadata.name is missing".
fn is_kustomization(body: &Map<String, Value>) -> bool {
    str_field(body, "apiVersion").is_some_and(|v| v.starts_with("kustomize.config.k8s.io/"))
        || (str_field(body, "kind") == Some("Kustomization") && body.get("metadata").is_none())
}

fn required_string(map: &Map<String, Value>, key: &str, hint: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => None,
        None | Some(Value::Null) => Some(format!("{key} is missing; {hint}")),
        Some(Value::String(_)) => Some(format!("{key} is empty; {hint}")),
        Some(other) => Some(format!(
            "{key} is {}; it must be a string: {hint}",
            describe_json(other)
        )),
    }
}

fn metadata_problems(meta: &Map<String, Value>) -> Vec<String> {
    let mut messages = Vec::new();
    for key in ["name", "generateName", "namespace"] {
        match meta.get(key) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => messages.push(format!(
                "metadata.{key} is {}; it must be a string, quote it",
                describe_json(other)
            )),
        }
    }
    let non_empty = |key| matches!(meta.get(key), Some(Value::String(s)) if !s.is_empty());
    if !non_empty("name") && !non_empty("generateName") && messages.is_empty() {
        messages.push(missing_name());
    }
    for key in ["labels", "annotations"] {
        messages.extend(string_map_problems(meta, key));
    }
    messages
}

/// `labels` and `annotations` map to strings; kubectl refuses anything else. A
/// plain `yes`, `1.10` or `0x50` is no string: YAML 1.1 reads `true`, `1.1`, `80`.
fn string_map_problems(meta: &Map<String, Value>, key: &str) -> Vec<String> {
    match meta.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(_, value)| !matches!(value, Value::String(_) | Value::Null))
            .map(|(name, value)| {
                format!(
                    "metadata.{key}.{name} is {}; {key} must be strings, quote it",
                    describe_json(value)
                )
            })
            .collect(),
        Some(other) => vec![format!(
            "metadata.{key} is {}; it must be a mapping of strings",
            describe_json(other)
        )],
    }
}

fn missing_name() -> String {
    "metadata.name is missing; set metadata.name (or metadata.generateName to have the \
     server pick a name on create)"
        .into()
}

pub(super) fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)?.as_str()
}

/// The best name for an object with problems: `Deployment.apps/web` as far as known.
fn label(body: &Map<String, Value>) -> Option<String> {
    let kind = str_field(body, "kind").filter(|k| !k.is_empty())?;
    let api_version = str_field(body, "apiVersion").unwrap_or_default();
    let group = GroupVersion::parse(api_version).map_or("", |gv| gv.group);
    let mut label = kind.to_string();
    if !group.is_empty() {
        label = format!("{label}.{group}");
    }
    let meta = body.get("metadata");
    for key in ["namespace", "name"] {
        if let Some(part) = meta
            .and_then(|m| m.get(key)?.as_str())
            .filter(|p| !p.is_empty())
        {
            label = format!("{label}/{part}");
        }
    }
    Some(label)
}

/// A short description of a JSON value for messages, e.g. `a number (5)`.
pub(super) fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.chars().count() > 40 => {
            let start: String = s.chars().take(40).collect();
            format!("a string ({start:?}…)")
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Two manifests for the same object (group, kind, namespace as written, name): the
/// second would silently overwrite the first, so it is an error naming both places.
///
/// Objects without a namespace compare as `None`: the default namespace is only
/// known later, so callers should run this again after
/// [`Manifest::with_default_namespace`]. `generateName`-only objects never collide.
pub fn find_duplicates<'a>(
    objects: impl IntoIterator<Item = (ObjectRef, &'a Origin)>,
) -> Vec<Problem> {
    let mut first: HashMap<ObjectRef, &Origin> = HashMap::new();
    let mut problems = Vec::new();
    for (object, origin) in objects.into_iter().filter(|(o, _)| !o.name.is_empty()) {
        match first.entry(object) {
            Entry::Occupied(entry) => problems.push(Problem {
                origin: origin.clone(),
                object: Some(entry.key().to_string()),
                message: format!(
                    "duplicate object, also defined at {}; keep only one of them",
                    entry.get()
                ),
            }),
            Entry::Vacant(entry) => {
                entry.insert(origin);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::*;

    #[test]
    fn kustomization_files_are_explained() {
        let text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n";
        let err = parse_str(text, Path::new("k/kustomization.yaml")).expect_err("not an object");
        let message = err.to_string();
        assert!(message.starts_with("k/kustomization.yaml:1:"), "{message}");
        assert!(message.contains("kustomize build"), "{message}");
    }

    #[test]
    fn missing_or_empty_api_version_and_kind() {
        let text = "---\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: \"\"\nkind: Secret\n\
                    metadata: {name: b}\n---\napiVersion: v1\nmetadata: {name: c}\n---\n\
                    apiVersion: v1\nkind: 7\nmetadata: {name: d}\n";
        let found = problems(text);
        assert_eq!(
            found,
            [
                "m.yaml:2: ConfigMap/a: apiVersion is missing; set apiVersion, e.g. `apiVersion: \
                 v1` or `apiVersion: apps/v1`",
                "m.yaml:5: Secret/b: apiVersion is empty; set apiVersion, e.g. `apiVersion: v1` \
                 or `apiVersion: apps/v1`",
                "m.yaml:9: kind is missing; set kind, e.g. `kind: Deployment`",
                "m.yaml:12: kind is a number (7); it must be a string: set kind, e.g. \
                 `kind: Deployment`",
            ]
        );
    }

    #[test]
    fn api_version_with_more_than_one_slash_is_refused() {
        let text = "apiVersion: apps/v1/beta\nkind: Deployment\nmetadata: {name: web}\n";
        assert_eq!(
            problems(text),
            [
                "m.yaml:1: Deployment/web: unexpected apiVersion \"apps/v1/beta\": write VERSION \
              (`v1`) or GROUP/VERSION (`apps/v1`)"
            ]
        );
        let manifests = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n");
        assert_eq!(
            (manifests[0].group(), manifests[0].version()),
            ("apps", "v1")
        );
    }

    #[test]
    fn missing_name_and_non_string_metadata() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels: {}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 5\n  namespace: [a]\n---\n\
                    apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: ConfigMap\n\
                    metadata: text\n";
        let found = problems(text);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("m.yaml:1: Deployment.apps: metadata.name is missing;"));
        assert_eq!(
            found[1],
            "m.yaml:6: ConfigMap: metadata.name is a number (5); it must be a string, quote it"
        );
        assert_eq!(
            found[2],
            "m.yaml:6: ConfigMap: metadata.namespace is a list; it must be a string, quote it"
        );
        assert!(found[3].starts_with("m.yaml:12: ConfigMap: metadata.name is missing;"));
        assert!(found[4].starts_with("m.yaml:15: ConfigMap: metadata is a string (\"text\")"));
    }

    #[test]
    fn label_and_annotation_values_must_be_strings() {
        let text = format!(
            "{CM}a\n  labels:\n    enabled: yes\n    tier: web\n  annotations:\n    port: 0x50\n    \
             none: ~\n---\n{CM}b\n  labels: [a]\n"
        );
        assert_eq!(
            problems(&text),
            [
                "m.yaml:1: ConfigMap/a: metadata.labels.enabled is a boolean (true); labels must be \
                 strings, quote it",
                "m.yaml:1: ConfigMap/a: metadata.annotations.port is a number (80); annotations \
                 must be strings, quote it",
                "m.yaml:12: ConfigMap/b: metadata.labels is a list; it must be a mapping of strings",
            ]
        );
    }

    #[test]
    fn duplicates_name_both_places() {
        let text = format!(
            "{CM}a\n---\n{CM}a\n  namespace: x\n---\napiVersion: v1beta1\nkind: ConfigMap\n\
             metadata:\n  name: a\n"
        );
        let found = problems(&text);
        assert_eq!(
            found,
            [
                "m.yaml:12: ConfigMap/a: duplicate object, also defined at m.yaml:1; keep only one \
              of them"
            ]
        );
    }
}
