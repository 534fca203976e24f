//! A small client of the OCI distribution API over converge's own reqwest: manifests
//! and tags read, blobs streamed in under a size cap, blobs and manifests pushed,
//! and the registry's token dance (`WWW-Authenticate: Bearer realm=…`).
//!
//! Why not the `oci-client` crate: it builds its own reqwest client (so its TLS would
//! need a process-wide rustls provider that converge never installs), brings
//! `oci-spec`, `chrono` and `olpc-cjson` for the handful of fields read here, and
//! caps nothing while a blob streams in. These few requests are easier to keep
//! honest here.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::super::digest::Digest;
use super::reference::RegistryTransport;
use super::{Credentials, OciError};

/// A registry answers slowly under load; a manifest or token request that takes
/// longer than this is a failure the scheduler retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Manifests and tag lists are small; a registry sending more is refused.
const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// One registry, reached over its transport with optional credentials.
pub(crate) struct Registry {
    http: reqwest::Client,
    base: String,
    registry: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that worked last (a bearer token or basic).
    authorization: Mutex<Option<String>>,
}

/// A request to send, again if the registry first asks for a token.
struct Call<'a> {
    method: Method,
    url: String,
    accept: Option<&'a str>,
    content_type: Option<&'a str>,
    body: Option<&'a [u8]>,
    /// `pull` or `pull,push`: the scope asked for when no challenge names one.
    actions: &'a str,
    repository: &'a str,
}

impl Registry {
    pub(crate) fn new(
        registry: &str,
        transport: RegistryTransport,
        credentials: Option<Credentials>,
    ) -> Result<Registry, OciError> {
        let scheme = match transport {
            RegistryTransport::Https => "https",
            RegistryTransport::Http => "http",
        };
        let client_error = |detail: String| OciError::Client {
            registry: registry.into(),
            detail,
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(builder)
            })
            .map_err(|e| client_error(e.to_string()))?
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("converge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| client_error(e.to_string()))?;
        Ok(Registry {
            http,
            base: format!("{scheme}://{registry}"),
            registry: registry.into(),
            credentials,
            authorization: Mutex::new(None),
        })
    }

    /// The manifest `reference` (a tag or digest) of `repository`: its bytes and the
    /// digest the registry says it has (checked against the bytes by the caller).
    #[tracing::instrument(skip(self), fields(registry = %self.registry))]
    pub(crate) async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let call = Call {
            method: Method::GET,
            url: format!("{}/v2/{repository}/manifests/{reference}", self.base),
            accept: Some(super::manifest::ACCEPT),
            content_type: None,
            body: None,
            actions: "pull",
            repository,
        };
        let response = self.send(&call).await?;
        let response = self.expect(response, &call, &[StatusCode::OK]).await?;
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self
            .read_capped(response, MAX_DOCUMENT_BYTES, &call.url)
            .await?;
        Ok((bytes, digest))
    }

    /// Every tag of `repository` (the registry's `tags/list`, following `Link` pages).
    #[tracing::instrument(skip(self), fields(registry = %self.registry))]
    pub(crate) async fn tags(&self, repository: &str) -> Result<Vec<String>, OciError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut url = format!("{}/v2/{repository}/tags/list?n=1000", self.base);
        for _ in 0..100 {
            let call = Call {
                method: Method::GET,
                url: url.clone(),
                accept: Some("application/json"),
                content_type: None,
                body: None,
                actions: "pull",
                repository,
            };
            let response = self.send(&call).await?;
            let response = self.expect(response, &call, &[StatusCode::OK]).await?;
            let next = next_page(response.headers());
            let bytes = self
                .read_capped(response, MAX_DOCUMENT_BYTES, &call.url)
                .await?;
            let page: Page = serde_json::from_slice(&bytes).map_err(|e| OciError::Protocol {
                url: call.url.clone(),
                detail: format!("tags/list is not JSON of tags: {e}"),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(path) => url = format!("{}{path}", self.base),
                None => break,
            }
        }
        Ok(tags)
    }

    /// The blob `digest`, refused as soon as more than `max` bytes arrive.
    #[tracing::instrument(skip(self), fields(registry = %self.registry, digest = %digest))]
    pub(crate) async fn blob(
        &self,
        repository: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Vec<u8>, OciError> {
        let call = Call {
            method: Method::GET,
            url: format!("{}/v2/{repository}/blobs/{digest}", self.base),
            accept: None,
            content_type: None,
            body: None,
            actions: "pull",
            repository,
        };
        let response = self.send(&call).await?;
        let response = self.expect(response, &call, &[StatusCode::OK]).await?;
        self.read_capped(response, max, &call.url).await
    }

    /// Uploads `bytes` as a blob unless the registry has it already (monolithic:
    /// POST for an upload session, then one PUT with the digest).
    #[tracing::instrument(skip(self, bytes), fields(registry = %self.registry, size = bytes.len()))]
    pub(crate) async fn push_blob(&self, repository: &str, bytes: &[u8]) -> Result<(), OciError> {
        let digest = Digest::of(bytes);
        let head = Call {
            method: Method::HEAD,
            url: format!("{}/v2/{repository}/blobs/{digest}", self.base),
            accept: None,
            content_type: None,
            body: None,
            actions: "pull,push",
            repository,
        };
        if self.send(&head).await?.status() == StatusCode::OK {
            return Ok(());
        }
        let start = Call {
            method: Method::POST,
            url: format!("{}/v2/{repository}/blobs/uploads/", self.base),
            body: Some(&[]),
            ..head
        };
        let response = self.send(&start).await?;
        let response = self
            .expect(response, &start, &[StatusCode::ACCEPTED])
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Protocol {
                url: start.url.clone(),
                detail: "the upload was accepted without a Location".into(),
            })?;
        let location = match location.starts_with('/') {
            true => format!("{}{location}", self.base),
            false => location.to_string(),
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = Call {
            method: Method::PUT,
            url: format!("{location}{separator}digest={digest}"),
            content_type: Some("application/octet-stream"),
            body: Some(bytes),
            ..start
        };
        let response = self.send(&put).await?;
        self.expect(response, &put, &[StatusCode::CREATED]).await?;
        Ok(())
    }

    /// Puts `bytes` as the manifest `tag` of `repository`.
    #[tracing::instrument(skip(self, bytes), fields(registry = %self.registry))]
    pub(crate) async fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), OciError> {
        let call = Call {
            method: Method::PUT,
            url: format!("{}/v2/{repository}/manifests/{tag}", self.base),
            accept: None,
            content_type: Some(media_type),
            body: Some(bytes),
            actions: "pull,push",
            repository,
        };
        let response = self.send(&call).await?;
        self.expect(response, &call, &[StatusCode::CREATED]).await?;
        Ok(())
    }

    /// Sends `call`; on a 401 with a challenge, gets a token (or uses basic
    /// credentials) and sends it once more.
    async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response, OciError> {
        let saved = self.saved_authorization();
        let response = self.send_once(call, saved.as_deref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse);
        let authorization = match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:{}", call.repository, call.actions));
                self.token(&realm, service.as_deref(), &scope).await?
            }
            Some(Challenge::Basic) => match &self.credentials {
                Some(credentials) => credentials.basic(),
                None => return Err(self.auth_failed("it asks for a user name and password")),
            },
            None => return Err(self.auth_failed("it answered 401 without a usable challenge")),
        };
        let response = self.send_once(call, Some(&authorization)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.auth_failed("it refused the credentials"));
        }
        if let Ok(mut saved) = self.authorization.lock() {
            *saved = Some(authorization);
        }
        Ok(response)
    }

    fn saved_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .ok()
            .and_then(|saved| saved.clone())
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, OciError> {
        let mut request = self.http.request(call.method.clone(), &call.url);
        if let Some(accept) = call.accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(content_type) = call.content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = call.body {
            request = request.body(body.to_vec());
        }
        if let Some(authorization) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    /// A token from the registry's token service (the distribution token spec).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, OciError> {
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let url =
            reqwest::Url::parse_with_params(realm, &query).map_err(|e| OciError::Protocol {
                url: realm.into(),
                detail: format!("the token realm is not a URL: {e}"),
            })?;
        let mut request = self.http.get(url);
        if let Some(credentials) = &self.credentials {
            request = request.header(reqwest::header::AUTHORIZATION, credentials.basic());
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.auth_failed(&format!(
                "its token service {realm} answered {}",
                response.status()
            )));
        }
        let bytes = self
            .read_capped(response, MAX_DOCUMENT_BYTES, realm)
            .await?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|e| OciError::Protocol {
            url: realm.into(),
            detail: format!("the token answer is not JSON with a token: {e}"),
        })?;
        token
            .token
            .or(token.access_token)
            .map(|token| format!("Bearer {token}"))
            .ok_or_else(|| self.auth_failed("its token service sent no token"))
    }

    /// `response` when its status is one of `ok`; else the error its status means.
    async fn expect(
        &self,
        response: reqwest::Response,
        call: &Call<'_>,
        ok: &[StatusCode],
    ) -> Result<reqwest::Response, OciError> {
        let status = response.status();
        if ok.contains(&status) {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
        Err(match status {
            StatusCode::NOT_FOUND => OciError::NotFound {
                url: call.url.clone(),
                body,
            },
            StatusCode::FORBIDDEN => self.auth_failed(&format!("403 Forbidden: {body}")),
            status => OciError::Status {
                url: call.url.clone(),
                status: status.as_u16(),
                body,
            },
        })
    }

    /// The body, refused as soon as more than `max` bytes have arrived (a
    /// `Content-Length` over `max` is refused before any).
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        max: u64,
        url: &str,
    ) -> Result<Vec<u8>, OciError> {
        let too_large = || OciError::TooLarge {
            url: url.into(),
            limit_mib: max >> 20,
            limit_bytes: max,
        };
        if response.content_length().is_some_and(|length| length > max) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if bytes.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    fn unreachable(&self, error: &reqwest::Error) -> OciError {
        // reqwest's Display names the URL; its source chain says why.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        OciError::Unreachable {
            registry: self.registry.clone(),
            detail,
        }
    }

    fn auth_failed(&self, detail: &str) -> OciError {
        OciError::AuthFailed {
            registry: self.registry.clone(),
            detail: detail.into(),
        }
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The `Link: </v2/…?last=x&n=1000>; rel="next"` of a paginated tag list.
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let (target, params) = link.split_once(';')?;
    params.contains("rel=\"next\"").then_some(())?;
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    target.starts_with('/').then(|| target.to_string())
}

/// What a registry's 401 asks for (RFC 6750 / the distribution token spec).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

impl Challenge {
    /// `Bearer realm="https://auth/token",service="registry",scope="repository:a:pull"`
    /// or `Basic realm="…"`; anything else is treated as Basic, which only sends
    /// configured credentials.
    fn parse(header: &str) -> Challenge {
        let Some(rest) = header
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("bearer "))
            .map(|_| &header[7..])
        else {
            return Challenge::Basic;
        };
        let mut realm = None;
        let mut service = None;
        let mut scope = None;
        for (key, value) in parameters(rest) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "service" => service = Some(value),
                "scope" => scope = Some(value),
                _ => {}
            }
        }
        match realm {
            Some(realm) => Challenge::Bearer {
                realm,
                service,
                scope,
            },
            None => Challenge::Basic,
        }
    }
}

/// `k="v",k2="v,2",k3=v3` → pairs; commas inside quotes stay.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, after)) => (value.to_string(), after),
                None => (quoted.to_string(), ""),
            },
            None => match after.split_once(',') {
                Some((value, after)) => (value.trim().to_string(), after),
                None => (after.trim().to_string(), ""),
            },
        };
        pairs.push((key, value));
        rest = after.trim_start_matches([',', ' ']);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        let header = r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull,push""#;
        assert_eq!(
            Challenge::parse(header),
            Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:org/app:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm="https://a/t""#),
            Challenge::Bearer {
                realm: "https://a/t".into(),
                service: None,
                scope: None
            }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), Challenge::Basic);
        assert_eq!(Challenge::parse("Bearer error=x"), Challenge::Basic);
    }

    #[test]
    fn follows_next_links_on_the_registry_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "</v2/a/tags/list?last=b&n=2>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        headers.insert(
            reqwest::header::LINK,
            "<https://elsewhere/x>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(next_page(&headers), None);
    }
}
