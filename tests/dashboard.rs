//! The dashboard in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (`tests/browser/dashboard.mjs`) through a real rollout
//! on `sluice up --as alice` (and bob in a second browser session). The
//! page must draw the measured values, act once on a double click as the
//! signed-in person, show the API's refusal, move the gated rollout on with
//! the second approval, and list and report what happened. Screenshots go to
//! `target/dashboard-shots/`. A missing Chromium or playwright-core fails
//! the test: `scripts/test` installs both.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

fn chromium() -> PathBuf {
    let path = std::env::var("SLUICE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    assert!(path.exists(), "{} is missing: install the Debian package chromium (scripts/test does)", path.display());
    path
}

fn playwright() -> PathBuf {
    let path = std::env::var("SLUICE_PLAYWRIGHT_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".tools/node_modules/playwright-core/index.mjs"));
    assert!(path.exists(), "{} is missing: scripts/test installs playwright-core from tools/package.json", path.display());
    path
}

/// Runs one step of the browser script and returns what the page showed.
async fn drive(step: &str, url: &str, id: &str, shots: &std::path::Path) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/dashboard.mjs"))
        .arg(step)
        .env("SLUICE_URL", url)
        .env("ROLLOUT_ID", id)
        .env("SHOTS", shots)
        .env("CHROMIUM", chromium())
        .env("PLAYWRIGHT_CORE", playwright())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the browser step finishes").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser step {step} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("the script prints JSON");
    assert_eq!(page["pageErrors"], json!([]), "the page threw");
    page
}

/// The measurements the API recorded for one metric, canary values in order.
fn measured(status: &Value, metric: &str) -> Vec<f64> {
    let history = status["history"].as_array().cloned().unwrap_or_default();
    history.iter().filter(|e| e["measurement"]["metric"] == metric).filter_map(|e| e["measurement"]["canary"].as_f64()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_measurements_and_its_buttons_act_once_as_the_signed_in_person() {
    let up = Upstreams::start().await;
    let _load = sluice::devtools::load::Load::start(&up.traffic_url, 60, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = UpProcess::spawn(dir.path(), &["--as", "alice"], &[], "warn").await;
    let pipeline = host.client("pipeline");
    let spec = spec_for(
        &up.router_url,
        json!([
            // A preview first: the page shows where testers reach v2, and its smoke check is charted.
            {"preview": {"check": {"path": "/orders", "bodyContains": "v2", "interval": "1s"}}},
            {"setWeight": 20},
            // A metric named after an Object prototype key (issue 36): the page keys charts in prototype-free maps.
            {"analysis": {"metrics": [metric("error-rate", "error_rate", "< 0.05", Some(3)), metric("constructor", "latency_p95_ms", "< 1000", Some(3))]}},
            {"approval": {"minApprovers": 2, "approvers": ["alice", "bob"]}},
            {"setWeight": 60},
            {"pause": {"duration": "2s"}}
        ]),
    );
    let id = pipeline.start(&spec, None).await.expect("starts")["id"].as_str().expect("id").to_string();
    wait_for(&pipeline, &id, "the approval gate", Duration::from_secs(60), |s| s["phase"] == "AwaitingApproval").await;
    let shots = repo_root().join("target/dashboard-shots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    let page = drive("approve", &host.url, &id, &shots).await;
    let status = pipeline.status(&id).await.expect("status");
    assert!(page["signedIn"].as_str().is_some_and(|s| s.contains("alice")), "{page}");
    for name in ["error-rate", "constructor"] {
        let chart = page["charts"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["metric"] == name))
            .unwrap_or_else(|| panic!("no {name} chart: {page}"));
        let values: Vec<f64> = chart["values"].as_array().expect("values").iter().filter_map(Value::as_f64).collect();
        assert_eq!(values, measured(&status, name), "the {name} chart draws each measured canary value");
        assert_eq!(chart["marks"], json!(3), "one verdict mark per measurement");
        assert_eq!((chart["threshold"].as_bool(), chart["stable"].as_bool()), (Some(true), Some(true)), "{chart}");
    }
    let preview = page["preview"].as_str().unwrap_or_default();
    assert!(preview.contains(&up.traffic_url) && preview.contains("x-sluice-preview: canary"), "the preview's address: {page}");
    assert!(page["charts"].as_array().is_some_and(|c| c.iter().any(|c| c["metric"] == "smoke")), "the smoke check's chart: {page}");
    assert!(page["approved"].as_str().is_some_and(|t| t.contains("approve by alice")), "{page}");
    let refused = page["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("HTTP 409") && refused.contains("alice has already approved"), "the API's refusal is shown: {refused}");
    let status = pipeline.status(&id).await.expect("status");
    let history = status["history"].as_array().cloned().unwrap_or_default();
    let approvals: Vec<&Value> = history.iter().filter(|e| e["cause"] == "Approved").collect();
    let by: Vec<&Value> = approvals.iter().map(|e| &e["by"]).collect();
    assert_eq!(by, [&json!("alice"), &json!("bob")], "the double click approved once, and each as the signed-in person");
    assert!(page["secondSignedIn"].as_str().is_some_and(|s| s.contains("bob")), "{page}");
    assert!(page["secondApproved"].as_str().is_some_and(|t| t.contains("approve by bob")), "{page}");
    assert_eq!(approvals[1]["to"], "Progressing", "the second approval moved the rollout on: {}", approvals[1]);
    wait_for(&pipeline, &id, "success", Duration::from_secs(60), |s| s["phase"] == "Succeeded").await;
    let page = drive("final", &host.url, &id, &shots).await;
    assert_eq!(page["phase"], "Succeeded");
    assert_eq!(page["buttons"], json!([]), "a finished success offers no action");
    assert_eq!(page["overview"], json!([id]), "the overview filtered by service lists the rollout");
    assert_eq!(page["filteredOut"], json!(0));
    let report = page["report"].as_array().cloned().unwrap_or_default();
    assert_eq!(report.first().and_then(|r| r.get(0)), Some(&json!("orders-api")), "{report:?}");
    assert_eq!(report.first().and_then(|r| r.get(1)), Some(&json!("1")), "one deployment: {report:?}");
    assert_eq!(page["trend"], json!({"deployments": 1}), "the trend chart draws the one deployment and nothing else: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_drawn_as_its_waves_and_its_gate_is_approved_once_from_the_page() {
    let (east, west) = (Upstreams::start().await, Upstreams::start().await);
    let loads =
        [sluice::devtools::load::Load::start(&east.traffic_url, 100, 4), sluice::devtools::load::Load::start(&west.traffic_url, 100, 4)];
    let dir = tempfile::tempdir().expect("tempdir");
    let host = UpProcess::spawn(dir.path(), &["--as", "alice"], &[], "warn").await;
    let pipeline = host.client("pipeline");
    let target = |name: &str, url: &str| {
        json!({"name": name, "router": {"provider": "local", "settings": {"url": url}},
               "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}})
    };
    let steps = json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}});
    let spec = json!({"name": "shop", "version": "v2", "waves": [
        {"name": "east", "targets": [target("shop-east", &east.router_url)], "strategy": steps, "approval": {"minApprovers": 1}},
        {"name": "west", "targets": [target("shop-west", &west.router_url)], "strategy": steps}
    ]});
    pipeline.start_release(&spec, Some("rel-page")).await.expect("release starts");
    let shots = repo_root().join("target/dashboard-shots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let page = drive("release", &host.url, "rel-page", &shots).await;
    assert_eq!(page["gated"][0]["state"], "promoted", "{page}");
    assert_eq!(page["gated"][0]["phases"], json!(["Succeeded"]), "{page}");
    assert_eq!(page["gated"][0]["links"], json!(["rel-page-w1-shop-east"]), "a link to the wave's rollout: {page}");
    assert_eq!((page["gated"][1]["state"].as_str(), page["gated"][1]["phases"].clone()), (Some("waiting"), json!([])), "{page}");
    assert!(page["approved"].as_str().unwrap_or("").contains("approve by alice"), "{page}");
    assert_eq!(page["final"][1]["phases"], json!(["Succeeded"]), "{page}");
    assert_eq!(page["overview"], json!(["rel-page"]), "{page}");
    let release = pipeline.release("rel-page").await.expect("release");
    let approvals = release["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["message"].as_str().unwrap_or("").contains("approved by alice"))
        .count();
    assert_eq!(approvals, 1, "a double click approves once: {release}");
    for load in loads {
        load.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judged_rollback_is_drawn_against_the_judges_tolerance_with_the_observed_split() {
    let up = Upstreams::start().await;
    up.fail_canary(300);
    let _load = sluice::devtools::load::Load::start(&up.traffic_url, 200, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let host = UpProcess::spawn(dir.path(), &[], &[], "warn").await;
    let pipeline = host.client("pipeline");
    let judged = json!({"name": "errors-vs-stable", "template": "local-errors-vs-stable",
        "judge": {"test": "errorRate", "maxIncrease": 0.02, "failures": "error_count", "requests": "request_count"},
        "interval": "2s", "count": 3, "minSampleSize": 40, "maxSoak": "20s"});
    let spec = spec_for(&up.router_url, json!([{"setWeight": 50}, {"analysis": {"metrics": [judged]}}, {"setWeight": 100}]));
    let id = pipeline.start(&spec, None).await.expect("starts")["id"].as_str().expect("id").to_string();
    let status = wait_for(&pipeline, &id, "the rollback", Duration::from_secs(60), |s| s["phase"] == "RolledBack").await;
    let shots = repo_root().join("target/dashboard-shots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    let page = drive("demo", &host.url, &id, &shots).await;
    assert_eq!(page["phase"], "RolledBack");
    let chart = page["charts"].as_array().and_then(|c| c.iter().find(|c| c["metric"] == "errors-vs-stable")).cloned().unwrap_or_default();
    let rule = chart["rule"].as_str().unwrap_or_default();
    assert!(rule.contains("significantly above stable + 0.020") && rule.contains("95 % confidence"), "the judge's rule in words: {chart}");
    let history = status["history"].as_array().cloned().unwrap_or_default();
    let judged: Vec<&Value> = history.iter().filter(|e| e["measurement"]["metric"] == "errors-vs-stable").collect();
    let tolerated: Vec<f64> = judged.iter().filter_map(|e| e["measurement"]["stable"].as_f64()).map(|s| s + 0.02).collect();
    let drawn: Vec<f64> = chart["bounds"].as_array().map(|b| b.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    assert!(!drawn.is_empty(), "the tolerance is drawn at each judged measurement: {chart}");
    assert_eq!(drawn.len(), tolerated.len(), "{chart}");
    assert!(drawn.iter().zip(&tolerated).all(|(d, t)| (d - t).abs() < 1e-9), "stable + maxIncrease: {drawn:?} vs {tolerated:?}");
    let valued = judged.iter().filter(|e| e["measurement"]["canary"].is_number()).count();
    assert_eq!(chart["marks"].as_u64(), Some(valued as u64), "one verdict mark per measurement with a value: {chart}");
    let observed = status["observedSplit"]["share"].as_f64().expect("a judged measurement counts both sides: the observed split");
    let drawn_split = page["observed"][0].as_str().unwrap_or_default();
    assert!(drawn_split.contains(&format!("observed {observed:.1}%")), "the weight chart marks the observed split: {page}");
}

/// Where Sluice checks tokens, the page signs a person in by itself: to the
/// provider's sign-in page and back with a code, traded with its PKCE
/// verifier; an access token the API refuses as expired is refreshed once;
/// Approve acts as the signed-in person (by their token, never a name the
/// page writes); Sign out ends the provider's session and keeps no token.
/// Two people sign in in turn and pass a two-person gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_people_in_with_entra_id_and_acts_with_their_tokens() {
    let idp = common::oidc::Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let gate = rig.spec(json!([{"setWeight": 20}, {"approval": {"minApprovers": 2}}, {"setWeight": 50}, {"pause": {"duration": "1h"}}]));
    let pipeline = format!("Bearer {}", idp.token(&idp.github_claims("contoso/orders", "production")));
    let (status, body) =
        raw(&rig.host.url(), "POST", "/api/rollouts", gate.to_string().into_bytes(), &[("authorization", &pipeline)]).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let reader = format!("Bearer {}", idp.person("oid-rita", "rita@contoso.com", &["Sluice.Reader"]));
    let read = || async {
        let (status, body) = raw(&rig.host.url(), "GET", &format!("/api/rollouts/{id}"), Vec::new(), &[("authorization", &reader)]).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read().await["phase"] != "AwaitingApproval" {
        assert!(std::time::Instant::now() < deadline, "never at the gate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shots = repo_root().join("target/dashboard-shots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");

    // Carol signs in; the first token the provider gives is already expired.
    idp.browser.sign_in_as("oid-carol", "carol@contoso.com", &["Sluice.Approver"]);
    idp.browser.expire_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let page = drive("signin", &rig.host.url(), &id, &shots).await;
    assert_eq!(page["signedIn"], "carol@contoso.com", "{page}");
    assert!(page["url"].as_str().is_some_and(|u| u.ends_with(&format!("/api/dashboard/{id}"))), "back on the page asked for: {page}");
    assert!(page["approved"].as_str().is_some_and(|t| t.contains("approve by carol@contoso.com")), "{page}");
    assert!(page["signedOut"].as_str().is_some_and(|t| t.contains("Sign in")), "{page}");
    assert_eq!(page["tokensKept"], Value::Null, "signed out, the tab keeps no token");
    assert_eq!(idp.browser.grants(), ["authorization_code", "refresh_token", "logout"], "one code, one refresh of the expired token");

    // Dåve, in a browser of his own, gives the second approval; the page shows his name as
    // written (the token's payload is UTF-8, not Latin-1).
    idp.browser.sign_in_as("oid-dave", "dåve@contoso.com", &["Sluice.Approver"]);
    let page = drive("signin", &rig.host.url(), &id, &shots).await;
    assert_eq!(page["signedIn"], "dåve@contoso.com", "{page}");
    assert!(page["approved"].as_str().is_some_and(|t| t.contains("approve by dåve@contoso.com")), "{page}");
    let status = read().await;
    let approvals: Vec<(&Value, &Value)> =
        status["history"].as_array().expect("history").iter().filter(|e| e["cause"] == "Approved").map(|e| (&e["by"], &e["to"])).collect();
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    assert_eq!((approvals[0].0, approvals[1].0), (&json!("carol@contoso.com"), &json!("dåve@contoso.com")), "each as their token says");
    assert_eq!(approvals[1].1, "Progressing", "the second approval moved the rollout on");
}
