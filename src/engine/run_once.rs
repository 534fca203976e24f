//! Run-once Jobs in plain manifests: a Job that completed and was then deleted (by
//! its `ttlSecondsAfterFinished`, or by anyone) is not created again for the same
//! manifest. Without this, every `diff` shows it as new and every resync runs it
//! again, which for a database migration is a disaster.
//!
//! The record lives in the cluster, on the ApplySet parent, so that a restart or
//! another replica knows it too: the annotation [`RECORD_ANNOTATION`] maps each Job
//! converge created to the digest of its manifest, its uid and whether it completed.
//! It is written with a field manager of its own ([`RECORD_MANAGER`]), so the
//! parent's own apply never removes it. A Job absent from the cluster is judged:
//!
//! - recorded as completed with the same manifest: `completed`, never created again;
//! - recorded as created (uid) with the same manifest, and the job controller's
//!   `Completed` Event for that uid is still there (Events last an hour): completed,
//!   and the record says so from now on;
//! - anything else (never created, deleted before it finished, a changed manifest):
//!   created, as before.
//!
//! The decisions are pure; [`read()`], [`completed_event()`] and [`write()`] do the I/O.

use super::{EngineError, Scope, api_error};
use crate::engine::applyset::ApplySet;
use crate::engine::order;
use crate::engine::plan::{Desired, Evaluation};
use crate::engine::plan::{Plan, StepAction};
use crate::kube::Meta;
use crate::kube::{ApiResource, Client, ListParams, PatchParams};
use crate::manifest::{Manifest, ObjectRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tracing::{debug, info};

/// The parent's annotation holding the record (JSON).
pub(crate) const RECORD_ANNOTATION: &str = "converge.dev/run-once-jobs";
/// The field manager that writes the record.
pub(crate) const RECORD_MANAGER: &str = "converge-run-once";
/// The reason of the job controller's Event when a Job completes.
const COMPLETED_REASON: &str = "Completed";

/// What converge knows of one Job it created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// [`digest`] of the manifest it was created from.
    pub digest: String,
    /// The uid the server gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Whether it was seen to complete.
    #[serde(default)]
    pub completed: bool,
}

/// The record: `namespace/name` of each Job → what is known of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Record(BTreeMap<String, Entry>);

/// What the record says of one absent Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Completed with this manifest: not created again.
    Completed,
    /// Created from this manifest as `uid`; completed if its Event says so.
    AskEvents { uid: String },
    /// Never created from this manifest, or deleted before it finished: create it.
    Create,
}

impl Record {
    /// The record a parent carries (empty when it has none, or an unreadable one).
    pub(crate) fn of_parent(parent: Option<&Value>) -> Record {
        let pointer = format!(
            "/metadata/annotations/{}",
            RECORD_ANNOTATION.replace('/', "~1")
        );
        let text = parent
            .and_then(|p| p.pointer(&pointer))
            .and_then(Value::as_str);
        match text.map(serde_json::from_str) {
            Some(Ok(record)) => record,
            Some(Err(e)) => {
                debug!(error = %e, "the run-once record is unreadable; starting afresh");
                Record::default()
            }
            None => Record::default(),
        }
    }

    /// What to do with an absent Job whose manifest has `digest`.
    pub(crate) fn verdict(&self, object: &ObjectRef, digest: &str) -> Verdict {
        match self.0.get(&key(object)) {
            Some(entry) if entry.digest == digest && entry.completed => Verdict::Completed,
            Some(Entry {
                digest: recorded,
                uid: Some(uid),
                ..
            }) if recorded == digest => Verdict::AskEvents { uid: uid.clone() },
            _ => Verdict::Create,
        }
    }

    /// The record after a run: Jobs it created (with their uid), Jobs found
    /// completed, and only Jobs still desired (a full run knows them all).
    pub(crate) fn updated(
        &self,
        plan: &Plan,
        created: &[(ObjectRef, Value)],
        full: bool,
    ) -> Record {
        let mut next = self.clone();
        for step in plan.steps.iter().filter(|s| is_run_once(&s.object)) {
            let Some(manifest) = &step.manifest else {
                continue;
            };
            if step.placement.is_hook() {
                continue;
            }
            let digest = digest(manifest);
            let key = key(&step.object);
            match step.action {
                StepAction::Completed => {
                    let entry = next.0.entry(key).or_insert_with(|| Entry {
                        digest: digest.clone(),
                        uid: None,
                        completed: true,
                    });
                    entry.completed = entry.digest == digest || entry.completed;
                }
                StepAction::Create | StepAction::Recreate | StepAction::Configure => {
                    let uid = created
                        .iter()
                        .find(|(o, _)| *o == step.object)
                        .and_then(|(_, answer)| answer.uid())
                        .map(str::to_string);
                    next.0.insert(
                        key,
                        Entry {
                            digest,
                            uid,
                            completed: false,
                        },
                    );
                }
                _ => {}
            }
        }
        if full {
            let desired: Vec<String> = plan
                .steps
                .iter()
                .filter(|s| s.manifest.is_some() && is_run_once(&s.object))
                .map(|s| key(&s.object))
                .collect();
            next.0.retain(|k, _| desired.contains(k));
        }
        next
    }
}

/// Whether `object` is a Job (the only kind that runs once).
pub(crate) fn is_run_once(object: &ObjectRef) -> bool {
    object.group == "batch" && object.kind == "Job"
}

fn key(object: &ObjectRef) -> String {
    format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name
    )
}

/// A digest of a manifest that does not depend on the order of its keys: a
/// changed manifest (any value) runs the Job once more; a reformatted one does not.
pub(crate) fn digest(manifest: &Manifest) -> String {
    let mut text = String::new();
    canonical(&Value::Object(manifest.body.clone()), &mut text);
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (k, v) in sorted {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Marks every desired run-once Job that is absent but completed with its manifest
/// as [`Evaluation::Completed`]; the record read, when there was one to read.
pub(super) async fn settle(
    client: &Client,
    applyset: &ApplySet,
    desired: &mut [Desired],
) -> Result<Option<Record>, EngineError> {
    let absent = |d: &&mut Desired| {
        d.live.is_none()
            && is_run_once(&d.manifest.object_ref())
            && !order::placement_of(&d.manifest.body).is_hook()
    };
    // Only a finished Job the run would evaluate again needs the record: one proven
    // in sync costs no request (an idle daemon sends none).
    let finished = |d: &&mut Desired| {
        !matches!(d.dry_run, Evaluation::InSync)
            && d.live.as_deref().is_some_and(is_done)
            && is_run_once(&d.manifest.object_ref())
            && !order::placement_of(&d.manifest.body).is_hook()
    };
    if !desired.iter_mut().any(|d| absent(&d) || finished(&d)) {
        return Ok(None);
    }
    let record = read(client, applyset).await?;
    leave_finished_jobs(desired, &record);
    for d in desired.iter_mut().filter(absent) {
        let object = d.manifest.object_ref();
        let done = match record.verdict(&object, &digest(&d.manifest)) {
            Verdict::Completed => true,
            Verdict::AskEvents { uid } => completed_event(client, &object, &uid).await?,
            Verdict::Create => false,
        };
        if done {
            info!(object = %object, "a run-once Job completed and is gone: not created again");
            d.dry_run = Evaluation::Completed;
        }
    }
    Ok(Some(record))
}

/// A run-once Job that is being deleted (its TTL), or has finished with the
/// manifest it was created from, is not written again: a server-side apply is an
/// upsert, and one sent just after the TTL controller deleted the Job would create
/// it anew. Its controller's updates (status, finalizers, the deletion) are not
/// drift. A finished Job whose manifest changed since is left to the usual rules.
fn leave_finished_jobs(desired: &mut [Desired], record: &Record) {
    for d in desired.iter_mut() {
        let Some(live) = d.live.as_deref() else {
            continue;
        };
        let job = d.manifest.object_ref();
        if !is_run_once(&job) || order::placement_of(&d.manifest.body).is_hook() {
            continue;
        }
        let deleting = live.is_deleting();
        let recorded = record.0.get(&key(&job)).map(|e| e.digest.as_str());
        let unchanged = recorded == Some(digest(&d.manifest).as_str());
        if deleting || (is_done(live) && unchanged) {
            d.dry_run = Evaluation::InSync;
        }
    }
}

/// Whether a live Job has finished (Complete or Failed) or is being deleted.
fn is_done(live: &Value) -> bool {
    let finished = live
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True"
            })
        });
    finished || live.is_deleting()
}

/// After a run that may write: records the run-once Jobs it created and those it
/// found completed (reading the record first if [`settle`] did not).
pub(super) async fn remember(
    client: &Client,
    applyset: &ApplySet,
    before: Option<Record>,
    plan: &Plan,
    written: &[(ObjectRef, Value)],
    scope: &Scope,
) -> Result<(), EngineError> {
    let touched = plan.steps.iter().any(|s| {
        is_run_once(&s.object)
            && !s.placement.is_hook()
            && matches!(
                s.action,
                StepAction::Completed
                    | StepAction::Create
                    | StepAction::Recreate
                    | StepAction::Configure
            )
    });
    if !touched {
        return Ok(());
    }
    let before = match before {
        Some(record) => record,
        None => read(client, applyset).await?,
    };
    let after = before.updated(plan, written, scope.is_full());
    if after == before {
        return Ok(());
    }
    write(client, applyset, &after).await
}

/// The record on the parent (empty when there is no parent).
pub(super) async fn read(client: &Client, applyset: &ApplySet) -> Result<Record, EngineError> {
    let parent = client
        .get_opt(&super::writes::parent_path(applyset))
        .await
        .map_err(|e| api_error(&applyset.parent_ref(), e))?;
    Ok(Record::of_parent(parent.as_ref()))
}

/// Whether the job controller recorded that the Job with `uid` completed.
pub(super) async fn completed_event(
    client: &Client,
    job: &ObjectRef,
    uid: &str,
) -> Result<bool, EngineError> {
    let path = ApiResource::events().path(job.namespace.as_deref(), None);
    let selector = format!("involvedObject.uid={uid},reason={COMPLETED_REASON}");
    let events = client
        .list(&path, &ListParams::fields(&selector))
        .await
        .map_err(|e| api_error(job, e))?;
    Ok(!events.items.is_empty())
}

/// Writes the record on the parent (its own field manager: the parent's apply
/// leaves it alone).
pub(super) async fn write(
    client: &Client,
    applyset: &ApplySet,
    record: &Record,
) -> Result<(), EngineError> {
    let text = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
    let mut annotations = Map::new();
    annotations.insert(RECORD_ANNOTATION.into(), Value::String(text));
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": applyset.parent_name,
            "namespace": applyset.namespace,
            "annotations": annotations,
        },
    });
    let params = PatchParams::apply(RECORD_MANAGER).force();
    client
        .apply(&super::writes::parent_path(applyset), &body, &params)
        .await
        .map_err(|e| api_error(&applyset.parent_ref(), e))?;
    info!(jobs = record.0.len(), "run-once record written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Origin;
    use std::path::PathBuf;

    fn job(name: &str, image: &str) -> Manifest {
        let body = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"name": "m", "image": image}]}}}});
        Manifest {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            body: body.as_object().cloned().unwrap_or_default(),
            origin: Origin {
                file: PathBuf::from("job.yaml"),
                line: 1,
            },
        }
    }

    #[test]
    fn the_digest_ignores_key_order_but_not_values() {
        let a = job("migrate", "db:1");
        let mut reordered = a.clone();
        reordered.body = a
            .body
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(digest(&a), digest(&reordered));
        assert_ne!(digest(&a), digest(&job("migrate", "db:2")));
    }

    #[test]
    fn verdicts_follow_the_record_and_the_manifest() {
        let manifest = job("migrate", "db:1");
        let object = manifest.object_ref();
        let d = digest(&manifest);
        let mut record = Record::default();
        assert_eq!(
            record.verdict(&object, &d),
            Verdict::Create,
            "never created"
        );
        record.0.insert(
            "ns/migrate".into(),
            Entry {
                digest: d.clone(),
                uid: Some("u1".into()),
                completed: false,
            },
        );
        assert_eq!(
            record.verdict(&object, &d),
            Verdict::AskEvents { uid: "u1".into() }
        );
        assert_eq!(
            record.verdict(&object, "other"),
            Verdict::Create,
            "a changed manifest runs again"
        );
        if let Some(entry) = record.0.get_mut("ns/migrate") {
            entry.completed = true;
        }
        assert_eq!(record.verdict(&object, &d), Verdict::Completed);
    }

    #[test]
    fn finished_or_deleted_jobs_are_never_written_again() {
        let manifest = job("migrate", "db:1");
        let live = |extra: Value| {
            let mut live = Value::Object(manifest.body.clone());
            if let (Some(obj), Some(more)) = (live.as_object_mut(), extra.as_object()) {
                obj.extend(more.clone());
            }
            live
        };
        let desired = |live: Value| {
            Desired::new(
                manifest.clone(),
                Some(std::sync::Arc::new(live)),
                Evaluation::Server(json!({})),
            )
        };
        let complete = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let deleting = json!({"metadata": {"name": "migrate", "namespace": "ns",
                                           "deletionTimestamp": "2026-12-07T00:00:00Z"}});
        let running = json!({"status": {"active": 1}});
        let mut all = vec![
            desired(live(complete.clone())),
            desired(live(deleting)),
            desired(live(running)),
        ];
        let mut record = Record::default();
        record.0.insert(
            "ns/migrate".into(),
            Entry {
                digest: digest(&manifest),
                uid: None,
                completed: false,
            },
        );
        leave_finished_jobs(&mut all, &record);
        assert!(matches!(all[0].dry_run, Evaluation::InSync), "complete");
        assert!(
            matches!(all[1].dry_run, Evaluation::InSync),
            "being deleted"
        );
        assert!(
            matches!(all[2].dry_run, Evaluation::Server(_)),
            "still running"
        );
        let mut changed = vec![desired(live(complete))];
        leave_finished_jobs(&mut changed, &Record::default());
        assert!(
            matches!(changed[0].dry_run, Evaluation::Server(_)),
            "finished, but not from this manifest: the usual rules"
        );
    }

    #[test]
    fn the_record_reads_back_from_the_parent() {
        let mut record = Record::default();
        record.0.insert(
            "ns/a".into(),
            Entry {
                digest: "d".into(),
                uid: None,
                completed: true,
            },
        );
        let text = serde_json::to_string(&record).expect("serializes");
        let parent = json!({"metadata": {"annotations": {RECORD_ANNOTATION: text}}});
        assert_eq!(Record::of_parent(Some(&parent)), record);
        let broken = json!({"metadata": {"annotations": {RECORD_ANNOTATION: "{"}}});
        assert_eq!(Record::of_parent(Some(&broken)), Record::default());
        assert_eq!(Record::of_parent(None), Record::default());
    }
}
