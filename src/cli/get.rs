//! `converge get sources` and `converge get objects [SOURCE]`: what the daemon
//! deploys, read from its `/status`, as a listing or JSON.

use super::Exit;
use super::args::{GetArgs, GetWhat, OutputFormat};
use anyhow::{Result, bail};
use converge::daemon::{object_rows, objects_table, source_rows, sources_table};

/// Prints the listing; 2 (an error) when the daemon cannot be reached or the
/// source named is not one of its.
pub(crate) async fn get(args: GetArgs) -> Result<Exit> {
    let report = args.daemon.status().await?;
    match args.what {
        GetWhat::Sources => {
            let rows = source_rows(&report);
            match args.output {
                OutputFormat::Text => print!("{}", sources_table(&rows)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
        }
        GetWhat::Objects { source } => {
            if let Some(name) = &source
                && !report.sources.iter().any(|s| &s.name == name)
            {
                let known: Vec<&str> = report.sources.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "the daemon at {} has no source {name:?}; its sources: {}",
                    args.daemon.addr,
                    known.join(", ")
                );
            }
            let rows = object_rows(&report, source.as_deref());
            match args.output {
                OutputFormat::Text => print!("{}", objects_table(&rows)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
        }
    }
    Ok(Exit::Ok)
}
