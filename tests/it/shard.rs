//! Shard mode: three `converge run` replicas with `[leader_election] shard = true`
//! share nine sources through per-source Leases (client-go's default timings).
//! Every source is written by exactly one replica, the one holding its Lease; a
//! replica killed with `kill -9` has its sources adopted within 20 s, and the
//! distribution settles at most one apart.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SOURCES: usize = 9;
const REPLICAS: [&str; 3] = ["r0", "r1", "r2"];

struct Cluster {
    env: TestEnv,
    /// One directory per source, `s<i>`, each with one ConfigMap `cm-s<i>`.
    sources: Vec<Manifests>,
}

impl Cluster {
    fn new() -> Self {
        let env = TestEnv::new("shard");
        let sources = (0..SOURCES)
            .map(|i| Manifests::with("cm.yaml", &configmap(&format!("cm-s{i}"), "1")))
            .collect();
        Cluster { env, sources }
    }

    fn config(&self) -> String {
        let mut text = "state_dir = \"{state}\"\n\n[leader_election]\nenabled = true\n\
                        shard = true\nnamespace = \"{ns}\"\n"
            .to_owned();
        for (i, source) in self.sources.iter().enumerate() {
            text.push_str(&format!(
                "\n[[source]]\nname = \"s{i}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"1h\"\n",
                source.path().display()
            ));
        }
        text
    }

    fn start(&self, id: &str) -> Daemon {
        let daemon = Daemon::start(&self.env, &self.config(), &["--id", id]);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    /// Each source's Lease holder, as the API server has it (valid or not).
    fn holders(&self) -> BTreeMap<String, String> {
        let jsonpath =
            r#"jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{"\n"}{end}"#;
        let out = self.env.kubectl(&[
            "get",
            "leases",
            "-n",
            &self.env.ns,
            "-l",
            "converge.dev/lease=source",
            "-o",
            jsonpath,
        ]);
        out.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(lease, holder)| {
                let source = lease.trim_start_matches("converge-").to_owned();
                (source, holder.to_owned())
            })
            .collect()
    }

    /// How many sources each of `replicas` holds, once every source is held by one
    /// of them and the counts are at most one apart; `None` otherwise.
    fn settled(&self, replicas: &[&str]) -> Option<Vec<usize>> {
        let holders = self.holders();
        if holders.len() != SOURCES || holders.values().any(|h| !replicas.contains(&h.as_str())) {
            return None;
        }
        let loads: Vec<usize> = replicas
            .iter()
            .map(|r| holders.values().filter(|h| h == r).count())
            .collect();
        let spread = loads.iter().max()? - loads.iter().min()?;
        (spread <= 1).then_some(loads)
    }

    fn write_all(&self, value: &str) {
        for (i, source) in self.sources.iter().enumerate() {
            source.write("cm.yaml", &configmap(&format!("cm-s{i}"), value));
        }
    }

    fn value(&self, source: &str) -> Option<String> {
        self.env.configmap_value(&format!("cm-{source}"))
    }
}

/// The owner of each source, as `replica`'s /status tells it (empty: none).
fn owners(replica: &Daemon) -> BTreeMap<String, String> {
    source_field(replica, "owner")
}

/// The revision `replica` last tried of each source (`attemptedRevision` in its
/// /status), by source name.
fn attempted(replica: &Daemon) -> BTreeMap<String, String> {
    source_field(replica, "attemptedRevision")
}

/// A string field of every source in `replica`'s /status, by source name.
fn source_field(replica: &Daemon, field: &str) -> BTreeMap<String, String> {
    let status = replica.status();
    let sources = status["sources"].as_array().cloned().unwrap_or_default();
    sources
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default().to_owned();
            (name, s[field].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Writes `replica` made for `source` (creates, configures, prunes).
fn writes(replica: &Daemon, source: &str) -> f64 {
    replica.metric(&format!(
        "converge_apply_actions_total{{source=\"{source}\","
    ))
}

#[test]
fn replicas_share_the_sources_and_adopt_a_dead_ones() {
    let cluster = Cluster::new();
    let mut replicas: Vec<Daemon> = REPLICAS.iter().map(|id| cluster.start(id)).collect();
    let settled = eventually(Duration::from_secs(30), || cluster.settled(&REPLICAS));
    let loads = settled.expect("the sources never settled").value;
    assert_eq!(loads, [3, 3, 3], "{:?}", cluster.holders());

    // /status tells the owner of each source, the same on every replica (each
    // learns the others' Leases from its own watch, soon after they are taken).
    let holders = cluster.holders();
    for replica in &replicas {
        assert_eq!(replica.status()["replica"]["election"], "shard");
    }
    let told = eventually(Duration::from_secs(15), || {
        replicas.iter().all(|replica| owners(replica) == holders)
    });
    assert!(
        told.is_some(),
        "the replicas do not all tell the owners {holders:?}: {:?}",
        replicas.iter().map(owners).collect::<Vec<_>>()
    );

    // A change to every source is written by its owner, and only by it.
    let before: Vec<Vec<f64>> = replicas
        .iter()
        .map(|r| (0..SOURCES).map(|i| writes(r, &format!("s{i}"))).collect())
        .collect();
    let tried_before: Vec<BTreeMap<String, String>> = replicas.iter().map(attempted).collect();
    cluster.write_all("2");
    let applied = eventually(Duration::from_secs(15), || {
        (0..SOURCES).all(|i| cluster.value(&format!("s{i}")).as_deref() == Some("2"))
    });
    assert!(applied.is_some(), "not every change was applied");
    // Settled: every replica has tried the new revision of every source (the
    // others report-only), so any write one of them would make is counted.
    let tried = eventually(Duration::from_secs(30), || {
        replicas.iter().zip(&tried_before).all(|(replica, before)| {
            let now = attempted(replica);
            now.len() == SOURCES && now.iter().all(|(s, rev)| before.get(s) != Some(rev))
        })
    });
    assert!(
        tried.is_some(),
        "not every replica tried every new revision: before {tried_before:?}, now {:?}",
        replicas.iter().map(attempted).collect::<Vec<_>>()
    );
    for i in 0..SOURCES {
        let source = format!("s{i}");
        let wrote: Vec<&str> = replicas
            .iter()
            .zip(&before)
            .zip(REPLICAS)
            .filter(|((r, before), _)| writes(r, &source) > before[i])
            .map(|(_, id)| id)
            .collect();
        assert_eq!(
            wrote,
            [holders[&source].as_str()],
            "{source} written by {wrote:?}"
        );
    }

    // kill -9 of a replica: its sources are adopted within 20 s.
    let victim = 1;
    let orphans: Vec<String> = holders
        .iter()
        .filter(|(_, h)| *h == REPLICAS[victim])
        .map(|(s, _)| s.clone())
        .collect();
    replicas[victim].kill();
    let killed = Instant::now();
    cluster.write_all("3");
    let adopted = eventually(Duration::from_secs(25), || {
        orphans
            .iter()
            .all(|s| cluster.value(s).as_deref() == Some("3"))
    });
    let took = killed.elapsed();
    assert!(adopted.is_some(), "{orphans:?} were never adopted");
    eprintln!(
        "kill -9 of {}: its sources {orphans:?} adopted in {took:?}",
        REPLICAS[victim]
    );
    assert!(took < Duration::from_secs(20), "adoption took {took:?}");

    let survivors = [REPLICAS[0], REPLICAS[2]];
    let settled = eventually(Duration::from_secs(30), || cluster.settled(&survivors));
    let loads = settled.expect("never settled after the kill").value;
    eprintln!("settled after the kill: {loads:?}");
    assert_eq!(loads.iter().sum::<usize>(), SOURCES);
    let holders = cluster.holders();
    for (i, replica) in [0, 2].into_iter().map(|i| (i, &replicas[i])) {
        let owned = replica.status()["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .filter(|s| s["owner"] == REPLICAS[i])
            .count();
        assert_eq!(
            owned,
            holders.values().filter(|h| *h == REPLICAS[i]).count()
        );
    }
}
