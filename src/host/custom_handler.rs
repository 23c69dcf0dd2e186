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

/// How long an invocation that arrives during warm-up waits for it before
/// answering 503 (the host then abandons a message, and it comes back).
const WARM_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// First wait before retrying a failed warm-up (doubling, at most 30 s).
const WARM_RETRY: crate::domain::backoff::Backoff = crate::domain::backoff::Backoff::new(1_000, 30_000);

/// A running custom handler.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    ready: watch::Receiver<Option<Arc<App>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// The handlers' context, once warm-up has built it.
    pub fn app(&self) -> Option<Arc<App>> {
        self.ready.borrow().clone()
    }

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
    ready: watch::Receiver<Option<Arc<App>>>,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
}

impl Ctx {
    /// The handlers' context; an invocation during warm-up waits for it.
    async fn app(&self) -> Option<Arc<App>> {
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(WARM_WAIT, ready.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(app)) => app.clone(),
            _ => None,
        }
    }
}

/// Builds the handlers' context: connects the store and queue, fetches tokens.
pub type WarmUp = Box<dyn Fn() -> futures::future::BoxFuture<'static, Result<Arc<App>, HostError>> + Send + Sync>;

/// Serves the custom-handler protocol on `addr` with a context that is ready now.
pub async fn start(
    app: Arc<App>,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
    addr: SocketAddr,
    consume_embedded: bool,
) -> Result<RunningServer, HostError> {
    let warm: WarmUp = Box::new(move || {
        let app = app.clone();
        Box::pin(async move { Ok(app) })
    });
    let server = start_warming(warm, settings, defs, addr, consume_embedded).await?;
    let mut ready = server.ready.clone();
    let _ = ready.wait_for(Option::is_some).await;
    Ok(server)
}

/// Binds `addr` first — the Functions host waits for `GET /` to answer,
/// 30 s at most — then warms up in the background (`warm` is retried with
/// backoff until it succeeds). Invocations that arrive meanwhile wait for it.
/// With `consume_embedded`, also drains the embedded queue in-process (no
/// Service Bus trigger will), once warm.
pub async fn start_warming(
    warm: WarmUp,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
    addr: SocketAddr,
    consume_embedded: bool,
) -> Result<RunningServer, HostError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HostError::Bind { addr: addr.to_string(), source })?;
    let addr = listener.local_addr().map_err(|source| HostError::Bind { addr: addr.to_string(), source })?;
    let (stop, stop_rx) = watch::channel(false);
    let (set_ready, ready) = watch::channel(None);
    let consumers: Vec<String> = if consume_embedded {
        defs.iter().filter(|d| matches!(d.trigger, Trigger::ServiceBus { .. })).map(|d| d.name.clone()).collect()
    } else {
        Vec::new()
    };
    let concurrency = settings.max_concurrent_calls.min(4);
    let ctx = Arc::new(Ctx { ready: ready.clone(), settings, defs });
    let router = axum::Router::new().route("/", get(readiness)).route("/{function}", post(invoke)).fallback(forwarded).with_state(ctx);
    let mut tasks = vec![super::serve_until_stopped(listener, router, stop_rx.clone())];
    tasks.push(tokio::spawn(warm_up(warm, set_ready, consumers, concurrency, stop_rx)));
    Ok(RunningServer { addr, ready, stop, tasks })
}

/// Builds the context until it succeeds, then starts the embedded consumers.
async fn warm_up(
    warm: WarmUp,
    set_ready: watch::Sender<Option<Arc<App>>>,
    consumers: Vec<String>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) {
    let mut attempts = 0;
    let app = loop {
        attempts += 1;
        match warm().await {
            Ok(app) => break app,
            Err(e) => {
                let wait = WARM_RETRY.delay(attempts);
                tracing::error!(error = %e, attempt = attempts, retry_in_ms = wait.as_millis() as u64, "warm-up failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    };
    let mut workers = Vec::new();
    for name in consumers {
        for _ in 0..concurrency {
            workers.push(tokio::spawn(super::local::consume(app.clone(), name.clone(), stop.clone())));
        }
    }
    let _ = set_ready.send(Some(app));
    tracing::info!(after_attempts = attempts, "warm: store and queue connected");
    for w in workers {
        let _ = w.await;
    }
}

/// `GET /`: answers at once, warm or not (the host only needs an answer).
async fn readiness(State(ctx): State<Arc<Ctx>>) -> Response {
    let warm = ctx.ready.borrow().is_some();
    to_axum(HttpResponse::json(200, &json!({"ready": true, "warm": warm, "sluice": env!("CARGO_PKG_VERSION")})))
}

fn warming() -> Response {
    let line = "sluice is still warming up (store or queue not reachable yet); try again";
    answer(503, json!({"error": "warming_up", "message": line, "Logs": [line]}))
}

fn envelope_error(e: &envelope::EnvelopeError) -> Response {
    to_axum(HttpResponse::json(
        400,
        &json!({"error": "invalid_envelope", "field": e.field, "message": e.to_string(), "Logs": [format!("invalid invocation envelope: {e}")]}),
    ))
}

/// A Service Bus invocation whose envelope cannot be read will never be
/// readable: it is acknowledged (200) with the reason in `Logs`, because a
/// non-2xx makes the host abandon the message and redeliver it ten times.
fn undecodable_message(e: &envelope::EnvelopeError) -> Response {
    let line = format!("message acknowledged without processing: invalid invocation envelope: {e}");
    tracing::error!("{line}");
    answer(200, envelope::response(json!({}), vec![line], json!({"error": "invalid_envelope", "field": e.field})))
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
    let body = match super::read_body(request.into_body(), functions::MAX_ALERT_BODY * 2).await {
        Some(b) => b,
        None => return answer(413, json!({"error": "body_too_large", "message": "the invocation is too large"})),
    };
    let inv = match envelope::parse_invocation(&body) {
        Ok(i) => i,
        Err(e) if matches!(def.trigger, Trigger::ServiceBus { .. }) => return undecodable_message(&e),
        Err(e) => return envelope_error(&e),
    };
    let Some(app) = ctx.app().await else { return warming() };
    match &def.trigger {
        Trigger::ServiceBus { .. } => service_bus(&app, def, &inv).await,
        Trigger::Timer { .. } => timer(&app, def, &inv).await,
        Trigger::Http { .. } => http_enveloped(&ctx, &app, def, &inv).await,
    }
}

async fn service_bus(app: &App, def: &FunctionDef, inv: &Invocation) -> Response {
    let input = match envelope::decode_service_bus(inv, &def.binding) {
        Ok(i) => i,
        Err(e) => return undecodable_message(&e),
    };
    let id = input.message_id.clone().unwrap_or_else(|| "(no id)".into());
    let count = input.delivery_count.unwrap_or(1);
    match functions::invoke_queue(app, &def.name, &input.body).await {
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

async fn timer(app: &App, def: &FunctionDef, inv: &Invocation) -> Response {
    let input = match envelope::decode_timer(inv, &def.binding) {
        Ok(i) => i,
        Err(e) => return envelope_error(&e),
    };
    match functions::invoke_timer(app, &def.name, input.past_due).await {
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

async fn http_enveloped(ctx: &Ctx, app: &App, def: &FunctionDef, inv: &Invocation) -> Response {
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
    let response = functions::invoke_http(app, &def.name, req).await;
    let output = def.http_output.clone().unwrap_or_else(|| "res".into());
    let logs = if response.status >= 500 { vec![format!("answered {}", response.status)] } else { Vec::new() };
    answer(200, envelope::response(json!({ output: envelope::http_output(&response) }), logs, Value::Null))
}

/// A forwarded HTTP request (`/api/...`), handled as the local host does.
async fn forwarded(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let Some(app) = ctx.app().await else { return warming() };
    super::dispatch_http(&app, &ctx.settings.route_prefix, &ctx.defs, request).await
}
