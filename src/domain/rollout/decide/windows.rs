//! Deployment windows and freezes: a start, a weight increase or a
//! promotion outside every policy's window waits for it (paused, its
//! wake-up at the opening); an Admin may let one through with a reason.

use super::{Step, Txn};
use crate::domain::ids::Actor;
use crate::domain::rollout::{PauseInfo, PauseReason, Phase};
use crate::domain::window::closed_until;

impl Txn {
    /// Holds the move into `stage` (or the start, `begin`) when a policy is
    /// closed now, unless a person's override let this one through (an
    /// override of the start also covers the first move, whenever it comes).
    pub(super) fn held_by_window(&mut self, stage: usize, begin: bool) -> bool {
        if self.r.window_override == Some(stage) {
            if !begin {
                self.r.window_override = None;
            }
            return false;
        }
        let Some(closed) = closed_until(&self.r.plan.windows, self.now) else { return false };
        self.r.stage = stage;
        self.r.phase = Phase::Paused;
        let what = if begin { "start".to_string() } else { format!("step {}/{}", stage + 1, self.r.plan.stages.len()) };
        self.note(format!("{what} held: {}; opens {}", closed.why, closed.opens_local));
        self.r.pause = Some(PauseInfo {
            reason: PauseReason::Window { opens_at: closed.opens_at, opens_local: closed.opens_local, why: closed.why, begin },
            since: self.now,
        });
        let wait = u64::try_from((closed.opens_at - self.now).num_milliseconds()).unwrap_or(0);
        self.wait(wait);
        true
    }

    /// The window's wake-up: try the held move again (held again if the
    /// policy changed its mind, e.g. a freeze added at the opening).
    pub(super) fn window_opened(&mut self, begin: bool) {
        self.r.pause = None;
        self.r.due_at = None;
        self.note("deployment window open");
        self.go_on(begin);
    }

    /// An Admin lets the held move through once, with a reason: recorded
    /// in the history and announced like any phase change.
    pub(super) fn on_override(&mut self, by: &Actor, reason: &str) -> Step {
        self.not_finished()?;
        let Some(PauseReason::Window { begin, why, .. }) = self.r.pause.as_ref().map(|p| p.reason.clone()) else {
            return Err("nothing is held by a deployment window or freeze".into());
        };
        if reason.trim().is_empty() {
            return Err("an override needs a reason".into());
        }
        self.note(format!("{why}: overridden by {by}: {reason}"));
        self.r.pause = None;
        self.cancel_wait();
        self.r.window_override = Some(self.r.stage);
        self.go_on(begin);
        Ok(())
    }

    fn go_on(&mut self, begin: bool) {
        if begin {
            self.r.phase = Phase::Pending;
            self.start_checks();
        } else {
            let stage = self.r.stage;
            self.enter_stage(stage);
        }
    }
}
