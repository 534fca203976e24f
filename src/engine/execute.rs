//! Carrying out a plan: the ApplySet parent before its members (KEP-3659),
//! first-stage objects (CRDs, Namespaces) and the wait until CRDs are Established,
//! the deferred dry-runs that needed them, everything else by kind rank, then
//! prunes.

use super::desired_kinds;
use super::sequence::{Sequence, SyncLog};
use super::writes::{Refusal, apply_all, apply_params, delete, parent_path, problems, send};
use super::{CONCURRENCY, EngineError, Scope, StageProgress, api_error};
use crate::engine::applyset::ApplySet;
use crate::engine::plan;
use crate::engine::plan::{Desired, Evaluation, Plan, Step, StepAction};
use crate::engine::recreate;
use crate::health::HealthModel;
use crate::kube::GroupKind;
use crate::kube::Meta;
use crate::kube::{
    ApiResource, Client, DeleteParams, Discovery, Error as KubeError, PostParams, Preconditions,
    PropagationPolicy,
};
use crate::manifest::{Manifest, ObjectRef, Problem};
use futures::FutureExt;
use futures::stream::{self, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tracing::{info, warn};

const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);
/// The ApplySet a plan is carried out for, and how much of it.
pub(super) struct Target<'a> {
    pub(super) applyset: &'a ApplySet,
    pub(super) scope: &'a Scope,
    /// The kinds that may hold members (recorded in the parent first).
    pub(super) kinds: &'a BTreeSet<GroupKind>,
    /// How long each wave and hook may take to become healthy.
    pub(super) timeout: Duration,
    pub(super) progress: Option<&'a StageProgress>,
    /// What the parent recorded before this run; `None`: there was no parent.
    pub(super) recorded: Option<&'a BTreeSet<GroupKind>>,
    /// converge's own client, which watches what a stage waits for across namespaces.
    pub(super) reader: &'a Client,
    /// How the stages judge health.
    pub(super) health: HealthModel,
}

/// What carrying out a plan wrote, and how its stages went.
pub(super) struct Executed {
    /// The server's answer for every object applied (hooks aside).
    pub(super) written: Vec<(ObjectRef, Value)>,
    pub(super) log: SyncLog,
}

/// Carries out a plan: parent first (recording every kind that may hold members,
/// so that a run killed at any point leaves nothing a later run cannot find and
/// prune), stage one (Namespaces and CRDs, which everything else is validated
/// against), then the sync's stages (hooks, waves by kind rank, prunes; see
/// [`Sequence`]), and finally the parent narrowed to what is now desired. Only the
/// parent's own Namespace, when this run creates it, goes before the parent. A
/// targeted run leaves the parent alone and only writes objects of kinds it
/// already records.
pub(super) async fn execute(
    client: &Client,
    discovery: &Discovery,
    target: &Target<'_>,
    plan: &Plan,
    deferred: &BTreeSet<ObjectRef>,
) -> Result<Executed, EngineError> {
    let (stage_one, rest): (Vec<&Step>, Vec<&Step>) = plan
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.action,
                StepAction::Create | StepAction::Configure | StepAction::Recreate | StepAction::Run
            )
        })
        .partition(|s| {
            !s.placement.is_hook() && plan::is_first_stage(&s.object.group, &s.object.kind)
        });
    let (written, early_parent) =
        parent_and_stage_one(client, discovery, target, plan, &stage_one).await?;
    if let Err(error) = prepare_rest(client, discovery, &stage_one, &rest, deferred).await {
        let error = undo_first_stage(client, discovery, &stage_one, &written, error).await;
        return Err(restore_parent(client, target, plan, early_parent.as_ref(), error).await);
    }
    let mut sequence = Sequence {
        client,
        reader: target.reader,
        discovery,
        selector: target.applyset.member_selector(),
        timeout: target.timeout,
        health: &target.health,
        progress: target.progress,
        log: SyncLog::default(),
        written,
        at_sync_end: Vec::new(),
    };
    sequence.run(plan).await?;
    let Sequence { written, log, .. } = sequence;
    if target.scope.is_full() && log.failed.is_none() {
        let desired_namespaces = plan
            .steps
            .iter()
            .filter(|s| s.manifest.is_some())
            .filter_map(|s| s.object.namespace.clone())
            .collect();
        let kinds = desired_kinds(plan);
        write_parent(client, target.applyset, &kinds, &desired_namespaces).await?;
    }
    Ok(Executed { written, log })
}

/// The parent (full runs: after its own Namespace if this run creates it), then
/// the rest of the first stage; returns what was written and the parent's answer.
async fn parent_and_stage_one(
    client: &Client,
    discovery: &Discovery,
    target: &Target<'_>,
    plan: &Plan,
    stage_one: &[&Step],
) -> Result<(Vec<(ObjectRef, Value)>, Option<Value>), EngineError> {
    if !target.scope.is_full() {
        return Ok((apply_all(client, discovery, stage_one).await?, None));
    }
    let (home, others): (Vec<&Step>, Vec<&Step>) = stage_one
        .iter()
        .partition(|s| is_namespace_of(&s.object, target.applyset));
    let mut written = apply_all(client, discovery, &home).await?;
    let all_namespaces = plan
        .steps
        .iter()
        .filter_map(|s| s.object.namespace.clone())
        .collect();
    let parent = write_parent(client, target.applyset, target.kinds, &all_namespaces).await?;
    written.extend(apply_all(client, discovery, &others).await?);
    Ok((written, Some(parent)))
}

/// With the first stage written: waits for its CRDs and validates what needed them.
async fn prepare_rest(
    client: &Client,
    discovery: &Discovery,
    first: &[&Step],
    rest: &[&Step],
    deferred: &BTreeSet<ObjectRef>,
) -> Result<(), EngineError> {
    if first
        .iter()
        .any(|s| s.object.kind == "CustomResourceDefinition")
    {
        wait_for_crds(client, first).await?;
        discovery.refresh().await.map_err(EngineError::Discovery)?;
    }
    validate_deferred(client, discovery, rest, deferred).await
}

/// After the rest of a revision was refused: deletes the Namespaces and CRDs this
/// run created only to validate it (uid precondition: exactly those), so that the
/// revision leaves the cluster as it was. Only when nothing else of the first stage
/// was written does the error then say that nothing was written.
async fn undo_first_stage(
    client: &Client,
    discovery: &Discovery,
    first: &[&Step],
    written: &[(ObjectRef, Value)],
    error: EngineError,
) -> EngineError {
    let uids: BTreeMap<&ObjectRef, &str> = written
        .iter()
        .filter_map(|(object, answer)| Some((object, answer.uid()?)))
        .collect();
    let mut nothing_left = true;
    for step in first.iter().rev() {
        let (StepAction::Create, Some(uid)) = (step.action, uids.get(&step.object)) else {
            nothing_left = false;
            continue;
        };
        match delete(client, discovery, &step.object, uid.to_string()).await {
            Ok(()) => info!(object = %step.object, "deleted again: the revision was refused"),
            Err(e) => {
                warn!(object = %step.object, error = %e, "could not delete it again");
                nothing_left = false;
            }
        }
    }
    match error {
        EngineError::RejectedAfterFirstStage(problems) if nothing_left => {
            EngineError::Rejected(problems)
        }
        error => error,
    }
}

/// After a refused revision whose first stage was deleted again: the parent as it
/// was before the run (its recorded kinds, the namespaces of what already
/// existed), or gone when this run created it, so that nothing of the revision
/// stays. Should that fail, the error no longer says that nothing was written.
async fn restore_parent(
    client: &Client,
    target: &Target<'_>,
    plan: &Plan,
    early_parent: Option<&Value>,
    error: EngineError,
) -> EngineError {
    let (EngineError::Rejected(_), Some(written)) = (&error, early_parent) else {
        return error;
    };
    let applyset = target.applyset;
    let restored = match target.recorded {
        Some(kinds) => {
            let existing = plan
                .steps
                .iter()
                .filter(|s| s.action != StepAction::Create)
                .filter_map(|s| s.object.namespace.clone())
                .collect();
            write_parent(client, applyset, kinds, &existing)
                .await
                .map(drop)
        }
        None => {
            let uid = written.uid();
            let uid = uid.unwrap_or_default().to_string();
            let parent = applyset.parent_ref();
            let path = parent_path(applyset);
            let params = DeleteParams {
                propagation: PropagationPolicy::Background,
                preconditions: Some(Preconditions { uid }),
            };
            match client.delete(&path, &params).await {
                Err(e) if !e.is_not_found() => Err(api_error(&parent, e)),
                _ => Ok(()),
            }
        }
    };
    match (restored, error) {
        (Ok(()), error) => error,
        (Err(e), EngineError::Rejected(problems)) => {
            warn!(error = %e, "could not restore the ApplySet parent");
            EngineError::RejectedAfterFirstStage(problems)
        }
        (Err(_), error) => error,
    }
}

/// Whether `object` is the Namespace the ApplySet parent lives in.
fn is_namespace_of(object: &ObjectRef, applyset: &ApplySet) -> bool {
    object.group.is_empty() && object.kind == "Namespace" && object.name == applyset.namespace
}

/// Objects the server could not dry-run before their Namespace or CRD existed.
pub(super) fn deferred_objects(desired: &[Desired]) -> BTreeSet<ObjectRef> {
    desired
        .iter()
        .filter(|d| matches!(d.dry_run, Evaluation::Deferred))
        .map(|d| d.manifest.object_ref())
        .collect()
}

/// Dry-runs the deferred objects now that their Namespaces and CRDs exist, before
/// any of them is written: a rejected object stops the run with only the first
/// stage (Namespaces, CRDs) applied. Hooks are among them.
async fn validate_deferred(
    client: &Client,
    discovery: &Discovery,
    rest: &[&Step],
    deferred: &BTreeSet<ObjectRef>,
) -> Result<(), EngineError> {
    let pending: Vec<&Step> = rest
        .iter()
        .copied()
        .filter(|s| deferred.contains(&s.object))
        .collect();
    let problems = dry_run_all(client, discovery, &pending).await?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(EngineError::RejectedAfterFirstStage(problems))
}

/// Dry-runs the hooks of a plan that writes something, for a run that writes
/// nothing (`diff`, `--dry-run`; a real run validates them with the deferred
/// objects). Hooks in a Namespace, or of a kind, this run creates cannot be.
pub(super) async fn validate_hooks(
    client: &Client,
    discovery: &Discovery,
    plan: &Plan,
    new_namespaces: &BTreeSet<String>,
) -> Result<(), EngineError> {
    let hooks: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| s.placement.is_hook())
        .filter(|s| {
            !s.object
                .namespace
                .as_ref()
                .is_some_and(|ns| new_namespaces.contains(ns))
        })
        .filter(|s| {
            discovery
                .resolve(&s.object.group, "", &s.object.kind)
                .is_ok()
        })
        .collect();
    let problems = dry_run_all(client, discovery, &hooks).await?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(EngineError::Rejected(problems))
}

/// Dry-runs every step; the problems of those the server refuses.
async fn dry_run_all(
    client: &Client,
    discovery: &Discovery,
    steps: &[&Step],
) -> Result<Vec<Problem>, EngineError> {
    let results: Vec<Result<(), Refusal>> = stream::iter(0..steps.len())
        .map(|i| dry_run_step(client, discovery, steps[i]).boxed())
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    problems(results.into_iter().filter_map(Result::err))
}

async fn dry_run_step(client: &Client, discovery: &Discovery, step: &Step) -> Result<(), Refusal> {
    let Some(manifest) = &step.manifest else {
        return Ok(());
    };
    let answer = match step.placement.is_hook() {
        true => dry_run_hook(client, discovery, manifest).await,
        false => send(client, discovery, manifest, true).await,
    };
    answer
        .map(drop)
        .map_err(|e| Refusal::of(step.object.clone(), &manifest.origin, e))
}

/// A hook is created anew each time it runs: validated by a dry-run creation (a
/// named one under a generated name, as its previous run's object may be there).
async fn dry_run_hook(
    client: &Client,
    discovery: &Discovery,
    manifest: &Manifest,
) -> Result<Value, KubeError> {
    let resource = discovery.resolve(manifest.group(), manifest.version(), &manifest.kind)?;
    let body = match manifest.name() {
        "" => Value::Object(manifest.body.clone()),
        _ => recreate::probe_body(manifest),
    };
    let path = resource.path(manifest.namespace(), None);
    client
        .create(&path, &body, &PostParams { dry_run: true })
        .await
}

/// Server-side applies the parent; returns the server's answer.
async fn write_parent(
    client: &Client,
    applyset: &ApplySet,
    kinds: &BTreeSet<GroupKind>,
    namespaces: &BTreeSet<String>,
) -> Result<Value, EngineError> {
    let body = applyset.parent_body(kinds, namespaces);
    client
        .apply(&parent_path(applyset), &body, &apply_params())
        .await
        .map_err(|e| api_error(&applyset.parent_ref(), e))
}

async fn wait_for_crds(client: &Client, steps: &[&Step]) -> Result<(), EngineError> {
    for step in steps
        .iter()
        .filter(|s| s.object.kind == "CustomResourceDefinition")
    {
        let path = ApiResource::custom_resource_definitions().path(None, Some(&step.object.name));
        let deadline = tokio::time::Instant::now() + CRD_ESTABLISHED_TIMEOUT;
        loop {
            let crd = client
                .get(&path)
                .await
                .map_err(|e| api_error(&step.object, e))?;
            if is_established(&crd) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::CrdNotEstablished(step.object.name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}
