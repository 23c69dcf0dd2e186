//! Calls to Azure REST APIs (ARM, Log Analytics, App Configuration, an AKS
//! cluster's API server) the way they want to be called: authenticated as
//! each API wants ([`Auth`]: an Entra token for the API's resource, cached
//! and refreshed once on a 401; App Configuration's HMAC signature; a
//! cluster's bearer token), 429 (and 5xx for idempotent methods) retried
//! with backoff that honours `Retry-After`, ETags read and `If-Match` sent,
//! and long-running operations polled through `Location` to completion.
//! Errors carry the status and the service's error code, never a secret.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

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
    /// The entity's `ETag`, for a later `If-Match`.
    pub etag: Option<String>,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

/// How requests to one API are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// An Entra ID bearer token for `resource` (ARM, Log Analytics, App Configuration).
    Entra {
        /// Where tokens come from.
        credential: Arc<AzureCredential>,
        /// The API's resource (audience).
        resource: String,
    },
    /// A fixed bearer token (a Kubernetes service account's).
    Bearer(String),
    /// App Configuration's access-key signature (development).
    Hmac {
        /// The access key's id (`Id=` of the connection string).
        id: String,
        /// The decoded access key (`Secret=`).
        secret: Vec<u8>,
    },
}

/// One request: JSON by default, or a body with its own content type, and
/// extra headers (`If-Match`).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Method.
    pub method: reqwest::Method,
    /// Absolute URL.
    pub url: &'a str,
    /// Body and its content type.
    pub body: Option<(&'a str, Vec<u8>)>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    /// A request without a body.
    pub fn new(method: reqwest::Method, url: &'a str) -> Self {
        Call { method, url, body: None, headers: Vec::new() }
    }

    /// With a JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.body("application/json", body.to_string().into_bytes())
    }

    /// With a body of `content_type`.
    pub fn body(mut self, content_type: &'a str, bytes: Vec<u8>) -> Self {
        self.body = Some((content_type, bytes));
        self
    }

    /// With a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// An authenticated client for one Azure API.
#[derive(Clone)]
pub struct AzureHttp {
    http: reqwest::Client,
    auth: Auth,
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
    // ARM's `{"error": {code, message}}`, or a Kubernetes `Status` (`reason`, `message`).
    let text = |pointers: [&str; 2]| pointers.iter().find_map(|p| body.pointer(p).and_then(Value::as_str)).unwrap_or("");
    let code = text(["/error/code", "/reason"]);
    let msg = text(["/error/message", "/message"]);
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
        Self::with_auth(http, Auth::Entra { credential, resource: resource.to_string() }, base)
    }

    /// A client for `base` authenticated by `auth`.
    pub fn with_auth(http: reqwest::Client, auth: Auth, base: &str) -> Self {
        AzureHttp { http, auth, base: base.trim_end_matches('/').to_string() }
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
        let call = Call::new(method, url);
        self.call(&match body {
            Some(b) => call.json(b),
            None => call,
        })
        .await
    }

    /// Sends `call` under the same rules as [`AzureHttp::send`].
    pub async fn call(&self, call: &Call<'_>) -> Result<AzureResponse, AzureError> {
        let idempotent = call.method.is_idempotent();
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let response = match self.request(call).await?.send().await {
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
                if let Auth::Entra { credential, .. } = &self.auth {
                    credential.clear();
                }
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
            let (location, async_operation, etag) = (header("location"), header("azure-asyncoperation"), header("etag"));
            let retry_after = wait_for(&response, 1);
            let text = crate::ports::env::read_text(response).await.map_err(AzureError::Transport)?;
            let body: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
            if status >= 400 {
                return Err(describe(status, &body));
            }
            return Ok(AzureResponse { status, location, async_operation, retry_after, etag, body });
        }
    }

    /// The request for one attempt, signed as the API wants.
    async fn request(&self, call: &Call<'_>) -> Result<reqwest::RequestBuilder, AzureError> {
        self.same_origin(call.url)?;
        let mut request = self.http.request(call.method.clone(), call.url);
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let body = call.body.as_ref().map(|(_, bytes)| bytes.as_slice()).unwrap_or_default();
        if let Some((content_type, bytes)) = &call.body {
            request = request.header(reqwest::header::CONTENT_TYPE, *content_type).body(bytes.clone());
        }
        Ok(match &self.auth {
            Auth::Entra { credential, resource } => request.bearer_auth(credential.token(resource).await?),
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Hmac { id, secret } => {
                let url = reqwest::Url::parse(call.url).map_err(|e| AzureError::Transport(format!("bad URL: {e}")))?;
                for (name, value) in hmac_headers(&call.method, &url, body, id, secret, Utc::now()) {
                    request = request.header(name, value);
                }
                request
            }
        })
    }

    /// The credential goes only to the API's own origin: a `Location` or
    /// `Azure-AsyncOperation` that points elsewhere is refused, not followed.
    fn same_origin(&self, url: &str) -> Result<(), AzureError> {
        let origin = |u: &str| reqwest::Url::parse(u).map(|u| u.origin().ascii_serialization()).ok();
        match (origin(url), origin(&self.base)) {
            (Some(to), Some(base)) if to == base => Ok(()),
            _ => Err(AzureError::Transport(format!(
                "refused to send the credential to {}: not {}",
                origin(url).unwrap_or_else(|| "an unparsable URL".into()),
                origin(&self.base).unwrap_or_default()
            ))),
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

/// App Configuration's HMAC-SHA256 request signature: the headers to add.
/// Source: "HMAC authentication - REST API reference"
/// (learn.microsoft.com/azure/azure-app-configuration/rest-api-authentication-hmac):
/// string-to-sign = `METHOD\npath_and_query\nx-ms-date;host;x-ms-content-sha256`
/// (the signed headers' values), signed with the base64-decoded secret.
pub fn hmac_headers(
    method: &reqwest::Method,
    url: &reqwest::Url,
    body: &[u8],
    id: &str,
    secret: &[u8],
    now: DateTime<Utc>,
) -> Vec<(&'static str, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let date = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let content_hash = b64.encode(Sha256::digest(body));
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let to_sign = format!("{}\n{path_and_query}\n{date};{host};{content_hash}", method.as_str());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(to_sign.as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    vec![
        ("x-ms-date", date),
        ("x-ms-content-sha256", content_hash),
        ("authorization", format!("HMAC-SHA256 Credential={id}&SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}")),
    ]
}
