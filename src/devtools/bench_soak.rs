//! `sluice bench soak`: does Sluice run for months? A `sluice up` process
//! (embedded store, or Table Storage on Azurite) works without pause for
//! minutes — hours with `--minutes` — while rollouts keep starting,
//! stepping through weights with an analysis under steady traffic,
//! succeeding, rolling back on alerts and being aborted. Every sample it
//! reads, from outside, what grows when something leaks: resident memory,
//! open files, the store's file and log (or Azurite's memory), and the time
//! `/api/metrics`, `/api/report`, a list and the workers' own calls take.
//! Each series ends with its slope per hour, over the whole run and over
//! its second half (after warm-up), and a chart. `SLUICE_BENCH_UNDER`
//! runs the server under a profiler (`heaptrack -o FILE`), to see who holds
//! what memory grows.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::bench::{anonymous_mib, fail, rss_mib, summarise, tempfile_dir, BenchError};
use super::bench_scale::{ScaleStore, Server, TOKEN};
use crate::cli::client::Client;
use crate::devtools::azurite::Azurite;
use crate::devtools::load::Load;
use crate::devtools::router::{Router, Upstream};
use crate::devtools::sample_app::{self, Fault};

/// Requests per second through each router.
const RPS: u32 = 10;
/// A rollout that has not finished by then is aborted and counted as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(90);

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long.
    pub duration: Duration,
    /// Time between samples.
    pub every: Duration,
    /// The store under `sluice up`.
    pub store: ScaleStore,
    /// Targets rolled out at once, each with its own router and traffic.
    pub workers: usize,
}

/// One measured quantity over the run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// What it is.
    pub name: String,
    /// Its unit.
    pub unit: &'static str,
    /// `(minutes since the start, value)`.
    pub samples: Vec<(f64, f64)>,
    /// Least-squares slope over the whole run, units per hour.
    pub slope_per_hour: f64,
    /// The same over the second half, once caches and pools are warm.
    pub slope_per_hour_second_half: f64,
}

/// How the rollouts ended.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Started.
    pub started: usize,
    /// Succeeded.
    pub succeeded: usize,
    /// Rolled back (alerts, or an analysis).
    pub rolled_back: usize,
    /// Aborted by the workers.
    pub aborted: usize,
    /// Not finished within [`STUCK_AFTER`] (then aborted).
    pub stuck: usize,
    /// Calls that failed.
    pub errors: usize,
    /// The first failure, in words.
    pub first_error: Option<String>,
    /// What the first stuck rollouts looked like when they were given up on.
    pub stuck_evidence: Vec<String>,
}

/// Stuck rollouts whose evidence the report keeps.
const STUCK_EVIDENCE: usize = 3;
/// History rows kept per stuck rollout.
const STUCK_HISTORY_ROWS: usize = 8;

/// A stuck rollout in words: its phase, weight and the last rows of its history,
/// so a soak that saw one says why without its (deleted) data directory.
fn stuck_evidence(id: &str, status: &Value) -> String {
    let rows = status["history"].as_array().map(Vec::as_slice).unwrap_or_default();
    let last = &rows[rows.len().saturating_sub(STUCK_HISTORY_ROWS)..];
    let mut out = format!("{id}: {} at {}%, step {}", status["phase"], status["weight"], status["step"]);
    for row in last {
        out.push_str(&format!(
            "\n    {} {} → {} {}: {}",
            row["at"].as_str().unwrap_or(""),
            row["from"].as_str().unwrap_or(""),
            row["to"].as_str().unwrap_or(""),
            row["cause"].as_str().unwrap_or(""),
            row["summary"].as_str().unwrap_or("")
        ));
    }
    out
}

/// The soak's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakReport {
    /// `embedded` or `azurite`.
    pub store: String,
    /// Minutes it ran.
    pub minutes: f64,
    /// Targets rolled out at once.
    pub workers: usize,
    /// The rollouts.
    pub rollouts: Outcomes,
    /// Requests the routers served.
    pub traffic_requests: u64,
    /// Everything sampled.
    pub series: Vec<Series>,
}

/// Latencies of the workers' calls since the last sample.
#[derive(Default)]
struct Calls(Mutex<Vec<Duration>>);

impl Calls {
    fn add(&self, d: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(d);
        }
    }

    fn take(&self) -> Vec<Duration> {
        self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

/// Runs the soak, saying each sample as a line.
pub async fn soak(exe: &Path, options: &SoakOptions, progress: impl Fn(&str)) -> Result<SoakReport, BenchError> {
    let azurite = match &options.store {
        ScaleStore::Embedded => None,
        ScaleStore::Azurite(bin) => Some(Azurite::start(bin).map_err(fail)?),
    };
    let dir = tempfile_dir()?;
    let result = run(exe, options, &dir, azurite.as_ref(), &progress).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(
    exe: &Path,
    options: &SoakOptions,
    dir: &Path,
    azurite: Option<&Azurite>,
    progress: &impl Fn(&str),
) -> Result<SoakReport, BenchError> {
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let fault = Arc::new(Fault::default());
    let (stable, _) = sample_app::serve("v1", fault.clone(), any).await.map_err(fail)?;
    let (canary, _) = sample_app::serve("v2", fault, any).await.map_err(fail)?;
    let server = Server::start(exe, dir, azurite).await?;
    // `sluice up` writes its local token into its data directory; writes carry it.
    let token = std::fs::read_to_string(dir.join("local-token")).map_err(|e| fail(format!("sluice up's local token: {e}")))?;
    let client = Client::new(&server.url, None, "soak").with_local_token(Some(token.trim().to_string()));
    let (mut loads, mut routers) = (Vec::new(), Vec::new());
    for _ in 0..options.workers {
        let router = Router::new(
            Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{stable}") },
            Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{canary}") },
        );
        let listening = router.serve(any, any).await.map_err(fail)?;
        loads.push(Load::start(&listening.traffic_url(), RPS, 4));
        routers.push(listening.admin_url());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Calls::default());
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let workers: Vec<_> = routers
        .iter()
        .enumerate()
        .map(|(w, router)| tokio::spawn(worker(w, router.clone(), client.clone(), stop.clone(), calls.clone(), outcomes.clone())))
        .collect();

    // The controls: Azurite's own point read and partition query, with no
    // Sluice between, so a climb in the figures above can be told apart from
    // the emulator's (Azurite 3 answers every query by scanning the whole
    // table: LokiTableMetadataStore.queryTableEntities, `.chain().where(…)`).
    let control = match azurite {
        Some(a) => Some(super::bench_scale::open_store(dir, Some(a)).await?),
        None => None,
    };
    let names = series_names(control.is_some());
    let started = Instant::now();
    let mut sampled: Vec<(f64, Vec<f64>)> = Vec::new();
    while started.elapsed() < options.duration {
        tokio::time::sleep(options.every.min(options.duration.saturating_sub(started.elapsed())).max(Duration::from_millis(100))).await;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        let mut values = sample(&server, dir, azurite, &calls).await;
        if let Some(store) = &control {
            values.push(point_read(store.as_ref()).await);
            values.push(partition_query(store.as_ref()).await);
        }
        let done = outcomes.lock().map(|o| o.succeeded + o.rolled_back + o.aborted).unwrap_or(0);
        progress(&progress_line(minutes, &values, done));
        sampled.push((minutes, values));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let mut traffic_requests = 0;
    for load in loads {
        traffic_requests += load.stop().await.total();
    }
    server.stop().await;
    let rollouts = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let series = names
        .iter()
        .enumerate()
        .map(|(i, (name, unit))| {
            let samples: Vec<(f64, f64)> = sampled.iter().map(|(t, v)| (*t, v[i])).collect();
            let half = samples.len() / 2;
            Series {
                name: name.to_string(),
                unit,
                slope_per_hour: slope_per_hour(&samples),
                slope_per_hour_second_half: slope_per_hour(&samples[half..]),
                samples,
            }
        })
        .collect();
    let store = if azurite.is_some() { "azurite" } else { "embedded" };
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    Ok(SoakReport { store: store.into(), minutes, workers: options.workers, rollouts, traffic_requests, series })
}

/// What each sample reads, in order; with Azurite, [`CONTROL`] last.
const SERIES: [(&str, &str); 11] = [
    ("sluice resident memory", "MiB"),
    ("of which anonymous (heap, stacks)", "MiB"),
    ("sluice open files", "files"),
    ("store file (sluice.db), or Azurite's memory", "MiB"),
    ("store log (sluice.db-wal)", "MiB"),
    ("GET /api/metrics", "ms"),
    ("GET /api/report?since=5m", "ms"),
    ("GET /api/rollouts?limit=50", "ms"),
    ("workers' calls p50", "ms"),
    ("workers' calls p99", "ms"),
    ("rollouts stored", "rollouts"),
];

/// Azurite alone: the time it takes to answer a point read, and a query of
/// one (empty) partition, which Table Storage serves from its index.
const CONTROLS: [(&str, &str); 2] =
    [("control: Azurite point read, no Sluice", "ms"), ("control: Azurite partition query, no Sluice", "ms")];

fn series_names(control: bool) -> Vec<(&'static str, &'static str)> {
    let controls = if control { &CONTROLS[..] } else { &[] };
    SERIES.iter().chain(controls).copied().collect()
}

/// A point read of a rollout nobody starts, straight to the store; NaN if it fails.
async fn point_read(store: &dyn crate::ports::store::Store) -> f64 {
    let t = Instant::now();
    match store.load("soak-control").await {
        Ok(_) => t.elapsed().as_secs_f64() * 1000.0,
        Err(_) => f64::NAN,
    }
}

/// The history of that rollout: a query of its partition, straight to the store; NaN if it fails.
async fn partition_query(store: &dyn crate::ports::store::Store) -> f64 {
    let t = Instant::now();
    match store.history("soak-control").await {
        Ok(_) => t.elapsed().as_secs_f64() * 1000.0,
        Err(_) => f64::NAN,
    }
}

async fn sample(server: &Server, dir: &Path, azurite: Option<&Azurite>, calls: &Calls) -> Vec<f64> {
    let mib = |path: &Path| std::fs::metadata(path).map(|m| m.len() as f64 / 1_048_576.0).unwrap_or(0.0);
    let pid = server.pid();
    let rss = pid.and_then(rss_mib).unwrap_or(0.0);
    let anonymous = pid.and_then(anonymous_mib).unwrap_or(0.0);
    let files = pid.and_then(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok()).map(|d| d.count() as f64).unwrap_or(0.0);
    let (store, log) = match azurite {
        Some(a) => (rss_mib(a.pid()).unwrap_or(0.0), 0.0),
        None => (mib(&dir.join("sluice.db")), mib(&dir.join("sluice.db-wal"))),
    };
    let http = reqwest::Client::new();
    let timed = |path: &'static str| {
        let (http, url) = (http.clone(), format!("{}{path}", server.url));
        async move {
            let t = Instant::now();
            let ok = match http.get(&url).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                t.elapsed().as_secs_f64() * 1000.0
            } else {
                f64::NAN
            }
        }
    };
    let metrics = timed("/api/metrics").await;
    let report = timed("/api/report?since=5m").await;
    let list = timed("/api/rollouts?limit=50").await;
    let worker_calls = summarise(calls.take());
    let stored = match http.get(format!("{}/api/metrics", server.url)).send().await {
        Ok(answer) => answer.text().await.map_or(f64::NAN, |text| stored_in(&text)),
        Err(_) => f64::NAN,
    };
    vec![rss, anonymous, files, store, log, metrics, report, list, worker_calls.p50_ms, worker_calls.p99_ms, stored]
}

/// The rollouts the store holds, from the metrics exposition: a scrape
/// reads no state, where a report over all time would read every one (and
/// the soak would measure its own reading).
fn stored_in(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with("sluice_rollouts_active{") || l.starts_with("sluice_rollouts_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn progress_line(minutes: f64, v: &[f64], done: usize) -> String {
    format!(
        "[{minutes:6.1} min] rss {:.1} MiB (anonymous {:.1}) · files {:.0} · store {:.1} MiB · log {:.1} MiB · metrics {:.1} ms · report {:.1} ms · list {:.1} ms · calls p99 {:.1} ms · {done} rollouts finished",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[9]
    )
}

/// One target's rollouts, back to back, ending in turn by success (two in
/// four), an alert and an abort.
async fn worker(w: usize, router: String, client: Client, stop: Arc<AtomicBool>, calls: Arc<Calls>, outcomes: Arc<Mutex<Outcomes>>) {
    let count = |f: &dyn Fn(&mut Outcomes)| {
        if let Ok(mut o) = outcomes.lock() {
            f(&mut o)
        }
    };
    let mut round = 0usize;
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let versions = sides(&http, &router).await;
        let t = Instant::now();
        let started = client.start(&spec(w, &router, &versions), None).await;
        calls.add(t.elapsed());
        let Some(id) = started.as_ref().ok().and_then(|s| s["id"].as_str().map(str::to_string)) else {
            let why = match &started {
                Err(e) => e.to_string(),
                Ok(answer) => format!("no id in {answer}"),
            };
            count(&|o| {
                o.errors += 1;
                o.first_error.get_or_insert_with(|| why.clone());
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        count(&|o| o.started += 1);
        let ending = match round % 4 {
            2 => Ending::Alert,
            3 => Ending::Abort,
            _ => Ending::Finish,
        };
        let keep = |evidence: String| {
            count(&|o| {
                if o.stuck_evidence.len() < STUCK_EVIDENCE {
                    o.stuck_evidence.push(evidence.clone());
                }
            })
        };
        let phase = follow(w, &id, ending, &client, &calls, keep).await;
        match phase.as_deref() {
            Some("Succeeded") => count(&|o| o.succeeded += 1),
            Some("RolledBack") => count(&|o| o.rolled_back += 1),
            Some("Aborted") => count(&|o| o.aborted += 1),
            Some(_) => count(&|o| o.stuck += 1),
            None => count(&|o| o.errors += 1),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Finish,
    Alert,
    Abort,
}

/// Polls the rollout until it ends, sending its alert or abort once it
/// reaches its first weight; a rollout stuck past [`STUCK_AFTER`] is aborted.
async fn follow(w: usize, id: &str, ending: Ending, client: &Client, calls: &Calls, on_stuck: impl Fn(String)) -> Option<String> {
    let began = Instant::now();
    let (mut acted, mut reported) = (false, false);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t = Instant::now();
        let status = client.status(id).await.ok()?;
        calls.add(t.elapsed());
        let phase = status["phase"].as_str().unwrap_or("").to_string();
        if matches!(phase.as_str(), "Succeeded" | "RolledBack" | "Aborted") {
            return Some(if began.elapsed() > STUCK_AFTER { "stuck".into() } else { phase });
        }
        let at_weight = status["weight"].as_u64().unwrap_or(0) > 0;
        let stuck = began.elapsed() > STUCK_AFTER;
        if stuck && !reported {
            reported = true;
            on_stuck(stuck_evidence(id, &status));
        }
        if (at_weight && !acted && ending != Ending::Finish) || stuck {
            acted = true;
            let t = Instant::now();
            let sent = match (ending, stuck) {
                (Ending::Alert, false) => client.alert(&alert(w), Some(TOKEN)).await.map(drop),
                _ => client.action(id, "abort", &json!({"reason": "soak"})).await.map(drop),
            };
            calls.add(t.elapsed());
            sent.ok()?;
        }
    }
}

fn resource_id(w: usize) -> String {
    format!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/soak/providers/Microsoft.Web/sites/soak-api-{w}")
}

/// The versions on the router's sides now: a success swaps them, so each
/// rollout goes from whichever is stable to the other.
async fn sides(http: &reqwest::Client, router: &str) -> (String, String) {
    let route = match http.get(format!("{router}/_sluice/route")).send().await {
        Ok(answer) => crate::ports::env::read_json::<crate::ports::local_router::Route>(answer).await.ok(),
        Err(_) => None,
    };
    route.map_or(("v1".into(), "v2".into()), |r| (r.stable.version, r.canary.version))
}

fn spec(w: usize, router: &str, (stable, canary): &(String, String)) -> Value {
    json!({
        "target": {"name": format!("soak-api-{w}"), "resourceIds": [resource_id(w)],
                   "router": {"provider": "local", "settings": {"url": router}},
                   "stable": {"name": "stable", "version": stable}, "canary": {"name": "canary", "version": canary}},
        "analysisTemplates": [{"name": "errors", "metrics": [{
            "name": "error-rate", "provider": "local", "query": "error_rate", "successCondition": "< 0.05",
            "interval": "2s", "count": 2, "minSampleSize": 1}]}],
        "strategy": {"canary": {"steps": [
            {"setWeight": 20}, {"analysis": {"templates": ["errors"]}},
            {"setWeight": 50}, {"pause": {"duration": "2s"}}]}},
        "policy": {"onAlert": "rollback", "onInconclusive": "rollback"}
    })
}

fn alert(w: usize) -> Value {
    let mut payload = crate::devtools::demo::canary_alert(0.3);
    payload["data"]["essentials"]["alertTargetIDs"] = json!([format!("{}/slots/canary", resource_id(w).to_ascii_lowercase())]);
    payload["data"]["essentials"]["configurationItems"] = json!([]);
    payload
}

/// Least-squares slope of `(minutes, value)`, per hour (NaN samples left out).
pub fn slope_per_hour(samples: &[(f64, f64)]) -> f64 {
    let points: Vec<(f64, f64)> = samples.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mean_t, mean_v) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = points.iter().map(|(t, v)| (t - mean_t) * (v - mean_v)).sum();
    let var: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

/// A row of block characters, one per column, scaled from the series' least to its most.
pub fn sparkline(values: &[f64], columns: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || columns == 0 {
        return String::new();
    }
    let (lo, hi) = finite.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let per = (values.len() as f64 / columns as f64).max(1.0);
    let mut out = String::new();
    let mut i = 0.0;
    while (i as usize) < values.len() {
        let end = ((i + per) as usize).min(values.len());
        let chunk: Vec<f64> = values[i as usize..end].iter().copied().filter(|v| v.is_finite()).collect();
        out.push(match chunk.is_empty() {
            true => ' ',
            false => {
                let mean = chunk.iter().sum::<f64>() / chunk.len() as f64;
                let level = if hi > lo { ((mean - lo) / (hi - lo) * 7.0).round() as usize } else { 0 };
                BLOCKS[level.min(7)]
            }
        });
        i += per;
    }
    out
}

/// The figures as text: one line per series with its chart and slopes.
pub fn text(report: &SoakReport) -> String {
    let r = &report.rollouts;
    let mut out = format!(
        "soak on the {} store, {:.1} minutes, {} workers: {} rollouts started, {} succeeded, {} rolled back, {} aborted, {} stuck, {} errors; {} requests through the routers\n",
        report.store, report.minutes, report.workers, r.started, r.succeeded, r.rolled_back, r.aborted, r.stuck, r.errors, report.traffic_requests
    );
    if let Some(e) = &r.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    for e in &r.stuck_evidence {
        out.push_str(&format!("stuck: {e}\n"));
    }
    out.push('\n');
    out.push_str(&format!("{:<46}{:>10}{:>10}{:>12}{:>12}  chart\n", "", "first", "last", "slope/h", "2nd half/h"));
    for s in &report.series {
        let values: Vec<f64> = s.samples.iter().map(|(_, v)| *v).collect();
        let first = values.first().copied().unwrap_or(f64::NAN);
        let last = values.last().copied().unwrap_or(f64::NAN);
        out.push_str(&format!(
            "{:<46}{first:>10.2}{last:>10.2}{:>12.2}{:>12.2}  {}\n",
            format!("{} ({})", s.name, s.unit),
            s.slope_per_hour,
            s.slope_per_hour_second_half,
            sparkline(&values, 40)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollouts_stored_are_read_from_the_exposition() {
        let text = "# TYPE sluice_rollouts_active gauge\nsluice_rollouts_active{service=\"a\",phase=\"Paused\"} 2\n\
                    sluice_rollouts_finished_total{service=\"a\",outcome=\"succeeded\"} 40\nsluice_rollbacks_total{service=\"a\",cause=\"alert\"} 9\n";
        assert_eq!(stored_in(text), 42.0);
    }

    #[test]
    fn a_stuck_rollout_is_described_by_its_last_history_rows() {
        let rows: Vec<Value> = (1..=10)
            .map(|n| json!({"at": format!("t{n}"), "from": "Progressing", "to": "Progressing", "cause": "tick", "summary": format!("row {n}")}))
            .collect();
        let text = stuck_evidence("r-1", &json!({"phase": "RollingBack", "weight": 20, "step": 2, "history": rows}));
        assert!(text.starts_with("r-1: \"RollingBack\" at 20%, step 2"), "{text}");
        assert_eq!(text.lines().count(), 1 + STUCK_HISTORY_ROWS, "{text}");
        assert!(text.contains("row 10") && text.contains("row 3") && !text.contains("row 2\n"), "{text}");
        assert_eq!(stuck_evidence("r-2", &json!({"phase": "Paused"})).lines().count(), 1);
    }

    #[test]
    fn the_slope_is_per_hour_and_flat_is_zero() {
        let rising: Vec<(f64, f64)> = (0..10).map(|m| (m as f64, 100.0 + 2.0 * m as f64)).collect();
        assert!((slope_per_hour(&rising) - 120.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|m| (m as f64, 7.0)).collect();
        assert_eq!(slope_per_hour(&flat), 0.0);
        assert_eq!(slope_per_hour(&[(1.0, 5.0), (2.0, f64::NAN)]), 0.0, "one finite sample has no slope");
    }

    #[test]
    fn the_chart_spans_least_to_most() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[3.0; 4], 4), "▁▁▁▁");
        assert_eq!(sparkline(&(0..80).map(f64::from).collect::<Vec<_>>(), 40).chars().count(), 40);
    }
}
