//! Field ownership (`metadata.managedFields`): proving, without a request, that a
//! server-side apply of a manifest would change nothing.
//!
//! Why: a dry-run per object is what made a no-op `converge diff` cost N requests.
//! The live object already records which fields our field manager owns. When the
//! manifest sets exactly those fields, to the values they hold, applying it again
//! changes nothing: a field someone else changed would have moved to their manager,
//! and a field we no longer set would still be ours.
//!
//! Fields only a kubectl-family manager owns (an env var `kubectl patch` added) are
//! drift the manifest does not mention, and an apply alone would keep them: while
//! there are any, the proof never holds ([`crate::engine::takeover`]).
//!
//! The proof is one-sided. Whatever it cannot decide (a value the server rewrote, a
//! list element matched by a defaulted key it cannot see, an apiVersion other than
//! the one applied, a `null`) makes it answer `false`, and the engine asks the
//! server with a dry-run as before. It can save requests; it cannot hide a change.

use crate::kube::Meta;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::engine::fieldset::FieldSet;
use crate::engine::quantity;
use crate::engine::takeover::Ownership;

/// Whether applying `desired` with field manager `manager` would leave `live` as
/// it is. `ownership` is `live`'s; `protected` the fields ignore rules leave to
/// their owners (not drift).
pub(crate) fn apply_is_noop(
    desired: &Map<String, Value>,
    live: &Value,
    manager: &str,
    ownership: &Ownership,
    protected: &FieldSet,
) -> bool {
    if !ownership.drift_only(protected).is_empty() {
        return false;
    }
    let api_version = desired.get("apiVersion").and_then(Value::as_str);
    let (Some(api_version), Some(live_map)) = (api_version, live.as_object()) else {
        return false;
    };
    if live.is_deleting() {
        return false;
    }
    let Some(owned) = applied_fields(live, manager, api_version) else {
        return false;
    };
    let proof = Proof {
        quantities: has_builtin_quantities(api_version),
        secret: api_version == "v1"
            && desired.get("kind").and_then(Value::as_str) == Some("Secret"),
    };
    proof.root_matches(desired, live_map, owned)
}

/// The fields `manager` owns by applying at `api_version`. `None` when it applied
/// at another version, or also owns fields through another operation.
fn applied_fields<'a>(
    live: &'a Value,
    manager: &str,
    api_version: &str,
) -> Option<&'a Map<String, Value>> {
    let entries = live.managed_fields()?;
    let mut ours = entries.iter().filter(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    });
    let entry = ours.next()?;
    if ours.next().is_some() {
        return None;
    }
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    let applied = field("operation") == Some("Apply")
        && field("apiVersion") == Some(api_version)
        && field("fieldsType") == Some("FieldsV1");
    applied.then(|| entry.get("fieldsV1")?.as_object())?
}

/// Built-in groups whose string values under resource maps are quantities. A
/// custom resource's `limits` may be a plain string, which the server keeps as
/// written; only these groups' quantities are compared by value.
fn has_builtin_quantities(api_version: &str) -> bool {
    matches!(api_version, "v1" | "apps/v1" | "batch/v1")
}

/// Map keys whose string values are quantities in the built-in groups.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "hard",
    "capacity",
    "overhead",
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

struct Proof {
    quantities: bool,
    secret: bool,
}

impl Proof {
    /// `apiVersion`, `kind`, `metadata.name` and `metadata.namespace` identify the
    /// object and are never in managedFields.
    fn root_matches(
        &self,
        desired: &Map<String, Value>,
        live: &Map<String, Value>,
        owned: &Map<String, Value>,
    ) -> bool {
        let mut desired = desired.clone();
        desired.remove("apiVersion");
        desired.remove("kind");
        if let Some(Value::Object(metadata)) = desired.get_mut("metadata") {
            metadata.remove("name");
            metadata.remove("namespace");
            if metadata.is_empty() {
                desired.remove("metadata");
            }
        }
        let mut owned = owned.clone();
        if self.secret && !self.string_data_matches(&mut desired, &mut owned, live) {
            return false;
        }
        self.map_matches(&desired, live, &owned, "")
    }

    /// A Secret's `stringData` is write-only: the server merges it into `data`,
    /// base64-encoded. Checks it that way and removes it from what is left to compare.
    fn string_data_matches(
        &self,
        desired: &mut Map<String, Value>,
        owned: &mut Map<String, Value>,
        live: &Map<String, Value>,
    ) -> bool {
        let Some(string_data) = desired.remove("stringData") else {
            return true;
        };
        let (Some(string_data), Some(Value::Object(owned_keys))) =
            (string_data.as_object(), owned.remove("f:stringData"))
        else {
            return false;
        };
        let live_data = live.get("data").and_then(Value::as_object);
        let all_desired = owned_keys.keys().all(|k| {
            k.strip_prefix("f:")
                .is_some_and(|f| string_data.contains_key(f))
        });
        all_desired
            && string_data.iter().all(|(key, value)| {
                let stored = live_data.and_then(|d| d.get(key)).and_then(Value::as_str);
                let encoded = value
                    .as_str()
                    .map(|s| base64::engine::general_purpose::STANDARD.encode(s));
                owned_keys.contains_key(&format!("f:{key}"))
                    && encoded.is_some()
                    && stored == encoded.as_deref()
            })
    }

    /// Every desired field is owned and holds the live value; every owned field is
    /// desired. `name` is the key this map sits under.
    fn map_matches(
        &self,
        desired: &Map<String, Value>,
        live: &Map<String, Value>,
        owned: &Map<String, Value>,
        name: &str,
    ) -> bool {
        let all_desired = owned.keys().all(|k| {
            k == "."
                || k.strip_prefix("f:")
                    .is_some_and(|f| desired.contains_key(f))
        });
        all_desired
            && desired.iter().all(|(key, value)| {
                let owned = owned.get(&format!("f:{key}"));
                let (Some(live), Some(owned)) = (live.get(key), owned) else {
                    return false;
                };
                self.value_matches(value, live, owned, name, key)
            })
    }

    /// `container` is the key of the map holding this value, `key` its own.
    fn value_matches(
        &self,
        desired: &Value,
        live: &Value,
        owned: &Value,
        container: &str,
        key: &str,
    ) -> bool {
        let Some(owned) = owned.as_object() else {
            return false;
        };
        if owned.keys().all(|k| k == ".") {
            return self.leaf_matches(desired, live, container);
        }
        match (desired, live) {
            (Value::Object(d), Value::Object(l)) => self.map_matches(d, l, owned, key),
            (Value::Array(d), Value::Array(l)) => self.list_matches(d, l, owned),
            _ => false,
        }
    }

    /// A field owned whole: a scalar, or an atomic list or map.
    fn leaf_matches(&self, desired: &Value, live: &Value, container: &str) -> bool {
        if desired.is_null() {
            return false;
        }
        if desired == live {
            return true;
        }
        let quantity = self.quantities && QUANTITY_MAPS.contains(&container);
        match (desired, live) {
            (Value::String(d), Value::String(l)) => quantity && quantity::same_value(d, l),
            (Value::Number(d), Value::String(l)) => {
                quantity && quantity::same_value(&d.to_string(), l)
            }
            _ => false,
        }
    }

    /// A list owned element by element: keyed (`k:{..}`) or a set (`v:..`). Every
    /// desired element is owned, and the live list holds them in the same order.
    fn list_matches(&self, desired: &[Value], live: &[Value], owned: &Map<String, Value>) -> bool {
        let elements: Vec<(&String, &Value)> = owned.iter().filter(|(k, _)| *k != ".").collect();
        if elements.len() != desired.len() {
            return false;
        }
        let mut matched: Vec<Option<usize>> = vec![None; desired.len()];
        for (key, owned_element) in elements {
            let Some(element) = ElementKey::parse(key) else {
                return false;
            };
            let found = (
                element.in_desired(desired, owned_element),
                element.in_live(live),
            );
            let (Some(d), Some(l)) = found else {
                return false;
            };
            if matched[d].is_some()
                || !self.value_matches(&desired[d], &live[l], owned_element, "", "")
            {
                return false;
            }
            matched[d] = Some(l);
        }
        let order: Vec<usize> = matched.into_iter().flatten().collect();
        order.windows(2).all(|w| w[0] < w[1])
    }
}

/// How managedFields names one list element.
enum ElementKey {
    /// `k:{"name":"app"}`: the element whose key fields hold these values.
    Keyed(Map<String, Value>),
    /// `v:"x"`: the element equal to this value.
    Set(Value),
}

impl ElementKey {
    fn parse(key: &str) -> Option<Self> {
        if let Some(json) = key.strip_prefix("k:") {
            return match serde_json::from_str(json).ok()? {
                Value::Object(fields) => Some(Self::Keyed(fields)),
                _ => None,
            };
        }
        serde_json::from_str(key.strip_prefix("v:")?)
            .ok()
            .map(Self::Set)
    }

    /// The one desired element this key names. A key field the manifest leaves out
    /// matches only when the applier does not own it: the server defaulted it (a
    /// port's `protocol: TCP`) and will default it the same way again.
    fn in_desired(&self, desired: &[Value], owned_element: &Value) -> Option<usize> {
        let mut found = desired
            .iter()
            .enumerate()
            .filter(|(_, element)| match self {
                Self::Set(value) => *element == value,
                Self::Keyed(fields) => {
                    fields
                        .iter()
                        .all(|(field, value)| match element.get(field) {
                            Some(v) => v == value,
                            None => owned_element.get(format!("f:{field}")).is_none(),
                        })
                }
            });
        let (index, _) = found.next()?;
        found.next().is_none().then_some(index)
    }

    /// The one live element this key names.
    fn in_live(&self, live: &[Value]) -> Option<usize> {
        let mut found = live.iter().enumerate().filter(|(_, element)| match self {
            Self::Set(value) => *element == value,
            Self::Keyed(fields) => fields
                .iter()
                .all(|(field, value)| element.get(field) == Some(value)),
        });
        let (index, _) = found.next()?;
        found.next().is_none().then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::takeover::DriftManagers;
    use serde_json::json;

    /// A Deployment as `kubectl apply --server-side --field-manager converge` left it
    /// on the test control plane (v1.34), status and the controller's entry included.
    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "managedFields": [
                    {"apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "converge", "operation": "Apply",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}, "f:selector": {},
                        "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {
                            "k:{\"name\":\"app\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}},
                                "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}}}}}}}}},
                    {"apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
                     "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:status": {"f:observedGeneration": {}}}}
                ]
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                    "name": "app", "image": "nginx:1.25", "args": ["--a", "--b"],
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                    "terminationMessagePath": "/dev/termination-log"
                }], "restartPolicy": "Always"}}
            },
            "status": {"observedGeneration": 1}
        })
    }

    /// The manifest that produced it: `cpu: 0.5`, a port without its protocol.
    fn manifest() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                    "name": "app", "image": "nginx:1.25", "args": ["--a", "--b"],
                    "ports": [{"containerPort": 80}],
                    "resources": {"limits": {"cpu": 0.5, "memory": "0.125Gi"}}
                }]}}
            }
        })
    }

    fn noop(desired: &Value, live: &Value) -> bool {
        let ownership = Ownership::of(live, "converge", &DriftManagers::default());
        let desired = desired.as_object().unwrap();
        apply_is_noop(desired, live, "converge", &ownership, &FieldSet::default())
    }

    fn edited(mut value: Value, pointer: &str, new: Value) -> Value {
        *value.pointer_mut(pointer).unwrap() = new;
        value
    }

    #[test]
    fn the_manifest_that_was_applied_is_a_noop() {
        assert!(noop(&manifest(), &live_deployment()));
    }

    #[test]
    fn a_changed_value_is_not() {
        let desired = edited(manifest(), "/spec/replicas", json!(2));
        assert!(!noop(&desired, &live_deployment()));
        let desired = edited(
            manifest(),
            "/spec/template/spec/containers/0/args/1",
            json!("--c"),
        );
        assert!(!noop(&desired, &live_deployment()));
        let desired = edited(
            manifest(),
            "/spec/template/spec/containers/0/resources/limits/cpu",
            json!("0.6"),
        );
        assert!(!noop(&desired, &live_deployment()));
    }

    #[test]
    fn an_added_or_removed_field_is_not() {
        let mut added = manifest();
        added["spec"]["minReadySeconds"] = json!(5);
        assert!(!noop(&added, &live_deployment()));
        let mut with_default = manifest();
        with_default["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert!(
            !noop(&with_default, &live_deployment()),
            "a field we do not own yet"
        );
        let mut removed = manifest();
        removed["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        assert!(!noop(&removed, &live_deployment()));
        let mut container = manifest();
        push_container(&mut container, "sidecar");
        assert!(!noop(&container, &live_deployment()));
    }

    #[test]
    fn a_field_someone_else_took_over_is_not() {
        let mut live = live_deployment();
        let ours = live
            .pointer_mut("/metadata/managedFields/0/fieldsV1/f:spec")
            .unwrap();
        ours.as_object_mut().unwrap().remove("f:replicas");
        live["spec"]["replicas"] = json!(3);
        assert!(!noop(&manifest(), &live));
        live["spec"]["replicas"] = json!(0);
        assert!(
            !noop(&manifest(), &live),
            "not ours any more: the apply takes it back"
        );
    }

    #[test]
    fn another_manager_version_or_a_deleted_object_is_not() {
        let desired = manifest();
        let live = live_deployment();
        let ownership = Ownership::of(&live, "kubectl", &DriftManagers::default());
        let as_kubectl = apply_is_noop(
            desired.as_object().unwrap(),
            &live,
            "kubectl",
            &ownership,
            &FieldSet::default(),
        );
        assert!(!as_kubectl);
        let live = edited(
            live_deployment(),
            "/metadata/managedFields/0/apiVersion",
            json!("apps/v1beta2"),
        );
        assert!(!noop(&desired, &live));
        let mut live = live_deployment();
        live["metadata"]["deletionTimestamp"] = json!("2026-11-24T00:00:00Z");
        assert!(!noop(&desired, &live));
        let mut live = live_deployment();
        live["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert!(!noop(&desired, &live));
    }

    /// What `kubectl label` and `kubectl patch` leave: converge's own fields still
    /// match, but fields only the kubectl family owns are drift the apply must take.
    #[test]
    fn kubectl_family_edits_are_not_but_other_managers_fields_are() {
        let entry = |manager: &str, fields: Value| {
            json!({"apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": manager,
                   "operation": "Update", "fieldsV1": fields})
        };
        let label = json!({"f:metadata": {"f:labels": {"f:injected": {}}}});
        for (manager, in_sync) in [("kubectl-label", false), ("team-b", true)] {
            let mut live = live_deployment();
            live["metadata"]["labels"]["injected"] = json!("yes");
            let entries = live["metadata"]["managedFields"].as_array_mut().unwrap();
            entries.push(entry(manager, label.clone()));
            assert_eq!(noop(&manifest(), &live), in_sync, "{manager}");
        }
        let mut live = live_deployment();
        live["metadata"]["labels"]["injected"] = json!("yes");
        let entries = live["metadata"]["managedFields"].as_array_mut().unwrap();
        entries.push(entry("kubectl-label", label));
        let ownership = Ownership::of(&live, "converge", &DriftManagers::default());
        let protected = FieldSet::path(&["f:metadata", "f:labels"]);
        let desired = manifest();
        let desired = desired.as_object().unwrap();
        assert!(
            apply_is_noop(desired, &live, "converge", &ownership, &protected),
            "an ignored field is not drift"
        );
    }

    #[test]
    fn reordered_list_elements_and_nulls_are_not() {
        let mut live = live_deployment();
        let owned = live
            .pointer_mut("/metadata/managedFields/0/fieldsV1/f:spec/f:template/f:spec/f:containers")
            .unwrap();
        owned["k:{\"name\":\"side\"}"] = json!({".": {}, "f:name": {}, "f:image": {}});
        push_container(&mut live, "side");
        let mut desired = manifest();
        push_container(&mut desired, "side");
        assert!(noop(&desired, &live));
        wanted_reversed(&mut desired);
        assert!(!noop(&desired, &live));
        let desired = edited(manifest(), "/spec/replicas", Value::Null);
        assert!(!noop(&desired, &live_deployment()));
    }

    /// Appends a busybox container named `name` to a Deployment's pod template.
    fn push_container(deployment: &mut Value, name: &str) {
        let containers = deployment
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
            .unwrap();
        containers.push(json!({"name": name, "image": "busybox"}));
    }

    fn wanted_reversed(desired: &mut Value) {
        let containers = desired
            .pointer_mut("/spec/template/spec/containers")
            .unwrap();
        containers.as_array_mut().unwrap().reverse();
    }

    #[test]
    fn quantities_compare_by_value_only_in_builtin_kinds() {
        let live = json!({
            "apiVersion": "example.com/v1", "kind": "Quota",
            "metadata": {"name": "q", "managedFields": [{"apiVersion": "example.com/v1", "fieldsType": "FieldsV1",
                "manager": "converge", "operation": "Apply", "fieldsV1": {"f:spec": {"f:limits": {"f:cpu": {}}}}}]},
            "spec": {"limits": {"cpu": "500m"}}
        });
        let desired = json!({"apiVersion": "example.com/v1", "kind": "Quota", "metadata": {"name": "q"},
            "spec": {"limits": {"cpu": "0.5"}}});
        assert!(
            !noop(&desired, &live),
            "a custom resource keeps strings as written"
        );
        let desired = edited(desired, "/spec/limits/cpu", json!("500m"));
        assert!(noop(&desired, &live));
    }

    #[test]
    fn secret_string_data_is_compared_with_the_stored_data() {
        let live = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "managedFields": [{"apiVersion": "v1", "fieldsType": "FieldsV1",
                "manager": "converge", "operation": "Apply",
                "fieldsV1": {"f:data": {"f:other": {}}, "f:stringData": {"f:password": {}}, "f:type": {}}}]},
            "type": "Opaque",
            "data": {"other": "YQ==", "password": "aHVudGVyMg=="}
        });
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
            "stringData": {"password": "hunter2"}, "data": {"other": "YQ=="}});
        assert!(noop(&desired, &live));
        let changed = edited(desired.clone(), "/stringData/password", json!("hunter3"));
        assert!(!noop(&changed, &live));
        let mut fewer = desired;
        fewer.as_object_mut().unwrap().remove("stringData");
        assert!(!noop(&fewer, &live));
    }
}
