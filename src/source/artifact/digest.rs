//! Content digests as OCI and Helm write them: `sha256:` and 64 lowercase hex digits
//! (Helm's index.yaml gives the bare hex; [`Digest::parse`] takes both).

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A SHA-256 content digest. The only algorithm accepted: OCI registries and Helm
/// use it, and a digest we cannot verify is no digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digest {
    hex: String,
}

/// A digest that is not `sha256:` + 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a sha256 digest (expected sha256: and 64 hex digits)")]
pub(crate) struct DigestError {
    text: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// `sha256:<hex>` or a bare 64-digit hex string (as in Helm's index.yaml).
    pub(crate) fn parse(text: &str) -> Result<Digest, DigestError> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        match valid {
            true => Ok(Digest {
                hex: hex.to_ascii_lowercase(),
            }),
            false => Err(DigestError { text: text.into() }),
        }
    }

    /// The 64 hex digits, as file names in the cache use them.
    pub(crate) fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_and_parses_both_spellings() {
        let digest = Digest::of(b"hello");
        let hex = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(digest.to_string(), format!("sha256:{hex}"));
        assert_eq!(Digest::parse(&format!("sha256:{hex}")), Ok(digest.clone()));
        assert_eq!(Digest::parse(&hex.to_uppercase()), Ok(digest));
    }

    #[test]
    fn refuses_other_algorithms_and_short_digests() {
        assert!(Digest::parse("sha512:abcd").is_err());
        assert!(Digest::parse("sha256:abcd").is_err());
        assert!(Digest::parse(&"g".repeat(64)).is_err());
    }
}
