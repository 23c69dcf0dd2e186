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
//!   read-then-write race), `phase|{Phase}|{id}`, `sweep|{id}` (what the
//!   timer visits) and `all|{newest-first time}|{id}`. Index rows for one
//!   change go in one transaction; they are hints checked against the state
//!   rows when read, and repaired when found stale.
//! - partition `alerts` of the index table: received alerts.
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

use super::{needs_sweep, AlertRecord, Etag, ListFilter, Store, StoreError};
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
    index: TableClient,
    transactions: AtomicU64,
}

fn http_status(e: &azure_core::Error) -> Option<StatusCode> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(*status),
        _ => None,
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
    let mut e = Map::new();
    e.insert("PartitionKey".into(), json!(escape_key(id)));
    e.insert("RowKey".into(), json!(history_key(h.seq)));
    put_chunks(&mut e, "H", &serde_json::to_string(h).map_err(corrupt)?)?;
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

fn active_key(target: &str) -> String {
    format!("active|{}", escape_key(target))
}

fn phase_key(phase: Phase, id: &str) -> String {
    format!("phase|{}|{}", phase.as_str(), escape_key(id))
}

fn sweep_key(id: &str) -> String {
    format!("sweep|{}", escape_key(id))
}

impl TableStore {
    /// Connects and creates the tables if they do not exist. `prefix` (letters
    /// and digits) names them: `{prefix}rollouts`, `{prefix}index`.
    pub async fn connect(connection: &TableConnection, prefix: &str) -> Result<Self, StoreError> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric()) || !prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(StoreError::Unavailable(format!("table prefix '{prefix}' must be letters and digits, starting with a letter")));
        }
        let service = TableServiceClientBuilder::with_location(connection.location.clone(), connection.credentials.clone()).build();
        let store = TableStore {
            rollouts: service.table_client(format!("{prefix}rollouts")),
            index: service.table_client(format!("{prefix}index")),
            transactions: AtomicU64::new(0),
        };
        for table in [&store.rollouts, &store.index] {
            match table.create().await {
                Ok(_) => {}
                Err(e) if http_status(&e) == Some(StatusCode::Conflict) => {}
                Err(e) => return Err(StoreError::Unavailable(format!("creating table {}: {e}", table.table_name()))),
            }
        }
        Ok(store)
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

    async fn get(&self, table: &TableClient, partition: &str, row: &str) -> Result<Option<(Value, azure_core::Etag)>, StoreError> {
        match table.partition_key_client(partition.to_string()).entity_client(row.to_string()).get::<Value>().await {
            Ok(r) => Ok(Some((r.entity, r.etag))),
            Err(e) if http_status(&e) == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn query(&self, table: &TableClient, filter: String) -> Result<Vec<Value>, StoreError> {
        let mut stream = table.query().filter(Filter::new(filter)).into_stream::<Value>();
        let mut out = Vec::new();
        while let Some(page) = stream.next().await {
            out.extend(page.map_err(unavailable)?.entities);
        }
        Ok(out)
    }

    /// Index rows whose key starts with `prefix`, by row key.
    async fn index_rows(&self, prefix: &str) -> Result<Vec<Value>, StoreError> {
        // The first key after every key that starts with `prefix`: its last character, plus one.
        let mut chars: Vec<char> = prefix.chars().collect();
        if let Some(last) = chars.pop() {
            chars.push(char::from_u32(last as u32 + 1).unwrap_or(char::MAX));
        }
        let end: String = chars.into_iter().collect();
        self.query(&self.index, format!("PartitionKey eq '{INDEX}' and RowKey ge '{prefix}' and RowKey lt '{end}'")).await
    }

    fn id_from_key(key: &str) -> Option<String> {
        key.rsplit('|').next().and_then(unescape_key)
    }

    async fn load_many(&self, ids: Vec<String>) -> Result<Vec<Rollout>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some((r, _)) = self.load(&id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Drops a claim on `target` that points at a rollout that is finished or gone.
    async fn release_stale_claim(&self, target: &str) -> Result<bool, StoreError> {
        let key = active_key(target);
        let Some((claim, etag)) = self.get(&self.index, INDEX, &key).await? else { return Ok(true) };
        let holder = claim.get("Rollout").and_then(Value::as_str).unwrap_or("").to_string();
        let alive = match self.load(&holder).await? {
            Some((r, _)) => !r.phase.is_terminal(),
            None => false,
        };
        if alive {
            return Ok(false);
        }
        let responses = self.transaction(&self.index, INDEX, |t| t.delete(key.clone(), Some(IfMatchCondition::Etag(etag)))).await?;
        Ok(failure(&responses).is_none())
    }

    /// Keeps the index in step after a save: best effort, never fails the save.
    async fn update_index(&self, r: &Rollout, history: &[HistoryEntry]) {
        let old_phase = history.first().map(|h| h.from).unwrap_or(r.phase);
        let finished_now = r.phase.is_terminal() && !old_phase.is_terminal();
        // A sweep row left by a rollout that finished with its backlog issue still
        // being opened is dropped later, by the sweep that finds it done: no extra
        // transaction on the step that records the issue.
        let drop_sweep = !needs_sweep(r) && finished_now;
        if old_phase == r.phase && !drop_sweep {
            return;
        }
        let mut claim_etag = None;
        if finished_now {
            if let Ok(Some((claim, etag))) = self.get(&self.index, INDEX, &active_key(r.target())).await {
                if claim.get("Rollout").and_then(Value::as_str) == Some(r.id.as_str()) {
                    claim_etag = Some(etag);
                }
            }
        }
        let phase_changed = old_phase != r.phase;
        let (id, target, phase) = (r.id.clone(), r.target().to_string(), r.phase);
        let ops = |t: TransactionBuilder| -> azure_core::Result<TransactionBuilder> {
            let mut t = t;
            if phase_changed {
                t = t.delete(phase_key(old_phase, &id), Some(IfMatchCondition::Any))?;
                t = t.insert_or_replace(phase_key(phase, &id), index_row(phase_key(phase, &id), json!({})))?;
            }
            if drop_sweep {
                t = t.delete(sweep_key(&id), Some(IfMatchCondition::Any))?;
            }
            if let Some(etag) = claim_etag.clone() {
                t = t.delete(active_key(&target), Some(IfMatchCondition::Etag(etag)))?;
            }
            Ok(t)
        };
        match self.transaction(&self.index, INDEX, ops).await {
            Ok(responses) if failure(&responses).is_none() => {}
            // A row already gone (an earlier attempt got half way): do what is left one by one.
            _ => {
                if phase_changed {
                    let _ =
                        self.transaction(&self.index, INDEX, |t| t.delete(phase_key(old_phase, &r.id), Some(IfMatchCondition::Any))).await;
                    let _ = self
                        .transaction(&self.index, INDEX, |t| {
                            t.insert_or_replace(phase_key(phase, &r.id), index_row(phase_key(phase, &r.id), json!({})))
                        })
                        .await;
                }
                if drop_sweep {
                    let _ = self.transaction(&self.index, INDEX, |t| t.delete(sweep_key(&r.id), Some(IfMatchCondition::Any))).await;
                }
                if let Some(etag) = claim_etag {
                    let _ = self
                        .transaction(&self.index, INDEX, |t| t.delete(active_key(r.target()), Some(IfMatchCondition::Etag(etag))))
                        .await;
                }
            }
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
        let (id, target, phase) = (rollout.id.clone(), rollout.target().to_string(), rollout.phase);
        let all_key = format!("all|{}|{}", inverted_time(rollout), escape_key(&id));
        for attempt in 0..2 {
            let claim = |t: TransactionBuilder| -> azure_core::Result<TransactionBuilder> {
                t.insert(index_row(active_key(&target), json!({"Rollout": id})))?
                    .insert_or_replace(phase_key(phase, &id), index_row(phase_key(phase, &id), json!({})))?
                    .insert_or_replace(sweep_key(&id), index_row(sweep_key(&id), json!({})))?
                    .insert_or_replace(all_key.clone(), index_row(all_key.clone(), json!({"Target": target})))
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
        let etag = responses.first().and_then(|r| r.etag.clone()).map(Etag);
        match etag {
            Some(e) => Ok(e),
            None => self.load(&id).await?.map(|(_, e)| e).ok_or_else(|| StoreError::Unavailable("created rollout not readable".into())),
        }
    }

    async fn load(&self, id: &str) -> Result<Option<(Rollout, Etag)>, StoreError> {
        match self.get(&self.rollouts, &escape_key(id), "state").await? {
            None => Ok(None),
            Some((entity, etag)) => Ok(Some((parse_state(&entity)?, Etag(etag.to_string())))),
        }
    }

    async fn save(&self, rollout: &Rollout, etag: &Etag, history: &[HistoryEntry]) -> Result<Etag, StoreError> {
        if history.len() + 1 > MAX_BATCH {
            return Err(StoreError::Corrupt(format!("{} history rows cannot be written in one transaction", history.len())));
        }
        let state = state_entity(rollout)?;
        let rows = history.iter().map(|h| history_entity(&rollout.id, h)).collect::<Result<Vec<_>, _>>()?;
        let condition = IfMatchCondition::Etag(azure_core::Etag::from(etag.0.clone()));
        let responses = self
            .transaction(&self.rollouts, &escape_key(&rollout.id), |t| {
                let mut t = t.update("state", state, Some(condition))?;
                for row in rows {
                    t = t.insert(row)?;
                }
                Ok(t)
            })
            .await?;
        match failure(&responses) {
            None => {}
            Some(StatusCode::PreconditionFailed) | Some(StatusCode::Conflict) => return Err(StoreError::Conflict),
            Some(StatusCode::NotFound) => return Err(StoreError::NotFound(rollout.id.to_string())),
            Some(other) => return Err(StoreError::Unavailable(format!("save failed with HTTP {other}"))),
        }
        let new_etag = responses.first().and_then(|r| r.etag.clone()).map(Etag);
        self.update_index(rollout, history).await;
        match new_etag {
            Some(e) => Ok(e),
            None => self.load(&rollout.id).await?.map(|(_, e)| e).ok_or_else(|| StoreError::NotFound(rollout.id.to_string())),
        }
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let pk = escape_key(id);
        let rows = self.query(&self.rollouts, format!("PartitionKey eq '{pk}' and RowKey ge 'h' and RowKey lt 'i'")).await?;
        let mut out: Vec<HistoryEntry> = rows
            .iter()
            .map(|row| get_chunks(row, "H").and_then(|t| serde_json::from_str(&t).map_err(corrupt)))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|h| h.seq);
        Ok(out)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Rollout>, StoreError> {
        let prefix = match (filter.phase, filter.active_only || filter.needs_sweep) {
            (Some(p), _) => format!("phase|{}|", p.as_str()),
            (None, true) => "sweep|".to_string(),
            (None, false) => "all|".to_string(),
        };
        let mut rows = self.index_rows(&prefix).await?;
        if let Some(t) = &filter.target {
            rows.retain(|r| prefix != "all|" || r.get("Target").and_then(Value::as_str) == Some(t.as_str()));
        }
        rows.sort_by(|a, b| a.get("RowKey").and_then(Value::as_str).cmp(&b.get("RowKey").and_then(Value::as_str)));
        let ids: Vec<String> = rows.iter().filter_map(|r| r.get("RowKey").and_then(Value::as_str).and_then(Self::id_from_key)).collect();
        let loaded = self.load_many(ids).await?;
        if prefix == "sweep|" {
            for done in loaded.iter().filter(|r| !needs_sweep(r)) {
                let key = sweep_key(&done.id);
                let _ = self.transaction(&self.index, INDEX, |t| t.delete(key, Some(IfMatchCondition::Any))).await;
            }
        }
        let mut out: Vec<Rollout> = loaded
            .into_iter()
            .filter(|r| filter.phase.map(|p| r.phase == p).unwrap_or(true))
            .filter(|r| !filter.active_only || !r.phase.is_terminal())
            .filter(|r| !filter.needs_sweep || needs_sweep(r))
            .filter(|r| filter.target.as_ref().map(|t| r.target() == t).unwrap_or(true))
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        Ok(out)
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
        let responses = self.transaction(&self.index, ALERTS, |t| t.insert(Value::Object(e))).await?;
        match failure(&responses) {
            None => Ok(()),
            Some(s) => Err(StoreError::Unavailable(format!("recording the alert failed with HTTP {s}"))),
        }
    }

    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError> {
        let mut rows = self.query(&self.index, format!("PartitionKey eq '{ALERTS}'")).await?;
        rows.sort_by(|a, b| a.get("RowKey").and_then(Value::as_str).cmp(&b.get("RowKey").and_then(Value::as_str)));
        rows.truncate(limit);
        rows.iter().map(|r| get_chunks(r, "A").and_then(|t| serde_json::from_str(&t).map_err(corrupt))).collect()
    }

    fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
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
