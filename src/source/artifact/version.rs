//! Which published version a source follows: Helm's version constraints (the
//! Masterminds/semver syntax Helm, Flux and Argo CD accept) over the versions a
//! chart repository indexes or the tags an OCI repository lists.
//!
//! Helm's syntax differs from Cargo's in three ways this module translates: a bare
//! version is exact (`1.2.3` means `=1.2.3`, not `^1.2.3`), comparators may be
//! separated by spaces as well as commas, and `||` joins alternatives. `1.2 - 1.4`
//! is a range. As in Helm, a pre-release is chosen only by a constraint that names
//! one, and no constraint means the latest stable version.

use semver::{Version, VersionReq};
use std::fmt;

/// A parsed constraint; [`VersionConstraint::highest`] applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionConstraint {
    text: String,
    /// Any of these matches; none at all means "the latest stable version".
    alternatives: Vec<VersionReq>,
}

/// A constraint that is not Helm's semver syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "version {text:?} is not a semver constraint ({detail}); write an exact version (6.14.1), \
     a wildcard (6.14.x), a range (>=6.14.0 <7), ~6.14 or ^6"
)]
pub(crate) struct VersionError {
    text: String,
    detail: String,
}

impl VersionConstraint {
    /// The highest version without a pre-release part.
    pub(crate) fn latest_stable() -> VersionConstraint {
        VersionConstraint {
            text: "latest stable".into(),
            alternatives: Vec::new(),
        }
    }

    pub(crate) fn parse(text: &str) -> Result<VersionConstraint, VersionError> {
        let error = |detail: String| VersionError {
            text: text.into(),
            detail,
        };
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let cargo = cargo_syntax(alternative).map_err(error)?;
            let req = VersionReq::parse(&cargo).map_err(|e| error(e.to_string()))?;
            alternatives.push(req);
        }
        Ok(VersionConstraint {
            text: text.trim().into(),
            alternatives,
        })
    }

    /// The highest candidate that matches (`v1.2.3` and Helm's OCI tags, which spell
    /// `+` as `_`, are read as versions); strings that are not versions are ignored.
    pub(crate) fn highest<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        candidates
            .into_iter()
            .filter_map(|text| Some((read_version(text)?, text)))
            .filter(|(version, _)| self.matches(version))
            .max_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, text)| text)
    }

    fn matches(&self, version: &Version) -> bool {
        match self.alternatives.is_empty() {
            true => version.pre.is_empty(),
            false => self.alternatives.iter().any(|req| req.matches(version)),
        }
    }
}

impl fmt::Display for VersionConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn read_version(text: &str) -> Option<Version> {
    let text = text.strip_prefix('v').unwrap_or(text);
    Version::parse(&text.replace('_', "+")).ok()
}

/// One `||` alternative in Cargo's syntax: comma-separated comparators, each with an
/// operator (a bare version becomes `=`), `a - b` becoming `>=a, <=b`.
fn cargo_syntax(alternative: &str) -> Result<String, String> {
    let tokens: Vec<&str> = alternative
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|token| !token.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err("an empty alternative".into());
    }
    let mut comparators = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let token = tokens[index];
        if tokens.get(index + 1) == Some(&"-") {
            let upper = tokens
                .get(index + 2)
                .ok_or("a range without its upper end")?;
            comparators.push(format!(">={}", bare(token)));
            comparators.push(format!("<={}", bare(upper)));
            index += 3;
            continue;
        }
        let is_operator = !token.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '*');
        let comparator = match token.trim_start_matches(['=', '<', '>', '~', '^']) {
            "" => {
                let version = tokens
                    .get(index + 1)
                    .ok_or("an operator without a version")?;
                index += 1;
                format!("{token}{}", bare(version))
            }
            version if is_operator => {
                let operator = &token[..token.len() - version.len()];
                format!("{operator}{}", bare(version))
            }
            version => format!("={}", bare(version)),
        };
        comparators.push(comparator);
        index += 1;
    }
    Ok(comparators.join(", "))
}

fn bare(version: &str) -> &str {
    version.strip_prefix('v').unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHED: [&str; 8] = [
        "6.13.0",
        "6.14.0",
        "6.14.1",
        "v6.14.2",
        "6.15.0-rc.1",
        "7.0.0",
        "not-a-version",
        "6.14.3_build.1",
    ];

    fn pick(constraint: &str) -> Option<&'static str> {
        VersionConstraint::parse(constraint)
            .unwrap()
            .highest(PUBLISHED)
    }

    #[test]
    fn helm_constraints_pick_the_highest_match() {
        assert_eq!(pick("6.14.x"), Some("6.14.3_build.1"));
        assert_eq!(pick("6.14.1"), Some("6.14.1"), "a bare version is exact");
        assert_eq!(pick("v6.14.0"), Some("6.14.0"));
        assert_eq!(pick("~6.13"), Some("6.13.0"));
        assert_eq!(pick("^6"), Some("6.14.3_build.1"));
        assert_eq!(pick(">=6.14.0 <6.14.2"), Some("6.14.1"));
        assert_eq!(pick(">= 6.14.0, < 6.14.2"), Some("6.14.1"));
        assert_eq!(pick("6.13.0 - 6.14.1"), Some("6.14.1"));
        assert_eq!(pick("6.13.x || >=7"), Some("7.0.0"));
        assert_eq!(pick("8.x"), None);
    }

    #[test]
    fn pre_releases_only_when_named() {
        assert_eq!(pick(">=6.15.0-rc.0 <7"), Some("6.15.0-rc.1"));
        assert_eq!(pick("6.15.x"), None);
        let latest = VersionConstraint::latest_stable();
        assert_eq!(latest.highest(PUBLISHED), Some("7.0.0"));
        assert_eq!(latest.highest(["7.1.0-beta.1", "not"]), None);
    }

    #[test]
    fn malformed_constraints_are_refused_with_examples() {
        for text in ["", "6.14.x ||", ">=", "1 -", "six"] {
            let error = VersionConstraint::parse(text).unwrap_err().to_string();
            assert!(
                error.contains("is not a semver constraint"),
                "{text}: {error}"
            );
            assert!(error.contains("6.14.x"), "{error}");
        }
    }
}
