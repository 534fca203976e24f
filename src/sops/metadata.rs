//! The `sops` metadata of a file: its age stanzas, the key types it also names, the
//! MAC and the partial-encryption settings (getsops/sops `stores/stores.go`).

use super::error::Failure;
use super::tree::{Leaf, MacScope, Node, Rule};
use regex::Regex;

/// What converge needs of a file's metadata.
pub(super) struct Metadata {
    /// Every age stanza: recipient and the armored age file holding the data key.
    pub(super) age: Vec<(String, String)>,
    /// The other key types named (`pgp`, `kms`, …), for the error when no age key is.
    pub(super) others: Vec<&'static str>,
    pub(super) last_modified: String,
    pub(super) mac: String,
    pub(super) rule: Rule,
    pub(super) scope: MacScope,
}

/// Key types sops knows besides age.
const OTHER_KEYS: [&str; 6] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms"];

fn text<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match node.get(key) {
        Some(Node::Leaf(Leaf::Str(s))) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn malformed(detail: &str) -> Failure {
    Failure::Malformed {
        format: "metadata",
        detail: detail.to_string(),
    }
}

impl Metadata {
    pub(super) fn read(node: &Node) -> Result<Metadata, Failure> {
        if text(node, "unencrypted_comment_regex").is_some()
            || text(node, "encrypted_comment_regex").is_some()
        {
            return Err(Failure::Feature {
                feature: "encrypted_comment_regex/unencrypted_comment_regex",
            });
        }
        let (age, others) = keys(node)?;
        Ok(Metadata {
            age,
            others,
            last_modified: last_modified(node)?,
            mac: text(node, "mac")
                .ok_or_else(|| malformed("sops.mac is missing"))?
                .to_string(),
            rule: rule(node)?,
            scope: match node.get("mac_only_encrypted") {
                Some(Node::Leaf(Leaf::Bool(true))) => MacScope::OnlyEncrypted,
                Some(Node::Leaf(Leaf::Str(s))) if matches!(s.as_str(), "true" | "True" | "1") => {
                    MacScope::OnlyEncrypted
                }
                _ => MacScope::AllValues,
            },
        })
    }
}

/// The age stanzas of the file, from `sops.age` or its single key group; several key
/// groups (Shamir's secret sharing) are refused.
/// Age stanzas (recipient, armored data key) and the other key types named.
type Keys = (Vec<(String, String)>, Vec<&'static str>);

fn keys(node: &Node) -> Result<Keys, Failure> {
    let group = match node.get("key_groups") {
        Some(Node::List(groups)) if groups.len() > 1 => {
            return Err(Failure::Feature {
                feature: "several key_groups (Shamir's secret sharing)",
            });
        }
        Some(Node::List(groups)) if groups.len() == 1 => &groups[0],
        _ => node,
    };
    let mut age = Vec::new();
    if let Some(Node::List(stanzas)) = group.get("age") {
        for stanza in stanzas {
            let recipient = text(stanza, "recipient").unwrap_or_default();
            let enc = text(stanza, "enc").ok_or_else(|| malformed("an age key has no enc"))?;
            age.push((recipient.to_string(), enc.to_string()));
        }
    }
    let others = OTHER_KEYS
        .into_iter()
        .filter(|kind| matches!(group.get(kind), Some(Node::List(l)) if !l.is_empty()))
        .collect();
    Ok((age, others))
}

/// `lastmodified` as Go's `time.Format(time.RFC3339)` writes it back: the MAC's
/// additional data. sops writes it so already; fractional seconds are dropped.
fn last_modified(node: &Node) -> Result<String, Failure> {
    let raw =
        text(node, "lastmodified").ok_or_else(|| malformed("sops.lastmodified is missing"))?;
    let Some(dot) = raw.find('.') else {
        return Ok(raw.to_string());
    };
    let zone = raw[dot..]
        .find(['Z', '+', '-'])
        .map_or("", |at| &raw[dot + at..]);
    Ok(format!("{}{zone}", &raw[..dot]))
}

/// The partial-encryption rule (at most one; default `unencrypted_suffix: _unencrypted`).
fn rule(node: &Node) -> Result<Rule, Failure> {
    let regex =
        |r: &str| Regex::new(r).map_err(|_| malformed("a regex of the metadata does not compile"));
    let mut rules = Vec::new();
    if let Some(s) = text(node, "unencrypted_suffix") {
        rules.push(Rule::UnencryptedSuffix(s.to_string()));
    }
    if let Some(s) = text(node, "encrypted_suffix") {
        rules.push(Rule::EncryptedSuffix(s.to_string()));
    }
    if let Some(r) = text(node, "unencrypted_regex") {
        rules.push(Rule::UnencryptedRegex(regex(r)?));
    }
    if let Some(r) = text(node, "encrypted_regex") {
        rules.push(Rule::EncryptedRegex(regex(r)?));
    }
    match rules.len() {
        0 => Ok(Rule::UnencryptedSuffix("_unencrypted".into())),
        1 => Ok(rules.remove(0)),
        _ => Err(malformed(
            "more than one of encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex",
        )),
    }
}
