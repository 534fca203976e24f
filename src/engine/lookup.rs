//! Reading what the plan needs: each desired object's live state and the server's
//! dry-run of it. Live objects come from the daemon's watch store when it covers
//! the kind, from one LIST per (kind, namespace) when many are wanted, else one GET
//! each; a managedFields proof or the memo spares the dry-run when it can.

use super::evaluate::{Existing, Location};
use super::memo::{desired_hash, live_version};
use super::writes::{Refusal, problems, send_to};
use super::{CONCURRENCY, DriftRules, EngineError, Memo, Resolved, api_error};
use crate::compact::CompactObject;
use crate::engine::order;
use crate::engine::plan::{Desired, Evaluation};
use crate::engine::run_once;
use crate::kube::GroupKind;
use crate::kube::Meta;
use crate::kube::watch::Store;
use crate::kube::{ApiResource, Client, Error as KubeError, ListParams};
use crate::manifest::{Manifest, ObjectRef};
use futures::FutureExt;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// What a long-running caller (the daemon) knows between runs. With it, an object
/// whose manifest and live resourceVersion are unchanged costs no request: live
/// objects come from the watch-fed store and dry-runs from the memo.
pub struct Cache<'a> {
    pub store: &'a Store,
    /// Kinds whose reflectors have synced: the store is complete for them.
    pub covered: BTreeSet<GroupKind>,
    /// The member kinds of the previous run ([`super::Outcome::member_kinds`]).
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

/// Namespaces in the set that do not exist yet: objects inside them cannot be
/// dry-run until the first stage has created them.
pub(super) async fn namespaces_created_here(
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
pub(super) async fn fetch_and_dry_run(
    client: &Client,
    resolved: Vec<Resolved>,
    new_namespaces: &BTreeSet<String>,
    cache: Option<&Cache<'_>>,
    rules: &DriftRules,
) -> Result<Vec<Desired>, EngineError> {
    let lookup = LiveLookup::prefetch(client, &resolved, new_namespaces, cache).await?;
    let lookup = &lookup;
    let results: Vec<Result<Desired, Refusal>> = stream::iter(resolved)
        .map(|r| fetch_one(client, r, new_namespaces, lookup, rules).boxed())
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
            if order::placement_of(&r.manifest.body).is_hook() {
                continue;
            }
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

    /// The live object's head ([`Store::head_at`]) when the memo proves `manifest`
    /// in sync from the store's resourceVersion alone. Why: in a steady full resync
    /// nearly every object is such a hit, and parsing each live body for it was
    /// that resync's peak memory. Only where nothing else reads the body: no ignore
    /// rules (their payload keeps live values), no run-once Job (its status
    /// decides), and a memo without a dry-run answer (that one is compared with it).
    fn unchanged(&self, manifest: &Manifest, rules: &DriftRules) -> Option<Arc<Value>> {
        let cache = self.cache?;
        let object = manifest.object_ref();
        let plain = cache.covers(&object)
            && !run_once::is_run_once(&object)
            && rules.ignore.for_object(&object).is_empty();
        let memo = cache
            .memo
            .get(&object)
            .filter(|m| plain && m.dry_run.is_none())?;
        let head = cache.store.head_at(&object, &memo.live_version)?;
        (memo.desired == desired_hash(manifest)).then_some(head)
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
        let name = item.name()?.to_string();
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

/// What an object the lookup did not find turns out to be.
enum Absence {
    /// Not in the cluster: the server's dry-run of its creation.
    New(Value),
    /// In the cluster outside the ApplySet, so not in the members' store (another
    /// source's, or made with kubectl): read, to be compared and its owner
    /// respected like any existing object.
    Outside(Arc<Value>),
}

/// Dry-runs an object the lookup did not find. A dry-run apply over an existing
/// object answers with its resourceVersion (a creation has none): then it is read.
async fn absent_or_outside(
    client: &Client,
    resource: &ApiResource,
    path: &str,
    manifest: &Manifest,
    lookup: &LiveLookup<'_>,
) -> Result<Absence, KubeError> {
    let dry_run = match lookup.remembered(manifest, None) {
        Some(Memo {
            dry_run: Some(dry_run),
            ..
        }) => dry_run.as_ref().clone(),
        _ => send_to(client, resource, manifest, true).await?,
    };
    if live_version(Some(&dry_run)).is_empty() {
        return Ok(Absence::New(dry_run));
    }
    match client.get_opt(path).await? {
        Some(live) => Ok(Absence::Outside(Arc::new(live))),
        None => Ok(Absence::New(dry_run)),
    }
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
    rules: &DriftRules,
) -> Result<Desired, Refusal> {
    // A hook is created anew each time it runs, never compared with a live object:
    // it is validated only when the run writes something (see `execute`).
    if order::placement_of(&r.manifest.body).is_hook() {
        return Ok(Desired::new(r.manifest, None, Evaluation::Deferred));
    }
    let reject = |e: KubeError| Refusal::of(r.manifest.object_ref(), &r.manifest.origin, e);
    let waits_for_namespace = r
        .manifest
        .namespace()
        .is_some_and(|ns| new_namespaces.contains(ns));
    let Some(resource) = r.resource.as_ref().filter(|_| !waits_for_namespace) else {
        return Ok(Desired::new(r.manifest, None, Evaluation::Deferred));
    };
    if let Some(head) = lookup.unchanged(&r.manifest, rules) {
        return Ok(Desired::new(r.manifest, Some(head), Evaluation::InSync));
    }
    let ns = r.manifest.namespace();
    let path = resource.path(ns, Some(r.manifest.name()));
    let known = match lookup.known(&r.manifest.object_ref()) {
        Some(live) => live,
        None => client.get_opt(&path).await.map_err(reject)?.map(Arc::new),
    };
    let live = match known {
        Some(live) => live,
        None => match absent_or_outside(client, resource, &path, &r.manifest, lookup).await {
            Ok(Absence::New(dry_run)) => {
                // Created as written (the ignore rules are for existing ones).
                return Ok(Desired::new(r.manifest, None, Evaluation::Server(dry_run)));
            }
            Ok(Absence::Outside(live)) => live,
            Err(e) => return Err(reject(e)),
        },
    };
    let existing = Existing::read(r.manifest, live, rules);
    if let Some(memo) = lookup.remembered(&existing.manifest, Some(existing.live())) {
        return Ok(existing.remembered(memo));
    }
    let at = Location {
        client,
        resource,
        path: &path,
    };
    existing.evaluate(&at).await
}
