//! Stages: entering each step of the plan, waits and their timers, the tick.

use chrono::{DateTime, Utc};

use super::{Step, Txn, LOST_COMMAND_MS, MEASUREMENT_GRACE_MS};
use crate::domain::ids::Weight;
use crate::domain::rollout::analysis::{ms, RunKind};
use crate::domain::rollout::command::{Command, CommandKind};
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::plan::{AnalysisPlan, Stage};
use crate::domain::rollout::{BacklogState, PauseInfo, PauseReason, Phase, Rollout, RunStatus};
use crate::domain::spec::{duration_text, TimeoutAction};

impl Txn {
    /// Starts the stages (after the error-budget gate, if any).
    pub(super) fn begin(&mut self) {
        self.note("started");
        self.start_background();
        self.enter_stage(0);
    }

    /// Whether the plan shows the canary to testers first: its background
    /// analysis then waits for users' traffic (at 0 % it has none to judge,
    /// and would call the canary inconclusive).
    pub(super) fn previews(&self) -> bool {
        self.r.plan.stages.iter().any(|s| matches!(s, Stage::Preview))
    }

    pub(super) fn advance(&mut self) {
        let next = self.r.stage + 1;
        self.enter_stage(next);
    }

    pub(super) fn enter_stage(&mut self, index: usize) {
        self.r.stage = index;
        self.r.approvals.clear();
        self.r.due_at = None;
        self.r.pause = None;
        if self.r.window_override.is_some_and(|s| s != index) {
            self.r.window_override = None;
        }
        let Some(stage) = self.r.plan.stages.get(index).cloned() else {
            self.succeed();
            return;
        };
        let raises = match &stage {
            Stage::SetWeight { weight } => *weight > self.r.traffic.weight,
            Stage::Promote => true,
            _ => false,
        };
        if raises && self.held_by_window(index, false) {
            return;
        }
        let position = format!("step {}/{}", index + 1, self.r.plan.stages.len());
        match stage {
            Stage::SetWeight { weight } => {
                self.r.phase = Phase::Progressing;
                self.note(format!("{position}: setting canary weight to {weight}%"));
                self.issue_traffic(CommandKind::SetWeight, weight);
                if self.previews() && !self.r.runs.iter().any(|r| r.kind == RunKind::Background) {
                    self.start_background();
                }
            }
            Stage::Pause { duration_ms: Some(d) } => {
                self.r.phase = Phase::Progressing;
                self.note(format!("{position}: pausing {}", duration_text(d)));
                self.wait(d);
            }
            Stage::Pause { duration_ms: None } => {
                self.r.phase = Phase::Paused;
                self.r.pause = Some(PauseInfo { reason: PauseReason::Step, since: self.now });
                self.note(format!("{position}: paused until resumed"));
            }
            Stage::Analysis { analysis } => {
                self.r.phase = Phase::Progressing;
                self.note(format!("{position}: analysis {}", analysis.label));
                self.start_run(RunKind::Stage { stage: index }, &analysis);
            }
            Stage::Approval { gate } => {
                self.r.phase = Phase::AwaitingApproval;
                let who = if gate.approvers.is_empty() { "anyone".to_string() } else { gate.approvers.join(", ") };
                self.note(format!("{position}: waiting for {} approval(s) from {who}", gate.min_approvers));
                let deadline = gate.timeout_ms.map(|t| {
                    self.wait(t);
                    self.now + ms(t)
                });
                let id = self.next_id();
                self.commands.push(Command::RequestApproval {
                    id,
                    stage: index,
                    min_approvers: gate.min_approvers,
                    approvers: gate.approvers.clone(),
                    deadline,
                });
            }
            Stage::Preview => {
                self.r.phase = Phase::Progressing;
                self.note(format!("{position}: asking the router for a preview of {}", self.r.spec.target.canary.version));
                let weight = self.r.traffic.weight;
                self.issue_traffic(CommandKind::Preview, weight);
            }
            Stage::Promote => {
                self.r.phase = Phase::Promoting;
                self.cancel_runs(|_| true);
                self.note(format!("{position}: promoting {}", self.r.spec.target.canary.version));
                self.issue_traffic(CommandKind::Promote, Weight::FULL);
            }
            Stage::ScaleDown { delay_ms } => {
                self.r.phase = Phase::Promoting;
                self.note(format!("{position}: keeping the previous version for {}", duration_text(delay_ms)));
                self.wait(delay_ms);
            }
        }
    }

    pub(super) fn wait(&mut self, duration: u64) {
        self.r.seq += 1;
        let at = self.now + ms(duration);
        self.r.due_at = Some(at);
        self.commands.push(Command::ScheduleStep { at, seq: self.r.seq });
    }

    pub(super) fn cancel_wait(&mut self) {
        self.r.seq += 1;
        self.r.due_at = None;
    }

    pub(super) fn succeed(&mut self) {
        self.r.phase = Phase::Succeeded;
        self.r.finished_at = Some(self.now);
        self.r.due_at = None;
        self.cancel_runs(|_| true);
        self.note(format!("succeeded: {} is the stable version", self.r.spec.target.canary.version));
    }

    pub(super) fn on_start(&mut self) -> Step {
        if self.r.phase != Phase::Pending {
            return Err(format!("already started ({})", self.r.phase));
        }
        if !self.r.runs.is_empty() {
            return Err("already checking the error budget".into());
        }
        self.start_checks();
        Ok(())
    }

    /// The start, once it may begin: the deployment window, then the error
    /// budget, then the first stage.
    pub(super) fn start_checks(&mut self) {
        if self.held_by_window(0, true) {
            return;
        }
        match self.r.plan.error_budget.clone() {
            Some(budget) => {
                self.note(format!("checking the error budget ({})", budget.rule()));
                let plan = AnalysisPlan { label: "error-budget".into(), metrics: vec![budget] };
                self.start_run(RunKind::ErrorBudget, &plan);
            }
            None => self.begin(),
        }
    }

    pub(super) fn on_step_due(&mut self, seq: u64) -> Step {
        self.not_finished()?;
        if seq != self.r.seq || self.r.due_at.is_none() {
            return Err(format!("stale timer: wait {seq} is not the current one ({})", self.r.seq));
        }
        self.handle_due()
    }

    pub(super) fn handle_due(&mut self) -> Step {
        let stage = self.r.current_stage().cloned();
        match (self.r.phase, stage) {
            (Phase::Progressing, Some(Stage::Pause { .. })) => {
                self.r.due_at = None;
                self.note("pause over");
                self.advance();
            }
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                self.r.due_at = None;
                let waited = gate.timeout_ms.unwrap_or(0);
                match gate.on_timeout {
                    TimeoutAction::Rollback => self.start_rollback(Evidence::ApprovalTimeout { waited_ms: waited }, false),
                    TimeoutAction::Abort => self.start_rollback(Evidence::ApprovalTimeout { waited_ms: waited }, true),
                    TimeoutAction::Proceed => {
                        self.note(format!("no decision within {}; proceeding as the plan says", duration_text(waited)));
                        self.advance();
                    }
                }
            }
            (Phase::Paused, _) if matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Window { .. })) => {
                let begin = matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Window { begin: true, .. }));
                self.window_opened(begin);
            }
            (Phase::Promoting, Some(Stage::ScaleDown { .. })) => {
                self.r.due_at = None;
                let id = self.next_id();
                self.commands.push(Command::ScaleDownPrevious { id });
                self.note(format!("scaling down {}", self.r.spec.target.stable.version));
                self.advance();
            }
            _ => return Err("nothing is waiting for a timer".into()),
        }
        Ok(())
    }

    /// Fires what is due: the current wait, measurements due `grace_ms` ago
    /// or earlier, retries of failed or lost router and backlog calls.
    pub(super) fn on_tick(&mut self, grace_ms: u64) -> Step {
        let now = self.now;
        if !self.r.phase.is_terminal() {
            if let Some(due) = self.r.due_at {
                if due <= now {
                    if grace_ms > 0 {
                        self.note("timer fired by the tick (scheduled message late or lost)");
                    }
                    // A wait that no longer applies must not stay due forever.
                    if self.handle_due().is_err() {
                        self.r.due_at = None;
                    }
                }
            }
            if let Some(p) = self.r.traffic.pending.clone() {
                let retry_at = match p.failed_at {
                    Some(f) => f + ms(crate::domain::backoff::TRAFFIC.delay_ms(p.attempts)),
                    None => p.issued_at + ms(LOST_COMMAND_MS),
                };
                if retry_at <= now {
                    self.reissue_traffic();
                }
            }
            // Measurements due as well (taken after any stage change above).
            if !self.r.phase.is_terminal() {
                for key in self.r.due_measurements(now - ms(grace_ms)) {
                    self.commands.push(Command::Measure { key, at: now });
                }
            }
        }
        match self.r.backlog.clone() {
            BacklogState::Opening { attempt } if attempt.retry_at(LOST_COMMAND_MS) <= now => {
                let evidence = self.failure_evidence();
                self.note(format!("retrying the backlog issue (attempt {})", attempt.attempts + 1));
                self.open_backlog(attempt.attempts + 1, evidence);
            }
            BacklogState::Opened { updating: Some(attempt), .. } if attempt.retry_at(LOST_COMMAND_MS) <= now => {
                self.note(format!("retrying the backlog comment (attempt {})", attempt.attempts + 1));
                self.comment_backlog(attempt.attempts + 1);
            }
            _ => {}
        }
        if self.commands.is_empty() && self.notes.is_empty() {
            return Err("nothing is due".into());
        }
        Ok(())
    }
}

/// When a call that failed is due again: the router's (not yet on stable
/// for good) or the backlog's, after its backoff. The rollout's wake-up is
/// kept for it, so a retry waits for no timer. A call still in flight that
/// may be lost with its process is left to the sweep ([`sweep_at`]).
pub fn retry_at(r: &Rollout) -> Option<DateTime<Utc>> {
    let traffic = r
        .traffic
        .pending
        .as_ref()
        .filter(|_| !r.phase.is_terminal())
        .and_then(|p| p.failed_at.map(|f| f + ms(crate::domain::backoff::TRAFFIC.delay_ms(p.attempts))));
    let backlog = r.backlog.attempt().filter(|a| a.failed_at.is_some()).map(|a| a.retry_at(LOST_COMMAND_MS));
    traffic.into_iter().chain(backlog).min()
}

/// The earliest time the timer's `Tick` can find work on `r`, or `None` if it
/// never can until something else changes the rollout. It mirrors
/// [`Txn::on_tick`] term by term (a property test holds the two together),
/// so a store can index rollouts by it and the sweep visit only those due.
pub fn sweep_at(r: &Rollout) -> Option<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    if !r.phase.is_terminal() {
        times.extend(r.due_at);
        if let Some(p) = &r.traffic.pending {
            times.push(match p.failed_at {
                Some(f) => f + ms(crate::domain::backoff::TRAFFIC.delay_ms(p.attempts)),
                None => p.issued_at + ms(LOST_COMMAND_MS),
            });
        }
        let grace = ms(MEASUREMENT_GRACE_MS);
        times.extend(
            r.runs
                .iter()
                .filter(|run| run.status == RunStatus::Running)
                .flat_map(|run| run.metrics.iter().filter(|m| m.status == RunStatus::Running).filter_map(|m| m.next_at))
                .map(|at| at + grace),
        );
    }
    times.extend(r.backlog.attempt().map(|a| a.retry_at(LOST_COMMAND_MS)));
    times.into_iter().min()
}
