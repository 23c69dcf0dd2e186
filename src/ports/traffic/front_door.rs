//! Azure Front Door Standard/Premium through ARM: two origins of one origin
//! group, stable and canary, share requests by weight (1–1000). A canary
//! percentage `p` becomes weights `1000 − 10p` and `10p`; 0 % disables the
//! canary origin and 100 % the stable one (a weight cannot be 0). Each
//! origin is updated with `PATCH` (long-running) and both are read back.
//! A rollback disables the canary first when the stable origin still takes
//! traffic — the fastest way off the canary — and enables stable first
//! when it does not (after a promotion), so there is always an origin.
//!
//! Settings: `subscriptionId`, `resourceGroup`, `profile`, `originGroup`,
//! `stableOrigin`, `canaryOrigin`; optional `armEndpoint`.
//!
//! Source: Azure REST API specs, Microsoft.Cdn stable 2024-02-01 (afdx.json):
//! `AFDOrigins_Get` / `AFDOrigins_Update` (`PATCH
//! …/profiles/{profile}/originGroups/{group}/origins/{origin}`, long-running,
//! body `AFDOriginUpdateParameters`: `properties.weight` 1–1000,
//! `properties.enabledState` `Enabled` / `Disabled`), `AFDOriginGroups_Get`
//! (`properties.sessionAffinityState`); and "Traffic routing methods to
//! origin" (learn.microsoft.com/azure/frontdoor/routing-methods: weighted
//! among origins of equal priority within the latency sensitivity).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{call_failed, failed, share, Absolute, Split, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{req_str, AdapterEnv, AdapterError};

const API: &str = "api-version=2024-02-01";
/// How long one origin update may take.
const UPDATE_BUDGET: Duration = Duration::from_secs(300);
/// Front Door's largest origin weight.
const SCALE: u16 = 1000;

/// The two origins of one origin group.
pub struct FrontDoor {
    arm: AzureHttp,
    group: String,
    stable: String,
    canary: String,
}

/// One origin's part of the split.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Origin {
    weight: u16,
    enabled: bool,
}

impl Origin {
    fn share(self) -> f64 {
        if self.enabled {
            f64::from(self.weight)
        } else {
            0.0
        }
    }

    fn body(self) -> Value {
        json!({"properties": {"weight": self.weight, "enabledState": if self.enabled { "Enabled" } else { "Disabled" }}})
    }
}

/// Both origins' settings for a canary percentage.
fn plan(canary: Weight) -> (Origin, Origin) {
    let c = u16::from(canary.percent()) * (SCALE / 100);
    match canary.percent() {
        0 => (Origin { weight: SCALE, enabled: true }, Origin { weight: 1, enabled: false }),
        100 => (Origin { weight: 1, enabled: false }, Origin { weight: SCALE, enabled: true }),
        _ => (Origin { weight: SCALE - c, enabled: true }, Origin { weight: c, enabled: true }),
    }
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "frontDoor";
    let (arm, prefix) = super::arm(name, s, env)?;
    Ok(Arc::new(Absolute(FrontDoor {
        group: format!(
            "{prefix}/Microsoft.Cdn/profiles/{}/originGroups/{}",
            req_str(name, s, "profile")?,
            req_str(name, s, "originGroup")?
        ),
        stable: req_str(name, s, "stableOrigin")?.to_string(),
        canary: req_str(name, s, "canaryOrigin")?.to_string(),
        arm,
    })))
}

impl FrontDoor {
    fn origin_url(&self, origin: &str) -> String {
        format!("{}/origins/{origin}?{API}", self.group)
    }

    async fn read(&self, origin: &str) -> Result<Origin, TrafficError> {
        let body = self.arm.send(reqwest::Method::GET, &self.origin_url(origin), None).await.map_err(failed)?.body;
        let weight = body.pointer("/properties/weight").and_then(Value::as_u64).unwrap_or(u64::from(SCALE));
        let enabled = body.pointer("/properties/enabledState").and_then(Value::as_str).map(|s| s.eq_ignore_ascii_case("enabled"));
        Ok(Origin { weight: u16::try_from(weight).unwrap_or(SCALE), enabled: enabled.unwrap_or(true) })
    }

    async fn write(&self, origin: &str, to: Origin) -> Result<(), TrafficError> {
        let url = self.origin_url(origin);
        self.arm.long_running(reqwest::Method::PATCH, &url, Some(&to.body()), UPDATE_BUDGET).await.map_err(call_failed)?;
        Ok(())
    }

    async fn read_split(&self) -> Result<Weight, TrafficError> {
        let (stable, canary) = (self.read(&self.stable).await?, self.read(&self.canary).await?);
        share(canary.share(), stable.share())
    }

    /// Applies a split, in the order that never leaves the group without an
    /// enabled origin and takes users off the canary first when it can.
    async fn write_split(&self, canary_weight: Weight) -> Result<Weight, TrafficError> {
        let (stable, canary) = plan(canary_weight);
        let stable_serves = self.read(&self.stable).await?.enabled;
        // Canary first when it keeps serving, or when stable already serves
        // (a rollback's quickest way off the canary); otherwise stable first.
        if canary.enabled || stable_serves {
            self.write(&self.canary, canary).await?;
            self.write(&self.stable, stable).await?;
        } else {
            self.write(&self.stable, stable).await?;
            self.write(&self.canary, canary).await?;
        }
        self.read_split().await
    }
}

#[async_trait]
impl Split for FrontDoor {
    async fn apply(&self, weight: Weight) -> Result<Weight, TrafficError> {
        self.write_split(weight).await
    }

    async fn weight(&self) -> Result<Weight, TrafficError> {
        self.read_split().await
    }

    async fn caveats(&self) -> Vec<String> {
        let url = format!("{}?{API}", self.group);
        let Ok(group) = self.arm.send(reqwest::Method::GET, &url, None).await else { return Vec::new() };
        let affinity = group.body.pointer("/properties/sessionAffinityState").and_then(Value::as_str).unwrap_or("Disabled");
        let mut found = vec!["frontDoor: weights apply per edge location, and a change takes minutes to reach every edge".to_string()];
        if affinity.eq_ignore_ascii_case("enabled") {
            found.push(
                "frontDoor: session affinity is on for the origin group, so clients keep the origin their affinity cookie names \
                 until the cookie expires or that origin is disabled"
                    .into(),
            );
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_map_onto_weights_that_are_never_zero() {
        for p in 0..=100u64 {
            let w = Weight::new(p).expect("weight");
            let (stable, canary) = plan(w);
            assert!((1..=SCALE).contains(&stable.weight) && (1..=SCALE).contains(&canary.weight), "{p}");
            assert!(stable.enabled || canary.enabled, "{p}: an origin serves");
            assert_eq!(share(canary.share(), stable.share()).expect("share"), w, "{p}: read back as asked");
        }
    }
}
