//! With a real Prometheus scraping the local router's `/metrics`: the
//! Prometheus metric provider, and the whole alert path — a rule on the
//! canary's error ratio fires, a real Alertmanager posts its webhook to
//! `/api/alerts`, and Sluice rolls back.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::prom;
use common::*;
use sluice::domain::rollout::{MeasureOutcome, MetricPlan};
use sluice::domain::spec::Condition;
use sluice::ports::env::AdapterEnv;

fn plan(url: &str, query: &str) -> MetricPlan {
    MetricPlan {
        name: "m".into(),
        provider: "prometheus".into(),
        query: query.into(),
        settings: serde_json::from_value(json!({"url": url})).expect("settings"),
        condition: Some(Condition::parse("< 0.05").expect("condition")),
        judge: None,
        consecutive_failure_limit: None,
        max_soak_ms: None,
        until_pass: false,
        interval_ms: 10_000,
        count: Some(1),
        initial_delay_ms: 0,
        failure_limit: 0,
        consecutive_error_limit: 4,
        inconclusive_limit: 0,
        min_samples: None,
        sample_query: None,
        baseline: Some(sluice::domain::spec::Baseline { factor: 2.0, slack: 0.01 }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_provider_reads_the_router_through_a_real_prometheus() {
    let up = Upstreams::start().await;
    up.router.set_weight(sluice::domain::ids::Weight::new(30).expect("weight"));
    let load = sluice::devtools::load::Load::start(&up.traffic_url, 100, 4);
    let target = up.router_url.trim_start_matches("http://").to_string();
    let server = tokio::task::spawn_blocking(move || prom::prometheus(&target, None, None)).await.expect("prometheus");
    let env = AdapterEnv::new(std::env::temp_dir(), "http://sluice.test".into());
    let t: sluice::domain::spec::Target = serde_json::from_value(json!({
        "name": "orders-api", "router": {"provider": "local", "settings": {"url": up.router_url}},
        "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}
    }))
    .expect("target");
    let rate = plan(&server.url, "sum(rate(sluice_router_requests_total{role=\"{{name}}\"}[5s]))");
    // Prometheus needs a few scrapes before a rate exists.
    let started = Instant::now();
    let outcome = loop {
        let o = sluice::ports::metrics::measure(&rate, &t, &env, sluice::ports::metrics::Window::of(&rate)).await;
        if matches!(o, MeasureOutcome::Value { .. }) || started.elapsed() > Duration::from_secs(30) {
            break o;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let MeasureOutcome::Value { canary, stable, .. } = outcome else { panic!("no rate after 30s: {outcome:?}") };
    let stable = stable.expect("the stable baseline");
    assert!(canary > 5.0 && stable > 20.0, "canary {canary}/s, stable {stable}/s");
    assert!(canary < stable, "30% of traffic on the canary");

    let empty = plan(&server.url, "sluice_router_requests_total{role=\"nobody\"}");
    assert_eq!(
        sluice::ports::metrics::measure(&empty, &t, &env, sluice::ports::metrics::Window::of(&empty)).await,
        MeasureOutcome::NoData,
        "an empty vector is no data"
    );
    let broken = plan(&server.url, "sum(rate(");
    assert!(
        matches!(
            sluice::ports::metrics::measure(&broken, &t, &env, sluice::ports::metrics::Window::of(&broken)).await,
            MeasureOutcome::Error { .. }
        ),
        "a bad query is an error, never a pass"
    );
    let down = plan("http://127.0.0.1:9", "up");
    assert!(matches!(
        sluice::ports::metrics::measure(&down, &t, &env, sluice::ports::metrics::Window::of(&down)).await,
        MeasureOutcome::Error { .. }
    ));
    load.stop().await;
}

const RULES: &str = r#"groups:
  - name: sluice
    rules:
      - alert: CanaryErrorRatio
        expr: sum(rate(sluice_router_errors_total{role="canary"}[5s])) / sum(rate(sluice_router_requests_total{role="canary"}[5s])) > 0.05
        labels:
          severity: critical
          sluice_target: orders-api
        annotations:
          summary: canary 5xx ratio above 5%
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_alert_through_alertmanager_rolls_back() {
    let rig = Rig::start().await.with_load(100);
    let webhook = format!("{}/api/alerts", rig.host.url());
    let am = tokio::task::spawn_blocking(move || prom::alertmanager(&webhook, TOKEN)).await.expect("alertmanager");
    let am_addr = am.url.trim_start_matches("http://").to_string();
    let target = rig.up.router_url.trim_start_matches("http://").to_string();
    let _prometheus =
        tokio::task::spawn_blocking(move || prom::prometheus(&target, Some(RULES), Some(&am_addr))).await.expect("prometheus");
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    // The canary starts failing; nothing in the plan measures it — only the alert can catch it.
    rig.up.fail_canary(300);
    let started = Instant::now();
    let done = rig.wait(&id, "rolled back by the alert", Duration::from_secs(60), |s| s["phase"] == "RolledBack").await;
    let evidence = done.pointer("/rollout/failure/evidence").cloned().expect("evidence");
    assert_eq!(evidence["kind"], "alert");
    assert_eq!(evidence["alert"]["source"], "Alertmanager");
    assert_eq!(evidence["alert"]["rule"], "CanaryErrorRatio");
    assert_eq!(evidence["alert"]["severity"], "critical");
    assert_eq!(done.pointer("/rollout/failure/phase"), Some(&json!("AwaitingApproval")));
    assert_eq!(rig.up.router.route().weight, 0);
    let recorded = rig.host.app.engine.store.alerts(10).await.expect("alerts");
    assert!(recorded.iter().any(|a| a.source == "Alertmanager" && a.matched == vec![id.clone()]));
    println!("alert to rollback: {:.1}s after the canary started failing", started.elapsed().as_secs_f64());
}

/// Asks Prometheus for one instant vector and returns `(labels, value)` pairs.
async fn instant(prom_url: &str, query: &str) -> Vec<(serde_json::Value, f64)> {
    let asked = reqwest::Client::new().get(format!("{prom_url}/api/v1/query")).query(&[("query", query)]).send().await;
    let body: serde_json::Value = match asked {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    let rows = body["data"]["result"].as_array().cloned().unwrap_or_default();
    rows.into_iter().map(|r| (r["metric"].clone(), r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_sluices_own_metrics_with_the_function_key() {
    let rig = Rig::start().await.with_load(80);
    // One rollout the analysis rolls back, then one that succeeds (a promotion makes v2 the stable app).
    rig.up.fail_canary(500);
    let bad_steps = json!([{"setWeight": 20}, {"analysis": {"metrics": [metric("errors", "error_rate", "< 0.05", Some(2))]}}]);
    let bad = rig.start_rollout(&rig.spec(bad_steps)).await;
    rig.wait_phase(&bad, "RolledBack").await;
    rig.up.fail_canary(0);
    let ok = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"pause": {"duration": "1s"}}]))).await;
    rig.wait_phase(&ok, "Succeeded").await;

    let target = rig.host.addr.to_string();
    let server = tokio::task::spawn_blocking(move || prom::start_sluice_scrape(&target, "the-function-key")).await.expect("prometheus");
    let started = Instant::now();
    let finished = loop {
        let rows = instant(&server.url, "sluice_rollouts_finished_total").await;
        if rows.len() == 2 || started.elapsed() > Duration::from_secs(30) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let outcome = |o: &str| finished.iter().find(|(l, _)| l["outcome"] == o).map(|(l, v)| (l["service"].clone(), *v));
    assert_eq!(outcome("succeeded"), Some((json!("orders-api"), 1.0)), "{finished:?}");
    assert_eq!(outcome("rolledBack"), Some((json!("orders-api"), 1.0)), "{finished:?}");
    let up = instant(&server.url, "up{job=\"sluice\"}").await;
    assert_eq!(up.first().map(|(_, v)| *v), Some(1.0), "Prometheus scraped /api/metrics: {up:?}");
    let causes = instant(&server.url, "sluice_rollbacks_total").await;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!((causes[0].0["cause"].clone(), causes[0].1), (json!("analysis"), 1.0));
    let reverts = instant(&server.url, "sluice_time_to_revert_seconds_count").await;
    assert_eq!(reverts.first().map(|(_, v)| *v), Some(1.0), "{reverts:?}");
    let within = instant(&server.url, "sluice_time_to_revert_seconds_bucket{le=\"5\"}").await;
    assert_eq!(within.first().map(|(_, v)| *v), Some(1.0), "the local router reverts within 5 s: {within:?}");
    let steps = instant(&server.url, "sluice_step_decision_seconds_count{kind=\"analysis\",result=\"stopped\"}").await;
    assert_eq!(steps.first().map(|(_, v)| *v), Some(1.0), "{steps:?}");
    let exposed = instant(&server.url, "sluice_failed_canary_requests_total").await;
    assert!(exposed.first().is_some_and(|(_, v)| *v >= 3.0), "the failed canary's requests, as its analysis counted them: {exposed:?}");
}
