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

use chrono::{DateTime, Utc};

use crate::domain::rollout::{MeasureOutcome, MetricPlan};
use crate::domain::spec::Judge;
use crate::domain::spec::{duration_text, Target};
use crate::domain::stats::{Histogram, Proportion};
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
    /// The window's end; `None` is now (`sluice replay` sets a past one).
    pub end: Option<DateTime<Utc>>,
}

/// The stretch of time a measurement looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Its length.
    pub ms: u64,
    /// Its end; `None` is now.
    pub end: Option<DateTime<Utc>>,
}

impl Window {
    /// The metric's own interval, ending now: a rollout's usual measurement.
    pub fn of(plan: &MetricPlan) -> Window {
        Window { ms: plan.interval_ms, end: None }
    }
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

    /// Runs a query whose answer is request durations in buckets, for the
    /// latency judge; providers without distributions say so.
    async fn histogram(&self, _q: &MetricQuery<'_>) -> Result<Option<Histogram>, MetricsError> {
        Err(MetricsError::BadQuery("this provider cannot answer a histogram (use local or prometheus for the latency judge)".into()))
    }

    /// Whether the provider itself answers per side (beyond the query's
    /// `{{version}}`-style placeholders), so the stable value is worth asking for.
    fn tells_sides_apart(&self) -> bool {
        false
    }
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

/// Takes one measurement of a metric over a window: the canary value, its
/// sample count (from the provider or `sampleQuery`), and the stable value
/// (judged when the metric compares with a baseline, otherwise only shown
/// beside the canary's); for a judged metric, both sides' counts or histograms.
pub async fn measure(plan: &MetricPlan, target: &Target, env: &AdapterEnv, window: Window) -> MeasureOutcome {
    let provider = match build(&plan.provider, &plan.settings, target, env) {
        Ok(p) => p,
        Err(e) => return MeasureOutcome::Error { message: e.to_string() },
    };
    let ask = |text: &str, side: Side| MetricQuery {
        query: render_query(text, target, side, window.ms),
        side,
        target,
        window_ms: window.ms,
        end: window.end,
    };
    match &plan.judge {
        Some(judge) => compared(provider.as_ref(), judge, &ask).await.unwrap_or_else(|e| e),
        None => threshold(provider.as_ref(), plan, &ask).await.unwrap_or_else(|e| e),
    }
}

type Outcome = Result<MeasureOutcome, MeasureOutcome>;

fn failed(context: &str) -> impl Fn(MetricsError) -> MeasureOutcome + '_ {
    move |e| MeasureOutcome::Error { message: if context.is_empty() { e.to_string() } else { format!("{context}: {e}") } }
}

async fn threshold<'a>(provider: &dyn MetricProvider, plan: &MetricPlan, ask: &impl Fn(&str, Side) -> MetricQuery<'a>) -> Outcome {
    let canary = provider.query(&ask(&plan.query, Side::Canary)).await.map_err(failed(""))?;
    let Some(value) = canary.value else { return Ok(MeasureOutcome::NoData) };
    let mut samples = canary.samples;
    if let (Some(sample_query), true) = (&plan.sample_query, plan.min_samples.is_some()) {
        let s = provider.query(&ask(sample_query, Side::Canary)).await.map_err(failed("sample query"))?;
        samples = Some(count(s.value));
    }
    let stable_query = ask(&plan.query, Side::Stable);
    let stable = match &plan.baseline {
        Some(_) => provider.query(&stable_query).await.map_err(failed("stable baseline"))?.value,
        // Not judged, only drawn beside the canary: asked when the query tells the sides apart, and a failure changes nothing.
        None if provider.tells_sides_apart() || stable_query.query != ask(&plan.query, Side::Canary).query => {
            provider.query(&stable_query).await.ok().and_then(|s| s.value)
        }
        None => None,
    };
    Ok(MeasureOutcome::Value { canary: value, stable, samples })
}

/// A count from a provider's number: no data or a negative is zero.
fn count(value: Option<f64>) -> u64 {
    value.filter(|v| v.is_finite() && *v >= 0.0).map(|v| v.round() as u64).unwrap_or(0)
}

async fn compared<'a>(provider: &dyn MetricProvider, judge: &Judge, ask: &impl Fn(&str, Side) -> MetricQuery<'a>) -> Outcome {
    match judge {
        Judge::ErrorRate { failures, requests, .. } => {
            let mut sides = [Proportion { failures: 0, total: 0 }; 2];
            for (slot, side) in sides.iter_mut().zip([Side::Canary, Side::Stable]) {
                let what = side_name(side);
                let f = provider.query(&ask(failures, side)).await.map_err(failed(&format!("{what} failures")))?;
                let n = provider.query(&ask(requests, side)).await.map_err(failed(&format!("{what} requests")))?;
                // Two counters scraped apart can disagree by a request or two.
                let total = count(n.value);
                *slot = Proportion { failures: count(f.value).min(total), total };
            }
            if sides[0].total == 0 {
                return Ok(MeasureOutcome::NoData);
            }
            Ok(MeasureOutcome::Proportions { canary: sides[0], stable: sides[1] })
        }
        Judge::Latency { histogram, .. } => {
            let canary = provider.histogram(&ask(histogram, Side::Canary)).await.map_err(failed("canary histogram"))?;
            let stable = provider.histogram(&ask(histogram, Side::Stable)).await.map_err(failed("stable histogram"))?;
            Ok(match (canary, stable) {
                (Some(canary), Some(stable)) if canary.total() > 0 => MeasureOutcome::Histograms { canary, stable },
                (Some(canary), None) if canary.total() > 0 => {
                    MeasureOutcome::Inconclusive { reason: "the stable version has no requests in the window".into() }
                }
                _ => MeasureOutcome::NoData,
            })
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Canary => "canary",
        Side::Stable => "stable",
    }
}
