//! The engine: the one place that loads a rollout, asks [`decide`] what to
//! do, carries the commands out through the ports and saves — the shell
//! around the pure core that every handler shares.
//!
//! Order of work for an event: load → decide → traffic commands (so a
//! rollback's weight 0 is applied before anything else) → their results
//! decided in memory → one conditional save of state and history → then the
//! rest (backlog issue, scheduled messages, measurements, notifications),
//! whose results are decided and saved in a further round. Only the first
//! part holds the rollout's lock: the rest runs outside it, and its results
//! are folded in by the same conditional save, so a rollback never queues
//! behind a hanging metrics backend, tracker or channel. A queue delivery
//! ([`Engine::handle_delivery`]) and the timer's sweep answer once the first
//! round is saved and leave the rest to the engine's background pool, so no
//! consumer is held by the slow world either: the next message — an alert's
//! rollback — finds one free. A stale ETag means reload and decide again; a
//! crash anywhere leaves state the timer resumes.

mod effects;
mod locks;
mod pipeline_waits;
mod release;
mod retention;

pub use pipeline_waits::{WaitsReport, MAX_WAIT, WAIT_SWEEP_LIMIT};
pub use release::ReleaseApplied;

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use locks::KeyedLocks;

use crate::domain::ids::{Actor, RolloutId, TargetName};
use crate::domain::rollout::{
    decide, BacklogState, Command, Event, HistoryEntry, Input, Outcome, Phase, Plan, Refusal, RefusalKind, Reported, Rollout,
};
use crate::domain::spec::RolloutSpec;
use crate::ports::clock::Clock;
use crate::ports::env::AdapterEnv;
use crate::ports::queue::Queue;
use crate::ports::store::{ListFilter, Store, StoreError, DUE_BATCH};
use crate::shell::messages::StepMessage;

/// Save attempts before giving up on a contended rollout (the message is retried).
const MAX_CONFLICT_RETRIES: usize = 8;
/// Pauses before saving again when the store was away after the router moved.
const SAVE_RETRY_DELAYS: [std::time::Duration; 3] =
    [std::time::Duration::from_millis(50), std::time::Duration::from_millis(250), std::time::Duration::from_millis(1000)];
/// How soon a rollout whose background round failed is visited again.
const WAKE_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);
/// Decide-and-save rounds for one delivery (feedback from commands).
const MAX_ROUNDS: usize = 16;
/// Batches of due rollouts one sweep takes at most.
pub const MAX_SWEEP_BATCHES: usize = 20;
/// Deliveries whose after-save work may run in the background at once; the
/// next delivery waits for a slot (bounded memory under a storm).
const BACKGROUND_SLOTS: usize = 256;

/// What can go wrong carrying out work.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such rollout: the work can never succeed.
    #[error("no rollout with id '{0}'")]
    NotFound(RolloutId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] crate::ports::queue::QueueError),
    /// Other writers kept winning; retry later.
    #[error("rollout '{0}' is being changed by others; try again")]
    Contended(String),
    /// The message or request can never be processed.
    #[error("{0}")]
    Invalid(String),
}

impl EngineError {
    /// Whether retrying later could succeed (the queue should redeliver).
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::NotFound(_) | EngineError::Invalid(_) => false,
            EngineError::Store(e) => matches!(e, StoreError::Unavailable(_) | StoreError::Conflict),
            EngineError::Queue(_) | EngineError::Contended(_) => true,
        }
    }
}

/// The result of applying an event.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The rollout afterwards.
    pub rollout: Rollout,
    /// Whether the event itself changed anything (and if not, why).
    pub outcome: Outcome,
}

/// What one timer sweep did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Rollouts looked at.
    pub visited: usize,
    /// Of which something was due.
    pub acted: usize,
    /// Failures (logged; the next tick tries again).
    pub errors: usize,
    /// Releases visited.
    pub releases: usize,
    /// Pipeline tasks waiting on rollouts.
    pub pipeline_waits: WaitsReport,
    /// Finished rollouts and releases deleted past their retention.
    pub pruned: crate::ports::store::Pruned,
}

/// Load, decide, act, save. Cloning shares everything (ports, locks, pool).
#[derive(Clone)]
pub struct Engine {
    /// Rollout state.
    pub store: Arc<dyn Store>,
    /// Step messages.
    pub queue: Arc<dyn Queue>,
    /// What adapters are built with.
    pub env: AdapterEnv,
    /// The time.
    pub clock: Arc<dyn Clock>,
    locks: Arc<KeyedLocks>,
    /// Slots for after-save work that runs beyond its delivery.
    background: Arc<tokio::sync::Semaphore>,
    /// Whether a finished rollout prints its `sluice.metric` line on stdout
    /// (in Azure, where the Functions host sends stdout to Application Insights).
    metric_lines: bool,
    /// How long finished rollouts and releases are kept (`SLUICE_RETENTION_DAYS`).
    retention: chrono::TimeDelta,
    /// The deployment's shared windows and freezes (`SLUICE_WINDOWS`), added to every new rollout's plan.
    windows: Option<crate::domain::window::Windows>,
    /// Slack's buttons (`SLUICE_SLACK_*`), read once at start.
    slack: Option<Arc<crate::shell::config::SlackInteractivity>>,
}

/// A new rollout id: readable, sortable by time, unique.
pub fn new_rollout_id(target: &TargetName, now: DateTime<Utc>) -> Result<RolloutId, EngineError> {
    let short: String = target.chars().take(24).collect();
    let random: String = uuid::Uuid::new_v4().simple().to_string().chars().take(6).collect();
    RolloutId::parse(&format!("{short}-{}-{random}", now.format("%Y%m%d-%H%M%S"))).map_err(|e| EngineError::Invalid(e.to_string()))
}

impl Engine {
    /// An engine over the given ports.
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, env: AdapterEnv, clock: Arc<dyn Clock>) -> Self {
        let background = Arc::new(tokio::sync::Semaphore::new(BACKGROUND_SLOTS));
        let retention = crate::ports::store::DEFAULT_RETENTION;
        Engine { store, queue, env, clock, locks: Arc::default(), background, metric_lines: false, retention, windows: None, slack: None }
    }

    /// The same engine, printing a `sluice.metric` line per finished rollout.
    pub fn with_metric_lines(mut self) -> Self {
        self.metric_lines = true;
        self
    }

    /// The same engine, keeping every new rollout within the deployment's shared windows.
    pub fn with_windows(mut self, windows: Option<crate::domain::window::Windows>) -> Self {
        self.windows = windows;
        self
    }

    /// The same engine, answering Slack's button clicks.
    pub fn with_slack(mut self, slack: Option<crate::shell::config::SlackInteractivity>) -> Self {
        self.slack = slack.map(Arc::new);
        self
    }

    /// Slack's buttons, if they are set up.
    pub fn slack(&self) -> Option<&crate::shell::config::SlackInteractivity> {
        self.slack.as_deref()
    }

    /// The shared windows, for those who show when a rollout may move (the gate).
    pub fn shared_windows(&self) -> Option<&crate::domain::window::Windows> {
        self.windows.as_ref()
    }

    /// Creates a rollout (refused if its target is busy) and enqueues its
    /// start. A retry keeps the backlog issue of the rollout it retries, so
    /// failing again adds to that issue instead of opening another.
    pub async fn create(
        &self,
        spec: RolloutSpec,
        plan: Plan,
        by: &Actor,
        id: Option<RolloutId>,
        retry_of: Option<&Rollout>,
    ) -> Result<Rollout, EngineError> {
        let now = self.clock.now();
        let id = match id {
            Some(id) => id,
            None => new_rollout_id(&spec.target.name, now)?,
        };
        let mut plan = plan;
        if let Some(shared) = self.windows.as_ref().filter(|w| !plan.windows.contains(w)) {
            plan.windows.push(shared.clone());
        }
        let (mut rollout, first) = Rollout::new(id, spec, plan, by.clone(), now);
        if let Some(old) = retry_of {
            rollout.retry_of = Some(old.id.clone());
            if let Some(issue) = old.backlog.issue() {
                rollout.backlog = BacklogState::Opened { issue: issue.clone(), reported: Reported::default(), updating: None };
            }
        }
        if retry_of.is_none() && rollout.plan.fix_forward.is_some() {
            self.take_over_failed_issue(&mut rollout).await?;
        }
        self.store.create(&rollout, &first).await?;
        self.enqueue_start(&rollout.id).await?;
        Ok(rollout)
    }

    /// A fix-forward rollout tells the issue of the failure it fixes: the
    /// target's newest rolled-back rollout with an issue in the same backlog.
    async fn take_over_failed_issue(&self, rollout: &mut Rollout) -> Result<(), EngineError> {
        let filter = ListFilter { target: Some(rollout.target().to_string()), limit: 10, ..ListFilter::default() };
        let failed = self.store.list(&filter).await?.into_iter().find(|r| {
            r.phase == crate::domain::rollout::Phase::RolledBack && r.backlog.issue().is_some() && r.spec.backlog == rollout.spec.backlog
        });
        if let Some((old, issue)) = failed.as_ref().and_then(|r| r.backlog.issue().map(|i| (r, i.clone()))) {
            rollout.fixes = Some(old.id.clone());
            rollout.backlog = BacklogState::Opened { issue, reported: Reported::default(), updating: None };
        }
        Ok(())
    }

    /// Enqueues the `Start` event (idempotent: same message id).
    pub async fn enqueue_start(&self, id: &RolloutId) -> Result<(), EngineError> {
        let msg = StepMessage::Event { rollout: id.clone(), event: Input::Start };
        self.queue.send(msg.to_out(None)).await?;
        Ok(())
    }

    /// Applies one event to a rollout and carries out what follows from it.
    pub async fn apply(&self, id: &RolloutId, event: Event) -> Result<Applied, EngineError> {
        self.run_rounds(id, vec![event], Rest::Inline).await
    }

    /// Carries out one step message and everything that follows from it.
    pub async fn handle(&self, message: StepMessage) -> Result<(), EngineError> {
        self.handle_with(message, Rest::Inline).await
    }

    /// Carries out one queue delivery: answers once the event is decided,
    /// routed and saved; what follows (measurements, backlog, channels and
    /// the rounds their results drive) goes on in the background pool, so
    /// the consumer is free for the next message. A crash meanwhile loses
    /// nothing the timer does not resume (those calls are recorded as issued).
    pub async fn handle_delivery(&self, message: StepMessage) -> Result<(), EngineError> {
        self.handle_with(message, Rest::Background).await
    }

    async fn handle_with(&self, message: StepMessage, rest: Rest) -> Result<(), EngineError> {
        match message {
            StepMessage::Event { rollout, event } => {
                let applied = self.run_rounds(&rollout, vec![event.into()], rest).await?;
                if let Outcome::Refused(refusal) = &applied.outcome {
                    tracing::info!(rollout = %rollout, reason = %refusal.reason, "input refused");
                }
                Ok(())
            }
            StepMessage::Wake { rollout, at } => {
                // What is due: a wait or a measurement (Wake), or a failed call's retry (Tick).
                let applied = self.run_rounds(&rollout, vec![Event::Wake, Event::Tick], rest).await?;
                // Early (a queue with coarser clocks) or a wait that moved: keep a wake-up scheduled.
                if applied.outcome != Outcome::Applied {
                    if let Some(next) = applied.rollout.next_visit().filter(|n| *n > self.clock.now()) {
                        let msg = StepMessage::Wake { rollout: rollout.clone(), at: next };
                        let mut out = msg.to_out(Some(next));
                        out.id = format!("{}:after:{}", out.id, at.timestamp_millis());
                        self.queue.send(out).await?;
                    }
                }
                Ok(())
            }
            StepMessage::Release { release, .. } => self.advance_release(&release, None).await.map(|_| ()),
            // A release spec posted straight to the queue starts a release.
            StepMessage::Start { spec, by, id } if crate::domain::release::spec::is_release(&spec) => {
                let (spec, _) = crate::ports::registry::validate_release(&spec, &self.env).map_err(|p| {
                    EngineError::Invalid(format!("start message has an invalid release spec: {}", p.to_string().replace('\n', "; ")))
                })?;
                self.create_release(spec, &by.into_actor(), id).await.map(|_| ())
            }
            StepMessage::Start { spec, by, id } => {
                let (spec, plan) = crate::ports::registry::validate(&spec, &self.env).map_err(|p| {
                    EngineError::Invalid(format!("start message has an invalid spec: {}", p.to_string().replace('\n', "; ")))
                })?;
                match (self.create(spec.clone(), plan, &by.into_actor(), id.clone(), None).await, id) {
                    (Ok(_), _) => Ok(()),
                    // A redelivered start: make sure the rollout is started, nothing more.
                    (Err(EngineError::Store(StoreError::AlreadyExists(_))), Some(existing)) => {
                        let (r, _) = self.store.load(&existing).await?.ok_or_else(|| EngineError::NotFound(existing.clone()))?;
                        if r.spec != spec {
                            return Err(EngineError::Invalid(format!("rollout id '{existing}' is taken by a different spec")));
                        }
                        self.enqueue_start(&existing).await
                    }
                    (Err(EngineError::Store(e @ StoreError::TargetBusy { .. })), _) => Err(EngineError::Invalid(e.to_string())),
                    (Err(e), _) => Err(e),
                }
            }
        }
    }

    /// The timer's sweep: every rollout whose sweep time has come gets a
    /// `Tick` — read from the store's due index, so a sweep with nothing due
    /// reads nothing else. Batches continue while they come back full, up to
    /// [`MAX_SWEEP_BATCHES`]; the next tick takes the rest.
    pub async fn sweep(&self) -> Result<SweepReport, EngineError> {
        let mut report = SweepReport::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_SWEEP_BATCHES {
            let due = self.store.due(self.clock.now(), DUE_BATCH).await?;
            let full = due.len() == DUE_BATCH;
            let fresh: Vec<RolloutId> = due.into_iter().filter(|id| seen.insert(id.clone())).collect();
            if fresh.is_empty() {
                break;
            }
            for id in fresh {
                report.visited += 1;
                match self.run_rounds(&id, vec![Event::Tick], Rest::Background).await {
                    Ok(a) if a.outcome == Outcome::Applied => report.acted += 1,
                    Ok(_) => {}
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(rollout = %id, error = %e, "tick failed");
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// The first round (decide, route, save) now; the rounds after it inline
    /// or in the background pool.
    async fn run_rounds(&self, id: &RolloutId, events: Vec<Event>, rest: Rest) -> Result<Applied, EngineError> {
        let first = self.locked_round(id, &events).await?;
        let outcome = first.outcome.clone();
        let rollout = match rest {
            Rest::Inline => self.follow_up(id, first).await?,
            Rest::Background => {
                let rollout = first.state.clone();
                self.follow_up_in_background(id, first).await;
                rollout
            }
        };
        Ok(Applied { rollout, outcome })
    }

    /// One round under the rollout's lock. The lock covers deciding, the
    /// router and the save — never the slow world after it (measurements,
    /// backlog, channels), so an alert or an abort waits for no outside call
    /// but the router.
    async fn locked_round(&self, id: &RolloutId, inputs: &[Event]) -> Result<Round, EngineError> {
        let lock = self.locks.get(id);
        let _guard = lock.lock().await;
        let round = self.decide_act_save(id, inputs).await?;
        if round.reconcile {
            self.reconcile(&round.state).await;
        }
        Ok(round)
    }

    /// The after-save work of `round` and the rounds its feedback drives.
    async fn follow_up(&self, id: &RolloutId, mut round: Round) -> Result<Rollout, EngineError> {
        for n in 1..=MAX_ROUNDS {
            if round.finished {
                self.nudge_release(&round.state).await;
                self.answer_pipeline_waits_later(&round.state);
            }
            let inputs = self.after_save(&round.state, round.post, round.wake_before).await;
            if inputs.is_empty() || n == MAX_ROUNDS {
                break;
            }
            round = self.locked_round(id, &inputs).await?;
        }
        Ok(round.state)
    }

    /// Waits until no follow-up runs in the background pool: for a caller
    /// that drives the queue itself and reads the effects (tests, replay).
    pub async fn settled(&self) {
        let _all = self.background.acquire_many(BACKGROUND_SLOTS as u32).await;
    }

    /// Hands the follow-up to the background pool (waiting for a slot when
    /// it is full); a failure there leaves a wake-up for the rollout.
    async fn follow_up_in_background(&self, id: &RolloutId, round: Round) {
        let Ok(slot) = self.background.clone().acquire_owned().await else {
            return;
        };
        let (engine, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.follow_up(&id, round).await {
                tracing::warn!(rollout = %id, error = %e, "follow-up failed; a wake-up resumes it");
                engine.wake_after_failure(&id).await;
            }
            drop(slot);
        });
    }

    /// A failed round loses its feedback (a measurement taken, an issue
    /// filed) and the wake-up it would have kept: without one the rollout
    /// waits for the timer's sweep, minutes away. This wake-up finds what
    /// is due again (the measurement is retaken; a filed issue is found).
    async fn wake_after_failure(&self, id: &RolloutId) {
        let at = self.clock.now() + chrono::Duration::from_std(WAKE_AFTER_FAILURE).unwrap_or_default();
        let msg = StepMessage::Wake { rollout: id.clone(), at };
        if let Err(e) = self.queue.send(msg.to_out(Some(at))).await {
            tracing::warn!(rollout = %id, error = %e, "could not schedule the wake-up; the timer sweep will catch up");
        }
    }

    async fn decide_act_save(&self, id: &RolloutId, inputs: &[Event]) -> Result<Round, EngineError> {
        let mut reconcile = false;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (loaded, etag) = self.store.load(id).await?.ok_or_else(|| EngineError::NotFound(id.clone()))?;
            let mut state = loaded.clone();
            let mut pending: VecDeque<(Event, bool)> = inputs.iter().cloned().map(|e| (e, false)).collect();
            let mut history = Vec::new();
            let mut post = Vec::new();
            let mut outcome = None;
            let mut acted_on_traffic = false;
            while let Some((event, is_feedback)) = pending.pop_front() {
                let d = decide(&state, event, self.clock.now());
                // The first input's outcome, unless a later input applies (a wake-up's Tick after its Wake).
                let applies_later = !is_feedback && d.outcome == Outcome::Applied;
                if outcome.is_none() || applies_later {
                    outcome = Some(d.outcome.clone());
                }
                if d.is_ignored() {
                    // A router result the state no longer expects: make the router match the state.
                    reconcile |= is_feedback;
                    // A person's refused request is still recorded.
                    history.extend(d.history);
                    state = d.next;
                    continue;
                }
                state = d.next;
                history.extend(d.history);
                for command in d.commands {
                    if command.is_traffic() {
                        acted_on_traffic = true;
                        pending.extend(self.set_traffic(&state, &command).await.into_iter().map(|e| (e, true)));
                    } else {
                        post.push(command);
                    }
                }
            }
            let outcome = outcome.unwrap_or(Outcome::Refused(Refusal { kind: RefusalKind::Conflict, reason: "no events".into() }));
            let wake_before = loaded.next_visit();
            if history.is_empty() && state == loaded {
                return Ok(Round { state, post, outcome, reconcile, wake_before, finished: false });
            }
            let finished = state.phase.is_terminal() && !loaded.phase.is_terminal();
            match self.store.save(&state, &etag, &history).await {
                Ok(_) => {
                    if self.metric_lines && finished {
                        metric_line(&state);
                    }
                    return Ok(Round { state, post, outcome, reconcile, wake_before, finished });
                }
                Err(StoreError::Conflict) => {
                    // Someone else wrote first: decide again on their state. If we already
                    // moved traffic on the stale decision, make the router match the winner.
                    reconcile |= acted_on_traffic;
                    tracing::debug!(rollout = %id, "stale ETag; deciding again");
                }
                // The store refuses the rows as they are (too large): the router has
                // moved, so the transition is kept without its details rather than lost.
                Err(StoreError::Corrupt(why)) if acted_on_traffic => {
                    tracing::warn!(rollout = %id, %why, "history too large to keep; saving it trimmed");
                    let trimmed: Vec<_> = history.into_iter().map(HistoryEntry::trimmed).collect();
                    match self.store.save(&state, &etag, &trimmed).await {
                        Ok(_) => return Ok(Round { state, post, outcome, reconcile, wake_before, finished }),
                        Err(StoreError::Conflict) => reconcile = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                // The store is briefly away after the router moved: try the save
                // again; if it stays away, the router is made to match what is saved.
                Err(e @ StoreError::Unavailable(_)) if acted_on_traffic => {
                    return self
                        .save_after_routing(Round { state, post, outcome, reconcile, wake_before, finished }, &loaded, &etag, &history, e)
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id.to_string()))
    }

    /// Retries a save the store refused as unavailable after the router moved.
    /// If it keeps failing, the router is put back to the saved state —
    /// unless it moved towards stable: a rollback is never undone, and the
    /// delivery that asked for it is retried and records it.
    async fn save_after_routing(
        &self,
        round: Round,
        loaded: &Rollout,
        etag: &crate::ports::store::Etag,
        history: &[HistoryEntry],
        first: StoreError,
    ) -> Result<Round, EngineError> {
        let mut last = first;
        for delay in SAVE_RETRY_DELAYS {
            tracing::warn!(rollout = %round.state.id, error = %last, "state not saved after the router moved; trying again");
            tokio::time::sleep(delay).await;
            match self.store.save(&round.state, etag, history).await {
                Ok(_) => return Ok(round),
                Err(StoreError::Unavailable(why)) => last = StoreError::Unavailable(why),
                // Someone else saved meanwhile: the caller decides again on their state.
                Err(e) => {
                    self.reconcile(loaded).await;
                    return Err(e.into());
                }
            }
        }
        let towards_stable = round.state.traffic.weight.percent() < loaded.traffic.weight.percent()
            || matches!(round.state.phase, Phase::RollingBack | Phase::RolledBack | Phase::Aborted);
        if !towards_stable {
            tracing::warn!(rollout = %round.state.id, "state not saved: putting the router back to the saved weight");
            self.reconcile(loaded).await;
        }
        Err(last.into())
    }
}

/// Prints a finished rollout's facts as one line on stdout: the Functions
/// host logs a custom handler's stdout at Information level (stderr lines
/// with "fail" or "error" in them become errors), and Application Insights
/// keeps them in `traces`. Written after the save, so a crash between the
/// two loses the line, never duplicates it.
fn metric_line(state: &Rollout) {
    use std::io::Write as _;
    let line = crate::domain::health::Facts::of(state).log_line();
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Where the work after a delivery's first round runs.
#[derive(Clone, Copy)]
enum Rest {
    /// Before the call returns (the API, which answers with the result).
    Inline,
    /// In the background pool (queue deliveries and the sweep).
    Background,
}

struct Round {
    state: Rollout,
    post: Vec<Command>,
    outcome: Outcome,
    reconcile: bool,
    /// The rollout's wake-up time before this round (already scheduled, if in the future).
    wake_before: Option<DateTime<Utc>>,
    /// Whether this round's save finished the rollout.
    finished: bool,
}
