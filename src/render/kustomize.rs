//! `kustomize build`, confined to the source root.
//!
//! kustomize's own load restrictor (`LoadRestrictionsRootOnly`, passed explicitly)
//! keeps each kustomization's *files* under its own directory, but lets it name any
//! *directory* as a base, anywhere on the host. Flux confines the whole build to the
//! repository with a filesystem rooted there; a command line cannot, so the tree is
//! walked here first: every path a kustomization names (resources, bases,
//! components, patches, generator files, …) is resolved, links included, and must
//! stay inside the source root; remote bases are refused unless allowed. The walk
//! also lists every file the build reads: the render cache's key.
//!
//! kustomize then builds a wrapper kustomization in a temporary directory that has
//! the root as its only resource and asks for `buildMetadata: [originAnnotations]`,
//! so that every object says which file it came from without the user's
//! kustomization being touched. The annotation is read and removed here. Exec and
//! KRM function plugins stay disabled. kustomize's Helm inflator (`helmCharts`) is
//! enabled only for a tree that uses it, with converge's own helm behind a small
//! wrapper ([`helm_command`]) that passes the cluster's version and API versions
//! to `helm template` and refuses `helm pull`: each chart is in `chartHome` inside
//! the source, or fetched by converge (digest checked, cached) into a private copy
//! of the tree before kustomize runs, so kustomize never downloads.

use super::error::RenderError;
use super::inputs::{Base, normalize, relative};
use super::origin::Lines;
use super::process::{self, Invocation, RunError, ToolLimits};
use super::tools::{Program, Tool};
use crate::manifest::{Manifest, Origin, parse_str};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The names kustomize reads a kustomization from, in its order.
pub(super) const FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The annotation `buildMetadata: [originAnnotations]` adds.
const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

/// The kustomization file of `dir`, if it has one.
pub(super) fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    FILES.iter().map(|f| dir.join(f)).find(|f| f.is_file())
}

/// What a kustomization tree reads.
#[derive(Debug, Default)]
pub(super) struct Tree {
    /// Every local file (kustomizations included), resolved.
    pub files: BTreeSet<PathBuf>,
    /// Whether a remote base is used (allowed): the files do not say everything.
    pub remote: bool,
    /// The `helmCharts` entries of every kustomization in the tree.
    pub helm_charts: Vec<HelmChartUse>,
}

/// One `helmCharts` entry: where kustomize will look for its chart, and whether
/// converge must fetch it there first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HelmChartUse {
    pub name: String,
    /// Where kustomize looks for the chart (`chartHome/<name>`, or
    /// `chartHome/<name>-<version>/<name>` for an entry with `repo` and `version`),
    /// inside the source (lexically; it may not exist yet).
    pub chart_dir: PathBuf,
    /// `Some(repo)`: not in the source, fetched from this HTTP repository.
    pub fetch_from: Option<String>,
    pub version: Option<String>,
}

/// Walks the kustomization in `root` and everything it names, refusing what leads
/// outside `base` and (unless `allow_remote`) remote bases.
pub(super) fn reach(root: &Path, base: &Base, allow_remote: bool) -> Result<Tree, RenderError> {
    let mut walk = Walk {
        base,
        allow_remote,
        tree: Tree::default(),
        seen: HashSet::new(),
    };
    walk.kustomization(root)?;
    Ok(walk.tree)
}

/// How a field's entries may be used.
#[derive(Clone, Copy, PartialEq)]
enum Accepts {
    /// A file, a kustomization directory, or a remote base.
    FileOrDir,
    File,
}

struct Walk<'a> {
    base: &'a Base,
    allow_remote: bool,
    tree: Tree,
    seen: HashSet<PathBuf>,
}

impl Walk<'_> {
    fn kustomization(&mut self, dir: &Path) -> Result<(), RenderError> {
        let dir = &super::inputs::canonical(dir)?;
        if !self.seen.insert(dir.clone()) {
            return Ok(());
        }
        // A directory without one: kustomize says so.
        let Some(file) = kustomization_file(dir) else {
            return Ok(());
        };
        let file = super::inputs::canonical(&file)?;
        let text = std::fs::read_to_string(&file).map_err(|source| RenderError::Io {
            path: file.clone(),
            source,
        })?;
        self.tree.files.insert(file.clone());
        let document: Yaml = serde_yaml::from_str(&text).map_err(|e| RenderError::Invalid {
            at: Origin {
                file: self.base.spell(&file),
                line: e.location().map_or(1, |l| l.line()),
            },
            message: format!("not a valid kustomization: {e}"),
        })?;
        for (field, entry, accepts) in references(&document) {
            self.reference(dir, &file, field, &entry, accepts)?;
        }
        self.helm_charts(dir, &file, &document)
    }

    /// `helmCharts` (and `helmGlobals.chartHome`): each chart found in chartHome
    /// inside the source (its files are read), or to fetch from its HTTP `repo`.
    fn helm_charts(&mut self, dir: &Path, file: &Path, document: &Yaml) -> Result<(), RenderError> {
        let entries = items(document.get("helmCharts"));
        if entries.is_empty() {
            return Ok(());
        }
        let home = document
            .get("helmGlobals")
            .and_then(|g| g.get("chartHome"))
            .and_then(Yaml::as_str)
            .unwrap_or("charts");
        let chart_home = normalize(&dir.join(home));
        if !chart_home.starts_with(&self.base.canonical) {
            return Err(RenderError::Escapes {
                file: self.base.spell(file),
                field: "helmGlobals.chartHome",
                reference: home.to_string(),
                target: chart_home,
                root: self.base.spell(&self.base.canonical),
            });
        }
        for entry in entries {
            let text = |key: &str| entry.get(key).and_then(Yaml::as_str).map(str::to_string);
            let Some(name) = text("name") else {
                continue;
            };
            let (version, repo) = (text("version"), text("repo"));
            let chart_dir = match (&version, &repo) {
                (Some(version), Some(_)) => {
                    chart_home.join(format!("{name}-{version}")).join(&name)
                }
                _ => chart_home.join(&name),
            };
            let at = format!("helmCharts {name:?}");
            let local = self.base.resolve(&chart_dir, file, "helmCharts", &name)?;
            let fetch_from = match (local, &repo) {
                (Some(found), _) if found.join("Chart.yaml").is_file() => {
                    super::inputs::tree(&found, self.base, &mut self.tree.files)?;
                    None
                }
                (_, Some(repo))
                    if ["https://", "http://", "oci://"]
                        .iter()
                        .any(|s| repo.starts_with(s)) =>
                {
                    Some(repo.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(RenderError::Invalid {
                        at: Origin {
                            file: self.base.spell(file),
                            line: 1,
                        },
                        message: format!(
                            "{at}: no chart at {} and no http(s) or oci:// repo to fetch it from; \
                             vendor the chart there (`helm pull --untar`) or set repo",
                            self.base.spell(&chart_dir).display()
                        ),
                    });
                }
            };
            for key in ["valuesFile"] {
                if let Some(values) = text(key) {
                    self.reference(dir, file, "helmCharts", &values, Accepts::File)?;
                }
            }
            for values in items(entry.get("additionalValuesFiles")) {
                if let Some(values) = values.as_str() {
                    self.reference(dir, file, "helmCharts", values, Accepts::File)?;
                }
            }
            self.tree.helm_charts.push(HelmChartUse {
                name,
                chart_dir,
                fetch_from,
                version,
            });
        }
        Ok(())
    }

    fn reference(
        &mut self,
        dir: &Path,
        file: &Path,
        field: &'static str,
        entry: &str,
        accepts: Accepts,
    ) -> Result<(), RenderError> {
        // An inline patch or generator configuration, not a path.
        if entry.contains('\n') {
            return Ok(());
        }
        let Some(resolved) = self.base.resolve(&dir.join(entry), file, field, entry)? else {
            if accepts == Accepts::FileOrDir && self.allow_remote && looks_remote(entry) {
                self.tree.remote = true;
                return Ok(());
            }
            return Err(RenderError::NotLocal {
                file: self.base.spell(file),
                field,
                reference: entry.to_string(),
            });
        };
        if resolved.is_dir() && accepts == Accepts::FileOrDir {
            self.kustomization(&resolved)
        } else {
            self.tree.files.insert(resolved);
            Ok(())
        }
    }
}

/// Whether a reference that is not a local path is a remote base (kustomize tries
/// a local path first, then a URL).
fn looks_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.contains("?ref=")
        || entry.contains("//")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| entry.starts_with(host))
}

/// Every path a kustomization names, with its field: lists of paths, `path` keys of
/// patch-like entries, and generator sources (`files` may be `key=path`).
fn references(document: &Yaml) -> Vec<(&'static str, String, Accepts)> {
    let mut out = Vec::new();
    let strings = |value: Option<&Yaml>| -> Vec<String> {
        match value {
            Some(Yaml::Sequence(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            Some(Yaml::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    for field in ["resources", "bases", "components"] {
        for entry in strings(document.get(field)) {
            out.push((field, entry, Accepts::FileOrDir));
        }
    }
    for field in [
        "crds",
        "configurations",
        "patchesStrategicMerge",
        "generators",
        "transformers",
        "validators",
    ] {
        for entry in strings(document.get(field)) {
            out.push((field, entry, Accepts::File));
        }
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for item in items(document.get(field)) {
            for entry in strings(item.get("path")) {
                out.push((field, entry, Accepts::File));
            }
        }
    }
    if let Some(entry) = document.get("openapi").and_then(|o| o.get("path")) {
        for entry in strings(Some(entry)) {
            out.push(("openapi", entry, Accepts::File));
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for item in items(document.get(field)) {
            for entry in strings(item.get("files")) {
                let path = entry.split_once('=').map_or(entry.as_str(), |(_, p)| p);
                out.push((field, path.to_string(), Accepts::File));
            }
            for key in ["envs", "env"] {
                for entry in strings(item.get(key)) {
                    out.push((field, entry, Accepts::File));
                }
            }
        }
    }
    out
}

fn items(value: Option<&Yaml>) -> &[Yaml] {
    match value {
        Some(Yaml::Sequence(items)) => items,
        _ => &[],
    }
}

/// What a wrapper kustomization builds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wrapped<'a> {
    /// A kustomization directory (resolved): its own loads stay root-only.
    Root(&'a Path),
    /// Files of a flat kustomization (resolved, checked to be inside it): a part.
    Files(&'a [PathBuf]),
}

/// Runs `kustomize build` on `what` through a wrapper kustomization; the rendered
/// stream and the wrapper's directory (origins are relative to it; it is gone when
/// this returns, only its name is needed).
pub(super) async fn build(
    program: &Program,
    what: Wrapped<'_>,
    helm: Option<&HelmCommand<'_>>,
    limits: ToolLimits,
) -> Result<(String, PathBuf), RunError> {
    let spawn = |source| RunError::Spawn {
        program: program.path.clone(),
        source,
    };
    let wrapper = tempfile::tempdir().map_err(spawn)?;
    let dir = std::fs::canonicalize(wrapper.path()).map_err(spawn)?;
    let (resources, restrictor) = match what {
        Wrapped::Root(root) => (vec![relative(&dir, root)], "LoadRestrictionsRootOnly"),
        // The wrapper names files outside its own directory, which root-only
        // forbids; each was checked to stay inside the kustomization's root. Named
        // absolutely, so that origins and errors name them so, whatever the wrapper.
        Wrapped::Files(files) => (files.to_vec(), "LoadRestrictionsNone"),
    };
    std::fs::write(
        dir.join("kustomization.yaml"),
        wrapper_kustomization(&resources),
    )
    .map_err(spawn)?;
    let mut args = if program.prefix.is_empty() {
        vec!["build".to_string()]
    } else {
        program.prefix.clone()
    };
    args.extend(
        [
            ".",
            &format!("--load-restrictor={restrictor}"),
            "--enable-alpha-plugins=false",
        ]
        .map(String::from),
    );
    // Kept until kustomize has run: the wrapper script lives in it.
    let helm_dir = tempfile::tempdir().map_err(spawn)?;
    match helm {
        None => args.push("--enable-helm=false".into()),
        Some(helm) => {
            let script = helm_dir.path().join("helm");
            write_script(&script, &helm_command(helm)).map_err(spawn)?;
            args.extend(["--enable-helm".into(), "--helm-command".into()]);
            args.push(script.display().to_string());
        }
    }
    let invocation = Invocation {
        program: &program.path,
        args,
        dir: &dir,
    };
    let out = process::run(invocation, limits).await?;
    Ok((String::from_utf8_lossy(&out).into_owned(), dir))
}

/// What kustomize's Helm inflator runs: converge's helm, told the cluster.
pub(super) struct HelmCommand<'a> {
    pub program: &'a Program,
    pub kube_version: &'a str,
    pub api_versions: &'a [String],
}

/// A shell script standing in for helm: `helm template` gets the cluster's
/// version and API versions first (an entry's own `kubeVersion`/`apiVersions`,
/// which kustomize appends, still win), anything that would download or install
/// is refused, the rest (`helm version`) passes through.
fn helm_command(helm: &HelmCommand<'_>) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
    let program: Vec<String> = std::iter::once(helm.program.path.display().to_string())
        .chain(helm.program.prefix.iter().cloned())
        .map(|part| quote(&part))
        .collect();
    let program = program.join(" ");
    let mut cluster = format!("--kube-version {}", quote(helm.kube_version));
    for version in helm.api_versions {
        cluster.push_str(&format!(" --api-versions {}", quote(version)));
    }
    if helm.kube_version.is_empty() {
        cluster.clear();
    }
    format!(
        "#!/bin/sh\n# converge's helm for kustomize's Helm inflator\ncase \"$1\" in\n  \
         template) shift; exec {program} template {cluster} \"$@\" ;;\n  \
         pull|fetch|install|upgrade|push|registry|repo|dependency|dep)\n    \
         echo \"converge: kustomize may not run 'helm $1': a chart comes from chartHome in the \
         source or is fetched by converge (helmCharts repo)\" >&2; exit 1 ;;\n  \
         *) exec {program} \"$@\" ;;\nesac\n"
    )
}

fn write_script(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The wrapper kustomization of `resources` (relative to the wrapper): origins
/// asked for, and the objects left in the order written (`fifo`). kustomize's
/// default (`legacy`) sort re-adds every object to its map, checking each against
/// all the others: a tenth of a 1000-object build's CPU, for an order converge does
/// not use (the plan orders by phase, wave and kind). Only the top kustomization's
/// `sortOptions` count, so the user's were never applied here either.
fn wrapper_kustomization(resources: &[PathBuf]) -> String {
    let resources: String = resources
        .iter()
        .map(|r| format!("- {}\n", serde_json::Value::String(r.display().to_string())))
        .collect();
    format!(
        "resources:\n{resources}buildMetadata: [originAnnotations]\nsortOptions:\n  order: fifo\n"
    )
}

/// The rendered objects, each with the origin kustomize recorded (the annotation
/// removed); problems in the stream are located in `stream` (a name for it).
pub(super) fn objects(
    text: &str,
    stream: &Path,
    wrapper: &Path,
    base: &Base,
) -> Result<Vec<Manifest>, RenderError> {
    let mut manifests = parse_str(text, stream)?;
    let mut lines = Lines::default();
    for manifest in &mut manifests {
        if let Some(origin) = take_origin(manifest, wrapper, base, &mut lines) {
            manifest.origin = origin;
        }
    }
    Ok(manifests)
}

/// Removes the origin annotation (and `annotations`, when it held nothing else);
/// where it says the object came from.
pub(super) fn take_origin(
    manifest: &mut Manifest,
    wrapper: &Path,
    base: &Base,
    lines: &mut Lines,
) -> Option<Origin> {
    let metadata = manifest.body.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let recorded = annotations.remove(ORIGIN_ANNOTATION)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    let recorded: Yaml = serde_yaml::from_str(recorded.as_str()?).ok()?;
    let path = recorded
        .get("path")
        .or_else(|| recorded.get("configuredIn"))?
        .as_str()?;
    if let Some(repo) = recorded.get("repo").and_then(Yaml::as_str) {
        let file = PathBuf::from(format!("{repo}//{path}"));
        return Some(Origin { file, line: 1 });
    }
    let file = normalize(&wrapper.join(path));
    let found = lines.origin(&file, &manifest.kind.clone(), manifest.name());
    Some(Origin {
        file: base.spell(&file),
        line: found.line,
    })
}

/// Where a kustomize error says the problem is: the last directory it named, the
/// file in it (`in File: x.yaml`, else its kustomization) and the last `line N`;
/// and the innermost message, without the chain of "accumulating …" around it.
pub(super) fn locate_error(message: &str) -> (Option<PathBuf>, Option<usize>, String) {
    let message = message.trim().trim_start_matches("Error: ");
    let (message, rest) = message.split_once('\n').unwrap_or((message, ""));
    let dir = last_quoted_after(message, "path '").map(PathBuf::from);
    let named = message
        .rsplit_once(" in File: ")
        .map(|(_, name)| PathBuf::from(name.trim().trim_end_matches(['"', '\''])));
    let file = match (dir, named) {
        // A part names its files absolutely.
        (_, Some(named)) if named.is_absolute() => Some(named),
        (Some(dir), Some(named)) => Some(dir.join(named)),
        (Some(dir), None) => Some(kustomization_file(&dir).unwrap_or_else(|| dir.join(FILES[0]))),
        (None, _) => None,
    };
    let line = last_line_number(message);
    let inner = message
        .rsplit_once("': ")
        .map_or(message, |(_, inner)| inner);
    (file, line, super::error::whole_message(inner, rest, &[]))
}

fn last_quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let start = message.rfind(marker)? + marker.len();
    let rest = &message[start..];
    Some(&rest[..rest.find('\'')?])
}

/// The number after the last `line ` of a tool's message.
pub(super) fn last_line_number(message: &str) -> Option<usize> {
    message.rmatch_indices("line ").find_map(|(at, _)| {
        let digits: String = message[at + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// The tool's refusal, located.
pub(super) fn failure(root: &Path, error: RunError, base: &Base) -> RenderError {
    let RunError::Failed(message) = error else {
        let root = root.to_path_buf();
        return RenderError::Run {
            tool: Tool::Kustomize,
            root,
            error,
        };
    };
    let (file, line, mut inner) = locate_error(&message);
    if let Some(file) = &file {
        inner = inner.replace(
            &file.display().to_string(),
            &base.spell(file).display().to_string(),
        );
    }
    RenderError::ToolFailed {
        tool: Tool::Kustomize,
        root: base.spell(root),
        file: file.map(|f| base.spell(&f)),
        line,
        message: inner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::write;

    /// A repository with an overlay on a base, and a directory beside it.
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        write(
            &repo,
            "base/kustomization.yaml",
            "resources: [deploy.yaml]\n",
        );
        write(&repo, "base/deploy.yaml", "kind: Deployment\n");
        write(
            &repo,
            "overlays/prod/kustomization.yml",
            "resources:\n- ../../base\n- extra.yaml\npatches:\n- path: patch.yaml\n- patch: |\n    inline: true\n\
             configMapGenerator:\n- name: c\n  files: [key=conf/app.properties]\n  envs: [conf/env]\n",
        );
        for file in [
            "extra.yaml",
            "patch.yaml",
            "conf/app.properties",
            "conf/env",
        ] {
            write(&repo, &format!("overlays/prod/{file}"), "x: 1\n");
        }
        write(tmp.path(), "outside/kustomization.yaml", "resources: []\n");
        (tmp, repo)
    }

    #[test]
    fn an_overlay_reaches_its_base_and_lists_what_it_reads() {
        let (_tmp, repo) = repo();
        let base = Base::new(&repo).unwrap();
        let tree = reach(&repo.join("overlays/prod"), &base, false).unwrap();
        let files: Vec<_> = tree
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(&base.canonical)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            files,
            [
                "base/deploy.yaml",
                "base/kustomization.yaml",
                "overlays/prod/conf/app.properties",
                "overlays/prod/conf/env",
                "overlays/prod/extra.yaml",
                "overlays/prod/kustomization.yml",
                "overlays/prod/patch.yaml",
            ]
        );
        assert!(!tree.remote);
    }

    #[test]
    fn a_base_outside_the_source_is_refused_naming_it() {
        let (_tmp, repo) = repo();
        write(
            &repo,
            "app/kustomization.yaml",
            "resources:\n- ../../outside\n",
        );
        let base = Base::new(&repo).unwrap();
        let err = reach(&repo.join("app"), &base, false).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, RenderError::Escapes { .. }), "{message}");
        assert!(
            message.contains("app/kustomization.yaml: resources \"../../outside\" leads to"),
            "{message}"
        );
        write(
            &repo,
            "app/kustomization.yaml",
            "patches:\n- path: /etc/passwd\n",
        );
        let err = reach(&repo.join("app"), &base, false).unwrap_err();
        assert!(err.to_string().contains("\"/etc/passwd\""), "{err}");
    }

    #[test]
    fn remote_bases_need_an_opt_in() {
        let (_tmp, repo) = repo();
        let url = "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.8.1";
        write(
            &repo,
            "app/kustomization.yaml",
            &format!("resources:\n- {url}\n"),
        );
        let base = Base::new(&repo).unwrap();
        let err = reach(&repo.join("app"), &base, false).unwrap_err();
        assert!(
            err.to_string().contains("allow_remote_bases = true"),
            "{err}"
        );
        let tree = reach(&repo.join("app"), &base, true).unwrap();
        assert!(tree.remote);
        write(
            &repo,
            "app/kustomization.yaml",
            "resources: [missing.yaml]\n",
        );
        let err = reach(&repo.join("app"), &base, true).unwrap_err();
        assert!(matches!(err, RenderError::NotLocal { .. }), "{err}");
    }

    #[test]
    fn an_invalid_kustomization_is_located() {
        let (_tmp, repo) = repo();
        write(&repo, "app/kustomization.yaml", "resources:\n- a\nfoo: [\n");
        let base = Base::new(&repo).unwrap();
        let err = reach(&repo.join("app"), &base, false).unwrap_err();
        assert!(err.to_string().contains("kustomization.yaml:"), "{err}");
    }

    #[test]
    fn errors_are_located_at_the_file_and_line_kustomize_names() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        write(&base, "kustomization.yaml", "resources: [service.yaml]\n");
        let message = format!(
            "Error: accumulating resources: accumulation err='accumulating resources from \
             '../repo/overlays/prod': '/x/overlays/prod' must resolve to a file': recursed \
             accumulation of path '{}': accumulating resources: accumulating resources from \
             'service.yaml': MalformedYAMLError: yaml: line 6: did not find expected node \
             content in File: service.yaml",
            base.display()
        );
        let (file, line, inner) = locate_error(&message);
        assert_eq!(file, Some(base.join("service.yaml")));
        assert_eq!(line, Some(6));
        assert_eq!(
            inner,
            "MalformedYAMLError: yaml: line 6: did not find expected node content in File: service.yaml"
        );
        let message = format!(
            "Error: accumulating resources: couldn't make target for path '{}': invalid \
             Kustomization: yaml: line 3: did not find expected node content",
            base.display()
        );
        let (file, line, _) = locate_error(&message);
        assert_eq!(file, Some(base.join("kustomization.yaml")));
        assert_eq!(line, Some(3));
        let message = "Error: accumulating resources: accumulating resources from \
             '/repo/app/f.yaml': MalformedYAMLError: yaml: line 6: did not find expected node \
             content in File: /repo/app/f.yaml\"";
        let (file, line, _) = locate_error(message);
        assert_eq!(
            file,
            Some(PathBuf::from("/repo/app/f.yaml")),
            "a part's file"
        );
        assert_eq!(line, Some(6));
        assert_eq!(locate_error("Error: boom"), (None, None, "boom".into()));
        // kustomize's Helm inflator quotes its entry over several lines and says
        // why at the end: all of it is shown.
        let inflator = "Error: trouble configuring builtin HelmChartInflationGenerator with \
                        config: `\nname: nope\nrepo: ./charts\n`: chart not found\n";
        let (_, _, text) = locate_error(inflator);
        assert!(
            text.ends_with("name: nope\nrepo: ./charts\n`: chart not found"),
            "{text}"
        );
    }

    #[test]
    fn the_wrapper_asks_for_origins_and_the_written_order() {
        let resources = [
            PathBuf::from("../repo/my overlay"),
            PathBuf::from("../a: b.yaml"),
        ];
        let text = wrapper_kustomization(&resources);
        let written: Yaml = serde_yaml::from_str(&text).unwrap();
        assert_eq!(written["resources"][0], "../repo/my overlay");
        assert_eq!(written["resources"][1], "../a: b.yaml");
        assert_eq!(written["buildMetadata"][0], "originAnnotations");
        assert_eq!(written["sortOptions"]["order"], "fifo");
    }

    #[test]
    fn the_origin_annotation_becomes_the_origin() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        write(
            &repo,
            "base/svc.yaml",
            "# c\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
        );
        let wrapper = tmp.path().join("wrap");
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  annotations:\n    \
                    config.kubernetes.io/origin: |\n      path: ../repo/base/svc.yaml\n  \
                    name: prod-web\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  \
                    annotations:\n    a: b\n    config.kubernetes.io/origin: |\n      \
                    configuredIn: ../repo/kustomization.yaml\n      configuredBy: {kind: X}\n  \
                    name: c\n";
        let base = Base::new(&repo).unwrap();
        let objects = objects(text, Path::new("stream"), &wrapper, &base).unwrap();
        assert_eq!(
            objects[0].origin.to_string(),
            format!("{}:2", repo.join("base/svc.yaml").display())
        );
        assert!(objects[0].body["metadata"].get("annotations").is_none());
        assert_eq!(objects[1].origin.file, repo.join("kustomization.yaml"));
        assert_eq!(
            objects[1].body["metadata"]["annotations"],
            serde_json::json!({"a": "b"})
        );
    }
}
