//! Creating a hook exactly once although the answer to its POST can be lost.
//!
//! Why: a POST is not idempotent. When the connection breaks or times out after the
//! request went out, or the server fails without saying whether it wrote (5xx), the
//! hook may exist already, and sending the POST again would run it twice (a second
//! database migration). So every creation carries a label unique to it
//! ([`ATTEMPT_LABEL`]); after a lost answer the hook is looked up first, by its name
//! (GET) or, for a `generateName`, by that label (LIST), and adopted when found.
//! Only a hook that is surely not there is sent again.

use crate::kube::Meta;
use crate::kube::backoff::Backoff;
use crate::kube::{ApiResource, Client, Error as KubeError, ListParams, PostParams};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, warn};

/// The label that tells one creation of a hook from any other.
pub(super) const ATTEMPT_LABEL: &str = "converge.dev/create-attempt";

/// POSTs of one hook at most: each but the last one's answer was lost.
const MAX_POSTS: u32 = 4;

/// What to do after a POST whose answer was lost, given the hooks found.
#[derive(Debug, PartialEq)]
pub(super) enum AfterLostAnswer {
    /// The POST was carried out: this is the hook it created.
    Adopt(Value),
    /// No hook of this creation exists: the POST never took effect.
    PostAgain,
}

impl AfterLostAnswer {
    /// Decides by the attempt label alone: an object of the same name without it
    /// is another creation's (an earlier sync's), and the POST again meets it with
    /// 409 AlreadyExists, as a first POST would.
    pub(super) fn of(found: Vec<Value>, attempt: &str) -> Self {
        let ours = |live: &Value| {
            live.labels()
                .and_then(|labels| labels.get(ATTEMPT_LABEL))
                .and_then(Value::as_str)
                == Some(attempt)
        };
        match found.into_iter().find(ours) {
            Some(live) => AfterLostAnswer::Adopt(live),
            None => AfterLostAnswer::PostAgain,
        }
    }
}

/// Creates `manifest` (a hook's body) in `namespace` once: the created object.
pub(super) async fn create_once(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    manifest: &Value,
) -> Result<Value, KubeError> {
    let attempt = attempt_id();
    let body = labelled(manifest, &attempt);
    let collection = resource.path(namespace, None);
    let mut delays = Backoff::REQUEST.delays();
    let mut posts = 0;
    loop {
        posts += 1;
        let error = match client
            .create(&collection, &body, &PostParams::default())
            .await
        {
            Ok(created) => return Ok(created),
            Err(e) if !e.answer_lost() || posts >= MAX_POSTS => return Err(e),
            Err(e) => e,
        };
        warn!(%error, "the answer to a hook's creation was lost; looking it up before sending it again");
        if let Some(delay) = delays.next() {
            tokio::time::sleep(delay).await;
        }
        let found = look_up(client, resource, namespace, &body, &attempt).await?;
        if let AfterLostAnswer::Adopt(live) = AfterLostAnswer::of(found, &attempt) {
            info!(
                attempt,
                "the hook had been created: adopted, not created again"
            );
            return Ok(live);
        }
    }
}

/// The hooks that may be this creation's: the one of its name, or those carrying
/// its attempt label.
async fn look_up(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    body: &Value,
    attempt: &str,
) -> Result<Vec<Value>, KubeError> {
    let name = body.name().filter(|name| !name.is_empty());
    if let Some(name) = name {
        let live = client
            .get_opt(&resource.path(namespace, Some(name)))
            .await?;
        return Ok(live.into_iter().collect());
    }
    let selector = format!("{ATTEMPT_LABEL}={attempt}");
    let list = client
        .list(
            &resource.path(namespace, None),
            &ListParams::labels(&selector),
        )
        .await?;
    Ok(list.items)
}

/// `manifest` with the attempt label added.
fn labelled(manifest: &Value, attempt: &str) -> Value {
    let mut body = manifest.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(ATTEMPT_LABEL.to_owned(), Value::from(attempt));
        }
    }
    body
}

/// An id no other creation shares: the time, the process and a counter (a label
/// value: at most 63 characters of `[a-z0-9-]`).
fn attempt_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{count:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hook(name: &str, attempt: Option<&str>) -> Value {
        let mut live = json!({"metadata": {"name": name, "labels": {"app": "db"}}});
        if let Some(attempt) = attempt {
            live["metadata"]["labels"][ATTEMPT_LABEL] = json!(attempt);
        }
        live
    }

    #[test]
    fn a_hook_of_this_attempt_is_adopted_anything_else_is_posted_again() {
        let ours = hook("migrate", Some("a1"));
        assert_eq!(
            AfterLostAnswer::of(vec![ours.clone()], "a1"),
            AfterLostAnswer::Adopt(ours.clone())
        );
        // Nothing found: the POST never took effect.
        assert_eq!(
            AfterLostAnswer::of(vec![], "a1"),
            AfterLostAnswer::PostAgain
        );
        // An earlier sync's instance, or one made by hand: not ours.
        for other in [hook("migrate", Some("a0")), hook("migrate", None)] {
            assert_eq!(
                AfterLostAnswer::of(vec![other.clone()], "a1"),
                AfterLostAnswer::PostAgain
            );
            // generateName: a LIST may find several; ours is picked.
            assert_eq!(
                AfterLostAnswer::of(vec![other, ours.clone()], "a1"),
                AfterLostAnswer::Adopt(ours.clone())
            );
        }
    }

    #[test]
    fn the_attempt_label_is_added_and_unique() {
        let body = labelled(&json!({"metadata": {"generateName": "m-"}}), "x");
        assert_eq!(body["metadata"]["labels"][ATTEMPT_LABEL], "x");
        let body = labelled(&hook("m", None), "y");
        assert_eq!(body["metadata"]["labels"]["app"], "db");
        assert_eq!(body["metadata"]["labels"][ATTEMPT_LABEL], "y");
        let (a, b) = (attempt_id(), attempt_id());
        assert_ne!(a, b);
        assert!(a.len() <= 63 && a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
