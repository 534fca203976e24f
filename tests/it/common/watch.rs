//! `kubectl get --watch` for tests that must see every change: returned only once
//! the API server has accepted the watch, so that nothing made afterwards can be
//! missed, instead of a sleep that guesses when the watch is open.

use super::TestEnv;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long kubectl may take to list and open its watch on a busy machine.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` (a `kubectl get … --watch`) at `-v=6` and returns once its watch
/// is open: kubectl then logs the answer to its `watch=true` request, `200 OK`,
/// and from then on the server sends every change (those since the list
/// included). Every line of stdout goes to `on_line`, on a thread of its own.
/// Kill the child when done.
pub fn open(mut command: Command, mut on_line: impl FnMut(String) + Send + 'static) -> Child {
    let mut child = command
        .arg("-v=6")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl get --watch");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(line);
        }
    });
    let logged: Arc<Mutex<Vec<String>>> = Arc::default();
    let (opened, is_open) = mpsc::channel();
    let log = logged.clone();
    std::thread::spawn(move || {
        // Read to the end: a full pipe would stop kubectl.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if is_watch_answer(&line) {
                let _ = opened.send(());
            }
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() < 200 {
                log.push(line);
            }
        }
    });
    if is_open.recv_timeout(OPEN_TIMEOUT).is_ok() {
        return child;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = logged.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    panic!("kubectl get --watch did not open its watch within {OPEN_TIMEOUT:?}; it logged:\n{log}");
}

/// kubectl's `-v=6` line for the answer to a watch request that succeeded, e.g.
/// `"Response" verb="GET" url="…&watch=true" status="200 OK"` (older kubectl:
/// `GET https://…&watch=true 200 OK in 3 milliseconds`).
fn is_watch_answer(line: &str) -> bool {
    line.contains("watch=true") && line.contains("200 OK")
}

/// Every event of a `kubectl get --watch --output-watch-events`, one line each:
/// `TYPE NAME` and what `fields` adds, recorded from the moment the watch is open
/// (the objects that already exist come first, as ADDED).
pub struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    /// `what`: the kind and where, e.g. `["namespaces"]` or `["configmaps", "-n",
    /// ns]`; `fields`: jsonpath after the name, e.g. `" {.object.data.value}"`.
    pub fn record(env: &TestEnv, what: &[&str], fields: &str) -> Events {
        let template = format!("jsonpath={{.type}} {{.object.metadata.name}}{fields}{{\"\\n\"}}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--watch", "--output-watch-events", "-o", &template]);
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let child = open(env.kubectl_command(&args), move |line| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        });
        Events { child, lines }
    }

    /// The events so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether an event `kind` (ADDED, MODIFIED, DELETED) of object `name` is
    /// recorded within `timeout`.
    pub fn saw(&self, kind: &str, name: &str, timeout: Duration) -> bool {
        let wanted = format!("{kind} {name}");
        let seen = super::eventually(timeout, || {
            self.lines()
                .iter()
                .any(|l| l == &wanted || l.starts_with(&format!("{wanted} ")))
        });
        seen.is_some()
    }
}

impl Events {
    /// The events of object `name`.
    pub fn of(&self, name: &str) -> Vec<String> {
        let suffix = format!(" {name}");
        let fields = format!(" {name} ");
        let lines = self.lines().into_iter();
        lines
            .filter(|l| l.ends_with(&suffix) || l.contains(&fields))
            .collect()
    }

    /// Panics unless object `name` (`what`, for the message) was seen created and
    /// then deleted: not merely absent, which it also is when it was never written.
    /// Deletion may take a minute: a Namespace is Terminating until emptied.
    pub fn assert_created_then_deleted(&self, what: &str, name: &str) {
        assert!(
            self.saw("ADDED", name, Duration::from_secs(10)),
            "{what} {name} was never created (its events: {:?}): the check that it \
             is deleted again proves nothing",
            self.of(name)
        );
        assert!(
            self.saw("DELETED", name, Duration::from_secs(60)),
            "{what} {name} was created and left behind (its events: {:?})",
            self.of(name)
        );
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
