//! What every adapter is built with: where local files go, the shared HTTP
//! client, and app settings (where secrets come from — specs only name them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Looks up an app setting by name (the process environment in practice).
pub type SettingsLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The environment adapters are built in.
#[derive(Clone)]
pub struct AdapterEnv {
    /// Directory for local state (`.sluice/`): backlog files, notification logs.
    pub data_dir: PathBuf,
    /// Shared HTTP client (connection pool).
    pub http: reqwest::Client,
    /// App settings lookup (environment variables in practice).
    pub settings: SettingsLookup,
    /// Where people reach this Sluice (for links in issues and messages).
    pub public_url: String,
    /// Entra ID tokens for the Azure adapters, if an identity is configured.
    pub azure: Option<Arc<crate::ports::azure::auth::AzureCredential>>,
}

impl AdapterEnv {
    /// An environment reading app settings from the process environment.
    pub fn new(data_dir: PathBuf, public_url: String) -> Self {
        Self::with_settings(data_dir, public_url, Arc::new(|name| std::env::var(name).ok()))
    }

    /// An environment reading app settings through `settings` (tests inject their own).
    pub fn with_settings(data_dir: PathBuf, public_url: String, settings: SettingsLookup) -> Self {
        let azure = crate::ports::azure::auth::AzureCredential::from_settings(&*settings).map(Arc::new);
        AdapterEnv { data_dir, http: http_client(), settings, public_url, azure }
    }

    /// The Azure identity, or a configuration error naming what to set.
    pub fn azure_identity(&self, provider: &str) -> Result<Arc<crate::ports::azure::auth::AzureCredential>, AdapterError> {
        self.azure.clone().ok_or_else(|| AdapterError::Config {
            provider: provider.to_string(),
            message: "no Azure identity: run with a managed identity (IDENTITY_ENDPOINT), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into(),
        })
    }

    /// The value of an app setting.
    pub fn setting(&self, name: &str) -> Option<String> {
        (self.settings)(name)
    }
}

/// The HTTP client adapters share: bounded timeouts, pooled connections.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(16)
        .build()
        .unwrap_or_default()
}

/// Why an adapter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// No adapter of that name.
    #[error("unknown {port} provider '{name}' (known: {known})")]
    UnknownProvider {
        /// The port.
        port: &'static str,
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The settings do not work for this provider.
    #[error("{provider} settings: {message}")]
    Config {
        /// The provider.
        provider: String,
        /// What is wrong.
        message: String,
    },
}

/// Provider settings as written in a spec.
pub type Settings = BTreeMap<String, Value>;

/// A string setting, if present.
pub fn opt_str<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(Value::as_str)
}

/// A required string setting.
pub fn req_str<'a>(provider: &str, settings: &'a Settings, key: &str) -> Result<&'a str, AdapterError> {
    opt_str(settings, key).ok_or_else(|| AdapterError::Config {
        provider: provider.to_string(),
        message: format!("'{key}' is required and must be a string"),
    })
}

/// A number setting, if present (numbers or numeric strings).
pub fn opt_f64(settings: &Settings, key: &str) -> Option<f64> {
    settings.get(key).and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}

/// Looks up a registry entry by name, with a clear error naming the known ones.
pub fn lookup<F: Copy>(port: &'static str, registry: &[(&'static str, F)], name: &str) -> Result<F, AdapterError> {
    registry.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(|| AdapterError::UnknownProvider {
        port,
        name: name.to_string(),
        known: registry.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
    })
}
