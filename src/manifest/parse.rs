//! The text of one file → objects: documents cut out and decoded as kubectl does it
//! (`yaml`), with their file lines, `*List`s flattened, each object validated.

use super::error::problem;
use super::validate::{describe_json, find_duplicates, str_field, validate};
use super::yaml::{self, Piece};
use super::{Limits, Manifest, ManifestError, Problem};
use serde_json::{Map, Value};
use std::path::Path;

/// Manifests and problems gathered so far; problems do not stop the gathering.
#[derive(Default)]
pub(super) struct Parsed {
    pub(super) manifests: Vec<Manifest>,
    pub(super) problems: Vec<Problem>,
    pub(super) limits: Limits,
}

impl Parsed {
    pub(super) fn within(limits: Limits) -> Self {
        Parsed {
            limits,
            ..Parsed::default()
        }
    }

    /// Adds the cross-object checks and turns the result into the public shape.
    pub(super) fn finish(mut self) -> Result<Vec<Manifest>, ManifestError> {
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

/// Parses the text of one file (`file` is only used to locate objects and problems):
/// every YAML document, or the single JSON document, becomes objects; `*List` kinds are
/// flattened; every problem is reported, duplicates within the file included.
pub fn parse_str(text: &str, file: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let mut parsed = Parsed::default();
    parse_into(text, file, &mut parsed);
    parsed.finish()
}

pub(super) fn parse_into(text: &str, file: &Path, out: &mut Parsed) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for piece in yaml::split(text, out.limits.max_depth) {
        match piece {
            Piece::Json { value, line } => {
                let doc = Doc {
                    text: "",
                    offset: line,
                    line: line + 1,
                };
                add_document(value, &doc, file, out);
            }
            Piece::Yaml { text, first_line } => add_yaml(&text, first_line, file, out),
            Piece::Invalid { line, message } => {
                out.problems.push(problem(file, line + 1, None, message));
            }
        }
    }
}

/// One document as kubectl reads it: only the first of the text, an empty one skipped.
fn add_yaml(text: &str, first_line: usize, file: &Path, out: &mut Parsed) {
    match yaml::first_document(text, out.limits.max_depth) {
        Ok(document) if document.value.is_null() => {}
        Ok(document) => {
            let doc = Doc {
                text,
                offset: first_line,
                line: first_line + document.line + 1,
            };
            add_document(document.value, &doc, file, out);
        }
        Err(err) => {
            let line = first_line + err.line() + 1;
            let message = err.message(first_line);
            out.problems.push(problem(file, line, None, message));
        }
    }
}

/// One document of a file, as [`yaml::split`] cut it out.
struct Doc<'a> {
    /// Its YAML text (empty for JSON), to find the lines of a list's items.
    text: &'a str,
    /// Lines of the file before `text`.
    offset: usize,
    /// The 1-based file line the document's content starts on (its origin).
    line: usize,
}

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

/// Whether a line holds YAML content rather than blank space, a comment or a directive.
fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#') && !line.starts_with('%')
}

fn is_sequence_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::*;
    use serde_json::json;

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
    fn separator_lines_as_kubectl_reads_them() {
        let text = format!("--- # comment only\n--- \n{CM}b\n---\t\n{CM}c\n");
        assert_eq!(names(&parse(&text)), ["b", "c"]);
        // kubectl refuses anything but a comment after `---`.
        let found = problems(&format!("{CM}a\n--- {{kind: ConfigMap}}\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("m.yaml:5: invalid document separator `--- {kind: ConfigMap}`"),
            "{found:?}"
        );
    }

    #[test]
    fn document_end_markers() {
        // After `...`, kubectl reads nothing until the next `---`.
        let text = format!("{CM}a\n...\n---\n{CM}b\n...\n{CM}c\n...\n");
        let manifests = parse(&text);
        assert_eq!(names(&manifests), ["a", "b"]);
        assert_eq!(lines(&manifests), [1, 7]);
    }

    #[test]
    fn directives_are_refused_as_kubectl_refuses_them() {
        // kubectl cuts the stream at `---` first, leaving the directive on its own.
        let found = problems(&format!("%YAML 1.1\n---\n{CM}a\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("m.yaml:2: invalid YAML: did not find expected <document start>"),
            "{found:?}"
        );
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
    fn yaml_scalars_convert_to_json_as_for_kubectl() {
        let text = format!(
            "{CM}a\nspec:\n  int: 3\n  neg: -4\n  big: 18446744073709551615\n  float: 1.5\n  \
             bool: true\n  nothing: ~\n  quoted: \"3\"\n  octal: 0o10\n  leading_zero: 0644\n  \
             yes: yes\n  whole: 2.0\n  under: 1_000\n"
        );
        let spec = &parse(&text)[0].body["spec"];
        let expected = json!({"int": 3, "neg": -4, "big": 1.8446744073709552e19, "float": 1.5,
            "bool": true, "nothing": null, "quoted": "3", "octal": 8, "leading_zero": 420,
            "true": true, "whole": 2, "under": 1000});
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
    fn a_repeated_key_replaces_the_earlier_one() {
        let manifests = parse(&format!("{CM}a\n---\n{CM}b\n  name: c\n"));
        assert_eq!(names(&manifests), ["a", "c"], "kubectl keeps the last one");
    }

    #[test]
    fn document_that_is_not_a_mapping() {
        let found = problems(&format!("{CM}a\n---\n- a\n- b\n---\njust text\n"));
        assert_eq!(found.len(), 2);
        assert!(found[0].starts_with("m.yaml:6: the document is a list, not a mapping"));
        assert!(found[1].starts_with("m.yaml:9: the document is a string (\"just text\")"));
    }

    #[test]
    fn keys_become_strings_and_a_null_key_names_its_line_and_path() {
        let manifests = parse(&format!("{CM}a\ndata:\n  1: x\n  on: z\n  y: z\n"));
        assert_eq!(manifests[0].body["data"], json!({"1": "x", "true": "z"}));
        let found = problems(&format!("{CM}a\n---\n{CM}b\ndata:\n  list:\n  - ~: x\n"));
        assert_eq!(
            found,
            ["m.yaml:12: at data.list[0]: a null map key has no JSON form; quote it"]
        );
    }

    #[test]
    fn values_without_json_form_are_refused_and_unknown_tags_ignored() {
        let found = problems(&format!("{CM}a\ndata:\n  x: .nan\n  w: !custom z\n"));
        assert_eq!(
            found,
            ["m.yaml:6: at data.x: .nan cannot be represented in JSON; quote it if it is text"]
        );
        let manifests = parse(&format!("{CM}a\ndata:\n  w: !custom z\n"));
        assert_eq!(manifests[0].body["data"], json!({"w": "z"}));
    }

    #[test]
    fn list_with_bad_items() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- 3\n- apiVersion: v1\n  kind: ConfigMap\n";
        let found = problems(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("m.yaml:4: item 0 of the List is a number (3), not a"));
        assert!(found[1].starts_with("m.yaml:5: ConfigMap: metadata.name is missing"));
    }
}
