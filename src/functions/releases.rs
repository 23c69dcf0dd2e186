//! `releases` (HTTP, `POST releases/{id}/failure`): a stage of a release
//! pipeline failed — build, deploy, smoke test, or the rollout step itself —
//! and the team's backlog must hear of it once. `{id}` is the release's
//! rollout id, which the pipeline chooses (from its run id), so:
//!
//! - while that rollout runs, the report rolls it back (its one issue
//!   carries the failed stage and the log's end as evidence);
//! - once it has failed, the report is a comment on its issue;
//! - with no rollout yet (the build failed), or one that had finished well,
//!   the report opens the release's issue through the spec's backlog, keyed
//!   by the same id, or comments on the one an earlier report opened.
//!
//! Body: `{"stage", "runUrl"?, "log"?, "by"?, "spec"?}`; `spec` (the rollout
//! spec the pipeline would start) is needed only when no rollout exists.

use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{actor, summary};
use super::error::ApiError;
use super::{parse_json_body, typed, App, HttpRequest, HttpResponse, MAX_API_BODY};
use crate::domain::ids::{shown, Actor, RolloutId};
use crate::domain::rollout::{BacklogState, Event, Outcome, PipelineFailure, Rollout};
use crate::domain::spec;
use crate::ports::backlog;

/// Longest log accepted (only its end is kept).
const LOG_MAX: usize = 256 * 1024;

/// How long one tracker call may take.
const TRACKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a pipeline reports.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailureReport {
    stage: String,
    run_url: Option<String>,
    #[serde(default)]
    log: String,
    by: Option<crate::domain::ids::ActorName>,
    spec: Option<Value>,
    /// Sluice's key, when a client puts it in the body.
    #[allow(dead_code)]
    code: Option<String>,
}

/// Handles one request.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = req.params.get("id").map(|id| RolloutId::parse(id).map_err(|e| ApiError::invalid_value("id", &e))).transpose()?;
    let (Some(id), Some("failure")) = (id, req.params.get("action").map(String::as_str)) else {
        return Err(ApiError::new(404, "unknown_route", "report a failed pipeline stage with POST /api/releases/{id}/failure"));
    };
    if req.method != "POST" {
        return Err(ApiError::new(405, "method_not_allowed", "a failure is POSTed"));
    }
    let report: FailureReport = match parse_json_body(&req, MAX_API_BODY)? {
        v @ Value::Object(_) => typed(v)?,
        _ => return Err(ApiError::invalid_field("body", "must be a JSON object with at least \"stage\"")),
    };
    if report.log.len() > LOG_MAX {
        return Err(ApiError::invalid_field("log", format!("is over {LOG_MAX} bytes; pass the end of the log")));
    }
    let by = match actor(app, &req, report.by.clone(), false, crate::domain::access::Action::Steer).await {
        Ok(by) => by,
        Err(e) if e.code == "missing_identity" => Actor::parse("pipeline").map_err(|e| ApiError::invalid_value("by", &e))?,
        Err(e) => return Err(e),
    };
    let failure = PipelineFailure::new(&report.stage, by, report.run_url.as_deref(), &report.log)
        .map_err(|e| ApiError::invalid_field(&e.field, &e.message))?;
    match app.engine.store.load(&id).await? {
        Some((rollout, _)) if !rollout.phase.is_terminal() => roll_back(app, &id, failure).await,
        Some((rollout, _)) => after_the_rollout(app, &rollout, &failure).await,
        None => before_the_rollout(app, &id, report.spec, &failure).await,
    }
}

/// The rollout is running: the failure rolls it back, or joins its rollback.
async fn roll_back(app: &App, id: &RolloutId, failure: PipelineFailure) -> Result<HttpResponse, ApiError> {
    let applied = app.engine.apply(id, Event::ReleaseFailed { failure }).await?;
    let mut body = summary(&applied.rollout, app.engine.clock.now());
    body["action"] = json!(match applied.outcome {
        Outcome::Applied => "rollingBack",
        Outcome::Duplicate | Outcome::Refused(_) => "alreadyReported",
    });
    Ok(HttpResponse::json(202, &body))
}

/// The rollout has finished: a failed one has (or is opening) its issue; a
/// successful or aborted one has none, so the release gets its own.
async fn after_the_rollout(app: &App, rollout: &Rollout, failure: &PipelineFailure) -> Result<HttpResponse, ApiError> {
    match &rollout.backlog {
        BacklogState::Opened { issue, .. } => {
            let tracker = tracker(app, &rollout.spec)?;
            let comment = backlog::release_failure_comment(&rollout.id, failure);
            within(tracker.comment(issue, &comment)).await?;
            Ok(HttpResponse::json(200, &json!({"release": rollout.id, "action": "commented", "issue": issue})))
        }
        BacklogState::Opening { .. } => Err(ApiError::new(
            409,
            "issue_being_opened",
            format!("rollout {} failed and its issue is being opened; report again in a few seconds to comment on it", rollout.id),
        )
        .with("retryAfterSeconds", json!(5))),
        BacklogState::None => open_or_comment(app, &rollout.id, &rollout.spec, failure).await,
    }
}

/// No rollout yet: the spec says which backlog, and the issue is keyed by the release id.
async fn before_the_rollout(app: &App, id: &RolloutId, spec: Option<Value>, failure: &PipelineFailure) -> Result<HttpResponse, ApiError> {
    let Some(doc) = spec else {
        return Err(ApiError::invalid_field(
            "spec",
            format!("no rollout {} exists yet, so the report must carry the rollout spec (it names the backlog)", shown(id)),
        ));
    };
    let (spec, _) = crate::ports::registry::validate(&doc, &app.engine.env).map_err(|p| ApiError::invalid_spec(&p))?;
    open_or_comment(app, id, &spec, failure).await
}

async fn open_or_comment(app: &App, id: &RolloutId, spec: &spec::RolloutSpec, failure: &PipelineFailure) -> Result<HttpResponse, ApiError> {
    let tracker = tracker(app, spec)?;
    let draft = backlog::release_failure(id, &spec.target, failure, app.engine.clock.now());
    let filed = within(tracker.open(&draft)).await?;
    if !filed.created {
        within(tracker.comment(&filed.issue, &backlog::release_failure_comment(id, failure))).await?;
    }
    let action = if filed.created { "opened" } else { "commented" };
    Ok(HttpResponse::json(200, &json!({"release": id, "action": action, "issue": filed.issue, "target": spec.target.name})))
}

fn tracker(app: &App, spec: &spec::RolloutSpec) -> Result<std::sync::Arc<dyn backlog::Backlog>, ApiError> {
    let Some(b) = &spec.backlog else {
        return Err(ApiError::invalid_field("spec.backlog", "the spec names no backlog, so there is nowhere to report the failure"));
    };
    backlog::build(&b.provider, &b.settings, &app.engine.env).map_err(|e| ApiError::new(503, "backlog_unavailable", e.to_string()))
}

/// A tracker call, bounded: a pipeline waits on this answer.
async fn within<T>(call: impl std::future::Future<Output = Result<T, backlog::BacklogError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(TRACKER_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(ApiError::new(
            503,
            "backlog_unavailable",
            format!("the backlog did not answer within {}s; report again", TRACKER_TIMEOUT.as_secs()),
        )),
    }
}

fn unavailable(e: backlog::BacklogError) -> ApiError {
    ApiError::new(503, "backlog_unavailable", format!("{e}; report again"))
}
