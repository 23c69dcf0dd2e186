//! Microsoft Teams: an Adaptive Card posted to a Teams workflow ("Post to a
//! channel when a webhook request is received") or an incoming webhook.
//! Settings: `urlSetting` (the app setting holding the webhook URL).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{post_json, web_links, webhook_url, Notification, Notifier, NotifyError};
use crate::domain::rollout::NotifyKind;
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// A Teams channel.
pub struct Teams {
    http: reqwest::Client,
    url: String,
}

/// Builds the Teams channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    Ok(Arc::new(Teams { http: env.http.clone(), url: webhook_url("teams", settings, env)? }))
}

/// Text for a TextBlock or a fact, which Teams renders as its Markdown
/// subset: `[text](url)` would show words of the sender's choosing over a
/// link of theirs (`[Approve here](https://attacker.example)`), so the
/// link syntax is broken with a zero-width space; Sluice's own links are
/// actions, never text.
fn plain(s: &str) -> String {
    s.replace("](", "]\u{200B}(")
}

/// The message: one Adaptive Card with the facts, the commands and the links.
pub fn card(n: &Notification) -> Value {
    let colour = match n.kind {
        NotifyKind::RollingBack | NotifyKind::RolledBack | NotifyKind::Aborted => "Attention",
        NotifyKind::Succeeded => "Good",
        NotifyKind::ApprovalNeeded | NotifyKind::Paused | NotifyKind::Overridden => "Warning",
        NotifyKind::Started | NotifyKind::PhaseChanged => "Default",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "text": plain(&n.title), "size": "Large", "weight": "Bolder", "wrap": true, "color": colour}),
        json!({"type": "TextBlock", "text": plain(&n.text), "wrap": true}),
        json!({"type": "FactSet", "facts": n.facts.iter().map(|(k, v)| json!({"title": plain(k), "value": plain(v)})).collect::<Vec<_>>()}),
    ];
    if !n.commands.is_empty() {
        body.push(json!({"type": "TextBlock", "text": "Decide with", "weight": "Bolder", "spacing": "Medium"}));
        for c in &n.commands {
            body.push(json!({"type": "TextBlock", "text": c, "fontType": "Monospace", "wrap": true}));
        }
    }
    for (name, url) in n.links.iter().filter(|l| !web_links(n).any(|w| w == *l)) {
        body.push(json!({"type": "TextBlock", "text": plain(&format!("{name}: {url}")), "wrap": true, "isSubtle": true}));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": format!("Rollout {} · {} · {}", n.rollout_id, n.phase, n.at.format("%Y-%m-%d %H:%M:%S UTC")),
        "isSubtle": true, "size": "Small", "wrap": true
    }));
    let actions: Vec<Value> = web_links(n).map(|(name, url)| json!({"type": "Action.OpenUrl", "title": name, "url": url})).collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
                "actions": actions
            }
        }]
    })
}

#[async_trait]
impl Notifier for Teams {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&card(n)).map_err(|e| NotifyError::Failed(e.to_string()))?;
        post_json(&self.http, "Teams", &self.url, body, &[]).await
    }
}
