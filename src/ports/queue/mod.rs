//! The queue port: every rollout step is a message. Adapters give Service
//! Bus semantics — scheduled visibility, peek-lock with a lock duration,
//! complete, abandon (the delivery count grows), dead-letter after ten
//! deliveries, and de-duplication on the message id.

pub mod embedded;
pub mod servicebus;
pub mod servicebus_identity;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::preflight::Check;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Deliveries after which a message is dead-lettered (Service Bus default).
pub const MAX_DELIVERY_COUNT: u32 = 10;

/// How long a message id is remembered for duplicate detection (Service Bus default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    /// Message id: sending the same id again within the window does nothing.
    pub id: String,
    /// JSON body.
    pub body: String,
    /// Not delivered before this time (`ScheduledEnqueueTimeUtc`).
    pub visible_at: Option<DateTime<Utc>>,
    /// A message with a slot supersedes the queued, undelivered messages of
    /// the same slot: one wake-up per rollout, the one for the time its
    /// latest saved state wants, not a pile of stale ones. (Two wake-ups sent
    /// out of order can leave the older: the rollout then wakes early and
    /// schedules again, or late, at the timer's sweep, which visits every
    /// overdue rollout.) Adapters that cannot (Service Bus: a scheduled
    /// message is cancelled only by its sequence number) ignore it; the
    /// messages it would have dropped are harmless when delivered.
    pub slot: Option<String>,
}

/// Whether a send enqueued anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Enqueued.
    Sent,
    /// Dropped: the id was seen within the duplicate window.
    Duplicate,
}

/// A locked message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Message id.
    pub id: String,
    /// JSON body.
    pub body: String,
    /// 1 on first delivery.
    pub delivery_count: u32,
    /// Identifies the lock for complete/abandon/renew.
    pub lock_token: String,
    /// The lock expires then; after it the message is delivered again.
    pub locked_until: DateTime<Utc>,
    /// When it was sent.
    pub enqueued_at: DateTime<Utc>,
}

/// A message that was delivered too often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Message id.
    pub id: String,
    /// JSON body.
    pub body: String,
    /// Deliveries made.
    pub delivery_count: u32,
    /// Why.
    pub reason: String,
}

/// What can go wrong with a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The lock expired or the message was settled already.
    #[error("the message lock was lost (expired or already settled)")]
    LockLost,
    /// The queue could not be reached; worth retrying.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Bad configuration (names, connection strings).
    #[error("queue misconfigured: {0}")]
    Config(String),
}

/// A durable message queue with peek-lock.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Enqueues a message (de-duplicated on its id).
    async fn send(&self, message: OutMessage) -> Result<SendOutcome, QueueError>;
    /// Locks and returns the next visible message, if any.
    async fn receive(&self, lock_for: Duration) -> Result<Option<Delivery>, QueueError>;
    /// Removes a delivered message.
    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError>;
    /// Releases a message for redelivery (dead-letters it after the last delivery).
    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError>;
    /// Extends the lock of a message still being worked on.
    async fn renew(&self, delivery: &Delivery, lock_for: Duration) -> Result<DateTime<Utc>, QueueError>;
    /// Messages that were dead-lettered.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;
    /// Wakes in-process consumers on send, where the adapter can (embedded).
    fn wakeup(&self) -> Option<Arc<Notify>> {
        None
    }
    /// When the next scheduled message becomes visible, if the adapter knows.
    async fn next_visible_at(&self) -> Option<DateTime<Utc>> {
        None
    }
    /// Operations sent to the queue service so far (sends, settles), for cost figures.
    fn operations(&self) -> u64;
    /// What `sluice doctor` finds about the queue without putting a message on it.
    async fn preflight(&self) -> Check {
        match self.dead_letters().await {
            Ok(dead) => Check::ok("queue", "step queue", format!("reachable; {} dead-lettered step message(s)", dead.len())),
            Err(e) => Check::blocker("queue", "step queue", e.to_string()),
        }
    }
}
