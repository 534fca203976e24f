//! Many clusters (#24, point 3): one daemon drives a source on the home plane and
//! one on a second, independent plane (`hack/test.sh` starts it; its state
//! directory is `CONVERGE_SECOND_CP_DIR`). With the second plane's API server
//! stopped, the home source still applies a change at once and `/status` says the
//! second cluster is unreachable; once it is back, its source converges without a
//! restart. Each plane is checked with kubectl.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, PlaneAccess, TestEnv, configmap, eventually, repo_root};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The second plane's state directory, or a clear failure.
fn second_plane() -> PathBuf {
    let dir = std::env::var("CONVERGE_SECOND_CP_DIR").unwrap_or_default();
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("kubeconfig").is_file(),
        "CONVERGE_SECOND_CP_DIR={dir:?} holds no control plane: run hack/test.sh, or \
         `CONVERGE_CP_DIR=DIR hack/controlplane.sh up` and export CONVERGE_SECOND_CP_DIR=DIR"
    );
    dir
}

/// `hack/controlplane.sh COMMAND` against the second plane.
fn second(dir: &PathBuf, command: &str) {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/controlplane.sh"))
        .arg(command)
        .env("CONVERGE_CP_DIR", dir)
        .output()
        .expect("run hack/controlplane.sh");
    assert!(
        out.status.success(),
        "hack/controlplane.sh {command} (second plane): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubectl against the second plane.
fn kubectl2(kubeconfig: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(crate::common::kubectl_bin())
        .args(["--kubeconfig", kubeconfig, "--request-timeout=5s"])
        .args(args)
        .output()
        .expect("run kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

fn value2(kubeconfig: &str, ns: &str, name: &str) -> Option<String> {
    let args = [
        "get",
        "configmap",
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.data.value}",
    ];
    let (ok, text) = kubectl2(kubeconfig, &args);
    ok.then_some(text)
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    let sources = status["sources"].as_array();
    let found = sources.and_then(|all| all.iter().find(|s| s["name"] == name));
    found.unwrap_or(&Value::Null)
}

#[test]
fn a_cluster_that_is_down_fails_only_its_own_sources_and_converges_when_back() {
    let dir = second_plane();
    // Exclusive: the second plane's API server is stopped meanwhile.
    let env = TestEnv::with_access("clusters", PlaneAccess::Exclusive);
    let kubeconfig2 = dir.join("kubeconfig").display().to_string();
    let (created, _) = kubectl2(&kubeconfig2, &["create", "namespace", &env.ns]);
    assert!(
        created,
        "cannot create namespace {} on the second plane",
        env.ns
    );
    let home = Manifests::with("cm.yaml", &configmap("home", "one"));
    let edge = Manifests::with("cm.yaml", &configmap("edge", "one"));
    let config = format!(
        "state_dir = \"{{state}}\"\n[cluster]\nrequest_timeout = \"3s\"\n\n\
         [[clusters]]\nname = \"edge\"\nkubeconfig = \"{kubeconfig2}\"\n\n\
         [[source]]\nname = \"home\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"2s\"\n\n\
         [[source]]\nname = \"edge\"\ncluster = \"edge\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"2s\"\n",
        home.path().display(),
        edge.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let both = eventually(Duration::from_secs(30), || {
        env.configmap_value("home").as_deref() == Some("one")
            && value2(&kubeconfig2, &env.ns, "edge").as_deref() == Some("one")
    });
    assert!(
        both.is_some(),
        "the two clusters did not converge:\n{}",
        daemon.log()
    );
    assert_eq!(env.configmap_value("edge"), None, "edge's object went home");
    let status = daemon.status();
    assert_eq!(
        source(&status, "edge")["cluster"]["reachable"],
        true,
        "{status:#}"
    );
    // Its Events go to its own cluster, onto its ApplySet parent there.
    let about = "involvedObject.name=converge-edge";
    let events = [
        "get",
        "events",
        "-n",
        &env.ns,
        "--field-selector",
        about,
        "-o",
        "name",
    ];
    let posted = eventually(Duration::from_secs(20), || {
        !kubectl2(&kubeconfig2, &events).1.is_empty()
    });
    assert!(
        posted.is_some(),
        "no Event on the edge cluster:\n{}",
        daemon.log()
    );

    second(&dir, "stop-apiserver");
    home.write("cm.yaml", &configmap("home", "two"));
    edge.write("cm.yaml", &configmap("edge", "two"));
    let applied = env.wait_configmap_value("home", "two", Duration::from_secs(10));
    let applied = applied.unwrap_or_else(|| panic!("home stood still:\n{}", daemon.log()));
    println!("home applied a change in {applied:?} with the edge cluster down");
    let unreachable = eventually(Duration::from_secs(30), || {
        let status = daemon.status();
        let edge = source(&status, "edge");
        (edge["cluster"]["reachable"] == false && edge["result"] == "failed").then_some(status)
    });
    let status = unreachable.map(|u| u.value);
    assert!(
        status.is_some(),
        "/status never said edge is unreachable:\n{}",
        daemon.log()
    );
    let reachable = r#"converge_cluster_reachable{cluster="edge"}"#;
    assert_eq!(daemon.metric(reachable), 0.0);
    let home_status = source(status.as_ref().unwrap_or(&Value::Null), "home").clone();
    assert_eq!(home_status["result"], "synced", "{home_status:#}");

    second(&dir, "start-apiserver");
    let back = eventually(Duration::from_secs(60), || {
        value2(&kubeconfig2, &env.ns, "edge").as_deref() == Some("two")
    });
    assert!(
        back.is_some(),
        "edge did not converge once back:\n{}",
        daemon.log()
    );
    let status = daemon.status();
    assert_eq!(
        source(&status, "edge")["cluster"]["reachable"],
        true,
        "{status:#}"
    );
    assert_eq!(daemon.metric(reachable), 1.0);
    let _ = kubectl2(
        &kubeconfig2,
        &["delete", "namespace", &env.ns, "--wait=false"],
    );
}

#[test]
fn a_cluster_reached_through_a_kubeconfig_in_a_secret_waits_for_the_secret() {
    let dir = second_plane();
    let env = TestEnv::new("clusters-secret");
    let kubeconfig2 = dir.join("kubeconfig").display().to_string();
    let (created, _) = kubectl2(&kubeconfig2, &["create", "namespace", &env.ns]);
    assert!(
        created,
        "cannot create namespace {} on the second plane",
        env.ns
    );
    let home = Manifests::with("cm.yaml", &configmap("home", "one"));
    let edge = Manifests::with("cm.yaml", &configmap("edge", "one"));
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[[clusters]]\nname = \"edge\"\n\
         secret = \"{{ns}}/edge-kubeconfig\"\n\n\
         [[source]]\nname = \"home\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"2s\"\n\n\
         [[source]]\nname = \"edge\"\ncluster = \"edge\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"2s\"\n",
        home.path().display(),
        edge.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    // No Secret yet: only the edge source waits, and says why.
    let applied = env.wait_configmap_value("home", "one", Duration::from_secs(30));
    assert!(
        applied.is_some(),
        "home did not converge:\n{}",
        daemon.log()
    );
    let waiting = eventually(Duration::from_secs(30), || {
        let status = daemon.status();
        let edge = source(&status, "edge").clone();
        (edge["cluster"]["reachable"] == false).then_some(edge)
    });
    let edge_status = waiting.map(|w| w.value).unwrap_or(Value::Null);
    let error = edge_status["error"].as_str().unwrap_or_default();
    let secret = format!("Secret {}/edge-kubeconfig", env.ns);
    assert!(error.contains(&secret), "{edge_status:#}");

    let from_file = format!("--from-file=value={kubeconfig2}");
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "edge-kubeconfig",
        "-n",
        &env.ns,
        &from_file,
    ]);
    let converged = eventually(Duration::from_secs(60), || {
        value2(&kubeconfig2, &env.ns, "edge").as_deref() == Some("one")
    });
    assert!(
        converged.is_some(),
        "edge did not converge:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        !log.contains("client-key"),
        "the kubeconfig leaked into the log"
    );
    let _ = kubectl2(
        &kubeconfig2,
        &["delete", "namespace", &env.ns, "--wait=false"],
    );
}
