//! The embedded local host (`sluice up`): reads `host.json` and
//! `functions/*/function.json` like the Functions host, serves the HTTP
//! functions under the route prefix, runs each timer on its NCRONTAB
//! schedule and consumes the queue with host.json's concurrency. State and
//! queue live in one SQLite file, so killing the process at any point and
//! starting it again resumes every rollout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::definitions::{FunctionDef, Trigger};
use super::{load_app_or_embedded, HostError, HostSettings};
use crate::functions::{self, App, HandlerError, HttpResponse};
use crate::ports::clock::{Clock, SystemClock};
use crate::ports::env::AdapterEnv;
use crate::ports::queue::embedded::EmbeddedQueue;
use crate::ports::queue::{Delivery, Queue};
use crate::ports::store::sqlite::SqliteStore;
use crate::ports::store::Store;
use crate::shell::engine::Engine;

/// How long a received message stays locked (renewed while it is worked on).
const LOCK: Duration = Duration::from_secs(30);

/// How to run the local host.
#[derive(Clone)]
pub struct LocalConfig {
    /// Directory holding `host.json` and `functions/` (the embedded copies are used if absent).
    pub root: PathBuf,
    /// Where state lives (`.sluice`).
    pub data_dir: PathBuf,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The alert webhook token (`SLUICE_ALERT_TOKEN`); `None` accepts any caller.
    pub alert_token: Option<String>,
    /// Sluice's own key (`SLUICE_API_KEY`); `None` asks none.
    pub api_key: Option<String>,
    /// People's actions need App Service authentication's principal (`SLUICE_REQUIRE_PRINCIPAL`).
    pub require_principal: bool,
    /// The issuers whose bearer tokens the handlers check (none: names as before).
    pub issuers: Vec<crate::ports::identity::IssuerConfig>,
    /// Base URL for links; defaults to the listening address.
    pub public_url: Option<String>,
    /// Who the browser is signed in as (`sluice up --as NAME`): the host
    /// adds `x-sluice-user` to requests that carry no identity, as App
    /// Service authentication adds the principal in Azure, so the
    /// dashboard's buttons act as that person.
    pub signed_in: Option<String>,
    /// The token every write but an alert must carry (`x-sluice-local-token`):
    /// `sluice up` makes one and keeps it in its data directory (0600), so
    /// another user or process on the machine cannot act through it.
    pub write_token: Option<String>,
}

/// Its secrets (the alert token, the key, the write token) are left out.
impl std::fmt::Debug for LocalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConfig")
            .field("root", &self.root)
            .field("data_dir", &self.data_dir)
            .field("addr", &self.addr)
            .field("require_principal", &self.require_principal)
            .field("issuers", &self.issuers)
            .field("public_url", &self.public_url)
            .field("signed_in", &self.signed_in)
            .finish_non_exhaustive()
    }
}

/// The header a write to the local host carries its token in.
pub const LOCAL_TOKEN_HEADER: &str = "x-sluice-local-token";
pub use crate::functions::dashboard::PAGE_TOKEN_HEADER;

/// A running local host.
pub struct RunningHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The handlers' context (engine, store, queue).
    pub app: Arc<App>,
    /// The function definitions it serves.
    pub functions: Vec<FunctionDef>,
    /// The token writes must carry, if the host asks for one.
    pub write_token: Option<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHost {
    /// Base URL, e.g. `http://127.0.0.1:7071`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving, timers and consumers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }

    /// Waits until the host stops (it does not on its own).
    pub async fn wait(&mut self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.changed().await;
    }
}

struct HttpContext {
    app: Arc<App>,
    settings: HostSettings,
    defs: Vec<FunctionDef>,
    signed_in: Option<axum::http::HeaderValue>,
    /// The names this host answers to (loopback, the address it listens on, the public URL's).
    hosts: Vec<String>,
    /// The public URL's origin (`https://name`): a tunnel's pages are this host's own pages too.
    public_origin: Option<String>,
    write_token: Option<String>,
}

/// Opens the embedded store and queue in `data_dir` and builds the engine.
pub fn embedded_engine(data_dir: &std::path::Path, public_url: String) -> Result<Arc<Engine>, HostError> {
    embedded_engine_with(data_dir, public_url, Arc::new(|name| std::env::var(name).ok()))
}

/// The same, with app settings read through `settings` (benchmarks and tests bring their own).
pub fn embedded_engine_with(
    data_dir: &std::path::Path,
    public_url: String,
    settings: crate::ports::env::SettingsLookup,
) -> Result<Arc<Engine>, HostError> {
    crate::ports::env::create_private_dir(data_dir)
        .map_err(|e| HostError::Storage(format!("cannot create {}: {e}", data_dir.display())))?;
    let db = data_dir.join("sluice.db");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).map_err(|e| HostError::Storage(e.to_string()))?);
    let queue: Arc<dyn Queue> = Arc::new(EmbeddedQueue::open(&db, clock.clone()).map_err(|e| HostError::Storage(e.to_string()))?);
    let env = AdapterEnv::with_settings(data_dir.to_path_buf(), public_url, settings);
    Ok(Arc::new(Engine::new(store, queue, env, clock)))
}

/// Starts the host with the embedded store and queue in `config.data_dir`.
pub async fn start(config: LocalConfig) -> Result<RunningHost, HostError> {
    start_with(config, |data_dir, public_url| async move { embedded_engine(&data_dir, public_url) }).await
}

/// Starts the host with an engine built by `make` (given the data directory
/// and the public URL) — how the Azure adapters and tests plug in.
pub async fn start_with<F, Fut>(config: LocalConfig, make: F) -> Result<RunningHost, HostError>
where
    F: FnOnce(PathBuf, String) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<Engine>, HostError>>,
{
    let (settings, defs) = load_app_or_embedded(&config.root)?;
    let listener =
        tokio::net::TcpListener::bind(config.addr).await.map_err(|source| HostError::Bind { addr: config.addr.to_string(), source })?;
    let addr = listener.local_addr().map_err(|source| HostError::Bind { addr: config.addr.to_string(), source })?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let engine = make(config.data_dir.clone(), public_url).await?;
    let tokens = crate::functions::access::verifier(&config.issuers).map_err(HostError::Config)?;
    let app = Arc::new(App {
        engine,
        alert_token: config.alert_token.clone(),
        require_principal: config.require_principal,
        tokens,
        api_key: config.api_key.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    for def in &defs {
        match &def.trigger {
            Trigger::Timer { schedule } => {
                let cron = super::definitions::ncrontab(schedule)
                    .map_err(|e| HostError::Config(format!("functions/{}: schedule '{schedule}': {e}", def.name)))?;
                tasks.push(tokio::spawn(run_timer(app.clone(), def.name.clone(), cron, stop_rx.clone())));
            }
            Trigger::ServiceBus { .. } => {
                for _ in 0..settings.max_concurrent_calls {
                    tasks.push(tokio::spawn(consume(app.clone(), def.name.clone(), stop_rx.clone())));
                }
            }
            Trigger::Http { .. } => {}
        }
    }

    let signed_in = match &config.signed_in {
        Some(name) => Some(
            crate::domain::ids::Actor::parse(name)
                .ok()
                .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
                .ok_or_else(|| HostError::Config(format!("--as: '{}' is not a user name", crate::domain::ids::shown(name))))?,
        ),
        None => None,
    };
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    hosts.push(addr.ip().to_string());
    let public = config.public_url.as_deref().and_then(|u| reqwest::Url::parse(u).ok());
    hosts.extend(public.as_ref().and_then(|u| u.host_str().map(str::to_ascii_lowercase)));
    let public_origin = public.map(|u| u.origin()).filter(|o| o.is_tuple()).map(|o| o.ascii_serialization());
    let write_token = config.write_token.clone();
    let ctx = Arc::new(HttpContext {
        app: app.clone(),
        settings,
        defs: defs.clone(),
        signed_in,
        hosts,
        public_origin,
        write_token: write_token.clone(),
    });
    let router = axum::Router::new().fallback(dispatch).with_state(ctx);
    tasks.push(super::serve_until_stopped(listener, router, stop_rx.clone()));
    Ok(RunningHost { addr, app, functions: defs, write_token, stop, tasks })
}

async fn dispatch(State(ctx): State<Arc<HttpContext>>, mut request: Request) -> Response {
    if let Err(refusal) = from_this_machine(&ctx.hosts, ctx.public_origin.as_deref(), request.headers()) {
        return to_axum(refusal.into());
    }
    if let Err(refusal) = carries_the_token(&ctx, &request) {
        return to_axum(refusal.into());
    }
    // The dashboard learns the token from the host only (its own page, same origin).
    request.headers_mut().remove(PAGE_TOKEN_HEADER);
    if let Some(token) = ctx.write_token.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        request.headers_mut().insert(PAGE_TOKEN_HEADER, token);
    }
    if let Some(user) = &ctx.signed_in {
        request.headers_mut().entry("x-sluice-user").or_insert_with(|| user.clone());
    }
    if request.uri().path() == "/" {
        let names: Vec<&str> = ctx.defs.iter().map(|d| d.name.as_str()).collect();
        return to_axum(HttpResponse::json(200, &serde_json::json!({"sluice": env!("CARGO_PKG_VERSION"), "functions": names})));
    }
    super::dispatch_http(&ctx.app, &ctx.settings.route_prefix, &ctx.defs, request).await
}

/// Refuses what a web page could send from elsewhere: a `Host` this host
/// does not answer to (DNS rebinding: a page's own name pointed at
/// 127.0.0.1) and an `Origin` other than this host's own (a cross-site
/// request). A browser always sends `Origin` on a cross-site POST; tools
/// such as the CLI send none. Behind a tunnel (`--public-url https://…`)
/// the page's origin is the public URL's.
fn from_this_machine(
    hosts: &[String],
    public_origin: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Result<(), crate::functions::error::ApiError> {
    use crate::functions::error::ApiError;
    let host_of = |authority: &str| -> String {
        let name = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority),
        };
        name.to_ascii_lowercase()
    };
    let host = headers.get(axum::http::header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}").to_string());
    if let Some(host) = &host {
        if !hosts.contains(&host_of(host)) {
            let shown = crate::domain::ids::shown(host);
            return Err(ApiError::new(403, "forbidden", format!("host '{shown}': this local Sluice answers only to this machine's names"))
                .field("host"));
        }
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = host.as_deref().is_some_and(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")))
            || public_origin.is_some_and(|own| origin.eq_ignore_ascii_case(own));
        if !same {
            let shown = crate::domain::ids::shown(origin);
            return Err(
                ApiError::new(403, "forbidden", format!("origin '{shown}': only this host's own pages may call it")).field("origin")
            );
        }
    }
    Ok(())
}

/// A write (anything but GET, HEAD, OPTIONS) must carry the host's token;
/// the alert webhook has its own (`SLUICE_ALERT_TOKEN`) and Slack's clicks
/// their signature (`SLUICE_SLACK_SIGNING_SECRET`), and neither sender
/// knows anything of this one.
fn carries_the_token(ctx: &HttpContext, request: &Request) -> Result<(), crate::functions::error::ApiError> {
    let Some(expected) = &ctx.write_token else { return Ok(()) };
    if matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    let own_check = |route: &str| match ctx.settings.route_prefix.trim_matches('/') {
        "" => format!("/{route}"),
        prefix => format!("/{prefix}/{route}"),
    };
    let path = request.uri().path().trim_end_matches('/');
    if path == own_check("alerts") || path == own_check("slack") {
        return Ok(());
    }
    let given = request.headers().get(LOCAL_TOKEN_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    match bool::from(subtle::ConstantTimeEq::ct_eq(given, expected.as_bytes())) {
        true => Ok(()),
        false => Err(crate::functions::error::ApiError::new(
            401,
            "unauthorized",
            "writes to this local Sluice carry its token: the CLI reads it from the data directory's local-token file (or SLUICE_LOCAL_TOKEN)",
        )
        .field(LOCAL_TOKEN_HEADER)),
    }
}

/// Turns a handler response into an axum one.
pub fn to_axum(r: HttpResponse) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(&r.content_type) {
        response.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
    }
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// Runs a timer function on its schedule, and once at start: a local host
/// that was stopped may have missed sweeps (a message lost with the process
/// would otherwise wait for the next occurrence, minutes away).
async fn run_timer(app: Arc<App>, name: String, cron: croner::Cron, mut stop: watch::Receiver<bool>) {
    if let Err(e) = functions::invoke_timer(&app, &name, true).await {
        tracing::warn!(function = %name, error = %e, "timer failed at start; the next occurrence runs as scheduled");
    }
    loop {
        let now = Utc::now();
        let Ok(next) = cron.find_next_occurrence(&now, false) else {
            tracing::error!(function = %name, "the schedule has no next occurrence");
            return;
        };
        let delay = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        let past_due = (Utc::now() - next).num_seconds() > 5;
        match functions::invoke_timer(&app, &name, past_due).await {
            Ok(report) => tracing::debug!(function = %name, %report, "timer ran"),
            Err(e) => tracing::warn!(function = %name, error = %e, "timer failed; the next occurrence runs as scheduled"),
        }
    }
}

/// Drains the queue for one queue-triggered function until stopped.
pub(crate) async fn consume(app: Arc<App>, name: String, mut stop: watch::Receiver<bool>) {
    let queue = app.engine.queue.clone();
    let wake = queue.wakeup();
    loop {
        if *stop.borrow() {
            return;
        }
        let notified = wake.as_ref().map(|w| w.clone());
        let notify_future = async {
            match &notified {
                Some(n) => n.notified().await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(notify_future);
        match queue.receive(LOCK).await {
            Ok(Some(delivery)) => process(&app, &name, &queue, delivery).await,
            Ok(None) => {
                let idle = match queue.next_visible_at().await {
                    Some(at) => (at - app.engine.clock.now())
                        .to_std()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(5), Duration::from_millis(500)),
                    None => Duration::from_millis(500),
                };
                tokio::select! {
                    _ = &mut notify_future => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(e) => {
                tracing::warn!(function = %name, error = %e, "queue receive failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn process(app: &Arc<App>, name: &str, queue: &Arc<dyn Queue>, delivery: Delivery) {
    let renewer = {
        let queue = queue.clone();
        let d = delivery.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LOCK / 3).await;
                if queue.renew(&d, LOCK).await.is_err() {
                    return;
                }
            }
        })
    };
    let result = functions::invoke_queue(app, name, &delivery.body).await;
    renewer.abort();
    let settle = match result {
        Ok(()) => queue.complete(&delivery).await,
        Err(HandlerError::Permanent(reason)) => {
            tracing::error!(function = %name, message = %delivery.id, %reason, "message can never succeed; acknowledged without retry");
            queue.complete(&delivery).await
        }
        Err(HandlerError::Transient(reason)) => {
            tracing::warn!(function = %name, message = %delivery.id, delivery = delivery.delivery_count, %reason, "handler failed; message abandoned for redelivery");
            queue.abandon(&delivery).await
        }
    };
    if let Err(e) = settle {
        tracing::warn!(function = %name, message = %delivery.id, error = %e, "could not settle the message; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let config = LocalConfig {
            root: PathBuf::from("."),
            data_dir: PathBuf::from(".sluice"),
            addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            alert_token: Some("alert-secret-0123456789".into()),
            api_key: Some("api-secret-0123456789abcdef".into()),
            require_principal: false,
            issuers: Vec::new(),
            public_url: None,
            signed_in: Some("alice".into()),
            write_token: Some("write-secret-0123456789".into()),
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("alice") && shown.contains("7071"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
