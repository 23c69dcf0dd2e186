//! The analysis judge: turns a provider's answer into a verdict, and a run's
//! verdicts into its status, with Argo Rollouts' limits (failure limit,
//! consecutive-error limit, inconclusive limit). No data and too few samples
//! are inconclusive, never a pass.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::MeasureOutcome;
use super::history::{MeasurementRecord, Verdict};
use super::plan::{AnalysisPlan, MetricPlan};
use crate::domain::spec::Judge;
use crate::domain::stats;

/// How many recent measurements a metric keeps as evidence.
const RECENT_KEPT: usize = 5;

/// Why an analysis run exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RunKind {
    /// Blocking analysis of the stage with this index.
    Stage {
        /// Stage index.
        stage: usize,
    },
    /// Background analysis across stages.
    Background,
    /// The error-budget gate before start.
    ErrorBudget,
    /// Checking that canary traffic stopped after a rollback.
    RollbackCheck,
}

/// A run's (or a metric's) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunStatus {
    /// Still measuring.
    Running,
    /// Every metric met its count within limits.
    Successful,
    /// Failure limit or consecutive-error limit exceeded.
    Failed,
    /// Inconclusive limit exceeded.
    Inconclusive,
    /// Stopped because the rollout moved on or stopped.
    Cancelled,
}

/// One metric's progress within a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricRun {
    /// Metric name.
    pub name: String,
    /// Status.
    pub status: RunStatus,
    /// Index of the next measurement (also the idempotency key).
    pub next_index: u32,
    /// When the next measurement is due.
    pub next_at: Option<DateTime<Utc>>,
    /// Measurements needed (grows when an inconclusive run is extended).
    pub target: Option<u32>,
    /// Passed measurements.
    pub passed: u32,
    /// Failed measurements.
    pub failed: u32,
    /// Inconclusive measurements.
    pub inconclusive: u32,
    /// Provider errors in total.
    pub errors: u32,
    /// Provider errors in a row.
    pub consecutive_errors: u32,
    /// Failed measurements in a row (provider errors neither break nor extend a streak).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last few measurements.
    pub recent: Vec<MeasurementRecord>,
    /// While the phase soaks for data: what it still needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<SampleWait>,
    /// The query window of the next measurement, when the soak widened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// Where the current soak's window begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_since: Option<DateTime<Utc>>,
}

/// A phase extending its soak until the canary has seen enough requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleWait {
    /// Canary requests seen since the phase began.
    pub have: u64,
    /// Requests needed (`minSampleSize`).
    pub need: u64,
    /// About how long until they are reached at the current rate; `None` without traffic.
    pub eta_ms: Option<u64>,
    /// The soak so far.
    pub soaked_ms: u64,
    /// The cap (`maxSoak`).
    pub max_soak_ms: u64,
}

impl SampleWait {
    /// One line for the status and the history.
    pub fn describe(&self) -> String {
        use crate::domain::spec::duration_text;
        let seconds = |ms: u64| duration_text((ms + 500) / 1000 * 1000);
        let eta = match self.eta_ms {
            Some(ms) => format!("about {} at the current rate", seconds(ms.max(1000))),
            None => "no canary traffic yet".into(),
        };
        format!(
            "waiting for data: {} of {} canary requests, {} more needed ({eta}); soaked {} of at most {}",
            self.have,
            self.need,
            self.need.saturating_sub(self.have),
            seconds(self.soaked_ms),
            seconds(self.max_soak_ms)
        )
    }
}

impl MetricRun {
    /// A metric's run before its first measurement (due at `first_at`).
    pub fn new(plan: &MetricPlan, first_at: DateTime<Utc>) -> Self {
        MetricRun {
            name: plan.name.clone(),
            status: RunStatus::Running,
            next_index: 0,
            next_at: Some(first_at),
            target: plan.count,
            passed: 0,
            failed: 0,
            inconclusive: 0,
            errors: 0,
            consecutive_errors: 0,
            consecutive_failures: 0,
            recent: Vec::new(),
            waiting: None,
            window_ms: None,
            soak_since: None,
        }
    }

    /// Measurements that count toward `target` (errors do not: a flaky
    /// provider delays a verdict, it never produces one).
    pub fn completed(&self) -> u32 {
        self.passed + self.failed + self.inconclusive
    }

    /// Records a measurement taken too early to judge: it counts toward
    /// nothing, and the next one looks back over the whole soak.
    pub fn wait(&mut self, record: MeasurementRecord, wait: SampleWait, next_window_ms: u64, since: DateTime<Utc>) {
        self.soak_since = Some(since);
        self.consecutive_errors = 0;
        self.next_index += 1;
        self.push_recent(record);
        self.waiting = Some(wait);
        self.window_ms = Some(next_window_ms);
    }

    fn push_recent(&mut self, record: MeasurementRecord) {
        self.recent.push(record);
        if self.recent.len() > RECENT_KEPT {
            self.recent.remove(0);
        }
    }

    /// Records a judged measurement and updates the status.
    pub fn record(&mut self, plan: &MetricPlan, record: MeasurementRecord) {
        self.waiting = None;
        self.window_ms = None;
        self.soak_since = None;
        match record.verdict {
            Verdict::Pass => {
                self.passed += 1;
                self.consecutive_errors = 0;
                self.consecutive_failures = 0;
            }
            Verdict::Fail => {
                self.failed += 1;
                self.consecutive_errors = 0;
                self.consecutive_failures += 1;
            }
            Verdict::Inconclusive => {
                self.inconclusive += 1;
                self.consecutive_errors = 0;
                self.consecutive_failures = 0;
            }
            // Never recorded (see `wait`); counts toward nothing if it were.
            Verdict::Waiting => {}
            Verdict::Error => {
                self.errors += 1;
                self.consecutive_errors += 1;
            }
        }
        self.next_index += 1;
        self.push_recent(record);
        let streak = plan.consecutive_failure_limit.is_some_and(|limit| self.consecutive_failures > limit);
        self.status = if self.failed > plan.failure_limit || streak || self.consecutive_errors > plan.consecutive_error_limit {
            RunStatus::Failed
        } else if plan.until_pass && self.passed > 0 {
            RunStatus::Successful
        } else if self.inconclusive > plan.inconclusive_limit {
            RunStatus::Inconclusive
        } else if self.target.map(|t| self.completed() >= t).unwrap_or(false) {
            RunStatus::Successful
        } else {
            RunStatus::Running
        };
    }

    /// Why the metric ended as it did, in words.
    pub fn reason(&self, plan: &MetricPlan) -> String {
        match self.status {
            RunStatus::Failed if self.consecutive_errors > plan.consecutive_error_limit => {
                format!("had {} provider errors in a row (limit {})", self.consecutive_errors, plan.consecutive_error_limit)
            }
            RunStatus::Failed if plan.consecutive_failure_limit.is_some_and(|l| self.consecutive_failures > l) => format!(
                "failed {} measurements in a row (limit {}); last: {}",
                self.consecutive_failures,
                plan.consecutive_failure_limit.unwrap_or_default(),
                self.recent.last().map(|r| r.note.as_str()).unwrap_or("-")
            ),
            RunStatus::Failed => format!(
                "failed {} of {} measurements (failure limit {}); last: {}",
                self.failed,
                self.completed(),
                plan.failure_limit,
                self.recent.last().map(|r| r.note.as_str()).unwrap_or("-")
            ),
            RunStatus::Inconclusive => format!(
                "was inconclusive {} times (limit {}); last: {}",
                self.inconclusive,
                plan.inconclusive_limit,
                self.recent.last().map(|r| r.note.as_str()).unwrap_or("-")
            ),
            RunStatus::Successful => format!("passed {} of {} measurements", self.passed, self.completed()),
            RunStatus::Running => format!("{} of {} measurements so far", self.completed(), target_text(self.target)),
            RunStatus::Cancelled => "was cancelled".into(),
        }
    }
}

fn target_text(t: Option<u32>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "∞".into())
}

/// An analysis run: a set of metrics measured together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// Id within the rollout.
    pub id: u32,
    /// Why it runs.
    pub kind: RunKind,
    /// Label for people.
    pub label: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Overall status.
    pub status: RunStatus,
    /// Times it was extended after being inconclusive.
    pub extensions: u32,
    /// Per-metric progress.
    pub metrics: Vec<MetricRun>,
}

impl AnalysisRun {
    /// Starts a run; every metric's first measurement is due after its initial delay.
    pub fn start(id: u32, kind: RunKind, plan: &AnalysisPlan, now: DateTime<Utc>) -> Self {
        AnalysisRun {
            id,
            kind,
            label: plan.label.clone(),
            started_at: now,
            status: RunStatus::Running,
            extensions: 0,
            metrics: plan.metrics.iter().map(|m| MetricRun::new(m, now + ms(m.initial_delay_ms))).collect(),
        }
    }

    /// Recomputes the run status from its metrics: any failure fails it at
    /// once, then any inconclusive, and it succeeds only when all succeeded.
    pub fn settle(&mut self) {
        let statuses: Vec<RunStatus> = self.metrics.iter().map(|m| m.status).collect();
        self.status = if statuses.contains(&RunStatus::Failed) {
            RunStatus::Failed
        } else if statuses.contains(&RunStatus::Inconclusive) {
            RunStatus::Inconclusive
        } else if !statuses.is_empty() && statuses.iter().all(|s| *s == RunStatus::Successful) {
            RunStatus::Successful
        } else {
            RunStatus::Running
        };
    }

    /// Stops measuring.
    pub fn cancel(&mut self) {
        if self.status == RunStatus::Running || self.status == RunStatus::Inconclusive {
            self.status = RunStatus::Cancelled;
        }
        for m in &mut self.metrics {
            if m.status == RunStatus::Running {
                m.status = RunStatus::Cancelled;
            }
            m.next_at = None;
        }
    }
}

/// Milliseconds as a chrono duration.
pub(crate) fn ms(millis: u64) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(i64::try_from(millis).unwrap_or(i64::MAX / 2))
}

/// Judges one provider answer against a metric's rules.
pub fn judge(plan: &MetricPlan, outcome: &MeasureOutcome, index: u32, at: DateTime<Utc>) -> MeasurementRecord {
    let mut rec = MeasurementRecord {
        at,
        index,
        metric: plan.name.clone(),
        canary: None,
        stable: None,
        samples: None,
        verdict: Verdict::Inconclusive,
        judgement: None,
        note: String::new(),
    };
    match outcome {
        MeasureOutcome::Error { message } => {
            rec.verdict = Verdict::Error;
            rec.note = format!("provider error: {message}");
        }
        MeasureOutcome::NoData => {
            rec.note = "no data".into();
        }
        MeasureOutcome::Inconclusive { reason } => {
            rec.note = format!("inconclusive: {reason}");
        }
        MeasureOutcome::Proportions { canary, stable } => {
            rec.canary = Some(canary.rate());
            rec.stable = Some(stable.rate());
            rec.samples = Some(canary.total);
            judge_compared(plan, canary.total, &mut rec, |max_increase, confidence| {
                stats::compare_error_rates(*canary, *stable, max_increase, confidence)
            });
        }
        MeasureOutcome::Histograms { canary, stable } => {
            rec.canary = canary.quantile_bound(0.95).filter(|v| v.is_finite());
            rec.stable = stable.quantile_bound(0.95).filter(|v| v.is_finite());
            rec.samples = Some(canary.total());
            judge_compared(plan, canary.total(), &mut rec, |max_effect, confidence| {
                stats::compare_latency(canary, stable, max_effect, confidence)
            });
        }
        MeasureOutcome::Value { canary, stable, samples } => {
            rec.canary = canary.is_finite().then_some(*canary);
            rec.stable = stable.filter(|s| s.is_finite());
            rec.samples = *samples;
            let (verdict, note) = judge_value(plan, *canary, *stable, *samples);
            rec.verdict = verdict;
            rec.note = note;
        }
    }
    rec
}

/// Runs the statistical judge the plan names on both sides' data.
fn judge_compared(
    plan: &MetricPlan,
    canary_n: u64,
    rec: &mut MeasurementRecord,
    compare: impl FnOnce(f64, f64) -> Result<stats::Judgement, stats::StatsError>,
) {
    if let Some(short) = too_few(plan, Some(canary_n)) {
        rec.note = short;
        return;
    }
    let (tolerance, confidence) = match &plan.judge {
        Some(Judge::ErrorRate { max_increase, confidence, .. }) => (*max_increase, *confidence),
        Some(Judge::Latency { max_effect, confidence, .. }) => (*max_effect, *confidence),
        None => {
            rec.verdict = Verdict::Error;
            rec.note = "the provider answered with counts, but the metric has no judge".into();
            return;
        }
    };
    match compare(tolerance, confidence) {
        Ok(j) => {
            rec.verdict = match j.decision {
                stats::Decision::Pass => Verdict::Pass,
                stats::Decision::Fail => Verdict::Fail,
                stats::Decision::Inconclusive => Verdict::Inconclusive,
            };
            rec.note = j.words.clone();
            rec.judgement = Some(j);
        }
        Err(stats::StatsError::Empty(side)) => rec.note = format!("inconclusive: no {side} requests in the window"),
        Err(e) => {
            rec.verdict = Verdict::Error;
            rec.note = format!("cannot compare: {e}");
        }
    }
}

/// Why a sample is too small to judge, if it is.
fn too_few(plan: &MetricPlan, samples: Option<u64>) -> Option<String> {
    let min = plan.min_samples?;
    match samples {
        None => Some(format!("sample count unknown (minimum {min})")),
        Some(n) if n < min => Some(format!("{n} samples, fewer than the minimum {min}")),
        Some(_) => None,
    }
}

/// Canary requests behind a measurement when it has too few of them to
/// judge (no data counts as none), so the phase can wait for more.
pub fn undersampled(plan: &MetricPlan, outcome: &MeasureOutcome) -> Option<u64> {
    let min = plan.min_samples?;
    let have = match outcome {
        MeasureOutcome::NoData => 0,
        MeasureOutcome::Value { samples, .. } => (*samples)?,
        MeasureOutcome::Proportions { canary, .. } => canary.total,
        MeasureOutcome::Histograms { canary, .. } => canary.total(),
        MeasureOutcome::Inconclusive { .. } | MeasureOutcome::Error { .. } => return None,
    };
    (have < min).then_some(have)
}

fn judge_value(plan: &MetricPlan, canary: f64, stable: Option<f64>, samples: Option<u64>) -> (Verdict, String) {
    if !canary.is_finite() {
        return (Verdict::Error, format!("provider returned {canary}, not a number"));
    }
    if let Some(short) = too_few(plan, samples) {
        return (Verdict::Inconclusive, short);
    }
    let Some(condition) = plan.condition else {
        return (Verdict::Error, "the provider answered one number, but the metric is judged statistically".into());
    };
    let value = short(canary);
    if !condition.holds(canary) {
        return (Verdict::Fail, format!("{value} is not {condition}"));
    }
    if let Some(b) = &plan.baseline {
        let Some(stable) = stable.filter(|s| s.is_finite()) else {
            return (Verdict::Inconclusive, format!("{value} {condition} but no stable baseline to compare"));
        };
        let lower_better = condition.op.lower_is_better();
        let bound = if lower_better { b.factor * stable + b.slack } else { b.factor * stable - b.slack };
        let ok = if lower_better { canary <= bound } else { canary >= bound };
        let rel = if lower_better { "<=" } else { ">=" };
        let slack = if b.slack > 0.0 { format!(" {} {}", if lower_better { "+" } else { "-" }, short(b.slack)) } else { String::new() };
        let text = format!("canary {value} vs {} × stable {}{slack} = {}", short(b.factor), short(stable), short(bound));
        return if ok {
            (Verdict::Pass, format!("{value} {condition}; {text} ({rel} holds)"))
        } else {
            (Verdict::Fail, format!("{text}: canary is not {rel} the bound"))
        };
    }
    (Verdict::Pass, format!("{value} {condition}"))
}

fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::{Baseline, Condition};

    fn metric(cond: &str) -> MetricPlan {
        MetricPlan {
            name: "m".into(),
            provider: "local".into(),
            query: "error_rate".into(),
            settings: Default::default(),
            condition: Some(Condition::parse(cond).expect("valid")),
            judge: None,
            interval_ms: 1000,
            count: Some(3),
            initial_delay_ms: 0,
            failure_limit: 0,
            consecutive_failure_limit: None,
            consecutive_error_limit: 2,
            inconclusive_limit: 0,
            min_samples: None,
            sample_query: None,
            baseline: None,
            max_soak_ms: None,
            until_pass: false,
        }
    }

    fn value(canary: f64, stable: Option<f64>, samples: Option<u64>) -> MeasureOutcome {
        MeasureOutcome::Value { canary, stable, samples }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
    }

    #[test]
    fn threshold_pass_and_fail() {
        let m = metric("< 0.01");
        assert_eq!(judge(&m, &value(0.005, None, None), 0, now()).verdict, Verdict::Pass);
        let r = judge(&m, &value(0.05, None, None), 0, now());
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.note, "0.0500 is not < 0.01");
    }

    #[test]
    fn no_data_and_few_samples_are_never_a_pass() {
        let mut m = metric("< 0.01");
        assert_eq!(judge(&m, &MeasureOutcome::NoData, 0, now()).verdict, Verdict::Inconclusive);
        m.min_samples = Some(100);
        assert_eq!(judge(&m, &value(0.0, None, Some(99)), 0, now()).verdict, Verdict::Inconclusive);
        assert_eq!(judge(&m, &value(0.0, None, None), 0, now()).verdict, Verdict::Inconclusive);
        assert_eq!(judge(&m, &value(0.0, None, Some(100)), 0, now()).verdict, Verdict::Pass);
    }

    #[test]
    fn non_finite_values_are_errors() {
        let m = metric("< 0.01");
        assert_eq!(judge(&m, &value(f64::NAN, None, None), 0, now()).verdict, Verdict::Error);
        assert_eq!(judge(&m, &value(f64::INFINITY, None, None), 0, now()).verdict, Verdict::Error);
    }

    #[test]
    fn baseline_comparison_both_directions() {
        let mut m = metric("< 1000");
        m.baseline = Some(Baseline { factor: 1.1, slack: 0.0 });
        assert_eq!(judge(&m, &value(210.0, Some(200.0), None), 0, now()).verdict, Verdict::Pass);
        assert_eq!(judge(&m, &value(230.0, Some(200.0), None), 0, now()).verdict, Verdict::Fail);
        assert_eq!(judge(&m, &value(230.0, None, None), 0, now()).verdict, Verdict::Inconclusive);
        let mut up = metric("> 0.5");
        up.baseline = Some(Baseline { factor: 1.0, slack: 0.01 });
        assert_eq!(judge(&up, &value(0.985, Some(0.99), None), 0, now()).verdict, Verdict::Pass);
        assert_eq!(judge(&up, &value(0.95, Some(0.99), None), 0, now()).verdict, Verdict::Fail);
    }

    fn feed(run: &mut MetricRun, plan: &MetricPlan, verdicts: &[Verdict]) {
        for v in verdicts {
            let rec = MeasurementRecord {
                at: now(),
                index: run.next_index,
                metric: plan.name.clone(),
                canary: None,
                stable: None,
                samples: None,
                verdict: *v,
                judgement: None,
                note: String::new(),
            };
            run.record(plan, rec);
        }
    }

    #[test]
    fn breached_for_n_consecutive_intervals() {
        // "Above the threshold for 3 consecutive minutes": interval 1m, consecutive limit 2.
        let mut plan = metric("< 1");
        plan.count = None;
        plan.failure_limit = u32::MAX;
        plan.consecutive_failure_limit = Some(2);
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Fail, Verdict::Fail, Verdict::Pass, Verdict::Fail, Verdict::Error, Verdict::Fail]);
        assert_eq!(run.status, RunStatus::Running, "two in a row, a pass, then two more (an error does not break the streak)");
        feed(&mut run, &plan, &[Verdict::Fail]);
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run.reason(&plan).starts_with("failed 3 measurements in a row (limit 2)"), "{}", run.reason(&plan));
    }

    #[test]
    fn failure_limit_like_argo() {
        let mut plan = metric("< 1");
        plan.failure_limit = 1;
        plan.count = Some(4);
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Fail, Verdict::Pass]);
        assert_eq!(run.status, RunStatus::Running, "one failure is within the limit of 1");
        feed(&mut run, &plan, &[Verdict::Fail]);
        assert_eq!(run.status, RunStatus::Failed, "the second failure exceeds the limit");
    }

    #[test]
    fn consecutive_errors_like_argo_and_errors_do_not_count() {
        let plan = metric("< 1"); // consecutive limit 2, count 3
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Error, Verdict::Error, Verdict::Pass]);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.consecutive_errors, 0);
        feed(&mut run, &plan, &[Verdict::Pass, Verdict::Error, Verdict::Error]);
        assert_eq!(run.status, RunStatus::Running, "errors never complete a metric");
        feed(&mut run, &plan, &[Verdict::Error]);
        assert_eq!(run.status, RunStatus::Failed, "three errors in a row exceed the limit of 2");
    }

    #[test]
    fn success_needs_the_full_count_and_inconclusive_limit_applies() {
        let plan = metric("< 1");
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Pass, Verdict::Pass]);
        assert_eq!(run.status, RunStatus::Running);
        feed(&mut run, &plan, &[Verdict::Pass]);
        assert_eq!(run.status, RunStatus::Successful);
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Inconclusive]);
        assert_eq!(run.status, RunStatus::Inconclusive);
    }

    #[test]
    fn unlimited_metrics_never_succeed_by_count() {
        let mut plan = metric("< 1");
        plan.count = None;
        let mut run = MetricRun::new(&plan, now());
        feed(&mut run, &plan, &[Verdict::Pass; 50]);
        assert_eq!(run.status, RunStatus::Running);
        assert_eq!(run.recent.len(), RECENT_KEPT);
    }
}
