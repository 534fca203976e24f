//! Carrying out the stages of a sync ([`super::stages::Stages`]): hooks created and waited
//! for until they complete, waves applied by kind rank and waited for until healthy
//! when a later stage depends on them, prunes before the post-sync hooks, delete
//! policies, and the sync-fail hooks when something fails. What happened is kept in
//! a [`SyncLog`] for the report, `/status` and `apply --wait`.

use super::create_once::create_once;
use super::writes::{apply_all, delete, group_by_rank, object_path, prune, wait_until_gone};
use super::{EngineError, StageProgress, api_error};
use crate::engine::order::{DeleteWhen, Phase, StageKind, is_live_hook};
use crate::engine::plan::{Plan, Step};
use crate::engine::stages::{Stage, Stages, Wait};
use crate::health::{self, HealthModel, State, WaitFor, WaitOptions, WaitOutcome};
use crate::kube::Meta;
use crate::kube::{ApiResource, Client, Discovery, Error as KubeError, ListParams};
use crate::manifest::ObjectRef;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
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
    /// converge's own client: the waits watch across namespaces.
    pub(super) reader: &'a Client,
    pub(super) discovery: &'a Discovery,
    /// Selects the ApplySet's members: hooks and objects are watched through it.
    pub(super) selector: String,
    /// How long each stage may take to become healthy.
    pub(super) timeout: Duration,
    /// How health is judged: the same model as `--wait` and `/status`.
    pub(super) health: &'a HealthModel,
    pub(super) progress: Option<&'a StageProgress>,
    pub(super) log: SyncLog,
    pub(super) written: Vec<(ObjectRef, Value)>,
    /// Argo CD hooks that ran: their delete policies apply when the sync ends.
    pub(super) at_sync_end: Vec<Ran<'a>>,
}

/// A hook instance that ran, and how it ended.
#[derive(Clone)]
pub(super) struct Ran<'a> {
    object: ObjectRef,
    uid: Option<String>,
    step: &'a Step,
    succeeded: bool,
    /// The index of its stage in [`SyncLog::stages`], where deletions are recorded.
    stage: usize,
}

impl Ran<'_> {
    fn deletes(&self, when: DeleteWhen) -> bool {
        self.step
            .placement
            .hook
            .as_ref()
            .is_some_and(|h| h.deletes(when))
    }

    fn at_sync_end(&self) -> bool {
        self.step
            .placement
            .hook
            .as_ref()
            .is_some_and(|h| h.dialect.deletes_at_sync_end())
    }
}

impl<'a> Sequence<'a> {
    /// Runs every stage, prunes before the post-sync hooks, and runs the sync-fail
    /// hooks when a stage fails (then the error, or [`SyncLog::failed`], says why).
    /// Argo CD's hooks are deleted by policy last, by how the whole sync ended.
    pub(super) async fn run(&mut self, plan: &'a Plan) -> Result<(), EngineError> {
        let stages = Stages::of(&plan.steps);
        let result = self.run_stages(plan, &stages.run).await;
        let failed = result.is_err() || self.log.failed.is_some();
        if failed {
            for stage in &stages.on_failure {
                match self.run_stage(stage).await {
                    Ok(None) => {}
                    Ok(Some(failure)) => warn!(%failure.message, "a sync-fail hook failed"),
                    Err(error) => warn!(%error, "a sync-fail hook could not run"),
                }
            }
        }
        let when = match failed {
            true => DeleteWhen::HookFailed,
            false => DeleteWhen::HookSucceeded,
        };
        let mut ran = std::mem::take(&mut self.at_sync_end);
        ran.retain(|r| r.deletes(when));
        self.delete_ran(ran, when).await;
        result
    }

    async fn run_stages(
        &mut self,
        plan: &'a Plan,
        stages: &[Stage<'a>],
    ) -> Result<(), EngineError> {
        let post_sync = |s: &Stage| {
            matches!(
                s.kind,
                StageKind::Hooks {
                    phase: Phase::PostSync
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

    /// Runs one stage; the failure, if something in it is not healthy.
    async fn run_stage(&mut self, stage: &Stage<'a>) -> Result<Option<Failure>, EngineError> {
        info!(stage = %stage.kind, "sync stage");
        self.log.stages.push(StageRun {
            kind: stage.kind,
            written: 0,
            hooks: Vec::new(),
            waited: None,
            deleted: Vec::new(),
        });
        let ran = match stage.kind {
            StageKind::Wave { .. } => self.run_wave(stage).await?,
            StageKind::Hooks { .. } => self.run_hooks(stage).await?,
        };
        let (sync_end, phase_end): (Vec<Ran>, Vec<Ran>) =
            ran.into_iter().partition(Ran::at_sync_end);
        self.at_sync_end.extend(sync_end);
        let waited = self.current().waited.clone();
        let failure = waited.as_ref().and_then(|w| failure(stage.kind, w));
        self.delete_at_phase_end(phase_end, failure.is_none()).await;
        Ok(failure)
    }

    /// A wave: its objects by kind rank, then its sync hooks, all waited for
    /// together (the objects only when a later stage depends on them).
    async fn run_wave(&mut self, stage: &Stage<'a>) -> Result<Vec<Ran<'a>>, EngineError> {
        let writes: Vec<&Step> = stage.writes().collect();
        let mut jobs = Vec::new();
        for rank in group_by_rank(&writes) {
            let answers = apply_all(self.client, self.discovery, &rank).await?;
            jobs.extend(answers.iter().filter_map(|(o, a)| followed(o, a)));
            self.written.extend(answers);
        }
        self.current().written += writes.len();
        let mut waiting = Vec::new();
        if stage.wait == Wait::All {
            let objects = stage.steps.iter().filter(|s| !s.placement.is_hook());
            waiting = objects
                .map(|s| match jobs.iter().find(|j| j.object == s.object) {
                    Some(job) => job.clone(),
                    None => WaitFor::listed(s.object.clone()),
                })
                .collect();
        }
        let hooks: Vec<&Step> = stage.hooks().collect();
        self.run_batch(stage.kind, &hooks, waiting).await
    }

    /// A phase's hooks, batch by batch ([`Stage::batches`]); the first batch that
    /// fails ends the phase.
    async fn run_hooks(&mut self, stage: &Stage<'a>) -> Result<Vec<Ran<'a>>, EngineError> {
        let mut ran = Vec::new();
        for batch in stage.batches() {
            let outcome = self.run_batch(stage.kind, &batch, Vec::new()).await?;
            let failed = outcome.iter().any(|r| !r.succeeded);
            ran.extend(outcome);
            if failed {
                break;
            }
        }
        Ok(ran)
    }

    /// Creates `hooks` one after the other, then waits for them (and `others`)
    /// until they are done; records it all in the current stage's run.
    async fn run_batch(
        &mut self,
        kind: StageKind,
        hooks: &[&'a Step],
        mut waiting: Vec<WaitFor>,
    ) -> Result<Vec<Ran<'a>>, EngineError> {
        let mut created = Vec::new();
        for step in hooks {
            let hook = self.create_hook(step).await?;
            self.current().hooks.push(hook.object.to_string());
            self.current().written += 1;
            waiting.push(hook.clone());
            created.push((hook.object, *step));
        }
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let waited = self.wait(kind, &waiting).await;
        let index = self.log.stages.len() - 1;
        let ran = created
            .into_iter()
            .map(|(object, step)| {
                let result = waited.objects.iter().find(|o| o.object == object);
                Ran {
                    uid: result
                        .and_then(|r| r.live.as_deref())
                        .and_then(|live| live.uid().map(str::to_string)),
                    succeeded: result.is_some_and(|r| r.health.state == State::Ready),
                    object,
                    step,
                    stage: index,
                }
            })
            .collect();
        let run = self.current();
        run.waited = Some(match run.waited.take() {
            Some(before) => before.followed_by(waited),
            None => waited,
        });
        Ok(ran)
    }

    /// The run of the stage being carried out.
    fn current(&mut self) -> &mut StageRun {
        let last = self.log.stages.len() - 1;
        &mut self.log.stages[last]
    }

    /// Helm's deletions when a phase ends: on success every `hook-succeeded` hook,
    /// in reverse order; on failure the failed hook if `hook-failed`, then the
    /// ones that succeeded before it if `hook-succeeded`.
    async fn delete_at_phase_end(&mut self, ran: Vec<Ran<'a>>, succeeded: bool) {
        use DeleteWhen::{HookFailed, HookSucceeded};
        if succeeded {
            let done = ran.into_iter().rev().filter(|r| r.deletes(HookSucceeded));
            return self.delete_ran(done.collect(), HookSucceeded).await;
        }
        let (done, failed): (Vec<Ran>, Vec<Ran>) = ran.into_iter().partition(|r| r.succeeded);
        let failed = failed.into_iter().filter(|r| r.deletes(HookFailed));
        self.delete_ran(failed.collect(), HookFailed).await;
        let done = done.into_iter().filter(|r| r.deletes(HookSucceeded));
        self.delete_ran(done.collect(), HookSucceeded).await;
    }

    /// Deletes hook instances that ran, in the order given; records each in its
    /// stage's run.
    async fn delete_ran(&mut self, ran: Vec<Ran<'a>>, when: DeleteWhen) {
        for hook in ran {
            let Some(uid) = hook.uid.clone() else {
                continue;
            };
            match delete(self.client, self.discovery, &hook.object, uid).await {
                Ok(()) => {
                    info!(object = %hook.object, policy = %when, "hook deleted");
                    self.log.stages[hook.stage]
                        .deleted
                        .push(hook.object.to_string());
                }
                Err(error) => warn!(object = %hook.object, %error, "could not delete the hook"),
            }
        }
    }

    /// Waits until every object is healthy, one failed, or the stage's time is up;
    /// explains what is not healthy.
    async fn wait(&self, stage: StageKind, objects: &[WaitFor]) -> WaitOutcome {
        let options = WaitOptions {
            timeout: self.timeout,
        };
        let (client, discovery) = (self.reader, self.discovery);
        let progress = |p: &health::Progress| {
            if let Some(StageProgress(show)) = self.progress {
                show(stage, p);
            }
        };
        let mut waited = health::wait(
            client,
            discovery,
            self.health,
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

    /// Creates one hook (its previous instance deleted first, by default): the
    /// object as the server named it, followed from its create.
    async fn create_hook(&self, step: &Step) -> Result<WaitFor, EngineError> {
        let (Some(manifest), Some(hook)) = (&step.manifest, &step.placement.hook) else {
            return Ok(WaitFor::listed(step.object.clone()));
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
        Ok(WaitFor {
            object,
            since: Some(Arc::new(created)),
        })
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
        let previous = list
            .items
            .iter()
            .filter(|live| live.generate_name() == Some(prefix) && is_live_hook(live));
        for live in previous {
            let (Some(old), Some(uid)) = (ObjectRef::of_live(live), live.uid().map(str::to_string))
            else {
                continue;
            };
            delete(self.client, self.discovery, &old, uid).await?;
            info!(object = %old, "previous hook deleted (before-hook-creation)");
        }
        Ok(())
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
    let Some(uid) = live.uid().map(str::to_string) else {
        return Ok(());
    };
    delete(client, discovery, object, uid.clone()).await?;
    info!(object = %object, "previous hook deleted (before-hook-creation)");
    wait_until_gone(client, &path, object, Some(&uid)).await
}

/// An object just applied, to wait for: a Job is followed from the version its
/// apply returned (it may complete and be deleted by its TTL before a list sees
/// it); other kinds are listed with their kind.
fn followed(object: &ObjectRef, answer: &Value) -> Option<WaitFor> {
    let run_to_completion = object.group == "batch" && object.kind == "Job";
    run_to_completion.then(|| WaitFor {
        object: object.clone(),
        since: Some(Arc::new(answer.clone())),
    })
}
