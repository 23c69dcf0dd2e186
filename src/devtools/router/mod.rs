//! The local weighted router: a reverse proxy in front of a stable and a
//! canary upstream whose split changes at run time, counting per-version
//! requests, errors and latency (served at `/metrics` for Prometheus and at
//! `/_sluice/stats` for windowed analysis). It is what the `local` traffic and
//! metrics providers drive, for the demo and for development; `sluice router`
//! runs it on its own.
//!
//! With affinity on ([`Router::set_affinity`]), a user (`x-user-id`, as the
//! load generator sends it) stays on the side first picked for them until the
//! pin expires, whatever the weight — as App Service's `x-ms-routing-name`
//! and ARR affinity cookies pin users to a slot.
//!
//! Two listeners. Users' traffic goes to the traffic listener, which only
//! proxies: a user cannot reach the admin API, and `/metrics` there is the
//! app's own. The admin API listens apart, on loopback only, and answers
//! tools alone (a loopback `Host`, no browser `Origin`): `GET|PUT
//! /_sluice/route`, `POST /_sluice/promote`, `POST /_sluice/revert`,
//! `GET /_sluice/stats?window=30s`, `GET /_sluice/health?role=canary`,
//! `GET /_sluice/preview`, `GET /metrics`.
//!
//! A request carrying `x-sluice-preview: canary` goes to the canary whatever
//! the weight (the preview step's way in for testers and smoke checks), and
//! is not counted in either side's numbers: they are users' traffic. A spec's `local` router `url` names the admin listener.

pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router as AxumRouter};
use serde::Deserialize;

use crate::domain::ids::Weight;
use serde_json::json;

pub use stats::{Role, Stats};

pub use crate::ports::local_router::{Route, StatsReport, Upstream, WindowStats, PREVIEW_HEADER, PREVIEW_VALUE};

/// The router's shared state.
pub struct Router {
    route: RwLock<Route>,
    changed_at: RwLock<Instant>,
    counter: AtomicU64,
    stats: Stats,
    client: reqwest::Client,
    /// How long a user stays pinned to a side; `None`: no affinity.
    affinity: RwLock<Option<Duration>>,
    pins: std::sync::Mutex<std::collections::HashMap<String, (Role, Instant)>>,
    /// Where users' traffic arrives, once [`Router::serve`] listens.
    traffic_url: std::sync::OnceLock<String>,
}

const MAX_BODY: usize = 10 * 1024 * 1024;

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Router {
    /// A router sending everything to `stable` until told otherwise.
    pub fn new(stable: Upstream, canary: Upstream) -> Arc<Router> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Arc::new(Router {
            route: RwLock::new(Route { weight: Weight::ZERO, promoted: false, promotion: None, stable, canary }),
            changed_at: RwLock::new(Instant::now()),
            counter: AtomicU64::new(0),
            stats: Stats::default(),
            client,
            affinity: RwLock::new(None),
            pins: std::sync::Mutex::new(std::collections::HashMap::new()),
            traffic_url: std::sync::OnceLock::new(),
        })
    }

    /// The current split.
    pub fn route(&self) -> Route {
        match self.route.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Route)) -> Route {
        let mut guard = match self.route.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let before = guard.clone();
        f(&mut guard);
        if *guard != before {
            if let Ok(mut t) = self.changed_at.write() {
                *t = Instant::now();
            }
        }
        guard.clone()
    }

    /// When the split last changed (for latency measurements).
    pub fn changed_at(&self) -> Instant {
        self.changed_at.read().map(|t| *t).unwrap_or_else(|_| Instant::now())
    }

    /// Sets the canary weight.
    pub fn set_weight(&self, weight: Weight) -> Route {
        self.update(|r| r.weight = weight)
    }

    /// Swaps the upstreams (the canary becomes stable), like a slot swap.
    /// A promotion named by when it was first asked for (`sinceMs`) swaps
    /// once however often it is retried, and a later rollout's, named
    /// otherwise, swaps again; no clocks are compared. Unnamed, it swaps
    /// once, until a revert undoes it.
    pub fn promote(&self, since_ms: Option<i64>) -> Route {
        self.update(|r| {
            let swap = match since_ms {
                Some(since) => r.promotion != Some(since),
                None => !r.promoted,
            };
            if swap {
                std::mem::swap(&mut r.stable, &mut r.canary);
                r.promoted = true;
                r.promotion = since_ms;
            }
            r.weight = Weight::ZERO;
        })
    }

    /// Sends everything to stable, swapping back first if asked and promoted.
    pub fn revert(&self, undo_promotion: bool) -> Route {
        self.update(|r| {
            if undo_promotion && r.promoted {
                std::mem::swap(&mut r.stable, &mut r.canary);
                r.promoted = false;
                r.promotion = None;
            }
            r.weight = Weight::ZERO;
        })
    }

    /// Numbers for both sides over the last `window_secs`.
    pub fn stats(&self, window_secs: u64) -> StatsReport {
        self.stats_until(window_secs, now_secs())
    }

    /// Numbers for both sides over the `window_secs` before `now` (Unix
    /// seconds), which must lie within the kept history.
    pub fn stats_until(&self, window_secs: u64, now: u64) -> StatsReport {
        StatsReport {
            window_secs,
            weight: self.route().weight,
            stable: self.stats.window(Role::Stable, window_secs, now),
            canary: self.stats.window(Role::Canary, window_secs, now),
        }
    }

    /// Pins each user to the side first picked for them, for `pin_for`
    /// (`None` turns affinity off and forgets the pins).
    pub fn set_affinity(&self, pin_for: Option<Duration>) {
        if let Ok(mut a) = self.affinity.write() {
            *a = pin_for;
        }
        if let Ok(mut pins) = self.pins.lock() {
            pins.clear();
        }
    }

    /// The side for a request: its user's pin while it lasts, else the split.
    fn role_for(&self, user: Option<&str>, weight: u8) -> Role {
        let pin_for = self.affinity.read().ok().and_then(|a| *a);
        let (Some(pin_for), Some(user), Ok(mut pins)) = (pin_for, user, self.pins.lock()) else { return self.pick(weight) };
        if let Some((role, at)) = pins.get(user) {
            if at.elapsed() < pin_for {
                return *role;
            }
        }
        let role = self.pick(weight);
        pins.insert(user.to_string(), (role, Instant::now()));
        role
    }

    /// Evenly spread: exactly `weight` of every 100 requests go to the canary.
    fn pick(&self, weight: u8) -> Role {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let w = weight as u64;
        if (n + 1) * w / 100 > n * w / 100 {
            Role::Canary
        } else {
            Role::Stable
        }
    }

    async fn proxy(self: Arc<Self>, request: Request) -> Response {
        let route = self.route();
        let user = request.headers().get("x-user-id").and_then(|v| v.to_str().ok());
        let preview = request.headers().get(PREVIEW_HEADER).is_some_and(|v| v.as_bytes() == PREVIEW_VALUE.as_bytes());
        let role = if preview { Role::Canary } else { self.role_for(user, route.weight.percent()) };
        let upstream = match role {
            Role::Stable => &route.stable,
            Role::Canary => &route.canary,
        };
        let (parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("{}{}", upstream.url.trim_end_matches('/'), path_and_query);
        let started = Instant::now();
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body over 10 MiB"),
        };
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(axum::http::header::HOST);
        let result = self.client.request(parts.method.clone(), &url).headers(headers).body(body).send().await;
        let (response, error) = match result {
            Ok(upstream_response) => {
                let status = upstream_response.status();
                let mut headers = upstream_response.headers().clone();
                strip_hop_by_hop(&mut headers);
                match upstream_response.bytes().await {
                    Ok(bytes) => (build_response(status, headers, bytes, role), status.is_server_error()),
                    Err(e) => (error_response(StatusCode::BAD_GATEWAY, &format!("upstream body failed: {e}")), true),
                }
            }
            Err(e) => (error_response(StatusCode::BAD_GATEWAY, &format!("upstream unreachable: {e}")), true),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !preview {
            self.stats.record(role, error, latency_ms, now_secs());
        }
        response
    }

    /// The traffic listener's app: the proxy, for every path.
    pub fn traffic_app(self: &Arc<Self>) -> AxumRouter {
        let router = self.clone();
        AxumRouter::new().fallback(move |request: Request| {
            let router = router.clone();
            async move { router.proxy(request).await }
        })
    }

    /// The admin listener's app: the split, stats, health and metrics.
    pub fn admin_app(self: &Arc<Self>) -> AxumRouter {
        AxumRouter::new()
            .route("/_sluice/route", get(get_route).put(put_route))
            .route("/_sluice/promote", post(promote))
            .route("/_sluice/revert", post(revert))
            .route("/_sluice/stats", get(get_stats))
            .route("/_sluice/health", get(health))
            .route("/_sluice/preview", get(preview))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn(from_a_local_tool))
    }

    /// Serves users' traffic on `traffic` and the admin API on `admin`,
    /// which must be a loopback address.
    pub async fn serve(self: &Arc<Self>, traffic: SocketAddr, admin: SocketAddr) -> std::io::Result<Listening> {
        if !admin.ip().is_loopback() {
            let refused = format!("admin address {admin}: the router's admin API listens on loopback only");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, refused));
        }
        let traffic_listener = tokio::net::TcpListener::bind(traffic).await?;
        let admin_listener = tokio::net::TcpListener::bind(admin).await?;
        let listening = Listening { traffic: traffic_listener.local_addr()?, admin: admin_listener.local_addr()? };
        let _ = self.traffic_url.set(listening.traffic_url());
        let (traffic_app, admin_app) = (self.traffic_app(), self.admin_app());
        tokio::spawn(async move {
            let _ = axum::serve(traffic_listener, traffic_app).await;
        });
        tokio::spawn(async move {
            let _ = axum::serve(admin_listener, admin_app).await;
        });
        Ok(listening)
    }
}

/// Where a router listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// Users' requests, proxied to stable or canary.
    pub traffic: SocketAddr,
    /// The admin API: what a spec's `local` router `url` names.
    pub admin: SocketAddr,
}

impl Listening {
    /// Where the load goes.
    pub fn traffic_url(&self) -> String {
        format!("http://{}", self.traffic)
    }

    /// What a spec's `local` router `url` names.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }
}

/// Refuses what a web page could send to the admin listener: a `Host` that
/// is not loopback (DNS rebinding) or any `Origin` (no page is the admin's).
async fn from_a_local_tool(request: Request, next: axum::middleware::Next) -> Response {
    let host = request.headers().get(axum::http::header::HOST).map(|h| h.to_str().unwrap_or(""));
    let loopback = |authority: &str| {
        let name = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority),
        };
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if host.is_some_and(|h| !loopback(h)) {
        return error_response(StatusCode::FORBIDDEN, "host: the router's admin API answers only to loopback names");
    }
    if request.headers().contains_key(axum::http::header::ORIGIN) {
        return error_response(StatusCode::FORBIDDEN, "origin: the router's admin API takes no requests from web pages");
    }
    next.run(request).await
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"] {
        headers.remove(name);
    }
}

fn build_response(status: reqwest::StatusCode, headers: HeaderMap, body: Bytes, role: Role) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.headers_mut().insert(HeaderName::from_static("x-sluice-role"), HeaderValue::from_static(role.as_str()));
    response
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": "router", "message": message}))).into_response()
}

/// Where testers reach the canary at any weight: the traffic listener, with the preview header.
async fn preview(State(router): State<Arc<Router>>) -> Response {
    let Some(url) = router.traffic_url.get() else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "the traffic listener is not serving yet");
    };
    Json(crate::domain::rollout::PreviewAddress {
        url: url.clone(),
        headers: [(PREVIEW_HEADER.to_string(), PREVIEW_VALUE.to_string())].into(),
        how: format!("the router sends requests carrying {PREVIEW_HEADER}: {PREVIEW_VALUE} to the canary, whatever the weight"),
    })
    .into_response()
}

async fn get_route(State(router): State<Arc<Router>>) -> Json<Route> {
    Json(router.route())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: i64,
}

async fn put_route(State(router): State<Arc<Router>>, body: Bytes) -> Response {
    let parsed: Result<WeightBody, _> = serde_json::from_slice(&body);
    match parsed {
        Ok(WeightBody { weight }) if (0..=100).contains(&weight) => {
            Json(router.set_weight(Weight::new(weight as u64).unwrap_or(Weight::ZERO))).into_response()
        }
        Ok(WeightBody { weight }) => error_response(StatusCode::BAD_REQUEST, &format!("weight: {weight} is not within 0..=100")),
        Err(e) => error_response(StatusCode::BAD_REQUEST, &format!("body: expected {{\"weight\": 0..100}}: {e}")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PromoteBody {
    /// When this promotion was first asked for (Unix ms).
    since_ms: Option<i64>,
}

/// An optional JSON body: empty is the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("body: {e}"))
}

async fn promote(State(router): State<Arc<Router>>, body: Bytes) -> Response {
    match optional_body::<PromoteBody>(&body) {
        Ok(b) => Json(router.promote(b.since_ms)).into_response(),
        Err(why) => error_response(StatusCode::BAD_REQUEST, &why),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RevertBody {
    #[serde(default)]
    undo_promotion: bool,
}

async fn revert(State(router): State<Arc<Router>>, body: Bytes) -> Response {
    match optional_body::<RevertBody>(&body) {
        Ok(b) => Json(router.revert(b.undo_promotion)).into_response(),
        Err(why) => error_response(StatusCode::BAD_REQUEST, &why),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    window: Option<String>,
    /// The window's end in Unix seconds (for `sluice replay`); default now.
    end: Option<u64>,
}

async fn get_stats(State(router): State<Arc<Router>>, Query(q): Query<StatsQuery>) -> Response {
    let window_ms = match q.window.as_deref().map(crate::domain::spec::parse_duration_ms) {
        None => 30_000,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => return error_response(StatusCode::BAD_REQUEST, &format!("window: {e}")),
    };
    let window_secs = (window_ms / 1000).max(1);
    let now = now_secs();
    let end = q.end.unwrap_or(now);
    let kept = stats::RING_SECONDS as u64 - 2;
    if end > now || now - end + window_secs > kept {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!(
                "end: the router keeps only the last {kept}s; a window of {window_secs}s ending {}s ago is outside it",
                now.saturating_sub(end)
            ),
        );
    }
    Json(router.stats_until(window_secs, end)).into_response()
}

#[derive(Deserialize)]
struct HealthQuery {
    role: Option<String>,
}

async fn health(State(router): State<Arc<Router>>, Query(q): Query<HealthQuery>) -> Response {
    let route = router.route();
    let upstream = match q.role.as_deref() {
        Some("stable") => route.stable,
        Some("canary") | None => route.canary,
        Some(other) => return error_response(StatusCode::BAD_REQUEST, &format!("role: '{other}' is not stable or canary")),
    };
    let url = format!("{}/health", upstream.url.trim_end_matches('/'));
    let outcome = router.client.get(&url).timeout(Duration::from_secs(3)).send().await;
    let (healthy, status) = match outcome {
        Ok(r) => (r.status().is_success(), Some(r.status().as_u16())),
        Err(_) => (false, None),
    };
    Json(json!({"healthy": healthy, "status": status, "version": upstream.version})).into_response()
}

async fn metrics(State(router): State<Arc<Router>>) -> Response {
    let route = router.route();
    let text = router.stats.prometheus([(Role::Stable, &route.stable.version), (Role::Canary, &route.canary.version)]);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(v: &str) -> Upstream {
        Upstream { name: v.into(), version: v.into(), url: format!("http://127.0.0.1:1/{v}") }
    }

    #[test]
    fn affinity_keeps_a_user_on_their_side_until_the_pin_expires() {
        let r = Router::new(up("v1"), up("v2"));
        r.set_affinity(Some(Duration::from_millis(150)));
        r.set_weight(Weight::FULL);
        assert_eq!(r.role_for(Some("ann"), 100), Role::Canary);
        r.revert(false);
        assert_eq!(r.role_for(Some("ann"), 0), Role::Canary, "pinned: the revert does not reach her yet");
        assert_eq!(r.role_for(Some("bob"), 0), Role::Stable, "a new user follows the split");
        assert_eq!(r.role_for(None, 0), Role::Stable, "no user, no pin");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(r.role_for(Some("ann"), 0), Role::Stable, "the pin expired");
        r.set_affinity(None);
        assert_eq!(r.role_for(Some("bob"), 100), Role::Canary, "affinity off: the split alone");
    }

    #[test]
    fn weight_is_exact_over_every_hundred_requests() {
        let r = Router::new(up("v1"), up("v2"));
        for w in [0u8, 1, 5, 20, 33, 50, 99, 100] {
            let canary = (0..100).filter(|_| r.pick(w) == Role::Canary).count();
            assert_eq!(canary, w as usize, "weight {w}");
        }
    }

    #[test]
    fn promote_swaps_and_revert_can_undo() {
        let r = Router::new(up("v1"), up("v2"));
        r.set_weight(Weight::FULL);
        let p = r.promote(None);
        assert_eq!((p.weight, p.promoted, p.stable.version.as_str()), (Weight::ZERO, true, "v2"));
        assert_eq!(r.promote(None), p, "promoting twice changes nothing");
        let back = r.revert(true);
        assert_eq!((back.weight, back.promoted, back.stable.version.as_str()), (Weight::ZERO, false, "v1"));
        r.set_weight(Weight::new(30).expect("weight"));
        assert_eq!(r.revert(false).stable.version, "v1");
    }

    #[test]
    fn a_promotion_retried_swaps_once_and_a_later_one_swaps_again() {
        let r = Router::new(up("v1"), up("v2"));
        assert_eq!(r.promote(Some(1_000)).stable.version, "v2");
        assert_eq!(r.promote(Some(1_000)).stable.version, "v2", "the same promotion retried changes nothing");
        // The next rollout's promotion goes from v2 back to v1 through the same router.
        let again = r.promote(Some(2_000));
        assert_eq!((again.stable.version.as_str(), again.canary.version.as_str(), again.promoted), ("v1", "v2", true));
    }
}
