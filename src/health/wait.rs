//! Waiting for applied objects to become ready: `converge apply --wait`.
//!
//! One reflector per kind of the applied objects (list, then watch, filtered by the
//! ApplySet's member label) fills a [`Store`]; each change re-assesses the object
//! it is about. Nothing is polled: between changes the only work is a once-a-second
//! tick that lets the caller redraw its progress line.
//!
//! The wait ends when every object is ready, as soon as one has failed (its outcome
//! is decided and the user wants to know now), or at the timeout. Then
//! [`explain`] gathers [`Evidence`] for every object that is not ready.

use super::{Evidence, Health, HealthModel, State, assess_gone};
use crate::kube::GroupKind;
use crate::kube::Meta;
use crate::kube::watch::{Change, Follower, Reflector, Sighting, Store};
use crate::kube::{Client, Discovery};
use crate::manifest::ObjectRef;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

/// How often the progress callback is called while nothing changes.
const TICK: Duration = Duration::from_secs(1);
/// Objects whose evidence is gathered at most; more would bury the first ones.
pub(crate) const MAX_EXPLAINED: usize = 10;
/// How long gathering evidence may take after the wait, all objects together.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// An object to wait for, and where its history starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitFor {
    pub object: ObjectRef,
    /// The object as its own create (or apply) returned it, when known: it is then
    /// followed from that version ([`Follower`]), so that a Job that completes and
    /// is deleted by its TTL before a list could see it counts as completed, not
    /// missing. Others are listed and watched with their kind.
    pub since: Option<Arc<Value>>,
}

impl WaitFor {
    /// Watched with its kind from a list.
    pub fn listed(object: ObjectRef) -> Self {
        WaitFor {
            object,
            since: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    pub timeout: Duration,
}

/// Where a wait stands, for a progress line.
#[derive(Debug)]
pub struct Progress<'a> {
    pub ready: usize,
    pub total: usize,
    pub elapsed: Duration,
    /// The first object (in apply order) that is not ready yet.
    pub waiting_for: Option<&'a WaitedObject>,
}

/// An object waited for: its latest health, with evidence when it is not ready.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitedObject {
    #[serde(serialize_with = "as_string")]
    pub object: ObjectRef,
    #[serde(flatten)]
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// The live object the health was assessed from.
    #[serde(skip)]
    pub live: Option<Arc<Value>>,
}

fn as_string<S: serde::Serializer>(object: &ObjectRef, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(object)
}

/// The result of [`wait`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitOutcome {
    /// Every waited-for object, in the order given.
    pub objects: Vec<WaitedObject>,
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
    pub timed_out: bool,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

impl WaitOutcome {
    pub fn all_ready(&self) -> bool {
        self.objects.iter().all(|o| o.health.state == State::Ready)
    }

    /// This wait and then `next`, as one: a phase whose hooks were waited for
    /// one after the other.
    pub fn followed_by(mut self, next: WaitOutcome) -> WaitOutcome {
        self.objects.extend(next.objects);
        self.elapsed += next.elapsed;
        self.timed_out |= next.timed_out;
        self
    }

    pub fn count(&self, state: State) -> usize {
        self.objects
            .iter()
            .filter(|o| o.health.state == state)
            .count()
    }
}

/// Waits until every one of `objects` (members of the ApplySet that `selector`
/// selects) is ready by `model`, one has failed, or `options.timeout` has passed.
/// Calls `progress` at every change and every second.
pub async fn wait(
    client: &Client,
    discovery: &Discovery,
    model: &HealthModel,
    selector: &str,
    objects: &[WaitFor],
    options: WaitOptions,
    progress: impl FnMut(&Progress),
) -> WaitOutcome {
    let span = info_span!("wait", objects = objects.len(), timeout = ?options.timeout);
    let tracker = Tracker::new(objects, model.clone());
    wait_inner(
        client, discovery, selector, tracker, objects, options, progress,
    )
    .instrument(span)
    .await
}

async fn wait_inner(
    client: &Client,
    discovery: &Discovery,
    selector: &str,
    mut tracker: Tracker,
    objects: &[WaitFor],
    options: WaitOptions,
    mut progress: impl FnMut(&Progress),
) -> WaitOutcome {
    let started = Instant::now();
    let deadline = deadline_after(options.timeout);
    let store = Store::default();
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let (sightings_tx, mut sightings) = mpsc::unbounded_channel();
    let _followers = follow(client, discovery, objects, &sightings_tx, &mut tracker);
    let watch = Watch {
        client,
        selector,
        store: &store,
        changes: &changes_tx,
    };
    let mut reflectors = watch.spawn(discovery, &mut tracker);
    // Judge each kind once its first list is complete, not object by object
    // while the list is still arriving.
    for (gk, reflector) in &mut reflectors {
        if tokio::time::timeout_at(deadline, reflector.wait_synced())
            .await
            .is_err()
        {
            break;
        }
        tracker.assess_kind(&store, gk);
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    loop {
        progress(&tracker.progress(started.elapsed()));
        if tracker.is_decided() {
            return tracker.finish(started.elapsed(), false);
        }
        tokio::select! {
            Some((object, sighting)) = sightings.recv() => tracker.sight(&object, sighting),
            Some(change) = changes.recv() => {
                tracker.assess(&store, &change.object);
                while let Ok(change) = changes.try_recv() {
                    tracker.assess(&store, &change.object);
                }
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return tracker.finish(started.elapsed(), true);
            }
        }
    }
}

/// One [`Follower`] per object with a known create version; kinds discovery does
/// not know fail their objects.
fn follow(
    client: &Client,
    discovery: &Discovery,
    objects: &[WaitFor],
    sightings: &mpsc::UnboundedSender<(ObjectRef, Sighting)>,
    tracker: &mut Tracker,
) -> Vec<Follower> {
    let mut followers = Vec::new();
    for wanted in objects {
        let Some(version) = wanted
            .since
            .as_deref()
            .map(|since| since.resource_version().unwrap_or_default().to_string())
        else {
            continue;
        };
        let object = &wanted.object;
        match discovery.resolve(&object.group, "", &object.kind) {
            Ok(resource) => followers.push(Follower::spawn(
                client.clone(),
                resource,
                object.clone(),
                version,
                sightings.clone(),
            )),
            Err(e) => tracker.unwatchable(&GroupKind::from(object), &e.to_string()),
        }
    }
    followers
}

/// What the reflectors of one wait share.
struct Watch<'a> {
    client: &'a Client,
    selector: &'a str,
    store: &'a Store,
    changes: &'a mpsc::UnboundedSender<Change>,
}

impl Watch<'_> {
    /// One reflector per kind of the tracked objects; kinds discovery does not
    /// know fail their objects.
    fn spawn(&self, discovery: &Discovery, tracker: &mut Tracker) -> Vec<(GroupKind, Reflector)> {
        let mut reflectors = Vec::new();
        for gk in tracker.kinds() {
            match discovery.resolve(&gk.group, "", &gk.kind) {
                Ok(resource) => {
                    let reflector = Reflector::spawn(
                        self.client.clone(),
                        resource,
                        self.selector.to_string(),
                        self.store.clone(),
                        self.changes.clone(),
                    );
                    reflectors.push((gk, reflector));
                }
                Err(e) => tracker.unwatchable(&gk, &e.to_string()),
            }
        }
        reflectors
    }
}

/// `timeout` from now; a timeout too large for the clock means "a year".
fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// The health of every waited-for object, updated one change at a time.
struct Tracker {
    objects: Vec<WaitedObject>,
    index: HashMap<ObjectRef, usize>,
    /// Kinds discovery cannot resolve: their objects stay failed.
    unwatched: BTreeSet<GroupKind>,
    /// Objects followed from their create: judged by what their follower saw.
    followed: HashSet<ObjectRef>,
    model: HealthModel,
}

impl Tracker {
    fn new(wanted: &[WaitFor], model: HealthModel) -> Self {
        let followed = wanted
            .iter()
            .filter(|w| w.since.is_some())
            .map(|w| w.object.clone())
            .collect();
        let objects: Vec<WaitedObject> = wanted
            .iter()
            .map(|w| &w.object)
            .map(|object| WaitedObject {
                object: object.clone(),
                health: Health::progressing(format!(
                    "not observed yet (waiting for the watch on {})",
                    object.kind
                )),
                evidence: None,
                live: None,
            })
            .collect();
        let index = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.object.clone(), i))
            .collect();
        let mut tracker = Tracker {
            objects,
            index,
            unwatched: BTreeSet::new(),
            followed,
            model,
        };
        // A watch from a version sends what happens after it: the create itself is
        // the object's first state.
        for w in wanted {
            if let Some(first) = &w.since {
                tracker.sight(&w.object, Sighting::Seen(Value::clone(first)));
            }
        }
        tracker
    }

    /// The kinds to list and watch: those of the objects not followed.
    fn kinds(&self) -> BTreeSet<GroupKind> {
        self.objects
            .iter()
            .filter(|o| !self.followed.contains(&o.object))
            .map(|o| GroupKind::from(&o.object))
            .collect()
    }

    /// What a follower saw of `object`.
    fn sight(&mut self, object: &ObjectRef, sighting: Sighting) {
        let Some(&i) = self.index.get(object) else {
            return;
        };
        let entry = &mut self.objects[i];
        let (health, live) = match sighting {
            Sighting::Seen(live) => (self.model.assess(&live), Some(live)),
            Sighting::Gone(last) => (assess_gone(last.as_ref()), last),
        };
        if health != entry.health {
            debug!(object = %object, state = %health.state, message = %health.message, "health");
        }
        entry.health = health;
        entry.live = live.map(Arc::new);
    }

    /// A kind discovery cannot resolve cannot be watched: its objects fail.
    fn unwatchable(&mut self, gk: &GroupKind, why: &str) {
        self.unwatched.insert(gk.clone());
        for o in self
            .objects
            .iter_mut()
            .filter(|o| GroupKind::from(&o.object) == *gk)
        {
            o.health = Health::failed(format!("cannot watch {}: {why}", o.object.kind));
        }
    }

    /// Assesses every object of `gk` once its reflector has listed them.
    fn assess_kind(&mut self, store: &Store, gk: &GroupKind) {
        let refs: Vec<ObjectRef> = self
            .index
            .keys()
            .filter(|o| GroupKind::from(*o) == *gk)
            .cloned()
            .collect();
        for object in refs {
            self.assess(store, &object);
        }
    }

    fn assess(&mut self, store: &Store, object: &ObjectRef) {
        let Some(&i) = self.index.get(object) else {
            return;
        };
        if self.unwatched.contains(&GroupKind::from(object)) || self.followed.contains(object) {
            return;
        }
        let entry = &mut self.objects[i];
        entry.live = store.get_shared(object);
        let health = self.model.assess_opt(entry.live.as_deref());
        if health != entry.health {
            debug!(object = %object, state = %health.state, message = %health.message, "health");
        }
        entry.health = health;
    }

    /// Everything is ready, or something failed.
    fn is_decided(&self) -> bool {
        self.objects.iter().all(|o| o.health.state == State::Ready)
            || self.objects.iter().any(|o| o.health.state == State::Failed)
    }

    fn progress(&self, elapsed: Duration) -> Progress<'_> {
        Progress {
            ready: self
                .objects
                .iter()
                .filter(|o| o.health.state == State::Ready)
                .count(),
            total: self.objects.len(),
            elapsed,
            waiting_for: self.objects.iter().find(|o| o.health.state != State::Ready),
        }
    }

    fn finish(self, elapsed: Duration, timed_out: bool) -> WaitOutcome {
        WaitOutcome {
            objects: self.objects,
            elapsed,
            timed_out,
        }
    }
}

/// Gathers [`Evidence`] for the objects of `outcome` that are not ready (failed
/// ones first, at most [`MAX_EXPLAINED`], four at a time, within 15 seconds).
pub async fn explain(client: &Client, outcome: &mut WaitOutcome) {
    let mut todo: Vec<usize> = (0..outcome.objects.len())
        .filter(|&i| outcome.objects[i].health.state != State::Ready)
        .collect();
    todo.sort_by_key(|&i| outcome.objects[i].health.state != State::Failed);
    todo.truncate(MAX_EXPLAINED);
    let jobs = todo.into_iter().filter_map(|i| {
        let live = outcome.objects[i].live.clone()?;
        Some(async move { (i, super::gather(client, &live).await) })
    });
    let gathered = stream::iter(jobs).buffer_unordered(4).collect::<Vec<_>>();
    let gathered = tokio::time::timeout(EXPLAIN_TIMEOUT, gathered)
        .await
        .unwrap_or_default();
    for (i, evidence) in gathered {
        outcome.objects[i].evidence = Some(evidence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm_ref(name: &str) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    #[test]
    fn tracker_is_decided_when_all_ready_or_one_failed() {
        let mut tracker = Tracker::new(
            &[WaitFor::listed(cm_ref("a")), WaitFor::listed(cm_ref("b"))],
            HealthModel::default(),
        );
        assert_eq!(tracker.kinds().len(), 1);
        assert!(!tracker.is_decided());
        let store = Store::default();
        let configmaps = GroupKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        };
        tracker.assess_kind(&store, &configmaps);
        assert_eq!(tracker.objects[0].health.state, State::Missing);
        assert!(!tracker.is_decided());
        tracker.objects[0].health = Health::ready("exists");
        let progress = tracker.progress(Duration::ZERO);
        assert_eq!((progress.ready, progress.total), (1, 2));
        assert_eq!(
            progress.waiting_for.map(|o| o.object.name.as_str()),
            Some("b")
        );
        tracker.objects[1].health = Health::failed("no");
        assert!(tracker.is_decided());
    }

    fn job(conditions: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "migrate", "namespace": "ns", "resourceVersion": "7"},
               "status": {"conditions": conditions}})
    }

    #[test]
    fn a_followed_job_is_judged_by_what_it_did_before_it_was_deleted() {
        let object = ObjectRef::of_live(&job(json!([]))).expect("a ref");
        let created = WaitFor {
            object: object.clone(),
            since: Some(Arc::new(job(json!([])))),
        };
        let mut tracker = Tracker::new(&[created], HealthModel::default());
        assert!(tracker.kinds().is_empty(), "followed, not listed");
        assert_eq!(tracker.objects[0].health.state, State::Progressing);
        let complete = json!([{"type": "Complete", "status": "True"}]);
        let mut reaped = job(complete);
        reaped["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        tracker.sight(&object, Sighting::Seen(reaped.clone()));
        assert_eq!(
            tracker.objects[0].health.state,
            State::Ready,
            "deleted, still complete"
        );
        tracker.sight(&object, Sighting::Gone(Some(reaped)));
        assert_eq!(
            tracker.objects[0].health,
            Health::ready("completed (0 succeeded) (deleted since)")
        );
        tracker.sight(&object, Sighting::Gone(Some(job(json!([])))));
        assert_eq!(tracker.objects[0].health.state, State::Missing);
        assert_eq!(
            tracker.objects[0].health.message,
            "deleted before it finished"
        );
        let failed =
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]);
        tracker.sight(&object, Sighting::Gone(Some(job(failed))));
        assert_eq!(tracker.objects[0].health.state, State::Failed);
    }

    #[test]
    fn unwatchable_kinds_fail_their_objects() {
        let mut tracker = Tracker::new(&[WaitFor::listed(cm_ref("a"))], HealthModel::default());
        let configmaps = GroupKind {
            group: String::new(),
            kind: "ConfigMap".into(),
        };
        tracker.unwatchable(&configmaps, "unknown kind");
        tracker.assess_kind(&Store::default(), &configmaps);
        assert_eq!(
            tracker.objects[0].health,
            Health::failed("cannot watch ConfigMap: unknown kind")
        );
    }

    #[test]
    fn outcome_serializes_objects_as_strings_with_flat_health() {
        let outcome = WaitOutcome {
            objects: vec![WaitedObject {
                object: cm_ref("a"),
                health: Health::ready("exists"),
                evidence: None,
                live: Some(Arc::new(json!({"data": {"secret": "x"}}))),
            }],
            elapsed: Duration::from_millis(1234),
            timed_out: false,
        };
        let value = serde_json::to_value(&outcome).expect("serializes");
        assert_eq!(
            value,
            json!({"objects": [{"object": "ConfigMap/ns/a", "state": "ready", "message": "exists", "rule": "built-in"}],
                   "elapsed": 1.2, "timedOut": false})
        );
        assert!(outcome.all_ready());
    }
}
