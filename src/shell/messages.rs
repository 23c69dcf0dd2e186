//! The step messages on the `rollout-steps` queue: the wire format between
//! whoever enqueues work (the API, the alert webhook, the engine scheduling
//! its own wake-up, a pipeline posting directly) and the `steps` handler.
//!
//! One casing everywhere (camelCase), fixed by the JSON Schema committed as
//! `schema/step-message.schema.json` and generated from these types. Only
//! inputs travel here ([`Input`]: start, people's actions, alerts) and
//! wake-ups; the engine's own feedback is refused by name. Message ids are
//! derived from content, so duplicates collapse, and never exceed the
//! 128 characters Service Bus allows.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::ids::RolloutId;
use crate::domain::rollout::Input;
use crate::ports::queue::OutMessage;

/// Longest message id Service Bus accepts.
pub const MAX_MESSAGE_ID: usize = 128;

/// Event names that are the engine's own feedback or timers: never accepted off the wire.
const INTERNAL_EVENTS: &[&str] =
    &["stepDue", "measured", "commandFailed", "trafficConfirmed", "promoted", "backlogOpened", "backlogCommented", "tick", "wake"];

/// One unit of rollout work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
#[schemars(title = "Sluice step message")]
pub enum StepMessage {
    /// Deliver an input to a rollout.
    #[serde(rename_all = "camelCase")]
    Event {
        /// Rollout id.
        rollout: RolloutId,
        /// The input.
        event: Input,
    },
    /// The rollout's wake-up: fire whatever is due by `at` (waits, measurements).
    #[serde(rename_all = "camelCase")]
    Wake {
        /// Rollout id.
        rollout: RolloutId,
        /// When it was scheduled for.
        at: DateTime<Utc>,
    },
    /// Look at a release: one of its rollouts finished (`after`), or its
    /// wake-up came (`at`: a bake or a wave's wait ends). The timer looks too.
    #[serde(rename_all = "camelCase")]
    Release {
        /// Release id.
        release: RolloutId,
        /// The rollout that finished.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<RolloutId>,
        /// When it was scheduled for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// Start a rollout from a spec (how a pipeline can post straight to the queue).
    #[serde(rename_all = "camelCase")]
    Start {
        /// The spec document.
        spec: Value,
        /// Who starts it (a name: a message proves no identity).
        by: crate::domain::ids::ActorName,
        /// A chosen rollout id, making the message idempotent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RolloutId>,
    },
}

/// Why a message body is not a step message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or not this format; names the field.
    #[error("not a step message: {field}: {message}")]
    Invalid {
        /// Where (`event.by`, `rollout`; `body` for the whole).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The engine's own feedback, which only the engine may produce.
    #[error("event '{0}' is Sluice's own feedback and is never accepted from the queue")]
    Internal(String),
}

impl StepMessage {
    /// Parses a message body: every field typed, the field named on error,
    /// internal feedback refused by name.
    pub fn parse(body: &str) -> Result<StepMessage, MessageError> {
        let doc: Value = serde_json::from_str(body)
            .map_err(|e| MessageError::Invalid { field: "body".into(), message: format!("not valid JSON: {e}") })?;
        if let Some(kind) = doc.pointer("/event/type").and_then(Value::as_str) {
            if INTERNAL_EVENTS.contains(&kind) {
                return Err(MessageError::Internal(crate::domain::ids::shown(kind)));
            }
        }
        // The schema check names the field at fault (serde cannot, inside tagged enums).
        let problems = crate::domain::spec::against_schema(schema(), &doc, &Default::default());
        if let Some(first) = problems.first() {
            let field = if first.path.is_empty() { "body".to_string() } else { first.path.clone() };
            let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(MessageError::Invalid { field, message });
        }
        serde_json::from_value(doc).map_err(|e| MessageError::Invalid { field: "body".into(), message: e.to_string() })
    }

    /// The message id: equal work gets an equal id, so the queue drops repeats.
    pub fn message_id(&self) -> String {
        let id = match self {
            StepMessage::Event { rollout, event } => match event {
                Input::Start => format!("{rollout}:start"),
                Input::AlertFired { alert } => format!("{rollout}:alert:{}:fired", alert.id),
                Input::AlertResolved { alert_id } => format!("{rollout}:alert:{alert_id}:resolved"),
                Input::ReleaseFailed { failure } => format!("{rollout}:{}", failure.key()),
                Input::Approved { request: Some(r), .. }
                | Input::Rejected { request: Some(r), .. }
                | Input::AbortRequested { request: Some(r), .. }
                | Input::PromoteRequested { request: Some(r), .. }
                | Input::RetryRequested { request: Some(r), .. } => format!("{rollout}:request:{r}"),
                _ => format!("{rollout}:input:{}", uuid::Uuid::new_v4()),
            },
            StepMessage::Wake { rollout, at } => format!("{rollout}:wake:{}", at.timestamp_millis()),
            StepMessage::Release { release, after: Some(after), .. } => format!("{release}:after:{after}"),
            StepMessage::Release { release, after: None, at } => {
                format!("{release}:wake:{}", at.map(|t| t.timestamp_millis()).unwrap_or_default())
            }
            StepMessage::Start { id: Some(id), .. } => format!("start:{id}"),
            StepMessage::Start { id: None, .. } => format!("start:{}", uuid::Uuid::new_v4()),
        };
        bounded(id, self.rollout().map(RolloutId::as_str).unwrap_or("start"))
    }

    /// The rollout it concerns, if known.
    pub fn rollout(&self) -> Option<&RolloutId> {
        match self {
            StepMessage::Event { rollout, .. } | StepMessage::Wake { rollout, .. } => Some(rollout),
            StepMessage::Release { release, .. } => Some(release),
            StepMessage::Start { id, .. } => id.as_ref(),
        }
    }

    /// As a queue message, visible now or at `at`.
    pub fn to_out(&self, visible_at: Option<DateTime<Utc>>) -> OutMessage {
        let slot = match self {
            StepMessage::Wake { rollout, .. } => Some(format!("wake:{rollout}")),
            _ => None,
        };
        OutMessage { id: self.message_id(), body: serde_json::to_string(self).unwrap_or_default(), visible_at, slot }
    }
}

/// Keeps a message id within Service Bus's limit: a longer one (an Azure
/// alert id is a whole resource path) becomes the rollout and a digest of
/// the full id, so equal work still gets an equal id.
pub fn bounded(id: String, rollout: &str) -> String {
    if id.len() <= MAX_MESSAGE_ID {
        return id;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("{rollout}:h:{hex}")
}

/// The JSON Schema of the wire format (committed as `schema/step-message.schema.json`).
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(StepMessage)).unwrap_or(Value::Null)
}

fn schema() -> &'static Value {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(json_schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(text: &str) -> RolloutId {
        RolloutId::parse(text).expect("id")
    }

    #[test]
    fn one_casing_alert_resolved_takes_alert_id() {
        let m = StepMessage::parse(r#"{"kind":"event","rollout":"r-1","event":{"type":"alertResolved","alertId":"a-9"}}"#).expect("parses");
        assert_eq!(m, StepMessage::Event { rollout: id("r-1"), event: Input::AlertResolved { alert_id: "a-9".into() } });
        let e = StepMessage::parse(r#"{"kind":"event","rollout":"r-1","event":{"type":"alertResolved","alert_id":"a-9"}}"#)
            .expect_err("snake case is not the wire format");
        assert!(
            matches!(&e, MessageError::Invalid { field, message } if field.starts_with("event.") && message.contains("alert_id")),
            "{e}"
        );
    }

    #[test]
    fn internal_feedback_is_refused_by_name() {
        for kind in INTERNAL_EVENTS {
            let body = json!({"kind": "event", "rollout": "r-1", "event": {"type": kind, "weight": 0}}).to_string();
            assert_eq!(StepMessage::parse(&body), Err(MessageError::Internal(kind.to_string())));
        }
    }

    #[test]
    fn ids_and_actors_are_parsed_at_the_edge() {
        let bad_id = json!({"kind": "start", "spec": {}, "by": "ci", "id": "../../escape"}).to_string();
        let e = StepMessage::parse(&bad_id).expect_err("refused");
        assert!(matches!(&e, MessageError::Invalid { field, message } if field == "id" && message.contains("letters, digits")), "{e}");
        let long = json!({"kind": "wake", "rollout": "x".repeat(5000), "at": "2026-01-01T00:00:00Z"}).to_string();
        assert!(matches!(StepMessage::parse(&long), Err(MessageError::Invalid { field, .. }) if field == "rollout"));
        let no_by = json!({"kind": "event", "rollout": "r", "event": {"type": "approved", "by": ""}}).to_string();
        assert!(matches!(StepMessage::parse(&no_by), Err(MessageError::Invalid { field, .. }) if field == "event.by"));
    }

    #[test]
    fn message_ids_stay_within_the_service_bus_limit() {
        let alert = crate::domain::rollout::AlertInfo {
            id: format!("/subscriptions/{}/providers/Microsoft.AlertsManagement/alerts/{}", "0".repeat(36), "f".repeat(200)),
            rule: "r".into(),
            severity: String::new(),
            summary: String::new(),
            source: String::new(),
            fired_at: None,
            link: None,
        };
        let m = StepMessage::Event { rollout: id(&"r".repeat(63)), event: Input::AlertFired { alert: alert.clone() } };
        let first = m.message_id();
        assert!(first.len() <= MAX_MESSAGE_ID, "{first}");
        assert_eq!(first, m.message_id(), "equal work, equal id");
        let mut other = alert;
        other.id.push('x');
        let m2 = StepMessage::Event { rollout: id(&"r".repeat(63)), event: Input::AlertFired { alert: other } };
        assert_ne!(first, m2.message_id());
    }

    #[test]
    fn the_committed_schema_is_the_wire_format() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/step-message.schema.json");
        let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file")).expect("json");
        assert_eq!(committed, json_schema(), "regenerate with: cargo run -- schema --step-message > schema/step-message.schema.json");
        // One casing: no property name in the wire format has an underscore.
        fn names(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::Object(props)) = m.get("properties") {
                        out.extend(props.keys().cloned());
                    }
                    m.values().for_each(|x| names(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| names(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        names(&committed, &mut all);
        assert!(all.contains(&"alertId".to_string()));
        assert!(all.iter().all(|n| !n.contains('_')), "{all:?}");
    }
}
