//! Helm (HTTP) chart repositories: `index.yaml` read with conditional requests, the
//! chart chosen by a version constraint, its `.tgz` downloaded capped while it
//! streams, checked against the index's digest and unpacked through the
//! [`ArtifactCache`].
//!
//! Why conditional requests: a daemon polls every source each `interval`, and big
//! public indexes weigh megabytes; with the `ETag`/`Last-Modified` of the last answer
//! kept beside it under `state_dir`, an unchanged repository costs one `304`. Charts
//! are cached by digest, so a restart (or a second source on the same chart)
//! downloads nothing. Credentials go only to the repository's own origin (a chart
//! hosted elsewhere, e.g. on a CDN, gets no `Authorization`) and are never logged.

use super::{ArtifactCache, CacheError, Digest, VersionConstraint};
use crate::config::{ArtifactLimits, EnvLookup, HelmAuth, HelmChartConfig};
use reqwest::header::{
    AUTHORIZATION, ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{StatusCode, Url};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A silent server cannot hang a fetch: connecting and each whole request are bounded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a chart could not be fetched from its repository. Messages name the
/// repository (without credentials), the chart and the version, and say what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelmRepoError {
    #[error(
        "cannot reach Helm repository {url}: {detail}; check the URL, the network and the server"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "Helm repository {url} refused the credentials (HTTP {status}); check \
         username_env/password_env or token_env"
    )]
    AuthFailed { url: String, status: u16 },
    #[error("Helm repository {url} answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error(
        "{url} is larger than [limits] max_artifact_mib = {limit_mib} MiB; nothing was \
         written. If the chart is genuine, raise the limit"
    )]
    TooLarge { url: String, limit_mib: u64 },
    #[error("{url} is not a Helm repository index: {detail}")]
    Index { url: String, detail: String },
    #[error("chart {chart:?} is not in {repo}/index.yaml; check chart (the index lists: {listed})")]
    ChartNotFound {
        chart: String,
        repo: String,
        listed: String,
    },
    #[error(
        "no version of chart {chart:?} in {repo} matches {constraint}; the repository has: \
         {available}"
    )]
    NoVersion {
        chart: String,
        repo: String,
        constraint: String,
        available: String,
    },
    #[error("chart {chart} {version} in {repo}: {detail}")]
    Entry {
        chart: String,
        version: String,
        repo: String,
        detail: String,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("chart {what}: the archive holds no {chart}/Chart.yaml; it is not a packaged chart")]
    NotAChart { what: String, chart: String },
    #[error("environment variable {var} (from {key}) is not set; export it and restart")]
    MissingEnv { key: &'static str, var: String },
    #[error("ca_file {}: {detail}", path.display())]
    CaFile { path: PathBuf, detail: String },
    #[error("Helm repository cache {}: {error}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl HelmRepoError {
    /// Whether fetching again soon may succeed (the network, the server, the disk),
    /// so the daemon retries with backoff, as it does a Git fetch.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HelmRepoError::Unreachable { .. } | HelmRepoError::Io { .. } => true,
            HelmRepoError::Status { status, .. } => *status == 429 || *status >= 500,
            HelmRepoError::Cache(CacheError::Io { .. }) => true,
            _ => false,
        }
    }
}

/// A chart fetched, verified and unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchedChart {
    pub(crate) version: String,
    pub(crate) digest: Digest,
    /// The chart's directory (`<tree>/<chart>/`, holding Chart.yaml).
    pub(crate) dir: PathBuf,
    /// The unpacked archive: what a render of the chart may read.
    pub(crate) tree: PathBuf,
}

impl FetchedChart {
    /// `<version>@<digest>`: a republished version with other bytes is a new revision.
    pub(crate) fn revision(&self) -> String {
        format!("{}@{}", self.version, self.digest)
    }
}

/// One Helm repository with its credentials, ready to fetch from. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HelmRepo {
    url: String,
    base: Url,
    auth: Option<Secret>,
    client: reqwest::Client,
    cache: ArtifactCache,
    index_dir: PathBuf,
    limits: ArtifactLimits,
}

impl fmt::Debug for HelmRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelmRepo")
            .field("url", &self.url)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// An `Authorization` header value that never prints.
#[derive(Clone)]
struct Secret(HeaderValue);

/// Where a repository's index lives: a URL, credentials by environment variable,
/// a CA file. What the daemon's `[[source]]` and the CLI's `--helm-repo` both give.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RepoSettings {
    pub(crate) url: String,
    pub(crate) auth: HelmAuth,
    pub(crate) ca_file: Option<PathBuf>,
}

impl From<&HelmChartConfig> for RepoSettings {
    fn from(config: &HelmChartConfig) -> Self {
        RepoSettings {
            url: config.repo.clone(),
            auth: config.auth.clone(),
            ca_file: config.ca_file.clone(),
        }
    }
}

/// The validators of the last `200` for an index, kept beside it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// The part of `index.yaml` converge reads.
#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    entries: HashMap<String, Vec<IndexEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    version: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
}

impl HelmRepo {
    /// Resolves credentials from `env` and builds the HTTP client; no I/O except
    /// reading the CA file. The cache and the index copies live under `state_dir`.
    pub(crate) fn new(
        settings: &RepoSettings,
        state_dir: &Path,
        limits: ArtifactLimits,
        env: EnvLookup,
    ) -> Result<HelmRepo, HelmRepoError> {
        let base =
            Url::parse(&format!("{}/", settings.url.trim_end_matches('/'))).map_err(|e| {
                HelmRepoError::Unreachable {
                    url: settings.url.clone(),
                    detail: format!("not a URL: {e}"),
                }
            })?;
        let auth = authorization(&settings.auth, env)?;
        let client = http_client(settings.ca_file.as_deref())?;
        let key = Digest::of(base.as_str().as_bytes());
        let state_dir = state_dir.to_path_buf();
        Ok(HelmRepo {
            url: settings.url.trim_end_matches('/').to_string(),
            base,
            auth,
            client,
            cache: ArtifactCache::new(&state_dir),
            index_dir: state_dir.join("artifacts/helm-index").join(key.hex()),
            limits,
        })
    }

    /// The repository's URL, for messages (it never holds credentials: config
    /// checks refuse a password in it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The highest version of `chart` matching `constraint` (`None`: the latest
    /// stable), downloaded unless cached, verified and unpacked.
    #[tracing::instrument(skip(self), fields(repo = %self.url))]
    pub(crate) async fn fetch_chart(
        &self,
        chart: &str,
        constraint: Option<&str>,
    ) -> Result<FetchedChart, HelmRepoError> {
        let index = self.index().await?;
        let entry = pick(&index, &self.url, chart, constraint)?;
        let what = format!("{chart} {} from {}", entry.version, self.url);
        let entry_error = |detail: String| HelmRepoError::Entry {
            chart: chart.to_string(),
            version: entry.version.clone(),
            repo: self.url.clone(),
            detail,
        };
        let expected = entry
            .digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| entry_error(format!("the index's digest: {e}")))?;
        let cached = match &expected {
            Some(digest) => self.cache.blob(digest)?,
            None => None,
        };
        let (digest, bytes) = match (expected, cached) {
            (Some(digest), Some(bytes)) => (digest, bytes),
            (expected, _) => {
                let url = entry
                    .urls
                    .first()
                    .ok_or_else(|| entry_error("the index lists no URL for it".into()))?;
                let url = self
                    .base
                    .join(url)
                    .map_err(|e| entry_error(format!("its URL {url:?}: {e}")))?;
                let bytes = self.download(&url).await?;
                let digest = match expected {
                    Some(digest) => digest,
                    None => {
                        tracing::warn!(chart, version = %entry.version, "the index gives no digest for this chart; it cannot be verified");
                        Digest::of(&bytes)
                    }
                };
                self.cache
                    .store(&bytes, &digest, &format!("chart {what}"))?;
                (digest, bytes)
            }
        };
        let tree = self.cache.tree(&digest, &bytes, &self.limits, &what)?;
        let dir = tree.join(chart);
        if !dir.join("Chart.yaml").is_file() {
            return Err(HelmRepoError::NotAChart {
                what,
                chart: chart.to_string(),
            });
        }
        Ok(FetchedChart {
            version: entry.version.clone(),
            digest,
            dir,
            tree,
        })
    }

    /// The index, from the server or (on `304 Not Modified`) from the copy kept
    /// under `state_dir`.
    async fn index(&self) -> Result<Index, HelmRepoError> {
        let url = self
            .base
            .join("index.yaml")
            .map_err(|e| HelmRepoError::Index {
                url: self.url.clone(),
                detail: e.to_string(),
            })?;
        let copy = self.index_dir.join("index.yaml");
        let validators_file = self.index_dir.join("validators.json");
        let validators: Validators = match std::fs::read(&validators_file) {
            Ok(bytes) if copy.is_file() => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => Validators::default(),
        };
        let mut request = self.client.get(url.clone());
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(since) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, since);
        }
        let response = self.send(request, &url).await?;
        let body = if response.status() == StatusCode::NOT_MODIFIED {
            tracing::debug!("index.yaml not modified");
            match std::fs::read(&copy) {
                Ok(body) => body,
                // The copy vanished: ask again without validators.
                Err(_) => {
                    let response = self.send(self.client.get(url.clone()), &url).await?;
                    self.read_capped(response, &url).await?
                }
            }
        } else {
            let fresh = validators_of(response.headers());
            let body = self.read_capped(response, &url).await?;
            self.keep_index(&body, &fresh)?;
            body
        };
        serde_yaml::from_slice(&body).map_err(|e| HelmRepoError::Index {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// Keeps `body` and its validators for the next conditional request.
    fn keep_index(&self, body: &[u8], validators: &Validators) -> Result<(), HelmRepoError> {
        let io = |error| HelmRepoError::Io {
            path: self.index_dir.clone(),
            error,
        };
        std::fs::create_dir_all(&self.index_dir).map_err(io)?;
        let write = |name: &str, bytes: &[u8]| -> Result<(), HelmRepoError> {
            let mut file = tempfile::NamedTempFile::new_in(&self.index_dir).map_err(io)?;
            std::io::Write::write_all(&mut file, bytes).map_err(io)?;
            file.persist(self.index_dir.join(name))
                .map_err(|e| io(e.error))?;
            Ok(())
        };
        // The index first: validators without their body would answer 304 wrongly.
        write("index.yaml", body)?;
        let json = serde_json::to_vec(validators).unwrap_or_default();
        write("validators.json", &json)
    }

    /// A chart archive, capped at `[limits] max_artifact_mib` while it streams.
    async fn download(&self, url: &Url) -> Result<Vec<u8>, HelmRepoError> {
        tracing::info!(%url, "downloading chart");
        let response = self.send(self.client.get(url.clone()), url).await?;
        self.read_capped(response, url).await
    }

    /// Sends `request` (with credentials when it goes to the repository's own
    /// origin) and maps failures and error statuses.
    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, HelmRepoError> {
        if let Some(Secret(value)) = &self.auth {
            if same_origin(url, &self.base) {
                request = request.header(AUTHORIZATION, value.clone());
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| HelmRepoError::Unreachable {
                url: redacted(url),
                detail: root_cause(&e),
            })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        Err(match status.as_u16() {
            401 | 403 => HelmRepoError::AuthFailed {
                url: redacted(url),
                status: status.as_u16(),
            },
            404 => HelmRepoError::Status {
                url: redacted(url),
                status: 404,
                hint: "; check helm_repo (it is the directory holding index.yaml)",
            },
            code => HelmRepoError::Status {
                url: redacted(url),
                status: code,
                hint: "",
            },
        })
    }

    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        url: &Url,
    ) -> Result<Vec<u8>, HelmRepoError> {
        let limit = self.limits.max_download_bytes;
        let too_large = || HelmRepoError::TooLarge {
            url: redacted(url),
            limit_mib: limit >> 20,
        };
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| HelmRepoError::Unreachable {
                    url: redacted(url),
                    detail: root_cause(&e),
                })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            append_capped(&mut body, &chunk, limit).map_err(|()| too_large())?;
        }
    }
}

/// Appends `chunk` unless `body` would grow beyond `limit` bytes.
fn append_capped(body: &mut Vec<u8>, chunk: &[u8], limit: u64) -> Result<(), ()> {
    let total = body.len() as u64 + chunk.len() as u64;
    if total > limit {
        return Err(());
    }
    body.extend_from_slice(chunk);
    Ok(())
}

/// The entry of `chart` with the highest version matching `constraint`.
fn pick<'a>(
    index: &'a Index,
    repo: &str,
    chart: &str,
    constraint: Option<&str>,
) -> Result<&'a IndexEntry, HelmRepoError> {
    let Some(entries) = index.entries.get(chart) else {
        let mut names: Vec<&str> = index.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        let listed = match names.len() {
            0 => "no charts".to_string(),
            n if n > 20 => format!("{}, … ({n} charts)", names[..20].join(", ")),
            _ => names.join(", "),
        };
        return Err(HelmRepoError::ChartNotFound {
            chart: chart.into(),
            repo: repo.into(),
            listed,
        });
    };
    let parsed = match constraint {
        Some(text) => VersionConstraint::parse(text).map_err(|e| HelmRepoError::NoVersion {
            chart: chart.into(),
            repo: repo.into(),
            constraint: format!("{text:?} ({e})"),
            available: String::new(),
        })?,
        None => VersionConstraint::latest_stable(),
    };
    let highest = parsed.highest(entries.iter().map(|e| e.version.as_str()));
    let found = highest.and_then(|v| entries.iter().find(|e| e.version == v));
    found.ok_or_else(|| {
        let mut available: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
        available.truncate(20);
        HelmRepoError::NoVersion {
            chart: chart.into(),
            repo: repo.into(),
            constraint: match constraint {
                Some(text) => format!("{text:?}"),
                None => "the latest stable version".into(),
            },
            available: available.join(", "),
        }
    })
}

fn validators_of(headers: &HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    Validators {
        etag: text(ETAG),
        last_modified: text(LAST_MODIFIED),
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL without user info or query (a signed CDN URL's query may be a secret).
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.to_string()
}

/// reqwest's message with its causes ("error sending request: … connection refused").
fn root_cause(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // reqwest's own text repeats the URL; messages carry it already.
    text.replace(
        &format!(" for url ({})", error.url().map_or("", Url::as_str)),
        "",
    )
}

/// The `Authorization` header the settings ask for, read from the environment.
fn authorization(auth: &HelmAuth, env: EnvLookup) -> Result<Option<Secret>, HelmRepoError> {
    let read = |key: &'static str, var: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| HelmRepoError::MissingEnv {
                key,
                var: var.to_string(),
            })
    };
    let text = match auth {
        HelmAuth::Anonymous => return Ok(None),
        HelmAuth::Basic {
            username_env,
            password_env,
        } => {
            use base64::Engine;
            let user = match username_env {
                Some(var) => read("username_env", var)?,
                None => "helm".to_string(),
            };
            let password = read("password_env", password_env)?;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {pair}")
        }
        HelmAuth::Bearer { token_env } => format!("Bearer {}", read("token_env", token_env)?),
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| HelmRepoError::MissingEnv {
        key: "credentials",
        var: "(a value with characters a header cannot carry)".into(),
    })?;
    value.set_sensitive(true);
    Ok(Some(Secret(value)))
}

/// reqwest is built without a default crypto provider (see `kube::tls`): ring, and
/// the CA file's roots or the system trust store.
fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, HelmRepoError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HelmRepoError::Unreachable {
            url: String::new(),
            detail: format!("TLS setup: {e}"),
        })?;
    let tls = match ca_file {
        Some(path) => {
            let ca_error = |detail: String| HelmRepoError::CaFile {
                path: path.to_path_buf(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ca_error(format!("not PEM certificates: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ca_error(format!("not a usable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ca_error("holds no PEM certificate".into()));
            }
            builder.with_root_certificates(roots)
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| HelmRepoError::Unreachable {
                    url: String::new(),
                    detail: format!("the system trust store is not usable: {e}"),
                })?
        }
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.with_no_client_auth())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| HelmRepoError::Unreachable {
            url: String::new(),
            detail: format!("the HTTP client cannot be built: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"
apiVersion: v1
entries:
  podinfo:
  - version: 6.14.1
    digest: 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
    urls: [podinfo-6.14.1.tgz]
  - version: 6.14.0
    urls: [https://cdn.example/podinfo-6.14.0.tgz]
  - version: 6.15.0-rc.1
    urls: [podinfo-6.15.0-rc.1.tgz]
  - version: 6.13.9
    urls: [podinfo-6.13.9.tgz]
"#;

    fn index() -> Index {
        serde_yaml::from_str(INDEX).unwrap()
    }

    #[test]
    fn picks_the_highest_matching_version() {
        let index = index();
        let repo = "http://repo";
        assert_eq!(
            pick(&index, repo, "podinfo", Some("6.14.x"))
                .unwrap()
                .version,
            "6.14.1"
        );
        assert_eq!(
            pick(&index, repo, "podinfo", Some("6.14.0"))
                .unwrap()
                .version,
            "6.14.0"
        );
        assert_eq!(
            pick(&index, repo, "podinfo", None).unwrap().version,
            "6.14.1",
            "latest stable skips the release candidate"
        );
    }

    #[test]
    fn says_what_the_repository_has() {
        let index = index();
        let error = pick(&index, "http://repo", "podinfo", Some("7.x")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("matches \"7.x\""), "{text}");
        assert!(text.contains("6.14.1, 6.14.0"), "{text}");
        let error = pick(&index, "http://repo", "nginx", None).unwrap_err();
        assert!(
            error.to_string().contains("the index lists: podinfo"),
            "{error}"
        );
    }

    #[test]
    fn downloads_stop_at_the_limit() {
        let mut body = Vec::new();
        assert_eq!(append_capped(&mut body, b"12345", 8), Ok(()));
        assert_eq!(append_capped(&mut body, b"6789", 8), Err(()));
        assert_eq!(body, b"12345", "the chunk crossing the limit is not kept");
        assert_eq!(append_capped(&mut body, b"678", 8), Ok(()));
    }

    #[test]
    fn credentials_go_to_the_repository_origin_only() {
        let base = Url::parse("https://charts.example/podinfo/").unwrap();
        let own = base.join("podinfo-6.14.1.tgz").unwrap();
        let cdn = base.join("https://cdn.example/podinfo-6.14.0.tgz").unwrap();
        assert!(same_origin(&own, &base));
        assert!(!same_origin(&cdn, &base));
        let port = Url::parse("https://charts.example:8443/x.tgz").unwrap();
        assert!(!same_origin(&port, &base));
    }

    #[test]
    fn credentials_come_from_the_environment_and_never_print() {
        let env = |name: &str| (name == "PW").then(|| "s3cret".to_string());
        let basic = HelmAuth::Basic {
            username_env: None,
            password_env: "PW".into(),
        };
        let secret = authorization(&basic, &env).unwrap().unwrap();
        assert!(secret.0.is_sensitive());
        assert_eq!(secret.0.to_str().unwrap(), "Basic aGVsbTpzM2NyZXQ=");
        let missing = HelmAuth::Bearer {
            token_env: "NOPE".into(),
        };
        let error = authorization(&missing, &env).err().unwrap().to_string();
        assert!(
            error.contains("NOPE (from token_env) is not set"),
            "{error}"
        );
        let repo = HelmRepo::new(
            &RepoSettings {
                url: "https://charts.example".into(),
                auth: basic,
                ca_file: None,
            },
            Path::new("/nonexistent"),
            ArtifactLimits::default(),
            &env,
        )
        .unwrap();
        assert!(!format!("{repo:?}").contains("aGVsbTpzM2NyZXQ"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let settings = RepoSettings {
            url: "https://charts.example".into(),
            auth: HelmAuth::Anonymous,
            ca_file: Some(ca.clone()),
        };
        let env = |_: &str| None;
        let error = HelmRepo::new(&settings, dir.path(), ArtifactLimits::default(), &env)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with(&format!("ca_file {}", ca.display())),
            "{error}"
        );
        assert!(error.contains("holds no PEM certificate"), "{error}");
    }

    #[test]
    fn validators_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"abc\""));
        let validators = validators_of(&headers);
        assert_eq!(validators.etag.as_deref(), Some("\"abc\""));
        assert_eq!(validators.last_modified, None);
    }

    #[test]
    fn messages_carry_no_credentials_or_queries() {
        let url = Url::parse("https://u:p@cdn.example/c.tgz?sig=secret").unwrap();
        assert_eq!(redacted(&url), "https://cdn.example/c.tgz");
    }
}
