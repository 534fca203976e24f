//! One owner per object. An object whose live `applyset.kubernetes.io/part-of`
//! label names another ApplySet belongs to that source: two sources that both
//! declare it must not take it from each other at every reconcile (the fight Argo
//! CD warns of with its SharedResourceWarning).
//!
//! - Declared the same here (a Namespace two apps both list): it is `shared`,
//!   owned by the other source, and this source neither writes nor prunes it.
//! - Declared differently: the revision is refused before any write, naming the
//!   object, both sources and the file, as any rejected object is.
//! - `converge.dev/adopt: allowed` on the manifest, or `adopt` on the source
//!   (`--adopt`), moves it here once; the former owner then sees it as another's.
//!
//! Objects no ApplySet owns (created with kubectl) are adopted as before.

use super::{EngineError, api_error};
use crate::engine::applyset::{ApplySet, ID_LABEL, PART_OF_LABEL};
use crate::engine::diff;
use crate::engine::plan::{Desired, Evaluation};
use crate::kube::Meta;
use crate::kube::{ApiResource, Client, ListParams};
use crate::manifest::{Manifest, Problem};
use serde_json::Value;
use std::collections::BTreeMap;
use tracing::{info, warn};

/// `converge.dev/adopt: allowed` on a manifest: take the object from the ApplySet
/// that owns it.
pub const ADOPT_ANNOTATION: &str = "converge.dev/adopt";

/// Whether a source may take objects from other ApplySets (`adopt`, `--adopt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Adoption {
    /// Only objects annotated `converge.dev/adopt: allowed`.
    #[default]
    Annotated,
    /// Every object this source declares.
    Always,
}

/// What one desired object is to this source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// No other ApplySet owns it (or it does not exist).
    Free,
    /// Another owns it, and this source takes it over.
    Adopt { from: String },
    /// Another owns it, and it is declared the same here.
    Shared { owner: String },
    /// Another owns it, and it is declared differently here: the changed paths.
    Conflict { owner: String, paths: Vec<String> },
}

/// The ApplySet id a live object belongs to, when it is not `ours`.
fn foreign_id(live: &Value, ours: &str) -> Option<String> {
    let labels = live.labels()?;
    let id = labels.get(PART_OF_LABEL)?.as_str()?;
    (!id.is_empty() && id != ours).then(|| id.to_string())
}

fn adopts(manifest: &Manifest, adoption: Adoption) -> bool {
    let annotation = manifest
        .body
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .and_then(Value::as_str);
    adoption == Adoption::Always || annotation == Some("allowed")
}

/// Pure: the claim on one evaluated object, the other ApplySet given by its id.
pub(crate) fn claim(desired: &Desired, ours: &str, adoption: Adoption) -> Claim {
    let Some(owner) = desired.live.as_deref().and_then(|l| foreign_id(l, ours)) else {
        return Claim::Free;
    };
    if adopts(&desired.manifest, adoption) {
        return Claim::Adopt { from: owner };
    }
    let paths = match (&desired.dry_run, desired.live.as_deref()) {
        (Evaluation::Server(target), Some(live)) => differences(desired, live, target),
        (Evaluation::InSync, _) => Vec::new(),
        _ => vec!["(its fields)".into()],
    };
    match paths.is_empty() {
        true => Claim::Shared { owner },
        false => Claim::Conflict { owner, paths },
    }
}

/// The paths in which `target` (this source's dry-run) differs from `live`, the
/// ownership label aside.
fn differences(desired: &Desired, live: &Value, target: &Value) -> Vec<String> {
    let without_owner = |object: &Value| {
        let mut object = object.clone();
        if let Some(labels) = object
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(PART_OF_LABEL);
            if labels.is_empty() {
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.remove("labels");
                }
            }
        }
        object
    };
    let object = desired.manifest.object_ref();
    diff::diff_objects(&object, Some(&without_owner(live)), &without_owner(target))
        .map(|d| d.changed_paths)
        .unwrap_or_default()
}

/// Settles every desired object's claim: shared ones become
/// [`Evaluation::Shared`], conflicts refuse the revision (all of them at once).
pub(super) async fn settle(
    client: &Client,
    applyset: &ApplySet,
    source: &str,
    adoption: Adoption,
    desired: &mut [Desired],
) -> Result<(), EngineError> {
    let claims: Vec<Claim> = desired
        .iter()
        .map(|d| claim(d, &applyset.id, adoption))
        .collect();
    if claims.iter().all(|c| *c == Claim::Free) {
        return Ok(());
    }
    let names = owner_names(client, &claims).await;
    let name = |id: &String| names.get(id).cloned().unwrap_or_else(|| unnamed(id));
    let mut problems = Vec::new();
    for (d, claim) in desired.iter_mut().zip(claims) {
        let object = d.manifest.object_ref();
        match claim {
            Claim::Free => {}
            Claim::Adopt { from } => {
                info!(object = %object, from = %name(&from), "adopted from another ApplySet");
            }
            Claim::Shared { owner } => {
                info!(object = %object, owner = %name(&owner), "shared: owned by another source");
                d.dry_run = Evaluation::Shared(name(&owner));
            }
            Claim::Conflict { owner, paths } => problems.push(Problem {
                origin: d.manifest.origin.clone(),
                object: Some(object.to_string()),
                message: conflict_message(&name(&owner), source, &paths),
            }),
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(EngineError::Owned(problems)),
    }
}

fn conflict_message(owner: &str, source: &str, paths: &[String]) -> String {
    let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
    format!(
        "owned by {owner}, and {source:?} declares it differently ({}); two sources may not \
         own one object. Declare it the same in both (then {source:?} reports it as shared), \
         remove it from one of them, or move it to {source:?} with the annotation \
         {ADOPT_ANNOTATION}: allowed (or adopt = true on the source, --adopt on the command \
         line)",
        shown.join(", ")
    )
}

fn unnamed(id: &str) -> String {
    format!("another ApplySet ({id})")
}

/// `source "NAME" (ApplySet parent ConfigMap NS/converge-NAME)` for each owner id,
/// from its parent's `applyset.kubernetes.io/id` label (ids are hashes). An owner
/// that cannot be listed (no permission) is named by its id.
async fn owner_names(client: &Client, claims: &[Claim]) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for claim in claims {
        let id = match claim {
            Claim::Free => continue,
            Claim::Adopt { from: id } | Claim::Shared { owner: id } => id,
            Claim::Conflict { owner: id, .. } => id,
        };
        if names.contains_key(id) {
            continue;
        }
        let path = ApiResource::config_maps().path(None, None);
        let params = ListParams::labels(&format!("{ID_LABEL}={id}"));
        match client.list(&path, &params).await {
            Ok(list) => {
                if let Some(name) = list.items.first().and_then(parent_name) {
                    names.insert(id.clone(), name);
                }
            }
            Err(e) => warn!(error = %api_error(&applyset_ref(id), e), "cannot name the owner"),
        }
    }
    names
}

fn applyset_ref(id: &str) -> crate::manifest::ObjectRef {
    crate::manifest::ObjectRef {
        group: String::new(),
        kind: "ConfigMap".into(),
        namespace: None,
        name: format!("(ApplySet {id})"),
    }
}

fn parent_name(parent: &Value) -> Option<String> {
    let name = parent.name()?;
    let namespace = parent.namespace()?;
    let source = name.strip_prefix("converge-").unwrap_or(name);
    Some(format!(
        "source {source:?} (ApplySet parent ConfigMap {namespace}/{name})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Origin;
    use serde_json::json;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn cm(owner: &str, value: &str, annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "shared", "namespace": "ns",
                            "labels": {PART_OF_LABEL: owner}, "annotations": annotations},
               "data": {"value": value}})
    }

    fn desired(manifest: Value, live: Option<Value>) -> Desired {
        let target = manifest.clone();
        Desired::new(
            Manifest {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                body: manifest.as_object().cloned().unwrap_or_default(),
                origin: Origin {
                    file: PathBuf::from("cm.yaml"),
                    line: 1,
                },
            },
            live.map(Arc::new),
            Evaluation::Server(target),
        )
    }

    #[test]
    fn an_object_of_another_applyset_is_shared_when_declared_the_same() {
        let ours = cm("ours", "one", json!({}));
        let theirs = cm("theirs", "one", json!({}));
        let d = desired(ours.clone(), Some(theirs));
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Shared {
                owner: "theirs".into()
            }
        );
        assert_eq!(
            claim(&d, "ours", Adoption::Always),
            Claim::Adopt {
                from: "theirs".into()
            }
        );
        let d = desired(ours.clone(), Some(cm("ours", "two", json!({}))));
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Free,
            "our own"
        );
        let d = desired(ours, None);
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Free,
            "absent"
        );
    }

    #[test]
    fn declared_differently_it_is_a_conflict_unless_annotated_for_adoption() {
        let theirs = cm("theirs", "one", json!({}));
        let d = desired(cm("ours", "two", json!({})), Some(theirs.clone()));
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Conflict {
                owner: "theirs".into(),
                paths: vec!["data.value".into()]
            }
        );
        let adopting = cm("ours", "two", json!({ADOPT_ANNOTATION: "allowed"}));
        let d = desired(adopting, Some(theirs));
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Adopt {
                from: "theirs".into()
            }
        );
        let unowned = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "shared", "namespace": "ns"}, "data": {"value": "x"}});
        let d = desired(cm("ours", "two", json!({})), Some(unowned));
        assert_eq!(
            claim(&d, "ours", Adoption::Annotated),
            Claim::Free,
            "created by kubectl: adopted as before"
        );
    }

    #[test]
    fn the_message_names_both_sources_and_the_ways_out() {
        let owner =
            parent_name(&json!({"metadata": {"name": "converge-app-a", "namespace": "ops"}}))
                .expect("a name");
        assert_eq!(
            owner,
            "source \"app-a\" (ApplySet parent ConfigMap ops/converge-app-a)"
        );
        let message = conflict_message(&owner, "app-b", &["data.value".into()]);
        assert!(
            message.starts_with("owned by source \"app-a\""),
            "{message}"
        );
        assert!(message.contains("\"app-b\" declares it differently (data.value)"));
        assert!(message.contains("converge.dev/adopt: allowed"));
    }
}
