//! The recent syncs of a source, for the web page's history: which revision ran,
//! when, how it ended and what it wrote.
//!
//! Bounded ([`HISTORY_LEN`]) and pure. A daemon reconciles a quiet source over and
//! over (drift wakes, resync ticks); those runs write nothing and would push every
//! interesting entry out of a short list, so a run that repeats the entry before
//! it (same revision, same result, nothing written, same error) only bumps that
//! entry's time and count.

use super::{SyncCounts, SyncResult, Written, rfc3339};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::SystemTime;

/// How many syncs a source keeps: a screenful, and small in `/status`.
pub(crate) const HISTORY_LEN: usize = 20;

/// One reconcile (or a run of identical ones) as the history shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub revision: String,
    /// When it finished (for a repeated entry: the latest of them).
    #[serde(with = "rfc3339")]
    pub at: Option<SystemTime>,
    pub result: SyncResult,
    /// What it wrote (or, report-only, would have); `None` for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<SyncCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The sync's stages that wrote or ran something, in order: `pre-sync hooks:
    /// 1 written (migrate-x7k2q)`, `wave 1: 3 written`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// How many reconciles in a row ended like this (1 for most entries).
    pub times: u32,
}

impl SyncRecord {
    /// Whether this run adds nothing to `previous` but its time.
    fn repeats(&self, previous: &SyncRecord) -> bool {
        let wrote_nothing = |r: &SyncRecord| {
            r.stages.is_empty()
                && r.counts.as_ref().is_none_or(|c| {
                    c.written == Written::ReportOnly || c.created + c.configured + c.pruned == 0
                })
        };
        self.revision == previous.revision
            && self.result == previous.result
            && self.error == previous.error
            && wrote_nothing(self)
            && wrote_nothing(previous)
            && self.counts.as_ref().map(|c| c.written)
                == previous.counts.as_ref().map(|c| c.written)
    }
}

/// Adds `record` as the newest entry of `history` (newest first), merging a repeat
/// and dropping the oldest past [`HISTORY_LEN`].
pub(crate) fn push(history: &mut VecDeque<SyncRecord>, record: SyncRecord) {
    if let Some(newest) = history.front_mut()
        && record.repeats(newest)
    {
        newest.at = record.at;
        newest.times = newest.times.saturating_add(1);
        return;
    }
    history.push_front(record);
    history.truncate(HISTORY_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(revision: &str, second: u64, written: usize) -> SyncRecord {
        SyncRecord {
            revision: revision.into(),
            at: Some(UNIX_EPOCH + Duration::from_secs(second)),
            result: SyncResult::Synced,
            counts: Some(SyncCounts {
                written: Written::Applied,
                created: 0,
                configured: written,
                pruned: 0,
                unchanged: 3,
            }),
            error: None,
            stages: Vec::new(),
            times: 1,
        }
    }

    #[test]
    fn quiet_repeats_merge_and_writes_do_not() {
        let mut history = VecDeque::new();
        push(&mut history, record("a", 1, 2));
        push(&mut history, record("a", 2, 0));
        push(&mut history, record("a", 3, 0));
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!(history[0].times, 2);
        assert_eq!(history[0].at, Some(UNIX_EPOCH + Duration::from_secs(3)));
        push(&mut history, record("a", 4, 1));
        push(&mut history, record("b", 5, 0));
        assert_eq!(history.len(), 4);
        assert_eq!(history[0].revision, "b");
        let hooks_ran = SyncRecord {
            stages: vec!["post-sync hooks: 1 written (smoke-x7k2q)".into()],
            ..record("b", 6, 0)
        };
        push(&mut history, hooks_ran);
        assert_eq!(history.len(), 5, "a sync that ran a hook is news");
    }

    #[test]
    fn a_failure_with_another_error_is_news() {
        let failed = |error: &str| SyncRecord {
            result: SyncResult::Failed,
            counts: None,
            error: Some(error.into()),
            ..record("a", 1, 0)
        };
        let mut history = VecDeque::new();
        push(&mut history, failed("one"));
        push(&mut history, failed("one"));
        push(&mut history, failed("two"));
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].times, 2);
    }

    #[test]
    fn it_is_bounded() {
        let mut history = VecDeque::new();
        for i in 0..(HISTORY_LEN as u64 + 5) {
            push(&mut history, record(&format!("r{i}"), i, 1));
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].revision, format!("r{}", HISTORY_LEN + 4));
    }
}
