//! Reflectors: keep a local [`Store`] of live objects current with list + watch, so
//! that the daemon learns of an out-of-band change within a second and a reconcile
//! of unchanged objects needs no request at all.
//!
//! Modelled on kube-runtime's reflector and client-go's: list, then watch from the
//! list's resourceVersion with bookmarks; resume from the last seen resourceVersion
//! when the server closes the watch; relist on 410 Gone; back off on errors (e.g.
//! while the API server restarts) instead of spinning.

use super::ObjectRef;
use super::backoff::{Backoff, Delays};
use super::meta::Meta;
use super::{ApiResource, Client, ListParams, WatchEvent, WatchParams};
use crate::compact::CompactObject;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

/// Live objects by identity, shared by the reflectors that fill it and the engine.
/// Objects are kept as compact JSON ([`CompactObject`]) and parsed when read: a
/// reconcile reads only the objects it looks at, and at 10000 objects `Value` trees
/// were most of an idle daemon's memory.
#[derive(Clone, Default)]
pub struct Store {
    objects: Arc<RwLock<HashMap<ObjectRef, Entry>>>,
}

struct Entry {
    resource_version: Box<str>,
    object: CompactObject,
}

impl Store {
    pub fn get(&self, object: &ObjectRef) -> Option<Value> {
        let compact = self.read().get(object).map(|e| e.object.clone());
        compact.map(|c| c.value())
    }

    /// The stored object, parsed into a fresh shareable tree.
    pub fn get_shared(&self, object: &ObjectRef) -> Option<Arc<Value>> {
        self.get(object).map(Arc::new)
    }

    /// The stored object's head ([`CompactObject::head`]) when its resourceVersion
    /// is `version`: an object known unchanged is read without its body.
    pub fn head_at(&self, object: &ObjectRef, version: &str) -> Option<Arc<Value>> {
        let compact = self
            .read()
            .get(object)
            .filter(|e| *e.resource_version == *version)
            .map(|e| e.object.clone());
        compact.map(|c| Arc::new(c.head()))
    }

    pub fn contains(&self, object: &ObjectRef) -> bool {
        self.read().contains_key(object)
    }

    /// Every stored object of one kind.
    pub fn of_kind(&self, group: &str, kind: &str) -> Vec<Arc<Value>> {
        self.of_kind_sharing(group, kind, |_| None)
    }

    /// Every stored object of one kind, taking the caller's copy where `parsed` has
    /// one. Why: a full reconcile has already parsed each desired object's live
    /// copy; parsing the store's text again for the member list held a second tree
    /// of every object at the reconcile's peak.
    pub fn of_kind_sharing(
        &self,
        group: &str,
        kind: &str,
        parsed: impl Fn(&ObjectRef) -> Option<Arc<Value>>,
    ) -> Vec<Arc<Value>> {
        let entries: Vec<(ObjectRef, CompactObject)> = self
            .read()
            .iter()
            .filter(|(k, _)| k.group == group && k.kind == kind)
            .map(|(k, e)| (k.clone(), e.object.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(key, compact)| parsed(&key).unwrap_or_else(|| Arc::new(compact.value())))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectRef, Entry>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectRef, Entry>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object` (without its managedFields: nothing reads them and they are
    /// often half of an object's size); the change, unless it is exactly what was
    /// stored.
    fn upsert(&self, object: Value) -> Option<Change> {
        let (key, entry) = Self::entry(object)?;
        self.insert(key, entry)
    }

    /// `object`'s key and compact entry, built outside the lock.
    fn entry(mut object: Value) -> Option<(ObjectRef, Entry)> {
        if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
            metadata.remove("managedFields");
        }
        let key = ObjectRef::of_live(&object)?;
        let entry = Entry {
            resource_version: object.resource_version().unwrap_or_default().into(),
            object: CompactObject::new(&object),
        };
        Some((key, entry))
    }

    fn insert(&self, key: ObjectRef, entry: Entry) -> Option<Change> {
        let version = entry.resource_version.to_string();
        let previous = self.write().insert(key.clone(), entry);
        let unchanged = previous.is_some_and(|p| *p.resource_version == *version);
        (!unchanged).then_some(Change {
            object: key,
            resource_version: Some(version),
        })
    }

    fn remove(&self, object: &Value) -> Option<Change> {
        let key = ObjectRef::of_live(object)?;
        self.write().remove(&key)?;
        Some(Change {
            object: key,
            resource_version: None,
        })
    }

    /// The resourceVersion of every stored object of one kind: what a relist
    /// compares ([`super::relist`]); no object is parsed.
    pub(super) fn versions_of_kind(&self, group: &str, kind: &str) -> HashMap<ObjectRef, Box<str>> {
        self.read()
            .iter()
            .filter(|(k, _)| k.group == group && k.kind == kind)
            .map(|(k, e)| (k.clone(), e.resource_version.clone()))
            .collect()
    }

    /// The stored resourceVersion of one object.
    pub(super) fn version_of(&self, object: &ObjectRef) -> Option<Box<str>> {
        self.read().get(object).map(|e| e.resource_version.clone())
    }

    /// Stores an object read back by a relist's repair; the change, if any.
    pub(super) fn repair(&self, object: Value) -> Option<Change> {
        self.upsert(object)
    }

    /// Drops an object a relist found gone; the change, if it was stored.
    pub(super) fn repair_removed(&self, object: &ObjectRef) -> Option<Change> {
        self.write().remove(object)?;
        Some(Change {
            object: object.clone(),
            resource_version: None,
        })
    }

    /// Replaces every object of `resource`'s kind with a fresh list, returning what
    /// changed (including deletions missed while no watch was open).
    fn replace_kind(&self, resource: &ApiResource, items: Vec<(ObjectRef, Entry)>) -> Vec<Change> {
        let mut gone: HashSet<ObjectRef> = self
            .read()
            .keys()
            .filter(|k| k.group == resource.group && k.kind == resource.kind)
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for (key, entry) in items {
            gone.remove(&key);
            changes.extend(self.insert(key, entry));
        }
        let mut objects = self.write();
        for key in gone {
            objects.remove(&key);
            changes.push(Change {
                object: key,
                resource_version: None,
            });
        }
        changes
    }
}

/// One change to the store: the object and its new resourceVersion (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub object: ObjectRef,
    pub resource_version: Option<String>,
}

/// A running reflector; dropping it stops the watch.
pub(crate) struct Reflector {
    task: JoinHandle<()>,
    synced: watch::Receiver<bool>,
    /// What it watches, for the relist that checks its work ([`super::relist`]).
    resource: ApiResource,
    selector: String,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reflector {
    /// Starts list + watch of `resource` (all namespaces) filtered by `selector`,
    /// filling `store` and sending every [`Change`] to `changes`.
    pub(crate) fn spawn(
        client: Client,
        resource: ApiResource,
        selector: String,
        store: Store,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Self {
        let (synced_tx, synced) = watch::channel(false);
        let span = info_span!("reflector", kind = %resource.kind, group = %resource.group);
        let task = tokio::spawn(
            reflect(
                client,
                resource.clone(),
                selector.clone(),
                store,
                changes,
                synced_tx,
            )
            .instrument(span),
        );
        Reflector {
            task,
            synced,
            resource,
            selector,
        }
    }

    /// The kind it watches.
    pub(crate) fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// The label selector it watches with.
    pub(crate) fn selector(&self) -> &str {
        &self.selector
    }

    /// Whether the first list has completed (the store is complete for this kind).
    pub(crate) fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has completed.
    pub(crate) async fn wait_synced(&mut self) {
        let _ = self.synced.wait_for(|synced| *synced).await;
    }
}

/// How long the server keeps one watch open before we resume it (randomised a
/// little so that many watches do not reconnect together).
fn watch_timeout() -> Duration {
    Duration::from_secs(240 + u64::from(jitter_millis()) % 60)
}

async fn reflect(
    client: Client,
    resource: ApiResource,
    selector: String,
    store: Store,
    changes: mpsc::UnboundedSender<Change>,
    synced: watch::Sender<bool>,
) {
    let path = resource.path(None, None);
    let list = ListParams::labels(&selector);
    let mut backoff = Backoff::WATCH.delays();
    let mut version: Option<String> = None;
    loop {
        let Some(from) = version.clone() else {
            match client.list_map(&path, &list, Store::entry).await {
                Ok(list) => {
                    for change in store.replace_kind(&resource, list.items) {
                        let _ = changes.send(change);
                    }
                    version = Some(list.resource_version);
                    synced.send_replace(true);
                    backoff.reset();
                }
                Err(e) => {
                    warn!(error = %e, "list failed; retrying");
                    pause(&mut backoff).await;
                }
            }
            continue;
        };
        let watch = WatchParams {
            label_selector: Some(selector.clone()),
            field_selector: None,
            timeout: watch_timeout(),
        };
        version = match client.watch(&path, &watch, &from).await {
            Ok(mut stream) => follow(&mut stream, &store, &changes, &mut backoff, from).await,
            Err(e) if e.is_gone() => None,
            Err(e) => {
                warn!(error = %e, "watch failed; retrying");
                pause(&mut backoff).await;
                Some(from)
            }
        };
    }
}

/// Applies a watch's events to the store until it ends; returns the version to
/// resume from (`None`: relist).
async fn follow(
    stream: &mut super::WatchStream,
    store: &Store,
    changes: &mpsc::UnboundedSender<Change>,
    backoff: &mut Delays,
    mut version: String,
) -> Option<String> {
    loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Some(version),
            Err(e) => {
                warn!(error = %e, "watch broke; resuming");
                pause(backoff).await;
                return Some(version);
            }
        };
        backoff.reset();
        let change = match event {
            WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                version = object.resource_version().unwrap_or_default().to_string();
                store.upsert(object)
            }
            WatchEvent::Deleted(object) => {
                version = object.resource_version().unwrap_or_default().to_string();
                store.remove(&object)
            }
            WatchEvent::Bookmark(v) => {
                version = v;
                None
            }
            WatchEvent::Error(status) if status.code == 410 => {
                debug!("resourceVersion too old; relisting");
                return None;
            }
            WatchEvent::Error(status) => {
                warn!(reason = %status.message, code = status.code, "watch error; resuming");
                pause(backoff).await;
                return Some(version);
            }
        };
        if let Some(change) = change {
            let _ = changes.send(change);
        }
    }
}

/// What a [`Follower`] saw of its one object.
#[derive(Debug, Clone)]
pub(crate) enum Sighting {
    /// Its state now (created, changed).
    Seen(Value),
    /// Deleted: its last state (what it had become by then), or `None` when the
    /// history was compacted away and a GET found nothing.
    Gone(Option<Value>),
}

/// A watch of one object from a resourceVersion the caller knows it existed at
/// (the answer to its create), so that nothing that happens to it is missed: a Job
/// that completes and is deleted by its TTL within a second is seen completing,
/// then deleted. A reflector lists first, and would only see it absent.
pub(crate) struct Follower {
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Follows `object` (of `resource`) from `since`, sending what it sees.
    pub(crate) fn spawn(
        client: Client,
        resource: ApiResource,
        object: ObjectRef,
        since: String,
        sightings: mpsc::UnboundedSender<(ObjectRef, Sighting)>,
    ) -> Self {
        let span = info_span!("follow", object = %object, since = %since);
        let task =
            tokio::spawn(follow_one(client, resource, object, since, sightings).instrument(span));
        Follower { task }
    }
}

async fn follow_one(
    client: Client,
    resource: ApiResource,
    object: ObjectRef,
    mut since: String,
    sightings: mpsc::UnboundedSender<(ObjectRef, Sighting)>,
) {
    let path = resource.path(object.namespace.as_deref(), None);
    let params = WatchParams {
        label_selector: None,
        field_selector: Some(format!("metadata.name={}", object.name)),
        timeout: watch_timeout(),
    };
    let send = |sighting| sightings.send((object.clone(), sighting)).is_ok();
    let mut backoff = Backoff::WATCH.delays();
    loop {
        let mut stream = match client.watch(&path, &params, &since).await {
            Ok(stream) => stream,
            Err(e) if e.is_gone() => {
                send(look_up(&client, &resource, &object).await);
                return;
            }
            Err(e) => {
                warn!(error = %e, "watch failed; retrying");
                pause(&mut backoff).await;
                continue;
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    since = o.resource_version().unwrap_or_default().to_string();
                    if !send(Sighting::Seen(o)) {
                        return;
                    }
                }
                Ok(Some(WatchEvent::Deleted(o))) => {
                    send(Sighting::Gone(Some(o)));
                    return;
                }
                Ok(Some(WatchEvent::Bookmark(v))) => since = v,
                Ok(Some(WatchEvent::Error(status))) if status.code == 410 => {
                    send(look_up(&client, &resource, &object).await);
                    return;
                }
                Ok(None) => break,
                Ok(Some(WatchEvent::Error(status))) => {
                    warn!(reason = %status.message, "watch error; resuming");
                    pause(&mut backoff).await;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "watch broke; resuming");
                    pause(&mut backoff).await;
                    break;
                }
            }
        }
    }
}

/// When the history since the create is gone (compacted): what a GET sees now.
/// An object that finished and was deleted meanwhile can no longer be told from
/// one deleted before it finished.
async fn look_up(client: &Client, resource: &ApiResource, object: &ObjectRef) -> Sighting {
    let path = resource.path(object.namespace.as_deref(), Some(&object.name));
    match client.get_opt(&path).await {
        Ok(Some(live)) => Sighting::Seen(live),
        Ok(None) => Sighting::Gone(None),
        Err(e) => {
            warn!(error = %e, "could not read the object after its history was compacted");
            Sighting::Gone(None)
        }
    }
}

/// Sleeps the backoff's next delay (the sequence is endless).
async fn pause(backoff: &mut Delays) {
    if let Some(delay) = backoff.next() {
        tokio::time::sleep(delay).await;
    }
}

fn jitter_millis() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str, rv: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}})
    }

    fn configmaps() -> ApiResource {
        ApiResource {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespaced: true,
            verbs: vec![],
        }
    }

    #[test]
    fn the_head_is_read_only_at_the_version_asked_for() {
        let store = Store::default();
        let mut object = cm("a", "7");
        object["data"] = json!({"big": "x".repeat(1000)});
        store.upsert(object);
        let key = ObjectRef::of_live(&cm("a", "7")).expect("a key");
        assert_eq!(store.head_at(&key, "6"), None, "another version");
        let head = store.head_at(&key, "7").expect("the head");
        assert_eq!(*head, cm("a", "7"), "identity and metadata, no data");
    }

    #[test]
    fn upsert_reports_only_real_changes() {
        let store = Store::default();
        assert!(store.upsert(cm("a", "1")).is_some());
        assert!(
            store.upsert(cm("a", "1")).is_none(),
            "same resourceVersion is no change"
        );
        let change = store.upsert(cm("a", "2")).expect("changed");
        assert_eq!(change.resource_version.as_deref(), Some("2"));
        assert_eq!(
            store
                .remove(&cm("a", "3"))
                .expect("removed")
                .resource_version,
            None
        );
        assert!(store.is_empty());
    }

    #[test]
    fn objects_read_back_without_managed_fields() {
        let store = Store::default();
        let mut live = cm("a", "1");
        live["metadata"]["managedFields"] = json!([{"manager": "converge"}]);
        live["data"] = json!({"k": "v"});
        store.upsert(live);
        let key = ObjectRef::of_live(&cm("a", "1")).unwrap();
        assert!(store.contains(&key));
        let read = store.get(&key).unwrap();
        assert_eq!(read["data"]["k"], "v");
        assert!(read["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn members_of_a_kind_share_the_callers_copies() {
        let store = Store::default();
        store.upsert(cm("desired", "1"));
        store.upsert(cm("orphan", "1"));
        let desired_key = ObjectRef::of_live(&cm("desired", "1")).unwrap();
        let held = Arc::new(store.get(&desired_key).unwrap());
        let parsed = |key: &ObjectRef| (*key == desired_key).then(|| held.clone());
        let members = store.of_kind_sharing("", "ConfigMap", parsed);
        assert_eq!(members.len(), 2);
        let shared = members.iter().filter(|m| Arc::ptr_eq(m, &held)).count();
        assert_eq!(
            shared, 1,
            "the desired object's copy is reused, not parsed again"
        );
        assert!(members.iter().any(|m| m["metadata"]["name"] == "orphan"));
    }

    #[test]
    fn relist_reports_deletions_missed_while_disconnected() {
        let store = Store::default();
        store.upsert(cm("kept", "1"));
        store.upsert(cm("deleted", "1"));
        let items = [cm("kept", "1"), cm("new", "5")];
        let changes = store.replace_kind(
            &configmaps(),
            items.into_iter().filter_map(Store::entry).collect(),
        );
        let names: Vec<(&str, Option<&str>)> = changes
            .iter()
            .map(|c| (c.object.name.as_str(), c.resource_version.as_deref()))
            .collect();
        assert_eq!(names, [("new", Some("5")), ("deleted", None)]);
        assert_eq!(store.of_kind("", "ConfigMap").len(), 2);
    }
}
