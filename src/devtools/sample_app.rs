//! The demo's sample API: one process per version, answering JSON with a
//! few milliseconds of simulated work, and a switchable fault (a share of
//! 500s, or added latency) to stand in for a bad release.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

/// A fault that can be switched on while the app runs.
#[derive(Default)]
pub struct Fault {
    /// Errors per thousand requests.
    pub errors_per_mille: AtomicU32,
    /// Added latency in milliseconds.
    pub extra_latency_ms: AtomicU64,
}

struct AppState {
    version: String,
    fault: Arc<Fault>,
    counter: AtomicU64,
}

/// Serves one version on `addr`; returns the bound address.
pub async fn serve(version: &str, fault: Arc<Fault>, addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let state = Arc::new(AppState { version: version.to_string(), fault, counter: AtomicU64::new(0) });
    let app = axum::Router::new().route("/health", get(|| async { "ok" })).fallback(answer).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((local, handle))
}

async fn answer(State(s): State<Arc<AppState>>, request: Request) -> Response {
    let n = s.counter.fetch_add(1, Ordering::Relaxed);
    // 2–6 ms of "work", spread deterministically.
    let work = 2 + (n * 7919 % 5);
    let extra = s.fault.extra_latency_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(work + extra)).await;
    let per_mille = s.fault.errors_per_mille.load(Ordering::Relaxed) as u64;
    let failing = (n * 7919) % 1000 < per_mille;
    let mut response = if failing {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "simulated failure", "version": s.version}))).into_response()
    } else {
        Json(json!({"version": s.version, "path": request.uri().path(), "order": n})).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&s.version) {
        response.headers_mut().insert("x-app-version", v);
    }
    response
}
