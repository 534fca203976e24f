//! Errors of the Kubernetes client, typed after the API's own `Status` object.
//!
//! The API server explains every rejection in a `Status` body (reason, code, message,
//! details). Keeping that body intact lets callers branch on *why* a request failed
//! (`is_not_found`, `is_conflict`, …) and lets reports quote the server's own words.
//! No variant ever carries a token, key or other secret.

use serde::{Deserialize, Serialize};

use super::auth::{CredentialError, ExecError};
use super::config::ClusterConfigError;

/// A `Status` object as returned by the API server for failed requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// `Success` or `Failure`.
    pub status: String,
    /// Human-readable description from the server.
    pub message: String,
    /// Machine-readable reason, e.g. `NotFound`, `Conflict`, `Invalid`, `Expired`.
    pub reason: String,
    /// The HTTP status code.
    pub code: u16,
    /// Extra data about the failure (the object, field causes, retry hint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `Status.details`: which object failed and, for `Invalid`, which fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusDetails {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub uid: String,
    pub causes: Vec<StatusCause>,
    pub retry_after_seconds: Option<u32>,
}

/// One cause of a failure, typically one invalid field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Status {
    /// Decodes an error response body. Bodies that are not a `Status` (a proxy's HTML
    /// page, plain text from an aggregated API) become a synthesized `Status` so callers
    /// handle one shape only.
    pub fn from_response(code: u16, body: &[u8]) -> Status {
        let decoded = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Status"))
            .and_then(|v| serde_json::from_value::<Status>(v).ok());
        match decoded {
            Some(mut status) => {
                if status.code == 0 {
                    status.code = code;
                }
                if status.reason.is_empty() {
                    status.reason = reason_for_code(code).to_string();
                }
                status
            }
            None => Status::synthesized(code, body),
        }
    }

    fn synthesized(code: u16, body: &[u8]) -> Status {
        const MAX: usize = 300;
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = match text.char_indices().nth(MAX) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None if text.is_empty() => format!("HTTP {code} with an empty body"),
            None => text.to_string(),
        };
        Status {
            status: "Failure".into(),
            message,
            reason: reason_for_code(code).into(),
            code,
            details: None,
        }
    }

    /// A 500 that is the server's verdict on the request rather than a failure of
    /// the moment: server-side apply answers `500 failed to create typed patch
    /// object` for a field the schema does not declare or a value of the wrong
    /// type, and `500 failed to convert new object` for a value it cannot decode
    /// (a Secret's `data` that is not base64), and repeats it until the manifest
    /// changes.
    pub fn is_rejected_patch(&self) -> bool {
        const VERDICTS: [&str; 2] = ["failed to create typed ", "failed to convert new object"];
        self.code == 500 && VERDICTS.iter().any(|v| self.message.starts_with(v))
    }

    /// True when the reason is `r`, or (for bodies without a reason) the code is `code`.
    /// This mirrors apimachinery's `ReasonForError` with its code fallback.
    fn is(&self, reason: &str, code: u16) -> bool {
        if self.reason.is_empty() || self.reason == "Unknown" {
            self.code == code
        } else {
            self.reason == reason
        }
    }
}

/// The reason the API server uses for a bare HTTP code (apimachinery's table).
fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// Everything that can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server answered with an error `Status`.
    #[error(
        "the API server rejected {request}: {} (reason {}, code {})",
        status.message,
        status.reason,
        status.code
    )]
    Api {
        /// `VERB /path` of the failed request (no query, no credentials).
        request: String,
        status: Box<Status>,
    },
    /// The request never got an HTTP answer (connect, TLS, timeout, reset).
    #[error("could not reach the API server for {request}: {source}")]
    Http {
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON we expected.
    #[error("the API server's answer to {request} could not be decoded: {reason}")]
    Decode { request: String, reason: String },
    /// Cluster access is misconfigured (kubeconfig, in-cluster files, TLS material).
    #[error(transparent)]
    Config(Box<ClusterConfigError>),
    /// The kubeconfig's exec credential plugin failed.
    #[error(transparent)]
    Exec(Box<ExecError>),
    /// Discovery does not know this kind in this group.
    #[error(
        "unknown kind {kind} in {}: is its CRD installed?",
        group_phrase(group)
    )]
    UnknownKind { group: String, kind: String },
    /// The kind exists, but not at the version the manifest asks for.
    #[error(transparent)]
    UnservedVersion(Box<UnservedVersion>),
    /// The caller built a request the client cannot send (bad path, unencodable body).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// A kind requested at a version its group does not serve it at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kind {kind} in {} is not served at version {version} (served: {}); update the manifest's apiVersion",
    group_phrase(group),
    served.join(", ")
)]
pub struct UnservedVersion {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// Versions that do serve the kind, the preferred one first.
    pub served: Vec<String>,
}

// Boxed: errors travel in every `Result` of the client, so the enum stays small.
impl From<ClusterConfigError> for Error {
    fn from(e: ClusterConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

impl From<ExecError> for Error {
    fn from(e: ExecError) -> Self {
        Error::Exec(Box::new(e))
    }
}

impl From<CredentialError> for Error {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::TokenFile(e) => e.into(),
            CredentialError::Exec(e) => e.into(),
        }
    }
}

fn group_phrase(group: &str) -> String {
    if group.is_empty() {
        "the core API group".into()
    } else {
        format!("group {group}")
    }
}

impl Error {
    /// The server's `Status` when this is an API rejection.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api { status, .. } => Some(status),
            _ => None,
        }
    }

    fn status_is(&self, reason: &str, code: u16) -> bool {
        self.status().is_some_and(|s| s.is(reason, code))
    }

    /// The error with every text of `secrets` replaced by `***` in the server's
    /// words: the API server quotes a rejected value in its message (`expected
    /// string, got …{"the-value"}`), and a Secret's value must never be shown.
    pub fn redacted(mut self, secrets: &[String]) -> Self {
        if let Error::Api { status, .. } = &mut self {
            let redact = |text: &mut String| {
                for secret in secrets {
                    if text.contains(secret.as_str()) {
                        *text = text.replace(secret.as_str(), "***");
                    }
                }
            };
            redact(&mut status.message);
            for cause in status.details.iter_mut().flat_map(|d| d.causes.iter_mut()) {
                redact(&mut cause.message);
                redact(&mut cause.field);
            }
        }
        self
    }

    /// 404: the object (or the resource) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status_is("NotFound", 404)
    }

    /// 409 Conflict: stale resourceVersion or failed uid precondition.
    /// (`AlreadyExists` is also a 409 but has its own helper.)
    pub fn is_conflict(&self) -> bool {
        self.status_is("Conflict", 409)
    }

    /// 409 AlreadyExists from a POST.
    pub fn is_already_exists(&self) -> bool {
        self.status_is("AlreadyExists", 409)
    }

    /// 410 Gone / Expired: a resourceVersion or continue token is too old; relist.
    pub fn is_gone(&self) -> bool {
        self.status_is("Expired", 410) || self.status_is("Gone", 410)
    }

    /// 422 Invalid: the object failed validation; see `details.causes`.
    pub fn is_invalid(&self) -> bool {
        self.status_is("Invalid", 422)
    }

    /// Whether a write that failed so may have been carried out all the same: the
    /// request went out but its answer was lost (a broken or timed-out connection,
    /// a garbled body), or the server failed without saying whether it wrote (500,
    /// 502, 503, 504). A refused connection or a rejection never wrote anything.
    pub fn answer_lost(&self) -> bool {
        match self {
            Error::Http { source, .. } => !source.is_connect(),
            Error::Decode { .. } => true,
            Error::Api { status, .. } => {
                matches!(status.code, 500 | 502 | 503 | 504) && !status.is_rejected_patch()
            }
            _ => false,
        }
    }

    /// Whether the same request may well succeed if sent again soon: the server
    /// is overloaded or failing (429, 5xx), a write raced another (409 Conflict,
    /// 408), or no answer came at all. Other rejections (400, 403, 404, 422, an
    /// unknown kind) repeat until the request changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api { status, .. } if status.is_rejected_patch() => false,
            Error::Api { status, .. } => {
                matches!(status.code, 408 | 429 | 500..=599) || self.is_conflict()
            }
            Error::Http { .. } | Error::Decode { .. } | Error::Exec(_) => true,
            Error::Config(_)
            | Error::UnknownKind { .. }
            | Error::UnservedVersion(_)
            | Error::InvalidRequest(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: Status) -> Error {
        Error::Api {
            request: "PATCH /api/v1/namespaces/a/configmaps/b".into(),
            status: Box::new(status),
        }
    }

    #[test]
    fn decodes_invalid_status_with_causes() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value",
            "reason":"Invalid","details":{"name":"Bad_Name","kind":"ConfigMap",
            "causes":[{"reason":"FieldValueInvalid","message":"Invalid value","field":"metadata.name"}]},
            "code":422}"#;
        let status = Status::from_response(422, body);
        assert_eq!(status.reason, "Invalid");
        assert_eq!(status.code, 422);
        let details = status.details.clone().expect("details");
        assert_eq!(details.kind, "ConfigMap");
        assert_eq!(details.causes[0].field, "metadata.name");
        let err = api(status);
        assert!(err.is_invalid());
        assert!(!err.is_not_found());
        assert_eq!(
            err.to_string(),
            "the API server rejected PATCH /api/v1/namespaces/a/configmaps/b: ConfigMap \
             \"Bad_Name\" is invalid: metadata.name: Invalid value (reason Invalid, code 422)"
        );
    }

    #[test]
    fn non_status_body_is_synthesized() {
        let status = Status::from_response(503, b"<html>upstream unavailable</html>");
        assert_eq!(status.reason, "ServiceUnavailable");
        assert_eq!(status.code, 503);
        assert_eq!(status.message, "<html>upstream unavailable</html>");
        assert_eq!(
            Status::from_response(404, b"").message,
            "HTTP 404 with an empty body"
        );
        let long = "x".repeat(1000);
        assert!(
            Status::from_response(500, long.as_bytes())
                .message
                .chars()
                .count()
                <= 301
        );
    }

    #[test]
    fn helpers_use_reason_then_code() {
        let conflict = api(Status {
            reason: "Conflict".into(),
            code: 409,
            ..Status::default()
        });
        assert!(conflict.is_conflict());
        assert!(!conflict.is_already_exists());
        let exists = api(Status {
            reason: "AlreadyExists".into(),
            code: 409,
            ..Status::default()
        });
        assert!(exists.is_already_exists());
        assert!(!exists.is_conflict());
        let gone = api(Status::from_response(
            410,
            br#"{"kind":"Status","code":410}"#,
        ));
        assert!(gone.is_gone());
        let not_found = api(Status::from_response(404, b"404 page not found"));
        assert!(not_found.is_not_found());
    }

    #[test]
    fn overload_and_outages_are_transient_rejections_are_not() {
        let code = |code: u16| api(Status::from_response(code, b""));
        for transient in [429, 500, 503, 504] {
            assert!(code(transient).is_transient(), "{transient}");
        }
        for rejection in [400, 403, 404, 422] {
            assert!(!code(rejection).is_transient(), "{rejection}");
        }
        let typed = br#"{"kind":"Status","code":500,"reason":"InternalError","message":"failed to create typed patch object (a/b; /v1, Kind=ConfigMap): .dta: field not declared in schema"}"#;
        assert!(!api(Status::from_response(500, typed)).is_transient());
        let convert = br#"{"kind":"Status","code":500,"message":"failed to convert new object (a/b; /v1, Kind=Secret) to proper version: illegal base64 data at input byte 7"}"#;
        assert!(!api(Status::from_response(500, convert)).is_transient());
        let etcd = br#"{"kind":"Status","code":500,"message":"etcdserver: request timed out"}"#;
        assert!(api(Status::from_response(500, etcd)).is_transient());
        let unknown = Error::UnknownKind {
            group: "example.com".into(),
            kind: "Widget".into(),
        };
        assert!(!unknown.is_transient());
    }

    #[test]
    fn an_answer_is_lost_only_when_the_write_may_have_happened() {
        let code = |code: u16| api(Status::from_response(code, b""));
        for unknown in [500, 502, 503, 504] {
            assert!(code(unknown).answer_lost(), "{unknown}");
        }
        // Rejections (and 429, refused before any handler) wrote nothing.
        for rejection in [400, 403, 404, 409, 422, 429] {
            assert!(!code(rejection).answer_lost(), "{rejection}");
        }
        let garbled = Error::Decode {
            request: "POST /apis/batch/v1/namespaces/a/jobs".into(),
            reason: "EOF while parsing".into(),
        };
        assert!(garbled.answer_lost());
        assert!(!Error::InvalidRequest("bad".into()).answer_lost());
    }

    #[test]
    fn redaction_replaces_secrets_in_the_servers_words() {
        let body = br#"{"kind":"Status","code":500,"message":"failed to create typed patch object (a/s; /v1, Kind=Secret): .stringData.password: expected string, got &value.valueUnstructured{Value:[]interface {}{\"hunter22\"}}","details":{"causes":[{"message":"hunter22 is bad","field":"data[hunter22]"}]}}"#;
        let err = api(Status::from_response(500, body)).redacted(&["hunter22".into()]);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains(r#"interface {}{\"***\"}"#), "{shown}");
    }

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 56,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn unknown_kind_reads_well() {
        let err = Error::UnknownKind {
            group: "example.com".into(),
            kind: "Widget".into(),
        };
        assert_eq!(
            err.to_string(),
            "unknown kind Widget in group example.com: is its CRD installed?"
        );
        let core = Error::UnknownKind {
            group: String::new(),
            kind: "Podd".into(),
        };
        assert!(core.to_string().contains("the core API group"));
    }
}
