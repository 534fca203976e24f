//! No Secret value reaches any output: the values of every Secret under
//! `tests/fixtures/` (plain, base64, line by line), plus a drifted value, are
//! grepped for in every channel converge has: stdout and stderr at `-vvv` of
//! `diff` and `apply` (text and JSON, a changed Secret's diff, the errors of
//! Secrets the server rejects or that do not parse), the daemon's JSON logs at
//! trace level, `/status`, `/metrics`, `converge status`, and the Events it posts.

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, eventually, repo_root};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
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
                    let decoded = STANDARD.decode(value.trim()).ok();
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
fn add_markers(value: &str, markers: &mut BTreeSet<String>) {
    let mut texts: Vec<String> = vec![value.to_string()];
    texts.extend(value.lines().map(|l| l.trim().to_string()));
    texts.extend(fixture_words(value));
    for text in texts.into_iter().filter(|t| t.len() >= 12) {
        markers.insert(STANDARD_NO_PAD.encode(&text));
        markers.insert(text);
    }
}

/// One channel's text, for the report of a leak.
struct Channel {
    name: String,
    text: String,
}

fn assert_no_marker(channels: &[Channel], markers: &BTreeSet<String>) {
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
    let out = env
        .converge_command()
        .args(args)
        .args(["-n", &env.ns, "--name", &env.ns])
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
