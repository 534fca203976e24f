//! Sharding (`[leader_election] shard = true`): every source has its own Lease,
//! `<name>-<source>`, elected as in [`super::leader`], and the replicas share the
//! sources out with nothing but the API server.
//!
//! - **Replicas count each other** from their heartbeat Leases
//!   (`<name>.replica.<hash of the identity>`, renewed every round like the
//!   sources'): a heartbeat that stopped renewing for a lease duration is a replica
//!   gone.
//! - **A fair share.** With `S` sources and `R` live replicas a replica takes a
//!   free source while it holds fewer than `ceil(S / R)` and no other replica holds
//!   fewer, and an *expired* one (its holder died) while it holds fewer than
//!   `ceil(S / R) + 1`: that slack lets a dead replica's sources move as soon as
//!   their Leases run out, before its heartbeat has been counted out. A replica
//!   that holds two more than another gives sources back (released, as on SIGTERM)
//!   down to `floor(S / R)`, so the distribution settles at most one apart.
//! - **Spreading.** Replicas prefer sources by rendezvous hashing (a hash of
//!   identity and source), so replicas starting together try different sources and
//!   rarely collide; a collision is one 409.
//! - **One round** every `retry_period`: one LIST of the election's Leases, a PUT
//!   per Lease held, and whatever the plan takes or gives back. A watch of the same
//!   Leases records renewals as they happen (expiry counts from them) and wakes the
//!   round when a Lease is released or a replica leaves. Each source's Lease has its
//!   own fence, as the leader's has.
//!
//! [`View::plan`] is the pure part, tested with many replicas in a simulated world.

use crate::config::LeaseTiming;
use crate::daemon::leader::{Attempt, Elector, Fence, Holding, Leadership, claim, release};
use crate::daemon::lease::{Lease, LeaseKind, Leases};
use crate::daemon::metrics::Metrics;
use crate::daemon::shutdown::Shutdown;
use crate::kube::{Error, WatchEvent, WatchStream};
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, info, warn};

/// A heartbeat that ran out this long ago is deleted (by any replica): replicas
/// of a Deployment get new names, and their heartbeats would pile up.
const FORGET_REPLICA_AFTER: Duration = Duration::from_secs(300);

/// A source's Lease as a replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// No Lease yet, or released: a replica below its fair share takes it.
    Free,
    /// This replica's.
    Mine,
    /// Another live replica's.
    Held(String),
    /// Another replica's, run out: its holder is gone, anyone may take it.
    Expired,
}

/// What one replica sees at the start of a round.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub me: String,
    /// The live replicas, this one included.
    pub replicas: BTreeSet<String>,
    /// Every source's Lease, by source.
    pub claims: BTreeMap<String, Claim>,
}

/// What a replica does with the source Leases this round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Round {
    pub renew: Vec<String>,
    pub acquire: Vec<String>,
    pub release: Vec<String>,
}

impl View {
    /// `ceil(sources / live replicas)`.
    pub(super) fn fair_share(&self) -> usize {
        self.claims.len().div_ceil(self.replicas.len().max(1))
    }

    /// How many sources `replica` holds.
    fn load(&self, replica: &str) -> usize {
        self.claims
            .values()
            .filter(|claim| match claim {
                Claim::Mine => replica == self.me,
                Claim::Held(holder) => holder == replica,
                Claim::Free | Claim::Expired => false,
            })
            .count()
    }

    /// Renew what is held; give back down to `floor(S / R)` while another replica
    /// holds two fewer (never while a dead replica's sources are still to move);
    /// take free sources up to the fair share when no other replica holds fewer,
    /// and expired ones up to one more.
    pub(super) fn plan(&self) -> Round {
        let fair = self.fair_share();
        let floor = self.claims.len() / self.replicas.len().max(1);
        let mut mine = self.preferred(|claim| *claim == Claim::Mine);
        let least_other = self
            .replicas
            .iter()
            .filter(|replica| **replica != self.me)
            .map(|replica| self.load(replica))
            .min();
        let in_flux = self.claims.values().any(|claim| *claim == Claim::Expired);
        let release = match least_other {
            Some(least) if !in_flux && mine.len() > least + 1 => {
                let keep = floor.max(least + 1).min(mine.len());
                mine.split_off(keep)
            }
            _ => Vec::new(),
        };
        let among_least = least_other.is_none_or(|least| mine.len() <= least);
        let mut acquire = Vec::new();
        if release.is_empty() {
            for source in self.preferred(|claim| matches!(claim, Claim::Free | Claim::Expired)) {
                let held = mine.len() + acquire.len();
                let take = match self.claims[&source] {
                    Claim::Expired => held < fair + 1,
                    _ => held < fair && among_least,
                };
                if take {
                    acquire.push(source);
                }
            }
        }
        Round {
            renew: mine,
            acquire,
            release,
        }
    }

    /// The sources whose claim matches, this replica's favourites first.
    fn preferred(&self, matches: impl Fn(&Claim) -> bool) -> Vec<String> {
        let mut sources: Vec<&String> = self
            .claims
            .iter()
            .filter(|(_, claim)| matches(claim))
            .map(|(source, _)| source)
            .collect();
        sources.sort_by_key(|source| std::cmp::Reverse(score(&self.me, source)));
        sources.into_iter().cloned().collect()
    }
}

/// Rendezvous hashing: how much `replica` prefers `source`. FNV-1a, so every
/// build of converge agrees.
fn score(replica: &str, source: &str) -> u64 {
    fnv1a(&[replica.as_bytes(), b"\0", source.as_bytes()])
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The heartbeat Lease of `identity`: a DNS subdomain whatever the identity, and
/// never a source's Lease (`<name>-<source>` has no dot).
pub(super) fn heartbeat_name(name: &str, identity: &str) -> String {
    format!("{name}.replica.{:016x}", fnv1a(&[identity.as_bytes()]))
}

/// One source's Lease, its fence, and the role its task follows.
struct Slot {
    lease: String,
    elector: Elector,
    fence: Fence,
    role: watch::Sender<Holding>,
}

/// The shard election task of one replica.
pub(super) struct Shard {
    leases: Leases,
    identity: String,
    timing: LeaseTiming,
    heartbeat: (String, Elector),
    /// Other replicas' heartbeats, by Lease name.
    replicas: HashMap<String, Elector>,
    sources: BTreeMap<String, Slot>,
    watch: Option<WatchStream>,
    metrics: Metrics,
}

impl Shard {
    /// A shard election over `sources`; returns each source's view of it.
    pub(super) fn new(
        leases: Leases,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
        sources: &[String],
        metrics: Metrics,
    ) -> (Self, BTreeMap<String, Leadership>) {
        let mut slots = BTreeMap::new();
        let mut leadership = BTreeMap::new();
        for source in sources {
            let (role, receiver) = watch::channel(Holding::Theirs { holder: None });
            slots.insert(
                source.clone(),
                Slot {
                    lease: format!("{name}-{source}"),
                    elector: Elector::new(identity, timing),
                    fence: Fence::default(),
                    role,
                },
            );
            leadership.insert(source.clone(), Leadership::new(receiver, identity));
        }
        let shard = Shard {
            leases,
            identity: identity.to_owned(),
            timing,
            heartbeat: (
                heartbeat_name(name, identity),
                Elector::new(identity, timing),
            ),
            replicas: HashMap::new(),
            sources: slots,
            watch: None,
            metrics,
        };
        (shard, leadership)
    }

    /// Rounds until `stop`; then leaves: heartbeat first, so the others count one
    /// replica fewer when the sources come free.
    pub(super) async fn run(mut self, mut stop: Shutdown) {
        info!(replica = %self.heartbeat.0, sources = self.sources.len(), "sharding the sources");
        loop {
            let next = self.round().await;
            tokio::select! {
                _ = stop.wait() => break,
                _ = sleep_until(next) => {}
                () = self.watched() => debug!("a Lease was released or a replica left"),
            }
        }
        self.leave().await;
    }

    /// One round, bounded by the earliest fence; returns when the next is due.
    async fn round(&mut self) -> Instant {
        let sent = Instant::now();
        let bound = self
            .earliest_fence()
            .unwrap_or(sent + self.timing.renew_deadline);
        match timeout_at(bound, self.sync(sent)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "a shard round failed"),
            Err(_) => warn!("a shard round timed out"),
        }
        let now = Instant::now();
        self.publish(now);
        self.next_round(sent, now)
    }

    /// The next round: a retry period on, or earlier when a fence closes or a Lease
    /// another replica holds runs out.
    fn next_round(&self, sent: Instant, now: Instant) -> Instant {
        let expiries = self
            .sources
            .values()
            .filter(|slot| slot.elector.other_holder(now).is_some())
            .filter_map(|slot| slot.elector.expires())
            .chain(self.replicas.values().filter_map(Elector::expires))
            .filter(|expires| *expires > now);
        let fences = self.sources.values().filter_map(|slot| slot.fence.until());
        expiries
            .chain(fences)
            .fold(sent + self.timing.retry_period, Instant::min)
    }

    fn earliest_fence(&self) -> Option<Instant> {
        self.sources
            .values()
            .filter_map(|slot| slot.fence.until())
            .min()
    }

    /// Lists, beats, plans and writes.
    async fn sync(&mut self, sent: Instant) -> Result<(), Error> {
        let (listed, version) = self.leases.list().await?;
        let now = Instant::now();
        self.observe_all(listed, now);
        self.open_watch(&version).await;
        let (name, elector) = &mut self.heartbeat;
        if let Attempt::Held { holder, .. } =
            claim(&self.leases, name, LeaseKind::Replica, elector).await?
        {
            warn!(%holder, "another replica holds this replica's heartbeat: is --id unique?");
        }
        self.forget_gone_replicas(now).await;
        let plan = self.view(now).plan();
        for source in &plan.release {
            if let Some(slot) = self.sources.get_mut(source) {
                info!(%source, "giving the source back: above the fair share");
                slot.fence.drop_term();
                release(&self.leases, &mut slot.elector, self.timing.retry_period).await;
            }
        }
        let wanted: BTreeSet<&String> = plan.renew.iter().chain(&plan.acquire).collect();
        let leases = &self.leases;
        let timing = self.timing;
        let writes = self
            .sources
            .iter_mut()
            .filter(|(source, _)| wanted.contains(source))
            .map(|(source, slot)| async move {
                let kind = LeaseKind::Source;
                match claim(leases, &slot.lease, kind, &mut slot.elector).await {
                    Ok(Attempt::Won) => slot.fence.renewed(sent, &timing),
                    Ok(Attempt::Held { holder, .. }) => {
                        debug!(%source, %holder, "another replica was first")
                    }
                    Err(e) if e.is_conflict() || e.is_already_exists() => {
                        debug!(%source, "another replica was first")
                    }
                    Err(e) => warn!(%source, error = %e, "cannot take or renew the source's Lease"),
                }
            });
        join_all(writes).await;
        Ok(())
    }

    /// Takes in a listing of the election's Leases.
    fn observe_all(&mut self, listed: Vec<Lease>, now: Instant) {
        let mut by_name: HashMap<String, Lease> =
            listed.into_iter().map(|l| (l.name.clone(), l)).collect();
        for slot in self.sources.values_mut() {
            slot.elector.observe(by_name.remove(&slot.lease), now);
        }
        let (name, elector) = &mut self.heartbeat;
        elector.observe(by_name.remove(name.as_str()), now);
        self.replicas.retain(|name, _| by_name.contains_key(name));
        for (name, lease) in by_name {
            if lease.kind() == Some(LeaseKind::Replica) {
                let identity = self.identity.clone();
                let timing = self.timing;
                self.replicas
                    .entry(name)
                    .or_insert_with(|| Elector::new(&identity, timing))
                    .observe(Some(lease), now);
            }
        }
    }

    /// Routes one Lease seen by the watch; whether it calls for a round now (a
    /// Lease released or deleted).
    fn observe_one(&mut self, lease: Option<Lease>, name: &str, now: Instant) -> bool {
        let released = lease.as_ref().is_none_or(|l| l.record.holder.is_none());
        if let Some(slot) = self.sources.values_mut().find(|slot| slot.lease == name) {
            slot.elector.observe(lease, now);
            return released;
        }
        if let Some(elector) = self.replicas.get_mut(name) {
            elector.observe(lease, now);
            return released;
        }
        if let Some(lease) = lease.filter(|l| l.kind() == Some(LeaseKind::Replica))
            && *name != self.heartbeat.0
        {
            let mut elector = Elector::new(&self.identity, self.timing);
            elector.observe(Some(lease), now);
            self.replicas.insert(name.to_owned(), elector);
            // A replica joined: the fair share shrinks.
            return true;
        }
        false
    }

    /// Resolves when the watch reports a Lease released, deleted or a replica
    /// joining; renewals are only recorded. Never resolves without a watch.
    async fn watched(&mut self) {
        loop {
            let Some(stream) = self.watch.as_mut() else {
                return std::future::pending().await;
            };
            let event = stream.next().await;
            let now = Instant::now();
            let wake = match event {
                Ok(Some(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                    let lease = Lease::from_object(object);
                    let name = lease.name.clone();
                    self.observe_one(Some(lease), &name, now)
                }
                Ok(Some(WatchEvent::Deleted(object))) => {
                    let name = Lease::from_object(object).name;
                    self.observe_one(None, &name, now)
                }
                Ok(Some(WatchEvent::Bookmark(_))) => false,
                Ok(Some(WatchEvent::Error(_)) | None) | Err(_) => {
                    self.watch = None;
                    false
                }
            };
            if wake {
                return;
            }
        }
    }

    async fn open_watch(&mut self, version: &str) {
        if self.watch.is_some() {
            return;
        }
        match timeout(self.timing.retry_period, self.leases.watch_all(version)).await {
            Ok(Ok(stream)) => self.watch = Some(stream),
            Ok(Err(e)) => debug!(error = %e, "cannot watch the Leases; polling them"),
            Err(_) => debug!("watching the Leases timed out; polling them"),
        }
    }

    /// The round's view: live replicas and each source's claim.
    fn view(&self, now: Instant) -> View {
        let mut replicas: BTreeSet<String> = self
            .replicas
            .values()
            .filter_map(|elector| elector.other_holder(now))
            .map(str::to_owned)
            .collect();
        replicas.insert(self.identity.clone());
        let claims = self
            .sources
            .iter()
            .map(|(source, slot)| (source.clone(), self.claim_of(&slot.elector, now)))
            .collect();
        View {
            me: self.identity.clone(),
            replicas,
            claims,
        }
    }

    fn claim_of(&self, elector: &Elector, now: Instant) -> Claim {
        match elector.holder() {
            None => Claim::Free,
            Some(_) if elector.is_holder() => Claim::Mine,
            Some(holder) => match elector.other_holder(now) {
                Some(_) => Claim::Held(holder.to_owned()),
                None => Claim::Expired,
            },
        }
    }

    /// Deletes heartbeats that ran out long ago.
    async fn forget_gone_replicas(&mut self, now: Instant) {
        let gone: Vec<(String, Lease)> = self
            .replicas
            .iter()
            .filter(|(_, e)| e.expires().is_some_and(|x| x + FORGET_REPLICA_AFTER < now))
            .filter_map(|(name, e)| Some((name.clone(), e.lease()?.clone())))
            .collect();
        for (name, lease) in gone {
            self.replicas.remove(&name);
            if let Err(e) = self.leases.delete(&lease).await {
                debug!(lease = %name, error = %e, "cannot delete a gone replica's heartbeat");
            }
        }
    }

    /// Tells each source task its role, and `/status` and `/metrics`, on changes.
    fn publish(&self, now: Instant) {
        for (source, slot) in &self.sources {
            let role = if slot.fence.holds(now) {
                Holding::Ours
            } else {
                let holder = slot.elector.other_holder(now).map(str::to_owned);
                Holding::Theirs { holder }
            };
            let changed = slot.role.send_if_modified(|current| {
                let changed = *current != role;
                *current = role.clone();
                changed
            });
            if changed {
                match &role {
                    Holding::Ours => info!(%source, "converging the source: its Lease is ours"),
                    Holding::Theirs { holder } => {
                        info!(%source, holder = holder.as_deref().unwrap_or("nobody"), "standing by for the source")
                    }
                }
                let lease = self.leases.describe(&slot.lease);
                self.metrics.set_leader(&lease, role.is_ours());
            }
        }
    }

    /// Leaves the shard: the heartbeat goes first, then every source is released.
    async fn leave(&mut self) {
        let bound = self.timing.retry_period;
        if let Some(lease) = self
            .heartbeat
            .1
            .lease()
            .filter(|_| self.heartbeat.1.is_holder())
        {
            match timeout(bound, self.leases.delete(lease)).await {
                Ok(Ok(())) => info!(replica = %self.heartbeat.0, "left the shard"),
                _ => {
                    warn!(replica = %self.heartbeat.0, "cannot delete the heartbeat; it expires on its own")
                }
            }
        }
        let leases = &self.leases;
        let releases = self.sources.values_mut().map(|slot| {
            slot.fence.drop_term();
            release(leases, &mut slot.elector, bound)
        });
        join_all(releases).await;
        self.publish(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    /// Every source's holder (None: free) and whether its holder is dead.
    #[derive(Debug, Clone, Default)]
    struct World {
        holders: BTreeMap<String, Option<String>>,
        dead: BTreeSet<String>,
    }

    impl World {
        fn new(n: usize) -> Self {
            World {
                holders: sources(n).into_iter().map(|s| (s, None)).collect(),
                dead: BTreeSet::new(),
            }
        }

        fn view(&self, me: &str, replicas: &[&str]) -> View {
            let claims = self
                .holders
                .iter()
                .map(|(source, holder)| {
                    let claim = match holder {
                        None => Claim::Free,
                        Some(h) if h == me => Claim::Mine,
                        Some(h) if self.dead.contains(h) => Claim::Expired,
                        Some(h) => Claim::Held(h.clone()),
                    };
                    (source.clone(), claim)
                })
                .collect();
            View {
                me: me.to_owned(),
                replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
                claims,
            }
        }

        /// One round of `me`: releases, then acquisitions that are still possible
        /// (a Lease someone took first is a 409).
        fn round(&mut self, me: &str, replicas: &[&str]) -> Round {
            let view = self.view(me, replicas);
            let plan = view.plan();
            assert!(
                plan.renew.len() + plan.acquire.len() <= view.fair_share() + 1,
                "{me} would hold more than its share + 1: {plan:?}"
            );
            for source in &plan.release {
                self.holders.insert(source.clone(), None);
            }
            for source in &plan.acquire {
                let free = match &self.holders[source] {
                    None => true,
                    Some(holder) => self.dead.contains(holder),
                };
                if free {
                    self.holders.insert(source.clone(), Some(me.to_owned()));
                }
            }
            plan
        }

        /// Rounds of every replica until nothing changes; how many it took.
        fn settle(&mut self, replicas: &[&str], counted: &[&str]) -> usize {
            for rounds in 1..=20 {
                let before = self.holders.clone();
                for me in replicas {
                    self.round(me, counted);
                }
                if self.holders == before {
                    return rounds;
                }
            }
            panic!("never settled: {self:?}");
        }

        fn loads(&self, replicas: &[&str]) -> Vec<usize> {
            replicas
                .iter()
                .map(|r| {
                    self.holders
                        .values()
                        .filter(|h| h.as_deref() == Some(*r))
                        .count()
                })
                .collect()
        }
    }

    fn spread(loads: &[usize]) -> usize {
        loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0)
    }

    #[test]
    fn three_replicas_share_nine_sources_evenly() {
        let mut world = World::new(9);
        let all = ["a", "b", "c"];
        world.settle(&all, &all);
        assert_eq!(world.loads(&all), [3, 3, 3]);
    }

    #[test]
    fn a_late_replica_gets_its_share_back_from_the_others() {
        let mut world = World::new(9);
        // `a` starts alone and takes everything.
        world.settle(&["a"], &["a"]);
        assert_eq!(world.loads(&["a"]), [9]);
        world.settle(&["a", "b"], &["a", "b"]);
        assert!(spread(&world.loads(&["a", "b"])) <= 1);
        let all = ["a", "b", "c"];
        world.settle(&all, &all);
        assert_eq!(world.loads(&all), [3, 3, 3]);
        assert!(world.holders.values().all(Option::is_some));
    }

    #[test]
    fn a_dead_replicas_sources_move_at_once_and_settle_one_apart() {
        let mut world = World::new(9);
        let all = ["a", "b", "c"];
        world.settle(&all, &all);
        world.dead.insert("c".into());
        // Its Leases ran out before its heartbeat: still counted live, the slack
        // lets a and b take one each straight away.
        world.round("a", &all);
        world.round("b", &all);
        assert_eq!(world.loads(&["a", "b"]), [4, 4]);
        // Then its heartbeat runs out too: the rest moves.
        world.settle(&["a", "b"], &["a", "b"]);
        let loads = world.loads(&["a", "b"]);
        assert_eq!(loads.iter().sum::<usize>(), 9);
        assert!(spread(&loads) <= 1, "{loads:?}");
    }

    #[test]
    fn uneven_counts_settle_at_most_one_apart() {
        for (n, replicas) in [(10, 3), (7, 4), (3, 5), (1, 2), (0, 3), (20, 6)] {
            let names: Vec<String> = (0..replicas).map(|r| format!("r{r}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut world = World::new(n);
            world.settle(&names, &names);
            let loads = world.loads(&names);
            assert_eq!(loads.iter().sum::<usize>(), n, "{n} over {replicas}");
            assert!(spread(&loads) <= 1, "{n} over {replicas}: {loads:?}");
            // Replicas that join one by one end the same way.
            let mut world = World::new(n);
            for joined in 1..=names.len() {
                world.settle(&names[..joined], &names[..joined]);
            }
            let loads = world.loads(&names);
            assert_eq!(
                loads.iter().sum::<usize>(),
                n,
                "{n} over {replicas}, joining"
            );
            assert!(
                spread(&loads) <= 1,
                "{n} over {replicas}, joining: {loads:?}"
            );
        }
    }

    #[test]
    fn replicas_prefer_different_sources() {
        let world = World::new(9);
        let a = world.view("a", &["a", "b", "c"]).plan().acquire;
        let b = world.view("b", &["a", "b", "c"]).plan().acquire;
        assert_eq!(a.len(), 3);
        assert_ne!(a, b, "rendezvous hashing spreads first choices");
    }

    #[test]
    fn heartbeat_names_are_subdomains_apart_from_source_leases() {
        let name = heartbeat_name("converge", "Web_0 (node 7)");
        assert!(name.starts_with("converge.replica."), "{name}");
        assert_eq!(name.len(), "converge.replica.".len() + 16);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
        );
        assert_eq!(name, heartbeat_name("converge", "Web_0 (node 7)"));
    }
}
