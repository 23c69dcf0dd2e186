//! Traffic through the local router (`sluice router`, or the demo's): its
//! admin API over HTTP. Settings: `url`, the router's base URL.

use crate::domain::ids::Weight;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{LiveSide, LiveStats, Routing, Traffic, TrafficError};
use crate::domain::rollout::PreviewAddress;
use crate::domain::spec::Target;
use crate::ports::env::{req_str, AdapterEnv, AdapterError};
use crate::ports::local_router::{Route, StatsReport};
use crate::ports::preflight::{Check, Verdict};

/// Client of one local router.
pub struct LocalRouter {
    base: String,
    http: reqwest::Client,
    /// The versions the spec moves traffic from and to.
    stable: String,
    canary: String,
}

/// Builds the adapter from `target.router.settings.url`.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let url = req_str("local", &target.router.settings, "url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(AdapterError::Config { provider: "local".into(), message: format!("url '{url}' is not an http(s) URL") });
    }
    Ok(Arc::new(LocalRouter {
        base: url.trim_end_matches('/').to_string(),
        http: env.http.clone(),
        stable: target.stable.version.clone(),
        canary: target.canary.version.clone(),
    }))
}

impl LocalRouter {
    async fn call<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, TrafficError> {
        let response = request.send().await.map_err(|e| TrafficError::Failed(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = crate::ports::env::read_text(response).await.unwrap_or_default();
            return Err(TrafficError::Failed(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>())));
        }
        crate::ports::env::read_json::<T>(response).await.map_err(|e| TrafficError::Failed(format!("unreadable answer: {e}")))
    }

    async fn read(&self) -> Result<Route, TrafficError> {
        self.call(self.http.get(format!("{}/_sluice/route", self.base))).await
    }

    /// A promotion swaps the router's sides, as a slot swap does, so after an
    /// earlier rollout's the canary side serves the old version. The sides'
    /// labels are the router's own (`--canary v2=URL`), not always the
    /// spec's (a pipeline's build number): only sides labelled the other way
    /// round are refused, so the canary's share never goes to the version
    /// this rollout moves users away from.
    async fn check_sides(&self) -> Result<(), TrafficError> {
        let route = self.read().await?;
        let swapped = self.stable != self.canary && (route.canary.version == self.stable || route.stable.version == self.canary);
        if !swapped {
            return Ok(());
        }
        let shown = |v: &str| v.chars().filter(|c| !c.is_control()).take(64).collect::<String>();
        Err(TrafficError::Failed(format!(
            "the router serves {} on its stable side and {} on its canary side, where this rollout moves traffic from {} to {} \
             (an earlier promotion swaps the sides: roll out from the version now stable, or restart the router)",
            shown(&route.stable.version),
            shown(&route.canary.version),
            self.stable,
            self.canary
        )))
    }
}

#[async_trait]
impl Traffic for LocalRouter {
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError> {
        if weight != Weight::ZERO {
            self.check_sides().await?;
        }
        self.call::<Route>(self.http.put(format!("{}/_sluice/route", self.base)).json(&json!({ "weight": weight }))).await?;
        let actual = self.read().await?.weight;
        if actual != weight {
            return Err(TrafficError::NotApplied { wanted: weight, actual });
        }
        Ok(actual)
    }

    async fn promote(&self, since: DateTime<Utc>) -> Result<(), TrafficError> {
        let url = format!("{}/_sluice/promote", self.base);
        let since = since.timestamp_millis();
        let route: Route = self.call(self.http.post(url).json(&json!({ "sinceMs": since }))).await?;
        if route.promotion != Some(since) {
            return Err(TrafficError::Failed("the router did not promote".into()));
        }
        Ok(())
    }

    async fn revert(&self, undo_promotion: bool, _since: DateTime<Utc>) -> Result<Weight, TrafficError> {
        let url = format!("{}/_sluice/revert", self.base);
        self.call::<Route>(self.http.post(url).json(&json!({ "undoPromotion": undo_promotion }))).await?;
        Ok(self.read().await?.weight)
    }

    async fn current(&self) -> Result<Routing, TrafficError> {
        let r = self.read().await?;
        Ok(Routing { weight: r.weight, promoted: r.promoted })
    }

    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        self.call(self.http.get(format!("{}/_sluice/preview", self.base))).await
    }

    async fn preflight(&self) -> Vec<Check> {
        let readable = super::routing_readable(self.current().await);
        if readable.verdict != Verdict::Ok {
            return vec![readable];
        }
        let sides = match self.check_sides().await {
            Ok(()) => Check::ok(
                "router",
                "versions",
                format!("the canary side does not serve {}, the version the spec moves users from", self.stable),
            ),
            Err(e) => Check::blocker("router", "versions", e.to_string()),
        };
        vec![readable, sides]
    }

    async fn live(&self) -> Option<LiveStats> {
        let url = format!("{}/_sluice/stats?window=10s", self.base);
        let report = self.http.get(url).timeout(std::time::Duration::from_millis(500)).send().await.ok()?;
        let report: StatsReport = crate::ports::env::read_json(report).await.ok()?;
        let side =
            |w: &crate::ports::local_router::WindowStats| LiveSide { requests: w.requests, error_rate: w.error_rate, p95_ms: w.p95_ms };
        Some(LiveStats { window_secs: report.window_secs, stable: side(&report.stable), canary: side(&report.canary) })
    }
}
