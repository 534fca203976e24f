//! YAML → JSON: what the API server accepts, refusing what only YAML can say.

use serde_json::{Map, Value};
use std::fmt;

/// A YAML value that has no JSON equivalent, with the path to it.
#[derive(Debug)]
pub(super) struct Unconvertible {
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
pub(super) fn to_json(value: serde_yaml::Value) -> Result<Value, Unconvertible> {
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
