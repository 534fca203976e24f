//! `depends_on` on objects: a source waits until an object in the cluster is
//! ready, by its health or by a CEL expression of its own.
//!
//! ```toml
//! depends_on = ["infra",
//!   { object = "apiextensions.k8s.io/v1/CustomResourceDefinition/certificates.cert-manager.io" },
//!   { object = "v1/Service/db/postgres", ready = "size(self.spec.clusterIP) > 0" }]
//! ```
//!
//! An object is written `API_VERSION/KIND/[NAMESPACE/]NAME`; the core group's
//! version is `v1`, so `v1/Service/db/postgres` is namespaced and
//! `apps/v1/Deployment/web` is a Deployment in the source's namespace. The
//! watching itself is the daemon's ([`crate::daemon`]); this module is the pure
//! part: reading the reference, and judging one live object.

use super::rules::{Expression, RuleError};
use super::{HealthModel, State};
use crate::kube::GroupVersion;
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// One `depends_on` entry as written: a source's name or an object.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DependencySpec {
    Source(String),
    Object(ObjectSpec),
}

/// `{ object = "…", ready = "…" }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    pub object: String,
    pub ready: Option<String>,
}

/// An object a source waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectDependency {
    pub api_version: String,
    pub group: String,
    pub kind: String,
    /// `None`: cluster-scoped, or the source's namespace for a namespaced kind.
    pub namespace: Option<String>,
    pub name: String,
    /// The condition instead of the object's health.
    pub ready: Option<Expression>,
}

impl fmt::Display for ObjectDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.api_version, self.kind)?;
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// The `depends_on` entries of a source: the sources' names, the objects.
#[derive(Debug, Default)]
pub struct Dependencies {
    pub sources: Vec<String>,
    pub objects: Vec<ObjectDependency>,
}

impl Dependencies {
    /// Splits `specs`, written at `at` (`source "app": depends_on`), compiling
    /// every `ready` expression; every problem is returned.
    pub fn read(at: &str, specs: Vec<DependencySpec>) -> (Dependencies, Vec<RuleError>) {
        let mut dependencies = Dependencies::default();
        let mut problems = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            match spec {
                DependencySpec::Source(name) => dependencies.sources.push(name),
                DependencySpec::Object(object) => {
                    match ObjectDependency::read(&format!("{at}[{index}]"), &object) {
                        Ok(object) => dependencies.objects.push(object),
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
        (dependencies, problems)
    }
}

impl ObjectDependency {
    fn read(at: &str, spec: &ObjectSpec) -> Result<ObjectDependency, RuleError> {
        let problem = |message: String| RuleError::Target {
            key: format!("{at}.object"),
            message,
        };
        let parts: Vec<&str> = spec.object.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(problem(format!(
                "{:?}: write API_VERSION/KIND/[NAMESPACE/]NAME",
                spec.object
            )));
        }
        // The core group's only version is v1: `v1/Kind/…` has no group part.
        let (api_version, rest) = match parts.as_slice() {
            ["v1", rest @ ..] => ("v1".to_string(), rest),
            [group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return Err(problem(format!("{:?}: too short", spec.object))),
        };
        let (kind, namespace, name) = match rest {
            [kind, name] => (kind, None, name),
            [kind, namespace, name] => (kind, Some(namespace.to_string()), name),
            _ => {
                return Err(problem(format!(
                    "{:?}: write API_VERSION/KIND/[NAMESPACE/]NAME",
                    spec.object
                )));
            }
        };
        let group = GroupVersion::parse(&api_version).map_or("", |gv| gv.group);
        let ready = match &spec.ready {
            Some(source) => Some(Expression::compile(&format!("{at}.ready"), source)?),
            None => None,
        };
        Ok(ObjectDependency {
            group: group.to_string(),
            api_version,
            kind: kind.to_string(),
            namespace,
            name: name.to_string(),
            ready,
        })
    }

    /// Whether `live` (absent: `None`) satisfies this dependency, and why not.
    pub fn judge(&self, live: Option<&Value>, model: &HealthModel) -> Verdict {
        let Some(live) = live else {
            return Verdict::waiting("not found in the cluster");
        };
        let health = model.assess(live);
        let Some(expression) = &self.ready else {
            return match health.state {
                State::Ready => Verdict::Satisfied,
                _ => Verdict::waiting(format!("{health} (by {})", health.rule)),
            };
        };
        match expression.holds_for(live) {
            Ok(true) => Verdict::Satisfied,
            Ok(false) => Verdict::waiting(format!(
                "ready = {:?} is false; its health: {health} (by {})",
                &*expression.source, health.rule
            )),
            Err(e) => Verdict::waiting(format!(
                "ready = {:?} cannot be evaluated: {e}; its health: {health} (by {})",
                &*expression.source, health.rule
            )),
        }
    }
}

/// Whether a dependency on an object is met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Satisfied,
    /// Not yet, and why (for `/status`, `converge status` and the Events).
    Waiting(String),
}

impl Verdict {
    pub fn waiting(why: impl Into<String>) -> Verdict {
        Verdict::Waiting(why.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(text: &str, ready: Option<&str>) -> Result<ObjectDependency, RuleError> {
        let spec = ObjectSpec {
            object: text.into(),
            ready: ready.map(str::to_string),
        };
        ObjectDependency::read("source \"app\": depends_on[1]", &spec)
    }

    #[test]
    fn references_read_core_and_grouped_kinds() {
        let svc = object("v1/Service/db/postgres", None).expect("ok");
        assert_eq!(
            (
                svc.group.as_str(),
                svc.kind.as_str(),
                svc.namespace.as_deref(),
                svc.name.as_str()
            ),
            ("", "Service", Some("db"), "postgres")
        );
        let crd = object(
            "apiextensions.k8s.io/v1/CustomResourceDefinition/certificates.cert-manager.io",
            None,
        )
        .expect("ok");
        assert_eq!(crd.group, "apiextensions.k8s.io");
        assert_eq!(crd.namespace, None);
        assert_eq!(crd.name, "certificates.cert-manager.io");
        assert_eq!(
            crd.to_string(),
            "apiextensions.k8s.io/v1/CustomResourceDefinition/certificates.cert-manager.io"
        );
        let deploy = object("apps/v1/Deployment/shop/web", None).expect("ok");
        assert_eq!(deploy.namespace.as_deref(), Some("shop"));
        assert!(object("v1/Service", None).is_err());
        assert!(object("v1//x", None).is_err());
        assert!(object("apps/v1/Deployment/a/b/c", None).is_err());
    }

    #[test]
    fn a_bad_ready_expression_names_its_key() {
        let error = object("v1/Service/db/postgres", Some("size(self.spec.")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("source \"app\": depends_on[1].ready: line 1, column"),
            "{error}"
        );
    }

    #[test]
    fn sources_and_objects_are_told_apart() {
        let specs: Vec<DependencySpec> = toml::from_str::<toml::Table>(
            "d = [\"infra\", { object = \"v1/Service/db/postgres\", ready = \"true\" }]",
        )
        .expect("toml")["d"]
            .clone()
            .try_into()
            .expect("specs");
        let (dependencies, problems) = Dependencies::read("depends_on", specs);
        assert!(problems.is_empty());
        assert_eq!(dependencies.sources, ["infra"]);
        assert_eq!(dependencies.objects.len(), 1);
    }

    #[test]
    fn the_expression_or_the_health_decides() {
        let model = HealthModel::default();
        let with_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres"},
                             "spec": {"clusterIP": "10.0.0.1"}});
        let expression = object(
            "v1/Service/db/postgres",
            Some("self.spec.clusterIP == '10.0.0.2'"),
        )
        .expect("ok");
        let Verdict::Waiting(why) = expression.judge(Some(&with_ip), &model) else {
            panic!("satisfied");
        };
        assert_eq!(
            why,
            "ready = \"self.spec.clusterIP == '10.0.0.2'\" is false; its health: ready: cluster IP 10.0.0.1 (by built-in)"
        );
        let health = object("v1/Service/db/postgres", None).expect("ok");
        assert_eq!(health.judge(Some(&with_ip), &model), Verdict::Satisfied);
        assert_eq!(
            health.judge(None, &model),
            Verdict::waiting("not found in the cluster")
        );
    }
}
