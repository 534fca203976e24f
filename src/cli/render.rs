//! The PATHs of `apply` and `diff` → manifests: each PATH is its own root (a
//! kustomization, a chart or plain manifests). Plain PATHs are loaded as before,
//! without the cluster; a chart needs it for its capabilities, so the engine is
//! connected first then.

use super::args::SyncArgs;
use anyhow::Result;
use converge::engine::Engine;
use converge::kube::{Client, ClientOptions, ClusterConfig};
use converge::manifest::{self, Manifest, ManifestError};
use converge::render::{
    self, Capabilities, HelmSettings, PartCache, Prepared, RenderSettings, RootKind, Target,
    ToolLimits, ToolPaths, Tools,
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
    if args
        .paths
        .iter()
        .all(|p| render::detect(p) == RootKind::Plain)
    {
        return Ok((manifest::load_with(&args.paths, args.limits())?, None));
    }
    let settings = settings(args)?;
    let bases: Vec<PathBuf> = args.paths.iter().map(|p| base_of(p)).collect();
    let mut targets: Vec<Target> = args
        .paths
        .iter()
        .zip(&bases)
        .map(|(root, base)| Target {
            root,
            base,
            namespace: "",
            name,
            settings: &settings,
        })
        .collect();
    let prepared = targets
        .iter()
        .map(render::prepare)
        .collect::<Result<Vec<Prepared>, _>>()?;
    let cluster = match prepared.iter().any(|p| p.kind() == RootKind::Helm) {
        true => Some(Cluster::connect(args).await?),
        false => None,
    };
    let capabilities = match &cluster {
        Some(c) => Capabilities::discover(c.engine.client(), c.engine.discovery()).await?,
        None => Capabilities::default(),
    };
    let namespace = cluster.as_ref().map_or("", |c| c.namespace.as_str());
    for target in &mut targets {
        target.namespace = namespace;
    }
    let tools = Tools::find(&ToolPaths::default()).await;
    let renderer = render::Renderer::new(tools, ToolLimits::default());
    let mut manifests = Vec::new();
    for (target, prepared) in targets.iter().zip(&prepared) {
        manifests.extend(
            renderer
                .render(
                    prepared,
                    target,
                    &capabilities,
                    None,
                    &mut PartCache::default(),
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
