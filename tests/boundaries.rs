//! The trust boundaries, one test per finding of the architecture pass:
//! each input from outside is parsed into typed values where it enters, the
//! engine's own feedback never comes off the queue, refusals are typed, and
//! nothing from outside can panic a handler or keep a message locked.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use common::*;
use sluice::domain::ids::RolloutId;
use sluice::domain::release::{Release, ReleaseEntry};
use sluice::domain::rollout::{HistoryEntry, Rollout};
use sluice::functions::{self, App, HandlerError};
use sluice::ports::queue::OutMessage;
use sluice::ports::store::sqlite::SqliteStore;
use sluice::ports::store::{AlertRecord, Etag, ListFilter, Store, StoreError};
use sluice::shell::engine::Engine;

/// Hostile ids: path traversal, absolute paths, NUL, unicode, 5 000
/// characters, and one ASCII letter before 22 CJK characters (once a panic).
fn hostile_ids() -> Vec<String> {
    vec!["../../escape".into(), "/etc/passwd".into(), "a\u{0}b".into(), "✓".into(), "x".repeat(5000), format!("a{}", "界".repeat(22))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_message_with_a_hostile_id_is_refused_and_writes_nothing() {
    let rig = Rig::start().await;
    let outside = rig.dir.path().join("escape.md");
    let before = walk(rig.dir.path()).len();
    for id in hostile_ids() {
        let body = json!({"kind": "start", "spec": rig.spec(json!([{"setWeight": 5}])), "by": "pipeline", "id": id}).to_string();
        match functions::invoke_queue(&rig.host.app, "steps", &body).await {
            Err(HandlerError::Permanent(reason)) => assert!(reason.contains("id:"), "names the field: {reason}"),
            other => panic!("{id:.40}: expected a permanent refusal, got {other:?}"),
        }
        // The API refuses the same id with the same rule, and a 400 naming it.
        let (status, answer) = raw(
            &rig.host.url(),
            "POST",
            "/api/rollouts",
            serde_json::to_vec(&json!({"spec": rig.spec(json!([{"setWeight": 5}])), "id": id})).expect("json"),
            &[("x-sluice-user", "pipeline")],
        )
        .await;
        assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "{answer}");
    }
    // Through the Functions host's envelope (as Service Bus delivers it): acknowledged, never retried.
    let settings = sluice::host::HostSettings::embedded().expect("host.json");
    let defs = sluice::host::definitions::embedded_definitions().expect("defs");
    let serve = sluice::host::custom_handler::start(rig.host.app.clone(), settings, defs, loopback(), false).await.expect("serves");
    for id in hostile_ids() {
        let message = json!({"kind": "start", "spec": rig.spec(json!([{"setWeight": 5}])), "by": "pipeline", "id": id}).to_string();
        let envelope = json!({"Data": {"msg": message}, "Metadata": {"DeliveryCount": "1"}});
        let (status, answer) =
            raw(&format!("http://{}", serve.addr), "POST", "/steps", serde_json::to_vec(&envelope).expect("json"), &[]).await;
        let log = answer["Logs"][0].as_str().unwrap_or("");
        assert_eq!(status, 200, "{answer}");
        assert!(log.contains("can never succeed") && log.contains("id:"), "{log}");
    }
    serve.stop().await;
    assert!(!outside.exists());
    assert_eq!(walk(rig.dir.path()).len(), before, "nothing was written");
    assert!(rig.client.list(false).await.expect("list")["rollouts"].as_array().expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_name_gets_a_400_not_a_dropped_connection() {
    let rig = Rig::start().await;
    let cjk = format!("a{}", "界".repeat(22));
    let mut spec = rig.spec(json!([{"setWeight": 5}]));
    spec["target"]["name"] = json!(cjk);
    let (status, answer) =
        raw(&rig.host.url(), "POST", "/api/rollouts", serde_json::to_vec(&spec).expect("json"), &[("x-sluice-user", "ci")]).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["problems"][0]["path"], "target.name", "{answer}");
    let (status, answer) = raw(&rig.host.url(), "GET", &format!("/api/rollouts/{cjk}"), Vec::new(), &[]).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_feedback_on_the_queue_cannot_finish_a_rollback() {
    let rig = Rig::start().await;
    // A router that is down: every traffic command fails.
    let spec = spec_for("http://127.0.0.1:9", json!([{"setWeight": 5}, {"pause": {}}]));
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "the first SetWeight to fail", Duration::from_secs(20), |s| {
        s["history"].as_array().map(|h| h.iter().any(|e| e["summary"].as_str().unwrap_or("").contains("router failed"))).unwrap_or(false)
    })
    .await;
    rig.as_user("alice").action(&id, "abort", &json!({"reason": "router down"})).await.expect("abort");
    let rolling = rig.wait_phase(&id, "RollingBack").await;
    for event in [
        json!({"type": "trafficConfirmed", "weight": 0}),
        json!({"type": "promoted"}),
        json!({"type": "commandFailed", "command": {"kind": "RevertTraffic", "id": 1}, "error": "x"}),
        json!({"type": "backlogOpened", "issue": {"id": "1", "url": "https://evil"}}),
        json!({"type": "stepDue", "seq": 1}),
    ] {
        let body = json!({"kind": "event", "rollout": id, "event": event}).to_string();
        match functions::invoke_queue(&rig.host.app, "steps", &body).await {
            Err(HandlerError::Permanent(reason)) => assert!(reason.contains("never accepted from the queue"), "{reason}"),
            other => panic!("{event}: expected a permanent refusal, got {other:?}"),
        }
    }
    let after = rig.client.status(&id).await.expect("status");
    assert_eq!(rolling["phase"], "RollingBack");
    assert_eq!(after["phase"], "RollingBack", "no traffic moved, so the rollback is not done");
    let history = after["history"].as_array().expect("history");
    assert!(history.iter().all(|e| e["cause"] != "TrafficConfirmed" && e["cause"] != "BacklogOpened"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_field_of_the_wrong_type_is_a_400_and_rolls_nothing_back() {
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    let before = rig.wait_phase(&id, "AwaitingApproval").await;
    let mut alert = azure_alert("alert-42", "Fired");
    alert["data"]["essentials"]["monitorCondition"] = json!(42);
    let (status, answer) =
        raw(&rig.host.url(), "POST", &format!("/api/alerts?token={TOKEN}"), serde_json::to_vec(&alert).expect("json"), &[]).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("data.essentials.monitorCondition")), "{answer}");
    // A variant Sluice does not know (here an unknown alert context) is recorded, answered, not acted on.
    let mut unknown = azure_alert("alert-43", "Fired");
    unknown["data"]["alertContext"] = json!({"conditionType": "SomethingNew", "x": 1});
    let (status, answer) =
        raw(&rig.host.url(), "POST", &format!("/api/alerts?token={TOKEN}"), serde_json::to_vec(&unknown).expect("json"), &[]).await;
    assert_eq!((status, answer["alerts"][0]["recognised"].as_bool()), (202, Some(false)), "{answer}");
    assert_eq!(answer["alerts"][0]["rollouts"], json!([]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rig.client.status(&id).await.expect("status");
    assert_eq!(after["phase"], "AwaitingApproval");
    assert_eq!(after["rollout"]["version"], before["rollout"]["version"]);
    let recorded = rig.host.app.engine.store.alerts(10).await.expect("alerts");
    assert_eq!(recorded.iter().map(|a| a.condition.as_str()).collect::<Vec<_>>(), ["Unknown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_resolved_on_the_queue_takes_alert_id_in_camel_case() {
    let rig = Rig::start().await;
    let mut spec = rig.spec(json!([{"setWeight": 20}, {"pause": {"duration": "1h"}}]));
    spec["policy"] = json!({"onAlert": "pause"});
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "the pause", Duration::from_secs(20), |s| s["stepDescription"].as_str().unwrap_or("").contains("pause")).await;
    // The webhook's record of delivering a-9 is what makes these messages believable.
    for condition in ["Fired", "Resolved"] {
        rig.host.app.engine.store.record_alert(&delivered("a-9", condition, &id)).await.expect("recorded");
    }
    let fired = json!({"kind": "event", "rollout": id, "event": {"type": "alertFired", "alert": {"id": "a-9", "rule": "5xx"}}});
    functions::invoke_queue(&rig.host.app, "steps", &fired.to_string()).await.expect("fired");
    rig.wait_phase(&id, "Paused").await;
    let snake = json!({"kind": "event", "rollout": id, "event": {"type": "alertResolved", "alert_id": "a-9"}});
    match functions::invoke_queue(&rig.host.app, "steps", &snake.to_string()).await {
        Err(HandlerError::Permanent(reason)) => assert!(reason.contains("alert_id") && reason.contains("alertId"), "{reason}"),
        other => panic!("expected a refusal naming the field, got {other:?}"),
    }
    let camel = json!({"kind": "event", "rollout": id, "event": {"type": "alertResolved", "alertId": "a-9"}});
    functions::invoke_queue(&rig.host.app, "steps", &camel.to_string()).await.expect("resolved");
    rig.wait_phase(&id, "Progressing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_act_is_403_and_state_conflicts_409_each_in_the_history() {
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {"approvers": ["alice", "pipeline"]}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    let url = rig.host.url();
    let approve = |who: &'static str| {
        let url = url.clone();
        let id = id.clone();
        async move { raw(&url, "POST", &format!("/api/rollouts/{id}/approve"), b"{}".to_vec(), &[("x-sluice-user", who)]).await }
    };
    let (status, answer) = approve("mallory").await;
    assert_eq!((status, answer["error"].as_str()), (403, Some("forbidden")), "not an allowed approver: {answer}");
    // Without App Service authentication the principal header proves nothing: mallory stays mallory.
    let (status, answer) = raw(
        &url,
        "POST",
        &format!("/api/rollouts/{id}/approve"),
        b"{}".to_vec(),
        &[("x-sluice-user", "mallory"), ("x-ms-client-principal-name", "alice")],
    )
    .await;
    assert_eq!(status, 403, "a forged principal header is ignored: {answer}");
    let (status, answer) = approve("pipeline").await;
    assert_eq!(status, 403, "self-approval: {answer}");
    assert!(answer["message"].as_str().unwrap_or("").contains("cannot approve"), "{answer}");
    let (status, answer) = raw(&url, "POST", &format!("/api/rollouts/{id}/promote"), b"{}".to_vec(), &[("x-sluice-user", "alice")]).await;
    assert_eq!((status, answer["phase"].as_str()), (409, Some("AwaitingApproval")), "a state conflict: {answer}");
    let (status, _) = raw(&url, "POST", "/api/rollouts/no-such-rollout/approve", b"{}".to_vec(), &[("x-sluice-user", "alice")]).await;
    assert_eq!(status, 404);
    let status = rig.client.status(&id).await.expect("status");
    let refused: Vec<(String, String)> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["cause"].as_str().unwrap_or("").ends_with("Refused"))
        .map(|e| (e["by"].as_str().unwrap_or("").to_string(), e["summary"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(refused[0].0 == "mallory" && refused[0].1.starts_with("forbidden: "), "{refused:?}");
    assert!(refused[1].0 == "mallory", "{refused:?}");
    assert!(refused[3].0 == "alice" && refused[3].1.starts_with("refused: "), "{refused:?}");
    assert_eq!(status["phase"], "AwaitingApproval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_principal_only_the_signed_in_identity_acts() {
    let rig = Rig::start().await;
    let app = App { engine: rig.host.app.engine.clone(), alert_token: None, require_principal: true, tokens: None, api_key: None };
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    let request = |body: Value, headers: &[(&str, &str)]| functions::HttpRequest {
        method: "POST".into(),
        path: format!("/api/rollouts/{id}/approve"),
        params: [("id".to_string(), id.clone()), ("action".to_string(), "approve".to_string())].into(),
        headers: headers.iter().chain(&[("content-type", "application/json")]).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body: serde_json::to_vec(&body).expect("json"),
        ..Default::default()
    };
    let no_header = functions::invoke_http(&app, "api", request(json!({"by": "alice"}), &[])).await;
    assert_eq!(no_header.status, 403, "{:?}", no_header.json_body());
    let other =
        functions::invoke_http(&app, "api", request(json!({"by": "bob"}), &[("x-ms-client-principal-name", "alice@contoso.com")])).await;
    assert_eq!((other.status, other.json_body()["field"].as_str()), (403, Some("by")), "{:?}", other.json_body());
    let user_header = functions::invoke_http(
        &app,
        "api",
        request(json!({}), &[("x-sluice-user", "alice"), ("x-ms-client-principal-name", "carol@contoso.com")]),
    )
    .await;
    assert_eq!(user_header.status, 200, "the principal acts, whatever x-sluice-user says: {:?}", user_header.json_body());
    let status = rig.client.status(&id).await.expect("status");
    let approved_by: Vec<&str> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["cause"] == "Approved")
        .filter_map(|e| e["by"].as_str())
        .collect();
    assert_eq!(approved_by, ["carol@contoso.com"]);
    // A person's action on the queue carries no verified identity: refused.
    let queued = json!({"kind": "event", "rollout": id, "event": {"type": "abortRequested", "by": "carol@contoso.com"}});
    assert!(matches!(functions::invoke_queue(&app, "steps", &queued.to_string()).await, Err(HandlerError::Permanent(_))));
}

/// A store that panics on its next `load` or `save` when armed, then
/// behaves; and answers its next `unavailable_saves` saves as unavailable,
/// and its next `failed_measurement_saves` saves that record a measurement.
struct PanicOnce {
    inner: SqliteStore,
    armed: AtomicBool,
    armed_save: AtomicBool,
    unavailable_saves: AtomicU32,
    failed_measurement_saves: AtomicU32,
}

impl PanicOnce {
    fn open(path: &std::path::Path) -> Self {
        PanicOnce {
            inner: SqliteStore::open(path).expect("store"),
            armed: AtomicBool::new(false),
            armed_save: AtomicBool::new(false),
            unavailable_saves: AtomicU32::new(0),
            failed_measurement_saves: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl Store for PanicOnce {
    async fn create(&self, r: &Rollout, first: &HistoryEntry) -> Result<Etag, StoreError> {
        self.inner.create(r, first).await
    }
    async fn load(&self, id: &str) -> Result<Option<(Rollout, Etag)>, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic while loading {id}");
        }
        self.inner.load(id).await
    }
    async fn save(&self, r: &Rollout, etag: &Etag, history: &[HistoryEntry]) -> Result<Etag, StoreError> {
        if self.armed_save.swap(false, Ordering::SeqCst) {
            panic!("injected panic while saving {}", r.id);
        }
        if self.unavailable_saves.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Unavailable("injected: the store is away".into()));
        }
        let measured = history.iter().any(|h| h.cause == "Measured");
        if measured && self.failed_measurement_saves.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Unavailable("injected: the store is away for a measurement".into()));
        }
        self.inner.save(r, etag, history).await
    }
    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Rollout>, StoreError> {
        self.inner.list(filter).await
    }
    async fn due(&self, now: chrono::DateTime<chrono::Utc>, limit: usize) -> Result<Vec<sluice::domain::ids::RolloutId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn active_by_alert_keys(&self, keys: &[String]) -> Result<Vec<Rollout>, StoreError> {
        self.inner.active_by_alert_keys(keys).await
    }
    async fn active_for_target(&self, target: &str) -> Result<Option<String>, StoreError> {
        self.inner.active_for_target(target).await
    }
    async fn record_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        self.inner.record_alert(alert).await
    }
    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.alerts(limit).await
    }
    async fn alert_delivered(&self, alert_id: &str, condition: &str, rollout: &str) -> Result<bool, StoreError> {
        self.inner.alert_delivered(alert_id, condition, rollout).await
    }
    fn transactions(&self) -> u64 {
        self.inner.transactions()
    }
    async fn create_release(&self, r: &Release, first: &ReleaseEntry) -> Result<Etag, StoreError> {
        self.inner.create_release(r, first).await
    }
    async fn load_release(&self, id: &str) -> Result<Option<(Release, Etag)>, StoreError> {
        self.inner.load_release(id).await
    }
    async fn save_release(&self, r: &Release, etag: &Etag, history: &[ReleaseEntry]) -> Result<Etag, StoreError> {
        self.inner.save_release(r, etag, history).await
    }
    async fn release_history(&self, id: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        self.inner.release_history(id).await
    }
    async fn list_releases(&self, limit: usize) -> Result<Vec<Release>, StoreError> {
        self.inner.list_releases(limit).await
    }
    async fn due_releases(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<sluice::domain::ids::RolloutId>, StoreError> {
        self.inner.due_releases(now, limit).await
    }
    async fn save_pipeline_wait(&self, wait: &sluice::domain::pipeline_wait::PipelineWait) -> Result<(), StoreError> {
        self.inner.save_pipeline_wait(wait).await
    }
    async fn pipeline_waits(
        &self,
        rollout: Option<&str>,
        limit: usize,
    ) -> Result<Vec<sluice::domain::pipeline_wait::PipelineWait>, StoreError> {
        self.inner.pipeline_waits(rollout, limit).await
    }
    async fn drop_pipeline_wait(&self, rollout: &str, task: &uuid::Uuid) -> Result<(), StoreError> {
        self.inner.drop_pipeline_wait(rollout, task).await
    }
    async fn prune_finished(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<sluice::ports::store::Pruned, StoreError> {
        self.inner.prune_finished(cutoff, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_its_message_comes_back() {
    let store_dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(PanicOnce::open(&store_dir.path().join("s.db")));
    let rig = rig_on(store.clone()).await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    // HTTP: the panic is answered with a 500 and a JSON body; nothing changes.
    // (The timer's sweep may load first and take the panic itself; then arm again.)
    let mut answered = Vec::new();
    for _ in 0..5 {
        store.armed.store(true, Ordering::SeqCst);
        let (status, answer) = raw(&rig.host.url(), "GET", &format!("/api/rollouts/{id}"), Vec::new(), &[]).await;
        answered.push((status, answer));
        if status == 500 {
            break;
        }
    }
    let (status, answer) = answered.last().cloned().expect("asked");
    assert_eq!((status, answer["error"].as_str()), (500, Some("internal")), "{answered:?}");
    store.armed.store(false, Ordering::SeqCst);
    // Queue: the message is abandoned, the consumer survives, the message comes back and is handled.
    // (The panic is in `save`, which only the message's handling reaches.)
    store.armed_save.store(true, Ordering::SeqCst);
    let rid = RolloutId::parse(&id).expect("id");
    store.record_alert(&delivered("after-panic", "Fired", &id)).await.expect("recorded");
    let fired = sluice::shell::messages::StepMessage::parse(
        &json!({"kind": "event", "rollout": id, "event": {"type": "alertFired", "alert": {"id": "after-panic", "rule": "5xx"}}})
            .to_string(),
    )
    .expect("an alert message");
    assert_eq!(fired.rollout(), Some(&rid));
    let out: OutMessage = fired.to_out(None);
    rig.host.app.engine.queue.send(out).await.expect("sent");
    let done = rig.wait(&id, "the redelivered alert", Duration::from_secs(60), |s| s["phase"] == "RolledBack").await;
    assert!(!store.armed_save.load(Ordering::SeqCst), "the panic did happen");
    assert_eq!(done["history"].as_array().expect("history").iter().filter(|e| e["cause"] == "AlertFired").count(), 1);
    assert!(rig.host.app.engine.queue.dead_letters().await.expect("dead letters").is_empty());
}

/// Sluice dies between the router's swap and the save (a panic in `save`
/// stands in for a SIGKILL there). The approval is sent again and the
/// promotion decided again, later: the router must take it for the same
/// promotion, or it swaps the old version back in while the state says
/// Succeeded (seen once in `crash`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_decided_again_after_a_crash_before_its_save_swaps_once() {
    let store_dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(PanicOnce::open(&store_dir.path().join("s.db")));
    let rig = rig_on(store.clone()).await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    let before = rig.up.router.route();
    store.armed_save.store(true, Ordering::SeqCst);
    let alice = rig.as_user("alice");
    let crashed = alice.action(&id, "approve", &json!({"requestId": "approve-once"})).await;
    assert!(format!("{crashed:?}").contains("500"), "{crashed:?}");
    assert!(!store.armed_save.load(Ordering::SeqCst), "the save did panic");
    let swapped = rig.up.router.route();
    assert!(swapped.promoted && swapped.stable.version == before.canary.version, "swapped before the save: {swapped:?}");
    let status = rig.client.status(&id).await.expect("status");
    assert_eq!(status["phase"], "AwaitingApproval", "nothing was saved");
    // Decided again a moment later, from the same saved state.
    tokio::time::sleep(Duration::from_millis(50)).await;
    alice.action(&id, "approve", &json!({"requestId": "approve-once"})).await.expect("approved");
    rig.wait_phase(&id, "Succeeded").await;
    let route = rig.up.router.route();
    assert_eq!((route.promoted, &route.stable.version), (true, &before.canary.version), "swapped once: {route:?}");
}

/// The webhook's record of delivering alert `id` in `condition` to `rollout`.
fn delivered(id: &str, condition: &str, rollout: &str) -> AlertRecord {
    AlertRecord {
        received_at: chrono::Utc::now(),
        source: "Azure Monitor".into(),
        alert_id: id.into(),
        rule: "5xx".into(),
        condition: condition.into(),
        matched: vec![rollout.into()],
        summary: String::new(),
    }
}

/// A local host over `store`.
async fn rig_on(store: Arc<PanicOnce>) -> Rig {
    Rig::start_with(move |dir, url| async move {
        let clock: Arc<dyn sluice::ports::clock::Clock> = Arc::new(sluice::ports::clock::SystemClock);
        let queue = Arc::new(sluice::ports::queue::embedded::EmbeddedQueue::open(&dir.join("q.db"), clock.clone()).expect("queue"));
        let env = sluice::ports::env::AdapterEnv::new(dir, url);
        Ok(Arc::new(Engine::new(store, queue, env, clock)))
    })
    .await
}

/// A measurement's round runs after its delivery was answered; when its
/// save fails, the measurement and the wake-up it would have kept are
/// lost together. A wake-up is left in the queue, so the rollout measures
/// again in seconds instead of at the timer's next sweep, minutes away
/// (a soak's rollout sat that long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_whose_save_fails_in_the_background_is_taken_again_in_seconds() {
    let store_dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(PanicOnce::open(&store_dir.path().join("s.db")));
    let rig = rig_on(store.clone()).await.with_load(50);
    let metric = json!({"name": "errors", "provider": "local", "query": "error_rate", "successCondition": "< 0.5",
                        "interval": "1s", "initialDelay": "1s", "count": 60});
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"analysis": {"metrics": [metric]}}]))).await;
    let measured = |s: &Value| s["history"].as_array().map(|h| h.iter().filter(|e| e["cause"] == "Measured").count()).unwrap_or(0);
    rig.wait(&id, "a first measurement", Duration::from_secs(30), |s| measured(s) >= 1).await;

    store.failed_measurement_saves.store(1, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.failed_measurement_saves.load(Ordering::SeqCst) > 0 {
        assert!(std::time::Instant::now() < deadline, "no measurement was saved meanwhile");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = measured(&rig.client.status(&id).await.expect("status"));
    let queue = rusqlite::Connection::open(rig.data_dir().join("q.db")).expect("the embedded queue's file");
    let wakes = || -> i64 {
        queue
            .query_row("SELECT COUNT(*) FROM messages WHERE id LIKE ?1", [format!("{id}:wake:%")], |row| row.get(0))
            .expect("count the rollout's wake-ups")
    };
    // Sent just after the failure is logged (it is due 5 s later, so it is still queued).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while wakes() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(wakes(), 1, "the failed round left a wake-up");
    let again = rig.wait(&id, "measured again", Duration::from_secs(20), |s| measured(s) > before).await;
    assert_eq!(again["phase"], "Progressing", "{again}");
}

/// The store is away just after the router moved. A rollback is saved on
/// a later try (or by its redelivered message) and never undone; a step
/// forward whose save keeps failing is taken back at the router. Either
/// way, once a save lands, the state says what the router does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_fails_after_the_router_moved_leaves_router_and_state_agreeing() {
    let store_dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(PanicOnce::open(&store_dir.path().join("s.db")));
    let rig = rig_on(store.clone()).await;
    let gated = rig.spec(json!([{"setWeight": 20}, {"approval": {}}, {"setWeight": 50}, {"approval": {}}]));
    let weight = |s: &Value| s["weight"].as_u64();
    let alerts_in = |s: &Value| s["history"].as_array().expect("history").iter().filter(|e| e["cause"] == "AlertFired").count();

    // Two failed saves: the rollback's own retries save it.
    let id = rig.start_rollout(&gated).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    store.unavailable_saves.store(2, Ordering::SeqCst);
    rig.as_user("azure-monitor").alert(&azure_alert("away-1", "Fired"), Some(TOKEN)).await.expect("202");
    let done = rig.wait_phase(&id, "RolledBack").await;
    assert_eq!((rig.up.router.route().weight.percent(), weight(&done), alerts_in(&done)), (0, Some(0), 1));

    // Five: the first delivery gives up with the router at 0 (not put back),
    // and the redelivered alert records the rollback once.
    let id = rig.start_rollout(&gated).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    store.unavailable_saves.store(5, Ordering::SeqCst);
    rig.as_user("azure-monitor").alert(&azure_alert("away-2", "Fired"), Some(TOKEN)).await.expect("202");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.unavailable_saves.load(Ordering::SeqCst) > 1 {
        assert!(std::time::Instant::now() < deadline, "the saves were never tried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rig.up.router.route().weight.percent(), 0, "a rollback whose save failed is not undone");
    let done = rig.wait(&id, "the redelivered rollback", Duration::from_secs(60), |s| s["phase"] == "RolledBack").await;
    assert_eq!((rig.up.router.route().weight.percent(), weight(&done), alerts_in(&done)), (0, Some(0), 1));

    // A step forward whose save never lands: the approval answers 503 and the router is back at 20.
    let id = rig.start_rollout(&gated).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    store.unavailable_saves.store(100, Ordering::SeqCst);
    let alice = rig.as_user("alice");
    let refused = alice.action(&id, "approve", &json!({})).await;
    store.unavailable_saves.store(0, Ordering::SeqCst);
    assert!(format!("{refused:?}").contains("503"), "{refused:?}");
    let status = rig.client.status(&id).await.expect("status");
    assert_eq!((status["phase"].as_str(), weight(&status)), (Some("AwaitingApproval"), Some(20)));
    assert_eq!(rig.up.router.route().weight.percent(), 20, "the router is put back to what is saved");
    // Once the store is back, the approval goes through.
    alice.action(&id, "approve", &json!({})).await.expect("approved");
    rig.wait(&id, "at 50", Duration::from_secs(20), |s| s["phase"] == "AwaitingApproval" && s["weight"] == 50).await;
    assert_eq!(rig.up.router.route().weight.percent(), 50);
}

/// A listener that records whatever reaches it (and answers 200 `{}`).
async fn listener() -> common::recorder::Recorder {
    common::recorder::Recorder::start(|_| (200, vec![("content-type".into(), "application/json".into())], "{}".into())).await
}

/// A spec on a local router (which takes no credential) with one part replaced.
fn spec_with(part: &str, value: Value) -> Value {
    let mut spec = json!({
        "target": {
            "name": "orders-api",
            "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"}
        },
        "strategy": {"canary": {"steps": [{"setWeight": 5}]}}
    });
    match part {
        "router" => spec["target"]["router"] = value,
        "metric" => spec["strategy"]["canary"]["steps"] = json!([{"setWeight": 5}, {"analysis": {"metrics": [value]}}]),
        "backlog" => spec["backlog"] = value,
        "channel" => spec["notifications"] = json!([{"provider": "console"}, value]),
        other => panic!("no part {other}"),
    }
    spec
}

/// Every spec field that decides where a credential goes, pointed at `url`,
/// with the path the refusal must name.
fn credentialed_fields(url: &str) -> Vec<(Value, &'static str)> {
    let arm = |mut s: Value| {
        s["subscriptionId"] = json!("sub-1");
        s["resourceGroup"] = json!("rg-1");
        s["armEndpoint"] = json!(url);
        s
    };
    let router = |provider: &str, settings: Value| json!({"provider": provider, "settings": settings});
    let metric = |provider: &str, settings: Value| json!({"name": "m", "provider": provider, "query": "q", "successCondition": "< 1", "interval": "1m", "settings": settings});
    let at = "strategy.canary.steps[1].analysis.metrics[0].settings";
    vec![
        (
            spec_with("router", router("appServiceSlots", arm(json!({"app": "orders", "slot": "canary"})))),
            "target.router.settings.armEndpoint",
        ),
        (
            spec_with("router", router("containerApps", arm(json!({"app": "orders", "stableRevision": "r1", "canaryRevision": "r2"})))),
            "target.router.settings.armEndpoint",
        ),
        (
            spec_with(
                "router",
                router("frontDoor", arm(json!({"profile": "p", "originGroup": "g", "stableOrigin": "s", "canaryOrigin": "c"}))),
            ),
            "target.router.settings.armEndpoint",
        ),
        (
            spec_with(
                "router",
                router("apiManagement", arm(json!({"service": "s", "pool": "p", "stableBackend": "b1", "canaryBackend": "b2"}))),
            ),
            "target.router.settings.armEndpoint",
        ),
        (spec_with("router", router("appConfigFlag", json!({"endpoint": url, "flag": "orders-v2"}))), "target.router.settings.endpoint"),
        (
            spec_with(
                "router",
                router(
                    "gatewayApi",
                    json!({"apiServer": url, "namespace": "shop", "route": "orders", "stableService": "v1", "canaryService": "v2",
                           "tokenSetting": "K8S_TOKEN"}),
                ),
            ),
            "target.router.settings.apiServer",
        ),
        (spec_with("metric", metric("azureMonitor", json!({"resourceId": "/subscriptions/s/x", "armEndpoint": url}))), "armEndpoint"),
        (spec_with("metric", metric("logAnalytics", json!({"workspaceId": "ws-1", "endpoint": url}))), "endpoint"),
        (spec_with("metric", metric("applicationInsights", json!({"appId": "app-1", "endpoint": url}))), "endpoint"),
        (spec_with("metric", metric("prometheus", json!({"url": url, "azureAuth": true}))), "url"),
        (
            spec_with("backlog", json!({"provider": "github", "settings": {"repository": "contoso/x", "apiUrl": url}})),
            "backlog.settings.apiUrl",
        ),
        (
            spec_with("backlog", json!({"provider": "azureDevOps", "settings": {"organization": "o", "project": "p", "orgUrl": url}})),
            "backlog.settings.orgUrl",
        ),
        (
            spec_with("channel", json!({"provider": "githubDeployments", "settings": {"repository": "contoso/x", "apiUrl": url}})),
            "notifications[1].settings.apiUrl",
        ),
    ]
    .into_iter()
    .map(|(spec, path)| (spec, if path.contains('.') { path } else { leak(format!("{at}.{path}")) }))
    .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Every field that names an app setting, naming one a spec may not name,
/// with its endpoints on `url` (allowed only where loopback is), and the path.
fn forbidden_settings(url: &str) -> Vec<(Value, &'static str)> {
    vec![
        (
            spec_with(
                "backlog",
                json!({"provider": "github", "settings": {"repository": "contoso/x", "apiUrl": url, "tokenSetting": "SLUICE_ALERT_TOKEN"}}),
            ),
            "backlog.settings.tokenSetting",
        ),
        (
            spec_with(
                "backlog",
                json!({"provider": "azureDevOps",
                "settings": {"organization": "o", "project": "p", "orgUrl": url, "patSetting": "AzureWebJobsStorage"}}),
            ),
            "backlog.settings.patSetting",
        ),
        (
            spec_with(
                "router",
                json!({"provider": "gatewayApi", "settings": {"apiServer": url, "namespace": "shop", "route": "orders",
                "stableService": "v1", "canaryService": "v2", "tokenSetting": "SLUICE_AZURE_TOKEN"}}),
            ),
            "target.router.settings.tokenSetting",
        ),
        (
            spec_with(
                "router",
                json!({"provider": "appConfigFlag",
                "settings": {"endpoint": url, "flag": "f", "connectionStringSetting": "APPLICATIONINSIGHTS_CONNECTION_STRING"}}),
            ),
            "target.router.settings.connectionStringSetting",
        ),
        (
            spec_with("channel", json!({"provider": "teams", "settings": {"urlSetting": "SLUICE_ALERT_TOKEN"}})),
            "notifications[1].settings.urlSetting",
        ),
        (spec_with("channel", json!({"provider": "slack", "settings": {"urlSetting": "HOME"}})), "notifications[1].settings.urlSetting"),
        (
            spec_with("channel", json!({"provider": "slack", "settings": {"urlSetting": "azure_client_secret"}})),
            "notifications[1].settings.urlSetting",
        ),
        // A setting specs may name, for another use: the GitHub token to an AKS API server.
        (
            spec_with(
                "router",
                json!({"provider": "gatewayApi", "settings": {"apiServer": url, "namespace": "shop", "route": "orders",
                    "stableService": "v1", "canaryService": "v2", "tokenSetting": "GITHUB_TOKEN"}}),
            ),
            "target.router.settings.tokenSetting",
        ),
        (
            spec_with(
                "channel",
                json!({"provider": "webhook", "settings": {"urlSetting": "WEBHOOK_URL", "secretSetting": "IDENTITY_HEADER"}}),
            ),
            "notifications[1].settings.secretSetting",
        ),
        (
            spec_with(
                "channel",
                json!({"provider": "githubDeployments",
                "settings": {"repository": "contoso/x", "apiUrl": url, "tokenSetting": "AZURE_CLIENT_SECRET"}}),
            ),
            "notifications[1].settings.tokenSetting",
        ),
    ]
}

/// Posts `spec` to each edge that takes one and checks each answers 422 naming `path`.
async fn refused_everywhere(up: &UpProcess, spec: &Value, path: &str) {
    let headers = [("x-sluice-user", "pipeline"), ("x-sluice-local-token", up.token.as_str())];
    let mut release =
        json!({"name": "r", "version": "v2", "waves": [{"name": "w1", "targets": [spec["target"]], "strategy": spec["strategy"]}]});
    for shared in ["backlog", "notifications"] {
        if let Some(v) = spec.get(shared) {
            release[shared] = v.clone();
        }
    }
    let waves_path = path.replacen("target.", "waves[0].targets[0].", 1).replacen("strategy.", "waves[0].strategy.", 1);
    for (edge, body, want) in [
        ("/api/rollouts", json!({"spec": spec}), path.to_string()),
        ("/api/doctor", spec.clone(), path.to_string()),
        ("/api/waves", json!({"spec": release}), waves_path),
    ] {
        let (status, answer) = raw(&up.url, "POST", edge, serde_json::to_vec(&body).expect("json"), &headers).await;
        let paths: Vec<&str> = answer["problems"].as_array().into_iter().flatten().filter_map(|p| p["path"].as_str()).collect();
        assert_eq!(status, 422, "{edge} {path}: {answer}");
        assert!(paths.contains(&want.as_str()), "{edge} names {want}: {answer}");
    }
}

const ARM_TOKEN: &str = "arm-token-that-must-stay-home";

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SLUICE_AZURE_TOKEN", ARM_TOKEN),
        ("GITHUB_TOKEN", "github-token-secret"),
        ("AZURE_DEVOPS_PAT", "ado-pat-secret"),
        ("K8S_TOKEN", "k8s-token-secret"),
        ("WEBHOOK_URL", "http://127.0.0.1:9/hook"),
        ("SLUICE_AKS_API_SERVERS", "https://aks.hcp.westeurope.azmk8s.io:443"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_cannot_point_sluices_credentials_at_an_address_the_deployment_did_not_allow() {
    let hook = listener().await;
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::spawn(dir.path(), &[], &secrets(), "warn").await;
    for (spec, path) in credentialed_fields(&hook.url) {
        refused_everywhere(&up, &spec, path).await;
    }
    // Plain HTTP to anywhere else is refused too, before any call.
    let plain =
        spec_with("backlog", json!({"provider": "github", "settings": {"repository": "contoso/x", "apiUrl": "http://api.github.com"}}));
    refused_everywhere(&up, &plain, "backlog.settings.apiUrl").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.seen().is_empty(), "the listener received {:?}", hook.seen());
    let (_, list) = raw(&up.url, "GET", "/api/rollouts", Vec::new(), &[]).await;
    assert_eq!(list["rollouts"].as_array().map(Vec::len), Some(0), "nothing started: {list}");

    // The queue's Start (as a pipeline with Data Sender posts it) is refused the same way.
    let rig = Rig::start().await;
    let (spec, path) = credentialed_fields(&hook.url).swap_remove(0);
    let body = json!({"kind": "start", "spec": spec, "by": "pipeline"}).to_string();
    match functions::invoke_queue(&rig.host.app, "steps", &body).await {
        Err(HandlerError::Permanent(reason)) => assert!(reason.contains(path), "names {path}: {reason}"),
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
    assert!(hook.seen().is_empty(), "the listener received {:?}", hook.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_cannot_name_a_setting_outside_the_declared_set() {
    let hook = listener().await;
    let dir = tempfile::tempdir().expect("dir");
    // Loopback allowed (the local-testing setting): the only thing wrong with each spec is the setting it names.
    let mut env = secrets();
    env.push(("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true"));
    let up = UpProcess::spawn(dir.path(), &[], &env, "warn").await;
    for (spec, path) in forbidden_settings(&hook.url) {
        refused_everywhere(&up, &spec, path).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hook.seen().is_empty(), "the listener received {:?}", hook.seen());

    // The listener does hear what the deployment allows: the same doctor call, with a setting specs may name, reaches it.
    let allowed = spec_with("backlog", json!({"provider": "github", "settings": {"repository": "contoso/x", "apiUrl": hook.url}}));
    let token = [("x-sluice-local-token", up.token.as_str())];
    let (status, report) = raw(&up.url, "POST", "/api/doctor", serde_json::to_vec(&allowed).expect("json"), &token).await;
    assert_eq!(status, 200, "{report}");
    let seen = hook.seen();
    assert!(seen.iter().any(|r| r.header("authorization") == Some("Bearer github-token-secret")), "{seen:?}");
    // And the doctor says where credentials may go.
    let checks = report["checks"].as_array().expect("checks");
    let said = |name: &str| checks.iter().find(|c| c["name"] == name).map(|c| c["detail"].as_str().unwrap_or("").to_string());
    assert!(said("Azure Resource Manager endpoints").is_some_and(|d| d.contains("https://management.azure.com (AzureCloud)")), "{report}");
    assert!(said("an AKS API server endpoints").is_some_and(|d| d.contains("https://aks.hcp.westeurope.azmk8s.io")), "{report}");
    assert!(
        said("settings specs may name").is_some_and(|d| d.starts_with("github:GITHUB_TOKEN, azureDevOps:AZURE_DEVOPS_PAT")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_the_local_testing_setting() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "1")
        .env("SLUICE_STORE", "sqlite")
        .env("SLUICE_QUEUE", "embedded")
        .env("SLUICE_DATA_DIR", std::env::temp_dir())
        .env("SLUICE_ALERT_TOKEN", "a-token-of-sixteen-chars")
        .env("SLUICE_API_KEY", "a-key-of-twenty-four-chars")
        .env("SLUICE_TRUST_NAMES", "true")
        .env("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true")
        .output()
        .await
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("SLUICE_ALLOW_LOOPBACK_ENDPOINTS: is for local testing only"), "{stderr}");
}
