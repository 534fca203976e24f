//! OCI sources against a real registry (go-containerregistry's, started by
//! `hack/registry.sh`; `hack/test.sh` exports `REGISTRY`): manifests artifacts
//! pushed by `converge push` and by `crane` (another OCI client) applied by the
//! daemon, a moved tag applied, a digest pinned, `converge apply/diff oci://…`, the
//! podinfo chart pushed with `helm push` giving the same objects as the vendored
//! chart, and artifacts that must be refused (a `../` entry, a layer over
//! `max_artifact_mib`): a failed revision with a clear error, no write (the audit
//! log), the last good revision kept.

use crate::common::audit::Identity;
use crate::common::daemon::Daemon;
use crate::common::{
    Manifests, TestEnv, assert_success, configmap, describe, eventually, repo_root,
};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `127.0.0.1:PORT` of the test registry; fails the test when it cannot be reached.
fn registry() -> String {
    let registry = std::env::var("REGISTRY").unwrap_or_default();
    assert!(
        !registry.is_empty(),
        "REGISTRY is not set: start the test registry with `bash hack/registry.sh up` and \
         `eval \"$(bash hack/registry.sh env)\"` (hack/test.sh does both)"
    );
    let reachable = std::net::TcpStream::connect_timeout(
        &registry
            .parse()
            .unwrap_or_else(|_| panic!("REGISTRY={registry} is not HOST:PORT")),
        Duration::from_secs(2),
    );
    assert!(
        reachable.is_ok(),
        "the test registry at REGISTRY={registry} does not answer: {reachable:?}; run \
         `bash hack/registry.sh up` and eval `bash hack/registry.sh env` again"
    );
    registry
}

/// A tool that `hack/registry.sh env` (crane) or `hack/controlplane.sh env` (helm)
/// put on PATH; fails the test saying so when it is missing.
fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("version").output();
    assert!(
        found.is_ok_and(|out| out.status.success()),
        "{name} is not on PATH: eval \"$(bash hack/registry.sh env)\" (crane) and \
         \"$(bash hack/controlplane.sh env)\" (helm) first; hack/test.sh does"
    );
    Command::new(name)
}

fn run(what: &str, command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert_success(what, &out);
    out
}

/// `converge push oci://REF --path DIR`: the digest it printed.
fn push(env: &TestEnv, reference: &str, dir: &Path) -> String {
    let out = run(
        "converge push",
        env.converge_command()
            .args(["push", reference, "--path"])
            .arg(dir),
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "converge push printed {digest:?}, not a digest"
    );
    digest
}

/// `crane append` of a tar+gzip layer onto an empty OCI image, tagged `reference`
/// (no `oci://`): the digest crane reports.
fn crane_push(reference: &str, layer: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("layer.tar.gz");
    std::fs::write(&file, layer).expect("write the layer");
    let file = file.to_str().expect("UTF-8").to_string();
    run(
        "crane append",
        tool("crane").args([
            "append",
            "--oci-empty-base",
            "--insecure",
            "-f",
            &file,
            "-t",
            reference,
        ]),
    );
    let out = run(
        "crane digest",
        tool("crane").args(["digest", "--insecure", reference]),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tar+gzip of `files`, names written as given (a `../` one included: the tar
/// crate's own path setter would refuse it).
fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    let gz = builder.into_inner().expect("tar");
    gz.finish().expect("gzip")
}

/// A daemon whose one source is `location` (the `oci`/`chart` lines), polled every
/// second, as the audited identity `identity` when given.
fn daemon(env: &TestEnv, location: &str, extra: &str, identity: Option<&Identity>) -> Daemon {
    let config = format!(
        "state_dir = \"{{state}}\"\n{extra}\n[[source]]\nname = \"{{ns}}\"\n\
         namespace = \"{{ns}}\"\ninterval = \"1s\"\n{location}\n"
    );
    let vars: Vec<(&str, &str)> = identity
        .map(|i| vec![("KUBECONFIG", i.kubeconfig_arg())])
        .unwrap_or_default();
    let daemon = Daemon::start_with_env(env, &config, &[], &vars);
    daemon.wait_ready(Duration::from_secs(30));
    daemon
}

/// Waits until the source is synced at `revision`.
fn synced_at(daemon: &Daemon, revision: &str, timeout: Duration) {
    let synced = eventually(timeout, || {
        let s = daemon.source();
        (s["result"] == "synced" && s["revision"] == revision).then_some(())
    });
    assert!(
        synced.is_some(),
        "the source never synced at {revision}: {:#}\n{}",
        daemon.source(),
        daemon.log()
    );
}

/// Waits until the source's last attempt failed with an error holding `needle`.
fn failed_with(daemon: &Daemon, needle: &str) -> String {
    let failed = eventually(Duration::from_secs(30), || {
        let s: Value = daemon.source();
        let error = s["error"].as_str().unwrap_or_default().to_string();
        (s["result"] == "failed" && error.contains(needle)).then_some(error)
    });
    match failed {
        Some(waited) => waited.value,
        None => panic!(
            "the source never failed with {needle:?}: {:#}\n{}",
            daemon.source(),
            daemon.log()
        ),
    }
}

#[test]
fn artifacts_from_converge_push_and_crane_apply_and_a_moved_tag_is_a_new_revision() {
    let env = TestEnv::new("oci-tag");
    let repo = format!("{}/{}/app", registry(), env.ns);
    let v1 = Manifests::with("cm.yaml", &configmap("app", "v1"));
    let d1 = push(&env, &format!("oci://{repo}:live"), v1.path());
    let daemon = daemon(
        &env,
        &format!("oci = \"oci://{repo}\"\ntag = \"live\""),
        "",
        None,
    );
    synced_at(&daemon, &d1, Duration::from_secs(30));
    assert_eq!(env.configmap_value("app").as_deref(), Some("v1"));

    // Another client moves the tag: its artifact (OCI empty base, one plain
    // tar+gzip layer) is the next revision, found within an interval or two.
    let layer = tar_gz(&[("cm.yaml", configmap("app", "v2").as_bytes())]);
    let moved = std::time::Instant::now();
    let d2 = crane_push(&format!("{repo}:live"), &layer);
    assert_ne!(d1, d2);
    synced_at(&daemon, &d2, Duration::from_secs(30));
    println!(
        "tag move (crane push) to converged: {:?} at interval 1s",
        moved.elapsed()
    );
    assert_eq!(env.configmap_value("app").as_deref(), Some("v2"));

    // The CLI reads the same references: the pinned v1 differs from the cluster
    // (exit 1), the tag does not (exit 0).
    let diff = |reference: &str| {
        env.converge_command()
            .args(["diff", reference, "-n", &env.ns, "--name", &env.ns])
            .output()
            .expect("converge diff")
    };
    let pinned = diff(&format!("oci://{repo}@{d1}"));
    assert_eq!(pinned.status.code(), Some(1), "{}", describe(&pinned));
    let tagged = diff(&format!("oci://{repo}:live"));
    assert_eq!(tagged.status.code(), Some(0), "{}", describe(&tagged));
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}

#[test]
fn a_digest_pins_the_artifact_and_a_moved_tag_changes_nothing() {
    let env = TestEnv::new("oci-digest");
    let repo = format!("{}/{}/app", registry(), env.ns);
    let v1 = Manifests::with("cm.yaml", &configmap("pinned", "v1"));
    let d1 = push(&env, &format!("oci://{repo}:live"), v1.path());
    let daemon = daemon(
        &env,
        &format!("oci = \"oci://{repo}\"\ndigest = \"{d1}\""),
        "",
        None,
    );
    synced_at(&daemon, &d1, Duration::from_secs(30));
    let writes = |daemon: &Daemon| daemon.metric("converge_api_requests_total{verb=\"apply\"}");
    let before = writes(&daemon);

    let v2 = Manifests::with("cm.yaml", &configmap("pinned", "v2"));
    push(&env, &format!("oci://{repo}:live"), v2.path());
    // Five intervals: a source following the tag would have moved by now.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(daemon.source()["revision"], d1.as_str());
    assert_eq!(env.configmap_value("pinned").as_deref(), Some("v1"));
    assert_eq!(writes(&daemon), before, "a pinned source wrote again");

    // `converge apply` of the tag applies v2; the pinned daemon then heals back.
    let applied = env
        .converge_command()
        .args(["apply", &format!("oci://{repo}:live"), "-n", &env.ns])
        .args(["--name", &env.ns])
        .output()
        .expect("converge apply");
    assert_eq!(applied.status.code(), Some(0), "{}", describe(&applied));
    let healed = eventually(Duration::from_secs(30), || {
        env.configmap_value("pinned").as_deref() == Some("v1")
    });
    assert!(healed.is_some(), "the pinned revision was not restored");
}

#[test]
fn a_bad_artifact_fails_its_revision_writes_nothing_and_keeps_the_good_one() {
    let env = TestEnv::new("oci-refused");
    let identity = Identity::new(&env, &format!("oci-{}", env.ns));
    let repo = format!("{}/{}/app", registry(), env.ns);
    let good = Manifests::with("cm.yaml", &configmap("good", "v1"));
    let d1 = push(&env, &format!("oci://{repo}:live"), good.path());
    let daemon = daemon(
        &env,
        &format!("oci = \"oci://{repo}\"\ntag = \"live\""),
        "[limits]\nmax_artifact_mib = 1\n",
        Some(&identity),
    );
    synced_at(&daemon, &d1, Duration::from_secs(30));
    let writes = || {
        identity
            .events(&env.ns)
            .iter()
            .filter(|e| e.is_write() && !e.is_dry_run())
            .count()
    };
    // Settled: the first sync's writes are all in the audit log.
    std::thread::sleep(Duration::from_secs(2));
    let before = writes();
    assert!(before > 0, "the audit log shows no write of the first sync");

    // A `../` entry: refused by the unpacker, naming the entry.
    let escape = tar_gz(&[
        ("cm.yaml", configmap("good", "escaped").as_bytes()),
        ("../escape.yaml", configmap("escape", "x").as_bytes()),
    ]);
    crane_push(&format!("{repo}:live"), &escape);
    let error = failed_with(&daemon, "leads outside the artifact");
    assert!(error.contains("\"../escape.yaml\""), "{error}");
    assert_eq!(
        daemon.source()["revision"],
        d1.as_str(),
        "the good revision left"
    );

    // A layer over [limits] max_artifact_mib = 1: refused before it is downloaded.
    let big = Manifests::with("cm.yaml", &configmap("good", "big"));
    let mut noise = std::fs::File::create(big.path().join("noise.bin")).expect("create");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..(2 << 20) / 8 {
        // xorshift: incompressible, so the gzip layer stays over 1 MiB.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.write_all(&state.to_le_bytes()).expect("write");
    }
    drop(noise);
    push(&env, &format!("oci://{repo}:live"), big.path());
    let error = failed_with(&daemon, "max_artifact_mib");
    assert!(error.contains("larger than 1 MiB"), "{error}");
    assert_eq!(
        daemon.source()["revision"],
        d1.as_str(),
        "the good revision left"
    );

    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(writes(), before, "a refused artifact was written");
    assert_eq!(env.configmap_value("good").as_deref(), Some("v1"));
    assert_eq!(env.configmap_value("escape"), None);
    // Nothing of the refused artifacts stays in the cache: only the good tree.
    let trees = daemon.state_dir().join("artifacts/trees/sha256");
    let count = std::fs::read_dir(&trees).expect("the tree cache").count();
    assert_eq!(count, 1, "refused trees left in {}", trees.display());
}

fn podinfo_chart() -> PathBuf {
    repo_root().join("tests/fixtures/podinfo/charts/podinfo")
}

#[test]
fn a_chart_pushed_with_helm_push_gives_the_vendored_charts_objects() {
    let env = TestEnv::new("oci-chart");
    let registry = registry();
    // helm with a throw-away HOME and registry config: nothing of the user's.
    let home = tempfile::tempdir().expect("tempdir");
    let helm = |args: &[&str]| {
        let mut command = tool("helm");
        command
            .args(args)
            .env("HOME", home.path())
            .env("HELM_REGISTRY_CONFIG", home.path().join("registry.json"))
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"));
        run(&format!("helm {}", args.join(" ")), &mut command)
    };
    let packaged = home.path().join("packaged");
    let chart = podinfo_chart();
    helm(&[
        "package",
        chart.to_str().expect("UTF-8"),
        "-d",
        packaged.to_str().expect("UTF-8"),
    ]);
    let tgz = packaged.join("podinfo-6.14.1.tgz");
    helm(&[
        "push",
        tgz.to_str().expect("UTF-8"),
        &format!("oci://{registry}/{}/charts", env.ns),
        "--plain-http",
    ]);
    let daemon = daemon(
        &env,
        &format!(
            "chart = \"oci://{registry}/{}/charts/podinfo\"\nversion = \"6.14.x\"\n\
             [source.helm]\nrelease = \"podinfo\"",
            env.ns
        ),
        "",
        None,
    );
    let synced = eventually(Duration::from_secs(60), || {
        let s = daemon.source();
        (s["result"] == "synced").then(|| s["revision"].as_str().unwrap_or_default().to_string())
    });
    let revision = match synced {
        Some(waited) => waited.value,
        None => panic!(
            "the chart never synced: {:#}\n{}",
            daemon.source(),
            daemon.log()
        ),
    };
    assert!(revision.starts_with("6.14.1@sha256:"), "{revision}");
    let deployments = env.kubectl(&["get", "deployments", "-n", &env.ns, "-o", "name"]);
    assert_eq!(deployments.trim(), "deployment.apps/podinfo");

    // The vendored chart, rendered by the CLI with the same release and ApplySet,
    // is exactly what the OCI chart applied: no change, nothing to prune.
    let diff = env
        .converge_command()
        .args(["diff"])
        .arg(&chart)
        .args([
            "-n",
            &env.ns,
            "--name",
            &env.ns,
            "--release",
            "podinfo",
            "--prune",
        ])
        .output()
        .expect("converge diff");
    assert_eq!(diff.status.code(), Some(0), "{}", describe(&diff));

    // A chart that depends on it through `repository: oci://…` (not in its charts/)
    // renders with the dependency pulled from the registry, digest checked.
    let umbrella = home.path().join("umbrella");
    std::fs::create_dir_all(&umbrella).expect("mkdir");
    std::fs::write(
        umbrella.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n- name: podinfo\n  \
             version: 6.14.x\n  repository: oci://{registry}/{}/charts\n",
            env.ns
        ),
    )
    .expect("write Chart.yaml");
    // Its render is exactly the objects the OCI chart source applied: diff --prune
    // under the same ApplySet and release exits 0 (a missing dependency would
    // leave nothing to render and fail).
    drop(daemon);
    let diff = env
        .converge_command()
        .arg("diff")
        .arg(&umbrella)
        .args([
            "-n",
            &env.ns,
            "--name",
            &env.ns,
            "--release",
            "podinfo",
            "--prune",
        ])
        .output()
        .expect("converge diff");
    assert_eq!(diff.status.code(), Some(0), "{}", describe(&diff));
}

#[test]
fn an_unreachable_registry_or_a_missing_artifact_is_a_clear_error_and_writes_nothing() {
    let env = TestEnv::new("oci-unreachable");
    let closed = crate::common::daemon::free_port();
    let apply = |reference: &str| {
        env.converge_command()
            .args(["apply", reference, "-n", &env.ns])
            .output()
            .expect("converge apply")
    };
    let out = apply(&format!("oci://127.0.0.1:{closed}/team/app:v1"));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach OCI registry 127.0.0.1:{closed}")),
        "{stderr}"
    );
    let missing = format!("oci://{}/{}/absent:v1", registry(), env.ns);
    let out = apply(&missing);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not found") && stderr.contains("absent"),
        "{stderr}"
    );
    let left = env.kubectl(&["get", "configmaps", "-n", &env.ns, "-o", "name"]);
    assert_eq!(
        left.trim(),
        "configmap/kube-root-ca.crt",
        "something was written"
    );
}

/// The requests the test registry logged for `repository` whose path holds `part`
/// (`/blobs/`, `/manifests/`).
fn registry_requests(repository: &str, part: &str) -> usize {
    let log = std::env::var("REGISTRY_LOG").unwrap_or_default();
    assert!(
        !log.is_empty(),
        "REGISTRY_LOG is not set: eval \"$(bash hack/registry.sh env)\" (hack/test.sh does)"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("read {log}: {e}"));
    let prefix = format!("GET /v2/{repository}{part}");
    text.lines().filter(|l| l.contains(&prefix)).count()
}

#[test]
fn semver_follows_the_highest_matching_tag_and_a_restart_downloads_no_layer_again() {
    let env = TestEnv::new("oci-semver");
    let repository = format!("{}/app", env.ns);
    let repo = format!("{}/{repository}", registry());
    let mut digests = std::collections::BTreeMap::new();
    for (tag, value) in [
        ("1.0.0", "a"),
        ("1.1.0", "b"),
        ("2.0.0", "c"),
        ("latest", "d"),
    ] {
        let dir = Manifests::with("cm.yaml", &configmap("app", value));
        digests.insert(tag, push(&env, &format!("oci://{repo}:{tag}"), dir.path()));
    }
    let state = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "state_dir = \"{}\"\n[[source]]\nname = \"{{ns}}\"\nnamespace = \"{{ns}}\"\n\
         interval = \"1s\"\noci = \"oci://{repo}\"\nsemver = \">=1.0 <2\"\n",
        state.path().display()
    );
    let mut first = Daemon::start(&env, &config, &[]);
    first.wait_ready(Duration::from_secs(30));
    synced_at(&first, &digests["1.1.0"], Duration::from_secs(30));
    assert_eq!(env.configmap_value("app").as_deref(), Some("b"));

    // A newly published matching version is the next revision.
    let dir = Manifests::with("cm.yaml", &configmap("app", "e"));
    let newer = push(&env, &format!("oci://{repo}:1.2.0"), dir.path());
    synced_at(&first, &newer, Duration::from_secs(30));
    assert_eq!(env.configmap_value("app").as_deref(), Some("e"));
    first.terminate();

    // A restart on the same state directory asks for the manifest again (the tag
    // may have moved) but downloads no layer: it is cached by digest.
    let blobs = registry_requests(&repository, "/blobs/");
    let manifests = registry_requests(&repository, "/manifests/");
    let second = Daemon::start(&env, &config, &[]);
    second.wait_ready(Duration::from_secs(30));
    synced_at(&second, &newer, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        registry_requests(&repository, "/manifests/") > manifests,
        "the restarted daemon never polled the registry"
    );
    assert_eq!(
        registry_requests(&repository, "/blobs/"),
        blobs,
        "the restarted daemon downloaded a layer again"
    );
}

/// A registry on loopback that lies: it serves `manifest` (announcing
/// `announced` as its digest) and `blob` for any blob, one answer per connection.
fn lying_registry(manifest: Vec<u8>, announced: String, blob: Vec<u8>) -> u16 {
    use std::io::{BufRead as _, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let (body, extra) = match request.contains("/manifests/") {
                true => (
                    &manifest,
                    format!(
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                         Docker-Content-Digest: {announced}\r\n"
                    ),
                ),
                false => (&blob, String::new()),
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            let mut stream = &stream;
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
fn a_tampered_layer_or_manifest_is_refused_by_its_digest_and_writes_nothing() {
    let env = TestEnv::new("oci-tampered");
    let genuine = tar_gz(&[("cm.yaml", configmap("tampered", "genuine").as_bytes())]);
    let served = tar_gz(&[("cm.yaml", configmap("tampered", "evil").as_bytes())]);
    let sha = |bytes: &[u8]| {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.flux.config.v1+json",
                   "digest": sha(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                    "digest": sha(&genuine), "size": genuine.len()}],
    }))
    .expect("json");
    let apply = |port: u16| {
        env.converge_command()
            .args(["apply", &format!("oci://127.0.0.1:{port}/team/app:live")])
            .args(["-n", &env.ns])
            .output()
            .expect("converge apply")
    };
    // The layer served is not the one the manifest names.
    let port = lying_registry(manifest.clone(), sha(&manifest), served);
    let out = apply(port);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("digest mismatch") && stderr.contains(&sha(&genuine)),
        "{stderr}"
    );
    // The manifest is not the one the registry says it is.
    let port = lying_registry(manifest.clone(), sha(b"another manifest"), genuine);
    let out = apply(port);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manifest digest mismatch"), "{stderr}");
    assert_eq!(
        env.configmap_value("tampered"),
        None,
        "a tampered artifact was applied"
    );
}
