//! Health: whether what was applied actually works, and why not.
//!
//! Applying an object only means the API server stored it; a Deployment whose Pods
//! never schedule was still "applied". This module answers the next question, in
//! the style of kstatus (the readiness rules Flux and `kubectl rollout status` use):
//!
//! - [`assess`]: one live object → [`Health`] (ready, progressing or failed, with a
//!   message a person can act on). Pure: rules per kind, unit-tested with fixtures.
//! - [`evidence`]: for an object that failed or timed out, the facts that explain it
//!   — its conditions, recent Events for it and its Pods, container states and the
//!   last lines of the failing container's log — with a bounded number of requests.
//! - [`wait()`]: `converge apply --wait`: watch every applied object (reflectors, no
//!   polling) until all are ready, one failed, or the time is up.
//!
//! Nothing here mutates the cluster.

pub mod dependency;
pub(crate) mod evidence;
pub(crate) mod rules;
pub(crate) mod wait;

pub use evidence::{Evidence, gather};
pub use rules::{Expression, HealthRuleSpec, HealthRules, RuleError};
pub use wait::{Progress, WaitFor, WaitOptions, WaitOutcome, WaitedObject};
pub use wait::{explain, wait};

use crate::kube::Meta;
use crate::kube::{Discovery, GroupVersion};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// How far an object is from doing what its manifest asks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Doing what was asked: rolled out, available, bound, completed, or an object
    /// without a status (a ConfigMap is ready once it exists).
    Ready,
    /// On its way, or not there yet as far as anyone can tell (this includes Pods
    /// that cannot be scheduled: a node may still appear).
    Progressing,
    /// Will not get there without a change: a rollout past its progress deadline,
    /// a failed Job, a container in CrashLoopBackOff.
    Failed,
    /// Not found in the cluster (deleted after it was applied).
    Missing,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ready => "ready",
            State::Progressing => "progressing",
            State::Failed => "failed",
            State::Missing => "missing",
        })
    }
}

/// The health of one object: its state, in a few words why, and which rule said so.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    pub message: String,
    /// The rule that decided: people reading `/status` or a failed `--wait` need to
    /// know whether converge, kstatus or their own expression judged the object.
    #[serde(default)]
    pub rule: Rule,
}

/// What decided an object's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Rule {
    /// converge's own rule for the kind (Deployment, Job, …), or the object's
    /// presence (missing, being deleted).
    #[default]
    BuiltIn,
    /// The kstatus conventions, for kinds converge has no rule for.
    Kstatus,
    /// A user's `[[health]]` expression (or the rule as a whole when none of its
    /// checks held): its config key, `health[0].current`.
    User(Arc<str>),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::BuiltIn => "built-in",
            Rule::Kstatus => "kstatus",
            Rule::User(key) => key,
        })
    }
}

impl From<Rule> for String {
    fn from(rule: Rule) -> String {
        rule.to_string()
    }
}

impl From<String> for Rule {
    fn from(text: String) -> Rule {
        match text.as_str() {
            "built-in" | "" => Rule::BuiltIn,
            "kstatus" => Rule::Kstatus,
            _ => Rule::User(text.into()),
        }
    }
}

impl Health {
    pub fn ready(message: impl Into<String>) -> Self {
        Health {
            state: State::Ready,
            message: message.into(),
            rule: Rule::BuiltIn,
        }
    }

    pub fn progressing(message: impl Into<String>) -> Self {
        Health {
            state: State::Progressing,
            message: message.into(),
            rule: Rule::BuiltIn,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Health {
            state: State::Failed,
            message: message.into(),
            rule: Rule::BuiltIn,
        }
    }

    /// The health of an object that is not in the cluster.
    pub fn missing() -> Self {
        Health {
            state: State::Missing,
            message: "not found in the cluster".into(),
            rule: Rule::BuiltIn,
        }
    }
}

impl Health {
    /// This health, as decided by `rule`.
    pub fn by(self, rule: Rule) -> Self {
        Health { rule, ..self }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.state, self.message)
    }
}

/// The health of `live` by converge's rules and kstatus alone, without knowing
/// which kinds have a status subresource (see [`HealthModel`]).
pub fn assess(live: &Value) -> Health {
    HealthModel::default().assess(live)
}

/// One health model for every caller (waves, hooks, `--wait`, `depends_on`,
/// `/status`, metrics): the user's rules, then converge's built-in ones, then
/// kstatus, made strict for custom resources whose CRD declares a status
/// subresource (discovery says which).
#[derive(Clone, Debug, Default)]
pub struct HealthModel {
    rules: HealthRules,
    status_kinds: StatusKinds,
}

/// Which kinds the API server serves with a `status` subresource.
#[derive(Clone, Debug, Default)]
enum StatusKinds {
    /// Not known: every kind is judged as if it had none.
    #[default]
    Unknown,
    Discovered(Discovery),
    /// A fixed list of (group, kind), for unit tests.
    #[cfg(test)]
    Listed(Vec<(String, String)>),
}

impl StatusKinds {
    fn has_status(&self, group: &str, kind: &str) -> bool {
        match self {
            StatusKinds::Unknown => false,
            StatusKinds::Discovered(discovery) => discovery.has_status_subresource(group, kind),
            #[cfg(test)]
            StatusKinds::Listed(list) => list.iter().any(|(g, k)| g == group && k == kind),
        }
    }
}

impl HealthModel {
    /// `rules` over converge's own, with discovery telling custom resources that
    /// have a status subresource.
    pub fn new(rules: HealthRules, discovery: Discovery) -> Self {
        HealthModel {
            rules,
            status_kinds: StatusKinds::Discovered(discovery),
        }
    }

    /// `rules` over converge's own, without discovery (no kind is known to have a
    /// status subresource): for tools and benchmarks that run without a cluster.
    pub fn with_rules(rules: HealthRules) -> Self {
        HealthModel {
            rules,
            status_kinds: StatusKinds::Unknown,
        }
    }

    pub fn rules(&self) -> &HealthRules {
        &self.rules
    }

    /// The health of `live`, an object as the API server returns it.
    ///
    /// A user's rule for the kind decides first; then kinds with known semantics
    /// get converge's rule; any other kind is judged by the kstatus conventions
    /// (`observedGeneration`, `Ready`/`Available`/`Stalled` conditions). A custom
    /// resource whose CRD declares a status subresource is ready only once its
    /// controller wrote a status saying so; any other kind without status is ready
    /// once it exists.
    pub fn assess(&self, live: &Value) -> Health {
        if live.is_deleting() {
            // A run-to-completion object's outcome stands while it is deleted (a Job
            // reaped by its TTL); anything else is on its way out.
            return finished(live).unwrap_or_else(|| Health::progressing("being deleted"));
        }
        let (group, kind) = kind_of(live);
        if let Some(health) = self.rules.assess(group, kind, live) {
            return health;
        }
        let custom = !is_builtin_group(group) && self.status_kinds.has_status(group, kind);
        match custom {
            true => custom_resource(live),
            false => assess_kind(live),
        }
    }

    /// The health of an object that may be absent.
    pub fn assess_opt(&self, live: Option<&Value>) -> Health {
        live.map_or_else(Health::missing, |live| self.assess(live))
    }
}

/// The groups the Kubernetes API server serves itself (kinds whose status, if
/// any, is written by built-in controllers, or by none: an Ingress without an
/// ingress controller). Custom resources live in other groups (a CRD in a
/// `*.k8s.io` group needs an API-review approval, as Gateway API has: those are
/// custom too, hence the exact list).
const BUILTIN_GROUPS: [&str; 24] = [
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

fn is_builtin_group(group: &str) -> bool {
    BUILTIN_GROUPS.contains(&group) || group == "metrics.k8s.io"
}

/// What the controller of a custom resource must have said: a status at all (one
/// without is `progressing` until a controller writes one — CRs are not ready the
/// moment they are stored), then kstatus; a status without `Ready` or `Available`
/// is kstatus' Current.
fn custom_resource(live: &Value) -> Health {
    let written = live
        .pointer("/status")
        .and_then(Value::as_object)
        .is_some_and(|status| !status.is_empty());
    if !written {
        return Health::progressing("no status yet (is its controller running?)").by(Rule::Kstatus);
    }
    kstatus(live).unwrap_or_else(|| {
        Health::ready("status written, no Ready or Available condition").by(Rule::Kstatus)
    })
}

/// The outcome of a Job or Pod that has finished (completed or failed); `None` for
/// other kinds and for one still running.
fn finished(live: &Value) -> Option<Health> {
    let health = match kind_of(live) {
        ("batch", "Job") => job(live),
        ("", "Pod") => pod(live),
        _ => return None,
    };
    (health.state != State::Progressing).then_some(health)
}

/// The health of an object from the last state a watch saw before it was deleted:
/// a Job or Pod that had finished keeps its outcome (a Job with
/// `ttlSecondsAfterFinished: 0` is deleted within a second of completing); anything
/// else was deleted before it finished, and is missing.
pub fn assess_gone(last: Option<&Value>) -> Health {
    match last.and_then(finished) {
        Some(health) => Health {
            message: format!("{} (deleted since)", health.message),
            ..health
        },
        None => Health {
            state: State::Missing,
            message: "deleted before it finished".into(),
            rule: Rule::BuiltIn,
        },
    }
}

fn kind_of(live: &Value) -> (&str, &str) {
    let group = GroupVersion::parse(text(live, "/apiVersion")).map_or("", |gv| gv.group);
    (group, text(live, "/kind"))
}

fn assess_kind(live: &Value) -> Health {
    match kind_of(live) {
        ("apps", "Deployment") => deployment(live),
        ("apps", "StatefulSet") => stateful_set(live),
        ("apps", "DaemonSet") => daemon_set(live),
        ("apps", "ReplicaSet") => replica_set(live),
        ("batch", "Job") => job(live),
        ("", "Pod") => pod(live),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(live),
        ("", "Service") => service(live),
        ("", "Namespace") => namespace(live),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => custom_resource_definition(live),
        _ => generic(live),
    }
}

/// One entry of `status.conditions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

impl Condition<'_> {
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `reason: message`, or whichever of the two is set.
    pub fn explanation(&self) -> String {
        reason_and_message(self.reason, self.message)
    }
}

/// `reason: message`, or whichever of the two is set.
fn reason_and_message(reason: &str, message: &str) -> String {
    match (reason, message) {
        ("", m) => m.to_string(),
        (r, "") => r.to_string(),
        (r, m) => format!("{r}: {m}"),
    }
}

/// Every condition of `live`'s status, in the order the controller wrote them.
pub fn conditions(live: &Value) -> Vec<Condition<'_>> {
    live.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| Condition {
                    type_: text(c, "/type"),
                    status: text(c, "/status"),
                    reason: text(c, "/reason"),
                    message: text(c, "/message"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition<'a>(live: &'a Value, type_: &str) -> Option<Condition<'a>> {
    conditions(live).into_iter().find(|c| c.type_ == type_)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

fn count(value: &Value, pointer: &str) -> i64 {
    int(value, pointer).unwrap_or(0)
}

/// `spec.replicas`, which the API server defaults to 1.
fn desired_replicas(live: &Value) -> i64 {
    int(live, "/spec/replicas").unwrap_or(1)
}

/// Progressing while the controller has not yet seen the latest spec: until then
/// the status describes an older generation and proves nothing.
fn generation_pending(live: &Value, controller: &str) -> Option<Health> {
    let generation = live.generation()?;
    match int(live, "/status/observedGeneration") {
        Some(observed) if observed >= generation => None,
        _ => Some(Health::progressing(format!(
            "waiting for the {controller} controller to observe generation {generation}"
        ))),
    }
}

/// The rule of `kubectl rollout status deployment`, plus the progress deadline:
/// a rollout that made no progress for `progressDeadlineSeconds` has failed.
fn deployment(live: &Value) -> Health {
    if let Some(pending) = generation_pending(live, "Deployment") {
        return pending;
    }
    if let Some(c) = condition(live, "Progressing")
        && c.reason == "ProgressDeadlineExceeded"
    {
        return Health::failed(format!("rollout failed: {}", c.explanation()));
    }
    let want = desired_replicas(live);
    let updated = count(live, "/status/updatedReplicas");
    let total = count(live, "/status/replicas");
    let available = count(live, "/status/availableReplicas");
    let mut health = if updated < want {
        Health::progressing(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        Health::progressing(format!(
            "{} old replica(s) pending termination",
            total - updated
        ))
    } else if available < updated {
        Health::progressing(format!("{available} of {want} replicas available"))
    } else {
        return Health::ready(format!("{available} of {want} replicas available"));
    };
    if let Some(c) = condition(live, "ReplicaFailure").filter(Condition::is_true) {
        health.message = format!("{}; {}", health.message, c.explanation());
    }
    health
}

/// The rule of `kubectl rollout status statefulset`; `OnDelete` updates only need
/// the Pods ready, since the controller does not replace them itself.
fn stateful_set(live: &Value) -> Health {
    if let Some(pending) = generation_pending(live, "StatefulSet") {
        return pending;
    }
    let want = desired_replicas(live);
    let ready = count(live, "/status/readyReplicas");
    if ready < want {
        return Health::progressing(format!("{ready} of {want} replicas ready"));
    }
    if text(live, "/spec/updateStrategy/type") == "OnDelete" {
        return Health::ready(format!("{ready} of {want} replicas ready"));
    }
    if let Some(partition) = int(live, "/spec/updateStrategy/rollingUpdate/partition") {
        let updated = count(live, "/status/updatedReplicas");
        let target = (want - partition).max(0);
        if updated < target {
            return Health::progressing(format!(
                "partitioned rollout: {updated} of {target} replicas updated"
            ));
        }
        return Health::ready(format!("partitioned rollout complete: {ready} ready"));
    }
    let update_revision = text(live, "/status/updateRevision");
    if text(live, "/status/currentRevision") != update_revision {
        let updated = count(live, "/status/updatedReplicas");
        return Health::progressing(format!(
            "rolling update: {updated} of {want} replicas at revision {update_revision}"
        ));
    }
    Health::ready(format!("{ready} of {want} replicas ready"))
}

/// The rule of `kubectl rollout status daemonset`. A DaemonSet whose node selector
/// matches no node is ready with nothing to run.
fn daemon_set(live: &Value) -> Health {
    if let Some(pending) = generation_pending(live, "DaemonSet") {
        return pending;
    }
    let desired = count(live, "/status/desiredNumberScheduled");
    let updated = count(live, "/status/updatedNumberScheduled");
    let available = count(live, "/status/numberAvailable");
    if text(live, "/spec/updateStrategy/type") != "OnDelete" && updated < desired {
        return Health::progressing(format!("{updated} of {desired} Pods updated"));
    }
    if available < desired {
        return Health::progressing(format!("{available} of {desired} Pods available"));
    }
    Health::ready(format!("{available} of {desired} Pods available"))
}

fn replica_set(live: &Value) -> Health {
    if let Some(pending) = generation_pending(live, "ReplicaSet") {
        return pending;
    }
    let want = desired_replicas(live);
    let available = count(live, "/status/availableReplicas");
    if available >= want {
        return Health::ready(format!("{available} of {want} replicas available"));
    }
    let mut message = format!("{available} of {want} replicas available");
    if let Some(c) = condition(live, "ReplicaFailure").filter(Condition::is_true) {
        message = format!("{message}; {}", c.explanation());
    }
    Health::progressing(message)
}

/// A Job is ready once complete. `FailureTarget` is the controller's decision to
/// fail it (the `Failed` condition follows once its Pods are gone).
fn job(live: &Value) -> Health {
    for c in conditions(live).iter().filter(|c| c.is_true()) {
        match c.type_ {
            "Failed" | "FailureTarget" => {
                return Health::failed(format!("Job failed: {}", c.explanation()));
            }
            "Complete" => {
                let succeeded = count(live, "/status/succeeded");
                return Health::ready(format!("completed ({succeeded} succeeded)"));
            }
            _ => {}
        }
    }
    if live.pointer("/spec/suspend") == Some(&Value::Bool(true)) {
        return Health::ready("suspended");
    }
    Health::progressing(format!(
        "{} active, {} succeeded, {} failed",
        count(live, "/status/active"),
        count(live, "/status/succeeded"),
        count(live, "/status/failed")
    ))
}

/// Waiting reasons a container does not leave without a change (to the image, the
/// configuration or the code): the Pod has failed even though it is "Pending".
const STUCK_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

fn pod(live: &Value) -> Health {
    match text(live, "/status/phase") {
        "Succeeded" => return Health::ready("completed"),
        "Failed" => {
            let why = match (text(live, "/status/reason"), text(live, "/status/message")) {
                ("", "") => terminated_container(live).unwrap_or_else(|| "Pod failed".into()),
                (r, m) => reason_and_message(r, m),
            };
            return Health::failed(why);
        }
        _ => {}
    }
    if let Some(stuck) = stuck_container(live) {
        return Health::failed(stuck);
    }
    if let Some(c) = condition(live, "PodScheduled").filter(|c| !c.is_true()) {
        return Health::progressing(format!("not scheduled: {}", c.explanation()));
    }
    if condition(live, "Ready").is_some_and(|c| c.is_true()) {
        return Health::ready("running and ready");
    }
    match text(live, "/status/phase") {
        "Running" => Health::progressing("running, not ready"),
        "" => Health::progressing("waiting for the scheduler"),
        phase => Health::progressing(phase.to_lowercase()),
    }
}

/// `container app: CrashLoopBackOff: back-off 5m0s …` for the first stuck container.
fn stuck_container(pod: &Value) -> Option<String> {
    container_statuses(pod).find_map(|c| {
        let reason = text(c, "/state/waiting/reason");
        STUCK_REASONS.contains(&reason).then(|| {
            let message = text(c, "/state/waiting/message");
            let name = text(c, "/name");
            if message.is_empty() {
                format!("container {name}: {reason}")
            } else {
                format!("container {name}: {reason}: {message}")
            }
        })
    })
}

fn terminated_container(pod: &Value) -> Option<String> {
    container_statuses(pod).find_map(|c| {
        let terminated = c.pointer("/state/terminated")?;
        let code = count(terminated, "/exitCode");
        (code != 0).then(|| {
            format!(
                "container {} exited with code {code} ({})",
                text(c, "/name"),
                text(terminated, "/reason")
            )
        })
    })
}

/// Init containers first, as the kubelet runs them.
fn container_statuses(pod: &Value) -> impl Iterator<Item = &Value> {
    ["/status/initContainerStatuses", "/status/containerStatuses"]
        .into_iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
}

fn persistent_volume_claim(live: &Value) -> Health {
    match text(live, "/status/phase") {
        "Bound" => Health::ready("bound"),
        "Lost" => Health::failed("the bound PersistentVolume is lost"),
        "" => Health::progressing("pending"),
        phase => Health::progressing(phase.to_lowercase()),
    }
}

/// A Service works once it has a cluster IP. A LoadBalancer's external address is
/// reported, but does not hold the Service back: many clusters (kind, bare metal)
/// have no load-balancer controller and would otherwise never be ready.
fn service(live: &Value) -> Health {
    match text(live, "/spec/type") {
        "ExternalName" => Health::ready(format!(
            "external name {}",
            text(live, "/spec/externalName")
        )),
        "LoadBalancer" => {
            let ingress = live
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .and_then(|list| list.first());
            match ingress {
                Some(i) => {
                    let address = [text(i, "/ip"), text(i, "/hostname")].join("");
                    Health::ready(format!("external address {address}"))
                }
                None => Health::ready("external address pending (no load balancer yet)"),
            }
        }
        _ => match text(live, "/spec/clusterIP") {
            "" => Health::progressing("waiting for a cluster IP"),
            "None" => Health::ready("headless"),
            ip => Health::ready(format!("cluster IP {ip}")),
        },
    }
}

fn namespace(live: &Value) -> Health {
    match text(live, "/status/phase") {
        "Active" | "" => Health::ready("active"),
        phase => Health::progressing(phase.to_lowercase()),
    }
}

fn custom_resource_definition(live: &Value) -> Health {
    if let Some(c) = condition(live, "NamesAccepted").filter(|c| c.status == "False") {
        return Health::failed(format!("names not accepted: {}", c.explanation()));
    }
    match condition(live, "Established") {
        Some(c) if c.is_true() => Health::ready("established"),
        _ => Health::progressing("not established yet"),
    }
}

/// kstatus for kinds converge has no rule for; a kind without status (or without
/// the conditions kstatus reads) is ready once it exists.
fn generic(live: &Value) -> Health {
    kstatus(live).unwrap_or_else(|| Health::ready("exists").by(Rule::Kstatus))
}

/// kstatus: the controller must have observed the latest generation (when it
/// reports `observedGeneration`), `Stalled` means failed, `Reconciling` means
/// progressing, and `Ready` (else `Available`) decides; `None` when none of that
/// is there to read.
fn kstatus(live: &Value) -> Option<Health> {
    kstatus_says(live).map(|health| health.by(Rule::Kstatus))
}

fn kstatus_says(live: &Value) -> Option<Health> {
    if live.pointer("/status/observedGeneration").is_some()
        && let Some(pending) = generation_pending(live, "its")
    {
        return Some(pending);
    }
    let all = conditions(live);
    let find = |t: &str| all.iter().find(|c| c.type_ == t);
    if let Some(c) = find("Stalled").filter(|c| c.is_true()) {
        return Some(Health::failed(c.explanation()));
    }
    if let Some(c) = find("Reconciling").filter(|c| c.is_true()) {
        return Some(Health::progressing(c.explanation()));
    }
    match find("Ready").or_else(|| find("Available")) {
        Some(c) if c.is_true() => Some(Health::ready(format!("{} is True", c.type_))),
        Some(c) => Some(Health::progressing(format!(
            "{} is {}: {}",
            c.type_,
            c.status,
            c.explanation()
        ))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "generation": generation},
               "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_waits_for_the_controller_then_for_available_replicas() {
        let new = deploy(1, json!({}));
        assert_eq!(assess(&new).state, State::Progressing);
        assert!(assess(&new).message.contains("observe generation 1"));
        let rolling = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            assess(&rolling),
            Health::progressing("1 old replica(s) pending termination")
        );
        let unavailable = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}),
        );
        assert_eq!(
            assess(&unavailable),
            Health::progressing("1 of 3 replicas available")
        );
        let done = deploy(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(assess(&done), Health::ready("3 of 3 replicas available"));
    }

    #[test]
    fn deployment_past_its_progress_deadline_has_failed() {
        let stuck = deploy(
            1,
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                   "conditions": [
                     {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                     {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                      "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
        );
        let health = assess(&stuck);
        assert_eq!(health.state, State::Failed);
        assert_eq!(
            health.message,
            "rollout failed: ProgressDeadlineExceeded: ReplicaSet \"web-1\" has timed out progressing."
        );
    }

    #[test]
    fn deployment_shows_why_replicas_cannot_be_created() {
        let quota = deploy(
            1,
            json!({"observedGeneration": 1,
                   "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                   "message": "pods \"web-x\" is forbidden: exceeded quota"}]}),
        );
        assert_eq!(
            assess(&quota).message,
            "0 of 3 replicas updated; FailedCreate: pods \"web-x\" is forbidden: exceeded quota"
        );
    }

    #[test]
    fn deployment_defaults_to_one_replica_and_can_be_scaled_to_zero() {
        let mut one = deploy(
            1,
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        one["spec"] = json!({});
        assert_eq!(assess(&one).state, State::Ready);
        let mut zero = deploy(1, json!({"observedGeneration": 1}));
        zero["spec"]["replicas"] = json!(0);
        assert_eq!(assess(&zero), Health::ready("0 of 0 replicas available"));
    }

    fn sts(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "db", "generation": 1}, "spec": spec, "status": status})
    }

    #[test]
    fn stateful_set_needs_ready_replicas_and_one_revision() {
        let status = |ready: i64, current: &str| {
            json!({"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 1,
                   "currentRevision": current, "updateRevision": "db-2"})
        };
        let spec = json!({"replicas": 2});
        assert_eq!(
            assess(&sts(spec.clone(), status(1, "db-2"))),
            Health::progressing("1 of 2 replicas ready")
        );
        assert_eq!(
            assess(&sts(spec.clone(), status(2, "db-1"))),
            Health::progressing("rolling update: 1 of 2 replicas at revision db-2")
        );
        assert_eq!(assess(&sts(spec, status(2, "db-2"))).state, State::Ready);
        let on_delete = json!({"replicas": 2, "updateStrategy": {"type": "OnDelete"}});
        assert_eq!(
            assess(&sts(on_delete, status(2, "db-1"))).state,
            State::Ready
        );
        let partitioned =
            json!({"replicas": 3, "updateStrategy": {"rollingUpdate": {"partition": 2}}});
        let mut status = status(3, "db-1");
        status["updatedReplicas"] = json!(1);
        assert_eq!(
            assess(&sts(partitioned, status)),
            Health::ready("partitioned rollout complete: 3 ready")
        );
    }

    #[test]
    fn daemon_set_needs_every_scheduled_pod_updated_and_available() {
        let ds = |updated: i64, available: i64| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "agent", "generation": 3},
                   "status": {"observedGeneration": 3, "desiredNumberScheduled": 2,
                              "updatedNumberScheduled": updated, "numberAvailable": available}})
        };
        assert_eq!(
            assess(&ds(1, 2)),
            Health::progressing("1 of 2 Pods updated")
        );
        assert_eq!(
            assess(&ds(2, 1)),
            Health::progressing("1 of 2 Pods available")
        );
        assert_eq!(assess(&ds(2, 2)), Health::ready("2 of 2 Pods available"));
        let mut stale = ds(2, 2);
        stale["status"]["observedGeneration"] = json!(2);
        assert_eq!(assess(&stale).state, State::Progressing);
    }

    #[test]
    fn replica_set_needs_available_replicas() {
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": "web-1", "generation": 1}, "spec": {"replicas": 2},
                        "status": {"observedGeneration": 1, "availableReplicas": 2}});
        assert_eq!(assess(&rs).state, State::Ready);
    }

    fn job_with(conditions: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
               "status": {"active": 1, "conditions": conditions}})
    }

    #[test]
    fn job_is_ready_when_complete_and_failed_with_its_reason() {
        assert_eq!(
            assess(&job_with(json!([]))),
            Health::progressing("1 active, 0 succeeded, 0 failed")
        );
        let failed = job_with(json!([{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]));
        assert_eq!(
            assess(&failed),
            Health::failed(
                "Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
            )
        );
        let target = job_with(json!([{"type": "FailureTarget", "status": "True",
            "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]));
        assert_eq!(assess(&target).state, State::Failed);
        let mut done = job_with(json!([{"type": "Complete", "status": "True"}]));
        done["status"]["succeeded"] = json!(1);
        assert_eq!(assess(&done), Health::ready("completed (1 succeeded)"));
        let mut suspended = job_with(json!([]));
        suspended["spec"] = json!({"suspend": true});
        assert_eq!(assess(&suspended), Health::ready("suspended"));
    }

    fn pod_with(status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}, "status": status})
    }

    #[test]
    fn pod_states() {
        let ready = pod_with(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(assess(&ready), Health::ready("running and ready"));
        let unschedulable = pod_with(json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/2 nodes are available"}]}));
        assert_eq!(
            assess(&unschedulable),
            Health::progressing("not scheduled: Unschedulable: 0/2 nodes are available")
        );
        let crashing = pod_with(json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff",
                                                  "message": "back-off 5m0s restarting failed container"}}}]}));
        assert_eq!(
            assess(&crashing),
            Health::failed(
                "container app: CrashLoopBackOff: back-off 5m0s restarting failed container"
            )
        );
        let oom = pod_with(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert_eq!(
            assess(&oom),
            Health::failed("container app exited with code 137 (OOMKilled)")
        );
        let evicted = pod_with(json!({"phase": "Failed", "reason": "Evicted",
                                      "message": "The node was low on resource: memory."}));
        assert_eq!(
            assess(&evicted).message,
            "Evicted: The node was low on resource: memory."
        );
        assert_eq!(
            assess(&pod_with(json!({"phase": "Succeeded"}))).state,
            State::Ready
        );
        let pulling = pod_with(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}));
        assert_eq!(
            assess(&pulling),
            Health::failed("container init: ImagePullBackOff")
        );
    }

    #[test]
    fn claims_services_namespaces_and_crds() {
        let pvc = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "data"}, "status": {"phase": phase}})
        };
        assert_eq!(assess(&pvc("Bound")).state, State::Ready);
        assert_eq!(assess(&pvc("Pending")), Health::progressing("pending"));
        assert_eq!(assess(&pvc("Lost")).state, State::Failed);

        let svc = |spec: Value, status: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                   "spec": spec, "status": status})
        };
        assert_eq!(
            assess(&svc(json!({"clusterIP": "10.96.0.10"}), json!({}))),
            Health::ready("cluster IP 10.96.0.10")
        );
        let pending_lb = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11"}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(
            assess(&pending_lb),
            Health::ready("external address pending (no load balancer yet)")
        );
        let lb = svc(
            json!({"type": "LoadBalancer"}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
        );
        assert_eq!(assess(&lb).message, "external address 203.0.113.7");

        let ns = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"},
                   "status": {"phase": phase}})
        };
        assert_eq!(assess(&ns("Active")).state, State::Ready);
        assert_eq!(assess(&ns("Terminating")).state, State::Progressing);

        let crd = |conditions: Value| {
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "widgets.example.com"}, "status": {"conditions": conditions}})
        };
        assert_eq!(
            assess(&crd(json!([{"type": "Established", "status": "True"}]))).state,
            State::Ready
        );
        assert_eq!(assess(&crd(json!([]))).state, State::Progressing);
        let clash = crd(json!([{"type": "NamesAccepted", "status": "False",
            "reason": "ListKindConflict", "message": "\"WidgetList\" is already in use"}]));
        assert_eq!(assess(&clash).state, State::Failed);
    }

    #[test]
    fn custom_resources_follow_kstatus_conventions() {
        let cr = |generation: i64, status: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
                   "metadata": {"name": "w", "generation": generation}, "status": status})
        };
        assert_eq!(
            assess(&cr(1, json!({}))),
            Health::ready("exists").by(Rule::Kstatus)
        );
        assert_eq!(
            assess(&cr(2, json!({"observedGeneration": 1}))).state,
            State::Progressing
        );
        let not_ready = cr(
            1,
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting", "message": "dependency"}]}),
        );
        assert_eq!(
            assess(&not_ready),
            Health::progressing("Ready is False: Waiting: dependency").by(Rule::Kstatus)
        );
        let available = cr(
            1,
            json!({"conditions": [{"type": "Available", "status": "True"}]}),
        );
        assert_eq!(assess(&available).message, "Available is True");
        let stalled = cr(
            1,
            json!({"conditions": [{"type": "Ready", "status": "False"},
                                  {"type": "Stalled", "status": "True", "reason": "InvalidSpec"}]}),
        );
        assert_eq!(
            assess(&stalled),
            Health::failed("InvalidSpec").by(Rule::Kstatus)
        );
    }

    fn strict() -> HealthModel {
        HealthModel {
            rules: HealthRules::default(),
            status_kinds: StatusKinds::Listed(vec![
                ("example.com".into(), "Widget".into()),
                ("networking.k8s.io".into(), "Ingress".into()),
            ]),
        }
    }

    #[test]
    fn a_custom_resource_with_a_status_subresource_needs_its_controllers_word() {
        let cr = |generation: i64, status: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
                   "metadata": {"name": "w", "generation": generation}, "status": status})
        };
        let model = strict();
        let fresh = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                           "metadata": {"name": "w", "generation": 1}});
        assert_eq!(
            model.assess(&fresh),
            Health::progressing("no status yet (is its controller running?)").by(Rule::Kstatus)
        );
        assert_eq!(model.assess(&cr(1, json!({}))).state, State::Progressing);
        let stale = cr(
            2,
            json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(model.assess(&stale).state, State::Progressing);
        let ready = cr(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(
            model.assess(&ready),
            Health::ready("Ready is True").by(Rule::Kstatus)
        );
        let observed = cr(2, json!({"observedGeneration": 2}));
        assert_eq!(
            model.assess(&observed).state,
            State::Ready,
            "kstatus: Current"
        );
        // A kind without a status subresource, and a built-in one, keep "exists".
        let gadget =
            json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}});
        assert_eq!(model.assess(&gadget).message, "exists");
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                             "metadata": {"name": "i"}});
        assert_eq!(model.assess(&ingress).message, "exists");
    }

    #[test]
    fn a_users_rule_wins_over_the_built_in_ones() {
        let spec = HealthRuleSpec {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
            current: Some("self.data.ready == 'yes'".into()),
            ..HealthRuleSpec::default()
        };
        let model = HealthModel {
            rules: HealthRules::compile("health", &[spec]).expect("compiles"),
            ..strict()
        };
        let cm = |ready: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "data": {"ready": ready}})
        };
        assert_eq!(model.assess(&cm("no")).state, State::Progressing);
        let health = model.assess(&cm("yes"));
        assert_eq!(health.state, State::Ready);
        assert_eq!(health.rule.to_string(), "health[0].current");
    }

    #[test]
    fn objects_without_status_are_ready_and_deleted_ones_are_not() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(assess(&cm), Health::ready("exists").by(Rule::Kstatus));
        let mut going = cm.clone();
        going["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(assess(&going), Health::progressing("being deleted"));
        assert_eq!(
            HealthModel::default().assess_opt(None).state,
            State::Missing
        );
    }
}
