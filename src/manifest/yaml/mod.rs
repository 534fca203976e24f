//! YAML and JSON read exactly as kubectl reads them.
//!
//! Manifests are written for kubectl, which reads a file with the API machinery's
//! `YAMLOrJSONDecoder`, each YAML document with sigs.k8s.io/yaml (go-yaml v2, YAML
//! 1.1: `0755` is octal, `yes` is true), and the result as JSON numbers the API
//! server's way. Any difference is a manifest kubectl applies and converge refuses,
//! or applies differently; `tests/it/yaml_kubectl.rs` checks a corpus of quirks
//! against kubectl itself.
//!
//! - `stream`: a file cut into documents, as kubectl cuts it;
//! - `events`: libyaml's parser events (go-yaml v2 is a port of libyaml);
//! - `tree`: events → nodes with anchors, as go-yaml's parser builds them, with the
//!   nesting limit and repairs where libyaml has changed since go-yaml's port;
//! - `decode`: nodes → JSON, as go-yaml's decoder and sigs.k8s.io/yaml make it;
//! - `resolve`: what a scalar means, and numbers and keys as JSON has them.

mod decode;
mod events;
mod resolve;
mod stream;
mod tree;

pub(super) use decode::first_document;
pub(super) use stream::{Piece, split};

use events::SyntaxError;

/// Why a document cannot be read, at a 0-based line of the text decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DecodeError {
    Syntax(SyntaxError),
    /// A value kubectl would refuse, with the path to it (innermost segment first).
    Value {
        line: usize,
        path: Vec<String>,
        message: String,
    },
}

impl DecodeError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        DecodeError::Value {
            line,
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// The 0-based line of the text where the problem is.
    pub(super) fn line(&self) -> usize {
        match self {
            DecodeError::Syntax(e) => e.mark.line,
            DecodeError::Value { line, .. } => *line,
        }
    }

    /// Adds a path segment (a key, or `[i]`) while the error travels up.
    fn within(mut self, segment: impl FnOnce() -> String) -> Self {
        if let DecodeError::Value { path, .. } = &mut self {
            path.push(segment());
        }
        self
    }

    /// What to tell the user; lines in it are counted from `first_line`, the
    /// 0-based file line the decoded text starts on.
    pub(super) fn message(&self, first_line: usize) -> String {
        match self {
            DecodeError::Syntax(e) => format!(
                "invalid YAML: {}; check the indentation and quoting",
                e.describe(first_line)
            ),
            DecodeError::Value { path, message, .. } if path.is_empty() => message.clone(),
            DecodeError::Value { path, message, .. } => {
                let mut joined = String::new();
                for segment in path.iter().rev() {
                    if !joined.is_empty() && !segment.starts_with('[') {
                        joined.push('.');
                    }
                    joined.push_str(segment);
                }
                format!("at {joined}: {message}")
            }
        }
    }
}
