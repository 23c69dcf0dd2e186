//! Application Insights and Log Analytics: a KQL query (with `{{name}}`,
//! `{{version}}`, `{{window}}` filled in per side) through the query API.
//! The first numeric cell of the first table is the value; an empty table is
//! no data; a column named `samples` gives the sample count.
//! Settings: `workspaceId` (provider `logAnalytics`) or `appId` (provider
//! `applicationInsights`); optional `endpoint`.

use crate::ports::reach::Service;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{MetricProvider, MetricQuery, MetricsError, Sample};
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{req_str, AdapterEnv, AdapterError, Settings};

/// One workspace or Application Insights app.
pub struct LogQuery {
    api: AzureHttp,
    path: String,
}

/// The Log Analytics query API. Source: Microsoft Learn, "Azure Monitor Log
/// Analytics API request format" (`https://api.loganalytics.azure.com/v1/
/// workspaces/{workspaceId}/query`; `api.loganalytics.io` is the older host
/// name, still served). Tokens keep the audience `https://api.loganalytics.io`.
pub const LOG_ANALYTICS_ENDPOINT: &str = "https://api.loganalytics.azure.com";

/// `logAnalytics`: a Log Analytics workspace.
pub fn build_workspace(settings: &Settings, _target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let endpoint = env.endpoint("logAnalytics", settings, "endpoint", Service::LogAnalytics)?;
    let id = req_str("logAnalytics", settings, "workspaceId")?;
    let api = AzureHttp::new(env.http.clone(), env.azure_identity("logAnalytics")?, &env.audience(Service::LogAnalytics), &endpoint);
    Ok(Arc::new(LogQuery { path: format!("{}/v1/workspaces/{id}/query", api.base()), api }))
}

/// `applicationInsights`: an Application Insights app.
pub fn build_app(settings: &Settings, _target: &Target, env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let endpoint = env.endpoint("applicationInsights", settings, "endpoint", Service::AppInsights)?;
    let id = req_str("applicationInsights", settings, "appId")?;
    let api = AzureHttp::new(env.http.clone(), env.azure_identity("applicationInsights")?, &env.audience(Service::AppInsights), &endpoint);
    Ok(Arc::new(LogQuery { path: format!("{}/v1/apps/{id}/query", api.base()), api }))
}

fn number(cell: &Value) -> Option<f64> {
    cell.as_f64().or_else(|| cell.as_str().and_then(|s| s.parse().ok()))
}

#[async_trait]
impl MetricProvider for LogQuery {
    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        // `timespan` is an ISO 8601 period: a duration back from now, or
        // `start/end` for a past window (Microsoft Learn, Log Analytics
        // query API `QueryBody.timespan`).
        let seconds = (q.window_ms / 1000).max(1);
        let timespan = match q.end {
            None => format!("PT{seconds}S"),
            Some(end) => {
                let start = end - chrono::TimeDelta::seconds(seconds as i64);
                format!("{}/{}", start.format("%Y-%m-%dT%H:%M:%SZ"), end.format("%Y-%m-%dT%H:%M:%SZ"))
            }
        };
        let body = json!({"query": q.query, "timespan": timespan});
        let answer =
            self.api.send(reqwest::Method::POST, &self.path, Some(&body)).await.map_err(|e| MetricsError::Failed(e.to_string()))?;
        let Some(table) = answer.body.pointer("/tables/0") else { return Ok(Sample { value: None, samples: None }) };
        let columns: Vec<String> = table
            .get("columns")
            .and_then(Value::as_array)
            .map(|c| c.iter().map(|c| c.get("name").and_then(Value::as_str).unwrap_or("").to_string()).collect())
            .unwrap_or_default();
        let Some(row) = table.pointer("/rows/0").and_then(Value::as_array) else { return Ok(Sample { value: None, samples: None }) };
        let samples = columns.iter().position(|c| c == "samples").and_then(|i| row.get(i)).and_then(number).map(|n| n.max(0.0) as u64);
        let value = row
            .iter()
            .enumerate()
            .filter(|(i, _)| columns.get(*i).map(|c| c != "samples").unwrap_or(true))
            .find_map(|(_, cell)| number(cell));
        match value {
            Some(v) => Ok(Sample { value: Some(v), samples }),
            None if row.iter().all(Value::is_null) => Ok(Sample { value: None, samples }),
            None => Err(MetricsError::BadQuery("the first row has no numeric cell".into())),
        }
    }
}
