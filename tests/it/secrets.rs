//! No Secret value reaches any output: the values of every Secret under
//! `tests/fixtures/` (plain, base64, line by line), plus a drifted value, are
//! grepped for in every channel converge has: stdout and stderr at `-vvv` of
//! `diff` and `apply` (text and JSON, a changed Secret's diff, the errors of
//! Secrets the server rejects or that do not parse), the daemon's JSON logs at
//! trace level, `/status`, `/metrics`, `converge status`, and the Events it posts.
//! The same for rendered Secrets: a kustomize `secretGenerator` (literals and files)
//! and a Helm chart (`data` and `stringData`), changed so that their diffs show the
//! masked change, in a report-only daemon's `/status` too.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, eventually, repo_root};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SECRETS: &str = "tests/fixtures/secrets";
/// The value an out-of-band edit gives a Secret in the daemon's part.
const DRIFTED: &str = "fixture-drifted-value-6e0a";

/// Every text that would betray a Secret value of the fixtures.
fn secret_markers() -> BTreeSet<String> {
    let mut markers = BTreeSet::new();
    let mut files = Vec::new();
    collect_files(&repo_root().join("tests/fixtures"), &mut files);
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for value in secret_values(&text, file) {
            add_markers(&value, &mut markers);
        }
        // Values that no parser sees (a broken file, a rejected shape).
        if file.starts_with(repo_root().join(SECRETS)) {
            for word in fixture_words(&text) {
                add_markers(&word, &mut markers);
            }
        }
    }
    add_markers(DRIFTED, &mut markers);
    markers
}

fn collect_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read tests/fixtures")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// The values of the Secrets in a file's text (`data` decoded), read with
/// converge's own parser where it parses (it bounds what YAML may cost; the quirk
/// fixtures hold alias bombs).
fn secret_values(text: &str, file: &Path) -> Vec<String> {
    if !text.contains("Secret") {
        return Vec::new();
    }
    let Ok(manifests) = converge::manifest::parse_str(text, file) else {
        return Vec::new();
    };
    let mut values = Vec::new();
    for manifest in manifests.iter().filter(|m| m.kind == "Secret") {
        for (field, decode) in [("data", true), ("stringData", false)] {
            let Some(map) = manifest.body.get(field).and_then(Value::as_object) else {
                continue;
            };
            for value in map.values().filter_map(Value::as_str) {
                values.push(value.to_string());
                if decode {
                    // kustomize wraps long base64 over lines.
                    let compact: String = value.split_whitespace().collect();
                    let decoded = STANDARD.decode(compact).ok();
                    values.extend(decoded.map(|d| String::from_utf8_lossy(&d).into_owned()));
                }
            }
        }
    }
    values
}

/// The `fixture-…` words of a text, and of every base64 token in it.
fn fixture_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut scan = |text: &str| {
        let mut rest = text;
        while let Some(at) = rest.find("fixture-") {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            rest = &rest[at + word.len()..];
            words.push(word);
        }
    };
    scan(text);
    let tokens = text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c)));
    for token in tokens.filter(|t| t.len() >= 16) {
        if let Ok(bytes) = STANDARD.decode(token) {
            scan(&String::from_utf8_lossy(&bytes));
        }
    }
    words
}

/// A value, each line of it, its `fixture-…` words and their base64 forms.
pub fn add_markers(value: &str, markers: &mut BTreeSet<String>) {
    let mut texts: Vec<String> = vec![value.to_string()];
    texts.extend(value.lines().map(|l| l.trim().to_string()));
    texts.extend(fixture_words(value));
    for text in texts.into_iter().filter(|t| t.len() >= 12) {
        markers.insert(STANDARD_NO_PAD.encode(&text));
        markers.insert(text);
    }
}

/// One channel's text, for the report of a leak.
pub struct Channel {
    pub name: String,
    pub text: String,
}

/// Every file under `dir` (the daemon's state directory), read as text.
pub fn files_channel(dir: &Path, name: &str) -> Channel {
    let mut files = Vec::new();
    if dir.is_dir() {
        collect_files(dir, &mut files);
    }
    let text = files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    Channel {
        name: format!("{name} ({} files)", files.len()),
        text,
    }
}

pub fn assert_no_marker(channels: &[Channel], markers: &BTreeSet<String>) {
    for channel in channels {
        for marker in markers {
            assert!(
                !channel.text.contains(marker.as_str()),
                "a Secret value ({marker:?}) leaked into {}:\n{}",
                channel.name,
                channel.text
            );
        }
    }
}

fn run(env: &TestEnv, args: &[&str], code: i32, channels: &mut Vec<Channel>) {
    run_as(env, &env.ns, args, code, channels);
}

/// [`run`] for the ApplySet `name`.
pub fn run_as(env: &TestEnv, name: &str, args: &[&str], code: i32, channels: &mut Vec<Channel>) {
    let out = env
        .converge_command()
        .args(args)
        .args(["-n", &env.ns, "--name", name])
        .output()
        .expect("run converge");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "converge {args:?}:\n{stdout}{stderr}"
    );
    channels.push(Channel {
        name: format!("stdout of converge {args:?}"),
        text: stdout,
    });
    channels.push(Channel {
        name: format!("stderr of converge {args:?}"),
        text: stderr,
    });
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(SECRETS).join(name)).expect("read a fixture")
}

#[test]
fn no_secret_value_reaches_any_output() {
    let markers = secret_markers();
    assert!(markers.len() >= 20, "too few markers: {markers:?}");
    let env = TestEnv::new("secrets-everywhere");
    let dir = Manifests::with("secrets.yaml", &fixture("secrets.yaml"));
    let path = dir.arg();
    let mut channels = Vec::new();

    run(&env, &["-vvv", "diff", path], 1, &mut channels);
    run(&env, &["-vvv", "apply", path], 0, &mut channels);
    run(
        &env,
        &["-vvv", "apply", path, "-o", "json"],
        0,
        &mut channels,
    );
    // A changed Secret: the diff names the key, never a value.
    let changed = fixture("secrets.yaml").replace("fixture-db-password-91c4", DRIFTED);
    dir.write("secrets.yaml", &changed);
    run(&env, &["-vvv", "diff", path], 1, &mut channels);
    run(
        &env,
        &["-vvv", "diff", path, "-o", "json"],
        1,
        &mut channels,
    );
    let shown = &channels[channels.len() - 4].text;
    assert!(
        shown.contains("password"),
        "the changed key is shown:\n{shown}"
    );
    dir.write("secrets.yaml", &fixture("secrets.yaml"));
    // Secrets the server rejects, and one that does not parse.
    let rejected = Manifests::with("rejected.yaml", &fixture("rejected.yaml"));
    run(&env, &["-vvv", "apply", rejected.arg()], 2, &mut channels);
    let broken = Manifests::with("broken.yaml", &fixture("broken.yaml"));
    run(&env, &["-vvv", "apply", broken.arg()], 2, &mut channels);

    daemon_channels(&env, &dir, &mut channels);
    assert_no_marker(&channels, &markers);
}

/// The daemon's part: applies the Secrets, heals a drifted value, fails a revision
/// with rejected Secrets; returns its logs, endpoints and Events.
fn daemon_channels(env: &TestEnv, dir: &Manifests, channels: &mut Vec<Channel>) {
    let config = dir_config(dir.path(), "1h", Drift::Heal);
    let args = ["-vv", "--log-format", "json"];
    let daemon = Daemon::start(env, &config, &args);
    daemon.wait_ready(Duration::from_secs(30));

    let patch = serde_json::json!({"stringData": {"password": DRIFTED}}).to_string();
    env.kubectl(&["patch", "secret", "database", "-n", &env.ns, "-p", &patch]);
    let encoded = STANDARD.encode("fixture-db-password-91c4");
    let healed = eventually(Duration::from_secs(20), || {
        let jsonpath = "jsonpath={.data.password}";
        env.kubectl(&["get", "secret", "database", "-n", &env.ns, "-o", jsonpath]) == encoded
    });
    assert!(healed.is_some(), "drift not healed:\n{}", daemon.log());

    dir.write("rejected.yaml", &fixture("rejected.yaml"));
    let failed = eventually(Duration::from_secs(30), || {
        daemon.source()["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad-key"))
    });
    assert!(
        failed.is_some(),
        "no failed revision:\n{}",
        daemon.get("/status").1
    );

    let status = env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("run converge status");
    let events = env.kubectl(&["get", "events", "-n", &env.ns, "-o", "json"]);
    assert!(events.contains("converge"), "no Events posted:\n{events}");
    for (name, text) in [
        ("the daemon's JSON log", daemon.log()),
        ("/status", daemon.get("/status").1),
        ("/metrics", daemon.metrics()),
        (
            "converge status",
            String::from_utf8_lossy(&status.stdout).into(),
        ),
        ("Events", events),
    ] {
        channels.push(Channel {
            name: name.to_string(),
            text,
        });
    }
}

/// The value the rendered Secrets' fixture values are changed to.
const CHANGED: &str = "fixture-rendered-changed-1f7d";

/// A copy of the fixture directory `secrets/<name>` to change.
fn copy_fixture(name: &str) -> Manifests {
    let from = repo_root().join(SECRETS).join(name);
    let copy = Manifests::new();
    let mut files = Vec::new();
    collect_files(&from, &mut files);
    for file in files {
        let relative = file.strip_prefix(&from).expect("a file of the fixture");
        let text = std::fs::read_to_string(&file).expect("read a fixture file");
        copy.write(relative.to_str().expect("a UTF-8 name"), &text);
    }
    copy
}

/// Replaces `from` with `to` in `file` of `dir`, which must contain it.
fn replace(dir: &Manifests, file: &str, from: &str, to: &str) {
    let text = std::fs::read_to_string(dir.path().join(file)).expect("read a fixture file");
    assert!(text.contains(from), "{file} has no {from:?}");
    dir.write(file, &text.replace(from, to));
}

/// The Secret values `command` (kustomize build, helm template) renders, as markers.
fn rendered_markers(mut command: Command, markers: &mut BTreeSet<String>) {
    let out = command.output().expect("run the rendering tool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = secret_values(&text, Path::new("rendered.yaml"));
    assert!(
        values.len() >= 3,
        "{command:?} rendered too few values: {text}"
    );
    for value in values {
        add_markers(&value, markers);
    }
}

/// The Secret values both roots render now.
fn markers_of(kustomization: &Path, chart: &Path, markers: &mut BTreeSet<String>) {
    let mut kustomize = Command::new("kustomize");
    kustomize.arg("build").arg(kustomization);
    rendered_markers(kustomize, markers);
    let mut helm = Command::new("helm");
    helm.args(["template", "credentials"]).arg(chart);
    rendered_markers(helm, markers);
}

/// The name kustomize gives the Secret generated from literals (its hash suffixed).
fn generated_name(kustomization: &Path) -> String {
    let out = Command::new("kustomize")
        .arg("build")
        .arg(kustomization)
        .output()
        .expect("run kustomize");
    let text = String::from_utf8_lossy(&out.stdout);
    let manifests = converge::manifest::parse_str(&text, Path::new("rendered.yaml"))
        .expect("kustomize's output parses");
    manifests
        .iter()
        .filter_map(|m| m.body["metadata"]["name"].as_str())
        .find(|name| name.starts_with("generated-"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no generated Secret in {text}"))
}

/// The `data` value of Secret `name` (base64), empty when there is none.
fn stored(env: &TestEnv, name: &str, key: &str) -> String {
    let key = key.replace('.', "\\.");
    let jsonpath = format!("jsonpath={{.data.{key}}}");
    let out = env.kubectl_output(
        &["get", "secret", name, "-n", &env.ns, "-o", &jsonpath],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn no_rendered_secret_value_reaches_any_output() {
    let env = TestEnv::new("secrets-rendered");
    let kustomization = copy_fixture("kustomize");
    let chart = copy_fixture("chart");
    let mut markers = secret_markers();
    markers_of(kustomization.path(), chart.path(), &mut markers);
    let roots = [
        (format!("{}-k", env.ns), &kustomization),
        (format!("{}-h", env.ns), &chart),
    ];
    let mut channels = Vec::new();
    for (name, root) in &roots {
        run_as(&env, name, &["-vvv", "diff", root.arg()], 1, &mut channels);
        run_as(&env, name, &["-vvv", "apply", root.arg()], 0, &mut channels);
        let json = ["-vvv", "apply", root.arg(), "-o", "json"];
        run_as(&env, name, &json, 0, &mut channels);
    }
    let applied = stored(&env, "from-files", "settings.ini");
    assert!(!applied.is_empty(), "the generated Secret was not applied");

    // Every rendered value changes: the literal (a new hashed Secret), a file, and
    // the chart's `data` and `stringData`.
    replace(
        &kustomization,
        "kustomization.yaml",
        "fixture-kustomize-literal-5d21",
        CHANGED,
    );
    replace(
        &kustomization,
        "files/settings.ini",
        "fixture-kustomize-file-ini-7b40",
        CHANGED,
    );
    replace(
        &chart,
        "values.yaml",
        "fixture-helm-data-password-4e6b",
        CHANGED,
    );
    replace(
        &chart,
        "values.yaml",
        "fixture-helm-stringdata-key-a913",
        &format!("{CHANGED}-key"),
    );
    markers_of(kustomization.path(), chart.path(), &mut markers);
    add_markers(CHANGED, &mut markers);
    for ((name, root), keys) in roots
        .iter()
        .zip([&["settings.ini"][..], &["password", "api-key"]])
    {
        run_as(&env, name, &["-vvv", "diff", root.arg()], 1, &mut channels);
        let shown = channels[channels.len() - 2].text.clone();
        for key in keys.iter().chain(&["*** (before)", "*** (after)"]) {
            assert!(
                shown.contains(key),
                "the diff does not show {key:?}:\n{shown}"
            );
        }
        let json = ["-vvv", "diff", root.arg(), "-o", "json"];
        run_as(&env, name, &json, 1, &mut channels);
    }
    // The literal's new value is a new Secret, its name kustomize's hash of it.
    let generated = generated_name(kustomization.path());
    let created = format!("Secret/{}/{generated} created", env.ns);
    let shown = &channels[channels.len() - 8].text;
    assert!(
        shown.contains(&created),
        "no {created:?} in the diff:\n{shown}"
    );

    rendered_daemon_channels(&env, &roots, &mut channels);
    assert_no_marker(&channels, &markers);
}

/// The daemon's part for rendered roots: report-only, its `/status` shows the masked
/// diffs; then healing, it applies them and posts Events.
fn rendered_daemon_channels(
    env: &TestEnv,
    roots: &[(String, &Manifests); 2],
    channels: &mut Vec<Channel>,
) {
    let config = |self_heal: bool| {
        let mut text = "state_dir = \"{state}\"\n".to_owned();
        for (name, root) in roots {
            text.push_str(&format!(
                "\n[[source]]\nname = \"{name}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n\
                 interval = \"1h\"\nprune = true\nself_heal = {self_heal}\n",
                root.path().display()
            ));
        }
        text
    };
    let args = ["-vv", "--log-format", "json"];
    let mut report = Daemon::start(env, &config(false), &args);
    report.wait_ready(Duration::from_secs(60));
    let drifted = eventually(Duration::from_secs(60), || {
        let status = report.status();
        let sources = status["sources"].as_array().cloned().unwrap_or_default();
        (sources.len() == 2 && sources.iter().all(|s| s["result"] == "drifted")).then_some(status)
    });
    let status = drifted
        .unwrap_or_else(|| panic!("never drifted: {}", report.get("/status").1))
        .value
        .to_string();
    for shown in [
        "settings.ini",
        "password",
        "api-key",
        "*** (before)",
        "*** (after)",
    ] {
        assert!(
            status.contains(shown),
            "/status does not show {shown:?}: {status}"
        );
    }
    channels.extend(daemon_texts(env, &report, "the report-only daemon"));
    let (stopped, _) = report.terminate();
    assert!(stopped.success(), "{}", report.log());

    let heal = Daemon::start(env, &config(true), &args);
    heal.wait_ready(Duration::from_secs(60));
    let changed = STANDARD.encode(CHANGED);
    let ini = std::fs::read(roots[0].1.path().join("files/settings.ini")).expect("read the ini");
    let ini = STANDARD.encode(ini);
    let applied = eventually(Duration::from_secs(60), || {
        stored(env, "chart-credentials", "password") == changed
            && stored(env, "from-files", "settings.ini") == ini
            && heal.status()["sources"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["result"] == "synced"))
    });
    assert!(
        applied.is_some(),
        "the changes were not applied: {} {}\n{}",
        stored(env, "from-files", "settings.ini"),
        heal.get("/status").1,
        heal.log()
    );
    let events = env.kubectl(&["get", "events", "-n", &env.ns, "-o", "json"]);
    assert!(events.contains("Applied"), "no Events posted:\n{events}");
    channels.extend(daemon_texts(env, &heal, "the healing daemon"));
    channels.push(Channel {
        name: "Events".into(),
        text: events,
    });
}

/// A daemon's log, `/status`, `/metrics` and `converge status`.
pub fn daemon_texts(env: &TestEnv, daemon: &Daemon, which: &str) -> Vec<Channel> {
    let status = env
        .converge_command()
        .args(["status", "--addr", &daemon.addr])
        .output()
        .expect("run converge status");
    [
        ("JSON log", daemon.log()),
        ("/status", daemon.get("/status").1),
        ("/metrics", daemon.metrics()),
        (
            "converge status",
            String::from_utf8_lossy(&status.stdout).into(),
        ),
    ]
    .into_iter()
    .map(|(name, text)| Channel {
        name: format!("{name} of {which}"),
        text,
    })
    .collect()
}
