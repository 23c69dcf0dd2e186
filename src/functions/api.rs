//! `api` (HTTP, `rollouts/{id?}/{action?}`): what pipelines, people and the
//! CLI call — start, list, status, approve, reject, abort, promote, retry.
//!
//! Every input is parsed here, once, into typed values (rollout id, actor,
//! request id, step); a wrong field is a 400 naming it and changes nothing.
//!
//! Who acts: with App Service authentication on (the platform sets
//! `WEBSITE_AUTH_ENABLED=True`, and strips any copy of the header a client
//! sends), the `X-MS-CLIENT-PRINCIPAL-NAME` it sets — people's actions need
//! it, and a `by` naming someone else is refused with 403. Without it the
//! header proves nothing and is ignored: the body's `by`, else the
//! `x-sluice-user` header. A request id
//! (`requestId` in the body, or an `Idempotency-Key` header) makes a
//! repeated request harmless; `step` (1-based, as status shows it) makes a
//! request for a step the rollout has left stale.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{parse_json_body, typed, App, HttpRequest, HttpResponse, MAX_API_BODY};
use crate::domain::access::Action;
use crate::domain::ids::{shown, Actor, RequestId, RolloutId};
use crate::domain::rollout::{Event, Outcome, Phase, Rollout};
use crate::domain::spec;
use crate::ports::store::{ListFilter, StoreError};
use crate::shell::engine::EngineError;

/// The header App Service authentication sets to the signed-in principal
/// (it strips any copy a client sends).
pub const PRINCIPAL_HEADER: &str = "x-ms-client-principal-name";

/// Longest `reason` kept with an action.
const REASON_MAX: usize = 2000;

/// Handles one API request.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = req.params.get("id").map(|id| RolloutId::parse(id).map_err(|e| ApiError::invalid_value("id", &e))).transpose()?;
    let action = req.params.get("action").cloned();
    if req.method == "GET" {
        super::access::caller(app, &req, Action::Read).await?;
    }
    match (req.method.as_str(), id, action) {
        ("GET", None, None) => list(app, &req).await,
        ("POST", None, None) => start(app, &req).await,
        ("GET", Some(id), None) => status(app, &id).await,
        ("POST", Some(id), Some(action)) => act(app, &req, &id, &action).await,
        ("POST", Some(_), None) => {
            Err(ApiError::new(405, "method_not_allowed", "POST a rollout's action: /rollouts/{id}/approve|reject|abort|promote|retry"))
        }
        ("GET", Some(_), Some(_)) => Err(ApiError::new(405, "method_not_allowed", "actions are POSTed")),
        (m, _, _) => Err(ApiError::new(405, "method_not_allowed", format!("{} is not supported here", shown(m)))),
    }
}

/// A rollout in a list or status answer.
pub fn summary(r: &Rollout, now: chrono::DateTime<chrono::Utc>) -> Value {
    let t = &r.spec.target;
    json!({
        "id": r.id,
        "target": t.name,
        "stable": t.stable.version,
        "canary": t.canary.version,
        "phase": r.phase,
        "step": format!("{}/{}", (r.stage + 1).min(r.plan.stages.len()), r.plan.stages.len()),
        "stepDescription": r.current_stage().map(|s| s.describe()),
        "weight": r.traffic.weight,
        "observedSplit": r.traffic.observed,
        "routerCaveats": r.traffic.caveats,
        "preview": r.traffic.preview,
        "plan": r.plan.summary(),
        "waitingFor": r.waiting_for(now),
        "createdAt": r.created_at,
        "createdBy": r.created_by.as_str(),
        "updatedAt": r.updated_at,
        "finishedAt": r.finished_at,
        "retryOf": r.retry_of,
        "failure": r.failure.as_ref().map(|f| f.evidence.headline()),
        "backlog": r.backlog,
    })
}

fn list_filter(req: &HttpRequest) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter { limit: 200, ..ListFilter::default() };
    let bad = |key: &str, message: String| ApiError::new(400, "invalid_query", format!("{key}: {message}")).field(key);
    for (key, value) in &req.query {
        match key.as_str() {
            "active" => match value.as_str() {
                "true" | "1" | "" => filter.active_only = true,
                "false" | "0" => filter.active_only = false,
                _ => return Err(bad("active", format!("'{}' is not true or false", shown(value)))),
            },
            "phase" => filter.phase = Some(Phase::parse(value).ok_or_else(|| bad("phase", format!("'{}' is not a phase", shown(value))))?),
            "target" => filter.target = Some(spec::check_name(value).map(|()| value.clone()).map_err(|e| bad("target", e))?),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => filter.limit = n,
                _ => return Err(bad("limit", format!("'{}' is not a number from 1 to 1000", shown(value)))),
            },
            "code" => {} // Sluice's key
            other => return Err(bad(&shown(other), "unknown query parameter".into())),
        }
    }
    Ok(filter)
}

async fn list(app: &App, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let filter = list_filter(req)?;
    let rollouts = app.engine.store.list(&filter).await?;
    let now = app.engine.clock.now();
    Ok(HttpResponse::json(200, &json!({"rollouts": rollouts.iter().map(|r| summary(r, now)).collect::<Vec<_>>()})))
}

async fn load(app: &App, id: &RolloutId) -> Result<Rollout, ApiError> {
    match app.engine.store.load(id).await? {
        Some((r, _)) => Ok(r),
        None => Err(ApiError::no_rollout(id)),
    }
}

async fn status(app: &App, id: &RolloutId) -> Result<HttpResponse, ApiError> {
    let loaded = load(app, id).await?;
    let history = app.engine.store.history(id).await?;
    let live = match crate::ports::traffic::build(&loaded.spec.target, &app.engine.env) {
        Ok(router) if !loaded.phase.is_terminal() => router.live().await,
        _ => None,
    };
    let mut body = summary(&loaded, app.engine.clock.now());
    body["live"] = json!(live);
    body["history"] = json!(history);
    body["rollout"] = json!(loaded);
    Ok(HttpResponse::json(200, &body))
}

/// A 1-based step number as people see it in `status`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u64")]
struct StepNumber(usize);

impl TryFrom<u64> for StepNumber {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        match usize::try_from(n) {
            Ok(i) if (1..=10_000).contains(&i) => Ok(StepNumber(i - 1)),
            _ => Err(format!("{n} is not a step number (1 or more, as status shows it)")),
        }
    }
}

/// The body of an action; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActionBody {
    by: Option<crate::domain::ids::ActorName>,
    #[serde(default)]
    reason: String,
    step: Option<StepNumber>,
    #[serde(default)]
    full: bool,
    request_id: Option<RequestId>,
    /// Sluice's key, when a client puts it in the body.
    #[allow(dead_code)]
    code: Option<String>,
}

/// An action's body: a JSON object (absent: every field's default), typed.
pub(super) fn object_body<T: serde::de::DeserializeOwned + Default>(req: &HttpRequest) -> Result<T, ApiError> {
    match parse_json_body(req, MAX_API_BODY)? {
        Value::Null => Ok(T::default()),
        v @ Value::Object(_) => typed(v),
        other => {
            Err(ApiError::new(400, "invalid_body", format!("expected a JSON object, found {}", super::json_kind(&other))).field("body"))
        }
    }
}

/// A `reason` kept with an action, if it is not too long.
pub(super) fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.chars().count() > REASON_MAX {
        return Err(ApiError::invalid_field("reason", format!("is longer than {REASON_MAX} characters")));
    }
    Ok(())
}

fn action_body(req: &HttpRequest) -> Result<ActionBody, ApiError> {
    let body: ActionBody = object_body(req)?;
    check_reason(&body.reason)?;
    Ok(body)
}

fn header_actor(req: &HttpRequest, header: &str) -> Result<Option<Actor>, ApiError> {
    req.header(header).map(|v| Actor::parse(v).map_err(|e| ApiError::invalid_value(header, &e))).transpose()
}

/// Who is acting, in the documented order of trust: a checked token's
/// caller (with a role allowing `action`), else App Service's principal,
/// else a name the caller wrote. `person` marks the actions that
/// `SLUICE_REQUIRE_PRINCIPAL` protects.
pub(super) async fn actor(
    app: &App,
    req: &HttpRequest,
    body_by: Option<crate::domain::ids::ActorName>,
    person: bool,
    action: Action,
) -> Result<Actor, ApiError> {
    let body_by = body_by.map(crate::domain::ids::ActorName::into_actor);
    if let Some(signed) = super::access::caller(app, req, action).await? {
        if let Some(claimed) = body_by.filter(|b| !b.same_as(&signed)) {
            return Err(ApiError::forbidden(format!(
                "by: '{}' is self-asserted; this Sluice acts only as the token's caller ({signed})",
                shown(&claimed)
            ))
            .field("by"));
        }
        return Ok(signed);
    }
    let principal = header_actor(req, PRINCIPAL_HEADER)?;
    if person && app.require_principal {
        let Some(principal) = principal else {
            return Err(ApiError::forbidden(
                "sign in: this Sluice takes people's actions only from App Service authentication (X-MS-CLIENT-PRINCIPAL-NAME)",
            ));
        };
        if let Some(claimed) = body_by.filter(|b| *b != principal) {
            return Err(ApiError::forbidden(format!(
                "by: '{}' is self-asserted; this Sluice acts only as the signed-in principal ({principal})",
                shown(&claimed)
            ))
            .field("by"));
        }
        return Ok(principal);
    }
    // Without App Service authentication anyone can send the principal header: it is ignored.
    let principal = principal.filter(|_| app.require_principal);
    let header_user = header_actor(req, "x-sluice-user")?;
    principal.or(body_by).or(header_user).ok_or_else(|| {
        ApiError::new(400, "missing_identity", "say who is acting: the body field \"by\" or the header x-sluice-user").field("by")
    })
}

/// `POST rollouts` (and `POST waves`): either the spec itself, or `{"spec", "by", "id"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartRequest {
    pub(super) spec: Value,
    pub(super) by: Option<crate::domain::ids::ActorName>,
    pub(super) id: Option<RolloutId>,
}

/// Reads a start: `what` names the document for the error ("a rollout spec").
pub(super) fn start_request(req: &HttpRequest, what: &str) -> Result<StartRequest, ApiError> {
    let doc = match parse_json_body(req, MAX_API_BODY)? {
        Value::Null => return Err(ApiError::new(400, "invalid_body", format!("the body must be {what} (JSON)")).field("body")),
        v => v,
    };
    // A spec has no `spec` field, so a body with one is the wrapper (and its other keys are checked).
    match doc.get("spec") {
        Some(_) => typed::<StartRequest>(doc),
        None => Ok(StartRequest { spec: doc, by: None, id: None }),
    }
}

async fn start(app: &App, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let request = start_request(req, "a rollout spec")?;
    let by = actor(app, req, request.by, false, Action::Start).await?;
    let (spec, plan) = crate::ports::registry::validate(&request.spec, &app.engine.env).map_err(|p| ApiError::invalid_spec(&p))?;
    match app.engine.create(spec.clone(), plan, &by, request.id.clone(), None).await {
        Ok(r) => Ok(created(&r, app)),
        Err(EngineError::Store(StoreError::AlreadyExists(taken))) => {
            // The same start again (a retried pipeline call): answer as before.
            let existing = match &request.id {
                Some(id) => app.engine.store.load(id).await?,
                None => None,
            };
            match existing {
                Some((r, _)) if r.spec == spec => {
                    app.engine.enqueue_start(&r.id).await?;
                    Ok(HttpResponse::json(200, &summary(&r, app.engine.clock.now())))
                }
                _ => Err(ApiError::from(&StoreError::AlreadyExists(taken))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn created(r: &Rollout, app: &App) -> HttpResponse {
    let mut resp = HttpResponse::json(201, &summary(r, app.engine.clock.now()));
    resp.headers.push(("location".into(), format!("/api/rollouts/{}", r.id)));
    resp
}

const ACTIONS: [&str; 6] = ["approve", "reject", "abort", "promote", "retry", "override"];

async fn act(app: &App, req: &HttpRequest, id: &RolloutId, action: &str) -> Result<HttpResponse, ApiError> {
    if !ACTIONS.contains(&action) {
        return Err(
            ApiError::new(404, "unknown_action", format!("'{}' is not one of: {}", shown(action), ACTIONS.join(", "))).field("action")
        );
    }
    let body = action_body(req)?;
    let needs = match action {
        "approve" | "reject" => Action::Approve,
        "override" => Action::Override,
        _ => Action::Steer,
    };
    if action == "override" && body.reason.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "reason",
            "an override of a deployment window or freeze needs a reason (it is recorded and announced)",
        ));
    }
    let by = actor(app, req, body.by, true, needs).await?;
    let request = match body.request_id {
        Some(r) => Some(r),
        None => req
            .header("idempotency-key")
            .map(|k| RequestId::parse(k).map_err(|e| ApiError::invalid_value("idempotency-key", &e)))
            .transpose()?,
    };
    let current = load(app, id).await?;
    let stage = body.step.map(|s| s.0);
    let event = match action {
        "approve" => Event::Approved { by, stage, request },
        "reject" => Event::Rejected { by, reason: body.reason, stage, request },
        "abort" => Event::AbortRequested { by, reason: body.reason, request },
        "promote" => Event::PromoteRequested { by, full: body.full, stage, request },
        "override" => Event::OverrideRequested { by, reason: body.reason, request },
        _ if current.phase.is_terminal() => return retry_as_new(app, &current, &by).await,
        _ => Event::RetryRequested { by, request },
    };
    let applied = app.engine.apply(id, event).await?;
    match applied.outcome {
        Outcome::Applied => Ok(HttpResponse::json(200, &summary(&applied.rollout, app.engine.clock.now()))),
        Outcome::Duplicate => {
            let mut body = summary(&applied.rollout, app.engine.clock.now());
            body["duplicate"] = json!(true);
            Ok(HttpResponse::json(200, &body))
        }
        Outcome::Refused(refusal) => Err(ApiError::refused(&refusal, &applied.rollout)),
    }
}

/// `retry` on a finished rollout starts a new one from the same spec.
async fn retry_as_new(app: &App, old: &Rollout, by: &Actor) -> Result<HttpResponse, ApiError> {
    let r = app.engine.create(old.spec.clone(), old.plan.clone(), by, None, Some(old)).await?;
    Ok(created(&r, app))
}
