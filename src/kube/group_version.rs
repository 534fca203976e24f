//! An `apiVersion` as the API server reads it: a group and a version.

use std::fmt;

/// A borrowed `apiVersion` split into group and version, as Kubernetes'
/// `schema.ParseGroupVersion` splits it: `apps/v1` → (`apps`, `v1`), `v1` → the core
/// group (``, `v1`), `` → (``, ``).
///
/// Why one parser: manifests, discovery and health each split `apiVersion`; two of
/// them once disagreed on `a/b/c`, which the API server rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupVersion<'a> {
    /// Empty for the core group.
    pub group: &'a str,
    pub version: &'a str,
}

/// An `apiVersion` with more than one `/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected apiVersion {0:?}: write VERSION (`v1`) or GROUP/VERSION (`apps/v1`)")]
pub struct InvalidApiVersion(pub String);

impl<'a> GroupVersion<'a> {
    /// Splits `api_version`; more than one `/` is an error, as in Kubernetes.
    pub fn parse(api_version: &'a str) -> Result<Self, InvalidApiVersion> {
        if api_version == "/" {
            return Ok(GroupVersion {
                group: "",
                version: "",
            });
        }
        match api_version.split_once('/') {
            None => Ok(GroupVersion {
                group: "",
                version: api_version,
            }),
            Some((group, version)) if !version.contains('/') => Ok(GroupVersion { group, version }),
            Some(_) => Err(InvalidApiVersion(api_version.to_string())),
        }
    }
}

impl fmt::Display for GroupVersion<'_> {
    /// `v1` or `apps/v1`: the form it was parsed from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.version)
        } else {
            write!(f, "{}/{}", self.group, self.version)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(api_version: &str) -> Result<(&str, &str), InvalidApiVersion> {
        GroupVersion::parse(api_version).map(|gv| (gv.group, gv.version))
    }

    #[test]
    fn parses_like_kubernetes_parse_group_version() {
        assert_eq!(parts("apps/v1"), Ok(("apps", "v1")));
        assert_eq!(parts("v1"), Ok(("", "v1")));
        assert_eq!(parts(""), Ok(("", "")));
        assert_eq!(parts("/"), Ok(("", "")));
        assert_eq!(
            parts("rbac.authorization.k8s.io/v1"),
            Ok(("rbac.authorization.k8s.io", "v1"))
        );
        assert_eq!(parts("apps/"), Ok(("apps", "")));
        let err = parts("a/b/c").unwrap_err();
        assert_eq!(err, InvalidApiVersion("a/b/c".into()));
        assert!(err.to_string().contains("GROUP/VERSION"), "{err}");
    }

    #[test]
    fn displays_as_written() {
        for text in ["v1", "apps/v1"] {
            assert_eq!(
                GroupVersion::parse(text).map(|gv| gv.to_string()),
                Ok(text.into())
            );
        }
    }
}
