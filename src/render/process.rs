//! Running a rendering tool: bounded in time and output, in a scrubbed environment.
//!
//! Why: a repository is input from whoever can push to it. The tool gets no cloud
//! credentials, kubeconfig or tokens from the daemon's environment (only `PATH`, for
//! `git` when remote bases are allowed), a `HOME` of its own that is thrown away
//! afterwards (no plugins, caches or repositories of the host's user), and it is
//! killed when it runs too long or writes more than converge would ever apply.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::debug;

/// ToolLimits for one tool run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolLimits {
    pub timeout: Duration,
    /// Bytes of standard output; more is refused.
    pub max_output: u64,
}

impl Default for ToolLimits {
    fn default() -> Self {
        ToolLimits {
            timeout: Duration::from_secs(60),
            max_output: 64 << 20,
        }
    }
}

/// How much of a failing tool's standard error is kept for the message.
const MAX_STDERR: u64 = 64 << 10;

/// Why a run produced no output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tool exited non-zero; its standard error, trimmed.
    #[error("{0}")]
    Failed(String),
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    #[error("wrote more than {} MiB", .0 >> 20)]
    TooLarge(u64),
}

/// One command line to run: `program prefix… args…` in `dir`.
pub(super) struct Invocation<'a> {
    pub program: &'a Path,
    pub args: Vec<String>,
    pub dir: &'a Path,
}

/// Runs `invocation` to completion; its standard output.
pub(super) async fn run(
    invocation: Invocation<'_>,
    limits: ToolLimits,
) -> Result<Vec<u8>, RunError> {
    let spawn_error = |source| RunError::Spawn {
        program: invocation.program.to_path_buf(),
        source,
    };
    let started = Instant::now();
    let home = tempfile::tempdir().map_err(spawn_error)?;
    let mut child = scrubbed(invocation.program, home.path())
        .map_err(spawn_error)?
        .args(&invocation.args)
        .current_dir(invocation.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Failed("no output pipes".into()));
    };
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout, limits.max_output),
            read_capped(stderr, MAX_STDERR),
            child.wait()
        );
        (out, err, status)
    };
    let (out, err, status) = tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| RunError::Timeout(limits.timeout))?;
    let status = status.map_err(spawn_error)?;
    let out = out.map_err(spawn_error)?;
    if out.len() as u64 > limits.max_output {
        return Err(RunError::TooLarge(limits.max_output));
    }
    if !status.success() {
        let err = err.unwrap_or_default();
        return Err(RunError::Failed(
            String::from_utf8_lossy(&err).trim().to_string(),
        ));
    }
    // The tool's own share of a render (the rest is converge reading its output).
    let seconds = started.elapsed().as_secs_f64();
    debug!(program = %invocation.program.display(), seconds, bytes = out.len(), "tool ran");
    Ok(out)
}

/// A command with nothing of converge's environment but `PATH`; `HOME`, `TMPDIR` and
/// the XDG directories point into `home`.
fn scrubbed(program: &Path, home: &Path) -> std::io::Result<Command> {
    let mut command = Command::new(program);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (key, dir) in [
        ("HOME", ""),
        ("TMPDIR", "tmp"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
    ] {
        let dir = home.join(dir);
        std::fs::create_dir_all(&dir)?;
        command.env(key, dir);
    }
    // No kubeconfig (a render never talks to a cluster), no Helm plugins or
    // post-renderers from anywhere, plain messages.
    command
        .env("KUBECONFIG", "/dev/null")
        .env("HELM_NO_PLUGINS", "1")
        .env("LANG", "C");
    Ok(command)
}

/// Reads `pipe` to its end, keeping at most `limit + 1` bytes (so a caller sees that
/// the limit was passed) and discarding the rest, so the tool never blocks on a full
/// pipe.
async fn read_capped(
    mut pipe: impl AsyncRead + Unpin,
    limit: u64,
) -> Result<Vec<u8>, std::io::Error> {
    let mut kept = Vec::new();
    (&mut pipe).take(limit + 1).read_to_end(&mut kept).await?;
    tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Invocation<'static> {
        Invocation {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            dir: Path::new("/"),
        }
    }

    fn limits(timeout_ms: u64, max_output: u64) -> ToolLimits {
        ToolLimits {
            timeout: Duration::from_millis(timeout_ms),
            max_output,
        }
    }

    #[tokio::test]
    async fn output_environment_and_failures() {
        let out = run(
            sh("echo $HOME; echo ${KUBECONFIG}; echo ${AWS_SECRET:-none}"),
            limits(5000, 1024),
        )
        .await
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with(std::env::temp_dir().to_str().unwrap()),
            "{out}"
        );
        assert_eq!(&lines[1..], ["/dev/null", "none"]);
        let err = run(sh("echo oops >&2; exit 3"), limits(5000, 1024))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "oops");
    }

    #[tokio::test]
    async fn time_and_size_are_bounded() {
        let slow = run(sh("sleep 5"), limits(100, 1024)).await.unwrap_err();
        assert!(matches!(slow, RunError::Timeout(_)), "{slow:?}");
        let big = run(sh("head -c 100000 /dev/zero"), limits(5000, 1000))
            .await
            .unwrap_err();
        assert!(matches!(big, RunError::TooLarge(1000)), "{big:?}");
        let missing = Invocation {
            program: Path::new("/nonexistent/tool"),
            args: vec![],
            dir: Path::new("/"),
        };
        let err = run(missing, ToolLimits::default()).await.unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    }
}
