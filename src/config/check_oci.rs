//! Checking the OCI sources of a `[[source]]`: `oci = "oci://…"` with one of `tag`,
//! `semver` or `digest`, and `chart = "oci://…"` with an optional `version`.

use super::check::Checker;
use super::raw::RawSource;
use super::source::{Insecure, OciConfig, OciPick, SourceLocation};
use crate::source::artifact::oci::Reference;
use crate::source::artifact::{Digest, VersionConstraint};

/// Whether a `chart` value names an OCI chart (the rest are the Helm repository
/// sources' charts).
pub(super) fn is_oci_chart(chart: &str) -> bool {
    chart.starts_with("oci://")
}

impl Checker<'_> {
    /// The OCI location of `raw`, when it has `oci` or an `oci://` chart; `None`
    /// when it is another kind of source. Problems are recorded, and then the
    /// location is `Some(None)`.
    pub(super) fn oci_location(
        &mut self,
        at: &str,
        raw: &RawSource,
    ) -> Option<Option<SourceLocation>> {
        let chart = raw.chart.as_deref().filter(|c| is_oci_chart(c));
        let (key, url) = match (raw.oci.as_deref(), chart) {
            (None, None) => {
                self.oci_only_keys(at, raw);
                return None;
            }
            (Some(_), Some(_)) => {
                self.problem(
                    at,
                    "both oci and chart are set; a source is one or the other, keep one",
                );
                return Some(None);
            }
            (Some(url), None) => ("oci", url),
            (None, Some(url)) => ("chart", url),
        };
        for (other, set) in [("dir", raw.dir.is_some()), ("git", raw.git.is_some())] {
            if set {
                self.problem(
                    at,
                    format!(
                        "both {key} and {other} are set; a source is one or the other, keep one"
                    ),
                );
            }
        }
        for (name, value) in raw.git_only_keys() {
            if !matches!(name, "tag" | "username_env" | "password_env") {
                self.problem(
                    at,
                    format!("{name} = {value:?}: only Git sources have {name}; remove it"),
                );
            }
        }
        let reference = self.oci_reference(at, key, url);
        let pick = match key {
            "oci" => self.artifact_pick(at, raw),
            _ => self.chart_pick(at, raw),
        };
        for (name, value) in [
            ("username_env", &raw.username_env),
            ("password_env", &raw.password_env),
        ] {
            if let Some(var) = value {
                self.env_var(at, name, var);
            }
        }
        let config = OciConfig {
            url: reference?.to_string(),
            pick: pick?,
            insecure: match raw.insecure {
                Some(true) => Insecure::AllowPlainHttp,
                _ => Insecure::No,
            },
            username_env: raw.username_env.clone(),
            password_env: raw.password_env.clone(),
        };
        Some(Some(match key {
            "oci" => SourceLocation::OciArtifact(config),
            _ => SourceLocation::OciChart(config),
        }))
    }

    /// `semver`, `digest` and `insecure` on a source that is not an OCI one (`version`
    /// belongs to Helm repository charts too).
    fn oci_only_keys(&mut self, at: &str, raw: &RawSource) {
        for (key, set) in [
            ("semver", raw.semver.is_some()),
            ("digest", raw.digest.is_some()),
            ("insecure", raw.insecure.is_some()),
        ] {
            if set {
                self.problem(
                    at,
                    format!("{key}: only OCI sources (oci = \"oci://…\") have {key}; remove it"),
                );
            }
        }
    }

    /// `oci://REGISTRY/REPOSITORY`, without a tag or digest (the keys say those).
    fn oci_reference(&mut self, at: &str, key: &str, url: &str) -> Option<Reference> {
        match Reference::parse(url) {
            Ok(reference) if reference.tag.is_none() && reference.digest.is_none() => {
                Some(reference)
            }
            Ok(reference) => {
                self.problem(
                    at,
                    format!(
                        "{key} = {url:?}: name the repository only ({}) and the tag, version \
                         or digest in its own key",
                        reference.repository_only()
                    ),
                );
                None
            }
            Err(error) => {
                self.problem(at, format!("{key} = {url:?}: {error}"));
                None
            }
        }
    }

    /// Exactly one of `tag`, `semver`, `digest`.
    fn artifact_pick(&mut self, at: &str, raw: &RawSource) -> Option<OciPick> {
        if raw.version.is_some() {
            self.problem(
                at,
                "version is for charts; an oci artifact follows tag, semver or digest",
            );
        }
        match (&raw.tag, &raw.semver, &raw.digest) {
            (Some(tag), None, None) => self.oci_tag(at, tag).map(OciPick::Tag),
            (None, Some(semver), None) => self.constraint(at, "semver", semver),
            (None, None, Some(digest)) => match Digest::parse(digest) {
                Ok(digest) => Some(OciPick::Digest(digest.to_string())),
                Err(error) => {
                    self.problem(at, format!("digest: {error}"));
                    None
                }
            },
            _ => {
                self.problem(
                    at,
                    "an oci source needs exactly one of tag = \"…\", semver = \"…\" or \
                     digest = \"sha256:…\"",
                );
                None
            }
        }
    }

    /// `version` (a constraint) or none: the latest stable version.
    fn chart_pick(&mut self, at: &str, raw: &RawSource) -> Option<OciPick> {
        for (key, set) in [("tag", raw.tag.is_some()), ("semver", raw.semver.is_some())] {
            if set {
                self.problem(
                    at,
                    format!("{key} is for oci artifacts; a chart follows version = \"…\""),
                );
            }
        }
        if let Some(digest) = &raw.digest {
            self.problem(
                at,
                format!("digest = {digest:?}: a chart is pinned by an exact version = \"1.2.3\""),
            );
        }
        match &raw.version {
            Some(version) => self.constraint(at, "version", version),
            None => Some(OciPick::LatestStable),
        }
    }

    fn constraint(&mut self, at: &str, key: &str, text: &str) -> Option<OciPick> {
        match VersionConstraint::parse(text) {
            Ok(_) => Some(OciPick::Semver(text.into())),
            Err(error) => {
                self.problem(at, format!("{key}: {error}"));
                None
            }
        }
    }

    fn oci_tag(&mut self, at: &str, tag: &str) -> Option<String> {
        if crate::source::artifact::oci::is_tag(tag) {
            return Some(tag.into());
        }
        self.problem(
            at,
            format!(
                "tag = {tag:?}: not an OCI tag; use 1-128 letters, digits, '.', '_' or '-', \
                 not starting with '.' or '-'"
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigFileError, SourceLocation};
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(source: &str) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[[source]]\nname = \"app\"\n{source}");
        let env = |name: &str| (name == "REG_TOKEN").then(|| "t0ken".to_string());
        match Config::parse_with_env(&text, &dir.path().join("config.toml"), &env) {
            Ok(config) => Ok(config),
            Err(ConfigFileError::Invalid { problems, .. }) => Err(problems),
            Err(other) => panic!("{other:?}"),
        }
    }

    fn location(source: &str) -> SourceLocation {
        parse(source).unwrap().sources[0].kind.clone()
    }

    fn problems(source: &str) -> String {
        parse(source).unwrap_err().join("\n")
    }

    #[test]
    fn artifacts_follow_a_tag_a_constraint_or_a_digest() {
        let config = |pick: OciPick| OciConfig {
            url: "oci://ghcr.io/org/app".into(),
            pick,
            insecure: Insecure::No,
            username_env: None,
            password_env: None,
        };
        let at = "oci = \"oci://ghcr.io/org/app\"\n";
        assert_eq!(
            location(&format!("{at}tag = \"latest\"")),
            SourceLocation::OciArtifact(config(OciPick::Tag("latest".into())))
        );
        assert_eq!(
            location(&format!("{at}semver = \">=1.2 <2\"")),
            SourceLocation::OciArtifact(config(OciPick::Semver(">=1.2 <2".into())))
        );
        assert_eq!(
            location(&format!("{at}digest = \"sha256:{HEX}\"")),
            SourceLocation::OciArtifact(config(OciPick::Digest(format!("sha256:{HEX}"))))
        );
        let SourceLocation::OciArtifact(with) = location(&format!(
            "{at}tag = \"v1\"\ninsecure = true\npassword_env = \"REG_TOKEN\""
        )) else {
            panic!("not an artifact")
        };
        assert_eq!(with.insecure, Insecure::AllowPlainHttp);
        assert_eq!(with.password_env.as_deref(), Some("REG_TOKEN"));
    }

    #[test]
    fn charts_take_a_version_or_the_latest_stable() {
        let at = "chart = \"oci://127.0.0.1:5000/charts/podinfo\"\n";
        let SourceLocation::OciChart(chart) = location(&format!("{at}version = \"6.14.x\"")) else {
            panic!("not a chart")
        };
        assert_eq!(chart.pick, OciPick::Semver("6.14.x".into()));
        let SourceLocation::OciChart(chart) = location(at) else {
            panic!("not a chart")
        };
        assert_eq!(chart.pick, OciPick::LatestStable);
    }

    #[test]
    fn each_mistake_is_named_with_its_key() {
        let at = "oci = \"oci://ghcr.io/org/app\"\n";
        for (source, expected) in [
            (at.to_string(), "exactly one of tag"),
            (
                format!("{at}tag = \"a\"\ndigest = \"sha256:{HEX}\""),
                "exactly one of tag",
            ),
            (
                format!("{at}digest = \"sha256:12\""),
                "digest: \"sha256:12\" is not a sha256",
            ),
            (
                format!("{at}semver = \"one\""),
                "semver: version \"one\" is not a semver",
            ),
            (format!("{at}tag = \"-x\""), "tag = \"-x\": not an OCI tag"),
            (
                format!("{at}tag = \"a\"\nbranch = \"main\""),
                "branch = \"main\": only Git",
            ),
            (
                format!("{at}tag = \"a\"\ndir = \"x\""),
                "both oci and dir are set",
            ),
            (
                format!("{at}tag = \"a\"\nversion = \"1\""),
                "version is for charts",
            ),
            (
                format!("{at}tag = \"a\"\npassword_env = \"NOPE\""),
                "NOPE is not set",
            ),
            (
                "oci = \"oci://ghcr.io/org/app:v1\"\ntag = \"v1\"".into(),
                "name the repository only (oci://ghcr.io/org/app)",
            ),
            (
                "oci = \"ghcr.io/org/app\"\ntag = \"v1\"".into(),
                "does not start with oci://",
            ),
            (
                "chart = \"oci://h/c\"\ntag = \"1\"".into(),
                "tag is for oci artifacts",
            ),
            (
                "chart = \"oci://h/c\"\noci = \"oci://h/a\"".into(),
                "both oci and chart are set",
            ),
            (
                "git = \"https://h/r.git\"\nsemver = \"1\"".into(),
                "semver: only OCI sources",
            ),
        ] {
            let found = problems(&source);
            assert!(
                found.contains("source[0] \"app\": ") && found.contains(expected),
                "{source:?}: {expected:?} not in {found}"
            );
        }
    }
}
