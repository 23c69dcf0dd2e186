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
        if let Some(why) = self.fixed_here(alert) {
            if self.r.ignored_alerts.contains(&alert.id) {
                return Err(format!("alert {} is already ignored: this rollout fixes it", alert.id));
            }
            self.r.ignored_alerts.push(alert.id.clone());
            if self.r.ignored_alerts.len() > ALERTS_KEPT {
                self.r.ignored_alerts.remove(0);
            }
            let began = alert.fired_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
            self.note(format!(
                "alert {} ({}) ignored on purpose: it began at {began}, before this rollout was created, and the rollout fixes it ({why})",
                alert.rule, alert.id
            ));
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

    /// Why a fix-forward rollout leaves `alert` alone: it began before the
    /// rollout was created (an alert saying nothing of when it began is
    /// never taken for an old one) and the policy covers it.
    fn fixed_here(&self, alert: &AlertInfo) -> Option<&'static str> {
        let fix = self.r.plan.fix_forward.as_ref()?;
        alert.fired_at.filter(|t| *t < self.r.created_at)?;
        fix.covers(&alert.rule, &alert.id)
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
