//! A SOPS document as sops walks it: ordered mappings, sequences and typed leaves;
//! the walk that decrypts it and computes its MAC (getsops/sops `sops.go`:
//! `walkBranch`, `shouldBeEncrypted`, `Tree.Decrypt`, `ToBytes`).

pub(super) use super::cipher::Leaf;
use super::cipher::{self, DataKey};
use super::error::Failure;
use regex::Regex;
use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha512};

/// One value of a document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// A mapping, in the order written.
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    Leaf(Leaf),
    /// `null`: never encrypted, not in the MAC.
    Null,
}

/// Which values of a file are encrypted: `unencrypted_suffix` (default
/// `_unencrypted`), `encrypted_suffix`, `unencrypted_regex`, `encrypted_regex`. sops
/// allows at most one of them per file.
#[derive(Debug, Clone)]
pub(super) enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// `shouldBeEncrypted`: a value is encrypted unless a key on its path says
    /// otherwise (or, for the `encrypted_*` rules, unless one says so).
    fn encrypts(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|k| k.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|k| r.is_match(k)),
            Rule::EncryptedRegex(r) => path.iter().any(|k| r.is_match(k)),
        }
    }
}

/// What the MAC covers: every value, or (`mac_only_encrypted`) only the encrypted ones,
/// after a fixed prefix so the two never agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MacScope {
    AllValues,
    OnlyEncrypted,
}

/// `MACOnlyEncryptedInitialization` in sops.go.
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
    0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// Decrypts every encrypted value of `documents` in place and returns the MAC of the
/// plaintext (upper-case hex of SHA-512, as sops writes it).
pub(super) fn decrypt(
    documents: &mut [Node],
    key: &DataKey,
    rule: &Rule,
    scope: MacScope,
) -> Result<String, Failure> {
    let mut walk = Walk {
        key,
        rule,
        scope,
        hash: Sha512::new(),
        path: Vec::new(),
    };
    if scope == MacScope::OnlyEncrypted {
        walk.hash.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for document in documents {
        walk.node(document)?;
    }
    Ok(hex::encode_upper(walk.hash.finalize()))
}

struct Walk<'a> {
    key: &'a DataKey,
    rule: &'a Rule,
    scope: MacScope,
    hash: Sha512,
    path: Vec<String>,
}

impl Walk<'_> {
    /// Sequences add nothing to the path: every item of a list shares its key's path.
    fn node(&mut self, node: &mut Node) -> Result<(), Failure> {
        match node {
            Node::Map(entries) => {
                for (key, value) in entries {
                    self.path.push(key.clone());
                    let walked = self.node(value);
                    self.path.pop();
                    walked?;
                }
            }
            Node::List(items) => {
                for item in items {
                    self.node(item)?;
                }
            }
            Node::Leaf(leaf) => self.leaf(leaf)?,
            Node::Null => {}
        }
        Ok(())
    }

    fn leaf(&mut self, leaf: &mut Leaf) -> Result<(), Failure> {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        let encrypted = self.rule.encrypts(&path);
        if encrypted {
            let aad = format!("{}:", path.join(":"));
            let Leaf::Str(sealed) = &*leaf else {
                return Err(self.value_error("it is not an encrypted string"));
            };
            *leaf = cipher::decrypt(sealed, self.key, &aad).map_err(|why| self.value_error(why))?;
        }
        if encrypted || self.scope == MacScope::AllValues {
            self.hash.update(leaf.mac_bytes());
        }
        Ok(())
    }

    fn value_error(&self, why: &'static str) -> Failure {
        Failure::Value {
            path: self.path.join("."),
            why,
        }
    }
}

impl Node {
    /// The JSON value of a decrypted node. A whole float below `whole_below` is
    /// an integer: Go writes float64 `2` without a fraction (YAML below 1e6, where
    /// `%g` turns to exponents; JSON below 1e21), so `sops -d` prints an integer.
    pub(super) fn into_json(self, whole_below: f64) -> Value {
        match self {
            Node::Map(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_json(whole_below)))
                    .collect::<Map<_, _>>(),
            ),
            Node::List(items) => Value::Array(
                items
                    .into_iter()
                    .filter(|item| !matches!(item, Node::Leaf(Leaf::Comment(_))))
                    .map(|item| item.into_json(whole_below))
                    .collect(),
            ),
            Node::Leaf(Leaf::Str(s)) => Value::String(s),
            Node::Leaf(Leaf::Comment(_)) => Value::Null,
            Node::Leaf(Leaf::Int(i)) => Value::Number(i.into()),
            Node::Leaf(Leaf::Float(f)) if f.fract() == 0.0 && f.abs() < whole_below.min(9.0e15) => {
                Value::Number((f as i64).into())
            }
            Node::Leaf(Leaf::Float(f)) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Node::Leaf(Leaf::Bool(b)) => Value::Bool(b),
            Node::Null => Value::Null,
        }
    }

    /// The node a JSON value is (numbers as ints when they are integers, as sops's
    /// JSON store reads them).
    pub(super) fn from_json(value: Value) -> Node {
        match value {
            Value::Object(map) => Node::Map(
                map.into_iter()
                    .map(|(k, v)| (k, Node::from_json(v)))
                    .collect(),
            ),
            Value::Array(items) => Node::List(items.into_iter().map(Node::from_json).collect()),
            Value::String(s) => Node::Leaf(Leaf::Str(s)),
            Value::Bool(b) => Node::Leaf(Leaf::Bool(b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Node::Leaf(Leaf::Int(i)),
                None => Node::Leaf(Leaf::Float(n.as_f64().unwrap_or(f64::NAN))),
            },
            Value::Null => Node::Null,
        }
    }

    /// The value under `key` of a mapping.
    pub(super) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_bytes_are_gos_strconv_forms() {
        assert_eq!(Leaf::Float(1.0).mac_bytes(), b"1");
        assert_eq!(Leaf::Float(0.000001).mac_bytes(), b"0.000001");
        assert_eq!(Leaf::Float(1e21).mac_bytes(), b"1000000000000000000000");
        assert_eq!(Leaf::Bool(false).mac_bytes(), b"False");
        assert_eq!(Leaf::Int(-3).mac_bytes(), b"-3");
    }

    #[test]
    fn rules_look_at_every_key_of_the_path() {
        let suffix = Rule::UnencryptedSuffix("_unencrypted".into());
        assert!(suffix.encrypts(&["data", "password"]));
        assert!(!suffix.encrypts(&["config_unencrypted", "password"]));
        let regex = Rule::EncryptedRegex(Regex::new("^(data|stringData)$").unwrap());
        assert!(regex.encrypts(&["data", "x"]));
        assert!(!regex.encrypts(&["metadata", "name"]));
    }
}
