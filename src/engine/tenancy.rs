//! What a source may touch: the namespaces it may write into and whether it may
//! write cluster-scoped objects (a source's `allowed_namespaces` and
//! `allow_cluster_scoped`). An object outside them is refused before any request,
//! naming the object, its file and the rule, so that one team's repository cannot
//! reach into another team's namespace even where RBAC would let converge's own
//! identity. Pure: the engine applies it to the resolved manifests.

use crate::manifest::{ObjectRef, Origin, Problem};
use std::fmt;

/// A namespace name, or a pattern with `*` standing for any characters
/// (`team-a-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern(String);

impl NamespacePattern {
    /// Lowercase letters, digits, `-` and `*`, at most 63 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
        match valid {
            true => Ok(NamespacePattern(text.into())),
            false => Err(format!(
                "{text:?} is not a namespace or a pattern of one; use lowercase letters, \
                 digits, '-' and '*' (any characters), e.g. \"team-a\" or \"team-a-*\""
            )),
        }
    }

    pub fn matches(&self, namespace: &str) -> bool {
        glob(self.0.as_bytes(), namespace.as_bytes())
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Whether a source may write cluster-scoped objects (ClusterRoles, Namespaces,
/// CRDs, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterScoped {
    #[default]
    Allowed,
    Refused,
}

/// The bounds of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// `None`: any namespace.
    pub namespaces: Option<Vec<NamespacePattern>>,
    pub cluster_scoped: ClusterScoped,
}

impl Tenancy {
    /// Whether objects may go into `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(namespace)))
    }

    /// Why `object` (read from `origin`) is out of bounds, if it is.
    pub fn refusal(&self, object: &ObjectRef, origin: &Origin) -> Option<Problem> {
        let message = match &object.namespace {
            Some(ns) if !self.allows_namespace(ns) => format!(
                "namespace {ns:?} is not among this source's allowed_namespaces ({}); \
                 nothing was sent for it",
                self.patterns()
            ),
            None if self.cluster_scoped == ClusterScoped::Refused => {
                "a cluster-scoped object, and this source may not write those \
                 (allow_cluster_scoped = false, the default for a source with a \
                 service_account); nothing was sent for it"
                    .to_string()
            }
            _ => return None,
        };
        Some(Problem {
            origin: origin.clone(),
            object: Some(object.to_string()),
            message,
        })
    }

    fn patterns(&self) -> String {
        let patterns = self.namespaces.iter().flatten();
        let quoted: Vec<String> = patterns.map(|p| format!("{:?}", p.0)).collect();
        quoted.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn pattern(text: &str) -> NamespacePattern {
        NamespacePattern::parse(text).expect("a pattern")
    }

    fn object(namespace: Option<&str>) -> ObjectRef {
        ObjectRef {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: namespace.map(str::to_string),
            name: "x".into(),
        }
    }

    fn origin() -> Origin {
        Origin {
            file: PathBuf::from("app.yaml"),
            line: 3,
        }
    }

    #[test]
    fn patterns_match_names_and_globs() {
        assert!(pattern("team-a").matches("team-a"));
        assert!(!pattern("team-a").matches("team-ab"));
        assert!(pattern("team-a-*").matches("team-a-dev"));
        assert!(!pattern("team-a-*").matches("team-a"));
        assert!(pattern("*-prod").matches("shop-prod"));
        assert!(pattern("*").matches("anything"));
        assert!(NamespacePattern::parse("Team").is_err());
        assert!(NamespacePattern::parse("").is_err());
    }

    #[test]
    fn objects_outside_the_namespaces_or_cluster_scoped_are_refused() {
        let tenancy = Tenancy {
            namespaces: Some(vec![pattern("team-a"), pattern("team-a-*")]),
            cluster_scoped: ClusterScoped::Refused,
        };
        assert!(
            tenancy
                .refusal(&object(Some("team-a")), &origin())
                .is_none()
        );
        assert!(
            tenancy
                .refusal(&object(Some("team-a-dev")), &origin())
                .is_none()
        );
        let refused = tenancy
            .refusal(&object(Some("team-b")), &origin())
            .expect("refused");
        assert_eq!(
            refused.to_string(),
            "app.yaml:3: ConfigMap/team-b/x: namespace \"team-b\" is not among this \
             source's allowed_namespaces (\"team-a\", \"team-a-*\"); nothing was sent for it"
        );
        let cluster = tenancy.refusal(&object(None), &origin()).expect("refused");
        assert!(cluster.message.starts_with("a cluster-scoped object"));
        let open = Tenancy::default();
        assert!(open.refusal(&object(None), &origin()).is_none());
        assert!(open.refusal(&object(Some("any")), &origin()).is_none());
    }
}
