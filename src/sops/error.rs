//! What goes wrong decrypting a SOPS file. Every message names the file, and the key
//! path for a value, and never holds plaintext: not a value, not the data key.

use std::path::PathBuf;

/// Why a SOPS file could not be decrypted. The file is named by the caller
/// ([`super::SopsError`] wraps this with the path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Failure {
    /// The file does not parse as its format, or its `sops` metadata is malformed
    /// (a truncated file lands here).
    #[error("not a valid SOPS {format} file: {detail}")]
    Malformed {
        format: &'static str,
        detail: String,
    },
    /// No age recipient: the file is encrypted only for key types converge cannot use.
    #[error(
        "encrypted only for {found}, which converge does not support; add an age recipient \
         (sops updatekeys) or decrypt it before committing"
    )]
    Unsupported { found: String },
    /// A feature of sops converge does not implement.
    #[error("uses {feature}, which converge does not support")]
    Feature { feature: &'static str },
    /// None of the configured age identities opens the data key.
    #[error(
        "no configured age identity decrypts the data key (recipients: {recipients}); \
         configure the matching key ([source.decryption], --age-key-file, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY)"
    )]
    NoKey { recipients: String },
    /// A value is not in the `ENC[AES256_GCM,…]` form, or fails authentication.
    #[error("the value at {path} cannot be decrypted: {why}")]
    Value { path: String, why: &'static str },
    /// The document's MAC does not match its values: the file was tampered with.
    #[error("MAC mismatch: the file's values were changed after it was encrypted")]
    Mac,
}

/// A SOPS file that could not be decrypted, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot decrypt {}: {failure}", path.display())]
pub struct SopsError {
    pub path: PathBuf,
    pub failure: Failure,
}
