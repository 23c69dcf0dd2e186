//! Pause, resume and rollback: leaving the plan, and getting all traffic back on stable.

use super::Txn;
use crate::domain::ids::Weight;
use crate::domain::rollout::analysis::{RunKind, RunStatus};
use crate::domain::rollout::backlog::LATER_FAILURES_KEPT;
use crate::domain::rollout::command::{Command, CommandKind};
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::plan::AnalysisPlan;
use crate::domain::rollout::{BacklogState, Failure, LaterFailure, PauseInfo, PauseReason, PendingTraffic, Phase};

impl Txn {
    pub(super) fn pause_for(&mut self, reason: PauseReason) {
        self.r.phase = Phase::Paused;
        self.r.pause = Some(PauseInfo { reason, since: self.now });
        self.cancel_runs(|r| r.status == RunStatus::Running);
        self.cancel_wait();
        self.r.approvals.clear();
    }

    /// Leaves a pause: a pause step moves on; an alert or background pause
    /// re-runs the current stage; an inconclusive stage analysis is accepted
    /// (`accept`) or re-run.
    pub(super) fn resume(&mut self, accept: bool) {
        let reason = self.r.pause.as_ref().map(|p| p.reason.clone());
        self.r.pause = None;
        match reason {
            Some(PauseReason::Step) | None => self.advance(),
            Some(PauseReason::Inconclusive { stage_analysis: true, .. }) if accept => {
                self.start_background();
                self.advance();
            }
            Some(_) => {
                self.start_background();
                let stage = self.r.stage;
                self.enter_stage(stage);
            }
        }
    }

    pub(super) fn start_rollback(&mut self, evidence: Evidence, aborted: bool) {
        // RevertTraffic comes first: nothing queued before it in this decision survives.
        self.commands.retain(|c| matches!(c, Command::Notify { .. }));
        self.cancel_runs(|_| true);
        self.cancel_wait();
        self.r.pause = None;
        self.r.approvals.clear();
        let from_phase = self.r.phase;
        let exposed = self.r.traffic.confirmed.unwrap_or(Weight::ZERO).max(self.r.traffic.weight);
        self.r.phase = Phase::RollingBack;
        self.note(format!("rolling back: {}", evidence.headline()));
        let id = self.next_id();
        self.r.traffic.weight = Weight::ZERO;
        let since = self.first_since(CommandKind::RevertTraffic);
        self.r.traffic.pending = Some(PendingTraffic::first(CommandKind::RevertTraffic, id, self.now, since));
        self.commands.insert(0, Command::RevertTraffic { undo_promotion: self.r.traffic.promoted, id, since });
        self.r.failure = Some(Failure {
            at: self.now,
            stage: self.r.stage,
            phase: from_phase,
            by: self.by.clone(),
            aborted,
            weight: exposed,
            evidence: evidence.clone(),
            reverted_at: None,
            verified: None,
            verification: None,
            later: Vec::new(),
        });
        if !aborted && self.r.plan.backlog && matches!(self.r.backlog, BacklogState::None) {
            self.open_backlog(1, evidence.clone());
        }
        self.evidence = Some(evidence);
    }

    /// A failure after the rollback began; the backlog issue hears about it.
    pub(super) fn later_failure(&mut self, evidence: Evidence) {
        let now = self.now;
        // The first few are kept (the backlog issue counts them); the history has every one.
        if let Some(f) = self.r.failure.as_mut().filter(|f| f.later.len() < LATER_FAILURES_KEPT) {
            f.later.push(LaterFailure { at: now, evidence });
        }
    }

    /// Traffic is confirmed back on stable: done, or first check from
    /// metrics that canary traffic really stopped, when the policy asks.
    pub(super) fn traffic_reverted(&mut self) {
        if let Some(f) = self.r.failure.as_mut() {
            f.reverted_at = Some(self.now);
        }
        match self.r.plan.rollback_check.clone() {
            Some(check) => {
                self.note(format!(
                    "the router sends no traffic to {}; checking that canary traffic stops ({})",
                    self.r.spec.target.canary.version,
                    check.rule()
                ));
                let plan = AnalysisPlan { label: "rollback-check".into(), metrics: vec![check] };
                self.start_run(RunKind::RollbackCheck, &plan);
            }
            None => self.finish_rollback(),
        }
    }

    pub(super) fn finish_rollback(&mut self) {
        let aborted = self.r.failure.as_ref().map(|f| f.aborted).unwrap_or(false);
        self.r.phase = if aborted { Phase::Aborted } else { Phase::RolledBack };
        self.r.finished_at = Some(self.now);
        self.cancel_runs(|_| true);
        self.note(format!("all traffic is back on {}", self.r.spec.target.stable.version));
    }

    pub(super) fn failure_evidence(&self) -> Evidence {
        self.r.failure.as_ref().map(|f| f.evidence.clone()).unwrap_or(Evidence::Aborted { by: String::new(), reason: "unknown".into() })
    }
}
