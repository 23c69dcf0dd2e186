//! An HTTP health probe. The query is the URL (with `{{name}}` and
//! `{{version}}` filled in per side); the value is 1 when the answer has the
//! expected status (and 0 otherwise, unreachable included), or the number at
//! `jsonField` (a dotted path; true/false count as 1/0).
//! Settings: `expectStatus` (default 200), `jsonField`, `bodyContains` (text
//! the body must hold for a 1), `timeoutMs` (default 5000). A preview's smoke
//! check adds the router's headers that reach the canary (as
//! [`PREVIEW_HEADERS_SETTING`], which a spec cannot set: a header written in
//! a spec could carry a credential past the secret checks).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{MetricProvider, MetricQuery, MetricsError, Sample};
use crate::domain::spec::{Target, PREVIEW_HEADERS_SETTING};
use crate::ports::env::{opt_f64, opt_str, AdapterEnv, AdapterError, Settings};

/// Probes a URL.
pub struct HttpProbe {
    http: reqwest::Client,
    expect: u16,
    field: Option<String>,
    body_contains: Option<String>,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
}

/// The probes' own client: unlike the shared one it follows redirects, as a
/// user's browser would; probes carry no credential.
fn probe_client() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(60)).build().unwrap_or_default()
        })
        .clone()
}

/// Builds the probe.
pub fn build(settings: &Settings, _target: &Target, _env: &AdapterEnv) -> Result<Arc<dyn MetricProvider>, AdapterError> {
    let expect = opt_f64(settings, "expectStatus").unwrap_or(200.0);
    if !(100.0..=599.0).contains(&expect) {
        return Err(AdapterError::Config { provider: "httpProbe".into(), message: format!("expectStatus {expect} is not an HTTP status") });
    }
    Ok(Arc::new(HttpProbe {
        http: probe_client(),
        expect: expect as u16,
        field: opt_str(settings, "jsonField").map(str::to_string),
        body_contains: opt_str(settings, "bodyContains").map(str::to_string),
        headers: headers(settings)?,
        timeout: Duration::from_millis(opt_f64(settings, "timeoutMs").unwrap_or(5000.0).clamp(100.0, 60_000.0) as u64),
    }))
}

/// The `headers` setting: names and values a request carries.
fn headers(settings: &Settings) -> Result<reqwest::header::HeaderMap, AdapterError> {
    let mut map = reqwest::header::HeaderMap::new();
    let Some(given) = settings.get(PREVIEW_HEADERS_SETTING) else { return Ok(map) };
    let bad = |message: String| AdapterError::Config { provider: "httpProbe".into(), message };
    let given = given.as_object().ok_or_else(|| bad("the preview's headers must map names to text values".into()))?;
    for (name, value) in given {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("preview header '{name}' is not a header name")))?;
        let value = value
            .as_str()
            .and_then(|v| reqwest::header::HeaderValue::from_str(v).ok())
            .ok_or_else(|| bad(format!("preview header {name}: not a header value")))?;
        map.insert(name, value);
    }
    Ok(map)
}

fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => v.get(i),
        Err(_) => v.get(key),
    })
}

#[async_trait]
impl MetricProvider for HttpProbe {
    async fn query(&self, q: &MetricQuery<'_>) -> Result<Sample, MetricsError> {
        let url = q.query.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(MetricsError::BadQuery(format!("'{url}' is not an http(s) URL")));
        }
        let response = match self.http.get(url).headers(self.headers.clone()).timeout(self.timeout).send().await {
            Ok(r) => r,
            // The thing probed is down: that is a measurement (0), not a provider failure.
            Err(_) => return Ok(Sample { value: Some(0.0), samples: Some(1) }),
        };
        let status_ok = response.status().as_u16() == self.expect;
        let value = match (&self.field, &self.body_contains) {
            (None, Some(text)) => {
                let body = tokio::time::timeout(self.timeout, crate::ports::env::read_text(response)).await;
                let found = matches!(body, Ok(Ok(body)) if body.contains(text.as_str()));
                Some(if status_ok && found { 1.0 } else { 0.0 })
            }
            (None, None) => Some(if status_ok { 1.0 } else { 0.0 }),
            (Some(path), _) => {
                let body: Value = crate::ports::env::read_json(response).await.unwrap_or(Value::Null);
                match at_path(&body, path) {
                    Some(Value::Bool(b)) => Some(if *b { 1.0 } else { 0.0 }),
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                }
            }
        };
        Ok(Sample { value, samples: Some(1) })
    }
}
