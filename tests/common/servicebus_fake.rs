//! A wire-level fake of the Service Bus REST API, as the 0.21 crate speaks
//! it: it checks every request exactly (paths, the SAS `Authorization`
//! header — it recomputes the signature —, the `BrokerProperties` JSON) and
//! behaves like a queue with duplicate detection, scheduled messages,
//! peek-lock, a lock duration, delivery counts and a dead-letter queue.
//! Requests are redirected to it by an `azure_core::HttpClient` that
//! rewrites the crate's hard-coded `https://{ns}.servicebus.windows.net`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const NAMESPACE: &str = "sluice-test";
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
pub const KEY: &str = "c2x1aWNlLXRlc3Qta2V5LW5vdC1hLXJlYWwtc2VjcmV0PQ==";
pub const MAX_DELIVERY: u32 = 10;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub broker_properties: Option<Value>,
    pub content_type: Option<String>,
    /// `None` if the SAS header was valid, else why not.
    pub auth_problem: Option<String>,
}

#[derive(Clone)]
struct Message {
    seq: i64,
    id: String,
    body: String,
    enqueued: DateTime<Utc>,
    visible: DateTime<Utc>,
    deliveries: u32,
    lock: Option<(String, DateTime<Utc>)>,
    ttl: f64,
}

#[derive(Default)]
struct Entity {
    messages: Vec<Message>,
    dead: Vec<Message>,
    seen_ids: HashMap<String, DateTime<Utc>>,
}

struct Inner {
    lock: Duration,
    next_seq: i64,
    entities: HashMap<String, Entity>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct FakeServiceBus {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn expected_signature(string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).expect("key");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks `SharedAccessSignature sr=…&sig=…&se=…&skn=…` against the request.
fn check_sas(headers: &HeaderMap, resource: &str) -> Option<String> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else { return Some("no Authorization header".into()) };
    let Some(params) = auth.strip_prefix("SharedAccessSignature ") else { return Some("not a SharedAccessSignature".into()) };
    let fields: HashMap<&str, &str> = params.split('&').filter_map(|p| p.split_once('=')).collect();
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (fields.get("sr"), fields.get("sig"), fields.get("se"), fields.get("skn")) else {
        return Some(format!("missing SAS fields in '{params}'"));
    };
    if *skn != KEY_NAME {
        return Some(format!("skn {skn} is not {KEY_NAME}"));
    }
    let expiry: i64 = se.parse().unwrap_or(0);
    if expiry <= Utc::now().timestamp() {
        return Some("expired token".into());
    }
    // The signature is over the URL-encoded resource, a newline, and the expiry.
    if url_decode(sig) != expected_signature(&format!("{sr}\n{se}")) {
        return Some("signature mismatch".into());
    }
    let decoded = url_decode(sr);
    if !resource.starts_with(decoded.split('?').next().unwrap_or("")) {
        return Some(format!("token for {decoded} used on {resource}"));
    }
    None
}

impl FakeServiceBus {
    pub async fn start(lock: Duration) -> FakeServiceBus {
        let inner = Arc::new(Mutex::new(Inner { lock, next_seq: 1, entities: HashMap::new(), seen: Vec::new() }));
        let fake = FakeServiceBus { addr: "127.0.0.1:0".parse().expect("addr"), inner };
        let app = axum::Router::new().fallback(handle).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServiceBus { addr, ..fake }
    }

    /// Messages still in the queues: (entity, id, visible at, locked until, deliveries).
    pub fn pending(&self) -> Vec<String> {
        let inner = self.inner.lock().expect("fake");
        inner
            .entities
            .iter()
            .flat_map(|(name, e)| {
                e.messages.iter().map(move |m| {
                    format!("{name} {} visible {} lock {:?} deliveries {}", m.id, m.visible, m.lock.as_ref().map(|l| l.1), m.deliveries)
                })
            })
            .collect()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().expect("fake").seen.clone()
    }

    /// An `azure_core` HTTP client that sends the crate's requests here.
    pub fn http_client(&self) -> Arc<dyn azure_core::HttpClient> {
        redirecting(self.addr, azure_core::new_http_client())
    }

    pub fn connection_string(&self) -> String {
        sas_connection_string()
    }
}

/// The fake namespace's connection string (its requests go where a [`redirecting`] client sends them).
pub fn sas_connection_string() -> String {
    format!("Endpoint=sb://{NAMESPACE}.servicebus.windows.net/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}")
}

/// An `azure_core` HTTP client that sends the crate's requests for the
/// namespace to `to` on loopback, through `inner`.
pub fn redirecting(to: SocketAddr, inner: Arc<dyn azure_core::HttpClient>) -> Arc<dyn azure_core::HttpClient> {
    Arc::new(Redirect { to, inner })
}

#[derive(Debug)]
struct Redirect {
    to: SocketAddr,
    inner: Arc<dyn azure_core::HttpClient>,
}

#[async_trait]
impl azure_core::HttpClient for Redirect {
    async fn execute_request(&self, request: &azure_core::Request) -> azure_core::Result<azure_core::Response> {
        let mut r = request.clone();
        let url = r.url_mut();
        assert_eq!(url.host_str(), Some(format!("{NAMESPACE}.servicebus.windows.net").as_str()), "the crate talks to the namespace host");
        assert_eq!(url.scheme(), "https");
        let _ = url.set_scheme("http");
        let _ = url.set_host(Some("127.0.0.1"));
        let _ = url.set_port(Some(self.to.port()));
        self.inner.execute_request(&r).await
    }
}

fn answer(status: StatusCode, body: &str) -> Response {
    (status, body.to_string()).into_response()
}

async fn handle(State(fake): State<FakeServiceBus>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let resource = format!("https://{NAMESPACE}.servicebus.windows.net{path}");
    let auth_problem = check_sas(&parts.headers, &resource);
    let broker_properties = parts.headers.get("brokerproperties").and_then(|v| v.to_str().ok()).and_then(|v| serde_json::from_str(v).ok());
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut inner = fake.inner.lock().expect("fake");
    inner.seen.push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        broker_properties: broker_properties.clone(),
        content_type,
        auth_problem: auth_problem.clone(),
    });
    if let Some(problem) = auth_problem {
        return answer(StatusCode::UNAUTHORIZED, &format!("<Error><Code>401</Code><Detail>{problem}</Detail></Error>"));
    }
    let segments: Vec<String> = path.trim_matches('/').split('/').map(url_decode).collect();
    // {queue}[/$deadletterqueue]/messages[/head | /{seq}/{lock}]
    let Some(at) = segments.iter().position(|s| s == "messages") else { return answer(StatusCode::NOT_FOUND, "no such entity") };
    let entity_name = segments[..at].join("/");
    let rest = &segments[at + 1..];
    let now = Utc::now();
    let lock = TimeDelta::from_std(inner.lock).expect("lock");
    let (dlq_of, entity_key) = match entity_name.strip_suffix("/$deadletterqueue") {
        Some(q) => (Some(q.to_string()), entity_name.clone()),
        None => (None, entity_name.clone()),
    };
    let next_seq = inner.next_seq;
    match (&parts.method, rest.len()) {
        (&Method::POST, 0) if dlq_of.is_none() => {
            let props = broker_properties.unwrap_or(json!({}));
            let Some(id) = props.get("MessageId").and_then(Value::as_str).map(str::to_string) else {
                return answer(StatusCode::BAD_REQUEST, "BrokerProperties.MessageId is required by this fake");
            };
            let visible = match props.get("ScheduledEnqueueTimeUtc").and_then(Value::as_str) {
                Some(s) => match DateTime::parse_from_rfc2822(s) {
                    Ok(t) => t.with_timezone(&Utc),
                    Err(_) => return answer(StatusCode::BAD_REQUEST, &format!("ScheduledEnqueueTimeUtc '{s}' is not RFC 2822")),
                },
                None => now,
            };
            let ttl = props.get("TimeToLive").and_then(Value::as_f64).unwrap_or(1209600.0);
            inner.next_seq += 1;
            let entity = inner.entities.entry(entity_key).or_default();
            entity.seen_ids.retain(|_, t| now - *t < TimeDelta::minutes(10));
            if entity.seen_ids.contains_key(&id) {
                return answer(StatusCode::CREATED, "");
            }
            entity.seen_ids.insert(id.clone(), now);
            entity.messages.push(Message {
                seq: next_seq,
                id,
                body: String::from_utf8_lossy(&body).into_owned(),
                enqueued: now,
                visible,
                deliveries: 0,
                lock: None,
                ttl,
            });
            answer(StatusCode::CREATED, "")
        }
        (&Method::POST, 1) if rest[0] == "head" => {
            let entity = inner.entities.entry(entity_key.clone()).or_default();
            // Expired locks: the delivery is over; past the limit the message dies.
            let mut expired = Vec::new();
            for (i, m) in entity.messages.iter_mut().enumerate() {
                if matches!(m.lock, Some((_, until)) if until <= now) {
                    m.lock = None;
                    if m.deliveries >= MAX_DELIVERY {
                        expired.push(i);
                    }
                }
            }
            for i in expired.into_iter().rev() {
                let m = entity.messages.remove(i);
                entity.dead.push(m);
            }
            let candidate = entity.messages.iter_mut().filter(|m| m.lock.is_none() && m.visible <= now).min_by_key(|m| (m.visible, m.seq));
            let Some(m) = candidate else { return answer(StatusCode::NO_CONTENT, "") };
            // Reading the dead-letter queue shows how often the message was delivered before it died.
            if dlq_of.is_none() {
                m.deliveries += 1;
            }
            let token = uuid::Uuid::new_v4().to_string();
            let until = now + lock;
            m.lock = Some((token.clone(), until));
            let props = json!({
                "DeliveryCount": m.deliveries,
                "EnqueuedSequenceNumber": m.seq,
                "EnqueuedTimeUtc": rfc1123(m.enqueued),
                "LockToken": token,
                "LockedUntilUtc": rfc1123(until),
                "MessageId": m.id,
                "SequenceNumber": m.seq,
                "State": "Active",
                "TimeToLive": m.ttl,
            });
            let location = format!("https://{NAMESPACE}.servicebus.windows.net/{entity_name}/messages/{}/{token}", m.seq);
            let mut response = answer(StatusCode::CREATED, &m.body);
            response.headers_mut().insert("brokerproperties", props.to_string().parse().expect("header"));
            response.headers_mut().insert("location", location.parse().expect("header"));
            response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
            response
        }
        (method, 2) => {
            let (seq, token) = (rest[0].parse::<i64>().unwrap_or(-1), rest[1].clone());
            let entity = inner.entities.entry(entity_key).or_default();
            let Some(i) =
                entity.messages.iter().position(|m| m.seq == seq && matches!(&m.lock, Some((t, until)) if *t == token && *until > now))
            else {
                return answer(StatusCode::GONE, "the lock was lost");
            };
            match *method {
                Method::DELETE => {
                    entity.messages.remove(i);
                    answer(StatusCode::OK, "")
                }
                Method::PUT => {
                    let m = &mut entity.messages[i];
                    m.lock = None;
                    if m.deliveries >= MAX_DELIVERY {
                        let m = entity.messages.remove(i);
                        entity.dead.push(m);
                    }
                    answer(StatusCode::OK, "")
                }
                Method::POST => {
                    entity.messages[i].lock = Some((token, now + lock));
                    answer(StatusCode::OK, "")
                }
                _ => answer(StatusCode::METHOD_NOT_ALLOWED, ""),
            }
        }
        _ => answer(StatusCode::NOT_FOUND, "unsupported"),
    }
    .tap_dead_letters(&mut inner, dlq_of.as_deref())
}

trait TapDeadLetters {
    fn tap_dead_letters(self, inner: &mut Inner, dlq_of: Option<&str>) -> Self;
}

impl TapDeadLetters for Response {
    /// Keeps the dead-letter queue entity (`{queue}/$deadletterqueue`) fed from its queue's dead messages.
    fn tap_dead_letters(self, inner: &mut Inner, _dlq_of: Option<&str>) -> Self {
        let names: Vec<String> = inner.entities.keys().filter(|k| !k.ends_with("/$deadletterqueue")).cloned().collect();
        for name in names {
            let dead: Vec<Message> = inner.entities.get_mut(&name).map(|e| std::mem::take(&mut e.dead)).unwrap_or_default();
            if !dead.is_empty() {
                let dlq = inner.entities.entry(format!("{name}/$deadletterqueue")).or_default();
                for mut m in dead {
                    m.lock = None;
                    dlq.messages.push(m);
                }
            }
        }
        self
    }
}
