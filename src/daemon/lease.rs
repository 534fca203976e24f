//! `coordination.k8s.io/v1` Leases as leader election reads and writes them: the
//! record (holder, duration, acquire and renew times, transitions) and the requests
//! client-go's `LeaseLock` makes. A Lease is replaced with PUT at the
//! `resourceVersion` read, so of two replicas writing the same Lease one gets 409
//! Conflict: optimistic concurrency, the only arbiter an election needs.

use crate::kube::Meta;
use crate::kube::{
    ApiResource, Client, DeleteParams, Error, ListParams, Method, PostParams, Preconditions,
    WatchParams, WatchStream,
};
use serde_json::{Map, Value, json};
use std::time::{Duration, SystemTime};

/// How long a follower's watch of the Lease stays open before it is opened again.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The label naming the election a Lease belongs to: `converge.dev/election=<name>`.
pub(super) const ELECTION_LABEL: &str = "converge.dev/election";
/// The label saying what a Lease is for: [`LeaseKind`].
pub(super) const KIND_LABEL: &str = "converge.dev/lease";

/// What a Lease of an election is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseKind {
    /// The one Lease whose holder writes every source.
    Leader,
    /// The Lease of one source (shard mode).
    Source,
    /// A replica's heartbeat (shard mode): how replicas count each other.
    Replica,
}

impl LeaseKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Leader => "leader",
            LeaseKind::Source => "source",
            LeaseKind::Replica => "replica",
        }
    }
}

/// The election record a Lease's spec holds (client-go's `LeaderElectionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Record {
    /// Who holds the Lease; `None` once released (`""` on the wire).
    pub holder: Option<String>,
    /// How long the Lease holds after a renewal, as the others measure it.
    pub duration: Duration,
    /// When the holder acquired it, as MicroTime text; for people.
    pub acquire_time: Option<String>,
    /// When the holder last renewed it, as MicroTime text. Nobody computes with it:
    /// expiry is measured on each replica's own clock from when a change was seen.
    pub renew_time: Option<String>,
    /// How many times the holder changed.
    pub transitions: u32,
}

impl Record {
    /// Whether `identity` holds the Lease (expired or not).
    pub(super) fn held_by(&self, identity: &str) -> bool {
        self.holder.as_deref() == Some(identity)
    }

    fn from_spec(spec: &Value) -> Record {
        let text = |key: &str| spec.get(key).and_then(Value::as_str).map(str::to_owned);
        let number = |key: &str| spec.get(key).and_then(Value::as_u64).unwrap_or(0);
        Record {
            holder: text("holderIdentity").filter(|h| !h.is_empty()),
            duration: Duration::from_secs(number("leaseDurationSeconds")),
            acquire_time: text("acquireTime"),
            renew_time: text("renewTime"),
            transitions: u32::try_from(number("leaseTransitions")).unwrap_or(u32::MAX),
        }
    }

    /// Writes the record's fields into `spec`, keeping any others (a newer API's
    /// `strategy`, `preferredHolder`).
    fn write_into(&self, spec: &mut Map<String, Value>) {
        let holder = self.holder.as_deref().unwrap_or_default();
        spec.insert("holderIdentity".into(), json!(holder));
        spec.insert(
            "leaseDurationSeconds".into(),
            json!(self.duration.as_secs()),
        );
        spec.insert("leaseTransitions".into(), json!(self.transitions));
        for (key, time) in [
            ("acquireTime", &self.acquire_time),
            ("renewTime", &self.renew_time),
        ] {
            match time {
                Some(time) => spec.insert(key.into(), json!(time)),
                None => spec.remove(key),
            };
        }
    }
}

/// `metav1.MicroTime` text: RFC 3339 in UTC with microseconds.
pub(super) fn micro_time(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// A Lease as last read or written: the record, and the object to write over.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Lease {
    pub name: String,
    pub record: Record,
    /// The whole object, `metadata.resourceVersion` included: a PUT of it fails with
    /// 409 if anyone wrote the Lease since.
    object: Value,
}

impl Lease {
    /// The Lease in a watch event.
    pub(super) fn from_object(object: Value) -> Lease {
        let name = object.name().unwrap_or_default().to_owned();
        let record = Record::from_spec(object.get("spec").unwrap_or(&Value::Null));
        Lease {
            name,
            record,
            object,
        }
    }

    /// What the Lease is for, by its label.
    pub(super) fn kind(&self) -> Option<LeaseKind> {
        let label = self
            .object
            .labels()
            .and_then(|labels| labels.get(KIND_LABEL))
            .and_then(Value::as_str)?;
        [LeaseKind::Leader, LeaseKind::Source, LeaseKind::Replica]
            .into_iter()
            .find(|kind| kind.as_str() == label)
    }

    /// This Lease with `record` in place of its own, ready to PUT.
    fn with(&self, record: &Record) -> Value {
        let mut object = self.object.clone();
        if let Some(map) = object.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                record.write_into(spec);
            }
        }
        object
    }

    /// A Lease as returned from a test's fake server.
    #[cfg(test)]
    pub(super) fn fake(name: &str, record: Record, resource_version: &str) -> Lease {
        let mut spec = Map::new();
        record.write_into(&mut spec);
        Lease::from_object(json!({
            "metadata": {"name": name, "resourceVersion": resource_version},
            "spec": spec,
        }))
    }
}

/// The Leases of one election in one namespace.
#[derive(Clone)]
pub(super) struct Leases {
    client: Client,
    namespace: String,
    election: String,
}

impl Leases {
    /// The Leases of election `election` (its name) in `namespace`.
    pub(super) fn new(client: Client, namespace: &str, election: &str) -> Self {
        Leases {
            client,
            namespace: namespace.to_owned(),
            election: election.to_owned(),
        }
    }

    /// `namespace/name`, for people.
    pub(super) fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    fn path(&self, name: Option<&str>) -> String {
        ApiResource::leases().path(Some(&self.namespace), name)
    }

    /// The Lease `name`; `None` when there is none.
    pub(super) async fn get(&self, name: &str) -> Result<Option<Lease>, Error> {
        let object = self.client.get_opt(&self.path(Some(name))).await?;
        Ok(object.map(Lease::from_object))
    }

    /// Every Lease of this election, and the version to watch them from.
    pub(super) async fn list(&self) -> Result<(Vec<Lease>, String), Error> {
        let params = ListParams::labels(&self.selector());
        let list = self.client.list(&self.path(None), &params).await?;
        let leases = list.items.into_iter().map(Lease::from_object).collect();
        Ok((leases, list.resource_version))
    }

    /// Watches every Lease of this election from `version` (a list's).
    pub(super) async fn watch_all(&self, version: &str) -> Result<WatchStream, Error> {
        let params = WatchParams {
            label_selector: Some(self.selector()),
            field_selector: None,
            timeout: WATCH_TIMEOUT,
        };
        self.client.watch(&self.path(None), &params, version).await
    }

    fn selector(&self) -> String {
        format!("{ELECTION_LABEL}={}", self.election)
    }

    /// Creates Lease `name` holding `record` (409 AlreadyExists if another replica
    /// was first).
    pub(super) async fn create(
        &self,
        name: &str,
        kind: LeaseKind,
        record: &Record,
    ) -> Result<Lease, Error> {
        let mut spec = Map::new();
        record.write_into(&mut spec);
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {ELECTION_LABEL: self.election, KIND_LABEL: kind.as_str()},
            },
            "spec": spec,
        });
        let created = self
            .client
            .create(&self.path(None), &body, &PostParams::default())
            .await?;
        Ok(Lease::from_object(created))
    }

    /// Replaces `lease`'s record with `record`, at the version read (409 Conflict
    /// if anyone wrote it since).
    pub(super) async fn update(&self, lease: &Lease, record: &Record) -> Result<Lease, Error> {
        let body = lease.with(record);
        let path = self.path(Some(&lease.name));
        let written = self
            .client
            .request_json(Method::PUT, &path, Some(&body), None)
            .await?;
        Ok(Lease::from_object(written))
    }

    /// Deletes `lease` (a replica's heartbeat, once it is gone), only if it is still
    /// the object read.
    pub(super) async fn delete(&self, lease: &Lease) -> Result<(), Error> {
        let uid = lease.object.uid().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.to_owned(),
            }),
            ..DeleteParams::default()
        };
        self.client
            .delete(&self.path(Some(&lease.name)), &params)
            .await
    }

    /// Watches `lease` from the version read, so that a follower learns of its
    /// release at once instead of at its next try.
    pub(super) async fn watch(&self, lease: &Lease) -> Result<WatchStream, Error> {
        let version = lease.object.resource_version().unwrap_or_default();
        let params = WatchParams {
            label_selector: None,
            field_selector: Some(format!("metadata.name={}", lease.name)),
            timeout: WATCH_TIMEOUT,
        };
        self.client.watch(&self.path(None), &params, version).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn records_round_trip_through_a_spec_keeping_other_fields() {
        let record = Record {
            holder: Some("a_1".into()),
            duration: Duration::from_secs(15),
            acquire_time: Some("2024-01-02T03:04:05.000006Z".into()),
            renew_time: Some("2024-01-02T03:04:07.000006Z".into()),
            transitions: 3,
        };
        let mut spec = Map::new();
        spec.insert("strategy".into(), json!("OldestEmulationVersion"));
        record.write_into(&mut spec);
        assert_eq!(spec["strategy"], "OldestEmulationVersion");
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert_eq!(Record::from_spec(&Value::Object(spec)), record);
    }

    #[test]
    fn a_released_lease_has_an_empty_holder() {
        let released = Record {
            duration: Duration::from_secs(1),
            ..Record::default()
        };
        let mut spec = Map::new();
        released.write_into(&mut spec);
        assert_eq!(spec["holderIdentity"], "");
        assert_eq!(Record::from_spec(&Value::Object(spec)).holder, None);
        assert_eq!(Record::from_spec(&json!({})), Record::default());
    }

    #[test]
    fn micro_time_is_rfc3339_with_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn an_update_keeps_the_version_read() {
        let lease = Lease::fake("converge", Record::default(), "42");
        let record = Record {
            holder: Some("b".into()),
            ..Record::default()
        };
        let body = lease.with(&record);
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(body["spec"]["holderIdentity"], "b");
    }
}
