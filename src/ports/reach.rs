//! Where Sluice's credentials may go: deployment configuration, never spec
//! input. A spec may restate an endpoint, but a request that carries a
//! token, key or signature goes only to an address the deployment allows —
//! the Azure cloud it runs in, and the GitHub Enterprise, Azure DevOps
//! Server, App Configuration stores and AKS API servers its app settings
//! list — and only over HTTPS. A spec may name only the app settings the
//! deployment declares, and never one Sluice itself runs on.
//!
//! The cloud endpoints and token audiences are Microsoft's published ones
//! (sources beside [`Cloud`]).

use std::net::IpAddr;

use reqwest::Url;

/// The settings that shape the rules, with what each means (listed in the
/// shell's settings table too).
pub const CLOUD_SETTING: &str = "SLUICE_AZURE_CLOUD";
/// GitHub Enterprise Server API URLs allowed besides `https://api.github.com`.
pub const GITHUB_SETTING: &str = "SLUICE_GITHUB_API_URLS";
/// Azure DevOps Server collection URLs allowed besides Azure DevOps Services.
pub const AZURE_DEVOPS_SETTING: &str = "SLUICE_AZURE_DEVOPS_URLS";
/// App Configuration store endpoints a router may use.
pub const APP_CONFIG_SETTING: &str = "SLUICE_APP_CONFIG_STORES";
/// AKS (Kubernetes) API servers a router may use.
pub const AKS_SETTING: &str = "SLUICE_AKS_API_SERVERS";
/// The app settings a spec may name (`NAME`, or `PREFIX*`).
pub const SPEC_SETTINGS_SETTING: &str = "SLUICE_SPEC_SETTINGS";
/// Local testing only: loopback endpoints (plain HTTP too) are allowed.
pub const LOOPBACK_SETTING: &str = "SLUICE_ALLOW_LOOPBACK_ENDPOINTS";

/// What specs may name when `SLUICE_SPEC_SETTINGS` is unset: the adapters'
/// own defaults and the names the README's examples use, each for its use.
pub const DEFAULT_SPEC_SETTINGS: &[&str] = &[
    "github:GITHUB_TOKEN",
    "azureDevOps:AZURE_DEVOPS_PAT",
    "aks:K8S_TOKEN",
    "appConfig:APPCONFIG_CONNECTION",
    "TEAMS_URL",
    "SLACK_URL",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
];

/// What a setting a spec names is for. A credential goes only to its own
/// kind of service: a GitHub token never to an AKS API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// A GitHub token (`tokenSetting` of `github`, `githubDeployments`).
    GitHub,
    /// An Azure DevOps PAT (`patSetting`).
    AzureDevOps,
    /// A Kubernetes service account token (`tokenSetting` of `gatewayApi`).
    Kubernetes,
    /// An App Configuration connection string (`connectionStringSetting`).
    AppConfiguration,
    /// A channel's webhook URL or signing secret (`urlSetting`, `secretSetting`):
    /// the URL is where it goes, the secret only signs.
    Channel,
}

impl SecretUse {
    const ALL: [SecretUse; 5] =
        [SecretUse::GitHub, SecretUse::AzureDevOps, SecretUse::Kubernetes, SecretUse::AppConfiguration, SecretUse::Channel];

    /// The tag that marks an entry of `SLUICE_SPEC_SETTINGS` (none: a channel's).
    pub fn tag(self) -> &'static str {
        match self {
            SecretUse::GitHub => "github",
            SecretUse::AzureDevOps => "azureDevOps",
            SecretUse::Kubernetes => "aks",
            SecretUse::AppConfiguration => "appConfig",
            SecretUse::Channel => "channel",
        }
    }
}

/// One entry of `SLUICE_SPEC_SETTINGS`: `[use:]NAME` or `[use:]PREFIX*`.
fn spec_setting(entry: &str) -> Result<(SecretUse, String), String> {
    match entry.split_once(':') {
        None => Ok((SecretUse::Channel, entry.to_string())),
        Some((tag, name)) => SecretUse::ALL
            .into_iter()
            .find(|u| u.tag().eq_ignore_ascii_case(tag.trim()))
            .map(|u| (u, name.trim().to_string()))
            .ok_or_else(|| format!("'{tag}' in '{entry}' is not a use Sluice knows (github, azureDevOps, aks, appConfig, channel)")),
    }
}

/// Settings no spec may name, whatever the deployment lists: what Sluice and
/// the Functions host run on (an entry ending in `*` is a prefix).
pub const RESERVED_SETTINGS: &[&str] = &[
    "SLUICE_*",
    "AzureWebJobs*",
    "AzureFunctionsJobHost*",
    "FUNCTIONS_*",
    "WEBSITE_*",
    "APPLICATIONINSIGHTS_*",
    "APPINSIGHTS_*",
    "IDENTITY_*",
    "MSI_*",
    "ServiceBusConnection*",
    "DEPLOYMENT_STORAGE*",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "APPSETTING_*",
    "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET",
    "RUST_LOG",
];

/// An Azure cloud, with the endpoints Sluice calls in it.
///
/// Sources: Azure CLI's cloud definitions (Azure/azure-cli
/// `src/azure-cli-core/azure/cli/core/cloud.py`: `log_analytics_resource_id`,
/// `app_insights_resource_id`) and azure-sdk-for-go `sdk/azcore/cloud/cloud.go`
/// (ARM endpoints and audiences); Microsoft Learn "Application Insights
/// custom endpoints" (query hosts per cloud); "Microsoft Entra ID
/// authentication - REST API reference" for App Configuration (audiences
/// `https://appconfig.azure.{com,cn,us}`) with azure-sdk-for-go
/// `sdk/data/azappconfig/cloud_config.go` (store suffixes); "Query
/// Prometheus metrics using the API and PromQL" (the public workspace
/// suffix and audience — the China and US Government ones follow the Azure
/// Monitor pattern as Grafana's and KEDA's Azure code use them, and Microsoft
/// publishes no page naming them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// `AzureCloud`.
    Public,
    /// `AzureChinaCloud` (operated by 21Vianet).
    China,
    /// `AzureUSGovernment`.
    UsGovernment,
}

impl Cloud {
    /// The name `SLUICE_AZURE_CLOUD` takes (as `az cloud list` names it).
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Public => "AzureCloud",
            Cloud::China => "AzureChinaCloud",
            Cloud::UsGovernment => "AzureUSGovernment",
        }
    }

    fn parse(text: &str) -> Option<Cloud> {
        [Cloud::Public, Cloud::China, Cloud::UsGovernment].into_iter().find(|c| c.name().eq_ignore_ascii_case(text))
    }

    /// Azure Resource Manager.
    pub fn arm(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::China => "https://management.chinacloudapi.cn",
            Cloud::UsGovernment => "https://management.usgovcloudapi.net",
        }
    }

    /// The Log Analytics query API (the first is the one Sluice calls).
    pub fn log_analytics(self) -> &'static [&'static str] {
        match self {
            Cloud::Public => &["https://api.loganalytics.azure.com", "https://api.loganalytics.io"],
            Cloud::China => &["https://api.loganalytics.azure.cn"],
            Cloud::UsGovernment => &["https://api.loganalytics.us"],
        }
    }

    /// The Application Insights query API.
    pub fn app_insights(self) -> &'static str {
        match self {
            Cloud::Public => "https://api.applicationinsights.io",
            Cloud::China => "https://api.applicationinsights.azure.cn",
            Cloud::UsGovernment => "https://api.applicationinsights.us",
        }
    }

    /// The DNS suffix of App Configuration stores.
    pub fn app_config_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "azconfig.io",
            Cloud::China => "azconfig.azure.cn",
            Cloud::UsGovernment => "azconfig.azure.us",
        }
    }

    /// The DNS suffix of Azure Monitor workspaces' Prometheus query endpoints.
    pub fn prometheus_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "prometheus.monitor.azure.com",
            Cloud::China => "prometheus.monitor.azure.cn",
            Cloud::UsGovernment => "prometheus.monitor.azure.us",
        }
    }

    /// The token audience (Entra resource) of `service` in this cloud, for
    /// the services whose audience depends on the cloud.
    pub fn audience(self, service: Service) -> Option<String> {
        Some(match service {
            Service::Arm => format!("{}/", self.arm()),
            Service::LogAnalytics => match self {
                Cloud::Public => "https://api.loganalytics.io/".into(),
                _ => format!("{}/", self.log_analytics()[0]),
            },
            Service::AppInsights => format!("{}/", self.app_insights()),
            Service::AppConfiguration => match self {
                Cloud::Public => "https://appconfig.azure.com".into(),
                Cloud::China => "https://appconfig.azure.cn".into(),
                Cloud::UsGovernment => "https://appconfig.azure.us".into(),
            },
            Service::Prometheus => format!("https://{}/", self.prometheus_suffix()),
            // AKS and Azure DevOps name their audience by application id,
            // kept beside their adapters; GitHub takes no Entra token.
            Service::Kubernetes | Service::AzureDevOps | Service::GitHub => return None,
        })
    }
}

/// A service Sluice sends a credential to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Azure Resource Manager (routers, Azure Monitor metrics).
    Arm,
    /// The Log Analytics query API.
    LogAnalytics,
    /// The Application Insights query API.
    AppInsights,
    /// An App Configuration store.
    AppConfiguration,
    /// An Azure Monitor workspace's Prometheus endpoint.
    Prometheus,
    /// A Kubernetes (AKS) API server.
    Kubernetes,
    /// GitHub's REST API.
    GitHub,
    /// Azure DevOps (Services or Server).
    AzureDevOps,
}

impl Service {
    /// The service, in words.
    pub fn words(self) -> &'static str {
        match self {
            Service::Arm => "Azure Resource Manager",
            Service::LogAnalytics => "the Log Analytics API",
            Service::AppInsights => "the Application Insights API",
            Service::AppConfiguration => "App Configuration",
            Service::Prometheus => "Azure Monitor managed Prometheus",
            Service::Kubernetes => "an AKS API server",
            Service::GitHub => "GitHub",
            Service::AzureDevOps => "Azure DevOps",
        }
    }
}

/// A URL prefix the deployment allows: an origin and a path under it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prefix {
    origin: String,
    path: String,
}

impl Prefix {
    fn parse(text: &str) -> Result<Prefix, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("'{}' is not a URL: {e}", text.trim()))?;
        if url.scheme() != "https" {
            return Err(format!("'{url}' is not an https URL"));
        }
        Ok(Prefix::of(&url))
    }

    fn of(url: &Url) -> Prefix {
        Prefix { origin: url.origin().ascii_serialization(), path: url.path().trim_end_matches('/').to_string() }
    }

    fn covers(&self, url: &Url) -> bool {
        let path = url.path();
        url.origin().ascii_serialization() == self.origin
            && path.strip_prefix(&self.path).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// A setting-name rule: a name, or a prefix (`NAME*`).
fn name_matches(rule: &str, name: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => rule == name,
    }
}

/// A reserved name, matched without regard to case (Windows' environment
/// ignores it, so `AZURE_client_secret` would read the secret there).
fn reserved(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    RESERVED_SETTINGS.iter().copied().find(|r| name_matches(&r.to_ascii_uppercase(), &upper))
}

/// The deployment's rules.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The Azure cloud Sluice runs in.
    pub cloud: Cloud,
    github: Vec<Prefix>,
    azure_devops: Vec<Prefix>,
    app_config: Vec<Prefix>,
    aks: Vec<Prefix>,
    spec_settings: Vec<(SecretUse, String)>,
    /// Whether loopback endpoints are allowed (local testing; `serve` refuses it).
    pub loopback: bool,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            cloud: Cloud::Public,
            github: Vec::new(),
            azure_devops: Vec::new(),
            app_config: Vec::new(),
            aks: Vec::new(),
            spec_settings: DEFAULT_SPEC_SETTINGS.iter().filter_map(|s| spec_setting(s).ok()).collect(),
            loopback: false,
        }
    }
}

/// A setting that shapes the rules and does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachProblem {
    /// The setting.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Reach {
    /// The rules the app settings describe; every problem at once.
    pub fn from_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<Reach, Vec<ReachProblem>> {
        let value = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut reach = Reach::default();
        if let Some(text) = value(CLOUD_SETTING) {
            match Cloud::parse(&text) {
                Some(cloud) => reach.cloud = cloud,
                None => problems.push(ReachProblem {
                    setting: CLOUD_SETTING,
                    message: format!("'{text}' is not a cloud Sluice knows (AzureCloud, AzureChinaCloud, AzureUSGovernment)"),
                }),
            }
        }
        let mut prefixes = |setting: &'static str| -> Vec<Prefix> {
            let items = value(setting).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Prefix::parse).collect());
            items
                .unwrap_or_else(Vec::new)
                .into_iter()
                .filter_map(|p| p.map_err(|message| problems.push(ReachProblem { setting, message })).ok())
                .collect()
        };
        reach.github = prefixes(GITHUB_SETTING);
        reach.azure_devops = prefixes(AZURE_DEVOPS_SETTING);
        reach.app_config = prefixes(APP_CONFIG_SETTING);
        reach.aks = prefixes(AKS_SETTING);
        if let Some(list) = value(SPEC_SETTINGS_SETTING) {
            reach.spec_settings.clear();
            for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match spec_setting(entry) {
                    Ok((_, name)) if name.trim_end_matches('*').is_empty() => problems.push(ReachProblem {
                        setting: SPEC_SETTINGS_SETTING,
                        message: format!("'{entry}' would let specs name any setting"),
                    }),
                    Ok(rule) => reach.spec_settings.push(rule),
                    Err(message) => problems.push(ReachProblem { setting: SPEC_SETTINGS_SETTING, message }),
                }
            }
        }
        reach.loopback = match value(LOOPBACK_SETTING).map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                problems.push(ReachProblem { setting: LOOPBACK_SETTING, message: format!("'{v}' is not true or false") });
                false
            }
        };
        if problems.is_empty() {
            Ok(reach)
        } else {
            Err(problems)
        }
    }

    /// The endpoint Sluice uses for `service` when a spec names none.
    pub fn default_endpoint(&self, service: Service) -> Option<String> {
        match service {
            Service::Arm => Some(self.cloud.arm().into()),
            Service::LogAnalytics => Some(self.cloud.log_analytics()[0].into()),
            Service::AppInsights => Some(self.cloud.app_insights().into()),
            Service::GitHub => Some("https://api.github.com".into()),
            Service::AppConfiguration | Service::Prometheus | Service::Kubernetes | Service::AzureDevOps => None,
        }
    }

    /// Whether `service`'s credential may be sent to `endpoint`; the reason if not.
    pub fn check_endpoint(&self, service: Service, endpoint: &str) -> Result<(), String> {
        let url = Url::parse(endpoint.trim()).map_err(|e| format!("'{endpoint}' is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a URL with a user name or password is never allowed".into());
        }
        // An encoded separator would let a path that matches a listed prefix reach another below the same host.
        let path = url.path().to_ascii_lowercase();
        if path.contains("%2f") || path.contains("%5c") {
            return Err(format!("{endpoint} has an encoded / or \\ in its path"));
        }
        if self.loopback && is_loopback(&url) && matches!(url.scheme(), "http" | "https") {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(format!("{endpoint} is not HTTPS; Sluice sends the credential for {} only over HTTPS", service.words()));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let under = |suffix: &str| url.port().is_none() && host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"));
        // `{organization}.visualstudio.com`, the legacy Azure DevOps form: one label, no other visualstudio.com host.
        let organization_host =
            url.port().is_none() && host.strip_suffix(".visualstudio.com").is_some_and(|org| !org.is_empty() && !org.contains('.'));
        let listed = |list: &[Prefix]| list.iter().any(|p| p.covers(&url));
        let fixed = |allowed: &[&str]| allowed.iter().filter_map(|a| Prefix::parse(a).ok()).any(|p| p.covers(&url));
        let allowed = match service {
            Service::Arm => fixed(&[self.cloud.arm()]),
            Service::LogAnalytics => fixed(self.cloud.log_analytics()),
            Service::AppInsights => fixed(&[self.cloud.app_insights()]),
            Service::Prometheus => under(self.cloud.prometheus_suffix()),
            Service::AppConfiguration => under(self.cloud.app_config_suffix()) && (self.app_config.is_empty() || listed(&self.app_config)),
            Service::Kubernetes => listed(&self.aks),
            Service::GitHub => fixed(&["https://api.github.com"]) || listed(&self.github),
            Service::AzureDevOps => fixed(&["https://dev.azure.com"]) || organization_host || listed(&self.azure_devops),
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("{endpoint} is not an address this deployment allows for {}: {}", service.words(), self.allowed_words(service)))
        }
    }

    /// Where `service`'s credential may go, in words (for refusals and `doctor`).
    pub fn allowed_words(&self, service: Service) -> String {
        let list = |l: &[Prefix], setting: &str| {
            if l.is_empty() {
                format!("none listed in {setting}")
            } else {
                format!("{} ({setting})", l.iter().map(|p| format!("{}{}", p.origin, p.path)).collect::<Vec<_>>().join(", "))
            }
        };
        let cloud = self.cloud.name();
        let mut words = match service {
            Service::Arm => format!("{} ({cloud})", self.cloud.arm()),
            Service::LogAnalytics => format!("{} ({cloud})", self.cloud.log_analytics().join(", ")),
            Service::AppInsights => format!("{} ({cloud})", self.cloud.app_insights()),
            Service::Prometheus => format!("https://*.{} ({cloud})", self.cloud.prometheus_suffix()),
            Service::AppConfiguration if self.app_config.is_empty() => format!("https://*.{} ({cloud})", self.cloud.app_config_suffix()),
            Service::AppConfiguration => list(&self.app_config, APP_CONFIG_SETTING),
            Service::Kubernetes => list(&self.aks, AKS_SETTING),
            Service::GitHub => format!("https://api.github.com; GitHub Enterprise: {}", list(&self.github, GITHUB_SETTING)),
            Service::AzureDevOps => {
                format!(
                    "https://dev.azure.com/…, https://{{organization}}.visualstudio.com; Azure DevOps Server: {}",
                    list(&self.azure_devops, AZURE_DEVOPS_SETTING)
                )
            }
        };
        if self.loopback {
            words.push_str("; loopback (SLUICE_ALLOW_LOOPBACK_ENDPOINTS)");
        }
        words
    }

    /// Whether a spec may name the app setting `name` for `used`; the reason if not.
    pub fn check_setting(&self, used: SecretUse, name: &str) -> Result<(), String> {
        if let Some(rule) = reserved(name) {
            return Err(format!("'{name}' is a setting Sluice itself runs on ({rule}); a spec may never name it"));
        }
        if self.spec_settings.iter().any(|(u, rule)| *u == used && name_matches(rule, name)) {
            Ok(())
        } else {
            Err(format!(
                "'{name}' is not a setting specs may name for a {} value here (allowed: {}; {SPEC_SETTINGS_SETTING})",
                used.tag(),
                self.spec_settings().join(", ")
            ))
        }
    }

    /// The setting names and prefixes specs may name, each with its use.
    pub fn spec_settings(&self) -> Vec<String> {
        self.spec_settings.iter().map(|(u, name)| format!("{}:{name}", u.tag())).collect()
    }
}

/// Every service, for reports.
pub const SERVICES: [Service; 8] = [
    Service::Arm,
    Service::LogAnalytics,
    Service::AppInsights,
    Service::Prometheus,
    Service::AppConfiguration,
    Service::Kubernetes,
    Service::GitHub,
    Service::AzureDevOps,
];

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(pairs: &[(&str, &str)]) -> Reach {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Reach::from_settings(&move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).expect("valid settings")
    }

    #[test]
    fn the_public_cloud_is_the_default_and_only_its_endpoints_receive_tokens() {
        let r = Reach::default();
        assert_eq!(r.default_endpoint(Service::Arm).as_deref(), Some("https://management.azure.com"));
        assert!(r.check_endpoint(Service::Arm, "https://management.azure.com").is_ok());
        assert!(r.check_endpoint(Service::Arm, "https://management.azure.com/").is_ok());
        for bad in [
            "https://management.azure.com.evil.example",
            "https://evil.example",
            "http://management.azure.com",
            "https://user:pw@management.azure.com",
            "https://management.azure.com:8443",
            "http://127.0.0.1:18999",
            "https://management.usgovcloudapi.net",
        ] {
            let why = r.check_endpoint(Service::Arm, bad).expect_err(bad);
            assert!(!why.is_empty());
        }
        assert!(r.check_endpoint(Service::LogAnalytics, "https://api.loganalytics.io").is_ok());
        assert!(r.check_endpoint(Service::AppInsights, "https://api.loganalytics.io").is_err());
    }

    #[test]
    fn a_sovereign_cloud_moves_every_azure_endpoint() {
        let r = reach(&[(CLOUD_SETTING, "AzureUSGovernment")]);
        assert_eq!(r.default_endpoint(Service::Arm).as_deref(), Some("https://management.usgovcloudapi.net"));
        assert!(r.check_endpoint(Service::Arm, "https://management.azure.com").is_err());
        assert!(r.check_endpoint(Service::AppConfiguration, "https://shop.azconfig.azure.us").is_ok());
        assert!(r.check_endpoint(Service::AppConfiguration, "https://shop.azconfig.io").is_err());
        assert_eq!(r.cloud.audience(Service::Arm).as_deref(), Some("https://management.usgovcloudapi.net/"));
        let china = reach(&[(CLOUD_SETTING, "azurechinacloud")]);
        assert_eq!(china.default_endpoint(Service::LogAnalytics).as_deref(), Some("https://api.loganalytics.azure.cn"));
    }

    #[test]
    fn suffix_services_take_any_store_of_the_cloud_unless_the_deployment_lists_them() {
        let r = Reach::default();
        assert!(r.check_endpoint(Service::AppConfiguration, "https://contoso-config.azconfig.io").is_ok());
        assert!(r.check_endpoint(Service::AppConfiguration, "https://azconfig.io").is_err());
        assert!(r.check_endpoint(Service::AppConfiguration, "https://x.azconfig.io.evil.example").is_err());
        assert!(r.check_endpoint(Service::Prometheus, "https://ws-a1b2.eastus.prometheus.monitor.azure.com").is_ok());
        let listed = reach(&[(APP_CONFIG_SETTING, "https://contoso-config.azconfig.io")]);
        assert!(listed.check_endpoint(Service::AppConfiguration, "https://contoso-config.azconfig.io/").is_ok());
        assert!(listed.check_endpoint(Service::AppConfiguration, "https://other.azconfig.io").is_err());
    }

    #[test]
    fn listed_prefixes_match_whole_path_segments() {
        let r = reach(&[(GITHUB_SETTING, "https://ghe.contoso.com/api/v3"), (AZURE_DEVOPS_SETTING, "https://tfs.contoso.com/tfs/")]);
        assert!(r.check_endpoint(Service::GitHub, "https://api.github.com").is_ok());
        assert!(r.check_endpoint(Service::GitHub, "https://ghe.contoso.com/api/v3").is_ok());
        assert!(r.check_endpoint(Service::GitHub, "https://ghe.contoso.com/api/v30").is_err());
        assert!(r.check_endpoint(Service::GitHub, "https://ghe.contoso.com").is_err());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://tfs.contoso.com/tfs/Default").is_ok());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://dev.azure.com/contoso").is_ok());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://contoso.visualstudio.com").is_ok());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://dev.azure.com.evil.example/x").is_err());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://a.b.visualstudio.com").is_err());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://contoso.visualstudio.com:8443").is_err());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://tfs.contoso.com/tfs/Default/..%2fOther").is_err());
        assert!(r.check_endpoint(Service::AzureDevOps, "https://tfs.contoso.com/tfs%2FOther").is_err());
        assert!(Reach::default().check_endpoint(Service::Kubernetes, "https://aks.hcp.westeurope.azmk8s.io:443").is_err());
        let aks = reach(&[(AKS_SETTING, "https://aks.hcp.westeurope.azmk8s.io:443")]);
        assert!(aks.check_endpoint(Service::Kubernetes, "https://aks.hcp.westeurope.azmk8s.io:443/").is_ok());
        assert!(aks.check_endpoint(Service::Kubernetes, "https://aks.hcp.westeurope.azmk8s.io:444").is_err());
    }

    #[test]
    fn loopback_is_allowed_only_when_the_deployment_says_so() {
        let r = reach(&[(LOOPBACK_SETTING, "true")]);
        for ok in ["http://127.0.0.1:18999", "http://localhost:1", "http://[::1]:80", "http://127.9.9.9"] {
            assert!(r.check_endpoint(Service::Arm, ok).is_ok(), "{ok}");
        }
        assert!(r.check_endpoint(Service::Arm, "http://10.0.0.1").is_err());
        assert!(r.check_endpoint(Service::Arm, "http://127.0.0.1.evil.example").is_err());
    }

    #[test]
    fn specs_name_only_declared_settings_for_their_use_and_never_sluices_own() {
        let r = Reach::default();
        assert!(r.check_setting(SecretUse::GitHub, "GITHUB_TOKEN").is_ok());
        assert!(r.check_setting(SecretUse::Channel, "TEAMS_URL").is_ok());
        // A credential goes only to its own kind of service.
        assert!(r.check_setting(SecretUse::Kubernetes, "GITHUB_TOKEN").is_err());
        assert!(r.check_setting(SecretUse::AzureDevOps, "K8S_TOKEN").is_err());
        assert!(r.check_setting(SecretUse::GitHub, "TEAMS_URL").is_err());
        for reserved in [
            "SLUICE_ALERT_TOKEN",
            "AzureWebJobsStorage",
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            "AZURE_CLIENT_SECRET",
            "azure_client_secret",
            "IDENTITY_HEADER",
            "APPSETTING_SLUICE_ALERT_TOKEN",
        ] {
            assert!(r.check_setting(SecretUse::Channel, reserved).expect_err(reserved).contains("Sluice itself"), "{reserved}");
        }
        assert!(r.check_setting(SecretUse::Channel, "PATH").is_err());
        let custom = reach(&[(SPEC_SETTINGS_SETTING, "TEAM_*,github:GH")]);
        assert!(custom.check_setting(SecretUse::Channel, "TEAM_HOOK").is_ok());
        assert!(custom.check_setting(SecretUse::GitHub, "GH").is_ok());
        assert!(custom.check_setting(SecretUse::Channel, "GH").is_err());
        assert!(custom.check_setting(SecretUse::GitHub, "GITHUB_TOKEN").is_err());
        let everything = reach(&[(SPEC_SETTINGS_SETTING, "TEAM_*,AZURE_*,SLUICE_*")]);
        assert!(everything.check_setting(SecretUse::Channel, "SLUICE_ALERT_TOKEN").is_err());
        assert!(everything.check_setting(SecretUse::Channel, "AZURE_client_secret").is_err());
        assert_eq!(Reach::default().spec_settings()[..2], ["github:GITHUB_TOKEN".to_string(), "azureDevOps:AZURE_DEVOPS_PAT".to_string()]);
    }

    #[test]
    fn bad_rules_are_reported_by_setting() {
        let get = |k: &str| match k {
            CLOUD_SETTING => Some("Mars".to_string()),
            AKS_SETTING => Some("http://aks.example".to_string()),
            SPEC_SETTINGS_SETTING => Some("github:*,mars:X".to_string()),
            LOOPBACK_SETTING => Some("yes".to_string()),
            _ => None,
        };
        let problems = Reach::from_settings(&get).expect_err("bad settings");
        let settings: Vec<&str> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(settings, [CLOUD_SETTING, AKS_SETTING, SPEC_SETTINGS_SETTING, SPEC_SETTINGS_SETTING, LOOPBACK_SETTING]);
    }
}
