//! Faults between converge and the API server: restarts, refused and reset
//! connections, stalls, cut watches and 429s. Each scenario checks with kubectl that
//! nothing was lost (every object carries the value of the last run) and nothing was
//! half-applied (no object with a value that no run asked for, the ApplySet parent
//! records every member kind).

use crate::common::{Manifests, PlaneAccess, TestEnv, assert_success, restart_apiserver};
use std::collections::BTreeMap;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// `count` ConfigMaps `cm-0`, `cm-1`, … in one file, each with `data.value = value`.
pub fn many_configmaps(count: usize, value: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n\
                 data: {{value: '{value}'}}\n"
            )
        })
        .collect()
}

/// How many ConfigMaps `cm-*` of the test's namespace hold each value.
pub fn values(env: &TestEnv) -> BTreeMap<String, usize> {
    let template = "{range .items[*]}{.metadata.name}={.data.value}{\"\\n\"}{end}";
    let jsonpath = format!("jsonpath={template}");
    let out = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", &jsonpath]);
    let mut counts = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with("cm-")) {
        let value = line.split_once('=').map_or("", |(_, v)| v);
        *counts.entry(value.to_string()).or_default() += 1;
    }
    counts
}

/// Asserts that exactly `count` ConfigMaps `cm-*` exist and all hold `value`.
pub fn assert_all_hold(env: &TestEnv, count: usize, value: &str) {
    let found = values(env);
    let expected = BTreeMap::from([(value.to_string(), count)]);
    assert_eq!(found, expected, "ConfigMaps by value after the run");
}

/// `converge apply DIR -n NS --name NS` plus `extra`, started in the background with
/// its output captured.
pub fn spawn_apply(env: &TestEnv, dir: &Manifests, extra: &[&str]) -> Child {
    env.converge_command()
        .args(["apply", dir.arg(), "-n", &env.ns, "--name", &env.ns])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run converge apply")
}

/// `converge apply` in the foreground.
pub fn apply(env: &TestEnv, dir: &Manifests, extra: &[&str]) -> Output {
    spawn_apply(env, dir, extra)
        .wait_with_output()
        .expect("wait for converge apply")
}

#[test]
fn apply_of_1200_objects_survives_an_apiserver_restart() {
    const COUNT: usize = 1200;
    let env = TestEnv::with_access("fault-restart", PlaneAccess::Exclusive);
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    assert_success("the first apply", &apply(&env, &dir, &[]));
    dir.write("cms.yaml", &many_configmaps(COUNT, "v2"));

    let started = Instant::now();
    let mut child = spawn_apply(&env, &dir, &["-v"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().expect("poll converge").is_none(),
        "the apply ended before the restart; the test proves nothing"
    );
    restart_apiserver();
    let out = child.wait_with_output().expect("wait for converge apply");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "apply of {COUNT} objects across an apiserver restart took {:?}",
        started.elapsed()
    );
    assert_success("converge apply during an apiserver restart", &out);
    assert!(
        stderr.contains("retrying"),
        "the apply never met the restart:\n{stderr}"
    );
    assert_all_hold(&env, COUNT, "v2");
}

#[test]
fn an_unreachable_server_is_retried_only_for_the_request_timeout() {
    let env = TestEnv::new("fault-refused");
    let dir = Manifests::with("cms.yaml", &many_configmaps(1, "v1"));
    let closed = crate::common::daemon::free_port();
    let kubeconfig = env.kubeconfig_via(dir.path(), &format!("https://127.0.0.1:{closed}"));
    let started = Instant::now();
    let out = env
        .converge_command()
        .env("KUBECONFIG", &kubeconfig)
        .args(["diff", dir.arg(), "-n", &env.ns, "--request-timeout", "3s"])
        .output()
        .expect("run converge diff");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "gave up after {took:?}"
    );
    assert!(stderr.contains("attempts in"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn a_certificate_the_client_rejects_is_not_retried() {
    let env = TestEnv::new("fault-tls");
    let dir = Manifests::with("cms.yaml", &many_configmaps(1, "v1"));
    // Without its CA the test plane's certificate is signed by an unknown issuer.
    let text = std::fs::read_to_string(&env.kubeconfig).expect("read the kubeconfig");
    let without_ca: String = text
        .lines()
        .filter(|l| !l.contains("certificate-authority"))
        .map(|l| format!("{l}\n"))
        .collect();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, without_ca).expect("write the kubeconfig");
    let started = Instant::now();
    let out = env
        .converge_command()
        .env("KUBECONFIG", &kubeconfig)
        .args(["diff", dir.arg(), "-n", &env.ns])
        .output()
        .expect("run converge diff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a TLS failure was retried:\n{stderr}"
    );
    assert!(!stderr.contains("attempts in"), "{stderr}");
}
