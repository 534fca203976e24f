//! What the pages show, computed from a [`StatusReport`]: pure, so that every
//! label, colour and "3 min ago" is decided here and tested, and the templates
//! only lay it out.
//!
//! Nothing here reads a Secret: the diffs are the status model's, masked by the
//! engine before they were recorded, and the evidence holds status, never a spec.

use crate::daemon::status::{
    ObjectState, SourceStatus, StatusReport, SyncCounts, SyncRecord, SyncResult, Written,
};
use crate::health::{Evidence, State};
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// The colour of a badge: what a reader should make of it at a glance.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Tone {
    /// Synced, in sync, ready.
    Good,
    /// Drifted, progressing, waiting, suspended: look at it.
    Warn,
    /// Failed: act.
    Bad,
    /// Pending, unknown, pruned: nothing to judge yet.
    Quiet,
}

/// A badge: its text and its colour.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct Badge {
    pub label: String,
    pub tone: Tone,
}

impl Badge {
    fn new(label: impl Into<String>, tone: Tone) -> Self {
        Badge {
            label: label.into(),
            tone,
        }
    }
}

/// A moment: "3 min ago" to read, the exact UTC time on hover, and the
/// machine-readable form the script keeps the relative text fresh with.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct Moment {
    pub ago: String,
    pub exact: String,
    pub iso: String,
}

impl Moment {
    fn at(time: Option<SystemTime>, now: SystemTime) -> Option<Moment> {
        let time = time?;
        let iso = humantime::format_rfc3339_millis(time).to_string();
        let exact = humantime::format_rfc3339_seconds(time)
            .to_string()
            .replacen('T', " ", 1)
            .replace('Z', " UTC");
        let ago = ago(now.duration_since(time).unwrap_or(Duration::ZERO));
        Some(Moment { ago, exact, iso })
    }
}

/// "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago": one unit, rounded
/// down, as people say it. `app.js` has the same rule for the live page.
pub(super) fn ago(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    match s {
        0..5 => "just now".to_owned(),
        5..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// A source's name as one path segment of its page's URL.
pub(super) fn path_segment(name: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

/// One line of a unified diff and how to colour it.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub(super) struct DiffLine {
    pub text: String,
    pub kind: LineKind,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum LineKind {
    Added,
    Removed,
    Hunk,
    Context,
}

/// A diff cut into lines, each marked by its first character.
pub(super) fn diff_lines(diff: &str) -> Vec<DiffLine> {
    diff.lines()
        .map(|line| {
            let kind = if line.starts_with("@@") {
                LineKind::Hunk
            } else if line.starts_with('+') && !line.starts_with("+++") {
                LineKind::Added
            } else if line.starts_with('-') && !line.starts_with("---") {
                LineKind::Removed
            } else {
                LineKind::Context
            };
            DiffLine {
                text: line.to_owned(),
                kind,
            }
        })
        .collect()
}

/// The overview: one card per source.
#[derive(Serialize, Debug)]
pub(super) struct Overview {
    pub version: String,
    /// "leader", "follower (leader: x)", or nothing without an election.
    pub replica: Option<String>,
    pub sources: Vec<SourceCard>,
}

/// What the overview says about one source (the source page's heading too).
#[derive(Serialize, Debug)]
pub(super) struct SourceCard {
    pub name: String,
    /// The source page's path.
    pub href: String,
    /// Says the kind too: `git URL ref path "…"`, `dir PATH`.
    pub location: String,
    /// The `[[clusters]]` entry, or "home"; `unreachable` when it did not answer.
    pub cluster: String,
    pub unreachable: bool,
    /// The last good revision, short; `None` before the first success.
    pub revision: Option<String>,
    pub revision_full: Option<String>,
    /// Set when the last attempt was at another revision than the last good one.
    pub attempted: Option<String>,
    pub result: Badge,
    /// The card's edge: the worse of the result and the health.
    pub edge: Tone,
    pub last_success: Option<Moment>,
    pub last_attempt: Option<Moment>,
    pub error: Option<String>,
    /// "2 configured, 1 created" or "nothing to write"; "would …" report-only.
    pub wrote: Option<String>,
    pub objects: usize,
    pub drifted: usize,
    pub health: Badge,
    pub health_counts: HealthCounts,
    pub waiting_for: Vec<String>,
    pub suspended: Option<String>,
    pub report_only: bool,
}

#[derive(Serialize, Debug, Default, PartialEq, Eq)]
pub(super) struct HealthCounts {
    pub ready: usize,
    pub progressing: usize,
    pub failed: usize,
    pub missing: usize,
}

/// A source's own page.
#[derive(Serialize, Debug)]
pub(super) struct SourcePage {
    pub card: SourceCard,
    /// Failed and drifted objects first, then the rest, each group by name.
    pub objects: Vec<ObjectView>,
    pub history: Vec<HistoryRow>,
}

#[derive(Serialize, Debug)]
pub(super) struct ObjectView {
    pub object: String,
    pub state: Badge,
    pub health: Option<Badge>,
    pub health_message: Option<String>,
    pub wave: i32,
    pub origin: Option<String>,
    pub reason: Option<String>,
    /// The masked unified diff, live → desired, line by line.
    pub diff: Vec<DiffLine>,
    pub evidence: Option<Evidence>,
}

#[derive(Serialize, Debug)]
pub(super) struct HistoryRow {
    pub revision: String,
    pub at: Option<Moment>,
    pub result: Badge,
    pub wrote: Option<String>,
    pub error: Option<String>,
    /// The waves and hooks that wrote or ran.
    pub stages: Vec<String>,
    pub times: u32,
}

pub(super) fn overview(report: &StatusReport, now: SystemTime) -> Overview {
    let replica = report.replica.as_ref().and_then(|r| {
        let role = r.role?;
        Some(match &r.leader {
            Some(leader) if leader != &r.identity => format!("{role} (leader: {leader})"),
            _ => role.to_string(),
        })
    });
    Overview {
        version: report.version.clone(),
        replica,
        sources: report.sources.iter().map(|s| card(s, now)).collect(),
    }
}

pub(super) fn source_page(source: &SourceStatus, now: SystemTime) -> SourcePage {
    let mut objects: Vec<ObjectView> = source
        .objects
        .iter()
        .map(|o| {
            let health = source
                .health
                .objects
                .binary_search_by(|h| h.object.as_str().cmp(&o.object))
                .ok()
                .map(|i| &source.health.objects[i]);
            ObjectView {
                object: o.object.clone(),
                state: object_badge(o.state),
                health: health.map(|h| health_badge(Some(h.health.state))),
                health_message: health.map(|h| h.health.message.clone()),
                wave: o.wave,
                origin: o.origin.clone(),
                reason: o.reason.clone(),
                diff: o.diff.as_deref().map(diff_lines).unwrap_or_default(),
                evidence: health.and_then(|h| h.evidence.clone()),
            }
        })
        .collect();
    objects.sort_by_key(|o| {
        let failed =
            o.state.tone == Tone::Bad || o.health.as_ref().is_some_and(|h| h.tone == Tone::Bad);
        let attention = o.state.tone == Tone::Warn;
        (!failed, !attention, o.object.clone())
    });
    let history = source.history.iter().map(|r| history_row(r, now)).collect();
    SourcePage {
        card: card(source, now),
        objects,
        history,
    }
}

fn card(s: &SourceStatus, now: SystemTime) -> SourceCard {
    let attempted = s
        .attempted_revision
        .as_ref()
        .filter(|a| Some(*a) != s.revision.as_ref())
        .map(|a| short(a));
    let drifted = s
        .objects
        .iter()
        .filter(|o| {
            matches!(
                o.state,
                ObjectState::Drifted | ObjectState::Missing | ObjectState::Failed
            )
        })
        .count();
    let result = if s.suspended.is_some() {
        Badge::new(format!("{} · suspended", s.result), Tone::Warn)
    } else {
        result_badge(s.result)
    };
    let health = health_badge(s.health.state);
    SourceCard {
        name: s.name.clone(),
        href: format!("/sources/{}", path_segment(&s.name)),
        location: s.location.clone(),
        cluster: s
            .cluster
            .as_ref()
            .map_or_else(|| "home".to_owned(), |c| c.name.clone()),
        unreachable: s.cluster.as_ref().is_some_and(|c| !c.reachable),
        revision: s.revision.as_deref().map(short),
        revision_full: s.revision.clone(),
        attempted,
        edge: worse(result.tone, health.tone),
        result,
        last_success: Moment::at(s.last_success, now),
        last_attempt: Moment::at(s.last_attempt, now),
        error: s.error.clone(),
        wrote: s.last_sync.as_ref().map(wrote),
        objects: s.objects.len(),
        drifted,
        health,
        health_counts: HealthCounts {
            ready: s.health.ready,
            progressing: s.health.progressing,
            failed: s.health.failed,
            missing: s.health.missing,
        },
        waiting_for: s.waiting_for.clone(),
        suspended: s.suspended.as_ref().map(|x| match &x.reason {
            Some(reason) => format!("by {}: {reason}", x.by),
            None => format!("by {}", x.by),
        }),
        report_only: s.dry_run,
    }
}

fn history_row(r: &SyncRecord, now: SystemTime) -> HistoryRow {
    HistoryRow {
        revision: short(&r.revision),
        at: Moment::at(r.at, now),
        result: result_badge(r.result),
        wrote: r.counts.as_ref().map(wrote),
        error: r.error.clone(),
        stages: r.stages.clone(),
        times: r.times,
    }
}

/// A revision as people compare them: a commit's first 12 hex digits, a
/// directory's hash likewise after its `dir:`/`sha256:` prefix.
pub(super) fn short(revision: &str) -> String {
    let (prefix, rest) = match revision.split_once(':') {
        Some((prefix, rest)) => (format!("{prefix}:"), rest),
        None => (String::new(), revision),
    };
    let rest: String = rest.chars().take(12).collect();
    format!("{prefix}{rest}")
}

/// "1 created, 2 configured, 1 pruned", "nothing written"; report-only says
/// "would".
pub(super) fn wrote(c: &SyncCounts) -> String {
    let parts: Vec<String> = [
        (c.created, "created"),
        (c.configured, "configured"),
        (c.pruned, "pruned"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    match (c.written, parts.is_empty()) {
        (_, true) => "nothing to write".to_owned(),
        (Written::Applied, false) => parts.join(", "),
        (Written::ReportOnly, false) => format!("would have: {}", parts.join(", ")),
    }
}

/// The tone that asks more of the reader.
fn worse(a: Tone, b: Tone) -> Tone {
    let rank = |t| match t {
        Tone::Quiet => 0,
        Tone::Good => 1,
        Tone::Warn => 2,
        Tone::Bad => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn result_badge(result: SyncResult) -> Badge {
    let tone = match result {
        SyncResult::Synced => Tone::Good,
        SyncResult::Drifted | SyncResult::Waiting => Tone::Warn,
        SyncResult::Failed => Tone::Bad,
        SyncResult::Pending => Tone::Quiet,
    };
    Badge::new(result.to_string(), tone)
}

fn object_badge(state: ObjectState) -> Badge {
    let tone = match state {
        ObjectState::InSync | ObjectState::Shared => Tone::Good,
        ObjectState::Drifted | ObjectState::Missing => Tone::Warn,
        ObjectState::Failed => Tone::Bad,
        ObjectState::Pruned => Tone::Quiet,
    };
    Badge::new(state.to_string(), tone)
}

fn health_badge(state: Option<State>) -> Badge {
    match state {
        None => Badge::new("unknown", Tone::Quiet),
        Some(State::Ready) => Badge::new("ready", Tone::Good),
        Some(State::Progressing) => Badge::new("progressing", Tone::Warn),
        Some(State::Failed) => Badge::new("failed", Tone::Bad),
        Some(State::Missing) => Badge::new("missing", Tone::Warn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::test_support::{board_with, healthy, object, sample_report};
    use crate::health::Health;
    use std::time::UNIX_EPOCH;

    #[test]
    fn ago_says_one_unit_rounded_down() {
        let cases = [
            (0, "just now"),
            (4, "just now"),
            (5, "5 s ago"),
            (59, "59 s ago"),
            (60, "1 min ago"),
            (3599, "59 min ago"),
            (3600, "1 h ago"),
            (86399, "23 h ago"),
            (2 * 86400, "2 d ago"),
        ];
        for (secs, text) in cases {
            assert_eq!(ago(Duration::from_secs(secs)), text, "{secs}");
        }
    }

    #[test]
    fn a_moment_has_the_exact_time_for_the_hover() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let moment = Moment::at(Some(at), at + Duration::from_secs(180)).expect("a time");
        assert_eq!(moment.ago, "3 min ago");
        assert_eq!(moment.exact, "2023-11-14 22:13:20 UTC");
        assert_eq!(moment.iso, "2023-11-14T22:13:20.000Z");
        assert_eq!(Moment::at(None, at), None);
        let future = Moment::at(Some(at + Duration::from_secs(9)), at).expect("a time");
        assert_eq!(future.ago, "just now", "clock skew is not negative time");
    }

    #[test]
    fn diffs_are_coloured_by_line_and_names_escaped_in_paths() {
        let lines = diff_lines("--- live\n+++ desired\n@@ -1 +1 @@\n-  a: 1\n+  a: 2\n   b: 3");
        let kinds: Vec<LineKind> = lines.iter().map(|l| l.kind).collect();
        use LineKind::*;
        assert_eq!(kinds, [Context, Context, Hunk, Removed, Added, Context]);
        assert_eq!(path_segment("shop-prod_1.x"), "shop-prod_1.x");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn revisions_are_shortened_after_their_prefix() {
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short("dir:feedfacecafebeef00"), "dir:feedfacecafe");
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn what_was_written_reads_as_a_sentence() {
        let counts = |written, created, configured, pruned| SyncCounts {
            written,
            created,
            configured,
            pruned,
            unchanged: 9,
        };
        assert_eq!(
            wrote(&counts(Written::Applied, 1, 2, 0)),
            "1 created, 2 configured"
        );
        assert_eq!(
            wrote(&counts(Written::Applied, 0, 0, 0)),
            "nothing to write"
        );
        assert_eq!(
            wrote(&counts(Written::ReportOnly, 0, 0, 1)),
            "would have: 1 pruned"
        );
    }

    #[test]
    fn the_overview_counts_drift_and_health_and_colours_them() {
        let report = sample_report();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        let view = overview(&report, now);
        let card = &view.sources[0];
        assert_eq!(card.name, "apps");
        assert_eq!(card.revision.as_deref(), Some("0123456789ab"));
        assert_eq!(card.result, Badge::new("drifted", Tone::Warn));
        assert_eq!((card.objects, card.drifted), (2, 1));
        assert_eq!(card.health, Badge::new("ready", Tone::Good));
        assert_eq!(card.health_counts.ready, 2);
        assert_eq!(
            card.last_success.as_ref().map(|m| m.ago.as_str()),
            Some("1 min ago")
        );
        assert_eq!(card.cluster, "home");
        assert_eq!(card.edge, Tone::Warn, "drifted and ready: look at it");
        assert_eq!(worse(Tone::Warn, Tone::Bad), Tone::Bad);
        assert_eq!(worse(Tone::Good, Tone::Quiet), Tone::Good);
        assert_eq!(view.replica, None);
    }

    #[test]
    fn the_source_page_puts_failures_first_with_their_evidence() {
        let board = board_with(&["apps"]);
        board.update("apps", |s| {
            s.objects = vec![
                object("ConfigMap/shop/a", ObjectState::InSync),
                object("ConfigMap/shop/b", ObjectState::Drifted),
                object("Deployment.apps/shop/web", ObjectState::InSync),
            ];
            s.health.set_objects(vec![
                healthy("ConfigMap/shop/a", Health::ready("exists")),
                healthy("ConfigMap/shop/b", Health::ready("exists")),
                healthy("Deployment.apps/shop/web", Health::failed("rollout failed")),
            ]);
            let evidence = Evidence {
                notes: vec!["FailedScheduling".into()],
                ..Evidence::default()
            };
            s.health.set_evidence("Deployment.apps/shop/web", evidence);
        });
        let source = board.source("apps").expect("registered");
        let page = source_page(&source, SystemTime::now());
        let order: Vec<&str> = page.objects.iter().map(|o| o.object.as_str()).collect();
        assert_eq!(
            order,
            [
                "Deployment.apps/shop/web",
                "ConfigMap/shop/b",
                "ConfigMap/shop/a"
            ]
        );
        assert_eq!(
            page.objects[0].health,
            Some(Badge::new("failed", Tone::Bad))
        );
        assert!(page.objects[0].evidence.is_some());
        assert_eq!(page.objects[1].state, Badge::new("drifted", Tone::Warn));
    }
}
