//! The engine: one run of manifests → plan → (optionally) writes, for `converge
//! apply`, `converge diff` and, later, each reconcile of the daemon.
//!
//! It gathers what the plan needs from the server — discovery, live objects, the
//! server's own dry-run of every object, the ApplySet's members — and then executes
//! the plan in stages: CRDs and Namespaces first (waiting until CRDs are
//! Established), then everything else in kind order, then prunes in reverse order.
//! Every object is dry-run before the first write, so a revision the server would
//! reject (invalid values, unknown kinds) writes nothing. Policy (what to prune, the
//! mass-prune guard, ordering) is decided by [`crate::engine::plan`], not here.

pub mod applyset;
pub mod diff;
pub mod managed_fields;
pub mod plan;
pub mod quantity;

use crate::compact::CompactObject;
use crate::engine::applyset::{ApplySet, GroupKind};
use crate::engine::plan::{Action, Desired, Evaluation, Plan, PlanError, PlanOptions, Step};
use crate::kube::watch::Store;
use crate::kube::{
    ApiResource, Client, DeleteParams, Discovery, Error as KubeError, ListParams, PatchParams,
    PostParams, Preconditions, PropagationPolicy,
};
use crate::manifest::{self, Manifest, ObjectRef, Origin, Problem};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info, info_span};

/// The field manager converge applies with (server-side apply ownership).
pub const FIELD_MANAGER: &str = "converge";
/// Requests in flight at once while reading or writing objects (the benchmark's raw
/// limit uses the same).
pub const CONCURRENCY: usize = 32;
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// What one run should do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The ApplySet's name (its parent is the ConfigMap `converge-<name>`).
    pub name: String,
    /// Namespace for namespaced objects without one, and of the ApplySet parent.
    pub namespace: String,
    pub prune: bool,
    pub allow_mass_prune: bool,
    pub dry_run: bool,
    /// The whole set, or only the part of it the manifests are.
    pub scope: Scope,
}

/// How much of an ApplySet one run covers: the one encoding of "full or targeted",
/// from the daemon's decision down to whether the parent is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// The manifests are the whole set: members are listed and pruned, and the
    /// parent records what is desired now.
    #[default]
    Full,
    /// The manifests are only what changed (the daemon's targeted reconcile: the
    /// objects of `changed_files` and drifted objects): nothing is pruned and the
    /// parent is left as it is, so the run costs what changed, not the whole set.
    /// Needs a [`Cache`]; without one the run is full. The engine does not read
    /// `changed_files`; the caller brings its baseline up to date with them.
    Targeted { changed_files: Vec<PathBuf> },
}

impl Scope {
    pub fn is_full(&self) -> bool {
        *self == Scope::Full
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Full => "full",
            Scope::Targeted { .. } => "targeted",
        })
    }
}

/// Why a run failed. [`EngineError::is_transient`] tells a failure of the moment
/// (retry soon) from one of the manifests (wait for a new revision).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "{} object(s) cannot be applied; nothing was written:\n{}",
        .0.len(),
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    Rejected(Vec<Problem>),
    #[error(
        "{} object(s) cannot be applied; only the Namespaces and CustomResourceDefinitions \
         they need were written:\n{}",
        .0.len(),
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    RejectedAfterFirstStage(Vec<Problem>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{object}: {source}")]
    Api {
        object: String,
        #[source]
        source: KubeError,
    },
    #[error("discovery failed: {0}")]
    Discovery(#[source] KubeError),
    #[error("CustomResourceDefinition {0} did not become Established within 60 s")]
    CrdNotEstablished(String),
}

impl EngineError {
    /// Whether the server or the network failed for now (5xx, 429, no connection, a
    /// CRD not yet Established), so the same manifests may well succeed soon; the
    /// other errors are the manifests' own (rejected, mass prune) and repeat until
    /// they change.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Rejected(_)
            | EngineError::RejectedAfterFirstStage(_)
            | EngineError::Plan(_) => false,
            EngineError::Api { source, .. } | EngineError::Discovery(source) => {
                source.is_transient()
            }
            EngineError::CrdNotEstablished(_) => true,
        }
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// Whether the plan was carried out (false for dry runs and when nothing changed).
    pub applied: bool,
    /// What the next run may reuse (see [`Memo`]).
    pub memo: HashMap<ObjectRef, Memo>,
    /// The kinds that may hold members of the ApplySet now: what to watch.
    pub member_kinds: BTreeSet<GroupKind>,
}

/// What one object looked like at the end of a run, so that the next run can skip
/// its dry-run when neither the manifest nor the live object changed since.
#[derive(Debug, Clone)]
pub struct Memo {
    desired: u64,
    live_version: String,
    /// [`diff::state_digest`] of the live object: what a status-only update keeps.
    live_digest: u64,
    /// The server's dry-run result; `None` when it equals the live object.
    dry_run: Option<Arc<Value>>,
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

/// What a long-running caller (the daemon) knows between runs. With it, an object
/// whose manifest and live resourceVersion are unchanged costs no request: live
/// objects come from the watch-fed store and dry-runs from the memo.
pub struct Cache<'a> {
    pub store: &'a Store,
    /// Kinds whose reflectors have synced: the store is complete for them.
    pub covered: BTreeSet<GroupKind>,
    /// The member kinds of the previous run ([`Outcome::member_kinds`]).
    pub recorded: &'a BTreeSet<GroupKind>,
    pub memo: &'a HashMap<ObjectRef, Memo>,
}

impl Cache<'_> {
    /// Whether the store is complete for `object`'s kind.
    fn covers(&self, object: &ObjectRef) -> bool {
        self.covered.contains(&GroupKind::from(object))
    }

    fn live(&self, object: &ObjectRef) -> Option<Option<Arc<Value>>> {
        self.covers(object).then(|| self.store.get_shared(object))
    }
}

/// One desired object resolved against discovery.
struct Resolved {
    manifest: Manifest,
    /// `None` while its kind is only defined by a CRD of this same run.
    resource: Option<ApiResource>,
}

/// The engine: a client and its discovery, shared by every run.
#[derive(Clone)]
pub struct Engine {
    client: Client,
    discovery: Discovery,
}

impl Engine {
    /// Reads discovery once; runs refresh it when kinds appear.
    pub async fn connect(client: Client) -> Result<Self, EngineError> {
        let discovery = Discovery::new(&client)
            .await
            .map_err(EngineError::Discovery)?;
        Ok(Engine { client, discovery })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Plans `manifests` against the cluster and, unless `dry_run`, converges it.
    pub async fn run(
        &self,
        manifests: Vec<Manifest>,
        options: &RunOptions,
        cache: Option<Cache<'_>>,
    ) -> Result<Outcome, EngineError> {
        let span = info_span!("run", applyset = %options.name, objects = manifests.len(), dry_run = options.dry_run);
        self.run_inner(manifests, options, cache)
            .instrument(span)
            .await
    }

    async fn run_inner(
        &self,
        manifests: Vec<Manifest>,
        options: &RunOptions,
        cache: Option<Cache<'_>>,
    ) -> Result<Outcome, EngineError> {
        let client = &self.client;
        let applyset = ApplySet::new(&options.name, &options.namespace);
        let resolved = self
            .resolve_refreshing(manifests, &options.namespace, &applyset)
            .await?;
        let new_namespaces = namespaces_created_here(client, &resolved, cache.as_ref()).await?;
        let desired = fetch_and_dry_run(client, resolved, &new_namespaces, cache.as_ref()).await?;
        let recorded = match &cache {
            Some(cache) => cache.recorded.clone(),
            None => self.recorded_kinds(&applyset).await?,
        };
        let scope = match cache {
            Some(_) => &options.scope,
            None => &Scope::Full,
        };
        let kinds = match scope {
            Scope::Targeted { .. } => recorded,
            Scope::Full => member_kinds(recorded, &desired),
        };
        let owned = match scope {
            Scope::Targeted { .. } => Vec::new(),
            Scope::Full => self.members(&applyset, &kinds, cache.as_ref()).await?,
        };
        let mut memo = memo_seed(&desired, cache.as_ref().map(|c| c.memo));
        let deferred = deferred_objects(&desired);
        let plan_options = PlanOptions {
            prune: options.prune && scope.is_full(),
            allow_mass_prune: options.allow_mass_prune,
        };
        let plan = plan::plan(desired, &owned, plan_options)?;
        forget_unchanged_dry_runs(&plan, &mut memo);
        if options.dry_run || !plan.has_changes() {
            return Ok(Outcome {
                plan,
                applied: false,
                memo,
                member_kinds: kinds,
            });
        }
        let target = Target {
            applyset: &applyset,
            scope,
            kinds: &kinds,
        };
        let written = execute(client, &self.discovery, &target, &plan, &deferred).await?;
        remember_writes(&plan, written, &mut memo);
        let member_kinds = match scope {
            Scope::Targeted { .. } => kinds,
            Scope::Full => desired_kinds(&plan),
        };
        Ok(Outcome {
            plan,
            applied: true,
            memo,
            member_kinds,
        })
    }

    /// [`resolve`], refreshing discovery once first if a kind is unknown: a CRD may
    /// have been installed since discovery was read.
    async fn resolve_refreshing(
        &self,
        manifests: Vec<Manifest>,
        namespace: &str,
        applyset: &ApplySet,
    ) -> Result<Vec<Resolved>, EngineError> {
        let unknown = manifests.iter().any(|m| {
            self.discovery
                .resolve(m.group(), m.version(), &m.kind)
                .is_err()
        });
        if unknown {
            self.discovery
                .refresh()
                .await
                .map_err(EngineError::Discovery)?;
        }
        resolve(&self.discovery, manifests, namespace, applyset)
    }

    async fn recorded_kinds(
        &self,
        applyset: &ApplySet,
    ) -> Result<BTreeSet<GroupKind>, EngineError> {
        let parent = self
            .client
            .get_opt(&parent_path(applyset))
            .await
            .map_err(|source| api_error(&applyset.parent_ref(), source))?;
        Ok(applyset::recorded_group_kinds(parent.as_ref()))
    }

    /// The live members: from the store for kinds it covers, listed otherwise.
    async fn members(
        &self,
        applyset: &ApplySet,
        kinds: &BTreeSet<GroupKind>,
        cache: Option<&Cache<'_>>,
    ) -> Result<Vec<Arc<Value>>, EngineError> {
        let covered = |gk: &GroupKind| cache.is_some_and(|c| c.covered.contains(gk));
        let mut members: Vec<Arc<Value>> = match cache {
            Some(cache) => kinds
                .iter()
                .filter(|gk| covered(gk))
                .flat_map(|gk| cache.store.of_kind(&gk.group, &gk.kind))
                .filter(|live| applyset.is_member(live))
                .collect(),
            None => Vec::new(),
        };
        let to_list: BTreeSet<GroupKind> =
            kinds.iter().filter(|gk| !covered(gk)).cloned().collect();
        let listed = list_members(&self.client, &self.discovery, applyset, &to_list).await?;
        members.extend(listed.into_iter().map(Arc::new));
        Ok(members)
    }
}

/// Plans `manifests` against the cluster and, unless `dry_run`, converges it: a
/// one-shot [`Engine`] for the CLI.
pub async fn run(
    client: &Client,
    manifests: Vec<Manifest>,
    options: &RunOptions,
) -> Result<Outcome, EngineError> {
    Engine::connect(client.clone())
        .await?
        .run(manifests, options, None)
        .await
}

fn desired_hash(manifest: &Manifest) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&manifest.body)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Whether a dry-run answer was computed from a newer version of the object than
/// `live` (a dry run does not bump resourceVersion, so equal versions mean the
/// same base).
fn is_newer_base(answer: &Value, live: Option<&Value>) -> bool {
    let base = live_version(Some(answer));
    !base.is_empty() && base != live_version(live)
}

fn live_version(live: Option<&Value>) -> String {
    live.and_then(|l| l.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A memo entry for every named object the server evaluated (or that the previous
/// memo still vouches for).
fn memo_seed(
    desired: &[Desired],
    previous: Option<&HashMap<ObjectRef, Memo>>,
) -> HashMap<ObjectRef, Memo> {
    desired
        .iter()
        .filter(|d| !d.manifest.name().is_empty())
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
                Evaluation::Deferred => return None,
            };
            Some((object, memo))
        })
        .collect()
}

/// Unchanged objects' dry-runs equal the live object: keep no copy of them.
fn forget_unchanged_dry_runs(plan: &Plan, memo: &mut HashMap<ObjectRef, Memo>) {
    for step in plan.steps.iter().filter(|s| s.action == Action::Unchanged) {
        if let Some(entry) = memo.get_mut(&step.object) {
            entry.dry_run = None;
        }
    }
}

/// After writing, the server's answer is the live object (and its own dry-run).
fn remember_writes(
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
    for step in plan.steps.iter().filter(|s| s.action == Action::Prune) {
        memo.remove(&step.object);
    }
}

fn desired_kinds(plan: &Plan) -> BTreeSet<GroupKind> {
    plan.steps
        .iter()
        .filter(|s| s.manifest.is_some())
        .map(|s| GroupKind::from(&s.object))
        .collect()
}

/// Resolves every manifest's kind, defaults namespaces and labels ApplySet
/// membership. Kinds unknown to the server are fine only when a CRD in the same
/// set defines them; every other problem is collected before returning.
fn resolve(
    discovery: &Discovery,
    manifests: Vec<Manifest>,
    namespace: &str,
    applyset: &ApplySet,
) -> Result<Vec<Resolved>, EngineError> {
    let defined_here = crd_kinds(&manifests);
    let mut problems = Vec::new();
    let mut resolved = Vec::new();
    for mut manifest in manifests {
        let resource = discovery
            .resolve(manifest.group(), manifest.version(), &manifest.kind)
            .ok();
        let namespaced = resource.as_ref().map(|r| r.namespaced);
        if resource.is_none()
            && !defined_here.contains(&(manifest.group().to_string(), manifest.kind.clone()))
        {
            problems.push(Problem {
                object: Some(manifest.object_ref().to_string()),
                origin: manifest.origin.clone(),
                message: format!(
                    "unknown kind {} in API version {}: the server does not serve it; \
                     is its CustomResourceDefinition installed (or in this set)?",
                    manifest.kind, manifest.api_version
                ),
            });
            continue;
        }
        // Custom resources of CRDs created here are namespaced unless the CRD says otherwise.
        if namespaced.unwrap_or(true) {
            manifest = manifest.with_default_namespace(namespace);
        } else if let Some(Value::Object(meta)) = manifest.body.get_mut("metadata") {
            meta.remove("namespace");
        }
        applyset.label_member(&mut manifest.body);
        resolved.push(Resolved { manifest, resource });
    }
    // `a` without a namespace and `a` in the default namespace are the same object.
    problems.extend(manifest::find_duplicates(
        resolved
            .iter()
            .map(|r| (r.manifest.object_ref(), &r.manifest.origin)),
    ));
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(EngineError::Rejected(problems))
    }
}

/// (group, kind) pairs defined by CustomResourceDefinitions in the set.
fn crd_kinds(manifests: &[Manifest]) -> BTreeSet<(String, String)> {
    manifests
        .iter()
        .filter(|m| m.group() == "apiextensions.k8s.io" && m.kind == "CustomResourceDefinition")
        .filter_map(|m| {
            let spec = m.body.get("spec")?;
            Some((
                spec.get("group")?.as_str()?.to_string(),
                spec.pointer("/names/kind")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Namespaces in the set that do not exist yet: objects inside them cannot be
/// dry-run until the first stage has created them.
async fn namespaces_created_here(
    client: &Client,
    resolved: &[Resolved],
    cache: Option<&Cache<'_>>,
) -> Result<BTreeSet<String>, EngineError> {
    let mut missing = BTreeSet::new();
    for r in resolved
        .iter()
        .filter(|r| r.manifest.group().is_empty() && r.manifest.kind == "Namespace")
    {
        let object = r.manifest.object_ref();
        let live = match cache.and_then(|c| c.live(&object)) {
            Some(live) => live,
            None => client
                .get_opt(&ApiResource::namespaces().path(None, Some(r.manifest.name())))
                .await
                .map_err(|e| api_error(&object, e))?
                .map(Arc::new),
        };
        if live.is_none() {
            missing.insert(r.manifest.name().to_string());
        }
    }
    Ok(missing)
}

/// Reads every object's live state and the server's dry-run apply of it,
/// concurrently. Rejections are collected so that the user sees all of them.
async fn fetch_and_dry_run(
    client: &Client,
    resolved: Vec<Resolved>,
    new_namespaces: &BTreeSet<String>,
    cache: Option<&Cache<'_>>,
) -> Result<Vec<Desired>, EngineError> {
    let lookup = LiveLookup::prefetch(client, &resolved, new_namespaces, cache).await?;
    let lookup = &lookup;
    let results: Vec<Result<Desired, Refusal>> = stream::iter(resolved)
        .map(|r| fetch_one(client, r, new_namespaces, lookup).boxed())
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let (desired, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let rejected = problems(refused.into_iter().filter_map(Result::err))?;
    if !rejected.is_empty() {
        return Err(EngineError::Rejected(rejected));
    }
    Ok(desired.into_iter().filter_map(Result::ok).collect())
}

/// Why one object could not be evaluated: its own fault (collected, so that the
/// user sees every one), or the server's or the network's for now (the run stops and
/// is retried: a 503 is not a verdict on the manifest).
enum Refusal {
    Rejected(Problem),
    Unavailable(EngineError),
}

impl Refusal {
    fn of(object: ObjectRef, origin: &Origin, error: KubeError) -> Self {
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
fn problems(refusals: impl Iterator<Item = Refusal>) -> Result<Vec<Problem>, EngineError> {
    refusals
        .map(|refusal| match refusal {
            Refusal::Rejected(problem) => Ok(problem),
            Refusal::Unavailable(error) => Err(error),
        })
        .collect()
}

/// Objects of one kind in one namespace at least this many are read with one LIST
/// instead of a GET each.
const LIST_THRESHOLD: usize = 8;

/// Where one run reads live objects from: the daemon's watch store for the kinds
/// it covers, a LIST per (kind, namespace) holding many desired objects, else one
/// GET per object.
struct LiveLookup<'a> {
    cache: Option<&'a Cache<'a>>,
    /// Compact until read: a first reconcile lists every desired object, and
    /// holding them all as trees (managedFields included) was its peak memory.
    listed: HashMap<(GroupKind, Option<String>), HashMap<String, CompactObject>>,
}

impl<'a> LiveLookup<'a> {
    async fn prefetch(
        client: &Client,
        resolved: &[Resolved],
        new_namespaces: &BTreeSet<String>,
        cache: Option<&'a Cache<'a>>,
    ) -> Result<LiveLookup<'a>, EngineError> {
        let mut groups: HashMap<(GroupKind, Option<String>), (&ApiResource, usize)> =
            HashMap::new();
        for r in resolved {
            let object = r.manifest.object_ref();
            let (Some(resource), false) = (&r.resource, r.manifest.name().is_empty()) else {
                continue;
            };
            let fresh_namespace = object
                .namespace
                .as_ref()
                .is_some_and(|ns| new_namespaces.contains(ns));
            if fresh_namespace || cache.is_some_and(|c| c.covers(&object)) {
                continue;
            }
            let key = (GroupKind::from(&object), object.namespace.clone());
            groups.entry(key).or_insert((resource, 0)).1 += 1;
        }
        // Owned items: closures over borrowed stream items trip rustc's Send checks.
        let lists: Vec<(GroupKind, Option<String>, String)> = groups
            .into_iter()
            .filter(|(_, (_, count))| *count >= LIST_THRESHOLD)
            .map(|((gk, ns), (resource, _))| {
                let path = resource.path(ns.as_deref(), None);
                (gk, ns, path)
            })
            .collect();
        let listed = stream::iter(lists)
            .map(|(gk, ns, path)| list_by_name(client, gk, ns, path).boxed())
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(LiveLookup { cache, listed })
    }

    /// `Some(live)` when known without a request.
    fn known(&self, object: &ObjectRef) -> Option<Option<Arc<Value>>> {
        if let Some(live) = self.cache.and_then(|c| c.live(object)) {
            return Some(live);
        }
        let key = (GroupKind::from(object), object.namespace.clone());
        self.listed
            .get(&key)
            .map(|by_name| by_name.get(&object.name).map(|c| Arc::new(c.value())))
    }

    /// The memo entry that still holds for `manifest` with `live`, if any.
    fn remembered(&self, manifest: &Manifest, live: Option<&Value>) -> Option<&'a Memo> {
        self.cache?
            .memo
            .get(&manifest.object_ref())
            .filter(|m| m.desired == desired_hash(manifest))
            .filter(|m| m.live_version == live_version(live))
    }
}

/// One LIST, keyed by object name.
async fn list_by_name(
    client: &Client,
    gk: GroupKind,
    ns: Option<String>,
    path: String,
) -> Result<((GroupKind, Option<String>), HashMap<String, CompactObject>), EngineError> {
    let named = |item: Value| {
        let name = item.pointer("/metadata/name")?.as_str()?.to_string();
        Some((name, CompactObject::new(&item)))
    };
    let list = client
        .list_map(&path, &ListParams::default(), named)
        .await
        .map_err(|source| EngineError::Api {
            object: format!("list {gk}"),
            source,
        })?;
    Ok(((gk, ns), list.items.into_iter().collect()))
}

/// One object's live state and dry-run: from the cache when neither the manifest
/// nor the live object changed since the last run, else from the server. (The store
/// holds members only: an existing object that is not a member yet reads as absent
/// there, and the apply that follows adopts it.)
async fn fetch_one(
    client: &Client,
    r: Resolved,
    new_namespaces: &BTreeSet<String>,
    lookup: &LiveLookup<'_>,
) -> Result<Desired, Refusal> {
    let reject = |e: KubeError| Refusal::of(r.manifest.object_ref(), &r.manifest.origin, e);
    let waits_for_namespace = r
        .manifest
        .namespace()
        .is_some_and(|ns| new_namespaces.contains(ns));
    let Some(resource) = r.resource.as_ref().filter(|_| !waits_for_namespace) else {
        return Ok(Desired {
            manifest: r.manifest,
            live: None,
            dry_run: Evaluation::Deferred,
        });
    };
    let ns = r.manifest.namespace();
    if r.manifest.name().is_empty() {
        // generateName: every apply creates a new object; validate with a dry-run POST.
        let dry_run = send_to(client, resource, &r.manifest, true)
            .await
            .map_err(reject)?;
        return Ok(Desired {
            manifest: r.manifest,
            live: None,
            dry_run: Evaluation::Server(dry_run),
        });
    }
    let path = resource.path(ns, Some(r.manifest.name()));
    let live = match lookup.known(&r.manifest.object_ref()) {
        Some(live) => live,
        None => client.get_opt(&path).await.map_err(reject)?.map(Arc::new),
    };
    let dry_run = match lookup.remembered(&r.manifest, live.as_deref()) {
        Some(Memo {
            dry_run: Some(dry_run),
            ..
        }) => Evaluation::Server(dry_run.as_ref().clone()),
        Some(Memo { dry_run: None, .. }) if live.is_some() => Evaluation::InSync,
        _ if live
            .as_deref()
            .is_some_and(|l| managed_fields::apply_is_noop(&r.manifest.body, l, FIELD_MANAGER)) =>
        {
            Evaluation::InSync
        }
        _ => Evaluation::Server(
            send_to(client, resource, &r.manifest, true)
                .await
                .map_err(reject)?,
        ),
    };
    let live = match (&dry_run, &live) {
        (Evaluation::Server(answer), Some(_)) if is_newer_base(answer, live.as_deref()) => {
            // Our copy predates a change someone else made (a LIST or watch event
            // behind the dry-run): comparing them would show that change as ours.
            client.get_opt(&path).await.map_err(reject)?.map(Arc::new)
        }
        _ => live,
    };
    Ok(Desired {
        manifest: r.manifest,
        live: live.map(without_managed_fields),
        dry_run,
    })
}

/// `live` without its managedFields, which nothing reads once the ownership proof
/// is done (diffs ignore them) and which are often half an object's size: a first
/// reconcile holds every desired object's live copy until its plan is made.
fn without_managed_fields(mut live: Arc<Value>) -> Arc<Value> {
    if let Some(Value::Object(metadata)) =
        Arc::get_mut(&mut live).and_then(|l| l.get_mut("metadata"))
    {
        metadata.remove("managedFields");
    }
    live
}

/// The group-kinds to look for members in: what the parent recorded (objects of
/// earlier revisions) and what is desired now.
fn member_kinds(recorded: BTreeSet<GroupKind>, desired: &[Desired]) -> BTreeSet<GroupKind> {
    let mut kinds = recorded;
    kinds.extend(
        desired
            .iter()
            .map(|d| GroupKind::from(&d.manifest.object_ref())),
    );
    kinds
}

/// Every live object labelled as a member, across all namespaces.
async fn list_members(
    client: &Client,
    discovery: &Discovery,
    applyset: &ApplySet,
    kinds: &BTreeSet<GroupKind>,
) -> Result<Vec<Value>, EngineError> {
    let members = ListParams::labels(&applyset.member_selector());
    // Owned items: closures over borrowed stream items trip rustc's Send checks.
    let resources: Vec<ApiResource> = kinds
        .iter()
        .filter_map(|gk| discovery.resolve(&gk.group, "", &gk.kind).ok())
        .collect();
    let lists = stream::iter(resources)
        .map(|resource| {
            let members = members.clone();
            async move {
                let path = resource.path(None, None);
                client
                    .list(&path, &members)
                    .await
                    .map_err(|source| EngineError::Api {
                        object: format!("list {}", resource.kind),
                        source,
                    })
            }
            .boxed()
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(lists
        .into_iter()
        .flat_map(|list| list.items)
        .filter(|live| applyset.is_member(live))
        .collect())
}

/// The ApplySet a plan is carried out for, and how much of it.
struct Target<'a> {
    applyset: &'a ApplySet,
    scope: &'a Scope,
    /// The kinds that may hold members (recorded in the parent first).
    kinds: &'a BTreeSet<GroupKind>,
}

/// Carries out a plan: parent first (recording every kind that may hold members,
/// so an interrupted run can still prune later), stage one, stage two by kind rank,
/// prunes, and finally the parent narrowed to what is now desired. A targeted run
/// leaves the parent alone and only writes objects of kinds it already records.
async fn execute(
    client: &Client,
    discovery: &Discovery,
    target: &Target<'_>,
    plan: &Plan,
    deferred: &BTreeSet<ObjectRef>,
) -> Result<Vec<(ObjectRef, Value)>, EngineError> {
    let (first, rest): (Vec<&Step>, Vec<&Step>) = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Create | Action::Configure))
        .partition(|s| plan::is_first_stage(&s.object.group, &s.object.kind));
    let mut written = apply_all(client, discovery, &first).await?;
    if first
        .iter()
        .any(|s| s.object.kind == "CustomResourceDefinition")
    {
        wait_for_crds(client, &first).await?;
        discovery.refresh().await.map_err(EngineError::Discovery)?;
    }
    validate_deferred(client, discovery, &rest, deferred).await?;
    if target.scope.is_full() {
        let all_namespaces = plan
            .steps
            .iter()
            .filter_map(|s| s.object.namespace.clone())
            .collect();
        write_parent(client, target.applyset, target.kinds, &all_namespaces).await?;
    }
    for rank in group_by_rank(&rest) {
        written.extend(apply_all(client, discovery, &rank).await?);
    }
    prune(client, discovery, plan).await?;
    if target.scope.is_full() {
        let desired_namespaces = plan
            .steps
            .iter()
            .filter(|s| s.manifest.is_some())
            .filter_map(|s| s.object.namespace.clone())
            .collect();
        let kinds = desired_kinds(plan);
        write_parent(client, target.applyset, &kinds, &desired_namespaces).await?;
    }
    Ok(written)
}

/// Objects the server could not dry-run before their Namespace or CRD existed.
fn deferred_objects(desired: &[Desired]) -> BTreeSet<ObjectRef> {
    desired
        .iter()
        .filter(|d| matches!(d.dry_run, Evaluation::Deferred))
        .map(|d| d.manifest.object_ref())
        .collect()
}

/// Dry-runs the deferred objects now that their Namespaces and CRDs exist, before
/// any of them is written: a rejected object stops the run with only the first
/// stage (Namespaces, CRDs) applied.
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
    let results: Vec<Result<(), Refusal>> = stream::iter(0..pending.len())
        .map(|i| dry_run_step(client, discovery, pending[i]).boxed())
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let problems = problems(results.into_iter().filter_map(Result::err))?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(EngineError::RejectedAfterFirstStage(problems))
}

async fn dry_run_step(client: &Client, discovery: &Discovery, step: &Step) -> Result<(), Refusal> {
    let Some(manifest) = &step.manifest else {
        return Ok(());
    };
    send(client, discovery, manifest, true)
        .await
        .map(drop)
        .map_err(|e| Refusal::of(step.object.clone(), &manifest.origin, e))
}

fn group_by_rank<'a>(steps: &[&'a Step]) -> Vec<Vec<&'a Step>> {
    let mut groups: BTreeMap<u16, Vec<&Step>> = BTreeMap::new();
    for step in steps {
        groups
            .entry(plan::apply_rank(&step.object.group, &step.object.kind))
            .or_default()
            .push(step);
    }
    groups.into_values().collect()
}

async fn write_parent(
    client: &Client,
    applyset: &ApplySet,
    kinds: &BTreeSet<GroupKind>,
    namespaces: &BTreeSet<String>,
) -> Result<(), EngineError> {
    let body = applyset.parent_body(kinds, namespaces);
    client
        .apply(&parent_path(applyset), &body, &apply_params())
        .await
        .map_err(|e| api_error(&applyset.parent_ref(), e))?;
    Ok(())
}

fn parent_path(applyset: &ApplySet) -> String {
    ApiResource::config_maps().path(Some(&applyset.namespace), Some(&applyset.parent_name))
}

/// Server-side apply as converge, taking over fields others set.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies (or, for generateName objects, creates) the steps
/// concurrently; returns the server's answer for each.
async fn apply_all(
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
    let live = send(client, discovery, manifest, false)
        .await
        .map_err(|e| api_error(&step.object, e))?;
    info!(object = %step.object, action = %step.action, "applied");
    Ok(Some((step.object.clone(), live)))
}

/// Server-side applies one manifest (POSTs it when it only has a generateName),
/// for real or as a dry run.
async fn send(
    client: &Client,
    discovery: &Discovery,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<Value, KubeError> {
    let resource = discovery.resolve(manifest.group(), manifest.version(), &manifest.kind)?;
    send_to(client, &resource, manifest, dry_run).await
}

/// [`send`] with the manifest's resource already resolved.
async fn send_to(
    client: &Client,
    resource: &ApiResource,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<Value, KubeError> {
    let body = Value::Object(manifest.body.clone());
    let ns = manifest.namespace();
    if manifest.name().is_empty() {
        let params = PostParams { dry_run };
        return client
            .create(&resource.path(ns, None), &body, &params)
            .await;
    }
    let path = resource.path(ns, Some(manifest.name()));
    let params = PatchParams {
        dry_run,
        ..apply_params()
    };
    client.apply(&path, &body, &params).await
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

/// Deletes the plan's prune steps in their (reverse dependency) order, each with
/// its uid as precondition so that only the planned object can go.
async fn prune(client: &Client, discovery: &Discovery, plan: &Plan) -> Result<(), EngineError> {
    for step in plan.steps.iter().filter(|s| s.action == Action::Prune) {
        let object = &step.object;
        let resource = discovery
            .resolve(&object.group, "", &object.kind)
            .map_err(|e| api_error(object, e))?;
        let path = resource.path(object.namespace.as_deref(), Some(&object.name));
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

fn api_error(object: &ObjectRef, source: KubeError) -> EngineError {
    EngineError::Api {
        object: object.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
