//! A source's periodic relist (`relist_every`): the kinds it watches are listed
//! again, metadata only, and compared with its watch cache ([`crate::kube::relist`]).
//! A repaired object reaches the source task as a reflector's change does, so it
//! is taken as drift and reconciled by the usual path.
//!
//! Why a task of its own: at 10 000 objects a relist takes seconds of LIST pages,
//! and the source task must keep answering webhooks, the control API and drift
//! meanwhile. One relist at a time: a relist still running when the next is due is
//! not started twice.

use crate::daemon::metrics::Metrics;
use crate::kube::relist::{CONFIRM_AFTER, Relist};
use crate::kube::watch::{Change, Store};
use crate::kube::{ApiResource, Client};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// What one relist reads and where it reports.
pub(crate) struct RelistJob {
    pub source: String,
    pub client: Client,
    /// Each watched kind with the label selector its reflector watches with.
    pub kinds: Vec<(ApiResource, String)>,
    pub store: Store,
    pub changes: mpsc::UnboundedSender<Change>,
    pub metrics: Metrics,
}

/// When the next relist of a source is due, and the one running.
pub(crate) struct Relister {
    every: Duration,
    next: Instant,
    running: Option<JoinHandle<()>>,
}

impl Drop for Relister {
    fn drop(&mut self) {
        if let Some(task) = &self.running {
            task.abort();
        }
    }
}

impl Relister {
    /// The first relist is due `every` after `now` (the reflectors have just
    /// listed everything at start).
    pub(crate) fn new(every: Duration, now: Instant) -> Self {
        Relister {
            every,
            next: now + every,
            running: None,
        }
    }

    /// When the next relist is due.
    pub(crate) fn due(&self) -> Instant {
        self.next
    }

    /// Starts `job` (nothing to relist: `None`) unless the last one still runs, and
    /// schedules the next.
    pub(crate) fn start(&mut self, job: Option<RelistJob>, now: Instant) {
        self.next = now + self.every;
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            warn!(every = ?self.every, "the last relist is still running; not starting another");
            return;
        }
        self.running = job.map(|job| {
            let span = info_span!("relist", source = %job.source);
            tokio::spawn(run(job).instrument(span))
        });
    }
}

/// Relists every kind of `job`, logs each repair and counts it, and records how
/// long it all took.
async fn run(job: RelistJob) {
    let started = Instant::now();
    let relist = Relist {
        client: &job.client,
        store: &job.store,
        changes: &job.changes,
        confirm_after: CONFIRM_AFTER,
    };
    let (mut objects, mut requests, mut repairs, mut failed) = (0, 0, 0, 0);
    for (resource, selector) in &job.kinds {
        match relist.kind(resource, selector).await {
            Ok(done) => {
                objects += done.listed;
                requests += done.requests;
                for repair in &done.repairs {
                    warn!(source = %job.source, object = %repair.object, found = %repair.found,
                        "the watch cache missed a change; repaired, reconciling");
                    job.metrics.count_cache_repair(&job.source, &resource.kind);
                }
                repairs += done.repairs.len();
            }
            Err(error) => {
                failed += 1;
                warn!(source = %job.source, kind = %resource.kind, %error,
                    "relist failed; the next one will try again");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    job.metrics.observe_relist(&job.source, seconds);
    info!(source = %job.source, kinds = job.kinds.len(), objects, requests, repairs, failed,
        seconds, "relisted");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_next_relist_is_due_one_period_after_the_last_start() {
        let every = Duration::from_secs(20);
        let start = Instant::now();
        let mut relister = Relister::new(every, start);
        assert_eq!(relister.due(), start + every);
        tokio::time::advance(every).await;
        relister.start(None, Instant::now());
        assert_eq!(relister.due(), start + 2 * every);
        assert!(relister.running.is_none(), "nothing watched: nothing runs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_relist_still_running_is_not_started_twice() {
        let every = Duration::from_secs(20);
        let mut relister = Relister::new(every, Instant::now());
        let slow = tokio::spawn(std::future::pending::<()>());
        let id = slow.id();
        relister.running = Some(slow);
        relister.start(None, Instant::now());
        let running = relister.running.as_ref().expect("kept");
        assert_eq!(running.id(), id, "the running one is kept");
    }
}
