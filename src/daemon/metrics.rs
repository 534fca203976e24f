//! Prometheus metrics for the daemon, served as OpenMetrics text on `/metrics`.
//!
//! Labels are bounded on purpose (source name, object kind, action, result, API
//! verb): never an object name, revision or error text, whose number of values
//! grows without limit and would swamp the Prometheus server.

use crate::health::State;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// How a reconcile ended: the `result` label of `converge_reconciles_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReconcileResult {
    Success,
    Failure,
    /// A quiet resync: nothing changed, so nothing ran.
    Skipped,
}

impl ReconcileResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Failure => "failure",
            ReconcileResult::Skipped => "skipped",
        }
    }
}

/// A write to the cluster: the `action` label of `converge_apply_actions_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApplyAction {
    Create,
    Configure,
    Recreate,
    Prune,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Create => "create",
            ApplyAction::Configure => "configure",
            ApplyAction::Recreate => "recreate",
            ApplyAction::Prune => "prune",
        }
    }
}

impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

impl EncodeLabelValue for ApplyAction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    source: String,
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    source: String,
    kind: String,
    action: ApplyAction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    source: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    source: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnershipLabels {
    source: String,
    claim: Foreign,
}

/// Objects a source declares that another source owns: `shared` (declared the
/// same, left to the owner) or `conflict` (declared differently: refused).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Foreign {
    Shared,
    Conflict,
}

impl EncodeLabelValue for Foreign {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let text = match self {
            Foreign::Shared => "shared",
            Foreign::Conflict => "conflict",
        };
        text.encode(encoder)
    }
}

/// What became of one notification: the `outcome` label of
/// `converge_notifications_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// The receiver answered 2xx.
    Sent,
    /// Refused, or not answered after every retry.
    Failed,
    /// Never sent: the target's queue was full (a slow or dead receiver).
    Dropped,
}

impl NotifyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Sent => "sent",
            NotifyOutcome::Failed => "failed",
            NotifyOutcome::Dropped => "dropped",
        }
    }
}

impl EncodeLabelValue for NotifyOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    target: String,
    outcome: NotifyOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    lease: String,
}

type Histograms = Family<SourceLabels, Histogram, fn() -> Histogram>;

/// Reconciles and fetches take from milliseconds (nothing changed) to minutes
/// (waiting for CRDs): 5 ms doubling to about 3 minutes covers both ends.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

fn source(source: &str) -> SourceLabels {
    SourceLabels {
        source: source.to_owned(),
    }
}

/// The daemon's metrics. Cloning is cheap and every clone updates the same series,
/// so the reconcile tasks and the HTTP server can each hold one.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconcile_duration: Histograms,
    reconciles: Family<ResultLabels, Counter>,
    drifted_objects: Family<SourceLabels, Gauge>,
    git_fetch_duration: Histograms,
    git_fetch_failures: Family<SourceLabels, Counter>,
    apply_actions: Family<ActionLabels, Counter>,
    last_success: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    api_requests: Family<VerbLabels, Counter>,
    leader: Family<LeaseLabels, Gauge>,
    health_objects: Family<HealthLabels, Gauge>,
    foreign_objects: Family<OwnershipLabels, Gauge>,
    cluster_reachable: Family<ClusterLabels, Gauge>,
    reconciled_objects: Family<SourceLabels, Counter>,
    notifications: Family<NotifyLabels, Counter>,
    render_duration: Histograms,
    relist_duration: Histograms,
    cache_repairs: Family<KindLabels, Counter>,
    alive_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `converge_` prefix, and
    /// `converge_build_info{version}`, so dashboards can tell builds apart.
    pub fn new() -> Self {
        let mut metrics = Metrics {
            registry: Arc::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            reconciles: Family::default(),
            drifted_objects: Family::default(),
            git_fetch_duration: Family::new_with_constructor(duration_histogram),
            git_fetch_failures: Family::default(),
            apply_actions: Family::default(),
            last_success: Family::default(),
            api_requests: Family::default(),
            leader: Family::default(),
            health_objects: Family::default(),
            foreign_objects: Family::default(),
            cluster_reachable: Family::default(),
            reconciled_objects: Family::default(),
            notifications: Family::default(),
            render_duration: Family::new_with_constructor(duration_histogram),
            relist_duration: Family::new_with_constructor(duration_histogram),
            cache_repairs: Family::default(),
            alive_tasks: Gauge::default(),
        };
        let mut registry = Registry::with_prefix("converge");
        metrics.register_into(&mut registry);
        metrics.registry = Arc::new(registry);
        metrics
    }

    fn register_into(&self, r: &mut Registry) {
        let seconds = Unit::Seconds;
        r.register_with_unit(
            "reconcile_duration",
            "How long one reconcile of one source took",
            seconds.clone(),
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconciles",
            "Reconciles finished, by source and result (success, failure, skipped)",
            self.reconciles.clone(),
        );
        r.register(
            "drifted_objects",
            "Objects whose live state differs from the desired state",
            self.drifted_objects.clone(),
        );
        r.register_with_unit(
            "git_fetch_duration",
            "How long one Git fetch took",
            seconds.clone(),
            self.git_fetch_duration.clone(),
        );
        r.register(
            "git_fetch_failures",
            "Git fetches that failed",
            self.git_fetch_failures.clone(),
        );
        r.register(
            "apply_actions",
            "Apply actions taken, by object kind and action",
            self.apply_actions.clone(),
        );
        r.register_with_unit(
            "last_success_timestamp",
            "Unix time of the last successful reconcile",
            seconds,
            self.last_success.clone(),
        );
        r.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, by verb",
            self.api_requests.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the Lease (namespace/name) and writes, else 0 \
             (client-go's leader_election_master_status)",
            self.leader.clone(),
        );
        r.register(
            "health_objects",
            "Desired objects of a source by health (ready, progressing, failed, missing)",
            self.health_objects.clone(),
        );
        r.register(
            "cluster_reachable",
            "Whether a [[clusters]] entry answered at its sources' last attempt (1) or not (0)",
            self.cluster_reachable.clone(),
        );
        r.register(
            "foreign_objects",
            "Desired objects another source owns: shared (declared the same, left to it) or \
             conflict (declared differently: the revision is refused)",
            self.foreign_objects.clone(),
        );
        r.register(
            "reconciled_objects",
            "Desired objects reconciles looked at: all of a source's in a full reconcile, \
             only what changed in a targeted one",
            self.reconciled_objects.clone(),
        );
        r.register_with_unit(
            "render_duration",
            "How long one kustomize build or helm template of a source took (its count: \
             the renders; an unchanged root is not rendered again)",
            Unit::Seconds,
            self.render_duration.clone(),
        );
        r.register_with_unit(
            "relist",
            "How long one relist of a source took: a metadata LIST of every kind it \
             owns, compared with the watch cache, and the repairs",
            Unit::Seconds,
            self.relist_duration.clone(),
        );
        r.register(
            "cache_repairs",
            "Objects a relist found changed, created or deleted behind the watch \
             cache's back, by source and kind (each one repaired and reconciled)",
            self.cache_repairs.clone(),
        );
        r.register(
            "notifications",
            "Notifications per [[notify]] target: sent, failed (refused, or not answered \
             after every retry) or dropped (its queue was full)",
            self.notifications.clone(),
        );
        r.register(
            "tokio_alive_tasks",
            "Tokio tasks alive when /metrics was read: a leak shows as a rising line",
            self.alive_tasks.clone(),
        );
        let version = vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())];
        r.register("build", "The converge build", Info::new(version));
    }

    /// Counts a finished reconcile and records how long it took.
    pub fn observe_reconcile(&self, source_name: &str, result: ReconcileResult, seconds: f64) {
        let labels = ResultLabels {
            source: source_name.to_owned(),
            result,
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&source(source_name))
            .observe(seconds);
    }

    /// Records one relist of a source.
    pub fn observe_relist(&self, source_name: &str, seconds: f64) {
        self.relist_duration
            .get_or_create(&source(source_name))
            .observe(seconds);
    }

    /// Counts one object a relist repaired in the watch cache.
    pub fn count_cache_repair(&self, source_name: &str, kind: &str) {
        let labels = KindLabels {
            source: source_name.to_owned(),
            kind: kind.to_owned(),
        };
        self.cache_repairs.get_or_create(&labels).inc();
    }

    /// Records one render of a source's root.
    pub fn observe_render(&self, source_name: &str, seconds: f64) {
        self.render_duration
            .get_or_create(&source(source_name))
            .observe(seconds);
    }

    /// Counts the desired objects one reconcile looked at.
    pub fn count_reconciled_objects(&self, source_name: &str, objects: u64) {
        self.reconciled_objects
            .get_or_create(&source(source_name))
            .inc_by(objects);
    }

    /// Sets how many objects of a source currently drift (0 once healed).
    pub fn set_drifted(&self, source_name: &str, objects: i64) {
        self.drifted_objects
            .get_or_create(&source(source_name))
            .set(objects);
    }

    /// Records one Git fetch. The failure counter is created on the first fetch
    /// either way, so `rate()` over it sees a 0 before the first failure.
    pub fn observe_git_fetch(&self, source_name: &str, seconds: f64, ok: bool) {
        let labels = source(source_name);
        self.git_fetch_duration
            .get_or_create(&labels)
            .observe(seconds);
        let failures = self.git_fetch_failures.get_or_create(&labels);
        if !ok {
            failures.inc();
        }
    }

    /// Adds `n` apply actions on objects of `kind`.
    pub fn count_action(&self, source_name: &str, kind: &str, action: ApplyAction, n: u64) {
        let labels = ActionLabels {
            source: source_name.to_owned(),
            kind: kind.to_owned(),
            action,
        };
        self.apply_actions.get_or_create(&labels).inc_by(n);
    }

    /// Records when a source last reconciled successfully, for "stale sync" alerts.
    pub fn set_last_success(&self, source_name: &str, unix_seconds: f64) {
        self.last_success
            .get_or_create(&source(source_name))
            .set(unix_seconds);
    }

    /// Counts one request to the API server (`get`, `list`, `watch`, `apply`,
    /// `dry-run`, `create`, `delete`, and `lease` for leader election's own), to
    /// see what a reconcile costs the cluster.
    pub fn count_api_request(&self, verb: &str) {
        let labels = VerbLabels {
            verb: verb.to_owned(),
        };
        self.api_requests.get_or_create(&labels).inc();
    }

    /// Records whether this replica holds `lease` (`namespace/name`).
    pub fn set_leader(&self, lease: &str, holds: bool) {
        let labels = LeaseLabels {
            lease: lease.to_owned(),
        };
        self.leader.get_or_create(&labels).set(i64::from(holds));
    }

    /// Sets how many of a source's desired objects are in each health state.
    pub fn set_health(&self, source_name: &str, counts: &[(State, usize)]) {
        for (state, n) in counts {
            let labels = HealthLabels {
                source: source_name.to_owned(),
                state: state.to_string(),
            };
            self.health_objects
                .get_or_create(&labels)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Whether the `[[clusters]]` entry `name` answered.
    pub fn set_cluster_reachable(&self, name: &str, reachable: bool) {
        let labels = ClusterLabels {
            cluster: name.to_owned(),
        };
        self.cluster_reachable
            .get_or_create(&labels)
            .set(i64::from(reachable));
    }

    /// How many of a source's objects another source owns, by claim.
    pub fn set_foreign(&self, source_name: &str, claim: Foreign, objects: usize) {
        let labels = OwnershipLabels {
            source: source_name.to_owned(),
            claim,
        };
        self.foreign_objects
            .get_or_create(&labels)
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Counts one notification to `target` by what became of it.
    pub fn count_notification(&self, target: &str, outcome: NotifyOutcome) {
        let labels = NotifyLabels {
            target: target.to_owned(),
            outcome,
        };
        self.notifications.get_or_create(&labels).inc();
    }

    /// Shows a target's series at zero from the start, so a rate of failures or
    /// drops can be alerted on before the first one.
    pub fn count_notification_targets(&self, target: &str) {
        for outcome in [
            NotifyOutcome::Sent,
            NotifyOutcome::Failed,
            NotifyOutcome::Dropped,
        ] {
            let labels = NotifyLabels {
                target: target.to_owned(),
                outcome,
            };
            let _ = self.notifications.get_or_create(&labels);
        }
    }

    /// The OpenMetrics text exposition, ending in `# EOF`.
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let alive = runtime.metrics().num_alive_tasks();
            self.alive_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String only fails if a metric's own encoder does, which
        // would be a bug in prometheus-client; serve what was written rather than panic.
        if encode(&mut text, &self.registry).is_err() {
            tracing::error!("encoding metrics failed; serving a partial exposition");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name{labels}` (or `name` without labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn every_family_is_exposed() {
        let metrics = Metrics::new();
        metrics.observe_reconcile("apps", ReconcileResult::Success, 0.5);
        metrics.set_drifted("apps", 0);
        metrics.observe_git_fetch("apps", 0.1, true);
        metrics.count_action("apps", "Deployment", ApplyAction::Create, 1);
        metrics.set_last_success("apps", 1_700_000_000.0);
        metrics.count_api_request("get");
        metrics.set_health("apps", &[(State::Ready, 3)]);
        metrics.observe_render("apps", 0.2);
        metrics.count_notification_targets("ops");
        metrics.count_notification("ops", NotifyOutcome::Dropped);
        metrics.observe_relist("apps", 0.3);
        metrics.count_cache_repair("apps", "ConfigMap");
        let text = metrics.encode();
        assert!(
            text.contains(r#"converge_notifications_total{target="ops",outcome="dropped"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"converge_notifications_total{target="ops",outcome="sent"} 0"#),
            "{text}"
        );
        for name in [
            "converge_reconcile_duration_seconds",
            "converge_reconciles_total",
            "converge_drifted_objects",
            "converge_git_fetch_duration_seconds",
            "converge_git_fetch_failures_total",
            "converge_apply_actions_total",
            "converge_last_success_timestamp_seconds",
            "converge_api_requests_total",
            "converge_health_objects",
            "converge_render_duration_seconds",
            "converge_relist_seconds",
            "converge_cache_repairs_total",
            "converge_tokio_alive_tasks",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing in\n{text}"
            );
        }
        let build = format!(
            r#"converge_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_and_gauges_move() {
        let metrics = Metrics::new();
        metrics.observe_reconcile("apps", ReconcileResult::Failure, 2.0);
        metrics.observe_reconcile("apps", ReconcileResult::Failure, 3.0);
        metrics.set_drifted("apps", 4);
        metrics.count_action("apps", "ConfigMap", ApplyAction::Configure, 3);
        metrics.count_action("apps", "ConfigMap", ApplyAction::Configure, 2);
        metrics.set_last_success("apps", 1_700_000_000.5);
        metrics.count_api_request("dry-run");
        metrics.set_health("apps", &[(State::Ready, 2), (State::Failed, 1)]);
        metrics.set_health("apps", &[(State::Ready, 3), (State::Failed, 0)]);
        let text = metrics.encode();
        let value = |series: &str| sample(&text, series);
        assert_eq!(
            value(r#"converge_health_objects{source="apps",state="ready"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(r#"converge_health_objects{source="apps",state="failed"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(r#"converge_reconciles_total{source="apps",result="failure"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(r#"converge_reconcile_duration_seconds_sum{source="apps"}"#),
            Some(5.0)
        );
        assert_eq!(
            value(r#"converge_reconcile_duration_seconds_count{source="apps"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(r#"converge_drifted_objects{source="apps"}"#),
            Some(4.0)
        );
        assert_eq!(
            value(
                r#"converge_apply_actions_total{source="apps",kind="ConfigMap",action="configure"}"#
            ),
            Some(5.0)
        );
        assert_eq!(
            value(r#"converge_last_success_timestamp_seconds{source="apps"}"#),
            Some(1_700_000_000.5)
        );
        assert_eq!(
            value(r#"converge_api_requests_total{verb="dry-run"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn git_fetch_failures_start_at_zero() {
        let metrics = Metrics::new();
        metrics.observe_git_fetch("apps", 0.2, true);
        let failures = r#"converge_git_fetch_failures_total{source="apps"}"#;
        assert_eq!(sample(&metrics.encode(), failures), Some(0.0));
        metrics.observe_git_fetch("apps", 0.2, false);
        let text = metrics.encode();
        assert_eq!(sample(&text, failures), Some(1.0));
        assert_eq!(
            sample(
                &text,
                r#"converge_git_fetch_duration_seconds_count{source="apps"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn clones_share_series() {
        let metrics = Metrics::new();
        metrics.clone().count_api_request("list");
        assert_eq!(
            sample(
                &metrics.encode(),
                r#"converge_api_requests_total{verb="list"}"#
            ),
            Some(1.0)
        );
    }
}
