//! Chart sources: a chart published in a Helm repository, fetched by
//! [`super::artifact::helm_repo`] and handed to the pipeline as the unpacked chart
//! directory, which renders exactly as a vendored chart does (`helm template` with
//! `[source.helm]`'s values, hooks and the cluster's kube version).

use std::path::Path;

use super::artifact::helm_repo::{HelmRepo, HelmRepoError, RepoSettings};
use super::{Snapshot, SourceError};
use crate::config::{ArtifactLimits, EnvLookup, HelmChartConfig};

/// A configured chart source; cheap to clone into a task.
#[derive(Debug, Clone)]
pub(crate) struct ChartSource {
    repo: HelmRepo,
    chart: String,
    version: Option<String>,
    webhook_secret: Option<Vec<u8>>,
}

impl ChartSource {
    /// Reads credentials and the webhook secret from `env`; the cache lives under
    /// `state_dir`.
    pub(crate) fn new(
        config: &HelmChartConfig,
        state_dir: &Path,
        limits: ArtifactLimits,
        env: EnvLookup,
    ) -> Result<ChartSource, SourceError> {
        let repo = HelmRepo::new(&RepoSettings::from(config), state_dir, limits, env)
            .map_err(SourceError::from)?;
        let webhook_secret = match &config.webhook_secret_env {
            Some(var) => Some(
                env(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| SourceError::MissingEnv {
                        key: "webhook_secret_env",
                        var: var.clone(),
                    })?
                    .into_bytes(),
            ),
            None => None,
        };
        Ok(ChartSource {
            repo,
            chart: config.chart.clone(),
            version: config.version.clone(),
            webhook_secret,
        })
    }

    /// `chart podinfo 6.14.x from https://…` (latest stable when no version is set).
    pub(crate) fn location(&self) -> String {
        let version = self.version.as_deref().unwrap_or("(latest stable)");
        format!("chart {} {version} from {}", self.chart, self.repo.url())
    }

    pub(crate) fn webhook_secret(&self) -> Option<&[u8]> {
        self.webhook_secret.as_deref()
    }

    /// The chart's current revision (`<version>@<digest>`) and its directory. The
    /// render may read only the unpacked archive.
    pub(crate) async fn snapshot(&self) -> Result<Snapshot, SourceError> {
        let fetched = self
            .repo
            .fetch_chart(&self.chart, self.version.as_deref())
            .await?;
        Ok(Snapshot {
            revision: fetched.revision(),
            root: fetched.dir,
            base: fetched.tree,
        })
    }
}

impl From<HelmRepoError> for SourceError {
    fn from(error: HelmRepoError) -> Self {
        SourceError::Artifact {
            transient: error.is_transient(),
            message: error.to_string(),
        }
    }
}
