//! Wire-level fakes of GitHub Issues and Azure DevOps work items: they keep
//! issues, comments and work items in memory, check the auth header and the
//! content type of every request as the real services would, and can be
//! switched into an outage (503).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};

use super::recorder::{Answer, Recorded, Recorder};

fn answer(status: u16, body: Value) -> Answer {
    (status, vec![("content-type".into(), "application/json".into())], body.to_string())
}

struct FakeIssue {
    number: u64,
    title: String,
    body: String,
    labels: Vec<String>,
    comments: Vec<String>,
    /// Who wrote the issue, and each comment (GitHub's `user.login`).
    author: String,
    comment_authors: Vec<String>,
}

/// The login GitHub's `GET /user` names for the fake's token.
pub const SLUICE_LOGIN: &str = "sluice-bot";

#[derive(Default)]
struct GitHubState {
    issues: Vec<FakeIssue>,
}

/// A GitHub repository's issues API.
pub struct GitHubFake {
    pub recorder: Recorder,
    pub down: Arc<AtomicBool>,
    state: Arc<Mutex<GitHubState>>,
}

impl GitHubFake {
    pub async fn start(repo: &str, token: &str) -> GitHubFake {
        let state = Arc::new(Mutex::new(GitHubState::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (s, d, repo, token) = (state.clone(), down.clone(), repo.to_string(), token.to_string());
        let recorder = Recorder::start(move |r: &Recorded| github_answer(r, &s, &d, &repo, &token)).await;
        GitHubFake { recorder, down, state }
    }

    /// Issues created: (number, title, body, labels).
    pub fn issues(&self) -> Vec<(u64, String, String, Vec<String>)> {
        self.state.lock().expect("state").issues.iter().map(|i| (i.number, i.title.clone(), i.body.clone(), i.labels.clone())).collect()
    }

    pub fn comments(&self, number: u64) -> Vec<String> {
        self.state.lock().expect("state").issues.iter().find(|i| i.number == number).map(|i| i.comments.clone()).unwrap_or_default()
    }

    /// An issue someone else wrote (its number).
    pub fn plant_issue(&self, author: &str, title: &str, body: &str) -> u64 {
        let mut st = self.state.lock().expect("state");
        let n = st.issues.len() as u64 + 1;
        st.issues.push(FakeIssue {
            number: n,
            title: title.into(),
            body: body.into(),
            labels: Vec::new(),
            comments: Vec::new(),
            author: author.into(),
            comment_authors: Vec::new(),
        });
        n
    }

    /// A comment someone else wrote on issue `number`.
    pub fn plant_comment(&self, number: u64, author: &str, body: &str) {
        let mut st = self.state.lock().expect("state");
        if let Some(issue) = st.issues.iter_mut().find(|i| i.number == number) {
            issue.comments.push(body.into());
            issue.comment_authors.push(author.into());
        }
    }

    /// Requests that created something.
    pub fn posts(&self) -> Vec<Recorded> {
        self.recorder.seen().into_iter().filter(|r| r.method == "POST").collect()
    }
}

fn github_answer(r: &Recorded, state: &Mutex<GitHubState>, down: &AtomicBool, repo: &str, token: &str) -> Answer {
    if down.load(Ordering::SeqCst) {
        return answer(503, json!({"message": "Service Unavailable"}));
    }
    if r.header("authorization") != Some(&format!("Bearer {token}")) {
        return answer(401, json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}));
    }
    if r.header("accept") != Some("application/vnd.github+json") || r.header("x-github-api-version") != Some("2022-11-28") {
        return answer(400, json!({"message": "missing GitHub API headers"}));
    }
    if r.header("user-agent").is_none() {
        return answer(
            403,
            json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}),
        );
    }
    // `GET /user`: the token's account (docs.github.com, "Get the authenticated user").
    if (r.method.as_str(), r.path.as_str()) == ("GET", "/user") {
        return answer(200, json!({"login": SLUICE_LOGIN, "type": "User"}));
    }
    let base = format!("/repos/{repo}/issues");
    let mut st = state.lock().expect("state");
    let user = |login: &str| json!({"login": login, "type": "User"});
    let html = |n: u64| format!("https://github.com/{repo}/issues/{n}");
    let Some(rest) = r.path.strip_prefix(&base) else { return answer(404, json!({"message": "Not Found"})) };
    match (r.method.as_str(), rest) {
        ("GET", "") => {
            let list: Vec<Value> = st
                .issues
                .iter()
                .rev()
                .map(|i| json!({"number": i.number, "title": i.title, "body": i.body, "html_url": html(i.number), "user": user(&i.author)}))
                .collect();
            answer(200, Value::Array(list))
        }
        ("POST", "") => {
            if r.header("content-type") != Some("application/json") {
                return answer(415, json!({"message": "Unsupported Media Type"}));
            }
            let body = r.json();
            let (Some(title), Some(text)) = (body["title"].as_str(), body["body"].as_str()) else {
                return answer(422, json!({"message": "Validation Failed"}));
            };
            let labels =
                body["labels"].as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default();
            let n = st.issues.len() as u64 + 1;
            st.issues.push(FakeIssue {
                number: n,
                title: title.to_string(),
                body: text.to_string(),
                labels,
                comments: Vec::new(),
                author: SLUICE_LOGIN.into(),
                comment_authors: Vec::new(),
            });
            answer(201, json!({"number": n, "html_url": html(n), "title": title}))
        }
        (method, path) => {
            let Some(n) = path.strip_prefix('/').and_then(|p| p.strip_suffix("/comments")).and_then(|n| n.parse::<u64>().ok()) else {
                return answer(404, json!({"message": "Not Found"}));
            };
            let Some(issue) = st.issues.iter_mut().find(|i| i.number == n) else { return answer(404, json!({"message": "Not Found"})) };
            match method {
                "GET" => answer(
                    200,
                    Value::Array(
                        issue.comments.iter().zip(&issue.comment_authors).map(|(c, a)| json!({"body": c, "user": user(a)})).collect(),
                    ),
                ),
                "POST" => {
                    let Some(text) = r.json()["body"].as_str().map(str::to_string) else {
                        return answer(422, json!({"message": "Validation Failed"}));
                    };
                    issue.comments.push(text.clone());
                    issue.comment_authors.push(SLUICE_LOGIN.into());
                    answer(201, json!({"id": issue.comments.len(), "body": text}))
                }
                _ => answer(405, json!({"message": "Method Not Allowed"})),
            }
        }
    }
}

#[derive(Default)]
struct AdoState {
    /// (id, fields, comments)
    items: Vec<(u64, serde_json::Map<String, Value>, Vec<Comment>)>,
}

/// A comment: its text and who wrote it.
type Comment = (String, String);

/// Who the fake's PAT belongs to: `System.CreatedBy` of its work items, `createdBy` of its comments.
pub const ADO_OWNER: &str = "sluice@contoso.com";

/// An identity as Azure DevOps writes one (IdentityRef: id, displayName, uniqueName).
fn ado_identity(unique_name: &str) -> Value {
    let id =
        format!("{:08x}-0000-4000-8000-000000000000", unique_name.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))));
    json!({"id": id, "displayName": unique_name, "uniqueName": unique_name})
}

/// An Azure DevOps project's work item API.
pub struct AdoFake {
    pub recorder: Recorder,
    state: Arc<Mutex<AdoState>>,
}

impl AdoFake {
    pub async fn start(org: &str, project: &str, pat: &str) -> AdoFake {
        let state = Arc::new(Mutex::new(AdoState::default()));
        let s = state.clone();
        let prefix = format!("/{org}/{}/_apis/wit", project.replace(' ', "%20"));
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!(":{pat}")));
        let recorder = Recorder::start(move |r: &Recorded| ado_answer(r, &s, &prefix, &basic)).await;
        AdoFake { recorder, state }
    }

    /// A work item someone else created, with `tags` ("a; b").
    pub fn plant_item(&self, created_by: &str, tags: &str) -> u64 {
        let mut st = self.state.lock().expect("state");
        let id = 100 + st.items.len() as u64;
        let mut fields = serde_json::Map::new();
        fields.insert("System.Tags".into(), json!(tags));
        fields.insert("System.CreatedBy".into(), ado_identity(created_by));
        st.items.push((id, fields, Vec::new()));
        id
    }

    /// A comment someone else wrote on work item `id`.
    pub fn plant_comment(&self, id: u64, author: &str, text: &str) {
        let mut st = self.state.lock().expect("state");
        if let Some(item) = st.items.iter_mut().find(|i| i.0 == id) {
            item.2.push((text.into(), author.into()));
        }
    }

    /// Work items created: (id, fields).
    pub fn items(&self) -> Vec<(u64, serde_json::Map<String, Value>)> {
        self.state.lock().expect("state").items.iter().map(|(i, f, _)| (*i, f.clone())).collect()
    }

    pub fn comments(&self, id: u64) -> Vec<String> {
        let st = self.state.lock().expect("state");
        st.items.iter().find(|i| i.0 == id).map(|i| i.2.iter().map(|(text, _)| text.clone()).collect()).unwrap_or_default()
    }
}

fn ado_answer(r: &Recorded, state: &Mutex<AdoState>, prefix: &str, basic: &str) -> Answer {
    if r.header("authorization") != Some(basic) {
        // A bad or expired PAT can be answered 203 with an HTML sign-in page
        // (../shared/azure-contracts.md, Backlog): not an error status, not JSON.
        let page = "<!DOCTYPE html><html><head><title>Azure DevOps Services | Sign In</title></head><body>Sign in</body></html>";
        return (203, vec![("content-type".into(), "text/html; charset=utf-8".into())], page.into());
    }
    let Some(rest) = r.path.strip_prefix(prefix) else { return answer(404, json!({"message": "project not found"})) };
    let version = r.param("api-version").unwrap_or_default();
    let mut st = state.lock().expect("state");
    let link = |id: u64| json!({"html": {"href": format!("https://dev.azure.com/org/proj/_workitems/edit/{id}")}});
    if rest == "/wiql" && r.method == "POST" {
        if version != "7.1" || r.header("content-type") != Some("application/json") {
            return answer(400, json!({"message": "bad wiql request"}));
        }
        let query = r.json()["query"].as_str().unwrap_or_default().to_string();
        let Some(tag) = query.split("CONTAINS '").nth(1).and_then(|t| t.split('\'').next()) else {
            return answer(400, json!({"message": "TF51005: The query references a field that does not exist."}));
        };
        // `[System.CreatedBy] = @Me`: the PAT's owner (the fake's only caller).
        let mine = query.contains("[System.CreatedBy] = @Me");
        let found: Vec<Value> = st
            .items
            .iter()
            .filter(|(_, f, _)| f.get("System.Tags").and_then(Value::as_str).is_some_and(|t| t.split("; ").any(|x| x == tag)))
            .filter(|(_, f, _)| {
                !mine || f.get("System.CreatedBy").and_then(|c| c.get("uniqueName")).and_then(Value::as_str) == Some(ADO_OWNER)
            })
            .map(|(id, _, _)| json!({"id": id, "url": format!("https://dev.azure.com/org/_apis/wit/workItems/{id}")}))
            .collect();
        return answer(200, json!({"queryType": "flat", "workItems": found}));
    }
    if let Some(kind) = rest.strip_prefix("/workitems/$") {
        if r.method != "POST" || version != "7.1" {
            return answer(400, json!({"message": "bad create request"}));
        }
        if r.header("content-type") != Some("application/json-patch+json") {
            return answer(415, json!({"message": "VS403366: The content type is not supported; use application/json-patch+json"}));
        }
        let Some(ops) = r.json().as_array().cloned() else { return answer(400, json!({"message": "not a JSON Patch document"})) };
        let mut fields = serde_json::Map::new();
        fields.insert("System.WorkItemType".into(), json!(kind));
        for op in ops {
            let (Some("add"), Some(path)) = (op["op"].as_str(), op["path"].as_str()) else {
                return answer(400, json!({"message": "unsupported patch operation"}));
            };
            let Some(field) = path.strip_prefix("/fields/") else { return answer(400, json!({"message": "bad path"})) };
            fields.insert(field.to_string(), op["value"].clone());
        }
        fields.insert("System.CreatedBy".into(), ado_identity(ADO_OWNER));
        let id = 100 + st.items.len() as u64;
        st.items.push((id, fields.clone(), Vec::new()));
        return answer(
            200,
            json!({"id": id, "rev": 1, "fields": fields, "url": format!("https://dev.azure.com/org/_apis/wit/workItems/{id}"), "_links": link(id)}),
        );
    }
    // Work Items - Get (REST 7.1): `GET …/wit/workitems/{id}?fields=…` answers the item with those fields.
    if let Some(id) = rest.strip_prefix("/workitems/").and_then(|n| n.parse::<u64>().ok()) {
        if r.method != "GET" || version != "7.1" {
            return answer(400, json!({"message": "bad work item request"}));
        }
        let Some(item) = st.items.iter().find(|i| i.0 == id) else { return answer(404, json!({"message": "work item not found"})) };
        let wanted: Vec<String> = r.param("fields").unwrap_or_default().split(',').map(str::to_string).collect();
        let fields: serde_json::Map<String, Value> =
            item.1.iter().filter(|(k, _)| wanted.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        return answer(200, json!({"id": id, "rev": 1, "fields": fields}));
    }
    if let Some(id) = rest.strip_prefix("/workItems/").and_then(|p| p.strip_suffix("/comments")).and_then(|n| n.parse::<u64>().ok()) {
        if version != "7.1-preview.4" {
            return answer(400, json!({"message": "bad comments api-version"}));
        }
        let Some(item) = st.items.iter_mut().find(|i| i.0 == id) else { return answer(404, json!({"message": "work item not found"})) };
        return match r.method.as_str() {
            "GET" => answer(
                200,
                json!({"totalCount": item.2.len(), "count": item.2.len(),
                    "comments": item.2.iter().map(|(t, a)| json!({"text": t, "createdBy": ado_identity(a)})).collect::<Vec<_>>()}),
            ),
            "POST" if r.header("content-type") == Some("application/json") => {
                let Some(text) = r.json()["text"].as_str().map(str::to_string) else { return answer(400, json!({"message": "no text"})) };
                item.2.push((text.clone(), ADO_OWNER.into()));
                answer(200, json!({"workItemId": id, "commentId": item.2.len(), "text": text, "createdBy": ado_identity(ADO_OWNER)}))
            }
            _ => answer(400, json!({"message": "bad comment request"})),
        };
    }
    answer(404, json!({"message": "not found"}))
}
