//! `[[notify]]`: where the daemon tells people what its sources did (a signed JSON
//! webhook, a Slack-compatible channel, a GitHub or GitLab commit status).
//!
//! Secrets are named here (an environment variable or a file), never held: the
//! daemon reads them when it starts the targets, so no `Config` that might be
//! printed carries one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long one delivery (one HTTP request) may take when a target sets no `timeout`.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub's REST API, when a `kind = "github"` target names no `api_url`.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// GitLab's REST API, when a `kind = "gitlab"` target names no `api_url`.
pub const DEFAULT_GITLAB_API: &str = "https://gitlab.com/api/v4";

/// What a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// converge's JSON payload, signed with HMAC-SHA256 over the raw body.
    Webhook,
    /// A Slack incoming-webhook message (Mattermost and others accept it too).
    Slack,
    /// A commit status on the revision, through GitHub's REST API.
    Github,
    /// A commit status on the revision, through GitLab's REST API.
    Gitlab,
}

impl NotifyKind {
    /// Every kind, as written in config.toml.
    pub const ALL: [NotifyKind; 4] = [
        NotifyKind::Webhook,
        NotifyKind::Slack,
        NotifyKind::Github,
        NotifyKind::Gitlab,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Webhook => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Github => "github",
            NotifyKind::Gitlab => "gitlab",
        }
    }

    /// Whether it posts a commit status (so it needs a Git revision and a token).
    pub fn is_commit_status(self) -> bool {
        matches!(self, NotifyKind::Github | NotifyKind::Gitlab)
    }
}

impl fmt::Display for NotifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a source, as targets subscribe to it (`events = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// A new revision was applied.
    Synced,
    /// A revision could not be applied (the last good one stays).
    Failed,
    /// Live objects differ from the source.
    Drifted,
    /// Drifted objects are back as the source says.
    Healed,
    /// An applied object turned unhealthy.
    Degraded,
    /// Every applied object is healthy again after a degradation.
    Recovered,
    /// A reconcile is held for the source's dependencies.
    Waiting,
}

impl NotifyEvent {
    /// Every event, as written in config.toml.
    pub const ALL: [NotifyEvent; 7] = [
        NotifyEvent::Synced,
        NotifyEvent::Failed,
        NotifyEvent::Drifted,
        NotifyEvent::Healed,
        NotifyEvent::Degraded,
        NotifyEvent::Recovered,
        NotifyEvent::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Synced => "synced",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Drifted => "drifted",
            NotifyEvent::Healed => "healed",
            NotifyEvent::Degraded => "degraded",
            NotifyEvent::Recovered => "recovered",
            NotifyEvent::Waiting => "waiting",
        }
    }

    /// The event written as `name`, if it is one.
    pub fn parse(name: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a target's secret (a webhook's HMAC key, a provider's token) is read
/// from when the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// `*_env`: an environment variable (checked to be set).
    Env(String),
    /// `*_file`: a file (checked to exist); surrounding whitespace is trimmed.
    File(PathBuf),
}

/// Which repository a commit status goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// `repository = "OWNER/REPO"` (GitHub) or a project path or id (GitLab).
    Named(String),
    /// Read from each Git source's URL (`https://host/OWNER/REPO.git`,
    /// `git@host:group/sub/project.git`).
    FromSource,
}

/// One `[[notify]]` table, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// Unique; the `target` label of the notification metrics (default `<kind>-<index>`).
    pub name: String,
    pub kind: NotifyKind,
    /// Where requests go: the webhook's URL, or the provider's API root (`api_url`).
    pub url: String,
    /// github/gitlab: the repository of the commit statuses.
    pub repository: Repository,
    /// What the target is told about, in a stable order.
    pub events: Vec<NotifyEvent>,
    /// Only these sources (empty: every source, or every Git source for a commit status).
    pub sources: Vec<String>,
    /// webhook: the HMAC key (required); github/gitlab: the API token (required).
    pub secret: Option<SecretFrom>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl NotifyConfig {
    /// Whether the target is told about `source`.
    pub fn covers(&self, source: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source)
    }
}
