//! Rendering with the real tools (`hack/tools.sh` builds them; `hack/controlplane.sh
//! env` puts them on PATH): `converge apply` and `diff` of kustomize bases and a Helm
//! chart from tests/fixtures, located errors that write nothing, and a missing tool.

use crate::common::{Manifests, TestEnv, assert_success, configmap, repo_root};
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(path: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(path)
}

fn podinfo_chart() -> PathBuf {
    fixture("podinfo/charts/podinfo")
}

impl TestEnv {
    fn converge(&self, args: &[&str], root: &Path) -> Output {
        self.converge_command()
            .args(args)
            .arg(root)
            .args(["-n", &self.ns, "--name", "render", "-o", "json"])
            .output()
            .expect("run converge")
    }

    /// `apply` then `diff`: the objects applied, by kind, and a diff that is clean.
    fn apply_then_diff(&self, root: &Path, extra: &[&str]) -> Vec<(String, String)> {
        let applied = self.converge(&[&["apply"], extra].concat(), root);
        assert_success("converge apply", &applied);
        let report: serde_json::Value =
            serde_json::from_slice(&applied.stdout).expect("the JSON report");
        let diff = self.converge(&[&["diff"], extra].concat(), root);
        assert_success("converge diff (exit 0: nothing to change)", &diff);
        let mut objects: Vec<(String, String)> = report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| {
                assert_eq!(o["action"], "create", "{o}");
                let object = o["object"].as_str().unwrap_or_default().to_string();
                let origin = o["origin"].as_str().unwrap_or_default().to_string();
                (object, origin)
            })
            .collect();
        objects.sort();
        objects
    }

    /// What of `kinds` exists in the test's namespace.
    fn names(&self, kinds: &str) -> Vec<String> {
        let out = self.kubectl(&["get", kinds, "-n", &self.ns, "-o", "name"]);
        out.lines().map(str::to_string).collect()
    }
}

fn kinds(objects: &[(String, String)]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|(o, _)| o.split('/').next().unwrap_or_default().to_string())
        .collect();
    kinds.dedup();
    kinds
}

#[test]
fn microservices_demo_kustomize_base_applies_then_diffs_clean() {
    let env = TestEnv::new("render-kustomize-demo");
    let base = fixture("microservices-demo/kustomize-base");
    let objects = env.apply_then_diff(&base, &[]);
    assert_eq!(objects.len(), 35);
    assert_eq!(env.names("deployments").len(), 12);
    // Every object is located in the file it was written in, not in kustomize's output.
    let (_, frontend) = objects
        .iter()
        .find(|(o, _)| o.ends_with("/frontend") && o.starts_with("Deployment"))
        .expect("the frontend Deployment");
    assert!(
        frontend.ends_with("kustomize-base/frontend.yaml:15"),
        "{frontend}"
    );
}

#[test]
fn podinfo_kustomize_applies_then_diffs_clean() {
    let env = TestEnv::new("render-kustomize-podinfo");
    let objects = env.apply_then_diff(&fixture("podinfo/kustomize"), &[]);
    assert_eq!(
        kinds(&objects),
        [
            "Deployment.apps",
            "HorizontalPodAutoscaler.autoscaling",
            "Service"
        ]
    );
    let annotations = env.kubectl(&[
        "get",
        "deployment",
        "podinfo",
        "-n",
        &env.ns,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(
        !annotations.contains("config.kubernetes.io/origin"),
        "the origin annotation is removed before applying: {annotations}"
    );
}

/// The Pods of the test's namespace, as kubectl lists them, each with its
/// `helm.sh/hook` annotation if it has one.
fn pods_with_hooks(env: &TestEnv) -> Vec<(String, Option<String>)> {
    let out = env.kubectl(&["get", "pods", "-n", &env.ns, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("kubectl -o json prints JSON");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|pod| {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let hook = pod["metadata"]["annotations"]["helm.sh/hook"].as_str();
            (name.to_string(), hook.map(str::to_string))
        })
        .collect()
}

#[test]
fn podinfo_chart_applies_without_its_test_pods() {
    let env = TestEnv::new("render-helm-podinfo");
    // The chart has `helm test` Pods (random names, `helm.sh/hook: test-success`)
    // that `helm template` renders by default: they must be left out.
    let chart = podinfo_chart();
    let template = std::process::Command::new("helm")
        .args(["template", "render"])
        .arg(&chart)
        .args(["--kube-version", "1.34.0"])
        .output()
        .expect("run helm template");
    assert_success("helm template", &template);
    let rendered = String::from_utf8_lossy(&template.stdout);
    assert!(
        rendered.contains("\"helm.sh/hook\": test"),
        "the chart renders no `helm test` Pod: the check below proves nothing"
    );
    let objects = env.apply_then_diff(&chart, &[]);
    // Independently of converge's report: no Pod applied carries a test hook.
    let pods = pods_with_hooks(&env);
    let tests: Vec<_> = pods
        .iter()
        .filter(|(_, hook)| {
            let hooks = hook.as_deref().unwrap_or_default();
            hooks.split(',').any(|h| h.trim().starts_with("test"))
        })
        .collect();
    assert!(tests.is_empty(), "helm test Pods were applied: {tests:?}");
    assert_eq!(kinds(&objects), ["Deployment.apps", "Service"]);
    let (_, service) = &objects[1];
    assert!(
        service.ends_with("podinfo/templates/service.yaml:3"),
        "{service}"
    );
}

#[test]
fn podinfo_chart_with_production_values() {
    let env = TestEnv::new("render-helm-prod");
    let values = podinfo_chart().join("values-prod.yaml");
    let values = values.to_str().expect("UTF-8 path");
    let args = ["--values", values, "--release", "web"];
    let objects = env.apply_then_diff(&podinfo_chart(), &args);
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment.apps",
            "HorizontalPodAutoscaler.autoscaling",
            "Service"
        ]
    );
    assert!(
        env.names("deployments")
            .contains(&"deployment.apps/web-podinfo-redis".to_string())
    );
}

/// A repository of an overlay on a base, with `broken` replacing the base's
/// Service when given.
fn overlay(broken: Option<&str>) -> Manifests {
    let repo = Manifests::new();
    std::fs::create_dir(repo.path().join(".git")).expect("mark the repository");
    for file in [
        "deployment.yaml",
        "hpa.yaml",
        "kustomization.yaml",
        "service.yaml",
    ] {
        let text = std::fs::read_to_string(fixture("podinfo/kustomize").join(file))
            .expect("read the fixture");
        repo.write(&format!("base/{file}"), &text);
    }
    if let Some(text) = broken {
        repo.write("base/service.yaml", text);
    }
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources:\n- ../../base\nnamePrefix: prod-\n",
    );
    repo
}

fn assert_refused(env: &TestEnv, out: &Output, expected: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in expected {
        assert!(stderr.contains(part), "{part:?} not in:\n{stderr}");
    }
    assert!(
        env.names("deployments,services,configmaps")
            .iter()
            .all(|n| n == "configmap/kube-root-ca.crt"),
        "nothing is written"
    );
}

#[test]
fn an_overlay_reaches_its_base_in_the_repository_but_not_beyond() {
    let env = TestEnv::new("render-overlay");
    let repo = overlay(None);
    let objects = env.apply_then_diff(&repo.path().join("overlays/prod"), &[]);
    assert_eq!(objects.len(), 3);
    assert!(
        objects[0].1.contains("base/deployment.yaml:"),
        "{objects:?}"
    );
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources:\n- ../../base\n- ../../../outside\n",
    );
    let out = env.converge(&["diff"], &repo.path().join("overlays/prod"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("overlays/prod/kustomization.yaml: resources \"../../../outside\""),
        "{stderr}"
    );
}

#[test]
fn a_kustomize_build_error_names_file_and_line_and_writes_nothing() {
    let env = TestEnv::new("render-kustomize-error");
    let repo = overlay(Some(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo\nspec:\n  ports: [1,\n",
    ));
    let out = env.converge(&["apply"], &repo.path().join("overlays/prod"));
    assert_refused(
        &env,
        &out,
        &["base/service.yaml:6: kustomize failed on ", "yaml: line 6"],
    );
}

#[test]
fn a_helm_template_error_names_file_and_line_and_writes_nothing() {
    let env = TestEnv::new("render-helm-error");
    let chart = Manifests::new();
    copy_dir(&podinfo_chart(), chart.path());
    let service = chart.path().join("templates/service.yaml");
    let text = std::fs::read_to_string(&service).expect("read the template");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "  name: {{ include \"no-such-template\" . }}";
    std::fs::write(&service, lines.join("\n")).expect("break the template");
    let out = env.converge(&["apply"], chart.path());
    assert_refused(
        &env,
        &out,
        &[
            "templates/service.yaml:3: helm failed on ",
            "no template \"no-such-template\"",
        ],
    );
}

#[test]
fn a_missing_tool_is_named_with_how_to_get_it_and_nothing_is_written() {
    let env = TestEnv::new("render-missing-tool");
    let empty = Manifests::new();
    for root in [podinfo_chart(), fixture("podinfo/kustomize")] {
        let out = env
            .converge_command()
            .env("PATH", empty.path())
            .args(["apply", "-n", &env.ns])
            .arg(&root)
            .output()
            .expect("run converge");
        let tool = if root.ends_with("kustomize") {
            "kustomize"
        } else {
            "helm"
        };
        assert_refused(
            &env,
            &out,
            &[
                &format!("rendering it needs {tool}, which was not found"),
                "hack/tools.sh build",
            ],
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A flat kustomization of 150 objects in `files` files (more than one part), with
/// what kustomize treats specially: a `List`, a local-config object it drops,
/// anchors, comments, quoted numbers and block text.
fn flat_kustomization(files: usize) -> Manifests {
    let repo = Manifests::new();
    let per_file = 150 / files;
    let mut listed = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
    );
    for f in 0..files {
        let mut text = String::from("# comment\n");
        for o in 0..per_file {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{f}-{o}\n  labels: &l {{app: a{f}}}\n\
                 data:\n  port: \"8080\"\n  yes: \"on\"\n  script: |\n    echo {f}\n    exit 0\n"
            ));
        }
        if f == 1 {
            text.push_str("---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: listed}}\n");
            text.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\n  annotations: {config.kubernetes.io/local-config: \"true\"}\n");
        }
        repo.write(&format!("f{f}.yaml"), &text);
        listed.push_str(&format!("- f{f}.yaml\n"));
    }
    repo.write("kustomization.yaml", &listed);
    repo
}

#[test]
fn a_large_flat_kustomization_built_in_parts_is_exactly_its_whole_build() {
    use converge::render::{
        self, Capabilities, PartCache, RenderSettings, Renderer, Target, ToolLimits, ToolPaths,
        Tools,
    };
    let repo = flat_kustomization(6);
    let settings = RenderSettings::default();
    let target = Target {
        root: repo.path(),
        base: repo.path(),
        namespace: "default",
        name: "flat",
        settings: &settings,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let tools = runtime.block_on(Tools::find(&ToolPaths::default()));
    let renderer = Renderer::new(tools, ToolLimits::default());
    let render = |prepared, cache: &mut PartCache| {
        runtime
            .block_on(renderer.render(
                &prepared,
                &target,
                &Capabilities::default(),
                None,
                cache,
                &Default::default(),
            ))
            .expect("kustomize on PATH (hack/tools.sh env) renders the fixture")
    };
    let prepared = render::prepare(&target).expect("prepare");
    assert!(prepared.parts() > 1, "150 flat objects are built in parts");
    let mut cache = PartCache::default();
    let parts = render(prepared, &mut cache);
    let whole = render(
        render::prepare(&target).expect("prepare").whole(),
        &mut PartCache::default(),
    );
    let view = |objects: &[converge::manifest::Manifest]| -> Vec<String> {
        objects
            .iter()
            .map(|m| format!("{}\n{}\n{:?}", m.origin, m.object_ref(), m.body))
            .collect()
    };
    assert_eq!(
        whole.len(),
        151,
        "150 ConfigMaps and the List's item; the local one dropped"
    );
    assert_eq!(view(&parts), view(&whole));
    assert!(
        view(&parts)[0].starts_with(&format!("{}:3\n", repo.path().join("f0.yaml").display())),
        "{}",
        view(&parts)[0]
    );
    // Built again from the cache: the same objects, no tool run needed.
    let again = render(render::prepare(&target).expect("prepare"), &mut cache);
    assert_eq!(view(&again), view(&whole));
}

#[test]
fn an_error_in_one_part_names_file_and_line_and_writes_nothing() {
    let env = TestEnv::new("render-part-error");
    let repo = flat_kustomization(6);
    repo.write(
        "f4.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo\nspec:\n  ports: [1,\n",
    );
    let out = env.converge(&["apply"], repo.path());
    assert_refused(
        &env,
        &out,
        &["f4.yaml:6: kustomize failed on ", "yaml: line 6"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("../"),
        "no path relative to a wrapper:\n{stderr}"
    );
    repo.write("f4.yaml", &configmap("c0-0", "twice"));
    let out = env.converge(&["apply"], repo.path());
    assert_refused(&env, &out, &["f4.yaml:1", "f0.yaml:"]);
}
