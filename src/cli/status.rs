//! `converge status`: the daemon's `/status` as a table or JSON.

use super::Exit;
use super::args::{OutputFormat, StatusArgs};
use anyhow::Result;
use converge::http::SyncResult;
use converge::http::fetch_status;
use converge::report;

/// Prints the status; exits 1 unless every source is synced.
pub async fn status(args: StatusArgs) -> Result<Exit> {
    let status = fetch_status(&args.addr).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", report::status_text(&status, args.color.enabled())),
    }
    let all_synced = status
        .sources
        .iter()
        .all(|s| s.result == SyncResult::Synced);
    Ok(if all_synced { Exit::Ok } else { Exit::Changes })
}
