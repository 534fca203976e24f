//! The web status page. In a real headless Chromium (common/browser.rs) against
//! `converge run` and the real control plane: the overview lists the sources, a
//! pushed commit's revision and a `kubectl` edit's drift appear without a reload
//! within 2 s of `/status` showing them, a failing Deployment's evidence is on its
//! source page; screenshots are saved under target/. Over a socket: the page is
//! server-rendered with a strict CSP and works with JavaScript off, and a
//! listener beyond loopback answers 401 to `/` and `/status` without the token
//! and 200 to `/healthz`.

use crate::common::browser::Browser;
use crate::common::daemon::Daemon;
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::{
    Manifests, TestEnv, configmap, describe, eventually, github_signature, repo_root,
};
use crate::server::{client, outward_ip};
use converge::daemon::{
    self, Metrics, ObjectState, ObjectStatus, ServerState, SourceKind, StatusBoard, SyncResult,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USER: &str = "deploy";
const PASSWORD: &str = "web-test-password";
const HOOK_SECRET: &str = "web-hook-secret";
const PUSH: &str = r#"{"ref":"refs/heads/main"}"#;

/// The page must follow a change within this long of `/status` showing it.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// A Deployment no node can take, whose rollout fails after 3 s: FailedScheduling.
const STUCK: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      nodeSelector: {disktype: no-node-has-this}
      containers: [{name: app, image: example.com/app:1}]
";

/// Where the screenshots go: target/web-screenshots/ (CI keeps target/ as the
/// run's artifacts; copies are committed under docs/images/).
fn screenshot_dir() -> PathBuf {
    repo_root().join("target").join("web-screenshots")
}

/// Waits until `/status` satisfies `check` and returns when it did.
fn status_shows(daemon: &Daemon, what: &str, check: impl Fn(&Value) -> bool) -> Instant {
    let seen = eventually(Duration::from_secs(60), || check(&daemon.source()));
    assert!(
        seen.is_some(),
        "/status never showed {what}: {:#}\n{}",
        daemon.source(),
        daemon.log()
    );
    Instant::now()
}

/// Waits (in the browser, without a reload) until `script` is truthy; asserts it
/// happened within [`LIVE_WITHIN`] of `since`, and returns how long it took.
fn page_shows(browser: &Browser, what: &str, script: &str, since: Instant) -> Duration {
    let shown = browser.wait_for(script, Duration::from_secs(20));
    let after = since.elapsed();
    assert!(
        shown.is_some(),
        "the page never showed {what} (20 s after /status did); its main: {}",
        browser.run("return document.getElementById('main').innerText", &[])
    );
    println!("the page showed {what} {after:?} after /status did");
    assert!(
        after <= LIVE_WITHIN,
        "the page showed {what} only {after:?} after /status did"
    );
    after
}

/// Whether the page is still the one first loaded (a reload forgets the mark).
fn assert_not_reloaded(browser: &Browser) {
    let marked = browser.run("return window.__convergeTestMark === 1", &[]);
    assert_eq!(marked, json!(true), "the page was reloaded");
}

#[test]
fn the_page_follows_commits_and_drift_live_and_shows_failure_evidence() {
    let env = TestEnv::new("web-live");
    let ns = env.ns.clone();
    let upstream = Upstream::new("config");
    upstream.commit(
        &[
            ("app/settings.yaml", &configmap("settings", "v1")),
            ("app/stuck.yaml", STUCK),
        ],
        "first",
    );
    let git = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    // A second source, a directory, healthy: the overview lists both.
    let files = Manifests::with("static.yaml", &configmap("static", "1"));
    // Chromium starts while the daemon does: it is the slow one.
    let browser = std::thread::spawn(|| Browser::start(1280, 1000));
    let config = format!(
        r#"state_dir = "{{state}}"

[[source]]
name = "{{ns}}"
git = "{url}"
branch = "main"
path = "app"
interval = "1h"
username_env = "TEST_GIT_USER"
password_env = "TEST_GIT_PASSWORD"
webhook_secret_env = "TEST_WEBHOOK_SECRET"
namespace = "{{ns}}"

[[source]]
name = "{{ns}}-files"
dir = "{dir}"
interval = "1h"
namespace = "{{ns}}"
"#,
        url = git.url("config.git"),
        dir = files.path().display(),
    );
    let vars = [
        ("TEST_GIT_USER", USER),
        ("TEST_GIT_PASSWORD", PASSWORD),
        ("TEST_WEBHOOK_SECRET", HOOK_SECRET),
    ];
    let daemon = Daemon::start_with_env(&env, &config, &[], &vars);
    daemon.wait_ready(Duration::from_secs(60));
    let browser = browser.join().expect("Chromium started");
    let base = format!("http://{}", daemon.addr);

    // The overview lists the sources, the Git one at its revision.
    browser.open(&format!("{base}/"));
    let both = format!("{ns} {ns}-files");
    let names = format!(
        "return Array.from(document.querySelectorAll('li.card[data-source]')) \
         .map(c => c.getAttribute('data-source')).join(' ') === '{both}'"
    );
    let listed = browser.wait_for(&names, Duration::from_secs(5));
    assert!(
        listed.is_some(),
        "the overview does not list {both}: {}",
        browser.run("return document.body.innerText", &[])
    );
    let card = format!("document.querySelector('[data-source=\"{ns}\"]')");
    let live = browser.wait_for(
        "return document.getElementById('live').textContent === 'live'",
        Duration::from_secs(10),
    );
    assert!(live.is_some(), "the event stream never opened");
    browser.run("window.__convergeTestMark = 1", &[]);
    let revision_shown = |sha: &str| {
        format!(
            "var c = {card}; var r = c && c.querySelector('[data-field=revision] code'); \
             return r !== null && r.title === '{sha}'"
        )
    };
    let first = upstream.head();
    assert!(
        browser
            .wait_for(&revision_shown(&first), Duration::from_secs(5))
            .is_some()
    );

    // A commit: the new revision shows without a reload.
    let second = upstream.commit(
        &[("app/settings.yaml", &configmap("settings", "v2"))],
        "second",
    );
    let pushed = Instant::now();
    let signature = github_signature(HOOK_SECRET.as_bytes(), PUSH.as_bytes());
    let header = format!("X-Hub-Signature-256: {signature}");
    let (code, body) = daemon.post(&format!("/hooks/git/{ns}"), &[&header], PUSH);
    assert_eq!(code, 202, "{body}");
    let recorded = status_shows(&daemon, "the second revision", |s| {
        s["revision"].as_str() == Some(second.as_str())
    });
    let commit_shown = page_shows(
        &browser,
        "the new revision",
        &revision_shown(&second),
        recorded,
    );
    println!(
        "commit → page: {:?} (push to /status: {:?})",
        pushed.elapsed(),
        recorded.duration_since(pushed)
    );
    assert_not_reloaded(&browser);

    // The failing Deployment's evidence, on the source's page.
    browser.open(&format!("{base}/sources/{ns}"));
    browser.run("window.__convergeTestMark = 1", &[]);
    let stuck = format!("Deployment.apps/{ns}/stuck");
    let evidence_recorded = status_shows(&daemon, "the Deployment's evidence", |s| {
        s["health"]["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["object"] == stuck.as_str() && o["evidence"].is_object())
    });
    let object = |name: &str| format!("document.querySelector('[data-object=\"{name}\"]')");
    let evidence_script = format!(
        "var o = {}; var e = o && o.querySelector('details.evidence'); \
         return e !== null && e.innerText.includes('FailedScheduling') \
             && o.querySelector('[data-field=health]').textContent === 'failed'",
        object(&stuck)
    );
    let evidence_shown = page_shows(
        &browser,
        "the evidence",
        &evidence_script,
        evidence_recorded,
    );

    // Suspended (report-only), a kubectl edit is drift: it shows, with its diff.
    let out = daemon.converge(
        &env,
        &["suspend", &ns, "--reason", "web test", "--by", "ana"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    status_shows(&daemon, "the suspension", |s| s["suspended"].is_object());
    env.kubectl(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"data":{"value":"edited-by-hand"}}"#,
    ]);
    let settings = format!("ConfigMap/{ns}/settings");
    let drift_recorded = status_shows(&daemon, "the drift", |s| {
        s["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["object"] == settings.as_str() && o["state"] == "drifted")
    });
    let drift_script = format!(
        "var o = {}; return o !== null \
             && o.querySelector('[data-field=state]').textContent === 'drifted' \
             && o.querySelector('pre.diff') !== null \
             && o.querySelector('pre.diff').innerText.includes('edited-by-hand')",
        object(&settings)
    );
    let drift_shown = page_shows(&browser, "the drift", &drift_script, drift_recorded);
    assert_not_reloaded(&browser);
    let history = browser.run(
        "return Array.from(document.querySelectorAll('table.history code')).map(c => c.textContent)",
        &[],
    );
    assert!(
        history.to_string().contains(&second[..12]) && history.to_string().contains(&first[..12]),
        "the history lacks the two revisions: {history}"
    );

    // Screenshots: the source page, the overview, and the overview on a phone.
    let dir = screenshot_dir();
    browser.resize(1280, 1900);
    browser.run("window.scrollTo(0, 0)", &[]);
    browser.screenshot(&dir.join("web-source.png"));
    browser.resize(1280, 800);
    browser.open(&format!("{base}/"));
    let drifted_card = format!(
        "var c = {card}; return c !== null && c.querySelector('[data-field=drift]').innerText.includes('1 drifted')"
    );
    assert!(
        browser
            .wait_for(&drifted_card, Duration::from_secs(5))
            .is_some()
    );
    browser.screenshot(&dir.join("web-overview.png"));
    browser.resize(390, 844);
    browser.screenshot(&dir.join("web-overview-phone.png"));
    let overflow = browser.run(
        "return document.documentElement.scrollWidth > window.innerWidth + 1",
        &[],
    );
    assert_eq!(
        overflow,
        json!(false),
        "the overview scrolls sideways on a phone"
    );
    println!(
        "page updates after /status: commit {commit_shown:?}, evidence {evidence_shown:?}, \
         drift {drift_shown:?}; screenshots in {}",
        dir.display()
    );
}

/// A server in-process on `ip` with one drifted source, reached at `ip` (for
/// `0.0.0.0`: at this machine's outward address, a client beyond loopback).
async fn serve_on(ip: &str, token: Option<&str>) -> (String, tokio::sync::oneshot::Sender<()>) {
    let status = StatusBoard::default();
    status.register("shop", SourceKind::Dir, "/srv/shop");
    status.update("shop", |s| {
        s.result = SyncResult::Drifted;
        s.revision = Some("dir:feedface0123456789".into());
        s.last_success = Some(std::time::SystemTime::now());
        s.objects = vec![ObjectStatus {
            object: "ConfigMap/shop/settings".into(),
            state: ObjectState::Drifted,
            diff: Some("-  value: <b>old</b>\n+  value: new".into()),
            reason: None,
            origin: Some("settings.yaml:1".into()),
            wave: 0,
        }];
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let listen = listener.local_addr().expect("local addr");
    let state = ServerState::new(status, Metrics::new(), HashMap::new())
        .with_token(listen, token.map(str::to_owned));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(daemon::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let host = match ip {
        "0.0.0.0" => outward_ip().to_string(),
        ip => ip.to_owned(),
    };
    (format!("http://{host}:{}", listen.port()), stop)
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the server answers")
}

#[tokio::test]
async fn beyond_loopback_the_page_and_status_need_the_token_and_probes_do_not() {
    // No token configured: a client beyond loopback gets nothing but the probes.
    let (base, _stop) = serve_on("0.0.0.0", None).await;
    for path in [
        "/",
        "/status",
        "/sources/shop",
        "/api/events",
        "/metrics",
        "/assets/app.js",
    ] {
        let response = get(&format!("{base}{path}"), None).await;
        assert_eq!(response.status().as_u16(), 401, "{base}{path}");
        let body = response.text().await.expect("body");
        assert!(body.contains("[server] token_file"), "{path}: {body}");
    }
    assert_eq!(
        get(&format!("{base}/healthz"), None)
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get(&format!("{base}/readyz"), None).await.status().as_u16(),
        200
    );

    // With `[server] token_file`: 401 without it or with a wrong one, 200 with it.
    let (base, _stop) = serve_on("0.0.0.0", Some("page-token")).await;
    for path in ["/", "/status"] {
        let url = format!("{base}{path}");
        let without = get(&url, None).await;
        assert_eq!(without.status().as_u16(), 401, "{url}");
        assert!(without.headers().contains_key("www-authenticate"));
        assert_eq!(
            get(&url, Some("wrong")).await.status().as_u16(),
            401,
            "{url}"
        );
        assert_eq!(
            get(&url, Some("page-token")).await.status().as_u16(),
            200,
            "{url}"
        );
    }
    assert_eq!(
        get(&format!("{base}/healthz"), None)
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn the_page_is_server_rendered_with_a_strict_csp_and_works_without_script() {
    let (base, _stop) = serve_on("127.0.0.1", None).await;
    let response = get(&format!("{base}/"), None).await;
    assert_eq!(response.status().as_u16(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.expect("body");
    // JavaScript off: a refresh, and a plain link to the source's page.
    assert!(
        html.contains(r#"<noscript><meta http-equiv="refresh""#),
        "{html}"
    );
    // (minijinja's HTML escaping writes `/` as `&#x2f;`, which browsers decode.)
    assert!(html.contains(r#"href="&#x2f;sources&#x2f;shop""#), "{html}");
    // Nothing inline for the CSP to refuse: scripts only by src, no style attributes.
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    assert!(
        html.contains(r#"<script src="/assets/app.js" defer></script>"#),
        "{html}"
    );

    let page = get(&format!("{base}/sources/shop"), None).await;
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("body");
    assert!(
        html.contains("&lt;b&gt;old&lt;&#x2f;b&gt;"),
        "the diff is escaped: {html}"
    );
    let fragment = get(&format!("{base}/sources/shop?fragment"), None).await;
    let fragment = fragment.text().await.expect("body");
    assert!(
        !fragment.contains("<html") && fragment.contains("ConfigMap"),
        "{fragment}"
    );
    assert_eq!(
        get(&format!("{base}/sources/nope"), None)
            .await
            .status()
            .as_u16(),
        404
    );

    let script = get(&format!("{base}/assets/app.js"), None).await;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let style = get(&format!("{base}/assets/app.css"), None).await;
    assert_eq!(style.headers()["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn the_event_stream_speaks_at_once_and_on_each_change() {
    let status = StatusBoard::default();
    status.register("shop", SourceKind::Dir, "/srv/shop");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let state = ServerState::new(status.clone(), Metrics::new(), HashMap::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(daemon::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let response = get(&format!("http://{addr}/api/events"), None).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response;
    let mut text = String::new();
    let mut next_event = async || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                return event;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, body.chunk()).await;
            let chunk = chunk
                .expect("an event within 5 s")
                .expect("the stream reads")
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let first = next_event().await;
    assert!(first.contains("event: changed"), "{first}");
    let written = Instant::now();
    status.update("shop", |s| s.result = SyncResult::Synced);
    let second = next_event().await;
    assert!(second.contains("event: changed"), "{second}");
    let took = written.elapsed();
    println!("an event {took:?} after the board was written");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // A graceful shutdown ends open streams instead of waiting for them.
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(
        ended.is_ok(),
        "the server waited for the event stream to close"
    );
}

/// `curl -i ARGS` in a blocking task (the server runs on this runtime): the
/// status, the headers (lower-cased names) and the body. Redirects not followed.
async fn curl(args: &[&str]) -> (u16, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "-i", "-m", "10"])
            .args(&args)
            .output()
            .expect("run curl")
    })
    .await
    .expect("curl ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_a_browser_signs_in_once_and_its_cookie_only_reads() {
    let (base, _stop) = serve_on("127.0.0.1", Some("page token+1")).await;
    // A browser asking for the page without the token: 401, and the form.
    let html = "Accept: text/html,application/xhtml+xml";
    let (code, head, body) = curl(&["-H", html, &format!("{base}/")]).await;
    assert_eq!(code, 401, "{head}{body}");
    assert!(head.contains("content-security-policy"), "{head}");
    assert!(
        body.contains(r#"action="/login""#) && body.contains(r#"name="token""#),
        "{body}"
    );
    assert!(
        !body.contains("data-fragment"),
        "the form does not listen to events: {body}"
    );

    let login = format!("{base}/login");
    let (code, _, body) = curl(&["--data-urlencode", "token=wrong", &login]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("not the token"), "{body}");
    let (code, head, _) = curl(&["--data-urlencode", "token=page token+1", &login]).await;
    assert_eq!(code, 303, "{head}");
    assert!(head.contains("location: /"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_owned();
    assert!(
        head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    assert!(
        !cookie.contains("page token"),
        "the token as it is: {cookie}"
    );

    // The cookie reads the page, its events and /status; it steers nothing.
    for path in ["/", "/sources/shop", "/status"] {
        let (code, _, body) =
            curl(&["-H", &format!("Cookie: {cookie}"), &format!("{base}{path}")]).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let resume = format!("{base}/api/v1/sources/shop/resume");
    let (code, _, body) = curl(&["-X", "POST", "-H", &format!("Cookie: {cookie}"), &resume]).await;
    assert_eq!(code, 401, "a control request with the cookie alone: {body}");
    let (code, _, _) = curl(&[
        "-H",
        "Cookie: converge_token=00ff",
        &format!("{base}/status"),
    ])
    .await;
    assert_eq!(code, 401, "a wrong cookie");
}
