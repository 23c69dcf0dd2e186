//! An issuer's signing keys: OpenID Connect discovery, then its JWKS, kept
//! in memory and fetched again for a `kid` not seen yet (at most once per
//! [`REFRESH_FLOOR`], so a flood of made-up key ids costs one fetch) or
//! once they are a day old — Microsoft rotates keys and suggests checking
//! daily (learn.microsoft.com/entra/identity-platform/access-tokens,
//! "Validate the signature").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::TokenError;

/// The least time between two fetches of one issuer's keys.
pub const REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// Keys older than this are fetched again.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// One fetch (discovery or keys) may take this long; then the token is refused, not waited on.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One issuer's keys by `kid`.
pub struct KeySet {
    discovery: String,
    issuer: String,
    keys: tokio::sync::Mutex<Fetched>,
}

#[derive(Default)]
struct Fetched {
    by_kid: HashMap<String, DecodingKey>,
    /// When the keys held were fetched.
    at: Option<Instant>,
    /// When a fetch was last tried, whatever came of it: the floor counts
    /// from here, so an issuer that hangs is asked once per floor, not once per request.
    tried: Option<Instant>,
    /// Why the last try failed.
    failed: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl KeySet {
    /// The keys of `issuer`, found through its discovery document at `discovery`.
    pub fn new(discovery: &str, issuer: &str) -> KeySet {
        KeySet { discovery: discovery.to_string(), issuer: issuer.to_string(), keys: tokio::sync::Mutex::new(Fetched::default()) }
    }

    /// The key `kid` names, fetching the set again if it is unknown (or a
    /// day old) and no fetch was tried within [`REFRESH_FLOOR`]. While the
    /// issuer is down the keys held before keep working.
    pub async fn key(&self, http: &reqwest::Client, kid: &str) -> Result<DecodingKey, TokenError> {
        let mut held = self.keys.lock().await;
        let fresh = held.at.is_some_and(|at| at.elapsed() <= KEYS_MAX_AGE);
        if let Some(key) = held.by_kid.get(kid).filter(|_| fresh) {
            return Ok(key.clone());
        }
        if held.tried.map_or(true, |t| t.elapsed() >= REFRESH_FLOOR) {
            held.tried = Some(Instant::now());
            match self.fetch(http).await {
                Ok(keys) => {
                    held.by_kid = keys;
                    held.at = Some(Instant::now());
                    held.failed = None;
                }
                Err(why) => {
                    tracing::warn!(issuer = %self.issuer, error = %why, "signing keys could not be fetched");
                    held.failed = Some(why);
                }
            }
        }
        match held.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if held.by_kid.is_empty() => {
                Err(TokenError::KeysUnavailable(held.failed.clone().unwrap_or_else(|| "not fetched yet".into())))
            }
            None => Err(TokenError::UnknownKey(crate::domain::ids::shown(kid).to_string())),
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<HashMap<String, DecodingKey>, String> {
        let discovery: Discovery = get_json(http, &self.discovery).await?;
        if discovery.issuer != self.issuer {
            return Err(format!(
                "the discovery document names the issuer '{}', not '{}'",
                crate::domain::ids::shown(&discovery.issuer),
                self.issuer
            ));
        }
        check_url(&discovery.jwks_uri)?;
        let jwks: Jwks = get_json(http, &discovery.jwks_uri).await?;
        let keys: HashMap<String, DecodingKey> = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA" && k.usage.as_deref().map_or(true, |u| u == "sig"))
            .filter_map(|k| {
                let key = DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect();
        if keys.is_empty() {
            return Err("the key set holds no RSA signing key".into());
        }
        Ok(keys)
    }
}

/// Keys come over HTTPS; plain HTTP only from this machine (tests, a local provider).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("'{}' is not a URL: {e}", crate::domain::ids::shown(url)))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("'{}' is not HTTPS", crate::domain::ids::shown(url))),
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T, String> {
    let answer = http.get(url).timeout(FETCH_TIMEOUT).send().await.map_err(|e| match e.is_timeout() {
        true => format!("{url}: timed out after {} s", FETCH_TIMEOUT.as_secs()),
        false => format!("{url}: {}", e.without_url()),
    })?;
    if !answer.status().is_success() {
        return Err(format!("{url} answered HTTP {}", answer.status().as_u16()));
    }
    crate::ports::env::read_json(answer).await.map_err(|e| format!("{url}: {e}"))
}
