//! When a source is reconciled, and why: the one owner of every timer of a source,
//! modelled on kube-runtime's controller.
//!
//! Why one owner: two timers for one schedule (a Git poll task and a resync timer
//! re-armed after every wake) let the poll always fire first, so the resync and its
//! full safety net never ran. Here the periodic tick *is* the poll: it fetches, a
//! new revision is reconciled, an unchanged one is a quiet resync, and every
//! `full_resync_every`-th quiet resync is a full reconcile. Its deadline is
//! absolute: only the tick itself re-arms it, so no other wake pushes it out.
//!
//! A reconcile ends in an [`Action`]; a failed one is mapped to one by the error
//! policy ([`Scheduler::finished`]): a transient failure (5xx, 429, no connection,
//! an unreachable remote) is retried with backoff, a revision's own error (parse
//! error, rejection, mass-prune refusal, missing ref) waits for the next revision
//! or tick, since retrying it would only fail again.
//!
//! A suspended source ([`Mode::Suspended`]) keeps every timer and reason: what
//! changes is the duty its reconciles run with ([`Scheduler::duty`]), report-only,
//! so drift still shows; resuming runs a full reconcile at once.
//!
//! Pure: the source task hands in events and the clock and does the I/O; the
//! decisions (which reason, which action, which delay) are unit-tested with a
//! paused Tokio clock.

use crate::daemon::error::ReconcileError;
use crate::daemon::leader::Duty;
use crate::kube::backoff::{Backoff, Delays};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Changes arriving this close together are handled by one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest a change waits for others to batch with it.
const MAX_SETTLE: Duration = Duration::from_millis(500);
/// The first retry after a transient failure; it doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Why a source is reconciled. Reasons that come together merge into the greatest
/// (in declaration order): each does at least what the ones before it do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// Live objects drifted: reconcile them from the last snapshot, no fetch.
    Drift,
    /// The directory watcher or the webhook: fetch; reconcile if anything changed.
    Changed,
    /// The periodic tick (the Git poll): fetch; reconcile what changed, else count
    /// a quiet resync.
    Resync,
    /// Every `full_resync_every`-th quiet resync: everything, as the safety net.
    /// Never pending: [`Scheduler::decide`] turns a [`Reason::Resync`] into it.
    FullResync,
    /// After a transient failure: fetch, everything.
    Retry,
    /// A person asked for it (`converge reconcile`): fetch, everything.
    Requested,
    /// The first reconcile, the first after this replica became the one that
    /// writes (leader election), and the first after a resume: fetch, everything.
    Start,
}

impl Reason {
    /// Whether the reconcile must look at everything (which is what prunes and
    /// records the ApplySet); the others look only at what changed when they can.
    pub(crate) fn requires_full(self) -> bool {
        matches!(
            self,
            Reason::Start | Reason::Requested | Reason::Retry | Reason::FullResync
        )
    }
}

/// Whether a person suspended the source (`converge suspend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Its reconciles write, when this replica is the one that writes.
    Active,
    /// Its reconciles are report-only until it is resumed.
    Suspended,
}

/// What to do after a reconcile, as kube-runtime's `Action` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Reconcile again after this long.
    Requeue(Duration),
    /// Nothing until something changes: an event, or the periodic tick.
    AwaitChange,
}

/// What a fetch found, against what is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// The revision last applied, and no drift pending.
    Nothing,
    /// A new revision (or one that failed last time), or drift pending.
    Changes,
}

/// What a reason amounts to once the source is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// A change signal that changed nothing: no reconcile.
    Nothing,
    /// A resync with nothing changed: counted, not run (the watches keep the live
    /// side current, and drift reconciles at once).
    Quiet,
    /// Reconcile, for this reason.
    Reconcile(Reason),
}

/// A source's schedule settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timing {
    /// The periodic tick: Git poll and resync.
    pub interval: Duration,
    /// One quiet resync in this many is a full reconcile (at least 1).
    pub full_resync_every: u32,
}

/// What a source's dependents (`depends_on`) need to know of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Readiness {
    /// Its last reconcile succeeded, at the latest revision it fetched.
    pub synced: bool,
    /// Every object it applied is healthy.
    pub healthy: bool,
}

/// Every source's [`Readiness`], by name: what each source publishes and its
/// dependents read.
pub(super) type Board = BTreeMap<String, Readiness>;

/// The dependencies that are not synced and healthy yet, in the order given: a
/// source reconciles only once this is empty.
pub(super) fn waiting_for(dependencies: &[String], board: &Board) -> Vec<String> {
    dependencies
        .iter()
        .filter(|d| !board.get(*d).is_some_and(|r| r.synced && r.healthy))
        .cloned()
        .collect()
}

/// The reason collected so far, and when it runs.
#[derive(Debug, Clone, Copy)]
struct Pending {
    reason: Reason,
    at: Instant,
}

/// The timers and counters of one source.
#[derive(Debug)]
pub(super) struct Scheduler {
    timing: Timing,
    /// The next periodic tick.
    resync_at: Instant,
    /// The retry after a transient failure, if one is due.
    retry_at: Option<Instant>,
    /// Retry delays: exponential from [`FIRST_RETRY`] with jitter (so that sources
    /// failing together do not retry together), capped at the interval.
    backoff: Delays,
    pending: Option<Pending>,
    /// Quiet resyncs since the last full reconcile.
    quiet_resyncs: u32,
    /// How long after the last reconcile ended a change waits for others: grows
    /// with that reconcile's duration, so a stream of changes to a large source is
    /// handled in batches. Counted from the end, not from the change: a change to a
    /// source that has been quiet for longer is no part of a stream, and waits only
    /// [`DEBOUNCE`] (a 1 s render must not add 500 ms to an isolated commit).
    settle: Duration,
    /// When the last reconcile ended.
    last_end: Option<Instant>,
    /// A reason that came due while dependencies were not ready: it runs once
    /// they are ([`Scheduler::release`]).
    held: Option<Reason>,
    mode: Mode,
}

impl Scheduler {
    /// A schedule whose first reconcile ([`Reason::Start`]) is due at `now`.
    pub(super) fn new(timing: Timing, now: Instant) -> Self {
        Scheduler {
            timing,
            resync_at: now + timing.interval,
            retry_at: None,
            backoff: Backoff {
                min: FIRST_RETRY.min(timing.interval),
                max: timing.interval,
            }
            .delays(),
            pending: Some(Pending {
                reason: Reason::Start,
                at: now,
            }),
            quiet_resyncs: 0,
            settle: DEBOUNCE,
            last_end: None,
            held: None,
            mode: Mode::Active,
        }
    }

    /// Whether the source is suspended.
    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    /// From now on, reconciles are report-only; the timers run on, so drift and
    /// new revisions are still compared and shown.
    pub(super) fn suspend(&mut self) {
        self.mode = Mode::Suspended;
    }

    /// Reconciles write again, starting with a full one at once: whatever came in
    /// while suspended (commits, drift) is converged by it.
    pub(super) fn resume(&mut self, now: Instant) {
        if self.mode == Mode::Suspended {
            self.mode = Mode::Active;
            self.merge(Reason::Start, now);
        }
    }

    /// The duty a reconcile runs with: the election's (`elected`), unless the
    /// source is suspended.
    pub(super) fn duty(&self, elected: Duty) -> Duty {
        match (self.mode, elected) {
            (Mode::Active, elected) => elected,
            (Mode::Suspended, Duty::StandBy) => Duty::StandBy,
            (Mode::Suspended, _) => Duty::Suspended,
        }
    }

    /// Keeps a due `reason` until the source's dependencies are ready.
    pub(super) fn hold(&mut self, reason: Reason) {
        self.held = Some(self.held.map_or(reason, |held| held.max(reason)));
    }

    /// The dependencies are ready: what was held runs after the settle window.
    pub(super) fn release(&mut self, now: Instant) {
        if let Some(reason) = self.held.take() {
            self.merge(reason, now);
        }
    }

    /// When the source task must wake up next if nothing happens.
    pub(super) fn next_wake(&self) -> Instant {
        [self.retry_at, self.pending.map(|p| p.at)]
            .into_iter()
            .flatten()
            .fold(self.resync_at, Instant::min)
    }

    /// A change signal: [`Reason::Changed`] (watcher, webhook) or [`Reason::Drift`];
    /// or [`Reason::Start`] when this replica's duty changed.
    /// It runs once the settle window has let a burst of them arrive.
    pub(super) fn on_event(&mut self, reason: Reason, now: Instant) {
        self.merge(reason, now);
    }

    /// The reason to reconcile for now, if one is due. Timers that are due join
    /// the pending reason first; the periodic tick re-arms itself here, and only
    /// here.
    pub(super) fn due(&mut self, now: Instant) -> Option<Reason> {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.merge(Reason::Retry, now);
        }
        if self.resync_at <= now {
            self.resync_at = now + self.timing.interval;
            self.merge(Reason::Resync, now);
        }
        let pending = self.pending.filter(|p| p.at <= now)?;
        self.pending = None;
        Some(pending.reason)
    }

    /// What `reason` amounts to, given what the fetch `found`.
    pub(super) fn decide(&mut self, reason: Reason, found: Found) -> Decision {
        match (reason, found) {
            (Reason::Resync, Found::Nothing)
                if self.quiet_resyncs + 1 >= self.timing.full_resync_every =>
            {
                Decision::Reconcile(Reason::FullResync)
            }
            (Reason::Resync, Found::Nothing) => {
                self.quiet_resyncs += 1;
                Decision::Quiet
            }
            (Reason::Changed | Reason::Drift, Found::Nothing) => Decision::Nothing,
            _ => Decision::Reconcile(reason),
        }
    }

    /// Records how a reconcile for `reason` ended, after `took`, and returns what
    /// happens next: the reconcile's own action, or the error policy's.
    pub(super) fn finished(
        &mut self,
        reason: Reason,
        result: Result<Action, &ReconcileError>,
        took: Duration,
        now: Instant,
    ) -> Action {
        self.settle = DEBOUNCE.max(took.min(MAX_SETTLE));
        self.last_end = Some(now);
        if reason.requires_full() {
            self.quiet_resyncs = 0;
        }
        let action = match result {
            Ok(action) => {
                self.backoff.reset();
                action
            }
            Err(error) => self.error_policy(error),
        };
        self.retry_at = match action {
            Action::Requeue(delay) => Some(now + delay),
            Action::AwaitChange => None,
        };
        action
    }

    /// A transient failure is retried with backoff; a revision's own error waits
    /// for a change (a new revision, drift, the next tick).
    fn error_policy(&mut self, error: &ReconcileError) -> Action {
        if error.is_transient() {
            // backon adds up to one delay of jitter on top; the cap holds regardless.
            let delay = self.backoff.next().unwrap_or(self.timing.interval);
            return Action::Requeue(delay.min(self.timing.interval));
        }
        self.backoff.reset();
        Action::AwaitChange
    }

    /// When a change arriving at `now` runs: after [`DEBOUNCE`], and no sooner than
    /// the settle window after the last reconcile ended.
    fn settled(&self, now: Instant) -> Instant {
        let paced = self.last_end.map_or(now, |end| end + self.settle);
        (now + DEBOUNCE).max(paced)
    }

    fn merge(&mut self, reason: Reason, now: Instant) {
        self.pending = Some(match self.pending {
            Some(pending) => Pending {
                reason: pending.reason.max(reason),
                at: pending.at,
            },
            None => Pending {
                reason,
                at: self.settled(now),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use crate::engine::plan::PlanError;
    use crate::source::SourceError;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn scheduler(full_resync_every: u32) -> Scheduler {
        let timing = Timing {
            interval: INTERVAL,
            full_resync_every,
        };
        Scheduler::new(timing, Instant::now())
    }

    /// Sleeps (on the paused clock) until the scheduler's next wake and returns
    /// what is due then, with the time it took to get there.
    async fn next(s: &mut Scheduler) -> (Option<Reason>, Duration) {
        let before = Instant::now();
        tokio::time::sleep_until(s.next_wake()).await;
        (s.due(Instant::now()), before.elapsed())
    }

    fn unreachable() -> ReconcileError {
        ReconcileError::Source(SourceError::Unreachable {
            url: "https://git.example/x.git".into(),
            detail: "connection refused".into(),
        })
    }

    fn mass_prune() -> ReconcileError {
        ReconcileError::Engine(EngineError::Plan(PlanError::MassPrune {
            would_prune: 9,
            owned: 10,
        }))
    }

    fn ok(s: &mut Scheduler, reason: Reason) -> Action {
        s.finished(
            reason,
            Ok(Action::AwaitChange),
            Duration::ZERO,
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_reconcile_is_at_once_and_the_tick_every_interval() {
        let mut s = scheduler(10);
        assert_eq!(next(&mut s).await, (Some(Reason::Start), Duration::ZERO));
        assert_eq!(
            s.decide(Reason::Start, Found::Nothing),
            Decision::Reconcile(Reason::Start)
        );
        ok(&mut s, Reason::Start);
        for _ in 0..3 {
            let (due, _) = next(&mut s).await; // the tick, then its settle window
            assert_eq!(due, None);
            assert_eq!(next(&mut s).await, (Some(Reason::Resync), DEBOUNCE));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_by_drift_does_not_push_the_tick_out() {
        let started = Instant::now();
        let mut s = scheduler(10);
        next(&mut s).await;
        ok(&mut s, Reason::Start);
        tokio::time::sleep(Duration::from_secs(7)).await;
        s.on_event(Reason::Drift, Instant::now());
        assert_eq!(next(&mut s).await, (Some(Reason::Drift), DEBOUNCE));
        ok(&mut s, Reason::Drift);
        assert_eq!(s.next_wake(), started + INTERVAL);
        next(&mut s).await;
        let (due, _) = next(&mut s).await;
        assert_eq!(due, Some(Reason::Resync));
        assert_eq!(Instant::now(), started + INTERVAL + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn every_nth_quiet_resync_is_a_full_reconcile() {
        let mut s = scheduler(3);
        let mut decisions = Vec::new();
        for _ in 0..7 {
            let decision = s.decide(Reason::Resync, Found::Nothing);
            if let Decision::Reconcile(reason) = decision {
                ok(&mut s, reason);
            }
            decisions.push(decision);
        }
        let full = Decision::Reconcile(Reason::FullResync);
        let quiet = Decision::Quiet;
        assert_eq!(decisions, [quiet, quiet, full, quiet, quiet, full, quiet]);
        assert!(Reason::FullResync.requires_full());
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_full_reconcile_restarts_the_count() {
        let mut s = scheduler(3);
        assert_eq!(s.decide(Reason::Resync, Found::Nothing), Decision::Quiet);
        ok(&mut s, Reason::Drift);
        ok(&mut s, Reason::Changed);
        assert_eq!(s.decide(Reason::Resync, Found::Nothing), Decision::Quiet);
        ok(&mut s, Reason::Retry);
        assert_eq!(s.decide(Reason::Resync, Found::Nothing), Decision::Quiet);
        assert_eq!(s.decide(Reason::Resync, Found::Nothing), Decision::Quiet);
        assert_eq!(
            s.decide(Reason::Resync, Found::Nothing),
            Decision::Reconcile(Reason::FullResync)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_that_finds_changes_targets_them_and_is_not_quiet() {
        let mut s = scheduler(2);
        assert_eq!(
            s.decide(Reason::Resync, Found::Changes),
            Decision::Reconcile(Reason::Resync)
        );
        assert!(!Reason::Resync.requires_full());
        assert_eq!(s.decide(Reason::Resync, Found::Nothing), Decision::Quiet);
    }

    #[tokio::test(start_paused = true)]
    async fn change_signals_that_changed_nothing_run_nothing() {
        let mut s = scheduler(10);
        assert_eq!(s.decide(Reason::Changed, Found::Nothing), Decision::Nothing);
        assert_eq!(
            s.decide(Reason::Changed, Found::Changes),
            Decision::Reconcile(Reason::Changed)
        );
        assert_eq!(
            s.decide(Reason::Drift, Found::Changes),
            Decision::Reconcile(Reason::Drift)
        );
        assert_eq!(
            s.decide(Reason::Retry, Found::Nothing),
            Decision::Reconcile(Reason::Retry)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_reconcile_for_the_greatest_reason() {
        let mut s = scheduler(10);
        next(&mut s).await;
        s.finished(
            Reason::Start,
            Ok(Action::AwaitChange),
            Duration::from_secs(2),
            Instant::now(),
        );
        s.on_event(Reason::Drift, Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.on_event(Reason::Changed, Instant::now());
        s.on_event(Reason::Drift, Instant::now());
        let (due, waited) = next(&mut s).await;
        assert_eq!(due, Some(Reason::Changed));
        assert_eq!(
            waited,
            MAX_SETTLE - Duration::from_millis(100),
            "paced by 2 s"
        );
        assert_eq!(s.due(Instant::now()), None, "one reconcile for the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_to_a_quiet_source_waits_only_the_debounce() {
        let mut s = scheduler(10);
        next(&mut s).await;
        let slow = Duration::from_secs(2);
        s.finished(Reason::Start, Ok(Action::AwaitChange), slow, Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.on_event(Reason::Changed, Instant::now());
        let (due, waited) = next(&mut s).await;
        assert_eq!(due, Some(Reason::Changed));
        let paced = MAX_SETTLE - Duration::from_millis(100);
        assert_eq!(waited, paced, "part of a stream: paced by 2 s");
        s.finished(
            Reason::Changed,
            Ok(Action::AwaitChange),
            slow,
            Instant::now(),
        );
        tokio::time::sleep(MAX_SETTLE).await;
        s.on_event(Reason::Changed, Instant::now());
        assert_eq!(next(&mut s).await, (Some(Reason::Changed), DEBOUNCE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_with_growing_jittered_delays() {
        let mut s = scheduler(10);
        next(&mut s).await;
        let mut previous = Duration::ZERO;
        for attempt in 0..6 {
            let action = s.finished(
                Reason::Start,
                Err(&unreachable()),
                Duration::ZERO,
                Instant::now(),
            );
            let Action::Requeue(delay) = action else {
                panic!("{action:?}")
            };
            let base = FIRST_RETRY * 2u32.pow(attempt);
            assert!(
                delay >= base.min(INTERVAL) && delay <= INTERVAL,
                "{attempt}: {delay:?}"
            );
            assert!(
                delay < base * 2 || delay == INTERVAL,
                "{attempt}: {delay:?}"
            );
            assert!(delay >= previous.min(INTERVAL / 2), "grows: {delay:?}");
            previous = delay;
            assert_eq!(s.next_wake(), Instant::now() + delay);
        }
        let (due, _) = next(&mut s).await;
        assert_eq!(due, None, "the retry timer, then its settle");
        assert_eq!(next(&mut s).await.0, Some(Reason::Retry));
        assert_eq!(ok(&mut s, Reason::Retry), Action::AwaitChange);
        let action = s.finished(
            Reason::Retry,
            Err(&unreachable()),
            Duration::ZERO,
            Instant::now(),
        );
        assert!(
            matches!(action, Action::Requeue(d) if d < FIRST_RETRY * 2),
            "success resets the backoff: {action:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_revisions_own_error_waits_for_the_next_tick_without_retrying() {
        let started = Instant::now();
        let mut s = scheduler(10);
        next(&mut s).await;
        let action = s.finished(
            Reason::Start,
            Err(&mass_prune()),
            Duration::ZERO,
            Instant::now(),
        );
        assert_eq!(action, Action::AwaitChange);
        assert_eq!(
            s.next_wake(),
            started + INTERVAL,
            "no retry before the tick"
        );
        next(&mut s).await;
        assert_eq!(next(&mut s).await.0, Some(Reason::Resync));
        assert_eq!(
            s.decide(Reason::Resync, Found::Changes),
            Decision::Reconcile(Reason::Resync),
            "the failed revision is not the applied one: tried again at the tick"
        );
    }

    #[test]
    fn a_source_waits_until_each_dependency_is_synced_and_healthy() {
        let deps = ["infra".to_string(), "crds".to_string()];
        let mut board = Board::new();
        assert_eq!(waiting_for(&deps, &board), ["infra", "crds"], "not started");
        let ready = Readiness {
            synced: true,
            healthy: true,
        };
        board.insert("crds".into(), ready);
        board.insert(
            "infra".into(),
            Readiness {
                healthy: false,
                ..ready
            },
        );
        assert_eq!(waiting_for(&deps, &board), ["infra"], "not healthy");
        board.insert(
            "infra".into(),
            Readiness {
                synced: false,
                ..ready
            },
        );
        assert_eq!(waiting_for(&deps, &board), ["infra"], "a new revision");
        board.insert("infra".into(), ready);
        assert!(waiting_for(&deps, &board).is_empty());
        assert!(waiting_for(&[], &Board::new()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_reason_runs_once_released() {
        let mut s = scheduler(10);
        let (due, _) = next(&mut s).await;
        assert_eq!(due, Some(Reason::Start));
        s.hold(Reason::Start);
        s.hold(Reason::Drift);
        assert_eq!(s.next_wake(), Instant::now() + INTERVAL, "nothing pending");
        s.release(Instant::now());
        assert_eq!(next(&mut s).await, (Some(Reason::Start), DEBOUNCE));
        s.release(Instant::now());
        assert_eq!(s.next_wake(), Instant::now() + INTERVAL - DEBOUNCE, "once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspended_source_keeps_its_timers_but_only_reports() {
        let started = Instant::now();
        let mut s = scheduler(10);
        next(&mut s).await;
        ok(&mut s, Reason::Start);
        s.suspend();
        assert_eq!(s.mode(), Mode::Suspended);
        assert_eq!(s.duty(Duty::Converge), Duty::Suspended);
        assert_eq!(s.duty(Duty::StandBy), Duty::StandBy, "a follower stays one");
        s.on_event(Reason::Drift, Instant::now());
        assert_eq!(
            next(&mut s).await.0,
            Some(Reason::Drift),
            "drift still runs"
        );
        assert_eq!(
            s.decide(Reason::Drift, Found::Changes),
            Decision::Reconcile(Reason::Drift)
        );
        ok(&mut s, Reason::Drift);
        assert_eq!(s.next_wake(), started + INTERVAL, "no sleep, no new timer");
    }

    #[tokio::test(start_paused = true)]
    async fn resuming_runs_a_full_reconcile_at_once_and_writes_again() {
        let mut s = scheduler(10);
        next(&mut s).await;
        ok(&mut s, Reason::Start);
        s.resume(Instant::now());
        assert_eq!(
            s.next_wake(),
            Instant::now() + INTERVAL,
            "not suspended: nothing"
        );
        s.suspend();
        s.on_event(Reason::Changed, Instant::now());
        s.resume(Instant::now());
        assert_eq!(s.duty(Duty::Converge), Duty::Converge);
        let (due, waited) = next(&mut s).await;
        assert_eq!(
            due,
            Some(Reason::Start),
            "the change merges into a full one"
        );
        assert!(waited <= DEBOUNCE);
        assert!(Reason::Start.requires_full() && Reason::Requested.requires_full());
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_error_after_a_transient_one_cancels_the_retry() {
        let started = Instant::now();
        let mut s = scheduler(10);
        next(&mut s).await;
        let now = Instant::now();
        s.finished(Reason::Start, Err(&unreachable()), Duration::ZERO, now);
        assert!(s.next_wake() < now + FIRST_RETRY * 2, "a retry is due");
        s.on_event(Reason::Changed, now);
        assert_eq!(next(&mut s).await.0, Some(Reason::Changed));
        let action = s.finished(
            Reason::Changed,
            Err(&mass_prune()),
            Duration::ZERO,
            Instant::now(),
        );
        assert_eq!(action, Action::AwaitChange);
        assert_eq!(s.next_wake(), started + INTERVAL, "only the tick is left");
    }
}
