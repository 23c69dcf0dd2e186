//! The embedded queue: durable in the same SQLite file as the embedded
//! store, with Service Bus semantics (scheduled visibility, peek-lock,
//! delivery count, dead-letter after ten deliveries, duplicate detection on
//! the message id within a window). A process killed mid-message leaves it
//! locked until the lock expires; then it is delivered again.
//!
//! Every operation walks an index from its start, never the table: a lock
//! moves the message's `visible_at` to the lock's end, so "visible now" is
//! one range (`messages_visible`) whether messages are locked or scheduled;
//! settling finds the message by its lock token; duplicate detection
//! forgets ids by `sent_at`. A wake-up supersedes the rollout's queued
//! wake-ups (its slot), and a send wakes one waiting consumer, and only for
//! a message visible now.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Notify;

use super::{DeadLetter, Delivery, OutMessage, Queue, QueueError, SendOutcome, DUPLICATE_WINDOW, MAX_DELIVERY_COUNT};
use crate::ports::clock::Clock;
use crate::ports::store::sqlite::open_connection;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    enqueued_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    locked_until INTEGER,
    slot TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages(visible_at, seq);
CREATE TABLE IF NOT EXISTS message_ids (
    id TEXT PRIMARY KEY,
    sent_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS message_ids_sent ON message_ids(sent_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    delivery_count INTEGER NOT NULL,
    reason TEXT NOT NULL
);
";

/// The embedded durable queue.
pub struct EmbeddedQueue {
    conn: Arc<Mutex<Connection>>,
    wake: Arc<Notify>,
    operations: AtomicU64,
    duplicate_window: Duration,
    clock: Arc<dyn Clock>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl EmbeddedQueue {
    /// Opens (and if needed creates) the queue in the SQLite file at `path`;
    /// visibility, locks and the duplicate window run on `clock`.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        let conn = open_connection(path).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let has_slot: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'slot'")
            .and_then(|mut s| s.exists([]))
            .map_err(unavailable)?;
        if !has_slot {
            // A queue file from before slots: its locked messages become visible when their locks end.
            conn.execute_batch(
                "ALTER TABLE messages ADD COLUMN slot TEXT;
                 UPDATE messages SET visible_at = locked_until WHERE locked_until IS NOT NULL AND locked_until > visible_at;",
            )
            .map_err(unavailable)?;
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_lock ON messages(lock_token) WHERE lock_token IS NOT NULL;
             CREATE INDEX IF NOT EXISTS messages_slot ON messages(slot, visible_at) WHERE slot IS NOT NULL;",
        )
        .map_err(unavailable)?;
        let conn = Arc::new(Mutex::new(conn));
        crate::ports::store::sqlite::spawn_checkpointer(path, Arc::downgrade(&conn));
        Ok(EmbeddedQueue { conn, wake: Arc::new(Notify::new()), operations: AtomicU64::new(0), duplicate_window: DUPLICATE_WINDOW, clock })
    }

    /// Runs `f` on the connection off the async threads, with the time
    /// (milliseconds, from the injected clock) the operation happens at.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, i64) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let conn = self.conn.clone();
        let now = millis(self.clock.now());
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| QueueError::Unavailable("queue lock poisoned".into()))?;
            f(&mut guard, now)
        })
        .await
        .map_err(|e| QueueError::Unavailable(format!("queue task failed: {e}")))?
    }
}

impl Drop for EmbeddedQueue {
    /// A clean stop leaves an empty log: what it holds is copied back first.
    fn drop(&mut self) {
        if let Ok(conn) = self.conn.lock() {
            crate::ports::store::sqlite::truncate_wal_at_close(&conn);
        }
    }
}

fn dead_letter(tx: &rusqlite::Transaction<'_>, seq: i64, reason: &str) -> Result<(), QueueError> {
    tx.execute(
        "INSERT OR REPLACE INTO dead_letters (seq, id, body, delivery_count, reason)
         SELECT seq, id, body, delivery_count, ?2 FROM messages WHERE seq = ?1",
        params![seq, reason],
    )
    .map_err(unavailable)?;
    tx.execute("DELETE FROM messages WHERE seq = ?1", [seq]).map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn send(&self, message: OutMessage) -> Result<SendOutcome, QueueError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let window = self.duplicate_window.as_millis() as i64;
        let outcome = self
            .with(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                tx.prepare_cached("DELETE FROM message_ids WHERE sent_at < ?1")
                    .and_then(|mut s| s.execute([now - window]))
                    .map_err(unavailable)?;
                let seen = tx
                    .prepare_cached("SELECT 1 FROM message_ids WHERE id = ?1")
                    .and_then(|mut s| s.exists([&message.id]))
                    .map_err(unavailable)?;
                if seen {
                    return Ok((SendOutcome::Duplicate, false));
                }
                tx.prepare_cached("INSERT INTO message_ids (id, sent_at) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![message.id, now]))
                    .map_err(unavailable)?;
                let visible = message.visible_at.map(millis).unwrap_or(now).max(now);
                if let Some(slot) = &message.slot {
                    // Superseded: queued and not being delivered. (Not only the later ones: a resumed
                    // wait moves its wake-up later, and keeping the earlier ones is the pile-up.)
                    // Their ids go too: a superseded wake-up was never delivered, so the same one
                    // sent again later is new work, not a duplicate (else a wait that moves away
                    // and back would be left with no wake-up at all until the timer's sweep).
                    tx.prepare_cached(
                        "DELETE FROM message_ids WHERE id IN (SELECT id FROM messages WHERE slot = ?1 AND lock_token IS NULL AND id <> ?2)",
                    )
                    .and_then(|mut s| s.execute(params![slot, message.id]))
                    .map_err(unavailable)?;
                    tx.prepare_cached("DELETE FROM messages WHERE slot = ?1 AND lock_token IS NULL")
                        .and_then(|mut s| s.execute(params![slot]))
                        .map_err(unavailable)?;
                }
                tx.prepare_cached("INSERT INTO messages (id, body, enqueued_at, visible_at, slot) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .and_then(|mut s| s.execute(params![message.id, message.body, now, visible, message.slot]))
                    .map_err(unavailable)?;
                tx.commit().map_err(unavailable)?;
                Ok((SendOutcome::Sent, visible <= now))
            })
            .await?;
        // One consumer for one message, and only when it can take it now (the
        // others find scheduled messages by their own timers).
        if outcome == (SendOutcome::Sent, true) {
            self.wake.notify_one();
        }
        Ok(outcome.0)
    }

    async fn receive(&self, lock_for: Duration) -> Result<Option<Delivery>, QueueError> {
        let lock_ms = lock_for.as_millis() as i64;
        let received = self
            .with(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                loop {
                    // A locked message's visible_at is its lock's end: the first row of the index is the answer.
                    let next: Option<(i64, String, String, i64, i64)> = tx
                        .prepare_cached(
                            "SELECT seq, id, body, delivery_count, enqueued_at FROM messages
                             WHERE visible_at <= ?1 ORDER BY visible_at, seq LIMIT 1",
                        )
                        .and_then(|mut s| {
                            s.query_row([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))).optional()
                        })
                        .map_err(unavailable)?;
                    let Some((seq, id, body, count, enqueued)) = next else {
                        tx.commit().map_err(unavailable)?;
                        return Ok(None);
                    };
                    // A lock that expired on the last allowed delivery ends the message.
                    if count as u32 >= MAX_DELIVERY_COUNT {
                        dead_letter(&tx, seq, "MaxDeliveryCountExceeded")?;
                        continue;
                    }
                    let token = uuid::Uuid::new_v4().to_string();
                    let until = now + lock_ms;
                    tx.prepare_cached(
                        "UPDATE messages SET delivery_count = delivery_count + 1, lock_token = ?1, locked_until = ?2, visible_at = ?2
                         WHERE seq = ?3",
                    )
                    .and_then(|mut s| s.execute(params![token, until, seq]))
                    .map_err(unavailable)?;
                    tx.commit().map_err(unavailable)?;
                    return Ok(Some(Delivery {
                        id,
                        body,
                        delivery_count: count as u32 + 1,
                        lock_token: token,
                        locked_until: from_millis(until),
                        enqueued_at: from_millis(enqueued),
                    }));
                }
            })
            .await;
        // An empty poll is not counted: only deliveries cost an operation.
        if matches!(received, Ok(Some(_))) {
            self.operations.fetch_add(1, Ordering::Relaxed);
        }
        received
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let token = delivery.lock_token.clone();
        self.with(move |conn, now| {
            let n = conn
                .prepare_cached("DELETE FROM messages WHERE lock_token = ?1 AND locked_until > ?2")
                .and_then(|mut s| s.execute(params![token, now]))
                .map_err(unavailable)?;
            if n == 0 {
                return Err(QueueError::LockLost);
            }
            Ok(())
        })
        .await
    }

    async fn abandon(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let token = delivery.lock_token.clone();
        let result = self
            .with(move |conn, now| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                let row: Option<(i64, i64)> = tx
                    .query_row(
                        "SELECT seq, delivery_count FROM messages WHERE lock_token = ?1 AND locked_until > ?2",
                        params![token, now],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(unavailable)?;
                let Some((seq, count)) = row else { return Err(QueueError::LockLost) };
                if count as u32 >= MAX_DELIVERY_COUNT {
                    dead_letter(&tx, seq, "MaxDeliveryCountExceeded")?;
                } else {
                    tx.execute(
                        "UPDATE messages SET lock_token = NULL, locked_until = NULL, visible_at = ?2 WHERE seq = ?1",
                        params![seq, now],
                    )
                    .map_err(unavailable)?;
                }
                tx.commit().map_err(unavailable)?;
                Ok(())
            })
            .await;
        self.wake.notify_one();
        result
    }

    async fn renew(&self, delivery: &Delivery, lock_for: Duration) -> Result<DateTime<Utc>, QueueError> {
        self.operations.fetch_add(1, Ordering::Relaxed);
        let token = delivery.lock_token.clone();
        let lock_ms = lock_for.as_millis() as i64;
        self.with(move |conn, now| {
            let until = now + lock_ms;
            let n = conn
                .execute(
                    "UPDATE messages SET locked_until = ?1, visible_at = ?1 WHERE lock_token = ?2 AND locked_until > ?3",
                    params![until, token, now],
                )
                .map_err(unavailable)?;
            if n == 0 {
                return Err(QueueError::LockLost);
            }
            Ok(from_millis(until))
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.with(|conn, _now| {
            let mut stmt = conn.prepare("SELECT id, body, delivery_count, reason FROM dead_letters ORDER BY seq").map_err(unavailable)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok(DeadLetter { id: row.get(0)?, body: row.get(1)?, delivery_count: row.get::<_, i64>(2)? as u32, reason: row.get(3)? })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }

    async fn next_visible_at(&self) -> Option<DateTime<Utc>> {
        self.with(|conn, _now| {
            let next: Option<i64> = conn.query_row("SELECT MIN(visible_at) FROM messages", [], |row| row.get(0)).map_err(unavailable)?;
            Ok(next.map(from_millis))
        })
        .await
        .ok()
        .flatten()
    }

    fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }
}
