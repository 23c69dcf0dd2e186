//! The two ways handlers are driven, sharing them unchanged: [`local`] (the
//! embedded host behind `sluice up`, a stand-in for `func start`) and the
//! Azure Functions custom-handler protocol behind `sluice serve`. Both read
//! the same `host.json` settings and function definitions.

pub mod custom_handler;
pub mod definitions;
pub mod envelope;
pub mod local;
pub mod log_lines;
pub mod memory;

use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use serde_json::Value;

use crate::domain::ids::shown;
use crate::functions::error::ApiError;
use crate::functions::{self, App, HttpRequest, HANDLERS};
use definitions::{parse_query, route_http, FunctionDef, RouteMatch};

/// What the hosts take from `host.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSettings {
    /// `extensions.http.routePrefix` (default `api`).
    pub route_prefix: String,
    /// `extensions.serviceBus.maxConcurrentCalls` (default 16).
    pub max_concurrent_calls: usize,
    /// `customHandler.enableForwardingHttpRequest`.
    pub forward_http: bool,
    /// `customHandler.description.defaultExecutablePath`.
    pub executable: String,
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `host.json` or a `function.json` is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store or queue could not be opened.
    #[error("{0}")]
    Storage(String),
}

impl HostSettings {
    /// Reads the settings from `host.json` text.
    pub fn parse(text: &str) -> Result<Self, HostError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| HostError::Config(format!("host.json: {e}")))?;
        let prefix = doc.pointer("/extensions/http/routePrefix").and_then(Value::as_str).unwrap_or("api").to_string();
        let calls = doc.pointer("/extensions/serviceBus/maxConcurrentCalls").and_then(Value::as_u64).unwrap_or(16) as usize;
        Ok(HostSettings {
            route_prefix: prefix,
            max_concurrent_calls: calls.clamp(1, 256),
            // Older hosts call it enableForwardingHttpRequest, newer ones enableProxyingHttpRequest.
            forward_http: ["/customHandler/enableForwardingHttpRequest", "/customHandler/enableProxyingHttpRequest"]
                .iter()
                .any(|p| doc.pointer(p).and_then(Value::as_bool).unwrap_or(false)),
            executable: doc
                .pointer("/customHandler/description/defaultExecutablePath")
                .and_then(Value::as_str)
                .unwrap_or("sluice")
                .to_string(),
        })
    }

    /// The `host.json` built into the binary.
    pub fn embedded() -> Result<Self, HostError> {
        Self::parse(EMBEDDED_HOST_JSON)
    }
}

/// The repository's `host.json`, built into the binary.
pub const EMBEDDED_HOST_JSON: &str = include_str!("../../host.json");

/// Serves HTTP on `listener` until `stop` turns true, then drains gracefully.
pub(crate) fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    })
}

/// Reads `host.json` and every `functions/*/function.json` under `root`, as
/// the Functions host does, and checks each function has a handler.
pub fn load_app(root: &Path) -> Result<(HostSettings, Vec<FunctionDef>), HostError> {
    let host_json = root.join("host.json");
    let settings = match std::fs::read_to_string(&host_json) {
        Ok(text) => HostSettings::parse(&text)?,
        Err(e) => return Err(HostError::Config(format!("{}: {e}", host_json.display()))),
    };
    let dir = root.join("functions");
    let entries = std::fs::read_dir(&dir).map_err(|e| HostError::Config(format!("{}: {e}", dir.display())))?;
    let mut defs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("function.json");
        if !path.exists() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).map_err(|e| HostError::Config(format!("{}: {e}", path.display())))?;
        let def = definitions::parse_function_json(&name, &text).map_err(HostError::Config)?;
        if !HANDLERS.contains(&name.as_str()) {
            return Err(HostError::Config(format!("functions/{name} has no handler in this binary (known: {})", HANDLERS.join(", "))));
        }
        defs.push(def);
    }
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((settings, defs))
}

/// Loads the function definitions from `root` if it holds an app, else the embedded ones.
pub fn load_app_or_embedded(root: &Path) -> Result<(HostSettings, Vec<FunctionDef>), HostError> {
    if root.join("host.json").exists() && root.join("functions").is_dir() {
        load_app(root)
    } else {
        let defs = definitions::embedded_definitions().map_err(HostError::Config)?;
        Ok((HostSettings::embedded()?, defs))
    }
}

/// How much of an oversized body is still read (and dropped) before the 413,
/// and for how long: a host that answers and closes with the body unread
/// resets the connection, and the caller sees a broken pipe, not the 413.
const DRAIN_CAP: usize = 8 * 1024 * 1024;
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// The body, or `None` past `limit`; the rest of an oversized body is
/// drained, up to [`DRAIN_CAP`] bytes or [`DRAIN_FOR`], so the refusal reaches its caller.
pub(crate) async fn read_body(body: axum::body::Body, limit: usize) -> Option<axum::body::Bytes> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if kept.len() + chunk.len() > limit {
            let mut seen = kept.len() + chunk.len();
            let _ = tokio::time::timeout(DRAIN_FOR, async {
                while let Some(Ok(more)) = stream.next().await {
                    seen += more.len();
                    if seen > DRAIN_CAP {
                        break;
                    }
                }
            })
            .await;
            return None;
        }
        kept.extend_from_slice(&chunk);
    }
    Some(kept.into())
}

/// Serves one plain HTTP request (as the local host receives it, or as the
/// Functions host forwards it) through the function its route matches.
pub(crate) async fn dispatch_http(app: &App, route_prefix: &str, defs: &[FunctionDef], request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_ascii_uppercase();
    let path = parts.uri.path().to_string();
    let limit = functions::MAX_API_BODY.max(functions::MAX_ALERT_BODY);
    let bytes = match read_body(body, limit).await {
        Some(b) => b,
        None => return local::to_axum(ApiError::new(413, "body_too_large", format!("the body is over the {limit}-byte limit")).response()),
    };
    let response = match route_http(defs, route_prefix, &method, &path) {
        RouteMatch::Found(def, params) => {
            let req = HttpRequest {
                method,
                path,
                params,
                query: parts.uri.query().map(parse_query).unwrap_or_default(),
                headers: parts
                    .headers
                    .iter()
                    .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_string())))
                    .collect(),
                body: bytes.to_vec(),
            };
            functions::invoke_http(app, &def.name, req).await
        }
        RouteMatch::MethodNotAllowed => {
            ApiError::new(405, "method_not_allowed", format!("{} is not allowed on {}", shown(&method), shown(&path))).response()
        }
        RouteMatch::NotFound => ApiError::new(404, "not_found", format!("no function serves {}", shown(&path))).response(),
    };
    local::to_axum(response)
}

/// Builds the engine the configuration asks for: the store and queue
/// adapters, and the environment every other adapter is built in.
pub async fn build_engine(
    config: &crate::shell::config::AppConfig,
    public_url: String,
) -> Result<Arc<crate::shell::engine::Engine>, HostError> {
    use crate::ports::queue::Queue;
    use crate::ports::store::Store;
    use crate::shell::config::{QueueKind, StoreKind};
    let storage = |e: &dyn std::fmt::Display| HostError::Storage(e.to_string());
    // Only the embedded store and queue write here; with Table Storage and
    // Service Bus nothing is written at start-up at all.
    let db = config.data_dir.join("sluice.db");
    if config.store == StoreKind::Sqlite || config.queue == QueueKind::Embedded {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| storage(&format!("cannot create {}: {e}", config.data_dir.display())))?;
    }
    let clock: Arc<dyn crate::ports::clock::Clock> = Arc::new(crate::ports::clock::SystemClock);
    let store: Arc<dyn Store> = match &config.store {
        StoreKind::Sqlite => Arc::new(
            crate::ports::store::sqlite::SqliteStore::open(&db).map_err(|e| storage(&e))?.with_alert_retention(config.alert_retention),
        ),
        StoreKind::Table { connection, account, prefix } => {
            use crate::ports::store::table::{TableConnection, TableStore};
            let conn = match (connection, account) {
                (Some(c), _) => TableConnection::parse(&c.0).map_err(|e| storage(&e))?,
                (None, Some(account)) => {
                    let credential = crate::ports::azure::auth::AzureCredential::from_settings(&|k| std::env::var(k).ok())
                        .ok_or_else(|| HostError::Config("SLUICE_TABLE_ACCOUNT: no identity to reach it with".into()))?;
                    TableConnection::with_token(account, Arc::new(credential))
                }
                (None, None) => return Err(HostError::Config("SLUICE_TABLE_CONNECTION: not set".into())),
            };
            Arc::new(TableStore::connect(&conn, prefix).await.map_err(|e| storage(&e))?.with_alert_retention(config.alert_retention))
        }
    };
    let queue: Arc<dyn Queue> = match &config.queue {
        QueueKind::Embedded => Arc::new(crate::ports::queue::embedded::EmbeddedQueue::open(&db, clock.clone()).map_err(|e| storage(&e))?),
        QueueKind::ServiceBus { connection, queue, lock_seconds } => {
            use crate::ports::queue::servicebus::{ServiceBusConnection, ServiceBusQueue};
            let conn = ServiceBusConnection::parse(&connection.0).map_err(|e| HostError::Config(e.to_string()))?;
            let lock = std::time::Duration::from_secs(*lock_seconds);
            Arc::new(
                ServiceBusQueue::new(&conn, queue, crate::ports::azure::transport::BoundedTransport::new(), lock)
                    .map_err(|e| HostError::Config(e.to_string()))?,
            )
        }
        QueueKind::ServiceBusIdentity { namespace, queue } => {
            let credential = crate::ports::azure::auth::AzureCredential::from_settings(&|k| std::env::var(k).ok())
                .ok_or_else(|| HostError::Config("ServiceBusConnection__fullyQualifiedNamespace: no identity to send with".into()))?;
            let http = crate::ports::env::http_client();
            Arc::new(crate::ports::queue::servicebus_identity::ServiceBusSender::new(namespace, queue, None, http, Arc::new(credential)))
        }
    };
    let env = crate::ports::env::AdapterEnv::new(config.data_dir.clone(), public_url);
    let engine = crate::shell::engine::Engine::new(store, queue, env, clock)
        .with_retention(config.retention)
        .with_windows(config.windows.clone())
        .with_slack(config.slack.clone());
    // In Azure, stdout reaches Application Insights; locally it is the terminal's.
    Ok(Arc::new(if config.metric_lines { engine.with_metric_lines() } else { engine }))
}
