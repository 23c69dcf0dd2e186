//! `steps` (Service Bus queue `rollout-steps`): one step message → load,
//! decide, carry out, save, through the engine. Safe under redelivery: the
//! core ignores stale and duplicate events. A message that can never succeed
//! (malformed, unknown rollout) is logged and acknowledged; a transient
//! failure is returned so the host abandons and redelivers it.

use super::{App, HandlerError};
use crate::shell::messages::StepMessage;

/// Handles one message body.
pub async fn handle(app: &App, body: &str) -> Result<(), HandlerError> {
    let message: StepMessage = serde_json::from_str(body).map_err(|e| HandlerError::Permanent(format!("not a step message: {e}")))?;
    let rollout = message.rollout().unwrap_or("(new)").to_string();
    match app.engine.handle(message).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(HandlerError::Transient(format!("rollout {rollout}: {e}"))),
        Err(e) => Err(HandlerError::Permanent(format!("rollout {rollout}: {e}"))),
    }
}
