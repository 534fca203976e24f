//! `--create-namespace` (a source's `create_namespace = true`): the namespace a
//! release goes into is created when it does not exist, before anything is
//! validated against it, as Helm's `--create-namespace`, Argo CD's
//! `CreateNamespace=true` and Flux's `install.createNamespace` do.
//!
//! It is not a member of the ApplySet (no `part-of` label), so it is never pruned,
//! not even when the flag is dropped later: deleting a namespace deletes everything
//! in it, including what others put there. If the revision is refused, the
//! namespace this run created is deleted again (uid precondition), so that a
//! refused revision leaves nothing behind.

use super::{EngineError, api_error};
use crate::kube::Meta;
use crate::kube::{
    ApiResource, Client, DeleteParams, PostParams, Preconditions, PropagationPolicy,
};
use crate::manifest::ObjectRef;
use serde_json::json;
use tracing::{info, warn};

/// The annotation naming the ApplySet a created namespace was created for.
pub(super) const CREATED_FOR: &str = "converge.dev/created-for";

/// Where the target namespace stands for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TargetNamespace {
    /// It exists (or the run was not asked to create it).
    Exists,
    /// This run created it, with this uid.
    Created { uid: String },
    /// It does not exist and the run writes nothing: what goes into it is compared
    /// as written.
    WouldCreate,
}

fn namespace_ref(name: &str) -> ObjectRef {
    ObjectRef {
        group: String::new(),
        kind: "Namespace".into(),
        namespace: None,
        name: name.into(),
    }
}

/// Creates `name` unless it exists (a dry run only says that it would).
/// `access` is the source's client (which creates it) and converge's own (which
/// reads it).
pub(super) async fn ensure(
    (client, reader): (&Client, &Client),
    name: &str,
    applyset: &str,
    dry_run: bool,
) -> Result<TargetNamespace, EngineError> {
    let object = namespace_ref(name);
    let path = ApiResource::namespaces().path(None, Some(name));
    let live = reader
        .get_opt(&path)
        .await
        .map_err(|e| api_error(&object, e))?;
    if live.is_some() {
        return Ok(TargetNamespace::Exists);
    }
    if dry_run {
        return Ok(TargetNamespace::WouldCreate);
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "annotations": {CREATED_FOR: applyset}},
    });
    let collection = ApiResource::namespaces().path(None, None);
    let created = match client
        .create(&collection, &body, &PostParams::default())
        .await
    {
        Ok(created) => created,
        Err(e) if e.is_already_exists() => return Ok(TargetNamespace::Exists),
        Err(e) => return Err(api_error(&object, e)),
    };
    let uid = created.uid().unwrap_or_default().to_string();
    info!(namespace = name, "namespace created (--create-namespace)");
    Ok(TargetNamespace::Created { uid })
}

/// Deletes the namespace this run created, after its revision was refused.
pub(super) async fn undo(client: &Client, name: &str, uid: &str) {
    let path = ApiResource::namespaces().path(None, Some(name));
    let params = DeleteParams {
        propagation: PropagationPolicy::Background,
        preconditions: Some(Preconditions { uid: uid.into() }),
    };
    match client.delete(&path, &params).await {
        Ok(()) => info!(
            namespace = name,
            "namespace deleted again: the revision was refused"
        ),
        Err(e) if e.is_not_found() => {}
        Err(e) => warn!(namespace = name, error = %e, "could not delete the namespace again"),
    }
}

/// Whether an error refuses the revision before anything of it was written (the
/// namespace created for it then goes again).
pub(super) fn refuses_revision(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::Rejected(_) | EngineError::Owned(_) | EngineError::Plan(_)
    )
}
