//! The Azure Functions custom-handler invocation envelope, decoded
//! defensively. The host sends `{"Data": {<binding>: value}, "Metadata":
//! {...}}`; scalars arrive JSON-encoded as strings, a Service Bus body may be
//! JSON-encoded once or twice or base64, timer info may lack
//! `ScheduleStatus`, and an enveloped HTTP request carries `Query` as an
//! object or as a JSON string. Every form is accepted; anything else is a
//! clear error naming the field.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::definitions::parse_query;
use crate::functions::{json_kind, HttpRequest, HttpResponse};

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EnvelopeError {
    /// The field, e.g. `Data.msg`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError { field: field.into(), message: message.into() }
}

/// A parsed invocation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Trigger and input binding values by binding name.
    pub data: Map<String, Value>,
    /// Trigger metadata.
    pub metadata: Map<String, Value>,
}

/// Reads the envelope body.
pub fn parse_invocation(body: &[u8]) -> Result<Invocation, EnvelopeError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
    let Value::Object(mut doc) = doc else { return Err(bad("body", "expected a JSON object {\"Data\", \"Metadata\"}")) };
    let data = match doc.remove("Data") {
        Some(Value::Object(d)) => d,
        Some(other) => return Err(bad("Data", format!("expected an object, found {}", json_kind(&other)))),
        None => return Err(bad("Data", "is required")),
    };
    let metadata = match doc.remove("Metadata") {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(other) => return Err(bad("Metadata", format!("expected an object, found {}", json_kind(&other)))),
    };
    Ok(Invocation { data, metadata })
}

/// A metadata value with its JSON encoding peeled off (`"\"abc\""` → `abc`, `"3"` → `3`).
pub fn metadata_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => Some(inner),
            Ok(Value::Number(n)) => Some(n.to_string()),
            Ok(Value::Bool(b)) => Some(b.to_string()),
            _ => Some(s.clone()),
        },
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A Service Bus trigger invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusInput {
    /// The message body as JSON text.
    pub body: String,
    /// `MessageId`.
    pub message_id: Option<String>,
    /// `DeliveryCount`.
    pub delivery_count: Option<u32>,
    /// `EnqueuedTime` (with offset), else `EnqueuedTimeUtc`.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// `LockToken`.
    pub lock_token: Option<String>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%m/%d/%Y %H:%M:%S").ok().map(|n| n.and_utc()))
}

/// Peels a message body down to JSON text: an object as sent, a string
/// holding JSON (once or twice encoded), or base64 of either.
pub fn decode_body(v: &Value, field: &str) -> Result<String, EnvelopeError> {
    match v {
        Value::Object(_) | Value::Array(_) => Ok(v.to_string()),
        Value::String(s) => decode_text(s, field, 0),
        Value::Null => Err(bad(field, "is null")),
        other => Err(bad(field, format!("expected the message body, found {}", json_kind(other)))),
    }
}

fn decode_text(s: &str, field: &str, depth: u8) -> Result<String, EnvelopeError> {
    if depth > 3 {
        return Err(bad(field, "is encoded more deeply than Sluice unwraps"));
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(inner)) => decode_text(&inner, field, depth + 1),
        Ok(Value::Object(_)) | Ok(Value::Array(_)) => Ok(s.to_string()),
        _ => {
            let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => decode_text(&text, field, depth + 1),
                    Err(_) => Err(bad(field, "is base64 of something that is not UTF-8 text")),
                },
                Err(_) => Err(bad(field, "is neither JSON nor base64 of JSON")),
            }
        }
    }
}

/// Decodes a Service Bus trigger invocation for the binding `binding`.
pub fn decode_service_bus(inv: &Invocation, binding: &str) -> Result<ServiceBusInput, EnvelopeError> {
    let field = format!("Data.{binding}");
    let value = inv.data.get(binding).ok_or_else(|| bad(&field, "is required (the message body)"))?;
    let body = decode_body(value, &field)?;
    let m = |k: &str| inv.metadata.get(k).and_then(metadata_text);
    let delivery_count = match m("DeliveryCount") {
        Some(c) => Some(c.parse::<u32>().map_err(|_| bad("Metadata.DeliveryCount", format!("'{c}' is not a count")))?),
        None => None,
    };
    let enqueued_at = m("EnqueuedTime").and_then(|t| parse_time(&t)).or_else(|| m("EnqueuedTimeUtc").and_then(|t| parse_time(&t)));
    Ok(ServiceBusInput { body, message_id: m("MessageId"), delivery_count, enqueued_at, lock_token: m("LockToken") })
}

/// A timer trigger invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerInput {
    /// Whether the run is late.
    pub past_due: bool,
    /// `ScheduleStatus.Last`, if given.
    pub last: Option<DateTime<Utc>>,
    /// `ScheduleStatus.Next`, if given.
    pub next: Option<DateTime<Utc>>,
}

/// Decodes a timer invocation (`ScheduleStatus` may be absent; the value may be a JSON string).
pub fn decode_timer(inv: &Invocation, binding: &str) -> Result<TimerInput, EnvelopeError> {
    let field = format!("Data.{binding}");
    let value = match inv.data.get(binding) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| bad(&field, format!("not valid JSON: {e}")))?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => return Err(bad(&field, format!("expected the timer object, found {}", json_kind(other)))),
        None => return Err(bad(&field, "is required (the timer info)")),
    };
    let past_due = match value.get("IsPastDue") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => s.eq_ignore_ascii_case("true"),
        Some(other) => return Err(bad(format!("{field}.IsPastDue"), format!("expected true or false, found {}", json_kind(other)))),
    };
    let status = value.get("ScheduleStatus").filter(|s| s.is_object());
    let time = |k: &str| status.and_then(|s| s.get(k)).and_then(Value::as_str).and_then(parse_time);
    Ok(TimerInput { past_due, last: time("Last"), next: time("Next") })
}

fn string_map(v: Option<&Value>, field: &str) -> Result<BTreeMap<String, String>, EnvelopeError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            _ => return Err(bad(field, "expected an object (or a JSON string of one)")),
        },
        Some(Value::Object(o)) => o.clone(),
        Some(other) => return Err(bad(field, format!("expected an object, found {}", json_kind(other)))),
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let text = match v {
            Value::String(s) => s,
            Value::Array(items) => items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(", "),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        out.insert(k, text);
    }
    Ok(out)
}

/// Decodes an enveloped HTTP request (`Data.<binding>` = `{Url, Method, Query, Headers, Params, Body}`).
pub fn decode_http(inv: &Invocation, binding: &str) -> Result<HttpRequest, EnvelopeError> {
    let field = format!("Data.{binding}");
    let req = match inv.data.get(binding) {
        Some(Value::Object(o)) => o.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            _ => return Err(bad(&field, "expected the HTTP request object")),
        },
        Some(other) => return Err(bad(&field, format!("expected the HTTP request object, found {}", json_kind(other)))),
        None => return Err(bad(&field, "is required (the HTTP request)")),
    };
    let method = match req.get("Method") {
        Some(Value::String(m)) if !m.is_empty() => m.to_ascii_uppercase(),
        Some(other) => return Err(bad(format!("{field}.Method"), format!("expected a method name, found {}", json_kind(other)))),
        None => return Err(bad(format!("{field}.Method"), "is required")),
    };
    let url = match req.get("Url") {
        Some(Value::String(u)) => u.clone(),
        Some(other) => return Err(bad(format!("{field}.Url"), format!("expected a URL, found {}", json_kind(other)))),
        None => return Err(bad(format!("{field}.Url"), "is required")),
    };
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
    let path_and_query = after_scheme.split_once('/').map(|(_, rest)| format!("/{rest}")).unwrap_or_else(|| "/".into());
    let path_and_query = path_and_query.as_str();
    let (path, url_query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut query = parse_query(url_query);
    query.extend(string_map(req.get("Query"), &format!("{field}.Query"))?);
    let headers =
        string_map(req.get("Headers"), &format!("{field}.Headers"))?.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let params = string_map(req.get("Params"), &format!("{field}.Params"))?;
    let body = match req.get("Body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v @ (Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_))) => v.to_string().into_bytes(),
    };
    Ok(HttpRequest { method, path: path.to_string(), params, query, headers, body })
}

/// The invocation response: `{"Outputs", "Logs", "ReturnValue"}`.
pub fn response(outputs: Value, logs: Vec<String>, return_value: Value) -> Value {
    json!({"Outputs": outputs, "Logs": logs, "ReturnValue": return_value})
}

/// An HTTP output binding value. JSON bodies go as JSON values, because the
/// host base64-decodes string outputs that look like base64.
pub fn http_output(r: &HttpResponse) -> Value {
    let mut headers = Map::new();
    headers.insert("Content-Type".into(), Value::String(r.content_type.clone()));
    for (k, v) in &r.headers {
        headers.insert(k.clone(), Value::String(v.clone()));
    }
    let body = if r.content_type.starts_with("application/json") {
        serde_json::from_slice::<Value>(&r.body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()))
    } else {
        Value::String(String::from_utf8_lossy(&r.body).into_owned())
    };
    json!({"statusCode": r.status, "headers": headers, "body": body})
}
