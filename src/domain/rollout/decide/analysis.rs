//! Analysis: runs, measurements and what their verdicts decide.

use super::{Step, Txn};
use crate::domain::ids::Weight;
use crate::domain::rollout::analysis::{ms, undersampled, AnalysisRun, RunKind, RunStatus, SampleWait};
use crate::domain::rollout::command::Command;
use crate::domain::rollout::event::{MeasureOutcome, MeasurementKey};
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::plan::{AnalysisPlan, MetricPlan};
use crate::domain::rollout::{judge, Failure, PauseReason, Phase, Verdict};
use crate::domain::spec::OnInconclusive;
use chrono::{DateTime, Utc};

impl Txn {
    pub(super) fn start_run(&mut self, kind: RunKind, plan: &AnalysisPlan) {
        let id = self.r.runs.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        let run = AnalysisRun::start(id, kind, plan, self.now);
        for m in &run.metrics {
            if let Some(at) = m.next_at {
                self.commands.push(Command::Measure { key: MeasurementKey { run: id, metric: m.name.clone(), index: 0 }, at });
            }
        }
        self.r.runs.push(run);
    }

    /// The background analysis, unless it waits for users' traffic after a preview.
    pub(super) fn start_background(&mut self) {
        if self.previews() && self.r.traffic.weight == Weight::ZERO {
            return;
        }
        let running = self.r.runs.iter().any(|r| r.kind == RunKind::Background && r.status == RunStatus::Running);
        if let (Some(bg), false) = (self.r.plan.background.clone(), running) {
            self.start_run(RunKind::Background, &bg);
        }
    }

    pub(super) fn cancel_runs(&mut self, which: impl Fn(&AnalysisRun) -> bool) {
        for run in self.r.runs.iter_mut().filter(|r| which(r)) {
            run.cancel();
        }
    }

    pub(super) fn run_evidence(&self, run_index: usize) -> Evidence {
        let run = &self.r.runs[run_index];
        let decisive = run
            .metrics
            .iter()
            .find(|m| m.status == RunStatus::Failed)
            .or_else(|| run.metrics.iter().find(|m| m.status == RunStatus::Inconclusive))
            .or_else(|| run.metrics.first());
        match decisive {
            Some(m) => {
                let key = MeasurementKey { run: run.id, metric: m.name.clone(), index: 0 };
                let plan = self.r.metric_plan(&key);
                Evidence::Analysis {
                    analysis: run.label.clone(),
                    metric: m.name.clone(),
                    condition: plan.map(|p| p.rule()).unwrap_or_default(),
                    reason: plan.map(|p| m.reason(p)).unwrap_or_default(),
                    measurements: m.recent.clone(),
                }
            }
            None => Evidence::Analysis {
                analysis: run.label.clone(),
                metric: String::new(),
                condition: String::new(),
                reason: "had no metrics".into(),
                measurements: Vec::new(),
            },
        }
    }

    /// A check that canary traffic stopped after the revert: says what it
    /// found, and ends the rollback once the traffic is gone (or the checks
    /// ran out, unverified).
    fn on_rollback_checked(&mut self, run_index: usize, status: RunStatus) {
        let verified = self.measurement.as_ref().map(|m| m.verdict == Verdict::Pass).unwrap_or(false);
        let found: u32 = self.r.runs.get(run_index).map(|r| r.metrics.iter().map(|m| m.failed).sum()).unwrap_or(0);
        if !verified && status == RunStatus::Running {
            self.note("users still reach the canary after the revert: pinned by affinity cookies or cached DNS; checking again");
            return;
        }
        let note = self.measurement.as_ref().map(|m| m.note.clone()).unwrap_or_default();
        let text = match (verified, found) {
            (true, 0) => format!("canary traffic stopped: {note}"),
            (true, n) => format!("canary traffic stopped: {note}, after {n} check(s) found users still reaching it (pinned sessions)"),
            (false, _) => format!("canary traffic did NOT stop within the checks: {note}; users may still reach the canary"),
        };
        if let Some(f) = self.r.failure.as_mut() {
            f.verified = Some(verified);
            f.verification = Some(text.clone());
        }
        self.note(text);
        self.finish_rollback();
    }

    pub(super) fn on_measured(&mut self, key: &MeasurementKey, outcome: &MeasureOutcome) -> Step {
        self.not_finished()?;
        let plan = self.r.metric_plan(key).cloned().ok_or_else(|| format!("no metric {} in run {}", key.metric, key.run))?;
        let run_index = self
            .r
            .runs
            .iter()
            .position(|r| r.id == key.run && r.status == RunStatus::Running)
            .ok_or_else(|| format!("analysis run {} is not running", key.run))?;
        let run = &mut self.r.runs[run_index];
        let metric = run
            .metrics
            .iter_mut()
            .find(|m| m.name == key.metric && m.status == RunStatus::Running)
            .ok_or_else(|| format!("metric {} is not measuring", key.metric))?;
        if metric.next_index != key.index {
            return Err(format!("stale measurement: {} #{} was already taken (next is #{})", key.metric, key.index, metric.next_index));
        }
        if let Some((wait, since)) = soak_for_data(&plan, outcome, metric.window_ms, metric.soak_since, self.now) {
            let mut record = judge(&plan, outcome, key.index, self.now);
            record.note = wait.describe();
            record.verdict = Verdict::Waiting;
            let next_window = wait.soaked_ms + plan.interval_ms;
            metric.wait(record.clone(), wait, next_window, since);
            let at = self.now + ms(plan.interval_ms);
            metric.next_at = Some(at);
            let next = MeasurementKey { run: key.run, metric: key.metric.clone(), index: metric.next_index };
            let label = run.label.clone();
            self.note(format!("{label}/{} #{}: {}", key.metric, key.index + 1, record.note));
            self.measurement = Some(record);
            self.commands.push(Command::Measure { key: next, at });
            // Too few requests to judge, but real counts of who got which side.
            self.observe_split(outcome);
            return Ok(());
        }
        let record = judge(&plan, outcome, key.index, self.now);
        metric.record(&plan, record.clone());
        let mut next = None;
        if metric.status == RunStatus::Running {
            let at = self.now + ms(plan.interval_ms);
            metric.next_at = Some(at);
            next =
                Some(Command::Measure { key: MeasurementKey { run: key.run, metric: key.metric.clone(), index: metric.next_index }, at });
        } else {
            metric.next_at = None;
        }
        run.settle();
        let (status, kind, label) = (run.status, run.kind.clone(), run.label.clone());
        // The split this measurement counted, kept even when its verdict ends the rollout.
        let split = self.record_split(outcome);
        self.note(format!("{label}/{} #{}: {}", key.metric, key.index + 1, record.note));
        self.measurement = Some(record);
        if let Some(cmd) = next {
            self.commands.push(cmd);
        }
        if kind == RunKind::RollbackCheck {
            self.on_rollback_checked(run_index, status);
            return Ok(());
        }
        match status {
            RunStatus::Failed => {
                let evidence = self.run_evidence(run_index);
                if kind == RunKind::ErrorBudget {
                    self.refuse_start(evidence);
                } else {
                    self.note(format!("analysis {label} failed"));
                    self.start_rollback(evidence, false);
                }
            }
            RunStatus::Inconclusive => {
                if kind == RunKind::ErrorBudget {
                    let evidence = self.run_evidence(run_index);
                    self.refuse_start(evidence);
                } else {
                    self.on_inconclusive(run_index);
                }
            }
            RunStatus::Successful => match kind {
                RunKind::Stage { stage } if stage == self.r.stage && self.r.phase == Phase::Progressing => {
                    self.note(format!("analysis {label} passed"));
                    self.advance();
                }
                RunKind::ErrorBudget => {
                    self.note("error budget is sufficient");
                    self.begin();
                }
                _ => self.note(format!("analysis {label} complete")),
            },
            RunStatus::Running | RunStatus::Cancelled => {}
        }
        self.act_on_split(split);
        Ok(())
    }

    pub(super) fn on_inconclusive(&mut self, run_index: usize) {
        let policy = self.r.plan.on_inconclusive;
        let max = self.r.plan.max_extensions;
        let run = &self.r.runs[run_index];
        let label = run.label.clone();
        let stage_analysis = matches!(run.kind, RunKind::Stage { .. });
        match policy {
            OnInconclusive::Rollback => {
                let evidence = self.run_evidence(run_index);
                self.note(format!("analysis {label} was inconclusive; policy is rollback"));
                self.start_rollback(evidence, false);
            }
            OnInconclusive::Extend if run.extensions < max => {
                let run_id = run.id;
                let mut measures = Vec::new();
                let plans: Vec<_> = run
                    .metrics
                    .iter()
                    .map(|m| self.r.metric_plan(&MeasurementKey { run: run_id, metric: m.name.clone(), index: 0 }).cloned())
                    .collect();
                let run = &mut self.r.runs[run_index];
                run.extensions += 1;
                let n = run.extensions;
                for (m, plan) in run.metrics.iter_mut().zip(plans) {
                    if m.status != RunStatus::Inconclusive {
                        continue;
                    }
                    let Some(plan) = plan else { continue };
                    m.status = RunStatus::Running;
                    m.inconclusive = 0;
                    m.target = m.target.map(|t| t + plan.count.unwrap_or(1));
                    let at = self.now + ms(plan.interval_ms);
                    m.next_at = Some(at);
                    measures
                        .push(Command::Measure { key: MeasurementKey { run: run_id, metric: m.name.clone(), index: m.next_index }, at });
                }
                run.status = RunStatus::Running;
                self.commands.extend(measures);
                self.note(format!("analysis {label} was inconclusive; extending it ({n}/{max})"));
            }
            OnInconclusive::Extend | OnInconclusive::Pause => {
                let id = self.r.runs[run_index].id;
                self.note(format!("analysis {label} was inconclusive; pausing for a person"));
                self.evidence = Some(self.run_evidence(run_index));
                self.pause_for(PauseReason::Inconclusive { run: id, stage_analysis });
            }
        }
    }

    pub(super) fn refuse_start(&mut self, evidence: Evidence) {
        let min = self.r.plan.error_budget.as_ref().and_then(|m| m.condition).map(|c| c.threshold).unwrap_or(0.0);
        let (remaining, reason) = match &evidence {
            Evidence::Analysis { measurements, reason, .. } => (measurements.last().and_then(|m| m.canary), reason.clone()),
            other => (None, other.headline()),
        };
        let evidence = Evidence::ErrorBudget { remaining, min_remaining: min, reason };
        self.cancel_runs(|_| true);
        self.r.phase = Phase::Aborted;
        self.r.finished_at = Some(self.now);
        self.note(format!("refused to start: {}", evidence.headline()));
        self.r.failure = Some(Failure {
            at: self.now,
            stage: self.r.stage,
            phase: Phase::Pending,
            by: None,
            aborted: true,
            weight: Weight::ZERO,
            evidence: evidence.clone(),
            reverted_at: None,
            verified: None,
            verification: None,
            later: Vec::new(),
        });
        self.evidence = Some(evidence);
    }
}

/// Whether an under-sampled measurement should wait for more data rather
/// than count: only with `minSampleSize` and `maxSoak`, and only while the
/// next, wider window still fits under the cap. A soak begins with the window
/// of its first under-sampled measurement and lasts until a measurement is
/// judged, so a background metric soaks afresh after each verdict.
fn soak_for_data(
    plan: &MetricPlan,
    outcome: &MeasureOutcome,
    window_ms: Option<u64>,
    soak_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<(SampleWait, DateTime<Utc>)> {
    let cap = plan.max_soak_ms?;
    let need = plan.min_samples?;
    let have = undersampled(plan, outcome)?;
    let window = window_ms.unwrap_or(plan.interval_ms).max(1);
    let since = soak_since.unwrap_or(now - ms(window));
    let soaked_ms = u64::try_from((now - since).num_milliseconds()).unwrap_or(0);
    if soaked_ms + plan.interval_ms > cap {
        return None;
    }
    let eta_ms = (have > 0).then(|| (need - have).saturating_mul(window) / have);
    Some((SampleWait { have, need, eta_ms, soaked_ms, max_soak_ms: cap }, since))
}
