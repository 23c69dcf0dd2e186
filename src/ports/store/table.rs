//! The Azure Table Storage store (azure_data_tables 0.21).
//!
//! Layout:
//! - table `{prefix}rollouts`: one partition per rollout (key: the escaped
//!   id); row `state` holds the state, rows `h000000000001`… the history. A
//!   transition is one entity-group transaction: the state row updated on
//!   its ETag plus the new history rows. The state is split across `S0…Sn`
//!   properties so it never meets the 64 KiB property limit; history never
//!   lives in the state row.
//! - table `{prefix}index`, partition `index`: `active|{target}` (the claim
//!   that makes one active rollout per target an insert-only rule, not a
//!   read-then-write race), and hints checked against the state rows when
//!   read — never deleted on a read path:
//!   - `all|{t}|{id}`, `live|{t}|{id}` (active only) and
//!     `phase|{Phase}|{t}|{id}`, where `t` sorts newest first and each row
//!     carries `Target`, so a list is one range query with `$top` and its
//!     filters, then point reads in parallel;
//!   - `due|{ms}|{id}`: when the timer must next look at the rollout
//!     ([`Rollout::sweep_at`]). A save moving it earlier writes the row
//!     before the state (a crash between leaves an extra row, never a
//!     missing one); moving it later, after (the earlier row still brings
//!     the sweep meanwhile). The sweep drops rows that no longer match;
//!   - `alert|{key}|{id}`: an active rollout under each of its alert keys;
//!   - `done|{ms}|{id}`: a finished rollout under when it finished, so a
//!     report reads its period only. Stores written before these rows are
//!     filed by the timer, a batch a tick (`meta|done-rows` keeps how far
//!     it got); until then a report and `/api/metrics` read every state;
//!   - `meta|sealed`: the sums behind `/api/metrics` of every settled
//!     rollout filed under a `done|` key up to its mark, moved on by the
//!     timer; a scrape adds what is under way and what finished since, and
//!     retention takes a rollout out together with its `done|` row.
//!
//!   The load's ETag carries the sweep time of the state it names
//!   (`{service etag}#{ms}`), so a save knows which due row it replaces
//!   without reading it.
//! - partition `alerts` of the index table: received alerts, newest first,
//!   pruned past their retention together with the `delivered|…` index rows
//!   each one wrote.
//! - table `{prefix}releases`: one partition per release (state and
//!   history rows, as for rollouts); partition `newest` lists them newest
//!   first, and partition `wake` files each release the timer must visit
//!   under when (`{ms}|{id}`, written before the state when earlier, after
//!   when later, checked against the state when read), so a sweep reads
//!   only what is due.
//! - partition `waits` of the index table: `{rollout}|{task}`, each pipeline
//!   task waiting on a rollout (with its job token), deleted once answered.
//!
//! Keys escape every character outside `[A-Za-z0-9_.-]` as `~XX` (bytes of
//! its UTF-8), so forbidden characters (`/ \ # ?`, controls, quotes) never
//! reach a key and the escaping is reversible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::auth::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::StatusCode;
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::operations::TransactionBuilder;
use azure_data_tables::prelude::*;
use azure_storage::{CloudLocation, StorageCredentials};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use chrono::{DateTime, Utc};

use super::{AlertRecord, Etag, ListFilter, Pruned, Store, StoreError, DEFAULT_ALERT_RETENTION};
use crate::domain::health::Tallies;
use crate::domain::ids::RolloutId;
use crate::domain::pipeline_wait::PipelineWait;
use crate::domain::release::{Release, ReleaseEntry};
use crate::domain::rollout::{HistoryEntry, Phase, Rollout};

/// UTF-16 units per chunk: a string property holds at most 64 KiB (32 768 units).
const CHUNK_UNITS: usize = 32_000;
/// UTF-16 units per row: an entity holds at most 1 MiB with its keys and names.
const MAX_UNITS: usize = 490_000;
/// Operations in one entity-group transaction.
const MAX_BATCH: usize = 100;
const INDEX: &str = "index";
const ALERTS: &str = "alerts";

/// Escapes a key: `[A-Za-z0-9_.-]` as is, every other byte as `~XX`.
pub fn escape_key(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape_key`].
pub fn unescape_key(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where the tables are and how to authenticate.
#[derive(Debug, Clone)]
pub struct TableConnection {
    location: CloudLocation,
    credentials: StorageCredentials,
    /// Account name (for messages).
    pub account: String,
}

/// A connection-string problem, naming the part (never the key's value).
fn conn_problem(message: impl Into<String>) -> StoreError {
    StoreError::Unavailable(format!("table connection string: {}", message.into()))
}

impl TableConnection {
    /// Parses a storage connection string: `UseDevelopmentStorage=true`
    /// (the emulator, which azure_data_tables does not map by itself), or
    /// `AccountName`/`AccountKey` with `TableEndpoint`, or with
    /// `DefaultEndpointsProtocol`/`EndpointSuffix`.
    pub fn parse(connection_string: &str) -> Result<Self, StoreError> {
        let mut parts = std::collections::BTreeMap::new();
        for (i, piece) in connection_string.split(';').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            // Never quote the part: it may hold the key.
            let Some((k, v)) = piece.split_once('=') else {
                return Err(conn_problem(format!("part {} is not key=value", i + 1)));
            };
            parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if parts.get("usedevelopmentstorage").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false) {
            let (address, port) = match parts.get("developmentstorageproxyuri") {
                Some(uri) => {
                    let rest = uri.split("://").nth(1).unwrap_or(uri).trim_end_matches('/');
                    let (host, _) = rest.split_once(':').unwrap_or((rest, ""));
                    (host.to_string(), 10002)
                }
                None => ("127.0.0.1".to_string(), 10002),
            };
            return Ok(TableConnection {
                location: CloudLocation::Emulator { address, port },
                credentials: StorageCredentials::emulator(),
                account: "devstoreaccount1".into(),
            });
        }
        let account = parts.get("accountname").cloned().ok_or_else(|| conn_problem("AccountName is missing"))?;
        let credentials = match (parts.get("accountkey"), parts.get("sharedaccesssignature")) {
            (Some(key), _) if !key.is_empty() => StorageCredentials::access_key(account.clone(), key.clone()),
            (_, Some(sas)) => {
                StorageCredentials::sas_token(sas.clone()).map_err(|_| conn_problem("SharedAccessSignature is not a valid SAS"))?
            }
            _ => return Err(conn_problem("AccountKey (or SharedAccessSignature) is missing")),
        };
        let location = match parts.get("tableendpoint") {
            Some(uri) => CloudLocation::Custom { account: account.clone(), uri: uri.trim_end_matches('/').to_string() },
            None => {
                let protocol = parts.get("defaultendpointsprotocol").map(String::as_str).unwrap_or("https");
                let suffix = parts.get("endpointsuffix").map(String::as_str).unwrap_or("core.windows.net");
                CloudLocation::Custom { account: account.clone(), uri: format!("{protocol}://{account}.table.{suffix}") }
            }
        };
        Ok(TableConnection { location, credentials, account })
    }

    /// An account reached with an Entra ID token (managed identity).
    pub fn with_token(account: &str, credential: Arc<dyn TokenCredential>) -> Self {
        TableConnection {
            location: CloudLocation::Public { account: account.to_string() },
            credentials: StorageCredentials::token_credential(credential),
            account: account.to_string(),
        }
    }
}

/// The Table Storage store.
pub struct TableStore {
    rollouts: TableClient,
    releases: TableClient,
    index: TableClient,
    transactions: AtomicU64,
    alert_retention: chrono::TimeDelta,
    /// The minute alert records were last pruned in (one prune a minute).
    last_alert_prune: std::sync::atomic::AtomicI64,
    /// Set once format 1's release due partition has been read empty.
    format_1_due_rows_gone: std::sync::atomic::AtomicBool,
    /// Set once every finished rollout is known to have its `done|` row.
    done_rows_filed: std::sync::atomic::AtomicBool,
}

fn http_status(e: &azure_core::Error) -> Option<StatusCode> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

fn unavailable(e: azure_core::Error) -> StoreError {
    StoreError::Unavailable(crate::ports::azure::transport::describe(&e))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// One operation's result in a transaction.
struct OpResult {
    status: StatusCode,
    etag: Option<String>,
}

/// The first failing operation of a transaction, if any. A stale ETag does
/// not fail the call: it comes back as one operation answered 412.
fn failure(responses: &[OpResult]) -> Option<StatusCode> {
    responses.iter().map(|r| r.status).find(|s| !s.is_success())
}

fn history_key(seq: u64) -> String {
    format!("h{seq:012}")
}

fn inverted_time(r: &Rollout) -> String {
    let ms = r.created_at.timestamp_millis().max(0) as u64;
    format!("{:020}", u64::MAX / 2 - ms)
}

/// Splits a JSON document across string properties `{prefix}0…`, each under
/// the 64 KiB property limit (sizes count in UTF-16, as the service does).
fn put_chunks(entity: &mut Map<String, Value>, prefix: &str, text: &str) -> Result<(), StoreError> {
    let total: usize = text.encode_utf16().count();
    if total > MAX_UNITS {
        return Err(StoreError::Corrupt(format!(
            "a row of {total} UTF-16 units is over the {MAX_UNITS}-unit budget of one entity (1 MiB)"
        )));
    }
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut units = 0;
    for c in text.chars() {
        if units + c.len_utf16() > CHUNK_UNITS {
            chunks.push(std::mem::take(&mut current));
            units = 0;
        }
        units += c.len_utf16();
        current.push(c);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    entity.insert(format!("{prefix}Chunks"), json!(chunks.len()));
    for (i, c) in chunks.into_iter().enumerate() {
        entity.insert(format!("{prefix}{i}"), Value::String(c));
    }
    Ok(())
}

fn get_chunks(entity: &Value, prefix: &str) -> Result<String, StoreError> {
    let n = entity.get(format!("{prefix}Chunks")).and_then(Value::as_u64).ok_or_else(|| corrupt("row has no chunk count"))?;
    let mut text = String::new();
    for i in 0..n {
        text.push_str(entity.get(format!("{prefix}{i}")).and_then(Value::as_str).ok_or_else(|| corrupt(format!("row misses chunk {i}")))?);
    }
    Ok(text)
}

fn state_entity(r: &Rollout) -> Result<Value, StoreError> {
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(escape_key(&r.id)));
    e.insert("RowKey".into(), json!("state"));
    e.insert("Target".into(), json!(r.target()));
    e.insert("Phase".into(), json!(r.phase.as_str()));
    put_chunks(&mut e, "S", &serde_json::to_string(r).map_err(corrupt)?)?;
    Ok(Value::Object(e))
}

fn history_entity(id: &str, h: &HistoryEntry) -> Result<Value, StoreError> {
    history_row(id, h.seq, h)
}

/// A history row: partition `id`, row `h{seq}`, the entry in chunks.
fn history_row(id: &str, seq: u64, entry: &impl serde::Serialize) -> Result<Value, StoreError> {
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(escape_key(id)));
    e.insert("RowKey".into(), json!(history_key(seq)));
    put_chunks(&mut e, "H", &serde_json::to_string(entry).map_err(corrupt)?)?;
    Ok(Value::Object(e))
}

fn index_row(row_key: String, extra: Value) -> Value {
    let mut e = match extra {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    e.insert("PartitionKey".into(), json!(INDEX));
    e.insert("RowKey".into(), json!(row_key));
    Value::Object(e)
}

/// The row saying the webhook delivered an alert in a condition to a rollout.
fn delivery_key(alert_id: &str, condition: &str, rollout: &str) -> String {
    format!("delivered|{}|{}|{condition}", escape_key(rollout), escape_key(alert_id))
}

fn active_key(target: &str) -> String {
    format!("active|{}", escape_key(target))
}

fn phase_key(phase: Phase, r: &Rollout) -> String {
    format!("phase|{}|{}|{}", phase.as_str(), inverted_time(r), escape_key(&r.id))
}

fn live_key(r: &Rollout) -> String {
    format!("live|{}|{}", inverted_time(r), escape_key(&r.id))
}

fn all_key(r: &Rollout) -> String {
    format!("all|{}|{}", inverted_time(r), escape_key(&r.id))
}

/// A finished rollout filed under when it finished, for the report of a period.
fn done_key(r: &Rollout) -> Option<String> {
    r.finished_at.map(|t| format!("done|{:015}|{}", t.timestamp_millis().max(0), escape_key(&r.id)))
}

fn due_key(at_ms: i64, id: &str) -> String {
    format!("due|{:015}|{}", at_ms.max(0), escape_key(id))
}

fn alert_key_row(key: &str, id: &str) -> String {
    format!("alert|{}|{}", escape_key(key), escape_key(id))
}

fn alert_key_prefix(key: &str) -> String {
    format!("alert|{}|", escape_key(key))
}

/// The index rows that name a rollout's target (so list filters run in the query).
fn target_row(key: String, r: &Rollout) -> Value {
    index_row(key, json!({"Target": r.target()}))
}

fn sweep_ms(r: &Rollout) -> Option<i64> {
    r.sweep_at().map(|t| t.timestamp_millis())
}

/// The ETag handed out: the service's, plus the sweep time of the state it
/// names, so a save knows which due row the state it replaces was filed under.
fn etag_for(service: &str, sweep: Option<i64>) -> Etag {
    Etag(format!("{service}#{}", sweep.map(|m| m.to_string()).unwrap_or_else(|| "-".into())))
}

/// The service's ETag and, if the ETag carries it, the previous sweep time.
fn split_etag(etag: &Etag) -> (String, Option<Option<i64>>) {
    match etag.0.rsplit_once('#') {
        Some((service, "-")) => (service.to_string(), Some(None)),
        Some((service, ms)) => match ms.parse::<i64>() {
            Ok(ms) => (service.to_string(), Some(Some(ms))),
            Err(_) => (etag.0.clone(), None),
        },
        None => (etag.0.clone(), None),
    }
}

/// The quoted OData literal of a string.
fn odata(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    if let Some(last) = chars.pop() {
        chars.push(char::from_u32(last as u32 + 1).unwrap_or(char::MAX));
    }
    chars.into_iter().collect()
}

/// A due row as read back: when, whose, and its version (for a safe delete).
struct DueRow {
    key: String,
    at_ms: i64,
    id: String,
    etag: Option<String>,
}

fn due_row(row: &Value) -> Option<DueRow> {
    let key = row.get("RowKey").and_then(Value::as_str)?.to_string();
    let mut parts = key.splitn(3, '|').skip(1);
    let at_ms = parts.next()?.parse().ok()?;
    let id = unescape_key(parts.next()?)?;
    let etag = row.get("odata.etag").and_then(Value::as_str).map(str::to_string);
    Some(DueRow { key, at_ms, id, etag })
}

/// One change to the index partition.
enum IndexOp {
    Upsert(Value),
    Delete(String, IfMatchCondition),
}

impl IndexOp {
    fn add(self, t: TransactionBuilder) -> azure_core::Result<TransactionBuilder> {
        match self {
            IndexOp::Upsert(row) => {
                let key = row.get("RowKey").and_then(Value::as_str).unwrap_or_default().to_string();
                t.insert_or_replace(key, row)
            }
            IndexOp::Delete(key, condition) => t.delete(key, Some(condition)),
        }
    }

    fn clone_op(&self) -> IndexOp {
        match self {
            IndexOp::Upsert(row) => IndexOp::Upsert(row.clone()),
            IndexOp::Delete(key, c) => IndexOp::Delete(key.clone(), c.clone()),
        }
    }
}

/// A due row older than this that no longer matches its rollout is dropped
/// by the sweep; a younger one is left for a later sweep, so a writer that
/// has just filed the rollout under that very time never loses its row.
const STALE_DUE_GRACE_MS: i64 = 60_000;
/// How long a target's claim may stand without its rollout's state before it
/// counts as left by a create that died (a create takes milliseconds).
const CREATE_IN_FLIGHT: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// The row holding the sums of sealed rollouts: finished, settled, and
/// filed under a `done|` key at most its `After`.
const SEALED: &str = "meta|sealed";
/// A rollout is sealed only this long after it finished, so a `done|` row
/// from an instance whose clock is a little behind never lands behind the
/// mark. (A row whose state does not say finished yet is held aside.)
const SEAL_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// Batches of [`MAX_BATCH`] sealed per timer pass at most: at a tick every
/// five minutes, 400 rollouts finishing a minute are kept up with.
const SEAL_BATCHES: usize = 20;

/// The sealed sums as read, with the row's version for a safe update.
struct Sealed {
    after: String,
    sums: Tallies,
    /// `(id, done| key)` of rollouts the mark passed while they were still
    /// busy, or before their finishing state was written: not in the sums yet.
    held: Vec<(String, String)>,
    etag: Option<azure_core::Etag>,
}

fn sealed_row(after: &str, sums: &Tallies, held: &[(String, String)]) -> Result<Value, StoreError> {
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(INDEX));
    e.insert("RowKey".into(), json!(SEALED));
    e.insert("After".into(), json!(after));
    put_chunks(&mut e, "T", &serde_json::to_string(sums).map_err(corrupt)?)?;
    put_chunks(&mut e, "H", &serde_json::to_string(held).map_err(corrupt)?)?;
    Ok(Value::Object(e))
}

/// What a rollout adds to the sums behind `/api/metrics`.
fn tally_of(r: &Rollout) -> Tallies {
    Tallies::of(&crate::domain::health::Facts::of(r))
}

/// The row saying how far the walk that files `done|` rows has got.
const DONE_ROWS_MARK: &str = "meta|done-rows";
/// Point reads in flight at once when loading many rollouts.
const PARALLEL_LOADS: usize = 16;

impl TableStore {
    /// Connects and creates the tables if they do not exist. `prefix` (letters
    /// and digits) names them: `{prefix}rollouts`, `{prefix}index`, `{prefix}releases`.
    pub async fn connect(connection: &TableConnection, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_over(connection, prefix, crate::ports::azure::transport::BoundedTransport::new()).await
    }

    /// The same over a given transport (tests bring one with a short timeout).
    pub async fn connect_over(
        connection: &TableConnection,
        prefix: &str,
        transport: std::sync::Arc<dyn azure_core::HttpClient>,
    ) -> Result<Self, StoreError> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) || !prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(StoreError::Unavailable(format!("table prefix '{prefix}' must be letters and digits, starting with a letter")));
        }
        // azure_core's own transport has no timeout and reads answers whole: never used.
        let transport = azure_core::TransportOptions::new(transport);
        let service = TableServiceClientBuilder::with_location(connection.location.clone(), connection.credentials.clone())
            .transport(transport)
            .retry(crate::ports::azure::transport::sdk_retries())
            .build();
        let store = TableStore {
            rollouts: service.table_client(format!("{prefix}rollouts")),
            releases: service.table_client(format!("{prefix}releases")),
            index: service.table_client(format!("{prefix}index")),
            transactions: AtomicU64::new(0),
            alert_retention: DEFAULT_ALERT_RETENTION,
            last_alert_prune: std::sync::atomic::AtomicI64::new(0),
            format_1_due_rows_gone: std::sync::atomic::AtomicBool::new(false),
            done_rows_filed: std::sync::atomic::AtomicBool::new(false),
        };
        for table in [&store.rollouts, &store.index, &store.releases] {
            match table.create().await {
                Ok(_) => {}
                Err(e) if http_status(&e) == Some(StatusCode::Conflict) => {}
                Err(e) => {
                    let why = crate::ports::azure::transport::describe(&e);
                    return Err(StoreError::Unavailable(format!("creating table {}: {why}", table.table_name())));
                }
            }
        }
        // A store with no rollout yet needs no walk: every rollout it will hold files its own `done|` row.
        if store.index_rows("all|", "", 1).await?.is_empty() && store.get(&store.index, INDEX, DONE_ROWS_MARK).await?.is_none() {
            let mark = index_row(DONE_ROWS_MARK.to_string(), json!({"After": "all|", "Done": true}));
            let _ = store.transaction(&store.index, INDEX, |t| t.insert(mark)).await;
        }
        Ok(store)
    }

    /// Keeps alert records for `retention` (`SLUICE_ALERT_RETENTION_DAYS`).
    pub fn with_alert_retention(mut self, retention: chrono::TimeDelta) -> Self {
        self.alert_retention = retention;
        self
    }

    /// Runs one entity-group transaction; the builder adds the operations.
    async fn transaction(
        &self,
        table: &TableClient,
        partition: &str,
        build: impl FnOnce(TransactionBuilder) -> azure_core::Result<TransactionBuilder>,
    ) -> Result<Vec<OpResult>, StoreError> {
        let builder = build(table.partition_key_client(partition.to_string()).transaction()).map_err(corrupt)?;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let response = builder.await.map_err(unavailable)?;
        Ok(response
            .operation_responses
            .into_iter()
            .map(|r| OpResult { status: r.status_code, etag: r.etag.map(|e| e.to_string()) })
            .collect())
    }

    /// Applies index changes: one transaction per hundred, and where one
    /// fails (a row already gone, a row changed since it was read), each of
    /// its changes alone. Best effort: index rows are hints checked against
    /// the state rows, and the sweep repairs the due rows.
    async fn apply_index(&self, ops: Vec<IndexOp>) {
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_BATCH));
            let batch = std::mem::replace(&mut ops, rest);
            let copies: Vec<IndexOp> = batch.iter().map(IndexOp::clone_op).collect();
            let all = |t: TransactionBuilder| batch.into_iter().try_fold(t, |t, op| op.add(t));
            match self.transaction(&self.index, INDEX, all).await {
                Ok(responses) if failure(&responses).is_none() => {}
                _ if copies.len() > 1 => {
                    for op in copies {
                        let _ = self.transaction(&self.index, INDEX, |t| op.add(t)).await;
                    }
                }
                _ => {}
            }
        }
    }

    async fn get(&self, table: &TableClient, partition: &str, row: &str) -> Result<Option<(Value, azure_core::Etag)>, StoreError> {
        match table.partition_key_client(partition.to_string()).entity_client(row.to_string()).get::<Value>().await {
            Ok(r) => Ok(Some((r.entity, r.etag))),
            Err(e) if http_status(&e) == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Rows matching `filter`, at most `limit` (0: all), in key order.
    async fn query(&self, table: &TableClient, filter: String, limit: usize) -> Result<Vec<Value>, StoreError> {
        let mut query = table.query().filter(Filter::new(filter));
        if limit > 0 {
            query = query.top(Top::new(limit.min(1000) as u32));
        }
        let mut stream = query.into_stream::<Value>();
        let mut out = Vec::new();
        while let Some(page) = stream.next().await {
            out.extend(page.map_err(unavailable)?.entities);
            if limit > 0 && out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    /// Index rows whose key starts with `prefix`, in key order, at most `limit`.
    async fn index_rows(&self, prefix: &str, extra: &str, limit: usize) -> Result<Vec<Value>, StoreError> {
        let filter =
            format!("PartitionKey eq '{INDEX}' and RowKey ge {} and RowKey lt {}{extra}", odata(prefix), odata(&prefix_end(prefix)));
        self.query(&self.index, filter, limit).await
    }

    fn id_from_key(key: &str) -> Option<String> {
        key.rsplit('|').next().and_then(unescape_key)
    }

    /// The rollout ids of index rows.
    fn ids_of(rows: &[Value]) -> Vec<String> {
        rows.iter().filter_map(|row| row.get("RowKey").and_then(Value::as_str).and_then(Self::id_from_key)).collect()
    }

    /// Loads rollouts by id, a few point reads at a time, in the order given
    /// (ids whose state is gone are skipped).
    /// Loads states in parallel; one Sluice cannot read is left out and
    /// reported by id, so it hides no other rollout (and, as it stays as
    /// stored and its load fails, nothing overwrites it).
    async fn load_many(&self, ids: Vec<String>) -> Result<Vec<Rollout>, StoreError> {
        let loads = futures::stream::iter(ids).map(|id| async move { (self.load(&id).await, id) }).buffered(PARALLEL_LOADS);
        let loaded: Vec<_> = loads.collect().await;
        let mut out = Vec::new();
        for (r, id) in loaded {
            match r {
                Ok(Some((r, _))) => out.push(r),
                Ok(None) => {}
                Err(StoreError::Corrupt(e)) => super::unreadable(&id, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Drops a claim on `target` that points at a rollout that is finished or gone.
    async fn release_stale_claim(&self, target: &str) -> Result<bool, StoreError> {
        let key = active_key(target);
        let Some((claim, etag)) = self.get(&self.index, INDEX, &key).await? else { return Ok(true) };
        let holder = claim.get("Rollout").and_then(Value::as_str).unwrap_or("").to_string();
        // A claim is written before its rollout's state: a holder with no state
        // yet is a create in flight, not a stale claim — until the claim is
        // older than any create takes (a create that died between the two).
        let claimed_at = claim.get("Timestamp").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let in_flight = claimed_at.is_some_and(|at| chrono::Utc::now().signed_duration_since(at) < CREATE_IN_FLIGHT);
        let alive = match self.load(&holder).await? {
            Some((r, _)) => !r.phase.is_terminal(),
            None => in_flight,
        };
        if alive {
            return Ok(false);
        }
        let responses = self.transaction(&self.index, INDEX, |t| t.delete(key.clone(), Some(IfMatchCondition::Etag(etag)))).await?;
        Ok(failure(&responses).is_none())
    }

    /// The index changes a save makes after the state is written: the phase
    /// rows, the due row when it moved later (the earlier row, still in
    /// place until now, made the sweep look at the rollout meanwhile), and
    /// on finishing the live row, the alert keys and the target's claim.
    async fn update_index(&self, r: &Rollout, history: &[HistoryEntry], old_sweep: Option<Option<i64>>, written_ahead: bool) {
        let old_phase = history.first().map(|h| h.from).unwrap_or(r.phase);
        let finished_now = r.phase.is_terminal() && !old_phase.is_terminal();
        let new_sweep = sweep_ms(r);
        let mut ops = Vec::new();
        if old_phase != r.phase {
            ops.push(IndexOp::Delete(phase_key(old_phase, r), IfMatchCondition::Any));
            ops.push(IndexOp::Upsert(target_row(phase_key(r.phase, r), r)));
        }
        let due_moved = old_sweep.map(|old| old != new_sweep).unwrap_or(false);
        if due_moved && !written_ahead {
            if let Some(at) = new_sweep {
                ops.push(IndexOp::Upsert(index_row(due_key(at, &r.id), json!({}))));
            }
        }
        if finished_now {
            ops.push(IndexOp::Delete(live_key(r), IfMatchCondition::Any));
            ops.extend(done_key(r).map(|key| IndexOp::Upsert(target_row(key, r))));
            ops.extend(r.alert_keys().iter().map(|k| IndexOp::Delete(alert_key_row(k, &r.id), IfMatchCondition::Any)));
            if let Ok(Some((claim, etag))) = self.get(&self.index, INDEX, &active_key(r.target())).await {
                if claim.get("Rollout").and_then(Value::as_str) == Some(r.id.as_str()) {
                    ops.push(IndexOp::Delete(active_key(r.target()), IfMatchCondition::Etag(etag)));
                }
            }
        }
        // The old due row goes with a transaction made anyway; alone it is not
        // worth one: the sweep drops it when it comes due.
        if let Some(at) = old_sweep.flatten().filter(|_| due_moved && !ops.is_empty()) {
            ops.push(IndexOp::Delete(due_key(at, &r.id), IfMatchCondition::Any));
        }
        if !ops.is_empty() {
            self.apply_index(ops).await;
        }
    }
}

fn parse_state(entity: &Value) -> Result<Rollout, StoreError> {
    serde_json::from_str(&get_chunks(entity, "S")?).map_err(corrupt)
}

#[async_trait]
impl Store for TableStore {
    async fn create(&self, rollout: &Rollout, first: &HistoryEntry) -> Result<Etag, StoreError> {
        if self.get(&self.rollouts, &escape_key(&rollout.id), "state").await?.is_some() {
            return Err(StoreError::AlreadyExists(rollout.id.to_string()));
        }
        let state = state_entity(rollout)?;
        let first_row = history_entity(&rollout.id, first)?;
        let (id, target) = (rollout.id.clone(), rollout.target().to_string());
        // Every index row but the claim is a hint: a create that fails later leaves them harmless.
        let mut hints = vec![
            IndexOp::Upsert(target_row(all_key(rollout), rollout)),
            IndexOp::Upsert(target_row(phase_key(rollout.phase, rollout), rollout)),
        ];
        if !rollout.phase.is_terminal() {
            hints.push(IndexOp::Upsert(target_row(live_key(rollout), rollout)));
            hints.extend(rollout.alert_keys().iter().map(|k| IndexOp::Upsert(index_row(alert_key_row(k, &id), json!({})))));
        }
        if let Some(at) = sweep_ms(rollout) {
            hints.push(IndexOp::Upsert(index_row(due_key(at, &id), json!({}))));
        }
        let overflow = hints.split_off(hints.len().min(MAX_BATCH - 1));
        if !overflow.is_empty() {
            self.apply_index(overflow).await;
        }
        for attempt in 0..2 {
            let ops: Vec<IndexOp> = hints.iter().map(IndexOp::clone_op).collect();
            let claim = |t: TransactionBuilder| -> azure_core::Result<TransactionBuilder> {
                let t = t.insert(index_row(active_key(&target), json!({"Rollout": id})))?;
                ops.into_iter().try_fold(t, |t, op| op.add(t))
            };
            let responses = self.transaction(&self.index, INDEX, claim).await?;
            match failure(&responses) {
                None => break,
                Some(StatusCode::Conflict) if attempt == 0 => {
                    if !self.release_stale_claim(&target).await? {
                        let holder = self.active_for_target(&target).await?.unwrap_or_default();
                        return Err(StoreError::TargetBusy { target: target.clone(), active: holder });
                    }
                }
                Some(StatusCode::Conflict) => {
                    let holder = self.active_for_target(&target).await?.unwrap_or_default();
                    return Err(StoreError::TargetBusy { target: target.clone(), active: holder });
                }
                Some(other) => return Err(StoreError::Unavailable(format!("index transaction failed with HTTP {other}"))),
            }
        }
        let (state_c, first_c) = (state.clone(), first_row.clone());
        let responses = self.transaction(&self.rollouts, &escape_key(&id), |t| t.insert(state_c)?.insert(first_c)).await?;
        if let Some(status) = failure(&responses) {
            // Undo the claim so the target is not blocked by a rollout that does not exist.
            let _ = self.transaction(&self.index, INDEX, |t| t.delete(active_key(&target), Some(IfMatchCondition::Any))).await;
            return Err(if status == StatusCode::Conflict {
                StoreError::AlreadyExists(id.to_string())
            } else {
                StoreError::Unavailable(format!("creating the rollout failed with HTTP {status}"))
            });
        }
        match responses.first().and_then(|r| r.etag.clone()) {
            Some(e) => Ok(etag_for(&e, sweep_ms(rollout))),
            None => self.load(&id).await?.map(|(_, e)| e).ok_or_else(|| StoreError::Unavailable("created rollout not readable".into())),
        }
    }

    async fn load(&self, id: &str) -> Result<Option<(Rollout, Etag)>, StoreError> {
        match self.get(&self.rollouts, &escape_key(id), "state").await? {
            None => Ok(None),
            Some((entity, etag)) => {
                let r = parse_state(&entity)?;
                let etag = etag_for(etag.as_ref(), sweep_ms(&r));
                Ok(Some((r, etag)))
            }
        }
    }

    async fn save(&self, rollout: &Rollout, etag: &Etag, history: &[HistoryEntry]) -> Result<Etag, StoreError> {
        if history.len() + 1 > MAX_BATCH {
            return Err(StoreError::Corrupt(format!("{} history rows cannot be written in one transaction", history.len())));
        }
        let (service_etag, old_sweep) = split_etag(etag);
        let new_sweep = sweep_ms(rollout);
        // A rollout must never be due earlier than its due row says: a row for
        // an earlier time (or a first one) is written before the state.
        let ahead = match (old_sweep, new_sweep) {
            (_, None) => false,
            (Some(Some(old)), Some(new)) => new < old,
            (_, Some(_)) => true,
        };
        if let (true, Some(at)) = (ahead, new_sweep) {
            let key = due_key(at, &rollout.id);
            let responses = self.transaction(&self.index, INDEX, |t| t.insert_or_replace(key.clone(), index_row(key, json!({})))).await?;
            if let Some(status) = failure(&responses) {
                return Err(StoreError::Unavailable(format!("filing the rollout's next sweep failed with HTTP {status}")));
            }
        }
        // A finishing rollout is filed under when it finished before its state says so: the sums behind
        // `/api/metrics` and the report find it there (a row whose save then fails is a hint they check).
        let finishing = rollout.phase.is_terminal() && history.first().is_some_and(|h| !h.from.is_terminal());
        if let Some(key) = done_key(rollout).filter(|_| finishing) {
            let row = target_row(key.clone(), rollout);
            let responses = self.transaction(&self.index, INDEX, |t| t.insert_or_replace(key, row)).await?;
            if let Some(status) = failure(&responses) {
                return Err(StoreError::Unavailable(format!("filing the finished rollout failed with HTTP {status}")));
            }
        }
        let state = state_entity(rollout)?;
        let rows = history.iter().map(|h| history_entity(&rollout.id, h)).collect::<Result<Vec<_>, _>>()?;
        let responses = self.update_with_history(&self.rollouts, &rollout.id, state, service_etag, rows).await?;
        let new_etag = responses.first().and_then(|r| r.etag.clone()).map(|e| etag_for(&e, new_sweep));
        self.update_index(rollout, history, old_sweep, ahead).await;
        match new_etag {
            Some(e) => Ok(e),
            None => self.load(&rollout.id).await?.map(|(_, e)| e).ok_or_else(|| StoreError::NotFound(rollout.id.to_string())),
        }
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history_rows(&self.rollouts, id, |h: &HistoryEntry| h.seq).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Rollout>, StoreError> {
        // Newest first by key: the phase rows for a phase, the live rows for
        // active ones, else every rollout; the target filter runs in the query.
        let prefix = match (filter.phase, filter.active_only) {
            (Some(p), _) => format!("phase|{}|", p.as_str()),
            (None, true) => "live|".to_string(),
            (None, false) => "all|".to_string(),
        };
        let extra = filter.target.as_ref().map(|t| format!(" and Target eq {}", odata(t))).unwrap_or_default();
        let rows = self.index_rows(&prefix, &extra, filter.limit).await?;
        let ids: Vec<String> = rows.iter().filter_map(|r| r.get("RowKey").and_then(Value::as_str).and_then(Self::id_from_key)).collect();
        // Rows are hints: what they say is checked against the state (and never deleted here).
        let out: Vec<Rollout> = self
            .load_many(ids)
            .await?
            .into_iter()
            .filter(|r| filter.phase.map(|p| r.phase == p).unwrap_or(true))
            .filter(|r| !filter.active_only || !r.phase.is_terminal())
            .filter(|r| filter.target.as_ref().map(|t| r.target() == t).unwrap_or(true))
            .collect();
        Ok(out)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError> {
        let now_ms = now.timestamp_millis();
        let filter = format!("PartitionKey eq '{INDEX}' and RowKey ge 'due|' and RowKey lt {}", odata(&due_key(now_ms + 1, "")));
        let rows: Vec<DueRow> = self.query(&self.index, filter, limit).await?.iter().filter_map(due_row).collect();
        let mut ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        ids.dedup();
        let states: Vec<Option<Rollout>> = futures::stream::iter(ids.clone())
            .map(|id| async move { self.load(&id).await.map(|l| l.map(|(r, _)| r)) })
            .buffered(PARALLEL_LOADS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let sweeps: std::collections::HashMap<&str, Option<i64>> =
            ids.iter().zip(&states).map(|(id, s)| (id.as_str(), s.as_ref().and_then(sweep_ms))).collect();
        let mut repairs = Vec::new();
        let mut due = Vec::new();
        for row in &rows {
            let wanted = sweeps.get(row.id.as_str()).copied().flatten();
            if wanted == Some(row.at_ms) {
                if !due.contains(&row.id) {
                    due.push(row.id.clone());
                }
                continue;
            }
            if let Some(at) = wanted.filter(|at| *at <= now_ms) {
                // Due, though filed under another time: visit it anyway.
                let _ = at;
                if !due.contains(&row.id) {
                    due.push(row.id.clone());
                }
            }
            if row.at_ms < now_ms - STALE_DUE_GRACE_MS {
                let condition =
                    row.etag.clone().map(|e| IfMatchCondition::Etag(azure_core::Etag::from(e))).unwrap_or(IfMatchCondition::Any);
                repairs.push(IndexOp::Delete(row.key.clone(), condition));
                if let Some(at) = wanted.filter(|at| *at > now_ms) {
                    repairs.push(IndexOp::Upsert(index_row(due_key(at, &row.id), json!({}))));
                }
            }
        }
        if !repairs.is_empty() {
            self.apply_index(repairs).await;
        }
        due.into_iter().map(|id| RolloutId::parse(&id).map_err(corrupt)).collect()
    }

    async fn active_by_alert_keys(&self, keys: &[String]) -> Result<Vec<Rollout>, StoreError> {
        let prefixes: Vec<String> = keys.iter().map(|k| alert_key_prefix(k)).collect();
        let lookups = futures::stream::iter(prefixes)
            .map(|prefix| async move { self.index_rows(&prefix, "", 0).await })
            .buffered(PARALLEL_LOADS)
            .collect::<Vec<_>>()
            .await;
        let mut ids = Vec::new();
        for rows in lookups {
            for id in rows?.iter().filter_map(|r| r.get("RowKey").and_then(Value::as_str).and_then(Self::id_from_key)) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(self.load_many(ids).await?.into_iter().filter(|r| !r.phase.is_terminal()).collect())
    }

    async fn active_for_target(&self, target: &str) -> Result<Option<String>, StoreError> {
        let Some((claim, _)) = self.get(&self.index, INDEX, &active_key(target)).await? else { return Ok(None) };
        let Some(holder) = claim.get("Rollout").and_then(Value::as_str).map(str::to_string) else { return Ok(None) };
        match self.load(&holder).await? {
            Some((r, _)) if !r.phase.is_terminal() => Ok(Some(holder)),
            _ => Ok(None),
        }
    }

    async fn record_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        let ms = alert.received_at.timestamp_millis().max(0) as u64;
        let key = format!("{:020}|{}", u64::MAX / 2 - ms, uuid::Uuid::new_v4().simple());
        let mut e = Map::new();
        e.insert("PartitionKey".into(), json!(ALERTS));
        e.insert("RowKey".into(), json!(key));
        put_chunks(&mut e, "A", &serde_json::to_string(alert).map_err(corrupt)?)?;
        // The delivery rows first: an alert message is believed only once they exist.
        let keys: Vec<String> = alert.matched.iter().map(|rollout| delivery_key(&alert.alert_id, &alert.condition, rollout)).collect();
        for rows in keys.chunks(MAX_BATCH) {
            let rows = rows.to_vec();
            let responses = self
                .transaction(&self.index, INDEX, |mut t| {
                    for key in rows {
                        t = t.insert_or_replace(key.clone(), index_row(key, json!({})))?;
                    }
                    Ok(t)
                })
                .await?;
            if let Some(s) = failure(&responses) {
                return Err(StoreError::Unavailable(format!("recording the alert's delivery failed with HTTP {s}")));
            }
        }
        let responses = self.transaction(&self.index, ALERTS, |t| t.insert(Value::Object(e))).await?;
        if let Some(s) = failure(&responses) {
            return Err(StoreError::Unavailable(format!("recording the alert failed with HTTP {s}")));
        }
        self.drop_old_alerts(alert.received_at).await;
        Ok(())
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        // Keys are newest first, so the first `limit` rows are the newest.
        let rows = self.query(&self.index, format!("PartitionKey eq '{ALERTS}'"), limit).await?;
        rows.iter().map(|r| get_chunks(r, "A").and_then(|t| serde_json::from_str(&t).map_err(corrupt))).collect()
    }

    async fn alert_delivered(&self, alert_id: &str, condition: &str, rollout: &str) -> Result<bool, StoreError> {
        Ok(self.get(&self.index, INDEX, &delivery_key(alert_id, condition, rollout)).await?.is_some())
    }

    fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    async fn create_release(&self, release: &Release, first: &ReleaseEntry) -> Result<Etag, StoreError> {
        let pk = escape_key(&release.id);
        if self.get(&self.releases, &pk, "state").await?.is_some() {
            return Err(StoreError::AlreadyExists(release.id.to_string()));
        }
        // The list and wake rows first: both are hints a reader checks against the state.
        let newest = format!("{}|{pk}", inverted_ms(release.created_at));
        let mut hints = vec![(RELEASES_NEWEST, newest.clone(), json!({"PartitionKey": RELEASES_NEWEST, "RowKey": newest}))];
        let wake = wake_ms(release);
        if let Some(at) = wake {
            let key = wake_key(at, &pk);
            hints.push((RELEASES_WAKE, key.clone(), wake_row(&key)));
        }
        for (partition, key, row) in hints {
            let responses = self.transaction(&self.releases, partition, |t| t.insert_or_replace(key, row)).await?;
            if let Some(status) = failure(&responses) {
                return Err(StoreError::Unavailable(format!("filing the release failed with HTTP {status}")));
            }
        }
        let (state, first) = (release_entity(release)?, release_history_entity(&release.id, first)?);
        let responses = self.transaction(&self.releases, &pk, |t| t.insert(state)?.insert(first)).await?;
        match failure(&responses) {
            None => Ok(etag_for(&responses.first().and_then(|r| r.etag.clone()).unwrap_or_default(), wake)),
            Some(StatusCode::Conflict) => Err(StoreError::AlreadyExists(release.id.to_string())),
            Some(status) => Err(StoreError::Unavailable(format!("creating the release failed with HTTP {status}"))),
        }
    }

    async fn load_release(&self, id: &str) -> Result<Option<(Release, Etag)>, StoreError> {
        match self.get(&self.releases, &escape_key(id), "state").await? {
            None => Ok(None),
            Some((entity, etag)) => {
                let release: Release = serde_json::from_str(&get_chunks(&entity, "S")?).map_err(corrupt)?;
                let etag = etag_for(etag.as_ref(), wake_ms(&release));
                Ok(Some((release, etag)))
            }
        }
    }

    async fn save_release(&self, release: &Release, etag: &Etag, history: &[ReleaseEntry]) -> Result<Etag, StoreError> {
        if history.len() + 1 > MAX_BATCH {
            return Err(StoreError::Corrupt(format!("{} history rows cannot be written in one transaction", history.len())));
        }
        let pk = escape_key(&release.id);
        let (service_etag, old_wake) = split_etag(etag);
        let new_wake = wake_ms(release);
        // Never due later than the state says: an earlier wake row goes in before the state.
        let ahead = match (old_wake, new_wake) {
            (_, None) => false,
            (Some(Some(old)), Some(new)) => new < old,
            (_, Some(_)) => true,
        };
        if let (true, Some(at)) = (ahead, new_wake) {
            self.file_release_wake(&pk, at).await?;
        }
        let state = release_entity(release)?;
        let rows = history.iter().map(|h| release_history_entity(&release.id, h)).collect::<Result<Vec<_>, _>>()?;
        let responses = self.update_with_history(&self.releases, &release.id, state, service_etag, rows).await?;
        // A later wake row goes in after the state (the earlier one brought the sweep meanwhile), and the
        // old row goes; if either fails, a row is early or stale, which only costs the sweep a look.
        if let Some(old) = old_wake.filter(|old| *old != new_wake) {
            if let (false, Some(at)) = (ahead, new_wake) {
                let _ = self.file_release_wake(&pk, at).await;
            }
            if let Some(at) = old {
                let _ = self.transaction(&self.releases, RELEASES_WAKE, |t| t.delete(wake_key(at, &pk), Some(IfMatchCondition::Any))).await;
            }
        }
        match responses.first().and_then(|r| r.etag.clone()) {
            Some(e) => Ok(etag_for(&e, new_wake)),
            None => self.load_release(&release.id).await?.map(|(_, e)| e).ok_or_else(|| StoreError::NotFound(release.id.to_string())),
        }
    }

    async fn release_history(&self, id: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        self.history_rows(&self.releases, id, |h: &ReleaseEntry| h.seq).await
    }

    async fn list_releases(&self, limit: usize) -> Result<Vec<Release>, StoreError> {
        let rows = self.query(&self.releases, format!("PartitionKey eq '{RELEASES_NEWEST}'"), limit).await?;
        let mut out = Vec::new();
        for row in rows {
            let Some(id) = row.get("RowKey").and_then(Value::as_str).and_then(Self::id_from_key) else { continue };
            match self.load_release(&id).await {
                Ok(Some((r, _))) => out.push(r),
                Ok(None) => {}
                Err(StoreError::Corrupt(e)) => super::unreadable(&id, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn due_releases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError> {
        self.refile_format_1_due_rows().await;
        let now_ms = now.timestamp_millis();
        let filter = format!("PartitionKey eq '{RELEASES_WAKE}' and RowKey lt {}", odata(&wake_key(now_ms + 1, "")));
        let rows: Vec<(i64, String, String)> = self
            .query(&self.releases, filter, limit)
            .await?
            .iter()
            .filter_map(|row| {
                let key = row.get("RowKey")?.as_str()?;
                let (ms, pk) = key.split_once('|')?;
                Some((ms.parse().ok()?, pk.to_string(), key.to_string()))
            })
            .collect();
        let mut due = Vec::new();
        for (at, pk, key) in rows {
            let Some(id) = unescape_key(&pk) else { continue };
            // A hint, checked against the state: a stale row past the grace goes, and the state's own time is filed.
            let wanted = match self.load_release(&id).await {
                Ok(loaded) => loaded.and_then(|(r, _)| wake_ms(&r)),
                Err(StoreError::Corrupt(e)) => {
                    super::unreadable(&id, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if wanted.map(|w| w <= now_ms).unwrap_or(false) && !due.contains(&id) {
                due.push(id.clone());
            }
            if wanted != Some(at) && at < now_ms - STALE_DUE_GRACE_MS {
                if let Some(w) = wanted.filter(|w| *w > now_ms) {
                    let _ = self.file_release_wake(&pk, w).await;
                }
                let _ = self.transaction(&self.releases, RELEASES_WAKE, |t| t.delete(key, Some(IfMatchCondition::Any))).await;
            }
        }
        due.into_iter().map(|id| RolloutId::parse(&id).map_err(corrupt)).collect()
    }

    async fn save_pipeline_wait(&self, wait: &PipelineWait) -> Result<(), StoreError> {
        let key = wait_key(&wait.rollout, &wait.task_instance_id);
        let mut e = Map::new();
        e.insert("PartitionKey".into(), json!(WAITS));
        e.insert("RowKey".into(), json!(key));
        put_chunks(&mut e, "W", &serde_json::to_string(wait).map_err(corrupt)?)?;
        let responses = self.transaction(&self.index, WAITS, |t| t.insert_or_replace(key, Value::Object(e))).await?;
        match failure(&responses) {
            None => Ok(()),
            Some(status) => Err(StoreError::Unavailable(format!("keeping the pipeline's wait failed with HTTP {status}"))),
        }
    }

    async fn pipeline_waits(&self, rollout: Option<&str>, limit: usize) -> Result<Vec<PipelineWait>, StoreError> {
        let filter = match rollout {
            None => format!("PartitionKey eq '{WAITS}'"),
            Some(id) => {
                let prefix = format!("{}|", escape_key(id));
                format!("PartitionKey eq '{WAITS}' and RowKey ge {} and RowKey lt {}", odata(&prefix), odata(&prefix_end(&prefix)))
            }
        };
        let rows = self.query(&self.index, filter, limit).await?;
        rows.iter().map(|r| get_chunks(r, "W").and_then(|t| serde_json::from_str(&t).map_err(corrupt))).collect()
    }

    async fn drop_pipeline_wait(&self, rollout: &str, task: &uuid::Uuid) -> Result<(), StoreError> {
        let key = wait_key(rollout, task);
        let responses = self.transaction(&self.index, WAITS, |t| t.delete(key, Some(IfMatchCondition::Any))).await?;
        match failure(&responses) {
            None | Some(StatusCode::NotFound) => Ok(()),
            Some(status) => Err(StoreError::Unavailable(format!("forgetting the pipeline's wait failed with HTTP {status}"))),
        }
    }

    async fn tallies(&self) -> Result<Tallies, StoreError> {
        if !self.done_rows_filed().await? {
            return Ok(Tallies::sum(&self.facts().await?));
        }
        let sealed = self.sealed().await?;
        // The sealed sums, then what is under way, what finished since the mark and what the mark
        // passed while it was still busy, each read from its state.
        let mut wanted = Self::ids_of(&self.index_rows("live|", "", 0).await?);
        let filter =
            format!("PartitionKey eq '{INDEX}' and RowKey gt {} and RowKey lt {}", odata(&sealed.after), odata(&prefix_end("done|")));
        wanted.extend(Self::ids_of(&self.query(&self.index, filter, 0).await?));
        wanted.extend(sealed.held.iter().map(|(id, _)| id.clone()));
        wanted.sort();
        wanted.dedup();
        let mut sums = sealed.sums;
        for r in self.load_many(wanted).await? {
            let counted = match done_key(&r) {
                None => !r.phase.is_terminal(),
                Some(key) => key > sealed.after || sealed.held.contains(&(r.id.to_string(), key)),
            };
            if counted {
                sums.add(&tally_of(&r), 1);
            }
        }
        Ok(sums)
    }

    async fn facts_for_period(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
        if !self.done_rows_filed().await? {
            let mut facts = self.facts().await?;
            facts.retain(|f| f.finished_at.map_or(true, |t| t >= from && t <= to));
            return Ok(facts);
        }
        let mut wanted = Self::ids_of(&self.index_rows("live|", "", 0).await?);
        let (first, last) =
            (format!("done|{:015}|", from.timestamp_millis().max(0)), format!("done|{:015}|", to.timestamp_millis().max(0) + 1));
        let filter = format!("PartitionKey eq '{INDEX}' and RowKey ge {} and RowKey lt {}", odata(&first), odata(&last));
        wanted.extend(Self::ids_of(&self.query(&self.index, filter, 0).await?));
        // Rows are hints: each state says whether it is under way or finished in the period.
        let mut facts: Vec<crate::domain::health::Facts> =
            self.load_many(wanted).await?.iter().map(crate::domain::health::Facts::of).collect();
        facts.retain(|f| f.finished_at.map_or(true, |t| t >= from && t <= to));
        facts.sort_by(|a, b| a.id.cmp(&b.id));
        facts.dedup_by(|a, b| a.id == b.id);
        Ok(facts)
    }

    async fn prune_finished(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Pruned, StoreError> {
        self.file_done_rows(limit * super::PRUNE_READ_FACTOR).await?;
        for _ in 0..SEAL_BATCHES {
            if !self.seal_finished().await? {
                break;
            }
        }
        let old_rollouts = format!("all|{:020}|", u64::MAX / 2 - cutoff.timestamp_millis().max(0) as u64);
        let filter =
            format!("PartitionKey eq '{INDEX}' and RowKey gt {} and RowKey lt {}", odata(&old_rollouts), odata(&prefix_end("all|")));
        let mut pruned = Pruned::default();
        for row in self.query(&self.index, filter, limit * super::PRUNE_READ_FACTOR).await? {
            if pruned.rollouts == limit {
                break;
            }
            let Some(key) = row.get("RowKey").and_then(Value::as_str) else { continue };
            let Some(id) = Self::id_from_key(key) else { continue };
            match self.load(&id).await {
                Ok(Some((r, _))) if r.phase.is_terminal() && r.sweep_at().is_none() => {
                    self.delete_rollout(&id, Some(&r), key).await?;
                    pruned.rollouts += 1;
                }
                // Its state went in a pass cut short: what is left of it goes now.
                Ok(None) => self.delete_rollout(&id, None, key).await?,
                Ok(Some(_)) => {}
                Err(StoreError::Corrupt(e)) => super::unreadable(&id, &e),
                Err(e) => return Err(e),
            }
        }
        let old_releases = format!("{}|", inverted_ms(cutoff));
        let filter = format!("PartitionKey eq '{RELEASES_NEWEST}' and RowKey gt {}", odata(&old_releases));
        for row in self.query(&self.releases, filter, limit * super::PRUNE_READ_FACTOR).await? {
            if pruned.releases == limit {
                break;
            }
            let Some(key) = row.get("RowKey").and_then(Value::as_str) else { continue };
            let Some(id) = Self::id_from_key(key) else { continue };
            match self.load_release(&id).await {
                Ok(Some((r, _))) if r.settled() => {
                    self.delete_release(&id, key).await?;
                    pruned.releases += 1;
                }
                Ok(None) => self.delete_release(&id, key).await?,
                Ok(Some(_)) => {}
                Err(StoreError::Corrupt(e)) => super::unreadable(&id, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(pruned)
    }
}

/// Partition of the index table holding the pipeline tasks waiting on rollouts.
const WAITS: &str = "waits";

/// A waiting task's row: `{rollout}|{task}`, so one rollout's tasks are one key range.
fn wait_key(rollout: &str, task: &uuid::Uuid) -> String {
    format!("{}|{task}", escape_key(rollout))
}

/// Partition of the releases table listing them newest first.
const RELEASES_NEWEST: &str = "newest";
/// Partition of the releases table filing each release the timer must
/// visit under when (`{ms}|{id}`), so the sweep reads only the due ones,
/// with `$top`.
const RELEASES_WAKE: &str = "wake";
/// Format 1's partition of the same (one row per release, its time in `At`,
/// which a filter could only find by reading it whole); the sweep refiles
/// what is left in it.
const RELEASES_DUE_FORMAT_1: &str = "due";

fn wake_ms(r: &Release) -> Option<i64> {
    r.wake_at.map(|t| t.timestamp_millis())
}

fn wake_key(at_ms: i64, pk: &str) -> String {
    format!("{:015}|{pk}", at_ms.max(0))
}

fn wake_row(key: &str) -> Value {
    json!({"PartitionKey": RELEASES_WAKE, "RowKey": key})
}

fn format_1_due_at(row: &Value) -> Option<i64> {
    match row.get("At")? {
        Value::String(s) => s.parse().ok(),
        other => other.as_i64(),
    }
}

fn inverted_ms(at: DateTime<Utc>) -> String {
    format!("{:020}", u64::MAX / 2 - at.timestamp_millis().max(0) as u64)
}

fn release_entity(r: &Release) -> Result<Value, StoreError> {
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(escape_key(&r.id)));
    e.insert("RowKey".into(), json!("state"));
    e.insert("Phase".into(), json!(r.phase.as_str()));
    put_chunks(&mut e, "S", &serde_json::to_string(r).map_err(corrupt)?)?;
    Ok(Value::Object(e))
}

fn release_history_entity(id: &str, h: &ReleaseEntry) -> Result<Value, StoreError> {
    history_row(id, h.seq, h)
}

impl TableStore {
    /// Replaces a state row if its ETag is current and adds history rows, in
    /// one entity-group transaction: a stale ETag is `Conflict`.
    async fn update_with_history(
        &self,
        table: &TableClient,
        id: &str,
        state: Value,
        etag: String,
        rows: Vec<Value>,
    ) -> Result<Vec<OpResult>, StoreError> {
        let condition = IfMatchCondition::Etag(azure_core::Etag::from(etag));
        let responses = self
            .transaction(table, &escape_key(id), |t| {
                let mut t = t.update("state", state, Some(condition))?;
                for row in rows {
                    t = t.insert(row)?;
                }
                Ok(t)
            })
            .await?;
        match failure(&responses) {
            None => Ok(responses),
            Some(StatusCode::PreconditionFailed) | Some(StatusCode::Conflict) => Err(StoreError::Conflict),
            Some(StatusCode::NotFound) => Err(StoreError::NotFound(id.to_string())),
            Some(other) => Err(StoreError::Unavailable(format!("save failed with HTTP {other}"))),
        }
    }

    /// A partition's history rows (`h{seq}`), oldest first.
    async fn history_rows<T: serde::de::DeserializeOwned>(
        &self,
        table: &TableClient,
        id: &str,
        seq: impl Fn(&T) -> u64,
    ) -> Result<Vec<T>, StoreError> {
        let pk = escape_key(id);
        let rows = self.query(table, format!("PartitionKey eq '{pk}' and RowKey ge 'h' and RowKey lt 'i'"), 0).await?;
        let mut out: Vec<T> = rows
            .iter()
            .map(|row| get_chunks(row, "H").and_then(|t| serde_json::from_str(&t).map_err(corrupt)))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|h| seq(h));
        Ok(out)
    }

    /// Files a release under the time it must next be visited.
    async fn file_release_wake(&self, pk: &str, at: i64) -> Result<(), StoreError> {
        let key = wake_key(at, pk);
        let row = wake_row(&key);
        let responses = self.transaction(&self.releases, RELEASES_WAKE, |t| t.insert_or_replace(key, row)).await?;
        match failure(&responses) {
            None => Ok(()),
            Some(status) => Err(StoreError::Unavailable(format!("filing the release's wake-up failed with HTTP {status}"))),
        }
    }

    /// Moves a batch of format 1's due rows to the wake partition (each is
    /// filed anew before it goes); once it is empty this is one small read.
    async fn refile_format_1_due_rows(&self) {
        if self.format_1_due_rows_gone.load(Ordering::Relaxed) {
            return;
        }
        let filter = format!("PartitionKey eq '{RELEASES_DUE_FORMAT_1}'");
        let Ok(rows) = self.query(&self.releases, filter, MAX_BATCH).await else { return };
        // Nothing writes there any more: once empty, it stays empty.
        self.format_1_due_rows_gone.store(rows.is_empty(), Ordering::Relaxed);
        for row in rows {
            let Some(pk) = row.get("RowKey").and_then(Value::as_str).map(str::to_string) else { continue };
            if let Some(at) = format_1_due_at(&row) {
                if self.file_release_wake(&pk, at).await.is_err() {
                    continue;
                }
            }
            let _ = self.transaction(&self.releases, RELEASES_DUE_FORMAT_1, |t| t.delete(pk, Some(IfMatchCondition::Any))).await;
        }
    }
}

impl TableStore {
    /// Deletes a finished rollout: its history, its index rows and waiting
    /// tasks, then its state, then the `all|` row (`all_row`) the pruning
    /// pass finds it by, so a pass cut short at any point is finished by
    /// the next. `state` is `None` when only leftovers remain.
    async fn delete_rollout(&self, id: &str, state: Option<&Rollout>, all_row: &str) -> Result<(), StoreError> {
        let pk = escape_key(id);
        let history = self.row_keys(&self.rollouts, format!("PartitionKey eq '{pk}' and RowKey ge 'h' and RowKey lt 'i'")).await?;
        self.delete_rows(&self.rollouts, &pk, history).await?;
        let waits = format!("{pk}|");
        let waits = self
            .row_keys(
                &self.index,
                format!("PartitionKey eq '{WAITS}' and RowKey ge {} and RowKey lt {}", odata(&waits), odata(&prefix_end(&waits))),
            )
            .await?;
        self.delete_rows(&self.index, WAITS, waits).await?;
        if let Some(r) = state {
            self.unseal(r).await?;
            let rows = [Some(phase_key(r.phase, r)), Some(live_key(r)), done_key(r)].into_iter().flatten().collect();
            self.delete_rows(&self.index, INDEX, rows).await?;
            self.delete_rows(&self.rollouts, &pk, vec!["state".into()]).await?;
        }
        self.delete_rows(&self.index, INDEX, vec![all_row.to_string()]).await
    }

    /// Whether every finished rollout has its `done|` row (a store written
    /// before them has been walked through once).
    async fn done_rows_filed(&self) -> Result<bool, StoreError> {
        if self.done_rows_filed.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let filed = self
            .get(&self.index, INDEX, DONE_ROWS_MARK)
            .await?
            .is_some_and(|(row, _)| row.get("Done").and_then(Value::as_bool) == Some(true));
        self.done_rows_filed.store(filed, Ordering::Relaxed);
        Ok(filed)
    }

    /// Files `done|` rows for up to `batch` rollouts past the walk's mark,
    /// oldest key first; the walk's end marks the store filed. Rollouts
    /// finishing meanwhile file their own.
    async fn file_done_rows(&self, batch: usize) -> Result<(), StoreError> {
        if self.done_rows_filed().await? {
            return Ok(());
        }
        let mark = self.get(&self.index, INDEX, DONE_ROWS_MARK).await?;
        let after = mark
            .as_ref()
            .and_then(|(row, _)| row.get("After").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "all|".into());
        let filter = format!("PartitionKey eq '{INDEX}' and RowKey gt {} and RowKey lt {}", odata(&after), odata(&prefix_end("all|")));
        let rows = self.query(&self.index, filter, batch).await?;
        let keys: Vec<String> = rows.iter().filter_map(|r| r.get("RowKey").and_then(Value::as_str).map(str::to_string)).collect();
        let finished: Vec<IndexOp> = self
            .load_many(keys.iter().filter_map(|k| Self::id_from_key(k)).collect())
            .await?
            .iter()
            .filter_map(|r| done_key(r).map(|key| IndexOp::Upsert(target_row(key, r))))
            .collect();
        // The mark moves on only once the batch's rows are in.
        for chunk in finished.chunks(MAX_BATCH) {
            let responses = self.transaction(&self.index, INDEX, |t| chunk.iter().try_fold(t, |t, op| op.clone_op().add(t))).await?;
            if let Some(status) = failure(&responses) {
                return Err(StoreError::Unavailable(format!("filing finished rollouts by time failed with HTTP {status}")));
            }
        }
        let done = keys.len() < batch;
        let next = json!({"After": keys.last().cloned().unwrap_or(after), "Done": done});
        self.apply_index(vec![IndexOp::Upsert(index_row(DONE_ROWS_MARK.to_string(), next))]).await;
        self.done_rows_filed.store(done, Ordering::Relaxed);
        Ok(())
    }

    /// The sums of the sealed rollouts and the last `done|` key they cover.
    async fn sealed(&self) -> Result<Sealed, StoreError> {
        Ok(match self.get(&self.index, INDEX, SEALED).await? {
            None => Sealed { after: "done|".into(), sums: Tallies::default(), held: Vec::new(), etag: None },
            Some((row, etag)) => Sealed {
                after: row.get("After").and_then(Value::as_str).unwrap_or("done|").to_string(),
                sums: serde_json::from_str(&get_chunks(&row, "T")?).map_err(corrupt)?,
                held: serde_json::from_str(&get_chunks(&row, "H")?).map_err(corrupt)?,
                etag: Some(etag),
            },
        })
    }

    /// Adds a batch of the rollouts that finished since the mark to the
    /// sealed sums, in `done|` order. One still busy (its backlog issue
    /// being opened, which may go on while a tracker is down) is held aside
    /// by id, counted by scrapes from its state, and sealed once it settles.
    /// Says whether a full batch went, so more may be waiting.
    async fn seal_finished(&self) -> Result<bool, StoreError> {
        if !self.done_rows_filed().await? {
            return Ok(false);
        }
        let sealed = self.sealed().await?;
        let until = format!("done|{:015}|", (Utc::now() - SEAL_AFTER).timestamp_millis().max(0));
        let filter = format!("PartitionKey eq '{INDEX}' and RowKey gt {} and RowKey lt {}", odata(&sealed.after), odata(&until));
        let keys: Vec<String> = self
            .query(&self.index, filter, MAX_BATCH)
            .await?
            .iter()
            .filter_map(|r| r.get("RowKey")?.as_str().map(str::to_string))
            .collect();
        let full = keys.len() == MAX_BATCH;
        let (mut sums, mut after, mut held) = (sealed.sums, sealed.after.clone(), Vec::new());
        let candidates: Vec<(String, String, bool)> = sealed
            .held
            .iter()
            .map(|(id, key)| (id.clone(), key.clone(), true))
            .chain(keys.into_iter().filter_map(|k| Some((Self::id_from_key(&k)?, k, false))))
            .collect();
        for (id, key, was_held) in candidates {
            match self.load(&id).await {
                Ok(Some((r, _))) if done_key(&r).as_deref() == Some(key.as_str()) => {
                    if r.sweep_at().is_some() {
                        held.push((id, key.clone()));
                    } else {
                        sums.add(&tally_of(&r), 1);
                    }
                }
                // Filed ahead of a finishing save not written yet (or one that failed and was decided again).
                Ok(Some((r, _))) if !r.phase.is_terminal() => held.push((id, key.clone())),
                // Finished at another time (its own row counts it) or gone: a hint that did not come true.
                Ok(_) => {}
                Err(StoreError::Corrupt(e)) => super::unreadable(&id, &e),
                Err(e) => return Err(e),
            }
            if !was_held {
                after = key;
            }
        }
        if after == sealed.after && held == sealed.held {
            return Ok(false);
        }
        let row = sealed_row(&after, &sums, &held)?;
        let responses = match sealed.etag {
            None => self.transaction(&self.index, INDEX, |t| t.insert(row)).await?,
            Some(etag) => self.transaction(&self.index, INDEX, |t| t.update(SEALED, row, Some(IfMatchCondition::Etag(etag)))).await?,
        };
        match failure(&responses) {
            None => Ok(full),
            // Another sealer (a second timer, a retention pass) moved the mark first: look again from it.
            Some(StatusCode::PreconditionFailed) | Some(StatusCode::Conflict) => Ok(true),
            Some(status) => Err(StoreError::Unavailable(format!("sealing finished rollouts failed with HTTP {status}"))),
        }
    }

    /// Takes a sealed rollout out of the sealed sums together with its
    /// `done|` row, in one transaction: a pass cut short after it finds the
    /// row gone and subtracts nothing twice.
    async fn unseal(&self, r: &Rollout) -> Result<(), StoreError> {
        let Some(key) = done_key(r) else { return Ok(()) };
        for _ in 0..8 {
            let sealed = self.sealed().await?;
            let Some(etag) = sealed.etag.filter(|_| key <= sealed.after) else { return Ok(()) };
            let (mut sums, mut held) = (sealed.sums, sealed.held);
            // One held aside is not in the sums: it only leaves the list.
            match held.iter().position(|(id, k)| *id == r.id.as_str() && *k == key) {
                Some(i) => drop(held.remove(i)),
                None => sums.add(&tally_of(r), -1),
            }
            let row = sealed_row(&sealed.after, &sums, &held)?;
            let condition = IfMatchCondition::Etag(etag);
            let responses = self
                .transaction(&self.index, INDEX, |t| {
                    t.delete(key.clone(), Some(IfMatchCondition::Any))?.update(SEALED, row, Some(condition))
                })
                .await?;
            match failure(&responses) {
                None | Some(StatusCode::NotFound) => return Ok(()),
                Some(StatusCode::PreconditionFailed) => continue,
                Some(status) => return Err(StoreError::Unavailable(format!("taking a rollout out of the sums failed with HTTP {status}"))),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Deletes a settled release: history, state, then its `newest` row.
    async fn delete_release(&self, id: &str, newest_row: &str) -> Result<(), StoreError> {
        let pk = escape_key(id);
        let mut rows = self.row_keys(&self.releases, format!("PartitionKey eq '{pk}' and RowKey ge 'h' and RowKey lt 'i'")).await?;
        rows.push("state".into());
        self.delete_rows(&self.releases, &pk, rows).await?;
        self.delete_rows(&self.releases, RELEASES_NEWEST, vec![newest_row.to_string()]).await
    }

    /// The row keys matching a filter, read as keys only.
    async fn row_keys(&self, table: &TableClient, filter: String) -> Result<Vec<String>, StoreError> {
        let mut stream = table.query().filter(Filter::new(filter)).select(Select::new("RowKey")).into_stream::<Value>();
        let mut keys = Vec::new();
        while let Some(page) = stream.next().await {
            keys.extend(page.map_err(unavailable)?.entities.iter().filter_map(|e| e.get("RowKey")?.as_str().map(str::to_string)));
        }
        Ok(keys)
    }

    /// Deletes rows of one partition, a transaction per hundred; rows already gone are fine.
    async fn delete_rows(&self, table: &TableClient, partition: &str, keys: Vec<String>) -> Result<(), StoreError> {
        for batch in keys.chunks(MAX_BATCH) {
            let responses = self
                .transaction(table, partition, |t| batch.iter().try_fold(t, |t, k| t.delete(k.clone(), Some(IfMatchCondition::Any))))
                .await?;
            match failure(&responses) {
                None => {}
                // A row already gone fails the whole batch: delete the rest one by one.
                Some(StatusCode::NotFound) => {
                    for key in batch {
                        let responses = self.transaction(table, partition, |t| t.delete(key.clone(), Some(IfMatchCondition::Any))).await?;
                        if let Some(status) = failure(&responses).filter(|s| *s != StatusCode::NotFound) {
                            return Err(StoreError::Unavailable(format!("deleting a finished row failed with HTTP {status}")));
                        }
                    }
                }
                Some(status) => return Err(StoreError::Unavailable(format!("deleting finished rows failed with HTTP {status}"))),
            }
        }
        Ok(())
    }
}

impl TableStore {
    /// Deletes alert records older than the retention, a hundred at a time,
    /// at most once a minute per process: the oldest rows sort last.
    async fn drop_old_alerts(&self, now: DateTime<Utc>) {
        let minute = now.timestamp() / 60;
        if self.last_alert_prune.swap(minute, Ordering::Relaxed) == minute {
            return;
        }
        let cutoff = (now - self.alert_retention).timestamp_millis().max(0) as u64;
        let first_old = format!("{:020}", u64::MAX / 2 - cutoff);
        let filter = format!("PartitionKey eq '{ALERTS}' and RowKey gt {}", odata(&first_old));
        let Ok(rows) = self.query(&self.index, filter, MAX_BATCH).await else { return };
        let keys: Vec<String> = rows.iter().filter_map(|r| r.get("RowKey").and_then(Value::as_str).map(str::to_string)).collect();
        if keys.is_empty() {
            return;
        }
        // Their delivery rows go with them (first: a record outliving its rows is harmless, not the reverse).
        let deliveries: Vec<IndexOp> = rows
            .iter()
            .filter_map(|r| get_chunks(r, "A").ok().and_then(|t| serde_json::from_str::<AlertRecord>(&t).ok()))
            .flat_map(|a| {
                let (id, condition) = (a.alert_id.clone(), a.condition.clone());
                a.matched.into_iter().map(move |rollout| IndexOp::Delete(delivery_key(&id, &condition, &rollout), IfMatchCondition::Any))
            })
            .collect();
        self.apply_index(deliveries).await;
        let delete = |t: TransactionBuilder| keys.iter().try_fold(t, |t, k| t.delete(k.clone(), Some(IfMatchCondition::Any)));
        let _ = self.transaction(&self.index, ALERTS, delete).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_reversibly_and_never_hold_forbidden_characters() {
        for raw in ["orders-api", "a/b\\c#d?e", "quote'd", "tab\there", "ümlaut", "~tilde", "x|y", ""] {
            let key = escape_key(raw);
            assert!(!key.contains(['/', '\\', '#', '?', '\'', '|']) && !key.chars().any(char::is_control), "{key}");
            assert_eq!(unescape_key(&key).as_deref(), Some(raw));
        }
        assert_eq!(escape_key("orders-api_1.2"), "orders-api_1.2", "plain names stay readable");
        assert_eq!(unescape_key("bad~Z"), None);
    }

    #[test]
    fn connection_strings() {
        let dev = TableConnection::parse("UseDevelopmentStorage=true").expect("dev");
        assert!(matches!(dev.location, CloudLocation::Emulator { ref address, port: 10002 } if address == "127.0.0.1"));
        let custom = TableConnection::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:10999/devstoreaccount1;",
        )
        .expect("custom");
        assert!(matches!(custom.location, CloudLocation::Custom { ref uri, .. } if uri == "http://127.0.0.1:10999/devstoreaccount1"));
        let public =
            TableConnection::parse("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
                .expect("public");
        assert!(matches!(public.location, CloudLocation::Custom { ref uri, .. } if uri == "https://acct.table.core.windows.net"));
        let secret = "c2VjcmV0LWtleS12YWx1ZQ";
        for (text, needle) in [
            (format!("AccountKey={secret}"), "AccountName is missing"),
            ("AccountName=acct".to_string(), "AccountKey (or SharedAccessSignature) is missing"),
            (format!("AccountName=acct;AccountKey{secret}"), "is not key=value"),
        ] {
            let err = TableConnection::parse(&text).expect_err("bad").to_string();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains(secret), "the key leaked: {err}");
        }
    }
}
