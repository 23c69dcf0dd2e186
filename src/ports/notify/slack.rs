//! Slack: a Block Kit message posted to an incoming webhook.
//! Settings: `urlSetting` (the app setting holding the webhook URL), and
//! `interactive: true` when the webhook belongs to a Slack app whose
//! interactivity points at Sluice's `/api/slack`: approval requests then
//! carry Approve and Reject buttons, and every message of a rollout under
//! way a Roll back button (`functions::slack` answers the clicks).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{post_json, web_links, webhook_url, Notification, Notifier, NotifyError};
use crate::domain::bounded::clip;
use crate::domain::rollout::NotifyKind;
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// The buttons' `action_id`s (`functions::slack` answers their clicks).
pub const APPROVE: &str = "sluice.approve";
/// Reject at the gate.
pub const REJECT: &str = "sluice.reject";
/// Put all traffic back on stable.
pub const ROLL_BACK: &str = "sluice.rollback";

/// What a button carries in its `value`: the rollout and the step it was sent at.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ButtonValue {
    /// The rollout.
    pub rollout: crate::domain::ids::RolloutId,
    /// The step (0-based) the message was sent at; a click after the rollout moved on is stale.
    pub stage: usize,
}

/// Slack allows this many fields in one section.
const FIELDS_PER_SECTION: usize = 10;

/// A Slack channel.
pub struct Slack {
    http: reqwest::Client,
    url: String,
    interactive: bool,
}

/// Builds the Slack channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    let interactive = match settings.get("interactive") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(AdapterError::Config { provider: "slack".into(), message: "'interactive' must be true or false".into() }),
    };
    Ok(Arc::new(Slack { http: env.http.clone(), url: webhook_url("slack", settings, env)?, interactive }))
}

/// Escapes text for Slack's mrkdwn (only these three are control characters).
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The buttons people act with: Approve and Reject at a gate, Roll back while under way.
fn action_buttons(n: &Notification) -> Vec<Value> {
    let Ok(rollout) = crate::domain::ids::RolloutId::parse(&n.rollout_id) else { return Vec::new() };
    let value = serde_json::to_string(&ButtonValue { rollout, stage: n.stage }).unwrap_or_default();
    let button = |id: &str, text: &str, style: Option<&str>| {
        let mut b = json!({"type": "button", "action_id": id, "text": {"type": "plain_text", "text": text}, "value": value});
        if let Some(s) = style {
            b["style"] = json!(s);
        }
        b
    };
    let mut out = Vec::new();
    if n.kind == NotifyKind::ApprovalNeeded {
        out.push(button(APPROVE, "Approve", Some("primary")));
        out.push(button(REJECT, "Reject", None));
    }
    if !n.phase.is_terminal() && n.phase != crate::domain::rollout::Phase::RollingBack {
        let mut roll_back = button(ROLL_BACK, "Roll back", Some("danger"));
        roll_back["confirm"] = json!({"title": {"type": "plain_text", "text": "Roll back?"},
            "text": {"type": "plain_text", "text": "All traffic goes back to the stable version now."},
            "confirm": {"type": "plain_text", "text": "Roll back"}, "deny": {"type": "plain_text", "text": "Cancel"}});
        out.push(roll_back);
    }
    out
}

/// The message: header, text, facts as fields, commands, action and link buttons, context.
pub fn message(n: &Notification) -> Value {
    message_with(n, false)
}

/// The message, with Approve, Reject and Roll back buttons when `interactive`.
pub fn message_with(n: &Notification, interactive: bool) -> Value {
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
    let actions = if interactive { action_buttons(n) } else { Vec::new() };
    let buttons: Vec<Value> = actions
        .into_iter()
        .chain(
            web_links(n).map(|(name, url)| json!({"type": "button", "text": {"type": "plain_text", "text": clip(name, 75)}, "url": url})),
        )
        .take(25)
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
        let body = serde_json::to_vec(&message_with(n, self.interactive)).map_err(|e| NotifyError::Failed(e.to_string()))?;
        post_json(&self.http, "Slack", &self.url, body, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::Phase;

    fn note(kind: NotifyKind, phase: Phase) -> Notification {
        Notification {
            kind,
            rollout_id: "orders-1".into(),
            target: "orders".into(),
            stable_version: "v1".into(),
            canary_version: "v2".into(),
            phase,
            stage: 3,
            title: "t".into(),
            text: "t".into(),
            facts: Vec::new(),
            links: vec![("Timeline".into(), "https://sluice.example/api/dashboard/orders-1".into())],
            commands: Vec::new(),
            at: chrono::Utc::now(),
        }
    }

    fn actions(m: &Value) -> Vec<String> {
        let buttons = m["blocks"].as_array().into_iter().flatten().filter(|b| b["type"] == "actions");
        buttons
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["action_id"].as_str().map(String::from))
            .collect()
    }

    #[test]
    fn buttons_that_act_come_only_with_interactive_and_only_where_they_can_act() {
        let asked = note(NotifyKind::ApprovalNeeded, Phase::AwaitingApproval);
        assert_eq!(actions(&message_with(&asked, true)), [APPROVE, REJECT, ROLL_BACK]);
        assert!(actions(&message(&asked)).is_empty(), "a webhook of no interactive app gets links only");
        assert_eq!(actions(&message_with(&note(NotifyKind::Paused, Phase::Paused), true)), [ROLL_BACK]);
        for done in [Phase::RollingBack, Phase::RolledBack, Phase::Succeeded] {
            assert!(actions(&message_with(&note(NotifyKind::PhaseChanged, done), true)).is_empty(), "{done}");
        }
        let m = message_with(&asked, true);
        let value = m.to_string();
        assert!(value.contains(r#"{\"rollout\":\"orders-1\",\"stage\":3}"#), "{value}");
    }
}
