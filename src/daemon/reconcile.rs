//! One reconcile of one source: snapshot → manifests → engine → status, metrics and
//! events. It neither loops nor sleeps: the daemon's `scheduler` decides when
//! to call it, and what a failure leads to. What it did is written down by
//! [`super::record`].

use crate::daemon::error::ReconcileError;
use crate::daemon::record::Recorder;
use crate::daemon::scheduler::{self, Reason};
use crate::daemon::settings::Settings;
use crate::daemon::state::{Render, SourceState};
use crate::daemon::status::ObjectHealth;
use crate::daemon::targeting::Selection;
use crate::engine::applyset::ApplySet;
use crate::engine::plan::{self, LoadedFrom, PlanOptions};
use crate::engine::{Engine, EngineError, Outcome, RunOptions, Scope};
use crate::health::{self, Health, State};
use crate::kube::watch::Change;
use crate::manifest::ObjectRef;
use crate::render::Renderer;
use crate::report;
use crate::source::{Snapshot, short_revision};
use std::time::Instant;
use tracing::{Instrument, info, info_span};

/// Runs reconciles; `record` reports them. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reconciler {
    pub engine: Engine,
    /// Runs kustomize and helm for sources whose root is rendered.
    pub renderer: Renderer,
    pub record: Recorder,
}

impl Reconciler {
    /// One reconcile of `settings`' source at `snapshot`: only what changed when
    /// `reason` and the changes allow, else everything. Records the result in
    /// status, metrics and (on news) Events. Success awaits the next change: the
    /// periodic tick is the scheduler's own.
    pub(crate) async fn reconcile(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        snapshot: &Snapshot,
        reason: Reason,
    ) -> Result<scheduler::Action, ReconcileError> {
        let revision = snapshot.revision.as_str();
        let span =
            info_span!("reconcile", source = %settings.name, revision = %short_revision(revision));
        let started = Instant::now();
        let result = self
            .run(settings, state, snapshot, reason)
            .instrument(span)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok((outcome, scope)) => {
                state.applied_revision = Some(revision.to_string());
                self.record
                    .success(settings, revision, outcome, seconds, scope);
                match scope {
                    Scope::Full => self.refresh_health(settings, state),
                    Scope::Targeted { .. } => {
                        for object in outcome.plan.named_desired() {
                            self.reassess(settings, state, object);
                        }
                    }
                }
            }
            Err(error) => self.record.failure(settings, revision, error, seconds),
        }
        result.map(|_| scheduler::Action::AwaitChange)
    }

    /// The run itself: its outcome and how much of the source it covered.
    async fn run(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        snapshot: &Snapshot,
        reason: Reason,
    ) -> Result<(Outcome, Scope), ReconcileError> {
        let render = Render {
            renderer: &self.renderer,
            engine: &self.engine,
            metrics: &self.record.metrics,
        };
        state.load(snapshot, settings, render, reason).await?;
        let Selection { manifests, scope } = state.select(reason, &settings.namespace);
        let guard = PlanOptions {
            prune: settings.prune,
            allow_mass_prune: settings.allow_mass_prune,
        };
        plan::check_not_empty(&manifests, guard, LoadedFrom::Source(snapshot.root.clone()))
            .map_err(EngineError::from)?;
        info!(%scope, objects = manifests.len(), "reconciling");
        self.record
            .metrics
            .count_reconciled_objects(&settings.name, manifests.len() as u64);
        let options = RunOptions {
            name: settings.name.clone(),
            namespace: settings.namespace.clone(),
            prune: settings.prune,
            allow_mass_prune: settings.allow_mass_prune,
            create_namespace: settings.create_namespace,
            adoption: settings.adoption,
            tenancy: settings.tenancy.clone(),
            dry_run: !settings.writes(),
            scope,
            drift: settings.drift.clone(),
            timeout: settings.wave_timeout,
            progress: None,
        };
        let mut outcome = self.engine.run(manifests, &options, state.cache()).await?;
        let applyset = ApplySet::new(&settings.name, &settings.namespace);
        // What was written is remembered even when a hook or wave failed, so that
        // the echo of those writes is not taken for drift.
        state.record_run(&self.engine, &applyset, &mut outcome, &options.scope);
        if let Some(failure) = outcome.failure() {
            let stages = report::sync_text(&outcome.sync);
            return Err(ReconcileError::Sync(format!(
                "{}\n{}",
                failure.message,
                stages.trim_end()
            )));
        }
        Ok((outcome, options.scope))
    }

    /// Re-assesses the health of every desired object from the store, after a
    /// reconcile. Costs no request (evidence aside, once per failure).
    pub(crate) fn refresh_health(&self, settings: &Settings, state: &mut SourceState) {
        let model = self.engine.health_model();
        let assessed: Vec<(ObjectRef, Health)> = state
            .desired
            .iter()
            .map(|object| (object.clone(), state.health_of(object, &model)))
            .collect();
        let objects = assessed
            .iter()
            .map(|(object, health)| ObjectHealth {
                object: object.to_string(),
                health: health.clone(),
                evidence: None,
            })
            .collect();
        self.record.health(settings, objects);
        for (object, health) in assessed {
            self.explain_once(settings, state, &object, health.state);
        }
    }

    /// Re-assesses the object a reflector reported changed (a controller's status
    /// update, typically): how `/status` follows a rollout between reconciles.
    pub(crate) fn observe_health(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        change: &Change,
    ) {
        if state.desired.contains(&change.object) {
            self.reassess(settings, state, &change.object);
        }
    }

    /// Re-assesses one desired object's health from the store.
    fn reassess(&self, settings: &Settings, state: &mut SourceState, object: &ObjectRef) {
        let health = state.health_of(object, &self.engine.health_model());
        let health_state = health.state;
        self.record.object_health(settings, object, health);
        self.explain_once(settings, state, object, health_state);
    }

    /// Gathers evidence in the background when `object` has just turned failed;
    /// forgets that it did once the object recovers, so a new failure is explained.
    fn explain_once(
        &self,
        settings: &Settings,
        state: &mut SourceState,
        object: &ObjectRef,
        health_state: State,
    ) {
        if health_state != State::Failed {
            state.explained.remove(object);
            return;
        }
        if !state.explained.insert(object.clone()) {
            return;
        }
        let Some(live) = state.store.get_shared(object) else {
            return;
        };
        let client = self.engine.client().clone();
        let status = self.record.status.clone();
        let source = settings.name.clone();
        let key = object.to_string();
        info!(source = %source, object = %key, "object failed; gathering evidence");
        tokio::spawn(async move {
            let evidence = health::gather(&client, &live).await;
            status.update(&source, |s| s.health.set_evidence(&key, evidence));
        });
    }
}
