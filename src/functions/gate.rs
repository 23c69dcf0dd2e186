//! `gate` (HTTP, `GET gate?target=NAME` or `POST gate` with `{"target"}` or
//! `{"spec"}`): may a release to this target begin now? A pipeline asks it
//! before a stage — an Azure Pipelines "Invoke REST API" check (success
//! criteria `eq(root['ready'], true)`), or a step calling `sluice gate` —
//! and gets 200 with `ready` and every reason it is not:
//!
//! - `rolloutActive`: a rollout of this target is still running;
//! - `rollbackOpen`: one is rolling back, or rolled back and its check
//!   showed canary traffic still flowing;
//! - `errorBudget`: the spec's `policy.errorBudget` (the posted spec's, or
//!   else the newest rollout's of this target) is below its minimum, or
//!   could not be measured (never a silent pass);
//! - `windowClosed`: the same spec's `policy.windows` or the deployment's
//!   shared ones (`SLUICE_WINDOWS`) hold a start now; `window` says when
//!   they open.
//!
//! It reads and measures; it changes nothing.

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{parse_json_body, typed, App, HttpRequest, HttpResponse, MAX_API_BODY};
use crate::domain::ids::shown;
use crate::domain::rollout::{judge, Phase, Plan, Rollout, Verdict};
use crate::domain::spec::{self, RolloutSpec};
use crate::domain::window::{closed_until, Closed, Windows};
use crate::ports::metrics;
use crate::ports::store::ListFilter;

/// `POST gate`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateRequest {
    target: Option<String>,
    spec: Option<Value>,
    /// Sluice's key, when a client puts it in the body.
    #[allow(dead_code)]
    code: Option<String>,
}

/// One reason a release may not begin.
fn reason(code: &str, message: String) -> Value {
    json!({"code": code, "message": message})
}

/// Handles one request.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    // A posted spec is checked against its peers with Sluice's identity: an operator's call.
    let needs = if req.method == "POST" { crate::domain::access::Action::Start } else { crate::domain::access::Action::Read };
    super::access::caller(app, &req, needs).await?;
    let (target, posted) = asked(app, &req)?;
    let newest = app.engine.store.list(&ListFilter { target: Some(target.clone()), limit: 1, ..ListFilter::default() }).await?;
    let newest = newest.into_iter().next();
    let mut reasons = Vec::new();
    if let Some(id) = app.engine.store.active_for_target(&target).await? {
        match app.engine.store.load(&crate::domain::ids::RolloutId::parse(&id).map_err(|e| ApiError::invalid_value("id", &e))?).await? {
            Some((r, _)) if r.phase == Phase::RollingBack => {
                reasons.push(reason("rollbackOpen", format!("rollout {id} is rolling back: traffic is not yet confirmed on stable")))
            }
            _ => reasons.push(reason("rolloutActive", format!("rollout {id} of {target} is still running"))),
        }
    }
    if let Some(r) = newest.as_ref().filter(|r| r.phase == Phase::RolledBack && failed_its_check(r)) {
        reasons.push(reason(
            "rollbackOpen",
            format!("rollout {} rolled back, but its check still saw canary traffic: look before releasing again", r.id),
        ));
    }
    let budget_spec = posted.as_ref().or(newest.as_ref().map(|r| &r.spec));
    if let Some((spec, Ok(plan))) = budget_spec.map(|s| (s, Plan::compile(s))) {
        reasons.extend(error_budget(app, spec, &plan).await);
    }
    let window = window(app, budget_spec);
    if let Some(closed) = window.as_ref().and_then(|w| w.as_ref()) {
        reasons.push(reason("windowClosed", format!("{}; the deployment window opens {}", closed.why, closed.opens_local)));
    }
    let body = json!({
        "target": target,
        "ready": reasons.is_empty(),
        "window": window.map(|w| match w {
            None => json!({"open": true}),
            Some(c) => json!({"open": false, "opensAt": c.opens_at, "opensLocal": c.opens_local, "why": c.why}),
        }),
        "reasons": reasons,
        "newestRollout": newest.as_ref().map(|r| json!({"id": r.id, "phase": r.phase, "canary": r.spec.target.canary.version})),
        "checkedAt": app.engine.clock.now(),
    });
    Ok(HttpResponse::json(200, &body))
}

/// The target asked about, and the spec if one was posted.
fn asked(app: &App, req: &HttpRequest) -> Result<(String, Option<RolloutSpec>), ApiError> {
    let checked = |name: &str| spec::check_name(name).map(|()| name.to_string()).map_err(|e| ApiError::invalid_field("target", e));
    match req.method.as_str() {
        "GET" => {
            for key in req.query.keys() {
                if key != "target" && key != "code" {
                    return Err(ApiError::invalid_field(&shown(key), "unknown query parameter"));
                }
            }
            let target = req.query.get("target").ok_or_else(|| ApiError::invalid_field("target", "is required (?target=NAME)"))?;
            Ok((checked(target)?, None))
        }
        "POST" => {
            let body: GateRequest = match parse_json_body(req, MAX_API_BODY)? {
                v @ Value::Object(_) => typed(v)?,
                _ => return Err(ApiError::invalid_field("body", "must be {\"target\": NAME} or {\"spec\": SPEC}")),
            };
            match (body.target, body.spec) {
                (_, Some(doc)) => {
                    let (spec, _) = crate::ports::registry::validate(&doc, &app.engine.env).map_err(|p| ApiError::invalid_spec(&p))?;
                    Ok((spec.target.name.to_string(), Some(spec)))
                }
                (Some(target), None) => Ok((checked(&target)?, None)),
                (None, None) => Err(ApiError::invalid_field("target", "name the target, or post the spec")),
            }
        }
        other => Err(ApiError::new(405, "method_not_allowed", format!("{} is not supported here", shown(other)))),
    }
}

/// The deployment windows a start would keep (the spec's and the shared
/// ones), and whether they are closed now; `None` when there are none.
fn window(app: &App, spec: Option<&RolloutSpec>) -> Option<Option<Closed>> {
    let policies: Vec<Windows> =
        spec.and_then(|s| s.policy.windows.clone()).into_iter().chain(app.engine.shared_windows().cloned()).collect();
    (!policies.is_empty()).then(|| closed_until(&policies, app.engine.clock.now()))
}

fn failed_its_check(r: &Rollout) -> bool {
    r.failure.as_ref().is_some_and(|f| f.verified == Some(false))
}

/// Measures the spec's error budget once, as the rollout's own gate would.
async fn error_budget(app: &App, spec: &RolloutSpec, plan: &Plan) -> Option<Value> {
    let budget = plan.error_budget.as_ref()?;
    let window = metrics::Window { ms: budget.interval_ms, end: None };
    let outcome = metrics::measure(budget, &spec.target, &app.engine.env, window).await;
    let record = judge(budget, &outcome, 0, app.engine.clock.now());
    match record.verdict {
        Verdict::Pass => None,
        Verdict::Fail => Some(reason("errorBudget", format!("the error budget is below its minimum: {}", record.note))),
        _ => Some(reason("errorBudget", format!("the error budget could not be measured, so it is not a pass: {}", record.note))),
    }
}
