//! The step messages on the `rollout-steps` queue: the wire format between
//! whoever enqueues work (the API, the alert webhook, the engine scheduling
//! its own next step, a pipeline posting directly) and the `steps` handler.
//! Message ids are derived from content so duplicates collapse.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::rollout::Event;
use crate::ports::queue::OutMessage;

/// One unit of rollout work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum StepMessage {
    /// Deliver an event to a rollout.
    Event {
        /// Rollout id.
        rollout: String,
        /// The event.
        event: Event,
    },
    /// The rollout's wake-up: fire whatever is due by `at` (waits, measurements).
    Wake {
        /// Rollout id.
        rollout: String,
        /// When it was scheduled for.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// Start a rollout from a spec (how a pipeline can post straight to the queue).
    Start {
        /// The spec document.
        spec: Value,
        /// Who starts it.
        by: String,
        /// A chosen rollout id, making the message idempotent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

impl StepMessage {
    /// The message id: equal work gets an equal id, so the queue drops repeats.
    pub fn message_id(&self) -> String {
        match self {
            StepMessage::Event { rollout, event } => match event {
                Event::Start => format!("{rollout}:start"),
                Event::StepDue { seq } => format!("{rollout}:due:{seq}"),
                Event::AlertFired { alert } => format!("{rollout}:alert:{}:fired", alert.id),
                Event::AlertResolved { alert_id } => format!("{rollout}:alert:{alert_id}:resolved"),
                other => match other.request_id() {
                    Some(r) => format!("{rollout}:request:{r}"),
                    None => format!("{rollout}:{}:{}", other.kind(), uuid::Uuid::new_v4()),
                },
            },
            StepMessage::Wake { rollout, at } => format!("{rollout}:wake:{}", at.timestamp_millis()),
            StepMessage::Start { id: Some(id), .. } => format!("start:{id}"),
            StepMessage::Start { id: None, .. } => format!("start:{}", uuid::Uuid::new_v4()),
        }
    }

    /// The rollout it concerns, if known.
    pub fn rollout(&self) -> Option<&str> {
        match self {
            StepMessage::Event { rollout, .. } | StepMessage::Wake { rollout, .. } => Some(rollout),
            StepMessage::Start { id, .. } => id.as_deref(),
        }
    }

    /// As a queue message, visible now or at `at`.
    pub fn to_out(&self, visible_at: Option<chrono::DateTime<chrono::Utc>>) -> OutMessage {
        OutMessage { id: self.message_id(), body: serde_json::to_string(self).unwrap_or_default(), visible_at }
    }
}
