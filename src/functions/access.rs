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
