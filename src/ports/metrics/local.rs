//! Metrics from the local router's own counters over a window, so analysis
//! runs on the real traffic the router is splitting. Settings: `url`
//! (defaults to the target router's `url`). Queries: `error_rate`,
//! `success_rate`, `latency_p50_ms`, `latency_p95_ms`, `latency_p99_ms`,
//! `request_count`, `error_count`, `healthy` (probes the side's `/health`),
//! and `latency_histogram` for the latency judge. The router keeps only the
//! last five minutes: a past window (`sluice replay`) must lie within them.

use std::sync::Arc;

use async_trait::async_trait;

use super::{MetricProvider, MetricQuery, MetricsError, Sample, Side};
use crate::domain::spec::Target;
use crate::domain::stats::Histogram;
use crate::ports::env::{opt_str, AdapterEnv, AdapterError, Settings};
use crate::ports::local_router::{StatsReport, WindowStats, LATENCY_BOUNDS_MS};

/// Reads one local router.
pub struct LocalMetrics {
    base: String,
    http: reqwest::Client,
}

/// Builds the provider; the URL comes from the metric or the target's router.
pub fn build(settings: &Settings, target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let url = opt_str(settings, "url").or_else(|| opt_str(&target.router.settings, "url")).ok_or_else(|| AdapterError::Config {
        provider: "local".into(),
        message: "'url' is required (in the metric's settings or the target router's)".into(),
    })?;
    Ok(Arc::new(LocalMetrics { base: url.trim_end_matches('/').to_string(), http: env.http.clone() }))
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String) -> Result<T, MetricsError> {
    let response = http.get(url).send().await.map_err(|e| MetricsError::Failed(format!("router unreachable: {}", e.without_url())))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = crate::ports::env::read_json(response).await.unwrap_or_default();
        let reason = body.get("message").and_then(serde_json::Value::as_str).map(|e| format!(": {e}")).unwrap_or_default();
        return Err(MetricsError::Failed(format!("router answered HTTP {status}{reason}")));
    }
    crate::ports::env::read_json(response).await.map_err(|e| MetricsError::Failed(format!("unreadable router answer: {e}")))
}

impl LocalMetrics {
    /// One side's numbers over the query's window.
    async fn side(&self, q: &MetricQuery<'_>) -> Result<WindowStats, MetricsError> {
        let window_secs = (q.window_ms / 1000).max(1);
        let end = q.end.map(|t| format!("&end={}", t.timestamp().max(0))).unwrap_or_default();
        let report: StatsReport = get_json(&self.http, format!("{}/_sluice/stats?window={window_secs}s{end}", self.base)).await?;
        Ok(match q.side {
            Side::Canary => report.canary,
            Side::Stable => report.stable,
        })
    }
}

#[async_trait]
impl MetricProvider for LocalMetrics {
    fn tells_sides_apart(&self) -> bool {
        true
    }

    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        let role = match q.side {
            Side::Canary => "canary",
            Side::Stable => "stable",
        };
        if q.query.trim() == "healthy" {
            let v: serde_json::Value = get_json(&self.http, format!("{}/_sluice/health?role={role}", self.base)).await?;
            let healthy = v.get("healthy").and_then(serde_json::Value::as_bool).unwrap_or(false);
            return Ok(Sample { value: Some(if healthy { 1.0 } else { 0.0 }), samples: Some(1) });
        }
        let w = self.side(q).await?;
        let samples = Some(w.requests);
        let value = match q.query.trim() {
            "error_rate" => w.error_rate,
            "success_rate" => w.error_rate.map(|e| 1.0 - e),
            "latency_p50_ms" => w.p50_ms,
            "latency_p95_ms" => w.p95_ms,
            "latency_p99_ms" => w.p99_ms,
            "request_count" => Some(w.requests as f64),
            "error_count" => Some(w.errors as f64),
            other => {
                return Err(MetricsError::BadQuery(format!(
                "'{other}' is not one of error_rate, success_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms, request_count, error_count, healthy"
            )))
            }
        };
        Ok(Sample { value, samples })
    }

    async fn histogram(&self, q: &MetricQuery<'_>) -> Result<Option<Histogram>, MetricsError> {
        if q.query.trim() != "latency_histogram" {
            return Err(MetricsError::BadQuery(format!("'{}' is not a histogram query (use latency_histogram)", q.query.trim())));
        }
        let w = self.side(q).await?;
        let bounds = LATENCY_BOUNDS_MS.to_vec();
        if w.buckets.len() != bounds.len() + 1 {
            return Err(MetricsError::Failed(format!(
                "the router sent {} latency buckets, expected {}",
                w.buckets.len(),
                bounds.len() + 1
            )));
        }
        Ok(Some(Histogram { bounds, counts: w.buckets }))
    }
}
