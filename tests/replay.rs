//! `sluice replay` against a real Prometheus holding a recorded incident:
//! forty minutes of canary and stable traffic, written as OpenMetrics and
//! backfilled with promtool, where the canary starts failing (10 % errors)
//! and slowing down at minute 20. The statistical judges must pass every
//! interval before it and roll back on the first interval that sees it.
//! And the same against the local router's own counters, live traffic with
//! a fault switched on at a known second.

use crate::common;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};

const STEP_SECS: i64 = 15;
const MINUTES: i64 = 40;
const INCIDENT_MINUTE: i64 = 20;
const BOUNDS: [&str; 4] = ["0.05", "0.1", "0.25", "+Inf"];

/// Per 15 s: requests, error share and cumulative latency shares per bucket.
fn profile(service: &str, minute: f64) -> (f64, f64, [f64; 4]) {
    let incident = service == "canary" && minute > INCIDENT_MINUTE as f64;
    let requests = if service == "canary" { 150.0 } else { 600.0 };
    if incident {
        (requests, 0.10, [0.1, 0.4, 0.9, 1.0])
    } else {
        (requests, 0.005, [0.6, 0.9, 0.99, 1.0])
    }
}

fn history(t0: DateTime<Utc>) -> String {
    let steps = MINUTES * 60 / STEP_SECS;
    let mut out = String::from("# TYPE http_requests counter\n");
    for service in ["canary", "stable"] {
        for code in ["200", "500"] {
            let mut total = 0.0;
            for i in 0..=steps {
                if i > 0 {
                    let (n, errors, _) = profile(service, (i * STEP_SECS) as f64 / 60.0);
                    total += if code == "500" { n * errors } else { n * (1.0 - errors) };
                }
                let ts = t0.timestamp() + i * STEP_SECS;
                let _ = writeln!(out, "http_requests_total{{code=\"{code}\",service=\"{service}\"}} {total} {ts}");
            }
        }
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for service in ["canary", "stable"] {
        let mut buckets = [0.0f64; 4];
        let mut count = 0.0;
        for i in 0..=steps {
            if i > 0 {
                let (n, _, shares) = profile(service, (i * STEP_SECS) as f64 / 60.0);
                for (b, share) in buckets.iter_mut().zip(shares) {
                    *b += n * share;
                }
                count += n;
            }
            let ts = t0.timestamp() + i * STEP_SECS;
            for (le, v) in BOUNDS.iter().zip(buckets) {
                let _ = writeln!(out, "http_request_duration_seconds_bucket{{le=\"{le}\",service=\"{service}\"}} {v} {ts}");
            }
            let _ = writeln!(out, "http_request_duration_seconds_count{{service=\"{service}\"}} {count} {ts}");
            let _ = writeln!(out, "http_request_duration_seconds_sum{{service=\"{service}\"}} {} {ts}", count * 0.05);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn spec(prometheus: &str) -> Value {
    json!({
        "target": {"name": "orders-api", "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [
            {"name": "errors", "template": "prometheus-errors-vs-stable", "settings": {"url": prometheus}, "interval": "2m"},
            {"name": "latency", "template": "prometheus-latency-vs-stable", "settings": {"url": prometheus}, "interval": "2m"}
        ]}}]}}
    })
}

#[test]
fn replay_finds_the_recorded_incident_on_the_right_interval() {
    let t0 = (Utc::now() - Duration::minutes(55)).duration_trunc(Duration::minutes(1)).expect("whole minutes");
    let prometheus = sluice::devtools::prometheus::start_prometheus_with_history(&history(t0)).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("spec.json");
    std::fs::write(&file, spec(&prometheus.url).to_string()).expect("spec written");
    let at = |minutes: i64| (t0 + Duration::minutes(minutes)).to_rfc3339();

    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("replay")
        .arg(&file)
        .args(["--from", &at(4), "--to", &at(MINUTES), "--json"])
        .output()
        .expect("sluice runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2 * 18, "two metrics every 2 minutes from minute 6 to 40: {rows:#?}");
    let incident = t0 + Duration::minutes(INCIDENT_MINUTE + 2);
    assert_eq!(report["firstRollback"].as_str().map(|t| t.parse::<DateTime<Utc>>().ok()), Some(Some(incident)), "{rows:#?}");
    for row in rows {
        let at: DateTime<Utc> = row["at"].as_str().and_then(|t| t.parse().ok()).expect("a time");
        let (decision, note) = (row["decision"].as_str(), row["note"].as_str().unwrap_or(""));
        if at < incident {
            assert_eq!(decision, Some("pass"), "healthy interval judged wrongly: {row:#}");
        } else {
            assert_eq!(decision, Some("roll back"), "incident interval missed: {row:#}");
        }
        if row["metric"] == "errors" && at == incident {
            assert!(note.starts_with("canary 10.00 % errors (120 of 1200) vs stable 0.50 % (24 of 4800): +9.50 points"), "{note}");
        }
        if row["metric"] == "latency" && at == incident {
            assert!(
                note.starts_with(
                    "a canary request is slower than a stable one 83 % of the time (tolerated 60 %; canary median ≤ 0.25, p95 > 0.25;"
                ),
                "{note}"
            );
        }
    }

    // The same replay for people: one line per measurement and the verdict.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("replay")
        .arg(&file)
        .args(["--from", &at(18), "--to", &at(24)])
        .output()
        .expect("sluice runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.contains("  errors+latency/errors  ")).count(), 3, "{text}");
    assert!(text.contains(&format!("Sluice would have rolled back at {}", incident.format("%Y-%m-%d %H:%M:%S UTC"))), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_the_local_routers_last_minutes() {
    let up = common::Upstreams::start().await;
    up.router.set_weight(sluice::domain::ids::Weight::new(50).expect("weight"));
    let load = sluice::devtools::load::Load::start(&up.traffic_url, 200, 4);
    tokio::time::sleep(StdDuration::from_secs(6)).await;
    // Switch the fault on at the start of a whole second, the router's resolution.
    let now = Utc::now();
    let incident = now.duration_trunc(Duration::seconds(1)).expect("whole seconds") + Duration::seconds(1);
    tokio::time::sleep((incident - now).to_std().unwrap_or_default()).await;
    up.fail_canary(300);
    tokio::time::sleep(StdDuration::from_secs(7)).await;
    load.stop().await;

    let doc = json!({
        "target": {"name": "orders-api", "router": {"provider": "local", "settings": {"url": up.router_url}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"analysis": {"metrics": [
            {"name": "error-rate", "provider": "local", "query": "error_rate", "successCondition": "< 0.05", "interval": "2s", "minSampleSize": 10},
            {"name": "vs-stable", "template": "local-errors-vs-stable", "interval": "2s",
             "judge": {"test": "errorRate", "failures": "error_count", "requests": "request_count", "maxIncrease": 0.05}}
        ]}}]}}
    });
    let (spec, plan) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).unwrap_or_else(|p| panic!("{p}"));
    let env = sluice::ports::env::AdapterEnv::new(std::env::temp_dir(), String::new());
    let report = sluice::shell::replay::replay(&plan, &spec.target, &env, incident - Duration::seconds(5), incident + Duration::seconds(5))
        .await
        .expect("replay");
    assert_eq!(report.rows.len(), 2 * 5, "{:#?}", report.rows);
    for row in &report.rows {
        let offset = (row.at - incident).num_seconds();
        match offset {
            // Windows of whole seconds before the fault.
            -3 | -1 => assert_eq!(row.decision.as_deref(), Some("pass"), "{row:?}"),
            // Windows wholly after it.
            3 | 5 => assert_eq!(row.decision.as_deref(), Some("roll back"), "{row:?}"),
            // The window that straddles the switch may go either way.
            _ => assert_eq!(offset, 1, "{row:?}"),
        }
    }
    let first = report.first_rollback.map(|t| (t - incident).num_seconds());
    assert!(matches!(first, Some(1) | Some(3)), "first rollback at {first:?} s from the incident: {:#?}", report.rows);

    // A window the router no longer keeps is refused before the walk: an error that says so, not a verdict.
    let old = incident - Duration::minutes(10);
    let refused = sluice::shell::replay::replay(&plan, &spec.target, &env, old, old + Duration::seconds(20)).await.expect_err("unserved");
    assert!(refused.to_string().contains("the router keeps only the last"), "{refused}");
    // The same through the CLI: a non-zero exit and no verdict, however long the window.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("spec.json");
    std::fs::write(&file, doc.to_string()).expect("spec written");
    let out =
        Command::new(env!("CARGO_BIN_EXE_sluice")).arg("replay").arg(&file).args(["--from", "2h", "--to", "30m"]).output().expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("cannot serve this window") && !stdout.contains("Sluice would"), "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_a_spec_that_points_its_credential_elsewhere_and_sends_nothing() {
    let listener = common::recorder::Recorder::start(|_| (200, vec![], "{}".into())).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("spec.json");
    let spec = json!({
        "target": {"name": "orders", "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [
            {"name": "errors", "provider": "logAnalytics", "query": "requests | count", "successCondition": "< 1", "interval": "1m",
             "settings": {"workspaceId": "ws-1", "endpoint": listener.url}}
        ]}}]}}
    });
    std::fs::write(&file, spec.to_string()).expect("spec written");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("replay")
        .arg(&file)
        .args(["--from", "2h", "--to", "1h"])
        // This machine has a credential: the spec must not be able to send it to the listener.
        .env("SLUICE_AZURE_TOKEN", "a-token-for-log-analytics")
        .env_remove("SLUICE_ALLOW_LOOPBACK_ENDPOINTS")
        .output()
        .await
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("strategy.canary.steps[1].analysis.metrics[0].settings.endpoint"), "{stderr}");
    assert!(listener.seen().is_empty(), "{:?}", listener.seen());
}
