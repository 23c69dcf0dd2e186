//! The embedded store: one SQLite file under `.sluice/`, for the local
//! default. Same semantics as Table Storage: an ETag per rollout (a version
//! counter), conditional saves, state and history in one transaction, and a
//! partial unique index that allows one active rollout per target.
//!
//! Indexes keep every hot path proportional to its answer: `sweep_at` (the
//! timer reads only what is due), `alert_keys` (an alert reads only the
//! rollouts it names), and `created_at` with each list filter (a list reads
//! only its page). They are written in the same transaction as the state,
//! so they are never stale. `PRAGMA user_version` marks the layout; a file
//! from before these indexes is upgraded when opened.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use chrono::{DateTime, Utc};

use super::{unreadable, AlertRecord, Etag, ListFilter, Pruned, Store, StoreError, DEFAULT_ALERT_RETENTION, MAX_ALERT_RECORDS};
use crate::domain::health::Tallies;
use crate::domain::ids::RolloutId;
use crate::domain::pipeline_wait::PipelineWait;
use crate::domain::release::{Release, ReleaseEntry};
use crate::domain::rollout::{HistoryEntry, Rollout};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    phase TEXT NOT NULL,
    active INTEGER NOT NULL,
    sweep INTEGER NOT NULL,
    etag INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    sweep_at INTEGER,
    tally TEXT,
    finished_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_target ON rollouts(target) WHERE active = 1;
CREATE TABLE IF NOT EXISTS history (
    rollout_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);
CREATE TABLE IF NOT EXISTS alerts (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,
    received_at INTEGER
);
CREATE TABLE IF NOT EXISTS releases (
    id TEXT PRIMARY KEY,
    etag INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    wake_at INTEGER,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_due ON releases(wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS releases_newest ON releases(created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS release_history (
    release_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (release_id, seq)
);
CREATE TABLE IF NOT EXISTS alert_keys (
    key TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    PRIMARY KEY (key, rollout_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tallies (
    series TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pipeline_waits (
    rollout_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    wait TEXT NOT NULL,
    PRIMARY KEY (rollout_id, task_id)
) WITHOUT ROWID;
";

/// The indexes of layout 1, created after the columns they need exist.
const INDEXES: &str = "
DROP INDEX IF EXISTS rollouts_to_sweep;
CREATE INDEX IF NOT EXISTS rollouts_due ON rollouts(sweep_at) WHERE sweep_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS rollouts_newest ON rollouts(created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS rollouts_active_newest ON rollouts(active, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS rollouts_phase_newest ON rollouts(phase, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS rollouts_target_newest ON rollouts(target, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS alert_keys_by_rollout ON alert_keys(rollout_id);
CREATE INDEX IF NOT EXISTS alerts_received ON alerts(received_at);
CREATE INDEX IF NOT EXISTS rollouts_finished ON rollouts(finished_at) WHERE finished_at IS NOT NULL;
";

/// The layout this code writes (`PRAGMA user_version`): 1 added the
/// sweep and alert indexes, 2 the kept sums behind `/api/metrics` (each
/// rollout's contribution in `rollouts.tally`, their sum in `tallies`) and
/// the finishing time the report's period is read by.
const LAYOUT: i64 = 2;

/// Opens a SQLite file the way both embedded adapters want it: WAL, a busy
/// timeout so the store and the queue can share the file, and foreign keys.
pub(crate) fn open_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    // Owner-only; SQLite gives its -wal and -shm files the database's permissions.
    let _ = crate::ports::env::make_private(path);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoints run on their own thread (`spawn_checkpointer`), not inside
    // whichever write happens to cross the threshold.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Whenever the log restarts from its beginning, a larger file is cut back to this.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT as i64)?;
    // The page cache is the memory a connection keeps as the file grows; its bound is written here.
    conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    Ok(conn)
}

/// Each connection's page cache, in KiB (negative `cache_size` counts KiB, not pages).
/// Four connections (the store, the queue and their checkpointers) hold at most 8 MiB of pages.
pub const PAGE_CACHE_KIB: i64 = 2048;

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The size the log file is cut back to when it restarts (`journal_size_limit`).
pub const WAL_SIZE_LIMIT: u64 = 16 * 1024 * 1024;
/// Past this size the checkpointer truncates the log (waiting up to its busy
/// timeout for the readers of older snapshots), instead of only copying it back.
pub const WAL_TRUNCATE_AT: u64 = 8 * 1024 * 1024;
/// Past this size the store's own write truncates the log before it
/// answers: the bound when writes come faster than the checkpointer can
/// find a gap between them (one stall of a few tens of milliseconds, rare).
pub const WAL_HARD_LIMIT: u64 = 32 * 1024 * 1024;

/// The log's size (0 when there is none).
fn wal_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Copies the whole log back into the database and empties it; whether it
/// did. It waits for writers and for readers of older snapshots up to the
/// connection's busy timeout, but not for another connection's checkpoint
/// (SQLite answers busy at once); either way nothing is lost and the next
/// call tries again.
pub(crate) fn truncate_wal(conn: &Connection) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0)) {
        Ok(0) => true,
        Ok(_) => {
            tracing::debug!("log not truncated: a reader, writer or checkpoint held it");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "log not truncated");
            false
        }
    }
}

/// At a clean stop: empties the log, trying again for up to a second while
/// the background checkpointer holds it.
pub(crate) fn truncate_wal_at_close(conn: &Connection) {
    for _ in 0..50 {
        if truncate_wal(conn) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tracing::warn!("the log could not be emptied at close; it is copied back at the next start");
}

/// How often the WAL is checkpointed in the background.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Copies the WAL back into the database file every half second on a
/// thread of its own (a passive checkpoint: it waits for no reader or
/// writer), for as long as `owner` lives, and empties the log once it
/// passes [`WAL_TRUNCATE_AT`] — a passive checkpoint alone never shrinks
/// it while reads and writes keep coming (10 000 rollouts once left 1.9
/// GiB). When `owner` is gone it empties the log a last time. Without the
/// thread a commit that crossed SQLite's threshold did the copy and its
/// fsync itself, stalling every request queued behind it.
pub(crate) fn spawn_checkpointer<T: Send + Sync + 'static>(path: &Path, owner: std::sync::Weak<T>) {
    let Ok(conn) = Connection::open(path) else { return };
    let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
    let _ = conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT as i64);
    let _ = conn.pragma_update(None, "cache_size", -PAGE_CACHE_KIB);
    let db = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("sluice-checkpoint".into()).spawn(move || loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if owner.strong_count() == 0 {
            let _ = truncate_wal(&conn);
            return;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint skipped");
        }
        if wal_size(&db) > WAL_TRUNCATE_AT {
            let _ = truncate_wal(&conn);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no checkpoint thread; the WAL grows until the next start");
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: std::path::PathBuf,
    transactions: AtomicU64,
    alert_retention: chrono::TimeDelta,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqliteStore {
    /// Opens (and if needed creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_connection(path).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        upgrade(&mut conn)?;
        conn.execute_batch(INDEXES).map_err(unavailable)?;
        let conn = Arc::new(Mutex::new(conn));
        spawn_checkpointer(path, Arc::downgrade(&conn));
        Ok(SqliteStore { conn, path: path.to_path_buf(), transactions: AtomicU64::new(0), alert_retention: DEFAULT_ALERT_RETENTION })
    }

    /// Keeps alert records for `retention` (`SLUICE_ALERT_RETENTION_DAYS`).
    pub fn with_alert_retention(mut self, retention: chrono::TimeDelta) -> Self {
        self.alert_retention = retention;
        self
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (conn, path) = (self.conn.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            let answer = f(&mut guard);
            if wal_size(&path) > WAL_HARD_LIMIT {
                // Briefly: the store's lock is held, and a reader that outlasts this is waited for next time.
                let _ = guard.busy_timeout(std::time::Duration::from_millis(50));
                let _ = truncate_wal(&guard);
                let _ = guard.busy_timeout(BUSY_TIMEOUT);
            }
            answer
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    /// A clean stop leaves an empty log: what it holds is copied back first.
    fn drop(&mut self) {
        if let Ok(conn) = self.conn.lock() {
            truncate_wal_at_close(&conn);
        }
    }
}

/// Brings a file written by an older Sluice to [`LAYOUT`]: the columns the
/// indexes need, filled in from each rollout's state.
fn upgrade(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(unavailable)?;
    if version >= LAYOUT {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    let columns = [
        ("rollouts", "sweep_at", "INTEGER"),
        ("alerts", "received_at", "INTEGER"),
        ("rollouts", "tally", "TEXT"),
        ("rollouts", "finished_at", "INTEGER"),
    ];
    for (table, column, kind) in columns {
        let has: bool = tx
            .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"))
            .and_then(|mut s| s.exists([column]))
            .map_err(unavailable)?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}")).map_err(unavailable)?;
        }
    }
    let states: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT id, state FROM rollouts WHERE sweep = 1 OR active = 1").map_err(unavailable)?;
        let rows = stmt.query_map([], id_and_state).map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)?
    };
    for (id, state) in states {
        let r: Rollout = match serde_json::from_str(&state) {
            Ok(r) => r,
            Err(e) => {
                unreadable(&id, &e);
                continue;
            }
        };
        tx.execute("UPDATE rollouts SET sweep_at = ?1 WHERE id = ?2", params![r.sweep_at().map(|t| t.timestamp_millis()), r.id.as_str()])
            .map_err(unavailable)?;
        if !r.phase.is_terminal() {
            file_alert_keys(&tx, &r)?;
        }
    }
    if version < 2 {
        count_every_rollout(&tx)?;
    }
    tx.pragma_update(None, "user_version", LAYOUT).map_err(unavailable)?;
    tx.commit().map_err(unavailable)
}

/// Layout 2: each rollout's contribution to the kept sums, the sums, and
/// its finishing time, read once from every state (one Sluice cannot read
/// counts for nothing).
fn count_every_rollout(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("DELETE FROM tallies", []).map_err(unavailable)?;
    let states: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT id, state FROM rollouts").map_err(unavailable)?;
        let rows = stmt.query_map([], id_and_state).map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)?
    };
    let mut sum = Tallies::default();
    for (id, state) in states {
        match crate::domain::health::Facts::from_stored(&state) {
            Ok(f) => {
                let tally = Tallies::of(&f);
                let finished = millis(f.finished_at);
                tx.execute("UPDATE rollouts SET tally = ?1, finished_at = ?2 WHERE id = ?3", params![encode(&tally)?, finished, id])
                    .map_err(unavailable)?;
                sum.add(&tally, 1);
            }
            Err(e) => unreadable(&id, &e),
        }
    }
    add_tallies(tx, &sum)
}

/// What a rollout adds to the kept sums.
fn tally_of(r: &Rollout) -> Tallies {
    Tallies::of(&crate::domain::health::Facts::of(r))
}

/// Adds a change to the kept sums, in the transaction that writes the states it comes from.
fn add_tallies(tx: &rusqlite::Transaction<'_>, change: &Tallies) -> Result<(), StoreError> {
    let mut add = tx
        .prepare_cached("INSERT INTO tallies (series, n) VALUES (?1, ?2) ON CONFLICT(series) DO UPDATE SET n = n + excluded.n")
        .map_err(unavailable)?;
    let mut drop_zero = tx.prepare_cached("DELETE FROM tallies WHERE series = ?1 AND n = 0").map_err(unavailable)?;
    for (series, n) in &change.0 {
        let key = encode(series)?;
        add.execute(params![key, n]).map_err(unavailable)?;
        drop_zero.execute([&key]).map_err(unavailable)?;
    }
    Ok(())
}

/// A rollout's contribution as stored (none for a state that was never counted).
fn stored_tally(text: Option<String>) -> Result<Tallies, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(corrupt)).transpose().map(Option::unwrap_or_default)
}

/// Files an active rollout under its alert keys.
fn file_alert_keys(tx: &rusqlite::Transaction<'_>, r: &Rollout) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("INSERT OR IGNORE INTO alert_keys (key, rollout_id) VALUES (?1, ?2)").map_err(unavailable)?;
    for key in r.alert_keys() {
        stmt.execute(params![key, r.id.as_str()]).map_err(unavailable)?;
    }
    Ok(())
}

fn millis(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

/// `(id, state)` rows read back; a state Sluice cannot read is left out
/// and reported by id, so one such row hides no other rollout. It stays as
/// stored: loading it still fails, so nothing overwrites it.
fn decode_states<T: serde::de::DeserializeOwned>(
    rows: impl Iterator<Item = rusqlite::Result<(String, String)>>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (id, state) = row.map_err(unavailable)?;
        match serde_json::from_str(&state) {
            Ok(r) => out.push(r),
            Err(e) => unreadable(&id, &e),
        }
    }
    Ok(out)
}

/// The facts of `(id, state)` rows, one state read at a time and only what
/// the facts need of it; an unreadable one is reported and left out.
fn read_facts(rows: impl Iterator<Item = rusqlite::Result<(String, String)>>) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
    let mut facts = Vec::new();
    for row in rows {
        let (id, state) = row.map_err(unavailable)?;
        match crate::domain::health::Facts::from_stored(&state) {
            Ok(f) => facts.push(f),
            Err(e) => unreadable(&id, &e),
        }
    }
    Ok(facts)
}

fn id_and_state(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((row.get(0)?, row.get(1)?))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(corrupt)
}

fn insert_history(tx: &rusqlite::Transaction<'_>, id: &str, history: &[HistoryEntry]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached("INSERT INTO history (rollout_id, seq, entry) VALUES (?1, ?2, ?3)").map_err(unavailable)?;
    for h in history {
        let seq = i64::try_from(h.seq).map_err(corrupt)?;
        stmt.execute(params![id, seq, encode(h)?]).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => StoreError::Conflict,
            other => unavailable(other),
        })?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, rollout: &Rollout, first: &HistoryEntry) -> Result<Etag, StoreError> {
        let r = rollout.clone();
        let first = first.clone();
        let state = encode(&r)?;
        let tally = tally_of(&r);
        let tally_text = encode(&tally)?;
        let result = self
            .with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                let exists: bool = tx
                    .query_row("SELECT 1 FROM rollouts WHERE id = ?1", [r.id.as_str()], |_| Ok(true))
                    .optional()
                    .map_err(unavailable)?
                    .unwrap_or(false);
                if exists {
                    return Err(StoreError::AlreadyExists(r.id.to_string()));
                }
                let active = !r.phase.is_terminal();
                let inserted = tx.execute(
                    "INSERT INTO rollouts (id, target, phase, active, sweep, etag, created_at, state, sweep_at, tally, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        r.id.as_str(),
                        r.target(),
                        r.phase.as_str(),
                        active,
                        r.sweep_at().is_some(),
                        r.created_at.to_rfc3339(),
                        state,
                        millis(r.sweep_at()),
                        tally_text,
                        millis(r.finished_at)
                    ],
                );
                if let Err(rusqlite::Error::SqliteFailure(f, _)) = &inserted {
                    if f.code == rusqlite::ErrorCode::ConstraintViolation {
                        let holder: String = tx
                            .query_row("SELECT id FROM rollouts WHERE target = ?1 AND active = 1", [r.target()], |row| row.get(0))
                            .map_err(unavailable)?;
                        return Err(StoreError::TargetBusy { target: r.target().to_string(), active: holder });
                    }
                }
                inserted.map_err(unavailable)?;
                add_tallies(&tx, &tally)?;
                if active {
                    file_alert_keys(&tx, &r)?;
                }
                insert_history(&tx, &r.id, std::slice::from_ref(&first))?;
                tx.commit().map_err(unavailable)?;
                Ok(Etag("1".into()))
            })
            .await;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn load(&self, id: &str) -> Result<Option<(Rollout, Etag)>, StoreError> {
        let id = id.to_string();
        self.with(move |conn| {
            let row: Option<(String, i64)> = conn
                .query_row("SELECT state, etag FROM rollouts WHERE id = ?1", [&id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
                .map_err(unavailable)?;
            match row {
                None => Ok(None),
                Some((state, etag)) => {
                    let r: Rollout = serde_json::from_str(&state).map_err(corrupt)?;
                    Ok(Some((r, Etag(etag.to_string()))))
                }
            }
        })
        .await
    }

    async fn save(&self, rollout: &Rollout, etag: &Etag, history: &[HistoryEntry]) -> Result<Etag, StoreError> {
        let r = rollout.clone();
        let history = history.to_vec();
        let expected: i64 = etag.0.parse().map_err(|_| StoreError::Conflict)?;
        let state = encode(&r)?;
        let tally = tally_of(&r);
        let tally_text = encode(&tally)?;
        let result = self
            .with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                let counted: Option<Option<String>> = tx
                    .query_row("SELECT tally FROM rollouts WHERE id = ?1 AND etag = ?2", params![r.id.as_str(), expected], |row| row.get(0))
                    .optional()
                    .map_err(unavailable)?;
                let changed = tx
                    .execute(
                        "UPDATE rollouts SET phase = ?1, active = ?2, sweep = ?3, etag = etag + 1, state = ?4, sweep_at = ?7, tally = ?8,
                         finished_at = ?9 WHERE id = ?5 AND etag = ?6",
                        params![
                            r.phase.as_str(),
                            !r.phase.is_terminal(),
                            r.sweep_at().is_some(),
                            state,
                            r.id.as_str(),
                            expected,
                            millis(r.sweep_at()),
                            tally_text,
                            millis(r.finished_at)
                        ],
                    )
                    .map_err(unavailable)?;
                if changed == 0 {
                    let exists = tx
                        .query_row("SELECT 1 FROM rollouts WHERE id = ?1", [r.id.as_str()], |_| Ok(()))
                        .optional()
                        .map_err(unavailable)?;
                    return Err(if exists.is_some() { StoreError::Conflict } else { StoreError::NotFound(r.id.to_string()) });
                }
                if let Some(counted) = counted {
                    add_tallies(&tx, &Tallies::change(&stored_tally(counted)?, &tally))?;
                }
                if r.phase.is_terminal() {
                    tx.execute("DELETE FROM alert_keys WHERE rollout_id = ?1", [r.id.as_str()]).map_err(unavailable)?;
                }
                insert_history(&tx, &r.id, &history)?;
                tx.commit().map_err(unavailable)?;
                Ok(Etag((expected + 1).to_string()))
            })
            .await;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let id = id.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT entry FROM history WHERE rollout_id = ?1 ORDER BY seq").map_err(unavailable)?;
            let rows = stmt.query_map([&id], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row.map_err(unavailable)?).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Rollout>, StoreError> {
        let f = filter.clone();
        self.with(move |conn| {
            // Each filter has an index ordered newest first; SQLite walks it and stops at the limit.
            let mut sql = String::from("SELECT id, state FROM rollouts WHERE 1 = 1");
            let mut args: Vec<String> = Vec::new();
            if f.active_only {
                sql.push_str(" AND active = 1");
            }
            if let Some(p) = f.phase {
                args.push(p.as_str().to_string());
                sql.push_str(&format!(" AND phase = ?{}", args.len()));
            }
            if let Some(t) = &f.target {
                args.push(t.clone());
                sql.push_str(&format!(" AND target = ?{}", args.len()));
            }
            sql.push_str(" ORDER BY created_at DESC, id DESC");
            if f.limit > 0 {
                sql.push_str(&format!(" LIMIT {}", f.limit));
            }
            let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), id_and_state).map_err(unavailable)?;
            decode_states(rows)
        })
        .await
    }

    async fn facts(&self) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT id, state FROM rollouts").map_err(unavailable)?;
            let rows = stmt.query_map([], id_and_state).map_err(unavailable)?;
            read_facts(rows)
        })
        .await
    }

    async fn facts_for_period(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        self.with(move |conn| {
            // Along `rollouts_active_newest` and `rollouts_finished`: what is under way, and what finished in the period.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, state FROM rollouts WHERE active = 1
                     UNION ALL SELECT id, state FROM rollouts WHERE finished_at BETWEEN ?1 AND ?2",
                )
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![from, to], id_and_state).map_err(unavailable)?;
            read_facts(rows)
        })
        .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError> {
        let now = now.timestamp_millis();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id FROM rollouts WHERE sweep_at IS NOT NULL AND sweep_at <= ?1 ORDER BY sweep_at LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![now, limit as i64], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|id| RolloutId::parse(&id.map_err(unavailable)?).map_err(corrupt)).collect()
        })
        .await
    }

    async fn active_by_alert_keys(&self, keys: &[String]) -> Result<Vec<Rollout>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.with(move |conn| {
            let mut stmt = conn
                // CROSS JOIN fixes the order: from the alert's keys into the key index, then
                // to each rollout by its id, never a walk over the active rollouts.
                .prepare_cached(
                    "SELECT DISTINCT r.id, r.state, r.created_at FROM json_each(?1) j
                     CROSS JOIN alert_keys k ON k.key = j.value
                     CROSS JOIN rollouts r ON r.id = k.rollout_id
                     WHERE r.active = 1 ORDER BY r.created_at DESC, r.id DESC",
                )
                .map_err(unavailable)?;
            let keys = serde_json::to_string(&keys).map_err(corrupt)?;
            let rows = stmt.query_map([keys], id_and_state).map_err(unavailable)?;
            decode_states(rows)
        })
        .await
    }

    async fn active_for_target(&self, target: &str) -> Result<Option<String>, StoreError> {
        let target = target.to_string();
        self.with(move |conn| {
            conn.query_row("SELECT id FROM rollouts WHERE target = ?1 AND active = 1", [&target], |row| row.get(0))
                .optional()
                .map_err(unavailable)
        })
        .await
    }

    async fn record_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        let record = encode(alert)?;
        let received = alert.received_at.timestamp_millis();
        let cutoff = (alert.received_at - self.alert_retention).timestamp_millis();
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let n = {
                let mut insert = tx.prepare_cached("INSERT INTO alerts (record, received_at) VALUES (?1, ?2)").map_err(unavailable)?;
                insert.insert(params![record, received]).map_err(unavailable)?
            };
            // Bounded by age and by count; both deletes walk an index from its low end.
            tx.prepare_cached("DELETE FROM alerts WHERE received_at < ?1").and_then(|mut s| s.execute([cutoff])).map_err(unavailable)?;
            tx.prepare_cached("DELETE FROM alerts WHERE n <= ?1")
                .and_then(|mut s| s.execute([n - MAX_ALERT_RECORDS]))
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT record FROM alerts ORDER BY n DESC LIMIT ?1").map_err(unavailable)?;
            let rows = stmt.query_map([limit as i64], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(serde_json::from_str(&row.map_err(unavailable)?).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn alert_delivered(&self, alert_id: &str, condition: &str, rollout: &str) -> Result<bool, StoreError> {
        let (alert_id, condition, rollout) = (alert_id.to_string(), condition.to_string(), rollout.to_string());
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM alerts WHERE json_extract(record, '$.alertId') = ?1 \
                     AND json_extract(record, '$.condition') = ?2 \
                     AND EXISTS (SELECT 1 FROM json_each(record, '$.matched') WHERE value = ?3))",
                )
                .map_err(unavailable)?;
            stmt.query_row(params![alert_id, condition, rollout], |row| row.get::<_, bool>(0)).map_err(unavailable)
        })
        .await
    }

    fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    async fn create_release(&self, release: &Release, first: &ReleaseEntry) -> Result<Etag, StoreError> {
        let (id, created, wake, state, entry) =
            (release.id.to_string(), release.created_at.to_rfc3339(), millis(release.wake_at), encode(release)?, encode(first)?);
        let seq = i64::try_from(first.seq).map_err(corrupt)?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO releases (id, etag, created_at, wake_at, state) VALUES (?1, 1, ?2, ?3, ?4)",
                    params![id, created, wake, state],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(id));
            }
            tx.execute("INSERT INTO release_history (release_id, seq, entry) VALUES (?1, ?2, ?3)", params![id, seq, entry])
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Etag("1".into()))
        })
        .await
    }

    async fn load_release(&self, id: &str) -> Result<Option<(Release, Etag)>, StoreError> {
        let id = id.to_string();
        self.with(move |conn| {
            let row: Option<(String, i64)> = conn
                .query_row("SELECT state, etag FROM releases WHERE id = ?1", [&id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
                .map_err(unavailable)?;
            row.map(|(state, etag)| Ok((serde_json::from_str(&state).map_err(corrupt)?, Etag(etag.to_string())))).transpose()
        })
        .await
    }

    async fn save_release(&self, release: &Release, etag: &Etag, history: &[ReleaseEntry]) -> Result<Etag, StoreError> {
        let expected: i64 = etag.0.parse().map_err(|_| StoreError::Conflict)?;
        let (id, wake, state) = (release.id.to_string(), millis(release.wake_at), encode(release)?);
        let rows =
            history.iter().map(|h| Ok((i64::try_from(h.seq).map_err(corrupt)?, encode(h)?))).collect::<Result<Vec<_>, StoreError>>()?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let changed = tx
                .execute(
                    "UPDATE releases SET etag = etag + 1, wake_at = ?1, state = ?2 WHERE id = ?3 AND etag = ?4",
                    params![wake, state, id, expected],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                let exists = tx.query_row("SELECT 1 FROM releases WHERE id = ?1", [&id], |_| Ok(())).optional().map_err(unavailable)?;
                return Err(if exists.is_some() { StoreError::Conflict } else { StoreError::NotFound(id) });
            }
            for (seq, entry) in rows {
                tx.execute("INSERT INTO release_history (release_id, seq, entry) VALUES (?1, ?2, ?3)", params![id, seq, entry]).map_err(
                    |e| match e {
                        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => StoreError::Conflict,
                        other => unavailable(other),
                    },
                )?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Etag((expected + 1).to_string()))
        })
        .await
    }

    async fn release_history(&self, id: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        let id = id.to_string();
        self.with(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT entry FROM release_history WHERE release_id = ?1 ORDER BY seq").map_err(unavailable)?;
            let rows = stmt.query_map([&id], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|row| serde_json::from_str(&row.map_err(unavailable)?).map_err(corrupt)).collect()
        })
        .await
    }

    async fn list_releases(&self, limit: usize) -> Result<Vec<Release>, StoreError> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.with(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, state FROM releases ORDER BY created_at DESC, id DESC LIMIT ?1").map_err(unavailable)?;
            let rows = stmt.query_map([limit], id_and_state).map_err(unavailable)?;
            decode_states(rows)
        })
        .await
    }

    async fn due_releases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError> {
        let now = now.timestamp_millis();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id FROM releases WHERE wake_at IS NOT NULL AND wake_at <= ?1 ORDER BY wake_at LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![now, limit as i64], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|id| RolloutId::parse(&id.map_err(unavailable)?).map_err(corrupt)).collect()
        })
        .await
    }

    async fn save_pipeline_wait(&self, wait: &PipelineWait) -> Result<(), StoreError> {
        let (rollout, task, record) = (wait.rollout.to_string(), wait.task_instance_id.to_string(), encode(wait)?);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO pipeline_waits (rollout_id, task_id, wait) VALUES (?1, ?2, ?3)",
                params![rollout, task, record],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn pipeline_waits(&self, rollout: Option<&str>, limit: usize) -> Result<Vec<PipelineWait>, StoreError> {
        let (rollout, limit) = (rollout.map(str::to_string), if limit == 0 { -1 } else { limit as i64 });
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT wait FROM pipeline_waits WHERE ?1 IS NULL OR rollout_id = ?1 ORDER BY rollout_id, task_id LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![rollout, limit], |row| row.get::<_, String>(0)).map_err(unavailable)?;
            rows.map(|w| serde_json::from_str(&w.map_err(unavailable)?).map_err(corrupt)).collect()
        })
        .await
    }

    async fn drop_pipeline_wait(&self, rollout: &str, task: &uuid::Uuid) -> Result<(), StoreError> {
        let (rollout, task) = (rollout.to_string(), task.to_string());
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            conn.execute("DELETE FROM pipeline_waits WHERE rollout_id = ?1 AND task_id = ?2", params![rollout, task])
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn tallies(&self) -> Result<Tallies, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT series, n FROM tallies").map_err(unavailable)?;
            let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))).map_err(unavailable)?;
            let mut pairs = Vec::new();
            for row in rows {
                let (series, n) = row.map_err(unavailable)?;
                pairs.push((serde_json::from_str(&series).map_err(corrupt)?, n));
            }
            Ok(Tallies::from(pairs))
        })
        .await
    }

    async fn prune_finished(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Pruned, StoreError> {
        let (cutoff, limit) = (cutoff.to_rfc3339(), limit as i64);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.with(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            // Oldest first along `rollouts_active_newest`; one with nothing left to do (no sweep) is never written again.
            let rollouts: Vec<(String, Option<String>)> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, tally FROM rollouts WHERE active = 0 AND sweep_at IS NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2",
                    )
                    .map_err(unavailable)?;
                let rows = stmt.query_map(params![cutoff, limit], |row| Ok((row.get(0)?, row.get(1)?))).map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            for (id, counted) in &rollouts {
                add_tallies(&tx, &Tallies::change(&stored_tally(counted.clone())?, &Tallies::default()))?;
                for sql in [
                    "DELETE FROM history WHERE rollout_id = ?1",
                    "DELETE FROM alert_keys WHERE rollout_id = ?1",
                    "DELETE FROM pipeline_waits WHERE rollout_id = ?1",
                    "DELETE FROM rollouts WHERE id = ?1",
                ] {
                    tx.prepare_cached(sql).and_then(|mut s| s.execute([id])).map_err(unavailable)?;
                }
            }
            // A release is finished once settled, which only its state says (one without a wake-up may still wait at a gate).
            let candidates: Vec<Release> = {
                let mut stmt = tx
                    .prepare_cached("SELECT id, state FROM releases WHERE wake_at IS NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2")
                    .map_err(unavailable)?;
                let read = limit * super::PRUNE_READ_FACTOR as i64;
                let rows = stmt.query_map(params![cutoff, read], id_and_state).map_err(unavailable)?;
                decode_states(rows)?
            };
            let mut releases = 0;
            for r in candidates.iter().filter(|r| r.settled()).take(limit as usize) {
                for sql in ["DELETE FROM release_history WHERE release_id = ?1", "DELETE FROM releases WHERE id = ?1"] {
                    tx.prepare_cached(sql).and_then(|mut s| s.execute([r.id.as_str()])).map_err(unavailable)?;
                }
                releases += 1;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Pruned { rollouts: rollouts.len(), releases })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_bounds_its_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_connection(&dir.path().join("sluice.db")).expect("opens");
        let kib: i64 = conn.query_row("PRAGMA cache_size", [], |row| row.get(0)).expect("reads");
        assert_eq!(kib, -PAGE_CACHE_KIB);
    }
}
