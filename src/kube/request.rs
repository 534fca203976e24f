//! Where a request goes and what it asks for: the one place URLs are built, and the
//! typed parameters of each verb. Modelled on kube-core's `request.rs` and
//! `params.rs`.
//!
//! Pure: nothing here does I/O, so every escaping rule is unit-tested. A request's
//! URL is the server URL, then a path from [`ApiResource::path`] (namespace and name
//! percent-encoded as path segments), then a [`Query`] built from parameters and
//! encoded once by [`url`]. Nobody glues `?key=value` onto a path: [`url`] refuses
//! a path that carries a query.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::Url;
use serde_json::{Value, json};

use super::error::Error;

/// Characters escaped in one path segment (a namespace or object name).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

// --- addressing ---------------------------------------------------------------------

/// One resource of the API: how to address a kind at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResource {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: String,
    pub namespaced: bool,
    /// e.g. `get`, `list`, `watch`, `patch`, `delete`.
    pub verbs: Vec<String>,
}

impl ApiResource {
    /// A resource every API server serves, addressed without asking discovery. Its
    /// verbs are unknown (empty): callers know what they may do with it.
    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ApiResource {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            verbs: Vec::new(),
        }
    }

    /// core/v1 Namespaces.
    pub fn namespaces() -> Self {
        Self::builtin("", "v1", "Namespace", "namespaces", false)
    }

    /// core/v1 ConfigMaps.
    pub fn config_maps() -> Self {
        Self::builtin("", "v1", "ConfigMap", "configmaps", true)
    }

    /// core/v1 Secrets (`vars_from` reads them).
    pub fn secrets() -> Self {
        Self::builtin("", "v1", "Secret", "secrets", true)
    }

    /// core/v1 Events (the API converge posts to and reads evidence from).
    pub fn events() -> Self {
        Self::builtin("", "v1", "Event", "events", true)
    }

    /// core/v1 Pods.
    pub fn pods() -> Self {
        Self::builtin("", "v1", "Pod", "pods", true)
    }

    /// coordination.k8s.io/v1 Leases (leader election).
    pub fn leases() -> Self {
        Self::builtin("coordination.k8s.io", "v1", "Lease", "leases", true)
    }

    /// apps/v1 ReplicaSets.
    pub fn replica_sets() -> Self {
        Self::builtin("apps", "v1", "ReplicaSet", "replicasets", true)
    }

    /// apiextensions.k8s.io/v1 CustomResourceDefinitions.
    pub fn custom_resource_definitions() -> Self {
        Self::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
    }

    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL path of an object (`name`) or collection (no name). For namespaced
    /// resources without a namespace this is the all-namespaces collection;
    /// cluster-scoped resources ignore `namespace`.
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut path = group_version_path(&self.group, &self.version);
        if let Some(ns) = namespace.filter(|_| self.namespaced) {
            path.push_str("/namespaces/");
            path.extend(utf8_percent_encode(ns, SEGMENT));
        }
        path.push('/');
        path.push_str(&self.plural);
        if let Some(name) = name {
            path.push('/');
            path.extend(utf8_percent_encode(name, SEGMENT));
        }
        path
    }

    /// The URL path of an object's subresource, e.g. a Pod's `log`.
    pub fn subresource_path(&self, namespace: Option<&str>, name: &str, sub: &str) -> String {
        format!("{}/{sub}", self.path(namespace, Some(name)))
    }

    /// Whether the server allows `verb` on this resource.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// The path of a group-version (its discovery document, and the prefix of its
/// resources): `/api/v1` for the core group, `/apis/GROUP/VERSION` otherwise.
pub(crate) fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// Query parameters in the order given, encoded only by [`url`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query(Vec<(&'static str, String)>);

impl Query {
    fn push(&mut self, key: &'static str, value: impl Into<String>) {
        self.0.push((key, value.into()));
    }

    fn push_some(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.push(key, value);
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == key)
    }
}

/// The URL of a request: `base` (the server URL, which may carry a path prefix such
/// as a proxy's) joined with `path`, then `query` form-encoded.
pub(crate) fn url(base: &str, path: &str, query: &Query) -> Result<Url, Error> {
    if !path.starts_with('/') {
        return Err(Error::InvalidRequest(format!(
            "the path \"{path}\" must start with /"
        )));
    }
    if path.contains(['?', '#']) {
        return Err(Error::InvalidRequest(format!(
            "the path \"{path}\" carries a query: pass parameters instead"
        )));
    }
    let mut url = Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .map_err(|e| Error::InvalidRequest(format!("the path \"{path}\" is not valid: {e}")))?;
    if !query.0.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.0.iter().map(|(k, v)| (*k, v.as_str())));
    }
    Ok(url)
}

// --- parameters ---------------------------------------------------------------------

/// Server-side apply (PATCH with `application/apply-patch+yaml`). Every write is
/// sent with `fieldValidation=Strict`, so unknown or duplicate fields in a manifest
/// are errors instead of silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchParams {
    /// Who owns the applied fields (`managedFields[].manager`).
    pub field_manager: String,
    /// Take ownership of fields another manager set, instead of a 409 Conflict.
    pub force: bool,
    /// Ask the server what would happen (`dryRun=All`); nothing is persisted.
    pub dry_run: bool,
}

impl PatchParams {
    /// Apply as `field_manager`, neither forced nor dry-run.
    pub fn apply(field_manager: &str) -> Self {
        PatchParams {
            field_manager: field_manager.into(),
            force: false,
            dry_run: false,
        }
    }

    /// See [`PatchParams::force`].
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// See [`PatchParams::dry_run`].
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    pub(crate) fn query(&self) -> Query {
        let mut q = Query::default();
        q.push("fieldManager", &self.field_manager);
        q.push("fieldValidation", "Strict");
        if self.force {
            q.push("force", "true");
        }
        if self.dry_run {
            q.push("dryRun", "All");
        }
        q
    }
}

/// POST of a new object (Events, `generateName` objects) or PUT of a whole one,
/// with `fieldValidation=Strict` like every write. The field manager is the client's
/// `User-Agent`, the API server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostParams {
    /// Ask the server what would be created (`dryRun=All`); nothing is persisted.
    pub dry_run: bool,
}

impl PostParams {
    pub(crate) fn query(&self) -> Query {
        let mut q = Query::default();
        q.push("fieldValidation", "Strict");
        if self.dry_run {
            q.push("dryRun", "All");
        }
        q
    }
}

/// What happens to an object's dependents (by `ownerReferences`) when it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PropagationPolicy {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// Delete dependents first; the object stays (with a finalizer) until they are gone.
    Foreground,
    /// Keep the dependents, without their owner reference.
    Orphan,
}

impl PropagationPolicy {
    fn as_str(self) -> &'static str {
        match self {
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
            PropagationPolicy::Orphan => "Orphan",
        }
    }
}

/// Conditions the object must still meet to be deleted (409 Conflict otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preconditions {
    /// The uid of the object meant: a re-created object of the same name has another.
    pub uid: String,
}

/// DELETE of one object, sent as a `DeleteOptions` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    pub propagation: PropagationPolicy,
    /// A uid precondition also makes the request safe to retry.
    pub preconditions: Option<Preconditions>,
}

impl DeleteParams {
    /// The `DeleteOptions` body.
    pub(crate) fn body(&self) -> Value {
        let mut options = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": self.propagation.as_str(),
        });
        if let Some(p) = &self.preconditions {
            options["preconditions"] = json!({ "uid": p.uid });
        }
        options
    }
}

/// LIST of a collection. The client pages through it (`limit`, `continue`) unless
/// asked for one page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// e.g. `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// e.g. `involvedObject.uid=…`.
    pub field_selector: Option<String>,
    /// Items per page; the client's page size when `None`.
    pub limit: Option<u32>,
    /// Where the previous page ended (set by the client while paging).
    pub continue_token: Option<String>,
    /// `0`: any version the server has cached; `None`: the latest (a quorum read).
    pub resource_version: Option<String>,
}

impl ListParams {
    /// Objects whose labels match `selector`.
    pub fn labels(selector: &str) -> Self {
        ListParams {
            label_selector: Some(selector.into()),
            ..Self::default()
        }
    }

    /// Objects whose fields match `selector`.
    pub fn fields(selector: &str) -> Self {
        ListParams {
            field_selector: Some(selector.into()),
            ..Self::default()
        }
    }

    /// At most `limit` items per page.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn query(&self) -> Query {
        let mut q = Query::default();
        q.push_some("labelSelector", self.label_selector.as_deref());
        q.push_some("fieldSelector", self.field_selector.as_deref());
        q.push_some("resourceVersion", self.resource_version.as_deref());
        if let Some(limit) = self.limit {
            q.push("limit", limit.to_string());
        }
        q.push_some("continue", self.continue_token.as_deref());
        q
    }
}

/// WATCH of a collection, with bookmarks so that a quiet watch still learns a recent
/// resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// How long the server keeps the watch open (whole seconds, at least one).
    pub timeout: Duration,
}

impl WatchParams {
    /// The query of a watch resuming from `resource_version`.
    pub(crate) fn query(&self, resource_version: &str) -> Query {
        let mut q = Query::default();
        q.push_some("labelSelector", self.label_selector.as_deref());
        q.push_some("fieldSelector", self.field_selector.as_deref());
        q.push("watch", "1");
        q.push("allowWatchBookmarks", "true");
        q.push("resourceVersion", resource_version);
        q.push("timeoutSeconds", self.timeout.as_secs().max(1).to_string());
        q
    }
}

/// A container's log (the Pod's `log` subresource), bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogParams {
    pub container: String,
    /// The last lines only.
    pub tail_lines: Option<usize>,
    /// At most this many bytes, whatever the line length.
    pub limit_bytes: Option<usize>,
    /// The log of the previous (crashed) instance of the container.
    pub previous: bool,
}

impl LogParams {
    pub(crate) fn query(&self) -> Query {
        let mut q = Query::default();
        q.push("container", &self.container);
        if let Some(n) = self.tail_lines {
            q.push("tailLines", n.to_string());
        }
        if let Some(n) = self.limit_bytes {
            q.push("limitBytes", n.to_string());
        }
        if self.previous {
            q.push("previous", "true");
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://proxy.example/k8s/clusters/c-1/";

    fn query_of(path: &str, query: &Query) -> String {
        url(BASE, path, query)
            .expect("valid")
            .query()
            .unwrap_or_default()
            .to_string()
    }

    fn resource(group: &str, plural: &str, namespaced: bool) -> ApiResource {
        ApiResource::builtin(group, "v1", "Kind", plural, namespaced)
    }

    #[test]
    fn paths_of_collections_and_objects() {
        let pods = ApiResource::pods();
        assert_eq!(
            pods.path(Some("ns"), Some("web-0")),
            "/api/v1/namespaces/ns/pods/web-0"
        );
        assert_eq!(pods.path(Some("ns"), None), "/api/v1/namespaces/ns/pods");
        assert_eq!(pods.path(None, None), "/api/v1/pods");
        assert_eq!(
            pods.subresource_path(Some("ns"), "web-0", "log"),
            "/api/v1/namespaces/ns/pods/web-0/log"
        );
        assert_eq!(
            ApiResource::replica_sets().path(Some("a"), None),
            "/apis/apps/v1/namespaces/a/replicasets"
        );
        assert_eq!(ApiResource::replica_sets().api_version(), "apps/v1");
        assert_eq!(
            ApiResource::namespaces().path(Some("ignored"), Some("x")),
            "/api/v1/namespaces/x"
        );
        assert_eq!(
            ApiResource::custom_resource_definitions().path(None, Some("widgets.example.com")),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
        );
        assert_eq!(
            ApiResource::events().path(Some("shop"), None),
            "/api/v1/namespaces/shop/events"
        );
        assert_eq!(
            ApiResource::config_maps().path(Some("shop"), Some("converge-app")),
            "/api/v1/namespaces/shop/configmaps/converge-app"
        );
    }

    #[test]
    fn group_version_paths() {
        assert_eq!(group_version_path("", "v1"), "/api/v1");
        assert_eq!(group_version_path("apps", "v1"), "/apis/apps/v1");
    }

    #[test]
    fn names_are_escaped_as_one_segment() {
        let role = resource("rbac.authorization.k8s.io", "clusterroles", false);
        // `:` is legal in a segment (system:…); space, `/`, `%`, `?`, `#` are not.
        assert_eq!(
            role.path(None, Some("system:a b/c%d?e#f")),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:a%20b%2Fc%25d%3Fe%23f"
        );
        let cm = resource("", "configmaps", true);
        assert_eq!(
            cm.path(Some("n/s"), Some("a?b")),
            "/api/v1/namespaces/n%2Fs/configmaps/a%3Fb"
        );
        let mut patchable = role.clone();
        patchable.verbs = vec!["get".into(), "patch".into()];
        assert!(patchable.supports("patch"));
        assert!(!patchable.supports("watch"));
        // The escaped path survives URL parsing unchanged.
        let url = url(BASE, &role.path(None, Some("a b/c%d?")), &Query::default()).unwrap();
        assert_eq!(
            url.as_str(),
            "https://proxy.example/k8s/clusters/c-1/apis/rbac.authorization.k8s.io/v1/clusterroles/a%20b%2Fc%25d%3F"
        );
        assert_eq!(url.query(), None);
    }

    #[test]
    fn urls_keep_the_server_prefix_and_refuse_glued_queries() {
        let mut q = Query::default();
        q.push("labelSelector", "a=b,c in (d)");
        assert_eq!(
            url(BASE, "/api/v1/namespaces/a/configmaps", &q)
                .unwrap()
                .as_str(),
            "https://proxy.example/k8s/clusters/c-1/api/v1/namespaces/a/configmaps?labelSelector=a%3Db%2Cc+in+%28d%29"
        );
        assert_eq!(
            url("https://h:6443", "/version", &Query::default())
                .unwrap()
                .as_str(),
            "https://h:6443/version"
        );
        assert!(url(BASE, "api/v1", &Query::default()).is_err());
        let err = url(BASE, "/api/v1/pods?labelSelector=a", &Query::default()).unwrap_err();
        assert!(err.to_string().contains("pass parameters"), "{err}");
        assert!(url(BASE, "/api/v1/pods#x", &Query::default()).is_err());
    }

    #[test]
    fn selectors_are_encoded() {
        let path = "/api/v1/pods";
        let lp = ListParams::labels("app=web,tier!=db,!canary").limit(100);
        assert_eq!(
            query_of(path, &lp.query()),
            "labelSelector=app%3Dweb%2Ctier%21%3Ddb%2C%21canary&limit=100"
        );
        let lp = ListParams {
            continue_token: Some("eyJ2Ijo+/=".into()),
            resource_version: Some("0".into()),
            ..ListParams::fields("involvedObject.uid=1-2&x")
        };
        assert_eq!(
            query_of(path, &lp.query()),
            "fieldSelector=involvedObject.uid%3D1-2%26x&resourceVersion=0&continue=eyJ2Ijo%2B%2F%3D"
        );
        // The applyset selector, once glued on unescaped.
        let lp = ListParams::labels("applyset.kubernetes.io/part-of=applyset-abc-v1");
        assert_eq!(
            query_of(path, &lp.query()),
            "labelSelector=applyset.kubernetes.io%2Fpart-of%3Dapplyset-abc-v1"
        );
        assert_eq!(query_of(path, &ListParams::default().query()), "");
    }

    #[test]
    fn apply_params() {
        let path = "/api/v1/namespaces/a/configmaps/b";
        let apply = PatchParams::apply("converge");
        assert_eq!(
            query_of(path, &apply.query()),
            "fieldManager=converge&fieldValidation=Strict"
        );
        assert_eq!(
            query_of(path, &apply.clone().force().query()),
            "fieldManager=converge&fieldValidation=Strict&force=true"
        );
        let preview = apply.force().dry_run();
        assert!(preview.force && preview.dry_run);
        assert_eq!(
            query_of(path, &preview.query()),
            "fieldManager=converge&fieldValidation=Strict&force=true&dryRun=All"
        );
        assert_eq!(
            query_of(path, &PatchParams::apply("a b&c=d").query()),
            "fieldManager=a+b%26c%3Dd&fieldValidation=Strict"
        );
    }

    #[test]
    fn post_params() {
        let path = "/api/v1/namespaces/a/events";
        assert_eq!(
            query_of(path, &PostParams::default().query()),
            "fieldValidation=Strict"
        );
        assert_eq!(
            query_of(path, &PostParams { dry_run: true }.query()),
            "fieldValidation=Strict&dryRun=All"
        );
    }

    #[test]
    fn delete_options() {
        assert_eq!(
            DeleteParams::default().body(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
        );
        let pinned = DeleteParams {
            propagation: PropagationPolicy::Foreground,
            preconditions: Some(Preconditions { uid: "u-1".into() }),
        };
        assert_eq!(
            pinned.body(),
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground",
                   "preconditions": {"uid": "u-1"}})
        );
        let orphan = DeleteParams {
            propagation: PropagationPolicy::Orphan,
            preconditions: None,
        };
        assert_eq!(orphan.body()["propagationPolicy"], "Orphan");
    }

    #[test]
    fn watch_params() {
        let wp = WatchParams {
            label_selector: Some("a=b".into()),
            field_selector: None,
            timeout: Duration::from_millis(1500),
        };
        let q = wp.query("42");
        assert!(q.contains("watch"));
        assert_eq!(
            query_of("/api/v1/pods", &q),
            "labelSelector=a%3Db&watch=1&allowWatchBookmarks=true&resourceVersion=42&timeoutSeconds=1"
        );
        let instant = WatchParams {
            timeout: Duration::ZERO,
            label_selector: None,
            ..wp
        };
        assert!(query_of("/api/v1/pods", &instant.query("")).ends_with("timeoutSeconds=1"));
    }

    #[test]
    fn log_params() {
        let lp = LogParams {
            container: "app".into(),
            tail_lines: Some(20),
            limit_bytes: Some(16384),
            previous: true,
        };
        assert_eq!(
            query_of("/api/v1/namespaces/a/pods/p/log", &lp.query()),
            "container=app&tailLines=20&limitBytes=16384&previous=true"
        );
        let current = LogParams {
            previous: false,
            tail_lines: None,
            limit_bytes: None,
            ..lp
        };
        assert_eq!(
            query_of("/api/v1/namespaces/a/pods/p/log", &current.query()),
            "container=app"
        );
    }
}
