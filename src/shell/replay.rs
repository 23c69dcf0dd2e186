//! `sluice replay`: a spec's analysis run against a past window of a real
//! metric source, interval by interval, with what Sluice would have decided
//! and why — so a team sees its thresholds and judges at work on a known
//! incident before it lets them act. Nothing is written and no traffic moves:
//! the same judge and the same run limits as a rollout, fed with the
//! provider's answers for `[t - interval, t]` at each step. A source that
//! cannot answer is no evidence: a window it cannot serve is refused before
//! the walk, and an interval it fails to answer is "no data", never a step
//! towards a verdict (a live rollout counts errors; a replay must not).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::rollout::{judge, AnalysisPlan, MetricPlan, MetricRun, Plan, RunStatus, Stage, Verdict};
use crate::domain::spec::Target;
use crate::ports::env::AdapterEnv;
use crate::ports::metrics::{self, Window};

/// The most intervals a replay walks, so a typo in a date cannot run for hours.
pub const MAX_STEPS: usize = 10_000;

/// One measurement of the replay.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRow {
    /// The end of the measured window.
    pub at: DateTime<Utc>,
    /// The analysis it belongs to.
    pub analysis: String,
    /// The metric.
    pub metric: String,
    /// How it was judged.
    pub verdict: Verdict,
    /// Why.
    pub note: String,
    /// What the run would have done after it, if anything: `roll back`, `pass`, `inconclusive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// The whole replay.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// Window start.
    pub from: DateTime<Utc>,
    /// Window end.
    pub to: DateTime<Utc>,
    /// Every measurement, in time order.
    pub rows: Vec<ReplayRow>,
    /// The first time an analysis would have rolled the rollout back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_rollback: Option<DateTime<Utc>>,
    /// Intervals the source did not answer (no data, no verdict).
    pub unmeasured: usize,
}

/// Why a replay cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The window is empty, backwards or too long for its intervals.
    #[error("{0}")]
    Window(String),
    /// The spec measures nothing.
    #[error("the spec has no analysis to replay")]
    NothingToReplay,
    /// The source could not answer for the window's first interval.
    #[error("{metric}: the source cannot serve this window ({message}); no verdict comes from errors")]
    Unserved {
        /// The metric asked.
        metric: String,
        /// What the source said.
        message: String,
    },
}

/// Every analysis of the plan, each once (a template used by several steps
/// is replayed once), background last.
fn analyses(plan: &Plan) -> Vec<&AnalysisPlan> {
    let mut seen = std::collections::BTreeSet::new();
    plan.stages
        .iter()
        .filter_map(|s| match s {
            Stage::Analysis { analysis } => Some(analysis),
            _ => None,
        })
        .chain(plan.background.as_ref())
        // A smoke check probes a preview that exists only during a rollout.
        .filter(|a| !a.metrics.iter().any(MetricPlan::needs_preview))
        .filter(|a| seen.insert(a.label.clone()))
        .collect()
}

/// One metric walked across the window as a run that restarts after each
/// decision, the way successive phases would measure it.
struct Track<'a> {
    analysis: &'a str,
    plan: &'a MetricPlan,
    run: MetricRun,
    next: DateTime<Utc>,
}

/// Replays the plan's analyses over `[from, to]`.
pub async fn replay(
    plan: &Plan,
    target: &Target,
    env: &AdapterEnv,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<ReplayReport, ReplayError> {
    if to <= from {
        return Err(ReplayError::Window(format!("--to ({to}) must be after --from ({from})")));
    }
    let mut tracks: Vec<Track> = analyses(plan)
        .into_iter()
        .flat_map(|a| a.metrics.iter().map(move |m| (a.label.as_str(), m)))
        .map(|(analysis, m)| {
            let first = from + interval(m);
            Track { analysis, plan: m, run: MetricRun::new(m, first), next: first }
        })
        .collect();
    if tracks.is_empty() {
        return Err(ReplayError::NothingToReplay);
    }
    let span = (to - from).num_milliseconds().max(0) as u64;
    let steps: u64 = tracks.iter().map(|t| span / t.plan.interval_ms.max(1)).sum();
    if steps as usize > MAX_STEPS {
        return Err(ReplayError::Window(format!(
            "{steps} measurements over this window; replay at most {MAX_STEPS} (shorten the window or lengthen the intervals)"
        )));
    }
    let first = &tracks[0];
    let probe = Window { ms: first.plan.interval_ms, end: Some(first.next.min(to)) };
    if let crate::domain::rollout::MeasureOutcome::Error { message } = metrics::measure(first.plan, target, env, probe).await {
        return Err(ReplayError::Unserved { metric: first.plan.name.clone(), message });
    }
    let mut rows = Vec::new();
    while let Some(i) = tracks.iter().enumerate().filter(|(_, t)| t.next <= to).min_by_key(|(_, t)| t.next).map(|(i, _)| i) {
        let track = &mut tracks[i];
        let at = track.next;
        let window = Window { ms: track.plan.interval_ms, end: Some(at) };
        let outcome = metrics::measure(track.plan, target, env, window).await;
        let record = judge(track.plan, &outcome, track.run.next_index, at);
        if record.verdict != Verdict::Error {
            track.run.record(track.plan, record.clone());
        }
        let decision = match track.run.status {
            RunStatus::Failed => Some("roll back"),
            RunStatus::Successful => Some("pass"),
            RunStatus::Inconclusive => Some("inconclusive"),
            RunStatus::Running | RunStatus::Cancelled => None,
        };
        if decision.is_some() {
            track.run = MetricRun::new(track.plan, at);
        }
        track.next = at + interval(track.plan);
        rows.push(ReplayRow {
            at,
            analysis: track.analysis.to_string(),
            metric: track.plan.name.clone(),
            verdict: record.verdict,
            note: record.note,
            decision: decision.map(str::to_string),
        });
    }
    let first_rollback = rows.iter().find(|r| r.decision.as_deref() == Some("roll back")).map(|r| r.at);
    let unmeasured = rows.iter().filter(|r| r.verdict == Verdict::Error).count();
    Ok(ReplayReport { from, to, rows, first_rollback, unmeasured })
}

fn interval(plan: &MetricPlan) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(i64::try_from(plan.interval_ms).unwrap_or(i64::MAX / 2))
}

/// The report as a table a person reads.
pub fn text(report: &ReplayReport) -> String {
    let mut out = format!("replay {} → {}\n", report.from.format("%Y-%m-%d %H:%M:%S"), report.to.format("%Y-%m-%d %H:%M:%S"));
    for r in &report.rows {
        let verdict = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Waiting => "waiting",
            Verdict::Error => "no data",
        };
        let decision = r.decision.as_ref().map(|d| format!("  => {d}")).unwrap_or_default();
        out.push_str(&format!("{}  {}/{}  {verdict}: {}{decision}\n", r.at.format("%H:%M:%S"), r.analysis, r.metric, r.note));
    }
    if report.unmeasured > 0 {
        out.push_str(&format!(
            "{} of {} intervals had no data (the source did not answer); they count for nothing\n",
            report.unmeasured,
            report.rows.len()
        ));
    }
    match report.first_rollback {
        Some(at) => out.push_str(&format!("Sluice would have rolled back at {}\n", at.format("%Y-%m-%d %H:%M:%S UTC"))),
        None => out.push_str("Sluice would not have rolled back in this window\n"),
    }
    out
}
