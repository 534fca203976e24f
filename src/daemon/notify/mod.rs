//! Notifications: people told about what their sources did, without polling.
//!
//! The [`Recorder`](crate::daemon::record::Recorder) hands the [`Notifier`] what
//! it records (a sync, a failure, drift in a run's outcome, a health change, a
//! held reconcile); `events` (pure) keeps, per source, what was announced and
//! says what is news; `payload` (pure) writes it as each kind of target reads it;
//! `sender` posts it from one task per target. The Recorder's side costs a lock
//! and a `try_send`: a slow or dead receiver fills its own bounded queue, whose
//! newest notices are then dropped and counted, and never delays a reconcile.
//!
//! Only the replica that writes a source (the leader, or in shard mode the
//! source's owner) notifies about it: a follower's report-only runs stay quiet.

mod events;
mod payload;
mod sender;

pub(crate) use events::Observation;

use crate::config::{NotifyConfig, NotifyEvent, SecretFrom, SourceConfig, SourceLocation};
use crate::daemon::leader::Duty;
use crate::daemon::metrics::{Metrics, NotifyOutcome};
use crate::daemon::settings::Settings;
use events::Tracker;
use payload::Notice;
use sender::{Delivery, QUEUE, Secret};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::warn;

/// Why the notification targets cannot start. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "[[notify]] {target:?}: cannot read {what}: {why}; set it (the daemon reads it at start-up)"
    )]
    Secret {
        target: String,
        what: String,
        why: String,
    },
    #[error("[[notify]] {target:?}: cannot build the HTTP client: {why}")]
    Client { target: String, why: String },
}

/// One target as the Recorder's side sees it: what it wants, and its queue.
struct Target {
    name: String,
    events: Vec<NotifyEvent>,
    sources: Vec<String>,
    /// A commit status: only Git sources (their revisions are commits).
    git_only: bool,
    queue: mpsc::Sender<Notice>,
}

/// Where the Recorder hands what it recorded. Cheap to clone; without targets it
/// does nothing at all.
#[derive(Clone, Default)]
pub(crate) struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    trackers: Mutex<HashMap<String, Tracker>>,
    targets: Vec<Target>,
    git_sources: Vec<String>,
    metrics: Metrics,
}

impl Notifier {
    /// Starts one delivery task per target of `targets`; secrets are read now.
    /// `sources` are the configuration's, for the Git URLs of commit statuses.
    pub(crate) fn start(
        targets: &[NotifyConfig],
        sources: &[SourceConfig],
        metrics: &Metrics,
    ) -> Result<Notifier, NotifyError> {
        if targets.is_empty() {
            return Ok(Notifier::default());
        }
        let source_urls: BTreeMap<String, String> = (sources.iter())
            .filter_map(|s| match &s.kind {
                SourceLocation::Git(git) => Some((s.name.clone(), git.url.clone())),
                // A directory's or an OCI artifact's revision is no commit.
                _ => None,
            })
            .collect();
        let mut started = Vec::new();
        for target in targets {
            let secret = target
                .secret
                .as_ref()
                .map(|from| read_secret(&target.name, from))
                .transpose()?;
            let client = crate::daemon::client::http_client(target.timeout).map_err(|e| {
                NotifyError::Client {
                    target: target.name.clone(),
                    why: e.to_string(),
                }
            })?;
            let (queue, receiver) = mpsc::channel(QUEUE);
            let delivery = Delivery {
                name: target.name.clone(),
                kind: target.kind,
                url: target.url.clone(),
                secret,
                repository: target.repository.clone(),
                source_urls: source_urls.clone(),
                client,
                metrics: metrics.clone(),
            };
            metrics.count_notification_targets(&target.name);
            tokio::spawn(delivery.run(receiver));
            started.push(Target {
                name: target.name.clone(),
                events: target.events.clone(),
                sources: target.sources.clone(),
                git_only: target.kind.is_commit_status(),
                queue,
            });
        }
        Ok(Notifier {
            inner: Some(Arc::new(Inner {
                trackers: Mutex::new(HashMap::new()),
                targets: started,
                git_sources: source_urls.into_keys().collect(),
                metrics: metrics.clone(),
            })),
        })
    }

    /// Whether any target hears about `source` (so the Recorder can skip
    /// gathering what only notifications need).
    pub(crate) fn wants(&self, source: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| inner.targets.iter().any(|t| inner.covers(t, source)))
    }

    /// What the Recorder recorded for `settings`' source: the news it makes is
    /// queued for every target that wants it. Never waits.
    pub(crate) fn observe(&self, settings: &Settings, observation: Observation<'_>) {
        let Some(inner) = &self.inner else {
            return;
        };
        // A follower's report-only runs are the leader's news to tell.
        if settings.duty == Duty::StandBy || !self.wants(&settings.name) {
            return;
        }
        let due = {
            let mut trackers = inner
                .trackers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            trackers
                .entry(settings.name.clone())
                .or_default()
                .observe(observation)
        };
        for due in due {
            let notice = Notice {
                source: settings.name.clone(),
                cluster: settings.cluster.clone(),
                revision: due.revision,
                event: due.event,
                objects: due.objects,
                message: due.message,
                time: SystemTime::now(),
            };
            inner.queue(&notice);
        }
    }
}

impl Inner {
    fn covers(&self, target: &Target, source: &str) -> bool {
        let named = target.sources.is_empty() || target.sources.iter().any(|s| s == source);
        named && (!target.git_only || self.git_sources.iter().any(|s| s == source))
    }

    /// Hands `notice` to every target that wants it; a full queue drops it.
    fn queue(&self, notice: &Notice) {
        for target in &self.targets {
            if !target.events.contains(&notice.event) || !self.covers(target, &notice.source) {
                continue;
            }
            if let Err(error) = target.queue.try_send(notice.clone()) {
                let why = match error {
                    mpsc::error::TrySendError::Full(_) => {
                        "its queue is full (the receiver is slow or down)"
                    }
                    mpsc::error::TrySendError::Closed(_) => "its sender stopped",
                };
                warn!(target = %target.name, source = %notice.source, event = %notice.event, why, "notification dropped");
                self.metrics
                    .count_notification(&target.name, NotifyOutcome::Dropped);
            }
        }
    }
}

/// A target's secret, from its environment variable or file (trimmed).
fn read_secret(target: &str, from: &SecretFrom) -> Result<Secret, NotifyError> {
    let (what, value) = match from {
        SecretFrom::Env(var) => (
            format!("the environment variable {var}"),
            std::env::var(var).map_err(|e| e.to_string()),
        ),
        SecretFrom::File(path) => (
            format!("the file {}", path.display()),
            std::fs::read_to_string(path).map_err(|e| e.to_string()),
        ),
    };
    let value = value.map_err(|why| NotifyError::Secret {
        target: target.to_string(),
        what: what.clone(),
        why,
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(NotifyError::Secret {
            target: target.to_string(),
            what,
            why: "it is empty".into(),
        });
    }
    Ok(Secret::new(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver that accepts and never answers: the queue fills, the rest is
    /// dropped and counted, and handing notices over never waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_receiver_costs_the_caller_nothing_and_drops_are_counted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let target = NotifyConfig {
            name: "hangs".into(),
            kind: crate::config::NotifyKind::Slack,
            url: format!("http://{addr}/"),
            repository: crate::config::Repository::FromSource,
            events: vec![NotifyEvent::Synced],
            sources: Vec::new(),
            secret: None,
            timeout: std::time::Duration::from_secs(60),
        };
        let metrics = Metrics::new();
        let notifier = Notifier::start(&[target], &[], &metrics).unwrap();
        let inner = notifier.inner.as_ref().unwrap();
        let notice = Notice {
            source: "shop".into(),
            cluster: None,
            revision: None,
            event: NotifyEvent::Synced,
            objects: Vec::new(),
            message: "m".into(),
            time: SystemTime::now(),
        };
        let started = std::time::Instant::now();
        for _ in 0..200 {
            inner.queue(&notice);
        }
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_millis(500), "{took:?}");
        let text = metrics.encode();
        let dropped = text
            .lines()
            .find(|l| {
                l.starts_with(r#"converge_notifications_total{target="hangs",outcome="dropped"}"#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap();
        // 64 wait in the queue, at most one is being delivered.
        assert!(
            (200 - QUEUE as u64 - 1..=200 - QUEUE as u64).contains(&dropped),
            "{dropped}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn an_empty_secret_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " \n").unwrap();
        let error = read_secret("gh", &SecretFrom::File(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"gh\"") && error.contains("it is empty"),
            "{error}"
        );
        std::fs::write(&path, "t0ken\n").unwrap();
        assert!(read_secret("gh", &SecretFrom::File(path)).is_ok());
    }
}
