//! `converge run` with rendered sources: a kustomize overlay in a Git repository
//! reaching its base (and refused beyond the repository), a base commit applied on
//! the webhook, resyncs that do not render again, `${VAR}` substitution from the
//! config and a ConfigMap, and a Helm chart with values.

use crate::common::daemon::Daemon;
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::{Manifests, TestEnv, configmap, github_signature, repo_root};
use std::time::Duration;

const USER: &str = "deploy";
const PASSWORD: &str = "Render-pa55word";
const SECRET: &str = "render-hook-secret";
const PUSH: &str = r#"{"ref":"refs/heads/main"}"#;

const BASE: &str = "resources:\n- settings.yaml\n";
const OVERLAY: &str = "resources:\n- ../../base\n- extra.yaml\n";

/// A repository of `base/` and `overlays/dev/`, served over HTTP, and a daemon
/// converging the overlay.
struct Overlay {
    env: TestEnv,
    upstream: Upstream,
    server: GitHttpServer,
}

impl Overlay {
    fn new(test: &str) -> Self {
        let upstream = Upstream::new("apps");
        upstream.commit(
            &[
                ("base/kustomization.yaml", BASE),
                ("base/settings.yaml", &configmap("settings", "1")),
                ("overlays/dev/kustomization.yaml", OVERLAY),
                ("overlays/dev/extra.yaml", &configmap("extra", "x")),
            ],
            "first",
        );
        let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
        Overlay {
            env: TestEnv::new(test),
            upstream,
            server,
        }
    }

    fn start(&self, timing: &str) -> Daemon {
        self.start_at("overlays/dev", timing)
    }

    /// A daemon converging `path` of the repository.
    fn start_at(&self, path: &str, timing: &str) -> Daemon {
        let config = format!(
            "state_dir = \"{{state}}\"\n\n[[source]]\nname = \"{{ns}}\"\ngit = \"{url}\"\n\
             path = \"{path}\"\nnamespace = \"{{ns}}\"\nusername_env = \"GIT_USER\"\n\
             password_env = \"GIT_PASSWORD\"\nwebhook_secret_env = \"HOOK\"\n{timing}\n",
            url = self.server.url("apps.git"),
        );
        let vars = [
            ("GIT_USER", USER),
            ("GIT_PASSWORD", PASSWORD),
            ("HOOK", SECRET),
        ];
        let daemon = Daemon::start_with_env(&self.env, &config, &[], &vars);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    fn push(&self, daemon: &Daemon, files: &[(&str, &str)]) {
        self.upstream.commit(files, "change");
        let signature = github_signature(SECRET.as_bytes(), PUSH.as_bytes());
        let header = format!("X-Hub-Signature-256: {signature}");
        let path = format!("/hooks/git/{}", self.env.ns);
        let (code, _) = daemon.post(&path, &[&header], PUSH);
        assert_eq!(code, 202);
    }
}

fn renders(daemon: &Daemon) -> f64 {
    daemon.metric("converge_render_duration_seconds_count")
}

#[test]
fn a_git_overlay_reaches_its_base_and_a_base_commit_follows_the_webhook() {
    let setup = Overlay::new("render-git-overlay");
    let daemon = setup.start("interval = \"1h\"");
    let env = &setup.env;
    assert_eq!(env.configmap_value("settings").as_deref(), Some("1"));
    assert_eq!(env.configmap_value("extra").as_deref(), Some("x"));
    let source = daemon.source();
    let origins: Vec<&str> = source["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["origin"].as_str())
        .collect();
    assert!(
        origins.iter().any(|o| o.ends_with("/base/settings.yaml:1")),
        "{origins:?}"
    );
    let tools = daemon.status()["tools"].clone();
    assert_eq!(tools[0]["tool"], "kustomize", "{tools}");
    assert!(tools[0]["version"].as_str().is_some(), "{tools}");
    assert_eq!(renders(&daemon), 1.0);

    setup.push(
        &daemon,
        &[("base/settings.yaml", &configmap("settings", "2"))],
    );
    let applied = env
        .wait_configmap_value("settings", "2", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the base commit was not applied:\n{}", daemon.log()));
    println!("a commit to the base was applied {applied:?} after the webhook");
    assert!(applied < Duration::from_secs(2), "{applied:?}");
    assert_eq!(renders(&daemon), 2.0);

    // A commit elsewhere in the repository leaves the overlay's inputs alone.
    setup.push(&daemon, &[("README.md", "# apps\n")]);
    let revision = setup.upstream.head();
    let seen = crate::common::eventually(Duration::from_secs(10), || {
        daemon.source()["revision"].as_str() == Some(revision.as_str())
    });
    assert!(seen.is_some(), "{}", daemon.log());
    assert_eq!(
        renders(&daemon),
        2.0,
        "an unchanged overlay is not rendered"
    );

    let outside = "resources:\n- ../../base\n- ../../../../outside\n";
    setup.push(&daemon, &[("overlays/dev/kustomization.yaml", outside)]);
    let refused = crate::common::eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        let error = source["error"].as_str().unwrap_or_default().to_string();
        (source["result"] == "failed").then_some(error)
    })
    .unwrap_or_else(|| panic!("the escape was not refused:\n{}", daemon.log()));
    assert!(
        refused.value.contains(
            "overlays/dev/kustomization.yaml: resources \"../../../../outside\" leads to"
        ),
        "{}",
        refused.value
    );
    assert_eq!(env.configmap_value("settings").as_deref(), Some("2"));
}

#[test]
fn resyncs_of_an_unchanged_overlay_render_nothing() {
    let setup = Overlay::new("render-resync");
    let daemon = setup.start("interval = \"300ms\"\nfull_resync_every = 1");
    let before = daemon.metric("converge_reconciles_total");
    // Three full resyncs (300 ms apart) have run, however long they took.
    let resynced = crate::common::eventually(Duration::from_secs(30), || {
        daemon.metric("converge_reconciles_total") >= before + 3.0
    });
    assert!(
        resynced.is_some(),
        "fewer than 3 resyncs in 30 s ({before} → {}):\n{}",
        daemon.metric("converge_reconciles_total"),
        daemon.log()
    );
    assert_eq!(renders(&daemon), 1.0, "{}", daemon.log());
}

#[test]
fn variables_from_the_config_and_a_configmap_are_substituted() {
    let env = TestEnv::new("render-vars");
    let vars = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cluster-vars, namespace: {}}}\n\
         data: {{REGION: eu-west-1, TOKEN_LIKE: not-a-secret}}\n",
        env.ns
    );
    env.kubectl_stdin(&["apply", "-f", "-"], &vars);
    let token = "s3cr3t-t0ken-value";
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        &env.ns,
        &format!("--from-literal=TOKEN={token}"),
    ]);
    let app = Manifests::new();
    app.write(
        "kustomization.yaml",
        "resources: [settings.yaml, secret.yaml]\n",
    );
    app.write(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\nstringData:\n  token: ${TOKEN}\n",
    );
    let settings = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  \
                    value: ${ENV}-${REGION}\n  default: ${TIER:=gold}\n  literal: $${HOME}\n";
    app.write("settings.yaml", settings);
    let config = format!(
        "[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n\
         vars_from = [\"configmap/{{ns}}/cluster-vars\", \"secret/{{ns}}/creds\"]\n\
         [source.vars]\nENV = \"prod\"\n",
        app.arg()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(
        env.configmap_value("settings").as_deref(),
        Some("prod-eu-west-1"),
        "{}",
        daemon.log()
    );
    let data = env.kubectl(&[
        "get",
        "configmap",
        "settings",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.data.default} {.data.literal}",
    ]);
    assert_eq!(data, "gold ${HOME}");
    let stored = env.kubectl(&[
        "get",
        "secret",
        "app",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.data.token}",
    ]);
    assert_eq!(
        stored, "czNjcjN0LXQwa2VuLXZhbHVl",
        "the Secret's value, base64"
    );

    app.write(
        "settings.yaml",
        &format!("{settings}  missing: ${{NOT_SET}}\n"),
    );
    let failed = crate::common::eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed")
            .then(|| source["error"].as_str().unwrap_or_default().to_string())
    })
    .unwrap_or_else(|| panic!("the missing variable was not reported:\n{}", daemon.log()));
    assert!(
        failed
            .value
            .contains("ConfigMap/settings: variable NOT_SET is not set"),
        "{}",
        failed.value
    );
    assert!(failed.value.contains("settings.yaml:"), "{}", failed.value);
    let shown = format!(
        "{}\n{}\n{}",
        daemon.log(),
        daemon.get("/status").1,
        daemon.metrics()
    );
    assert!(!shown.contains(token), "a Secret's value was shown");
}

#[test]
fn a_chart_with_values_files_values_and_sets() {
    let env = TestEnv::new("render-daemon-helm");
    let chart = Manifests::new();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("tests/fixtures/podinfo/charts/podinfo/."))
        .arg(chart.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let config = format!(
        "[[source]]\nname = \"{{ns}}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n\
         [source.helm]\nrelease = \"web\"\nvalues_files = [\"values-prod.yaml\"]\n\
         set = [\"ui.message=hello\"]\nvalues = {{ hpa = {{ enabled = false }} }}\n",
        chart.arg()
    );
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    let source = daemon.source();
    assert_eq!(source["result"], "synced", "{}", daemon.log());
    let objects: Vec<&str> = source["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["object"].as_str())
        .collect();
    assert!(
        objects.contains(&format!("Deployment.apps/{}/web-podinfo-redis", env.ns).as_str()),
        "{objects:?}"
    );
    assert!(
        !objects
            .iter()
            .any(|o| o.starts_with("HorizontalPodAutoscaler")),
        "inline values win over the values file: {objects:?}"
    );
    let message = env.kubectl(&[
        "get",
        "deployment",
        "web-podinfo",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name=='PODINFO_UI_MESSAGE')].value}",
    ]);
    assert_eq!(message, "hello");
}

#[test]
fn a_one_file_commit_to_a_large_flat_kustomization_builds_only_its_part() {
    let upstream = Upstream::new("apps");
    let file = |f: usize, value: &str| -> String {
        (0..50)
            .map(|o| format!("---\n{}", configmap(&format!("c{f}-{o}"), value)))
            .collect()
    };
    let (a, b, c) = (file(0, "1"), file(1, "1"), file(2, "1"));
    let kustomization = "resources:\n- a.yaml\n- b.yaml\n- c.yaml\n";
    upstream.commit(
        &[
            ("app/kustomization.yaml", kustomization),
            ("app/a.yaml", &a),
            ("app/b.yaml", &b),
            ("app/c.yaml", &c),
        ],
        "first",
    );
    let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    let setup = Overlay {
        env: TestEnv::new("render-flat-parts"),
        upstream,
        server,
    };
    let daemon = setup.start_at("app", "interval = \"1h\"");
    let env = &setup.env;
    assert_eq!(
        env.configmap_value("c2-49").as_deref(),
        Some("1"),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("parts=2 built=2"), "{}", daemon.log());
    setup.push(&daemon, &[("app/b.yaml", &file(1, "2"))]);
    env.wait_configmap_value("c1-49", "2", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the commit was not applied:\n{}", daemon.log()));
    assert!(daemon.log().contains("parts=2 built=1"), "{}", daemon.log());
    assert_eq!(env.configmap_value("c2-49").as_deref(), Some("1"));
}
