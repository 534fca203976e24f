//! The PATHs of `apply` and `diff` → manifests: each PATH is its own root (a
//! kustomization, a chart or plain manifests). Plain PATHs are loaded as before,
//! without the cluster; a chart needs it for its capabilities, so the engine is
//! connected first then.

use super::Exit;
use super::args::{SyncArgs, version_line};
use anyhow::Result;
use converge::engine::Engine;
use converge::kube::{Client, ClusterConfig};
use converge::manifest::{self, Manifest, ManifestError};
use converge::render::{
    self, Capabilities, HelmSettings, Limits, Prepared, RenderSettings, RootKind, Target,
    ToolPaths, Tools, Vars,
};
use std::path::{Path, PathBuf};

/// `converge version`: converge's own version, then the rendering tools found.
pub async fn version() -> Result<Exit> {
    println!("{}", version_line());
    for tool in Tools::find(&ToolPaths::default()).await.status() {
        println!("{tool}");
    }
    Ok(Exit::Ok)
}

/// The engine and the namespace of the command line's cluster.
pub struct Cluster {
    pub engine: Engine,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(args: &SyncArgs) -> Result<Cluster> {
        let config = ClusterConfig::load(args.kubeconfig.as_deref(), args.context.as_deref())?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let engine = Engine::connect(Client::new(config)?).await?;
        Ok(Cluster { engine, namespace })
    }
}

/// The manifests of every PATH, and the cluster when rendering needed it.
pub async fn load(args: &SyncArgs, name: &str) -> Result<(Vec<Manifest>, Option<Cluster>)> {
    let settings = settings(args)?;
    let bases: Vec<PathBuf> = args.paths.iter().map(|p| base_of(p)).collect();
    let target = |i: usize, namespace: &'static str| Target {
        root: &args.paths[i],
        base: &bases[i],
        namespace,
        name,
        settings: &settings,
    };
    let prepared = (0..args.paths.len())
        .map(|i| render::prepare(&target(i, "")))
        .collect::<Result<Vec<Prepared>, _>>()?;
    if prepared.iter().all(|p| p.tool().is_none()) {
        return Ok((manifest::load(&args.paths)?, None));
    }
    let cluster = if prepared.iter().any(|p| p.kind() == RootKind::Helm) {
        Some(Cluster::connect(args).await?)
    } else {
        None
    };
    let capabilities = match &cluster {
        Some(c) => Capabilities::discover(c.engine.client(), c.engine.discovery()).await?,
        None => Capabilities::default(),
    };
    let renderer =
        render::Renderer::new(Tools::find(&ToolPaths::default()).await, Limits::default());
    let namespace = cluster.as_ref().map_or("", |c| c.namespace.as_str());
    let mut manifests = Vec::new();
    for (i, prepared) in prepared.iter().enumerate() {
        let target = Target {
            namespace,
            ..target(i, "")
        };
        manifests.extend(
            renderer
                .render(prepared, &target, &capabilities, None)
                .await?,
        );
    }
    let problems = manifest::find_duplicates(manifests.iter().map(|m| (m.object_ref(), &m.origin)));
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
        vars: Vars::default(),
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
