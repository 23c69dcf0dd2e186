//! `doctor` (HTTP, `POST doctor`): checks, from where this Sluice runs and
//! with its identity, that a spec can be rolled out — router and
//! permissions, analysis queries, backlog, notifications, store and queue —
//! changing nothing. The body is the spec, or `{"spec": …}`. The answer is
//! 200 with every finding, blockers first, and `ready`; `sluice doctor`
//! prints it and exits non-zero on a blocker.

use serde_json::Value;

use super::error::ApiError;
use super::{parse_json_body, App, HttpRequest, HttpResponse, MAX_API_BODY};

use crate::domain::access::Role;
use crate::ports::identity::IssuerKind;
use crate::ports::preflight::Check;
use crate::shell::doctor;

/// Whether people's actions will carry the name they signed in with, and
/// which callers and roles this deployment accepts.
fn sign_in(app: &App) -> Check {
    if let Some(verifier) = &app.tokens {
        let accepted: Vec<String> = verifier
            .issuers()
            .map(|i| match &i.kind {
                IssuerKind::Entra { .. } => format!(
                    "Entra ID tokens from {} for {} (people and apps by their app roles: {})",
                    i.issuer,
                    i.audiences.join(" or "),
                    Role::ALL.iter().map(|r| r.value()).collect::<Vec<_>>().join(", ")
                ),
                IssuerKind::GitHub { rules } => format!(
                    "GitHub Actions tokens from {} for {} ({})",
                    i.issuer,
                    i.audiences.join(" or "),
                    rules.iter().map(|r| format!("{} → {}", r.pattern, r.role)).collect::<Vec<_>>().join("; ")
                ),
            })
            .collect();
        return Check::ok("sign-in", "callers", format!("Sluice checks bearer tokens itself: {}", accepted.join("; ")));
    }
    if app.require_principal {
        Check::ok("sign-in", "people's actions", "App Service authentication is on: approvals carry the signed-in name")
    } else {
        Check::warning(
            "sign-in",
            "people's actions",
            "App Service authentication is off: whoever holds Sluice's key acts under the name they give",
        )
    }
}

/// Runs the checks for the posted spec.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // The checks call the spec's peers with Sluice's own identity: an operator's call, not a reader's.
    super::access::caller(app, &req, crate::domain::access::Action::Start).await?;
    if req.method != "POST" {
        return Err(ApiError::new(405, "method_not_allowed", "post the spec to check"));
    }
    let doc = match parse_json_body(&req, MAX_API_BODY)? {
        Value::Null => return Err(ApiError::new(400, "invalid_body", "the body must be a rollout spec (JSON)").field("body")),
        Value::Object(mut wrapper) if wrapper.contains_key("spec") && wrapper.len() == 1 => wrapper.remove("spec").unwrap_or_default(),
        other => other,
    };
    let (spec, plan) = crate::ports::registry::validate(&doc, &app.engine.env).map_err(|p| ApiError::invalid_spec(&p))?;
    let mut report = doctor::examine(&app.engine, &spec, &plan).await;
    report.add(sign_in(app));
    let body = serde_json::to_value(&report).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    Ok(HttpResponse::json(200, &body))
}
