//! The pure heart of Sluice: a rollout's state and the state machine that
//! moves it, `decide(state, event, now) -> (state', commands)`, with no I/O,
//! no clock and no randomness. Handlers load, decide, act and save around it.

mod analysis;
mod backlog;
mod command;
mod decide;
mod event;
mod history;
mod plan;
mod tally;

use crate::domain::format::StateFormat;
use crate::domain::ids::{Actor, RequestId, RolloutId, Weight};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use analysis::{judge, AnalysisRun, MetricRun, RunKind, RunStatus, SampleWait};
pub use backlog::{Attempt, BacklogState, LaterFailure, Reported};
pub use command::{Command, CommandKind, NotifyKind};
pub use decide::{decide, Decision, Outcome, Refusal, RefusalKind, HISTORY_ROWS_KEPT};
pub use event::{AlertInfo, CommandRef, Event, Input, IssueRef, MeasureOutcome, MeasurementKey, PipelineFailure};
pub use history::{Evidence, HistoryEntry, MeasurementRecord, Verdict};
pub use plan::{AnalysisPlan, ApprovalPlan, MetricPlan, Plan, Stage, StrategyKind};
pub use tally::{StepTime, Tally};

use crate::domain::spec::RolloutSpec;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Created; not started (or checking the error budget).
    Pending,
    /// Walking its stages.
    Progressing,
    /// Held: a pause until resumed, an alert, or an inconclusive analysis.
    Paused,
    /// Waiting for people.
    AwaitingApproval,
    /// Making the canary the new stable.
    Promoting,
    /// Putting traffic back on stable.
    RollingBack,
    /// Done: the canary is the new stable.
    Succeeded,
    /// Done: traffic is back on stable after a failure.
    RolledBack,
    /// Done: stopped by a person (or refused to start), traffic on stable.
    Aborted,
}

impl Phase {
    /// Whether nothing more will happen to the traffic.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Aborted)
    }

    /// Every phase, for tests and listings.
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::AwaitingApproval,
        Phase::Promoting,
        Phase::RollingBack,
        Phase::Succeeded,
        Phase::RolledBack,
        Phase::Aborted,
    ];

    /// The name used in URLs, storage and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::AwaitingApproval => "AwaitingApproval",
            Phase::Promoting => "Promoting",
            Phase::RollingBack => "RollingBack",
            Phase::Succeeded => "Succeeded",
            Phase::RolledBack => "RolledBack",
            Phase::Aborted => "Aborted",
        }
    }

    /// Parses [`Phase::as_str`] (case-insensitive).
    pub fn parse(text: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A traffic command waiting for the router to confirm it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingTraffic {
    /// SetWeight, Promote or RevertTraffic.
    pub kind: CommandKind,
    /// Command id of the latest attempt.
    pub id: u64,
    /// Attempts so far (1 after the first issue).
    pub attempts: u32,
    /// When the latest attempt was issued.
    pub issued_at: DateTime<Utc>,
    /// A router change made since then is this command's, so a retried
    /// slot swap is never done twice: when the first attempt was issued,
    /// or for a promotion when the rollout was created (see `first_since`).
    #[serde(default)]
    pub since: DateTime<Utc>,
    /// When it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
    /// The last error (redacted by the adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl PendingTraffic {
    /// The first attempt at a traffic command, issued `now`.
    pub fn first(kind: CommandKind, id: u64, now: DateTime<Utc>, since: DateTime<Utc>) -> Self {
        PendingTraffic { kind, id, attempts: 1, issued_at: now, since, failed_at: None, last_error: None }
    }
}

/// What the router should be doing for this rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficState {
    /// The canary weight the current phase requires.
    pub weight: Weight,
    /// The last weight the router confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<Weight>,
    /// Whether the promotion (swap) has been confirmed.
    pub promoted: bool,
    /// The command awaiting confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTraffic>,
    /// What the router said it cannot do or guarantee, as it said it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<String>,
    /// The canary's share of requests last observed, beside the weight asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedShare>,
    /// Where testers reach the canary before users do, once the router set it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewAddress>,
}

/// Where testers and the smoke check reach the canary at 0 %, as the router
/// gave it: an address, and headers a request must carry there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewAddress {
    /// Scheme and host (and any path prefix), without a trailing `/`.
    pub url: String,
    /// Headers that send a request there to the canary.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// How it works, for people (e.g. another way in for a browser).
    pub how: String,
}

impl PreviewAddress {
    /// A router's answer as the state keeps it (it comes from outside: a
    /// spec's local router, ARM, a cluster): an http(s) URL of at most 2000
    /// characters, at most 8 headers of at most 200, the words clipped and
    /// without control characters (they reach terminals and issues).
    pub fn checked(mut self) -> Result<PreviewAddress, String> {
        let url_ok = (self.url.starts_with("https://") || self.url.starts_with("http://"))
            && self.url.chars().count() <= 2000
            && !self.url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !url_ok {
            return Err("the router's preview address is not an http(s) URL of at most 2000 characters".into());
        }
        let long = |t: &String| t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control);
        if self.headers.len() > 8 || self.headers.iter().any(|(k, v)| long(k) || long(v)) {
            return Err("the router's preview headers are more than 8, or one is empty or over 200 characters".into());
        }
        let words: String = self.how.chars().filter(|c| !c.is_control()).collect();
        self.how = crate::domain::bounded::clip(&words, 500);
        Ok(self)
    }

    /// One line: the URL and the headers, as curl would take them.
    pub fn describe(&self) -> String {
        let headers: String = self.headers.iter().map(|(k, v)| format!(" -H '{k}: {v}'")).collect();
        format!("{}{headers} ({})", self.url, self.how)
    }
}

/// The split users got, as the last canary-vs-stable measurement counted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedShare {
    /// Percent of requests that reached the canary.
    pub share: f64,
    /// The weight asked for (and confirmed) at the time.
    pub requested: Weight,
    /// Requests counted, both sides.
    pub requests: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// Measurements in a row out of tolerance at this weight.
    #[serde(default)]
    pub off: u32,
    /// Whether the sustained difference was acted on (once per episode).
    #[serde(default)]
    pub acted: bool,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Who.
    pub by: Actor,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a rollout is paused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum PauseReason {
    /// A `pause` step without a duration.
    Step,
    /// An alert fired under `onAlert: pause`.
    Alert {
        /// The alert id.
        alert_id: String,
    },
    /// The observed split stayed apart from the weight asked for, under `onMismatch: pause`.
    SplitMismatch {
        /// Percent of requests that reached the canary.
        observed: f64,
        /// The weight asked for.
        requested: Weight,
    },
    /// A deployment window is closed (or a freeze is on): the start or the
    /// step waits for the opening.
    Window {
        /// When every policy is open again (the wake-up is scheduled for it).
        opens_at: DateTime<Utc>,
        /// The same, in the zone of the policy that holds, as people read it.
        opens_local: String,
        /// Which policy holds, and why (a freeze's reason, the window's hours).
        why: String,
        /// Whether the start itself waits (else the step at `stage`).
        begin: bool,
    },
    /// An analysis was inconclusive under `onInconclusive: pause` (or extensions ran out).
    Inconclusive {
        /// Which run.
        run: u32,
        /// Whether it was the stage's own analysis (promote then skips it).
        stage_analysis: bool,
    },
}

/// A pause in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseInfo {
    /// Why.
    #[serde(flatten)]
    pub reason: PauseReason,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Why the rollout ended badly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Stage it happened at.
    pub stage: usize,
    /// Phase it happened in.
    pub phase: Phase,
    /// Who, if a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Whether a person aborted (no backlog issue) rather than a failure.
    pub aborted: bool,
    /// Canary weight when it happened (users exposed to the canary).
    #[serde(default)]
    pub weight: Weight,
    /// Proof.
    pub evidence: Evidence,
    /// When traffic was confirmed back on stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<DateTime<Utc>>,
    /// Whether metrics confirmed that canary traffic stopped (absent: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// What the check saw last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    /// Failures after this one (each is added to the backlog issue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later: Vec<LaterFailure>,
}

/// A person's request that was refused, remembered by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRequest {
    /// The request's id.
    pub id: RequestId,
    /// Refused because of who asked (else because of the state).
    pub forbidden: bool,
    /// Why.
    pub reason: String,
}

/// Which release a rollout belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseLink {
    /// The release's id.
    pub id: RolloutId,
    /// The wave (0-based).
    pub wave: usize,
    /// The wave's name.
    pub wave_name: String,
}

/// A rollout: spec, plan and where it is. Serialized as the state row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The stored format (see [`crate::domain::format`]).
    #[serde(default)]
    pub format: StateFormat,
    /// Unique id.
    pub id: RolloutId,
    /// The spec as posted.
    pub spec: RolloutSpec,
    /// The compiled plan.
    pub plan: Plan,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who started it.
    pub created_by: Actor,
    /// The rollout this one retries, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<RolloutId>,
    /// The release it is one target of, if any (that release watches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseLink>,
    /// Phase.
    pub phase: Phase,
    /// Current stage index into `plan.stages`.
    pub stage: usize,
    /// Sequence number of the current wait; a `StepDue` for another is stale.
    pub seq: u64,
    /// When the current wait ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// Router state.
    pub traffic: TrafficState,
    /// Approvals at the current gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// Analysis runs, running and finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<AnalysisRun>,
    /// The pause in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseInfo>,
    /// The stage an Admin let through a closed deployment window (once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_override: Option<usize>,
    /// The failed rollout whose backlog issue this fix-forward rollout took
    /// over (the issue is told the fix started, and any failure of the fix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixes: Option<RolloutId>,
    /// Alerts deliberately left alone: they began before this fix-forward rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_alerts: Vec<String>,
    /// Alerts that fired while the rollout was active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
    /// Why it failed or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The backlog issue.
    #[serde(default)]
    pub backlog: BacklogState,
    /// Ids of people's requests already applied (duplicates are ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestId>,
    /// People's requests refused (by id), so a repeat gets the same answer
    /// without another history row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_requests: Vec<RefusedRequest>,
    /// Notification ids whose failure was already recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_notifications: Vec<u64>,
    /// Next command id.
    pub next_command_id: u64,
    /// Applied decisions.
    pub version: u64,
    /// History rows written.
    pub history_len: u64,
    /// Events past [`HISTORY_ROWS_KEPT`] that changed no phase, stage or
    /// weight, counted by cause instead of written; the next transition's
    /// row tells the count.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unrecorded: std::collections::BTreeMap<String, u64>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What its history adds up to (step times, exposure, approval wait),
    /// kept as it is written so metrics and reports need no history reads.
    #[serde(default)]
    pub tally: Tally,
}

impl Rollout {
    /// A new rollout in `Pending`, and its first history entry.
    pub fn new(id: RolloutId, spec: RolloutSpec, plan: Plan, created_by: Actor, now: DateTime<Utc>) -> (Rollout, HistoryEntry) {
        let rollout = Rollout {
            format: StateFormat,
            id,
            spec,
            plan,
            created_at: now,
            created_by: created_by.clone(),
            retry_of: None,
            release: None,
            phase: Phase::Pending,
            stage: 0,
            seq: 0,
            due_at: None,
            traffic: TrafficState::default(),
            approvals: Vec::new(),
            runs: Vec::new(),
            pause: None,
            window_override: None,
            fixes: None,
            ignored_alerts: Vec::new(),
            alerts: Vec::new(),
            failure: None,
            backlog: BacklogState::None,
            requests: Vec::new(),
            refused_requests: Vec::new(),
            failed_notifications: Vec::new(),
            next_command_id: 1,
            version: 1,
            history_len: 1,
            unrecorded: Default::default(),
            updated_at: now,
            finished_at: None,
            tally: Tally::default(),
        };
        let entry = HistoryEntry {
            seq: 1,
            at: now,
            from: Phase::Pending,
            to: Phase::Pending,
            stage: 0,
            weight: Weight::ZERO,
            cause: "Created".into(),
            by: Some(created_by.to_string()),
            summary: format!(
                "created: {} {} → {} ({})",
                rollout.spec.target.name,
                rollout.spec.target.stable.version,
                rollout.spec.target.canary.version,
                rollout.plan.summary()
            ),
            evidence: None,
            measurement: None,
        };
        (rollout, entry)
    }

    /// The target's name (the one-active-rollout key).
    pub fn target(&self) -> &str {
        &self.spec.target.name
    }

    /// The current stage, if any.
    pub fn current_stage(&self) -> Option<&Stage> {
        self.plan.stages.get(self.stage)
    }

    /// The metric plan a measurement key refers to.
    pub fn metric_plan(&self, key: &MeasurementKey) -> Option<&MetricPlan> {
        let run = self.runs.iter().find(|r| r.id == key.run)?;
        let analysis: Option<&AnalysisPlan> = match &run.kind {
            RunKind::Stage { stage } => match self.plan.stages.get(*stage) {
                Some(Stage::Analysis { analysis }) => Some(analysis),
                _ => None,
            },
            RunKind::Background => self.plan.background.as_ref(),
            RunKind::ErrorBudget => return self.plan.error_budget.as_ref().filter(|m| m.name == key.metric),
            RunKind::RollbackCheck => return self.plan.rollback_check.as_ref().filter(|m| m.name == key.metric),
        };
        analysis?.metrics.iter().find(|m| m.name == key.metric)
    }

    /// The metric a measurement runs: its plan, with a smoke check's probe
    /// sent to the preview address (and its headers) the router gave. A
    /// smoke check with no preview yet has nowhere to go.
    pub fn metric_to_run(&self, key: &MeasurementKey) -> Option<MetricPlan> {
        let plan = self.metric_plan(key)?;
        if !plan.query.starts_with(plan::PREVIEW_URL) {
            return Some(plan.clone());
        }
        let preview = self.traffic.preview.as_ref()?;
        let mut plan = plan.clone();
        plan.query = plan.query.replacen(plan::PREVIEW_URL, &preview.url, 1);
        if !preview.headers.is_empty() {
            plan.settings.insert(crate::domain::spec::PREVIEW_HEADERS_SETTING.into(), serde_json::json!(preview.headers));
        }
        Some(plan)
    }

    /// The query window of a measurement taken at `now`: the metric's
    /// interval, or the whole soak so far while a phase waits for enough
    /// requests — never reaching back before its run began (a step's run
    /// begins once its weight is confirmed), so traffic served at another
    /// weight, or by an earlier rollout, is not counted. One second at least.
    pub fn measurement_window(&self, key: &MeasurementKey, now: DateTime<Utc>) -> Option<u64> {
        let plan = self.metric_plan(key)?;
        let run = self.runs.iter().find(|r| r.id == key.run)?;
        let widened = run.metrics.iter().find(|m| m.name == key.metric).and_then(|m| m.window_ms);
        let since_start = u64::try_from((now - run.started_at).num_milliseconds()).unwrap_or(0).max(1_000);
        Some(widened.unwrap_or(plan.interval_ms).min(since_start))
    }

    /// Measurements due at or before `now`.
    pub fn due_measurements(&self, now: DateTime<Utc>) -> Vec<MeasurementKey> {
        let mut keys = Vec::new();
        for r in self.runs.iter().filter(|r| r.status == RunStatus::Running) {
            for m in r.metrics.iter().filter(|m| m.status == RunStatus::Running) {
                if m.next_at.map(|t| t <= now).unwrap_or(false) {
                    keys.push(MeasurementKey { run: r.id, metric: m.name.clone(), index: m.next_index });
                }
            }
        }
        keys
    }

    /// The earliest time something is due: the current wait or a measurement.
    /// The engine keeps one wake-up message scheduled for it.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        if self.phase.is_terminal() {
            return None;
        }
        let measurements = self
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .flat_map(|r| r.metrics.iter().filter(|m| m.status == RunStatus::Running).filter_map(|m| m.next_at));
        self.due_at.into_iter().chain(measurements).min()
    }

    /// When the rollout's wake-up message is due: its next wait or
    /// measurement, or a failed call's retry. Everything timed is driven by
    /// that message; the timer's sweep is only the safety net.
    pub fn next_visit(&self) -> Option<DateTime<Utc>> {
        self.next_wake().into_iter().chain(decide::retry_at(self)).min()
    }

    /// The earliest time the timer sweep can find work here (`None`: never,
    /// until something else happens). Stores index rollouts by it.
    pub fn sweep_at(&self) -> Option<DateTime<Utc>> {
        decide::sweep_at(self)
    }

    /// The keys alerts find this rollout by ([`crate::domain::alert_keys`]).
    pub fn alert_keys(&self) -> Vec<String> {
        crate::domain::alert_keys::target_keys(&self.spec.target.name, &self.spec.target.resource_ids)
    }

    /// What the rollout is waiting for, in words (for `status` and `watch`).
    pub fn waiting_for(&self, now: DateTime<Utc>) -> String {
        if self.phase.is_terminal() {
            return match &self.backlog {
                BacklogState::Opening { attempt: Attempt { attempts, last_error: Some(e), .. } } => {
                    format!("nothing (backlog issue not yet opened after {attempts} attempts: {e})")
                }
                BacklogState::Opening { .. } => "nothing (backlog issue being opened)".into(),
                BacklogState::Opened { updating: Some(Attempt { attempts, last_error: Some(e), .. }), .. } => {
                    format!("nothing (backlog comment not yet posted after {attempts} attempts: {e})")
                }
                BacklogState::Opened { updating: Some(_), .. } => "nothing (backlog comment being posted)".into(),
                _ => "nothing: finished".into(),
            };
        }
        if self.phase == Phase::RollingBack && self.traffic.pending.is_none() {
            if let Some(run) = self.runs.iter().find(|r| r.kind == RunKind::RollbackCheck && r.status == RunStatus::Running) {
                let checks = run.metrics.first().map(|m| m.next_index).unwrap_or(0);
                let max = self.plan.rollback_check.as_ref().and_then(|m| m.count).unwrap_or(0);
                return format!("metrics to show canary traffic stopped (check {}/{max})", checks + 1);
            }
        }
        if let Some(p) = &self.traffic.pending {
            let what = match p.kind {
                CommandKind::SetWeight => format!("router to apply {}%", self.traffic.weight),
                CommandKind::Promote => "router to complete the promotion".into(),
                CommandKind::Preview => "router to set up the preview".into(),
                _ => "router to put all traffic on stable".into(),
            };
            return match &p.last_error {
                Some(e) => format!("{what} (attempt {} failed: {e})", p.attempts),
                None => what,
            };
        }
        let left = |t: Option<DateTime<Utc>>| {
            t.map(|t| {
                let secs = (t - now).num_seconds().max(0) as u64;
                format!("{} left", crate::domain::spec::duration_text(secs * 1000))
            })
            .unwrap_or_default()
        };
        match (self.phase, self.current_stage()) {
            (Phase::Pending, _) => "start".into(),
            (Phase::Paused, _) => match self.pause.as_ref().map(|p| &p.reason) {
                Some(PauseReason::Alert { alert_id }) => format!("alert {alert_id} to resolve, or promote/abort"),
                Some(PauseReason::Inconclusive { .. }) => "a person: promote to continue, retry to re-measure, or abort".into(),
                Some(PauseReason::Window { opens_local, why, begin, .. }) => {
                    let what = if *begin { "start" } else { "next step" };
                    format!(
                        "the deployment window for the {what}, {}: opens {opens_local}; {why} (an Admin may override)",
                        left(self.due_at)
                    )
                }
                Some(PauseReason::SplitMismatch { observed, requested }) => {
                    format!("a person: {observed:.0}% of requests reach the canary, {requested}% was asked; promote to continue or abort")
                }
                _ => "a person to resume (promote or approve)".into(),
            },
            (Phase::AwaitingApproval, Some(Stage::Approval { gate })) => {
                let who = if gate.approvers.is_empty() { "anyone".to_string() } else { gate.approvers.join(", ") };
                let deadline = if self.due_at.is_some() { format!(", {}", left(self.due_at)) } else { String::new() };
                let look = match &self.traffic.preview {
                    Some(p) if self.traffic.weight == Weight::ZERO => format!("; the preview: {}", p.describe()),
                    _ => String::new(),
                };
                format!("approval {}/{} from {who}{deadline}{look}", self.approvals.len(), gate.min_approvers)
            }
            (_, Some(Stage::Pause { .. })) | (_, Some(Stage::ScaleDown { .. })) => format!("timer, {}", left(self.due_at)),
            (_, Some(Stage::Analysis { .. })) => {
                let run = self
                    .runs
                    .iter()
                    .rev()
                    .find(|r| r.status == RunStatus::Running && matches!(r.kind, RunKind::Stage { stage } if stage == self.stage));
                match run {
                    Some(r) => {
                        let parts: Vec<String> = r
                            .metrics
                            .iter()
                            .map(|m| {
                                let progress =
                                    format!("{} {}/{}", m.name, m.completed(), m.target.map(|t| t.to_string()).unwrap_or("∞".into()));
                                match &m.waiting {
                                    Some(w) => format!("{progress} ({})", w.describe()),
                                    None => progress,
                                }
                            })
                            .collect();
                        format!("analysis {}: {}", r.label, parts.join(", "))
                    }
                    None => "analysis".into(),
                }
            }
            _ => "next step".into(),
        }
    }
}

#[cfg(test)]
mod tests;
