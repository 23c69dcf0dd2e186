//! Entra ID tokens for the Azure adapters (Table Storage with managed
//! identity, ARM, Log Analytics, Azure Monitor): the Functions app's managed
//! identity (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), a service principal's
//! client credentials (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//! `AZURE_CLIENT_SECRET`) outside Azure, or a given bearer token for
//! development (`SLUICE_AZURE_TOKEN`). Tokens are cached per resource until
//! five minutes before they expire. No secret reaches `Debug` or an error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::{AccessToken, Secret, TokenCredential};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

/// Where tokens come from.
#[derive(Clone)]
enum Source {
    ManagedIdentity { endpoint: String, header: String, client_id: Option<String> },
    ClientSecret { authority: String, tenant: String, client_id: String, secret: String },
    Static { token: String },
}

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
#[error("token for {resource}: {message}")]
pub struct AuthError {
    /// The resource asked for.
    pub resource: String,
    /// What went wrong (no secrets).
    pub message: String,
}

/// A token source with a cache.
pub struct AzureCredential {
    source: Source,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (String, DateTime<Utc>)>>,
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.source {
            Source::ManagedIdentity { .. } => "AzureCredential(managed identity)",
            Source::ClientSecret { .. } => "AzureCredential(client secret)",
            Source::Static { .. } => "AzureCredential(static token)",
        })
    }
}

impl AzureCredential {
    /// The credential the app settings describe, if any (in that order of preference).
    pub fn from_settings(get: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let v = |k: &str| get(k).filter(|s| !s.trim().is_empty());
        let source = if let (Some(endpoint), Some(header)) = (v("IDENTITY_ENDPOINT"), v("IDENTITY_HEADER")) {
            Source::ManagedIdentity { endpoint, header, client_id: v("AZURE_CLIENT_ID").filter(|_| v("AZURE_CLIENT_SECRET").is_none()) }
        } else if let (Some(tenant), Some(client_id), Some(secret)) = (v("AZURE_TENANT_ID"), v("AZURE_CLIENT_ID"), v("AZURE_CLIENT_SECRET"))
        {
            let authority = v("AZURE_AUTHORITY_HOST").unwrap_or_else(|| "https://login.microsoftonline.com".into());
            Source::ClientSecret { authority: authority.trim_end_matches('/').to_string(), tenant, client_id, secret }
        } else if let Some(token) = v("SLUICE_AZURE_TOKEN") {
            Source::Static { token }
        } else {
            return None;
        };
        Some(AzureCredential { source, http: crate::ports::env::http_client(), cache: Mutex::new(HashMap::new()) })
    }

    /// A bearer token for `resource` (e.g. `https://management.azure.com/`).
    pub async fn token(&self, resource: &str) -> Result<String, AuthError> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((token, expires)) = cache.get(resource) {
                if *expires - TimeDelta::minutes(5) > Utc::now() {
                    return Ok(token.clone());
                }
            }
        }
        let (token, expires) = self.fetch(resource).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(resource.to_string(), (token.clone(), expires));
        }
        Ok(token)
    }

    /// Forgets cached tokens (after a 401, say).
    pub fn clear(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    async fn fetch(&self, resource: &str) -> Result<(String, DateTime<Utc>), AuthError> {
        let fail = |message: String| AuthError { resource: resource.to_string(), message };
        let request = match &self.source {
            Source::Static { token } => return Ok((token.clone(), Utc::now() + TimeDelta::hours(1))),
            Source::ManagedIdentity { endpoint, header, client_id } => {
                let mut query = vec![("resource", resource.to_string()), ("api-version", "2019-08-01".to_string())];
                if let Some(id) = client_id {
                    query.push(("client_id", id.clone()));
                }
                self.http.get(endpoint).query(&query).header("X-IDENTITY-HEADER", header)
            }
            Source::ClientSecret { authority, tenant, client_id, secret } => {
                let scope = format!("{}/.default", resource.trim_end_matches('/'));
                self.http.post(format!("{authority}/{tenant}/oauth2/v2.0/token")).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("scope", scope.as_str()),
                ])
            }
        };
        let response = request
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map_err(|e| fail(format!("token endpoint unreachable: {}", e.without_url())))?;
        let status = response.status();
        let body: Value = crate::ports::env::read_json(response).await.unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = body.get("error_description").or_else(|| body.get("error")).and_then(Value::as_str).unwrap_or("");
            return Err(fail(format!("HTTP {status} {}", reason.lines().next().unwrap_or(""))));
        }
        let token = body.get("access_token").and_then(Value::as_str).ok_or_else(|| fail("no access_token in the answer".into()))?;
        // Managed identity says expires_on (epoch seconds, a string); Entra ID says expires_in.
        let expires = match (body.get("expires_on"), body.get("expires_in")) {
            (Some(on), _) => {
                on.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| on.as_i64()).and_then(|secs| DateTime::from_timestamp(secs, 0))
            }
            (None, Some(inn)) => {
                inn.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| inn.as_i64()).map(|secs| Utc::now() + TimeDelta::seconds(secs))
            }
            _ => None,
        }
        .unwrap_or_else(|| Utc::now() + TimeDelta::minutes(10));
        Ok((token.to_string(), expires))
    }
}

#[async_trait]
impl TokenCredential for AzureCredential {
    async fn get_token(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let scope = scopes.first().copied().unwrap_or("https://storage.azure.com/.default");
        let resource = scope.trim_end_matches("/.default").trim_end_matches(".default");
        let resource = format!("{}/", resource.trim_end_matches('/'));
        let token =
            self.token(&resource).await.map_err(|e| azure_core::Error::message(azure_core::error::ErrorKind::Credential, e.to_string()))?;
        let expires = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&resource).map(|(_, e)| *e))
            .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e.timestamp()).ok())
            .unwrap_or_else(|| time::OffsetDateTime::now_utc() + time::Duration::minutes(10));
        Ok(AccessToken::new(Secret::new(token), expires))
    }

    async fn clear_cache(&self) -> azure_core::Result<()> {
        self.clear();
        Ok(())
    }
}
