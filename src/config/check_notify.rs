//! `[[notify]]` tables checked into [`NotifyConfig`]s: one message per problem,
//! naming the table, its line in config.toml and what to write instead.

use std::collections::HashMap;

use super::Checker;
use super::notify::*;
use super::raw::RawNotify;
use super::{SourceConfig, SourceLocation};

/// The 1-based line of each `[[notify]]` header in `text`, in order, so a problem
/// names where the table is (serde's spans are lost once the table is read).
pub(super) fn notify_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            squeezed.starts_with("[[notify]]")
        })
        .map(|(index, _)| index + 1)
        .collect()
}

impl Checker<'_> {
    /// Every `[[notify]]` table; `sources` are the checked sources it may name.
    pub(super) fn notify(
        &mut self,
        raws: Vec<RawNotify>,
        sources: &[SourceConfig],
        lines: &[usize],
    ) -> Vec<NotifyConfig> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut targets = Vec::new();
        for (index, raw) in raws.into_iter().enumerate() {
            let line = lines
                .get(index)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            let at = match &raw.name {
                Some(name) => format!("notify[{index}] {name:?}{line}"),
                None => format!("notify[{index}]{line}"),
            };
            let Some(target) = self.notify_target(&at, index, raw, sources) else {
                continue;
            };
            if let Some(first) = seen.insert(target.name.clone(), index) {
                self.problem(
                    &at,
                    format!(
                        "name = {:?}: already used by notify[{first}]; names must be unique",
                        target.name
                    ),
                );
            }
            targets.push(target);
        }
        targets
    }

    fn notify_target(
        &mut self,
        at: &str,
        index: usize,
        raw: RawNotify,
        sources: &[SourceConfig],
    ) -> Option<NotifyConfig> {
        let kinds = NotifyKind::ALL.map(NotifyKind::as_str).join(", ");
        let kind = match raw.kind.as_deref() {
            Some(text) => match NotifyKind::ALL.into_iter().find(|k| k.as_str() == text) {
                Some(kind) => kind,
                None => {
                    self.problem(
                        at,
                        format!("kind = {text:?}: not a kind; use one of {kinds}"),
                    );
                    return None;
                }
            },
            None => {
                self.problem(at, format!("kind is required: one of {kinds}"));
                return None;
            }
        };
        let name = match raw.name {
            Some(name) if crate::kube::is_dns_label(&name) => name,
            Some(name) => {
                self.problem(
                    at,
                    format!("name = {name:?}: use a DNS label (lower-case letters, digits, '-')"),
                );
                name
            }
            None => format!("{kind}-{index}"),
        };
        let url = self.notify_url(at, kind, raw.url, raw.api_url);
        let repository = match (kind.is_commit_status(), raw.repository) {
            (true, Some(repo)) if repo.trim().is_empty() => {
                self.problem(at, "repository = \"\": name OWNER/REPO, or leave it out to read it from each Git source's URL");
                Repository::FromSource
            }
            (true, Some(repo)) => Repository::Named(repo),
            (true, None) => Repository::FromSource,
            (false, Some(repo)) => {
                self.problem(
                    at,
                    format!("repository = {repo:?}: only github and gitlab targets post commit statuses; remove it"),
                );
                Repository::FromSource
            }
            (false, None) => Repository::FromSource,
        };
        let events = self.notify_events(at, raw.events);
        let chosen = self.notify_sources(at, kind, raw.sources, sources);
        let secret = self.notify_secret(
            at,
            kind,
            &raw.secret_env,
            &raw.secret_file,
            &raw.token_env,
            &raw.token_file,
        );
        let timeout = self.duration(at, "timeout", raw.timeout.as_ref(), DEFAULT_NOTIFY_TIMEOUT);
        Some(NotifyConfig {
            name,
            kind,
            url,
            repository,
            events,
            sources: chosen,
            secret,
            timeout,
        })
    }

    /// `url` for webhook and slack, `api_url` (defaulted) for github and gitlab.
    fn notify_url(
        &mut self,
        at: &str,
        kind: NotifyKind,
        url: Option<String>,
        api_url: Option<String>,
    ) -> String {
        let (key, value) = match kind {
            NotifyKind::Webhook | NotifyKind::Slack => {
                if let Some(api) = api_url {
                    self.problem(at, format!("api_url = {api:?}: only for github and gitlab; a {kind} target takes url"));
                }
                match url {
                    Some(url) => ("url", url),
                    None => {
                        self.problem(
                            at,
                            format!("url is required for a {kind} target: where to POST"),
                        );
                        return String::new();
                    }
                }
            }
            NotifyKind::Github | NotifyKind::Gitlab => {
                if let Some(url) = url {
                    self.problem(
                        at,
                        format!(
                            "url = {url:?}: a {kind} target takes api_url (the API's root), not url"
                        ),
                    );
                }
                let default = match kind {
                    NotifyKind::Github => DEFAULT_GITHUB_API,
                    _ => DEFAULT_GITLAB_API,
                };
                ("api_url", api_url.unwrap_or_else(|| default.to_string()))
            }
        };
        let scheme_ok = value.starts_with("https://") || value.starts_with("http://");
        let host_ok = value
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        if !scheme_ok || !host_ok {
            let shown = crate::config::redact_url(&value);
            self.problem(
                at,
                format!("{key} = {shown:?}: write an http:// or https:// URL with a host"),
            );
        }
        value.trim_end_matches('/').to_string()
    }

    /// `events`: at least one, each a known event.
    fn notify_events(&mut self, at: &str, raw: Option<Vec<String>>) -> Vec<NotifyEvent> {
        let valid = NotifyEvent::ALL.map(NotifyEvent::as_str).join(", ");
        let Some(names) = raw.filter(|names| !names.is_empty()) else {
            self.problem(at, format!("events is required: a list of {valid}"));
            return Vec::new();
        };
        let mut events = Vec::new();
        for name in names {
            match NotifyEvent::parse(&name) {
                Some(event) => events.push(event),
                None => self.problem(
                    at,
                    format!("events: {name:?} is not an event; use some of {valid}"),
                ),
            }
        }
        events.sort();
        events.dedup();
        events
    }

    /// `sources`: each names a source; a commit status needs a Git source.
    fn notify_sources(
        &mut self,
        at: &str,
        kind: NotifyKind,
        raw: Option<Vec<String>>,
        sources: &[SourceConfig],
    ) -> Vec<String> {
        let names = raw.unwrap_or_default();
        for name in &names {
            match sources.iter().find(|s| &s.name == name) {
                None => {
                    let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                    self.problem(
                        at,
                        format!("sources: {name:?} is not a [[source]]; the sources are {known:?}"),
                    );
                }
                Some(source) if kind.is_commit_status() => {
                    if !matches!(source.kind, SourceLocation::Git(_)) {
                        self.problem(
                            at,
                            format!("sources: {name:?} is not a Git source; a {kind} commit status needs a Git revision (a commit)"),
                        );
                    }
                }
                Some(_) => {}
            }
        }
        names
    }

    /// The secret: an HMAC key for a webhook, a token for github/gitlab, nothing
    /// for slack (its URL is the secret).
    fn notify_secret(
        &mut self,
        at: &str,
        kind: NotifyKind,
        secret_env: &Option<String>,
        secret_file: &Option<String>,
        token_env: &Option<String>,
        token_file: &Option<String>,
    ) -> Option<SecretFrom> {
        let (wanted, env, file, other_env, other_file) = match kind {
            NotifyKind::Webhook => ("secret", secret_env, secret_file, token_env, token_file),
            NotifyKind::Github | NotifyKind::Gitlab => {
                ("token", token_env, token_file, secret_env, secret_file)
            }
            NotifyKind::Slack => {
                for (key, value) in [
                    ("secret_env", secret_env),
                    ("secret_file", secret_file),
                    ("token_env", token_env),
                    ("token_file", token_file),
                ] {
                    if value.is_some() {
                        self.problem(
                            at,
                            format!(
                                "{key}: a slack target has no secret (its URL is one); remove it"
                            ),
                        );
                    }
                }
                return None;
            }
        };
        let other = if wanted == "secret" {
            "token"
        } else {
            "secret"
        };
        if other_env.is_some() || other_file.is_some() {
            self.problem(
                at,
                format!(
                    "{other}_env/{other}_file: a {kind} target takes {wanted}_env or {wanted}_file"
                ),
            );
        }
        match (env, file) {
            (Some(var), None) => {
                self.env_var(at, &format!("{wanted}_env"), var);
                Some(SecretFrom::Env(var.clone()))
            }
            (None, Some(path)) => {
                let resolved = self.existing_file(&format!("{at}: {wanted}_file"), path);
                Some(SecretFrom::File(resolved))
            }
            (Some(_), Some(_)) => {
                self.problem(
                    at,
                    format!("{wanted}_env and {wanted}_file: give one of them"),
                );
                None
            }
            (None, None) => {
                let why = match kind {
                    NotifyKind::Webhook => {
                        "the key that signs each payload (X-Converge-Signature-256)"
                    }
                    _ => "the API token that posts commit statuses",
                };
                self.problem(
                    at,
                    format!("{wanted}_env or {wanted}_file is required: {why}"),
                );
                None
            }
        }
    }
}
