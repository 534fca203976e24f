//! The test control plane itself: a real API server that kubectl (an independent
//! client) can apply to, diff against and watch, with kwok nodes on which the
//! microservices-demo Deployments become Available.

use crate::common::{TestEnv, check_control_plane, corpus_microservices_demo, repo_root};
use serde_json::Value;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn serves_the_pinned_kubernetes_version() {
    let env = TestEnv::new("version");
    let version: Value = serde_json::from_str(&env.kubectl(&["get", "--raw", "/version"]))
        .expect("/version is JSON");
    assert_eq!(version["gitVersion"], "v1.34.4", "{version}");
    assert_eq!(version["minor"], "34");
}

#[test]
fn microservices_demo_deployments_become_available() {
    let env = TestEnv::new("demo");
    let corpus = corpus_microservices_demo();
    let corpus = corpus.to_str().expect("utf-8 path");
    env.kubectl(&["apply", "--server-side", "-n", &env.ns, "-f", corpus]);
    let deployments = env.kubectl(&["get", "deployments", "-n", &env.ns, "-o", "name"]);
    assert_eq!(deployments.lines().count(), 12, "{deployments}");
    env.kubectl(&[
        "wait",
        "-n",
        &env.ns,
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=180s",
    ]);
    let pods: Value =
        serde_json::from_str(&env.kubectl(&["get", "pods", "-n", &env.ns, "-o", "json"]))
            .expect("pods are JSON");
    let items = pods["items"].as_array().expect("items");
    assert!(items.len() >= 12, "one Pod per Deployment at least");
    for pod in items {
        assert_eq!(
            pod["status"]["phase"], "Running",
            "{}",
            pod["metadata"]["name"]
        );
    }
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
";

#[test]
fn kubectl_server_side_apply_and_diff_work() {
    let env = TestEnv::new("ssa-diff");
    let ns = env.ns.as_str();
    env.kubectl_stdin(&["apply", "--server-side", "-n", ns, "-f", "-"], CONFIGMAP);
    let managers = env.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        ns,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}:{.metadata.managedFields[*].operation}",
    ]);
    assert_eq!(managers, "kubectl:Apply");

    let unchanged = env.kubectl_output(
        &["diff", "--server-side", "-n", ns, "-f", "-"],
        Some(CONFIGMAP),
    );
    assert_eq!(unchanged.status.code(), Some(0), "{unchanged:?}");

    let changed = CONFIGMAP.replace("blue", "green");
    let out = env.kubectl_output(
        &["diff", "--server-side", "-n", ns, "-f", "-"],
        Some(&changed),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-  color: blue") && diff.contains("+  color: green"),
        "{diff}"
    );
}

#[test]
fn kubectl_watch_sees_changes() {
    let env = TestEnv::new("watch");
    let (lines, received) = mpsc::channel();
    let mut watch = env.kubectl_watch("configmaps", move |line| {
        let _ = lines.send(line);
    });
    env.kubectl_stdin(
        &["apply", "--server-side", "-n", &env.ns, "-f", "-"],
        CONFIGMAP,
    );
    let seen = std::iter::from_fn(|| received.recv_timeout(Duration::from_secs(20)).ok())
        .find(|line| line == "configmap/settings");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.is_some(),
        "the watch never reported configmap/settings"
    );
}

#[test]
fn harness_explains_an_unreachable_control_plane() {
    let missing = check_control_plane(None).expect_err("no KUBECONFIG must be an error");
    assert!(missing.contains("hack/controlplane.sh up"), "{missing}");

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, UNREACHABLE_KUBECONFIG).expect("write kubeconfig");
    let down = check_control_plane(kubeconfig.to_str()).expect_err("closed port must be an error");
    assert!(
        down.contains("is not ready") && down.contains("127.0.0.1:1"),
        "{down}"
    );
}

const UNREACHABLE_KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
";

#[test]
fn controlplane_up_fails_loudly_on_a_busy_port() {
    let env = TestEnv::new("busy-port");
    let server = env.kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let busy_port = server.rsplit(':').next().expect("server URL has a port");
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(repo_root().join("hack/controlplane.sh"))
        .arg("up")
        .env("CONVERGE_CP_DIR", state.path().join("plane"))
        .env("CONVERGE_CP_PORT", busy_port)
        .output()
        .expect("run hack/controlplane.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("port 127.0.0.1:{busy_port} is in use")),
        "{stderr}"
    );
    assert!(
        !state.path().join("plane").join("etcd.pid").exists(),
        "nothing may be left running"
    );
}
