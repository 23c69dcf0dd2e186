//! Release policies as whole flows through a real host: deployment
//! windows and freezes (the deployment's shared freeze holds a start, the
//! gate and the status say until when, a promote cannot jump it, an
//! override needs a reason and lets one move through, recorded and
//! announced), fixing forward while the alarm still rings, a preview
//! before any user, and approving from Slack.

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

/// A preview before any user: a canary that fails its smoke check is rolled
/// back with the evidence while no user ever reached it; one without a check
/// is shown to a tester's header (and to nobody else, and not counted as
/// users' traffic) until a person approves; a router without a preview is
/// refused at validation, naming the step and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_the_canary_before_any_user_and_its_smoke_check_or_a_person_decides() {
    let rig = Rig::start().await.with_load(50);

    // v2 answers 500: its smoke check fails twice and it never sees a user.
    rig.up.fail_canary(1000);
    let check = json!({"check": {"path": "/orders", "bodyContains": "\"version\":\"v2\"", "attempts": 2, "interval": "1s"}});
    let bad = rig.start_rollout(&rig.spec(json!([{"preview": check}, {"setWeight": 20}]))).await;
    let failed = rig.wait(&bad, "rolled back", Duration::from_secs(30), |s| s["phase"] == "RolledBack").await;
    assert!(failed["failure"].as_str().is_some_and(|f| f.contains("smoke")), "{failed}");
    assert_eq!(common::weights(&failed).into_iter().max(), Some(0), "no user reached the canary: {failed}");
    let history = failed["history"].as_array().expect("history");
    assert_eq!(history.iter().filter(|e| e["summary"].as_str().is_some_and(|t| t.contains("smoke/smoke #"))).count(), 2, "{failed}");
    rig.wait(&bad, "the issue", Duration::from_secs(20), |s| s["backlog"]["state"] == "opened").await;

    // Without a check, a person looks first: the address is in the status.
    rig.up.fail_canary(0);
    let id = rig.start_rollout(&rig.spec(json!([{"preview": {}}, {"setWeight": 20}, {"pause": {}}]))).await;
    let waiting = rig.wait_phase(&id, "AwaitingApproval").await;
    assert_eq!(waiting["preview"]["url"].as_str(), Some(rig.up.traffic_url.as_str()), "{waiting}");
    assert_eq!(waiting["preview"]["headers"], json!({"x-sluice-preview": "canary"}), "{waiting}");
    assert!(waiting["waitingFor"].as_str().is_some_and(|w| w.contains("the preview: http://")), "{waiting}");
    let http = reqwest::Client::new();
    let get = |preview: bool| {
        let request = http.get(format!("{}/orders", rig.up.traffic_url));
        let request = if preview { request.header("x-sluice-preview", "canary") } else { request };
        async move { request.send().await.expect("answer").json::<Value>().await.expect("json")["version"].clone() }
    };
    let before = rig.up.router.stats(60).canary.requests;
    assert_eq!((get(true).await, get(false).await), (json!("v2"), json!("v1")), "the tester sees v2, a user v1");
    assert_eq!(rig.up.router.stats(60).canary.requests, before, "a tester's look is not users' traffic");
    rig.as_user("alice").action(&id, "approve", &json!({})).await.expect("approved");
    let moved = rig.wait_phase(&id, "Paused").await;
    assert_eq!(moved["weight"], 20, "{moved}");
    rig.client.action(&id, "abort", &json!({"reason": "done looking"})).await.expect("aborted");

    // A router with no preview is refused before anything is stored.
    let mut spec = rig.spec(json!([{"preview": {}}, {"setWeight": 20}]));
    spec["target"]["router"] = json!({"provider": "frontDoor", "settings": {"subscriptionId": "s", "resourceGroup": "g",
        "profile": "edge", "originGroup": "orders", "stableOrigin": "stable", "canaryOrigin": "canary"}});
    let refused = rig.client.start(&spec, None).await.expect_err("400").to_string();
    assert!(
        refused.contains("strategy.canary.steps[0].preview") && refused.contains("frontDoor router cannot show the canary"),
        "{refused}"
    );
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// A click as Slack posts it (api.slack.com/interactivity/handling): a form
/// with one `payload`, signed as "Verifying requests from Slack" says.
fn slack_click(user: &str, action: &str, value: &Value, reply_to: &str, at: i64, trigger: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0SLUICE"},
        "team": {"id": "T0SLUICE", "domain": "contoso"},
        "api_app_id": "A0SLUICE",
        "token": "legacy-verification-token",
        "trigger_id": trigger,
        "response_url": reply_to,
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "actions": [{"type": "button", "action_id": action, "block_id": "b1", "value": value.to_string(), "action_ts": "1700000001.000200"}]
    });
    signed_form(&payload.to_string(), at)
}

/// A form with this `payload` text, signed with the app's secret.
fn signed_form(payload: &str, at: i64) -> (Vec<u8>, Vec<(String, String)>) {
    let body: String = form_urlencoded::Serializer::new(String::new()).append_pair("payload", payload).finish();
    let stamp = at.to_string();
    let signature = sluice::functions::slack::signature(SLACK_SECRET, &stamp, body.as_bytes());
    let headers = vec![
        ("content-type".to_string(), "application/x-www-form-urlencoded".to_string()),
        ("x-slack-request-timestamp".to_string(), stamp),
        ("x-slack-signature".to_string(), signature),
    ];
    (body.into_bytes(), headers)
}

async fn post_click(url: &str, click: (Vec<u8>, Vec<(String, String)>)) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = click.1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::raw(url, "POST", "/api/slack", click.0, &headers).await
}

/// Approving and rolling back from Slack: the buttons are in the message,
/// a signed click acts as the Slack user's Sluice identity within their
/// roles, and whoever clicked is told the outcome; forged, stale, tampered
/// and unknown clicks change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_buttons_approve_and_roll_back_as_the_person_and_refuse_everyone_else() {
    let apps = Upstreams::start().await;
    let slack = common::recorder::Recorder::start(|_| (200, Vec::new(), "ok".into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = format!("{}/services/T0SLUICE/B0/hook", slack.url);
    let people = json!({
        "T0SLUICE/U0ALICE": {"name": "alice@contoso.com", "roles": ["Approver", "Operator"]},
        "U0RITA": {"name": "rita@contoso.com", "roles": ["Reader"]}
    })
    .to_string();
    let env = [
        ("SLUICE_SLACK_SIGNING_SECRET", SLACK_SECRET),
        ("SLUICE_SLACK_USERS", people.as_str()),
        ("SLACK_URL", hook.as_str()),
        ("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true"),
    ];
    let up = UpProcess::spawn(dir.path(), &[], &env, "info").await;
    let client = up.client("pipeline");
    let mut spec = common::spec_for(
        &apps.router_url,
        json!([{"setWeight": 10}, {"approval": {"approvers": ["alice@contoso.com"]}}, {"setWeight": 50}, {"pause": {}}]),
    );
    spec["notifications"] = json!([{"provider": "slack", "settings": {"urlSetting": "SLACK_URL", "interactive": true}}]);
    let id = client.start(&spec, None).await.expect("starts")["id"].as_str().expect("id").to_string();
    common::wait_for(&client, &id, "the gate", Duration::from_secs(20), |s| s["phase"] == "AwaitingApproval").await;

    // The approval request carries Approve and Reject, naming the rollout and its step.
    let asked = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = slack.seen().into_iter().find(|r| r.path == "/services/T0SLUICE/B0/hook" && r.body.contains("sluice.approve"));
            match found {
                Some(r) => break r,
                None if std::time::Instant::now() > deadline => panic!("no approval request reached Slack: {:?}", slack.seen()),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let buttons: Vec<Value> = asked.json()["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .collect();
    let approve = buttons.iter().find(|b| b["action_id"] == "sluice.approve").expect("an Approve button");
    assert!(
        buttons.iter().any(|b| b["action_id"] == "sluice.reject") && buttons.iter().any(|b| b["action_id"] == "sluice.rollback"),
        "{buttons:?}"
    );
    let value: Value = serde_json::from_str(approve["value"].as_str().expect("value")).expect("JSON value");
    assert_eq!(value, json!({"rollout": id, "stage": 1}));
    let reply_to = format!("{}/actions/T0SLUICE/1/reply", slack.url);
    let now = chrono::Utc::now().timestamp();

    // Forged, stale and tampered clicks are refused and change nothing.
    let mut forged = slack_click("U0ALICE", "sluice.approve", &value, &reply_to, now, "t-1");
    forged.1[2].1 = format!("v0={}", "0".repeat(64));
    assert_eq!(post_click(&up.url, forged).await.0, 401);
    let stale = slack_click("U0ALICE", "sluice.approve", &value, &reply_to, now - 400, "t-2");
    let (status, body) = post_click(&up.url, stale).await;
    assert_eq!((status, body["field"].as_str()), (401, Some("x-slack-request-timestamp")), "{body}");
    let mut tampered = slack_click("U0ALICE", "sluice.approve", &value, &reply_to, now, "t-3");
    tampered.0.extend_from_slice(b"&x=1");
    assert_eq!(post_click(&up.url, tampered).await.0, 401);
    // A Slack user not linked, and a linked one without the role, are told why; nothing moves.
    let (status, body) = post_click(&up.url, slack_click("U0MALLORY", "sluice.approve", &value, &reply_to, now, "t-4")).await;
    assert_eq!(status, 200);
    assert!(body["text"].as_str().is_some_and(|t| t.contains("not linked to a Sluice identity")), "{body}");
    let (_, body) = post_click(&up.url, slack_click("U0RITA", "sluice.approve", &value, &reply_to, now, "t-5")).await;
    assert!(body["text"].as_str().is_some_and(|t| t.contains("rita@contoso.com may not approve") && t.contains("Approver")), "{body}");
    assert_eq!(client.status(&id).await.expect("status")["phase"], "AwaitingApproval");
    // Signed but broken clicks are refused naming the payload, or answered "nothing was done".
    let junk = json!({"type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T0SLUICE"}, "actions": []});
    for (payload, field) in [
        ("not json".to_string(), Some("payload")),
        (json!({"type": "view_submission", "user": {"id": "U0ALICE"}, "actions": []}).to_string(), Some("payload.type")),
        (json!({"type": "block_actions"}).to_string(), Some("payload")),
        (junk.to_string(), None),
        (
            json!({"type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T0SLUICE"},
                "actions": [{"action_id": "sluice.approve", "value": "{\"rollout\": \"../../etc\"}"}]})
            .to_string(),
            None,
        ),
        (
            json!({"type": "block_actions", "user": {"id": "U0ALICE"}, "team": {"id": "T0SLUICE"},
                "actions": [{"action_id": "sluice.delete_everything", "value": value.to_string()}]})
            .to_string(),
            None,
        ),
    ] {
        let (status, body) = post_click(&up.url, signed_form(&payload, now)).await;
        match field {
            Some(f) => assert_eq!((status, body["field"].as_str()), (400, Some(f)), "{payload}: {body}"),
            None => assert!(status == 200 && body["text"].as_str().is_some_and(|t| t.contains("nothing was done")), "{payload}: {body}"),
        }
    }
    let (status, _) = post_click(&up.url, signed_form(&"x".repeat(300 * 1024), now)).await;
    assert_eq!(status, 413);
    // Slack wants its answer within 3 s: a reply hook that hangs does not hold it.
    let hanging = format!("{}/actions/hang", common::silent_peer().await);
    let started = std::time::Instant::now();
    let (status, _) = post_click(&up.url, slack_click("U0RITA", "sluice.approve", &value, &hanging, now, "t-5b")).await;
    assert!(status == 200 && started.elapsed() < Duration::from_secs(2), "answered {status} after {:?}", started.elapsed());

    // Alice approves from Slack: the gate opens as her, and she is told.
    let (status, body) = post_click(&up.url, slack_click("U0ALICE", "sluice.approve", &value, &reply_to, now, "t-6")).await;
    assert_eq!(status, 200, "{body}");
    let moved = common::wait_for(&client, &id, "past the gate", Duration::from_secs(20), |s| s["phase"] == "Paused").await;
    let row = moved["history"].as_array().expect("history").iter().find(|e| e["cause"] == "Approved").expect("the approval's row");
    assert_eq!(row["by"], "alice@contoso.com");
    // The same (stale) Approve again is refused by the rollout, and she is told so.
    let (_, body) = post_click(&up.url, slack_click("U0ALICE", "sluice.approve", &value, &reply_to, now, "t-7")).await;
    assert!(body["text"].as_str().is_some_and(|t| t.starts_with("Not done: stale request")), "{body}");

    // Roll back from the paused rollout's own message.
    let paused_value = json!({"rollout": id, "stage": 3});
    let (_, body) = post_click(&up.url, slack_click("U0ALICE", "sluice.rollback", &paused_value, &reply_to, now, "t-8")).await;
    assert!(body["text"].as_str().is_some_and(|t| t.starts_with("Done: alice@contoso.com asked to roll back")), "{body}");
    common::wait_for(&client, &id, "aborted", Duration::from_secs(20), |s| s["phase"] == "Aborted").await;
    assert_eq!(apps.router.route().weight, 0);

    // Every answer went to the click's response_url, only to the one who clicked; the refused ones too.
    let replies: Vec<Value> = slack.seen().into_iter().filter(|r| r.path == "/actions/T0SLUICE/1/reply").map(|r| r.json()).collect();
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert!(replies.iter().all(|r| r["response_type"] == "ephemeral" && r["replace_original"] == false), "{replies:?}");
    assert!(!up.output().contains(SLACK_SECRET), "the signing secret stays out of the logs");
}
