//! The file formats sops writes, read into documents and their `sops` metadata
//! (getsops/sops `stores/`): YAML (several documents, metadata in the first),
//! JSON, dotenv (`sops_`-prefixed flattened keys) and INI (a `[sops]` section of
//! flattened keys).

use super::error::Failure;
use super::tree::{Leaf, Node};
use std::path::Path;

/// A file's format, from its extension as sops decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Dotenv,
    Ini,
}

impl Format {
    /// sops's choice by extension: `.yaml`/`.yml`, `.json`, `.env`, `.ini`; anything
    /// else is sops's "binary" format, which converge does not read (`None`).
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "env" => Some(Format::Dotenv),
            "ini" => Some(Format::Ini),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Dotenv => "dotenv",
            Format::Ini => "INI",
        }
    }
}

/// A file's documents with the metadata taken out, or `None` when it has no `sops`
/// metadata (a file that is not encrypted).
pub(super) type Loaded = Option<(Vec<Node>, Node)>;

/// Reads `text` as `format`.
pub(super) fn load(text: &str, format: Format) -> Result<Loaded, Failure> {
    let malformed = |detail: String| Failure::Malformed {
        format: format.name(),
        detail,
    };
    match format {
        Format::Yaml => yaml(text).map_err(malformed),
        Format::Json => json(text).map_err(malformed),
        Format::Dotenv => dotenv(text).map_err(malformed),
        Format::Ini => ini(text).map_err(malformed),
    }
}

/// Takes the `sops` key out of every document; the first document's is the metadata.
fn take_metadata(mut documents: Vec<Node>) -> Loaded {
    let mut metadata = None;
    for (index, document) in documents.iter_mut().enumerate() {
        if let Node::Map(entries) = document {
            if let Some(at) = entries.iter().position(|(k, _)| k == "sops") {
                let (_, found) = entries.remove(at);
                if index == 0 {
                    metadata = Some(found);
                }
            }
        }
    }
    metadata.map(|m| (documents, m))
}

fn yaml(text: &str) -> Result<Loaded, String> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(document).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        documents.push(from_yaml(value)?);
    }
    Ok(take_metadata(documents))
}

fn from_yaml(value: serde_yaml::Value) -> Result<Node, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Node::Null,
        Y::Bool(b) => Node::Leaf(Leaf::Bool(b)),
        Y::Number(n) => match n.as_i64() {
            Some(i) => Node::Leaf(Leaf::Int(i)),
            None => Node::Leaf(Leaf::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Y::String(s) => Node::Leaf(Leaf::Str(s)),
        Y::Sequence(items) => {
            Node::List(items.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        Y::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => return Err("a mapping key is not a scalar".into()),
                };
                entries.push((key, from_yaml(value)?));
            }
            Node::Map(entries)
        }
        Y::Tagged(tagged) => from_yaml(tagged.value)?,
    })
}

fn json(text: &str) -> Result<Loaded, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(take_metadata(vec![Node::from_json(value)]))
}

/// `KEY=VALUE` lines, `\n` in a value meaning a newline; `#` lines are comments;
/// the metadata is every `sops_` key, flattened.
fn dotenv(text: &str) -> Result<Loaded, String> {
    let mut entries = Vec::new();
    let mut metadata = Vec::new();
    for (number, line) in text.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not KEY=VALUE", number + 1))?;
        let value = value.replace("\\n", "\n");
        match key.strip_prefix("sops_") {
            Some(meta) => metadata.push((meta.to_string(), value)),
            None => entries.push((key.to_string(), Node::Leaf(Leaf::Str(value)))),
        }
    }
    if metadata.is_empty() {
        return Ok(None);
    }
    Ok(Some((vec![Node::Map(entries)], unflatten(metadata)?)))
}

/// `[section]` headers and `key = value` lines (`;`/`#` comments), as go-ini reads
/// the files sops writes; the `[sops]` section is the metadata, flattened.
fn ini(text: &str) -> Result<Loaded, String> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = vec![("DEFAULT".into(), Vec::new())];
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_string(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is neither [section] nor key = value", number + 1))?;
        let value = unquote(value.trim());
        if let Some((_, keys)) = sections.last_mut() {
            keys.push((key.trim().to_string(), value));
        }
    }
    let Some(at) = sections.iter().position(|(name, _)| name == "sops") else {
        return Ok(None);
    };
    let (_, metadata) = sections.remove(at);
    let metadata = metadata
        .into_iter()
        .map(|(k, v)| (k, v.replace("\\n", "\n")))
        .collect();
    let branch = sections
        .into_iter()
        .map(|(name, keys)| {
            let keys = keys
                .into_iter()
                .map(|(k, v)| (k, Node::Leaf(Leaf::Str(v))))
                .collect();
            (name, Node::Map(keys))
        })
        .collect();
    Ok(Some((vec![Node::Map(branch)], unflatten(metadata)?)))
}

/// go-ini's quoting: a value wrapped in `"""`, `"` or `` ` `` is read without them.
fn unquote(value: &str) -> String {
    for quote in ["\"\"\"", "\"", "`"] {
        if value.len() >= 2 * quote.len() {
            if let Some(inner) = value
                .strip_prefix(quote)
                .and_then(|v| v.strip_suffix(quote))
            {
                return inner.to_string();
            }
        }
    }
    value.to_string()
}

/// sops's flattened metadata keys (`age__list_0__map_recipient`) back into a tree.
fn unflatten(flat: Vec<(String, String)>) -> Result<Node, String> {
    let mut root = Node::Map(Vec::new());
    for (key, value) in flat {
        let mut node = &mut root;
        for token in tokens(&key) {
            node = match token {
                Token::Key(name) => {
                    if matches!(node, Node::Null) {
                        *node = Node::Map(Vec::new());
                    }
                    let Node::Map(entries) = node else {
                        return Err(format!("metadata key {key} mixes lists and maps"));
                    };
                    let at = match entries.iter().position(|(k, _)| *k == name) {
                        Some(at) => at,
                        None => {
                            entries.push((name, Node::Null));
                            entries.len() - 1
                        }
                    };
                    &mut entries[at].1
                }
                Token::Index(index) => {
                    if matches!(node, Node::Null) {
                        *node = Node::List(Vec::new());
                    }
                    let Node::List(items) = node else {
                        return Err(format!("metadata key {key} mixes lists and maps"));
                    };
                    if index > 1024 {
                        return Err(format!("metadata key {key} has an index out of range"));
                    }
                    if items.len() <= index {
                        items.resize(index + 1, Node::Null);
                    }
                    &mut items[index]
                }
            };
        }
        *node = Node::Leaf(Leaf::Str(value));
    }
    Ok(root)
}

enum Token {
    Key(String),
    Index(usize),
}

/// `a__map_b__list_0` → `a`, `b`, `0`.
fn tokens(path: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = path;
    let mut current = Token::Key(String::new());
    loop {
        let map = rest.find("__map_");
        let list = rest.find("__list_");
        let (at, next_is_list, skip) = match (map, list) {
            (Some(m), Some(l)) if l < m => (l, true, 7),
            (Some(m), _) => (m, false, 6),
            (None, Some(l)) => (l, true, 7),
            (None, None) => {
                out.push(finish(current, rest));
                return out;
            }
        };
        out.push(finish(current, &rest[..at]));
        current = if next_is_list {
            Token::Index(0)
        } else {
            Token::Key(String::new())
        };
        rest = &rest[at + skip..];
    }
}

fn finish(kind: Token, text: &str) -> Token {
    match kind {
        Token::Key(_) => Token::Key(text.to_string()),
        Token::Index(_) => Token::Index(text.parse().unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_metadata_unflattens() {
        let flat = vec![
            (
                "age__list_0__map_recipient".to_string(),
                "age1x".to_string(),
            ),
            ("age__list_0__map_enc".to_string(), "E".to_string()),
            ("mac".to_string(), "M".to_string()),
        ];
        let tree = unflatten(flat).unwrap();
        let Some(Node::List(age)) = tree.get("age") else {
            panic!("{tree:?}")
        };
        assert_eq!(
            age[0].get("recipient"),
            Some(&Node::Leaf(Leaf::Str("age1x".into())))
        );
        assert_eq!(tree.get("mac"), Some(&Node::Leaf(Leaf::Str("M".into()))));
    }

    #[test]
    fn a_file_without_metadata_is_not_encrypted() {
        assert_eq!(load("a: 1\n", Format::Yaml), Ok(None));
        assert_eq!(load("A=1\n", Format::Dotenv), Ok(None));
        assert_eq!(load("[s]\na = 1\n", Format::Ini), Ok(None));
        assert!(load("a: [", Format::Yaml).is_err());
    }
}
