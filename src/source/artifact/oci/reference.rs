//! `oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]` as sources and the CLI write it (pure).
//!
//! The `oci://` prefix is Helm's and Flux's spelling; it says "a registry", not a
//! scheme: whether the registry is reached over HTTPS or plain HTTP is decided by
//! [`Reference::transport`] (plain HTTP only for a loopback host or an explicit
//! `insecure = true`), so a typo cannot silently downgrade a remote registry.

use std::fmt;
use std::net::IpAddr;

use super::super::digest::Digest;
use crate::config::Insecure;

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegistryTransport {
    /// `https://`, verified against the system trust store.
    Https,
    /// Plain `http://`: a loopback registry, or one the user marked `insecure`.
    Http,
}

/// An OCI reference, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `host[:port]`.
    pub(crate) registry: String,
    /// The repository path below the registry (`charts/podinfo`).
    pub(crate) repository: String,
    /// A tag (`6.14.0`, `latest`), if the reference names one.
    pub(crate) tag: Option<String>,
    /// A manifest digest, if the reference pins one; it wins over the tag.
    pub(crate) digest: Option<Digest>,
}

/// Why `oci://…` text is not a reference; the message says what a good one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an OCI reference: {why}; write oci://REGISTRY/REPOSITORY (e.g. \
     oci://ghcr.io/org/app), optionally with :TAG or @sha256:DIGEST"
)]
pub(crate) struct ReferenceError {
    text: String,
    why: &'static str,
}

impl Reference {
    /// Parses `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`.
    pub(crate) fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let fail = |why| ReferenceError {
            text: text.into(),
            why,
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| fail("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| fail("there is no repository after the registry"))?;
        if registry.is_empty() || !registry.bytes().all(is_host_byte) {
            return Err(fail("the registry is not a host[:port]"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                let digest =
                    Digest::parse(digest).map_err(|_| fail("the digest is not sha256:<64 hex>"))?;
                (path, Some(digest))
            }
            None => (path, None),
        };
        let last_slash = path.rfind('/').map_or(0, |at| at + 1);
        let (repository, tag) = match path[last_slash..].find(':') {
            Some(colon) => (
                &path[..last_slash + colon],
                Some(&path[last_slash + colon + 1..]),
            ),
            None => (path, None),
        };
        if !is_repository(repository) {
            return Err(fail(
                "the repository must be lowercase letters, digits and . _ - / separated parts",
            ));
        }
        if let Some(tag) = tag {
            if !is_tag(tag) {
                return Err(fail(
                    "the tag must be 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'",
                ));
            }
        }
        Ok(Reference {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
            digest,
        })
    }

    /// HTTPS, unless the registry is on loopback or `insecure` allows plain HTTP.
    pub(crate) fn transport(&self, insecure: Insecure) -> RegistryTransport {
        match (insecure, is_loopback(&self.registry)) {
            (Insecure::AllowPlainHttp, _) | (Insecure::No, true) => RegistryTransport::Http,
            (Insecure::No, false) => RegistryTransport::Https,
        }
    }

    /// The same repository without tag or digest: what a source names.
    pub(crate) fn repository_only(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
}

/// The distribution spec's repository name: lowercase path components of
/// `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s, separated by `/`.
fn is_repository(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn is_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !tag.starts_with(['.', '-'])
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_repository_tag_and_digest() {
        let r = Reference::parse("oci://127.0.0.1:5000/charts/podinfo:6.14.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "charts/podinfo");
        assert_eq!(r.tag.as_deref(), Some("6.14.0"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/charts/podinfo:6.14.0");

        let hex = "a".repeat(64);
        let r = Reference::parse(&format!("oci://ghcr.io/org/app@sha256:{hex}")).unwrap();
        assert_eq!(r.repository, "org/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().hex(), hex);

        let r = Reference::parse("oci://ghcr.io/org/app").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
    }

    #[test]
    fn refuses_what_is_not_a_reference() {
        for text in [
            "https://ghcr.io/org/app",
            "oci://ghcr.io",
            "oci:///app",
            "oci://ghcr.io/Org/App",
            "oci://ghcr.io/org//app",
            "oci://ghcr.io/org/app:",
            "oci://ghcr.io/org/app:-x",
            "oci://ghcr.io/org/app@sha256:abc",
            "oci://gh cr.io/org/app",
        ] {
            let error = Reference::parse(text).unwrap_err().to_string();
            assert!(
                error.contains("write oci://REGISTRY/REPOSITORY"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn plain_http_only_for_loopback_or_when_allowed() {
        let at = |text: &str| Reference::parse(text).unwrap();
        assert_eq!(
            at("oci://127.0.0.1:5000/a").transport(Insecure::No),
            RegistryTransport::Http
        );
        assert_eq!(
            at("oci://localhost/a").transport(Insecure::No),
            RegistryTransport::Http
        );
        assert_eq!(
            at("oci://[::1]:5000/a").transport(Insecure::No),
            RegistryTransport::Http
        );
        assert_eq!(
            at("oci://ghcr.io/a").transport(Insecure::No),
            RegistryTransport::Https
        );
        assert_eq!(
            at("oci://127.example.com/a").transport(Insecure::No),
            RegistryTransport::Https
        );
        assert_eq!(
            at("oci://registry.lan:5000/a").transport(Insecure::AllowPlainHttp),
            RegistryTransport::Http
        );
    }
}
