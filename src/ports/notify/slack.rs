//! Slack: a Block Kit message posted to an incoming webhook.
//! Settings: `urlSetting` (the app setting holding the webhook URL).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{post_json, web_links, webhook_url, Notification, Notifier, NotifyError};
use crate::domain::bounded::clip;
use crate::domain::rollout::NotifyKind;
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// Slack allows this many fields in one section.
const FIELDS_PER_SECTION: usize = 10;

/// A Slack channel.
pub struct Slack {
    http: reqwest::Client,
    url: String,
}

/// Builds the Slack channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    Ok(Arc::new(Slack { http: env.http.clone(), url: webhook_url("slack", settings, env)? }))
}

/// Escapes text for Slack's mrkdwn (only these three are control characters).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The message: header, text, facts as fields, commands, link buttons, context.
pub fn message(n: &Notification) -> Value {
    let icon = match n.kind {
        NotifyKind::RollingBack | NotifyKind::RolledBack | NotifyKind::Aborted => ":rotating_light:",
        NotifyKind::Succeeded => ":white_check_mark:",
        NotifyKind::ApprovalNeeded => ":raised_hand:",
        NotifyKind::Paused => ":double_vertical_bar:",
        NotifyKind::Overridden => ":warning:",
        NotifyKind::Started | NotifyKind::PhaseChanged => ":arrow_forward:",
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{icon} {}", n.title), 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&esc(&n.text), 3000)}}),
    ];
    for chunk in n.facts.chunks(FIELDS_PER_SECTION) {
        let fields: Vec<Value> =
            chunk.iter().map(|(k, v)| json!({"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", esc(k), esc(v)), 2000)})).collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if !n.commands.is_empty() {
        let text = format!("*Decide with*\n```{}```", esc(&n.commands.join("\n")));
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&text, 3000)}}));
    }
    let buttons: Vec<Value> = web_links(n)
        .take(25)
        .map(|(name, url)| json!({"type": "button", "text": {"type": "plain_text", "text": clip(name, 75)}, "url": url}))
        .collect();
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    let mut context = format!("Rollout `{}` · {} · {}", esc(&n.rollout_id), n.phase, n.at.format("%Y-%m-%d %H:%M:%S UTC"));
    for (name, url) in n.links.iter().filter(|l| !web_links(n).any(|w| w == *l)) {
        context.push_str(&format!(" · {}: {}", esc(name), esc(url)));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&context, 3000)}]}));
    // The top-level text (the notification's preview) is mrkdwn too: `<!channel>` would page everyone.
    json!({"text": esc(&format!("{} — {}", n.title, n.text)), "blocks": blocks})
}

#[async_trait]
impl Notifier for Slack {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&message(n)).map_err(|e| NotifyError::Failed(e.to_string()))?;
        post_json(&self.http, "Slack", &self.url, body, &[]).await
    }
}
