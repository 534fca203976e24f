//! `helm template`, for a chart in the source.
//!
//! The cluster's real version and API versions are passed (`--kube-version`,
//! `--api-versions`): a `go install`-built helm otherwise assumes Kubernetes v1.20,
//! and charts with `kubeVersion: >=1.23` refuse to render. CRDs are included,
//! `helm test` hooks never (`--skip-tests`, and any object whose `helm.sh/hook` is
//! a `test*` left out here too); the engine runs the other hooks as hooks
//! (`engine::order` maps `helm.sh/hook` to its phases).
//! Dependencies are vendored in `charts/`, or fetched from their HTTP repository
//! (the version Chart.lock pins, else the highest matching Chart.yaml's
//! constraint) through the artifact cache, with the index's digest checked, and
//! laid into a scratch copy of the chart: the source is never written. Every file
//! of the chart and every values file must resolve inside the source root.

use super::error::RenderError;
use super::inputs::{self, Base};
use super::origin::Lines;
use super::process::RunError;
use super::tools::Tool;
use crate::manifest::{Manifest, Origin, parse_str};
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A chart ready to render: checked, with everything it reads.
#[derive(Debug)]
pub(super) struct Chart {
    /// The chart directory, resolved.
    pub dir: PathBuf,
    /// `name` of Chart.yaml: Helm's `# Source:` paths start with it.
    pub name: String,
    /// Values files, resolved, in the order given.
    pub values_files: Vec<PathBuf>,
    /// Every file of the chart and the values files.
    pub files: BTreeSet<PathBuf>,
    /// Dependencies not vendored in `charts/`, to fetch before rendering.
    pub fetch: Vec<Dependency>,
}

/// A dependency fetched from an HTTP chart repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dependency {
    pub name: String,
    pub repository: String,
    /// Chart.lock's exact version, else Chart.yaml's constraint (`None`: latest
    /// stable).
    pub version: Option<String>,
}

/// One entry of a `dependencies` list, as written.
struct Declared {
    name: String,
    repository: String,
    version: Option<String>,
}

/// Checks the chart in `root` and lists what it reads. Relative `values_files` are
/// looked up in the chart, then in the source root; absolute ones (the command
/// line's, made absolute from its working directory) are taken as they are.
pub(super) fn prepare(
    root: &Path,
    base: &Base,
    values_files: &[PathBuf],
) -> Result<Chart, RenderError> {
    let dir = inputs::canonical(root)?;
    let chart_file = dir.join("Chart.yaml");
    let chart = read_yaml(&chart_file, base)?;
    let name = chart
        .get("name")
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_string();
    let mut dependencies = declared(chart.get("dependencies"));
    let requirements = dir.join("requirements.yaml");
    if requirements.is_file() {
        dependencies.extend(declared(
            read_yaml(&requirements, base)?.get("dependencies"),
        ));
    }
    let lock_file = ["Chart.lock", "requirements.lock"]
        .map(|name| dir.join(name))
        .into_iter()
        .find(|file| file.is_file());
    let locked = match &lock_file {
        Some(file) => declared(read_yaml(file, base)?.get("dependencies")),
        None => Vec::new(),
    };
    let mut fetch = Vec::new();
    for dependency in dependencies {
        if vendored(&dir.join("charts"), &dependency.name) {
            continue;
        }
        let repository = dependency.repository.trim_end_matches('/');
        if !["https://", "http://", "oci://"]
            .iter()
            .any(|scheme| repository.starts_with(scheme))
        {
            return Err(RenderError::MissingDependency {
                chart: base.spell(&dir),
                name: dependency.name,
            });
        }
        let pinned = locked
            .iter()
            .find(|l| l.name == dependency.name && l.repository.trim_end_matches('/') == repository)
            .and_then(|l| l.version.clone());
        fetch.push(Dependency {
            name: dependency.name,
            repository: repository.to_string(),
            version: pinned.or(dependency.version),
        });
    }
    let mut files = BTreeSet::new();
    inputs::tree(&dir, base, &mut files)?;
    let mut resolved = Vec::new();
    for file in values_files {
        let found = values_file(file, &dir, base, &chart_file)?;
        files.insert(found.clone());
        resolved.push(found);
    }
    Ok(Chart {
        dir,
        name,
        values_files: resolved,
        files,
        fetch,
    })
}

fn read_yaml(file: &Path, base: &Base) -> Result<Yaml, RenderError> {
    let text = std::fs::read_to_string(file).map_err(|source| RenderError::Io {
        path: base.spell(file),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| RenderError::Invalid {
        at: Origin {
            file: base.spell(file),
            line: e.location().map_or(1, |l| l.line()),
        },
        message: format!("not valid YAML: {e}"),
    })
}

/// The entries of a `dependencies` list (Chart.yaml, requirements.yaml or a lock).
fn declared(dependencies: Option<&Yaml>) -> Vec<Declared> {
    let Some(Yaml::Sequence(items)) = dependencies else {
        return Vec::new();
    };
    let text = |d: &Yaml, key: &str| d.get(key).and_then(Yaml::as_str).map(str::to_string);
    items
        .iter()
        .filter_map(|d| {
            Some(Declared {
                name: text(d, "name")?,
                repository: text(d, "repository").unwrap_or_default(),
                version: text(d, "version").filter(|v| !v.is_empty()),
            })
        })
        .collect()
}

/// Whether `charts/` holds the dependency, unpacked or as `name-version.tgz`.
fn vendored(charts: &Path, name: &str) -> bool {
    if charts.join(name).join("Chart.yaml").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(charts) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        file.strip_suffix(".tgz")
            .and_then(|stem| stem.strip_prefix(name))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
    })
}

fn values_file(
    file: &Path,
    chart: &Path,
    base: &Base,
    chart_file: &Path,
) -> Result<PathBuf, RenderError> {
    let reference = file.display().to_string();
    if file.is_absolute() {
        return inputs::canonical(file);
    }
    for dir in [chart, &base.canonical] {
        if let Some(found) =
            base.resolve(&dir.join(file), chart_file, "values_files", &reference)?
        {
            return Ok(found);
        }
    }
    Err(RenderError::NotLocal {
        file: base.spell(chart_file),
        field: "values_files",
        reference,
    })
}

/// What `helm template` is told besides the chart.
pub(super) struct Options<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    pub kube_version: &'a str,
    pub api_versions: &'a [String],
    /// Values files, inline values last: later ones win.
    pub values: Vec<PathBuf>,
    pub set: &'a [String],
}

/// The command line of `helm template` for the chart in the working directory.
pub(super) fn args(options: &Options) -> Vec<String> {
    let mut args: Vec<String> = [
        "template",
        options.release,
        ".",
        "--namespace",
        options.namespace,
        "--kube-version",
        options.kube_version,
        "--include-crds",
        "--skip-tests",
    ]
    .map(String::from)
    .into();
    for version in options.api_versions {
        args.extend(["--api-versions".into(), version.clone()]);
    }
    for file in &options.values {
        args.extend(["--values".into(), file.display().to_string()]);
    }
    for set in options.set {
        args.extend(["--set".into(), set.clone()]);
    }
    args
}

/// The rendered objects, `helm test` hooks left out, each located at the template
/// its `# Source:` comment names.
pub(super) fn objects(
    text: &str,
    stream: &Path,
    chart: &Chart,
    base: &Base,
) -> Result<Vec<Manifest>, RenderError> {
    let sources = source_comments(text);
    let mut lines = Lines::default();
    let mut objects = Vec::new();
    for mut manifest in parse_str(text, stream)? {
        if is_test_hook(&manifest) {
            continue;
        }
        let source = sources
            .iter()
            .rev()
            .find(|(line, _)| *line < manifest.origin.line);
        if let Some((_, source)) = source {
            let file = template_file(&chart.dir, &chart.name, source);
            let found = lines.origin(&file, &manifest.kind, manifest.name());
            manifest.origin = Origin {
                file: base.spell(&file),
                line: found.line,
            };
        }
        objects.push(manifest);
    }
    Ok(objects)
}

/// `# Source: chart/templates/x.yaml` comments, with their 1-based lines.
fn source_comments(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| Some((i + 1, line.strip_prefix("# Source: ")?.trim())))
        .collect()
}

/// `chart/templates/x.yaml` (subcharts: `chart/charts/sub/templates/x.yaml`) in
/// the chart directory.
fn template_file(dir: &Path, name: &str, source: &str) -> PathBuf {
    let relative = source
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(source);
    dir.join(relative)
}

/// Whether `helm.sh/hook` names a `test` hook (`test`, `test-success`, …).
pub(super) fn is_test_hook(manifest: &Manifest) -> bool {
    manifest
        .body
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("helm.sh/hook"))
        .and_then(|h| h.as_str())
        .is_some_and(|hooks| hooks.split(',').any(|h| h.trim().starts_with("test")))
}

/// Where a Helm error says the problem is: a `chart/…` path (with `:line` after
/// it, or the last `line N` of the message), or the values file it could not load;
/// and the message without Helm's hint about `--debug`.
pub(super) fn locate_error(
    message: &str,
    chart: &Chart,
) -> (Option<PathBuf>, Option<usize>, String) {
    let message = message.trim().trim_start_matches("Error: ");
    let (message, rest) = message.split_once('\n').unwrap_or((message, ""));
    let message = message.to_string();
    let in_chart = find_token(&message, &format!("{}/", chart.name)).map(|token| {
        let (path, rest) = token;
        let line = rest
            .strip_prefix(':')
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok());
        (template_file(&chart.dir, &chart.name, path), line)
    });
    let (file, line) = match in_chart {
        Some((file, line)) => (Some(file), line),
        None => (values_named(&message, chart), None),
    };
    let line = line.or_else(|| super::kustomize::last_line_number(&message));
    let message = super::error::whole_message(&message, rest, &["Use --debug flag"]);
    (file, line, message)
}

/// A path token starting with `prefix` (up to a space, `:`, `(` or `)`), and the
/// text after it.
fn find_token<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let start = message
        .match_indices(prefix)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || message[..at].ends_with([' ', '(', '\'', '"']))?;
    let rest = &message[start..];
    let end = rest.find([' ', ':', '(', ')']).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// The values file a `cannot load X:` / `failed to parse X:` message names.
fn values_named(message: &str, chart: &Chart) -> Option<PathBuf> {
    ["cannot load ", "failed to parse "]
        .iter()
        .find_map(|marker| {
            let rest = &message[message.find(marker)? + marker.len()..];
            let name = Path::new(&rest[..rest.find(':')?]);
            Some(if name.is_absolute() {
                name.to_path_buf()
            } else {
                chart.dir.join(name)
            })
        })
}

/// The tool's refusal, located.
pub(super) fn failure(root: &Path, error: RunError, chart: &Chart, base: &Base) -> RenderError {
    let RunError::Failed(message) = error else {
        let root = root.to_path_buf();
        return RenderError::Run {
            tool: Tool::Helm,
            root,
            error,
        };
    };
    let (file, line, message) = locate_error(&message, chart);
    RenderError::ToolFailed {
        tool: Tool::Helm,
        root: base.spell(&chart.dir),
        file: file.map(|f| base.spell(&f)),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::write;

    fn chart(dir: &Path) -> Chart {
        Chart {
            dir: dir.to_path_buf(),
            name: "podinfo".into(),
            values_files: Vec::new(),
            files: BTreeSet::new(),
            fetch: Vec::new(),
        }
    }

    #[test]
    fn dependencies_from_http_repositories_are_fetched_as_the_lock_pins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("app");
        write(
            &dir,
            "Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: redis\n  \
             version: 1.x\n  repository: https://charts.example/\n- name: db\n  \
             version: ^2\n  repository: https://charts.example\n",
        );
        write(
            &dir,
            "Chart.lock",
            "dependencies:\n- name: redis\n  version: 1.2.3\n  repository: https://charts.example/\n",
        );
        let base = Base::new(tmp.path()).unwrap();
        let chart = prepare(&dir, &base, &[]).unwrap();
        let fetch = |name: &str, version: &str| Dependency {
            name: name.into(),
            repository: "https://charts.example".into(),
            version: Some(version.into()),
        };
        assert_eq!(chart.fetch, [fetch("redis", "1.2.3"), fetch("db", "^2")]);

        write(
            &dir,
            "Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: redis\n  \
             version: 1.0.0\n  repository: oci://registry.example/charts\n",
        );
        let chart = prepare(&dir, &base, &[]).unwrap();
        let oci = Dependency {
            name: "redis".into(),
            repository: "oci://registry.example/charts".into(),
            version: Some("1.0.0".into()),
        };
        assert_eq!(chart.fetch, [oci], "an OCI dependency is fetched too");
    }

    #[test]
    fn args_carry_release_cluster_values_and_sets() {
        let api_versions = ["v1".to_string(), "apps/v1/Deployment".to_string()];
        let set = ["image.tag=6.0".to_string()];
        let options = Options {
            release: "web",
            namespace: "shop",
            kube_version: "v1.34.4",
            api_versions: &api_versions,
            values: vec!["/r/values-prod.yaml".into(), "/tmp/inline.json".into()],
            set: &set,
        };
        assert_eq!(
            args(&options).join(" "),
            "template web . --namespace shop --kube-version v1.34.4 --include-crds \
             --skip-tests --api-versions v1 --api-versions apps/v1/Deployment --values \
             /r/values-prod.yaml --values /tmp/inline.json --set image.tag=6.0"
        );
    }

    #[test]
    fn dependencies_must_be_vendored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chart");
        write(
            &dir,
            "Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: 1.0.0\n",
        );
        let base = Base::new(tmp.path()).unwrap();
        let err = prepare(&dir, &base, &[]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("depends on \"redis\""), "{message}");
        assert!(message.contains("helm dependency build"), "{message}");
        write(&dir, "charts/redis-1.0.0.tgz", "");
        let chart = prepare(&dir, &base, &[]).unwrap();
        assert_eq!(chart.name, "app");
        assert_eq!(chart.files.len(), 2);
        assert!(vendored(&dir.join("charts"), "redis"));
        assert!(!vendored(&dir.join("charts"), "red"));
    }

    #[test]
    fn values_files_are_found_in_the_chart_then_the_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let dir = repo.join("charts/app");
        write(&dir, "Chart.yaml", "name: app\n");
        write(&dir, "values-prod.yaml", "a: 1\n");
        write(&repo, "env/prod.yaml", "b: 2\n");
        write(tmp.path(), "outside.yaml", "c: 3\n");
        let base = Base::new(&repo).unwrap();
        let files = ["values-prod.yaml".into(), "env/prod.yaml".into()];
        let chart = prepare(&dir, &base, &files).unwrap();
        assert!(chart.values_files[0].ends_with("charts/app/values-prod.yaml"));
        assert!(chart.values_files[1].ends_with("env/prod.yaml"));
        let err = prepare(&dir, &base, &["../../../outside.yaml".into()]).unwrap_err();
        assert!(matches!(err, RenderError::Escapes { .. }), "{err}");
        let err = prepare(&dir, &base, &["nope.yaml".into()]).unwrap_err();
        assert!(
            err.to_string().contains("values_files \"nope.yaml\""),
            "{err}"
        );
    }

    #[test]
    fn objects_are_located_and_test_hooks_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "templates/service.yaml",
            "{{- if true }}\napiVersion: v1\nkind: Service\n",
        );
        let text = "---\n# Source: podinfo/templates/service.yaml\napiVersion: v1\nkind: Service\n\
                    metadata: {name: web}\n---\n# Source: podinfo/templates/tests/grpc.yaml\n\
                    apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations:\n    \
                    helm.sh/hook: test-success\n";
        let base = Base::new(tmp.path()).unwrap();
        let chart = chart(&base.canonical);
        let objects = objects(text, Path::new("stream"), &chart, &base).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(
            objects[0].origin.to_string(),
            format!("{}:3", tmp.path().join("templates/service.yaml").display())
        );
    }

    #[test]
    fn errors_are_located_at_the_template_and_line() {
        let dir = Path::new("/c");
        let chart = chart(dir);
        let cases = [
            (
                "Error: template: podinfo/templates/service.yaml:3:11: executing \"podinfo/templates/service.yaml\" at <include \"nope\" .>: error",
                "/c/templates/service.yaml",
                Some(3),
            ),
            (
                "Error: parse error at (podinfo/templates/service.yaml:6): function \"namespace\" not defined\n\nUse --debug flag to render out invalid YAML",
                "/c/templates/service.yaml",
                Some(6),
            ),
            (
                "Error: YAML parse error on podinfo/templates/service.yaml: error converting YAML to JSON: yaml: line 5: did not find expected ',' or ']'",
                "/c/templates/service.yaml",
                Some(5),
            ),
            (
                "Error: cannot load values.yaml: error converting YAML to JSON: yaml: line 309: did not find expected node content",
                "/c/values.yaml",
                Some(309),
            ),
        ];
        for (message, file, line) in cases {
            let (found, found_line, text) = locate_error(message, &chart);
            assert_eq!(found.as_deref(), Some(Path::new(file)), "{message}");
            assert_eq!(found_line, line, "{message}");
            assert!(
                !text.contains("--debug") && !text.starts_with("Error"),
                "{text}"
            );
        }
    }
}
