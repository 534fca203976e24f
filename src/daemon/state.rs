//! What a source remembers between reconciles: the engine's memo, a store of its
//! live members kept current by reflectors, the parsed files and what the last
//! successful run applied. That state is what makes a steady-state reconcile free
//! (no request) and what lets an out-of-band change be told apart from the echo of
//! our own write.

use crate::daemon::error::ReconcileError;
use crate::daemon::metrics::Metrics;
use crate::daemon::relist::RelistJob;
use crate::daemon::scheduler::Reason;
use crate::daemon::settings::Settings;
use crate::daemon::targeting::{self, Baseline, Selection, Since};
use crate::engine::applyset::ApplySet;
use crate::engine::order;
use crate::engine::{Cache, Engine, Memo, Outcome, Scope};
use crate::health::{Health, HealthModel};
use crate::kube::GroupKind;
use crate::kube::watch::{Change, Reflector, Store};
use crate::manifest::{FileCache, Limits, ObjectRef};
use crate::render::{
    self, Capabilities, PartCache, Prepared, RenderError, RenderKey, Renderer, RootKind, Target,
    Vars, resolve_vars,
};
use crate::source::Snapshot;
use crate::source::short_revision;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::info;

/// What a load needs to render: the tools, the cluster (`vars_from`, Helm's
/// capabilities) and where to count renders.
#[derive(Clone, Copy)]
pub(crate) struct Render<'a> {
    pub renderer: &'a Renderer,
    pub engine: &'a Engine,
    pub metrics: &'a Metrics,
}

/// What a source remembers between reconciles.
pub(crate) struct SourceState {
    memo: HashMap<ObjectRef, Memo>,
    pub(super) store: Store,
    reflectors: BTreeMap<GroupKind, Reflector>,
    /// Member kinds of the last run; `None` before the first successful run.
    recorded: Option<BTreeSet<GroupKind>>,
    /// The last revision applied (or, report-only, evaluated) without error.
    pub applied_revision: Option<String>,
    changes: mpsc::UnboundedSender<Change>,
    /// The named desired objects of the last successful run: whose health is tracked.
    pub(super) desired: BTreeSet<ObjectRef>,
    /// Failed objects whose evidence was gathered: once per failure, not per change.
    pub(super) explained: HashSet<ObjectRef>,
    /// The files of the last revision loaded, parsed: drift reconciles reuse them,
    /// and a new revision parses only the files that changed.
    files: FileCache,
    loaded_revision: Option<String>,
    /// The key of the render the loaded files are, if they are one: an unchanged
    /// root is never rendered again.
    rendered: Option<RenderKey>,
    /// The parts of the last render of a large flat kustomization: a one-file
    /// commit builds only its own part again.
    parts: PartCache,
    /// The age identities of `[source.decryption]`, gathered at each load.
    keys: std::sync::Arc<crate::sops::AgeKeys>,
    /// What the last successful run applied; `None` before the first full one.
    baseline: Option<Baseline>,
    /// Desired objects that drifted since the last run.
    drifted: BTreeSet<ObjectRef>,
    /// A member that is no longer desired changed: only a full run (prune) handles it.
    needs_full: bool,
}

impl SourceState {
    /// Changes seen by this source's reflectors are sent to `changes`.
    pub(crate) fn new(changes: mpsc::UnboundedSender<Change>, limits: Limits) -> Self {
        SourceState {
            memo: HashMap::new(),
            store: Store::default(),
            reflectors: BTreeMap::new(),
            files: FileCache::within(limits),
            loaded_revision: None,
            rendered: None,
            parts: PartCache::default(),
            keys: std::sync::Arc::default(),
            baseline: None,
            drifted: BTreeSet::new(),
            needs_full: false,
            recorded: None,
            applied_revision: None,
            changes,
            desired: BTreeSet::new(),
            explained: HashSet::new(),
        }
    }

    /// Whether live objects drifted since the last run (a source event that changed
    /// nothing must not swallow them).
    pub(crate) fn has_pending_drift(&self) -> bool {
        !self.drifted.is_empty() || self.needs_full
    }

    /// Loads the snapshot: plain manifests parsing only the files that changed, a
    /// kustomization or chart rendered when its inputs changed. A revision already
    /// loaded is not looked at again, except that a rendered one is checked at a
    /// full reconcile (a `vars_from` ConfigMap, or the cluster's API versions, may
    /// have changed); even then it renders only when its key differs.
    pub(crate) async fn load(
        &mut self,
        snapshot: &Snapshot,
        settings: &Settings,
        render: Render<'_>,
        reason: Reason,
    ) -> Result<(), ReconcileError> {
        let revision = snapshot.revision.as_str();
        let same = self.loaded_revision.as_deref() == Some(revision);
        let plain =
            render::detect(&snapshot.root) == RootKind::Plain && !settings.render.substitutes();
        if same && (plain || !reason.requires_full()) {
            return Ok(());
        }
        self.loaded_revision = None;
        let decryption = &settings.render.decryption;
        if !decryption.is_empty() {
            self.keys = std::sync::Arc::new(decryption.keys(render.engine.client()).await?);
            self.files.set_keys(self.keys.clone());
        }
        if plain {
            self.rendered = None;
            self.files.refresh(std::slice::from_ref(&snapshot.root))?;
            info!(revision = %short_revision(revision), parsed_files = self.files.parsed_last, "manifests loaded");
        } else {
            let target = Target {
                root: &snapshot.root,
                base: &snapshot.base,
                namespace: &settings.namespace,
                name: &settings.name,
                settings: &settings.render,
            };
            let prepared = render::prepare(&target)?;
            self.render(&prepared, &target, render).await?;
        }
        self.loaded_revision = Some(revision.to_string());
        Ok(())
    }

    /// Renders `prepared` unless its key is the one last rendered.
    async fn render(
        &mut self,
        prepared: &Prepared,
        target: &Target<'_>,
        render: Render<'_>,
    ) -> Result<(), RenderError> {
        let client = render.engine.client();
        let vars = match target.settings.substitutes() {
            true => {
                Some(resolve_vars(client, &target.settings.vars_from, &target.settings.vars).await?)
            }
            false => None,
        };
        let cluster = match prepared.needs_cluster() {
            true => Capabilities::discover(client, render.engine.discovery()).await?,
            false => Capabilities::default(),
        };
        let no_vars = Vars::default();
        let key = prepared.key(
            target,
            render.renderer,
            &cluster,
            vars.as_ref().unwrap_or(&no_vars),
        );
        if self
            .rendered
            .is_some_and(|earlier| key.same_output_as(&earlier))
        {
            info!(root = %target.root.display(), "inputs unchanged; not rendered again");
            return Ok(());
        }
        let started = Instant::now();
        let manifests = render
            .renderer
            .render(
                prepared,
                target,
                &cluster,
                vars.as_ref(),
                &mut self.parts,
                &self.keys,
            )
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        render.metrics.observe_render(target.name, seconds);
        info!(kind = ?prepared.kind(), objects = manifests.len(), seconds, "rendered");
        self.files.set_rendered(manifests);
        self.rendered = Some(key);
        Ok(())
    }

    /// What a reconcile for `reason` converges of the loaded revision: only what
    /// changed when the reason and the changes allow, else everything.
    pub(crate) fn select(&self, reason: Reason, namespace: &str) -> Selection {
        let since = self
            .baseline
            .as_ref()
            .filter(|_| !reason.requires_full() && !self.needs_full)
            .map(|baseline| Since {
                baseline,
                drifted: &self.drifted,
            });
        targeting::select(&self.files, since, namespace)
    }

    /// What the engine may reuse: the store (for the kinds it covers), the member
    /// kinds recorded and the memo; `None` before the first successful run.
    pub(crate) fn cache(&self) -> Option<Cache<'_>> {
        let recorded = self.recorded.as_ref()?;
        let covered = self
            .reflectors
            .iter()
            .filter(|(_, r)| r.is_synced())
            .map(|(gk, _)| gk.clone())
            .collect();
        Some(Cache {
            store: &self.store,
            covered,
            recorded,
            memo: &self.memo,
        })
    }

    /// A relist of the kinds whose first list is complete, reading with `client`;
    /// `None` while nothing is watched (before the first full run).
    pub(crate) fn relist_job(
        &self,
        source: &str,
        client: &crate::kube::Client,
        metrics: &Metrics,
    ) -> Option<RelistJob> {
        let kinds: Vec<_> = self
            .reflectors
            .values()
            .filter(|r| r.is_synced())
            .map(|r| (r.resource().clone(), r.selector().to_string()))
            .collect();
        (!kinds.is_empty()).then(|| RelistJob {
            source: source.to_string(),
            client: client.clone(),
            kinds,
            store: self.store.clone(),
            changes: self.changes.clone(),
            metrics: metrics.clone(),
        })
    }

    /// Takes in what a successful run of `scope` learnt. A targeted run adds to
    /// the memo and the baseline; a full one replaces them, and watches exactly the
    /// kinds that may hold members now.
    pub(crate) fn record_run(
        &mut self,
        engine: &Engine,
        applyset: &ApplySet,
        outcome: &mut Outcome,
        scope: &Scope,
    ) {
        let memo = std::mem::take(&mut outcome.memo);
        match scope {
            Scope::Targeted { changed_files } => {
                self.memo.extend(memo);
                for step in &outcome.plan.steps {
                    self.drifted.remove(&step.object);
                }
                if let Some(baseline) = self.baseline.as_mut() {
                    baseline.update(&self.files, changed_files);
                }
            }
            Scope::Full => {
                self.memo = memo;
                self.recorded = Some(outcome.member_kinds.clone());
                self.watch_kinds(engine, applyset, &outcome.member_kinds);
                self.desired = outcome.plan.named_desired().cloned().collect();
                let has_hooks = outcome.plan.steps.iter().any(|s| s.placement.is_hook());
                self.baseline = Some(Baseline::of(&self.files, has_hooks));
                self.drifted.clear();
                self.needs_full = false;
            }
        }
    }

    /// An object's health from the store (no request); absent is missing only
    /// once its kind is listed. (An object in the store is assessed at once: the
    /// change that put it there may arrive before the list is marked complete.)
    pub(crate) fn health_of(&self, object: &ObjectRef, model: &HealthModel) -> Health {
        if let Some(live) = self.store.get_shared(object) {
            return model.assess(&live);
        }
        let listed = self
            .reflectors
            .get(&GroupKind::from(object))
            .is_some_and(Reflector::is_synced);
        match listed {
            true => Health::missing(),
            false => Health::progressing("not observed yet"),
        }
    }

    /// Whether a change reported by a reflector is drift worth a reconcile: not the
    /// echo of our own write, and not a controller's status update.
    pub(crate) fn is_drift(&mut self, change: &Change) -> bool {
        let drift = match self.memo.get_mut(&change.object) {
            // The version the last run ended with (a relist repeats it): no need to
            // read the object back from the store.
            Some(memo) if memo.knows(change.resource_version.as_deref()) => false,
            Some(memo) => memo.absorb(self.store.get(&change.object).as_ref()),
            // A member we do not desire (any more): a prune candidate changed,
            // unless it is gone already or is a hook (a step of a sync, which
            // prune leaves to its delete policy).
            None => {
                let prunable = self
                    .store
                    .get(&change.object)
                    .is_some_and(|live| !order::is_live_hook(&live));
                let drift = self.recorded.is_some() && prunable;
                self.needs_full |= drift;
                drift
            }
        };
        if drift {
            self.drifted.insert(change.object.clone());
        }
        drift
    }

    /// Watches exactly the kinds that may hold members now.
    fn watch_kinds(&mut self, engine: &Engine, applyset: &ApplySet, kinds: &BTreeSet<GroupKind>) {
        self.reflectors.retain(|gk, _| kinds.contains(gk));
        for gk in kinds {
            if self.reflectors.contains_key(gk) {
                continue;
            }
            let Ok(resource) = engine.discovery().resolve(&gk.group, "", &gk.kind) else {
                continue;
            };
            let reflector = Reflector::spawn(
                engine.reader().clone(),
                resource,
                applyset.member_selector(),
                self.store.clone(),
                self.changes.clone(),
            );
            self.reflectors.insert(gk.clone(), reflector);
        }
    }
}
