//! `pipelines` (HTTP, `POST pipelines/azure?rollout=ID`): an Azure Pipelines
//! agentless job waits on a rollout without holding an agent. Its
//! `AzureFunction@1` task (`waitForCompletion: 'true'`) sends its plan's
//! headers here; Sluice keeps them and answers the task with
//! `TaskCompleted` when the rollout ends — `succeeded` when it succeeded,
//! `failed` when it rolled back or was aborted (see
//! [`crate::domain::pipeline_wait`] for the contract and its sources).
//! The job's token is kept only to answer, sent only to an Azure DevOps
//! address the deployment allows, and never shown.

use std::time::Duration;

use serde_json::json;

use super::error::ApiError;
use super::{parse_json_body, App, HttpRequest, HttpResponse, MAX_API_BODY};
use crate::domain::ids::{shown, RolloutId};
use crate::domain::pipeline_wait::{PipelineWait, TaskResult};
use crate::ports::reach::Service;

/// Tasks one rollout may have waiting (a re-run's task replaces nothing, so leave room).
pub const MAX_WAITS_PER_ROLLOUT: usize = 20;
/// How long after answering its request an already finished rollout
/// answers the task (the task starts waiting once its request returns).
const ANSWER_AFTER: Duration = Duration::from_secs(2);

/// Takes a waiting task.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method != "POST" {
        return Err(ApiError::new(405, "method_not_allowed", "an agentless task registers with POST"));
    }
    let id = rollout_asked(&req)?;
    // The task declares JSON; what it sends as the body is not used.
    parse_json_body(&req, MAX_API_BODY)?;
    let wait = PipelineWait::from_headers(id.clone(), |name| req.header(name), app.engine.clock.now())
        .map_err(|e| ApiError::invalid_field(e.header, e.message))?;
    app.engine.env.reach.check_endpoint(Service::AzureDevOps, &wait.plan_url).map_err(|why| {
        ApiError::new(403, "forbidden", format!("PlanUrl: Sluice sends the job's token only to Azure DevOps: {why}")).field("PlanUrl")
    })?;
    if app.engine.store.load(&id).await?.is_none() {
        return Err(ApiError::no_rollout(&id));
    }
    let waiting = app.engine.store.pipeline_waits(Some(&id), MAX_WAITS_PER_ROLLOUT + 1).await?;
    if waiting.len() >= MAX_WAITS_PER_ROLLOUT && !waiting.iter().any(|w| w.task_instance_id == wait.task_instance_id) {
        return Err(ApiError::new(429, "too_many_waits", format!("{MAX_WAITS_PER_ROLLOUT} pipeline tasks already wait on rollout {id}")));
    }
    app.engine.store.save_pipeline_wait(&wait).await?;
    // Read after keeping the task: a rollout ending meanwhile either sees the task or is seen here.
    let Some((rollout, _)) = app.engine.store.load(&id).await? else {
        return Err(ApiError::no_rollout(&id));
    };
    let (finished, phase) = (TaskResult::of(rollout.phase).is_some(), rollout.phase);
    if finished {
        let engine = app.engine.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ANSWER_AFTER).await;
            engine.answer_pipeline_waits(&rollout).await;
        });
    }
    let body = json!({
        "rollout": id,
        "phase": phase,
        "taskInstanceId": wait.task_instance_id.to_string(),
        "answered": if finished { "now" } else { "when the rollout ends" },
    });
    Ok(HttpResponse::json(200, &body))
}

/// The `rollout` query parameter (Sluice's key may ride as `code`).
fn rollout_asked(req: &HttpRequest) -> Result<RolloutId, ApiError> {
    for key in req.query.keys() {
        if key != "rollout" && key != "code" {
            return Err(ApiError::invalid_field(&shown(key), "unknown query parameter (rollout)"));
        }
    }
    let raw = req.query.get("rollout").ok_or_else(|| ApiError::invalid_field("rollout", "missing: ?rollout=ID"))?;
    RolloutId::parse(raw).map_err(|e| ApiError::invalid_value("rollout", &e))
}
