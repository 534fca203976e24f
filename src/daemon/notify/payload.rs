//! Pure: a notice as each kind of target reads it. converge's own JSON (signed by
//! the sender), a Slack incoming-webhook message, and the GitHub and GitLab commit
//! status requests. No secret is ever an input here, so none can end up in a body.

use crate::config::{NotifyEvent, NotifyKind};
use crate::source::short_revision;
use serde_json::{Value, json};
use std::time::SystemTime;

/// One notification, as every target kind is built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    pub source: String,
    /// The `[[clusters]]` entry the source writes to; `None`: the home cluster.
    pub cluster: Option<String>,
    pub revision: Option<String>,
    pub event: NotifyEvent,
    pub objects: Vec<String>,
    pub message: String,
    pub time: SystemTime,
}

/// GitHub caps a commit status's description at 140 characters.
const DESCRIPTION_MAX: usize = 140;

/// converge's webhook payload: what happened to which source, at which revision.
pub(crate) fn webhook_body(notice: &Notice) -> Vec<u8> {
    let body = json!({
        "source": notice.source,
        "cluster": notice.cluster.as_deref().unwrap_or("home"),
        "revision": notice.revision,
        "event": notice.event.as_str(),
        "objects": notice.objects,
        "message": notice.message,
        "time": humantime::format_rfc3339_millis(notice.time).to_string(),
    });
    body.to_string().into_bytes()
}

/// A Slack incoming-webhook message: `text` (what notifications and clients
/// without blocks show) and `blocks` with the details.
pub(crate) fn slack_body(notice: &Notice) -> Vec<u8> {
    let icon = match notice.event {
        NotifyEvent::Synced | NotifyEvent::Healed | NotifyEvent::Recovered => ":white_check_mark:",
        NotifyEvent::Failed | NotifyEvent::Degraded => ":x:",
        NotifyEvent::Drifted => ":warning:",
        NotifyEvent::Waiting => ":hourglass:",
    };
    let text = format!(
        "{icon} converge: {} {}: {}",
        notice.source, notice.event, notice.message
    );
    let mut context = vec![format!("source *{}*", escape(&notice.source))];
    if let Some(cluster) = &notice.cluster {
        context.push(format!("cluster *{}*", escape(cluster)));
    }
    if let Some(revision) = &notice.revision {
        context.push(format!("revision `{}`", short_revision(revision)));
    }
    context.push(humantime::format_rfc3339_seconds(notice.time).to_string());
    let body = json!({
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": format!("{icon} *{}* {}\n{}", escape(&notice.source), notice.event, escape(&notice.message)),
                }
            },
            {
                "type": "context",
                "elements": [{ "type": "mrkdwn", "text": context.join(" · ") }]
            }
        ]
    });
    body.to_string().into_bytes()
}

/// A commit status request: the path under the API root and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusRequest {
    pub path: String,
    pub body: Value,
}

/// The commit status for `notice` on `repository`, or `None` when the notice has
/// no Git commit to put it on (a directory source, a fetch failure).
pub(crate) fn commit_status(
    kind: NotifyKind,
    repository: &str,
    notice: &Notice,
) -> Option<StatusRequest> {
    let sha = notice.revision.as_deref().filter(|r| is_commit(r))?;
    let context = format!("converge/{}", notice.source);
    let description = truncate(&format!("{}: {}", notice.event, notice.message));
    match kind {
        NotifyKind::Github => {
            let state = match notice.event {
                NotifyEvent::Synced | NotifyEvent::Healed | NotifyEvent::Recovered => "success",
                NotifyEvent::Failed | NotifyEvent::Degraded => "failure",
                NotifyEvent::Drifted | NotifyEvent::Waiting => "pending",
            };
            Some(StatusRequest {
                path: format!("/repos/{repository}/statuses/{sha}"),
                body: json!({ "state": state, "context": context, "description": description }),
            })
        }
        NotifyKind::Gitlab => {
            let state = match notice.event {
                NotifyEvent::Synced | NotifyEvent::Healed | NotifyEvent::Recovered => "success",
                NotifyEvent::Failed | NotifyEvent::Degraded => "failed",
                NotifyEvent::Drifted | NotifyEvent::Waiting => "pending",
            };
            let id = percent_encoding::utf8_percent_encode(
                repository,
                percent_encoding::NON_ALPHANUMERIC,
            );
            Some(StatusRequest {
                path: format!("/projects/{id}/statuses/{sha}"),
                body: json!({ "state": state, "name": context, "description": description }),
            })
        }
        NotifyKind::Webhook | NotifyKind::Slack => None,
    }
}

/// The repository a Git URL names, for a commit status: `OWNER/REPO` for GitHub
/// (the last two path segments), the whole path for GitLab (groups nest). `.git`
/// and credentials are dropped; `None` when there is no such path.
pub(crate) fn repository_from_url(kind: NotifyKind, url: &str) -> Option<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        // scp-like: `git@host:owner/repo.git`
        None => url.split_once(':')?.1,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match kind {
        NotifyKind::Github if segments.len() >= 2 => Some(segments[segments.len() - 2..].join("/")),
        NotifyKind::Gitlab if !segments.is_empty() => Some(segments.join("/")),
        _ => None,
    }
}

/// A full commit id (SHA-1 or SHA-256 hex), as opposed to a directory's `dir:` hash.
fn is_commit(revision: &str) -> bool {
    matches!(revision.len(), 40 | 64) && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= DESCRIPTION_MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(DESCRIPTION_MAX - 1).collect();
    format!("{cut}…")
}

/// Slack's mrkdwn control characters, escaped as its documentation asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn notice(event: NotifyEvent) -> Notice {
        Notice {
            source: "shop".into(),
            cluster: None,
            revision: Some(SHA.into()),
            event,
            objects: vec!["ConfigMap/shop/a".into()],
            message: "revision 0123456789ab applied: 1 object written".into(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn the_webhook_body_has_every_field() {
        let body: Value =
            serde_json::from_slice(&webhook_body(&notice(NotifyEvent::Synced))).unwrap();
        assert_eq!(body["source"], "shop");
        assert_eq!(body["cluster"], "home");
        assert_eq!(body["revision"], SHA);
        assert_eq!(body["event"], "synced");
        assert_eq!(body["objects"], json!(["ConfigMap/shop/a"]));
        assert_eq!(body["time"], "2023-11-14T22:13:20.000Z");
        assert!(body["message"].as_str().unwrap().contains("applied"));
    }

    #[test]
    fn slack_gets_text_and_blocks() {
        let mut n = notice(NotifyEvent::Degraded);
        n.message = "web: <crash> & burn".into();
        let body: Value = serde_json::from_slice(&slack_body(&n)).unwrap();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with(":x: converge: shop degraded")
        );
        assert_eq!(body["blocks"][0]["type"], "section");
        let section = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(section.contains("&lt;crash&gt; &amp; burn"), "{section}");
        let context = body["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("revision `0123456789ab`"), "{context}");
    }

    #[test]
    fn github_and_gitlab_statuses() {
        let github = commit_status(
            NotifyKind::Github,
            "acme/shop",
            &notice(NotifyEvent::Failed),
        )
        .unwrap();
        assert_eq!(github.path, format!("/repos/acme/shop/statuses/{SHA}"));
        assert_eq!(github.body["state"], "failure");
        assert_eq!(github.body["context"], "converge/shop");
        let gitlab = commit_status(
            NotifyKind::Gitlab,
            "group/sub/shop",
            &notice(NotifyEvent::Drifted),
        )
        .unwrap();
        assert_eq!(
            gitlab.path,
            format!("/projects/group%2Fsub%2Fshop/statuses/{SHA}")
        );
        assert_eq!(gitlab.body["state"], "pending");
        assert_eq!(gitlab.body["name"], "converge/shop");
        let mut long = notice(NotifyEvent::Synced);
        long.message = "x".repeat(500);
        let description = commit_status(NotifyKind::Github, "a/b", &long)
            .unwrap()
            .body["description"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(description.chars().count(), DESCRIPTION_MAX);
    }

    #[test]
    fn no_status_without_a_commit() {
        let mut n = notice(NotifyEvent::Synced);
        n.revision = Some("dir:0123".into());
        assert_eq!(commit_status(NotifyKind::Github, "a/b", &n), None);
        n.revision = None;
        assert_eq!(commit_status(NotifyKind::Gitlab, "a/b", &n), None);
    }

    #[test]
    fn repositories_from_git_urls() {
        let github = |url| repository_from_url(NotifyKind::Github, url);
        let gitlab = |url| repository_from_url(NotifyKind::Gitlab, url);
        assert_eq!(
            github("https://github.com/acme/shop.git").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(
            github("https://user:tok@ghe.example.com/acme/shop").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(
            github("git@github.com:acme/shop.git").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(
            github("ssh://git@github.com:22/acme/shop.git").as_deref(),
            Some("acme/shop")
        );
        assert_eq!(github("http://127.0.0.1:8080/shop.git"), None);
        assert_eq!(
            gitlab("https://gitlab.com/group/sub/shop.git").as_deref(),
            Some("group/sub/shop")
        );
        assert_eq!(
            gitlab("http://127.0.0.1:8080/shop.git").as_deref(),
            Some("shop")
        );
        assert_eq!(gitlab("https://gitlab.com/"), None);
    }
}
