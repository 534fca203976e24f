//! Why a reconcile failed, and whether trying again soon can help (the scheduler's
//! error policy reads it).

use crate::engine::EngineError;
use crate::manifest::{ManifestError, Problem};
use crate::render::RenderError;
use crate::source::SourceError;

/// Why a reconcile failed. The last good state stays applied in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// The source could not be fetched (no revision to reconcile).
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `[source.decryption]`'s keys could not be gathered.
    #[error(transparent)]
    Keys(#[from] crate::sops::KeysError),
    /// A hook or a wave failed: the sync stopped there. The message has the
    /// stages as they ran and the evidence.
    #[error("{0}")]
    Sync(String),
}

impl ReconcileError {
    /// The objects the API server refused, each with its reason (a validation
    /// error, an admission webhook, RBAC's "cannot patch resource …").
    pub(crate) fn refused(&self) -> &[Problem] {
        match self {
            ReconcileError::Engine(
                EngineError::Rejected(problems)
                | EngineError::RejectedAfterFirstStage(problems)
                | EngineError::Owned(problems),
            ) => problems,
            _ => &[],
        }
    }

    /// Whether the failure is of the moment (the remote, the server, the network,
    /// the disk) and worth a retry soon; otherwise it is the revision's own (a
    /// parse error, a rejection, a mass prune, an empty source, a missing ref, a
    /// refused password) and repeats until the revision or the settings change.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Source(e) => e.is_transient(),
            ReconcileError::Manifest(e) => matches!(e, ManifestError::Io { .. }),
            ReconcileError::Render(e) => e.is_transient(),
            ReconcileError::Engine(e) => e.is_transient(),
            ReconcileError::Keys(e) => e.is_transient(),
            // The revision's own until shown otherwise: the next tick tries again.
            ReconcileError::Sync(_) => false,
        }
    }
}
