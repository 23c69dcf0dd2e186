//! Events: everything that can happen to a rollout, from people, alerts,
//! timers, measurements and the results of commands carried out.

use crate::domain::ids::{Actor, RequestId, Weight};
use crate::domain::parse::FieldError;
use crate::domain::stats::{Histogram, Proportion};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::command::CommandKind;

/// Identifies one measurement: the `index`-th of `metric` in analysis run `run`.
/// Carried by `Measure` and `Measured` so duplicates and stale results are recognised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementKey {
    /// Analysis run id within the rollout.
    pub run: u32,
    /// Metric name within the run.
    pub metric: String,
    /// Zero-based measurement number.
    pub index: u32,
}

/// What a metric provider answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum MeasureOutcome {
    /// A value for the canary (and the stable baseline when asked for).
    Value {
        /// The canary's value.
        canary: f64,
        /// The stable version's value, for baseline comparisons.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stable: Option<f64>,
        /// Samples behind the canary value, when the provider knows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<u64>,
    },
    /// Failures and requests per side, for the error-rate judge.
    Proportions {
        /// The canary's.
        canary: Proportion,
        /// The stable version's.
        stable: Proportion,
    },
    /// Duration buckets per side, for the latency judge.
    Histograms {
        /// The canary's.
        canary: Histogram,
        /// The stable version's.
        stable: Histogram,
    },
    /// The query matched nothing.
    NoData,
    /// The provider could not decide (e.g. the baseline was missing).
    Inconclusive {
        /// Why.
        reason: String,
    },
    /// The provider failed (counts toward the consecutive-error limit).
    Error {
        /// What went wrong.
        message: String,
    },
}

/// An alert as the core sees it, whatever system sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertInfo {
    /// The alert's id at its source.
    pub id: String,
    /// The rule that fired.
    pub rule: String,
    /// Severity as the source says it (`Sev1`, `critical`).
    #[serde(default)]
    pub severity: String,
    /// One line on what happened.
    #[serde(default)]
    pub summary: String,
    /// Where it came from (`Azure Monitor`, `Alertmanager`).
    #[serde(default)]
    pub source: String,
    /// When it fired, as the source said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    /// A link to the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// A failed stage of the release pipeline (build, deploy, smoke test), as
/// the pipeline reports it: the release is bad whatever the metrics say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, try_from = "PipelineFailureWire")]
pub struct PipelineFailure {
    /// The stage or job that failed, as the pipeline names it.
    pub stage: String,
    /// Who reported it (the pipeline's identity or name).
    pub by: Actor,
    /// A link to the pipeline run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    /// The end of the failed step's log, as passed (bounded at the edge).
    #[serde(default)]
    pub excerpt: String,
}

/// A [`PipelineFailure`] as it arrives, before its rules are checked.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PipelineFailureWire {
    /// The stage or job that failed (1 to 100 printable characters).
    stage: String,
    /// Who reported it.
    by: Actor,
    /// A link to the pipeline run (http or https).
    #[serde(default)]
    run_url: Option<String>,
    /// The end of the failed step's log (its last 60 lines are kept, credentials scrubbed).
    #[serde(default)]
    excerpt: String,
}

impl TryFrom<PipelineFailureWire> for PipelineFailure {
    type Error = FieldError;
    fn try_from(w: PipelineFailureWire) -> Result<Self, FieldError> {
        PipelineFailure::new(&w.stage, w.by, w.run_url.as_deref(), &w.excerpt)
    }
}

/// Longest stage name.
pub const STAGE_MAX: usize = 100;
/// Most characters of log excerpt kept (its end: where the error is).
pub const EXCERPT_MAX_CHARS: usize = 6000;
/// Most lines of log excerpt kept.
pub const EXCERPT_MAX_LINES: usize = 60;

impl PipelineFailure {
    /// A failure report checked at the edge: a stage name of printable
    /// characters, an http(s) run link, and the excerpt's last lines with
    /// anything credential-shaped replaced.
    pub fn new(stage: &str, by: Actor, run_url: Option<&str>, excerpt: &str) -> Result<Self, FieldError> {
        let invalid = |field: &str, message: String| FieldError { field: field.into(), message };
        let stage = stage.trim();
        if stage.is_empty() || stage.chars().count() > STAGE_MAX || stage.chars().any(char::is_control) {
            return Err(invalid("stage", format!("must be 1 to {STAGE_MAX} printable characters")));
        }
        let run_url = run_url.map(str::trim).filter(|u| !u.is_empty());
        if let Some(url) = run_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() > 2000 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid("runUrl", "must be an http(s) URL without spaces, up to 2000 characters".into()));
            }
        }
        Ok(PipelineFailure {
            stage: stage.to_string(),
            by,
            run_url: run_url.map(crate::domain::redact::secrets),
            excerpt: crate::domain::redact::secrets(&tail(excerpt)),
        })
    }

    /// The key that makes a repeated report of the same stage a duplicate.
    pub fn key(&self) -> String {
        format!("pipeline:{}", self.stage)
    }
}

/// The last [`EXCERPT_MAX_LINES`] lines of a log, at most [`EXCERPT_MAX_CHARS`] characters.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.trim_end().lines().collect();
    let kept = lines.get(lines.len().saturating_sub(EXCERPT_MAX_LINES)..).unwrap_or(&[]).join("\n");
    let count = kept.chars().count();
    kept.chars().skip(count.saturating_sub(EXCERPT_MAX_CHARS)).collect()
}

/// A reference to an issued command, so its failure report is matched to it
/// (and a duplicate report recognised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRef {
    /// Which command.
    pub kind: CommandKind,
    /// The id it was issued with.
    pub id: u64,
}

/// The backlog issue opened for a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueRef {
    /// Provider-specific id (`42`, `org/repo#42`).
    pub id: String,
    /// Where a person reads it.
    pub url: String,
}

/// What may arrive from outside — a pipeline, a person, an alert — as a
/// queue message or a request. The engine's own feedback (traffic
/// confirmed, measured, promoted, command failed, backlog results) and its
/// timers are not here: they can never be deserialised from the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Input {
    /// Begin (the rollout exists; the first step message).
    Start,
    /// A person approves the current gate (or resumes a pause).
    #[serde(rename_all = "camelCase")]
    Approved {
        /// Who.
        by: Actor,
        /// The step (0-based) the person was looking at; stale if the rollout moved on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// Idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
    },
    /// A person rejects: roll back.
    #[serde(rename_all = "camelCase")]
    Rejected {
        /// Who.
        by: Actor,
        /// Why.
        #[serde(default)]
        reason: String,
        /// The step (0-based) the person was looking at; stale if the rollout moved on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// Idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
    },
    /// A monitoring alert on the target fired.
    #[serde(rename_all = "camelCase")]
    AlertFired {
        /// The alert.
        alert: AlertInfo,
    },
    /// That alert resolved.
    #[serde(rename_all = "camelCase")]
    AlertResolved {
        /// Its id.
        alert_id: String,
    },
    /// A person stops the rollout and goes back to stable (no backlog issue).
    #[serde(rename_all = "camelCase")]
    AbortRequested {
        /// Who.
        by: Actor,
        /// Why.
        #[serde(default)]
        reason: String,
        /// Idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
    },
    /// A person skips ahead: the current pause, or (`full`) to promotion.
    #[serde(rename_all = "camelCase")]
    PromoteRequested {
        /// Who.
        by: Actor,
        /// Skip every remaining stage.
        #[serde(default)]
        full: bool,
        /// The step (0-based) the person was looking at; stale if the rollout moved on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// Idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
    },
    /// A person retries: re-measure a paused stage, or re-drive a stuck rollback or backlog call.
    #[serde(rename_all = "camelCase")]
    RetryRequested {
        /// Who.
        by: Actor,
        /// Idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestId>,
    },
    /// A stage of the release pipeline failed: roll back (whatever `onAlert` says).
    #[serde(rename_all = "camelCase")]
    ReleaseFailed {
        /// What failed, where.
        failure: PipelineFailure,
    },
}

impl Input {
    /// The input's name, as recorded in history.
    pub fn kind(&self) -> &'static str {
        Event::from(self.clone()).kind()
    }

    /// Whether a person is behind it (and so an identity must be trusted).
    pub fn is_persons(&self) -> bool {
        !matches!(self, Input::Start | Input::AlertFired { .. } | Input::AlertResolved { .. } | Input::ReleaseFailed { .. })
    }
}

impl From<Input> for Event {
    fn from(input: Input) -> Event {
        match input {
            Input::Start => Event::Start,
            Input::Approved { by, stage, request } => Event::Approved { by, stage, request },
            Input::Rejected { by, reason, stage, request } => Event::Rejected { by, reason, stage, request },
            Input::AlertFired { alert } => Event::AlertFired { alert },
            Input::AlertResolved { alert_id } => Event::AlertResolved { alert_id },
            Input::AbortRequested { by, reason, request } => Event::AbortRequested { by, reason, request },
            Input::PromoteRequested { by, full, stage, request } => Event::PromoteRequested { by, full, stage, request },
            Input::RetryRequested { by, request } => Event::RetryRequested { by, request },
            Input::ReleaseFailed { failure } => Event::ReleaseFailed { failure },
        }
    }
}

impl Event {
    /// The event with every outside string bounded ([`crate::domain::bounded`]):
    /// alert texts, reasons, provider, router and tracker errors, links.
    pub fn bounded(mut self) -> Event {
        use crate::domain::bounded::{cap_in_place, CAVEATS, MESSAGE_CHARS, NAME_CHARS};
        match &mut self {
            Event::Measured { outcome: MeasureOutcome::Inconclusive { reason: text }, .. }
            | Event::Measured { outcome: MeasureOutcome::Error { message: text }, .. }
            | Event::Rejected { reason: text, .. }
            | Event::AbortRequested { reason: text, .. }
            | Event::OverrideRequested { reason: text, .. }
            | Event::CommandFailed { error: text, .. } => cap_in_place(text, MESSAGE_CHARS),
            Event::AlertFired { alert } => {
                for name in [&mut alert.id, &mut alert.rule, &mut alert.severity, &mut alert.source] {
                    cap_in_place(name, NAME_CHARS);
                }
                cap_in_place(&mut alert.summary, MESSAGE_CHARS);
                // A link goes into issues and messages as a link: only a web one
                // (no `javascript:`, `file:` or `data:`), and one a cut would not break.
                let web = |l: &String| {
                    let lower = l.to_ascii_lowercase();
                    (lower.starts_with("https://") || lower.starts_with("http://")) && l.chars().count() <= MESSAGE_CHARS
                };
                alert.link = alert.link.take().filter(web);
            }
            Event::AlertResolved { alert_id } => cap_in_place(alert_id, NAME_CHARS),
            Event::RouterCaveats { caveats } => {
                caveats.truncate(CAVEATS);
                caveats.iter_mut().for_each(|c| cap_in_place(c, MESSAGE_CHARS));
            }
            Event::BacklogOpened { issue, .. } => {
                cap_in_place(&mut issue.id, NAME_CHARS);
                cap_in_place(&mut issue.url, MESSAGE_CHARS);
            }
            Event::ReleaseFailed { failure } => {
                if let Some(url) = &mut failure.run_url {
                    cap_in_place(url, MESSAGE_CHARS);
                }
            }
            _ => {}
        }
        self
    }
}

/// Something that happened: an [`Input`] from outside, the rollout's own
/// timers, or the result of a command the engine carried out. Never
/// deserialised: only [`Input`] comes off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin (the first step message).
    Start,
    /// A scheduled wait ended; `seq` names the wait so a late one is ignored.
    StepDue {
        /// The wait's sequence number.
        seq: u64,
    },
    /// A measurement was taken.
    Measured {
        /// Which one.
        key: MeasurementKey,
        /// What came back.
        outcome: MeasureOutcome,
    },
    /// A person approved.
    Approved {
        /// Who.
        by: Actor,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// A person rejected.
    Rejected {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// A monitoring alert on the target fired.
    AlertFired {
        /// The alert.
        alert: AlertInfo,
    },
    /// That alert resolved.
    AlertResolved {
        /// Its id.
        alert_id: String,
    },
    /// A person asked to stop and go back to stable (no backlog issue).
    AbortRequested {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// A person asked to skip ahead: the current pause, or (`full`) to promotion.
    PromoteRequested {
        /// Who.
        by: Actor,
        /// Skip every remaining stage.
        full: bool,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// An Admin lets a move held by a deployment window or freeze through, once.
    OverrideRequested {
        /// Who.
        by: Actor,
        /// Why (required; recorded and announced).
        reason: String,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// A person asked to retry: re-measure a paused stage, or re-drive a stuck rollback.
    RetryRequested {
        /// Who.
        by: Actor,
        /// The request's idempotency key: a request seen before is a duplicate.
        request: Option<RequestId>,
    },
    /// A stage of the release pipeline failed.
    ReleaseFailed {
        /// What failed, where.
        failure: PipelineFailure,
    },
    /// A command could not be carried out.
    CommandFailed {
        /// Which command.
        command: CommandRef,
        /// What went wrong (no secrets: adapters redact).
        error: String,
    },
    /// The router reports the canary weight it now applies.
    TrafficConfirmed {
        /// Percentage.
        weight: Weight,
    },
    /// What the router says it cannot do or guarantee (pinned sessions),
    /// reported with its first confirmation.
    RouterCaveats {
        /// One line each.
        caveats: Vec<String>,
    },
    /// The promotion (swap) completed.
    Promoted,
    /// The router shows the canary to testers here, at 0 % of users.
    PreviewReady {
        /// Where, and how.
        address: super::PreviewAddress,
    },
    /// The backlog issue exists.
    BacklogOpened {
        /// The issue.
        issue: IssueRef,
        /// What it says (less, if it was found rather than written now).
        reported: super::Reported,
    },
    /// A comment was posted on the backlog issue.
    BacklogCommented {
        /// The comment command's id.
        id: u64,
        /// What the issue says now.
        reported: super::Reported,
    },
    /// The timer sweep: retry what is overdue and fire waits whose message was lost
    /// (measurements only once they are well overdue, so the wake-up takes them first).
    Tick,
    /// The rollout's own wake-up message: fire every wait and measurement now due.
    Wake,
}

impl Event {
    /// The event's name, as recorded in history.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Start => "Start",
            Event::StepDue { .. } => "StepDue",
            Event::Measured { .. } => "Measured",
            Event::Approved { .. } => "Approved",
            Event::Rejected { .. } => "Rejected",
            Event::AlertFired { .. } => "AlertFired",
            Event::AlertResolved { .. } => "AlertResolved",
            Event::AbortRequested { .. } => "AbortRequested",
            Event::PromoteRequested { .. } => "PromoteRequested",
            Event::RetryRequested { .. } => "RetryRequested",
            Event::OverrideRequested { .. } => "OverrideRequested",
            Event::ReleaseFailed { .. } => "ReleaseFailed",
            Event::CommandFailed { .. } => "CommandFailed",
            Event::TrafficConfirmed { .. } => "TrafficConfirmed",
            Event::RouterCaveats { .. } => "RouterCaveats",
            Event::Promoted => "Promoted",
            Event::PreviewReady { .. } => "PreviewReady",
            Event::BacklogOpened { .. } => "BacklogOpened",
            Event::BacklogCommented { .. } => "BacklogCommented",
            Event::Tick => "Tick",
            Event::Wake => "Wake",
        }
    }

    /// The idempotency key of a person's request, if it has one.
    pub fn request_id(&self) -> Option<&RequestId> {
        match self {
            Event::Approved { request, .. }
            | Event::Rejected { request, .. }
            | Event::AbortRequested { request, .. }
            | Event::PromoteRequested { request, .. }
            | Event::RetryRequested { request, .. }
            | Event::OverrideRequested { request, .. } => request.as_ref(),
            _ => None,
        }
    }

    /// The person behind the event, if any.
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Event::Approved { by, .. }
            | Event::Rejected { by, .. }
            | Event::AbortRequested { by, .. }
            | Event::PromoteRequested { by, .. }
            | Event::RetryRequested { by, .. }
            | Event::OverrideRequested { by, .. } => Some(by),
            _ => None,
        }
    }
}
