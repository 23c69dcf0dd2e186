//! `sluice serve`: the Azure Functions custom handler. The Functions host
//! starts the binary, waits for `GET /` to answer, then calls
//! `POST /{FunctionName}` with the invocation envelope for the timer and
//! Service Bus functions (and for HTTP functions when forwarding is off),
//! or forwards HTTP requests as they came (`/api/...`) when host.json sets
//! `enableForwardingHttpRequest`. Both forms are served, always.
//!
//! Errors: a transient failure answers 500, so the host abandons the Service
//! Bus message and it is redelivered; a message that can never succeed is
//! logged (also in `Logs`, which reach Application Insights) and answered
//! 200, so it is acknowledged instead of retried ten times.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::definitions::{route_http, FunctionDef, RouteMatch, Trigger};
use super::envelope::{self, Invocation};
use super::local::to_axum;
use super::{HostError, HostSettings};
use crate::functions::{self, App, HandlerError, HttpResponse};

/// A running custom handler.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The handlers' context.
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

struct Ctx {
    app: Arc<App>,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
}

/// Serves the custom-handler protocol on `addr`. With `consume_embedded`,
/// also drains the embedded queue in-process (no Service Bus trigger will).
pub async fn start(
    app: Arc<App>,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
    addr: SocketAddr,
    consume_embedded: bool,
) -> Result<RunningServer, HostError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HostError::Bind { addr: addr.to_string(), source })?;
    let addr = listener.local_addr().map_err(|source| HostError::Bind { addr: addr.to_string(), source })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if consume_embedded {
        for def in &defs {
            if let Trigger::ServiceBus { .. } = def.trigger {
                for _ in 0..settings.max_concurrent_calls.min(4) {
                    tasks.push(tokio::spawn(super::local::consume(app.clone(), def.name.clone(), stop_rx.clone())));
                }
            }
        }
    }
    let ctx = Arc::new(Ctx { app: app.clone(), settings, defs });
    let router = axum::Router::new().route("/", get(ready)).route("/{function}", post(invoke)).fallback(forwarded).with_state(ctx);
    tasks.push(super::serve_until_stopped(listener, router, stop_rx.clone()));
    Ok(RunningServer { addr, app, stop, tasks })
}

async fn ready() -> Response {
    to_axum(HttpResponse::json(200, &json!({"ready": true, "sluice": env!("CARGO_PKG_VERSION")})))
}

fn envelope_error(e: &envelope::EnvelopeError) -> Response {
    to_axum(HttpResponse::json(
        400,
        &json!({"error": "invalid_envelope", "field": e.field, "message": e.to_string(), "Logs": [format!("invalid invocation envelope: {e}")]}),
    ))
}

fn answer(status: u16, body: Value) -> Response {
    to_axum(HttpResponse::json(status, &body))
}

/// `POST /{FunctionName}`: an enveloped invocation.
async fn invoke(State(ctx): State<Arc<Ctx>>, Path(function): Path<String>, request: Request) -> Response {
    let Some(def) = ctx.defs.iter().find(|d| d.name == function) else {
        // Not a function name: it may be a forwarded request to a one-segment route.
        return forwarded(State(ctx.clone()), request).await;
    };
    let body = match axum::body::to_bytes(request.into_body(), functions::MAX_ALERT_BODY * 2).await {
        Ok(b) => b,
        Err(_) => return answer(413, json!({"error": "body_too_large", "message": "the invocation is too large"})),
    };
    let inv = match envelope::parse_invocation(&body) {
        Ok(i) => i,
        Err(e) => return envelope_error(&e),
    };
    match &def.trigger {
        Trigger::ServiceBus { .. } => service_bus(&ctx, def, &inv).await,
        Trigger::Timer { .. } => timer(&ctx, def, &inv).await,
        Trigger::Http { .. } => http_enveloped(&ctx, def, &inv).await,
    }
}

async fn service_bus(ctx: &Ctx, def: &FunctionDef, inv: &Invocation) -> Response {
    let input = match envelope::decode_service_bus(inv, &def.binding) {
        Ok(i) => i,
        Err(e) => return envelope_error(&e),
    };
    let id = input.message_id.clone().unwrap_or_else(|| "(no id)".into());
    let count = input.delivery_count.unwrap_or(1);
    match functions::invoke_queue(&ctx.app, &def.name, &input.body).await {
        Ok(()) => answer(200, envelope::response(json!({}), vec![format!("message {id} (delivery {count}) handled")], Value::Null)),
        Err(HandlerError::Permanent(reason)) => {
            let line = format!("message {id} can never succeed and is acknowledged without retry: {reason}");
            tracing::error!("{line}");
            answer(200, envelope::response(json!({}), vec![line], Value::Null))
        }
        Err(HandlerError::Transient(reason)) => {
            let line = format!("message {id} (delivery {count}) failed and will be redelivered: {reason}");
            tracing::warn!("{line}");
            answer(500, json!({"error": "transient", "message": reason, "Logs": [line]}))
        }
    }
}

async fn timer(ctx: &Ctx, def: &FunctionDef, inv: &Invocation) -> Response {
    let input = match envelope::decode_timer(inv, &def.binding) {
        Ok(i) => i,
        Err(e) => return envelope_error(&e),
    };
    match functions::invoke_timer(&ctx.app, &def.name, input.past_due).await {
        Ok(report) => {
            let mut logs = vec![format!("tick: {report}")];
            if input.past_due {
                logs.insert(0, "the timer is past due".into());
            }
            answer(200, envelope::response(json!({}), logs, report))
        }
        Err(HandlerError::Permanent(reason)) | Err(HandlerError::Transient(reason)) => {
            let line = format!("tick failed; the next occurrence runs as scheduled: {reason}");
            tracing::warn!("{line}");
            answer(500, json!({"error": "tick_failed", "message": reason, "Logs": [line]}))
        }
    }
}

async fn http_enveloped(ctx: &Ctx, def: &FunctionDef, inv: &Invocation) -> Response {
    let mut req = match envelope::decode_http(inv, &def.binding) {
        Ok(r) => r,
        Err(e) => return envelope_error(&e),
    };
    // Route parameters: the host's Params when given, else matched again from the URL.
    if req.params.is_empty() {
        if let RouteMatch::Found(_, params) = route_http(&ctx.defs, &ctx.settings.route_prefix, &req.method, &req.path) {
            req.params = params;
        }
    }
    let response = functions::invoke_http(&ctx.app, &def.name, req).await;
    let output = def.http_output.clone().unwrap_or_else(|| "res".into());
    let logs = if response.status >= 500 { vec![format!("answered {}", response.status)] } else { Vec::new() };
    answer(200, envelope::response(json!({ output: envelope::http_output(&response) }), logs, Value::Null))
}

/// A forwarded HTTP request (`/api/...`), handled as the local host does.
async fn forwarded(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    super::dispatch_http(&ctx.app, &ctx.settings.route_prefix, &ctx.defs, request).await
}
