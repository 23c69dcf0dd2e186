//! Killing `sluice up` (SIGKILL) at arbitrary points and starting it again
//! resumes the rollout from its saved state: nothing lost, nothing done twice.

use crate::common;

use std::time::Duration;

use serde_json::json;
use tokio::process::Child;

use common::*;
use sluice::cli::client::Client;
use sluice::devtools::load::Load;

async fn spawn_up(dir: &std::path::Path) -> (Child, String) {
    spawn_up_with(dir, &[], &[]).await
}

async fn spawn_up_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let up = UpProcess::spawn(dir, args, env, "warn").await;
    (up.child, up.url)
}

/// A client of the `sluice up` on `dir`, with the write token it keeps there.
fn client_of(dir: &std::path::Path, url: &str) -> Client {
    let token = std::fs::read_to_string(dir.join("local-token")).expect("the write token").trim().to_string();
    Client::new(url, None, "pipeline").with_local_token(Some(token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_host_mid_rollout_loses_nothing() {
    let up = Upstreams::start().await;
    let load = Load::start(&up.traffic_url, 100, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_for(
        &up.router_url,
        json!([
            {"setWeight": 20},
            {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(3))]}},
            {"setWeight": 50},
            {"pause": {"duration": "2s"}},
            {"setWeight": 100},
            {"pause": {"duration": "2s"}}
        ]),
    );
    let (mut host, url) = spawn_up(dir.path()).await;
    let client = client_of(dir.path(), &url);
    let started = client.start(&spec, Some("restart-1")).await.expect("started");
    assert_eq!(started["id"], "restart-1");
    // Kill it three times at different points of the plan, restarting each time.
    for pause_ms in [1_300u64, 2_700, 1_900] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        host.kill().await.expect("SIGKILL");
        let (next, _) = spawn_up(dir.path()).await;
        host = next;
    }
    // The last host's URL differs; find it from a fresh start of the client.
    host.kill().await.expect("SIGKILL");
    let (_host, url) = spawn_up(dir.path()).await;
    let client = client_of(dir.path(), &url);
    let done = wait_for(&client, "restart-1", "Succeeded after restarts", Duration::from_secs(90), |s| s["phase"] == "Succeeded").await;
    assert_eq!(weights(&done), vec![0, 20, 50, 100]);
    assert_eq!(transitions(&done), ["Pending>Progressing", "Progressing>Promoting", "Promoting>Succeeded"]);
    let measured = done["history"].as_array().expect("history").iter().filter(|e| e["cause"] == "Measured").count();
    assert_eq!(measured, 3, "each measurement applied exactly once");
    let route = up.router.route();
    assert!(route.promoted && route.stable.version == "v2");
    let totals = load.stop().await;
    assert_eq!(totals.failures(), 0, "traffic kept flowing while Sluice was down: {totals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_table_storage_too_a_killed_host_resumes() {
    let azurite = tokio::task::spawn_blocking(common::azurite::start).await.expect("azurite");
    let conn = azurite.connection_string();
    let up = Upstreams::start().await;
    let load = Load::start(&up.traffic_url, 100, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("SLUICE_TABLE_CONNECTION", conn.as_str())];
    let args = ["--store", "table"];
    let spec = spec_for(
        &up.router_url,
        json!([
            {"setWeight": 20},
            {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(2))]}},
            {"setWeight": 100},
            {"pause": {"duration": "2s"}}
        ]),
    );
    let (mut host, url) = spawn_up_with(dir.path(), &args, &env).await;
    client_of(dir.path(), &url).start(&spec, Some("table-1")).await.expect("started");
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    host.kill().await.expect("SIGKILL");
    let (_host, url) = spawn_up_with(dir.path(), &args, &env).await;
    let client = client_of(dir.path(), &url);
    let done = wait_for(&client, "table-1", "Succeeded on Table Storage", Duration::from_secs(90), |s| s["phase"] == "Succeeded").await;
    assert_eq!(weights(&done), vec![0, 20, 100]);
    assert_eq!(transitions(&done), ["Pending>Progressing", "Progressing>Promoting", "Promoting>Succeeded"]);
    // The state really is in Table Storage, not in the local file.
    let store = sluice::ports::store::table::TableStore::connect(
        &sluice::ports::store::table::TableConnection::parse(&conn).expect("conn"),
        "sluice",
    )
    .await
    .expect("tables");
    let (r, _) = sluice::ports::store::Store::load(&store, "table-1").await.expect("load").expect("in the table");
    assert_eq!(r.phase, sluice::domain::rollout::Phase::Succeeded);
    assert_eq!(load.stop().await.failures(), 0);
}

/// The size of a SQLite file's write-ahead log (0 when there is none).
fn wal_size(db: &std::path::Path) -> u64 {
    std::fs::metadata(db.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0)
}

/// Most bytes the embedded store's log may reach, whatever the load.
const WAL_BOUND: u64 = 64 * 1024 * 1024;

/// The embedded store's write-ahead log stays bounded while writers and
/// readers never pause (before: 10 000 rollouts left a 1.9 GiB log that
/// never shrank), and a clean stop leaves almost nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_stays_bounded_under_load_and_is_small_after_a_clean_stop() {
    use sluice::ports::store::{ListFilter, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sluice.db");
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(sluice::ports::store::sqlite::SqliteStore::open(&db).expect("store"));
    let names = sluice::ports::registry::names();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers that never stop: each read is its own short transaction.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = store.list(&ListFilter { active_only: true, limit: 20, ..ListFilter::default() }).await;
                    let _ = store.due(chrono::Utc::now(), 50).await;
                }
            })
        })
        .collect();
    let (writers, per_writer) = (8, 1250);
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, names, largest, db) = (store.clone(), names.clone(), largest.clone(), db.clone());
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let doc = json!({
                        "target": {"name": format!("svc-{w}-{i}"), "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                                   "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
                        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"approval": {}}]}}
                    });
                    let (spec, plan) = sluice::domain::spec::validate(&doc, &names).expect("valid");
                    let id = sluice::domain::ids::RolloutId::parse(&format!("r-{w}-{i}")).expect("id");
                    let by = sluice::domain::ids::Actor::parse("ci").expect("actor");
                    let (rollout, first) = sluice::domain::rollout::Rollout::new(id, spec, plan, by, chrono::Utc::now());
                    store.create(&rollout, &first).await.expect("created");
                    if i % 50 == 0 {
                        largest.fetch_max(wal_size(&db), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed).max(wal_size(&db));
    assert_eq!(store.list(&ListFilter::default()).await.expect("list").len(), writers * per_writer);
    println!("10 000 rollouts written: largest log {:.1} MiB (bound {} MiB)", largest as f64 / 1048576.0, WAL_BOUND / 1048576);
    assert!(largest <= WAL_BOUND, "the log reached {largest} bytes");
    drop(store);
    // A clean stop checkpoints what is left and truncates the log.
    assert!(wal_size(&db) <= 1024 * 1024, "after a clean stop the log is {} bytes", wal_size(&db));
}

/// `sluice up` stopped with Ctrl-C (SIGINT) leaves an empty log: the store
/// and queue copy it back as they close (before: the whole log stayed, 2 GiB
/// after 10 000 rollouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_sluice_up_with_ctrl_c_leaves_an_empty_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let client = up.client("ci");
    for i in 0..100 {
        let spec = json!({
            "target": {"name": format!("svc-{i}"), "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:9"}},
                       "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
            "strategy": {"canary": {"steps": [{"approval": {}}]}}
        });
        client.start(&spec, None).await.expect("started");
    }
    let db = dir.path().join("sluice.db");
    assert!(wal_size(&db) > 0, "the writes went through the log");
    let pid = up.child.id().expect("running").to_string();
    // The shell's own `kill`: no procps needed.
    let sent = std::process::Command::new("sh").args(["-c", &format!("kill -INT {pid}")]).status().expect("kill");
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), up.child.wait()).await.expect("it stops").expect("exit status");
    assert!(exit.success(), "a clean stop: {exit:?}\n{}", up.output());
    assert_eq!(wal_size(&db), 0, "the log is copied back and emptied at a clean stop");
}
