//! Carrying out the stages of a sync ([`super::order::Stages`]): hooks created and waited
//! for until they complete, waves applied by kind rank and waited for until healthy
//! when a later stage depends on them, prunes before the post-sync hooks, delete
//! policies, and the sync-fail hooks when something fails. What happened is kept in
//! a [`SyncLog`] for the report, `/status` and `apply --wait`.

use super::create_once::create_once;
use super::execute::{apply_all, delete, group_by_rank, object_path, prune};
use super::{EngineError, StageProgress, api_error};
use crate::engine::order::{DeleteWhen, Phase, Stage, StageKind, Stages, Wait, is_live_hook};
use crate::engine::plan::{Plan, Step};
use crate::health::{self, State, WaitOptions, WaitOutcome};
use crate::kube::{ApiResource, Client, Discovery, Error as KubeError, ListParams};
use crate::manifest::ObjectRef;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tracing::{info, warn};

/// What one sync did, stage by stage.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncLog {
    pub stages: Vec<StageRun>,
    /// The stage that failed the sync, and why (its evidence is in its run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failure>,
}

impl SyncLog {
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.failed.is_none()
    }
}

/// One stage as it ran.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRun {
    #[serde(flatten)]
    pub kind: StageKind,
    /// Objects written and hooks created.
    pub written: usize,
    /// The hooks created, by the names the server gave them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// Hooks by the names the server gave them, and, when a later stage depends on
    /// it, every object of the wave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited: Option<WaitOutcome>,
    /// Hooks deleted afterwards by their delete policy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Why a sync stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    #[serde(flatten)]
    pub stage: StageKind,
    pub message: String,
    /// The stages after it, which did not run.
    pub not_run: Vec<StageKind>,
}

/// One sync's stages against the server.
pub(super) struct Sequence<'a> {
    pub(super) client: &'a Client,
    pub(super) discovery: &'a Discovery,
    /// Selects the ApplySet's members: hooks and objects are watched through it.
    pub(super) selector: String,
    /// How long each stage may take to become healthy.
    pub(super) timeout: Duration,
    pub(super) progress: Option<&'a StageProgress>,
    pub(super) log: SyncLog,
    pub(super) written: Vec<(ObjectRef, Value)>,
}

impl Sequence<'_> {
    /// Runs every stage, prunes before the post-sync hooks, and runs the sync-fail
    /// hooks when a stage fails (then the error, or [`SyncLog::failed`], says why).
    pub(super) async fn run(&mut self, plan: &Plan) -> Result<(), EngineError> {
        let stages = Stages::of(&plan.steps);
        let result = self.run_stages(plan, &stages.run).await;
        if result.is_err() || self.log.failed.is_some() {
            for stage in &stages.on_failure {
                match self.run_stage(stage).await {
                    Ok(None) => {}
                    Ok(Some(failure)) => warn!(%failure.message, "a sync-fail hook failed"),
                    Err(error) => warn!(%error, "a sync-fail hook could not run"),
                }
            }
        }
        result
    }

    async fn run_stages(&mut self, plan: &Plan, stages: &[Stage<'_>]) -> Result<(), EngineError> {
        let post_sync = |s: &Stage| {
            matches!(
                s.kind,
                StageKind::Hooks {
                    phase: Phase::PostSync,
                    ..
                }
            )
        };
        let mut pruned = false;
        for (i, stage) in stages.iter().enumerate() {
            if !pruned && post_sync(stage) {
                prune(self.client, self.discovery, plan).await?;
                pruned = true;
            }
            if let Some(mut failure) = self.run_stage(stage).await? {
                failure.not_run = stages[i + 1..].iter().map(|s| s.kind).collect();
                self.log.failed = Some(failure);
                return Ok(());
            }
        }
        if !pruned {
            prune(self.client, self.discovery, plan).await?;
        }
        Ok(())
    }

    /// Writes a stage, creates its hooks and waits for what must be healthy; the
    /// failure, if something is not.
    async fn run_stage(&mut self, stage: &Stage<'_>) -> Result<Option<Failure>, EngineError> {
        info!(stage = %stage.kind, "sync stage");
        let writes: Vec<&Step> = stage.writes().collect();
        let mut written = writes.len();
        for rank in group_by_rank(&writes) {
            let answers = apply_all(self.client, self.discovery, &rank).await?;
            self.written.extend(answers);
        }
        let mut hooks = Vec::new();
        for step in stage.hooks() {
            hooks.push((self.create_hook(step).await?, step));
            written += 1;
        }
        let mut waiting: Vec<ObjectRef> = match stage.wait {
            Wait::All => stage
                .steps
                .iter()
                .filter(|s| !s.placement.is_hook())
                .map(|s| s.object.clone())
                .collect(),
            Wait::Hooks => Vec::new(),
        };
        waiting.extend(hooks.iter().map(|(object, _)| object.clone()));
        let mut run = StageRun {
            kind: stage.kind,
            written,
            hooks: hooks.iter().map(|(o, _)| o.to_string()).collect(),
            waited: None,
            deleted: Vec::new(),
        };
        if !waiting.is_empty() {
            let waited = self.wait(stage.kind, &waiting).await;
            run.deleted = self.apply_delete_policies(&hooks, &waited).await;
            run.waited = Some(waited);
        }
        let failure = run.waited.as_ref().and_then(|w| failure(stage.kind, w));
        self.log.stages.push(run);
        Ok(failure)
    }

    /// Waits until every object is healthy, one failed, or the stage's time is up;
    /// explains what is not healthy.
    async fn wait(&self, stage: StageKind, objects: &[ObjectRef]) -> WaitOutcome {
        let options = WaitOptions {
            timeout: self.timeout,
        };
        let (client, discovery) = (self.client, self.discovery);
        let progress = |p: &health::Progress| {
            if let Some(StageProgress(show)) = self.progress {
                show(stage, p);
            }
        };
        let mut waited = health::wait(
            client,
            discovery,
            &self.selector,
            objects,
            options,
            progress,
        )
        .await;
        if !waited.all_ready() {
            health::explain(client, &mut waited).await;
        }
        waited
    }

    /// Creates one hook (its previous instance deleted first, by default); the
    /// object as the server named it.
    async fn create_hook(&self, step: &Step) -> Result<ObjectRef, EngineError> {
        let (Some(manifest), Some(hook)) = (&step.manifest, &step.placement.hook) else {
            return Ok(step.object.clone());
        };
        let resource = self
            .discovery
            .resolve(manifest.group(), manifest.version(), &manifest.kind)
            .map_err(|e| api_error(&step.object, e))?;
        if hook.deletes(DeleteWhen::BeforeHookCreation) {
            self.delete_previous(step, &resource).await?;
        }
        let body = Value::Object(manifest.body.clone());
        let created = create_once(self.client, &resource, manifest.namespace(), &body)
            .await
            .map_err(|e| hook_error(step, e))?;
        let object = ObjectRef::of_live(&created).unwrap_or_else(|| step.object.clone());
        info!(object = %object, "hook created");
        Ok(object)
    }

    /// Deletes the instances an earlier sync created of this hook: the object of
    /// its name (waiting until it is gone), or the members created from its
    /// generateName.
    async fn delete_previous(
        &self,
        step: &Step,
        resource: &ApiResource,
    ) -> Result<(), EngineError> {
        let object = &step.object;
        if !object.name.is_empty() {
            return delete_and_wait(self.client, self.discovery, object).await;
        }
        let Some(prefix) = step.manifest.as_ref().and_then(|m| m.generate_name()) else {
            return Ok(());
        };
        let path = resource.path(object.namespace.as_deref(), None);
        let members = ListParams::labels(&self.selector);
        let list = self
            .client
            .list(&path, &members)
            .await
            .map_err(|e| api_error(object, e))?;
        let previous = list.items.iter().filter(|live| {
            live.pointer("/metadata/generateName")
                .and_then(Value::as_str)
                == Some(prefix)
                && is_live_hook(live)
        });
        for live in previous {
            let (Some(old), Some(uid)) = (ObjectRef::of_live(live), uid_of(live)) else {
                continue;
            };
            delete(self.client, self.discovery, &old, uid).await?;
            info!(object = %old, "previous hook deleted (before-hook-creation)");
        }
        Ok(())
    }

    /// Deletes the hooks whose policy says so, now that they succeeded or failed.
    async fn apply_delete_policies(
        &self,
        hooks: &[(ObjectRef, &Step)],
        waited: &WaitOutcome,
    ) -> Vec<String> {
        let mut deleted = Vec::new();
        for (object, step) in hooks {
            let Some(hook) = &step.placement.hook else {
                continue;
            };
            let Some(result) = waited.objects.iter().find(|o| o.object == *object) else {
                continue;
            };
            let when = match result.health.state {
                State::Ready => DeleteWhen::HookSucceeded,
                _ => DeleteWhen::HookFailed,
            };
            let uid = result.live.as_deref().and_then(uid_of);
            let (true, Some(uid)) = (hook.deletes(when), uid) else {
                continue;
            };
            match delete(self.client, self.discovery, object, uid).await {
                Ok(()) => {
                    info!(object = %object, policy = %when, "hook deleted");
                    deleted.push(object.to_string());
                }
                Err(error) => warn!(object = %object, %error, "could not delete the hook"),
            }
        }
        deleted
    }
}

/// Why a stage failed, from what it waited for: the first object that failed, or
/// the first one not ready when time ran out.
fn failure(stage: StageKind, waited: &WaitOutcome) -> Option<Failure> {
    if waited.all_ready() {
        return None;
    }
    let culprit = waited
        .objects
        .iter()
        .find(|o| o.health.state == State::Failed)
        .or_else(|| {
            waited
                .objects
                .iter()
                .find(|o| o.health.state != State::Ready)
        })?;
    let what = match stage {
        StageKind::Hooks { phase, .. } => format!("{phase} hook"),
        StageKind::Wave { wave } => format!("wave {wave}:"),
    };
    let when = match waited.timed_out {
        true => format!(" (not ready after {:.0?})", waited.elapsed),
        false => String::new(),
    };
    Some(Failure {
        stage,
        message: format!("{what} {} {}{when}", culprit.object, culprit.health),
        not_run: Vec::new(),
    })
}

/// A hook that could not be created: one that exists already is explained.
fn hook_error(step: &Step, error: KubeError) -> EngineError {
    if error.is_already_exists() {
        let object = step.object.to_string();
        return EngineError::HookExists(object);
    }
    api_error(&step.object, error)
}

/// Deletes `object` (if it exists) and waits until it is gone.
async fn delete_and_wait(
    client: &Client,
    discovery: &Discovery,
    object: &ObjectRef,
) -> Result<(), EngineError> {
    let path = object_path(discovery, object)?;
    let Some(live) = client
        .get_opt(&path)
        .await
        .map_err(|e| api_error(object, e))?
    else {
        return Ok(());
    };
    let Some(uid) = uid_of(&live) else {
        return Ok(());
    };
    delete(client, discovery, object, uid.clone()).await?;
    info!(object = %object, "previous hook deleted (before-hook-creation)");
    super::execute::wait_until_gone(client, &path, object, Some(&uid)).await
}

fn uid_of(live: &Value) -> Option<String> {
    live.pointer("/metadata/uid")?.as_str().map(str::to_string)
}
