//! The requests that write, or dry-run a write: server-side apply (create for a
//! `generateName`), the managedFields takeover around it, re-create, delete and
//! prune; and how a refusal reads (the manifest's fault, or the server's for now).
//! Every stage of a run (`execute`, `sequence`, `lookup`, `evaluate`) sends through
//! here, so none of them imports another for its requests.

use super::{CONCURRENCY, EngineError, FIELD_MANAGER, api_error};
use crate::engine::applyset::ApplySet;
use crate::engine::diff::secret_texts;
use crate::engine::plan;
use crate::engine::plan::{Plan, Step, StepAction};
use crate::engine::takeover::Takeover;
use crate::kube::Meta;
use crate::kube::{
    ApiResource, Client, DeleteParams, Discovery, Error as KubeError, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use crate::manifest::{Manifest, ObjectRef, Origin, Problem};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// How long a re-create waits for the old object (and, foreground, its dependents)
/// to be gone.
const RECREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Attempts of a managedFields patch pinned to a resourceVersion that controllers
/// keep moving (each after reading the object again).
const PINNED_ATTEMPTS: u32 = 5;

/// Deletes one object if it still has `uid`.
pub(super) async fn delete(
    client: &Client,
    discovery: &Discovery,
    object: &ObjectRef,
    uid: String,
) -> Result<(), EngineError> {
    let path = object_path(discovery, object)?;
    let params = DeleteParams {
        propagation: PropagationPolicy::Background,
        preconditions: Some(Preconditions { uid }),
    };
    match client.delete(&path, &params).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(api_error(object, e)),
    }
}

pub(super) fn group_by_rank<'a>(steps: &[&'a Step]) -> Vec<Vec<&'a Step>> {
    let mut groups: BTreeMap<u16, Vec<&Step>> = BTreeMap::new();
    for step in steps {
        groups
            .entry(plan::apply_rank(&step.object.group, &step.object.kind))
            .or_default()
            .push(step);
    }
    groups.into_values().collect()
}

pub(super) fn parent_path(applyset: &ApplySet) -> String {
    ApiResource::config_maps().path(Some(&applyset.namespace), Some(&applyset.parent_name))
}

/// Server-side apply as converge, taking over fields others set.
pub(super) fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies (or, for generateName objects, creates) the steps
/// concurrently; returns the server's answer for each.
pub(super) async fn apply_all(
    client: &Client,
    discovery: &Discovery,
    steps: &[&Step],
) -> Result<Vec<(ObjectRef, Value)>, EngineError> {
    let written: Vec<Option<(ObjectRef, Value)>> = stream::iter(0..steps.len())
        .map(|i| apply_one(client, discovery, steps[i]).boxed())
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(written.into_iter().flatten().collect())
}

async fn apply_one(
    client: &Client,
    discovery: &Discovery,
    step: &Step,
) -> Result<Option<(ObjectRef, Value)>, EngineError> {
    let Some(manifest) = &step.manifest else {
        return Ok(None);
    };
    if step.action == StepAction::Recreate {
        delete_for_recreate(client, discovery, step).await?;
    }
    let taken = match &step.takeover {
        Some(takeover) => take_over(client, discovery, step, takeover).await?,
        None => None,
    };
    let live = match send(client, discovery, manifest, false).await {
        Ok(live) => live,
        Err(error) => {
            if let Some((takeover, version)) = taken {
                give_back(client, discovery, step, &takeover, version).await;
            }
            return Err(api_error(&step.object, error));
        }
    };
    info!(object = %step.object, action = %step.action, "applied");
    Ok(Some((step.object.clone(), live)))
}

/// The managedFields surgery before an apply: the kubectl family's fields become
/// converge's, so that the apply removes what the manifest does not declare. The
/// patch is pinned to the version read; when a controller moved the object on
/// since (a Deployment's status), it is computed again from a fresh copy. Returns
/// what was sent, and the resourceVersion it left.
async fn take_over(
    client: &Client,
    discovery: &Discovery,
    step: &Step,
    takeover: &Takeover,
) -> Result<Option<(Takeover, String)>, EngineError> {
    let path = object_path(discovery, &step.object)?;
    let mut takeover = takeover.clone();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.patch_json(&path, takeover.patch()).await {
            Ok(answer) => {
                info!(object = %step.object, "took over the kubectl family's fields");
                return Ok(Some((
                    takeover,
                    answer.resource_version().unwrap_or_default().to_string(),
                )));
            }
            Err(e) if e.is_conflict() && attempt < PINNED_ATTEMPTS => {
                let live = client.get(&path).await;
                match takeover.again(&live.map_err(|e| api_error(&step.object, e))?) {
                    Some(again) => takeover = again,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(api_error(&step.object, e)),
        }
    }
}

/// Puts the managedFields back after the apply that followed a takeover failed:
/// the refused revision leaves the ownership as it was.
async fn give_back(
    client: &Client,
    discovery: &Discovery,
    step: &Step,
    takeover: &Takeover,
    version: String,
) {
    let Ok(path) = object_path(discovery, &step.object) else {
        return;
    };
    let mut version = version;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let restored = client.patch_json(&path, &takeover.restore(&version)).await;
        match restored {
            Ok(_) => return,
            Err(e) if e.is_conflict() && attempt < PINNED_ATTEMPTS => {
                match client.get(&path).await {
                    Ok(live) => version = live.resource_version().unwrap_or_default().to_string(),
                    Err(_) => return,
                }
            }
            Err(error) => {
                warn!(object = %step.object, %error, "could not give the kubectl family's fields back");
                return;
            }
        }
    }
}

/// Deletes the object a re-create replaces (its uid as precondition; foreground,
/// so its dependents go first) and waits until it is gone.
async fn delete_for_recreate(
    client: &Client,
    discovery: &Discovery,
    step: &Step,
) -> Result<(), EngineError> {
    let object = &step.object;
    let path = object_path(discovery, object)?;
    let params = DeleteParams {
        propagation: PropagationPolicy::Foreground,
        preconditions: step.live_uid.clone().map(|uid| Preconditions { uid }),
    };
    match client.delete(&path, &params).await {
        Ok(()) => info!(object = %object, "deleted to be recreated"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(api_error(object, e)),
    }
    wait_until_gone(client, &path, object, step.live_uid.as_deref()).await
}

/// Waits until the object at `path` with `uid` is gone (a successor with another
/// uid does not count).
pub(super) async fn wait_until_gone(
    client: &Client,
    path: &str,
    object: &ObjectRef,
    uid: Option<&str>,
) -> Result<(), EngineError> {
    let deadline = tokio::time::Instant::now() + RECREATE_TIMEOUT;
    loop {
        let live = client
            .get_opt(path)
            .await
            .map_err(|e| api_error(object, e))?;
        let same = live.as_ref().and_then(|l| l.uid());
        if same.is_none() || same != uid {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(EngineError::NotDeleted(object.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn object_path(
    discovery: &Discovery,
    object: &ObjectRef,
) -> Result<String, EngineError> {
    let resource = discovery
        .resolve(&object.group, "", &object.kind)
        .map_err(|e| api_error(object, e))?;
    Ok(resource.path(object.namespace.as_deref(), Some(&object.name)))
}

/// Server-side applies one manifest (POSTs it when it only has a generateName),
/// for real or as a dry run.
pub(super) async fn send(
    client: &Client,
    discovery: &Discovery,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<Value, KubeError> {
    let resource = discovery.resolve(manifest.group(), manifest.version(), &manifest.kind)?;
    send_to(client, &resource, manifest, dry_run).await
}

/// [`send`] with the manifest's resource already resolved. A Secret's values are
/// redacted from the server's error (see [`KubeError::redacted`]).
pub(super) async fn send_to(
    client: &Client,
    resource: &ApiResource,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<Value, KubeError> {
    let body = Value::Object(manifest.body.clone());
    let ns = manifest.namespace();
    let answer = if manifest.name().is_empty() {
        let params = PostParams { dry_run };
        let collection = resource.path(ns, None);
        client.create(&collection, &body, &params).await
    } else {
        let path = resource.path(ns, Some(manifest.name()));
        let params = PatchParams {
            dry_run,
            ..apply_params()
        };
        client.apply(&path, &body, &params).await
    };
    answer.map_err(|e| e.redacted(&secret_texts(&body)))
}

/// Deletes the plan's prune steps in their (reverse dependency) order, each with
/// its uid as precondition so that only the planned object can go.
pub(super) async fn prune(
    client: &Client,
    discovery: &Discovery,
    plan: &Plan,
) -> Result<(), EngineError> {
    for step in plan.steps.iter().filter(|s| s.action == StepAction::Prune) {
        let object = &step.object;
        let path = object_path(discovery, object)?;
        let params = DeleteParams {
            propagation: PropagationPolicy::Background,
            preconditions: step.live_uid.clone().map(|uid| Preconditions { uid }),
        };
        match client.delete(&path, &params).await {
            Ok(()) => info!(object = %object, "pruned"),
            Err(e) if e.is_not_found() => info!(object = %object, "already gone"),
            Err(e) => return Err(api_error(object, e)),
        }
    }
    Ok(())
}

/// Why one object could not be evaluated: its own fault (collected, so that the
/// user sees every one), or the server's or the network's for now (the run stops and
/// is retried: a 503 is not a verdict on the manifest).
pub(super) enum Refusal {
    Rejected(Problem),
    Unavailable(EngineError),
}

impl Refusal {
    pub(super) fn of(object: ObjectRef, origin: &Origin, error: KubeError) -> Self {
        if error.is_transient() {
            return Refusal::Unavailable(api_error(&object, error));
        }
        Refusal::Rejected(Problem {
            object: Some(object.to_string()),
            origin: origin.clone(),
            message: error.to_string(),
        })
    }
}

/// The problems among `refusals`, or the first transient failure.
pub(super) fn problems(
    refusals: impl Iterator<Item = Refusal>,
) -> Result<Vec<Problem>, EngineError> {
    refusals
        .map(|refusal| match refusal {
            Refusal::Rejected(problem) => Ok(problem),
            Refusal::Unavailable(error) => Err(error),
        })
        .collect()
}
