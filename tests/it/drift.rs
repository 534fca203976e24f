//! Drift that server-side apply alone does not see, against the real control plane
//! and checked with kubectl (issue #12):
//!
//! - edits by the kubectl family (`kubectl patch`, `kubectl label`, …) inside
//!   converge's objects are drift: `diff` shows them (exit 1, the field named), and
//!   `apply` and the daemon's self-heal remove them, by taking those managers'
//!   fields over before applying;
//! - fields of any other manager (another tool's server-side apply, a controller)
//!   stay, and fields an ignore rule names are neither reported nor written;
//! - an immutable field changes by delete and re-create only when allowed;
//! - a rejected revision leaves no Namespace or CRD behind.

use crate::common::daemon::Daemon;
use crate::common::watch::Events;
use crate::common::{Manifests, TestEnv, assert_success, eventually};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// The exit codes of `converge diff`: 0 no changes, 1 changes, 2 error.
const NO_DIFF: i32 = 0;
const DIFF: i32 = 1;
const ERROR: i32 = 2;

/// A Deployment and a Service, as small as they come with the fields the edits touch.
const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        env: [{name: MODE, value: declared}]
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {app: web}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
";

/// A test's namespace and its manifests (APP unless the test writes others).
struct Setup {
    env: TestEnv,
    manifests: Manifests,
}

impl Setup {
    fn new(test: &str) -> Self {
        let setup = Setup {
            env: TestEnv::new(test),
            manifests: Manifests::new(),
        };
        setup.manifests.write("app.yaml", APP);
        setup
    }

    /// Runs converge with the test's namespace and ApplySet name.
    fn converge(&self, args: &[&str]) -> Output {
        self.env
            .converge_command()
            .args(args)
            .args(["-n", &self.env.ns, "--name", &self.env.ns])
            .output()
            .expect("run converge")
    }

    /// `converge apply --prune -o json` of the manifests, which must succeed.
    fn apply(&self, extra: &[&str]) -> Value {
        let mut args = vec!["apply", self.manifests.arg(), "--prune", "-o", "json"];
        args.extend(extra);
        let out = self.converge(&args);
        assert_success("converge apply", &out);
        serde_json::from_slice(&out.stdout).expect("apply -o json prints JSON")
    }

    /// `converge diff --prune` of the manifests: exit code and stdout (stderr on error).
    fn diff(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["diff", self.manifests.arg(), "--prune"];
        args.extend(extra);
        let out = self.converge(&args);
        let code = out.status.code().expect("exit code");
        let text = match code {
            NO_DIFF | DIFF => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        (code, text)
    }

    /// `converge diff -o json`: the changed paths of every object to configure.
    fn changed_paths(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["diff", self.manifests.arg(), "--prune", "-o", "json"];
        args.extend(extra);
        let out = self.converge(&args);
        assert_eq!(out.status.code(), Some(DIFF), "{out:?}");
        let plan: Value = serde_json::from_slice(&out.stdout).expect("diff -o json prints JSON");
        plan["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .filter_map(|o| o["changedPaths"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    }

    /// The paths `converge diff -vv` dry-ran on the server (see engine.rs).
    fn dry_run_paths(&self) -> (i32, Vec<String>) {
        let out = self.converge(&["diff", self.manifests.arg(), "-vv"]);
        let code = out.status.code().expect("exit code");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(code < ERROR, "diff failed: {stderr}");
        let paths = stderr
            .lines()
            .filter(|l| l.contains("server_dry_run=true") && l.contains("response"))
            .filter_map(|l| l.split("path=").nth(1)?.split_whitespace().next())
            .map(str::to_string)
            .collect();
        (code, paths)
    }

    /// kubectl in the test's namespace.
    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", &self.env.ns]);
        self.env.kubectl(&all)
    }

    /// `kubectl get <object> -o jsonpath=<template>`.
    fn get(&self, object: &str, template: &str) -> String {
        self.kubectl(&["get", object, "-o", &format!("jsonpath={template}")])
    }

    fn uid(&self, object: &str) -> String {
        self.get(object, "{.metadata.uid}")
    }

    fn resource_version(&self, object: &str) -> String {
        self.get(object, "{.metadata.resourceVersion}")
    }

    /// The resourceVersion once controllers stopped updating the object (a new
    /// Deployment's status moves until its rollout settles): the same for 1 s.
    fn settled_version(&self, object: &str) -> String {
        let mut last = self.resource_version(object);
        let settled = eventually(Duration::from_secs(30), || {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.resource_version(object);
            let same = now == last;
            last = now;
            same
        });
        assert!(settled.is_some(), "{object} never settled");
        last
    }
}

/// Whether the unified diff removes a line containing `needle` (a `-` line that is
/// not the `---` header).
fn removes(diff: &str, needle: &str) -> bool {
    diff.lines()
        .any(|l| l.starts_with('-') && !l.starts_with("---") && l.contains(needle))
}

/// An out-of-band edit as a person makes it with kubectl, and how to see it.
struct Edit {
    /// The kubectl command (run in the test's namespace).
    kubectl: &'static [&'static str],
    /// The object it edits and a jsonpath that reads the edited field.
    object: &'static str,
    jsonpath: &'static str,
    /// What the jsonpath reads as declared, and after the edit.
    declared: &'static str,
    edited: &'static str,
    /// A line the diff must remove, and the prefix of a changed path it must name.
    removed_line: &'static str,
    changed_path: &'static str,
}

const ENV_VAR: Edit = Edit {
    kubectl: &[
        "patch",
        "deployment",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"INJECTED","value":"by-hand"}]}]}}}}"#,
    ],
    object: "deployment/web",
    jsonpath: "{.spec.template.spec.containers[0].env[*].name}",
    declared: "MODE",
    edited: "INJECTED",
    removed_line: "name: INJECTED",
    changed_path: "spec.template.spec.containers[0].env",
};

const SIDECAR: Edit = Edit {
    kubectl: &[
        "patch",
        "deployment",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#,
    ],
    object: "deployment/web",
    jsonpath: "{.spec.template.spec.containers[*].name}",
    declared: "web",
    edited: "sidecar",
    removed_line: "name: sidecar",
    changed_path: "spec.template.spec.containers[",
};

const LABEL: Edit = Edit {
    kubectl: &["label", "deployment", "web", "injected=by-hand"],
    object: "deployment/web",
    jsonpath: "{.metadata.labels.injected}",
    declared: "",
    edited: "by-hand",
    removed_line: "injected: by-hand",
    changed_path: "metadata.labels.injected",
};

/// The ports list replaced with port 81 under the same name: a plain apply merges
/// converge's port 80 with it and the server rejects the duplicate name `http`.
const PORTS: Edit = Edit {
    kubectl: &[
        "patch",
        "service",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ports":[{"name":"http","port":81,"targetPort":8080}]}}"#,
    ],
    object: "service/web",
    jsonpath: "{.spec.ports[*].port}",
    declared: "80",
    edited: "81",
    removed_line: "port: 81",
    changed_path: "spec.ports[0].port",
};

impl Edit {
    fn make(&self, setup: &Setup) {
        setup.kubectl(self.kubectl);
        let read = setup.get(self.object, self.jsonpath);
        assert!(read.contains(self.edited), "the edit did not land: {read}");
    }

    fn read(&self, setup: &Setup) -> String {
        setup.get(self.object, self.jsonpath)
    }
}

/// `diff` shows the edit (exit 1, the field named and its line removed), `apply`
/// removes it, and then there is nothing left to diff.
fn kubectl_edit_is_drift(test: &str, edit: &Edit) {
    let setup = Setup::new(test);
    setup.apply(&[]);
    edit.make(&setup);

    let (code, diff) = setup.diff(&[]);
    assert_eq!(code, DIFF, "the edit is drift:\n{diff}");
    assert!(
        removes(&diff, edit.removed_line),
        "the diff removes {:?}:\n{diff}",
        edit.removed_line
    );
    let paths = setup.changed_paths(&[]);
    assert!(
        paths.iter().any(|p| p.starts_with(edit.changed_path)),
        "changedPaths name {:?}: {paths:?}",
        edit.changed_path
    );

    let started = Instant::now();
    let applied = setup.apply(&[]);
    println!("{test}: healed by apply in {:?}", started.elapsed());
    assert_eq!(applied["summary"]["configured"], 1, "{applied:#}");
    assert_eq!(edit.read(&setup), edit.declared, "apply removed the edit");
    let (code, diff) = setup.diff(&[]);
    assert_eq!(code, NO_DIFF, "in sync again:\n{diff}");
}

#[test]
fn a_kubectl_patched_env_var_is_drift() {
    kubectl_edit_is_drift("drift-env", &ENV_VAR);
}

#[test]
fn a_kubectl_added_container_is_drift() {
    kubectl_edit_is_drift("drift-sidecar", &SIDECAR);
}

#[test]
fn a_kubectl_label_is_drift() {
    kubectl_edit_is_drift("drift-label", &LABEL);
}

#[test]
fn a_replaced_service_port_list_heals() {
    kubectl_edit_is_drift("drift-ports", &PORTS);
}

/// The managedFields proof never vouches for an object that a kubectl-family
/// manager edited: that object (and only it) is dry-run. Once apply has taken the
/// edit over and removed it, the proof holds again and diff sends no dry-run.
#[test]
fn the_proof_refuses_kubectl_edits_and_holds_after_healing() {
    let setup = Setup::new("drift-proof");
    setup.apply(&[]);
    assert_eq!(setup.dry_run_paths(), (NO_DIFF, vec![]));

    LABEL.make(&setup);
    let deployment = format!("/apis/apps/v1/namespaces/{}/deployments/web", setup.env.ns);
    // Asked twice: the dry-run apply, then what the takeover leaves, validated.
    let (code, mut paths) = setup.dry_run_paths();
    paths.dedup();
    assert_eq!((code, paths), (DIFF, vec![deployment]));

    setup.apply(&[]);
    assert_eq!(
        setup.dry_run_paths(),
        (NO_DIFF, vec![]),
        "after the takeover the proof holds again"
    );
}

/// Another tool's server-side apply is not drift: its fields stay, and (the
/// managedFields proof staying exact) it costs no write.
#[test]
fn another_managers_fields_survive() {
    let setup = Setup::new("drift-team-b");
    setup.apply(&[]);
    let team_b = "apiVersion: apps/v1\nkind: Deployment\n\
                  metadata: {name: web, labels: {team: b}, annotations: {team-b/owner: alice}}\n";
    setup.env.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "-n",
            &setup.env.ns,
            "-f",
            "-",
        ],
        team_b,
    );
    let (code, diff) = setup.diff(&[]);
    assert_eq!(
        code, NO_DIFF,
        "another manager's fields are not drift:\n{diff}"
    );
    let before = setup.settled_version("deployment/web");
    let applied = setup.apply(&[]);
    assert_eq!(applied["summary"]["unchanged"], 2, "{applied:#}");
    assert_eq!(setup.resource_version("deployment/web"), before);
    let kept = setup.get(
        "deployment/web",
        "{.metadata.labels.team} {.metadata.annotations.team-b/owner}",
    );
    assert_eq!(kept, "b alice");
}

/// `kubectl annotate … converge.dev/prune=disabled` is how a person keeps an object
/// that is about to leave the source: converge's own opt-out is not drift.
#[test]
fn a_prune_opt_out_set_with_kubectl_stays() {
    let setup = Setup::new("drift-keep");
    setup.apply(&[]);
    let keep = ["annotate", "service", "web", "converge.dev/prune=disabled"];
    setup.kubectl(&keep);
    let (code, diff) = setup.diff(&[]);
    assert_eq!(code, NO_DIFF, "{diff}");
    setup
        .manifests
        .write("app.yaml", APP.split("---").next().expect("the Deployment"));
    let applied = setup.apply(&[]);
    assert_eq!(applied["summary"]["kept"], 1, "{applied:#}");
    assert_eq!(setup.get("service/web", "{.metadata.name}"), "web");
}

/// An HPA-style owner of `replicas` (here another field manager), with an ignore
/// rule: the changed replicas are neither reported nor written back, while every
/// other field of the object is still converged.
#[test]
fn an_ignored_field_is_neither_reported_nor_written() {
    let setup = Setup::new("drift-ignore");
    setup.apply(&[]);
    let scale = r#"{"spec":{"replicas":5}}"#;
    let as_hpa = [
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        scale,
        "--field-manager=hpa-controller",
    ];
    setup.kubectl(&as_hpa);
    let ignore = ["--ignore", "Deployment:/spec/replicas"];

    let (code, diff) = setup.diff(&[]);
    assert_eq!(code, DIFF, "without the rule replicas is drift:\n{diff}");
    assert!(removes(&diff, "replicas: 5"), "{diff}");
    let (code, diff) = setup.diff(&ignore);
    assert_eq!(code, NO_DIFF, "with the rule it is not:\n{diff}");
    assert!(!diff.contains("replicas"), "{diff}");
    let (code, paths) = {
        let out = setup.converge(&["diff", setup.manifests.arg(), "-vv", ignore[0], ignore[1]]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let dry_runs = stderr
            .lines()
            .filter(|l| l.contains("server_dry_run=true") && l.contains("response"))
            .count();
        (out.status.code(), dry_runs)
    };
    assert_eq!(
        (code, paths),
        (Some(NO_DIFF), 0),
        "the proof holds with the ignored field left out"
    );

    let before = setup.settled_version("deployment/web");
    let applied = setup.apply(&ignore);
    assert_eq!(applied["summary"]["unchanged"], 2, "{applied:#}");
    assert_eq!(
        setup.resource_version("deployment/web"),
        before,
        "not written"
    );

    // Other changes still apply; the ignored field keeps the other owner's value.
    setup
        .manifests
        .write("app.yaml", &APP.replace("nginx:1.27", "nginx:1.28"));
    let applied = setup.apply(&ignore);
    assert_eq!(applied["summary"]["configured"], 1, "{applied:#}");
    let live = setup.get(
        "deployment/web",
        "{.spec.replicas} {.spec.template.spec.containers[0].image}",
    );
    assert_eq!(live, "5 nginx:1.28");
    assert_eq!(setup.diff(&ignore).0, NO_DIFF);
}

/// A Deployment whose selector changed (an immutable field), optionally annotated
/// to allow converge to delete and re-create it.
fn new_selector(annotation: Option<&str>) -> String {
    let annotations = annotation
        .map(|a| format!(", annotations: {{converge.dev/recreate: {a}}}"))
        .unwrap_or_default();
    APP.replace(
        "metadata: {name: web, labels: {app: web}}\nspec:\n  replicas",
        &format!("metadata: {{name: web, labels: {{app: web}}{annotations}}}\nspec:\n  replicas"),
    )
    .replace(
        "selector: {matchLabels: {app: web}}",
        "selector: {matchLabels: {app: web, track: stable}}",
    )
    .replace(
        "template:\n    metadata: {labels: {app: web}}",
        "template:\n    metadata: {labels: {app: web, track: stable}}",
    )
}

#[test]
fn a_changed_selector_is_recreated_when_the_object_allows_it() {
    let setup = Setup::new("drift-recreate");
    setup.apply(&[]);
    let old_uid = setup.uid("deployment/web");
    setup
        .manifests
        .write("app.yaml", &new_selector(Some("allowed")));

    let (code, diff) = setup.diff(&[]);
    assert_eq!(code, DIFF, "{diff}");
    assert!(
        diff.contains("recreated") && diff.contains("track: stable"),
        "{diff}"
    );
    let started = Instant::now();
    let applied = setup.apply(&[]);
    println!("recreated in {:?}", started.elapsed());
    assert_eq!(applied["summary"]["recreated"], 1, "{applied:#}");
    let recreated = applied["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["action"] == "recreate");
    assert!(recreated.is_some(), "{applied:#}");
    assert_ne!(setup.uid("deployment/web"), old_uid, "a new object");
    assert_eq!(
        setup.get("deployment/web", "{.spec.selector.matchLabels.track}"),
        "stable"
    );
    assert_eq!(setup.diff(&[]).0, NO_DIFF);
}

#[test]
fn a_changed_selector_without_permission_names_the_field_and_the_annotation() {
    let setup = Setup::new("drift-immutable");
    setup.apply(&[]);
    let old_uid = setup.uid("deployment/web");
    setup.manifests.write("app.yaml", &new_selector(None));

    let out = setup.converge(&["apply", setup.manifests.arg(), "--prune"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(ERROR), "{stderr}");
    assert!(
        stderr.contains("spec.selector")
            && stderr.contains("immutable")
            && stderr.contains("converge.dev/recreate: allowed"),
        "{stderr}"
    );
    assert_eq!(setup.uid("deployment/web"), old_uid, "nothing was deleted");

    // The command-line equivalent of `recreate = true` on a source.
    let applied = setup.apply(&["--recreate"]);
    assert_eq!(applied["summary"]["recreated"], 1, "{applied:#}");
    assert_ne!(setup.uid("deployment/web"), old_uid);
}

#[test]
fn a_rejected_revision_leaves_no_namespace_or_crd_behind() {
    let setup = Setup::new("drift-rejected");
    let env = &setup.env;
    let (kept, extra) = (format!("{}-k", env.ns), format!("{}-x", env.ns));
    let group = format!("{}.converge.test", env.ns);
    let crd = format!("gadgets.{group}");
    // A Namespace of an earlier revision: it existed before the refused run, so
    // the refusal must leave it alone.
    let namespace =
        |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    setup.manifests.write("kept.yaml", &namespace(&kept));
    setup.apply(&[]);
    setup.manifests.write(
        "new.yaml",
        &format!(
            "{}---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fine, namespace: {extra}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: {extra}}}\n\
             spec: {{ports: [{{port: 99999}}]}}\n---\n\
             apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata: {{name: {crd}}}\n\
             spec:\n  group: {group}\n  scope: Namespaced\n\
             \x20 names: {{plural: gadgets, singular: gadget, kind: Gadget}}\n\
             \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
             \x20   schema: {{openAPIV3Schema: {{type: object}}}}\n---\n\
             apiVersion: {group}/v1\nkind: Gadget\nmetadata: {{name: g}}\n",
            namespace(&extra)
        ),
    );
    // Watches open before the run record what it creates and deletes.
    let namespaces = Events::record(env, &["namespaces"], "");
    let crds = Events::record(env, &["customresourcedefinitions"], "");
    let out = setup.converge(&["apply", setup.manifests.arg(), "--prune"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(ERROR), "{stderr}");
    assert!(
        stderr.contains(&format!("Service/{extra}/bad")) && stderr.contains("nothing was written"),
        "{stderr}"
    );
    let started = Instant::now();
    namespaces.assert_created_then_deleted("namespace", &extra);
    crds.assert_created_then_deleted("CRD", &crd);
    println!("cleaned up after {:?}", started.elapsed());
    let phase = env.kubectl(&["get", "namespace", &kept, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Active", "a Namespace that existed before stays");
    env.kubectl(&["delete", "namespace", &kept, "--wait=false"]);
}

/// The daemon's config: one directory source applying into the test's namespace,
/// with self-heal on or off and `extra` TOML appended to the source.
fn daemon_config(dir: &Path, self_heal: bool, extra: &str) -> String {
    format!(
        "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"1h\"\nprune = true\nself_heal = {self_heal}\n{extra}",
        dir.display()
    )
}

/// Every kubectl edit is healed by the daemon on its own, while replicas that an
/// ignore rule leaves to another owner keep that owner's value.
#[test]
fn the_daemon_heals_kubectl_edits_and_keeps_ignored_fields() {
    let setup = Setup::new("drift-daemon");
    let ignore = "\n[[source.ignore]]\nkind = \"Deployment\"\npaths = [\"/spec/replicas\"]\n";
    let config = daemon_config(setup.manifests.path(), true, ignore);
    let daemon = Daemon::start(&setup.env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(daemon.source()["result"], "synced", "{}", daemon.log());

    for edit in [&ENV_VAR, &SIDECAR, &LABEL, &PORTS] {
        let started = Instant::now();
        setup.kubectl(edit.kubectl);
        let healed = eventually(Duration::from_secs(20), || {
            edit.read(&setup) == edit.declared
        });
        assert!(
            healed.is_some(),
            "{:?} never healed (reads {:?}):\n{}",
            edit.kubectl,
            edit.read(&setup),
            daemon.log()
        );
        println!(
            "{:?} healed after {:?}",
            edit.kubectl[..2].to_vec(),
            started.elapsed()
        );
    }

    let from = daemon.log().len();
    setup.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
        "--field-manager=hpa-controller",
    ]);
    // Only once the daemon has seen the change and reconciled after it does the
    // value prove that the ignore rule held.
    let web = format!("Deployment.apps/{}/web", setup.env.ns);
    let acted = eventually(Duration::from_secs(30), || {
        daemon.reconciled_after_change(from, &web)
    });
    assert!(
        acted.is_some(),
        "the daemon never saw {web} change and reconciled:\n{}",
        daemon.log()
    );
    assert_eq!(
        setup.get("deployment/web", "{.spec.replicas}"),
        "5",
        "the daemon overwrote replicas, which its ignore rule leaves to another owner"
    );
    let synced = eventually(Duration::from_secs(10), || {
        daemon.source()["result"] == "synced"
    });
    assert!(synced.is_some(), "{:#}", daemon.source());
}

/// With self-heal off, a kubectl edit shows as drift in /status, with its diff,
/// and stays.
#[test]
fn the_daemon_reports_kubectl_edits_as_drift() {
    let setup = Setup::new("drift-report");
    setup.apply(&[]);
    let config = daemon_config(setup.manifests.path(), false, "");
    let daemon = Daemon::start(&setup.env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(daemon.source()["result"], "synced", "{}", daemon.log());

    ENV_VAR.make(&setup);
    let drifted = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "drifted").then_some(source)
    });
    let source = drifted
        .unwrap_or_else(|| panic!("drift never reported:\n{}", daemon.log()))
        .value;
    let object = source["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["state"] == "drifted")
        .unwrap_or_else(|| panic!("no drifted object: {source:#}"));
    let diff = object["diff"].as_str().expect("a diff");
    assert!(removes(diff, "name: INJECTED"), "{diff}");
    assert!(
        ENV_VAR.read(&setup).contains("INJECTED"),
        "report-only never heals"
    );
}
