//! `converge reconcile` against a real control plane: a Git source polled once an
//! hour applies a new commit the moment it is asked, the command says what it
//! wrote and exits as `apply` does; the control API wants the bearer token when
//! one is configured.

use crate::common::daemon::Daemon;
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::{TestEnv, configmap, describe};
use std::time::{Duration, Instant};

const USER: &str = "deploy";
const PASSWORD: &str = "Git-pa55word-never-logged";
const TOKEN: &str = "control-token-for-tests";

/// A daemon with one Git source (interval 1h), its token in a file.
fn start(env: &TestEnv, server: &GitHttpServer, token_file: &std::path::Path) -> Daemon {
    let config = format!(
        r#"state_dir = "{{state}}"

[server]
token_file = "{token}"

[[source]]
name = "{{ns}}"
git = "{url}"
branch = "main"
interval = "1h"
username_env = "TEST_GIT_USER"
password_env = "TEST_GIT_PASSWORD"
namespace = "{{ns}}"
"#,
        url = server.url("config.git"),
        token = token_file.display(),
    );
    let vars = [("TEST_GIT_USER", USER), ("TEST_GIT_PASSWORD", PASSWORD)];
    let daemon = Daemon::start_with_env(env, &config, &[], &vars);
    daemon.wait_ready(Duration::from_secs(30));
    daemon
}

#[test]
fn reconcile_applies_a_new_commit_at_once_and_says_what_it_wrote() {
    let env = TestEnv::new("reconcile-now");
    let upstream = Upstream::new("config");
    upstream.commit(&[("a.yaml", &configmap("a", "1"))], "first");
    let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token");
    let daemon = start(&env, &server, &token_file);
    assert_eq!(env.configmap_value("a").as_deref(), Some("1"));

    let without = daemon.converge(&env, &["reconcile", &env.ns]);
    assert_eq!(without.status.code(), Some(2), "{}", describe(&without));
    assert!(String::from_utf8_lossy(&without.stderr).contains("bearer token"));
    let (code, _) = daemon.get("/status");
    assert_eq!(code, 401, "/status wants the token too");
    assert_eq!(daemon.get("/healthz").0, 200, "probes do not");

    upstream.commit(&[("a.yaml", &configmap("a", "2"))], "second");
    let token = token_file.to_str().expect("a UTF-8 path");
    let started = Instant::now();
    let out = daemon.converge(&env, &["reconcile", &env.ns, "--token-file", token]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // The command returned after the reconcile: the new value is there now.
    assert_eq!(env.configmap_value("a").as_deref(), Some("2"));
    eprintln!("converge reconcile → new commit applied in {took:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&upstream.head()[..12]), "{said}");
    assert!(said.contains("written: 0 created, 1 configured"), "{said}");
    assert!(said.contains("health: ready"), "{said}");

    let waited = daemon.converge(
        &env,
        &[
            "reconcile",
            &env.ns,
            "--wait",
            "--token-file",
            token,
            "-o",
            "json",
        ],
    );
    assert_eq!(waited.status.code(), Some(0), "{}", describe(&waited));
    let json: serde_json::Value = serde_json::from_slice(&waited.stdout).expect("JSON");
    assert_eq!(json["lastSync"]["unchanged"], 1, "{json}");
    let status = daemon.converge(&env, &["status", "--token-file", token]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));

    let unknown = daemon.converge(&env, &["reconcile", "nope", "--token-file", token]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no source \"nope\""));
}
