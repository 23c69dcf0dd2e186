//! `alerts` (HTTP, `POST alerts`): the webhook Azure Monitor action groups
//! and Alertmanager call. It checks the shared token (constant time), maps
//! each alert to the active rollout of its target (rules in
//! [`crate::ports::alerts`]), enqueues one message per match and answers 202 at
//! once — action groups give up on slow endpoints. Every alert is recorded,
//! matched or not.
//!
//! The token is read from `?token=`, the `x-sluice-token` header, or
//! `Authorization: Bearer <token>`.

use serde_json::json;
use subtle::ConstantTimeEq;

use super::{parse_json_body, App, HttpRequest, HttpResponse, MAX_ALERT_BODY};
use crate::domain::rollout::Event;
use crate::ports::alerts::{self, IncomingAlert};
use crate::ports::store::{AlertRecord, ListFilter};
use crate::shell::messages::StepMessage;

fn presented_token(req: &HttpRequest) -> Option<&str> {
    req.query
        .get("token")
        .map(String::as_str)
        .or_else(|| req.header("x-sluice-token"))
        .or_else(|| req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")))
}

/// Compares tokens without leaking where they differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let presented = presented.unwrap_or("");
    // Lengths are compared in constant time too, by comparing fixed-size digests.
    let a = expected.as_bytes();
    let b = presented.as_bytes();
    let same_len = (a.len() as u64).ct_eq(&(b.len() as u64));
    let mut padded = vec![0u8; a.len()];
    let n = b.len().min(a.len());
    padded[..n].copy_from_slice(&b[..n]);
    bool::from(same_len & a.ct_eq(&padded))
}

/// Handles one webhook call.
pub async fn handle(app: &App, req: HttpRequest) -> HttpResponse {
    if req.method != "POST" {
        return HttpResponse::error(405, "method_not_allowed", "alerts are POSTed", None);
    }
    if let Some(expected) = &app.alert_token {
        if !token_matches(expected, presented_token(&req)) {
            return HttpResponse::error(401, "unauthorized", "missing or wrong alert token", Some("token"));
        }
    }
    let body = match parse_json_body(&req, MAX_ALERT_BODY) {
        Ok(serde_json::Value::Null) => return HttpResponse::error(400, "invalid_body", "the body must be an alert payload (JSON)", None),
        Ok(v) => v,
        Err(r) => return r,
    };
    let incoming = match alerts::parse(&body) {
        Ok(a) => a,
        Err(message) => return HttpResponse::error(400, "unrecognised_alert", message, None),
    };
    let active = match app.engine.store.list(&ListFilter { active_only: true, ..ListFilter::default() }).await {
        Ok(a) => a,
        Err(e) => return HttpResponse::error(503, "store_unavailable", e.to_string(), None),
    };
    let now = app.engine.clock.now();
    let mut answers = Vec::new();
    for alert in &incoming {
        let matched: Vec<(String, String)> =
            active.iter().filter_map(|r| alerts::match_reason(alert, r).map(|why| (r.id.clone(), why))).collect();
        for (rollout, why) in &matched {
            let message = StepMessage::Event { rollout: rollout.clone(), event: event_for(alert) };
            if let Err(e) = app.engine.queue.send(message.to_out(None)).await {
                return HttpResponse::error(503, "queue_unavailable", e.to_string(), None);
            }
            tracing::info!(rollout = %rollout, alert = %alert.id, rule = %alert.rule, firing = alert.firing, reason = %why, "alert delivered");
        }
        let record = AlertRecord {
            received_at: now,
            source: alert.source.to_string(),
            alert_id: alert.id.clone(),
            rule: alert.rule.clone(),
            condition: if alert.firing { "Fired".into() } else { "Resolved".into() },
            matched: matched.iter().map(|(id, _)| id.clone()).collect(),
            summary: alert.summary.clone(),
        };
        if let Err(e) = app.engine.store.record_alert(&record).await {
            tracing::warn!(error = %e, "alert not recorded");
        }
        answers.push(json!({
            "alertId": alert.id,
            "rule": alert.rule,
            "condition": record.condition,
            "recognised": alert.recognised,
            "rollouts": matched.iter().map(|(id, why)| json!({"id": id, "matchedBy": why})).collect::<Vec<_>>(),
        }));
    }
    HttpResponse::json(202, &json!({"accepted": answers.len(), "alerts": answers}))
}

fn event_for(alert: &IncomingAlert) -> Event {
    if alert.firing {
        Event::AlertFired { alert: alert.info() }
    } else {
        Event::AlertResolved { alert_id: alert.id.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3cre")));
        assert!(!token_matches("s3cret", Some("s3cret!")));
        assert!(!token_matches("s3cret", Some("S3cret")));
        assert!(!token_matches("s3cret", None));
    }
}
