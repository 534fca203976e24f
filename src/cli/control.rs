//! `converge suspend`, `resume` and `reconcile`: the daemon's control API
//! ([`converge::daemon::ControlClient`]), for people and scripts.

use super::Exit;
use super::args::{ControlArgs, OutputFormat, ReconcileArgs, SuspendArgs};
use anyhow::{Context, Result};
use converge::daemon::{
    ControlCallError, ControlClient, SourceStatus, SuspendRequest, Suspension, SyncResult, Written,
    fetch_status,
};
use converge::health::State;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often `reconcile --wait` reads `/status` while objects roll out.
const POLL: Duration = Duration::from_millis(500);

/// The bearer token in `path` (surrounding whitespace dropped), if one is given.
pub(crate) fn read_token(path: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(Some(text.trim().to_owned()))
}

fn client(target: &ControlArgs) -> Result<ControlClient> {
    let token = read_token(target.daemon.token_file.as_deref())?;
    Ok(ControlClient::new(&target.daemon.addr, token)?)
}

pub(crate) async fn suspend(args: SuspendArgs) -> Result<Exit> {
    let target = &args.target;
    let request = SuspendRequest {
        by: args.by.clone().unwrap_or_else(whoami),
        reason: args.reason.clone(),
    };
    let suspension = refused_or(client(target)?.suspend(&target.source, &request).await)?;
    match target.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&suspension)?),
        OutputFormat::Text => println!("{}", suspended_text(&target.source, &suspension)),
    }
    Ok(Exit::Ok)
}

pub(crate) async fn resume(args: ControlArgs) -> Result<Exit> {
    let status = refused_or(client(&args)?.resume(&args.source).await)?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => println!("source {} resumed: converging it now", args.source),
    }
    Ok(Exit::Ok)
}

pub(crate) async fn reconcile(args: ReconcileArgs) -> Result<Exit> {
    let target = &args.target;
    let mut status = refused_or(client(target)?.reconcile(&target.source).await)?;
    if args.wait && status.result != SyncResult::Failed {
        status = wait_settled(target, status, args.timeout).await?;
    }
    match target.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", outcome_text(&status)),
    }
    Ok(exit_for(&status, args.wait))
}

/// A refusal as the daemon worded it (a follower's names the leader).
fn refused_or<T>(result: Result<T, ControlCallError>) -> Result<T> {
    result.map_err(|error| match error {
        ControlCallError::Refused { body, .. } => anyhow::anyhow!(body.error),
        other => other.into(),
    })
}

/// Reads `/status` until the source's objects are all ready or one failed, or
/// `timeout` passes; the last status read.
async fn wait_settled(
    target: &ControlArgs,
    mut status: SourceStatus,
    timeout: Duration,
) -> Result<SourceStatus> {
    let token = read_token(target.daemon.token_file.as_deref())?;
    let deadline = Instant::now() + timeout;
    while !settled(&status) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let report = fetch_status(&target.daemon.addr, token.as_deref()).await?;
        if let Some(now) = report.sources.into_iter().find(|s| s.name == target.source) {
            status = now;
        }
    }
    Ok(status)
}

fn settled(status: &SourceStatus) -> bool {
    matches!(
        status.health.state,
        None | Some(State::Ready | State::Failed | State::Missing)
    )
}

/// As `apply`: 2 when the reconcile failed, 3 when an object failed or went
/// missing (or, with `wait`, is not ready yet) or the source waits for its
/// dependencies, else 0.
fn exit_for(status: &SourceStatus, wait: bool) -> Exit {
    match (status.result, status.health.state) {
        (SyncResult::Failed | SyncResult::Pending, _) => Exit::Error,
        (SyncResult::Waiting, _) => Exit::NotReady,
        (_, Some(State::Failed | State::Missing)) => Exit::NotReady,
        (_, Some(State::Progressing)) if wait => Exit::NotReady,
        _ => Exit::Ok,
    }
}

fn suspended_text(source: &str, suspension: &Suspension) -> String {
    let reason = suspension.reason.as_deref().unwrap_or("no reason given");
    format!(
        "source {source} suspended by {} ({reason}): the daemon reports its drift and writes \
         nothing until `converge resume {source}`",
        suspension.by
    )
}

/// What `converge reconcile` prints: revision, what was written, health, error.
fn outcome_text(status: &SourceStatus) -> String {
    let revision = status
        .revision
        .as_deref()
        .map_or("-", |r| &r[..r.len().min(12)]);
    let mut out = format!("source {} at {revision}: {}\n", status.name, status.result);
    if let Some(sync) = &status.last_sync {
        let verb = match sync.written {
            Written::Applied => "written",
            Written::ReportOnly => "would write (report-only)",
        };
        out.push_str(&format!(
            "  {verb}: {} created, {} configured, {} pruned, {} unchanged\n",
            sync.created, sync.configured, sync.pruned, sync.unchanged
        ));
    }
    let health = &status.health;
    let state = health.state.map_or("unknown".to_owned(), |s| s.to_string());
    out.push_str(&format!(
        "  health: {state} ({} ready, {} progressing, {} failed, {} missing)\n",
        health.ready, health.progressing, health.failed, health.missing
    ));
    for object in health
        .objects
        .iter()
        .filter(|o| o.health.state != State::Ready)
    {
        out.push_str(&format!("    {}: {}\n", object.object, object.health.state));
    }
    if !status.waiting_for.is_empty() {
        out.push_str(&format!(
            "  waiting for {}\n",
            status.waiting_for.join(", ")
        ));
    }
    if let Some(error) = &status.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out
}

/// `$USER@hostname`, as a suspension names who took it.
fn whoami() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}
