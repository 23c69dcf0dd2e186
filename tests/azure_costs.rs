//! A full demo rollout on the Azure adapters — Table Storage on Azurite,
//! Service Bus through the wire-level fake — driven one step message at a
//! time, counting what each step costs: table transactions and Service Bus
//! sends. A save costs the state's transaction plus one on the index when
//! the timer's next visit moves (the due row); a save that changes phase
//! while moving that visit earlier pays one more (the due row is written
//! ahead of the state, so a crash never loses it). Budget: 1 send per step,
//! at most 2.5 transactions per step on average, 3 per step, and 4 for at
//! most one late wake-up that does two steps' work. The figures are printed
//! (`cargo test --release --test suite -- azure_costs --nocapture`).

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::azurite::Azurite;
use common::servicebus_fake::FakeServiceBus;
use common::Upstreams;
use sluice::devtools::demo::{demo_spec, Variant};
use sluice::devtools::load::Load;
use sluice::domain::rollout::Phase;
use sluice::functions::{self, App, HttpRequest};
use sluice::ports::clock::SystemClock;
use sluice::ports::queue::servicebus::{ServiceBusConnection, ServiceBusQueue};
use sluice::ports::queue::Queue;
use sluice::ports::store::table::{TableConnection, TableStore};
use sluice::ports::store::Store;
use sluice::shell::engine::Engine;
use sluice::shell::messages::StepMessage;

struct Costs {
    label: String,
    transactions: u64,
    sends: u64,
}

struct Rig {
    app: App,
    store: Arc<TableStore>,
    queue: Arc<ServiceBusQueue>,
}

impl Rig {
    fn counters(&self) -> (u64, u64) {
        (self.store.transactions(), self.queue.sends())
    }

    async fn api(&self, method: &str, path: &str, params: &[(&str, &str)], body: Value, user: &str) -> (u16, Value) {
        let req = HttpRequest {
            method: method.into(),
            path: path.into(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            headers: [("x-sluice-user".to_string(), user.to_string()), ("content-type".to_string(), "application/json".to_string())]
                .into_iter()
                .collect(),
            body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
            ..HttpRequest::default()
        };
        let r = functions::invoke_http(&self.app, "api", req).await;
        (r.status, r.json_body())
    }
}

async fn rig(up: &Upstreams, data: &std::path::Path, azurite: &Azurite, fake: &FakeServiceBus) -> Rig {
    let store =
        Arc::new(TableStore::connect(&TableConnection::parse(&azurite.connection_string()).expect("conn"), "costs").await.expect("tables"));
    let conn = ServiceBusConnection::parse(&fake.connection_string()).expect("conn");
    let queue = Arc::new(ServiceBusQueue::new(&conn, "rollout-steps", fake.http_client(), Duration::from_secs(30)).expect("queue"));
    let env = sluice::ports::env::AdapterEnv::new(data.to_path_buf(), "http://127.0.0.1:7071".into());
    let engine = Arc::new(Engine::new(store.clone(), queue.clone(), env, Arc::new(SystemClock)));
    let _ = up;
    Rig { app: App { engine, alert_token: None, require_principal: false, tokens: None, api_key: None }, store, queue }
}

/// Runs one rollout to its end, one message at a time, and returns the cost of each step.
async fn run(rig: &Rig, spec: Value, approve: bool, fake: &FakeServiceBus) -> (Phase, Vec<Costs>) {
    let mut costs = Vec::new();
    let before = rig.counters();
    let (status, created) = rig.api("POST", "/api/rollouts", &[], spec, "pipeline").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let after = rig.counters();
    costs.push(Costs { label: "POST /api/rollouts".into(), transactions: after.0 - before.0, sends: after.1 - before.1 });
    let started = Instant::now();
    loop {
        let (state, _) = rig.app.engine.store.load(&id).await.expect("load").expect("exists");
        if state.phase.is_terminal() && !matches!(state.backlog, sluice::domain::rollout::BacklogState::Opening { .. }) {
            return (state.phase, costs);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let sends: Vec<String> = fake
                .seen()
                .iter()
                .filter(|s| s.path == "/rollout-steps/messages")
                .map(|s| {
                    format!(
                        "{} @ {}",
                        s.broker_properties.as_ref().map(|b| b["MessageId"].to_string()).unwrap_or_default(),
                        s.broker_properties.as_ref().map(|b| b["ScheduledEnqueueTimeUtc"].to_string()).unwrap_or_default()
                    )
                })
                .collect();
            let labels: Vec<&str> = costs.iter().map(|c| c.label.as_str()).collect();
            panic!(
                "the rollout did not finish: {:?}, waiting for {}; next wake {:?}\nsends: {sends:#?}\nsteps: {labels:?}\npending: {:#?}\nnow {}",
                state.phase,
                state.waiting_for(chrono::Utc::now()),
                state.next_wake(),
                fake.pending(),
                chrono::Utc::now()
            );
        }
        if state.phase == Phase::AwaitingApproval && approve {
            let before = rig.counters();
            let (status, body) =
                rig.api("POST", &format!("/api/rollouts/{id}/approve"), &[("id", &id), ("action", "approve")], json!({}), "alice").await;
            assert_eq!(status, 200, "{body}");
            let after = rig.counters();
            costs.push(Costs { label: "POST approve".into(), transactions: after.0 - before.0, sends: after.1 - before.1 });
            continue;
        }
        match rig.queue.receive(Duration::from_secs(30)).await.expect("receive") {
            None => tokio::time::sleep(Duration::from_millis(100)).await,
            Some(delivery) => {
                let message: StepMessage = serde_json::from_str(&delivery.body).expect("a step message");
                let label = match &message {
                    StepMessage::Event { event, .. } => format!("message: {}", event.kind()),
                    StepMessage::Wake { .. } => "message: Wake".to_string(),
                    StepMessage::Start { .. } => "message: Start".to_string(),
                    StepMessage::Release { .. } => "message: Release".to_string(),
                };
                let before = rig.counters();
                rig.app.engine.handle(message).await.expect("handled");
                let after = rig.counters();
                rig.queue.complete(&delivery).await.expect("complete");
                costs.push(Costs { label, transactions: after.0 - before.0, sends: after.1 - before.1 });
            }
        }
    }
}

fn mean(costs: &[Costs]) -> f64 {
    costs.iter().map(|c| c.transactions).sum::<u64>() as f64 / costs.len().max(1) as f64
}

fn report(title: &str, costs: &[Costs]) {
    println!("\n{title}: {} steps", costs.len());
    println!("  {:<28} {:>12} {:>14}", "step", "table txns", "service bus sends");
    for c in costs {
        println!("  {:<28} {:>12} {:>14}", c.label, c.transactions, c.sends);
    }
    let t: u64 = costs.iter().map(|c| c.transactions).sum();
    let s: u64 = costs.iter().map(|c| c.sends).sum();
    println!(
        "  total: {t} table transactions, {s} sends; mean {:.2} / {:.2} per step",
        t as f64 / costs.len() as f64,
        s as f64 / costs.len() as f64
    );
}

const START: &str = "message: Start";

/// A visit saves once per round: the start's runs the preview, its smoke
/// check and the first weight (three rounds, and the claim), any other at most two.
fn max_transactions(c: &Costs) -> u64 {
    if c.label == START {
        6
    } else {
        4
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_rollout_on_the_azure_adapters_costs_a_bounded_number_of_transactions_and_one_send_per_step() {
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let fake = FakeServiceBus::start(Duration::from_secs(30)).await;
    let up = Upstreams::start().await;
    let load = Load::start(&up.traffic_url, 200, 4);
    let data = tempfile::tempdir().expect("tempdir");
    let rig = rig(&up, data.path(), &azurite, &fake).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (phase, costs) = run(&rig, demo_spec(&up.router_url, Variant::Success), true, &fake).await;
    assert_eq!(phase, Phase::Succeeded);
    report("successful canary", &costs);
    // Three transactions: the approval (a phase change with an earlier next
    // visit), and at most one late wake-up that finds two things due at once
    // (the last measurement of a stage and the gate after it). The start's
    // visit does three steps' work (the preview, its smoke check, the first
    // weight) and is bounded apart ([`max_transactions`]).
    let later = || costs.iter().filter(|c| c.label != START);
    assert!(later().filter(|c| c.transactions > 3).count() <= 1, "one wake-up at most does two steps' work");
    // At most 2.5 per step's work on average. The wake-up that does two steps' work counts as two:
    // how late it comes depends on the machine's load (on a loaded one: the same 23 transactions
    // in 9 visits instead of 10, which per visit would read as 2.56).
    let total: u64 = costs.iter().map(|c| c.transactions).sum();
    let work = costs.len() + 2 /* the start's two more */ + later().filter(|c| c.transactions > 3).count();
    assert!(total as f64 / work as f64 <= 2.5, "{total} table transactions for {work} steps' work");
    for c in &costs {
        let create = c.label == "POST /api/rollouts";
        assert!(c.transactions <= max_transactions(c), "{}: {} table transactions", c.label, c.transactions);
        assert!(c.sends <= 1, "{}: {} sends", c.label, c.sends);
        if create {
            assert_eq!((c.transactions, c.sends), (2, 1), "claim + state, and the start message");
        }
    }

    // The same on a faulty canary: the rollback step also records the backlog issue.
    // (Swap the router back first: the first rollout promoted v2 to stable.)
    up.router.revert(true);
    up.fail_canary(300);
    let (phase, costs) = run(&rig, demo_spec(&up.router_url, Variant::Success), true, &fake).await;
    assert_eq!(phase, Phase::RolledBack);
    report("rolled-back canary", &costs);
    // The rolling-back wake-up saves twice (rolled back, then the backlog issue recorded).
    assert!(costs.iter().filter(|c| c.label != START && c.transactions > 3).count() <= 1, "{} table transactions", mean(&costs));
    assert!(costs.iter().all(|c| c.transactions <= max_transactions(c) && c.sends <= 1));
    load.stop().await;
    assert!(fake.seen().iter().all(|s| s.auth_problem.is_none()));
}
