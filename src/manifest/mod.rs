//! Manifests: YAML/JSON documents turned into objects with identity and origin.
//!
//! This module reads files and parses them; it never talks to the cluster. Whether
//! a kind is namespaced is only known from discovery, so an object keeps the
//! namespace it was written with and [`Manifest::with_default_namespace`] fills it
//! in later.
//!
//! - `walk`: which files a load reads, in a stable order, never outside the
//!   directory loaded (symlinks are followed only inside it);
//! - `load`: reading them;
//! - `parse`: one file's text → documents with their lines → objects (`*List`s
//!   flattened), through `yaml` (documents read exactly as kubectl reads them) and
//!   `validate` (what every object needs, duplicates);
//! - `file_cache`: parsed files kept between loads, re-parsed only when changed;
//! - `object_ref`, `error`: identity and origin of objects, located problems.

mod error;
mod file_cache;
mod load;
mod object_ref;
mod parse;
mod validate;
mod walk;
mod yaml;

pub use crate::kube::ObjectRef;
pub use error::{ManifestError, Problem};
pub use file_cache::{CachedManifest, Digest, FileCache, ParsedFile};
pub use load::{load, load_decrypting, load_with};
pub use object_ref::Origin;
pub use parse::parse_str;
pub use validate::find_duplicates;
pub use walk::{LinkError, WalkError, files};
pub(crate) use walk::{is_editor_temp, resolve_within};

use crate::kube::GroupVersion;
use serde_json::{Map, Value};

/// The largest manifest file read (16 MiB): a bigger one is a problem in the file,
/// not read into memory. The API server takes at most 3 MiB per object, so this
/// leaves room for bundles of large objects (CRDs); split bigger files.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The deepest nesting of mappings and sequences in a document (100 levels; kubectl
/// allows 10 000). Why: parsing time grows with flow nesting, so 100 000 `[` would
/// tie the daemon up for minutes, and converge's JSON handling stops at 128 levels.
/// Real manifests, deep CRD schemas included, stay far below.
pub const MAX_DEPTH: usize = 100;

/// The deepest a configured limit may go: converge's JSON handling (serde_json's
/// recursion limit) stops at 128 levels.
pub const MAX_DEPTH_ALLOWED: usize = 120;

/// How much of a file converge reads before refusing it: the defaults above, or what
/// `[limits]` in config.toml or `--max-file-mib`/`--max-depth` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: MAX_FILE_BYTES,
            max_depth: MAX_DEPTH,
        }
    }
}

/// One desired object: its JSON body as written (after YAML decoding) and its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `apiVersion` as written, e.g. `apps/v1` or `v1`.
    pub api_version: String,
    pub kind: String,
    /// The full object, `apiVersion`, `kind` and `metadata` included.
    pub body: Map<String, Value>,
    pub origin: Origin,
}

impl Manifest {
    /// `apiVersion` as group and version. Loading refuses an `apiVersion` with more
    /// than one `/`; a manifest built by hand with one reads as a version of the
    /// core group, which no server serves.
    pub fn group_version(&self) -> GroupVersion<'_> {
        GroupVersion::parse(&self.api_version).unwrap_or(GroupVersion {
            group: "",
            version: &self.api_version,
        })
    }

    /// The API group, empty for the core group.
    pub fn group(&self) -> &str {
        self.group_version().group
    }

    /// The API version without the group, e.g. `v1`.
    pub fn version(&self) -> &str {
        self.group_version().version
    }

    /// A string field of `metadata`; an empty string counts as absent, as it does for
    /// the API server (`namespace: ""` means "the default namespace").
    fn metadata_str(&self, key: &str) -> Option<&str> {
        let value = self.body.get("metadata")?.get(key)?.as_str()?;
        (!value.is_empty()).then_some(value)
    }

    /// `metadata.name`; empty for objects that only carry `generateName`.
    pub fn name(&self) -> &str {
        self.metadata_str("name").unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata_str("namespace")
    }

    pub fn generate_name(&self) -> Option<&str> {
        self.metadata_str("generateName")
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            group: self.group().to_string(),
            kind: self.kind.clone(),
            namespace: self.namespace().map(str::to_string),
            name: self.name().to_string(),
        }
    }

    /// Sets `metadata.namespace` when the object has none (namespaced kinds only;
    /// the caller knows the scope from discovery).
    pub fn with_default_namespace(mut self, namespace: &str) -> Self {
        if self.namespace().is_none() {
            if let Some(Value::Object(meta)) = self.body.get_mut("metadata") {
                meta.insert("namespace".into(), Value::String(namespace.into()));
            }
        }
        self
    }
}

/// Parsing helpers shared by the submodules' tests.
#[cfg(test)]
mod test_support {
    pub(super) use super::*;
    pub(super) use std::path::Path;

    pub(super) fn parse(text: &str) -> Vec<Manifest> {
        match parse_str(text, Path::new("m.yaml")) {
            Ok(manifests) => manifests,
            Err(err) => panic!("unexpected error:\n{err}"),
        }
    }

    /// The problems of a text that must fail, as `file:line: …` strings.
    pub(super) fn problems(text: &str) -> Vec<String> {
        match parse_str(text, Path::new("m.yaml")) {
            Ok(manifests) => panic!("expected problems, got {manifests:?}"),
            Err(err) => err.problems().iter().map(Problem::to_string).collect(),
        }
    }

    pub(super) fn lines(manifests: &[Manifest]) -> Vec<usize> {
        manifests.iter().map(|m| m.origin.line).collect()
    }

    pub(super) fn names(manifests: &[Manifest]) -> Vec<&str> {
        manifests.iter().map(Manifest::name).collect()
    }

    pub(super) const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ";
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn generate_name_only_object_is_accepted() {
        let text = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n---\n\
                    apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: migrate-\n";
        let manifests = parse(text);
        assert_eq!(manifests.len(), 2, "generateName objects never collide");
        assert_eq!(manifests[0].name(), "");
        assert_eq!(manifests[0].generate_name(), Some("migrate-"));
    }

    #[test]
    fn with_default_namespace_fills_only_missing_namespaces() {
        let text = format!("{CM}a\n---\n{CM}b\n  namespace: own\n---\n{CM}c\n  namespace: \"\"\n");
        let manifests: Vec<_> = parse(&text)
            .into_iter()
            .map(|m| m.with_default_namespace("dflt"))
            .collect();
        let namespaces: Vec<_> = manifests.iter().map(Manifest::namespace).collect();
        assert_eq!(namespaces, [Some("dflt"), Some("own"), Some("dflt")]);
        assert_eq!(manifests[0].body["metadata"]["namespace"], "dflt");
    }

    #[test]
    fn object_ref_display() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
                    ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
        let refs: Vec<_> = parse(text)
            .iter()
            .map(|m| m.object_ref().to_string())
            .collect();
        assert_eq!(refs, ["Deployment.apps/shop/web", "Namespace/shop"]);
    }

    /// The real-world corpus: 12 Deployments, 12 Services, 11 ServiceAccounts.
    #[test]
    fn microservices_demo_corpus() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/microservices-demo/kubernetes-manifests.yaml");
        let manifests = load(&[file]).unwrap();
        assert_eq!(manifests.len(), 35);
        let count = |kind: &str| manifests.iter().filter(|m| m.kind == kind).count();
        assert_eq!(
            (
                count("Deployment"),
                count("Service"),
                count("ServiceAccount")
            ),
            (12, 12, 11)
        );
        assert!(manifests.iter().all(|m| m.namespace().is_none()));
        assert_eq!(
            manifests[0].origin.line, 21,
            "after the licence header and `---`"
        );
        assert_eq!(
            manifests[0].object_ref().to_string(),
            "Deployment.apps/frontend"
        );
    }
}
