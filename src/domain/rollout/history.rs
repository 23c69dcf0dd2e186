//! The audit trail: one entry per applied event, with who, what changed and
//! the evidence behind it; and the evidence a rollback carries to the backlog.

use crate::domain::ids::Weight;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{AlertInfo, PipelineFailure};
use super::Phase;

/// How one measurement was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Met the condition (and the baseline).
    Pass,
    /// Broke the condition or the baseline.
    Fail,
    /// No data, too few samples, or no baseline: never a pass.
    Inconclusive,
    /// Too few samples while the phase soaks for more (`maxSoak`): counts toward nothing.
    Waiting,
    /// The provider failed.
    Error,
}

/// One measurement as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Which (zero-based).
    pub index: u32,
    /// The metric's name, so a chart can draw each metric's series.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// Canary value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    /// Stable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<f64>,
    /// Samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// Judgement.
    pub verdict: Verdict,
    /// The statistical judge's numbers (counts, U, p-value, effect), when it judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<crate::domain::stats::Judgement>,
    /// The reasoning, e.g. `0.031 is not < 0.02`.
    pub note: String,
}

/// Why a rollout failed or stopped, with what proves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Evidence {
    /// An analysis failed or was inconclusive under a rollback policy.
    Analysis {
        /// The analysis label.
        analysis: String,
        /// The metric that decided it.
        metric: String,
        /// Its condition, e.g. `< 0.02`.
        condition: String,
        /// What decided it, e.g. `2 failed measurements > failure limit 1`.
        reason: String,
        /// The metric's recent measurements.
        measurements: Vec<MeasurementRecord>,
    },
    /// A monitoring alert fired.
    Alert {
        /// The alert.
        alert: AlertInfo,
    },
    /// A stage of the release pipeline failed.
    Pipeline {
        /// What failed, where.
        failure: PipelineFailure,
    },
    /// A person rejected the rollout.
    Rejected {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Nobody approved in time.
    ApprovalTimeout {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The router could not be driven.
    Router {
        /// The command.
        command: String,
        /// The last error.
        error: String,
        /// How many attempts.
        attempts: u32,
    },
    /// The error budget was too low to start.
    ErrorBudget {
        /// Remaining budget measured, if any.
        remaining: Option<f64>,
        /// The floor.
        min_remaining: f64,
        /// Details.
        reason: String,
    },
    /// Users did not get the split asked for, for longer than the policy allows.
    SplitMismatch {
        /// The weight asked for.
        requested: Weight,
        /// Percent of requests that reached the canary.
        observed: f64,
        /// Requests counted in the last measurement.
        requests: u64,
        /// Measurements in a row out of tolerance.
        checks: u32,
        /// The tolerance, in percentage points.
        tolerance: f64,
    },
    /// A person stopped the rollout.
    Aborted {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
}

impl Evidence {
    /// One line for people.
    pub fn headline(&self) -> String {
        match self {
            Evidence::Analysis { analysis, metric, reason, .. } => {
                format!("analysis {analysis}: {metric} {reason}")
            }
            Evidence::Alert { alert } => {
                let sev = if alert.severity.is_empty() { String::new() } else { format!(" ({})", alert.severity) };
                format!("alert '{}'{} fired: {}", alert.rule, sev, alert.summary)
            }
            Evidence::Pipeline { failure } => format!("pipeline stage '{}' failed (reported by {})", failure.stage, failure.by),
            Evidence::Rejected { by, reason } => format!("rejected by {by}: {reason}"),
            Evidence::ApprovalTimeout { waited_ms } => {
                format!("no approval within {}", crate::domain::spec::duration_text(*waited_ms))
            }
            Evidence::Router { command, error, attempts } => {
                format!("router failed {command} {attempts} times: {error}")
            }
            Evidence::ErrorBudget { reason, .. } => format!("error budget gate: {reason}"),
            Evidence::SplitMismatch { requested, observed, checks, .. } => {
                format!("{observed:.1}% of requests reached the canary where {requested}% was asked, {checks} measurements in a row")
            }
            Evidence::Aborted { by, reason } => {
                if reason.is_empty() {
                    format!("aborted by {by}")
                } else {
                    format!("aborted by {by}: {reason}")
                }
            }
        }
    }
}

/// One row of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// 1-based, gap-free position in the history.
    pub seq: u64,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
    /// Stage index after.
    pub stage: usize,
    /// Desired canary weight after.
    pub weight: Weight,
    /// The event that caused it.
    pub cause: String,
    /// Who, if a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What happened, in words.
    pub summary: String,
    /// Proof, where there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Measurement details, for analysis entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<MeasurementRecord>,
}

impl HistoryEntry {
    /// The row without its details, when the store cannot keep them: the
    /// transition itself is never lost.
    pub fn trimmed(mut self) -> HistoryEntry {
        self.summary = format!("{} [details too large to keep]", crate::domain::bounded::cap(&self.summary, 500));
        self.evidence = None;
        self.measurement = None;
        self
    }
}
