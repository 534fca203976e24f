//! The client side of the daemon's HTTP API: `converge status` and `get` read
//! `/status`, the control verbs call `/api/v1` ([`super::control`]).

use super::status::StatusReport;
use axum::http::StatusCode;
use rustls_platform_verifier::BuilderVerifierExt;
use std::sync::Arc;
use std::time::Duration;

/// Why `converge status` could not show the daemon's status.
#[derive(Debug, thiserror::Error)]
pub enum StatusFetchError {
    #[error("cannot reach {url}: is `converge run` listening on {addr}?")]
    Unreachable {
        addr: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url} sent a status converge cannot read (a different converge version?)")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot set up an HTTP client: {0}")]
    Client(String),
}

/// A daemon that is up answers in milliseconds; waiting longer only delays the
/// "is it running?" hint.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of `converge status`: `GET http://<addr>/status`. `addr` is the
/// daemon's listen address (`127.0.0.1:8080`) or a full base URL.
pub async fn fetch_status(
    addr: &str,
    token: Option<&str>,
) -> Result<StatusReport, StatusFetchError> {
    let url = status_url(addr);
    let client = http_client(FETCH_TIMEOUT)?;
    let unreachable = |source| StatusFetchError::Unreachable {
        addr: addr.to_owned(),
        url: url.clone(),
        source,
    };
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(StatusFetchError::Status { url, status, body });
    }
    serde_json::from_slice(&body).map_err(|source| StatusFetchError::Decode { url, source })
}

/// reqwest is built without a default crypto provider (see `kube::tls`), so it gets
/// a ring-based TLS config: plain `http://` needs none, but an `https://` address
/// (the daemon behind a TLS proxy) is checked against the system trust store.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, StatusFetchError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| StatusFetchError::Client(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(timeout)
        .build()
        .map_err(|e| StatusFetchError::Client(e.to_string()))
}

fn status_url(addr: &str) -> String {
    format!("{}/status", base_url(addr))
}

/// `http://ADDR` for an address, the URL itself (without a trailing `/`) for a URL.
pub(crate) fn base_url(addr: &str) -> String {
    let base = addr.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_url_accepts_addresses_and_urls() {
        assert_eq!(status_url("127.0.0.1:8080"), "http://127.0.0.1:8080/status");
        assert_eq!(
            status_url("http://converge:80/"),
            "http://converge:80/status"
        );
    }
}
