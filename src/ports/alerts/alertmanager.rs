//! The Prometheus Alertmanager webhook (version 4): a group of alerts, each
//! firing or resolved, with labels and annotations.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{str_at, time_at, IncomingAlert};

/// Parses a webhook body into one alert per entry.
pub fn parse(body: &Value) -> Result<Vec<IncomingAlert>, String> {
    if let Some(v) = body.get("version").and_then(Value::as_str) {
        if v != "4" {
            return Err(format!("version: Alertmanager webhook version '{v}' is not supported (expected 4)"));
        }
    }
    let alerts = body.get("alerts").and_then(Value::as_array).ok_or("alerts: required list is missing")?;
    let common: BTreeMap<String, String> = string_map(body.get("commonLabels"));
    let mut out = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        if !a.is_object() {
            return Err(format!("alerts[{i}]: expected an object"));
        }
        let mut labels = common.clone();
        labels.extend(string_map(a.get("labels")));
        let annotations = string_map(a.get("annotations"));
        let status = str_at(a, "/status").or_else(|| str_at(body, "/status")).unwrap_or("firing");
        let firing = match status {
            "firing" => true,
            "resolved" => false,
            other => return Err(format!("alerts[{i}].status: '{other}' is not firing or resolved")),
        };
        let rule = labels.get("alertname").cloned().unwrap_or_else(|| "(unnamed alert)".into());
        let id = match str_at(a, "/fingerprint") {
            Some(f) => f.to_string(),
            None => labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        };
        let summary = annotations.get("summary").or_else(|| annotations.get("description")).cloned().unwrap_or_else(|| rule.clone());
        out.push(IncomingAlert {
            source: "Alertmanager",
            id,
            severity: labels.get("severity").cloned().unwrap_or_default(),
            rule,
            firing,
            summary,
            fired_at: time_at(a, "/startsAt"),
            link: str_at(a, "/generatorURL").filter(|u| !u.is_empty()).map(str::to_string),
            target_ids: Vec::new(),
            configuration_items: labels.get("instance").cloned().into_iter().collect(),
            labels,
            recognised: true,
        });
    }
    Ok(out)
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}
