//! The I/O of notifications: one task per target, fed by a bounded queue, that
//! paces, signs, posts and retries. A reconcile never waits for it: the queue is
//! filled with `try_send`, and when a receiver is slow or dead its queue fills
//! and the newest notices are dropped (counted and logged), never the daemon's
//! time.

use super::payload::{self, Notice};
use crate::config::{NotifyKind, Repository};
use crate::daemon::metrics::{Metrics, NotifyOutcome};
use crate::kube::backoff::Backoff;
use crate::source::sign_github_signature;
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

/// Notices waiting for one target; beyond this the newest are dropped.
pub(crate) const QUEUE: usize = 64;
/// Deliveries of one notice after the first attempt fails.
const RETRIES: usize = 4;
/// The least time between two requests to one target: a burst of news (a
/// revision that degrades twenty objects) stays within what chat services and
/// the providers' APIs accept.
const MIN_GAP: Duration = Duration::from_millis(100);
/// The header that carries the webhook's signature: HMAC-SHA256 of the raw body,
/// as GitHub's `X-Hub-Signature-256` is.
pub(crate) const SIGNATURE_HEADER: &str = "X-Converge-Signature-256";

/// A secret read at start-up: never printed, never in a payload.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How one target is reached.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub name: String,
    pub kind: NotifyKind,
    /// The URL (webhook, slack) or API root (github, gitlab). Not logged: a
    /// Slack webhook's URL is its secret.
    pub url: String,
    pub secret: Option<Secret>,
    pub repository: Repository,
    /// Each Git source's URL, for [`Repository::FromSource`].
    pub source_urls: BTreeMap<String, String>,
    pub client: reqwest::Client,
    pub metrics: Metrics,
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
enum Attempt {
    /// A timeout, a refused or broken connection, 429 or 5xx.
    Retry(String),
    /// The receiver refused the request (another 4xx): sending it again would not help.
    Refused(String),
}

impl Delivery {
    /// Runs until the queue's senders are gone (the daemon stopped).
    pub(crate) async fn run(self, mut queue: mpsc::Receiver<Notice>) {
        let mut last: Option<Instant> = None;
        while let Some(notice) = queue.recv().await {
            if let Some(last) = last {
                tokio::time::sleep_until(last + MIN_GAP).await;
            }
            last = Some(Instant::now());
            let span = info_span!("notify", target = %self.name, source = %notice.source, event = %notice.event);
            self.deliver(&notice).instrument(span).await;
        }
    }

    /// One notice, with retries; counted as sent or failed.
    async fn deliver(&self, notice: &Notice) {
        let Some(request) = self.request(notice) else {
            return;
        };
        let mut delays = Backoff::NOTIFY.delays().take(RETRIES);
        loop {
            match self.attempt(&request).await {
                Ok(()) => {
                    debug!("notification delivered");
                    self.metrics
                        .count_notification(&self.name, NotifyOutcome::Sent);
                    return;
                }
                Err(Attempt::Retry(why)) => match delays.next() {
                    Some(delay) => {
                        debug!(%why, ?delay, "notification not delivered; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        warn!(%why, attempts = RETRIES + 1, "notification not delivered; giving up");
                        self.metrics
                            .count_notification(&self.name, NotifyOutcome::Failed);
                        return;
                    }
                },
                Err(Attempt::Refused(why)) => {
                    warn!(%why, "notification refused by the receiver; not retried");
                    self.metrics
                        .count_notification(&self.name, NotifyOutcome::Failed);
                    return;
                }
            }
        }
    }

    /// The URL and body of `notice` for this target's kind; `None` (logged) when
    /// it has nowhere to go (a commit status without a commit or a repository).
    fn request(&self, notice: &Notice) -> Option<(String, Vec<u8>)> {
        match self.kind {
            NotifyKind::Webhook => Some((self.url.clone(), payload::webhook_body(notice))),
            NotifyKind::Slack => Some((self.url.clone(), payload::slack_body(notice))),
            NotifyKind::Github | NotifyKind::Gitlab => {
                let repository = match &self.repository {
                    Repository::Named(name) => name.clone(),
                    Repository::FromSource => {
                        let url = self.source_urls.get(&notice.source);
                        match url.and_then(|u| payload::repository_from_url(self.kind, u)) {
                            Some(repository) => repository,
                            None => {
                                warn!(kind = %self.kind, "no repository for a commit status: the source is not a Git source whose URL names one; set repository in [[notify]]");
                                return None;
                            }
                        }
                    }
                };
                let status = payload::commit_status(self.kind, &repository, notice)?;
                Some((
                    format!("{}{}", self.url, status.path),
                    status.body.to_string().into_bytes(),
                ))
            }
        }
    }

    async fn attempt(&self, (url, body): &(String, Vec<u8>)) -> Result<(), Attempt> {
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("converge/", env!("CARGO_PKG_VERSION")),
            );
        match (self.kind, &self.secret) {
            (NotifyKind::Webhook, Some(Secret(key))) => {
                request = request.header(
                    SIGNATURE_HEADER,
                    sign_github_signature(key.as_bytes(), body),
                );
            }
            (NotifyKind::Github, Some(Secret(token))) => {
                request = request
                    .bearer_auth(token)
                    .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28");
            }
            (NotifyKind::Gitlab, Some(Secret(token))) => {
                request = request.header("PRIVATE-TOKEN", token);
            }
            _ => {}
        }
        let response = request.body(body.clone()).send().await.map_err(|e| {
            // reqwest's error names the URL; a Slack URL is a secret, so only the
            // kind of failure is kept.
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "the request failed"
            };
            Attempt::Retry(what.to_string())
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let why = format!("the receiver answered {status}");
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Attempt::Retry(why))
        } else {
            Err(Attempt::Refused(why))
        }
    }
}
