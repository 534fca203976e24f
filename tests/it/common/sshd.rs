//! A throwaway OpenSSH server on 127.0.0.1 for Git-over-SSH tests: its own host key,
//! one authorized client key, no passwords, logging in as the current user (Git runs
//! `git-upload-pack` through that user's shell). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::git_http::closed_port;

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    pub user: String,
    /// The server's public host key line (`ssh-ed25519 AAAA… comment`).
    pub host_key_pub: String,
    /// The authorized client's private key (ed25519, no passphrase).
    pub client_key: PathBuf,
    pub dir: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

/// Fails the test unless OpenSSH's server and ssh-keygen are installed.
fn require_openssh() {
    assert!(
        Path::new(SSHD).is_file(),
        "{SSHD} is missing: install Debian's `openssh-server` package (apt-get install openssh-server)"
    );
    let keygen = Command::new("ssh-keygen").arg("-?").output();
    assert!(
        keygen.is_ok(),
        "ssh-keygen is missing: install Debian's `openssh-client` package"
    );
}

/// Makes an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "converge-test", "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    pub fn start() -> Sshd {
        require_openssh();
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        keygen(&dir.join("host_ed25519"));
        keygen(&dir.join("client_ed25519"));
        std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        // sshd running as root insists on its privilege-separation directory (a
        // non-root run cannot create it and does not need it).
        let _ = std::fs::create_dir_all("/run/sshd");
        let (child, port) = start_listening(&dir);
        let host_key_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).expect("host key");
        Sshd {
            port,
            user: current_user(),
            host_key_pub: host_key_pub.trim().to_string(),
            client_key: dir.join("client_ed25519"),
            dir,
            child,
            _tmp: tmp,
        }
    }

    /// `ssh://<user>@127.0.0.1:<port><absolute path>`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// A known_hosts file at `name` listing `key_line` for this server.
    pub fn known_hosts(&self, name: &str, key_line: &str, hashed: bool) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, format!("[127.0.0.1]:{} {key_line}\n", self.port))
            .expect("known_hosts");
        if hashed {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-H", "-f"])
                .arg(&path)
                .stdout(Stdio::null())
                .status()
                .expect("ssh-keygen -H");
            assert!(status.success(), "ssh-keygen -H failed");
        }
        path
    }

    /// The host key's fingerprint as `ssh-keygen -l` prints it (`SHA256:…`).
    pub fn host_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(self.dir.join("host_ed25519.pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts sshd on a free port until one start listens there, as its log says: a
/// port free when picked can be taken before sshd binds it, and then sshd exits
/// saying so, and another port is tried. The child and its port.
fn start_listening(dir: &Path) -> (Child, u16) {
    const ATTEMPTS: usize = 5;
    let log_path = dir.join("sshd.log");
    for _ in 0..ATTEMPTS {
        let port = closed_port();
        let config = dir.join("sshd_config");
        std::fs::write(&config, sshd_config(dir, port)).expect("sshd_config");
        let log = std::fs::File::create(&log_path).expect("sshd.log");
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let exited = child.try_wait().ok().flatten().is_some();
            if text.contains(&listening) || exited || Instant::now() >= deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if text.contains(&listening) {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
        if !text.contains("Address already in use") {
            panic!(
                "sshd did not listen on 127.0.0.1:{port} within 10s (config in {}):\n{text}",
                dir.display()
            );
        }
    }
    panic!("sshd found no free port to listen on in {ATTEMPTS} attempts");
}

fn sshd_config(dir: &Path, port: u16) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
         PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
         AllowTcpForwarding no\nX11Forwarding no\nLogLevel INFO\n",
        host = dir.join("host_ed25519").display(),
        auth = dir.join("authorized_keys").display(),
    )
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
