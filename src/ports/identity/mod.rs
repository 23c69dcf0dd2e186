//! Bearer tokens, checked by Sluice itself whatever runs in front of it:
//! the token's issuer must be one configured, its signature RS256 by a key
//! of that issuer's published set (`none`, HMAC and every other algorithm
//! refused), its audience Sluice's, its `exp`/`nbf` good within
//! [`CLOCK_SKEW`]; then its claims become a [`Principal`] with roles.
//!
//! Microsoft's guidance followed here: learn.microsoft.com/entra/identity-platform/access-tokens
//! ("Validate tokens": RS256, the `kid` names the key, keys from the
//! issuer's discovery document) and .../claims-validation (check `iss`,
//! `aud`, `tid`; authorize on `oid` and `roles`, never on `preferred_username`
//! or `upn`, which only name the caller). GitHub's token:
//! docs.github.com/en/actions/reference/security/oidc (issuer, `sub` forms).

pub mod keys;
pub mod settings;

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::access::{roles_for_subject, CallerKind, Principal, Role, SubjectRule};

/// How far a token's `exp` and `nbf` may be off the clock.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Longest token read; Entra's with 200 groups stay well under it.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most groups kept of a `groups` claim (Entra sends at most 200 in a JWT).
const MAX_GROUPS: usize = 200;

/// Why a token was refused (each answer is a 401 naming it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("the token is not a JWT: {0}")]
    Malformed(String),
    /// Anything but RS256.
    #[error("the token is signed with {0}; only RS256 is accepted")]
    Algorithm(String),
    /// No configured issuer has this `iss`.
    #[error("the token's issuer '{0}' is not one this Sluice accepts")]
    UnknownIssuer(String),
    /// The issuer's key set has no such `kid`, even fetched again.
    #[error("the token names a signing key '{0}' its issuer does not publish")]
    UnknownKey(String),
    /// The issuer's keys could not be had.
    #[error("the issuer's signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    Signature,
    /// Not meant for Sluice.
    #[error("the token's audience is not this Sluice's ({0})")]
    Audience(String),
    /// Past `exp`.
    #[error("the token expired at {0}")]
    Expired(String),
    /// Before `nbf`.
    #[error("the token is not valid before {0}")]
    NotYetValid(String),
    /// A claim the caller's identity needs is missing or wrong.
    #[error("the token's claim '{0}' is missing or wrong")]
    Claim(&'static str),
}

/// Who issues the tokens an issuer configuration accepts, and how they map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKind {
    /// Entra ID, one tenant: v2.0 tokens; `oid` and `tid` are the identity, `roles` the roles.
    Entra {
        /// The tenant id the `tid` claim must carry.
        tenant: String,
    },
    /// GitHub Actions' OIDC: `sub` is the identity, the rules give the roles.
    GitHub {
        /// Subject rules.
        rules: Vec<SubjectRule>,
    },
}

/// One issuer Sluice accepts tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact `iss`.
    pub issuer: String,
    /// Its OpenID Connect discovery document.
    pub discovery: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// How its claims map.
    pub kind: IssuerKind,
}

impl IssuerConfig {
    /// Entra ID's v2.0 endpoint for `tenant` under `authority`
    /// (`https://login.microsoftonline.com`, or a sovereign cloud's), for
    /// Sluice's app `client_id` (audience: the client id, or `api://` and it).
    pub fn entra(authority: &str, tenant: &str, client_id: &str) -> IssuerConfig {
        // Entra writes the tenant id in lower case in `iss`.
        let (tenant, client_id) = (tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase());
        let (tenant, client_id) = (tenant.as_str(), client_id.as_str());
        let issuer = format!("{}/{tenant}/v2.0", authority.trim_end_matches('/'));
        IssuerConfig {
            discovery: format!("{issuer}/.well-known/openid-configuration"),
            issuer,
            audiences: vec![client_id.to_string(), format!("api://{client_id}")],
            kind: IssuerKind::Entra { tenant: tenant.to_string() },
        }
    }

    /// GitHub Actions (`https://token.actions.githubusercontent.com`), for tokens requested with `audience`.
    pub fn github(issuer: &str, audience: &str, rules: Vec<SubjectRule>) -> IssuerConfig {
        let issuer = issuer.trim_end_matches('/').to_string();
        IssuerConfig {
            discovery: format!("{issuer}/.well-known/openid-configuration"),
            issuer,
            audiences: vec![audience.to_string()],
            kind: IssuerKind::GitHub { rules },
        }
    }
}

/// What the dashboard needs to sign a person in as a single-page app:
/// the authorization code flow with PKCE against Entra ID's v2.0 endpoints
/// (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow:
/// `/{tenant}/oauth2/v2.0/authorize`, `/token`, `/logout`), asking for
/// Sluice's own delegated scope so the token's audience is Sluice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserSignIn {
    /// Where the browser is sent to sign in.
    pub authorize: String,
    /// Where the page trades the code (and later a refresh token) for tokens.
    pub token: String,
    /// Where signing out ends the session.
    pub logout: String,
    /// Sluice's app registration, the page's client id.
    pub client_id: String,
    /// The scope asked for: Sluice's `access_as_user`.
    pub scope: String,
}

impl BrowserSignIn {
    /// The scope Sluice's registration exposes to people (README, "Who may act").
    pub const SCOPE: &'static str = "access_as_user";

    /// Entra's endpoints for `config`; `None` for other issuers.
    pub fn of(config: &IssuerConfig) -> Option<BrowserSignIn> {
        let IssuerKind::Entra { .. } = config.kind else { return None };
        // The issuer is `{authority}/{tenant}/v2.0`; the endpoints sit beside it.
        let tenant_root = config.issuer.strip_suffix("/v2.0")?;
        let client_id = config.audiences.first()?.clone();
        let endpoint = |name: &str| format!("{tenant_root}/oauth2/v2.0/{name}");
        Some(BrowserSignIn {
            authorize: endpoint("authorize"),
            token: endpoint("token"),
            logout: endpoint("logout"),
            scope: format!("api://{client_id}/{}", Self::SCOPE),
            client_id,
        })
    }

    /// The origin the page may fetch tokens from (its content security policy).
    pub fn token_origin(&self) -> Option<String> {
        reqwest::Url::parse(&self.token).ok().map(|u| u.origin().ascii_serialization())
    }
}

/// Checks tokens against the configured issuers.
pub struct Verifier {
    issuers: Vec<(IssuerConfig, keys::KeySet)>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.issuers.iter().map(|(c, _)| &c.issuer)).finish()
    }
}

/// The claims Sluice reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    exp: i64,
    nbf: Option<i64>,
    sub: Option<String>,
    oid: Option<String>,
    tid: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    // Whether these are present decides what the token is (a person's, an app's, an ID
    // token), so an explicit `null` is refused rather than read as absent.
    #[serde(default, deserialize_with = "present")]
    scp: Option<String>,
    #[serde(default, deserialize_with = "present")]
    idtyp: Option<String>,
    #[serde(default, deserialize_with = "present")]
    nonce: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    azp: Option<String>,
    appid: Option<String>,
    repository: Option<String>,
    environment: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// A claim that, when it is there, is a string: `null` is no way of leaving it out.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct AlgOnly {
    alg: String,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: String,
}

impl Verifier {
    /// A verifier of `issuers` (their URLs checked: HTTPS, or HTTP on this machine).
    pub fn new(issuers: Vec<IssuerConfig>) -> Result<Verifier, String> {
        for config in &issuers {
            keys::check_url(&config.discovery)?;
        }
        let http = crate::ports::env::http_client();
        Ok(Verifier {
            issuers: issuers.into_iter().map(|c| (keys::KeySet::new(&c.discovery, &c.issuer), c)).map(|(k, c)| (c, k)).collect(),
            http,
        })
    }

    /// The issuers accepted, for `doctor`.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.issuers.iter().map(|(c, _)| c)
    }

    /// How the dashboard signs a person in: Entra ID's, when it is configured.
    pub fn browser_sign_in(&self) -> Option<BrowserSignIn> {
        self.issuers().find_map(BrowserSignIn::of)
    }

    /// The caller `token` proves, at `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!("it is {} bytes; the most is {MAX_TOKEN_BYTES}", token.len())));
        }
        // The algorithm first, as written: `none` is no algorithm the library would even parse.
        let alg = part_json::<AlgOnly>(token, 0, "header")?.alg;
        if alg != "RS256" {
            return Err(TokenError::Algorithm(crate::domain::ids::shown(&alg).to_string()));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let kid = header.kid.ok_or(TokenError::Claim("kid"))?;
        let iss = unverified_issuer(token)?;
        let (config, keys) = self
            .issuers
            .iter()
            .find(|(c, _)| c.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer(crate::domain::ids::shown(&iss).to_string()))?;
        let key = keys.key(&self.http, &kid).await?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audiences);
        // Time is checked below against Sluice's clock, not the library's.
        validation.validate_exp = false;
        validation.required_spec_claims = ["iss", "aud"].iter().map(|s| s.to_string()).collect();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| refusal(e, config))?.claims;
        check_time(&claims, now)?;
        principal(config, claims)
    }
}

/// Part `n` of a token not yet verified, as JSON: only to check its algorithm and pick the issuer whose key must verify it.
fn part_json<T: serde::de::DeserializeOwned>(token: &str, n: usize, what: &'static str) -> Result<T, TokenError> {
    use base64::Engine as _;
    let part = token.split('.').nth(n).ok_or_else(|| TokenError::Malformed(format!("no {what}")))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))?;
    serde_json::from_slice::<T>(&bytes).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
}

fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    part_json::<IssuerOnly>(token, 1, "payload").map(|c| c.iss)
}

fn refusal(e: jsonwebtoken::errors::Error, config: &IssuerConfig) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAudience => TokenError::Audience(config.audiences.join(" or ")),
        ErrorKind::InvalidIssuer => TokenError::UnknownIssuer(config.issuer.clone()),
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm("another algorithm than its key's".into()),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::Claim("aud"),
        ErrorKind::Json(_) => TokenError::Claim("exp"),
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

fn check_time(claims: &Claims, now: i64) -> Result<(), TokenError> {
    let skew = CLOCK_SKEW.as_secs() as i64;
    let when =
        |t: i64| chrono::DateTime::from_timestamp(t, 0).map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or(t.to_string());
    if now > claims.exp + skew {
        return Err(TokenError::Expired(when(claims.exp)));
    }
    match claims.nbf {
        Some(nbf) if now + skew < nbf => Err(TokenError::NotYetValid(when(nbf))),
        _ => Ok(()),
    }
}

/// The caller the claims name, by the issuer's rules.
fn principal(config: &IssuerConfig, claims: Claims) -> Result<Principal, TokenError> {
    match &config.kind {
        IssuerKind::Entra { tenant } => {
            let tid = claims.tid.filter(|t| t.eq_ignore_ascii_case(tenant)).ok_or(TokenError::Claim("tid"))?;
            let oid = claims.oid.filter(|o| !o.trim().is_empty()).ok_or(TokenError::Claim("oid"))?;
            // A delegated token (a person signed in) carries scopes; an app-only one does not,
            // and says `idtyp: app` where that optional claim is configured. An ID token
            // (`nonce`, or another `idtyp`) is no access token, whatever its audience.
            if claims.nonce.is_some() || claims.idtyp.as_deref().is_some_and(|t| t != "app" && claims.scp.is_none()) {
                return Err(TokenError::Claim("idtyp"));
            }
            let person = claims.scp.is_some();
            let roles: BTreeSet<Role> = claims.roles.iter().filter_map(|r| Role::named(r)).collect();
            let kind = match person {
                true => CallerKind::Person,
                false if roles.iter().all(|r| *r == Role::AlertSender) => CallerKind::Application,
                false => CallerKind::Pipeline,
            };
            // Shown, and matched by approver lists written as UPNs: the sign-in name, never the
            // free-form display name (`name`), which anyone's profile may share.
            let name = [claims.preferred_username, claims.upn, claims.azp, claims.appid]
                .into_iter()
                .flatten()
                .find(|n| !n.trim().is_empty())
                .unwrap_or_else(|| oid.clone());
            let mut groups = claims.groups;
            groups.truncate(MAX_GROUPS);
            Ok(Principal { id: format!("{}/{}", tid.to_ascii_lowercase(), oid.to_ascii_lowercase()), name, kind, roles, groups })
        }
        IssuerKind::GitHub { rules } => {
            let sub = claims.sub.filter(|s| !s.trim().is_empty()).ok_or(TokenError::Claim("sub"))?;
            let name = match (&claims.repository, &claims.environment, &claims.git_ref) {
                (Some(repo), Some(env), _) => format!("{repo} ({env})"),
                (Some(repo), None, Some(r)) => format!("{repo} ({r})"),
                _ => sub.clone(),
            };
            let roles = roles_for_subject(rules, &sub);
            Ok(Principal { id: format!("{}#{sub}", config.issuer), name, kind: CallerKind::Pipeline, roles, groups: Vec::new() })
        }
    }
}
