//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics:
//! one replica holds the Lease and writes; the others stand by with warm caches and
//! take over when it stops renewing.
//!
//! - **Expiry is measured on our own clock.** A replica notes *when it saw* the
//!   record change and counts `leaseDurationSeconds` from there, never from the
//!   timestamps in the record, so clock offsets between machines do not matter
//!   (client-go's `observedTime`). A follower wakes exactly when the Lease it saw
//!   would expire.
//! - **Fencing by time.** A leader may write until `renew_deadline` after it *sent*
//!   its last successful renewal. A follower cannot take over before
//!   `lease_duration` after it *saw* that renewal, later still. So a leader that
//!   cannot renew (the API server is unreachable, the process is starved) stops
//!   writing `lease_duration - renew_deadline` (5 s by default) before anyone may
//!   start. The source tasks drop an in-flight reconcile the moment the role
//!   turns ([`Leadership::demoted`]). A request already on the wire may still
//!   land: as with client-go, this needs clocks that run at about the same rate,
//!   not synchronized ones.
//! - **Release.** On SIGTERM, once the source tasks have stopped, the leader writes
//!   an empty holder with `leaseDurationSeconds: 1` (client-go's
//!   `ReleaseOnCancel`), so a follower takes over at its next try.
//!
//! [`Elector`] is the decision part, pure and tested with a paused clock;
//! [`LeaderElection`] does the requests. Lease requests go through a client of
//! their own, so a renewal never waits behind a reconcile's 64 requests in flight.

use crate::config::LeaseTiming;
use crate::daemon::lease::{Lease, LeaseKind, Leases, Record, micro_time};
use crate::daemon::metrics::Metrics;
use crate::daemon::shutdown::Shutdown;
use crate::daemon::status::{ReplicaRole, StatusBoard};
use crate::kube::{Error, WatchEvent, WatchStream};
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, info, warn};

/// Who holds a Lease, as this replica sees it. A source task turns it into its
/// [`Duty`]; `/status` into the replica's [`ReplicaRole`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holding {
    /// This replica holds it: it writes.
    Ours,
    /// It stands by; `holder` writes, as last seen (`None`: nobody, or unknown).
    Theirs { holder: Option<String> },
}

impl Holding {
    pub(super) fn is_ours(&self) -> bool {
        matches!(self, Holding::Ours)
    }
}

/// What a replica does with a source now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Converge it: write, prune, post Events (it holds the Lease, or there is no
    /// election).
    Converge,
    /// Stand by: reconcile report-only, so that the watches, the store and the memo
    /// are warm at takeover, and write nothing.
    StandBy,
    /// Suspended by a person (`converge suspend`): reconcile report-only, so that
    /// `/status` shows the drift, and write nothing, Events included.
    Suspended,
}

/// A source task's view of the election: whether this replica writes the source.
#[derive(Clone)]
pub(super) struct Leadership {
    role: watch::Receiver<Holding>,
    /// This replica's identity; `None` without an election.
    identity: Option<String>,
}

impl Leadership {
    /// No election: this replica always writes.
    pub(super) fn sole() -> Self {
        let (_, role) = watch::channel(Holding::Ours);
        Leadership {
            role,
            identity: None,
        }
    }

    pub(super) fn new(role: watch::Receiver<Holding>, identity: &str) -> Self {
        Leadership {
            role,
            identity: Some(identity.to_owned()),
        }
    }

    /// The duty of the moment.
    pub(super) fn duty(&self) -> Duty {
        match *self.role.borrow() {
            Holding::Ours => Duty::Converge,
            Holding::Theirs { .. } => Duty::StandBy,
        }
    }

    /// Who writes the source, as this replica knows it; `None` without an election.
    pub(super) fn owner(&self) -> Option<String> {
        let identity = self.identity.as_ref()?;
        match &*self.role.borrow() {
            Holding::Ours => Some(identity.clone()),
            Holding::Theirs { holder } => holder.clone(),
        }
    }

    /// Waits until the role changes and returns the new duty. Never returns
    /// without an election.
    pub(super) async fn changed(&mut self) -> Duty {
        if self.role.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.duty()
    }

    /// Resolves once this replica must stop writing. Never resolves without an
    /// election.
    pub(super) async fn demoted(&mut self) {
        if self.role.wait_for(|role| !role.is_ours()).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What to do about the Lease next, as [`Elector::next`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// There is no Lease: create it, holding it.
    Create(Record),
    /// Write this record over the Lease seen: acquire it, or renew it.
    Write(Record),
    /// Another replica holds it until `expires` (by our clock).
    Wait { holder: String, expires: Instant },
}

/// The Lease as last seen, and when it was seen to change.
#[derive(Debug, Clone)]
struct Observed {
    lease: Lease,
    at: Instant,
}

/// client-go's `tryAcquireOrRenew` decisions for one Lease, without the requests.
#[derive(Debug)]
pub(super) struct Elector {
    identity: String,
    timing: LeaseTiming,
    observed: Option<Observed>,
}

impl Elector {
    pub(super) fn new(identity: &str, timing: LeaseTiming) -> Self {
        Elector {
            identity: identity.to_owned(),
            timing,
            observed: None,
        }
    }

    /// Takes in a read of the Lease (`None`: there is none). The time it was seen
    /// changes only when the record did: a holder that stopped renewing looks the
    /// same on every read, and its Lease runs out.
    pub(super) fn observe(&mut self, lease: Option<Lease>, now: Instant) {
        self.observed = lease.map(|lease| {
            let at = match &self.observed {
                Some(seen) if seen.lease.record == lease.record => seen.at,
                _ => now,
            };
            Observed { lease, at }
        });
    }

    /// Takes in the Lease as this replica just wrote it.
    pub(super) fn wrote(&mut self, lease: Lease, now: Instant) {
        self.observed = Some(Observed { lease, at: now });
    }

    /// The Lease as last seen.
    pub(super) fn lease(&self) -> Option<&Lease> {
        self.observed.as_ref().map(|o| &o.lease)
    }

    /// The holder as last seen.
    pub(super) fn holder(&self) -> Option<&str> {
        self.lease()?.record.holder.as_deref()
    }

    /// Another replica that holds the Lease at `now`, as last seen.
    pub(super) fn other_holder(&self, now: Instant) -> Option<&str> {
        let holder = self.holder()?;
        let valid = self.expires().is_some_and(|expires| expires > now);
        (holder != self.identity && valid).then_some(holder)
    }

    /// Whether this replica holds the Lease, as last seen (expired or not).
    pub(super) fn is_holder(&self) -> bool {
        self.lease()
            .is_some_and(|lease| lease.record.held_by(&self.identity))
    }

    /// When the Lease as last seen runs out, by our clock.
    pub(super) fn expires(&self) -> Option<Instant> {
        let seen = self.observed.as_ref()?;
        Some(seen.at + seen.lease.record.duration)
    }

    /// client-go's fast path: the holder renews over what it wrote last, without
    /// reading first, while its Lease still holds.
    pub(super) fn renewal(&self, now: Instant, wall: SystemTime) -> Option<Record> {
        let valid = self.expires().is_some_and(|expires| expires > now);
        (self.is_holder() && valid).then(|| self.claim(wall))
    }

    /// What to do now about the Lease last seen.
    pub(super) fn next(&self, now: Instant, wall: SystemTime) -> Next {
        let Some(seen) = &self.observed else {
            return Next::Create(self.claim(wall));
        };
        let expires = seen.at + seen.lease.record.duration;
        match &seen.lease.record.holder {
            Some(holder) if *holder != self.identity && expires > now => Next::Wait {
                holder: holder.clone(),
                expires,
            },
            _ => Next::Write(self.claim(wall)),
        }
    }

    /// The record that holds the Lease for this replica from `wall` on: a renewal
    /// keeps the acquire time and transitions, a takeover counts one more.
    fn claim(&self, wall: SystemTime) -> Record {
        let now = micro_time(wall);
        let mut record = Record {
            holder: Some(self.identity.clone()),
            duration: self.timing.lease_duration,
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            transitions: 0,
        };
        if let Some(seen) = &self.observed {
            let old = &seen.lease.record;
            if old.held_by(&self.identity) {
                record.acquire_time.clone_from(&old.acquire_time);
                record.transitions = old.transitions;
            } else {
                record.transitions = old.transitions.saturating_add(1);
            }
        }
        record
    }

    /// The record that gives the Lease up, if this replica holds it: no holder,
    /// one second (client-go's `release`).
    pub(super) fn release(&self, wall: SystemTime) -> Option<Record> {
        let old = &self.lease()?.record;
        old.held_by(&self.identity).then(|| {
            let now = micro_time(wall);
            Record {
                holder: None,
                duration: std::time::Duration::from_secs(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                transitions: old.transitions,
            }
        })
    }
}

/// How one try at a Lease went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attempt {
    /// This replica holds it (acquired or renewed).
    Won,
    /// Another holds it until `expires`.
    Held { holder: String, expires: Instant },
}

/// Until when a leader may write: `renew_deadline` after it sent its last successful
/// renewal. Pure, so the fence is tested with a paused clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Fence {
    until: Option<Instant>,
}

impl Fence {
    /// A renewal sent at `sent` succeeded.
    pub(super) fn renewed(&mut self, sent: Instant, timing: &LeaseTiming) {
        self.until = Some(sent + timing.renew_deadline);
    }

    /// This replica stopped holding the Lease.
    pub(super) fn drop_term(&mut self) {
        self.until = None;
    }

    /// Whether this replica may write at `now`.
    pub(super) fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// The end of the term, while there is one.
    pub(super) fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// Tries `elector`'s Lease `name` once: the fast-path renewal, else read, then
/// create, write or wait, as client-go's `tryAcquireOrRenew`.
pub(super) async fn try_acquire_or_renew(
    leases: &Leases,
    name: &str,
    kind: LeaseKind,
    elector: &mut Elector,
) -> Result<Attempt, Error> {
    if let Some(record) = elector.renewal(Instant::now(), SystemTime::now())
        && let Some(lease) = elector.lease().cloned()
    {
        match leases.update(&lease, &record).await {
            Ok(written) => {
                elector.wrote(written, Instant::now());
                return Ok(Attempt::Won);
            }
            Err(e) => {
                debug!(lease = %leases.describe(name), error = %e, "renewing over the Lease last written failed; reading it")
            }
        }
    }
    let lease = leases.get(name).await?;
    elector.observe(lease, Instant::now());
    claim(leases, name, kind, elector).await
}

/// Acts on what `elector` last saw of Lease `name`: creates it, writes over it
/// (acquire or renew), or reports who holds it.
pub(super) async fn claim(
    leases: &Leases,
    name: &str,
    kind: LeaseKind,
    elector: &mut Elector,
) -> Result<Attempt, Error> {
    let written = match elector.next(Instant::now(), SystemTime::now()) {
        Next::Wait { holder, expires } => return Ok(Attempt::Held { holder, expires }),
        Next::Create(record) => leases.create(name, kind, &record).await?,
        Next::Write(record) => {
            let lease = elector
                .lease()
                .cloned()
                .ok_or_else(|| Error::InvalidRequest("no Lease seen to write over".into()))?;
            leases.update(&lease, &record).await?
        }
    };
    elector.wrote(written, Instant::now());
    Ok(Attempt::Won)
}

/// Gives up `elector`'s Lease if this replica holds it, within `bound`.
pub(super) async fn release(leases: &Leases, elector: &mut Elector, bound: std::time::Duration) {
    let Some(record) = elector.release(SystemTime::now()) else {
        return;
    };
    let Some(lease) = elector.lease().cloned() else {
        return;
    };
    let describe = leases.describe(&lease.name);
    match timeout(bound, leases.update(&lease, &record)).await {
        Ok(Ok(written)) => {
            elector.wrote(written, Instant::now());
            info!(lease = %describe, "released the Lease");
        }
        Ok(Err(e)) => {
            warn!(lease = %describe, error = %e, "cannot release the Lease; it expires on its own")
        }
        Err(_) => warn!(lease = %describe, "releasing the Lease timed out; it expires on its own"),
    }
}

/// The election of one leader for the whole daemon: a task that keeps trying or
/// renewing the Lease every `retry_period` and publishes this replica's [`Holding`].
pub(super) struct LeaderElection {
    leases: Leases,
    name: String,
    elector: Elector,
    /// A follower's watch of the Lease: a release wakes it at once.
    watch: Option<WatchStream>,
    timing: LeaseTiming,
    fence: Fence,
    role: watch::Sender<Holding>,
    status: StatusBoard,
    metrics: Metrics,
}

impl LeaderElection {
    /// An election for Lease `name`; the receiver follows this replica's role,
    /// which starts as a follower's.
    pub(super) fn new(
        leases: Leases,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
        status: StatusBoard,
        metrics: Metrics,
    ) -> (Self, watch::Receiver<Holding>) {
        let (role, receiver) = watch::channel(Holding::Theirs { holder: None });
        let election = LeaderElection {
            leases,
            name: name.to_owned(),
            elector: Elector::new(identity, timing),
            watch: None,
            timing,
            fence: Fence::default(),
            role,
            status,
            metrics,
        };
        (election, receiver)
    }

    /// Tries and renews until `stop`, then releases the Lease if it holds it. Stop
    /// it only once the source tasks have stopped writing.
    pub(super) async fn run(mut self, mut stop: Shutdown) {
        info!(lease = %self.leases.describe(&self.name), "trying to acquire the leader Lease");
        loop {
            let next = self.round().await;
            self.follow().await;
            tokio::select! {
                _ = stop.wait() => break,
                _ = sleep_until(next) => {}
                () = watch_lease(&mut self.watch, &mut self.elector) => {
                    debug!("the Lease was released; trying it now")
                }
            }
        }
        self.fence.drop_term();
        release(&self.leases, &mut self.elector, self.timing.renew_deadline).await;
        self.publish(Holding::Theirs { holder: None });
    }

    /// One try, bounded by the fence while leading; returns when to try next.
    async fn round(&mut self) -> Instant {
        let sent = Instant::now();
        let bound = self
            .fence
            .until()
            .unwrap_or(sent + self.timing.renew_deadline);
        let attempt = try_acquire_or_renew(
            &self.leases,
            &self.name,
            LeaseKind::Leader,
            &mut self.elector,
        );
        let result = timeout_at(bound, attempt).await;
        let now = Instant::now();
        match result {
            Ok(Ok(Attempt::Won)) => {
                self.fence.renewed(sent, &self.timing);
                self.publish(Holding::Ours);
                sent + self.timing.retry_period
            }
            Ok(Ok(Attempt::Held { holder, expires })) => {
                self.fence.drop_term();
                self.publish(Holding::Theirs {
                    holder: Some(holder),
                });
                expires.min(now + self.timing.retry_period)
            }
            failed => {
                let lease = self.leases.describe(&self.name);
                match failed {
                    Ok(Err(e)) => warn!(%lease, error = %e, "cannot acquire or renew the Lease"),
                    _ => warn!(%lease, "acquiring or renewing the Lease timed out"),
                }
                if !self.fence.holds(now) {
                    self.fence.drop_term();
                    self.publish(Holding::Theirs { holder: None });
                }
                let retry = now + self.timing.retry_period;
                self.fence.until().map_or(retry, |until| retry.min(until))
            }
        }
    }

    /// Keeps a watch of the Lease open while another replica holds it.
    async fn follow(&mut self) {
        let following = matches!(*self.role.borrow(), Holding::Theirs { holder: Some(_) });
        if !following {
            self.watch = None;
            return;
        }
        if self.watch.is_some() {
            return;
        }
        let Some(lease) = self.elector.lease() else {
            return;
        };
        let opened = timeout(self.timing.retry_period, self.leases.watch(lease)).await;
        match opened {
            Ok(Ok(stream)) => self.watch = Some(stream),
            Ok(Err(e)) => debug!(error = %e, "cannot watch the Lease; polling it"),
            Err(_) => debug!("watching the Lease timed out; polling it"),
        }
    }

    /// Tells the source tasks, `/status` and `/metrics`, on a change only.
    fn publish(&self, role: Holding) {
        let changed = self.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role.clone();
            changed
        });
        if !changed {
            return;
        }
        let lease = self.leases.describe(&self.name);
        match &role {
            Holding::Ours => info!(%lease, "became the leader: converging"),
            Holding::Theirs {
                holder: Some(holder),
            } => {
                info!(%lease, %holder, "following: reconciling report-only")
            }
            Holding::Theirs { holder: None } => {
                warn!(%lease, "not the leader: stopped writing")
            }
        }
        let leader = match &role {
            Holding::Ours => self.elector.holder().map(str::to_owned),
            Holding::Theirs { holder } => holder.clone(),
        };
        let replica_role = match role {
            Holding::Ours => ReplicaRole::Leader,
            Holding::Theirs { .. } => ReplicaRole::Follower,
        };
        self.status.set_leader(replica_role, leader);
        self.metrics
            .set_leader(&lease, replica_role == ReplicaRole::Leader);
    }
}

/// Feeds the watched Lease's renewals to `elector` (so its expiry counts from
/// when the renewal happened, not from the next poll) and resolves when the Lease
/// is released or deleted. A watch that ends or fails is dropped (the next round
/// opens another) and never resolves: the round's own timer still runs.
async fn watch_lease(watch: &mut Option<WatchStream>, elector: &mut Elector) {
    while let Some(stream) = watch.as_mut() {
        match stream.next().await {
            Ok(Some(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                let lease = Lease::from_object(object);
                if lease.record.holder.is_none() {
                    return;
                }
                elector.observe(Some(lease), Instant::now());
            }
            Ok(Some(WatchEvent::Deleted(_))) => return,
            Ok(Some(WatchEvent::Bookmark(_))) => {}
            Ok(Some(WatchEvent::Error(_)) | None) | Err(_) => *watch = None,
        }
    }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const WALL: SystemTime = UNIX_EPOCH;

    fn timing() -> LeaseTiming {
        LeaseTiming::default()
    }

    fn held_by(holder: &str, seconds: u64, transitions: u32, rv: &str) -> Lease {
        let record = Record {
            holder: Some(holder.into()),
            duration: Duration::from_secs(seconds),
            acquire_time: Some("2024-01-01T00:00:00.000000Z".into()),
            renew_time: Some(format!("renewed at {rv}")),
            transitions,
        };
        Lease::fake("converge", record, rv)
    }

    #[tokio::test(start_paused = true)]
    async fn no_lease_is_created_holding_it() {
        let elector = Elector::new("a", timing());
        let Next::Create(record) = elector.next(Instant::now(), WALL) else {
            panic!("expected create")
        };
        assert_eq!(record.holder.as_deref(), Some("a"));
        assert_eq!(record.duration, Duration::from_secs(15));
        assert_eq!(record.transitions, 0);
        assert_eq!(record.acquire_time, record.renew_time);
        assert_eq!(
            record.acquire_time.as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_expires_a_lease_duration_after_it_was_seen_to_change() {
        let mut elector = Elector::new("b", timing());
        let start = Instant::now();
        elector.observe(Some(held_by("a", 15, 0, "1")), start);
        // Renewed at 10 s: the clock restarts from when b saw it.
        tokio::time::advance(Duration::from_secs(10)).await;
        elector.observe(Some(held_by("a", 15, 0, "2")), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        // Not renewed since: the same record read again does not restart the clock.
        elector.observe(Some(held_by("a", 15, 0, "2")), Instant::now());
        assert_eq!(
            elector.next(Instant::now(), WALL),
            Next::Wait {
                holder: "a".into(),
                expires: start + Duration::from_secs(25)
            }
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        let Next::Write(record) = elector.next(Instant::now(), WALL) else {
            panic!("an expired Lease is taken over")
        };
        assert_eq!(record.holder.as_deref(), Some("b"));
        assert_eq!(record.transitions, 1, "a takeover counts a transition");
        assert_eq!(
            record.acquire_time.as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once() {
        let mut elector = Elector::new("b", timing());
        let released = Lease::fake(
            "converge",
            Record {
                duration: Duration::from_secs(1),
                transitions: 4,
                ..Record::default()
            },
            "9",
        );
        elector.observe(Some(released), Instant::now());
        let Next::Write(record) = elector.next(Instant::now(), WALL) else {
            panic!("an empty holder is free")
        };
        assert_eq!(record.transitions, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_keeping_its_acquire_time_and_transitions() {
        let mut elector = Elector::new("a", timing());
        elector.wrote(held_by("a", 15, 2, "5"), Instant::now());
        assert!(elector.is_holder());
        let renewal = elector
            .renewal(Instant::now(), WALL + Duration::from_secs(60))
            .expect("the fast path while the Lease holds");
        assert_eq!(renewal.transitions, 2);
        assert_eq!(
            renewal.acquire_time.as_deref(),
            Some("2024-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            renewal.renew_time.as_deref(),
            Some("1970-01-01T00:01:00.000000Z")
        );
        // Past its own expiry the holder reads first (client-go's slow path).
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(elector.renewal(Instant::now(), WALL), None);
        let Next::Write(record) = elector.next(Instant::now(), WALL) else {
            panic!("its own Lease is renewed")
        };
        assert_eq!(record.transitions, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_never_renews_and_only_the_holder_releases() {
        let mut elector = Elector::new("b", timing());
        elector.observe(Some(held_by("a", 15, 0, "1")), Instant::now());
        assert_eq!(elector.renewal(Instant::now(), WALL), None);
        assert_eq!(elector.release(WALL), None);
        elector.wrote(held_by("b", 15, 1, "2"), Instant::now());
        let release = elector.release(WALL).expect("the holder releases");
        assert_eq!(release.holder, None);
        assert_eq!(release.duration, Duration::from_secs(1));
        assert_eq!(release.transitions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_a_renew_deadline_after_the_last_renewal_was_sent() {
        let timing = timing();
        let mut fence = Fence::default();
        assert!(!fence.holds(Instant::now()));
        let sent = Instant::now();
        fence.renewed(sent, &timing);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(fence.holds(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!fence.holds(Instant::now()));
        // Others may take over only a lease duration after they saw the renewal,
        // which is after it was sent: the leader has stopped 5 s before.
        assert!(
            fence.until().expect("a term") + Duration::from_secs(5) <= sent + timing.lease_duration
        );
    }
}
