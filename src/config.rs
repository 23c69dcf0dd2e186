//! Configuration from app settings (environment variables), the only way
//! Azure Functions configures an app. Every setting is listed in
//! [`SETTINGS`] (and the README table, checked by a test); reading them
//! reports every missing or inconsistent one at once, by name, and never
//! echoes a secret's value.

use std::path::PathBuf;

/// Where Sluice runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `sluice serve`: the Azure Functions custom handler.
    Serve,
    /// `sluice up`: the local host.
    Up,
}

/// Which store adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory.
    Sqlite,
}

/// Which queue adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// The embedded queue (consumed in-process).
    Embedded,
}

/// The configuration Sluice starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// Port to listen on (`FUNCTIONS_CUSTOMHANDLER_PORT` under `serve`).
    pub port: Option<u16>,
    /// Store adapter.
    pub store: StoreKind,
    /// Queue adapter.
    pub queue: QueueKind,
    /// Local state directory (SQLite, backlog files).
    pub data_dir: PathBuf,
    /// The alert webhook's shared token.
    pub alert_token: Option<String>,
    /// Base URL for links in issues and messages.
    pub public_url: Option<String>,
}

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The setting's name.
    pub setting: &'static str,
    /// What is wrong (never the value of a secret).
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// Every app setting Sluice reads: name, and what it is for.
pub const SETTINGS: &[(&str, &str)] = &[
    ("FUNCTIONS_CUSTOMHANDLER_PORT", "Port the Functions host gives the custom handler (set by the host; required by `serve`)."),
    ("FUNCTIONS_WORKER_RUNTIME", "Must be `Custom` for the Functions host to start Sluice as a custom handler."),
    ("SLUICE_STORE", "Store adapter: `sqlite` (the embedded file). Required by `serve`; `up` defaults to `sqlite`."),
    ("SLUICE_QUEUE", "Queue adapter: `embedded` (consumed in-process). Required by `serve`; `up` defaults to `embedded`."),
    ("SLUICE_DATA_DIR", "Directory for the embedded store and queue, backlog files and notification logs (default `.sluice`)."),
    ("SLUICE_ALERT_TOKEN", "Shared secret the alert webhook requires (`?token=`, `x-sluice-token` or `Authorization: Bearer`). Required by `serve`, at least 16 characters."),
    ("SLUICE_PUBLIC_URL", "Base URL people reach Sluice at, for links in issues and messages (default `https://$WEBSITE_HOSTNAME`, else the local address)."),
    ("WEBSITE_HOSTNAME", "Set by App Service; the default public host name."),
    ("RUST_LOG", "Log filter (default `info`)."),
];

/// Reads the configuration, reporting every problem at once.
pub fn from_env(get: &dyn Fn(&str) -> Option<String>, mode: Mode) -> Result<AppConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let value = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut problem = |setting: &'static str, message: String| problems.push(ConfigProblem { setting, message });

    let port = match (value("FUNCTIONS_CUSTOMHANDLER_PORT"), mode) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                problem("FUNCTIONS_CUSTOMHANDLER_PORT", format!("'{p}' is not a port number (1-65535)"));
                None
            }
        },
        (None, Mode::Serve) => {
            problem("FUNCTIONS_CUSTOMHANDLER_PORT", "is not set; the Functions host sets it when it starts the custom handler".into());
            None
        }
        (None, Mode::Up) => None,
    };
    let store = match (value("SLUICE_STORE").as_deref(), mode) {
        (Some("sqlite"), _) | (None, Mode::Up) => StoreKind::Sqlite,
        (Some(other), _) => {
            problem("SLUICE_STORE", format!("'{other}' is not a store this build has (sqlite)"));
            StoreKind::Sqlite
        }
        (None, Mode::Serve) => {
            problem("SLUICE_STORE", "is not set; choose the store: sqlite".into());
            StoreKind::Sqlite
        }
    };
    let queue = match (value("SLUICE_QUEUE").as_deref(), mode) {
        (Some("embedded"), _) | (None, Mode::Up) => QueueKind::Embedded,
        (Some(other), _) => {
            problem("SLUICE_QUEUE", format!("'{other}' is not a queue this build has (embedded)"));
            QueueKind::Embedded
        }
        (None, Mode::Serve) => {
            problem("SLUICE_QUEUE", "is not set; choose the queue: embedded".into());
            QueueKind::Embedded
        }
    };
    let alert_token = value("SLUICE_ALERT_TOKEN");
    match (&alert_token, mode) {
        (Some(t), _) if t.chars().count() < 16 => {
            problem("SLUICE_ALERT_TOKEN", format!("is {} characters long; use at least 16 random characters", t.chars().count()))
        }
        (None, Mode::Serve) => problem("SLUICE_ALERT_TOKEN", "is not set; the alert webhook must not be open to anyone".into()),
        _ => {}
    }
    let public_url = match value("SLUICE_PUBLIC_URL") {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            problem("SLUICE_PUBLIC_URL", format!("'{u}' is not an http(s) URL"));
            None
        }
        Some(u) => Some(u.trim_end_matches('/').to_string()),
        None => value("WEBSITE_HOSTNAME").map(|h| format!("https://{h}")),
    };
    if mode == Mode::Serve {
        if let Some(rt) = value("FUNCTIONS_WORKER_RUNTIME") {
            if !rt.eq_ignore_ascii_case("custom") {
                problem("FUNCTIONS_WORKER_RUNTIME", format!("is '{rt}'; a custom handler needs 'Custom'"));
            }
        }
    }
    let data_dir = PathBuf::from(value("SLUICE_DATA_DIR").unwrap_or_else(|| ".sluice".into()));
    if problems.is_empty() {
        Ok(AppConfig { port, store, queue, data_dir, alert_token, public_url })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn serve_reports_every_missing_setting_at_once() {
        let problems = from_env(&env(&[]), Mode::Serve).expect_err("incomplete");
        let names: Vec<&str> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(names, ["FUNCTIONS_CUSTOMHANDLER_PORT", "SLUICE_STORE", "SLUICE_QUEUE", "SLUICE_ALERT_TOKEN"]);
    }

    #[test]
    fn bad_values_are_named_and_secrets_not_echoed() {
        let secret = "short-secret";
        let problems = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "99999"),
                ("SLUICE_STORE", "cosmos"),
                ("SLUICE_QUEUE", "embedded"),
                ("SLUICE_ALERT_TOKEN", secret),
                ("SLUICE_PUBLIC_URL", "ftp://x"),
                ("FUNCTIONS_WORKER_RUNTIME", "node"),
            ]),
            Mode::Serve,
        )
        .expect_err("bad");
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 5, "{text:?}");
        assert!(text.iter().all(|t| !t.contains(secret)), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("SLUICE_STORE: 'cosmos'")));
        assert!(text.iter().any(|t| t.starts_with("FUNCTIONS_CUSTOMHANDLER_PORT: '99999'")));
    }

    #[test]
    fn a_complete_serve_configuration() {
        let c = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                ("SLUICE_STORE", "sqlite"),
                ("SLUICE_QUEUE", "embedded"),
                ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                ("WEBSITE_HOSTNAME", "sluice-prod.azurewebsites.net"),
            ]),
            Mode::Serve,
        )
        .expect("valid");
        assert_eq!(c.port, Some(41000));
        assert_eq!(c.public_url.as_deref(), Some("https://sluice-prod.azurewebsites.net"));
    }

    #[test]
    fn up_needs_nothing() {
        let c = from_env(&env(&[]), Mode::Up).expect("defaults");
        assert_eq!((c.store, c.queue, c.port), (StoreKind::Sqlite, QueueKind::Embedded, None));
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
        for (name, _) in SETTINGS {
            assert!(readme.contains(&format!("`{name}`")), "README.md does not document {name}");
        }
    }
}
