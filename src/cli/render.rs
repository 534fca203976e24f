//! The PATHs of `apply` and `diff` → manifests: each PATH is its own root (a
//! kustomization, a chart or plain manifests). Plain PATHs are loaded as before,
//! without the cluster; a chart needs it for its capabilities, so the engine is
//! connected first then.

use super::args::SyncArgs;
use anyhow::Result;
use converge::config::DEFAULT_NAMESPACE;
use converge::engine::Engine;
use converge::kube::{Client, ClientOptions, ClusterConfig};
use converge::manifest::{self, Manifest, ManifestError};
use converge::render::{
    self, Capabilities, HelmSettings, PartCache, Prepared, RenderSettings, RootKind, Target,
    ToolLimits, ToolPaths, Tools, Vars,
};
use std::path::{Path, PathBuf};

/// The engine and the namespace of the command line's cluster.
pub(super) struct Cluster {
    pub engine: Engine,
    pub namespace: String,
}

impl Cluster {
    pub(super) async fn connect(args: &SyncArgs) -> Result<Cluster> {
        let config = ClusterConfig::load(args.kubeconfig.as_deref(), args.context.as_deref())?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let options = ClientOptions {
            request_timeout: args.request_timeout,
            ..ClientOptions::default()
        };
        let engine = Engine::connect(Client::with_options(config, options)?).await?;
        Ok(Cluster { engine, namespace })
    }
}

/// The manifests of every PATH, and the cluster when rendering needed it.
pub(super) async fn load(args: &SyncArgs, name: &str) -> Result<(Vec<Manifest>, Option<Cluster>)> {
    let roots: Vec<Root> = args
        .paths
        .iter()
        .map(|p| Root {
            root: p.clone(),
            base: base_of(p),
        })
        .collect();
    load_roots(args, name, &roots, Reach::Cluster).await
}

/// One root to load and what its render may read.
pub(super) struct Root {
    pub root: PathBuf,
    pub base: PathBuf,
}

/// Whether loading may connect to the cluster (a chart's capabilities, a
/// kustomization's nothing): `diff --base` must work without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    Cluster,
    Offline,
}

/// The manifests of every root: plain ones read as they are, the rest rendered
/// (kustomize, Helm, `--var` substitution), as a source's are.
pub(super) async fn load_roots(
    args: &SyncArgs,
    name: &str,
    roots: &[Root],
    reach: Reach,
) -> Result<(Vec<Manifest>, Option<Cluster>)> {
    let settings = settings(args)?;
    let substitutes = settings.substitutes();
    if !substitutes
        && roots
            .iter()
            .all(|r| render::detect(&r.root) == RootKind::Plain)
    {
        let paths: Vec<PathBuf> = roots.iter().map(|r| r.root.clone()).collect();
        let keys = args.age_keys()?;
        let manifests = manifest::load_decrypting(&paths, args.limits(), &keys)?;
        return Ok((manifests, None));
    }
    let mut targets: Vec<Target> = roots
        .iter()
        .map(|r| Target {
            root: &r.root,
            base: &r.base,
            namespace: "",
            name,
            settings: &settings,
        })
        .collect();
    let prepared = targets
        .iter()
        .map(render::prepare)
        .collect::<Result<Vec<Prepared>, _>>()?;
    let helm = prepared.iter().any(Prepared::needs_cluster);
    let cluster = match (helm, reach) {
        (true, Reach::Cluster) => Some(Cluster::connect(args).await?),
        _ => None,
    };
    let capabilities = match &cluster {
        Some(c) => Capabilities::discover(c.engine.client(), c.engine.discovery()).await?,
        None => Capabilities::default(),
    };
    let offline_namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let namespace = match (&cluster, reach) {
        (Some(c), _) => c.namespace.as_str(),
        (None, Reach::Offline) => offline_namespace,
        (None, Reach::Cluster) => "",
    };
    for target in &mut targets {
        target.namespace = namespace;
    }
    let keys = args.age_keys()?;
    let tools = Tools::find(&ToolPaths::default()).await;
    // Chart dependencies are fetched into --cache-dir, else a scratch cache.
    let scratch_cache = tempfile::tempdir()?;
    let cache = args
        .chart
        .cache_dir
        .as_deref()
        .unwrap_or(scratch_cache.path());
    let renderer = render::Renderer::new(tools, ToolLimits::default())
        .with_artifacts(cache, converge::config::ArtifactLimits::default());
    let vars = substitutes.then_some(&settings.vars);
    let mut manifests = Vec::new();
    for (target, prepared) in targets.iter().zip(&prepared) {
        manifests.extend(
            renderer
                .render(
                    prepared,
                    target,
                    &capabilities,
                    vars,
                    &mut PartCache::default(),
                    &keys,
                )
                .await?,
        );
    }
    let origins = manifests.iter().map(|m| (m.object_ref(), &m.origin));
    let problems = manifest::find_duplicates(origins);
    if !problems.is_empty() {
        return Err(ManifestError::Invalid(problems).into());
    }
    Ok((manifests, cluster))
}

/// `--values` (relative to the working directory, as a shell user means them),
/// `--set` and `--release`.
fn settings(args: &SyncArgs) -> Result<RenderSettings> {
    let values_files = args
        .render
        .values
        .iter()
        .map(std::path::absolute)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RenderSettings {
        helm: HelmSettings {
            release: args.render.release.clone(),
            values_files,
            set: args.render.set.clone(),
            ..HelmSettings::default()
        },
        vars: args
            .render
            .vars
            .iter()
            .cloned()
            .fold(Vars::default(), |mut vars, (k, v)| {
                vars.insert(k, v);
                vars
            }),
        ..RenderSettings::default()
    })
}

/// What a PATH's render may read: the Git work tree around it (so an overlay may
/// reach `../base` in its repository), else the working directory when PATH is
/// inside it, else the PATH itself.
fn base_of(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let cwd = std::env::current_dir().unwrap_or_default();
    let repository = absolute.ancestors().find(|dir| dir.join(".git").exists());
    match repository {
        Some(repository) => relative_to(repository, &cwd),
        None if absolute.starts_with(&cwd) => PathBuf::from("."),
        None => path.to_path_buf(),
    }
}

/// `dir` relative to `cwd` when inside it (so messages name files as typed), else as is.
fn relative_to(dir: &Path, cwd: &Path) -> PathBuf {
    match dir.strip_prefix(cwd) {
        Ok(rest) if rest.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rest) => rest.to_path_buf(),
        Err(_) => dir.to_path_buf(),
    }
}
