//! `converge status`: the daemon's `/status` as a table or JSON.

use super::Exit;
use super::args::{OutputFormat, StatusArgs};
use anyhow::Result;
use converge::daemon::{SourceStatus, SyncResult, status_text};
use converge::health::State;

/// Prints the status; the exit code says the worst of it (see [`exit_for`]).
pub(crate) async fn status(args: StatusArgs) -> Result<Exit> {
    let status = args.daemon.status().await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", status_text(&status, args.color.enabled())),
    }
    Ok(exit_for(&status.sources))
}

/// 1 when a source is not synced (drifted, failed, pending, waiting), else 3 when a
/// synced source holds an object that failed or went missing, else 0. Progressing
/// objects are not an error: a snapshot cannot tell a slow rollout from a stuck one
/// (`apply --wait` can, and exits 3 when its timeout passes).
fn exit_for(sources: &[SourceStatus]) -> Exit {
    if sources.iter().any(|s| s.result != SyncResult::Synced) {
        return Exit::Changes;
    }
    let broken = |s: &&SourceStatus| matches!(s.health.state, Some(State::Failed | State::Missing));
    if sources.iter().any(|s| broken(&s)) {
        Exit::NotReady
    } else {
        Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source as `/status` serves it, with a sync result and a health state.
    fn source(result: &str, health: Option<&str>) -> SourceStatus {
        let health = health.map_or(serde_json::Value::Null, |h| h.into());
        serde_json::from_value(serde_json::json!({
            "name": "apps", "kind": "git", "location": "https://example.com/r.git",
            "revision": null, "attemptedRevision": null, "lastAttempt": null,
            "lastSuccess": null, "result": result, "error": null, "reconciles": 1,
            "dryRun": false, "objects": [],
            "health": {"state": health, "ready": 0, "progressing": 0, "failed": 0,
                       "missing": 0, "objects": []},
        }))
        .expect("a source status")
    }

    #[test]
    fn synced_and_healthy_or_progressing_is_0() {
        let sources = [
            source("synced", Some("ready")),
            source("synced", Some("progressing")),
        ];
        assert_eq!(exit_for(&sources), Exit::Ok);
        assert_eq!(exit_for(&[source("synced", None)]), Exit::Ok);
    }

    #[test]
    fn a_source_not_synced_is_1_whatever_its_health() {
        let sources = [
            source("synced", Some("failed")),
            source("drifted", Some("ready")),
        ];
        assert_eq!(exit_for(&sources), Exit::Changes);
    }

    #[test]
    fn synced_with_a_failed_or_missing_object_is_3() {
        for state in ["failed", "missing"] {
            let sources = [
                source("synced", Some("ready")),
                source("synced", Some(state)),
            ];
            assert_eq!(exit_for(&sources), Exit::NotReady, "{state}");
        }
    }
}
