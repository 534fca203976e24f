//! Jobs and namespaces as the charts every cluster starts with need them (#22),
//! against the real control plane, where the job controller completes Jobs whose
//! Pods kwok runs and the TTL controller deletes them: a run-once Job in plain
//! manifests (`ttlSecondsAfterFinished: 0`) is completed, not missing, and never
//! created again for the same manifest, by the CLI or the daemon (counted by an
//! independent watch); `--create-namespace`, and its undoing when the revision is
//! refused (seen by a watch); Helm's and Argo CD's keep policies.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, configmap, describe, eventually};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Job that runs once and is deleted by the TTL controller as soon as it
/// completes: the admission-webhook patch Jobs of an ingress controller's static
/// install. `image` changes the manifest.
fn ttl_job(name: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  \
         ttlSecondsAfterFinished: 0\n  backoffLimit: 0\n  template:\n    spec:\n      \
         restartPolicy: Never\n      containers:\n      - name: run\n        image: {image}\n"
    )
}

fn converge(env: &TestEnv, args: &[&str]) -> Output {
    env.converge_command()
        .args(args)
        .output()
        .expect("run converge")
}

fn job_exists(env: &TestEnv, name: &str) -> bool {
    let args = ["get", "job", name, "-n", &env.ns, "-o", "name"];
    env.kubectl_output(&args, None).status.success()
}

/// `kubectl get KIND --watch` printing `columns` of every event, collected.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(env: &TestEnv, args: &[&str], columns: &str) -> Watch {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let columns = format!("custom-columns={columns}");
        all.extend_from_slice(&["--watch", "--no-headers", "-o", &columns]);
        let mut child = env
            .kubectl_command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl get --watch");
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Watch { child, lines }
    }

    /// A watch of the Jobs' uids in the test's namespace, open once it returns: a
    /// suspended sentinel Job (not converge's) is listed first, and not counted.
    fn job_uids(env: &TestEnv) -> Watch {
        let sentinel = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: sentinel}\nspec:\n  \
                        suspend: true\n  template:\n    spec:\n      restartPolicy: Never\n      \
                        containers: [{name: s, image: example.com/s:1}]\n";
        env.kubectl_stdin(&["apply", "-n", &env.ns, "-f", "-"], sentinel);
        let columns = "UID:.metadata.uid,NAME:.metadata.name";
        let watch = Watch::start(env, &["jobs", "-n", &env.ns], columns);
        let open = eventually(Duration::from_secs(20), || !watch.lines().is_empty());
        assert!(open.is_some(), "the Job watch did not start");
        watch
    }

    /// The uids of the Jobs seen, the sentinel's aside.
    fn job_runs(&self) -> BTreeSet<String> {
        self.lines()
            .iter()
            .filter(|l| !l.ends_with(" sentinel"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_ttl_reaped_job_is_completed_and_never_created_again_by_the_cli() {
    let env = TestEnv::new("run-once-cli");
    let dir = Manifests::with("job.yaml", &ttl_job("patch", "example.com/certgen:1"));
    dir.write("cm.yaml", &configmap("settings", "one"));
    let uids = Watch::job_uids(&env);
    let ns = ["--namespace", &env.ns];
    let apply = converge(&env, &[&["apply", dir.arg(), "--wait"], &ns[..]].concat());
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    let text = String::from_utf8_lossy(&apply.stdout);
    assert!(text.contains("All 2 objects ready"), "{}", describe(&apply));
    let reaped = eventually(Duration::from_secs(30), || !job_exists(&env, "patch"));
    assert!(
        reaped.is_some(),
        "the TTL controller did not delete the Job"
    );

    let diff = converge(&env, &[&["diff", dir.arg()], &ns[..]].concat());
    assert_eq!(diff.status.code(), Some(0), "{}", describe(&diff));
    let text = String::from_utf8_lossy(&diff.stdout);
    let line = format!("Job.batch/{}/patch completed", env.ns);
    assert!(text.contains(&line), "{}", describe(&diff));
    assert!(
        text.contains("1 completed (run once)"),
        "{}",
        describe(&diff)
    );

    let again = converge(&env, &[&["apply", dir.arg()], &ns[..]].concat());
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("0 created"), "{}", describe(&again));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(uids.job_runs().len(), 1, "{:?}", uids.lines());

    // A changed manifest runs it once more.
    dir.write("job.yaml", &ttl_job("patch", "example.com/certgen:2"));
    let diff = converge(&env, &[&["diff", dir.arg()], &ns[..]].concat());
    assert_eq!(diff.status.code(), Some(1), "{}", describe(&diff));
    let changed = converge(&env, &[&["apply", dir.arg(), "--wait"], &ns[..]].concat());
    assert_eq!(changed.status.code(), Some(0), "{}", describe(&changed));
    let twice = eventually(Duration::from_secs(10), || uids.job_runs().len() == 2);
    assert!(twice.is_some(), "{:?}", uids.lines());
}

#[test]
fn the_daemon_runs_a_run_once_job_once_and_again_when_its_manifest_changes() {
    let env = TestEnv::new("run-once-daemon");
    let dir = Manifests::with("job.yaml", &ttl_job("migrate", "example.com/db:1"));
    dir.write("cm.yaml", &configmap("settings", "one"));
    let uids = Watch::job_uids(&env);
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"2s\"\nfull_resync_every = 2\n",
        dir.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let first = eventually(Duration::from_secs(30), || uids.job_runs().len() == 1);
    assert!(
        first.is_some(),
        "the Job was never created:\n{}",
        daemon.log()
    );
    let reaped = eventually(Duration::from_secs(30), || !job_exists(&env, "migrate"));
    assert!(
        reaped.is_some(),
        "the TTL controller did not delete the Job"
    );
    // 60 s: 30 resyncs, 15 of them full, and the drift event of the deletion.
    std::thread::sleep(Duration::from_secs(60));
    assert_eq!(
        uids.job_runs().len(),
        1,
        "the Job ran more than once: {:?}\n{}",
        uids.lines(),
        daemon.log()
    );
    let resyncs = daemon.metric("converge_reconciles_total{source=");
    assert!(resyncs >= 10.0, "the daemon did not resync: {resyncs}");
    let status = daemon.source();
    let objects = status["objects"].as_array().cloned().unwrap_or_default();
    let job = objects.iter().find(|o| {
        o["object"]
            .as_str()
            .is_some_and(|n| n.ends_with("/migrate"))
    });
    assert_eq!(
        job.map(|j| j["state"].clone()),
        Some("in-sync".into()),
        "{status:#}"
    );

    dir.write("job.yaml", &ttl_job("migrate", "example.com/db:2"));
    let again = eventually(Duration::from_secs(30), || uids.job_runs().len() == 2);
    assert!(
        again.is_some(),
        "the changed Job did not run:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(uids.job_runs().len(), 2, "{:?}", uids.lines());
}

/// A namespace of the test's own, deleted at the end of the test.
struct ExtraNamespace<'a> {
    env: &'a TestEnv,
    name: String,
}

impl Drop for ExtraNamespace<'_> {
    fn drop(&mut self) {
        let args = [
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ];
        let _ = self.env.kubectl_output(&args, None);
    }
}

#[test]
fn create_namespace_creates_the_target_and_a_refused_revision_removes_it_again() {
    let env = TestEnv::new("create-ns");
    let chart = crate::common::repo_root().join("tests/fixtures/podinfo/charts/podinfo");
    let created = ExtraNamespace {
        env: &env,
        name: format!("{}-new", env.ns),
    };
    let chart_arg = chart.to_str().expect("UTF-8 path");
    let args = [
        "apply",
        chart_arg,
        "--release",
        "web",
        "--namespace",
        &created.name,
    ];
    let without = converge(&env, &args);
    assert_ne!(without.status.code(), Some(0), "{}", describe(&without));
    let with = converge(&env, &[&args[..], &["--create-namespace"]].concat());
    assert_eq!(with.status.code(), Some(0), "{}", describe(&with));
    let text = String::from_utf8_lossy(&with.stdout);
    let line = format!("Namespace/{} created (--create-namespace)", created.name);
    assert!(text.contains(&line), "{}", describe(&with));
    let deployments = ["get", "deployments", "-n", &created.name, "-o", "name"];
    assert_eq!(
        env.kubectl(&deployments).trim(),
        "deployment.apps/web-podinfo"
    );
    // Not a member: it is never pruned.
    let labels = env.kubectl(&["get", "namespace", &created.name, "--show-labels"]);
    assert!(
        !labels.contains("applyset.kubernetes.io/part-of"),
        "{labels}"
    );

    let refused = ExtraNamespace {
        env: &env,
        name: format!("{}-refused", env.ns),
    };
    let phases = Watch::start(
        &env,
        &["namespaces"],
        "NAME:.metadata.name,PHASE:.status.phase",
    );
    // The watch is open once its first list (with the test's namespace) is out.
    let open = eventually(Duration::from_secs(20), || {
        phases.lines().iter().any(|l| l.starts_with(&env.ns))
    });
    assert!(open.is_some(), "the namespace watch did not start");
    let bad = Manifests::with("cm.yaml", &configmap("good", "one"));
    bad.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {count: 1}\n",
    );
    let args = [
        "apply",
        bad.arg(),
        "--namespace",
        &refused.name,
        "--create-namespace",
    ];
    let out = converge(&env, &args);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{}", describe(&out));
    let seen = |phase: &str| {
        phases
            .lines()
            .iter()
            .any(|l| l.starts_with(&refused.name) && l.ends_with(phase))
    };
    let created_then_deleted = eventually(Duration::from_secs(20), || {
        seen("Active") && seen("Terminating")
    });
    assert!(created_then_deleted.is_some(), "{:?}", phases.lines());
    let gone = eventually(Duration::from_secs(60), || {
        let args = ["get", "namespace", &refused.name];
        !env.kubectl_output(&args, None).status.success()
    });
    assert!(gone.is_some(), "the refused revision's namespace stayed");
}

#[test]
fn helm_and_argo_cd_keep_policies_keep_objects_out_of_prune() {
    let env = TestEnv::new("keep-policies");
    let keep = |name: &str, key: &str, value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    \
             {key}: \"{value}\"\ndata: {{value: one}}\n"
        )
    };
    let dir = Manifests::with(
        "helm.yaml",
        &keep("helm", "helm.sh/resource-policy", "keep"),
    );
    let argo_key = "argocd.argoproj.io/sync-options";
    dir.write(
        "argo.yaml",
        &keep("argo", argo_key, "ServerSideApply=true,Prune=false"),
    );
    dir.write(
        "argo-delete.yaml",
        &keep("argo-delete", argo_key, "Delete=false"),
    );
    dir.write("plain.yaml", &configmap("plain", "one"));
    dir.write("stays.yaml", &configmap("stays", "one"));
    let ns = ["--namespace", &env.ns];
    let apply = converge(&env, &[&["apply", dir.arg()], &ns[..]].concat());
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    for file in ["helm.yaml", "argo.yaml", "argo-delete.yaml", "plain.yaml"] {
        dir.remove(file);
    }
    let args = ["apply", dir.arg(), "--prune", "--allow-mass-prune"];
    let prune = converge(&env, &[&args[..], &ns[..]].concat());
    assert_eq!(prune.status.code(), Some(0), "{}", describe(&prune));
    let text = String::from_utf8_lossy(&prune.stdout);
    for kept in ["helm", "argo", "argo-delete"] {
        let line = format!("ConfigMap/{}/{kept} kept (prune disabled)", env.ns);
        assert!(text.contains(&line), "{}", describe(&prune));
        assert!(env.configmap_value(kept).is_some(), "{kept} was pruned");
    }
    assert!(text.contains("1 pruned"), "{}", describe(&prune));
    assert_eq!(env.configmap_value("plain"), None, "plain was not pruned");
}
