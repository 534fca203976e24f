//! OpenSSH `known_hosts` checking for Git over SSH.
//!
//! libgit2 hands us the server's raw host key in its certificate callback; we decide
//! with our own parser instead of libgit2's built-in check because that one reads only
//! `~/.ssh/known_hosts` and cannot tell "unknown" from "mismatch". Supported: plain
//! and hashed (`|1|salt|hash`) host fields, `[host]:port`, comma lists, `*`/`?`
//! wildcards, `!` negation and `@revoked`; `@cert-authority` lines are ignored
//! (host certificates are not supported, so such hosts count as unknown).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::{digest, hmac};

/// The parsed entries of a known_hosts file.
#[derive(Debug, Default)]
pub(crate) struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    revoked: bool,
    hosts: Hosts,
    /// The SSH wire-format public key blob (base64-decoded third field).
    key: Vec<u8>,
}

#[derive(Debug)]
enum Hosts {
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    Patterns(Vec<String>),
}

/// The verdict on a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is listed for the host.
    Trusted,
    /// The host has no key (of this type) listed.
    Unknown,
    /// The host has a different key of the same type: possible interception.
    Mismatch,
    /// The key is marked `@revoked`.
    Revoked,
}

impl KnownHosts {
    /// Reads and parses a known_hosts file.
    pub(crate) fn load(path: &Path) -> std::io::Result<KnownHosts> {
        Ok(KnownHosts::parse(&std::fs::read_to_string(path)?))
    }

    /// Parses known_hosts text; malformed lines are skipped, as OpenSSH does.
    pub(crate) fn parse(text: &str) -> KnownHosts {
        let entries = text.lines().filter_map(parse_line).collect();
        KnownHosts { entries }
    }

    /// Judges `key` (wire-format blob) offered by `host`, written as known_hosts
    /// writes it: `host` for port 22, else `[host]:port` (see [`host_pattern`]).
    pub(crate) fn check(&self, host: &str, key: &[u8]) -> Verdict {
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.hosts.matches(host))
            .collect();
        if matching.iter().any(|e| e.revoked && e.key == key) {
            return Verdict::Revoked;
        }
        let listed = matching.iter().filter(|e| !e.revoked);
        if listed.clone().any(|e| e.key == key) {
            return Verdict::Trusted;
        }
        let offered_type = key_type(key);
        if listed.clone().any(|e| key_type(&e.key) == offered_type) {
            return Verdict::Mismatch;
        }
        Verdict::Unknown
    }
}

/// How known_hosts names a host: `host` on port 22, `[host]:port` otherwise.
pub(crate) fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// OpenSSH's fingerprint of a key blob: `SHA256:<unpadded base64>`, as `ssh-keygen -l`
/// prints it, so users can compare with what their Git host publishes.
pub(crate) fn fingerprint(key: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, key);
    format!(
        "{} SHA256:{}",
        key_type(key),
        STANDARD_NO_PAD.encode(hash.as_ref())
    )
}

/// The algorithm name at the start of a key blob (`ssh-ed25519`, …).
fn key_type(key: &[u8]) -> &str {
    let len = key
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0) as usize;
    key.get(4..4 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("unknown")
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None, // @cert-authority: not supported
        }
        first = fields.next()?;
    }
    let _key_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    Some(Entry {
        revoked,
        hosts: parse_hosts(first)?,
        key,
    })
}

fn parse_hosts(field: &str) -> Option<Hosts> {
    match field.strip_prefix("|1|") {
        Some(hashed) => {
            let (salt, hash) = hashed.split_once('|')?;
            Some(Hosts::Hashed {
                salt: STANDARD.decode(salt).ok()?,
                hash: STANDARD.decode(hash).ok()?,
            })
        }
        None => Some(Hosts::Patterns(
            field.split(',').map(str::to_string).collect(),
        )),
    }
}

impl Hosts {
    fn matches(&self, host: &str) -> bool {
        match self {
            // HMAC-SHA1 is what OpenSSH's HashKnownHosts uses; not our choice.
            Hosts::Hashed { salt, hash } => {
                let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                hmac::verify(&key, host.as_bytes(), hash).is_ok()
            }
            Hosts::Patterns(patterns) => {
                let host = host.to_ascii_lowercase();
                let hit = |p: &str| wildcard(&p.to_ascii_lowercase(), &host);
                let negated = patterns
                    .iter()
                    .any(|p| p.strip_prefix('!').is_some_and(hit));
                !negated && patterns.iter().any(|p| !p.starts_with('!') && hit(p))
            }
        }
    }
}

/// Glob match with `*` (any run) and `?` (one character).
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ed25519 public keys (from `ssh-keygen -t ed25519`).
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEYD4X4lKrzZ7/tu1M+xRe81RupthHdBg+s0mHijre0y";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJH4JTeOKr4JB/Fbc/rcZEKRmBxnI/plj5py3aQmenKS";
    /// An ecdsa-sha2-nistp256 key.
    const KEY_EC: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHQnQCFH6F4UgPl9rEN9eDbBNth7ztsgP7JusTN+8HIxfm2oCNjw5DJqBqx1HsKVq7Qc9Gmqu80yfT/lROcqyTs=";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn plain_entries() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\ngithub.com,140.82.121.4 ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(kh.check("github.com", &blob(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("140.82.121.4", &blob(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("GitHub.com", &blob(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("github.com", &blob(KEY_B)), Verdict::Mismatch);
        assert_eq!(kh.check("github.com", &blob(KEY_EC)), Verdict::Unknown);
        assert_eq!(kh.check("gitlab.com", &blob(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("[127.0.0.1]:2222", &blob(KEY_B)), Verdict::Trusted);
        assert_eq!(kh.check("127.0.0.1", &blob(KEY_B)), Verdict::Unknown);
    }

    /// A hashed entry for `[127.0.0.1]:2222`, made the way `ssh-keygen -H` makes them.
    #[test]
    fn hashed_entries() {
        let salt = STANDARD.encode(b"0123456789abcdefghij");
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"0123456789abcdefghij");
        let hash = STANDARD.encode(hmac::sign(&key, b"[127.0.0.1]:2222").as_ref());
        let kh = KnownHosts::parse(&format!("|1|{salt}|{hash} ssh-ed25519 {KEY_A}\n"));
        assert_eq!(kh.check("[127.0.0.1]:2222", &blob(KEY_A)), Verdict::Trusted);
        assert_eq!(
            kh.check("[127.0.0.1]:2222", &blob(KEY_B)),
            Verdict::Mismatch
        );
        assert_eq!(kh.check("127.0.0.1", &blob(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(&format!(
            "*.example.com,!evil.example.com ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n\
             @cert-authority *.example.com ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(kh.check("git.example.com", &blob(KEY_A)), Verdict::Trusted);
        assert_eq!(kh.check("evil.example.com", &blob(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("git.example.com", &blob(KEY_B)), Verdict::Revoked);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let kh = KnownHosts::parse(&format!(
            "garbage\nhost ssh-ed25519 !!notbase64\nhost ssh-ed25519 {KEY_A}\n"
        ));
        assert_eq!(kh.check("host", &blob(KEY_A)), Verdict::Trusted);
    }

    #[test]
    fn fingerprints_look_like_ssh_keygen() {
        let fp = fingerprint(&blob(KEY_A));
        // `ssh-keygen -lf` of KEY_A printed this.
        assert_eq!(
            fp,
            "ssh-ed25519 SHA256:r8Ol4lO18+xIbgjcGq7+1cidKvya4G1iUiV17Fuj8F4"
        );
        assert_eq!(host_pattern("h", 22), "h");
        assert_eq!(host_pattern("h", 2222), "[h]:2222");
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard("git?.x", "git1.x"));
        assert!(!wildcard("git?.x", "git12.x"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b", "aXXc"));
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of known_hosts syntax, glued at random.
        const PIECES: &[&str] = &[
            "\n",
            " ",
            "\t",
            ",",
            "#",
            "@revoked",
            "@cert-authority",
            "|1|",
            "|1|abc=|def=",
            "*",
            "?",
            "!",
            "[",
            "]",
            ":",
            "[host]:2222",
            "github.com",
            "*.example.com",
            "!bad.example.com",
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            KEY_A,
            KEY_B,
            "AAAA",
            "====",
            "é",
            "\u{0}",
        ];

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(proptest::sample::select(PIECES), 0..60)
                    .prop_map(|p| p.concat()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

            /// Arbitrary text and hosts never panic, and a key is only trusted
            /// when listed.
            #[test]
            fn arbitrary_known_hosts_never_panic(
                text in text(),
                host in prop_oneof![any::<String>(), "[a-z.*?!\\[\\]:0-9]{0,20}"],
                key in prop::collection::vec(any::<u8>(), 0..80),
            ) {
                let started = std::time::Instant::now();
                let known = KnownHosts::parse(&text);
                let verdict = known.check(&host, &key);
                let _ = fingerprint(&key);
                prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
                if verdict == Verdict::Trusted {
                    prop_assert!(known.entries.iter().any(|e| e.key == key));
                }
            }
        }
    }
}
