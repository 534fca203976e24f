//! Which `kustomize` and `helm` converge runs, and their versions.
//!
//! `kustomize` is the configured path, else `kustomize` on `PATH`, else `kubectl
//! kustomize` (kubectl embeds kustomize); `helm` is the configured path, else `helm` on
//! `PATH`. A tool that is not found is remembered as such, so that only a source that
//! needs it fails, with a message saying how to get it.

use super::process::{self, Invocation, ToolLimits};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A rendering tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Kustomize,
    Helm,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Kustomize => "kustomize",
            Tool::Helm => "helm",
        })
    }
}

/// `[render]`: where the tools are, when not on `PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolPaths {
    /// A kustomize binary, or a kubectl (then `kubectl kustomize` is run).
    pub kustomize: Option<PathBuf>,
    pub helm: Option<PathBuf>,
}

/// A tool found: how to run it and what it says its version is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    /// Arguments before the tool's own (`kustomize` for `kubectl kustomize`).
    pub prefix: Vec<String>,
    pub version: String,
}

/// What `converge version` and `/status` say about one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolStatus {
    pub tool: Tool,
    /// `v5.8.1`; `None` when not found.
    pub version: Option<String>,
    /// The command run (`/usr/bin/kubectl kustomize`), or why none was found.
    pub detail: String,
}

impl fmt::Display for ToolStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{} {version} ({})", self.tool, self.detail),
            None => write!(f, "{}: not found ({})", self.tool, self.detail),
        }
    }
}

/// The tools of this process, found once.
#[derive(Debug, Clone)]
pub struct Tools {
    kustomize: Result<Program, String>,
    helm: Result<Program, String>,
}

/// A version query is quick; a hung tool must not hold the start-up.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

impl Tools {
    /// Finds both tools and asks each for its version.
    pub async fn find(paths: &ToolPaths) -> Tools {
        let (kustomize, helm) = tokio::join!(find_kustomize(paths), find_helm(paths));
        Tools { kustomize, helm }
    }

    /// Tools given directly.
    #[cfg(test)]
    pub fn with(kustomize: Result<Program, String>, helm: Result<Program, String>) -> Tools {
        Tools { kustomize, helm }
    }

    /// The tool, or why there is none.
    pub fn get(&self, tool: Tool) -> Result<&Program, &str> {
        let found = match tool {
            Tool::Kustomize => &self.kustomize,
            Tool::Helm => &self.helm,
        };
        found.as_ref().map_err(String::as_str)
    }

    pub fn status(&self) -> Vec<ToolStatus> {
        [Tool::Kustomize, Tool::Helm]
            .into_iter()
            .map(|tool| match self.get(tool) {
                Ok(program) => ToolStatus {
                    tool,
                    version: Some(program.version.clone()),
                    detail: command_line(program),
                },
                Err(why) => ToolStatus {
                    tool,
                    version: None,
                    detail: why.to_string(),
                },
            })
            .collect()
    }
}

fn command_line(program: &Program) -> String {
    let mut line = program.path.display().to_string();
    for arg in &program.prefix {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

async fn find_kustomize(paths: &ToolPaths) -> Result<Program, String> {
    let path = match paths.kustomize.clone().or_else(|| on_path("kustomize")) {
        Some(path) => path,
        None => on_path("kubectl").ok_or("neither kustomize nor kubectl is on PATH")?,
    };
    let is_kubectl = path.file_name().is_some_and(|n| n == "kubectl");
    if is_kubectl {
        let json = ask(&path, &["version", "--client", "-o", "json"]).await?;
        let version = kubectl_kustomize_version(&json)
            .ok_or_else(|| format!("{} does not embed kustomize", path.display()))?;
        let prefix = vec!["kustomize".to_string()];
        return Ok(Program {
            path,
            prefix,
            version,
        });
    }
    let version = ask(&path, &["version"]).await?;
    Ok(Program {
        path,
        prefix: Vec::new(),
        version: version.trim().to_string(),
    })
}

async fn find_helm(paths: &ToolPaths) -> Result<Program, String> {
    let path = match paths.helm.clone().or_else(|| on_path("helm")) {
        Some(path) => path,
        None => return Err("helm is not on PATH".into()),
    };
    let version = ask(&path, &["version", "--short"]).await?;
    let version = version.trim().to_string();
    check_helm_version(&version)?;
    Ok(Program {
        path,
        prefix: Vec::new(),
        version,
    })
}

/// converge needs Helm v3.18 or later (v4 included): older ones lack flags it passes.
fn check_helm_version(version: &str) -> Result<(), String> {
    let numbers: Vec<u32> = version
        .trim_start_matches('v')
        .split(['.', '+', '-'])
        .take(2)
        .map_while(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [major, minor] if major > 3 || (major == 3 && minor >= 18) => Ok(()),
        [_, _] => Err(format!(
            "helm {version} is older than v3.18, the oldest converge supports"
        )),
        _ => Err(format!("cannot read helm's version from {version:?}")),
    }
}

/// `kustomizeVersion` of `kubectl version --client -o json`.
fn kubectl_kustomize_version(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let version = value.get("kustomizeVersion")?.as_str()?;
    (!version.is_empty()).then(|| version.to_string())
}

/// Runs a version query; its standard output.
async fn ask(program: &Path, args: &[&str]) -> Result<String, String> {
    let invocation = Invocation {
        program,
        args: args.iter().map(|a| a.to_string()).collect(),
        dir: Path::new("/"),
    };
    let limits = ToolLimits {
        timeout: VERSION_TIMEOUT,
        max_output: 1 << 20,
    };
    let out = process::run(invocation, limits)
        .await
        .map_err(|e| format!("`{} {}`: {e}", program.display(), args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The first executable file called `name` in `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_versions() {
        assert!(check_helm_version("v3.22.0").is_ok());
        assert!(check_helm_version("v3.18.1+g1234").is_ok());
        assert!(check_helm_version("v4.0.0").is_ok());
        let old = check_helm_version("v3.17.3").unwrap_err();
        assert!(old.contains("older than v3.18"), "{old}");
        assert!(check_helm_version("garbage").is_err());
    }

    #[test]
    fn kubectl_reports_its_kustomize() {
        let json = r#"{"clientVersion":{"gitVersion":"v1.36.4"},"kustomizeVersion":"v5.8.1"}"#;
        assert_eq!(kubectl_kustomize_version(json).as_deref(), Some("v5.8.1"));
        assert_eq!(kubectl_kustomize_version(r#"{"clientVersion":{}}"#), None);
    }

    #[test]
    fn status_lines() {
        let tools = Tools::with(
            Ok(Program {
                path: "/usr/bin/kubectl".into(),
                prefix: vec!["kustomize".into()],
                version: "v5.8.1".into(),
            }),
            Err("helm is not on PATH".into()),
        );
        let lines: Vec<String> = tools.status().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "kustomize v5.8.1 (/usr/bin/kubectl kustomize)",
                "helm: not found (helm is not on PATH)"
            ]
        );
    }
}
