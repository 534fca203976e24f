//! libyaml's events → a node tree, as go-yaml v2's parser builds it: one document,
//! anchors known from the node that carries them on.
//!
//! Nesting is bounded while the events arrive: libyaml's scanner spends time
//! proportional to the flow nesting depth on every token, so 100 000 `[` would take
//! minutes; stopping at the limit reads only the first kilobyte of them.
//!
//! Where libyaml has changed since go-yaml's port, the difference is undone here:
//! libyaml now refuses `\'` in double quotes and a `:` before a flow indicator in a
//! plain scalar (`{a:}`), which go-yaml reads (`'`, and the key `a:`), so the text
//! is repaired where libyaml stopped and parsed again; libyaml now keeps `?` inside a
//! plain scalar in `[…]`/`{…}`, where go-yaml ends the scalar and then fails, so
//! such a scalar is refused.

use super::DecodeError;
use super::events::{self, Event, Mark, Parser, SyntaxError};
use std::borrow::Cow;
use std::collections::HashMap;

pub(super) struct Node {
    /// 0-based line of the text.
    pub line: usize,
    pub kind: Kind,
}

pub(super) enum Kind {
    Scalar(events::Scalar),
    Sequence(Vec<usize>),
    /// Keys and values, alternating.
    Mapping(Vec<usize>),
    Alias {
        name: String,
        target: usize,
    },
}

/// The nodes of the first document of a text (`root` is `None` for no document).
pub(super) struct Tree {
    pub nodes: Vec<Node>,
    pub root: Option<usize>,
}

/// Stands for a `:` that libyaml refuses in a plain scalar and go-yaml keeps: a
/// noncharacter, which no manifest contains (a text that does is not repaired).
const COLON_STAND_IN: char = '\u{FDD0}';

/// Repairs are bounded: each parses the whole text again.
const MAX_REPAIRS: usize = 64;
const REPAIR_BUDGET_BYTES: usize = 64 << 20;

impl Tree {
    /// Parses the first document of `text`; the rest is not read.
    pub(super) fn parse(text: &str, max_depth: usize) -> Result<Tree, DecodeError> {
        let mut source = Cow::Borrowed(text);
        let mut repairs = 0;
        let stand_in_free = !text.contains(COLON_STAND_IN);
        loop {
            let error = match Tree::parse_once(&source, max_depth) {
                Err(DecodeError::Syntax(error)) => error,
                Ok(tree) if repairs > 0 => return Ok(tree.without_stand_ins()),
                other => return other,
            };
            let affordable = repairs < MAX_REPAIRS && repairs * text.len() < REPAIR_BUDGET_BYTES;
            match repair(&source, &error, stand_in_free).filter(|_| affordable) {
                Some(repaired) => source = Cow::Owned(repaired),
                None => return Err(DecodeError::Syntax(error)),
            }
            repairs += 1;
        }
    }

    fn parse_once(text: &str, max_depth: usize) -> Result<Tree, DecodeError> {
        let mut parser = Parser::new(text);
        let mut next = || parser.next_event().map_err(DecodeError::Syntax);
        let mut tree = Tree {
            nodes: Vec::new(),
            root: None,
        };
        next()?; // StreamStart
        if matches!(next()?.0, Event::StreamEnd) {
            return Ok(tree);
        }
        tree.build(&mut next, max_depth)?;
        next()?; // DocumentEnd, as go-yaml's parser expects it
        Ok(tree)
    }

    /// Reads the document's events into nodes until its root is complete.
    fn build(
        &mut self,
        next: &mut impl FnMut() -> Result<(Event, Mark), DecodeError>,
        max_depth: usize,
    ) -> Result<(), DecodeError> {
        let mut anchors: HashMap<String, usize> = HashMap::new();
        let mut open: Vec<Open> = Vec::new();
        loop {
            let (event, mark) = next()?;
            let (kind, anchor, flow) = match event {
                Event::Scalar(scalar) => {
                    check_flow_scalar(&scalar, mark, open.last())?;
                    let anchor = scalar.properties.anchor.clone();
                    (Kind::Scalar(scalar), anchor, None)
                }
                Event::Alias(name) => {
                    let target = *anchors.get(&name).ok_or_else(|| {
                        let message = format!("unknown anchor '{name}' referenced (*{name})");
                        DecodeError::at(mark.line, message)
                    })?;
                    (Kind::Alias { name, target }, None, None)
                }
                Event::SequenceStart(_) | Event::MappingStart(_) if open.len() >= max_depth => {
                    return Err(too_deep(mark.line, max_depth));
                }
                Event::SequenceStart(c) => (
                    Kind::Sequence(Vec::new()),
                    c.properties.anchor,
                    Some(c.flow),
                ),
                Event::MappingStart(c) => {
                    (Kind::Mapping(Vec::new()), c.properties.anchor, Some(c.flow))
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    open.pop();
                    if open.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                Event::StreamStart
                | Event::StreamEnd
                | Event::DocumentStart
                | Event::DocumentEnd => {
                    continue;
                }
            };
            let id = self.add(
                Node {
                    line: mark.line,
                    kind,
                },
                open.last(),
            );
            if let Some(anchor) = anchor {
                anchors.insert(anchor, id);
            }
            match flow {
                Some(flow) => open.push(Open { id, flow, mark }),
                None if open.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    fn add(&mut self, node: Node, parent: Option<&Open>) -> usize {
        let id = self.nodes.len();
        self.nodes.push(node);
        match parent {
            Some(parent) => match &mut self.nodes[parent.id].kind {
                Kind::Sequence(children) | Kind::Mapping(children) => children.push(id),
                Kind::Scalar(_) | Kind::Alias { .. } => {}
            },
            None => self.root = Some(id),
        }
        id
    }

    fn without_stand_ins(mut self) -> Tree {
        for node in &mut self.nodes {
            if let Kind::Scalar(scalar) = &mut node.kind {
                if scalar.value.contains(COLON_STAND_IN) {
                    scalar.value = scalar.value.replace(COLON_STAND_IN, ":");
                }
            }
        }
        self
    }
}

/// A collection whose events are still arriving.
struct Open {
    id: usize,
    flow: bool,
    mark: Mark,
}

/// A `?` inside a plain scalar in a flow collection ends the scalar for go-yaml,
/// whose parser then finds a key indicator where it expects `,`: an error.
fn check_flow_scalar(
    scalar: &events::Scalar,
    mark: Mark,
    parent: Option<&Open>,
) -> Result<(), DecodeError> {
    let Some(parent) = parent.filter(|p| p.flow) else {
        return Ok(());
    };
    if !scalar.plain || !scalar.value.contains('?') {
        return Ok(());
    }
    let problem = "did not find expected ',' (kubectl ends a plain value at `?` inside `[]` \
                   and `{}`: quote the value)";
    Err(DecodeError::Syntax(SyntaxError {
        problem: problem.into(),
        mark,
        context: Some(("while parsing a flow collection".into(), parent.mark)),
    }))
}

/// The text rewritten so that libyaml reads what stopped it the way go-yaml does:
/// `\'` as `\x27`, a `:` before a flow indicator as a stand-in restored afterwards.
fn repair(text: &str, error: &SyntaxError, stand_in_free: bool) -> Option<String> {
    let at = error.mark.index;
    let rest = text.get(at..)?;
    let (len, replacement) = match error.problem.as_str() {
        "found unknown escape character" if rest.starts_with("\\'") => (2, "\\x27".to_string()),
        "found unexpected ':'" if rest.starts_with(':') && stand_in_free => {
            (1, COLON_STAND_IN.to_string())
        }
        _ => return None,
    };
    Some(format!("{}{replacement}{}", &text[..at], &rest[len..]))
}

pub(super) fn too_deep(line: usize, max_depth: usize) -> DecodeError {
    DecodeError::at(
        line,
        format!(
            "the document nests more than {max_depth} levels deep, which converge refuses \
             (such input is costly to parse and deeper than converge can process); \
             flatten the data, or keep it as a string (e.g. a JSON text in a ConfigMap)"
        ),
    )
}
