//! A source's variables for post-build substitution: `[source.vars]` from the config
//! and the data of the ConfigMaps and Secrets named in `vars_from`, read at render
//! time. Later ones win, and `[source.vars]` wins over all (as Flux's `substitute`
//! over `substituteFrom`). A Secret's values are used, never shown.

use super::error::RenderError;
use super::substitute::{Vars, is_var_name};
use crate::kube::{ApiResource, Client};
use base64::Engine as _;
use serde_json::Value;
use std::fmt;

/// One `vars_from` entry: `configmap/NAMESPACE/NAME` or `secret/NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarsFrom {
    pub kind: VarsKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarsKind {
    ConfigMap,
    Secret,
}

impl VarsFrom {
    /// Reads `configmap/ns/name` or `secret/ns/name`.
    pub fn parse(text: &str) -> Result<VarsFrom, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let [kind, namespace, name] = parts[..] else {
            return Err("expected configmap/NAMESPACE/NAME or secret/NAMESPACE/NAME".into());
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "configmap" => VarsKind::ConfigMap,
            "secret" => VarsKind::Secret,
            _ => return Err(format!("{kind:?} is neither configmap nor secret")),
        };
        if namespace.is_empty() || name.is_empty() {
            return Err("the namespace and the name must not be empty".into());
        }
        Ok(VarsFrom {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    fn path(&self) -> String {
        let resource = match self.kind {
            VarsKind::ConfigMap => ApiResource::config_maps(),
            VarsKind::Secret => ApiResource::secrets(),
        };
        resource.path(Some(&self.namespace), Some(&self.name))
    }
}

impl fmt::Display for VarsFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            VarsKind::ConfigMap => "configmap",
            VarsKind::Secret => "secret",
        };
        write!(f, "{kind}/{}/{}", self.namespace, self.name)
    }
}

/// The variables of `from` (in order) overridden by `inline`.
pub async fn resolve(
    client: &Client,
    from: &[VarsFrom],
    inline: &Vars,
) -> Result<Vars, RenderError> {
    let mut vars = Vars::default();
    for entry in from {
        let object = client
            .get(&entry.path())
            .await
            .map_err(|e| RenderError::Vars {
                reference: entry.to_string(),
                detail: if e.is_not_found() {
                    "not found; create it or remove it from vars_from".into()
                } else {
                    e.to_string()
                },
                transient: e.is_transient(),
            })?;
        data(entry, &object, &mut vars)?;
    }
    for (name, value) in inline.iter() {
        vars.insert(name.to_string(), value.to_string());
    }
    Ok(vars)
}

/// The object's `data` (a Secret's decoded); keys that cannot be variables (such as
/// `app.properties`) are skipped.
fn data(entry: &VarsFrom, object: &Value, vars: &mut Vars) -> Result<(), RenderError> {
    let Some(data) = object.get("data").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, value) in data {
        let Some(text) = value.as_str() else { continue };
        if !is_var_name(key) {
            continue;
        }
        let value = match entry.kind {
            VarsKind::ConfigMap => text.to_string(),
            VarsKind::Secret => decode(text).ok_or_else(|| RenderError::Vars {
                reference: entry.to_string(),
                detail: format!("data.{key} is not base64-encoded UTF-8"),
                transient: false,
            })?,
        };
        vars.insert(key.clone(), value);
    }
    Ok(())
}

fn decode(text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_parsed() {
        let cm = VarsFrom::parse("configmap/flux-system/cluster-vars").unwrap();
        assert_eq!(cm.kind, VarsKind::ConfigMap);
        assert_eq!(cm.to_string(), "configmap/flux-system/cluster-vars");
        assert_eq!(
            cm.path(),
            "/api/v1/namespaces/flux-system/configmaps/cluster-vars"
        );
        let secret = VarsFrom::parse("Secret/ns/creds").unwrap();
        assert_eq!(secret.path(), "/api/v1/namespaces/ns/secrets/creds");
        for bad in ["configmap/x", "pod/ns/x", "secret//x", "configmap/ns/x/y"] {
            assert!(VarsFrom::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_is_read_and_secrets_decoded() {
        let mut vars = Vars::default();
        let cm = VarsFrom::parse("configmap/ns/c").unwrap();
        let object = json!({"data": {"CLUSTER": "prod", "app.properties": "x=1"}});
        data(&cm, &object, &mut vars).unwrap();
        let secret = VarsFrom::parse("secret/ns/s").unwrap();
        data(&secret, &json!({"data": {"TOKEN": "czNjcjN0"}}), &mut vars).unwrap();
        let names: Vec<_> = vars.iter().collect();
        assert_eq!(names, [("CLUSTER", "prod"), ("TOKEN", "s3cr3t")]);
        let err = data(&secret, &json!({"data": {"BAD": "%%%"}}), &mut vars).unwrap_err();
        assert!(!err.to_string().contains("%%%"), "{err}");
    }
}
