//! Two revisions compared offline, object by object: what `--base REF` shows
//! without a cluster.
//!
//! The manifests of each revision are matched by identity (group, kind,
//! namespace, name). An object only in the head is created, only in the base
//! pruned (or kept, when prune is off or the object says `converge.dev/prune:
//! disabled`), in both and different changed. The comparison is the engine's own
//! ([`crate::engine::diff`]): normalised, Secret values masked pairwise, semantic
//! equality. Without the server, defaults and admission are not applied, so an
//! object that differs only in a field the server defaults shows as changed here
//! and not in the live diff: the price of needing no cluster.
//!
//! A namespaced object without a namespace gets `options.namespace`, as it would
//! when applied; which kinds are cluster-scoped is known for the built-in kinds
//! ([`CLUSTER_SCOPED`]), and custom resources are compared as written.

use super::{Change, ChangeAction, HookRun, Preview};
use crate::engine::applyset::prune_disabled;
use crate::engine::diff::{ObjectDiff, diff_objects, mask_secret_pair, normalize, to_yaml};
use crate::engine::order::{self, Disposition, Placement, SyncKind};
use crate::engine::plan::apply_rank;
use crate::manifest::{Manifest, ObjectRef};
use serde_json::Value;
use similar::TextDiff;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Built-in kinds that are not namespaced (group, kind).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("apiregistration.k8s.io", "APIService"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

/// How the revisions are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareOptions {
    /// The namespace of namespaced objects that name none.
    pub namespace: String,
    /// Whether objects that left the revision are pruned (else kept).
    pub prune: Prune,
}

/// Whether objects that left the revision are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    Enabled,
    Disabled,
}

/// A manifest refused before it could be compared.
#[derive(Debug, thiserror::Error)]
#[error("{object} ({origin}): {message}")]
pub struct CompareError {
    pub object: String,
    pub origin: String,
    pub message: String,
}

struct Entry {
    object: ObjectRef,
    label: String,
    body: Value,
    placement: Placement,
}

/// What merging `head` over `base` would do, object by object. Hooks are listed
/// when something is written; Helm's install hooks only when `base` is empty.
pub fn compare(
    base: &[Manifest],
    head: &[Manifest],
    options: &CompareOptions,
) -> Result<Preview, CompareError> {
    let (base_objects, _) = entries(base, &options.namespace)?;
    let (head_objects, head_hooks) = entries(head, &options.namespace)?;
    let mut preview = Preview::default();
    let mut written: Vec<&Entry> = head_objects.values().collect();
    written.sort_by_key(|e| (e.placement.wave, rank(&e.object), e.label.clone()));
    for entry in written {
        let before = base_objects.get(&entry.label);
        let Some(diff) = diff_objects(&entry.object, before.map(|b| &b.body), &entry.body) else {
            preview.unchanged += 1;
            continue;
        };
        preview.changes.push(Change {
            object: entry.label.clone(),
            action: match before {
                Some(_) => ChangeAction::Change,
                None => ChangeAction::Create,
            },
            stage: format!("wave {}", entry.placement.wave),
            diff: Some(relabel(diff)),
        });
    }
    let mut gone: Vec<&Entry> = base_objects
        .values()
        .filter(|e| !head_objects.contains_key(&e.label))
        .collect();
    gone.sort_by_key(|e| {
        (
            std::cmp::Reverse(e.placement.wave),
            std::cmp::Reverse(rank(&e.object)),
            e.label.clone(),
        )
    });
    for entry in gone {
        let kept = options.prune == Prune::Disabled || prune_disabled(&entry.body);
        preview.changes.push(Change {
            object: entry.label.clone(),
            action: match kept {
                true => ChangeAction::Keep,
                false => ChangeAction::Prune,
            },
            stage: format!("wave {}", entry.placement.wave),
            diff: (!kept).then(|| removal(entry)),
        });
    }
    if preview.has_changes() {
        let sync = match base_objects.is_empty() {
            true => SyncKind::Install,
            false => SyncKind::Upgrade,
        };
        let hooks: Vec<HookRun> = head_hooks
            .into_iter()
            .filter_map(|(label, placement)| {
                let runs = placement.hook.as_ref()?.at(sync)?;
                let placement = Placement {
                    hook: Some(runs),
                    ..placement
                };
                HookRun::of(label, &placement)
            })
            .collect();
        preview.hooks = hooks;
        preview.sort_hooks();
    }
    Ok(preview)
}

fn rank(object: &ObjectRef) -> u16 {
    apply_rank(&object.group, &object.kind)
}

type Objects = BTreeMap<String, Entry>;
type Hooks = Vec<(String, Placement)>;

/// The objects of one revision by label, and its hooks; skipped objects (Argo CD's
/// `Skip`, Helm test hooks) left out.
fn entries(manifests: &[Manifest], namespace: &str) -> Result<(Objects, Hooks), CompareError> {
    let mut objects = Objects::new();
    let mut hooks = Hooks::new();
    for manifest in manifests {
        let scoped = CLUSTER_SCOPED.contains(&(manifest.group(), manifest.kind.as_str()));
        let manifest = match scoped {
            true => manifest.clone(),
            false => manifest.clone().with_default_namespace(namespace),
        };
        let object = manifest.object_ref();
        let label = match manifest.generate_name() {
            Some(prefix) if object.name.is_empty() => format!("{object}{prefix}*"),
            _ => object.to_string(),
        };
        let metadata = manifest.body.get("metadata").and_then(Value::as_object);
        let placement = match order::role(metadata) {
            Ok(Disposition::Placed(placement)) => placement,
            Ok(Disposition::Skipped(_)) => continue,
            Err(message) => {
                return Err(CompareError {
                    object: label,
                    origin: manifest.origin.to_string(),
                    message,
                });
            }
        };
        if placement.is_hook() {
            hooks.push((label, placement));
            continue;
        }
        let body = Value::Object(manifest.body);
        objects.insert(
            label.clone(),
            Entry {
                object,
                label,
                body,
                placement,
            },
        );
    }
    Ok((objects, hooks))
}

/// The engine's diff headed `base/…` and `head/…` instead of `live/…` and
/// `desired/…`: both sides are revisions here.
fn relabel(mut diff: ObjectDiff) -> ObjectDiff {
    let object = diff.object.to_string();
    let rest = diff
        .unified
        .splitn(3, '\n')
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let old = match diff.unified.starts_with("--- /dev/null") {
        true => "/dev/null".to_string(),
        false => format!("base/{object}"),
    };
    diff.unified = format!("--- {old}\n+++ head/{object}\n{rest}");
    diff
}

/// The diff of an object that leaves: every line removed, Secret values masked.
fn removal(entry: &Entry) -> ObjectDiff {
    let (before, _) = mask_secret_pair(&normalize(&entry.body), &Value::Null);
    let text = to_yaml(&before);
    let mut unified = format!("--- base/{}\n+++ /dev/null\n", entry.object);
    let diff = TextDiff::from_lines(text.as_str(), "");
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let _ = write!(unified, "{hunk}");
    }
    let changed_paths = before
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ObjectDiff {
        object: entry.object.clone(),
        unified,
        changed_paths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;
    use std::path::Path;

    fn parse(text: &str) -> Vec<Manifest> {
        parse_str(text, Path::new("test.yaml")).expect("valid manifests")
    }

    fn options(prune: Prune) -> CompareOptions {
        CompareOptions {
            namespace: "shop".into(),
            prune,
        }
    }

    const BASE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {replicas: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2-old}
";

    const HEAD: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {replicas: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2-new}
---
apiVersion: batch/v1
kind: Job
metadata:
  generateName: migrate-
  annotations: {converge.dev/hook: pre-sync}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: busybox}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke
  annotations: {helm.sh/hook: test}
spec: {containers: [{name: t, image: busybox}]}
";

    fn listed(preview: &Preview) -> Vec<(String, ChangeAction)> {
        preview
            .changes
            .iter()
            .map(|c| (c.object.clone(), c.action))
            .collect()
    }

    #[test]
    fn objects_are_matched_by_identity() {
        let preview =
            compare(&parse(BASE), &parse(HEAD), &options(Prune::Enabled)).expect("comparable");
        assert_eq!(
            listed(&preview),
            [
                ("Secret/shop/creds".to_string(), ChangeAction::Change),
                ("ConfigMap/shop/settings".to_string(), ChangeAction::Create),
                ("Deployment.apps/shop/web".to_string(), ChangeAction::Change),
                ("Service/shop/web".to_string(), ChangeAction::Prune),
            ]
        );
        // The Namespace is cluster-scoped and unchanged; the test hook never runs.
        assert_eq!(preview.unchanged, 1);
        assert_eq!(preview.hooks.len(), 1, "{:?}", preview.hooks);
        assert_eq!(preview.hooks[0].object, "Job.batch/shop/migrate-*");
        assert_eq!(preview.hooks[0].when(), "pre-sync, weight 0");
        let deployment = preview.changes[2].diff.as_ref().expect("a diff");
        assert!(
            deployment
                .unified
                .starts_with("--- base/Deployment.apps/shop/web\n+++ head/")
        );
        assert!(
            deployment
                .unified
                .contains("-  replicas: 1\n+  replicas: 3")
        );
        let service = preview.changes[3].diff.as_ref().expect("a removal diff");
        assert!(service.unified.contains("+++ /dev/null"));
        assert!(service.unified.contains("-  ports:"));
    }

    #[test]
    fn secret_values_never_show() {
        let preview =
            compare(&parse(BASE), &parse(HEAD), &options(Prune::Enabled)).expect("comparable");
        let all = serde_json::to_string(&preview.json()).expect("json");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(all.contains("*** (after)"));
        // A pruned Secret is masked too.
        let gone = compare(&parse(BASE), &[], &options(Prune::Enabled)).expect("comparable");
        let all = serde_json::to_string(&gone.json()).expect("json");
        assert!(!all.contains("hunter2"), "{all}");
    }

    #[test]
    fn without_prune_removed_objects_are_kept() {
        let preview =
            compare(&parse(BASE), &parse(HEAD), &options(Prune::Disabled)).expect("comparable");
        let service = preview.changes.last().expect("changes");
        assert_eq!(service.action, ChangeAction::Keep);
        assert!(service.diff.is_none());
    }

    #[test]
    fn the_same_revision_changes_nothing_and_runs_no_hook() {
        let preview =
            compare(&parse(HEAD), &parse(HEAD), &options(Prune::Enabled)).expect("comparable");
        assert!(!preview.has_changes());
        assert!(preview.changes.is_empty() && preview.hooks.is_empty());
        assert_eq!(preview.unchanged, 4);
    }

    #[test]
    fn a_bad_annotation_is_refused_with_its_object() {
        let bad = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations: {converge.dev/hook: sometimes}\n",
        );
        let error = compare(&[], &bad, &options(Prune::Enabled)).expect_err("refused");
        assert!(error.to_string().contains("ConfigMap/shop/x"), "{error}");
    }
}
