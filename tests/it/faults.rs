//! Faults between converge and the API server: a restart, refused and reset
//! connections, an outage, stalls, cut watch streams and 429s. Each scenario checks
//! with kubectl that nothing was lost (every object carries the value of the last
//! run) and nothing was half-applied (no object holds a value no finished run asked
//! for, and a diff afterwards finds nothing to change).
//!
//! Faults are injected by restarting the real kube-apiserver (exclusive use of the
//! plane), by [`FaultProxy`] between converge and the API server (TLS untouched), and
//! for 429 by the API server's own priority and fairness, rejecting a flow schema
//! given one seat. The client's retry policy per status code is checked against a
//! scripted loopback HTTP server.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::fault_proxy::FaultProxy;
use crate::common::process::{Finished, Running};
use crate::common::{Manifests, PlaneAccess, TestEnv, configmap, eventually, restart_apiserver};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `count` ConfigMaps `cm-0`, `cm-1`, … in one file, each with `data.value = value`.
pub fn many_configmaps(count: usize, value: &str) -> String {
    (0..count)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}}}\n\
                 data: {{value: '{value}'}}\n"
            )
        })
        .collect()
}

/// How many ConfigMaps `cm-*` of the test's namespace hold each value.
pub fn values(env: &TestEnv) -> BTreeMap<String, usize> {
    let template = "{range .items[*]}{.metadata.name}={.data.value}{\"\\n\"}{end}";
    let jsonpath = format!("jsonpath={template}");
    let out = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", &jsonpath]);
    let mut counts = BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with("cm-")) {
        let value = line.split_once('=').map_or("", |(_, v)| v);
        *counts.entry(value.to_string()).or_default() += 1;
    }
    counts
}

/// Nothing lost, nothing half-applied: exactly `count` ConfigMaps `cm-*` exist, all
/// hold `value`, and converge's own diff (without faults) finds nothing to change.
pub fn assert_converged(env: &TestEnv, dir: &Manifests, count: usize, value: &str) {
    let expected = BTreeMap::from([(value.to_string(), count)]);
    assert_eq!(values(env), expected, "ConfigMaps by value after the run");
    let out = converge(env, None, &["diff", dir.arg(), "--prune"])
        .output()
        .expect("run converge diff");
    assert_eq!(
        out.status.code(),
        Some(0),
        "a diff after the run found changes:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `converge ARGS -n NS --name NS`, through `kubeconfig` when given.
pub fn converge(env: &TestEnv, kubeconfig: Option<&Path>, args: &[&str]) -> Command {
    let mut command = env.converge_command();
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    command.args(args).args(["-n", &env.ns, "--name", &env.ns]);
    command
}

/// `converge -v apply DIR` in the background.
fn spawn_apply(env: &TestEnv, kubeconfig: Option<&Path>, dir: &Manifests) -> Running {
    Running::spawn(converge(env, kubeconfig, &["-v", "apply", dir.arg()]))
}

/// `converge apply DIR`, which must succeed.
fn apply_ok(env: &TestEnv, kubeconfig: Option<&Path>, dir: &Manifests) {
    spawn_apply(env, kubeconfig, dir)
        .finish()
        .assert_success("converge apply");
}

/// Waits for the apply's first write, so that the fault hits the writes (not only
/// the dry-runs before them).
fn wait_for_first_write(apply: &mut Running) {
    assert!(
        apply.wait_for_line("applied", Duration::from_secs(60)),
        "the apply wrote nothing, or ended, before the fault; the test proves nothing"
    );
}

fn assert_retried(finished: &Finished) {
    assert!(
        finished.stderr.contains("retrying"),
        "converge never met the fault:\n{}",
        finished.stderr
    );
}

#[test]
fn apply_of_1200_objects_survives_an_apiserver_restart() {
    const COUNT: usize = 1200;
    let env = TestEnv::with_access("fault-restart", PlaneAccess::Exclusive);
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    apply_ok(&env, None, &dir);
    dir.write("cms.yaml", &many_configmaps(COUNT, "v2"));

    let started = Instant::now();
    let mut apply = spawn_apply(&env, None, &dir);
    wait_for_first_write(&mut apply);
    restart_apiserver();
    let finished = apply.finish();
    println!(
        "apply of {COUNT} objects across an apiserver restart took {:?}",
        started.elapsed()
    );
    finished.assert_success("converge apply during an apiserver restart");
    assert_retried(&finished);
    assert_converged(&env, &dir, COUNT, "v2");
}

#[test]
fn connection_resets_mid_response_during_a_1000_object_apply() {
    const COUNT: usize = 1000;
    let env = TestEnv::new("fault-resets");
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    let proxy = FaultProxy::start(env.apiserver_addr());
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());
    // Every connection dies after 0.28-0.7 MB of answers, in the middle of one: a
    // page of 500 ConfigMaps (about 265 KB) gets through on a fresh connection, and
    // a run (1.4 MB of answers for the creates alone) cannot miss a reset.
    proxy.reset_after_bytes(Some((280_000, 700_000)));

    for value in ["v1", "v2"] {
        dir.write("cms.yaml", &many_configmaps(COUNT, value));
        let finished = spawn_apply(&env, Some(&kubeconfig), &dir).finish();
        println!("after the {value} apply: {:?}", proxy.stats());
        finished.assert_success("converge apply through resets");
        assert_retried(&finished);
        assert_converged(&env, &dir, COUNT, value);
    }
    let stats = proxy.stats();
    println!("connection resets during two 1000-object applies: {stats:?}");
    assert!(
        stats.resets >= 4,
        "too few resets to prove anything: {stats:?}"
    );
}

#[test]
fn a_10s_outage_in_the_middle_of_an_apply() {
    const COUNT: usize = 1000;
    let env = TestEnv::new("fault-outage");
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    let proxy = FaultProxy::start(env.apiserver_addr());
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());
    apply_ok(&env, Some(&kubeconfig), &dir);
    dir.write("cms.yaml", &many_configmaps(COUNT, "v2"));

    let started = Instant::now();
    let mut apply = spawn_apply(&env, Some(&kubeconfig), &dir);
    wait_for_first_write(&mut apply);
    proxy.set_down(true);
    std::thread::sleep(Duration::from_secs(10));
    assert!(apply.is_running(), "the apply gave up during the outage");
    proxy.set_down(false);
    let finished = apply.finish();
    println!("apply across a 10 s outage took {:?}", started.elapsed());
    finished.assert_success("converge apply across a 10 s outage");
    assert!(
        finished.stderr.contains("Connection refused"),
        "{}",
        finished.stderr
    );
    assert_converged(&env, &dir, COUNT, "v2");
}

#[test]
fn stalls_and_latency_delay_an_apply_but_do_not_break_it() {
    const COUNT: usize = 300;
    let env = TestEnv::new("fault-stall");
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    let proxy = FaultProxy::start(env.apiserver_addr());
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());
    proxy.set_latency(Duration::from_millis(20));
    let mut apply = spawn_apply(&env, Some(&kubeconfig), &dir);
    wait_for_first_write(&mut apply);
    proxy.set_stalled(true);
    std::thread::sleep(Duration::from_secs(5));
    // The stall caught the apply in flight: it held some of its traffic, and the
    // apply was still waiting when the stall ended.
    let stats = proxy.stats();
    let waiting = apply.is_running();
    proxy.set_stalled(false);
    println!("a 5 s stall held {} chunks: {stats:?}", stats.held);
    assert!(
        waiting,
        "the apply ended before the stall did: nothing of it was in flight: {stats:?}"
    );
    assert!(
        stats.held > 0,
        "the stall held nothing of the running apply: {stats:?}"
    );
    apply
        .finish()
        .assert_success("converge apply across a stall");
    proxy.set_latency(Duration::ZERO);
    assert_converged(&env, &dir, COUNT, "v1");
}

#[test]
fn cut_watch_streams_resume_heal_drift_and_do_not_relist() {
    let env = TestEnv::new("fault-watch-cuts");
    let dir = Manifests::with("cms.yaml", &many_configmaps(20, "desired"));
    let proxy = FaultProxy::start(env.apiserver_addr());
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());
    let kubeconfig = kubeconfig.display().to_string();
    let config = dir_config(dir.path(), "1h", Drift::Heal);
    let daemon = Daemon::start_with_env(&env, &config, &[], &[("KUBECONFIG", &kubeconfig)]);
    daemon.wait_ready(Duration::from_secs(30));
    let lists = || daemon.metric("converge_api_requests_total{verb=\"list\"}");
    let lists_before = lists();
    let writes = || daemon.metric("converge_apply_actions_total");
    let writes_before = writes();

    let started = Instant::now();
    let mut healed = Vec::new();
    let mut round: u32 = 0;
    while started.elapsed() < Duration::from_secs(60) {
        proxy.cut_all();
        // Every other drift is made while the watch is still down: the resumed
        // watch must replay it.
        if round % 2 == 1 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let name = format!("cm-{}", round % 20);
        env.edit_configmap_value(&name, &format!("drift-{round}"));
        let took = env.wait_configmap_value(&name, "desired", Duration::from_secs(20));
        let took = took.unwrap_or_else(|| {
            panic!(
                "drift of {name} after a cut watch was not healed:\n{}",
                daemon.log()
            )
        });
        healed.push(took);
        round += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    let stats = proxy.stats();
    let relists = lists() - lists_before;
    println!(
        "{round} watch cuts in 60 s: {stats:?}; drift healed after {:?} at most; \
         {relists} LISTs",
        healed.iter().max()
    );
    assert!(stats.resets >= u64::from(round), "{stats:?}");
    assert!(
        relists <= 2.0,
        "{relists} LISTs for {round} cut watches: a relist storm"
    );
    let expected = BTreeMap::from([("desired".to_string(), 20)]);
    assert_eq!(values(&env), expected);
    assert_eq!(
        writes() - writes_before,
        f64::from(round),
        "one write per drift, none twice"
    );
}

/// A FlowSchema that sends every request of one service account to a priority
/// level of one nominal share that rejects what it cannot run at once: the API
/// server answers 429 with `Retry-After`, as it does for an overloaded tenant.
struct Throttled<'a> {
    env: &'a TestEnv,
}

impl<'a> Throttled<'a> {
    fn start(env: &'a TestEnv, service_account: &str) -> Self {
        let ns = &env.ns;
        let yaml = format!(
            "apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {{name: {ns}}}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    limitResponse: {{type: Reject}}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {{name: {ns}}}
spec:
  priorityLevelConfiguration: {{name: {ns}}}
  matchingPrecedence: 100
  distinguisherMethod: {{type: ByUser}}
  rules:
  - subjects:
    - kind: ServiceAccount
      serviceAccount: {{name: {service_account}, namespace: {ns}}}
    resourceRules:
    - {{verbs: ['*'], apiGroups: ['*'], resources: ['*'], namespaces: ['*'], clusterScope: true}}
    nonResourceRules:
    - {{verbs: ['*'], nonResourceURLs: ['*']}}
"
        );
        env.kubectl_stdin(&["apply", "-f", "-"], &yaml);
        // converge lists its members in every namespace.
        env.kubectl(&[
            "create",
            "clusterrolebinding",
            ns,
            "--clusterrole=cluster-admin",
            &format!("--serviceaccount={ns}:{service_account}"),
        ]);
        Throttled { env }
    }

    /// Requests of the priority level that the API server rejected (its metrics).
    fn rejected(&self) -> f64 {
        let metrics = self.env.kubectl(&["get", "--raw", "/metrics"]);
        let label = format!("priority_level=\"{}\"", self.env.ns);
        metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_flowcontrol_rejected_requests_total"))
            .filter(|l| l.contains(&label))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Throttled<'_> {
    fn drop(&mut self) {
        let ns = &self.env.ns;
        for kind in [
            "flowschema",
            "prioritylevelconfiguration",
            "clusterrolebinding",
        ] {
            let _ = self
                .env
                .kubectl_command(&["delete", kind, ns, "--ignore-not-found"])
                .output();
        }
    }
}

#[test]
fn the_api_servers_429s_are_waited_out() {
    const COUNT: usize = 80;
    let env = TestEnv::new("fault-429");
    let dir = Manifests::with("cms.yaml", &many_configmaps(COUNT, "v1"));
    let token = env.service_account_token("converge");
    let throttled = Throttled::start(&env, "converge");
    let kubeconfig = env.kubeconfig_with_user(dir.path(), &format!("    token: {token}"));
    // The API server's flow-control configuration is eventually consistent.
    let applied = eventually(Duration::from_secs(20), || {
        let status = env.kubectl(&[
            "get",
            "flowschema",
            &env.ns,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Dangling\")].status}",
        ]);
        status.trim() == "False"
    });
    assert!(applied.is_some(), "the FlowSchema was not taken up");

    let finished = spawn_apply(&env, Some(&kubeconfig), &dir).finish();
    finished.assert_success("converge apply against 429s");
    let rejected = throttled.rejected();
    println!("the API server rejected {rejected} requests with 429");
    assert!(rejected > 0.0, "no 429 was sent; the test proves nothing");
    assert!(finished.stderr.contains("HTTP 429"), "{}", finished.stderr);
    assert_converged(&env, &dir, COUNT, "v1");
}

#[test]
fn an_unreachable_server_is_retried_only_for_the_request_timeout() {
    let env = TestEnv::new("fault-refused");
    let dir = Manifests::with("cms.yaml", &many_configmaps(1, "v1"));
    let closed = crate::common::git_http::RefusingPort::new();
    let server = format!("https://127.0.0.1:{}", closed.port);
    let kubeconfig = env.kubeconfig_via(dir.path(), &server);
    let started = Instant::now();
    let out = converge(&env, Some(&kubeconfig), &["diff", dir.arg()])
        .args(["--request-timeout", "3s"])
        .output()
        .expect("run converge diff");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "gave up after {took:?}"
    );
    assert!(stderr.contains("attempts in"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn a_certificate_the_client_rejects_is_not_retried() {
    let env = TestEnv::new("fault-tls");
    let dir = Manifests::with("cms.yaml", &many_configmaps(1, "v1"));
    // Without its CA the test plane's certificate is signed by an unknown issuer.
    let text = std::fs::read_to_string(&env.kubeconfig).expect("read the kubeconfig");
    let without_ca: String = text
        .lines()
        .filter(|l| !l.contains("certificate-authority"))
        .map(|l| format!("{l}\n"))
        .collect();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, without_ca).expect("write the kubeconfig");
    let started = Instant::now();
    let out = converge(&env, Some(&kubeconfig), &["diff", dir.arg()])
        .output()
        .expect("run converge diff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a TLS failure was retried:\n{stderr}"
    );
    assert!(!stderr.contains("attempts in"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

/// One scripted answer of [`Scripted`].
#[derive(Clone, Copy)]
enum Answer {
    /// This status code with a `Status` body and, when asked, `Retry-After`.
    Code(u16, RetryAfter),
    /// Half a status line, then the connection closes: a broken connection.
    Broken,
}

#[derive(Clone, Copy, PartialEq)]
enum RetryAfter {
    Secs(u8),
    None,
}

use Answer::{Broken, Code};

/// A loopback HTTP/1.1 server that answers each request with the next answer of
/// its script (200 `{}` once the script is done) and records `METHOD path`. The
/// proxy cannot forge answers inside TLS; this checks the client's policy for each
/// answer on the wire.
struct Scripted {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                let answer = script.next().unwrap_or(Code(200, RetryAfter::None));
                answer_one(stream, answer, &log).await;
            }
        });
        Scripted { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, request_timeout: Duration) -> converge::kube::Client {
        let cluster = converge::kube::ClusterConfig {
            server: self.url.parse().unwrap(),
            ca: None,
            insecure_skip_tls_verify: false,
            auth: converge::kube::Auth::None,
            tls_server_name: None,
            default_namespace: "default".into(),
            origin: "scripted".into(),
        };
        let options = converge::kube::ClientOptions {
            request_timeout,
            ..converge::kube::ClientOptions::default()
        };
        converge::kube::Client::with_options(cluster, options).unwrap()
    }
}

async fn answer_one(
    mut stream: tokio::net::TcpStream,
    answer: Answer,
    seen: &std::sync::Mutex<Vec<String>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let line: Vec<&str> = head.lines().next().unwrap_or("").split(' ').collect();
    let path = line
        .get(1)
        .map_or("", |p| p.split('?').next().unwrap_or(""));
    seen.lock()
        .unwrap()
        .push(format!("{} {path}", line.first().unwrap_or(&"")));
    let response = match answer {
        Broken => "HTTP/1.1 2".to_string(),
        Code(code, retry_after) => {
            let body = if code == 200 {
                "{}".to_string()
            } else {
                format!(r#"{{"kind":"Status","code":{code}}}"#)
            };
            let retry_after = match retry_after {
                RetryAfter::Secs(secs) => format!("Retry-After: {secs}\r\n"),
                RetryAfter::None => String::new(),
            };
            format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n{retry_after}\r\n{body}",
                body.len()
            )
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What one request of each kind does after each answer: retried (and then
/// succeeds) or not (and fails at once).
#[tokio::test]
async fn the_client_retries_by_request_and_answer() {
    use converge::kube::{DeleteParams, PatchParams, PostParams, Preconditions};
    use converge::kube::{Error, PropagationPolicy};
    use serde_json::json;
    #[derive(Clone, Copy, Debug)]
    enum Request {
        Get,
        Post,
        Apply,
        DeleteUid,
    }
    async fn send(client: &converge::kube::Client, request: Request) -> Result<(), Error> {
        let path = "/api/v1/namespaces/a/configmaps/b";
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        match request {
            Request::Get => client.get(path).await.map(drop),
            Request::Post => {
                let collection = "/api/v1/namespaces/a/configmaps";
                let params = PostParams::default();
                client.create(collection, &body, &params).await.map(drop)
            }
            Request::Apply => {
                let params = PatchParams::apply("t").force();
                client.apply(path, &body, &params).await.map(drop)
            }
            Request::DeleteUid => {
                let params = DeleteParams {
                    propagation: PropagationPolicy::Background,
                    preconditions: Some(Preconditions { uid: "u-1".into() }),
                };
                client.delete(path, &params).await
            }
        }
    }
    use Request::*;
    use RetryAfter::None as No;
    let sent = RetryAfter::Secs(0);
    let retried = true;
    let cases: Vec<(Request, Answer, bool)> = vec![
        // 429: never processed, so every request is sent again, after Retry-After.
        (Get, Code(429, sent), retried),
        (Post, Code(429, sent), retried),
        (Apply, Code(429, No), retried),
        // A broken connection or a 5xx: only what is safe to repeat.
        (Get, Broken, retried),
        (Apply, Broken, retried),
        (DeleteUid, Broken, retried),
        (Post, Broken, !retried),
        (Get, Code(500, No), retried),
        (Get, Code(502, No), retried),
        (Apply, Code(503, sent), retried),
        (DeleteUid, Code(504, No), retried),
        (Post, Code(503, No), !retried),
        (Post, Code(500, No), !retried),
        // 409: a raced apply is computed again; a failed uid precondition is final.
        (Apply, Code(409, No), retried),
        (DeleteUid, Code(409, No), !retried),
        (Post, Code(409, No), !retried),
        // Rejections are final for every request.
        (Get, Code(400, No), !retried),
        (Get, Code(403, No), !retried),
        (Apply, Code(404, No), !retried),
        (Apply, Code(422, No), !retried),
        (DeleteUid, Code(410, No), !retried),
        (Get, Code(501, No), !retried),
    ];
    for (request, answer, expect_retry) in cases {
        let server = Scripted::start(vec![answer]).await;
        let client = server.client(Duration::from_secs(10));
        let result = send(&client, request).await;
        let seen = server.seen().len();
        let case = format!("{request:?} after {:?}: {result:?}", code_of(answer));
        if expect_retry {
            assert!(result.is_ok(), "{case}");
            assert_eq!(seen, 2, "{case}");
        } else {
            assert!(result.is_err(), "{case}");
            assert_eq!(seen, 1, "{case}");
        }
    }
}

fn code_of(answer: Answer) -> Option<u16> {
    match answer {
        Code(code, _) => Some(code),
        Broken => None,
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let script = vec![
        Code(429, RetryAfter::Secs(1)),
        Code(503, RetryAfter::Secs(1)),
    ];
    let server = Scripted::start(script).await;
    let started = Instant::now();
    let answer = server.client(Duration::from_secs(60)).get("/api").await;
    assert!(answer.is_ok(), "{answer:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn retries_stop_at_the_request_timeout() {
    let server = Scripted::start(vec![Code(503, RetryAfter::None); 1000]).await;
    let started = Instant::now();
    let err = server
        .client(Duration::from_secs(2))
        .get("/api")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(err.to_string().contains("attempts in 2 s"), "{err}");
    assert!(server.seen().len() > 3, "{:?}", server.seen());
}

/// A pre-sync hook Job with a `generateName` and a post-sync one with a fixed name.
const HOOKS: &str = "\
apiVersion: batch/v1
kind: Job
metadata:
  generateName: migrate-
  annotations: {converge.dev/hook: pre-sync}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: example.com/migrate:1}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: smoke
  annotations: {converge.dev/hook: post-sync}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: smoke, image: example.com/smoke:1}]
";

/// Cuts every connection through `proxy` as soon as a new Job of the namespace
/// exists (seen by a kubectl watch that bypasses the proxy, open when this
/// returns): the answer to the POST that created it is then still held in the
/// proxy, and is lost.
fn cut_when_a_job_appears(env: &TestEnv, proxy: Arc<FaultProxy>) -> std::process::Child {
    let mut seen = BTreeSet::new();
    env.kubectl_watch("jobs", move |line| {
        if seen.insert(line.clone()) {
            proxy.cut_all();
            println!("{line} appeared: every connection cut");
        }
    })
}

#[test]
fn a_hook_whose_creation_answer_was_lost_is_looked_up_not_created_twice() {
    let env = TestEnv::new("fault-hook-post");
    let dir = Manifests::with("hooks.yaml", HOOKS);
    dir.write("app.yaml", &configmap("app", "v1"));
    let proxy = Arc::new(FaultProxy::start(env.apiserver_addr()));
    let kubeconfig = env.kubeconfig_via(dir.path(), &proxy.url());
    // Answers linger in the proxy far longer than the watch takes to see a Job.
    proxy.set_answer_latency(Duration::from_millis(300));
    // Open once it returns: no Job created from now on is missed.
    let mut watch = cut_when_a_job_appears(&env, proxy.clone());

    let finished = spawn_apply(&env, Some(&kubeconfig), &dir).finish();
    let _ = watch.kill();
    let _ = watch.wait();
    finished.assert_success("converge apply whose hook creations lost their answers");
    let lost = finished
        .stderr
        .matches("the answer to a hook's creation was lost")
        .count();
    let adopted = finished
        .stderr
        .matches("adopted, not created again")
        .count();
    assert!(
        lost >= 2 && adopted == 2,
        "both hooks' answers must be lost and both hooks adopted:\n{}",
        finished.stderr
    );
    // Each hook ran exactly once: one Job each, labelled by the one creation.
    let template = "{range .items[*]}{.metadata.name}{\"\\n\"}{end}";
    let jobs = env.kubectl(&[
        "get",
        "jobs",
        "-n",
        &env.ns,
        "-o",
        &format!("jsonpath={template}"),
    ]);
    let jobs: Vec<&str> = jobs.lines().collect();
    assert_eq!(jobs.len(), 2, "one Job per hook: {jobs:?}");
    assert!(jobs.contains(&"smoke"), "{jobs:?}");
    assert_eq!(
        jobs.iter().filter(|j| j.starts_with("migrate-")).count(),
        1,
        "{jobs:?}"
    );
    assert_eq!(env.configmap_value("app").as_deref(), Some("v1"));
}
