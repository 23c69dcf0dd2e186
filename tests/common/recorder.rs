//! A wire-level fake HTTP service for tests: it records every request
//! exactly (method, path, query, headers, body) and answers with whatever
//! the test's responder decides.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        sluice::host::definitions::parse_query(&self.query).get(name).cloned()
    }
}

/// What the fake answers: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, String);

type Responder = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Recorded>>>,
    responder: Responder,
}

pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

impl Recorder {
    pub async fn start(responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { seen: seen.clone(), responder: Arc::new(responder) };
        let app = axum::Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { url: format!("http://{addr}"), seen }
    }

    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().expect("recorder").clone()
    }
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))).collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, headers, text) = (shared.responder)(&rec);
    shared.seen.lock().expect("recorder").push(rec);
    let mut response =
        (axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR), text).into_response();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), axum::http::HeaderValue::from_str(&v)) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}
