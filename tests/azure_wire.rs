//! The Azure adapters against wire-level fakes that check the exact
//! requests: App Service slot routing through ARM (ramp-up rules, slot swap
//! as a long-running operation, stop, Retry-After), Entra ID tokens (managed
//! identity and client credentials), Log Analytics / Application Insights
//! queries, Azure Monitor metrics, and the HTTP probe.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};

use common::recorder::{Answer, Recorded, Recorder};
use sluice::domain::rollout::{MeasureOutcome, MetricPlan};
use sluice::domain::spec::{Condition, Target};
use sluice::ports::env::AdapterEnv;

const IDENTITY_HEADER: &str = "identity-header-secret-42";
const SITE: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/orders";

fn ok(body: Value) -> Answer {
    (200, vec![("content-type".into(), "application/json".into())], body.to_string())
}

/// A managed-identity token endpoint as App Service serves it.
fn token_answer(r: &Recorded) -> Option<Answer> {
    if r.path != "/msi/token" {
        return None;
    }
    if r.header("x-identity-header") != Some(IDENTITY_HEADER) || r.param("api-version").as_deref() != Some("2019-08-01") {
        return Some((400, vec![], "{\"error\":\"bad identity request\"}".into()));
    }
    let resource = r.param("resource").unwrap_or_default();
    let token = format!("token-for-{}", resource.trim_start_matches("https://").trim_end_matches('/'));
    let expires = (Utc::now() + TimeDelta::hours(1)).timestamp().to_string();
    Some(ok(json!({"access_token": token, "expires_on": expires, "resource": resource, "token_type": "Bearer"})))
}

fn env_with(mut settings: BTreeMap<&'static str, String>) -> AdapterEnv {
    // The fakes listen on loopback: a deployment would refuse them.
    settings.insert("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true".into());
    let settings = Arc::new(move |k: &str| settings.get(k).cloned());
    AdapterEnv::with_settings(std::env::temp_dir(), "http://sluice.test".into(), settings)
}

fn mi_env(fake: &str) -> AdapterEnv {
    env_with(BTreeMap::from([("IDENTITY_ENDPOINT", format!("{fake}/msi/token")), ("IDENTITY_HEADER", IDENTITY_HEADER.to_string())]))
}

fn target(router: Value) -> Target {
    serde_json::from_value(json!({
        "name": "orders",
        "router": router,
        "stable": {"name": "production", "version": "v1"},
        "canary": {"name": "canary", "version": "v2"}
    }))
    .expect("target")
}

#[derive(Default)]
struct Arm {
    rules: Value,
    ignore_patches: bool,
    throttled_once: bool,
    swaps_started: u32,
    polls: u32,
    swap_status: Option<Value>,
    stopped: u32,
    /// How `PATCH config/web` answers: at once (None), or as a long-running
    /// operation reported by `Location` or by `Azure-AsyncOperation`.
    patch_lro: Option<&'static str>,
    /// Rules a long-running PATCH applies once its operation completes.
    pending_rules: Option<Value>,
    /// The next swap fails with a 500 (after it may have started).
    swap_fails: bool,
}

/// The canary slot's unique default host name (apps created since 2024).
const SLOT_HOST: &str = "orders-canary-b7c2d9e4f1a0c3d5.westeurope-01.azurewebsites.net";

fn arm_fake(state: Arc<Mutex<Arm>>, base: Arc<Mutex<String>>) -> impl Fn(&Recorded) -> Answer + Send + Sync {
    move |r: &Recorded| {
        if let Some(a) = token_answer(r) {
            return a;
        }
        let mut s = state.lock().expect("arm");
        if r.header("authorization") != Some("Bearer token-for-management.azure.com") {
            return (401, vec![], "{\"error\":{\"code\":\"InvalidAuthenticationToken\"}}".into());
        }
        if r.param("api-version").as_deref() != Some("2023-12-01") && !r.path.starts_with("/operations") {
            return (400, vec![], "{\"error\":{\"code\":\"MissingApiVersion\"}}".into());
        }
        let config = format!("{SITE}/config/web");
        match (r.method.as_str(), r.path.as_str()) {
            ("PATCH", p) if p == config => {
                if !s.throttled_once {
                    s.throttled_once = true;
                    return (429, vec![("retry-after".into(), "1".into())], "{\"error\":{\"code\":\"TooManyRequests\"}}".into());
                }
                let rules = r.json().pointer("/properties/experiments/rampUpRules").cloned().unwrap_or(json!([]));
                let base = base.lock().expect("base").clone();
                match (s.ignore_patches, s.patch_lro) {
                    (true, _) => ok(json!({"properties": {}})),
                    (false, None) => {
                        s.rules = rules;
                        ok(json!({"properties": {}}))
                    }
                    (false, Some(kind)) => {
                        s.pending_rules = Some(rules);
                        s.polls = 0;
                        let (header, url) = match kind {
                            "location" => ("location", format!("{base}/operations/config-1")),
                            _ => ("azure-asyncoperation", format!("{base}/operations/config-async-1")),
                        };
                        (202, vec![(header.into(), url), ("retry-after".into(), "0".into())], String::new())
                    }
                }
            }
            ("GET", p) if p.starts_with("/operations/config") => {
                s.polls += 1;
                let done = s.polls >= 2;
                if done {
                    if let Some(rules) = s.pending_rules.take() {
                        s.rules = rules;
                    }
                }
                match (p.contains("async"), done) {
                    (true, false) => ok(json!({"status": "InProgress"})),
                    (true, true) => ok(json!({"status": "Succeeded"})),
                    (false, false) => (202, vec![("retry-after".into(), "0".into())], String::new()),
                    (false, true) => ok(json!({})),
                }
            }
            ("GET", p) if p == format!("{SITE}/slots/canary") => {
                ok(json!({"name": "orders/canary", "properties": {"defaultHostName": SLOT_HOST}}))
            }
            ("GET", p) if p == config => ok(json!({"properties": {"experiments": {"rampUpRules": s.rules}}})),
            ("GET", SITE) => ok(json!({"properties": {"slotSwapStatus": s.swap_status}})),
            ("POST", p) if p == format!("{SITE}/slots/canary/slotsswap") => {
                s.swaps_started += 1;
                if std::mem::take(&mut s.swap_fails) {
                    return (500, vec![], "{\"error\":{\"code\":\"InternalServerError\"}}".into());
                }
                s.polls = 0;
                let location = format!("{}/operations/swap-{}", base.lock().expect("base"), s.swaps_started);
                (202, vec![("location".into(), location), ("retry-after".into(), "0".into())], String::new())
            }
            ("GET", p) if p.starts_with("/operations/swap-") => {
                s.polls += 1;
                if s.polls < 2 {
                    return (202, vec![("retry-after".into(), "0".into())], String::new());
                }
                let (source, dest) = if s.swaps_started % 2 == 1 { ("canary", "production") } else { ("production", "canary") };
                s.swap_status =
                    Some(json!({"timestampUtc": Utc::now().to_rfc3339(), "sourceSlotName": source, "destinationSlotName": dest}));
                ok(json!({}))
            }
            ("POST", p) if p == format!("{SITE}/slots/canary/stop") => {
                s.stopped += 1;
                ok(json!({}))
            }
            _ => (404, vec![], format!("{{\"error\":{{\"code\":\"NotFound\",\"message\":\"{} {}\"}}}}", r.method, r.path)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_service_slots_route_swap_and_roll_back_with_exact_arm_requests() {
    let state = Arc::new(Mutex::new(Arm { rules: json!([]), ..Arm::default() }));
    let base = Arc::new(Mutex::new(String::new()));
    let fake = Recorder::start(arm_fake(state.clone(), base.clone())).await;
    *base.lock().expect("base") = fake.url.clone();
    let env = mi_env(&fake.url);
    let t = target(json!({"provider": "appServiceSlots", "settings": {
        "subscriptionId": "sub-1", "resourceGroup": "rg-1", "app": "orders", "slot": "canary", "armEndpoint": fake.url
    }}));
    let router = sluice::ports::traffic::build(&t, &env).expect("adapter");

    assert_eq!(router.set_weight(sluice::domain::ids::Weight::new(20).expect("weight")).await.expect("weight"), 20);
    let seen = fake.seen();
    let patches: Vec<&Recorded> = seen.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 2, "the 429 was retried after Retry-After");
    assert_eq!(
        patches[1].json(),
        json!({"properties": {"experiments": {"rampUpRules": [
            {"name": "canary", "actionHostName": SLOT_HOST, "reroutePercentage": 20.0}
        ]}}})
    );
    assert_eq!(patches[1].header("content-type"), Some("application/json"));
    assert!(seen.iter().any(|r| r.method == "GET" && r.path == format!("{SITE}/config/web")), "read back");

    let since = Utc::now();
    router.promote(since).await.expect("promote");
    router.promote(since).await.expect("a retried promotion");
    {
        let s = state.lock().expect("arm");
        assert_eq!(s.swaps_started, 1, "a retried promotion does not swap twice");
        assert_eq!(s.rules, json!([]), "rules cleared after the swap");
    }
    let swap = fake.seen().into_iter().find(|r| r.path.ends_with("/slotsswap")).expect("swap request");
    assert_eq!((swap.method.as_str(), swap.json()), ("POST", json!({"targetSlot": "production", "preserveVnet": true})));

    // A rollback after the promotion: rules off first, swap back, stop the slot pinned users reach.
    let revert_since = Utc::now();
    let before = fake.seen().len();
    assert_eq!(router.revert(true, revert_since).await.expect("revert"), 0);
    let after: Vec<Recorded> = fake.seen()[before..].to_vec();
    let order: Vec<String> = after
        .iter()
        .filter(|r| r.path != "/msi/token" && r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path.trim_start_matches(SITE)))
        .collect();
    assert_eq!(order, ["PATCH /config/web", "POST /slots/canary/slotsswap", "POST /slots/canary/stop"]);
    router.revert(true, revert_since).await.expect("a retried revert");
    assert_eq!(state.lock().expect("arm").swaps_started, 2, "the swap back is not done twice either");

    // One token for all of it, fetched with the identity header.
    let tokens: Vec<Recorded> = fake.seen().into_iter().filter(|r| r.path == "/msi/token").collect();
    assert_eq!(tokens.len(), 1, "the token is cached");
    assert_eq!(tokens[0].param("resource").as_deref(), Some("https://management.azure.com/"));

    // The host name was read from ARM once, never composed.
    assert_eq!(fake.seen().iter().filter(|r| r.method == "GET" && r.path == format!("{SITE}/slots/canary")).count(), 1);

    // A swap that fails with a 500 after it may have started is not sent again by the
    // client; the retry (the core's, later) first checks whether it happened.
    state.lock().expect("arm").swap_fails = true;
    let swaps = state.lock().expect("arm").swaps_started;
    router.promote(Utc::now()).await.expect_err("the swap failed");
    assert_eq!(state.lock().expect("arm").swaps_started, swaps + 1, "one POST, no blind retry");

    // PATCH config/web as a long-running operation, in both of ARM's forms:
    // the weight is read back only once the operation is done.
    for form in ["location", "async"] {
        state.lock().expect("arm").patch_lro = Some(form);
        let w = sluice::domain::ids::Weight::new(if form == "location" { 30 } else { 40 }).expect("weight");
        assert_eq!(router.set_weight(w).await.unwrap_or_else(|e| panic!("{form}: {e}")), w, "{form}");
        assert_eq!(state.lock().expect("arm").polls, 2, "{form}: polled to completion");
    }
    state.lock().expect("arm").patch_lro = None;

    // A router that does not apply the weight is caught by the read-back.
    state.lock().expect("arm").ignore_patches = true;
    let err = router.set_weight(sluice::domain::ids::Weight::new(50).expect("weight")).await.expect_err("not applied");
    assert!(err.to_string().contains("after setting 50%"), "{err}");
    assert!(!err.to_string().contains("token-for"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_exchanged_at_the_authority() {
    let fake = Recorder::start(|r: &Recorded| {
        if r.path == "/tenant-1/oauth2/v2.0/token" {
            return ok(json!({"access_token": "sp-token", "expires_in": 3600, "token_type": "Bearer"}));
        }
        (404, vec![], String::new())
    })
    .await;
    let env = env_with(BTreeMap::from([
        ("AZURE_TENANT_ID", "tenant-1".to_string()),
        ("AZURE_CLIENT_ID", "client-1".to_string()),
        ("AZURE_CLIENT_SECRET", "sp-secret-value".to_string()),
        ("AZURE_AUTHORITY_HOST", fake.url.clone()),
    ]));
    let cred = env.azure.clone().expect("a credential");
    assert_eq!(cred.token("https://management.azure.com/").await.expect("token"), "sp-token");
    assert_eq!(cred.token("https://management.azure.com/").await.expect("cached"), "sp-token");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let form = sluice::host::definitions::parse_query(&seen[0].body);
    assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(form.get("client_id").map(String::as_str), Some("client-1"));
    assert_eq!(form.get("scope").map(String::as_str), Some("https://management.azure.com/.default"));
    assert_eq!(seen[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(!format!("{cred:?}").contains("sp-secret-value"));
}

fn metric(provider: &str, query: &str, settings: Value, baseline: bool) -> MetricPlan {
    MetricPlan {
        name: "m".into(),
        provider: provider.into(),
        query: query.into(),
        settings: serde_json::from_value(settings).expect("settings"),
        condition: Some(Condition::parse("< 0.05").expect("condition")),
        judge: None,
        consecutive_failure_limit: None,
        max_soak_ms: None,
        until_pass: false,
        interval_ms: 60_000,
        count: Some(1),
        initial_delay_ms: 0,
        failure_limit: 0,
        consecutive_error_limit: 4,
        inconclusive_limit: 0,
        min_samples: None,
        sample_query: None,
        baseline: baseline.then_some(sluice::domain::spec::Baseline { factor: 1.5, slack: 0.0 }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_analytics_and_application_insights_queries() {
    let fake = Recorder::start(|r: &Recorded| {
        if let Some(a) = token_answer(r) {
            return a;
        }
        let query = r.json()["query"].as_str().unwrap_or("").to_string();
        if query.contains("empty") {
            return ok(json!({"tables": [{"name": "PrimaryResult", "columns": [{"name": "rate", "type": "real"}], "rows": []}]}));
        }
        let rate = if query.contains("'canary'") { 0.031 } else { 0.01 };
        ok(json!({"tables": [{"name": "PrimaryResult",
            "columns": [{"name": "rate", "type": "real"}, {"name": "samples", "type": "long"}],
            "rows": [[rate, 1234]]}]}))
    })
    .await;
    let env = mi_env(&fake.url);
    let t = target(json!({"provider": "local", "settings": {"url": "http://127.0.0.1:9"}}));
    let kql = "requests | where cloud_RoleInstance == '{{name}}' and timestamp > ago({{window}}) | summarize rate = countif(success == false) * 1.0 / count(), samples = count()";
    let plan = metric("logAnalytics", kql, json!({"workspaceId": "ws-1", "endpoint": fake.url}), true);
    let outcome = sluice::ports::metrics::measure(&plan, &t, &env, sluice::ports::metrics::Window::of(&plan)).await;
    assert_eq!(outcome, MeasureOutcome::Value { canary: 0.031, stable: Some(0.01), samples: Some(1234) });
    let seen: Vec<Recorded> = fake.seen().into_iter().filter(|r| r.path != "/msi/token").collect();
    assert_eq!(seen.len(), 2, "canary, then the stable baseline");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/v1/workspaces/ws-1/query"));
    assert_eq!(seen[0].header("authorization"), Some("Bearer token-for-api.loganalytics.io"));
    assert_eq!(
        seen[0].json(),
        json!({"query": "requests | where cloud_RoleInstance == 'canary' and timestamp > ago(1m) | summarize rate = countif(success == false) * 1.0 / count(), samples = count()", "timespan": "PT60S"})
    );
    assert!(seen[1].json()["query"].as_str().expect("query").contains("'production'"));

    let app = metric("applicationInsights", "empty | count", json!({"appId": "app-1", "endpoint": fake.url}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&app, &t, &env, sluice::ports::metrics::Window::of(&app)).await,
        MeasureOutcome::NoData,
        "an empty table is no data"
    );
    let last = fake.seen().into_iter().rfind(|r| r.path != "/msi/token").expect("request");
    assert_eq!(last.path, "/v1/apps/app-1/query");
    assert_eq!(last.header("authorization"), Some("Bearer token-for-api.applicationinsights.io"));

    // `sluice replay` asks for a past window: an ISO 8601 `start/end` period.
    let end = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:05:00Z").expect("time").with_timezone(&chrono::Utc);
    let past = sluice::ports::metrics::Window { ms: 300_000, end: Some(end) };
    let _ = sluice::ports::metrics::measure(&app, &t, &env, past).await;
    let last = fake.seen().into_iter().rfind(|r| r.path != "/msi/token").expect("request");
    assert_eq!(last.json()["timespan"], json!("2026-11-30T10:00:00Z/2026-11-30T10:05:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_monitor_metrics_with_a_ratio_and_a_dimension_filter() {
    let fake = Recorder::start(|r: &Recorded| {
        if let Some(a) = token_answer(r) {
            return a;
        }
        let series = |name: &str, points: &[f64]| {
            json!({"name": {"value": name}, "timeseries": [{"data": points.iter().map(|p| json!({"timeStamp": "2026-11-23T10:00:00Z", "total": p})).collect::<Vec<_>>()}]})
        };
        ok(json!({"value": [series("Http5xx", &[3.0, 2.0]), series("Requests", &[100.0, 150.0])]}))
    })
    .await;
    let env = mi_env(&fake.url);
    let t = target(json!({"provider": "local", "settings": {"url": "http://127.0.0.1:9"}}));
    let settings = json!({
        "resourceId": "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/orders/slots/{{name}}",
        "aggregation": "Total", "filter": "Instance eq '*'", "armEndpoint": fake.url
    });
    let plan = metric("azureMonitor", "Http5xx/Requests", settings, false);
    let outcome = sluice::ports::metrics::measure(&plan, &t, &env, sluice::ports::metrics::Window::of(&plan)).await;
    // The stable slot is asked too (its resource differs by `{{name}}`), to be drawn beside the canary; without a baseline it is not judged.
    assert_eq!(outcome, MeasureOutcome::Value { canary: 0.02, stable: Some(0.02), samples: Some(250) });
    let asked: Vec<String> = fake.seen().into_iter().filter(|r| r.path != "/msi/token").map(|r| r.path).collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[1].contains("/sites/orders/slots/production/providers/Microsoft.Insights/metrics"), "{asked:?}");
    let r = fake.seen().into_iter().find(|r| r.path != "/msi/token").expect("request");
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.path,
        "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/orders/slots/canary/providers/Microsoft.Insights/metrics"
    );
    assert_eq!(r.param("api-version").as_deref(), Some("2024-02-01"));
    assert_eq!(r.param("metricnames").as_deref(), Some("Http5xx,Requests"));
    assert_eq!(r.param("aggregation").as_deref(), Some("Total"));
    assert_eq!(r.param("interval").as_deref(), Some("PT1M"));
    assert_eq!(r.param("$filter").as_deref(), Some("Instance eq '*'"));
    let span = r.param("timespan").expect("timespan");
    assert!(span.contains('/') && span.ends_with('Z'), "{span}");
    assert_eq!(r.header("authorization"), Some("Bearer token-for-management.azure.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_probe_reads_status_and_a_json_field() {
    let fake = Recorder::start(|r: &Recorded| match r.path.as_str() {
        "/canary/health" => ok(json!({"checks": {"db": {"healthy": true}}, "load": "0.7"})),
        _ => (503, vec![], "{}".into()),
    })
    .await;
    let env = env_with(BTreeMap::new());
    let t = target(json!({"provider": "local", "settings": {"url": "http://127.0.0.1:9"}}));
    let url = format!("{}/{{{{name}}}}/health", fake.url);
    let status = metric("httpProbe", &url, json!({}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&status, &t, &env, sluice::ports::metrics::Window::of(&status)).await,
        MeasureOutcome::Value { canary: 1.0, stable: Some(0.0), samples: Some(1) },
        "the stable side is probed too (its URL differs by {{name}}): it answers 503 here"
    );
    let field = metric("httpProbe", &url, json!({"jsonField": "checks.db.healthy"}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&field, &t, &env, sluice::ports::metrics::Window::of(&field)).await,
        MeasureOutcome::Value { canary: 1.0, stable: None, samples: Some(1) },
        "the stable side's 503 has no field to read: it is left out, and the measurement stands"
    );
    let number = metric("httpProbe", &url, json!({"jsonField": "load"}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&number, &t, &env, sluice::ports::metrics::Window::of(&number)).await,
        MeasureOutcome::Value { canary: 0.7, stable: None, samples: Some(1) }
    );
    let down = metric("httpProbe", &format!("{}/elsewhere", fake.url), json!({}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&down, &t, &env, sluice::ports::metrics::Window::of(&down)).await,
        MeasureOutcome::Value { canary: 0.0, stable: None, samples: Some(1) }
    );
    let unreachable = metric("httpProbe", "http://127.0.0.1:9/health", json!({"timeoutMs": 500}), false);
    assert_eq!(
        sluice::ports::metrics::measure(&unreachable, &t, &env, sluice::ports::metrics::Window::of(&unreachable)).await,
        MeasureOutcome::Value { canary: 0.0, stable: None, samples: Some(1) }
    );
    assert_eq!(fake.seen()[0].path, "/canary/health", "{{name}} is the canary's identity");
}

/// A preview's smoke check: the probe carries the router's header and
/// looks for text in the body; a peer that hangs, or answers more than
/// Sluice reads, is a failed attempt within the check's timeout, never a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_check_probe_carries_the_preview_header_and_fails_on_a_peer_that_hangs_or_floods() {
    let fake = Recorder::start(|r: &Recorded| match (r.path.as_str(), r.header("x-sluice-preview")) {
        ("/orders", Some("canary")) => ok(json!({"version": "v2"})),
        ("/orders", _) => ok(json!({"version": "v1"})),
        _ => (200, vec![], "x".repeat(9 << 20)),
    })
    .await;
    let env = env_with(BTreeMap::new());
    let t = target(json!({"provider": "local", "settings": {"url": "http://127.0.0.1:9"}}));
    let canary = |m: &MetricPlan| {
        let m = m.clone();
        let (t, env) = (t.clone(), env.clone());
        async move {
            match sluice::ports::metrics::measure(&m, &t, &env, sluice::ports::metrics::Window::of(&m)).await {
                MeasureOutcome::Value { canary, .. } => canary,
                other => panic!("{other:?}"),
            }
        }
    };
    let header = json!({"x-sluice-preview": "canary"});
    let v2 = json!({"bodyContains": "\"version\":\"v2\"", "timeoutMs": 2000, "sluicePreviewHeaders": header});
    let smoke = metric("httpProbe", &format!("{}/orders", fake.url), v2.clone(), false);
    assert_eq!(canary(&smoke).await, 1.0, "the header reaches v2");
    assert_eq!(fake.seen()[0].header("x-sluice-preview"), Some("canary"));
    let without = metric("httpProbe", &format!("{}/orders", fake.url), json!({"bodyContains": "\"version\":\"v2\""}), false);
    assert_eq!(canary(&without).await, 0.0, "without it a user's answer is v1's");
    let flood = metric("httpProbe", &format!("{}/flood", fake.url), v2.clone(), false);
    assert_eq!(canary(&flood).await, 0.0, "9 MiB is more than a probe reads");

    let hanging = common::silent_peer().await;
    let mut quick = v2;
    quick["timeoutMs"] = json!(300);
    let stuck = metric("httpProbe", &format!("{hanging}/orders"), quick, false);
    let began = std::time::Instant::now();
    assert_eq!(canary(&stuck).await, 0.0);
    assert!(began.elapsed() < std::time::Duration::from_secs(3), "the timeout holds: {:?}", began.elapsed());
}

#[test]
fn azure_providers_without_an_identity_say_what_to_set() {
    let env = env_with(BTreeMap::new());
    let t =
        target(json!({"provider": "appServiceSlots", "settings": {"subscriptionId": "s", "resourceGroup": "g", "app": "a", "slot": "c"}}));
    let err = sluice::ports::traffic::build(&t, &env).err().expect("no identity").to_string();
    assert!(err.contains("no Azure identity") && err.contains("IDENTITY_ENDPOINT"), "{err}");
    let t = target(json!({"provider": "appServiceSlots", "settings": {"subscriptionId": "s"}}));
    let err = sluice::ports::traffic::build(&t, &env).err().expect("missing settings").to_string();
    assert!(err.contains("'resourceGroup' is required"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_operation_that_points_elsewhere_gets_no_credential() {
    use sluice::ports::azure::http::{Auth, AzureHttp};
    let elsewhere = Recorder::start(|_| (200, vec![], "{}".into())).await;
    let to = elsewhere.url.clone();
    // An API that answers a 202 whose Location (or Azure-AsyncOperation) is another host.
    let api = Recorder::start(move |r| {
        let header = if r.path.ends_with("/async") { "azure-asyncoperation" } else { "location" };
        (202, vec![(header.into(), format!("{to}/operations/1")), ("retry-after".into(), "0".into())], String::new())
    })
    .await;
    let client = AzureHttp::with_auth(reqwest::Client::new(), Auth::Bearer("cluster-token".into()), &api.url);
    for path in ["/sync", "/async"] {
        let url = format!("{}{path}", api.url);
        let err = client.long_running(reqwest::Method::POST, &url, None, std::time::Duration::from_secs(5)).await.expect_err("refused");
        assert!(err.to_string().contains("refused to send the credential"), "{err}");
    }
    assert_eq!(api.seen().len(), 2);
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_stored_before_the_rules_changed_is_refused_when_built() {
    // A rollout saved under rules that allowed loopback, driven by a deployment that does not:
    // building its router fails naming the field, so no call carries the token.
    let fake = Recorder::start(|_| ok(json!({}))).await;
    let strict = AdapterEnv::with_settings(
        std::env::temp_dir(),
        "http://sluice.test".into(),
        Arc::new(|k: &str| (k == "SLUICE_AZURE_TOKEN").then(|| "arm-token".to_string())),
    );
    let t = target(json!({"provider": "appServiceSlots", "settings": {
        "subscriptionId": "sub-1", "resourceGroup": "rg-1", "app": "orders", "slot": "canary", "armEndpoint": fake.url}}));
    let err = sluice::ports::traffic::build(&t, &strict).err().expect("refused").to_string();
    assert!(err.starts_with("appServiceSlots settings: armEndpoint: http://127.0.0.1:"), "{err}");
    let metric = serde_json::from_value(json!({"workspaceId": "ws-1", "endpoint": fake.url})).expect("settings");
    let err = sluice::ports::metrics::build("logAnalytics", &metric, &t, &strict).err().expect("refused").to_string();
    assert!(err.contains("endpoint: ") && err.contains("not HTTPS"), "{err}");
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_with_a_credential() {
    let elsewhere = Recorder::start(|_| ok(json!({}))).await;
    let to = elsewhere.url.clone();
    // A GitHub Enterprise that answers every call with a redirect to another host.
    let redirector = Recorder::start(move |r| (307, vec![("location".into(), format!("{to}{}", r.path))], String::new())).await;
    let env = env_with(BTreeMap::from([("GITHUB_TOKEN", "gh-token".to_string())]));
    let settings = serde_json::from_value(json!({"repository": "o/r", "apiUrl": redirector.url})).expect("settings");
    let backlog = sluice::ports::backlog::build("github", &settings, &env).expect("backlog");
    let draft = bare_draft();
    let err = backlog.open(&draft).await.expect_err("a redirect is an answer, not a success").to_string();
    assert!(err.contains("307"), "{err}");
    assert!(!redirector.seen().is_empty());
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

/// A peer that answers 200 and then sends body forever (64 KiB chunks until
/// the client hangs up, at most 1 GiB); it counts the bytes it got rid of.
async fn endless() -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, " ".repeat(65536));
                for _ in 0..16_384 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    counter.fetch_add(65536, Ordering::SeqCst);
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_ends_is_cut_off_by_every_adapter_family() {
    let (url, sent) = endless().await;
    let env = env_with(BTreeMap::from([("SLUICE_AZURE_TOKEN", "t".to_string()), ("GITHUB_TOKEN", "g".to_string())]));
    let t = target(json!({"provider": "local", "settings": {"url": url}}));
    let too_long = |e: &str| e.contains("longer than 8 MiB");
    // Metrics: Prometheus, Log Analytics (an Azure API), the local router's counters.
    for (provider, settings) in [
        ("prometheus", json!({"url": url})),
        ("logAnalytics", json!({"workspaceId": "ws", "endpoint": url})),
        ("local", json!({"url": url})),
    ] {
        let settings = serde_json::from_value(settings).expect("settings");
        let p = sluice::ports::metrics::build(provider, &settings, &t, &env).expect("provider");
        let err = p.query(&canary_up(&t)).await.expect_err(provider).to_string();
        assert!(too_long(&err), "{provider}: {err}");
    }
    // Traffic: the local router; an ARM router.
    let router = sluice::ports::traffic::build(&t, &env).expect("router");
    let err = router.current().await.expect_err("local router").to_string();
    assert!(too_long(&err), "local router: {err}");
    let arm = target(json!({"provider": "frontDoor", "settings": {"subscriptionId": "s", "resourceGroup": "g", "profile": "p",
        "originGroup": "o", "stableOrigin": "a", "canaryOrigin": "b", "armEndpoint": url}}));
    let err = sluice::ports::traffic::build(&arm, &env).expect("router").current().await.expect_err("front door").to_string();
    assert!(too_long(&err), "front door: {err}");
    // Backlog: GitHub.
    let settings = serde_json::from_value(json!({"repository": "o/r", "apiUrl": url})).expect("settings");
    let backlog = sluice::ports::backlog::build("github", &settings, &env).expect("backlog");
    let draft = bare_draft();
    let err = backlog.open(&draft).await.expect_err("github").to_string();
    assert!(too_long(&err), "github: {err}");
    // Channels read an answer only to quote it in an error: they stop reading too.
    let env = env_with(BTreeMap::from([("WEBHOOK_URL", format!("{url}/hook"))]));
    let before = sent.load(std::sync::atomic::Ordering::SeqCst);
    let settings = serde_json::from_value(json!({"urlSetting": "WEBHOOK_URL"})).expect("settings");
    let channel = sluice::ports::notify::build("webhook", &settings, &env).expect("channel");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), channel.send(&note())).await.expect("the channel gave up");
    let read = sent.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(read < 32 << 20, "the channel read {} MiB of an endless answer", read >> 20);
}

/// The Azure SDK clients (Table Storage, Service Bus) run on Sluice's
/// transport: a peer that never answers fails their call within the
/// client's timeout, and an endless answer is cut off at 8 MiB, not
/// buffered whole (azure_core's own transport does neither).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_sdk_clients_give_up_on_a_silent_peer_and_cut_off_an_endless_one() {
    use sluice::ports::azure::transport::BoundedTransport;
    use sluice::ports::queue::servicebus::{ServiceBusConnection, ServiceBusQueue};
    use sluice::ports::queue::Queue as _;
    use sluice::ports::store::table::{TableConnection, TableStore};
    let short = || reqwest::Client::builder().timeout(std::time::Duration::from_secs(1)).build().expect("client");
    let bound = std::time::Duration::from_secs(30);
    let (endless_url, sent) = endless().await;
    for (peer, cut) in [(common::silent_peer().await, false), (endless_url, true)] {
        let key = sluice::devtools::azurite::DEV_KEY;
        let conn =
            format!("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};TableEndpoint={peer}/devstoreaccount1;");
        let conn = TableConnection::parse(&conn).expect("connection");
        // Creating its tables is the store's first call.
        let table = tokio::time::timeout(bound, TableStore::connect_over(&conn, "bounded", BoundedTransport::with_client(short())))
            .await
            .expect("Table Storage gave up in time");
        let err = table.err().expect("no table store over a peer that does not answer").to_string();
        assert!(!cut || err.contains("longer than 8 MiB"), "table: {err}");
        let addr: std::net::SocketAddr = peer.trim_start_matches("http://").parse().expect("addr");
        let conn = ServiceBusConnection::parse(&common::servicebus_fake::sas_connection_string()).expect("conn");
        let transport = common::servicebus_fake::redirecting(addr, BoundedTransport::with_client(short()));
        let queue = ServiceBusQueue::new(&conn, "rollout-steps", transport, std::time::Duration::from_secs(30)).expect("queue");
        let received =
            tokio::time::timeout(bound, queue.receive(std::time::Duration::from_secs(30))).await.expect("Service Bus gave up in time");
        let err = received.expect_err("nothing received from a peer that does not answer").to_string();
        assert!(!cut || err.contains("longer than 8 MiB"), "service bus: {err}");
    }
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst) < 64 << 20, "the SDK clients read on past the cap");
}

fn bare_draft() -> sluice::ports::backlog::IssueDraft {
    sluice::ports::backlog::IssueDraft {
        rollout_id: "r-1".into(),
        title: "title".into(),
        body: sluice::ports::backlog::doc::Doc::default(),
        labels: Vec::new(),
        not_before: Utc::now(),
        rollout_failure: true,
    }
}

/// The canary's `up` over the last minute: any query will do against a peer that misbehaves.
fn canary_up(target: &Target) -> sluice::ports::metrics::MetricQuery<'_> {
    sluice::ports::metrics::MetricQuery {
        query: "up".into(),
        side: sluice::ports::metrics::Side::Canary,
        target,
        window_ms: 60_000,
        end: None,
    }
}

/// A notification to send.
fn note() -> sluice::ports::notify::Notification {
    sluice::ports::notify::Notification {
        kind: sluice::domain::rollout::NotifyKind::Started,
        rollout_id: "r-1".into(),
        target: "orders".into(),
        stable_version: "v1".into(),
        canary_version: "v2".into(),
        phase: sluice::domain::rollout::Phase::Progressing,
        stage: 0,
        title: "t".into(),
        text: "t".into(),
        facts: Vec::new(),
        links: Vec::new(),
        commands: Vec::new(),
        at: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_fails_every_adapter_family_in_bounded_time() {
    use futures::future::BoxFuture;
    use futures::FutureExt as _;
    let url = common::silent_peer().await;
    let mut env = env_with(BTreeMap::from([
        ("SLUICE_AZURE_TOKEN", "t".to_string()),
        ("GITHUB_TOKEN", "g".to_string()),
        ("AZURE_DEVOPS_PAT", "p".to_string()),
        ("WEBHOOK_URL", format!("{url}/hook")),
    ]));
    // Every adapter must use the environment's client (bounded in time), never one of its own:
    // with a 1 s client, each call fails (after the adapter's own retries) within the outer
    // 30 s, or the test fails naming the adapter that hung. The calls run side by side.
    env.http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let t = target(json!({"provider": "local", "settings": {"url": url}}));
    let settings = |v: Value| -> sluice::ports::env::Settings { serde_json::from_value(v).expect("settings") };
    let mut calls: Vec<(&str, BoxFuture<'static, ()>)> = Vec::new();
    for (provider, given) in [
        ("prometheus", json!({"url": url})),
        ("logAnalytics", json!({"workspaceId": "ws", "endpoint": url})),
        ("azureMonitor", json!({"resourceId": "/subscriptions/s/r", "armEndpoint": url})),
        ("local", json!({"url": url})),
    ] {
        let p = sluice::ports::metrics::build(provider, &settings(given), &t, &env).expect("provider");
        let t = t.clone();
        calls.push((
            provider,
            async move {
                let _ = p.query(&canary_up(&t)).await;
            }
            .boxed(),
        ));
    }
    for (provider, router) in [
        ("local router", json!({"provider": "local", "settings": {"url": url}})),
        (
            "frontDoor",
            json!({"provider": "frontDoor", "settings": {"subscriptionId": "s", "resourceGroup": "g", "profile": "p", "originGroup": "o",
                "stableOrigin": "a", "canaryOrigin": "b", "armEndpoint": url}}),
        ),
        (
            "gatewayApi",
            json!({"provider": "gatewayApi", "settings": {"apiServer": url, "namespace": "n", "route": "r", "stableService": "a",
                "canaryService": "b"}}),
        ),
        ("appConfigFlag", json!({"provider": "appConfigFlag", "settings": {"endpoint": url, "flag": "f"}})),
    ] {
        let r = sluice::ports::traffic::build(&target(router), &env).expect("router");
        calls.push((
            provider,
            async move {
                let _ = r.current().await;
            }
            .boxed(),
        ));
    }
    for (provider, given) in [
        ("github", json!({"repository": "o/r", "apiUrl": url})),
        ("azureDevOps", json!({"organization": "o", "project": "p", "orgUrl": url})),
    ] {
        let b = sluice::ports::backlog::build(provider, &settings(given), &env).expect("backlog");
        calls.push((
            provider,
            async move {
                let _ = b.open(&bare_draft()).await;
            }
            .boxed(),
        ));
    }
    let note = note();
    for (provider, given) in
        [("webhook", json!({"urlSetting": "WEBHOOK_URL"})), ("githubDeployments", json!({"repository": "o/r", "apiUrl": url}))]
    {
        let n = sluice::ports::notify::build(provider, &settings(given), &env).expect("channel");
        let note = note.clone();
        calls.push((
            provider,
            async move {
                let _ = n.send(&note).await;
            }
            .boxed(),
        ));
    }
    let bound = std::time::Duration::from_secs(30);
    let checks = calls.into_iter().map(|(name, call)| async move { (name, tokio::time::timeout(bound, call).await.is_ok()) });
    let hung: Vec<&str> = futures::future::join_all(checks).await.into_iter().filter(|(_, done)| !done).map(|(n, _)| n).collect();
    assert!(hung.is_empty(), "hung: {hung:?}");
}
