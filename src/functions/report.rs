//! `report` (HTTP, `GET report?since=30d&until=…&service=…`): release
//! health over a period — deployment frequency, change failure rate, mean
//! time to restore, failures caught at which weight vs escaped, requests
//! served by failed canaries, approval waits — per service and overall.
//! `sluice report` and the dashboard's report view read it.

use chrono::{DateTime, Utc};

use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};
use crate::domain::health;
use crate::domain::ids::shown;
use crate::domain::spec;

/// The period when none is asked for.
const DEFAULT_SINCE_MS: u64 = 30 * 86_400_000;

/// What the query asks for.
struct Query {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    service: Option<String>,
}

fn query(req: &HttpRequest, now: DateTime<Utc>) -> Result<Query, ApiError> {
    let bad = |key: &str, message: String| ApiError::new(400, "invalid_query", format!("{key}: {message}")).field(key);
    let mut q = Query { from: now - chrono::TimeDelta::milliseconds(ms_i64(DEFAULT_SINCE_MS)), to: now, service: None };
    for (key, value) in &req.query {
        match key.as_str() {
            "since" => q.from = now - chrono::TimeDelta::milliseconds(ms_i64(spec::parse_duration_ms(value).map_err(|e| bad("since", e))?)),
            "until" => {
                q.to = DateTime::parse_from_rfc3339(value)
                    .map_err(|_| bad("until", format!("'{}' is not an RFC 3339 time like 2026-12-01T00:00:00Z", shown(value))))?
                    .with_timezone(&Utc)
            }
            "service" => q.service = Some(spec::check_name(value).map(|()| value.clone()).map_err(|e| bad("service", e))?),
            "code" => {} // Sluice's key
            other => return Err(bad(&shown(other), "unknown query parameter (since, until, service)".into())),
        }
    }
    if q.from > q.to {
        return Err(bad("since", "the period ends before it begins".into()));
    }
    Ok(q)
}

/// Milliseconds as chrono's (durations are at most ten years, well inside `i64`).
fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX / 2)
}

/// Answers the report as JSON.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    super::access::caller(app, &req, crate::domain::access::Action::Read).await?;
    if req.method != "GET" {
        return Err(ApiError::new(405, "method_not_allowed", "the report is read with GET"));
    }
    let q = query(&req, app.engine.clock.now())?;
    // Only what the period needs: rollouts under way, and those that finished in it.
    let facts = app.engine.store.facts_for_period(q.from, q.to).await?;
    let report = health::report(&facts, q.from, q.to, q.service.as_deref());
    let body = serde_json::to_value(&report).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    Ok(HttpResponse::json(200, &body))
}
