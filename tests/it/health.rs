//! Health against the real control plane (kube-scheduler, kube-controller-manager and
//! kwok's fake nodes): `converge apply --wait` until ready, failures explained with
//! evidence (Events, container states, logs), and the daemon's `/status` following
//! a rollout from progressing to ready.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, assert_success, corpus_microservices_demo, eventually};
use serde_json::Value;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// The exit code of `apply --wait` when something failed or timed out.
const NOT_READY: i32 = 3;

/// A new directory with `text` as `app.yaml`.
fn manifests(text: &str) -> Manifests {
    Manifests::with("app.yaml", text)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn corpus_wait_exits_zero_once_every_deployment_is_available() {
    let env = TestEnv::new("health-corpus");
    let (out, took) = env.apply_wait(&corpus_microservices_demo(), &["--timeout", "3m"]);
    assert_success("converge apply --wait (corpus)", &out);
    let text = stdout(&out);
    let verdict = text
        .lines()
        .find(|l| l.starts_with("All 35 objects ready after"))
        .unwrap_or_else(|| panic!("no verdict line:\n{}", describe(&out)));
    println!("apply --wait of microservices-demo (35 objects): {verdict} (command: {took:?})");
    let available = env.kubectl(&[
        "get",
        "deployments",
        "-n",
        &env.ns,
        "-o",
        r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Available")].status}{"\n"}{end}"#,
    ]);
    let statuses: Vec<&str> = available.lines().collect();
    assert_eq!(statuses.len(), 12, "{available}");
    assert!(statuses.iter().all(|s| *s == "True"), "{available}");
}

const UNSCHEDULABLE: &str = "\
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: hunter2-never-printed}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  replicas: 2
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      nodeSelector: {disktype: no-node-has-this}
      containers:
      - name: app
        image: example.com/app:1
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
";

#[test]
fn unschedulable_deployment_fails_the_wait_with_failed_scheduling() {
    let env = TestEnv::new("health-unschedulable");
    let dir = manifests(UNSCHEDULABLE);
    let (out, took) = env.apply_wait(dir.path(), &["--timeout", "60s"]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    println!("apply --wait --timeout 60s exited {NOT_READY} after {took:?}");
    assert!(
        took < Duration::from_secs(75),
        "the wait overran its timeout: {took:?}"
    );
    assert!(text.contains("(timed out)"), "{text}");
    let deployment = format!("Deployment.apps/{}/stuck progressing", env.ns);
    assert!(text.contains(&deployment), "{text}");
    assert!(
        text.contains("Warning FailedScheduling Pod/stuck-"),
        "{text}"
    );
    assert!(
        text.contains("didn't match Pod's node affinity/selector"),
        "{text}"
    );
    assert!(text.contains("PodScheduled=False Unschedulable"), "{text}");
    assert!(!text.contains("hunter2"), "a Secret value leaked:\n{text}");

    // The same as JSON, for scripts: health per object, evidence, the wait summary.
    let (out, _) = env.apply_wait(dir.path(), &["--timeout", "3s", "-o", "json"]);
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(json["wait"]["timedOut"], true, "{json:#}");
    let objects = json["objects"].as_array().expect("objects");
    let secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("secret");
    assert_eq!(secret["health"]["state"], "ready");
    let stuck = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(stuck["health"]["state"], "progressing", "{stuck:#}");
    let events = stuck["health"]["evidence"]["events"]
        .as_array()
        .expect("events");
    assert!(
        events.iter().any(|e| e["reason"] == "FailedScheduling"),
        "{stuck:#}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[test]
fn job_past_its_deadline_is_reported_failed_with_its_reason() {
    let env = TestEnv::new("health-job-deadline");
    let dir = manifests(
        "apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  activeDeadlineSeconds: 3
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {disktype: no-node-has-this}
      containers: [{name: migrate, image: example.com/migrate:1}]
",
    );
    let (out, took) = env.apply_wait(dir.path(), &["--timeout", "60s"]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    println!("a Job past its deadline failed the wait after {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "not decided at once: {took:?}"
    );
    assert!(text.contains("(a failure decided it)"), "{text}");
    let failed = format!(
        "Job.batch/{}/migrate failed: Job failed: DeadlineExceeded: Job was active longer than specified deadline",
        env.ns
    );
    assert!(text.contains(&failed), "{text}");
}

#[test]
fn job_whose_pod_fails_is_reported_with_the_container_exit() {
    let env = TestEnv::new("health-job-failed");
    // An unscheduled Pod is left alone by kwok, so the test can give it the failed
    // status a kubelet would write when the container exits with code 1.
    let dir = manifests(
        "apiVersion: batch/v1
kind: Job
metadata: {name: seed}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {disktype: no-node-has-this}
      containers: [{name: seed, image: example.com/seed:1}]
",
    );
    let started = Instant::now();
    let child = env
        .converge_command()
        .arg("apply")
        .arg(dir.path())
        .args(["-n", &env.ns, "--wait", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start converge apply --wait");
    let pod = eventually(Duration::from_secs(20), || {
        let name = env.kubectl(&[
            "get",
            "pods",
            "-n",
            &env.ns,
            "-l",
            "job-name=seed",
            "-o",
            "name",
        ]);
        (!name.trim().is_empty()).then(|| name.trim().to_string())
    })
    .expect("the Job created no Pod")
    .value;
    env.kubectl(&[
        "patch",
        "-n",
        &env.ns,
        &pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed","containerStatuses":[{"name":"seed","image":"example.com/seed:1",
            "imageID":"","ready":false,"restartCount":0,
            "state":{"terminated":{"exitCode":1,"reason":"Error","message":"seed: relation \"users\" does not exist"}}}]}}"#,
    ]);
    let out = child.wait_with_output().expect("wait for converge");
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    println!(
        "a failed Job was reported {:?} after apply",
        started.elapsed()
    );
    let failed = format!(
        "Job.batch/{}/seed failed: Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit",
        env.ns
    );
    assert!(text.contains(&failed), "{text}");
    assert!(
        text.contains(
            "container seed: terminated: Error (exit code 1): seed: relation \"users\" does not exist"
        ),
        "{text}"
    );
}

/// The port kwok's nodes serve the kubelet API on (0: they serve none, so the API
/// server cannot proxy logs).
fn kubelet_port(env: &TestEnv, node: &str) -> u64 {
    env.kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ])
    .trim()
    .parse()
    .unwrap_or(0)
}

#[test]
fn crash_looping_pod_is_explained_with_its_container_state_and_log() {
    let env = TestEnv::new("health-crashloop");
    let dir = manifests(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: example.com/api:1}]
",
    );
    let (out, _) = env.apply_wait(dir.path(), &["--timeout", "60s"]);
    assert_success("converge apply --wait (healthy first)", &out);
    let pod = env.kubectl(&["get", "pods", "-n", &env.ns, "-l", "app=api", "-o", "name"]);
    let pod = pod.trim();
    let node = env.kubectl(&["get", "-n", &env.ns, pod, "-o", "jsonpath={.spec.nodeName}"]);
    // What a kubelet reports for a container that keeps crashing (kwok leaves a
    // Running Pod with an IP alone, so the status stays as written).
    env.kubectl(&[
        "patch",
        "-n",
        &env.ns,
        pod,
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"ContainersNotReady"},
            {"type":"ContainersReady","status":"False","reason":"ContainersNotReady"}],
            "containerStatuses":[{"name":"api","image":"example.com/api:1","imageID":"","ready":false,
            "restartCount":4,"state":{"waiting":{"reason":"CrashLoopBackOff",
            "message":"back-off 1m20s restarting failed container=api"}},
            "lastState":{"terminated":{"exitCode":2,"reason":"Error"}}}]}}"#,
    ]);
    // The controllers notice the Pod is not ready any more: the Deployment is not available.
    let unavailable = eventually(Duration::from_secs(60), || {
        let n = env.kubectl(&[
            "get",
            "deployment",
            "api",
            "-n",
            &env.ns,
            "-o",
            "jsonpath={.status.unavailableReplicas}",
        ]);
        n.trim() == "1"
    });
    assert!(unavailable.is_some(), "the Deployment stayed available");
    let (out, _) = env.apply_wait(dir.path(), &["--timeout", "5s", "-o", "json"]);
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let evidence = &json["objects"][0]["health"]["evidence"];
    println!("{evidence:#}");
    let container = &evidence["pods"][0]["containers"][0];
    assert_eq!(
        container["state"],
        "waiting: CrashLoopBackOff: back-off 1m20s restarting failed container=api",
        "{evidence:#}"
    );
    assert_eq!(container["lastState"], "terminated: Error (exit code 2)");
    assert_eq!(container["restarts"], 4);
    if kubelet_port(&env, node.trim()) == 0 {
        // No kubelet endpoint: the API server cannot proxy the log, and the evidence
        // says so with the server's error instead of failing.
        let notes = evidence["notes"].to_string();
        println!("kwok serves no logs here; the evidence says: {notes}");
        assert!(
            notes.contains("the log of container api in Pod")
                && notes.contains("is unavailable")
                && notes.contains("/containerLogs/"),
            "{evidence:#}"
        );
    } else {
        let log = &container["log"];
        println!("log excerpt (previous run): {log}");
        assert_eq!(log["previous"], true, "{evidence:#}");
        // hack/controlplane.sh has kwok serve one file as every container's previous log.
        let lines = log["lines"].to_string();
        assert!(lines.contains("previous run"), "{evidence:#}");
    }
}

/// The daemon's health entry for `object` (e.g. `Deployment.apps/NS/web`).
fn object_health(daemon: &Daemon, object: &str) -> Option<Value> {
    let source = daemon.source();
    source["health"]["objects"]
        .as_array()?
        .iter()
        .find(|o| o["object"] == object)
        .cloned()
}

#[test]
fn daemon_status_follows_a_rollout_from_progressing_to_ready() {
    let env = TestEnv::new("health-daemon");
    // minReadySeconds keeps the rollout visibly in progress for a few seconds.
    let dir = manifests(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  minReadySeconds: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example.com/web:1}]
",
    );
    let config = dir_config(dir.path(), "1h", Drift::Heal);
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    let object = format!("Deployment.apps/{}/web", env.ns);
    let mut seen: Vec<String> = Vec::new();
    let ready = eventually(Duration::from_secs(60), || {
        let state = object_health(&daemon, &object)
            .and_then(|o| o["state"].as_str().map(str::to_string))
            .unwrap_or_default();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        state == "ready"
    });
    println!("health states seen in /status: {seen:?}");
    let ready = ready
        .unwrap_or_else(|| panic!("never ready: {seen:?}\n{}", daemon.log()))
        .after;
    println!("the Deployment turned ready in /status after {ready:?}");
    assert!(
        seen.iter().any(|s| s == "progressing"),
        "never seen progressing: {seen:?}"
    );
    let source = daemon.source();
    assert_eq!(source["health"]["state"], "ready", "{source:#}");
    assert_eq!(source["health"]["ready"], 1);
    let metric = format!(
        "converge_health_objects{{source=\"{}\",state=\"ready\"}}",
        env.ns
    );
    assert_eq!(daemon.metric(&metric), 1.0);
}

#[test]
fn daemon_explains_a_failed_rollout_once() {
    let env = TestEnv::new("health-daemon-failed");
    let dir = manifests(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      nodeSelector: {disktype: no-node-has-this}
      containers: [{name: app, image: example.com/app:1}]
",
    );
    let config = dir_config(dir.path(), "1h", Drift::Heal);
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    let object = format!("Deployment.apps/{}/stuck", env.ns);
    let explained = eventually(Duration::from_secs(60), || {
        object_health(&daemon, &object).filter(|o| o["evidence"].is_object())
    })
    .unwrap_or_else(|| panic!("no evidence in /status:\n{:#}", daemon.source()))
    .value;
    println!("{explained:#}");
    assert_eq!(explained["state"], "failed");
    assert!(
        explained["message"]
            .as_str()
            .is_some_and(|m| m.contains("ProgressDeadlineExceeded")),
        "{explained:#}"
    );
    let events = explained["evidence"]["events"].to_string();
    assert!(events.contains("FailedScheduling"), "{explained:#}");
    assert_eq!(daemon.source()["health"]["state"], "failed");

    // Once: the evidence is not gathered again while the object stays failed,
    // even when it changes. Another manager labels it (a label, unlike an
    // annotation, leaves a Deployment's generation, and so its rollout, alone);
    // the daemon sees that change, and reconciles, before the count is taken.
    let gathered = || {
        let log = daemon.log();
        let lines = log.lines();
        lines
            .filter(|l| l.contains("gathering evidence") && l.contains(&object))
            .count()
    };
    assert_eq!(gathered(), 1, "{}", daemon.log());
    let from = daemon.log().len();
    env.kubectl(&[
        "patch",
        "deployment",
        "stuck",
        "-n",
        &env.ns,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"example.com/touched":"yes"}}}"#,
        "--field-manager=other-controller",
    ]);
    let acted = eventually(Duration::from_secs(30), || {
        daemon.reconciled_after_change(from, &object)
    });
    assert!(
        acted.is_some(),
        "the daemon never saw {object} change and reconciled:\n{}",
        daemon.log()
    );
    assert_eq!(
        object_health(&daemon, &object).map(|o| o["state"].clone()),
        Some(serde_json::json!("failed")),
        "{:#}",
        daemon.source()
    );
    assert_eq!(gathered(), 1, "evidence gathered again:\n{}", daemon.log());

    let status = env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("converge status");
    let table = stdout(&status);
    println!("{table}");
    // Synced (the revision was applied) but an object failed: 3, as `apply --wait`.
    assert_eq!(status.status.code(), Some(3), "{table}");
    assert!(
        table.contains(&format!("{object} failed: rollout failed")),
        "{table}"
    );
    assert!(table.contains("FailedScheduling"), "{table}");
}
