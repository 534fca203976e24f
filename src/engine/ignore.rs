//! Ignore rules: fields another controller legitimately owns (an HPA's
//! `/spec/replicas`), which converge must neither report as drift nor write back.
//! Argo CD calls them ignoreDifferences, Flux drift ignore rules.
//!
//! An ignored field of an existing object is left out of the comparison (both
//! sides), and out of what is applied: it keeps the live value where converge owns
//! it (an apply that stopped declaring it would delete it) and is not sent at all
//! where someone else owns it (they keep it, and the managedFields proof still
//! holds). A new object is created as written.

use crate::engine::fieldset::FieldSet;
use crate::manifest::ObjectRef;
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// A JSON pointer (RFC 6901) to a field inside an object, e.g. `/spec/replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("{0:?} is not a JSON pointer to a field: it starts with `/`, e.g. /spec/replicas")]
    Pointer(String),
    #[error(
        "{0:?} is not an ignore rule: [KIND[/NAME | /NAMESPACE/NAME]:]POINTER, \
         e.g. Deployment:/spec/replicas or Deployment/shop/web:/spec/replicas"
    )]
    Rule(String),
}

impl FromStr for Pointer {
    type Err = IgnoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || IgnoreError::Pointer(text.to_string());
        let rest = text.strip_prefix('/').ok_or_else(invalid)?;
        let tokens: Vec<String> = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        if tokens.iter().any(String::is_empty) {
            return Err(invalid());
        }
        Ok(Pointer { tokens })
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", token.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// Which objects a rule covers; a part left unset matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `Deployment`, or `Deployment.apps` to name the group too (case-insensitive).
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Selector {
    fn matches(&self, object: &ObjectRef) -> bool {
        let kind = self.kind.as_deref().is_none_or(|kind| {
            let (kind, group) = kind.split_once('.').unwrap_or((kind, &object.group));
            kind.eq_ignore_ascii_case(&object.kind) && group.eq_ignore_ascii_case(&object.group)
        });
        let namespace =
            (self.namespace.as_ref()).is_none_or(|ns| object.namespace.as_ref() == Some(ns));
        kind && namespace && self.name.as_ref().is_none_or(|n| *n == object.name)
    }
}

/// Fields to ignore in the objects a selector picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRule {
    pub selector: Selector,
    pub paths: Vec<Pointer>,
}

impl FromStr for IgnoreRule {
    type Err = IgnoreError;

    /// The command-line form: `POINTER` (every object), `KIND:POINTER`,
    /// `KIND/NAME:POINTER` or `KIND/NAMESPACE/NAME:POINTER`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || IgnoreError::Rule(text.to_string());
        let (selector, pointer) = match text.starts_with('/') {
            true => ("", text),
            false => text.split_once(':').ok_or_else(invalid)?,
        };
        let parts: Vec<Option<String>> = selector
            .split('/')
            .map(|part| (!part.is_empty()).then(|| part.to_string()))
            .collect();
        let selector = match parts.as_slice() {
            [None] if selector.is_empty() => Selector::default(),
            [kind @ Some(_)] => Selector {
                kind: kind.clone(),
                ..Selector::default()
            },
            [kind @ Some(_), name @ Some(_)] => Selector {
                kind: kind.clone(),
                namespace: None,
                name: name.clone(),
            },
            [kind @ Some(_), namespace @ Some(_), name @ Some(_)] => Selector {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            },
            _ => return Err(invalid()),
        };
        Ok(IgnoreRule {
            selector,
            paths: vec![pointer.parse()?],
        })
    }
}

/// A source's ignore rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRules(pub Vec<IgnoreRule>);

impl IgnoreRules {
    /// The fields ignored in `object`.
    pub fn for_object(&self, object: &ObjectRef) -> Ignored {
        let paths = self
            .0
            .iter()
            .filter(|rule| rule.selector.matches(object))
            .flat_map(|rule| rule.paths.iter().cloned())
            .collect();
        Ignored(paths)
    }
}

/// The ignored fields of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored(Vec<Pointer>);

impl Ignored {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes the ignored fields from `object` (each side of a diff).
    pub fn mask(&self, object: &mut Value) {
        for pointer in &self.0 {
            if let Some((last, parent)) = pointer.tokens.split_last() {
                match walk_mut(object, parent) {
                    Some(Value::Object(map)) => {
                        map.shift_remove(last);
                    }
                    Some(Value::Array(items)) => {
                        if let Some(i) = index(last).filter(|i| *i < items.len()) {
                            items.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The manifest `body` as it is applied to the existing `live` object, of
    /// which converge owns `ours` (`None`: not known): each ignored field takes its
    /// live value where converge owns it (or may), and is left out everywhere else.
    pub fn payload(&self, body: &mut Map<String, Value>, live: &Value, ours: Option<&FieldSet>) {
        for pointer in &self.0 {
            let value = walk(live, &pointer.tokens);
            let owned = ours.is_none_or(|ours| {
                owned_path(live, &pointer.tokens, &[ours])
                    .is_some_and(|path| contains_node(ours, &path))
            });
            let mut root = Value::Object(std::mem::take(body));
            match (value, owned) {
                (Some(value), true) => put(&mut root, &pointer.tokens, value.clone()),
                _ => Ignored(vec![pointer.clone()]).mask(&mut root),
            }
            if let Value::Object(map) = root {
                *body = map;
            }
        }
    }

    /// The ignored fields as managedFields paths of `live`, as far as `owners`'
    /// field sets name its list elements: what a takeover must leave alone.
    pub fn field_set(&self, live: &Value, owners: &[&FieldSet]) -> FieldSet {
        let mut set = FieldSet::default();
        for pointer in &self.0 {
            if let Some(path) = owned_path(live, &pointer.tokens, owners) {
                set.union(&FieldSet::path(&path));
            }
        }
        set
    }
}

fn index(token: &str) -> Option<usize> {
    token.parse().ok()
}

fn walk<'a>(value: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(value, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(index(token)?),
        _ => None,
    })
}

fn walk_mut<'a>(value: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(value, |value, token| match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(index(token)?),
        _ => None,
    })
}

/// Sets the field at `tokens`, creating the maps on the way; an index into a
/// list must exist.
fn put(root: &mut Value, tokens: &[String], value: Value) {
    let Some((last, parent)) = tokens.split_last() else {
        return;
    };
    let mut node = root;
    for token in parent {
        node = match node {
            Value::Object(map) => map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match index(token).and_then(|i| items.get_mut(i)) {
                Some(item) => item,
                None => return,
            },
            _ => return,
        };
    }
    match node {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            if let Some(item) = index(last).and_then(|i| items.get_mut(i)) {
                *item = value;
            }
        }
        _ => {}
    }
}

/// The managedFields keys of the field at `tokens` in `live`: `f:` for map keys;
/// a list element is named by whichever `k:`/`v:` key of `owners` matches it.
fn owned_path(live: &Value, tokens: &[String], owners: &[&FieldSet]) -> Option<Vec<String>> {
    let mut path: Vec<String> = Vec::with_capacity(tokens.len());
    let mut value = live;
    for token in tokens {
        let key = match value {
            Value::Array(items) => {
                let item = items.get(index(token)?)?;
                let nodes = owners.iter().filter_map(|set| node_at(set, &path));
                element_key(nodes, item)?
            }
            _ => format!("f:{token}"),
        };
        value = walk(value, std::slice::from_ref(token))?;
        path.push(key);
    }
    Some(path)
}

fn node_at<'a>(set: &'a FieldSet, path: &[String]) -> Option<&'a FieldSet> {
    path.iter().try_fold(set, |node, key| node.child(key))
}

fn contains_node(set: &FieldSet, path: &[String]) -> bool {
    node_at(set, path).is_some()
}

/// The `k:`/`v:` key among the children of `nodes` that names `item`.
fn element_key<'a>(nodes: impl Iterator<Item = &'a FieldSet>, item: &Value) -> Option<String> {
    nodes
        .flat_map(|node| node.keys())
        .find(|key| element_names(key, item))
        .map(str::to_string)
}

fn element_names(key: &str, item: &Value) -> bool {
    if let Some(json) = key.strip_prefix("k:") {
        return match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(fields)) => fields.iter().all(|(k, v)| item.get(k) == Some(v)),
            _ => false,
        };
    }
    key.strip_prefix("v:")
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .is_some_and(|value| value == *item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(name: &str, namespace: &str) -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    fn rules(texts: &[&str]) -> IgnoreRules {
        IgnoreRules(texts.iter().map(|t| t.parse().expect("a rule")).collect())
    }

    #[test]
    fn pointers_parse_and_print_with_escapes() {
        let pointer: Pointer = "/metadata/annotations/example.com~1owner".parse().unwrap();
        assert_eq!(
            pointer.tokens,
            ["metadata", "annotations", "example.com/owner"]
        );
        assert_eq!(
            pointer.to_string(),
            "/metadata/annotations/example.com~1owner"
        );
        for bad in ["", "spec/replicas", "/", "/spec//replicas"] {
            assert!(bad.parse::<Pointer>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn command_line_rules_select_by_kind_name_and_namespace() {
        let web = deployment("web", "shop");
        let api = deployment("api", "shop");
        for (rule, picks_web, picks_api) in [
            ("/spec/replicas", true, true),
            ("Deployment:/spec/replicas", true, true),
            ("deployment.apps:/spec/replicas", true, true),
            ("Deployment.batch:/spec/replicas", false, false),
            ("StatefulSet:/spec/replicas", false, false),
            ("Deployment/web:/spec/replicas", true, false),
            ("Deployment/shop/web:/spec/replicas", true, false),
            ("Deployment/other/web:/spec/replicas", false, false),
        ] {
            let rules = rules(&[rule]);
            assert_eq!(!rules.for_object(&web).is_empty(), picks_web, "{rule}");
            assert_eq!(!rules.for_object(&api).is_empty(), picks_api, "{rule}");
        }
        for bad in [
            "Deployment",
            "Deployment:spec",
            "a/b/c/d:/x",
            "Deployment//web:/x",
        ] {
            assert!(bad.parse::<IgnoreRule>().is_err(), "{bad:?}");
        }
    }

    fn ours_with_replicas() -> FieldSet {
        FieldSet::from_fields_v1(&json!({"f:spec": {"f:replicas": {}, "f:template": {}}})).unwrap()
    }

    #[test]
    fn an_ignored_field_keeps_the_live_value_where_we_own_it() {
        let ignored = rules(&["/spec/replicas"]).for_object(&deployment("web", "shop"));
        let live = json!({"spec": {"replicas": 5, "template": {}}});
        let mut body = json!({"spec": {"replicas": 2, "template": {}}});
        let body_map = body.as_object_mut().unwrap();
        ignored.payload(body_map, &live, Some(&ours_with_replicas()));
        assert_eq!(body["spec"]["replicas"], 5);

        let theirs = FieldSet::from_fields_v1(&json!({"f:spec": {"f:template": {}}})).unwrap();
        let body_map = body.as_object_mut().unwrap();
        ignored.payload(body_map, &live, Some(&theirs));
        assert_eq!(body, json!({"spec": {"template": {}}}), "left to its owner");
    }

    #[test]
    fn masking_removes_fields_and_list_elements_by_index() {
        let ignored = rules(&["/spec/replicas", "/spec/list/0", "/spec/absent/x"])
            .for_object(&deployment("web", "shop"));
        let mut value = json!({"spec": {"replicas": 5, "list": ["a", "b"], "keep": 1}});
        ignored.mask(&mut value);
        assert_eq!(value, json!({"spec": {"list": ["b"], "keep": 1}}));
    }

    #[test]
    fn list_indices_resolve_to_managed_fields_keys() {
        let ignored = rules(&["/spec/containers/1/image"]).for_object(&deployment("w", "s"));
        let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}});
        let owners = FieldSet::from_fields_v1(&json!({"f:spec": {"f:containers": {
            "k:{\"name\":\"a\"}": {".": {}}, "k:{\"name\":\"b\"}": {".": {}, "f:image": {}}}}}))
        .unwrap();
        let set = ignored.field_set(&live, &[&owners]);
        let expected = FieldSet::path(&["f:spec", "f:containers", "k:{\"name\":\"b\"}", "f:image"]);
        assert_eq!(set, expected);
    }
}
