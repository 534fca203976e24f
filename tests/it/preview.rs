//! Pull-request previews on a real control plane: `converge diff --git URL --ref
//! REF` against the cluster (the server's dry-run), `--base REF` offline with no
//! cluster reachable, and `-o markdown` parsed by a real Markdown parser
//! (markdown-it-py, installed by hack/install-deps.sh) and capped in size.
//! kubectl checks that a preview writes nothing.

use crate::common::git::Upstream;
use crate::common::{TestEnv, describe};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.example/web:1}]}
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
";

const KEPT: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: kept}
data: {colour: blue}
";

const SETTINGS: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
";

/// A pre-sync hook (second in its phase) and a sync hook in wave 2.
const HOOKS: &str = "\
apiVersion: batch/v1
kind: Job
metadata:
  generateName: migrate-
  annotations: {converge.dev/hook: pre-sync, converge.dev/wave: \"-1\"}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: busybox}]}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  generateName: smoke-
  annotations: {converge.dev/hook: post-sync}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: s, image: busybox}]}}}
";

/// `main` holds a Deployment, a Service and a ConfigMap under `shop/`; the branch
/// `feature` changes the Deployment, adds a ConfigMap, removes the Service and
/// adds two hooks. HEAD is left on `main`.
fn repository() -> Upstream {
    let upstream = Upstream::new("deploy");
    upstream.commit(
        &[
            ("shop/web.yaml", &DEPLOYMENT.replace("REPLICAS", "1")),
            ("shop/service.yaml", SERVICE),
            ("shop/kept.yaml", KEPT),
            ("README.md", "not a manifest: outside --path\n"),
        ],
        "base",
    );
    upstream.git(&["checkout", "-q", "-b", "feature"]);
    upstream.git(&["rm", "-q", "shop/service.yaml"]);
    upstream.commit(
        &[
            ("shop/web.yaml", &DEPLOYMENT.replace("REPLICAS", "3")),
            ("shop/settings.yaml", SETTINGS),
            ("shop/hooks.yaml", HOOKS),
        ],
        "feature: 3 replicas, settings, no Service, hooks",
    );
    upstream.git(&["push", "-q", "origin", "feature"]);
    upstream.git(&["checkout", "-q", "main"]);
    upstream
}

fn converge(env: &TestEnv, args: &[&str]) -> Output {
    env.converge_command()
        .args(args)
        .output()
        .expect("run converge")
}

/// `converge` with no cluster anywhere: a kubeconfig that does not exist, and no
/// in-cluster variables.
fn converge_offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("NO_COLOR", "1")
        .output()
        .expect("run converge")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(out)))
}

/// (object, action) of every object a plan (`diff -o json`) would write.
fn plan_changes(plan: &Value) -> BTreeSet<(String, String)> {
    plan["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| !matches!(o["action"].as_str(), Some("unchanged" | "run")))
        .map(|o| {
            let action = match o["action"].as_str().unwrap_or_default() {
                "configure" => "change",
                other => other,
            };
            (
                o["object"].as_str().unwrap_or_default().to_string(),
                action.to_string(),
            )
        })
        .collect()
}

/// (hook, phases) of every hook a plan would run.
fn plan_hooks(plan: &Value) -> BTreeSet<(String, String)> {
    plan["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["action"] == "run")
        .map(|o| (label(o), o["hook"].to_string()))
        .collect()
}

/// A hook's name as listed: `Job.batch/ns/migrate-*` for a generateName.
fn label(object: &Value) -> String {
    object["label"].as_str().unwrap_or_default().to_string()
}

fn expected(ns: &str) -> BTreeSet<(String, String)> {
    [
        (format!("ConfigMap/{ns}/settings"), "create"),
        (format!("Deployment.apps/{ns}/web"), "change"),
        (format!("Service/{ns}/web"), "prune"),
    ]
    .into_iter()
    .map(|(o, a)| (o, a.to_string()))
    .collect()
}

fn git_url(upstream: &Upstream) -> String {
    upstream.bare.display().to_string()
}

/// Applies `main` as the source `shop` would have it (through `apply --git`).
fn apply_main(env: &TestEnv, upstream: &Upstream) {
    let url = git_url(upstream);
    let args = [
        "apply", "--git", &url, "--ref", "main", "--path", "shop", "-n", &env.ns, "--prune",
    ];
    let out = converge(env, &args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // `--name` defaults to the --path's last directory.
    let parent = env.kubectl(&[
        "get",
        "configmap",
        "converge-shop",
        "-n",
        &env.ns,
        "-o",
        "name",
    ]);
    assert!(parent.contains("converge-shop"), "{parent}");
}

#[test]
fn a_branch_preview_lists_exactly_its_three_changes_and_the_hooks_that_would_run() {
    let env = TestEnv::new("preview-live");
    let upstream = repository();
    apply_main(&env, &upstream);
    let url = git_url(&upstream);
    let preview = |extra: &[&str]| {
        let mut args = vec![
            "diff", "--git", &url, "--ref", "feature", "--path", "shop", "-n", &env.ns, "--prune",
        ];
        args.extend(extra);
        converge(&env, &args)
    };

    let out = preview(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "changes: {}", describe(&out));
    let plan = json(&out);
    assert_eq!(plan_changes(&plan), expected(&env.ns), "{plan:#}");
    let hooks = plan_hooks(&plan);
    let want: BTreeSet<(String, String)> = [
        (
            format!("Job.batch/{}/migrate-*", env.ns),
            r#"["pre-sync"]"#.to_string(),
        ),
        (
            format!("Job.batch/{}/smoke-*", env.ns),
            r#"["post-sync"]"#.to_string(),
        ),
    ]
    .into();
    assert_eq!(hooks, want, "{plan:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at `feature` path `shop` ("), "{stderr}");

    // The text names each change and each hook with its stage.
    let out = preview(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        format!("[pre-sync] Job.batch/{}/migrate-* runs", env.ns),
        format!("[post-sync] Job.batch/{}/smoke-* runs", env.ns),
        format!("ConfigMap/{}/settings created", env.ns),
        format!("Deployment.apps/{}/web configured", env.ns),
        format!("Service/{}/web pruned", env.ns),
        "-  replicas: 1\n+  replicas: 3".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }

    // The Markdown comment: parsed by a real parser, the same three and the hooks.
    let out = preview(&["-o", "markdown", "--title", "shop preview"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let comment = String::from_utf8_lossy(&out.stdout).into_owned();
    let parsed = parse_markdown(&comment);
    assert_eq!(parsed["heading"], "shop preview", "{parsed:#}");
    let rows = table_rows(&parsed, 0);
    assert_eq!(
        rows,
        [
            format!("➕ created|ConfigMap/{}/settings|wave 0", env.ns),
            format!("✏️ changed|Deployment.apps/{}/web|wave 0", env.ns),
            format!("🗑️ pruned|Service/{}/web|wave 0", env.ns),
        ],
        "{comment}"
    );
    let hooks = table_rows(&parsed, 1);
    assert_eq!(
        hooks,
        [
            format!(
                "Job.batch/{}/migrate-*|pre-sync, weight -1|every sync that writes",
                env.ns
            ),
            format!(
                "Job.batch/{}/smoke-*|post-sync, weight 0|every sync that writes",
                env.ns
            ),
        ],
        "{comment}"
    );
    // One folded diff per object with a diff (a prune has none against the cluster).
    assert_eq!(parsed["details"], 2, "{comment}");
    assert_eq!(parsed["diff_fences"], 2, "{comment}");
    assert_eq!(parsed["truncated"], false, "{comment}");

    // Nothing was written: kubectl still sees main.
    let service = env.kubectl(&["get", "service", "web", "-n", &env.ns, "-o", "name"]);
    assert_eq!(service.trim(), "service/web");
    let replicas = env.kubectl(&[
        "get",
        "deployment",
        "web",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "1");
    let settings = env.kubectl_output(&["get", "configmap", "settings", "-n", &env.ns], None);
    assert!(!settings.status.success(), "settings must not exist yet");
    let jobs = env.kubectl(&["get", "jobs", "-n", &env.ns, "-o", "name"]);
    assert_eq!(jobs.trim(), "", "no hook ran");

    // main against the cluster it is applied to: nothing to do, exit 0, no hooks.
    let out = converge(
        &env,
        &[
            "diff", "--git", &url, "--ref", "main", "--path", "shop", "-n", &env.ns, "--prune",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn base_gives_the_same_object_list_without_a_cluster() {
    let env = TestEnv::new("preview-base");
    let upstream = repository();
    apply_main(&env, &upstream);
    let url = git_url(&upstream);
    let live = converge(
        &env,
        &[
            "diff", "--git", &url, "--ref", "feature", "--path", "shop", "-n", &env.ns, "--prune",
            "-o", "json",
        ],
    );
    assert_eq!(live.status.code(), Some(1), "{}", describe(&live));
    let live = json(&live);

    let offline = |extra: &[&str]| {
        let mut args = vec![
            "diff", "--git", &url, "--ref", "feature", "--base", "main", "--path", "shop", "-n",
            &env.ns, "--prune",
        ];
        args.extend(extra);
        converge_offline(&args)
    };
    let out = offline(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let compared = json(&out);
    let changes: BTreeSet<(String, String)> = compared["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["object"].as_str().unwrap_or_default().to_string(),
                c["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(changes, plan_changes(&live), "{compared:#}");
    assert_eq!(changes, expected(&env.ns));
    let hooks: BTreeSet<(String, String)> = compared["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .map(|h| {
            (
                h["object"].as_str().unwrap_or_default().to_string(),
                h["phases"].to_string(),
            )
        })
        .collect();
    assert_eq!(hooks, plan_hooks(&live), "{compared:#}");
    assert_eq!(compared["summary"]["unchanged"], 1, "{compared:#}");
    assert_eq!(compared["head"], upstream.git(&["rev-parse", "feature"]));
    assert_eq!(compared["base"], upstream.git(&["rev-parse", "main"]));

    // Offline the removed Service has a diff too (its base manifest).
    let out = offline(&["-o", "markdown"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let parsed = parse_markdown(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(parsed["diff_fences"], 3, "{parsed:#}");
    assert_eq!(table_rows(&parsed, 0).len(), 3, "{parsed:#}");

    // The same revision on both sides: nothing to do, exit 0.
    let out = converge_offline(&[
        "diff", "--git", &url, "--ref", "main", "--base", "main", "--path", "shop", "--prune",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 created, 0 changed, 0 pruned, 3 unchanged"),
        "{text}"
    );

    // Without a cluster, the live preview cannot run: an error (2), not a pass.
    let out = converge_offline(&["diff", "--git", &url, "--ref", "feature", "--path", "shop"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn the_markdown_comment_is_capped_at_max_bytes_and_says_so() {
    let upstream = repository();
    // A large change: 60 ConfigMaps of 40 lines each.
    upstream.git(&["checkout", "-q", "feature"]);
    let big: Vec<(String, String)> = (0..60)
        .map(|i| {
            let data: String = (0..40)
                .map(|k| format!("  key{k}: value-{i}-{k}\n"))
                .collect();
            (
                format!("shop/big-{i}.yaml"),
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big-{i}}}\ndata:\n{data}"
                ),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = big.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    upstream.commit(&files, "60 ConfigMaps");
    upstream.git(&["checkout", "-q", "main"]);
    let url = git_url(&upstream);
    let out = converge_offline(&[
        "diff",
        "--git",
        &url,
        "--ref",
        "feature",
        "--base",
        "main",
        "--path",
        "shop",
        "--prune",
        "-o",
        "markdown",
        "--max-bytes",
        "20000",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let comment = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(comment.len() <= 20_000, "{} bytes", comment.len());
    let parsed = parse_markdown(&comment);
    assert_eq!(parsed["truncated"], true, "{comment}");
    // Every row is there; only diffs were left out, each fence closed.
    assert_eq!(table_rows(&parsed, 0).len(), 63, "{comment}");
    let shown = parsed["diff_fences"].as_u64().unwrap_or_default();
    assert!(shown > 0 && shown < 63, "{shown} diffs shown");
    assert_eq!(parsed["details"], shown, "{parsed:#}");
    assert!(
        comment.contains(&format!("{} of 63 diffs left out", 63 - shown)),
        "{comment}"
    );
    // Below the minimum the flag is refused.
    let out = converge_offline(&[
        "diff",
        "--git",
        &url,
        "--ref",
        "feature",
        "--base",
        "main",
        "-o",
        "markdown",
        "--max-bytes",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn a_ref_that_does_not_exist_or_flags_without_git_are_errors() {
    let upstream = repository();
    let url = git_url(&upstream);
    let out = converge_offline(&["diff", "--git", &url, "--ref", "nope", "--base", "main"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("feature"),
        "{stderr}"
    );
    for args in [
        &["diff", "k8s/", "--base", "main"][..],
        &["diff", "k8s/", "--ref", "main"],
        &["diff", "k8s/", "--git", &url],
        &["diff"],
        &["apply", "--git", &url, "-o", "markdown"],
    ] {
        let out = converge_offline(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    // A local clone's HEAD and its remote-tracking branch work as refs too.
    upstream.git(&["fetch", "-q", "origin"]);
    let work = upstream.work.display().to_string();
    let out = converge_offline(&[
        "diff",
        "--git",
        &work,
        "--ref",
        "origin/feature",
        "--base",
        "HEAD",
        "--path",
        "shop",
        "--prune",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

/// The Python of the venv hack/install-deps.sh installs markdown-it-py into.
fn markdown_python() -> PathBuf {
    let venv = std::env::var_os("CONVERGE_MARKDOWN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/converge/markdown-it-4.0.0")
        });
    let python = venv.join("bin/python");
    let found = Command::new(&python)
        .args(["-c", "import markdown_it"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "markdown-it-py is not installed in {}: run `bash hack/install-deps.sh` (or set \
         CONVERGE_MARKDOWN_VENV to a venv that has it)",
        venv.display()
    );
    python
}

/// What markdown-it-py (CommonMark + GFM tables) makes of `text`: the first
/// heading, each table's body rows (cells joined by `|`), how many `<details>`
/// blocks open and close, the `diff` fences, and whether a blockquote says the
/// comment was truncated.
fn parse_markdown(text: &str) -> Value {
    const SCRIPT: &str = r#"
import json, sys
from markdown_it import MarkdownIt
text = sys.stdin.read()
tokens = MarkdownIt("commonmark").enable("table").parse(text)
out = {"heading": None, "tables": [], "details": 0, "details_closed": 0,
       "diff_fences": 0, "truncated": False, "html": []}
in_quote = False
row = None
for i, t in enumerate(tokens):
    if t.type == "heading_open" and out["heading"] is None:
        out["heading"] = tokens[i + 1].content
    elif t.type == "table_open":
        out["tables"].append([])
        in_body = False
    elif t.type == "tbody_open":
        in_body = True
    elif t.type == "tr_open" and in_body:
        row = []
    elif t.type == "inline" and row is not None:
        row.append("".join(c.content for c in t.children))
    elif t.type == "tr_close" and row is not None:
        out["tables"][-1].append("|".join(row))
        row = None
    elif t.type == "html_block":
        out["details"] += t.content.count("<details>")
        out["details_closed"] += t.content.count("</details>")
    elif t.type == "fence" and t.info == "diff":
        out["diff_fences"] += 1
    elif t.type == "blockquote_open":
        in_quote = True
    elif t.type == "blockquote_close":
        in_quote = False
    elif t.type == "inline" and in_quote and "truncated to" in t.content:
        out["truncated"] = True
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new(markdown_python())
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write markdown");
    }
    let out = child.wait_with_output().expect("python");
    assert_eq!(
        out.status.code(),
        Some(0),
        "markdown-it: {}",
        describe(&out)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("parser's JSON");
    assert_eq!(
        parsed["details"], parsed["details_closed"],
        "every <details> is closed: {parsed:#}"
    );
    parsed
}

fn table_rows(parsed: &Value, index: usize) -> Vec<String> {
    parsed["tables"][index]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A private repository over HTTP: credentials by environment variable, as a Git
/// source names them; without them the preview fails (2) and never shows the
/// password. The revision is a kustomization with `${VAR}` substitution, rendered
/// as a source would render it.
#[test]
fn a_private_kustomization_is_previewed_with_credentials_and_vars() {
    use crate::common::git_http::GitHttpServer;
    let upstream = Upstream::new("private");
    upstream.commit(
        &[
            ("app/kustomization.yaml", "resources: [settings.yaml]\nnamePrefix: p-\n"),
            (
                "app/settings.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {env: \"${ENV}\"}\n",
            ),
        ],
        "base",
    );
    upstream.git(&["checkout", "-q", "-b", "feature"]);
    upstream.commit(
        &[(
            "app/settings.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {env: \"${ENV}-2\"}\n",
        )],
        "feature",
    );
    upstream.git(&["push", "-q", "origin", "feature"]);
    let server = GitHttpServer::start(upstream.root.clone(), "ci", "s3cret-token");
    let url = server.url("private.git");
    let preview = |extra: &[&str]| {
        let mut args = vec![
            "diff", "--git", &url, "--ref", "feature", "--base", "main", "--path", "app", "--var",
            "ENV=prod", "-o", "json",
        ];
        args.extend(extra);
        let mut command = Command::new(env!("CARGO_BIN_EXE_converge"));
        command
            .args(&args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env("PREVIEW_USER", "ci")
            .env("PREVIEW_TOKEN", "s3cret-token");
        command.output().expect("run converge")
    };
    let out = preview(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no credentials: {}",
        describe(&out)
    );
    let out = preview(&[
        "--git-username-env",
        "PREVIEW_USER",
        "--git-password-env",
        "PREVIEW_TOKEN",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let compared = json(&out);
    let change = &compared["changes"][0];
    assert_eq!(
        change["object"], "ConfigMap/default/p-settings",
        "{compared:#}"
    );
    assert_eq!(change["action"], "change");
    let diff = change["diff"].as_str().unwrap_or_default();
    assert!(diff.contains("-  env: prod\n+  env: prod-2"), "{diff}");
    // A wrong token: refused, and the token is not in the message.
    let out = preview(&[
        "--git-username-env",
        "PREVIEW_USER",
        "--git-password-env",
        "WRONG",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("WRONG"),
        "the missing variable is named: {all}"
    );
    assert!(!all.contains("s3cret-token"), "{all}");
}

/// A revision that does not load names the file as the repository has it, not
/// the scratch directory it was checked out into: exit 2.
#[test]
fn a_broken_revision_names_the_repository_file() {
    let upstream = repository();
    upstream.git(&["checkout", "-q", "feature"]);
    upstream.commit(
        &[(
            "shop/broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n",
        )],
        "broken",
    );
    upstream.git(&["checkout", "-q", "main"]);
    let url = git_url(&upstream);
    let out = converge_offline(&[
        "diff", "--git", &url, "--ref", "feature", "--base", "main", "--path", "shop",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shop/broken.yaml"), "{stderr}");
    assert!(
        !stderr.contains("checkout-"),
        "the scratch directory shows: {stderr}"
    );
}
