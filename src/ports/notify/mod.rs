//! The notify port: tell people about a rollout where they talk. [`compose`]
//! writes the message once — a release announcement, not a log line — and
//! each channel only formats and delivers it. One message per phase change.

pub mod console;
pub mod github_deployments;
pub mod jsonl;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::rollout::{IssueRef, NotifyKind, Phase, Rollout, Stage};
use crate::ports::env::{lookup, AdapterEnv, AdapterError, Settings};

/// A message about a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Why it is sent.
    pub kind: NotifyKind,
    /// The rollout.
    pub rollout_id: String,
    /// The service.
    pub target: String,
    /// Stable version.
    pub stable_version: String,
    /// Canary version.
    pub canary_version: String,
    /// Phase now.
    pub phase: Phase,
    /// The step (0-based) it was sent at: a button click after the rollout moved on is stale.
    #[serde(default)]
    pub stage: usize,
    /// Headline.
    pub title: String,
    /// A sentence or two.
    pub text: String,
    /// Key facts, in order.
    pub facts: Vec<(String, String)>,
    /// Links (name, URL).
    pub links: Vec<(String, String)>,
    /// Commands a person may run (approve, reject).
    pub commands: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// What can go wrong delivering a message.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Delivery failed (no secrets, such as webhook URLs, in the text).
    #[error("{0}")]
    Failed(String),
}

/// A notification channel.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers one message.
    async fn send(&self, n: &Notification) -> Result<(), NotifyError>;
}

/// Builds a channel from its settings.
pub type Factory = fn(&Settings, &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError>;

/// Channels by provider name. A new channel is one file and one line here.
pub const PROVIDERS: &[(&str, Factory)] = &[
    ("console", console::build),
    ("jsonl", jsonl::build),
    ("teams", teams::build),
    ("slack", slack::build),
    ("webhook", webhook::build),
    ("githubDeployments", github_deployments::build),
];

/// The channel a spec names.
pub fn build(provider: &str, settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    lookup("notify", PROVIDERS, provider)?(settings, env)
}

/// The webhook URL a channel posts to. It is a secret (whoever has it can
/// post), so the spec names the app setting that holds it: `urlSetting`.
pub fn webhook_url(provider: &str, settings: &Settings, env: &AdapterEnv) -> Result<String, AdapterError> {
    let config = |message: String| AdapterError::Config { provider: provider.to_string(), message };
    let name = env
        .secret_name(provider, settings, "urlSetting", None, crate::ports::reach::SecretUse::Channel)?
        .ok_or_else(|| config("'urlSetting' is required and must be a string".into()))?;
    let url = env.secret(&name).ok_or_else(|| config(format!("app setting {name} (the webhook URL) is not set")))?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(config(format!("app setting {name} does not hold an http(s) URL")));
    }
    Ok(url)
}

/// Posts a JSON body to a webhook. Errors name the channel and its answer,
/// never the URL (it is the secret).
pub async fn post_json(
    http: &reqwest::Client,
    channel: &str,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<(), NotifyError> {
    let mut request = http.post(url).header("content-type", "application/json").body(body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.map_err(|e| NotifyError::Failed(format!("{channel} webhook unreachable: {}", e.without_url())))?;
    let status = response.status().as_u16();
    if status >= 300 {
        let text = scrub(&crate::ports::env::read_text(response).await.unwrap_or_default(), url);
        let text: String = text.chars().take(200).collect();
        return Err(NotifyError::Failed(format!("{channel} webhook answered {status}: {}", text.trim())));
    }
    Ok(())
}

/// Removes the webhook URL, and its path (the part that is the secret),
/// from text a receiver sent back.
fn scrub(text: &str, url: &str) -> String {
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
    // As sent, and as a JSON answer echoes it (Slack writes `/` as `\/`).
    let escaped = |t: &str| t.replace('/', "\\/");
    let mut out = text.replace(url, "<webhook>").replace(&escaped(url), "<webhook>");
    if path.len() > 1 {
        out = out.replace(&path, "<webhook path>").replace(&escaped(&path), "<webhook path>");
    }
    crate::domain::redact::secrets(&out)
}

/// The links people can open in a browser (others, such as `file://`, stay in the text).
pub fn web_links(n: &Notification) -> impl Iterator<Item = &(String, String)> {
    n.links.iter().filter(|(_, url)| url.starts_with("https://") || url.starts_with("http://"))
}

/// Sends with a few quick retries; a channel that keeps failing is reported, never fatal.
pub async fn send_with_retries(channel: &dyn Notifier, n: &Notification) -> Result<(), NotifyError> {
    let mut last = None;
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(crate::domain::backoff::NOTIFY.delay(attempt)).await;
        }
        match tokio::time::timeout(Duration::from_secs(10), channel.send(n)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(NotifyError::Failed("timed out after 10s".into())),
        }
    }
    Err(last.unwrap_or_else(|| NotifyError::Failed("not sent".into())))
}

/// Writes the message for a phase change (or an approval request).
pub fn compose(
    kind: NotifyKind,
    r: &Rollout,
    summary: &str,
    issue: Option<&IssueRef>,
    public_url: &str,
    now: DateTime<Utc>,
) -> Notification {
    let t = &r.spec.target;
    let (from, to) = (&t.stable.version, &t.canary.version);
    let base = public_url.trim_end_matches('/');
    let mut facts = vec![("Service".to_string(), t.name.to_string()), ("Change".to_string(), format!("{from} → {to}"))];
    let mut links = vec![
        ("Status".to_string(), format!("{base}/api/rollouts/{}", r.id)),
        ("Timeline".to_string(), format!("{base}/api/dashboard/{}", r.id)),
    ];
    let mut commands = Vec::new();
    let step = format!("step {}/{}", (r.stage + 1).min(r.plan.stages.len()), r.plan.stages.len());
    let (title, text) = match kind {
        NotifyKind::Started => {
            facts.push(("Plan".into(), r.plan.summary()));
            facts.push(("Started by".into(), r.created_by.to_string()));
            (
                format!("Rolling out {} {to}", t.name),
                format!("Replacing {from} in phases; Sluice watches every step and rolls back on its own if health breaks."),
            )
        }
        NotifyKind::ApprovalNeeded => {
            let who = match r.current_stage() {
                Some(Stage::Approval { gate }) if !gate.approvers.is_empty() => {
                    format!("{} of: {}", gate.min_approvers, gate.approvers.join(", "))
                }
                Some(Stage::Approval { gate }) => format!("{} person(s)", gate.min_approvers),
                _ => "a person".into(),
            };
            facts.push(("Canary weight".into(), format!("{}%", r.traffic.weight)));
            facts.push(("Needs".into(), who));
            if let Some(due) = r.due_at {
                facts.push(("Deadline".into(), due.format("%Y-%m-%d %H:%M UTC").to_string()));
            }
            commands.push(format!("sluice approve {} --url {base}", r.id));
            commands.push(format!("sluice reject {} --url {base} --reason \"...\"", r.id));
            (format!("{} {to} is waiting for approval", t.name), format!("At {step}. Check the numbers, then approve or reject."))
        }
        NotifyKind::RolledBack | NotifyKind::RollingBack | NotifyKind::Aborted => {
            let f = r.failure.as_ref();
            let cause = f.map(|f| f.evidence.headline()).unwrap_or_else(|| summary.to_string());
            facts.push(("Cause".into(), cause.clone()));
            if let Some(f) = f {
                facts.push(("Impact".into(), format!("up to {}% of traffic was on {to} (phase {} at failure)", f.weight, f.phase)));
                facts.push((
                    "What Sluice did".into(),
                    match f.reverted_at {
                        Some(at) => format!("all traffic back on {from} at {} (confirmed by the router)", at.format("%H:%M:%S UTC")),
                        None => format!("reverting to {from}; not yet confirmed, retrying"),
                    },
                ));
            }
            if let Some(i) = issue.or(r.backlog.issue()) {
                links.push(("Backlog issue".into(), i.url.clone()));
            }
            let title = match kind {
                NotifyKind::Aborted => format!("{} {to} stopped; {from} serves all traffic", t.name),
                NotifyKind::RollingBack => format!("{} {to} is rolling back to {from}", t.name),
                _ => format!("{} {to} rolled back; {from} serves all traffic", t.name),
            };
            (title, cause)
        }
        NotifyKind::Succeeded => {
            let took = (now - r.created_at).num_seconds().max(0) as u64;
            facts.push(("Took".into(), crate::domain::spec::duration_text(took * 1000)));
            (format!("{} {to} is live", t.name), format!("{to} replaced {from} for all traffic."))
        }
        NotifyKind::Paused => {
            facts.push(("Canary weight".into(), format!("{}%", r.traffic.weight)));
            facts.push(("Waiting for".into(), r.waiting_for(now)));
            (format!("{} {to} is paused", t.name), summary.to_string())
        }
        NotifyKind::PhaseChanged => (format!("{} {to}: {}", t.name, r.phase), summary.to_string()),
        NotifyKind::Overridden => (format!("{} {to}: deployment window overridden", t.name), summary.to_string()),
    };
    if let Some(live) = r.runs.iter().rev().find_map(|run| run.metrics.iter().rev().find_map(|m| m.recent.last())) {
        facts.push(("Last measurement".into(), live.note.clone()));
    }
    Notification {
        kind,
        rollout_id: r.id.to_string(),
        target: t.name.to_string(),
        stable_version: from.clone(),
        canary_version: to.clone(),
        phase: r.phase,
        stage: r.stage,
        title,
        text,
        facts,
        links,
        commands,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_webhook_url_a_channel_echoes_is_scrubbed_however_escaped() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXX";
        for answer in [
            r#"{"ok":false,"url":"https:\/\/hooks.slack.com\/services\/T000\/B000\/XXXX"}"#,
            "posting to /services/T000/B000/XXXX failed",
            "see https://hooks.slack.com/services/T000/B000/XXXX",
        ] {
            let out = super::scrub(answer, url);
            assert!(!out.contains("T000") && !out.contains("XXXX"), "{out}");
        }
    }
}
