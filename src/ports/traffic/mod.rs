//! The traffic port: move a share of users to the canary, promote it, or put
//! everyone back on stable. One adapter per router kind; the spec's
//! `target.router.provider` picks it from [`PROVIDERS`].

pub mod app_service;
pub mod local;

use crate::domain::ids::Weight;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
pub const PROVIDERS: &[(&str, Factory)] = &[("local", local::build), ("appServiceSlots", app_service::build)];

/// The adapter for a target's router.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    lookup("traffic", PROVIDERS, &target.router.provider)?(target, env)
}
