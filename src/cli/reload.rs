//! Configuration reload for `converge run`: SIGHUP, or a change of config.toml
//! (an inotify watch on its directory, since editors and ConfigMap volumes replace
//! the file rather than write it), asks the daemon to load it again.
//!
//! The new file is validated as at start-up; an invalid one is refused with every
//! problem named by its key, and the running configuration stays. Only sources
//! are reloaded: a change elsewhere (`[cluster]`, `[server]`, `[leader_election]`,
//! `[[clusters]]`, `[render]`, `state_dir`, `[[notify]]`) is logged as needing a
//! restart.

use anyhow::{Context, Result};
use converge::config::{Config, Overrides};
use converge::daemon::{Reload, SourceSpec};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::Path;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Starts listening for SIGHUP and changes of `config`'s file; the daemon's end.
pub(crate) fn watch(config: Config, overrides: Overrides) -> Result<Reload> {
    let (tx, requests) = mpsc::channel(1);
    let watcher = watch_file(&config.path, tx.clone())?;
    tokio::spawn(async move {
        let _watcher = watcher;
        on_sighup(tx).await;
    });
    let mut last_text = std::fs::read_to_string(&config.path).unwrap_or_default();
    let mut running = config;
    let load = move || {
        let path = running.path.clone();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if text == last_text {
            return Ok(None);
        }
        // One log line: each problem, with its key, after the file's name.
        let config = Config::parse(&text, &path)
            .map_err(|e| e.to_string().replace("\n  ", " | "))?
            .with(overrides.clone());
        let specs = SourceSpec::all(&config).map_err(|e| e.to_string())?;
        warn_restart_needed(&running, &config);
        info!(path = %path.display(), sources = specs.len(), "reloading the configuration");
        last_text = text;
        running = config;
        Ok(Some(specs))
    };
    Ok(Reload {
        requests,
        load: Box::new(load) as Box<dyn FnMut() -> Result<Option<Vec<SourceSpec>>, String> + Send>,
    })
}

/// Each SIGHUP asks for a reload.
async fn on_sighup(tx: mpsc::Sender<()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP; config.toml changes still reload");
            return;
        };
        while hangups.recv().await.is_some() {
            info!("SIGHUP: reloading the configuration");
            let _ = tx.try_send(());
        }
    }
}

/// Watches the directory of `path` for changes to that file.
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Result<notify::RecommendedWatcher> {
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let writes = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        let ours = event.paths.iter().any(|p| p.file_name() == name.as_deref());
        if writes && ours {
            // A full channel: a reload is queued, and it reads the file as it is then.
            let _ = tx.try_send(());
        }
    })
    .context("cannot watch config.toml for changes")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    Ok(watcher)
}

/// Logs every section that changed but is only read at start-up.
fn warn_restart_needed(running: &Config, new: &Config) {
    let sections = [
        ("[cluster]", running.cluster != new.cluster),
        ("[server]", running.server != new.server),
        (
            "[leader_election]",
            running.leader_election != new.leader_election,
        ),
        ("[[clusters]]", running.clusters != new.clusters),
        ("[render]", running.render != new.render),
        ("state_dir", running.state_dir != new.state_dir),
        ("[[notify]]", running.notify != new.notify),
    ];
    for (section, changed) in sections {
        if changed {
            warn!(
                section,
                "changed, but only read at start-up: restart the daemon to apply it"
            );
        }
    }
}
