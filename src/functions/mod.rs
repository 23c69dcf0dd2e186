//! The handlers, one per folder in `functions/` (`functions/<name>/function.json`
//! ↔ `src/functions/<name>.rs`), the context they share, and the
//! transport-neutral HTTP request and response both hosts hand them.

pub mod access;
pub mod alerts;
pub mod api;
pub mod dashboard;
pub mod doctor;
pub mod error;
pub mod gate;
pub mod metrics;
pub mod pipelines;
pub mod releases;
pub mod report;
pub mod slack;
pub mod steps;
pub mod tick;
pub mod waves;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::shell::engine::Engine;

/// Everything a handler needs.
pub struct App {
    /// The engine (store, queue, adapters, clock).
    pub engine: Arc<Engine>,
    /// The alert webhook's shared token; `None` accepts any caller (local only).
    pub alert_token: Option<String>,
    /// Whether people's actions need the identity App Service authentication
    /// sets (`X-MS-CLIENT-PRINCIPAL-NAME`); a self-asserted `by` is then refused.
    pub require_principal: bool,
    /// The bearer tokens Sluice checks itself (`SLUICE_ENTRA_*`, `SLUICE_GITHUB_*`); `None` checks none.
    pub tokens: Option<Arc<crate::ports::identity::Verifier>>,
    /// Sluice's own key (`SLUICE_API_KEY`), asked by `access::key_rule`; `None` asks none (local only).
    pub api_key: Option<String>,
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

    /// An HTML page.
    pub fn html(body: String) -> Self {
        HttpResponse { status: 200, content_type: "text/html; charset=utf-8".into(), headers: Vec::new(), body: body.into_bytes() }
    }

    /// The body parsed as JSON (tests and hosts).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Whether a declared content type is JSON. Absent is not: a browser's
/// cross-site "simple" request may carry no type (a Blob body) or a
/// `text/plain` one, and only a JSON type makes it ask first (CORS), which
/// Sluice never allows — so every write must declare JSON, even an empty one.
fn is_json_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body (`Null` when empty), or says what is wrong: 413 too
/// large, 415 not declared JSON by its content type, 400 not valid JSON.
pub fn parse_json_body(req: &HttpRequest, limit: usize) -> Result<Value, error::ApiError> {
    parse_body(req, limit, false)
}

/// [`parse_json_body`] for a sender that may declare no type at all (an
/// alert source: Microsoft documents the JSON body of an action group's
/// webhook, not its header); a declared non-JSON type is still refused.
pub fn parse_json_body_untyped_ok(req: &HttpRequest, limit: usize) -> Result<Value, error::ApiError> {
    parse_body(req, limit, true)
}

fn parse_body(req: &HttpRequest, limit: usize, untyped_ok: bool) -> Result<Value, error::ApiError> {
    use error::ApiError;
    if req.body.len() > limit {
        return Err(ApiError::new(413, "body_too_large", format!("the body is {} bytes; the limit is {limit}", req.body.len())));
    }
    let declared = req.header("content-type");
    if !(is_json_type(declared) || (untyped_ok && declared.is_none())) {
        let declared = crate::domain::ids::shown(req.header("content-type").unwrap_or("(none)"));
        return Err(ApiError::new(415, "unsupported_media_type", format!("content-type: '{declared}' is not JSON; send application/json"))
            .field("content-type"));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::new(400, "invalid_json", format!("the body is not valid JSON: {e}")).field("body"))
}

/// Deserialises a JSON value into a typed input, naming the field at fault
/// (`spec`, `by`) in the 400.
pub fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, error::ApiError> {
    crate::domain::parse::typed(&value, "").map_err(|e| error::ApiError::invalid_field(&e.field, &e.message))
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
pub const HANDLERS: &[&str] =
    &["alerts", "api", "dashboard", "doctor", "gate", "metrics", "pipelines", "releases", "report", "slack", "steps", "tick", "waves"];

/// What a panic carried, in words.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// Runs a handler, turning a panic into `on_panic`'s answer, so nothing
/// from outside can bring down the host's task (or keep a message locked).
async fn guarded<T>(name: &str, work: impl std::future::Future<Output = T>, on_panic: impl FnOnce(String) -> T) -> T {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(v) => v,
        Err(payload) => {
            let text = panic_text(payload.as_ref());
            tracing::error!(function = %name, panic = %text, "handler panicked");
            on_panic(text)
        }
    }
}

/// Runs an HTTP function by name; a panic answers 500 with a JSON body.
pub async fn invoke_http(app: &App, name: &str, req: HttpRequest) -> HttpResponse {
    let work = async {
        if let Err(refused) = access::keyed(app, name, &req) {
            return refused.response();
        }
        let result = match name {
            "api" => api::handle(app, req).await,
            "alerts" => alerts::handle(app, req).await,
            "dashboard" => dashboard::handle(app, req).await,
            "doctor" => doctor::handle(app, req).await,
            "gate" => gate::handle(app, req).await,
            "metrics" => metrics::handle(app, req).await,
            "pipelines" => pipelines::handle(app, req).await,
            "report" => report::handle(app, req).await,
            "releases" => releases::handle(app, req).await,
            "waves" => waves::handle(app, req).await,
            "slack" => slack::handle(app, req).await,
            other => Err(error::ApiError::new(404, "unknown_function", format!("no HTTP handler named '{other}'"))),
        };
        result.unwrap_or_else(HttpResponse::from)
    };
    guarded(name, work, |_| error::ApiError::new(500, "internal", "the handler failed; nothing was changed by this request").response())
        .await
}

/// Runs a queue-triggered function by name with one message body; a panic
/// is a transient failure, so the message is abandoned and redelivered (and
/// dead-lettered after ten deliveries).
pub async fn invoke_queue(app: &App, name: &str, body: &str) -> Result<(), HandlerError> {
    let work = async {
        match name {
            "steps" => steps::handle(app, body).await,
            other => Err(HandlerError::Permanent(format!("no queue handler named '{other}'"))),
        }
    };
    guarded(name, work, |text| Err(HandlerError::Transient(format!("the handler panicked: {text}")))).await
}

/// Runs a timer-triggered function by name; a panic fails this run only.
pub async fn invoke_timer(app: &App, name: &str, past_due: bool) -> Result<Value, HandlerError> {
    let work = async {
        match name {
            "tick" => tick::handle(app, past_due).await,
            other => Err(HandlerError::Permanent(format!("no timer handler named '{other}'"))),
        }
    };
    guarded(name, work, |text| Err(HandlerError::Transient(format!("the handler panicked: {text}")))).await
}

pub use crate::domain::parse::json_kind;
