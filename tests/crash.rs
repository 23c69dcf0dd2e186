//! A crash test at scale: 30 rollouts of mixed fates — approved, rolled back
//! by an alert, aborted — driven through `sluice up` as a process while it
//! is killed with SIGKILL at random moments (at least ten times) and
//! restarted on the same data. Every rollout must end in the right phase,
//! nothing may be left half-done, and no transition, action or backlog issue
//! may happen twice. `CRASH_SEED` replays a run's kill schedule.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;
use sluice::cli::client::Client;
use sluice::devtools::router::{Router, Upstream};
use sluice::devtools::sample_app::{self, Fault};

const ROLLOUTS: usize = 30;
const KILLS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Approved,
    Alerted,
    Aborted,
}

impl Fate {
    fn of(i: usize) -> Fate {
        [Fate::Approved, Fate::Alerted, Fate::Aborted][i % 3]
    }

    fn end(self) -> &'static str {
        match self {
            Fate::Approved => "Succeeded",
            Fate::Alerted => "RolledBack",
            Fate::Aborted => "Aborted",
        }
    }
}

/// A small deterministic generator, so a failing kill schedule can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn spec(i: usize, router_url: &str) -> Value {
    // Timed pauses keep each rollout in flight for a while, so the kills land mid-plan.
    let steps = match Fate::of(i) {
        Fate::Approved => json!([{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"approval": {"approvers": ["alice"]}},
                                 {"setWeight": 50}, {"pause": {"duration": "2s"}}]),
        Fate::Alerted => json!([{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"approval": {"approvers": ["alice"]}}]),
        Fate::Aborted => json!([{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"pause": {}}]),
    };
    json!({
        "target": {
            "name": format!("svc-{i}"),
            "router": {"provider": "local", "settings": {"url": router_url}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"}
        },
        "strategy": {"canary": {"steps": steps}},
        "backlog": {"provider": "local"}
    })
}

fn alert(i: usize) -> Value {
    let mut a = azure_alert(&format!("crash-alert-{i}"), "Fired");
    a["data"]["essentials"]["alertTargetIDs"] = json!([]);
    a["data"]["essentials"]["configurationItems"] = json!([]);
    a["data"]["customProperties"] = json!({"sluiceTarget": format!("svc-{i}")});
    a
}

/// Moves one rollout to its fate through whichever host is up, retrying
/// through the outages; every action carries a request id, so a retry of an
/// action that did land is harmless.
async fn drive(i: usize, spec: Value, url: Arc<Mutex<String>>, token: String, deadline: Instant) -> Result<(), String> {
    let id = format!("crash-{i}");
    let fate = Fate::of(i);
    let mut started = false;
    // Starts are spread over several seconds, and people take a moment to act.
    tokio::time::sleep(Duration::from_millis(300 * i as u64)).await;
    let think = Duration::from_millis(200 * (i % 7) as u64);
    while Instant::now() < deadline {
        let base = url.lock().map_err(|e| e.to_string())?.clone();
        let pipeline = Client::new(&base, None, "pipeline").with_local_token(Some(token.clone()));
        if !started {
            started = pipeline.start(&spec, Some(&id)).await.is_ok();
            continue;
        }
        let Ok(status) = pipeline.status(&id).await else {
            tokio::time::sleep(Duration::from_millis(150)).await;
            continue;
        };
        let phase = status["phase"].as_str().unwrap_or("");
        let backlog_settled = !matches!(status["backlog"]["state"].as_str(), Some("opening")) && status["backlog"]["updating"].is_null();
        if phase == fate.end() && (fate != Fate::Alerted || status["backlog"]["issue"].is_object()) && backlog_settled {
            return Ok(());
        }
        if matches!(phase, "AwaitingApproval" | "Paused") {
            tokio::time::sleep(think).await;
        }
        let alice = Client::new(&base, None, "alice").with_local_token(Some(token.clone()));
        let _ = match (fate, phase) {
            (Fate::Approved, "AwaitingApproval") => alice.action(&id, "approve", &json!({"requestId": format!("approve-{i}")})).await,
            (Fate::Alerted, "AwaitingApproval") => alice.alert(&alert(i), Some(TOKEN)).await,
            (Fate::Aborted, "Paused") => {
                alice.action(&id, "abort", &json!({"requestId": format!("abort-{i}"), "reason": "crash test"})).await
            }
            _ => Ok(Value::Null),
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{id} did not reach {} in time", fate.end()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_rollouts_survive_ten_sigkills_with_nothing_lost_or_done_twice() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7));
    println!("CRASH_SEED={seed}");
    let (v1, _) = sample_app::serve("v1", Arc::new(Fault::default()), loopback()).await.expect("v1");
    let (v2, _) = sample_app::serve("v2", Arc::new(Fault::default()), loopback()).await.expect("v2");
    let mut routers = Vec::new();
    for _ in 0..ROLLOUTS {
        let router = Router::new(
            Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{v1}") },
            Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{v2}") },
        );
        let at = router.serve(loopback(), loopback()).await.expect("router");
        routers.push((router, at.admin_url()));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut host = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let url = Arc::new(Mutex::new(host.url.clone()));
    let deadline = Instant::now() + Duration::from_secs(240);
    // The write token stays the same across restarts on the same data directory.
    let drivers: Vec<_> =
        (0..ROLLOUTS).map(|i| tokio::spawn(drive(i, spec(i, &routers[i].1), url.clone(), host.token.clone(), deadline))).collect();

    // Kill it at random moments, restarting on the same data each time.
    let mut rng = Lcg(seed);
    let mut kills = 0;
    let mut in_flight_at_kill = Vec::new();
    // Kill until ten kills have landed on rollouts in flight and a third of
    // the rollouts have ended (so kills also hit late phases); a kill after
    // every rollout ended proves nothing, so the loop stops there.
    let finished = |drivers: &[tokio::task::JoinHandle<Result<(), String>>]| drivers.iter().filter(|d| d.is_finished()).count();
    let mut hits = 0;
    while (hits < KILLS || finished(&drivers) < ROLLOUTS / 3) && kills < 3 * KILLS && finished(&drivers) < ROLLOUTS {
        tokio::time::sleep(Duration::from_millis(200 + rng.next(1000))).await;
        let in_flight = ROLLOUTS - finished(&drivers);
        hits += usize::from(in_flight > 0);
        in_flight_at_kill.push(in_flight);
        host.child.kill().await.expect("SIGKILL");
        kills += 1;
        host = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
        *url.lock().expect("url") = host.url.clone();
    }
    println!("rollouts still in flight at each kill: {in_flight_at_kill:?}");
    assert!(in_flight_at_kill.iter().filter(|n| **n > 0).count() >= KILLS, "the kills hit rollouts in flight: {in_flight_at_kill:?}");
    let mut failures = Vec::new();
    for d in drivers {
        if let Err(e) = d.await.expect("driver") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "after {kills} kills: {failures:?}\n{}", host.output());

    let client = host.client("pipeline");
    let mut issues = Vec::new();
    for (i, (router, _)) in routers.iter().enumerate() {
        let fate = Fate::of(i);
        let status = client.status(&format!("crash-{i}")).await.expect("status");
        assert_eq!(status["phase"], fate.end(), "crash-{i}");
        let history = status["history"].as_array().expect("history");
        let seqs: Vec<u64> = history.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert_eq!(seqs, (1..=history.len() as u64).collect::<Vec<_>>(), "crash-{i}: the history is gap-free");
        // Each transition happened once: no phase change is repeated.
        let moves = transitions(&status);
        let mut seen = BTreeMap::new();
        for m in &moves {
            *seen.entry(m.clone()).or_insert(0) += 1;
        }
        let expected: &[&str] = match fate {
            Fate::Approved => &[
                "Pending>Progressing",
                "Progressing>AwaitingApproval",
                "AwaitingApproval>Progressing",
                "Progressing>Promoting",
                "Promoting>Succeeded",
            ],
            Fate::Alerted => {
                &["Pending>Progressing", "Progressing>AwaitingApproval", "AwaitingApproval>RollingBack", "RollingBack>RolledBack"]
            }
            Fate::Aborted => &["Pending>Progressing", "Progressing>Paused", "Paused>RollingBack", "RollingBack>Aborted"],
        };
        assert_eq!(moves, expected, "crash-{i}: {seen:?}");
        // Each action and each alert was applied once, and an issue opened once.
        let count = |cause: &str| history.iter().filter(|e| e["cause"] == cause).count();
        let (approvals, alerts, aborts, opened) = (count("Approved"), count("AlertFired"), count("AbortRequested"), count("BacklogOpened"));
        match fate {
            Fate::Approved => assert_eq!((approvals, alerts, aborts, opened), (1, 0, 0, 0), "crash-{i}"),
            Fate::Alerted => assert_eq!((approvals, alerts, aborts, opened), (0, 1, 0, 1), "crash-{i}"),
            Fate::Aborted => assert_eq!((approvals, alerts, aborts, opened), (0, 0, 1, 0), "crash-{i}"),
        }
        // The router agrees: promoted, or all traffic back on stable.
        let route = router.route();
        match fate {
            Fate::Approved => assert!(route.promoted && route.stable.version == "v2", "crash-{i}: {route:?}"),
            _ => assert!(!route.promoted && route.weight == 0, "crash-{i}: {route:?}"),
        }
        if fate == Fate::Alerted {
            issues.push(format!("crash-{i}.md"));
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("backlog"))
        .expect("backlog dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    issues.sort();
    assert_eq!(files, issues, "one backlog issue per rolled-back rollout, none for the others");
    println!("{ROLLOUTS} rollouts, {kills} SIGKILLs, every one ended right");
}
