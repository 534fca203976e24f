//! The benchmark's "raw limit": server-side apply PATCHes of every manifest sent
//! straight at the API server with converge's client at the engine's concurrency,
//! with no reads, dry-runs, diffing or inventory. `converge apply` is measured
//! against this (hack/bench.sh).
//!
//!   cargo run --release --example raw_apply -- PATH... [-n NAMESPACE]

use converge::engine::{CONCURRENCY, FIELD_MANAGER};
use converge::kube::{Client, ClusterConfig, Discovery, PatchParams};
use converge::manifest;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;
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
    let requests: Vec<(String, Value)> = manifests
        .into_iter()
        .map(|m| {
            let resource = discovery.resolve(m.group(), m.version(), &m.kind)?;
            let m = if resource.namespaced {
                m.with_default_namespace(&namespace)
            } else {
                m
            };
            Ok((
                resource.path(m.namespace(), Some(m.name())),
                Value::Object(m.body),
            ))
        })
        .collect::<Result<_, converge::kube::Error>>()?;
    let count = requests.len();
    // Namespaces first (objects in a missing namespace are refused), then the rest.
    let (namespaces, rest): (Vec<_>, Vec<_>) = requests.into_iter().partition(|(path, _)| {
        path.starts_with("/api/v1/namespaces/") && path.matches('/').count() == 4
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for batch in [namespaces, rest] {
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
