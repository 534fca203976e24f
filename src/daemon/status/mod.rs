//! The drift/sync status model: what the daemon knows about each source, shared between
//! the reconcile loop (which writes it) and the HTTP server (which serves it as
//! `/status` and `/readyz`); [`table::status_text`] renders it as the table
//! `converge status` prints.
//!
//! Pure: no I/O here. The board is a cheap-to-clone handle so the daemon and the
//! server can each hold one without threading references through tasks.

mod history;
mod listing;
mod table;

pub use history::SyncRecord;
pub(crate) use history::push as push_history;
pub use listing::{ObjectRow, SourceRow, object_rows, objects_table, source_rows, sources_table};
pub use table::status_text;

use crate::config::ElectionScope;
use crate::health::{Evidence, Health, State};
use crate::render::ToolStatus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;
use tokio::sync::watch;

/// Shared, clonable status of every configured source, keyed by source name.
///
/// A `BTreeMap` keeps `/status` and the table in a stable, alphabetical order, so
/// repeated `converge status` runs are easy to compare by eye.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    sources: Arc<RwLock<BTreeMap<String, SourceStatus>>>,
    tools: Arc<RwLock<Vec<ToolStatus>>>,
    /// This replica in the election, when there is one.
    replica: Arc<Mutex<Option<ReplicaStatus>>>,
    /// Bumped on every write, so the web page's event stream learns of a sync, a
    /// drift or a health change at once, without polling the board or the cluster.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            sources: Arc::default(),
            tools: Arc::default(),
            replica: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl StatusBoard {
    /// A receiver that sees the board change (the value is a write counter;
    /// only its changing means anything). Cheap: a watch channel keeps no queue.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells the subscribers that the board was written.
    fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records a source at start-up with result [`SyncResult::Pending`], so `/readyz`
    /// waits for it. Registering a known name again only updates its kind and
    /// location: the history of a source survives a configuration reload.
    pub fn register(&self, name: &str, kind: SourceKind, location: &str) {
        let mut sources = self.write();
        let entry = sources
            .entry(name.to_owned())
            .or_insert_with(|| SourceStatus::new(name, kind, location));
        entry.kind = kind;
        location.clone_into(&mut entry.location);
        drop(sources);
        self.touch();
    }

    /// Forgets a source removed from the configuration (a reload).
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
        self.touch();
    }

    /// One source's status, as `/status` would serve it.
    pub fn source(&self, name: &str) -> Option<SourceStatus> {
        self.read().get(name).cloned()
    }

    /// Applies `f` to the named source. Unknown names are ignored: a reconcile that
    /// finishes after its source was removed from the configuration must not
    /// resurrect it.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut sources = self.write();
        let Some(status) = sources.get_mut(name) else {
            return;
        };
        f(status);
        drop(sources);
        self.touch();
    }

    /// Records the rendering tools found at start-up (or that none was).
    pub fn set_tools(&self, tools: Vec<ToolStatus>) {
        *self.tools.write().unwrap_or_else(PoisonError::into_inner) = tools;
        self.touch();
    }

    /// The overall health of the named source's objects (`None` before its first
    /// successful reconcile).
    pub fn health_state(&self, name: &str) -> Option<State> {
        self.read().get(name).and_then(|s| s.health.state)
    }

    /// A snapshot to serve or print; the lock is held only for the copy.
    pub fn report(&self) -> StatusReport {
        let tools = self.tools.read().unwrap_or_else(PoisonError::into_inner);
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tools: tools.clone(),
            replica: self.replica_mut().clone(),
            sources: self.read().values().cloned().collect(),
        }
    }

    /// Records that this replica takes part in an election.
    pub fn set_replica(&self, replica: ReplicaStatus) {
        *self.replica_mut() = Some(replica);
        self.touch();
    }

    /// Records this replica's role in a one-leader election, and who leads.
    pub fn set_leader(&self, role: ReplicaRole, leader: Option<String>) {
        if let Some(replica) = self.replica_mut().as_mut() {
            replica.role = Some(role);
            replica.leader = leader;
        }
        self.touch();
    }

    fn replica_mut(&self) -> std::sync::MutexGuard<'_, Option<ReplicaStatus>> {
        self.replica.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether every registered source has finished at least one reconcile, with
    /// success or failure: a failed source is reported, not waited for, so one bad
    /// repository does not keep the whole daemon out of a Service forever.
    /// With no sources registered there is nothing to wait for.
    pub fn ready(&self) -> bool {
        self.pending().is_empty()
    }

    /// The names of the sources that have not finished a reconcile yet, for a
    /// `/readyz` answer that says what it is waiting for.
    pub fn pending(&self) -> Vec<String> {
        self.read()
            .values()
            .filter(|s| s.result == SyncResult::Pending)
            .map(|s| s.name.clone())
            .collect()
    }

    /// A panic in one writer must not take the status endpoints down with it: the
    /// data is plain values, so a poisoned lock still holds a usable map.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, SourceStatus>> {
        self.sources.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, SourceStatus>> {
        self.sources.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a source's manifests come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Dir,
    Git,
    /// An OCI registry: a manifests artifact or a chart.
    Oci,
    /// A chart from a Helm repository.
    Chart,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Dir => "dir",
            SourceKind::Git => "git",
            SourceKind::Oci => "oci",
            SourceKind::Chart => "chart",
        })
    }
}

/// The body of `GET /status`: what `converge status` fetches and prints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The daemon's version, so a client can tell which build answered.
    pub version: String,
    /// The kustomize and helm the daemon renders with, and their versions.
    #[serde(default)]
    pub tools: Vec<ToolStatus>,
    /// This replica in the leader election; `None` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
    pub sources: Vec<SourceStatus>,
}

/// A replica of a daemon that elects its writers with Leases.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// This replica's identity (`--id`), as the Leases name their holders.
    pub identity: String,
    pub election: ElectionScope,
    /// `namespace/name` of the leader Lease; in shard mode, of the per-source
    /// Leases' prefix (`namespace/converge-*`).
    pub lease: String,
    /// Leader mode: whether this replica writes. `None` in shard mode (see each
    /// source's `owner`).
    pub role: Option<ReplicaRole>,
    /// Leader mode: who writes, as this replica last saw the Lease.
    pub leader: Option<String>,
}

/// A replica's part in a one-leader election.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// It holds the Lease and writes.
    Leader,
    /// It reconciles report-only, ready to take over.
    Follower,
}

impl fmt::Display for ReplicaRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaRole::Leader => "leader",
            ReplicaRole::Follower => "follower",
        })
    }
}

/// Everything known about one source after its latest reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub name: String,
    pub kind: SourceKind,
    /// The repository URL or directory path, as configured.
    pub location: String,
    /// The last revision applied successfully (the "last good" one).
    pub revision: Option<String>,
    /// The revision of the last attempt; differs from `revision` after a failure.
    pub attempted_revision: Option<String>,
    #[serde(with = "rfc3339")]
    pub last_attempt: Option<SystemTime>,
    #[serde(with = "rfc3339")]
    pub last_success: Option<SystemTime>,
    pub result: SyncResult,
    pub error: Option<String>,
    /// Reconciles finished since the daemon started.
    pub reconciles: u64,
    /// Whether the daemon only reports drift for this source instead of healing it.
    pub dry_run: bool,
    /// With leader election: the replica that writes this source, as this replica
    /// knows it (`None`: nobody, or no election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub objects: Vec<ObjectStatus>,
    /// Whether the desired objects work (rolled out, available, …), from the watch.
    #[serde(default)]
    pub health: SourceHealth,
    /// The sources (`depends_on`) not yet synced and healthy, while this one waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// The `[[clusters]]` entry its objects go to (`None`: the home cluster), and
    /// whether that cluster answered at the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReach>,
    /// Set while a person has suspended the source (`converge suspend`): it
    /// reconciles report-only, so drift still shows, and writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspension>,
    /// What the last reconcile that finished wrote (or, report-only, would have).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncCounts>,
    /// The recent syncs, newest first (at most [`history::HISTORY_LEN`]; quiet
    /// repeats merged), for the web page.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub history: VecDeque<SyncRecord>,
}

/// Who suspended a source, when and why. Kept on the source's ApplySet parent
/// (annotation `converge.dev/suspended`), so it outlives the replica that took it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// Whoever `converge suspend` said it was (`user@host` by default).
    pub by: String,
    #[serde(with = "rfc3339")]
    pub at: Option<SystemTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether a reconcile wrote what it planned.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Written {
    /// It converged the cluster.
    Applied,
    /// It only compared (suspended, standing by, `self_heal = false`, `--dry-run`).
    ReportOnly,
}

/// The counts of one reconcile's plan: what `converge reconcile` prints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SyncCounts {
    pub written: Written,
    pub created: usize,
    pub configured: usize,
    pub pruned: usize,
    pub unchanged: usize,
}

/// A cluster a source writes to, and whether it could be reached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReach {
    pub name: String,
    pub reachable: bool,
}

impl SourceStatus {
    fn new(name: &str, kind: SourceKind, location: &str) -> Self {
        SourceStatus {
            name: name.to_owned(),
            kind,
            location: location.to_owned(),
            revision: None,
            attempted_revision: None,
            last_attempt: None,
            last_success: None,
            result: SyncResult::Pending,
            error: None,
            reconciles: 0,
            dry_run: false,
            owner: None,
            objects: Vec::new(),
            health: SourceHealth::default(),
            waiting_for: Vec::new(),
            cluster: None,
            suspended: None,
            last_sync: None,
            history: VecDeque::new(),
        }
    }

    /// How many of this source's objects are in `state`.
    pub fn count(&self, state: ObjectState) -> usize {
        self.objects.iter().filter(|o| o.state == state).count()
    }
}

/// The health of a source's desired objects, kept current from the watch between
/// reconciles (no request of its own).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceHealth {
    /// Failed if any object failed, ready if all are, else progressing; `None`
    /// before the first successful reconcile.
    pub state: Option<State>,
    pub ready: usize,
    pub progressing: usize,
    pub failed: usize,
    pub missing: usize,
    pub objects: Vec<ObjectHealth>,
}

/// One desired object's health, with evidence once it has failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectHealth {
    /// The object as people read it: `Deployment.apps/shop/web`.
    pub object: String,
    #[serde(flatten)]
    pub health: Health,
    /// Gathered once when the object turns failed; dropped when it recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

impl SourceHealth {
    /// Replaces the object list (kept sorted by object, so that one object's update
    /// from a watch event is a binary search, not a scan of thousands), keeping the
    /// evidence of objects still failed.
    pub fn set_objects(&mut self, mut objects: Vec<ObjectHealth>) {
        let mut evidence: BTreeMap<String, Evidence> = self
            .objects
            .drain(..)
            .filter_map(|o| Some((o.object, o.evidence?)))
            .collect();
        objects.sort_by(|a, b| a.object.cmp(&b.object));
        self.objects = objects;
        for o in &mut self.objects {
            if o.health.state == State::Failed && o.evidence.is_none() {
                o.evidence = evidence.remove(&o.object);
            }
        }
        self.summarize();
    }

    /// Sets one object's health (evidence is dropped unless it is still failed).
    pub fn set(&mut self, object: &str, health: Health) {
        let Ok(i) = self
            .objects
            .binary_search_by(|o| o.object.as_str().cmp(object))
        else {
            return;
        };
        let o = &mut self.objects[i];
        if health.state != State::Failed {
            o.evidence = None;
        }
        let before = std::mem::replace(&mut o.health, health).state;
        let after = o.health.state;
        *self.count_mut(before) -= 1;
        *self.count_mut(after) += 1;
        self.state = Some(self.overall());
    }

    /// Attaches evidence to a failed object (ignored if it recovered meanwhile).
    pub fn set_evidence(&mut self, object: &str, evidence: Evidence) {
        let found = self
            .objects
            .binary_search_by(|o| o.object.as_str().cmp(object));
        if let Some(o) = found.ok().map(|i| &mut self.objects[i])
            && o.health.state == State::Failed
        {
            o.evidence = Some(evidence);
        }
    }

    fn summarize(&mut self) {
        (self.ready, self.progressing, self.failed, self.missing) = (0, 0, 0, 0);
        for i in 0..self.objects.len() {
            *self.count_mut(self.objects[i].health.state) += 1;
        }
        self.state = Some(self.overall());
    }

    fn count_mut(&mut self, state: State) -> &mut usize {
        match state {
            State::Ready => &mut self.ready,
            State::Progressing => &mut self.progressing,
            State::Failed => &mut self.failed,
            State::Missing => &mut self.missing,
        }
    }

    /// Failed if any object failed, ready if all are, else progressing.
    fn overall(&self) -> State {
        if self.failed > 0 {
            State::Failed
        } else if self.ready == self.objects.len() {
            State::Ready
        } else {
            State::Progressing
        }
    }
}

/// The outcome of a source's latest reconcile.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncResult {
    /// Registered, no reconcile finished yet.
    Pending,
    Synced,
    /// Live objects differ from the desired state (and were not healed).
    Drifted,
    Failed,
    /// Its dependencies (`depends_on`) are not synced and healthy yet: nothing ran.
    /// Reported, not waited for by `/readyz`, as a failure is.
    Waiting,
}

impl fmt::Display for SyncResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncResult::Pending => "pending",
            SyncResult::Synced => "synced",
            SyncResult::Drifted => "drifted",
            SyncResult::Failed => "failed",
            SyncResult::Waiting => "waiting",
        })
    }
}

/// One object of a source and how it compares with the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The object as people read it: `Deployment.apps/shop/web`.
    pub object: String,
    pub state: ObjectState,
    /// Unified diff live → desired, when the object drifted.
    pub diff: Option<String>,
    /// Why the object failed or is missing, when there is no diff to show.
    pub reason: Option<String>,
    /// Where it is written (`file:line`; for a rendered source the file of the
    /// kustomization or chart, not the tool's output); none for a pruned object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The sync wave it is applied in (hooks are steps of a sync, not listed):
    /// the web page shows it where it is not the default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wave: i32,
}

fn is_zero(wave: &i32) -> bool {
    *wave == 0
}

/// How one object compares with the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectState {
    InSync,
    /// Owned by another source and declared the same here: left to its owner.
    Shared,
    Drifted,
    Missing,
    Pruned,
    Failed,
}

impl fmt::Display for ObjectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectState::InSync => "in-sync",
            ObjectState::Shared => "shared",
            ObjectState::Drifted => "drifted",
            ObjectState::Missing => "missing",
            ObjectState::Pruned => "pruned",
            ObjectState::Failed => "failed",
        })
    }
}

/// RFC 3339 timestamps in JSON, so `/status` is readable by people and by any
/// language's date parser (serde's default for `SystemTime` is an opaque struct).
mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de, ser};
    use std::fmt::Write;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: Serializer>(
        time: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let Some(time) = time else {
            return s.serialize_none();
        };
        // humantime panics before the epoch and fails after year 9999: report, don't panic.
        if *time < UNIX_EPOCH {
            return Err(ser::Error::custom("timestamp before 1970"));
        }
        let mut text = String::new();
        write!(text, "{}", humantime::format_rfc3339(*time))
            .map_err(|_| ser::Error::custom("timestamp after year 9999"))?;
        s.serialize_some(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(de::Error::custom))
            .transpose()
    }
}

/// Status boards and reports for tests of the model and of its rendering.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) fn board_with(names: &[&str]) -> StatusBoard {
        let board = StatusBoard::default();
        for name in names {
            board.register(name, SourceKind::Git, "https://example.com/repo.git");
        }
        board
    }

    pub(crate) fn object(name: &str, state: ObjectState) -> ObjectStatus {
        ObjectStatus {
            object: name.to_owned(),
            state,
            diff: None,
            reason: None,
            origin: None,
            wave: 0,
        }
    }

    pub(crate) fn sample_report() -> StatusReport {
        let board = board_with(&["apps"]);
        board.update("apps", |s| {
            s.revision = Some("0123456789abcdef0123456789abcdef01234567".into());
            s.attempted_revision = s.revision.clone();
            s.last_attempt = Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
            s.last_success = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
            s.result = SyncResult::Drifted;
            s.reconciles = 4;
            s.objects = vec![
                object("Namespace/shop", ObjectState::InSync),
                ObjectStatus {
                    diff: Some("-  replicas: 3\n+  replicas: 5".into()),
                    ..object("Deployment.apps/shop/web", ObjectState::Drifted)
                },
            ];
            s.health.set_objects(vec![
                healthy("Namespace/shop", Health::ready("active")),
                healthy(
                    "Deployment.apps/shop/web",
                    Health::ready("3 of 3 replicas available"),
                ),
            ]);
        });
        board.report()
    }

    pub(crate) fn healthy(object: &str, health: Health) -> ObjectHealth {
        ObjectHealth {
            object: object.to_owned(),
            health,
            evidence: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn ready_only_when_every_source_finished_a_reconcile() {
        let board = board_with(&["apps", "infra"]);
        assert!(!board.ready());
        assert_eq!(board.pending(), ["apps", "infra"]);
        board.update("apps", |s| s.result = SyncResult::Synced);
        assert!(!board.ready());
        assert_eq!(board.pending(), ["infra"]);
        // A failure counts as finished: the daemon is up and reporting it.
        board.update("infra", |s| s.result = SyncResult::Failed);
        assert!(board.ready());
    }

    #[test]
    fn writes_are_signalled_and_reads_are_not() {
        let board = board_with(&["apps"]);
        let mut changed = board.subscribe();
        changed.mark_unchanged();
        let _ = board.report();
        assert!(!changed.has_changed().expect("open"));
        board.update("apps", |s| s.reconciles += 1);
        assert!(changed.has_changed().expect("open"));
        changed.mark_unchanged();
        board.update("gone", |s| s.reconciles += 1);
        assert!(!changed.has_changed().expect("open"), "nothing was written");
    }

    #[test]
    fn empty_board_is_ready() {
        assert!(StatusBoard::default().ready());
    }

    #[test]
    fn update_of_unknown_name_is_a_no_op() {
        let board = board_with(&["apps"]);
        board.update("gone", |s| s.result = SyncResult::Synced);
        let report = board.report();
        assert_eq!(report.sources.len(), 1);
        assert_eq!(report.sources[0].result, SyncResult::Pending);
    }

    #[test]
    fn register_again_keeps_history() {
        let board = board_with(&["apps"]);
        board.update("apps", |s| s.reconciles = 3);
        board.register("apps", SourceKind::Dir, "/srv/apps");
        let source = &board.report().sources[0];
        assert_eq!(
            (source.kind, source.location.as_str(), source.reconciles),
            (SourceKind::Dir, "/srv/apps", 3)
        );
    }

    #[test]
    fn report_is_sorted_and_carries_the_version() {
        let board = board_with(&["zeta", "alpha"]);
        let report = board.report();
        let names: Vec<_> = report.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(report.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn counts_objects_by_state() {
        let mut source = SourceStatus::new("apps", SourceKind::Git, "x");
        source.objects = vec![
            object("a", ObjectState::InSync),
            object("b", ObjectState::InSync),
            object("c", ObjectState::Drifted),
        ];
        assert_eq!(source.count(ObjectState::InSync), 2);
        assert_eq!(source.count(ObjectState::Drifted), 1);
        assert_eq!(source.count(ObjectState::Failed), 0);
    }

    #[test]
    fn source_health_summarizes_and_keeps_evidence_while_failed() {
        let mut health = SourceHealth::default();
        assert_eq!(health.state, None);
        health.set_objects(vec![
            healthy("a", Health::ready("exists")),
            healthy("b", Health::progressing("0 of 1 replicas available")),
        ]);
        assert_eq!(health.state, Some(State::Progressing));
        assert_eq!((health.ready, health.progressing), (1, 1));
        let evidence = Evidence {
            notes: vec!["a note".into()],
            ..Evidence::default()
        };
        health.set_evidence("b", evidence.clone());
        assert_eq!(
            health.objects[1].evidence, None,
            "only failed objects get evidence"
        );
        health.set("b", Health::failed("rollout failed"));
        health.set_evidence("b", evidence.clone());
        assert_eq!(health.state, Some(State::Failed));
        health.set_objects(vec![
            healthy("a", Health::ready("exists")),
            healthy("b", Health::failed("rollout failed")),
        ]);
        assert_eq!(
            health.objects[1].evidence.as_ref(),
            Some(&evidence),
            "a reconcile keeps the evidence of a still-failed object"
        );
        health.set("b", Health::ready("1 of 1 replicas available"));
        assert_eq!(health.objects[1].evidence, None);
        assert_eq!(health.state, Some(State::Ready));
    }

    #[test]
    fn one_object_updates_keep_the_counts_a_recount_gives() {
        let mut health = SourceHealth::default();
        let names = ["d", "b", "a", "c"];
        health.set_objects(
            names
                .iter()
                .map(|n| healthy(n, Health::progressing("waiting")))
                .collect(),
        );
        let sorted: Vec<&str> = health.objects.iter().map(|o| o.object.as_str()).collect();
        assert_eq!(sorted, ["a", "b", "c", "d"]);
        health.set("c", Health::ready("exists"));
        health.set("a", Health::failed("rollout failed"));
        health.set("a", Health::missing());
        health.set("unknown", Health::ready("exists"));
        let incremental = health.clone();
        health.summarize();
        assert_eq!(incremental, health);
        assert_eq!(
            (
                health.ready,
                health.progressing,
                health.failed,
                health.missing
            ),
            (1, 2, 0, 1)
        );
        assert_eq!(health.state, Some(State::Progressing));
    }

    #[test]
    fn json_round_trips_with_rfc3339_timestamps() {
        let report = sample_report();
        let json = serde_json::to_value(&report).expect("serializes");
        let source = &json["sources"][0];
        assert_eq!(source["lastSuccess"], "2023-11-14T22:13:20Z");
        assert_eq!(source["lastAttempt"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(source["attemptedRevision"], source["revision"]);
        assert_eq!(source["result"], "drifted");
        assert_eq!(source["kind"], "git");
        assert_eq!(source["objects"][1]["state"], "drifted");
        assert_eq!(source["objects"][0]["state"], "in-sync");
        let back: StatusReport = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, report);
    }

    #[test]
    fn json_null_timestamps_round_trip() {
        let report = board_with(&["apps"]).report();
        let json = serde_json::to_string(&report).expect("serializes");
        assert!(json.contains(r#""lastSuccess":null"#));
        let back: StatusReport = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, report);
    }

    #[test]
    fn bad_timestamps_are_errors_not_panics() {
        let mut source = SourceStatus::new("apps", SourceKind::Dir, "/srv");
        source.last_success = UNIX_EPOCH.checked_sub(Duration::from_secs(1));
        assert!(serde_json::to_string(&source).is_err());
        let mut json =
            serde_json::to_value(SourceStatus::new("a", SourceKind::Dir, "/")).expect("serializes");
        json["lastSuccess"] = "yesterday".into();
        assert!(serde_json::from_value::<SourceStatus>(json).is_err());
    }
}
