//! `steps` (Service Bus queue `rollout-steps`): one step message → load,
//! decide, carry out, save, through the engine; the message is settled once
//! the step is saved, and its slower effects go on in the engine's
//! background pool, so an alert's rollback never waits for a free consumer.
//! Safe under redelivery: the core ignores stale and duplicate events. A
//! message that can never succeed (malformed, internal feedback, unknown
//! rollout, or one that claims an authority the queue cannot give) is
//! logged and acknowledged; a transient failure is returned so the host
//! abandons and redelivers it.
//!
//! Whoever may send to the queue (a pipeline holds Data Sender) can write
//! any message, so a message carries no authority of its own:
//! - a start is the queue's, whoever it names (`by` is not an identity);
//! - a person's action, or a pipeline's failure report, comes through the
//!   API, which knows who asks — on the queue it is refused by name;
//! - an alert is believed only if the alert webhook recorded delivering
//!   that alert, in that condition, to that rollout;
//! - a wake-up, a rollout's own start and a release's nudge only make
//!   Sluice look again at what is due.

use super::{App, HandlerError};
use crate::domain::ids::Actor;
use crate::domain::rollout::Input;
use crate::shell::messages::StepMessage;

/// Who a start from the queue is recorded as.
pub const QUEUE_ACTOR: &str = "queue";

/// Handles one message body.
pub async fn handle(app: &App, body: &str) -> Result<(), HandlerError> {
    let message = StepMessage::parse(body).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let message = believable(app, message).await?;
    let rollout = message.rollout().map(ToString::to_string).unwrap_or_else(|| "(new)".into());
    match app.engine.handle_delivery(message).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(HandlerError::Transient(format!("rollout {rollout}: {e}"))),
        Err(e) => Err(HandlerError::Permanent(format!("rollout {rollout}: {e}"))),
    }
}

/// The message as far as the queue can vouch for it, or why not.
async fn believable(app: &App, message: StepMessage) -> Result<StepMessage, HandlerError> {
    let refuse =
        |rollout: &str, kind: &str, why: &str| Err(HandlerError::Permanent(format!("rollout {rollout}: '{kind}' from the queue: {why}")));
    match message {
        StepMessage::Start { spec, id, .. } => {
            let by = Actor::parse(QUEUE_ACTOR).map_err(|e| HandlerError::Permanent(e.to_string()))?;
            Ok(StepMessage::Start { spec, by: by.into(), id })
        }
        StepMessage::Event { rollout, event } => {
            let (alert_id, condition) = match &event {
                Input::Start => return Ok(StepMessage::Event { rollout, event }),
                Input::AlertFired { alert } => (alert.id.clone(), "Fired"),
                Input::AlertResolved { alert_id } => (alert_id.clone(), "Resolved"),
                Input::ReleaseFailed { .. } => {
                    return refuse(&rollout, "releaseFailed", "a pipeline reports a failure through the API (sluice report-failure)")
                }
                person => {
                    let kind = person.kind();
                    return refuse(&rollout, kind, "a person's action carries no verified identity here; use the API");
                }
            };
            let delivered = app.engine.store.alert_delivered(&alert_id, condition, &rollout).await;
            match delivered {
                Ok(true) => Ok(StepMessage::Event { rollout, event }),
                Ok(false) => {
                    let shown = crate::domain::ids::shown(&alert_id);
                    refuse(&rollout, event.kind(), &format!("the alert webhook delivered no alert '{shown}' ({condition}) to this rollout"))
                }
                Err(e) => Err(HandlerError::Transient(format!("rollout {rollout}: cannot check the alert's delivery: {e}"))),
            }
        }
        wake_or_nudge => Ok(wake_or_nudge),
    }
}
