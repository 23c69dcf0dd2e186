//! The HTTP client the CLI (and the demo) use to talk to a Sluice
//! deployment — local or in Azure — with the same code. Sluice's key
//! (`SLUICE_API_KEY`) goes in the `x-functions-key` header, a token in
//! `Authorization: Bearer`; the acting person in `x-sluice-user`.

use std::time::Duration;

use serde_json::{json, Value};

use super::sign_in::{SignIn, SignInError};

/// What can go wrong calling Sluice.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Sluice answered with an error.
    #[error("HTTP {status}: {}", message(.body))]
    Http {
        /// Status code.
        status: u16,
        /// The JSON error body.
        body: Value,
    },
    /// No token to sign in with.
    #[error(transparent)]
    SignIn(#[from] SignInError),
    /// Sluice could not be reached.
    #[error("cannot reach Sluice at {url}: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

fn message(body: &Value) -> String {
    let mut m = body.get("message").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(problems) = body.get("problems").and_then(Value::as_array) {
        for p in problems {
            let path = p.get("path").and_then(Value::as_str).unwrap_or("");
            let text = p.get("message").and_then(Value::as_str).unwrap_or("");
            m.push_str(&format!("\n  {}{text}", if path.is_empty() { String::new() } else { format!("{path}: ") }));
        }
    }
    if m.is_empty() {
        body.to_string()
    } else {
        m
    }
}

/// A client of one Sluice deployment.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: Option<String>,
    user: String,
    sign_in: SignIn,
    http: reqwest::Client,
    /// A local `sluice up`'s write token.
    local_token: Option<String>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7071`), acting as `user`.
    pub fn new(base: &str, key: Option<String>, user: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Client { base: base.trim_end_matches('/').to_string(), key, user: user.to_string(), sign_in: SignIn::None, http, local_token: None }
    }

    /// The same client, sending a local `sluice up`'s write token with every call.
    pub fn with_local_token(mut self, token: Option<String>) -> Self {
        self.local_token = token;
        self
    }

    /// The same client, sending an Entra token from `sign_in` with every call.
    pub fn signed_in(mut self, sign_in: SignIn) -> Self {
        self.sign_in = sign_in;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let url = format!("{}/api{path}", self.base);
        let mut req = self.http.request(method, &url).header("x-sluice-user", &self.user);
        if let Some(k) = &self.key {
            req = req.header("x-functions-key", k);
        }
        if let Some(t) = &self.local_token {
            req = req.header(crate::host::local::LOCAL_TOKEN_HEADER, t);
        }
        if let Some(token) = self.sign_in.bearer().await? {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp =
            req.send().await.map_err(|e| ClientError::Unreachable { url: self.base.clone(), reason: e.without_url().to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"message": text}));
        // A 401 that is not Sluice's own refusal (a wrong alert token is) comes from App Service authentication.
        let from_sign_in = value.get("error").and_then(Value::as_str).is_none();
        if status == 401 && from_sign_in && matches!(self.sign_in, SignIn::None) {
            let hint = "Sluice answered 401: it takes only signed-in callers (App Service authentication); \
                        sign in with --entra <app client id> (Azure CLI) or --token";
            return Err(ClientError::Http { status, body: json!({"message": hint}) });
        }
        if status >= 400 {
            return Err(ClientError::Http { status, body: value });
        }
        Ok(value)
    }

    /// Starts a rollout from a spec document.
    pub async fn start(&self, spec: &Value, id: Option<&str>) -> Result<Value, ClientError> {
        let body = match id {
            Some(id) => json!({"spec": spec, "id": id}),
            None => spec.clone(),
        };
        self.call(reqwest::Method::POST, "/rollouts", Some(&body)).await
    }

    /// Runs `sluice doctor` for a spec where Sluice runs; the findings, blockers first.
    pub async fn doctor(&self, spec: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, "/doctor", Some(&json!({ "spec": spec }))).await
    }

    /// What Azure Monitor meets at the alert webhook: called from outside
    /// with no key, no sign-in and no token, as an action group calls it,
    /// with a body Sluice refuses before recording anything. Sluice answers
    /// with its own JSON refusal (401 for the missing token, or 415 where no
    /// token is configured); anything else — App Service authentication's
    /// 401 or a redirect to sign in — means alerts would never arrive.
    pub async fn alert_webhook_check(&self) -> Value {
        let url = format!("{}/api/alerts", self.base);
        let check = |verdict: &str, detail: String| json!({"area": "alerts", "name": "alert webhook from outside", "verdict": verdict, "detail": detail});
        let probe = self.http.post(&url).header("content-type", "text/plain").body("sluice doctor: is the webhook reachable?");
        let response = match probe.send().await {
            Ok(r) => r,
            Err(e) => return check("blocker", format!("unreachable: {}", e.without_url())),
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let sluice_answered = body.get("error").and_then(Value::as_str).is_some();
        match (status, sluice_answered) {
            (401, true) => check("ok", "reaches Sluice without sign-in; its token guards it".into()),
            (415, true) => check("warning", "reaches Sluice without sign-in, and no alert token is configured: anyone can post alerts".into()),
            (_, true) => check("ok", format!("reaches Sluice without sign-in (it answered {status})")),
            (_, false) => check(
                "blocker",
                format!("answered {status} before Sluice saw it: App Service authentication must exclude /api/alerts (excludedPaths), or no alert will arrive"),
            ),
        }
    }

    /// One rollout with its history.
    pub async fn status(&self, id: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, &format!("/rollouts/{id}"), None).await
    }

    /// Rollouts, newest first.
    pub async fn list(&self, active_only: bool) -> Result<Value, ClientError> {
        let q = if active_only { "?active=true" } else { "" };
        self.call(reqwest::Method::GET, &format!("/rollouts{q}"), None).await
    }

    /// Release health over the last `since` (e.g. `30d`), optionally for one service.
    pub async fn report(&self, since: &str, service: Option<&str>) -> Result<Value, ClientError> {
        let service = service.map(|s| format!("&service={s}")).unwrap_or_default();
        self.call(reqwest::Method::GET, &format!("/report?since={since}{service}"), None).await
    }

    /// approve | reject | abort | promote | retry.
    pub async fn action(&self, id: &str, action: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, &format!("/rollouts/{id}/{action}"), Some(body)).await
    }

    /// Reports a failed pipeline stage of release `id` (see `functions/releases.rs`).
    pub async fn report_failure(&self, id: &str, report: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, &format!("/releases/{id}/failure"), Some(report)).await
    }

    /// Whether a release to a target may begin: `{"target"}` or `{"spec"}`.
    pub async fn gate(&self, ask: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, "/gate", Some(ask)).await
    }

    /// Starts a release (one version across waves) from a release spec.
    pub async fn start_release(&self, spec: &Value, id: Option<&str>) -> Result<Value, ClientError> {
        let body = match id {
            Some(id) => json!({"spec": spec, "id": id}),
            None => spec.clone(),
        };
        self.call(reqwest::Method::POST, "/waves", Some(&body)).await
    }

    /// One release: its waves with their rollouts, and its history.
    pub async fn release(&self, id: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, &format!("/waves/{id}"), None).await
    }

    /// A rollout's status, or, when no rollout has this id, the release's.
    pub async fn status_any(&self, id: &str) -> Result<Value, ClientError> {
        match self.status(id).await {
            Err(ClientError::Http { status: 404, body }) => match self.release(id).await {
                Err(ClientError::Http { status: 404, .. }) => Err(ClientError::Http { status: 404, body }),
                other => other,
            },
            other => other,
        }
    }

    /// approve | reject | abort on a release.
    pub async fn release_action(&self, id: &str, action: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(reqwest::Method::POST, &format!("/waves/{id}/{action}"), Some(body)).await
    }

    /// Posts an alert payload to the webhook.
    pub async fn alert(&self, payload: &Value, token: Option<&str>) -> Result<Value, ClientError> {
        let path = match token {
            Some(t) => format!("/alerts?token={t}"),
            None => "/alerts".to_string(),
        };
        self.call(reqwest::Method::POST, &path, Some(payload)).await
    }
}
