//! Pure: what is news. The [`Recorder`](crate::daemon::record::Recorder) hands
//! each source's [`Tracker`] what a reconcile, a health change or a held
//! reconcile came to; the tracker answers with the notifications due, once each:
//! one `synced` per revision, one `drifted` per drifted object set and one
//! `healed` when it is gone, one `degraded` per newly failed object set and one
//! `recovered` when all are ready again, one `failed` per revision (a transient
//! failure retried ten times is one failure), one `waiting` per set of
//! dependencies. It keeps only what it announced, so it is cheap and never does I/O.

use crate::config::NotifyEvent;
use crate::source::short_revision;
use std::collections::BTreeSet;

/// What the daemon recorded, as the tracker reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Observation<'a> {
    /// A reconcile succeeded at `revision`.
    Succeeded {
        revision: &'a str,
        /// Whether this replica wrote (self-heal, and it holds the source).
        applied: bool,
        /// The objects this run created, configured, re-created or pruned.
        written: Vec<String>,
        /// The objects that differ from the source after the run (report-only drift).
        drifted: Vec<String>,
    },
    /// A reconcile, or the fetch before it (no revision then), failed.
    Failed {
        revision: Option<&'a str>,
        message: &'a str,
        /// The objects the server refused, if it named them.
        objects: Vec<String>,
    },
    /// The health of the source's objects changed.
    Health {
        /// Every object judged failed, with why.
        failed: Vec<(String, String)>,
        /// Whether every object is ready.
        all_ready: bool,
    },
    /// A reconcile is held for these dependencies.
    Waiting { dependencies: &'a [String] },
}

/// One notification due: the event, the revision it concerns (when known), the
/// objects and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    pub event: NotifyEvent,
    pub revision: Option<String>,
    pub objects: Vec<String>,
    pub message: String,
}

/// What one source's notifications have said so far.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// The revision last announced as synced (or found applied).
    synced: Option<String>,
    /// The failure last announced: its revision (`None`: a fetch failure).
    failed: Option<Option<String>>,
    /// Objects announced as drifted and not yet healed.
    drifted: BTreeSet<String>,
    /// Objects announced as failed and not yet recovered.
    degraded: BTreeSet<String>,
    /// The dependencies last announced as awaited (without why).
    waiting: Vec<String>,
}

impl Tracker {
    /// The notifications `observation` makes due, in the order they happened.
    pub(crate) fn observe(&mut self, observation: Observation<'_>) -> Vec<Due> {
        match observation {
            Observation::Succeeded {
                revision,
                applied,
                written,
                drifted,
            } => self.succeeded(revision, applied, written, drifted),
            Observation::Failed {
                revision,
                message,
                objects,
            } => self.failed(revision, message, objects),
            Observation::Health { failed, all_ready } => self.health(failed, all_ready),
            Observation::Waiting { dependencies } => self.waiting(dependencies),
        }
    }

    fn succeeded(
        &mut self,
        revision: &str,
        applied: bool,
        written: Vec<String>,
        drifted_now: Vec<String>,
    ) -> Vec<Due> {
        let mut due = Vec::new();
        let short = short_revision(revision);
        self.failed = None;
        self.waiting.clear();
        let same = self.synced.as_deref() == Some(revision);
        if applied && same && !written.is_empty() {
            // The revision was applied already: what had to be written again had
            // drifted, and this run healed it.
            let new: Vec<String> = (written.iter())
                .filter(|o| !self.drifted.contains(*o))
                .cloned()
                .collect();
            if !new.is_empty() {
                due.push(Due {
                    event: NotifyEvent::Drifted,
                    revision: Some(revision.to_string()),
                    message: format!(
                        "{} drifted from revision {short}: {}",
                        count(new.len(), "object"),
                        new.join(", ")
                    ),
                    objects: new,
                });
            }
            self.drifted.extend(written.iter().cloned());
        } else if applied && !same {
            // A daemon that starts on a revision applied before writes nothing:
            // that revision's `synced` was sent by the one before.
            let known = self.synced.is_some() || !written.is_empty();
            self.synced = Some(revision.to_string());
            if known {
                due.push(Due {
                    event: NotifyEvent::Synced,
                    revision: Some(revision.to_string()),
                    message: format!(
                        "revision {short} applied: {} written",
                        count(written.len(), "object")
                    ),
                    objects: written,
                });
            }
        }
        let now: BTreeSet<String> = drifted_now.into_iter().collect();
        let healed: Vec<String> = self.drifted.difference(&now).cloned().collect();
        if !healed.is_empty() {
            for object in &healed {
                self.drifted.remove(object);
            }
            due.push(Due {
                event: NotifyEvent::Healed,
                revision: Some(revision.to_string()),
                message: format!(
                    "{} back at revision {short}: {}",
                    count(healed.len(), "object"),
                    healed.join(", ")
                ),
                objects: healed,
            });
        }
        let new: Vec<String> = now.difference(&self.drifted).cloned().collect();
        if !new.is_empty() {
            self.drifted.extend(new.iter().cloned());
            due.push(Due {
                event: NotifyEvent::Drifted,
                revision: Some(revision.to_string()),
                message: format!(
                    "{} differ from revision {short} (report-only): {}",
                    count(new.len(), "object"),
                    new.join(", ")
                ),
                objects: new,
            });
        }
        due
    }

    fn failed(&mut self, revision: Option<&str>, message: &str, objects: Vec<String>) -> Vec<Due> {
        let key = revision.map(str::to_string);
        if self.failed.as_ref() == Some(&key) {
            return Vec::new();
        }
        self.failed = Some(key.clone());
        self.waiting.clear();
        let message = match revision {
            Some(revision) => format!(
                "revision {} not applied: {message}",
                short_revision(revision)
            ),
            None => format!("cannot fetch the source: {message}"),
        };
        vec![Due {
            event: NotifyEvent::Failed,
            revision: key,
            objects,
            message,
        }]
    }

    fn health(&mut self, failed: Vec<(String, String)>, all_ready: bool) -> Vec<Due> {
        let failing: BTreeSet<String> = failed.iter().map(|(o, _)| o.clone()).collect();
        if failing.is_empty() {
            if all_ready && !self.degraded.is_empty() {
                let objects: Vec<String> = std::mem::take(&mut self.degraded).into_iter().collect();
                return vec![Due {
                    event: NotifyEvent::Recovered,
                    revision: self.synced.clone(),
                    message: format!(
                        "every object is healthy again ({} had failed)",
                        objects.join(", ")
                    ),
                    objects,
                }];
            }
            return Vec::new();
        }
        let news = !failing.is_subset(&self.degraded);
        self.degraded = failing;
        if !news {
            return Vec::new();
        }
        let reasons: Vec<String> = (failed.iter())
            .map(|(object, why)| format!("{object}: {why}"))
            .collect();
        vec![Due {
            event: NotifyEvent::Degraded,
            revision: self.synced.clone(),
            objects: failed.into_iter().map(|(o, _)| o).collect(),
            message: format!(
                "{} failed: {}",
                count(reasons.len(), "object"),
                reasons.join("; ")
            ),
        }]
    }

    fn waiting(&mut self, dependencies: &[String]) -> Vec<Due> {
        // What is awaited, without why: a dependency going from "not found" to
        // "progressing" is the same wait.
        let awaited: Vec<String> = (dependencies.iter())
            .map(|d| {
                d.split_once(": ")
                    .map_or(d.as_str(), |(what, _)| what)
                    .to_string()
            })
            .collect();
        if awaited.is_empty() || self.waiting == awaited {
            return Vec::new();
        }
        self.waiting = awaited;
        vec![Due {
            event: NotifyEvent::Waiting,
            revision: self.synced.clone(),
            objects: dependencies.to_vec(),
            message: format!("waiting for {}", dependencies.join("; ")),
        }]
    }
}

/// `1 object`, `3 objects`.
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn ok(revision: &str, written: &[&str], drifted: &[&str]) -> Observation<'static> {
        let revision: &'static str = if revision == A { A } else { B };
        Observation::Succeeded {
            revision,
            applied: true,
            written: written.iter().map(|s| s.to_string()).collect(),
            drifted: drifted.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn events(due: &[Due]) -> Vec<NotifyEvent> {
        due.iter().map(|d| d.event).collect()
    }

    #[test]
    fn one_synced_per_revision() {
        let mut t = Tracker::default();
        let due = t.observe(ok(A, &["ConfigMap/ns/a"], &[]));
        assert_eq!(events(&due), [NotifyEvent::Synced]);
        assert_eq!(due[0].revision.as_deref(), Some(A));
        assert_eq!(due[0].objects, ["ConfigMap/ns/a"]);
        // A resync of the same revision that wrote nothing is no news.
        assert!(t.observe(ok(A, &[], &[])).is_empty());
        // A new revision is, even when it writes nothing.
        assert_eq!(events(&t.observe(ok(B, &[], &[]))), [NotifyEvent::Synced]);
        assert!(t.observe(ok(B, &[], &[])).is_empty());
    }

    #[test]
    fn a_restart_on_an_applied_revision_is_not_a_sync() {
        let mut t = Tracker::default();
        assert!(t.observe(ok(A, &[], &[])).is_empty());
        assert_eq!(
            events(&t.observe(ok(B, &["x"], &[]))),
            [NotifyEvent::Synced]
        );
    }

    #[test]
    fn a_healed_drift_is_one_drifted_then_one_healed() {
        let mut t = Tracker::default();
        t.observe(ok(A, &["a", "b"], &[]));
        let due = t.observe(ok(A, &["b"], &[]));
        assert_eq!(events(&due), [NotifyEvent::Drifted, NotifyEvent::Healed]);
        assert_eq!(due[0].objects, ["b"]);
        assert_eq!(due[1].objects, ["b"]);
        assert!(t.observe(ok(A, &[], &[])).is_empty());
        // The next drift of the same object is news again.
        assert_eq!(
            events(&t.observe(ok(A, &["b"], &[]))),
            [NotifyEvent::Drifted, NotifyEvent::Healed]
        );
    }

    #[test]
    fn report_only_drift_is_announced_once_and_healed_when_gone() {
        let mut t = Tracker::default();
        t.observe(ok(A, &["a"], &[]));
        let report = |drifted: &[&str]| Observation::Succeeded {
            revision: A,
            applied: false,
            written: Vec::new(),
            drifted: drifted.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(events(&t.observe(report(&["a"]))), [NotifyEvent::Drifted]);
        assert!(t.observe(report(&["a"])).is_empty());
        let due = t.observe(report(&["a", "c"]));
        assert_eq!(events(&due), [NotifyEvent::Drifted]);
        assert_eq!(due[0].objects, ["c"]);
        let due = t.observe(report(&[]));
        assert_eq!(events(&due), [NotifyEvent::Healed]);
        assert_eq!(due[0].objects, ["a", "c"]);
    }

    #[test]
    fn one_failure_per_revision_until_a_success() {
        let mut t = Tracker::default();
        let fail = |revision| Observation::Failed {
            revision,
            message: "refused",
            objects: Vec::new(),
        };
        let due = t.observe(fail(Some(A)));
        assert_eq!(events(&due), [NotifyEvent::Failed]);
        assert!(due[0].message.contains("not applied: refused"));
        assert!(t.observe(fail(Some(A))).is_empty());
        assert_eq!(events(&t.observe(fail(None))), [NotifyEvent::Failed]);
        assert!(t.observe(fail(None)).is_empty());
        t.observe(ok(B, &["x"], &[]));
        assert_eq!(events(&t.observe(fail(Some(A)))), [NotifyEvent::Failed]);
    }

    #[test]
    fn degraded_once_per_failing_set_and_recovered_when_all_ready() {
        let mut t = Tracker::default();
        let health = |failed: &[&str], all_ready| Observation::Health {
            failed: failed
                .iter()
                .map(|o| (o.to_string(), "CrashLoopBackOff".to_string()))
                .collect(),
            all_ready,
        };
        assert!(t.observe(health(&[], true)).is_empty());
        let due = t.observe(health(&["web"], false));
        assert_eq!(events(&due), [NotifyEvent::Degraded]);
        assert!(due[0].message.contains("web: CrashLoopBackOff"));
        assert!(t.observe(health(&["web"], false)).is_empty());
        assert_eq!(
            events(&t.observe(health(&["web", "db"], false))),
            [NotifyEvent::Degraded]
        );
        // Still rolling out: not recovered yet.
        assert!(t.observe(health(&[], false)).is_empty());
        let due = t.observe(health(&[], true));
        assert_eq!(events(&due), [NotifyEvent::Recovered]);
        assert_eq!(due[0].objects, ["db", "web"]);
        assert!(t.observe(health(&[], true)).is_empty());
    }

    #[test]
    fn waiting_once_per_set_of_dependencies() {
        let mut t = Tracker::default();
        let deps = vec!["source base: not synced".to_string()];
        let why_changed = vec!["source base: not healthy".to_string()];
        let more = vec![
            "source base: not healthy".to_string(),
            "object v1/Service/db/pg: not found".to_string(),
        ];
        let wait = |d| Observation::Waiting { dependencies: d };
        assert_eq!(events(&t.observe(wait(&deps))), [NotifyEvent::Waiting]);
        assert!(t.observe(wait(&deps)).is_empty());
        assert!(t.observe(wait(&why_changed)).is_empty(), "the same wait");
        assert_eq!(events(&t.observe(wait(&more))), [NotifyEvent::Waiting]);
        t.observe(ok(A, &["x"], &[]));
        assert_eq!(events(&t.observe(wait(&more))), [NotifyEvent::Waiting]);
    }
}
