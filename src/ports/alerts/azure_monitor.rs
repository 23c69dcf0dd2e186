//! Azure Monitor's Common Alert Schema: metric alerts (static, dynamic,
//! availability test), Log Alerts V2, the older PascalCase log alert
//! context, and activity-log alerts; Fired and Resolved. The essentials are
//! typed (a wrong field is refused by its path); an `alertContext` of a
//! variant Sluice does not know yields an alert marked not recognised, which
//! is recorded and answered but never acted on.
//!
//! Source: Microsoft Learn, "Common alert schema"
//! (azure-monitor/alerts/alerts-common-schema): `schemaId`
//! `azureMonitorCommonAlertSchema`, `data.essentials` (alertId, alertRule,
//! severity, signalType, monitorCondition Fired|Resolved, alertTargetIDs,
//! configurationItems, firedDateTime, description), `data.alertContext`
//! by signal type, `data.customProperties`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{scalar_text, str_at, typed, IncomingAlert, Payload, PayloadError};

/// The Common Alert Schema's id.
pub const SCHEMA_ID: &str = "azureMonitorCommonAlertSchema";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum MonitorCondition {
    Fired,
    Resolved,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Essentials {
    alert_id: String,
    #[serde(default)]
    alert_rule: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    signal_type: Option<String>,
    #[serde(default)]
    monitor_condition: Option<MonitorCondition>,
    #[serde(rename = "alertTargetIDs", default)]
    alert_target_ids: Option<Vec<String>>,
    #[serde(default)]
    configuration_items: Option<Vec<String>>,
    #[serde(default)]
    fired_date_time: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Parses one Common Alert Schema payload.
pub fn parse(body: &Value) -> Result<Payload, PayloadError> {
    match body.get("schemaId") {
        Some(Value::String(schema)) if schema != SCHEMA_ID => {
            return Ok(Payload::Unknown {
                source: "Azure Monitor",
                what: format!("an alert of schema '{}' (Sluice reads {SCHEMA_ID})", crate::domain::ids::shown(schema)),
            });
        }
        Some(Value::String(_)) | None => {}
        Some(other) => {
            return Err(PayloadError {
                field: "schemaId".into(),
                message: format!("expected a string, found {}", crate::domain::parse::json_kind(other)),
            })
        }
    }
    let data = match body.get("data") {
        Some(Value::Object(d)) => d,
        Some(other) => {
            return Err(PayloadError {
                field: "data".into(),
                message: format!("expected an object, found {}", crate::domain::parse::json_kind(other)),
            })
        }
        None => return Err(PayloadError { field: "data".into(), message: "required object is missing".into() }),
    };
    let e: Essentials = typed(data.get("essentials").unwrap_or(&Value::Null), "data.essentials")?;
    let custom: Option<Map<String, Value>> = typed(data.get("customProperties").unwrap_or(&Value::Null), "data.customProperties")?;
    let rule = e.alert_rule.unwrap_or_else(|| "(unnamed rule)".to_string());
    let firing = e.monitor_condition.unwrap_or(MonitorCondition::Fired) == MonitorCondition::Fired;
    let context = data.get("alertContext").cloned().unwrap_or(Value::Null);
    let (detail, link, recognised) = describe_context(e.signal_type.as_deref().unwrap_or(""), &context);
    let description = e.description.filter(|d| !d.is_empty());
    let summary = match (description, detail) {
        (Some(d), Some(x)) => format!("{d} ({x})"),
        (Some(d), None) => d,
        (None, Some(x)) => x,
        (None, None) => rule.clone(),
    };
    let mut labels = BTreeMap::new();
    for (k, v) in custom.unwrap_or_default() {
        if let Some(text) = scalar_text(&v) {
            labels.insert(k, text);
        }
    }
    // Log Alerts V2 carry the rule's custom properties in the context.
    if let Some(props) = context.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            if let Some(text) = scalar_text(v) {
                labels.entry(k.clone()).or_insert(text);
            }
        }
    }
    let criteria = context.pointer("/condition/allOf").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for d in criteria.iter().filter_map(|c| c.get("dimensions").and_then(Value::as_array)).flatten() {
        if let (Some(n), Some(v)) = (str_at(d, "/name"), str_at(d, "/value")) {
            labels.entry(n.to_string()).or_insert_with(|| v.to_string());
        }
    }
    Ok(Payload::Alerts(vec![IncomingAlert {
        source: "Azure Monitor",
        id: e.alert_id,
        rule,
        severity: e.severity.unwrap_or_default(),
        firing,
        summary,
        fired_at: e.fired_date_time.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&chrono::Utc)),
        link,
        target_ids: e.alert_target_ids.unwrap_or_default().into_iter().map(|s| s.to_ascii_lowercase()).collect(),
        configuration_items: e.configuration_items.unwrap_or_default(),
        labels,
        recognised,
    }]))
}

fn number_text(v: Option<&Value>) -> Option<String> {
    v.and_then(scalar_text)
}

/// A one-line description of the condition, a link, and whether the context was recognised.
fn describe_context(signal: &str, ctx: &Value) -> (Option<String>, Option<String>, bool) {
    let condition_type = str_at(ctx, "/conditionType").unwrap_or("");
    match condition_type {
        "SingleResourceMultipleMetricCriteria" | "MultipleResourceMultipleMetricCriteria" | "DynamicThresholdCriteria" => {
            let c = ctx.pointer("/condition/allOf/0").cloned().unwrap_or(Value::Null);
            let metric = str_at(&c, "/metricName").unwrap_or("metric");
            let op = str_at(&c, "/operator").unwrap_or("");
            let threshold = number_text(c.get("threshold")).unwrap_or_else(|| "dynamic threshold".into());
            let value = number_text(c.get("metricValue")).map(|v| format!(", value {v}")).unwrap_or_default();
            let aggregation = str_at(&c, "/timeAggregation").map(|a| format!("{a} ")).unwrap_or_default();
            (Some(format!("{aggregation}{metric} {op} {threshold}{value}")), None, true)
        }
        "WebtestLocationAvailabilityCriteria" => {
            let c = ctx.pointer("/condition/allOf/0").cloned().unwrap_or(Value::Null);
            let failed = number_text(c.get("metricValue")).unwrap_or_else(|| "?".into());
            let threshold = number_text(c.get("threshold")).unwrap_or_else(|| "?".into());
            let test = str_at(&c, "/webTestName").unwrap_or("availability test");
            (Some(format!("{test}: {failed} failed locations (threshold {threshold})")), None, true)
        }
        "LogQueryCriteria" => {
            let c = ctx.pointer("/condition/allOf/0").cloned().unwrap_or(Value::Null);
            let query = str_at(&c, "/searchQuery").unwrap_or("");
            let op = str_at(&c, "/operator").unwrap_or("");
            let threshold = number_text(c.get("threshold")).unwrap_or_default();
            let value = number_text(c.get("metricValue")).unwrap_or_else(|| "?".into());
            let link = str_at(&c, "/linkToFilteredSearchResultsUI").or_else(|| str_at(&c, "/linkToSearchResultsUI")).map(str::to_string);
            (Some(format!("log query result {value} {op} {threshold}: {}", shorten(query, 120))), link, true)
        }
        _ if ctx.get("SearchQuery").is_some() || ctx.get("AlertType").is_some() => {
            // Log alerts before V2 use PascalCase fields.
            let query = str_at(ctx, "/SearchQuery").unwrap_or("");
            let count = number_text(ctx.get("ResultCount")).unwrap_or_else(|| "?".into());
            let op = str_at(ctx, "/Operator").unwrap_or("");
            let threshold = number_text(ctx.get("Threshold")).unwrap_or_default();
            let link = str_at(ctx, "/LinkToFilteredSearchResultsUI").or_else(|| str_at(ctx, "/LinkToSearchResults")).map(str::to_string);
            (Some(format!("log query returned {count} rows ({op} {threshold}): {}", shorten(query, 120))), link, true)
        }
        _ if signal == "Activity Log" || ctx.get("operationName").is_some() => {
            let op = str_at(ctx, "/operationName").unwrap_or("operation");
            let status = str_at(ctx, "/status").unwrap_or("");
            let caller = str_at(ctx, "/caller").map(|c| format!(" by {c}")).unwrap_or_default();
            (Some(format!("activity {op} {status}{caller}").trim().to_string()), None, true)
        }
        _ => (None, None, false),
    }
}

/// On one line, in at most `max` characters.
fn shorten(s: &str, max: usize) -> String {
    crate::domain::bounded::clip(&s.split_whitespace().collect::<Vec<_>>().join(" "), max)
}
