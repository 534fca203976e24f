//! `converge apply` and `converge diff` against the real control plane, checked
//! with kubectl: exact diffs, no false drift, staged apply, safe prune, and bad
//! input that changes nothing.

use crate::common::watch::Events;
use crate::common::{
    Manifests, TestEnv, assert_success, configmap, corpus_microservices_demo, eventually,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

trait ConvergeExt {
    fn converge(&self, args: &[&str]) -> Output;
    fn apply(&self, source: &Path, extra: &[&str]) -> Value;
    fn diff(&self, source: &Path) -> (i32, String);
    fn resource_versions(&self, kinds: &str) -> BTreeMap<String, String>;
}

impl ConvergeExt for TestEnv {
    /// Runs converge with the test's namespace and ApplySet name.
    fn converge(&self, args: &[&str]) -> Output {
        self.converge_command()
            .args(args)
            .args(["-n", &self.ns, "--name", &self.ns])
            .output()
            .expect("run converge")
    }

    /// `converge apply --prune -o json`, which must succeed.
    fn apply(&self, source: &Path, extra: &[&str]) -> Value {
        let path = source.to_str().expect("utf-8 path");
        let mut args = vec!["apply", path, "--prune", "-o", "json"];
        args.extend(extra);
        let out = self.converge(&args);
        assert_success("converge apply", &out);
        serde_json::from_slice(&out.stdout).expect("apply -o json prints JSON")
    }

    /// `converge diff --prune`: exit code and stdout.
    fn diff(&self, source: &Path) -> (i32, String) {
        let out = self.converge(&["diff", source.to_str().expect("utf-8"), "--prune"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = out.status.code().expect("exit code");
        assert!(
            code < 2,
            "diff failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, stdout)
    }

    /// `kind/name` → resourceVersion for the given kinds in the test namespace.
    fn resource_versions(&self, kinds: &str) -> BTreeMap<String, String> {
        let template =
            "{range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}";
        self.kubectl(&[
            "get",
            kinds,
            "-n",
            &self.ns,
            "-o",
            &format!("jsonpath={template}"),
        ])
        .lines()
        .filter_map(|l| l.split_once('='))
        // What the controller-manager puts in every namespace is not ours.
        .filter(|(k, _)| !matches!(*k, "ConfigMap/kube-root-ca.crt" | "ServiceAccount/default"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The exit codes of `converge diff`/`apply`: 0 nothing to do (or applied), 1 a diff.
const NO_DIFF: i32 = 0;
const DIFF: i32 = 1;

const DEMO_KINDS: &str = "deployments,services,serviceaccounts,configmaps";

/// The Deployments whose rollout the controller has not finished with, and
/// why: it has not observed the latest generation, its replica counts differ,
/// or its Progressing condition is not yet `NewReplicaSetAvailable` (the last
/// status update of a rollout).
fn unsettled_rollouts(env: &TestEnv) -> Vec<String> {
    let template = "{range .items[*]}{.metadata.name} {.metadata.generation} \
                    {.status.observedGeneration} {.spec.replicas} {.status.replicas} \
                    {.status.updatedReplicas} {.status.readyReplicas} \
                    {.status.availableReplicas} \
                    {.status.conditions[?(@.type==\"Progressing\")].reason}{\"\\n\"}{end}";
    let jsonpath = format!("jsonpath={template}");
    let out = env.kubectl(&["get", "deployments", "-n", &env.ns, "-o", &jsonpath]);
    out.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [_, generation, observed, counts @ .., reason] = fields.as_slice() else {
                return true;
            };
            generation != observed
                || counts.iter().any(|c| *c != counts[0])
                || *reason != "NewReplicaSetAvailable"
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn corpus_applies_once_then_nothing_changes() {
    let env = TestEnv::new("corpus");
    let corpus = corpus_microservices_demo();
    let first = env.apply(&corpus, &[]);
    assert_eq!(first["summary"]["created"], 35, "{first:#}");
    // Controllers update Deployment status (and so resourceVersion) until rollouts
    // settle; only then does an unchanged resourceVersion prove we wrote nothing.
    let unsettled = eventually(Duration::from_secs(120), || {
        let unsettled = unsettled_rollouts(&env);
        unsettled.is_empty().then_some(())
    });
    assert!(
        unsettled.is_some(),
        "rollouts never settled: {:?}",
        unsettled_rollouts(&env)
    );
    let before = env.resource_versions(DEMO_KINDS);
    assert_eq!(
        before
            .keys()
            .filter(|k| !k.starts_with("ConfigMap/"))
            .count(),
        35
    );

    let second = env.apply(&corpus, &[]);
    assert_eq!(second["summary"]["unchanged"], 35, "{second:#}");
    assert_eq!(second["changed"], false);
    assert_eq!(
        env.resource_versions(DEMO_KINDS),
        before,
        "a no-op apply must write nothing"
    );
    assert_eq!(env.diff(&corpus).0, 0);
}

/// The paths `converge diff -vv` dry-ran on the server: a no-op diff of objects
/// whose managedFields prove them in sync needs none.
fn dry_run_paths(env: &TestEnv, source: &Path) -> (i32, Vec<String>) {
    let out = env.converge(&["diff", source.to_str().expect("utf-8"), "-vv"]);
    let code = out.status.code().expect("exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(code < 2, "diff failed: {stderr}");
    let paths = stderr
        .lines()
        .filter(|l| l.contains("server_dry_run=true") && l.contains("response"))
        .filter_map(|l| l.split("path=").nth(1)?.split_whitespace().next())
        .map(str::to_string)
        .collect();
    (code, paths)
}

#[test]
fn in_sync_objects_need_no_dry_run_and_changed_ones_do() {
    let env = TestEnv::new("proof");
    let corpus = corpus_microservices_demo();
    env.apply(&corpus, &[]);
    let (code, paths) = dry_run_paths(&env, &corpus);
    assert_eq!(
        (code, paths),
        (0, vec![]),
        "managedFields prove all 35 in sync"
    );

    // A field converge owns, changed by someone else, moves to their manager:
    // only that object is asked about, and the diff shows the change.
    let ns = env.ns.as_str();
    env.kubectl(&[
        "set",
        "image",
        "-n",
        ns,
        "deployment/adservice",
        "server=nginx:drift",
    ]);
    let (code, paths) = dry_run_paths(&env, &corpus);
    let adservice = format!("/apis/apps/v1/namespaces/{ns}/deployments/adservice");
    assert_eq!((code, paths), (1, vec![adservice]));
    let (_, diff) = env.diff(&corpus);
    assert!(diff.contains("-        image: nginx:drift"), "{diff}");
}

/// Written the way people write them: server-side defaults and normalised
/// quantities must not show up as drift.
const NATURAL: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{name: http, containerPort: 8080}]
        resources:
          requests: {cpu: 1000m, memory: 0.5Gi}
          limits: {cpu: "2", memory: 1024Mi}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2-natural}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres:16, resources: {requests: {memory: 0.25Gi}}}]
"#;

#[test]
fn naturally_written_manifests_show_no_false_drift() {
    let env = TestEnv::new("natural");
    let source = Manifests::new();
    source.write("app.yaml", NATURAL);
    assert_eq!(env.apply(source.path(), &[])["summary"]["created"], 4);
    let (code, out) = env.diff(source.path());
    assert_eq!(code, 0, "false drift:\n{out}");
    assert!(
        out.contains("0 created, 0 configured, 4 unchanged, 0 pruned"),
        "{out}"
    );
}

const SCALED: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {tier: front}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
";

#[test]
fn out_of_band_changes_show_as_exact_diffs_and_apply_restores_them() {
    let env = TestEnv::new("drift");
    let source = Manifests::new();
    source.write("web.yaml", SCALED);
    env.apply(source.path(), &[]);

    env.kubectl(&["scale", "deployment", "web", "-n", &env.ns, "--replicas=5"]);
    let (code, out) = env.diff(source.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("-  replicas: 5") && out.contains("+  replicas: 2"),
        "{out}"
    );
    let json = env.converge(&["diff", source.arg(), "-o", "json"]);
    assert_eq!(json.status.code(), Some(DIFF), "{json:?}");
    let plan: Value = serde_json::from_slice(&json.stdout).expect("json");
    let changed: Vec<&Value> = plan["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["action"] == "configure")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0]["changedPaths"],
        serde_json::json!(["spec.replicas"])
    );

    env.kubectl(&[
        "patch",
        "deployment",
        "web",
        "-n",
        &env.ns,
        "-p",
        r#"{"metadata":{"labels":{"tier":"back"}}}"#,
    ]);
    let (code, out) = env.diff(source.path());
    assert_eq!(code, 1);
    assert!(
        out.contains("-    tier: back") && out.contains("+    tier: front"),
        "{out}"
    );

    let applied = env.apply(source.path(), &[]);
    assert_eq!(applied["summary"]["configured"], 1);
    let replicas = env.kubectl(&[
        "get",
        "deployment",
        "web",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.replicas} {.metadata.labels.tier}",
    ]);
    assert_eq!(replicas, "2 front");
    assert_eq!(env.diff(source.path()).0, 0);
}

#[test]
fn removed_fields_go_and_other_managers_fields_stay() {
    let env = TestEnv::new("fields");
    let source = Manifests::new();
    source.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: '1', b: '2'}\n",
    );
    env.apply(source.path(), &[]);
    // Another tool's server-side apply (a kubectl-family edit would be drift).
    env.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=team-b",
            "-n",
            &env.ns,
            "-f",
            "-",
        ],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, labels: {team: payments}}\n",
    );

    source.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: '1'}\n",
    );
    env.apply(source.path(), &[]);
    let live = env.kubectl(&["get", "configmap", "cfg", "-n", &env.ns, "-o", "json"]);
    let live: Value = serde_json::from_str(&live).expect("json");
    assert_eq!(
        live["data"],
        serde_json::json!({"a": "1"}),
        "b was removed from the manifest"
    );
    assert_eq!(
        live["metadata"]["labels"]["team"], "payments",
        "another manager's label stays"
    );
    assert_eq!(
        env.diff(source.path()).0,
        0,
        "fields we do not declare are not drift"
    );
}

#[test]
fn crd_and_its_custom_resource_apply_in_one_run() {
    let env = TestEnv::new("crd");
    let group = format!("{}.converge.test", env.ns);
    let source = Manifests::new();
    source.write(
        "crd.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{size: {{type: integer}}}}}}
"
        ),
    );
    source.write(
        "widget.yaml",
        &format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {{size: 3}}\n"
        ),
    );
    let result = env.apply(source.path(), &[]);
    assert_eq!(result["summary"]["created"], 2, "{result:#}");
    let size = env.kubectl(&[
        "get",
        &format!("widgets.{group}"),
        "w",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.size}",
    ]);
    assert_eq!(size, "3");
    assert_eq!(env.diff(source.path()).0, 0);
    env.kubectl(&["delete", "crd", &format!("widgets.{group}"), "--wait=false"]);
}

#[test]
fn prune_deletes_only_what_the_applyset_owns() {
    let env = TestEnv::new("prune");
    let ns = env.ns.as_str();
    let source = Manifests::new();
    let cm = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{app: shop}}}}\ndata: {{k: v}}\n"
        )
    };
    for name in ["keep", "gone", "sticky", "other"] {
        source.write(&format!("{name}.yaml"), &cm(name));
    }
    env.apply(source.path(), &[]);
    env.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], &cm("by-kubectl"));
    env.kubectl(&[
        "annotate",
        "configmap",
        "sticky",
        "-n",
        ns,
        "converge.dev/prune=disabled",
    ]);

    source.remove("gone.yaml");
    source.remove("sticky.yaml");
    let result = env.apply(source.path(), &[]);
    assert_eq!(result["summary"]["pruned"], 1, "{result:#}");
    assert_eq!(result["summary"]["kept"], 1, "{result:#}");
    let names = env.kubectl(&[
        "get",
        "configmaps",
        "-n",
        ns,
        "-l",
        "app=shop",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(names, "by-kubectl keep other sticky");

    // An empty source deletes nothing and says why.
    let empty = Manifests::new();
    let out = env.converge(&["apply", empty.arg(), "--prune"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no manifests found"),
        "{out:?}"
    );
    let names = env.kubectl(&[
        "get",
        "configmaps",
        "-n",
        ns,
        "-l",
        "app=shop",
        "-o",
        "name",
    ]);
    assert_eq!(names.lines().count(), 4);
}

#[test]
fn mass_prune_is_refused_without_the_flag() {
    let env = TestEnv::new("mass-prune");
    let source = Manifests::new();
    for name in ["a", "b", "c"] {
        source.write(&format!("{name}.yaml"), &configmap(name, "1"));
    }
    env.apply(source.path(), &[]);
    source.remove("b.yaml");
    source.remove("c.yaml");
    let out = env.converge(&["apply", source.arg(), "--prune"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-mass-prune"),
        "{out:?}"
    );
    assert_eq!(
        env.resource_versions("configmaps").len(),
        4,
        "3 members + the ApplySet parent"
    );
    env.apply(source.path(), &["--allow-mass-prune"]);
    assert_eq!(env.resource_versions("configmaps").len(), 2);
}

/// Whether `text` names `file:line` (as a path's last part, and that whole line number).
fn points_at(text: &str, location: &str) -> bool {
    let needle = format!("/{location}");
    text.match_indices(&needle).any(|(at, _)| {
        let after = text[at + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Each broken revision exits 2, names the place and the reason, and writes nothing.
#[test]
fn bad_input_changes_nothing() {
    let env = TestEnv::new("bad-input");
    let source = Manifests::new();
    source.write("good.yaml", &configmap("good", "1"));
    env.apply(source.path(), &[]);
    let before = env.resource_versions("configmaps,services,deployments");

    let changed_good = configmap("good", "2");
    // (file, text, where the error points, what it says); the leading comment and
    // `---` put the object on line 3, so a line number must be counted, not assumed.
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            "broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n",
            "broken.yaml:5",
            "invalid YAML",
        ),
        (
            "nokind.yaml",
            "---\napiVersion: v1\nmetadata: {name: x}\n",
            "nokind.yaml:2",
            "kind is missing",
        ),
        (
            "dup.yaml",
            "# a copy\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\n",
            "dup.yaml:3",
            "duplicate object",
        ),
        (
            "unknown.yaml",
            "# a gadget\n---\napiVersion: nope.example.com/v1\nkind: Gadget\nmetadata: {name: g}\n",
            "unknown.yaml:3",
            "unknown kind Gadget",
        ),
        (
            "invalid.yaml",
            "# a bad port\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n\
             spec: {ports: [{port: 99999}]}\n",
            "invalid.yaml:3",
            "Service/",
        ),
    ];
    for (file, text, location, reason) in cases {
        source.write("good.yaml", &changed_good);
        source.write(file, text);
        let out = env.converge(&["apply", source.arg(), "--prune"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            points_at(&stderr, location) && stderr.contains(reason),
            "{file}: expected {location} and {reason:?} in {stderr}"
        );
        assert_eq!(
            env.resource_versions("configmaps,services,deployments"),
            before,
            "{file} wrote something"
        );
        source.remove(file);
    }
}

#[test]
fn secret_values_never_appear_in_output_or_logs() {
    let env = TestEnv::new("secrets");
    let source = Manifests::new();
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: {value}}}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: encoded}}\ndata: {{token: {}}}\n",
            "c2VjcmV0LXRva2VuLXZhbHVl" // secret-token-value
        )
    };
    let path = source.arg();
    // Each run's arguments, the exit code it must end with, and its output.
    let mut runs: Vec<(Vec<&str>, i32, Output)> = Vec::new();
    let mut run = |verbosity: &'static str, command: &[&'static str], code: i32| {
        let mut args = vec![verbosity, command[0], path];
        args.extend(&command[1..]);
        let out = env.converge(&args);
        runs.push((args, code, out));
    };
    source.write("s.yaml", &secret("first-secret-value"));
    for verbosity in ["-v", "-vvv"] {
        // Before the first apply both Secrets are missing; after it, in sync.
        let before_apply = if verbosity == "-v" { DIFF } else { NO_DIFF };
        run(verbosity, &["diff"], before_apply);
        run(verbosity, &["apply", "-o", "json"], NO_DIFF);
    }
    source.write("s.yaml", &secret("second-secret-value"));
    for verbosity in ["-v", "-vvv"] {
        run(verbosity, &["diff"], DIFF);
        run(verbosity, &["diff", "-o", "json"], DIFF);
        run(verbosity, &["apply", "--dry-run"], NO_DIFF);
    }
    let diff = String::from_utf8_lossy(&runs[4].2.stdout).into_owned();
    assert!(
        diff.contains("Secret/") && diff.contains("password"),
        "the changed key is shown: {diff}"
    );
    for (args, code, out) in &runs {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(*code), "converge {args:?}:\n{all}");
        for value in [
            "first-secret-value",
            "second-secret-value",
            "secret-token-value",
            "c2VjcmV0LXRva2VuLXZhbHVl",
        ] {
            assert!(!all.contains(value), "secret value {value} leaked:\n{all}");
        }
        for encoded in ["Zmlyc3Qtc2VjcmV0LXZhbHVl", "c2Vjb25kLXNlY3JldC12YWx1ZQ"] {
            assert!(!all.contains(encoded), "base64 secret leaked:\n{all}");
        }
    }
}

#[test]
fn a_namespace_and_its_objects_apply_in_one_run() {
    let env = TestEnv::new("new-ns");
    let extra = format!("{}-extra", env.ns);
    let source = Manifests::new();
    source.write(
        "ns.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {extra}}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: inside, namespace: {extra}}}\ndata: {{k: v}}\n"
        ),
    );
    let result = env.apply(source.path(), &[]);
    assert_eq!(result["summary"]["created"], 2, "{result:#}");
    assert_eq!(
        env.kubectl(&[
            "get",
            "configmap",
            "inside",
            "-n",
            &extra,
            "-o",
            "jsonpath={.data.k}"
        ]),
        "v"
    );
    assert_eq!(env.diff(source.path()).0, 0);
    env.kubectl(&["delete", "namespace", &extra, "--wait=false"]);
}

#[test]
fn diffs_are_colored_only_when_asked() {
    let env = TestEnv::new("color");
    let source = Manifests::new();
    source.write("cm.yaml", &configmap("c", "v"));
    let path = source.arg();
    let colored = env.converge(&["diff", path, "--color", "always"]);
    assert_eq!(colored.status.code(), Some(DIFF), "{colored:?}");
    assert!(
        String::from_utf8_lossy(&colored.stdout).contains("\x1b[32m+"),
        "{colored:?}"
    );
    let plain = env.converge(&["diff", path]);
    assert_eq!(plain.status.code(), Some(DIFF), "{plain:?}");
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain.contains("+kind: ConfigMap") && !plain.contains('\x1b'),
        "{plain}"
    );
}

#[test]
fn objects_in_a_new_namespace_are_validated_before_they_are_written() {
    let env = TestEnv::new("new-ns-invalid");
    let extra = format!("{}-x", env.ns);
    let source = Manifests::new();
    source.write(
        "ns.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {extra}}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: fine, namespace: {extra}}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: bad, namespace: {extra}}}\n\
             spec: {{ports: [{{port: 99999}}]}}\n"
        ),
    );
    // Watches open before the run record what it creates and deletes.
    let namespaces = Events::record(&env, &["namespaces"], "");
    let configmaps = Events::record(&env, &["configmaps", "-n", &env.ns], "");
    let out = env.converge(&["apply", source.arg(), "--prune"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        points_at(&stderr, "ns.yaml:9") && stderr.contains(&format!("Service/{extra}/bad")),
        "{stderr}"
    );
    let written = env.kubectl(&["get", "configmaps,services", "-n", &extra, "-o", "name"]);
    assert!(
        !written.contains("fine") && !written.contains("bad"),
        "{written}"
    );
    // The parent, written before the Namespace, goes again with it; so does the
    // Namespace (see drift.rs).
    let parent = format!("converge-{}", env.ns);
    configmaps.assert_created_then_deleted("the refused first revision's parent", &parent);
    namespaces.assert_created_then_deleted("namespace", &extra);
}
