//! The admin API of the local weighted router, as the `local` traffic and
//! metrics adapters speak it and `devtools::router` serves it: the split,
//! its two upstreams, and both sides' numbers over a window.

use serde::{Deserialize, Serialize};

use crate::domain::ids::Weight;

/// The header that sends a request to the canary whatever the weight (the
/// preview), with [`PREVIEW_VALUE`]; `GET /_sluice/preview` answers where.
pub const PREVIEW_HEADER: &str = "x-sluice-preview";
/// The preview header's value.
pub const PREVIEW_VALUE: &str = "canary";

/// One upstream version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Identity (e.g. `stable`, `canary`, a slot name).
    pub name: String,
    /// Release it serves.
    pub version: String,
    /// Base URL.
    pub url: String,
}

/// The router's split, as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Percentage of requests sent to the canary.
    pub weight: Weight,
    /// Whether the upstreams were swapped by a promotion.
    pub promoted: bool,
    /// The promotion that last swapped them, by the time it was first
    /// asked for (Unix ms, the caller's clock): the same one retried is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<i64>,
    /// The stable upstream.
    pub stable: Upstream,
    /// The canary upstream.
    pub canary: Upstream,
}

/// Both sides' numbers over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Current weight.
    pub weight: Weight,
    /// Stable side.
    pub stable: WindowStats,
    /// Canary side.
    pub canary: WindowStats,
}

/// Numbers for one side over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowStats {
    /// Requests in the window.
    pub requests: u64,
    /// Of which errors (5xx or upstream unreachable).
    pub errors: u64,
    /// errors / requests; absent without requests.
    pub error_rate: Option<f64>,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
    /// Requests per latency bucket: one per [`LATENCY_BOUNDS_MS`] and a last
    /// one above them (not cumulative), for the latency judge.
    #[serde(default)]
    pub buckets: Vec<u64>,
}

/// Upper bounds of the router's latency buckets in milliseconds (plus an implicit +Inf).
pub const LATENCY_BOUNDS_MS: [f64; 19] =
    [1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 2000.0, 5000.0, 10000.0];
