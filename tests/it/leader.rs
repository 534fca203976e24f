//! Leader election: two `converge run --leader-elect` replicas on one config, with
//! client-go's default timings (15 s lease, 10 s renew deadline, 2 s retry). One
//! holds the Lease and is the only one to write; `kill -9` of it hands the writing
//! to the other within one lease duration, without writing any object twice for
//! one revision; SIGTERM hands over at once.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::watch::Events;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A namespace, the directory both replicas read, and the replicas.
struct Pair {
    env: TestEnv,
    manifests: Manifests,
}

impl Pair {
    fn new(test: &str) -> Self {
        Pair {
            env: TestEnv::new(test),
            manifests: Manifests::new(),
        }
    }

    /// One replica, `--leader-elect --id <id>`, its Lease in the test's namespace.
    fn start(&self, id: &str) -> Daemon {
        let config = format!(
            "{}\n[leader_election]\nnamespace = \"{{ns}}\"\n",
            dir_config(self.manifests.path(), "1h", Drift::Heal)
        );
        let daemon = Daemon::start(&self.env, &config, &["--leader-elect", "--id", id]);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    /// The Lease's holder, once there is one.
    fn holder(&self) -> String {
        let waited = eventually(Duration::from_secs(20), || {
            self.lease_field("{.spec.holderIdentity}")
                .filter(|h| !h.is_empty())
        });
        waited.expect("nobody took the Lease").value
    }

    fn lease_field(&self, jsonpath: &str) -> Option<String> {
        let args = ["get", "lease", "converge", "-n", &self.env.ns, "-o"];
        let jsonpath = format!("jsonpath={jsonpath}");
        let out = self
            .env
            .kubectl_output(&[&args[..], &[jsonpath.as_str()]].concat(), None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `data.value` of every ConfigMap but the ApplySet parent.
    fn values(&self) -> BTreeMap<String, String> {
        let jsonpath = r#"jsonpath={range .items[*]}{.metadata.name}={.data.value}{"\n"}{end}"#;
        let out = self
            .env
            .kubectl(&["get", "configmaps", "-n", &self.env.ns, "-o", jsonpath]);
        out.lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| name.starts_with("cm-") || *name == "after-kill")
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// What the replica wrote: server-side applies, creates and deletes (dry-runs and
/// its own Lease requests are counted apart).
fn writes(daemon: &Daemon) -> f64 {
    ["apply", "create", "delete"]
        .iter()
        .map(|verb| daemon.metric(&format!("converge_api_requests_total{{verb=\"{verb}\"}}")))
        .sum()
}

/// `(leader, follower)` by the Lease's holder.
fn by_role<'a>(holder: &str, a: &'a Daemon, b: &'a Daemon) -> (&'a Daemon, &'a Daemon) {
    match holder {
        "a" => (a, b),
        "b" => (b, a),
        other => panic!("the Lease is held by {other:?}, neither replica"),
    }
}

/// `n` ConfigMaps `cm-<i>` with `value`, in one file.
fn many(n: usize, value: &str) -> String {
    (0..n)
        .map(|i| configmap(&format!("cm-{i}"), value))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn only_the_lease_holder_writes() {
    let pair = Pair::new("leader-one-writer");
    pair.manifests.write("all.yaml", &many(5, "1"));
    let a = pair.start("a");
    let b = pair.start("b");
    let holder = pair.holder();
    let (leader, follower) = by_role(&holder, &a, &b);
    let (leader_status, follower_status) = (leader.status(), follower.status());
    assert_eq!(leader_status["replica"]["role"], "leader");
    assert_eq!(follower_status["replica"]["role"], "follower");
    assert_eq!(follower_status["replica"]["leader"], holder.as_str());
    assert_eq!(follower_status["sources"][0]["owner"], holder.as_str());
    // Both are ready: the follower reconciles report-only, so its state is warm.
    assert_eq!(follower.get("/readyz").0, 200);
    let standing_by = &follower_status["sources"][0];
    assert_eq!(standing_by["result"], "synced", "{standing_by}");
    assert_eq!(standing_by["objects"].as_array().map(Vec::len), Some(5));
    assert_eq!(follower.metric("converge_leader{"), 0.0);
    assert_eq!(leader.metric("converge_leader{"), 1.0);

    let changed_at = pair.lease_field("{.spec.renewTime}").expect("a renew time");
    pair.manifests.write("all.yaml", &many(5, "2"));
    let applied = eventually(Duration::from_secs(10), || {
        pair.values().values().all(|v| v == "2")
    });
    assert!(
        applied.is_some(),
        "the change was not applied:\n{}",
        leader.log()
    );
    // The follower saw the change too (it reconciles it report-only) and wrote nothing.
    let seen = eventually(Duration::from_secs(10), || {
        follower.metric("converge_reconciles_total{") >= 2.0
    });
    assert!(seen.is_some(), "{}", follower.log());
    assert_eq!(
        writes(follower),
        0.0,
        "the follower wrote:\n{}",
        follower.metrics()
    );
    assert!(writes(leader) >= 5.0, "{}", leader.metrics());
    // Every object was last written after the change, by converge's one field manager
    // (the ApplySet parent aside: a targeted reconcile leaves it as it was).
    let jsonpath = r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.managedFields[?(@.manager=="converge")].time}{"\n"}{end}"#;
    let times = pair
        .env
        .kubectl(&["get", "configmaps", "-n", &pair.env.ns, "-o", jsonpath]);
    let written = times
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, time)| !name.starts_with("converge-") && !time.is_empty());
    for (name, time) in written {
        assert!(
            time[..19] >= changed_at[..19],
            "{name}: {time} < {changed_at}"
        );
    }
}

/// Records every change to the namespace's ConfigMaps, as a watch sees them, from
/// the moment it is started (the watch is open when it returns).
struct Recorder(Events);

impl Recorder {
    fn start(env: &TestEnv) -> Self {
        let what = ["configmaps", "-n", &env.ns, "--watch-only"];
        let fields = " {.object.metadata.resourceVersion} {.object.data.value}";
        Recorder(Events::record(env, &what, fields))
    }

    /// `(type, name, resourceVersion, value)` of every event so far.
    fn records(&self) -> Vec<(String, String, String, String)> {
        self.0
            .lines()
            .iter()
            .filter_map(|line| {
                let mut parts = line.splitn(4, ' ');
                Some((
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                ))
            })
            .collect()
    }

    /// `(type, name, value)` of every event so far.
    fn events(&self) -> Vec<(String, String, String)> {
        let records = self.records().into_iter();
        records
            .map(|(kind, name, _, value)| (kind, name, value))
            .collect()
    }

    /// Whether the watch has caught up with `live` (name → resourceVersion): it
    /// has seen every object at its current version, so every write so far.
    fn caught_up(&self, live: &BTreeMap<String, String>) -> bool {
        let seen: BTreeSet<(String, String)> = self
            .records()
            .into_iter()
            .map(|(_, name, version, _)| (name, version))
            .collect();
        live.iter()
            .all(|(name, version)| seen.contains(&(name.clone(), version.clone())))
    }
}

#[test]
fn a_killed_leader_is_replaced_within_a_lease_duration_writing_nothing_twice() {
    const N: usize = 300;
    let pair = Pair::new("leader-kill");
    pair.manifests.write("all.yaml", &many(N, "1"));
    let mut a = pair.start("a");
    let mut b = pair.start("b");
    let holder = pair.holder();
    let recorder = Recorder::start(&pair.env);

    // A new revision; the leader dies while it applies it.
    pair.manifests.write("all.yaml", &many(N, "2"));
    let started = eventually(Duration::from_secs(20), || {
        recorder.events().iter().any(|(_, _, value)| value == "2")
    });
    assert!(started.is_some(), "the leader did not start applying");
    let (leader, survivor) = match holder.as_str() {
        "a" => (&mut a, &b),
        _ => (&mut b, &a),
    };
    leader.kill();
    let killed = Instant::now();
    let written_before = recorder
        .events()
        .iter()
        .filter(|(_, _, value)| value == "2")
        .count();
    assert!(
        written_before < N,
        "the leader finished before it was killed; nothing was left to take over"
    );

    // A change made after the kill is applied by the survivor.
    pair.manifests
        .write("after.yaml", &configmap("after-kill", "1"));
    let adopted = eventually(Duration::from_secs(25), || {
        pair.env.configmap_value("after-kill").is_some()
    });
    let took = killed.elapsed();
    assert!(
        adopted.is_some(),
        "the survivor never took over:\n{}",
        survivor.log()
    );
    assert!(
        took < Duration::from_secs(20),
        "the survivor took {took:?} to apply a change made after the kill"
    );
    eprintln!(
        "kill -9 of the leader after {written_before} of {N} writes: a change made after it \
         applied in {took:?}"
    );
    let converged = eventually(Duration::from_secs(20), || {
        pair.values().values().filter(|v| *v == "2").count() == N
    });
    assert!(converged.is_some(), "{}", survivor.log());
    assert_eq!(survivor.status()["replica"]["role"], "leader");
    assert_eq!(pair.holder(), if holder == "a" { "b" } else { "a" });

    // Every object was written exactly once for revision 2, by one replica or the
    // other: counted once the watch has seen each object at its current version.
    let jsonpath =
        r#"jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion}{"\n"}{end}"#;
    let live: BTreeMap<String, String> = pair
        .env
        .kubectl(&["get", "configmaps", "-n", &pair.env.ns, "-o", jsonpath])
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.starts_with("cm-"))
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect();
    let caught_up = eventually(Duration::from_secs(60), || recorder.caught_up(&live));
    assert!(
        caught_up.is_some(),
        "the watch never saw every ConfigMap at its current version: {} events",
        recorder.records().len()
    );
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, name, value) in recorder.events() {
        if kind == "MODIFIED" && name.starts_with("cm-") {
            assert_eq!(value, "2", "{name} was written with {value:?}");
            *writes.entry(name).or_default() += 1;
        }
    }
    assert_eq!(writes.len(), N);
    let twice: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
}

#[test]
fn sigterm_hands_the_lease_over_at_once() {
    let pair = Pair::new("leader-sigterm");
    pair.manifests.write("all.yaml", &many(3, "1"));
    let mut a = pair.start("a");
    let mut b = pair.start("b");
    let holder = pair.holder();
    let (leader, follower) = match holder.as_str() {
        "a" => (&mut a, &b),
        _ => (&mut b, &a),
    };
    let terminated = Instant::now();
    let (status, _) = leader.terminate();
    assert!(status.success(), "{}", leader.log());
    let took_over = eventually(Duration::from_secs(20), || {
        follower.status()["replica"]["role"] == "leader"
    });
    let took = terminated.elapsed();
    assert!(took_over.is_some(), "{}", follower.log());
    eprintln!("SIGTERM handover took {took:?}");
    assert!(took < Duration::from_secs(3), "the handover took {took:?}");
    assert!(
        leader.log().contains("released the Lease"),
        "{}",
        leader.log()
    );
    let transitions = pair.lease_field("{.spec.leaseTransitions}");
    assert_eq!(transitions.as_deref(), Some("1"));

    pair.manifests.write("all.yaml", &many(3, "2"));
    let applied = eventually(Duration::from_secs(10), || {
        pair.values().values().all(|v| v == "2")
    });
    assert!(applied.is_some(), "{}", follower.log());
}
