//! `sluice serve` as the Azure Functions host drives it: readiness, the
//! invocation envelope in every documented form, forwarded and enveloped
//! HTTP, error semantics, configuration, and the deployment package.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use sluice::domain::release::{Release, ReleaseEntry};
use sluice::host::envelope;
use sluice::ports::store::{Etag, StoreError};

const TOKEN: &str = "serve-test-token-0123456789";
/// Sluice's own key, which `serve` requires (every function is anonymous at the host).
const API_KEY: &str = "serve-test-key-0123456789abcdef";

fn fixture(name: &str, rollout: &str) -> Value {
    fixture_with_router(name, rollout, "http://127.0.0.1:9")
}

/// A fixture with its rollout id filled in and its router pointed at `router`.
fn fixture_with_router(name: &str, rollout: &str, router: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/custom_handler").join(name);
    let text = std::fs::read_to_string(&path).expect("fixture").replace("ROLLOUT_ID", rollout).replace("http://127.0.0.1:9", router);
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

struct Serve {
    _child: tokio::process::Child,
    /// What `serve` printed on stdout (the Functions host sends it to Application Insights).
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start_serve(extra: &[(&str, &str)]) -> Serve {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_WORKER_RUNTIME", "Custom")
        .env("SLUICE_STORE", "sqlite")
        .env("SLUICE_QUEUE", "embedded")
        .env("SLUICE_DATA_DIR", dir.path())
        .env("SLUICE_ALERT_TOKEN", TOKEN)
        .env("SLUICE_API_KEY", API_KEY)
        .env("SLUICE_TRUST_NAMES", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("sluice serve starts");
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (sink, pipe) = (stdout.clone(), child.stdout.take().expect("stdout"));
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("stdout").push_str(&format!("{line}\n"));
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{url}/")).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "GET / never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Serve { _child: child, stdout, url, _dir: dir }
}

async fn post(url: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .header("x-azure-functions-invocationid", "7d2f4c8e-0000-4000-8000-000000000001")
        .body(body.to_vec())
        .send()
        .await
        .expect("answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[test]
fn service_bus_bodies_decode_in_every_form() {
    for name in ["servicebus-object.json", "servicebus-once.json", "servicebus-twice.json", "servicebus-base64.json"] {
        let doc = fixture(name, "sb-1");
        let inv = envelope::parse_invocation(doc.to_string().as_bytes()).expect("envelope");
        let input = envelope::decode_service_bus(&inv, "msg").unwrap_or_else(|e| panic!("{name}: {e}"));
        let body: Value = serde_json::from_str(&input.body).unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        assert_eq!(body["kind"], "start", "{name}");
        // The base64 form cannot have its id filled in as text.
        let id = if name.contains("base64") { "ROLLOUT_ID" } else { "sb-1" };
        assert_eq!(body["id"], id, "{name}");
        assert_eq!(input.message_id.as_deref(), Some("4e77c8b6a7a94d2f9f3b2a1c0d9e8f7a"), "{name}: MessageId JSON-decoded");
        assert_eq!(input.lock_token.as_deref(), Some("8a0c4a53-5f8e-4c2a-9a7d-2b1c3d4e5f60"), "{name}");
        let expected_count = if name.contains("base64") { 3 } else { 1 };
        assert_eq!(input.delivery_count, Some(expected_count), "{name}: DeliveryCount from a string");
        let at = input.enqueued_at.expect("an enqueued time");
        assert_eq!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "2026-11-23T10:07:08.396Z", "{name}");
    }
}

#[test]
fn timer_info_decodes_with_and_without_schedule_status() {
    let inv = envelope::parse_invocation(fixture("timer-with-status.json", "").to_string().as_bytes()).expect("envelope");
    let t = envelope::decode_timer(&inv, "timer").expect("timer");
    assert!(!t.past_due);
    assert_eq!(t.next.map(|n| n.to_rfc3339()), Some("2026-11-23T10:07:00+00:00".to_string()));
    let inv = envelope::parse_invocation(fixture("timer-without-status.json", "").to_string().as_bytes()).expect("envelope");
    let t = envelope::decode_timer(&inv, "timer").expect("timer");
    assert_eq!((t.past_due, t.last, t.next), (false, None, None));
    let inv = envelope::parse_invocation(fixture("timer-past-due-string.json", "").to_string().as_bytes()).expect("envelope");
    assert!(envelope::decode_timer(&inv, "timer").expect("timer").past_due);
}

#[test]
fn enveloped_http_requests_decode() {
    let inv = envelope::parse_invocation(fixture("http-get-status.json", "r-9").to_string().as_bytes()).expect("envelope");
    let req = envelope::decode_http(&inv, "req").expect("http");
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/api/rollouts/r-9"));
    assert_eq!(req.query.get("code").map(String::as_str), Some("abc"), "Query given as a JSON string");
    assert_eq!(req.header("x-sluice-user"), Some("alice"), "header arrays flattened, names lower-cased");
    assert_eq!(req.params.get("id").map(String::as_str), Some("r-9"));
    let inv = envelope::parse_invocation(fixture("http-post-abort.json", "r-9").to_string().as_bytes()).expect("envelope");
    let req = envelope::decode_http(&inv, "req").expect("http");
    assert_eq!(String::from_utf8_lossy(&req.body), "{\"by\":\"bob\",\"reason\":\"wrong build\"}");
}

#[test]
fn bad_envelopes_name_the_problem() {
    let cases: [(&str, &str); 6] = [
        ("{\"Data\": ", "body"),
        ("[]", "body"),
        ("{\"Metadata\": {}}", "Data"),
        ("{\"Data\": 5}", "Data"),
        ("{\"Data\": {}, \"Metadata\": \"x\"}", "Metadata"),
        ("{\"Data\": {\"msg\": 7}}", "Data.msg"),
    ];
    for (text, field) in cases {
        let err = envelope::parse_invocation(text.as_bytes()).and_then(|inv| envelope::decode_service_bus(&inv, "msg").map(|_| ()));
        let err = err.expect_err(text);
        assert_eq!(err.field, field, "{text}: {err}");
    }
    let inv = envelope::parse_invocation(b"{\"Data\": {\"msg\": \"not json, not base64!\"}}").expect("envelope");
    assert!(envelope::decode_service_bus(&inv, "msg").expect_err("garbage").message.contains("neither JSON nor base64"));
    let inv = envelope::parse_invocation(b"{\"Data\": {\"timer\": {\"IsPastDue\": 3}}}").expect("envelope");
    assert_eq!(envelope::decode_timer(&inv, "timer").expect_err("bad").field, "Data.timer.IsPastDue");
    let inv = envelope::parse_invocation(b"{\"Data\": {\"req\": {\"Url\": \"http://x/api/rollouts\"}}}").expect("envelope");
    assert_eq!(envelope::decode_http(&inv, "req").expect_err("no method").field, "Data.req.Method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_handles_every_trigger_form_with_the_exact_response_shape() {
    let serve = start_serve(&[]).await;
    let upstreams = common::Upstreams::start().await;
    // Service Bus: each body form starts its own rollout (a pipeline posting to the queue).
    for (i, name) in
        ["servicebus-object.json", "servicebus-once.json", "servicebus-twice.json", "servicebus-base64.json"].iter().enumerate()
    {
        let mut doc = fixture_with_router(name, &format!("sb-{i}"), &upstreams.router_url);
        // Give each its own target so all four can be active at once.
        let rewrite = |v: &mut Value| {
            v["spec"]["target"]["name"] = json!(format!("fixture-api-{i}"));
            v["spec"]["target"]["router"]["settings"]["url"] = json!(upstreams.router_url);
            v["id"] = json!(format!("sb-{i}"));
        };
        let mut msg: Value = serde_json::from_str(&envelope::decode_body(&doc["Data"]["msg"], "msg").expect("decodes")).expect("json");
        rewrite(&mut msg);
        // Put it back in the same form the fixture used.
        doc["Data"]["msg"] = match *name {
            "servicebus-object.json" => msg,
            "servicebus-once.json" => json!(msg.to_string()),
            "servicebus-twice.json" => json!(json!(msg.to_string()).to_string()),
            _ => {
                use base64::Engine as _;
                json!(base64::engine::general_purpose::STANDARD.encode(msg.to_string()))
            }
        };
        let (status, body) = post(&serve.url, "/steps", doc.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{name}: {body}");
        let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["Logs", "Outputs", "ReturnValue"], "{name}");
        assert!(body["Logs"][0].as_str().expect("a log line").contains("handled"), "{name}: {body}");
        assert_eq!(body["Outputs"], json!({}));
    }
    // Forwarded HTTP reaches the same handlers.
    // The function is anonymous at the host: Sluice asks its own key, and a call without it changes nothing.
    let keyless = sluice::cli::client::Client::new(&serve.url, None, "alice");
    match keyless.status("sb-0").await {
        Err(sluice::cli::client::ClientError::Http { status: 401, body }) => {
            assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("missing_key"), Some("x-functions-key")), "{body}")
        }
        other => panic!("a call without the key: {other:?}"),
    }
    let client = sluice::cli::client::Client::new(&serve.url, Some(API_KEY.into()), "alice");
    let status = common::wait_for(&client, "sb-0", "started", Duration::from_secs(10), |s| s["phase"] != "Pending").await;
    assert_eq!(status["target"], "fixture-api-0");
    // Enveloped HTTP: GET status and POST abort through /api with Data.req, the key in the
    // query as a caller's `?code=` reaches the handler; the fixture's own `abc` is no key.
    let with_key = |mut doc: Value, key: &str| {
        doc["Data"]["req"]["Query"] = json!(json!({"code": key}).to_string());
        doc
    };
    let (code, body) = post(&serve.url, "/api", fixture("http-get-status.json", "sb-0").to_string().as_bytes()).await;
    assert_eq!((code, &body["Outputs"]["res"]["statusCode"]), (200, &json!(401)), "{body}");
    assert_eq!(body["Outputs"]["res"]["body"]["error"], "invalid_key", "{body}");
    let (code, body) = post(&serve.url, "/api", with_key(fixture("http-get-status.json", "sb-0"), API_KEY).to_string().as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{body}");
    assert_eq!(res["headers"]["Content-Type"], "application/json");
    assert_eq!(res["body"]["id"], "sb-0", "the body is a JSON object, not a string the host might base64-decode");
    let (code, body) = post(&serve.url, "/api", with_key(fixture("http-post-abort.json", "sb-1"), API_KEY).to_string().as_bytes()).await;
    assert_eq!((code, body["Outputs"]["res"]["statusCode"].clone()), (200, json!(200)), "{body}");
    common::wait_for(&client, "sb-1", "aborted", Duration::from_secs(10), |s| s["phase"] == "Aborted").await;
    // A finished rollout prints its sluice.metric line on stdout, once, for Application Insights.
    let started = Instant::now();
    let metric_lines = loop {
        let out = serve.stdout.lock().expect("stdout").clone();
        let lines: Vec<String> = out.lines().filter(|l| l.starts_with("sluice.metric ")).map(String::from).collect();
        if !lines.is_empty() || started.elapsed() > Duration::from_secs(5) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metric_lines.len(), 1, "{metric_lines:?}");
    let line: Value = serde_json::from_str(metric_lines[0].trim_start_matches("sluice.metric ")).expect("one JSON object");
    assert_eq!((line["id"].as_str(), line["phase"].as_str(), line["cause"].as_str()), (Some("sb-1"), Some("Aborted"), Some("aborted")));
    // Timer, with and without ScheduleStatus, and past due.
    for name in ["timer-with-status.json", "timer-without-status.json", "timer-past-due-string.json"] {
        let (code, body) = post(&serve.url, "/tick", fixture(name, "").to_string().as_bytes()).await;
        assert_eq!(code, 200, "{name}: {body}");
        // The sweep reads the due index: the rollouts here wait for nothing the timer does.
        let report = &body["ReturnValue"];
        assert_eq!((report["visited"].as_u64(), report["errors"].as_u64()), (Some(0), Some(0)), "{name}: {body}");
        if name.contains("past-due") {
            assert_eq!(body["Logs"][0], "the timer is past due");
        }
    }
    // A message that can never succeed is acknowledged with a log line, not retried.
    let unknown = json!({"Data": {"msg": {"kind": "event", "rollout": "no-such-rollout", "event": {"type": "start"}}}, "Metadata": {"MessageId": "\"m-x\""}});
    let (code, body) = post(&serve.url, "/steps", unknown.to_string().as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["Logs"][0].as_str().expect("log").contains("message m-x can never succeed"), "{body}");
    let malformed = json!({"Data": {"msg": {"kind": "teleport"}}, "Metadata": {}});
    let (code, body) = post(&serve.url, "/steps", malformed.to_string().as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["Logs"][0].as_str().expect("log").contains("not a step message"), "{body}");
    // Bad envelopes: a 4xx naming the problem; but a Service Bus message is
    // acknowledged (a non-2xx makes the host redeliver it ten times), the
    // reason in `Logs` and the field in `ReturnValue`.
    for (path, text, field) in
        [("/tick", "{\"Data\": {\"timer\": []}}", "Data.timer"), ("/api", "{\"Data\": {\"req\": {\"Method\": \"GET\"}}}", "Data.req.Url")]
    {
        let (code, body) = post(&serve.url, path, text.as_bytes()).await;
        assert_eq!((code, body["field"].as_str()), (400, Some(field)), "{path} {text}: {body}");
    }
    for (text, field) in [("{\"Data\": ", "body"), ("{\"Metadata\": {}}", "Data"), ("{\"Data\": {\"msg\": 7}}", "Data.msg")] {
        let (code, body) = post(&serve.url, "/steps", text.as_bytes()).await;
        assert_eq!((code, body["ReturnValue"]["field"].as_str()), (200, Some(field)), "{text}: {body}");
        assert!(body["Logs"][0].as_str().unwrap_or("").contains("acknowledged without processing"), "{body}");
    }
    drop(serve);
}

/// A store that is down: every call fails as a transient error would.
struct DownStore;

#[async_trait]
impl sluice::ports::store::Store for DownStore {
    async fn create(
        &self,
        _: &sluice::domain::rollout::Rollout,
        _: &sluice::domain::rollout::HistoryEntry,
    ) -> Result<sluice::ports::store::Etag, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn load(
        &self,
        _: &str,
    ) -> Result<Option<(sluice::domain::rollout::Rollout, sluice::ports::store::Etag)>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn save(
        &self,
        _: &sluice::domain::rollout::Rollout,
        _: &sluice::ports::store::Etag,
        _: &[sluice::domain::rollout::HistoryEntry],
    ) -> Result<sluice::ports::store::Etag, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn history(&self, _: &str) -> Result<Vec<sluice::domain::rollout::HistoryEntry>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn list(
        &self,
        _: &sluice::ports::store::ListFilter,
    ) -> Result<Vec<sluice::domain::rollout::Rollout>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn due(
        &self,
        _: chrono::DateTime<chrono::Utc>,
        _: usize,
    ) -> Result<Vec<sluice::domain::ids::RolloutId>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn active_by_alert_keys(&self, _: &[String]) -> Result<Vec<sluice::domain::rollout::Rollout>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn active_for_target(&self, _: &str) -> Result<Option<String>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn record_alert(&self, _: &sluice::ports::store::AlertRecord) -> Result<(), sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn alerts(&self, _: usize) -> Result<Vec<sluice::ports::store::AlertRecord>, sluice::ports::store::StoreError> {
        Err(sluice::ports::store::StoreError::Unavailable("connection refused".into()))
    }
    async fn alert_delivered(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(down())
    }
    fn transactions(&self) -> u64 {
        0
    }
    async fn create_release(&self, _: &Release, _: &ReleaseEntry) -> Result<Etag, StoreError> {
        Err(down())
    }
    async fn load_release(&self, _: &str) -> Result<Option<(Release, Etag)>, StoreError> {
        Err(down())
    }
    async fn save_release(&self, _: &Release, _: &Etag, _: &[ReleaseEntry]) -> Result<Etag, StoreError> {
        Err(down())
    }
    async fn release_history(&self, _: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        Err(down())
    }
    async fn list_releases(&self, _: usize) -> Result<Vec<Release>, StoreError> {
        Err(down())
    }
    async fn due_releases(&self, _: chrono::DateTime<chrono::Utc>, _: usize) -> Result<Vec<sluice::domain::ids::RolloutId>, StoreError> {
        Err(down())
    }
    async fn save_pipeline_wait(&self, _: &sluice::domain::pipeline_wait::PipelineWait) -> Result<(), StoreError> {
        Err(down())
    }
    async fn pipeline_waits(&self, _: Option<&str>, _: usize) -> Result<Vec<sluice::domain::pipeline_wait::PipelineWait>, StoreError> {
        Err(down())
    }
    async fn drop_pipeline_wait(&self, _: &str, _: &uuid::Uuid) -> Result<(), StoreError> {
        Err(down())
    }
    async fn prune_finished(&self, _: chrono::DateTime<chrono::Utc>, _: usize) -> Result<sluice::ports::store::Pruned, StoreError> {
        Err(down())
    }
}

fn down() -> StoreError {
    StoreError::Unavailable("connection refused".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_answers_non_2xx_so_the_host_redelivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Arc::new(
        sluice::ports::queue::embedded::EmbeddedQueue::open(&dir.path().join("q.db"), Arc::new(sluice::ports::clock::SystemClock))
            .expect("queue"),
    );
    let env = sluice::ports::env::AdapterEnv::new(dir.path().to_path_buf(), "http://x".into());
    let engine = Arc::new(sluice::shell::engine::Engine::new(Arc::new(DownStore), queue, env, Arc::new(sluice::ports::clock::SystemClock)));
    let app = Arc::new(sluice::functions::App { engine, alert_token: None, require_principal: false, tokens: None, api_key: None });
    let settings = sluice::host::HostSettings::embedded().expect("host.json");
    let defs = sluice::host::definitions::embedded_definitions().expect("defs");
    let server = sluice::host::custom_handler::start(app, settings, defs, common::loopback(), false).await.expect("serves");
    let url = format!("http://{}", server.addr);
    let msg = json!({"Data": {"msg": "{\"kind\":\"event\",\"rollout\":\"r-1\",\"event\":{\"type\":\"start\"}}"}, "Metadata": {"DeliveryCount": "2"}});
    let (code, body) = post(&url, "/steps", msg.to_string().as_bytes()).await;
    assert_eq!(code, 500, "{body}");
    assert!(body["Logs"][0].as_str().expect("log").contains("(delivery 2) failed and will be redelivered"), "{body}");
    let (code, body) = post(&url, "/tick", fixture("timer-without-status.json", "").to_string().as_bytes()).await;
    assert_eq!(code, 500, "a failed tick is reported, and the next occurrence runs: {body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_up_route_the_same_functions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = sluice::host::local::start(sluice::host::local::LocalConfig {
        root: common::repo_root(),
        data_dir: dir.path().to_path_buf(),
        addr: common::loopback(),
        alert_token: None,
        api_key: None,
        require_principal: false,
        issuers: Vec::new(),
        public_url: None,
        signed_in: None,
        write_token: None,
    })
    .await
    .expect("up");
    let up: Vec<String> = host.functions.iter().map(|f| f.name.clone()).collect();
    let (_, served) = sluice::host::load_app_or_embedded(&common::repo_root()).expect("serve loads the same");
    let served: Vec<String> = served.iter().map(|f| f.name.clone()).collect();
    let embedded: Vec<String> = sluice::host::definitions::embedded_definitions().expect("defs").iter().map(|f| f.name.clone()).collect();
    assert_eq!(up, served);
    let mut embedded_sorted = embedded.clone();
    embedded_sorted.sort();
    assert_eq!(up, embedded_sorted, "the binary's built-in copies match functions/ on disk");
    host.stop().await;
}

#[test]
fn serve_fails_fast_naming_every_missing_setting_without_secrets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env_clear()
        .env("SLUICE_ALERT_TOKEN", "tok-secret-12")
        .env("SLUICE_STORE", "cosmos")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for setting in ["FUNCTIONS_CUSTOMHANDLER_PORT", "SLUICE_STORE", "SLUICE_QUEUE", "SLUICE_API_KEY", "SLUICE_ALERT_TOKEN"] {
        assert_eq!(stderr.lines().filter(|l| l.trim_start().starts_with(&format!("{setting}:"))).count(), 1, "{setting} in:\n{stderr}");
    }
    assert!(!stderr.contains("tok-secret-12"), "the secret leaked:\n{stderr}");
}

/// The package as scripts/test builds it (`sluice package`: no devtools,
/// zig-linked against glibc 2.31, stripped).
fn shipped_package() -> PathBuf {
    let path = std::env::var("SLUICE_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/sluice-functionapp.zip"));
    assert!(path.exists(), "{} is missing: scripts/test builds it with `sluice package --out dist`", path.display());
    path
}

#[test]
fn the_package_is_laid_out_as_the_functions_host_expects() {
    let zip_path = shipped_package();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).expect("zip")).expect("a zip");
    let mut names: Vec<String> =
        (0..archive.len()).map(|i| archive.by_index(i).expect("entry").name().expect("utf-8 name").to_string()).collect();
    names.sort();
    // Every handler's function.json at the root (the functions/ folder flattened), host.json and the binary.
    let mut expected: Vec<String> = sluice::functions::HANDLERS.iter().map(|h| format!("{h}/function.json")).collect();
    expected.extend(["host.json".to_string(), "sluice".to_string()]);
    expected.sort();
    assert_eq!(names, expected);
    assert!(names.contains(&"metrics/function.json".to_string()) && names.contains(&"report/function.json".to_string()));
    let mut host_json = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("host.json").expect("host.json"), &mut host_json).expect("read");
    let host: Value = serde_json::from_str(&host_json).expect("json");
    assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], "sluice");
    assert_eq!(host["customHandler"]["description"]["arguments"], json!(["serve"]));
    assert_eq!(host["extensionBundle"]["id"], "Microsoft.Azure.Functions.ExtensionBundle");
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api");
    let exe_bytes = {
        let mut exe = archive.by_name("sluice").expect("executable");
        // Unix mode bits are kept only in entries made on Unix; the host sets no execute bit itself on Flex.
        assert_eq!(exe.unix_mode().map(|m| m & 0o777), Some(0o755), "the executable is executable");
        assert!(exe.size() > 1_000_000 && exe.size() <= sluice::cli::package::MAX_EXECUTABLE_BYTES, "{} bytes", exe.size());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut exe, &mut bytes).expect("read");
        bytes
    };
    let glibc = sluice::cli::package::required_glibc(&exe_bytes).expect("a dynamically linked glibc executable");
    assert!(glibc <= sluice::cli::package::MAX_GLIBC, "needs GLIBC_{}.{}", glibc.0, glibc.1);
    // It runs here, and holds no devtools.
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("sluice");
    std::fs::write(&exe, &exe_bytes).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let help = std::process::Command::new(&exe).arg("--help").output().expect("the shipped executable runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("serve") && !help.contains("demo") && !help.contains("bench"), "{help}");
    let steps: Value = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("steps/function.json").expect("steps"), &mut s).expect("read");
        serde_json::from_str(&s).expect("json")
    };
    assert_eq!(steps["bindings"][0]["queueName"], "rollout-steps");
    assert_eq!(steps["bindings"][0]["connection"], "ServiceBusConnection");
}

#[test]
fn packaging_refuses_an_executable_that_needs_a_newer_glibc() {
    let test_binary = std::fs::read(env!("CARGO_BIN_EXE_sluice")).expect("binary");
    let needs = sluice::cli::package::required_glibc(&test_binary).expect("glibc");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["package", "--binary", env!("CARGO_BIN_EXE_sluice"), "--out"])
        .arg(out_dir.path())
        .output()
        .expect("runs");
    if needs > sluice::cli::package::MAX_GLIBC {
        // Linked by the host's gcc against its own glibc: not what ships.
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("needs GLIBC_{}.{}", needs.0, needs.1)), "{stderr}");
    } else {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(sluice::cli::package::required_glibc(b"..GLIBC_2.17\0GLIBC_2.34\0GLIBC_PRIVATE\0"), Some((2, 34)));
}

/// The Functions host gives `GET /` 30 s (`HttpWorkerOptions.InitializationTimeout`
/// in azure-functions-host) and runs the app from a read-only package.
/// `serve` must answer before its store is reachable, and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_get_at_once_and_writes_nothing_while_the_store_is_unreachable() {
    // A managed-identity endpoint that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    let app_root = tempfile::tempdir().expect("app root");
    let port = free_port();
    let spawned = Instant::now();
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .current_dir(app_root.path())
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("SLUICE_STORE", "table")
        .env("SLUICE_TABLE_ACCOUNT", "sluicetest")
        .env("SLUICE_QUEUE", "servicebus")
        .env("SLUICE_SERVICEBUS_CONNECTION", "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0")
        .env("IDENTITY_ENDPOINT", format!("http://{hang_addr}/msi/token"))
        .env("IDENTITY_HEADER", "x")
        .env("SLUICE_ALERT_TOKEN", TOKEN)
        .env("SLUICE_API_KEY", API_KEY)
        .env("SLUICE_TRUST_NAMES", "true")
        .env("RUST_LOG", "warn")
        .env_remove("SLUICE_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice serve starts");
    let http = reqwest::Client::new();
    let answer = loop {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/")).send().await {
            break r.json::<Value>().await.expect("json");
        }
        assert!(spawned.elapsed() < Duration::from_secs(10), "GET / never answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let answered_in = spawned.elapsed();
    assert!(answered_in < Duration::from_secs(5), "GET / took {answered_in:?}");
    assert_eq!((answer["ready"].as_bool(), answer["warm"].as_bool()), (Some(true), Some(false)), "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written: Vec<_> = std::fs::read_dir(app_root.path()).expect("read").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(written.is_empty(), "serve wrote into the app root: {written:?}");
}
