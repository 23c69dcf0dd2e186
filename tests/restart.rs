//! Killing `sluice up` (SIGKILL) at arbitrary points and starting it again
//! resumes the rollout from its saved state: nothing lost, nothing done twice.

mod common;

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
