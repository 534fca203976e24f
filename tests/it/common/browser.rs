//! A real headless Chromium for the web page's tests, driven over the W3C
//! WebDriver protocol by Debian's `chromedriver` (the `chromium-driver` package,
//! version-matched to `chromium` by Debian; `hack/install-deps.sh` installs both).
//! The protocol is a handful of JSON requests, sent with curl like the daemon's
//! endpoints: no Python, no driver library.
//!
//! One browser per test: it is heavy on a shared two-core machine.

use super::daemon::free_port;
use super::eventually;
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and one browser session in it; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    log: tempfile::NamedTempFile,
}

/// Where Chromium's real binary is: `$CONVERGE_CHROMIUM`, else Debian's (the
/// `/usr/bin/chromium` wrapper is a shell script that parses flags of its own).
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CONVERGE_CHROMIUM") {
        return path.into();
    }
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no Chromium: install Debian's chromium and chromium-driver \
                 (bash hack/install-deps.sh), or set CONVERGE_CHROMIUM"
            )
        })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// `width`×`height` pixels large. Fails, naming what to install, when either
    /// is missing.
    pub fn start(width: u32, height: u32) -> Browser {
        let binary = chromium_binary();
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver ({e}): install Debian's chromium-driver \
                     (bash hack/install-deps.sh)"
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            log,
        };
        let up = eventually(Duration::from_secs(20), || {
            browser.call("GET", "/status", None).ok()?["value"]["ready"].as_bool()
        });
        assert!(
            up.is_some(),
            "chromedriver did not answer on {}:\n{}",
            browser.base,
            browser.driver_log()
        );
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created = browser
            .call("POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("Chromium did not start: {e}\n{}", browser.driver_log()));
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// Opens `url` and waits for its load event.
    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and
    /// returns what it returns.
    pub fn run(&self, script: &str, args: &[Value]) -> Value {
        let body = json!({ "script": script, "args": args });
        self.session_call("POST", "/execute/sync", Some(&body))["value"].take()
    }

    /// Polls `script` in the page every 25 ms until it returns something truthy
    /// (not `null`, `false` or `""`), and returns that with how long it took;
    /// `None` after `timeout`.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> Option<(Value, Duration)> {
        let started = std::time::Instant::now();
        loop {
            let value = self.run(script, &[]);
            let truthy =
                !matches!(&value, Value::Null | Value::Bool(false)) && value.as_str() != Some("");
            if truthy {
                return Some((value, started.elapsed()));
            }
            if started.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Resizes the window (a phone's width, say).
    pub fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.session_call("POST", "/window/rect", Some(&rect));
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let shot = self.session_call("GET", "/screenshot", None);
        let data = shot["value"].as_str().expect("a base64 screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// What chromedriver logged, for a failure's message.
    pub fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// One WebDriver request: its JSON answer, or the error it reports.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut command = Command::new("curl");
        command.args(["-s", "-m", "60", "-X", method, &url]);
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "--data-binary"]);
            command.arg(body.to_string());
        }
        let out = command.output().map_err(|e| format!("run curl: {e}"))?;
        let answer: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
