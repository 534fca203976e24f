//! The TOML as written: loose shapes serde can always fill (`deny_unknown_fields`
//! catches misspelt keys), checked into typed settings by [`super::check`].

use crate::health::HealthRuleSpec;
use crate::health::dependency::DependencySpec;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) state_dir: Option<String>,
    /// Every source's `relist_every` unless it sets its own.
    pub(super) relist_every: Option<toml::Value>,
    #[serde(default, rename = "source")]
    pub(super) sources: Vec<RawSource>,
    #[serde(default)]
    pub(super) render: RawRender,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) leader_election: RawLeaderElection,
    #[serde(default)]
    pub(super) tenancy: RawTenancy,
    #[serde(default)]
    pub(super) clusters: Vec<RawClusterEntry>,
    #[serde(default)]
    pub(super) health: Vec<HealthRuleSpec>,
    #[serde(default)]
    pub(super) notify: Vec<RawNotify>,
}

/// A `[[notify]]` table: a target told about what sources did.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) url: Option<String>,
    pub(super) api_url: Option<String>,
    pub(super) repository: Option<String>,
    pub(super) events: Option<Vec<String>>,
    pub(super) sources: Option<Vec<String>>,
    pub(super) secret_env: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) timeout: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClusterEntry {
    pub(super) name: Option<String>,
    pub(super) kubeconfig: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) context: Option<String>,
}

/// `[tenancy]`: defaults every source shares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenancy {
    /// Every source without a `service_account` acts as this ServiceAccount in its
    /// own namespace (Flux's lockdown).
    pub(super) default_service_account: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeaderElection {
    pub(super) enabled: Option<bool>,
    pub(super) shard: Option<bool>,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) lease_duration: Option<toml::Value>,
    pub(super) renew_deadline: Option<toml::Value>,
    pub(super) retry_period: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_file_mib: Option<u64>,
    pub(super) max_depth: Option<usize>,
    pub(super) max_artifact_mib: Option<u64>,
    pub(super) max_unpacked_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRender {
    pub(super) kustomize: Option<String>,
    pub(super) helm: Option<String>,
    pub(super) timeout: Option<String>,
}

/// `[source.decryption]`: SOPS files decrypted with age identities.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecryption {
    pub(super) provider: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) key_files: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHelm {
    pub(super) release: Option<String>,
    #[serde(default)]
    pub(super) values_files: Vec<String>,
    #[serde(default)]
    pub(super) values: toml::Table,
    #[serde(default)]
    pub(super) set: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) kubeconfig: Option<String>,
    pub(super) context: Option<String>,
    pub(super) request_timeout: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: Option<String>,
    pub(super) dir: Option<String>,
    pub(super) git: Option<String>,
    /// `chart = "NAME"` with `helm_repo`: a Helm repository's chart (check_source.rs).
    pub(super) helm_repo: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) tag: Option<String>,
    pub(super) commit: Option<String>,
    pub(super) path: Option<String>,
    /// `oci = "oci://…"`: a manifests artifact (check_oci.rs).
    pub(super) oci: Option<String>,
    /// `chart = "oci://…"` (check_oci.rs); other charts are Helm repositories'.
    pub(super) chart: Option<String>,
    /// A chart's version constraint.
    pub(super) version: Option<String>,
    /// An oci artifact's version constraint over its tags.
    pub(super) semver: Option<String>,
    /// An oci artifact's pinned manifest digest.
    pub(super) digest: Option<String>,
    /// Plain HTTP to an OCI registry beyond loopback.
    pub(super) insecure: Option<bool>,
    /// A value, not a string, so `interval = 30` gets a helpful message of its own.
    pub(super) interval: Option<toml::Value>,
    pub(super) full_resync_every: Option<i64>,
    pub(super) relist_every: Option<toml::Value>,
    pub(super) username_env: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) ssh_key_file: Option<String>,
    pub(super) known_hosts_file: Option<String>,
    pub(super) webhook_secret_env: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) prune: Option<bool>,
    pub(super) self_heal: Option<bool>,
    pub(super) allow_mass_prune: Option<bool>,
    pub(super) create_namespace: Option<bool>,
    pub(super) adopt: Option<bool>,
    pub(super) service_account: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) allowed_namespaces: Option<Vec<String>>,
    pub(super) allow_cluster_scoped: Option<bool>,
    pub(super) drift_managers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) ignore: Vec<RawIgnore>,
    pub(super) recreate: Option<bool>,
    pub(super) allow_remote_bases: Option<bool>,
    pub(super) vars: Option<toml::Table>,
    pub(super) vars_from: Option<Vec<String>>,
    pub(super) helm: Option<RawHelm>,
    pub(super) decryption: Option<RawDecryption>,
    pub(super) wave_timeout: Option<toml::Value>,
    pub(super) depends_on: Option<Vec<DependencySpec>>,
    #[serde(default)]
    pub(super) health: Vec<HealthRuleSpec>,
}

/// A `[[source.ignore]]` table: JSON pointers, and which objects they apply to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIgnore {
    pub(super) kind: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) paths: Vec<String>,
}

impl RawSource {
    /// The keys only chart sources have that are set, by name, for rejecting them
    /// on a dir or Git source.
    pub(super) fn chart_only_keys(&self) -> Vec<(&'static str, &str)> {
        let keys = [
            ("helm_repo", &self.helm_repo),
            ("version", &self.version),
            ("token_env", &self.token_env),
            ("ca_file", &self.ca_file),
        ];
        keys.into_iter()
            .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
            .collect()
    }

    /// The Git-only keys that are set, by name, for rejecting them on a dir source.
    pub(super) fn git_only_keys(&self) -> Vec<(&'static str, &str)> {
        let keys = [
            ("branch", &self.branch),
            ("tag", &self.tag),
            ("commit", &self.commit),
            ("path", &self.path),
            ("username_env", &self.username_env),
            ("password_env", &self.password_env),
            ("ssh_key_file", &self.ssh_key_file),
            ("known_hosts_file", &self.known_hosts_file),
            ("webhook_secret_env", &self.webhook_secret_env),
        ];
        keys.into_iter()
            .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
            .collect()
    }
}
