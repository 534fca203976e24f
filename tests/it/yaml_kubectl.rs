//! YAML read exactly as kubectl reads it: a differential test against the pinned
//! kubectl, the `defaultMode: 0755` round trip, and bounded input.
//!
//! Every file under `tests/fixtures/yaml-quirks/` exercises one quirk of YAML as
//! sigs.k8s.io/yaml (go-yaml v2, YAML 1.1) reads it. Each is read by converge's
//! library and by `kubectl create --dry-run=client -o json -f FILE` (the oracle): both
//! must give the same objects, or both must reject the file for the same reason
//! ([`SAME_REASON`]; converge naming the file and a line). The fixture's first
//! comment says what the quirk is.

use crate::common::{Manifests, TestEnv, assert_success, repo_root};
use converge::manifest::{self, ManifestError};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one reader made of a file.
#[derive(Debug)]
enum Reading {
    Objects(Vec<Value>),
    Rejected(String),
}

impl Reading {
    /// The objects as JSON, or the whole rejection.
    fn detail(&self) -> String {
        match self {
            Reading::Objects(objects) => format!("read {}", Value::Array(objects.clone())),
            Reading::Rejected(message) => format!("rejected: {message}"),
        }
    }

    fn summary(&self) -> String {
        match self {
            Reading::Objects(objects) => format!("{} object(s)", objects.len()),
            Reading::Rejected(message) => {
                let first = message.lines().next().unwrap_or_default();
                let short: String = first.chars().take(70).collect();
                format!("rejected: {short}")
            }
        }
    }
}

fn quirk_files() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/fixtures/yaml-quirks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read tests/fixtures/yaml-quirks")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

/// converge's reading; a rejection must name the file and a line in it.
fn converge_reading(file: &Path) -> Result<Reading, String> {
    match manifest::load(&[file.to_path_buf()]) {
        Ok(manifests) => {
            let bodies = manifests.into_iter().map(|m| Value::Object(m.body));
            Ok(Reading::Objects(bodies.map(api_server_numbers).collect()))
        }
        Err(ManifestError::Invalid(problems)) => {
            let located = problems
                .iter()
                .all(|p| p.origin.file == file && p.origin.line >= 1);
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            if located {
                Ok(Reading::Rejected(text.join("\n")))
            } else {
                Err(format!(
                    "rejected without file and line: {}",
                    text.join("; ")
                ))
            }
        }
        Err(other) => Err(format!("I/O error: {other}")),
    }
}

/// kubectl's reading, with the namespace it fills in (`-n ns`) taken out again where
/// converge's object has none: converge fills it in later, from discovery.
fn kubectl_reading(env: &TestEnv, file: &Path) -> Reading {
    let path = file.to_str().expect("UTF-8 path");
    let args = [
        "create",
        "--dry-run=client",
        "-o",
        "json",
        "-n",
        &env.ns,
        "-f",
        path,
    ];
    let out = env.kubectl_output(&args, None);
    if !out.status.success() {
        return Reading::Rejected(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let stream = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let mut objects = Vec::new();
    for value in stream {
        let value = value.expect("kubectl -o json prints JSON");
        match value {
            Value::Object(mut list) if list.get("kind") == Some(&"List".into()) => {
                if let Some(Value::Array(items)) = list.remove("items") {
                    objects.extend(items);
                }
            }
            other => objects.push(other),
        }
    }
    let objects = objects.into_iter().map(|o| without_namespace(o, &env.ns));
    Reading::Objects(objects.map(api_server_numbers).collect())
}

fn without_namespace(mut object: Value, ns: &str) -> Value {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        if meta.get("namespace").and_then(Value::as_str) == Some(ns) {
            meta.remove("namespace");
        }
    }
    object
}

/// Numbers as the API server decodes JSON (k8s.io/apimachinery/pkg/util/json): an
/// integer that fits int64 is an integer, anything else a float64. `1` and `1.0` stay
/// different (an int32 field refuses `1.0`); `12345678901234567890` and
/// `1.2345678901234567e19` are the same float.
fn api_server_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.as_i64().is_none() => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(api_server_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, api_server_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

/// For each file both readers reject: what converge's error and what kubectl's
/// must say, naming the same construct or field (in words of their own where
/// they differ). Both rejecting for different reasons is a mismatch too.
const SAME_REASON: &[(&str, &str, &str)] = &[
    (
        "alias-recursive.yaml",
        "anchor 'x' value contains itself",
        "anchor 'x' value contains itself",
    ),
    (
        "alias-unknown.yaml",
        "unknown anchor 'nope' referenced",
        "unknown anchor 'nope' referenced",
    ),
    (
        "control-character.yaml",
        "control characters are not allowed",
        "control characters are not allowed",
    ),
    (
        "directive.yaml",
        "did not find expected <document start>",
        "did not find expected <document start>",
    ),
    (
        "empty-flow-entries.yaml",
        "did not find expected node content",
        "did not find expected node content",
    ),
    (
        "escape-slash.yaml",
        "found unknown escape character",
        "found unknown escape character",
    ),
    (
        "float-inf.yaml",
        "at data.a: an infinity cannot be represented in JSON",
        "unsupported value: +Inf",
    ),
    (
        "float-nan.yaml",
        "at data.a: .nan cannot be represented in JSON",
        "unsupported value: NaN",
    ),
    (
        "float-negative-inf.yaml",
        "at data.a: an infinity cannot be represented in JSON",
        "unsupported value: -Inf",
    ),
    (
        "flow-question-mark.yaml",
        "did not find expected ','",
        "did not find expected ','",
    ),
    (
        "label-value-not-string.yaml",
        "metadata.annotations.port is a number",
        "metadata.annotations of type string",
    ),
    (
        "line-separators.yaml",
        "could not find expected ':'",
        "could not find expected ':'",
    ),
    (
        "long-simple-key.yaml",
        "mapping values are not allowed in this context",
        "mapping values are not allowed in this context",
    ),
    (
        "mapping-key.yaml",
        "at data: invalid map key: a sequence or mapping cannot be a key",
        "invalid map key: map[",
    ),
    (
        "merge-not-a-map.yaml",
        "map merge requires map or sequence of maps as the value",
        "map merge requires map or sequence of maps as the value",
    ),
    (
        "name-is-number.yaml",
        "metadata.name is a number",
        "metadata.name of type string",
    ),
    (
        "null-key.yaml",
        "at data: a null map key",
        "unsupported map key of type: %!s(<nil>)",
    ),
    (
        "reserved-indicators.yaml",
        "found character that cannot start any token",
        "found character that cannot start any token",
    ),
    (
        "separator-four-dashes.yaml",
        "invalid document separator `----`",
        "invalid Yaml document separator: -",
    ),
    (
        "separator-with-content.yaml",
        "invalid document separator `--- !!map`",
        "invalid Yaml document separator: !!map",
    ),
    (
        "sequence-key.yaml",
        "at data: invalid map key: a sequence or mapping cannot be a key",
        "invalid map key: []interface {}",
    ),
    (
        "tab-indentation.yaml",
        "found character that cannot start any token",
        "found character that cannot start any token",
    ),
    (
        "tag-directive.yaml",
        "did not find expected <document start>",
        "did not find expected <document start>",
    ),
    (
        "tag-float-as-int.yaml",
        "cannot decode !!float `1.5` as a !!int",
        "cannot decode !!float `1.5` as a !!int",
    ),
    (
        "tag-int-mismatch.yaml",
        "cannot decode !!str `abc` as a !!int",
        "cannot decode !!str `abc` as a !!int",
    ),
    (
        "uint64-key.yaml",
        "at data: the map key 18446744073709551615 is beyond int64",
        "unsupported map key of type: uint64",
    ),
];

/// Both rejected `name`: for the same reason, as [`SAME_REASON`] words it?
fn same_reason(name: &str, ours: &str, theirs: &str) -> Result<(), String> {
    let Some((_, converge_says, kubectl_says)) = SAME_REASON.iter().find(|(f, _, _)| *f == name)
    else {
        return Err(format!(
            "both reject it, for a reason SAME_REASON does not list:\n      \
             converge: {ours}\n      kubectl:  {theirs}"
        ));
    };
    if ours.contains(converge_says) && theirs.contains(kubectl_says) {
        return Ok(());
    }
    Err(format!(
        "both reject it, not both for the reason listed \
         (converge {converge_says:?}, kubectl {kubectl_says:?}):\n      \
         converge: {ours}\n      kubectl:  {theirs}"
    ))
}

fn verdict(
    name: &str,
    converge: &Result<Reading, String>,
    kubectl: &Reading,
) -> Result<(), String> {
    match (converge, kubectl) {
        (Err(why), _) => Err(why.clone()),
        (Ok(Reading::Rejected(ours)), Reading::Rejected(theirs)) => same_reason(name, ours, theirs),
        (Ok(Reading::Objects(ours)), Reading::Objects(theirs)) if ours == theirs => Ok(()),
        (Ok(Reading::Objects(ours)), Reading::Objects(theirs)) => Err(format!(
            "converge: {}\n      kubectl:  {}",
            Value::Array(ours.clone()),
            Value::Array(theirs.clone())
        )),
        (Ok(ours), theirs) => Err(format!(
            "converge {}\n      kubectl  {}",
            ours.detail(),
            theirs.detail()
        )),
    }
}

#[test]
fn yaml_quirks_read_as_kubectl_reads_them() {
    let env = TestEnv::new("yaml-quirks");
    let files = quirk_files();
    assert!(files.len() >= 40, "only {} quirk files", files.len());
    let mut table = String::new();
    let mut mismatches = Vec::new();
    let mut both_reject = Vec::new();
    for file in &files {
        let name = file.file_name().expect("file name").to_string_lossy();
        let ours = converge_reading(file);
        let theirs = kubectl_reading(&env, file);
        let shown = ours.as_ref().map_or_else(Clone::clone, Reading::summary);
        if let (Ok(Reading::Rejected(_)), Reading::Rejected(_)) = (&ours, &theirs) {
            both_reject.push(name.to_string());
        }
        let result = verdict(&name, &ours, &theirs);
        let mark = if result.is_ok() { "ok" } else { "MISMATCH" };
        let dir = format!("{}/", file.parent().expect("in a directory").display());
        let line = format!(
            "{mark:8} {name:36} converge: {shown:50} kubectl: {}",
            theirs.summary()
        );
        let _ = writeln!(table, "{}", line.replace(&dir, ""));
        if let Err(detail) = result {
            mismatches.push(format!("{name}:\n      {}", detail.replace(&dir, "")));
        }
    }
    println!("{table}");
    let stale: Vec<&str> = SAME_REASON
        .iter()
        .map(|(f, _, _)| *f)
        .filter(|f| !both_reject.iter().any(|b| b == f))
        .collect();
    assert!(
        stale.is_empty(),
        "SAME_REASON lists files not rejected by both: {stale:?}"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} quirk files are read differently from kubectl:\n{table}\n{}",
        mismatches.len(),
        files.len(),
        mismatches.join("\n")
    );
}

/// `defaultMode: 0755` (octal 493 for kubectl) applies, and the next diff is empty.
#[test]
fn octal_default_mode_applies_and_then_diffs_clean() {
    let env = TestEnv::new("yaml-octal");
    let fixture = repo_root().join("tests/fixtures/yaml-quirks/octal-default-mode.yaml");
    let text = std::fs::read_to_string(fixture).expect("read the fixture");
    let manifests = Manifests::with("deployment.yaml", &text);
    let run = |command: &str| {
        env.converge_command()
            .args([command, manifests.arg(), "-n", &env.ns, "--name", &env.ns])
            .output()
            .expect("run converge")
    };
    assert_success("converge apply", &run("apply"));
    let mode = env.kubectl(&[
        "get",
        "deployment",
        "octal-default-mode",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.spec.template.spec.volumes[0].configMap.defaultMode}",
    ]);
    assert_eq!(mode, "493", "0755 is octal 493 for kubectl");
    let diff = run("diff");
    assert_eq!(
        diff.status.code(),
        Some(0),
        "diff after apply must be empty:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
}

/// 100 000 nested brackets (a cheap denial of service on the daemon: 94 s before
/// the limit, in a debug build) are refused quickly, with the file named and what
/// to do; so are a JSON-looking file and block nesting.
#[test]
fn deeply_nested_input_is_rejected_quickly() {
    let depth = 100_000;
    let cases = [
        format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        format!("a: {}{}\n", "{".repeat(depth), "}".repeat(depth)),
        format!("{}{}\n", "[".repeat(depth), "]".repeat(depth)),
        format!("{}{}\n", "{".repeat(depth), "}".repeat(depth)),
        format!("{}x\n", "- ".repeat(depth)),
    ];
    for text in cases {
        let shown: String = text.chars().take(4).collect();
        let started = Instant::now();
        let result = manifest::parse_str(&text, Path::new("nested.yaml"));
        let took = started.elapsed();
        let err = result.expect_err("100 000 levels are refused");
        let message = err.to_string();
        assert!(
            message.starts_with("nested.yaml:1: ") && message.contains("more than 100 levels"),
            "the error names the file, the line and the nesting: {message}"
        );
        assert!(
            took < Duration::from_secs(1),
            "{shown}… took {took:?}, expected well under a second"
        );
        println!("{shown}…: rejected in {took:?}: {message}");
    }
}
