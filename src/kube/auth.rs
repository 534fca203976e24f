//! Credentials at request time.
//!
//! [`super::config`] describes *how* to authenticate; this module produces the
//! credential for each request, because some change while the daemon runs: projected
//! service-account tokens rotate on disk, and exec plugins hand out short-lived tokens
//! (or client certificates) with an `expirationTimestamp`. Tokens never reach a log
//! line or an error message: header values are marked sensitive.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;

#[cfg(doc)]
use super::config::ClusterConfig;
use super::config::{Auth, ClusterConfigError, ExecConfig, parse_certs, parse_key};

/// How long a token read from a file is trusted before it is read again, even if
/// its modification time did not change (kubelet rewrites rotated tokens in place).
const TOKEN_FILE_TTL: Duration = Duration::from_secs(60);
/// Refresh an exec credential this long before it expires, so no request is sent
/// with a token that expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// A plugin that takes longer is treated as hung: the daemon must not stall forever.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// What one request carries.
#[derive(Clone, Default)]
pub(crate) struct Credential {
    pub bearer: Option<HeaderValue>,
    /// A client certificate handed out by an exec plugin.
    pub identity: Option<Arc<Identity>>,
}

/// A client certificate from an exec plugin; `generation` changes with every new
/// one so the client knows when to rebuild its TLS configuration.
pub(crate) struct Identity {
    pub generation: u64,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Produces the current credential for the configured [`Auth`].
pub(crate) enum Authenticator {
    /// Anonymous or TLS client certificate (handled by the TLS config).
    None,
    Static(HeaderValue),
    TokenFile(TokenFile),
    Exec(Box<ExecPlugin>),
}

impl Authenticator {
    /// `origin` names the kubeconfig context for errors (see [`ClusterConfig::origin`]).
    pub(crate) fn new(auth: &Auth, origin: &str) -> Result<Self, ClusterConfigError> {
        Ok(match auth {
            Auth::None | Auth::ClientCert { .. } => Authenticator::None,
            Auth::Token(token) => {
                Authenticator::Static(bearer(token).ok_or_else(|| ClusterConfigError::Entry {
                    entity: "the bearer token".into(),
                    file: PathBuf::from(origin),
                    problem: "contains characters that cannot be sent in an HTTP header".into(),
                })?)
            }
            Auth::TokenFile(path) => Authenticator::TokenFile(TokenFile::new(path.clone())),
            Auth::Exec(config) => Authenticator::Exec(Box::new(ExecPlugin::new(config.clone()))),
        })
    }

    /// The credential to send now, refreshing a rotated file or an expired plugin token.
    pub(crate) async fn credential(&self) -> Result<Credential, CredentialError> {
        match self {
            Authenticator::None => Ok(Credential::default()),
            Authenticator::Static(header) => Ok(Credential {
                bearer: Some(header.clone()),
                identity: None,
            }),
            Authenticator::TokenFile(file) => Ok(Credential {
                bearer: Some(file.current()?),
                identity: None,
            }),
            Authenticator::Exec(plugin) => plugin.credential().await,
        }
    }

    /// Whether a 401 may be cured by fetching the credential again.
    pub(crate) fn refreshable(&self) -> bool {
        matches!(self, Authenticator::TokenFile(_) | Authenticator::Exec(_))
    }

    /// Forgets the cached credential (after a 401) so the next request re-reads it.
    pub(crate) async fn invalidate(&self) {
        match self {
            Authenticator::TokenFile(file) => file.invalidate(),
            Authenticator::Exec(plugin) => *plugin.cache.lock().await = None,
            Authenticator::None | Authenticator::Static(_) => {}
        }
    }
}

/// Why no credential could be had: the token file could not be read, or the exec
/// plugin failed. The client turns it into its [`super::Error`].
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    TokenFile(#[from] ClusterConfigError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// `Bearer <token>` as a sensitive header value; `None` if the token is not a valid
/// header value (the caller reports that without quoting the token).
fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

// --- token file ---------------------------------------------------------------------

pub(crate) struct TokenFile {
    path: PathBuf,
    cache: std::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    header: HeaderValue,
    read_at: Instant,
    modified: Option<SystemTime>,
}

impl TokenFile {
    fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            cache: std::sync::Mutex::new(None),
        }
    }

    /// The token, re-read when the file changed or the cached copy is a minute old.
    /// Reading a small local file synchronously is cheaper than a blocking-pool hop.
    fn current(&self) -> Result<HeaderValue, ClusterConfigError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.read_at.elapsed() < TOKEN_FILE_TTL && c.modified == modified {
                return Ok(c.header.clone());
            }
        }
        match read_token_file(&self.path) {
            Ok(header) => {
                *cache = Some(CachedToken {
                    header: header.clone(),
                    read_at: Instant::now(),
                    modified,
                });
                Ok(header)
            }
            // client-go keeps using the last good token when a re-read fails.
            Err(e) => match cache.as_ref() {
                Some(c) => {
                    tracing::warn!(error = %e, "re-reading the token file failed; keeping the previous token");
                    Ok(c.header.clone())
                }
                None => Err(e),
            },
        }
    }

    fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

fn read_token_file(path: &Path) -> Result<HeaderValue, ClusterConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterConfigError::Read {
        what: "the bearer token file".into(),
        path: path.to_path_buf(),
        source,
    })?;
    let problem = |p: &str| ClusterConfigError::Entry {
        entity: "the bearer token file".into(),
        file: path.to_path_buf(),
        problem: p.into(),
    };
    if text.trim().is_empty() {
        return Err(problem("is empty"));
    }
    bearer(&text)
        .ok_or_else(|| problem("contains characters that cannot be sent in an HTTP header"))
}

// --- exec plugins -------------------------------------------------------------------

/// A client-go credential plugin failed. Messages carry the plugin's stderr and the
/// kubeconfig's `installHint`, never its stdout (which holds the credential).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "could not run the credential plugin `{command}` of user \"{user}\": {source}{}",
        hint(install_hint)
    )]
    Spawn {
        command: String,
        user: String,
        install_hint: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the credential plugin `{command}` of user \"{user}\" failed ({status}){}{}",
        stderr_phrase(stderr),
        hint(install_hint)
    )]
    Failed {
        command: String,
        user: String,
        status: String,
        stderr: String,
        install_hint: Option<String>,
    },
    #[error("the credential plugin `{command}` of user \"{user}\" did not finish within {} s; is it waiting for input?", timeout.as_secs())]
    Timeout {
        command: String,
        user: String,
        timeout: Duration,
    },
    #[error(
        "the credential plugin `{command}` of user \"{user}\" printed an unusable ExecCredential: {problem}"
    )]
    BadOutput {
        command: String,
        user: String,
        problem: String,
    },
    #[error(
        "the credential plugin `{command}` of user \"{user}\" needs an interactive terminal (interactiveMode: Always), which converge does not have; log in beforehand or configure a non-interactive plugin"
    )]
    Interactive { command: String, user: String },
}

fn hint(install_hint: &Option<String>) -> String {
    match install_hint {
        Some(h) => format!("\n{}", h.trim()),
        None => String::new(),
    }
}

fn stderr_phrase(stderr: &str) -> String {
    if stderr.is_empty() {
        "; it printed nothing on stderr".into()
    } else {
        format!(": {stderr}")
    }
}

/// The plugin's output (`ExecCredential`); only the fields converge uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    status: Option<ExecStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    token: Option<String>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    expiration_timestamp: Option<String>,
}

pub(crate) struct ExecPlugin {
    config: ExecConfig,
    cache: tokio::sync::Mutex<Option<CachedExec>>,
    generation: AtomicU64,
    /// How many times the plugin ran; tests assert caching with it.
    runs: AtomicU64,
}

#[derive(Clone)]
struct CachedExec {
    credential: Credential,
    expires: Option<SystemTime>,
}

impl CachedExec {
    fn fresh(&self) -> bool {
        match self.expires {
            None => true,
            Some(at) => SystemTime::now() + EXPIRY_MARGIN < at,
        }
    }
}

impl ExecPlugin {
    pub(crate) fn new(config: ExecConfig) -> Self {
        ExecPlugin {
            config,
            cache: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        }
    }

    /// The cached credential, or a new one when none is cached or it expires soon.
    /// The async mutex makes concurrent requests wait for one plugin run.
    pub(crate) async fn credential(&self) -> Result<Credential, CredentialError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref().filter(|c| c.fresh()) {
            return Ok(cached.credential.clone());
        }
        let fetched = self.run().await?;
        let credential = fetched.credential.clone();
        *cache = Some(fetched);
        Ok(credential)
    }

    #[cfg(test)]
    fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    async fn run(&self) -> Result<CachedExec, ExecError> {
        let c = &self.config;
        let command = c.command.clone();
        let user = c.user.clone();
        if c.interactive_mode == "Always" {
            return Err(ExecError::Interactive { command, user });
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(command = %c.command, user = %c.user, "running the exec credential plugin");
        let output = tokio::time::timeout(EXEC_TIMEOUT, self.command().output()).await;
        let output = match output {
            Err(_) => {
                return Err(ExecError::Timeout {
                    command,
                    user,
                    timeout: EXEC_TIMEOUT,
                });
            }
            Ok(Err(source)) => {
                return Err(ExecError::Spawn {
                    command,
                    user,
                    install_hint: c.install_hint.clone(),
                    source,
                });
            }
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            return Err(ExecError::Failed {
                command,
                user,
                status: output.status.to_string(),
                stderr: truncate(String::from_utf8_lossy(&output.stderr).trim(), 2000),
                install_hint: c.install_hint.clone(),
            });
        }
        self.parse(&output.stdout)
            .map_err(|problem| ExecError::BadOutput {
                command,
                user,
                problem,
            })
    }

    fn command(&self) -> tokio::process::Command {
        let c = &self.config;
        let mut spec = json!({ "interactive": false });
        if let Some(cluster) = &c.cluster_info {
            spec["cluster"] = cluster.clone();
        }
        let info = json!({ "apiVersion": c.api_version, "kind": "ExecCredential", "spec": spec });
        let mut cmd = tokio::process::Command::new(&c.command);
        cmd.args(&c.args)
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", info.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Parses stdout. Problems are described by position only: serde's messages can
    /// quote values, and the values here are credentials.
    fn parse(&self, stdout: &[u8]) -> Result<CachedExec, String> {
        let cred: ExecCredential = serde_json::from_slice(stdout).map_err(|e| {
            format!(
                "stdout is not valid ExecCredential JSON ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        if cred.kind != "ExecCredential" || cred.api_version != self.config.api_version {
            return Err(format!(
                "expected kind ExecCredential with apiVersion {}, got kind \"{}\" apiVersion \"{}\"",
                self.config.api_version, cred.kind, cred.api_version
            ));
        }
        let status = cred.status.ok_or("status is missing")?;
        let expires = match status.expiration_timestamp.as_deref() {
            None | Some("") => None,
            Some(ts) => Some(parse_rfc3339(ts).ok_or_else(|| {
                format!("status.expirationTimestamp \"{ts}\" is not an RFC 3339 time")
            })?),
        };
        let credential = Credential {
            bearer: self.bearer_from(status.token.as_deref())?,
            identity: self.identity_from(&status)?,
        };
        if credential.bearer.is_none() && credential.identity.is_none() {
            return Err(
                "status has neither a token nor clientCertificateData/clientKeyData".into(),
            );
        }
        Ok(CachedExec {
            credential,
            expires,
        })
    }

    fn bearer_from(&self, token: Option<&str>) -> Result<Option<HeaderValue>, String> {
        match token.filter(|t| !t.trim().is_empty()) {
            None => Ok(None),
            Some(t) => bearer(t).map(Some).ok_or_else(|| {
                "status.token contains characters that cannot be sent in an HTTP header".into()
            }),
        }
    }

    fn identity_from(&self, status: &ExecStatus) -> Result<Option<Arc<Identity>>, String> {
        let cert = status
            .client_certificate_data
            .as_deref()
            .filter(|s| !s.is_empty());
        let key = status.client_key_data.as_deref().filter(|s| !s.is_empty());
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(Arc::new(Identity {
                generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
                cert_chain: parse_certs(cert.as_bytes())
                    .map_err(|p| format!("status.clientCertificateData {p}"))?,
                key: parse_key(key.as_bytes()).map_err(|p| format!("status.clientKeyData {p}"))?,
            }))),
            _ => Err("status sets only one of clientCertificateData and clientKeyData".into()),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, with optional fraction and
/// numeric offset) — the only time format the Kubernetes API uses.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        part.bytes().all(|c| c.is_ascii_digit()).then_some(())?;
        part.parse().ok()
    };
    let seps_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !seps_ok {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let (nanos, zone) = split_fraction(&s[19..])?;
    let offset = parse_offset(zone)?;
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Splits `.123456Z` into nanoseconds and the zone part.
fn split_fraction(rest: &str) -> Option<(u32, &str)> {
    let Some(frac) = rest.strip_prefix('.') else {
        return Some((0, rest));
    };
    let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let mut nanos: u32 = 0;
    for (i, c) in frac.bytes().take(9).take(digits).enumerate() {
        nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
    }
    Some((nanos, &frac[digits..]))
}

/// `Z` → 0, `+02:00` → 7200 seconds east of UTC.
fn parse_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() != 6 || zone.as_bytes()[3] != b':' {
        return None;
    }
    let hours: i64 = zone[1..3].parse().ok()?;
    let minutes: i64 = zone[4..6].parse().ok()?;
    Some(sign * (hours * 3600 + minutes * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a shell-script plugin. Tests run it as `/bin/sh <script>`: executing a
    /// file just written can fail with ETXTBSY while another test thread forks.
    fn script(dir: &Path, name: &str, body: &str) -> ExecConfig {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        exec_config("/bin/sh".into(), vec![path.display().to_string()])
    }

    fn exec_config(command: String, args: Vec<String>) -> ExecConfig {
        ExecConfig {
            api_version: "client.authentication.k8s.io/v1".into(),
            command,
            args,
            env: vec![("PLUGIN_MODE".into(), "test".into())],
            install_hint: Some("install it with: brew install the-plugin".into()),
            interactive_mode: "Never".into(),
            cluster_info: Some(json!({"server": "https://k.example"})),
            user: "dev".into(),
        }
    }

    /// A plugin that counts its runs in `count` and prints a token expiring at `expiry`.
    fn token_plugin(dir: &Path, expiry: &str) -> ExecPlugin {
        let count = dir.join("count");
        let body = format!(
            "echo run >> '{}'\ncase \"$KUBERNETES_EXEC_INFO\" in *k.example*) ;; *) echo no exec info >&2; exit 3;; esac\n[ \"$PLUGIN_MODE\" = test ] || exit 4\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"tok-123\",\"expirationTimestamp\":\"{expiry}\"}}}}'",
            count.display()
        );
        ExecPlugin::new(script(dir, "plugin.sh", &body))
    }

    #[tokio::test]
    async fn exec_token_is_used_and_cached_until_expiry() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = token_plugin(tmp.path(), "2999-01-01T00:00:00Z");
        let first = plugin.credential().await.expect("credential");
        let header = first.bearer.expect("bearer");
        assert_eq!(header.to_str().unwrap(), "Bearer tok-123");
        assert!(header.is_sensitive());
        plugin.credential().await.expect("cached");
        assert_eq!(plugin.runs(), 1, "a valid credential is cached");

        let expired = token_plugin(tmp.path(), "2000-01-01T00:00:00.5+01:00");
        expired.credential().await.expect("credential");
        expired.credential().await.expect("credential");
        assert_eq!(expired.runs(), 2, "an expired credential is fetched again");
    }

    #[tokio::test]
    async fn failing_plugin_shows_stderr_and_install_hint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cmd = script(
            tmp.path(),
            "fail.sh",
            "echo 'error: not logged in; run plugin login' >&2\nexit 2",
        );
        let plugin = ExecPlugin::new(cmd);
        let err = plugin
            .credential()
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("`/bin/sh` of user \"dev\" failed (exit status: 2)"),
            "{err}"
        );
        assert!(err.contains("not logged in; run plugin login"), "{err}");
        assert!(err.contains("brew install the-plugin"), "{err}");

        let missing = ExecPlugin::new(exec_config(
            tmp.path().join("nope").display().to_string(),
            vec![],
        ));
        let err = missing
            .credential()
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("could not run the credential plugin"), "{err}");
        assert!(err.contains("brew install the-plugin"), "{err}");
    }

    #[tokio::test]
    async fn bad_output_never_echoes_the_credential() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cmd = script(
            tmp.path(),
            "bad.sh",
            "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":7, \"x\":\"s3cr3t\"}}'",
        );
        let plugin = ExecPlugin::new(cmd);
        let err = plugin
            .credential()
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("unusable ExecCredential"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");

        let cmd = script(
            tmp.path(),
            "v1beta1.sh",
            "echo '{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"t\"}}'",
        );
        let plugin = ExecPlugin::new(cmd);
        let err = plugin
            .credential()
            .await
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("apiVersion \"client.authentication.k8s.io/v1beta1\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn exec_client_certificate_is_an_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cert = super::super::config::tests::CERT_PEM.replace('\n', "\\n");
        let key = super::super::config::tests::KEY_PEM.replace('\n', "\\n");
        let body = format!(
            "printf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"clientCertificateData\":\"{cert}\",\"clientKeyData\":\"{key}\"}}}}'"
        );
        let plugin = ExecPlugin::new(script(tmp.path(), "cert.sh", &body));
        let cred = plugin.credential().await.expect("credential");
        assert!(cred.bearer.is_none());
        let identity = cred.identity.expect("identity");
        assert_eq!(identity.generation, 1);
        assert_eq!(identity.cert_chain.len(), 1);
    }

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::new(path.clone());
        assert_eq!(file.current().unwrap().to_str().unwrap(), "Bearer first");
        std::fs::write(&path, "second").unwrap();
        // Make sure the modification time differs even on coarse-grained filesystems.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .unwrap();
        assert_eq!(file.current().unwrap().to_str().unwrap(), "Bearer second");
        std::fs::remove_file(&path).unwrap();
        file.invalidate();
        let err = file.current().unwrap_err().to_string();
        assert!(err.contains("bearer token file"), "{err}");
    }

    #[test]
    fn rfc3339() {
        let at = |s| parse_rfc3339(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(
            at("2024-02-29T12:30:15Z"),
            Some(Duration::from_secs(1_709_209_815))
        );
        assert_eq!(
            at("2024-02-29T14:30:15.25+02:00"),
            Some(Duration::new(1_709_209_815, 250_000_000))
        );
        assert_eq!(
            at("2024-02-29 12:30:15z"),
            Some(Duration::from_secs(1_709_209_815))
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:30:15",
            "2024-02-29T12:30:15+0200",
            "abcd-02-29T12:30:15Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
