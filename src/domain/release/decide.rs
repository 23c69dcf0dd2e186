//! The release's reducer: `(state, event, now) -> (state, commands, history)`.

use chrono::{DateTime, TimeDelta, Utc};

use super::{EarlierWaves, Release, ReleaseBacklog, ReleaseEntry, ReleaseFailure, ReleasePhase, Revert, RETRY_MS, WATCH_MS};
use crate::domain::ids::{Actor, RolloutId};
use crate::domain::rollout::{Approval, IssueRef, Outcome, Phase, Refusal, RefusalKind};
use crate::domain::spec::TimeoutAction;

/// One of the release's rollouts as seen now.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The rollout.
    pub rollout: RolloutId,
    /// Its phase.
    pub phase: Phase,
    /// Why it failed, in one line, when it did.
    pub cause: Option<String>,
}

impl Seen {
    /// A rollout in `phase`, with no failure to tell.
    pub fn new(rollout: RolloutId, phase: Phase) -> Seen {
        Seen { rollout, phase, cause: None }
    }
}

/// What can happen to a release.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseEvent {
    /// What its rollouts are doing now (absent: not created yet).
    Observed(Vec<Seen>),
    /// A person approves the gate after the current wave.
    Approved {
        /// Who.
        by: Actor,
    },
    /// A person refuses the gate: the release halts.
    Rejected {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
    },
    /// A person stops the release: running targets roll back, no wave starts.
    AbortRequested {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
    },
    /// A target's rollout could not be created (its target is busy with another rollout).
    StartRefused {
        /// The rollout.
        rollout: RolloutId,
        /// Why.
        reason: String,
    },
    /// The backlog issue is open (or was found).
    IssueOpened {
        /// The issue.
        issue: IssueRef,
    },
    /// Opening the issue failed; tried again later.
    IssueFailed {
        /// Why.
        error: String,
    },
    /// A promoted target is back on stable.
    Reverted {
        /// Its rollout.
        rollout: RolloutId,
    },
    /// Putting a promoted target back failed; tried again later.
    RevertFailed {
        /// Its rollout.
        rollout: RolloutId,
        /// Why.
        error: String,
    },
}

/// What the shell carries out.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseCommand {
    /// Create (or, when it exists, make sure it started) a target's rollout.
    StartRollout {
        /// Wave (0-based).
        wave: usize,
        /// Target index in the wave.
        target: usize,
    },
    /// Roll a running rollout back (the release halted or was aborted).
    AbortRollout {
        /// The rollout.
        rollout: RolloutId,
        /// Why, for its history.
        reason: String,
    },
    /// Put a promoted target back on its stable version.
    RevertPromoted {
        /// The rollout.
        rollout: RolloutId,
    },
    /// Open the release's one backlog issue.
    OpenIssue,
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseDecision {
    /// The state after the event.
    pub release: Release,
    /// What to do.
    pub commands: Vec<ReleaseCommand>,
    /// New history entries.
    pub history: Vec<ReleaseEntry>,
    /// Whether it changed anything.
    pub outcome: Outcome,
}

struct Txn {
    r: Release,
    now: DateTime<Utc>,
    commands: Vec<ReleaseCommand>,
    history: Vec<ReleaseEntry>,
}

/// Decides one event.
pub fn decide(release: &Release, event: &ReleaseEvent, now: DateTime<Utc>) -> ReleaseDecision {
    let mut t = Txn { r: release.clone(), now, commands: Vec::new(), history: Vec::new() };
    let result = match event {
        ReleaseEvent::Observed(phases) => {
            t.observe(phases);
            Ok(())
        }
        ReleaseEvent::Approved { by } => t.approve(by),
        ReleaseEvent::Rejected { by, reason } => t.reject(by, reason),
        ReleaseEvent::AbortRequested { by, reason } => t.abort(by, reason),
        ReleaseEvent::StartRefused { rollout, reason } => {
            t.fail_target(rollout, &format!("could not start: {reason}"));
            Ok(())
        }
        ReleaseEvent::IssueOpened { issue } => {
            t.note("sluice", None, format!("backlog issue opened: {}", issue.url));
            t.r.backlog = ReleaseBacklog::Opened { issue: issue.clone() };
            Ok(())
        }
        ReleaseEvent::IssueFailed { error } => {
            if let ReleaseBacklog::Opening { attempts, .. } = t.r.backlog {
                t.r.backlog = ReleaseBacklog::Opening { attempts, error: Some(error.clone()) };
            }
            Ok(())
        }
        ReleaseEvent::Reverted { rollout } => {
            t.revert_result(rollout, None);
            Ok(())
        }
        ReleaseEvent::RevertFailed { rollout, error } => {
            t.revert_result(rollout, Some(error.clone()));
            Ok(())
        }
    };
    let outcome = match result {
        Ok(()) => Outcome::Applied,
        Err(refusal) => {
            return ReleaseDecision {
                release: release.clone(),
                commands: Vec::new(),
                history: Vec::new(),
                outcome: Outcome::Refused(refusal),
            }
        }
    };
    t.r.wake_at = t.next_wake();
    if t.r != *release {
        t.r.updated_at = now;
    }
    ReleaseDecision { release: t.r, commands: t.commands, history: t.history, outcome }
}

fn conflict(reason: impl Into<String>) -> Refusal {
    Refusal { kind: RefusalKind::Conflict, reason: reason.into() }
}

fn forbidden(reason: impl Into<String>) -> Refusal {
    Refusal { kind: RefusalKind::Forbidden, reason: reason.into() }
}

impl Txn {
    fn note(&mut self, by: &str, wave: Option<usize>, message: String) {
        self.r.seq += 1;
        self.history.push(ReleaseEntry { seq: self.r.seq, at: self.now, by: by.to_string(), wave, message });
    }

    fn wave_name(&self, wave: usize) -> String {
        self.r.spec.waves.get(wave).map(|w| w.name.clone()).unwrap_or_else(|| format!("wave {}", wave + 1))
    }

    /// Records the phases seen and moves on what they mean.
    fn observe(&mut self, seen: &[Seen]) {
        for run in self.r.runs.iter_mut().flatten() {
            if let Some(s) = seen.iter().find(|s| s.rollout == run.rollout) {
                run.phase = Some(s.phase);
            }
        }
        if self.r.phase != ReleasePhase::Running {
            self.retry_pending();
            return;
        }
        let wave = self.r.wave;
        let runs = self.r.runs.get(wave).cloned().unwrap_or_default();
        if let Some(failed) = runs.iter().find(|r| matches!(r.phase, Some(Phase::RolledBack | Phase::Aborted))) {
            let how = if failed.phase == Some(Phase::Aborted) { "was aborted" } else { "rolled back" };
            let cause = seen.iter().find(|s| s.rollout == failed.rollout).and_then(|s| s.cause.clone());
            let how = match cause {
                Some(cause) if !cause.is_empty() => format!("{how}: {cause}"),
                _ => how.to_string(),
            };
            self.fail_target(&failed.rollout.clone(), &how);
            return;
        }
        for (i, run) in runs.iter().enumerate() {
            if run.phase.is_none() {
                self.commands.push(ReleaseCommand::StartRollout { wave, target: i });
            }
        }
        if runs.iter().all(|r| r.phase == Some(Phase::Succeeded)) {
            self.wave_done();
        }
    }

    /// Every target of the current wave promoted: gate, next wave, or done.
    fn wave_done(&mut self) {
        let wave = self.r.wave;
        let name = self.wave_name(wave);
        if wave + 1 >= self.r.spec.waves.len() {
            self.note("sluice", Some(wave), format!("wave {name} promoted; every wave is out: release succeeded"));
            self.r.phase = ReleasePhase::Succeeded;
            return;
        }
        if let Some(gate) = &self.r.spec.waves[wave].approval {
            let need = gate.min_approvers;
            self.note("sluice", Some(wave), format!("wave {name} promoted; waiting for {need} approval(s) before the next wave"));
            self.r.phase = ReleasePhase::AwaitingApproval;
            self.r.gate_since = Some(self.now);
            self.r.approvals.clear();
            return;
        }
        self.note("sluice", Some(wave), format!("wave {name} promoted"));
        self.next_wave();
    }

    fn next_wave(&mut self) {
        self.r.wave += 1;
        self.r.phase = ReleasePhase::Running;
        self.r.gate_since = None;
        self.r.approvals.clear();
        let wave = self.r.wave;
        let targets: Vec<String> = self.r.runs[wave].iter().map(|r| r.target.clone()).collect();
        self.note("sluice", Some(wave), format!("wave {} started: {}", self.wave_name(wave), targets.join(", ")));
        for i in 0..targets.len() {
            self.commands.push(ReleaseCommand::StartRollout { wave, target: i });
        }
    }

    fn approve(&mut self, by: &Actor) -> Result<(), Refusal> {
        if self.r.phase != ReleasePhase::AwaitingApproval {
            return Err(conflict(format!("nothing is waiting for approval (release {})", self.r.phase.as_str())));
        }
        let Some(gate) = self.r.spec.waves[self.r.wave].approval.clone() else { return Err(conflict("this wave has no gate")) };
        if !gate.approvers.is_empty() && !gate.approvers.iter().any(|a| by.is_named_by(a)) {
            return Err(forbidden(format!("{by} is not an allowed approver (allowed: {})", gate.approvers.join(", "))));
        }
        if by.same_as(&self.r.created_by) && !gate.allow_self_approval {
            return Err(forbidden(format!("{by} started this release and cannot approve it")));
        }
        if self.r.approvals.iter().any(|a| a.by.same_as(by)) {
            return Err(conflict(format!("{by} has already approved")));
        }
        self.r.approvals.push(Approval { by: by.clone(), at: self.now });
        let (have, need) = (self.r.approvals.len() as u32, gate.min_approvers);
        self.note(by.as_str(), Some(self.r.wave), format!("next wave approved by {by} ({have}/{need})"));
        if have >= need {
            self.next_wave();
        }
        Ok(())
    }

    fn reject(&mut self, by: &Actor, reason: &str) -> Result<(), Refusal> {
        if self.r.phase != ReleasePhase::AwaitingApproval {
            return Err(conflict(format!("nothing is waiting for a decision (release {})", self.r.phase.as_str())));
        }
        let gate = self.r.spec.waves[self.r.wave].approval.clone();
        if let Some(g) = gate.filter(|g| !g.approvers.is_empty()) {
            if !g.approvers.iter().any(|a| by.is_named_by(a)) {
                return Err(forbidden(format!("{by} is not an allowed approver (allowed: {})", g.approvers.join(", "))));
            }
        }
        let wave = self.r.wave;
        self.halt(ReleaseFailure { wave, target: None, rollout: None, reason: format!("the next wave was rejected by {by}: {reason}") });
        Ok(())
    }

    fn abort(&mut self, by: &Actor, reason: &str) -> Result<(), Refusal> {
        if self.r.phase.is_terminal() {
            return Err(conflict(format!("the release is already {}", self.r.phase.as_str())));
        }
        self.r.phase = ReleasePhase::Aborted;
        self.note(by.as_str(), Some(self.r.wave), format!("release aborted by {by}: {reason}"));
        self.abort_running(&format!("release {} aborted by {by}", self.r.id));
        Ok(())
    }

    /// A target of the current wave failed: halt, apply the policy, file the issue.
    fn fail_target(&mut self, rollout: &RolloutId, how: &str) {
        if self.r.phase.is_terminal() {
            return;
        }
        let Some((wave, run)) =
            self.r.runs.iter().enumerate().find_map(|(w, runs)| runs.iter().find(|r| r.rollout == *rollout).map(|r| (w, r.clone())))
        else {
            return;
        };
        let reason = format!("target {} in wave {} {how}", run.target, self.wave_name(wave));
        self.halt(ReleaseFailure { wave, target: Some(run.target), rollout: Some(run.rollout), reason });
    }

    fn halt(&mut self, failure: ReleaseFailure) {
        let wave = failure.wave;
        self.note("sluice", Some(wave), format!("release halted: {}", failure.reason));
        self.r.phase = ReleasePhase::Halted;
        self.r.failure = Some(failure);
        self.abort_running(&format!("release {} halted", self.r.id));
        if self.r.spec.on_failure.earlier_waves == EarlierWaves::RollBack {
            for w in 0..=wave.min(self.r.runs.len().saturating_sub(1)) {
                for i in 0..self.r.runs[w].len() {
                    let run = &mut self.r.runs[w][i];
                    if run.phase == Some(Phase::Succeeded) && run.reverted.is_none() {
                        run.reverted = Some(Revert { done: false, attempts: 1, error: None });
                        let id = run.rollout.clone();
                        let target = run.target.clone();
                        self.note("sluice", Some(w), format!("policy rollBack: putting promoted target {target} back on stable"));
                        self.commands.push(ReleaseCommand::RevertPromoted { rollout: id });
                    }
                }
            }
        }
        if self.r.spec.backlog.is_some() && self.r.backlog == ReleaseBacklog::None {
            self.r.backlog = ReleaseBacklog::Opening { attempts: 1, error: None };
            self.commands.push(ReleaseCommand::OpenIssue);
        }
    }

    /// Rolls back every rollout of the current wave that has not finished.
    fn abort_running(&mut self, reason: &str) {
        let wave = self.r.wave;
        let running: Vec<RolloutId> =
            self.r.runs[wave].iter().filter(|r| r.phase.map(|p| !p.is_terminal()).unwrap_or(false)).map(|r| r.rollout.clone()).collect();
        for rollout in running {
            self.commands.push(ReleaseCommand::AbortRollout { rollout, reason: reason.to_string() });
        }
    }

    fn revert_result(&mut self, rollout: &RolloutId, error: Option<String>) {
        let mut line = None;
        for (w, run) in self.r.runs.iter_mut().enumerate().flat_map(|(w, runs)| runs.iter_mut().map(move |r| (w, r))) {
            if run.rollout != *rollout {
                continue;
            }
            if let Some(rev) = run.reverted.as_mut().filter(|v| !v.done) {
                rev.done = error.is_none();
                rev.error = error.clone();
                if error.is_none() {
                    line = Some((w, format!("target {} is back on stable", run.target)));
                }
            }
        }
        if let Some((w, message)) = line {
            self.note("sluice", Some(w), message);
        }
    }

    /// After a halt: issue and reverts that failed are tried again when due,
    /// and rollouts still running are told again to stop.
    fn retry_pending(&mut self) {
        if self.r.phase == ReleasePhase::AwaitingApproval {
            self.gate_timeout();
            return;
        }
        if !self.due() {
            return;
        }
        if let ReleaseBacklog::Opening { attempts, .. } = self.r.backlog {
            self.r.backlog = ReleaseBacklog::Opening { attempts: attempts + 1, error: None };
            self.commands.push(ReleaseCommand::OpenIssue);
        }
        for run in self.r.runs.iter_mut().flatten() {
            if let Some(rev) = run.reverted.as_mut().filter(|v| !v.done) {
                rev.attempts += 1;
                rev.error = None;
                self.commands.push(ReleaseCommand::RevertPromoted { rollout: run.rollout.clone() });
            }
        }
        if matches!(self.r.phase, ReleasePhase::Halted | ReleasePhase::Aborted) {
            self.abort_running(&format!("release {} halted", self.r.id));
        }
    }

    fn due(&self) -> bool {
        self.r.wake_at.map(|w| w <= self.now).unwrap_or(false)
    }

    fn gate_timeout(&mut self) {
        let Some(gate) = self.r.spec.waves[self.r.wave].approval.clone() else { return };
        let (Some(timeout), Some(since)) = (gate.timeout.as_ref(), self.r.gate_since) else { return };
        if since + TimeDelta::milliseconds(timeout.ms() as i64) > self.now {
            return;
        }
        let wave = self.r.wave;
        match gate.on_timeout {
            TimeoutAction::Proceed => {
                self.note("sluice", Some(wave), "nobody decided in time; carrying on as the gate says".into());
                self.next_wave();
            }
            TimeoutAction::Abort => {
                self.r.phase = ReleasePhase::Aborted;
                self.note("sluice", Some(wave), "nobody decided in time; release aborted as the gate says".into());
            }
            TimeoutAction::Rollback => {
                self.halt(ReleaseFailure { wave, target: None, rollout: None, reason: "nobody approved the next wave in time".into() })
            }
        }
    }

    /// When the timer must look again.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        let retry = self.now + TimeDelta::milliseconds(RETRY_MS);
        match self.r.phase {
            ReleasePhase::Running => Some(self.now + TimeDelta::milliseconds(WATCH_MS)),
            ReleasePhase::AwaitingApproval => {
                let gate = self.r.spec.waves.get(self.r.wave).and_then(|w| w.approval.as_ref());
                match (gate.and_then(|g| g.timeout.as_ref()), self.r.gate_since) {
                    (Some(t), Some(since)) => Some(since + TimeDelta::milliseconds(t.ms() as i64)),
                    _ => None,
                }
            }
            _ if self.r.settled() => None,
            _ => Some(retry),
        }
    }
}
