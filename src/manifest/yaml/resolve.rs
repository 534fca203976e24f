//! What a scalar means, decided as kubectl decides it: go-yaml v2's `resolve`
//! (YAML 1.1: `0755` is octal, `yes`/`on`/`y` are true, `1_000` is 1000), then
//! sigs.k8s.io/yaml's conversion to JSON (keys become strings), then the API
//! machinery's reading of JSON numbers (an integer if it fits int64, else a float).
//!
//! Each step follows the Go code it mirrors, down to the `strconv` calls, because
//! the point is to agree with kubectl on every manifest, not to be YAML-correct.

use base64::Engine as _;
use serde_json::{Number, Value};

/// The tags go-yaml v2 knows, in the long form libyaml reports them in.
const STR: &str = "tag:yaml.org,2002:str";
const INT: &str = "tag:yaml.org,2002:int";
const FLOAT: &str = "tag:yaml.org,2002:float";
const BOOL: &str = "tag:yaml.org,2002:bool";
const NULL: &str = "tag:yaml.org,2002:null";
const TIMESTAMP: &str = "tag:yaml.org,2002:timestamp";
const BINARY: &str = "tag:yaml.org,2002:binary";
pub(super) const MERGE: &str = "tag:yaml.org,2002:merge";

/// A scalar's value as go-yaml v2 decodes it into `interface{}`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// Only beyond int64 (smaller ones are `Int`).
    Uint(u64),
    Float(f64),
    /// Strings, and timestamps (kept as written) and `!!binary` (decoded).
    Str(String),
}

/// Resolves a scalar. `implicit`: plain and untagged (or tagged `!`); other
/// untagged scalars (quoted, block) are strings. Errors say what does not fit a tag.
pub(super) fn resolve(tag: Option<&str>, value: &str, implicit: bool) -> Result<Scalar, String> {
    let tag = tag.unwrap_or_default();
    if tag.is_empty() && !implicit {
        return Ok(Scalar::Str(value.to_string()));
    }
    match tag {
        "" | STR | INT | FLOAT | BOOL | NULL | TIMESTAMP => {}
        BINARY => return decode_binary(value),
        // Any other tag is ignored: the scalar is its text.
        _ => return Ok(Scalar::Str(value.to_string())),
    }
    let (found, resolved) = if tag == STR {
        (STR, Scalar::Str(value.to_string()))
    } else {
        guess(tag, value)
    };
    match (tag, found, resolved) {
        (t, f, resolved) if t.is_empty() || t == f => Ok(resolved),
        (FLOAT, INT, Scalar::Int(i)) => Ok(Scalar::Float(i as f64)),
        (_, found, _) => Err(format!(
            "cannot decode {} `{value}` as a {}",
            short(found),
            short(tag)
        )),
    }
}

/// `!!int` for `tag:yaml.org,2002:int`.
fn short(tag: &str) -> String {
    tag.strip_prefix("tag:yaml.org,2002:")
        .map_or_else(|| tag.to_string(), |t| format!("!!{t}"))
}

fn decode_binary(value: &str) -> Result<Scalar, String> {
    // Go's StdEncoding: padded, line breaks ignored, stray trailing bits allowed.
    let config = base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true);
    let engine = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let text: String = value
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let bytes = engine
        .decode(text)
        .map_err(|_| "!!binary value contains invalid base64 data".to_string())?;
    Ok(Scalar::Str(String::from_utf8_lossy(&bytes).into_owned()))
}

/// go-yaml v2's guess from the text: the tag found and the value.
fn guess(tag: &str, value: &str) -> (&'static str, Scalar) {
    if let Some(known) = known_word(value) {
        return known;
    }
    let resolved = match value.as_bytes().first() {
        Some(b'.') => parse_float(value).map(|f| (FLOAT, Scalar::Float(f))),
        Some(b'0'..=b'9' | b'+' | b'-') => number(tag, value),
        _ => None,
    };
    resolved.unwrap_or_else(|| (STR, Scalar::Str(value.to_string())))
}

/// The words go-yaml v2 looks up before anything else (its `resolveMap`).
fn known_word(value: &str) -> Option<(&'static str, Scalar)> {
    let inf = f64::INFINITY;
    Some(match value {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            (BOOL, Scalar::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            (BOOL, Scalar::Bool(false))
        }
        "" | "~" | "null" | "Null" | "NULL" => (NULL, Scalar::Null),
        ".nan" | ".NaN" | ".NAN" => (FLOAT, Scalar::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => (FLOAT, Scalar::Float(inf)),
        "-.inf" | "-.Inf" | "-.INF" => (FLOAT, Scalar::Float(-inf)),
        _ => return None,
    })
}

/// A scalar starting with a digit or a sign: a timestamp (kept as text), an
/// integer in any Go base, or a float, in go-yaml v2's order.
fn number(tag: &str, value: &str) -> Option<(&'static str, Scalar)> {
    if (tag.is_empty() || tag == TIMESTAMP) && is_timestamp(value) {
        return Some((TIMESTAMP, Scalar::Str(value.to_string())));
    }
    let plain = value.replace('_', "");
    if let Some(i) = parse_int(&plain) {
        return Some((INT, Scalar::Int(i)));
    }
    if let Some(u) = parse_uint(&plain) {
        return Some((INT, Scalar::Uint(u)));
    }
    if is_yaml_style_float(&plain) {
        if let Some(f) = parse_float(&plain) {
            return Some((FLOAT, Scalar::Float(f)));
        }
    }
    binary_fallback(&plain)
}

/// go-yaml v2's own 0b parsing, after Go's (only reached for out-of-range values).
fn binary_fallback(plain: &str) -> Option<(&'static str, Scalar)> {
    if let Some(digits) = plain.strip_prefix("0b") {
        if let Ok(i) = i64::from_str_radix(digits, 2) {
            return Some((INT, Scalar::Int(i)));
        }
        if let Ok(u) = u64::from_str_radix(digits, 2) {
            return Some((INT, Scalar::Uint(u)));
        }
    } else if let Some(digits) = plain.strip_prefix("-0b") {
        if let Ok(i) = i64::from_str_radix(&format!("-{digits}"), 2) {
            return Some((INT, Scalar::Int(i)));
        }
    }
    None
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then as [`parse_uint`].
fn parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: `0x`, `0o`, `0b` prefixes (either case), a
/// leading `0` for octal, else decimal; no sign.
fn parse_uint(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let (radix, digits) = match bytes {
        [] => return None,
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'x') => (16, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'o') => (8, &s[2..]),
        [b'0', p, _, ..] if p.eq_ignore_ascii_case(&b'b') => (2, &s[2..]),
        [b'0'] => return Some(0),
        [b'0', ..] => (8, &s[1..]),
        _ => (10, s),
    };
    // from_str_radix would accept a sign; Go does not here.
    let valid = digits.chars().all(|c| c.is_digit(radix));
    valid
        .then(|| u64::from_str_radix(digits, radix).ok())
        .flatten()
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms that reach it: out of
/// range (infinite) is an error there.
fn parse_float(s: &str) -> Option<f64> {
    let decimal = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let f: f64 = s.parse().ok().filter(|_| decimal)?;
    f.is_finite().then_some(f)
}

/// go-yaml v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// go-yaml v2's timestamp formats: `2006-1-2`, and with a time
/// (`T`/`t` and a zone, or a space and none).
fn is_timestamp(s: &str) -> bool {
    let Some((date, time)) = split_date(s) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    match time {
        None => true,
        Some((' ', rest)) => is_clock(rest),
        Some((_, rest)) => {
            let at = rest.rfind(['Z', '+', '-']).unwrap_or(rest.len());
            let (clock, zone) = rest.split_at(at);
            is_clock(clock) && is_zone(zone)
        }
    }
}

fn split_date(s: &str) -> Option<(&str, Option<(char, &str)>)> {
    // `get`, not indexing: byte 4 may fall inside a character ("0🌀").
    let (Some(year), Some("-")) = (s.get(..4), s.get(4..5)) else {
        return None;
    };
    if !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.find(['T', 't', ' ']) {
        Some(at) => {
            let separator = s[at..].chars().next()?;
            Some((&s[..at], Some((separator, &s[at + 1..]))))
        }
        None => Some((s, None)),
    }
}

fn is_date(date: &str) -> bool {
    let parts: Vec<&str> = date.split('-').collect();
    let number = |t: &str, max: u32| {
        (1..=2).contains(&t.len()) && t.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n))
    };
    matches!(parts.as_slice(), [_, m, d] if number(m, 12) && number(d, 31))
}

fn is_clock(clock: &str) -> bool {
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    let field =
        |t: &str, max: u32| (1..=2).contains(&t.len()) && t.parse::<u32>().is_ok_and(|n| n <= max);
    let fraction_ok =
        (1..=9).contains(&fraction.len()) && fraction.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), [h, m, s] if field(h, 23) && field(m, 59) && field(s, 59))
        && fraction_ok
}

fn is_zone(zone: &str) -> bool {
    zone == "Z"
        || zone.len() == 6
            && zone.starts_with(['+', '-'])
            && zone.as_bytes()[3] == b':'
            && zone[1..3]
                .bytes()
                .chain(zone[4..].bytes())
                .all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------
// To JSON

/// A scalar value as JSON, as the API server receives it from kubectl.
pub(super) fn to_json(scalar: Scalar) -> Result<Value, String> {
    Ok(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(b),
        Scalar::Int(i) => Value::from(i),
        Scalar::Uint(u) => go_number(u as f64)?,
        Scalar::Float(f) => go_number(f)?,
        Scalar::Str(s) => Value::String(s),
    })
}

/// A float as Go's encoding/json writes it and the API machinery reads it back:
/// integral values below 1e21 are written without a fraction (their shortest
/// digits, then zeros), and that text is read as an integer when it fits int64
/// (`1.0` reaches the server as `1`, `-0.0` as `0`, but `-2^63` written as a float
/// is `-9223372036854776000`, which does not fit).
pub(super) fn go_number(f: f64) -> Result<Value, String> {
    if !f.is_finite() {
        let text = if f.is_nan() { ".nan" } else { "an infinity" };
        return Err(format!(
            "{text} cannot be represented in JSON; quote it if it is text"
        ));
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if let Some(i) = go_integer_text(f).and_then(|i| i64::try_from(i).ok()) {
            return Ok(Value::from(i));
        }
    }
    Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
}

/// The integer Go writes for an integral float below 1e21: its shortest round-trip
/// digits (which Rust's `{:e}` gives too) followed by zeros.
fn go_integer_text(f: f64) -> Option<i128> {
    let shortest = format!("{f:e}");
    let (mantissa, exponent) = shortest.split_once('e')?;
    let exponent: u32 = exponent.parse().ok()?;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let scale = exponent.checked_sub(u32::try_from(digits.len()).ok()? - 1)?;
    let magnitude = digits.parse::<i128>().ok()? * 10i128.checked_pow(scale)?;
    Some(if f < 0.0 { -magnitude } else { magnitude })
}

/// A mapping key as sigs.k8s.io/yaml turns it into a JSON key: numbers and booleans
/// become their text (floats at float32 precision, as go-yaml prints them).
pub(super) fn key_to_string(key: Scalar) -> Result<String, String> {
    match key {
        Scalar::Str(s) => Ok(s),
        Scalar::Int(i) => Ok(i.to_string()),
        Scalar::Bool(b) => Ok(b.to_string()),
        Scalar::Float(f) => Ok(go_float32_key(f)),
        Scalar::Null => Err("a null map key has no JSON form; quote it".into()),
        Scalar::Uint(u) => Err(format!("the map key {u} is beyond int64; quote it")),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, with go-yaml's names for the
/// non-finite values.
fn go_float32_key(f: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let single = f as f32;
    if single.is_nan() {
        return ".nan".into();
    }
    if single.is_infinite() {
        return if single > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    if single == 0.0 {
        return if single.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e[-]x`.
    let shortest = format!("{single:e}");
    let (mantissa, exponent) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    // Go switches to %e below 1e-4 and, for the shortest form, from 1e6.
    if !(-4..6).contains(&exponent) {
        return format_e(sign, &digits, exponent);
    }
    format_f(sign, &digits, exponent)
}

/// `%e` with the shortest digits: `1.5e+06`, `1e-05`.
fn format_e(sign: &str, digits: &str, exponent: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let dot = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs())
}

/// `%f` with just the digits needed.
fn format_f(sign: &str, digits: &str, exponent: i32) -> String {
    let point = exponent + 1;
    let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if point <= 0 {
        let zeros = "0".repeat(usize::try_from(-point).unwrap_or(0));
        format!("{sign}0.{zeros}{digits}")
    } else if point >= len {
        let zeros = "0".repeat(usize::try_from(point - len).unwrap_or(0));
        format!("{sign}{digits}{zeros}")
    } else {
        let (whole, fraction) = digits.split_at(usize::try_from(point).unwrap_or(0));
        format!("{sign}{whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(value: &str) -> Scalar {
        resolve(None, value, true).expect("resolves")
    }

    #[test]
    fn a_character_across_byte_four_is_a_string() {
        // Found by tests/it/hostile.rs: slicing at byte 4 panicked.
        assert_eq!(plain("0🌀"), Scalar::Str("0🌀".into()));
        assert_eq!(plain("201é-1-2"), Scalar::Str("201é-1-2".into()));
    }

    #[test]
    fn integers_in_every_go_base() {
        assert_eq!(plain("0755"), Scalar::Int(493));
        assert_eq!(plain("0o755"), Scalar::Int(493));
        assert_eq!(plain("0O17"), Scalar::Int(15));
        assert_eq!(plain("-0755"), Scalar::Int(-493));
        assert_eq!(plain("0x1F"), Scalar::Int(31));
        assert_eq!(plain("+0x10"), Scalar::Int(16));
        assert_eq!(plain("0b101"), Scalar::Int(5));
        assert_eq!(plain("1_000"), Scalar::Int(1000));
        assert_eq!(plain("00"), Scalar::Int(0));
        assert_eq!(plain("0"), Scalar::Int(0));
        assert_eq!(plain("-0"), Scalar::Int(0));
        assert_eq!(plain("08"), Scalar::Float(8.0));
        assert_eq!(plain("0x"), Scalar::Str("0x".into()));
        assert_eq!(plain("18446744073709551615"), Scalar::Uint(u64::MAX));
        assert_eq!(plain("-9223372036854775808"), Scalar::Int(i64::MIN));
    }

    #[test]
    fn floats_and_lookalikes() {
        assert_eq!(plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(plain("1."), Scalar::Float(1.0));
        assert_eq!(plain(".5"), Scalar::Float(0.5));
        assert_eq!(plain("+.5"), Scalar::Float(0.5));
        assert_eq!(plain("1e400"), Scalar::Str("1e400".into()));
        assert_eq!(plain("1.2.3"), Scalar::Str("1.2.3".into()));
        assert_eq!(plain("0x1p3"), Scalar::Str("0x1p3".into()));
        assert_eq!(plain("12e"), Scalar::Str("12e".into()));
        assert_eq!(plain("1:20"), Scalar::Str("1:20".into()));
        assert_eq!(plain("."), Scalar::Str(".".into()));
    }

    #[test]
    fn words() {
        assert_eq!(plain("y"), Scalar::Bool(true));
        assert_eq!(plain("Off"), Scalar::Bool(false));
        assert_eq!(plain("yEs"), Scalar::Str("yEs".into()));
        assert_eq!(plain("~"), Scalar::Null);
        assert_eq!(plain(""), Scalar::Null);
        assert_eq!(plain("<<"), Scalar::Str("<<".into()));
        assert_eq!(resolve(None, "yes", false), Ok(Scalar::Str("yes".into())));
    }

    #[test]
    fn tags() {
        let tagged = |tag: &str, value: &str| resolve(Some(tag), value, false);
        assert_eq!(tagged(STR, "0755"), Ok(Scalar::Str("0755".into())));
        assert_eq!(tagged(INT, "0755"), Ok(Scalar::Int(493)));
        assert_eq!(tagged(FLOAT, "1"), Ok(Scalar::Float(1.0)));
        assert_eq!(tagged(BINARY, "aGVsbG8="), Ok(Scalar::Str("hello".into())));
        assert_eq!(tagged("!foo", "yes"), Ok(Scalar::Str("yes".into())));
        assert_eq!(
            tagged(TIMESTAMP, "2001-12-14"),
            Ok(Scalar::Str("2001-12-14".into()))
        );
        assert_eq!(
            tagged(INT, "abc"),
            Err("cannot decode !!str `abc` as a !!int".into())
        );
        assert_eq!(
            tagged(INT, "1.5"),
            Err("cannot decode !!float `1.5` as a !!int".into())
        );
        assert!(tagged(TIMESTAMP, "2001-13-14").is_err());
    }

    #[test]
    fn timestamps() {
        assert!(is_timestamp("2001-12-14"));
        assert!(is_timestamp("2001-12-14t21:59:43.10-05:00"));
        assert!(is_timestamp("2001-12-14T21:59:43Z"));
        assert!(is_timestamp("2001-12-14 21:59:43.10"));
        assert!(is_timestamp("2001-1-2"));
        assert!(!is_timestamp("2001-12-14 21:59:43.10 -5"));
        assert!(!is_timestamp("2001-12-14T21:59:43"));
    }

    #[test]
    fn numbers_reach_json_as_the_api_server_reads_them() {
        assert_eq!(go_number(1.0), Ok(Value::from(1)));
        assert_eq!(go_number(-0.0), Ok(Value::from(0)));
        assert_eq!(go_number(0.5), Ok(serde_json::json!(0.5)));
        assert_eq!(go_number(1e20), Ok(serde_json::json!(1e20)));
        assert_eq!(
            go_number(i64::MIN as f64),
            Ok(serde_json::json!(i64::MIN as f64))
        );
        assert_eq!(
            go_number(4611686018427387904.0),
            Ok(Value::from(4611686018427388000i64))
        );
        assert_eq!(go_number(123.0), Ok(Value::from(123)));
        assert_eq!(
            to_json(Scalar::Uint(u64::MAX)),
            Ok(serde_json::json!(1.8446744073709552e19))
        );
        assert!(go_number(f64::NAN).is_err());
    }

    #[test]
    fn keys_as_go_prints_them() {
        let key = |s: Scalar| key_to_string(s).expect("a key");
        assert_eq!(key(Scalar::Float(1.5)), "1.5");
        assert_eq!(key(Scalar::Float(1000.0)), "1000");
        assert_eq!(key(Scalar::Float(std::f64::consts::PI)), "3.1415927");
        assert_eq!(key(Scalar::Float(0.1)), "0.1");
        assert_eq!(key(Scalar::Float(1e40)), ".inf");
        assert_eq!(key(Scalar::Float(1e7)), "1e+07");
        assert_eq!(key(Scalar::Float(123456.0)), "123456");
        assert_eq!(key(Scalar::Float(0.0001)), "0.0001");
        assert_eq!(key(Scalar::Float(0.00001)), "1e-05");
        assert_eq!(key(Scalar::Int(-5)), "-5");
        assert_eq!(key(Scalar::Bool(true)), "true");
        assert!(key_to_string(Scalar::Null).is_err());
    }
}
