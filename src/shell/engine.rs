//! The engine: the one place that loads a rollout, asks [`decide`] what to
//! do, carries the commands out through the ports and saves — the shell
//! around the pure core that every handler shares.
//!
//! Order of work for an event: load → decide → traffic commands (so a
//! rollback's weight 0 is applied before anything else) → their results
//! decided in memory → one conditional save of state and history → then the
//! rest (backlog issue, scheduled messages, measurements, notifications),
//! whose results are decided and saved in a further round. A stale ETag means
//! reload and decide again; a crash anywhere leaves state the timer resumes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::rollout::{
    decide, BacklogState, Command, CommandKind, CommandRef, Event, IssueRef, NotifyKind, Outcome, Phase, Plan, Reported, Rollout,
};
use crate::domain::spec::RolloutSpec;
use crate::ports::backlog;
use crate::ports::env::AdapterEnv;
use crate::ports::metrics;
use crate::ports::notify;
use crate::ports::queue::Queue;
use crate::ports::store::{ListFilter, Store, StoreError};
use crate::ports::traffic;
use crate::shell::messages::StepMessage;

/// Save attempts before giving up on a contended rollout (the message is retried).
const MAX_CONFLICT_RETRIES: usize = 8;
/// Decide-and-save rounds for one delivery (feedback from commands).
const MAX_ROUNDS: usize = 16;
/// Longest a traffic command may take.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one backlog call (lookup and create, or comment) may take.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(30);

/// The time, injectable.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What can go wrong carrying out work.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such rollout: the work can never succeed.
    #[error("no rollout with id '{0}'")]
    NotFound(String),
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
}

/// One mutex per rollout, so work on a rollout in this process is serial.
#[derive(Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}

/// Load, decide, act, save.
pub struct Engine {
    /// Rollout state.
    pub store: Arc<dyn Store>,
    /// Step messages.
    pub queue: Arc<dyn Queue>,
    /// What adapters are built with.
    pub env: AdapterEnv,
    /// The time.
    pub clock: Arc<dyn Clock>,
    locks: KeyedLocks,
}

/// A new rollout id: readable, sortable by time, unique.
pub fn new_rollout_id(target: &str, now: DateTime<Utc>) -> String {
    let short: String = target.chars().take(24).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{short}-{}-{}", now.format("%Y%m%d-%H%M%S"), &random[..6])
}

impl Engine {
    /// An engine over the given ports.
    pub fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, env: AdapterEnv, clock: Arc<dyn Clock>) -> Self {
        Engine { store, queue, env, clock, locks: KeyedLocks::default() }
    }

    /// Creates a rollout (refused if its target is busy) and enqueues its
    /// start. A retry keeps the backlog issue of the rollout it retries, so
    /// failing again adds to that issue instead of opening another.
    pub async fn create(
        &self,
        spec: RolloutSpec,
        plan: Plan,
        by: &str,
        id: Option<String>,
        retry_of: Option<&Rollout>,
    ) -> Result<Rollout, EngineError> {
        let now = self.clock.now();
        let id = id.unwrap_or_else(|| new_rollout_id(&spec.target.name, now));
        let (mut rollout, first) = Rollout::new(id, spec, plan, by.to_string(), now);
        if let Some(old) = retry_of {
            rollout.retry_of = Some(old.id.clone());
            if let Some(issue) = old.backlog.issue() {
                rollout.backlog = BacklogState::Opened { issue: issue.clone(), reported: Reported::default(), updating: None };
            }
        }
        self.store.create(&rollout, &first).await?;
        self.enqueue_start(&rollout.id).await?;
        Ok(rollout)
    }

    /// Enqueues the `Start` event (idempotent: same message id).
    pub async fn enqueue_start(&self, id: &str) -> Result<(), EngineError> {
        let msg = StepMessage::Event { rollout: id.to_string(), event: Event::Start };
        self.queue.send(msg.to_out(None)).await?;
        Ok(())
    }

    /// Applies one event to a rollout and carries out what follows from it.
    pub async fn apply(&self, id: &str, event: Event) -> Result<Applied, EngineError> {
        let lock = self.locks.get(id);
        let _guard = lock.lock().await;
        self.run_rounds(id, vec![event]).await
    }

    /// Carries out one step message.
    pub async fn handle(&self, message: StepMessage) -> Result<(), EngineError> {
        match message {
            StepMessage::Event { rollout, event } => {
                let applied = self.apply(&rollout, event).await?;
                if let Outcome::Ignored(reason) = &applied.outcome {
                    tracing::debug!(rollout = %rollout, %reason, "event ignored");
                }
                Ok(())
            }
            StepMessage::Wake { rollout, at } => {
                let applied = self.apply(&rollout, Event::Wake).await?;
                // Early (a queue with coarser clocks) or a wait that moved: keep a wake-up scheduled.
                if applied.outcome != Outcome::Applied {
                    if let Some(next) = applied.rollout.next_wake().filter(|n| *n > self.clock.now()) {
                        let msg = StepMessage::Wake { rollout: rollout.clone(), at: next };
                        let mut out = msg.to_out(Some(next));
                        out.id = format!("{}:after:{}", out.id, at.timestamp_millis());
                        self.queue.send(out).await?;
                    }
                }
                Ok(())
            }
            StepMessage::Start { spec, by, id } => {
                let (spec, plan) = crate::domain::spec::validate(&spec, &crate::ports::registry::names()).map_err(|p| {
                    EngineError::Invalid(format!("start message has an invalid spec: {}", p.to_string().replace('\n', "; ")))
                })?;
                match self.create(spec.clone(), plan, &by, id.clone(), None).await {
                    Ok(_) => Ok(()),
                    // A redelivered start: make sure the rollout is started, nothing more.
                    Err(EngineError::Store(StoreError::AlreadyExists(existing))) => {
                        let (r, _) = self.store.load(&existing).await?.ok_or_else(|| EngineError::NotFound(existing.clone()))?;
                        if r.spec != spec {
                            return Err(EngineError::Invalid(format!("rollout id '{existing}' is taken by a different spec")));
                        }
                        self.enqueue_start(&existing).await
                    }
                    Err(EngineError::Store(e @ StoreError::TargetBusy { .. })) => Err(EngineError::Invalid(e.to_string())),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The timer's sweep: every rollout with something possibly due gets a `Tick`.
    pub async fn sweep(&self) -> Result<SweepReport, EngineError> {
        let rollouts = self.store.list(&ListFilter { needs_sweep: true, ..ListFilter::default() }).await?;
        let mut report = SweepReport { visited: rollouts.len(), ..SweepReport::default() };
        for r in rollouts {
            match self.apply(&r.id, Event::Tick).await {
                Ok(a) if a.outcome == Outcome::Applied => report.acted += 1,
                Ok(_) => {}
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(rollout = %r.id, error = %e, "tick failed");
                }
            }
        }
        Ok(report)
    }

    async fn run_rounds(&self, id: &str, events: Vec<Event>) -> Result<Applied, EngineError> {
        let mut inputs = events;
        let mut first: Option<Outcome> = None;
        let mut last: Option<Rollout> = None;
        for _ in 0..MAX_ROUNDS {
            if inputs.is_empty() {
                break;
            }
            let round = self.decide_act_save(id, &inputs).await?;
            first.get_or_insert(round.outcome);
            if round.reconcile {
                self.reconcile(&round.state).await;
            }
            inputs = self.act_after_save(&round.state, round.post, round.wake_before).await;
            last = Some(round.state);
        }
        match (last, first) {
            (Some(rollout), Some(outcome)) => Ok(Applied { rollout, outcome }),
            _ => Err(EngineError::Invalid("nothing to apply".into())),
        }
    }

    async fn decide_act_save(&self, id: &str, inputs: &[Event]) -> Result<Round, EngineError> {
        let mut reconcile = false;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (loaded, etag) = self.store.load(id).await?.ok_or_else(|| EngineError::NotFound(id.to_string()))?;
            let mut state = loaded.clone();
            let mut pending: VecDeque<(Event, bool)> = inputs.iter().cloned().map(|e| (e, false)).collect();
            let mut history = Vec::new();
            let mut post = Vec::new();
            let mut outcome = None;
            let mut acted_on_traffic = false;
            while let Some((event, is_feedback)) = pending.pop_front() {
                let d = decide(&state, event, self.clock.now());
                outcome.get_or_insert_with(|| d.outcome.clone());
                if d.is_ignored() {
                    // A router result the state no longer expects: make the router match the state.
                    reconcile |= is_feedback;
                    continue;
                }
                state = d.next;
                history.extend(d.history);
                for command in d.commands {
                    if command.is_traffic() {
                        acted_on_traffic = true;
                        pending.push_back((self.act_traffic(&state, &command).await, true));
                    } else {
                        post.push(command);
                    }
                }
            }
            let outcome = outcome.unwrap_or(Outcome::Ignored("no events".into()));
            let wake_before = loaded.next_wake();
            if history.is_empty() && state == loaded {
                return Ok(Round { state, post, outcome, reconcile, wake_before });
            }
            match self.store.save(&state, &etag, &history).await {
                Ok(_) => return Ok(Round { state, post, outcome, reconcile, wake_before }),
                Err(StoreError::Conflict) => {
                    // Someone else wrote first: decide again on their state. If we already
                    // moved traffic on the stale decision, make the router match the winner.
                    reconcile |= acted_on_traffic;
                    tracing::debug!(rollout = %id, "stale ETag; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id.to_string()))
    }

    /// Makes the router agree with the saved state (after a lost race).
    async fn reconcile(&self, state: &Rollout) {
        if state.traffic.pending.is_some() || state.phase == Phase::Succeeded || state.traffic.promoted {
            return;
        }
        let Ok(router) = traffic::build(&state.spec.target, &self.env) else { return };
        let wanted = state.traffic.weight;
        match router.current().await {
            Ok(current) if current.weight != wanted => {
                tracing::warn!(rollout = %state.id, router = current.weight, wanted, "router disagrees with the state; correcting");
                let result = if wanted == 0 {
                    router.revert(false, Utc::now()).await.map(|_| ())
                } else {
                    router.set_weight(wanted).await.map(|_| ())
                };
                if let Err(e) = result {
                    tracing::warn!(rollout = %state.id, error = %e, "could not correct the router; the timer will retry");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(rollout = %state.id, error = %e, "could not read the router"),
        }
    }

    async fn act_traffic(&self, state: &Rollout, command: &Command) -> Event {
        let (kind, id) = match command {
            Command::SetWeight { id, .. } => (CommandKind::SetWeight, *id),
            Command::Promote { id, .. } => (CommandKind::Promote, *id),
            Command::RevertTraffic { id, .. } => (CommandKind::RevertTraffic, *id),
            _ => return Event::Tick,
        };
        let failed = |error: String| Event::CommandFailed { command: CommandRef { kind, id }, error };
        let router = match traffic::build(&state.spec.target, &self.env) {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        let work = async {
            match command {
                Command::SetWeight { weight, .. } => router.set_weight(*weight).await.map(|w| Event::TrafficConfirmed { weight: w }),
                Command::Promote { since, .. } => router.promote(*since).await.map(|_| Event::Promoted),
                Command::RevertTraffic { undo_promotion, since, .. } => {
                    router.revert(*undo_promotion, *since).await.map(|w| Event::TrafficConfirmed { weight: w })
                }
                _ => Ok(Event::Tick),
            }
        };
        match tokio::time::timeout(TRAFFIC_TIMEOUT, work).await {
            Ok(Ok(event)) => {
                tracing::info!(rollout = %state.id, command = command.name(), "router applied");
                event
            }
            Ok(Err(e)) => {
                tracing::warn!(rollout = %state.id, command = command.name(), error = %e, "router failed");
                failed(e.to_string())
            }
            Err(_) => failed(format!("no answer within {}s", TRAFFIC_TIMEOUT.as_secs())),
        }
    }

    /// Everything after the save: the backlog issue first (so messages can
    /// link it), then timers and measurements, then the announcements: the
    /// start (if the rollout began in this step) and the latest phase change
    /// — phases passed through within one step are not announced one by one.
    /// Waits and measurements due now are taken at once; for the rest one
    /// wake-up message is kept scheduled at the rollout's earliest due time,
    /// so a step costs at most one queue send however many timers it starts.
    async fn act_after_save(&self, state: &Rollout, post: Vec<Command>, wake_before: Option<DateTime<Utc>>) -> Vec<Event> {
        let mut feedback = Vec::new();
        let mut opened: Option<IssueRef> = None;
        let now = self.clock.now();
        for command in &post {
            match command {
                Command::OpenBacklogIssue { evidence, id } => match self.open_issue(state, evidence).await {
                    Ok(filed) => {
                        tracing::info!(rollout = %state.id, url = %filed.issue.url, created = filed.created, "backlog issue opened");
                        // An issue found rather than written now may say less: what it
                        // lacks beyond the failure goes into a comment.
                        let reported = if filed.created { Reported::of(state) } else { Reported { failure: true, ..Reported::default() } };
                        opened = Some(filed.issue.clone());
                        feedback.push(Event::BacklogOpened { issue: filed.issue, reported });
                    }
                    Err(error) => {
                        tracing::warn!(rollout = %state.id, %error, "backlog issue not opened; will retry");
                        feedback.push(Event::CommandFailed { command: CommandRef { kind: CommandKind::OpenBacklogIssue, id: *id }, error });
                    }
                },
                Command::CommentBacklogIssue { issue, told, id } => {
                    let reported = Reported::of(state);
                    match self.comment_issue(state, issue, told).await {
                        Ok(()) => feedback.push(Event::BacklogCommented { id: *id, reported }),
                        Err(error) => {
                            tracing::warn!(rollout = %state.id, %error, "backlog comment not posted; will retry");
                            feedback.push(Event::CommandFailed {
                                command: CommandRef { kind: CommandKind::CommentBacklogIssue, id: *id },
                                error,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        let mut started: Option<(NotifyKind, String, u64)> = None;
        let mut announcement: Option<(NotifyKind, String, u64)> = None;
        let mut approval: Option<u64> = None;
        for command in post {
            match command {
                Command::ScheduleStep { at, seq } => {
                    if at <= now {
                        feedback.push(Event::StepDue { seq });
                    }
                }
                Command::Measure { key, at } => {
                    if at <= now {
                        if let Some(plan) = state.metric_plan(&key) {
                            let outcome = metrics::measure(plan, &state.spec.target, &self.env).await;
                            feedback.push(Event::Measured { key, outcome });
                        }
                    }
                }
                Command::ScaleDownPrevious { id } => {
                    let result = match traffic::build(&state.spec.target, &self.env) {
                        Ok(router) => router.scale_down_previous().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(error) = result {
                        feedback.push(Event::CommandFailed { command: CommandRef { kind: CommandKind::ScaleDownPrevious, id }, error });
                    }
                }
                Command::Notify { kind: NotifyKind::Started, summary, id, .. } => started = Some((NotifyKind::Started, summary, id)),
                Command::Notify { kind, summary, id, .. } => announcement = Some((kind, summary, id)),
                // The approval request is its own message, whatever else changed;
                // it follows the phase-change message of the same step.
                Command::RequestApproval { id, .. } => approval = Some(id),
                Command::OpenBacklogIssue { .. }
                | Command::CommentBacklogIssue { .. }
                | Command::SetWeight { .. }
                | Command::Promote { .. }
                | Command::RevertTraffic { .. } => {}
            }
        }
        match state.next_wake() {
            // Something is already due (it came due while this round ran): take it now.
            Some(wake)
                if wake <= now && !feedback.iter().any(|e| matches!(e, Event::Wake | Event::Measured { .. } | Event::StepDue { .. })) =>
            {
                feedback.push(Event::Wake);
            }
            Some(wake) if wake > now && !wake_before.map(|b| b == wake && b > now).unwrap_or(false) => {
                let msg = StepMessage::Wake { rollout: state.id.clone(), at: wake };
                if let Err(e) = self.queue.send(msg.to_out(Some(wake))).await {
                    tracing::warn!(rollout = %state.id, error = %e, "could not schedule the wake-up; the timer sweep will catch up");
                }
            }
            _ => {}
        }
        for (kind, summary, id) in started.into_iter().chain(announcement) {
            feedback.extend(self.announce(state, kind, &summary, id, opened.as_ref(), now).await);
        }
        if let Some(id) = approval {
            feedback.extend(self.announce(state, NotifyKind::ApprovalNeeded, "", id, None, now).await);
        }
        feedback
    }

    async fn open_issue(&self, state: &Rollout, evidence: &crate::domain::rollout::Evidence) -> Result<backlog::Filed, String> {
        let tracker = self.tracker(state)?;
        let history = self.store.history(&state.id).await.map_err(|e| e.to_string())?;
        let draft = backlog::draft(state, &history, evidence, &self.env.public_url);
        match tokio::time::timeout(BACKLOG_TIMEOUT, tracker.open(&draft)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the backlog did not answer within {}s", BACKLOG_TIMEOUT.as_secs())),
        }
    }

    async fn comment_issue(&self, state: &Rollout, issue: &IssueRef, told: &Reported) -> Result<(), String> {
        let tracker = self.tracker(state)?;
        let history = self.store.history(&state.id).await.map_err(|e| e.to_string())?;
        let comment = backlog::update(state, &history, told, &self.env.public_url);
        match tokio::time::timeout(BACKLOG_TIMEOUT, tracker.comment(issue, &comment)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the backlog did not answer within {}s", BACKLOG_TIMEOUT.as_secs())),
        }
    }

    fn tracker(&self, state: &Rollout) -> Result<std::sync::Arc<dyn backlog::Backlog>, String> {
        let Some(target) = &state.spec.backlog else { return Err("no backlog configured".into()) };
        backlog::build(&target.provider, &target.settings, &self.env).map_err(|e| e.to_string())
    }

    async fn announce(
        &self,
        state: &Rollout,
        kind: NotifyKind,
        summary: &str,
        id: u64,
        issue: Option<&IssueRef>,
        now: DateTime<Utc>,
    ) -> Option<Event> {
        if state.spec.notifications.is_empty() {
            return None;
        }
        let message = notify::compose(kind, state, summary, issue, &self.env.public_url, now);
        let mut errors = Vec::new();
        for channel in &state.spec.notifications {
            let result = match notify::build(&channel.provider, &channel.settings, &self.env) {
                Ok(n) => notify::send_with_retries(n.as_ref(), &message).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!(rollout = %state.id, channel = %channel.provider, error = %e, "notification failed");
                errors.push(format!("{}: {e}", channel.provider));
            }
        }
        (!errors.is_empty())
            .then(|| Event::CommandFailed { command: CommandRef { kind: CommandKind::Notify, id }, error: errors.join("; ") })
    }
}

struct Round {
    state: Rollout,
    post: Vec<Command>,
    outcome: Outcome,
    reconcile: bool,
    /// The rollout's wake-up time before this round (already scheduled, if in the future).
    wake_before: Option<DateTime<Utc>>,
}
