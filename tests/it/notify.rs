//! `[[notify]]` (issue #30, part 2) against a real daemon over a real Git source:
//! a receiver on loopback records what the daemon sends: converge's signed JSON,
//! Slack-shaped bodies, GitHub and GitLab commit statuses on the real commit ids.
//! Each event is sent once per revision (per drift, per degradation), and a
//! second target that never answers delays neither the reconciles nor the other
//! targets.

use crate::common::daemon::Daemon;
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::receiver::{Answer, Receiver, Request};
use crate::common::{TestEnv, configmap, github_signature};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const USER: &str = "deploy";
const PASSWORD: &str = "Git-pa55word-notify";
const HMAC_KEY: &str = "notify-hmac-key-never-logged";
const GITHUB_TOKEN: &str = "ghp_never-logged-token";
const GITLAB_TOKEN: &str = "glpat-never-logged-token";
/// Long enough to see: a notice takes at most this long to arrive once due.
const PROMPT: Duration = Duration::from_secs(10);

fn config(
    server: &GitHttpServer,
    healthy: &Receiver,
    hanging: &Receiver,
    waiting_dir: &str,
) -> String {
    format!(
        r#"state_dir = "{{state}}"

[[source]]
name = "{{ns}}"
git = "{git}"
branch = "main"
interval = "1s"
username_env = "TEST_GIT_USER"
password_env = "TEST_GIT_PASSWORD"
namespace = "{{ns}}"

[[source]]
name = "{{ns}}-waits"
dir = "{waiting_dir}"
namespace = "{{ns}}"
depends_on = [{{ object = "v1/ConfigMap/{{ns}}/never-there" }}]

[[health]]
api_version = "v1"
kind = "ConfigMap"
failed = "has(self.data) && has(self.data.value) && self.data.value == 'broken'"
current = "true"
message = "'the value is broken'"

[[notify]]
name = "hook"
kind = "webhook"
url = "{hook}"
events = ["synced", "failed", "drifted", "healed", "degraded", "recovered", "waiting"]
secret_env = "TEST_NOTIFY_HMAC"

[[notify]]
name = "chat"
kind = "slack"
url = "{slack}"
events = ["synced", "drifted", "healed", "failed"]
sources = ["{{ns}}"]

[[notify]]
name = "gh"
kind = "github"
api_url = "{github}"
repository = "acme/config"
events = ["synced", "failed", "degraded", "recovered"]
token_env = "TEST_GITHUB_TOKEN"

[[notify]]
name = "gl"
kind = "gitlab"
api_url = "{gitlab}"
events = ["synced", "failed"]
token_env = "TEST_GITLAB_TOKEN"

[[notify]]
name = "hangs"
kind = "webhook"
url = "{hangs}"
events = ["synced", "failed", "drifted", "healed", "degraded", "recovered", "waiting"]
secret_env = "TEST_NOTIFY_HMAC"
timeout = "60s"
"#,
        git = server.url("config.git"),
        hook = healthy.url("/hook"),
        slack = healthy.url("/slack/T000/B000/xyz"),
        github = healthy.url("/gh"),
        gitlab = healthy.url("/gl/api/v4"),
        hangs = hanging.url("/hangs"),
    )
}

/// The webhook notices so far, each with its request.
fn notices(receiver: &Receiver) -> Vec<(Value, Request)> {
    (receiver.to("/hook").into_iter())
        .map(|r| (r.json(), r))
        .collect()
}

/// Waits for the webhook notice `event` (at `revision`, if given).
fn wait_notice(
    receiver: &Receiver,
    event: &str,
    revision: Option<&str>,
    timeout: Duration,
) -> Request {
    let found = receiver.wait_for("/hook", timeout, |r| {
        let body = r.json();
        body["event"] == event && revision.is_none_or(|rev| body["revision"] == rev)
    });
    found.unwrap_or_else(|| {
        let seen: Vec<String> = notices(receiver)
            .iter()
            .map(|(b, _)| b.to_string())
            .collect();
        panic!(
            "no {event:?} notice (revision {revision:?}) within {timeout:?}; the receiver got:\n{}",
            seen.join("\n")
        )
    })
}

#[test]
fn notifications_are_sent_once_signed_and_shaped_and_a_hanging_receiver_delays_nothing() {
    let env = TestEnv::new("notify");
    let upstream = Upstream::new("config");
    let rev1 = upstream.commit(&[("a.yaml", &configmap("a", "1"))], "first");
    let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    let healthy = Receiver::start(Answer::Created);
    let hanging = Receiver::start(Answer::Never);
    let waiting_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(waiting_dir.path().join("w.yaml"), configmap("w", "1")).expect("write");
    let vars = [
        ("TEST_GIT_USER", USER),
        ("TEST_GIT_PASSWORD", PASSWORD),
        ("TEST_NOTIFY_HMAC", HMAC_KEY),
        ("TEST_GITHUB_TOKEN", GITHUB_TOKEN),
        ("TEST_GITLAB_TOKEN", GITLAB_TOKEN),
    ];
    let text = config(
        &server,
        &healthy,
        &hanging,
        &waiting_dir.path().display().to_string(),
    );
    let daemon = Daemon::start_with_env(&env, &text, &[], &vars);

    // The first revision: synced, signed with the key over the raw body.
    let first = wait_notice(&healthy, "synced", Some(&rev1), Duration::from_secs(30));
    let body = first.json();
    assert_eq!(body["source"], env.ns);
    assert_eq!(body["cluster"], "home");
    assert_eq!(
        body["objects"],
        serde_json::json!([format!("ConfigMap/{}/a", env.ns)])
    );
    assert!(
        body["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("applied")),
        "{body}"
    );
    assert_eq!(
        first.header("x-converge-signature-256"),
        Some(github_signature(HMAC_KEY.as_bytes(), &first.body).as_str()),
        "the signature is HMAC-SHA256 of the raw body with the key"
    );
    // A reconcile held for its dependency says so.
    let waiting = wait_notice(&healthy, "waiting", None, PROMPT).json();
    assert_eq!(waiting["source"], format!("{}-waits", env.ns));
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains("never-there")),
        "{waiting}"
    );

    // The hanging receiver was sent the same first notice and never answered it.
    assert!(
        hanging.wait_for("/hangs", PROMPT, |_| true).is_some(),
        "the hanging receiver got no request: the test would prove nothing"
    );

    // A commit: converged and announced promptly while the other target hangs.
    let committed = Instant::now();
    let rev2 = upstream.commit(&[("a.yaml", &configmap("a", "2"))], "second");
    let converged = env
        .wait_configmap_value("a", "2", Duration::from_secs(20))
        .expect("revision 2 was not applied within 20 s");
    let synced = wait_notice(&healthy, "synced", Some(&rev2), PROMPT);
    let announced = synced.at.duration_since(committed);
    println!("commit → converged {converged:?}, commit → synced notice {announced:?}");
    assert!(
        converged < Duration::from_secs(10),
        "commit-to-converged {converged:?}"
    );
    assert!(
        announced < Duration::from_secs(10),
        "commit-to-notice {announced:?}"
    );

    // Drift: one drifted, one healed, naming the object.
    env.edit_configmap_value("a", "edited by hand");
    env.wait_configmap_value("a", "2", Duration::from_secs(20))
        .expect("the drift was not healed within 20 s");
    let drifted = wait_notice(&healthy, "drifted", Some(&rev2), PROMPT).json();
    let healed = wait_notice(&healthy, "healed", Some(&rev2), PROMPT).json();
    let object = format!("ConfigMap/{}/a", env.ns);
    assert_eq!(drifted["objects"], serde_json::json!([object]));
    assert_eq!(healed["objects"], serde_json::json!([object]));

    // Unhealthy, then healthy again: degraded, recovered.
    let rev3 = upstream.commit(&[("b.yaml", &configmap("b", "broken"))], "break b");
    let degraded = wait_notice(&healthy, "degraded", Some(&rev3), Duration::from_secs(20)).json();
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("the value is broken")),
        "{degraded}"
    );
    let rev4 = upstream.commit(&[("b.yaml", &configmap("b", "fine"))], "fix b");
    wait_notice(&healthy, "recovered", Some(&rev4), Duration::from_secs(20));

    // A revision that cannot be applied: failed, once, however often it is retried.
    let rev5 = upstream.commit(
        &[(
            "c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, map]\n",
        )],
        "broken",
    );
    let failed = wait_notice(&healthy, "failed", Some(&rev5), Duration::from_secs(20)).json();
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("c.yaml")),
        "{failed}"
    );
    // Several polls (1 s) of the same broken revision.
    std::thread::sleep(Duration::from_secs(4));

    // Exactly one notice per event and revision (and per drift).
    let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (body, _) in notices(&healthy) {
        let key = (
            body["source"].as_str().unwrap_or_default().to_string(),
            body["event"].as_str().unwrap_or_default().to_string(),
            body["revision"].as_str().unwrap_or("-").to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    let ns = env.ns.clone();
    let one = |event: &str, revision: &str| {
        counts
            .get(&(ns.clone(), event.to_string(), revision.to_string()))
            .copied()
    };
    for (event, revision) in [
        ("synced", &rev1),
        ("synced", &rev2),
        ("drifted", &rev2),
        ("healed", &rev2),
        ("synced", &rev3),
        ("degraded", &rev3),
        ("synced", &rev4),
        ("recovered", &rev4),
        ("failed", &rev5),
    ] {
        assert_eq!(
            one(event, revision),
            Some(1),
            "{event} at {revision}: {counts:#?}"
        );
    }
    let waits = counts
        .iter()
        .filter(|((_, e, _), _)| e == "waiting")
        .map(|(_, n)| n)
        .sum::<usize>();
    assert_eq!(waits, 1, "{counts:#?}");
    for (_, request) in notices(&healthy) {
        let signature = github_signature(HMAC_KEY.as_bytes(), &request.body);
        assert_eq!(
            request.header("x-converge-signature-256"),
            Some(signature.as_str())
        );
    }

    // Slack: an incoming-webhook body, `text` and `blocks`.
    let slack = healthy.to("/slack/");
    assert!(!slack.is_empty(), "no Slack message");
    for message in &slack {
        let body = message.json();
        assert!(
            body["text"].as_str().is_some_and(|t| t.contains(&env.ns)),
            "{body}"
        );
        assert_eq!(body["blocks"][0]["type"], "section", "{body}");
        assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn", "{body}");
    }
    let slack_events: Vec<String> = slack
        .iter()
        .map(|m| m.json()["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        slack_events
            .iter()
            .filter(|t| t.contains(" drifted:"))
            .count(),
        1,
        "{slack_events:#?}"
    );

    // GitHub: POST /repos/OWNER/REPO/statuses/SHA with state, context, description.
    let github = healthy.to("/gh/");
    for (sha, state) in [
        (&rev1, "success"),
        (&rev2, "success"),
        (&rev3, "failure"),
        (&rev4, "success"),
        (&rev5, "failure"),
    ] {
        let path = format!("/gh/repos/acme/config/statuses/{sha}");
        let statuses: Vec<Value> = github
            .iter()
            .filter(|r| r.path == path)
            .map(Request::json)
            .collect();
        assert!(
            statuses.iter().any(|s| s["state"] == state),
            "no {state} status on {sha}: {statuses:#?}"
        );
        for status in &statuses {
            assert_eq!(status["context"], format!("converge/{}", env.ns));
            assert!(
                status["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty() && d.chars().count() <= 140)
            );
        }
    }
    for request in &github {
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {GITHUB_TOKEN}").as_str())
        );
    }
    // GitLab: POST /projects/:id/statuses/:sha, the project read from the Git URL.
    let gitlab = healthy.to("/gl/api/v4/projects/config/statuses/");
    let on_rev5: Vec<Value> = gitlab
        .iter()
        .filter(|r| r.path.ends_with(&rev5))
        .map(Request::json)
        .collect();
    assert!(
        on_rev5
            .iter()
            .any(|s| s["state"] == "failed" && s["name"] == format!("converge/{}", env.ns)),
        "{on_rev5:#?}"
    );
    assert!(
        gitlab
            .iter()
            .any(|r| r.path.ends_with(&rev1) && r.json()["state"] == "success")
    );
    assert!(
        gitlab
            .iter()
            .all(|r| r.header("private-token") == Some(GITLAB_TOKEN))
    );

    // Metrics per target; the hanging one has sent nothing.
    let metrics = daemon.metrics();
    assert!(
        daemon.metric(r#"converge_notifications_total{target="hook",outcome="sent"}"#) >= 10.0,
        "{metrics}"
    );
    assert_eq!(
        daemon.metric(r#"converge_notifications_total{target="hangs",outcome="sent"}"#),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        daemon.metric(r#"converge_notifications_total{target="hook",outcome="failed"}"#),
        0.0,
        "{metrics}"
    );

    // No secret in the log or in any payload.
    let log = daemon.log();
    let everything: Vec<u8> = healthy
        .requests()
        .into_iter()
        .flat_map(|r| r.body)
        .collect();
    let payloads = String::from_utf8_lossy(&everything);
    for secret in [HMAC_KEY, GITHUB_TOKEN, GITLAB_TOKEN, PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!payloads.contains(secret), "{secret} in a payload");
    }
}

#[test]
fn an_unknown_event_is_refused_with_the_file_line_and_the_valid_events() {
    let env = TestEnv::new("notify-bad");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let manifests = dir.path().join("m");
    std::fs::create_dir(&manifests).expect("mkdir");
    let text = format!(
        "[[source]]\nname = \"s\"\ndir = \"{}\"\n\n[[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nevents = [\"synced\", \"exploded\"]\nsecret_env = \"PATH\"\n",
        manifests.display()
    );
    std::fs::write(&path, text).expect("write config");
    let out = env
        .converge_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run converge");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for part in [
        path.display().to_string().as_str(),
        "notify[0] (line 5)",
        "\"exploded\" is not an event",
        "synced, failed, drifted, healed, degraded, recovered, waiting",
    ] {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
}

/// Two elected replicas, each with a webhook target on its own path of one
/// receiver: only the Lease holder's path hears anything, once per revision,
/// though the follower sees the same news (it judges health from its own
/// reflectors and reconciles every revision report-only).
#[test]
fn only_the_replica_that_writes_notifies() {
    let env = TestEnv::new("notify-leader");
    let manifests = crate::common::Manifests::with("a.yaml", &configmap("a", "1"));
    let receiver = Receiver::start(Answer::Created);
    let start = |id: &str| {
        let config = format!(
            r#"{source}
[leader_election]
namespace = "{{ns}}"

[[health]]
api_version = "v1"
kind = "ConfigMap"
failed = "has(self.data) && has(self.data.value) && self.data.value == 'broken'"
current = "true"

[[notify]]
kind = "webhook"
url = "{url}"
events = ["synced", "failed", "degraded", "recovered"]
secret_env = "TEST_NOTIFY_HMAC"
"#,
            source = crate::common::daemon::dir_config(
                manifests.path(),
                "1h",
                crate::common::daemon::Drift::Heal
            ),
            url = receiver.url(&format!("/{id}")),
        );
        let args = ["--leader-elect", "--id", id];
        let vars = [("TEST_NOTIFY_HMAC", HMAC_KEY)];
        let daemon = Daemon::start_with_env(&env, &config, &args, &vars);
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    };
    let one = start("one");
    let two = start("two");
    let holder = crate::common::eventually(Duration::from_secs(30), || {
        let jsonpath = "jsonpath={.spec.holderIdentity}";
        let args = ["get", "lease", "converge", "-n", &env.ns, "-o", jsonpath];
        let out = env.kubectl_output(&args, None);
        let holder = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !holder.is_empty()).then_some(holder)
    })
    .expect("nobody took the Lease")
    .value;
    let follower = if holder == "one" { "two" } else { "one" };
    let from_leader = format!("/{holder}");
    env.wait_configmap_value("a", "1", Duration::from_secs(30))
        .expect("the leader did not apply the first revision");
    let event_is = |event: &'static str| move |r: &Request| r.json()["event"] == event;

    manifests.write("a.yaml", &configmap("a", "2"));
    env.wait_configmap_value("a", "2", Duration::from_secs(30))
        .expect("the leader did not apply the change");
    let synced = receiver.wait_for(&from_leader, PROMPT, event_is("synced"));
    assert!(
        synced.is_some(),
        "no synced notice from the leader {holder}: {:#?}",
        receiver.requests()
    );
    // News the follower sees too: an object turned failed, then a revision that
    // cannot be loaded.
    manifests.write("a.yaml", &configmap("a", "broken"));
    let degraded = receiver.wait_for(&from_leader, Duration::from_secs(30), event_is("degraded"));
    assert!(
        degraded.is_some(),
        "no degraded notice from the leader: {:#?}",
        receiver.requests()
    );
    manifests.write(
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, map]\n",
    );
    let failed = receiver.wait_for(&from_leader, Duration::from_secs(30), event_is("failed"));
    assert!(
        failed.is_some(),
        "no failed notice from the leader: {:#?}",
        receiver.requests()
    );
    // Time for the follower's reconciles of the same changes to show, if they did.
    std::thread::sleep(Duration::from_secs(3));
    let from_follower = receiver.to(&format!("/{follower}"));
    let bodies: Vec<String> = (from_follower.iter())
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies.is_empty(),
        "the follower {follower} notified: {bodies:#?}"
    );
    let mut per_revision: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in receiver.to(&from_leader) {
        let body = request.json();
        let event = body["event"].as_str().unwrap_or_default().to_string();
        let revision = body["revision"].as_str().unwrap_or_default().to_string();
        *per_revision.entry((event, revision)).or_default() += 1;
    }
    assert!(per_revision.values().all(|n| *n == 1), "{per_revision:#?}");
    drop((one, two));
}
