//! `converge run` with directory sources against the real control plane: changes
//! applied at once, drift healed or reported, broken revisions that change nothing,
//! clean shutdown, metrics, and a steady state that sends no requests.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, assert_success, configmap, eventually, prometheus};
use std::collections::BTreeMap;
use std::time::Duration;

/// A test's namespace and the directory its daemon's source reads.
struct Setup {
    env: TestEnv,
    manifests: Manifests,
}

impl Setup {
    fn new(test: &str) -> Self {
        Setup {
            env: TestEnv::new(test),
            manifests: Manifests::new(),
        }
    }

    fn write(&self, file: &str, text: &str) {
        self.manifests.write(file, text);
    }

    fn start(&self, drift: Drift, interval: &str, args: &[&str]) -> Daemon {
        let config = dir_config(self.manifests.path(), interval, drift);
        let daemon = Daemon::start(&self.env, &config, args);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    /// Waits until the ConfigMap's `value` is `value`; fails with the daemon's log.
    fn wait_for_value(&self, daemon: &Daemon, configmap: &str, value: &str) -> Duration {
        let waited = self
            .env
            .wait_configmap_value(configmap, value, Duration::from_secs(10));
        waited.unwrap_or_else(|| panic!("{configmap} never became {value}:\n{}", daemon.log()))
    }

    /// Waits until the ConfigMap exists (or, `present` false, is gone).
    fn wait_for_presence(&self, daemon: &Daemon, configmap: &str, present: Presence) -> Duration {
        let want = matches!(present, Presence::Exists);
        let waited = eventually(Duration::from_secs(10), || {
            self.env.configmap_value(configmap).is_some() == want
        });
        let waited = waited.map(|w| w.after);
        waited.unwrap_or_else(|| panic!("{configmap} never {present:?}:\n{}", daemon.log()))
    }

    fn value_of(&self, configmap: &str) -> Option<String> {
        self.env.configmap_value(configmap)
    }

    fn resource_version(&self, configmap: &str) -> String {
        let jsonpath = "jsonpath={.metadata.resourceVersion}";
        let ns = self.env.ns.as_str();
        self.env
            .kubectl(&["get", "configmap", configmap, "-n", ns, "-o", jsonpath])
    }
}

#[derive(Debug, Clone, Copy)]
enum Presence {
    Exists,
    Gone,
}

#[test]
fn directory_changes_are_applied_at_once() {
    let setup = Setup::new("daemon-dir");
    setup.write("a.yaml", &configmap("a", "1"));
    let daemon = setup.start(Drift::Heal, "1h", &[]);
    assert_eq!(setup.value_of("a").as_deref(), Some("1"));
    assert_eq!(daemon.source()["result"], "synced");

    setup.write("b.yaml", &configmap("b", "2"));
    let created = setup.wait_for_value(&daemon, "b", "2");
    println!("a new file was applied after {created:?}");

    setup.write("a.yaml", &configmap("a", "changed"));
    let changed = setup.wait_for_value(&daemon, "a", "changed");
    println!("a changed file was applied after {changed:?}");

    setup.manifests.remove("b.yaml");
    let pruned = setup.wait_for_presence(&daemon, "b", Presence::Gone);
    println!("a removed file was pruned after {pruned:?}");
    assert!(
        created < Duration::from_secs(5),
        "applied after {created:?}"
    );
}

#[test]
fn drift_is_healed_at_once() {
    let setup = Setup::new("daemon-heal");
    setup.write("a.yaml", &configmap("a", "desired"));
    let daemon = setup.start(Drift::Heal, "1h", &[]);
    let ns = setup.env.ns.as_str();
    setup.env.edit_configmap_value("a", "edited");
    let healed = setup.wait_for_value(&daemon, "a", "desired");
    println!("an out-of-band patch was healed after {healed:?}");

    setup.env.kubectl(&["delete", "configmap", "a", "-n", ns]);
    let recreated = setup.wait_for_presence(&daemon, "a", Presence::Exists);
    println!("a deleted object was re-created after {recreated:?}");
    assert_eq!(setup.value_of("a").as_deref(), Some("desired"));
    assert!(daemon.metric("converge_apply_actions_total") >= 1.0);
}

/// Each apply is news on the source's ApplySet parent, `converge-<source>`, where
/// `kubectl describe configmap converge-<source>` shows it.
#[test]
fn applied_events_are_posted_on_the_applyset_parent() {
    let setup = Setup::new("daemon-events");
    setup.write("a.yaml", &configmap("a", "1"));
    let daemon = setup.start(Drift::Heal, "1h", &[]);
    let ns = setup.env.ns.as_str();
    let parent = format!("converge-{ns}");
    let selector = format!("involvedObject.name={parent}");
    let applied = eventually(Duration::from_secs(10), || {
        let events = setup.env.kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ]);
        let events: serde_json::Value = serde_json::from_str(&events).expect("events are JSON");
        let items = events["items"].as_array()?.clone();
        items.into_iter().find(|e| e["reason"] == "Applied")
    });
    let event = applied
        .unwrap_or_else(|| panic!("no Applied event on {parent}:\n{}", daemon.log()))
        .value;
    let involved = &event["involvedObject"];
    assert_eq!(involved["kind"], "ConfigMap", "{event:#}");
    assert_eq!(involved["name"], parent.as_str(), "{event:#}");
    assert_eq!(involved["namespace"], ns, "{event:#}");
    assert_eq!(event["type"], "Normal", "{event:#}");
    // The Event is about an object that exists: the parent the daemon applied.
    let name = setup.env.kubectl(&[
        "get",
        "configmap",
        &parent,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.name}",
    ]);
    assert_eq!(name, parent);
}

#[test]
fn report_only_shows_drift_with_its_diff() {
    let setup = Setup::new("daemon-report");
    let ns = setup.env.ns.clone();
    setup.write("a.yaml", &configmap("a", "desired"));
    // Report-only never writes: create the objects first, as the same ApplySet.
    let out = setup
        .env
        .converge_command()
        .args(["apply", setup.manifests.arg(), "-n", &ns, "--name", &ns])
        .output()
        .expect("converge apply");
    assert_success("converge apply", &out);
    let daemon = setup.start(Drift::Report, "1h", &[]);
    assert_eq!(daemon.source()["result"], "synced");

    setup.env.edit_configmap_value("a", "edited");
    let drifted = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "drifted").then_some(source)
    });
    let source = drifted
        .unwrap_or_else(|| panic!("drift never reported:\n{}", daemon.log()))
        .value;
    let object = &source["objects"][0];
    assert_eq!(object["state"], "drifted", "{source:#}");
    let diff = object["diff"].as_str().expect("a diff");
    assert!(
        diff.contains("-  value: edited") && diff.contains("+  value: desired"),
        "{diff}"
    );
    assert_eq!(
        setup.value_of("a").as_deref(),
        Some("edited"),
        "report-only must not heal"
    );

    let status = setup
        .env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("converge status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "drift exits 1: {table}");
    assert!(
        table.contains("drifted") && table.contains("+  value: desired"),
        "{table}"
    );
}

#[test]
fn a_broken_revision_keeps_the_last_good_state() {
    let setup = Setup::new("daemon-broken");
    setup.write("a.yaml", &configmap("a", "good"));
    let daemon = setup.start(Drift::Heal, "1h", &[]);
    let before = setup.resource_version("a");

    setup.write("a.yaml", &configmap("a", "next"));
    // The flow sequence opened on line 4 is found unclosed on line 5.
    setup.write(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    let failed = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed").then_some(source)
    });
    let source = failed
        .unwrap_or_else(|| panic!("failure never reported:\n{}", daemon.log()))
        .value;
    let error = source["error"].as_str().expect("an error");
    assert!(
        error.contains("broken.yaml:5: invalid YAML"),
        "names the file and line: {error}"
    );
    assert!(
        source["revision"].as_str().is_some(),
        "the last good revision is still reported"
    );
    assert_eq!(
        before,
        setup.resource_version("a"),
        "a broken revision must not half-apply"
    );

    setup.manifests.remove("broken.yaml");
    setup.wait_for_value(&daemon, "a", "next");
    assert_eq!(daemon.source()["result"], "synced");
}

#[test]
fn metrics_move_with_work_and_sigterm_exits_cleanly() {
    let setup = Setup::new("daemon-metrics");
    setup.write("a.yaml", &configmap("a", "1"));
    let mut daemon = setup.start(Drift::Heal, "1h", &[]);
    let text = daemon.metrics();
    let reconciles = prometheus::sum(&text, "converge_reconciles_total");
    let actions = prometheus::sum(&text, "converge_apply_actions_total");
    assert!(reconciles >= 1.0 && actions >= 1.0, "{text}");

    setup.write("b.yaml", &configmap("b", "2"));
    let moved = eventually(Duration::from_secs(10), || {
        daemon.metric("converge_apply_actions_total") > actions
    });
    assert!(
        moved.is_some(),
        "apply actions did not move:\n{}",
        daemon.metrics()
    );
    assert!(daemon.metric("converge_reconciles_total") > reconciles);

    let (status, took) = daemon.terminate();
    println!("SIGTERM: exited with {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Requests sent to the API server so far, by verb (every verb the client counts,
/// watches included).
fn requests_by_verb(daemon: &Daemon) -> BTreeMap<String, f64> {
    let text = daemon.metrics();
    prometheus::samples(&text)
        .iter()
        .filter(|s| s.name == "converge_api_requests_total")
        .map(|s| (s.label("verb").expect("a verb label").to_string(), s.value))
        .collect()
}

/// Nothing changes ⇒ no request of any kind (no writes, GETs, lists, dry-runs or new
/// watches), even though the resync timer (1 s here) keeps running reconciles.
#[test]
fn steady_state_sends_no_requests() {
    let setup = Setup::new("daemon-idle");
    for i in 0..5 {
        setup.write(&format!("cm{i}.yaml"), &configmap(&format!("cm{i}"), "v"));
    }
    setup.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    );
    setup.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n",
    );
    let daemon = setup.start(Drift::Heal, "1s", &[]);
    // Settled: a whole resync went by without a request (the first ones warm what
    // the daemon remembers of its objects, and its watches open).
    let reconciles = || daemon.metric("converge_reconciles_total{source=");
    let settled = eventually(Duration::from_secs(60), || {
        let (requests, count) = (requests_by_verb(&daemon), reconciles());
        let resynced = eventually(Duration::from_secs(10), || reconciles() > count);
        resynced.is_some() && requests_by_verb(&daemon) == requests
    });
    assert!(
        settled.is_some(),
        "no resync went by without a request:\n{}",
        daemon.log()
    );
    let before = requests_by_verb(&daemon);
    // The daemon watches what it applies: a watch is a request, counted like any other.
    assert!(
        before.get("watch").is_some_and(|n| *n >= 1.0),
        "watches are not counted: {before:?}"
    );
    let idle_from = reconciles();
    std::thread::sleep(Duration::from_secs(5));
    let after = requests_by_verb(&daemon);
    let resyncs = reconciles() - idle_from;
    println!(
        "idle 5 s: {resyncs} resync reconciles; requests by verb before {before:?} after {after:?}"
    );
    assert!(
        resyncs >= 3.0,
        "the resync timer must keep running ({resyncs})"
    );
    assert_eq!(before, after, "requests sent while idle:\n{}", daemon.log());
}

#[test]
fn run_dry_run_reports_and_never_writes() {
    let setup = Setup::new("daemon-dry-run");
    setup.write("a.yaml", &configmap("a", "1"));
    let daemon = setup.start(Drift::Heal, "1h", &["--dry-run"]);
    let source = daemon.source();
    assert_eq!(source["result"], "drifted", "{source:#}");
    assert_eq!(source["objects"][0]["state"], "missing");
    assert!(setup.value_of("a").is_none(), "--dry-run wrote an object");
    let events = setup
        .env
        .kubectl(&["get", "events", "-n", &setup.env.ns, "-o", "name"]);
    assert!(
        events.trim().is_empty(),
        "--dry-run posted events: {events}"
    );
}

/// A reconcile costs what changed: after the first (full) one, a drifted object
/// or a changed file is reconciled alone; an added file takes a full reconcile,
/// which is what may prune or record a new kind.
#[test]
fn reconciles_look_only_at_what_changed() {
    let setup = Setup::new("daemon-targeted");
    for i in 0..10 {
        setup.write(&format!("{i}.yaml"), &configmap(&format!("c{i}"), "1"));
    }
    let daemon = setup.start(Drift::Heal, "1h", &[]);
    let looked_at = || daemon.metric("converge_reconciled_objects_total");
    assert_eq!(looked_at(), 10.0, "the first reconcile is full");

    setup.env.edit_configmap_value("c3", "edited");
    setup.wait_for_value(&daemon, "c3", "1");
    assert!(
        eventually(Duration::from_secs(5), || looked_at() == 11.0).is_some(),
        "drift on one object looks at that object: {}\n{}",
        looked_at(),
        daemon.log()
    );

    setup.write("5.yaml", &configmap("c5", "2"));
    setup.wait_for_value(&daemon, "c5", "2");
    assert!(
        eventually(Duration::from_secs(5), || looked_at() == 12.0).is_some(),
        "a one-object commit looks at that object: {}",
        looked_at()
    );
    assert_eq!(
        daemon.source()["objects"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(daemon.source()["result"], "synced");

    setup.write("new.yaml", &configmap("added", "1"));
    setup.wait_for_value(&daemon, "added", "1");
    assert!(
        eventually(Duration::from_secs(5), || looked_at() == 23.0).is_some(),
        "an added file takes a full reconcile: {}",
        looked_at()
    );
    assert!(
        daemon.log().contains("scope=\"targeted\"") || daemon.log().contains("scope=targeted"),
        "{}",
        daemon.log()
    );
}
