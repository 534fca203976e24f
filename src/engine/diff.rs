//! Diffs: normalising objects, masking Secrets and computing unified diffs (which
//! [`crate::report::diff_text`] colours for a terminal).
//!
//! The engine compares the LIVE object (a GET) with the result of a server-side
//! dry-run apply of our manifest (what the object WOULD be). Both come from the API
//! server, so defaults, admission and mutating webhooks are already the server's own;
//! what is left to remove is the noise that changes on every write or is not desired
//! state ([`normalize`]). Equality is decided on the normalised JSON values, never on
//! rendered text, so key order and formatting cannot produce false drift.
//!
//! Secret values never reach the output: both sides of a Secret are masked together
//! ([`mask_secret_pair`]) so a diff still shows WHICH keys changed, but not their
//! values, lengths or hashes.
//!
//! Everything here is pure: no I/O, no clock, deterministic output.

use crate::manifest::ObjectRef;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};
use similar::TextDiff;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The client-side apply annotation. It is not desired state under server-side apply
/// and may embed a whole Secret, values included.
pub(crate) const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Marker for a Secret value that is the same on both sides of a diff.
pub(crate) const MASK_UNCHANGED: &str = "*** (unchanged)";
/// Marker for a Secret value on the live side that differs from (or is absent on) the desired side.
pub(crate) const MASK_BEFORE: &str = "*** (before)";
/// Marker for a Secret value on the desired side that differs from (or is absent on) the live side.
pub(crate) const MASK_AFTER: &str = "*** (after)";

/// `metadata` fields the server rewrites on every write (or assigns once) that are
/// bookkeeping, not desired state.
const NOISY_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

/// Annotations controllers write on objects they manage, never desired state: the
/// Deployment controller stamps every Deployment's rollout revision. Without this,
/// every new Deployment would look changed once its controller caught up.
const CONTROLLER_ANNOTATIONS: &[&str] = &["deployment.kubernetes.io/revision"];

/// The Secret sections whose values are confidential.
const SECRET_SECTIONS: &[&str] = &["data", "stringData"];

/// Returns `obj` without the fields that differ between a live object and a dry-run
/// apply even when nothing the user wrote changed.
///
/// Why: a dry-run apply bumps `managedFields` timestamps, may bump `generation`, and a
/// dry-run create invents a `uid` and `creationTimestamp`; `status` is owned by
/// controllers, not by the manifest. Comparing any of these would report drift on
/// every reconcile. The last-applied annotation is client-side-apply residue (and
/// may carry Secret data), so it goes too; `annotations` is removed if that leaves it
/// empty, because an empty map and no map are the same object to the server.
/// Everything else — labels, ApplySet labels/annotations, `spec`, `data` — is kept.
pub(crate) fn normalize(obj: &Value) -> Value {
    let mut out = obj.clone();
    let Value::Object(root) = &mut out else {
        return out;
    };
    root.remove("status");
    if let Some(Value::Object(meta)) = root.get_mut("metadata") {
        for field in NOISY_METADATA {
            meta.remove(*field);
        }
        let empty = match meta.get_mut("annotations") {
            Some(Value::Object(annotations)) => {
                annotations.remove(LAST_APPLIED_ANNOTATION);
                for annotation in CONTROLLER_ANNOTATIONS {
                    annotations.remove(*annotation);
                }
                annotations.is_empty()
            }
            _ => false,
        };
        if empty {
            meta.remove("annotations");
        }
    }
    out
}

/// A fingerprint of an object's desired state (its normalised form): equal for two
/// versions that differ only in noise such as `status` or `resourceVersion`. The
/// daemon uses it to tell a controller's status update from real drift without
/// asking the server.
pub(crate) fn state_digest(obj: &Value) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hash_canonical(&normalize(obj), &mut hasher);
    hasher.finish()
}

/// Hashes a value with object keys in sorted order: a LIST item (whose
/// `apiVersion`/`kind` come last) and a watch event of the same object must agree.
fn hash_canonical(value: &Value, hasher: &mut impl std::hash::Hasher) {
    use std::hash::Hash;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.write_u8(b'{');
            for key in keys {
                key.hash(hasher);
                hash_canonical(&map[key.as_str()], hasher);
            }
        }
        Value::Array(items) => {
            hasher.write_u8(b'[');
            hasher.write_usize(items.len());
            items.iter().for_each(|item| hash_canonical(item, hasher));
        }
        scalar => scalar.to_string().hash(hasher),
    }
}

/// True for a core-group (`apiVersion: v1`) Secret — the only kind whose values we mask.
fn is_secret(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// The texts of a Secret's values that an error message must not show: every
/// string under `data` and `stringData` (a value of the wrong type too), decoded
/// from base64 where it is, JSON-escaped (as the API server quotes it), and each of
/// its lines; none for other kinds. Texts shorter than 4 characters are left, so
/// that a message stays readable.
pub(crate) fn secret_texts(obj: &Value) -> Vec<String> {
    if !is_secret(obj) {
        return Vec::new();
    }
    let mut strings = Vec::new();
    for section in SECRET_SECTIONS {
        collect_strings(obj.get(*section), &mut strings);
    }
    let decoded: Vec<String> = strings
        .iter()
        .filter_map(|s| BASE64.decode(s.trim()).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    strings.extend(decoded);
    let mut texts: Vec<String> = Vec::new();
    for value in &strings {
        texts.push(value.clone());
        let quoted = Value::String(value.clone()).to_string();
        texts.push(quoted[1..quoted.len() - 1].to_string());
        texts.extend(value.lines().map(|l| l.trim().to_string()));
    }
    texts.retain(|t| t.chars().count() >= 4);
    // Longest first: a value is replaced before any line of it.
    texts.sort_by_key(|t| std::cmp::Reverse(t.len()));
    texts.dedup();
    texts
}

fn collect_strings(value: Option<&Value>, into: &mut Vec<String>) {
    match value {
        Some(Value::String(s)) => into.push(s.clone()),
        Some(Value::Array(items)) => items.iter().for_each(|v| collect_strings(Some(v), into)),
        Some(Value::Object(map)) => map.values().for_each(|v| collect_strings(Some(v), into)),
        _ => {}
    }
}

/// Masks both sides of a Secret together: a value equal on both sides becomes
/// [`MASK_UNCHANGED`] on both; a value that differs becomes [`MASK_BEFORE`] (live) and
/// [`MASK_AFTER`] (desired); a key present on one side only gets that side's marker.
/// Non-Secret pairs are returned unchanged. Pass `Value::Null` for a missing side.
///
/// Why: a diff must show which Secret keys drifted without revealing any value —
/// not the value, not its length, not even a hash (a hash of a low-entropy secret
/// can be brute-forced). Masking the pair keeps "equal before masking" and "equal
/// after masking" the same thing, so the masked values can be compared directly.
/// The last-applied annotation (which may embed the Secret) is masked the same way.
pub(crate) fn mask_secret_pair(live: &Value, desired: &Value) -> (Value, Value) {
    if !is_secret(live) && !is_secret(desired) {
        return (live.clone(), desired.clone());
    }
    let mut live = live.clone();
    let mut desired = desired.clone();
    for section in SECRET_SECTIONS {
        let before = take_field(&mut live, section);
        let after = take_field(&mut desired, section);
        let (before, after) = mask_section(before, after);
        put_field(&mut live, section, before);
        put_field(&mut desired, section, after);
    }
    let before = take_last_applied(&mut live);
    let after = take_last_applied(&mut desired);
    let (before, after) = mask_value(before.as_ref(), after.as_ref());
    put_last_applied(&mut live, before);
    put_last_applied(&mut desired, after);
    (live, desired)
}

/// Removes and returns a top-level field so both sides can be masked together; its
/// position is not kept because rendering sorts keys and equality ignores order.
fn take_field(obj: &mut Value, field: &str) -> Option<Value> {
    obj.as_object_mut()?.remove(field)
}

/// Puts a (masked) top-level field back, if there is one.
fn put_field(obj: &mut Value, field: &str, value: Option<Value>) {
    if let (Some(root), Some(value)) = (obj.as_object_mut(), value) {
        root.insert(field.to_string(), value);
    }
}

/// Removes and returns the last-applied annotation's value.
fn take_last_applied(obj: &mut Value) -> Option<Value> {
    obj.get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()?
        .remove(LAST_APPLIED_ANNOTATION)
}

/// Puts a (masked) last-applied annotation back where it was taken from.
fn put_last_applied(obj: &mut Value, value: Option<Value>) {
    let Some(value) = value else { return };
    if let Some(annotations) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED_ANNOTATION.to_string(), value);
    }
}

/// Masks one Secret section (`data` or `stringData`) of both sides, key by key.
fn mask_section(before: Option<Value>, after: Option<Value>) -> (Option<Value>, Option<Value>) {
    match (before, after) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            let mut masked_before = Map::new();
            for (key, value) in &before {
                let (b, _) = mask_value(Some(value), after.get(key));
                masked_before.insert(key.clone(), b.unwrap_or(Value::Null));
            }
            let mut masked_after = Map::new();
            for (key, value) in &after {
                let (_, a) = mask_value(before.get(key), Some(value));
                masked_after.insert(key.clone(), a.unwrap_or(Value::Null));
            }
            (
                Some(Value::Object(masked_before)),
                Some(Value::Object(masked_after)),
            )
        }
        (Some(Value::Object(before)), other) => {
            let (_, after) = mask_value(None, other.as_ref());
            (Some(Value::Object(mask_all(&before, MASK_BEFORE))), after)
        }
        (other, Some(Value::Object(after))) => {
            let (before, _) = mask_value(other.as_ref(), None);
            (before, Some(Value::Object(mask_all(&after, MASK_AFTER))))
        }
        // Neither side is a map: compare (and mask) the sections whole.
        (before, after) => mask_value(before.as_ref(), after.as_ref()),
    }
}

/// Every value of `values` replaced by `marker`, keys kept.
fn mask_all(values: &Map<String, Value>, marker: &str) -> Map<String, Value> {
    values
        .keys()
        .map(|key| (key.clone(), Value::String(marker.into())))
        .collect()
}

/// Masks one pair of confidential values; `None` (absent) stays absent and a JSON
/// `null` is not a secret, so it is kept as is.
fn mask_value(before: Option<&Value>, after: Option<&Value>) -> (Option<Value>, Option<Value>) {
    let marker = |value: Option<&Value>, text: &str| {
        value.map(|v| match v {
            Value::Null => Value::Null,
            _ => Value::String(text.into()),
        })
    };
    if before == after {
        (
            marker(before, MASK_UNCHANGED),
            marker(after, MASK_UNCHANGED),
        )
    } else {
        (marker(before, MASK_BEFORE), marker(after, MASK_AFTER))
    }
}

/// Renders `obj` as YAML with map keys sorted recursively.
///
/// Why: both sides of a diff must be rendered the same way so the text diff shows only
/// real changes; sorting makes the output independent of the order the server (or a
/// manifest author) happened to use. Rendering a JSON value cannot really fail; if it
/// ever did, pretty JSON (which is also YAML) is returned instead of panicking.
pub(crate) fn to_yaml(obj: &Value) -> String {
    let sorted = sort_keys(obj);
    serde_yaml::to_string(&sorted)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&sorted).unwrap_or_default() + "\n")
}

/// A copy of `value` whose maps have their keys in byte order, at every depth.
fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// The difference between one live object and what a dry-run apply says it would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    pub object: ObjectRef,
    /// A unified diff (3 lines of context) of the normalised, masked, key-sorted YAML,
    /// headed `--- live/<object>` (or `--- /dev/null` for a creation) and
    /// `+++ desired/<object>`. No ANSI codes; see [`crate::report::diff_text`].
    pub unified: String,
    /// The JSON paths that differ, e.g. `spec.replicas`,
    /// `spec.template.spec.containers[0].image`, `data.password`; keys that are not
    /// plain identifiers are quoted: `metadata.labels["app.kubernetes.io/name"]`.
    /// Map keys are visited in sorted order and list items by index, so the order is
    /// deterministic. For a creation these are the desired object's top-level keys.
    pub changed_paths: Vec<String>,
}

/// Compares a live object (`None` when it does not exist yet) with the result of a
/// server-side dry-run apply; `None` means no drift.
///
/// Why: this is the whole drift decision. Both sides are normalised and Secrets are
/// masked pairwise before anything is compared or rendered, and equality is semantic
/// (JSON values, key order ignored), never textual, so there is no false drift and no
/// Secret value in the output.
pub(crate) fn diff_objects(
    object: &ObjectRef,
    live: Option<&Value>,
    desired: &Value,
) -> Option<ObjectDiff> {
    let desired = normalize(desired);
    let (live, desired) = match live {
        Some(live) => {
            let (live, desired) = mask_secret_pair(&normalize(live), &desired);
            (Some(live), desired)
        }
        None => (None, mask_secret_pair(&Value::Null, &desired).1),
    };

    let mut changed_paths = Vec::new();
    // A missing object compares like an empty one, so a creation lists the desired
    // object's top-level keys.
    let empty = Value::Object(Map::new());
    changed_paths_into(
        Some(live.as_ref().unwrap_or(&empty)),
        Some(&desired),
        "",
        &mut changed_paths,
    );
    if live.is_some() && changed_paths.is_empty() {
        return None;
    }

    let old_text = live.as_ref().map(to_yaml).unwrap_or_default();
    let new_text = to_yaml(&desired);
    let old_header = match live {
        Some(_) => format!("live/{object}"),
        None => "/dev/null".to_string(),
    };
    let mut unified = format!("--- {old_header}\n+++ desired/{object}\n");
    let text_diff = TextDiff::from_lines(&old_text, &new_text);
    for hunk in text_diff.unified_diff().context_radius(3).iter_hunks() {
        // Writing to a String cannot fail.
        let _ = write!(unified, "{hunk}");
    }
    Some(ObjectDiff {
        object: object.clone(),
        unified,
        changed_paths,
    })
}

/// Appends to `out` the paths under `path` where `before` and `after` differ.
/// `None` is an absent key or list item.
fn changed_paths_into(
    before: Option<&Value>,
    after: Option<&Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    if before == after {
        return;
    }
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let child = join_key(path, key);
                changed_paths_into(b.get(key), a.get(key), &child, out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) => {
            for index in 0..b.len().max(a.len()) {
                let child = format!("{path}[{index}]");
                changed_paths_into(b.get(index), a.get(index), &child, out);
            }
        }
        _ => out.push(if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        }),
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain identifier (Kubernetes
/// label keys and ConfigMap keys often contain `.` and `/`), so paths stay unambiguous.
fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
        format!("{path}[{quoted}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::diff_text;
    use serde_json::json;

    fn deployment_ref() -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        }
    }

    fn secret_ref() -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "Secret".into(),
            namespace: Some("shop".into()),
            name: "db".into(),
        }
    }

    fn deployment(replicas: u64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "shop",
                "labels": {
                    "app": "web",
                    "applyset.kubernetes.io/part-of": "applyset-abc-v1"
                },
                "annotations": {
                    "deployment.kubernetes.io/revision": "1"
                }
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": image, "ports": [{"containerPort": 80}]}
                        ]
                    }
                }
            }
        })
    }

    /// `obj` with the server's bookkeeping added, as a GET would return it.
    fn with_noise(mut obj: Value, resource_version: &str) -> Value {
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("fixture has metadata");
        meta.insert(
            "managedFields".into(),
            json!([{"manager": "converge", "operation": "Apply", "time": resource_version}]),
        );
        meta.insert("resourceVersion".into(), json!(resource_version));
        meta.insert("uid".into(), json!(format!("uid-{resource_version}")));
        meta.insert("generation".into(), json!(7));
        meta.insert("creationTimestamp".into(), json!("2024-01-01T00:00:00Z"));
        meta.insert(
            "selfLink".into(),
            json!("/apis/apps/v1/namespaces/shop/deployments/web"),
        );
        obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION] =
            json!(format!("{{\"rv\":\"{resource_version}\"}}"));
        obj["status"] = json!({"observedGeneration": 7, "replicas": resource_version.len()});
        obj
    }

    #[test]
    fn normalize_drops_noise_and_keeps_desired_state() {
        let obj = with_noise(deployment(3, "nginx:1.25"), "100");
        let n = normalize(&obj);
        let meta = n["metadata"].as_object().expect("metadata kept");
        for field in NOISY_METADATA {
            assert!(!meta.contains_key(*field), "{field} should be dropped");
        }
        assert!(n.get("status").is_none());
        assert!(
            n["metadata"]["annotations"]
                .get(LAST_APPLIED_ANNOTATION)
                .is_none()
        );
        assert!(
            n["metadata"]["annotations"]
                .get("deployment.kubernetes.io/revision")
                .is_none(),
            "a controller's annotation is not desired state"
        );
        assert_eq!(n["metadata"]["labels"]["app"], "web");
        assert_eq!(
            n["metadata"]["labels"]["applyset.kubernetes.io/part-of"],
            "applyset-abc-v1"
        );
        assert_eq!(n["spec"], deployment(3, "nginx:1.25")["spec"]);
        assert_eq!(n, normalize(&deployment(3, "nginx:1.25")));
    }

    #[test]
    fn normalize_removes_annotations_left_empty() {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {LAST_APPLIED_ANNOTATION: "{}"}},
            "data": {"k": "v"}
        });
        let n = normalize(&obj);
        assert!(n["metadata"].get("annotations").is_none());
        assert_eq!(n["data"]["k"], "v");
    }

    #[test]
    fn noise_only_differences_are_no_diff() {
        let live = with_noise(deployment(3, "nginx:1.25"), "100");
        let desired = with_noise(deployment(3, "nginx:1.25"), "101");
        assert_ne!(live, desired);
        assert_eq!(diff_objects(&deployment_ref(), Some(&live), &desired), None);
    }

    #[test]
    fn state_digest_ignores_key_order() {
        let listed = json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"});
        let watched = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}, "metadata": {"name": "a"}});
        assert_eq!(state_digest(&listed), state_digest(&watched));
        let changed = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "w"}, "metadata": {"name": "a"}});
        assert_ne!(state_digest(&listed), state_digest(&changed));
    }

    #[test]
    fn controller_annotations_are_not_state() {
        let fresh =
            json!({"kind": "Deployment", "metadata": {"name": "w"}, "spec": {"replicas": 1}});
        let mut rolled = fresh.clone();
        rolled["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        assert_eq!(state_digest(&fresh), state_digest(&rolled));
        assert_eq!(normalize(&rolled), normalize(&fresh));
    }

    #[test]
    fn state_digest_ignores_noise_only() {
        let live = json!({"kind": "Deployment", "metadata": {"name": "w", "resourceVersion": "1"},
                          "spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        let mut status_update = live.clone();
        status_update["metadata"]["resourceVersion"] = json!("2");
        status_update["status"]["readyReplicas"] = json!(2);
        assert_eq!(state_digest(&live), state_digest(&status_update));
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        assert_ne!(state_digest(&live), state_digest(&scaled));
    }

    #[test]
    fn key_order_alone_is_no_diff() {
        let live = deployment(3, "nginx:1.25");
        let desired = json!({
            "spec": {
                "template": {
                    "spec": {"containers": [{"ports": [{"containerPort": 80}], "image": "nginx:1.25", "name": "web"}]},
                    "metadata": {"labels": {"app": "web"}}
                },
                "selector": {"matchLabels": {"app": "web"}},
                "replicas": 3
            },
            "metadata": {
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "labels": {"applyset.kubernetes.io/part-of": "applyset-abc-v1", "app": "web"},
                "namespace": "shop",
                "name": "web"
            },
            "kind": "Deployment",
            "apiVersion": "apps/v1"
        });
        assert_eq!(diff_objects(&deployment_ref(), Some(&live), &desired), None);
        assert_eq!(to_yaml(&live), to_yaml(&desired));
    }

    #[test]
    fn replicas_change_is_one_path_and_a_minimal_diff() {
        let live = with_noise(deployment(3, "nginx:1.25"), "100");
        let desired = with_noise(deployment(5, "nginx:1.25"), "101");
        let diff = diff_objects(&deployment_ref(), Some(&live), &desired).expect("drift");
        assert_eq!(diff.changed_paths, vec!["spec.replicas"]);
        assert!(
            diff.unified.starts_with(
                "--- live/Deployment.apps/shop/web\n+++ desired/Deployment.apps/shop/web\n@@ "
            ),
            "{}",
            diff.unified
        );
        assert!(
            diff.unified.contains("\n-  replicas: 3\n"),
            "{}",
            diff.unified
        );
        assert!(
            diff.unified.contains("\n+  replicas: 5\n"),
            "{}",
            diff.unified
        );
        let changed: Vec<&str> = diff
            .unified
            .lines()
            .skip(2)
            .filter(|l| l.starts_with('-') || l.starts_with('+'))
            .collect();
        assert_eq!(changed, vec!["-  replicas: 3", "+  replicas: 5"]);
        assert!(!diff.unified.contains("resourceVersion"));
        assert!(!diff.unified.contains("managedFields"));
    }

    #[test]
    fn nested_list_change_has_indexed_path() {
        let live = deployment(3, "nginx:1.25");
        let desired = deployment(3, "nginx:1.27");
        let diff = diff_objects(&deployment_ref(), Some(&live), &desired).expect("drift");
        assert_eq!(
            diff.changed_paths,
            vec!["spec.template.spec.containers[0].image"]
        );
        assert!(
            diff.unified.contains("\n+      - image: nginx:1.27\n"),
            "{}",
            diff.unified
        );
    }

    #[test]
    fn paths_quote_dotted_keys_and_list_added_items() {
        let mut live = deployment(3, "nginx:1.25");
        let mut desired = live.clone();
        desired["metadata"]["labels"]["app.kubernetes.io/name"] = json!("web");
        desired["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("fixture has containers")
            .push(json!({"name": "sidecar", "image": "envoy"}));
        live["metadata"]["labels"]["app"] = json!("old");
        let diff = diff_objects(&deployment_ref(), Some(&live), &desired).expect("drift");
        assert_eq!(
            diff.changed_paths,
            vec![
                "metadata.labels.app",
                "metadata.labels[\"app.kubernetes.io/name\"]",
                "spec.template.spec.containers[1]",
            ]
        );
    }

    #[test]
    fn creation_is_all_added() {
        let desired = with_noise(deployment(3, "nginx:1.25"), "1");
        let diff = diff_objects(&deployment_ref(), None, &desired).expect("creation");
        let mut lines = diff.unified.lines();
        assert_eq!(lines.next(), Some("--- /dev/null"));
        assert_eq!(lines.next(), Some("+++ desired/Deployment.apps/shop/web"));
        let hunk = lines.next().expect("one hunk");
        assert!(hunk.starts_with("@@ -0,0 +1,"), "{hunk}");
        let body: Vec<&str> = lines.collect();
        assert!(!body.is_empty());
        assert!(body.iter().all(|l| l.starts_with('+')), "{}", diff.unified);
        assert!(body.contains(&"+  replicas: 3"));
        assert!(!diff.unified.contains("uid-1"));
        assert_eq!(
            diff.changed_paths,
            vec!["apiVersion", "kind", "metadata", "spec"]
        );
    }

    const PLAIN_SAME: &str = "s4me-passw0rd";
    const PLAIN_OLD: &str = "old-hunter2";
    const PLAIN_NEW: &str = "new-correct-horse";
    const PLAIN_GONE: &str = "removed-token-xyz";
    const PLAIN_ADDED: &str = "added-apikey-123";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(data: &[(&str, &str)], last_applied: bool) -> Value {
        let data: Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(b64(v))))
            .collect();
        let mut obj = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "5"},
            "type": "Opaque",
            "data": data
        });
        if last_applied {
            let embedded = serde_json::to_string(&obj).expect("fixture serialises");
            obj["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: embedded });
        }
        obj
    }

    fn assert_no_secret_in(text: &str) {
        for plain in [PLAIN_SAME, PLAIN_OLD, PLAIN_NEW, PLAIN_GONE, PLAIN_ADDED] {
            assert!(!text.contains(plain), "plain {plain} leaked:\n{text}");
            assert!(
                !text.contains(&b64(plain)),
                "base64 of {plain} leaked:\n{text}"
            );
        }
    }

    #[test]
    fn secret_texts_cover_every_form_of_a_value() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"token": "c2VjcmV0LXRva2Vu"},
            "stringData": {"multi": "line-one-x\nline \"two\"", "list": ["listed-value"], "ab": "ab"}});
        let texts = secret_texts(&secret);
        for expected in [
            "c2VjcmV0LXRva2Vu",
            "secret-token",
            "line-one-x\nline \"two\"",
            "line-one-x\\nline \\\"two\\\"",
            "line-one-x",
            "line \"two\"",
            "listed-value",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected:?} in {texts:?}"
            );
        }
        assert!(
            !texts.iter().any(|t| t == "ab"),
            "too short to redact: {texts:?}"
        );
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "value"}});
        assert!(secret_texts(&config_map).is_empty());
    }

    #[test]
    fn secret_values_never_appear_in_a_diff() {
        let live = secret(
            &[
                ("same", PLAIN_SAME),
                ("password", PLAIN_OLD),
                ("gone", PLAIN_GONE),
            ],
            true,
        );
        let desired = secret(
            &[
                ("same", PLAIN_SAME),
                ("password", PLAIN_NEW),
                ("added", PLAIN_ADDED),
            ],
            false,
        );
        let diff = diff_objects(&secret_ref(), Some(&live), &desired).expect("drift");
        assert_eq!(
            diff.changed_paths,
            vec!["data.added", "data.gone", "data.password"]
        );
        for output in [
            diff_text(&diff, false),
            diff_text(&diff, true),
            format!("{diff:?}"),
        ] {
            assert_no_secret_in(&output);
        }
        let text = &diff.unified;
        assert!(
            text.contains(&format!("-  password: '{MASK_BEFORE}'")),
            "{text}"
        );
        assert!(
            text.contains(&format!("+  password: '{MASK_AFTER}'")),
            "{text}"
        );
        assert!(
            text.contains(&format!("-  gone: '{MASK_BEFORE}'")),
            "{text}"
        );
        assert!(
            text.contains(&format!("+  added: '{MASK_AFTER}'")),
            "{text}"
        );
        assert!(
            text.contains(&format!("   same: '{MASK_UNCHANGED}'")),
            "{text}"
        );
    }

    #[test]
    fn secret_creation_reveals_nothing() {
        let desired = secret(&[("password", PLAIN_NEW)], true);
        let diff = diff_objects(&secret_ref(), None, &desired).expect("creation");
        assert_no_secret_in(&diff_text(&diff, true));
        assert!(
            diff.unified
                .contains(&format!("+  password: '{MASK_AFTER}'"))
        );
    }

    #[test]
    fn equal_secrets_are_no_diff() {
        let live = secret(&[("password", PLAIN_SAME)], true);
        let mut desired = secret(&[("password", PLAIN_SAME)], false);
        desired["metadata"]["resourceVersion"] = json!("6");
        assert_eq!(diff_objects(&secret_ref(), Some(&live), &desired), None);
    }

    #[test]
    fn mask_secret_pair_is_safe_on_unnormalised_input() {
        let live = secret(&[("password", PLAIN_OLD)], true);
        let mut desired = secret(&[("password", PLAIN_NEW)], true);
        desired["stringData"] = json!({"token": PLAIN_ADDED});
        let (l, d) = mask_secret_pair(&live, &desired);
        for side in [&l, &d] {
            assert_no_secret_in(&serde_json::to_string(side).expect("serialises"));
        }
        assert_eq!(l["data"]["password"], MASK_BEFORE);
        assert_eq!(d["data"]["password"], MASK_AFTER);
        assert_eq!(d["stringData"]["token"], MASK_AFTER);
        assert!(l.get("stringData").is_none());
        assert_eq!(
            l["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            MASK_BEFORE
        );
        assert_eq!(
            d["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            MASK_AFTER
        );
    }

    #[test]
    fn non_secrets_are_not_masked() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "visible"}});
        assert_eq!(mask_secret_pair(&cm, &cm), (cm.clone(), cm.clone()));
        // A kind named Secret in another group is not the core Secret.
        let other = json!({"apiVersion": "example.com/v1", "kind": "Secret", "data": {"k": "v"}});
        assert_eq!(
            mask_secret_pair(&other, &other),
            (other.clone(), other.clone())
        );
    }

    #[test]
    fn to_yaml_sorts_keys_recursively() {
        let a = json!({"b": {"y": 1, "x": [{"d": 1, "c": 2}]}, "a": "s"});
        assert_eq!(to_yaml(&a), "a: s\nb:\n  x:\n  - c: 2\n    d: 1\n  y: 1\n");
    }
}
