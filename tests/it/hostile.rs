//! Hostile input never panics and never hangs, and what is read keeps its
//! promises: property tests (proptest) feed the manifest parser, the manifest
//! loader (raw bytes, invalid UTF-8 included), the kubeconfig loader, the config
//! loader and the webhook checks arbitrary bytes and structured mutations of real
//! inputs. Each call must answer (`Ok` or an error) within a bound, run on a
//! thread of its own so that a hang fails at the bound instead of stalling the
//! test; and each answer must hold: accepted manifests read back the same from
//! their JSON, refusals name the file and a line in it, the loader reads a file as
//! the parser reads its text, a config accepted has sources with unique names,
//! errors name the file. The known_hosts and quantity parsers have theirs in their
//! modules (they are crate-private). None of these needs the control plane.

use converge::config::Config;
use converge::kube::ClusterConfig;
use converge::manifest::{Manifest, ManifestError};
use converge::source::{verify_github_signature, verify_token};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// What one call may take in a debug build on a busy 2-core machine.
const BOUND: Duration = Duration::from_secs(2);

/// Runs `call` on a thread of its own and waits at most [`BOUND`] for its answer.
/// A call that hangs fails the test at the bound (its thread is left behind);
/// one that panics fails it with the input.
fn bounded<T: Send + 'static>(
    what: &str,
    input: &str,
    call: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (answer, answered) = mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let _ = answer.send(call());
        })
        .expect("spawn a thread for the call");
    let shown: String = input.chars().take(300).collect();
    match answered.recv_timeout(BOUND) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what} gave no answer within {BOUND:?} (a hang?) on {shown:?}")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked on {shown:?}"),
    }
}

/// The manifest parser's answer on `text`, within the bound.
fn parse(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let owned = text.to_string();
    bounded("parse_str", text, move || {
        converge::manifest::parse_str(&owned, file())
    })
}

/// The last line a location in `text` may name: its last line, or the end of the
/// stream just after it (where libyaml, as go-yaml, reports an unfinished
/// document). Every line break counts, as YAML 1.1 has them.
fn max_line(text: &str) -> usize {
    let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
    text.chars().filter(|c| breaks.contains(c)).count() + 2
}

/// What the parser promises about its answer on `text` (read as file `path`):
/// every object is located in the file, its `kind` and `apiVersion` are the body's,
/// and its body reads back the same from JSON; every refusal names the file and a
/// line in it.
fn assert_parse_kept_its_promises(
    text: &str,
    path: &Path,
    answer: &Result<Vec<Manifest>, ManifestError>,
) -> Result<(), TestCaseError> {
    let lines = max_line(text);
    match answer {
        Ok(manifests) => {
            for m in manifests {
                prop_assert_eq!(&m.origin.file, path);
                prop_assert!(
                    (1..=lines).contains(&m.origin.line),
                    "line {} of {}",
                    m.origin.line,
                    lines
                );
                prop_assert_eq!(m.body.get("kind"), Some(&Value::from(m.kind.as_str())));
                prop_assert_eq!(
                    m.body.get("apiVersion"),
                    Some(&Value::from(m.api_version.as_str()))
                );
            }
            assert_json_round_trip(manifests)
        }
        Err(ManifestError::Invalid(problems)) => {
            prop_assert!(!problems.is_empty(), "refused without a problem");
            for p in problems {
                prop_assert_eq!(&p.origin.file, path, "{}", p);
                prop_assert!(
                    (1..=lines).contains(&p.origin.line),
                    "line {} of {}: {}",
                    p.origin.line,
                    lines,
                    p
                );
            }
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a located refusal: {other}"
        ))),
    }
}

/// The objects read, written out as a stream of JSON objects, read back the same.
fn assert_json_round_trip(manifests: &[Manifest]) -> Result<(), TestCaseError> {
    if manifests.is_empty() {
        return Ok(());
    }
    let bodies: Vec<Value> = manifests
        .iter()
        .map(|m| Value::Object(m.body.clone()))
        .collect();
    let json: String = bodies.iter().map(|b| format!("{b}\n")).collect();
    let again = match parse(&json) {
        Ok(again) => again,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "its JSON is refused: {e}\n{json}"
            )));
        }
    };
    let again: Vec<Value> = again.into_iter().map(|m| Value::Object(m.body)).collect();
    prop_assert_eq!(again, bodies, "read back from JSON differently");
    Ok(())
}

/// Pieces of YAML syntax, real keys and awkward scalars, glued at random.
const YAML_PIECES: &[&str] = &[
    "---",
    "...",
    "\n",
    "\n",
    "\n",
    "  ",
    "    ",
    "\t",
    "- ",
    ": ",
    ":",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "!!int ",
    "!!map ",
    "!custom ",
    "\"",
    "'",
    "|",
    "|-",
    ">",
    "#",
    "? ",
    "%YAML 1.1",
    "%TAG ! tag:x,2000:",
    "\u{feff}",
    "\r\n",
    "apiVersion: v1",
    "apiVersion: apps/v1",
    "kind: ConfigMap",
    "kind: Secret",
    "kind: Deployment",
    "metadata:",
    "name: x",
    "namespace: y",
    "generateName: g-",
    "data:",
    "stringData:",
    "spec:",
    "replicas: 3",
    "0x1F",
    "0o17",
    "0755",
    "1e999",
    "-.inf",
    ".nan",
    "~",
    "null",
    "yes",
    "No",
    "on",
    "1_000",
    "9223372036854775808",
    "é",
    "\u{0}",
    "\u{7f}",
    "日本",
    "\\u0000",
    "\\x00",
    "{\"kind\": \"ConfigMap\"}",
    "[1, 2, 3]",
];

fn yaml_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(YAML_PIECES).prop_map(str::to_string),
        1 => "[a-z0-9 :\\-]{0,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

fn yaml_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(yaml_piece(), 0..120).prop_map(|pieces| pieces.concat())
}

/// `text` as a YAML double-quoted scalar in ASCII: anything else escaped.
fn double_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// A ConfigMap with arbitrary data: its name, its data, and its YAML (every
/// scalar double-quoted, so no key or value is read as anything but a string).
fn configmap_yaml() -> impl Strategy<Value = (String, BTreeMap<String, String>, String)> {
    let name = "[a-z]([a-z0-9-]{0,18}[a-z0-9])?";
    let data = prop::collection::btree_map("[A-Za-z0-9._-]{1,12}", any::<String>(), 1..8);
    (name, data).prop_map(|(name, data)| {
        let mut text = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {}\ndata:\n",
            double_quoted(&name)
        );
        for (key, value) in &data {
            text.push_str(&format!(
                "  {}: {}\n",
                double_quoted(key),
                double_quoted(value)
            ));
        }
        (name, data, text)
    })
}

/// Every file of the YAML fixtures, for mutation (read once).
fn fixture_texts() -> &'static [String] {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(read_fixtures)
}

fn read_fixtures() -> Vec<String> {
    let root = crate::common::repo_root().join("tests/fixtures");
    let mut texts = Vec::new();
    for dir in ["yaml-quirks", "secrets", "microservices-demo", "bad"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                texts.push(text);
            }
        }
    }
    assert!(texts.len() > 50, "few fixtures: {}", texts.len());
    texts
}

/// A structured mutation of a text: a range deleted, duplicated or replaced by a
/// YAML piece, at char boundaries.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Duplicate(usize, usize),
    Insert(usize, String),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 0usize..256).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (any::<usize>(), yaml_piece()).prop_map(|(at, s)| Mutation::Insert(at, s)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for mutation in mutations {
        let len = chars.len().max(1);
        match mutation {
            Mutation::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                if at < end {
                    chars.drain(at..end);
                }
            }
            Mutation::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(chars.len());
                let copy: Vec<char> = chars.get(at..end).map(<[char]>::to_vec).unwrap_or_default();
                chars.splice(at..at, copy);
            }
            Mutation::Insert(at, piece) => {
                let at = (at % len).min(chars.len());
                chars.splice(at..at, piece.chars());
            }
            Mutation::Truncate(at) => chars.truncate(at % len),
        }
    }
    chars.into_iter().collect()
}

fn file() -> &'static Path {
    Path::new("hostile.yaml")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_manifest_parser_survives_arbitrary_text(text in any::<String>()) {
        let answer = parse(&text);
        assert_parse_kept_its_promises(&text, file(), &answer)?;
    }

    #[test]
    fn the_manifest_parser_survives_yaml_soup(text in yaml_soup()) {
        let answer = parse(&text);
        assert_parse_kept_its_promises(&text, file(), &answer)?;
    }

    #[test]
    fn the_manifest_parser_survives_mutated_fixtures(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let original: &String = pick.get(fixture_texts());
        let text = mutate(original, &mutations);
        let answer = parse(&text);
        assert_parse_kept_its_promises(&text, file(), &answer)?;
    }

    #[test]
    fn a_configmap_with_arbitrary_data_reads_back_exactly((name, data, text) in configmap_yaml()) {
        let answer = parse(&text);
        assert_parse_kept_its_promises(&text, file(), &answer)?;
        let manifests = answer.map_err(|e| TestCaseError::fail(format!("refused: {e}\n{text}")))?;
        prop_assert_eq!(manifests.len(), 1);
        let body = &manifests[0].body;
        prop_assert_eq!(&body["metadata"]["name"], &Value::from(name));
        prop_assert_eq!(&body["data"], &serde_json::json!(data), "{}", text);
    }

    #[test]
    fn the_config_loader_survives_arbitrary_and_structured_toml(
        text in prop_oneof![any::<String>(), toml_soup()],
    ) {
        let input = text.clone();
        let answer = bounded("Config::parse", &text, move || {
            Config::parse(&input, Path::new("config.toml")).map_err(|e| e.to_string())
        });
        match answer {
            // Accepted: at least one source, each named once.
            Ok(config) => {
                let names: BTreeSet<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                prop_assert!(!config.sources.is_empty(), "a config without sources");
                prop_assert_eq!(names.len(), config.sources.len(), "a name used twice");
            }
            Err(message) => prop_assert!(message.contains("config.toml"), "the file is not named: {}", message),
        }
    }

    #[test]
    fn the_webhook_checks_survive_anything_and_accept_only_the_signature(
        secret in prop::collection::vec(any::<u8>(), 0..64),
        body in prop::collection::vec(any::<u8>(), 0..512),
        header in prop::option::of(any::<String>()),
    ) {
        let shown = format!("{header:?}");
        let (s, b, h) = (secret.clone(), body.clone(), header.clone());
        let accepted = bounded("verify_github_signature", &shown, move || {
            verify_github_signature(&s, &b, h.as_deref())
        });
        let signature = crate::common::github_signature(&secret, &body);
        prop_assert_eq!(accepted, header.as_deref() == Some(signature.as_str()));
        prop_assert!(verify_github_signature(&secret, &body, Some(&signature)));
        let (s, h) = (secret.clone(), header.clone());
        let token = bounded("verify_token", &shown, move || verify_token(&s, h.as_deref()));
        // The token matches exactly when the header is the secret.
        prop_assert_eq!(token, header.as_deref().map(str::as_bytes) == Some(secret.as_slice()));
    }
}

/// The loader's answer, and the parser's on the same text, compared as what they
/// read or the problems they found (the loader reads through its own path).
fn same_reading(
    loaded: &Result<Vec<Manifest>, ManifestError>,
    parsed: &Result<Vec<Manifest>, ManifestError>,
) -> Result<(), TestCaseError> {
    let reading = |r: &Result<Vec<Manifest>, ManifestError>| match r {
        Ok(ms) => Ok(ms
            .iter()
            .map(|m| (m.origin.line, Value::Object(m.body.clone())))
            .collect::<Vec<_>>()),
        Err(e) => Err(e
            .problems()
            .iter()
            .map(|p| (p.origin.line, p.message.clone()))
            .collect::<Vec<_>>()),
    };
    prop_assert_eq!(
        reading(loaded),
        reading(parsed),
        "the loader and the parser read the text differently"
    );
    Ok(())
}

proptest! {
    // Each case writes files: fewer cases.
    #![proptest_config(ProptestConfig { cases: 120, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_manifest_loader_survives_arbitrary_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            yaml_soup().prop_map(String::into_bytes),
        ],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, &bytes).expect("write");
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let paths = [dir.path().to_path_buf()];
        let loaded = bounded("manifest::load", &shown, move || converge::manifest::load(&paths));
        match std::str::from_utf8(&bytes) {
            // Text: read as the parser reads it, with its promises.
            Ok(text) => {
                assert_parse_kept_its_promises(text, &path, &loaded)?;
                let (owned, at) = (text.to_string(), path.clone());
                let parsed = bounded("parse_str", text, move || converge::manifest::parse_str(&owned, &at));
                same_reading(&loaded, &parsed)?;
            }
            // Not UTF-8 (nor UTF-16 with its byte order mark): refused, located.
            Err(_) => {
                let problems = loaded.as_ref().err().map(ManifestError::problems).unwrap_or_default();
                let utf16 = bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]);
                prop_assert!(
                    utf16 || problems.iter().any(|p| p.origin.file == path),
                    "invalid UTF-8 not refused in the file: {:?}", loaded.as_ref().map(Vec::len)
                );
            }
        }
    }

    #[test]
    fn the_kubeconfig_loader_survives_arbitrary_and_mutated_files(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(mutation(), 1..6).prop_map(|m| mutate(KUBECONFIG, &m)),
        ],
        context in prop::option::of("[a-z]{0,6}"),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("kubeconfig");
        std::fs::write(&path, &text).expect("write");
        let (at, ctx) = (path.clone(), context.clone());
        let answer = bounded("kubeconfig", &text, move || {
            ClusterConfig::from_kubeconfig_files(std::slice::from_ref(&at), ctx.as_deref())
                .map(|c| (c.server.scheme().to_string(), c.origin))
                .map_err(|e| e.to_string())
        });
        let named = path.display().to_string();
        match answer {
            // Accepted: an http(s) server, from a context of this file.
            Ok((scheme, origin)) => {
                prop_assert!(scheme == "https" || scheme == "http", "server scheme {}", scheme);
                prop_assert!(origin.contains(&named), "origin {} does not name the file", origin);
            }
            Err(message) => prop_assert!(message.contains(&named), "the file is not named: {}", message),
        }
    }
}

/// A kubeconfig with every kind of credential, for mutation.
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: a
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=
    tls-server-name: kubernetes
    insecure-skip-tls-verify: false
users:
- name: token
  user: {token: abc}
- name: cert
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
    client-key-data: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCi0tLS0tRU5EIFBSSVZBVEUgS0VZLS0tLS0K
- name: exec
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/false
      args: [a, b]
      env: [{name: X, value: y}]
contexts:
- name: a
  context: {cluster: c, user: token, namespace: ns}
- name: b
  context: {cluster: c, user: cert}
- name: e
  context: {cluster: c, user: exec}
";

/// Pieces of TOML and the config's own keys, glued at random.
const TOML_PIECES: &[&str] = &[
    "\n",
    "[[source]]",
    "[cluster]",
    "[server]",
    "[render]",
    "name = ",
    "dir = ",
    "git = ",
    "branch = ",
    "tag = ",
    "commit = ",
    "path = ",
    "interval = ",
    "full_resync_every = ",
    "namespace = ",
    "prune = ",
    "self_heal = ",
    "allow_mass_prune = ",
    "request_timeout = ",
    "listen = ",
    "state_dir = ",
    "kubeconfig = ",
    "context = ",
    "username_env = ",
    "password_env = ",
    "ssh_key_file = ",
    "known_hosts_file = ",
    "webhook_secret_env = ",
    "\"s\"",
    "\"30s\"",
    "\"0s\"",
    "\"1h30m\"",
    "\"../..\"",
    "\"/\"",
    "\"\"",
    "30",
    "-1",
    "9999999999999999999",
    "true",
    "1.5",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "'''",
    "#",
    "\"https://example.com/r.git\"",
    "\"git@host:r.git\"",
    "\"127.0.0.1:0\"",
    "\"not an address\"",
    "é",
    "\u{0}",
];

fn toml_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(proptest::sample::select(TOML_PIECES), 0..80)
        .prop_map(|pieces| pieces.join(" "))
}
