//! Commands: what the state machine asks the outside world to do. Handlers
//! carry them out through the ports and report back with events.

use crate::domain::ids::Weight;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{IssueRef, MeasurementKey};
use super::history::Evidence;
use super::{Phase, Reported};

/// The kind of a command, for failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandKind {
    /// SetWeight.
    SetWeight,
    /// Promote.
    Promote,
    /// RevertTraffic.
    RevertTraffic,
    /// OpenBacklogIssue.
    OpenBacklogIssue,
    /// CommentBacklogIssue.
    CommentBacklogIssue,
    /// Notify.
    Notify,
    /// ScaleDownPrevious.
    ScaleDownPrevious,
    /// Preview.
    Preview,
}

/// Why a notification is sent; one per phase change, never one per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotifyKind {
    /// The rollout began.
    Started,
    /// The phase changed (other than the cases below).
    PhaseChanged,
    /// People are needed.
    ApprovalNeeded,
    /// The rollout is paused.
    Paused,
    /// Traffic is going back to stable.
    RollingBack,
    /// Traffic is back on stable after a failure.
    RolledBack,
    /// Traffic is back on stable after a person stopped it.
    Aborted,
    /// The new version is the stable one.
    Succeeded,
    /// A person let a move held by a deployment window or freeze through.
    Overridden,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "command")]
pub enum Command {
    /// Route `weight` percent to the canary.
    SetWeight {
        /// Percentage.
        weight: Weight,
        /// Issue id (for failure reports).
        id: u64,
    },
    /// Make the canary the new stable.
    Promote {
        /// Issue id.
        id: u64,
        /// First attempt's time: a swap done since then is this one.
        since: DateTime<Utc>,
    },
    /// Let testers reach the canary without user weight, and say where.
    Preview {
        /// Issue id.
        id: u64,
    },
    /// Put all traffic on stable now (swapping back if the promotion already happened).
    RevertTraffic {
        /// Whether the slots were already swapped.
        undo_promotion: bool,
        /// Issue id.
        id: u64,
        /// First attempt's time: a swap back done since then is this one.
        since: DateTime<Utc>,
    },
    /// Deliver `StepDue { seq }` at `at`.
    ScheduleStep {
        /// When.
        at: DateTime<Utc>,
        /// The wait's sequence number.
        seq: u64,
    },
    /// Take a measurement at `at`.
    Measure {
        /// Which.
        key: MeasurementKey,
        /// When.
        at: DateTime<Utc>,
    },
    /// Ask people to approve (the approval-needed announcement).
    RequestApproval {
        /// Issue id.
        id: u64,
        /// Stage index.
        stage: usize,
        /// Approvals needed.
        min_approvers: u32,
        /// Allowed approvers (empty: anyone).
        approvers: Vec<String>,
        /// Deadline.
        deadline: Option<DateTime<Utc>>,
    },
    /// Open (or find) the rollout's backlog issue.
    OpenBacklogIssue {
        /// What went wrong.
        evidence: Evidence,
        /// Issue id (attempt).
        id: u64,
    },
    /// Add what the issue does not say yet (since `told`) as a comment.
    CommentBacklogIssue {
        /// The issue.
        issue: IssueRef,
        /// What it already says.
        told: Reported,
        /// Issue id (attempt).
        id: u64,
    },
    /// Tell people.
    Notify {
        /// Why.
        kind: NotifyKind,
        /// The phase now.
        phase: Phase,
        /// One line.
        summary: String,
        /// Issue id.
        id: u64,
    },
    /// The previous version is no longer needed (blue-green scale-down delay over).
    ScaleDownPrevious {
        /// Issue id.
        id: u64,
    },
}

impl Command {
    /// Whether it touches traffic (carried out before the state is saved).
    pub fn is_traffic(&self) -> bool {
        matches!(self, Command::SetWeight { .. } | Command::Promote { .. } | Command::RevertTraffic { .. } | Command::Preview { .. })
    }

    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetWeight { .. } => "SetWeight",
            Command::Promote { .. } => "Promote",
            Command::RevertTraffic { .. } => "RevertTraffic",
            Command::Preview { .. } => "Preview",
            Command::ScheduleStep { .. } => "ScheduleStep",
            Command::Measure { .. } => "Measure",
            Command::RequestApproval { .. } => "RequestApproval",
            Command::OpenBacklogIssue { .. } => "OpenBacklogIssue",
            Command::CommentBacklogIssue { .. } => "CommentBacklogIssue",
            Command::Notify { .. } => "Notify",
            Command::ScaleDownPrevious { .. } => "ScaleDownPrevious",
        }
    }
}
