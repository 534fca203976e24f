//! converge's Kubernetes client against the real API server of the local control
//! plane (`hack/controlplane.sh up`; `eval "$(hack/controlplane.sh env)"`), checked
//! with kubectl as the independent client.

use std::path::Path;
use std::time::Duration;

use crate::common::TestEnv;
use converge::kube::{
    ApiResource, Auth, Client, ClientOptions, ClusterConfig, DeleteParams, Discovery, Error,
    ExecConfig, ListParams, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::{Value, json};

const MANAGER: &str = "converge-test";

fn client(env: &TestEnv) -> Client {
    client_with(env, ClientOptions::default())
}

fn client_with(env: &TestEnv, options: ClientOptions) -> Client {
    let config = ClusterConfig::load(Some(Path::new(&env.kubeconfig)), None)
        .expect("load the control plane's kubeconfig");
    Client::with_options(config, options).expect("build the client")
}

fn config_map(ns: &str, name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    })
}

fn cm_path(ns: &str, name: &str) -> String {
    ApiResource::config_maps().path(Some(ns), Some(name))
}

/// Forced server-side apply as the test's manager.
fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Delete only the object with `uid`.
fn delete_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        propagation: PropagationPolicy::Background,
        preconditions: Some(Preconditions { uid: uid.into() }),
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether kubectl sees the object (an independent check of what the client did).
fn kubectl_sees(env: &TestEnv, kind: &str, name: &str) -> bool {
    env.kubectl_output(&["get", kind, name, "-n", &env.ns, "-o", "name"], None)
        .status
        .success()
}

#[tokio::test]
async fn config_from_kubeconfig_version_and_discovery() {
    let env = TestEnv::new("kube-discovery");
    let client = client(&env);
    assert_eq!(client.default_namespace(), "default");

    let version: Value =
        serde_json::from_str(&client.raw_get("/version").await.unwrap()).expect("/version is JSON");
    assert!(
        text(&version, "/gitVersion").starts_with("v1."),
        "{version}"
    );
    assert_eq!(client.get("/version").await.unwrap(), version);

    let discovery = Discovery::new(&client).await.expect("discovery");
    let deploy = discovery.resolve("apps", "v1", "Deployment").unwrap();
    assert_eq!(deploy.plural, "deployments");
    assert!(deploy.namespaced);
    assert!(deploy.supports("patch"));
    assert_eq!(
        deploy.path(Some(&env.ns), Some("web")),
        format!("/apis/apps/v1/namespaces/{}/deployments/web", env.ns)
    );
    let ns = discovery.resolve("", "", "Namespace").unwrap();
    assert!(!ns.namespaced);
    assert_eq!(ns.version, "v1");
    assert_eq!(ns.path(Some("ignored"), Some("x")), "/api/v1/namespaces/x");

    let err = discovery
        .resolve("example.invalid", "v1", "Widget")
        .unwrap_err();
    assert!(matches!(err, Error::UnknownKind { .. }), "{err}");
    let err = discovery
        .resolve("apps", "v1beta1", "Deployment")
        .unwrap_err();
    assert!(
        err.to_string().contains("not served at version v1beta1"),
        "{err}"
    );
}

#[tokio::test]
async fn server_side_apply_dry_run_real_and_noop() {
    let env = TestEnv::new("kube-apply");
    let client = client(&env);
    let path = cm_path(&env.ns, "settings");
    let body = config_map(&env.ns, "settings", json!({"color": "blue"}));

    let preview = client
        .apply(&path, &body, &apply().dry_run())
        .await
        .unwrap();
    assert_eq!(text(&preview, "/data/color"), "blue");
    assert!(
        !kubectl_sees(&env, "configmap", "settings"),
        "a dry-run apply must not create the object"
    );
    assert!(client.get_opt(&path).await.unwrap().is_none());

    let applied = client.apply(&path, &body, &apply()).await.unwrap();
    let rv = text(&applied, "/metadata/resourceVersion").to_string();
    assert!(!rv.is_empty());
    let seen = env.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.data.color}",
    ]);
    assert_eq!(seen, "blue");
    let managers = env.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        &env.ns,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains(MANAGER), "{managers}");

    let again = client.apply(&path, &body, &apply()).await.unwrap();
    assert_eq!(
        text(&again, "/metadata/resourceVersion"),
        rv,
        "re-applying the same object must not write"
    );
    let live = client.get(&path).await.unwrap();
    assert_eq!(text(&live, "/metadata/resourceVersion"), rv);
}

#[tokio::test]
async fn get_opt_of_a_missing_object_is_none() {
    let env = TestEnv::new("kube-get-opt");
    let client = client(&env);
    assert_eq!(
        client.get_opt(&cm_path(&env.ns, "absent")).await.unwrap(),
        None
    );
    let err = client.get(&cm_path(&env.ns, "absent")).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("(reason NotFound, code 404)"),
        "{err}"
    );
}

#[tokio::test]
async fn delete_honours_the_uid_precondition() {
    let env = TestEnv::new("kube-delete");
    let client = client(&env);
    let path = cm_path(&env.ns, "doomed");
    let created = client
        .apply(&path, &config_map(&env.ns, "doomed", json!({})), &apply())
        .await
        .unwrap();
    let uid = text(&created, "/metadata/uid").to_string();

    let err = client
        .delete(&path, &delete_uid("00000000-0000-0000-0000-000000000000"))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        kubectl_sees(&env, "configmap", "doomed"),
        "the object must remain"
    );

    client.delete(&path, &delete_uid(&uid)).await.unwrap();
    assert!(!kubectl_sees(&env, "configmap", "doomed"));
    let err = client.delete(&path, &delete_uid(&uid)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn invalid_object_decodes_into_an_invalid_status() {
    let env = TestEnv::new("kube-invalid");
    let client = client(&env);
    let path = cm_path(&env.ns, "broken");
    let body = config_map(&env.ns, "broken", json!({"not a valid key!": "x"}));
    let err = client
        .apply(&path, &body, &apply().dry_run())
        .await
        .unwrap_err();
    assert!(err.is_invalid(), "{err}");
    let status = err.status().expect("an API status");
    assert_eq!(status.reason, "Invalid");
    assert_eq!(status.code, 422);
    let details = status.details.as_ref().expect("details");
    assert_eq!(details.kind, "ConfigMap");
    assert!(
        details.causes.iter().any(|c| c.field.starts_with("data")),
        "{details:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with("the API server rejected PATCH "),
        "{shown}"
    );
    assert!(shown.ends_with("(reason Invalid, code 422)"), "{shown}");

    // Strict field validation turns a typo into an error instead of a silent drop.
    let typo = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "typo", "namespace": env.ns}, "dta": {"a": "b"}});
    let err = client
        .apply(&cm_path(&env.ns, "typo"), &typo, &apply().dry_run())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dta"), "{err}");
}

#[tokio::test]
async fn list_follows_continue_tokens_with_a_selector() {
    let env = TestEnv::new("kube-list");
    let options = ClientOptions {
        page_size: 2,
        ..ClientOptions::default()
    };
    let client = client_with(&env, options);
    for i in 0..5 {
        let name = format!("item-{i}");
        let mut body = config_map(&env.ns, &name, json!({"i": i.to_string()}));
        body["metadata"]["labels"] = json!({"set": "a"});
        client
            .apply(&cm_path(&env.ns, &name), &body, &apply())
            .await
            .unwrap();
    }
    let other = config_map(&env.ns, "other", json!({}));
    client
        .apply(&cm_path(&env.ns, "other"), &other, &apply())
        .await
        .unwrap();

    let collection = ApiResource::config_maps().path(Some(&env.ns), None);
    let list = client
        .list(&collection, &ListParams::labels("set=a"))
        .await
        .unwrap();
    let mut names: Vec<&str> = list
        .items
        .iter()
        .map(|i| text(i, "/metadata/name"))
        .collect();
    names.sort();
    assert_eq!(names, ["item-0", "item-1", "item-2", "item-3", "item-4"]);
    assert!(list.items.iter().all(|i| text(i, "/kind") == "ConfigMap"));
    assert!(list.items.iter().all(|i| text(i, "/apiVersion") == "v1"));
    assert!(!list.resource_version.is_empty());

    let page = client
        .list_page(&collection, &ListParams::labels("set=a").limit(3))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3, "one page only");
    let other = client
        .list(&collection, &ListParams::fields("metadata.name=other"))
        .await
        .unwrap();
    assert_eq!(other.items.len(), 1);
    assert_eq!(text(&other.items[0], "/metadata/name"), "other");

    // A query glued onto a path is refused: parameters are encoded by the client.
    let err = client
        .list(
            &format!("{collection}?labelSelector=set%3Da"),
            &ListParams::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pass parameters"), "{err}");
}

#[tokio::test]
async fn create_posts_with_generate_name() {
    let env = TestEnv::new("kube-create");
    let client = client(&env);
    let collection = ApiResource::config_maps().path(Some(&env.ns), None);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"generateName": "gen-", "namespace": env.ns}});
    let preview = client
        .create(&collection, &body, &PostParams { dry_run: true })
        .await
        .unwrap();
    assert!(text(&preview, "/metadata/name").starts_with("gen-"));
    let empty = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", "name"]);
    assert!(
        !empty.contains("gen-"),
        "a dry-run create must not persist: {empty}"
    );

    let created = client
        .create(&collection, &body, &PostParams::default())
        .await
        .unwrap();
    let name = text(&created, "/metadata/name");
    assert!(kubectl_sees(&env, "configmap", name));

    let named = config_map(&env.ns, name, json!({}));
    let err = client
        .create(&collection, &named, &PostParams::default())
        .await
        .unwrap_err();
    assert!(err.is_already_exists(), "{err}");
}

#[tokio::test]
async fn refresh_discovers_a_new_crd() {
    let env = TestEnv::new("kube-crd");
    let client = client(&env);
    let discovery = Discovery::new(&client).await.unwrap();
    let group = format!("t{}.converge.test", env.ns.replace('-', ""));
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gadgets.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: gadgets, singular: gadget, kind: Gadget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
    );
    let _cleanup = CrdCleanup(&env, format!("gadgets.{group}"));
    assert!(discovery.resolve(&group, "v1", "Gadget").is_err());
    env.kubectl_stdin(&["apply", "-f", "-"], &crd);
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/gadgets.{group}"),
    ]);
    let mut resolved = None;
    for _ in 0..50 {
        discovery.refresh().await.unwrap();
        if let Ok(r) = discovery.resolve(&group, "", "Gadget") {
            resolved = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gadget = resolved.expect("the new kind must resolve after refresh");
    assert_eq!(gadget.plural, "gadgets");
    assert!(gadget.namespaced);
}

struct CrdCleanup<'a>(&'a TestEnv, String);

impl Drop for CrdCleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .kubectl_command(&["delete", "crd", &self.1, "--wait=false"])
            .output();
    }
}

/// The user the API server sees (SelfSubjectReview, allowed for every user).
async fn whoami(client: &Client) -> Result<String, Error> {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let answer = client
        .request_json(
            converge::kube::Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(&review),
            None,
        )
        .await?;
    Ok(text(&answer, "/status/userInfo/username").to_string())
}

#[tokio::test]
async fn exec_plugin_token_authenticates_and_is_cached() {
    let env = TestEnv::new("kube-exec");
    let token = env.service_account_token("robot");
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("runs");
    let script = tmp.path().join("plugin.sh");
    std::fs::write(
        &script,
        format!(
            "echo run >> '{}'\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\",\"expirationTimestamp\":\"2999-01-01T00:00:00Z\"}}}}'\n",
            count.display()
        ),
    )
    .unwrap();
    // Run as `sh script`: executing a file just written races with forks elsewhere.
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: ['{}']\n      interactiveMode: Never\n      installHint: not used",
        script.display()
    );
    let kubeconfig = env.kubeconfig_with_user(tmp.path(), &user);
    let config = ClusterConfig::load(Some(&kubeconfig), None).unwrap();
    assert_eq!(config.default_namespace, env.ns);
    assert!(matches!(config.auth, Auth::Exec(_)));
    let client = Client::new(config).unwrap();

    let expected = format!("system:serviceaccount:{}:robot", env.ns);
    assert_eq!(whoami(&client).await.unwrap(), expected);
    assert_eq!(whoami(&client).await.unwrap(), expected);
    let runs = std::fs::read_to_string(&count).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the credential is cached until it expires"
    );
}

#[tokio::test]
async fn failing_exec_plugin_reports_stderr_and_hint() {
    let env = TestEnv::new("kube-exec-fail");
    let mut config = ClusterConfig::load(Some(Path::new(&env.kubeconfig)), None).unwrap();
    config.auth = Auth::Exec(ExecConfig {
        api_version: "client.authentication.k8s.io/v1beta1".into(),
        command: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "echo 'token expired: run `acme login`' >&2; exit 1".into(),
        ],
        env: vec![],
        install_hint: Some("acme-auth-plugin is required; see https://acme.example/install".into()),
        interactive_mode: "IfAvailable".into(),
        cluster_info: None,
        user: "acme".into(),
    });
    let client = Client::new(config).unwrap();
    let err = client.get("/api").await.unwrap_err();
    assert!(matches!(err, Error::Exec(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("token expired: run `acme login`"), "{shown}");
    assert!(shown.contains("acme-auth-plugin is required"), "{shown}");
}

#[tokio::test]
async fn token_file_is_reread_when_it_rotates() {
    let env = TestEnv::new("kube-token-file");
    let first = env.service_account_token("first");
    let second = env.service_account_token("second");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("token"), &first).unwrap();
    // A relative tokenFile resolves against the kubeconfig's directory.
    let kubeconfig = env.kubeconfig_with_user(tmp.path(), "    tokenFile: token");
    let client = Client::new(ClusterConfig::load(Some(&kubeconfig), None).unwrap()).unwrap();
    let sa = |name: &str| format!("system:serviceaccount:{}:{name}", env.ns);
    assert_eq!(whoami(&client).await.unwrap(), sa("first"));

    std::fs::write(tmp.path().join("token"), &second).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(tmp.path().join("token"))
        .and_then(|f| f.set_modified(later))
        .unwrap();
    assert_eq!(whoami(&client).await.unwrap(), sa("second"));
}

#[tokio::test]
async fn a_rejected_token_is_a_401_that_does_not_leak_it() {
    let env = TestEnv::new("kube-bad-token");
    let mut config = ClusterConfig::load(Some(Path::new(&env.kubeconfig)), None).unwrap();
    config.auth = Auth::Token("not-a-real-token-s3cr3t".into());
    let client = Client::new(config).unwrap();
    let err = client.get("/api/v1/namespaces").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code), Some(401), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
}

#[tokio::test]
async fn many_concurrent_requests_share_the_client() {
    let env = TestEnv::new("kube-concurrent");
    let options = ClientOptions {
        max_in_flight: 4,
        ..ClientOptions::default()
    };
    let client = client_with(&env, options);
    let requests = (0..40).map(|i| {
        let client = client.clone();
        let ns = env.ns.clone();
        async move {
            let name = format!("c-{i}");
            let body = config_map(&ns, &name, json!({"i": i.to_string()}));
            client.apply(&cm_path(&ns, &name), &body, &apply()).await
        }
    });
    let results = futures::future::join_all(requests).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let names = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", "name"]);
    assert_eq!(names.lines().filter(|l| l.contains("/c-")).count(), 40);
}

#[tokio::test]
async fn legacy_and_aggregated_discovery_agree() {
    let env = TestEnv::new("kube-legacy-discovery");
    let client = client(&env);
    let aggregated = Discovery::new(&client).await.unwrap();
    let legacy = Discovery::new_legacy(&client).await.unwrap();
    let key = |r: &ApiResource| {
        let mut verbs = r.verbs.clone();
        verbs.sort();
        (
            r.api_version(),
            r.kind.clone(),
            r.plural.clone(),
            r.namespaced,
            verbs,
        )
    };
    let mut a: Vec<_> = aggregated.preferred_resources().iter().map(key).collect();
    let mut l: Vec<_> = legacy.preferred_resources().iter().map(key).collect();
    a.sort();
    l.sort();
    assert!(a.len() > 40, "{}", a.len());
    assert_eq!(a, l);
}

#[tokio::test]
async fn exec_plugin_client_certificate_authenticates() {
    let env = TestEnv::new("kube-exec-cert");
    let jsonpath = |p: &str| {
        env.kubectl(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            &format!("jsonpath={p}"),
        ])
    };
    let cert_file = jsonpath("{.users[0].user.client-certificate}");
    let key_file = jsonpath("{.users[0].user.client-key}");
    let escaped = |path: &str| {
        let pem = std::fs::read_to_string(path).expect("read the admin PEM");
        serde_json::to_string(&pem).unwrap()
    };
    let credential = format!(
        "{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"clientCertificateData\":{},\"clientKeyData\":{}}}}}",
        escaped(&cert_file),
        escaped(&key_file)
    );
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("credential.json");
    std::fs::write(&output, credential).unwrap();
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: cat\n      args: ['{}']\n      interactiveMode: Never",
        output.display()
    );
    let kubeconfig = env.kubeconfig_with_user(tmp.path(), &user);
    let client = Client::new(ClusterConfig::load(Some(&kubeconfig), None).unwrap()).unwrap();
    let expected = env.kubectl(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami(&client).await.unwrap(), expected);
}
