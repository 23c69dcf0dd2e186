//! `metrics` (HTTP, `GET metrics`, behind Sluice's key): Sluice's own
//! numbers in the Prometheus text format — rollouts by outcome, rollbacks
//! by cause, time to revert, time to decision per step, requests served by
//! failed canaries, backlog and notification failures — drawn from the sums
//! the store keeps of the rollouts it holds, so every instance answers the
//! same and a scrape's cost follows the rollouts under way, not those kept.

use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};
use crate::domain::health;

/// The exposition format's content type (text format 0.0.4).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the exposition.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method != "GET" {
        return Err(ApiError::new(405, "method_not_allowed", "metrics are read with GET"));
    }
    let body = health::render(&app.engine.store.tallies().await?);
    Ok(HttpResponse { status: 200, content_type: CONTENT_TYPE.into(), headers: Vec::new(), body: body.into_bytes() })
}
