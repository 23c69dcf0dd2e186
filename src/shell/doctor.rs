//! `sluice doctor`: before a first rollout, check from where Sluice runs —
//! with its identity, its settings, its network — that it can do what the
//! spec asks: move the router's traffic (and roll it back), run each
//! analysis query, file the backlog issue, reach each notification channel,
//! and keep its state. Nothing is changed: no weight set, no message sent,
//! no issue written.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::domain::rollout::{MeasureOutcome, MetricPlan, Plan, Stage};
use crate::domain::spec::RolloutSpec;
use crate::ports::env::AdapterError;
use crate::ports::preflight::{Check, Verdict};
use crate::ports::{backlog, metrics, notify, traffic};
use crate::shell::engine::Engine;

/// Every finding, blockers first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// True when nothing blocks a rollout.
    pub ready: bool,
    /// Blockers, then warnings, then what is fine; in check order within each.
    pub checks: Vec<Check>,
}

impl Report {
    fn of(mut checks: Vec<Check>) -> Self {
        checks.sort_by_key(|c| c.verdict);
        Report { ready: !checks.iter().any(|c| c.verdict == Verdict::Blocker), checks }
    }

    /// Adds a finding made elsewhere (the handler knows how people sign in).
    pub fn add(&mut self, check: Check) {
        let mut checks = std::mem::take(&mut self.checks);
        checks.push(check);
        *self = Report::of(checks);
    }
}

/// Examines a validated spec against the real router, providers, tracker,
/// channels, store and queue.
pub async fn examine(engine: &Engine, spec: &RolloutSpec, plan: &Plan) -> Report {
    let mut checks = Vec::new();
    checks.extend(router(engine, spec).await);
    for metric in metrics_of(plan) {
        checks.push(match metric.needs_preview() {
            true => Check::ok(
                "analysis",
                format!("metric {} (smoke check)", metric.name),
                "probes the preview address the router gives at the preview step",
            ),
            false => analysis(engine, spec, metric).await,
        });
    }
    checks.extend(tracker(engine, spec).await);
    checks.extend(channels(engine, spec));
    checks.extend(state(engine, spec).await);
    checks.push(engine.queue.preflight().await);
    checks.extend(reach(&engine.env.reach));
    Report::of(checks)
}

/// Where this deployment lets credentials go, and which settings specs may
/// name: what a spec is held to (`crate::ports::reach`).
fn reach(rules: &crate::ports::reach::Reach) -> Vec<Check> {
    let mut checks: Vec<Check> = crate::ports::reach::SERVICES
        .iter()
        .map(|s| Check::ok("credentials", format!("{} endpoints", s.words()), rules.allowed_words(*s)))
        .collect();
    checks.push(Check::ok(
        "credentials",
        "settings specs may name",
        format!("{} ({}); never Sluice's own", rules.spec_settings().join(", "), crate::ports::reach::SPEC_SETTINGS_SETTING),
    ));
    checks
}

/// Why an adapter could not be built, without repeating the provider's name.
fn unbuildable(e: &AdapterError) -> String {
    match e {
        AdapterError::Config { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

async fn router(engine: &Engine, spec: &RolloutSpec) -> Vec<Check> {
    match traffic::build(&spec.target, &engine.env) {
        Ok(router) => router.preflight().await,
        Err(e) => vec![Check::blocker("router", spec.target.router.provider.as_str(), unbuildable(&e))],
    }
}

/// Each metric the plan measures, once.
fn metrics_of(plan: &Plan) -> Vec<&MetricPlan> {
    let staged = plan.stages.iter().filter_map(|s| match s {
        Stage::Analysis { analysis } => Some(analysis),
        _ => None,
    });
    let analyses = staged.chain(plan.background.as_ref()).flat_map(|a| a.metrics.iter());
    let mut seen = BTreeSet::new();
    analyses
        .chain(plan.error_budget.as_ref())
        .chain(plan.rollback_check.as_ref())
        .filter(|m| seen.insert((m.name.clone(), m.provider.clone(), m.query.clone())))
        .collect()
}

async fn analysis(engine: &Engine, spec: &RolloutSpec, metric: &MetricPlan) -> Check {
    let name = format!("metric {} ({})", metric.name, metric.provider);
    match metrics::measure(metric, &spec.target, &engine.env, metrics::Window::of(metric)).await {
        MeasureOutcome::Proportions { canary, stable } => Check::ok(
            "analysis",
            name,
            format!(
                "runs now: canary {} failures of {} requests, stable {} of {}",
                canary.failures, canary.total, stable.failures, stable.total
            ),
        ),
        MeasureOutcome::Histograms { canary, stable } => Check::ok(
            "analysis",
            name,
            format!(
                "runs now: {} canary and {} stable request durations in {} buckets",
                canary.total(),
                stable.total(),
                canary.bounds.len()
            ),
        ),
        MeasureOutcome::Value { canary, stable, samples } => {
            let stable = stable.map(|s| format!(", stable {s}")).unwrap_or_default();
            let samples = samples.map(|n| format!(" from {n} samples")).unwrap_or_default();
            Check::ok("analysis", name, format!("runs now: canary {canary}{stable}{samples}"))
        }
        MeasureOutcome::NoData => Check::warning(
            "analysis",
            name,
            "runs, but returns no data now (expected while the canary has no traffic; check the query's names if stable has traffic)",
        ),
        MeasureOutcome::Error { message } => Check::blocker("analysis", name, message),
        MeasureOutcome::Inconclusive { reason } => Check::warning("analysis", name, format!("runs, but cannot decide now: {reason}")),
    }
}

async fn tracker(engine: &Engine, spec: &RolloutSpec) -> Vec<Check> {
    let Some(target) = &spec.backlog else {
        return vec![Check::warning("backlog", "tracker", "none configured: a failed rollout opens no issue")];
    };
    match backlog::build(&target.provider, &target.settings, &engine.env) {
        Ok(tracker) => tracker.preflight().await,
        Err(e) => vec![Check::blocker("backlog", target.provider.as_str(), unbuildable(&e))],
    }
}

fn channels(engine: &Engine, spec: &RolloutSpec) -> Vec<Check> {
    spec.notifications
        .iter()
        .map(|channel| match notify::build(&channel.provider, &channel.settings, &engine.env) {
            Ok(_) => Check::ok("notifications", channel.provider.as_str(), "settings present"),
            Err(e) => Check::blocker("notifications", channel.provider.as_str(), unbuildable(&e)),
        })
        .collect()
}

async fn state(engine: &Engine, spec: &RolloutSpec) -> Vec<Check> {
    match engine.store.active_for_target(&spec.target.name).await {
        Ok(None) => vec![Check::ok("store", "rollout state", "reachable; no rollout of this target is active")],
        Ok(Some(id)) => vec![Check::warning(
            "store",
            "rollout state",
            format!("reachable; rollout {id} of this target is active, so a new start waits for it"),
        )],
        Err(e) => vec![Check::blocker("store", "rollout state", e.to_string())],
    }
}
