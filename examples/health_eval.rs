//! The cost of health evaluation (hack/bench.sh): 1000 custom resources judged
//! with 10 CEL rules loaded (one per kind, the Certificate rule of issue #25),
//! against the same objects judged by converge's built-in kstatus alone. No
//! cluster: health is pure, so this measures exactly what `/status`, waves and
//! `--wait` add per object on top of their watches. Two CEL figures: objects seen
//! for the first time (or changed: every expression runs), and objects re-assessed
//! at the same resourceVersion (a full resync: the verdict is remembered).
//!
//!   cargo run --release --example health_eval -- [OBJECTS] [ROUNDS]

use converge::health::{HealthModel, HealthRuleSpec, HealthRules, State};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const RULES: usize = 10;

fn rule(kind: usize) -> HealthRuleSpec {
    HealthRuleSpec {
        api_version: Some("bench.example.com/v1".into()),
        kind: Some(format!("Kind{kind}")),
        in_progress: Some("has(self.status) && has(self.status.conditions) && self.status.conditions.exists(c, c.type == 'Issuing' && c.status == 'True')".into()),
        failed: Some("self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'Failed')".into()),
        current: Some("self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')".into()),
        message: Some("self.status.conditions.filter(c, c.type == 'Ready').map(c, c.message)".into()),
        ..HealthRuleSpec::default()
    }
}

/// A custom resource as a watch sees it: metadata with labels and annotations, a
/// small spec, three conditions.
fn object(i: usize) -> Value {
    json!({
        "apiVersion": "bench.example.com/v1", "kind": format!("Kind{}", i % RULES),
        "metadata": {"name": format!("object-{i}"), "namespace": "bench", "generation": 3,
                     "resourceVersion": format!("{}", 1000 + i), "uid": format!("uid-{i}"),
                     "labels": {"app": "bench", "applyset.kubernetes.io/part-of": "applyset-x"},
                     "annotations": {"converge.dev/source": "bench"}},
        "spec": {"secretName": format!("tls-{i}"), "dnsNames": ["a.example.com", "b.example.com"],
                 "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}},
        "status": {"observedGeneration": 3, "conditions": [
            {"type": "Issuing", "status": "False", "reason": "Done", "message": "issued"},
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "certificate is up to date"},
            {"type": "Other", "status": "True", "reason": "X", "message": "y"}]}
    })
}

/// The median time of `rounds` passes over `objects`, each with the model `fresh`
/// gives for it (built before the clock starts).
fn median_pass(fresh: impl Fn() -> HealthModel, objects: &[Value], rounds: usize) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let model = fresh();
            let started = Instant::now();
            let ready = objects
                .iter()
                .filter(|o| model.assess(o).state == State::Ready)
                .count();
            assert_eq!(ready, objects.len(), "every object is ready");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(9), |a| a.parse())?;
    let specs: Vec<HealthRuleSpec> = (0..RULES).map(rule).collect();
    let compile =
        || HealthRules::compile("health", &specs).map_err(|e| anyhow::anyhow!("{}", e[0]));
    let objects: Vec<Value> = (0..n).map(object).collect();
    let warm = HealthModel::with_rules(compile()?);
    median_pass(|| warm.clone(), &objects, 1);
    let cel = median_pass(
        || HealthModel::with_rules(compile().expect("compiled above")),
        &objects,
        rounds,
    );
    let unchanged = median_pass(|| warm.clone(), &objects, rounds);
    let builtin = median_pass(HealthModel::default, &objects, rounds);
    let per_1000 = |d: Duration| d.as_secs_f64() * 1000.0 * 1000.0 / n as f64;
    println!(
        "{}",
        json!({"objects": n, "rules": RULES, "rounds": rounds,
               "cel_ms_per_1000": (per_1000(cel) * 100.0).round() / 100.0,
               "cel_unchanged_ms_per_1000": (per_1000(unchanged) * 100.0).round() / 100.0,
               "builtin_ms_per_1000": (per_1000(builtin) * 100.0).round() / 100.0})
    );
    Ok(())
}
