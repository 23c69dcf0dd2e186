//! What a rollout's history adds up to — how long each step took to decide,
//! how many canary requests the analysis counted, how long people kept it
//! waiting, how often the backlog and notifications failed — folded in as
//! each history entry is written. Metrics and the release-health report
//! read this from the rollout's state, so they never read histories.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::command::CommandKind;
use super::history::{HistoryEntry, Verdict};
use super::plan::Stage;
use super::{Phase, Rollout};

/// Most step times kept (a plan with retries could repeat steps).
const STEPS_KEPT: usize = 64;

/// One step, from entering it to the decision that left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTime {
    /// The step (zero-based stage index).
    pub stage: usize,
    /// Its kind, as the spec names it (`analysis`, `approval`, …).
    pub kind: String,
    /// Milliseconds from entering it to leaving it.
    pub ms: u64,
    /// Whether the rollout went on (`false`: it stopped there).
    pub passed: bool,
}

/// Running totals over a rollout's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_since: Option<DateTime<Utc>>,
    /// Steps decided, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepTime>,
    /// Canary requests counted by each metric's measurements (judged ones,
    /// not those taken while soaking for data, whose windows overlap).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_requests: BTreeMap<String, u64>,
    /// Time spent waiting for approvals, milliseconds.
    #[serde(default)]
    pub approval_wait_ms: u64,
    /// Since when it waits for an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_since: Option<DateTime<Utc>>,
    /// Backlog calls (open or comment) that failed.
    #[serde(default)]
    pub backlog_failures: u32,
    /// Notifications that failed.
    #[serde(default)]
    pub notify_failures: u32,
}

impl Tally {
    /// Adds one history entry, written as `before` became the rollout that
    /// owns this tally; `failed` is the command whose failure it records.
    pub fn fold(&mut self, before: &Rollout, stages: &[Stage], entry: &HistoryEntry, failed: Option<CommandKind>) {
        let stopped = |p: Phase| p.is_terminal() || p == Phase::RollingBack;
        let left_step = entry.stage != before.stage || (stopped(entry.to) && !stopped(before.phase));
        if left_step && before.phase != Phase::Pending {
            if let Some(stage) = stages.get(before.stage) {
                let since = self.stage_since.unwrap_or(before.created_at);
                let passed = entry.stage > before.stage && !matches!(entry.to, Phase::RollingBack | Phase::RolledBack | Phase::Aborted);
                self.steps.push(StepTime { stage: before.stage, kind: stage.kind().to_string(), ms: millis(since, entry.at), passed });
                if self.steps.len() > STEPS_KEPT {
                    self.steps.remove(0);
                }
            }
        }
        if left_step || before.phase == Phase::Pending {
            self.stage_since = Some(entry.at);
        }
        match (before.phase == Phase::AwaitingApproval, entry.to == Phase::AwaitingApproval) {
            (false, true) => self.awaiting_since = Some(entry.at),
            (true, false) => {
                let since = self.awaiting_since.take().unwrap_or(entry.at);
                self.approval_wait_ms = self.approval_wait_ms.saturating_add(millis(since, entry.at));
            }
            _ => {}
        }
        if let Some(m) = entry.measurement.as_ref().filter(|m| m.verdict != Verdict::Waiting && !m.metric.is_empty()) {
            let seen = self.canary_requests.entry(m.metric.clone()).or_default();
            *seen = seen.saturating_add(m.samples.unwrap_or(0));
        }
        match failed {
            Some(CommandKind::OpenBacklogIssue | CommandKind::CommentBacklogIssue) => self.backlog_failures += 1,
            Some(CommandKind::Notify) => self.notify_failures += 1,
            _ => {}
        }
    }

    /// Canary requests the analysis saw: the metric that counted the most
    /// (metrics of one rollout count the same requests, so they are not added).
    pub fn exposure(&self) -> u64 {
        self.canary_requests.values().copied().max().unwrap_or(0)
    }
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}
