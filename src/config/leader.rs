//! `[leader_election]`: who writes when several replicas run.

use std::time::Duration;

use super::DEFAULT_LEASE_NAME;

/// `[leader_election]`: replicas elect who writes with `coordination.k8s.io/v1`
/// Leases, with client-go's semantics and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElectionConfig {
    /// Off unless `enabled = true` (or `converge run --leader-elect`).
    pub enabled: bool,
    /// One Lease for the daemon, or one per source shared out among replicas.
    pub scope: ElectionScope,
    /// Where the Leases live; `None`: the kubeconfig context's (or the service
    /// account's) namespace.
    pub namespace: Option<String>,
    /// The Lease's name (default "converge"); per-source Leases are `<name>-<source>`.
    pub name: String,
    pub timing: LeaseTiming,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            scope: ElectionScope::Daemon,
            namespace: None,
            name: DEFAULT_LEASE_NAME.into(),
            timing: LeaseTiming::default(),
        }
    }
}

/// What one Lease elects a writer for; `/status` shows it as `election`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ElectionScope {
    /// One leader writes every source; the others stand by (`shard = false`).
    #[serde(rename = "leader")]
    Daemon,
    /// Every source has its own Lease and replicas share them out (`shard = true`).
    #[serde(rename = "shard")]
    Source,
}

/// client-go's three leader-election durations. Invariant (checked when read):
/// `lease_duration > renew_deadline > 1.2 × retry_period > 0`, and the lease
/// duration is whole seconds (the Lease stores `leaseDurationSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease holds after its last renewal, as others measure it.
    pub lease_duration: Duration,
    /// How long a leader keeps writing without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a Lease is renewed or tried.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's (and kube-controller-manager's) 15 s, 10 s, 2 s.
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTiming {
    /// Why these durations cannot elect safely, if they cannot. client-go's rules:
    /// a leader must give up before others may take over, and must get more than
    /// one try at renewing before it gives up.
    pub fn problem(&self) -> Option<String> {
        let LeaseTiming {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if retry_period.is_zero() {
            return Some("retry_period must be more than zero".into());
        }
        if lease_duration.subsec_nanos() != 0 {
            return Some(format!(
                "lease_duration = {:?}: must be whole seconds (a Lease holds leaseDurationSeconds)",
                lease_duration
            ));
        }
        if lease_duration <= renew_deadline {
            return Some(format!(
                "lease_duration ({lease_duration:?}) must be longer than renew_deadline \
                 ({renew_deadline:?}): a leader must stop writing before others may take over"
            ));
        }
        if renew_deadline.as_secs_f64() <= 1.2 * retry_period.as_secs_f64() {
            return Some(format!(
                "renew_deadline ({renew_deadline:?}) must be longer than 1.2 × retry_period \
                 ({retry_period:?}): a leader needs more than one try to renew"
            ));
        }
        None
    }
}
