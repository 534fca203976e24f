//! The API server's naming rules that converge checks before sending anything.

/// Whether `name` is an RFC 1123 DNS label (Kubernetes' `IsDNS1123Label`): 1-63
/// lowercase letters, digits and '-', starting and ending with a letter or digit.
/// Namespaces must be one; so are converge's ApplySet (source) names, which also
/// appear in URLs (`/hooks/git/<name>`).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(ok)
        && bytes.last().is_some_and(ok)
        && bytes.iter().all(|b| ok(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "shop", "shop-1", "0", "a--b", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a.b",
            "a/b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
