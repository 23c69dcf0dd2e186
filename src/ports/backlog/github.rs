//! GitHub Issues. The rollout → issue mapping lives in Sluice's store; when
//! it is lost (a crash between creating the issue and saving its number)
//! the issue is found again by the marker in its body, listing the
//! repository's issues updated since a day before the rollout began (the
//! release's pipeline may have opened it first) — the list is consistent,
//! unlike search, which lags and is rate limited. Comments carry markers too.
//!
//! Anyone who may open an issue can write a marker, so one is trusted only
//! whole (`<!-- sluice:rollout=ID -->`, so `gh-424` never matches `gh-4242`)
//! and only in what Sluice's own account wrote: the login `GET /user`
//! names, or — for a GitHub App's installation token, which `GET /user`
//! refuses — a bot account (`user.type` `Bot`).
//!
//! `sluice doctor` reads the repository (`GET /repos/{owner}/{repo}`:
//! `has_issues`, `private`, `permissions`) and, for a classic token, the
//! `X-OAuth-Scopes` header GitHub answers with (docs.github.com, "Scopes for
//! OAuth apps"): `repo`, or `public_repo` for a public repository.
//!
//! Settings: `repository` (`owner/name`), `tokenSetting` (app setting with
//! the token; default `GITHUB_TOKEN`), `labels`, `apiUrl` (GitHub
//! Enterprise; default `https://api.github.com`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::TimeDelta;
use serde_json::{json, Value};

use crate::ports::preflight::Check;

use super::{call, marker, Backlog, BacklogError, CommentDraft, Filed, IssueDraft};
use crate::domain::rollout::IssueRef;
use crate::ports::env::{AdapterEnv, AdapterError, Settings};
use crate::ports::github::GitHubRepo;

/// Pages of 100 looked through when recovering a lost mapping.
const PAGES: u32 = 5;

/// A GitHub repository's issues.
pub struct GitHubIssues {
    repo: GitHubRepo,
    labels: Vec<String>,
}

/// Builds the GitHub backlog.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError> {
    let repo = GitHubRepo::from_settings("github", settings, env)?;
    let labels = settings
        .get("labels")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Arc::new(GitHubIssues { repo, labels }))
}

/// Whose issues and comments Sluice trusts: its own account's.
enum Author {
    /// The token's user.
    Login(String),
    /// A GitHub App's installation: its bot account.
    App,
}

impl Author {
    fn wrote(&self, item: &Value) -> bool {
        let user = |k: &str| item.pointer(&format!("/user/{k}")).and_then(Value::as_str);
        match self {
            Author::Login(login) => user("login") == Some(login.as_str()),
            Author::App => user("type") == Some("Bot"),
        }
    }
}

/// Whether `text` carries `marker` whole, as Sluice writes it.
fn carries(text: &str, marker: &str) -> bool {
    text.contains(&format!("<!-- {} -->", marker.replace("--", "- -")))
}

impl GitHubIssues {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.repo.request(method, path)
    }

    /// Who Sluice is on GitHub.
    async fn own_account(&self) -> Result<Author, BacklogError> {
        let response = self
            .repo
            .request_api(reqwest::Method::GET, "/user")
            .send()
            .await
            .map_err(|e| BacklogError::Failed(format!("GitHub unreachable while asking who the token is: {}", e.without_url())))?;
        match response.status().as_u16() {
            // An installation token may not read `/user` ("Resource not accessible by integration").
            403 => Ok(Author::App),
            200 => {
                let me: Value = crate::ports::env::read_json(response).await.map_err(BacklogError::Failed)?;
                let login = me.get("login").and_then(Value::as_str).filter(|l| !l.is_empty());
                login.map(|l| Author::Login(l.to_string())).ok_or_else(|| BacklogError::Failed("GitHub's /user names no login".into()))
            }
            other => Err(BacklogError::Failed(format!("GitHub answered {other} while asking who the token is"))),
        }
    }

    fn issue_ref(&self, issue: &Value) -> Option<IssueRef> {
        let number = issue.get("number")?.as_u64()?;
        let url = issue.get("html_url").and_then(Value::as_str).map(str::to_string).unwrap_or_default();
        Some(IssueRef { id: format!("{}#{number}", self.repo.repo), url })
    }

    /// The issue an earlier attempt opened for the rollout, if any.
    /// The issue with the draft's marker, and whether it tells the rollout's failure.
    async fn find(&self, draft: &IssueDraft) -> Result<Option<(IssueRef, bool)>, BacklogError> {
        let since = (draft.not_before - TimeDelta::minutes(10)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let wanted = marker(&draft.rollout_id);
        let mut me = None;
        for page in 1..=PAGES {
            let request = self.request(reqwest::Method::GET, "/issues").query(&[
                ("state", "all"),
                ("since", since.as_str()),
                ("sort", "created"),
                ("direction", "desc"),
                ("per_page", "100"),
                ("page", &page.to_string()),
            ]);
            let list = call(request, "GitHub", "looking for the rollout's issue").await?;
            let issues = list.as_array().cloned().unwrap_or_default();
            let marked = issues.iter().filter(|i| i.get("body").and_then(Value::as_str).is_some_and(|b| carries(b, &wanted)));
            let mut found = None;
            for candidate in marked {
                // Who Sluice is, asked only once a marked issue turns up.
                if me.is_none() {
                    me = Some(self.own_account().await?);
                }
                if me.as_ref().is_some_and(|me| me.wrote(candidate)) {
                    found = Some(candidate);
                    break;
                }
            }
            if let Some(found) = found {
                let failure = super::failure_marker(&draft.rollout_id);
                let tells = found.get("body").and_then(Value::as_str).is_some_and(|b| carries(b, &failure));
                return Ok(self.issue_ref(found).map(|issue| (issue, tells)));
            }
            if issues.len() < 100 {
                break;
            }
        }
        Ok(None)
    }
}

fn issue_number(issue: &IssueRef) -> Result<&str, BacklogError> {
    issue
        .id
        .rsplit_once('#')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| BacklogError::Failed(format!("'{}' is not a GitHub issue reference (owner/name#number)", issue.id)))
}

/// What a repository's answer and the token's scopes say about filing issues.
fn repository_findings(repo: &Value, scopes: Option<&str>, labels: bool) -> Vec<Check> {
    let mut found = vec![Check::ok("backlog", "repository", "exists and the token can read it")];
    if repo.get("has_issues").and_then(Value::as_bool) == Some(false) {
        found.push(Check::blocker("backlog", "issues", "are turned off in this repository's settings"));
    }
    let private = repo.get("private").and_then(Value::as_bool).unwrap_or(true);
    match scopes {
        Some(scopes) => {
            let scopes: Vec<&str> = scopes.split(',').map(str::trim).collect();
            if scopes.contains(&"repo") || (!private && scopes.contains(&"public_repo")) {
                found.push(Check::ok("backlog", "token scopes", "the classic token may open issues"));
            } else {
                let need = if private { "repo" } else { "repo or public_repo" };
                found.push(Check::blocker(
                    "backlog",
                    "token scopes",
                    format!("the classic token has [{}]; opening issues needs {need}", scopes.join(", ")),
                ));
            }
        }
        None => found.push(Check::warning(
            "backlog",
            "token permissions",
            "a fine-grained or app token: its Issues permission cannot be read without writing; it needs Issues: read and write",
        )),
    }
    let role = |k: &str| repo.pointer(&format!("/permissions/{k}")).and_then(Value::as_bool).unwrap_or(false);
    if labels && !(role("triage") || role("push") || role("maintain") || role("admin")) {
        found.push(Check::warning(
            "backlog",
            "labels",
            "the token's user cannot triage this repository: GitHub drops labels on the issues it opens",
        ));
    }
    found
}

#[async_trait]
impl Backlog for GitHubIssues {
    async fn open(&self, draft: &IssueDraft) -> Result<Filed, BacklogError> {
        if let Some((issue, tells_failure)) = self.find(draft).await? {
            return Ok(Filed { issue, created: false, tells_failure });
        }
        let mut labels = draft.labels.clone();
        labels.extend(self.labels.iter().filter(|l| !draft.labels.contains(l)).cloned());
        let body = json!({"title": draft.title, "body": draft.body.markdown(), "labels": labels});
        let created = call(self.request(reqwest::Method::POST, "/issues").json(&body), "GitHub", "opening the issue").await?;
        let issue = self.issue_ref(&created).ok_or_else(|| BacklogError::Failed("GitHub's answer has no issue number".into()))?;
        Ok(Filed { issue, created: true, tells_failure: draft.rollout_failure })
    }

    async fn preflight(&self) -> Vec<Check> {
        let response = match self.request(reqwest::Method::GET, "").send().await {
            Ok(r) => r,
            Err(e) => return vec![Check::blocker("backlog", "GitHub", format!("unreachable: {}", e.without_url()))],
        };
        let status = response.status().as_u16();
        let scopes = response.headers().get("x-oauth-scopes").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body: Value = crate::ports::env::read_json(response).await.unwrap_or(Value::Null);
        match status {
            200 => repository_findings(&body, scopes.as_deref(), !self.labels.is_empty()),
            401 => vec![Check::blocker("backlog", "token", "GitHub refuses it (401): expired, revoked or mistyped")],
            403 | 404 => vec![Check::blocker(
                "backlog",
                "repository",
                format!("{} answered {status}: it does not exist, or the token may not see it", self.repo.repo),
            )],
            other => vec![Check::blocker("backlog", "GitHub", format!("answered {other} reading {}", self.repo.repo))],
        }
    }

    async fn comment(&self, issue: &IssueRef, comment: &CommentDraft) -> Result<(), BacklogError> {
        let number = issue_number(issue)?;
        let path = format!("/issues/{number}/comments");
        let mut me = None;
        for page in 1..=PAGES {
            let request = self.request(reqwest::Method::GET, &path).query(&[("per_page", "100"), ("page", &page.to_string())]);
            let list = call(request, "GitHub", "reading the issue's comments").await?;
            let comments = list.as_array().cloned().unwrap_or_default();
            let marked: Vec<&Value> =
                comments.iter().filter(|c| c.get("body").and_then(Value::as_str).is_some_and(|b| carries(b, &comment.marker))).collect();
            if !marked.is_empty() && me.is_none() {
                me = Some(self.own_account().await?);
            }
            if marked.iter().any(|c| me.as_ref().is_some_and(|me| me.wrote(c))) {
                return Ok(());
            }
            if comments.len() < 100 {
                break;
            }
        }
        let body = json!({"body": comment.body.markdown()});
        call(self.request(reqwest::Method::POST, &path).json(&body), "GitHub", "commenting on the issue").await?;
        Ok(())
    }
}
