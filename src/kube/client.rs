//! The HTTP client for the Kubernetes API: JSON requests with authentication,
//! bounded concurrency, retries and typed errors.
//!
//! One [`Client`] is one reqwest connection pool (HTTP/2 when the server offers it
//! over ALPN, which the API server does), shared by every clone. A semaphore bounds
//! requests in flight so a burst of concurrent applies queues here instead of
//! tripping the server's priority-and-fairness limits. Every request runs in a
//! `tracing` span named after its verb and path.

use super::meta::Meta;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use super::auth::{Authenticator, Identity};
use super::backoff::Backoff;
use super::config::{Auth, ClusterConfig, ClusterConfigError};
use super::error::{Error, Status};
use super::request::{
    ApiResource, DeleteParams, ListParams, LogParams, PatchParams, PostParams, Query, WatchParams,
    url,
};
use super::tls;

/// Content type of a server-side apply patch. The body is JSON, which is valid YAML.
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
/// The content type of a JSON patch (RFC 6902).
pub(super) const JSON_PATCH: &str = "application/json-patch+json";
/// Requests in flight per client unless [`ClientOptions::max_in_flight`] says otherwise.
pub(super) const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// A `Retry-After` longer than this is capped: the caller's own timeouts matter more.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long one request keeps being retried through transient failures unless
/// [`ClientOptions::request_timeout`] says otherwise: long enough for an API server
/// to restart (managed clusters restart theirs on every upgrade).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Tuning of a [`Client`]; the defaults suit the daemon and the CLI.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Requests in flight at once (default 64).
    pub max_in_flight: usize,
    /// How long one request may take, retries included (default 60 s): no retry
    /// starts after this has passed since its first attempt began.
    pub request_timeout: Duration,
    /// Time limit of one attempt, including reading the body (default 30 s), so that
    /// a stalled connection leaves time for another attempt.
    pub attempt_timeout: Duration,
    /// Time limit of establishing a connection (default 10 s).
    pub connect_timeout: Duration,
    /// The `User-Agent`, which also names the default field manager of POSTs.
    pub user_agent: String,
    /// Items per page when listing (default 500, kubectl's chunk size).
    pub page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            attempt_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("converge/{}", env!("CARGO_PKG_VERSION")),
            page_size: 500,
        }
    }
}

/// A Kubernetes API client. Cheap to clone: clones share the connection pool, the
/// credential cache and the in-flight limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Whom the API server authorizes this clone's requests as, when not the
    /// client's own credentials.
    acting: Option<Arc<Impersonation>>,
}

/// Another identity the API server authorizes requests as (Kubernetes user
/// impersonation: `Impersonate-User` and `Impersonate-Group`). The client's own
/// credentials need the `impersonate` verb on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    pub user: String,
    pub groups: Vec<String>,
}

impl Impersonation {
    /// The ServiceAccount `namespace/name`. No groups are sent: the API server
    /// gives an impersonated ServiceAccount the groups its token would carry
    /// (`system:serviceaccounts`, `system:serviceaccounts:<ns>`,
    /// `system:authenticated`), so converge needs `impersonate` on
    /// `serviceaccounts` only, never on groups.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Impersonation {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: Vec::new(),
        }
    }
}

impl std::fmt::Display for Impersonation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.user)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.base)
            .field("origin", &self.inner.cluster.origin)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cluster: ClusterConfig,
    /// The server URL without a trailing slash; request paths are appended to it.
    base: String,
    http: std::sync::Mutex<Http>,
    auth: Authenticator,
    limiter: Semaphore,
    options: ClientOptions,
    /// Told the verb of every request sent (metrics, and tests that count requests).
    observer: OnceLock<RequestObserver>,
    /// When a retry was last reported (see [`Client::note_retry`]).
    last_retry_note: std::sync::Mutex<Option<Instant>>,
}

/// A callback told the verb of every request sent: `get`, `list`, `watch`, `apply`,
/// `dry-run`, `create` or `delete`.
pub type RequestObserver = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The reqwest client and which exec-plugin identity its TLS config presents.
struct Http {
    client: reqwest::Client,
    identity_generation: u64,
}

/// The result of [`Client::list`]: every item of every page (as `T`, see
/// [`Client::list_map`]).
#[derive(Debug, Clone)]
pub struct ObjectList<T = Value> {
    /// The items, each with `apiVersion` and `kind` filled in (the API omits them).
    pub items: Vec<T>,
    /// The list's resourceVersion: start a watch from here.
    pub resource_version: String,
}

impl<T> Default for ObjectList<T> {
    fn default() -> Self {
        ObjectList {
            items: Vec::new(),
            resource_version: String::new(),
        }
    }
}

/// One request as the retry loop sees it.
struct Req<'a> {
    method: Method,
    path: &'a str,
    query: Query,
    body: Option<Vec<u8>>,
    content_type: Option<&'a str>,
    accept: &'a str,
    /// After which failures it may be sent again.
    retry: Retry,
}

impl Req<'_> {
    /// `VERB /path` for errors and logs (no query: it may be long, never secret).
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Why one attempt failed.
enum Failure {
    Transport(reqwest::Error),
    Status {
        code: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    Other(Error),
}

impl Client {
    /// A client with default [`ClientOptions`].
    pub fn new(cluster: ClusterConfig) -> Result<Self, Error> {
        Self::with_options(cluster, ClientOptions::default())
    }

    /// A client with explicit options. Validates TLS material and static tokens now;
    /// exec plugins run lazily at the first request.
    pub fn with_options(cluster: ClusterConfig, options: ClientOptions) -> Result<Self, Error> {
        let identity = match &cluster.auth {
            Auth::ClientCert { cert_chain, key } => Some((cert_chain.clone(), key.clone_key())),
            _ => None,
        };
        let client = build_http(&cluster, identity, &options)?;
        let auth = Authenticator::new(&cluster.auth, &cluster.origin)?;
        Ok(Client {
            inner: Arc::new(Inner {
                base: cluster.server.as_str().trim_end_matches('/').to_string(),
                http: std::sync::Mutex::new(Http {
                    client,
                    identity_generation: 0,
                }),
                auth,
                limiter: Semaphore::new(options.max_in_flight.max(1)),
                options,
                cluster,
                observer: OnceLock::new(),
                last_retry_note: std::sync::Mutex::new(None),
            }),
            acting: None,
        })
    }

    /// A clone whose requests the API server authorizes as `who`: same connection
    /// pool, credentials and in-flight limit.
    pub fn impersonating(&self, who: Impersonation) -> Client {
        Client {
            inner: self.inner.clone(),
            acting: Some(Arc::new(who)),
        }
    }

    /// Whom this clone's requests are authorized as, when impersonating.
    pub fn acting_as(&self) -> Option<&Impersonation> {
        self.acting.as_deref()
    }

    /// Adds the impersonation headers, if any.
    fn act(&self, mut builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(who) = &self.acting {
            builder = builder.header("Impersonate-User", &who.user);
            for group in &who.groups {
                builder = builder.header("Impersonate-Group", group);
            }
        }
        builder
    }

    /// Registers the callback told of every request sent (once per client; later
    /// calls are ignored).
    pub fn observe_requests(&self, observer: RequestObserver) {
        let _ = self.inner.observer.set(observer);
    }

    fn observe(&self, method: &Method, query: &Query) {
        if let Some(observer) = self.inner.observer.get() {
            observer(verb_of(method, query));
        }
    }

    /// The namespace of the kubeconfig context (or the service account), else `default`.
    pub fn default_namespace(&self) -> &str {
        &self.inner.cluster.default_namespace
    }

    /// The API server's URL.
    pub fn server(&self) -> &Url {
        &self.inner.cluster.server
    }

    /// Sends one JSON request and decodes the JSON answer (`Null` for an empty body).
    /// `content_type` defaults to `application/json` when there is a body. Retries
    /// follow [`Retry::of`]: GET, apply PATCH and DELETE with a uid precondition are
    /// retried after any transient failure, other writes only when they surely never
    /// reached the server.
    /// The verbs below add their parameters' query; this one sends none.
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> Result<Value, Error> {
        self.send_json(method, path, Query::default(), body, content_type)
            .await
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        query: Query,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> Result<Value, Error> {
        let retry = Retry::of(&method, content_type, body);
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| Error::InvalidRequest(format!("the body cannot be encoded: {e}")))?;
        let content_type = content_type.or(body.as_ref().map(|_| "application/json"));
        let req = Req {
            method,
            path,
            query,
            body,
            content_type,
            accept: "application/json",
            retry,
        };
        let bytes = self.run(&req).await?;
        decode_json(&bytes, &req)
    }

    /// GET with a custom `Accept` (aggregated discovery negotiates its format by it).
    pub(crate) async fn get_json_accept(&self, path: &str, accept: &str) -> Result<Value, Error> {
        let req = Req {
            method: Method::GET,
            path,
            query: Query::default(),
            body: None,
            content_type: None,
            accept,
            retry: Retry::Idempotent,
        };
        let bytes = self.run(&req).await?;
        decode_json(&bytes, &req)
    }

    /// GET one object (or any JSON endpoint).
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.request_json(Method::GET, path, None, None).await
    }

    /// GET one object; `None` when it does not exist (404).
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, Error> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a collection page by page (the client's page size unless `params`
    /// sets a limit), following `continue` tokens. A continue token that expired
    /// mid-list fails with 410 ([`Error::is_gone`]): list again from scratch.
    pub async fn list(&self, path: &str, params: &ListParams) -> Result<ObjectList, Error> {
        self.list_map(path, params, Some).await
    }

    /// [`Client::list`], turning each item into a `T` (or dropping it: `None`) as
    /// its page arrives. Why: a caller that keeps a compact form of each object then
    /// never holds the whole collection as `Value` trees, which at 10000 objects was
    /// the daemon's peak memory.
    pub async fn list_map<T>(
        &self,
        path: &str,
        params: &ListParams,
        mut each: impl FnMut(Value) -> Option<T>,
    ) -> Result<ObjectList<T>, Error> {
        let mut list = ObjectList::default();
        let mut page = self.paged(params);
        loop {
            let answer = self.send_json(Method::GET, path, page.query(), None, None);
            page.continue_token = collect_page(answer.await?, &mut list, &mut each);
            if page.continue_token.is_none() {
                return Ok(list);
            }
        }
    }

    /// [`Client::list_map`] asking for metadata only (`PartialObjectMetadataList`:
    /// names, uids, resourceVersions, labels; no spec, data or status), with plain
    /// JSON as the fallback for an API that cannot serve it. Why: the cache check
    /// ([`super::relist`]) compares versions, and the full objects would cost it
    /// the bytes of a whole first list. Items keep the page's `apiVersion`/`kind`
    /// (`meta.k8s.io/v1` `PartialObjectMetadata`), so callers read only `metadata`.
    /// Returns the list and the pages it took.
    pub(crate) async fn list_metadata_map<T>(
        &self,
        path: &str,
        params: &ListParams,
        mut each: impl FnMut(Value) -> Option<T>,
    ) -> Result<(ObjectList<T>, u32), Error> {
        const METADATA: &str =
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        let mut list = ObjectList::default();
        let mut page = self.paged(params);
        let mut pages = 0;
        loop {
            let req = Req {
                method: Method::GET,
                path,
                query: page.query(),
                body: None,
                content_type: None,
                accept: METADATA,
                retry: Retry::Idempotent,
            };
            let bytes = self.run(&req).await?;
            pages += 1;
            page.continue_token = collect_page(decode_json(&bytes, &req)?, &mut list, &mut each);
            if page.continue_token.is_none() {
                return Ok((list, pages));
            }
        }
    }

    /// One page of a collection: at most `params.limit` items (the client's page
    /// size when unset), for callers that want a sample, never the whole list.
    pub async fn list_page(&self, path: &str, params: &ListParams) -> Result<ObjectList, Error> {
        let query = self.paged(params).query();
        let answer = self.send_json(Method::GET, path, query, None, None);
        let mut list = ObjectList::default();
        collect_page(answer.await?, &mut list, &mut Some);
        Ok(list)
    }

    /// `params` with the client's page size unless they set a limit.
    fn paged(&self, params: &ListParams) -> ListParams {
        let mut page = params.clone();
        page.limit
            .get_or_insert(self.inner.options.page_size.max(1));
        page
    }

    /// Server-side apply: PATCH with `application/apply-patch+yaml` and `params`
    /// (field manager, force, dry run; always `fieldValidation=Strict`).
    pub async fn apply(
        &self,
        path: &str,
        body: &Value,
        params: &PatchParams,
    ) -> Result<Value, Error> {
        self.send_json(
            Method::PATCH,
            path,
            params.query(),
            Some(body),
            Some(APPLY_PATCH),
        )
        .await
    }

    /// JSON patch (RFC 6902) of one object: `ops` is the list of operations. Not
    /// retried on 5xx; pin it with a `resourceVersion` operation to make it apply
    /// to one version only.
    pub async fn patch_json(&self, path: &str, ops: &Value) -> Result<Value, Error> {
        self.request_json(Method::PATCH, path, Some(ops), Some(JSON_PATCH))
            .await
    }

    /// PUT a whole object over the stored one (its `resourceVersion` makes it
    /// conditional). converge only sends it as a dry run, to have the server
    /// validate and default an object it computed.
    pub async fn replace(
        &self,
        path: &str,
        body: &Value,
        params: &PostParams,
    ) -> Result<Value, Error> {
        self.send_json(Method::PUT, path, params.query(), Some(body), None)
            .await
    }

    /// POST a new object to a collection path (for `generateName` objects and Events).
    pub async fn create(
        &self,
        path: &str,
        body: &Value,
        params: &PostParams,
    ) -> Result<Value, Error> {
        self.send_json(Method::POST, path, params.query(), Some(body), None)
            .await
    }

    /// DELETE with `DeleteOptions`. A uid precondition makes sure a re-created
    /// object of the same name is never deleted by mistake (409 Conflict instead),
    /// and makes the request safe to retry. A missing object is an error
    /// ([`Error::is_not_found`]); the caller decides whether that matters.
    pub async fn delete(&self, path: &str, params: &DeleteParams) -> Result<(), Error> {
        let options = params.body();
        self.request_json(Method::DELETE, path, Some(&options), None)
            .await
            .map(drop)
    }

    /// Opens a watch on a collection and returns its event stream.
    /// `resource_version` resumes from a list or an earlier event. Watches do not
    /// take an in-flight permit (they live for minutes) and are not retried here:
    /// the reflector ([`super::watch`]) owns reconnecting and relisting.
    pub async fn watch(
        &self,
        path: &str,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream, Error> {
        let q = params.query(resource_version);
        let url = self.url(path, &q)?;
        let describe = format!("WATCH {path}");
        let credential = self.inner.auth.credential().await?;
        let http = self.http(credential.identity.as_deref())?;
        self.observe(&Method::GET, &q);
        let mut builder = http
            .get(url)
            .header(ACCEPT, "application/json")
            // The server ends the watch after timeoutSeconds; allow it time to say so.
            .timeout(params.timeout + Duration::from_secs(30));
        if let Some(bearer) = credential.bearer {
            builder = builder.header(AUTHORIZATION, bearer);
        }
        builder = self.act(builder);
        let response = builder.send().await.map_err(|source| Error::Http {
            request: describe.clone(),
            source,
        })?;
        let code = response.status().as_u16();
        if !(200..300).contains(&code) {
            let body = response.bytes().await.unwrap_or_default();
            return Err(Error::Api {
                request: describe,
                status: Box::new(Status::from_response(code, &body)),
            });
        }
        Ok(WatchStream {
            response,
            buffer: Vec::new(),
            describe,
        })
    }

    /// GET as text, e.g. `/version` or `/readyz`.
    pub async fn raw_get(&self, path: &str) -> Result<String, Error> {
        self.get_text(path, Query::default()).await
    }

    /// A container's log, as text.
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        params: &LogParams,
    ) -> Result<String, Error> {
        let path = ApiResource::pods().subresource_path(Some(namespace), pod, "log");
        self.get_text(&path, params.query()).await
    }

    async fn get_text(&self, path: &str, query: Query) -> Result<String, Error> {
        let req = Req {
            method: Method::GET,
            path,
            query,
            body: None,
            content_type: None,
            accept: "application/json, */*",
            retry: Retry::Idempotent,
        };
        let bytes = self.run(&req).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Runs `req` in its tracing span.
    async fn run(&self, req: &Req<'_>) -> Result<Vec<u8>, Error> {
        let server_dry_run = req.query.contains("dryRun");
        let span =
            tracing::debug_span!("kube", verb = %req.method, path = %req.path, server_dry_run);
        self.execute(req).instrument(span).await
    }

    /// The retry loop: one refresh after a 401 with a rotating credential, then
    /// attempts for retryable failures with backoff or `Retry-After` until
    /// `request_timeout` has passed.
    async fn execute(&self, req: &Req<'_>) -> Result<Vec<u8>, Error> {
        let url = self.url(req.path, &req.query)?;
        let started = tokio::time::Instant::now();
        let budget = RetryBudget::new(self.inner.options.request_timeout);
        let mut delays = Backoff::REQUEST.delays();
        let mut attempt = 1;
        let mut reauthenticated = false;
        loop {
            let failure = match self.attempt(req, &url).await {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            if failure.code() == Some(401) && !reauthenticated && self.inner.auth.refreshable() {
                tracing::info!("401 Unauthorized: refreshing the credential and retrying once");
                reauthenticated = true;
                self.inner.auth.invalidate().await;
                continue;
            }
            let delay = failure
                .retry_delay(req.retry, &mut delays)
                .and_then(|delay| budget.wait(delay));
            let Some(delay) = delay else {
                let tries = Tries {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                };
                return Err(failure.into_error(req, tries));
            };
            self.note_retry(&failure);
            tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, reason = %failure.summary(), "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Says once in a while (not once per request: an outage fails every request in
    /// flight) that requests are being retried.
    fn note_retry(&self, failure: &Failure) {
        const EVERY: Duration = Duration::from_secs(5);
        let mut last = self
            .inner
            .last_retry_note
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let limit = humantime::format_duration(self.inner.options.request_timeout);
        tracing::warn!(reason = %failure.summary(), "the API server failed; retrying each request for up to {limit}");
    }

    async fn attempt(&self, req: &Req<'_>, url: &Url) -> Result<Vec<u8>, Failure> {
        // Fetch the credential first: a slow exec plugin must not hold a permit.
        let credential = self
            .inner
            .auth
            .credential()
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        let http = self
            .http(credential.identity.as_deref())
            .map_err(Failure::Other)?;
        self.observe(&req.method, &req.query);
        let _permit =
            self.inner.limiter.acquire().await.map_err(|_| {
                Failure::Other(Error::InvalidRequest("the client is closed".into()))
            })?;
        let mut builder = http
            .request(req.method.clone(), url.clone())
            .header(ACCEPT, req.accept)
            .timeout(self.inner.options.attempt_timeout);
        if let Some(bearer) = credential.bearer {
            builder = builder.header(AUTHORIZATION, bearer);
        }
        builder = self.act(builder);
        if let Some(content_type) = req.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let started = Instant::now();
        let response = builder.send().await.map_err(Failure::Transport)?;
        let code = response.status().as_u16();
        log_warnings(response.headers().get_all("warning"));
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        let version = response.version();
        let body = response.bytes().await.map_err(Failure::Transport)?.to_vec();
        tracing::debug!(
            code,
            ?version,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "response"
        );
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err(Failure::Status {
                code,
                retry_after,
                body,
            })
        }
    }

    /// The reqwest client, rebuilt when an exec plugin hands out a new certificate.
    fn http(&self, identity: Option<&Identity>) -> Result<reqwest::Client, Error> {
        let mut http = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = identity.filter(|id| id.generation != http.identity_generation) {
            let pair = (id.cert_chain.clone(), id.key.clone_key());
            http.client = build_http(&self.inner.cluster, Some(pair), &self.inner.options)?;
            http.identity_generation = id.generation;
        }
        Ok(http.client.clone())
    }

    fn url(&self, path: &str, query: &Query) -> Result<Url, Error> {
        url(&self.inner.base, path, query)
    }
}

fn build_http(
    cluster: &ClusterConfig,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    options: &ClientOptions,
) -> Result<reqwest::Client, Error> {
    let tls = tls::client_config(cluster, identity)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(options.connect_timeout)
        .user_agent(options.user_agent.clone())
        // Never forward credentials to wherever a redirect points.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        // Pings find dead HTTP/2 connections (e.g. after a control-plane restart).
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            Error::from(ClusterConfigError::Tls {
                origin: cluster.origin.clone(),
                problem: format!("the HTTP client cannot be built: {e}"),
            })
        })
}

/// One event of a watch.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(Value),
    Modified(Value),
    Deleted(Value),
    /// Nothing changed, but the collection is at this resourceVersion now.
    Bookmark(String),
    /// The server ended the watch with a `Status`, e.g. 410 Gone: relist.
    Error(Status),
}

/// The events of an open watch, decoded line by line as they arrive.
pub struct WatchStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    describe: String,
}

impl WatchStream {
    /// The next event; `None` when the server closed the watch (its timeout).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, Error> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return decode_event(&line, &self.describe).map(Some);
            }
            let chunk = self.response.chunk().await.map_err(|source| Error::Http {
                request: self.describe.clone(),
                source,
            })?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

fn decode_event(line: &[u8], describe: &str) -> Result<WatchEvent, Error> {
    let decode_error = |reason: String| Error::Decode {
        request: describe.to_string(),
        reason,
    };
    let mut event: Value = serde_json::from_slice(line).map_err(|e| decode_error(e.to_string()))?;
    let object = event
        .get_mut("object")
        .map(Value::take)
        .unwrap_or(Value::Null);
    match event.get("type").and_then(Value::as_str) {
        Some("ADDED") => Ok(WatchEvent::Added(object)),
        Some("MODIFIED") => Ok(WatchEvent::Modified(object)),
        Some("DELETED") => Ok(WatchEvent::Deleted(object)),
        Some("BOOKMARK") => Ok(WatchEvent::Bookmark(
            object.resource_version().unwrap_or_default().to_string(),
        )),
        Some("ERROR") => {
            let code = object.get("code").and_then(Value::as_u64).unwrap_or(500);
            let body = serde_json::to_vec(&object).unwrap_or_default();
            Ok(WatchEvent::Error(Status::from_response(code as u16, &body)))
        }
        other => Err(decode_error(format!("unknown watch event type {other:?}"))),
    }
}

/// The verb a request counts as, for metrics.
fn verb_of(method: &Method, query: &Query) -> &'static str {
    let has = |key: &str| query.contains(key);
    match *method {
        Method::GET if has("watch") => "watch",
        Method::GET if has("limit") => "list",
        Method::GET => "get",
        Method::PATCH | Method::POST | Method::PUT if has("dryRun") => "dry-run",
        Method::PATCH => "apply",
        Method::POST => "create",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// After which failures a request may be sent again: decided by what sending it
/// twice would do, never by the caller's hopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// A POST, PUT or non-apply PATCH: it may have been carried out before the
    /// connection broke, so it is sent again only when it surely never reached a
    /// handler: the connection was refused, or the server answered 429 (the API
    /// server's priority and fairness rejects before any handler runs).
    NotReached,
    /// Reads and deletes pinned to one uid: the same answer (or a 404 the caller
    /// expects) however often they are sent, so also after a broken connection, a
    /// timeout and 500/502/503/504.
    Idempotent,
    /// Server-side apply: idempotent (the same patch yields the same object), and
    /// also after 409 Conflict, a write that raced another; the server computes the
    /// apply afresh against the object as it is then.
    Apply,
}

impl Retry {
    /// The policy of a request: reads, server-side apply and deletes with a uid
    /// precondition may be repeated; anything else only if it never arrived.
    pub(super) fn of(method: &Method, content_type: Option<&str>, body: Option<&Value>) -> Retry {
        let uid_precondition = || {
            body.and_then(|b| b.pointer("/preconditions/uid"))
                .and_then(Value::as_str)
                .is_some_and(|uid| !uid.is_empty())
        };
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Retry::Idempotent,
            Method::PATCH if content_type == Some(APPLY_PATCH) => Retry::Apply,
            Method::DELETE if uid_precondition() => Retry::Idempotent,
            _ => Retry::NotReached,
        }
    }

    fn repeatable(self) -> bool {
        self != Retry::NotReached
    }
}

/// The time one request may spend on retries: no retry starts (its delay
/// included) once `request_timeout` has passed since the first attempt began.
struct RetryBudget {
    deadline: tokio::time::Instant,
}

impl RetryBudget {
    fn new(limit: Duration) -> Self {
        RetryBudget {
            deadline: tokio::time::Instant::now() + limit,
        }
    }

    /// The wait before the next attempt: `delay`, shortened so that the last
    /// attempt starts at the deadline; `None` once the deadline has passed.
    fn wait(&self, delay: Duration) -> Option<Duration> {
        let left = self
            .deadline
            .checked_duration_since(tokio::time::Instant::now())
            .filter(|left| !left.is_zero())?;
        Some(delay.min(left))
    }
}

impl Failure {
    fn code(&self) -> Option<u16> {
        match self {
            Failure::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long to wait before the next attempt, or `None` when the failure is not
    /// one that `retry` allows sending again after. Permanent rejections (4xx other
    /// than 409 and 429, 501, a server-side apply's 500 about the patch itself) and
    /// a TLS handshake the server's certificate or ours failed never are. `Retry-After` takes the place of the backoff's delay.
    fn retry_delay(
        &self,
        retry: Retry,
        backoff: &mut impl Iterator<Item = Duration>,
    ) -> Option<Duration> {
        let (retryable, retry_after) = match self {
            Failure::Transport(e) if is_tls_failure(e) => (false, None),
            Failure::Transport(e) => (
                e.is_connect() || (retry.repeatable() && !e.is_builder()),
                None,
            ),
            Failure::Status {
                code,
                retry_after,
                body,
            } => match code {
                429 => (true, *retry_after),
                409 => (retry == Retry::Apply, None),
                500 if Status::from_response(500, body).is_rejected_patch() => (false, None),
                500 | 502 | 503 | 504 => (retry.repeatable(), *retry_after),
                _ => (false, None),
            },
            Failure::Other(_) => (false, None),
        };
        if !retryable {
            return None;
        }
        let delay = backoff.next()?;
        Some(retry_after.unwrap_or(delay))
    }

    fn summary(&self) -> String {
        match self {
            Failure::Transport(e) => root_cause(e),
            Failure::Status { code, .. } => format!("HTTP {code}"),
            Failure::Other(e) => e.to_string(),
        }
    }

    fn into_error(self, req: &Req<'_>, tries: Tries) -> Error {
        let request = format!("{}{tries}", req.describe());
        match self {
            Failure::Transport(source) => Error::Http { request, source },
            Failure::Status { code, body, .. } => Error::Api {
                request,
                status: Box::new(Status::from_response(code, &body)),
            },
            Failure::Other(e) => e,
        }
    }
}

/// How often a failed request was sent, for its error: " (3 attempts in 12 s)"
/// tells a reader that converge did retry, and for how long.
struct Tries {
    attempts: u32,
    elapsed: Duration,
}

impl std::fmt::Display for Tries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.attempts < 2 {
            return Ok(());
        }
        let secs = self.elapsed.as_secs_f64();
        write!(f, " ({} attempts in {secs:.0} s)", self.attempts)
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"),
/// which says more than reqwest's "error sending request for url (…)".
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Whether a connection failed in its TLS handshake (an unknown CA, an expired or
/// refused certificate): that repeats until the configuration changes.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    is_or_wraps_rustls(error)
}

/// Follows `source()` and, because `io::Error::source` skips the error it wraps,
/// `io::Error::get_ref` too.
fn is_or_wraps_rustls(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    let wrapped = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref);
    if wrapped.is_some_and(|inner| is_or_wraps_rustls(inner)) {
        return true;
    }
    error.source().is_some_and(is_or_wraps_rustls)
}

/// `Retry-After` in seconds (the form the API server sends), capped at 30 s.
/// HTTP-date values are ignored: the caller falls back to backoff.
pub(super) fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Logs the API server's `Warning` headers (deprecated APIs, dropped fields), which
/// carry `299 - "message"`.
fn log_warnings(values: reqwest::header::GetAll<'_, HeaderValue>) {
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes());
        let message = text
            .split_once('"')
            .map(|(_, rest)| rest.trim_end_matches('"'))
            .unwrap_or(&text);
        tracing::warn!(warning = %message, "the API server warns");
    }
}

fn decode_json(bytes: &[u8], req: &Req<'_>) -> Result<Value, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        request: req.describe(),
        reason: e.to_string(),
    })
}

/// Moves a page's items into `list` (filling in `apiVersion`/`kind`, which list items
/// lack) and returns the continue token, if any.
fn collect_page<T>(
    mut page: Value,
    list: &mut ObjectList<T>,
    each: &mut impl FnMut(Value) -> Option<T>,
) -> Option<String> {
    let text = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if list.resource_version.is_empty() {
        list.resource_version = page.resource_version().unwrap_or_default().to_string();
    }
    let api_version = text(&page, "/apiVersion");
    let kind = text(&page, "/kind");
    let kind = kind.strip_suffix("List").unwrap_or(&kind).to_string();
    let next = Some(text(&page, "/metadata/continue")).filter(|t| !t.is_empty());
    if let Some(Value::Array(items)) = page.get_mut("items").map(Value::take) {
        for mut item in items {
            if let Some(obj) = item.as_object_mut() {
                obj.entry("apiVersion")
                    .or_insert_with(|| json!(api_version));
                obj.entry("kind").or_insert_with(|| json!(kind));
            }
            list.items.extend(each(item));
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_and_capped() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_retry_after(&v("1")), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(&v(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(&v("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(&v("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(&v("-1")), None);
    }

    fn status(code: u16, retry_after: Option<u64>) -> Failure {
        Failure::Status {
            code,
            retry_after: retry_after.map(Duration::from_secs),
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_policy() {
        let backoff = || Backoff::REQUEST.delays();
        let retried =
            |failure: Failure, retry: Retry| failure.retry_delay(retry, &mut backoff()).is_some();
        // 429 retries for every request and honours Retry-After.
        assert_eq!(
            status(429, Some(2)).retry_delay(Retry::NotReached, &mut backoff()),
            Some(Duration::from_secs(2))
        );
        // 5xx only when sending twice is harmless, after the backoff's delay.
        let delay = status(503, None).retry_delay(Retry::Idempotent, &mut backoff());
        let first = Backoff::REQUEST.min;
        assert!(
            delay.is_some_and(|d| d >= first.mul_f64(0.999) && d <= first.mul_f64(2.001)),
            "{delay:?}"
        );
        for code in [500, 502, 503, 504] {
            assert!(retried(status(code, None), Retry::Idempotent), "{code}");
            assert!(retried(status(code, None), Retry::Apply), "{code}");
            assert!(!retried(status(code, None), Retry::NotReached), "{code}");
        }
        // Server-side apply's 500 about the patch itself (an undeclared field)
        // repeats until the manifest changes.
        let typed = Failure::Status {
            code: 500,
            retry_after: None,
            body: br#"{"kind":"Status","code":500,"message":"failed to create typed patch object (a/b; /v1, Kind=ConfigMap): .dta: field not declared in schema"}"#.to_vec(),
        };
        assert!(!retried(typed, Retry::Apply));
        // 409: a raced apply is computed again; a failed uid precondition or an
        // AlreadyExists is permanent.
        assert!(retried(status(409, None), Retry::Apply));
        assert!(!retried(status(409, None), Retry::Idempotent));
        assert!(!retried(status(409, None), Retry::NotReached));
        // Other 4xx (and 501) never, whatever the request.
        for code in [400, 401, 403, 404, 405, 410, 413, 415, 422, 501] {
            for retry in [Retry::NotReached, Retry::Idempotent, Retry::Apply] {
                assert!(!retried(status(code, Some(1)), retry), "{code} {retry:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_retries_in_time() {
        let secs = Duration::from_secs;
        let budget = RetryBudget::new(secs(60));
        assert_eq!(budget.wait(secs(4)), Some(secs(4)));
        tokio::time::sleep(secs(58)).await;
        assert_eq!(budget.wait(secs(1)), Some(secs(1)));
        // The last attempt starts at the deadline, none after it.
        assert_eq!(budget.wait(secs(30)), Some(secs(2)));
        tokio::time::sleep(secs(2)).await;
        assert_eq!(budget.wait(secs(1)), None);
    }

    #[test]
    fn tries_are_told_only_when_retried() {
        let once = Tries {
            attempts: 1,
            elapsed: Duration::from_millis(20),
        };
        assert_eq!(once.to_string(), "");
        let many = Tries {
            attempts: 9,
            elapsed: Duration::from_millis(61_400),
        };
        assert_eq!(many.to_string(), " (9 attempts in 61 s)");
    }

    #[test]
    fn verbs_for_metrics() {
        let list = ListParams::labels("a=b").limit(10).query();
        assert_eq!(verb_of(&Method::GET, &list), "list");
        assert_eq!(verb_of(&Method::GET, &Query::default()), "get");
        let watch = WatchParams {
            label_selector: None,
            field_selector: None,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(verb_of(&Method::GET, &watch.query("1")), "watch");
        let apply = PatchParams::apply("m").force();
        assert_eq!(verb_of(&Method::PATCH, &apply.query()), "apply");
        assert_eq!(verb_of(&Method::PATCH, &apply.dry_run().query()), "dry-run");
        assert_eq!(
            verb_of(&Method::POST, &PostParams::default().query()),
            "create"
        );
        assert_eq!(
            verb_of(&Method::POST, &PostParams { dry_run: true }.query()),
            "dry-run"
        );
        assert_eq!(verb_of(&Method::DELETE, &Query::default()), "delete");
    }

    #[test]
    fn retry_follows_what_sending_twice_does() {
        let precondition = json!({"preconditions": {"uid": "abc"}});
        let of = Retry::of;
        assert_eq!(of(&Method::GET, None, None), Retry::Idempotent);
        assert_eq!(of(&Method::PATCH, Some(APPLY_PATCH), None), Retry::Apply);
        let merge = Some("application/merge-patch+json");
        assert_eq!(of(&Method::PATCH, merge, None), Retry::NotReached);
        assert_eq!(
            of(&Method::DELETE, None, Some(&precondition)),
            Retry::Idempotent
        );
        let empty_uid = json!({"preconditions": {"uid": ""}});
        assert_eq!(
            of(&Method::DELETE, None, Some(&empty_uid)),
            Retry::NotReached
        );
        assert_eq!(
            of(&Method::DELETE, None, Some(&json!({}))),
            Retry::NotReached
        );
        assert_eq!(of(&Method::POST, None, None), Retry::NotReached);
        assert_eq!(of(&Method::PUT, None, None), Retry::NotReached);
    }

    #[test]
    fn pages_fill_kind_and_return_continue() {
        let mut list = ObjectList::default();
        let page = json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "42", "continue": "abc"},
            "items": [{"metadata": {"name": "a"}}]});
        assert_eq!(
            collect_page(page, &mut list, &mut Some).as_deref(),
            Some("abc")
        );
        let page = json!({"apiVersion": "v1", "kind": "ConfigMapList",
            "metadata": {"resourceVersion": "43"}, "items": [{"kind": "ConfigMap", "metadata": {"name": "b"}}]});
        assert_eq!(collect_page(page, &mut list, &mut Some), None);
        assert_eq!(list.resource_version, "42");
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.items[0]["kind"], "ConfigMap");
        assert_eq!(list.items[0]["apiVersion"], "v1");
    }

    #[test]
    fn urls_keep_the_server_prefix() {
        let cluster = ClusterConfig {
            server: Url::parse("https://proxy.example/k8s/clusters/c-1/").unwrap(),
            ca: None,
            insecure_skip_tls_verify: true,
            auth: Auth::Token("t".into()),
            tls_server_name: None,
            default_namespace: "default".into(),
            origin: "test".into(),
        };
        let client = Client::new(cluster).expect("client");
        let url = client
            .url(
                "/api/v1/namespaces/a/configmaps",
                &ListParams::labels("a=b").query(),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://proxy.example/k8s/clusters/c-1/api/v1/namespaces/a/configmaps?labelSelector=a%3Db"
        );
        assert!(client.url("api/v1", &Query::default()).is_err());
    }
}
