//! Release health, computed from rollouts' states alone: the numbers a team
//! is asked for (how often it ships, how often a change fails, how fast it
//! recovers) and those only Sluice knows (at which weight a failure was
//! caught, how many requests a failed canary served, how long approvals
//! waited). One set of [`Facts`] per rollout feeds three views: the
//! Prometheus exposition, the `sluice.metric` line Application Insights
//! charts, and the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::Weight;
use crate::domain::rollout::{Evidence, Failure, Phase, Rollout, StepTime, Tally};

/// What one rollout contributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    /// The rollout.
    pub id: String,
    /// Its target (the service).
    pub service: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it finished, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its phase.
    pub phase: Phase,
    /// Why it was rolled back or stopped (`alert`, `analysis`, …).
    pub cause: Option<&'static str>,
    /// The canary weight when it failed.
    pub failed_at_weight: Option<Weight>,
    /// Milliseconds from the trigger (the alert's firing, else the decision)
    /// to the router confirming all traffic back on stable.
    pub revert_ms: Option<u64>,
    /// Canary requests its analysis counted.
    pub exposure: u64,
    /// Milliseconds spent waiting for approvals.
    pub approval_wait_ms: u64,
    /// Each step's time to its decision.
    pub steps: Vec<StepTime>,
    /// Backlog calls that failed.
    pub backlog_failures: u32,
    /// Notifications that failed.
    pub notify_failures: u32,
}

impl Facts {
    /// Reads a rollout's facts off its state.
    pub fn of(r: &Rollout) -> Facts {
        let service = r.spec.target.name.to_string();
        Facts::build(r.id.to_string(), service, r.created_at, r.finished_at, r.phase, r.failure.as_ref(), &r.tally)
    }

    /// Reads the facts straight from a stored state's JSON, skipping its
    /// spec and plan (most of its size): for aggregates over every rollout.
    pub fn from_stored(json: &str) -> Result<Facts, serde_json::Error> {
        let s: StoredState = serde_json::from_str(json)?;
        Ok(Facts::build(s.id, s.spec.target.name, s.created_at, s.finished_at, s.phase, s.failure.as_ref(), &s.tally))
    }

    fn build(
        id: String,
        service: String,
        created_at: DateTime<Utc>,
        finished_at: Option<DateTime<Utc>>,
        phase: Phase,
        failure: Option<&Failure>,
        tally: &Tally,
    ) -> Facts {
        let trigger = failure.map(|f| match &f.evidence {
            Evidence::Alert { alert } => alert.fired_at.filter(|t| *t <= f.at).unwrap_or(f.at),
            _ => f.at,
        });
        let revert_ms = match (trigger, failure.and_then(|f| f.reverted_at)) {
            (Some(from), Some(to)) => Some(u64::try_from((to - from).num_milliseconds()).unwrap_or(0)),
            _ => None,
        };
        Facts {
            id,
            service,
            created_at,
            finished_at,
            phase,
            cause: failure.map(|f| cause(&f.evidence)),
            failed_at_weight: failure.filter(|f| !f.aborted).map(|f| f.weight),
            revert_ms,
            exposure: tally.exposure(),
            approval_wait_ms: tally.approval_wait_ms,
            steps: tally.steps.clone(),
            backlog_failures: tally.backlog_failures,
            notify_failures: tally.notify_failures,
        }
    }

    /// Whether the change failed (rolled back; a person's abort is not a failure of the change).
    pub fn failed(&self) -> bool {
        self.phase == Phase::RolledBack
    }

    /// The line Application Insights charts (stdout reaches its `traces`
    /// table at Information level; KQL: `parse_json(substring(message, 14))`).
    pub fn log_line(&self) -> String {
        format!("{METRIC_LINE_PREFIX}{}", serde_json::to_string(self).unwrap_or_default())
    }
}

/// What the facts need of a stored state (unknown fields are skipped unread).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredState {
    #[serde(default)]
    #[allow(dead_code)] // read only to refuse a format this Sluice does not know
    format: crate::domain::format::StateFormat,
    id: String,
    spec: StoredSpec,
    created_at: DateTime<Utc>,
    #[serde(default)]
    finished_at: Option<DateTime<Utc>>,
    phase: Phase,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    tally: Tally,
}

#[derive(Deserialize)]
struct StoredSpec {
    target: StoredTarget,
}

#[derive(Deserialize)]
struct StoredTarget {
    name: String,
}

/// How a `sluice.metric` line begins.
pub const METRIC_LINE_PREFIX: &str = "sluice.metric ";

/// The cause of a failure, as a metric label.
pub fn cause(e: &Evidence) -> &'static str {
    match e {
        Evidence::Analysis { .. } => "analysis",
        Evidence::Alert { .. } => "alert",
        Evidence::Pipeline { .. } => "pipeline",
        Evidence::Rejected { .. } => "rejected",
        Evidence::ApprovalTimeout { .. } => "approvalTimeout",
        Evidence::Router { .. } => "router",
        Evidence::ErrorBudget { .. } => "errorBudget",
        Evidence::SplitMismatch { .. } => "splitMismatch",
        Evidence::Aborted { .. } => "aborted",
    }
}

/// Upper bounds of the time-to-revert histogram, seconds.
pub(crate) const REVERT_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
/// Upper bounds of the time-to-decision histogram, seconds.
pub(crate) const STEP_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0];

/// The Prometheus text exposition (format 0.0.4) of these rollouts.
pub fn exposition(facts: &[Facts]) -> String {
    render(&Tallies::sum(facts))
}

/// The exposition of kept sums (what a store holds for every rollout it
/// keeps). A series appears once it is above zero, so its size follows the
/// services and phases in use, not the rollouts kept. Counters count
/// stored rollouts, so one deleted by retention lowers them (Prometheus
/// reads that as a reset).
pub fn render(t: &Tallies) -> String {
    let mut out = String::new();
    let (mut active, mut finished, mut rollbacks) = (Vec::new(), Vec::new(), Vec::new());
    let mut steps: BTreeMap<(&str, bool), Histogram> = BTreeMap::new();
    let mut revert = Histogram::new(&REVERT_BUCKETS);
    let mut per_service: [Vec<(&str, i64)>; 4] = Default::default();
    for (series, n) in &t.0 {
        let n = *n;
        match series {
            Series::Active { service, phase } => active.push(([("service", service.as_str()), ("phase", phase.as_str())], n)),
            Series::Finished { service, outcome } => finished.push(([("service", service.as_str()), ("outcome", outcome.as_str())], n)),
            Series::Rollbacks { service, cause } => rollbacks.push(([("service", service.as_str()), ("cause", cause.as_str())], n)),
            Series::RevertBucket { le } => revert.set_bucket(*le, n),
            Series::RevertSumMs => revert.sum_ms = n,
            Series::RevertCount => revert.count = n,
            Series::StepBucket { kind, passed, le } => {
                steps.entry((kind, *passed)).or_insert_with(|| Histogram::new(&STEP_BUCKETS)).set_bucket(*le, n)
            }
            Series::StepSumMs { kind, passed } => steps.entry((kind, *passed)).or_insert_with(|| Histogram::new(&STEP_BUCKETS)).sum_ms = n,
            Series::StepCount { kind, passed } => steps.entry((kind, *passed)).or_insert_with(|| Histogram::new(&STEP_BUCKETS)).count = n,
            Series::FailedCanaryRequests { service } => per_service[0].push((service.as_str(), n)),
            Series::BacklogFailures { service } => per_service[1].push((service.as_str(), n)),
            Series::NotifyFailures { service } => per_service[2].push((service.as_str(), n)),
            Series::ApprovalWaitMs { service } => per_service[3].push((service.as_str(), n)),
        }
    }
    let labelled = [
        ("sluice_rollouts_active", "gauge", "Rollouts under way, by service and phase.", active),
        ("sluice_rollouts_finished_total", "counter", "Finished rollouts, by service and outcome.", finished),
        ("sluice_rollbacks_total", "counter", "Rollbacks, by service and cause.", rollbacks),
    ];
    for (name, kind, help, rows) in labelled {
        family(&mut out, name, kind, help);
        for (labels, n) in rows {
            sample(&mut out, name, &labels, n as f64);
        }
    }
    family(
        &mut out,
        "sluice_time_to_revert_seconds",
        "histogram",
        "From the trigger (alert fired or failure decided) to all traffic confirmed on stable.",
    );
    revert.write(&mut out, "sluice_time_to_revert_seconds", &[]);
    family(
        &mut out,
        "sluice_step_decision_seconds",
        "histogram",
        "From entering a step to the decision that left it, by step kind and result.",
    );
    for ((kind, passed), h) in &steps {
        h.write(&mut out, "sluice_step_decision_seconds", &[("kind", kind), ("result", if *passed { "passed" } else { "stopped" })]);
    }
    let counters = [
        ("sluice_failed_canary_requests_total", "Requests served by canaries that were rolled back (as their analysis counted them).", 1.0),
        ("sluice_backlog_failures_total", "Backlog calls (open or comment an issue) that failed.", 1.0),
        ("sluice_notification_failures_total", "Notifications that failed.", 1.0),
        ("sluice_approval_wait_seconds_total", "Time rollouts spent waiting for approvals.", 1000.0),
    ];
    for ((name, help, divisor), rows) in counters.into_iter().zip(per_service) {
        family(&mut out, name, "counter", help);
        for (service, n) in rows {
            sample(&mut out, name, &[("service", service)], n as f64 / divisor);
        }
    }
    out
}

/// A finished phase as an outcome label.
pub(crate) fn outcome(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "succeeded",
        Phase::RolledBack => "rolledBack",
        Phase::Aborted => "aborted",
        _ => "active",
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let _ = writeln!(out, "{name}{} {}", label_text(labels), number(value));
}

fn label_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    format!("{v}")
}

/// A cumulative histogram with fixed bounds, drawn from kept sums.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<i64>,
    sum_ms: i64,
    count: i64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum_ms: 0, count: 0 }
    }

    fn set_bucket(&mut self, le: usize, n: i64) {
        if let Some(c) = self.counts.get_mut(le) {
            *c = n;
        }
    }

    fn write(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let le = number(*b);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            sample(out, &format!("{name}_bucket"), &l, *c as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        sample(out, &format!("{name}_bucket"), &l, self.count as f64);
        sample(out, &format!("{name}_sum"), labels, self.sum_ms as f64 / 1000.0);
        sample(out, &format!("{name}_count"), labels, self.count as f64);
    }
}

/// One service's (or everyone's) health over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The service, or `all`.
    pub service: String,
    /// Rollouts that finished in the period.
    pub finished: u64,
    /// Of which succeeded: deployments.
    pub deployments: u64,
    /// Of which rolled back: failed changes.
    pub failed: u64,
    /// Of which a person aborted.
    pub aborted: u64,
    /// Rollouts still under way.
    pub active: u64,
    /// Deployments per week over the period.
    pub deploys_per_week: f64,
    /// Failed / (deployments + failed); none without either.
    pub change_failure_rate: Option<f64>,
    /// Mean seconds from trigger to traffic back on stable.
    pub mean_time_to_restore_secs: Option<f64>,
    /// Failures caught before full exposure, by canary weight (`"5"`: 5 %).
    pub caught_at: BTreeMap<String, u64>,
    /// Failures found only at 100 %: every user saw them.
    pub escaped: u64,
    /// Requests served by canaries that were rolled back.
    pub exposure_requests: u64,
    /// Seconds spent waiting for approvals, in all.
    pub approval_wait_secs: f64,
    /// Mean seconds a rollout that waited for approval waited.
    pub mean_approval_wait_secs: Option<f64>,
    /// Rollbacks by cause.
    pub causes: BTreeMap<String, u64>,
}

/// The release-health report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Start of the period.
    pub from: DateTime<Utc>,
    /// End of the period.
    pub to: DateTime<Utc>,
    /// Everything together.
    pub overall: Health,
    /// Per service, by name.
    pub services: Vec<Health>,
    /// Finished rollouts over time, for a chart of the trend.
    pub trend: Trend,
}

/// Finished rollouts by day (periods up to two weeks), week (up to half a year)
/// or 30 days, counted by when they finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trend {
    /// Days each bucket spans.
    pub bucket_days: u32,
    /// From midnight (UTC) of the period's first day, each `bucket_days`
    /// long, so a day's bucket is that calendar day and carries its date.
    pub buckets: Vec<Bucket>,
}

/// One span of the trend.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Its start.
    pub from: DateTime<Utc>,
    /// Succeeded rollouts.
    pub deployments: u64,
    /// Rolled-back rollouts.
    pub failed: u64,
    /// Rollouts a person aborted.
    pub aborted: u64,
}

impl Trend {
    fn over(facts: &[&Facts], from: DateTime<Utc>, to: DateTime<Utc>) -> Trend {
        let period = (to - from).num_seconds().max(1);
        let bucket_days: u32 = match period / 86_400 {
            0..=14 => 1,
            15..=182 => 7,
            _ => 30,
        };
        let span = i64::from(bucket_days) * 86_400;
        let start = from.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
        let covered = (to - start).num_seconds().max(1);
        let count = usize::try_from((covered + span - 1) / span).unwrap_or(1).max(1);
        let mut buckets: Vec<Bucket> =
            (0..count).map(|i| Bucket { from: start + chrono::TimeDelta::seconds(span * i as i64), ..Bucket::default() }).collect();
        for f in facts {
            let Some(at) = f.finished_at else { continue };
            let i = usize::try_from((at - start).num_seconds() / span).unwrap_or(0).min(count - 1);
            let Some(b) = buckets.get_mut(i) else { continue };
            match f.phase {
                Phase::Succeeded => b.deployments += 1,
                Phase::Aborted => b.aborted += 1,
                _ if f.failed() => b.failed += 1,
                _ => {}
            }
        }
        Trend { bucket_days, buckets }
    }
}

/// The report over `[from, to]`: rollouts that finished in it (and those
/// still active), optionally only one service's.
pub fn report(facts: &[Facts], from: DateTime<Utc>, to: DateTime<Utc>, service: Option<&str>) -> Report {
    let weeks = ((to - from).num_seconds().max(1) as f64) / (7.0 * 86_400.0);
    let chosen: Vec<&Facts> = facts
        .iter()
        .filter(|f| service.map_or(true, |s| f.service == s))
        .filter(|f| f.finished_at.map_or(true, |t| t >= from && t <= to))
        .collect();
    let mut per: BTreeMap<&str, Vec<&Facts>> = BTreeMap::new();
    for f in &chosen {
        per.entry(f.service.as_str()).or_default().push(f);
    }
    Report {
        from,
        to,
        overall: health("all", &chosen, weeks),
        services: per.into_iter().map(|(s, fs)| health(s, &fs, weeks)).collect(),
        trend: Trend::over(&chosen, from, to),
    }
}

fn health(service: &str, facts: &[&Facts], weeks: f64) -> Health {
    let mut h = Health { service: service.to_string(), ..Health::default() };
    let (mut restore, mut restored, mut waited) = (0u64, 0u64, 0u64);
    for f in facts {
        if f.finished_at.is_none() {
            h.active += 1;
            continue;
        }
        h.finished += 1;
        h.approval_wait_secs += f.approval_wait_ms as f64 / 1000.0;
        waited += u64::from(f.approval_wait_ms > 0);
        match f.phase {
            Phase::Succeeded => h.deployments += 1,
            Phase::Aborted => h.aborted += 1,
            _ => {}
        }
        if !f.failed() {
            continue;
        }
        h.failed += 1;
        h.exposure_requests += f.exposure;
        *h.causes.entry(f.cause.unwrap_or("unknown").to_string()).or_default() += 1;
        match f.failed_at_weight {
            Some(w) if w.percent() < 100 => *h.caught_at.entry(w.percent().to_string()).or_default() += 1,
            _ => h.escaped += 1,
        }
        if let Some(ms) = f.revert_ms {
            restore += ms;
            restored += 1;
        }
    }
    h.deploys_per_week = round2(h.deployments as f64 / weeks);
    h.change_failure_rate = (h.deployments + h.failed > 0).then(|| round2(h.failed as f64 / (h.deployments + h.failed) as f64));
    h.mean_time_to_restore_secs = (restored > 0).then(|| round_ms(restore as f64 / 1000.0 / restored as f64));
    h.mean_approval_wait_secs = (waited > 0).then(|| round_ms(h.approval_wait_secs / waited as f64));
    h.approval_wait_secs = round_ms(h.approval_wait_secs);
    h
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Seconds kept to the millisecond: a local revert takes a few of them.
fn round_ms(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub mod tallies;
pub use tallies::{Series, Tallies};

#[cfg(test)]
mod tests;
