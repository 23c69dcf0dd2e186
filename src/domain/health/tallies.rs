//! What `/api/metrics` shows, as sums a store can keep up to date: each
//! rollout contributes whole numbers to named series ([`Tallies::of`]), and
//! the exposition is drawn from their sum. A store adds a rollout's new
//! contribution and takes back its old one in the same write as its state,
//! so a scrape reads one small record instead of every state, and every
//! instance answers the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{outcome, Facts, REVERT_BUCKETS, STEP_BUCKETS};

/// One series of the exposition (a histogram's bucket, sum or count is one
/// each). Fields are the labels of the same name; `le` indexes the bounds.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "s")]
pub enum Series {
    /// Rollouts under way, by phase.
    Active { service: String, phase: String },
    /// Finished rollouts, by outcome.
    Finished { service: String, outcome: String },
    /// Rollbacks, by cause.
    Rollbacks { service: String, cause: String },
    /// Time to revert: observations at most `REVERT_BUCKETS[le]` seconds.
    RevertBucket { le: usize },
    /// Time to revert: milliseconds in all.
    RevertSumMs,
    /// Time to revert: observations.
    RevertCount,
    /// Time to decision: observations at most `STEP_BUCKETS[le]` seconds.
    StepBucket { kind: String, passed: bool, le: usize },
    /// Time to decision: milliseconds in all.
    StepSumMs { kind: String, passed: bool },
    /// Time to decision: observations.
    StepCount { kind: String, passed: bool },
    /// Requests served by canaries that were rolled back.
    FailedCanaryRequests { service: String },
    /// Backlog calls that failed.
    BacklogFailures { service: String },
    /// Notifications that failed.
    NotifyFailures { service: String },
    /// Milliseconds waited for approvals.
    ApprovalWaitMs { service: String },
}

/// Sums by series; a series at zero is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(Series, i64)>", into = "Vec<(Series, i64)>")]
pub struct Tallies(pub BTreeMap<Series, i64>);

impl From<Vec<(Series, i64)>> for Tallies {
    fn from(pairs: Vec<(Series, i64)>) -> Self {
        let mut t = Tallies::default();
        for (series, n) in pairs {
            t.bump(series, n);
        }
        t
    }
}

impl From<Tallies> for Vec<(Series, i64)> {
    fn from(t: Tallies) -> Self {
        t.0.into_iter().collect()
    }
}

fn whole(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Tallies {
    /// What one rollout contributes.
    pub fn of(f: &Facts) -> Tallies {
        let mut t = Tallies::default();
        let service = f.service.clone();
        match f.finished_at {
            None => t.bump(Series::Active { service: service.clone(), phase: f.phase.as_str().into() }, 1),
            Some(_) => t.bump(Series::Finished { service: service.clone(), outcome: outcome(f.phase).into() }, 1),
        }
        if let (Some(cause), true) = (f.cause, f.failed()) {
            t.bump(Series::Rollbacks { service: service.clone(), cause: cause.into() }, 1);
        }
        if let Some(ms) = f.revert_ms {
            for (le, bound) in REVERT_BUCKETS.iter().enumerate() {
                if ms as f64 / 1000.0 <= *bound {
                    t.bump(Series::RevertBucket { le }, 1);
                }
            }
            t.bump(Series::RevertSumMs, whole(ms));
            t.bump(Series::RevertCount, 1);
        }
        for st in &f.steps {
            let (kind, passed) = (st.kind.clone(), st.passed);
            for (le, bound) in STEP_BUCKETS.iter().enumerate() {
                if st.ms as f64 / 1000.0 <= *bound {
                    t.bump(Series::StepBucket { kind: kind.clone(), passed, le }, 1);
                }
            }
            t.bump(Series::StepSumMs { kind: kind.clone(), passed }, whole(st.ms));
            t.bump(Series::StepCount { kind, passed }, 1);
        }
        if f.failed() {
            t.bump(Series::FailedCanaryRequests { service: service.clone() }, whole(f.exposure));
        }
        t.bump(Series::BacklogFailures { service: service.clone() }, i64::from(f.backlog_failures));
        t.bump(Series::NotifyFailures { service: service.clone() }, i64::from(f.notify_failures));
        t.bump(Series::ApprovalWaitMs { service }, whole(f.approval_wait_ms));
        t
    }

    /// The sum over many rollouts.
    pub fn sum<'a>(facts: impl IntoIterator<Item = &'a Facts>) -> Tallies {
        let mut t = Tallies::default();
        for f in facts {
            t.add(&Tallies::of(f), 1);
        }
        t
    }

    /// Adds `other` once (`sign` 1) or takes it back (`sign` -1).
    pub fn add(&mut self, other: &Tallies, sign: i64) {
        for (series, n) in &other.0 {
            self.bump(series.clone(), n.saturating_mul(sign));
        }
    }

    /// What turns `from` into `to`: add it to a sum holding `from`.
    pub fn change(from: &Tallies, to: &Tallies) -> Tallies {
        let mut d = to.clone();
        d.add(from, -1);
        d
    }

    fn bump(&mut self, series: Series, n: i64) {
        if n == 0 {
            return;
        }
        let v = self.0.entry(series.clone()).or_insert(0);
        *v = v.saturating_add(n);
        if *v == 0 {
            self.0.remove(&series);
        }
    }

    /// One series' sum (0 when absent).
    pub fn get(&self, series: &Series) -> i64 {
        self.0.get(series).copied().unwrap_or(0)
    }
}
