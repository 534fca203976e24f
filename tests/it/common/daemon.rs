//! A `converge run` process for tests: its own config, port, state directory and
//! log, stopped when dropped. Its HTTP endpoints are read with curl, like an
//! operator would.

use super::{TestEnv, eventually, prometheus};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `converge run` with `config` (TOML; `{ns}` is replaced by the test's
    /// namespace, `{state}` by a state directory of the daemon's own) and waits
    /// until /healthz answers.
    pub fn start(env: &TestEnv, config: &str, extra_args: &[&str]) -> Daemon {
        Self::start_with_env(env, config, extra_args, &[])
    }

    /// [`Daemon::start`] with extra environment variables (credentials by env var).
    pub fn start_with_env(
        env: &TestEnv,
        config: &str,
        extra_args: &[&str],
        vars: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        let state = dir.path().join("state");
        let config = config
            .replace("{ns}", &env.ns)
            .replace("{state}", &state.display().to_string());
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("converge.log");
        let spawn = |addr: &str| {
            let log = std::fs::File::create(&log_path).expect("log file");
            env.converge_command()
                .args(["-v", "run", "--config"])
                .arg(&config_path)
                .args(["--listen", addr])
                .args(extra_args)
                .envs(vars.iter().copied())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start converge run")
        };
        let (child, addr) = start_listening(spawn, &log_path);
        let daemon = Daemon { child, addr, dir };
        let healthy = eventually(Duration::from_secs(20), || daemon.get("/healthz").0 == 200);
        assert!(
            healthy.is_some(),
            "converge run did not serve /healthz:\n{}",
            daemon.log()
        );
        daemon
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Replaces its config file (`{ns}` and `{state}` as in [`Daemon::start`]) the
    /// way editors and ConfigMap volumes do: a new file renamed over the old one.
    pub fn rewrite_config(&self, env: &TestEnv, config: &str) {
        let state = self.dir.path().join("state");
        let config = config
            .replace("{ns}", &env.ns)
            .replace("{state}", &state.display().to_string());
        let staged = self.dir.path().join(".config.toml.new");
        std::fs::write(&staged, config).expect("write the new config");
        std::fs::rename(&staged, self.config_path()).expect("rename the new config");
    }

    /// `converge ARGS --addr <this daemon>` (a client command: status, suspend…).
    pub fn converge(&self, env: &TestEnv, args: &[&str]) -> std::process::Output {
        env.converge_command()
            .args(args)
            .args(["--addr", &self.addr])
            .output()
            .expect("run converge")
    }

    /// Sends `signal` (e.g. `HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// The daemon's state directory (`{state}` in its config).
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// GET `path`: (HTTP status, body); status 0 when nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        curl(&[&format!("http://{}{path}", self.addr)])
    }

    /// POST `body` with extra headers: (HTTP status, body).
    pub fn post(&self, path: &str, headers: &[&str], body: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        let mut args = vec!["-X", "POST", "--data-binary", body, url.as_str()];
        for header in headers {
            args.extend(["-H", header]);
        }
        curl(&args)
    }

    /// /readyz is 200 within `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let ready = eventually(timeout, || self.get("/readyz").0 == 200);
        assert!(
            ready.is_some(),
            "converge never became ready:\n{}",
            self.log()
        );
    }

    pub fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// The first source's status.
    pub fn source(&self) -> Value {
        self.status()["sources"][0].clone()
    }

    /// The `/metrics` text, which must be valid.
    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        prometheus::assert_valid(&body);
        body
    }

    /// The sum of the samples whose series starts with `prefix`
    /// (e.g. `converge_api_requests_total{verb="get"}`).
    pub fn metric(&self, prefix: &str) -> f64 {
        prometheus::sum(&self.metrics(), prefix)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("converge.log")).unwrap_or_default()
    }

    /// Waits until a line of the log past its first `from` bytes (an earlier
    /// `log().len()`) contains every one of `needles`; polls every 10 ms, so a test
    /// can strike (`kill -9`) close to that moment. False after `timeout`.
    pub fn wait_for_log(&self, from: usize, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            let mut lines = log.get(from..).unwrap_or_default().lines();
            if lines.any(|l| needles.iter().all(|n| l.contains(n))) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the log, past its first `from` bytes (an earlier `log().len()`),
    /// says that the live `object` (e.g. `Deployment.apps/ns/web`) changed and,
    /// after that, that a reconcile finished: the daemon has acted on the change.
    pub fn reconciled_after_change(&self, from: usize, object: &str) -> bool {
        let log = self.log();
        let object = format!("object={object}");
        let mut lines = log.get(from..).unwrap_or_default().lines();
        let seen = lines
            .by_ref()
            .any(|l| l.contains("live object changed") && l.contains(&object));
        seen && lines.any(|l| l.contains(": reconciled "))
    }

    /// SIGKILL, as a crash or a lost node would stop it: nothing is cleaned up.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 converge");
        self.child.wait().expect("wait for converge");
    }

    /// Sends SIGTERM and waits for the exit: (status, time taken).
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for converge") {
                return (status, started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "converge did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Starts converge (`spawn` with a `--listen` address) on a free port until it
/// serves there, as its log says: a port free when picked can be taken before
/// the daemon binds it, and then the daemon exits saying it cannot listen, and
/// another port is tried. Another process answering /healthz on that port is
/// never taken for the daemon. The child and its address.
fn start_listening(mut spawn: impl FnMut(&str) -> Child, log: &Path) -> (Child, String) {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = spawn(&addr);
        let outcome = eventually(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.contains("serving /healthz") && names_address(l, &addr))
            {
                return Some(true);
            }
            child.try_wait().ok().flatten().map(|_| false)
        });
        let text = std::fs::read_to_string(log).unwrap_or_default();
        match outcome.map(|o| o.value) {
            Some(true) => return (child, addr),
            Some(false) if text.contains(&format!("cannot listen on {addr}")) => continue,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("converge run did not serve on {addr}:\n{text}");
            }
        }
    }
    panic!("converge run found no free port to listen on in {ATTEMPTS} attempts");
}

/// Whether `line` (text or JSON) names `addr`, not merely a longer port.
fn names_address(line: &str, addr: &str) -> bool {
    line.match_indices(addr)
        .any(|(i, m)| !line[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// A port nothing listened on when asked: free to bind, for a moment only.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What a directory source's daemon does about drift.
#[derive(Clone, Copy)]
pub enum Drift {
    /// `self_heal = true`: re-apply at once.
    Heal,
    /// `self_heal = false`: report it in /status, change nothing.
    Report,
}

/// The config of a daemon with one directory source named after the test's
/// namespace and applying into it, with prune on.
pub fn dir_config(dir: &Path, interval: &str, drift: Drift) -> String {
    let self_heal = matches!(drift, Drift::Heal);
    format!(
        r#"state_dir = "{{state}}"

[[source]]
name = "{{ns}}"
dir = "{dir}"
namespace = "{{ns}}"
interval = "{interval}"
prune = true
self_heal = {self_heal}
"#,
        dir = dir.display(),
    )
}
