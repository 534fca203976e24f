//! examples/deploy for real: `converge apply` of it into the test's namespace (an
//! overlay sets the namespace and a name suffix, so the cluster-scoped RBAC is the
//! test's own), then
//! converge runs with nothing but its ServiceAccount's token: through a kubeconfig,
//! and as a Pod would, from `KUBERNETES_SERVICE_HOST/PORT` and the service-account
//! files. What the ClusterRole allows converges; what it does not is refused per
//! object with the API server's RBAC message.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, assert_success, configmap, eventually, repo_root};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// examples/deploy applied as the test's own, removed with it.
struct Deployed<'a> {
    env: &'a TestEnv,
    /// The overlay, and files written for the daemon (kubeconfig, CA, token).
    dir: tempfile::TempDir,
}

impl<'a> Deployed<'a> {
    /// `converge apply` of an overlay of examples/deploy: a kustomization, so
    /// converge renders it with kustomize first. The base is copied beside the
    /// overlay, where a render may read it (`../base`).
    fn apply(env: &'a TestEnv) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base");
        std::fs::create_dir(&base).expect("mkdir base");
        let examples = repo_root().join("examples/deploy");
        for entry in std::fs::read_dir(&examples).expect("examples/deploy") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, base.join(name)).expect("copy the base");
        }
        let overlay = dir.path().join("overlay");
        std::fs::create_dir(&overlay).expect("mkdir overlay");
        let kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {ns}\nnameSuffix: -{ns}\nresources: [../base]\n",
            ns = env.ns
        );
        std::fs::write(overlay.join("kustomization.yaml"), kustomization).expect("write");
        let out = env
            .converge_command()
            .current_dir(dir.path())
            .args([
                "apply",
                "overlay",
                "--name",
                "converge-deploy",
                "-n",
                &env.ns,
            ])
            .output()
            .expect("converge apply");
        assert_success("converge apply examples/deploy", &out);
        Deployed { env, dir }
    }

    /// A name of the deployment in this test (`converge` → `converge-<ns>`).
    fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.env.ns)
    }

    /// A token of converge's ServiceAccount, as `kubectl create token` makes it.
    fn token(&self) -> String {
        let account = self.name("converge");
        let token = self.env.kubectl(&[
            "create",
            "token",
            &account,
            "-n",
            &self.env.ns,
            "--duration",
            "1h",
        ]);
        token.trim().to_owned()
    }

    /// The API server's URL and a copy of its CA, from the test's kubeconfig.
    fn server_and_ca(&self) -> (String, PathBuf) {
        let view = |jsonpath: &str| {
            self.env.kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                &format!("jsonpath={jsonpath}"),
            ])
        };
        let server = view("{.clusters[0].cluster.server}");
        let ca = self.dir.path().join("ca.crt");
        let file = view("{.clusters[0].cluster.certificate-authority}");
        if file.is_empty() {
            let data = view("{.clusters[0].cluster.certificate-authority-data}");
            let pem = base64_decode(&data);
            std::fs::write(&ca, pem).expect("write CA");
        } else {
            std::fs::copy(file, &ca).expect("copy CA");
        }
        (server, ca)
    }

    /// A kubeconfig that is converge's ServiceAccount and nothing else.
    fn kubeconfig(&self) -> PathBuf {
        let (server, ca) = self.server_and_ca();
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: plane, cluster: {{server: \"{server}\", certificate-authority: \"{ca}\"}}}}]\n\
             users: [{{name: converge, user: {{token: \"{token}\"}}}}]\n\
             contexts: [{{name: converge, context: {{cluster: plane, user: converge, namespace: {ns}}}}}]\n\
             current-context: converge\n",
            ca = ca.display(),
            token = self.token(),
            ns = self.env.ns
        );
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The files a Pod of the Deployment would find in
    /// /var/run/secrets/kubernetes.io/serviceaccount.
    fn service_account_dir(&self) -> (PathBuf, String) {
        let (server, ca) = self.server_and_ca();
        let dir = self.dir.path().join("serviceaccount");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::rename(ca, dir.join("ca.crt")).expect("move CA");
        std::fs::write(dir.join("token"), self.token()).expect("write token");
        std::fs::write(dir.join("namespace"), &self.env.ns).expect("write namespace");
        (dir, server)
    }
}

impl Drop for Deployed<'_> {
    fn drop(&mut self) {
        for kind in ["clusterrolebinding", "clusterrole"] {
            let name = self.name("converge");
            let _ = self
                .env
                .kubectl_output(&["delete", kind, &name, "--wait=false"], None);
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 -d");
    out.stdout
}

/// A daemon config with the given sources, leader election on (its Lease in the
/// client's namespace: the kubeconfig context's or the service account's).
fn config(sources: &[(&str, &Manifests)]) -> String {
    let mut text = "state_dir = \"{state}\"\n\n[leader_election]\nenabled = true\n".to_owned();
    for (name, manifests) in sources {
        text.push_str(&format!(
            "\n[[source]]\nname = \"{name}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"1h\"\n",
            manifests.path().display()
        ));
    }
    text
}

#[test]
fn the_deployment_is_complete_and_hardened() {
    let env = TestEnv::new("deploy-manifests");
    let deployed = Deployed::apply(&env);
    let deployment = deployed.name("converge");
    let get = |kind: &str, name: &str, jsonpath: &str| {
        env.kubectl(&[
            "get",
            kind,
            name,
            "-n",
            &env.ns,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    assert_eq!(get("deployment", &deployment, "{.spec.replicas}"), "2");
    let container = "{.spec.template.spec.containers[0]";
    assert_eq!(
        get(
            "deployment",
            &deployment,
            &format!("{container}.securityContext.readOnlyRootFilesystem}}")
        ),
        "true"
    );
    assert_eq!(
        get(
            "deployment",
            &deployment,
            &format!("{container}.securityContext.capabilities.drop[0]}}")
        ),
        "ALL"
    );
    assert_eq!(
        get(
            "deployment",
            &deployment,
            "{.spec.template.spec.securityContext.seccompProfile.type}"
        ),
        "RuntimeDefault"
    );
    assert_eq!(
        get(
            "deployment",
            &deployment,
            &format!("{container}.readinessProbe.httpGet.path}}")
        ),
        "/readyz"
    );
    assert_eq!(
        get(
            "serviceaccount",
            &deployment,
            "{.metadata.labels.app\\.kubernetes\\.io/name}"
        ),
        "converge"
    );
    assert_eq!(
        get("poddisruptionbudget", &deployment, "{.spec.minAvailable}"),
        "1"
    );
    assert_eq!(get("service", &deployment, "{.spec.ports[0].port}"), "9476");
    let config = get(
        "configmap",
        &deployed.name("converge-config"),
        "{.data.config\\.toml}",
    );
    // The config it ships is one converge accepts, with leader election on.
    let parsed = converge::config::Config::parse(&config, Path::new("/etc/converge/config.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.leader_election.enabled);
    assert_eq!(parsed.server.listen.to_string(), "0.0.0.0:9476");
    // The Pods pass the restricted Pod Security Standard: the API server admits
    // both into a namespace that enforces it.
    let enforce = get(
        "namespace",
        &env.ns,
        "{.metadata.labels.pod-security\\.kubernetes\\.io/enforce}",
    );
    assert_eq!(enforce, "restricted");
    let pods = eventually(Duration::from_secs(30), || {
        let names = env.kubectl(&[
            "get",
            "pods",
            "-n",
            &env.ns,
            "-l",
            "app.kubernetes.io/name=converge",
            "-o",
            "name",
        ]);
        names.lines().count() == 2
    });
    let events = env.kubectl(&["get", "events", "-n", &env.ns]);
    assert!(pods.is_some(), "the Pods were not admitted:\n{events}");
}

#[test]
fn its_service_account_converges_a_source_and_is_refused_the_rest_per_object() {
    let env = TestEnv::new("deploy-rbac");
    let deployed = Deployed::apply(&env);
    let kubeconfig = deployed.kubeconfig();
    let allowed = Manifests::with("app.yaml", &configmap("app", "1"));
    let refused = Manifests::with(
        "namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: converge-refused}\n",
    );
    let config = config(&[("allowed", &allowed), ("refused", &refused)]);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let daemon = Daemon::start(&env, &config, &["--kubeconfig", kubeconfig, "--id", "sa"]);
    daemon.wait_ready(Duration::from_secs(30));

    // The first reconcile may run on standby, before the election is won; the
    // leader's own follows at once.
    assert!(
        env.wait_configmap_value("app", "1", Duration::from_secs(30))
            .is_some(),
        "{}",
        daemon.log()
    );
    let synced = |s: &serde_json::Value| {
        s["sources"].as_array().is_some_and(|sources| {
            sources
                .iter()
                .any(|s| s["name"] == "allowed" && s["result"] == "synced")
        })
    };
    let status = eventually(Duration::from_secs(30), || {
        Some(daemon.status()).filter(synced)
    })
    .map(|w| w.value)
    .unwrap_or_else(|| daemon.status());
    let source = |name: &str| {
        status["sources"]
            .as_array()
            .and_then(|sources| sources.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no source {name} in {status}"))
    };
    assert_eq!(source("allowed")["result"], "synced");
    let refused = source("refused");
    assert_eq!(refused["result"], "failed", "{refused}");
    let object = &refused["objects"][0];
    assert_eq!(object["object"], "Namespace/converge-refused", "{refused}");
    assert_eq!(object["state"], "failed");
    let reason = object["reason"].as_str().unwrap_or_default();
    let account = format!(
        "system:serviceaccount:{}:{}",
        env.ns,
        deployed.name("converge")
    );
    for part in [
        "is forbidden",
        account.as_str(),
        "cannot patch resource \"namespaces\"",
    ] {
        assert!(reason.contains(part), "{reason:?} lacks {part:?}");
    }
    // The role allows the leader election Lease in its own namespace.
    let holder = env.kubectl(&[
        "get",
        "lease",
        "converge",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "sa");
    // And nothing the role does not allow was written.
    let namespaces = env.kubectl_output(&["get", "namespace", "converge-refused"], None);
    assert!(!namespaces.status.success());
}

#[test]
fn in_cluster_configuration_connects() {
    let env = TestEnv::new("deploy-in-cluster");
    let deployed = Deployed::apply(&env);
    let (account_dir, server) = deployed.service_account_dir();
    let address = server
        .strip_prefix("https://")
        .expect("an https server")
        .trim_end_matches('/');
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let home = tempfile::tempdir().expect("tempdir");
    let source = Manifests::with("app.yaml", &configmap("in-cluster", "1"));
    let config = config(&[("app", &source)]);
    let account_dir = account_dir.to_str().expect("a UTF-8 path");
    let home_dir = home.path().to_str().expect("a UTF-8 path");
    // No kubeconfig anywhere: only the service account, as in a Pod.
    let vars = [
        ("KUBECONFIG", ""),
        ("HOME", home_dir),
        ("KUBERNETES_SERVICE_HOST", host.trim_matches(['[', ']'])),
        ("KUBERNETES_SERVICE_PORT", port),
        ("CONVERGE_SERVICE_ACCOUNT_DIR", account_dir),
    ];
    let daemon = Daemon::start_with_env(&env, &config, &["--id", "pod-0"], &vars);
    daemon.wait_ready(Duration::from_secs(30));
    let applied = eventually(Duration::from_secs(10), || {
        env.configmap_value("in-cluster").as_deref() == Some("1")
    });
    assert!(applied.is_some(), "{}", daemon.log());
    // The Lease went to the service account's namespace (its `namespace` file).
    let holder = env.kubectl(&[
        "get",
        "lease",
        "converge",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "pod-0");
    assert_eq!(daemon.status()["replica"]["role"], "leader");
}

/// A container's securityContext that the namespace's Pod Security level
/// (`restricted`, from examples/deploy) admits.
const RESTRICTED: &str = "{runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: \
                          false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}";

/// The whole daemon flow under nothing but the ServiceAccount's token: a wave that
/// waits for a Deployment to be available (health watches, evidence reads), a
/// pre-sync hook Job, a prune, shard Leases and Events. A permission missing from
/// examples/deploy/rbac.yaml fails this with the API server's RBAC message.
#[test]
fn the_whole_daemon_flow_runs_under_its_service_account() {
    let env = TestEnv::new("deploy-flow");
    let deployed = Deployed::apply(&env);
    let kubeconfig = deployed.kubeconfig();
    let app = Manifests::with(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  \
         selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
         spec: {containers: [{name: web, image: example.com/web:1, securityContext: {RESTRICTED}}]}\n"
            .replace("{RESTRICTED}", RESTRICTED)
            .as_str(),
    );
    app.write(
        "after.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: after\n  annotations: \
         {converge.dev/wave: \"1\"}\ndata: {value: '1'}\n",
    );
    app.write(
        "migrate.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n  annotations: \
         {converge.dev/hook: pre-sync}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      \
         restartPolicy: Never\n      containers: [{name: m, image: example.com/migrate:1, \
         securityContext: {RESTRICTED}}]\n"
            .replace("{RESTRICTED}", RESTRICTED)
            .as_str(),
    );
    app.write("old.yaml", &configmap("old", "1"));
    let config = format!(
        "state_dir = \"{{state}}\"\n\n[leader_election]\nenabled = true\nshard = true\n\n\
         [[source]]\nname = \"app\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\ninterval = \"2s\"\n",
        app.path().display()
    );
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let daemon = Daemon::start(&env, &config, &["--kubeconfig", kubeconfig, "--id", "sa"]);
    // Wave 1 is written only once wave 0's Deployment is available.
    let after = env.wait_configmap_value("after", "1", Duration::from_secs(90));
    assert!(
        after.is_some(),
        "wave 1 was never written:\n{}",
        daemon.log()
    );
    let get = |args: &[&str]| env.kubectl(&[args, &["-n", &env.ns]].concat());
    let available = get(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas}",
    ]);
    assert_eq!(available, "1", "wave 1 went before wave 0 was available");
    let jobs = get(&["get", "jobs", "-o", "name"]);
    assert!(jobs.contains("job.batch/migrate-"), "no hook Job: {jobs}");

    app.remove("old.yaml");
    let pruned = eventually(Duration::from_secs(30), || {
        env.configmap_value("old").is_none()
    });
    assert!(pruned.is_some(), "old was not pruned:\n{}", daemon.log());

    let holder = get(&[
        "get",
        "lease",
        "converge-app",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "sa", "the source's shard Lease");
    let leases = get(&["get", "leases", "-o", "name"]);
    assert!(
        leases.contains("converge.replica."),
        "no heartbeat Lease: {leases}"
    );
    let selector = "involvedObject.name=converge-app";
    let events = get(&["get", "events", "--field-selector", selector, "-o", "name"]);
    assert!(!events.trim().is_empty(), "no Event on the ApplySet parent");
    let log = daemon.log();
    assert!(!log.contains("forbidden"), "a request was refused:\n{log}");
}
