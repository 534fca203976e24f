//! Discovery: which kinds the API server serves, under which resource name, version
//! and scope — everything needed to turn a manifest's `apiVersion`/`kind` into a URL.
//!
//! Aggregated discovery (`apidiscovery.k8s.io/v2`, GA in Kubernetes 1.30) answers in
//! two requests (`/api`, `/apis`); older servers get the legacy walk of every
//! group-version. The catalog is a snapshot: call [`Discovery::refresh`] after
//! creating CRDs so their kinds resolve.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;

use super::client::Client;
use super::error::{Error, UnservedVersion};
use super::group_version::GroupVersion;
use super::request::{ApiResource, group_version_path};

/// Accept header asking for aggregated discovery (v2, then v2beta1 for 1.27–1.29
/// servers), falling back to the legacy documents.
const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
/// Legacy discovery fetches group-versions concurrently, but politely.
const LEGACY_CONCURRENCY: usize = 8;

/// What the server serves, by group.
#[derive(Debug, Default)]
struct Catalog {
    groups: HashMap<String, Group>,
    /// (group, kind) served with a `status` subresource at some version: its
    /// status is written by a controller, not by whoever writes the spec.
    with_status: HashSet<(String, String)>,
}

#[derive(Debug, Default)]
struct Group {
    /// Served versions, the preferred one first.
    versions: Vec<String>,
    /// (version, kind) → resource.
    resources: HashMap<(String, String), ApiResource>,
}

impl Group {
    fn insert(&mut self, resource: ApiResource) {
        if !self.versions.contains(&resource.version) {
            self.versions.push(resource.version.clone());
        }
        let key = (resource.version.clone(), resource.kind.clone());
        // A kind served by several resources (rare): keep the first, like kubectl.
        self.resources.entry(key).or_insert(resource);
    }
}

/// The server's kinds, shared by clones; [`Discovery::refresh`] replaces the snapshot
/// for all of them.
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    catalog: Arc<RwLock<Arc<Catalog>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.snapshot().groups.len();
        f.debug_struct("Discovery")
            .field("groups", &groups)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovers what `client`'s server serves.
    pub async fn new(client: &Client) -> Result<Self, Error> {
        let catalog = fetch(client).await?;
        Ok(Discovery {
            client: client.clone(),
            catalog: Arc::new(RwLock::new(Arc::new(catalog))),
        })
    }

    /// Discovery by the legacy per-group-version documents only, even where
    /// aggregated discovery is served: for tests that compare the two, and as an escape
    /// hatch for servers whose aggregated discovery misbehaves.
    pub async fn new_legacy(client: &Client) -> Result<Self, Error> {
        let core = client.get("/api").await?;
        let catalog = legacy(client, core).await?;
        Ok(Discovery {
            client: client.clone(),
            catalog: Arc::new(RwLock::new(Arc::new(catalog))),
        })
    }

    /// Reads discovery again (after CRDs were created or an aggregated API came up).
    pub async fn refresh(&self) -> Result<(), Error> {
        let catalog = fetch(&self.client).await?;
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The resource for `kind` in `group` at `version` (the manifest's own version);
    /// an empty `version` means the group's preferred version that serves the kind.
    pub fn resolve(&self, group: &str, version: &str, kind: &str) -> Result<ApiResource, Error> {
        let catalog = self.snapshot();
        let unknown = || Error::UnknownKind {
            group: group.into(),
            kind: kind.into(),
        };
        let g = catalog.groups.get(group).ok_or_else(unknown)?;
        let lookup = |v: &str| g.resources.get(&(v.to_string(), kind.to_string()));
        if !version.is_empty() {
            if let Some(found) = lookup(version) {
                return Ok(found.clone());
            }
        }
        let served: Vec<String> = g
            .versions
            .iter()
            .filter(|v| lookup(v).is_some())
            .cloned()
            .collect();
        match served.first() {
            None => Err(unknown()),
            Some(preferred) if version.is_empty() => lookup(preferred).cloned().ok_or_else(unknown),
            Some(_) => Err(Error::UnservedVersion(Box::new(UnservedVersion {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                served,
            }))),
        }
    }

    /// Whether `kind` in `group` has a `status` subresource (a CRD that declares
    /// `subresources: {status: {}}`): health needs its controller's word.
    pub fn has_status_subresource(&self, group: &str, kind: &str) -> bool {
        self.snapshot()
            .with_status
            .contains(&(group.to_string(), kind.to_string()))
    }

    /// [`Discovery::resolve`] from a manifest's `apiVersion` (`apps/v1`, `v1`).
    pub fn resolve_api_version(&self, api_version: &str, kind: &str) -> Result<ApiResource, Error> {
        let gv =
            GroupVersion::parse(api_version).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        self.resolve(gv.group, gv.version, kind)
    }

    /// Every served `group/version` (`v1` for the core group) and `group/version/Kind`,
    /// sorted: what Helm's `.Capabilities.APIVersions` holds for a real cluster.
    pub fn api_versions(&self) -> Vec<String> {
        let catalog = self.snapshot();
        let mut out = std::collections::BTreeSet::new();
        for (group, g) in &catalog.groups {
            let gv = |version: &str| match group.as_str() {
                "" => version.to_string(),
                group => format!("{group}/{version}"),
            };
            out.extend(g.versions.iter().map(|v| gv(v)));
            out.extend(
                g.resources
                    .keys()
                    .map(|(version, kind)| format!("{}/{kind}", gv(version))),
            );
        }
        out.into_iter().collect()
    }

    /// Every kind at its group's preferred version that serves it.
    pub fn preferred_resources(&self) -> Vec<ApiResource> {
        let catalog = self.snapshot();
        let mut out = Vec::new();
        for g in catalog.groups.values() {
            let mut seen = std::collections::HashSet::new();
            for v in &g.versions {
                for ((rv, kind), r) in &g.resources {
                    if rv == v && seen.insert(kind.clone()) {
                        out.push(r.clone());
                    }
                }
            }
        }
        out
    }
}

// --- fetching -----------------------------------------------------------------------

async fn fetch(client: &Client) -> Result<Catalog, Error> {
    let core = client.get_json_accept("/api", AGGREGATED_ACCEPT).await?;
    if is_aggregated(&core) {
        let groups = client.get_json_accept("/apis", AGGREGATED_ACCEPT).await?;
        let mut catalog = Catalog::default();
        add_aggregated(&mut catalog, core)?;
        add_aggregated(&mut catalog, groups)?;
        tracing::debug!(groups = catalog.groups.len(), "aggregated discovery");
        return Ok(catalog);
    }
    legacy(client, core).await
}

fn is_aggregated(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("APIGroupDiscoveryList")
}

#[derive(Deserialize)]
struct DiscoveryList {
    #[serde(default)]
    items: Vec<GroupDiscovery>,
}

#[derive(Deserialize)]
struct GroupDiscovery {
    #[serde(default)]
    metadata: NameOnly,
    #[serde(default)]
    versions: Vec<VersionDiscovery>,
}

#[derive(Deserialize, Default)]
struct NameOnly {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct VersionDiscovery {
    version: String,
    #[serde(default)]
    resources: Vec<ResourceDiscovery>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDiscovery {
    resource: String,
    response_kind: Option<KindOnly>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    subresources: Vec<SubresourceDiscovery>,
}

#[derive(Deserialize)]
struct SubresourceDiscovery {
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize)]
struct KindOnly {
    #[serde(default)]
    kind: String,
}

/// Adds an `APIGroupDiscoveryList` (versions are listed preferred first).
fn add_aggregated(catalog: &mut Catalog, doc: Value) -> Result<(), Error> {
    let list: DiscoveryList = serde_json::from_value(doc).map_err(|e| Error::Decode {
        request: "GET /api, /apis (aggregated discovery)".into(),
        reason: e.to_string(),
    })?;
    for item in list.items {
        let group = catalog
            .groups
            .entry(item.metadata.name.clone())
            .or_default();
        for version in item.versions {
            for r in version.resources {
                let Some(kind) = r.response_kind.map(|k| k.kind).filter(|k| !k.is_empty()) else {
                    continue;
                };
                if r.subresources.iter().any(|s| s.subresource == "status") {
                    let key = (item.metadata.name.clone(), kind.clone());
                    catalog.with_status.insert(key);
                }
                group.insert(ApiResource {
                    group: item.metadata.name.clone(),
                    version: version.version.clone(),
                    kind,
                    plural: r.resource,
                    namespaced: r.scope == "Namespaced",
                    verbs: r.verbs,
                });
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceList {
    #[serde(default)]
    resources: Vec<LegacyResource>,
}

#[derive(Deserialize)]
struct LegacyResource {
    name: String,
    #[serde(default)]
    namespaced: bool,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    verbs: Vec<String>,
}

/// Legacy discovery: `/api` (already fetched), `/apis`, then every group-version.
/// A group-version that fails (an aggregated API that is down) is skipped with a
/// warning, as kubectl does, so one broken APIService does not stop converge.
async fn legacy(client: &Client, core: Value) -> Result<Catalog, Error> {
    let mut targets: Vec<(String, String)> = strings(&core, "versions")
        .into_iter()
        .map(|v| (String::new(), v))
        .collect();
    let groups = client.get("/apis").await?;
    for g in groups
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        targets.extend(group_versions(g));
    }
    let fetches = futures::stream::iter(targets.into_iter().map(|(group, version)| async move {
        let path = group_version_path(&group, &version);
        (group, version, client.get(&path).await)
    }))
    .buffered(LEGACY_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut catalog = Catalog::default();
    for (group, version, result) in fetches {
        match result {
            Ok(doc) => add_legacy(&mut catalog, &group, &version, doc),
            Err(e) if group.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(group, version, error = %e, "skipping a group-version that discovery could not read")
            }
        }
    }
    tracing::debug!(groups = catalog.groups.len(), "legacy discovery");
    Ok(catalog)
}

/// (group, version) pairs of an `APIGroup`, the preferred version first.
fn group_versions(g: &Value) -> Vec<(String, String)> {
    let name = g
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let preferred = g
        .pointer("/preferredVersion/version")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut versions: Vec<String> = g
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("version").and_then(Value::as_str).map(str::to_string))
        .collect();
    if let Some(p) = preferred {
        versions.retain(|v| *v != p);
        versions.insert(0, p);
    }
    versions.into_iter().map(|v| (name.clone(), v)).collect()
}

fn add_legacy(catalog: &mut Catalog, group: &str, version: &str, doc: Value) {
    let Ok(list) = serde_json::from_value::<ResourceList>(doc) else {
        tracing::warn!(
            group,
            version,
            "skipping a group-version whose discovery document is not an APIResourceList"
        );
        return;
    };
    let entry = catalog.groups.entry(group.to_string()).or_default();
    if !entry.versions.iter().any(|v| v == version) {
        entry.versions.push(version.to_string());
    }
    // `widgets/status` names the kind of `widgets`.
    let kinds: HashMap<&str, &str> = list
        .resources
        .iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| (r.name.as_str(), r.kind.as_str()))
        .collect();
    for r in &list.resources {
        if let Some(kind) = r.name.strip_suffix("/status").and_then(|p| kinds.get(p)) {
            catalog
                .with_status
                .insert((group.to_string(), kind.to_string()));
        }
    }
    for r in list.resources {
        // Subresources (`deployments/scale`) are not kinds of their own.
        if r.name.contains('/') || r.kind.is_empty() {
            continue;
        }
        entry.insert(ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            kind: r.kind,
            plural: r.name,
            namespaced: r.namespaced,
            verbs: r.verbs,
        });
    }
}

fn strings(doc: &Value, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog_from_aggregated() -> Catalog {
        let apis = json!({"kind": "APIGroupDiscoveryList", "items": [
            {"metadata": {"name": "example.com"}, "versions": [
                {"version": "v2", "resources": [
                    {"resource": "widgets", "responseKind": {"group": "", "version": "", "kind": "Widget"},
                     "scope": "Namespaced", "verbs": ["get", "list"],
                     "subresources": [{"subresource": "status", "responseKind": {"kind": "Widget"}}]}]},
                {"version": "v1", "resources": [
                    {"resource": "widgets", "responseKind": {"kind": "Widget"}, "scope": "Namespaced", "verbs": []},
                    {"resource": "gadgets", "responseKind": {"kind": "Gadget"}, "scope": "Cluster", "verbs": []}]}]}]});
        let core = json!({"kind": "APIGroupDiscoveryList", "items": [
            {"metadata": {}, "versions": [{"version": "v1", "resources": [
                {"resource": "namespaces", "responseKind": {"kind": "Namespace"}, "scope": "Cluster", "verbs": ["get"]},
                {"resource": "bindings", "scope": "Namespaced", "verbs": ["create"]}]}]}]});
        let mut catalog = Catalog::default();
        add_aggregated(&mut catalog, core).unwrap();
        add_aggregated(&mut catalog, apis).unwrap();
        catalog
    }

    fn discovery(catalog: Catalog) -> Discovery {
        let cluster = crate::kube::ClusterConfig {
            server: reqwest::Url::parse("https://127.0.0.1:1").unwrap(),
            ca: None,
            insecure_skip_tls_verify: true,
            auth: crate::kube::Auth::None,
            tls_server_name: None,
            default_namespace: "default".into(),
            origin: "test".into(),
        };
        Discovery {
            client: Client::new(cluster).unwrap(),
            catalog: Arc::new(RwLock::new(Arc::new(catalog))),
        }
    }

    #[test]
    fn resolve_prefers_the_manifest_version_then_the_preferred_one() {
        let d = discovery(catalog_from_aggregated());
        assert_eq!(
            d.resolve("example.com", "v1", "Widget").unwrap().version,
            "v1"
        );
        assert_eq!(
            d.resolve("example.com", "", "Widget").unwrap().version,
            "v2"
        );
        // Gadget is only served at v1 even though v2 is preferred.
        assert_eq!(
            d.resolve("example.com", "", "Gadget").unwrap().version,
            "v1"
        );
        assert!(!d.resolve("example.com", "v1", "Gadget").unwrap().namespaced);
        let ns = d.resolve_api_version("v1", "Namespace").unwrap();
        assert_eq!(ns.path(None, Some("x")), "/api/v1/namespaces/x");

        let err = d.resolve("example.com", "v3", "Widget").unwrap_err();
        assert!(matches!(err, Error::UnservedVersion(_)), "{err}");
        assert!(err.to_string().contains("served: v2, v1"), "{err}");
        let err = d.resolve("example.com", "v1", "Sprocket").unwrap_err();
        assert!(matches!(err, Error::UnknownKind { .. }), "{err}");
        let err = d.resolve("nope.io", "v1", "Widget").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown kind Widget in group nope.io: is its CRD installed?"
        );
        assert_eq!(d.preferred_resources().len(), 3);
        assert!(d.has_status_subresource("example.com", "Widget"));
        assert!(!d.has_status_subresource("example.com", "Gadget"));
    }

    #[test]
    fn legacy_documents() {
        let mut catalog = Catalog::default();
        let group = json!({"name": "apps", "versions": [{"groupVersion": "apps/v1beta2", "version": "v1beta2"},
            {"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}});
        assert_eq!(
            group_versions(&group),
            vec![
                ("apps".to_string(), "v1".to_string()),
                ("apps".to_string(), "v1beta2".to_string())
            ]
        );
        let doc = json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "namespaced": true, "kind": "Deployment", "verbs": ["get", "patch"]},
            {"name": "deployments/scale", "namespaced": true, "kind": "Scale", "verbs": ["get"]},
            {"name": "deployments/status", "namespaced": true, "kind": "Deployment", "verbs": ["get"]}]});
        add_legacy(&mut catalog, "apps", "v1", doc);
        let d = discovery(catalog);
        assert!(d.has_status_subresource("apps", "Deployment"));
        assert!(!d.has_status_subresource("apps", "Scale"));
        let r = d.resolve("apps", "v1", "Deployment").unwrap();
        assert_eq!(r.plural, "deployments");
        assert!(r.namespaced);
        assert!(d.resolve("apps", "v1", "Scale").is_err());
    }
}
