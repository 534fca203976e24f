//! `converge run` with directory sources against the real control plane: changes
//! applied at once, drift healed or reported, broken revisions that change nothing,
//! clean shutdown, metrics, and a steady state that sends no requests.

use crate::common::TestEnv;
use crate::common::daemon::{Daemon, time_until};
use std::path::Path;
use std::time::Duration;

/// A directory source with its own config; `{dir}`/`{state}` are filled in.
fn dir_config(dir: &Path, state: &Path, self_heal: bool, interval: &str) -> String {
    format!(
        r#"state_dir = "{state}"

[[source]]
name = "{{ns}}"
dir = "{dir}"
namespace = "{{ns}}"
interval = "{interval}"
prune = true
self_heal = {self_heal}
"#,
        dir = dir.display(),
        state = state.display(),
    )
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{value: '{value}'}}\n"
    )
}

struct Setup {
    env: TestEnv,
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Setup {
    fn new(test: &str) -> Self {
        Setup {
            env: TestEnv::new(test),
            dir: tempfile::tempdir().expect("tempdir"),
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).expect("write manifest");
    }

    fn start(&self, self_heal: bool, interval: &str, args: &[&str]) -> Daemon {
        let config = dir_config(self.dir.path(), self.state.path(), self_heal, interval);
        let daemon = Daemon::start(&self.env, &config, args);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    /// Waits until the ConfigMap's `value` is `value`; fails with the daemon's log.
    fn wait_for_value(&self, daemon: &Daemon, configmap: &str, value: &str) -> Duration {
        time_until(Duration::from_secs(10), || {
            self.value_of(configmap).as_deref() == Some(value)
        })
        .unwrap_or_else(|| panic!("{configmap} never became {value}:\n{}", daemon.log()))
    }

    /// An out-of-band edit of a ConfigMap's `value`, as a person would make it.
    fn edit_live(&self, configmap: &str) {
        let patch = r#"{"data":{"value":"edited"}}"#;
        let ns = self.env.ns.as_str();
        self.env
            .kubectl(&["patch", "configmap", configmap, "-n", ns, "-p", patch]);
    }

    fn value_of(&self, configmap: &str) -> Option<String> {
        let out = self.env.kubectl_output(
            &[
                "get",
                "configmap",
                configmap,
                "-n",
                &self.env.ns,
                "-o",
                "jsonpath={.data.value}",
            ],
            None,
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn directory_changes_are_applied_at_once() {
    let setup = Setup::new("daemon-dir");
    setup.write("a.yaml", &configmap("a", "1"));
    let daemon = setup.start(true, "1h", &[]);
    assert_eq!(setup.value_of("a").as_deref(), Some("1"));
    assert_eq!(daemon.source()["result"], "synced");

    setup.write("b.yaml", &configmap("b", "2"));
    let created = time_until(Duration::from_secs(10), || setup.value_of("b").is_some());
    let created = created.unwrap_or_else(|| panic!("b.yaml was never applied:\n{}", daemon.log()));
    println!("a new file was applied after {created:?}");

    setup.write("a.yaml", &configmap("a", "changed"));
    let changed = time_until(Duration::from_secs(10), || {
        setup.value_of("a").as_deref() == Some("changed")
    });
    println!(
        "a changed file was applied after {:?}",
        changed.expect("a.yaml change applied")
    );

    std::fs::remove_file(setup.dir.path().join("b.yaml")).expect("remove b.yaml");
    let pruned = time_until(Duration::from_secs(10), || setup.value_of("b").is_none());
    println!(
        "a removed file was pruned after {:?}",
        pruned.expect("b pruned")
    );
    assert!(
        created < Duration::from_secs(5),
        "applied after {created:?}"
    );
}

#[test]
fn drift_is_healed_at_once() {
    let setup = Setup::new("daemon-heal");
    setup.write("a.yaml", &configmap("a", "desired"));
    let daemon = setup.start(true, "1h", &[]);
    let ns = setup.env.ns.as_str();
    setup.edit_live("a");
    let healed = time_until(Duration::from_secs(10), || {
        setup.value_of("a").as_deref() == Some("desired")
    });
    let healed = healed.unwrap_or_else(|| panic!("never healed:\n{}", daemon.log()));
    println!("an out-of-band patch was healed after {healed:?}");

    setup.env.kubectl(&["delete", "configmap", "a", "-n", ns]);
    let recreated = time_until(Duration::from_secs(10), || setup.value_of("a").is_some());
    println!(
        "a deleted object was re-created after {:?}",
        recreated.expect("re-created")
    );
    assert!(daemon.metric("converge_apply_actions_total") >= 1.0);
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
        .args([
            "apply",
            setup.dir.path().to_str().expect("utf-8"),
            "-n",
            &ns,
            "--name",
            &ns,
        ])
        .output()
        .expect("converge apply");
    crate::common::assert_success("converge apply", &out);
    let daemon = setup.start(false, "1h", &[]);
    assert_eq!(daemon.source()["result"], "synced");

    setup.env.kubectl(&[
        "patch",
        "configmap",
        "a",
        "-n",
        &ns,
        "-p",
        r#"{"data":{"value":"edited"}}"#,
    ]);
    let drifted = crate::common::eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "drifted").then_some(source)
    });
    let source = drifted.unwrap_or_else(|| panic!("drift never reported:\n{}", daemon.log()));
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
    let daemon = setup.start(true, "1h", &[]);
    let before = setup.env.kubectl(&[
        "get",
        "configmap",
        "a",
        "-n",
        &setup.env.ns,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);

    setup.write("a.yaml", &configmap("a", "next"));
    setup.write(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    let failed = crate::common::eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed").then_some(source)
    });
    let source = failed.unwrap_or_else(|| panic!("failure never reported:\n{}", daemon.log()));
    let error = source["error"].as_str().expect("an error");
    assert!(
        error.contains("broken.yaml:"),
        "names the file and line: {error}"
    );
    assert!(
        source["revision"].as_str().is_some(),
        "the last good revision is still reported"
    );
    let after = setup.env.kubectl(&[
        "get",
        "configmap",
        "a",
        "-n",
        &setup.env.ns,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(before, after, "a broken revision must not half-apply");

    std::fs::remove_file(setup.dir.path().join("broken.yaml")).expect("remove");
    let recovered = time_until(Duration::from_secs(10), || {
        setup.value_of("a").as_deref() == Some("next")
    });
    assert!(recovered.is_some(), "never recovered:\n{}", daemon.log());
    assert_eq!(daemon.source()["result"], "synced");
}

/// Every sample line of the Prometheus text format: `name{labels} value`.
fn assert_prometheus_text(text: &str) {
    assert!(text.contains("# TYPE"), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
    }
}

#[test]
fn metrics_move_with_work_and_sigterm_exits_cleanly() {
    let setup = Setup::new("daemon-metrics");
    setup.write("a.yaml", &configmap("a", "1"));
    let mut daemon = setup.start(true, "1h", &[]);
    let (code, text) = daemon.get("/metrics");
    assert_eq!(code, 200);
    assert_prometheus_text(&text);
    let reconciles = daemon.metric("converge_reconciles_total");
    let actions = daemon.metric("converge_apply_actions_total");
    assert!(reconciles >= 1.0 && actions >= 1.0, "{text}");

    setup.write("b.yaml", &configmap("b", "2"));
    let moved = time_until(Duration::from_secs(10), || {
        daemon.metric("converge_apply_actions_total") > actions
    });
    assert!(
        moved.is_some(),
        "apply actions did not move:\n{}",
        daemon.get("/metrics").1
    );
    assert!(daemon.metric("converge_reconciles_total") > reconciles);
    assert_prometheus_text(&daemon.get("/metrics").1);

    let (status, took) = daemon.terminate();
    println!("SIGTERM: exited with {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Nothing changes ⇒ no writes, no per-object GETs, lists or dry-runs, even though
/// the resync timer (1 s here) keeps running reconciles.
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
    let daemon = setup.start(true, "1s", &[]);
    std::thread::sleep(Duration::from_secs(3)); // let the first resyncs and watches settle
    let verbs = ["get", "list", "dry-run", "apply", "create", "delete"];
    let count =
        |verb: &str| daemon.metric(&format!("converge_api_requests_total{{verb=\"{verb}\"}}"));
    let before: Vec<f64> = verbs.iter().map(|v| count(v)).collect();
    let reconciles = daemon.metric("converge_reconciles_total{source=");
    std::thread::sleep(Duration::from_secs(5));
    let after: Vec<f64> = verbs.iter().map(|v| count(v)).collect();
    let resyncs = daemon.metric("converge_reconciles_total{source=") - reconciles;
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
    let daemon = setup.start(true, "1h", &["--dry-run"]);
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
    let daemon = setup.start(true, "1h", &[]);
    let looked_at = || daemon.metric("converge_reconciled_objects_total");
    assert_eq!(looked_at(), 10.0, "the first reconcile is full");

    setup.edit_live("c3");
    setup.wait_for_value(&daemon, "c3", "1");
    assert!(
        time_until(Duration::from_secs(5), || looked_at() == 11.0).is_some(),
        "drift on one object looks at that object: {}\n{}",
        looked_at(),
        daemon.log()
    );

    setup.write("5.yaml", &configmap("c5", "2"));
    setup.wait_for_value(&daemon, "c5", "2");
    assert!(
        time_until(Duration::from_secs(5), || looked_at() == 12.0).is_some(),
        "a one-object commit looks at that object: {}",
        looked_at()
    );
    assert_eq!(
        daemon.source()["objects"].as_array().map(Vec::len),
        Some(10)
    );
    assert_eq!(daemon.source()["result"], "synced");

    setup.write("new.yaml", &configmap("n", "1"));
    let created = time_until(Duration::from_secs(10), || setup.value_of("n").is_some());
    created.unwrap_or_else(|| panic!("never created:\n{}", daemon.log()));
    assert!(
        time_until(Duration::from_secs(5), || looked_at() == 23.0).is_some(),
        "an added file takes a full reconcile: {}",
        looked_at()
    );
    assert!(
        daemon.log().contains("scope=\"targeted\"") || daemon.log().contains("scope=targeted"),
        "{}",
        daemon.log()
    );
}
