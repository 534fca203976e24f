//! `[source.decryption]`: where a source's age identities come from — key files
//! on the daemon's disk, and a Secret whose `*.agekey` entries hold identities, as
//! Flux's kustomize-controller reads its `decryption.secretRef`.

use super::keys::{AgeKeys, KeyError};
use crate::kube::{ApiResource, Client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// A source's decryption settings (`provider = "sops"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decryption {
    /// Age key files (or OpenSSH private keys) read at each load.
    pub key_files: Vec<PathBuf>,
    /// A Secret (`NAMESPACE/NAME`) whose `*.agekey` entries are age identities.
    pub secret: Option<SecretRef>,
}

/// `NAMESPACE/NAME` of the decryption Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl SecretRef {
    /// Reads `NAMESPACE/NAME`.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(SecretRef {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a source's keys could not be gathered. Never holds a key.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot read the decryption Secret {secret}: {detail}")]
    Secret {
        secret: SecretRef,
        detail: String,
        transient: bool,
    },
}

impl KeysError {
    /// A Secret that could not be read for a moment; a bad key file is the
    /// configuration's own.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KeysError::Secret {
                transient: true,
                ..
            }
        )
    }
}

impl Decryption {
    pub fn is_empty(&self) -> bool {
        self.key_files.is_empty() && self.secret.is_none()
    }

    /// The identities of every key file and of the Secret.
    pub async fn keys(&self, client: &Client) -> Result<AgeKeys, KeysError> {
        let mut keys = AgeKeys::default();
        for file in &self.key_files {
            keys.add_file(file)?;
        }
        if let Some(secret) = &self.secret {
            keys.extend(secret_keys(client, secret).await?);
        }
        Ok(keys)
    }
}

/// The `*.agekey` entries of the Secret (`data`, base64).
async fn secret_keys(client: &Client, secret: &SecretRef) -> Result<AgeKeys, KeysError> {
    let path = ApiResource::secrets().path(Some(&secret.namespace), Some(&secret.name));
    let object = client.get(&path).await.map_err(|e| KeysError::Secret {
        secret: secret.clone(),
        detail: e.to_string(),
        transient: e.is_transient(),
    })?;
    let mut keys = AgeKeys::default();
    let Some(Value::Object(data)) = object.get("data") else {
        return Ok(keys);
    };
    for (name, value) in data.iter().filter(|(name, _)| name.ends_with(".agekey")) {
        let origin = format!("Secret {secret} key {name}");
        let bytes = value
            .as_str()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| KeyError {
                origin: origin.clone(),
                why: "not base64".into(),
            })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError {
            origin: origin.clone(),
            why: "not UTF-8".into(),
        })?;
        keys.add(text, &origin)?;
    }
    Ok(keys)
}
