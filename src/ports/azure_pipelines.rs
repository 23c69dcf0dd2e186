//! Azure Pipelines' plan events: how Sluice answers an agentless task that
//! waits on a rollout (the contract and its sources are in
//! [`crate::domain::pipeline_wait`]). One call, `TaskCompleted`, sent only
//! to an Azure DevOps address the deployment allows — the job's token goes
//! nowhere else — with the shared client's timeouts and no redirects.

use std::time::Duration;

use crate::domain::pipeline_wait::{PipelineWait, TaskResult};
use crate::ports::env::AdapterEnv;
use crate::ports::reach::Service;

/// The longest Sluice waits for Azure DevOps to take the event.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a task was not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    /// It never will be: the address is not allowed, or Azure DevOps refused
    /// the event (the job ended, was cancelled, or its token expired).
    #[error("the pipeline task cannot be answered: {0}")]
    Refused(String),
    /// Azure DevOps could not be reached or was busy; worth trying again.
    #[error("Azure DevOps is unavailable: {0}")]
    Unavailable(String),
}

/// Posts `TaskCompleted` with the rollout's result to the task's plan.
pub async fn complete_task(env: &AdapterEnv, wait: &PipelineWait, result: TaskResult) -> Result<(), CompleteError> {
    env.reach.check_endpoint(Service::AzureDevOps, &wait.plan_url).map_err(CompleteError::Refused)?;
    let response = env
        .http
        .post(wait.events_url())
        .timeout(CALL_TIMEOUT)
        .bearer_auth(wait.auth_token.expose())
        .json(&wait.completion(result))
        .send()
        .await
        // reqwest's error names the URL, never the header.
        .map_err(|e| CompleteError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(CompleteError::Unavailable(format!("HTTP {status}"))),
        _ => Err(CompleteError::Refused(format!("HTTP {status}"))),
    }
}
