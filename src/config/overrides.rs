//! Command-line flags laid over `config.toml`, lowest to highest as ripgrep merges
//! its config file and arguments: the file, then the flags.
//!
//! The binary fills an [`Overrides`] from its flags (and their `CONVERGE_*`
//! environment variables) and calls [`Config::with`]; nothing else merges
//! settings, so which one wins is decided here once and tested.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Config;

/// What `converge run`'s flags set; `None` (or `Keep`) leaves the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--kubeconfig`: over `[cluster] kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: over `[cluster] context`.
    pub context: Option<String>,
    /// `--listen`: over `[server] listen`.
    pub listen: Option<SocketAddr>,
    /// `--leader-elect`: turns on `[leader_election]`; a flag cannot turn it off.
    pub leader_election: LeaderElection,
}

/// What `--leader-elect` says about `[leader_election] enabled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeaderElection {
    /// The flag is absent: the file decides.
    #[default]
    Keep,
    /// `--leader-elect`: elect, whatever the file says.
    Enable,
}

impl Config {
    /// This config with the command line's settings laid over it.
    pub fn with(mut self, overrides: Overrides) -> Config {
        let Overrides {
            kubeconfig,
            context,
            listen,
            leader_election,
        } = overrides;
        if kubeconfig.is_some() {
            self.cluster.kubeconfig = kubeconfig;
        }
        if context.is_some() {
            self.cluster.context = context;
        }
        if let Some(listen) = listen {
            self.server.listen = listen;
        }
        if leader_election == LeaderElection::Enable {
            self.leader_election.enabled = true;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("m")).expect("manifests dir");
        std::fs::write(dir.path().join("kc"), "").expect("kubeconfig");
        let text = format!("{text}\n[[source]]\nname = \"a\"\ndir = \"m\"\n");
        Config::parse_with_env(&text, &dir.path().join("config.toml"), &|_| None)
            .expect("valid config")
    }

    #[test]
    fn no_flags_keep_the_file() {
        let file = config("[cluster]\ncontext = \"prod\"\n[leader_election]\nenabled = true");
        assert_eq!(file.clone().with(Overrides::default()), file);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = config("[cluster]\ncontext = \"prod\"\n[server]\nlisten = \"127.0.0.1:1000\"");
        let merged = file.with(Overrides {
            kubeconfig: Some("/k".into()),
            context: Some("dev".into()),
            listen: Some("127.0.0.1:2000".parse().expect("address")),
            leader_election: LeaderElection::Enable,
        });
        assert_eq!(merged.cluster.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert_eq!(merged.cluster.context.as_deref(), Some("dev"));
        assert_eq!(merged.server.listen.port(), 2000);
        assert!(merged.leader_election.enabled);
    }

    #[test]
    fn an_unset_flag_keeps_each_file_value() {
        let file = config("[cluster]\ncontext = \"prod\"\n[server]\nlisten = \"127.0.0.1:1000\"");
        let merged = file.with(Overrides {
            kubeconfig: Some("/k".into()),
            ..Overrides::default()
        });
        assert_eq!(merged.cluster.context.as_deref(), Some("prod"));
        assert_eq!(merged.server.listen.port(), 1000);
        assert!(!merged.leader_election.enabled);
    }
}
