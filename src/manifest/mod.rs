//! Manifests: YAML/JSON documents turned into objects with identity and origin.
//!
//! This module reads files and parses them; it never talks to the cluster. Whether
//! a kind is namespaced is only known from discovery, so an object keeps the
//! namespace it was written with and [`Manifest::with_default_namespace`] fills it
//! in later.

use crate::compact::CompactObject;
use crate::kube::GroupVersion;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where an object was written: the file and the 1-based line its document starts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The identity the API server keys an object by. The version is not part of it:
/// `apps/v1` and `apps/v1beta1` Deployments named `web` are the same object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// API group; empty for the core group (`v1`).
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// `Deployment.apps/shop/web`, `Namespace/shop` — the form kubectl users read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

impl ObjectRef {
    /// The identity of a live object as the API server returned it (`None` when it
    /// lacks apiVersion, kind or name).
    pub fn of_live(live: &Value) -> Option<ObjectRef> {
        let gv = GroupVersion::parse(live.get("apiVersion")?.as_str()?).ok()?;
        let metadata = live.get("metadata")?;
        Some(ObjectRef {
            group: gv.group.to_string(),
            kind: live.get("kind")?.as_str()?.to_string(),
            namespace: metadata
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: metadata.get("name")?.as_str()?.to_string(),
        })
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

// ---------------------------------------------------------------------------------
// Errors

/// One thing wrong with the manifests, located so the user can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// The object concerned (`Deployment.apps/web`), when enough of it is known.
    pub object: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    /// `file:line: [object: ]message` — the form editors and terminals link to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A path could not be read; nothing else is checked, as the set would be partial.
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Every problem found in every file, so the user can fix them in one go.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ManifestError {
    /// The problems of an [`ManifestError::Invalid`] error; empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Invalid(problems) => problems,
            ManifestError::Io { .. } => &[],
        }
    }
}

fn display_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

fn problem(file: &Path, line: usize, object: Option<String>, message: String) -> Problem {
    let origin = Origin {
        file: file.to_path_buf(),
        line,
    };
    Problem {
        origin,
        object,
        message,
    }
}

/// Manifests and problems gathered so far; problems do not stop the gathering.
#[derive(Default)]
struct Parsed {
    manifests: Vec<Manifest>,
    problems: Vec<Problem>,
}

impl Parsed {
    /// Adds the cross-object checks and turns the result into the public shape.
    fn finish(mut self) -> Result<Vec<Manifest>, ManifestError> {
        self.problems.extend(find_duplicates(
            self.manifests.iter().map(|m| (m.object_ref(), &m.origin)),
        ));
        if self.problems.is_empty() {
            Ok(self.manifests)
        } else {
            Err(ManifestError::Invalid(self.problems))
        }
    }
}

// ---------------------------------------------------------------------------------
// Loading files

/// Loads every manifest under `paths` (files or directories), in file order and then
/// document order, or reports every problem found in all of them.
///
/// Directories are walked recursively in name order so the result is deterministic;
/// only `.yaml`, `.yml` and `.json` files are read there, and hidden entries are
/// skipped (which also skips ConfigMap-mount internals such as `..data`). A file named
/// explicitly is read whatever its extension: the user asked for it.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut parsed = Parsed::default();
    for file in manifest_files(paths)? {
        if let Some(text) = decode_text(&file, read(&file)?, &mut parsed.problems) {
            parse_into(&text, &file, &mut parsed);
        }
    }
    parsed.finish()
}

fn read(file: &Path) -> Result<Vec<u8>, ManifestError> {
    fs::read(file).map_err(|source| ManifestError::Io {
        path: file.to_path_buf(),
        source,
    })
}

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
    /// Reads every manifest file under `paths` (as [`load`] does), parsing only those
    /// whose content changed since the last refresh, and reports every problem,
    /// duplicates across files included.
    pub fn refresh(&mut self, paths: &[PathBuf]) -> Result<(), ManifestError> {
        let order = manifest_files(paths)?;
        let mut files = HashMap::with_capacity(order.len());
        self.parsed_last = 0;
        for file in &order {
            let bytes = read(file)?;
            let digest = digest(&bytes);
            let parsed = match self.files.remove(file) {
                Some(parsed) if parsed.digest == digest => parsed,
                _ => {
                    self.parsed_last += 1;
                    parse_file(file, bytes, digest)
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

fn parse_file(file: &Path, bytes: Vec<u8>, digest: Digest) -> ParsedFile {
    let mut parsed = Parsed::default();
    if let Some(text) = decode_text(file, bytes, &mut parsed.problems) {
        parse_into(&text, file, &mut parsed);
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

/// The files to read, each once (a file named both directly and through its directory
/// would otherwise be reported as a duplicate of itself).
fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut walk = Walk::default();
    for path in paths {
        if metadata(path)?.is_dir() {
            walk.dir(path)?;
        } else {
            walk.file(path);
        }
    }
    Ok(walk.files)
}

/// State of a directory walk: the files found and what was already visited, keyed by
/// canonical path so symlink loops and repeated paths are harmless.
#[derive(Default)]
struct Walk {
    files: Vec<PathBuf>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
}

impl Walk {
    fn file(&mut self, path: &Path) {
        if self.seen_files.insert(canonical(path)) {
            self.files.push(path.to_path_buf());
        }
    }

    fn dir(&mut self, dir: &Path) -> Result<(), ManifestError> {
        if !self.seen_dirs.insert(canonical(dir)) {
            return Ok(());
        }
        for path in sorted_entries(dir)? {
            self.entry(&path)?;
        }
        Ok(())
    }

    /// A directory entry: hidden entries are skipped, directories descended into and
    /// manifest files kept. Symlinks are followed (ConfigMap mounts are symlinks).
    fn entry(&mut self, path: &Path) -> Result<(), ManifestError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name.starts_with('.') {
            return Ok(());
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => self.dir(path)?,
            Ok(meta) if meta.is_file() && has_manifest_extension(path) => self.file(path),
            Ok(_) => {}
            // A broken link only matters if it should have been a manifest.
            Err(source) if has_manifest_extension(path) => {
                let path = path.to_path_buf();
                return Err(ManifestError::Io { path, source });
            }
            Err(_) => {}
        }
        Ok(())
    }
}

fn metadata(path: &Path) -> Result<fs::Metadata, ManifestError> {
    fs::metadata(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The entries of `dir` sorted by name, joined onto `dir` as the user spelled it.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io_error = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        names.push(entry.map_err(io_error)?.file_name());
    }
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

fn has_manifest_extension(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("yaml" | "yml" | "json"))
}

/// Reads a file as text. Bytes that are not UTF-8 are a problem in the file (reported
/// with the line they are on), not an I/O failure, so other files are still checked.
fn decode_text(file: &Path, bytes: Vec<u8>, problems: &mut Vec<Problem>) -> Option<String> {
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(err) => {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
            let message = "the file is not valid UTF-8; save it as UTF-8".to_string();
            problems.push(problem(file, line, None, message));
            None
        }
    }
}

// ---------------------------------------------------------------------------------
// Parsing

/// Parses the text of one file (`file` is only used to locate objects and problems):
/// every YAML document, or the single JSON document, becomes objects; `*List` kinds are
/// flattened; every problem is reported, duplicates within the file included.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let mut parsed = Parsed::default();
    parse_into(text, file, &mut parsed);
    parsed.finish()
}

fn parse_into(text: &str, file: &Path, out: &mut Parsed) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for doc in split_documents(text) {
        if !doc.has_content {
            continue;
        }
        match decode(&doc, file) {
            Ok(Value::Null) => {}
            Ok(value) => add_document(value, &doc, file, out),
            Err(problem) => out.problems.push(problem),
        }
    }
}

/// One YAML document of a file, cut out by [`split_documents`].
struct Doc<'a> {
    text: &'a str,
    /// Lines of the file before `text`, to turn parser lines into file lines.
    offset: usize,
    /// The 1-based file line the document's content starts on (its origin).
    line: usize,
    /// False when the document holds only comments, blank lines and markers.
    has_content: bool,
}

/// A document being accumulated by [`split_documents`].
struct Chunk {
    start: usize,
    first_line: usize,
    /// A `---` marker was seen: a second one starts a new document.
    started: bool,
    content_line: Option<usize>,
}

impl Chunk {
    fn new(start: usize, first_line: usize) -> Self {
        Chunk {
            start,
            first_line,
            started: false,
            content_line: None,
        }
    }

    fn finish(self, text: &str, end: usize) -> Doc<'_> {
        Doc {
            text: &text[self.start..end],
            offset: self.first_line,
            line: self.content_line.unwrap_or(self.first_line + 1),
            has_content: self.content_line.is_some(),
        }
    }
}

/// Splits a YAML stream into documents, keeping each one's line offset.
///
/// serde_yaml's multi-document deserializer does not say where a document starts,
/// so the split is done here. A `---` or `...` marker at column 0 always delimits a
/// document in YAML (it cannot occur inside a scalar), so a line scan is exact.
/// Comments and directives before the first `---` stay with the document they head.
fn split_documents(text: &str) -> Vec<Doc<'_>> {
    let mut docs = Vec::new();
    let mut chunk = Chunk::new(0, 0);
    let mut pos = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        match marker(line) {
            Some(("---", rest)) => {
                if chunk.started || chunk.content_line.is_some() {
                    docs.push(chunk.finish(text, pos));
                    chunk = Chunk::new(pos, index);
                }
                chunk.started = true;
                if is_content(rest) {
                    chunk.content_line.get_or_insert(index + 1);
                }
            }
            Some(_) => {
                // `...` ends the document; whatever follows is a new one.
                docs.push(chunk.finish(text, pos + raw.len()));
                chunk = Chunk::new(pos + raw.len(), index + 1);
            }
            None if is_content(line) => {
                chunk.content_line.get_or_insert(index + 1);
            }
            None => {}
        }
        pos += raw.len();
    }
    docs.push(chunk.finish(text, pos));
    docs
}

/// A document marker (`---` or `...`) and the rest of its line.
fn marker(line: &str) -> Option<(&str, &str)> {
    let (mark, rest) = (line.get(..3)?, line.get(3..)?);
    let is_marker =
        (mark == "---" || mark == "...") && (rest.is_empty() || rest.starts_with([' ', '\t']));
    is_marker.then_some((mark, rest))
}

/// Whether a line holds YAML content rather than blank space, a comment or a directive.
fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%')
}

/// Decodes one document into JSON, with merge keys applied.
fn decode(doc: &Doc, file: &Path) -> Result<Value, Problem> {
    let mut yaml: serde_yaml::Value =
        serde_yaml::from_str(doc.text).map_err(|err| yaml_problem(&err, doc, file))?;
    yaml.apply_merge()
        .map_err(|err| yaml_problem(&err, doc, file))?;
    to_json(yaml).map_err(|err| problem(file, doc.line, None, err.to_string()))
}

/// A parser error at its line in the file (not in the document), with the parser's
/// own `line N column M` references shifted the same way.
fn yaml_problem(err: &serde_yaml::Error, doc: &Doc, file: &Path) -> Problem {
    let line = err
        .location()
        .map_or(doc.line, |location| location.line() + doc.offset);
    let detail = shift_line_numbers(&err.to_string(), doc.offset);
    let message = format!("invalid YAML: {detail}; check the indentation and quoting");
    problem(file, line, None, message)
}

/// Adds `offset` to every `line N` in a parser message.
fn shift_line_numbers(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------
// YAML → JSON

/// A YAML value that has no JSON equivalent, with the path to it.
#[derive(Debug)]
struct Unconvertible {
    /// Path segments, innermost first (they are added while unwinding).
    path: Vec<String>,
    message: String,
}

impl Unconvertible {
    fn new(message: String) -> Self {
        Unconvertible {
            path: Vec::new(),
            message,
        }
    }

    fn within(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }
}

impl fmt::Display for Unconvertible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = String::new();
        for segment in self.path.iter().rev() {
            if !path.is_empty() && !segment.starts_with('[') {
                path.push('.');
            }
            path.push_str(segment);
        }
        if path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {path}: {}", self.message)
        }
    }
}

/// Converts decoded YAML into JSON, which is what the API server accepts. Things only
/// YAML can say (non-string keys, custom tags, NaN/infinity) are refused, not guessed.
fn to_json(value: serde_yaml::Value) -> Result<Value, Unconvertible> {
    use serde_yaml::Value as Yaml;
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => number_to_json(&n)?,
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => sequence_to_json(items)?,
        Yaml::Mapping(mapping) => Value::Object(mapping_to_json(mapping)?),
        Yaml::Tagged(tagged) => {
            let message = format!("the YAML tag {} is not supported; remove it", tagged.tag);
            return Err(Unconvertible::new(message));
        }
    })
}

fn number_to_json(n: &serde_yaml::Number) -> Result<Value, Unconvertible> {
    if let Some(i) = n.as_i64() {
        return Ok(Value::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Ok(Value::from(u));
    }
    let float = n.as_f64().and_then(serde_json::Number::from_f64);
    float.map(Value::Number).ok_or_else(|| {
        let message = format!("{n} cannot be represented in JSON; quote it if it is text");
        Unconvertible::new(message)
    })
}

fn sequence_to_json(items: serde_yaml::Sequence) -> Result<Value, Unconvertible> {
    let convert = |(i, item)| to_json(item).map_err(|e| e.within(format!("[{i}]")));
    let items = items.into_iter().enumerate().map(convert);
    Ok(Value::Array(items.collect::<Result<_, _>>()?))
}

fn mapping_to_json(mapping: serde_yaml::Mapping) -> Result<Map<String, Value>, Unconvertible> {
    let mut map = Map::with_capacity(mapping.len());
    for (key, value) in mapping {
        let serde_yaml::Value::String(key) = key else {
            let message = format!(
                "the map key {} is not a string; quote it",
                describe_yaml_key(&key)
            );
            return Err(Unconvertible::new(message));
        };
        let value = to_json(value).map_err(|e| e.within(key.clone()))?;
        map.insert(key, value);
    }
    Ok(map)
}

fn describe_yaml_key(key: &serde_yaml::Value) -> String {
    use serde_yaml::Value as Yaml;
    match key {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => format!("{s:?}"),
        Yaml::Sequence(_) => "[…] (a sequence)".into(),
        Yaml::Mapping(_) => "{…} (a mapping)".into(),
        Yaml::Tagged(t) => format!("{} (a tagged value)", t.tag),
    }
}

// ---------------------------------------------------------------------------------
// Objects

/// Turns one decoded document into objects: a `*List` is flattened, anything else must
/// be a single valid object.
fn add_document(value: Value, doc: &Doc, file: &Path, out: &mut Parsed) {
    let Value::Object(map) = value else {
        let message = format!(
            "the document is {}, not a mapping; each document must be one Kubernetes object \
             with apiVersion, kind and metadata",
            describe_json(&value)
        );
        out.problems.push(problem(file, doc.line, None, message));
        return;
    };
    let item_lines = |count| item_lines(doc, count);
    add_object(map, file, doc.line, &item_lines, out);
}

/// Adds one object, or the items of a list (whose lines `item_lines` may know).
fn add_object(
    mut map: Map<String, Value>,
    file: &Path,
    line: usize,
    item_lines: &dyn Fn(usize) -> Option<Vec<usize>>,
    out: &mut Parsed,
) {
    if !is_list(&map) {
        match validate(map, file, line) {
            Ok(manifest) => out.manifests.push(manifest),
            Err(problems) => out.problems.extend(problems),
        }
        return;
    }
    let kind = str_field(&map, "kind").unwrap_or_default().to_string();
    let items = match map.remove("items") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            let message = format!(
                "items of the {kind} is {}; it must be a list of objects",
                describe_json(&other)
            );
            out.problems.push(problem(file, line, Some(kind), message));
            return;
        }
    };
    let lines = item_lines(items.len()).unwrap_or_default();
    for (i, item) in items.into_iter().enumerate() {
        let item_line = lines.get(i).copied().unwrap_or(line);
        add_item(item, i, &kind, file, item_line, out);
    }
}

fn add_item(item: Value, index: usize, kind: &str, file: &Path, line: usize, out: &mut Parsed) {
    match item {
        // Nested lists are flattened too; their items take the outer item's line.
        Value::Object(map) => add_object(map, file, line, &|_| None, out),
        other => {
            let message = format!(
                "item {index} of the {kind} is {}, not a mapping; each item must be an object",
                describe_json(&other)
            );
            out.problems.push(problem(file, line, None, message));
        }
    }
}

/// `kind: List`, `ConfigMapList` …: what `kubectl get -o yaml` writes, holding objects
/// in `items`.
fn is_list(map: &Map<String, Value>) -> bool {
    let kind = str_field(map, "kind").unwrap_or_default();
    kind.ends_with("List") && map.contains_key("items")
}

/// The lines of the entries of a block-style top-level `items:` sequence, if exactly
/// `count` are found; flow style or anything unusual gives `None` (the list's line is
/// used instead).
fn item_lines(doc: &Doc, count: usize) -> Option<Vec<usize>> {
    let numbered = doc
        .text
        .lines()
        .enumerate()
        .map(|(i, l)| (doc.offset + i + 1, l));
    let mut after_items = numbered.skip_while(|(_, l)| !is_items_key(l));
    after_items.next()?;
    let mut content = after_items.filter(|(_, l)| is_content(l));
    let (first, first_text) = content.next()?;
    let indent = indentation(first_text);
    is_sequence_entry(&first_text[indent..]).then_some(())?;
    let mut lines = vec![first];
    for (n, text) in content {
        let here = indentation(text);
        if here < indent || (here == indent && !is_sequence_entry(&text[here..])) {
            break;
        }
        if here == indent {
            lines.push(n);
        }
    }
    (lines.len() == count).then_some(lines)
}

fn is_items_key(line: &str) -> bool {
    line.strip_prefix("items:")
        .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_sequence_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// Checks what every object needs before it can be applied, reporting all that is
/// missing at once.
fn validate(body: Map<String, Value>, file: &Path, line: usize) -> Result<Manifest, Vec<Problem>> {
    let object = label(&body);
    let messages = object_problems(&body);
    if !messages.is_empty() {
        let to_problem = |message| problem(file, line, object.clone(), message);
        return Err(messages.into_iter().map(to_problem).collect());
    }
    let api_version = str_field(&body, "apiVersion")
        .unwrap_or_default()
        .to_string();
    let kind = str_field(&body, "kind").unwrap_or_default().to_string();
    let origin = Origin {
        file: file.to_path_buf(),
        line,
    };
    Ok(Manifest {
        api_version,
        kind,
        body,
        origin,
    })
}

fn object_problems(body: &Map<String, Value>) -> Vec<String> {
    if is_kustomization(body) {
        return vec![
            "this is a kustomize file, not a Kubernetes object: converge applies plain \
             manifests; render it with `kustomize build DIR > manifests.yaml`, or point \
             converge at a directory without it"
                .into(),
        ];
    }
    let mut messages = Vec::new();
    let api_version = "set apiVersion, e.g. `apiVersion: v1` or `apiVersion: apps/v1`";
    messages.extend(required_string(body, "apiVersion", api_version));
    if let Some(Err(err)) = str_field(body, "apiVersion").map(GroupVersion::parse) {
        messages.push(err.to_string());
    }
    messages.extend(required_string(
        body,
        "kind",
        "set kind, e.g. `kind: Deployment`",
    ));
    match body.get("metadata") {
        Some(Value::Object(meta)) => messages.extend(metadata_problems(meta)),
        None | Some(Value::Null) => messages.push(missing_name()),
        Some(other) => messages.push(format!(
            "metadata is {}; it must be a mapping with at least `name`",
            describe_json(other)
        )),
    }
    messages
}

/// `kustomization.yaml` files sit beside manifests in many repositories; they get
/// an explanation rather than a confusing "metadata.name is missing".
fn is_kustomization(body: &Map<String, Value>) -> bool {
    str_field(body, "apiVersion").is_some_and(|v| v.starts_with("kustomize.config.k8s.io/"))
        || (str_field(body, "kind") == Some("Kustomization") && body.get("metadata").is_none())
}

fn required_string(map: &Map<String, Value>, key: &str, hint: &str) -> Option<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => None,
        None | Some(Value::Null) => Some(format!("{key} is missing; {hint}")),
        Some(Value::String(_)) => Some(format!("{key} is empty; {hint}")),
        Some(other) => Some(format!(
            "{key} is {}; it must be a string: {hint}",
            describe_json(other)
        )),
    }
}

fn metadata_problems(meta: &Map<String, Value>) -> Vec<String> {
    let mut messages = Vec::new();
    for key in ["name", "generateName", "namespace"] {
        match meta.get(key) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => messages.push(format!(
                "metadata.{key} is {}; it must be a string, quote it",
                describe_json(other)
            )),
        }
    }
    let non_empty = |key| matches!(meta.get(key), Some(Value::String(s)) if !s.is_empty());
    if !non_empty("name") && !non_empty("generateName") && messages.is_empty() {
        messages.push(missing_name());
    }
    messages
}

fn missing_name() -> String {
    "metadata.name is missing; set metadata.name (or metadata.generateName to have the \
     server pick a name on create)"
        .into()
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)?.as_str()
}

/// The best name for an object with problems: `Deployment.apps/web` as far as known.
fn label(body: &Map<String, Value>) -> Option<String> {
    let kind = str_field(body, "kind").filter(|k| !k.is_empty())?;
    let api_version = str_field(body, "apiVersion").unwrap_or_default();
    let group = GroupVersion::parse(api_version).map_or("", |gv| gv.group);
    let mut label = kind.to_string();
    if !group.is_empty() {
        label = format!("{label}.{group}");
    }
    let meta = body.get("metadata");
    for key in ["namespace", "name"] {
        if let Some(part) = meta
            .and_then(|m| m.get(key)?.as_str())
            .filter(|p| !p.is_empty())
        {
            label = format!("{label}/{part}");
        }
    }
    Some(label)
}

/// A short description of a JSON value for messages, e.g. `a number (5)`.
fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) if s.chars().count() > 40 => {
            let start: String = s.chars().take(40).collect();
            format!("a string ({start:?}…)")
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Two manifests for the same object (group, kind, namespace as written, name): the
/// second would silently overwrite the first, so it is an error naming both places.
///
/// Objects without a namespace compare as `None`: the default namespace is only
/// known later, so callers should run this again after
/// [`Manifest::with_default_namespace`]. `generateName`-only objects never collide.
pub fn find_duplicates<'a>(
    objects: impl IntoIterator<Item = (ObjectRef, &'a Origin)>,
) -> Vec<Problem> {
    let mut first: HashMap<ObjectRef, &Origin> = HashMap::new();
    let mut problems = Vec::new();
    for (object, origin) in objects.into_iter().filter(|(o, _)| !o.name.is_empty()) {
        match first.entry(object) {
            Entry::Occupied(entry) => problems.push(Problem {
                origin: origin.clone(),
                object: Some(entry.key().to_string()),
                message: format!(
                    "duplicate object, also defined at {}; keep only one of them",
                    entry.get()
                ),
            }),
            Entry::Vacant(entry) => {
                entry.insert(origin);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn parse(text: &str) -> Vec<Manifest> {
        match parse_str(text, Path::new("m.yaml")) {
            Ok(manifests) => manifests,
            Err(err) => panic!("unexpected error:\n{err}"),
        }
    }

    /// The problems of a text that must fail, as `file:line: …` strings.
    fn problems(text: &str) -> Vec<String> {
        match parse_str(text, Path::new("m.yaml")) {
            Ok(manifests) => panic!("expected problems, got {manifests:?}"),
            Err(err) => err.problems().iter().map(Problem::to_string).collect(),
        }
    }

    fn lines(manifests: &[Manifest]) -> Vec<usize> {
        manifests.iter().map(|m| m.origin.line).collect()
    }

    fn names(manifests: &[Manifest]) -> Vec<&str> {
        manifests.iter().map(Manifest::name).collect()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ";

    #[test]
    fn multi_document_with_comments_and_empty_documents() {
        let text = format!(
            "# leading comment\n---\n{CM}a\n---\n# only a comment\n---\n\n---\nnull\n---\n{CM}b\n\
             data:\n  k: v # trailing\n---\n"
        );
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(manifests[1].body["data"], json!({"k": "v"}));
    }

    #[test]
    fn third_document_starts_on_its_first_content_line() {
        let text = format!("{CM}a\n---\n{CM}b\n---\n# about c\n\n{CM}c\n");
        let manifests = parse(&text);
        assert_eq!(lines(&manifests), [1, 6, 13]);
        assert_eq!(manifests[2].origin.to_string(), "m.yaml:13");
    }

    #[test]
    fn separator_with_trailing_content() {
        let text = "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n\
                    --- # comment only\n\
                    --- \n{CM}b\n";
        let manifests = parse(&text.replace("{CM}", CM));
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(lines(&manifests), [1, 4]);
    }

    #[test]
    fn document_end_markers() {
        let text = format!("{CM}a\n...\n---\n{CM}b\n...\n{CM}c\n...\n");
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["a", "b", "c"]);
        assert_eq!(lines(&manifests), [1, 7, 12]);
    }

    #[test]
    fn directives_stay_with_their_document() {
        let text = format!("%YAML 1.2\n---\n{CM}a\n...\n%YAML 1.2\n---\n{CM}b\n");
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(lines(&manifests), [3, 10]);
    }

    #[test]
    fn crlf_and_byte_order_mark() {
        let text = format!("\u{feff}{CM}a\n---\n{CM}b\n").replace('\n', "\r\n");
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(lines(&manifests), [1, 6]);
    }

    #[test]
    fn list_is_flattened_with_item_lines() {
        let text = format!(
            "{CM}first\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  \
             metadata:\n    name: s\n# between\n- apiVersion: apps/v1\n  kind: Deployment\n  \
             metadata:\n    name: d\nmetadata: {{}}\n"
        );
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["first", "s", "d"]);
        assert_eq!(lines(&manifests), [1, 9, 14]);
        assert_eq!(manifests[2].group(), "apps");
    }

    #[test]
    fn typed_and_flow_lists_are_flattened() {
        let text = "apiVersion: v1\nkind: ConfigMapList\nitems: [\n  {apiVersion: v1, kind: ConfigMap, \
                    metadata: {name: a}},\n  {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}]\n\
                    ---\napiVersion: v1\nkind: List\nitems: []\n";
        let manifests = parse(text);
        assert_eq!(names(&manifests), ["a", "b"]);
        // Flow style: item lines are not searched for, the list's line is used.
        assert_eq!(lines(&manifests), [1, 1]);
    }

    #[test]
    fn indented_list_items_and_nested_lists() {
        let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: List\n    \
                    items:\n    - {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n  \
                    - {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
        let manifests = parse(text);
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(lines(&manifests), [4, 8]);
    }

    #[test]
    fn json_document() {
        let text = "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"ConfigMap\",\n\t\"metadata\": \
                    {\"name\": \"j\", \"labels\": {\"a\": \"1\"}},\n\t\"data\": {\"n\": \"\\u00e9\\/\"}\n}\n";
        let manifests = parse_str(text, Path::new("m.json")).unwrap();
        assert_eq!(names(&manifests), ["j"]);
        assert_eq!(manifests[0].body["data"]["n"], "é/");
        assert_eq!(manifests[0].origin.line, 1);
    }

    #[test]
    fn yaml_scalars_convert_to_json() {
        let text = format!(
            "{CM}a\nspec:\n  int: 3\n  neg: -4\n  big: 18446744073709551615\n  float: 1.5\n  \
             bool: true\n  nothing: ~\n  quoted: \"3\"\n  octal: 0o10\n  leading_zero: 0644\n  \
             yes: yes\n"
        );
        let spec = &parse(&text)[0].body["spec"];
        let expected = json!({"int": 3, "neg": -4, "big": 18446744073709551615u64, "float": 1.5,
            "bool": true, "nothing": null, "quoted": "3", "octal": 8, "leading_zero": "0644",
            "yes": "yes"});
        assert_eq!(spec, &expected);
    }

    #[test]
    fn anchors_and_merge_keys() {
        let text = format!(
            "{CM}a\n  labels: &labels\n    app: web\nspec:\n  selector: *labels\n  \
             merged:\n    <<: *labels\n    tier: front\n"
        );
        let body = &parse(&text)[0].body;
        assert_eq!(body["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(
            body["spec"]["merged"],
            json!({"app": "web", "tier": "front"})
        );
    }

    #[test]
    fn malformed_yaml_names_the_absolute_line() {
        let text = format!("{CM}a\n---\n{CM}b\n  labels:\n    a: b\n   c: d\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("m.yaml:12: invalid YAML: "),
            "{found:?}"
        );
        assert!(found[0].contains("line 12 column"), "{found:?}");
    }

    #[test]
    fn duplicate_key_names_its_line() {
        let text = format!("{CM}a\n---\n{CM}b\n  name: c\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("m.yaml:9: invalid YAML: "),
            "{found:?}"
        );
        assert!(
            found[0].contains("duplicate entry with key \"name\""),
            "{found:?}"
        );
    }

    #[test]
    fn document_that_is_not_a_mapping() {
        let found = problems(&format!("{CM}a\n---\n- a\n- b\n---\njust text\n"));
        assert_eq!(found.len(), 2);
        assert!(found[0].starts_with("m.yaml:6: the document is a list, not a mapping"));
        assert!(found[1].starts_with("m.yaml:9: the document is a string (\"just text\")"));
    }

    #[test]
    fn kustomization_files_are_explained() {
        let text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n";
        let err = parse_str(text, Path::new("k/kustomization.yaml")).expect_err("not an object");
        let message = err.to_string();
        assert!(message.starts_with("k/kustomization.yaml:1:"), "{message}");
        assert!(message.contains("kustomize build"), "{message}");
    }

    #[test]
    fn missing_or_empty_api_version_and_kind() {
        let text = "---\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: \"\"\nkind: Secret\n\
                    metadata: {name: b}\n---\napiVersion: v1\nmetadata: {name: c}\n---\n\
                    apiVersion: v1\nkind: 7\nmetadata: {name: d}\n";
        let found = problems(text);
        assert_eq!(
            found,
            [
                "m.yaml:2: ConfigMap/a: apiVersion is missing; set apiVersion, e.g. `apiVersion: \
                 v1` or `apiVersion: apps/v1`",
                "m.yaml:5: Secret/b: apiVersion is empty; set apiVersion, e.g. `apiVersion: v1` \
                 or `apiVersion: apps/v1`",
                "m.yaml:9: kind is missing; set kind, e.g. `kind: Deployment`",
                "m.yaml:12: kind is a number (7); it must be a string: set kind, e.g. \
                 `kind: Deployment`",
            ]
        );
    }

    #[test]
    fn api_version_with_more_than_one_slash_is_refused() {
        let text = "apiVersion: apps/v1/beta\nkind: Deployment\nmetadata: {name: web}\n";
        assert_eq!(
            problems(text),
            [
                "m.yaml:1: Deployment/web: unexpected apiVersion \"apps/v1/beta\": write VERSION \
              (`v1`) or GROUP/VERSION (`apps/v1`)"
            ]
        );
        let manifests = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n");
        assert_eq!(
            (manifests[0].group(), manifests[0].version()),
            ("apps", "v1")
        );
    }

    #[test]
    fn missing_name_and_non_string_metadata() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels: {}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 5\n  namespace: [a]\n---\n\
                    apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: ConfigMap\n\
                    metadata: text\n";
        let found = problems(text);
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("m.yaml:1: Deployment.apps: metadata.name is missing;"));
        assert_eq!(
            found[1],
            "m.yaml:6: ConfigMap: metadata.name is a number (5); it must be a string, quote it"
        );
        assert_eq!(
            found[2],
            "m.yaml:6: ConfigMap: metadata.namespace is a list; it must be a string, quote it"
        );
        assert!(found[3].starts_with("m.yaml:12: ConfigMap: metadata.name is missing;"));
        assert!(found[4].starts_with("m.yaml:15: ConfigMap: metadata is a string (\"text\")"));
    }

    #[test]
    fn non_string_key_names_the_document_line_and_path() {
        let found = problems(&format!("{CM}a\n---\n{CM}b\ndata:\n  list:\n  - 1: x\n"));
        assert_eq!(
            found,
            ["m.yaml:6: at data.list[0]: the map key 1 is not a string; quote it"]
        );
    }

    #[test]
    fn unsupported_yaml_values_are_refused() {
        let found = problems(&format!("{CM}a\ndata:\n  x: .nan\n  y: !custom z\n"));
        assert_eq!(found.len(), 1, "the first unconvertible value is reported");
        assert!(
            found[0].starts_with("m.yaml:1: at data.x: .nan cannot be represented"),
            "{found:?}"
        );
        let found = problems(&format!("{CM}a\ndata:\n  y: !custom z\n"));
        assert_eq!(
            found,
            ["m.yaml:1: at data.y: the YAML tag !custom is not supported; remove it"]
        );
    }

    #[test]
    fn list_with_bad_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- 3\n- apiVersion: v1\n  kind: ConfigMap\n";
        let found = problems(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("m.yaml:4: item 0 of the List is a number (3), not a"));
        assert!(found[1].starts_with("m.yaml:5: ConfigMap: metadata.name is missing"));
    }

    #[test]
    fn duplicates_name_both_places() {
        let text = format!(
            "{CM}a\n---\n{CM}a\n  namespace: x\n---\napiVersion: v1beta1\nkind: ConfigMap\n\
             metadata:\n  name: a\n"
        );
        let found = problems(&text);
        assert_eq!(
            found,
            [
                "m.yaml:12: ConfigMap/a: duplicate object, also defined at m.yaml:1; keep only one \
              of them"
            ]
        );
    }

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

    #[test]
    fn shifting_parser_line_numbers() {
        let message = "did not find expected key at line 2 column 3, while parsing a block \
                       mapping at line 1 column 1";
        assert_eq!(
            shift_line_numbers(message, 10),
            "did not find expected key at line 12 column 3, while parsing a block mapping at \
             line 11 column 1"
        );
    }

    // -- loading from the file system

    fn write(dir: &Path, relative: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn cm(name: &str) -> String {
        format!("{CM}{name}\n")
    }

    #[test]
    fn directory_walk_is_sorted_and_skips_hidden_and_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "b.yml", cm("b"));
        write(
            dir,
            "a/z.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"z"}}"#,
        );
        write(dir, "a/y.YAML", cm("y"));
        write(dir, "c.yaml", format!("{}---\n{}", cm("c1"), cm("c2")));
        write(dir, ".hidden/h.yaml", cm("hidden"));
        write(dir, "..data/d.yaml", cm("data"));
        write(dir, ".dot.yaml", cm("dot"));
        write(dir, "notes.txt", "not: a manifest");
        write(dir, "kustomize/README.md", "# not yaml");
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["y", "z", "b", "c1", "c2"]);
        assert_eq!(manifests[0].origin.file, dir.join("a/y.YAML"));
        assert_eq!(manifests[4].origin.line, 6);
    }

    /// A ConfigMap volume: `x.yaml -> ..data/x.yaml`, `..data -> ..2024_01_01…`.
    #[cfg(unix)]
    #[test]
    fn configmap_mount_symlinks_are_followed_once() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        write(dir, "..2024_01_01/x.yaml", cm("x"));
        symlink("..2024_01_01", dir.join("..data")).unwrap();
        symlink("..data/x.yaml", dir.join("x.yaml")).unwrap();
        symlink(".", dir.join("loop")).unwrap();
        let manifests = load(&[dir.to_path_buf()]).unwrap();
        assert_eq!(names(&manifests), ["x"]);
        assert_eq!(manifests[0].origin.file, dir.join("x.yaml"));
    }

    #[test]
    fn explicit_file_of_any_extension_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let txt = write(tmp.path(), "objects.txt", cm("t"));
        let hidden = write(tmp.path(), ".hidden.yaml", cm("h"));
        let manifests = load(&[txt, hidden]).unwrap();
        assert_eq!(names(&manifests), ["t", "h"]);
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = write(tmp.path(), "a.yaml", cm("a"));
        let manifests = load(&[tmp.path().to_path_buf(), file]).unwrap();
        assert_eq!(names(&manifests), ["a"]);
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let missing = PathBuf::from("no/such/manifests");
        let err = load(&[missing]).unwrap_err();
        assert!(matches!(err, ManifestError::Io { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read no/such/manifests: "),
            "{err}"
        );
    }

    #[test]
    fn errors_across_files_are_all_collected() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(
            tmp.path(),
            "a.yaml",
            format!("{}---\nkind: Secret\n", cm("x")),
        );
        let b = write(tmp.path(), "b.yaml", "apiVersion: v1\nkind: [\n");
        let c = write(tmp.path(), "c.yaml", format!("# c\n{}", cm("x")));
        write(tmp.path(), "d.yaml", [0x61, 0x0a, 0xff, 0x0a]);
        let err = load(&[tmp.path().to_path_buf()]).unwrap_err();
        let found: Vec<String> = err.problems().iter().map(Problem::to_string).collect();
        assert_eq!(found.len(), 5, "{err}");
        let (a, b, c) = (a.display(), b.display(), c.display());
        assert!(found[0].starts_with(&format!("{a}:6: Secret: apiVersion is missing")));
        assert!(found[1].starts_with(&format!("{a}:6: Secret: metadata.name is missing")));
        assert!(
            found[2].starts_with(&format!("{b}:3: invalid YAML: ")),
            "{err}"
        );
        assert!(found[3].ends_with("d.yaml:2: the file is not valid UTF-8; save it as UTF-8"));
        assert_eq!(
            found[4],
            format!(
                "{c}:2: ConfigMap/x: duplicate object, also defined at {a}:1; keep only one of them"
            )
        );
        assert_eq!(err.to_string().lines().count(), 5, "one problem per line");
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
