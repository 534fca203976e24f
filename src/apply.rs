//! The engine: one run of manifests → plan → (optionally) writes, for `converge
//! apply`, `converge diff` and, later, each reconcile of the daemon.
//!
//! It gathers what the plan needs from the server — discovery, live objects, the
//! server's own dry-run of every object, the ApplySet's members — and then executes
//! the plan in stages: CRDs and Namespaces first (waiting until CRDs are
//! Established), then everything else in kind order, then prunes in reverse order.
//! Every object is dry-run before the first write, so a revision the server would
//! reject (invalid values, unknown kinds) writes nothing. Policy (what to prune, the
//! mass-prune guard, ordering) is decided by [`crate::plan`], not here.

use crate::inventory::{self, ApplySet, GroupKind};
use crate::kube::{ApiResource, Client, Discovery, Error as KubeError};
use crate::manifest::{self, Manifest, ObjectRef, Problem};
use crate::plan::{self, Action, Desired, Plan, PlanError, PlanOptions, Step};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tracing::{Instrument, info, info_span};

/// The field manager converge applies with (server-side apply ownership).
pub const FIELD_MANAGER: &str = "converge";
/// Requests in flight at once while reading or writing objects.
const CONCURRENCY: usize = 32;
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
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "{} object(s) cannot be applied; nothing was written:\n{}",
        .0.len(),
        .0.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n")
    )]
    Rejected(Vec<Problem>),
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

/// The result of a run: the plan and whether it was carried out.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub applied: bool,
}

/// One desired object resolved against discovery.
struct Resolved {
    manifest: Manifest,
    /// `None` while its kind is only defined by a CRD of this same run.
    resource: Option<ApiResource>,
}

/// Plans `manifests` against the cluster and, unless `dry_run`, converges it.
pub async fn run(
    client: &Client,
    manifests: Vec<Manifest>,
    options: &RunOptions,
) -> Result<Outcome, EngineError> {
    let span = info_span!("run", applyset = %options.name, objects = manifests.len(), dry_run = options.dry_run);
    async {
        let mut discovery = Discovery::new(client)
            .await
            .map_err(EngineError::Discovery)?;
        let applyset = ApplySet::new(&options.name, &options.namespace);
        let resolved = resolve(&discovery, manifests, &options.namespace, &applyset)?;
        let new_namespaces = namespaces_created_here(client, &resolved).await?;
        let desired = fetch_and_dry_run(client, resolved, &new_namespaces).await?;
        let parent = client
            .get_opt(&parent_path(&applyset))
            .await
            .map_err(|source| api_error(&applyset.parent_ref(), source))?;
        let kinds = member_kinds(parent.as_ref(), &desired);
        let owned = list_members(client, &discovery, &applyset, &kinds).await?;
        let options_plan = PlanOptions {
            prune: options.prune,
            allow_mass_prune: options.allow_mass_prune,
        };
        let plan = plan::plan(desired, &owned, options_plan)?;
        if options.dry_run || !plan.has_changes() {
            return Ok(Outcome {
                plan,
                applied: false,
            });
        }
        execute(client, &mut discovery, &applyset, &plan, &kinds).await?;
        Ok(Outcome {
            plan,
            applied: true,
        })
    }
    .instrument(span)
    .await
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
    let manifests: Vec<Manifest> = resolved.iter().map(|r| r.manifest.clone()).collect();
    problems.extend(manifest::find_duplicates(&manifests));
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
) -> Result<BTreeSet<String>, EngineError> {
    let mut missing = BTreeSet::new();
    for r in resolved
        .iter()
        .filter(|r| r.manifest.group().is_empty() && r.manifest.kind == "Namespace")
    {
        let path = format!("/api/v1/namespaces/{}", r.manifest.name());
        let live = client
            .get_opt(&path)
            .await
            .map_err(|e| api_error(&r.manifest.object_ref(), e))?;
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
) -> Result<Vec<Desired>, EngineError> {
    let results: Vec<Result<Desired, Problem>> = stream::iter(resolved)
        .map(|r| fetch_one(client, r, new_namespaces))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let (desired, rejected): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let rejected: Vec<Problem> = rejected.into_iter().filter_map(Result::err).collect();
    if !rejected.is_empty() {
        return Err(EngineError::Rejected(rejected));
    }
    Ok(desired.into_iter().filter_map(Result::ok).collect())
}

async fn fetch_one(
    client: &Client,
    r: Resolved,
    new_namespaces: &BTreeSet<String>,
) -> Result<Desired, Problem> {
    let reject = |e: KubeError| Problem {
        object: Some(r.manifest.object_ref().to_string()),
        origin: r.manifest.origin.clone(),
        message: e.to_string(),
    };
    let waits_for_namespace = r
        .manifest
        .namespace()
        .is_some_and(|ns| new_namespaces.contains(ns));
    let Some(resource) = r.resource.as_ref().filter(|_| !waits_for_namespace) else {
        return Ok(Desired {
            manifest: r.manifest,
            live: None,
            dry_run: None,
        });
    };
    let body = Value::Object(r.manifest.body.clone());
    let ns = r.manifest.namespace();
    if r.manifest.name().is_empty() {
        // generateName: every apply creates a new object; validate with a dry-run POST.
        let dry_run = client
            .create(&resource.path(ns, None), &body, true)
            .await
            .map_err(reject)?;
        return Ok(Desired {
            manifest: r.manifest,
            live: None,
            dry_run: Some(dry_run),
        });
    }
    let path = resource.path(ns, Some(r.manifest.name()));
    let live = client.get_opt(&path).await.map_err(reject)?;
    let dry_run = client
        .apply(&path, &body, FIELD_MANAGER, true, true)
        .await
        .map_err(reject)?;
    Ok(Desired {
        manifest: r.manifest,
        live,
        dry_run: Some(dry_run),
    })
}

/// The group-kinds to look for members in: what the parent recorded (objects of
/// earlier revisions) and what is desired now.
fn member_kinds(parent: Option<&Value>, desired: &[Desired]) -> BTreeSet<GroupKind> {
    let mut kinds = inventory::recorded_group_kinds(parent);
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
    let selector = applyset.member_selector();
    let lists = stream::iter(
        kinds
            .iter()
            .filter_map(|gk| discovery.resolve(&gk.group, "", &gk.kind).ok()),
    )
    .map(|resource| {
        let selector = selector.clone();
        async move {
            let path = format!("{}?labelSelector={selector}", resource.path(None, None));
            client.list(&path).await.map_err(|source| EngineError::Api {
                object: format!("list {}", resource.kind),
                source,
            })
        }
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

/// Carries out a plan: parent first (recording every kind that may hold members,
/// so an interrupted run can still prune later), stage one, stage two by kind rank,
/// prunes, and finally the parent narrowed to what is now desired.
async fn execute(
    client: &Client,
    discovery: &mut Discovery,
    applyset: &ApplySet,
    plan: &Plan,
    kinds: &BTreeSet<GroupKind>,
) -> Result<(), EngineError> {
    let (first, rest): (Vec<&Step>, Vec<&Step>) = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Create | Action::Configure))
        .partition(|s| plan::is_first_stage(&s.object.group, &s.object.kind));
    apply_all(client, discovery, &first).await?;
    if first
        .iter()
        .any(|s| s.object.kind == "CustomResourceDefinition")
    {
        wait_for_crds(client, &first).await?;
        discovery.refresh().await.map_err(EngineError::Discovery)?;
    }
    let all_namespaces = plan
        .steps
        .iter()
        .filter_map(|s| s.object.namespace.clone())
        .collect();
    write_parent(client, applyset, kinds, &all_namespaces).await?;
    for rank in group_by_rank(&rest) {
        apply_all(client, discovery, &rank).await?;
    }
    prune(client, discovery, plan).await?;
    let desired_kinds = plan
        .steps
        .iter()
        .filter(|s| s.manifest.is_some())
        .map(|s| GroupKind::from(&s.object))
        .collect();
    let desired_namespaces = plan
        .steps
        .iter()
        .filter(|s| s.manifest.is_some())
        .filter_map(|s| s.object.namespace.clone())
        .collect();
    write_parent(client, applyset, &desired_kinds, &desired_namespaces).await
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
        .apply(&parent_path(applyset), &body, FIELD_MANAGER, true, false)
        .await
        .map_err(|e| api_error(&applyset.parent_ref(), e))?;
    Ok(())
}

fn parent_path(applyset: &ApplySet) -> String {
    format!(
        "/api/v1/namespaces/{}/configmaps/{}",
        applyset.namespace, applyset.parent_name
    )
}

/// Server-side applies (or, for generateName objects, creates) the steps concurrently.
async fn apply_all(
    client: &Client,
    discovery: &Discovery,
    steps: &[&Step],
) -> Result<(), EngineError> {
    stream::iter(steps)
        .map(|step| apply_one(client, discovery, step))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn apply_one(client: &Client, discovery: &Discovery, step: &Step) -> Result<(), EngineError> {
    let Some(manifest) = &step.manifest else {
        return Ok(());
    };
    let resource = discovery
        .resolve(manifest.group(), manifest.version(), &manifest.kind)
        .map_err(|e| api_error(&step.object, e))?;
    let body = Value::Object(manifest.body.clone());
    let ns = manifest.namespace();
    let result = if manifest.name().is_empty() {
        client.create(&resource.path(ns, None), &body, false).await
    } else {
        client
            .apply(
                &resource.path(ns, Some(manifest.name())),
                &body,
                FIELD_MANAGER,
                true,
                false,
            )
            .await
    };
    result.map_err(|e| api_error(&step.object, e))?;
    info!(object = %step.object, action = %step.action, "applied");
    Ok(())
}

async fn wait_for_crds(client: &Client, steps: &[&Step]) -> Result<(), EngineError> {
    for step in steps
        .iter()
        .filter(|s| s.object.kind == "CustomResourceDefinition")
    {
        let path = format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}",
            step.object.name
        );
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
        match client
            .delete(&path, step.live_uid.as_deref(), "Background")
            .await
        {
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
