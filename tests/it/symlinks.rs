//! Sources stay inside their root: a malicious repository (or directory) whose
//! symlinks lead to files of the host is refused, nothing outside is read, the last
//! good revision stays, and the next good commit recovers. Git checkouts write links
//! as links and never write through one.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::daemon::{Daemon, Drift, dir_config};
use crate::common::git::Upstream;
use crate::common::git_http::GitHttpServer;
use crate::common::{Manifests, TestEnv, configmap, eventually};
use converge::config::Config;
use converge::manifest::{self, ManifestError};
use converge::source::{Source, SourceError};

const USER: &str = "deploy";
const PASSWORD: &str = "Link-test-pa55word";

/// Files of "the host" that a source must never read: a ConfigMap manifest and a
/// directory holding another, each with a name unique to the test.
struct Outside {
    dir: tempfile::TempDir,
    /// The names of the ConfigMaps in `file()` and in `subdir()`.
    names: [String; 2],
}

impl Outside {
    fn new(ns: &str) -> Outside {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [format!("{ns}-host-file"), format!("{ns}-host-dir")];
        let outside = Outside { dir, names };
        std::fs::write(outside.file(), configmap(&outside.names[0], "stolen")).expect("write");
        std::fs::create_dir_all(outside.subdir()).expect("mkdir");
        let in_dir = outside.subdir().join("secret.yaml");
        std::fs::write(in_dir, configmap(&outside.names[1], "stolen")).expect("write");
        outside
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("outside.yaml")
    }

    fn subdir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// Neither outside ConfigMap exists in any namespace, and both files are intact.
    fn assert_untouched(&self, env: &TestEnv) {
        for name in &self.names {
            let selector = format!("metadata.name={name}");
            let found = env.kubectl(&["get", "configmap", "-A", "--field-selector", &selector]);
            assert!(found.trim().is_empty(), "{name} was applied: {found}");
        }
        let file = std::fs::read_to_string(self.file()).expect("outside file");
        assert_eq!(file, configmap(&self.names[0], "stolen"));
        let in_dir = std::fs::read_to_string(self.subdir().join("secret.yaml")).expect("read");
        assert_eq!(in_dir, configmap(&self.names[1], "stolen"));
    }
}

/// Links `link` (relative to the work tree) to `target`, then commits and pushes
/// everything with `files`.
fn commit_link(upstream: &Upstream, link: &str, target: &Path, files: &[(&str, &str)]) -> String {
    let path = upstream.work.join(link);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    symlink(target, path).expect("symlink");
    upstream.commit(files, &format!("link {link}"))
}

/// A Git source for `url` as the daemon builds it, logging in through env vars.
fn git_source(url: &str, extra: &str, state: &Path) -> Source {
    let text = format!(
        "state_dir = {state:?}\n[[source]]\nname = \"shop\"\ngit = \"{url}\"\n\
         username_env = \"GIT_USER\"\npassword_env = \"GIT_PASSWORD\"\n{extra}"
    );
    let env = |name: &str| match name {
        "GIT_USER" => Some(USER.to_string()),
        "GIT_PASSWORD" => Some(PASSWORD.to_string()),
        _ => None,
    };
    let config = Config::parse_with_env(&text, &state.join("config.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    Source::with_env(&config.sources[0], &config.state_dir, &env).expect("source")
}

#[tokio::test]
async fn a_git_checkout_writes_links_as_links_and_never_through_them() {
    let outside = Outside::new("checkout");
    let upstream = Upstream::new("shop");
    upstream.commit(&[("app/a.yaml", "kind: A\n")], "first");
    commit_link(&upstream, "app/evil.yaml", &outside.file(), &[]);
    commit_link(&upstream, "app/shared", &outside.subdir(), &[]);
    commit_link(&upstream, "linked", &outside.subdir(), &[]);
    let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    let state = tempfile::tempdir().expect("tempdir");
    let source = git_source(&server.url("shop.git"), "path = \"app\"\n", state.path());

    let snapshot = source.fetch().await.expect("fetch");
    for (link, target) in [("evil.yaml", outside.file()), ("shared", outside.subdir())] {
        let path = snapshot.root.join(link);
        let meta = std::fs::symlink_metadata(&path).expect("checked out");
        assert!(meta.is_symlink(), "{link} was not written as a link");
        assert_eq!(std::fs::read_link(&path).expect("read_link"), target);
    }
    let err = manifest::load(std::slice::from_ref(&snapshot.root)).expect_err("refused");
    assert!(matches!(err, ManifestError::Link(_)), "{err:?}");

    // The directory link becomes a real directory with a file of the outside name:
    // libgit2 replaces the link, it does not write through it.
    upstream.git(&["rm", "-q", "app/shared", "app/evil.yaml"]);
    upstream.commit(&[("app/shared/secret.yaml", "kind: Replaced\n")], "real");
    let snapshot = source.fetch().await.expect("fetch");
    let shared = snapshot.root.join("shared");
    assert!(!std::fs::symlink_metadata(&shared).unwrap().is_symlink());
    assert_eq!(manifest::files(&[snapshot.root]).unwrap().len(), 2);
    let in_dir = std::fs::read_to_string(outside.subdir().join("secret.yaml")).unwrap();
    assert!(
        in_dir.contains("stolen"),
        "written through the link: {in_dir}"
    );

    // A source whose `path` is itself a link out of the checkout fails its fetch.
    let other = tempfile::tempdir().expect("tempdir");
    let linked = git_source(&server.url("shop.git"), "path = \"linked\"\n", other.path());
    let err = linked.fetch().await.expect_err("refused");
    assert!(matches!(err, SourceError::Link(_)), "{err:?}");
    let expected = format!("linked -> {}", outside.subdir().display());
    assert!(err.to_string().contains(&expected), "{err}");
}

/// The daemon's source once it has failed at `revision`.
fn failed_at(daemon: &Daemon, revision: &str) -> Value {
    let failed = eventually(Duration::from_secs(15), || {
        let source = daemon.source();
        let at = source["attemptedRevision"].as_str() == Some(revision);
        (source["result"] == "failed" && at).then_some(source)
    });
    failed
        .unwrap_or_else(|| panic!("{revision} was not refused:\n{}", daemon.log()))
        .value
}

#[test]
fn escaping_links_in_a_git_repository_are_refused_and_the_last_good_revision_stays() {
    let env = TestEnv::new("symlinks-git");
    let outside = Outside::new(&env.ns);
    let upstream = Upstream::new("config");
    let good = upstream.commit(&[("clusters/dev/a.yaml", &configmap("a", "1"))], "first");
    let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
    let config = format!(
        r#"state_dir = "{{state}}"

[[source]]
name = "{{ns}}"
git = "{url}"
branch = "main"
path = "clusters/dev"
interval = "1s"
username_env = "TEST_GIT_USER"
password_env = "TEST_GIT_PASSWORD"
namespace = "{{ns}}"
prune = true
"#,
        url = server.url("config.git"),
    );
    let vars = [("TEST_GIT_USER", USER), ("TEST_GIT_PASSWORD", PASSWORD)];
    let daemon = Daemon::start_with_env(&env, &config, &[], &vars);
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(env.configmap_value("a").as_deref(), Some("1"));

    // A file link to the host, in a commit that also changes `a`.
    let a2 = configmap("a", "2");
    let evil = commit_link(
        &upstream,
        "clusters/dev/evil.yaml",
        &outside.file(),
        &[("clusters/dev/a.yaml", &a2)],
    );
    let source = failed_at(&daemon, &evil);
    let error = source["error"].as_str().unwrap_or_default();
    let named = format!("clusters/dev/evil.yaml -> {}", outside.file().display());
    assert!(error.contains(&named), "the link is not named: {source:#}");
    assert!(error.contains("leads outside"), "{error}");
    assert_eq!(source["revision"].as_str(), Some(good.as_str()));

    // A directory link to the host (the file link gone).
    upstream.git(&["rm", "-q", "clusters/dev/evil.yaml"]);
    let shared = commit_link(&upstream, "clusters/dev/shared", &outside.subdir(), &[]);
    let source = failed_at(&daemon, &shared);
    let error = source["error"].as_str().unwrap_or_default();
    let named = format!("clusters/dev/shared -> {}", outside.subdir().display());
    assert!(error.contains(&named), "the link is not named: {source:#}");
    assert_eq!(source["revision"].as_str(), Some(good.as_str()));
    assert_eq!(
        env.configmap_value("a").as_deref(),
        Some("1"),
        "nothing of a refused revision is applied"
    );
    outside.assert_untouched(&env);

    // The fix recovers.
    upstream.git(&["rm", "-q", "clusters/dev/shared"]);
    let fixed = upstream.commit(&[("clusters/dev/a.yaml", &configmap("a", "3"))], "fix");
    let applied = env.wait_configmap_value("a", "3", Duration::from_secs(15));
    assert!(
        applied.is_some(),
        "the fix was not applied:\n{}",
        daemon.log()
    );
    let recovered = eventually(Duration::from_secs(5), || {
        let source = daemon.source();
        source["revision"].as_str() == Some(fixed.as_str()) && source["result"] == "synced"
    });
    assert!(recovered.is_some(), "{:#}", daemon.source());
    outside.assert_untouched(&env);
}

#[test]
fn a_directory_source_with_an_escaping_link_reports_it_and_recovers() {
    let env = TestEnv::new("symlinks-dir");
    let outside = Outside::new(&env.ns);
    let manifests = Manifests::with("a.yaml", &configmap("a", "1"));
    let daemon = Daemon::start(&env, &dir_config(manifests.path(), "1h", Drift::Heal), &[]);
    daemon.wait_ready(Duration::from_secs(30));
    assert_eq!(env.configmap_value("a").as_deref(), Some("1"));

    manifests.write("a.yaml", &configmap("a", "2"));
    symlink(outside.subdir(), manifests.path().join("shared")).expect("symlink");
    let failed = eventually(Duration::from_secs(10), || {
        let source = daemon.source();
        (source["result"] == "failed").then_some(source)
    });
    let source = failed
        .unwrap_or_else(|| panic!("the link was not reported:\n{}", daemon.log()))
        .value;
    let named = format!("shared -> {}", outside.subdir().display());
    assert!(
        source["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&named),
        "{source:#}"
    );
    assert_eq!(env.configmap_value("a").as_deref(), Some("1"));
    outside.assert_untouched(&env);

    std::fs::remove_file(manifests.path().join("shared")).expect("unlink");
    let applied = env.wait_configmap_value("a", "2", Duration::from_secs(10));
    assert!(applied.is_some(), "did not recover:\n{}", daemon.log());
}

#[test]
fn apply_refuses_a_directory_with_an_escaping_link_and_writes_nothing() {
    let env = TestEnv::new("symlinks-cli");
    let outside = Outside::new(&env.ns);
    let manifests = Manifests::with("a.yaml", &configmap("a", "1"));
    let links = [("evil.yaml", outside.file()), ("shared", outside.subdir())];
    for (link, target) in links {
        let path = manifests.path().join(link);
        symlink(&target, &path).expect("symlink");
        let out = env
            .converge_command()
            .args(["apply", manifests.arg(), "--prune"])
            .args(["-n", &env.ns, "--name", &env.ns])
            .output()
            .expect("run converge");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let named = format!("{} -> {}", path.display(), target.display());
        assert!(stderr.contains(&named), "the link is not named: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::fs::remove_file(&path).expect("unlink");
    }
    assert_eq!(env.configmap_value("a"), None, "nothing was written");
    let parent = format!("converge-{}", env.ns);
    assert_eq!(
        env.configmap_value(&parent),
        None,
        "no ApplySet parent either"
    );
    outside.assert_untouched(&env);
}
