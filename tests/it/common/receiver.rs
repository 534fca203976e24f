//! A notification receiver on loopback: a small HTTP/1.1 server on 127.0.0.1:0
//! that records every request (method, path, headers, body, when it arrived) and
//! answers `201 Created`, or, [`Answer::Never`], reads the request and never
//! answers (a receiver that hangs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Created,
    /// Holds the connection open and never writes a byte.
    Never,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        (self.headers.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: the body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub struct Receiver {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    pub fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver on loopback");
        let addr = listener.local_addr().expect("receiver address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, answer, &recorded));
            }
        });
        Receiver { addr, requests }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn to(&self, prefix: &str) -> Vec<Request> {
        let mut requests = self.requests();
        requests.retain(|r| r.path.starts_with(prefix));
        requests
    }

    /// Waits until a request to `prefix` satisfies `found`; it, or `None` after `timeout`.
    pub fn wait_for(
        &self,
        prefix: &str,
        timeout: Duration,
        found: impl Fn(&Request) -> bool,
    ) -> Option<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.to(prefix).into_iter().find(|r| found(r)) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads requests off one connection (keep-alive) until it closes.
fn serve(stream: TcpStream, answer: Answer, recorded: &Mutex<Vec<Request>>) {
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let length: usize = (headers.iter())
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Request {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            });
        match answer {
            Answer::Created => {
                let reply = "HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Never => {
                // Keep the connection open, answer nothing, until the client gives up.
                let mut rest = [0u8; 1024];
                while reader.read(&mut rest).unwrap_or(0) > 0 {}
                return;
            }
        }
    }
}
