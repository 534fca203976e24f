//! Chart sources from Helm repositories (issue 29): a real chart repository on
//! loopback (charts packaged by the real `helm package`, indexed by `helm repo
//! index`, served by `common::chart_repo`), the daemon and the CLI fetching from it,
//! and kubectl and the API server's audit log checking what was applied.

use crate::common::audit::Identity;
use crate::common::chart_repo::{ChartRepo, Publish, podinfo};
use crate::common::daemon::Daemon;
use crate::common::{TestEnv, eventually};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

/// Generous: the machine is shared, and the first render starts helm cold.
const APPLIED: Duration = Duration::from_secs(90);

/// The `helm.sh/chart` labels of the namespace's Deployments: which chart version
/// is applied (`podinfo-6.14.1`).
fn applied_charts(env: &TestEnv) -> String {
    env.kubectl(&[
        "get",
        "deployments",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.items[*].metadata.labels.helm\\.sh/chart}",
    ])
}

fn wait_applied(env: &TestEnv, daemon: &Daemon, version: &str, timeout: Duration) -> Duration {
    let want = format!("podinfo-{version}");
    let waited = eventually(timeout, || applied_charts(env) == want);
    match waited {
        Some(waited) => waited.after,
        None => panic!(
            "{want} was not applied within {timeout:?} (applied: {:?}); status: {}\nlog:\n{}",
            applied_charts(env),
            daemon.source(),
            daemon.log()
        ),
    }
}

fn chart_config(repo: &ChartRepo, interval: &str, extra: &str) -> String {
    format!(
        r#"state_dir = "{{state}}"
{extra}
[[source]]
name = "podinfo"
chart = "podinfo"
helm_repo = "{url}"
version = "6.14.x"
namespace = "{{ns}}"
interval = "{interval}"
"#,
        url = repo.url()
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `converge diff|apply --helm-repo URL --chart podinfo --version 6.14.x` into the
/// test's namespace, as the ApplySet `podinfo` (the daemon's source name).
fn cli(env: &TestEnv, repo: &ChartRepo, verb: &str, extra: &[&str]) -> Output {
    env.converge_command()
        .arg(verb)
        .args(["--helm-repo", &repo.url(), "--chart", "podinfo"])
        .args(["--version", "6.14.x", "-n", &env.ns, "--name", "podinfo"])
        .args(extra)
        .output()
        .expect("run converge")
}

#[test]
fn the_highest_matching_version_is_applied_and_a_new_one_within_an_interval() {
    let env = TestEnv::new("helm-repo-poll");
    let repo = ChartRepo::start(None);
    repo.publish("6.14.0");
    repo.publish("6.14.1");
    repo.publish_chart(&podinfo("6.15.0"), Publish::AsIs);
    let daemon = Daemon::start(&env, &chart_config(&repo, "2s", ""), &[]);
    wait_applied(&env, &daemon, "6.14.1", APPLIED);
    let revision = daemon.source()["revision"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        revision.starts_with("6.14.1@sha256:"),
        "the revision is <version>@<digest>: {revision}"
    );

    let published = Instant::now();
    repo.publish("6.14.2");
    wait_applied(&env, &daemon, "6.14.2", Duration::from_secs(60));
    eprintln!("6.14.2 applied {:?} after publishing", published.elapsed());
    assert_eq!(
        repo.downloads("/charts/podinfo-6.14.2.tgz"),
        1,
        "a chart is downloaded once, then read from the cache"
    );
    // Polls after that are conditional: the index is not downloaded again while
    // it does not change.
    let indexes = repo.downloads("/charts/index.yaml");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        repo.downloads("/charts/index.yaml"),
        indexes,
        "an unchanged index is answered 304"
    );

    let out = cli(&env, &repo, "diff", &[]);
    assert_eq!(
        code(&out),
        0,
        "no changes after the daemon applied: {}",
        describe(&out)
    );
}

#[test]
fn the_generic_trigger_fetches_at_once() {
    let env = TestEnv::new("helm-repo-hook");
    let repo = ChartRepo::start(None);
    repo.publish("6.14.0");
    repo.publish("6.14.1");
    let daemon = Daemon::start(&env, &chart_config(&repo, "1h", ""), &[]);
    wait_applied(&env, &daemon, "6.14.1", APPLIED);

    repo.publish("6.14.2");
    let (status, body) = daemon.post("/hooks/source/nope", &[], "");
    assert_eq!(status, 404, "an unknown source: {body}");
    let (status, body) = daemon.post("/hooks/source/podinfo", &[], "");
    assert_eq!(status, 202, "the trigger queues a fetch: {body}");
    // The interval is an hour: only the trigger can have fetched it.
    let after = wait_applied(&env, &daemon, "6.14.2", Duration::from_secs(30));
    eprintln!("6.14.2 applied {after:?} after the trigger");
}

#[test]
fn a_tampered_or_oversized_chart_fails_its_revision_and_writes_nothing() {
    let env = TestEnv::new("helm-repo-tamper");
    let identity = Identity::new(&env, &format!("{}-daemon", env.ns));
    let repo = ChartRepo::start(None);
    repo.publish("6.14.1");
    let config = chart_config(&repo, "1s", "[limits]\nmax_artifact_mib = 1\n");
    let vars = [("KUBECONFIG", identity.kubeconfig_arg())];
    let daemon = Daemon::start_with_env(&env, &config, &[], &vars);
    wait_applied(&env, &daemon, "6.14.1", APPLIED);
    // The status is written after the objects land: wait for it to name 6.14.1.
    let good = eventually(Duration::from_secs(30), || {
        let revision = daemon.source()["revision"].as_str()?.to_string();
        revision.starts_with("6.14.1@").then_some(revision)
    })
    .unwrap_or_else(|| panic!("status never named 6.14.1: {}", daemon.source()))
    .value;
    // Let the first reconcile's writes land in the audit log before the mark.
    std::thread::sleep(Duration::from_secs(2));
    let mark = SystemTime::now();

    repo.publish_chart(&podinfo("6.14.2"), Publish::Tampered);
    let error = wait_error(&daemon, "digest mismatch");
    assert!(
        error.contains("podinfo 6.14.2") && error.contains(&repo.url()),
        "the error names the chart, version and repository: {error}"
    );

    // 6.14.3 is higher, so chosen next: 2 MiB that do not compress.
    let big = podinfo("6.14.3");
    std::fs::write(big.join("noise.bin"), noise(2 << 20)).expect("write noise");
    repo.publish_chart(&big, Publish::AsIs);
    let error = wait_error(&daemon, "max_artifact_mib");
    assert!(
        error.contains("podinfo-6.14.3.tgz"),
        "names the archive: {error}"
    );

    let status = daemon.source();
    assert_eq!(
        status["revision"].as_str(),
        Some(good.as_str()),
        "the last good revision is kept: {status}"
    );
    assert_eq!(applied_charts(&env), "podinfo-6.14.1");
    let writes: Vec<String> = identity
        .events(&env.ns)
        .iter()
        .filter(|e| e.is_write() && e.received_at() >= mark)
        .map(|e| format!("{} {}", e.verb, e.object()))
        .collect();
    assert!(writes.is_empty(), "failed revisions wrote: {writes:?}");
}

/// Waits until the source's error contains `needle`; returns the error.
fn wait_error(daemon: &Daemon, needle: &str) -> String {
    let waited = eventually(Duration::from_secs(60), || {
        let status = daemon.source();
        let error = status["error"].as_str().unwrap_or("").to_string();
        error.contains(needle).then_some(error)
    });
    match waited {
        Some(waited) => waited.value,
        None => panic!(
            "no error containing {needle:?}; status: {}\nlog:\n{}",
            daemon.source(),
            daemon.log()
        ),
    }
}

/// `len` bytes that gzip cannot shrink (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn the_cli_previews_and_applies_a_chart_before_a_source_exists() {
    let env = TestEnv::new("helm-repo-cli");
    let repo = ChartRepo::start(Some(("ci", "s3cret")));
    repo.publish("6.14.0");
    repo.publish("6.14.1");
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().display().to_string();
    let auth = [
        "--helm-password-env",
        "CHARTS_PASSWORD",
        "--helm-username-env",
        "CHARTS_USER",
    ];

    let refused = cli(&env, &repo, "diff", &[]);
    assert_eq!(code(&refused), 2, "no credentials: {}", describe(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the credentials (HTTP 401)"),
        "{}",
        describe(&refused)
    );

    let run = |verb: &str| {
        env.converge_command()
            .arg(verb)
            .args(["--helm-repo", &repo.url(), "--chart", "podinfo"])
            .args(["--version", "6.14.x", "-n", &env.ns, "--name", "podinfo"])
            .args(auth)
            .args(["--cache-dir", &cache_dir])
            .env("CHARTS_USER", "ci")
            .env("CHARTS_PASSWORD", "s3cret")
            .output()
            .expect("run converge")
    };
    let diff = run("diff");
    assert_eq!(code(&diff), 1, "changes to make: {}", describe(&diff));
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("podinfo"),
        "{}",
        describe(&diff)
    );
    let apply = run("apply");
    assert_eq!(code(&apply), 0, "{}", describe(&apply));
    assert_eq!(applied_charts(&env), "podinfo-6.14.1");
    let diff = run("diff");
    assert_eq!(
        code(&diff),
        0,
        "nothing left to change: {}",
        describe(&diff)
    );
    assert_eq!(
        repo.downloads("/charts/podinfo-6.14.1.tgz"),
        1,
        "the second and third runs read the chart from --cache-dir"
    );
    let secret_shown = [&diff, &apply]
        .iter()
        .any(|out| String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    assert!(!secret_shown, "the password is never printed");
}

#[test]
fn a_chart_s_dependencies_are_fetched_from_their_repository() {
    let env = TestEnv::new("helm-repo-deps");
    let repo = ChartRepo::start(None);
    repo.publish("6.14.0");
    repo.publish("6.14.1");
    let source = tempfile::tempdir().expect("tempdir");
    let app = source.path().join("app");
    std::fs::create_dir_all(app.join("templates")).expect("mkdir");
    std::fs::write(
        app.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: podinfo\n  \
             version: 6.14.x\n  repository: {}/\n",
            repo.url()
        ),
    )
    .expect("write Chart.yaml");
    std::fs::write(
        app.join("templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  chart: '{{ .Chart.Name }}'\n",
    )
    .expect("write a template");
    let apply = |verb: &str| {
        env.converge_command()
            .arg(verb)
            .arg(&app)
            .args(["-n", &env.ns, "--name", "app"])
            .output()
            .expect("run converge")
    };

    // Without Chart.lock: the highest version matching Chart.yaml's constraint.
    let out = apply("apply");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(applied_charts(&env), "podinfo-6.14.1");
    env.kubectl(&["get", "configmap", "app-config", "-n", &env.ns]);

    // Chart.lock pins the version.
    std::fs::write(
        app.join("Chart.lock"),
        format!(
            "dependencies:\n- name: podinfo\n  repository: {}/\n  version: 6.14.0\n\
             digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n\
             generated: \"2026-12-07T00:00:00Z\"\n",
            repo.url()
        ),
    )
    .expect("write Chart.lock");
    let out = apply("apply");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(applied_charts(&env), "podinfo-6.14.0");
    let out = apply("diff");
    assert_eq!(code(&out), 0, "nothing left to change: {}", describe(&out));
    assert!(
        !app.join("charts").exists(),
        "the dependency is laid into a scratch copy, never into the source"
    );
}

#[test]
fn kustomize_helm_charts_from_chart_home_and_from_a_repository() {
    let env = TestEnv::new("helm-repo-kustomize");
    let repo = ChartRepo::start(None);
    repo.publish("6.14.0");
    let source = tempfile::tempdir().expect("tempdir");
    let dir = source.path().join("app");
    // The vendored chart (6.14.1, kubeVersion >=1.23: helm must be told the
    // cluster's version) in chartHome, and 6.14.0 from the repository.
    crate::common::chart_repo::copy_dir(&podinfo("6.14.1"), &dir.join("charts/podinfo"));
    let kustomization = |extra: &str| {
        format!(
            "helmCharts:\n- name: podinfo\n  releaseName: vendored\n  namespace: {ns}\n{extra}\
             - name: podinfo\n  repo: {url}\n  version: 6.14.0\n  releaseName: fetched\n  \
             namespace: {ns}\n",
            ns = env.ns,
            url = repo.url()
        )
    };
    std::fs::write(dir.join("kustomization.yaml"), kustomization("")).expect("write");
    let run = |verb: &str| {
        env.converge_command()
            .arg(verb)
            .arg(&dir)
            .args(["-n", &env.ns, "--name", "kz"])
            .output()
            .expect("run converge")
    };
    let out = run("apply");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let mut charts: Vec<String> = applied_charts(&env)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    charts.sort();
    assert_eq!(charts, ["podinfo-6.14.0", "podinfo-6.14.1"]);
    let out = run("diff");
    assert_eq!(code(&out), 0, "nothing left to change: {}", describe(&out));
    assert!(
        !dir.join("charts/podinfo-6.14.0").exists(),
        "the fetched chart went into a private copy, not the source"
    );

    // A broken entry: kustomize's error spans lines, and all of them are shown.
    std::fs::write(
        dir.join("kustomization.yaml"),
        kustomization("  kubeVersion: not-a-version\n"),
    )
    .expect("write");
    let out = run("diff");
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not parse \"not-a-version\" as version")
            && stderr.contains("unable to run: '")
            && stderr.contains("exit status 1"),
        "the whole multi-line error: {stderr}"
    );
}

#[test]
fn a_restart_downloads_nothing_again() {
    let env = TestEnv::new("helm-repo-restart");
    let repo = ChartRepo::start(None);
    repo.publish("6.14.1");
    let state = tempfile::tempdir().expect("tempdir");
    let config = chart_config(&repo, "1h", "").replace(
        "state_dir = \"{state}\"",
        &format!("state_dir = \"{}\"", state.path().display()),
    );
    let mut first = Daemon::start(&env, &config, &[]);
    wait_applied(&env, &first, "6.14.1", APPLIED);
    first.terminate();
    let second = Daemon::start(&env, &config, &[]);
    let synced = eventually(Duration::from_secs(60), || {
        second.source()["result"].as_str() == Some("synced")
    });
    assert!(
        synced.is_some(),
        "not synced after the restart: {}",
        second.source()
    );
    assert_eq!(
        repo.downloads("/charts/podinfo-6.14.1.tgz"),
        1,
        "the chart is read from the cache under state_dir"
    );
    assert_eq!(
        repo.downloads("/charts/index.yaml"),
        1,
        "the restarted daemon's index request was conditional (304)"
    );
}
