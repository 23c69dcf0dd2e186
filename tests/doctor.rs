//! `sluice doctor` (`POST /api/doctor`) against wire-level fakes of what a
//! spec touches: ARM (the app, its slot, the caller's permissions from
//! `Microsoft.Authorization/permissions`, the routing), a Log Analytics
//! query, GitHub (the repository and the classic token's `X-OAuth-Scopes`),
//! Azure DevOps (a work item create with `validateOnly=true`), notification
//! settings, the store and the queue. Each failure is a blocker listed
//! first, and nothing is ever written.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};

use common::recorder::{Answer, Recorded, Recorder};
use sluice::functions::{self, App, HttpRequest};
use sluice::ports::clock::SystemClock;
use sluice::ports::env::AdapterEnv;
use sluice::shell::engine::Engine;

const SITE: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/orders";
const IDENTITY_HEADER: &str = "identity-header-doctor";

/// What the fake services answer; each test turns one thing bad.
#[derive(Clone)]
struct World {
    app_exists: bool,
    permissions: Value,
    query_status: u16,
    github_status: u16,
    github_scopes: Option<&'static str>,
    ado_status: u16,
}

impl Default for World {
    fn default() -> Self {
        World {
            app_exists: true,
            // Website Contributor, as infra/modules/target-access.bicep grants it.
            permissions: json!({"value": [{"actions": ["Microsoft.Web/sites/*", "Microsoft.Insights/alertRules/*"], "notActions": [], "dataActions": [], "notDataActions": []}]}),
            query_status: 200,
            github_status: 200,
            github_scopes: Some("repo, workflow"),
            ado_status: 200,
        }
    }
}

fn json_answer(status: u16, body: Value) -> Answer {
    (status, vec![("content-type".into(), "application/json".into())], body.to_string())
}

fn answer(world: &World, r: &Recorded) -> Answer {
    let path = r.path.as_str();
    if path == "/msi/token" {
        let resource = r.param("resource").unwrap_or_default();
        let expires = (Utc::now() + TimeDelta::hours(1)).timestamp().to_string();
        return json_answer(200, json!({"access_token": format!("token-for-{resource}"), "expires_on": expires, "token_type": "Bearer"}));
    }
    if path.starts_with(SITE) && !world.app_exists {
        return json_answer(
            404,
            json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'Microsoft.Web/sites/orders' was not found."}}),
        );
    }
    match (r.method.as_str(), path) {
        ("GET", p) if p == SITE => json_answer(200, json!({"name": "orders", "properties": {"state": "Running"}})),
        ("GET", p) if p == format!("{SITE}/slots/canary") => {
            json_answer(200, json!({"properties": {"defaultHostName": "orders-canary-b4c3.westeurope-01.azurewebsites.net"}}))
        }
        ("GET", p) if p == format!("{SITE}/providers/Microsoft.Authorization/permissions") => json_answer(200, world.permissions.clone()),
        ("GET", p) if p == format!("{SITE}/config/web") => json_answer(200, json!({"properties": {"experiments": {"rampUpRules": []}}})),
        ("POST", "/v1/workspaces/ws-1/query") if world.query_status != 200 => json_answer(
            world.query_status,
            json!({"error": {"code": "InsufficientAccessError", "message": "The provided credentials have insufficient access to perform the requested operation"}}),
        ),
        ("POST", "/v1/workspaces/ws-1/query") => json_answer(
            200,
            json!({"tables": [{"name": "PrimaryResult", "columns": [{"name": "rate", "type": "real"}, {"name": "samples", "type": "long"}], "rows": [[0.004, 812]]}]}),
        ),
        ("GET", "/repos/contoso/orders-api") if world.github_status == 200 => {
            let mut a = json_answer(
                200,
                json!({"full_name": "contoso/orders-api", "private": true, "has_issues": true,
                "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true}}),
            );
            if let Some(scopes) = world.github_scopes {
                a.1.push(("x-oauth-scopes".into(), scopes.into()));
            }
            a
        }
        ("GET", "/repos/contoso/orders-api") => {
            json_answer(world.github_status, json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}))
        }
        ("POST", "/contoso/orders/_apis/wit/workitems/$Bug") if world.ado_status == 203 => {
            (203, vec![("content-type".into(), "text/html".into())], "<html><title>Azure DevOps Services | Sign In</title></html>".into())
        }
        ("POST", "/contoso/orders/_apis/wit/workitems/$Bug") => json_answer(world.ado_status, json!({"id": -1, "fields": {}})),
        _ => json_answer(404, json!({"message": format!("the fake has no {} {path}", r.method)})),
    }
}

struct Rig {
    fake: Recorder,
    world: Arc<Mutex<World>>,
    _dir: tempfile::TempDir,
    app: App,
}

async fn rig(settings: &[(&'static str, &str)]) -> Rig {
    let world = Arc::new(Mutex::new(World::default()));
    let shared = world.clone();
    let fake = Recorder::start(move |r: &Recorded| answer(&shared.lock().expect("world"), r)).await;
    let mut all: BTreeMap<&'static str, String> = settings.iter().map(|(k, v)| (*k, v.to_string())).collect();
    all.insert("IDENTITY_ENDPOINT", format!("{}/msi/token", fake.url));
    all.insert("IDENTITY_HEADER", IDENTITY_HEADER.into());
    // The fake listens on loopback, which a deployment would refuse.
    all.entry("SLUICE_ALLOW_LOOPBACK_ENDPOINTS").or_insert_with(|| "true".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let env =
        AdapterEnv::with_settings(dir.path().to_path_buf(), "http://sluice.test".into(), Arc::new(move |k: &str| all.get(k).cloned()));
    let store = Arc::new(sluice::ports::store::sqlite::SqliteStore::open(&dir.path().join("state.db")).expect("store"));
    let queue =
        Arc::new(sluice::ports::queue::embedded::EmbeddedQueue::open(&dir.path().join("queue.db"), Arc::new(SystemClock)).expect("queue"));
    let engine = Arc::new(Engine::new(store, queue, env, Arc::new(SystemClock)));
    // Signed in by App Service authentication in front (WEBSITE_AUTH_ENABLED): the principal header acts.
    Rig { fake, world, _dir: dir, app: App { engine, alert_token: None, require_principal: true, tokens: None, api_key: None } }
}

impl Rig {
    fn spec(&self, backlog: Value) -> Value {
        json!({
            "target": {
                "name": "orders-api",
                "router": {"provider": "appServiceSlots", "settings": {"subscriptionId": "sub-1", "resourceGroup": "rg-1", "app": "orders", "slot": "canary", "armEndpoint": self.fake.url}},
                "stable": {"name": "production", "version": "v1"},
                "canary": {"name": "canary", "version": "v2"}
            },
            "strategy": {"canary": {"steps": [
                {"preview": {"check": {"path": "/healthz"}}},
                {"setWeight": 5},
                {"analysis": {"metrics": [{"name": "error-rate", "provider": "logAnalytics",
                    "query": "AppRequests | where AppRoleInstance == '{{name}}' | summarize rate = countif(Success == false) * 1.0 / count(), samples = count()",
                    "settings": {"workspaceId": "ws-1", "endpoint": self.fake.url}, "successCondition": "< 0.01", "interval": "1m"}]}},
                {"setWeight": 50}
            ]}},
            "backlog": backlog,
            "notifications": [{"provider": "teams", "settings": {"urlSetting": "TEAMS_URL"}}, {"provider": "slack", "settings": {"urlSetting": "SLACK_URL"}}]
        })
    }

    fn github(&self) -> Value {
        json!({"provider": "github", "settings": {"repository": "contoso/orders-api", "apiUrl": self.fake.url, "labels": ["release"]}})
    }

    async fn doctor(&self, body: Value) -> (u16, Value) {
        let req = HttpRequest {
            method: "POST".into(),
            path: "/api/doctor".into(),
            headers: [("content-type".to_string(), "application/json".to_string())].into_iter().collect(),
            body: body.to_string().into_bytes(),
            ..HttpRequest::default()
        };
        let r = functions::invoke_http(&self.app, "doctor", req).await;
        (r.status, r.json_body())
    }

    /// Every request that could change something: anything but reads and queries.
    fn writes(&self) -> Vec<String> {
        self.fake
            .seen()
            .into_iter()
            .filter(|r| r.method != "GET" && r.path != "/v1/workspaces/ws-1/query" && !r.query.contains("validateOnly=true"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

fn verdicts(report: &Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["verdict"].as_str().unwrap_or("").to_string(),
                c["area"].as_str().unwrap_or("").to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn find<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check '{name}' in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_in_place_is_ready_and_nothing_is_written() {
    let rig = rig(&[
        ("GITHUB_TOKEN", "ghp_secret_token_1"),
        ("TEAMS_URL", "https://teams.test/hook/secret"),
        ("SLACK_URL", "https://hooks.slack.test/secret"),
    ])
    .await;
    let (status, report) = rig.doctor(json!({"spec": rig.spec(rig.github())})).await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["ready"], true, "{report:#}");
    assert!(verdicts(&report).iter().all(|(v, _, _)| v == "ok"), "{report:#}");
    for action in
        ["Microsoft.Web/sites/config/write", "Microsoft.Web/sites/slots/slotsswap/action", "Microsoft.Web/sites/slots/stop/action"]
    {
        assert_eq!(find(&report, &format!("permission {action}"))["verdict"], "ok");
    }
    assert!(find(&report, "slot canary")["detail"]
        .as_str()
        .expect("detail")
        .contains("orders-canary-b4c3.westeurope-01.azurewebsites.net"));
    assert_eq!(find(&report, "current routing")["detail"], "readable: 0% on the canary");
    assert_eq!(find(&report, "metric error-rate (logAnalytics)")["detail"], "runs now: canary 0.004, stable 0.004 from 812 samples");
    // The smoke check has nothing to probe before a rollout's preview exists: said, not measured.
    let smoke = find(&report, "metric smoke (smoke check)");
    assert_eq!(
        (smoke["verdict"].as_str(), smoke["detail"].as_str()),
        (Some("ok"), Some("probes the preview address the router gives at the preview step"))
    );
    assert_eq!(find(&report, "token scopes")["verdict"], "ok");
    assert_eq!(find(&report, "rollout state")["verdict"], "ok");
    assert_eq!(find(&report, "step queue")["verdict"], "ok");
    assert_eq!(find(&report, "people's actions")["verdict"], "ok");
    assert!(rig.writes().is_empty(), "the doctor changed something: {:?}", rig.writes());
    let permissions = rig.fake.seen().into_iter().find(|r| r.path.ends_with("/Microsoft.Authorization/permissions")).expect("asked ARM");
    assert_eq!(permissions.param("api-version").as_deref(), Some("2022-04-01"));
    assert_eq!(permissions.header("authorization"), Some("Bearer token-for-https://management.azure.com/"));
    let text = report.to_string();
    for secret in ["ghp_secret_token_1", "teams.test/hook/secret", "hooks.slack.test/secret", "token-for-"] {
        assert!(!text.contains(secret), "a secret reached the report: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_a_blocker_and_blockers_come_first() {
    let rig = rig(&[("GITHUB_TOKEN", "ghp_expired"), ("TEAMS_URL", "https://teams.test/hook/secret")]).await;
    {
        let mut world = rig.world.lock().expect("world");
        // A role that may write the config but not swap: promotion would fail.
        world.permissions =
            json!({"value": [{"actions": ["Microsoft.Web/sites/*"], "notActions": ["Microsoft.Web/sites/slots/slotsswap/action"]}]});
        world.query_status = 403;
        world.github_status = 401;
    }
    let (status, report) = rig.doctor(rig.spec(rig.github())).await;
    assert_eq!(status, 200);
    assert_eq!(report["ready"], false);
    let all = verdicts(&report);
    let blockers: Vec<&str> = all.iter().filter(|(v, _, _)| v == "blocker").map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(
        blockers,
        ["permission Microsoft.Web/sites/slots/slotsswap/action", "metric error-rate (logAnalytics)", "token", "slack"],
        "{report:#}"
    );
    let first_other = all.iter().position(|(v, _, _)| v != "blocker").expect("other checks");
    assert!(all[first_other..].iter().all(|(v, _, _)| v != "blocker"), "blockers first: {all:?}");
    assert!(find(&report, "permission Microsoft.Web/sites/slots/slotsswap/action")["detail"].as_str().expect("d").contains("promoting"));
    assert!(find(&report, "metric error-rate (logAnalytics)")["detail"].as_str().expect("d").contains("403"));
    assert!(find(&report, "slack")["detail"].as_str().expect("d").contains("SLACK_URL"));
    assert_eq!(find(&report, "permission Microsoft.Web/sites/config/write")["verdict"], "ok");
    assert!(rig.writes().is_empty(), "{:?}", rig.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_app_stops_the_router_checks_there() {
    let mut rig = rig(&[("GITHUB_TOKEN", "ghp_x"), ("TEAMS_URL", "https://t"), ("SLACK_URL", "https://s")]).await;
    rig.app.require_principal = false;
    rig.world.lock().expect("world").app_exists = false;
    let (_, report) = rig.doctor(rig.spec(rig.github())).await;
    let router: Vec<_> = verdicts(&report).into_iter().filter(|(_, area, _)| area == "router").collect();
    assert_eq!(router, [("blocker".to_string(), "router".to_string(), "app".to_string())]);
    assert!(find(&report, "app")["detail"].as_str().expect("d").contains("404"), "{report:#}");
    assert_eq!(find(&report, "people's actions")["verdict"], "warning", "without sign-in, names are self-asserted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_tokens_without_scopes_and_classic_tokens_without_repo() {
    let rig = rig(&[("GITHUB_TOKEN", "github_pat_fine"), ("TEAMS_URL", "https://t"), ("SLACK_URL", "https://s")]).await;
    rig.world.lock().expect("world").github_scopes = None;
    let (_, report) = rig.doctor(rig.spec(rig.github())).await;
    assert_eq!(find(&report, "token permissions")["verdict"], "warning", "a fine-grained token cannot be read: {report:#}");
    assert_eq!(report["ready"], true, "a warning is not a blocker");
    rig.world.lock().expect("world").github_scopes = Some("read:org, gist");
    let (_, report) = rig.doctor(rig.spec(rig.github())).await;
    let scopes = find(&report, "token scopes");
    assert_eq!(scopes["verdict"], "blocker");
    assert!(scopes["detail"].as_str().expect("d").contains("needs repo"), "{scopes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_devops_is_checked_by_a_create_that_is_only_validated() {
    let rig = rig(&[("AZURE_DEVOPS_PAT", "pat-secret-9"), ("TEAMS_URL", "https://t"), ("SLACK_URL", "https://s")]).await;
    let ado = json!({"provider": "azureDevOps", "settings": {"organization": "contoso", "project": "orders", "orgUrl": format!("{}/contoso", rig.fake.url), "areaPath": "orders\\api"}});
    let (_, report) = rig.doctor(rig.spec(ado.clone())).await;
    assert_eq!(find(&report, "create a Bug (validate only)")["verdict"], "ok", "{report:#}");
    let sent = rig.fake.seen().into_iter().find(|r| r.path.contains("_apis/wit/workitems")).expect("validated");
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.param("validateOnly").as_deref(), Some("true"));
    assert_eq!(sent.param("api-version").as_deref(), Some("7.1"));
    assert_eq!(sent.header("content-type"), Some("application/json-patch+json"));
    assert!(sent.header("authorization").expect("auth").starts_with("Basic "));
    assert_eq!(sent.json()[1], json!({"op": "add", "path": "/fields/System.AreaPath", "value": "orders\\api"}));

    rig.world.lock().expect("world").ado_status = 203;
    let (_, report) = rig.doctor(rig.spec(ado)).await;
    let check = find(&report, "create a Bug (validate only)");
    assert_eq!(check["verdict"], "blocker");
    assert!(check["detail"].as_str().expect("d").contains("not valid"), "{check}");
    assert!(!report.to_string().contains("pat-secret-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_or_method_is_refused_with_the_field_named() {
    let rig = rig(&[]).await;
    let mut spec = rig.spec(rig.github());
    spec["strategy"]["canary"]["steps"][0]["setWeight"] = json!(140);
    let (status, body) = rig.doctor(json!({ "spec": spec })).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("strategy.canary.steps[0].setWeight"), "{body:#}");
    let get = HttpRequest { method: "GET".into(), path: "/api/doctor".into(), ..HttpRequest::default() };
    assert_eq!(functions::invoke_http(&rig.app, "doctor", get).await.status, 405);
    assert!(rig.fake.seen().is_empty(), "nothing is checked for a spec that does not validate");
}

/// The alert webhook as a fake deployment answers it: Sluice's own refusal, or App Service authentication's.
#[derive(Clone, Copy)]
enum Webhook {
    SluiceRefusesTheMissingToken,
    SignInStopsIt,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_one_line_per_check_and_exits_by_the_blockers() {
    let report = json!({"ready": false, "checks": [
        {"area": "router", "name": "permission Microsoft.Web/sites/slots/slotsswap/action", "verdict": "blocker", "detail": "not granted"},
        {"area": "backlog", "name": "token permissions", "verdict": "warning", "detail": "cannot be read"},
        {"area": "store", "name": "rollout state", "verdict": "ok", "detail": "reachable"}
    ]});
    let shared = Arc::new(Mutex::new((report, Webhook::SluiceRefusesTheMissingToken)));
    let answer_with = shared.clone();
    let fake = Recorder::start(move |r: &Recorded| {
        let (report, webhook) = answer_with.lock().expect("r").clone();
        match (r.path.as_str(), webhook) {
            ("/api/alerts", Webhook::SluiceRefusesTheMissingToken) => {
                json_answer(401, json!({"error": "unauthorized", "message": "missing or wrong alert token", "field": "token"}))
            }
            // Easy Auth's Return401: no body of Sluice's.
            ("/api/alerts", Webhook::SignInStopsIt) => (401, vec![("www-authenticate".into(), "Bearer realm=\"x\"".into())], String::new()),
            _ => json_answer(200, report),
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, json!({"target": {"name": "x"}}).to_string()).expect("write");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("doctor")
            .arg(&spec_path)
            .args(["--url", &fake.url, "--key", "fn-key"])
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_ENTRA_APP")
            .output()
            .expect("runs")
    };
    let out = run();
    assert_eq!(out.status.code(), Some(1), "a blocker exits 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[0].starts_with("BLOCKER") && lines[0].contains("slotsswap"), "{stdout}");
    assert!(lines[1].starts_with("warning") && lines[2].starts_with("ok") && lines[3].starts_with("ok"), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("ok") && l.contains("alert webhook from outside")), "{stdout}");
    assert!(lines[4].contains("1 blocker"), "{stdout}");
    let seen = fake.seen();
    assert_eq!((seen[0].path.as_str(), seen[0].header("x-functions-key")), ("/api/doctor", Some("fn-key")));
    assert_eq!(seen[0].json()["spec"]["target"]["name"], "x");
    let probe = &seen[1];
    assert_eq!((probe.method.as_str(), probe.path.as_str()), ("POST", "/api/alerts"));
    assert_eq!((probe.header("x-functions-key"), probe.header("authorization")), (None, None), "probed as Azure Monitor calls: bare");
    assert_eq!(probe.header("content-type"), Some("text/plain"), "a body Sluice refuses before recording anything");

    let ready = json!({"ready": true, "checks": [{"area": "store", "name": "rollout state", "verdict": "ok", "detail": "reachable"}]});
    *shared.lock().expect("r") = (ready.clone(), Webhook::SluiceRefusesTheMissingToken);
    assert_eq!(run().status.code(), Some(0));
    *shared.lock().expect("r") = (ready, Webhook::SignInStopsIt);
    let out = run();
    assert_eq!(out.status.code(), Some(1), "sign-in in front of the webhook is a blocker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().next().is_some_and(|l| l.starts_with("BLOCKER") && l.contains("excludedPaths")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_probe_is_refused_by_sluice_itself_and_records_nothing() {
    let mut rig = rig(&[]).await;
    let probe = || HttpRequest {
        method: "POST".into(),
        path: "/api/alerts".into(),
        headers: [("content-type".to_string(), "text/plain".to_string())].into_iter().collect(),
        body: b"sluice doctor: is the webhook reachable?".to_vec(),
        ..HttpRequest::default()
    };
    rig.app.alert_token = Some("alert-token-7".into());
    let guarded = functions::invoke_http(&rig.app, "alerts", probe()).await;
    assert_eq!((guarded.status, guarded.json_body()["error"].as_str()), (401, Some("unauthorized")));
    rig.app.alert_token = None;
    let open = functions::invoke_http(&rig.app, "alerts", probe()).await;
    assert_eq!((open.status, open.json_body()["error"].as_str()), (415, Some("unsupported_media_type")));
    assert!(rig.app.engine.store.alerts(10).await.expect("alerts").is_empty(), "the probe is never recorded as an alert");
}
