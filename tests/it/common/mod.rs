//! The shared harness of the integration tests.
//!
//! Tests run against the real control plane that `hack/controlplane.sh up` starts
//! (`hack/test.sh` does it and exports `KUBECONFIG` and a `PATH` with the pinned
//! kubectl). Each test gets its own namespace, removed when the test ends, and checks
//! what converge did with kubectl: an independent client.
//!
//! A test that cannot reach the control plane fails with the reason; it never skips.
//!
//! - [`TestEnv`]: the test's namespace and kubectl; [`Manifests`]: a temporary
//!   directory of manifests; [`configmap`]: the manifest most tests apply;
//!   [`eventually`]: polling with a timeout.
//! - [`daemon`]: a `converge run` process with its own config, port and log.
//! - [`prometheus`]: the `/metrics` text, checked and read.
//! - [`process`]: a converge command in the background, its stderr read as it
//!   comes, to strike (restart, cut, `kill -9`) at a precise moment.
//! - [`fault_proxy`]: a TCP proxy in front of the API server that refuses, resets,
//!   stalls, delays and cuts watch streams.
//! - [`watch`]: `kubectl get --watch`, returned once its watch is open; [`watch::Events`]
//!   records every event.
//! - [`git`], [`git_http`], [`sshd`]: real Git repositories, `git http-backend`
//!   behind basic auth, and an OpenSSH server, all on loopback, for Git sources;
//!   [`github_signature`] signs webhooks.
//! - [`browser`]: a headless Chromium driven over WebDriver by chromedriver, for
//!   the web page's tests.
//! - [`receiver`]: a notification receiver on loopback that records requests, or
//!   hangs.
//! - [`chart_repo`]: a Helm chart repository on loopback, filled by the real
//!   `helm package` and `helm repo index`.
//! - [`audit`]: identities the API server's audit log records, and their requests
//!   read back from it.

pub mod audit;
pub mod browser;
pub mod chart_repo;
pub mod daemon;
pub mod event_proxy;
pub mod fault_proxy;
pub mod git;
pub mod git_http;
pub mod process;
pub mod prometheus;
pub mod receiver;
pub mod sshd;
pub mod watch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The microservices-demo manifests (35 objects; tests/fixtures/README.md).
pub fn corpus_microservices_demo() -> PathBuf {
    repo_root().join("tests/fixtures/microservices-demo/kubernetes-manifests.yaml")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubectl to check with: `CONVERGE_KUBECTL`, else the first on `PATH`
/// (`hack/controlplane.sh env` puts the pinned one first).
pub fn kubectl_bin() -> String {
    std::env::var("CONVERGE_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// Why the control plane cannot be used, or Ok. Checked once per test binary.
pub fn check_control_plane(kubeconfig: Option<&str>) -> Result<(), String> {
    let kubeconfig = kubeconfig.filter(|k| !k.is_empty()).ok_or(
        "KUBECONFIG is not set. The integration tests need the local control plane: run \
         `hack/test.sh`, or `hack/controlplane.sh up && eval \"$(hack/controlplane.sh env)\"` \
         and then `cargo test`.",
    )?;
    let out = Command::new(kubectl_bin())
        .args(["--kubeconfig", kubeconfig, "--request-timeout=10s"])
        .args(["get", "--raw", "/readyz"])
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}; is kubectl on PATH?", kubectl_bin()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "the control plane in KUBECONFIG={kubeconfig} is not ready: {}\n\
         Start it with `hack/controlplane.sh up` (see `hack/controlplane.sh status`).",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn kubeconfig() -> &'static str {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let kubeconfig = std::env::var("KUBECONFIG").ok();
        check_control_plane(kubeconfig.as_deref()).map(|()| kubeconfig.unwrap_or_default())
    });
    match checked {
        Ok(path) => path,
        Err(reason) => panic!("integration test cannot run: {reason}"),
    }
}

/// One test's view of the cluster: its own namespace and the kubectl to check with.
pub struct TestEnv {
    pub ns: String,
    pub kubeconfig: String,
    /// Held until the namespace is deleted (fields drop after [`Drop::drop`]).
    _plane: PlaneUse,
}

/// All tests share one process, so a test that disturbs the control plane (restarts
/// the API server) takes it exclusively and waits for the others to finish; the
/// others wait while it runs. The std `RwLock` lets no new reader in while a writer
/// waits, so the exclusive test is not starved.
static PLANE: RwLock<()> = RwLock::new(());

enum PlaneUse {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl PlaneUse {
    /// A panicking test poisons the lock; the plane is still usable by the next one.
    fn take(access: PlaneAccess) -> Self {
        match access {
            PlaneAccess::Shared => {
                PlaneUse::Shared(PLANE.read().unwrap_or_else(PoisonError::into_inner))
            }
            PlaneAccess::Exclusive => {
                PlaneUse::Exclusive(PLANE.write().unwrap_or_else(PoisonError::into_inner))
            }
        }
    }
}

/// How a test uses the control plane.
#[derive(Clone, Copy)]
pub enum PlaneAccess {
    /// Alongside other tests, each in its own namespace.
    Shared,
    /// Alone: the test restarts or otherwise disturbs the control plane.
    Exclusive,
}

impl TestEnv {
    /// Creates a fresh namespace named after the test (plus a unique suffix).
    pub fn new(test: &str) -> Self {
        Self::with_access(test, PlaneAccess::Shared)
    }

    /// Like [`TestEnv::new`], with the control plane shared or taken exclusively.
    pub fn with_access(test: &str, access: PlaneAccess) -> Self {
        let plane = PlaneUse::take(access);
        let env = TestEnv {
            ns: unique_namespace(test),
            kubeconfig: kubeconfig().to_string(),
            _plane: plane,
        };
        env.kubectl(&["create", "namespace", &env.ns]);
        env.kubectl(&["label", "namespace", &env.ns, "converge.dev/test=true"]);
        env
    }

    /// Runs kubectl against the control plane; panics with its stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args, None);
        assert_success(&format!("kubectl {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `stdin` piped in; panics with its stderr on failure.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, Some(stdin));
        assert_success(&format!("kubectl {}", args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl and returns whatever happened, for tests that expect failure.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", kubectl_bin()));
        let mut pipe = child.stdin.take().expect("stdin is piped");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("wait for kubectl")
    }

    /// A kubectl command with the test's kubeconfig, for tests that stream output.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_bin());
        cmd.args(["--kubeconfig", &self.kubeconfig]).args(args);
        cmd
    }

    /// `kubectl get KINDS --watch -o name` in the test's namespace, returned once
    /// the watch is open ([`watch::open`]): every line it prints goes to `on_line`,
    /// on a thread of its own. Kill the child when done.
    pub fn kubectl_watch(
        &self,
        kinds: &str,
        on_line: impl FnMut(String) + Send + 'static,
    ) -> std::process::Child {
        let args = ["get", kinds, "-n", &self.ns, "--watch", "-o", "name"];
        watch::open(self.kubectl_command(&args), on_line)
    }

    /// The `data.value` of ConfigMap `name` in the test's namespace (None: no such object).
    pub fn configmap_value(&self, name: &str) -> Option<String> {
        let jsonpath = "jsonpath={.data.value}";
        let args = ["get", "configmap", name, "-n", &self.ns, "-o", jsonpath];
        let out = self.kubectl_output(&args, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How long until ConfigMap `name` has `value` (None: not within `timeout`).
    pub fn wait_configmap_value(
        &self,
        name: &str,
        value: &str,
        timeout: Duration,
    ) -> Option<Duration> {
        let waited = eventually(timeout, || {
            self.configmap_value(name).as_deref() == Some(value)
        });
        waited.map(|w| w.after)
    }

    /// An out-of-band edit of ConfigMap `name`'s `value`, as a person would make it.
    pub fn edit_configmap_value(&self, name: &str, value: &str) {
        let patch = serde_json::json!({"data": {"value": value}}).to_string();
        self.kubectl(&["patch", "configmap", name, "-n", &self.ns, "-p", &patch]);
    }

    /// A service-account token for `sa` (created) in the test namespace.
    pub fn service_account_token(&self, sa: &str) -> String {
        self.kubectl(&["create", "serviceaccount", sa, "-n", &self.ns]);
        self.kubectl(&["create", "token", sa, "-n", &self.ns, "--duration=1h"])
            .trim()
            .to_string()
    }

    /// The control plane's cluster entry with a different user (`user`: the
    /// indented body of a kubeconfig user), as a kubeconfig file in `dir`.
    pub fn kubeconfig_with_user(&self, dir: &Path, user: &str) -> PathBuf {
        let jsonpath = |p: &str| {
            let template = format!("jsonpath={p}");
            self.kubectl(&["config", "view", "--raw", "--minify", "-o", &template])
        };
        let server = jsonpath("{.clusters[0].cluster.server}");
        let ca = jsonpath("{.clusters[0].cluster.certificate-authority}");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: cp\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: c\n  context: {{cluster: cp, user: u, namespace: {}}}\ncurrent-context: c\n",
            self.ns
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The API server's address, from the kubeconfig's `server: https://host:port`.
    pub fn apiserver_addr(&self) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read the kubeconfig");
        let server = text
            .lines()
            .find_map(|line| line.split_once("server: ").map(|(_, s)| s.trim()))
            .expect("a server in the kubeconfig");
        let authority = server.trim_start_matches("https://").trim_end_matches('/');
        authority.parse().expect("the server is host:port")
    }

    /// A copy of the test's kubeconfig in `dir` whose cluster is at `server` (e.g. a
    /// fault proxy in front of the API server); credentials and CA stay the same.
    pub fn kubeconfig_via(&self, dir: &Path, server: &str) -> PathBuf {
        kubeconfig_via(Path::new(&self.kubeconfig), dir, server)
    }

    /// A `converge` command (the binary under test) with the test's kubeconfig.
    pub fn converge_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_converge"));
        cmd.env("KUBECONFIG", &self.kubeconfig).env("NO_COLOR", "1");
        cmd
    }

    /// `converge apply PATH -n NS --wait ARGS…`: its output and how long it took.
    pub fn apply_wait(&self, path: &Path, args: &[&str]) -> (Output, std::time::Duration) {
        let started = std::time::Instant::now();
        let out = self
            .converge_command()
            .arg("apply")
            .arg(path)
            .args(["-n", &self.ns, "--wait"])
            .args(args)
            .output()
            .expect("run converge apply --wait");
        (out, started.elapsed())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self
            .kubectl_command(&["delete", "namespace", &self.ns, "--wait=false"])
            .output();
    }
}

/// What a condition polled by [`eventually`] returns: `bool`, or `Option<T>` when
/// it finds a value.
pub trait Outcome {
    type Value;
    fn found(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn found(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn found(self) -> Option<T> {
        self
    }
}

/// A polled condition that held: what it found, and after how long.
pub struct Waited<T> {
    pub value: T,
    pub after: Duration,
}

/// Polls `check` every 100 ms until it holds or `timeout` passes (None).
pub fn eventually<O: Outcome>(
    timeout: Duration,
    mut check: impl FnMut() -> O,
) -> Option<Waited<O::Value>> {
    let started = Instant::now();
    loop {
        if let Some(value) = check().found() {
            let after = started.elapsed();
            return Some(Waited { value, after });
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A ConfigMap `name` whose `data.value` is `value`: the object most tests apply.
pub fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{value: '{value}'}}\n"
    )
}

/// A temporary directory of manifests, removed when dropped.
pub struct Manifests {
    dir: tempfile::TempDir,
}

impl Manifests {
    pub fn new() -> Self {
        Manifests {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A directory with one file.
    pub fn with(file: &str, text: &str) -> Self {
        let manifests = Self::new();
        manifests.write(file, text);
        manifests
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> &str {
        self.dir.path().to_str().expect("a UTF-8 temporary path")
    }

    /// Writes `file` (a relative path; parent directories are created).
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        let parent = path.parent().expect("a file has a parent");
        std::fs::create_dir_all(parent).expect("create the manifest's directory");
        std::fs::write(&path, text).expect("write manifest");
        path
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join(file)).expect("remove manifest");
    }
}

/// A copy of `kubeconfig` as `dir/kubeconfig` whose cluster is at `server`;
/// credentials and CA stay the same.
pub fn kubeconfig_via(kubeconfig: &Path, dir: &Path, server: &str) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("read the kubeconfig");
    let rewritten: String = text
        .lines()
        .map(|line| match line.split_once("server: ") {
            Some((indent, _)) => format!("{indent}server: {server}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, rewritten).expect("write the kubeconfig");
    path
}

/// Stops and starts kube-apiserver (same port and state) with
/// `hack/controlplane.sh restart-apiserver`, which follows `CONVERGE_CP_DIR` from
/// the environment. Take the plane with [`PlaneAccess::Exclusive`] first.
pub fn restart_apiserver() {
    let restart = Command::new("bash")
        .arg(repo_root().join("hack/controlplane.sh"))
        .arg("restart-apiserver")
        .output()
        .expect("run hack/controlplane.sh restart-apiserver");
    assert_success("hack/controlplane.sh restart-apiserver", &restart);
}

/// `sha256=<hex HMAC-SHA256 of body>`: a webhook signature as GitHub sends it in
/// `X-Hub-Signature-256`. Computed here with ring, independently of the server's check.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A command's exit code, stdout and stderr, for an assertion's message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DNS-1123 label: `<test>-<pid><n>`, at most 63 characters.
fn unique_namespace(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut base: String = test
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}{n}", base.trim_matches('-'), std::process::id())
}
