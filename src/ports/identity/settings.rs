//! The issuers a deployment accepts tokens from, read from app settings.

use super::IssuerConfig;
use crate::domain::access::SubjectRule;

/// Entra ID tenant of Sluice's app registration.
pub const ENTRA_TENANT: &str = "SLUICE_ENTRA_TENANT_ID";
/// Sluice's app registration (the audience of the tokens it accepts).
pub const ENTRA_CLIENT: &str = "SLUICE_ENTRA_CLIENT_ID";
/// Entra's authority host, for a sovereign cloud (or a local provider in tests).
pub const ENTRA_AUTHORITY: &str = "SLUICE_ENTRA_AUTHORITY";
/// The audience GitHub Actions tokens must be requested for.
pub const GITHUB_AUDIENCE: &str = "SLUICE_GITHUB_AUDIENCE";
/// Which workflows get which role.
pub const GITHUB_SUBJECTS: &str = "SLUICE_GITHUB_SUBJECTS";
/// GitHub's issuer (an Enterprise's own, or a local provider in tests).
pub const GITHUB_ISSUER: &str = "SLUICE_GITHUB_ISSUER";

/// The public cloud's Entra authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// GitHub Actions' issuer (docs.github.com/en/actions/reference/security/oidc).
pub const DEFAULT_GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// One setting that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProblem {
    /// The setting.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The issuers the settings configure (none when no identity setting is set).
pub fn from_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<IssuerConfig>, Vec<IdentityProblem>> {
    let value = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut problems = Vec::new();
    let mut problem = |setting: &'static str, message: String| problems.push(IdentityProblem { setting, message });
    let mut issuers = Vec::new();
    match (value(ENTRA_TENANT), value(ENTRA_CLIENT)) {
        (Some(tenant), Some(client)) => {
            let authority = value(ENTRA_AUTHORITY).unwrap_or_else(|| DEFAULT_AUTHORITY.into());
            for (setting, v) in [(ENTRA_TENANT, &tenant), (ENTRA_CLIENT, &client)] {
                if !is_guid(v) {
                    problem(setting, format!("'{}' is not a GUID", crate::domain::ids::shown(v)));
                }
            }
            match super::keys::check_url(&authority) {
                Ok(()) => issuers.push(IssuerConfig::entra(&authority, &tenant, &client)),
                Err(why) => problem(ENTRA_AUTHORITY, why),
            }
        }
        (None, None) => {}
        (Some(_), None) => problem(ENTRA_CLIENT, format!("is not set; with {ENTRA_TENANT} it names Sluice's app registration")),
        (None, Some(_)) => problem(ENTRA_TENANT, format!("is not set; with {ENTRA_CLIENT} it names the tenant tokens come from")),
    }
    match (value(GITHUB_AUDIENCE), value(GITHUB_SUBJECTS)) {
        (Some(audience), Some(subjects)) => {
            let issuer = value(GITHUB_ISSUER).unwrap_or_else(|| DEFAULT_GITHUB_ISSUER.into());
            match (SubjectRule::parse_list(&subjects), super::keys::check_url(&issuer)) {
                (Ok(rules), Ok(())) => issuers.push(IssuerConfig::github(&issuer, &audience, rules)),
                (Err(why), _) => problem(GITHUB_SUBJECTS, why),
                (_, Err(why)) => problem(GITHUB_ISSUER, why),
            }
        }
        (None, None) => {}
        (Some(_), None) => {
            problem(GITHUB_SUBJECTS, "is not set; name which workflows get which role (repo:OWNER/REPO:environment:NAME=Operator)".into())
        }
        (None, Some(_)) => problem(GITHUB_AUDIENCE, "is not set; name the audience the workflows request their token for".into()),
    }
    if problems.is_empty() {
        Ok(issuers)
    } else {
        Err(problems)
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Vec<IssuerConfig>, Vec<IdentityProblem>> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        from_settings(&|name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0f4a1c2e-1111-2222-3333-444455556666";

    #[test]
    fn entra_accepts_v2_tokens_of_one_tenant_for_sluices_app() {
        let issuers = settings(&[(ENTRA_TENANT, TENANT), (ENTRA_CLIENT, CLIENT)]).expect("valid");
        assert_eq!(issuers[0].issuer, format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
        assert_eq!(issuers[0].discovery, format!("https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"));
        assert_eq!(issuers[0].audiences, [CLIENT.to_string(), format!("api://{CLIENT}")]);
    }

    #[test]
    fn the_dashboard_signs_in_at_entras_v2_endpoints_for_sluices_own_scope() {
        let issuers = settings(&[(ENTRA_TENANT, TENANT), (ENTRA_CLIENT, CLIENT)]).expect("valid");
        let page = super::super::BrowserSignIn::of(&issuers[0]).expect("Entra signs people in");
        let root = format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0");
        assert_eq!(
            (page.authorize, page.token, page.logout),
            (format!("{root}/authorize"), format!("{root}/token"), format!("{root}/logout"))
        );
        assert_eq!((page.client_id.as_str(), page.scope), (CLIENT, format!("api://{CLIENT}/access_as_user")));
        let github = settings(&[(GITHUB_AUDIENCE, "api://sluice"), (GITHUB_SUBJECTS, "repo:contoso/orders:environment:prod=Operator")]);
        assert_eq!(super::super::BrowserSignIn::of(&github.expect("valid")[0]), None, "GitHub signs no person in");
    }

    #[test]
    fn github_needs_an_audience_and_rules() {
        let issuers = settings(&[(GITHUB_AUDIENCE, "api://sluice"), (GITHUB_SUBJECTS, "repo:contoso/orders:environment:prod=Operator")])
            .expect("valid");
        assert_eq!(issuers[0].issuer, "https://token.actions.githubusercontent.com");
        let wrong = settings(&[(GITHUB_AUDIENCE, "api://sluice")]).expect_err("no rules");
        assert_eq!(wrong[0].setting, GITHUB_SUBJECTS);
    }

    #[test]
    fn half_a_configuration_or_a_bad_value_names_the_setting() {
        assert_eq!(settings(&[(ENTRA_TENANT, TENANT)]).expect_err("half")[0].setting, ENTRA_CLIENT);
        assert_eq!(settings(&[(ENTRA_TENANT, "contoso"), (ENTRA_CLIENT, CLIENT)]).expect_err("not a guid")[0].setting, ENTRA_TENANT);
        let plain = settings(&[(ENTRA_TENANT, TENANT), (ENTRA_CLIENT, CLIENT), (ENTRA_AUTHORITY, "http://login.example.com")]);
        assert_eq!(plain.expect_err("plain http")[0].setting, ENTRA_AUTHORITY);
        assert!(settings(&[]).expect("none").is_empty());
    }
}
