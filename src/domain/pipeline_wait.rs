//! An Azure Pipelines agentless task waiting on a rollout: parsed once from
//! the headers the task sends, stored until the rollout ends, then answered
//! with the `TaskCompleted` event its plan expects.
//!
//! The contract, from Microsoft's task reference for `AzureFunction@1`/`@2`
//! (MicrosoftDocs/azure-devops-yaml-schema, `task-reference/azure-function-v1.md`):
//! the task's default `headers` are `PlanUrl` (`$(system.CollectionUri)`),
//! `ProjectId`, `HubName` (`$(system.HostType)`), `PlanId`, `JobId`,
//! `TimelineId`, `TaskInstanceId` and `AuthToken` (`$(system.AccessToken)`);
//! with `waitForCompletion: 'true'` (Callback) the function signals the end
//! by POSTing `{"name": "TaskCompleted", "taskId": TaskInstanceId, "jobId":
//! JobId, "result": "succeeded"}` to
//! `{planUri}/{projectId}/_apis/distributedtask/hubs/{hubName}/plans/{planId}/events`,
//! the token as a bearer. The REST reference ("Events - Post Event",
//! learn.microsoft.com/rest/api/azure/devops/distributedtask/events/post-event)
//! gives the same route and body at `api-version=7.1`; `result` is a
//! `TaskResult` (`succeeded`, `failed`, …).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::ids::{shown, RolloutId};
use crate::domain::rollout::Phase;

/// The Post Event API version Sluice speaks (GA since Azure DevOps Server 2022.1).
pub const EVENTS_API_VERSION: &str = "7.1";

/// The headers the task sends, as it names them (their case does not matter on the wire).
pub const HEADERS: [&str; 7] = ["PlanUrl", "ProjectId", "HubName", "PlanId", "JobId", "TaskInstanceId", "AuthToken"];

/// Longest job token accepted (a JWT of a few kilobytes in practice).
const MAX_TOKEN: usize = 16 * 1024;

/// The job's access token: kept to answer the task, never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobToken(String);

impl JobToken {
    /// The token, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JobToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobToken([redacted])")
    }
}

/// A pipeline task waiting for a rollout to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineWait {
    /// The rollout it waits on.
    pub rollout: RolloutId,
    /// The collection URL (`https://dev.azure.com/{organization}/`).
    pub plan_url: String,
    /// The project (scope) GUID.
    pub project_id: Uuid,
    /// The plan's hub: `build` for a YAML pipeline, `release` for a classic release.
    pub hub_name: String,
    /// The plan.
    pub plan_id: Uuid,
    /// The agentless job.
    pub job_id: Uuid,
    /// The task instance: what `TaskCompleted` names.
    pub task_instance_id: Uuid,
    /// The job's token.
    pub auth_token: JobToken,
    /// When Sluice took it.
    pub registered_at: DateTime<Utc>,
}

/// A header that is missing or wrong, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{header}: {message}")]
pub struct WaitError {
    /// The header, as the task names it.
    pub header: &'static str,
    /// What is wrong (never the value of `AuthToken`).
    pub message: String,
}

/// What the task's step becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskResult {
    /// The rollout succeeded.
    Succeeded,
    /// It rolled back, or a person aborted it: the release did not ship.
    Failed,
}

impl TaskResult {
    /// The result a finished rollout gives its waiting tasks (`None` while it runs).
    pub fn of(phase: Phase) -> Option<TaskResult> {
        match phase {
            Phase::Succeeded => Some(TaskResult::Succeeded),
            Phase::RolledBack | Phase::Aborted => Some(TaskResult::Failed),
            _ => None,
        }
    }

    /// The `TaskResult` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskResult::Succeeded => "succeeded",
            TaskResult::Failed => "failed",
        }
    }
}

impl PipelineWait {
    /// Parses the task's headers (`header` looks one up by name, any case).
    /// Only the URL's shape is checked here; where it may point is the
    /// deployment's rule ([`crate::ports::reach`]).
    pub fn from_headers<'a>(
        rollout: RolloutId,
        header: impl Fn(&str) -> Option<&'a str>,
        now: DateTime<Utc>,
    ) -> Result<PipelineWait, WaitError> {
        let required = |name: &'static str| -> Result<&'a str, WaitError> {
            match header(name).map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(WaitError {
                    header: name,
                    message: "missing: send the task's default headers (AzureFunction@1, waitForCompletion: 'true')".into(),
                }),
            }
        };
        let guid = |name: &'static str| -> Result<Uuid, WaitError> {
            let raw = required(name)?;
            Uuid::parse_str(raw).map_err(|_| WaitError { header: name, message: format!("'{}' is not a GUID", shown(raw)) })
        };
        let plan_url = plan_url(required("PlanUrl")?)?;
        let hub_name = required("HubName")?;
        if !(1..=32).contains(&hub_name.len()) || !hub_name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(WaitError { header: "HubName", message: format!("'{}' is not a hub name like build or release", shown(hub_name)) });
        }
        let token = required("AuthToken")?;
        if token.len() > MAX_TOKEN || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(WaitError { header: "AuthToken", message: format!("not a token (printable ASCII, at most {MAX_TOKEN} bytes)") });
        }
        Ok(PipelineWait {
            rollout,
            plan_url,
            project_id: guid("ProjectId")?,
            hub_name: hub_name.to_ascii_lowercase(),
            plan_id: guid("PlanId")?,
            job_id: guid("JobId")?,
            task_instance_id: guid("TaskInstanceId")?,
            auth_token: JobToken(token.to_string()),
            registered_at: now,
        })
    }

    /// Where `TaskCompleted` goes.
    pub fn events_url(&self) -> String {
        format!(
            "{}/{}/_apis/distributedtask/hubs/{}/plans/{}/events?api-version={EVENTS_API_VERSION}",
            self.plan_url.trim_end_matches('/'),
            self.project_id,
            self.hub_name,
            self.plan_id
        )
    }

    /// The event that ends the task.
    pub fn completion(&self, result: TaskResult) -> serde_json::Value {
        serde_json::json!({
            "name": "TaskCompleted",
            "taskId": self.task_instance_id.to_string(),
            "jobId": self.job_id.to_string(),
            "result": result.as_str(),
        })
    }
}

/// The collection URL: absolute, HTTP(S), no credentials, query or fragment.
fn plan_url(raw: &str) -> Result<String, WaitError> {
    let bad = |message: String| WaitError { header: "PlanUrl", message };
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("'{}' is not a URL: {e}", shown(raw))))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(bad(format!("'{}' is not an https URL", shown(raw))));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a collection URL has no user, query or fragment".into()));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PROJECT: &str = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c";
    const PLAN: &str = "0f4e5b0c-1c3e-4a6a-9d43-4c9e2b8f3a11";
    const JOB: &str = "3a7e60dc-c5b0-5009-86eb-0f217c12e2ea";
    const TASK: &str = "61153303-347e-5f06-a6a1-ce2102bd68eb";

    /// The headers as the task's default sends them, lower-cased as the hosts hand them over.
    fn headers() -> BTreeMap<String, String> {
        [
            ("planurl", "https://dev.azure.com/contoso/"),
            ("projectid", PROJECT),
            ("hubname", "build"),
            ("planid", PLAN),
            ("jobid", JOB),
            ("timelineid", PLAN),
            ("taskinstanceid", TASK),
            ("authtoken", "eyJ0eXAiOiJKV1Qi.job.token"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn parse(h: &BTreeMap<String, String>) -> Result<PipelineWait, WaitError> {
        let rollout = RolloutId::parse("ado-42").expect("id");
        PipelineWait::from_headers(rollout, |name| h.get(&name.to_ascii_lowercase()).map(String::as_str), Utc::now())
    }

    #[test]
    fn the_default_headers_give_the_event_url_and_body_the_docs_show() {
        let wait = parse(&headers()).expect("valid");
        assert_eq!(
            wait.events_url(),
            format!("https://dev.azure.com/contoso/{PROJECT}/_apis/distributedtask/hubs/build/plans/{PLAN}/events?api-version=7.1")
        );
        let body = wait.completion(TaskResult::Succeeded);
        assert_eq!(body, serde_json::json!({"name": "TaskCompleted", "taskId": TASK, "jobId": JOB, "result": "succeeded"}));
        assert_eq!(wait.completion(TaskResult::Failed)["result"], "failed");
    }

    #[test]
    fn each_bad_header_is_named_and_the_token_never_shown() {
        for (name, value, header) in [
            ("planurl", "javascript:alert(1)", "PlanUrl"),
            ("planurl", "https://user:pw@dev.azure.com/x", "PlanUrl"),
            ("planurl", "https://dev.azure.com/x?y=1", "PlanUrl"),
            ("projectid", "not-a-guid", "ProjectId"),
            ("hubname", "../../x", "HubName"),
            ("planid", "", "PlanId"),
            ("jobid", "1", "JobId"),
            ("taskinstanceid", "{}", "TaskInstanceId"),
            ("authtoken", "two words", "AuthToken"),
        ] {
            let mut h = headers();
            h.insert(name.into(), value.into());
            let err = parse(&h).expect_err(value);
            assert_eq!(err.header, header, "{value}: {err}");
        }
        let mut h = headers();
        h.remove("authtoken");
        assert_eq!(parse(&h).expect_err("missing").header, "AuthToken");
        let wait = parse(&headers()).expect("valid");
        assert!(!format!("{wait:?}").contains("job.token"), "Debug never shows the token");
    }

    #[test]
    fn only_a_finished_rollout_answers_and_only_success_succeeds() {
        assert_eq!(TaskResult::of(Phase::Succeeded), Some(TaskResult::Succeeded));
        assert_eq!(TaskResult::of(Phase::RolledBack), Some(TaskResult::Failed));
        assert_eq!(TaskResult::of(Phase::Aborted), Some(TaskResult::Failed));
        for phase in Phase::ALL.into_iter().filter(|p| !p.is_terminal()) {
            assert_eq!(TaskResult::of(phase), None, "{phase:?}");
        }
    }
}
