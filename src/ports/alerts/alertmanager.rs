//! The Prometheus Alertmanager webhook (version 4): a group of alerts, each
//! firing or resolved, with labels and annotations. Every field Sluice reads
//! is typed; a wrong one is refused by its path.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{typed, IncomingAlert, Payload, PayloadError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Firing,
    Resolved,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    /// Read only so a version of the wrong type is refused (its value is checked before).
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    alerts: Vec<Alert>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    generator_url: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Parses a webhook body into one alert per entry.
pub fn parse(body: &Value) -> Result<Payload, PayloadError> {
    if let Some(v) = body.get("version").and_then(Value::as_str).filter(|v| *v != "4") {
        return Ok(Payload::Unknown {
            source: "Alertmanager",
            what: format!("Alertmanager webhook version '{}' (Sluice reads 4)", crate::domain::ids::shown(v)),
        });
    }
    let hook: Webhook = typed(body, "")?;
    let alerts = hook.alerts.into_iter().map(|a| alert(a, hook.status, &hook.common_labels)).collect();
    Ok(Payload::Alerts(alerts))
}

fn alert(a: Alert, group_status: Option<Status>, common: &BTreeMap<String, String>) -> IncomingAlert {
    let mut labels = common.clone();
    labels.extend(a.labels);
    let firing = a.status.or(group_status).unwrap_or(Status::Firing) == Status::Firing;
    let rule = labels.get("alertname").cloned().unwrap_or_else(|| "(unnamed alert)".into());
    let id = match a.fingerprint {
        Some(f) => f,
        None => labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    };
    let summary = a.annotations.get("summary").or_else(|| a.annotations.get("description")).cloned().unwrap_or_else(|| rule.clone());
    IncomingAlert {
        source: "Alertmanager",
        id,
        severity: labels.get("severity").cloned().unwrap_or_default(),
        rule,
        firing,
        summary,
        fired_at: a.starts_at.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)),
        link: a.generator_url.filter(|u| !u.is_empty()),
        target_ids: Vec::new(),
        configuration_items: labels.get("instance").cloned().into_iter().collect(),
        labels,
        recognised: true,
    }
}
