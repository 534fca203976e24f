//! What a run remembers of each object for the next one: the manifest's hash, the
//! live resourceVersion and the server's dry-run answer. With it, an object whose
//! manifest and live version are unchanged costs the daemon no request, and a
//! status-only update (a controller's echo) is told apart from drift.

use crate::engine::diff;
use crate::engine::order;
use crate::engine::plan::{Desired, Evaluation, Plan, StepAction};
use crate::kube::Meta;
use crate::manifest::{Manifest, ObjectRef};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What one object looked like at the end of a run, so that the next run can skip
/// its dry-run when neither the manifest nor the live object changed since.
#[derive(Debug, Clone)]
pub struct Memo {
    pub(super) desired: u64,
    pub(super) live_version: String,
    /// [`diff::state_digest`] of the live object: what a status-only update keeps.
    pub(super) live_digest: u64,
    /// The server's dry-run result; `None` when it equals the live object.
    pub(super) dry_run: Option<Arc<Value>>,
}

impl Memo {
    /// `manifest` is known to be applied as `live`: its own dry-run.
    fn in_sync(manifest: &Manifest, live: &Value) -> Self {
        Memo {
            desired: desired_hash(manifest),
            live_version: live_version(Some(live)),
            live_digest: diff::state_digest(live),
            dry_run: None,
        }
    }

    /// Whether `resource_version` is the live version this memo was made from.
    pub fn knows(&self, resource_version: Option<&str>) -> bool {
        resource_version.is_some_and(|v| v == self.live_version)
    }

    /// Whether `live` (a newer version of the object, from a watch) differs from
    /// what the run ended with in more than noise. A status-only update is not
    /// drift: it is absorbed, so the next run can reuse this memo without a request.
    pub fn absorb(&mut self, live: Option<&Value>) -> bool {
        let version = live_version(live);
        if version == self.live_version {
            return false;
        }
        if live.map(diff::state_digest) == Some(self.live_digest) {
            self.live_version = version;
            return false;
        }
        true
    }
}

pub(super) fn desired_hash(manifest: &Manifest) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&manifest.body)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Whether a dry-run answer was computed from a newer version of the object than
/// `live` (a dry run does not bump resourceVersion, so equal versions mean the
/// same base).
pub(super) fn is_newer_base(answer: &Value, live: Option<&Value>) -> bool {
    let base = live_version(Some(answer));
    !base.is_empty() && base != live_version(live)
}

pub(super) fn live_version(live: Option<&Value>) -> String {
    live.and_then(|l| l.resource_version())
        .unwrap_or_default()
        .to_string()
}

/// A memo entry for every named object the server evaluated (or that the previous
/// memo still vouches for). Not for an object to re-create or whose kubectl-family
/// edits must be taken over: what makes that so is not in the answer, so the next
/// run evaluates it again.
pub(super) fn memo_seed(
    desired: &[Desired],
    previous: Option<&HashMap<ObjectRef, Memo>>,
) -> HashMap<ObjectRef, Memo> {
    desired
        .iter()
        .filter(|d| !d.manifest.name().is_empty() && d.takeover.is_none())
        .filter(|d| !order::placement_of(&d.manifest.body).is_hook())
        .filter_map(|d| {
            let object = d.manifest.object_ref();
            let memo = match &d.dry_run {
                Evaluation::Server(dry_run) => Memo {
                    desired: desired_hash(&d.manifest),
                    live_version: live_version(d.live.as_deref()),
                    live_digest: d
                        .live
                        .as_deref()
                        .map(diff::state_digest)
                        .unwrap_or_default(),
                    dry_run: Some(Arc::new(dry_run.clone())),
                },
                Evaluation::InSync => match previous.and_then(|p| p.get(&object)) {
                    Some(memo) => memo.clone(),
                    // Proven in sync from managedFields: the live object is the answer.
                    None => Memo::in_sync(&d.manifest, d.live.as_deref()?),
                },
                Evaluation::Deferred
                | Evaluation::Recreate(_)
                | Evaluation::Completed
                | Evaluation::Shared(_) => {
                    return None;
                }
            };
            Some((object, memo))
        })
        .collect()
}

/// Unchanged objects' dry-runs equal the live object: keep no copy of them.
pub(super) fn forget_unchanged_dry_runs(plan: &Plan, memo: &mut HashMap<ObjectRef, Memo>) {
    for step in plan
        .steps
        .iter()
        .filter(|s| s.action == StepAction::Unchanged)
    {
        if let Some(entry) = memo.get_mut(&step.object) {
            entry.dry_run = None;
        }
    }
}

/// After writing, the server's answer is the live object (and its own dry-run).
pub(super) fn remember_writes(
    plan: &Plan,
    written: Vec<(ObjectRef, Value)>,
    memo: &mut HashMap<ObjectRef, Memo>,
) {
    let manifests: HashMap<&ObjectRef, &Manifest> = plan
        .steps
        .iter()
        .filter_map(|s| Some((&s.object, s.manifest.as_ref()?)))
        .collect();
    for (object, live) in written {
        if let Some(manifest) = manifests.get(&object) {
            memo.insert(object, Memo::in_sync(manifest, &live));
        }
    }
    for step in plan.steps.iter().filter(|s| s.action == StepAction::Prune) {
        memo.remove(&step.object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use serde_json::json;
    use std::path::Path;

    fn configmap_memo() -> (Memo, Value) {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";
        let manifest = manifest::parse_str(text, Path::new("a.yaml")).expect("valid")[0].clone();
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"},
            "data": {"k": "v"}});
        (Memo::in_sync(&manifest, &live), live)
    }

    #[test]
    fn a_memo_knows_its_version_and_absorbs_noise_but_not_drift() {
        let (mut memo, live) = configmap_memo();
        assert!(memo.knows(Some("7")));
        assert!(!memo.knows(Some("8")) && !memo.knows(None));

        let mut noise = live.clone();
        noise["metadata"]["resourceVersion"] = json!("8");
        noise["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
        assert!(!memo.absorb(Some(&noise)), "bookkeeping only: not drift");
        assert!(
            memo.knows(Some("8")),
            "the absorbed version is the known one"
        );

        let mut edited = live;
        edited["metadata"]["resourceVersion"] = json!("9");
        edited["data"]["k"] = json!("changed");
        assert!(memo.absorb(Some(&edited)));
        assert!(memo.absorb(None), "deleted");
    }
}
