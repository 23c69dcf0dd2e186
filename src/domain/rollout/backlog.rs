//! The backlog issue of a failed rollout, as the state machine sees it: one
//! issue per rollout (or per retry chain), opened once, and told later news
//! — traffic confirmed back on stable, the rollback check's result, another
//! failure — as comments. [`Reported`] is what the issue already says; the
//! difference from the rollout's facts is the next comment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::IssueRef;
use super::history::Evidence;
use super::Rollout;

/// Later failures kept per rollout (each is told in a comment; more are only in the history).
pub const LATER_FAILURES_KEPT: usize = 10;

/// One try at a backlog call; retried from the timer with backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Command id of the latest attempt.
    pub id: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When the latest attempt was issued.
    pub issued_at: DateTime<Utc>,
    /// When it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Attempt {
    /// A first (or next) attempt issued now.
    pub fn new(id: u64, attempts: u32, now: DateTime<Utc>) -> Self {
        Attempt { id, attempts, issued_at: now, failed_at: None, last_error: None }
    }

    /// When to try again: after the backoff if it failed, or once the call
    /// counts as lost (the process died while making it).
    pub fn retry_at(&self, lost_after_ms: u64) -> DateTime<Utc> {
        match self.failed_at {
            Some(f) => f + super::analysis::ms(crate::domain::backoff::BACKLOG.delay_ms(self.attempts)),
            None => self.issued_at + super::analysis::ms(lost_after_ms),
        }
    }
}

/// What a backlog issue already tells about its rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    /// This rollout's failure (false for an issue inherited from the rollout it retries).
    #[serde(default)]
    pub failure: bool,
    /// That traffic is confirmed back on stable.
    #[serde(default)]
    pub reverted: bool,
    /// The rollback check's result.
    #[serde(default)]
    pub verified: bool,
    /// How many of the later failures.
    #[serde(default)]
    pub later: usize,
    /// That a fix-forward rollout of this failure started.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixing: bool,
}

impl Reported {
    /// Everything there is to tell about `r` now.
    pub fn of(r: &Rollout) -> Reported {
        let fixing = r.fixes.is_some();
        match &r.failure {
            Some(f) if !f.aborted => {
                Reported { failure: true, reverted: f.reverted_at.is_some(), verified: f.verified.is_some(), later: f.later.len(), fixing }
            }
            _ => Reported { fixing, ..Reported::default() },
        }
    }

    /// Whether `self` tells something `told` does not.
    pub fn news_since(&self, told: &Reported) -> bool {
        (self.failure && !told.failure)
            || (self.reverted && !told.reverted)
            || (self.verified && !told.verified)
            || self.later > told.later
            || (self.fixing && !told.fixing)
    }

    /// A short stable key for this set of facts (comments carry it so a
    /// retried comment is recognised and not posted twice).
    pub fn key(&self) -> String {
        let fix = if self.fixing { "x1" } else { "" };
        format!("f{}r{}v{}l{}{fix}", self.failure as u8, self.reverted as u8, self.verified as u8, self.later)
    }
}

/// A failure after the first one: another alert during the rollback, or a
/// revert the router keeps refusing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaterFailure {
    /// When.
    pub at: DateTime<Utc>,
    /// Proof.
    pub evidence: Evidence,
}

/// The backlog issue's progress for a failed rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum BacklogState {
    /// Nothing to open.
    #[default]
    None,
    /// Being opened.
    Opening {
        /// The current attempt.
        #[serde(flatten)]
        attempt: Attempt,
    },
    /// Opened (here or by the rollout this one retries).
    Opened {
        /// The issue.
        issue: IssueRef,
        /// What it already says.
        #[serde(default)]
        reported: Reported,
        /// A comment being posted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updating: Option<Attempt>,
    },
}

impl BacklogState {
    /// The issue, once there is one.
    pub fn issue(&self) -> Option<&IssueRef> {
        match self {
            BacklogState::Opened { issue, .. } => Some(issue),
            _ => None,
        }
    }

    /// The backlog call in flight, if any.
    pub fn attempt(&self) -> Option<&Attempt> {
        match self {
            BacklogState::Opening { attempt } => Some(attempt),
            BacklogState::Opened { updating: Some(attempt), .. } => Some(attempt),
            _ => None,
        }
    }
}
