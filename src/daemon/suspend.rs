//! Where a suspension is kept: the annotation [`SUSPEND_ANNOTATION`] on the
//! source's ApplySet parent (`ConfigMap converge-<source>`), in the cluster the
//! source writes to, so that a restarted daemon and a new leader read it before
//! their first write. Flux keeps `spec.suspend` on its custom resource for the
//! same reason; converge has no CRD, and the parent is the object it already owns.
//!
//! The annotation has a field manager of its own ([`SUSPEND_MANAGER`]): the
//! parent's apply by the engine never removes it, and resuming is an apply of
//! that manager without it. A person may also set it with `kubectl annotate`
//! (any text: it is read as the reason); the daemon reads it when it starts and
//! when it becomes the writer.

use crate::daemon::status::Suspension;
use crate::engine::applyset::ApplySet;
use crate::kube::{ApiResource, Client, Error, PatchParams};
use serde_json::{Value, json};

/// The parent's annotation holding the [`Suspension`] (JSON).
pub(crate) const SUSPEND_ANNOTATION: &str = "converge.dev/suspended";
/// The field manager of the annotation.
const SUSPEND_MANAGER: &str = "converge-suspend";

fn parent_path(applyset: &ApplySet) -> String {
    ApiResource::config_maps().path(Some(&applyset.namespace), Some(&applyset.parent_name))
}

/// The suspension a parent records (`None`: no parent, or not suspended).
pub(super) async fn read(
    client: &Client,
    applyset: &ApplySet,
) -> Result<Option<Suspension>, Error> {
    let parent = client.get_opt(&parent_path(applyset)).await?;
    Ok(of_parent(parent.as_ref()))
}

/// The annotation's suspension; text that is not one (a person's `kubectl
/// annotate`) still suspends, with that text as the reason.
fn of_parent(parent: Option<&Value>) -> Option<Suspension> {
    let annotations = parent?.pointer("/metadata/annotations")?;
    let text = annotations.get(SUSPEND_ANNOTATION)?.as_str()?;
    Some(serde_json::from_str(text).unwrap_or_else(|_| Suspension {
        by: "an annotation".into(),
        at: None,
        reason: Some(text.to_owned()),
    }))
}

/// Records `suspension` on the parent (creating the parent if the source never
/// reconciled); `None` removes it.
pub(super) async fn write(
    client: &Client,
    applyset: &ApplySet,
    suspension: Option<&Suspension>,
) -> Result<(), Error> {
    let mut metadata = json!({
        "name": applyset.parent_name,
        "namespace": applyset.namespace,
    });
    if let Some(suspension) = suspension {
        let text = serde_json::to_string(suspension).unwrap_or_default();
        metadata["annotations"] = json!({ SUSPEND_ANNOTATION: text });
    }
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata});
    let params = PatchParams::apply(SUSPEND_MANAGER).force();
    client.apply(&parent_path(applyset), &body, &params).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_suspension_reads_back_from_the_parent() {
        let suspension = Suspension {
            by: "ana@laptop".into(),
            at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            reason: Some("incident 42".into()),
        };
        let text = serde_json::to_string(&suspension).expect("json");
        let parent = json!({"metadata": {"annotations": {SUSPEND_ANNOTATION: text}}});
        assert_eq!(of_parent(Some(&parent)), Some(suspension));
        assert_eq!(of_parent(Some(&json!({"metadata": {}}))), None);
        assert_eq!(of_parent(None), None);
    }

    #[test]
    fn any_other_text_suspends_with_it_as_the_reason() {
        let parent = json!({"metadata": {"annotations": {SUSPEND_ANNOTATION: "db migration"}}});
        let read = of_parent(Some(&parent)).expect("suspended");
        assert_eq!(read.reason.as_deref(), Some("db migration"));
    }
}
