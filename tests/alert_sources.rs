//! Every alert payload variant Sluice accepts, from documented shapes:
//! Azure Monitor's Common Alert Schema (static, dynamic and availability
//! metric alerts, Log Alerts V2, the older PascalCase log alert, activity
//! log, resolved, and an unknown variant) and Alertmanager's grouped
//! webhook — parsed, mapped to rollouts by the documented rules, and
//! answered 202 through the webhook with every alert recorded.

use crate::common;

use std::path::Path;

use serde_json::{json, Value};

use common::*;
use sluice::ports::alerts::{self, IncomingAlert, Payload};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alerts").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn all(body: &Value) -> Vec<IncomingAlert> {
    match alerts::parse(body) {
        Ok(Payload::Alerts(a)) => a,
        other => panic!("expected alerts: {other:?}"),
    }
}

fn one(name: &str) -> IncomingAlert {
    let mut parsed = all(&fixture(name));
    assert_eq!(parsed.len(), 1);
    parsed.remove(0)
}

#[test]
fn azure_monitor_variants_parse_into_one_shape() {
    let a = one("azure-metric-static-fired.json");
    assert!(a.firing && a.recognised);
    assert_eq!((a.rule.as_str(), a.severity.as_str(), a.source), ("orders-canary-5xx", "Sev1", "Azure Monitor"));
    assert_eq!(a.summary, "5xx on the canary slot (Total Http5xx GreaterThan 10, value 37.0)");
    assert_eq!(a.target_ids, ["/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/orders-prod/providers/microsoft.web/sites/orders-api/slots/canary"]);
    assert_eq!(a.fired_at.map(|t| t.to_rfc3339()), Some("2026-11-23T10:07:08.396203400+00:00".into()));

    let d = one("azure-metric-dynamic-fired.json");
    assert_eq!(d.summary, "Average HttpResponseTime GreaterThan 0.41, value 1.37");
    assert_eq!(d.labels.get("sluiceTarget").map(String::as_str), Some("orders-api"), "custom properties become labels");
    assert_eq!(d.labels.get("Instance").map(String::as_str), Some("canary-0"), "dimensions too");

    let w = one("azure-availability-fired.json");
    assert_eq!(w.summary, "orders-ping: 5 failed locations (threshold 2)");

    let l = one("azure-log-v2-fired.json");
    assert!(
        l.summary.starts_with("log query result 42 GreaterThan 5: exceptions | where cloud_RoleName == 'orders-api' | summarize count()"),
        "{}",
        l.summary
    );
    assert_eq!(l.link.as_deref(), Some("https://portal.azure.com#@tenant/blade/Logs/filtered"));

    let old = one("azure-log-legacy-fired.json");
    assert_eq!(old.summary, "log query returned 12 rows (Greater Than 5): AppRequests | where Success == false | count");
    assert_eq!(old.link.as_deref(), Some("https://portal.azure.com#@tenant/blade/legacy-filtered"));

    let act = one("azure-activity-log-fired.json");
    assert_eq!(act.summary, "activity Microsoft.Web/sites/slots/restart/action Succeeded by ops@contoso.com");

    let r = one("azure-metric-resolved.json");
    assert!(!r.firing);
    assert_eq!(r.id, a.id, "resolved names the same alert");

    let u = one("azure-unknown-context.json");
    assert!(u.firing && !u.recognised, "an unknown context is read, marked, and summarised from the essentials (never acted on)");
    assert_eq!(u.summary, "Failure anomalies");
}

#[test]
fn alertmanager_groups_parse_one_alert_each() {
    let all = all(&fixture("alertmanager-grouped.json"));
    assert_eq!(all.len(), 3);
    assert!(all[0].firing && !all[1].firing && all[2].firing);
    assert_eq!((all[0].id.as_str(), all[0].rule.as_str(), all[0].severity.as_str()), ("a1b2c3d4e5f60718", "CanaryErrorRatio", "critical"));
    assert_eq!(all[0].summary, "canary 5xx ratio 0.31 above 5%");
    assert_eq!(all[1].summary, "older canary recovered", "description when there is no summary");
    assert_eq!(all[2].summary, "CanaryErrorRatio", "the rule name when there is neither");
    assert_eq!(all[0].link.as_deref(), Some("http://prometheus:9090/graph?g0.expr=x"));
    assert_eq!(all[0].labels.get("sluice_target").map(String::as_str), Some("orders-api"));
    assert_eq!(all[0].fired_at.map(|t| t.to_rfc3339()), Some("2026-11-23T10:07:01.123+00:00".into()));
}

#[test]
fn bad_fields_are_refused_by_name_and_unknown_variants_are_only_recorded() {
    let e = alerts::parse(&json!({"hello": "world"})).expect_err("unknown");
    assert!(e.field == "body" && e.message.contains("not a payload Sluice knows"), "{e}");
    assert!(matches!(alerts::parse(&json!({"schemaId": "other", "data": {}})), Ok(Payload::Unknown { source: "Azure Monitor", .. })));
    assert!(matches!(alerts::parse(&json!({"version": "3", "alerts": []})), Ok(Payload::Unknown { source: "Alertmanager", .. })));
    // A known field with the wrong type or value is refused, naming the field.
    let cases = [
        ("/data/essentials/monitorCondition", json!("Maybe"), "data.essentials.monitorCondition"),
        ("/data/essentials/monitorCondition", json!(42), "data.essentials.monitorCondition"),
        ("/data/essentials/alertId", json!(7), "data.essentials.alertId"),
        ("/data/essentials/alertTargetIDs", json!("not-a-list"), "data.essentials.alertTargetIDs"),
        ("/data/essentials/configurationItems", json!([1, 2]), "data.essentials.configurationItems[0]"),
        ("/data/customProperties", json!("x"), "data.customProperties"),
    ];
    for (pointer, value, field) in cases {
        let mut bad = fixture("azure-metric-static-fired.json");
        *bad.pointer_mut(pointer).expect("field exists") = value.clone();
        let e = alerts::parse(&bad).expect_err(pointer);
        assert_eq!(e.field, field, "{pointer} = {value}: {e}");
    }
    let mut bad = fixture("alertmanager-grouped.json");
    bad["alerts"][1]["status"] = json!(true);
    assert_eq!(alerts::parse(&bad).expect_err("status").field, "alerts[1].status");
    bad = fixture("alertmanager-grouped.json");
    bad["alerts"][0]["labels"]["severity"] = json!(3);
    assert_eq!(alerts::parse(&bad).expect_err("label").field, "alerts[0].labels.severity");
}

fn rollout(resource_ids: Value) -> sluice::domain::rollout::Rollout {
    let mut doc = spec_for("http://127.0.0.1:9", json!([{"setWeight": 10}]));
    doc["target"]["resourceIds"] = resource_ids;
    let (spec, plan) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).expect("valid");
    let id = sluice::domain::ids::RolloutId::parse("orders-api-20261123-100000-abcdef").expect("id");
    sluice::domain::rollout::Rollout::new(id, spec, plan, sluice::domain::ids::Actor::parse("ci").expect("actor"), chrono::Utc::now()).0
}

#[test]
fn the_documented_mapping_rules() {
    let app =
        json!(["/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/Orders-Prod/providers/Microsoft.Web/sites/orders-api"]);
    let r = rollout(app.clone());
    // A slot lies below its app; Azure lower-cases ids, the spec need not.
    assert!(alerts::match_reason(&one("azure-metric-static-fired.json"), &r).expect("matches").starts_with("resource"));
    // A custom property naming the target.
    let unrelated = rollout(json!([]));
    assert_eq!(alerts::match_reason(&one("azure-metric-dynamic-fired.json"), &unrelated).as_deref(), Some("target label"));
    // A configuration item equal to the target name (or an id's last segment).
    assert!(alerts::match_reason(&one("azure-log-legacy-fired.json"), &unrelated).expect("matches").starts_with("configuration item"));
    // Another app's alert does not match.
    assert_eq!(alerts::match_reason(&one("azure-availability-fired.json"), &unrelated), None);
    // Alertmanager: a label naming the target, or the rollout itself; other services never.
    let am = all(&fixture("alertmanager-grouped.json"));
    assert_eq!(alerts::match_reason(&am[0], &unrelated).as_deref(), Some("target label"));
    assert_eq!(alerts::match_reason(&am[1], &unrelated).as_deref(), Some("rollout label"));
    assert_eq!(alerts::match_reason(&am[2], &unrelated), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_variant_is_answered_202_and_recorded() {
    let rig = Rig::start().await;
    let monitor = rig.as_user("azure-monitor");
    let names = [
        "azure-metric-static-fired.json",
        "azure-metric-dynamic-fired.json",
        "azure-availability-fired.json",
        "azure-log-v2-fired.json",
        "azure-log-legacy-fired.json",
        "azure-activity-log-fired.json",
        "azure-metric-resolved.json",
        "azure-unknown-context.json",
        "alertmanager-grouped.json",
    ];
    for name in names {
        let answer = monitor.alert(&fixture(name), Some(TOKEN)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(answer["accepted"].as_u64().expect("count") >= 1, "{name}: {answer}");
        if name == "azure-unknown-context.json" {
            assert_eq!(answer["alerts"][0]["recognised"], false);
        }
    }
    let recorded = rig.host.app.engine.store.alerts(100).await.expect("alerts");
    assert_eq!(recorded.len(), names.len() - 1 + 3, "every alert recorded, matched or not");
    assert!(recorded.iter().all(|a| a.matched.is_empty()), "no rollout is active");
}

mod index_keys {
    use super::*;
    use proptest::prelude::*;
    use sluice::domain::alert_keys::alert_lookup_keys;

    fn resource() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["s1", "S1", "s2"]),
            prop::sample::select(vec!["rg", "RG", "rg2"]),
            prop::sample::select(vec!["c1", "C1", "c2", "orders-api"]),
        )
            .prop_map(|(s, g, c)| format!("/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Web/sites/{c}"))
    }

    fn alert_target() -> impl Strategy<Value = String> {
        (resource(), prop::sample::select(vec!["", "/slots/canary", "/", "-2", "/slots/canary/"]))
            .prop_map(|(r, tail)| format!("{r}{tail}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The store finds an alert's rollouts through the keys; the keys must
        /// meet exactly when the resource-id or configuration-item rule holds.
        #[test]
        fn keys_meet_exactly_when_a_mapping_rule_holds(
            ids in prop::collection::vec(resource(), 0..3),
            targets in prop::collection::vec(alert_target(), 0..3),
            items in prop::collection::vec(prop::sample::select(vec!["orders-api", "ORDERS-API", "c1", "C2", "other"]), 0..3),
        ) {
            let r = rollout(json!(ids));
            let alert = IncomingAlert {
                source: "Azure Monitor",
                id: "a".into(),
                rule: "r".into(),
                severity: "Sev1".into(),
                firing: true,
                summary: String::new(),
                fired_at: None,
                link: None,
                target_ids: targets.clone(),
                configuration_items: items.iter().map(|s| s.to_string()).collect(),
                labels: Default::default(),
                recognised: true,
            };
            let filed = r.alert_keys();
            let looked_up = alert_lookup_keys(&alert.target_ids, &alert.configuration_items);
            let meet = looked_up.iter().any(|k| filed.contains(k));
            prop_assert_eq!(meet, alerts::match_reason(&alert, &r).is_some(), "filed {:?}, looked up {:?}", filed, looked_up);
        }
    }
}
