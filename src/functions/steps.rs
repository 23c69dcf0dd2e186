//! `steps` (Service Bus queue `rollout-steps`): one step message → load,
//! decide, carry out, save, through the engine; the message is settled once
//! the step is saved, and its slower effects go on in the engine's
//! background pool, so an alert's rollback never waits for a free consumer. Safe under redelivery: the
//! core ignores stale and duplicate events. A message that can never succeed
//! (malformed, internal feedback, a person's action without a verified
//! identity, unknown rollout) is logged and acknowledged; a transient
//! failure is returned so the host abandons and redelivers it.

use super::{App, HandlerError};
use crate::shell::messages::StepMessage;

/// Handles one message body.
pub async fn handle(app: &App, body: &str) -> Result<(), HandlerError> {
    let message = StepMessage::parse(body).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    if let StepMessage::Event { event, rollout } = &message {
        if app.require_principal && event.is_persons() {
            return Err(HandlerError::Permanent(format!(
                "rollout {rollout}: a person's action on the queue carries no verified identity; with SLUICE_REQUIRE_PRINCIPAL, use the API"
            )));
        }
    }
    let rollout = message.rollout().map(ToString::to_string).unwrap_or_else(|| "(new)".into());
    match app.engine.handle_delivery(message).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(HandlerError::Transient(format!("rollout {rollout}: {e}"))),
        Err(e) => Err(HandlerError::Permanent(format!("rollout {rollout}: {e}"))),
    }
}
