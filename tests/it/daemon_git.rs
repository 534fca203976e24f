//! `converge run` with a Git source served by `git http-backend` behind basic auth
//! on loopback, against the real control plane: webhook and poll triggers, the
//! periodic resync and its full safety net, broken commits (not retried in a hot
//! loop), an unreachable remote and a rejected password, each recovered from
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
        self.start_with(interval, "")
    }

    /// [`GitSetup::start`] with `extra` lines in the `[[source]]` table.
    fn start_with(&self, interval: &str, extra: &str) -> Daemon {
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
{extra}"#,
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
    // The status is recorded just after the writes kubectl saw.
    let recorded = eventually(Duration::from_secs(5), || {
        daemon.source()["revision"].as_str() == Some(pushed.as_str())
    });
    assert!(recorded.is_some(), "{}", daemon.source());
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

/// `converge_reconciles_total` of the test's source for one result label.
fn reconciles(daemon: &Daemon, ns: &str, result: &str) -> f64 {
    daemon.metric(&format!(
        r#"converge_reconciles_total{{source="{ns}",result="{result}"}}"#
    ))
}

#[test]
fn the_periodic_resync_runs_and_every_nth_quiet_one_is_a_full_reconcile() {
    let setup = GitSetup::new("git-resync");
    let daemon = setup.start_with("1s", "full_resync_every = 3\n");
    let ns = &setup.env.ns;
    let first = setup.upstream.head();
    // Nothing changes upstream: ticks at 1 s and 2 s are quiet, 3 s is full, …
    let full = eventually(Duration::from_secs(15), || {
        reconciles(&daemon, ns, "success") >= 3.0
    });
    full.unwrap_or_else(|| {
        panic!(
            "no full resync: {} successes, {} quiet resyncs:\n{}",
            reconciles(&daemon, ns, "success"),
            reconciles(&daemon, ns, "skipped"),
            daemon.log()
        )
    });
    let skipped = reconciles(&daemon, ns, "skipped");
    println!("3 full reconciles (the start and 2 safety nets) after {skipped} quiet resyncs");
    assert!(
        (4.0..=6.0).contains(&skipped),
        "two quiet resyncs before each full one: {skipped}"
    );
    let source = daemon.source();
    assert_eq!(source["revision"].as_str(), Some(first.as_str()));
    assert_eq!(source["result"], "synced");
    assert!(daemon.metric("converge_git_fetch_duration_seconds_count") >= 6.0);
    assert_eq!(reconciles(&daemon, ns, "failure"), 0.0);

    // The tick is the poll: a new commit is reconciled at the next one.
    setup.upstream.commit(
        &[("clusters/dev/a.yaml", &configmap("a", "ticked"))],
        "second",
    );
    assert!(
        setup
            .wait_value("a", "ticked", Duration::from_secs(5))
            .is_some(),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_broken_revision_is_not_retried_until_the_next_tick() {
    let setup = GitSetup::new("git-no-hot-loop");
    // A long interval: a reconcile in the next seconds could only be a retry.
    let daemon = setup.start("10s");
    let good = setup.upstream.head();
    setup.upstream.commit(
        &[(
            "clusters/dev/bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n",
        )],
        "broken",
    );
    let signature = github_signature(WEBHOOK_SECRET.as_bytes(), PUSH.as_bytes());
    assert_eq!(push_webhook(&daemon, &setup.env.ns, &signature), 202);
    let failed = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed").then_some(source)
    });
    let source = failed
        .unwrap_or_else(|| panic!("not reported:\n{}", daemon.log()))
        .value;
    let attempts = source["reconciles"].as_u64().unwrap_or_default();

    std::thread::sleep(Duration::from_secs(6));
    let source = daemon.source();
    let later = source["reconciles"].as_u64().unwrap_or_default();
    println!(
        "attempts of the broken revision in the 6 s after the first: {}",
        later - attempts
    );
    assert!(
        later - attempts <= 1,
        "retried {} times in 6 s (at most the 10 s tick may retry it):\n{}",
        later - attempts,
        daemon.log()
    );
    assert_eq!(source["result"], "failed");
    assert_eq!(
        source["revision"].as_str(),
        Some(good.as_str()),
        "the last good revision stays"
    );
    assert_eq!(setup.value_of("a").as_deref(), Some("1"));
    assert!(
        daemon
            .log()
            .contains("waiting for the next revision or resync"),
        "{}",
        daemon.log()
    );
}
