//! The traffic port: move a share of users to the canary, promote it, or put
//! everyone back on stable. One adapter per router kind; the spec's
//! `target.router.provider` picks it from [`PROVIDERS`].

pub mod api_management;
pub mod app_config;
pub mod app_service;
pub mod container_apps;
pub mod front_door;
pub mod gateway_api;
pub mod local;

use crate::domain::ids::Weight;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::rollout::PreviewAddress;
use crate::domain::spec::Target;
use crate::ports::env::{lookup, AdapterEnv, AdapterError};
use crate::ports::preflight::Check;

/// What a router reports about its split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// Canary percentage now applied.
    pub weight: Weight,
    /// Whether the canary was swapped in.
    pub promoted: bool,
}

/// Live numbers a router can give for status views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveSide {
    /// Requests in the window.
    pub requests: u64,
    /// Error rate, if any requests.
    pub error_rate: Option<f64>,
    /// p95 latency in ms, if any requests.
    pub p95_ms: Option<f64>,
}

/// Live numbers for both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveStats {
    /// Window in seconds.
    pub window_secs: u64,
    /// Stable side.
    pub stable: LiveSide,
    /// Canary side.
    pub canary: LiveSide,
}

/// What can go wrong talking to a router.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// The router answered with an error or could not be reached.
    #[error("router request failed: {0}")]
    Failed(String),
    /// The entity changed since it was read, or the service is busy with
    /// another change to it; nothing was written.
    #[error("router state changed meanwhile: {0}")]
    Conflict(String),
    /// The router did not apply what was asked (read-back mismatch).
    #[error("router reports {actual}% after setting {wanted}%")]
    NotApplied {
        /// Asked for.
        wanted: Weight,
        /// Read back.
        actual: Weight,
    },
}

/// A traffic router.
#[async_trait]
pub trait Traffic: Send + Sync {
    /// Routes `weight` percent to the canary; returns the weight read back.
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError>;
    /// Makes the canary the new stable (a slot swap). A swap that completed
    /// after `since` is this promotion, retried: it is not done twice.
    async fn promote(&self, since: DateTime<Utc>) -> Result<(), TrafficError>;
    /// Puts all traffic on stable (swapping back first if `undo_promotion`,
    /// unless a swap back already completed after `since`); returns the
    /// canary weight read back, which should be 0.
    async fn revert(&self, undo_promotion: bool, since: DateTime<Utc>) -> Result<Weight, TrafficError>;
    /// Reads the current split.
    async fn current(&self) -> Result<Routing, TrafficError>;
    /// The previous version is no longer needed.
    async fn scale_down_previous(&self) -> Result<(), TrafficError> {
        Ok(())
    }
    /// What this router cannot do or guarantee as configured (sessions
    /// pinned by an affinity cookie, say), for the rollout's history. Read
    /// once, when the first weight is confirmed.
    async fn caveats(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where testers and a smoke check reach the canary while users do not:
    /// the router's own mechanism, set up if it needs to be (and undone by
    /// the promotion or revert that follows). Routers in [`NO_PREVIEW`] have none.
    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        Err(no_preview())
    }
    /// Live per-side numbers, where the router has them.
    async fn live(&self) -> Option<LiveStats> {
        None
    }
    /// What `sluice doctor` finds before a first rollout: by default, that
    /// the current split can be read. Routers with permissions to check add them.
    async fn preflight(&self) -> Vec<Check> {
        vec![routing_readable(self.current().await)]
    }
}

/// The finding for reading the current split.
pub fn routing_readable(current: Result<Routing, TrafficError>) -> Check {
    match current {
        Ok(r) => Check::ok(
            "router",
            "current routing",
            format!("readable: {}% on the canary{}", r.weight, if r.promoted { ", promoted" } else { "" }),
        ),
        Err(e) => Check::blocker("router", "current routing", format!("cannot be read: {e}")),
    }
}

/// Builds a traffic adapter for a target.
pub type Factory = fn(&Target, &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError>;

/// Router kinds by provider name. A new router is one file and one line here.
pub const PROVIDERS: &[(&str, Factory)] = &[
    ("local", local::build),
    ("appServiceSlots", app_service::build),
    ("containerApps", container_apps::build),
    ("frontDoor", front_door::build),
    ("apiManagement", api_management::build),
    ("appConfigFlag", app_config::build),
    ("gatewayApi", gateway_api::build),
];

/// Routers with no per-request way to reach the canary at 0 %, and why: a
/// spec with a `preview` step on one of them is refused at validation.
pub const NO_PREVIEW: &[(&str, &str)] = &[
    (
        "frontDoor",
        "an origin group splits requests by weight only; reaching the canary by header or cookie needs a rule set route override, \
         which Sluice does not write",
    ),
    (
        "apiManagement",
        "a backend pool splits requests by weight only; reaching the canary by header needs a policy of your own (set-backend-service)",
    ),
    ("appConfigFlag", "the feature flag decides inside your app: target testers with the flag's own audience (users or groups) instead"),
];

/// A router whose whole state is one split, written absolutely (so a
/// repeated write changes nothing): promotion is 100 % on the new version,
/// a rollback 0 %, whether or not it was promoted. [`Absolute`] makes it a
/// [`Traffic`].
#[async_trait]
pub(crate) trait Split: Send + Sync {
    /// Applies `weight`; returns the weight read back.
    async fn apply(&self, weight: Weight) -> Result<Weight, TrafficError>;
    /// The weight applied now.
    async fn weight(&self) -> Result<Weight, TrafficError>;
    /// What the router cannot guarantee as configured.
    async fn caveats(&self) -> Vec<String> {
        Vec::new()
    }
    /// Retires the previous version after promotion.
    async fn scale_down(&self) -> Result<(), TrafficError> {
        Ok(())
    }
    /// Where testers reach the canary at 0 % (see [`Traffic::preview`]).
    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        Err(no_preview())
    }
}

/// The traffic port over a [`Split`] router.
pub(crate) struct Absolute<S>(pub S);

#[async_trait]
impl<S: Split> Traffic for Absolute<S> {
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError> {
        confirm(weight, self.0.apply(weight).await?)
    }

    async fn promote(&self, _since: DateTime<Utc>) -> Result<(), TrafficError> {
        confirm(Weight::FULL, self.0.apply(Weight::FULL).await?).map(|_| ())
    }

    async fn revert(&self, _undo_promotion: bool, _since: DateTime<Utc>) -> Result<Weight, TrafficError> {
        until_applied(|| self.0.apply(Weight::ZERO)).await
    }

    async fn current(&self) -> Result<Routing, TrafficError> {
        Ok(Routing { weight: self.0.weight().await?, promoted: false })
    }

    async fn scale_down_previous(&self) -> Result<(), TrafficError> {
        self.0.scale_down().await
    }

    async fn caveats(&self) -> Vec<String> {
        self.0.caveats().await
    }

    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        self.0.preview().await
    }
}

/// The adapter for a target's router.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    lookup("traffic", PROVIDERS, &target.router.provider)?(target, env)
}

/// What a router without a preview answers (validation refuses it first).
fn no_preview() -> TrafficError {
    TrafficError::Failed("this router cannot show the canary without user traffic".into())
}

/// A router failure, from whatever went wrong.
pub(crate) fn failed(e: impl std::fmt::Display) -> TrafficError {
    TrafficError::Failed(e.to_string())
}

/// The weight read back, if it is the one asked for: a confirmation is
/// emitted only when the router agrees.
pub(crate) fn confirm(wanted: Weight, actual: Weight) -> Result<Weight, TrafficError> {
    if actual == wanted {
        Ok(actual)
    } else {
        Err(TrafficError::NotApplied { wanted, actual })
    }
}

/// The canary's share, in whole percent, of two relative weights.
pub(crate) fn share(canary: f64, stable: f64) -> Result<Weight, TrafficError> {
    let total = canary + stable;
    if total.is_nan() || total <= 0.0 {
        return Err(TrafficError::Failed("neither stable nor canary receives traffic".into()));
    }
    Ok(Weight::new((100.0 * canary / total).round().clamp(0.0, 100.0) as u64).unwrap_or(Weight::FULL))
}

/// A failed call to a router's API: a conflict when the service says the
/// entity changed since it was read (`412` on `If-Match`, `409` on a
/// Kubernetes `resourceVersion`) or is busy with another operation (ARM's
/// `409`), otherwise a failure.
pub(crate) fn call_failed(e: crate::ports::azure::http::AzureError) -> TrafficError {
    match e {
        crate::ports::azure::http::AzureError::Status { status: 409 | 412, message } => TrafficError::Conflict(message),
        other => failed(other),
    }
}

/// How often a revert reads and writes again after a conflict.
const REVERT_CONFLICT_ATTEMPTS: u32 = 5;

/// Runs a revert until it is not beaten by a concurrent change: a weight
/// change never retries past a conflict (the rollout decides), but a
/// rollback must win, so it reads the new state and writes again.
pub(crate) async fn until_applied<F, Fut>(mut attempt: F) -> Result<Weight, TrafficError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Weight, TrafficError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(TrafficError::Conflict(message)) if tries < REVERT_CONFLICT_ATTEMPTS => {
                tracing::debug!(%message, tries, "the router changed under the revert; reading it again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries))).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// A bool router setting.
pub(crate) fn opt_bool(settings: &crate::ports::env::Settings, key: &str) -> Option<bool> {
    settings.get(key).and_then(serde_json::Value::as_bool)
}

/// An ARM client for a router (`armEndpoint` may restate the cloud's, or a loopback fake's where allowed)
/// and the resource group's URL prefix, from `subscriptionId` and `resourceGroup`.
pub(crate) fn arm(
    provider: &str,
    settings: &crate::ports::env::Settings,
    env: &AdapterEnv,
) -> Result<(crate::ports::azure::http::AzureHttp, String), AdapterError> {
    use crate::ports::env::req_str;
    use crate::ports::reach::Service;
    let endpoint = env.endpoint(provider, settings, "armEndpoint", Service::Arm)?;
    let subscription = req_str(provider, settings, "subscriptionId")?;
    let group = req_str(provider, settings, "resourceGroup")?;
    let client =
        crate::ports::azure::http::AzureHttp::new(env.http.clone(), env.azure_identity(provider)?, &env.audience(Service::Arm), &endpoint);
    let prefix = format!("{}/subscriptions/{subscription}/resourceGroups/{group}/providers", client.base());
    Ok((client, prefix))
}
