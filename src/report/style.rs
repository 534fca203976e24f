//! Terminal styles (ANSI SGR codes): the one palette of diffs and the status table.
//!
//! Whether to style at all is the caller's decision (`--color`, `NO_COLOR`, a
//! terminal or not): logs and files must stay free of escape codes.

use std::fmt;

/// A style for one piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Bold,
    Red,
    Green,
    Yellow,
    Cyan,
}

const RESET: &str = "\x1b[0m";

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "\x1b[1m",
            Style::Red => "\x1b[31m",
            Style::Green => "\x1b[32m",
            Style::Yellow => "\x1b[33m",
            Style::Cyan => "\x1b[36m",
        }
    }

    /// `text` in this style, reset right after it.
    pub(crate) fn paint(self, text: &str) -> Painted<'_> {
        Painted { style: self, text }
    }
}

/// Text with a style, written with its escape codes around it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Painted<'a> {
    style: Style,
    text: &'a str,
}

impl fmt::Display for Painted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{RESET}", self.style.code(), self.text)
    }
}

/// `text` without any escape codes, for comparing styled output with plain output.
#[cfg(test)]
pub(crate) fn unstyled(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('m')
            .map_or(rest.len(), |m| start + m + 1);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_wraps_text_in_its_code_and_a_reset() {
        assert_eq!(Style::Red.paint("-a").to_string(), "\x1b[31m-a\x1b[0m");
        assert_eq!(Style::Bold.paint("").to_string(), "\x1b[1m\x1b[0m");
        let styled = format!("a {} b", Style::Cyan.paint("c"));
        assert_eq!(unstyled(&styled), "a c b");
    }
}
