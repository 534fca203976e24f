//! Leader election: two `converge run --leader-elect` replicas on one config, with
//! client-go's default timings (15 s lease, 10 s renew deadline, 2 s retry). One
//! holds the Lease and is the only one to write; `kill -9` of it hands the writing
//! to the other within one lease duration, without writing any object twice for
//! one revision; SIGTERM hands over at once; a leader that cannot renew (its Lease
//! writes refused, or cut from the API server by the fault proxy) stops writing a
//! renew deadline after its last renewal, before anyone may take over.

use crate::common::audit::{AuditEvent, Identity};
use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::fault_proxy::FaultProxy;
use crate::common::watch::Events;
use crate::common::{Manifests, TestEnv, configmap, eventually, kubectl_bin};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

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
        self.start_as(id, None)
    }

    /// [`Pair::start`] with another kubeconfig (an audited identity's).
    fn start_as(&self, id: &str, kubeconfig: Option<&Path>) -> Daemon {
        let config = format!(
            "{}\n[leader_election]\nnamespace = \"{{ns}}\"\n",
            dir_config(self.manifests.path(), "1h", Drift::Heal)
        );
        let args = ["--leader-elect", "--id", id];
        let kubeconfig = kubeconfig.map(|k| k.to_str().expect("a UTF-8 kubeconfig path"));
        let vars: Vec<(&str, &str)> = kubeconfig.map(|k| ("KUBECONFIG", k)).into_iter().collect();
        let daemon = Daemon::start_with_env(&self.env, &config, &args, &vars);
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

/// A ValidatingAdmissionPolicy refusing every write of one user to Leases: a leader
/// that cannot renew while everything else it sends still reaches the API server,
/// so the audit log records any write it makes past its fence. (A network partition
/// would hide those writes: they could not arrive either.) Lifted when dropped.
struct LeaseRefused<'a> {
    env: &'a TestEnv,
    name: String,
}

impl<'a> LeaseRefused<'a> {
    fn start(env: &'a TestEnv, user: &str) -> Self {
        let name = format!("refuse-lease-{}", env.ns);
        let policy = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
             metadata: {{name: {name}}}\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    \
             resourceRules:\n    - apiGroups: [coordination.k8s.io]\n      apiVersions: [\"*\"]\n      \
             operations: [CREATE, UPDATE]\n      resources: [leases]\n  validations:\n  \
             - expression: \"request.userInfo.username != '{user}'\"\n    \
             message: partitioned from its Lease\n---\n\
             apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n\
             metadata: {{name: {name}}}\nspec:\n  policyName: {name}\n  validationActions: [Deny]\n"
        );
        env.kubectl_stdin(&["apply", "-f", "-"], &policy);
        LeaseRefused { env, name }
    }

    fn lift(&self) {
        let binding = format!("validatingadmissionpolicybinding/{}", self.name);
        let policy = format!("validatingadmissionpolicy/{}", self.name);
        self.env
            .kubectl(&["delete", &binding, &policy, "--ignore-not-found"]);
    }
}

impl Drop for LeaseRefused<'_> {
    fn drop(&mut self) {
        let binding = format!("validatingadmissionpolicybinding/{}", self.name);
        let policy = format!("validatingadmissionpolicy/{}", self.name);
        let args = ["delete", &binding, &policy, "--ignore-not-found"];
        let _ = self.env.kubectl_output(&args, None);
    }
}

/// Edits ConfigMap `cm-0` out of band, over and over, until dropped: a steady
/// demand for writes (self-heals) from whichever replica leads.
struct Drifter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drifter {
    fn start(env: &TestEnv) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, ns, flag) = (env.kubeconfig.clone(), env.ns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let patch = format!(r#"{{"data":{{"value":"drift-{n}"}}}}"#);
                let _ = std::process::Command::new(kubectl_bin())
                    .args(["--kubeconfig", &kubeconfig, "patch", "configmap", "cm-0"])
                    .args(["-n", &ns, "-p", &patch])
                    .output();
                // Pacing, not settling: a few edits a second is demand enough.
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Drifter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drifter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes to anything but the Lease: objects and Events.
fn object_writes(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| e.is_write() && e.resource != "leases")
        .collect()
}

/// Successful writes of the Lease (acquire, renew, release).
fn lease_writes(events: &[AuditEvent]) -> Vec<&AuditEvent> {
    events
        .iter()
        .filter(|e| e.is_write() && e.resource == "leases" && e.succeeded())
        .collect()
}

fn since(t: SystemTime, origin: SystemTime) -> f64 {
    match t.duration_since(origin) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The time at the head of a text log line (`2026-01-01T00:00:00.000000Z  WARN …`).
fn logged_at(line: &str) -> SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    humantime::parse_rfc3339_weak(stamp).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// How the leader is cut from its Lease.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Its Lease writes are refused ([`LeaseRefused`]); all else still arrives.
    LeaseRefused,
    /// The fault proxy in front of it refuses connections: nothing arrives.
    Network,
}

#[test]
fn a_leader_that_cannot_renew_stops_writing_before_its_lease_expires() {
    leader_cut_from_its_lease("leader-fence", Cut::LeaseRefused);
}

#[test]
fn a_partitioned_leader_stops_at_its_fence_and_writes_nothing_once_healed() {
    leader_cut_from_its_lease("leader-partition", Cut::Network);
}

/// Replica a leads and heals a steady drift; it is cut from its Lease (`cut`); b
/// takes over; the cut heals and a follows b. The audit log and a's log must show a
/// stopping at its fence, a renew deadline after its last renewal, before its
/// Lease expired and b acquired it, and a writing nothing after.
fn leader_cut_from_its_lease(test: &str, cut: Cut) {
    const RENEW_DEADLINE: Duration = Duration::from_secs(10);
    const LEASE_DURATION: Duration = Duration::from_secs(15);
    // A write sent just before the fence may reach the API server this much later.
    const IN_FLIGHT: Duration = Duration::from_secs(2);
    let pair = Pair::new(test);
    pair.manifests.write("all.yaml", &many(3, "1"));
    let ids = [
        Identity::new(&pair.env, &format!("{test}-a-{}", pair.env.ns)),
        Identity::new(&pair.env, &format!("{test}-b-{}", pair.env.ns)),
    ];
    let proxy = FaultProxy::start(pair.env.apiserver_addr());
    let via = Manifests::new();
    let a_kubeconfig = match cut {
        Cut::Network => ids[0].kubeconfig_via(via.path(), &proxy.url()),
        Cut::LeaseRefused => ids[0].kubeconfig.clone(),
    };
    let a = pair.start_as("a", Some(&a_kubeconfig));
    assert_eq!(pair.holder(), "a");
    let b = pair.start_as("b", Some(&ids[1].kubeconfig));
    let following = eventually(Duration::from_secs(20), || {
        b.status()["replica"]["leader"] == "a"
    });
    assert!(following.is_some(), "{}", b.log());

    // The leader heals every edit of cm-0 while it can renew.
    let drifter = Drifter::start(&pair.env);
    let healing = eventually(Duration::from_secs(30), || {
        let events = ids[0].events(&pair.env.ns);
        let heals = object_writes(&events);
        (heals.iter().filter(|e| e.resource == "configmaps").count() >= 2).then_some(())
    });
    assert!(
        healing.is_some(),
        "the leader never healed cm-0:\n{}",
        a.log()
    );

    let refused = match cut {
        Cut::LeaseRefused => {
            let refused = LeaseRefused::start(&pair.env, &ids[0].name);
            let denied = eventually(Duration::from_secs(30), || {
                let events = ids[0].events(&pair.env.ns);
                events
                    .iter()
                    .any(|e| e.is_write() && e.resource == "leases" && !e.succeeded())
            });
            assert!(denied.is_some(), "the leader's renewals were never refused");
            Some(refused)
        }
        Cut::Network => {
            proxy.set_down(true);
            None
        }
    };
    let took_over = eventually(Duration::from_secs(40), || {
        pair.lease_field("{.spec.holderIdentity}").as_deref() == Some("b")
    });
    assert!(
        took_over.is_some(),
        "b never took over (Lease holder {:?}, renewed {:?}, proxy {:?}):\n--- a:\n{}\n--- b:\n{}",
        pair.lease_field("{.spec.holderIdentity}"),
        pair.lease_field("{.spec.renewTime}"),
        proxy.stats(),
        a.log(),
        b.log()
    );
    // b heals from then on: the demand for writes went on past the takeover.
    let b_heals = |n: usize| {
        eventually(Duration::from_secs(30), || {
            let events = ids[1].events(&pair.env.ns);
            object_writes(&events).len() >= n
        })
    };
    assert!(b_heals(2).is_some(), "b never healed cm-0:\n{}", b.log());

    // Healed: a reads the Lease again, follows b, and writes nothing.
    match &refused {
        Some(refused) => refused.lift(),
        None => proxy.set_down(false),
    }
    let healed = SystemTime::now();
    let follows = eventually(Duration::from_secs(30), || {
        a.status()["replica"]["leader"] == "b"
    });
    assert!(follows.is_some(), "a never followed b:\n{}", a.log());
    let healed_by_b = object_writes(&ids[1].events(&pair.env.ns)).len();
    assert!(b_heals(healed_by_b + 3).is_some(), "{}", b.log());
    drop(drifter);

    let (a_events, b_events) = (ids[0].events(&pair.env.ns), ids[1].events(&pair.env.ns));
    let renewed = lease_writes(&a_events)
        .last()
        .map(|e| e.received_at())
        .expect("a renewed its Lease");
    let acquired = lease_writes(&b_events)
        .first()
        .map(|e| e.received_at())
        .expect("b acquired the Lease");
    let a_writes = object_writes(&a_events);
    let last_write = a_writes.last().expect("a wrote").received_at();
    let b_first = object_writes(&b_events)
        .first()
        .expect("b wrote")
        .received_at();
    let log = a.log();
    // a says so when it demotes itself at its fence (not when it sees b's Lease).
    let stopped = log
        .lines()
        .find(|l| l.contains("not the leader: stopped writing"))
        .map(logged_at);
    eprintln!(
        "from a's last renewal: a last wrote at +{:.2}s (said it stopped at {}), b acquired \
         at +{:.2}s and wrote at +{:.2}s",
        since(last_write, renewed),
        stopped.map_or("never".into(), |t| format!("+{:.2}s", since(t, renewed))),
        since(acquired, renewed),
        since(b_first, renewed),
    );
    // The fence: nothing from a past a renew deadline after its last renewal (sent
    // before the API server received it), well before anyone may take over.
    for write in &a_writes {
        assert!(
            write.received_at() <= renewed + RENEW_DEADLINE + IN_FLIGHT,
            "a wrote {} {} {:.2}s after its last renewal, past its fence:\n{log}",
            write.verb,
            write.object(),
            since(write.received_at(), renewed)
        );
    }
    let stopped = stopped.unwrap_or_else(|| panic!("a never said it stopped writing:\n{log}"));
    assert!(
        stopped <= renewed + RENEW_DEADLINE + IN_FLIGHT,
        "a stopped leading {:.2}s after its last renewal:\n{log}",
        since(stopped, renewed)
    );
    // No two writers: b took over after a had stopped, a's Lease having run out.
    assert!(
        acquired >= renewed + LEASE_DURATION - IN_FLIGHT,
        "b acquired {:.2}s after a's last renewal",
        since(acquired, renewed)
    );
    assert!(last_write < acquired && last_write < b_first && stopped < acquired);
    assert!(last_write < healed, "a wrote after the heal");
    assert_eq!(
        log.matches("became the leader").count(),
        1,
        "a led again:\n{log}"
    );
}
