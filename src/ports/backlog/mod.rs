//! The backlog port: open (or find) the one issue a failed rollout gets, and
//! add later news to it as comments. [`draft`] and [`update`] write what a
//! responder needs to act — service, versions, where it failed, the cause
//! with its numbers, the timeline and what Sluice did — the same for every
//! tracker; adapters only deliver it.

pub mod azure_devops;
pub mod doc;
mod draft;
pub mod github;
pub mod local;
mod release_draft;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::rollout::IssueRef;
use crate::ports::env::{lookup, AdapterEnv, AdapterError, Settings};
use crate::ports::preflight::Check;
use doc::Doc;
pub use draft::{draft, release_failure, release_failure_comment, update};
pub use release_draft::release_halted;

/// An issue ready to file.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueDraft {
    /// The rollout it is about (the de-duplication key).
    pub rollout_id: String,
    /// One line.
    pub title: String,
    /// The text; ends with the [`marker`] so a lost mapping can be recovered.
    pub body: Doc,
    /// Labels or tags.
    pub labels: Vec<String>,
    /// An issue with this key cannot be older: found issues are looked for
    /// from here on (a day before the rollout began, since the pipeline may
    /// have reported a failure of the same release before its rollout ran).
    pub not_before: DateTime<Utc>,
    /// A rollout's failure (its issue tells it, and says so with
    /// [`failure_marker`]), rather than a pipeline's report of a failed stage.
    pub rollout_failure: bool,
}

/// A comment ready to post.
#[derive(Debug, Clone, PartialEq)]
pub struct CommentDraft {
    /// The marker it carries: a retried comment that already landed is found by it.
    pub marker: String,
    /// The text.
    pub body: Doc,
}

/// An issue opened now, or found already open for the rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Filed {
    /// The issue.
    pub issue: IssueRef,
    /// False when an earlier attempt had already opened it.
    pub created: bool,
    /// Whether the issue already tells the rollout's failure: true when
    /// written now or by an earlier attempt of the rollout, false for the
    /// release's issue a pipeline report opened before the rollout failed.
    pub tells_failure: bool,
}

/// What can go wrong filing an issue.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// The tracker failed or could not be reached (no secrets in the text).
    #[error("{0}")]
    Failed(String),
}

/// An issue tracker.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// Opens the rollout's issue, or returns the one already open for it.
    async fn open(&self, draft: &IssueDraft) -> Result<Filed, BacklogError>;
    /// Adds a comment to an issue, unless one with the same marker is there.
    async fn comment(&self, issue: &IssueRef, comment: &CommentDraft) -> Result<(), BacklogError>;
    /// What `sluice doctor` finds before a first rollout, without writing
    /// anything: the token is valid, the project exists, the rights suffice.
    async fn preflight(&self) -> Vec<Check> {
        vec![Check::ok("backlog", "tracker", "nothing to reach: issues are files in Sluice's data directory")]
    }
}

/// Builds a backlog from its settings.
pub type Factory = fn(&Settings, &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError>;

/// Backlogs by provider name. A new tracker is one file and one line here.
pub const PROVIDERS: &[(&str, Factory)] = &[("local", local::build), ("github", github::build), ("azureDevOps", azure_devops::build)];

/// The backlog a spec names.
pub fn build(provider: &str, settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError> {
    lookup("backlog", PROVIDERS, provider)?(settings, env)
}

/// Most characters of an issue title (a list shows about this many).
pub const TITLE_CHARS: usize = 120;

/// How long before its rollout a release's earlier failure report may have opened its issue.
pub const RELEASE_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The marker that ties an issue to its rollout (hidden in the issue text).
pub fn marker(rollout_id: &str) -> String {
    format!("sluice:rollout={rollout_id}")
}

/// The marker in the text of an issue that tells a rollout's failure.
pub fn failure_marker(rollout_id: &str) -> String {
    format!("sluice:failure={rollout_id}")
}

/// The tag of a work item that tells a rollout's failure.
pub fn failure_tag(rollout_id: &str) -> String {
    format!("sluice-failure-{rollout_id}")
}

/// The tag that ties a work item to its rollout, where trackers search tags.
pub fn marker_tag(rollout_id: &str) -> String {
    format!("sluice-rollout-{rollout_id}")
}

/// Sends a tracker request and reads its JSON answer; errors say which
/// tracker, what Sluice was doing and what it answered — never the URL or
/// the credentials.
pub(crate) async fn call(request: reqwest::RequestBuilder, tracker: &str, doing: &str) -> Result<serde_json::Value, BacklogError> {
    let response =
        request.send().await.map_err(|e| BacklogError::Failed(format!("{tracker} unreachable while {doing}: {}", e.without_url())))?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = match crate::ports::env::read_text(response).await {
        Ok(text) => text,
        Err(e) => return Err(BacklogError::Failed(format!("{tracker} answered {status} while {doing}, but {e}"))),
    };
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
    // Success is a 2xx with a JSON body, nothing else: Azure DevOps answers a
    // bad or expired PAT with 203 and an HTML sign-in page.
    if status == 203 || ((200..300).contains(&status) && parsed.is_err() && !text.trim().is_empty()) {
        let what = if text.to_ascii_lowercase().contains("sign in") { "with a sign-in page" } else { "without JSON" };
        return Err(BacklogError::Failed(format!("{tracker} answered {status} {what} while {doing}: the token or PAT is not valid")));
    }
    let body = parsed.unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let message = body.get("message").and_then(|m| m.as_str()).unwrap_or("(no message)");
        let wait = retry_after.map(|s| format!("; retry after {s}s")).unwrap_or_default();
        return Err(BacklogError::Failed(format!(
            "{tracker} answered {status} while {doing}: {}{wait}",
            message.chars().take(300).collect::<String>()
        )));
    }
    Ok(body)
}
