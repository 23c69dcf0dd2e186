//! Retention: each tick deletes a bounded batch of finished rollouts and
//! settled releases older than `SLUICE_RETENTION_DAYS`, with their history,
//! so a deployment that runs for years holds years, not everything.

use super::Engine;
use crate::ports::store::Pruned;

/// Rollouts, and releases, deleted per tick at most: at a tick every five
/// minutes that is 14 400 a day, more than any team starts, while one tick
/// never turns into a long delete.
pub const PRUNE_BATCH: usize = 50;

impl Engine {
    /// Keeps finished rollouts and releases for `retention` from their creation.
    pub fn with_retention(mut self, retention: chrono::TimeDelta) -> Self {
        self.retention = retention;
        self
    }

    /// One retention pass. A failure is logged and left to the next tick:
    /// deleting old records never holds up the rollouts that are due.
    pub async fn prune_finished(&self) -> Pruned {
        let cutoff = self.clock.now() - self.retention;
        match self.store.prune_finished(cutoff, PRUNE_BATCH).await {
            Ok(pruned) => {
                if pruned != Pruned::default() {
                    tracing::info!(rollouts = pruned.rollouts, releases = pruned.releases, %cutoff, "deleted finished records past their retention");
                }
                pruned
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; the next tick tries again");
                Pruned::default()
            }
        }
    }
}
