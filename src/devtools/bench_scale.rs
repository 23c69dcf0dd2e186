//! `sluice bench scale`: what holding many active rollouts costs.
//!
//! For each size N it fills a fresh store with N active rollouts (each at
//! 20 % in a 24-hour pause, so nothing is due), starts `sluice up` on that
//! store as its own process, and measures from outside, the way a load tool
//! would: the timer sweep with nothing due, `GET /api/rollouts?limit=200`,
//! alert acknowledgements at 16 concurrent (alerts that match nothing, and
//! alerts that each match one rollout), one alert at a time until the router
//! is at 0 % and until RolledBack is persisted, and the server's resident
//! memory at the end. The embedded store, or Table Storage on Azurite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};

use super::bench::{fail, rss_mib, summarise, tempfile_dir, BenchError, Summary};
use crate::devtools::azurite::Azurite;
use crate::devtools::router::{Router, Upstream};
use crate::domain::ids::{Actor, RolloutId};
use crate::domain::rollout::{decide, Event, Phase, Rollout};
use crate::ports::clock::SystemClock;
use crate::ports::store::Store;

/// Concurrent clients in the alert bursts.
const CONCURRENCY: usize = 16;
/// Alerts sent one at a time, each to its own rollout.
const SINGLE_ALERTS: usize = 50;
/// Sweeps timed per size.
const SWEEPS: usize = 5;
/// List requests timed per size.
const LISTS: usize = 20;
/// The alert token the benchmarks' `sluice up` requires.
pub(crate) const TOKEN: &str = "bench-scale-token-0123456789";

/// Which store the server runs on.
#[derive(Debug, Clone)]
pub enum ScaleStore {
    /// The embedded SQLite store and queue (`sluice up`'s default).
    Embedded,
    /// Table Storage on an Azurite started from this `azurite-table` executable.
    Azurite(PathBuf),
}

/// An alert burst at [`CONCURRENCY`] clients.
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    /// Acknowledgements (HTTP 202) per second.
    pub acks_per_sec: f64,
    /// Latency of each acknowledgement.
    pub latency: Summary,
    /// Answers other than 202.
    pub errors: usize,
}

/// The figures for one size.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Active rollouts held.
    pub rollouts: usize,
    /// Seconds to create them (in the bench process, straight into the store).
    pub populate_secs: f64,
    /// One timer sweep with nothing due.
    pub sweep_nothing_due: Summary,
    /// `GET /api/rollouts?limit=200`.
    pub list_200: Summary,
    /// `GET /api/metrics`: the Prometheus exposition over every rollout held.
    pub metrics_scrape: Summary,
    /// `GET /api/report`: release health over every rollout held.
    pub report: Summary,
    /// Alerts that match no rollout.
    pub alerts_unmatched: Burst,
    /// Alerts that each match one rollout (and roll it back).
    pub alerts_matched: Burst,
    /// One alert at a time: POST sent → router at 0 %.
    pub alert_to_router_zero: Summary,
    /// One alert at a time: POST sent → RolledBack persisted.
    pub alert_to_persisted: Summary,
    /// The server's resident memory after all of the above, MiB.
    pub rss_mib: f64,
}

/// Runs the benchmark for each size, reporting progress in words.
pub async fn scale(
    exe: &Path,
    sizes: &[usize],
    store: &ScaleStore,
    burst: Duration,
    progress: impl Fn(&str),
) -> Result<Vec<ScaleRow>, BenchError> {
    let router = Router::new(
        Upstream { name: "stable".into(), version: "v1".into(), url: "http://127.0.0.1:9".into() },
        Upstream { name: "canary".into(), version: "v2".into(), url: "http://127.0.0.1:9".into() },
    );
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let router_url = router.serve(any, any).await.map_err(fail)?.admin_url();
    let mut rows = Vec::new();
    for &n in sizes {
        let azurite = match store {
            ScaleStore::Embedded => None,
            ScaleStore::Azurite(bin) => Some(Azurite::start(bin).map_err(fail)?),
        };
        let dir = tempfile_dir()?;
        let result = one_size(exe, n, &dir, azurite.as_ref(), &router, &router_url, burst, &progress).await;
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(result?);
    }
    Ok(rows)
}

fn resource_id(i: usize) -> String {
    format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bench/providers/Microsoft.Web/sites/bench-api-{i}")
}

fn target_name(i: usize) -> String {
    format!("bench-api-{i}")
}

/// A rollout at 20 % in a 24-hour pause: active, nothing due for a day.
fn paused_rollout(i: usize, router_url: &str) -> Result<(Rollout, crate::domain::rollout::HistoryEntry), BenchError> {
    let spec = json!({
        "target": {"name": target_name(i), "resourceIds": [resource_id(i)],
                   "router": {"provider": "local", "settings": {"url": router_url}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "24h"}}]}}
    });
    let (spec, plan) = crate::domain::spec::validate(&spec, &crate::ports::registry::names()).map_err(fail)?;
    let now = Utc::now();
    let id = RolloutId::parse(&format!("bench-{i:06}")).map_err(fail)?;
    let (r, first) = Rollout::new(id, spec, plan, Actor::parse("bench").map_err(fail)?, now);
    let started = decide(&r, Event::Start, now).next;
    let weight = started.traffic.weight;
    let paused = decide(&started, Event::TrafficConfirmed { weight }, now).next;
    if paused.phase.is_terminal() || paused.due_at.is_none() {
        return Err(fail(format!("the bench rollout is not waiting: {:?}", paused.phase)));
    }
    Ok((paused, first))
}

pub(crate) async fn open_store(dir: &Path, azurite: Option<&Azurite>) -> Result<Arc<dyn Store>, BenchError> {
    Ok(match azurite {
        None => Arc::new(crate::ports::store::sqlite::SqliteStore::open(&dir.join("sluice.db")).map_err(fail)?),
        Some(a) => {
            let conn = crate::ports::store::table::TableConnection::parse(&a.connection_string()).map_err(fail)?;
            Arc::new(crate::ports::store::table::TableStore::connect(&conn, "bench").await.map_err(fail)?)
        }
    })
}

async fn populate(store: &Arc<dyn Store>, n: usize, router_url: &str, progress: &impl Fn(&str)) -> Result<(), BenchError> {
    let mut next = 0;
    // A few creates in flight: Table Storage answers one request at a time per connection.
    while next < n {
        let batch: Vec<usize> = (next..n.min(next + 32)).collect();
        let work = batch.iter().map(|&i| {
            let store = store.clone();
            async move {
                let (r, first) = paused_rollout(i, router_url)?;
                store.create(&r, &first).await.map_err(fail)
            }
        });
        for r in futures::future::join_all(work).await {
            r?;
        }
        next += batch.len();
        if next % 1000 == 0 || next == n {
            progress(&format!("  created {next}/{n} rollouts"));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_size(
    exe: &Path,
    n: usize,
    dir: &Path,
    azurite: Option<&Azurite>,
    router: &Arc<Router>,
    router_url: &str,
    burst: Duration,
    progress: &impl Fn(&str),
) -> Result<ScaleRow, BenchError> {
    progress(&format!("N = {n}"));
    let store = open_store(dir, azurite).await?;
    let started = Instant::now();
    populate(&store, n, router_url, progress).await?;
    let populate_secs = started.elapsed().as_secs_f64();

    let server = Server::start(exe, dir, azurite).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).build().map_err(fail)?;

    progress("  timer sweep, nothing due");
    let sweep_nothing_due = sweeps(&store, dir).await?;
    progress("  GET /api/rollouts?limit=200");
    let list_200 =
        timed_gets(&http, format!("{}/api/rollouts?limit=200", server.url), |v| v["rollouts"].as_array().is_some_and(|r| !r.is_empty()))
            .await?;
    progress("  GET /api/metrics");
    let metrics_scrape = timed_gets(&http, format!("{}/api/metrics", server.url), |v| {
        v.as_str().is_some_and(|text| text.contains("sluice_rollouts_active{"))
    })
    .await?;
    progress("  GET /api/report");
    let report = timed_gets(&http, format!("{}/api/report", server.url), |v| v["overall"]["active"].as_u64() == Some(n as u64)).await?;
    progress("  alerts matching nothing, 16 concurrent");
    let alerts_unmatched = alert_burst(&http, &server.url, burst, usize::MAX, unmatched_alert).await;
    progress("  one alert at a time");
    let singles = SINGLE_ALERTS.min(n / 2);
    let (alert_to_router_zero, alert_to_persisted) = single_alerts(&http, &server.url, &store, router, singles).await?;
    progress("  alerts each matching a rollout, 16 concurrent");
    let first_matched = singles;
    let alerts_matched = alert_burst(&http, &server.url, burst, n - first_matched, move |k| matched_alert(first_matched + k)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss().unwrap_or(0.0);
    server.stop().await;
    Ok(ScaleRow {
        rollouts: n,
        populate_secs,
        sweep_nothing_due,
        list_200,
        metrics_scrape,
        report,
        alerts_unmatched: alerts_unmatched?,
        alerts_matched: alerts_matched?,
        alert_to_router_zero,
        alert_to_persisted,
        rss_mib: rss,
    })
}

/// Timer sweeps run in the bench process on the same store, as the host's timer runs them.
async fn sweeps(store: &Arc<dyn Store>, dir: &Path) -> Result<Summary, BenchError> {
    let clock: Arc<dyn crate::ports::clock::Clock> = Arc::new(SystemClock);
    let queue = Arc::new(crate::ports::queue::embedded::EmbeddedQueue::open(&dir.join("bench-queue.db"), clock.clone()).map_err(fail)?);
    let engine = crate::shell::engine::Engine::new(
        store.clone(),
        queue,
        crate::ports::env::AdapterEnv::new(dir.to_path_buf(), "http://127.0.0.1".into()),
        clock,
    );
    let mut times = Vec::new();
    for _ in 0..SWEEPS {
        let t = Instant::now();
        let report = engine.sweep().await.map_err(fail)?;
        times.push(t.elapsed());
        if report.acted > 0 {
            return Err(fail(format!("the sweep found work where nothing is due: {report:?}")));
        }
    }
    Ok(summarise(times))
}

/// GETs one URL `LISTS` times, timed to the last byte as a load tool
/// would; the body (JSON, or else text as a JSON string) is checked after
/// the clock stops, and one that `fits` refuses fails the bench.
async fn timed_gets(http: &reqwest::Client, url: String, fits: impl Fn(&Value) -> bool) -> Result<Summary, BenchError> {
    let mut times = Vec::new();
    for _ in 0..LISTS {
        let t = Instant::now();
        let bytes = http.get(&url).send().await.map_err(fail)?.bytes().await.map_err(fail)?;
        times.push(t.elapsed());
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !fits(&body) {
            let shown: String = body.to_string().chars().take(300).collect();
            return Err(fail(format!("{url} answered something else: {shown}")));
        }
    }
    Ok(summarise(times))
}

fn alert(target_ids: Vec<String>) -> Value {
    let mut payload = crate::devtools::demo::canary_alert(0.3);
    payload["data"]["essentials"]["alertTargetIDs"] = json!(target_ids);
    payload["data"]["essentials"]["configurationItems"] = json!([]);
    payload
}

fn unmatched_alert(k: usize) -> Value {
    alert(vec![format!(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/other/providers/microsoft.web/sites/unrelated-{k}"
    )])
}

fn matched_alert(i: usize) -> Value {
    alert(vec![format!("{}/slots/canary", resource_id(i).to_ascii_lowercase())])
}

/// Sends alerts from [`CONCURRENCY`] clients for `length` (or until `max` are sent).
async fn alert_burst(
    http: &reqwest::Client,
    base: &str,
    length: Duration,
    max: usize,
    payload: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> Result<Burst, BenchError> {
    let payload = Arc::new(payload);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{base}/api/alerts?token={TOKEN}");
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let clients = (0..CONCURRENCY).map(|_| {
        let (http, url, payload, next) = (http.clone(), url.clone(), payload.clone(), next.clone());
        tokio::spawn(async move {
            let (mut times, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= max {
                    break;
                }
                let body = payload(k);
                let t = Instant::now();
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        times.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (times, errors)
        })
    });
    let mut all = Vec::new();
    let mut errors = 0;
    for c in futures::future::join_all(clients).await {
        let (times, e) = c.map_err(fail)?;
        all.extend(times);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Burst { acks_per_sec: all.len() as f64 / secs.max(1e-9), latency: summarise(all), errors })
}

async fn single_alerts(
    http: &reqwest::Client,
    base: &str,
    store: &Arc<dyn Store>,
    router: &Arc<Router>,
    count: usize,
) -> Result<(Summary, Summary), BenchError> {
    let (mut to_zero, mut to_saved) = (Vec::new(), Vec::new());
    for i in 0..count {
        router.set_weight(crate::domain::ids::Weight::new(20).map_err(fail)?);
        let id = format!("bench-{i:06}");
        let sent = Instant::now();
        let answer = http.post(format!("{base}/api/alerts?token={TOKEN}")).json(&matched_alert(i)).send().await.map_err(fail)?;
        if answer.status().as_u16() != 202 {
            return Err(fail(format!("alert answered {}", answer.status())));
        }
        loop {
            if matches!(store.load(&id).await.map_err(fail)?, Some((r, _)) if r.phase == Phase::RolledBack) {
                to_saved.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                return Err(fail(format!("rollout {id} was not rolled back within 30 s")));
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if router.route().weight.percent() != 0 {
            return Err(fail("the router is not at 0 after the rollback"));
        }
        to_zero.push(router.changed_at().saturating_duration_since(sent));
    }
    Ok((summarise(to_zero), summarise(to_saved)))
}

/// `sluice up` as its own process.
pub(crate) struct Server {
    child: tokio::process::Child,
    /// Where it answers.
    pub(crate) url: String,
    /// The executable, when it runs under a profiler (`SLUICE_BENCH_UNDER`).
    exe: Option<std::path::PathBuf>,
}

/// A profiler to run the server under, from `SLUICE_BENCH_UNDER` (e.g.
/// `heaptrack -o /tmp/up`): a soak that hunts a leak sees who holds the
/// memory. Samples then follow the server's own process below it.
fn profiler() -> Vec<String> {
    std::env::var("SLUICE_BENCH_UNDER").map(|v| v.split_whitespace().map(String::from).collect()).unwrap_or_default()
}

/// The first process below `pid` (itself included) running `exe`.
fn descendant_running(pid: u32, exe: &Path) -> Option<u32> {
    if std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() == Some(exe) {
        return Some(pid);
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let children: Vec<u32> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>())
        .collect();
    children.into_iter().find_map(|c| descendant_running(c, exe))
}

impl Server {
    /// Starts `sluice up` on `dir` (and on Azurite's tables, given one), and waits until it answers.
    pub(crate) async fn start(exe: &Path, dir: &Path, azurite: Option<&Azurite>) -> Result<Server, BenchError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(fail)?.port();
        let under = profiler();
        let mut cmd = match under.split_first() {
            Some((program, args)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).arg(exe);
                cmd
            }
            None => tokio::process::Command::new(exe),
        };
        cmd.arg("up").arg("--port").arg(port.to_string()).arg("--data-dir").arg(dir).current_dir(dir);
        cmd.env("SLUICE_ALERT_TOKEN", TOKEN).env("RUST_LOG", "warn");
        if let Some(a) = azurite {
            cmd.arg("--store").arg("table").env("SLUICE_TABLE_CONNECTION", a.connection_string()).env("SLUICE_TABLE_PREFIX", "bench");
        }
        let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).kill_on_drop(true).spawn().map_err(fail)?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(fail)?;
        let started = Instant::now();
        // Any answer from the API will do (this id does not exist): listing may be what is slow.
        while http.get(format!("{url}/api/rollouts/bench-none")).send().await.is_err() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(fail("sluice up did not answer within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Server { child, url, exe: (!under.is_empty()).then(|| exe.to_path_buf()) })
    }

    fn rss(&self) -> Option<f64> {
        self.pid().and_then(rss_mib)
    }

    /// Its process id, while it runs (under a profiler, the process of `exe` below it).
    pub(crate) fn pid(&self) -> Option<u32> {
        let top = self.child.id()?;
        match &self.exe {
            None => Some(top),
            Some(exe) => descendant_running(top, exe),
        }
    }

    /// Stops it. Under a profiler, the server is interrupted first and its
    /// profiler given a minute to write what it found.
    pub(crate) async fn stop(mut self) {
        if let (Some(_), Some(pid)) = (&self.exe, self.pid()) {
            let _ = tokio::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
            let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        }
        let _ = self.child.kill().await;
    }
}

/// The figures as a table: one column per size, so growth reads across.
pub fn text(rows: &[ScaleRow]) -> String {
    columns(
        "active rollouts",
        rows,
        |r| r.rollouts,
        &[
            ("timer sweep, nothing due, p50 (ms)", &|r| format!("{:.2}", r.sweep_nothing_due.p50_ms)),
            ("GET /api/rollouts?limit=200, p50 (ms)", &|r| format!("{:.2}", r.list_200.p50_ms)),
            ("GET /api/metrics (all rollouts), p50 (ms)", &|r| format!("{:.2}", r.metrics_scrape.p50_ms)),
            ("GET /api/report (all rollouts), p50 (ms)", &|r| format!("{:.2}", r.report.p50_ms)),
            ("alert acks/s, 16 concurrent, matching none", &|r| format!("{:.0}", r.alerts_unmatched.acks_per_sec)),
            ("  ack p99 (ms)", &|r| format!("{:.1}", r.alerts_unmatched.latency.p99_ms)),
            ("alert acks/s, 16 concurrent, each matching", &|r| format!("{:.0}", r.alerts_matched.acks_per_sec)),
            ("  ack p99 (ms)", &|r| format!("{:.1}", r.alerts_matched.latency.p99_ms)),
            ("one alert → router at 0 %, p50 / p99 (ms)", &|r| {
                format!("{:.1} / {:.1}", r.alert_to_router_zero.p50_ms, r.alert_to_router_zero.p99_ms)
            }),
            ("one alert → RolledBack persisted, p50 / p99 (ms)", &|r| {
                format!("{:.1} / {:.1}", r.alert_to_persisted.p50_ms, r.alert_to_persisted.p99_ms)
            }),
            ("server RSS at the end (MiB)", &|r| format!("{:.0}", r.rss_mib)),
            ("(creating the rollouts, s)", &|r| format!("{:.1}", r.populate_secs)),
        ],
    )
}

/// A figure's name and how to draw it for one size.
type Line<'a, R> = (&'a str, &'a dyn Fn(&R) -> String);

/// Figures as a table with one column per size, so growth reads across.
fn columns<R>(title: &str, rows: &[R], size: impl Fn(&R) -> usize, lines: &[Line<'_, R>]) -> String {
    let row = |name: &str, cells: Vec<String>| format!("{name:<50}{}\n", cells.join(""));
    let mut out = row(title, rows.iter().map(|r| format!("{:>14}", size(r))).collect());
    for (name, value) in lines {
        out.push_str(&row(name, rows.iter().map(|r| format!("{:>14}", value(r))).collect()));
    }
    out
}

/// Services the finished rollouts of [`finished`] are spread over.
const SERVICES: usize = 10;

/// The figures for one size of `bench scale --finished`.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedRow {
    /// Finished rollouts held.
    pub rollouts: usize,
    /// Services they belong to.
    pub services: usize,
    /// Seconds to write them (in the bench process, straight into the store).
    pub populate_secs: f64,
    /// `GET /api/metrics`.
    pub metrics_scrape: Summary,
    /// `GET /api/report?since=3h` (every one of them finished in it).
    pub report_all: Summary,
    /// `GET /api/report?since=1h` (none of them finished in it).
    pub report_none: Summary,
    /// The server's resident memory at the end, MiB.
    pub rss_mib: f64,
}

/// `bench scale --finished`: what holding many *finished* rollouts costs
/// the reads that sum them (metrics, the report), across [`SERVICES`]
/// services — the case the kept sums are for.
pub async fn finished(exe: &Path, sizes: &[usize], store: &ScaleStore, progress: impl Fn(&str)) -> Result<Vec<FinishedRow>, BenchError> {
    let mut rows = Vec::new();
    for &n in sizes {
        let azurite = match store {
            ScaleStore::Embedded => None,
            ScaleStore::Azurite(bin) => Some(Azurite::start(bin).map_err(fail)?),
        };
        let dir = tempfile_dir()?;
        let result = one_finished_size(exe, n, &dir, azurite.as_ref(), &progress).await;
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(result?);
    }
    Ok(rows)
}

async fn one_finished_size(
    exe: &Path,
    n: usize,
    dir: &Path,
    azurite: Option<&Azurite>,
    progress: &impl Fn(&str),
) -> Result<FinishedRow, BenchError> {
    progress(&format!("N = {n} finished rollouts over {SERVICES} services"));
    let store = open_store(dir, azurite).await?;
    let started = Instant::now();
    // One lane per service: a target holds one active rollout at a time.
    let lanes = (0..SERVICES).map(|s| {
        let store = store.clone();
        async move {
            for k in (s..n).step_by(SERVICES) {
                let (mut r, mut first) = paused_rollout(k, "http://127.0.0.1:9")?;
                r.spec.target.name = crate::domain::ids::TargetName::parse(&target_name(s)).map_err(fail)?;
                // Two hours ago: long enough for a timer pass to seal them, and outside the last hour.
                let now = Utc::now() - chrono::TimeDelta::hours(2);
                (r.created_at, r.updated_at, first.at) = (now, now, now);
                let etag = store.create(&r, &first).await.map_err(fail)?;
                let aborting = decide(
                    &r,
                    Event::AbortRequested { by: Actor::parse("bench").map_err(fail)?, reason: String::new(), request: None },
                    now,
                );
                let done = decide(&aborting.next, Event::TrafficConfirmed { weight: crate::domain::ids::Weight::ZERO }, now);
                let history = [aborting.history, done.history].concat();
                store.save(&done.next, &etag, &history).await.map_err(fail)?;
            }
            Ok::<(), BenchError>(())
        }
    });
    for lane in futures::future::join_all(lanes).await {
        lane?;
    }
    let populate_secs = started.elapsed().as_secs_f64();
    progress(&format!("  written in {populate_secs:.1} s"));
    let server = Server::start(exe, dir, azurite).await?;
    let http = reqwest::Client::new();
    // The first timer pass seals what finished; scrapes after it read the kept sums.
    let sums = sweeps_and_prune(&store, dir).await?;
    progress(&format!("  a timer pass: {sums}"));
    progress("  GET /api/metrics");
    let metrics_scrape = timed_gets(&http, format!("{}/api/metrics", server.url), |v| {
        v.as_str().is_some_and(|t| t.contains("sluice_rollouts_finished_total{"))
    })
    .await?;
    progress("  GET /api/report?since=3h (all of them), ?since=1h (none)");
    let report_all =
        timed_gets(&http, format!("{}/api/report?since=3h", server.url), |v| v["overall"]["finished"].as_u64() == Some(n as u64)).await?;
    let report_none =
        timed_gets(&http, format!("{}/api/report?since=1h", server.url), |v| v["overall"]["finished"].as_u64() == Some(0)).await?;
    let rss_mib = server.rss().unwrap_or(0.0);
    server.stop().await;
    Ok(FinishedRow { rollouts: n, services: SERVICES, populate_secs, metrics_scrape, report_all, report_none, rss_mib })
}

/// One timer pass over the store, as the host's tick would run it (retention at its default).
async fn sweeps_and_prune(store: &Arc<dyn Store>, dir: &Path) -> Result<String, BenchError> {
    let clock: Arc<dyn crate::ports::clock::Clock> = Arc::new(SystemClock);
    let queue = Arc::new(crate::ports::queue::embedded::EmbeddedQueue::open(&dir.join("bench-queue.db"), clock.clone()).map_err(fail)?);
    let env = crate::ports::env::AdapterEnv::new(dir.to_path_buf(), "http://127.0.0.1".into());
    let engine = crate::shell::engine::Engine::new(store.clone(), queue, env, clock);
    let pruned = engine.prune_finished().await;
    Ok(format!("{} rollouts and {} releases past retention", pruned.rollouts, pruned.releases))
}

/// `--finished` figures as a table, one column per size.
pub fn finished_text(rows: &[FinishedRow]) -> String {
    columns(
        &format!("finished rollouts ({SERVICES} services)"),
        rows,
        |r| r.rollouts,
        &[
            ("GET /api/metrics, p50 (ms)", &|r| format!("{:.2}", r.metrics_scrape.p50_ms)),
            ("GET /api/metrics, p99 (ms)", &|r| format!("{:.2}", r.metrics_scrape.p99_ms)),
            ("GET /api/report?since=3h (all of them), p50 (ms)", &|r| format!("{:.1}", r.report_all.p50_ms)),
            ("GET /api/report?since=1h (none), p50 (ms)", &|r| format!("{:.2}", r.report_none.p50_ms)),
            ("server RSS at the end (MiB)", &|r| format!("{:.0}", r.rss_mib)),
            ("(writing the rollouts, s)", &|r| format!("{:.1}", r.populate_secs)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtools::bench::summarise;

    /// Under a profiler the samples follow the server's own process, found below the profiler's.
    #[test]
    fn the_process_running_an_executable_is_found_below_its_parent() {
        let mut shell = std::process::Command::new("sh").args(["-c", "sleep 5; true"]).spawn().expect("sh runs");
        let sleep = std::fs::canonicalize(which("sleep")).expect("sleep");
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            if let Some(pid) = descendant_running(shell.id(), &sleep) {
                break Some(pid);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = shell.kill();
        let _ = shell.wait();
        assert!(found.is_some_and(|pid| pid != shell.id()), "{found:?}");
        assert_eq!(descendant_running(std::process::id(), &std::env::current_exe().expect("exe")), Some(std::process::id()));
    }

    fn which(program: &str) -> std::path::PathBuf {
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .map(|dir| Path::new(dir).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| program.into())
    }

    #[test]
    fn the_table_shows_both_percentiles_from_an_alert_to_the_router() {
        let ms = |v: &[u64]| summarise(v.iter().map(|m| Duration::from_millis(*m)).collect());
        let burst = Burst { acks_per_sec: 100.0, latency: ms(&[1]), errors: 0 };
        let row = ScaleRow {
            rollouts: 100,
            populate_secs: 1.0,
            sweep_nothing_due: ms(&[1]),
            list_200: ms(&[1]),
            metrics_scrape: ms(&[1]),
            report: ms(&[1]),
            alerts_unmatched: burst.clone(),
            alerts_matched: burst,
            alert_to_router_zero: ms(&[2, 2, 2, 2, 300]),
            alert_to_persisted: ms(&[3]),
            rss_mib: 20.0,
        };
        let table = text(&[row]);
        let line = table.lines().find(|l| l.starts_with("one alert → router at 0 %")).expect("the line");
        assert!(line.contains("p50 / p99") && line.ends_with("2.0 / 300.0"), "{line}");
        assert!(table.lines().next().is_some_and(|head| head.ends_with("100")), "{table}");
    }
}
