//! `converge version`: converge's own version, then the rendering tools found.

use super::Exit;
use super::args::version_line;
use anyhow::Result;
use converge::render::{ToolPaths, Tools};

pub(crate) async fn version() -> Result<Exit> {
    println!("{}", version_line());
    for tool in Tools::find(&ToolPaths::default()).await.status() {
        println!("{tool}");
    }
    Ok(Exit::Ok)
}
