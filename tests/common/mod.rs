//! A test rig: two sample API versions behind the local router, optional
//! load, and the local host — all on loopback, all real.

pub mod azurite;
pub mod oidc;
pub mod prom;
pub mod recorder;
pub mod servicebus_fake;
pub mod trackers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sluice::cli::client::Client;
use sluice::devtools::load::Load;
use sluice::devtools::router::{Router, Upstream};
use sluice::devtools::sample_app::{self, Fault};
use sluice::host::local::{self, LocalConfig, RunningHost};
use sluice::host::HostError;
use sluice::shell::engine::Engine;

pub const TOKEN: &str = "test-alert-token";
/// Sluice's own key (`SLUICE_API_KEY`), as the Bicep sets it beside the token issuers.
pub const API_KEY: &str = "rig-key-0123456789abcdefghijklmnop";
pub const RESOURCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Web/sites/orders-api";

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The apps and the router, without a host.
pub struct Upstreams {
    pub router: Arc<Router>,
    /// The router's admin API: what a spec's `local` router `url` names.
    pub router_url: String,
    /// Where users' requests go (the load).
    pub traffic_url: String,
    pub v2_fault: Arc<Fault>,
}

impl Upstreams {
    pub async fn start() -> Upstreams {
        let (v1, _) = sample_app::serve("v1", Arc::new(Fault::default()), loopback()).await.expect("v1");
        let v2_fault = Arc::new(Fault::default());
        let (v2, _) = sample_app::serve("v2", v2_fault.clone(), loopback()).await.expect("v2");
        let router = Router::new(
            Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{v1}") },
            Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{v2}") },
        );
        let at = router.serve(loopback(), loopback()).await.expect("router");
        Upstreams { router, router_url: at.admin_url(), traffic_url: at.traffic_url(), v2_fault }
    }

    pub fn fail_canary(&self, per_mille: u32) {
        self.v2_fault.errors_per_mille.store(per_mille, Ordering::Relaxed);
    }
}

pub struct Rig {
    pub up: Upstreams,
    pub host: RunningHost,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub load: Option<Load>,
}

impl Rig {
    pub async fn start() -> Rig {
        Self::start_with(|dir: PathBuf, url: String| async move { local::embedded_engine(&dir, url) }).await
    }

    pub async fn start_with<F, Fut>(make: F) -> Rig
    where
        F: FnOnce(PathBuf, String) -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Engine>, HostError>>,
    {
        Self::start_checking(Vec::new(), None, make).await
    }

    /// A rig whose host checks bearer tokens of `issuers`, and asks its key
    /// (`API_KEY`) where a token cannot stand in for it, as in Azure.
    pub async fn start_with_issuers(issuers: Vec<sluice::ports::identity::IssuerConfig>) -> Rig {
        let engine = |dir: PathBuf, url: String| async move { local::embedded_engine(&dir, url) };
        Self::start_checking(issuers, Some(API_KEY.into()), engine).await
    }

    /// A rig that checks no tokens but asks its key (`API_KEY`) of every caller, as `signIn: none` in Azure.
    pub async fn start_keyed() -> Rig {
        Self::start_checking(Vec::new(), Some(API_KEY.into()), |dir: PathBuf, url: String| async move { local::embedded_engine(&dir, url) })
            .await
    }

    async fn start_checking<F, Fut>(issuers: Vec<sluice::ports::identity::IssuerConfig>, api_key: Option<String>, make: F) -> Rig
    where
        F: FnOnce(PathBuf, String) -> Fut,
        Fut: std::future::Future<Output = Result<Arc<Engine>, HostError>>,
    {
        let up = Upstreams::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let host = local::start_with(
            LocalConfig {
                root: repo_root(),
                data_dir: dir.path().to_path_buf(),
                addr: loopback(),
                alert_token: Some(TOKEN.into()),
                api_key,
                require_principal: false,
                issuers,
                public_url: None,
                signed_in: None,
                write_token: None,
            },
            make,
        )
        .await
        .expect("local host starts");
        let client = Client::new(&host.url(), None, "pipeline");
        Rig { up, host, client, dir, load: None }
    }

    pub fn with_load(mut self, rps: u32) -> Rig {
        self.load = Some(Load::start(&self.up.traffic_url, rps, 4));
        self
    }

    pub fn as_user(&self, user: &str) -> Client {
        Client::new(&self.host.url(), None, user)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn spec(&self, steps: Value) -> Value {
        spec_for(&self.up.router_url, steps)
    }

    pub async fn wait(&self, id: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(&self.client, id, what, timeout, pred).await
    }

    pub async fn wait_phase(&self, id: &str, phase: &str) -> Value {
        self.wait(id, phase, Duration::from_secs(40), |s| s["phase"] == phase).await
    }

    pub async fn start_rollout(&self, spec: &Value) -> String {
        let r = self.client.start(spec, None).await.expect("rollout starts");
        r["id"].as_str().expect("an id").to_string()
    }

    pub fn backlog_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.dir.path().join("backlog")) {
            Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn notifications(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("notifications.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub async fn wait_for(client: &Client, id: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let status = client.status(id).await.expect("status");
        if pred(&status) {
            return status;
        }
        if start.elapsed() > timeout {
            panic!("timed out waiting for {what}; last status:\n{}", sluice::cli::view::status_text(&status));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn metric(name: &str, query: &str, condition: &str, count: Option<u32>) -> Value {
    let mut m = json!({"name": name, "provider": "local", "query": query, "successCondition": condition,
                       "interval": "1s", "initialDelay": "1s", "minSampleSize": 3});
    if let Some(c) = count {
        m["count"] = json!(c);
    }
    m
}

pub fn spec_for(router_url: &str, steps: Value) -> Value {
    json!({
        "target": {
            "name": "orders-api",
            "router": {"provider": "local", "settings": {"url": router_url}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"},
            "resourceIds": [RESOURCE]
        },
        "strategy": {"canary": {"steps": steps}},
        "backlog": {"provider": "local"},
        "notifications": [{"provider": "jsonl"}]
    })
}

/// A Common Alert Schema metric alert on the canary slot.
pub fn azure_alert(id: &str, condition: &str) -> Value {
    json!({
        "schemaId": "azureMonitorCommonAlertSchema",
        "data": {
            "essentials": {
                "alertId": id,
                "alertRule": "canary 5xx",
                "severity": "Sev1",
                "signalType": "Metric",
                "monitorCondition": condition,
                "monitoringService": "Platform",
                "alertTargetIDs": [format!("{}/slots/canary", RESOURCE.to_ascii_lowercase())],
                "configurationItems": ["orders-api-canary"],
                "originAlertId": "x",
                "firedDateTime": "2026-11-23T10:07:08.3962034Z",
                "description": "5xx above 5%",
                "essentialsVersion": "1.0",
                "alertContextVersion": "1.0"
            },
            "alertContext": {
                "conditionType": "SingleResourceMultipleMetricCriteria",
                "condition": {"windowSize": "PT5M", "allOf": [{
                    "metricName": "Http5xx", "operator": "GreaterThan", "threshold": "5",
                    "timeAggregation": "Total", "dimensions": [], "metricValue": 37.0
                }]}
            },
            "customProperties": null
        }
    })
}

/// Phase transitions in a status's history, as "from>to".
pub fn transitions(status: &Value) -> Vec<String> {
    status["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| e["from"] != e["to"])
                .map(|e| format!("{}>{}", e["from"].as_str().unwrap_or(""), e["to"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// The weights the rollout moved through (each distinct value once, in order).
pub fn weights(status: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for e in status["history"].as_array().into_iter().flatten() {
        let w = e["weight"].as_u64().unwrap_or(0);
        if out.last() != Some(&w) {
            out.push(w);
        }
    }
    out
}

/// `sluice up` as a child process on a free port, with everything it prints
/// (stdout and stderr) kept for the test to read.
pub struct UpProcess {
    pub child: tokio::process::Child,
    pub url: String,
    pub output: Arc<std::sync::Mutex<String>>,
    /// The write token `sluice up` keeps in its data directory.
    pub token: String,
}

impl UpProcess {
    pub async fn spawn(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)], log: &str) -> UpProcess {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["up", "--port", "0", "--data-dir"])
            .arg(dir)
            .arg("--root")
            .arg(repo_root())
            .args(args)
            .envs(env.iter().copied())
            .env("SLUICE_ALERT_TOKEN", TOKEN)
            .env("RUST_LOG", log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sluice up starts");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("output").push_str(&format!("{line}\n"));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line =
                tokio::time::timeout_at(deadline.into(), lines.next_line()).await.expect("sluice up prints its address").expect("reads");
            let line = line.expect("sluice up exited before listening");
            output.lock().expect("output").push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().expect("url").to_string();
                let sink = output.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        sink.lock().expect("output").push_str(&format!("{line}\n"));
                    }
                });
                let token = std::fs::read_to_string(dir.join("local-token")).expect("sluice up keeps its write token").trim().to_string();
                return UpProcess { child, url, output, token };
            }
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// A CLI client of this host acting as `user`, with its write token.
    pub fn client(&self, user: &str) -> Client {
        Client::new(&self.url, None, user).with_local_token(Some(self.token.clone()))
    }
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A peer that accepts connections and never answers: its `http://` URL.
pub async fn silent_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// One HTTP request as a client would send it, answered as (status, JSON or text).
pub async fn raw(base: &str, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    // A JSON client unless the test says otherwise.
    let mut headers = headers.to_vec();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        headers.push(("content-type", "application/json"));
    }
    raw_exact(base, method, path, body, &headers).await
}

/// The same request with exactly `headers` (none added).
pub async fn raw_exact(base: &str, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, format!("{base}{path}")).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the host answers (no dropped connection)");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
