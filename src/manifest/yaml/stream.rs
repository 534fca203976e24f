//! A file cut into documents the way kubectl cuts it
//! (k8s.io/apimachinery's `YAMLOrJSONDecoder`): a stream whose first character is
//! `{` is read as JSON values for as long as that works (falling back to YAML
//! after at most one); YAML is cut at lines that start with `---`, and only the
//! first document of each piece is read (so whatever follows a `...` line is
//! ignored up to the next `---`).

use super::resolve;
use super::tree::too_deep;
use serde_json::Value;

/// One piece of a file, located by 0-based file lines.
#[derive(Debug, PartialEq)]
pub(in crate::manifest) enum Piece {
    /// YAML text between `---` lines (CRLF turned into LF, as kubectl reads lines).
    Yaml { text: String, first_line: usize },
    /// A JSON value, numbers as the API server reads them.
    Json { value: Value, line: usize },
    /// kubectl stops reading the file here with an error.
    Invalid { line: usize, message: String },
}

/// The pieces of a file's text; JSON values nested deeper than `max_depth` are
/// refused as YAML documents are.
pub(in crate::manifest) fn split(text: &str, max_depth: usize) -> Vec<Piece> {
    if text.trim_start().starts_with('{') {
        json_then_yaml(text, max_depth)
    } else {
        yaml_pieces(text, 0)
    }
}

fn json_then_yaml(text: &str, max_depth: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut consumed = 0;
    loop {
        let start = consumed + (text[consumed..].len() - text[consumed..].trim_start().len());
        match values.next() {
            None => return pieces,
            Some(Ok(value)) => {
                let line = line_of(text, start);
                pieces.push(json_piece(value, line, max_depth));
                consumed = values.byte_offset();
            }
            // More than one JSON value: unambiguously JSON, so kubectl stops.
            Some(Err(err)) if pieces.len() > 1 => {
                let message = format!("invalid JSON: {err}");
                let line = err.line().saturating_sub(1);
                pieces.push(Piece::Invalid { line, message });
                return pieces;
            }
            Some(Err(_)) => break,
        }
    }
    // Not JSON (after at most one value): the rest is YAML, from past the
    // whitespace that ends the JSON's line.
    let rest = &text[consumed..];
    let blank = rest.len() - rest.trim_start().len();
    let skip = rest[..blank]
        .find('\n')
        .map_or(blank, |newline| newline + 1);
    let from = consumed + skip;
    pieces.extend(yaml_pieces(&text[from..], line_of(text, from)));
    pieces
}

fn json_piece(value: Value, line: usize, max_depth: usize) -> Piece {
    if depth(&value) > max_depth {
        let message = too_deep(0, max_depth).message(0);
        return Piece::Invalid { line, message };
    }
    Piece::Json {
        value: api_server_numbers(value),
        line,
    }
}

/// How deeply arrays and objects nest (serde_json has parsed at most 128 levels).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// kubectl's `YAMLReader`: a line starting with `---` ends a piece (and is kept only
/// when it starts one); anything but a comment after the dashes is an error.
fn yaml_pieces(text: &str, first_line: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut piece_line = first_line;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let number = first_line + index;
        let line = raw
            .strip_suffix('\n')
            .map_or(raw, |l| l.strip_suffix('\r').unwrap_or(l));
        if let Some(after) = line.strip_prefix("---") {
            let after = after.trim();
            if !after.is_empty() && !after.starts_with('#') {
                let message = format!(
                    "invalid document separator `{line}`: kubectl allows only a comment after \
                     `---`; put the content on the next line"
                );
                pieces.push(Piece::Invalid {
                    line: number,
                    message,
                });
                return pieces;
            }
            if !piece.is_empty() {
                let text = std::mem::take(&mut piece);
                pieces.push(Piece::Yaml {
                    text,
                    first_line: piece_line,
                });
                continue;
            }
        }
        if piece.is_empty() {
            piece_line = number;
        }
        piece.push_str(line);
        piece.push('\n');
    }
    if !piece.is_empty() {
        pieces.push(Piece::Yaml {
            text: piece,
            first_line: piece_line,
        });
    }
    pieces
}

/// JSON numbers as kubectl re-encodes them: `1.0` is `1`, integers beyond int64 floats.
fn api_server_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.as_i64().is_none() => n
            .as_f64()
            .and_then(|f| resolve::go_number(f).ok())
            .unwrap_or(Value::Number(n)),
        Value::Array(items) => Value::Array(items.into_iter().map(api_server_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, api_server_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split_default(text: &str) -> Vec<Piece> {
        split(text, 100)
    }

    fn yaml(text: &str, first_line: usize) -> Piece {
        Piece::Yaml {
            text: text.into(),
            first_line,
        }
    }

    #[test]
    fn yaml_is_cut_at_dash_lines() {
        let pieces = split_default("---\na: 1\n--- # two\r\nb: 2\r\n---\n\n");
        assert_eq!(
            pieces,
            [yaml("---\na: 1\n", 0), yaml("b: 2\n", 3), yaml("\n", 5)]
        );
    }

    #[test]
    fn content_after_dashes_is_refused() {
        // kubectl fails before it hands over the piece the separator ends.
        let pieces = split_default("a: 1\n--- !!map\nb: 2\n");
        assert!(matches!(
            pieces.as_slice(),
            [Piece::Invalid { line: 1, .. }]
        ));
        assert!(matches!(
            split_default("a\n----\n").as_slice(),
            [Piece::Invalid { line: 1, .. }]
        ));
    }

    #[test]
    fn json_values_then_yaml() {
        let pieces = split_default("{\"a\": 1.0}\n{\"b\": 12345678901234567890}\n");
        assert_eq!(
            pieces,
            [
                Piece::Json {
                    value: json!({"a": 1}),
                    line: 0
                },
                Piece::Json {
                    value: json!({"b": 1.2345678901234567e19}),
                    line: 1
                },
            ]
        );
        let pieces = split_default("{\"a\": 1}\n---\nb: 0755\n");
        assert_eq!(pieces[1], yaml("---\nb: 0755\n", 1));
        assert_eq!(split_default("{a: 0755}\n"), [yaml("{a: 0755}\n", 0)]);
        let pieces = split_default("{}\n{}\n{bad\n");
        assert!(matches!(&pieces[2], Piece::Invalid { line: 2, .. }));
    }
}
