//! A token for Sluice's app from an Azure Pipelines job's service connection
//! (workload identity federation), minted when needed rather than once at
//! the job's start: the Azure CLI signs in with one federated token that
//! lives about ten minutes and cannot renew it (Azure/azure-cli#28708), so a
//! follow of hours would outlive it.
//!
//! Two requests, as Microsoft's own clients make them:
//! 1. The job's OIDC token: `POST $SYSTEM_OIDCREQUESTURI?api-version=7.1&serviceConnectionId=ID`
//!    with `Authorization: Bearer $SYSTEM_ACCESSTOKEN`, no body; the answer's
//!    `oidcToken` (Azure DevOps' "Sprint 240" release notes; azure-identity's
//!    `AzurePipelinesCredential`, `_credentials/azure_pipelines.py`).
//! 2. Entra ID's client credentials grant with that token as the client
//!    assertion: `POST {authority}/{tenant}/oauth2/v2.0/token`, form
//!    `grant_type=client_credentials`, `client_id`, `client_assertion_type=
//!    urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//!    `client_assertion`, `scope={app}/.default`; the answer's `access_token`
//!    and `expires_in` (learn.microsoft.com/entra/identity-platform,
//!    "Microsoft identity platform and the OAuth 2.0 client credentials
//!    flow", third case: a federated credential).
//!
//! AzureCLI@2 and AzurePowerShell@5 put the connection's id, client id and
//! tenant in `AZURESUBSCRIPTION_SERVICE_CONNECTION_ID`, `_CLIENT_ID` and
//! `_TENANT_ID` (azure-pipelines-tasks, `Tasks/AzureCLIV2/azureclitask.ts`);
//! a step of another kind sets them itself. `SYSTEM_ACCESSTOKEN` reaches a
//! step only when the pipeline maps it (`env: SYSTEM_ACCESSTOKEN: $(System.AccessToken)`).

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::sign_in::SignInError;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra's public cloud; `SLUICE_ENTRA_AUTHORITY` names a sovereign one.
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the job's environment must hold, read at the call.
struct Job {
    oidc_request_uri: String,
    access_token: String,
    connection: String,
    client_id: String,
    tenant: String,
    authority: String,
}

fn setting(names: &[&str], why: &str) -> Result<String, SignInError> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
        .ok_or_else(|| SignInError(format!("{} is not set: {why}", names.join(" or "))))
}

impl Job {
    fn from_env() -> Result<Job, SignInError> {
        let task = "run the step as AzureCLI@2 on a workload identity federation connection, or set it";
        Ok(Job {
            oidc_request_uri: setting(&["SYSTEM_OIDCREQUESTURI"], "run in an Azure Pipelines job (map it: $(System.OidcRequestUri))")?,
            access_token: setting(&["SYSTEM_ACCESSTOKEN"], "map it in the step: `env: SYSTEM_ACCESSTOKEN: $(System.AccessToken)`")?,
            connection: setting(&["SLUICE_SERVICE_CONNECTION_ID", "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID"], task)?,
            client_id: setting(&["AZURESUBSCRIPTION_CLIENT_ID"], task)?,
            tenant: setting(&["AZURESUBSCRIPTION_TENANT_ID"], task)?,
            authority: std::env::var("SLUICE_ENTRA_AUTHORITY")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_AUTHORITY.into()),
        })
    }
}

/// A token for `app` (Sluice's client id or Application ID URI) and when it expires.
pub async fn token_for(app: &str) -> Result<(String, DateTime<Utc>), SignInError> {
    let job = Job::from_env()?;
    let http = crate::ports::env::http_client();
    let assertion = job_oidc_token(&http, &job).await?;
    let scope = format!("{}/.default", app.trim_end_matches('/'));
    let url = format!("{}/{}/oauth2/v2.0/token", job.authority.trim_end_matches('/'), enc(&job.tenant));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", job.client_id.as_str()),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.as_str()),
        ("scope", scope.as_str()),
    ];
    let answer = http
        .post(&url)
        .form(&form)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| SignInError(format!("Entra ID cannot be reached: {}", e.without_url())))?;
    let status = answer.status().as_u16();
    if !answer.status().is_success() {
        let reason = crate::ports::env::read_json::<EntraError>(answer).await.map(|e| e.error).unwrap_or_default();
        return Err(SignInError(format!(
            "Entra ID refused the service connection's token for {app} (HTTP {status} {}); give the connection's \
             app a role on Sluice's app and check its federated credential",
            crate::domain::ids::shown(&reason)
        )));
    }
    let token: EntraToken = crate::ports::env::read_json(answer).await.map_err(|e| SignInError(format!("Entra ID: {e}")))?;
    if token.access_token.trim().is_empty() {
        return Err(SignInError("Entra ID answered an empty access_token".into()));
    }
    let lifetime = token.expires_in.seconds().clamp(0, 24 * 3600);
    Ok((token.access_token, Utc::now() + TimeDelta::seconds(lifetime)))
}

/// The job's OIDC token for its service connection, fresh.
async fn job_oidc_token(http: &reqwest::Client, job: &Job) -> Result<String, SignInError> {
    let separator = if job.oidc_request_uri.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}api-version=7.1&serviceConnectionId={}", job.oidc_request_uri, enc(&job.connection));
    let answer = http
        .post(url)
        .bearer_auth(&job.access_token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        // As azure-identity sends it: a refused token is then a 401, not a redirect to a sign-in page.
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .body(Vec::new())
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(|e| SignInError(format!("Azure DevOps' OIDC token service cannot be reached: {}", e.without_url())))?;
    if !answer.status().is_success() {
        return Err(SignInError(format!(
            "Azure DevOps' OIDC token service answered HTTP {} for service connection {} (is it a workload identity \
             federation connection this pipeline may use?)",
            answer.status().as_u16(),
            crate::domain::ids::shown(&job.connection)
        )));
    }
    let token: OidcAnswer = crate::ports::env::read_json(answer).await.map_err(|e| SignInError(format!("Azure DevOps: {e}")))?;
    match token.oidc_token {
        Some(t) if !t.trim().is_empty() => Ok(t),
        _ => Err(SignInError("Azure DevOps' OIDC token service answered no oidcToken".into())),
    }
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[derive(Deserialize)]
struct OidcAnswer {
    #[serde(rename = "oidcToken")]
    oidc_token: Option<String>,
}

#[derive(Deserialize)]
struct EntraToken {
    access_token: String,
    expires_in: Seconds,
}

#[derive(Deserialize, Default)]
struct EntraError {
    #[serde(default)]
    error: String,
}

/// `expires_in` as a number or, from some endpoints, a string of one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(i64),
    Text(String),
}

impl Seconds {
    fn seconds(&self) -> i64 {
        match self {
            Seconds::Number(n) => *n,
            // Unreadable: take the shortest lifetime Entra issues, so the token is minted again soon.
            Seconds::Text(t) => t.trim().parse().unwrap_or(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_read_as_a_number_or_a_string_of_one() {
        let read = |json: &str| serde_json::from_str::<EntraToken>(json).map(|t| t.expires_in.seconds()).expect(json);
        assert_eq!(read(r#"{"access_token": "t", "expires_in": 3599}"#), 3599);
        assert_eq!(read(r#"{"access_token": "t", "expires_in": "3599"}"#), 3599);
        assert_eq!(read(r#"{"access_token": "t", "expires_in": "soon"}"#), 600);
    }
}
