//! age identities, as sops and Flux read them: age key files (`AGE-SECRET-KEY-1…`
//! lines, `#` comments), and unencrypted OpenSSH keys (ed25519, RSA).

use super::cipher::DataKey;
use super::error::Failure;
use std::fmt;
use std::io::Read as _;
use zeroize::Zeroizing;

/// The age identities a source may decrypt with. Never printed: its `Debug` says
/// only how many there are.
#[derive(Default)]
pub struct AgeKeys {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeKeys({} identities)", self.identities.len())
    }
}

/// Why a key file or key text was refused; never holds the key.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: no age identity could be read from it ({why})")]
pub struct KeyError {
    pub origin: String,
    pub why: String,
}

impl AgeKeys {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Adds the identities in `text` (an age key file, or an OpenSSH private key);
    /// `origin` names where it came from for errors.
    pub fn add(&mut self, text: &str, origin: &str) -> Result<(), KeyError> {
        let error = |why: String| KeyError {
            origin: origin.to_string(),
            why,
        };
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
            || text.contains("-----BEGIN RSA PRIVATE KEY-----")
        {
            let identity =
                age::ssh::Identity::from_buffer(text.as_bytes(), Some(origin.to_string()))
                    .map_err(|e| error(e.kind().to_string()))?;
            return match identity {
                age::ssh::Identity::Unencrypted(key) => {
                    self.identities
                        .push(Box::new(age::ssh::Identity::Unencrypted(key)));
                    Ok(())
                }
                age::ssh::Identity::Encrypted(_) => {
                    Err(error("a passphrase-protected SSH key".into()))
                }
                age::ssh::Identity::Unsupported(_) => {
                    Err(error("an unsupported SSH key type".into()))
                }
            };
        }
        let mut found = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = line.parse::<age::x25519::Identity>().map_err(|_| {
                error("a line is neither a comment nor an AGE-SECRET-KEY-1 key".into())
            })?;
            self.identities.push(Box::new(identity));
            found += 1;
        }
        if found == 0 {
            return Err(error("it holds no key".into()));
        }
        Ok(())
    }

    /// Reads a key file.
    pub fn add_file(&mut self, path: &std::path::Path) -> Result<(), KeyError> {
        let origin = path.display().to_string();
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError {
            origin: origin.clone(),
            why: e.kind().to_string(),
        })?);
        self.add(&text, &origin)
    }

    /// Takes every identity of `other` too.
    pub fn extend(&mut self, other: AgeKeys) {
        self.identities.extend(other.identities);
    }

    /// The data key from the first stanza an identity opens.
    pub(super) fn data_key(&self, stanzas: &[(String, String)]) -> Result<DataKey, Failure> {
        for (_, armored) in stanzas {
            if let Some(key) = self.open(armored) {
                return Ok(key);
            }
        }
        let recipients = stanzas
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Err(Failure::NoKey { recipients })
    }

    fn open(&self, armored: &str) -> Option<DataKey> {
        let reader = age::armor::ArmoredReader::new(armored.as_bytes());
        let decryptor = age::Decryptor::new(reader).ok()?;
        let identities = self
            .identities
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity);
        let mut stream = decryptor.decrypt(identities).ok()?;
        let mut bytes = Zeroizing::new(Vec::new());
        stream.read_to_end(&mut bytes).ok()?;
        let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(Zeroizing::new(key))
    }
}
