//! Prometheus: an instant query (`GET /api/v1/query`). The first sample of
//! a vector (or a scalar) is the value; an empty vector is no data, never a
//! pass; `NaN` (a ratio over no traffic) is no data too; an error answer is a
//! provider error, which counts toward the consecutive-error limit.
//! A histogram query (`sum by (le) (increase(…_bucket[…]))`) answers one
//! series per `le` bucket, cumulative, which become the latency judge's
//! buckets. A past window (`sluice replay`) is the `time` parameter.
//! Settings: `url`; `azureAuth: true` for Azure Monitor managed Prometheus.
//! Source: Prometheus docs, "HTTP API" (`/api/v1/query`, `query`, `time`,
//! the `vector` and `scalar` result types) and "Histograms and summaries"
//! (cumulative `le` buckets ending with `+Inf`).

use crate::ports::reach::Service;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{MetricProvider, MetricQuery, MetricsError, Sample};
use crate::domain::spec::Target;
use crate::domain::stats::Histogram;
use crate::ports::azure::auth::AzureCredential;
use crate::ports::env::{req_str, AdapterEnv, AdapterError, Settings};

/// A Prometheus server.
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
    /// The identity and the token audience, with `azureAuth`.
    azure: Option<(Arc<AzureCredential>, String)>,
}

/// Builds the provider from the metric's settings.
pub fn build(settings: &Settings, _target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let (url, azure) = match settings.get("azureAuth").and_then(Value::as_bool) {
        // The managed identity's token goes only to the cloud's Azure Monitor workspaces.
        Some(true) => (
            env.endpoint("prometheus", settings, "url", Service::Prometheus)?,
            Some((env.azure_identity("prometheus")?, env.audience(Service::Prometheus))),
        ),
        _ => (req_str("prometheus", settings, "url")?.trim_end_matches('/').to_string(), None),
    };
    Ok(Arc::new(Prometheus { base: url, http: env.http.clone(), azure }))
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

impl Prometheus {
    /// Runs an instant query and returns its `data` member.
    async fn instant(&self, q: &MetricQuery<'_>) -> Result<Value, MetricsError> {
        let mut params = vec![("query", q.query.clone())];
        if let Some(end) = q.end {
            params.push(("time", end.timestamp().to_string()));
        }
        let mut request = self.http.get(format!("{}/api/v1/query", self.base)).query(&params);
        if let Some((cred, cred_audience)) = &self.azure {
            let token = cred.token(cred_audience).await.map_err(|e| MetricsError::Failed(e.to_string()))?;
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| MetricsError::Failed(format!("Prometheus unreachable: {}", e.without_url())))?;
        let status = response.status();
        let body: Value = crate::ports::env::read_json(response)
            .await
            .map_err(|e| MetricsError::Failed(format!("Prometheus answered HTTP {status}: {e}")))?;
        if body.get("status").and_then(Value::as_str) != Some("success") {
            let kind = body.get("errorType").and_then(Value::as_str).unwrap_or("error");
            let error = body.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(if kind == "bad_data" {
                MetricsError::BadQuery(error.to_string())
            } else {
                MetricsError::Failed(format!("{kind}: {error}"))
            });
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// Cumulative `le` buckets to per-bucket counts; a counter reset that makes
/// a bucket smaller than the one below counts as zero.
fn buckets(series: &[Value]) -> Result<Option<Histogram>, MetricsError> {
    let mut cumulative: Vec<(f64, f64)> = Vec::new();
    for s in series {
        let le = s.pointer("/metric/le").and_then(Value::as_str).ok_or_else(|| {
            MetricsError::BadQuery("a histogram query must answer one series per 'le' label (sum by (le) (…_bucket))".into())
        })?;
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse::<f64>().map_err(|_| MetricsError::Failed(format!("le=\"{le}\" is not a number")))?
        };
        let count = sample_value(s.get("value").unwrap_or(&Value::Null))?.unwrap_or(0.0);
        cumulative.push((bound, count));
    }
    if cumulative.is_empty() {
        return Ok(None);
    }
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    if cumulative.last().map(|(b, _)| b.is_finite()).unwrap_or(true) {
        return Err(MetricsError::BadQuery("the histogram has no le=\"+Inf\" bucket".into()));
    }
    let mut counts = Vec::with_capacity(cumulative.len());
    let mut below = 0.0;
    for (_, c) in &cumulative {
        counts.push((c - below).max(0.0).round() as u64);
        below = c.max(below);
    }
    let bounds = cumulative.iter().map(|(b, _)| *b).filter(|b| b.is_finite()).collect();
    Ok(Some(Histogram { bounds, counts }))
}

#[async_trait]
impl MetricProvider for Prometheus {
    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        let data = self.instant(q).await?;
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

    async fn histogram(&self, q: &MetricQuery<'_>) -> Result<Option<Histogram>, MetricsError> {
        let data = self.instant(q).await?;
        match (data.get("resultType").and_then(Value::as_str), data.get("result").and_then(Value::as_array)) {
            (Some("vector"), Some(series)) => buckets(series),
            _ => Err(MetricsError::BadQuery("a histogram query must answer a vector of 'le' buckets".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn series(le: &str, v: &str) -> Value {
        json!({"metric": {"le": le}, "value": [1_800_000_000.0, v]})
    }

    #[test]
    fn cumulative_buckets_become_counts_in_bound_order() {
        let answer = [series("+Inf", "10"), series("0.1", "4"), series("0.05", "1"), series("0.25", "9")];
        let h = buckets(&answer).expect("valid").expect("data");
        assert_eq!(h.bounds, vec![0.05, 0.1, 0.25]);
        assert_eq!(h.counts, vec![1, 3, 5, 1]);
    }

    #[test]
    fn a_histogram_without_le_or_inf_is_a_bad_query_and_none_is_no_data() {
        assert!(matches!(buckets(&[json!({"metric": {}, "value": [0, "1"]})]), Err(MetricsError::BadQuery(_))));
        assert!(matches!(buckets(&[series("0.1", "1")]), Err(MetricsError::BadQuery(_))));
        assert_eq!(buckets(&[]).expect("valid"), None);
    }
}
