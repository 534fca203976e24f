//! Git sources against a real Git server on loopback: `git http-backend` behind a
//! basic-auth HTTP server (tests/it/common/git_http.rs), repositories made with the
//! `git` CLI, and an OpenSSH server (tests/it/common/sshd.rs). No network beyond
//! 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use crate::common::git::Upstream;
use crate::common::git_http::{GitHttpServer, RefusingPort};
use crate::common::sshd::Sshd;
use converge::config::Config;
use converge::source::{Source, SourceError};

const USER: &str = "deploy";
const PASSWORD: &str = "s3cret-Token-value";
const WRONG: &str = "Wr0ng-Password-zz";

/// A served upstream with one commit (`app/a.yaml`, `README.md`) on `main`.
struct Fixture {
    upstream: Upstream,
    server: GitHttpServer,
    first: String,
    state: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let upstream = Upstream::new("shop");
        let first = upstream.commit(
            &[("app/a.yaml", "kind: A\n"), ("README.md", "# shop\n")],
            "first",
        );
        let server = GitHttpServer::start(upstream.root.clone(), USER, PASSWORD);
        Fixture {
            upstream,
            server,
            first,
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn url(&self) -> String {
        self.server.url("shop.git")
    }

    /// A source for the served repository with `extra` TOML lines, logging in with
    /// `password` (through password_env) when given.
    fn source(&self, extra: &str, password: Option<&str>) -> Source {
        source_for(&self.url(), extra, password, self.state.path())
    }
}

/// Builds a source from config text, the way the daemon does.
fn source_for(url: &str, extra: &str, password: Option<&str>, state: &Path) -> Source {
    let creds = if password.is_some() {
        "username_env = \"GIT_USER\"\npassword_env = \"GIT_PASSWORD\"\n"
    } else {
        ""
    };
    let text = format!(
        "state_dir = {state:?}\n[[source]]\nname = \"shop\"\ngit = \"{url}\"\n{creds}{extra}"
    );
    let env = |name: &str| match name {
        "GIT_USER" => Some(USER.to_string()),
        "GIT_PASSWORD" => password.map(str::to_string),
        _ => None,
    };
    let config = Config::parse_with_env(&text, &state.join("config.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    Source::with_env(&config.sources[0], &config.state_dir, &env).expect("source")
}

fn assert_no_secret(err: &SourceError, secret: &str) {
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(secret), "the secret leaked: {shown}");
}

#[tokio::test]
async fn clones_then_fetches_a_new_commit() {
    let fx = Fixture::new();
    let source = fx.source("", Some(PASSWORD));
    let snap = source.fetch().await.expect("first fetch");
    assert_eq!(snap.revision, fx.first);
    assert_eq!(
        std::fs::read_to_string(snap.root.join("app/a.yaml")).unwrap(),
        "kind: A\n"
    );

    let second = fx.upstream.commit(&[("app/a.yaml", "kind: B\n")], "second");
    let snap = source.fetch().await.expect("second fetch");
    assert_eq!(snap.revision, second);
    assert_eq!(
        std::fs::read_to_string(snap.root.join("app/a.yaml")).unwrap(),
        "kind: B\n"
    );

    // Nothing new: same revision, and only the ref list was asked for.
    let before = fx.server.upload_count();
    let again = source.fetch().await.expect("third fetch");
    assert_eq!(again.revision, second);
    assert_eq!(
        fx.server.upload_count(),
        before,
        "an unchanged fetch downloads nothing"
    );
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_the_password() {
    let fx = Fixture::new();
    let err = fx
        .source("", Some(WRONG))
        .fetch()
        .await
        .expect_err("must fail");
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    let message = err.to_string();
    let expected = format!("authentication to {} failed", fx.url());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("password_env"), "{message}");
    assert_no_secret(&err, WRONG);
}

#[tokio::test]
async fn missing_credentials_say_what_to_configure() {
    let fx = Fixture::new();
    let err = fx.source("", None).fetch().await.expect_err("must fail");
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("set password_env"), "{err}");
}

#[tokio::test]
async fn credentials_in_the_url_work_and_never_show() {
    let fx = Fixture::new();
    let state = tempfile::tempdir().unwrap();
    let good = fx
        .url()
        .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    let source = source_for(&good, "", None, state.path());
    assert_eq!(source.fetch().await.expect("fetch").revision, fx.first);
    assert!(
        !source.location().contains(PASSWORD),
        "{}",
        source.location()
    );

    let bad = fx
        .url()
        .replace("http://", &format!("http://{USER}:{WRONG}@"));
    let err = source_for(&bad, "", None, tempfile::tempdir().unwrap().path())
        .fetch()
        .await
        .expect_err("must fail");
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    // The URL is shown with its password masked.
    let shown = fx.url().replace("http://", &format!("http://{USER}:***@"));
    let expected = format!("authentication to {shown} failed");
    assert!(err.to_string().starts_with(&expected), "{err}");
    assert_no_secret(&err, WRONG);
}

#[tokio::test]
async fn unreachable_remote_is_a_typed_error() {
    let state = tempfile::tempdir().unwrap();
    let closed = RefusingPort::new();
    let url = format!("http://127.0.0.1:{}/shop.git", closed.port);
    let err = source_for(&url, "", Some(PASSWORD), state.path())
        .fetch()
        .await
        .expect_err("must fail");
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_no_secret(&err, PASSWORD);
}

#[tokio::test]
async fn force_push_moves_to_the_forced_commit() {
    let fx = Fixture::new();
    let source = fx.source("", Some(PASSWORD));
    fx.upstream.commit(&[("app/b.yaml", "kind: B\n")], "second");
    assert!(
        source
            .fetch()
            .await
            .expect("fetch")
            .root
            .join("app/b.yaml")
            .exists()
    );

    fx.upstream.git(&["reset", "-q", "--hard", &fx.first]);
    let forced = fx
        .upstream
        .commit_local(&[("app/c.yaml", "kind: C\n")], "rewritten");
    fx.upstream
        .git(&["push", "-q", "--force", "origin", "HEAD"]);
    let snap = source.fetch().await.expect("fetch after force-push");
    assert_eq!(snap.revision, forced);
    assert!(
        !snap.root.join("app/b.yaml").exists(),
        "b.yaml is gone with its commit"
    );
    assert!(snap.root.join("app/c.yaml").exists());
}

#[tokio::test]
async fn local_edits_in_the_checkout_are_discarded() {
    let fx = Fixture::new();
    let source = fx.source("", Some(PASSWORD));
    let snap = source.fetch().await.expect("fetch");
    // (A different size: same-size edits within a second hide from stat, as in git.)
    std::fs::write(snap.root.join("app/a.yaml"), "kind: Tampered\n").unwrap();
    std::fs::write(snap.root.join("app/extra.yaml"), "kind: X\n").unwrap();
    let snap = source.fetch().await.expect("fetch");
    assert_eq!(
        std::fs::read_to_string(snap.root.join("app/a.yaml")).unwrap(),
        "kind: A\n"
    );
    assert!(!snap.root.join("app/extra.yaml").exists());
}

#[tokio::test]
async fn tags_pin_their_commit() {
    let fx = Fixture::new();
    fx.upstream.git(&["tag", "-a", "v1", "-m", "release 1"]);
    fx.upstream.git(&["tag", "light"]);
    fx.upstream.git(&["push", "-q", "origin", "v1", "light"]);
    fx.upstream
        .commit(&[("app/a.yaml", "kind: Later\n")], "later");

    for tag in ["v1", "light"] {
        let state = tempfile::tempdir().unwrap();
        let extra = format!("tag = \"{tag}\"\n");
        let source = source_for(&fx.url(), &extra, Some(PASSWORD), state.path());
        let snap = source.fetch().await.expect("fetch tag");
        assert_eq!(snap.revision, fx.first, "tag {tag}");
    }
}

#[tokio::test]
async fn commits_pin_even_when_the_branch_moves() {
    let fx = Fixture::new();
    fx.upstream
        .commit(&[("app/a.yaml", "kind: Later\n")], "later");
    let source = fx.source(&format!("commit = \"{}\"\n", fx.first), Some(PASSWORD));
    let snap = source.fetch().await.expect("fetch commit");
    assert_eq!(snap.revision, fx.first);
    assert_eq!(
        std::fs::read_to_string(snap.root.join("app/a.yaml")).unwrap(),
        "kind: A\n"
    );
    // Present locally now: no request at all.
    let before = fx.server.request_count();
    assert_eq!(source.fetch().await.expect("refetch").revision, fx.first);
    assert_eq!(fx.server.request_count(), before);
}

#[tokio::test]
async fn unknown_refs_are_typed_errors() {
    let fx = Fixture::new();
    let err = fx
        .source("branch = \"nope\"\n", Some(PASSWORD))
        .fetch()
        .await
        .expect_err("branch");
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("branch \"nope\" not found"),
        "{err}"
    );
    assert!(err.to_string().contains("remote branches: main"), "{err}");

    let state = tempfile::tempdir().unwrap();
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let extra = format!("commit = \"{missing}\"\n");
    let err = source_for(&fx.url(), &extra, Some(PASSWORD), state.path())
        .fetch()
        .await
        .expect_err("commit");
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(missing), "{err}");
}

#[tokio::test]
async fn path_selects_a_subdirectory() {
    let fx = Fixture::new();
    let source = fx.source("path = \"app\"\n", Some(PASSWORD));
    let snap = source.fetch().await.expect("fetch");
    assert!(snap.root.ends_with("shop/app"), "{}", snap.root.display());
    assert!(snap.root.join("a.yaml").is_file());

    let state = tempfile::tempdir().unwrap();
    let err = source_for(
        &fx.url(),
        "path = \"clusters/dev\"\n",
        Some(PASSWORD),
        state.path(),
    )
    .fetch()
    .await
    .expect_err("missing path");
    assert!(matches!(err, SourceError::PathNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("\"clusters/dev\""), "{err}");
    assert!(err.to_string().contains(&fx.first), "{err}");
}

/// The daemon's scheduler polls a Git source on its own tick; a second timer here
/// would race it (and did: the resync never ran).
#[tokio::test]
async fn a_git_source_has_no_watch_of_its_own() {
    let fx = Fixture::new();
    let source = fx.source("interval = \"200ms\"\n", Some(PASSWORD));
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let _handle = source.watch(tx).expect("watch");
    let sent = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert_eq!(sent.expect("closed at once"), None, "nothing is ever sent");
}

// ---------------------------------------------------------------------------------
// SSH: a real OpenSSH server on loopback (tests/it/common/sshd.rs).

/// A source for `upstream` over SSH with the given key and known_hosts.
fn ssh_source(
    sshd: &Sshd,
    upstream: &Upstream,
    key: &Path,
    known_hosts: &Path,
    state: &Path,
) -> Source {
    let text = format!(
        "state_dir = {state:?}\n[[source]]\nname = \"shop\"\ngit = \"{}\"\n\
         ssh_key_file = {key:?}\nknown_hosts_file = {known_hosts:?}\n",
        sshd.url(&upstream.bare)
    );
    let config = Config::parse(&text, &state.join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
    Source::new(&config.sources[0], &config.state_dir).expect("source")
}

fn ssh_fixture() -> (Upstream, String, Sshd, tempfile::TempDir) {
    let upstream = Upstream::new("shop");
    let first = upstream.commit(&[("app/a.yaml", "kind: A\n")], "first");
    (
        upstream,
        first,
        Sshd::start(),
        tempfile::tempdir().expect("tempdir"),
    )
}

#[tokio::test]
async fn ssh_fetches_with_a_key_and_hashed_known_hosts() {
    let (upstream, first, sshd, state) = ssh_fixture();
    let known = sshd.known_hosts("known_hosts", &sshd.host_key_pub, true);
    assert!(
        std::fs::read_to_string(&known).unwrap().starts_with("|1|"),
        "hashed entry"
    );
    let source = ssh_source(&sshd, &upstream, &sshd.client_key, &known, state.path());
    assert_eq!(source.fetch().await.expect("ssh fetch").revision, first);
    let second = upstream.commit(&[("app/a.yaml", "kind: B\n")], "second");
    assert_eq!(source.fetch().await.expect("ssh fetch").revision, second);
}

#[tokio::test]
async fn ssh_unknown_host_key_is_rejected() {
    let (upstream, _, sshd, state) = ssh_fixture();
    let known = sshd.known_hosts("known_hosts", "", false);
    std::fs::write(&known, "").unwrap();
    let err = ssh_source(&sshd, &upstream, &sshd.client_key, &known, state.path())
        .fetch()
        .await
        .expect_err("unknown host");
    assert!(matches!(err, SourceError::HostKeyUnknown { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains(&sshd.host_fingerprint()), "{shown}");
    assert!(
        shown.contains(&format!("ssh-keyscan -H -p {} 127.0.0.1", sshd.port)),
        "{shown}"
    );
}

#[tokio::test]
async fn ssh_mismatched_host_key_is_rejected() {
    let (upstream, _, sshd, state) = ssh_fixture();
    let impostor = state.path().join("impostor");
    crate::common::sshd::keygen(&impostor);
    let impostor_line = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let known = sshd.known_hosts("known_hosts", impostor_line.trim(), false);
    let err = ssh_source(&sshd, &upstream, &sshd.client_key, &known, state.path())
        .fetch()
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, SourceError::HostKeyMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does NOT match"), "{err}");
    assert!(err.to_string().contains(&sshd.host_fingerprint()), "{err}");
}

#[tokio::test]
async fn ssh_unauthorized_key_is_an_auth_error() {
    let (upstream, _, sshd, state) = ssh_fixture();
    let known = sshd.known_hosts("known_hosts", &sshd.host_key_pub, false);
    let stranger = state.path().join("stranger");
    crate::common::sshd::keygen(&stranger);
    let err = ssh_source(&sshd, &upstream, &stranger, &known, state.path())
        .fetch()
        .await
        .expect_err("unauthorized key");
    assert!(matches!(err, SourceError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("rejected the SSH key"), "{err}");
}
