//! SOPS files decrypted in memory: native, exact, never leaked.
//!
//! A file written by `sops` 3.x (YAML with several documents, JSON, dotenv, INI) for
//! age recipients is decrypted here, before it is parsed or rendered. The data key
//! is unwrapped with the age crate (`keys`), every value is decrypted with
//! AES-256-GCM, its path as additional data (`cipher`), the document MAC is
//! recomputed over the plaintext and compared (`tree`), and the `sops` metadata is
//! removed (`format`, `metadata`). What is decrypted lives only in memory; the
//! errors (`error`) name the file and the key path, never a value. A source's
//! keys come from `[source.decryption]` (`decryption`: key files and a Secret's
//! `*.agekey` entries) or the command line.
//!
//! Why native rather than running `sops`: no plaintext on a pipe or in a child's
//! memory, no binary to pin, and a failure that says exactly which file and key.

mod cipher;
mod decryption;
mod error;
mod format;
mod keys;
mod metadata;
mod tree;

pub use decryption::{Decryption, KeysError, SecretRef};
pub use error::{Failure, SopsError};
pub use format::Format;
pub use keys::{AgeKeys, KeyError};

use metadata::Metadata;
use serde_json::Value;
use std::path::Path;
use tree::{Leaf, Node};

/// A decrypted file: its documents, plaintext, without the `sops` metadata.
pub struct Decrypted {
    pub format: Format,
    documents: Vec<Node>,
}

impl std::fmt::Debug for Decrypted {
    /// Never the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Decrypted({:?}, {} documents)",
            self.format,
            self.documents.len()
        )
    }
}

/// Whether `text` may be a SOPS file: a cheap test so that plain manifests are not
/// read twice.
pub fn may_be_encrypted(text: &str) -> bool {
    text.contains("ENC[AES256_GCM,") && text.contains("lastmodified")
}

/// Decrypts `text`, the content of `path` (whose extension gives the format), with
/// `keys`; `Ok(None)` when it is not a SOPS file.
pub fn decrypt(path: &Path, text: &str, keys: &AgeKeys) -> Result<Option<Decrypted>, SopsError> {
    let Some(format) = Format::of(path) else {
        return Ok(None);
    };
    if !may_be_encrypted(text) {
        return Ok(None);
    }
    let failed = |failure| SopsError {
        path: path.to_path_buf(),
        failure,
    };
    let Some((mut documents, metadata)) = format::load(text, format).map_err(failed)? else {
        return Ok(None);
    };
    let _span = tracing::debug_span!("sops_decrypt", file = %path.display()).entered();
    let metadata = Metadata::read(&metadata).map_err(failed)?;
    if metadata.age.is_empty() {
        let found = if metadata.others.is_empty() {
            "no key at all".to_string()
        } else {
            metadata.others.join(", ")
        };
        return Err(failed(Failure::Unsupported { found }));
    }
    let key = keys.data_key(&metadata.age).map_err(failed)?;
    let mac =
        tree::decrypt(&mut documents, &key, &metadata.rule, metadata.scope).map_err(failed)?;
    let written =
        cipher::decrypt_mac(&metadata.mac, &key, &metadata.last_modified).map_err(failed)?;
    if !constant_time_eq(mac.as_bytes(), written.as_bytes()) {
        return Err(failed(Failure::Mac));
    }
    tracing::debug!(documents = documents.len(), "decrypted");
    Ok(Some(Decrypted { format, documents }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Decrypted {
    /// The documents as JSON values.
    pub fn json(&self) -> Vec<Value> {
        let whole_below = match self.format {
            Format::Yaml => 1e6,
            Format::Json | Format::Dotenv | Format::Ini => 1e21,
        };
        self.documents
            .iter()
            .cloned()
            .map(|d| d.into_json(whole_below))
            .collect()
    }

    /// The file as text of its own format: manifests as JSON documents (one a line,
    /// which the manifest parser reads as YAML would be), dotenv as `KEY=VALUE`
    /// lines, INI as sections; what `sops -d` would print, up to YAML's styling.
    pub fn text(&self) -> String {
        match self.format {
            Format::Yaml => self
                .json()
                .iter()
                .map(|doc| format!("---\n{doc}\n"))
                .collect(),
            Format::Json => self
                .json()
                .first()
                .map(|d| format!("{d}\n"))
                .unwrap_or_default(),
            Format::Dotenv => self.dotenv(),
            Format::Ini => self.ini(),
        }
    }

    fn entries(&self) -> &[(String, Node)] {
        match self.documents.first() {
            Some(Node::Map(entries)) => entries,
            _ => &[],
        }
    }

    fn dotenv(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.entries() {
            out.push_str(&format!("{key}={}\n", scalar(value).replace('\n', "\\n")));
        }
        out
    }

    fn ini(&self) -> String {
        let mut out = String::new();
        for (section, keys) in self.entries() {
            let Node::Map(keys) = keys else { continue };
            if section == "DEFAULT" && keys.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{section}]\n"));
            for (key, value) in keys {
                out.push_str(&format!("{key} = {}\n", scalar(value)));
            }
        }
        out
    }
}

/// A leaf as dotenv and INI write it.
fn scalar(node: &Node) -> String {
    match node {
        Node::Leaf(Leaf::Str(s)) => s.clone(),
        other => other.clone().into_json(1e21).to_string(),
    }
}
