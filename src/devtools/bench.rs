//! `sluice bench`: the numbers that matter, measured on this machine rather
//! than asserted in tests.
//!
//! `rollback`: time from an alert POSTed to `/api/alerts` until the canary
//! weight 0 is applied at the router, and until the rolled-back state is
//! persisted, over many rollouts — next to a bare loopback HTTP round trip
//! measured in the same run, for scale. With `hanging` > 0 the world is
//! slow: each rollout runs that many background metrics against a
//! Prometheus URL that accepts connections and never answers, and its
//! backlog and channel hang the same way; the alert arrives while those
//! measurements are in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::devtools::router::{Router, Upstream};
use crate::devtools::sample_app::{self, Fault};
use crate::host::local::{self, LocalConfig};

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Summarises durations.
pub fn summarise(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    Summary { n: samples.len(), p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: at(1.0) }
}

/// Results of the rollback benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// Alert POST sent → router at weight 0.
    pub alert_to_router_zero: Summary,
    /// Alert POST sent → RolledBack persisted in the store.
    pub alert_to_persisted: Summary,
    /// Alert POST sent → 202 received.
    pub alert_accepted: Summary,
    /// A bare loopback HTTP GET round trip.
    pub loopback_round_trip: Summary,
    /// p50 of router-zero over p50 of the round trip.
    pub ratio_p50: f64,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

pub(crate) fn fail(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

/// A listener that accepts connections and never answers: a backend that hangs.
struct Hanging {
    url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hanging {
    async fn start() -> Result<Hanging, BenchError> {
        let listener = tokio::net::TcpListener::bind(loopback()).await.map_err(fail)?;
        let url = format!("http://{}", listener.local_addr().map_err(fail)?);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        });
        Ok(Hanging { url, accepted })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The bench rollout's spec: 20 % and a pause; in a slow world, `hanging`
/// background metrics, a backlog and a channel on the hanging listener.
fn bench_spec(target: &str, router: &str, hanging: Option<(&Hanging, usize)>) -> serde_json::Value {
    let mut spec = json!({
        "target": {"name": target, "router": {"provider": "local", "settings": {"url": router}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
    });
    if let Some((slow, n)) = hanging {
        let metrics: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                json!({"name": format!("m{i}"), "provider": "prometheus", "query": "up", "successCondition": "< 1",
                             "interval": "2s", "settings": {"url": slow.url}})
            })
            .collect();
        spec["strategy"]["canary"]["analysis"] = json!({"metrics": metrics});
        spec["backlog"] = json!({"provider": "github", "settings": {"repository": "bench/slow", "apiUrl": slow.url}});
        spec["notifications"] = json!([{"provider": "webhook", "settings": {"urlSetting": "WEBHOOK_URL"}}]);
    }
    spec
}

/// Runs the rollback benchmark over `rollouts` rollouts, with `hanging`
/// background metrics on a backend that never answers (0: a healthy world).
pub async fn rollback(rollouts: usize, hanging: usize, progress: impl Fn(usize)) -> Result<RollbackReport, BenchError> {
    let slow = match hanging {
        0 => None,
        _ => Some(Hanging::start().await?),
    };
    let dir = tempfile_dir()?;
    let (v1, _) = sample_app::serve("v1", Arc::new(Fault::default()), loopback()).await.map_err(fail)?;
    let (v2, _) = sample_app::serve("v2", Arc::new(Fault::default()), loopback()).await.map_err(fail)?;
    let router = Router::new(
        Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{v1}") },
        Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{v2}") },
    );
    let router_url = router.serve(loopback(), loopback()).await.map_err(fail)?.admin_url();
    let config = LocalConfig {
        root: std::path::PathBuf::from("."),
        data_dir: dir.clone(),
        addr: loopback(),
        alert_token: Some("bench".into()),
        api_key: None,
        require_principal: false,
        issuers: Vec::new(),
        public_url: None,
        signed_in: None,
        write_token: None,
    };
    // The hanging backend is on loopback, and the backlog and channel need their settings.
    let hook = slow.as_ref().map(|s| format!("{}/hook", s.url)).unwrap_or_default();
    let settings: crate::ports::env::SettingsLookup = Arc::new(move |name| match name {
        "SLUICE_ALLOW_LOOPBACK_ENDPOINTS" => Some("true".into()),
        "GITHUB_TOKEN" => Some("bench-token".into()),
        "WEBHOOK_URL" => Some(hook.clone()),
        _ => None,
    });
    let host =
        local::start_with(config, |data_dir, public_url| async move { local::embedded_engine_with(&data_dir, public_url, settings) })
            .await
            .map_err(fail)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(8).build().map_err(fail)?;
    let base = host.url();
    let store = host.app.engine.store.clone();

    // The baseline: a bare GET on loopback, same client, same run.
    let mut round_trips = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        http.get(format!("http://{v1}/health")).send().await.map_err(fail)?.bytes().await.map_err(fail)?;
        round_trips.push(t.elapsed());
    }

    let (mut to_zero, mut to_saved, mut accepted) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rollouts {
        let target = format!("bench-{i}");
        let in_flight_before = slow.as_ref().map(Hanging::accepted).unwrap_or_default();
        let spec = bench_spec(&target, &router_url, slow.as_ref().map(|s| (s, hanging)));
        let created: serde_json::Value = http
            .post(format!("{base}/api/rollouts"))
            .header("x-sluice-user", "bench")
            .json(&spec)
            .send()
            .await
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        let id = created["id"].as_str().ok_or_else(|| fail(format!("no id in {created}")))?.to_string();
        // Wait until the canary holds 20% in a pause.
        let ready = Instant::now();
        loop {
            // In a slow world, also until all its measurements hang in flight.
            let hanging_now = slow.as_ref().map(|s| s.accepted() - in_flight_before >= hanging).unwrap_or(true);
            if let Some((r, _)) = store.load(&id).await.map_err(fail)? {
                if r.phase == crate::domain::rollout::Phase::Paused && router.route().weight == 20 && hanging_now {
                    break;
                }
            }
            if ready.elapsed() > Duration::from_secs(if hanging > 0 { 120 } else { 20 }) {
                return Err(fail(format!("rollout {id} did not reach its pause")));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let payload = crate::devtools::demo::canary_alert(0.3);
        let mut payload = payload;
        payload["data"]["customProperties"] = json!({"sluiceTarget": target});
        payload["data"]["essentials"]["alertTargetIDs"] = json!([]);
        let sent = Instant::now();
        let answer = http.post(format!("{base}/api/alerts?token=bench")).json(&payload).send().await.map_err(fail)?;
        let accepted_at = Instant::now();
        if answer.status().as_u16() != 202 {
            return Err(fail(format!("alert answered {}", answer.status())));
        }
        loop {
            let saved =
                matches!(store.load(&id).await.map_err(fail)?, Some((r, _)) if r.phase == crate::domain::rollout::Phase::RolledBack);
            if saved {
                to_saved.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > Duration::from_secs(20) {
                return Err(fail(format!("rollout {id} was not rolled back")));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let zero_at = router.changed_at();
        if router.route().weight != 0 {
            return Err(fail("the router is not at 0 after the rollback"));
        }
        to_zero.push(zero_at.saturating_duration_since(sent));
        accepted.push(accepted_at - sent);
        progress(i + 1);
    }
    host.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let zero = summarise(to_zero);
    let rt = summarise(round_trips);
    Ok(RollbackReport {
        ratio_p50: if rt.p50_ms > 0.0 { zero.p50_ms / rt.p50_ms } else { 0.0 },
        alert_to_router_zero: zero,
        alert_to_persisted: summarise(to_saved),
        alert_accepted: summarise(accepted),
        loopback_round_trip: rt,
    })
}

pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    Ok(dir)
}

/// Results of the start-up benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Process exec → first `GET /` answered.
    pub exec_to_ready: Summary,
    /// Seconds idle before reading RSS.
    pub idle_secs: u64,
    /// Median resident memory when idle, MiB.
    pub idle_rss_mib_p50: f64,
    /// Smallest, MiB.
    pub idle_rss_mib_min: f64,
    /// Largest, MiB.
    pub idle_rss_mib_max: f64,
}

pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// The anonymous part of the resident memory (heap, stacks): what a leak
/// grows; the rest is the executable's and libraries' pages, read on use.
pub(crate) fn anonymous_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "RssAnon:")
}

/// A `kB` line of `/proc/PID/status` (proc(5)), in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts `exe serve` `runs` times as the Functions host would, timing exec
/// to the first answered `GET /`, then reads its idle resident memory.
pub async fn startup(exe: &std::path::Path, runs: usize) -> Result<StartupReport, BenchError> {
    let http = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().map_err(fail)?;
    let idle = Duration::from_secs(2);
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let dir = tempfile_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(fail)?.port();
        let started = Instant::now();
        let mut child = tokio::process::Command::new(exe)
            .arg("serve")
            .current_dir(&dir)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("SLUICE_STORE", "sqlite")
            .env("SLUICE_QUEUE", "embedded")
            .env("SLUICE_DATA_DIR", dir.join("data"))
            .env("SLUICE_ALERT_TOKEN", "bench-token-0123456789")
            .env("SLUICE_API_KEY", "bench-key-0123456789abcdef")
            .env("SLUICE_TRUST_NAMES", "true")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(fail)?;
        let url = format!("http://127.0.0.1:{port}/");
        loop {
            if http.get(&url).send().await.is_ok() {
                times.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(fail("sluice serve did not answer GET / within 60s (the host's limit)"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(idle).await;
        if let Some(m) = child.id().and_then(rss_mib) {
            rss.push(m);
        }
        let _ = child.kill().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
    rss.sort_by(f64::total_cmp);
    let median = rss.get(rss.len() / 2).copied().unwrap_or(0.0);
    Ok(StartupReport {
        exec_to_ready: summarise(times),
        idle_secs: idle.as_secs(),
        idle_rss_mib_p50: median,
        idle_rss_mib_min: rss.first().copied().unwrap_or(0.0),
        idle_rss_mib_max: rss.last().copied().unwrap_or(0.0),
    })
}
