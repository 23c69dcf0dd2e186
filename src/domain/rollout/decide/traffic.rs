//! Traffic: router commands, their confirmations and retries.

use crate::domain::ids::Weight;
use chrono::{DateTime, Utc};

use super::{Step, Txn, MAX_TRAFFIC_ATTEMPTS};
use crate::domain::rollout::command::{Command, CommandKind};
use crate::domain::rollout::event::CommandRef;
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::plan::Stage;
use crate::domain::rollout::{PendingTraffic, Phase, PreviewAddress};

impl Txn {
    pub(super) fn issue_traffic(&mut self, kind: CommandKind, weight: Weight) {
        let id = self.next_id();
        self.r.traffic.weight = weight;
        let since = self.first_since(kind);
        self.r.traffic.pending = Some(PendingTraffic::first(kind, id, self.now, since));
        self.commands.push(self.traffic_command(kind, id, since));
    }

    /// What a router may take as "this command, retried": a promotion is
    /// named by the rollout's creation, which a crash between the router's
    /// swap and the save cannot change, so the promotion decided again on
    /// restart finds its swap done instead of swapping back (a rollout
    /// promotes once; its retry is a new rollout).
    pub(super) fn first_since(&self, kind: CommandKind) -> DateTime<Utc> {
        match kind {
            CommandKind::Promote => self.r.created_at,
            _ => self.now,
        }
    }

    pub(super) fn traffic_command(&self, kind: CommandKind, id: u64, since: DateTime<Utc>) -> Command {
        match kind {
            CommandKind::Promote => Command::Promote { id, since },
            CommandKind::RevertTraffic => Command::RevertTraffic { undo_promotion: self.r.traffic.promoted, id, since },
            CommandKind::Preview => Command::Preview { id },
            _ => Command::SetWeight { weight: self.r.traffic.weight, id },
        }
    }

    pub(super) fn reissue_traffic(&mut self) {
        let Some(p) = self.r.traffic.pending.clone() else { return };
        let id = self.next_id();
        let attempts = p.attempts + 1;
        self.r.traffic.pending = Some(PendingTraffic {
            kind: p.kind,
            id,
            attempts,
            issued_at: self.now,
            since: p.since,
            failed_at: None,
            last_error: p.last_error,
        });
        self.note(format!("retrying {:?} (attempt {attempts})", p.kind));
        let cmd = self.traffic_command(p.kind, id, p.since);
        self.commands.push(cmd);
    }

    pub(super) fn on_traffic_confirmed(&mut self, weight: Weight) -> Step {
        self.not_finished()?;
        let matches = self
            .r
            .traffic
            .pending
            .as_ref()
            .map(|p| matches!(p.kind, CommandKind::SetWeight | CommandKind::RevertTraffic) && weight == self.r.traffic.weight)
            .unwrap_or(false);
        if !matches {
            return Err(format!("stale confirmation: {weight}% is not what is pending"));
        }
        self.r.traffic.pending = None;
        self.r.traffic.confirmed = Some(weight);
        if self.r.phase == Phase::RollingBack {
            self.traffic_reverted();
            return Ok(());
        }
        self.note(format!("router confirmed {weight}%"));
        if self.r.phase == Phase::Progressing && matches!(self.r.current_stage(), Some(Stage::SetWeight { weight: w }) if *w == weight) {
            self.advance();
        }
        Ok(())
    }

    /// Recorded once, in the state (for status and the issue) and the history.
    pub(super) fn on_router_caveats(&mut self, caveats: &[String]) -> Step {
        self.not_finished()?;
        if caveats.is_empty() || !self.r.traffic.caveats.is_empty() {
            return Err("router caveats already recorded".into());
        }
        self.r.traffic.caveats = caveats.to_vec();
        for caveat in caveats {
            self.note(format!("router caveat: {caveat}"));
        }
        Ok(())
    }

    pub(super) fn on_promoted(&mut self) -> Step {
        self.not_finished()?;
        if !matches!(self.r.traffic.pending.as_ref().map(|p| p.kind), Some(CommandKind::Promote)) {
            return Err("no promotion is pending".into());
        }
        self.r.traffic.pending = None;
        self.r.traffic.promoted = true;
        self.r.traffic.confirmed = Some(Weight::FULL);
        self.note("promotion confirmed");
        self.advance();
        Ok(())
    }

    /// The preview is set up: recorded and told, then the plan goes on
    /// (to its smoke check or approval).
    pub(super) fn on_preview_ready(&mut self, address: &PreviewAddress) -> Step {
        self.not_finished()?;
        if !matches!(self.r.traffic.pending.as_ref().map(|p| p.kind), Some(CommandKind::Preview)) {
            return Err("no preview is pending".into());
        }
        self.r.traffic.pending = None;
        self.r.traffic.preview = Some(address.clone());
        self.note(format!("preview ready: {}", address.describe()));
        if self.r.phase == Phase::Progressing && matches!(self.r.current_stage(), Some(Stage::Preview)) {
            self.advance();
        }
        Ok(())
    }

    /// A router command failed: retried later; past the limit (not for a
    /// rollback, which retries forever) the rollout rolls back.
    pub(super) fn on_router_failed(&mut self, command: &CommandRef, error: &str) -> Step {
        self.not_finished()?;
        let pending = self.r.traffic.pending.clone();
        let Some(p) = pending.filter(|p| p.id == command.id && p.kind == command.kind && p.failed_at.is_none()) else {
            return Err("stale failure report".into());
        };
        let attempts = p.attempts;
        if let Some(pend) = self.r.traffic.pending.as_mut() {
            pend.failed_at = Some(self.now);
            pend.last_error = Some(error.to_string());
        }
        self.note(format!("router failed {:?} (attempt {attempts}): {error}", command.kind));
        if command.kind == CommandKind::RevertTraffic && attempts == MAX_TRAFFIC_ATTEMPTS {
            // Users are still on the canary: the issue must say so.
            self.later_failure(Evidence::Router { command: "RevertTraffic".into(), error: error.to_string(), attempts });
        }
        if command.kind != CommandKind::RevertTraffic && attempts >= MAX_TRAFFIC_ATTEMPTS {
            let evidence = Evidence::Router { command: format!("{:?}", command.kind), error: error.to_string(), attempts };
            self.start_rollback(evidence, false);
        }
        Ok(())
    }
}
