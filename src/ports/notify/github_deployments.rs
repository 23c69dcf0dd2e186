//! GitHub deployments: the repository's environment page shows every
//! rollout and its outcome. The rollout's first message creates a
//! deployment of `ref` to the environment (found again by the rollout id
//! in its payload, so a repeated message never makes a second); each phase
//! change posts a status — `in_progress` with the dashboard link while it
//! runs, `success` at promotion, `failure` on rollback, `inactive` when a
//! person aborts it — and a success marks the deployment it replaced
//! `inactive`, which GitHub does by itself (`auto_inactive`) only for
//! non-production environments.
//!
//! Source: GitHub REST API, "Deployments" and "Deployment statuses"
//! (github/rest-api-description, `api.github.com.json`, version
//! 2022-11-28): `GET/POST /repos/{owner}/{repo}/deployments` (`ref`,
//! `environment`, `auto_merge`, `required_contexts`, `payload`,
//! `production_environment`; 201 with `id`), `GET/POST
//! /repos/{owner}/{repo}/deployments/{id}/statuses` (`state` one of error,
//! failure, inactive, in_progress, queued, pending, success; `description`
//! up to 140 characters; `log_url`; `auto_inactive`).
//!
//! Settings: `repository` (`owner/name`), `environment` (default: the
//! target's name), `ref` (the commit SHA, branch or tag deployed; default:
//! the canary version, which must then be a ref), `tokenSetting` (default
//! `GITHUB_TOKEN`; needs Deployments: read and write), `production`
//! (default true), `apiUrl` (GitHub Enterprise).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Notification, Notifier, NotifyError};
use crate::domain::bounded::clip;
use crate::domain::rollout::NotifyKind;
use crate::ports::backlog::call;
use crate::ports::env::{opt_str, AdapterEnv, AdapterError, Settings};
use crate::ports::github::GitHubRepo;

/// Longest status description GitHub takes.
const DESCRIPTION_MAX: usize = 140;
/// Earlier deployments looked at for the one a success replaces.
const REPLACED_SCAN: usize = 30;

/// One repository's deployments.
pub struct GitHubDeployments {
    repo: GitHubRepo,
    environment: Option<String>,
    git_ref: Option<String>,
    production: bool,
}

/// Builds the channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    Ok(Arc::new(GitHubDeployments {
        repo: GitHubRepo::from_settings("githubDeployments", settings, env)?,
        environment: opt_str(settings, "environment").map(str::to_string),
        git_ref: opt_str(settings, "ref").map(str::to_string),
        production: settings.get("production").and_then(Value::as_bool).unwrap_or(true),
    }))
}

/// The deployment status a phase change means.
fn state_of(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Started | NotifyKind::PhaseChanged | NotifyKind::ApprovalNeeded | NotifyKind::Paused | NotifyKind::Overridden => {
            "in_progress"
        }
        NotifyKind::RollingBack | NotifyKind::RolledBack => "failure",
        NotifyKind::Aborted => "inactive",
        NotifyKind::Succeeded => "success",
    }
}

fn failed(e: crate::ports::backlog::BacklogError) -> NotifyError {
    NotifyError::Failed(e.to_string())
}

impl GitHubDeployments {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.repo.request(method, path)
    }

    fn environment(&self, n: &Notification) -> String {
        self.environment.clone().unwrap_or_else(|| n.target.clone())
    }

    /// The rollout's deployment, created on first use.
    async fn deployment(&self, n: &Notification, environment: &str) -> Result<u64, NotifyError> {
        let git_ref = self.git_ref.clone().unwrap_or_else(|| n.canary_version.clone());
        let query = [("environment", environment), ("ref", git_ref.as_str()), ("per_page", "100")];
        let list = call(self.request(reqwest::Method::GET, "/deployments").query(&query), "GitHub", "listing deployments")
            .await
            .map_err(failed)?;
        let mine = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d.pointer("/payload/sluiceRollout").and_then(Value::as_str) == Some(&n.rollout_id));
        if let Some(id) = mine.and_then(|d| d.get("id")).and_then(Value::as_u64) {
            return Ok(id);
        }
        let body = json!({
            "ref": git_ref,
            "environment": environment,
            "description": clip(&format!("Sluice rollout {}: {} → {}", n.rollout_id, n.stable_version, n.canary_version), DESCRIPTION_MAX),
            "auto_merge": false,
            "required_contexts": [],
            "payload": {"sluiceRollout": n.rollout_id, "stable": n.stable_version, "canary": n.canary_version},
            "production_environment": self.production,
            "transient_environment": false,
        });
        let created = call(self.request(reqwest::Method::POST, "/deployments").json(&body), "GitHub", "creating the deployment")
            .await
            .map_err(failed)?;
        created.get("id").and_then(Value::as_u64).ok_or_else(|| NotifyError::Failed("GitHub's answer has no deployment id".into()))
    }

    async fn post_status(&self, deployment: u64, body: &Value) -> Result<(), NotifyError> {
        let path = format!("/deployments/{deployment}/statuses");
        call(self.request(reqwest::Method::POST, &path).json(body), "GitHub", "posting a deployment status").await.map_err(failed)?;
        Ok(())
    }

    /// Marks Sluice's earlier successful deployments of the environment inactive.
    async fn retire_replaced(&self, n: &Notification, environment: &str, current: u64) -> Result<(), NotifyError> {
        let per_page = REPLACED_SCAN.to_string();
        let query = [("environment", environment), ("per_page", per_page.as_str())];
        let list = call(self.request(reqwest::Method::GET, "/deployments").query(&query), "GitHub", "listing deployments")
            .await
            .map_err(failed)?;
        let earlier = list.as_array().into_iter().flatten().filter(|d| {
            d.get("id").and_then(Value::as_u64) != Some(current) && d.pointer("/payload/sluiceRollout").and_then(Value::as_str).is_some()
        });
        for d in earlier {
            let Some(id) = d.get("id").and_then(Value::as_u64) else { continue };
            let path = format!("/deployments/{id}/statuses");
            let statuses =
                call(self.request(reqwest::Method::GET, &path).query(&[("per_page", "1")]), "GitHub", "reading a deployment's status")
                    .await
                    .map_err(failed)?;
            if statuses.pointer("/0/state").and_then(Value::as_str) == Some("success") {
                let description = clip(&format!("replaced by {} (Sluice rollout {})", n.canary_version, n.rollout_id), DESCRIPTION_MAX);
                self.post_status(id, &json!({"state": "inactive", "description": description})).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Notifier for GitHubDeployments {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let environment = self.environment(n);
        let deployment = self.deployment(n, &environment).await?;
        let mut status = json!({"state": state_of(n.kind), "description": clip(&n.title, DESCRIPTION_MAX), "auto_inactive": false});
        if let Some((_, url)) = super::web_links(n).find(|(name, _)| name == "Timeline") {
            status["log_url"] = json!(url);
        }
        self.post_status(deployment, &status).await?;
        if n.kind == NotifyKind::Succeeded {
            self.retire_replaced(n, &environment, deployment).await?;
        }
        Ok(())
    }
}
