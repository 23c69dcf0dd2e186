//! Azure DevOps work items. The work item gets a tag naming its rollout, so
//! a lost mapping is found again with a WIQL query on that tag (WIQL reads
//! the work item store directly, with no search index to lag). Text fields
//! and comments are HTML; comments carry a marker so a retried one is not
//! posted twice.
//!
//! Settings: `organization`, `project`, `workItemType` (default `Bug`; its
//! text goes to Repro Steps, other types use Description), `areaPath`,
//! `tags`, `patSetting` (app setting with a PAT; default `AZURE_DEVOPS_PAT`
//! — without one, the Azure identity's Entra token is used), `orgUrl`
//! (default `https://dev.azure.com/{organization}`).
//!
//! `sluice doctor` asks Azure DevOps to create the work item with
//! `validateOnly=true` ("Work Items - Create", REST 7.1: validates the change
//! without saving the work item; scope `vso.work_write`), so the token, the
//! project, the type, the area path and the right to write are all checked
//! and nothing is written.

use crate::ports::reach::{SecretUse, Service};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{call, failure_tag, marker_tag, Backlog, BacklogError, CommentDraft, Filed, IssueDraft};
use crate::domain::rollout::IssueRef;
use crate::ports::azure::auth::AzureCredential;
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError, Settings};
use crate::ports::preflight::Check;

/// Entra ID resource of Azure DevOps.
const ADO_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const API: &str = "api-version=7.1";
const COMMENTS_API: &str = "api-version=7.1-preview.4";

enum Auth {
    Pat(String),
    Entra(Arc<AzureCredential>),
}

/// A project's work items.
pub struct AzureBoards {
    http: reqwest::Client,
    project_url: String,
    work_item_type: String,
    area_path: Option<String>,
    tags: Vec<String>,
    auth: Auth,
}

/// Builds the Azure DevOps backlog.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError> {
    // Where the PAT or token goes, and which PAT, before anything else is read.
    let given_url = match settings.get("orgUrl") {
        Some(_) => Some(env.endpoint("azureDevOps", settings, "orgUrl", Service::AzureDevOps)?),
        None => None,
    };
    let pat_setting = env
        .secret_name("azureDevOps", settings, "patSetting", Some("AZURE_DEVOPS_PAT"), SecretUse::AzureDevOps)?
        .ok_or_else(|| AdapterError::Config { provider: "azureDevOps".into(), message: "no PAT setting".into() })?;
    let organization = req_str("azureDevOps", settings, "organization")?;
    let project = req_str("azureDevOps", settings, "project")?;
    let org_url = given_url.unwrap_or_else(|| format!("https://dev.azure.com/{}", path_segment(organization)));
    let auth = match env.secret(&pat_setting) {
        Some(pat) => Auth::Pat(pat),
        None => Auth::Entra(env.azure_identity("azureDevOps").map_err(|_| AdapterError::Config {
            provider: "azureDevOps".into(),
            message: format!("app setting {pat_setting} (a PAT) is not set, and there is no Azure identity to use instead"),
        })?),
    };
    let tags = settings
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Arc::new(AzureBoards {
        http: env.http.clone(),
        project_url: format!("{}/{}", org_url.trim_end_matches('/'), path_segment(project)),
        work_item_type: opt_str(settings, "workItemType").unwrap_or("Bug").to_string(),
        area_path: opt_str(settings, "areaPath").map(str::to_string),
        tags,
        auth,
    }))
}

/// Percent-encodes a path segment (project names and work item types may hold spaces).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl AzureBoards {
    async fn request(&self, method: reqwest::Method, url: String) -> Result<reqwest::RequestBuilder, BacklogError> {
        let request = self.http.request(method, url).header("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")));
        Ok(match &self.auth {
            Auth::Pat(pat) => {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{pat}"));
                request.header("authorization", format!("Basic {basic}"))
            }
            Auth::Entra(credential) => {
                let token = credential.token(ADO_RESOURCE).await.map_err(|e| BacklogError::Failed(format!("Azure DevOps token: {e}")))?;
                request.bearer_auth(token)
            }
        })
    }

    fn issue_ref(&self, item: &Value) -> Option<IssueRef> {
        // The web address, built the same way whether the item was created or found.
        let id = item.get("id")?.as_u64()?;
        Some(IssueRef { id: id.to_string(), url: format!("{}/_workitems/edit/{id}", self.project_url) })
    }

    /// The first work item with `tag` that Sluice's own identity created:
    /// anyone who may edit work items can add a tag, so one on someone
    /// else's item proves nothing (`@Me`: "Use with identity fields to filter
    /// for items linked to your account (for example, `Created By=@Me`)",
    /// MicrosoftDocs azure-devops-docs, boards/queries/query-operators-variables.md).
    async fn with_tag(&self, tag: &str) -> Result<Option<IssueRef>, BacklogError> {
        let query = format!(
            "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project AND [System.Tags] CONTAINS '{}' \
             AND [System.CreatedBy] = @Me ORDER BY [System.Id]",
            tag.replace('\'', "''")
        );
        let request = self.request(reqwest::Method::POST, format!("{}/_apis/wit/wiql?{API}", self.project_url)).await?;
        let answer = call(request.json(&json!({ "query": query })), "Azure DevOps", "looking for the rollout's work item").await?;
        Ok(answer.pointer("/workItems/0").and_then(|w| self.issue_ref(w)))
    }

    /// Who created work item `id` (its `System.CreatedBy` identity id): Sluice,
    /// for an item it found with `@Me` or created, so its comments are Sluice's.
    async fn creator(&self, id: &str) -> Result<String, BacklogError> {
        let url = format!("{}/_apis/wit/workitems/{id}?fields=System.CreatedBy&{API}", self.project_url);
        let item = call(self.request(reqwest::Method::GET, url).await?, "Azure DevOps", "reading who created the work item").await?;
        item.pointer("/fields/System.CreatedBy/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| BacklogError::Failed("Azure DevOps' work item names no creator".into()))
    }

    /// The work item an earlier attempt (or the release's pipeline report)
    /// created for the rollout, and whether it tells the rollout's failure.
    async fn find(&self, rollout_id: &str) -> Result<Option<(IssueRef, bool)>, BacklogError> {
        let Some(found) = self.with_tag(&marker_tag(rollout_id)).await? else { return Ok(None) };
        let tells = self.with_tag(&failure_tag(rollout_id)).await?.is_some_and(|f| f.id == found.id);
        Ok(Some((found, tells)))
    }
}

#[async_trait]
impl Backlog for AzureBoards {
    async fn open(&self, draft: &IssueDraft) -> Result<Filed, BacklogError> {
        if let Some((issue, tells_failure)) = self.find(&draft.rollout_id).await? {
            return Ok(Filed { issue, created: false, tells_failure });
        }
        let text_field =
            if self.work_item_type.eq_ignore_ascii_case("bug") { "Microsoft.VSTS.TCM.ReproSteps" } else { "System.Description" };
        let mut tags: Vec<String> = draft.labels.clone();
        tags.extend(self.tags.iter().cloned());
        tags.push(marker_tag(&draft.rollout_id));
        if draft.rollout_failure {
            tags.push(failure_tag(&draft.rollout_id));
        }
        // Tags are separated by semicolons; one inside a tag would split it.
        let tags = tags.iter().map(|t| t.replace(';', ",")).collect::<Vec<_>>().join("; ");
        let mut patch = vec![
            json!({"op": "add", "path": "/fields/System.Title", "value": draft.title}),
            json!({"op": "add", "path": format!("/fields/{text_field}"), "value": draft.body.html()}),
            json!({"op": "add", "path": "/fields/System.Tags", "value": tags}),
        ];
        if let Some(area) = &self.area_path {
            patch.push(json!({"op": "add", "path": "/fields/System.AreaPath", "value": area}));
        }
        let url = format!("{}/_apis/wit/workitems/${}?{API}", self.project_url, path_segment(&self.work_item_type));
        let request = self.request(reqwest::Method::POST, url).await?;
        let body = serde_json::to_vec(&patch).map_err(|e| BacklogError::Failed(e.to_string()))?;
        let created =
            call(request.header("content-type", "application/json-patch+json").body(body), "Azure DevOps", "creating the work item")
                .await?;
        let issue = self.issue_ref(&created).ok_or_else(|| BacklogError::Failed("Azure DevOps' answer has no work item id".into()))?;
        Ok(Filed { issue, created: true, tells_failure: draft.rollout_failure })
    }

    async fn preflight(&self) -> Vec<Check> {
        let mut patch = vec![json!({"op": "add", "path": "/fields/System.Title", "value": "sluice doctor: validation only, never saved"})];
        if let Some(area) = &self.area_path {
            patch.push(json!({"op": "add", "path": "/fields/System.AreaPath", "value": area}));
        }
        let url = format!("{}/_apis/wit/workitems/${}?validateOnly=true&{API}", self.project_url, path_segment(&self.work_item_type));
        let request = match self.request(reqwest::Method::POST, url).await {
            Ok(r) => r.header("content-type", "application/json-patch+json").body(serde_json::to_vec(&patch).unwrap_or_default()),
            Err(e) => return vec![Check::blocker("backlog", "token", e.to_string())],
        };
        let name = format!("create a {} (validate only)", self.work_item_type);
        match call(request, "Azure DevOps", "validating a work item").await {
            Ok(_) => vec![Check::ok("backlog", name, "the token may create work items of this type in this project")],
            Err(BacklogError::Failed(why)) => vec![Check::blocker("backlog", name, why)],
        }
    }

    async fn comment(&self, issue: &IssueRef, comment: &CommentDraft) -> Result<(), BacklogError> {
        if issue.id.is_empty() || !issue.id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BacklogError::Failed(format!("'{}' is not a work item id", issue.id)));
        }
        let url = format!("{}/_apis/wit/workItems/{}/comments?{COMMENTS_API}", self.project_url, issue.id);
        let existing =
            call(self.request(reqwest::Method::GET, url.clone()).await?, "Azure DevOps", "reading the work item's comments").await?;
        let comments = existing.get("comments").and_then(Value::as_array).cloned().unwrap_or_default();
        let marked: Vec<&Value> =
            comments.iter().filter(|c| c.get("text").and_then(Value::as_str).is_some_and(|t| t.contains(&comment.marker))).collect();
        // A marker counts only in Sluice's own comment: anyone may comment.
        if !marked.is_empty() {
            let ours = self.creator(&issue.id).await?;
            if marked.iter().any(|c| c.pointer("/createdBy/id").and_then(Value::as_str) == Some(ours.as_str())) {
                return Ok(());
            }
        }
        let request = self.request(reqwest::Method::POST, url).await?;
        call(request.json(&json!({"text": comment.body.html()})), "Azure DevOps", "commenting on the work item").await?;
        Ok(())
    }
}
