//! A node tree decoded as kubectl decodes a document: go-yaml v2's decoder into
//! `interface{}` (aliases expanded, merge keys, a repeated key replacing the earlier
//! one, scalars resolved by [`resolve`]), then sigs.k8s.io/yaml's conversion to JSON
//! (keys become strings). Alias expansion is bounded as go-yaml bounds it (a
//! "billion laughs" document is refused), and so is the nesting aliases can build.

use super::DecodeError;
use super::resolve::{self, MERGE};
use super::tree::{Kind, Node, Tree, too_deep};
use serde_json::{Map, Value};

/// A decoded document: its value (`Null` when empty) and the 0-based line of the
/// text its content starts on.
#[derive(Debug)]
pub(in crate::manifest) struct Document {
    pub value: Value,
    pub line: usize,
}

/// Decodes the first document of `text` and ignores the rest, as go-yaml's
/// `Unmarshal` does (kubectl has already cut the stream at `---` lines).
pub(in crate::manifest) fn first_document(
    text: &str,
    max_depth: usize,
) -> Result<Document, DecodeError> {
    let tree = Tree::parse(text, max_depth)?;
    let Some(root) = tree.root else {
        return Ok(Document {
            value: Value::Null,
            line: 0,
        });
    };
    let value = Decoder::new(&tree.nodes, max_depth).value(root)?;
    Ok(Document {
        value,
        line: tree.nodes[root].line,
    })
}

struct Decoder<'t> {
    nodes: &'t [Node],
    /// Alias nodes being expanded: meeting one again is a cycle.
    expanding: Vec<usize>,
    decode_count: usize,
    alias_count: usize,
    depth: usize,
    max_depth: usize,
}

impl<'t> Decoder<'t> {
    fn new(nodes: &'t [Node], max_depth: usize) -> Self {
        Decoder {
            nodes,
            expanding: Vec::new(),
            decode_count: 0,
            alias_count: 0,
            depth: 0,
            max_depth,
        }
    }

    /// go-yaml's bound on alias expansion: past 100 aliased nodes and 1000 nodes in
    /// all, the share of aliased nodes may not exceed 99% (10% for huge documents).
    fn count(&mut self, id: usize) -> Result<(), DecodeError> {
        self.decode_count += 1;
        if !self.expanding.is_empty() {
            self.alias_count += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let ratio = self.alias_count as f64 / self.decode_count as f64;
        if self.alias_count > 100
            && self.decode_count > 1000
            && ratio > allowed_alias_ratio(self.decode_count)
        {
            let message = "the document expands aliases excessively (a \"billion laughs\"); \
                           write the values out or use fewer aliases";
            return Err(DecodeError::at(self.nodes[id].line, message));
        }
        Ok(())
    }

    fn value(&mut self, id: usize) -> Result<Value, DecodeError> {
        self.count(id)?;
        let node = &self.nodes[id];
        match &node.kind {
            Kind::Scalar(scalar) => scalar_value(scalar).map_err(|m| DecodeError::at(node.line, m)),
            Kind::Alias { target, .. } => {
                let target = *target;
                self.expand(id, |d| d.value(target))
            }
            Kind::Sequence(children) => self.nested(id, |d| {
                let item = |(i, &c): (usize, &usize)| {
                    d.value(c).map_err(|e| e.within(|| format!("[{i}]")))
                };
                children
                    .iter()
                    .enumerate()
                    .map(item)
                    .collect::<Result<_, _>>()
                    .map(Value::Array)
            }),
            Kind::Mapping(_) => self.nested(id, |d| {
                let mut map = Map::new();
                d.fill(id, &mut map)?;
                Ok(Value::Object(map))
            }),
        }
    }

    fn nested<T>(
        &mut self,
        id: usize,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        if self.depth >= self.max_depth {
            return Err(too_deep(self.nodes[id].line, self.max_depth));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// Decodes what alias `id` refers to, refusing an alias inside its own anchor.
    fn expand<T>(
        &mut self,
        id: usize,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        if self.expanding.contains(&id) {
            let name = match &self.nodes[id].kind {
                Kind::Alias { name, .. } => name.as_str(),
                _ => "",
            };
            let message = format!("anchor '{name}' value contains itself");
            return Err(DecodeError::at(self.nodes[id].line, message));
        }
        self.expanding.push(id);
        let result = f(self);
        self.expanding.pop();
        result
    }

    /// A mapping's entries into `out`: merges where `<<` is, later keys replacing
    /// earlier ones (also those a merge brought in).
    fn fill(&mut self, id: usize, out: &mut Map<String, Value>) -> Result<(), DecodeError> {
        let Kind::Mapping(children) = &self.nodes[id].kind else {
            return Ok(());
        };
        for pair in children.chunks(2) {
            let [key, value] = *pair else { continue };
            if self.is_merge(key) {
                self.merge(value, out)
                    .map_err(|e| e.within(|| "<<".into()))?;
                continue;
            }
            let key = self.key(key)?;
            let value = self.value(value).map_err(|e| e.within(|| key.clone()))?;
            out.insert(key, value);
        }
        Ok(())
    }

    /// go-yaml's `isMerge`: a plain `<<`, or one tagged `!!merge`.
    fn is_merge(&self, id: usize) -> bool {
        match &self.nodes[id].kind {
            Kind::Scalar(s) => {
                s.value == "<<" && (s.implicit || s.properties.tag.as_deref() == Some(MERGE))
            }
            _ => false,
        }
    }

    /// `<<: map`, `<<: *alias`, or `<<: [maps…]` where earlier maps win.
    fn merge(&mut self, id: usize, out: &mut Map<String, Value>) -> Result<(), DecodeError> {
        if let Kind::Sequence(children) = &self.nodes[id].kind {
            for &child in children.iter().rev() {
                self.merge_map(child, out)?;
            }
            return Ok(());
        }
        self.merge_map(id, out)
    }

    fn merge_map(&mut self, id: usize, out: &mut Map<String, Value>) -> Result<(), DecodeError> {
        let node = &self.nodes[id];
        match &node.kind {
            Kind::Mapping(_) => {
                self.count(id)?;
                self.nested(id, |d| d.fill(id, out))
            }
            Kind::Alias { target, .. } if matches!(self.nodes[*target].kind, Kind::Mapping(_)) => {
                let target = *target;
                self.count(id)?;
                self.expand(id, |d| d.merge_map(target, out))
            }
            _ => Err(DecodeError::at(
                node.line,
                "map merge requires map or sequence of maps as the value",
            )),
        }
    }

    /// A key as JSON has it: a scalar's text, number or boolean as a string.
    fn key(&mut self, id: usize) -> Result<String, DecodeError> {
        self.count(id)?;
        let node = &self.nodes[id];
        match &node.kind {
            Kind::Scalar(s) => resolve::resolve(s.properties.tag.as_deref(), &s.value, s.implicit)
                .and_then(resolve::key_to_string)
                .map_err(|m| DecodeError::at(node.line, m)),
            Kind::Alias { target, .. } => {
                let target = *target;
                self.expand(id, |d| d.key(target))
            }
            Kind::Sequence(_) | Kind::Mapping(_) => Err(DecodeError::at(
                node.line,
                "invalid map key: a sequence or mapping cannot be a key; quote it",
            )),
        }
    }
}

fn scalar_value(scalar: &super::events::Scalar) -> Result<Value, String> {
    let resolved = resolve::resolve(
        scalar.properties.tag.as_deref(),
        &scalar.value,
        scalar.implicit,
    )?;
    resolve::to_json(resolved)
}

/// go-yaml v2's `allowedAliasRatio`.
fn allowed_alias_ratio(decode_count: usize) -> f64 {
    const LOW: usize = 400_000;
    const HIGH: usize = 4_000_000;
    match decode_count {
        n if n <= LOW => 0.99,
        n if n >= HIGH => 0.10,
        #[allow(clippy::cast_precision_loss)]
        n => 0.99 - 0.89 * ((n - LOW) as f64 / (HIGH - LOW) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(text: &str) -> Value {
        first_document(text, 100).expect("decodes").value
    }

    fn error(text: &str) -> String {
        first_document(text, 100).expect_err("refused").message(0)
    }

    #[test]
    fn merge_keys_as_go_yaml_v2() {
        let text = "b: &b {x: 1, z: 2}\nbefore: {x: 0, <<: *b}\nafter: {<<: *b, x: 0}\n\
                    list: {<<: [{x: 1}, {x: 2, w: 3}]}\nquoted: {\"<<\": 1}\n";
        assert_eq!(
            decode(text),
            json!({"b": {"x": 1, "z": 2}, "before": {"x": 1, "z": 2}, "after": {"x": 0, "z": 2},
                   "list": {"x": 1, "w": 3}, "quoted": {"<<": 1}})
        );
        assert!(error("a: {<<: 1}").contains("map merge requires map"));
    }

    #[test]
    fn anchors_aliases_and_cycles() {
        assert_eq!(
            decode("a: &x 1\nb: *x\nc: &x 2\nd: *x\n"),
            json!({"a":1,"b":1,"c":2,"d":2})
        );
        assert!(error("a: *nope").contains("unknown anchor 'nope'"));
        assert!(error("a: &x [*x]").contains("anchor 'x' value contains itself"));
    }

    #[test]
    fn keys_become_strings() {
        assert_eq!(
            decode("1: a\n0755: b\ny: c\n1.5: d\n"),
            json!({"1": "a", "493": "b", "true": "c", "1.5": "d"})
        );
        assert!(error("~: a").contains("null map key"));
        assert!(error("? [a]\n: b").contains("invalid map key"));
        assert!(error("? {a: 1}\n: b").contains("invalid map key"));
    }

    #[test]
    fn where_libyaml_changed_since_go_yaml_v2_the_old_reading_wins() {
        assert_eq!(
            decode("a: \"it\\'s\"\nb: {c:, d: [e:]}\n"),
            json!({"a": "it's", "b": {"c:": null, "d": ["e:"]}})
        );
        let slash = error("a: 1\nb: \"x\\/y\"\n");
        assert!(
            slash.contains("found unknown escape character at line 2 column 6"),
            "{slash}"
        );
        let question = error("a: [http://x?y=1]\n");
        assert!(question.contains("did not find expected ','"), "{question}");
        assert_eq!(decode("a: http://x?y=1\n"), json!({"a": "http://x?y=1"}));
    }

    #[test]
    fn only_the_first_document_is_read() {
        assert_eq!(decode("a: 1\n...\nb: 2\n"), json!({"a": 1}));
        assert_eq!(decode("a: 1\n...\nb: [\n"), json!({"a": 1}));
        assert_eq!(decode("# just a comment\n"), Value::Null);
        assert_eq!(decode(""), Value::Null);
    }

    #[test]
    fn errors_carry_the_path_and_line() {
        let err = first_document("a:\n  b: [1, .inf]\n", 100).expect_err("refused");
        assert_eq!(err.line(), 1);
        let message = err.message(0);
        assert!(message.starts_with("at a.b[1]: an infinity"), "{message}");
    }

    #[test]
    fn deep_nesting_is_refused_early() {
        let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = first_document(&deep, 100).expect_err("too deep");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let message = err.message(0);
        assert!(message.contains("more than 100 levels"), "{message}");
        let nested = format!("a: {}1{}", "[".repeat(99), "]".repeat(99));
        assert!(first_document(&nested, 100).is_ok());
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        assert!(error(&text).contains("aliases excessively"));
    }

    #[test]
    fn aliases_nest_within_the_depth_limit() {
        let mut text = String::from("a0: &a0 [1]\n");
        for i in 1..300 {
            text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        assert!(error(&text).contains("more than 100 levels"));
    }
}
