//! `converge run`: the daemon, until SIGTERM or SIGINT.

use super::Exit;
use super::args::RunArgs;
use anyhow::{Context, Result};
use converge::config::Config;
use converge::daemon::{self, DaemonOptions, SourceSpec, shutdown};
use converge::engine::Engine;
use converge::kube::{Client, ClientOptions, ClusterConfig};
use converge::render::{Renderer, Tools};

/// Loads config.toml (flags override its `[cluster]` and `[server]`), connects, and
/// runs every source until a signal asks to stop.
pub async fn run_daemon(args: RunArgs) -> Result<Exit> {
    let config = Config::load(&args.config)?;
    let kubeconfig = args
        .kubeconfig
        .or_else(|| config.cluster.kubeconfig.clone());
    let context = args.context.or_else(|| config.cluster.context.clone());
    let cluster = ClusterConfig::load(kubeconfig.as_deref(), context.as_deref())?;
    let client_options = ClientOptions {
        request_timeout: config.cluster.request_timeout,
        ..ClientOptions::default()
    };
    let engine = Engine::connect(Client::with_options(cluster, client_options)?)
        .await
        .context("cannot reach the cluster")?;
    let specs = config
        .sources
        .iter()
        .map(|source| SourceSpec::from_config(source, &config.state_dir, config.limits))
        .collect::<Result<Vec<_>, _>>()?;
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::signal().await;
        trigger.fire();
    });
    let tools = Tools::find(&config.render.tools).await;
    for tool in tools.status() {
        tracing::info!(%tool, "rendering tool");
    }
    let options = DaemonOptions {
        listen: args.listen.unwrap_or(config.server.listen),
        dry_run: args.dry_run,
        renderer: Renderer::new(tools, config.render.limits),
    };
    daemon::run(engine, specs, options, shutdown).await?;
    Ok(Exit::Ok)
}
