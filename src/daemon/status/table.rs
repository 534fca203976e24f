//! The table `converge status` prints from the daemon's `/status`
//! ([`super`] is the model; this is only how people read it).

use crate::config::ElectionScope;
use crate::daemon::status::{
    ClusterReach, ObjectState, ReplicaRole, ReplicaStatus, SourceHealth, SourceStatus,
    StatusReport, SyncResult,
};
use crate::health::State;
use crate::report::{Style, evidence_text};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

const HEADERS: [&str; 7] = [
    "SOURCE",
    "KIND",
    "REVISION",
    "RESULT",
    "HEALTH",
    "LAST SUCCESS",
    "OBJECTS",
];
/// The column added when replicas elect who writes: which one writes the source.
const OWNER_HEADER: &str = "OWNER";

/// The index of the RESULT column, the only one that is colored.
const RESULT_COLUMN: usize = 3;

/// The order in which counts are listed in the OBJECTS column.
const COUNT_ORDER: [ObjectState; 6] = [
    ObjectState::InSync,
    ObjectState::Shared,
    ObjectState::Drifted,
    ObjectState::Missing,
    ObjectState::Pruned,
    ObjectState::Failed,
];

/// States that need a person's attention and get a section under the table.
fn needs_attention(state: ObjectState) -> bool {
    matches!(
        state,
        ObjectState::Drifted | ObjectState::Missing | ObjectState::Failed
    )
}

/// What `converge status` prints: an aligned table with one row per source, the
/// errors of failed sources under their rows, then the diff or reason of every
/// object that needs attention, so the answer to "what is wrong?" is on one screen.
pub fn status_text(report: &StatusReport, color: bool) -> String {
    status_text_at(report, color, SystemTime::now())
}

/// [`status_text`] with an explicit "now", so relative times are testable.
fn status_text_at(report: &StatusReport, color: bool, now: SystemTime) -> String {
    let elected = report.replica.is_some();
    let mut headers: Vec<String> = HEADERS.map(str::to_owned).to_vec();
    if elected {
        headers.push(OWNER_HEADER.to_owned());
    }
    let rows: Vec<Vec<String>> = report
        .sources
        .iter()
        .map(|s| row(s, now, elected))
        .collect();
    let widths = column_widths(&headers, &rows);
    let mut out = String::new();
    push_replica(&mut out, report.replica.as_ref());
    push_row(&mut out, &headers, &widths, None);
    let mut order: Vec<usize> = (0..report.sources.len()).collect();
    order.sort_by_key(|&i| report.sources[i].cluster.as_ref().map(|c| c.name.clone()));
    let grouped = report.sources.iter().any(|s| s.cluster.is_some());
    let mut group = None;
    for i in order {
        let (source, cells) = (&report.sources[i], &rows[i]);
        let cluster = source.cluster.as_ref();
        if grouped && group != Some(cluster.map(|c| &c.name)) {
            group = Some(cluster.map(|c| &c.name));
            push_cluster(&mut out, cluster);
        }
        let tint = color.then(|| result_color(source.result));
        push_row(&mut out, cells, &widths, tint);
        push_suspended(&mut out, source, now);
        push_error(&mut out, source);
    }
    for source in &report.sources {
        push_object_sections(&mut out, source);
        push_health_sections(&mut out, source);
    }
    out
}

/// `cluster edge-1 (unreachable)`: the heading of the sources of one cluster, when
/// sources write to more than one.
fn push_cluster(out: &mut String, cluster: Option<&ClusterReach>) {
    let _ = match cluster {
        None => writeln!(out, "cluster home ([cluster])"),
        Some(c) if c.reachable => writeln!(out, "cluster {} (reachable)", c.name),
        Some(c) => writeln!(out, "cluster {} (unreachable)", c.name),
    };
}

/// `replica web-0 (follower; leader web-1, lease ops/converge)`: who answered.
fn push_replica(out: &mut String, replica: Option<&ReplicaStatus>) {
    let Some(replica) = replica else { return };
    let role = match (replica.election, replica.role) {
        (ElectionScope::Source, _) => "shard".to_owned(),
        (ElectionScope::Daemon, Some(ReplicaRole::Follower)) => {
            let leader = replica.leader.as_deref().unwrap_or("none");
            format!("follower; leader {leader}")
        }
        (ElectionScope::Daemon, _) => "leader".to_owned(),
    };
    let _ = writeln!(
        out,
        "replica {} ({role}, lease {})\n",
        replica.identity, replica.lease
    );
}

/// The cells of one source's row, uncolored (widths are measured on these).
fn row(source: &SourceStatus, now: SystemTime, elected: bool) -> Vec<String> {
    let revision = source
        .revision
        .as_deref()
        .map_or_else(|| "-".to_owned(), short_revision);
    let result = match (&source.waiting_for[..], source.dry_run) {
        _ if source.suspended.is_some() => format!("{} (suspended)", source.result),
        ([], false) => source.result.to_string(),
        ([], true) => format!("{} (dry run)", source.result),
        (waiting, _) => format!("waiting for {}", waiting.join(", ")),
    };
    let last_success = source
        .last_success
        .map_or_else(|| "never".to_owned(), |t| relative_time(t, now));
    let mut cells = vec![
        source.name.clone(),
        source.kind.to_string(),
        revision,
        result,
        health_cell(&source.health),
        last_success,
        object_counts(source),
    ];
    if elected {
        cells.push(source.owner.clone().unwrap_or_else(|| "-".to_owned()));
    }
    cells
}

pub(super) fn column_widths(headers: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

/// Writes one aligned line. Padding is computed on the plain text and added outside
/// the color codes, so colored and plain tables line up the same way.
pub(super) fn push_row(out: &mut String, cells: &[String], widths: &[usize], tint: Option<Style>) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let padding = width.saturating_sub(cell.chars().count());
        match tint {
            Some(tint) if i == RESULT_COLUMN => {
                let _ = write!(line, "{}", tint.paint(cell));
            }
            _ => line.push_str(cell),
        }
        line.extend(std::iter::repeat_n(' ', padding));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn result_color(result: SyncResult) -> Style {
    match result {
        SyncResult::Synced => Style::Green,
        SyncResult::Drifted | SyncResult::Pending | SyncResult::Waiting => Style::Yellow,
        SyncResult::Failed => Style::Red,
    }
}

/// Who suspended the source, when and why, indented under its row.
fn push_suspended(out: &mut String, source: &SourceStatus, now: SystemTime) {
    let Some(suspension) = &source.suspended else {
        return;
    };
    let when = suspension.at.map_or_else(
        || "at an unknown time".to_owned(),
        |t| relative_time(t, now),
    );
    let reason = suspension.reason.as_deref().unwrap_or("no reason given");
    let _ = writeln!(
        out,
        "  suspended by {} {when}: {reason} (drift is reported, not healed; `converge resume {}`)",
        suspension.by, source.name
    );
}

/// The error of a failed source, indented under its row, with the revision that
/// failed when it is not the one still applied.
fn push_error(out: &mut String, source: &SourceStatus) {
    let Some(error) = &source.error else { return };
    let at = match &source.attempted_revision {
        Some(attempted) if source.revision.as_ref() != Some(attempted) => {
            format!(" (revision {})", short_revision(attempted))
        }
        _ => String::new(),
    };
    let mut lines = error.lines();
    let _ = writeln!(out, "  error{at}: {}", lines.next().unwrap_or_default());
    for line in lines {
        let _ = writeln!(out, "    {line}");
    }
}

/// A blank line, then `<object> <state>:` and its diff or reason, indented, for
/// every object of the source that is drifted, missing or failed.
fn push_object_sections(out: &mut String, source: &SourceStatus) {
    for object in source.objects.iter().filter(|o| needs_attention(o.state)) {
        let _ = writeln!(out, "\n{} {}:", object.object, object.state);
        let detail = object.diff.as_deref().or(object.reason.as_deref());
        for line in detail.unwrap_or("(no details recorded)").lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}

/// `ready 35/35`, `progressing 12/35`, `failed 34/35`: the state and how many
/// objects are ready; `-` before the first reconcile.
fn health_cell(health: &SourceHealth) -> String {
    match health.state {
        Some(state) => format!("{state} {}/{}", health.ready, health.objects.len()),
        None => "-".to_owned(),
    }
}

/// Every failed object of the source with the evidence gathered for it.
fn push_health_sections(out: &mut String, source: &SourceStatus) {
    for object in source
        .health
        .objects
        .iter()
        .filter(|o| o.health.state == State::Failed)
    {
        let health = &object.health;
        let _ = writeln!(
            out,
            "\n{} failed: {}\n  decided by: {}",
            object.object, health.message, health.rule
        );
        if let Some(evidence) = &object.evidence {
            out.push_str(&evidence_text(evidence));
        }
    }
}

/// Git revisions are 40 hex digits; 12 identify a commit in any real repository.
pub(super) fn short_revision(revision: &str) -> String {
    revision.chars().take(12).collect()
}

/// `35 in-sync, 1 drifted`: only the states that occur, in a fixed order.
fn object_counts(source: &SourceStatus) -> String {
    let parts: Vec<String> = COUNT_ORDER
        .iter()
        .map(|&state| (state, source.count(state)))
        .filter(|&(_, n)| n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`: the largest whole unit, which is all a
/// person scanning the table needs. A time in the future (clock skew between the
/// daemon and the client) reads as `0s ago`.
fn relative_time(then: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::ObjectStatus;
    use crate::daemon::status::test_support::{board_with, healthy, object, sample_report};
    use crate::health::{Evidence, Health};
    use crate::report::unstyled;
    use std::time::UNIX_EPOCH;

    #[test]
    fn object_counts_list_only_states_that_occur() {
        let mut source = board_with(&["apps"]).report().sources.remove(0);
        assert_eq!(object_counts(&source), "-");
        source.objects = vec![
            object("a", ObjectState::InSync),
            object("b", ObjectState::InSync),
            object("c", ObjectState::Drifted),
        ];
        assert_eq!(object_counts(&source), "2 in-sync, 1 drifted");
    }

    #[test]
    fn table_shows_failed_objects_with_their_evidence() {
        let board = board_with(&["apps"]);
        board.update("apps", |s| {
            s.result = SyncResult::Synced;
            s.health.set_objects(vec![healthy(
                "Job.batch/shop/migrate",
                Health::failed("Job failed: BackoffLimitExceeded"),
            )]);
            s.health.set_evidence(
                "Job.batch/shop/migrate",
                Evidence {
                    notes: vec!["all 0 Pod(s) of it are ready".into()],
                    ..Evidence::default()
                },
            );
        });
        let table = status_text_at(&board.report(), false, SystemTime::now());
        assert!(
            table
                .lines()
                .nth(1)
                .unwrap_or_default()
                .contains("failed 0/1"),
            "{table}"
        );
        assert!(
            table.contains("\nJob.batch/shop/migrate failed: Job failed: BackoffLimitExceeded\n"),
            "{table}"
        );
        assert!(table.contains("all 0 Pod(s) of it are ready"), "{table}");
    }

    #[test]
    fn table_has_aligned_columns_relative_time_and_diff_section() {
        let report = sample_report();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_012);
        let table = status_text_at(&report, false, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "SOURCE  KIND  REVISION      RESULT   HEALTH     LAST SUCCESS  OBJECTS"
        );
        assert_eq!(
            lines[1],
            "apps    git   0123456789ab  drifted  ready 2/2  12s ago       1 in-sync, 1 drifted"
        );
        assert!(table.contains("\nDeployment.apps/shop/web drifted:\n    -  replicas: 3\n"));
        assert!(!table.contains("Namespace/shop"));
        assert!(!table.contains('\x1b'));
    }

    #[test]
    fn table_shows_errors_reasons_and_never() {
        let board = board_with(&["apps", "infrastructure"]);
        board.update("infrastructure", |s| {
            s.result = SyncResult::Failed;
            s.attempted_revision = Some("feedfacecafe1234".into());
            s.error = Some("apps.yaml:3: unknown kind Deploymnet\nsecond line".into());
            s.objects = vec![ObjectStatus {
                reason: Some("admission webhook denied".into()),
                ..object("ConfigMap/infra/settings", ObjectState::Failed)
            }];
        });
        let table = status_text_at(&board.report(), false, SystemTime::now());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("apps            git   -         pending  -       never"));
        assert!(lines[2].starts_with("infrastructure  git   -         failed   -       never"));
        assert_eq!(
            lines[3],
            "  error (revision feedfacecafe): apps.yaml:3: unknown kind Deploymnet"
        );
        assert_eq!(lines[4], "    second line");
        assert!(table.contains("ConfigMap/infra/settings failed:\n    admission webhook denied\n"));
    }

    #[test]
    fn color_tints_only_the_result_and_keeps_alignment() {
        let report = sample_report();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_012);
        let plain = status_text_at(&report, false, now);
        let colored = status_text_at(&report, true, now);
        let drifted = Style::Yellow.paint("drifted");
        assert!(colored.contains(&format!("{drifted}  ready 2/2  12s ago")));
        assert_eq!(unstyled(&colored), plain);
    }

    #[test]
    fn sources_are_grouped_under_their_clusters() {
        let board = board_with(&["apps", "edge-apps"]);
        board.update("edge-apps", |s| {
            s.cluster = Some(ClusterReach {
                name: "edge-1".into(),
                reachable: false,
            });
        });
        let table = status_text_at(&board.report(), false, SystemTime::now());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1], "cluster home ([cluster])", "{table}");
        assert!(lines[2].starts_with("apps "), "{table}");
        assert_eq!(lines[3], "cluster edge-1 (unreachable)", "{table}");
        assert!(lines[4].starts_with("edge-apps "), "{table}");
        let single = status_text_at(&board_with(&["apps"]).report(), false, SystemTime::now());
        assert!(
            !single.contains("cluster "),
            "one cluster needs no heading: {single}"
        );
    }

    #[test]
    fn replicas_show_who_answered_and_who_owns_each_source() {
        let mut report = sample_report();
        report.replica = Some(ReplicaStatus {
            identity: "web-0".into(),
            election: ElectionScope::Daemon,
            lease: "ops/converge".into(),
            role: Some(ReplicaRole::Follower),
            leader: Some("web-1".into()),
        });
        report.sources[0].owner = Some("web-1".into());
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_012);
        let table = status_text_at(&report, false, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "replica web-0 (follower; leader web-1, lease ops/converge)"
        );
        assert!(lines[2].ends_with("OBJECTS               OWNER"), "{table}");
        assert!(lines[3].ends_with("1 in-sync, 1 drifted  web-1"), "{table}");
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| relative_time(now - Duration::from_secs(secs), now);
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(59), "59s ago");
        assert_eq!(ago(61), "1m ago");
        assert_eq!(ago(7_200), "2h ago");
        assert_eq!(ago(3 * 86_400), "3d ago");
        assert_eq!(relative_time(now + Duration::from_secs(5), now), "0s ago");
    }
}
