//! Edits by the kubectl family are drift: taking their fields over.
//!
//! Why: server-side apply only reverts fields the applier owns. An env var added by
//! `kubectl patch` is owned by `kubectl-patch`, so converge's apply keeps it forever,
//! and a list edit (the Service ports replaced with port 81 under the same name) can
//! make every apply fail with a duplicate key. As Flux does, converge moves those
//! managers' fields into its own applied field set first (a managedFields-only
//! patch: no field changes); the apply that follows then owns them and drops
//! whatever the manifest does not declare.
//!
//! The kubectl family is a list of field managers (per source, `drift_managers`).
//! Every other manager's fields (a controller's, another tool's server-side apply)
//! stay theirs. Status is never taken: converge does not apply it.

use crate::engine::fieldset::FieldSet;
use crate::kube::Meta;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// The managers `kubectl` writes as (and `before-first-apply`, the name the API
/// server gives fields that predate the first server-side apply).
pub const DEFAULT_DRIFT_MANAGERS: [&str; 9] = [
    "kubectl",
    "kubectl-edit",
    "kubectl-patch",
    "kubectl-replace",
    "kubectl-client-side-apply",
    "kubectl-scale",
    "kubectl-label",
    "kubectl-annotate",
    "before-first-apply",
];

/// The field managers whose edits inside converge's objects are drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftManagers(BTreeSet<String>);

impl Default for DriftManagers {
    fn default() -> Self {
        DriftManagers::new(DEFAULT_DRIFT_MANAGERS.map(String::from))
    }
}

impl DriftManagers {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        DriftManagers(names.into_iter().filter(|n| !n.is_empty()).collect())
    }

    /// `names` when given (a source's `drift_managers`, `--drift-managers`), else
    /// the kubectl family.
    pub fn named_or_default(names: Option<&[String]>) -> Self {
        match names {
            Some(names) => DriftManagers::new(names.iter().cloned()),
            None => DriftManagers::default(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether a managedFields entry records one of these managers' edits of the
    /// object (any operation; the status subresource excepted).
    fn wrote(&self, entry: &Value) -> bool {
        let field = |name: &str| entry.get(name).and_then(Value::as_str);
        field("manager").is_some_and(|m| self.0.contains(m))
            && field("subresource") != Some("status")
    }
}

/// How a managedFields entry relates to converge.
enum Owner {
    /// converge's own applied fields.
    Us,
    /// A drift manager's edits.
    Drift,
    /// Anyone else: a controller, another tool.
    Other,
}

fn owner(entry: &Value, manager: &str, drift: &DriftManagers) -> Owner {
    let field = |name: &str| entry.get(name).and_then(Value::as_str);
    let ours = field("manager") == Some(manager)
        && field("operation") == Some("Apply")
        && field("subresource").is_none_or(str::is_empty);
    match (ours, drift.wrote(entry)) {
        (true, _) => Owner::Us,
        (false, true) => Owner::Drift,
        (false, false) => Owner::Other,
    }
}

fn fields(entry: &Value) -> FieldSet {
    entry
        .get("fieldsV1")
        .and_then(FieldSet::from_fields_v1)
        .unwrap_or_default()
}

fn entries(live: &Value) -> &[Value] {
    live.managed_fields().map_or(&[], Vec::as_slice)
}

/// Who owns what in one live object.
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    pub ours: FieldSet,
    /// What the drift managers own.
    pub theirs: FieldSet,
    /// What everyone else owns.
    pub others: FieldSet,
}

impl Ownership {
    /// The ownership `live`'s managedFields record, `manager` being converge's.
    pub(crate) fn of(live: &Value, manager: &str, drift: &DriftManagers) -> Ownership {
        let mut ownership = Ownership::default();
        for entry in entries(live) {
            let set = match owner(entry, manager, drift) {
                Owner::Us => &mut ownership.ours,
                Owner::Drift => &mut ownership.theirs,
                Owner::Other => &mut ownership.others,
            };
            set.union(&fields(entry));
        }
        ownership
    }

    /// What an apply removes once it has taken the drift managers' fields over:
    /// what only they own, `protected` (ignored fields) excepted. Empty when their
    /// edits change nothing converge would not keep anyway.
    pub(crate) fn drift_only(&self, protected: &FieldSet) -> FieldSet {
        self.theirs
            .without_subtrees(protected)
            .difference(&self.ours)
            .difference(&self.others)
    }

    /// What stays owned after that apply: converge's fields, everyone else's, and
    /// the `protected` ones the drift managers keep.
    pub(crate) fn kept(&self, protected: &FieldSet) -> FieldSet {
        let mut kept = self.ours.clone();
        kept.union(&self.others);
        kept.union(protected);
        kept
    }
}

/// The managedFields surgery one object needs before its apply: the drift
/// managers' fields (ignored ones excepted) move into converge's applied entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    /// A JSON patch of `metadata.managedFields`, pinned to the resourceVersion read
    /// (409 Conflict if the object changed since).
    patch: Value,
    /// The entries before it, to put back if the apply is then refused.
    original: Vec<Value>,
    /// What it was computed with, to compute it again from a fresher copy.
    manager: String,
    api_version: String,
    drift: DriftManagers,
    protected: FieldSet,
}

impl Takeover {
    /// The takeover of `live`'s drift-manager fields (`protected` ones excepted)
    /// into `manager`'s applied entry, created at `api_version` if there is none.
    /// `None` when they own nothing to take.
    pub fn of(
        live: &Value,
        manager: &str,
        api_version: &str,
        drift: &DriftManagers,
        protected: &FieldSet,
    ) -> Option<Takeover> {
        let mut taken = FieldSet::default();
        let mut kept: Vec<Value> = Vec::new();
        let mut ours: Option<usize> = None;
        for entry in entries(live) {
            match owner(entry, manager, drift) {
                Owner::Us if ours.is_none() => {
                    ours = Some(kept.len());
                    kept.push(entry.clone());
                }
                Owner::Drift => {
                    let theirs = fields(entry);
                    let take = theirs.without_subtrees(protected);
                    let rest = theirs.difference(&take);
                    taken.union(&take);
                    if !rest.is_empty() {
                        let mut entry = entry.clone();
                        entry["fieldsV1"] = rest.to_fields_v1();
                        kept.push(entry);
                    }
                }
                _ => kept.push(entry.clone()),
            }
        }
        if taken.is_empty() {
            return None;
        }
        let index = *ours.get_or_insert_with(|| {
            kept.push(json!({"manager": manager, "operation": "Apply",
                "apiVersion": api_version, "fieldsType": "FieldsV1", "fieldsV1": {}}));
            kept.len() - 1
        });
        let mut fields_now = fields(&kept[index]);
        fields_now.union(&taken);
        kept[index]["fieldsV1"] = fields_now.to_fields_v1();
        let version = live.resource_version();
        Some(Takeover {
            patch: managed_fields_patch(version.unwrap_or_default(), &kept),
            original: entries(live).to_vec(),
            manager: manager.to_string(),
            api_version: api_version.to_string(),
            drift: drift.clone(),
            protected: protected.clone(),
        })
    }

    /// The same takeover of a newer version of the object (its resourceVersion
    /// moved since: a controller's status update); `None` when nothing is left to
    /// take.
    pub fn again(&self, live: &Value) -> Option<Takeover> {
        let (manager, version) = (&self.manager, &self.api_version);
        Takeover::of(live, manager, version, &self.drift, &self.protected)
    }

    /// The JSON patch to send before the apply.
    pub fn patch(&self) -> &Value {
        &self.patch
    }

    /// The JSON patch that puts the entries back on the object at
    /// `resource_version` (the answer to [`Takeover::patch`]).
    pub fn restore(&self, resource_version: &str) -> Value {
        managed_fields_patch(resource_version, &self.original)
    }
}

fn managed_fields_patch(resource_version: &str, entries: &[Value]) -> Value {
    json!([
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": entries},
    ])
}

/// What `live` becomes when converge takes the drift managers' fields over and
/// applies `desired`, computed here for when the server cannot say: its dry-run
/// refuses the merge of the manifest with their edits (two ports named `http`).
/// Their fields go, then the manifest is merged in; lists merge by the keys
/// managedFields names their elements with, and lists without are replaced.
pub(crate) fn expected_after_takeover(
    live: &Value,
    desired: &Map<String, Value>,
    ownership: &Ownership,
    protected: &FieldSet,
) -> Value {
    let mut expected = live.clone();
    ownership
        .drift_only(protected)
        .remove_from(&mut expected, &ownership.kept(protected));
    let mut keys = ownership.kept(protected);
    keys.union(&ownership.theirs);
    for (key, value) in desired {
        match expected.get_mut(key) {
            Some(base) => overlay(base, value, keys.child(&format!("f:{key}"))),
            None => expected[key] = value.clone(),
        }
    }
    expected
}

/// Merges `desired` into `base` as server-side apply does: maps key by key, keyed
/// lists element by element (`keys`: the managedFields paths that show the key
/// fields), everything else replaced.
fn overlay(base: &mut Value, desired: &Value, keys: Option<&FieldSet>) {
    match (base, desired) {
        (Value::Object(base), Value::Object(desired)) => {
            for (key, value) in desired {
                let keys = keys.and_then(|k| k.child(&format!("f:{key}")));
                match base.get_mut(key) {
                    Some(slot) => overlay(slot, value, keys),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(desired)) => {
            let names = key_names(keys);
            if names.is_empty() {
                *base = desired.clone();
                return;
            }
            for element in desired {
                let same = |item: &Value| {
                    names.iter().all(|name| match element.get(name) {
                        Some(value) => item.get(name) == Some(value),
                        None => true,
                    })
                };
                match base.iter_mut().find(|item| same(item)) {
                    Some(item) => overlay(item, element, None),
                    None => base.push(element.clone()),
                }
            }
        }
        (base, desired) => *base = desired.clone(),
    }
}

/// The key fields of a list's elements, as its `k:{..}` managedFields keys show.
fn key_names(keys: Option<&FieldSet>) -> BTreeSet<String> {
    let keyed = keys.into_iter().flat_map(FieldSet::keys);
    keyed
        .filter_map(|key| key.strip_prefix("k:"))
        .filter_map(|json| serde_json::from_str::<Map<String, Value>>(json).ok())
        .flat_map(|fields| fields.into_iter().map(|(name, _)| name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Deployment as the test control plane left it after converge's apply, a
    /// `kubectl patch` (env var), a `kubectl label`, a `kubectl scale` and a
    /// controller's status update.
    fn live() -> Value {
        json!({"metadata": {"resourceVersion": "42", "managedFields": [
            {"manager": "converge", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:name": {}}}}}}}},
            {"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "subresource": "scale",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-label", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:injected": {}}}}},
            {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}, "f:spec": {"f:template": {"f:spec": {
                "f:containers": {"k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"INJECTED\"}": {".": {}, "f:name": {}}}}}}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "subresource": "status",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}},
            {"manager": "team-b", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}}}
        ]}})
    }

    fn set(fields: Value) -> FieldSet {
        FieldSet::from_fields_v1(&fields).unwrap()
    }

    #[test]
    fn only_what_drift_managers_alone_own_is_drift() {
        let ownership = Ownership::of(&live(), "converge", &DriftManagers::default());
        let expected = set(
            json!({"f:metadata": {"f:labels": {"f:injected": {}}}, "f:spec": {"f:template": {
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"INJECTED\"}": {".": {}, "f:name": {}}}}}}}}}),
        );
        assert_eq!(ownership.drift_only(&FieldSet::default()), expected);
        let none = Ownership::of(&live(), "converge", &DriftManagers::new([]));
        assert!(none.drift_only(&FieldSet::default()).is_empty());
    }

    #[test]
    fn protected_fields_are_not_drift() {
        let ownership = Ownership::of(&live(), "converge", &DriftManagers::default());
        let labels = FieldSet::path(&["f:metadata", "f:labels"]);
        let left = ownership.drift_only(&labels);
        assert!(left.child("f:metadata").is_none() && left.child("f:spec").is_some());
    }

    #[test]
    fn the_takeover_moves_their_fields_into_our_entry() {
        let labels = FieldSet::path(&["f:metadata", "f:labels", "f:injected"]);
        let drift = DriftManagers::default();
        let takeover = Takeover::of(&live(), "converge", "apps/v1", &drift, &labels);
        let patch = takeover.expect("something to take").patch().clone();
        assert_eq!(patch[0]["value"], "42");
        let entries = patch[1]["value"].as_array().unwrap();
        let managers: Vec<&str> = entries
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(
            managers,
            [
                "converge",
                "kubectl-label",
                "kube-controller-manager",
                "team-b"
            ]
        );
        let ours = set(entries[0]["fieldsV1"].clone());
        for taken in [
            &["f:spec", "f:replicas"][..],
            &["f:metadata", "f:annotations", "f:note"],
        ] {
            assert!(
                FieldSet::path(taken).difference(&ours).is_empty(),
                "{taken:?}"
            );
        }
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:injected": {}}}})
        );
    }

    #[test]
    fn without_our_entry_one_is_created_and_nothing_to_take_is_none() {
        let mut live = live();
        live["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        let drift = DriftManagers::default();
        let takeover = Takeover::of(&live, "converge", "apps/v1", &drift, &FieldSet::default());
        let takeover = takeover.expect("something to take");
        let patch = takeover.patch();
        let last = patch[1]["value"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (last["manager"].as_str(), last["operation"].as_str()),
            (Some("converge"), Some("Apply"))
        );
        let drift = DriftManagers::new(["someone-else".to_string()]);
        assert!(Takeover::of(&live, "converge", "apps/v1", &drift, &FieldSet::default()).is_none());
        let restore = takeover.restore("43");
        assert_eq!(restore[0]["value"], "43");
        assert_eq!(restore[1]["value"], live["metadata"]["managedFields"]);
    }

    /// The Service after `kubectl patch --type merge` replaced its ports with port
    /// 81 under the name converge gives port 80.
    #[test]
    fn the_expected_object_merges_keyed_lists_after_their_fields_go() {
        let live = json!({"metadata": {"name": "web", "managedFields": [
            {"manager": "converge", "operation": "Apply", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:selector": {}}}},
            {"manager": "kubectl-patch", "operation": "Update", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":81,\"protocol\":\"TCP\"}": {
                ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}}}
        ]}, "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.1",
            "ports": [{"name": "http", "port": 81, "protocol": "TCP", "targetPort": 8080}]}});
        let desired = json!({"spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        let ownership = Ownership::of(&live, "converge", &DriftManagers::default());
        let desired = desired.as_object().unwrap();
        let expected = expected_after_takeover(&live, desired, &ownership, &FieldSet::default());
        assert_eq!(
            expected["spec"],
            json!({"selector": {"app": "web"}, "clusterIP": "10.0.0.1",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]})
        );
    }

    /// `kubectl annotate` owns the annotations map itself (`.`) too: a protected
    /// annotation keeps the map it sits in.
    #[test]
    fn a_protected_field_keeps_the_map_it_sits_in() {
        let live = json!({"metadata": {"annotations": {"converge.dev/prune": "disabled"},
            "managedFields": [{"manager": "kubectl-annotate", "operation": "Update",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {
                    ".": {}, "f:converge.dev/prune": {}}}}}]}});
        let ownership = Ownership::of(&live, "converge", &DriftManagers::default());
        let protected = FieldSet::path(&["f:metadata", "f:annotations", "f:converge.dev/prune"]);
        let desired = json!({"metadata": {"name": "x"}});
        let desired = desired.as_object().unwrap();
        let expected = expected_after_takeover(&live, desired, &ownership, &protected);
        let annotations = &expected["metadata"]["annotations"];
        assert_eq!(annotations, &json!({"converge.dev/prune": "disabled"}));
        let unprotected = expected_after_takeover(&live, desired, &ownership, &FieldSet::default());
        assert!(unprotected["metadata"].get("annotations").is_none());
    }

    #[test]
    fn overlay_merges_keyed_elements_and_replaces_plain_lists() {
        let keys = FieldSet::from_fields_v1(&json!({"f:c": {"k:{\"name\":\"a\"}": {}}})).unwrap();
        let mut base = json!({"c": [{"name": "a", "x": 1}, {"name": "b"}], "l": [1, 2]});
        let desired = json!({"c": [{"name": "a", "y": 2}, {"name": "n"}], "l": [3]});
        overlay(&mut base, &desired, Some(&keys));
        assert_eq!(
            base,
            json!({"c": [{"name": "a", "x": 1, "y": 2}, {"name": "b"}, {"name": "n"}], "l": [3]})
        );
    }
}
