//! Prometheus: an instant query (`GET /api/v1/query`). The first sample of
//! a vector (or a scalar) is the value; an empty vector is no data, never a
//! pass; `NaN` (a ratio over no traffic) is no data too; an error answer is a
//! provider error, which counts toward the consecutive-error limit.
//! Settings: `url`; `azureAuth: true` for Azure Monitor managed Prometheus.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{MetricProvider, MetricQuery, MetricsError, Sample};
use crate::domain::spec::Target;
use crate::ports::azure::auth::AzureCredential;
use crate::ports::env::{req_str, AdapterEnv, AdapterError, Settings};

/// A Prometheus server.
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
    azure: Option<Arc<AzureCredential>>,
}

/// Builds the provider from the metric's settings.
pub fn build(settings: &Settings, _target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let url = req_str("prometheus", settings, "url")?;
    let azure = match settings.get("azureAuth").and_then(Value::as_bool) {
        Some(true) => Some(env.azure_identity("prometheus")?),
        _ => None,
    };
    Ok(Arc::new(Prometheus { base: url.trim_end_matches('/').to_string(), http: env.http.clone(), azure }))
}

/// Reads a sample's value: `[<time>, "<number>"]`.
fn sample_value(sample: &Value) -> Result<Option<f64>, MetricsError> {
    let text = sample.get(1).and_then(Value::as_str).ok_or_else(|| MetricsError::Failed("a sample without a value".into()))?;
    match text {
        "NaN" => Ok(None),
        "+Inf" | "-Inf" => Err(MetricsError::Failed(format!("the query answered {text}"))),
        other => other.parse::<f64>().map(Some).map_err(|_| MetricsError::Failed(format!("'{other}' is not a number"))),
    }
}

#[async_trait]
impl MetricProvider for Prometheus {
    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        let mut request = self.http.get(format!("{}/api/v1/query", self.base)).query(&[("query", q.query.as_str())]);
        if let Some(cred) = &self.azure {
            let token = cred.token("https://prometheus.monitor.azure.com/").await.map_err(|e| MetricsError::Failed(e.to_string()))?;
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| MetricsError::Failed(format!("Prometheus unreachable: {}", e.without_url())))?;
        let status = response.status();
        let body: Value =
            response.json().await.map_err(|e| MetricsError::Failed(format!("Prometheus answered HTTP {status} without JSON: {e}")))?;
        if body.get("status").and_then(Value::as_str) != Some("success") {
            let kind = body.get("errorType").and_then(Value::as_str).unwrap_or("error");
            let error = body.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(if kind == "bad_data" {
                MetricsError::BadQuery(error.to_string())
            } else {
                MetricsError::Failed(format!("{kind}: {error}"))
            });
        }
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        let value = match data.get("resultType").and_then(Value::as_str) {
            Some("vector") => match data.get("result").and_then(Value::as_array).and_then(|r| r.first()) {
                None => None,
                Some(first) => sample_value(first.get("value").unwrap_or(&Value::Null))?,
            },
            Some("scalar") => sample_value(data.get("result").unwrap_or(&Value::Null))?,
            other => return Err(MetricsError::BadQuery(format!("the query gives a {}, not a number", other.unwrap_or("nothing")))),
        };
        Ok(Sample { value, samples: None })
    }
}
