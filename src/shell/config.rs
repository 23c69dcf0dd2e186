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

/// A setting that holds a secret: kept out of `Debug` and error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSetting(pub String);

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Slack's interactivity (the Approve, Reject and Roll back buttons): the
/// app's signing secret, and who each Slack user is in Sluice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackInteractivity {
    /// The Slack app's signing secret (`SLUICE_SLACK_SIGNING_SECRET`).
    pub signing_secret: SecretSetting,
    /// `TEAM/USER` (or `USER`) → the person, with the roles they act with.
    pub people: std::collections::BTreeMap<String, ChatPerson>,
}

/// A Slack user as Sluice knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPerson {
    /// Who they are in Sluice's history and approver lists.
    pub actor: crate::domain::ids::Actor,
    /// What they may do from Slack.
    pub roles: Vec<crate::domain::access::Role>,
}

/// Which store adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// Azure Table Storage.
    Table {
        /// A connection string (`SLUICE_TABLE_CONNECTION`, else `AzureWebJobsStorage`).
        connection: Option<SecretSetting>,
        /// The account, reached with the managed identity (`SLUICE_TABLE_ACCOUNT`).
        account: Option<String>,
        /// Table-name prefix.
        prefix: String,
    },
}

/// Which queue adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueKind {
    /// The embedded queue (consumed in-process).
    Embedded,
    /// Azure Service Bus, with a SAS connection string (sends and receives).
    ServiceBus {
        /// The SAS connection string Sluice sends with.
        connection: SecretSetting,
        /// Queue name.
        queue: String,
        /// The queue's lock duration, in seconds.
        lock_seconds: u64,
    },
    /// Azure Service Bus, sent to with the managed identity (the Functions trigger receives).
    ServiceBusIdentity {
        /// `{namespace}.servicebus.windows.net`.
        namespace: String,
        /// Queue name.
        queue: String,
    },
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
    /// Sluice's own key (`SLUICE_API_KEY`), which the functions ask for instead of the host.
    pub api_key: Option<SecretSetting>,
    /// Base URL for links in issues and messages.
    pub public_url: Option<String>,
    /// Whether people's actions need App Service authentication's principal.
    pub require_principal: bool,
    /// The issuers whose bearer tokens Sluice checks itself; with any, every
    /// call but the alert webhook's URL token and `metrics` needs one.
    pub issuers: Vec<crate::ports::identity::IssuerConfig>,
    /// How long alert records are kept (`SLUICE_ALERT_RETENTION_DAYS`).
    pub alert_retention: chrono::TimeDelta,
    /// How long finished rollouts and releases are kept (`SLUICE_RETENTION_DAYS`).
    pub retention: chrono::TimeDelta,
    /// The deployment's shared deployment windows and freezes (`SLUICE_WINDOWS`),
    /// added to every rollout's own.
    pub windows: Option<crate::domain::window::Windows>,
    /// Slack's buttons: set when `SLUICE_SLACK_SIGNING_SECRET` is.
    pub slack: Option<SlackInteractivity>,
    /// Whether finished rollouts print `sluice.metric` lines on stdout
    /// (under `serve`, where the Functions host sends them to Application Insights).
    pub metric_lines: bool,
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

/// States that a deployment accepts the names callers write.
pub const TRUST_NAMES: &str = "SLUICE_TRUST_NAMES";

/// Every app setting Sluice reads: name, and what it is for.
pub const SETTINGS: &[(&str, &str)] = &[
    ("FUNCTIONS_CUSTOMHANDLER_PORT", "Port the Functions host gives the custom handler (set by the host; required by `serve`)."),
    ("FUNCTIONS_WORKER_RUNTIME", "Elastic Premium and Dedicated plans only: must be `Custom`. Flex Consumption (the Bicep's plan) sets the runtime in `functionAppConfig` (`custom` 1.0) and rejects this setting."),
    ("SLUICE_STORE", "Store adapter: `table` (Azure Table Storage) or `sqlite` (the embedded file). Required by `serve`; `up` defaults to `sqlite` (or `--store`)."),
    ("SLUICE_TABLE_CONNECTION", "With `table`: a storage connection string (`UseDevelopmentStorage=true` reaches Azurite). Falls back to `AzureWebJobsStorage`."),
    ("AzureWebJobsStorage", "The Functions app's storage connection string; used for tables when `SLUICE_TABLE_CONNECTION` and `SLUICE_TABLE_ACCOUNT` are unset."),
    ("SLUICE_TABLE_ACCOUNT", "With `table`: a storage account name reached with the managed identity (role Storage Table Data Contributor) instead of a key."),
    ("SLUICE_TABLE_PREFIX", "With `table`: prefix of the table names `{prefix}rollouts` and `{prefix}index` (letters and digits; default `sluice`)."),
    ("SLUICE_QUEUE", "Queue adapter: `servicebus` or `embedded` (consumed in-process). Required by `serve`; `up` defaults to `embedded` (or `--queue`)."),
    ("SLUICE_SERVICEBUS_CONNECTION", "With `servicebus`: a SAS connection string to send (and, under `up`, receive) step messages with; falls back to `ServiceBusConnection`. Without either, Sluice sends with the managed identity to `ServiceBusConnection__fullyQualifiedNamespace`."),
    ("ServiceBusConnection", "The connection the `steps` trigger reads (the Functions host uses it; `ServiceBusConnection__fullyQualifiedNamespace` for a managed identity)."),
    ("ServiceBusConnection__fullyQualifiedNamespace", "`{namespace}.servicebus.windows.net`: the trigger receives with the managed identity (Azure Service Bus Data Receiver), and without a SAS connection string Sluice sends with it too (Azure Service Bus Data Sender)."),
    ("SLUICE_QUEUE_NAME", "With `servicebus`: the queue (default `rollout-steps`, as in `functions/steps/function.json`)."),
    (
        "SLUICE_SERVICEBUS_LOCK_SECONDS",
        "With a Service Bus connection string: the queue's lock duration (default 60). Refused with the managed identity, \
         where Sluice only sends and the Functions host holds the locks.",
    ),
    ("IDENTITY_ENDPOINT", "Set by App Service with a managed identity (with `IDENTITY_HEADER`): Sluice's tokens for Table Storage and ARM come from it."),
    ("AZURE_TENANT_ID", "Outside Azure: a service principal's tenant (with `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`) for Entra ID tokens."),
    ("SLUICE_AZURE_TOKEN", "Development only: a bearer token used as is for Azure calls."),
    ("SLUICE_DATA_DIR", "A writable directory for the embedded store and queue, local backlog files and notification logs. `up` defaults to `.sluice`; `serve` needs it set with the embedded store or queue (the app root is read-only when run from a package) and otherwise uses the system's temporary directory, writing nothing at start-up."),
    ("SLUICE_API_KEY", "Sluice's own key, which every HTTP function but the alert webhook and the dashboard's page asks for (`x-functions-key` or `?code=`), since the Functions host asks none (every function is `anonymous`). Where Sluice checks tokens, a token replaces it everywhere but `metrics` and `pipelines`, whose callers send only a static credential. Required by `serve`, at least 24 characters (the Bicep generates it)."),
    ("SLUICE_ALERT_TOKEN", "Shared secret the alert webhook requires (`?token=`, `x-sluice-token` or `Authorization: Bearer`). Required by `serve`, at least 16 characters."),
    ("SLUICE_PUBLIC_URL", "Base URL people reach Sluice at, for links in issues and messages (default `https://$WEBSITE_HOSTNAME`, else the local address)."),
    ("WEBSITE_HOSTNAME", "Set by App Service; the default public host name."),
    ("SLUICE_REQUIRE_PRINCIPAL", "`true`: approve, reject, abort, promote and retry act only as the signed-in `X-MS-CLIENT-PRINCIPAL-NAME`; a self-asserted `by`, or none, is refused with 403, and people's actions posted to the queue are refused. On by itself when App Service authentication is on (`WEBSITE_AUTH_ENABLED`); `serve` refuses it while authentication is off. Default `false`, and the header is then ignored."),
    ("SLUICE_ENTRA_TENANT_ID", "With `SLUICE_ENTRA_CLIENT_ID`: Sluice checks Entra ID bearer tokens itself (v2.0, this tenant, RS256 by the tenant's published keys, audience the client id or `api://` it, `exp`/`nbf` within a minute). People, Azure DevOps service connections and action groups then act as the token's `oid`, with the app roles in its `roles` claim (`Sluice.Reader`, `Sluice.Operator`, `Sluice.Approver`, `Sluice.Admin`, `ActionGroupsSecureWebhook`); every call but `metrics`, `pipelines/azure` (Sluice's key) and the alert webhook's URL token needs a token."),
    ("SLUICE_ENTRA_CLIENT_ID", "Sluice's app registration (a GUID): the audience of the Entra tokens it accepts. With `SLUICE_ENTRA_TENANT_ID`."),
    ("SLUICE_ENTRA_AUTHORITY", "Entra's authority host (default `https://login.microsoftonline.com`; a sovereign cloud's, e.g. `https://login.microsoftonline.us`)."),
    ("SLUICE_GITHUB_AUDIENCE", "With `SLUICE_GITHUB_SUBJECTS`: Sluice accepts GitHub Actions OIDC tokens requested for this audience (no stored secret in the workflow)."),
    ("SLUICE_GITHUB_SUBJECTS", "Which workflows get which role, by the token's `sub`: `repo:contoso/orders:environment:production=Operator`, `;`-separated, `*` matches any run of characters. Reader or Operator; a pipeline never approves."),
    ("SLUICE_GITHUB_ISSUER", "GitHub's token issuer (default `https://token.actions.githubusercontent.com`; an Enterprise's own issuer)."),
    ("SLUICE_TRUST_NAMES", "`true`: accept the names callers write (`by`, `x-sluice-user`) with only Sluice's key (`SLUICE_API_KEY`) checked. `serve` refuses to start unless tokens (`SLUICE_ENTRA_*`, `SLUICE_GITHUB_*`), App Service authentication or this is configured."),
    ("WEBSITE_AUTH_ENABLED", "Set to `True` by App Service when its authentication is on: only then is `X-MS-CLIENT-PRINCIPAL-NAME` trusted (and required for people's actions)."),
    ("GITHUB_TOKEN", "Default app setting of the `github` backlog's token (fine-grained: Issues read and write on the repository); a spec may name another with `tokenSetting`."),
    ("AZURE_DEVOPS_PAT", "Default app setting of the `azureDevOps` backlog's PAT (Work Items read and write); a spec may name another with `patSetting`. Without one, the managed identity's Entra token is used."),
    ("SLUICE_AZURE_CLOUD", "The Azure cloud Sluice runs in and sends its Entra tokens to: `AzureCloud` (default), `AzureChinaCloud` or `AzureUSGovernment`. ARM, Log Analytics, Application Insights, App Configuration and managed Prometheus endpoints (and token audiences) are that cloud's; a spec can restate them but never point elsewhere."),
    ("SLUICE_GITHUB_API_URLS", "GitHub Enterprise Server API URLs (`https://HOST/api/v3`, comma-separated) a spec's `apiUrl` may name; `https://api.github.com` is always allowed. The GitHub token goes nowhere else."),
    ("SLUICE_AZURE_DEVOPS_URLS", "Azure DevOps Server collection URLs (comma-separated) a spec's `orgUrl` may name; `https://dev.azure.com/…` and `https://{organization}.visualstudio.com` are always allowed. The PAT or token goes nowhere else."),
    ("SLUICE_APP_CONFIG_STORES", "App Configuration store endpoints (comma-separated) the `appConfigFlag` router may use; unset, any store of the cloud (`https://*.azconfig.io` in AzureCloud)."),
    ("SLUICE_AKS_API_SERVERS", "AKS API server URLs (comma-separated, e.g. `https://NAME.hcp.REGION.azmk8s.io:443`) the `gatewayApi` router may send its token to; unset, none (the router is refused)."),
    ("SLUICE_SPEC_SETTINGS", "The app settings a spec may name, comma-separated, each for one use: `github:NAME` (`tokenSetting` of `github`, `githubDeployments`), `azureDevOps:NAME` (`patSetting`), `aks:NAME` (`tokenSetting` of `gatewayApi`), `appConfig:NAME` (`connectionStringSetting`), or a bare `NAME` for a channel's `urlSetting` or `secretSetting`; `NAME*` is a prefix. A credential named for one use never goes to another kind of service. Default: `github:GITHUB_TOKEN, azureDevOps:AZURE_DEVOPS_PAT, aks:K8S_TOKEN, appConfig:APPCONFIG_CONNECTION, TEAMS_URL, SLACK_URL, WEBHOOK_URL, WEBHOOK_SECRET`. Settings Sluice and the Functions host run on (`SLUICE_*`, `AzureWebJobs*`, `APPLICATIONINSIGHTS_*`, `IDENTITY_*`, `APPSETTING_*`, `AZURE_CLIENT_SECRET`, …, in any case) are refused whatever this says."),
    ("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "Local testing only: `true` lets specs point credentialed endpoints at loopback addresses (`127.0.0.0/8`, `localhost`, `[::1]`), plain HTTP too, to reach fakes. `serve` refuses to start with it."),
    ("SLUICE_ALERT_RETENTION_DAYS", "Days received alerts are kept for the record (1 to 3650, default 30); the embedded store also keeps at most the newest 10 000."),
    ("SLUICE_RETENTION_DAYS", "Days finished rollouts and settled releases are kept, with their history, counted from their creation (30 to 3650, default 400, so a year of release-health figures survives). The timer deletes those past it, 50 of each per tick; active ones are never deleted."),
    ("SLUICE_SLACK_SIGNING_SECRET", "The signing secret of the Slack app whose messages carry Approve, Reject and Roll back buttons (a `slack` channel with `interactive: true`); Slack's requests to `/api/slack` are checked against it (`X-Slack-Signature` v0, at most 5 minutes old). Unset: `/api/slack` answers 404."),
    ("SLUICE_SLACK_USERS", "Who each Slack user is in Sluice, as JSON: `{\"T0123/U0456\": {\"name\": \"alice@contoso.com\", \"roles\": [\"Approver\", \"Operator\"]}}` (the key is `TEAM/USER` or `USER`; roles Reader, Operator, Approver, Admin). Approving needs Approver, rejecting Approver, rolling back Operator; a spec's approver list still applies to the name. A user not listed is refused."),
    ("SLUICE_WINDOWS", "Deployment windows and freezes every rollout of this deployment keeps, as JSON in the shape of a spec's `policy.windows` (e.g. `{\"timeZone\": \"Europe/Berlin\", \"allow\": [{\"days\": [\"Mon\", \"Tue\", \"Wed\", \"Thu\"], \"from\": \"09:00\", \"to\": \"16:00\"}], \"freezes\": [{\"from\": \"2026-12-21\", \"to\": \"2027-01-04\", \"reason\": \"holiday freeze\"}]}`). A spec's own windows narrow it, never widen it: a start, a weight increase or a promotion waits until both are open. Default: none."),
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
        (Some("table"), _) => {
            let connection = value("SLUICE_TABLE_CONNECTION").or_else(|| value("AzureWebJobsStorage")).map(SecretSetting);
            let account = value("SLUICE_TABLE_ACCOUNT");
            if connection.is_none() && account.is_none() {
                problem(
                    "SLUICE_TABLE_CONNECTION",
                    "is not set (nor AzureWebJobsStorage, nor SLUICE_TABLE_ACCOUNT for a managed identity)".into(),
                );
            }
            if account.is_some()
                && value("SLUICE_TABLE_CONNECTION").is_none()
                && value("IDENTITY_ENDPOINT").is_none()
                && value("AZURE_CLIENT_SECRET").is_none()
                && value("SLUICE_AZURE_TOKEN").is_none()
            {
                problem(
                    "SLUICE_TABLE_ACCOUNT",
                    "is set but no identity is available (IDENTITY_ENDPOINT, AZURE_CLIENT_SECRET or SLUICE_AZURE_TOKEN)".into(),
                );
            }
            let prefix = value("SLUICE_TABLE_PREFIX").unwrap_or_else(|| "sluice".into());
            if !prefix.chars().all(|c| c.is_ascii_alphanumeric()) || !prefix.starts_with(|c: char| c.is_ascii_alphabetic()) {
                problem("SLUICE_TABLE_PREFIX", format!("'{prefix}' must be letters and digits, starting with a letter"));
            }
            StoreKind::Table {
                connection: if account.is_some() && value("SLUICE_TABLE_CONNECTION").is_none() { None } else { connection },
                account,
                prefix,
            }
        }
        (Some(other), _) => {
            problem("SLUICE_STORE", format!("'{other}' is not a store Sluice has (table, sqlite)"));
            StoreKind::Sqlite
        }
        (None, Mode::Serve) => {
            problem("SLUICE_STORE", "is not set; choose the store: table or sqlite".into());
            StoreKind::Sqlite
        }
    };
    let queue = match (value("SLUICE_QUEUE").as_deref(), mode) {
        (Some("embedded"), _) | (None, Mode::Up) => QueueKind::Embedded,
        (Some("servicebus"), _)
            if value("SLUICE_SERVICEBUS_CONNECTION").is_none()
                && value("ServiceBusConnection").is_none()
                && value("ServiceBusConnection__fullyQualifiedNamespace").is_some() =>
        {
            // The identity the trigger reads with sends too (role Azure Service Bus Data Sender).
            let namespace = value("ServiceBusConnection__fullyQualifiedNamespace").unwrap_or_default();
            if value("SLUICE_SERVICEBUS_LOCK_SECONDS").is_some() {
                problem(
                    "SLUICE_SERVICEBUS_LOCK_SECONDS",
                    "is set, but with the managed identity Sluice only sends and the Functions host holds the queue's locks \
                     (its lock duration is the queue's lockDuration); remove the setting"
                        .into(),
                );
            }
            if value("IDENTITY_ENDPOINT").is_none() && value("AZURE_CLIENT_SECRET").is_none() && value("SLUICE_AZURE_TOKEN").is_none() {
                problem(
                    "ServiceBusConnection__fullyQualifiedNamespace",
                    "is set but no identity is available to send with (IDENTITY_ENDPOINT, AZURE_CLIENT_SECRET or SLUICE_AZURE_TOKEN)"
                        .into(),
                );
            }
            QueueKind::ServiceBusIdentity { namespace, queue: value("SLUICE_QUEUE_NAME").unwrap_or_else(|| "rollout-steps".into()) }
        }
        (Some("servicebus"), _) => {
            let connection = value("SLUICE_SERVICEBUS_CONNECTION").or_else(|| value("ServiceBusConnection"));
            if connection.is_none() {
                problem(
                    "SLUICE_SERVICEBUS_CONNECTION",
                    "is not set (nor ServiceBusConnection, nor ServiceBusConnection__fullyQualifiedNamespace for the managed identity)"
                        .into(),
                );
            }
            let lock_seconds = match value("SLUICE_SERVICEBUS_LOCK_SECONDS") {
                None => 60,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (5..=300).contains(&n) => n,
                    _ => {
                        problem("SLUICE_SERVICEBUS_LOCK_SECONDS", format!("'{v}' is not a lock duration from 5 to 300 seconds"));
                        60
                    }
                },
            };
            QueueKind::ServiceBus {
                connection: SecretSetting(connection.unwrap_or_default()),
                queue: value("SLUICE_QUEUE_NAME").unwrap_or_else(|| "rollout-steps".into()),
                lock_seconds,
            }
        }
        (Some(other), _) => {
            problem("SLUICE_QUEUE", format!("'{other}' is not a queue Sluice has (servicebus, embedded)"));
            QueueKind::Embedded
        }
        (None, Mode::Serve) => {
            problem("SLUICE_QUEUE", "is not set; choose the queue: servicebus or embedded".into());
            QueueKind::Embedded
        }
    };
    let issuers = match crate::ports::identity::settings::from_settings(get) {
        Ok(issuers) => issuers,
        Err(found) => {
            for p in found {
                problem(p.setting, p.message);
            }
            Vec::new()
        }
    };
    let entra = issuers.iter().any(|i| matches!(i.kind, crate::ports::identity::IssuerKind::Entra { .. }));
    let api_key = value("SLUICE_API_KEY");
    match (&api_key, mode) {
        (Some(k), _) if k.chars().count() < 24 || k.chars().any(|c| !c.is_ascii_graphic()) => problem(
            "SLUICE_API_KEY",
            format!("is {} characters long or not all printable ASCII; use at least 24 random letters and digits", k.chars().count()),
        ),
        (None, Mode::Serve) => problem(
            "SLUICE_API_KEY",
            "is not set; the Functions host checks no key (every function is anonymous), so Sluice checks this one itself".into(),
        ),
        _ => {}
    }
    let alert_token = value("SLUICE_ALERT_TOKEN");
    match (&alert_token, mode) {
        (Some(t), _) if t.chars().count() < 16 => {
            problem("SLUICE_ALERT_TOKEN", format!("is {} characters long; use at least 16 random characters", t.chars().count()))
        }
        // With Entra configured, action groups call with a token of their own (useAadAuth).
        (None, Mode::Serve) if !entra => problem(
            "SLUICE_ALERT_TOKEN",
            "is not set; the alert webhook must not be open to anyone (or set SLUICE_ENTRA_TENANT_ID and SLUICE_ENTRA_CLIENT_ID for action groups' secure webhook)".into(),
        ),
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
    match crate::ports::reach::Reach::from_settings(get) {
        Err(found) => {
            for p in found {
                problem(p.setting, p.message);
            }
        }
        Ok(reach) if reach.loopback && mode == Mode::Serve => problem(
            crate::ports::reach::LOOPBACK_SETTING,
            "is for local testing only: a deployment never sends its credentials to loopback addresses".into(),
        ),
        Ok(_) => {}
    }
    // App Service sets WEBSITE_AUTH_ENABLED=True when its authentication is on
    // (Microsoft.Identity.Web, AppServicesAuthenticationInformation): only then
    // is X-MS-CLIENT-PRINCIPAL-NAME the platform's word, not the caller's.
    let platform_auth = value("WEBSITE_AUTH_ENABLED").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false);
    let asked = match value("SLUICE_REQUIRE_PRINCIPAL").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            problem("SLUICE_REQUIRE_PRINCIPAL", format!("'{}' is not true or false", crate::domain::ids::shown(other)));
            false
        }
    };
    if asked && !platform_auth && mode == Mode::Serve {
        problem(
            "SLUICE_REQUIRE_PRINCIPAL",
            "is true but App Service authentication is off (WEBSITE_AUTH_ENABLED is not True): no signed-in identity would ever arrive"
                .into(),
        );
    }
    let require_principal = asked || platform_auth;
    let trust_names = match value(TRUST_NAMES).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            problem(TRUST_NAMES, format!("'{}' is not true or false", crate::domain::ids::shown(other)));
            false
        }
    };
    // Fail closed: a deployment states how people's actions are authenticated.
    if mode == Mode::Serve && issuers.is_empty() && !require_principal && !trust_names {
        problem(
            TRUST_NAMES,
            "no way to authenticate who acts is configured: set SLUICE_ENTRA_TENANT_ID and SLUICE_ENTRA_CLIENT_ID (and/or \
             SLUICE_GITHUB_AUDIENCE with SLUICE_GITHUB_SUBJECTS) so Sluice checks tokens, turn on App Service authentication, \
             or set SLUICE_TRUST_NAMES=true to accept the names callers write (Sluice's key is then the only check)"
                .into(),
        );
    }
    let embedded = (value("SLUICE_STORE").is_some() && store == StoreKind::Sqlite)
        || (value("SLUICE_QUEUE").is_some() && queue == QueueKind::Embedded);
    let data_dir = match (value("SLUICE_DATA_DIR"), mode) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Mode::Up) => PathBuf::from(".sluice"),
        // The app root is read-only when the app runs from a package.
        (None, Mode::Serve) if embedded => {
            problem(
                "SLUICE_DATA_DIR",
                "is not set; the embedded store or queue needs a writable directory (the app root is read-only when run from a package)"
                    .into(),
            );
            PathBuf::new()
        }
        (None, Mode::Serve) => std::env::temp_dir().join("sluice"),
    };
    let alert_retention =
        days_setting(&value, &mut problem, "SLUICE_ALERT_RETENTION_DAYS", 1, crate::ports::store::DEFAULT_ALERT_RETENTION);
    let retention = days_setting(&value, &mut problem, "SLUICE_RETENTION_DAYS", 30, crate::ports::store::DEFAULT_RETENTION);
    let windows = windows_setting(&value, &mut problem);
    let slack = slack_setting(&value, &mut problem);
    if problems.is_empty() {
        let metric_lines = mode == Mode::Serve;
        Ok(AppConfig {
            port,
            store,
            queue,
            data_dir,
            alert_token,
            api_key: api_key.map(SecretSetting),
            public_url,
            require_principal,
            issuers,
            alert_retention,
            retention,
            windows,
            slack,
            metric_lines,
        })
    } else {
        Err(problems)
    }
}

/// A whole number of days from `min` to 3650, or `default` when unset.
fn days_setting(
    value: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(&'static str, String),
    name: &'static str,
    min: i64,
    default: chrono::TimeDelta,
) -> chrono::TimeDelta {
    match value(name).map(|v| v.parse::<i64>()) {
        None => default,
        Some(Ok(days)) if (min..=3650).contains(&days) => chrono::TimeDelta::days(days),
        Some(_) => {
            problem(name, format!("is not a whole number of days from {min} to 3650"));
            default
        }
    }
}

/// Slack's interactivity, when its signing secret is set.
fn slack_setting(value: &dyn Fn(&str) -> Option<String>, problem: &mut dyn FnMut(&'static str, String)) -> Option<SlackInteractivity> {
    let secret = value("SLUICE_SLACK_SIGNING_SECRET")?;
    if secret.chars().count() < 16 || !secret.chars().all(|c| c.is_ascii_graphic()) {
        problem("SLUICE_SLACK_SIGNING_SECRET", "is not a Slack signing secret (Basic Information → App Credentials)".into());
        return None;
    }
    let text = value("SLUICE_SLACK_USERS").unwrap_or_else(|| "{}".into());
    match chat_people(&text) {
        Ok(people) => Some(SlackInteractivity { signing_secret: SecretSetting(secret), people }),
        Err(e) => {
            problem("SLUICE_SLACK_USERS", e);
            None
        }
    }
}

/// `{"TEAM/USER": {"name", "roles"}}`, every problem named by its key.
fn chat_people(text: &str) -> Result<std::collections::BTreeMap<String, ChatPerson>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        #[serde(default)]
        roles: Vec<String>,
    }
    let entries: std::collections::BTreeMap<String, Entry> =
        serde_json::from_str(text).map_err(|e| format!("is not a JSON object of Slack users: {e}"))?;
    let mut people = std::collections::BTreeMap::new();
    for (key, entry) in entries {
        let shown = crate::domain::ids::shown(&key);
        let ok_key = !key.is_empty() && key.len() <= 64 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '/');
        if !ok_key {
            return Err(format!("'{shown}' is not a Slack user id (TEAM/USER or USER)"));
        }
        let actor = crate::domain::ids::Actor::parse(&entry.name).map_err(|e| format!("{shown}.name: {e}"))?;
        let roles = entry
            .roles
            .iter()
            .map(|r| {
                crate::domain::access::Role::ALL
                    .into_iter()
                    .filter(|role| *role != crate::domain::access::Role::AlertSender)
                    .find(|role| role.value().trim_start_matches("Sluice.").eq_ignore_ascii_case(r))
                    .ok_or_else(|| {
                        format!("{shown}.roles: '{}' is not one of Reader, Operator, Approver, Admin", crate::domain::ids::shown(r))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        people.insert(key, ChatPerson { actor, roles });
    }
    Ok(people)
}

/// The shared windows policy, every problem named with its path.
fn windows_setting(
    value: &dyn Fn(&str) -> Option<String>,
    problem: &mut dyn FnMut(&'static str, String),
) -> Option<crate::domain::window::Windows> {
    const NAME: &str = "SLUICE_WINDOWS";
    let text = value(NAME)?;
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            problem(NAME, format!("is not JSON: {e}"));
            return None;
        }
    };
    match crate::domain::window::parse_policy(&doc) {
        Ok(w) => Some(w),
        Err(found) => {
            let listed: Vec<String> = found.iter().map(ToString::to_string).collect();
            problem(NAME, format!("is not a windows policy: {}", listed.join("; ")));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A key as the Bicep generates it.
    const KEY: &str = "k3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK3yk3yK";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_shared_windows_are_read_once_with_every_problem_named_by_its_path() {
        let windows = |v: &str| from_env(&env(&[("SLUICE_WINDOWS", v)]), Mode::Up);
        assert_eq!(from_env(&env(&[]), Mode::Up).expect("defaults").windows, None);
        let shared =
            windows(r#"{"timeZone": "Europe/Berlin", "allow": [{"days": ["Mon"], "from": "09:00", "to": "17:00"}]}"#).expect("a policy");
        assert_eq!(shared.windows.expect("read").time_zone.to_string(), "Europe/Berlin");
        let problems = windows(r#"{"timeZone": "Europe/Berlinn", "allow": [{"days": ["Monday"], "from": "9:00"}], "freezes": [{"from": "2026-12-24", "to": "2026-12-23", "reason": "x"}]}"#)
            .expect_err("three problems");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].setting, "SLUICE_WINDOWS");
        for said in
            ["timeZone: 'Europe/Berlinn' is not an IANA time zone", "allow[0].days[0]", "allow[0].from: '9:00' is not a time of day"]
        {
            assert!(problems[0].message.contains(said), "{said} in {}", problems[0].message);
        }
        let problems = windows(r#"{"timeZone": "UTC", "freezes": [{"from": "2026-12-24", "to": "2026-12-23", "reason": "x"}]}"#)
            .expect_err("backwards");
        assert!(
            problems[0].message.contains("freezes[0].to: the freeze ends (2026-12-23) before it starts (2026-12-24)"),
            "{}",
            problems[0].message
        );
        assert!(windows("{not json").expect_err("not JSON")[0].message.starts_with("is not JSON"));
    }

    #[test]
    fn slack_people_are_read_once_and_a_bad_entry_is_named() {
        let slack = |users: &str| {
            from_env(&env(&[("SLUICE_SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5"), ("SLUICE_SLACK_USERS", users)]), Mode::Up)
        };
        assert_eq!(from_env(&env(&[]), Mode::Up).expect("defaults").slack, None);
        let read = slack(r#"{"T0123/U0456": {"name": "alice@contoso.com", "roles": ["Approver", "operator"]}}"#).expect("read");
        let person = &read.slack.expect("slack").people["T0123/U0456"];
        assert_eq!(person.actor.as_str(), "alice@contoso.com");
        assert_eq!(person.roles, [crate::domain::access::Role::Approver, crate::domain::access::Role::Operator]);
        for (bad, said) in [
            (r#"{"U1": {"name": "bob", "roles": ["AlertSender"]}}"#, "U1.roles: 'AlertSender' is not one of"),
            (r#"{"U1/../x": {"name": "bob"}}"#, "is not a Slack user id"),
            (r#"{"U1": {"name": ""}}"#, "U1.name"),
            ("[]", "is not a JSON object"),
        ] {
            let problems = slack(bad).expect_err(bad);
            assert_eq!(problems[0].setting, "SLUICE_SLACK_USERS");
            assert!(problems[0].message.contains(said), "{said} in {}", problems[0].message);
        }
        let short = from_env(&env(&[("SLUICE_SLACK_SIGNING_SECRET", "short")]), Mode::Up).expect_err("too short");
        assert!(short[0].setting == "SLUICE_SLACK_SIGNING_SECRET" && !short[0].message.contains("short"));
    }

    #[test]
    fn retention_defaults_to_400_days_and_is_bounded_naming_the_setting() {
        let days = |v: &str| from_env(&env(&[("SLUICE_RETENTION_DAYS", v)]), Mode::Up);
        assert_eq!(from_env(&env(&[]), Mode::Up).expect("defaults").retention, chrono::TimeDelta::days(400));
        assert_eq!(days(" 30 ").expect("the least").retention, chrono::TimeDelta::days(30));
        assert_eq!(days("3650").expect("the most").retention, chrono::TimeDelta::days(3650));
        for bad in ["29", "3651", "-1", "1.5", "a year"] {
            let problems = days(bad).expect_err(bad);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].setting, "SLUICE_RETENTION_DAYS");
            assert!(problems[0].message.contains("from 30 to 3650"), "{}", problems[0].message);
        }
    }

    #[test]
    fn serve_fails_closed_until_it_is_told_how_callers_are_authenticated() {
        let base = [
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "8080"),
            ("SLUICE_STORE", "table"),
            ("SLUICE_TABLE_CONNECTION", "UseDevelopmentStorage=true"),
            ("SLUICE_QUEUE", "servicebus"),
            ("SLUICE_SERVICEBUS_CONNECTION", "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"),
            ("SLUICE_API_KEY", KEY),
        ];
        let with = |extra: &[(&'static str, &'static str)]| from_env(&env(&[&base[..], extra].concat()), Mode::Serve);
        let names = |r: Result<AppConfig, Vec<ConfigProblem>>| r.expect_err("refused").iter().map(|p| p.setting).collect::<Vec<_>>();
        assert_eq!(names(with(&[("SLUICE_ALERT_TOKEN", "0123456789abcdef0123")])), [TRUST_NAMES]);
        assert!(with(&[("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"), (TRUST_NAMES, "true")]).is_ok());
        assert!(with(&[("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"), ("WEBSITE_AUTH_ENABLED", "True")]).is_ok());
        // Tokens: Entra configured needs neither trusted names nor an alert URL token (action groups present one).
        let tokens = with(&[
            ("SLUICE_ENTRA_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("SLUICE_ENTRA_CLIENT_ID", "0f4a1c2e-1111-2222-3333-444455556666"),
        ])
        .expect("tokens are a way");
        assert_eq!(tokens.issuers.len(), 1);
        assert_eq!(tokens.alert_token, None);
        // GitHub alone still needs the alert URL token: nothing else would authenticate Azure Monitor.
        let github =
            [("SLUICE_GITHUB_AUDIENCE", "api://sluice"), ("SLUICE_GITHUB_SUBJECTS", "repo:contoso/orders:ref:refs/heads/main=Operator")];
        assert_eq!(names(with(&github)), ["SLUICE_ALERT_TOKEN"]);
    }

    #[test]
    fn serve_reports_every_missing_setting_at_once() {
        let problems = from_env(&env(&[]), Mode::Serve).expect_err("incomplete");
        let names: Vec<&str> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(
            names,
            ["FUNCTIONS_CUSTOMHANDLER_PORT", "SLUICE_STORE", "SLUICE_QUEUE", "SLUICE_API_KEY", "SLUICE_ALERT_TOKEN", "SLUICE_TRUST_NAMES"]
        );
    }

    #[test]
    fn the_key_is_long_printable_and_never_echoed() {
        let up = |key: &str| from_env(&env(&[("SLUICE_API_KEY", key)]), Mode::Up);
        assert_eq!(up(KEY).expect("a generated key").api_key, Some(SecretSetting(KEY.into())));
        assert_eq!(up(KEY).map(|c| format!("{c:?}")).expect("valid").matches(KEY).count(), 0, "Debug never shows it");
        assert_eq!(from_env(&env(&[]), Mode::Up).expect("local").api_key, None, "a local Sluice asks no key unless given one");
        for bad in ["short-key-of-23-letters", "twenty four letters with spaces", "ключключключключключключключ"]
        {
            let problems = up(bad).expect_err(bad);
            assert_eq!(problems.iter().map(|p| p.setting).collect::<Vec<_>>(), ["SLUICE_API_KEY"], "{bad}");
            assert!(!problems[0].message.contains(bad), "{}", problems[0].message);
        }
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
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
                ("SLUICE_PUBLIC_URL", "ftp://x"),
                ("FUNCTIONS_WORKER_RUNTIME", "node"),
            ]),
            Mode::Serve,
        )
        .expect_err("bad");
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 6, "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("SLUICE_DATA_DIR: is not set; the embedded store or queue needs a writable directory")));
        assert!(text.iter().all(|t| !t.contains(secret)), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("SLUICE_STORE: 'cosmos'")));
        let secret = "AccountName=a;AccountKey=c2VjcmV0";
        let c = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                ("SLUICE_STORE", "table"),
                ("AzureWebJobsStorage", secret),
                ("SLUICE_QUEUE", "servicebus"),
                ("ServiceBusConnection", "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b"),
                ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
            ]),
            Mode::Serve,
        )
        .expect("valid");
        assert!(!format!("{c:?}").contains("c2VjcmV0"), "Debug never shows a connection string");
        assert!(c.data_dir.starts_with(std::env::temp_dir()), "with Table Storage and Service Bus nothing lives in the app root");
        assert!(matches!(c.queue, QueueKind::ServiceBus { ref queue, lock_seconds: 60, .. } if queue == "rollout-steps"));
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
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
                ("WEBSITE_HOSTNAME", "sluice-prod.azurewebsites.net"),
                ("SLUICE_DATA_DIR", "/home/data/sluice"),
            ]),
            Mode::Serve,
        )
        .expect("valid");
        assert_eq!(c.port, Some(41000));
        assert_eq!(c.public_url.as_deref(), Some("https://sluice-prod.azurewebsites.net"));
        assert!(!c.require_principal, "off unless asked for");
        let strict = |v: &str| {
            from_env(
                &env(&[
                    ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                    ("SLUICE_STORE", "sqlite"),
                    ("SLUICE_QUEUE", "embedded"),
                    ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                    ("SLUICE_API_KEY", KEY),
                    ("SLUICE_TRUST_NAMES", "true"),
                    ("SLUICE_DATA_DIR", "/home/data/sluice"),
                    ("SLUICE_REQUIRE_PRINCIPAL", v),
                ]),
                Mode::Serve,
            )
        };
        assert_eq!(strict("TRUE").expect_err("refused without platform auth")[0].setting, "SLUICE_REQUIRE_PRINCIPAL");
        assert_eq!(strict("yes").expect_err("refused")[0].setting, "SLUICE_REQUIRE_PRINCIPAL");
        let signed_in = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                ("SLUICE_STORE", "table"),
                ("SLUICE_TABLE_ACCOUNT", "acct"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi"),
                ("IDENTITY_HEADER", "x"),
                ("SLUICE_QUEUE", "servicebus"),
                ("ServiceBusConnection", "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b"),
                ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
                ("WEBSITE_AUTH_ENABLED", "True"),
            ]),
            Mode::Serve,
        )
        .expect("valid");
        assert!(signed_in.require_principal, "App Service authentication on: the principal is trusted and required");
    }

    #[test]
    fn azure_adapters_need_their_connections() {
        let problems = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                ("SLUICE_STORE", "table"),
                ("SLUICE_QUEUE", "servicebus"),
                ("ServiceBusConnection__fullyQualifiedNamespace", "x.servicebus.windows.net"),
                ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
            ]),
            Mode::Serve,
        )
        .expect_err("incomplete");
        let names: Vec<&str> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(names, ["SLUICE_TABLE_CONNECTION", "ServiceBusConnection__fullyQualifiedNamespace"]);
        assert!(problems[1].message.contains("no identity is available to send with"));
        // Identity only: the namespace and an identity, no key anywhere.
        let identity = [
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
            ("SLUICE_STORE", "table"),
            ("SLUICE_TABLE_ACCOUNT", "acct"),
            ("SLUICE_QUEUE", "servicebus"),
            ("ServiceBusConnection__fullyQualifiedNamespace", "x.servicebus.windows.net"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi"),
            ("IDENTITY_HEADER", "h"),
            ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
            ("SLUICE_API_KEY", KEY),
            ("SLUICE_TRUST_NAMES", "true"),
        ];
        let c = from_env(&env(&identity), Mode::Serve).expect("valid");
        assert_eq!(c.queue, QueueKind::ServiceBusIdentity { namespace: "x.servicebus.windows.net".into(), queue: "rollout-steps".into() });
        // A lock duration there would be ignored: refused by name rather than read and dropped.
        let with_lock: Vec<(&str, &str)> = identity.iter().copied().chain([("SLUICE_SERVICEBUS_LOCK_SECONDS", "60")]).collect();
        let ignored = from_env(&env(&with_lock), Mode::Serve).expect_err("ignored setting");
        assert_eq!(ignored.iter().map(|p| p.setting).collect::<Vec<_>>(), ["SLUICE_SERVICEBUS_LOCK_SECONDS"]);
        // A SAS connection string with a bad lock duration still names both problems.
        let problems = from_env(
            &env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "41000"),
                ("SLUICE_STORE", "sqlite"),
                ("SLUICE_DATA_DIR", "/tmp/x"),
                ("SLUICE_QUEUE", "servicebus"),
                ("SLUICE_SERVICEBUS_LOCK_SECONDS", "0"),
                ("SLUICE_ALERT_TOKEN", "0123456789abcdef0123"),
                ("SLUICE_API_KEY", KEY),
                ("SLUICE_TRUST_NAMES", "true"),
            ]),
            Mode::Serve,
        )
        .expect_err("incomplete");
        let names: Vec<&str> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(names, ["SLUICE_SERVICEBUS_CONNECTION", "SLUICE_SERVICEBUS_LOCK_SECONDS"]);
    }

    #[test]
    fn up_needs_nothing() {
        let c = from_env(&env(&[]), Mode::Up).expect("defaults");
        assert_eq!((c.store, c.queue, c.port), (StoreKind::Sqlite, QueueKind::Embedded, None));
    }

    #[test]
    fn no_spec_may_name_a_setting_sluice_runs_on() {
        let rules = crate::ports::reach::Reach::default();
        for (name, _) in SETTINGS {
            use crate::ports::reach::SecretUse;
            // The two a spec names by design, each for its own tracker: the backlogs' default token settings.
            match *name {
                "GITHUB_TOKEN" => assert!(rules.check_setting(SecretUse::GitHub, name).is_ok()),
                "AZURE_DEVOPS_PAT" => assert!(rules.check_setting(SecretUse::AzureDevOps, name).is_ok()),
                _ => {
                    for used in
                        [SecretUse::GitHub, SecretUse::AzureDevOps, SecretUse::Kubernetes, SecretUse::AppConfiguration, SecretUse::Channel]
                    {
                        assert!(rules.check_setting(used, name).is_err(), "a spec could name {name}");
                    }
                }
            }
        }
        let problems = from_env(&env(&[("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true")]), Mode::Serve).expect_err("refused");
        assert!(problems.iter().any(|p| p.setting == "SLUICE_ALLOW_LOOPBACK_ENDPOINTS"), "{problems:?}");
        assert!(from_env(&env(&[("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true")]), Mode::Up).is_ok());
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
        for (name, _) in SETTINGS {
            assert!(readme.contains(&format!("`{name}`")), "README.md does not document {name}");
        }
    }
}
