//! What every adapter is built with: where local files go, the shared HTTP
//! client, and app settings (where secrets come from — specs only name them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::ports::reach::{Reach, SecretUse, Service};

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
    /// Where credentials may go and which settings specs may name.
    pub reach: Arc<Reach>,
    /// Set while a spec is audited: refusals are collected here instead of
    /// failing the build, secrets are never read, and no call is made.
    audit: Option<Arc<Mutex<Vec<Refused>>>>,
}

/// The name of an app setting a spec may name: only
/// [`AdapterEnv::secret_name`] makes one, so no adapter reads a setting the
/// rules did not see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName(String);

impl SecretName {
    /// The setting's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A spec field the deployment's rules refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The settings key, e.g. `armEndpoint`.
    pub field: String,
    /// Why.
    pub message: String,
}

impl AdapterEnv {
    /// An environment reading app settings from the process environment.
    pub fn new(data_dir: PathBuf, public_url: String) -> Self {
        Self::with_settings(data_dir, public_url, Arc::new(|name| std::env::var(name).ok()))
    }

    /// An environment reading app settings through `settings` (tests inject their own).
    pub fn with_settings(data_dir: PathBuf, public_url: String, settings: SettingsLookup) -> Self {
        let azure = crate::ports::azure::auth::AzureCredential::from_settings(&*settings).map(Arc::new);
        // Bad rules stop `serve` and `up` at start-up (shell::config); the defaults are the strictest.
        let reach = Arc::new(Reach::from_settings(&*settings).unwrap_or_default());
        AdapterEnv { data_dir, http: http_client(), settings, public_url, azure, reach, audit: None }
    }

    /// An environment in which adapters are only built, to find what the
    /// rules refuse: no setting is read, the identity is a stand-in, and
    /// nothing built in it is ever called.
    pub fn auditing(&self) -> (AdapterEnv, Arc<Mutex<Vec<Refused>>>) {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let stand_in = |name: &str| (name == "SLUICE_AZURE_TOKEN").then(|| "audit".to_string());
        let azure = crate::ports::azure::auth::AzureCredential::from_settings(&stand_in).map(Arc::new);
        let env = AdapterEnv {
            data_dir: self.data_dir.clone(),
            http: self.http.clone(),
            settings: Arc::new(|_| None),
            public_url: self.public_url.clone(),
            azure,
            reach: self.reach.clone(),
            audit: Some(sink.clone()),
        };
        (env, sink)
    }

    /// Refuses a setting only Sluice's configuration may choose: a spec that
    /// named a file path could make Sluice write wherever it may (a shell
    /// profile, a deployment's own files).
    pub fn configuration_only(&self, provider: &str, settings: &Settings, field: &str) -> Result<(), AdapterError> {
        match settings.contains_key(field) {
            true => {
                self.refuse(provider, field, "files go in Sluice's data directory, chosen by its configuration, never by a spec".into())
            }
            false => Ok(()),
        }
    }

    /// A refusal: an error, or while auditing a record (and the build goes on).
    fn refuse(&self, provider: &str, field: &str, message: String) -> Result<(), AdapterError> {
        match &self.audit {
            Some(sink) => {
                if let Ok(mut found) = sink.lock() {
                    found.push(Refused { field: field.to_string(), message });
                }
                Ok(())
            }
            None => Err(AdapterError::Refused { provider: provider.to_string(), field: field.to_string(), message }),
        }
    }

    /// The endpoint a spec's `field` names for `service`, or the deployment's
    /// default when it names none; refused unless the deployment allows it.
    pub fn endpoint(&self, provider: &str, settings: &Settings, field: &str, service: Service) -> Result<String, AdapterError> {
        match settings.get(field) {
            None => self.reach.default_endpoint(service).ok_or_else(|| AdapterError::Config {
                provider: provider.to_string(),
                message: format!("'{field}' is required and must be a string"),
            }),
            Some(Value::String(url)) => {
                if let Err(why) = self.reach.check_endpoint(service, url) {
                    self.refuse(provider, field, why)?;
                }
                Ok(url.trim().trim_end_matches('/').to_string())
            }
            Some(_) => Err(AdapterError::Config { provider: provider.to_string(), message: format!("'{field}' must be a string") }),
        }
    }

    /// The app setting a spec names in `field` (else the adapter's `default`),
    /// refused unless specs may name it for `used`; `None` when there is neither.
    pub fn secret_name(
        &self,
        provider: &str,
        settings: &Settings,
        field: &str,
        default: Option<&'static str>,
        used: SecretUse,
    ) -> Result<Option<SecretName>, AdapterError> {
        match settings.get(field) {
            None => Ok(default.map(|d| SecretName(d.to_string()))),
            Some(Value::String(name)) => {
                if let Err(why) = self.reach.check_setting(used, name) {
                    self.refuse(provider, field, why)?;
                }
                Ok(Some(SecretName(name.clone())))
            }
            Some(_) => Err(AdapterError::Config { provider: provider.to_string(), message: format!("'{field}' must be a string") }),
        }
    }

    /// The value of a setting [`AdapterEnv::secret_name`] let through, if set
    /// and not empty (a stand-in while auditing).
    pub fn secret(&self, name: &SecretName) -> Option<String> {
        if self.audit.is_some() {
            return Some("audit".into());
        }
        (self.settings)(&name.0).filter(|v| !v.trim().is_empty())
    }

    /// The token audience of `service` in the deployment's cloud.
    pub fn audience(&self, service: Service) -> String {
        self.reach.cloud.audience(service).unwrap_or_default()
    }

    /// The Azure identity, or a configuration error naming what to set.
    pub fn azure_identity(&self, provider: &str) -> Result<Arc<crate::ports::azure::auth::AzureCredential>, AdapterError> {
        self.azure.clone().ok_or_else(|| AdapterError::Config {
            provider: provider.to_string(),
            message: "no Azure identity: run with a managed identity (IDENTITY_ENDPOINT), or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET".into(),
        })
    }
}

/// The HTTP client adapters share: bounded timeouts, pooled connections.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        // Credentials ride on these requests: a redirect is an answer, never followed
        // (reqwest keeps `Authorization` on a same-host redirect, even to plain HTTP).
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(16)
        .build()
        .unwrap_or_default()
}

/// Most bytes Sluice reads of one answer from a peer: a Prometheus, an
/// Azure API, a tracker or a channel that answers forever is cut off here,
/// never buffered whole.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// An answer's body, read up to [`MAX_ANSWER_BYTES`]: a longer one is an
/// error (and the rest is never read). Time is bounded by the client's timeout.
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_long = || format!("the answer is longer than {} MiB; not read further", MAX_ANSWER_BYTES >> 20);
    if response.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("the answer broke off: {}", e.without_url()))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_capped`] as text (invalid UTF-8 replaced).
pub async fn read_text(response: reqwest::Response) -> Result<String, String> {
    read_capped(response).await.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// [`read_capped`] as JSON.
pub async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, String> {
    let body = read_capped(response).await?;
    serde_json::from_slice(&body).map_err(|e| format!("not the JSON expected: {e}"))
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
    /// A spec field points a credential somewhere the deployment does not
    /// allow, or names a setting specs may not name.
    #[error("{provider} settings: {field}: {message}")]
    Refused {
        /// The provider.
        provider: String,
        /// The settings key.
        field: String,
        /// Why.
        message: String,
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

/// Opens a file of Sluice's own data for appending, readable by its owner
/// only (0600 where permissions exist): notifications, issues and state
/// say what is deployed where.
pub fn open_private_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates Sluice's data directory (and its parents), open to its owner only (0700).
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Makes an existing file of Sluice's owner-only (0600).
pub fn make_private(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

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
