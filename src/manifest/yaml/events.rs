//! libyaml's event parser behind a safe interface.
//!
//! Why libyaml: go-yaml v2, which kubectl reads YAML with (through sigs.k8s.io/yaml),
//! is a line-by-line port of libyaml's scanner and parser, so the same C library
//! (here transpiled to Rust, and already what yaml_serde parses with) accepts and
//! rejects the same syntax, but for three changes libyaml made after the port: it
//! accepts the escape `\/` (refused here, see [`Parser::next_event`]), refuses the
//! escape `\'` and a `:` before a flow indicator inside a plain scalar (both
//! repaired by [`super::decode`]), and keeps `?` inside plain scalars in flow
//! collections (refused there too). Only the events are taken from it: what a
//! scalar means is decided in [`super::resolve`], the go-yaml v2 way.

use libyaml_rs as sys;
use std::ffi::CStr;
use std::mem::MaybeUninit;

/// A position in the parsed text (0-based, as libyaml counts; `index` in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub index: usize,
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn of(sys: sys::yaml_mark_t) -> Mark {
        Mark {
            index: to_usize(sys.index),
            line: to_usize(sys.line),
            column: to_usize(sys.column),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What the parser reports, with the text's marks.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    Alias(String),
    Scalar(Scalar),
    SequenceStart(Collection),
    SequenceEnd,
    MappingStart(Collection),
    MappingEnd,
}

/// The anchor and tag a node may carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Properties {
    pub anchor: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar {
    pub properties: Properties,
    pub value: String,
    /// Plain and untagged (or tagged `!`): the only scalars whose type is guessed
    /// from their text (libyaml's `plain_implicit`, go-yaml's `implicit`).
    pub implicit: bool,
    /// Written without quotes (tagged or not).
    pub plain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Collection {
    pub properties: Properties,
    /// `[…]` or `{…}` rather than indented lines.
    pub flow: bool,
}

/// A syntax error, located as libyaml located it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub problem: String,
    pub mark: Mark,
    pub context: Option<(String, Mark)>,
}

impl SyntaxError {
    /// `did not find expected key at line 5 column 3, while parsing a block mapping
    /// at line 3 column 1`: 1-based, lines counted from `first_line` (0-based) on.
    pub(crate) fn describe(&self, first_line: usize) -> String {
        let at = |m: Mark| format!("line {} column {}", first_line + m.line + 1, m.column + 1);
        let mut text = format!("{} at {}", self.problem, at(self.mark));
        if let Some((context, mark)) = &self.context {
            text.push_str(", ");
            text.push_str(context);
            if *mark != self.mark {
                text.push_str(" at ");
                text.push_str(&at(*mark));
            }
        }
        text
    }
}

/// Parses `input` event by event. libyaml keeps a pointer to itself and to the
/// input, so the parser lives in a box and borrows the input.
pub(super) struct Parser<'input> {
    sys: Box<sys::yaml_parser_t>,
    input: &'input str,
    failed: bool,
}

impl<'input> Parser<'input> {
    pub(super) fn new(input: &'input str) -> Parser<'input> {
        let mut raw = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        // SAFETY: yaml_parser_initialize fills the whole struct (it zeroes it and
        // allocates its buffers; allocation failure aborts); the boxed parser never
        // moves, and `input` outlives it ('input).
        let sys = unsafe {
            let parser = raw.as_mut_ptr();
            let _ = sys::yaml_parser_initialize(parser);
            sys::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
            Box::from_raw(Box::into_raw(raw).cast::<sys::yaml_parser_t>())
        };
        Parser {
            sys,
            input,
            failed: false,
        }
    }

    /// The next event and where it starts; after an error, the same error again.
    /// A `\/` escape is refused here, as go-yaml v2 refuses it.
    pub(super) fn next_event(&mut self) -> Result<(Event, Mark), SyntaxError> {
        let parser: *mut sys::yaml_parser_t = &raw mut *self.sys;
        let mut event = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new`; a successful
        // yaml_parser_parse initializes the event, which is read and then deleted.
        let (converted, start, end, double_quoted) = unsafe {
            if self.failed || sys::yaml_parser_parse(parser, event.as_mut_ptr()).fail {
                self.failed = true;
                return Err(syntax_error(&*parser, self.input));
            }
            let event = event.as_mut_ptr();
            let converted = convert(&*event);
            let double_quoted = (*event).type_ == sys::YAML_SCALAR_EVENT
                && (*event).data.scalar.style == sys::YAML_DOUBLE_QUOTED_SCALAR_STYLE;
            let marks = (Mark::of((*event).start_mark), Mark::of((*event).end_mark));
            sys::yaml_event_delete(event);
            (converted, marks.0, marks.1, double_quoted)
        };
        if double_quoted {
            if let Some(error) = self.escaped_slash(start, end) {
                self.failed = true;
                return Err(error);
            }
        }
        Ok((converted, start))
    }

    /// `\/` in the double-quoted scalar between `start` and `end`: an unknown escape
    /// for go-yaml v2 (libyaml learnt it later, from YAML 1.2).
    fn escaped_slash(&self, start: Mark, end: Mark) -> Option<SyntaxError> {
        let raw = self.input.as_bytes().get(start.index..end.index)?;
        let mut bytes = raw.iter().enumerate();
        while let Some((at, &byte)) = bytes.next() {
            if byte != b'\\' {
                continue;
            }
            if let Some((_, b'/')) = bytes.next() {
                return Some(SyntaxError {
                    problem: "found unknown escape character".into(),
                    mark: mark_at(self.input, start.index + at),
                    context: Some(("while parsing a quoted scalar".into(), start)),
                });
            }
        }
        None
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` and deleted only here.
        unsafe { sys::yaml_parser_delete(&raw mut *self.sys) }
    }
}

/// # Safety
/// `parser` has failed, so its problem fields are set (or null).
unsafe fn syntax_error(parser: &sys::yaml_parser_t, input: &str) -> SyntaxError {
    // SAFETY: libyaml's problem and context are static C strings or null.
    let (problem, context) = unsafe { (text(parser.problem), text(parser.context)) };
    // The reader (control characters, bad encoding) gives an offset, not a mark.
    let mark = if parser.error == sys::YAML_READER_ERROR {
        mark_at(input, to_usize(parser.problem_offset))
    } else {
        Mark::of(parser.problem_mark)
    };
    SyntaxError {
        problem: problem.unwrap_or_else(|| "the YAML parser failed".into()),
        mark,
        context: context.map(|c| (c, Mark::of(parser.context_mark))),
    }
}

/// The mark of byte `index` of `input`.
fn mark_at(input: &str, index: usize) -> Mark {
    let before = input.get(..index).unwrap_or(input);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    Mark {
        index,
        line: before.matches('\n').count(),
        column: before[line_start..].chars().count(),
    }
}

/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn text<T>(ptr: *const T) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: as promised by the caller.
    let bytes = unsafe { CStr::from_ptr(ptr.cast()) }.to_bytes();
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// # Safety
/// `event` was produced by a successful yaml_parser_parse.
unsafe fn convert(event: &sys::yaml_event_t) -> Event {
    // SAFETY: the union member read is the one the event type says is set; its
    // strings are NUL-terminated or null, its value `length` bytes long.
    unsafe {
        match event.type_ {
            sys::YAML_STREAM_START_EVENT => Event::StreamStart,
            sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
            sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
            sys::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
            sys::YAML_ALIAS_EVENT => {
                Event::Alias(text(event.data.alias.anchor).unwrap_or_default())
            }
            sys::YAML_SCALAR_EVENT => {
                let scalar = &event.data.scalar;
                let value = std::slice::from_raw_parts(scalar.value, to_usize(scalar.length));
                Event::Scalar(Scalar {
                    properties: properties(scalar.anchor, scalar.tag),
                    value: String::from_utf8_lossy(value).into_owned(),
                    implicit: scalar.plain_implicit,
                    plain: scalar.style == sys::YAML_PLAIN_SCALAR_STYLE,
                })
            }
            sys::YAML_SEQUENCE_START_EVENT => {
                let start = &event.data.sequence_start;
                Event::SequenceStart(Collection {
                    properties: properties(start.anchor, start.tag),
                    flow: start.style == sys::YAML_FLOW_SEQUENCE_STYLE,
                })
            }
            sys::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
            sys::YAML_MAPPING_START_EVENT => {
                let start = &event.data.mapping_start;
                Event::MappingStart(Collection {
                    properties: properties(start.anchor, start.tag),
                    flow: start.style == sys::YAML_FLOW_MAPPING_STYLE,
                })
            }
            sys::YAML_MAPPING_END_EVENT => Event::MappingEnd,
            // YAML_NO_EVENT: only after the stream's end.
            _ => Event::StreamEnd,
        }
    }
}

/// # Safety
/// Both are null or NUL-terminated.
unsafe fn properties(anchor: *const u8, tag: *const u8) -> Properties {
    // SAFETY: as promised by the caller.
    unsafe {
        Properties {
            anchor: text(anchor),
            tag: text(tag),
        }
    }
}
