//! `alerts` (HTTP, `POST alerts`): the webhook Azure Monitor action groups
//! and Alertmanager call. It checks the shared token (constant time), parses
//! the payload (a field of the wrong type is a 400 naming it), maps each
//! alert it recognises to the active rollout of its target (rules in
//! [`crate::ports::alerts`]), enqueues one message per match and answers
//! 202 at once — action groups give up on slow endpoints. Every alert is
//! recorded, matched or not; a payload or alert variant Sluice does not
//! know is recorded and answered 202, never acted on.
//!
//! The token is read from `?token=`, the `x-sluice-token` header, or
//! `Authorization: Bearer <token>`.

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::{parse_json_body_untyped_ok, App, HttpRequest, HttpResponse, MAX_ALERT_BODY};
use crate::domain::access::Action;
use crate::domain::rollout::{Input, Rollout};
use crate::ports::alerts::{self, IncomingAlert, Payload};
use crate::ports::store::AlertRecord;
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
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method != "POST" {
        return Err(ApiError::new(405, "method_not_allowed", "alerts are POSTed"));
    }
    // An action group's secure webhook (useAadAuth) sends an Entra token with
    // the app role ActionGroupsSecureWebhook (learn.microsoft.com/azure/azure-monitor/alerts/action-groups,
    // "Secure webhook"); the URL token stays for senders that cannot present one.
    let jwt = app.tokens.is_some() && super::access::bearer(&req).is_some_and(|t| t.split('.').count() == 3);
    if jwt {
        super::access::caller(app, &req, Action::Alert).await?;
    } else if let Some(expected) = &app.alert_token {
        if !token_matches(expected, presented_token(&req)) {
            return Err(ApiError::new(401, "unauthorized", "missing or wrong alert token").field("token"));
        }
    } else if app.tokens.is_some() {
        return Err(ApiError::new(
            401,
            "missing_token",
            "send the action group's Entra token (secure webhook); this Sluice has no alert URL token",
        )
        .field("authorization"));
    }
    let body = match parse_json_body_untyped_ok(&req, MAX_ALERT_BODY)? {
        Value::Null => return Err(ApiError::new(400, "invalid_body", "the body must be an alert payload (JSON)").field("body")),
        v => v,
    };
    let payload = alerts::parse(&body).map_err(|e| ApiError::new(400, "invalid_alert", e.to_string()).field(e.field))?;
    let now = app.engine.clock.now();
    let incoming = match payload {
        Payload::Alerts(a) => a,
        Payload::Unknown { source, what } => {
            let record = AlertRecord {
                received_at: now,
                source: source.to_string(),
                alert_id: String::new(),
                rule: String::new(),
                condition: "Unknown".into(),
                matched: Vec::new(),
                summary: what.clone(),
            };
            if let Err(e) = app.engine.store.record_alert(&record).await {
                tracing::warn!(error = %e, "alert not recorded");
            }
            tracing::warn!(%source, %what, "alert payload of an unknown variant recorded; not acted on");
            return Ok(HttpResponse::json(
                202,
                &json!({"accepted": 0, "recognised": false, "message": format!("{what}: recorded, not acted on")}),
            ));
        }
    };
    let mut answers = Vec::new();
    for alert in &incoming {
        let matched: Vec<_> = if alert.recognised {
            candidates(app, alert).await?.iter().filter_map(|r| alerts::match_reason(alert, r).map(|why| (r.id.clone(), why))).collect()
        } else {
            Vec::new()
        };
        let condition = match (alert.recognised, alert.firing) {
            (false, _) => "Unknown",
            (true, true) => "Fired",
            (true, false) => "Resolved",
        };
        let record = AlertRecord {
            received_at: now,
            source: alert.source.to_string(),
            alert_id: alert.id.clone(),
            rule: alert.rule.clone(),
            condition: condition.into(),
            matched: matched.iter().map(|(id, _)| id.to_string()).collect(),
            summary: alert.summary.clone(),
        };
        // Recorded before it is sent: the steps handler believes an alert
        // message only if the webhook recorded its delivery.
        if let Err(e) = app.engine.store.record_alert(&record).await {
            return Err(ApiError::new(503, "store_unavailable", format!("the alert could not be recorded: {e}")));
        }
        for (rollout, why) in &matched {
            let message = StepMessage::Event { rollout: rollout.clone(), event: input_for(alert) };
            if let Err(e) = app.engine.queue.send(message.to_out(None)).await {
                return Err(ApiError::new(503, "queue_unavailable", e.to_string()));
            }
            tracing::info!(rollout = %rollout, alert = %alert.id, rule = %alert.rule, firing = alert.firing, reason = %why, "alert delivered");
        }
        answers.push(json!({
            "alertId": alert.id,
            "rule": alert.rule,
            "condition": record.condition,
            "recognised": alert.recognised,
            "rollouts": matched.iter().map(|(id, why)| json!({"id": id, "matchedBy": why})).collect::<Vec<_>>(),
        }));
    }
    Ok(HttpResponse::json(202, &json!({"accepted": answers.len(), "alerts": answers})))
}

/// The active rollouts an alert may concern, read through the store's
/// indexes: the rollout or target a label names, and the rollouts filed
/// under the alert's keys. The mapping rules then decide among them.
async fn candidates(app: &App, alert: &IncomingAlert) -> Result<Vec<Rollout>, ApiError> {
    let store = &app.engine.store;
    let mut found = store.active_by_alert_keys(&alerts::lookup_keys(alert)).await?;
    let mut named = Vec::new();
    if let Some(target) = alerts::target_label(alert) {
        named.extend(store.active_for_target(target).await?);
    }
    named.extend(alerts::rollout_label(alert).map(str::to_string));
    for id in named {
        if found.iter().any(|r| r.id.as_str() == id) {
            continue;
        }
        if let Some((r, _)) = store.load(&id).await? {
            if !r.phase.is_terminal() {
                found.push(r);
            }
        }
    }
    Ok(found)
}

fn input_for(alert: &IncomingAlert) -> Input {
    if alert.firing {
        Input::AlertFired { alert: alert.info() }
    } else {
        Input::AlertResolved { alert_id: alert.id.clone() }
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
