//! `dashboard` (HTTP, `GET dashboard/{id?}`): one page, no build step and
//! no third-party code, that lists rollouts (active first, filtered by
//! service and phase), shows one — canary weight, phase bands and each
//! metric's canary and stable values against its threshold on one time
//! axis, with every verdict marked — with the buttons people act with, and
//! the release-health report. It reads the API and refreshes while a
//! rollout runs. People would rather look at a chart than read logs.
//!
//! The page itself holds no data, so it is served to anyone (the Functions
//! host asks no key for it: a sign-in comes back to it without one); its
//! reads and actions carry the caller's key and, where Sluice checks tokens,
//! the token the page signs the person in for (Entra ID, authorization code
//! with PKCE; see [`BrowserSignIn`]).

use super::api::PRINCIPAL_HEADER;
use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};
use crate::ports::identity::BrowserSignIn;

const PAGE: &str = include_str!("dashboard.html");

/// Where the page learns who is signed in.
const SIGNED_IN: &str = "{{SIGNED_IN}}";
/// Where the page learns a local `sluice up`'s write token (its host passes it; empty elsewhere).
const LOCAL_TOKEN: &str = "{{LOCAL_TOKEN}}";
/// Where the page learns how to sign a person in (JSON; empty when Sluice checks no tokens).
const SIGN_IN: &str = "{{SIGN_IN}}";

/// The header the local host hands the page its token in (the host replaces
/// any copy a client sends).
pub const PAGE_TOKEN_HEADER: &str = "x-sluice-page-token";

/// Serves the page, naming who its buttons act as: App Service
/// authentication's signed-in principal in Azure, or locally the user
/// `sluice up --as` signs requests in as. The page then sends only that
/// name; where App Service authentication is on, the API trusts nothing else.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method != "GET" {
        return Err(ApiError::new(405, "method_not_allowed", "the dashboard is read with GET"));
    }
    let header = if app.require_principal { PRINCIPAL_HEADER } else { "x-sluice-user" };
    let who = req.header(header).and_then(|name| crate::domain::ids::Actor::parse(name).ok());
    let who = who.map(|a| html_escape(a.as_str())).unwrap_or_default();
    let token = req.header(PAGE_TOKEN_HEADER).map(html_escape).unwrap_or_default();
    let sign_in = app.tokens.as_ref().and_then(|v| v.browser_sign_in());
    let sign_in_json = sign_in.as_ref().and_then(|s| serde_json::to_string(s).ok()).map(|j| html_escape(&j)).unwrap_or_default();
    let html = PAGE.replacen(SIGNED_IN, &who, 1).replacen(LOCAL_TOKEN, &token, 1).replacen(SIGN_IN, &sign_in_json, 1);
    let mut page = HttpResponse::html(html);
    page.headers.extend(protective_headers(sign_in.as_ref().and_then(BrowserSignIn::token_origin).as_deref()));
    Ok(page)
}

/// What the browser is told: run only the page's own script (by its
/// hash), fetch only from this origin (and the sign-in's token endpoint),
/// load nothing from elsewhere, never be framed (clickjacking the Approve
/// button), never guess a type.
fn protective_headers(token_origin: Option<&str>) -> Vec<(String, String)> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| {
        let script = PAGE.split_once("<script>").and_then(|(_, rest)| rest.split_once("</script>")).map(|(s, _)| s).unwrap_or("");
        let digest = <sha2::Sha256 as sha2::Digest>::digest(script.as_bytes());
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest)
    });
    let connect = token_origin.map(|o| format!("'self' {o}")).unwrap_or_else(|| "'self'".into());
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src {connect}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    [
        ("content-security-policy", policy.as_str()),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        // A local page carries its host's write token: never kept by a cache.
        ("cache-control", "no-store"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Escapes text for an HTML attribute.
fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README gives the page's size ("one page of about N KB").
    #[test]
    fn the_readme_says_how_big_the_page_is() {
        let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
        let said = readme.split("one page of about ").nth(1).and_then(|rest| rest.split(" KB").next()).expect("the README gives a size");
        let kb: f64 = said.parse().expect("a number of KB");
        let actual = PAGE.len() as f64 / 1000.0;
        assert!((kb - actual).abs() <= actual * 0.1, "the README says about {kb} KB; the page is {actual:.1} KB");
    }

    #[test]
    fn the_page_is_small_and_loads_nothing_from_elsewhere() {
        assert!(PAGE.len() < 40 * 1024, "the page is {} bytes", PAGE.len());
        for outside in ["src=\"http", "href=\"http", "@import", "<link"] {
            assert!(!PAGE.contains(outside), "the page loads something ({outside})");
        }
        assert_eq!(PAGE.matches(SIGNED_IN).count(), 1);
        assert_eq!(PAGE.matches(LOCAL_TOKEN).count(), 1);
        assert_eq!(PAGE.matches(SIGN_IN).count(), 1);
    }

    #[test]
    fn the_page_may_fetch_tokens_from_its_sign_in_and_nowhere_else() {
        let policy = |origin| protective_headers(origin).into_iter().find(|(k, _)| k == "content-security-policy").map(|(_, v)| v);
        let plain = policy(None).expect("a policy");
        assert!(plain.contains("connect-src 'self';"), "{plain}");
        let signing_in = policy(Some("https://login.microsoftonline.com")).expect("a policy");
        assert!(signing_in.contains("connect-src 'self' https://login.microsoftonline.com;"), "{signing_in}");
        assert!(signing_in.contains("script-src 'sha256-") && signing_in.contains("frame-ancestors 'none'"), "{signing_in}");
    }

    #[test]
    fn names_are_escaped_into_the_page() {
        assert_eq!(html_escape(r#"a"b<c>&'"#), "a&quot;b&lt;c&gt;&amp;&#39;");
    }
}
