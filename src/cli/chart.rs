//! A chart from a Helm repository as the command line names it (`--helm-repo`,
//! `--chart`, `--version`): fetched by the daemon's own code
//! ([`converge::source::fetch_helm_chart`]: the same index reading, digest check,
//! size cap and cache) and rendered as a chart PATH is.

use super::args::SyncArgs;
use super::render::{self, Cluster, Reach, Root};
use anyhow::{Context, Result};
use converge::config::{ArtifactLimits, HelmAuth, HelmChartConfig};
use converge::manifest::Manifest;
use converge::source::Snapshot;
use std::path::Path;

/// The chart the flags name, as a chart source's settings.
fn config(args: &SyncArgs) -> Result<HelmChartConfig> {
    let flags = &args.chart;
    let (Some(repo), Some(chart)) = (&flags.helm_repo, &flags.chart) else {
        anyhow::bail!("--helm-repo needs --chart NAME");
    };
    let auth = match (&flags.helm_password_env, &flags.helm_token_env) {
        (Some(password), _) => HelmAuth::Basic {
            username_env: flags.helm_username_env.clone(),
            password_env: password.clone(),
        },
        (None, Some(token)) => HelmAuth::Bearer {
            token_env: token.clone(),
        },
        (None, None) => HelmAuth::Anonymous,
    };
    Ok(HelmChartConfig {
        repo: repo.trim_end_matches('/').to_string(),
        chart: chart.clone(),
        version: flags.chart_version.clone(),
        auth,
        ca_file: flags.helm_ca_file.clone(),
        webhook_secret_env: None,
    })
}

/// The chart's manifests (files named inside the chart, `podinfo/templates/…`),
/// the cluster if rendering connected to it, and the snapshot (its revision is
/// `<version>@<digest>`).
pub(super) async fn load(
    args: &SyncArgs,
    name: &str,
    scratch: &Path,
) -> Result<(Vec<Manifest>, Option<Cluster>, Snapshot)> {
    let config = config(args)?;
    let cache = args.chart.cache_dir.as_deref().unwrap_or(scratch);
    let shown = format!("chart {} from {}", config.chart, config.repo);
    let snapshot = converge::source::fetch_helm_chart(&config, cache, ArtifactLimits::default())
        .await
        .with_context(|| format!("cannot fetch {shown}"))?;
    let root = Root {
        root: snapshot.root.clone(),
        base: snapshot.base.clone(),
    };
    let (mut manifests, cluster) = render::load_roots(args, name, &[root], Reach::Cluster)
        .await
        .with_context(|| format!("cannot render {shown}"))?;
    for manifest in &mut manifests {
        if let Ok(relative) = manifest.origin.file.strip_prefix(&snapshot.base) {
            manifest.origin.file = relative.to_path_buf();
        }
    }
    Ok((manifests, cluster, snapshot))
}
