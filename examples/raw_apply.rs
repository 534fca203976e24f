//! The benchmark's "raw limit": server-side apply PATCHes of every manifest sent
//! straight at the API server with converge's client at the engine's concurrency and
//! in its order (kind by kind, as `engine::apply_rank` ranks them), with no reads,
//! dry-runs, diffing or inventory. `converge apply` is measured against this
//! (hack/bench.sh). The same order matters: Deployments sent early set the
//! controller-manager to work while the rest is still being written.
//!
//!   cargo run --release --example raw_apply -- PATH... [-n NAMESPACE]

use converge::engine::{CONCURRENCY, FIELD_MANAGER, apply_rank};
use converge::kube::{Client, ClusterConfig, Discovery, PatchParams};
use converge::manifest;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let namespace = match args.iter().position(|a| a == "-n") {
        Some(i) if i + 1 < args.len() => {
            let ns = args.remove(i + 1);
            args.remove(i);
            ns
        }
        _ => "default".to_string(),
    };
    let paths: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    let manifests = manifest::load(&paths)?;
    let client = Client::new(ClusterConfig::load(None, None)?)?;
    let discovery = Discovery::new(&client).await?;
    let started = Instant::now();
    // Kind by kind in converge's apply order, each rank done before the next.
    let mut ranks: BTreeMap<u16, Vec<(String, Value)>> = BTreeMap::new();
    let mut count = 0;
    for m in manifests {
        let resource = discovery.resolve(m.group(), m.version(), &m.kind)?;
        let m = if resource.namespaced {
            m.with_default_namespace(&namespace)
        } else {
            m
        };
        let path = resource.path(m.namespace(), Some(m.name()));
        let rank = apply_rank(m.group(), &m.kind);
        ranks
            .entry(rank)
            .or_default()
            .push((path, Value::Object(m.body)));
        count += 1;
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for batch in ranks.into_values() {
        stream::iter(batch)
            .map(|(path, body)| {
                let (client, params) = (client.clone(), &params);
                async move { client.apply(&path, &body, params).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"objects\": {count}, \"seconds\": {seconds}}}");
    Ok(())
}
