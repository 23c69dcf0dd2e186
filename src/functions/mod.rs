//! The handlers, one per folder in `functions/` (`functions/<name>/function.json`
//! ↔ `src/functions/<name>.rs`), the context they share, and the
//! transport-neutral HTTP request and response both hosts hand them.

pub mod alerts;
pub mod api;
pub mod dashboard;
pub mod steps;
pub mod tick;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::shell::engine::Engine;

/// Everything a handler needs.
pub struct App {
    /// The engine (store, queue, adapters, clock).
    pub engine: Arc<Engine>,
    /// The alert webhook's shared token; `None` accepts any caller (local only).
    pub alert_token: Option<String>,
}

/// Largest body the API accepts.
pub const MAX_API_BODY: usize = 1024 * 1024;
/// Largest alert payload accepted (Azure Monitor sends up to 256 KB).
pub const MAX_ALERT_BODY: usize = 512 * 1024;

/// An HTTP request, whichever host received it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// Path as received, e.g. `/api/rollouts/x/approve`.
    pub path: String,
    /// Route parameters from the function's template.
    pub params: BTreeMap<String, String>,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// An HTTP response, whichever host sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &Value) -> Self {
        HttpResponse {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: serde_json::to_vec_pretty(value).unwrap_or_default(),
        }
    }

    /// A JSON error: `{"error": code, "message": ..., "field": ...}`.
    pub fn error(status: u16, code: &str, message: impl Into<String>, field: Option<&str>) -> Self {
        let mut body = json!({"error": code, "message": message.into()});
        if let Some(f) = field {
            body["field"] = json!(f);
        }
        Self::json(status, &body)
    }

    /// An HTML page.
    pub fn html(body: String) -> Self {
        HttpResponse { status: 200, content_type: "text/html; charset=utf-8".into(), headers: Vec::new(), body: body.into_bytes() }
    }

    /// The body parsed as JSON (tests and hosts).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Parses a JSON body, or says what is wrong in a 400.
pub fn parse_json_body(req: &HttpRequest, limit: usize) -> Result<Value, HttpResponse> {
    if req.body.len() > limit {
        return Err(HttpResponse::error(
            413,
            "body_too_large",
            format!("the body is {} bytes; the limit is {limit}", req.body.len()),
            None,
        ));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| HttpResponse::error(400, "invalid_json", format!("the body is not valid JSON: {e}"), None))
}

/// Why a queue or timer invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: the host should abandon the message.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed: record it and acknowledge.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The handlers this binary has, by function name.
pub const HANDLERS: &[&str] = &["alerts", "api", "dashboard", "steps", "tick"];

/// Runs an HTTP function by name.
pub async fn invoke_http(app: &App, name: &str, req: HttpRequest) -> HttpResponse {
    match name {
        "api" => api::handle(app, req).await,
        "alerts" => alerts::handle(app, req).await,
        "dashboard" => dashboard::handle(app, req).await,
        other => HttpResponse::error(404, "unknown_function", format!("no HTTP handler named '{other}'"), None),
    }
}

/// Runs a queue-triggered function by name with one message body.
pub async fn invoke_queue(app: &App, name: &str, body: &str) -> Result<(), HandlerError> {
    match name {
        "steps" => steps::handle(app, body).await,
        other => Err(HandlerError::Permanent(format!("no queue handler named '{other}'"))),
    }
}

/// Runs a timer-triggered function by name.
pub async fn invoke_timer(app: &App, name: &str, past_due: bool) -> Result<Value, HandlerError> {
    match name {
        "tick" => tick::handle(app, past_due).await,
        other => Err(HandlerError::Permanent(format!("no timer handler named '{other}'"))),
    }
}

/// What kind of JSON value this is, in words, for "expected …, found …" errors.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
