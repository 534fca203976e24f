//! `converge get sources` and `converge get objects [SOURCE]` against a running
//! daemon (`converge run`) on the control plane: the revision, result, health,
//! drift and owner replica of what is deployed, as a table and as JSON, checked
//! against kubectl's edit that caused the drift.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, configmap, describe, eventually};
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

fn get(env: &TestEnv, daemon: &Daemon, args: &[&str]) -> Output {
    env.converge_command()
        .arg("get")
        .args(args)
        .args(["--addr", &daemon.addr])
        .output()
        .expect("run converge get")
}

fn json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

#[test]
fn get_lists_sources_and_objects_with_revision_health_drift_and_owner() {
    let env = TestEnv::new("get-listing");
    let manifests = Manifests::new();
    manifests.write("a.yaml", &configmap("a", "1"));
    manifests.write("b.yaml", &configmap("b", "1"));
    // Applied once by hand under the source's ApplySet name; then a report-only
    // daemon, in a one-replica election: drift stays visible, the owner is known.
    let out = env
        .converge_command()
        .args(["apply", manifests.arg(), "--name", &env.ns, "-n", &env.ns])
        .output()
        .expect("run converge apply");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let config = format!(
        "{}\n[leader_election]\nnamespace = \"{{ns}}\"\n",
        dir_config(manifests.path(), "1h", Drift::Report)
    );
    let daemon = Daemon::start(&env, &config, &["--leader-elect", "--id", "get-replica"]);
    daemon.wait_ready(Duration::from_secs(30));
    let synced = eventually(Duration::from_secs(20), || {
        let sources = json(&get(&env, &daemon, &["sources", "-o", "json"]));
        (sources[0]["result"] == "synced" && sources[0]["owner"] == "get-replica")
            .then_some(sources)
    });
    let sources = synced
        .unwrap_or_else(|| panic!("never synced with an owner:\n{}", daemon.log()))
        .value;
    let source = &sources[0];
    assert_eq!(source["name"], env.ns.as_str());
    assert_eq!(source["kind"], "dir");
    let revision = source["revision"].as_str().expect("a revision").to_string();
    assert!(revision.starts_with("dir:"), "{source:#}");
    assert_eq!(source["drifted"], 0);
    assert_eq!(source["objects"], 2);

    // kubectl edits one object: the daemon reports it drifted (and does not heal).
    env.edit_configmap_value("a", "edited");
    let object_a = format!("ConfigMap/{}/a", env.ns);
    let drifted = eventually(Duration::from_secs(20), || {
        let objects = json(&get(&env, &daemon, &["objects", &env.ns, "-o", "json"]));
        let a = objects
            .as_array()?
            .iter()
            .find(|o| o["object"] == object_a.as_str())?
            .clone();
        (a["drift"] == "drifted").then_some(objects)
    });
    let objects = drifted
        .unwrap_or_else(|| panic!("a never drifted:\n{}", daemon.log()))
        .value;
    let rows = objects.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{objects:#}");
    for row in rows {
        assert_eq!(row["source"], env.ns.as_str());
        assert_eq!(row["revision"], revision.as_str());
        assert_eq!(row["owner"], "get-replica");
        assert_eq!(row["health"], "ready", "{row:#}");
        assert!(
            row["origin"].as_str().is_some_and(|o| o.contains(".yaml")),
            "{row:#}"
        );
    }
    let b = rows
        .iter()
        .find(|o| o["object"] != object_a.as_str())
        .expect("b");
    assert_eq!(b["drift"], "in-sync");
    assert_eq!(
        env.configmap_value("a").as_deref(),
        Some("edited"),
        "not healed"
    );

    // The tables say the same for people.
    let out = get(&env, &daemon, &["sources"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "KIND", "REVISION", "RESULT", "HEALTH", "DRIFT", "OBJECTS", "OWNER"
        ]
    );
    let row = lines.next().unwrap_or_default();
    for cell in [
        env.ns.as_str(),
        "dir",
        &revision[..12],
        "drifted",
        "ready 2/2",
        "1 objects",
        "get-replica",
    ] {
        assert!(row.contains(cell), "{cell:?} in:\n{table}");
    }
    let out = get(&env, &daemon, &["objects"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.contains(&object_a))
        .unwrap_or_else(|| panic!("no row for a:\n{table}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        [env.ns.as_str(), object_a.as_str(), "drifted", "ready"],
        "{table}"
    );

    // An unknown source, or no daemon at the address: exit 2 with the reason.
    let out = get(&env, &daemon, &["objects", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no source \"nosuch\"") && stderr.contains(&env.ns),
        "{stderr}"
    );
    let out = env
        .converge_command()
        .args(["get", "sources", "--addr", "127.0.0.1:1"])
        .output()
        .expect("run converge get");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}
