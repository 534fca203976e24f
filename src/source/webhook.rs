//! Verifying that a webhook call (`POST /hooks/git/<source>`) comes from the Git host.
//!
//! A webhook only triggers a fetch, so a forged call cannot change what is applied;
//! verification still matters because unauthenticated calls would let anyone make
//! converge hammer the Git host. Comparisons are constant-time.

use ring::hmac;

/// Checks GitHub's (and Gitea's, Forgejo's) `X-Hub-Signature-256: sha256=<hex>`
/// header: an HMAC-SHA256 of the raw request body keyed with the webhook secret.
/// A missing or malformed header is a failed check.
pub fn verify_github_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(signature) = decode_hex(hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &signature).is_ok()
}

/// Signs `body` the way [`verify_github_signature`] checks it: `sha256=<hex>` of
/// its HMAC-SHA256 keyed with `secret`. converge's own webhook notifications
/// carry it, so a receiver can verify them as it verifies GitHub's.
pub fn sign_github_signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Checks a shared-token header such as GitLab's `X-Gitlab-Token` against the secret.
/// Both sides are hashed first so the comparison leaks neither content nor length.
pub fn verify_token(secret: &[u8], header: Option<&str>) -> bool {
    let Some(token) = header else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"converge-token-compare");
    let expected = hmac::sign(&key, secret);
    hmac::verify(&key, token.as_bytes(), expected.as_ref()).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    /// GitHub's documented example ("Validating webhook deliveries").
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_example_vector_verifies() {
        assert!(verify_github_signature(SECRET, BODY, Some(SIGNATURE)));
        let upper = format!("sha256={}", SIGNATURE["sha256=".len()..].to_uppercase());
        assert!(verify_github_signature(SECRET, BODY, Some(&upper)));
    }

    #[test]
    fn signing_gives_github_example_vector() {
        assert_eq!(sign_github_signature(SECRET, BODY), SIGNATURE);
        let signed = sign_github_signature(b"k", b"{}");
        assert!(verify_github_signature(b"k", b"{}", Some(&signed)));
    }

    #[test]
    fn wrong_secret_body_or_header_fails() {
        assert!(!verify_github_signature(b"other", BODY, Some(SIGNATURE)));
        assert!(!verify_github_signature(
            SECRET,
            b"Hello, World?",
            Some(SIGNATURE)
        ));
        assert!(!verify_github_signature(SECRET, BODY, None));
        assert!(!verify_github_signature(SECRET, BODY, Some("")));
        let sha1 = SIGNATURE.replace("sha256=", "sha1=");
        assert!(!verify_github_signature(SECRET, BODY, Some(&sha1)));
        assert!(!verify_github_signature(SECRET, BODY, Some("sha256=zz")));
        assert!(!verify_github_signature(SECRET, BODY, Some("sha256=757")));
        assert!(!verify_github_signature(
            SECRET,
            BODY,
            Some(&SIGNATURE[..70])
        ));
        let multibyte = "sha256=é7";
        assert!(!verify_github_signature(SECRET, BODY, Some(multibyte)));
    }

    #[test]
    fn token_header() {
        assert!(verify_token(b"t0ken", Some("t0ken")));
        assert!(!verify_token(b"t0ken", Some("t0ke")));
        assert!(!verify_token(b"t0ken", Some("")));
        assert!(!verify_token(b"t0ken", None));
    }
}
