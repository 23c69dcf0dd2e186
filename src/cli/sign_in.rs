//! How the CLI signs in to a Sluice that checks tokens (itself, or App
//! Service authentication in front): a bearer token given as is, one the
//! Azure CLI issues for the app registration, or, in a GitHub Actions job,
//! the job's own OIDC token — fetched fresh for every call, so an hours-long
//! follow never outlives its token and no secret is stored; in an Azure
//! Pipelines job, a token for Sluice's app minted from the service
//! connection's federated identity whenever the last one is near its end.
//! No token reaches an error or a log.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("sign-in: {0}")]
pub struct SignInError(pub String);

/// A token and when it expires.
type Cached = Arc<Mutex<Option<(String, DateTime<Utc>)>>>;

/// Where the CLI's bearer token comes from.
#[derive(Clone, Default)]
pub enum SignIn {
    /// No token: Sluice's key alone, or a local Sluice.
    #[default]
    None,
    /// A token given on the command line or in `SLUICE_TOKEN`.
    Token(String),
    /// `az account get-access-token --resource <app>`, cached until shortly before it expires.
    AzureCli {
        /// The app registration's client id, or its Application ID URI.
        resource: String,
        /// The last token and when it expires.
        cached: Cached,
    },
    /// The GitHub Actions job's OIDC token for `audience`, one per call.
    GitHubActions {
        /// The audience Sluice accepts (`SLUICE_GITHUB_AUDIENCE` on its side).
        audience: String,
    },
    /// An Azure Pipelines job's service connection (workload identity
    /// federation): a fresh OIDC token from the job, traded at Entra ID for a
    /// token for Sluice's app, cached until shortly before it expires.
    AzurePipelines {
        /// Sluice's app registration: its client id or Application ID URI.
        app: String,
        /// The last token and when it expires.
        cached: Cached,
    },
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignIn::None => f.write_str("SignIn::None"),
            SignIn::Token(_) => f.write_str("SignIn::Token(..)"),
            SignIn::AzureCli { resource, .. } => write!(f, "SignIn::AzureCli({resource})"),
            SignIn::GitHubActions { audience } => write!(f, "SignIn::GitHubActions({audience})"),
            SignIn::AzurePipelines { app, .. } => write!(f, "SignIn::AzurePipelines({app})"),
        }
    }
}

/// `az account get-access-token --output json`, as documented in
/// MicrosoftDocs/azure-docs-cli `docs-ref-conceptual/includes/refresh-token.md`:
/// `accessToken`, `expiresOn` (a local time) and, since Azure CLI 2.54,
/// `expires_on` (POSIX seconds, the one to use).
#[derive(Deserialize)]
struct AzureCliToken {
    #[serde(rename = "accessToken")]
    access_token: String,
    expires_on: Option<i64>,
}

impl SignIn {
    /// A token from the Azure CLI for `app`: its client id, which names the
    /// app as a resource whatever Application ID URI it has (Learn, Azure
    /// DevOps "Issue Entra tokens with Azure CLI": `--resource
    /// 499b84ac-…`, Azure DevOps' application id), or that URI.
    pub fn azure_cli(app: &str) -> Self {
        SignIn::AzureCli { resource: app.trim().to_string(), cached: Arc::new(Mutex::new(None)) }
    }

    /// Tokens for Sluice's `app` from the Azure Pipelines job's service connection.
    pub fn azure_pipelines(app: &str) -> Self {
        SignIn::AzurePipelines { app: app.trim().to_string(), cached: Arc::new(Mutex::new(None)) }
    }

    /// The bearer token to send, if any.
    pub async fn bearer(&self) -> Result<Option<String>, SignInError> {
        match self {
            SignIn::None => Ok(None),
            SignIn::Token(token) => Ok(Some(token.clone())),
            SignIn::AzureCli { resource, cached } => fresh(cached, from_azure_cli(resource)).await.map(Some),
            SignIn::GitHubActions { audience } => from_github_actions(audience).await.map(Some),
            SignIn::AzurePipelines { app, cached } => fresh(cached, super::azure_pipelines::token_for(app)).await.map(Some),
        }
    }
}

/// The cached token while it has five minutes left, else the one `mint` makes.
async fn fresh(
    cached: &Cached,
    mint: impl std::future::Future<Output = Result<(String, DateTime<Utc>), SignInError>>,
) -> Result<String, SignInError> {
    let mut cached = cached.lock().await;
    if let Some((token, expires)) = cached.as_ref() {
        if *expires - TimeDelta::minutes(5) > Utc::now() {
            return Ok(token.clone());
        }
    }
    let (token, expires) = mint.await?;
    *cached = Some((token.clone(), expires));
    Ok(token)
}

/// The job's token, as GitHub's own toolkit asks for it (actions/toolkit,
/// `packages/core/src/oidc-utils.ts`): GET `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`
/// with `Authorization: Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the answer's
/// `value` is the token. Both variables exist only in a job with `permissions: id-token: write`.
async fn from_github_actions(audience: &str) -> Result<String, SignInError> {
    let missing = |name: &str| {
        SignInError(format!("{name} is not set: run in a GitHub Actions job with `permissions: id-token: write`, or pass --token"))
    };
    let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_URL"))?;
    let request_token = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))?;
    let audience: String = form_urlencoded::byte_serialize(audience.as_bytes()).collect();
    let answer = crate::ports::env::http_client()
        .get(format!("{url}&audience={audience}"))
        .bearer_auth(request_token)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| SignInError(format!("GitHub's token service cannot be reached: {}", e.without_url())))?;
    if !answer.status().is_success() {
        return Err(SignInError(format!("GitHub's token service answered HTTP {}", answer.status().as_u16())));
    }
    #[derive(Deserialize)]
    struct Answer {
        value: String,
    }
    let token: Answer = crate::ports::env::read_json(answer).await.map_err(|e| SignInError(format!("GitHub's token service: {e}")))?;
    if token.value.trim().is_empty() {
        return Err(SignInError("GitHub's token service answered an empty token".into()));
    }
    Ok(token.value)
}

async fn from_azure_cli(resource: &str) -> Result<(String, DateTime<Utc>), SignInError> {
    let output = tokio::process::Command::new("az")
        .args(["account", "get-access-token", "--resource", resource, "--output", "json"])
        .output()
        .await
        .map_err(|e| SignInError(format!("cannot run the Azure CLI (az): {e}; install it and `az login`, or pass --token")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message");
        return Err(SignInError(format!("`az account get-access-token --resource {resource}` failed: {reason}")));
    }
    let answer: AzureCliToken = serde_json::from_slice(&output.stdout)
        .map_err(|e| SignInError(format!("the Azure CLI answered something other than a token ({e})")))?;
    if answer.access_token.trim().is_empty() {
        return Err(SignInError("the Azure CLI answered an empty accessToken".into()));
    }
    // Older CLIs give only a local `expiresOn`: assume the shortest lifetime Entra issues.
    let expires = answer.expires_on.and_then(|s| DateTime::from_timestamp(s, 0)).unwrap_or_else(|| Utc::now() + TimeDelta::minutes(10));
    Ok((answer.access_token, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_names_the_resource_as_it_is() {
        let SignIn::AzureCli { resource, .. } = SignIn::azure_cli(" 0f4a1c2e-1111-2222-3333-444455556666 ") else { panic!("azure cli") };
        assert_eq!(resource, "0f4a1c2e-1111-2222-3333-444455556666");
        let SignIn::AzureCli { resource, .. } = SignIn::azure_cli("api://sluice.contoso.com") else { panic!("azure cli") };
        assert_eq!(resource, "api://sluice.contoso.com");
    }

    #[test]
    fn debug_never_shows_a_token() {
        assert!(!format!("{:?}", SignIn::Token("eyJ-secret".into())).contains("eyJ"));
    }
}
