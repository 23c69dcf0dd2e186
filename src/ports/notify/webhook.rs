//! A generic JSON webhook: the notification as JSON, for chat bridges,
//! paging tools and scripts. With `secretSetting`, the body is signed
//! (`X-Sluice-Signature-256: sha256=<hex HMAC-SHA256 of the body>`) so the
//! receiver can tell it came from Sluice.
//! Settings: `urlSetting`, `secretSetting` (optional).

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{post_json, webhook_url, Notification, Notifier, NotifyError};
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// A webhook receiver.
pub struct Webhook {
    http: reqwest::Client,
    url: String,
    secret: Option<String>,
}

/// Builds the webhook channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    // Both setting names are checked before either value is read.
    let secret_name = env.secret_name("webhook", settings, "secretSetting", None, crate::ports::reach::SecretUse::Channel)?;
    let url = webhook_url("webhook", settings, env)?;
    let secret = match secret_name {
        Some(name) => Some(env.secret(&name).ok_or_else(|| AdapterError::Config {
            provider: "webhook".into(),
            message: format!("app setting {name} (the signing secret) is not set"),
        })?),
        None => None,
    };
    Ok(Arc::new(Webhook { http: env.http.clone(), url, secret }))
}

/// `sha256=<hex>` of the body under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[async_trait]
impl Notifier for Webhook {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(n).map_err(|e| NotifyError::Failed(e.to_string()))?;
        let mut headers =
            vec![("x-sluice-event", serde_json::to_value(n.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())];
        if let Some(secret) = &self.secret {
            headers.push(("x-sluice-signature-256", signature(secret, &body)));
        }
        post_json(&self.http, "webhook", &self.url, body, &headers).await
    }
}
