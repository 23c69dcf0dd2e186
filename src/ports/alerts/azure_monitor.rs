//! Azure Monitor's Common Alert Schema: metric alerts (static, dynamic,
//! availability test), Log Alerts V2, the older PascalCase log alert
//! context, and activity-log alerts; Fired and Resolved. An unknown
//! `alertContext` still yields an alert (from the essentials), marked as not
//! fully recognised, so it is recorded and answered, never refused.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{scalar_text, str_at, strings, time_at, IncomingAlert};

/// Parses one Common Alert Schema payload.
pub fn parse(body: &Value) -> Result<IncomingAlert, String> {
    if let Some(schema) = body.get("schemaId").and_then(Value::as_str) {
        if schema != "azureMonitorCommonAlertSchema" {
            return Err(format!("schemaId: '{schema}' is not azureMonitorCommonAlertSchema"));
        }
    }
    let e = body.pointer("/data/essentials").filter(|e| e.is_object()).ok_or("data.essentials: required object is missing")?;
    let id = str_at(e, "/alertId").ok_or("data.essentials.alertId: required string is missing")?.to_string();
    let rule = str_at(e, "/alertRule").unwrap_or("(unnamed rule)").to_string();
    let condition = str_at(e, "/monitorCondition").unwrap_or("Fired");
    let firing = match condition {
        "Fired" => true,
        "Resolved" => false,
        other => return Err(format!("data.essentials.monitorCondition: '{other}' is not Fired or Resolved")),
    };
    let context = body.pointer("/data/alertContext").cloned().unwrap_or(Value::Null);
    let (detail, link, recognised) = describe_context(str_at(e, "/signalType").unwrap_or(""), &context);
    let description = str_at(e, "/description").filter(|d| !d.is_empty());
    let summary = match (description, detail) {
        (Some(d), Some(x)) => format!("{d} ({x})"),
        (Some(d), None) => d.to_string(),
        (None, Some(x)) => x,
        (None, None) => rule.clone(),
    };
    let mut labels = BTreeMap::new();
    if let Some(props) = body.pointer("/data/customProperties").and_then(Value::as_object) {
        for (k, v) in props {
            if let Some(text) = scalar_text(v) {
                labels.insert(k.clone(), text);
            }
        }
    }
    if let Some(dims) = context.pointer("/condition/allOf/0/dimensions").and_then(Value::as_array) {
        for d in dims {
            if let (Some(n), Some(v)) = (str_at(d, "/name"), str_at(d, "/value")) {
                labels.entry(n.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    Ok(IncomingAlert {
        source: "Azure Monitor",
        id,
        rule,
        severity: str_at(e, "/severity").unwrap_or("").to_string(),
        firing,
        summary,
        fired_at: time_at(e, "/firedDateTime"),
        link,
        target_ids: strings(e.get("alertTargetIDs")).into_iter().map(|s| s.to_ascii_lowercase()).collect(),
        configuration_items: strings(e.get("configurationItems")),
        labels,
        recognised,
    })
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

fn shorten(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max {
        one_line.chars().take(max).collect::<String>() + "…"
    } else {
        one_line
    }
}
