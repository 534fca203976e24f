//! Health you can define (issue #25), on the real control plane: a custom resource
//! whose CRD has a status subresource is ready only once its controller says so,
//! users' CEL rules decide in Flux's order, and `depends_on` waits for an object's
//! `ready` expression. The test is the controller: it writes status with
//! `kubectl patch --subresource=status`.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, describe, eventually};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// The exit code of `apply --wait` when something failed or timed out.
const NOT_READY: i32 = 3;

/// A CRD `<plural>.<group>` with a status subresource, created and established;
/// deleted again when dropped (CRDs are cluster-wide, the test's namespace is not).
struct Crd<'a> {
    env: &'a TestEnv,
    name: String,
    group: String,
}

impl<'a> Crd<'a> {
    fn create(env: &'a TestEnv, kind: &str, plural: &str) -> Self {
        let group = format!("{}.health.test", env.ns);
        let name = format!("{plural}.{group}");
        let crd = format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {name}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
",
            singular = kind.to_lowercase()
        );
        env.kubectl_stdin(&["apply", "-f", "-"], &crd);
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{name}"),
        ]);
        Crd { env, name, group }
    }

    /// A custom resource of this CRD, as a manifest.
    fn object(&self, kind: &str, name: &str) -> String {
        format!(
            "apiVersion: {}/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {{size: 1}}\n",
            self.group
        )
    }
}

impl Drop for Crd<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl_output(
            &[
                "delete",
                "crd",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// Writes `status` (JSON) to the custom resource, as its controller would.
fn write_status(env: &TestEnv, resource: &str, status: &str) {
    env.kubectl(&[
        "patch",
        resource,
        "-n",
        &env.ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!("{{\"status\": {status}}}"),
    ]);
}

fn spawn_apply_wait(env: &TestEnv, path: &Path, args: &[&str]) -> Child {
    env.converge_command()
        .arg("apply")
        .arg(path)
        .args(["-n", &env.ns, "--wait"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn converge apply --wait")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_custom_resource_is_ready_only_once_its_controller_says_so() {
    let env = TestEnv::new("health-cr");
    let crd = Crd::create(&env, "Widget", "widgets");
    let manifests = Manifests::with("widget.yaml", &crd.object("Widget", "w"));

    // No controller has written a status: not ready, with that evidence.
    let (out, took) = env.apply_wait(manifests.path(), &["--timeout", "6s"]);
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    assert!(took >= Duration::from_secs(6), "returned after {took:?}");
    let text = stdout(&out);
    assert!(
        text.contains("progressing: no status yet (is its controller running?)"),
        "{text}"
    );
    assert!(text.contains("decided by: kstatus"), "{text}");

    // A status for an older generation proves nothing.
    let resource = format!("widgets.{}/w", crd.group);
    write_status(
        &env,
        &resource,
        r#"{"observedGeneration": 0, "conditions": [{"type": "Ready", "status": "True", "reason": "Old", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}"#,
    );
    let (out, _) = env.apply_wait(manifests.path(), &["--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    assert!(
        stdout(&out).contains("controller to observe generation 1"),
        "{}",
        describe(&out)
    );

    // `--wait` returns once (and only once) the controller says Ready.
    let mut waiting = spawn_apply_wait(&env, manifests.path(), &["--timeout", "2m"]);
    let applied = eventually(Duration::from_secs(60), || {
        let out = env.kubectl(&["get", &resource, "-n", &env.ns, "-o", "name"]);
        !out.is_empty()
    });
    assert!(applied.is_some());
    assert!(
        waiting.try_wait().expect("poll").is_none(),
        "apply --wait returned before the status said Ready"
    );
    let said_ready = Instant::now();
    write_status(
        &env,
        &resource,
        r#"{"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Done", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}"#,
    );
    let out = waiting.wait_with_output().expect("apply --wait");
    println!(
        "apply --wait returned {:?} after the status said Ready",
        said_ready.elapsed()
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("All 1 objects ready"),
        "{}",
        describe(&out)
    );
}

/// The Certificate rule of issue #25, for the test's own group.
fn certificate_rule(group: &str, failed: &str) -> String {
    format!(
        r#"[[health]]
api_version = "{group}/v1"
kind = "Certificate"
in_progress = "has(self.status) && has(self.status.conditions) && self.status.conditions.exists(c, c.type == 'Issuing' && c.status == 'True')"
failed = "{failed}"
current = "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
message = "self.status.conditions.filter(c, c.type == 'Ready').map(c, c.message)"
"#
    )
}

const FAILED: &str = "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'Failed')";

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> String {
    format!(
        r#"{{"type": "{type_}", "status": "{status}", "reason": "{reason}", "message": "{message}", "lastTransitionTime": "2026-01-01T00:00:00Z"}}"#
    )
}

#[test]
fn a_users_cel_rule_decides_in_progress_failed_and_current() {
    let env = TestEnv::new("health-cel");
    let crd = Crd::create(&env, "Certificate", "certificates");
    let manifests = Manifests::with("cert.yaml", &crd.object("Certificate", "web"));
    let files = Manifests::new();
    let rules = files.write("health.toml", &certificate_rule(&crd.group, FAILED));
    let health = ["--health", rules.to_str().expect("utf-8 path")];
    let resource = format!("certificates.{}/web", crd.group);

    // Created, no status: the rule's first check cannot be evaluated yet.
    let (out, _) = env.apply_wait(
        manifests.path(),
        &[&health[..], &["--timeout", "4s"]].concat(),
    );
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));

    // in_progress: issuing, even though an old Ready is True.
    let issuing = condition("Issuing", "True", "Renewing", "renewing");
    let old_ready = condition("Ready", "True", "Ready", "old certificate valid");
    write_status(
        &env,
        &resource,
        &format!(r#"{{"conditions": [{issuing}, {old_ready}]}}"#),
    );
    let (out, _) = env.apply_wait(
        manifests.path(),
        &[&health[..], &["--timeout", "4s"]].concat(),
    );
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("progressing: old certificate valid"),
        "{text}"
    );
    assert!(
        text.contains("health.toml: health[0].in_progress"),
        "{text}"
    );

    // failed: exit 3 at once (not at the timeout), with the message.
    let broken = condition("Ready", "False", "Failed", "issuer example-ca is not ready");
    write_status(&env, &resource, &format!(r#"{{"conditions": [{broken}]}}"#));
    let (out, took) = env.apply_wait(
        manifests.path(),
        &[&health[..], &["--timeout", "2m"]].concat(),
    );
    assert_eq!(out.status.code(), Some(NOT_READY), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(60),
        "failed is decided, not timed out: {took:?}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("failed: issuer example-ca is not ready"),
        "{text}"
    );
    assert!(text.contains("health.toml: health[0].failed"), "{text}");

    // current.
    let ready = condition("Ready", "True", "Ready", "certificate is up to date");
    write_status(&env, &resource, &format!(r#"{{"conditions": [{ready}]}}"#));
    let (out, _) = env.apply_wait(
        manifests.path(),
        &[&health[..], &["--timeout", "2m"]].concat(),
    );
    assert!(out.status.success(), "{}", describe(&out));

    // A bad expression is refused at start-up, with its key and position.
    let bad = files.write(
        "bad.toml",
        &certificate_rule(
            &crd.group,
            "self.status.conditions.exists(c, c.type == 'Ready' &&",
        ),
    );
    let out = env
        .converge_command()
        .arg("apply")
        .arg(manifests.path())
        .args(["-n", &env.ns, "--health"])
        .arg(&bad)
        .output()
        .expect("converge apply");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("health[0].failed: line 1, column 54: Syntax error"),
        "{stderr}"
    );
}

#[test]
fn a_bad_expression_in_the_config_is_refused_at_start_up() {
    let env = TestEnv::new("health-config");
    let home = Manifests::new();
    let config = format!(
        "state_dir = \"{}\"\n\n[[source]]\nname = \"app\"\ndir = \"{}\"\nnamespace = \"{}\"\n\
         depends_on = [{{ object = \"v1/Service/db/postgres\", ready = \"size(self.spec.\" }}]\n\n\
         [[source.health]]\ngroup = \"example.com\"\ncurrent = \"self.status.(\"\n",
        home.path().join("state").display(),
        home.path().display(),
        env.ns
    );
    let path = home.write("config.toml", &config);
    let out = env
        .converge_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("converge run");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source[0] \"app\": health[0].current: line 1, column 13"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source[0] \"app\": depends_on[0].ready: line 1, column"),
        "{stderr}"
    );
}

#[test]
fn a_source_waits_for_an_object_until_its_ready_expression_holds() {
    let env = TestEnv::new("health-needs");
    env.kubectl(&[
        "create",
        "configmap",
        "gate",
        "-n",
        &env.ns,
        "--from-literal=open=no",
    ]);
    let app = Manifests::with(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {value: '1'}\n",
    );
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"app\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n\
         interval = \"1h\"\n\
         depends_on = [{{ object = \"v1/ConfigMap/{{ns}}/gate\", ready = \"self.data.open == 'yes'\" }}]\n",
        app.path().display()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let expected = format!(
        "object v1/ConfigMap/{}/gate: ready = \"self.data.open == 'yes'\" is false; its health: ready: exists (by kstatus)",
        env.ns
    );
    let waiting = eventually(Duration::from_secs(30), || {
        let source = daemon.source();
        (source["result"] == "waiting" && source["waitingFor"] == serde_json::json!([expected]))
            .then_some(source)
    });
    assert!(waiting.is_some(), "{:#}\n{}", daemon.source(), daemon.log());
    let table = env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("converge status");
    assert!(
        stdout(&table).contains("is false; its health: ready: exists"),
        "{}",
        describe(&table)
    );
    let events = eventually(Duration::from_secs(30), || {
        let out = env.kubectl(&[
            "get",
            "events",
            "-n",
            &env.ns,
            "--field-selector",
            "reason=DependencyNotReady",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        out.contains("is false").then_some(out)
    });
    assert!(events.is_some(), "no DependencyNotReady Event");
    assert_eq!(env.configmap_value("app"), None, "app reconciled too early");

    // The expression turns true: the source converges at once, not at its resync.
    env.kubectl(&[
        "patch",
        "configmap",
        "gate",
        "-n",
        &env.ns,
        "-p",
        r#"{"data": {"open": "yes"}}"#,
    ]);
    let opened = Instant::now();
    let applied = env.wait_configmap_value("app", "1", Duration::from_secs(30));
    let took = opened.elapsed();
    println!("app converged {took:?} after its dependency's ready expression turned true");
    assert!(applied.is_some(), "{}", daemon.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let synced = eventually(Duration::from_secs(30), || {
        daemon.source()["result"] == "synced"
    });
    assert!(synced.is_some(), "{:#}", daemon.source());
}
