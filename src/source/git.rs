//! Git sources through libgit2 (git2): fetch one ref into a private checkout.
//!
//! Each source owns `<state_dir>/<name>/`, a normal repository with a detached HEAD.
//! A sync lists the remote's refs (one round trip), downloads objects only when the
//! wanted commit is not already present, and resets the work tree hard to it, so a
//! force-push simply moves to the new commit and local edits never survive. A pinned
//! commit already present needs no network at all.
//!
//! Credentials come from environment variables (HTTPS) or a key file (SSH); SSH host
//! keys are checked against a known_hosts file by [`super::known_hosts`]. Every error
//! message is scrubbed of passwords, tokens and URL-embedded credentials.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, Oid, RemoteCallbacks, Repository,
};

use super::known_hosts::{KnownHosts, Verdict, fingerprint, host_pattern};
use super::{Snapshot, SourceError};
use crate::config::{EnvLookup, GitConfig, GitRef};
use crate::manifest::{self, WalkError};

/// The ref that keeps the checked-out commit reachable inside our repository.
const TRACKING: &str = "refs/converge/target";
/// A file in `.git/` marking the repository as ours: we only ever reset or delete
/// what we created, whatever `state_dir` is set to.
const MARKER: &str = "converge-source";
/// libgit2's network timeouts, so a silent server cannot hang a fetch forever.
const CONNECT_TIMEOUT_MS: i32 = 15_000;
const IO_TIMEOUT_MS: i32 = 60_000;

/// A configured Git source; cheap to clone into a blocking task.
#[derive(Clone)]
pub(crate) struct GitSource(Arc<Inner>);

struct Inner {
    url: String,
    display_url: String,
    reference: GitRef,
    path: Option<PathBuf>,
    checkout: PathBuf,
    auth: Auth,
    webhook_secret: Option<Secret>,
}

enum Auth {
    None,
    Password {
        username: Option<String>,
        password: Secret,
    },
    Ssh {
        key: PathBuf,
        known_hosts: PathBuf,
        /// How known_hosts names the server: `host` or `[host]:port`.
        host: String,
    },
}

/// A secret value that never prints.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl GitSource {
    /// Resolves credentials from `env`; `checkout` is this source's state directory.
    pub(crate) fn new(
        config: &GitConfig,
        checkout: PathBuf,
        env: EnvLookup,
    ) -> Result<Self, SourceError> {
        let lookup = |key: &'static str, var: &Option<String>| -> Result<_, SourceError> {
            var.as_ref()
                .map(|var| {
                    env(var)
                        .filter(|v| !v.is_empty())
                        .map(Secret)
                        .ok_or_else(|| SourceError::MissingEnv {
                            key,
                            var: var.clone(),
                        })
                })
                .transpose()
        };
        let webhook_secret = lookup("webhook_secret_env", &config.webhook_secret_env)?;
        let auth = if config.is_ssh() {
            ssh_auth(config)?
        } else if let Some(password) = lookup("password_env", &config.password_env)? {
            let username = lookup("username_env", &config.username_env)?.map(|s| s.0);
            Auth::Password { username, password }
        } else {
            Auth::None
        };
        Ok(GitSource(Arc::new(Inner {
            url: config.url.clone(),
            display_url: config.display_url(),
            reference: config.reference.clone(),
            path: config.path.clone(),
            checkout,
            auth,
            webhook_secret,
        })))
    }

    /// `git <url> <ref>[ path "<path>"]`, without credentials.
    pub(crate) fn location(&self) -> String {
        let mut s = format!("git {} {}", self.0.display_url, self.0.reference);
        if let Some(path) = &self.0.path {
            s.push_str(&format!(" path {:?}", path.display().to_string()));
        }
        s
    }

    pub(crate) fn webhook_secret(&self) -> Option<&[u8]> {
        self.0.webhook_secret.as_ref().map(|s| s.0.as_bytes())
    }

    /// Brings the checkout to the wanted commit and returns it. Blocking.
    pub(crate) fn sync(&self) -> Result<Snapshot, SourceError> {
        set_timeouts();
        let repo = self.0.open_repo()?;
        let session = Session::new(&self.0);
        let commit = match &self.0.reference {
            GitRef::Commit(sha) => session.ensure_commit(&repo, sha)?,
            GitRef::Branch(b) => session.follow(&repo, &format!("refs/heads/{b}"))?,
            GitRef::Tag(t) => session.follow(&repo, &format!("refs/tags/{t}"))?,
            GitRef::Ref(r) => session.follow(&repo, r)?,
        };
        self.0.checkout(&repo, commit)?;
        self.0.snapshot(commit)
    }
}

fn ssh_auth(config: &GitConfig) -> Result<Auth, SourceError> {
    let (Some(key), Some(known_hosts)) = (&config.ssh_key_file, &config.known_hosts_file) else {
        return Err(SourceError::Git {
            url: config.display_url(),
            detail: "SSH sources need ssh_key_file and known_hosts_file".into(),
        });
    };
    let (host, port) = ssh_host_port(&config.url).ok_or_else(|| SourceError::Git {
        url: config.display_url(),
        detail: "cannot find the host name in the SSH URL".into(),
    })?;
    Ok(Auth::Ssh {
        key: key.clone(),
        known_hosts: known_hosts.clone(),
        host: host_pattern(&host, port),
    })
}

/// Host and port of `ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`.
fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split('/').next()?;
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6.split_once(']')?;
            let port = after
                .strip_prefix(':')
                .map_or(Some(22), |p| p.parse().ok())?;
            return Some((host.to_string(), port));
        }
        return match host_port.split_once(':') {
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((host_port.to_string(), 22)),
        };
    }
    let (user_host, _) = url.split_once(':')?;
    let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
    (!host.is_empty()).then(|| (host.to_string(), 22))
}

/// Sets libgit2's global network timeouts once, before this process's first Git
/// operation (all of which go through [`GitSource::sync`], after this `Once`).
fn set_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: these write two C ints that libgit2 reads only during network
        // operations; every such operation in this process starts after this Once
        // has completed, so nothing reads them concurrently.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(IO_TIMEOUT_MS);
        }
    });
}

// ---------------------------------------------------------------------------------
// The local repository

impl Inner {
    /// Opens our checkout, creating it on first use. A directory converge did not
    /// create is never touched; one it did create but that is broken is re-made.
    fn open_repo(&self) -> Result<Repository, SourceError> {
        let marker = self.checkout.join(".git").join(MARKER);
        if let Ok(repo) = Repository::open(&self.checkout) {
            if marker.is_file() {
                return Ok(repo);
            }
        }
        if self.checkout.exists() {
            let empty = std::fs::read_dir(&self.checkout)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !marker.is_file() && !empty {
                return Err(self.git_error(format!(
                    "{} exists and was not created by converge; refusing to overwrite it. \
                     Choose another state_dir or remove that directory",
                    self.checkout.display()
                )));
            }
            tracing::warn!(dir = %self.checkout.display(), "re-creating a broken Git checkout");
            std::fs::remove_dir_all(&self.checkout)
                .map_err(|e| self.io_error(&self.checkout, e))?;
        }
        self.init_repo(&marker)
    }

    fn init_repo(&self, marker: &Path) -> Result<Repository, SourceError> {
        std::fs::create_dir_all(&self.checkout).map_err(|e| self.io_error(&self.checkout, e))?;
        let repo = Repository::init(&self.checkout).map_err(|e| self.git_error(e.message()))?;
        std::fs::write(marker, "checkout managed by converge; safe to delete\n")
            .map_err(|e| self.io_error(marker, e))?;
        Ok(repo)
    }

    /// Detaches HEAD at `commit` and makes the work tree match it exactly.
    ///
    /// A committed symlink is written as a link (`core.symlinks`, libgit2's default
    /// where the filesystem has links; a text file holding the target where it has
    /// none), never as its target's content, and libgit2 never writes through one:
    /// what a link leads to is for the manifest walk to judge.
    /// tests/it/symlinks.rs checks both.
    fn checkout(&self, repo: &Repository, commit: Oid) -> Result<(), SourceError> {
        let fail =
            |e: git2::Error| self.git_error(format!("checking out {commit}: {}", e.message()));
        let object = repo.find_object(commit, None).map_err(fail)?;
        repo.reference(TRACKING, commit, true, "converge: checked out")
            .map_err(fail)?;
        // `git checkout --force --detach` plus `git clean -fdx`, not `reset --hard`:
        // libgit2's reset drops the remove-untracked flags.
        let mut options = CheckoutBuilder::new();
        options.force().remove_untracked(true).remove_ignored(true);
        repo.checkout_tree(&object, Some(&mut options))
            .map_err(fail)?;
        repo.set_head_detached(commit).map_err(fail)
    }

    /// The checked-out `path`. The config refuses `..` in it, but a committed
    /// symlink on the way could still lead out of the checkout: it is followed only
    /// inside, as the manifest walk then does within `path` itself.
    fn snapshot(&self, commit: Oid) -> Result<Snapshot, SourceError> {
        let revision = commit.to_string();
        let not_found = || SourceError::PathNotFound {
            path: self.path.clone().unwrap_or_default(),
            revision: revision.clone(),
        };
        let root = match &self.path {
            Some(path) => match manifest::resolve_within(&self.checkout, path) {
                Ok(resolved) if resolved.is_dir() => self.checkout.join(path),
                Ok(_) => return Err(not_found()),
                Err(WalkError::Io { source, .. }) if is_missing(&source) => {
                    return Err(not_found());
                }
                Err(error) => return Err(error.into()),
            },
            None => self.checkout.clone(),
        };
        let base = self.checkout.clone();
        Ok(Snapshot {
            revision,
            root,
            base,
        })
    }

    fn git_error(&self, detail: impl fmt::Display) -> SourceError {
        SourceError::Git {
            url: self.display_url.clone(),
            detail: self.scrub(&detail.to_string()),
        }
    }

    fn io_error(&self, path: &Path, error: std::io::Error) -> SourceError {
        SourceError::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    /// Removes every credential we know of from a message libgit2 produced.
    fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.url, &self.display_url);
        for secret in self.secrets() {
            out = out.replace(&secret, "***");
        }
        out
    }

    /// The password or token, raw and as embedded (percent-encoded) in the URL.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Auth::Password { password, .. } = &self.auth {
            secrets.push(password.0.clone());
        }
        if let Some(userinfo) = url_userinfo(&self.url) {
            let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            secrets.push(secret.to_string());
            secrets.push(percent_decode(secret));
        }
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

fn url_userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    authority.rsplit_once('@').map(|(userinfo, _)| userinfo)
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------
// Talking to the remote

/// One sync's conversation with the remote: credentials handed out and the first
/// reason it failed that libgit2's own error would hide (auth, host key).
struct Session<'a> {
    source: &'a Inner,
    problem: RefCell<Option<SourceError>>,
}

impl<'a> Session<'a> {
    fn new(source: &'a Inner) -> Self {
        Session {
            source,
            problem: RefCell::new(None),
        }
    }

    /// Follows a branch or tag: list the remote's refs, download only if the tip is
    /// new here, and return the commit it points to.
    fn follow(&self, repo: &Repository, refname: &str) -> Result<Oid, SourceError> {
        let mut remote = repo
            .remote_anonymous(&self.source.url)
            .map_err(|e| self.classify(e))?;
        let mut conn = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), None)
            .map_err(|e| self.classify(e))?;
        let (tip, branches) = {
            let heads = conn.list().map_err(|e| self.classify(e))?;
            let find = |name: &str| heads.iter().find(|h| h.name() == name).map(|h| h.oid());
            let tip = find(&format!("{refname}^{{}}")).or_else(|| find(refname));
            let branches: Vec<String> = heads
                .iter()
                .filter_map(|h| h.name().strip_prefix("refs/heads/").map(String::from))
                .collect();
            (tip, branches)
        };
        let Some(tip) = tip else {
            return Err(self.ref_not_found(&branches));
        };
        if !has_commit(repo, tip) {
            tracing::debug!(url = %self.source.display_url, %refname, %tip, "downloading");
            let spec = format!("+{refname}:{TRACKING}");
            conn.remote()
                .download(&[spec], Some(&mut self.fetch_options()))
                .map_err(|e| self.classify(e))?;
        }
        repo.find_object(tip, None)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|e| {
                self.source
                    .git_error(format!("{refname} at {tip}: {}", e.message()))
            })
    }

    /// A pinned commit: used as is when present, else every branch and tag is
    /// fetched (servers rarely let clients ask for a bare commit id) and it must be
    /// among them.
    fn ensure_commit(&self, repo: &Repository, sha: &str) -> Result<Oid, SourceError> {
        let oid = Oid::from_str(sha).map_err(|e| self.source.git_error(e.message()))?;
        if has_commit(repo, oid) {
            return Ok(oid);
        }
        let mut remote = repo
            .remote_anonymous(&self.source.url)
            .map_err(|e| self.classify(e))?;
        let specs = [
            "+refs/heads/*:refs/converge/heads/*",
            "+refs/tags/*:refs/converge/tags/*",
        ];
        remote
            .fetch(&specs, Some(&mut self.fetch_options()), None)
            .map_err(|e| self.classify(e))?;
        if has_commit(repo, oid) {
            return Ok(oid);
        }
        Err(SourceError::RefNotFound {
            url: self.source.display_url.clone(),
            reference: format!("commit {sha}"),
            hint: " (it is not reachable from any branch or tag of the remote)".into(),
        })
    }

    fn ref_not_found(&self, branches: &[String]) -> SourceError {
        let hint = if branches.is_empty() {
            " (the remote has no branches)".to_string()
        } else {
            let shown: Vec<&str> = branches.iter().take(10).map(String::as_str).collect();
            format!(" (remote branches: {})", shown.join(", "))
        };
        SourceError::RefNotFound {
            url: self.source.display_url.clone(),
            reference: self.source.reference.to_string(),
            hint,
        }
    }

    fn fetch_options(&self) -> FetchOptions<'_> {
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        options
    }

    /// Fresh callbacks for one connection: each credential kind is offered once, so a
    /// rejected one ends in an error instead of libgit2 asking forever.
    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        let mut offered = CredentialType::empty();
        callbacks.credentials(move |_url, user_from_url, allowed| {
            self.credentials(user_from_url, allowed, &mut offered)
        });
        callbacks.certificate_check(|cert, _host| self.check_host_key(cert));
        callbacks
    }

    fn credentials(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
        offered: &mut CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = user_from_url.unwrap_or("git");
        match &self.source.auth {
            Auth::Ssh { .. } if allowed.contains(CredentialType::USERNAME) => Cred::username(user),
            Auth::Ssh { key, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                if offered.contains(CredentialType::SSH_KEY) {
                    return self
                        .refuse(format!("the server rejected the SSH key {}", key.display()));
                }
                offered.insert(CredentialType::SSH_KEY);
                let public = key.with_extension("pub");
                let public = public.is_file().then_some(public.as_path());
                Cred::ssh_key(user, public, key, None)
            }
            Auth::Password { username, password }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                if offered.contains(CredentialType::USER_PASS_PLAINTEXT) {
                    return self.refuse(
                        "the server rejected the user name and password (from username_env / \
                         password_env); check that the token is valid and can read the repository",
                    );
                }
                offered.insert(CredentialType::USER_PASS_PLAINTEXT);
                Cred::userpass_plaintext(username.as_deref().unwrap_or(user), &password.0)
            }
            _ => self.refuse(self.no_credentials_reason(allowed)),
        }
    }

    fn no_credentials_reason(&self, allowed: CredentialType) -> String {
        if url_userinfo(&self.source.url).is_some() {
            return "the server rejected the credentials in the URL".into();
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return "the server wants a user name and password and none are configured; set \
                    password_env (a token works) and optionally username_env"
                .into();
        }
        format!("the server wants credentials of a kind converge was not given ({allowed:?})")
    }

    /// Records why authentication failed and makes libgit2 stop.
    fn refuse<T>(&self, why: impl Into<String>) -> Result<T, git2::Error> {
        let why = why.into();
        self.record(SourceError::AuthFailed {
            url: self.source.display_url.clone(),
            detail: why.clone(),
        });
        Err(git2::Error::from_str(&why))
    }

    fn record(&self, problem: SourceError) {
        self.problem.borrow_mut().get_or_insert(problem);
    }

    /// SSH host keys are judged against known_hosts; TLS certificates are left to
    /// libgit2's normal verification (system trust store).
    fn check_host_key(
        &self,
        cert: &git2::cert::Cert<'_>,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let Auth::Ssh {
            known_hosts, host, ..
        } = &self.source.auth
        else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
            return self.reject(SourceError::Git {
                url: self.source.display_url.clone(),
                detail: "the SSH library did not provide the server's host key".into(),
            });
        };
        let known = KnownHosts::load(known_hosts).map_err(|error| {
            self.record(SourceError::Io {
                path: known_hosts.clone(),
                error,
            });
            git2::Error::from_str("cannot read known_hosts")
        })?;
        let (host, known_hosts, fingerprint) =
            (host.clone(), known_hosts.clone(), fingerprint(key));
        match known.check(&host, key) {
            Verdict::Trusted => Ok(CertificateCheckStatus::CertificateOk),
            Verdict::Unknown => self.reject(SourceError::HostKeyUnknown {
                host_arg: ssh_keyscan_arg(&host),
                host,
                known_hosts,
                fingerprint,
            }),
            Verdict::Mismatch | Verdict::Revoked => self.reject(SourceError::HostKeyMismatch {
                host,
                known_hosts,
                fingerprint,
            }),
        }
    }

    fn reject<T>(&self, problem: SourceError) -> Result<T, git2::Error> {
        let message = problem.to_string();
        self.record(problem);
        Err(git2::Error::from_str(&message))
    }

    /// Turns a libgit2 error into a typed one; a reason recorded by a callback wins.
    fn classify(&self, error: git2::Error) -> SourceError {
        if let Some(problem) = self.problem.borrow_mut().take() {
            return problem;
        }
        let url = self.source.display_url.clone();
        let detail = self.source.scrub(error.message());
        let auth_words = ["authenticat", "private key", "public key", "credentials"];
        let is_auth = error.code() == ErrorCode::Auth
            || (error.class() == ErrorClass::Ssh && auth_words.iter().any(|w| detail.contains(w)));
        if is_auth {
            return SourceError::AuthFailed { url, detail };
        }
        match error.class() {
            ErrorClass::Net
            | ErrorClass::Os
            | ErrorClass::Ssl
            | ErrorClass::Http
            | ErrorClass::Ssh => SourceError::Unreachable { url, detail },
            _ => SourceError::Git { url, detail },
        }
    }
}

/// `ssh-keyscan` arguments for a known_hosts host: `-p 2222 host` or `host`.
fn ssh_keyscan_arg(pattern: &str) -> String {
    match pattern.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((host, port)) => format!("-p {port} {host}"),
        None => pattern.to_string(),
    }
}

/// A name on the way is missing or is a file, not a directory.
fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn has_commit(repo: &Repository, oid: Oid) -> bool {
    repo.find_object(oid, None)
        .and_then(|o| o.peel_to_commit())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact_url;

    #[test]
    fn ssh_hosts_and_ports() {
        let cases = [
            ("git@github.com:org/repo.git", ("github.com", 22)),
            ("ssh://git@127.0.0.1:2222/srv/repo.git", ("127.0.0.1", 2222)),
            ("ssh://host/repo", ("host", 22)),
            ("ssh://git@[::1]:2200/repo", ("::1", 2200)),
            ("host:repo", ("host", 22)),
        ];
        for (url, (host, port)) in cases {
            assert_eq!(ssh_host_port(url), Some((host.to_string(), port)), "{url}");
        }
        assert_eq!(ssh_host_port("ssh://git@host:notaport/r"), None);
        assert_eq!(ssh_keyscan_arg("[127.0.0.1]:2222"), "-p 2222 127.0.0.1");
        assert_eq!(ssh_keyscan_arg("github.com"), "github.com");
    }

    fn source(url: &str, password: Option<&str>) -> Inner {
        Inner {
            url: url.into(),
            display_url: redact_url(url),
            reference: GitRef::Branch("main".into()),
            path: None,
            checkout: PathBuf::from("/nonexistent"),
            auth: match password {
                Some(p) => Auth::Password {
                    username: None,
                    password: Secret(p.into()),
                },
                None => Auth::None,
            },
            webhook_secret: None,
        }
    }

    #[test]
    fn messages_are_scrubbed_of_every_credential() {
        let inner = source("https://me:p%40ss@host/r.git", Some("tok3n-value"));
        let message = "failed for https://me:p%40ss@host/r.git: tok3n-value p@ss p%40ss";
        let scrubbed = inner.scrub(message);
        for secret in ["tok3n-value", "p@ss", "p%40ss"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("https://me:***@host/r.git"), "{scrubbed}");
    }

    #[test]
    fn secrets_never_print_in_debug() {
        assert_eq!(format!("{:?}", Secret("x".into())), "***");
    }

    #[test]
    fn a_foreign_directory_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("precious.txt"), "keep").unwrap();
        let mut inner = source("https://host/r.git", None);
        inner.checkout = tmp.path().to_path_buf();
        let err = inner.open_repo().err().expect("refused");
        assert!(err.to_string().contains("not created by converge"), "{err}");
        assert!(tmp.path().join("precious.txt").exists());
        // A Git repository someone else made is refused too.
        Repository::init(tmp.path()).unwrap();
        assert!(inner.open_repo().is_err());
    }

    /// `path` is followed through committed links only inside the checkout.
    #[test]
    fn the_path_stays_inside_the_checkout() {
        let tmp = tempfile::tempdir().unwrap();
        let checkout = tmp.path().join("src");
        std::fs::create_dir_all(checkout.join("envs/dev")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/dev")).unwrap();
        std::fs::write(checkout.join("file"), "").unwrap();
        std::os::unix::fs::symlink("envs", checkout.join("current")).unwrap();
        std::os::unix::fs::symlink("../outside", checkout.join("clusters")).unwrap();
        let mut inner = source("https://host/r.git", None);
        inner.checkout = checkout.clone();
        let mut snapshot = |path: &str| {
            inner.path = Some(PathBuf::from(path));
            inner.snapshot(Oid::ZERO_SHA1)
        };
        assert_eq!(
            snapshot("current/dev").unwrap().root,
            checkout.join("current/dev")
        );
        let err = snapshot("clusters/dev").unwrap_err();
        assert!(matches!(err, SourceError::Link(_)), "{err:?}");
        assert!(err.to_string().contains("clusters -> ../outside"), "{err}");
        for missing in ["envs/prod", "file", "file/x"] {
            let err = snapshot(missing).unwrap_err();
            assert!(matches!(err, SourceError::PathNotFound { .. }), "{err:?}");
        }
    }

    #[test]
    fn a_broken_checkout_of_ours_is_recreated() {
        let tmp = tempfile::tempdir().unwrap();
        let mut inner = source("https://host/r.git", None);
        inner.checkout = tmp.path().join("src");
        inner.open_repo().unwrap();
        std::fs::remove_file(inner.checkout.join(".git/HEAD")).unwrap();
        inner.open_repo().unwrap();
        assert!(inner.checkout.join(".git").join(MARKER).is_file());
    }
}
