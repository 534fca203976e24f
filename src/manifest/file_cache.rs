//! Parsed files kept between loads of a source.

use super::load::{decode_text, decrypted, read};
use super::parse::{Parsed, parse_into};
use super::validate::find_duplicates;
use super::walk::files;
use super::{Limits, Manifest, ManifestError, ObjectRef, Origin, Problem};
use crate::compact::CompactObject;
use crate::sops::AgeKeys;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's content digest (SHA-256).
pub type Digest = [u8; 32];

/// Parsed files kept between loads, so that a new revision parses only the files
/// whose content changed. Why: at 10000 objects, parsing every file again cost more
/// than the rest of a one-file commit's reconcile.
#[derive(Default)]
pub struct FileCache {
    files: HashMap<PathBuf, ParsedFile>,
    /// The files of the latest refresh, in load order.
    order: Vec<PathBuf>,
    /// How many files the latest refresh had to parse.
    pub parsed_last: usize,
    limits: Limits,
    /// The age identities SOPS files are decrypted with (none: a SOPS file fails).
    keys: Arc<AgeKeys>,
}

/// One file as last read: its digest and what it holds.
pub struct ParsedFile {
    pub digest: Digest,
    pub manifests: Vec<CachedManifest>,
    problems: Vec<Problem>,
}

/// A manifest as [`FileCache`] keeps it between loads: its identity at hand, its body
/// as compact JSON ([`CompactObject`]). Why: a daemon keeps every manifest of its
/// sources for as long as it runs, while a targeted reconcile reads only a few; as
/// `Value` trees they were a fifth of an idle daemon's memory at 10000 objects.
#[derive(Debug, Clone)]
pub struct CachedManifest {
    object: ObjectRef,
    api_version: String,
    body: CompactObject,
    origin: Origin,
}

impl CachedManifest {
    fn new(manifest: Manifest) -> Self {
        CachedManifest {
            object: manifest.object_ref(),
            body: CompactObject::new(&Value::Object(manifest.body)),
            api_version: manifest.api_version,
            origin: manifest.origin,
        }
    }

    /// The object as written (namespace as written: `None` when omitted).
    pub fn object_ref(&self) -> &ObjectRef {
        &self.object
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The manifest, parsed again.
    pub fn manifest(&self) -> Manifest {
        let body = match self.body.value() {
            Value::Object(body) => body,
            _ => Map::new(),
        };
        Manifest {
            api_version: self.api_version.clone(),
            kind: self.object.kind.clone(),
            body,
            origin: self.origin.clone(),
        }
    }
}

impl FileCache {
    /// An empty cache that reads files within `limits`.
    pub fn within(limits: Limits) -> Self {
        FileCache {
            limits,
            ..FileCache::default()
        }
    }

    /// Decrypts SOPS files with `keys` from now on. Files already parsed keep what
    /// they gave until their content changes; a key change therefore clears the cache.
    pub fn set_keys(&mut self, keys: Arc<AgeKeys>) {
        if !Arc::ptr_eq(&self.keys, &keys) {
            self.files.clear();
            self.keys = keys;
        }
    }

    /// Reads every manifest file under `paths` (as [`super::load()`] does), parsing only those
    /// whose content changed since the last refresh, and reports every problem,
    /// duplicates across files included.
    pub fn refresh(&mut self, paths: &[PathBuf]) -> Result<(), ManifestError> {
        let order = files(paths)?;
        let mut files = HashMap::with_capacity(order.len());
        self.parsed_last = 0;
        for file in &order {
            let bytes = read(file, self.limits.max_file_bytes)?;
            let digest = digest(&bytes);
            let parsed = match self.files.remove(file) {
                Some(parsed) if parsed.digest == digest => parsed,
                _ => {
                    self.parsed_last += 1;
                    parse_file(file, bytes, digest, self.limits, &self.keys)
                }
            };
            files.insert(file.clone(), parsed);
        }
        self.files = files;
        self.order = order;
        let mut problems: Vec<Problem> = self
            .parsed()
            .flat_map(|(_, p)| p.problems.iter().cloned())
            .collect();
        problems.extend(find_duplicates(
            self.manifests().map(|m| (m.object.clone(), &m.origin)),
        ));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid(problems))
        }
    }

    /// Takes rendered objects (kustomize, Helm, substituted files) in place of files
    /// read from disk: they are grouped by the file each was written in, so that a
    /// new render counts as changed only the files whose objects changed, and a
    /// targeted reconcile looks at those alone. The render already checked them.
    pub fn set_rendered(&mut self, manifests: Vec<Manifest>) {
        let mut order: Vec<PathBuf> = Vec::new();
        let mut groups: HashMap<PathBuf, Vec<CachedManifest>> = HashMap::new();
        for manifest in manifests {
            let file = manifest.origin.file.clone();
            if !groups.contains_key(&file) {
                order.push(file.clone());
            }
            groups
                .entry(file)
                .or_default()
                .push(CachedManifest::new(manifest));
        }
        self.parsed_last = 0;
        let mut files = HashMap::with_capacity(order.len());
        for file in &order {
            let manifests = groups.remove(file).unwrap_or_default();
            let digest = rendered_digest(&manifests);
            if self.files.get(file).is_none_or(|old| old.digest != digest) {
                self.parsed_last += 1;
            }
            let problems = Vec::new();
            files.insert(
                file.clone(),
                ParsedFile {
                    digest,
                    manifests,
                    problems,
                },
            );
        }
        self.files = files;
        self.order = order;
    }

    /// Every file of the latest refresh, in load order.
    pub fn parsed(&self) -> impl Iterator<Item = (&Path, &ParsedFile)> {
        self.order
            .iter()
            .filter_map(|f| Some((f.as_path(), self.files.get(f)?)))
    }

    /// Every manifest of the latest refresh, in load order.
    pub fn manifests(&self) -> impl Iterator<Item = &CachedManifest> {
        self.parsed().flat_map(|(_, p)| p.manifests.iter())
    }
}

fn digest(bytes: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// A digest of rendered objects: each one's origin line and compact body.
fn rendered_digest(manifests: &[CachedManifest]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for manifest in manifests {
        let body = manifest.body.as_str();
        ctx.update(&(manifest.origin.line as u64).to_le_bytes());
        ctx.update(&(body.len() as u64).to_le_bytes());
        ctx.update(body.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn parse_file(
    file: &Path,
    bytes: Vec<u8>,
    digest: Digest,
    limits: Limits,
    keys: &AgeKeys,
) -> ParsedFile {
    let mut parsed = Parsed::within(limits);
    if let Some(text) = decode_text(file, bytes, limits.max_file_bytes, &mut parsed.problems) {
        if let Some(text) = decrypted(file, text, keys, &mut parsed.problems) {
            parse_into(&text, file, &mut parsed);
        }
    }
    ParsedFile {
        digest,
        manifests: parsed
            .manifests
            .into_iter()
            .map(CachedManifest::new)
            .collect(),
        problems: parsed.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn file_cache_parses_only_changed_files_and_still_reports_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, cm: &str| {
            let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {cm}\n");
            fs::write(dir.path().join(name), text).expect("write");
        };
        write("a.yaml", "a");
        write("b.yaml", "b");
        let mut cache = FileCache::default();
        let paths = [dir.path().to_path_buf()];
        cache.refresh(&paths).expect("first load");
        assert_eq!(cache.parsed_last, 2);
        cache.refresh(&paths).expect("unchanged");
        assert_eq!(cache.parsed_last, 0);
        write("b.yaml", "c");
        cache.refresh(&paths).expect("one file changed");
        assert_eq!(cache.parsed_last, 1);
        let names: Vec<&str> = cache
            .manifests()
            .map(|m| m.object_ref().name.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
        write("b.yaml", "a");
        let err = cache.refresh(&paths).expect_err("a duplicate across files");
        assert!(err.to_string().contains("duplicate object"), "{err}");
        assert_eq!(cache.parsed_last, 1);
    }

    #[test]
    fn rendered_objects_are_grouped_by_their_file_and_compared() {
        let object = |file: &str, name: &str, value: &str| {
            let text = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{v: {value}}}\n"
            );
            let mut manifest = crate::manifest::parse_str(&text, Path::new("out"))
                .unwrap()
                .remove(0);
            manifest.origin.file = PathBuf::from(file);
            manifest
        };
        let mut cache = FileCache::default();
        cache.set_rendered(vec![
            object("a.yaml", "cx", "1"),
            object("b.yaml", "cy", "1"),
            object("a.yaml", "cz", "1"),
        ]);
        assert_eq!(cache.parsed_last, 2);
        let files: Vec<_> = cache
            .parsed()
            .map(|(f, p)| (f.to_path_buf(), p.manifests.len()))
            .collect();
        assert_eq!(
            files,
            [(PathBuf::from("a.yaml"), 2), (PathBuf::from("b.yaml"), 1)]
        );
        cache.set_rendered(vec![
            object("a.yaml", "cx", "1"),
            object("b.yaml", "cy", "2"),
            object("a.yaml", "cz", "1"),
        ]);
        assert_eq!(cache.parsed_last, 1, "only b.yaml's object changed");
    }
}
