//! The objects a source waits for (`depends_on = [{ object = … }]`): one watch
//! per object, each judging every state it sees, so that the source reconciles as
//! soon as the last one turns ready (not at its next resync).
//!
//! A kind that discovery does not know yet (its CRD is still to come) is looked
//! up again with backoff; the object's absence is a reason to wait, not an error.

use crate::engine::Engine;
use crate::health::HealthModel;
use crate::health::dependency::{ObjectDependency, Verdict};
use crate::kube::backoff::{Backoff, Delays};
use crate::kube::{ApiResource, Client, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

/// How long the server keeps one watch of a dependency open.
const WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// The watches of a source's object dependencies and what they last saw.
pub(super) struct ObjectNeeds {
    objects: Vec<ObjectDependency>,
    verdicts: watch::Receiver<Vec<Verdict>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ObjectNeeds {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ObjectNeeds {
    /// Starts one watch per object, with `engine`'s client and health model; an
    /// object without a namespace of a namespaced kind is in `namespace`.
    pub(super) fn start(engine: &Engine, objects: &[ObjectDependency], namespace: &str) -> Self {
        let first = vec![Verdict::waiting("not observed yet"); objects.len()];
        let (tx, verdicts) = watch::channel(first);
        let tasks = objects
            .iter()
            .enumerate()
            .map(|(index, object)| {
                let watcher = Watcher {
                    engine: engine.clone(),
                    model: engine.health_model(),
                    object: object.clone(),
                    namespace: namespace.to_string(),
                    index,
                    verdicts: tx.clone(),
                };
                let span = info_span!("depends_on", object = %object);
                tokio::spawn(watcher.run().instrument(span))
            })
            .collect();
        ObjectNeeds {
            objects: objects.to_vec(),
            verdicts,
            tasks,
        }
    }

    /// The objects not ready yet, each with why: `object v1/Service/db/postgres: …`.
    pub(super) fn waiting_for(&self) -> Vec<String> {
        self.objects
            .iter()
            .zip(self.verdicts.borrow().iter())
            .filter_map(|(object, verdict)| match verdict {
                Verdict::Satisfied => None,
                Verdict::Waiting(why) => Some(format!("object {object}: {why}")),
            })
            .collect()
    }

    /// Waits until a verdict changes; `false` once the watches are gone.
    pub(super) async fn changed(&mut self) -> bool {
        self.verdicts.changed().await.is_ok()
    }
}

/// The watch of one object.
struct Watcher {
    engine: Engine,
    model: HealthModel,
    object: ObjectDependency,
    namespace: String,
    index: usize,
    verdicts: watch::Sender<Vec<Verdict>>,
}

impl Watcher {
    async fn run(self) {
        let mut backoff = Backoff::WATCH.delays();
        loop {
            let resource = match self.resource().await {
                Ok(resource) => resource,
                Err(why) => {
                    self.publish(Verdict::Waiting(why));
                    pause(&mut backoff).await;
                    continue;
                }
            };
            if let Err(why) = self.follow(&resource, &mut backoff).await {
                warn!(%why, "watching a dependency failed; retrying");
                pause(&mut backoff).await;
            }
        }
    }

    /// The object's resource; discovery is read again while its kind is unknown
    /// (a CRD applied by another source may be on its way).
    async fn resource(&self) -> Result<ApiResource, String> {
        let discovery = self.engine.discovery();
        let (group, kind) = (&self.object.group, &self.object.kind);
        if let Ok(resource) = discovery.resolve(group, "", kind) {
            return Ok(resource);
        }
        let _ = discovery.refresh().await;
        discovery
            .resolve(group, "", kind)
            .map_err(|e| format!("not served: {e}"))
    }

    /// Lists the object, then watches it until the watch breaks (`Err`) or its
    /// history is gone (`Ok`: list again).
    async fn follow(&self, resource: &ApiResource, backoff: &mut Delays) -> Result<(), String> {
        let client: &Client = self.engine.client();
        let namespace = resource.namespaced.then(|| {
            self.object
                .namespace
                .clone()
                .unwrap_or_else(|| self.namespace.clone())
        });
        let path = resource.path(namespace.as_deref(), None);
        let selector = format!("metadata.name={}", self.object.name);
        let list = client
            .list(&path, &ListParams::fields(&selector))
            .await
            .map_err(|e| e.to_string())?;
        self.judge(list.items.first());
        backoff.reset();
        let params = WatchParams {
            label_selector: None,
            field_selector: Some(selector),
            timeout: WATCH_TIMEOUT,
        };
        let mut version = list.resource_version;
        loop {
            let mut stream = match client.watch(&path, &params, &version).await {
                Ok(stream) => stream,
                Err(e) if e.is_gone() => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            loop {
                match stream.next().await.map_err(|e| e.to_string())? {
                    None => break,
                    Some(WatchEvent::Added(live) | WatchEvent::Modified(live)) => {
                        version = resource_version(&live).unwrap_or(version);
                        self.judge(Some(&live));
                    }
                    Some(WatchEvent::Deleted(live)) => {
                        version = resource_version(&live).unwrap_or(version);
                        self.judge(None);
                    }
                    Some(WatchEvent::Bookmark(v)) => version = v,
                    Some(WatchEvent::Error(status)) if status.code == 410 => return Ok(()),
                    Some(WatchEvent::Error(status)) => return Err(status.message),
                }
            }
        }
    }

    fn judge(&self, live: Option<&Value>) {
        self.publish(self.object.judge(live, &self.model));
    }

    /// Records the verdict; wakes the source only when it changed.
    fn publish(&self, verdict: Verdict) {
        self.verdicts.send_if_modified(|all| {
            let changed = all[self.index] != verdict;
            if changed {
                debug!(?verdict, "dependency");
                all[self.index] = verdict;
            }
            changed
        });
    }
}

fn resource_version(live: &Value) -> Option<String> {
    live.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn pause(backoff: &mut Delays) {
    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
    tokio::time::sleep(delay).await;
}
