//! Claims that were proven only by unit tests (#23), proven on the cluster:
//! adopting what `kubectl apply` created (the `kubectl-client-side-apply` and
//! `before-first-apply` field managers), `KIND/NAME` ignore selectors, Argo CD's
//! `Skip`, a sync-phase hook, `recreate = true` in the daemon, and Secret values
//! masked in a report-only daemon's `/status` diff.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, configmap, describe, eventually};
use std::process::Output;
use std::time::Duration;

fn converge(env: &TestEnv, args: &[&str]) -> Output {
    let ns = ["--namespace", env.ns.as_str()];
    let all = [args, &ns[..]].concat();
    env.converge_command()
        .args(all)
        .output()
        .expect("run converge")
}

fn data(env: &TestEnv, name: &str) -> String {
    let args = [
        "get",
        "configmap",
        name,
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.data}",
    ];
    env.kubectl(&args)
}

#[test]
fn objects_kubectl_apply_created_are_adopted_and_their_extra_fields_removed() {
    let env = TestEnv::new("claims-adopt");
    let by_kubectl = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n\
                      data: {value: old, extra: from-kubectl}\n";
    env.kubectl_stdin(&["apply", "-n", &env.ns, "-f", "-"], by_kubectl);
    let fields = [
        "get",
        "configmap",
        "app",
        "-n",
        &env.ns,
        "--show-managed-fields",
        "-o",
        "yaml",
    ];
    let managers = env.kubectl(&fields);
    assert!(managers.contains("kubectl-client-side-apply"), "{managers}");
    let dir = Manifests::with("app.yaml", &configmap("app", "new"));
    let diff = converge(&env, &["diff", dir.arg()]);
    assert_eq!(diff.status.code(), Some(1), "{}", describe(&diff));
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-  extra: from-kubectl"),
        "{}",
        describe(&diff)
    );
    let apply = converge(&env, &["apply", dir.arg()]);
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    assert_eq!(data(&env, "app"), r#"{"value":"new"}"#);
    let again = converge(&env, &["diff", dir.arg()]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
}

#[test]
fn an_ignore_rule_for_one_kind_and_name_leaves_only_that_object_alone() {
    let env = TestEnv::new("claims-ignore");
    let dir = Manifests::with("a.yaml", &configmap("a", "one"));
    dir.write("b.yaml", &configmap("b", "one"));
    let apply = converge(&env, &["apply", dir.arg()]);
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    env.edit_configmap_value("a", "edited");
    env.edit_configmap_value("b", "edited");
    let ignore = ["--ignore", "ConfigMap/a:/data/value"];
    let diff = converge(&env, &[&["diff", dir.arg()], &ignore[..]].concat());
    assert_eq!(diff.status.code(), Some(1), "{}", describe(&diff));
    let text = String::from_utf8_lossy(&diff.stdout);
    let b = format!("ConfigMap/{}/b configured", env.ns);
    let a = format!("ConfigMap/{}/a", env.ns);
    assert!(text.contains(&b), "{}", describe(&diff));
    assert!(
        !text.contains(&format!("{a} configured")),
        "{}",
        describe(&diff)
    );
    let apply = converge(&env, &[&["apply", dir.arg()], &ignore[..]].concat());
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    assert_eq!(env.configmap_value("a").as_deref(), Some("edited"));
    assert_eq!(env.configmap_value("b").as_deref(), Some("one"));
}

#[test]
fn argo_cd_skip_is_never_applied_and_a_sync_hook_runs_with_its_wave() {
    let env = TestEnv::new("claims-argo");
    let dir = Manifests::with("app.yaml", &configmap("app", "one"));
    dir.write(
        "skipped.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: skipped\n  annotations: \
         {argocd.argoproj.io/hook: Skip}\ndata: {value: x}\n",
    );
    dir.write(
        "seed.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: seed-\n  annotations: \
         {argocd.argoproj.io/hook: Sync, argocd.argoproj.io/sync-wave: \"1\"}\nspec:\n  \
         backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      \
         containers: [{name: s, image: example.com/seed:1}]\n",
    );
    let apply = converge(&env, &["apply", dir.arg(), "--wait", "--timeout", "90s"]);
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    assert_eq!(
        env.configmap_value("skipped"),
        None,
        "a Skip object was applied"
    );
    let jobs = env.kubectl(&["get", "jobs", "-n", &env.ns, "-o", "name"]);
    assert!(
        jobs.contains("job.batch/seed-"),
        "the sync hook did not run: {jobs}"
    );
    let complete = env.kubectl(&[
        "get",
        "jobs",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.items[0].status.succeeded}",
    ]);
    assert_eq!(complete, "1", "the sync hook was not waited for");
    let text = String::from_utf8_lossy(&apply.stdout);
    assert!(text.contains("[wave 1]"), "{}", describe(&apply));
}

#[test]
fn the_daemon_recreates_an_object_whose_immutable_field_changed_when_the_source_allows() {
    let env = TestEnv::new("claims-recreate");
    let job = |image: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: batch}}\nspec:\n  \
             backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      \
             containers: [{{name: b, image: {image}}}]\n"
        )
    };
    let dir = Manifests::with("job.yaml", &job("example.com/batch:1"));
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"2s\"\nrecreate = true\n",
        dir.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let uid = |env: &TestEnv| {
        let args = [
            "get",
            "job",
            "batch",
            "-n",
            &env.ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ];
        let out = env.kubectl_output(&args, None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = eventually(Duration::from_secs(30), || {
        Some(uid(&env)).filter(|u| !u.is_empty())
    });
    let first = first.map(|f| f.value).unwrap_or_default();
    assert!(!first.is_empty(), "never created:\n{}", daemon.log());
    dir.write("job.yaml", &job("example.com/batch:2"));
    let image = |env: &TestEnv| {
        let path = "jsonpath={.spec.template.spec.containers[0].image}";
        let out = env.kubectl_output(&["get", "job", "batch", "-n", &env.ns, "-o", path], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let recreated = eventually(Duration::from_secs(60), || {
        image(&env) == "example.com/batch:2" && uid(&env) != first
    });
    assert!(recreated.is_some(), "not recreated:\n{}", daemon.log());
    let status = daemon.source();
    assert_eq!(status["result"], "synced", "{status:#}");
}

#[test]
fn a_report_only_daemon_masks_secret_values_in_its_status_diff() {
    let env = TestEnv::new("claims-masked");
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\n\
             stringData: {{password: {value}}}\n"
        )
    };
    let dir = Manifests::with("secret.yaml", &secret("hunter2-old"));
    // The daemon's source is named after the namespace: the same ApplySet.
    let apply = converge(&env, &["apply", dir.arg(), "--name", &env.ns]);
    assert_eq!(apply.status.code(), Some(0), "{}", describe(&apply));
    dir.write("secret.yaml", &secret("hunter2-new"));
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"2s\"\nself_heal = false\n",
        dir.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let drifted = eventually(Duration::from_secs(30), || {
        let status = daemon.source();
        (status["result"] == "drifted").then_some(status)
    });
    let status = drifted
        .map(|d| d.value)
        .unwrap_or_else(|| panic!("never drifted: {:#}", daemon.source()));
    let text = status.to_string();
    assert!(
        text.contains("password"),
        "the changed key is named: {status:#}"
    );
    for value in [
        "hunter2-old",
        "hunter2-new",
        "aHVudGVyMi1vbGQ",
        "aHVudGVyMi1uZXc",
    ] {
        assert!(
            !text.contains(value),
            "{value} leaked into /status: {status:#}"
        );
        assert!(!daemon.log().contains(value), "{value} leaked into the log");
    }
    let stored = [
        "get",
        "secret",
        "creds",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.data.password}",
    ];
    assert_eq!(
        env.kubectl(&stored),
        "aHVudGVyMi1vbGQ=",
        "a report-only daemon wrote"
    );
}
