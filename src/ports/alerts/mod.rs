//! Alert sources: the webhook payloads Sluice understands, each parsed by
//! its own file into one [`IncomingAlert`] shape, and the documented rules
//! that map an alert to the rollout it concerns.
//!
//! An alert concerns a rollout when any of these holds (first match wins):
//! 1. a label or custom property `sluice_rollout` / `sluiceRollout` equals the rollout id;
//! 2. a label or custom property `sluice_target` / `sluiceTarget` / `sluice-target`
//!    equals the target name;
//! 3. one of the alert's target resource ids equals one of the target's
//!    `resourceIds`, or lies below it (a slot under its app), ignoring case;
//! 4. one of the alert's configuration items equals the target name, or the
//!    last segment (the resource name) of one of its `resourceIds`, ignoring case.

pub mod alertmanager;
pub mod azure_monitor;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::rollout::{AlertInfo, Rollout};

/// An alert, whichever system sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingAlert {
    /// Which system (`Azure Monitor`, `Alertmanager`).
    pub source: &'static str,
    /// The alert's id at its source.
    pub id: String,
    /// Rule name.
    pub rule: String,
    /// Severity as the source says it.
    pub severity: String,
    /// Firing (true) or resolved (false).
    pub firing: bool,
    /// One line on what happened.
    pub summary: String,
    /// When it fired.
    pub fired_at: Option<DateTime<Utc>>,
    /// A link to it.
    pub link: Option<String>,
    /// Azure resource ids it is about (lower case).
    pub target_ids: Vec<String>,
    /// Configuration items (resource names, hosts).
    pub configuration_items: Vec<String>,
    /// Labels and custom properties.
    pub labels: BTreeMap<String, String>,
    /// Whether the payload variant was recognised in full (unknown variants
    /// are still accepted and recorded).
    pub recognised: bool,
}

impl IncomingAlert {
    /// The alert as the decision core records it.
    pub fn info(&self) -> AlertInfo {
        AlertInfo {
            id: self.id.clone(),
            rule: self.rule.clone(),
            severity: self.severity.clone(),
            summary: self.summary.clone(),
            source: self.source.to_string(),
            fired_at: self.fired_at,
            link: self.link.clone(),
        }
    }
}

/// What a webhook body turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Alerts of a source Sluice knows; an alert whose variant (its alert
    /// context) Sluice does not know is kept with `recognised: false`.
    Alerts(Vec<IncomingAlert>),
    /// A well-formed payload of a schema or version Sluice does not know:
    /// recorded and answered, never acted on.
    Unknown {
        /// Which system it seems to come from.
        source: &'static str,
        /// What it is, in words.
        what: String,
    },
}

/// A payload field of the wrong type or value, named by its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PayloadError {
    /// Where, e.g. `data.essentials.monitorCondition`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Reads a typed payload, naming the field at fault (below `prefix`).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, PayloadError> {
    crate::domain::parse::typed(value, prefix).map_err(|e| PayloadError { field: e.field, message: e.message })
}

/// Parses a webhook body of any supported source, its texts bounded
/// ([`crate::domain::bounded`]) so no alert outgrows what keeps it.
pub fn parse(body: &Value) -> Result<Payload, PayloadError> {
    use crate::domain::bounded::{cap, cap_in_place, MESSAGE_CHARS, NAME_CHARS};
    let parsed = parse_any(body)?;
    Ok(match parsed {
        Payload::Alerts(alerts) => Payload::Alerts(
            alerts
                .into_iter()
                .map(|mut a| {
                    for name in [&mut a.id, &mut a.rule, &mut a.severity] {
                        cap_in_place(name, NAME_CHARS);
                    }
                    cap_in_place(&mut a.summary, MESSAGE_CHARS);
                    a.link = a.link.map(|l| cap(&l, MESSAGE_CHARS));
                    a.labels = a.labels.into_iter().map(|(k, v)| (cap(&k, NAME_CHARS), cap(&v, MESSAGE_CHARS))).collect();
                    a
                })
                .collect(),
        ),
        Payload::Unknown { source, what } => Payload::Unknown { source, what: cap(&what, MESSAGE_CHARS) },
    })
}

fn parse_any(body: &Value) -> Result<Payload, PayloadError> {
    if body.get("schemaId").is_some() || body.pointer("/data/essentials").is_some() {
        return azure_monitor::parse(body);
    }
    if body.get("alerts").is_some() || body.get("version").is_some() || body.get("receiver").is_some() {
        return alertmanager::parse(body);
    }
    Err(PayloadError {
        field: "body".into(),
        message: "not a payload Sluice knows: expected the Azure Monitor Common Alert Schema (schemaId azureMonitorCommonAlertSchema) or an Alertmanager webhook (version 4)".into(),
    })
}

fn label<'a>(labels: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| labels.get(*n).map(String::as_str))
}

const ROLLOUT_LABELS: [&str; 3] = ["sluice_rollout", "sluiceRollout", "sluice-rollout"];
const TARGET_LABELS: [&str; 3] = ["sluice_target", "sluiceTarget", "sluice-target"];

/// The rollout id a label or custom property names (rule 1).
pub fn rollout_label(alert: &IncomingAlert) -> Option<&str> {
    label(&alert.labels, &ROLLOUT_LABELS)
}

/// The target name a label or custom property names (rule 2).
pub fn target_label(alert: &IncomingAlert) -> Option<&str> {
    label(&alert.labels, &TARGET_LABELS)
}

/// The index keys rules 3 and 4 look up ([`crate::domain::alert_keys`]).
pub fn lookup_keys(alert: &IncomingAlert) -> Vec<String> {
    crate::domain::alert_keys::alert_lookup_keys(&alert.target_ids, &alert.configuration_items)
}

/// Why an alert concerns a rollout, or `None`.
pub fn match_reason(alert: &IncomingAlert, rollout: &Rollout) -> Option<String> {
    let target = &rollout.spec.target;
    if rollout_label(alert) == Some(rollout.id.as_str()) {
        return Some("rollout label".into());
    }
    if target_label(alert) == Some(target.name.as_str()) {
        return Some("target label".into());
    }
    let ids: Vec<String> = target.resource_ids.iter().map(|r| r.trim_end_matches('/').to_ascii_lowercase()).collect();
    for t in &alert.target_ids {
        let t = t.trim_end_matches('/').to_ascii_lowercase();
        if let Some(id) = ids.iter().find(|id| t == **id || t.starts_with(&format!("{id}/"))) {
            return Some(format!("resource {id}"));
        }
    }
    let names: Vec<String> = std::iter::once(target.name.to_ascii_lowercase())
        .chain(ids.iter().filter_map(|id| id.rsplit('/').next().map(str::to_string)))
        .collect();
    alert.configuration_items.iter().find(|c| names.contains(&c.to_ascii_lowercase())).map(|c| format!("configuration item {c}"))
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Any JSON scalar as text (custom properties may be numbers or booleans).
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
