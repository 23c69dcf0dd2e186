//! Releases: one version across ordered waves (rings, regions). Each target
//! of a wave is an ordinary rollout (same core, same history); the release
//! has its own state and history and moves on what it observes of them.
//!
//! Like the rollout, the release is a reducer: [`decide`] takes the state,
//! one event (what its rollouts are doing now, a person's action, a
//! command's result) and the time, and returns the new state, the commands
//! to carry out and the history to append. Commands are idempotent (a
//! rollout's id is derived from the release, the wave and the target), so a
//! crash anywhere only repeats work.

mod decide;
pub mod spec;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use decide::{decide, ReleaseCommand, ReleaseDecision, ReleaseEvent, Seen};
pub use spec::{EarlierWaves, ReleaseSpec};

use crate::domain::format::StateFormat;
use crate::domain::ids::{Actor, RolloutId};
use crate::domain::rollout::{Approval, IssueRef, Phase};

/// While a wave runs, the release looks at its rollouts at least this often
/// (each rollout also nudges it when it finishes).
pub const WATCH_MS: i64 = 30_000;
/// A failed backlog or revert call is tried again after this long.
pub const RETRY_MS: i64 = 30_000;

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleasePhase {
    /// A wave is rolling out.
    Running,
    /// Between waves, waiting for people.
    AwaitingApproval,
    /// Every wave promoted.
    Succeeded,
    /// A target failed (or the gate said no); no further wave starts.
    Halted,
    /// Stopped by a person.
    Aborted,
}

impl ReleasePhase {
    /// Whether no further wave will start.
    pub fn is_terminal(self) -> bool {
        matches!(self, ReleasePhase::Succeeded | ReleasePhase::Halted | ReleasePhase::Aborted)
    }

    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleasePhase::Running => "Running",
            ReleasePhase::AwaitingApproval => "AwaitingApproval",
            ReleasePhase::Succeeded => "Succeeded",
            ReleasePhase::Halted => "Halted",
            ReleasePhase::Aborted => "Aborted",
        }
    }
}

/// One target's rollout, as the release last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRun {
    /// The target's name.
    pub target: String,
    /// Its rollout's id (derived, so starting it twice is harmless).
    pub rollout: RolloutId,
    /// Its phase when last seen; `None` until it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Put back on stable by the failure policy after it was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Revert>,
}

/// A promoted target being put back by the failure policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revert {
    /// Whether the router confirmed it.
    pub done: bool,
    /// Calls so far.
    pub attempts: u32,
    /// The last call's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the release halted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseFailure {
    /// The wave (0-based).
    pub wave: usize,
    /// The target, when one failed (none for a gate's refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Its rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutId>,
    /// In words.
    pub reason: String,
}

/// The release's one backlog issue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ReleaseBacklog {
    /// None needed (yet).
    #[default]
    None,
    /// Being opened; `error` when the last try failed.
    Opening {
        /// Tries so far.
        attempts: u32,
        /// The last error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Opened.
    Opened {
        /// The issue.
        issue: IssueRef,
    },
}

/// One line of a release's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseEntry {
    /// Position in the history, from 1.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who or what caused it (a person, `sluice`, a rollout's id).
    pub by: String,
    /// The wave it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// What happened.
    pub message: String,
}

/// A release's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The stored format (see [`crate::domain::format`]).
    #[serde(default)]
    pub format: StateFormat,
    /// Its id (same rules as a rollout's).
    pub id: RolloutId,
    /// What was asked for.
    pub spec: ReleaseSpec,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who started it.
    pub created_by: Actor,
    /// Where it stands.
    pub phase: ReleasePhase,
    /// The wave running or last run (0-based).
    pub wave: usize,
    /// Per wave, per target: its rollout.
    pub runs: Vec<Vec<TargetRun>>,
    /// Approvals at the gate after the current wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// When the current gate opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_since: Option<DateTime<Utc>>,
    /// Why it halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ReleaseFailure>,
    /// Its backlog issue.
    #[serde(default)]
    pub backlog: ReleaseBacklog,
    /// When the timer must next look at it; `None` when nothing is left to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    /// History entries so far.
    pub seq: u64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Longest rollout id (kept in step with [`RolloutId`]'s rule).
const ROLLOUT_ID_MAX: usize = 63;

/// The rollout id of a target in a wave: readable, unique, and the same on every try.
pub fn rollout_id(release: &RolloutId, wave: usize, target: &str) -> RolloutId {
    let plain = format!("{release}-w{}-{target}", wave + 1);
    if let Ok(id) = RolloutId::parse(&plain) {
        if plain.len() <= ROLLOUT_ID_MAX {
            return id;
        }
    }
    let digest = Sha256::digest(format!("{release}|{wave}|{target}").as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head: String = release.chars().take(30).collect();
    let tail: String = target.chars().take(18).collect();
    RolloutId::parse(&format!("{head}-w{}-{tail}-{hash}", wave + 1)).unwrap_or_else(|_| release.clone())
}

impl Release {
    /// A new release with its first history entry; the first wave starts on its first [`decide`].
    pub fn new(id: RolloutId, spec: ReleaseSpec, by: Actor, now: DateTime<Utc>) -> (Release, ReleaseEntry) {
        let runs = spec
            .waves
            .iter()
            .enumerate()
            .map(|(w, wave)| {
                wave.targets
                    .iter()
                    .map(|t| TargetRun { target: t.name.to_string(), rollout: rollout_id(&id, w, &t.name), phase: None, reverted: None })
                    .collect()
            })
            .collect();
        let waves: Vec<&str> = spec.waves.iter().map(|w| w.name.as_str()).collect();
        let first = ReleaseEntry {
            seq: 1,
            at: now,
            by: by.to_string(),
            wave: None,
            message: format!("release of {} {} created: {}", spec.name, spec.version, waves.join(" → ")),
        };
        let release = Release {
            format: StateFormat,
            id,
            spec,
            created_at: now,
            created_by: by,
            phase: ReleasePhase::Running,
            wave: 0,
            runs,
            approvals: Vec::new(),
            gate_since: None,
            failure: None,
            backlog: ReleaseBacklog::None,
            wake_at: Some(now),
            seq: 1,
            updated_at: now,
        };
        (release, first)
    }

    /// Whether nothing is left to do: terminal, every rollout finished, the
    /// issue filed and every revert made.
    pub fn settled(&self) -> bool {
        let runs_done = self
            .runs
            .iter()
            .flatten()
            .all(|r| r.phase.map(Phase::is_terminal).unwrap_or(true) && r.reverted.as_ref().map(|v| v.done).unwrap_or(true));
        let issue_done = !matches!(self.backlog, ReleaseBacklog::Opening { .. });
        self.phase.is_terminal() && runs_done && issue_done
    }
}
