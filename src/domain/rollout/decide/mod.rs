//! `decide`: the rollout state machine as a reducer. Given a state, an event
//! and the time, it returns the next state, the commands to carry out and the
//! history entry to append — or says why the event changes nothing (stale,
//! duplicate, not allowed now), in which case it emits nothing.
//!
//! This file holds the reducer's frame (duplicate requests, the history
//! entry, the phase-change announcement); each family of events has its own
//! file, so every `on_<event>` is found by its name: [`stages`] (start,
//! timers, the tick), [`traffic`] (router results), [`analysis`]
//! (measurements), [`rollback`] (pause, resume, rollback), [`people`]
//! (approve, reject, abort, promote, retry), [`alerts`] and [`backlog`].

mod alerts;
mod analysis;
mod backlog;
mod people;
mod rollback;
mod split;
mod stages;
mod traffic;
mod windows;

pub use stages::{retry_at, sweep_at};

use chrono::{DateTime, Utc};

use super::command::{Command, CommandKind, NotifyKind};
use super::event::{CommandRef, Event};
use super::history::{Evidence, HistoryEntry, MeasurementRecord};
use super::{Phase, RefusedRequest, Rollout};

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

/// Why an event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The person may not do this (not an allowed approver, self-approval).
    Forbidden,
    /// The rollout's state does not allow it now (stale, finished, nothing
    /// waiting), or a result the state no longer expects.
    Conflict,
}

/// An event that changed nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who-may-act or state conflict.
    pub kind: RefusalKind,
    /// Why, in words.
    pub reason: String,
}

/// Whether the event did anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state moved (or commands were re-issued).
    Applied,
    /// A person's request seen before: already applied, nothing more to do.
    Duplicate,
    /// Nothing was done; a person's refused request is still recorded in the history.
    Refused(Refusal),
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
    /// Applied, duplicate or refused.
    pub outcome: Outcome,
}

impl Decision {
    /// Whether the event was refused (or a duplicate): nothing is to be carried out.
    pub fn is_ignored(&self) -> bool {
        !matches!(self.outcome, Outcome::Applied)
    }

    fn unchanged(rollout: &Rollout, outcome: Outcome) -> Decision {
        Decision { next: rollout.clone(), commands: Vec::new(), history: Vec::new(), outcome }
    }
}

/// History rows a rollout gets for everything; past them, only a change of
/// phase, stage or weight gets a row, and other events (a storm of repeated
/// alerts, refused requests, measurements of a long soak) are counted —
/// so no sender can grow a rollout's history without bound.
pub const HISTORY_ROWS_KEPT: u64 = 2_000;

/// Applies `event` at `now` to `rollout`. Pure: no I/O, no clock, no randomness.
pub fn decide(rollout: &Rollout, event: Event, now: DateTime<Utc>) -> Decision {
    within_history_limit(rollout, decide_any(rollout, event, now))
}

/// Past [`HISTORY_ROWS_KEPT`], folds a decision's row into the counts unless
/// it is a transition, which then tells what was folded since the last row.
fn within_history_limit(before: &Rollout, mut d: Decision) -> Decision {
    if before.history_len < HISTORY_ROWS_KEPT {
        return d;
    }
    let Some(entry) = d.history.first_mut() else { return d };
    let transition = entry.from != entry.to || entry.stage != before.stage || entry.weight != before.traffic.weight;
    if !transition {
        *d.next.unrecorded.entry(entry.cause.clone()).or_default() += 1;
        d.next.history_len = before.history_len;
        d.history.clear();
        return d;
    }
    if !d.next.unrecorded.is_empty() {
        let folded: Vec<String> = d.next.unrecorded.iter().map(|(cause, n)| format!("{cause} ×{n}")).collect();
        entry.summary = format!("{}; not recorded one by one since row {}: {}", entry.summary, before.history_len, folded.join(", "));
        d.next.unrecorded.clear();
    }
    d
}

fn decide_any(rollout: &Rollout, event: Event, now: DateTime<Utc>) -> Decision {
    // Outside text is bounded before anything keeps it.
    let event = event.bounded();
    let mut t = Txn {
        r: rollout.clone(),
        now,
        commands: Vec::new(),
        notes: Vec::new(),
        evidence: None,
        measurement: None,
        by: event.actor().map(|a| a.to_string()),
        forbidden: false,
    };
    let request = event.request_id().cloned();
    if let Some(id) = &request {
        if rollout.requests.contains(id) {
            return Decision::unchanged(rollout, Outcome::Duplicate);
        }
        if let Some(seen) = rollout.refused_requests.iter().find(|r| r.id == *id) {
            let kind = if seen.forbidden { RefusalKind::Forbidden } else { RefusalKind::Conflict };
            return Decision::unchanged(rollout, Outcome::Refused(Refusal { kind, reason: seen.reason.clone() }));
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
        Err(reason) => {
            let kind = if t.forbidden { RefusalKind::Forbidden } else { RefusalKind::Conflict };
            let refusal = Refusal { kind, reason };
            match event.actor() {
                Some(_) => refused_request(rollout, &event, refusal, now),
                None => Decision::unchanged(rollout, Outcome::Refused(refusal)),
            }
        }
        Ok(()) => t.finish(rollout, &event),
    }
}

/// A person's refused request changes nothing but the history: who asked
/// for what, and why it was refused.
fn refused_request(rollout: &Rollout, event: &Event, refusal: Refusal, now: DateTime<Utc>) -> Decision {
    let mut next = rollout.clone();
    next.version += 1;
    next.history_len += 1;
    next.updated_at = now;
    if let Some(id) = event.request_id() {
        next.refused_requests.push(RefusedRequest {
            id: id.clone(),
            forbidden: refusal.kind == RefusalKind::Forbidden,
            reason: refusal.reason.clone(),
        });
        if next.refused_requests.len() > REQUESTS_KEPT {
            next.refused_requests.remove(0);
        }
    }
    let kind = if refusal.kind == RefusalKind::Forbidden { "forbidden" } else { "refused" };
    let entry = HistoryEntry {
        seq: next.history_len,
        at: now,
        from: rollout.phase,
        to: rollout.phase,
        stage: rollout.stage,
        weight: rollout.traffic.weight,
        cause: format!("{}Refused", event.kind()),
        by: event.actor().map(|a| a.to_string()),
        summary: format!("{kind}: {}", refusal.reason),
        evidence: None,
        measurement: None,
    };
    Decision { next, commands: Vec::new(), history: vec![entry], outcome: Outcome::Refused(refusal) }
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
    /// Set when a refusal is about who may act rather than the state.
    forbidden: bool,
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
            Event::ReleaseFailed { failure } => self.on_release_failed(failure),
            Event::AlertResolved { alert_id } => self.on_alert_resolved(alert_id),
            Event::AbortRequested { by, reason, .. } => self.on_abort(by, reason),
            Event::PromoteRequested { by, full, stage, .. } => {
                self.same_stage(*stage)?;
                self.on_promote(by, *full)
            }
            Event::RetryRequested { by, .. } => self.on_retry(by),
            Event::OverrideRequested { by, reason, .. } => self.on_override(by, reason),
            Event::CommandFailed { command, error } => self.on_command_failed(command, error),
            Event::TrafficConfirmed { weight } => self.on_traffic_confirmed(*weight),
            Event::RouterCaveats { caveats } => self.on_router_caveats(caveats),
            Event::Promoted => self.on_promoted(),
            Event::PreviewReady { address } => self.on_preview_ready(address),
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
            let kind = if matches!(event, Event::OverrideRequested { .. }) { NotifyKind::Overridden } else { kind };
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
        let failed = match event {
            Event::CommandFailed { command, .. } => Some(command.kind),
            _ => None,
        };
        self.r.tally.fold(before, &self.r.plan.stages, &entry, failed);
        Decision { next: self.r, commands: self.commands, history: vec![entry], outcome: Outcome::Applied }
    }

    /// Refuses a person's request because of who they are (HTTP 403), not the state.
    fn forbid(&mut self, reason: String) -> Step {
        self.forbidden = true;
        Err(reason)
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

    /// A command could not be carried out: its family decides what follows.
    fn on_command_failed(&mut self, command: &CommandRef, error: &str) -> Step {
        match command.kind {
            CommandKind::SetWeight | CommandKind::Promote | CommandKind::RevertTraffic | CommandKind::Preview => {
                self.on_router_failed(command, error)
            }
            CommandKind::OpenBacklogIssue | CommandKind::CommentBacklogIssue => self.on_backlog_failed(command, error),
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
}
