//! People: approve, reject, abort, promote and retry.

use super::{Step, Txn};
use crate::domain::ids::Actor;
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::plan::Stage;
use crate::domain::rollout::{Approval, Attempt, BacklogState, PauseReason, Phase};

impl Txn {
    pub(super) fn on_approved(&mut self, by: &Actor) -> Step {
        self.not_finished()?;
        match (self.r.phase, self.r.current_stage().cloned()) {
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                if !gate.approvers.is_empty() && !gate.approvers.iter().any(|a| by.is_named_by(a)) {
                    return self.forbid(format!("{by} is not an allowed approver (allowed: {})", gate.approvers.join(", ")));
                }
                if by.same_as(&self.r.created_by) && !gate.allow_self_approval {
                    return self.forbid(format!("{by} started this rollout and cannot approve it"));
                }
                if self.r.approvals.iter().any(|a| a.by.same_as(by)) {
                    return Err(format!("{by} has already approved"));
                }
                self.r.approvals.push(Approval { by: by.clone(), at: self.now });
                let (have, need) = (self.r.approvals.len() as u32, gate.min_approvers);
                self.note(format!("approved by {by} ({have}/{need})"));
                if have >= need {
                    self.advance();
                }
                Ok(())
            }
            (Phase::Paused, _) if matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Step)) => {
                self.note(format!("resumed by {by}"));
                self.resume(true);
                Ok(())
            }
            (phase, _) => Err(format!("nothing is waiting for approval (phase {phase})")),
        }
    }

    pub(super) fn on_rejected(&mut self, by: &Actor, reason: &str) -> Step {
        self.not_finished()?;
        match (self.r.phase, self.r.current_stage().cloned()) {
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                if !gate.approvers.is_empty() && !gate.approvers.iter().any(|a| by.is_named_by(a)) {
                    return self.forbid(format!("{by} is not an allowed approver (allowed: {})", gate.approvers.join(", ")));
                }
            }
            (Phase::Paused, _) => {}
            (phase, _) => return Err(format!("nothing is waiting for a decision (phase {phase})")),
        }
        self.start_rollback(Evidence::Rejected { by: by.to_string(), reason: reason.to_string() }, false);
        Ok(())
    }

    pub(super) fn on_abort(&mut self, by: &str, reason: &str) -> Step {
        self.not_finished()?;
        if self.r.phase == Phase::RollingBack {
            return Err("already rolling back".into());
        }
        self.start_rollback(Evidence::Aborted { by: by.to_string(), reason: reason.to_string() }, true);
        Ok(())
    }

    pub(super) fn on_promote(&mut self, by: &str, full: bool) -> Step {
        self.not_finished()?;
        let phase = self.r.phase;
        match phase {
            Phase::Pending => return Err("not started yet".into()),
            Phase::RollingBack => return Err("rolling back".into()),
            Phase::Promoting => return Err("already promoting".into()),
            _ => {}
        }
        if full {
            return self.promote_fully(by);
        }
        match (phase, self.r.current_stage().cloned()) {
            (Phase::Paused, _) if matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Window { .. })) => {
                Err("held by a deployment window or freeze: it goes on when the window opens, or an Admin overrides with a reason".into())
            }
            (Phase::Paused, _) => {
                self.note(format!("resumed by {by}"));
                self.resume(true);
                Ok(())
            }
            (Phase::Progressing, Some(Stage::Pause { .. })) => {
                self.note(format!("pause skipped by {by}"));
                self.cancel_wait();
                self.advance();
                Ok(())
            }
            (Phase::AwaitingApproval, _) => Err("this step needs approval: use approve".into()),
            (Phase::Progressing, Some(Stage::Analysis { .. })) => {
                Err("an analysis is deciding this step; a full promotion skips it and every step up to the next approval gate".into())
            }
            _ => Err("waiting for the router; nothing to skip".into()),
        }
    }

    /// Past every remaining step but an approval gate: the next gate waits
    /// as usual, at the weight reached; with no gate left, the promotion.
    fn promote_fully(&mut self, by: &str) -> Step {
        let stages = &self.r.plan.stages;
        let (to, what) = match (self.r.stage..stages.len()).find(|i| matches!(stages[*i], Stage::Approval { .. })) {
            Some(gate) if gate == self.r.stage => return Err("this step needs approval: use approve".into()),
            Some(gate) => (gate, ", an approval gate"),
            None => match stages.iter().position(|s| matches!(s, Stage::Promote)) {
                Some(promote) => (promote, ""),
                None => return Err("the plan has no promotion".into()),
            },
        };
        self.note(format!("full promotion requested by {by}: skipping to step {}{what}", to + 1));
        self.cancel_runs(|_| true);
        self.cancel_wait();
        self.enter_stage(to);
        Ok(())
    }

    pub(super) fn on_retry(&mut self, by: &str) -> Step {
        if self.r.phase.is_terminal() {
            match self.r.backlog.clone() {
                BacklogState::Opening { attempt: Attempt { failed_at: Some(_), attempts, .. } } => {
                    let evidence = self.failure_evidence();
                    self.note(format!("backlog issue retried by {by}"));
                    self.open_backlog(attempts + 1, evidence);
                    return Ok(());
                }
                BacklogState::Opened { updating: Some(Attempt { failed_at: Some(_), attempts, .. }), .. } => {
                    self.note(format!("backlog comment retried by {by}"));
                    self.comment_backlog(attempts + 1);
                    return Ok(());
                }
                _ => {}
            }
        }
        self.not_finished()?;
        match self.r.phase {
            Phase::Paused
                if matches!(
                    self.r.pause.as_ref().map(|p| &p.reason),
                    Some(PauseReason::Alert { .. }) | Some(PauseReason::Inconclusive { .. })
                ) =>
            {
                self.note(format!("retry requested by {by}: re-running step {}", self.r.stage + 1));
                self.resume(false);
                Ok(())
            }
            Phase::RollingBack if self.r.traffic.pending.as_ref().map(|p| p.failed_at.is_some()).unwrap_or(false) => {
                self.note(format!("retry requested by {by}"));
                self.reissue_traffic();
                Ok(())
            }
            Phase::RollingBack => Err("the rollback is in progress; nothing has failed to retry".into()),
            _ => Err("nothing to retry".into()),
        }
    }
}
