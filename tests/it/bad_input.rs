//! The bad-input corpus (`tests/fixtures/bad/`): every manifest there ends
//! `converge apply` with exit code 2, an error naming the file and line (and the
//! object, where there is one) in words a person can act on, and zero writes,
//! checked with kubectl. Every config there ends `converge run` with exit code 2
//! and an error naming the file and the key. The Git cases of the corpus (an
//! unreachable remote, a rejected password, a rewritten history) live with the Git
//! harness: `daemon_git.rs` and `source_git.rs`.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, configmap, eventually, repo_root};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// What each manifest's error must say, beyond its file and line (`{ns}`: the
/// test's namespace).
const EXPECTED: &[(&str, &str)] = &[
    ("alias-bomb.yaml", "expands aliases excessively"),
    (
        "alias-undefined.yaml",
        "unknown anchor 'nowhere' referenced",
    ),
    ("annotation-key-invalid.yaml", "metadata.annotations"),
    (
        "apiversion-malformed.yaml",
        "unexpected apiVersion \"apps/v1/extra\"",
    ),
    ("bad-indentation.yaml", "mapping values are not allowed"),
    (
        "binary-not-base64.yaml",
        "!!binary value contains invalid base64",
    ),
    (
        "cluster-role-rule-invalid.yaml",
        "rules[0].verbs: Required value",
    ),
    (
        "configmap-binarydata-not-base64.yaml",
        "illegal base64 data",
    ),
    ("configmap-data-not-string.yaml", ".data.k: expected string"),
    ("configmap-key-invalid.yaml", "data[bad key]"),
    ("container-name-invalid.yaml", "containers[0].name"),
    (
        "container-no-image.yaml",
        "containers[0].image: Required value",
    ),
    (
        "control-character.yaml",
        "control characters are not allowed",
    ),
    ("cronjob-schedule-invalid.yaml", "spec.schedule"),
    ("deep-nesting.yaml", "nests more than 100 levels"),
    (
        "deployment-no-containers.yaml",
        "spec.template.spec.containers: Required",
    ),
    (
        "deployment-no-selector.yaml",
        "spec.selector: Required value",
    ),
    (
        "deployment-selector-mismatch.yaml",
        "does not match template `labels`",
    ),
    (
        "document-is-list.yaml",
        "the document is a list, not a mapping",
    ),
    ("document-is-scalar.yaml", "the document is a string"),
    (
        "duplicate-objects.yaml",
        "ConfigMap/bad-dup: duplicate object",
    ),
    (
        "generate-name-invalid.yaml",
        "metadata.generateName without a hook",
    ),
    (
        "ingress-pathtype-invalid.yaml",
        "pathType: Unsupported value",
    ),
    ("invalid-utf8.yaml", "not valid UTF-8"),
    (
        "job-restart-always.yaml",
        "spec.template.spec.restartPolicy",
    ),
    ("json-trailing-garbage.json", "invalid YAML"),
    ("json-truncated.json", "did not find expected ',' or '}'"),
    (
        "kind-not-a-string.yaml",
        "kind is a list; it must be a string",
    ),
    ("label-value-invalid.yaml", "metadata.labels: Invalid value"),
    ("merge-key-scalar.yaml", "map merge requires map"),
    ("metadata-not-a-mapping.yaml", "metadata is a string"),
    ("missing-apiversion.yaml", "apiVersion is missing"),
    ("missing-kind.yaml", "kind is missing"),
    ("missing-name.yaml", "metadata.name is missing"),
    ("name-invalid.yaml", "ConfigMap/{ns}/Bad_Name"),
    ("name-not-a-string.yaml", "metadata.name is a mapping"),
    ("name-too-long.yaml", "must be no more than 253 characters"),
    (
        "namespace-name-invalid.yaml",
        "namespaces \"Not_A_Namespace\" not found",
    ),
    ("one-bad-among-many.yaml", "ConfigMap/{ns}/Bad_One"),
    (
        "pvc-no-resources.yaml",
        "spec.resources[storage]: Required value",
    ),
    ("replicas-negative.yaml", "spec.replicas: Invalid value: -1"),
    (
        "replicas-not-a-number.yaml",
        ".spec.replicas: expected numeric",
    ),
    ("resources-quantity-invalid.yaml", "quantities must match"),
    (
        "rolebinding-roleref-invalid.yaml",
        "roleRef.kind: Unsupported value",
    ),
    ("secret-data-not-base64.yaml", "illegal base64 data"),
    ("secret-type-invalid.yaml", "data[tls.crt]: Required value"),
    ("service-port-not-a-number.yaml", "expected numeric"),
    (
        "service-port-out-of-range.yaml",
        "must be between 1 and 65535",
    ),
    ("service-type-invalid.yaml", "spec.type: Unsupported value"),
    (
        "tab-indentation.yaml",
        "found character that cannot start any token",
    ),
    (
        "truncated-flow-map.yaml",
        "did not find expected ',' or '}'",
    ),
    ("truncated-mid-key.yaml", "could not find expected ':'"),
    ("truncated-quoted.yaml", "found unexpected end of stream"),
    ("unknown-field.yaml", ".dta: field not declared in schema"),
    ("unknown-group.yaml", "unknown kind Widget"),
    ("unknown-kind.yaml", "unknown kind Gizmo"),
    (
        "unknown-nested-field.yaml",
        "imagePullPolice: field not declared",
    ),
    (
        "unserved-version.yaml",
        "unknown kind Deployment in API version apps/v1beta1",
    ),
];

/// What each config's error must say.
const EXPECTED_CONFIG: &[(&str, &str)] = &[
    ("dir-and-git.toml", "both dir and git are set"),
    ("duplicate-source-names.toml", "already used by source[0]"),
    ("git-path-escapes.toml", "path = \"../..\""),
    (
        "interval-a-number.toml",
        "interval = 30: not a duration string",
    ),
    (
        "interval-zero.toml",
        "interval = \"0s\": must be more than zero",
    ),
    ("invalid-toml.toml", "unclosed array table"),
    ("listen-invalid.toml", "listen = \"everywhere\""),
    ("no-source.toml", "no [[source]] table"),
    ("request-timeout-words.toml", "request_timeout = \"soon\""),
    ("source-name-invalid.toml", "not a DNS label"),
    ("unknown-key.toml", "unknown field `intervall`"),
    (
        "wrong-type.toml",
        "invalid type: string \"yes\", expected a boolean",
    ),
];

/// Kinds a bad case could have written into the namespace.
const KINDS: &str = "configmaps,secrets,serviceaccounts,services,deployments,jobs,cronjobs,\
                     rolebindings,ingresses,persistentvolumeclaims";

fn corpus(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .expect("read the corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.ends_with("README.md"))
        .collect();
    files.sort();
    files
}

fn name_of(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Everything in the namespace, and the cluster-scoped objects the corpus names.
fn snapshot(env: &TestEnv) -> BTreeSet<String> {
    let template = "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}";
    let mut objects: BTreeSet<String> = env
        .kubectl(&["get", KINDS, "-n", &env.ns, "-o", template])
        .lines()
        .map(str::to_string)
        .collect();
    let roles = env.kubectl(&["get", "clusterroles", "-o", "name"]);
    objects.extend(
        roles
            .lines()
            .filter(|l| l.contains("converge-bad"))
            .map(str::to_string),
    );
    objects
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_bad_manifest_is_refused_clearly_and_writes_nothing() {
    let env = TestEnv::new("bad-input");
    let files = corpus("tests/fixtures/bad");
    let listed: BTreeSet<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    let found: BTreeSet<String> = files.iter().map(|f| name_of(f)).collect();
    let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, listed, "the corpus and EXPECTED differ");
    let before = snapshot(&env);
    for file in &files {
        let name = name_of(file);
        let out = env
            .converge_command()
            .arg("apply")
            .arg(file)
            .args(["-n", &env.ns, "--name", &env.ns, "--request-timeout", "20s"])
            .output()
            .expect("run converge apply");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}:\n{text}");
        let at_line = format!("{}:", file.display());
        let located = text
            .match_indices(&at_line)
            .any(|(i, m)| text[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(located, "{name}: no file:line in\n{text}");
        let (_, expected) = EXPECTED.iter().find(|(f, _)| *f == name).expect("listed");
        let expected = expected.replace("{ns}", &env.ns);
        assert!(
            text.contains(&expected),
            "{name}: {expected:?} not in\n{text}"
        );
        assert!(!text.contains("panicked"), "{name}:\n{text}");
        assert_eq!(snapshot(&env), before, "{name} wrote to the cluster");
    }
    let parent = format!("converge-{}", env.ns);
    let out = env.kubectl_output(&["get", "configmap", &parent, "-n", &env.ns], None);
    assert!(!out.status.success(), "an ApplySet parent was written");
    println!("{} bad manifests refused, nothing written", files.len());
}

#[test]
fn every_bad_config_is_refused_with_the_key_named() {
    let env = TestEnv::new("bad-config");
    let files = corpus("tests/fixtures/bad/config");
    assert_eq!(files.len(), EXPECTED_CONFIG.len(), "{files:?}");
    for file in &files {
        let name = name_of(file);
        let out = env
            .converge_command()
            .arg("run")
            .arg("--config")
            .arg(file)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("run converge run");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}:\n{text}");
        assert!(
            text.contains(&name),
            "{name}: the file is not named in\n{text}"
        );
        let (_, expected) = EXPECTED_CONFIG
            .iter()
            .find(|(f, _)| *f == name)
            .unwrap_or_else(|| panic!("{name} is not in EXPECTED_CONFIG"));
        assert!(
            text.contains(expected),
            "{name}: {expected:?} not in\n{text}"
        );
    }
}

/// The write requests a daemon sent: applies and deletes (creates are its Events).
fn writes(daemon: &Daemon) -> f64 {
    ["apply", "delete"]
        .iter()
        .map(|verb| daemon.metric(&format!("converge_api_requests_total{{verb=\"{verb}\"}}")))
        .sum()
}

/// Puts `case` into the source as `bad.<ext>` in one rename, then removes the
/// previous case's file if its name differs (a JSON case after a YAML one).
fn swap_in(source: &Path, case: &Path, previous: Option<PathBuf>) -> PathBuf {
    let ext = case.extension().and_then(|e| e.to_str()).unwrap_or("yaml");
    let target = source.join(format!("bad.{ext}"));
    let staged = source.with_extension("staged");
    std::fs::copy(case, &staged).expect("stage the case");
    std::fs::rename(&staged, &target).expect("swap the case in");
    if let Some(previous) = previous.filter(|p| *p != target) {
        std::fs::remove_file(previous).expect("remove the previous case");
    }
    target
}

/// The revision `/status` reports for a flat directory of manifests, as
/// `source::dir::revision` (crate-private) computes it: `dir:` and the first 12
/// hex digits of a SHA-256 over each file's name and contents, each after its
/// length (little-endian u64), in name order. The test checks it against the
/// daemon's first revision before relying on it.
fn dir_revision(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the source directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).expect("read a manifest");
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(&bytes);
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("dir:{hex}")
}

/// The daemon's side of the corpus: one daemon on a directory source with a good
/// revision applied, each bad manifest swapped in as the next revision. Each must
/// fail with the file and line (and what is wrong) in /status, keep the good
/// revision applied, and send no write. The Git cases (an unreachable remote, a
/// rejected password, a broken commit after a good one) are daemon_git.rs's; a
/// rewritten history is source_git.rs's (the daemon follows a force-push).
#[test]
fn every_bad_manifest_fails_its_revision_in_the_daemon_and_the_good_one_stays() {
    let env = TestEnv::new("bad-daemon");
    let source = Manifests::with("good.yaml", &configmap("good", "v1"));
    let config = dir_config(source.path(), "1h", Drift::Heal);
    let daemon = Daemon::start(&env, &config, &[]);
    daemon.wait_ready(Duration::from_secs(30));
    let synced = |s: &Value| s["result"] == "synced" && s["revision"].is_string();
    let good = eventually(Duration::from_secs(30), || {
        let status = daemon.source();
        synced(&status).then(|| status["revision"].clone())
    })
    .expect("the good revision is applied")
    .value;
    assert_eq!(
        good,
        dir_revision(source.path()).as_str(),
        "the test's copy of the directory revision (source/dir.rs) is out of date"
    );
    let before = snapshot(&env);
    let writes_before = writes(&daemon);
    let started = Instant::now();
    let mut previous = None;
    for case in corpus("tests/fixtures/bad") {
        let name = name_of(&case);
        let target = swap_in(source.path(), &case, previous.take());
        let file = name_of(&target);
        let (_, expected) = EXPECTED.iter().find(|(f, _)| *f == name).expect("listed");
        let expected = expected.replace("{ns}", &env.ns);
        // This case's own revision: the previous case's error is still in /status
        // until the daemon has tried this one.
        let revision = dir_revision(source.path());
        let failed = eventually(Duration::from_secs(20), || {
            let status = daemon.source();
            let error = status["error"].as_str().unwrap_or_default().to_string();
            let this = status["attemptedRevision"] == revision.as_str();
            (this && status["result"] == "failed").then_some(error)
        });
        let Some(failed) = failed else {
            panic!(
                "{name}: revision {revision} never failed: {:#}",
                daemon.source()
            );
        };
        let error = failed.value;
        assert!(
            error.contains(&expected),
            "{name}: revision {revision} failed without saying {expected:?}: {error}"
        );
        let located = error
            .match_indices(&format!("{file}:"))
            .any(|(i, m)| error[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(located, "{name}: no {file}:LINE in {error}");
        assert_eq!(
            daemon.source()["revision"],
            good,
            "{name}: the good revision left"
        );
        assert_eq!(writes(&daemon), writes_before, "{name}: the daemon wrote");
        previous = Some(target);
    }
    println!("{:?} for the corpus in the daemon", started.elapsed());
    assert_eq!(snapshot(&env), before, "the corpus changed the namespace");
    assert_eq!(env.configmap_value("good").as_deref(), Some("v1"));
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());

    // Without the bad file, the good revision is back, and still nothing is written.
    std::fs::remove_file(previous.expect("a case ran")).expect("remove the last case");
    let back = eventually(Duration::from_secs(20), || synced(&daemon.source()));
    assert!(back.is_some(), "{:#}", daemon.source());
    assert_eq!(
        snapshot(&env),
        before,
        "the good revision rewrote its objects"
    );
}
