//! `waves` (HTTP, `waves/{id?}/{action?}`): releases — one version across
//! ordered waves. `POST waves` starts one from a release spec (or
//! `{"spec", "by", "id"}`), `GET waves` lists them, `GET waves/{id}` shows
//! one as its waves with their rollouts and its history, and
//! `POST waves/{id}/approve|reject|abort` are people's actions on it.

use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{actor, check_reason, object_body, start_request};
use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};
use crate::domain::access::Action;
use crate::domain::ids::{shown, RolloutId};
use crate::domain::release::{self, Release, ReleaseEvent};
use crate::domain::rollout::{Outcome, Refusal, RefusalKind};

/// Releases a list shows.
const LIST_LIMIT: usize = 100;

/// Handles one request.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = req.params.get("id").map(|id| RolloutId::parse(id).map_err(|e| ApiError::invalid_value("id", &e))).transpose()?;
    let action = req.params.get("action").cloned();
    if req.method == "GET" {
        super::access::caller(app, &req, Action::Read).await?;
    }
    match (req.method.as_str(), id, action) {
        ("GET", None, None) => list(app).await,
        ("POST", None, None) => start(app, &req).await,
        ("GET", Some(id), None) => status(app, &id).await,
        ("POST", Some(id), Some(action)) => act(app, &req, &id, &action).await,
        ("POST", Some(_), None) => {
            Err(ApiError::new(405, "method_not_allowed", "POST a release's action: /waves/{id}/approve|reject|abort"))
        }
        ("GET", Some(_), Some(_)) => Err(ApiError::new(405, "method_not_allowed", "actions are POSTed")),
        (m, _, _) => Err(ApiError::new(405, "method_not_allowed", format!("{} is not supported here", shown(m)))),
    }
}

/// A release as its waves, each with its targets' rollouts.
pub fn view(r: &Release) -> Value {
    let waves: Vec<Value> = r
        .spec
        .waves
        .iter()
        .zip(&r.runs)
        .enumerate()
        .map(|(w, (wave, runs))| {
            let state = if w < r.wave || (w == r.wave && r.phase != release::ReleasePhase::Running) {
                if runs.iter().all(|t| t.phase == Some(crate::domain::rollout::Phase::Succeeded)) {
                    "promoted"
                } else {
                    "stopped"
                }
            } else if w == r.wave {
                "running"
            } else {
                "waiting"
            };
            json!({
                "name": wave.name,
                "state": state,
                "bake": wave.bake.as_ref().map(|b| b.to_string()),
                "approval": wave.approval.as_ref().map(|g| g.min_approvers),
                "targets": runs,
            })
        })
        .collect();
    json!({
        "id": r.id,
        "kind": "release",
        "name": r.spec.name,
        "version": r.spec.version,
        "phase": r.phase,
        "wave": r.wave + 1,
        "waveName": r.spec.waves.get(r.wave).map(|w| w.name.clone()),
        "waves": waves,
        "approvals": r.approvals.iter().map(|a| json!({"by": a.by.as_str(), "at": a.at})).collect::<Vec<_>>(),
        "onFailure": r.spec.on_failure,
        "failure": r.failure,
        "backlog": r.backlog,
        "createdAt": r.created_at,
        "createdBy": r.created_by.as_str(),
        "updatedAt": r.updated_at,
        "settled": r.settled(),
    })
}

async fn list(app: &App) -> Result<HttpResponse, ApiError> {
    let releases = app.engine.store.list_releases(LIST_LIMIT).await?;
    Ok(HttpResponse::json(200, &json!({"releases": releases.iter().map(view).collect::<Vec<_>>()})))
}

fn no_release(id: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no release with id '{}'", shown(id))).field("id")
}

async fn status(app: &App, id: &RolloutId) -> Result<HttpResponse, ApiError> {
    let (r, _) = app.engine.store.load_release(id).await?.ok_or_else(|| no_release(id))?;
    let mut body = view(&r);
    live_targets(app, &r, &mut body).await?;
    body["history"] = json!(app.engine.store.release_history(id).await?);
    Ok(HttpResponse::json(200, &body))
}

/// Each started target as its rollout stands now (the release's own copy
/// is as of its last look), with the weight and the step it is on.
async fn live_targets(app: &App, r: &Release, body: &mut Value) -> Result<(), ApiError> {
    for (w, runs) in r.runs.iter().enumerate().take(r.wave + 1) {
        for (t, run) in runs.iter().enumerate() {
            if let Some((rollout, _)) = app.engine.store.load(&run.rollout).await? {
                let shown = &mut body["waves"][w]["targets"][t];
                shown["phase"] = json!(rollout.phase);
                shown["weight"] = json!(rollout.traffic.weight);
                shown["step"] = json!(rollout.current_stage().map(|s| s.describe()));
            }
        }
    }
    Ok(())
}

/// `POST waves`: the release spec itself, or `{"spec", "by", "id"}`.
async fn start(app: &App, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let request = start_request(req, "a release spec")?;
    let by = actor(app, req, request.by, false, Action::Start).await?;
    let (spec, _) = crate::ports::registry::validate_release(&request.spec, &app.engine.env).map_err(|p| ApiError::invalid_spec(&p))?;
    let existed = match &request.id {
        Some(id) => app.engine.store.load_release(id).await?.is_some(),
        None => false,
    };
    let r = app.engine.create_release(spec, &by, request.id).await?;
    let mut resp = HttpResponse::json(if existed { 200 } else { 201 }, &view(&r));
    resp.headers.push(("location".into(), format!("/api/waves/{}", r.id)));
    Ok(resp)
}

/// The body of an action; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActionBody {
    by: Option<crate::domain::ids::ActorName>,
    #[serde(default)]
    reason: String,
    /// Sluice's key, when a client puts it in the body.
    #[allow(dead_code)]
    code: Option<String>,
}

const ACTIONS: [&str; 3] = ["approve", "reject", "abort"];

async fn act(app: &App, req: &HttpRequest, id: &RolloutId, action: &str) -> Result<HttpResponse, ApiError> {
    if !ACTIONS.contains(&action) {
        return Err(
            ApiError::new(404, "unknown_action", format!("'{}' is not one of: {}", shown(action), ACTIONS.join(", "))).field("action")
        );
    }
    let body: ActionBody = object_body(req)?;
    check_reason(&body.reason)?;
    let by =
        actor(app, req, body.by, true, if action == "approve" || action == "reject" { Action::Approve } else { Action::Steer }).await?;
    if app.engine.store.load_release(id).await?.is_none() {
        return Err(no_release(id));
    }
    let event = match action {
        "approve" => ReleaseEvent::Approved { by },
        "reject" => ReleaseEvent::Rejected { by, reason: body.reason },
        _ => ReleaseEvent::AbortRequested { by, reason: body.reason },
    };
    let applied = app.engine.advance_release(id, Some(event)).await?;
    match applied.outcome {
        Outcome::Refused(Refusal { kind, reason }) => {
            let e = match kind {
                RefusalKind::Forbidden => ApiError::forbidden(reason),
                RefusalKind::Conflict => ApiError::new(409, "not_applied", reason),
            };
            Err(e.with("phase", json!(applied.release.phase)))
        }
        _ => Ok(HttpResponse::json(200, &view(&applied.release))),
    }
}
