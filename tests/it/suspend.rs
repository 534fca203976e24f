//! `converge suspend` and `converge resume` against a real control plane: a
//! suspended source writes nothing (the API server's audit log says so) while
//! `/status` shows who suspended it, why, and the drift it does not heal; resuming
//! converges at once. The suspension is kept on the ApplySet parent, so it holds
//! across a daemon restart and a leader failover; a follower refuses and names the
//! leader.

use crate::common::audit::{AuditEvent, Identity};
use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, configmap, describe, eventually};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};

const REASON: &str = "incident 4711: hands off";

/// Two ConfigMaps in one file: `cm-a` and `cm-b`, both with `value`.
fn two(value: &str) -> String {
    format!(
        "{}---\n{}",
        configmap("cm-a", value),
        configmap("cm-b", value)
    )
}

/// Starts a daemon on `manifests` as the audited `identity`, ready.
fn start(env: &TestEnv, manifests: &Manifests, identity: &Identity, extra: &[&str]) -> Daemon {
    start_config(
        env,
        &dir_config(manifests.path(), "1h", Drift::Heal),
        identity,
        extra,
    )
}

fn start_config(env: &TestEnv, config: &str, identity: &Identity, extra: &[&str]) -> Daemon {
    let vars = [("KUBECONFIG", identity.kubeconfig_arg())];
    let daemon = Daemon::start_with_env(env, config, extra, &vars);
    daemon.wait_ready(Duration::from_secs(30));
    daemon
}

/// The identity's writes in `ns` received from `from` on (Lease renewals aside).
fn writes_since(identity: &Identity, ns: &str, from: SystemTime) -> Vec<AuditEvent> {
    identity
        .events(ns)
        .into_iter()
        .filter(|e| e.is_write() && e.resource != "leases" && e.received_at() >= from)
        .collect()
}

/// The state of object `name` in the daemon's first source, as `/status` says.
fn object_state(source: &Value, name: &str) -> Option<String> {
    let objects = source["objects"].as_array()?;
    let object = objects.iter().find(|o| {
        o["object"]
            .as_str()
            .is_some_and(|n| n.ends_with(&format!("/{name}")))
    })?;
    object["state"].as_str().map(str::to_owned)
}

/// Waits until `/status` shows the source suspended and every one of `names`
/// drifted: the daemon has seen and compared the changes (report-only).
fn wait_suspended_drift(daemon: &Daemon, names: &[&str]) -> Value {
    let seen = eventually(Duration::from_secs(30), || {
        let source = daemon.source();
        let drifted = names
            .iter()
            .all(|n| object_state(&source, n).as_deref() == Some("drifted"));
        (drifted && !source["suspended"].is_null()).then_some(source)
    });
    seen.unwrap_or_else(|| {
        panic!(
            "/status never showed the suspended source's drift of {names:?}: {}\n{}",
            daemon.source(),
            daemon.log()
        )
    })
    .value
}

fn suspend(daemon: &Daemon, env: &TestEnv) {
    let out = daemon.converge(
        env,
        &["suspend", &env.ns, "--reason", REASON, "--by", "ana"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("suspended by ana") && said.contains(REASON),
        "{said}"
    );
}

/// Resumes and returns how long until `cm-a` is `want_a` and `cm-b` is `want_b`.
fn resume_and_time(daemon: &Daemon, env: &TestEnv, want_a: &str, want_b: &str) -> Duration {
    let started = Instant::now();
    let out = daemon.converge(env, &["resume", &env.ns]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let converged = eventually(Duration::from_secs(10), || {
        env.configmap_value("cm-a").as_deref() == Some(want_a)
            && env.configmap_value("cm-b").as_deref() == Some(want_b)
    });
    assert!(
        converged.is_some(),
        "not converged after resume:\n{}",
        daemon.log()
    );
    started.elapsed()
}

#[test]
fn a_suspended_source_writes_nothing_reports_drift_and_resumes_at_once() {
    let env = TestEnv::new("suspend-resume");
    let manifests = Manifests::with("all.yaml", &two("1"));
    let identity = Identity::new(&env, &format!("suspend-{}", env.ns));
    let daemon = start(&env, &manifests, &identity, &[]);
    assert_eq!(env.configmap_value("cm-a").as_deref(), Some("1"));

    suspend(&daemon, &env);
    let suspended_at = SystemTime::now();
    manifests.write(
        "all.yaml",
        &format!("{}---\n{}", configmap("cm-a", "2"), configmap("cm-b", "1")),
    );
    env.edit_configmap_value("cm-b", "edited");
    let source = wait_suspended_drift(&daemon, &["cm-a", "cm-b"]);
    assert_eq!(source["suspended"]["by"], "ana", "{source}");
    assert_eq!(source["suspended"]["reason"], REASON, "{source}");
    assert!(source["suspended"]["at"].is_string(), "{source}");
    let status = daemon.converge(&env, &["status"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "drifted: {}",
        describe(&status)
    );
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("suspended by ana") && table.contains(REASON),
        "{table}"
    );
    let refused = daemon.converge(&env, &["reconcile", &env.ns]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is suspended by ana"),
        "{}",
        describe(&refused)
    );
    assert_eq!(env.configmap_value("cm-a").as_deref(), Some("1"));
    assert_eq!(env.configmap_value("cm-b").as_deref(), Some("edited"));

    let resumed_at = SystemTime::now();
    let took = resume_and_time(&daemon, &env, "2", "1");
    eprintln!("resume → both converged in {took:?}");
    assert!(took < Duration::from_secs(3), "resume took {took:?}");
    let during: Vec<AuditEvent> = writes_since(&identity, &env.ns, suspended_at)
        .into_iter()
        .filter(|e| e.received_at() < resumed_at)
        .collect();
    assert!(during.is_empty(), "written while suspended: {during:#?}");
    assert!(
        !writes_since(&identity, &env.ns, resumed_at).is_empty(),
        "the audit log saw no write after resume: is the identity audited?"
    );
    assert!(daemon.source()["suspended"].is_null());
}

#[test]
fn a_suspension_survives_a_restart_of_the_daemon() {
    let env = TestEnv::new("suspend-restart");
    let manifests = Manifests::with("all.yaml", &two("1"));
    let identity = Identity::new(&env, &format!("suspend-restart-{}", env.ns));
    let mut daemon = start(&env, &manifests, &identity, &[]);
    suspend(&daemon, &env);
    let suspended_at = SystemTime::now();
    let (status, _) = daemon.terminate();
    assert!(status.success(), "{status}");
    let annotation = env.kubectl(&[
        "get",
        "configmap",
        &format!("converge-{}", env.ns),
        "-n",
        &env.ns,
        "-o",
        r"jsonpath={.metadata.annotations.converge\.dev/suspended}",
    ]);
    assert!(annotation.contains(REASON), "on the parent: {annotation:?}");

    env.edit_configmap_value("cm-b", "edited");
    let daemon = start(&env, &manifests, &identity, &[]);
    let source = wait_suspended_drift(&daemon, &["cm-b"]);
    assert_eq!(source["suspended"]["reason"], REASON, "{source}");
    let resumed_at = SystemTime::now();
    let during: Vec<AuditEvent> = writes_since(&identity, &env.ns, suspended_at);
    assert!(during.is_empty(), "written while suspended: {during:#?}");
    let took = resume_and_time(&daemon, &env, "1", "1");
    eprintln!("resume after a restart → converged in {took:?}");
    assert!(!writes_since(&identity, &env.ns, resumed_at).is_empty());
}

#[test]
fn a_suspension_survives_a_leader_failover_and_a_follower_names_the_leader() {
    let env = TestEnv::new("suspend-failover");
    let manifests = Manifests::with("all.yaml", &two("1"));
    let config = format!(
        "{}\n[leader_election]\nnamespace = \"{{ns}}\"\n",
        dir_config(manifests.path(), "1h", Drift::Heal)
    );
    let ids = [
        Identity::new(&env, &format!("suspend-a-{}", env.ns)),
        Identity::new(&env, &format!("suspend-b-{}", env.ns)),
    ];
    let mut a = start_config(&env, &config, &ids[0], &["--leader-elect", "--id", "a"]);
    let mut b = start_config(&env, &config, &ids[1], &["--leader-elect", "--id", "b"]);
    let holder = eventually(Duration::from_secs(30), || {
        let role = |d: &Daemon| d.status()["replica"]["role"].as_str() == Some("leader");
        if role(&a) {
            Some("a")
        } else if role(&b) {
            Some("b")
        } else {
            None
        }
    })
    .expect("nobody leads")
    .value;
    let (leader, follower, follower_id) = match holder {
        "a" => (&mut a, &b, &ids[1]),
        _ => (&mut b, &a, &ids[0]),
    };
    let refused = follower.converge(&env, &["suspend", &env.ns]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains(&format!("the leader is {holder}")), "{said}");

    suspend(leader, &env);
    let suspended_at = SystemTime::now();
    // The follower reads the suspension before its next (report-only) reconcile.
    env.edit_configmap_value("cm-b", "edited");
    let seen = wait_suspended_drift(follower, &["cm-b"]);
    assert_eq!(seen["suspended"]["by"], "ana", "{seen}");
    leader.kill();
    let other = if holder == "a" { "b" } else { "a" };
    let took_over = eventually(Duration::from_secs(40), || {
        follower.status()["replica"]["role"].as_str() == Some("leader")
    });
    assert!(
        took_over.is_some(),
        "{other} never led:\n{}",
        follower.log()
    );
    // Drift seen after the takeover is seen by the new leader's own reconciles.
    env.edit_configmap_value("cm-a", "edited");
    let source = wait_suspended_drift(follower, &["cm-a", "cm-b"]);
    assert_eq!(source["owner"], other, "{source}");
    assert_eq!(source["suspended"]["reason"], REASON, "{source}");
    let during = writes_since(follower_id, &env.ns, suspended_at);
    assert!(
        during.is_empty(),
        "the new leader wrote while suspended: {during:#?}"
    );
    assert_eq!(env.configmap_value("cm-a").as_deref(), Some("edited"));
    let took = resume_and_time(follower, &env, "1", "1");
    eprintln!("resume on the new leader → converged in {took:?}");
}

/// A PersistentVolumeClaim of a storage class nobody provides: pending, so
/// progressing, for ever.
const PENDING_CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\n\
    metadata: {name: never-bound}\n\
    spec: {storageClassName: converge-none, accessModes: [ReadWriteOnce], \
    resources: {requests: {storage: 1Mi}}}\n";

#[test]
fn suspending_stops_a_reconcile_that_waits_for_a_wave() {
    let env = TestEnv::new("suspend-mid-wave");
    let after = configmap("after", "1").replace(
        "metadata: {name: after}",
        "metadata: {name: after, annotations: {converge.dev/wave: '1'}}",
    );
    let manifests = Manifests::with("claim.yaml", PENDING_CLAIM);
    manifests.write("after.yaml", &after);
    let identity = Identity::new(&env, &format!("suspend-wave-{}", env.ns));
    let vars = [("KUBECONFIG", identity.kubeconfig_arg())];
    let config = dir_config(manifests.path(), "1h", Drift::Heal);
    let daemon = Daemon::start_with_env(&env, &config, &[], &vars);
    // Wave 0 is written; the reconcile now waits (up to 5m) for the claim.
    let claim = ["get", "persistentvolumeclaim", "never-bound", "-n", &env.ns];
    let written = eventually(Duration::from_secs(30), || {
        env.kubectl_output(&claim, None).status.success()
    });
    assert!(written.is_some(), "wave 0 never written:\n{}", daemon.log());
    assert_eq!(
        daemon.source()["result"],
        "pending",
        "still in its first reconcile"
    );

    let started = Instant::now();
    suspend(&daemon, &env);
    let took = started.elapsed();
    let suspended_at = SystemTime::now();
    eprintln!("suspend during a wave's wait answered in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "suspend waited for the wave: {took:?}"
    );
    // The report-only reconcile that follows says what wave 1 would create.
    let reported = eventually(Duration::from_secs(30), || {
        let source = daemon.source();
        (source["result"] != "pending" && !source["suspended"].is_null()).then_some(source)
    });
    let source = reported
        .unwrap_or_else(|| panic!("no report:\n{}", daemon.log()))
        .value;
    assert_eq!(
        object_state(&source, "after").as_deref(),
        Some("missing"),
        "{source}"
    );
    assert_eq!(env.configmap_value("after"), None, "wave 1 was written");
    let during = writes_since(&identity, &env.ns, suspended_at);
    assert!(during.is_empty(), "written while suspended: {during:#?}");
}
