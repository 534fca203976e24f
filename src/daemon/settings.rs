//! How one source is converged: its `[[source]]` table and the daemon's flags,
//! resolved once for every reconcile.

use crate::config::{ArtifactLimits, SourceConfig, SourceLocation as ConfigKind};
use crate::daemon::leader::Duty;
use crate::daemon::status::SourceKind;
use crate::engine::{Adoption, DriftRules, Tenancy};
use crate::health::HealthRules;
use crate::health::dependency::ObjectDependency;
use crate::kube::Impersonation;
use crate::manifest::Limits;
use crate::render::RenderSettings;
use crate::source::{Source, SourceError};
use std::path::Path;
use std::time::Duration;

/// How one source is converged (from its `[[source]]` table and global flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub namespace: String,
    pub prune: bool,
    pub allow_mass_prune: bool,
    /// Create the namespace when it does not exist.
    pub create_namespace: bool,
    /// Whether objects other sources own may be taken over.
    pub adoption: Adoption,
    /// The namespaces and scopes the source may write.
    pub tenancy: Tenancy,
    /// The ServiceAccount the source acts as, if any.
    pub acting_as: Option<Impersonation>,
    /// Write (heal) or only report drift.
    pub self_heal: bool,
    /// What counts as drift, and what converge may do about it.
    pub drift: DriftRules,
    /// How its root is rendered (a kustomization, a chart), and its variables.
    pub render: RenderSettings,
    /// The largest and deepest manifest file read.
    pub limits: Limits,
    /// How long each wave and hook may take to become healthy.
    pub wave_timeout: Duration,
    /// Whether this replica converges the source now or stands by (leader election).
    pub duty: Duty,
    /// The `[[clusters]]` entry it writes to; `None`: the home cluster.
    pub cluster: Option<String>,
    /// Its `[[source.health]]` rules, then the global `[[health]]` ones.
    pub health: HealthRules,
}

impl Settings {
    /// Whether this run writes: the source heals, and this replica holds its Lease.
    pub(crate) fn writes(&self) -> bool {
        self.self_heal && self.duty == Duty::Converge
    }
}

/// One source as the daemon runs it.
pub struct SourceSpec {
    pub settings: Settings,
    pub source: Source,
    pub kind: SourceKind,
    /// Where it comes from, for people: a directory or a Git URL (no credentials).
    pub location: String,
    /// Resync interval (and Git poll interval).
    pub interval: Duration,
    /// One quiet resync in this many is a full reconcile.
    pub full_resync_every: u32,
    /// How often the owned kinds are re-listed to check the watch cache.
    pub relist_every: Duration,
    pub webhook_secret: Option<Vec<u8>>,
    /// Sources that must be synced and healthy before this one reconciles.
    pub depends_on: Vec<String>,
    /// Objects that must be ready before this one reconciles.
    pub depends_on_objects: Vec<ObjectDependency>,
    /// The `[[clusters]]` entry it writes to; `None`: the home cluster.
    pub cluster: Option<String>,
    /// The `[[source]]` table it was made from: a configuration reload restarts
    /// the source only when this (or `[limits]`) changed.
    pub config: SourceConfig,
}

impl SourceSpec {
    /// The daemon's view of every `[[source]]` of `config`.
    pub fn all(config: &crate::config::Config) -> Result<Vec<Self>, SourceError> {
        config
            .sources
            .iter()
            .map(|source| {
                SourceSpec::from_config(
                    source,
                    &config.state_dir,
                    config.limits,
                    &config.artifact_limits,
                )
            })
            .collect()
    }

    /// The daemon's view of one `[[source]]` table. Git checkouts go under `state_dir`;
    /// manifest files are read within `limits` and OCI artifacts within
    /// `artifact_limits` (`[limits]`).
    pub fn from_config(
        config: &SourceConfig,
        state_dir: &Path,
        limits: Limits,
        artifact_limits: &ArtifactLimits,
    ) -> Result<Self, SourceError> {
        let source = Source::with_limits(config, state_dir, artifact_limits)?;
        let kind = match config.kind {
            ConfigKind::Dir { .. } => SourceKind::Dir,
            ConfigKind::Git(_) => SourceKind::Git,
            ConfigKind::OciArtifact(_) | ConfigKind::OciChart(_) => SourceKind::Oci,
            ConfigKind::HelmChart(_) => SourceKind::Chart,
        };
        Ok(SourceSpec {
            settings: Settings {
                name: config.name.clone(),
                namespace: config.namespace.clone(),
                prune: config.prune,
                allow_mass_prune: config.allow_mass_prune,
                create_namespace: config.create_namespace,
                adoption: config.adopt,
                tenancy: config.tenancy.clone(),
                acting_as: config.acting_as.clone(),
                cluster: config.cluster.clone(),
                self_heal: config.self_heal,
                drift: config.drift.clone(),
                render: config.render.clone(),
                limits,
                wave_timeout: config.wave_timeout,
                duty: Duty::Converge,
                health: config.health.clone(),
            },
            kind,
            location: source.location(),
            interval: config.interval,
            full_resync_every: config.full_resync_every,
            relist_every: config.relist_every,
            webhook_secret: source.webhook_secret().map(<[u8]>::to_vec),
            depends_on: config.depends_on.clone(),
            depends_on_objects: config.depends_on_objects.clone(),
            cluster: config.cluster.clone(),
            config: config.clone(),
            source,
        })
    }
}
