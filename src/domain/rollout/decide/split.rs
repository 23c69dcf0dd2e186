//! The observed split: the canary's share of requests, as a canary-vs-stable
//! measurement counted them, beside the weight the router confirmed. It is
//! always recorded (status shows it); with `policy.observedSplit`, a
//! difference beyond the tolerance for `checks` measurements in a row is
//! said in the history and acted on once (note, pause or roll back).

use super::Txn;
use crate::domain::ids::Weight;
use crate::domain::rollout::event::MeasureOutcome;
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::{ObservedShare, PauseReason, Phase};
use crate::domain::spec::{ObservedSplit, OnSplitMismatch};

/// Fewest requests an observation needs without a policy saying otherwise.
const DEFAULT_MIN_REQUESTS: u64 = 100;

/// Requests counted on each side (canary, stable), where the outcome has them.
pub(crate) fn side_counts(outcome: &MeasureOutcome) -> Option<(u64, u64)> {
    match outcome {
        MeasureOutcome::Proportions { canary, stable } => Some((canary.total, stable.total)),
        MeasureOutcome::Histograms { canary, stable } => Some((canary.total(), stable.total())),
        _ => None,
    }
}

/// What one measurement's counts said of the split.
pub(super) struct SplitSeen {
    share: f64,
    requests: u64,
    requested: Weight,
    off: bool,
    streak: u32,
    was_acted: bool,
}

impl Txn {
    /// Records the split a measurement counted and acts on it, as one step.
    pub(super) fn observe_split(&mut self, outcome: &MeasureOutcome) {
        let seen = self.record_split(outcome);
        self.act_on_split(seen);
    }

    /// Traffic held still at a confirmed weight: a split counted now means something.
    fn split_is_steady(&self) -> bool {
        let t = &self.r.traffic;
        matches!(self.r.phase, Phase::Progressing | Phase::AwaitingApproval | Phase::Paused) && t.pending.is_none() && !t.promoted
    }

    /// Records the canary's share of the requests the measurement counted, when the
    /// traffic was steady. Called before the measurement's verdict is acted on, so the
    /// split a failing canary saw is kept with its rollback.
    pub(super) fn record_split(&mut self, outcome: &MeasureOutcome) -> Option<SplitSeen> {
        let (canary, stable) = side_counts(outcome)?;
        let requested = self.r.traffic.confirmed.filter(|_| self.split_is_steady())?;
        let policy = self.r.spec.policy.observed_split.as_ref();
        let min = policy.map(|p| p.min_requests).unwrap_or(DEFAULT_MIN_REQUESTS).max(1);
        let requests = canary + stable;
        if requests < min {
            return None;
        }
        let share = 100.0 * canary as f64 / requests as f64;
        let tolerance = policy.map(|p| p.tolerance).unwrap_or(f64::INFINITY);
        let off = (share - f64::from(requested.percent())).abs() > tolerance;
        let before = self.r.traffic.observed.as_ref().filter(|o| o.requested == requested);
        let streak = if off { before.map(|o| o.off).unwrap_or(0) + 1 } else { 0 };
        let was_acted = before.map(|o| o.acted).unwrap_or(false);
        self.r.traffic.observed = Some(ObservedShare { share, requested, requests, at: self.now, off: streak, acted: was_acted && off });
        Some(SplitSeen { share, requests, requested, off, streak, was_acted })
    }

    /// Acts on a recorded split under `policy.observedSplit`, unless the rollout has
    /// meanwhile left the steady phases (the same measurement failed it, say).
    pub(super) fn act_on_split(&mut self, seen: Option<SplitSeen>) {
        let (Some(seen), true) = (seen, self.split_is_steady()) else { return };
        let Some(policy) = self.r.spec.policy.observed_split.clone() else { return };
        let SplitSeen { share, requests, requested, off, streak, was_acted } = seen;
        if off && streak >= policy.checks && !was_acted {
            self.act_on_mismatch(&policy, share, streak);
        } else if !off && was_acted {
            self.note(format!(
                "observed split back within tolerance: {share:.1}% of {requests} requests on the canary, {requested}% asked"
            ));
        }
    }

    fn act_on_mismatch(&mut self, policy: &ObservedSplit, share: f64, checks: u32) {
        let Some(observed) = self.r.traffic.observed.as_mut() else { return };
        observed.acted = true;
        let (requested, requests) = (observed.requested, observed.requests);
        self.note(format!(
            "observed split: {share:.1}% of {requests} requests reached the canary where {requested}% was asked, \
             {checks} measurements in a row beyond {} points: sticky sessions, affinity cookies or cached DNS keep users on one side",
            policy.tolerance
        ));
        match policy.on_mismatch {
            OnSplitMismatch::Note => {}
            OnSplitMismatch::Pause if self.r.phase != Phase::Paused => {
                self.pause_for(PauseReason::SplitMismatch { observed: share, requested });
            }
            OnSplitMismatch::Pause => {}
            OnSplitMismatch::Rollback => {
                let evidence = Evidence::SplitMismatch { requested, observed: share, requests, checks, tolerance: policy.tolerance };
                self.start_rollback(evidence, false);
            }
        }
    }
}
