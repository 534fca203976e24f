//! Cluster access: where the API server is, how to trust it and how to authenticate.
//!
//! Sources, in the order [`ClusterConfig::load`] tries them (the kubectl order):
//! an explicit `--kubeconfig` file, the `KUBECONFIG` list (merged: the first file to
//! define a name wins), `~/.kube/config`, then the in-cluster service account.
//! Everything is read and validated here, once, so a broken kubeconfig fails at
//! startup with the file, context, user or cluster named — not at the first request.
//! Credentials that change at run time (token files, exec plugins) are only *described*
//! here; [`super::auth`] produces the current credential for each request.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};

/// The default directory of the in-cluster service account files.
pub(super) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`]: how the in-cluster configuration is tested
/// outside a Pod, with a token and CA of a real service account.
pub(super) const SERVICE_ACCOUNT_DIR_ENV: &str = "CONVERGE_SERVICE_ACCOUNT_DIR";

/// Everything needed to talk to one API server.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Base URL of the API server (may carry a path prefix, e.g. behind a proxy).
    pub server: Url,
    /// Certificates to trust; `None` means the platform's trust store.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// Do not verify the server certificate at all (kubeconfig opt-in only).
    pub insecure_skip_tls_verify: bool,
    /// How requests authenticate.
    pub auth: Auth,
    /// Verify the server certificate against this name instead of the URL's host.
    pub tls_server_name: Option<String>,
    /// The context's namespace (or the service account's), else `default`.
    pub default_namespace: String,
    /// Where this came from, for messages: `context "x" in /path` or `in-cluster`.
    pub origin: String,
}

/// How requests authenticate. `Debug` never prints secrets.
pub enum Auth {
    /// Anonymous.
    None,
    /// A TLS client certificate.
    ClientCert {
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
    /// A static bearer token.
    Token(String),
    /// A bearer token read from a file that is re-read when it changes (and at least
    /// every minute), because projected service-account tokens rotate.
    TokenFile(PathBuf),
    /// A client-go credential plugin, run when the cached credential expires.
    Exec(ExecConfig),
}

impl Clone for Auth {
    fn clone(&self) -> Self {
        match self {
            Auth::None => Auth::None,
            Auth::ClientCert { cert_chain, key } => Auth::ClientCert {
                cert_chain: cert_chain.clone(),
                key: key.clone_key(),
            },
            Auth::Token(t) => Auth::Token(t.clone()),
            Auth::TokenFile(p) => Auth::TokenFile(p.clone()),
            Auth::Exec(e) => Auth::Exec(e.clone()),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::ClientCert { cert_chain, .. } => {
                write!(
                    f,
                    "ClientCert({} certificates, key redacted)",
                    cert_chain.len()
                )
            }
            Auth::Token(_) => f.write_str("Token(redacted)"),
            Auth::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Auth::Exec(e) => f.debug_tuple("Exec").field(e).finish(),
        }
    }
}

/// A `users[].user.exec` entry (client.authentication.k8s.io v1 or v1beta1).
#[derive(Clone)]
pub struct ExecConfig {
    pub api_version: String,
    pub command: String,
    pub args: Vec<String>,
    /// Extra environment for the plugin; values may be secret and are never printed.
    pub env: Vec<(String, String)>,
    pub install_hint: Option<String>,
    /// `Never`, `IfAvailable` or `Always`; converge never has a terminal to offer.
    pub interactive_mode: String,
    /// `spec.cluster` for `KUBERNETES_EXEC_INFO` when `provideClusterInfo` is set.
    pub cluster_info: Option<Value>,
    /// The kubeconfig user this belongs to, for messages.
    pub user: String,
}

impl fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecConfig")
            .field("api_version", &self.api_version)
            .field("command", &self.command)
            .field("args", &self.args.len())
            .field("env", &env_names)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why cluster access could not be configured. Messages name the file and the
/// context/user/cluster and say what to do; they never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    #[error("could not read {what} {}: {source}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {} is not valid: {reason}; fix the file or point --kubeconfig elsewhere", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error(
        "{}: no context selected (no current-context set); pass --context NAME or run `kubectl config use-context NAME`",
        files_phrase(files)
    )]
    NoContext { files: Vec<PathBuf> },
    #[error("{}: context \"{context}\" not found (known contexts: {}); pass an existing --context", files_phrase(files), known.join(", "))]
    ContextNotFound {
        context: String,
        files: Vec<PathBuf>,
        known: Vec<String>,
    },
    #[error(
        "{}: context \"{context}\" refers to {what} \"{name}\", which is not defined",
        files_phrase(files)
    )]
    Dangling {
        context: String,
        what: &'static str,
        name: String,
        files: Vec<PathBuf>,
    },
    #[error("{} of {entity} in {}: {problem}", field, file.display())]
    Field {
        field: &'static str,
        entity: String,
        file: PathBuf,
        problem: String,
    },
    #[error("{entity} in {}: {problem}", file.display())]
    Entry {
        entity: String,
        file: PathBuf,
        problem: String,
    },
    #[error(
        "KUBECONFIG lists {}, but none of these files exists; fix KUBECONFIG or unset it",
        files_phrase(files)
    )]
    KubeconfigEnvEmpty { files: Vec<PathBuf> },
    #[error("in-cluster configuration: {problem}")]
    InCluster { problem: String },
    #[error("--context {context} was given, but no kubeconfig was found (tried: {}); pass --kubeconfig PATH or set KUBECONFIG", tried.join("; "))]
    ContextWithoutKubeconfig { context: String, tried: Vec<String> },
    #[error("no Kubernetes cluster configuration found; tried: {}. Pass --kubeconfig PATH, set KUBECONFIG, create ~/.kube/config (e.g. with your provider's get-credentials command), or run converge in a Pod with a service account", tried.join("; "))]
    NotFound { tried: Vec<String> },
    #[error("TLS setup for {origin}: {problem}")]
    Tls { origin: String, problem: String },
}

fn files_phrase(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    match names.len() {
        0 => "kubeconfig".into(),
        1 => format!("kubeconfig {}", names[0]),
        _ => format!("kubeconfig files {}", names.join(", ")),
    }
}

/// The process environment [`ClusterConfig::load`] consults, injectable for tests.
#[derive(Debug, Clone, Default)]
pub struct LoadEnv {
    /// `KUBECONFIG`.
    pub kubeconfig: Option<OsString>,
    /// The home directory (for `~/.kube/config`).
    pub home: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`.
    pub service_host: Option<String>,
    pub service_port: Option<String>,
    /// Directory with `token`, `ca.crt`, `namespace`.
    pub service_account_dir: PathBuf,
}

impl LoadEnv {
    /// The real environment of this process.
    pub fn from_process() -> Self {
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        LoadEnv {
            kubeconfig: std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()),
            home,
            service_host: std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            service_port: std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            service_account_dir: std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
                .filter(|dir| !dir.is_empty())
                .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from),
        }
    }
}

impl ClusterConfig {
    /// Resolves cluster access the kubectl way: explicit path → `KUBECONFIG` →
    /// `~/.kube/config` → in-cluster. `context` overrides the current-context.
    pub fn load(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, ClusterConfigError> {
        Self::load_with(&LoadEnv::from_process(), kubeconfig, context)
    }

    /// [`ClusterConfig::load`] with an injected environment.
    pub fn load_with(
        env: &LoadEnv,
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, ClusterConfigError> {
        if let Some(path) = kubeconfig {
            return Self::from_kubeconfig_files(&[path.to_path_buf()], context);
        }
        let mut tried = vec!["--kubeconfig: not given".to_string()];
        if let Some(list) = &env.kubeconfig {
            let listed: Vec<PathBuf> = std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            let existing: Vec<PathBuf> = listed.iter().filter(|p| p.exists()).cloned().collect();
            if existing.is_empty() {
                return Err(ClusterConfigError::KubeconfigEnvEmpty { files: listed });
            }
            return Self::from_kubeconfig_files(&existing, context);
        }
        tried.push("KUBECONFIG: not set".into());
        match &env.home {
            Some(home) => {
                let default = home.join(".kube").join("config");
                if default.exists() {
                    return Self::from_kubeconfig_files(&[default], context);
                }
                tried.push(format!("{}: does not exist", default.display()));
            }
            None => tried.push("~/.kube/config: HOME is not set".into()),
        }
        if let Some(context) = context {
            return Err(ClusterConfigError::ContextWithoutKubeconfig {
                context: context.into(),
                tried,
            });
        }
        match (&env.service_host, &env.service_port) {
            (Some(host), Some(port)) if !host.is_empty() => {
                Self::in_cluster(&env.service_account_dir, host, port)
            }
            _ => {
                tried.push(
                    "in-cluster: KUBERNETES_SERVICE_HOST/PORT are not set (not running in a Pod)"
                        .into(),
                );
                Err(ClusterConfigError::NotFound { tried })
            }
        }
    }

    /// The in-cluster service account: `https://host:port`, `dir/ca.crt`, the token
    /// file `dir/token` (re-read as it rotates) and `dir/namespace`.
    pub fn in_cluster(dir: &Path, host: &str, port: &str) -> Result<Self, ClusterConfigError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let server = Url::parse(&format!("https://{host}:{port}")).map_err(|e| {
            ClusterConfigError::InCluster {
                problem: format!(
                    "KUBERNETES_SERVICE_HOST/PORT ({host}:{port}) do not form a URL: {e}"
                ),
            }
        })?;
        let token = dir.join("token");
        if !token.is_file() {
            return Err(ClusterConfigError::InCluster {
                problem: format!(
                    "{} does not exist; mount a service account token (automountServiceAccountToken: true)",
                    token.display()
                ),
            });
        }
        let ca_path = dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca_path).map_err(|source| ClusterConfigError::Read {
            what: "the service account CA".into(),
            path: ca_path.clone(),
            source,
        })?;
        let ca = parse_certs(&ca_pem).map_err(|problem| ClusterConfigError::InCluster {
            problem: format!("{}: {problem}", ca_path.display()),
        })?;
        let namespace = std::fs::read_to_string(dir.join("namespace"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(ClusterConfig {
            server,
            ca: Some(ca),
            insecure_skip_tls_verify: false,
            auth: Auth::TokenFile(token),
            tls_server_name: None,
            default_namespace: namespace,
            origin: format!("in-cluster service account ({})", dir.display()),
        })
    }

    /// A kubeconfig held as text (a Secret's), named `origin` in errors; its
    /// credentials must be inline (`*-data`, tokens), as no file is near it.
    pub fn from_kubeconfig_text(
        text: &str,
        origin: &str,
        context: Option<&str>,
    ) -> Result<Self, ClusterConfigError> {
        let file = KubeconfigFile::parse(text, Path::new(origin))?;
        Merged { files: vec![file] }.resolve(context)
    }

    /// Reads and merges kubeconfig files (first definition of a name wins) and
    /// resolves `context` (or the first current-context).
    pub fn from_kubeconfig_files(
        paths: &[PathBuf],
        context: Option<&str>,
    ) -> Result<Self, ClusterConfigError> {
        let files = paths
            .iter()
            .map(|p| KubeconfigFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Merged { files }.resolve(context)
    }
}

// --- kubeconfig files ---------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct RawKubeconfig {
    clusters: Option<Vec<NamedCluster>>,
    users: Option<Vec<NamedUser>>,
    contexts: Option<Vec<NamedContext>>,
    #[serde(rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    #[serde(default)]
    cluster: KubeconfigCluster,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: RawUser,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: RawContext,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KubeconfigCluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
    extensions: Option<Vec<NamedExtension>>,
}

#[derive(Debug, Deserialize)]
struct NamedExtension {
    name: String,
    extension: Value,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawUser {
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    username: Option<String>,
    auth_provider: Option<Value>,
    exec: Option<RawExec>,
}

// Hand-written so a parse failure elsewhere can never print a credential.
impl fmt::Debug for RawUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawUser(redacted)")
    }
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExec {
    api_version: Option<String>,
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<Vec<RawEnv>>,
    install_hint: Option<String>,
    #[serde(default)]
    provide_cluster_info: bool,
    interactive_mode: Option<String>,
}

#[derive(Deserialize)]
struct RawEnv {
    name: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawContext {
    cluster: Option<String>,
    user: Option<String>,
    namespace: Option<String>,
}

/// One parsed kubeconfig file and the directory its relative paths resolve against.
struct KubeconfigFile {
    path: PathBuf,
    dir: PathBuf,
    raw: RawKubeconfig,
}

impl KubeconfigFile {
    fn read(path: &Path) -> Result<Self, ClusterConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterConfigError::Read {
            what: "kubeconfig".into(),
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ClusterConfigError> {
        let raw: RawKubeconfig = if text.trim().is_empty() {
            RawKubeconfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ClusterConfigError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        };
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(KubeconfigFile {
            path: path.to_path_buf(),
            dir,
            raw,
        })
    }

    /// Resolves a path from this file: relative paths are relative to its directory.
    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Several kubeconfig files merged the kubectl way: for every name, the first file
/// that defines it wins; the first non-empty current-context wins.
struct Merged {
    files: Vec<KubeconfigFile>,
}

impl Merged {
    fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    fn context(&self, name: &str) -> Option<(&KubeconfigFile, &RawContext)> {
        self.files.iter().find_map(|f| {
            let found = f.raw.contexts.iter().flatten().find(|c| c.name == name);
            found.map(|c| (f, &c.context))
        })
    }

    fn cluster(&self, name: &str) -> Option<(&KubeconfigFile, &KubeconfigCluster)> {
        self.files.iter().find_map(|f| {
            let found = f.raw.clusters.iter().flatten().find(|c| c.name == name);
            found.map(|c| (f, &c.cluster))
        })
    }

    fn user(&self, name: &str) -> Option<(&KubeconfigFile, &RawUser)> {
        self.files.iter().find_map(|f| {
            let found = f.raw.users.iter().flatten().find(|u| u.name == name);
            found.map(|u| (f, &u.user))
        })
    }

    fn current_context(&self) -> Option<&str> {
        self.files
            .iter()
            .filter_map(|f| f.raw.current_context.as_deref())
            .find(|c| !c.is_empty())
    }

    fn resolve(&self, context: Option<&str>) -> Result<ClusterConfig, ClusterConfigError> {
        let name = context.or_else(|| self.current_context()).ok_or_else(|| {
            ClusterConfigError::NoContext {
                files: self.paths(),
            }
        })?;
        let (ctx_file, ctx) =
            self.context(name)
                .ok_or_else(|| ClusterConfigError::ContextNotFound {
                    context: name.into(),
                    files: self.paths(),
                    known: self.known_contexts(),
                })?;
        let cluster_name = ctx.cluster.as_deref().unwrap_or_default();
        let (cluster_file, cluster) = self
            .cluster(cluster_name)
            .ok_or_else(|| self.dangling(name, "cluster", cluster_name))?;
        let tls = resolve_cluster(cluster_file, cluster_name, cluster)?;
        let user_name = ctx.user.as_deref().unwrap_or_default();
        let auth = match self.user(user_name) {
            Some((user_file, user)) => resolve_user(user_file, user_name, user, &tls)?,
            // kubectl allows a context without a user: anonymous access.
            None if user_name.is_empty() => Auth::None,
            None => return Err(self.dangling(name, "user", user_name)),
        };
        let namespace = ctx
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(ClusterConfig {
            server: tls.server,
            ca: tls.ca,
            insecure_skip_tls_verify: tls.insecure,
            auth,
            tls_server_name: tls.tls_server_name,
            default_namespace: namespace,
            origin: format!("context \"{name}\" in {}", ctx_file.path.display()),
        })
    }

    fn known_contexts(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in self
            .files
            .iter()
            .flat_map(|f| f.raw.contexts.iter().flatten())
        {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        names
    }

    fn dangling(&self, context: &str, what: &'static str, name: &str) -> ClusterConfigError {
        ClusterConfigError::Dangling {
            context: context.into(),
            what,
            name: name.into(),
            files: self.paths(),
        }
    }
}

/// The cluster half of a context, validated.
struct ClusterTls {
    server: Url,
    ca: Option<Vec<CertificateDer<'static>>>,
    ca_pem: Option<Vec<u8>>,
    insecure: bool,
    tls_server_name: Option<String>,
    exec_extension: Option<Value>,
    proxy_url: Option<String>,
}

fn resolve_cluster(
    file: &KubeconfigFile,
    name: &str,
    raw: &KubeconfigCluster,
) -> Result<ClusterTls, ClusterConfigError> {
    let entity = format!("cluster \"{name}\"");
    let field_err = |field: &'static str, problem: String| ClusterConfigError::Field {
        field,
        entity: entity.clone(),
        file: file.path.clone(),
        problem,
    };
    let server = raw
        .server
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field_err("server", "is missing; set the API server URL".into()))?;
    let server = Url::parse(server).map_err(|e| field_err("server", format!("{e}")))?;
    if server.scheme() != "https" && server.scheme() != "http" {
        return Err(field_err("server", "must be an https:// URL".into()));
    }
    let ca_pem = read_data_or_file(
        file,
        raw.certificate_authority_data.as_deref(),
        raw.certificate_authority.as_deref(),
        &entity,
        ("certificate-authority-data", "certificate-authority"),
    )?;
    let ca = match &ca_pem {
        Some(pem) => Some(parse_certs(pem).map_err(|p| field_err("certificate-authority", p))?),
        None => None,
    };
    if raw.insecure_skip_tls_verify && ca.is_some() {
        return Err(ClusterConfigError::Entry {
            entity,
            file: file.path.clone(),
            problem: "sets both a certificate authority and insecure-skip-tls-verify; remove one"
                .into(),
        });
    }
    let exec_extension = raw
        .extensions
        .iter()
        .flatten()
        .find(|e| e.name == "client.authentication.k8s.io/exec")
        .map(|e| e.extension.clone());
    Ok(ClusterTls {
        server,
        ca,
        ca_pem,
        insecure: raw.insecure_skip_tls_verify,
        tls_server_name: raw.tls_server_name.clone().filter(|s| !s.is_empty()),
        exec_extension,
        proxy_url: raw.proxy_url.clone(),
    })
}

fn resolve_user(
    file: &KubeconfigFile,
    name: &str,
    raw: &RawUser,
    cluster: &ClusterTls,
) -> Result<Auth, ClusterConfigError> {
    let entity = format!("user \"{name}\"");
    let entry_err = |problem: &str| ClusterConfigError::Entry {
        entity: entity.clone(),
        file: file.path.clone(),
        problem: problem.into(),
    };
    if raw.auth_provider.is_some() && raw.exec.is_none() {
        return Err(entry_err(
            "uses auth-provider, which Kubernetes removed; switch to an exec credential plugin (e.g. gke-gcloud-auth-plugin, kubelogin)",
        ));
    }
    if raw.username.is_some() {
        return Err(entry_err(
            "uses username/password (basic auth), which converge does not support; use a token, client certificate or exec plugin",
        ));
    }
    let token = raw.token.as_deref().filter(|t| !t.is_empty());
    let token_file = raw.token_file.as_deref().filter(|t| !t.is_empty());
    let cert = client_cert(file, raw, &entity)?;
    let has_token = token.is_some() || token_file.is_some();
    if raw.exec.is_some() && (has_token || cert.is_some()) {
        return Err(entry_err(
            "sets an exec plugin together with a token or client certificate; keep only one",
        ));
    }
    if cert.is_some() && has_token {
        return Err(entry_err(
            "sets both a client certificate and a bearer token; converge authenticates with one, remove the other",
        ));
    }
    // The kubeconfig API documents that token takes precedence over tokenFile.
    Ok(match (&raw.exec, token, token_file, cert) {
        (Some(exec), ..) => Auth::Exec(exec_config(file, name, exec, cluster)?),
        (None, Some(token), _, _) => Auth::Token(token.trim().to_string()),
        (None, None, Some(path), _) => Auth::TokenFile(file.resolve_path(path)),
        (None, None, None, Some(cert)) => cert,
        (None, None, None, None) => Auth::None,
    })
}

fn client_cert(
    file: &KubeconfigFile,
    raw: &RawUser,
    entity: &str,
) -> Result<Option<Auth>, ClusterConfigError> {
    let cert_pem = read_data_or_file(
        file,
        raw.client_certificate_data.as_deref(),
        raw.client_certificate.as_deref(),
        entity,
        ("client-certificate-data", "client-certificate"),
    )?;
    let key_pem = read_data_or_file(
        file,
        raw.client_key_data.as_deref(),
        raw.client_key.as_deref(),
        entity,
        ("client-key-data", "client-key"),
    )?;
    let field_err = |field: &'static str, problem: String| ClusterConfigError::Field {
        field,
        entity: entity.to_string(),
        file: file.path.clone(),
        problem,
    };
    match (cert_pem, key_pem) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(Auth::ClientCert {
            cert_chain: parse_certs(&cert).map_err(|p| field_err("client-certificate", p))?,
            key: parse_key(&key).map_err(|p| field_err("client-key", p))?,
        })),
        (Some(_), None) => Err(field_err(
            "client-key",
            "is missing, but a client certificate is set; add client-key or client-key-data"
                .into(),
        )),
        (None, Some(_)) => Err(field_err(
            "client-certificate",
            "is missing, but a client key is set; add client-certificate or client-certificate-data"
                .into(),
        )),
    }
}

/// Reads a `…-data` (base64, wins) or its file counterpart (relative to the kubeconfig).
fn read_data_or_file(
    file: &KubeconfigFile,
    data: Option<&str>,
    path: Option<&str>,
    entity: &str,
    (data_field, path_field): (&'static str, &'static str),
) -> Result<Option<Vec<u8>>, ClusterConfigError> {
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        let compact: String = data.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| ClusterConfigError::Field {
                field: data_field,
                entity: entity.to_string(),
                file: file.path.clone(),
                problem: "is not valid base64; it must hold the base64-encoded PEM".into(),
            })?;
        return Ok(Some(bytes));
    }
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let resolved = file.resolve_path(path);
    std::fs::read(&resolved)
        .map(Some)
        .map_err(|source| ClusterConfigError::Read {
            what: format!("{path_field} of {entity} (from {})", file.path.display()),
            path: resolved,
            source,
        })
}

fn exec_config(
    file: &KubeconfigFile,
    user: &str,
    raw: &RawExec,
    cluster: &ClusterTls,
) -> Result<ExecConfig, ClusterConfigError> {
    let field_err = |problem: String| ClusterConfigError::Field {
        field: "exec",
        entity: format!("user \"{user}\""),
        file: file.path.clone(),
        problem,
    };
    let api_version = raw.api_version.clone().unwrap_or_default();
    if !matches!(
        api_version.as_str(),
        "client.authentication.k8s.io/v1" | "client.authentication.k8s.io/v1beta1"
    ) {
        return Err(field_err(format!(
            "apiVersion \"{api_version}\" is not supported; use client.authentication.k8s.io/v1 (or v1beta1)"
        )));
    }
    let command = raw
        .command
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| field_err("command is missing".into()))?;
    // client-go resolves a command with a path separator relative to the kubeconfig;
    // a bare name is looked up on PATH.
    let command = if command.contains(std::path::MAIN_SEPARATOR) {
        file.resolve_path(&command).display().to_string()
    } else {
        command
    };
    let interactive_mode = raw
        .interactive_mode
        .clone()
        .unwrap_or_else(|| "IfAvailable".into());
    let cluster_info = raw.provide_cluster_info.then(|| exec_cluster_info(cluster));
    Ok(ExecConfig {
        api_version,
        command,
        args: raw.args.clone().unwrap_or_default(),
        env: raw
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        install_hint: raw.install_hint.clone().filter(|h| !h.trim().is_empty()),
        interactive_mode,
        cluster_info,
        user: user.into(),
    })
}

/// `spec.cluster` of `KUBERNETES_EXEC_INFO` (client-go's `Cluster` type).
fn exec_cluster_info(cluster: &ClusterTls) -> Value {
    let mut info = json!({ "server": cluster.server.as_str() });
    if let Some(pem) = &cluster.ca_pem {
        info["certificate-authority-data"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    if cluster.insecure {
        info["insecure-skip-tls-verify"] = Value::Bool(true);
    }
    if let Some(name) = &cluster.tls_server_name {
        info["tls-server-name"] = Value::String(name.clone());
    }
    if let Some(proxy) = &cluster.proxy_url {
        info["proxy-url"] = Value::String(proxy.clone());
    }
    if let Some(ext) = &cluster.exec_extension {
        info["config"] = ext.clone();
    }
    info
}

/// Parses one or more PEM certificates.
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1). The error never quotes the key.
pub(crate) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        "contains no usable PEM private key (PKCS#8, RSA or EC); check the file".into()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    // A throwaway self-signed certificate and key (openssl, P-256), used only to
    // exercise parsing and TLS setup in tests.
    pub(crate) const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBhTCCASugAwIBAgIUFoUY72Ob90E/54b7jcEZ6F2UuCEwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNY29udmVyZ2UtdGVzdDAeFw0yNjExMjQwOTAyMzBaFw0zNjEx
MjEwOTAyMzBaMBgxFjAUBgNVBAMMDWNvbnZlcmdlLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAARMCyhf8uPjT4XPnKqJL6bXYvxClgjYi6SAsJNBu6sqNNXP
QmxYoeHU7buK7wwx9ptMG2JqFXoUsvK+0QbdK6fJo1MwUTAdBgNVHQ4EFgQUpYj4
bggv6yaJVSHXLOzjObfzF/EwHwYDVR0jBBgwFoAUpYj4bggv6yaJVSHXLOzjObfz
F/EwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA+GCIHg4HrACr
pLrPH0Bx5SzbqncciQ3gNj66handjBMCIHmw8iBDRO9+yS7dalKGbz+F0JNJHyaY
Zm3RcM/7p1AR
-----END CERTIFICATE-----
";
    pub(crate) const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOfbK8dijR5dD56/p
e1etHSOJdtqigwHgyssKimJT2i+hRANCAARMCyhf8uPjT4XPnKqJL6bXYvxClgjY
i6SAsJNBu6sqNNXPQmxYoeHU7buK7wwx9ptMG2JqFXoUsvK+0QbdK6fJ
-----END PRIVATE KEY-----
";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write fixture");
        path
    }

    fn kubeconfig(cluster: &str, server: &str, user: &str, user_body: &str, ctx: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n{user_body}\ncontexts:\n- name: {ctx}\n  context:\n    cluster: {cluster}\n    user: {user}\n    namespace: ns-{ctx}\ncurrent-context: {ctx}\n"
        )
    }

    #[test]
    fn merge_first_file_wins_and_context_override() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = write(
            tmp.path(),
            "a.yaml",
            &kubeconfig(
                "shared",
                "https://a.example:6443",
                "u",
                "    token: token-a",
                "ctx-a",
            ),
        );
        // b redefines "shared" and "u" (ignored: a wins) and adds ctx-b.
        let b_text = kubeconfig(
            "shared",
            "https://b.example:6443",
            "u",
            "    token: token-b",
            "ctx-b",
        );
        let b = write(tmp.path(), "b.yaml", &b_text);

        let merged = ClusterConfig::from_kubeconfig_files(&[a.clone(), b.clone()], None).unwrap();
        assert_eq!(merged.server.as_str(), "https://a.example:6443/");
        assert_eq!(merged.default_namespace, "ns-ctx-a");
        assert!(matches!(&merged.auth, Auth::Token(t) if t == "token-a"));

        // --context selects b's context, but its cluster and user names resolve to a's.
        let ctx_b = ClusterConfig::from_kubeconfig_files(&[a, b.clone()], Some("ctx-b")).unwrap();
        assert_eq!(ctx_b.default_namespace, "ns-ctx-b");
        assert_eq!(ctx_b.server.host_str(), Some("a.example"));
        assert!(matches!(&ctx_b.auth, Auth::Token(t) if t == "token-a"));
        assert!(ctx_b.origin.contains("b.yaml"));

        let missing = ClusterConfig::from_kubeconfig_files(&[b], Some("nope")).unwrap_err();
        let text = missing.to_string();
        assert!(text.contains("context \"nope\" not found"), "{text}");
        assert!(text.contains("ctx-b"), "{text}");
    }

    #[test]
    fn load_uses_kubeconfig_env_list_and_explicit_path_overrides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = write(
            tmp.path(),
            "a.yaml",
            &kubeconfig("c", "https://a.example", "u", "    token: ta", "a"),
        );
        let b = write(
            tmp.path(),
            "b.yaml",
            &kubeconfig("c2", "https://b.example", "u2", "    token: tb", "b"),
        );
        let missing = tmp.path().join("missing.yaml");
        let list = std::env::join_paths([&missing, &b, &a]).unwrap();
        let env = LoadEnv {
            kubeconfig: Some(list),
            ..LoadEnv::default()
        };
        let cfg = ClusterConfig::load_with(&env, None, None).unwrap();
        assert_eq!(cfg.server.host_str(), Some("b.example"));
        let cfg = ClusterConfig::load_with(&env, None, Some("a")).unwrap();
        assert_eq!(cfg.server.host_str(), Some("a.example"));
        let cfg = ClusterConfig::load_with(&env, Some(&a), None).unwrap();
        assert_eq!(cfg.server.host_str(), Some("a.example"));
    }

    #[test]
    fn relative_paths_resolve_against_the_kubeconfig_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "conf/pki/ca.crt", CERT_PEM);
        write(tmp.path(), "conf/pki/user.crt", CERT_PEM);
        write(tmp.path(), "conf/pki/user.key", KEY_PEM);
        let text = "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority: pki/ca.crt\n    tls-server-name: kubernetes\nusers:\n- name: u\n  user:\n    client-certificate: pki/user.crt\n    client-key: ./pki/user.key\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";
        let path = write(tmp.path(), "conf/config", text);
        let cfg = ClusterConfig::from_kubeconfig_files(&[path], None).unwrap();
        assert_eq!(cfg.ca.as_ref().map(Vec::len), Some(1));
        assert_eq!(cfg.tls_server_name.as_deref(), Some("kubernetes"));
        assert_eq!(cfg.default_namespace, "default");
        assert!(matches!(&cfg.auth, Auth::ClientCert { cert_chain, .. } if cert_chain.len() == 1));
        let debug = format!("{:?}", cfg.auth);
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn data_fields_are_base64_and_win_over_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "clusters:\n- name: c\n  cluster:\n    server: https://k.example\n    certificate-authority-data: {}\n    certificate-authority: does-not-exist.crt\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            b64(CERT_PEM),
            b64(CERT_PEM),
            b64(KEY_PEM)
        );
        let path = write(tmp.path(), "config", &text);
        let cfg = ClusterConfig::from_kubeconfig_files(&[path], None).unwrap();
        assert!(cfg.ca.is_some());
        assert!(matches!(cfg.auth, Auth::ClientCert { .. }));

        let bad = text.replace(&b64(KEY_PEM), "not*base64*at*all");
        let path = write(tmp.path(), "bad", &bad);
        let err = ClusterConfig::from_kubeconfig_files(&[path], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("client-key-data of user \"u\""), "{err}");
        assert!(err.contains("not valid base64"), "{err}");
        assert!(
            !err.contains("not*base64"),
            "must not echo the value: {err}"
        );
    }

    #[test]
    fn token_wins_over_token_file_and_token_file_resolves() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let both = kubeconfig(
            "c",
            "https://k.example",
            "u",
            "    token: inline\n    tokenFile: tok",
            "x",
        );
        let path = write(tmp.path(), "both", &both);
        let cfg = ClusterConfig::from_kubeconfig_files(&[path], None).unwrap();
        assert!(matches!(&cfg.auth, Auth::Token(t) if t == "inline"));
        assert_eq!(format!("{:?}", cfg.auth), "Token(redacted)");

        let only_file = kubeconfig("c", "https://k.example", "u", "    tokenFile: tok", "x");
        let path = write(tmp.path(), "file", &only_file);
        let cfg = ClusterConfig::from_kubeconfig_files(&[path], None).unwrap();
        assert!(matches!(&cfg.auth, Auth::TokenFile(p) if *p == tmp.path().join("tok")));
    }

    #[test]
    fn exec_entry_is_parsed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let user = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/plugin\n      args: [get-token, --x]\n      env:\n      - {name: SECRET_ENV, value: hunter2}\n      installHint: install the plugin\n      provideClusterInfo: true\n      interactiveMode: Never";
        let path = write(
            tmp.path(),
            "config",
            &kubeconfig("c", "https://k.example", "u", user, "x"),
        );
        let cfg = ClusterConfig::from_kubeconfig_files(&[path], None).unwrap();
        let Auth::Exec(exec) = &cfg.auth else {
            panic!("expected exec auth, got {:?}", cfg.auth)
        };
        assert_eq!(Path::new(&exec.command), tmp.path().join("bin/plugin"));
        assert_eq!(exec.args, vec!["get-token", "--x"]);
        assert_eq!(exec.interactive_mode, "Never");
        assert_eq!(exec.install_hint.as_deref(), Some("install the plugin"));
        let info = exec.cluster_info.as_ref().expect("cluster info");
        assert_eq!(info["server"], "https://k.example/");
        let debug = format!("{exec:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn bad_entries_are_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let text = "clusters:\n- name: c\n  cluster: {}\ncontexts:\n- name: x\n  context: {cluster: c, user: ghost}\ncurrent-context: x\n";
        let path = write(tmp.path(), "config", text);
        let err =
            ClusterConfig::from_kubeconfig_files(std::slice::from_ref(&path), None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server of cluster \"c\""), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");

        let text = "clusters:\n- name: c\n  cluster: {server: 'https://k'}\ncontexts:\n- name: x\n  context: {cluster: c, user: ghost}\n";
        let path = write(tmp.path(), "config2", text);
        let err =
            ClusterConfig::from_kubeconfig_files(std::slice::from_ref(&path), None).unwrap_err();
        assert!(err.to_string().contains("no context selected"), "{err}");
        let err = ClusterConfig::from_kubeconfig_files(&[path], Some("x")).unwrap_err();
        assert!(
            err.to_string().contains("refers to user \"ghost\""),
            "{err}"
        );
    }

    #[test]
    fn in_cluster_from_injected_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "token", "sa-token\n");
        write(tmp.path(), "ca.crt", CERT_PEM);
        write(tmp.path(), "namespace", "converge-system");
        let env = LoadEnv {
            service_host: Some("10.96.0.1".into()),
            service_port: Some("443".into()),
            service_account_dir: tmp.path().to_path_buf(),
            home: Some(tmp.path().join("no-home")),
            ..LoadEnv::default()
        };
        let cfg = ClusterConfig::load_with(&env, None, None).unwrap();
        assert_eq!(cfg.server.as_str(), "https://10.96.0.1/");
        assert_eq!(cfg.default_namespace, "converge-system");
        assert!(matches!(&cfg.auth, Auth::TokenFile(p) if *p == tmp.path().join("token")));

        let v6 = ClusterConfig::in_cluster(tmp.path(), "fd00::1", "6443").unwrap();
        assert_eq!(v6.server.as_str(), "https://[fd00::1]:6443/");
    }

    #[test]
    fn nothing_found_says_what_was_tried() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = LoadEnv {
            home: Some(tmp.path().to_path_buf()),
            service_account_dir: tmp.path().join("sa"),
            ..LoadEnv::default()
        };
        let err = ClusterConfig::load_with(&env, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no Kubernetes cluster configuration found; tried:"),
            "{err}"
        );
        assert!(err.contains("KUBECONFIG: not set"), "{err}");
        assert!(err.contains(".kube/config: does not exist"), "{err}");
        assert!(err.contains("KUBERNETES_SERVICE_HOST"), "{err}");
        assert!(err.contains("Pass --kubeconfig PATH"), "{err}");

        let err = ClusterConfig::load_with(&env, None, Some("prod"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--context prod was given"), "{err}");

        let env = LoadEnv {
            kubeconfig: Some(tmp.path().join("gone").into_os_string()),
            ..env
        };
        let err = ClusterConfig::load_with(&env, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("KUBECONFIG lists"), "{err}");
    }
}
