//! The store port: where rollout state and its history live. Every adapter
//! gives the same guarantees — an ETag per rollout, a conditional save that
//! fails on a stale ETag, the state and its new history rows written
//! atomically, and one active rollout per target enforced by the store itself.
//!
//! Cost grows with the work asked for, not with the rollouts held: each
//! adapter indexes rollouts by when the timer must next look at them
//! ([`Rollout::sweep_at`]), active rollouts by the keys alerts name them by
//! ([`Rollout::alert_keys`]), and lists newest first with the limit and
//! filters in the query. Alert records are kept for a bounded time.

pub mod sqlite;
pub mod table;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::RolloutId;
use crate::domain::pipeline_wait::PipelineWait;
use crate::domain::release::{Release, ReleaseEntry};
use crate::domain::rollout::{HistoryEntry, Phase, Rollout};

/// How long alert records are kept unless `SLUICE_ALERT_RETENTION_DAYS` says otherwise.
pub const DEFAULT_ALERT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// Alert records kept at most, whatever their age (the embedded store).
pub const MAX_ALERT_RECORDS: i64 = 10_000;
/// Rollouts handed to the timer per call of [`Store::due`].
pub const DUE_BATCH: usize = 500;
/// How long finished rollouts and releases are kept unless
/// `SLUICE_RETENTION_DAYS` says otherwise: over a year, so a year of
/// release-health figures always survives.
pub const DEFAULT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(400);

/// A pruning pass reads at most this many times its limit of old records,
/// so old ones it must keep (active, still busy) hold up the rest only if
/// they outnumber it that much.
pub const PRUNE_READ_FACTOR: usize = 4;

/// What one pass of [`Store::prune_finished`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    /// Finished rollouts deleted, with their history and index rows.
    pub rollouts: usize,
    /// Finished releases deleted, with their history.
    pub releases: usize,
}

/// Reports a stored state Sluice cannot read — corrupt, or written by a
/// newer Sluice — by id. Lists, facts and alert look-ups leave it out, so
/// it hides no other rollout; it stays as stored, and since loading it
/// fails, nothing overwrites it.
pub(crate) fn unreadable(id: &str, error: &dyn std::fmt::Display) {
    tracing::error!(rollout = %crate::domain::ids::shown(id), %error, "stored state unreadable: kept as it is, left out of lists");
}

/// Opaque version tag of a stored rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Etag(pub String);

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rollout changed since it was loaded; reload and decide again.
    #[error("the rollout changed since it was read (stale ETag)")]
    Conflict,
    /// The target already has an active rollout.
    #[error("target '{target}' already has an active rollout: {active}")]
    TargetBusy {
        /// The target.
        target: String,
        /// The active rollout's id.
        active: String,
    },
    /// A rollout with this id already exists.
    #[error("a rollout with id '{0}' already exists")]
    AlreadyExists(String),
    /// No such rollout.
    #[error("no rollout with id '{0}'")]
    NotFound(String),
    /// The store could not be reached or failed; worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// Which rollouts to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only rollouts that are not finished.
    pub active_only: bool,
    /// Only this phase.
    pub phase: Option<Phase>,
    /// Only this target.
    pub target: Option<String>,
    /// At most this many, newest first (0: no limit).
    pub limit: usize,
}

/// An alert as received, kept for the record whether or not it matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Azure Monitor, Alertmanager, …
    pub source: String,
    /// The alert's id.
    pub alert_id: String,
    /// Rule name.
    pub rule: String,
    /// Fired or Resolved.
    pub condition: String,
    /// Rollouts it was delivered to (empty: none active for its target).
    pub matched: Vec<String>,
    /// One line.
    pub summary: String,
}

/// Persistence of rollouts and their history.
#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a new rollout with its first history entry. Fails with
    /// `TargetBusy` if its target has an active rollout, `AlreadyExists` if the id is taken.
    async fn create(&self, rollout: &Rollout, first: &HistoryEntry) -> Result<Etag, StoreError>;
    /// Loads a rollout and its ETag.
    async fn load(&self, id: &str) -> Result<Option<(Rollout, Etag)>, StoreError>;
    /// Replaces the state and appends history atomically, if `etag` is current.
    /// A terminal phase releases the target for its next rollout.
    async fn save(&self, rollout: &Rollout, etag: &Etag, history: &[HistoryEntry]) -> Result<Etag, StoreError>;
    /// The whole history, oldest first.
    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Rollouts matching a filter, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Rollout>, StoreError>;
    /// Every stored rollout's health facts (metrics, the release report).
    /// Stores that can read one state at a time override this, so an
    /// aggregate over all rollouts never holds all their states at once.
    async fn facts(&self) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
        Ok(self.list(&ListFilter::default()).await?.iter().map(crate::domain::health::Facts::of).collect())
    }
    /// What the report of a period needs: the facts of every rollout under
    /// way and of those that finished in `[from, to]`. Stores with an index
    /// by finishing time override this, so a report reads its period only.
    async fn facts_for_period(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<crate::domain::health::Facts>, StoreError> {
        let mut facts = self.facts().await?;
        facts.retain(|f| f.finished_at.map_or(true, |t| t >= from && t <= to));
        Ok(facts)
    }
    /// What every stored rollout adds up to, as `/api/metrics` draws it.
    /// Stores that keep the sums up to date as they write states override
    /// this, so a scrape reads one small record instead of every state.
    async fn tallies(&self) -> Result<crate::domain::health::Tallies, StoreError> {
        Ok(crate::domain::health::Tallies::sum(&self.facts().await?))
    }
    /// The rollouts whose [`Rollout::sweep_at`] has come by `now`, earliest
    /// first, at most `limit`. Only the timer calls it: an adapter whose
    /// index can run ahead of its state repairs it here.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError>;
    /// The active rollouts filed under any of these alert keys.
    async fn active_by_alert_keys(&self, keys: &[String]) -> Result<Vec<Rollout>, StoreError>;
    /// The active rollout of a target, if any.
    async fn active_for_target(&self, target: &str) -> Result<Option<String>, StoreError>;
    /// Keeps an alert for the record, dropping records past their retention.
    async fn record_alert(&self, alert: &AlertRecord) -> Result<(), StoreError>;
    /// Recent alerts, newest first.
    async fn alerts(&self, limit: usize) -> Result<Vec<AlertRecord>, StoreError>;
    /// Whether the webhook recorded alert `alert_id` in `condition`
    /// (`Fired`, `Resolved`) as delivered to `rollout`: what makes an alert
    /// message on the queue believable, since anyone who may send to the
    /// queue could write one.
    async fn alert_delivered(&self, alert_id: &str, condition: &str, rollout: &str) -> Result<bool, StoreError>;
    /// Table transactions (or equivalent writes) so far, for the per-step cost figures.
    fn transactions(&self) -> u64;
    /// Stores a new release with its first history entry (`AlreadyExists` if the id is taken).
    async fn create_release(&self, release: &Release, first: &ReleaseEntry) -> Result<Etag, StoreError>;
    /// Loads a release and its ETag.
    async fn load_release(&self, id: &str) -> Result<Option<(Release, Etag)>, StoreError>;
    /// Replaces a release's state and appends its history atomically, if `etag` is current.
    async fn save_release(&self, release: &Release, etag: &Etag, history: &[ReleaseEntry]) -> Result<Etag, StoreError>;
    /// A release's whole history, oldest first.
    async fn release_history(&self, id: &str) -> Result<Vec<ReleaseEntry>, StoreError>;
    /// Releases, newest first, at most `limit` (0: all).
    async fn list_releases(&self, limit: usize) -> Result<Vec<Release>, StoreError>;
    /// The releases whose [`Release::wake_at`] has come by `now`, at most `limit`.
    async fn due_releases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<RolloutId>, StoreError>;
    /// Keeps a pipeline task waiting on a rollout; the same task again replaces it.
    async fn save_pipeline_wait(&self, wait: &PipelineWait) -> Result<(), StoreError>;
    /// The tasks waiting on one rollout, or on any (`None`), at most `limit` (0: all).
    async fn pipeline_waits(&self, rollout: Option<&str>, limit: usize) -> Result<Vec<PipelineWait>, StoreError>;
    /// Forgets a task once it is answered (or can no longer be); absent is fine.
    async fn drop_pipeline_wait(&self, rollout: &str, task: &uuid::Uuid) -> Result<(), StoreError>;
    /// Deletes finished rollouts and settled releases created before
    /// `cutoff`, with their history, index rows and waiting tasks: at most
    /// `limit` of each per call (reading at most [`PRUNE_READ_FACTOR`] times
    /// as many candidates), never an active one and never a state it cannot
    /// read. A pass cut short leaves nothing
    /// visible half-deleted (the state goes after its history), and the
    /// next pass finishes it.
    async fn prune_finished(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Pruned, StoreError>;
}
