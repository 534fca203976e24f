//! `converge run`: the daemon, until SIGTERM or SIGINT.

use super::Exit;
use super::args::RunArgs;
use super::reload;
use anyhow::{Context, Result};
use converge::config::{Config, KubeconfigFrom, LeaderElection, LeaderElectionConfig, Overrides};
use converge::daemon::{self, DaemonOptions, ElectionOptions, RemoteAccess, SourceSpec, shutdown};
use converge::engine::Engine;
use converge::kube::{Client, ClientOptions, ClusterConfig};
use converge::render::{Renderer, Tools};
use std::collections::BTreeMap;

/// Loads config.toml (flags laid over it by [`Config::with`]), connects, and
/// runs every source until a signal asks to stop.
pub(crate) async fn run_daemon(args: RunArgs) -> Result<Exit> {
    let overrides = Overrides {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        listen: args.listen,
        leader_election: if args.leader_elect {
            LeaderElection::Enable
        } else {
            LeaderElection::Keep
        },
    };
    let config = Config::load(&args.config)?.with(overrides.clone());
    let cluster = ClusterConfig::load(
        config.cluster.kubeconfig.as_deref(),
        config.cluster.context.as_deref(),
    )?;
    let client_options = ClientOptions {
        request_timeout: config.cluster.request_timeout,
        ..ClientOptions::default()
    };
    let election = if config.leader_election.enabled {
        let client = Client::with_options(cluster.clone(), client_options.clone())?;
        Some(election(&config.leader_election, client, args.id))
    } else {
        None
    };
    let mut clusters = BTreeMap::new();
    for entry in &config.clusters {
        let context = entry.context.clone();
        let access = match &entry.kubeconfig {
            KubeconfigFrom::File(path) => {
                let remote = ClusterConfig::load(Some(path), context.as_deref())
                    .with_context(|| format!("[[clusters]] {:?}", entry.name))?;
                RemoteAccess::Client(Client::with_options(remote, client_options.clone())?)
            }
            KubeconfigFrom::Secret { namespace, name } => RemoteAccess::Secret {
                namespace: namespace.clone(),
                name: name.clone(),
                context,
                options: client_options.clone(),
            },
        };
        clusters.insert(entry.name.clone(), access);
    }
    let engine = Engine::connect(Client::with_options(cluster, client_options)?)
        .await
        .context("cannot reach the cluster")?;
    let specs = SourceSpec::all(&config)?;
    let token = read_token(config.server.token_file.as_deref())?;
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
        listen: config.server.listen,
        dry_run: args.dry_run,
        renderer: Renderer::new(tools, config.render.limits)
            .with_artifacts(&config.state_dir, config.artifact_limits),
        election,
        clusters,
        token,
        notify: config.notify.clone(),
        reload: Some(reload::watch(config, overrides)?),
    };
    daemon::run(engine, specs, options, shutdown).await?;
    Ok(Exit::Ok)
}

/// The token of `[server] token_file`, if set; an empty file is refused (it would
/// let anyone in who sends `Bearer `).
fn read_token(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let token = super::control::read_token(path)?;
    if token.as_deref() == Some("") {
        anyhow::bail!("[server] token_file is empty");
    }
    Ok(token)
}

/// The election `[leader_election]` describes, with a client of its own; the
/// Leases go to the client's namespace unless the config names one.
fn election(config: &LeaderElectionConfig, client: Client, id: Option<String>) -> ElectionOptions {
    ElectionOptions {
        namespace: config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        client,
        name: config.name.clone(),
        identity: id.unwrap_or_else(default_identity),
        timing: config.timing,
        scope: config.scope,
    }
}

/// `hostname_pid`, as client-go's examples name a replica: unique on one machine,
/// and in a Pod (whose hostname is its name) unique in the cluster.
fn default_identity() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "converge".into());
    format!("{hostname}_{}", std::process::id())
}
