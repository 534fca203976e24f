//! Ordering (issue #14) against the real control plane, where kwok completes Jobs:
//! pre-sync hooks, waves and post-sync hooks in order (timestamps and
//! resourceVersions prove it), nothing run again when nothing changed (CLI and
//! daemon), a failing hook that stops the sync with its evidence and runs the
//! sync-fail hook, Argo CD's annotations and a Helm chart's hooks (rendered by
//! converge's `helm template`), `depends_on`
//! between sources, and `generateName` objects outside hooks refused.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, eventually, repo_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// `apply` when a hook or a wave failed the sync.
const SYNC_FAILED: i32 = 3;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/ordering").join(name)
}

/// A copy of a fixture directory, to change.
fn copy_of(name: &str) -> Manifests {
    let copy = Manifests::new();
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let file = path.file_name().and_then(|f| f.to_str()).expect("name");
        copy.write(file, &text);
    }
    copy
}

/// The release's migration as a Job that fails: its Pod never schedules and its
/// deadline passes after 2 s (DeadlineExceeded).
fn failing_migration(release: &Manifests) {
    let path = release.path().join("10-migrate.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text
        .replace(
            "  backoffLimit: 0\n",
            "  backoffLimit: 0\n  activeDeadlineSeconds: 2\n",
        )
        .replace(
            "      restartPolicy: Never\n",
            "      restartPolicy: Never\n      nodeSelector: {disktype: no-node-has-this}\n",
        );
    std::fs::write(&path, text).expect("write");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `converge apply PATH -n NS --name release ARGS…` and how long it took.
fn apply(env: &TestEnv, path: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = env
        .converge_command()
        .arg("apply")
        .arg(path)
        .args(["-n", &env.ns, "--name", "release"])
        .args(args)
        .output()
        .expect("run converge apply");
    (out, started.elapsed())
}

/// Every object of `kinds` in the test's namespace, by name.
fn objects(env: &TestEnv, kinds: &str) -> Vec<Value> {
    let text = env.kubectl(&["get", kinds, "-n", &env.ns, "-o", "json"]);
    let list: Value = serde_json::from_str(&text).expect("kubectl JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn named<'a>(objects: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| text(o, "/metadata/name").starts_with(prefix))
        .collect()
}

fn one<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| text(o, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("no {name} among {objects:#?}"))
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The etcd revision of an object's last write: objects written later have larger
/// ones, at a finer grain than the timestamps' seconds.
fn revision(object: &Value) -> u64 {
    text(object, "/metadata/resourceVersion")
        .parse()
        .expect("a numeric resourceVersion")
}

fn created(object: &Value) -> &str {
    text(object, "/metadata/creationTimestamp")
}

/// When a Deployment became Available (RFC 3339, seconds: compares as text).
fn available_since(deployment: &Value) -> &str {
    deployment["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_else(|| panic!("not available: {deployment:#}"))
}

fn job_names(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = objects(env, "jobs")
        .iter()
        .map(|j| text(j, "/metadata/name").to_string())
        .collect();
    names.sort();
    names
}

/// The positions of `lines` in `text`, which must come in this order.
fn assert_in_order(text: &str, lines: &[&str]) {
    let mut from = 0;
    for line in lines {
        let at = text[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing or out of order in:\n{text}"));
        from += at + line.len();
    }
}

/// Applies the release in `fixture` (pre-sync migration, wave 0 database, wave 1
/// web, post-sync smoke test, sync-fail notification) and checks the order, then
/// that a second apply runs nothing. The same for every spelling of the
/// annotations.
fn release_runs_in_order(fixture_dir: &Path, test: &str) {
    let env = TestEnv::new(test);
    let (out, took) = apply(&env, fixture_dir, &["--wait", "--timeout", "2m"]);
    let log = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    println!("{log}");
    println!("first apply: {took:?}");
    let ns = &env.ns;
    assert_in_order(
        &log,
        &[
            &format!("[pre-sync] Job.batch/{ns}/migrate-* runs"),
            &format!("[wave 0] ConfigMap/{ns}/db-settings created"),
            &format!("[wave 1] Deployment.apps/{ns}/web created"),
            &format!("[post-sync] Job.batch/{ns}/smoke-* runs"),
            &format!("[sync-fail] Job.batch/{ns}/notify-* runs if the sync fails"),
            "4 created, 0 configured, 0 unchanged, 0 pruned, 3 hooks",
            &format!("[pre-sync] Job.batch/{ns}/migrate-"),
            "[wave 0] 2 objects ready after",
            "[wave 1] 2 objects ready after",
            &format!("[post-sync] Job.batch/{ns}/smoke-"),
            "All 4 objects ready after",
        ],
    );

    let all = objects(&env, "jobs,configmaps,deployments");
    let (migrate, smoke) = (named(&all, "migrate-"), named(&all, "smoke-"));
    assert_eq!((migrate.len(), smoke.len()), (1, 1), "{all:#?}");
    assert!(named(&all, "notify-").is_empty(), "the sync did not fail");
    let (migrate, smoke) = (migrate[0], smoke[0]);
    let db_settings = one(&all, "db-settings");
    let (db, web_settings, web) = (one(&all, "db"), one(&all, "web-settings"), one(&all, "web"));
    // The migration completed before wave 0 was written.
    assert!(
        revision(migrate) < revision(db_settings),
        "migrate last written after wave 0"
    );
    assert!(text(migrate, "/status/completionTime") <= created(db_settings));
    // Wave 0 was healthy (db available, its last write) before wave 1 was written.
    assert!(
        revision(db) < revision(web_settings),
        "db changed after wave 1 started"
    );
    assert!(available_since(db) <= created(web_settings));
    assert!(available_since(db) <= created(web));
    // The smoke test started once wave 1 was healthy.
    assert!(available_since(web) <= created(smoke));
    assert!(revision(web) < revision(smoke));
    println!(
        "migrate completed {} (rv {}), db-settings created {} (rv {}), db available {} \
         (rv {}), web-settings created {} (rv {}), web available {}, smoke created {}",
        text(migrate, "/status/completionTime"),
        revision(migrate),
        created(db_settings),
        revision(db_settings),
        available_since(db),
        revision(db),
        created(web_settings),
        revision(web_settings),
        available_since(web),
        created(smoke)
    );

    let jobs = job_names(&env);
    let (out, took) = apply(&env, fixture_dir, &["--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let again = stdout(&out);
    assert!(
        again.starts_with("0 created, 0 configured, 4 unchanged, 0 pruned\n"),
        "{again}"
    );
    assert!(!again.contains("[pre-sync]"), "{again}");
    assert_eq!(job_names(&env), jobs, "no hook ran again");
    println!("second apply, nothing changed: {took:?}, no Job created");
}

#[test]
fn hooks_and_waves_run_in_order_and_not_again_when_nothing_changed() {
    release_runs_in_order(&fixture("converge"), "ordering-release");
}

#[test]
fn argo_cd_annotations_behave_identically() {
    release_runs_in_order(&fixture("argocd"), "ordering-argocd");
}

#[test]
fn a_failing_pre_sync_hook_stops_the_sync_and_runs_the_sync_fail_hook() {
    let env = TestEnv::new("ordering-hook-fails");
    let release = copy_of("converge");
    failing_migration(&release);
    let (out, took) = apply(&env, release.path(), &[]);
    let log = stdout(&out);
    println!("{log}");
    assert_eq!(out.status.code(), Some(SYNC_FAILED), "{}", describe(&out));
    println!("a failing pre-sync hook failed the sync after {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let ns = &env.ns;
    assert_in_order(
        &log,
        &[
            &format!("[pre-sync] Job.batch/{ns}/migrate-"),
            "failed after",
            "Job failed: DeadlineExceeded: Job was active longer than specified deadline",
            "  conditions:\n",
            &format!("[sync-fail] Job.batch/{ns}/notify-"),
            "ready after",
            &format!("sync failed: pre-sync hook Job.batch/{ns}/migrate-"),
            "not run: wave 0, wave 1, post-sync hooks",
        ],
    );
    let all = objects(&env, "jobs,configmaps,deployments");
    let written: Vec<&str> = all.iter().map(|o| text(o, "/metadata/name")).collect();
    for absent in ["db-settings", "db", "web-settings", "web"] {
        assert!(!written.contains(&absent), "{absent} written: {written:?}");
    }
    let notify = named(&all, "notify-");
    assert_eq!(notify.len(), 1, "{written:?}");
    assert!(
        !text(notify[0], "/status/completionTime").is_empty(),
        "{:#}",
        notify[0]
    );
    assert!(named(&all, "smoke-").is_empty(), "{written:?}");

    // The same for scripts, at the next attempt (the failed Job deleted first).
    let (out, _) = apply(&env, release.path(), &["-o", "json"]);
    assert_eq!(out.status.code(), Some(SYNC_FAILED), "{}", describe(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let failed = &json["sync"]["failed"];
    assert_eq!(
        (&failed["stage"], &failed["phase"]),
        (&Value::from("hooks"), &Value::from("pre-sync")),
        "{json:#}"
    );
    let hook = &json["sync"]["stages"][0]["waited"]["objects"][0];
    assert_eq!(hook["state"], "failed", "{json:#}");
    assert!(hook["evidence"]["conditions"].is_array(), "{json:#}");
    assert_eq!(named(&objects(&env, "jobs"), "migrate-").len(), 1);
}

#[test]
fn a_wave_that_does_not_become_healthy_stops_the_sync_at_the_timeout() {
    let env = TestEnv::new("ordering-wave-fails");
    let release = copy_of("converge");
    let path = release.path().join("20-database.yaml");
    let database = std::fs::read_to_string(&path).expect("read");
    let stuck = database.replace(
        "      containers:\n      - name: db\n",
        "      nodeSelector: {disktype: no-node-has-this}\n      containers:\n      - name: db\n",
    );
    assert_ne!(stuck, database);
    std::fs::write(&path, stuck).expect("write");
    let (out, took) = apply(&env, release.path(), &["--wait", "--timeout", "5s"]);
    let log = stdout(&out);
    println!("{log}");
    assert_eq!(out.status.code(), Some(SYNC_FAILED), "{}", describe(&out));
    println!("an unhealthy wave 0 failed the sync after {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let ns = &env.ns;
    assert_in_order(
        &log,
        &[
            "[wave 0] 1 of 2 objects ready after 5.0s (timed out)",
            &format!("  Deployment.apps/{ns}/db progressing"),
            "FailedScheduling",
            &format!("[sync-fail] Job.batch/{ns}/notify-"),
            &format!("sync failed: wave 0: Deployment.apps/{ns}/db progressing"),
            "(not ready after 5",
            "not run: wave 1, post-sync hooks",
        ],
    );
    let all = objects(&env, "jobs,configmaps,deployments");
    let names: Vec<&str> = all.iter().map(|o| text(o, "/metadata/name")).collect();
    assert!(
        names.contains(&"db-settings") && names.contains(&"db"),
        "{names:?}"
    );
    for absent in ["web-settings", "web"] {
        assert!(!names.contains(&absent), "wave 1 written: {names:?}");
    }
    assert!(named(&all, "smoke-").is_empty(), "{names:?}");
    assert_eq!(named(&all, "notify-").len(), 1, "{names:?}");
}

#[test]
fn a_helm_charts_pre_install_and_post_install_hooks_run_in_order() {
    let env = TestEnv::new("ordering-helm");
    let chart = fixture("helm-chart");
    let release = ["--release", "shop"];
    let (out, took) = apply(
        &env,
        &chart,
        &[&release[..], &["--wait", "--timeout", "2m"]].concat(),
    );
    let log = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    println!("{log}\nhelm chart applied in {took:?}");
    let ns = &env.ns;
    assert_in_order(
        &log,
        &[
            &format!("[pre-sync] ConfigMap/{ns}/shop-schema runs"),
            &format!("[pre-sync] Job.batch/{ns}/shop-migrate runs"),
            &format!("[wave 0] ConfigMap/{ns}/shop-settings created"),
            &format!("[post-sync] Job.batch/{ns}/shop-smoke runs"),
            &format!("[post-sync] Job.batch/{ns}/shop-report runs"),
            &format!("[pre-sync] ConfigMap/{ns}/shop-schema ready"),
            &format!("[pre-sync] Job.batch/{ns}/shop-migrate ready"),
            "[wave 0] 2 objects ready after",
            &format!("[post-sync] Job.batch/{ns}/shop-smoke ready"),
            "deleted by its delete policy",
            &format!("[post-sync] Job.batch/{ns}/shop-report ready"),
        ],
    );
    let all = objects(&env, "jobs,configmaps,deployments,pods");
    let (schema, migrate) = (one(&all, "shop-schema"), one(&all, "shop-migrate"));
    let (settings, web) = (one(&all, "shop-settings"), one(&all, "shop-web"));
    let report = one(&all, "shop-report");
    assert!(revision(schema) < revision(migrate), "weight -5 before 0");
    assert!(
        revision(migrate) < revision(settings),
        "pre-install completed first"
    );
    assert!(text(migrate, "/status/completionTime") <= created(settings));
    assert!(
        available_since(web) <= created(report),
        "post-install after healthy"
    );
    assert!(revision(web) < revision(report));
    let names: Vec<&str> = all.iter().map(|o| text(o, "/metadata/name")).collect();
    assert!(!names.contains(&"shop-smoke"), "hook-succeeded: {names:?}");
    assert!(
        !names.contains(&"shop-test-connection"),
        "test hooks are never applied: {names:?}"
    );

    // An upgrade runs the hooks again (pre-upgrade, post-upgrade); the named hooks
    // of the first run are deleted before they are created again.
    let (out, _) = apply(&env, &chart, &release);
    assert!(!stdout(&out).contains("[pre-sync]"), "{}", describe(&out));
    let migrate_uid = text(migrate, "/metadata/uid").to_string();
    let upgrade = [&release[..], &["--set", "replicas=3"]].concat();
    let (out, took) = apply(&env, &chart, &upgrade);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    println!("upgrade with hooks: {took:?}");
    let all = objects(&env, "jobs");
    assert_ne!(
        text(one(&all, "shop-migrate"), "/metadata/uid"),
        migrate_uid
    );
}

#[test]
fn a_generate_name_object_without_a_hook_annotation_is_refused() {
    let env = TestEnv::new("ordering-generate-name");
    let source = Manifests::with(
        "run.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: run-}\ndata: {k: v}\n",
    );
    let (out, _) = apply(&env, source.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains("run.yaml:1: ConfigMap/run-*: metadata.generateName without a hook annotation: every sync would create another object"),
        "{stderr}"
    );
    assert!(stderr.contains("converge.dev/hook: pre-sync"), "{stderr}");
    let names = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", "name"]);
    assert!(!names.contains("run-"), "{names}");
}

#[test]
fn an_invalid_hook_is_refused_before_anything_is_written() {
    let env = TestEnv::new("ordering-invalid-hook");
    let release = copy_of("converge");
    let path = release.path().join("10-migrate.yaml");
    let migrate = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        migrate.replace("backoffLimit: 0", "backoffLimit: -1"),
    )
    .expect("write");
    for command in ["diff", "apply"] {
        let out = env
            .converge_command()
            .arg(command)
            .arg(release.path())
            .args(["-n", &env.ns, "--name", "release"])
            .output()
            .expect("run converge");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", describe(&out));
        assert!(
            stderr.contains("10-migrate.yaml:4: Job.batch/") && stderr.contains("backoffLimit"),
            "{command}: {stderr}"
        );
    }
    let written = env.kubectl(&[
        "get",
        "jobs,configmaps,deployments",
        "-n",
        &env.ns,
        "-o",
        "name",
    ]);
    assert!(
        !written.contains("db") && !written.contains("job"),
        "{written}"
    );
}

/// A daemon config with the given `[[source]]` tables (`{ns}` is the test's
/// namespace).
fn daemon_config(sources: &str) -> String {
    format!("state_dir = \"{{state}}\"\n\n{sources}")
}

fn dir_source(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n{extra}\n",
        dir.display()
    )
}

#[test]
fn the_daemon_runs_hooks_once_per_change_not_at_resyncs() {
    let env = TestEnv::new("ordering-daemon");
    let release = copy_of("converge");
    let config = daemon_config(&dir_source(
        "release",
        release.path(),
        "interval = \"1s\"\nfull_resync_every = 1\nwave_timeout = \"60s\"",
    ));
    let started = Instant::now();
    let daemon = Daemon::start(&env, &config, &[]);
    let synced = eventually(Duration::from_secs(60), || {
        daemon.source()["result"] == "synced"
    });
    assert!(synced.is_some(), "{}", daemon.log());
    println!("daemon: release synced after {:?}", started.elapsed());
    let jobs = job_names(&env);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let reconciles = daemon.source()["reconciles"].as_u64().unwrap_or(0);
    let resyncs = eventually(Duration::from_secs(30), || {
        daemon.source()["reconciles"].as_u64().unwrap_or(0) >= reconciles + 3
    });
    assert!(resyncs.is_some(), "no full resyncs:\n{}", daemon.log());
    assert_eq!(
        job_names(&env),
        jobs,
        "a resync ran hooks:\n{}",
        daemon.log()
    );
    let source = daemon.source();
    assert_eq!(source["result"], "synced", "{source:#}");
    let health: Vec<&str> = source["health"]["objects"]
        .as_array()
        .map(|o| o.iter().filter_map(|o| o["object"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(health.len(), 4, "hooks are not live state: {health:?}");

    // A new revision that writes something runs them again; a failing hook fails
    // it, with evidence. (A change to hooks alone writes nothing: it runs nothing.)
    failing_migration(&release);
    let web = std::fs::read_to_string(release.path().join("30-web.yaml")).expect("read");
    release.write(
        "30-web.yaml",
        &web.replace("database: db", "database: db-v2"),
    );
    let failed = eventually(Duration::from_secs(60), || {
        daemon.source()["result"] == "failed"
    });
    assert!(failed.is_some(), "{}", daemon.log());
    let error = eventually(Duration::from_secs(30), || {
        let error = daemon.source()["error"].as_str().unwrap_or("").to_string();
        error.contains("[sync-fail]").then_some(error)
    })
    .map(|w| w.value)
    .unwrap_or_else(|| panic!("{:#}", daemon.source()));
    println!("/status error:\n{error}");
    assert!(
        error.starts_with("pre-sync hook Job.batch/") && error.contains("DeadlineExceeded"),
        "{error}"
    );
    assert!(error.contains("  conditions:"), "evidence: {error}");
    assert!(!named(&objects(&env, "jobs"), "notify-").is_empty());
}

#[test]
fn a_source_waits_for_the_sources_it_depends_on() {
    let env = TestEnv::new("ordering-depends");
    let infra = Manifests::new();
    let unschedulable = "apiVersion: apps/v1
kind: Deployment
metadata: {name: operator}
spec:
  selector: {matchLabels: {app: operator}}
  template:
    metadata: {labels: {app: operator}}
    spec:
      nodeSelector: {disktype: NODE}
      containers: [{name: op, image: example.com/op:1}]
";
    infra.write(
        "operator.yaml",
        &unschedulable.replace("NODE", "no-node-has-this"),
    );
    let app = Manifests::with(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {value: '1'}\n",
    );
    let config = daemon_config(
        &(dir_source("infra", infra.path(), "interval = \"1h\"")
            + &dir_source(
                "app",
                app.path(),
                "interval = \"1h\"\ndepends_on = [\"infra\"]",
            )),
    );
    let daemon = Daemon::start(&env, &config, &[]);
    let source_status = |daemon: &Daemon, name: &str| {
        let status = daemon.status();
        let sources = status["sources"].as_array().cloned().unwrap_or_default();
        sources
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_default()
    };
    let app_status = |daemon: &Daemon| source_status(daemon, "app");
    let waiting = eventually(Duration::from_secs(30), || {
        app_status(&daemon)["result"] == "waiting"
    });
    assert!(waiting.is_some(), "{}", daemon.log());
    let status = app_status(&daemon);
    assert_eq!(
        status["waitingFor"],
        serde_json::json!(["infra"]),
        "{status:#}"
    );
    // Settled: infra has applied its revision and found it not healthy, the last
    // news app gets from it while the operator cannot be scheduled.
    let infra_settled = eventually(Duration::from_secs(60), || {
        let infra = source_status(&daemon, "infra");
        let settled = infra["result"] == "synced" && infra["health"]["state"] == "progressing";
        settled.then_some(infra)
    });
    assert!(
        infra_settled.is_some(),
        "infra never applied and reported its unschedulable operator progressing: {:#}",
        source_status(&daemon, "infra")
    );
    let status = app_status(&daemon);
    assert_eq!(status["result"], "waiting", "{status:#}");
    assert_eq!(env.configmap_value("app"), None, "app reconciled too early");
    let table = env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("converge status");
    assert!(
        stdout(&table).contains("waiting for infra"),
        "{}",
        describe(&table)
    );

    // The dependency becomes healthy: the dependent reconciles.
    infra.write(
        "operator.yaml",
        &unschedulable.replace("{disktype: NODE}", "{}"),
    );
    let fixed = Instant::now();
    let applied = env.wait_configmap_value("app", "1", Duration::from_secs(60));
    assert!(applied.is_some(), "{}", daemon.log());
    println!(
        "app applied {:?} after infra was fixed (infra healthy, then app)",
        fixed.elapsed()
    );
    let status = app_status(&daemon);
    assert_eq!(status["result"], "synced", "{status:#}");
    assert!(status.get("waitingFor").is_none(), "{status:#}");
}

#[test]
fn a_dependency_cycle_is_refused_at_start_up() {
    let env = TestEnv::new("ordering-cycle");
    let manifests = Manifests::new();
    let home = Manifests::new();
    let config = daemon_config(
        &(dir_source("a", manifests.path(), "depends_on = [\"b\"]")
            + &dir_source("b", manifests.path(), "depends_on = [\"a\"]")),
    )
    .replace("{ns}", &env.ns)
    .replace("{state}", &home.path().join("state").display().to_string());
    let path = home.write("config.toml", &config);
    let started = Instant::now();
    let out = env
        .converge_command()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("converge run");
    println!("refused after {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains("the sources depend on each other in a cycle: a → b → a"),
        "{stderr}"
    );
}
