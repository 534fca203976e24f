//! A small HTTP/1.1 server on 127.0.0.1 that requires basic auth and runs
//! `git http-backend` as a CGI program for each request: the smart HTTP protocol
//! exactly as a real Git host speaks it, without a web server to install.
//!
//! One thread per connection, keep-alive supported, bodies with Content-Length or
//! chunked encoding. Threads end when the client hangs up; the accept loop lives as
//! long as the test process (which is short-lived).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::git::require_git;

pub struct GitHttpServer {
    pub addr: SocketAddr,
    settings: Arc<Settings>,
    /// Requests served so far (any status).
    pub requests: Arc<AtomicUsize>,
    /// `git-upload-pack` POSTs served so far: each is an object download.
    pub uploads: Arc<AtomicUsize>,
}

struct Settings {
    root: PathBuf,
    /// `user:password` as the Authorization header must carry it (changeable, to
    /// play a rotated password).
    credentials: Mutex<String>,
    /// While set, connections are dropped unanswered: the remote is unreachable.
    down: AtomicBool,
    requests: Arc<AtomicUsize>,
    uploads: Arc<AtomicUsize>,
}

impl GitHttpServer {
    /// Serves the repositories under `root` to clients that log in as `user`/`password`.
    pub fn start(root: PathBuf, user: &str, password: &str) -> GitHttpServer {
        require_git();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let uploads = Arc::new(AtomicUsize::new(0));
        let settings = Arc::new(Settings {
            root,
            credentials: Mutex::new(format!("{user}:{password}")),
            down: AtomicBool::new(false),
            requests: requests.clone(),
            uploads: uploads.clone(),
        });
        let accepted = settings.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let settings = accepted.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &settings);
                });
            }
        });
        GitHttpServer {
            addr,
            settings,
            requests,
            uploads,
        }
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// From now on only `user`/`password` is accepted.
    pub fn set_password(&self, user: &str, password: &str) {
        *self
            .settings
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = format!("{user}:{password}");
    }

    /// Makes the remote unreachable (connections dropped unanswered) or reachable again.
    pub fn set_down(&self, down: bool) {
        self.settings.down.store(down, Ordering::SeqCst);
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn upload_count(&self) -> usize {
        self.uploads.load(Ordering::SeqCst)
    }
}

/// A loopback port nothing listened on when asked (bound, then released): for a
/// server of a test's own to bind, which must then check that it did.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A loopback port that refuses connections for as long as this is held: bound,
/// never listening, so no other process can take it and answer instead.
pub struct RefusingPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

impl RefusingPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .expect("bind 127.0.0.1:0");
        let port = socket.local_addr().expect("the bound address").port();
        RefusingPort {
            port,
            _socket: socket,
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(stream: TcpStream, settings: &Settings) -> std::io::Result<()> {
    if settings.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        settings.requests.fetch_add(1, Ordering::SeqCst);
        if request.method == "POST" {
            settings.uploads.fetch_add(1, Ordering::SeqCst);
        }
        let response = respond(&request, settings);
        writer.write_all(&response)?;
        writer.flush()?;
        if request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    Ok(())
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(None),
    };
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    request.body = read_body(reader, &request)?;
    Ok(Some(request))
}

fn read_body(reader: &mut impl BufRead, request: &Request) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if request
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
            if size == 0 {
                // Trailers end with an empty line.
                let mut trailer = String::new();
                while reader.read_line(&mut trailer)? > 2 {
                    trailer.clear();
                }
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    }
    let length: usize = request
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    body.resize(length, 0);
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn respond(request: &Request, settings: &Settings) -> Vec<u8> {
    let authorized = request
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .is_some_and(|decoded| {
            let credentials = settings
                .credentials
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            decoded == credentials.as_bytes()
        });
    if !authorized {
        return b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                 Content-Length: 0\r\n\r\n"
            .to_vec();
    }
    match run_cgi(request, settings) {
        Ok(output) => cgi_to_http(&output),
        Err(e) => {
            let body = format!("http-backend failed: {e}");
            format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }
}

fn run_cgi(request: &Request, settings: &Settings) -> std::io::Result<Vec<u8>> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let credentials = settings
        .credentials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let user = credentials.split(':').next().unwrap_or("");
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &settings.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", request.header("content-type").unwrap_or(""))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(protocol) = request.header("git-protocol") {
        command.env("HTTP_GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let body = request.body.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    Ok(output.stdout)
}

/// CGI output (headers, blank line, body) → an HTTP/1.1 response with Content-Length.
fn cgi_to_http(output: &[u8]) -> Vec<u8> {
    let split = find(output, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| find(output, b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec();
    };
    let head = String::from_utf8_lossy(&output[..end]);
    let body = &output[end + sep..];
    let mut status = "200 OK".to_string();
    let mut headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string()
            }
            Some(_) => headers.push_str(&format!("{}\r\n", line.trim_end())),
            None => {}
        }
    }
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
