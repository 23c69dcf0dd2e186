//! Release policies as whole flows through a real host: deployment
//! windows and freezes (the deployment's shared freeze holds a start, the
//! gate and the status say until when, a promote cannot jump it, an
//! override needs a reason and lets one move through, recorded and
//! announced), and fixing forward while the alarm still rings.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, Rig, UpProcess, Upstreams};

/// A freeze from yesterday to tomorrow (UTC), so it holds now whatever the hour.
fn freeze_around_now() -> String {
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let (from, to) = (day(today - chrono::Days::new(1)), day(today + chrono::Days::new(1)));
    json!({"timeZone": "UTC", "freezes": [{"from": from, "to": to, "reason": "holiday freeze"}]}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_freeze_holds_a_start_the_gate_says_until_when_and_an_override_lets_one_step_through() {
    let apps = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let up = UpProcess::spawn(dir.path(), &[], &[("SLUICE_WINDOWS", &freeze_around_now())], "info").await;
    let client = up.client("pipeline");
    let spec = common::spec_for(&apps.router_url, json!([{"setWeight": 10}, {"setWeight": 30}]));

    // The gate says a start would wait, and until when.
    let gate = client.gate(&json!({"spec": spec})).await.expect("gate answers");
    assert_eq!(gate["ready"], false, "{gate}");
    assert_eq!(gate["window"]["open"], false, "{gate}");
    assert!(
        gate["window"]["opensAt"].is_string() && gate["window"]["why"].as_str().is_some_and(|w| w.contains("holiday freeze")),
        "{gate}"
    );
    assert!(gate["reasons"].as_array().expect("reasons").iter().any(|r| r["code"] == "windowClosed"), "{gate}");

    // The start waits, paused, saying why and until when; no traffic moved.
    let id = client.start(&spec, None).await.expect("accepted")["id"].as_str().expect("id").to_string();
    let held = common::wait_for(&client, &id, "held", Duration::from_secs(20), |s| s["phase"] == "Paused").await;
    let waiting = held["waitingFor"].as_str().expect("waitingFor");
    assert!(waiting.contains("window for the start") && waiting.contains("holiday freeze") && waiting.contains("opens"), "{waiting}");
    assert_eq!(held["weight"], 0);
    assert_eq!(apps.router.route().weight, 0);

    // A promote does not jump it; an override without a reason is refused naming the field.
    let refused = up.client("alice").action(&id, "promote", &json!({})).await.expect_err("409").to_string();
    assert!(refused.contains("409") && refused.contains("held by a deployment window"), "{refused}");
    let (status, body) = common::raw(
        &up.url,
        "POST",
        &format!("/api/rollouts/{id}/override"),
        b"{}".to_vec(),
        &[("x-sluice-user", "olga"), ("x-sluice-local-token", &up.token)],
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("reason")), "{body}");

    // The override lets the start and its first step through, once.
    let olga = up.client("olga");
    olga.action(&id, "override", &json!({"reason": "hotfix for INC-42"})).await.expect("override");
    let next = common::wait_for(&client, &id, "held again at 30%", Duration::from_secs(20), |s| {
        s["phase"] == "Paused" && s["rollout"]["stage"] == 1
    })
    .await;
    assert_eq!(next["weight"], 10, "{next}");
    assert_eq!(apps.router.route().weight, 10);
    let rows: Vec<&Value> = next["history"].as_array().expect("history").iter().collect();
    let row = rows.iter().find(|e| e["cause"] == "OverrideRequested").expect("the override's row");
    assert_eq!(row["by"], "olga");
    assert!(row["summary"].as_str().is_some_and(|s| s.contains("overridden by olga: hotfix for INC-42")), "{row}");
    let notified = std::fs::read_to_string(dir.path().join("notifications.jsonl")).unwrap_or_default();
    assert!(notified.contains("overridden by olga: hotfix for INC-42"), "{notified}");

    // A rollback is never held: the abort puts traffic back at once.
    client.action(&id, "abort", &json!({"reason": "not today"})).await.expect("abort");
    common::wait_for(&client, &id, "aborted", Duration::from_secs(20), |s| s["phase"] == "Aborted").await;
    assert_eq!(apps.router.route().weight, 0);
}

/// AWS users cannot deploy the fix while the alarm the bad version raised
/// still rings (aws/serverless-application-model#716); here the fix says
/// so, the old alarm's deliveries leave it alone, and a new firing does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_forward_rides_out_the_alarm_the_bad_version_raised_and_tells_its_issue() {
    let rig = Rig::start().await.with_load(50);
    let steps = json!([{"setWeight": 20}, {"pause": {}}]);
    // v2 is bad: the alert rolls it back and its issue is filed.
    let bad = rig.start_rollout(&rig.spec(steps.clone())).await;
    rig.wait_phase(&bad, "Paused").await;
    let ringing = common::azure_alert("alarm-1", "Fired");
    rig.client.alert(&ringing, Some(common::TOKEN)).await.expect("202");
    let failed =
        rig.wait(&bad, "the issue", Duration::from_secs(30), |s| s["phase"] == "RolledBack" && s["backlog"]["state"] == "opened").await;
    let issue_file = rig.backlog_files().into_iter().next().expect("the issue file");

    // The fix, v3, while the alarm still rings: its deliveries (it began before the fix) are left alone.
    let mut fix = rig.spec(steps);
    fix["target"]["canary"]["version"] = json!("v3");
    fix["policy"] = json!({"fixForward": {"alerts": ["canary 5xx"]}});
    let id = rig.start_rollout(&fix).await;
    rig.wait_phase(&id, "Paused").await;
    rig.client.alert(&ringing, Some(common::TOKEN)).await.expect("202");
    let riding = rig
        .wait(&id, "the ignored alert's row", Duration::from_secs(20), |s| {
            s["history"].as_array().into_iter().flatten().any(|e| e["summary"].as_str().is_some_and(|t| t.contains("ignored on purpose")))
        })
        .await;
    assert_eq!((riding["phase"].as_str(), riding["weight"].as_u64()), (Some("Paused"), Some(20)), "{riding}");
    let row = riding["history"].as_array().expect("history").iter().find(|e| e["cause"] == "AlertFired").expect("the alert's row");
    assert!(
        row["summary"].as_str().is_some_and(|t| t.contains("alert canary 5xx (alarm-1)") && t.contains("policy.fixForward.alerts")),
        "{row}"
    );
    // The earlier failure's issue is told the fix is rolling out.
    let told = rig.wait(&id, "the issue told", Duration::from_secs(20), |s| s["backlog"]["reported"]["fixing"] == true).await;
    let text = std::fs::read_to_string(&issue_file).expect("the issue");
    assert!(text.contains(&format!("A fix is rolling out: {id}")) && text.contains(&format!("fix forward the failure of {bad}")), "{text}");
    assert_eq!(told["backlog"]["issue"], failed["backlog"]["issue"], "the same issue");

    // A new firing rolls the fix back, and the same issue says so.
    let mut anew = common::azure_alert("alarm-2", "Fired");
    anew["data"]["essentials"]["firedDateTime"] = json!(chrono::Utc::now().to_rfc3339());
    rig.client.alert(&anew, Some(common::TOKEN)).await.expect("202");
    rig.wait(&id, "rolled back, issue told", Duration::from_secs(30), |s| {
        s["phase"] == "RolledBack" && s["backlog"]["reported"]["failure"] == true
    })
    .await;
    let text = std::fs::read_to_string(&issue_file).expect("the issue");
    assert!(text.contains(&format!("The rollout failed too: {id}")), "{text}");
    assert_eq!(rig.backlog_files().len(), 1, "one issue for the failure and its fix");
}
