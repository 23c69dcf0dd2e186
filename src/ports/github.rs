//! What the GitHub adapters share (Issues for the backlog, Deployments for
//! notifications): one repository, the token from an app setting, and
//! requests as GitHub's REST API version 2022-11-28 asks for them.
//!
//! Settings: `repository` (`owner/name`), `tokenSetting` (the app setting
//! with the token; default `GITHUB_TOKEN`), `apiUrl` (GitHub Enterprise;
//! default `https://api.github.com`).

use crate::ports::env::{req_str, AdapterEnv, AdapterError, Settings};
use crate::ports::reach::{SecretUse, Service};

/// One repository, reached with one token.
pub struct GitHubRepo {
    http: reqwest::Client,
    api: String,
    /// `owner/name`.
    pub repo: String,
    token: String,
}

impl GitHubRepo {
    /// The repository `provider`'s settings name.
    pub fn from_settings(provider: &str, settings: &Settings, env: &AdapterEnv) -> Result<GitHubRepo, AdapterError> {
        let config = |message: String| AdapterError::Config { provider: provider.into(), message };
        // Where the token goes, and which token, before anything else is read.
        let api = env.endpoint(provider, settings, "apiUrl", Service::GitHub)?;
        let token_setting = env
            .secret_name(provider, settings, "tokenSetting", Some("GITHUB_TOKEN"), SecretUse::GitHub)?
            .ok_or_else(|| config("no token".into()))?;
        let repo = req_str(provider, settings, "repository")?;
        if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
            return Err(config(format!("'repository' must be owner/name, not '{repo}'")));
        }
        let token = env.secret(&token_setting).ok_or_else(|| config(format!("app setting {token_setting} (the token) is not set")))?;
        Ok(GitHubRepo { http: env.http.clone(), api, repo: repo.to_string(), token })
    }

    /// A request to `/repos/{owner}/{name}{path}`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_api(method, &format!("/repos/{}{path}", self.repo))
    }

    /// A request to `{path}` on the API itself (`/user`).
    pub fn request_api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", concat!("sluice/", env!("CARGO_PKG_VERSION")))
    }
}
