//! The daemon's control API: suspend, resume and reconcile a source now. The
//! HTTP handlers (`server`) hand each request to the source's task as a
//! [`Command`] and wait for its answer, so the task, which owns the scheduler and
//! knows whether this replica writes the source, decides; this module also holds
//! the typed bodies both sides share and the client the CLI uses.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /api/v1/sources/{source}/suspend` | [`SuspendRequest`] | [`Suspension`] |
//! | `POST /api/v1/sources/{source}/resume` | none | [`SourceStatus`] |
//! | `POST /api/v1/sources/{source}/reconcile` | none | [`SourceStatus`] after the reconcile |
//!
//! Errors answer [`ApiError`]; a follower answers 409 with the leader's identity.

use crate::daemon::status::{SourceStatus, Suspension};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::oneshot;

/// The body of a suspend request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SuspendRequest {
    /// Who asks (the CLI sends `user@host`).
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of every error the control API answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    pub error: String,
    /// When this replica does not write the source: the one that does, as far as
    /// it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// Why a source task refused a command.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("this replica does not write source {name}; {}", leader_hint(.leader))]
    NotLeader {
        name: String,
        leader: Option<String>,
    },
    #[error("source {name} is suspended by {} ({}); resume it first", .suspension.by,
            .suspension.reason.as_deref().unwrap_or("no reason given"))]
    Suspended {
        name: String,
        suspension: Suspension,
    },
    #[error("cannot record the suspension of {name} on its ApplySet parent: {detail}")]
    Persist { name: String, detail: String },
    #[error("the daemon is shutting down or the source was removed")]
    Gone,
}

fn leader_hint(leader: &Option<String>) -> String {
    match leader {
        Some(leader) => format!("the leader is {leader}: ask it"),
        None => "no replica holds its Lease now".into(),
    }
}

impl ControlError {
    pub(crate) fn status_code(&self) -> StatusCode {
        match self {
            ControlError::NotLeader { .. } | ControlError::Suspended { .. } => StatusCode::CONFLICT,
            ControlError::Persist { .. } => StatusCode::BAD_GATEWAY,
            ControlError::Gone => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn body(&self) -> ApiError {
        ApiError {
            error: self.to_string(),
            leader: match self {
                ControlError::NotLeader { leader, .. } => leader.clone(),
                _ => None,
            },
        }
    }
}

/// Where a source task sends its answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A request for one source task.
#[derive(Debug)]
pub(crate) enum Command {
    Suspend(SuspendRequest, Reply<Suspension>),
    Resume(Reply<SourceStatus>),
    /// Fetch and reconcile everything now; answered once that reconcile ended.
    Reconcile(Reply<SourceStatus>),
}

/// Why a CLI call of the control API failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlCallError {
    #[error("cannot reach {url}: is `converge run` listening there?")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon refused: its message (and, from a follower, the leader).
    #[error("{}", refusal(.status, .body))]
    Refused { status: StatusCode, body: ApiError },
    #[error("{url} sent an answer converge cannot read (a different converge version?)")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set up an HTTP client: {0}")]
    Client(String),
}

fn refusal(status: &StatusCode, body: &ApiError) -> String {
    format!("the daemon answered {status}: {}", body.error)
}

/// A reconcile may wait for its waves to become healthy; the call waits that long.
const CALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The CLI's side of the control API: `addr` as `converge status` takes it,
/// `token` the bearer token (`[server] token_file`) when the daemon needs one.
pub struct ControlClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn new(addr: &str, token: Option<String>) -> Result<Self, ControlCallError> {
        let http = super::client::http_client(CALL_TIMEOUT)
            .map_err(|e| ControlCallError::Client(e.to_string()))?;
        Ok(ControlClient {
            base: super::client::base_url(addr),
            token,
            http,
        })
    }

    pub async fn suspend(
        &self,
        source: &str,
        request: &SuspendRequest,
    ) -> Result<Suspension, ControlCallError> {
        self.post(source, "suspend", Some(request)).await
    }

    pub async fn resume(&self, source: &str) -> Result<SourceStatus, ControlCallError> {
        self.post::<(), _>(source, "resume", None).await
    }

    pub async fn reconcile(&self, source: &str) -> Result<SourceStatus, ControlCallError> {
        self.post::<(), _>(source, "reconcile", None).await
    }

    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        source: &str,
        verb: &str,
        body: Option<&B>,
    ) -> Result<T, ControlCallError> {
        let url = format!("{}/api/v1/sources/{source}/{verb}", self.base);
        let mut request = self.http.post(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |source| ControlCallError::Unreachable {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiError {
                error: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                leader: None,
            });
            return Err(ControlCallError::Refused { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|source| ControlCallError::Decode { url, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_names_the_leader() {
        let error = ControlError::NotLeader {
            name: "apps".into(),
            leader: Some("web-1".into()),
        };
        assert_eq!(error.status_code(), StatusCode::CONFLICT);
        assert_eq!(error.body().leader.as_deref(), Some("web-1"));
        assert!(error.to_string().contains("the leader is web-1"), "{error}");
    }
}
