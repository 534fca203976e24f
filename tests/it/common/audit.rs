//! The API server's audit log, read as an independent record of what a client did.
//!
//! `hack/controlplane.sh identity NAME` writes a kubeconfig for a client certificate
//! (CN=NAME) whose every request the API server records at level Metadata in
//! `$STATE/audit.log` (`$STATE`: the directory of the control plane's kubeconfig).
//! [`Identity::new`] makes one; [`Identity::events`] reads back its requests in one
//! namespace, in the order the log has them; [`Identity::watches_opened`] its
//! watches as they were opened.

use super::{TestEnv, assert_success, repo_root};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// A client the audit log records: its user name and its kubeconfig.
pub struct Identity {
    pub name: String,
    pub kubeconfig: PathBuf,
    /// The control plane's state directory, where `audit.log` is.
    state: PathBuf,
}

/// One completed request, as the audit log records it at level Metadata.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub verb: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    pub request_uri: String,
    /// When the API server received the request (RFC 3339, microseconds).
    pub request_received: String,
    pub stage_timestamp: String,
    /// Whom the request was authorized as (`Impersonate-User`), if not the
    /// identity itself.
    pub impersonated: Option<String>,
}

impl AuditEvent {
    /// Answered with 2xx.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A dry run (`?dryRun=All`): validated, never persisted.
    pub fn is_dry_run(&self) -> bool {
        self.request_uri.contains("dryRun=")
    }

    /// When the API server received the request, by the machine's clock.
    pub fn received_at(&self) -> SystemTime {
        humantime::parse_rfc3339_weak(&self.request_received)
            .unwrap_or_else(|e| panic!("requestReceivedTimestamp {:?}: {e}", self.request_received))
    }

    /// A request that changes something (dry runs aside), answered or refused.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && !self.is_dry_run()
    }

    /// `resource/name`, e.g. `jobs/web-migrate`.
    pub fn object(&self) -> String {
        format!("{}/{}", self.resource, self.name)
    }

    fn from_json(event: &Value) -> Option<Self> {
        let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
        Some(AuditEvent {
            verb: text("/verb")?.to_string(),
            resource: text("/objectRef/resource").unwrap_or("").to_string(),
            namespace: text("/objectRef/namespace").unwrap_or("").to_string(),
            name: text("/objectRef/name").unwrap_or("").to_string(),
            code: event
                .pointer("/responseStatus/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            request_uri: text("/requestURI").unwrap_or("").to_string(),
            request_received: text("/requestReceivedTimestamp").unwrap_or("").to_string(),
            stage_timestamp: text("/stageTimestamp").unwrap_or("").to_string(),
            impersonated: text("/impersonatedUser/username").map(str::to_string),
        })
    }
}

impl Identity {
    /// The kubeconfig of identity `name` (lowercase letters, digits and `-`; unique
    /// per test), made by `hack/controlplane.sh identity` for the test's plane.
    pub fn new(env: &TestEnv, name: &str) -> Self {
        let state = Path::new(&env.kubeconfig)
            .parent()
            .expect("the kubeconfig is in the control plane's state directory")
            .to_path_buf();
        let out = Command::new("bash")
            .arg(repo_root().join("hack/controlplane.sh"))
            .args(["identity", name])
            .env("CONVERGE_CP_DIR", &state)
            .output()
            .expect("run hack/controlplane.sh identity");
        assert_success(&format!("hack/controlplane.sh identity {name}"), &out);
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(kubeconfig.is_file(), "no kubeconfig at {kubeconfig:?}");
        Identity {
            name: name.to_string(),
            kubeconfig,
            state,
        }
    }

    /// The kubeconfig as a command-line argument.
    pub fn kubeconfig_arg(&self) -> &str {
        self.kubeconfig.to_str().expect("a UTF-8 state directory")
    }

    /// A copy of this identity's kubeconfig in `dir` whose cluster is at `server`
    /// (a fault proxy: TLS passes through, so the audit log still names it).
    pub fn kubeconfig_via(&self, dir: &Path, server: &str) -> PathBuf {
        super::kubeconfig_via(&self.kubeconfig, dir, server)
    }

    /// Every completed request of this identity on objects in `namespace`, in the
    /// order the log has them (a rotated `audit-*.log` first). Watches that are
    /// still open are not there yet.
    pub fn events(&self, namespace: &str) -> Vec<AuditEvent> {
        self.log_files()
            .iter()
            .flat_map(|path| self.read(path, "ResponseComplete"))
            .filter(|event| event.namespace == namespace)
            .collect()
    }

    /// Every watch of this identity that the API server started answering (stage
    /// ResponseStarted: the watch is open), in any namespace, in log order.
    pub fn watches_opened(&self) -> Vec<AuditEvent> {
        self.log_files()
            .iter()
            .flat_map(|path| self.read(path, "ResponseStarted"))
            .filter(|event| event.verb == "watch")
            .collect()
    }

    /// This identity's requests in one log file, at `stage`.
    fn read(&self, path: &Path, stage: &str) -> Vec<AuditEvent> {
        let file = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("read the audit log {path:?}: {e}"));
        let user = format!("\"username\":\"{}\"", self.name);
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|line| line.contains(&user))
            // A line cut short by a rotation does not parse.
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .filter(|json| {
                json.pointer("/user/username").and_then(Value::as_str) == Some(self.name.as_str())
                    && json["stage"] == stage
            })
            .filter_map(|json| AuditEvent::from_json(&json))
            .collect()
    }

    /// The rotated backups (oldest first), then the current log.
    fn log_files(&self) -> Vec<PathBuf> {
        let current = self.state.join("audit.log");
        assert!(
            current.is_file(),
            "no audit log at {current:?}: the control plane was started without one \
             (restart it with hack/controlplane.sh down && hack/controlplane.sh up)"
        );
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(&self.state)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        name.starts_with("audit-") && name.ends_with(".log")
                    })
                    .collect()
            })
            .unwrap_or_default();
        rotated.sort();
        rotated.push(current);
        rotated
    }
}
