//! The observed split: the canary's share of requests, as a canary-vs-stable
//! measurement counted them, beside the weight the router confirmed. It is
//! always recorded (status shows it); with `policy.observedSplit`, a
//! difference beyond the tolerance for `checks` measurements in a row is
//! said in the history and acted on once (note, pause or roll back).

use super::Txn;
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

impl Txn {
    pub(super) fn observe_split(&mut self, outcome: &MeasureOutcome) {
        let Some((canary, stable)) = side_counts(outcome) else { return };
        let t = &self.r.traffic;
        let steady =
            matches!(self.r.phase, Phase::Progressing | Phase::AwaitingApproval | Phase::Paused) && t.pending.is_none() && !t.promoted;
        let (Some(requested), true) = (t.confirmed, steady) else { return };
        let policy = self.r.spec.policy.observed_split.clone();
        let min = policy.as_ref().map(|p| p.min_requests).unwrap_or(DEFAULT_MIN_REQUESTS).max(1);
        let requests = canary + stable;
        if requests < min {
            return;
        }
        let share = 100.0 * canary as f64 / requests as f64;
        let tolerance = policy.as_ref().map(|p| p.tolerance).unwrap_or(f64::INFINITY);
        let off = (share - f64::from(requested.percent())).abs() > tolerance;
        let before = t.observed.as_ref().filter(|o| o.requested == requested);
        let streak = if off { before.map(|o| o.off).unwrap_or(0) + 1 } else { 0 };
        let was_acted = before.map(|o| o.acted).unwrap_or(false);
        self.r.traffic.observed = Some(ObservedShare { share, requested, requests, at: self.now, off: streak, acted: was_acted && off });
        let Some(policy) = policy else { return };
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
