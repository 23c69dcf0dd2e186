//! Whole flows through the local host: real HTTP, the real router in front
//! of two real sample apps, real load, the embedded store and queue.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use common::*;
use sluice::ports::clock::SystemClock;
use sluice::ports::queue::embedded::EmbeddedQueue;
use sluice::ports::queue::{DeadLetter, Delivery, OutMessage, Queue, QueueError, SendOutcome};
use sluice::ports::store::sqlite::SqliteStore;
use sluice::shell::engine::Engine;

fn watch_process(url: &str, id: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["watch", id, "--url", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sluice watch runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_succeeds_with_analysis_and_approval_and_no_failed_request() {
    let rig = Rig::start().await.with_load(100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spec = rig.spec(json!([
        {"setWeight": 20},
        {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(2))]}},
        {"approval": {"approvers": ["alice"]}},
        {"setWeight": 100},
        {"pause": {"duration": "1s"}}
    ]));
    let id = rig.start_rollout(&spec).await;
    let mut watcher = watch_process(&rig.host.url(), &id);
    rig.wait_phase(&id, "AwaitingApproval").await;
    // The pipeline that started it may not approve, nor may a stranger.
    let refused = rig.client.action(&id, "approve", &json!({})).await.expect_err("self-approval is refused");
    assert!(refused.to_string().contains("HTTP 403"), "an authorisation refusal: {refused}");
    rig.as_user("alice").action(&id, "approve", &json!({})).await.expect("alice approves");
    let done = rig.wait_phase(&id, "Succeeded").await;

    assert_eq!(weights(&done), vec![0, 20, 100]);
    assert_eq!(
        transitions(&done),
        [
            "Pending>Progressing",
            "Progressing>AwaitingApproval",
            "AwaitingApproval>Progressing",
            "Progressing>Promoting",
            "Promoting>Succeeded"
        ]
    );
    let route = rig.up.router.route();
    assert!(route.promoted && route.stable.version == "v2" && route.weight == 0, "{route:?}");
    let approved = done["history"].as_array().expect("history").iter().find(|e| e["cause"] == "Approved").cloned();
    assert_eq!(approved.map(|e| e["by"].clone()), Some(json!("alice")));
    let kinds: Vec<String> = rig.notifications().iter().map(|n| n["kind"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(kinds, ["started", "approvalNeeded", "phaseChanged", "succeeded"], "promoting and succeeding in one step make one message");
    let status = tokio::time::timeout(Duration::from_secs(10), watcher.wait()).await.expect("watch ends").expect("watch exits");
    assert_eq!(status.code(), Some(0), "watch exits 0 on Succeeded");
    let load = rig.load.expect("load").stop().await;
    assert_eq!(load.failures(), 0, "{load:?}");
    assert!(load.served_by("v2") > 0 && load.served_by("v1") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_rolls_back_and_files_one_issue() {
    let rig = Rig::start().await.with_load(100);
    rig.up.fail_canary(300);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spec = rig.spec(json!([
        {"setWeight": 20},
        {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(3))]}},
        {"setWeight": 100}
    ]));
    let id = rig.start_rollout(&spec).await;
    let mut watcher = watch_process(&rig.host.url(), &id);
    let done = rig
        .wait(&id, "RolledBack with its issue", Duration::from_secs(30), |s| {
            s["phase"] == "RolledBack" && s.pointer("/backlog/state") == Some(&json!("opened"))
        })
        .await;
    assert_eq!(rig.up.router.route().weight, 0);
    assert_eq!(done.pointer("/rollout/failure/evidence/kind"), Some(&json!("analysis")));
    let files = rig.backlog_files();
    assert_eq!(files.len(), 1);
    let issue = std::fs::read_to_string(&files[0]).expect("issue");
    assert!(issue.contains("metric `error-rate` must be `< 0.05`"), "{issue}");
    assert!(issue.contains("Put all traffic back on v1"), "{issue}");
    let rolled_back: Vec<Value> = rig.notifications().into_iter().filter(|n| n["kind"] == "rolledBack").collect();
    assert_eq!(rolled_back.len(), 1);
    assert!(rolled_back[0]["links"].to_string().contains("Backlog issue"));
    let status = tokio::time::timeout(Duration::from_secs(10), watcher.wait()).await.expect("watch ends").expect("watch exits");
    assert_eq!(status.code(), Some(1), "watch exits 1 on RolledBack");
    the_report_counts_one_failure_caught_at_20(&rig.host.url()).await;
}

/// `sluice report` through the binary, JSON and table, after one rollback caught at 20 %.
async fn the_report_counts_one_failure_caught_at_20(url: &str) {
    let report = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("report")
            .args(args)
            .args(["--url", url])
            .output()
            .expect("sluice report runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let json: Value = serde_json::from_str(&report(&["--json", "--since", "7d"])).expect("JSON");
    let all = &json["overall"];
    assert_eq!(
        (all["failed"].as_u64(), all["deployments"].as_u64(), all["changeFailureRate"].as_f64()),
        (Some(1), Some(0), Some(1.0)),
        "{json}"
    );
    assert_eq!(all["caughtAt"], json!({"20": 1}), "{json}");
    assert_eq!((all["escaped"].as_u64(), all["causes"]["analysis"].as_u64()), (Some(0), Some(1)), "{json}");
    assert!(all["exposureRequests"].as_u64().is_some_and(|n| n > 0), "the failed canary served requests: {json}");
    assert!(all["meanTimeToRestoreSecs"].as_f64().is_some_and(|s| s < 10.0), "{json}");
    assert_eq!(json["services"][0]["service"], "orders-api", "{json}");
    let table = report(&[]);
    let row = table.lines().find(|l| l.starts_with("orders-api")).unwrap_or_else(|| panic!("a row for the service: {table}"));
    assert!(row.contains("100%") && row.contains("20%:1"), "CFR and where it was caught: {row}");
    assert!(
        table.contains("Finished per 7 days") && table.lines().any(|l| l.ends_with("  x")),
        "the trend: one rollback this week: {table}"
    );
    let buckets = json["trend"]["buckets"].as_array().cloned().unwrap_or_default();
    // Seven days back from now, by calendar day: the first day's part, six whole days and today.
    assert_eq!((json["trend"]["bucketDays"].as_u64(), buckets.len()), (Some(1), 8), "a bucket a calendar day: {json}");
    let failed: Vec<u64> = buckets.iter().filter_map(|b| b["failed"].as_u64()).collect();
    assert_eq!((failed.iter().sum::<u64>(), failed.last().copied()), (1, Some(1)), "today's bucket holds the rollback: {json}");
    let today = Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        buckets.last().and_then(|b| b["from"].as_str()).is_some_and(|d| d.starts_with(&today)),
        "today's bucket is dated today: {json}"
    );
    let other: Value = serde_json::from_str(&report(&["--json", "--service", "payments"])).expect("JSON");
    assert_eq!((other["services"].as_array().map(Vec::len), other["overall"]["failed"].as_u64()), (Some(0), Some(0)), "{other}");
}

/// Starts a rollout, waits until it is in the phase wanted, fires an alert
/// and checks the rollback.
async fn alert_rolls_back_from(rig: &Rig, spec: Value, phase: &str, ready: impl Fn(&Value) -> bool, n: usize) {
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, phase, Duration::from_secs(30), |s| s["phase"] == phase && ready(s)).await;
    let monitor = rig.as_user("azure-monitor");
    let answer = monitor.alert(&azure_alert(&format!("alert-{n}"), "Fired"), Some(TOKEN)).await.expect("202");
    assert_eq!(answer["alerts"][0]["rollouts"][0]["id"], json!(id), "{answer}");
    let done = rig.wait_phase(&id, "RolledBack").await;
    assert_eq!(done.pointer("/rollout/failure/phase"), Some(&json!(phase)), "{phase}");
    assert_eq!(done.pointer("/rollout/failure/evidence/kind"), Some(&json!("alert")));
    let route = rig.up.router.route();
    assert_eq!((route.weight.percent(), route.promoted, route.stable.version.as_str()), (0, false, "v1"), "{phase}");
    rig.wait(&id, "issue", Duration::from_secs(10), |s| s.pointer("/backlog/state") == Some(&json!("opened"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_rolls_back_from_every_non_terminal_phase() {
    let rig = Rig::start().await.with_load(100);
    let url = rig.up.router_url.clone();
    let weight_is = |w: u64| move |s: &Value| s["weight"] == w && s.pointer("/rollout/traffic/pending").map(Value::is_null).unwrap_or(true);

    // Pending: created, its start message not yet handled.
    {
        let (spec, plan) =
            sluice::domain::spec::validate(&rig.spec(json!([{"setWeight": 20}])), &sluice::ports::registry::names()).expect("valid");
        let (r, first) = sluice::domain::rollout::Rollout::new(
            sluice::domain::ids::RolloutId::parse("pending-1").expect("id"),
            spec,
            plan,
            sluice::domain::ids::Actor::parse("pipeline").expect("actor"),
            Utc::now(),
        );
        rig.host.app.engine.store.create(&r, &first).await.expect("created");
        let monitor = rig.as_user("azure-monitor");
        monitor.alert(&azure_alert("alert-pending", "Fired"), Some(TOKEN)).await.expect("202");
        let done = rig.wait_phase("pending-1", "RolledBack").await;
        assert_eq!(done.pointer("/rollout/failure/phase"), Some(&json!("Pending")));
    }
    alert_rolls_back_from(&rig, rig.spec(json!([{"setWeight": 20}, {"pause": {"duration": "1m"}}])), "Progressing", weight_is(20), 1).await;
    alert_rolls_back_from(&rig, rig.spec(json!([{"setWeight": 20}, {"pause": {}}])), "Paused", weight_is(20), 2).await;
    alert_rolls_back_from(&rig, rig.spec(json!([{"setWeight": 20}, {"approval": {}}])), "AwaitingApproval", weight_is(20), 3).await;
    let mut bake = spec_for(&url, json!([]));
    bake["strategy"] = json!({"blueGreen": {"postPromotionAnalysis": {"metrics": [metric("bake", "error_rate", "< 0.05", Some(60))]}}});
    alert_rolls_back_from(&rig, bake, "Progressing", weight_is(100), 4).await;
    let mut scale_down = spec_for(&url, json!([]));
    scale_down["strategy"] = json!({"blueGreen": {"scaleDownDelay": "1m"}});
    alert_rolls_back_from(&rig, scale_down, "Promoting", |s| s.pointer("/rollout/traffic/promoted") == Some(&json!(true)), 5).await;
    assert_eq!(rig.backlog_files().len(), 6);
    let load = rig.load.expect("load").stop().await;
    assert!(load.total() > 0);
}

/// A queue that delivers every message a second time after it is completed,
/// as a broker does when a completion is lost.
struct Twice {
    inner: EmbeddedQueue,
    duplicates: AtomicU64,
}

#[async_trait]
impl Queue for Twice {
    async fn send(&self, message: OutMessage) -> Result<SendOutcome, QueueError> {
        self.inner.send(message).await
    }
    async fn receive(&self, lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        self.inner.receive(lock_for).await
    }
    async fn complete(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.complete(d).await?;
        if !d.id.ends_with("#again") {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            let again = OutMessage { id: format!("{}#again", d.id), body: d.body.clone(), visible_at: None, slot: None };
            self.inner.send(again).await?;
        }
        Ok(())
    }
    async fn abandon(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.abandon(d).await
    }
    async fn renew(&self, d: &Delivery, lock_for: Duration) -> Result<DateTime<Utc>, QueueError> {
        self.inner.renew(d, lock_for).await
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters().await
    }
    fn wakeup(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.wakeup()
    }
    async fn next_visible_at(&self) -> Option<DateTime<Utc>> {
        self.inner.next_visible_at().await
    }
    fn operations(&self) -> u64 {
        self.inner.operations()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_message_delivered_twice_changes_nothing() {
    let twice: Arc<std::sync::OnceLock<Arc<Twice>>> = Arc::new(std::sync::OnceLock::new());
    let slot = twice.clone();
    let rig = Rig::start_with(move |dir: std::path::PathBuf, url: String| async move {
        let db = dir.join("sluice.db");
        let queue =
            Arc::new(Twice { inner: EmbeddedQueue::open(&db, Arc::new(SystemClock)).expect("queue"), duplicates: AtomicU64::new(0) });
        let _ = slot.set(queue.clone());
        let store = Arc::new(SqliteStore::open(&db).expect("store"));
        let env = sluice::ports::env::AdapterEnv::new(dir.clone(), url);
        Ok(Arc::new(Engine::new(store, queue, env, Arc::new(SystemClock))))
    })
    .await
    .with_load(100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spec = rig.spec(json!([
        {"setWeight": 20},
        {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(3))]}},
        {"setWeight": 50},
        {"pause": {"duration": "1s"}},
        {"setWeight": 100},
        {"pause": {"duration": "1s"}}
    ]));
    let id = rig.start_rollout(&spec).await;
    let done = rig.wait_phase(&id, "Succeeded").await;
    let duplicates = twice.get().expect("queue built").duplicates.load(Ordering::Relaxed);
    // Start, 3 measurements and 2 timers: 6 on a quiet machine; on a loaded one a wake-up can be
    // superseded by its rollout's next before it is delivered (the embedded queue keeps one per rollout).
    assert!(duplicates >= 5, "the start, the measurements and the timers were each delivered again ({duplicates})");
    assert_eq!(weights(&done), vec![0, 20, 50, 100]);
    assert_eq!(transitions(&done), ["Pending>Progressing", "Progressing>Promoting", "Promoting>Succeeded"]);
    let measured = done["history"].as_array().expect("history").iter().filter(|e| e["cause"] == "Measured").count();
    assert_eq!(measured, 3, "each measurement applied once");
    let load = rig.load.expect("load").stop().await;
    assert_eq!(load.failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_identical_alerts_make_one_rollback_and_one_issue() {
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    let payload = azure_alert("the-same-alert", "Fired");
    let http = reqwest::Client::builder().pool_max_idle_per_host(100).build().expect("client");
    let url = format!("{}/api/alerts?token={TOKEN}", rig.host.url());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (http, url, payload) = (http.clone(), url.clone(), payload.clone());
        calls.spawn(async move {
            for attempt in 0..5 {
                match http.post(&url).json(&payload).send().await {
                    Ok(r) => return r.status().as_u16(),
                    Err(_) if attempt < 4 => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => panic!("alert post failed: {e}"),
                }
            }
            0
        });
    }
    let mut accepted = 0;
    while let Some(status) = calls.join_next().await {
        if status.expect("task") == 202 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1000);
    let done = rig
        .wait(&id, "RolledBack with issue", Duration::from_secs(30), |s| {
            s["phase"] == "RolledBack" && s.pointer("/backlog/state") == Some(&json!("opened"))
        })
        .await;
    assert_eq!(
        transitions(&done),
        ["Pending>Progressing", "Progressing>AwaitingApproval", "AwaitingApproval>RollingBack", "RollingBack>RolledBack"]
    );
    assert_eq!(rig.backlog_files().len(), 1);
    assert_eq!(rig.notifications().iter().filter(|n| n["kind"] == "rolledBack").count(), 1);
    let recorded = rig.host.app.engine.store.alerts(2000).await.expect("alerts");
    assert_eq!(recorded.len(), 1000, "every alert is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_naming_the_problem_and_changes_nothing() {
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    let before = rig.wait_phase(&id, "AwaitingApproval").await;
    let user = [("x-sluice-user", "alice"), ("content-type", "application/json")];
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let huge = vec![b' '; 2 * 1024 * 1024];
    // (method, path, body, headers, expected status, expected text in the body)
    type Case<'a> = (&'a str, String, Vec<u8>, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/api/rollouts".into(), b"{\"target\": ".to_vec(), &user, 400, "not valid JSON"),
        ("POST", "/api/rollouts".into(), deep.clone(), &user, 400, "recursion limit"),
        ("POST", "/api/rollouts".into(), huge.clone(), &user, 413, "limit"),
        ("POST", "/api/rollouts".into(), b"{\"target\": 5, \"strategy\": {}}".to_vec(), &user, 422, "target"),
        (
            "POST",
            "/api/rollouts".into(),
            b"{\"spec\": {}, \"by\": 7}".to_vec(),
            &user,
            400,
            "by: invalid type: integer `7`, expected a string",
        ),
        (
            "POST",
            "/api/rollouts".into(),
            serde_json::to_vec(&rig.spec(json!([{"setWeight": 5}]))).expect("json"),
            &[],
            400,
            "who is acting",
        ),
        ("POST", format!("/api/rollouts/{id}/approve"), b"{\"by\": 5}".to_vec(), &user, 400, "by: invalid type: integer `5`"),
        (
            "POST",
            format!("/api/rollouts/{id}/approve"),
            b"{\"by\": \"alice\", \"colour\": 1}".to_vec(),
            &user,
            400,
            "colour: unknown field",
        ),
        ("POST", format!("/api/rollouts/{id}/approve"), b"[1, 2]".to_vec(), &user, 400, "expected a JSON object"),
        ("POST", format!("/api/rollouts/{id}/approve"), b"{\"step\": 0}".to_vec(), &user, 400, "step: 0 is not a step number"),
        ("POST", format!("/api/rollouts/{id}/approve"), deep.clone(), &user, 400, "recursion limit"),
        ("POST", format!("/api/rollouts/{id}/launch"), Vec::new(), &user, 404, "'launch' is not one of"),
        ("POST", "/api/rollouts/no-such-rollout/approve".into(), Vec::new(), &user, 404, "no rollout with id 'no-such-rollout'"),
        ("GET", "/api/rollouts/no-such-rollout".into(), Vec::new(), &user, 404, "no rollout"),
        ("GET", "/api/rollouts?phase=Sleeping".into(), Vec::new(), &user, 400, "phase: 'Sleeping' is not a phase"),
        ("GET", "/api/rollouts?limit=lots".into(), Vec::new(), &user, 400, "limit"),
        ("DELETE", format!("/api/rollouts/{id}"), Vec::new(), &user, 405, "DELETE"),
        ("GET", "/api/nothing-here".into(), Vec::new(), &user, 404, "no function serves"),
        ("POST", "/api/alerts".into(), b"{}".to_vec(), &[], 401, "token"),
        ("POST", format!("/api/alerts?token={TOKEN}"), b"{\"hello\": 1}".to_vec(), &[], 400, "not a payload Sluice knows"),
        (
            "POST",
            format!("/api/alerts?token={TOKEN}"),
            b"{\"schemaId\": \"azureMonitorCommonAlertSchema\", \"data\": {}}".to_vec(),
            &[],
            400,
            "data.essentials",
        ),
        ("POST", format!("/api/alerts?token={TOKEN}"), deep, &[], 400, "recursion limit"),
        ("POST", format!("/api/alerts?token={TOKEN}"), huge, &[], 413, "limit"),
        (
            "POST",
            format!("/api/alerts?token={TOKEN}"),
            b"{\"version\": \"4\", \"alerts\": [{\"status\": \"maybe\"}]}".to_vec(),
            &[],
            400,
            "alerts[0].status",
        ),
    ];
    for (method, path, body, headers, status, needle) in cases {
        let (got, answer) = raw(&rig.host.url(), method, &path, body, headers).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer.is_object(), "{method} {path}: the error is JSON: {answer}");
        assert!(answer.to_string().contains(needle), "{method} {path}: expected '{needle}' in {answer}");
    }
    // Nothing changed.
    let after = rig.client.status(&id).await.expect("status");
    assert_eq!(after["rollout"]["version"], before["rollout"]["version"]);
    let all = rig.client.list(false).await.expect("list");
    assert_eq!(all["rollouts"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rollout_of_a_busy_target_is_refused_and_retry_starts_a_new_one() {
    let rig = Rig::start().await;
    let spec = rig.spec(json!([{"setWeight": 20}, {"approval": {}}]));
    let id = rig.start_rollout(&spec).await;
    let busy = rig.client.start(&spec, None).await.expect_err("busy");
    assert!(busy.to_string().contains("already has an active rollout"), "{busy}");
    rig.wait_phase(&id, "AwaitingApproval").await;
    rig.as_user("bob").action(&id, "reject", &json!({"reason": "latency looks off"})).await.expect("reject");
    let done = rig.wait_phase(&id, "RolledBack").await;
    assert_eq!(done.pointer("/rollout/failure/evidence/kind"), Some(&json!("rejected")));
    let again = rig.as_user("bob").action(&id, "retry", &json!({})).await.expect("retry");
    assert_eq!(again["retryOf"], json!(id));
    let new_id = again["id"].as_str().expect("new id").to_string();
    assert_ne!(new_id, id);
    rig.wait_phase(&new_id, "AwaitingApproval").await;
    // Idempotent start with a chosen id: the same call twice gives the same rollout.
    rig.as_user("bob").action(&new_id, "abort", &json!({})).await.expect("abort");
    rig.wait_phase(&new_id, "Aborted").await;
    let first = rig.client.start(&spec, Some("chosen-id-1")).await.expect("start");
    let second = rig.client.start(&spec, Some("chosen-id-1")).await.expect("same start again");
    assert_eq!(first["id"], second["id"]);
}

/// `sluice bench scale` end to end on a small N, so the benchmark cannot rot:
/// it creates active rollouts, starts `sluice up` on them, and fails by
/// itself if a sweep with nothing due acts, a list comes back empty, or an
/// alert does not roll its rollout back. Here: every burst was answered 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_benchmark_runs_against_a_real_sluice_up() {
    let (rows, _) = run_bench(&["scale", "--rollouts", "12", "--burst-secs", "1"]).await;
    let row = &rows[0];
    assert_eq!(row["rollouts"], 12);
    for burst in ["alerts_unmatched", "alerts_matched"] {
        assert_eq!(row[burst]["errors"], 0, "{burst}: {row}");
        assert!(row[burst]["latency"]["n"].as_u64().unwrap_or(0) > 0, "{burst}: {row}");
    }
    assert_eq!(row["alert_to_persisted"]["n"], 6, "half the rollouts are rolled back one alert at a time: {row}");
    assert!(row["rss_mib"].as_f64().unwrap_or(0.0) > 1.0, "{row}");
}

/// Runs `sluice bench <args> --json`, which must succeed: its figures and what it said on the way.
async fn run_bench(args: &[&str]) -> (Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("sluice bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).expect("JSON figures"), stderr)
}

/// `sluice bench soak` end to end for a few seconds, so it cannot rot:
/// rollouts start and end every way the soak ends them, with no failed
/// call, and every series is sampled with its slope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_benchmark_runs_rollouts_against_a_real_sluice_up_and_samples_every_series() {
    let (report, stderr) = run_bench(&["soak", "--minutes", "0.4", "--sample-secs", "4"]).await;
    assert!(stderr.contains("rollouts finished"), "a progress line per sample: {stderr}");
    let r = &report["rollouts"];
    assert_eq!((r["errors"].as_u64(), r["stuck"].as_u64()), (Some(0), Some(0)), "{report}");
    for ending in ["succeeded", "rolledBack", "aborted"] {
        assert!(r[ending].as_u64().unwrap_or(0) > 0, "{ending}: {report}");
    }
    let series = report["series"].as_array().expect("series");
    assert_eq!(series.len(), 11, "{report}");
    for s in series {
        assert!(s["samples"].as_array().map(Vec::len).unwrap_or(0) >= 4, "{s}");
        assert!(s["slopePerHour"].as_f64().is_some_and(f64::is_finite), "{s}");
    }
    assert!(series[0]["samples"][0][1].as_f64().unwrap_or(0.0) > 1.0, "resident memory is read: {}", series[0]);
    let (rss, anonymous) = (series[0]["samples"][0][1].as_f64().unwrap_or(0.0), series[1]["samples"][0][1].as_f64().unwrap_or(0.0));
    assert!(anonymous > 0.5 && anonymous < rss, "the anonymous part of {rss} MiB is read: {}", series[1]);
}

/// Pausing and resuming a rollout again and again leaves one wake-up
/// queued for it, not one per resume (each resume moves the wait's end
/// later, so the new wake-up supersedes the older, earlier ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_and_resuming_leaves_one_wake_up_queued() {
    let rig = Rig::start().await;
    let mut spec = rig.spec(json!([{"setWeight": 20}, {"pause": {"duration": "1h"}}]));
    spec["policy"] = json!({"onAlert": "pause"});
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "the pause", Duration::from_secs(30), |s| s["phase"] == "Progressing" && s["weight"] == 20).await;
    let monitor = rig.as_user("azure-monitor");
    for i in 0..20 {
        let alert = format!("cycle-{i}");
        monitor.alert(&azure_alert(&alert, "Fired"), Some(TOKEN)).await.expect("202");
        rig.wait(&id, "paused", Duration::from_secs(10), |s| s["phase"] == "Paused").await;
        monitor.alert(&azure_alert(&alert, "Resolved"), Some(TOKEN)).await.expect("202");
        rig.wait(&id, "resumed", Duration::from_secs(10), |s| s["phase"] == "Progressing").await;
    }
    // The resume's wake-up is sent after the state is saved: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = rusqlite::Connection::open(rig.data_dir().join("sluice.db")).expect("the embedded queue's file");
    // Wake-up message ids are `{rollout}:wake:{ms}` (the shell's message_id).
    let queued: i64 = db
        .query_row("SELECT COUNT(*) FROM messages WHERE id LIKE ?1", [format!("{id}:wake:%")], |row| row.get(0))
        .expect("count the rollout's wake-ups");
    assert_eq!(queued, 1, "one wake-up for the pause's end, after 20 pauses and resumes");
}

/// A listener that accepts connections and never answers: a metrics
/// backend, tracker or channel that hangs.
async fn hanging_listener() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

/// A local host whose GitHub backlog and webhook channel may be on `slow` (loopback).
async fn rig_beside(slow: &str) -> Rig {
    let hook = format!("{slow}/hook");
    let settings: sluice::ports::env::SettingsLookup = Arc::new(move |name| match name {
        "SLUICE_ALLOW_LOOPBACK_ENDPOINTS" => Some("true".into()),
        "GITHUB_TOKEN" => Some("token".into()),
        "WEBHOOK_URL" => Some(hook.clone()),
        _ => None,
    });
    Rig::start_with(|dir, url| async move { sluice::host::local::embedded_engine_with(&dir, url, settings) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_rolls_back_while_measurements_backlog_and_channel_hang() {
    let (slow, accepted) = hanging_listener().await;
    let rig = rig_beside(&slow).await;
    let mut spec = rig.spec(json!([{"setWeight": 20}, {"pause": {}}]));
    let hung = |i: usize| {
        json!({"name": format!("m{i}"), "provider": "prometheus", "query": "up", "successCondition": "< 1",
                                 "interval": "2s", "settings": {"url": slow}})
    };
    spec["strategy"]["canary"]["analysis"] = json!({"metrics": [hung(0), hung(1), hung(2)]});
    spec["backlog"] = json!({"provider": "github", "settings": {"repository": "contoso/slow", "apiUrl": slow}});
    spec["notifications"] = json!([{"provider": "webhook", "settings": {"urlSetting": "WEBHOOK_URL"}}]);
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "paused at 20", Duration::from_secs(20), |s| s["phase"] == "Paused" && s["weight"] == 20).await;
    // All three measurements are in flight (each on its own connection that never answers).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) < 3 {
        assert!(std::time::Instant::now() < deadline, "the measurements never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let monitor = rig.as_user("azure-monitor");
    monitor.alert(&azure_alert("while-hanging", "Fired"), Some(TOKEN)).await.expect("202");
    let done = rig.wait_phase(&id, "RolledBack").await;
    assert_eq!(rig.up.router.route().weight.percent(), 0);
    // Rolled back while every measurement was still hanging: none of them was recorded first.
    let measured =
        done["history"].as_array().expect("history").iter().filter(|e| e.get("measurement").is_some_and(|m| !m.is_null())).count();
    assert_eq!(measured, 0, "the rollback waited for a measurement: {done:#}");
}

/// More rollbacks than the host has queue consumers (host.json's
/// `maxConcurrentCalls`, 16), each leaving a backlog call and a channel
/// that hang: every later alert still rolls its rollout back while all the
/// earlier calls hang — none has even timed out yet (a timeout would be in
/// the history as the backlog's failure) — because a delivery frees its
/// consumer once the step is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_beyond_the_consumer_count_wait_for_no_hanging_backlog_or_channel() {
    let (slow, accepted) = hanging_listener().await;
    let rig = rig_beside(&slow).await;
    let mut spec = rig.spec(json!([{"setWeight": 20}, {"pause": {}}]));
    spec["backlog"] = json!({"provider": "github", "settings": {"repository": "contoso/slow", "apiUrl": slow}});
    spec["notifications"] = json!([{"provider": "webhook", "settings": {"urlSetting": "WEBHOOK_URL"}}]);
    let monitor = rig.as_user("azure-monitor");
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = rig.start_rollout(&spec).await;
        rig.wait(&id, "paused at 20", Duration::from_secs(20), |s| s["phase"] == "Paused" && s["weight"] == 20).await;
        monitor.alert(&azure_alert(&format!("storm-{i}"), "Fired"), Some(TOKEN)).await.expect("202");
        rig.wait(&id, "rolled back", Duration::from_secs(10), |s| s["phase"] == "RolledBack").await;
        assert_eq!(rig.up.router.route().weight.percent(), 0);
        ids.push(id);
    }
    assert!(accepted.load(Ordering::SeqCst) >= 20, "every rollback's backlog call is in flight");
    for id in &ids {
        let status = rig.client.status(id).await.expect("status");
        assert!(!status.to_string().contains("did not answer"), "a backlog or channel call timed out before the last rollback: {status:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_with_a_huge_summary_rolls_back_with_the_summary_cut() {
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait(&id, "awaiting approval", Duration::from_secs(20), |s| s["phase"] == "AwaitingApproval").await;
    let mut alert = azure_alert("huge", "Fired");
    alert["data"]["essentials"]["description"] = json!("x".repeat(500_000));
    rig.as_user("azure-monitor").alert(&alert, Some(TOKEN)).await.expect("202");
    let done = rig.wait_phase(&id, "RolledBack").await;
    assert_eq!(rig.up.router.route().weight.percent(), 0);
    let text = done.to_string();
    // The summary is the description and the condition's detail: kept, cut to 2 000 characters, marked.
    let kept = "x".repeat(2_000);
    assert!(text.contains(&format!("{kept}… [cut: ")) && !text.contains(&format!("{kept}x")), "the summary is kept, cut and marked");
    assert!(text.len() < 200_000, "status is {} bytes", text.len());
}

/// A router that cannot be reached is tried again when its backoff ends, by
/// the rollout's own wake-up message: the timer only sweeps every 5 minutes
/// (issue 27), and nothing else is due here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_router_call_is_retried_by_its_wake_up_not_the_timer() {
    let rig = Rig::start().await;
    let schedule: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("functions/tick/function.json")).expect("tick")).expect("json");
    assert_eq!(schedule["bindings"][0]["schedule"], "0 */5 * * * *", "the sweep is a safety net, minutes apart");
    // An address nobody listens on yet: the router is down.
    let admin = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let id = rig.start_rollout(&spec_for(&format!("http://{admin}"), json!([{"setWeight": 20}, {"pause": {}}]))).await;
    rig.wait(&id, "the first call to fail", Duration::from_secs(20), |s| {
        s["waitingFor"].as_str().is_some_and(|w| w.contains("attempt 1 failed"))
    })
    .await;
    let router = sluice::devtools::router::Router::new(
        sluice::devtools::router::Upstream { name: "stable".into(), version: "v1".into(), url: "http://127.0.0.1:9".into() },
        sluice::devtools::router::Upstream { name: "canary".into(), version: "v2".into(), url: "http://127.0.0.1:9".into() },
    );
    router.serve(loopback(), admin).await.expect("the router comes up");
    // The backoff after one failure is 2 s; the next sweep is minutes away.
    let paused = rig.wait(&id, "the retry", Duration::from_secs(20), |s| s["phase"] == "Paused").await;
    assert_eq!((paused["weight"].as_u64(), router.route().weight.percent()), (Some(20), 20));
}

/// `sluice up` keeps its state where `SLUICE_DATA_DIR` says, as the CLI
/// looks for the local token there, and creates no `.sluice` beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_keeps_its_state_in_sluice_data_dir() {
    let (cwd, data) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["up", "--port", &port.to_string()])
        .env("SLUICE_DATA_DIR", data.path())
        .env("RUST_LOG", "warn")
        .current_dir(cwd.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice up starts");
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    while http.get(format!("http://127.0.0.1:{port}/api/rollouts")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "sluice up did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = up.kill().await;
    assert!(data.path().join("local-token").is_file() && data.path().join("sluice.db").is_file(), "state in SLUICE_DATA_DIR");
    assert!(!cwd.path().join(".sluice").exists(), "nothing in the default place");
}

/// The approve command `start --watch` prints works as printed, once NAME
/// is filled in: the CLI acts under the login name, which started the
/// rollout and so may not approve it; the printed command names another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approve_command_watch_prints_works_for_the_person_who_started_it() {
    use tokio::io::AsyncBufReadExt;
    let rig = Rig::start().await;
    let spec = rig.spec(json!([{"setWeight": 20}, {"approval": {"minApprovers": 1}}, {"setWeight": 100}]));
    let file = rig.dir.path().join("approve-hint.json");
    std::fs::write(&file, spec.to_string()).expect("spec written");
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args).env_remove("USER").env_remove("SLUICE_USER").env("LOGNAME", "carol").kill_on_drop(true);
        cmd
    };
    let url = rig.host.url();
    let mut watching = cli(&["start", &file.display().to_string(), "--watch", "--url", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sluice start runs");
    let mut lines = tokio::io::BufReader::new(watching.stdout.take().expect("stdout")).lines();
    let hint = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("a line") {
            if line.contains("waiting for approval") {
                return line;
            }
        }
        panic!("watch ended without waiting for approval");
    })
    .await
    .expect("the rollout reaches its gate");
    let command: Vec<&str> = hint.split('`').nth(1).expect("a command in backticks").split_whitespace().collect();
    assert_eq!(command[..2], ["sluice", "approve"], "{hint}");
    assert!(command.ends_with(&["--as", "NAME"]), "{hint}");
    // As printed but without a name, it acts as carol, who started the rollout: refused.
    let own = cli(&command[1..command.len() - 2]).output().await.expect("runs");
    assert!(String::from_utf8_lossy(&own.stderr).contains("HTTP 403"), "{}", String::from_utf8_lossy(&own.stderr));
    let mut as_dave: Vec<&str> = command[1..].to_vec();
    *as_dave.last_mut().expect("NAME") = "dave";
    let approved = cli(&as_dave).output().await.expect("runs");
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    let ended = tokio::time::timeout(Duration::from_secs(60), watching.wait()).await.expect("watch ends").expect("exit");
    assert_eq!(ended.code(), Some(0), "the rollout succeeded");
    let status = rig.client.status(command[2]).await.expect("status");
    let by: Vec<&str> = status["history"].as_array().expect("history").iter().filter_map(|h| h["by"].as_str()).collect();
    assert!(by.contains(&"carol") && by.contains(&"dave"), "started by the login name, approved by dave: {by:?}");
}

/// `promote --full` does what the README says: it skips the steps before
/// the next approval gate and stops there; only `promote` offers `--full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_promotion_skips_to_the_next_approval_gate_which_then_waits() {
    let rig = Rig::start().await.with_load(50);
    let spec = rig.spec(json!([
        {"setWeight": 10},
        {"pause": {"duration": "1h"}},
        {"setWeight": 30},
        {"approval": {"minApprovers": 1}},
        {"setWeight": 60},
        {"pause": {"duration": "1h"}}
    ]));
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "the first pause", Duration::from_secs(30), |s| s["phase"] == "Progressing" && s["rollout"]["stage"] == 1).await;
    let base = rig.host.url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--url", &base, "--as", "alice"])
            .output()
            .expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = cli(&["promote", &id, "--full"]);
    assert_eq!(code, Some(0), "{out}");
    let gate = rig.wait(&id, "the gate", Duration::from_secs(10), |s| s["phase"] == "AwaitingApproval").await;
    assert_eq!((gate["rollout"]["stage"].as_u64(), gate["weight"].as_u64()), (Some(3), Some(10)), "at step 4, the weight reached: {gate}");
    let (code, out) = cli(&["promote", &id, "--full"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("HTTP 409") && out.contains("use approve"), "{out}");
    rig.as_user("bob").action(&id, "approve", &json!({})).await.expect("bob approves");
    rig.wait(&id, "the second pause", Duration::from_secs(30), |s| s["phase"] == "Progressing" && s["rollout"]["stage"] == 5).await;
    let (code, out) = cli(&["promote", &id, "--full"]);
    assert_eq!(code, Some(0), "{out}");
    rig.wait(&id, "success", Duration::from_secs(30), |s| s["phase"] == "Succeeded").await;
    for verb in ["approve", "reject", "abort", "retry"] {
        let (_, help) = cli(&[verb, "--help"]);
        assert!(help.contains("--reason") && !help.contains("--full"), "{verb}: {help}");
    }
    let (_, help) = cli(&["promote", "--help"]);
    assert!(help.contains("--full"), "{help}");
}

/// `sluice sample-api` serves the upstreams the local quick start routes
/// to: its version in every answer, and the fault it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_api_command_serves_a_version_with_its_fault() {
    use tokio::io::AsyncBufReadExt;
    let start = |errors: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["sample-api", "--app-version", "v2", "--listen", "127.0.0.1:0", "--errors-per-mille", errors])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sluice sample-api starts")
    };
    for (errors, status) in [("0", 200), ("1000", 500)] {
        let mut app = start(errors);
        let mut lines = tokio::io::BufReader::new(app.stdout.take().expect("stdout")).lines();
        let first =
            tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("it says where").expect("read").expect("a line");
        let url = first.split("at ").nth(1).expect("an address").trim().to_string();
        let answer = reqwest::get(format!("{url}/orders")).await.expect("it answers");
        assert_eq!(answer.status().as_u16(), status, "--errors-per-mille {errors}");
        assert_eq!(answer.headers().get("x-app-version").and_then(|v| v.to_str().ok()), Some("v2"));
        let body: Value = answer.json().await.expect("JSON");
        assert_eq!(body["version"], "v2", "{body}");
    }
}

/// The README's canary example as written (only the router's address is
/// this test's): on a fresh router under steady traffic its analysis waits
/// an interval and measures the canary's own traffic at 5 %, so it passes
/// to the approval gate. Measured the instant 5 % was confirmed, it saw no
/// data yet and paused for a person, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_canary_example_reaches_its_gate_on_a_fresh_router() {
    let rig = Rig::start().await.with_load(100);
    let text = std::fs::read_to_string(repo_root().join("examples/canary-approval.json")).expect("the example");
    let mut spec: Value = serde_json::from_str(&text).expect("JSON");
    spec["target"]["router"]["settings"]["url"] = json!(rig.up.router_url);
    let id = rig.start_rollout(&spec).await;
    let settled = |s: &Value| matches!(s["phase"].as_str(), Some("AwaitingApproval" | "Paused" | "RollingBack" | "RolledBack"));
    let gate = rig.wait(&id, "the approval gate", Duration::from_secs(180), settled).await;
    assert_eq!(gate["phase"], "AwaitingApproval", "{:?}", transitions(&gate));
    assert_eq!(gate["weight"], 20, "{gate}");
}

/// `sluice load` sends users' traffic until Ctrl-C, then counts the answers by version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_sends_traffic_until_interrupted_and_counts_it() {
    let fault = Arc::new(sluice::devtools::sample_app::Fault::default());
    let (app, _) = sluice::devtools::sample_app::serve("v1", fault, loopback()).await.expect("sample API");
    let load = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["load", "--url", &format!("http://{app}"), "--rps", "50"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sluice load starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = load.id().expect("running").to_string();
    let sent = tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.expect("kill runs");
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(30), load.wait_with_output()).await.expect("it stops").expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let counted = text.lines().last().unwrap_or("");
    let total: u64 = counted.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(total >= 20 && counted.contains("answered: v1 ") && counted.ends_with("failed: "), "{text}");
}

/// A promotion swaps the local router's sides, as a slot swap does. The
/// same spec again (v1 → v2) would send the canary's share to v1 and then
/// call the revert "back on v1" while users are on v2: Sluice refuses to
/// route it, rolls back having moved nobody, and says why; from the version
/// now stable it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_through_a_router_an_earlier_promotion_swapped_moves_no_user_to_the_old_version() {
    let rig = Rig::start().await;
    let spec = rig.spec(json!([{"setWeight": 50}]));
    let first = rig.start_rollout(&spec).await;
    rig.wait_phase(&first, "Succeeded").await;
    assert_eq!(rig.up.router.route().stable.version, "v2", "the promotion swapped the sides");
    let report = rig.client.doctor(&spec).await.expect("the doctor answers");
    let versions = report["checks"].as_array().into_iter().flatten().find(|c| c["name"] == "versions").expect("a versions check");
    assert_eq!(versions["verdict"], "blocker", "{report}");
    let again = rig.start_rollout(&spec).await;
    let status = rig.wait(&again, "the refused rollout rolled back", Duration::from_secs(60), |s| s["phase"] == "RolledBack").await;
    let route = rig.up.router.route();
    assert_eq!((route.weight.percent(), route.stable.version.as_str()), (0, "v2"), "every user stayed on v2");
    let said = status["history"].to_string();
    assert!(!said.contains("router confirmed"), "the router never took a weight: {said}");
    assert!(said.contains("the router serves v2 on its stable side and v1 on its canary side"), "{said}");
    let mut from_v2 = spec.clone();
    from_v2["target"]["stable"] = json!({"name": "stable", "version": "v2"});
    from_v2["target"]["canary"] = json!({"name": "canary", "version": "v1"});
    let third = rig.start_rollout(&from_v2).await;
    rig.wait_phase(&third, "Succeeded").await;
    assert_eq!(rig.up.router.route().stable.version, "v1", "v1 is stable again");
}
