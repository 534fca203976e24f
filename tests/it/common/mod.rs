//! The shared harness of the integration tests.
//!
//! Tests run against the real control plane that `hack/controlplane.sh up` starts
//! (`hack/test.sh` does it and exports `KUBECONFIG` and a `PATH` with the pinned
//! kubectl). Each test gets its own namespace, removed when the test ends, and checks
//! what converge did with kubectl: an independent client.
//!
//! A test that cannot reach the control plane fails with the reason; it never skips.
//!
//! - [`daemon`]: a `converge run` process with its own config, port and log.
//! - [`git`], [`git_http`], [`sshd`]: real Git repositories, `git http-backend`
//!   behind basic auth, and an OpenSSH server, all on loopback, for Git sources.

pub mod daemon;
pub mod git;
pub mod git_http;
pub mod sshd;

use std::io::Write;
use std::path::PathBuf;
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

    /// A `converge` command (the binary under test) with the test's kubeconfig.
    pub fn converge_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_converge"));
        cmd.env("KUBECONFIG", &self.kubeconfig).env("NO_COLOR", "1");
        cmd
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self
            .kubectl_command(&["delete", "namespace", &self.ns, "--wait=false"])
            .output();
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
