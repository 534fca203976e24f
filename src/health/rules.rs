//! Health rules users write: CEL expressions over the live object, per kind.
//!
//! converge's built-in rules and kstatus cannot know what "ready" means for every
//! custom resource. A `[[health]]` table (global, per source, or in a `--health`
//! file) says it in CEL, the expression language Kubernetes itself uses (CRD
//! validation rules, admission policies), with Flux's three checks evaluated in
//! Flux's order:
//!
//! ```toml
//! [[health]]
//! api_version = "cert-manager.io/v1"   # or group = "cert-manager.io" for every kind
//! kind = "Certificate"
//! in_progress = "self.status.conditions.exists(c, c.type == 'Issuing' && c.status == 'True')"
//! failed = "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False')"
//! current = "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"
//! message = "self.status.conditions.filter(c, c.type == 'Ready').map(c, c.message)"
//! ```
//!
//! Everything is compiled once, at start-up: an expression that does not parse is a
//! configuration error naming its key and position. An expression that fails when
//! evaluated (a field the object does not have yet) makes the object progressing,
//! with the error as its message: the object is not known to be ready, and nothing
//! crashes. Matching is by API group and kind; the version in `api_version` is
//! informative (an object reads the same under every served version as far as its
//! status goes, and the watches see the preferred one).

use super::{Health, Rule, State};
use crate::kube::{GroupVersion, Meta};
use cel::{Context, Program, Value as Cel};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// One `[[health]]` table as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthRuleSpec {
    /// `group/version` (or `v1`): the rule is for this group's `kind`.
    pub api_version: Option<String>,
    /// The rule is for every kind of this group (instead of `api_version` + `kind`).
    pub group: Option<String>,
    pub kind: Option<String>,
    pub in_progress: Option<String>,
    pub failed: Option<String>,
    pub current: Option<String>,
    /// A string (or a list of strings) shown as the health's message.
    pub message: Option<String>,
}

/// A `--health FILE`: only `[[health]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    #[serde(default)]
    health: Vec<HealthRuleSpec>,
}

/// Why health rules cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// An expression does not parse.
    #[error("{key}: line {line}, column {column}: {message}")]
    Syntax {
        /// The config key: `health[2].failed`.
        key: String,
        line: isize,
        column: isize,
        message: String,
    },
    /// The table does not say which objects it is for, or says it twice.
    #[error("{key}: {message}")]
    Target { key: String, message: String },
    /// A `--health` file that cannot be read or is not TOML of `[[health]]` tables.
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// A compiled CEL expression and where it was written.
#[derive(Clone)]
pub struct Expression {
    /// The config key it came from (`health[0].current`), for messages.
    pub key: Arc<str>,
    pub source: Arc<str>,
    program: Arc<Program>,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.key, self.source)
    }
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.source == other.source
    }
}

thread_local! {
    /// The standard CEL environment, built once per thread: a fresh one per
    /// evaluation would register every function again. (cel's `Context` is not
    /// `Sync`; evaluations read it through child scopes.)
    static ROOT: Context<'static, 'static> = Context::default();
}

impl Expression {
    /// Compiles `source`, written at `key`.
    pub fn compile(key: &str, source: &str) -> Result<Expression, RuleError> {
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            RuleError::Syntax {
                key: key.to_string(),
                line: first.map_or(0, |e| e.pos.0),
                column: first.map_or(0, |e| e.pos.1),
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
            }
        })?;
        Ok(Expression {
            key: key.into(),
            source: source.into(),
            program: Arc::new(program),
        })
    }

    /// The expression's value in `scope`, where `self` is bound.
    fn evaluate(&self, scope: &Context) -> Result<Cel, String> {
        self.program.execute(scope).map_err(|e| e.to_string())
    }

    /// The expression as a condition in `scope`: `Ok(true)` only for the boolean true.
    fn holds(&self, scope: &Context) -> Result<bool, String> {
        match self.evaluate(scope)? {
            Cel::Bool(b) => Ok(b),
            other => Err(format!("not a boolean: {other:?}")),
        }
    }

    /// [`Expression::holds`] on a JSON object.
    pub fn holds_for(&self, live: &Value) -> Result<bool, String> {
        let live = to_cel(live)?;
        with_self(live, |scope| self.holds(scope))
    }
}

/// Runs `f` in a scope of the standard environment where `self` is `live`: one
/// scope per object, however many expressions read it.
fn with_self<T>(live: Cel, f: impl FnOnce(&Context) -> T) -> T {
    ROOT.with(|root| {
        let mut scope = root.new_inner_scope();
        scope.add_variable_from_value("self", live);
        f(&scope)
    })
}

/// `live` as a CEL value.
pub(crate) fn to_cel(live: &Value) -> Result<Cel, String> {
    cel::to_value(live).map_err(|e| e.to_string())
}

/// Which objects a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Kind { group: String, kind: String },
    Group(String),
}

impl Target {
    fn matches(&self, group: &str, kind: &str) -> bool {
        match self {
            Target::Kind { group: g, kind: k } => g == group && k == kind,
            Target::Group(g) => g == group,
        }
    }
}

/// One compiled `[[health]]` table.
#[derive(Debug, Clone, PartialEq)]
struct CompiledRule {
    target: Target,
    in_progress: Option<Expression>,
    failed: Option<Expression>,
    current: Option<Expression>,
    message: Option<Expression>,
}

/// Every user health rule in force for a source: its own first, then the global
/// ones. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HealthRules {
    rules: Arc<Vec<CompiledRule>>,
    /// Verdicts already reached, by object: a CEL verdict is a pure function of the
    /// object, so an object whose resourceVersion has not moved is not evaluated
    /// again (a full resync re-assesses every object; most did not change).
    verdicts: Arc<Verdicts>,
}

impl PartialEq for HealthRules {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

/// The last verdict of each object a user rule judged, by uid, with the
/// resourceVersion it was reached at. Bounded: past [`Verdicts::MAX`] objects it
/// starts again empty (deleted objects are never removed one by one).
#[derive(Debug, Default)]
struct Verdicts(Mutex<HashMap<String, (String, Health)>>);

impl Verdicts {
    const MAX: usize = 65_536;

    fn get(&self, uid: &str, version: &str) -> Option<Health> {
        let verdicts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, health) = verdicts.get(uid)?;
        (at == version).then(|| health.clone())
    }

    fn put(&self, uid: &str, version: &str, health: &Health) {
        let mut verdicts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if verdicts.len() >= Self::MAX && !verdicts.contains_key(uid) {
            verdicts.clear();
        }
        verdicts.insert(uid.to_owned(), (version.to_owned(), health.clone()));
    }
}

impl HealthRules {
    /// Compiles `specs`, written under `prefix` (`health` or `source "app": health`),
    /// reporting every problem.
    pub fn compile(prefix: &str, specs: &[HealthRuleSpec]) -> Result<HealthRules, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            match compile_rule(&format!("{prefix}[{index}]"), spec) {
                Ok(rule) => rules.push(rule),
                Err(mut errors) => problems.append(&mut errors),
            }
        }
        match problems.is_empty() {
            true => Ok(HealthRules {
                rules: Arc::new(rules),
                verdicts: Arc::default(),
            }),
            false => Err(problems),
        }
    }

    /// Reads and compiles a `--health FILE` of `[[health]]` tables.
    pub fn load(path: &std::path::Path) -> Result<HealthRules, Vec<RuleError>> {
        let shown = path.display().to_string();
        let file_error = |message: String| {
            vec![RuleError::File {
                path: shown.clone(),
                message,
            }]
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let file: HealthFile =
            toml::from_str(&text).map_err(|e| file_error(e.to_string().trim_end().into()))?;
        HealthRules::compile(&format!("{shown}: health"), &file.health)
    }

    /// These rules first, then `fallback`'s.
    pub fn then(&self, fallback: &HealthRules) -> HealthRules {
        let mut rules = Vec::clone(&self.rules);
        rules.extend(fallback.rules.iter().cloned());
        HealthRules {
            rules: Arc::new(rules),
            verdicts: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The health of `live` by the first rule for its kind; `None` when no rule is.
    /// An object seen before at the same resourceVersion gets its verdict again.
    pub(crate) fn assess(&self, group: &str, kind: &str, live: &Value) -> Option<Health> {
        let rule = self.rules.iter().find(|r| r.target.matches(group, kind))?;
        let seen = live.uid().zip(live.resource_version());
        if let Some(health) = seen.and_then(|(uid, version)| self.verdicts.get(uid, version)) {
            return Some(health);
        }
        let health = rule.assess(live);
        if let Some((uid, version)) = seen {
            self.verdicts.put(uid, version, &health);
        }
        Some(health)
    }
}

fn compile_rule(at: &str, spec: &HealthRuleSpec) -> Result<CompiledRule, Vec<RuleError>> {
    let mut errors = Vec::new();
    let target = target(at, spec).map_err(|e| errors.push(e)).ok();
    let mut expression = |name: &str, source: &Option<String>| {
        let source = source.as_deref()?;
        Expression::compile(&format!("{at}.{name}"), source)
            .map_err(|e| errors.push(e))
            .ok()
    };
    let in_progress = expression("in_progress", &spec.in_progress);
    let failed = expression("failed", &spec.failed);
    let current = expression("current", &spec.current);
    let message = expression("message", &spec.message);
    if spec.in_progress.is_none() && spec.failed.is_none() && spec.current.is_none() {
        errors.push(RuleError::Target {
            key: at.into(),
            message: "no in_progress, failed or current expression: the rule would decide nothing"
                .into(),
        });
    }
    match (target, errors.is_empty()) {
        (Some(target), true) => Ok(CompiledRule {
            target,
            in_progress,
            failed,
            current,
            message,
        }),
        _ => Err(errors),
    }
}

fn target(at: &str, spec: &HealthRuleSpec) -> Result<Target, RuleError> {
    let problem = |message: &str| RuleError::Target {
        key: at.into(),
        message: message.into(),
    };
    match (&spec.api_version, &spec.group, &spec.kind) {
        (Some(api_version), None, Some(kind)) => {
            let gv = GroupVersion::parse(api_version)
                .ok()
                .filter(|gv| !gv.version.is_empty())
                .ok_or_else(|| {
                    problem(&format!(
                        "api_version = {api_version:?}: not GROUP/VERSION or v1"
                    ))
                })?;
            Ok(Target::Kind {
                group: gv.group.to_string(),
                kind: kind.clone(),
            })
        }
        (None, Some(group), None) => Ok(Target::Group(group.clone())),
        (None, Some(group), Some(kind)) => Ok(Target::Kind {
            group: group.clone(),
            kind: kind.clone(),
        }),
        (Some(_), Some(_), _) => Err(problem("set api_version or group, not both")),
        (Some(_), None, None) => Err(problem("api_version needs a kind")),
        (None, None, _) => Err(problem("set api_version and kind, or group")),
    }
}

/// Which of a rule's checks decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    InProgress,
    Failed,
    Current,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::InProgress => "in_progress",
            Check::Failed => "failed",
            Check::Current => "current",
        }
    }

    fn state(self) -> State {
        match self {
            Check::InProgress => State::Progressing,
            Check::Failed => State::Failed,
            Check::Current => State::Ready,
        }
    }
}

impl CompiledRule {
    /// Flux's order: in_progress, failed, current; none true: progressing. The
    /// first expression that cannot be evaluated makes it progressing, saying why.
    fn assess(&self, live: &Value) -> Health {
        match to_cel(live) {
            Ok(cel) => with_self(cel, |scope| self.decide(scope)),
            Err(e) => self.undecided(format!("cannot read the object: {e}")),
        }
    }

    /// The checks in order, in a scope where `self` is bound.
    fn decide(&self, cel: &Context) -> Health {
        let decided_by = |key: &Arc<str>| Rule::User(key.clone());
        let checks = [
            (Check::InProgress, &self.in_progress),
            (Check::Failed, &self.failed),
            (Check::Current, &self.current),
        ];
        for (check, expression) in checks {
            let Some(expression) = expression else {
                continue;
            };
            match expression.holds(cel) {
                Ok(false) => {}
                Ok(true) => {
                    let message = self
                        .message(cel)
                        .unwrap_or_else(|| format!("{} is true", check.name()));
                    return Health {
                        state: check.state(),
                        message,
                        rule: decided_by(&expression.key),
                    };
                }
                Err(e) => {
                    return Health {
                        state: State::Progressing,
                        message: format!("{} cannot be evaluated: {e}", check.name()),
                        rule: decided_by(&expression.key),
                    };
                }
            }
        }
        self.undecided(
            self.message(cel)
                .unwrap_or_else(|| "no check is true yet".into()),
        )
    }

    /// Progressing, decided by the rule as a whole.
    fn undecided(&self, message: String) -> Health {
        let key = [&self.in_progress, &self.failed, &self.current]
            .into_iter()
            .flatten()
            .next()
            .map(|e| rule_key(&e.key))
            .unwrap_or_default();
        Health {
            state: State::Progressing,
            message,
            rule: Rule::User(key.into()),
        }
    }

    /// The `message` expression's value, as text; `None` when unset, empty or
    /// failing (a message never changes the state).
    fn message(&self, scope: &Context) -> Option<String> {
        let value = self.message.as_ref()?.evaluate(scope).ok()?;
        let text = match value {
            Cel::String(s) => s.to_string(),
            Cel::List(items) => items
                .iter()
                .filter_map(|i| match i {
                    Cel::String(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => format!("{other:?}"),
        };
        (!text.is_empty()).then_some(text)
    }
}

/// `health[0]` of `health[0].current`.
fn rule_key(key: &str) -> &str {
    key.rsplit_once('.').map_or(key, |(rule, _)| rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn certificate_rule() -> HealthRuleSpec {
        HealthRuleSpec {
            api_version: Some("cert-manager.io/v1".into()),
            kind: Some("Certificate".into()),
            in_progress: Some("has(self.status.conditions) && self.status.conditions.exists(c, c.type == 'Issuing' && c.status == 'True')".into()),
            failed: Some("self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False' && c.reason == 'Failed')".into()),
            current: Some("self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')".into()),
            message: Some("self.status.conditions.filter(c, c.type == 'Ready').map(c, c.message)".into()),
            ..HealthRuleSpec::default()
        }
    }

    fn certificate(conditions: Value) -> Value {
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
               "metadata": {"name": "web", "generation": 1}, "status": {"conditions": conditions}})
    }

    fn rules() -> HealthRules {
        HealthRules::compile("health", &[certificate_rule()]).expect("compiles")
    }

    fn assess(live: &Value) -> Health {
        rules()
            .assess("cert-manager.io", "Certificate", live)
            .expect("a rule")
    }

    #[test]
    fn checks_run_in_fluxs_order_and_name_the_expression_that_decided() {
        let issuing = certificate(json!([
            {"type": "Issuing", "status": "True"},
            {"type": "Ready", "status": "True", "message": "old cert valid"}]));
        let health = assess(&issuing);
        assert_eq!(health.state, State::Progressing, "in_progress wins");
        assert_eq!(health.rule.to_string(), "health[0].in_progress");
        let failed = certificate(json!([
            {"type": "Ready", "status": "False", "reason": "Failed", "message": "issuer down"}]));
        assert_eq!(
            assess(&failed),
            Health {
                state: State::Failed,
                message: "issuer down".into(),
                rule: Rule::User("health[0].failed".into())
            }
        );
        let ready = certificate(json!([{"type": "Ready", "status": "True", "message": "valid"}]));
        assert_eq!(assess(&ready).state, State::Ready);
        assert_eq!(assess(&ready).message, "valid");
        let pending = certificate(json!([{"type": "Ready", "status": "Unknown"}]));
        let health = assess(&pending);
        assert_eq!(health.state, State::Progressing);
        assert_eq!(health.rule.to_string(), "health[0]");
    }

    #[test]
    fn an_object_is_judged_again_only_when_its_resource_version_moves() {
        let rules = rules();
        let at = |version: &str, ready: &str| {
            let mut live = certificate(json!([{"type": "Ready", "status": ready}]));
            live["metadata"]["uid"] = json!("u-1");
            live["metadata"]["resourceVersion"] = json!(version);
            live
        };
        let judge = |live: &Value| rules.assess("cert-manager.io", "Certificate", live);
        assert_eq!(judge(&at("1", "True")).map(|h| h.state), Some(State::Ready));
        // The same version with another body: the first verdict stands (a version
        // names one content; this shows the memo answered).
        assert_eq!(
            judge(&at("1", "False")).map(|h| h.state),
            Some(State::Ready)
        );
        assert_eq!(
            judge(&at("2", "False")).map(|h| h.state),
            Some(State::Progressing)
        );
    }

    #[test]
    fn a_missing_field_is_progressing_with_the_error_not_a_crash() {
        let no_status = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                               "metadata": {"name": "web"}});
        let health = assess(&no_status);
        assert_eq!(health.state, State::Progressing);
        // `has(self.status.conditions)` needs `self.status` (as in Kubernetes).
        assert_eq!(
            health.message,
            "in_progress cannot be evaluated: No such key: status"
        );
        assert_eq!(health.rule.to_string(), "health[0].in_progress");
    }

    #[test]
    fn a_bad_expression_is_refused_with_its_key_and_position() {
        let mut bad = certificate_rule();
        bad.failed = Some("self.status.conditions.exists(c, c.type == 'Ready' &&".into());
        let errors = HealthRules::compile("health", &[certificate_rule(), bad]).unwrap_err();
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(
            text.starts_with("health[1].failed: line 1, column 54: Syntax error"),
            "{text}"
        );
    }

    #[test]
    fn targets_are_checked() {
        let no_target = HealthRuleSpec {
            current: Some("true".into()),
            ..HealthRuleSpec::default()
        };
        let errors = HealthRules::compile("health", &[no_target]).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "health[0]: set api_version and kind, or group"
        );
        let nothing = HealthRuleSpec {
            group: Some("example.com".into()),
            ..HealthRuleSpec::default()
        };
        assert!(HealthRules::compile("health", &[nothing]).is_err());
    }

    #[test]
    fn a_group_rule_covers_every_kind_and_the_first_rule_wins() {
        let group = HealthRuleSpec {
            group: Some("example.com".into()),
            current: Some("self.status.phase == 'Done'".into()),
            ..HealthRuleSpec::default()
        };
        let own = HealthRules::compile("source \"app\": health", &[group]).expect("compiles");
        let rules = own.then(&rules());
        assert_eq!(rules.len(), 2);
        let done = json!({"status": {"phase": "Done"}});
        let health = rules
            .assess("example.com", "Anything", &done)
            .expect("a rule");
        assert_eq!(health.state, State::Ready);
        assert_eq!(health.rule.to_string(), "source \"app\": health[0].current");
        assert!(rules.assess("other.com", "Anything", &done).is_none());
    }

    #[test]
    fn expressions_are_conditions() {
        let ready = Expression::compile("ready", "size(self.spec.clusterIP) > 0").expect("ok");
        let svc = json!({"spec": {"clusterIP": "10.0.0.1"}});
        assert_eq!(ready.holds_for(&svc), Ok(true));
        assert_eq!(
            ready.holds_for(&json!({"spec": {"clusterIP": ""}})),
            Ok(false)
        );
        assert!(ready.holds_for(&json!({})).is_err());
        let text = Expression::compile("ready", "'yes'").expect("ok");
        assert!(text.holds_for(&svc).is_err());
    }
}
