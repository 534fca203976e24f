//! One owner per object (#24, point 4), against the real control plane: two
//! sources of one daemon that both declare a ConfigMap no longer fight over it.
//! Declared the same, the second reports it as `shared`; declared differently,
//! the second's revision fails naming both sources and the file. Either way the
//! object is written once, which its resourceVersions show over 15 s (kubectl's
//! watch, not converge's word). `converge.dev/adopt: allowed` moves it once.

use crate::common::daemon::Daemon;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ConfigMap both sources declare.
const COMMON: &str = "common";

/// A daemon with sources `first` and `second`, each a directory, both applying
/// into the test's namespace; resyncs every 2 s, every other one full.
fn two_sources(first: &Manifests, second: &Manifests) -> String {
    let source = |name: &str, dir: &Manifests| {
        format!(
            "[[source]]\nname = \"{name}\"\ndir = \"{}\"\nnamespace = \"{{ns}}\"\n\
             interval = \"2s\"\nfull_resync_every = 2\n",
            dir.path().display()
        )
    };
    // The second waits for the first, so the first is the owner.
    format!(
        "state_dir = \"{{state}}\"\n\n{}\n{}depends_on = [\"first\"]\n",
        source("first", first),
        source("second", second)
    )
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn object_of<'a>(source: &'a Value, name: &str) -> Option<&'a Value> {
    let objects = source["objects"].as_array()?;
    objects
        .iter()
        .find(|o| o["object"].as_str().is_some_and(|n| n.ends_with(name)))
}

/// The resourceVersions of the ConfigMap as kubectl's watch sees them.
struct Versions {
    child: Child,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Versions {
    /// Watches the namespace's ConfigMaps; open once its first list printed the
    /// namespace's own `kube-root-ca.crt`.
    fn watch(env: &TestEnv) -> Versions {
        let columns = "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion,\
                       VALUE:.data.value";
        let args = [
            "get",
            "configmaps",
            "-n",
            &env.ns,
            "--watch",
            "--no-headers",
            "-o",
            columns,
        ];
        let mut child = env
            .kubectl_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl get --watch");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("versions").push(line);
            }
        });
        let versions = Versions { child, seen };
        let open = eventually(Duration::from_secs(20), || {
            let lines = versions.seen.lock().expect("versions");
            lines.iter().any(|l| l.starts_with("kube-root-ca.crt"))
        });
        assert!(open.is_some(), "the ConfigMap watch did not start");
        versions
    }

    /// The distinct (resourceVersion, value) of the common ConfigMap.
    fn distinct(&self) -> BTreeSet<String> {
        let lines = self.seen.lock().expect("versions");
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(COMMON))
            .filter(|rest| rest.starts_with(' '))
            .map(|rest| rest.trim().to_string())
            .collect()
    }
}

impl Drop for Versions {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon and waits until both sources have reconciled at least once.
fn start(env: &TestEnv, first: &Manifests, second: &Manifests) -> Daemon {
    let daemon = Daemon::start(env, &two_sources(first, second), &[]);
    let both = eventually(Duration::from_secs(30), || {
        let status = daemon.status();
        ["first", "second"]
            .iter()
            .all(|name| source(&status, name)["reconciles"].as_u64().unwrap_or(0) >= 2)
    });
    assert!(
        both.is_some(),
        "the sources did not reconcile:\n{}",
        daemon.log()
    );
    daemon
}

#[test]
fn an_object_two_sources_declare_the_same_is_shared_and_written_once() {
    let env = TestEnv::new("own-shared");
    let first = Manifests::with("cm.yaml", &configmap(COMMON, "same"));
    let second = Manifests::with("cm.yaml", &configmap(COMMON, "same"));
    second.write("own.yaml", &configmap("second-only", "x"));
    let versions = Versions::watch(&env);
    let daemon = start(&env, &first, &second);
    std::thread::sleep(Duration::from_secs(15));
    let status = daemon.status();
    let shared = object_of(source(&status, "second"), COMMON).cloned();
    let shared = shared.unwrap_or_else(|| panic!("no {COMMON} in second: {status:#}"));
    assert_eq!(shared["state"], "shared", "{status:#}");
    let reason = shared["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("owned by source \"first\""), "{reason}");
    assert_eq!(source(&status, "second")["result"], "synced", "{status:#}");
    assert_eq!(source(&status, "first")["result"], "synced", "{status:#}");
    assert_eq!(
        versions.distinct().len(),
        1,
        "written more than once: {:?}",
        versions.distinct()
    );
    let metric = r#"converge_foreign_objects{source="second",claim="shared"}"#;
    assert_eq!(daemon.metric(metric), 1.0);
    assert_eq!(env.configmap_value("second-only").as_deref(), Some("x"));
}

#[test]
fn an_object_declared_differently_fails_the_second_source_and_adopt_moves_it_once() {
    let env = TestEnv::new("own-conflict");
    let first = Manifests::with("cm.yaml", &configmap(COMMON, "first"));
    let second = Manifests::with("cm.yaml", &configmap(COMMON, "second"));
    let versions = Versions::watch(&env);
    let daemon = start(&env, &first, &second);
    std::thread::sleep(Duration::from_secs(15));
    let status = daemon.status();
    let failed = source(&status, "second");
    assert_eq!(failed["result"], "failed", "{status:#}");
    let error = failed["error"].as_str().unwrap_or_default();
    for needle in [
        "belong to another source; nothing was written",
        "cm.yaml:1",
        "owned by source \"first\"",
        "\"second\" declares it differently (data.value)",
        "converge.dev/adopt: allowed",
    ] {
        assert!(error.contains(needle), "{needle:?} not in: {error}");
    }
    assert_eq!(env.configmap_value(COMMON).as_deref(), Some("first"));
    assert_eq!(
        versions.distinct().len(),
        1,
        "written more than once: {:?}",
        versions.distinct()
    );
    let metric = r#"converge_foreign_objects{source="second",claim="conflict"}"#;
    assert_eq!(daemon.metric(metric), 1.0);

    // Moved once: then the first source refuses it in turn, and writes nothing.
    let adopting = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: common\n  \
                    annotations: {converge.dev/adopt: allowed}\ndata: {value: second}\n";
    second.write("cm.yaml", adopting);
    let moved = eventually(Duration::from_secs(20), || {
        env.configmap_value(COMMON).as_deref() == Some("second")
    });
    assert!(moved.is_some(), "not adopted:\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(env.configmap_value(COMMON).as_deref(), Some("second"));
    let values: BTreeSet<String> = versions
        .distinct()
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        versions.distinct().len(),
        2,
        "not moved exactly once: {:?}",
        versions.distinct()
    );
    assert_eq!(values, BTreeSet::from(["first".into(), "second".into()]));
    let status = daemon.status();
    let error = source(&status, "first")["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("owned by source \"second\""), "{status:#}");
}

#[test]
fn two_cli_applysets_share_or_refuse_one_object_and_adopt_moves_it() {
    let env = TestEnv::new("own-cli");
    let a = Manifests::with("cm.yaml", &configmap(COMMON, "same"));
    let b = Manifests::with("cm.yaml", &configmap(COMMON, "same"));
    let apply = |dir: &Manifests, name: &str, extra: &[&str]| {
        let args = ["apply", dir.arg(), "--namespace", &env.ns, "--name", name];
        let out = env
            .converge_command()
            .args(args)
            .args(extra)
            .output()
            .expect("run converge");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    assert_eq!(apply(&a, "app-a", &[]).0, Some(0));
    let (code, text) = apply(&b, "app-b", &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("shared (owned by source \"app-a\""), "{text}");
    assert!(text.contains("1 shared"), "{text}");

    b.write("cm.yaml", &configmap(COMMON, "other"));
    let (code, text) = apply(&b, "app-b", &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("\"app-b\" declares it differently"), "{text}");
    assert_eq!(env.configmap_value(COMMON).as_deref(), Some("same"));

    let (code, text) = apply(&b, "app-b", &["--adopt"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(env.configmap_value(COMMON).as_deref(), Some("other"));
    let (code, text) = apply(&a, "app-a", &["--prune"]);
    assert_eq!(
        code,
        Some(2),
        "the former owner neither writes nor prunes it: {text}"
    );
    assert_eq!(env.configmap_value(COMMON).as_deref(), Some("other"));
}
