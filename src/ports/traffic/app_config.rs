//! An Azure App Configuration feature flag as a router: the app serves the
//! new code path to the share of users the flag enables. The canary weight
//! is the flag's rollout percentage — the `Microsoft.Targeting` filter's
//! `Audience.DefaultRolloutPercentage`, or the `Microsoft.Percentage`
//! filter's `Value`, whichever the flag has (a targeting filter is added
//! when it has neither). A rollback disables the flag, which takes
//! everyone off the new path at the apps' next refresh; promotion enables
//! it for everyone (the rollout filter is removed). Every write is a `PUT`
//! with `If-Match` on the ETag just read, so a change made meanwhile in the
//! portal is never overwritten: a weight change then fails and the rollout
//! retries it; a rollback reads again and writes again until it wins.
//!
//! Settings: `endpoint` (`https://{store}.azconfig.io`), `flag`; optional
//! `label`, `connectionStringSetting` (the app setting holding a
//! `Endpoint=…;Id=…;Secret=…` connection string: HMAC access keys, for
//! development; otherwise Entra ID tokens for the cloud's App
//! Configuration audience, `https://appconfig.azure.com` in AzureCloud).
//!
//! Source: App Configuration data-plane REST API, api-version 2023-11-01
//! (Azure REST API specs, Microsoft.AppConfiguration data-plane:
//! `GetKeyValue` / `PutKeyValue` on `/kv/{key}?label=`, `ETag` and
//! `If-Match`, request content type `application/vnd.microsoft.appconfig.kv+json`);
//! "Feature flag management" / the feature-flag schema (key prefix
//! `.appconfig.featureflag/`, content type
//! `application/vnd.microsoft.appconfig.ff+json;charset=utf-8`, value
//! `{id, enabled, conditions.client_filters[{name, parameters}]}`);
//! "HMAC authentication - REST API reference" and "Microsoft Entra ID
//! authentication - REST API reference" (audience per cloud:
//! `https://appconfig.azure.com`, `.cn`, `.us`; the older `https://azconfig.io`
//! is what the 2020 version of that page named).

use crate::ports::reach::{SecretUse, Service};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{call_failed, confirm, failed, until_applied, Routing, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::spec::Target;
use crate::ports::azure::http::{Auth, AzureHttp, Call};
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError};

const API: &str = "api-version=2023-11-01";
/// The content type of a key-value sent to the store.
pub const KV_CONTENT_TYPE: &str = "application/vnd.microsoft.appconfig.kv+json";
/// The content type that marks a key-value as a feature flag.
pub const FLAG_CONTENT_TYPE: &str = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8";
/// The filters whose percentage is the canary weight.
const TARGETING: &str = "Microsoft.Targeting";
const PERCENTAGE: &str = "Microsoft.Percentage";

/// One feature flag in one store.
pub struct AppConfigFlag {
    api: AzureHttp,
    url: String,
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "appConfigFlag";
    let config = |message: String| AdapterError::Config { provider: name.into(), message };
    let endpoint = env.endpoint(name, s, "endpoint", Service::AppConfiguration)?;
    let endpoint = endpoint.as_str();
    let key_setting = env.secret_name(name, s, "connectionStringSetting", None, SecretUse::AppConfiguration)?;
    let flag = req_str(name, s, "flag")?;
    let auth = match key_setting {
        Some(setting) => {
            let text = env.secret(&setting).ok_or_else(|| config(format!("app setting {setting} is not set")))?;
            hmac_auth(&text).ok_or_else(|| config(format!("app setting {setting} is not an Endpoint=…;Id=…;Secret=… connection string")))?
        }
        None => Auth::Entra { credential: env.azure_identity(name)?, resource: env.audience(Service::AppConfiguration) },
    };
    let key = utf8_percent_encode(&format!(".appconfig.featureflag/{flag}"));
    let label = opt_str(s, "label").map(|l| format!("&label={}", utf8_percent_encode(l))).unwrap_or_default();
    Ok(Arc::new(AppConfigFlag {
        api: AzureHttp::with_auth(env.http.clone(), auth, endpoint),
        url: format!("{endpoint}/kv/{key}?{API}{label}"),
    }))
}

/// Everything but RFC 3986's unreserved characters is escaped (the key's `/` too).
const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn utf8_percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, KEY).to_string()
}

/// HMAC credentials from a connection string (`Endpoint=…;Id=…;Secret=…`).
fn hmac_auth(connection: &str) -> Option<Auth> {
    let part = |name: &str| {
        connection
            .split(';')
            .find_map(|p| p.trim().split_once('=').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string()))
    };
    let secret = base64::engine::general_purpose::STANDARD.decode(part("Secret")?).ok()?;
    Some(Auth::Hmac { id: part("Id")?, secret })
}

/// A flag as stored: its parsed value, tags and ETag.
struct Stored {
    flag: Value,
    tags: Value,
    etag: String,
}

/// The rollout filter's percentage, if the flag has one.
fn percentage(flag: &Value) -> Option<f64> {
    let filters = flag.pointer("/conditions/client_filters").and_then(Value::as_array)?;
    filters.iter().find_map(|f| match f.get("name").and_then(Value::as_str) {
        Some(TARGETING) => f.pointer("/parameters/Audience/DefaultRolloutPercentage").and_then(Value::as_f64),
        Some(PERCENTAGE) => f.pointer("/parameters/Value").and_then(Value::as_f64),
        _ => None,
    })
}

/// The share of users the flag enables.
fn weight_of(flag: &Value) -> Weight {
    if flag.get("enabled").and_then(Value::as_bool) != Some(true) {
        return Weight::ZERO;
    }
    let pct = percentage(flag).unwrap_or(100.0);
    Weight::new(pct.round().clamp(0.0, 100.0) as u64).unwrap_or(Weight::FULL)
}

/// Sets the rollout percentage, adding a targeting filter if there is none.
fn with_percentage(mut flag: Value, weight: Weight) -> Value {
    let pct = json!(weight.percent());
    if !flag.pointer("/conditions/client_filters").map(Value::is_array).unwrap_or(false) {
        flag["conditions"] = json!({"client_filters": []});
    }
    let mut found = false;
    if let Some(filters) = flag.pointer_mut("/conditions/client_filters").and_then(Value::as_array_mut) {
        for f in filters.iter_mut() {
            match f.get("name").and_then(Value::as_str) {
                Some(TARGETING) => {
                    f["parameters"]["Audience"]["DefaultRolloutPercentage"] = pct.clone();
                    found = true;
                }
                Some(PERCENTAGE) => {
                    f["parameters"]["Value"] = pct.clone();
                    found = true;
                }
                _ => {}
            }
        }
        if !found {
            filters
                .push(json!({"name": TARGETING, "parameters": {"Audience": {"Users": [], "Groups": [], "DefaultRolloutPercentage": pct}}}));
        }
    }
    flag["enabled"] = json!(true);
    flag
}

/// Enabled for everyone: the rollout filters go.
fn for_everyone(mut flag: Value) -> Value {
    if let Some(filters) = flag.pointer_mut("/conditions/client_filters").and_then(Value::as_array_mut) {
        filters.retain(|f| !matches!(f.get("name").and_then(Value::as_str), Some(TARGETING | PERCENTAGE)));
    }
    flag["enabled"] = json!(true);
    flag
}

/// Off for everyone, at once.
fn disabled(mut flag: Value) -> Value {
    flag["enabled"] = json!(false);
    flag
}

impl AppConfigFlag {
    async fn read(&self) -> Result<Stored, TrafficError> {
        let r = self.api.send(reqwest::Method::GET, &self.url, None).await.map_err(|e| match e {
            crate::ports::azure::http::AzureError::Status { status: 404, .. } => {
                TrafficError::Failed("the feature flag does not exist in the store; create it first".into())
            }
            other => failed(other),
        })?;
        let content_type = r.body.get("content_type").and_then(Value::as_str).unwrap_or("");
        if !content_type.starts_with("application/vnd.microsoft.appconfig.ff+json") {
            return Err(TrafficError::Failed(format!("the key is not a feature flag (content type '{content_type}')")));
        }
        let text = r.body.get("value").and_then(Value::as_str).unwrap_or("{}");
        let flag: Value = serde_json::from_str(text).map_err(|e| failed(format!("the flag's value is not JSON: {e}")))?;
        let etag = r.body.get("etag").and_then(Value::as_str).map(str::to_string).or(r.etag);
        let etag = etag.ok_or_else(|| failed("the flag was read without an ETag"))?;
        Ok(Stored { flag, tags: r.body.get("tags").cloned().unwrap_or_else(|| json!({})), etag })
    }

    /// Rewrites the flag with `change`, on the condition it is unchanged.
    async fn update(&self, change: impl Fn(Value) -> Value) -> Result<Weight, TrafficError> {
        let stored = self.read().await?;
        let flag = change(stored.flag);
        let body = json!({"value": flag.to_string(), "content_type": FLAG_CONTENT_TYPE, "tags": stored.tags});
        let if_match = format!("\"{}\"", stored.etag.trim_start_matches("W/").trim_matches('"'));
        let call =
            Call::new(reqwest::Method::PUT, &self.url).body(KV_CONTENT_TYPE, body.to_string().into_bytes()).header("If-Match", if_match);
        self.api.call(&call).await.map_err(call_failed)?;
        Ok(weight_of(&self.read().await?.flag))
    }
}

#[async_trait]
impl Traffic for AppConfigFlag {
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError> {
        let actual = if weight == Weight::ZERO {
            // Disabled, and at 0 % too, so a later enable starts from nobody.
            self.update(|f| disabled(with_percentage(f, Weight::ZERO))).await?
        } else {
            self.update(|f| with_percentage(f, weight)).await?
        };
        confirm(weight, actual)
    }

    async fn promote(&self, _since: DateTime<Utc>) -> Result<(), TrafficError> {
        confirm(Weight::FULL, self.update(for_everyone).await?).map(|_| ())
    }

    async fn revert(&self, _undo_promotion: bool, _since: DateTime<Utc>) -> Result<Weight, TrafficError> {
        until_applied(|| self.update(disabled)).await
    }

    async fn current(&self) -> Result<Routing, TrafficError> {
        Ok(Routing { weight: weight_of(&self.read().await?.flag), promoted: false })
    }

    async fn caveats(&self) -> Vec<String> {
        let mut found =
            vec!["appConfigFlag: the split happens in the app, at its next configuration refresh (30 s by default), not at a router"
                .to_string()];
        if let Ok(stored) = self.read().await {
            let names: Vec<&str> = stored
                .flag
                .pointer("/conditions/client_filters")
                .and_then(Value::as_array)
                .map(|fs| fs.iter().filter_map(|f| f.get("name").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            if names.contains(&TARGETING) {
                found.push("appConfigFlag: targeting keeps each user on one side (sticky by user id); named users and groups bypass the percentage".into());
            } else if names.contains(&PERCENTAGE) {
                found.push("appConfigFlag: Microsoft.Percentage draws at every evaluation, so one user can see both versions".into());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_is_the_rollout_percentage_of_an_enabled_flag() {
        let targeting = json!({"id": "f", "enabled": true, "conditions": {"client_filters": [
            {"name": "Microsoft.Targeting", "parameters": {"Audience": {"Users": ["ann"], "DefaultRolloutPercentage": 20}}}]}});
        assert_eq!(weight_of(&targeting), 20);
        let off = json!({"id": "f", "enabled": false, "conditions": targeting["conditions"].clone()});
        assert_eq!(weight_of(&off), 0);
        let bare = json!({"id": "f", "enabled": true, "conditions": {"client_filters": []}});
        assert_eq!(weight_of(&bare), 100);
        let set = with_percentage(json!({"id": "f", "enabled": false}), Weight::new(5).expect("w"));
        assert_eq!(weight_of(&set), 5);
        assert_eq!(set["conditions"]["client_filters"][0]["name"], TARGETING);
        let pct = with_percentage(
            json!({"id": "f", "enabled": true, "conditions": {"client_filters": [
            {"name": "Microsoft.Percentage", "parameters": {"Value": 1}}]}}),
            Weight::new(50).expect("w"),
        );
        assert_eq!(
            (pct["conditions"]["client_filters"][0]["parameters"]["Value"].clone(), weight_of(&pct)),
            (json!(50), Weight::new(50).expect("w"))
        );
        let everyone = for_everyone(targeting);
        assert_eq!((weight_of(&everyone), everyone["conditions"]["client_filters"].clone()), (Weight::FULL, json!([])));
    }

    #[test]
    fn a_connection_string_gives_hmac_credentials() {
        let Some(Auth::Hmac { id, secret }) = hmac_auth("Endpoint=https://s.azconfig.io;Id=abc-1;Secret=c2VjcmV0") else { panic!("hmac") };
        assert_eq!((id.as_str(), secret.as_slice()), ("abc-1", b"secret".as_slice()));
        assert!(hmac_auth("Endpoint=https://s.azconfig.io;Id=abc").is_none());
    }
}
