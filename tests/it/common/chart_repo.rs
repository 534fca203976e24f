//! A Helm chart repository on 127.0.0.1: a static HTTP/1.1 file server (with
//! `ETag`/`If-None-Match`, optional basic auth and a count of requests per path)
//! over a directory that the real `helm package` and `helm repo index` fill.
//!
//! Charts are copies of tests/fixtures/podinfo/charts/podinfo (Apache-2.0, its
//! LICENSE travels with it) with the version rewritten, so each published version
//! renders objects labelled `helm.sh/chart: podinfo-<version>`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::repo_root;

/// How [`ChartRepo::publish_chart`] publishes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    AsIs,
    /// The archive's bytes changed after indexing: its digest no longer matches.
    Tampered,
}

pub struct ChartRepo {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    state: Arc<State>,
}

struct State {
    root: PathBuf,
    /// `Basic <base64(user:password)>` when the repository needs credentials.
    authorization: Option<String>,
    /// GET requests answered 200, by path.
    downloads: Mutex<HashMap<String, usize>>,
}

/// The helm binary the tests package with: on PATH (`hack/test.sh` puts the one
/// `hack/tools.sh` built there). Fails the test when there is none.
pub fn helm_bin() -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|path| path.is_file())
    });
    match found {
        Some(path) => path.display().to_string(),
        None => panic!(
            "helm is not on PATH; run the tests through hack/test.sh, or \
             eval \"$(bash hack/tools.sh env)\" after `bash hack/tools.sh build`"
        ),
    }
}

fn run(what: &str, command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl ChartRepo {
    /// An empty repository, open to all (`credentials: None`) or behind basic auth.
    pub fn start(credentials: Option<(&str, &str)>) -> ChartRepo {
        let root = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            root: root.path().to_path_buf(),
            authorization: credentials.map(|(user, password)| {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }),
            downloads: Mutex::new(HashMap::new()),
        });
        let accepted = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = accepted.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        let repo = ChartRepo { addr, root, state };
        repo.reindex();
        repo
    }

    pub fn url(&self) -> String {
        format!("http://{}/charts", self.addr)
    }

    /// Packages podinfo as `version` and re-indexes.
    pub fn publish(&self, version: &str) {
        self.publish_chart(&podinfo(version), Publish::AsIs);
    }

    /// Packages the chart directory `chart` and re-indexes, like a release job:
    /// packaged and indexed aside, then the archive moved in and the index last,
    /// so a client never sees an index naming an archive that is not there yet.
    /// [`Publish::Tampered`] changes the archive's bytes after indexing.
    pub fn publish_chart(&self, chart: &Path, how: Publish) {
        let staging = tempfile::tempdir().expect("tempdir");
        let out = run(
            "helm package",
            Command::new(helm_bin())
                .arg("package")
                .arg(chart)
                .arg("-d")
                .arg(staging.path())
                .env("HOME", staging.path()),
        );
        let archive = out
            .split_whitespace()
            .last()
            .map(PathBuf::from)
            .expect("helm package names the archive it wrote");
        let name = archive.file_name().expect("an archive name").to_owned();
        let served = self.charts_dir();
        std::fs::copy(
            served.join("index.yaml"),
            staging.path().join("old-index.yaml"),
        )
        .expect("copy the index");
        run(
            "helm repo index --merge",
            Command::new(helm_bin())
                .args(["repo", "index"])
                .arg(staging.path())
                .arg("--merge")
                .arg(staging.path().join("old-index.yaml"))
                .env("HOME", staging.path()),
        );
        if matches!(how, Publish::Tampered) {
            let mut bytes = std::fs::read(&archive).expect("read the archive");
            bytes.extend_from_slice(b"tampered");
            std::fs::write(&archive, bytes).expect("write the archive");
        }
        std::fs::copy(&archive, served.join(&name)).expect("publish the archive");
        std::fs::rename(staging.path().join("index.yaml"), served.join("index.yaml"))
            .or_else(|_| {
                std::fs::copy(staging.path().join("index.yaml"), served.join("index.yaml"))
                    .map(|_| ())
            })
            .expect("publish the index");
    }

    fn charts_dir(&self) -> PathBuf {
        let dir = self.root.path().join("charts");
        std::fs::create_dir_all(&dir).expect("charts dir");
        dir
    }

    fn reindex(&self) {
        run(
            "helm repo index",
            Command::new(helm_bin())
                .args(["repo", "index"])
                .arg(self.charts_dir())
                .env("HOME", self.root.path()),
        );
    }

    /// How many times `path` (e.g. `/charts/podinfo-6.14.1.tgz`) was served with 200.
    pub fn downloads(&self, path: &str) -> usize {
        let map = self.state.downloads.lock().expect("downloads");
        map.get(path).copied().unwrap_or(0)
    }
}

/// A copy of the podinfo fixture chart at `version`, in a directory that lives as
/// long as the test process (helm package reads it at once).
pub fn podinfo(version: &str) -> PathBuf {
    let scratch = tempfile::tempdir().expect("tempdir").keep();
    let chart = scratch.join("podinfo");
    copy_dir(
        &repo_root().join("tests/fixtures/podinfo/charts/podinfo"),
        &chart,
    );
    let manifest = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&manifest).expect("Chart.yaml");
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("version:") {
                format!("version: {version}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&manifest, text).expect("write Chart.yaml");
    chart
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn serve(stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        if let Some(length) = headers
            .get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let response = answer(state, method, path, &headers);
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

fn answer(state: &State, method: &str, path: &str, headers: &HashMap<String, String>) -> Vec<u8> {
    let respond = |status: &str, extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(body);
        }
        out
    };
    if let Some(expected) = &state.authorization {
        if headers.get("authorization") != Some(expected) {
            return respond(
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"charts\"\r\n",
                b"unauthorized",
            );
        }
    }
    let relative = path.split('?').next().unwrap_or("").trim_start_matches('/');
    if method != "GET" && method != "HEAD" || relative.split('/').any(|c| c == "..") {
        return respond("400 Bad Request", "", b"bad request");
    }
    let Ok(body) = std::fs::read(state.root.join(relative)) else {
        return respond("404 Not Found", "", b"not found");
    };
    let etag = format!("\"{:x}\"", fnv(&body));
    if headers.get("if-none-match") == Some(&etag) {
        return respond("304 Not Modified", &format!("ETag: {etag}\r\n"), b"");
    }
    {
        let mut downloads = state.downloads.lock().expect("downloads");
        *downloads.entry(format!("/{relative}")).or_default() += 1;
    }
    respond("200 OK", &format!("ETag: {etag}\r\n"), &body)
}

/// A content hash for ETags (FNV-1a: no dependency, and collisions do not matter
/// in a test).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
