//! Releases through the local host, whole: two waves, each a target behind
//! its own local router with real load — success, a failure in wave 2 that
//! leaves wave 1 promoted, an alert during the bake between waves, and
//! `sluice up` killed mid-release and started again.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;
use sluice::cli::client::Client;
use sluice::devtools::load::Load;

/// A wave of one target: a canary step, an analysis, and an optional bake.
fn wave(name: &str, target: &str, router_url: &str, bake: Option<&str>) -> Value {
    let mut w = json!({
        "name": name,
        "targets": [{
            "name": target,
            "router": {"provider": "local", "settings": {"url": router_url}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"},
            "resourceIds": [format!("{RESOURCE}-{target}")]
        }],
        "strategy": {"canary": {"steps": [
            {"setWeight": 50},
            {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(2))]}}
        ]}}
    });
    if let Some(b) = bake {
        w["bake"] = json!(b);
    }
    w
}

fn release(waves: Vec<Value>) -> Value {
    json!({"name": "shop", "version": "v2", "waves": waves, "backlog": {"provider": "local"}})
}

async fn wait_release(client: &Client, id: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let status = client.release(id).await.expect("release status");
        if pred(&status) {
            return status;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}:\n{}", sluice::cli::waves::release_text(&status));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn target_phase(release: &Value, wave: usize) -> &str {
    release["waves"][wave]["targets"][0]["phase"].as_str().unwrap_or("")
}

fn rollout_of(release: &Value, wave: usize) -> String {
    release["waves"][wave]["targets"][0]["rollout"].as_str().expect("rollout id").to_string()
}

/// An Azure Monitor alert on one target's resource.
fn alert_on(target: &str, id: &str) -> Value {
    let mut a = azure_alert(id, "Fired");
    a["data"]["essentials"]["alertTargetIDs"] = json!([format!("{RESOURCE}-{target}").to_ascii_lowercase()]);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_moves_wave_by_wave_to_success() {
    let rig = Rig::start().await.with_load(100);
    let west = Upstreams::start().await;
    let west_load = Load::start(&west.traffic_url, 100, 4);
    let spec = release(vec![wave("east", "shop-east", &rig.up.router_url, Some("1s")), wave("west", "shop-west", &west.router_url, None)]);
    let started = rig.client.start_release(&spec, Some("rel-ok")).await.expect("release starts");
    assert_eq!((started["id"].as_str(), started["phase"].as_str()), (Some("rel-ok"), Some("Running")));
    // Posting the same start again (a retried pipeline call) is the same release.
    let again = rig.client.start_release(&spec, Some("rel-ok")).await.expect("same release");
    assert_eq!(again["id"], "rel-ok");
    // While wave 1 runs, wave 2 has no rollout.
    let running =
        wait_release(&rig.client, "rel-ok", "wave 1 running", Duration::from_secs(20), |r| target_phase(r, 0) == "Progressing").await;
    assert_eq!(running["waves"][1]["state"], "waiting");
    assert!(rig.client.status(&rollout_of(&running, 1)).await.is_err(), "wave 2 has not started");
    let done = wait_release(&rig.client, "rel-ok", "Succeeded", Duration::from_secs(60), |r| r["phase"] == "Succeeded").await;
    assert_eq!((target_phase(&done, 0), target_phase(&done, 1)), ("Succeeded", "Succeeded"));
    // Wave 2 began only after wave 1 was promoted (its bake included).
    let east = rig.client.status(&rollout_of(&done, 0)).await.expect("east");
    let west_status = rig.client.status(&rollout_of(&done, 1)).await.expect("west");
    assert!(west_status["createdAt"].as_str() >= east["finishedAt"].as_str(), "{east}\n{west_status}");
    assert_eq!(weights(&east), vec![0, 50, 100], "the bake holds everyone on v2 before promotion");
    assert!(east["plan"].as_str().unwrap_or("").contains("100% → pause 1s → promote"), "{}", east["plan"]);
    assert_eq!(east["rollout"]["release"]["id"], "rel-ok");
    assert!(rig.up.router.route().promoted && west.router.route().promoted);
    assert!(rig.backlog_files().is_empty(), "no issue for a release that succeeded");
    let messages: Vec<String> =
        done["history"].as_array().expect("history").iter().map(|h| h["message"].as_str().unwrap_or("").to_string()).collect();
    assert!(messages.iter().any(|m| m.starts_with("wave west started")), "{messages:?}");
    // `sluice status RELEASE` shows the waves.
    let text = sluice::cli::waves::release_text(&rig.client.status_any("rel-ok").await.expect("status"));
    assert!(text.contains("wave 1 east [promoted]") && text.contains("wave 2 west [promoted]"), "{text}");
    west_load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_wave_two_halts_the_release_and_wave_one_stays_promoted() {
    let rig = Rig::start().await.with_load(100);
    let west = Upstreams::start().await;
    let west_load = Load::start(&west.traffic_url, 100, 4);
    west.fail_canary(400);
    let spec = release(vec![wave("east", "shop-east", &rig.up.router_url, None), wave("west", "shop-west", &west.router_url, None)]);
    rig.client.start_release(&spec, Some("rel-fail")).await.expect("release starts");
    let halted = wait_release(&rig.client, "rel-fail", "Halted and settled", Duration::from_secs(60), |r| {
        r["phase"] == "Halted" && r["settled"] == true
    })
    .await;
    assert_eq!((target_phase(&halted, 0), target_phase(&halted, 1)), ("Succeeded", "RolledBack"));
    assert_eq!(halted["failure"]["target"], "shop-west");
    assert_eq!(halted["failure"]["wave"], 1);
    assert!(halted["waves"][0]["targets"][0].get("reverted").is_none(), "the default policy keeps wave 1");
    assert!(rig.up.router.route().promoted, "wave 1 still serves v2");
    assert_eq!(u8::from(west.router.route().weight), 0, "wave 2 is back on stable");
    assert!(!west.router.route().promoted);
    // One issue, the release's, naming the wave and the target, linking each rollout.
    let files = rig.backlog_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let issue = std::fs::read_to_string(&files[0]).expect("issue");
    assert!(issue.contains("shop-west failed in wave west"), "{issue}");
    for wave in 0..2 {
        assert!(issue.contains(&rollout_of(&halted, wave)), "links rollout {wave}: {issue}");
    }
    assert!(halted["backlog"]["issue"]["url"].as_str().is_some(), "{halted}");
    // `sluice watch` exits by the release's result (1: halted); `sluice status` draws the waves.
    let base = rig.host.url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).args(["--url", &base]).output().expect("sluice runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = cli(&["watch", "rel-fail"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("release rel-fail: shop v2 — Halted (wave 2/2 west)"), "{out}");
    // An id that is neither a rollout nor a release fails at once, not after waiting for it to appear.
    let asked = Instant::now();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(["watch", "no-such-rollout", "--url", &base]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HTTP 404") && stderr.contains("no-such-rollout"), "{stderr}");
    assert!(asked.elapsed() < Duration::from_secs(60), "it waited {:?} for the rollout to appear", asked.elapsed());
    let (code, out) = cli(&["status", "rel-fail"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("  wave 1 east [promoted]") && out.contains("  wave 2 west [stopped]"), "{out}");
    assert!(out.contains("  halted: target shop-west in wave west rolled back"), "{out}");
    west_load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_during_the_bake_rolls_that_target_back_and_the_next_wave_never_starts() {
    let rig = Rig::start().await.with_load(100);
    let west = Upstreams::start().await;
    let spec = release(vec![wave("east", "shop-east", &rig.up.router_url, Some("1m")), wave("west", "shop-west", &west.router_url, None)]);
    rig.client.start_release(&spec, Some("rel-bake")).await.expect("release starts");
    let baking = wait_release(&rig.client, "rel-bake", "wave 1 in its bake", Duration::from_secs(40), |_| true).await;
    let east_id = rollout_of(&baking, 0);
    wait_for(&rig.client, &east_id, "the bake", Duration::from_secs(40), |s| s["stepDescription"] == "pause 1m" && s["weight"] == 100)
        .await;
    let answer = rig.client.alert(&alert_on("shop-east", "bake-alert-1"), Some(TOKEN)).await.expect("alert accepted");
    assert_eq!(answer["alerts"][0]["rollouts"][0]["id"], json!(east_id), "{answer}");
    let halted =
        wait_release(&rig.client, "rel-bake", "Halted", Duration::from_secs(30), |r| r["phase"] == "Halted" && r["settled"] == true).await;
    assert_eq!(target_phase(&halted, 0), "RolledBack");
    assert_eq!(halted["failure"]["target"], "shop-east");
    assert_eq!(u8::from(rig.up.router.route().weight), 0, "the alerted target is back on stable");
    assert!(rig.client.status(&rollout_of(&halted, 1)).await.is_err(), "wave 2 never started");
    assert!(!west.router.route().promoted);
    assert_eq!(rig.backlog_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_survives_kill_9_between_and_inside_its_waves() {
    let east = Upstreams::start().await;
    let west = Upstreams::start().await;
    let loads = [Load::start(&east.traffic_url, 100, 4), Load::start(&west.traffic_url, 100, 4)];
    let dir = tempfile::tempdir().expect("tempdir");
    let spec =
        release(vec![wave("east", "shop-east", &east.router_url, Some("3s")), wave("west", "shop-west", &west.router_url, Some("2s"))]);
    let mut up = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let client = up.client("pipeline");
    client.start_release(&spec, Some("rel-kill")).await.expect("release starts");
    // Killed while wave 1 bakes, then again once wave 2 has begun.
    wait_release(&client, "rel-kill", "wave 1 progressing", Duration::from_secs(30), |r| target_phase(r, 0) == "Progressing").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    up.child.kill().await.expect("SIGKILL");
    up = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let client = up.client("pipeline");
    wait_release(&client, "rel-kill", "wave 2 begun", Duration::from_secs(60), |r| r["wave"] == 2).await;
    up.child.kill().await.expect("SIGKILL");
    up = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let client = up.client("pipeline");
    let done = wait_release(&client, "rel-kill", "Succeeded after restarts", Duration::from_secs(90), |r| r["phase"] == "Succeeded").await;
    assert!(east.router.route().promoted && west.router.route().promoted);
    // Each wave started exactly once, and each rollout promoted exactly once.
    let history = done["history"].as_array().expect("history");
    for name in ["east", "west"] {
        let started = history.iter().filter(|h| h["message"].as_str().unwrap_or("").starts_with(&format!("wave {name} started"))).count();
        let promoted = history.iter().filter(|h| h["message"].as_str().unwrap_or("").starts_with(&format!("wave {name} promoted"))).count();
        assert_eq!((name, promoted), (name, 1), "{history:?}");
        assert!(started <= 1, "{history:?}");
    }
    for wave in 0..2 {
        let status = client.status(&rollout_of(&done, wave)).await.expect("rollout");
        assert_eq!(transitions(&status), ["Pending>Progressing", "Progressing>Promoting", "Promoting>Succeeded"], "{status}");
    }
    for load in loads {
        let totals = load.stop().await;
        assert_eq!(totals.failures(), 0, "traffic kept flowing while Sluice was down: {totals:?}");
    }
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_release_requests_are_refused_by_name_and_change_nothing() {
    let rig = Rig::start().await;
    let base = rig.host.url();
    let mut spec = release(vec![wave("east", "shop-east", &rig.up.router_url, None), wave("west", "shop-west", &rig.up.router_url, None)]);
    spec["waves"][1]["targets"][0]["canary"]["version"] = json!("v3");
    spec["waves"][1]["targets"][0]["name"] = json!("shop-east");
    let (status, body) = raw(&base, "POST", "/api/waves", spec.to_string().into_bytes(), &[("x-sluice-user", "ci")]).await;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["problems"].as_array().expect("problems").iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(paths, ["waves[1].targets[0].canary.version", "waves[1].targets[0].name"], "{body}");
    // A schema problem (a weight over 100) does not hide the release's own: both come back at once.
    spec["waves"][1]["targets"][0]["name"] = json!("shop-west");
    spec["waves"][0]["strategy"]["canary"]["steps"][0]["setWeight"] = json!(140);
    let (status, body) = raw(&base, "POST", "/api/waves", spec.to_string().into_bytes(), &[("x-sluice-user", "ci")]).await;
    assert_eq!(status, 422, "{body}");
    let paths: Vec<&str> = body["problems"].as_array().expect("problems").iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(paths, ["waves[0].strategy.canary.steps[0].setWeight", "waves[1].targets[0].canary.version"], "{body}");
    let (status, body) = raw(&base, "GET", "/api/waves", Vec::new(), &[]).await;
    assert_eq!((status, body["releases"].clone()), (200, json!([])), "nothing was created");
    let (status, body) = raw(&base, "GET", "/api/waves/no-such", Vec::new(), &[]).await;
    assert_eq!((status, body["error"].as_str(), body["field"].as_str()), (404, Some("not_found"), Some("id")), "{body}");
    let (status, body) = raw(&base, "POST", "/api/waves/bad%20id/approve", Vec::new(), &[("x-sluice-user", "ci")]).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("id")), "{body}");
    // A gate that is not waiting refuses an approval with 409; an unknown action is 404.
    let ok = release(vec![wave("east", "shop-east", &rig.up.router_url, Some("1m")), wave("west", "shop-west", &rig.up.router_url, None)]);
    rig.client.start_release(&ok, Some("rel-bad")).await.expect("release starts");
    let (status, body) = raw(&base, "POST", "/api/waves/rel-bad/approve", Vec::new(), &[("x-sluice-user", "alice")]).await;
    assert_eq!((status, body["error"].as_str(), body["phase"].as_str()), (409, Some("not_applied"), Some("Running")), "{body}");
    let (status, body) = raw(&base, "POST", "/api/waves/rel-bad/promote", Vec::new(), &[("x-sluice-user", "alice")]).await;
    assert_eq!((status, body["field"].as_str()), (404, Some("action")), "{body}");
    let (status, body) = raw(&base, "POST", "/api/waves/rel-bad/abort", b"[1]".to_vec(), &[("x-sluice-user", "alice")]).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("body")), "{body}");
    // An abort stops the release and rolls its running target back, in the same call (not at a later visit).
    let aborted = rig.client.release_action("rel-bad", "abort", &json!({"reason": "freeze"})).await.expect("abort");
    assert_eq!(aborted["phase"], "Aborted");
    let east_rollout = rig.client.status(&rollout_of(&aborted, 0)).await.expect("the target's rollout");
    assert_eq!(east_rollout["phase"], "Aborted", "{east_rollout}");
    let east = wait_release(&rig.client, "rel-bad", "settled", Duration::from_secs(30), |r| r["settled"] == true).await;
    assert_eq!(target_phase(&east, 0), "Aborted");
    assert!(rig.backlog_files().is_empty(), "an abort files no issue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_roll_back_policy_a_failure_in_wave_two_puts_wave_one_back_on_stable() {
    let rig = Rig::start().await.with_load(100);
    let west = Upstreams::start().await;
    let west_load = Load::start(&west.traffic_url, 100, 4);
    west.fail_canary(400);
    let mut spec = release(vec![wave("east", "shop-east", &rig.up.router_url, None), wave("west", "shop-west", &west.router_url, None)]);
    spec["onFailure"] = json!({"earlierWaves": "rollBack"});
    rig.client.start_release(&spec, Some("rel-back")).await.expect("release starts");
    let halted = wait_release(&rig.client, "rel-back", "Halted and settled", Duration::from_secs(60), |r| {
        r["phase"] == "Halted" && r["settled"] == true
    })
    .await;
    assert_eq!(halted["waves"][0]["targets"][0]["reverted"]["done"], true, "{halted}");
    let east = rig.up.router.route();
    assert!(!east.promoted && u8::from(east.weight) == 0 && east.stable.version == "v1", "wave 1 is back on v1: {east:?}");
    let issue = std::fs::read_to_string(&rig.backlog_files()[0]).expect("issue");
    assert!(issue.contains("policy: rollBack") && issue.contains("reverted by policy"), "{issue}");
    west_load.stop().await;
}

/// A gate nobody decides times out on time: the release keeps a message
/// scheduled for its gate's timeout, so it waits for no timer (which sweeps
/// every 5 minutes; issue 27).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_nobody_decides_times_out_on_time_without_the_timer() {
    let rig = Rig::start().await.with_load(100);
    let west = Upstreams::start().await;
    let west_load = Load::start(&west.traffic_url, 100, 4);
    let mut spec = release(vec![wave("east", "shop-east", &rig.up.router_url, None), wave("west", "shop-west", &west.router_url, None)]);
    spec["waves"][0]["approval"] = json!({"minApprovers": 1, "timeout": "3s", "onTimeout": "proceed"});
    rig.client.start_release(&spec, Some("rel-gate")).await.expect("release starts");
    let gated = wait_release(&rig.client, "rel-gate", "the gate", Duration::from_secs(40), |r| r["phase"] == "AwaitingApproval").await;
    assert!(rig.client.status(&rollout_of(&gated, 1)).await.is_err(), "wave 2 waits for the gate");
    let done =
        wait_release(&rig.client, "rel-gate", "the timeout, then wave 2", Duration::from_secs(60), |r| r["phase"] == "Succeeded").await;
    let messages: Vec<&str> = done["history"].as_array().expect("history").iter().filter_map(|h| h["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("nobody decided in time")), "{messages:?}");
    west_load.stop().await;
}

/// A release's abort reaches traffic in the same call, as a rollout's does:
/// its target at 5 % is back on stable when `sluice abort` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_release_puts_its_running_target_back_on_stable_at_once() {
    let rig = Rig::start().await.with_load(50);
    let mut east = wave("east", "shop-east", &rig.up.router_url, None);
    east["strategy"]["canary"]["steps"] = json!([{"setWeight": 5}, {"pause": {"duration": "1h"}}]);
    let spec = release(vec![east, wave("west", "shop-west", &rig.up.router_url, None)]);
    rig.client.start_release(&spec, Some("rel-stop")).await.expect("release starts");
    let running =
        wait_release(&rig.client, "rel-stop", "east at 5 %", Duration::from_secs(20), |r| target_phase(r, 0) == "Progressing").await;
    let rollout = rollout_of(&running, 0);
    rig.wait(&rollout, "5 % confirmed", Duration::from_secs(20), |s| s["weight"] == 5 && s["rollout"]["traffic"]["pending"].is_null())
        .await;
    assert_eq!(rig.up.router.route().weight.percent(), 5);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["abort", "rel-stop", "--reason", "freeze", "--as", "alice", "--url", &rig.host.url()])
        .output()
        .expect("sluice runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rig.up.router.route().weight.percent(), 0, "the router is back on stable when the abort returns");
    assert_eq!(rig.client.status(&rollout).await.expect("status")["phase"], "Aborted");
}
