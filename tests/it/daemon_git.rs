//! `converge run` with a Git source served by `git http-backend` behind basic auth
//! on loopback, against the real control plane: webhook and poll triggers, broken
//! commits, an unreachable remote and a rejected password, each recovered from
//! without a restart.

use crate::common::daemon::Daemon;
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::{TestEnv, configmap, eventually, github_signature};
use std::time::Duration;

const USER: &str = "deploy";
const PASSWORD: &str = "Git-pa55word-never-logged";
const WEBHOOK_SECRET: &str = "hook-secret-value";

struct GitSetup {
    env: TestEnv,
    upstream: Upstream,
    server: GitHttpServer,
}

impl GitSetup {
    fn new(test: &str) -> Self {
        let upstream = Upstream::new("config");
        upstream.commit(
            &[
                ("clusters/dev/a.yaml", &configmap("a", "1")),
                ("README.md", "# config\n"),
            ],
            "first",
        );
        let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
        GitSetup {
            env: TestEnv::new(test),
            upstream,
            server,
        }
    }

    fn start(&self, interval: &str) -> Daemon {
        let config = format!(
            r#"state_dir = "{{state}}"

[[source]]
name = "{{ns}}"
git = "{url}"
branch = "main"
path = "clusters/dev"
interval = "{interval}"
username_env = "TEST_GIT_USER"
password_env = "TEST_GIT_PASSWORD"
webhook_secret_env = "TEST_WEBHOOK_SECRET"
namespace = "{{ns}}"
"#,
            url = self.server.url("config.git"),
        );
        let vars = [
            ("TEST_GIT_USER", USER),
            ("TEST_GIT_PASSWORD", PASSWORD),
            ("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ];
        let daemon = Daemon::start_with_env(&self.env, &config, &[], &vars);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    fn value_of(&self, name: &str) -> Option<String> {
        self.env.configmap_value(name)
    }

    fn wait_value(&self, name: &str, value: &str, timeout: Duration) -> Option<Duration> {
        self.env.wait_configmap_value(name, value, timeout)
    }
}

/// The push event every webhook test sends.
const PUSH: &str = r#"{"ref":"refs/heads/main"}"#;

/// Posts a push event to the source's webhook with `X-Hub-Signature-256: signature`.
fn push_webhook(daemon: &Daemon, name: &str, signature: &str) -> u16 {
    let header = format!("X-Hub-Signature-256: {signature}");
    let path = format!("/hooks/git/{name}");
    daemon
        .post(&path, &[&header, "Content-Type: application/json"], PUSH)
        .0
}

#[test]
fn a_pushed_commit_is_applied_on_the_webhook() {
    let setup = GitSetup::new("git-webhook");
    let daemon = setup.start("1h");
    assert_eq!(setup.value_of("a").as_deref(), Some("1"));
    let source = daemon.source();
    assert_eq!(
        source["revision"].as_str(),
        Some(setup.upstream.head().as_str())
    );
    assert!(
        !source["location"]
            .as_str()
            .unwrap_or_default()
            .contains(PASSWORD)
    );

    let pushed = setup
        .upstream
        .commit(&[("clusters/dev/a.yaml", &configmap("a", "2"))], "second");
    assert_eq!(push_webhook(&daemon, &setup.env.ns, "sha256=00"), 401);
    let signature = github_signature(WEBHOOK_SECRET.as_bytes(), PUSH.as_bytes());
    assert_eq!(push_webhook(&daemon, &setup.env.ns, &signature), 202);
    let applied = setup.wait_value("a", "2", Duration::from_secs(10));
    let applied = applied
        .unwrap_or_else(|| panic!("the webhook did not apply the commit:\n{}", daemon.log()));
    println!("a pushed commit was applied {applied:?} after the webhook");
    assert_eq!(daemon.source()["revision"].as_str(), Some(pushed.as_str()));
    assert!(
        !daemon.log().contains(PASSWORD),
        "the password appeared in the log"
    );
    assert!(daemon.metric("converge_git_fetch_duration_seconds_count") >= 2.0);
}

#[test]
fn a_pushed_commit_is_applied_within_one_poll_interval() {
    let setup = GitSetup::new("git-poll");
    let daemon = setup.start("2s");
    setup.upstream.commit(
        &[("clusters/dev/b.yaml", &configmap("b", "polled"))],
        "add b",
    );
    let applied = setup.wait_value("b", "polled", Duration::from_secs(10));
    let applied = applied.unwrap_or_else(|| panic!("never polled:\n{}", daemon.log()));
    println!("a pushed commit was applied after {applied:?} with a 2 s poll interval");
    assert!(applied <= Duration::from_secs(4), "{applied:?}");
}

#[test]
fn a_broken_commit_keeps_the_last_good_state_until_the_next_good_one() {
    let setup = GitSetup::new("git-broken");
    let daemon = setup.start("1s");
    let broken = setup.upstream.commit(
        &[
            ("clusters/dev/a.yaml", &configmap("a", "never")),
            (
                "clusters/dev/bad.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n",
            ),
        ],
        "broken",
    );
    let failed = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed").then_some(source)
    });
    let source = failed
        .unwrap_or_else(|| panic!("the broken commit was not reported:\n{}", daemon.log()))
        .value;
    assert_eq!(source["attemptedRevision"].as_str(), Some(broken.as_str()));
    assert_ne!(
        source["revision"].as_str(),
        Some(broken.as_str()),
        "the good revision stays"
    );
    // The flow sequence opened on line 4 is found unclosed on line 5.
    assert!(
        source["error"]
            .as_str()
            .unwrap_or_default()
            .contains("clusters/dev/bad.yaml:5: invalid YAML"),
        "names the file and line: {source:#}"
    );
    assert_eq!(
        setup.value_of("a").as_deref(),
        Some("1"),
        "nothing of the broken commit was applied"
    );

    setup.upstream.git(&["rm", "-q", "clusters/dev/bad.yaml"]);
    let good = setup
        .upstream
        .commit(&[("clusters/dev/a.yaml", &configmap("a", "3"))], "fixed");
    assert!(
        setup
            .wait_value("a", "3", Duration::from_secs(10))
            .is_some(),
        "{}",
        daemon.log()
    );
    let recovered = eventually(Duration::from_secs(5), || {
        daemon.source()["revision"].as_str() == Some(good.as_str())
    });
    assert!(recovered.is_some());
    assert_eq!(daemon.source()["result"], "synced");
}

#[test]
fn an_unreachable_remote_and_a_rejected_password_are_reported_and_recovered() {
    let setup = GitSetup::new("git-outage");
    let daemon = setup.start("1s");
    let wait_failed = |what: &str| {
        eventually(Duration::from_secs(15), || {
            let source = daemon.source();
            (source["result"] == "failed")
                .then_some(source["error"].as_str().unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| panic!("{what} was not reported:\n{}", daemon.log()))
        .value
    };

    setup.server.set_down(true);
    let error = wait_failed("the unreachable remote");
    println!("unreachable remote reported as: {error}");
    let url = setup.server.url("config.git");
    assert!(
        error.contains(&format!("cannot reach Git remote {url}")),
        "not reported as unreachable: {error}"
    );
    setup.server.set_down(false);
    setup.upstream.commit(
        &[("clusters/dev/a.yaml", &configmap("a", "after-outage"))],
        "during outage",
    );
    let recovered = setup.wait_value("a", "after-outage", Duration::from_secs(15));
    assert!(
        recovered.is_some(),
        "did not recover from the outage:\n{}",
        daemon.log()
    );

    setup.server.set_password(USER, "rotated-elsewhere");
    let error = wait_failed("the rejected password");
    println!("rejected password reported as: {error}");
    assert!(
        error.contains(&format!("authentication to {url} failed")),
        "not reported as an authentication failure: {error}"
    );
    assert!(!error.contains(PASSWORD));
    setup.server.set_password(USER, PASSWORD);
    setup.upstream.commit(
        &[("clusters/dev/a.yaml", &configmap("a", "after-auth"))],
        "after auth",
    );
    let recovered = setup.wait_value("a", "after-auth", Duration::from_secs(15));
    assert!(
        recovered.is_some(),
        "did not recover from the auth failure:\n{}",
        daemon.log()
    );
    assert!(daemon.metric("converge_git_fetch_failures_total") >= 2.0);
    assert!(
        !daemon.log().contains(PASSWORD),
        "the password appeared in the log"
    );
}
