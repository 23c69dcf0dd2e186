//! `tick` (timer): the safety net. Every rollout that may have something due
//! gets a `Tick`: a wait whose scheduled message was lost fires, overdue
//! measurements are taken, failed router or backlog calls are retried;
//! every release whose wake-up has come looks at its rollouts; and a
//! pipeline task still waiting on a finished rollout is answered; and
//! finished rollouts and releases past their retention are deleted.

use serde_json::{json, Value};

use super::{App, HandlerError};

/// Runs one sweep.
pub async fn handle(app: &App, past_due: bool) -> Result<Value, HandlerError> {
    if past_due {
        tracing::info!("tick is past due; sweeping now");
    }
    let failed = |e: crate::shell::engine::EngineError| {
        if e.is_transient() {
            HandlerError::Transient(e.to_string())
        } else {
            HandlerError::Permanent(e.to_string())
        }
    };
    let mut report = app.engine.sweep().await.map_err(failed)?;
    report.releases = app.engine.sweep_releases().await.map_err(failed)?;
    report.pipeline_waits = app.engine.sweep_pipeline_waits().await.map_err(failed)?;
    report.pruned = app.engine.prune_finished().await;
    Ok(json!(report))
}
