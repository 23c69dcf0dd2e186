//! The Azure Service Bus queue (azure_messaging_servicebus 0.21, REST).
//! Sends carry `MessageId` (so the queue's duplicate detection drops
//! repeats), `ScheduledEnqueueTimeUtc` for waits, and a `TimeToLive`;
//! receiving is peek-lock, with complete (`DELETE`), abandon (`PUT`) and
//! renew (`POST`) on the lock location. The lock duration, the maximum
//! delivery count and the dead-letter queue are the queue's own settings
//! (the Bicep sets them: 60 s, 10, duplicate detection on).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::{HttpClient, StatusCode};
use azure_messaging_servicebus::prelude::*;
use azure_messaging_servicebus::service_bus::{PeekLockResponse, SendMessageOptions, SettableBrokerProperties};
use chrono::{DateTime, Utc};

use super::{DeadLetter, Delivery, OutMessage, Queue, QueueError, SendOutcome};

/// How long a step message lives after it becomes visible.
const TIME_TO_LIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A Service Bus connection string, parsed. The key is kept out of `Debug`.
#[derive(Clone)]
pub struct ServiceBusConnection {
    /// Namespace name (`{namespace}.servicebus.windows.net`).
    pub namespace: String,
    /// `SharedAccessKeyName`.
    pub key_name: String,
    key: String,
    /// `EntityPath`, if the string is scoped to one queue.
    pub entity_path: Option<String>,
}

impl std::fmt::Debug for ServiceBusConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusConnection")
            .field("namespace", &self.namespace)
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("entity_path", &self.entity_path)
            .finish()
    }
}

fn config(message: impl Into<String>) -> QueueError {
    QueueError::Config(format!("Service Bus connection string: {}", message.into()))
}

impl ServiceBusConnection {
    /// Parses `Endpoint=sb://{ns}.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=…]`.
    /// Errors name the missing or malformed part and never quote the key.
    pub fn parse(text: &str) -> Result<Self, QueueError> {
        let mut parts = HashMap::new();
        for (i, piece) in text.split(';').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let Some((k, v)) = piece.split_once('=') else {
                return Err(config(format!("part {} is not key=value", i + 1)));
            };
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let endpoint = parts.get("endpoint").ok_or_else(|| config("Endpoint is missing"))?;
        let host = endpoint
            .strip_prefix("sb://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .ok_or_else(|| config(format!("Endpoint '{endpoint}' must start with sb://")))?
            .trim_end_matches('/');
        let namespace = host
            .strip_suffix(".servicebus.windows.net")
            .filter(|n| !n.is_empty() && !n.contains('.'))
            .ok_or_else(|| config(format!("Endpoint host '{host}' is not {{namespace}}.servicebus.windows.net")))?
            .to_string();
        let key_name =
            parts.get("sharedaccesskeyname").filter(|v| !v.is_empty()).ok_or_else(|| config("SharedAccessKeyName is missing"))?.clone();
        let key = parts.get("sharedaccesskey").filter(|v| !v.is_empty()).ok_or_else(|| config("SharedAccessKey is missing"))?.clone();
        Ok(ServiceBusConnection { namespace, key_name, key, entity_path: parts.get("entitypath").cloned() })
    }
}

/// A Service Bus queue.
pub struct ServiceBusQueue {
    client: QueueClient,
    dead_letter: QueueClient,
    locks: Mutex<HashMap<String, Arc<PeekLockResponse>>>,
    lock_duration: Duration,
    operations: AtomicU64,
    sends: AtomicU64,
}

fn http_status(e: &azure_core::Error) -> Option<StatusCode> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

fn unavailable(e: azure_core::Error) -> QueueError {
    QueueError::Unavailable(crate::ports::azure::transport::describe(&e))
}

/// The scheduled time as Service Bus takes it: whole seconds, rounded up, so a
/// message never becomes visible before its time.
fn to_time(t: DateTime<Utc>) -> Option<time::OffsetDateTime> {
    let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    time::OffsetDateTime::from_unix_timestamp(secs).ok()
}

fn from_time(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

impl ServiceBusQueue {
    /// A queue client over `http` (any `azure_core::HttpClient`; tests point it at a fake).
    /// `lock_duration` is the queue's configured lock duration.
    pub fn new(
        connection: &ServiceBusConnection,
        queue: &str,
        http: Arc<dyn HttpClient>,
        lock_duration: Duration,
    ) -> Result<Self, QueueError> {
        if queue.is_empty() || queue.contains(['?', '#']) {
            return Err(QueueError::Config(format!("queue name '{queue}' is not valid")));
        }
        let make = |name: String| {
            QueueClient::new(http.clone(), connection.namespace.clone(), name, connection.key_name.clone(), connection.key.clone())
                .map_err(|e| QueueError::Config(format!("Service Bus client: {e}")))
        };
        Ok(ServiceBusQueue {
            client: make(queue.to_string())?,
            dead_letter: make(format!("{queue}/$deadletterqueue"))?,
            locks: Mutex::new(HashMap::new()),
            lock_duration,
            operations: AtomicU64::new(0),
            sends: AtomicU64::new(0),
        })
    }

    fn count(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages sent so far (Sluice's own cost per step; receiving and
    /// settling is the Functions host's work in Azure).
    pub fn sends(&self) -> u64 {
        self.sends.load(Ordering::Relaxed)
    }

    fn take_lock(&self, token: &str) -> Option<Arc<PeekLockResponse>> {
        self.locks.lock().ok()?.remove(token)
    }

    async fn peek(&self, client: &QueueClient) -> Result<Option<(Delivery, PeekLockResponse)>, QueueError> {
        let response = client.peek_lock_message2(Some(Duration::from_secs(1))).await.map_err(unavailable)?;
        match *response.status() {
            StatusCode::NoContent => Ok(None),
            StatusCode::Created | StatusCode::Ok => {
                let props = response
                    .broker_properties()
                    .ok_or_else(|| QueueError::Unavailable("a locked message came without BrokerProperties".into()))?;
                let delivery = Delivery {
                    id: props.message_id.clone(),
                    body: response.body(),
                    delivery_count: props.delivery_count.max(0) as u32,
                    lock_token: props.lock_token.clone(),
                    locked_until: from_time(props.locked_until_utc),
                    enqueued_at: props.enqueued_time_utc.map(from_time).unwrap_or_else(Utc::now),
                };
                Ok(Some((delivery, response)))
            }
            other => Err(QueueError::Unavailable(format!("peek-lock answered HTTP {other}"))),
        }
    }
}

fn settle_error(e: azure_core::Error) -> QueueError {
    match http_status(&e) {
        Some(StatusCode::NotFound) | Some(StatusCode::Gone) => QueueError::LockLost,
        _ => unavailable(e),
    }
}

#[async_trait]
impl Queue for ServiceBusQueue {
    async fn send(&self, message: OutMessage) -> Result<SendOutcome, QueueError> {
        let now = Utc::now();
        let delay = message.visible_at.map(|t| (t - now).to_std().unwrap_or_default()).unwrap_or_default();
        let options = SendMessageOptions {
            content_type: Some("application/json".into()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(message.id.clone()),
                scheduled_enqueue_time_utc: message.visible_at.filter(|t| *t > now).and_then(to_time),
                time_to_live: Some(TIME_TO_LIVE + delay),
                ..SettableBrokerProperties::default()
            }),
            custom_properties: None,
        };
        self.count();
        self.sends.fetch_add(1, Ordering::Relaxed);
        self.client.send_message(&message.body, Some(options)).await.map_err(unavailable)?;
        // Duplicate detection happens in the broker, which does not say.
        Ok(SendOutcome::Sent)
    }

    async fn receive(&self, _lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        match self.peek(&self.client).await? {
            None => Ok(None),
            Some((delivery, lock)) => {
                self.count();
                if let Ok(mut locks) = self.locks.lock() {
                    locks.insert(delivery.lock_token.clone(), Arc::new(lock));
                }
                Ok(Some(delivery))
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lock = self.take_lock(&delivery.lock_token).ok_or(QueueError::LockLost)?;
        self.count();
        lock.delete_message().await.map(|_| ()).map_err(settle_error)
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let lock = self.take_lock(&delivery.lock_token).ok_or(QueueError::LockLost)?;
        self.count();
        lock.unlock_message().await.map_err(settle_error)
    }

    async fn renew(&self, delivery: &Delivery, _lock_for: Duration) -> Result<DateTime<Utc>, QueueError> {
        let lock = {
            let locks = self.locks.lock().map_err(|_| QueueError::Unavailable("lock table poisoned".into()))?;
            locks.get(&delivery.lock_token).cloned().ok_or(QueueError::LockLost)?
        };
        self.count();
        lock.renew_message_lock().await.map_err(settle_error)?;
        Ok(Utc::now() + chrono::TimeDelta::from_std(self.lock_duration).unwrap_or_default())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let mut out = Vec::new();
        let mut held = Vec::new();
        while out.len() < 100 {
            match self.peek(&self.dead_letter).await? {
                Some((d, lock)) => {
                    out.push(DeadLetter {
                        id: d.id,
                        body: d.body,
                        delivery_count: d.delivery_count,
                        reason: "dead-lettered by Service Bus".into(),
                    });
                    held.push(lock);
                }
                None => break,
            }
        }
        for lock in held {
            let _ = lock.unlock_message().await;
        }
        Ok(out)
    }

    fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }
}
