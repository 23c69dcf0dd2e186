//! `api` (HTTP, `rollouts/{id?}/{action?}`): what pipelines, people and the
//! CLI call — start, list, status, approve, reject, abort, promote, retry.
//!
//! Who acts: the `x-ms-client-principal-name` header when App Service
//! authentication sets it, else the body's `by`, else the `x-sluice-user`
//! header. A request id (`requestId` in the body, or an `Idempotency-Key`
//! header) makes a repeated request harmless; `step` (1-based, as status
//! shows it) makes a request for a step the rollout has left stale.

use serde_json::{json, Map, Value};

use super::{json_kind, parse_json_body, App, HttpRequest, HttpResponse, MAX_API_BODY};
use crate::domain::rollout::{Event, Outcome, Rollout};
use crate::domain::spec::{self, Problems};
use crate::ports::store::{ListFilter, StoreError};
use crate::shell::engine::EngineError;

/// Handles one API request.
pub async fn handle(app: &App, req: HttpRequest) -> HttpResponse {
    let id = req.params.get("id").cloned();
    let action = req.params.get("action").cloned();
    match (req.method.as_str(), id, action) {
        ("GET", None, None) => list(app, &req).await,
        ("POST", None, None) => start(app, &req).await,
        ("GET", Some(id), None) => status(app, &id).await,
        ("POST", Some(id), Some(action)) => act(app, &req, &id, &action).await,
        ("POST", Some(_), None) => HttpResponse::error(
            405,
            "method_not_allowed",
            "POST a rollout's action: /rollouts/{id}/approve|reject|abort|promote|retry",
            None,
        ),
        ("GET", Some(_), Some(_)) => HttpResponse::error(405, "method_not_allowed", "actions are POSTed", None),
        (m, _, _) => HttpResponse::error(405, "method_not_allowed", format!("{m} is not supported here"), None),
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
        "plan": r.plan.summary(),
        "waitingFor": r.waiting_for(now),
        "createdAt": r.created_at,
        "createdBy": r.created_by,
        "updatedAt": r.updated_at,
        "finishedAt": r.finished_at,
        "retryOf": r.retry_of,
        "failure": r.failure.as_ref().map(|f| f.evidence.headline()),
        "backlog": r.backlog,
    })
}

fn store_error(e: &StoreError) -> HttpResponse {
    match e {
        StoreError::NotFound(id) => HttpResponse::error(404, "not_found", format!("no rollout with id '{id}'"), Some("id")),
        StoreError::TargetBusy { target, active } => {
            let mut r = HttpResponse::error(
                409,
                "target_busy",
                format!("target '{target}' already has an active rollout: {active}; wait for it to finish or abort it"),
                None,
            );
            let mut body = r.json_body();
            body["activeRollout"] = json!(active);
            r.body = serde_json::to_vec_pretty(&body).unwrap_or_default();
            r
        }
        StoreError::AlreadyExists(id) => {
            HttpResponse::error(409, "id_taken", format!("a rollout with id '{id}' already exists"), Some("id"))
        }
        other => HttpResponse::error(503, "store_unavailable", other.to_string(), None),
    }
}

fn engine_error(e: &EngineError) -> HttpResponse {
    match e {
        EngineError::NotFound(id) => HttpResponse::error(404, "not_found", format!("no rollout with id '{id}'"), Some("id")),
        EngineError::Store(s) => store_error(s),
        EngineError::Invalid(m) => HttpResponse::error(400, "invalid", m.clone(), None),
        other => HttpResponse::error(503, "unavailable", other.to_string(), None),
    }
}

fn problems_response(problems: &Problems) -> HttpResponse {
    HttpResponse::json(
        422,
        &json!({
            "error": "invalid_spec",
            "message": format!("the spec has {} problem(s)", problems.len()),
            "problems": problems.iter().collect::<Vec<_>>(),
        }),
    )
}

async fn list(app: &App, req: &HttpRequest) -> HttpResponse {
    let mut filter = ListFilter { limit: 200, ..ListFilter::default() };
    for (key, value) in &req.query {
        match key.as_str() {
            "active" => match value.as_str() {
                "true" | "1" | "" => filter.active_only = true,
                "false" | "0" => filter.active_only = false,
                _ => return HttpResponse::error(400, "invalid_query", format!("active: '{value}' is not true or false"), Some("active")),
            },
            "phase" => match crate::domain::rollout::Phase::parse(value) {
                Some(p) => filter.phase = Some(p),
                None => return HttpResponse::error(400, "invalid_query", format!("phase: '{value}' is not a phase"), Some("phase")),
            },
            "target" => filter.target = Some(value.clone()),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => filter.limit = n,
                _ => {
                    return HttpResponse::error(
                        400,
                        "invalid_query",
                        format!("limit: '{value}' is not a number from 1 to 1000"),
                        Some("limit"),
                    )
                }
            },
            "code" => {} // the Functions key
            other => return HttpResponse::error(400, "invalid_query", format!("unknown query parameter '{other}'"), Some(other)),
        }
    }
    match app.engine.store.list(&filter).await {
        Ok(rollouts) => {
            let now = app.engine.clock.now();
            HttpResponse::json(200, &json!({"rollouts": rollouts.iter().map(|r| summary(r, now)).collect::<Vec<_>>()}))
        }
        Err(e) => store_error(&e),
    }
}

async fn status(app: &App, id: &str) -> HttpResponse {
    let loaded = match app.engine.store.load(id).await {
        Ok(Some((r, _))) => r,
        Ok(None) => return HttpResponse::error(404, "not_found", format!("no rollout with id '{id}'"), Some("id")),
        Err(e) => return store_error(&e),
    };
    let history = match app.engine.store.history(id).await {
        Ok(h) => h,
        Err(e) => return store_error(&e),
    };
    let live = match crate::ports::traffic::build(&loaded.spec.target, &app.engine.env) {
        Ok(router) if !loaded.phase.is_terminal() => router.live().await,
        _ => None,
    };
    let mut body = summary(&loaded, app.engine.clock.now());
    body["live"] = json!(live);
    body["history"] = json!(history);
    body["rollout"] = json!(loaded);
    HttpResponse::json(200, &body)
}

/// Fields allowed in an action body, and their types.
const ACTION_FIELDS: &[(&str, &str)] =
    &[("by", "string"), ("reason", "string"), ("step", "integer"), ("full", "boolean"), ("requestId", "string"), ("code", "string")];

struct ActionBody {
    by: Option<String>,
    reason: String,
    step: Option<usize>,
    full: bool,
    request_id: Option<String>,
}

fn action_body(req: &HttpRequest) -> Result<ActionBody, HttpResponse> {
    let value = parse_json_body(req, MAX_API_BODY)?;
    let map = match value {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(HttpResponse::error(400, "invalid_body", format!("expected a JSON object, found {}", json_kind(&other)), None));
        }
    };
    for (k, v) in &map {
        let Some((_, ty)) = ACTION_FIELDS.iter().find(|(name, _)| name == k) else {
            let known: Vec<&str> = ACTION_FIELDS.iter().map(|(n, _)| *n).collect();
            return Err(HttpResponse::error(
                400,
                "invalid_field",
                format!("{k}: unknown field (expected one of: {})", known.join(", ")),
                Some(k),
            ));
        };
        let ok = match *ty {
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.as_u64().map(|n| n >= 1).unwrap_or(false),
            _ => true,
        };
        if !ok {
            let want = if *ty == "integer" { "a whole number from 1" } else { ty };
            return Err(HttpResponse::error(400, "invalid_field", format!("{k}: expected {want}, found {}", json_kind(v)), Some(k)));
        }
    }
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(ActionBody {
        by: text("by"),
        reason: text("reason").unwrap_or_default(),
        step: map.get("step").and_then(Value::as_u64).map(|s| s as usize - 1),
        full: map.get("full").and_then(Value::as_bool).unwrap_or(false),
        request_id: text("requestId").or_else(|| req.header("idempotency-key").map(str::to_string)),
    })
}

/// Who is acting, in the documented order of trust.
fn actor(req: &HttpRequest, body_by: Option<String>) -> Result<String, HttpResponse> {
    let who = req
        .header("x-ms-client-principal-name")
        .map(str::to_string)
        .or(body_by)
        .or_else(|| req.header("x-sluice-user").map(str::to_string))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    match who {
        Some(w) if w.chars().count() <= 200 && !w.chars().any(char::is_control) => Ok(w),
        Some(_) => Err(HttpResponse::error(400, "invalid_field", "by: must be at most 200 printable characters", Some("by"))),
        None => Err(HttpResponse::error(
            400,
            "missing_identity",
            "say who is acting: the body field \"by\" or the header x-sluice-user",
            Some("by"),
        )),
    }
}

async fn start(app: &App, req: &HttpRequest) -> HttpResponse {
    let doc = match parse_json_body(req, MAX_API_BODY) {
        Ok(Value::Null) => return HttpResponse::error(400, "invalid_body", "the body must be a rollout spec (JSON)", None),
        Ok(v) => v,
        Err(r) => return r,
    };
    // Either the spec itself, or {"spec": ..., "by": ..., "id": ...}.
    let (spec_doc, by, id) = match doc.as_object() {
        Some(o) if o.contains_key("spec") && o.keys().all(|k| ["spec", "by", "id"].contains(&k.as_str())) => {
            let by = match o.get("by") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return HttpResponse::error(
                        400,
                        "invalid_field",
                        format!("by: expected a string, found {}", json_kind(other)),
                        Some("by"),
                    )
                }
            };
            let id = match o.get("id") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return HttpResponse::error(
                        400,
                        "invalid_field",
                        format!("id: expected a string, found {}", json_kind(other)),
                        Some("id"),
                    )
                }
            };
            (o.get("spec").cloned().unwrap_or(Value::Null), by, id)
        }
        _ => (doc, None, None),
    };
    let by = match actor(req, by) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(id) = &id {
        if let Err(e) = spec::check_name(id) {
            return HttpResponse::error(400, "invalid_field", format!("id: {e}"), Some("id"));
        }
    }
    let (spec, plan) = match spec::validate(&spec_doc, &crate::ports::registry::names()) {
        Ok(v) => v,
        Err(problems) => return problems_response(&problems),
    };
    match app.engine.create(spec.clone(), plan, &by, id.clone(), None).await {
        Ok(r) => created(&r, app),
        Err(EngineError::Store(StoreError::AlreadyExists(existing))) => match app.engine.store.load(&existing).await {
            // The same start again (a retried pipeline call): answer as before.
            Ok(Some((r, _))) if r.spec == spec => {
                if let Err(e) = app.engine.enqueue_start(&r.id).await {
                    return engine_error(&e);
                }
                HttpResponse::json(200, &summary(&r, app.engine.clock.now()))
            }
            Ok(_) => store_error(&StoreError::AlreadyExists(existing)),
            Err(e) => store_error(&e),
        },
        Err(e) => engine_error(&e),
    }
}

fn created(r: &Rollout, app: &App) -> HttpResponse {
    let mut resp = HttpResponse::json(201, &summary(r, app.engine.clock.now()));
    resp.headers.push(("location".into(), format!("/api/rollouts/{}", r.id)));
    resp
}

async fn act(app: &App, req: &HttpRequest, id: &str, action: &str) -> HttpResponse {
    const ACTIONS: [&str; 5] = ["approve", "reject", "abort", "promote", "retry"];
    if !ACTIONS.contains(&action) {
        return HttpResponse::error(404, "unknown_action", format!("'{action}' is not one of: {}", ACTIONS.join(", ")), Some("action"));
    }
    let body = match action_body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let by = match actor(req, body.by.clone()) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (current, _) = match app.engine.store.load(id).await {
        Ok(Some(x)) => x,
        Ok(None) => return HttpResponse::error(404, "not_found", format!("no rollout with id '{id}'"), Some("id")),
        Err(e) => return store_error(&e),
    };
    let request = body.request_id.clone();
    let stage = body.step;
    let event = match action {
        "approve" => Event::Approved { by, stage, request },
        "reject" => Event::Rejected { by, reason: body.reason.clone(), stage, request },
        "abort" => Event::AbortRequested { by, reason: body.reason.clone(), request },
        "promote" => Event::PromoteRequested { by, full: body.full, stage, request },
        _ if current.phase.is_terminal() => return retry_as_new(app, &current, &by).await,
        _ => Event::RetryRequested { by, request },
    };
    match app.engine.apply(id, event).await {
        Ok(applied) => match applied.outcome {
            Outcome::Applied => HttpResponse::json(200, &summary(&applied.rollout, app.engine.clock.now())),
            Outcome::Ignored(reason) => {
                let mut r = HttpResponse::error(409, "not_applied", reason, None);
                let mut b = r.json_body();
                b["phase"] = json!(applied.rollout.phase);
                b["step"] = json!(applied.rollout.stage + 1);
                r.body = serde_json::to_vec_pretty(&b).unwrap_or_default();
                r
            }
        },
        Err(e) => engine_error(&e),
    }
}

/// `retry` on a finished rollout starts a new one from the same spec.
async fn retry_as_new(app: &App, old: &Rollout, by: &str) -> HttpResponse {
    match app.engine.create(old.spec.clone(), old.plan.clone(), by, None, Some(old)).await {
        Ok(r) => created(&r, app),
        Err(e) => engine_error(&e),
    }
}
