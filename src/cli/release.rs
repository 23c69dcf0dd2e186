//! The pipeline's side of a release: posting the Start message straight to
//! the Service Bus queue (as the design promises: "started by a pipeline
//! posting a message"), and reading the end of a failed step's log for
//! `sluice report-failure`.
//!
//! The queue send is the Service Bus REST "Send Message" call with an Entra
//! token for `https://servicebus.azure.net` (the pipeline's federated
//! identity holds Azure Service Bus Data Sender on the queue) — the same
//! adapter Sluice itself sends with (`ports/queue/servicebus_identity.rs`).
//! The pipeline chooses the rollout id, so the message id is `start:{id}`
//! and a re-run is a duplicate both for the queue and for Sluice.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::domain::ids::{Actor, RolloutId};
use crate::ports::azure::auth::AzureCredential;
use crate::ports::queue::servicebus_identity::ServiceBusSender;
use crate::ports::queue::{Queue, SendOutcome};
use crate::shell::messages::StepMessage;

/// Most bytes of a log file read (its end).
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// What can go wrong on the pipeline's side.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// A bad argument, naming it.
    #[error("{0}")]
    Argument(String),
    /// The queue refused or could not be reached.
    #[error("{0}")]
    Queue(String),
}

/// Where a queue is: a namespace host and queue name, or (tests, private
/// endpoints) a base URL and queue name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAddress {
    /// `{ns}.servicebus.windows.net`.
    pub namespace: String,
    /// The queue, e.g. `rollout-steps`.
    pub queue: String,
    /// A base URL used instead of `https://{namespace}`.
    pub endpoint: Option<String>,
}

impl QueueAddress {
    /// Parses `NAMESPACE/QUEUE` (`sb-x.servicebus.windows.net/rollout-steps`)
    /// or `https://HOST[:PORT]/QUEUE`.
    pub fn parse(text: &str) -> Result<QueueAddress, ReleaseError> {
        let bad = || {
            ReleaseError::Argument(format!(
                "--queue: '{text}' is not NAMESPACE/QUEUE (e.g. sb-sluice.servicebus.windows.net/rollout-steps) or https://HOST/QUEUE"
            ))
        };
        let (endpoint, rest) = match text.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            Some(_) => return Err(bad()),
            None => (None, text),
        };
        let (host, queue) = rest.trim_end_matches('/').split_once('/').ok_or_else(bad)?;
        let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
        if !plain(host) || !plain(queue) {
            return Err(bad());
        }
        let namespace = if endpoint.is_none() && !host.contains('.') { format!("{host}.servicebus.windows.net") } else { host.to_string() };
        Ok(QueueAddress { namespace, queue: queue.to_string(), endpoint: endpoint.map(|scheme| format!("{scheme}://{host}")) })
    }
}

/// Sends the Start message for `spec` as rollout `id`, signed with `token`
/// (a bearer token for Service Bus).
pub async fn start_on_queue(address: &QueueAddress, token: String, spec: Value, by: Actor, id: RolloutId) -> Result<String, ReleaseError> {
    let credential = AzureCredential::from_settings(&|k: &str| (k == "SLUICE_AZURE_TOKEN").then(|| token.clone()))
        .ok_or_else(|| ReleaseError::Argument("no Service Bus token".into()))?;
    let sender = ServiceBusSender::new(
        &address.namespace,
        &address.queue,
        address.endpoint.as_deref(),
        crate::ports::env::http_client(),
        Arc::new(credential),
    );
    let message = StepMessage::Start { spec, by: by.into(), id: Some(id) };
    let out = message.to_out(None);
    let message_id = out.id.clone();
    match sender.send(out).await {
        Ok(SendOutcome::Sent) | Ok(SendOutcome::Duplicate) => Ok(message_id),
        Err(e) => Err(ReleaseError::Queue(e.to_string())),
    }
}

/// The end of a log file (at most 64 KiB), lossily decoded: a pipeline's
/// log may hold anything.
pub fn log_tail(path: &Path) -> Result<String, ReleaseError> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |e: std::io::Error| ReleaseError::Argument(format!("--log-file {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let len = file.metadata().map_err(fail)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES))).map_err(fail)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(fail)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_addresses_take_both_forms() {
        let a = QueueAddress::parse("sb-sluice.servicebus.windows.net/rollout-steps").expect("namespace form");
        assert_eq!((a.namespace.as_str(), a.queue.as_str(), a.endpoint), ("sb-sluice.servicebus.windows.net", "rollout-steps", None));
        let short = QueueAddress::parse("sb-sluice/rollout-steps").expect("short form");
        assert_eq!(short.namespace, "sb-sluice.servicebus.windows.net");
        let b = QueueAddress::parse("http://127.0.0.1:9000/rollout-steps").expect("url form");
        assert_eq!((b.endpoint.as_deref(), b.queue.as_str()), (Some("http://127.0.0.1:9000"), "rollout-steps"));
        for bad in ["rollout-steps", "ftp://x/q", "ns/", "ns/q?x=1", "ns/a b"] {
            assert!(QueueAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
