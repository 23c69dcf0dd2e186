//! The metrics port: answer a query with a number for one side (canary or
//! stable) over a window. [`measure`] turns a metric's plan into the
//! outcome the judge reads — canary value, stable baseline and sample count —
//! so providers stay small: one query in, one number out.

pub mod azure_monitor;
pub mod http_probe;
pub mod local;
pub mod log_analytics;
pub mod prometheus;

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::rollout::{MeasureOutcome, MetricPlan};
use crate::domain::spec::{duration_text, Target};
use crate::ports::env::{lookup, AdapterEnv, AdapterError, Settings};

/// Which version a query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The canary.
    Canary,
    /// The stable version.
    Stable,
}

/// One query to run.
#[derive(Debug, Clone)]
pub struct MetricQuery<'a> {
    /// The query text with placeholders filled in.
    pub query: String,
    /// Which side.
    pub side: Side,
    /// The target.
    pub target: &'a Target,
    /// Query window.
    pub window_ms: u64,
}

/// A provider's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The number; `None` is no data.
    pub value: Option<f64>,
    /// Samples behind it, if the provider knows.
    pub samples: Option<u64>,
}

/// What can go wrong asking a provider.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The provider failed or could not be reached.
    #[error("{0}")]
    Failed(String),
    /// The query is not one the provider understands.
    #[error("bad query: {0}")]
    BadQuery(String),
}

/// A source of metric values.
#[async_trait]
pub trait MetricProvider: Send + Sync {
    /// Runs one query.
    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError>;
}

/// Builds a provider from a metric's settings.
pub type Factory = fn(&Settings, &Target, &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError>;

/// Metric providers by name. A new provider is one file and one line here.
pub const PROVIDERS: &[(&str, Factory)] = &[
    ("local", local::build),
    ("prometheus", prometheus::build),
    ("logAnalytics", log_analytics::build_workspace),
    ("applicationInsights", log_analytics::build_app),
    ("azureMonitor", azure_monitor::build),
    ("httpProbe", http_probe::build),
];

/// The provider a metric names.
pub fn build(provider: &str, settings: &Settings, target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    lookup("metrics", PROVIDERS, provider)?(settings, target, env)
}

/// Fills `{{name}}`, `{{version}}` and `{{window}}` for one side, plus
/// `{{canary.name}}`, `{{canary.version}}`, `{{stable.name}}`, `{{stable.version}}`.
pub fn render_query(query: &str, target: &Target, side: Side, window_ms: u64) -> String {
    let this = match side {
        Side::Canary => &target.canary,
        Side::Stable => &target.stable,
    };
    query
        .replace("{{name}}", &this.name)
        .replace("{{version}}", &this.version)
        .replace("{{window}}", &duration_text(window_ms))
        .replace("{{canary.name}}", &target.canary.name)
        .replace("{{canary.version}}", &target.canary.version)
        .replace("{{stable.name}}", &target.stable.name)
        .replace("{{stable.version}}", &target.stable.version)
}

/// Takes one measurement of a metric: the canary value, its sample count
/// (from the provider or `sampleQuery`), and the stable value when the
/// metric compares with a baseline.
pub async fn measure(plan: &MetricPlan, target: &Target, env: &AdapterEnv) -> MeasureOutcome {
    let provider = match build(&plan.provider, &plan.settings, target, env) {
        Ok(p) => p,
        Err(e) => return MeasureOutcome::Error { message: e.to_string() },
    };
    let window = plan.interval_ms;
    let ask = |text: &str, side: Side| MetricQuery { query: render_query(text, target, side, window), side, target, window_ms: window };
    let canary = match provider.query(&ask(&plan.query, Side::Canary)).await {
        Ok(s) => s,
        Err(e) => return MeasureOutcome::Error { message: e.to_string() },
    };
    let Some(value) = canary.value else { return MeasureOutcome::NoData };
    let mut samples = canary.samples;
    if let (Some(sample_query), true) = (&plan.sample_query, plan.min_samples.is_some()) {
        match provider.query(&ask(sample_query, Side::Canary)).await {
            Ok(s) => samples = s.value.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v as u64).or(Some(0)),
            Err(e) => return MeasureOutcome::Error { message: format!("sample query: {e}") },
        }
    }
    let stable = match &plan.baseline {
        None => None,
        Some(_) => match provider.query(&ask(&plan.query, Side::Stable)).await {
            Ok(s) => s.value,
            Err(e) => return MeasureOutcome::Error { message: format!("stable baseline: {e}") },
        },
    };
    MeasureOutcome::Value { canary: value, stable, samples }
}
