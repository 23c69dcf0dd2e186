//! Sending step messages to Azure Service Bus with Sluice's own identity
//! (Entra ID; role Azure Service Bus Data Sender), so no SAS key exists
//! anywhere. The azure_messaging_servicebus 0.21 crate signs with SAS only,
//! so this one call is made directly; in Azure the Functions trigger does
//! all the receiving, which is why this adapter only sends.
//!
//! Source: Service Bus REST API, "Send Message"
//! (`POST https://{namespace}/{queue}/messages` → 201; `Authorization:
//! Bearer` with a token for `https://servicebus.azure.net`; message
//! properties in the `BrokerProperties` header, where
//! `ScheduledEnqueueTimeUtc` is an RFC 1123 date, e.g. `Sun, 06 Nov 1994
//! 08:49:37 GMT`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{DeadLetter, Delivery, OutMessage, Queue, QueueError, SendOutcome};
use crate::ports::azure::auth::AzureCredential;
use crate::ports::preflight::Check;

/// The audience of Service Bus tokens.
pub const SERVICE_BUS_RESOURCE: &str = "https://servicebus.azure.net";
/// How long a step message lives after it becomes visible (as the SAS adapter).
const TIME_TO_LIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sends to one queue with a managed identity.
pub struct ServiceBusSender {
    messages_url: String,
    http: reqwest::Client,
    credential: Arc<AzureCredential>,
    operations: AtomicU64,
}

impl ServiceBusSender {
    /// A sender for `queue` in the namespace `namespace` (`{ns}.servicebus.windows.net`),
    /// or at `endpoint` (tests).
    pub fn new(namespace: &str, queue: &str, endpoint: Option<&str>, http: reqwest::Client, credential: Arc<AzureCredential>) -> Self {
        let base = endpoint.map(|e| e.trim_end_matches('/').to_string()).unwrap_or_else(|| format!("https://{namespace}"));
        ServiceBusSender { messages_url: format!("{base}/{queue}/messages"), http, credential, operations: AtomicU64::new(0) }
    }
}

/// `ScheduledEnqueueTimeUtc` as the documentation writes it (RFC 1123, `GMT`).
pub fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn receives_elsewhere() -> QueueError {
    QueueError::Config("this Service Bus queue is only sent to with the managed identity; the Functions trigger receives".into())
}

#[async_trait]
impl Queue for ServiceBusSender {
    async fn send(&self, message: OutMessage) -> Result<SendOutcome, QueueError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        let scheduled = message.visible_at.filter(|t| *t > now);
        let delay = scheduled.map(|t| (t - now).to_std().unwrap_or_default()).unwrap_or_default();
        let mut props = json!({"MessageId": message.id, "TimeToLive": (TIME_TO_LIVE + delay).as_secs()});
        if let Some(t) = scheduled {
            // Whole seconds, rounded up: never early (as the SAS adapter).
            let up = if t.timestamp_subsec_nanos() > 0 { t + chrono::TimeDelta::seconds(1) } else { t };
            props["ScheduledEnqueueTimeUtc"] = json!(rfc1123(up));
        }
        let token = self.credential.token(SERVICE_BUS_RESOURCE).await.map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let response = self
            .http
            .post(&self.messages_url)
            .bearer_auth(token)
            .header("BrokerProperties", props.to_string())
            .header("content-type", "application/json")
            .body(message.body)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(format!("Service Bus unreachable: {}", e.without_url())))?;
        match response.status().as_u16() {
            201 => Ok(SendOutcome::Sent),
            401 | 403 => {
                self.credential.clear();
                Err(QueueError::Unavailable(format!(
                    "Service Bus refused the identity ({}): it needs the role Azure Service Bus Data Sender on the queue",
                    response.status().as_u16()
                )))
            }
            other => Err(QueueError::Unavailable(format!("Service Bus answered {other} to a send"))),
        }
    }

    async fn receive(&self, _lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        Err(receives_elsewhere())
    }

    async fn complete(&self, _delivery: &Delivery) -> Result<(), QueueError> {
        Err(receives_elsewhere())
    }

    async fn abandon(&self, _delivery: &Delivery) -> Result<(), QueueError> {
        Err(receives_elsewhere())
    }

    async fn renew(&self, _delivery: &Delivery, _lock_for: Duration) -> Result<DateTime<Utc>, QueueError> {
        Err(receives_elsewhere())
    }

    async fn preflight(&self) -> Check {
        match self.credential.token(SERVICE_BUS_RESOURCE).await {
            Ok(_) => Check::warning(
                "queue",
                "step queue",
                "the identity gets Service Bus tokens; its right to send (Azure Service Bus Data Sender) is proven only by the first step message",
            ),
            Err(e) => Check::blocker("queue", "step queue", format!("no Service Bus token for the identity: {e}")),
        }
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Err(receives_elsewhere())
    }

    fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_times_are_written_as_the_documentation_does() {
        let t = DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z").expect("time").with_timezone(&Utc);
        assert_eq!(rfc1123(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
