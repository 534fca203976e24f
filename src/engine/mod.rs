//! The engine: one run of manifests → plan → (optionally) writes, for `converge
//! apply`, `converge diff` and, later, each reconcile of the daemon.
//!
//! It gathers what the plan needs from the server — discovery, live objects, the
//! server's own dry-run of every object, the ApplySet's members — and then executes
//! the plan in stages: CRDs and Namespaces first (waiting until CRDs are
//! Established), then everything else in kind order, then prunes in reverse order.
//! Every object is dry-run before the first write, so a revision the server would
//! reject (invalid values, unknown kinds) writes nothing; Namespaces and CRDs it
//! created to validate the rest are deleted again. Policy (what to prune, the
//! mass-prune guard, ordering) is decided by [`crate::engine::plan`], not here.
//!
//! A source's [`DriftRules`] widen what drift is: edits by the kubectl family inside
//! converge's objects ([`takeover`]), minus fields another controller owns
//! ([`ignore`]); and an object whose immutable fields changed may be re-created
//! ([`recreate`]). `evaluate` applies them to each existing object.

pub(crate) mod applyset;
mod create_once;
pub(crate) mod diff;
mod evaluate;
mod execute;
pub(crate) mod fieldset;
pub(crate) mod ignore;
mod lookup;
pub(crate) mod managed_fields;
mod memo;
pub(crate) mod order;
pub(crate) mod ownership;
pub(crate) mod plan;
pub(crate) mod quantity;
pub(crate) mod recreate;
pub(crate) mod run_once;
mod sequence;
mod stages;
pub(crate) mod takeover;
mod target_namespace;
pub(crate) mod tenancy;
mod writes;

pub use applyset::ApplySet;
pub use ignore::{IgnoreError, IgnoreRule, IgnoreRules, Pointer, Selector};
pub use order::{StageKind, SyncKind};
pub use ownership::{ADOPT_ANNOTATION, Adoption};
pub use plan::{LoadedFrom, PlanOptions, apply_rank, check_not_empty};
pub use recreate::{RECREATE_ANNOTATION, Recreate};
pub use sequence::{Failure, StageRun, SyncLog};
pub use takeover::{DEFAULT_DRIFT_MANAGERS, DriftManagers};
pub use tenancy::{ClusterScoped, NamespacePattern, Tenancy};

use execute::{Executed, Target, deferred_objects, execute, validate_hooks};
pub use lookup::Cache;
use lookup::{fetch_and_dry_run, namespaces_created_here};
pub use memo::Memo;
use memo::{forget_unchanged_dry_runs, memo_seed, remember_writes};
use target_namespace::TargetNamespace;
use writes::parent_path;

use crate::engine::plan::{Desired, Plan, PlanError};
use crate::health::{HealthModel, HealthRules, Progress, WaitFor};
use crate::kube::GroupKind;
use crate::kube::{ApiResource, Client, Discovery, Error as KubeError, Impersonation, ListParams};
use crate::manifest::{self, Manifest, ObjectRef, Problem};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, info, info_span};

/// The field manager converge applies with (server-side apply ownership).
pub const FIELD_MANAGER: &str = "converge";
/// Requests in flight at once while reading or writing objects (the benchmark's raw
/// limit uses the same).
pub const CONCURRENCY: usize = 32;
/// What one run should do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The ApplySet's name (its parent is the ConfigMap `converge-<name>`).
    pub name: String,
    /// Namespace for namespaced objects without one, and of the ApplySet parent.
    pub namespace: String,
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// Create `namespace` first when it does not exist (`--create-namespace`).
    pub create_namespace: bool,
    /// Whether objects other ApplySets own may be taken over (`adopt`, `--adopt`).
    pub adoption: Adoption,
    /// The namespaces and scopes the source may write (`allowed_namespaces`,
    /// `allow_cluster_scoped`); objects outside are refused before any request.
    pub tenancy: Tenancy,
    pub dry_run: bool,
    /// The whole set, or only the part of it the manifests are.
    pub scope: Scope,
    /// What counts as drift, and what converge may do about it.
    pub drift: DriftRules,
    /// How long each wave (when a later stage depends on it) and each hook may take
    /// to become healthy before the sync fails.
    pub timeout: Duration,
    /// Called while a stage waits (`apply`'s progress line); `None` for the daemon.
    pub progress: Option<StageProgress>,
}

/// Shows where a stage's wait stands.
pub type ShowProgress = dyn Fn(StageKind, &Progress) + Send + Sync;

/// A callback for the waits of a sync's stages: which stage, and where it stands.
#[derive(Clone)]
pub struct StageProgress(pub Arc<ShowProgress>);

impl std::fmt::Debug for StageProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageProgress")
    }
}

/// The default of [`RunOptions::timeout`] (`--timeout`, a source's `wave_timeout`).
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// What counts as drift in a source's objects and what converge may do about it
/// (a source's `drift_managers`, `[[source.ignore]]` and `recreate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftRules {
    /// Managers whose edits inside converge's objects are drift: their fields are
    /// taken over and whatever the manifest does not declare is removed.
    pub managers: DriftManagers,
    /// Fields converge neither reports nor writes (another controller owns them).
    pub ignore: IgnoreRules,
    /// Which objects whose immutable fields changed may be deleted and re-created.
    pub recreate: Recreate,
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
         they need, and the ApplySet parent, were written:\n{}",
        .0.len(),
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    RejectedAfterFirstStage(Vec<Problem>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "{} object(s) belong to another source; nothing was written:\n{}",
        .0.len(),
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    Owned(Vec<Problem>),
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
    #[error("{0} was deleted to be recreated but is still there after 120 s (a finalizer?)")]
    NotDeleted(String),
    #[error(
        "hook {0} exists from an earlier sync and its delete policy does not include \
         before-hook-creation; add it, give the hook a generateName, or delete the object"
    )]
    HookExists(String),
}

impl EngineError {
    /// Whether the server or the network failed for now (5xx, 429, no connection, a
    /// CRD not yet Established), so the same manifests may well succeed soon; the
    /// other errors are the manifests' own (rejected, mass prune) and repeat until
    /// they change.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Rejected(_)
            | EngineError::Owned(_)
            | EngineError::RejectedAfterFirstStage(_)
            | EngineError::Plan(_)
            | EngineError::HookExists(_) => false,
            EngineError::Api { source, .. } | EngineError::Discovery(source) => {
                source.is_transient()
            }
            EngineError::CrdNotEstablished(_) | EngineError::NotDeleted(_) => true,
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
    /// The sync's stages as they ran (hooks, waves); [`SyncLog::failed`] when a
    /// hook or a wave failed, and the sync stopped there.
    pub sync: SyncLog,
    /// The namespace `create_namespace` created (or, in a dry run, would create).
    pub created_namespace: Option<String>,
    /// The Jobs this run wrote, as the server answered: waits follow them from there.
    pub jobs_written: HashMap<ObjectRef, Arc<Value>>,
}

impl Outcome {
    /// Why the sync stopped, when a hook or a wave failed.
    pub fn failure(&self) -> Option<&Failure> {
        self.sync.failed.as_ref()
    }

    /// The desired objects to wait for after the run (`apply --wait`): a Job this
    /// run wrote is followed from the version its write returned, so that one
    /// that completes and is deleted by its TTL before a list could see it counts
    /// as completed; the rest are listed with their kind.
    pub fn wait_list(&self) -> Vec<WaitFor> {
        self.plan
            .named_desired()
            .map(|object| WaitFor {
                object: object.clone(),
                since: self.jobs_written.get(object).cloned(),
            })
            .collect()
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
    /// Everything about the objects (reads, dry-runs, writes): as the source's
    /// identity when it acts as a ServiceAccount.
    client: Client,
    /// converge's own identity, for what the daemon itself reads across the cluster:
    /// the ApplySet's members in every namespace, watches, namespaces.
    reader: Client,
    discovery: Discovery,
    /// The user's health rules (`[[health]]`, `--health`) for every wait.
    health_rules: HealthRules,
}

impl Engine {
    /// Reads discovery once; runs refresh it when kinds appear.
    pub async fn connect(client: Client) -> Result<Self, EngineError> {
        let discovery = Discovery::new(&client)
            .await
            .map_err(EngineError::Discovery)?;
        Ok(Engine {
            reader: client.clone(),
            client,
            discovery,
            health_rules: HealthRules::default(),
        })
    }

    /// The engine that judges health with `rules` before converge's own.
    pub fn with_health_rules(&self, rules: HealthRules) -> Engine {
        Engine {
            health_rules: rules,
            ..self.clone()
        }
    }

    /// How this engine judges health: its rules, and discovery's knowledge of
    /// which kinds have a status subresource.
    pub fn health_model(&self) -> HealthModel {
        HealthModel::new(self.health_rules.clone(), self.discovery.clone())
    }

    /// The engine whose requests about objects the API server authorizes as `who`
    /// (a source's `service_account`), so that its RBAC decides what the source
    /// may write; discovery and the cluster-wide reads stay converge's own.
    pub fn acting_as(&self, who: Option<Impersonation>) -> Engine {
        Engine {
            client: match who {
                Some(who) => self.reader.impersonating(who),
                None => self.reader.clone(),
            },
            ..self.clone()
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// converge's own client, for cluster-wide reads (see [`Engine::acting_as`]).
    pub fn reader(&self) -> &Client {
        &self.reader
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

    /// The run in its target namespace: created first when asked and missing, and
    /// deleted again when the revision is then refused.
    async fn run_inner(
        &self,
        manifests: Vec<Manifest>,
        options: &RunOptions,
        cache: Option<Cache<'_>>,
    ) -> Result<Outcome, EngineError> {
        let target = match options.create_namespace {
            true => {
                let access = (&self.client, &self.reader);
                let namespace = &options.namespace;
                target_namespace::ensure(access, namespace, &options.name, options.dry_run).await?
            }
            false => TargetNamespace::Exists,
        };
        let result = self.run_in(manifests, options, cache, &target).await;
        if let (Err(error), TargetNamespace::Created { uid }) = (&result, &target) {
            if target_namespace::refuses_revision(error) {
                target_namespace::undo(&self.client, &options.namespace, uid).await;
            }
        }
        result.map(|mut outcome| {
            outcome.created_namespace = match target {
                TargetNamespace::Exists => None,
                _ => Some(options.namespace.clone()),
            };
            outcome
        })
    }

    async fn run_in(
        &self,
        manifests: Vec<Manifest>,
        options: &RunOptions,
        cache: Option<Cache<'_>>,
        target: &TargetNamespace,
    ) -> Result<Outcome, EngineError> {
        let client = &self.client;
        let applyset = ApplySet::new(&options.name, &options.namespace);
        let resolved = self
            .resolve_refreshing(manifests, &options.namespace, &applyset)
            .await?;
        let refused: Vec<Problem> = resolved
            .iter()
            .filter_map(|r| {
                let manifest = &r.manifest;
                options
                    .tenancy
                    .refusal(&manifest.object_ref(), &manifest.origin)
            })
            .collect();
        if !refused.is_empty() {
            return Err(EngineError::Rejected(refused));
        }
        let reader = &self.reader;
        let mut new_namespaces = namespaces_created_here(reader, &resolved, cache.as_ref()).await?;
        if *target == TargetNamespace::WouldCreate {
            new_namespaces.insert(options.namespace.clone());
        }
        let mut desired = fetch_and_dry_run(
            client,
            resolved,
            &new_namespaces,
            cache.as_ref(),
            &options.drift,
        )
        .await?;
        ownership::settle(
            reader,
            &applyset,
            &options.name,
            options.adoption,
            &mut desired,
        )
        .await?;
        let jobs = run_once::settle(client, &applyset, &mut desired).await?;
        // A cache exists only after a successful run, which wrote the parent.
        let recorded = match &cache {
            Some(cache) => Some(cache.recorded.clone()),
            None => self.recorded_kinds(&applyset).await?,
        };
        let scope = match cache {
            Some(_) => &options.scope,
            None => &Scope::Full,
        };
        let kinds = match scope {
            Scope::Targeted { .. } => recorded.clone().unwrap_or_default(),
            Scope::Full => member_kinds(recorded.clone().unwrap_or_default(), &desired),
        };
        let owned = match scope {
            Scope::Targeted { .. } => Vec::new(),
            Scope::Full => {
                let parsed = parsed_lives(&desired);
                self.members(&applyset, &kinds, cache.as_ref(), &parsed)
                    .await?
            }
        };
        let mut memo = memo_seed(&desired, cache.as_ref().map(|c| c.memo));
        let deferred = deferred_objects(&desired);
        let plan_options = PlanOptions {
            prune: options.prune && scope.is_full(),
            allow_mass_prune: options.allow_mass_prune,
        };
        // Helm's install hooks run at the first sync, its upgrade hooks at later ones.
        let sync = match recorded {
            Some(_) => SyncKind::Upgrade,
            None => SyncKind::Install,
        };
        let plan = plan::plan(desired, &owned, plan_options)?.at(sync);
        forget_unchanged_dry_runs(&plan, &mut memo);
        if options.dry_run && plan.has_changes() {
            validate_hooks(client, &self.discovery, &plan, &new_namespaces).await?;
        }
        if options.dry_run || !plan.has_changes() {
            if !options.dry_run {
                run_once::remember(client, &applyset, jobs, &plan, &[], scope).await?;
            }
            return Ok(Outcome {
                plan,
                applied: false,
                memo,
                member_kinds: kinds,
                sync: SyncLog::default(),
                created_namespace: None,
                jobs_written: HashMap::new(),
            });
        }
        let target = Target {
            applyset: &applyset,
            scope,
            kinds: &kinds,
            timeout: options.timeout,
            progress: options.progress.as_ref(),
            recorded: recorded.as_ref(),
            reader,
            health: self.health_model(),
        };
        let Executed { written, log } =
            execute(client, &self.discovery, &target, &plan, &deferred).await?;
        run_once::remember(client, &applyset, jobs, &plan, &written, scope).await?;
        let jobs_written = written
            .iter()
            .filter(|(object, _)| run_once::is_run_once(object))
            .map(|(object, answer)| (object.clone(), Arc::new(answer.clone())))
            .collect();
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
            sync: log,
            created_namespace: None,
            jobs_written,
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

    /// The kinds the parent records; `None` when there is no parent yet.
    async fn recorded_kinds(
        &self,
        applyset: &ApplySet,
    ) -> Result<Option<BTreeSet<GroupKind>>, EngineError> {
        let parent = self
            .client
            .get_opt(&parent_path(applyset))
            .await
            .map_err(|source| api_error(&applyset.parent_ref(), source))?;
        Ok(parent.map(|p| applyset::recorded_group_kinds(Some(&p))))
    }

    /// The live members: from the store for kinds it covers (sharing the copies
    /// the desired objects hold, `parsed`), listed otherwise.
    async fn members(
        &self,
        applyset: &ApplySet,
        kinds: &BTreeSet<GroupKind>,
        cache: Option<&Cache<'_>>,
        parsed: &HashMap<ObjectRef, Arc<Value>>,
    ) -> Result<Vec<Arc<Value>>, EngineError> {
        let covered = |gk: &GroupKind| cache.is_some_and(|c| c.covered.contains(gk));
        let shared = |object: &ObjectRef| parsed.get(object).cloned();
        let mut members: Vec<Arc<Value>> = match cache {
            Some(cache) => kinds
                .iter()
                .filter(|gk| covered(gk))
                .flat_map(|gk| cache.store.of_kind_sharing(&gk.group, &gk.kind, shared))
                .filter(|live| applyset.is_member(live))
                .collect(),
            None => Vec::new(),
        };
        let to_list: BTreeSet<GroupKind> =
            kinds.iter().filter(|gk| !covered(gk)).cloned().collect();
        let listed = list_members(&self.reader, &self.discovery, applyset, &to_list).await?;
        members.extend(listed.into_iter().map(Arc::new));
        Ok(members)
    }
}

/// The live copies the desired objects already hold, by identity.
fn parsed_lives(desired: &[Desired]) -> HashMap<ObjectRef, Arc<Value>> {
    desired
        .iter()
        .filter_map(|d| Some((d.manifest.object_ref(), d.live.clone()?)))
        .collect()
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
        if let Err(problem) = check_role(&manifest) {
            problems.extend(problem);
            continue;
        }
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

/// Whether `manifest` is applied: `Err(None)` when its annotations skip it (Argo
/// CD's `Skip`, Helm hooks a sync never runs), `Err(Some(problem))` when they are
/// invalid or it has only a generateName without being a hook.
fn check_role(manifest: &Manifest) -> Result<(), Option<Problem>> {
    let object = match manifest.generate_name() {
        Some(prefix) if manifest.name().is_empty() => format!("{}{prefix}*", manifest.object_ref()),
        _ => manifest.object_ref().to_string(),
    };
    let problem = |message| {
        Some(Problem {
            object: Some(object.clone()),
            origin: manifest.origin.clone(),
            message,
        })
    };
    let metadata = manifest.body.get("metadata").and_then(Value::as_object);
    match order::role(metadata) {
        Err(message) => Err(problem(message)),
        Ok(order::Disposition::Skipped(why)) => {
            info!(object = %manifest.object_ref(), origin = %manifest.origin, %why, "not applied");
            Err(None)
        }
        Ok(order::Disposition::Placed(placement)) => {
            if manifest.name().is_empty() && !placement.is_hook() {
                return Err(problem(order::generate_name_outside_hook()));
            }
            Ok(())
        }
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

fn api_error(object: &ObjectRef, source: KubeError) -> EngineError {
    EngineError::Api {
        object: object.to_string(),
        source,
    }
}
