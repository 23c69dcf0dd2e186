//! `decide`: the rollout state machine as a reducer. Given a state, an event
//! and the time, it returns the next state, the commands to carry out and the
//! history entry to append — or says why the event changes nothing (stale,
//! duplicate, not allowed now), in which case it emits nothing.

use chrono::{DateTime, Utc};

use super::analysis::{ms, AnalysisRun, RunKind, RunStatus};
use super::backlog::LATER_FAILURES_KEPT;
use super::command::{Command, CommandKind, NotifyKind};
use super::event::{CommandRef, Event, MeasureOutcome, MeasurementKey};
use super::history::{Evidence, HistoryEntry, MeasurementRecord};
use super::plan::{AnalysisPlan, Stage};
use super::{
    judge, Approval, Attempt, BacklogState, Failure, LaterFailure, PauseInfo, PauseReason, PendingTraffic, Phase, Reported, Rollout,
};
use crate::domain::spec::{duration_text, OnAlert, OnInconclusive, TimeoutAction};

/// Attempts at SetWeight or Promote before the router counts as broken and
/// the rollout rolls back. A rollback itself retries forever.
pub const MAX_TRAFFIC_ATTEMPTS: u32 = 3;
/// A traffic command with neither confirmation nor failure after this long
/// was lost (the process died while carrying it out) and is issued again.
pub const LOST_COMMAND_MS: u64 = 30_000;
/// A measurement this much overdue lost its scheduled message; the tick takes it.
pub const MEASUREMENT_GRACE_MS: u64 = 15_000;
/// Alert ids remembered per rollout.
const ALERTS_KEPT: usize = 20;
/// Request ids remembered per rollout (for duplicate detection).
const REQUESTS_KEPT: usize = 32;
/// Failure reports remembered per rollout (for duplicate detection).
const FAILURES_KEPT: usize = 32;

/// Whether the event did anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state moved (or commands were re-issued).
    Applied,
    /// Nothing changed and nothing is to be done; the reason says why.
    Ignored(String),
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The state after the event.
    pub next: Rollout,
    /// What to do, in order.
    pub commands: Vec<Command>,
    /// History to append (empty or one entry).
    pub history: Vec<HistoryEntry>,
    /// Applied or ignored.
    pub outcome: Outcome,
}

impl Decision {
    /// Whether the event was ignored.
    pub fn is_ignored(&self) -> bool {
        matches!(self.outcome, Outcome::Ignored(_))
    }
}

/// Applies `event` at `now` to `rollout`. Pure: no I/O, no clock, no randomness.
pub fn decide(rollout: &Rollout, event: Event, now: DateTime<Utc>) -> Decision {
    let mut t = Txn {
        r: rollout.clone(),
        now,
        commands: Vec::new(),
        notes: Vec::new(),
        evidence: None,
        measurement: None,
        by: event.actor().map(str::to_string),
    };
    let request = event.request_id().map(str::to_string);
    if let Some(id) = &request {
        if rollout.requests.iter().any(|r| r == id) {
            return Decision {
                next: rollout.clone(),
                commands: Vec::new(),
                history: Vec::new(),
                outcome: Outcome::Ignored(format!("request {id} was already applied")),
            };
        }
    }
    let applied = t.apply(&event);
    if let (Ok(()), Some(id)) = (&applied, request) {
        t.r.requests.push(id);
        if t.r.requests.len() > REQUESTS_KEPT {
            t.r.requests.remove(0);
        }
    }
    match applied {
        Err(reason) => Decision { next: rollout.clone(), commands: Vec::new(), history: Vec::new(), outcome: Outcome::Ignored(reason) },
        Ok(()) => t.finish(rollout, &event),
    }
}

type Step = Result<(), String>;

struct Txn {
    r: Rollout,
    now: DateTime<Utc>,
    commands: Vec<Command>,
    notes: Vec<String>,
    evidence: Option<Evidence>,
    measurement: Option<MeasurementRecord>,
    by: Option<String>,
}

impl Txn {
    fn apply(&mut self, event: &Event) -> Step {
        match event {
            Event::Start => self.on_start(),
            Event::StepDue { seq } => self.on_step_due(*seq),
            Event::Measured { key, outcome } => self.on_measured(key, outcome),
            Event::Approved { by, stage, .. } => {
                self.same_stage(*stage)?;
                self.on_approved(by)
            }
            Event::Rejected { by, reason, stage, .. } => {
                self.same_stage(*stage)?;
                self.on_rejected(by, reason)
            }
            Event::AlertFired { alert } => self.on_alert(alert),
            Event::AlertResolved { alert_id } => self.on_alert_resolved(alert_id),
            Event::AbortRequested { by, reason, .. } => self.on_abort(by, reason),
            Event::PromoteRequested { by, full, stage, .. } => {
                self.same_stage(*stage)?;
                self.on_promote(by, *full)
            }
            Event::RetryRequested { by, .. } => self.on_retry(by),
            Event::CommandFailed { command, error } => self.on_command_failed(command, error),
            Event::TrafficConfirmed { weight } => self.on_traffic_confirmed(*weight),
            Event::Promoted => self.on_promoted(),
            Event::BacklogOpened { issue, reported } => self.on_backlog_opened(issue, *reported),
            Event::BacklogCommented { id, reported } => self.on_backlog_commented(*id, *reported),
            Event::Tick => self.on_tick(MEASUREMENT_GRACE_MS),
            Event::Wake => self.on_tick(0),
        }
    }

    fn finish(mut self, before: &Rollout, event: &Event) -> Decision {
        self.update_backlog();
        let changed_phase = self.r.phase != before.phase;
        if changed_phase && self.r.phase != Phase::AwaitingApproval {
            let kind = match (before.phase, self.r.phase) {
                (Phase::Pending, Phase::Progressing) | (Phase::Pending, Phase::Paused) => NotifyKind::Started,
                (_, Phase::Paused) => NotifyKind::Paused,
                (_, Phase::RollingBack) => NotifyKind::RollingBack,
                (_, Phase::RolledBack) => NotifyKind::RolledBack,
                (_, Phase::Aborted) => NotifyKind::Aborted,
                (_, Phase::Succeeded) => NotifyKind::Succeeded,
                _ => NotifyKind::PhaseChanged,
            };
            let summary = self.notes.first().cloned().unwrap_or_else(|| format!("{} → {}", before.phase, self.r.phase));
            let id = self.next_id();
            self.commands.push(Command::Notify { kind, phase: self.r.phase, summary, id });
        }
        if self.notes.is_empty() && self.r == *before {
            // Only re-issued work (e.g. an overdue measurement): nothing to record.
            return Decision { next: self.r, commands: self.commands, history: Vec::new(), outcome: Outcome::Applied };
        }
        self.r.version += 1;
        self.r.history_len += 1;
        self.r.updated_at = self.now;
        let entry = HistoryEntry {
            seq: self.r.history_len,
            at: self.now,
            from: before.phase,
            to: self.r.phase,
            stage: self.r.stage,
            weight: self.r.traffic.weight,
            cause: event.kind().to_string(),
            by: self.by.clone(),
            summary: self.notes.join("; "),
            evidence: self.evidence.take(),
            measurement: self.measurement.take(),
        };
        Decision { next: self.r, commands: self.commands, history: vec![entry], outcome: Outcome::Applied }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    fn next_id(&mut self) -> u64 {
        let id = self.r.next_command_id;
        self.r.next_command_id += 1;
        id
    }

    /// A person's request names the step they saw; a request for a step the
    /// rollout has left is stale.
    fn same_stage(&self, stage: Option<usize>) -> Step {
        match stage {
            Some(s) if s != self.r.stage && !self.r.phase.is_terminal() => {
                Err(format!("stale request: it was made at step {} but the rollout is at step {}", s + 1, self.r.stage + 1))
            }
            _ => Ok(()),
        }
    }

    fn not_finished(&self) -> Step {
        if self.r.phase.is_terminal() {
            Err(format!("the rollout has finished ({})", self.r.phase))
        } else {
            Ok(())
        }
    }

    // ----- stages -------------------------------------------------------

    /// Starts the stages (after the error-budget gate, if any).
    fn begin(&mut self) {
        self.note("started");
        self.start_background();
        self.enter_stage(0);
    }

    fn advance(&mut self) {
        let next = self.r.stage + 1;
        self.enter_stage(next);
    }

    fn enter_stage(&mut self, index: usize) {
        self.r.stage = index;
        self.r.approvals.clear();
        self.r.due_at = None;
        self.r.pause = None;
        let Some(stage) = self.r.plan.stages.get(index).cloned() else {
            self.succeed();
            return;
        };
        let position = format!("step {}/{}", index + 1, self.r.plan.stages.len());
        match stage {
            Stage::SetWeight { weight } => {
                self.r.phase = Phase::Progressing;
                self.note(format!("{position}: setting canary weight to {weight}%"));
                self.issue_traffic(CommandKind::SetWeight, weight);
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
            Stage::Promote => {
                self.r.phase = Phase::Promoting;
                self.cancel_runs(|_| true);
                self.note(format!("{position}: promoting {}", self.r.spec.target.canary.version));
                self.issue_traffic(CommandKind::Promote, 100);
            }
            Stage::ScaleDown { delay_ms } => {
                self.r.phase = Phase::Promoting;
                self.note(format!("{position}: keeping the previous version for {}", duration_text(delay_ms)));
                self.wait(delay_ms);
            }
        }
    }

    fn wait(&mut self, duration: u64) {
        self.r.seq += 1;
        let at = self.now + ms(duration);
        self.r.due_at = Some(at);
        self.commands.push(Command::ScheduleStep { at, seq: self.r.seq });
    }

    fn cancel_wait(&mut self) {
        self.r.seq += 1;
        self.r.due_at = None;
    }

    fn issue_traffic(&mut self, kind: CommandKind, weight: u8) {
        let id = self.next_id();
        self.r.traffic.weight = weight;
        self.r.traffic.pending = Some(PendingTraffic::first(kind, id, self.now));
        self.commands.push(self.traffic_command(kind, id, self.now));
    }

    fn traffic_command(&self, kind: CommandKind, id: u64, since: DateTime<Utc>) -> Command {
        match kind {
            CommandKind::Promote => Command::Promote { id, since },
            CommandKind::RevertTraffic => Command::RevertTraffic { undo_promotion: self.r.traffic.promoted, id, since },
            _ => Command::SetWeight { weight: self.r.traffic.weight, id },
        }
    }

    fn succeed(&mut self) {
        self.r.phase = Phase::Succeeded;
        self.r.finished_at = Some(self.now);
        self.r.due_at = None;
        self.cancel_runs(|_| true);
        self.note(format!("succeeded: {} is the stable version", self.r.spec.target.canary.version));
    }

    // ----- analysis -----------------------------------------------------

    fn start_run(&mut self, kind: RunKind, plan: &AnalysisPlan) {
        let id = self.r.runs.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let run = AnalysisRun::start(id, kind, plan, self.now);
        for m in &run.metrics {
            if let Some(at) = m.next_at {
                self.commands.push(Command::Measure { key: MeasurementKey { run: id, metric: m.name.clone(), index: 0 }, at });
            }
        }
        self.r.runs.push(run);
    }

    fn start_background(&mut self) {
        let running = self.r.runs.iter().any(|r| r.kind == RunKind::Background && r.status == RunStatus::Running);
        if let (Some(bg), false) = (self.r.plan.background.clone(), running) {
            self.start_run(RunKind::Background, &bg);
        }
    }

    fn cancel_runs(&mut self, which: impl Fn(&AnalysisRun) -> bool) {
        for run in self.r.runs.iter_mut().filter(|r| which(r)) {
            run.cancel();
        }
    }

    fn run_evidence(&self, run_index: usize) -> Evidence {
        let run = &self.r.runs[run_index];
        let decisive = run
            .metrics
            .iter()
            .find(|m| m.status == RunStatus::Failed)
            .or_else(|| run.metrics.iter().find(|m| m.status == RunStatus::Inconclusive))
            .or_else(|| run.metrics.first());
        match decisive {
            Some(m) => {
                let key = MeasurementKey { run: run.id, metric: m.name.clone(), index: 0 };
                let plan = self.r.metric_plan(&key);
                Evidence::Analysis {
                    analysis: run.label.clone(),
                    metric: m.name.clone(),
                    condition: plan.map(|p| p.condition.to_string()).unwrap_or_default(),
                    reason: plan.map(|p| m.reason(p)).unwrap_or_default(),
                    measurements: m.recent.clone(),
                }
            }
            None => Evidence::Analysis {
                analysis: run.label.clone(),
                metric: String::new(),
                condition: String::new(),
                reason: "had no metrics".into(),
                measurements: Vec::new(),
            },
        }
    }

    fn on_measured(&mut self, key: &MeasurementKey, outcome: &MeasureOutcome) -> Step {
        self.not_finished()?;
        let plan = self.r.metric_plan(key).cloned().ok_or_else(|| format!("no metric {} in run {}", key.metric, key.run))?;
        let run_index = self
            .r
            .runs
            .iter()
            .position(|r| r.id == key.run && r.status == RunStatus::Running)
            .ok_or_else(|| format!("analysis run {} is not running", key.run))?;
        let run = &mut self.r.runs[run_index];
        let metric = run
            .metrics
            .iter_mut()
            .find(|m| m.name == key.metric && m.status == RunStatus::Running)
            .ok_or_else(|| format!("metric {} is not measuring", key.metric))?;
        if metric.next_index != key.index {
            return Err(format!("stale measurement: {} #{} was already taken (next is #{})", key.metric, key.index, metric.next_index));
        }
        let record = judge(&plan, outcome, key.index, self.now);
        metric.record(&plan, record.clone());
        let mut next = None;
        if metric.status == RunStatus::Running {
            let at = self.now + ms(plan.interval_ms);
            metric.next_at = Some(at);
            next =
                Some(Command::Measure { key: MeasurementKey { run: key.run, metric: key.metric.clone(), index: metric.next_index }, at });
        } else {
            metric.next_at = None;
        }
        run.settle();
        let (status, kind, label) = (run.status, run.kind.clone(), run.label.clone());
        self.note(format!("{label}/{} #{}: {}", key.metric, key.index + 1, record.note));
        self.measurement = Some(record);
        if let Some(cmd) = next {
            self.commands.push(cmd);
        }
        if kind == RunKind::RollbackCheck {
            let verified = self.measurement.as_ref().map(|m| m.verdict == super::Verdict::Pass).unwrap_or(false);
            if verified || status != RunStatus::Running {
                let note = self.measurement.as_ref().map(|m| m.note.clone()).unwrap_or_default();
                if let Some(f) = self.r.failure.as_mut() {
                    f.verified = Some(verified);
                    f.verification = Some(note.clone());
                }
                if verified {
                    self.note(format!("canary traffic stopped: {note}"));
                } else {
                    self.note(format!("canary traffic did NOT stop within the checks: {note}; users may still reach the canary"));
                }
                self.finish_rollback();
            }
            return Ok(());
        }
        match status {
            RunStatus::Failed => {
                let evidence = self.run_evidence(run_index);
                if kind == RunKind::ErrorBudget {
                    self.refuse_start(evidence);
                } else {
                    self.note(format!("analysis {label} failed"));
                    self.start_rollback(evidence, false);
                }
            }
            RunStatus::Inconclusive => {
                if kind == RunKind::ErrorBudget {
                    let evidence = self.run_evidence(run_index);
                    self.refuse_start(evidence);
                } else {
                    self.on_inconclusive(run_index);
                }
            }
            RunStatus::Successful => match kind {
                RunKind::Stage { stage } if stage == self.r.stage && self.r.phase == Phase::Progressing => {
                    self.note(format!("analysis {label} passed"));
                    self.advance();
                }
                RunKind::ErrorBudget => {
                    self.note("error budget is sufficient");
                    self.begin();
                }
                _ => self.note(format!("analysis {label} complete")),
            },
            RunStatus::Running | RunStatus::Cancelled => {}
        }
        Ok(())
    }

    fn on_inconclusive(&mut self, run_index: usize) {
        let policy = self.r.plan.on_inconclusive;
        let max = self.r.plan.max_extensions;
        let run = &self.r.runs[run_index];
        let label = run.label.clone();
        let stage_analysis = matches!(run.kind, RunKind::Stage { .. });
        match policy {
            OnInconclusive::Rollback => {
                let evidence = self.run_evidence(run_index);
                self.note(format!("analysis {label} was inconclusive; policy is rollback"));
                self.start_rollback(evidence, false);
            }
            OnInconclusive::Extend if run.extensions < max => {
                let run_id = run.id;
                let mut measures = Vec::new();
                let plans: Vec<_> = run
                    .metrics
                    .iter()
                    .map(|m| self.r.metric_plan(&MeasurementKey { run: run_id, metric: m.name.clone(), index: 0 }).cloned())
                    .collect();
                let run = &mut self.r.runs[run_index];
                run.extensions += 1;
                let n = run.extensions;
                for (m, plan) in run.metrics.iter_mut().zip(plans) {
                    if m.status != RunStatus::Inconclusive {
                        continue;
                    }
                    let Some(plan) = plan else { continue };
                    m.status = RunStatus::Running;
                    m.inconclusive = 0;
                    m.target = m.target.map(|t| t + plan.count.unwrap_or(1));
                    let at = self.now + ms(plan.interval_ms);
                    m.next_at = Some(at);
                    measures
                        .push(Command::Measure { key: MeasurementKey { run: run_id, metric: m.name.clone(), index: m.next_index }, at });
                }
                run.status = RunStatus::Running;
                self.commands.extend(measures);
                self.note(format!("analysis {label} was inconclusive; extending it ({n}/{max})"));
            }
            OnInconclusive::Extend | OnInconclusive::Pause => {
                let id = self.r.runs[run_index].id;
                self.note(format!("analysis {label} was inconclusive; pausing for a person"));
                self.evidence = Some(self.run_evidence(run_index));
                self.pause_for(PauseReason::Inconclusive { run: id, stage_analysis });
            }
        }
    }

    fn refuse_start(&mut self, evidence: Evidence) {
        let min = self.r.plan.error_budget.as_ref().map(|m| m.condition.threshold).unwrap_or(0.0);
        let (remaining, reason) = match &evidence {
            Evidence::Analysis { measurements, reason, .. } => (measurements.last().and_then(|m| m.canary), reason.clone()),
            other => (None, other.headline()),
        };
        let evidence = Evidence::ErrorBudget { remaining, min_remaining: min, reason };
        self.cancel_runs(|_| true);
        self.r.phase = Phase::Aborted;
        self.r.finished_at = Some(self.now);
        self.note(format!("refused to start: {}", evidence.headline()));
        self.r.failure = Some(Failure {
            at: self.now,
            stage: self.r.stage,
            phase: Phase::Pending,
            by: None,
            aborted: true,
            weight: 0,
            evidence: evidence.clone(),
            reverted_at: None,
            verified: None,
            verification: None,
            later: Vec::new(),
        });
        self.evidence = Some(evidence);
    }

    // ----- pause, resume, rollback ---------------------------------------

    fn pause_for(&mut self, reason: PauseReason) {
        self.r.phase = Phase::Paused;
        self.r.pause = Some(PauseInfo { reason, since: self.now });
        self.cancel_runs(|r| r.status == RunStatus::Running);
        self.cancel_wait();
        self.r.approvals.clear();
    }

    /// Leaves a pause: a pause step moves on; an alert or background pause
    /// re-runs the current stage; an inconclusive stage analysis is accepted
    /// (`accept`) or re-run.
    fn resume(&mut self, accept: bool) {
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

    fn start_rollback(&mut self, evidence: Evidence, aborted: bool) {
        // RevertTraffic comes first: nothing queued before it in this decision survives.
        self.commands.retain(|c| matches!(c, Command::Notify { .. }));
        self.cancel_runs(|_| true);
        self.cancel_wait();
        self.r.pause = None;
        self.r.approvals.clear();
        let from_phase = self.r.phase;
        let exposed = self.r.traffic.confirmed.unwrap_or(0).max(self.r.traffic.weight);
        self.r.phase = Phase::RollingBack;
        self.note(format!("rolling back: {}", evidence.headline()));
        let id = self.next_id();
        self.r.traffic.weight = 0;
        self.r.traffic.pending = Some(PendingTraffic::first(CommandKind::RevertTraffic, id, self.now));
        self.commands.insert(0, Command::RevertTraffic { undo_promotion: self.r.traffic.promoted, id, since: self.now });
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

    fn open_backlog(&mut self, attempts: u32, evidence: Evidence) {
        let id = self.next_id();
        self.r.backlog = BacklogState::Opening { attempt: Attempt::new(id, attempts, self.now) };
        self.commands.push(Command::OpenBacklogIssue { evidence, id });
    }

    /// Tells an open issue what it does not say yet (one comment at a time;
    /// news arriving meanwhile goes into the next one).
    fn update_backlog(&mut self) {
        if let BacklogState::Opened { reported, updating: None, .. } = &self.r.backlog {
            if Reported::of(&self.r).news_since(reported) {
                self.comment_backlog(1);
            }
        }
    }

    fn comment_backlog(&mut self, attempts: u32) {
        let id = self.next_id();
        if let BacklogState::Opened { issue, reported, updating } = &mut self.r.backlog {
            *updating = Some(Attempt::new(id, attempts, self.now));
            self.commands.push(Command::CommentBacklogIssue { issue: issue.clone(), id, told: *reported });
        }
    }

    /// A failure after the rollback began; the backlog issue hears about it.
    fn later_failure(&mut self, evidence: Evidence) {
        let now = self.now;
        // The first few are kept (the backlog issue counts them); the history has every one.
        if let Some(f) = self.r.failure.as_mut().filter(|f| f.later.len() < LATER_FAILURES_KEPT) {
            f.later.push(LaterFailure { at: now, evidence });
        }
    }

    /// Traffic is confirmed back on stable: done, or first check from
    /// metrics that canary traffic really stopped, when the policy asks.
    fn traffic_reverted(&mut self) {
        if let Some(f) = self.r.failure.as_mut() {
            f.reverted_at = Some(self.now);
        }
        match self.r.plan.rollback_check.clone() {
            Some(check) => {
                self.note(format!(
                    "the router sends no traffic to {}; checking that canary traffic stops ({})",
                    self.r.spec.target.canary.version, check.condition
                ));
                let plan = AnalysisPlan { label: "rollback-check".into(), metrics: vec![check] };
                self.start_run(RunKind::RollbackCheck, &plan);
            }
            None => self.finish_rollback(),
        }
    }

    fn finish_rollback(&mut self) {
        let aborted = self.r.failure.as_ref().map(|f| f.aborted).unwrap_or(false);
        self.r.phase = if aborted { Phase::Aborted } else { Phase::RolledBack };
        self.r.finished_at = Some(self.now);
        self.cancel_runs(|_| true);
        self.note(format!("all traffic is back on {}", self.r.spec.target.stable.version));
    }

    // ----- events ---------------------------------------------------------

    fn on_start(&mut self) -> Step {
        if self.r.phase != Phase::Pending {
            return Err(format!("already started ({})", self.r.phase));
        }
        if !self.r.runs.is_empty() {
            return Err("already checking the error budget".into());
        }
        match self.r.plan.error_budget.clone() {
            Some(budget) => {
                self.note(format!("checking the error budget ({})", budget.condition));
                let plan = AnalysisPlan { label: "error-budget".into(), metrics: vec![budget] };
                self.start_run(RunKind::ErrorBudget, &plan);
            }
            None => self.begin(),
        }
        Ok(())
    }

    fn on_step_due(&mut self, seq: u64) -> Step {
        self.not_finished()?;
        if seq != self.r.seq || self.r.due_at.is_none() {
            return Err(format!("stale timer: wait {seq} is not the current one ({})", self.r.seq));
        }
        self.handle_due()
    }

    fn handle_due(&mut self) -> Step {
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

    fn on_approved(&mut self, by: &str) -> Step {
        self.not_finished()?;
        match (self.r.phase, self.r.current_stage().cloned()) {
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                if !gate.approvers.is_empty() && !gate.approvers.iter().any(|a| a == by) {
                    return Err(format!("{by} is not an allowed approver (allowed: {})", gate.approvers.join(", ")));
                }
                if by == self.r.created_by && !gate.allow_self_approval {
                    return Err(format!("{by} started this rollout and cannot approve it"));
                }
                if self.r.approvals.iter().any(|a| a.by == by) {
                    return Err(format!("{by} has already approved"));
                }
                self.r.approvals.push(Approval { by: by.to_string(), at: self.now });
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

    fn on_rejected(&mut self, by: &str, reason: &str) -> Step {
        self.not_finished()?;
        match (self.r.phase, self.r.current_stage().cloned()) {
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                if !gate.approvers.is_empty() && !gate.approvers.iter().any(|a| a == by) {
                    return Err(format!("{by} is not an allowed approver (allowed: {})", gate.approvers.join(", ")));
                }
            }
            (Phase::Paused, _) => {}
            (phase, _) => return Err(format!("nothing is waiting for a decision (phase {phase})")),
        }
        self.start_rollback(Evidence::Rejected { by: by.to_string(), reason: reason.to_string() }, false);
        Ok(())
    }

    fn on_alert(&mut self, alert: &super::AlertInfo) -> Step {
        self.not_finished()?;
        if self.r.phase == Phase::RollingBack {
            if self.r.alerts.contains(&alert.id) {
                return Err("already rolling back".into());
            }
            // A different alert while rolling back: more evidence, same rollback.
            self.remember_alert(&alert.id);
            let evidence = Evidence::Alert { alert: alert.clone() };
            self.note(format!("another alert while rolling back: {}", evidence.headline()));
            self.later_failure(evidence.clone());
            self.evidence = Some(evidence);
            return Ok(());
        }
        let paused_by_alert = matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Alert { .. }));
        if self.r.plan.on_alert == OnAlert::Pause && paused_by_alert {
            return Err("already paused for an alert".into());
        }
        self.remember_alert(&alert.id);
        let evidence = Evidence::Alert { alert: alert.clone() };
        match self.r.plan.on_alert {
            OnAlert::Rollback => self.start_rollback(evidence, false),
            OnAlert::Pause => {
                self.note(format!("paused: {}", evidence.headline()));
                self.evidence = Some(evidence);
                self.pause_for(PauseReason::Alert { alert_id: alert.id.clone() });
            }
        }
        Ok(())
    }

    fn remember_alert(&mut self, id: &str) {
        if !self.r.alerts.iter().any(|a| a == id) {
            self.r.alerts.push(id.to_string());
            if self.r.alerts.len() > ALERTS_KEPT {
                self.r.alerts.remove(0);
            }
        }
    }

    fn on_alert_resolved(&mut self, alert_id: &str) -> Step {
        self.not_finished()?;
        match self.r.pause.as_ref().map(|p| &p.reason) {
            Some(PauseReason::Alert { alert_id: a }) if a == alert_id && self.r.phase == Phase::Paused => {
                self.note(format!("alert {alert_id} resolved; resuming"));
                self.resume(false);
                Ok(())
            }
            _ => Err(format!("not paused for alert {alert_id}")),
        }
    }

    fn on_abort(&mut self, by: &str, reason: &str) -> Step {
        self.not_finished()?;
        if self.r.phase == Phase::RollingBack {
            return Err("already rolling back".into());
        }
        self.start_rollback(Evidence::Aborted { by: by.to_string(), reason: reason.to_string() }, true);
        Ok(())
    }

    fn on_promote(&mut self, by: &str, full: bool) -> Step {
        self.not_finished()?;
        let phase = self.r.phase;
        match phase {
            Phase::Pending => return Err("not started yet".into()),
            Phase::RollingBack => return Err("rolling back".into()),
            Phase::Promoting => return Err("already promoting".into()),
            _ => {}
        }
        if full {
            let stages = &self.r.plan.stages;
            if let Some(gate_at) = (self.r.stage..stages.len()).find(|i| matches!(stages[*i], Stage::Approval { .. })) {
                return Err(format!("step {} is an approval gate; approve it before a full promotion", gate_at + 1));
            }
            let Some(promote_at) = stages.iter().position(|s| matches!(s, Stage::Promote)) else {
                return Err("the plan has no promotion".into());
            };
            self.note(format!("full promotion requested by {by}: skipping to step {}", promote_at + 1));
            self.cancel_runs(|_| true);
            self.cancel_wait();
            self.enter_stage(promote_at);
            return Ok(());
        }
        match (phase, self.r.current_stage().cloned()) {
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
                Err("an analysis is deciding this step; use a full promotion to skip all remaining steps".into())
            }
            _ => Err("waiting for the router; nothing to skip".into()),
        }
    }

    fn on_retry(&mut self, by: &str) -> Step {
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

    fn failure_evidence(&self) -> Evidence {
        self.r.failure.as_ref().map(|f| f.evidence.clone()).unwrap_or(Evidence::Aborted { by: String::new(), reason: "unknown".into() })
    }

    fn reissue_traffic(&mut self) {
        let Some(p) = self.r.traffic.pending.clone() else { return };
        let id = self.next_id();
        let attempts = p.attempts + 1;
        self.r.traffic.pending = Some(PendingTraffic {
            kind: p.kind,
            id,
            attempts,
            issued_at: self.now,
            since: p.since,
            failed_at: None,
            last_error: p.last_error,
        });
        self.note(format!("retrying {:?} (attempt {attempts})", p.kind));
        let cmd = self.traffic_command(p.kind, id, p.since);
        self.commands.push(cmd);
    }

    fn on_command_failed(&mut self, command: &CommandRef, error: &str) -> Step {
        match command.kind {
            CommandKind::SetWeight | CommandKind::Promote | CommandKind::RevertTraffic => {
                self.not_finished()?;
                let pending = self.r.traffic.pending.clone();
                let Some(p) = pending.filter(|p| p.id == command.id && p.kind == command.kind && p.failed_at.is_none()) else {
                    return Err("stale failure report".into());
                };
                let attempts = p.attempts;
                if let Some(pend) = self.r.traffic.pending.as_mut() {
                    pend.failed_at = Some(self.now);
                    pend.last_error = Some(error.to_string());
                }
                self.note(format!("router failed {:?} (attempt {attempts}): {error}", command.kind));
                if command.kind == CommandKind::RevertTraffic && attempts == MAX_TRAFFIC_ATTEMPTS {
                    // Users are still on the canary: the issue must say so.
                    self.later_failure(Evidence::Router { command: "RevertTraffic".into(), error: error.to_string(), attempts });
                }
                if command.kind != CommandKind::RevertTraffic && attempts >= MAX_TRAFFIC_ATTEMPTS {
                    let evidence = Evidence::Router { command: format!("{:?}", command.kind), error: error.to_string(), attempts };
                    self.start_rollback(evidence, false);
                }
                Ok(())
            }
            CommandKind::OpenBacklogIssue | CommandKind::CommentBacklogIssue => {
                let now = self.now;
                let attempt = match (&mut self.r.backlog, command.kind) {
                    (BacklogState::Opening { attempt }, CommandKind::OpenBacklogIssue) => attempt,
                    (BacklogState::Opened { updating: Some(attempt), .. }, CommandKind::CommentBacklogIssue) => attempt,
                    _ => return Err("stale failure report".into()),
                };
                if attempt.id != command.id || attempt.failed_at.is_some() {
                    return Err("stale failure report".into());
                }
                attempt.failed_at = Some(now);
                attempt.last_error = Some(error.to_string());
                let n = attempt.attempts;
                let what = if command.kind == CommandKind::OpenBacklogIssue { "issue not opened" } else { "comment not posted" };
                self.note(format!("backlog {what} (attempt {n}): {error}; will retry"));
                Ok(())
            }
            CommandKind::Notify | CommandKind::ScaleDownPrevious => {
                if self.r.failed_notifications.contains(&command.id) {
                    return Err("failure already recorded".into());
                }
                self.r.failed_notifications.push(command.id);
                if self.r.failed_notifications.len() > FAILURES_KEPT {
                    self.r.failed_notifications.remove(0);
                }
                self.note(format!("{:?} failed: {error}", command.kind));
                Ok(())
            }
        }
    }

    fn on_traffic_confirmed(&mut self, weight: u8) -> Step {
        self.not_finished()?;
        let matches = self
            .r
            .traffic
            .pending
            .as_ref()
            .map(|p| matches!(p.kind, CommandKind::SetWeight | CommandKind::RevertTraffic) && weight == self.r.traffic.weight)
            .unwrap_or(false);
        if !matches {
            return Err(format!("stale confirmation: {weight}% is not what is pending"));
        }
        self.r.traffic.pending = None;
        self.r.traffic.confirmed = Some(weight);
        if self.r.phase == Phase::RollingBack {
            self.traffic_reverted();
            return Ok(());
        }
        self.note(format!("router confirmed {weight}%"));
        if self.r.phase == Phase::Progressing && matches!(self.r.current_stage(), Some(Stage::SetWeight { weight: w }) if *w == weight) {
            self.advance();
        }
        Ok(())
    }

    fn on_promoted(&mut self) -> Step {
        self.not_finished()?;
        if !matches!(self.r.traffic.pending.as_ref().map(|p| p.kind), Some(CommandKind::Promote)) {
            return Err("no promotion is pending".into());
        }
        self.r.traffic.pending = None;
        self.r.traffic.promoted = true;
        self.r.traffic.confirmed = Some(100);
        self.note("promotion confirmed");
        self.advance();
        Ok(())
    }

    fn on_backlog_opened(&mut self, issue: &super::IssueRef, reported: Reported) -> Step {
        if !matches!(self.r.backlog, BacklogState::Opening { .. }) {
            return Err("no backlog issue is being opened".into());
        }
        self.note(format!("backlog issue {} opened: {}", issue.id, issue.url));
        self.r.backlog = BacklogState::Opened { issue: issue.clone(), reported, updating: None };
        Ok(())
    }

    fn on_backlog_commented(&mut self, id: u64, told: Reported) -> Step {
        let BacklogState::Opened { issue, reported, updating } = &mut self.r.backlog else {
            return Err("no backlog comment is being posted".into());
        };
        let Some(attempt) = updating.take().filter(|a| a.id == id) else {
            return Err(format!("stale comment report: comment {id} is not the one being posted"));
        };
        *reported = told;
        let text = format!("backlog issue {} updated (attempt {})", issue.id, attempt.attempts);
        self.note(text);
        Ok(())
    }

    /// Fires what is due: the current wait, measurements due `grace_ms` ago
    /// or earlier, retries of failed or lost router and backlog calls.
    fn on_tick(&mut self, grace_ms: u64) -> Step {
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
                    Some(f) => f + ms(traffic_backoff_ms(p.attempts)),
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

/// Wait before re-issuing a failed traffic command: 2 s doubling, at most 30 s.
pub fn traffic_backoff_ms(attempts: u32) -> u64 {
    (2_000u64 << attempts.saturating_sub(1).min(10)).min(30_000)
}
