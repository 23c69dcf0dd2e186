//! The backlog and notification adapters against wire-level fakes that
//! check the exact requests (GitHub Issues, Azure DevOps work items, Teams,
//! Slack, a signed JSON webhook), and the rules around them through the
//! engine: one issue per failed rollout however often the failure is
//! delivered, later failures as comments, a backlog outage that never delays
//! the rollback, one message per phase change, a failing channel that never
//! blocks a rollout, and secrets that never reach logs, history or errors.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use hmac::Mac;
use serde_json::{json, Value};

use common::recorder::{Recorded, Recorder};
use common::trackers::{AdoFake, GitHubFake};
use common::{azure_alert, Upstreams};
use sluice::functions::{self, App, HttpRequest};
use sluice::ports::backlog::doc::{text, Block, Doc};
use sluice::ports::backlog::{self, CommentDraft, IssueDraft};
use sluice::ports::clock::Clock;
use sluice::ports::env::AdapterEnv;
use sluice::ports::queue::embedded::EmbeddedQueue;
use sluice::ports::store::sqlite::SqliteStore;
use sluice::shell::engine::Engine;

const PUBLIC: &str = "https://sluice.example";

fn settings_env(settings: Vec<(&str, String)>) -> AdapterEnv {
    let mut map: BTreeMap<String, String> = settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    // The fakes listen on loopback, and these tests name their own settings.
    map.insert("SLUICE_ALLOW_LOOPBACK_ENDPOINTS".into(), "true".into());
    map.entry("SLUICE_SPEC_SETTINGS".into())
        .or_insert_with(|| "github:GITHUB_TOKEN,azureDevOps:AZURE_DEVOPS_PAT,github:GH,TEAMS_URL,SLACK_URL,HOOK_*,BROKEN_URL".into());
    AdapterEnv::with_settings(std::env::temp_dir(), PUBLIC.into(), Arc::new(move |k: &str| map.get(k).cloned()))
}

fn settings(v: Value) -> sluice::ports::env::Settings {
    serde_json::from_value(v).expect("settings")
}

fn failed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 7, 8).single().expect("time")
}

fn sample_draft() -> IssueDraft {
    let mut body = Doc::default();
    body.push(Block::Heading("What happened".into()));
    body.push(Block::Para(vec![text("error rate 0.31 > 0.05 <b>")]));
    body.push(Block::Marker(backlog::marker("r-1")));
    IssueDraft {
        rollout_id: "r-1".into(),
        title: "Rollout of orders-api v2 rolled back: analysis failed".into(),
        body,
        labels: vec!["sluice".into(), "rollback".into(), "service:orders-api".into()],
        not_before: failed_at(),
        rollout_failure: true,
    }
}

fn sample_comment() -> CommentDraft {
    let mut body = Doc::default();
    body.push(Block::Para(vec![text("traffic is back on v1")]));
    body.push(Block::Marker("sluice:update=r-1/f1r1v0l0".into()));
    CommentDraft { marker: "sluice:update=r-1/f1r1v0l0".into(), body }
}

#[tokio::test]
async fn github_adapter_speaks_the_issues_api_and_never_files_twice() {
    let fake = GitHubFake::start("acme/shop", "ghp_wire_token").await;
    let env = settings_env(vec![("GITHUB_TOKEN", "ghp_wire_token".into())]);
    let gh =
        backlog::build("github", &settings(json!({"repository": "acme/shop", "labels": ["team-x"], "apiUrl": fake.recorder.url})), &env)
            .expect("builds");
    let draft = sample_draft();
    let filed = gh.open(&draft).await.expect("opens");
    assert!(filed.created);
    assert_eq!((filed.issue.id.as_str(), filed.issue.url.as_str()), ("acme/shop#1", "https://github.com/acme/shop/issues/1"));
    let seen = fake.recorder.seen();
    assert_eq!(seen.len(), 2, "one lookup, one create");
    let (lookup, create) = (&seen[0], &seen[1]);
    assert_eq!((lookup.method.as_str(), lookup.path.as_str()), ("GET", "/repos/acme/shop/issues"));
    assert_eq!(lookup.param("state").as_deref(), Some("all"));
    assert_eq!(lookup.param("since").as_deref(), Some("2026-11-23T09:57:08Z"), "ten minutes before the earliest it can be");
    assert_eq!(lookup.param("per_page").as_deref(), Some("100"));
    for r in &seen {
        assert_eq!(r.header("authorization"), Some("Bearer ghp_wire_token"));
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
        assert!(r.header("user-agent").is_some_and(|ua| ua.starts_with("sluice/")));
    }
    assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/repos/acme/shop/issues"));
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(
        create.json(),
        json!({
            "title": "Rollout of orders-api v2 rolled back: analysis failed",
            "body": "## What happened\n\nerror rate 0.31 &gt; 0.05 &lt;b&gt;\n\n<!-- sluice:rollout=r-1 -->\n",
            "labels": ["sluice", "rollback", "service:orders-api", "team-x"]
        })
    );
    // A second attempt (the first one's answer was lost) finds the issue by its marker.
    let again = gh.open(&draft).await.expect("finds");
    assert_eq!((again.created, again.issue), (false, filed.issue.clone()));
    assert_eq!(fake.issues().len(), 1);
    assert_eq!(fake.posts().len(), 1);

    // Comments: looked for by marker first, posted once.
    gh.comment(&filed.issue, &sample_comment()).await.expect("comments");
    gh.comment(&filed.issue, &sample_comment()).await.expect("comments again");
    let comment_calls: Vec<Recorded> =
        fake.recorder.seen().into_iter().filter(|r| r.path == "/repos/acme/shop/issues/1/comments").collect();
    assert_eq!(comment_calls.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["GET", "POST", "GET"]);
    assert_eq!(comment_calls[1].json(), json!({"body": "traffic is back on v1\n\n<!-- sluice:update=r-1/f1r1v0l0 -->\n"}));
    assert_eq!(fake.comments(1).len(), 1);

    // Errors name the tracker, what Sluice was doing and the answer; never the token.
    let wrong = settings_env(vec![("GH", "ghp_not_this_one".into())]);
    let gh_wrong =
        backlog::build("github", &settings(json!({"repository": "acme/shop", "tokenSetting": "GH", "apiUrl": fake.recorder.url})), &wrong)
            .expect("builds");
    let error = gh_wrong.open(&draft).await.expect_err("401").to_string();
    assert_eq!(error, "GitHub answered 401 while looking for the rollout's issue: Bad credentials");
    let missing =
        backlog::build("github", &settings(json!({"repository": "acme/shop"})), &settings_env(vec![])).err().map(|e| e.to_string());
    assert_eq!(missing.as_deref(), Some("github settings: app setting GITHUB_TOKEN (the token) is not set"));
    let bad = backlog::build("github", &settings(json!({"repository": "shop"})), &env).err().map(|e| e.to_string());
    assert_eq!(bad.as_deref(), Some("github settings: 'repository' must be owner/name, not 'shop'"));
}

#[tokio::test]
async fn azure_devops_adapter_creates_work_items_with_json_patch_and_finds_them_by_tag() {
    let fake = AdoFake::start("org", "Shop Web", "ado-pat-wire").await;
    let env = settings_env(vec![("AZURE_DEVOPS_PAT", "ado-pat-wire".into())]);
    let config = json!({"organization": "org", "project": "Shop Web", "areaPath": "Shop Web\\Orders", "tags": ["team-x"], "orgUrl": format!("{}/org", fake.recorder.url)});
    let boards = backlog::build("azureDevOps", &settings(config.clone()), &env).expect("builds");
    let draft = sample_draft();
    let filed = boards.open(&draft).await.expect("creates");
    assert!(filed.created);
    assert_eq!(filed.issue.id, "100");
    assert_eq!(filed.issue.url, format!("{}/org/Shop%20Web/_workitems/edit/100", fake.recorder.url));
    let seen = fake.recorder.seen();
    assert_eq!(seen.len(), 2, "one WIQL lookup, one create");
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(":ado-pat-wire"));
    for r in &seen {
        assert_eq!(r.header("authorization"), Some(basic.as_str()));
    }
    let (wiql, create) = (&seen[0], &seen[1]);
    assert_eq!(
        (wiql.method.as_str(), wiql.path.as_str(), wiql.query.as_str()),
        ("POST", "/org/Shop%20Web/_apis/wit/wiql", "api-version=7.1")
    );
    assert_eq!(wiql.header("content-type"), Some("application/json"));
    assert_eq!(
        wiql.json(),
        json!({"query": "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project AND [System.Tags] CONTAINS 'sluice-rollout-r-1' AND [System.CreatedBy] = @Me ORDER BY [System.Id]"})
    );
    assert_eq!(
        (create.method.as_str(), create.path.as_str(), create.query.as_str()),
        ("POST", "/org/Shop%20Web/_apis/wit/workitems/$Bug", "api-version=7.1")
    );
    assert_eq!(create.header("content-type"), Some("application/json-patch+json"));
    assert_eq!(
        create.json(),
        json!([
            {"op": "add", "path": "/fields/System.Title", "value": "Rollout of orders-api v2 rolled back: analysis failed"},
            {"op": "add", "path": "/fields/Microsoft.VSTS.TCM.ReproSteps",
             "value": "<h2>What happened</h2><p>error rate 0.31 &gt; 0.05 &lt;b&gt;</p><p><small>sluice:rollout=r-1</small></p>"},
            {"op": "add", "path": "/fields/System.Tags", "value": "sluice; rollback; service:orders-api; team-x; sluice-rollout-r-1; sluice-failure-r-1"},
            {"op": "add", "path": "/fields/System.AreaPath", "value": "Shop Web\\Orders"}
        ])
    );
    let again = boards.open(&draft).await.expect("finds");
    assert_eq!((again.created, again.issue), (false, filed.issue.clone()));
    assert_eq!(fake.items().len(), 1);

    boards.comment(&filed.issue, &sample_comment()).await.expect("comments");
    boards.comment(&filed.issue, &sample_comment()).await.expect("comments again");
    let calls: Vec<Recorded> =
        fake.recorder.seen().into_iter().filter(|r| r.path == "/org/Shop%20Web/_apis/wit/workItems/100/comments").collect();
    assert_eq!(calls.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["GET", "POST", "GET"]);
    assert!(calls.iter().all(|r| r.query == "api-version=7.1-preview.4"));
    assert_eq!(calls[1].header("content-type"), Some("application/json"));
    assert_eq!(calls[1].json(), json!({"text": "<p>traffic is back on v1</p><p><small>sluice:update=r-1/f1r1v0l0</small></p>"}));
    assert_eq!(fake.comments(100).len(), 1);

    // Another work item type: its text goes to Description, and the type is a path segment.
    let mut story = config.clone();
    story["workItemType"] = json!("User Story");
    let stories = backlog::build("azureDevOps", &settings(story), &env).expect("builds");
    let mut other = sample_draft();
    other.rollout_id = "r-2".into();
    stories.open(&other).await.expect("creates");
    let last = fake.recorder.seen().pop().expect("a request");
    assert_eq!(last.path, "/org/Shop%20Web/_apis/wit/workitems/$User%20Story");
    assert_eq!(last.json()[1]["path"], "/fields/System.Description");

    // A wrong PAT is answered 203 with a sign-in page: a failure, saying so, holding no credential,
    // for the lookup and for a comment alike (never "posted").
    let wrong = settings_env(vec![("AZURE_DEVOPS_PAT", "not-the-pat".into())]);
    let with_wrong_pat = backlog::build("azureDevOps", &settings(config), &wrong).expect("builds");
    let error = with_wrong_pat.open(&draft).await.expect_err("203").to_string();
    assert_eq!(
        error,
        "Azure DevOps answered 203 with a sign-in page while looking for the rollout's work item: the token or PAT is not valid"
    );
    let before = fake.comments(100).len();
    let error = with_wrong_pat.comment(&filed.issue, &sample_comment()).await.expect_err("203").to_string();
    assert!(error.contains("answered 203 with a sign-in page"), "{error}");
    assert!(!error.contains("not-the-pat"));
    assert_eq!(fake.comments(100).len(), before);
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

impl TestClock {
    fn advance(&self, secs: i64) {
        *self.0.lock().expect("clock") += TimeDelta::seconds(secs);
    }
}

/// The handlers over the embedded store and queue, a real router in front of
/// two sample apps, a test clock and injected app settings; queue messages
/// are handled when the test says.
struct Harness {
    app: App,
    clock: Arc<TestClock>,
    up: Upstreams,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(app_settings: Vec<(&str, String)>) -> Harness {
        let up = Upstreams::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("sluice.db");
        let store = Arc::new(SqliteStore::open(&db).expect("store"));
        let clock = Arc::new(TestClock(Mutex::new(Utc::now())));
        let queue = Arc::new(EmbeddedQueue::open(&db, clock.clone()).expect("queue"));
        let mut map: BTreeMap<String, String> = app_settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        // The fakes listen on loopback, and these tests name their own settings.
        map.insert("SLUICE_ALLOW_LOOPBACK_ENDPOINTS".into(), "true".into());
        map.entry("SLUICE_SPEC_SETTINGS".into())
            .or_insert_with(|| "github:GITHUB_TOKEN,azureDevOps:AZURE_DEVOPS_PAT,github:GH,TEAMS_URL,SLACK_URL,HOOK_*,BROKEN_URL".into());
        let env = AdapterEnv::with_settings(dir.path().to_path_buf(), PUBLIC.into(), Arc::new(move |k: &str| map.get(k).cloned()));
        let engine = Arc::new(Engine::new(store, queue, env, clock.clone()));
        Harness { app: App { engine, alert_token: None, require_principal: false, tokens: None, api_key: None }, clock, up, _dir: dir }
    }

    fn spec(&self, steps: Value) -> Value {
        common::spec_for(&self.up.router_url, steps)
    }

    async fn api(&self, method: &str, id: Option<&str>, action: Option<&str>, body: Value, user: &str) -> (u16, Value) {
        let mut params = BTreeMap::new();
        let mut path = "/api/rollouts".to_string();
        for (k, v) in [("id", id), ("action", action)] {
            if let Some(v) = v {
                params.insert(k.to_string(), v.to_string());
                path.push_str(&format!("/{v}"));
            }
        }
        let req = HttpRequest {
            method: method.into(),
            path,
            params,
            headers: [("x-sluice-user".to_string(), user.to_string()), ("content-type".to_string(), "application/json".to_string())]
                .into_iter()
                .collect(),
            body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
            ..HttpRequest::default()
        };
        let r = functions::invoke_http(&self.app, "api", req).await;
        (r.status, r.json_body())
    }

    async fn start(&self, spec: Value) -> String {
        let (status, created) = self.api("POST", None, None, spec, "pipeline").await;
        assert_eq!(status, 201, "{created}");
        self.drain().await;
        created["id"].as_str().expect("id").to_string()
    }

    async fn status(&self, id: &str) -> Value {
        let (status, body) = self.api("GET", Some(id), None, Value::Null, "pipeline").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn alert(&self, alert_id: &str) {
        let req = HttpRequest {
            method: "POST".into(),
            path: "/api/alerts".into(),
            body: azure_alert(alert_id, "Fired").to_string().into_bytes(),
            ..HttpRequest::default()
        };
        let r = functions::invoke_http(&self.app, "alerts", req).await;
        assert_eq!(r.status, 202, "{}", r.json_body());
        self.drain().await;
    }

    /// Handles every message visible now, as the steps function would, and
    /// what follows from them (the effects a delivery leaves running).
    async fn drain(&self) {
        let queue = &self.app.engine.queue;
        loop {
            self.app.engine.settled().await;
            let Some(d) = queue.receive(Duration::from_secs(30)).await.expect("receive") else { break };
            functions::invoke_queue(&self.app, "steps", &d.body).await.expect("step handled");
            queue.complete(&d).await.expect("complete");
        }
    }

    async fn tick(&self) {
        functions::invoke_timer(&self.app, "tick", false).await.expect("tick");
        self.drain().await;
    }
}

fn history_text(status: &Value) -> String {
    status["history"]
        .as_array()
        .map(|h| h.iter().map(|e| e["summary"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

fn github_backlog(fake: &GitHubFake) -> Value {
    json!({"provider": "github", "settings": {"repository": "acme/shop", "apiUrl": fake.recorder.url}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issue_per_failure_however_often_delivered_and_the_retry_failing_again_comments() {
    let fake = GitHubFake::start("acme/shop", "ghp_flow").await;
    let hook = Recorder::start(|_r: &Recorded| (202, vec![], String::new())).await;
    let h = Harness::new(vec![("GITHUB_TOKEN", "ghp_flow".into()), ("HOOK_URL", format!("{}/hook", hook.url))]).await;
    let mut spec = h.spec(json!([{"setWeight": 20}, {"pause": {}}]));
    spec["backlog"] = github_backlog(&fake);
    spec["notifications"] = json!([{"provider": "webhook", "settings": {"urlSetting": "HOOK_URL"}}]);
    let id = h.start(spec).await;
    assert_eq!(h.status(&id).await["phase"], "Paused");
    assert_eq!(h.up.router.route().weight, 20);

    // The same alert, delivered three times.
    for _ in 0..3 {
        h.alert("alert-1").await;
    }
    let done = h.status(&id).await;
    assert_eq!(done["phase"], "RolledBack");
    assert_eq!(h.up.router.route().weight, 0);
    assert_eq!(fake.issues().len(), 1, "one issue");
    assert_eq!(fake.posts().len(), 1);
    assert_eq!(done.pointer("/backlog/issue/url"), Some(&json!("https://github.com/acme/shop/issues/1")), "{}", done["backlog"]);
    let (_, title, body, labels) = &fake.issues()[0];
    assert!(title.starts_with("Rollout of orders-api v2 rolled back: alert 'canary 5xx' (Sev1) fired: 5xx above 5%"), "{title}");
    assert!(title.chars().count() <= 120, "{title}");
    assert_eq!(labels, &["sluice", "rollback", "service:orders-api"]);
    for needle in [
        "Sluice rolled **orders-api** back from **v2** to **v1**.",
        "- **Where:** step 2/3 (pause until resumed), phase Paused, with 20% of traffic on v2",
        "- **Alert rule:** canary 5xx",
        "- **Severity:** Sev1",
        "- **Fired:** 2026-11-23 10:07:08 UTC",
        "Put all traffic back on v1 at ",
        "| time | phase | weight | event | by | what |",
        "Paused → RollingBack",
        &format!("[Status]({PUBLIC}/api/rollouts/{id})"),
        &format!("<!-- sluice:rollout={id} -->"),
    ] {
        assert!(body.contains(needle), "issue body lacks {needle:?}:\n{body}");
    }
    // The rollback announcement: cause, impact, what was done, the issue.
    let messages: Vec<Value> = hook.seen().iter().map(Recorded::json).collect();
    let kinds: Vec<&str> = messages.iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds, ["started", "paused", "rolledBack"], "one message per phase change");
    let rolled_back = &messages[2];
    let facts: BTreeMap<String, String> = rolled_back["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .map(|f| (f[0].as_str().unwrap_or("").into(), f[1].as_str().unwrap_or("").into()))
        .collect();
    assert_eq!(
        facts.get("Cause").map(String::as_str),
        Some("alert 'canary 5xx' (Sev1) fired: 5xx above 5% (Total Http5xx GreaterThan 5, value 37.0)")
    );
    assert_eq!(facts.get("Impact").map(String::as_str), Some("up to 20% of traffic was on v2 (phase Paused at failure)"));
    assert!(facts.get("What Sluice did").is_some_and(|w| w.starts_with("all traffic back on v1 at ")), "{facts:?}");
    assert!(rolled_back["links"].to_string().contains("https://github.com/acme/shop/issues/1"), "{rolled_back}");

    // Retried, and failing again: the same issue gets a comment, not a sibling.
    let (status, retried) = h.api("POST", Some(&id), Some("retry"), json!({}), "pipeline").await;
    assert_eq!(status, 201, "{retried}");
    let retry_id = retried["id"].as_str().expect("id").to_string();
    h.drain().await;
    assert_eq!(h.status(&retry_id).await["phase"], "Paused");
    h.alert("alert-2").await;
    let again = h.status(&retry_id).await;
    assert_eq!(again["phase"], "RolledBack");
    assert_eq!(fake.issues().len(), 1, "still one issue");
    let comments = fake.comments(1);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains(&format!("## Failed again: rollout {retry_id}")), "{}", comments[0]);
    assert!(comments[0].contains(&format!("(a retry of {id})")), "{}", comments[0]);
    assert!(comments[0].contains("- **Alert id:** `alert-2`"), "{}", comments[0]);
    assert_eq!(again.pointer("/backlog/issue/url"), Some(&json!("https://github.com/acme/shop/issues/1")));
    assert!(history_text(&again).contains("backlog issue acme/shop#1 updated"), "{}", history_text(&again));
    // Redelivering that alert adds nothing.
    h.alert("alert-2").await;
    assert_eq!((fake.issues().len(), fake.comments(1).len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_outage_never_delays_the_rollback_and_the_issue_opens_once_it_recovers() {
    let fake = GitHubFake::start("acme/shop", "ghp_outage").await;
    let h = Harness::new(vec![("GITHUB_TOKEN", "ghp_outage".into())]).await;
    let mut spec = h.spec(json!([{"setWeight": 20}, {"pause": {}}]));
    spec["backlog"] = github_backlog(&fake);
    let id = h.start(spec).await;
    fake.down.store(true, Ordering::SeqCst);

    h.alert("alert-outage").await;
    // Traffic is back on stable at once, whatever the backlog does.
    assert_eq!(h.up.router.route().weight, 0);
    let status = h.status(&id).await;
    assert_eq!(status["phase"], "RolledBack");
    assert_eq!(status.pointer("/backlog/state"), Some(&json!("opening")), "{}", status["backlog"]);
    assert_eq!(
        status.pointer("/backlog/lastError"),
        Some(&json!("GitHub answered 503 while looking for the rollout's issue: Service Unavailable"))
    );
    assert!(status["waitingFor"].as_str().is_some_and(|w| w.contains("backlog issue not yet opened after 1 attempts")), "{status}");
    assert!(history_text(&status).contains("backlog issue not opened (attempt 1)"));
    let shown = sluice::cli::view::status_text(&status);
    assert!(shown.contains("issue:    being opened (attempt 1: GitHub answered 503"), "{shown}");

    // The timer retries after the backoff, not before.
    let calls = fake.recorder.seen().len();
    h.clock.advance(5);
    h.tick().await;
    assert_eq!(fake.recorder.seen().len(), calls, "too early to retry");
    fake.down.store(false, Ordering::SeqCst);
    h.clock.advance(6);
    h.tick().await;
    let status = h.status(&id).await;
    assert_eq!(status.pointer("/backlog/state"), Some(&json!("opened")), "{}", status["backlog"]);
    assert_eq!(fake.issues().len(), 1);
    // Nothing more to do: later ticks leave the tracker alone.
    let calls = fake.recorder.seen().len();
    h.clock.advance(1000);
    h.tick().await;
    assert_eq!(fake.recorder.seen().len(), calls);
    assert_eq!(fake.issues().len(), 1);
}

fn hmac_sha256(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_slack_and_a_signed_webhook_hear_each_phase_change_once_and_a_broken_channel_blocks_nothing() {
    let teams = Recorder::start(|_r: &Recorded| (202, vec![], String::new())).await;
    let slack = Recorder::start(|_r: &Recorded| (200, vec![], "ok".into())).await;
    let hook = Recorder::start(|_r: &Recorded| (200, vec![], String::new())).await;
    let broken = Recorder::start(|_r: &Recorded| (404, vec![], "no_service".into())).await;
    let h = Harness::new(vec![
        ("TEAMS_URL", format!("{}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=teams-sig", teams.url)),
        ("SLACK_URL", format!("{}/services/T000/B000/slack-secret", slack.url)),
        ("HOOK_URL", format!("{}/sluice-events", hook.url)),
        ("HOOK_SECRET", "hook-signing-secret".into()),
        ("BROKEN_URL", format!("{}/services/T000/B000/gone", broken.url)),
    ])
    .await;
    let mut spec =
        h.spec(json!([{"setWeight": 20}, {"approval": {"approvers": ["alice"]}}, {"setWeight": 60}, {"pause": {"duration": "1s"}}]));
    spec["notifications"] = json!([
        {"provider": "teams", "settings": {"urlSetting": "TEAMS_URL"}},
        {"provider": "slack", "settings": {"urlSetting": "SLACK_URL"}},
        {"provider": "webhook", "settings": {"urlSetting": "HOOK_URL", "secretSetting": "HOOK_SECRET"}},
        {"provider": "slack", "settings": {"urlSetting": "BROKEN_URL"}}
    ]);
    let id = h.start(spec).await;
    assert_eq!(h.status(&id).await["phase"], "AwaitingApproval");
    let (status, body) = h.api("POST", Some(&id), Some("approve"), json!({}), "alice").await;
    assert_eq!(status, 200, "{body}");
    h.drain().await;
    h.clock.advance(2);
    h.tick().await;
    let done = h.status(&id).await;
    assert_eq!(done["phase"], "Succeeded", "the broken channel blocks nothing");

    // The webhook: one signed message per phase change.
    let hooks = hook.seen();
    let kinds: Vec<String> = hooks.iter().map(|r| r.header("x-sluice-event").unwrap_or("").to_string()).collect();
    assert_eq!(kinds, ["started", "approvalNeeded", "phaseChanged", "succeeded"]);
    for r in &hooks {
        assert_eq!((r.method.as_str(), r.path.as_str(), r.header("content-type")), ("POST", "/sluice-events", Some("application/json")));
        let expected = format!("sha256={}", hmac_sha256("hook-signing-secret", r.body.as_bytes()));
        assert_eq!(r.header("x-sluice-signature-256"), Some(expected.as_str()));
        assert_eq!(r.json()["rolloutId"], json!(id));
        assert_eq!(r.json()["kind"].as_str(), r.header("x-sluice-event"));
    }

    // Teams: an Adaptive Card, with the commands on the approval card.
    let cards = teams.seen();
    assert_eq!(cards.len(), 4);
    for r in &cards {
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.header("content-type")),
            ("POST", "/workflows/abc/triggers/manual/paths/invoke", Some("application/json"))
        );
        assert_eq!(r.param("sig").as_deref(), Some("teams-sig"));
        let body = r.json();
        assert_eq!(body["type"], "message");
        assert_eq!(body["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(body["attachments"][0]["content"]["type"], "AdaptiveCard");
        assert_eq!(body["attachments"][0]["content"]["version"], "1.4");
    }
    let approval = cards[1].json();
    let card = &approval["attachments"][0]["content"];
    assert_eq!(card["body"][0]["text"], "orders-api v2 is waiting for approval");
    assert_eq!(card["body"][0]["color"], "Warning");
    let facts = card["body"][2]["facts"].as_array().expect("a FactSet");
    assert!(facts.contains(&json!({"title": "Service", "value": "orders-api"})), "{facts:?}");
    assert!(facts.contains(&json!({"title": "Needs", "value": "1 of: alice"})), "{facts:?}");
    let texts: Vec<&str> = card["body"].as_array().expect("body").iter().filter_map(|b| b["text"].as_str()).collect();
    assert!(texts.contains(&format!("sluice approve {id} --url {PUBLIC}").as_str()), "{texts:?}");
    assert!(texts.contains(&format!("sluice reject {id} --url {PUBLIC} --reason \"...\"").as_str()), "{texts:?}");
    assert_eq!(card["actions"][0], json!({"type": "Action.OpenUrl", "title": "Status", "url": format!("{PUBLIC}/api/rollouts/{id}")}));

    // Slack: Block Kit, the same four messages.
    let posts = slack.seen();
    assert_eq!(posts.len(), 4);
    assert!(posts.iter().all(|r| r.path == "/services/T000/B000/slack-secret" && r.header("content-type") == Some("application/json")));
    let approval = posts[1].json();
    assert_eq!(approval["text"], "orders-api v2 is waiting for approval — At step 2/5. Check the numbers, then approve or reject.");
    let blocks = approval["blocks"].as_array().expect("blocks");
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": ":raised_hand: orders-api v2 is waiting for approval", "emoji": true}})
    );
    assert!(
        blocks.iter().any(|b| b["text"]["text"].as_str().is_some_and(|t| t.contains(&format!("```sluice approve {id} --url {PUBLIC}")))),
        "{blocks:?}"
    );
    let buttons = blocks.iter().find(|b| b["type"] == "actions").expect("link buttons");
    assert_eq!(buttons["elements"][0]["url"], json!(format!("{PUBLIC}/api/rollouts/{id}")));

    // The broken channel: three tries per message, each failure recorded — without its URL.
    assert_eq!(broken.seen().len(), 12);
    let history = history_text(&done);
    assert!(history.contains("Notify failed: slack: Slack webhook answered 404: no_service"), "{history}");
    assert!(!done.to_string().contains("/services/T000/B000/gone"), "the webhook URL leaked into the status");
}

/// Every output Sluice produced: its logs, what the API answers, what it stored.
async fn everything_said(up: &common::UpProcess, dir: &std::path::Path, ids: &[&str], bad_answer: &str) -> String {
    let http = reqwest::Client::new();
    let mut out = up.output();
    out.push_str(bad_answer);
    for path in ["/api/rollouts".to_string(), "/api/dashboard".to_string()]
        .into_iter()
        .chain(ids.iter().flat_map(|id| [format!("/api/rollouts/{id}"), format!("/api/dashboard/{id}")]))
    {
        let text =
            http.get(format!("{}{path}", up.url)).header("x-sluice-user", "auditor").send().await.expect("GET").text().await.expect("text");
        out.push_str(&text);
    }
    for entry in common::walk(dir) {
        out.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_history_or_error_bodies() {
    const GH_TOKEN: &str = "ghp_SluiceSecret0001";
    const ADO_PAT: &str = "SluiceSecret0002pat";
    let github = GitHubFake::start("acme/shop", GH_TOKEN).await;
    // This project expects another PAT: every call with ours is refused (an error to record).
    let ado = AdoFake::start("org", "proj", "some-other-pat").await;
    // A Slack that echoes the path it was called on in its error, like a careless proxy.
    let slack = Recorder::start(|r: &Recorded| (404, vec![], format!("no_service for {}", r.path))).await;
    let teams = Recorder::start(|_r: &Recorded| (202, vec![], String::new())).await;
    let up_apps = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let slack_url = format!("{}/services/T0/B0/SluiceSecret0003", slack.url);
    let teams_url = format!("{}/workflows/x/invoke?sig=SluiceSecret0004", teams.url);
    let env = [
        ("GITHUB_TOKEN", GH_TOKEN),
        ("AZURE_DEVOPS_PAT", ADO_PAT),
        ("SLACK_URL", slack_url.as_str()),
        ("TEAMS_URL", teams_url.as_str()),
        ("HOOK_SECRET", "SluiceSecret0005"),
        ("HOOK_URL", teams_url.as_str()),
        // The fakes listen on loopback, and this test names its own settings.
        ("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true"),
        ("SLUICE_SPEC_SETTINGS", "github:GITHUB_TOKEN,azureDevOps:AZURE_DEVOPS_PAT,SLACK_URL,TEAMS_URL,HOOK_*"),
    ];
    let up = common::UpProcess::spawn(dir.path(), &[], &env, "debug").await;
    let client = up.client("pipeline");
    let channels = json!([
        {"provider": "slack", "settings": {"urlSetting": "SLACK_URL"}},
        {"provider": "teams", "settings": {"urlSetting": "TEAMS_URL"}},
        {"provider": "webhook", "settings": {"urlSetting": "HOOK_URL", "secretSetting": "HOOK_SECRET"}}
    ]);
    let mut ids = Vec::new();
    let backlogs = [
        github_backlog(&github),
        json!({"provider": "azureDevOps", "settings": {"organization": "org", "project": "proj", "orgUrl": format!("{}/org", ado.recorder.url)}}),
    ];
    for (n, backlog) in backlogs.into_iter().enumerate() {
        let mut spec = common::spec_for(&up_apps.router_url, json!([{"setWeight": 20}, {"pause": {}}]));
        spec["backlog"] = backlog;
        spec["notifications"] = channels.clone();
        let id = client.start(&spec, None).await.expect("starts")["id"].as_str().expect("id").to_string();
        common::wait_for(&client, &id, "Paused", Duration::from_secs(20), |s| s["phase"] == "Paused").await;
        client.alert(&azure_alert(&format!("secret-alert-{n}"), "Fired"), Some(common::TOKEN)).await.expect("202");
        common::wait_for(&client, &id, "RolledBack, issue tried", Duration::from_secs(20), |s| {
            s["phase"] == "RolledBack"
                && (s.pointer("/backlog/state") == Some(&json!("opened")) || s.pointer("/backlog/lastError").is_some())
        })
        .await;
        ids.push(id);
    }
    // A spec with a secret written inline is refused without repeating it.
    let mut inline = common::spec_for(&up_apps.router_url, json!([{"setWeight": 20}]));
    inline["backlog"] = json!({"provider": "github", "settings": {"repository": "acme/shop", "token": "ghp_SluiceSecret0006"}});
    let refused = client.start(&inline, None).await.expect_err("422").to_string();
    assert!(refused.contains("backlog.settings.token: looks like a secret written inline"), "{refused}");

    // The secrets were used on the wire...
    assert!(github.recorder.seen().iter().any(|r| r.header("authorization") == Some(&format!("Bearer {GH_TOKEN}"))));
    assert_eq!(github.issues().len(), 1);
    assert!(ado.recorder.seen().iter().any(|r| r.header("authorization").is_some_and(|a| a.starts_with("Basic "))));
    assert!(slack.seen().iter().any(|r| r.path.contains("SluiceSecret0003")));
    assert!(teams.seen().iter().any(|r| r.query.contains("SluiceSecret0004")));
    let ado_status = client.status(&ids[1]).await.expect("status");
    assert!(
        ado_status
            .pointer("/backlog/lastError")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains("Azure DevOps answered 203 with a sign-in page")),
        "{}",
        ado_status["backlog"]
    );
    assert!(
        history_text(&ado_status).contains("Notify failed: slack: Slack webhook answered 404: no_service for <webhook path>"),
        "{}",
        history_text(&ado_status)
    );

    // ...and appear nowhere Sluice writes or answers.
    let said = everything_said(&up, dir.path(), &ids.iter().map(String::as_str).collect::<Vec<_>>(), &refused).await;
    assert!(said.len() > 10_000, "collected too little to be a real check ({} bytes)", said.len());
    assert!(said.contains("backlog issue acme/shop#1 opened"), "the logs and history were collected");
    let ado_pat_b64 = base64::engine::general_purpose::STANDARD.encode(format!(":{ADO_PAT}"));
    for secret in [GH_TOKEN, ADO_PAT, &ado_pat_b64, "SluiceSecret0003", "SluiceSecret0004", "SluiceSecret0005", "SluiceSecret0006"] {
        if let Some(at) = said.find(secret) {
            let from = at.saturating_sub(200);
            panic!("secret {secret} leaked: …{}…", &said[from..(at + 100).min(said.len())]);
        }
    }
}

/// Retention through the timer, at its default: 401 days on, the tick
/// deletes the rolled-back rollout (state and history), says so in its
/// report, and leaves the one started since; the report still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_deletes_finished_rollouts_past_their_retention_and_nothing_newer() {
    let h = Harness::new(vec![]).await;
    let old = h.start(h.spec(json!([{"setWeight": 20}, {"pause": {}}]))).await;
    let (status, body) = h.api("POST", Some(&old), Some("abort"), json!({"reason": "enough"}), "alice").await;
    assert_eq!(status, 200, "{body}");
    h.drain().await;
    assert_eq!(h.status(&old).await["phase"], "Aborted");
    let report = functions::invoke_timer(&h.app, "tick", false).await.expect("tick");
    assert_eq!(report["pruned"], json!({"rollouts": 0, "releases": 0}), "nothing is old yet: {report}");

    h.clock.advance(401 * 86_400);
    let fresh = h.start(h.spec(json!([{"setWeight": 20}, {"pause": {}}]))).await;
    let report = functions::invoke_timer(&h.app, "tick", false).await.expect("tick");
    assert_eq!(report["pruned"], json!({"rollouts": 1, "releases": 0}), "{report}");
    let (status, body) = h.api("GET", Some(&old), None, Value::Null, "alice").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(h.status(&fresh).await["phase"], "Paused");
    let req = HttpRequest { method: "GET".into(), path: "/api/report".into(), ..HttpRequest::default() };
    let r = functions::invoke_http(&h.app, "report", req).await;
    assert_eq!(r.status, 200, "{}", r.json_body());
    assert_eq!(r.json_body()["overall"]["active"], 1, "{}", r.json_body());
}
