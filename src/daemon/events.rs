//! Kubernetes Events on each source's ApplySet parent, so that `kubectl describe
//! configmap converge-<source>` and `kubectl get events` tell what converge did.
//!
//! Events are news, not a log: one is posted when something was applied or a
//! reconcile failed, and never twice in a row with the same message.

use crate::engine::applyset::ApplySet;
use crate::kube::{ApiResource, Client, PostParams};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tracing::debug;

/// An Event's `type`: the two the API defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// An Event's `reason`: what converge did, in CamelCase as the API expects. Each
/// reason has one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventReason {
    /// A revision was applied (something was created, configured or pruned).
    Applied,
    /// A revision could not be applied; the last good one stays.
    ReconcileFailed,
    /// A reconcile is held until the source's dependencies are ready.
    DependencyNotReady,
}

impl EventReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventReason::Applied => "Applied",
            EventReason::ReconcileFailed => "ReconcileFailed",
            EventReason::DependencyNotReady => "DependencyNotReady",
        }
    }

    pub(crate) fn event_type(self) -> EventType {
        match self {
            EventReason::Applied | EventReason::DependencyNotReady => EventType::Normal,
            EventReason::ReconcileFailed => EventType::Warning,
        }
    }
}

/// Posts Events; cheap to clone. A disabled one (for `run --dry-run`) writes nothing.
#[derive(Clone)]
pub(crate) struct Events {
    client: Option<Client>,
    /// The last message posted per source, to drop repeats.
    last: Arc<Mutex<HashMap<String, String>>>,
}

impl Events {
    pub(crate) fn new(client: Client) -> Self {
        Events {
            client: Some(client),
            last: Arc::default(),
        }
    }

    /// Events that are never sent: a dry-run daemon must not write at all.
    /// The same (enabled or not) for another cluster: a source on a `[[clusters]]`
    /// entry posts its Events there, where its ApplySet parent is.
    pub(crate) fn on(&self, client: Client) -> Self {
        Events {
            client: self.client.as_ref().map(|_| client),
            last: Arc::default(),
        }
    }

    pub(crate) fn disabled() -> Self {
        Events {
            client: None,
            last: Arc::default(),
        }
    }

    /// Posts an Event about `source`'s ApplySet parent in the background (an Event
    /// that cannot be posted is not worth failing a reconcile for).
    pub(crate) fn emit(&self, source: &str, namespace: &str, reason: EventReason, message: &str) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if !self.is_news(source, message) {
            return;
        }
        let applyset = ApplySet::new(source, namespace);
        let body = event_body(&applyset, reason, message);
        let path = ApiResource::events().path(Some(namespace), None);
        tokio::spawn(async move {
            if let Err(e) = client.create(&path, &body, &PostParams::default()).await {
                debug!(error = %e, "cannot post an Event");
            }
        });
    }

    fn is_news(&self, source: &str, message: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(source).map(String::as_str) == Some(message) {
            return false;
        }
        last.insert(source.to_string(), message.to_string());
        true
    }
}

/// A core/v1 Event about the parent ConfigMap. Messages are capped at the API's
/// 1 KiB limit.
fn event_body(applyset: &ApplySet, reason: EventReason, message: &str) -> Value {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let message: String = message.chars().take(1000).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": format!("{}.", applyset.parent_name),
            "namespace": applyset.namespace,
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": applyset.parent_name,
            "namespace": applyset.namespace,
        },
        "type": reason.event_type().as_str(),
        "reason": reason.as_str(),
        "message": message,
        "source": {"component": "converge"},
        "reportingComponent": "converge",
        "reportingInstance": "converge",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_not_news() {
        let events = Events::disabled();
        assert!(events.is_news("a", "x"));
        assert!(!events.is_news("a", "x"));
        assert!(events.is_news("b", "x"));
        assert!(events.is_news("a", "y"));
        assert!(events.is_news("a", "x"));
    }

    #[test]
    fn events_point_at_the_applyset_parent() {
        let body = event_body(
            &ApplySet::new("shop", "apps"),
            EventReason::ReconcileFailed,
            &"x".repeat(2000),
        );
        assert_eq!(body["involvedObject"]["name"], "converge-shop");
        assert_eq!(body["metadata"]["namespace"], "apps");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "ReconcileFailed");
        assert_eq!(body["message"].as_str().map(str::len), Some(1000));
    }
}
