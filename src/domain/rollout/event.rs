//! Events: everything that can happen to a rollout, from people, alerts,
//! timers, measurements and the results of commands carried out.

use chrono::{DateTime, Utc};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
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
        by: String,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// A person rejected.
    Rejected {
        /// Who.
        by: String,
        /// Why.
        #[serde(default)]
        reason: String,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
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
        by: String,
        /// Why.
        #[serde(default)]
        reason: String,
        /// The request's idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// A person asked to skip ahead: the current pause, or (`full`) to promotion.
    PromoteRequested {
        /// Who.
        by: String,
        /// Skip every remaining stage.
        #[serde(default)]
        full: bool,
        /// The step the person was looking at; if the rollout has moved on, the
        /// request is stale (so a repeated request never skips a second step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<usize>,
        /// The request's idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// A person asked to retry: re-measure a paused stage, or re-drive a stuck rollback.
    RetryRequested {
        /// Who.
        by: String,
        /// The request's idempotency key: a request seen before is a duplicate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
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
        weight: u8,
    },
    /// The promotion (swap) completed.
    Promoted,
    /// The backlog issue exists.
    BacklogOpened {
        /// The issue.
        issue: IssueRef,
        /// What it says (less, if it was found rather than written now).
        #[serde(default)]
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
            Event::CommandFailed { .. } => "CommandFailed",
            Event::TrafficConfirmed { .. } => "TrafficConfirmed",
            Event::Promoted => "Promoted",
            Event::BacklogOpened { .. } => "BacklogOpened",
            Event::BacklogCommented { .. } => "BacklogCommented",
            Event::Tick => "Tick",
            Event::Wake => "Wake",
        }
    }

    /// The idempotency key of a person's request, if it has one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Event::Approved { request, .. }
            | Event::Rejected { request, .. }
            | Event::AbortRequested { request, .. }
            | Event::PromoteRequested { request, .. }
            | Event::RetryRequested { request, .. } => request.as_deref(),
            _ => None,
        }
    }

    /// The person behind the event, if any.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Event::Approved { by, .. }
            | Event::Rejected { by, .. }
            | Event::AbortRequested { by, .. }
            | Event::PromoteRequested { by, .. }
            | Event::RetryRequested { by, .. } => Some(by),
            _ => None,
        }
    }
}
