//! Effects: carrying out the commands `decide` returned, one small function
//! per command kind, each answering with the feedback event its result is
//! (router confirmed, measured, issue opened, command failed) for the next
//! decision. Traffic commands run before the save (a rollback's weight 0
//! first of all); the rest run after it, in [`Engine::after_save`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Engine;
use crate::domain::rollout::{Command, CommandKind, CommandRef, Event, Evidence, IssueRef, NotifyKind, Phase, Reported, Rollout};
use crate::domain::rollout::{MeasureOutcome, MeasurementKey, PreviewAddress};
use crate::ports::backlog;
use crate::ports::metrics;
use crate::ports::notify;
use crate::ports::traffic;
use crate::shell::messages::StepMessage;

/// Longest a traffic command may take.
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the router may take to say what it cannot guarantee (best effort:
/// the step holds its rollout's lock meanwhile).
const CAVEATS_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest and longest a measurement may take (its interval, within these).
const MEASURE_MIN: Duration = Duration::from_secs(5);
const MEASURE_MAX: Duration = Duration::from_secs(30);
/// The longest a probe with its own timeout may take (`httpProbe` clamps its timeout to 60 s).
const PROBE_MAX: Duration = Duration::from_secs(61);
/// How long one backlog call (lookup and create, or comment) may take.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(30);

/// The announcements one step makes: the start (if the rollout began in
/// this step), the latest phase change, and an approval request.
#[derive(Default)]
struct Announcements {
    started: Option<(String, u64)>,
    /// A person's override of a deployment window: announced whatever follows it.
    overridden: Option<(String, u64)>,
    latest: Option<(NotifyKind, String, u64)>,
    approval: Option<u64>,
}

fn failed(kind: CommandKind, id: u64, error: String) -> Event {
    Event::CommandFailed { command: CommandRef { kind, id }, error }
}

impl Engine {
    /// Carries out a traffic command; its result is the router's answer,
    /// and with the first confirmed weight, what the router cannot guarantee.
    pub(super) async fn set_traffic(&self, state: &Rollout, command: &Command) -> Vec<Event> {
        let answer = self.route(state, command).await;
        let first = state.traffic.confirmed.is_none() && state.traffic.caveats.is_empty();
        if !(first && matches!(command, Command::SetWeight { .. }) && matches!(answer, Event::TrafficConfirmed { .. })) {
            return vec![answer];
        }
        let caveats = match traffic::build(&state.spec.target, &self.env) {
            Ok(router) => tokio::time::timeout(CAVEATS_TIMEOUT, router.caveats()).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut events = vec![answer];
        events.extend((!caveats.is_empty()).then_some(Event::RouterCaveats { caveats }));
        events
    }

    async fn route(&self, state: &Rollout, command: &Command) -> Event {
        let (kind, id) = match command {
            Command::SetWeight { id, .. } => (CommandKind::SetWeight, *id),
            Command::Promote { id, .. } => (CommandKind::Promote, *id),
            Command::RevertTraffic { id, .. } => (CommandKind::RevertTraffic, *id),
            Command::Preview { id } => (CommandKind::Preview, *id),
            _ => return Event::Tick,
        };
        let router = match traffic::build(&state.spec.target, &self.env) {
            Ok(r) => r,
            Err(e) => return failed(kind, id, e.to_string()),
        };
        let work = async {
            match command {
                Command::SetWeight { weight, .. } => router.set_weight(*weight).await.map(|w| Event::TrafficConfirmed { weight: w }),
                Command::Promote { since, .. } => router.promote(*since).await.map(|_| Event::Promoted),
                Command::Preview { .. } => match router.preview().await.map(PreviewAddress::checked) {
                    Ok(Ok(address)) => Ok(Event::PreviewReady { address }),
                    Ok(Err(refused)) => Err(traffic::TrafficError::Failed(refused)),
                    Err(e) => Err(e),
                },
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
                failed(kind, id, e.to_string())
            }
            Err(_) => failed(kind, id, format!("no answer within {}s", TRAFFIC_TIMEOUT.as_secs())),
        }
    }

    /// Makes the router agree with the saved state (after a lost race).
    pub(super) async fn reconcile(&self, state: &Rollout) {
        if state.traffic.pending.is_some() || state.phase == Phase::Succeeded || state.traffic.promoted {
            return;
        }
        let Ok(router) = traffic::build(&state.spec.target, &self.env) else { return };
        let wanted = state.traffic.weight;
        match router.current().await {
            Ok(current) if current.weight != wanted => {
                tracing::warn!(rollout = %state.id, router = %current.weight, %wanted, "router disagrees with the state; correcting");
                let result = if wanted == 0 {
                    router.revert(false, self.clock.now()).await.map(|_| ())
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

    /// Everything after the save: the backlog issue first (so messages can
    /// link it), then timers and measurements, then the announcements —
    /// phases passed through within one step are not announced one by one.
    /// Waits and measurements due now are taken at once; for the rest one
    /// wake-up message is kept scheduled at the rollout's earliest due time,
    /// so a step costs at most one queue send however many timers it starts.
    pub(super) async fn after_save(&self, state: &Rollout, post: Vec<Command>, wake_before: Option<DateTime<Utc>>) -> Vec<Event> {
        let now = self.clock.now();
        let mut feedback = Vec::new();
        let mut opened = None;
        for command in &post {
            match command {
                Command::OpenBacklogIssue { evidence, id } => {
                    let event = self.open_issue(state, evidence, *id).await;
                    if let Event::BacklogOpened { issue, .. } = &event {
                        opened = Some(issue.clone());
                    }
                    feedback.push(event);
                }
                Command::CommentBacklogIssue { issue, told, id } => feedback.push(self.comment_issue(state, issue, told, *id).await),
                _ => {}
            }
        }
        // Measurements are taken side by side (one slow backend delays none of
        // the others), and their results kept in the order decide asked.
        let due = post.iter().filter_map(|c| match c {
            Command::Measure { key, at } => Some(self.measure(state, key.clone(), *at, now)),
            _ => None,
        });
        let mut measured = futures::future::join_all(due).await.into_iter();
        let mut announcements = Announcements::default();
        for command in post {
            match command {
                Command::ScheduleStep { at, seq } => feedback.extend((at <= now).then_some(Event::StepDue { seq })),
                Command::Measure { .. } => feedback.extend(measured.next().flatten()),
                Command::ScaleDownPrevious { id } => feedback.extend(self.scale_down(state, id).await),
                Command::Notify { kind: NotifyKind::Started, summary, id, .. } => announcements.started = Some((summary, id)),
                Command::Notify { kind: NotifyKind::Overridden, summary, id, .. } => announcements.overridden = Some((summary, id)),
                Command::Notify { kind, summary, id, .. } => announcements.latest = Some((kind, summary, id)),
                // The approval request is its own message, whatever else changed;
                // it follows the phase-change message of the same step.
                Command::RequestApproval { id, .. } => announcements.approval = Some(id),
                Command::OpenBacklogIssue { .. }
                | Command::CommentBacklogIssue { .. }
                | Command::SetWeight { .. }
                | Command::Promote { .. }
                | Command::Preview { .. }
                | Command::RevertTraffic { .. } => {}
            }
        }
        feedback.extend(self.keep_wake_scheduled(state, &feedback, wake_before, now).await);
        feedback.extend(self.announce_all(state, announcements, opened.as_ref(), now).await);
        feedback
    }

    /// Takes a measurement that is due now (a later one waits for the wake-up).
    async fn measure(&self, state: &Rollout, key: MeasurementKey, at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Event> {
        if at > now {
            return None;
        }
        let planned = state.metric_plan(&key)?;
        let Some(plan) = state.metric_to_run(&key) else {
            let message = format!("{} probes the preview address, and the router gave none", planned.name);
            return Some(Event::Measured { key, outcome: MeasureOutcome::Error { message } });
        };
        let plan = &plan;
        let window = metrics::Window { ms: state.measurement_window(&key, now)?, end: None };
        // A measurement may take its interval (5 to 30 s), or a probe's own timeout and a
        // second: a backend that hangs is a provider error, counted as such, not a queue
        // consumer held for minutes.
        let probe =
            plan.settings.get("timeoutMs").and_then(serde_json::Value::as_u64).map(|t| Duration::from_millis(t) + Duration::from_secs(1));
        let budget = Duration::from_millis(plan.interval_ms).clamp(MEASURE_MIN, MEASURE_MAX).max(probe.unwrap_or_default().min(PROBE_MAX));
        let outcome = match tokio::time::timeout(budget, metrics::measure(plan, &state.spec.target, &self.env, window)).await {
            Ok(outcome) => outcome,
            Err(_) => MeasureOutcome::Error { message: format!("the metrics provider did not answer within {}s", budget.as_secs()) },
        };
        Some(Event::Measured { key, outcome })
    }

    /// Scales the previous version down after a promotion; only a failure is news.
    async fn scale_down(&self, state: &Rollout, id: u64) -> Option<Event> {
        let result = match traffic::build(&state.spec.target, &self.env) {
            Ok(router) => router.scale_down_previous().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        result.err().map(|error| failed(CommandKind::ScaleDownPrevious, id, error))
    }

    /// Keeps one wake-up message scheduled for the rollout's earliest due
    /// time (a wait, a measurement, a failed call's retry), or wakes it at
    /// once when something is already due.
    async fn keep_wake_scheduled(
        &self,
        state: &Rollout,
        feedback: &[Event],
        wake_before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Event> {
        let wake = state.next_visit()?;
        if wake <= now {
            // It came due while this round ran: take it now, unless this round already does.
            let taking = feedback.iter().any(|e| matches!(e, Event::Wake | Event::Tick | Event::Measured { .. } | Event::StepDue { .. }));
            let waiting = state.next_wake().is_some_and(|w| w <= now);
            return (!taking).then_some(if waiting { Event::Wake } else { Event::Tick });
        }
        if wake_before.map(|b| b == wake && b > now).unwrap_or(false) {
            return None; // already scheduled for exactly this time
        }
        let msg = StepMessage::Wake { rollout: state.id.clone(), at: wake };
        if let Err(e) = self.queue.send(msg.to_out(Some(wake))).await {
            tracing::warn!(rollout = %state.id, error = %e, "could not schedule the wake-up; the timer sweep will catch up");
        }
        None
    }

    /// Opens the backlog issue (or finds the one opened before).
    async fn open_issue(&self, state: &Rollout, evidence: &Evidence, id: u64) -> Event {
        match self.file_issue(state, evidence).await {
            Ok(filed) => {
                tracing::info!(rollout = %state.id, url = %filed.issue.url, created = filed.created, "backlog issue opened");
                // An issue found rather than written now may say less: what it
                // lacks goes into a comment — the failure itself too, when the
                // issue is the release's, opened by a pipeline's report.
                let reported = match (filed.created, filed.tells_failure) {
                    (true, _) => Reported::of(state),
                    (false, true) => Reported { failure: true, ..Reported::default() },
                    (false, false) => Reported::default(),
                };
                Event::BacklogOpened { issue: filed.issue, reported }
            }
            Err(error) => {
                tracing::warn!(rollout = %state.id, %error, "backlog issue not opened; will retry");
                failed(CommandKind::OpenBacklogIssue, id, error)
            }
        }
    }

    async fn file_issue(&self, state: &Rollout, evidence: &Evidence) -> Result<backlog::Filed, String> {
        let tracker = self.tracker(state)?;
        let history = self.store.history(&state.id).await.map_err(|e| e.to_string())?;
        let draft = backlog::draft(state, &history, evidence, &self.env.public_url);
        match tokio::time::timeout(BACKLOG_TIMEOUT, tracker.open(&draft)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the backlog did not answer within {}s", BACKLOG_TIMEOUT.as_secs())),
        }
    }

    /// Tells the issue what it does not say yet.
    async fn comment_issue(&self, state: &Rollout, issue: &IssueRef, told: &Reported, id: u64) -> Event {
        let reported = Reported::of(state);
        match self.post_comment(state, issue, told).await {
            Ok(()) => Event::BacklogCommented { id, reported },
            Err(error) => {
                tracing::warn!(rollout = %state.id, %error, "backlog comment not posted; will retry");
                failed(CommandKind::CommentBacklogIssue, id, error)
            }
        }
    }

    async fn post_comment(&self, state: &Rollout, issue: &IssueRef, told: &Reported) -> Result<(), String> {
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

    /// Sends the step's announcements in order: start, latest phase change, approval request.
    async fn announce_all(&self, state: &Rollout, a: Announcements, issue: Option<&IssueRef>, now: DateTime<Utc>) -> Vec<Event> {
        let mut feedback = Vec::new();
        let phase_news = a
            .started
            .map(|(summary, id)| (NotifyKind::Started, summary, id))
            .into_iter()
            .chain(a.overridden.map(|(summary, id)| (NotifyKind::Overridden, summary, id)))
            .chain(a.latest);
        for (kind, summary, id) in phase_news {
            feedback.extend(self.announce(state, kind, &summary, id, issue, now).await);
        }
        if let Some(id) = a.approval {
            feedback.extend(self.announce(state, NotifyKind::ApprovalNeeded, "", id, None, now).await);
        }
        feedback
    }

    /// Posts one message to every channel of the rollout; failures are reported once.
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
        (!errors.is_empty()).then(|| failed(CommandKind::Notify, id, errors.join("; ")))
    }
}
