//! `converge get sources` and `converge get objects [SOURCE]`: what is deployed,
//! as listings (one row per source or per object, nothing under the rows), read
//! from the same `/status` report as `converge status` and aligned the same way.
//! Scripts get the same rows as JSON.

use super::table::{column_widths, push_row, short_revision};
use super::{ElectionScope, ObjectState, ReplicaRole, SourceStatus, StatusReport};
use crate::health::State;
use serde::Serialize;
use std::collections::BTreeMap;

/// One source as `get sources` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRow {
    pub name: String,
    pub kind: String,
    pub location: String,
    /// The revision applied last (full), `None` before the first success.
    pub revision: Option<String>,
    /// The sync result: synced, drifted, failed, pending, waiting.
    pub result: String,
    /// The objects' overall health, `None` before the first success.
    pub health: Option<State>,
    pub ready: usize,
    /// Objects drifted or missing: what a heal would write.
    pub drifted: usize,
    pub objects: usize,
    /// The replica that writes the source (leader election), else `None`.
    pub owner: Option<String>,
}

/// One object as `get objects` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRow {
    pub source: String,
    pub object: String,
    /// in-sync, drifted, missing, pruned, shared, failed; `None` when only the
    /// health watch knows the object yet.
    pub drift: Option<ObjectState>,
    pub health: Option<State>,
    pub message: Option<String>,
    pub origin: Option<String>,
    /// The source's applied revision.
    pub revision: Option<String>,
    pub owner: Option<String>,
}

/// The replica that writes `source`: its own owner in shard mode, the leader in
/// leader mode, none without an election.
fn owner(report: &StatusReport, source: &SourceStatus) -> Option<String> {
    if source.owner.is_some() {
        return source.owner.clone();
    }
    let replica = report.replica.as_ref()?;
    match (replica.election, replica.role) {
        (ElectionScope::Daemon, Some(ReplicaRole::Leader)) => Some(replica.identity.clone()),
        (ElectionScope::Daemon, _) => replica.leader.clone(),
        (ElectionScope::Source, _) => None,
    }
}

/// Every source of the report.
pub fn source_rows(report: &StatusReport) -> Vec<SourceRow> {
    report
        .sources
        .iter()
        .map(|s| SourceRow {
            name: s.name.clone(),
            kind: s.kind.to_string(),
            location: s.location.clone(),
            revision: s.revision.clone(),
            result: s.result.to_string(),
            health: s.health.state,
            ready: s.health.ready,
            drifted: s.count(ObjectState::Drifted) + s.count(ObjectState::Missing),
            objects: s.objects.len(),
            owner: owner(report, s),
        })
        .collect()
}

/// Every object of every source, or of the sources named `only`; objects are
/// those of the last reconcile joined with their health from the watch.
pub fn object_rows(report: &StatusReport, only: Option<&str>) -> Vec<ObjectRow> {
    let mut rows = Vec::new();
    for source in report
        .sources
        .iter()
        .filter(|s| only.is_none_or(|name| s.name == name))
    {
        let owner = owner(report, source);
        let mut objects: BTreeMap<&str, ObjectRow> = BTreeMap::new();
        let row = |object: &str| ObjectRow {
            source: source.name.clone(),
            object: object.to_string(),
            drift: None,
            health: None,
            message: None,
            origin: None,
            revision: source.revision.clone(),
            owner: owner.clone(),
        };
        for object in &source.objects {
            let entry = objects
                .entry(object.object.as_str())
                .or_insert_with(|| row(&object.object));
            entry.drift = Some(object.state);
            entry.origin.clone_from(&object.origin);
        }
        for object in &source.health.objects {
            let entry = objects
                .entry(object.object.as_str())
                .or_insert_with(|| row(&object.object));
            entry.health = Some(object.health.state);
            entry.message = Some(object.health.message.clone());
        }
        rows.extend(objects.into_values());
    }
    rows
}

/// `get sources` as an aligned table.
pub fn sources_table(rows: &[SourceRow]) -> String {
    let headers = [
        "NAME", "KIND", "REVISION", "RESULT", "HEALTH", "DRIFT", "OBJECTS", "OWNER",
    ]
    .map(str::to_owned);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                r.revision
                    .as_deref()
                    .map_or_else(|| "-".into(), short_revision),
                r.result.clone(),
                r.health
                    .map_or_else(|| "-".into(), |h| format!("{h} {}/{}", r.ready, r.objects)),
                match r.drifted {
                    0 => "none".into(),
                    n => format!("{n} objects"),
                },
                r.objects.to_string(),
                r.owner.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&headers, &cells)
}

/// `get objects` as an aligned table.
pub fn objects_table(rows: &[ObjectRow]) -> String {
    let headers = ["SOURCE", "OBJECT", "DRIFT", "HEALTH", "REVISION", "ORIGIN"].map(str::to_owned);
    let dash = || "-".to_string();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.object.clone(),
                r.drift.map_or_else(dash, |d| d.to_string()),
                r.health.map_or_else(dash, |h| h.to_string()),
                r.revision.as_deref().map_or_else(dash, short_revision),
                r.origin.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    table(&headers, &cells)
}

fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let widths = column_widths(headers, rows);
    let mut out = String::new();
    push_row(&mut out, headers, &widths, None);
    for row in rows {
        push_row(&mut out, row, &widths, None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::test_support::sample_report;
    use crate::daemon::status::{ReplicaStatus, SyncResult};

    #[test]
    fn sources_list_revision_result_health_drift_and_owner() {
        let report = sample_report();
        let rows = source_rows(&report);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].drifted, 1);
        assert_eq!(rows[0].result, SyncResult::Drifted.to_string());
        assert_eq!(rows[0].owner, None);
        let text = sources_table(&rows);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("NAME  KIND  REVISION"), "{text}");
        let row = lines.next().unwrap_or_default();
        for cell in [
            "apps",
            "0123456789ab",
            "drifted",
            "ready 2/2",
            "1 objects",
            "-",
        ] {
            assert!(row.contains(cell), "{cell}: {text}");
        }
    }

    #[test]
    fn the_leader_owns_every_source_in_leader_mode() {
        let mut report = sample_report();
        report.replica = Some(ReplicaStatus {
            identity: "web-1".into(),
            election: ElectionScope::Daemon,
            lease: "ops/converge".into(),
            role: Some(ReplicaRole::Follower),
            leader: Some("web-0".into()),
        });
        assert_eq!(source_rows(&report)[0].owner.as_deref(), Some("web-0"));
        report.sources[0].owner = Some("web-2".into());
        assert_eq!(source_rows(&report)[0].owner.as_deref(), Some("web-2"));
    }

    #[test]
    fn objects_join_drift_and_health_and_filter_by_source() {
        let report = sample_report();
        let rows = object_rows(&report, Some("apps"));
        assert_eq!(rows.len(), 2);
        let web = rows
            .iter()
            .find(|r| r.object == "Deployment.apps/shop/web")
            .expect("web");
        assert_eq!(web.drift, Some(ObjectState::Drifted));
        assert_eq!(web.health, Some(State::Ready));
        assert!(object_rows(&report, Some("other")).is_empty());
        let text = objects_table(&rows);
        assert!(text.contains("Deployment.apps/shop/web  drifted"), "{text}");
    }
}
