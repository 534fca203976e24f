//! The inventory: which live objects converge owns, following the ApplySet
//! convention (KEP-3659) so that `kubectl apply --prune --applyset` and converge
//! agree on ownership.
//!
//! A parent ConfigMap carries `applyset.kubernetes.io/id` and lists the group-kinds
//! of its members in `applyset.kubernetes.io/contains-group-kinds`; every member
//! carries `applyset.kubernetes.io/part-of: <id>`. Prune candidates are exactly the
//! labelled members that are no longer desired — an object that merely has similar
//! labels is never ours. This module only computes names, labels and bodies; it
//! deletes nothing itself.

use crate::kube::GroupKind;
use crate::manifest::ObjectRef;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

pub(crate) const ID_LABEL: &str = "applyset.kubernetes.io/id";
pub(crate) const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
pub(crate) const GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
pub(crate) const NAMESPACES_ANNOTATION: &str = "applyset.kubernetes.io/additional-namespaces";
pub(crate) const TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// `converge.dev/prune: disabled` on a live object keeps it from ever being pruned.
pub(crate) const PRUNE_ANNOTATION: &str = "converge.dev/prune";

/// One ApplySet: its parent ConfigMap and the id its members are labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySet {
    /// The parent ConfigMap's name.
    pub parent_name: String,
    pub namespace: String,
    pub id: String,
}

impl ApplySet {
    /// The ApplySet called `name` with its parent in `namespace`. The parent is named
    /// `converge-<name>` so that it does not collide with the user's ConfigMaps.
    pub fn new(name: &str, namespace: &str) -> Self {
        let parent_name = format!("converge-{name}");
        let id = applyset_id(&parent_name, namespace, "ConfigMap", "");
        ApplySet {
            parent_name,
            namespace: namespace.into(),
            id,
        }
    }

    /// The parent as an object reference, e.g. for Events and log lines.
    pub fn parent_ref(&self) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some(self.namespace.clone()),
            name: self.parent_name.clone(),
        }
    }

    /// The label selector that lists this ApplySet's members.
    pub fn member_selector(&self) -> String {
        format!("{PART_OF_LABEL}={}", self.id)
    }

    /// Marks a desired object as a member (sets the `part-of` label).
    pub fn label_member(&self, body: &mut Map<String, Value>) {
        let metadata = object_entry(body, "metadata");
        let labels = object_entry(metadata, "labels");
        labels.insert(PART_OF_LABEL.into(), Value::String(self.id.clone()));
    }

    /// Whether a live object is labelled as a member of this ApplySet.
    pub fn is_member(&self, live: &Value) -> bool {
        live.pointer(&format!(
            "/metadata/labels/{}",
            escape_pointer(PART_OF_LABEL)
        ))
        .and_then(Value::as_str)
            == Some(self.id.as_str())
    }

    /// The parent ConfigMap's body recording the member group-kinds and the
    /// namespaces other than the parent's that hold members.
    pub fn parent_body(
        &self,
        group_kinds: &BTreeSet<GroupKind>,
        namespaces: &BTreeSet<String>,
    ) -> Value {
        // kubectl writes the list sorted by its text form; so do we.
        let mut kinds: Vec<String> = group_kinds.iter().map(ToString::to_string).collect();
        kinds.sort();
        let others: Vec<&str> = namespaces
            .iter()
            .map(String::as_str)
            .filter(|ns| *ns != self.namespace)
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.parent_name,
                "namespace": self.namespace,
                "labels": { ID_LABEL: self.id },
                "annotations": {
                    TOOLING_ANNOTATION: concat!("converge/v", env!("CARGO_PKG_VERSION")),
                    GROUP_KINDS_ANNOTATION: kinds.join(","),
                    NAMESPACES_ANNOTATION: others.join(","),
                },
            },
        })
    }
}

/// The group-kinds a live parent records (empty when there is no parent yet).
pub(crate) fn recorded_group_kinds(parent: Option<&Value>) -> BTreeSet<GroupKind> {
    let pointer = format!(
        "/metadata/annotations/{}",
        escape_pointer(GROUP_KINDS_ANNOTATION)
    );
    parent
        .and_then(|p| p.pointer(&pointer))
        .and_then(Value::as_str)
        .map(|text| text.split(',').filter_map(GroupKind::parse).collect())
        .unwrap_or_default()
}

/// Helm's keep policy: `helm.sh/resource-policy: keep`.
const HELM_RESOURCE_POLICY: &str = "helm.sh/resource-policy";
/// Argo CD's sync options: `Prune=false` or `Delete=false` keep an object.
const ARGO_SYNC_OPTIONS: &str = "argocd.argoproj.io/sync-options";

/// Whether a live object opted out of prune: `converge.dev/prune: disabled`, Helm's
/// `helm.sh/resource-policy: keep`, or Argo CD's `sync-options` with
/// `Prune=false` or `Delete=false` (so that charts and Argo CD repositories keep
/// what they kept there).
pub(crate) fn prune_disabled(live: &Value) -> bool {
    let annotation = |key: &str| {
        live.pointer(&format!("/metadata/annotations/{}", escape_pointer(key)))
            .and_then(Value::as_str)
    };
    let argo_keeps = annotation(ARGO_SYNC_OPTIONS).is_some_and(|options| {
        options
            .split(',')
            .map(str::trim)
            .any(|o| o == "Prune=false" || o == "Delete=false")
    });
    annotation(PRUNE_ANNOTATION) == Some("disabled")
        || annotation(HELM_RESOURCE_POLICY) == Some("keep")
        || argo_keeps
}

/// The KEP-3659 id: `applyset-<base64url(sha256("<name>.<namespace>.<kind>.<group>"))>-v1`.
fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    let input = format!("{name}.{namespace}.{kind}.{group}");
    let hash = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_ref());
    format!("applyset-{encoded}-v1")
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The object under `key`, created (or replaced, if it was not an object) on demand.
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(inner) => inner,
        _ => unreachable!("entry was just made an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_kep_3659() {
        // kubectl's own example: `kubectl apply --applyset=configmap/parent -n ns`.
        let id = applyset_id("parent", "ns", "ConfigMap", "");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
        assert!(!id.contains('=') && !id.contains('+') && !id.contains('/'));
        assert_eq!(
            ApplySet::new("shop", "default").id,
            applyset_id("converge-shop", "default", "ConfigMap", "")
        );
        assert_ne!(
            ApplySet::new("shop", "default").id,
            ApplySet::new("shop", "other").id
        );
    }

    #[test]
    fn members_are_labelled_and_recognised() {
        let set = ApplySet::new("shop", "default");
        let mut body =
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "labels": {"app": "x"}}});
        set.label_member(body.as_object_mut().expect("object"));
        assert_eq!(body["metadata"]["labels"]["app"], "x");
        assert!(set.is_member(&body));
        assert!(!ApplySet::new("other", "default").is_member(&body));
        assert_eq!(
            set.member_selector(),
            format!("applyset.kubernetes.io/part-of={}", set.id)
        );

        let mut bare = json!({"kind": "ConfigMap"});
        set.label_member(bare.as_object_mut().expect("object"));
        assert!(set.is_member(&bare));
    }

    #[test]
    fn parent_records_group_kinds_and_other_namespaces() {
        let set = ApplySet::new("shop", "default");
        let kinds: BTreeSet<GroupKind> = ["Service", "Deployment.apps", "Widget.example.com"]
            .into_iter()
            .filter_map(GroupKind::parse)
            .collect();
        let namespaces = ["default".to_string(), "shop".to_string()].into();
        let parent = set.parent_body(&kinds, &namespaces);
        assert_eq!(parent["metadata"]["name"], "converge-shop");
        assert_eq!(parent["metadata"]["labels"][ID_LABEL], set.id.as_str());
        let annotations = &parent["metadata"]["annotations"];
        assert_eq!(
            annotations[GROUP_KINDS_ANNOTATION],
            "Deployment.apps,Service,Widget.example.com"
        );
        assert_eq!(annotations[NAMESPACES_ANNOTATION], "shop");
        assert_eq!(recorded_group_kinds(Some(&parent)), kinds);
        assert!(recorded_group_kinds(None).is_empty());
    }

    #[test]
    fn prune_opt_out_is_read_from_annotations() {
        let kept = json!({"metadata": {"annotations": {PRUNE_ANNOTATION: "disabled"}}});
        assert!(prune_disabled(&kept));
        assert!(!prune_disabled(&json!({"metadata": {}})));
        let annotated = |key: &str, value: &str| json!({"metadata": {"annotations": {key: value}}});
        assert!(prune_disabled(&annotated(HELM_RESOURCE_POLICY, "keep")));
        assert!(!prune_disabled(&annotated(HELM_RESOURCE_POLICY, "delete")));
        assert!(prune_disabled(&annotated(ARGO_SYNC_OPTIONS, "Prune=false")));
        assert!(prune_disabled(&annotated(
            ARGO_SYNC_OPTIONS,
            "ServerSideApply=true, Delete=false"
        )));
        assert!(!prune_disabled(&annotated(ARGO_SYNC_OPTIONS, "Prune=true")));
        assert!(!prune_disabled(&annotated(PRUNE_ANNOTATION, "enabled")));
    }
}
