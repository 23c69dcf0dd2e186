//! Alerts, fired and resolved, and failed pipeline stages: outside signals that the release is bad.

use super::{Step, Txn, ALERTS_KEPT};
use crate::domain::rollout::backlog::LATER_FAILURES_KEPT;
use crate::domain::rollout::event::{AlertInfo, PipelineFailure};
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::{PauseReason, Phase};
use crate::domain::spec::OnAlert;

impl Txn {
    pub(super) fn on_alert(&mut self, alert: &AlertInfo) -> Step {
        self.not_finished()?;
        if self.r.phase == Phase::RollingBack {
            if self.r.alerts.contains(&alert.id) {
                return Err("already rolling back".into());
            }
            // A storm of alerts must not grow the rollout without bound: the first few
            // are evidence here; every one of them stays in the alert log.
            if self.r.failure.as_ref().is_some_and(|f| f.later.len() >= LATER_FAILURES_KEPT) {
                return Err(format!("already rolling back with {LATER_FAILURES_KEPT} later alerts recorded; this one is in the alert log"));
            }
            // A different alert while rolling back: more evidence, same rollback.
            self.remember_alert(&alert.id);
            let evidence = Evidence::Alert { alert: alert.clone() };
            self.note(format!("another alert while rolling back: {}", evidence.headline()));
            self.later_failure(evidence.clone());
            self.evidence = Some(evidence);
            return Ok(());
        }
        let paused_by_alert = matches!(self.r.pause.as_ref().map(|p| &p.reason), Some(PauseReason::Alert { .. }));
        if self.r.plan.on_alert == OnAlert::Pause && paused_by_alert {
            return Err("already paused for an alert".into());
        }
        self.remember_alert(&alert.id);
        let evidence = Evidence::Alert { alert: alert.clone() };
        match self.r.plan.on_alert {
            OnAlert::Rollback => self.start_rollback(evidence, false),
            OnAlert::Pause => {
                self.note(format!("paused: {}", evidence.headline()));
                self.evidence = Some(evidence);
                self.pause_for(PauseReason::Alert { alert_id: alert.id.clone() });
            }
        }
        Ok(())
    }

    pub(super) fn remember_alert(&mut self, id: &str) {
        if !self.r.alerts.iter().any(|a| a == id) {
            self.r.alerts.push(id.to_string());
            if self.r.alerts.len() > ALERTS_KEPT {
                self.r.alerts.remove(0);
            }
        }
    }

    pub(super) fn on_alert_resolved(&mut self, alert_id: &str) -> Step {
        self.not_finished()?;
        match self.r.pause.as_ref().map(|p| &p.reason) {
            Some(PauseReason::Alert { alert_id: a }) if a == alert_id && self.r.phase == Phase::Paused => {
                self.note(format!("alert {alert_id} resolved; resuming"));
                self.resume(false);
                Ok(())
            }
            _ => Err(format!("not paused for alert {alert_id}")),
        }
    }

    /// A failed pipeline stage rolls back at once: unlike a monitoring
    /// alert, it does not flap, so `onAlert: pause` does not apply. The same
    /// stage reported twice is one failure.
    pub(super) fn on_release_failed(&mut self, failure: &PipelineFailure) -> Step {
        self.not_finished()?;
        let key = failure.key();
        if self.r.alerts.contains(&key) {
            return Err(format!("stage '{}' was already reported", failure.stage));
        }
        self.remember_alert(&key);
        let evidence = Evidence::Pipeline { failure: failure.clone() };
        if self.r.phase == Phase::RollingBack {
            self.note(format!("another failure while rolling back: {}", evidence.headline()));
            self.later_failure(evidence.clone());
            self.evidence = Some(evidence);
            return Ok(());
        }
        self.start_rollback(evidence, false);
        Ok(())
    }
}
