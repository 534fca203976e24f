//! A `converge` command running in the background whose stderr is read line by
//! line as it comes, so that a test can strike (restart the API server, cut the
//! network, `kill -9`) at a precise moment: when the first object was applied.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Running {
    child: Child,
    stderr: Arc<(Mutex<Vec<String>>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

/// How a background command ended, with everything it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Running {
    /// Starts `command` with stdout and stderr captured.
    pub fn spawn(mut command: Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start converge");
        let stderr: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stdout: Arc<Mutex<Vec<u8>>> = Arc::default();
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let lines = stderr.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let (lock, changed) = &*lines;
                lock.lock().expect("stderr lines").push(line);
                changed.notify_all();
            }
        });
        let out = stdout.clone();
        let out_reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out_pipe.read_to_end(&mut bytes);
            out.lock().expect("stdout bytes").extend(bytes);
        });
        Running {
            child,
            stderr,
            readers: vec![err_reader, out_reader],
            stdout,
        }
    }

    /// Waits until a line of stderr contains `needle`; false after `timeout` or
    /// when the command ended first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.stderr;
        let mut lines = lock.lock().expect("stderr lines");
        loop {
            if lines.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            lines = changed.wait_timeout(lines, wait).expect("stderr lines").0;
        }
    }

    /// Whether the command is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// `kill -9`: no cleanup, no last words.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 converge");
    }

    /// Waits for the end and collects the output.
    pub fn finish(mut self) -> Finished {
        let status = self.child.wait().expect("wait for converge");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let stderr = self.stderr.0.lock().expect("stderr lines").join("\n");
        let stdout = String::from_utf8_lossy(&self.stdout.lock().expect("stdout")).into_owned();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Finished {
    /// Panics with the output unless the command exited 0.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}
