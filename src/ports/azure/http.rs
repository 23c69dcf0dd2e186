//! Calls to Azure REST APIs (ARM, Log Analytics) the way they want to be
//! called: a bearer token for the API's resource (cached, refreshed once on
//! a 401), 429 (and 5xx for idempotent methods) retried with backoff that
//! honours `Retry-After`, and
//! long-running operations polled through `Location` to completion. Errors
//! carry the status and Azure's error code, never a token.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::backoff::AZURE_REST;
use crate::ports::azure::auth::AzureCredential;

/// Attempts for one call before its failure is reported.
const ATTEMPTS: u32 = 5;
/// Longest single wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A failed Azure call.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// No token.
    #[error(transparent)]
    Auth(#[from] crate::ports::azure::auth::AuthError),
    /// The API answered with an error.
    #[error("HTTP {status}: {message}")]
    Status {
        /// Status code.
        status: u16,
        /// Azure's error code and message.
        message: String,
    },
    /// The API could not be reached, or answered nonsense.
    #[error("{0}")]
    Transport(String),
}

/// An answer from an Azure API.
#[derive(Debug, Clone)]
pub struct AzureResponse {
    /// Status code (success only; errors are `AzureError`).
    pub status: u16,
    /// `Location`, for long-running operations.
    pub location: Option<String>,
    /// `Azure-AsyncOperation`, the other way ARM reports a long-running operation.
    pub async_operation: Option<String>,
    /// How long the API asks the caller to wait before polling.
    pub retry_after: Duration,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

/// An authenticated client for one Azure API.
#[derive(Clone)]
pub struct AzureHttp {
    http: reqwest::Client,
    credential: Arc<AzureCredential>,
    resource: String,
    base: String,
}

fn wait_for(response: &reqwest::Response, attempt: u32) -> Duration {
    let header = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
    let hinted = header.and_then(|h| {
        h.trim().parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
            DateTime::parse_from_rfc2822(h.trim()).ok().map(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default())
        })
    });
    hinted.unwrap_or_else(|| AZURE_REST.delay(attempt + 1)).min(MAX_WAIT)
}

fn describe(status: u16, body: &Value) -> AzureError {
    let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("");
    let msg = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
    let message = match (code.is_empty(), msg.is_empty()) {
        (true, true) => "no details".to_string(),
        (false, true) => code.to_string(),
        (true, false) => msg.to_string(),
        (false, false) => format!("{code}: {msg}"),
    };
    AzureError::Status { status, message: message.chars().take(300).collect() }
}

impl AzureHttp {
    /// A client for `base` (e.g. `https://management.azure.com`), with tokens for `resource`.
    pub fn new(http: reqwest::Client, credential: Arc<AzureCredential>, resource: &str, base: &str) -> Self {
        AzureHttp { http, credential, resource: resource.to_string(), base: base.trim_end_matches('/').to_string() }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request, retrying as Azure asks: a 429 (the request was turned
    /// away, not processed) and a failure to connect always; a 5xx or a
    /// broken connection only for idempotent methods. A `POST` (a slot swap)
    /// that may have started is never sent twice: the caller checks what
    /// happened and decides.
    pub async fn send(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<AzureResponse, AzureError> {
        let idempotent = method.is_idempotent();
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let token = self.credential.token(&self.resource).await?;
            let mut request = self.http.request(method.clone(), url).bearer_auth(token);
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if attempt + 1 < ATTEMPTS && (idempotent || e.is_connect()) => {
                    tracing::debug!(error = %e.without_url(), "Azure call failed; retrying");
                    tokio::time::sleep(AZURE_REST.delay(attempt + 1)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(AzureError::Transport(format!("unreachable: {}", e.without_url()))),
            };
            let status = response.status().as_u16();
            if status == 401 && !refreshed {
                self.credential.clear();
                refreshed = true;
                continue;
            }
            if (status == 429 || (status >= 500 && idempotent)) && attempt + 1 < ATTEMPTS {
                let wait = wait_for(&response, attempt);
                tracing::debug!(status, wait_ms = wait.as_millis() as u64, "Azure asked to wait; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (location, async_operation) = (header("location"), header("azure-asyncoperation"));
            let retry_after = wait_for(&response, 1);
            let text = response.text().await.map_err(|e| AzureError::Transport(e.without_url().to_string()))?;
            let body: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
            if status >= 400 {
                return Err(describe(status, &body));
            }
            return Ok(AzureResponse { status, location, async_operation, retry_after, body });
        }
    }

    /// Starts a long-running operation and waits for it, honouring
    /// `Retry-After`, for at most `budget`. ARM reports one in two ways
    /// (Azure REST API guidelines, "Asynchronous operations"): a `201`/`202`
    /// with `Azure-AsyncOperation`, whose `status` is polled until
    /// `Succeeded` (or `Failed`, `Canceled`); or a `202` with `Location`,
    /// polled until it stops answering `202`. Both are followed.
    pub async fn long_running(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        budget: Duration,
    ) -> Result<Value, AzureError> {
        let started = std::time::Instant::now();
        let mut response = self.send(method, url, body).await?;
        let out_of_time = || AzureError::Transport(format!("the operation did not finish within {}s", budget.as_secs()));
        if let (201 | 202, Some(operation)) = (response.status, response.async_operation.clone()) {
            loop {
                if started.elapsed() > budget {
                    return Err(out_of_time());
                }
                tokio::time::sleep(response.retry_after.max(Duration::from_millis(20))).await;
                response = self.send(reqwest::Method::GET, &operation, None).await?;
                match response.body.get("status").and_then(Value::as_str).unwrap_or("InProgress") {
                    "Succeeded" => return Ok(response.body),
                    "Failed" | "Canceled" => {
                        let message = response.body.pointer("/error/message").and_then(Value::as_str).unwrap_or("no details");
                        return Err(AzureError::Status {
                            status: 200,
                            message: format!("the operation ended {}: {message}", response.body["status"]),
                        });
                    }
                    _ => {}
                }
            }
        }
        let mut poll_url = response.location.clone();
        while response.status == 202 {
            let Some(url) = poll_url.clone() else {
                return Err(AzureError::Transport("a long-running operation answered 202 without a Location".into()));
            };
            if started.elapsed() > budget {
                return Err(out_of_time());
            }
            tokio::time::sleep(response.retry_after.max(Duration::from_millis(20))).await;
            response = self.send(reqwest::Method::GET, &url, None).await?;
            if let Some(next) = &response.location {
                poll_url = Some(next.clone());
            }
        }
        Ok(response.body)
    }
}
