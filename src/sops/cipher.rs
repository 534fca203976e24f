//! SOPS's value encryption: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, AES-256-GCM
//! with a 32-byte IV and the value's path (`a:b:c:`) as additional data
//! (getsops/sops `aes/cipher.go`).

use super::error::Failure;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest form that reads back, never
/// with an exponent (Rust's `Display` agrees but for the infinities).
fn go_float(f: f64) -> String {
    match f {
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        _ => f.to_string(),
    }
}

/// A scalar, typed as sops types it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Leaf {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A comment sops wrote as a sequence item (`type:comment`): not in the MAC,
    /// not in the plaintext (`sops -d` prints it as a comment again).
    Comment(String),
}

impl Leaf {
    /// The bytes the MAC hashes (`sops.ToBytes`): Go's `strconv` forms, booleans as
    /// `True`/`False`.
    pub(super) fn mac_bytes(&self) -> Vec<u8> {
        match self {
            Leaf::Str(s) => s.as_bytes().to_vec(),
            Leaf::Int(i) => i.to_string().into_bytes(),
            Leaf::Float(f) => go_float(*f).into_bytes(),
            Leaf::Bool(true) => b"True".to_vec(),
            Leaf::Bool(false) => b"False".to_vec(),
            Leaf::Comment(_) => Vec::new(),
        }
    }
}

/// AES-256-GCM with SOPS's 32-byte nonce.
type Cipher = AesGcm<Aes256, U32>;

/// The 32-byte data key of a file, wiped when dropped.
pub(super) type DataKey = Zeroizing<[u8; 32]>;

/// One encrypted value, split into its parts.
struct Encrypted<'a> {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: &'a str,
}

/// `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` split, as sops's regular expression
/// splits it.
fn parse(value: &str) -> Option<Encrypted<'_>> {
    let inner = value.strip_prefix("ENC[AES256_GCM,data:")?;
    let end = inner.rfind(']')?;
    let inner = &inner[..end];
    let (data, rest) = inner.split_once(",iv:")?;
    let (iv, rest) = rest.split_once(",tag:")?;
    let (tag, kind) = rest.split_once(",type:")?;
    Some(Encrypted {
        data: STANDARD.decode(data).ok()?,
        iv: STANDARD.decode(iv).ok()?,
        tag: STANDARD.decode(tag).ok()?,
        kind,
    })
}

/// Decrypts one value with `aad` (the path) as additional data, typed as its
/// `type:` says. An empty string was never encrypted and stays empty, as in sops.
/// Errors say why without the value.
pub(super) fn decrypt(value: &str, key: &DataKey, aad: &str) -> Result<Leaf, &'static str> {
    if value.is_empty() {
        return Ok(Leaf::Str(String::new()));
    }
    let parts =
        parse(value).ok_or("it is not in the ENC[AES256_GCM,data:…,iv:…,tag:…,type:…] form")?;
    if parts.iv.len() != 32 || parts.tag.len() != 16 {
        return Err("its IV or tag has the wrong length");
    }
    let cipher =
        Cipher::new_from_slice(key.as_slice()).map_err(|_| "the data key has the wrong length")?;
    let mut sealed = parts.data;
    sealed.extend_from_slice(&parts.tag);
    let payload = Payload {
        msg: &sealed,
        aad: aad.as_bytes(),
    };
    let plain = cipher
        .decrypt(Nonce::<U32>::from_slice(&parts.iv), payload)
        .map_err(|_| "authentication failed (tampered value, or moved to another key)")?;
    let text = String::from_utf8(plain).map_err(|_| "the plaintext is not UTF-8")?;
    typed(text, parts.kind)
}

/// The plaintext as its type says (`strconv` semantics of sops's Go).
fn typed(text: String, kind: &str) -> Result<Leaf, &'static str> {
    Ok(match kind {
        "str" | "bytes" | "time" => Leaf::Str(text),
        // sops writes a comment inside a sequence as an item of type comment.
        "comment" => Leaf::Comment(text),
        "int" => Leaf::Int(text.parse().map_err(|_| "its int is not a number")?),
        "float" => Leaf::Float(text.parse().map_err(|_| "its float is not a number")?),
        "bool" => Leaf::Bool(match text.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err("its bool is neither true nor false"),
        }),
        _ => return Err("its type is unknown"),
    })
}

/// The MAC's own decryption: a `str` value whose additional data is the
/// `lastmodified` time.
pub(super) fn decrypt_mac(
    value: &str,
    key: &DataKey,
    last_modified: &str,
) -> Result<String, Failure> {
    match decrypt(value, key, last_modified) {
        Ok(Leaf::Str(mac)) => Ok(mac),
        Ok(_) | Err(_) => Err(Failure::Mac),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use aes_gcm::aead::AeadCore as _;

    /// Encrypts as sops does (for tests: the fixtures proper come from real sops).
    pub(crate) fn encrypt(plain: &str, kind: &str, key: &DataKey, aad: &str) -> String {
        let cipher = Cipher::new_from_slice(key.as_slice()).unwrap();
        let iv = Cipher::generate_nonce(&mut aes_gcm::aead::OsRng);
        let out = cipher
            .encrypt(
                &iv,
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        let (data, tag) = out.split_at(out.len() - 16);
        format!(
            "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
            STANDARD.encode(data),
            STANDARD.encode(iv),
            STANDARD.encode(tag)
        )
    }

    #[test]
    fn a_value_round_trips_only_under_its_own_path() {
        let key = Zeroizing::new([7u8; 32]);
        let sealed = encrypt("hunter2", "str", &key, "data:password:");
        assert_eq!(
            decrypt(&sealed, &key, "data:password:"),
            Ok(Leaf::Str("hunter2".into()))
        );
        assert!(
            decrypt(&sealed, &key, "data:other:").is_err(),
            "the path is authenticated"
        );
        let other = Zeroizing::new([8u8; 32]);
        assert!(decrypt(&sealed, &other, "data:password:").is_err());
        let int = encrypt("42", "int", &key, "n:");
        assert_eq!(decrypt(&int, &key, "n:"), Ok(Leaf::Int(42)));
        let flag = encrypt("True", "bool", &key, "b:");
        assert_eq!(decrypt(&flag, &key, "b:"), Ok(Leaf::Bool(true)));
        assert_eq!(decrypt("", &key, "e:"), Ok(Leaf::Str(String::new())));
        assert!(
            decrypt("ENC[AES256_GCM,data:x", &key, "t:").is_err(),
            "truncated"
        );
    }
}
