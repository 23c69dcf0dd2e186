//! Azure Monitor platform metrics (`GET {resource}/providers/Microsoft.Insights/metrics`).
//! The query is a metric name (`Requests`) or a ratio of two (`Http5xx/Requests`,
//! whose denominator is also the sample count). Settings: `resourceId` (with
//! `{{name}}` placeholders, e.g. `…/sites/orders/slots/{{name}}`),
//! `aggregation` (Total, Average, Maximum, Minimum, Count; default Total),
//! `interval` (default PT1M), `filter` (a dimension filter, e.g.
//! `Instance eq '*'`), `armEndpoint`.

use crate::ports::reach::Service;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde_json::Value;

use super::{render_query, MetricProvider, MetricQuery, MetricsError, Sample};
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError, Settings};

/// Metrics of one resource.
pub struct AzureMonitor {
    arm: AzureHttp,
    resource: String,
    aggregation: String,
    interval: String,
    filter: Option<String>,
}

const AGGREGATIONS: [&str; 5] = ["Total", "Average", "Maximum", "Minimum", "Count"];

/// Builds the provider.
pub fn build(settings: &Settings, _target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let name = "azureMonitor";
    let endpoint = env.endpoint(name, settings, "armEndpoint", Service::Arm)?;
    let resource = req_str(name, settings, "resourceId")?.to_string();
    let aggregation = opt_str(settings, "aggregation").unwrap_or("Total").to_string();
    if !AGGREGATIONS.contains(&aggregation.as_str()) {
        return Err(AdapterError::Config {
            provider: name.into(),
            message: format!("aggregation '{aggregation}' is not one of {}", AGGREGATIONS.join(", ")),
        });
    }
    Ok(Arc::new(AzureMonitor {
        arm: AzureHttp::new(env.http.clone(), env.azure_identity(name)?, &env.audience(Service::Arm), &endpoint),
        resource,
        aggregation,
        interval: opt_str(settings, "interval").unwrap_or("PT1M").to_string(),
        filter: opt_str(settings, "filter").map(str::to_string),
    }))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

impl AzureMonitor {
    /// Combines every data point of a metric over the window.
    fn combine(&self, metric: &Value) -> Option<f64> {
        let field = self.aggregation.to_ascii_lowercase();
        let points: Vec<f64> = metric
            .get("timeseries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|ts| ts.get("data").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|p| p.get(&field).and_then(Value::as_f64))
            .collect();
        if points.is_empty() {
            return None;
        }
        Some(match self.aggregation.as_str() {
            "Average" => points.iter().sum::<f64>() / points.len() as f64,
            "Maximum" => points.iter().cloned().fold(f64::MIN, f64::max),
            "Minimum" => points.iter().cloned().fold(f64::MAX, f64::min),
            _ => points.iter().sum(),
        })
    }
}

#[async_trait]
impl MetricProvider for AzureMonitor {
    fn tells_sides_apart(&self) -> bool {
        self.resource.contains("{{") || self.filter.as_deref().is_some_and(|f| f.contains("{{"))
    }

    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        let names: Vec<&str> = q.query.split('/').map(str::trim).filter(|s| !s.is_empty()).collect();
        if names.is_empty() || names.len() > 2 {
            return Err(MetricsError::BadQuery(format!("'{}' is not a metric name or a ratio A/B", q.query)));
        }
        let resource = render_query(&self.resource, q.target, q.side, q.window_ms);
        let end = q.end.unwrap_or_else(Utc::now);
        let start = end - TimeDelta::milliseconds(q.window_ms.max(60_000) as i64);
        let timespan = format!("{}/{}", start.format("%Y-%m-%dT%H:%M:%SZ"), end.format("%Y-%m-%dT%H:%M:%SZ"));
        let mut url = format!(
            "{}{}/providers/Microsoft.Insights/metrics?api-version=2024-02-01&metricnames={}&timespan={}&interval={}&aggregation={}",
            self.arm.base(),
            resource,
            encode(&names.join(",")),
            encode(&timespan),
            encode(&self.interval),
            self.aggregation
        );
        if let Some(f) = &self.filter {
            url.push_str(&format!("&$filter={}", encode(&render_query(f, q.target, q.side, q.window_ms))));
        }
        let answer = self.arm.send(reqwest::Method::GET, &url, None).await.map_err(|e| MetricsError::Failed(e.to_string()))?;
        let metrics = answer.body.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
        let find = |name: &str| {
            metrics.iter().find(|m| m.pointer("/name/value").and_then(Value::as_str).map(|n| n.eq_ignore_ascii_case(name)).unwrap_or(false))
        };
        let first = find(names[0]).ok_or_else(|| MetricsError::BadQuery(format!("the resource has no metric {}", names[0])))?;
        let a = self.combine(first);
        match names.get(1) {
            None => Ok(Sample { value: a, samples: None }),
            Some(denominator) => {
                let b = self
                    .combine(find(denominator).ok_or_else(|| MetricsError::BadQuery(format!("the resource has no metric {denominator}")))?);
                match (a, b) {
                    (_, None) | (_, Some(0.0)) => Ok(Sample { value: None, samples: Some(0) }),
                    (a, Some(b)) => Ok(Sample { value: Some(a.unwrap_or(0.0) / b), samples: Some(b.max(0.0) as u64) }),
                }
            }
        }
    }
}
