//! Who is calling, when the deployment checks tokens itself: the bearer
//! token proves a caller (`ports::identity`), and the action must be one
//! its roles allow (`domain::access`). A refusal is a 401 naming what is
//! wrong with the token, or a 403 naming the role that was missing, and is
//! logged with who tried. Without configured issuers nothing here applies
//! and the handlers keep their older rules (App Service's principal, or a
//! name the caller writes, where the deployment said it trusts names).

use super::error::ApiError;
use super::{App, HttpRequest};
use crate::domain::access::Action;
use crate::domain::ids::Actor;
use crate::functions::alerts::token_matches;

/// The caller `req`'s token proves, if it may do `action`; `None` when this
/// Sluice checks no tokens.
pub async fn caller(app: &App, req: &HttpRequest, action: Action) -> Result<Option<Actor>, ApiError> {
    let Some(verifier) = &app.tokens else { return Ok(None) };
    let Some(token) = bearer(req) else {
        tracing::warn!(%action, "refused: no bearer token");
        return Err(ApiError::new(401, "missing_token", "send a bearer token (Entra ID, or GitHub Actions' OIDC token) in Authorization")
            .field("authorization"));
    };
    let now = app.engine.clock.now().timestamp();
    let principal = verifier.verify(token, now).await.map_err(|e| {
        tracing::warn!(%action, reason = %e, "refused: token not accepted");
        ApiError::new(401, "invalid_token", e.to_string()).field("authorization")
    })?;
    principal.may(action).map_err(|refusal| {
        tracing::warn!(%action, who = %principal.id, name = %principal.name, needs = %refusal.needs, "refused: role missing");
        ApiError::forbidden(refusal.to_string()).with("needs", serde_json::json!(refusal.needs.value()))
    })?;
    let actor = Actor::identified(&principal.name, &principal.id, principal.groups.clone()).map_err(|e| {
        ApiError::new(401, "invalid_token", format!("the token names its caller badly: {}", e.message)).field("authorization")
    })?;
    Ok(Some(actor))
}

/// The verifier of `issuers`, or `None` when there are none.
pub fn verifier(
    issuers: &[crate::ports::identity::IssuerConfig],
) -> Result<Option<std::sync::Arc<crate::ports::identity::Verifier>>, String> {
    if issuers.is_empty() {
        return Ok(None);
    }
    crate::ports::identity::Verifier::new(issuers.to_vec()).map(|v| Some(std::sync::Arc::new(v)))
}

/// The token of `Authorization: Bearer …` (the scheme in any case).
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// What a function asks of a caller before its handler runs. Every HTTP
/// function is anonymous at the Functions host, so that a caller with a
/// token needs no shared secret besides it: the key is Sluice's own
/// (`SLUICE_API_KEY`), checked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// No key: the handler has its own check (the alert webhook) or holds no data (the dashboard's page).
    Never,
    /// The key, always: callers that can only send a static credential (Prometheus, Azure DevOps' agentless task).
    Always,
    /// The key, unless this Sluice checks tokens, when the handler asks for one instead.
    UnlessTokens,
}

/// The rule of the function `name`; a function not listed needs the key.
pub fn key_rule(name: &str) -> KeyRule {
    match name {
        // Slack signs its clicks (`slack`), and cannot send Sluice's key.
        "alerts" | "dashboard" | "slack" => KeyRule::Never,
        "api" | "doctor" | "gate" | "releases" | "report" | "waves" => KeyRule::UnlessTokens,
        _ => KeyRule::Always,
    }
}

/// Refuses a call to `function` without the key its rule asks for; with no
/// key configured (a local Sluice) nothing is asked.
pub fn keyed(app: &App, function: &str, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = &app.api_key else { return Ok(()) };
    let asked = match key_rule(function) {
        KeyRule::Never => false,
        KeyRule::Always => true,
        KeyRule::UnlessTokens => app.tokens.is_none(),
    };
    let given = req.header("x-functions-key").or_else(|| req.query.get("code").map(String::as_str));
    match (asked, given) {
        (false, _) => Ok(()),
        (true, None) => {
            Err(ApiError::new(401, "missing_key", "send Sluice's key (SLUICE_API_KEY) in x-functions-key or ?code=")
                .field("x-functions-key"))
        }
        (true, Some(given)) if token_matches(expected, Some(given)) => Ok(()),
        (true, Some(_)) => {
            tracing::warn!(function, "refused: wrong key");
            Err(ApiError::new(401, "invalid_key", "the key is not Sluice's (SLUICE_API_KEY)").field("x-functions-key"))
        }
    }
}
