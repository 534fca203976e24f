//! Reflectors: keep a local [`Store`] of live objects current with list + watch, so
//! that the daemon learns of an out-of-band change within a second and a reconcile
//! of unchanged objects needs no request at all.
//!
//! Modelled on kube-runtime's reflector and client-go's: list, then watch from the
//! list's resourceVersion with bookmarks; resume from the last seen resourceVersion
//! when the server closes the watch; relist on 410 Gone; back off on errors (e.g.
//! while the API server restarts) instead of spinning.

use super::{ApiResource, Client, WatchEvent};
use crate::manifest::ObjectRef;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

/// Live objects by identity, shared by the reflectors that fill it and the engine.
#[derive(Clone, Default)]
pub struct Store {
    /// Objects are shared, not copied, with every run that reads them.
    objects: Arc<RwLock<HashMap<ObjectRef, Arc<Value>>>>,
}

impl Store {
    pub fn get(&self, object: &ObjectRef) -> Option<Value> {
        self.get_shared(object).map(|v| v.as_ref().clone())
    }

    /// The stored object itself, without copying it.
    pub fn get_shared(&self, object: &ObjectRef) -> Option<Arc<Value>> {
        self.read().get(object).cloned()
    }

    /// Every stored object of one kind.
    pub fn of_kind(&self, group: &str, kind: &str) -> Vec<Arc<Value>> {
        self.read()
            .iter()
            .filter(|(k, _)| k.group == group && k.kind == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectRef, Arc<Value>>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectRef, Arc<Value>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `object` (without its managedFields: nothing reads them and they are
    /// often half of an object's size); the change, unless it is exactly what was
    /// stored.
    fn upsert(&self, mut object: Value) -> Option<Change> {
        if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
            metadata.remove("managedFields");
        }
        let key = ObjectRef::of_live(&object)?;
        let version = resource_version(&object);
        let previous = self.write().insert(key.clone(), Arc::new(object));
        let unchanged = previous.as_deref().map(resource_version) == Some(version.clone());
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

    /// Replaces every object of `resource`'s kind with a fresh list, returning what
    /// changed (including deletions missed while no watch was open).
    fn replace_kind(&self, resource: &ApiResource, items: Vec<Value>) -> Vec<Change> {
        let mut gone: Vec<ObjectRef> = self
            .read()
            .keys()
            .filter(|k| k.group == resource.group && k.kind == resource.kind)
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for item in items {
            if let Some(key) = ObjectRef::of_live(&item) {
                gone.retain(|k| *k != key);
            }
            changes.extend(self.upsert(item));
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
pub struct Change {
    pub object: ObjectRef,
    pub resource_version: Option<String>,
}

/// A running reflector; dropping it stops the watch.
pub struct Reflector {
    task: JoinHandle<()>,
    synced: watch::Receiver<bool>,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reflector {
    /// Starts list + watch of `resource` (all namespaces) filtered by `selector`,
    /// filling `store` and sending every [`Change`] to `changes`.
    pub fn spawn(
        client: Client,
        resource: ApiResource,
        selector: String,
        store: Store,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Self {
        let (synced_tx, synced) = watch::channel(false);
        let span = info_span!("reflector", kind = %resource.kind, group = %resource.group);
        let task = tokio::spawn(
            reflect(client, resource, selector, store, changes, synced_tx).instrument(span),
        );
        Reflector { task, synced }
    }

    /// Whether the first list has completed (the store is complete for this kind).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has completed.
    pub async fn wait_synced(&mut self) {
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
    let query = [("labelSelector", selector.as_str())];
    let mut backoff = Backoff::default();
    let mut version: Option<String> = None;
    loop {
        let Some(from) = version.clone() else {
            match client.list_with(&path, &query).await {
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
                    tokio::time::sleep(backoff.next()).await;
                }
            }
            continue;
        };
        version = match client.watch(&path, &query, &from, watch_timeout()).await {
            Ok(mut stream) => follow(&mut stream, &store, &changes, &mut backoff, from).await,
            Err(e) if e.is_gone() => None,
            Err(e) => {
                warn!(error = %e, "watch failed; retrying");
                tokio::time::sleep(backoff.next()).await;
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
    backoff: &mut Backoff,
    mut version: String,
) -> Option<String> {
    loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Some(version),
            Err(e) => {
                warn!(error = %e, "watch broke; resuming");
                tokio::time::sleep(backoff.next()).await;
                return Some(version);
            }
        };
        backoff.reset();
        let change = match event {
            WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                version = resource_version(&object);
                store.upsert(object)
            }
            WatchEvent::Deleted(object) => {
                version = resource_version(&object);
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
                tokio::time::sleep(backoff.next()).await;
                return Some(version);
            }
        };
        if let Some(change) = change {
            let _ = changes.send(change);
        }
    }
}

fn resource_version(object: &Value) -> String {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Exponential backoff from 250 ms to 30 s with jitter.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(250).saturating_mul(1 << self.failures.min(7));
        base.min(Duration::from_secs(30)) + Duration::from_millis(u64::from(jitter_millis()) % 250)
    }

    fn reset(&mut self) {
        self.failures = 0;
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
    fn relist_reports_deletions_missed_while_disconnected() {
        let store = Store::default();
        store.upsert(cm("kept", "1"));
        store.upsert(cm("deleted", "1"));
        let changes = store.replace_kind(&configmaps(), vec![cm("kept", "1"), cm("new", "5")]);
        let names: Vec<(&str, Option<&str>)> = changes
            .iter()
            .map(|c| (c.object.name.as_str(), c.resource_version.as_deref()))
            .collect();
        assert_eq!(names, [("new", Some("5")), ("deleted", None)]);
        assert_eq!(store.of_kind("", "ConfigMap").len(), 2);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut backoff = Backoff::default();
        let first = backoff.next();
        let later: Vec<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(first < Duration::from_secs(1));
        assert!(later.iter().all(|d| *d <= Duration::from_millis(30_250)));
        backoff.reset();
        assert!(backoff.next() < Duration::from_secs(1));
    }
}
