//! Hostile input never panics and never hangs: property tests (proptest) feed the
//! manifest parser, the manifest loader (raw bytes, invalid UTF-8 included), the
//! kubeconfig loader, the config loader and the webhook checks arbitrary bytes and
//! structured mutations of real inputs, and require an answer (`Ok` or an error)
//! within a bounded time. The known_hosts and quantity parsers have theirs in their
//! modules (they are crate-private). None of these needs the control plane.

use converge::config::Config;
use converge::kube::ClusterConfig;
use converge::source::{verify_github_signature, verify_token};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one call may take in a debug build on a busy 2-core machine.
const BOUND: Duration = Duration::from_secs(2);

fn bounded<T>(what: &str, input: &str, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let answer = call();
    let took = started.elapsed();
    assert!(
        took < BOUND,
        "{what} took {took:?} on {:?}",
        input.chars().take(300).collect::<String>()
    );
    answer
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
        let _ = bounded("parse_str", &text, || converge::manifest::parse_str(&text, file()));
    }

    #[test]
    fn the_manifest_parser_survives_yaml_soup(text in yaml_soup()) {
        let _ = bounded("parse_str", &text, || converge::manifest::parse_str(&text, file()));
    }

    #[test]
    fn the_manifest_parser_survives_mutated_fixtures(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let original: &String = pick.get(fixture_texts());
        let text = mutate(original, &mutations);
        let _ = bounded("parse_str", &text, || converge::manifest::parse_str(&text, file()));
    }

    #[test]
    fn the_config_loader_survives_arbitrary_and_structured_toml(
        text in prop_oneof![any::<String>(), toml_soup()],
    ) {
        let _ = bounded("Config::parse", &text, || Config::parse(&text, Path::new("config.toml")));
    }

    #[test]
    fn the_webhook_checks_survive_anything_and_accept_only_the_signature(
        secret in prop::collection::vec(any::<u8>(), 0..64),
        body in prop::collection::vec(any::<u8>(), 0..512),
        header in prop::option::of(any::<String>()),
    ) {
        let shown = format!("{header:?}");
        let accepted = bounded("verify_github_signature", &shown, || {
            verify_github_signature(&secret, &body, header.as_deref())
        });
        let signature = crate::common::github_signature(&secret, &body);
        prop_assert_eq!(accepted, header.as_deref() == Some(signature.as_str()));
        prop_assert!(verify_github_signature(&secret, &body, Some(&signature)));
        let _ = bounded("verify_token", &shown, || verify_token(&secret, header.as_deref()));
    }
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
        std::fs::write(dir.path().join("m.yaml"), &bytes).expect("write");
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let paths = [dir.path().to_path_buf()];
        let _ = bounded("manifest::load", &shown, || converge::manifest::load(&paths));
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
        let _ = bounded("kubeconfig", &text, || {
            ClusterConfig::from_kubeconfig_files(std::slice::from_ref(&path), context.as_deref())
        });
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
