//! Field sets as `metadata.managedFields` records them (`fieldsV1`), and the set
//! algebra that taking other managers' fields over needs.
//!
//! Why: which fields an apply removes is decided by ownership. A field that only a
//! kubectl-family manager owns survives converge's apply; once its ownership moves
//! to converge and the manifest does not declare it, the apply removes it. Computing
//! "what only they own" and "what the apply would then remove" is set arithmetic
//! over these tries, the same the API server does (structured-merge-diff).
//!
//! A `fieldsV1` trie maps path elements to sub-tries: `f:name` (a map key), `k:{..}`
//! (the list element with these key fields), `v:..` (the set element equal to this
//! value), `i:N` (the N-th element). A node is itself in the set when it is a leaf
//! (`{}`) or holds the key `"."`.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A set of field paths of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether the path leading here is itself in the set.
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

/// One step of a path: how a `fieldsV1` key names a child of a value.
enum Element<'a> {
    Field(&'a str),
    Keyed(Map<String, Value>),
    Value(Value),
    Index(usize),
}

impl Element<'_> {
    fn parse(key: &str) -> Option<Element<'_>> {
        if let Some(name) = key.strip_prefix("f:") {
            return Some(Element::Field(name));
        }
        if let Some(json) = key.strip_prefix("k:") {
            return match serde_json::from_str(json).ok()? {
                Value::Object(fields) => Some(Element::Keyed(fields)),
                _ => None,
            };
        }
        if let Some(json) = key.strip_prefix("v:") {
            return serde_json::from_str(json).ok().map(Element::Value);
        }
        key.strip_prefix("i:")?.parse().ok().map(Element::Index)
    }

    /// The fields that identify a keyed element (`k:{"name":..}` → `f:name`).
    fn key_fields(&self) -> FieldSet {
        let mut set = FieldSet::default();
        if let Element::Keyed(fields) = self {
            for name in fields.keys() {
                set.union(&FieldSet::path(&[format!("f:{name}")]));
            }
        }
        set
    }

    /// Whether `item`, an element of a list, is the one this key names.
    fn names(&self, index: usize, item: &Value) -> bool {
        match self {
            Element::Keyed(fields) => fields.iter().all(|(k, v)| item.get(k) == Some(v)),
            Element::Value(value) => item == value,
            Element::Index(i) => *i == index,
            Element::Field(_) => false,
        }
    }
}

impl FieldSet {
    /// The set a `fieldsV1` object describes (`None` when it is not one).
    pub fn from_fields_v1(fields: &Value) -> Option<FieldSet> {
        let mut set = Self::node(fields)?;
        // The root is the object itself, never a field of it.
        set.member = false;
        Some(set)
    }

    fn node(value: &Value) -> Option<FieldSet> {
        let map = value.as_object()?;
        let mut node = FieldSet {
            member: map.is_empty() || map.contains_key("."),
            children: BTreeMap::new(),
        };
        for (key, child) in map.iter().filter(|(k, _)| *k != ".") {
            node.children.insert(key.clone(), Self::node(child)?);
        }
        Some(node)
    }

    /// The `fieldsV1` form of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (key, child) in &self.children {
            map.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// A set holding one path, given as `fieldsV1` keys (`["f:spec", "f:replicas"]`).
    pub fn path<S: AsRef<str>>(keys: &[S]) -> FieldSet {
        let mut set = FieldSet::default();
        let mut node = &mut set;
        for key in keys {
            node = node.children.entry(key.as_ref().to_string()).or_default();
        }
        node.member = !keys.is_empty();
        set
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The sub-trie under `key`, if any path goes through it.
    pub fn child(&self, key: &str) -> Option<&FieldSet> {
        self.children.get(key)
    }

    /// The keys of the children: the path elements below this node.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.children.keys().map(String::as_str)
    }

    /// Adds every path of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (key, child) in &other.children {
            self.children.entry(key.clone()).or_default().union(child);
        }
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (key, child) in &self.children {
            let rest = match other.children.get(key) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(key.clone(), rest);
            }
        }
        out
    }

    /// The paths of `self` that are neither in `subtrees` nor below one of its paths.
    pub fn without_subtrees(&self, subtrees: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (key, child) in &self.children {
            let rest = match subtrees.children.get(key) {
                Some(cut) if cut.member => continue,
                Some(cut) => child.without_subtrees(cut),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(key.clone(), rest);
            }
        }
        out
    }

    /// Removes this set's fields from `object`, as an apply removes the fields its
    /// applier no longer declares: a field or list element in the set goes whole
    /// unless `kept` (what others still own) holds something inside it; then only
    /// the set's fields inside it go.
    pub fn remove_from(&self, object: &mut Value, kept: &FieldSet) {
        match object {
            Value::Object(map) => self.remove_from_map(map, kept),
            Value::Array(items) => self.remove_from_list(items, kept),
            _ => {}
        }
    }

    fn remove_from_map(&self, map: &mut Map<String, Value>, kept: &FieldSet) {
        for (key, child) in &self.children {
            let Some(Element::Field(name)) = Element::parse(key) else {
                continue;
            };
            let kept = kept.children.get(key);
            match (child.member, kept) {
                (true, None) => {
                    map.shift_remove(name);
                }
                (_, kept) => {
                    if let Some(value) = map.get_mut(name) {
                        child.remove_from(value, kept.unwrap_or(&EMPTY));
                    }
                }
            }
        }
    }

    fn remove_from_list(&self, items: &mut Vec<Value>, kept: &FieldSet) {
        let mut gone = vec![false; items.len()];
        for (key, child) in &self.children {
            let Some(element) = Element::parse(key) else {
                continue;
            };
            let Some(index) = (0..items.len()).find(|&i| element.names(i, &items[i])) else {
                continue;
            };
            match (child.member, kept.children.get(key)) {
                (true, None) => gone[index] = true,
                // An element that stays keeps the fields that name it.
                (_, kept) => child
                    .difference(&element.key_fields())
                    .remove_from(&mut items[index], kept.unwrap_or(&EMPTY)),
            }
        }
        let mut index = 0;
        items.retain(|_| {
            index += 1;
            !gone[index - 1]
        });
    }
}

static EMPTY: FieldSet = FieldSet {
    member: false,
    children: BTreeMap::new(),
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(fields: Value) -> FieldSet {
        FieldSet::from_fields_v1(&fields).expect("fieldsV1")
    }

    /// What `kubectl patch` (strategic) of an env var and a sidecar left on a
    /// Deployment of the test control plane.
    fn kubectl_patch() -> FieldSet {
        set(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {},
                    "f:name": {}, "f:resources": {}},
                "k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"INJECTED\"}": {".": {}, "f:name": {}, "f:value": {}}}}
            }}}}}),
        )
    }

    fn converge() -> FieldSet {
        set(
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:template": {"f:spec": {
            "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}),
        )
    }

    fn deployment() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx", "env": [{"name": "INJECTED", "value": "x"}, {"name": "MODE", "value": "m"}]},
            {"name": "sidecar", "image": "busybox", "imagePullPolicy": "IfNotPresent", "resources": {}}
        ]}}}})
    }

    #[test]
    fn round_trips_fields_v1() {
        let fields = json!({"f:a": {".": {}, "f:b": {}}, "f:c": {"k:{\"x\":1}": {}}});
        assert_eq!(set(fields.clone()).to_fields_v1(), fields);
        assert!(set(json!({})).is_empty());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_none());
    }

    #[test]
    fn difference_keeps_what_the_other_set_lacks() {
        let only_theirs = kubectl_patch().difference(&converge());
        assert_eq!(only_theirs, kubectl_patch(), "nothing shared");
        let mut both = converge();
        both.union(&kubectl_patch());
        assert!(kubectl_patch().difference(&both).is_empty());
        assert_eq!(both.difference(&kubectl_patch()), converge());
    }

    #[test]
    fn without_subtrees_cuts_everything_below_a_path() {
        let replicas = FieldSet::path(&["f:spec", "f:replicas"]);
        let mut fields = set(json!({"f:spec": {"f:replicas": {}, "f:paused": {}}}));
        assert_eq!(
            fields.without_subtrees(&replicas),
            set(json!({"f:spec": {"f:paused": {}}}))
        );
        fields.union(&kubectl_patch());
        let spec = FieldSet::path(&["f:spec"]);
        assert!(fields.without_subtrees(&spec).is_empty());
    }

    #[test]
    fn removing_takes_whole_elements_and_single_fields() {
        let mut object = deployment();
        kubectl_patch().remove_from(&mut object, &converge());
        assert_eq!(
            object["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "nginx", "env": [{"name": "MODE", "value": "m"}]}])
        );
        let mut object = deployment();
        let label = set(json!({"f:metadata": {"f:labels": {"f:app": {}}}}));
        label.remove_from(&mut object, &FieldSet::default());
        assert_eq!(object["metadata"], json!({"labels": {}}));
    }

    #[test]
    fn an_element_someone_else_still_owns_part_of_stays() {
        let mut object = deployment();
        let kept = set(
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"sidecar\"}": {"f:image": {}}}}}}}),
        );
        kubectl_patch().remove_from(&mut object, &kept);
        let sidecar = &object["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(sidecar, &json!({"name": "sidecar", "image": "busybox"}));
    }
}
