//! `converge push`: a directory published as an OCI manifests artifact.

use anyhow::{Context, Result};

use super::Exit;
use super::args::PushArgs;
use converge::config::Insecure;
use converge::source::oci::{self, PushOptions};

pub(crate) async fn push(args: PushArgs) -> Result<Exit> {
    if !args.path.is_dir() {
        anyhow::bail!(
            "--path {}: not a directory; give the directory of manifests to publish",
            args.path.display()
        );
    }
    let options = PushOptions {
        source: args.source,
        revision: args.revision,
        insecure: match args.insecure {
            true => Insecure::AllowPlainHttp,
            false => Insecure::No,
        },
    };
    let digest = oci::push(&args.reference, &args.path, &options)
        .await
        .with_context(|| format!("cannot push {} to {}", args.path.display(), args.reference))?;
    println!("{digest}");
    Ok(Exit::Ok)
}
