//! `sluice demo`: a real phased rollout on a laptop, nothing to install.
//! Two versions of a sample API run behind the local router, a load
//! generator sends steady traffic through it, and the local host walks a
//! canary — 5 % → analysis → 20 % → approval → 50 % → 100 % → promote —
//! narrating each decision with the measured numbers. Variants show the
//! automatic rollback: a faulty v2 that analysis catches, or an alert that
//! fires while the rollout waits for approval.

mod waves;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::client::Client;
use crate::cli::view::{terminal_phase, Watcher};
use crate::devtools::load::{Load, LoadReport, USERS};
use crate::devtools::router::{Router, Upstream};
use crate::devtools::sample_app::Fault;
use crate::devtools::{prometheus, sample_app};
use crate::domain::rollout::Phase;
use crate::host::local::{self, LocalConfig};

/// Which story the demo tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A healthy v2 goes all the way, with zero failed requests.
    Success,
    /// v2 answers 20 % of requests with 500s; analysis rolls it back.
    FaultErrors,
    /// v2 is 150 ms slower; the latency baseline rolls it back.
    FaultLatency,
    /// v2 starts failing while the rollout waits for approval; an alert rolls it back.
    Alert,
    /// Users are pinned to a side for a while (an affinity cookie); v2 fails,
    /// analysis rolls it back, and the users pinned to v2 keep reaching it after
    /// the revert: Sluice measures the canary's traffic until it stops and says so,
    /// and records the observed split beside the weight it asked for.
    Sticky,
    /// One release across two regions (two routers) as two waves; the second
    /// wave's canary fails, the release halts and the first wave stays promoted.
    Waves,
    /// The team's deployment window opens within a minute and a half: the
    /// rollout waits for it, paused, goes on at the opening and succeeds.
    Window,
}

/// A window opening at the first whole minute at least 20 s after `now`
/// (windows are kept to the minute), open for half an hour, every day, in UTC.
pub fn window_opening_soon(now: chrono::DateTime<chrono::Utc>) -> (Value, chrono::DateTime<chrono::Utc>) {
    use chrono::{DurationRound, TimeDelta};
    let soon = now + TimeDelta::seconds(20);
    let opens = soon.duration_trunc(TimeDelta::minutes(1)).unwrap_or(soon) + TimeDelta::minutes(1);
    let closes = opens + TimeDelta::minutes(30);
    let hhmm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    (json!({"timeZone": "UTC", "allow": [{"from": hhmm(opens), "to": hhmm(closes)}]}), opens)
}

/// What the window story must show: the start held, then the opening.
fn window_problem(status: &Value) -> Option<String> {
    let said =
        |text: &str| status["history"].as_array().into_iter().flatten().any(|e| e["summary"].as_str().is_some_and(|s| s.contains(text)));
    match (said("start held: outside the deployment window"), said("deployment window open")) {
        (true, true) => None,
        (false, _) => Some("the start did not wait for the deployment window".into()),
        (true, false) => Some("the rollout did not go on at the window's opening".into()),
    }
}

/// How long the sticky story pins a user to a side.
pub const STICKY_PIN: Duration = Duration::from_secs(8);

/// How the demo's step analysis judges the canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Judging {
    /// Thresholds: error rate below 2 %, p95 within 1.5 × stable + 20 ms.
    #[default]
    Thresholds,
    /// The statistical judges against stable: two-proportion / Fisher on
    /// errors, Mann-Whitney U on latency, each soaking until it has enough requests.
    Statistical,
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The story.
    pub variant: Variant,
    /// Where its state goes (emptied first unless `keep`).
    pub data_dir: PathBuf,
    /// Keep the rollouts of earlier runs in `data_dir`, so the dashboard's list and
    /// release-health report cover every run (a success, then a rollback, …).
    pub keep: bool,
    /// Where `host.json` and `functions/` are (embedded copies otherwise).
    pub root: PathBuf,
    /// Requests per second of load.
    pub rps: u32,
    /// Keep serving after the end (for the dashboard) until Ctrl-C.
    pub hold: bool,
    /// Analyse through a real Prometheus scraping the router (needs the binary).
    pub prometheus: bool,
    /// Thresholds or the statistical judges.
    pub judging: Judging,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The rollout.
    pub rollout_id: String,
    /// How it ended.
    pub phase: Phase,
    /// What the load generator saw.
    pub load: LoadReport,
    /// The backlog issue file, if one was written.
    pub issue: Option<PathBuf>,
    /// Notifications written to the JSON-lines channel.
    pub notifications: usize,
    /// Whether Sluice did the right thing for this variant.
    pub ok: bool,
    /// Why not, if it did not.
    pub problem: Option<String>,
    /// Wall time of the rollout.
    pub seconds: f64,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A part failed to start.
    #[error("could not start the demo: {0}")]
    Setup(String),
    /// Talking to the local host failed.
    #[error(transparent)]
    Client(#[from] crate::cli::client::ClientError),
}

const TOKEN: &str = "demo-alert-token";
const RESOURCE: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/demo/providers/Microsoft.Web/sites/orders-api";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The spec the demo posts, as a pipeline would.
pub fn demo_spec(router_url: &str, variant: Variant) -> Value {
    demo_spec_with(router_url, variant, None, Judging::Thresholds)
}

/// The step analysis's metrics under the statistical judges: at 5 % of the
/// demo's load the canary sees ~15 requests/s, so each metric soaks (up to
/// 30 s) until it has 150 canary requests before it judges.
fn statistical_metrics(prometheus: Option<&str>) -> Value {
    let common = json!({"interval": "2s", "count": 2, "minSampleSize": 150, "maxSoak": "30s"});
    let mut errors = json!({"name": "errors-vs-stable", "judge": {"test": "errorRate", "maxIncrease": 0.03}});
    let mut latency = json!({"name": "latency-vs-stable", "judge": {"test": "latency", "maxEffect": 0.15}});
    match prometheus {
        None => {
            for (m, t) in [(&mut errors, "local-errors-vs-stable"), (&mut latency, "local-latency-vs-stable")] {
                m["template"] = json!(t);
            }
            errors["judge"]["failures"] = json!("error_count");
            errors["judge"]["requests"] = json!("request_count");
            latency["judge"]["histogram"] = json!("latency_histogram");
        }
        Some(url) => {
            errors["judge"]["failures"] = json!("sum(increase(sluice_router_errors_total{role=\"{{name}}\"}[{{window}}]))");
            errors["judge"]["requests"] = json!("sum(increase(sluice_router_requests_total{role=\"{{name}}\"}[{{window}}]))");
            latency["judge"]["histogram"] =
                json!("sum by (le) (increase(sluice_router_request_duration_seconds_bucket{role=\"{{name}}\"}[{{window}}]))");
            for m in [&mut errors, &mut latency] {
                m["provider"] = json!("prometheus");
                m["settings"] = json!({"url": url});
            }
        }
    }
    for m in [&mut errors, &mut latency] {
        if let (Some(m), Some(c)) = (m.as_object_mut(), common.as_object()) {
            m.extend(c.clone());
        }
    }
    json!([errors, latency])
}

/// The demo spec, analysed by the local router's counters or, given a
/// Prometheus URL, by PromQL over the same router's `/metrics`.
pub fn demo_spec_with(router_url: &str, variant: Variant, prometheus: Option<&str>, judging: Judging) -> Value {
    let metric = |name: &str, query: &str, condition: &str| match prometheus {
        None => json!({"name": name, "provider": "local", "query": query, "successCondition": condition,
                       "interval": "2s", "count": 3, "minSampleSize": 10}),
        Some(url) => {
            let promql = match query {
                "error_rate" => "sum(rate(sluice_router_errors_total{role=\"{{name}}\"}[5s])) / sum(rate(sluice_router_requests_total{role=\"{{name}}\"}[5s]))".to_string(),
                _ => "1000 * histogram_quantile(0.95, sum by (le) (rate(sluice_router_request_duration_seconds_bucket{role=\"{{name}}\"}[5s])))".to_string(),
            };
            // Scrapes come once a second, so the first window after a weight change
            // can be thin: wait a little longer and tolerate one inconclusive reading.
            json!({"name": name, "provider": "prometheus", "query": promql, "settings": {"url": url},
                   "sampleQuery": "sum(increase(sluice_router_requests_total{role=\"{{name}}\"}[5s]))",
                   "successCondition": condition, "interval": "2s", "count": 3, "initialDelay": "5s",
                   "inconclusiveLimit": 1, "minSampleSize": 10})
        }
    };
    let mut latency = metric("p95-latency", "latency_p95_ms", "< 1000");
    latency["baseline"] = json!({"factor": 1.5, "slack": 20});
    let mut spec = json!({
        "target": {
            "name": "orders-api",
            "router": {"provider": "local", "settings": {"url": router_url}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"},
            "resourceIds": [RESOURCE]
        },
        "analysisTemplates": [
            {"name": "error-rate", "metrics": [metric("error-rate", "error_rate", "< 0.02")]},
            {"name": "latency", "metrics": [latency]}
        ],
        "strategy": {"canary": {"steps": [
            // Before any user: the router's preview header reaches v2, and a smoke check asks it for its version.
            {"preview": {"check": {"path": "/orders", "bodyContains": "\"version\":\"v2\"", "attempts": 3, "interval": "1s"}}},
            {"setWeight": 5},
            {"analysis": {"templates": ["error-rate", "latency"]}},
            {"setWeight": 20},
            {"approval": {"minApprovers": 1, "approvers": ["alice", "bob"], "timeout": "2m", "onTimeout": "rollback"}},
            {"setWeight": 50},
            {"pause": {"duration": "4s"}},
            {"setWeight": 100},
            {"pause": {"duration": "4s"}}
        ]}},
        "policy": {"onAlert": "rollback", "onInconclusive": "pause"},
        "backlog": {"provider": "local"},
        "notifications": [{"provider": "console"}, {"provider": "jsonl"}]
    });
    if judging == Judging::Statistical {
        spec["analysisTemplates"] = json!([{"name": "vs-stable", "metrics": statistical_metrics(prometheus)}]);
        spec["strategy"]["canary"]["steps"][2] = json!({"analysis": {"templates": ["vs-stable"]}});
    }
    if variant == Variant::Sticky {
        spec["policy"]["verifyRollback"] = json!({"provider": "local", "query": "request_count", "maxValue": 0,
                                                  "interval": "2s", "attempts": 15});
        spec["policy"]["observedSplit"] = json!({"tolerance": 10, "checks": 2, "minRequests": 100, "onMismatch": "note"});
    }
    if variant != Variant::Alert && variant != Variant::Sticky {
        // Background analysis watches every step; the alert story leaves the
        // catching to the alert rule, the sticky one to the judge (pinned users
        // reach a new canary only as their pins expire, too few for a threshold).
        let mut background = metric("bg-error-rate", "error_rate", "< 0.02");
        background["interval"] = json!("3s");
        background["initialDelay"] = json!(if prometheus.is_some() { "8s" } else { "3s" });
        if let Some(m) = background.as_object_mut() {
            m.remove("count");
        }
        spec["strategy"]["canary"]["analysis"] = json!({"metrics": [background]});
    }
    spec
}

/// A Common Alert Schema payload, as an Azure Monitor metric alert on the canary slot sends it.
pub fn canary_alert(error_rate: f64) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let id =
        format!("/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.AlertsManagement/alerts/{}", uuid::Uuid::new_v4());
    json!({
        "schemaId": "azureMonitorCommonAlertSchema",
        "data": {
            "essentials": {
                "alertId": id,
                "alertRule": "orders-api canary 5xx ratio",
                "severity": "Sev1",
                "signalType": "Metric",
                "monitorCondition": "Fired",
                "monitoringService": "Platform",
                "alertTargetIDs": [format!("{}/slots/canary", RESOURCE.to_ascii_lowercase())],
                "configurationItems": ["orders-api-canary"],
                "originAlertId": "demo",
                "firedDateTime": now,
                "description": "5xx ratio on the canary slot is above 5%",
                "essentialsVersion": "1.0",
                "alertContextVersion": "1.0"
            },
            "alertContext": {
                "properties": null,
                "conditionType": "SingleResourceMultipleMetricCriteria",
                "condition": {
                    "windowSize": "PT5M",
                    "allOf": [{
                        "metricName": "Http5xx ratio",
                        "metricNamespace": "Microsoft.Web/sites/slots",
                        "operator": "GreaterThan",
                        "threshold": "0.05",
                        "timeAggregation": "Average",
                        "dimensions": [],
                        "metricValue": (error_rate * 1000.0).round() / 1000.0
                    }]
                }
            },
            "customProperties": null
        }
    })
}

/// Empties the data directory unless the run keeps earlier ones, and says how many
/// notifications it already holds (so this run counts only its own).
/// How long the demo waits for the backlog issue once the rollout has ended.
const ISSUE_WAIT: Duration = Duration::from_secs(15);

/// The backlog issue is opened after traffic is back on stable (a rollback waits for
/// nothing), so the status that first says RolledBack or Halted may not name it yet:
/// read the status again until it does, for at most `wait` ([`ISSUE_WAIT`] in the demo).
pub(crate) async fn with_backlog_issue<F, Fut>(mut status: Value, wait: Duration, mut read: F) -> Result<Value, DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, crate::cli::client::ClientError>>,
{
    let began = Instant::now();
    while status.pointer("/backlog/issue/url").is_none() && began.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = read().await?;
    }
    Ok(status)
}

fn prepare_data_dir(opts: &DemoOptions) -> Result<usize, DemoError> {
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&opts.data_dir);
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(notifications_written(opts))
}

/// Notifications the local channel has written into the data directory.
fn notifications_written(opts: &DemoOptions) -> usize {
    std::fs::read_to_string(opts.data_dir.join("notifications.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

/// Whether the rollback's evidence carries a statistical judgement.
fn judged(status: &Value) -> bool {
    let measurements = status.pointer("/rollout/failure/evidence/measurements").and_then(Value::as_array);
    measurements.map(|ms| ms.iter().any(|m| m.get("judgement").is_some_and(|j| j["decision"] == "fail"))).unwrap_or(false)
}

/// What the sticky story must show: the rollback check found canary traffic
/// after the revert at least once, then saw it stop; and the observed split
/// was recorded beside the weight asked for.
fn sticky_problem(status: &Value) -> Option<String> {
    let runs = status.pointer("/rollout/runs").and_then(Value::as_array).cloned().unwrap_or_default();
    let check = runs.iter().find(|r| r.pointer("/kind/kind").or_else(|| r.get("kind")) == Some(&json!("rollbackCheck")));
    let found_traffic = check.and_then(|r| r.pointer("/metrics/0/failed")).and_then(Value::as_u64).unwrap_or(0);
    let verified = status.pointer("/rollout/failure/verified").and_then(Value::as_bool);
    let observed = status.pointer("/rollout/traffic/observed/share").and_then(Value::as_f64);
    match (found_traffic, verified, observed) {
        (0, _, _) => Some("the rollback check never saw the pinned users on the canary".into()),
        (_, Some(true), Some(_)) => None,
        (_, Some(true), None) => Some("no observed split was recorded".into()),
        (_, other, _) => Some(format!("the rollback was not verified (verified: {other:?})")),
    }
}

/// Runs the demo and reports what happened.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    if opts.variant == Variant::Waves {
        return waves::run(opts).await;
    }
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let earlier_notifications = prepare_data_dir(&opts)?;

    let v1_fault = Arc::new(Fault::default());
    let v2_fault = Arc::new(Fault::default());
    match opts.variant {
        Variant::FaultErrors | Variant::Sticky => v2_fault.errors_per_mille.store(200, Ordering::Relaxed),
        Variant::FaultLatency => v2_fault.extra_latency_ms.store(150, Ordering::Relaxed),
        _ => {}
    }
    let (v1, _) = sample_app::serve("v1", v1_fault, loopback()).await.map_err(setup)?;
    let (v2, _) = sample_app::serve("v2", v2_fault.clone(), loopback()).await.map_err(setup)?;
    let router = Router::new(
        Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{v1}") },
        Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{v2}") },
    );
    if opts.variant == Variant::Sticky {
        router.set_affinity(Some(STICKY_PIN));
    }
    let at = router.serve(loopback(), loopback()).await.map_err(setup)?;
    let (router_url, traffic_url) = (at.admin_url(), at.traffic_url());
    let host = local::start(LocalConfig {
        root: opts.root.clone(),
        data_dir: opts.data_dir.clone(),
        addr: loopback(),
        alert_token: Some(TOKEN.into()),
        api_key: None,
        require_principal: false,
        issuers: Vec::new(),
        public_url: None,
        signed_in: None,
        write_token: None,
    })
    .await
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    let base = host.url();

    say("Sluice demo");
    say(format!("  sample API  v1 at http://{v1}, v2 at http://{v2}"));
    say(format!("  router      traffic at {traffic_url}, admin at {router_url}  (metrics at {router_url}/metrics)"));
    say(format!("  Sluice      {base}  (state in {})", opts.data_dir.display()));
    let load = Load::start(&traffic_url, opts.rps, 8);
    say(format!("  load        ~{} requests/s from {USERS} simulated users", opts.rps));
    if opts.variant == Variant::Sticky {
        say(format!(
            "  affinity    each user stays on the side first picked for them for {}s, as an affinity cookie pins them",
            STICKY_PIN.as_secs()
        ));
    }
    let prometheus = if opts.prometheus {
        let target = at.admin.to_string();
        let server = tokio::task::spawn_blocking(move || prometheus::start_prometheus(&target, None, None))
            .await
            .map_err(|e| DemoError::Setup(e.to_string()))?
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        say(format!("  prometheus  {} scraping the router every second; analysis runs PromQL", server.url));
        Some(server)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pipeline = Client::new(&base, None, "azure-pipelines");
    // The sticky story judges against stable: those measurements count both sides' requests (the observed split).
    let judging = if opts.variant == Variant::Sticky { Judging::Statistical } else { opts.judging };
    let mut spec = demo_spec_with(&router_url, opts.variant, prometheus.as_ref().map(|p| p.url.as_str()), judging);
    let mut deadline = Duration::from_secs(80);
    if opts.variant == Variant::Window {
        let (windows, opens) = window_opening_soon(chrono::Utc::now());
        spec["policy"]["windows"] = windows;
        say(format!(
            "\n  >> the team deploys only inside its window, which opens at {} UTC: the rollout waits for it, paused.",
            opens.format("%H:%M")
        ));
        deadline += Duration::from_secs(90);
    }
    let started = pipeline.start(&spec, None).await?;
    let id = started["id"].as_str().unwrap_or_default().to_string();
    say(format!("\nThe pipeline posts the rollout: {id}\n  plan: {}\n", started["plan"].as_str().unwrap_or("")));
    say(format!("  dashboard: {base}/api/dashboard/{id}\n"));

    let began = Instant::now();
    let mut watcher = Watcher::new(Duration::from_secs(4));
    let mut approval_at: Option<Instant> = None;
    let mut alert_sent = false;
    let final_status = loop {
        let status = pipeline.status(&id).await?;
        for line in watcher.update(&status) {
            say(format!("  {line}"));
        }
        if let Some(_phase) = terminal_phase(&status) {
            break status;
        }
        if began.elapsed() > deadline {
            say("  the demo ran out of time; aborting the rollout");
            let _ = pipeline.action(&id, "abort", &json!({"reason": "demo timed out"})).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            break pipeline.status(&id).await?;
        }
        if status["phase"] == "AwaitingApproval" && approval_at.is_none() {
            approval_at = Some(Instant::now());
            if opts.variant == Variant::Alert {
                say("\n  >> approval requested. Meanwhile v2 starts failing (simulated incident: 25% of requests → 500).");
                say("  >> a local alert rule watches the canary's 5xx ratio, as an Azure Monitor metric alert would.\n");
                v2_fault.errors_per_mille.store(250, Ordering::Relaxed);
            } else {
                say(format!("\n  >> approval requested. A person reviews the numbers and runs:\n  >>   sluice approve {id} --as alice\n"));
            }
        }
        if let Some(at) = approval_at {
            if opts.variant != Variant::Alert && at.elapsed() > Duration::from_secs(3) && status["phase"] == "AwaitingApproval" {
                let alice = Client::new(&base, None, "alice");
                alice.action(&id, "approve", &json!({})).await?;
                approval_at = Some(Instant::now() + Duration::from_secs(3600));
            }
            if opts.variant == Variant::Alert && !alert_sent {
                let stats = router.stats(5);
                if stats.canary.requests >= 10 && stats.canary.error_rate.unwrap_or(0.0) > 0.05 {
                    let rate = stats.canary.error_rate.unwrap_or(0.0);
                    say(format!(
                        "\n  >> alert rule 'orders-api canary 5xx ratio' fired: {:.1}% > 5% over the last 5s; posting the Common Alert Schema to /api/alerts\n",
                        rate * 100.0
                    ));
                    let monitor = Client::new(&base, None, "azure-monitor");
                    let answer = monitor.alert(&canary_alert(rate), Some(TOKEN)).await?;
                    say(format!("  >> /api/alerts answered 202: {} alert(s) accepted", answer["accepted"]));
                    alert_sent = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let seconds = began.elapsed().as_secs_f64();
    // Keep the load on a moment so the totals show traffic back on stable.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let totals = load.stop().await;
    let phase = terminal_phase(&final_status).unwrap_or(Phase::Aborted);
    let final_status = if phase == Phase::RolledBack {
        with_backlog_issue(final_status, ISSUE_WAIT, || pipeline.status(&id)).await?
    } else {
        final_status
    };
    let issue =
        final_status.pointer("/backlog/issue/url").and_then(Value::as_str).and_then(|u| u.strip_prefix("file://")).map(PathBuf::from);
    let notifications = notifications_written(&opts).saturating_sub(earlier_notifications);
    let failure_phase = final_status.pointer("/rollout/failure/phase").and_then(Value::as_str).unwrap_or("");
    let failure_kind = final_status.pointer("/rollout/failure/evidence/kind").and_then(Value::as_str).unwrap_or("");

    let problem = match opts.variant {
        Variant::Success if phase != Phase::Succeeded => Some(format!("expected Succeeded, got {phase}")),
        Variant::Success if totals.failures() > 0 => Some(format!("{} requests failed during the rollout", totals.failures())),
        Variant::Success => None,
        Variant::Window if phase != Phase::Succeeded => Some(format!("expected Succeeded, got {phase}")),
        Variant::Window => window_problem(&final_status),
        _ if phase != Phase::RolledBack => Some(format!("expected RolledBack, got {phase}")),
        _ if issue.as_ref().map(|p| !p.exists()).unwrap_or(true) => Some("no backlog issue was written".into()),
        Variant::Alert if failure_kind != "alert" || failure_phase != "AwaitingApproval" => {
            Some(format!("expected an alert rollback from AwaitingApproval, got {failure_kind} from {failure_phase}"))
        }
        Variant::FaultErrors | Variant::FaultLatency | Variant::Sticky if failure_kind != "analysis" => {
            Some(format!("expected the analysis to roll back, got {failure_kind}"))
        }
        Variant::Sticky => sticky_problem(&final_status),
        // Errors may be caught first by the background threshold; latency has only the judge.
        Variant::FaultLatency if opts.judging == Judging::Statistical && !judged(&final_status) => {
            Some("expected the statistical judge to decide the rollback".into())
        }
        _ => None,
    };

    say("\nResult");
    say(format!("  rollout        {id}: {phase} after {seconds:.1}s"));
    say(format!(
        "  requests       {} in total: v1 served {}, v2 served {}; failed: {}",
        totals.total(),
        totals.served_by("v1"),
        totals.served_by("v2"),
        totals.failures()
    ));
    if !matches!(opts.variant, Variant::Success | Variant::Window) {
        let saw = totals.users.get("v2").map(|u| u.len()).unwrap_or(0);
        say(format!(
            "  exposure       {saw} of {USERS} users were served by v2 before the rollback; {} got at least one error",
            totals.users_failed.len()
        ));
    }
    if let Some(o) = final_status.pointer("/rollout/traffic/observed") {
        say(format!(
            "  observed split {:.1}% of {} requests reached v2 while the router was asked for {}%",
            o["share"].as_f64().unwrap_or(0.0),
            o["requests"].as_u64().unwrap_or(0),
            o["requested"].as_u64().unwrap_or(0)
        ));
    }
    if let Some(v) = final_status.pointer("/rollout/failure/verification").and_then(Value::as_str) {
        say(format!("  after revert   {v}"));
    }
    if let Some(p) = &issue {
        say(format!("  backlog issue  {}", p.display()));
    }
    say(format!("  notifications  {notifications} in {}", opts.data_dir.join("notifications.jsonl").display()));
    match &problem {
        None => say(format!(
            "  verdict        OK: {}",
            match opts.variant {
                Variant::Success => "v2 is live and no request failed through every weight change and the promotion",
                Variant::Window => "the rollout waited for its deployment window, went on at the opening, and v2 is live",
                Variant::Alert => "the alert rolled the rollout back from the approval gate and the issue is filed",
                Variant::Sticky =>
                    "pinned users kept reaching v2 after the revert; Sluice saw it, waited until they were gone, and says so",
                _ => "the analysis caught the bad canary, traffic is back on v1 and the issue is filed",
            }
        )),
        Some(p) => say(format!("  verdict        NOT OK: {p}")),
    }
    if opts.hold {
        say(format!("\nStill serving for the dashboard: {base}/api/dashboard/{id}  (Ctrl-C to stop)"));
        let _ = tokio::signal::ctrl_c().await;
    }
    host.stop().await;
    drop(prometheus);
    Ok(DemoReport { rollout_id: id, phase, load: totals, issue, notifications, ok: problem.is_none(), problem, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_reads_the_status_again_until_it_names_the_backlog_issue() {
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let status = with_backlog_issue(json!({"phase": "RolledBack"}), ISSUE_WAIT, || {
            let n = reads.fetch_add(1, Ordering::Relaxed);
            async move { Ok(if n < 2 { json!({"phase": "RolledBack"}) } else { json!({"backlog": {"issue": {"url": "file:///x.md"}}}) }) }
        })
        .await
        .expect("reads");
        assert_eq!(reads.load(Ordering::Relaxed), 3);
        assert_eq!(status.pointer("/backlog/issue/url"), Some(&json!("file:///x.md")));
    }

    #[tokio::test]
    async fn the_wait_for_the_backlog_issue_is_bounded() {
        let (began, wait) = (Instant::now(), Duration::from_millis(600));
        let status = with_backlog_issue(json!({}), wait, || async { Ok(json!({"phase": "RolledBack"})) }).await.expect("reads");
        assert!(status.pointer("/backlog/issue/url").is_none());
        assert!(began.elapsed() >= wait && began.elapsed() < wait * 5, "{:?}", began.elapsed());
    }
}
