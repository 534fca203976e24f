//! Tenancy (#24, points 1 and 2) against the real control plane: a source acts as
//! a ServiceAccount by impersonation, so the API server's RBAC decides what it may
//! write (the audit log, not converge, shows whom each request was authorized as);
//! `allowed_namespaces` and `allow_cluster_scoped` refuse objects before any
//! request is sent for them.

use crate::common::audit::{AuditEvent, Identity};
use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use serde_json::Value;
use std::time::Duration;

/// A ServiceAccount `deployer` in the test's namespace, allowed to `edit` there only.
fn deployer(env: &TestEnv) -> String {
    let ns = &env.ns;
    env.kubectl(&["create", "serviceaccount", "deployer", "-n", ns]);
    let subject = format!("{ns}:deployer");
    let args = [
        "create",
        "rolebinding",
        "deployer-edit",
        "-n",
        ns,
        "--clusterrole=edit",
    ];
    env.kubectl(&[&args[..], &["--serviceaccount", &subject]].concat());
    format!("system:serviceaccount:{ns}:deployer")
}

/// A namespace of the test's own beside its main one, deleted at the end.
struct Other<'a> {
    env: &'a TestEnv,
    name: String,
}

impl<'a> Other<'a> {
    fn new(env: &'a TestEnv, suffix: &str) -> Self {
        let name = format!("{}-{suffix}", env.ns);
        env.kubectl(&["create", "namespace", &name]);
        Other { env, name }
    }
}

impl Drop for Other<'_> {
    fn drop(&mut self) {
        let args = ["delete", "namespace", &self.name, "--wait=false"];
        let _ = self.env.kubectl_output(&args, None);
    }
}

/// A daemon with one directory source in the test's namespace, run as `identity`
/// (whose requests the audit log records), with `extra` source keys.
fn daemon(env: &TestEnv, identity: &Identity, dir: &Manifests, extra: &str) -> Daemon {
    let config = format!(
        "state_dir = \"{{state}}\"\n[cluster]\nkubeconfig = \"{}\"\n\n[[source]]\n\
         name = \"team\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"2s\"\n{extra}",
        identity.kubeconfig_arg(),
        dir.path().display()
    );
    Daemon::start(env, &config, &[])
}

fn in_namespace(env: &TestEnv, name: &str, namespace: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         data: {{value: '{value}'}}\n"
    )
    .replace("{ns}", &env.ns)
}

fn attempted(daemon: &Daemon) -> Option<String> {
    daemon.source()["attemptedRevision"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_source_acting_as_a_service_account_writes_only_where_rbac_lets_it() {
    let env = TestEnv::new("tenancy-sa");
    let user = deployer(&env);
    let other = Other::new(&env, "b");
    let identity = Identity::new(&env, &format!("converge-{}", env.ns));
    let dir = Manifests::with("app.yaml", &configmap("app", "one"));
    let extra = format!("service_account = \"{}/deployer\"\n", env.ns);
    let daemon = daemon(&env, &identity, &dir, &extra);
    let applied = env.wait_configmap_value("app", "one", Duration::from_secs(30));
    assert!(applied.is_some(), "not applied:\n{}", daemon.log());

    // The audit log shows the writes authorized as the ServiceAccount.
    let events = identity.events(&env.ns);
    let writes: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.verb == "patch" && e.name == "app" && !e.is_dry_run())
        .collect();
    assert!(!writes.is_empty(), "no write of the ConfigMap: {events:#?}");
    for write in &writes {
        assert_eq!(
            write.impersonated.as_deref(),
            Some(user.as_str()),
            "{write:#?}"
        );
    }

    // A revision reaching into another team's namespace fails for that object with
    // the API server's RBAC message, and writes nothing (not even its own change).
    let before = attempted(&daemon);
    dir.write("app.yaml", &configmap("app", "two"));
    dir.write("b.yaml", &in_namespace(&env, "intruder", &other.name, "x"));
    let failed = eventually(Duration::from_secs(30), || {
        let source = daemon.source();
        (attempted(&daemon) != before && source["result"] == "failed").then_some(source)
    });
    let source = failed.map(|f| f.value).unwrap_or(Value::Null);
    let error = source["error"].as_str().unwrap_or_default();
    for needle in ["b.yaml:1", "intruder", "forbidden", user.as_str()] {
        assert!(error.contains(needle), "{needle:?} not in {source:#}");
    }
    assert_eq!(env.configmap_value("app").as_deref(), Some("one"));
    let intruder = ["get", "configmap", "intruder", "-n", &other.name];
    assert!(!env.kubectl_output(&intruder, None).status.success());
}

#[test]
fn objects_outside_the_allowed_namespaces_are_refused_without_a_request() {
    let env = TestEnv::new("tenancy-bounds");
    let other = Other::new(&env, "b");
    let identity = Identity::new(&env, &format!("converge-{}", env.ns));
    let dir = Manifests::with("app.yaml", &configmap("app", "one"));
    let extra = format!(
        "allowed_namespaces = [\"{}\"]\nallow_cluster_scoped = false\n",
        env.ns
    );
    let daemon = daemon(&env, &identity, &dir, &extra);
    let applied = env.wait_configmap_value("app", "one", Duration::from_secs(30));
    assert!(applied.is_some(), "not applied:\n{}", daemon.log());

    let before = attempted(&daemon);
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
         metadata: {{name: {}-reader}}\nrules: []\n",
        env.ns
    );
    dir.write("role.yaml", &role);
    dir.write("b.yaml", &in_namespace(&env, "outside", &other.name, "x"));
    let failed = eventually(Duration::from_secs(30), || {
        let source = daemon.source();
        (attempted(&daemon) != before && source["result"] == "failed").then_some(source)
    });
    let source = failed.map(|f| f.value).unwrap_or(Value::Null);
    let error = source["error"].as_str().unwrap_or_default();
    let rule = format!(
        "namespace \"{}\" is not among this source's allowed_namespaces",
        other.name
    );
    for needle in [
        "b.yaml:1",
        &rule,
        "role.yaml:1",
        "allow_cluster_scoped = false",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {source:#}");
    }
    // Not one request named them.
    let outside = identity.events(&other.name);
    assert!(
        outside.is_empty(),
        "requests into {}: {outside:#?}",
        other.name
    );
    let role_name = format!("{}-reader", env.ns);
    let cluster = identity.events("");
    let about_role: Vec<&AuditEvent> = cluster.iter().filter(|e| e.name == role_name).collect();
    assert!(
        about_role.is_empty(),
        "requests for the ClusterRole: {about_role:#?}"
    );
}
