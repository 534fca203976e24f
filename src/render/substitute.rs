//! Post-build substitution, as Flux's `postBuild`: `${VAR}` and `${VAR:=default}` in
//! the text of rendered objects are replaced by the source's variables, `$${VAR}`
//! stays as the literal `${VAR}`. Strict, as Flux's `substitute: strict`: a variable
//! that is not set and has no default is an error naming it.
//!
//! Only the braced forms are read: a bare `$VAR` (shell scripts in ConfigMaps are full
//! of them) and a `${…}` that is not a variable name are left as they are. Pure.

use std::collections::BTreeMap;
use std::fmt;

/// The variables of a source, by name. Values may come from Secrets, so neither
/// `Debug` nor any error ever shows one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// Sets `name`, replacing an earlier value (later sources of variables win).
    pub fn insert(&mut self, name: String, value: String) {
        self.0.insert(name, value);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Name and value pairs in name order, for the render cache key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A variable used without a value or a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: String,
    /// Byte offset of the `${` in the text.
    pub offset: usize,
}

/// Whether `name` may be a variable: a letter or `_`, then letters, digits and `_`
/// (Flux's rule).
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `text` with every `${VAR}` and `${VAR:=default}` replaced (`:-` is read as `:=`),
/// `$${…}` unescaped; the first variable without a value or default is an error.
pub fn substitute(text: &str, vars: &Vars) -> Result<String, Missing> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (replacement, used) = match expression(tail) {
            Expression::Escaped(len) => (Some(tail[1..len].to_string()), len),
            Expression::Var { name, default, len } => match vars.get(name).or(default) {
                Some(value) => (Some(value.to_string()), len),
                None => {
                    let name = name.to_string();
                    return Err(Missing {
                        name,
                        offset: consumed + at,
                    });
                }
            },
            Expression::Text => (None, 1),
        };
        out.push_str(replacement.as_deref().unwrap_or("$"));
        rest = &tail[used..];
        consumed += at + used;
    }
    out.push_str(rest);
    Ok(out)
}

/// What a `$` starts.
enum Expression<'a> {
    /// `$${…}`: the literal `${…}` (its length, `$$` included).
    Escaped(usize),
    Var {
        name: &'a str,
        default: Option<&'a str>,
        len: usize,
    },
    /// Anything else: a plain `$`.
    Text,
}

fn expression(text: &str) -> Expression<'_> {
    if let Some((_, len)) = text.strip_prefix('$').and_then(braced) {
        return Expression::Escaped(1 + len);
    }
    let Some((body, len)) = braced(text) else {
        return Expression::Text;
    };
    let (name, default) = match body.find(":=").or_else(|| body.find(":-")) {
        Some(at) => (&body[..at], Some(&body[at + 2..])),
        None => (body, None),
    };
    if is_var_name(name) {
        Expression::Var { name, default, len }
    } else {
        Expression::Text
    }
}

/// `${body}` at the start of `text`: the body and the length of the whole.
fn braced(text: &str) -> Option<(&str, usize)> {
    let body = text.strip_prefix("${")?;
    let end = body.find('}')?;
    Some((&body[..end], end + 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut vars = Vars::default();
        for (k, v) in pairs {
            vars.insert(k.to_string(), v.to_string());
        }
        vars
    }

    fn sub(text: &str, pairs: &[(&str, &str)]) -> Result<String, Missing> {
        substitute(text, &vars(pairs))
    }

    #[test]
    fn variables_and_defaults() {
        let v = [("ENV", "prod"), ("EMPTY", "")];
        assert_eq!(sub("name: web-${ENV}", &v).unwrap(), "name: web-prod");
        assert_eq!(sub("${ENV}${ENV}", &v).unwrap(), "prodprod");
        assert_eq!(sub("r: ${REPLICAS:=3}", &v).unwrap(), "r: 3");
        assert_eq!(sub("r: ${REPLICAS:-2}", &v).unwrap(), "r: 2");
        assert_eq!(sub("e: ${ENV:=dev}", &v).unwrap(), "e: prod", "set wins");
        assert_eq!(sub("e: '${EMPTY}'", &v).unwrap(), "e: ''", "empty is set");
        assert_eq!(sub("d: ${X:=}", &v).unwrap(), "d: ");
        assert_eq!(sub("ünï ${ENV} ✓", &v).unwrap(), "ünï prod ✓");
    }

    #[test]
    fn escapes_and_other_dollars_are_kept() {
        let v = [("ENV", "prod")];
        assert_eq!(sub("a: $${ENV}", &v).unwrap(), "a: ${ENV}");
        assert_eq!(sub("a: $${NOT_SET}", &v).unwrap(), "a: ${NOT_SET}");
        assert_eq!(
            sub("sh: echo $ENV $$ $1 $", &v).unwrap(),
            "sh: echo $ENV $$ $1 $"
        );
        assert_eq!(
            sub("x: ${not a var} ${1X}", &v).unwrap(),
            "x: ${not a var} ${1X}"
        );
        assert_eq!(sub("x: ${ENV", &v).unwrap(), "x: ${ENV");
        assert_eq!(sub("$$$${ENV}", &v).unwrap(), "$$${ENV}");
    }

    #[test]
    fn a_missing_variable_is_named_with_its_offset() {
        let err = sub("a: 1\nb: ${ENV}\nc: ${CLUSTER}\n", &[("ENV", "x")]).unwrap_err();
        assert_eq!(
            err,
            Missing {
                name: "CLUSTER".into(),
                offset: 18
            }
        );
    }

    #[test]
    fn names_follow_flux() {
        assert!(is_var_name("A_1") && is_var_name("_x"));
        assert!(!is_var_name("") && !is_var_name("1A") && !is_var_name("a-b"));
    }

    #[test]
    fn debug_never_shows_values() {
        let shown = format!("{:?}", vars(&[("TOKEN", "s3cr3t")]));
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
