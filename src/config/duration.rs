//! The duration syntax `config.toml` and the command line share.

use std::time::Duration;

/// A duration that cannot be read, with how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; write a number and a unit, e.g. \"30s\", \"1m30s\", \"2h\" or \"5 minutes\"")]
pub struct InvalidDuration {
    reason: String,
}

/// Parses a duration the way both `config.toml` (`interval`) and the command line
/// (`--timeout`) read it: humantime's syntax (`"30s"`, `"1m30s"`, `"500ms"`,
/// `"5 minutes"`, `"1.5h"`), surrounding blanks ignored; negative durations refused.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    use humantime::DurationError as E;
    let text = text.trim();
    let reason = if text.is_empty() {
        "empty".to_string()
    } else if text.starts_with('-') {
        "negative durations are not allowed".to_string()
    } else {
        match humantime::parse_duration(text) {
            Ok(duration) => return Ok(duration),
            Err(E::UnknownUnit { unit, value, .. }) if unit.is_empty() => {
                format!("\"{value}\" has no unit")
            }
            Err(E::UnknownUnit { unit, .. }) => format!("unknown unit {unit:?}"),
            Err(E::NumberOverflow) => "too long or too precise".to_string(),
            Err(E::Empty | E::InvalidCharacter(_) | E::NumberExpected(_)) => {
                "not a duration".to_string()
            }
        }
    };
    Err(InvalidDuration { reason })
}
