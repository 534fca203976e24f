//! Evidence: the facts that explain why an object is not ready, gathered the way a
//! person would with `kubectl describe` and `kubectl logs`, but bounded.
//!
//! For one object: its conditions; the recent Events about it (and, for a
//! Deployment, about its newest ReplicaSet, where `FailedCreate` shows up); for a
//! workload, up to [`MAX_PODS`] of its Pods that are not ready, with their
//! conditions, container states, Events and the last [`LOG_LINES`] lines of the
//! failing container's log (`previous=true` after a restart). At most about ten
//! requests per object, whatever the size of the workload.
//!
//! Only status is reported, never a spec: environment values (which may come from
//! Secrets) cannot end up here. What could not be found out is said in
//! [`Evidence::notes`], with the server's error.

use super::{conditions, text};
use crate::kube::Meta;
use crate::kube::{ApiResource, Client, ListParams, LogParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Reverse;
use tracing::{Instrument, info_span};

/// Pods of a workload examined at most.
pub(crate) const MAX_PODS: usize = 3;
/// Events reported per object.
pub(crate) const MAX_EVENTS: usize = 5;
/// Log lines reported per container.
pub(crate) const LOG_LINES: usize = 20;
/// Bytes of log read per container, whatever the line length.
const LOG_BYTES: usize = 16 * 1024;
/// Items asked for in one page of Pods or Events: one request, never a full list.
const PAGE: u32 = 100;

/// Why an object is not ready, as far as the cluster tells.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub conditions: Vec<ConditionInfo>,
    /// Recent Events about the object, its newest ReplicaSet and its Pods, newest first.
    pub events: Vec<EventInfo>,
    /// The Pods that are not ready (at most [`MAX_PODS`]).
    pub pods: Vec<PodInfo>,
    /// What could not be found out, and why.
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionInfo {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventInfo {
    /// What the Event is about: `Pod/web-5d9c-x2x4z`.
    pub object: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// How often it happened.
    pub count: u64,
    /// RFC 3339 time it was last seen, when the Event says.
    pub last_seen: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub node: Option<String>,
    /// The conditions that are not True (`PodScheduled=False Unschedulable: …`).
    pub conditions: Vec<ConditionInfo>,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    pub name: String,
    pub init: bool,
    pub ready: bool,
    pub restarts: i64,
    /// `running`, `waiting: CrashLoopBackOff: …`, `terminated: OOMKilled (exit code 137)`.
    pub state: String,
    /// How the previous run ended, after a restart.
    pub last_state: Option<String>,
    /// The last lines of its log, when it is the failing container.
    pub log: Option<LogExcerpt>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogExcerpt {
    /// From the run before the last restart (`previous=true`).
    pub previous: bool,
    pub lines: Vec<String>,
}

/// Gathers the evidence about `live` (an object as the server returned it).
/// Never fails: what cannot be read is recorded in [`Evidence::notes`].
pub async fn gather(client: &Client, live: &Value) -> Evidence {
    let span = info_span!(
        "evidence",
        kind = text(live, "/kind"),
        name = live.name().unwrap_or_default()
    );
    gather_inner(client, live).instrument(span).await
}

async fn gather_inner(client: &Client, live: &Value) -> Evidence {
    let mut evidence = Evidence {
        conditions: condition_infos(live),
        ..Evidence::default()
    };
    let namespace = live.namespace();
    let mut about = vec![live.clone()];
    if text(live, "/kind") == "Deployment" {
        match newest_replica_set(client, live).await {
            Ok(rs) => about.extend(rs),
            Err(note) => evidence.notes.push(note),
        }
    }
    let pods = match workload_pods(client, live).await {
        Ok(pods) => pods,
        Err(note) => {
            evidence.notes.push(note);
            Vec::new()
        }
    };
    let (failing, ready) = pick_pods(pods);
    if failing.is_empty() && ready > 0 {
        evidence
            .notes
            .push(format!("all {ready} Pod(s) of it are ready"));
    }
    for pod in &failing {
        evidence
            .pods
            .push(pod_with_log(client, pod, &mut evidence.notes).await);
    }
    about.extend(failing);
    for object in &about {
        match events_about(client, namespace, object).await {
            Ok(events) => evidence.events.extend(events),
            Err(note) => evidence.notes.push(note),
        }
    }
    warnings_first(&mut evidence.events);
    evidence
}

/// Warnings first (they are what explains a failure), each group newest first.
fn warnings_first(events: &mut [EventInfo]) {
    events.sort_by(|a, b| {
        let key = |e: &EventInfo| (e.type_ == "Warning", e.last_seen.clone());
        key(b).cmp(&key(a))
    });
}

/// Every condition of `live`.
pub(crate) fn condition_infos(live: &Value) -> Vec<ConditionInfo> {
    conditions(live)
        .into_iter()
        .map(|c| ConditionInfo {
            type_: c.type_.into(),
            status: c.status.into(),
            reason: c.reason.into(),
            message: c.message.into(),
        })
        .collect()
}

/// The Pods a workload selects (or the Pod itself), one page at most.
async fn workload_pods(client: &Client, live: &Value) -> Result<Vec<Value>, String> {
    let kind = text(live, "/kind");
    if kind == "Pod" {
        return Ok(vec![live.clone()]);
    }
    if !matches!(
        kind,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job"
    ) {
        return Ok(Vec::new());
    }
    let Some(selector) = live.pointer("/spec/selector").and_then(label_selector) else {
        return Ok(Vec::new());
    };
    let path = ApiResource::pods().path(Some(live.namespace().unwrap_or_default()), None);
    let page = client
        .list_page(&path, &ListParams::labels(&selector).limit(PAGE))
        .await
        .map_err(|e| format!("cannot list its Pods: {e}"))?;
    Ok(page.items)
}

/// A Deployment's newest ReplicaSet: where `FailedCreate` Events (quota, admission)
/// are reported, which the Deployment itself does not show.
async fn newest_replica_set(client: &Client, deployment: &Value) -> Result<Option<Value>, String> {
    let Some(selector) = deployment
        .pointer("/spec/selector")
        .and_then(label_selector)
    else {
        return Ok(None);
    };
    let namespace = deployment.namespace().unwrap_or_default();
    let path = ApiResource::replica_sets().path(Some(namespace), None);
    let page = client
        .list_page(&path, &ListParams::labels(&selector).limit(PAGE))
        .await
        .map_err(|e| format!("cannot list its ReplicaSets: {e}"))?;
    Ok(newest_owned(
        page.items,
        deployment.uid().unwrap_or_default(),
    ))
}

/// The owned ReplicaSet with the highest `deployment.kubernetes.io/revision`.
fn newest_owned(replica_sets: Vec<Value>, owner_uid: &str) -> Option<Value> {
    let revision = |rs: &Value| -> i64 {
        text(
            rs,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        )
        .parse()
        .unwrap_or(0)
    };
    replica_sets
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .is_some_and(|owners| owners.iter().any(|o| text(o, "/uid") == owner_uid))
        })
        .max_by_key(revision)
}

/// The most recent Events about `object`, by its uid.
async fn events_about(
    client: &Client,
    namespace: Option<&str>,
    object: &Value,
) -> Result<Vec<EventInfo>, String> {
    let uid = object.uid().unwrap_or_default();
    if uid.is_empty() {
        return Ok(Vec::new());
    }
    let path = ApiResource::events().path(namespace, None);
    let about = ListParams::fields(&format!("involvedObject.uid={uid}")).limit(PAGE);
    let page = client.list_page(&path, &about).await.map_err(|e| {
        format!(
            "cannot read the Events of {}/{}: {e}",
            text(object, "/kind"),
            object.name().unwrap_or_default()
        )
    })?;
    Ok(recent_events(&page.items, MAX_EVENTS))
}

/// Up to `limit` Events, warnings first, newest first.
pub(crate) fn recent_events(events: &[Value], limit: usize) -> Vec<EventInfo> {
    let mut infos: Vec<EventInfo> = events.iter().map(event_info).collect();
    warnings_first(&mut infos);
    infos.truncate(limit);
    infos
}

/// One Event, whether written through `core/v1` or `events.k8s.io/v1` (the
/// scheduler's: `series` instead of `count`, `eventTime` instead of `lastTimestamp`).
pub(crate) fn event_info(event: &Value) -> EventInfo {
    let count = event
        .pointer("/series/count")
        .or_else(|| event.pointer("/count"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let last_seen = [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| text(event, p))
    .find(|t| !t.is_empty())
    .map(str::to_string);
    EventInfo {
        object: format!(
            "{}/{}",
            text(event, "/involvedObject/kind"),
            text(event, "/involvedObject/name")
        ),
        type_: text(event, "/type").into(),
        reason: text(event, "/reason").into(),
        message: text(event, "/message").trim_end().into(),
        count,
        last_seen,
    }
}

/// The Pods worth showing: those not ready (failed ones first, then the newest),
/// at most [`MAX_PODS`]; and how many are ready.
pub(crate) fn pick_pods(pods: Vec<Value>) -> (Vec<Value>, usize) {
    let (ready, mut failing): (Vec<Value>, Vec<Value>) = pods
        .into_iter()
        .partition(|p| is_ready(p) || text(p, "/status/phase") == "Succeeded");
    failing.sort_by_key(|p| {
        let failed = super::assess(p).state == super::State::Failed;
        (
            Reverse(failed),
            Reverse(p.creation_timestamp().unwrap_or_default().to_string()),
        )
    });
    failing.truncate(MAX_PODS);
    (failing, ready.len())
}

fn is_ready(pod: &Value) -> bool {
    conditions(pod)
        .iter()
        .any(|c| c.type_ == "Ready" && c.is_true())
}

/// The Pod's status, with the log of its failing container when there is one.
async fn pod_with_log(client: &Client, pod: &Value, notes: &mut Vec<String>) -> PodInfo {
    let mut info = pod_info(pod);
    let Some((container, previous)) = log_target(pod) else {
        return info;
    };
    let name = pod.name().unwrap_or_default();
    match read_log(client, pod, &container, previous).await {
        Ok(lines) => {
            if let Some(c) = info.containers.iter_mut().find(|c| c.name == container) {
                c.log = Some(LogExcerpt { previous, lines });
            }
        }
        Err(e) => notes.push(format!(
            "the log of container {container} in Pod {name} is unavailable: {e}"
        )),
    }
    info
}

async fn read_log(
    client: &Client,
    pod: &Value,
    container: &str,
    previous: bool,
) -> Result<Vec<String>, crate::kube::Error> {
    let params = LogParams {
        container: container.to_string(),
        tail_lines: Some(LOG_LINES),
        limit_bytes: Some(LOG_BYTES),
        previous,
    };
    let namespace = pod.namespace().unwrap_or_default();
    let log = client
        .logs(namespace, pod.name().unwrap_or_default(), &params)
        .await?;
    Ok(last_lines(&log, LOG_LINES))
}

/// The last `n` non-empty lines of `log`.
pub(crate) fn last_lines(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// A Pod's phase, node, unhealthy conditions and container states.
pub(crate) fn pod_info(pod: &Value) -> PodInfo {
    let node = text(pod, "/spec/nodeName");
    PodInfo {
        name: pod.name().unwrap_or_default().into(),
        phase: text(pod, "/status/phase").into(),
        node: (!node.is_empty()).then(|| node.to_string()),
        conditions: condition_infos(pod)
            .into_iter()
            .filter(|c| c.status != "True")
            .collect(),
        containers: containers(pod)
            .map(|(status, init)| container_info(status, init))
            .collect(),
    }
}

/// Container statuses, init containers first, with whether each is an init one.
fn containers(pod: &Value) -> impl Iterator<Item = (&Value, bool)> {
    [
        ("/status/initContainerStatuses", true),
        ("/status/containerStatuses", false),
    ]
    .into_iter()
    .filter_map(|(p, init)| Some((pod.pointer(p)?.as_array()?, init)))
    .flat_map(|(list, init)| list.iter().map(move |c| (c, init)))
}

fn container_info(status: &Value, init: bool) -> ContainerInfo {
    ContainerInfo {
        name: text(status, "/name").into(),
        init,
        ready: status.pointer("/ready") == Some(&Value::Bool(true)),
        restarts: status
            .pointer("/restartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        state: describe_state(status.pointer("/state")).unwrap_or_else(|| "unknown".into()),
        last_state: describe_state(status.pointer("/lastState")),
        log: None,
    }
}

/// `running`, `waiting: Reason: message`, `terminated: Reason (exit code N): message`.
fn describe_state(state: Option<&Value>) -> Option<String> {
    let state = state?.as_object()?;
    let (name, detail) = state.iter().next()?;
    let reason = text(detail, "/reason");
    let message = text(detail, "/message").trim_end();
    let mut out = name.clone();
    if !reason.is_empty() {
        out = format!("{out}: {reason}");
    }
    if let Some(code) = detail.pointer("/exitCode").and_then(Value::as_i64) {
        out = format!("{out} (exit code {code})");
    }
    if !message.is_empty() {
        out = format!("{out}: {message}");
    }
    Some(out)
}

/// Which container's log explains the Pod, and whether from its previous run: the
/// first container that is not ready and has run (now or before a restart).
/// `None` when no container ever started (unscheduled, image not pulled): there is
/// no log to read.
pub(crate) fn log_target(pod: &Value) -> Option<(String, bool)> {
    if text(pod, "/spec/nodeName").is_empty() {
        return None;
    }
    containers(pod).find_map(|(c, _)| {
        if c.pointer("/ready") == Some(&Value::Bool(true)) {
            return None;
        }
        let has_run =
            c.pointer("/state/running").is_some() || c.pointer("/state/terminated").is_some();
        let ran_before = c.pointer("/lastState/terminated").is_some();
        let waiting = c.pointer("/state/waiting").is_some();
        let name = text(c, "/name").to_string();
        if waiting && ran_before {
            Some((name, true))
        } else if has_run {
            Some((name, false))
        } else {
            None
        }
    })
}

/// A `LabelSelector` as the `labelSelector` query parameter: `matchLabels` and
/// `matchExpressions` (In, NotIn, Exists, DoesNotExist). `None` for an empty or
/// malformed selector, which would select every Pod in the namespace.
pub(crate) fn label_selector(selector: &Value) -> Option<String> {
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        terms.push(expression_term(expression)?);
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

fn expression_term(expression: &Value) -> Option<String> {
    let key = expression.get("key")?.as_str()?;
    let values: Vec<&str> = expression
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match expression.get("operator")?.as_str()? {
        "In" => Some(format!("{key} in ({})", values.join(","))),
        "NotIn" => Some(format!("{key} notin ({})", values.join(","))),
        "Exists" => Some(key.to_string()),
        "DoesNotExist" => Some(format!("!{key}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_become_query_strings() {
        let selector = json!({"matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "team", "operator": "NotIn", "values": ["a"]}]});
        assert_eq!(
            label_selector(&selector).as_deref(),
            Some("app=web,tier=front,env in (prod,staging),!canary,zone,team notin (a)")
        );
        assert_eq!(label_selector(&json!({})), None, "empty selects everything");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Near"}]});
        assert_eq!(label_selector(&bad), None);
    }

    #[test]
    fn events_from_both_apis_are_read_newest_first() {
        let core = json!({"involvedObject": {"kind": "Pod", "name": "web-1"}, "type": "Warning",
            "reason": "BackOff", "message": "Back-off restarting failed container\n", "count": 7,
            "lastTimestamp": "2024-05-01T10:00:05Z"});
        let scheduler = json!({"involvedObject": {"kind": "Pod", "name": "web-2"}, "type": "Warning",
            "reason": "FailedScheduling", "message": "0/2 nodes are available",
            "eventTime": "2024-05-01T10:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2024-05-01T10:00:09.000000Z"}});
        let normal = json!({"involvedObject": {"kind": "Pod", "name": "web-1"}, "type": "Normal",
            "reason": "Scheduled", "message": "assigned", "firstTimestamp": "2024-05-01T11:00:00Z"});
        let events = recent_events(&[normal, core, scheduler], 2);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].reason, "FailedScheduling");
        assert_eq!(events[0].count, 3);
        assert_eq!(events[0].object, "Pod/web-2");
        assert_eq!(events[1].message, "Back-off restarting failed container");
        assert_eq!(events[1].count, 7);
    }

    fn pod(name: &str, created: &str, status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
               "spec": {"nodeName": "node-1"}, "status": status})
    }

    #[test]
    fn failing_pods_are_picked_first_and_ready_ones_counted() {
        let ready = pod(
            "ready",
            "2024-01-01T00:00:03Z",
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        let pending_old = pod(
            "pending-old",
            "2024-01-01T00:00:01Z",
            json!({"phase": "Pending"}),
        );
        let pending_new = pod(
            "pending-new",
            "2024-01-01T00:00:02Z",
            json!({"phase": "Pending"}),
        );
        let crashing = pod(
            "crashing",
            "2024-01-01T00:00:00Z",
            json!({"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        let extra = pod("extra", "2024-01-01T00:00:00Z", json!({"phase": "Pending"}));
        let (picked, ready_count) =
            pick_pods(vec![ready, pending_old, pending_new, crashing, extra]);
        let names: Vec<&str> = picked
            .iter()
            .map(|p| p.name().unwrap_or_default())
            .collect();
        assert_eq!(names, ["crashing", "pending-new", "pending-old"]);
        assert_eq!(ready_count, 1);
    }

    #[test]
    fn container_states_read_like_kubectl_describe() {
        let crashing = pod(
            "web-1",
            "",
            json!({"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                                  {"type": "PodScheduled", "status": "True"}],
                   "containerStatuses": [{"name": "app", "ready": false, "restartCount": 4,
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                       "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}},
                     {"name": "sidecar", "ready": true, "state": {"running": {"startedAt": "x"}}}]}),
        );
        let info = pod_info(&crashing);
        assert_eq!(info.node.as_deref(), Some("node-1"));
        assert_eq!(
            info.conditions.len(),
            1,
            "only conditions that are not True"
        );
        assert_eq!(
            info.containers[0].state,
            "waiting: CrashLoopBackOff: back-off 1m20s"
        );
        assert_eq!(
            info.containers[0].last_state.as_deref(),
            Some("terminated: OOMKilled (exit code 137)")
        );
        assert_eq!(info.containers[0].restarts, 4);
        assert_eq!(info.containers[1].state, "running");
        assert_eq!(log_target(&crashing), Some(("app".into(), true)));
    }

    #[test]
    fn logs_are_read_only_from_containers_that_ran() {
        let unscheduled = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(log_target(&unscheduled), None);
        let pulling = pod(
            "p",
            "",
            json!({"containerStatuses": [{"name": "app", "ready": false,
                "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        assert_eq!(log_target(&pulling), None, "no image, no log");
        let exited = pod(
            "p",
            "",
            json!({"containerStatuses": [{"name": "app", "ready": false,
                "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}),
        );
        assert_eq!(log_target(&exited), Some(("app".into(), false)));
    }

    #[test]
    fn newest_owned_replica_set_by_revision() {
        let rs = |name: &str, owner: &str, revision: &str| {
            json!({"metadata": {"name": name,
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"uid": owner}]}})
        };
        let newest = newest_owned(
            vec![
                rs("a", "d1", "1"),
                rs("b", "d1", "2"),
                rs("c", "other", "9"),
            ],
            "d1",
        );
        assert_eq!(
            newest.map(|r| r.name().unwrap_or_default().to_string()),
            Some("b".into())
        );
    }

    #[test]
    fn last_lines_skip_blank_ones() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), ["b", "c"]);
        assert!(last_lines("", 5).is_empty());
    }
}
