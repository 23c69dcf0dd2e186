//! Azure App Service deployment slots through ARM. The canary weight is one
//! ramp-up rule (`experiments.rampUpRules`, set with `PATCH …/config/web` —
//! never `PUT`, which replaces the whole site config) sending a share of
//! production traffic to the canary slot's host name; it is read back to
//! confirm. Promotion swaps the canary slot into production (a long-running
//! operation, polled) and clears the rules. A rollback clears the rules
//! first, swaps back if the promotion had happened, and then deals with
//! users the `x-ms-routing-name` cookie pins to the canary slot for about an
//! hour, as the `pinnedUsers` setting says: `stopSlot` (default) stops the
//! canary slot, `none` leaves them to drain; `policy.verifyRollback` can then
//! check from metrics that canary traffic really stopped.
//!
//! A preview writes an explicit 0 % rule: only then may a browser opt in to
//! the slot with `?x-ms-routing-name=<slot>` on the app's own address (a
//! cookie of that name keeps it there), while no user is sent automatically;
//! the smoke check probes the slot's own host name. The next weight, the
//! promotion or a rollback replaces the rule.
//!
//! Settings: `subscriptionId`, `resourceGroup`, `app`, `slot`;
//! optional `canaryHostName` (default: the slot's `defaultHostName`, read
//! from ARM — apps created since 2024 may have unique default host names,
//! `<app>-<slot>-<hash>.<region>.azurewebsites.net`, so it is never
//! composed), `pinnedUsers`, `armEndpoint` (default
//! `https://management.azure.com`).
//!
//! Source: Azure REST API specs, Microsoft.Web `WebApps_UpdateConfiguration`
//! (`PATCH …/config/web`, a long-running operation: a `202` with `Location`
//! is polled before the weight is read back), `WebApps_SwapSlot`
//! (`POST …/slots/{slot}/slotsswap`, long-running; never retried blindly),
//! `WebApps_GetSlot` (`properties.defaultHostName`); "Set up staging
//! environments in Azure App Service", Route production traffic manually
//! (learn.microsoft.com/azure/app-service/deploy-staging-slots: "When you
//! explicitly set this value to 0% … your users can access the staging slot
//! manually by using the x-ms-routing-name query parameter"); Microsoft.Authorization
//! `Permissions_ListForResource` (`GET …/providers/Microsoft.Authorization/permissions`,
//! api-version 2022-04-01: `value[].actions` / `notActions`) for `sluice doctor`.

use crate::domain::ids::Weight;
use crate::ports::reach::Service;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{routing_readable, Routing, Traffic, TrafficError};
use crate::domain::rollout::PreviewAddress;
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError};
use crate::ports::preflight::{allowed, Check};

const API: &str = "api-version=2023-12-01";
/// How long a slot swap may take before it is reported failed (and retried).
const SWAP_BUDGET: Duration = Duration::from_secs(600);
/// How long a configuration change may take to apply.
const CONFIG_BUDGET: Duration = Duration::from_secs(120);

/// The ARM actions this adapter performs on the app, each with what needs it.
const ACTIONS: &[(&str, &str)] = &[
    ("Microsoft.Web/sites/read", "reading the last swap"),
    ("Microsoft.Web/sites/slots/read", "reading the canary slot's host name"),
    ("Microsoft.Web/sites/config/read", "reading the weight back"),
    ("Microsoft.Web/sites/config/write", "setting the weight (and 0 % on rollback)"),
    ("Microsoft.Web/sites/slots/slotsswap/action", "promoting (and swapping back on rollback)"),
    ("Microsoft.Web/sites/slots/stop/action", "stopping the canary slot (pinned users, scale-down)"),
];
const PERMISSIONS_API: &str = "api-version=2022-04-01";

/// What to do about users pinned to the canary slot after a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pinned {
    StopSlot,
    Leave,
}

/// One App Service app and its canary slot.
pub struct AppServiceSlots {
    arm: AzureHttp,
    site: String,
    slot: String,
    /// The canary slot's host name: configured, or read from ARM once.
    host: tokio::sync::OnceCell<String>,
    pinned: Pinned,
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "appServiceSlots";
    let endpoint = env.endpoint(name, s, "armEndpoint", Service::Arm)?;
    let subscription = req_str(name, s, "subscriptionId")?;
    let group = req_str(name, s, "resourceGroup")?;
    let app = req_str(name, s, "app")?;
    let slot = req_str(name, s, "slot")?;
    let pinned = match opt_str(s, "pinnedUsers").unwrap_or("stopSlot") {
        "stopSlot" => Pinned::StopSlot,
        "none" => Pinned::Leave,
        other => {
            return Err(AdapterError::Config { provider: name.into(), message: format!("pinnedUsers '{other}' is not stopSlot or none") })
        }
    };
    let arm = AzureHttp::new(env.http.clone(), env.azure_identity(name)?, &env.audience(Service::Arm), &endpoint);
    Ok(Arc::new(AppServiceSlots {
        site: format!("{}/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Web/sites/{app}", arm.base()),
        host: tokio::sync::OnceCell::new_with(opt_str(s, "canaryHostName").map(str::to_string)),
        slot: slot.to_string(),
        arm,
        pinned,
    }))
}

fn failed(e: impl std::fmt::Display) -> TrafficError {
    TrafficError::Failed(e.to_string())
}

impl AppServiceSlots {
    /// The canary slot's host name, as ARM gives it.
    async fn host(&self) -> Result<&str, TrafficError> {
        let host = self
            .host
            .get_or_try_init(|| async {
                let url = format!("{}/slots/{}?{API}", self.site, self.slot);
                let slot = self.arm.send(reqwest::Method::GET, &url, None).await.map_err(failed)?;
                slot.body
                    .pointer("/properties/defaultHostName")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| failed(format!("slot '{}' has no defaultHostName; set canaryHostName", self.slot)))
            })
            .await?;
        Ok(host)
    }

    async fn set_rules(&self, weight: Weight) -> Result<(), TrafficError> {
        if weight == 0 {
            self.write_rules(json!([])).await
        } else {
            self.write_rule(weight).await
        }
    }

    /// One rule sending `weight` to the slot (0 % is the preview's opt-in rule).
    async fn write_rule(&self, weight: Weight) -> Result<(), TrafficError> {
        self.write_rules(
            json!([{"name": self.slot, "actionHostName": self.host().await?, "reroutePercentage": f64::from(weight.percent())}]),
        )
        .await
    }

    async fn write_rules(&self, rules: Value) -> Result<(), TrafficError> {
        let body = json!({"properties": {"experiments": {"rampUpRules": rules}}});
        let url = format!("{}/config/web?{API}", self.site);
        self.arm.long_running(reqwest::Method::PATCH, &url, Some(&body), CONFIG_BUDGET).await.map_err(failed)?;
        Ok(())
    }

    async fn read_weight(&self) -> Result<Weight, TrafficError> {
        let r = self.arm.send(reqwest::Method::GET, &format!("{}/config/web?{API}", self.site), None).await.map_err(failed)?;
        let rules = r.body.pointer("/properties/experiments/rampUpRules").and_then(Value::as_array).cloned().unwrap_or_default();
        if rules.is_empty() {
            return Ok(Weight::ZERO);
        }
        let host = self.host().await?;
        let pct = rules
            .iter()
            .filter(|rule| rule.get("actionHostName").and_then(Value::as_str).map(|h| h.eq_ignore_ascii_case(host)).unwrap_or(false))
            .filter_map(|rule| rule.get("reroutePercentage").and_then(Value::as_f64))
            .sum::<f64>();
        Ok(Weight::new(pct.round().clamp(0.0, 100.0) as u64).unwrap_or(Weight::FULL))
    }

    /// The last completed swap, from the site's `slotSwapStatus`.
    async fn last_swap(&self) -> Result<Option<(String, String, DateTime<Utc>)>, TrafficError> {
        let r = self.arm.send(reqwest::Method::GET, &format!("{}?{API}", self.site), None).await.map_err(failed)?;
        let Some(status) = r.body.pointer("/properties/slotSwapStatus").filter(|v| v.is_object()) else { return Ok(None) };
        let text = |k: &str| status.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let when = DateTime::parse_from_rfc3339(&text("timestampUtc")).map(|t| t.with_timezone(&Utc)).ok();
        Ok(when.map(|w| (text("sourceSlotName"), text("destinationSlotName"), w)))
    }

    async fn swapped_since(&self, since: DateTime<Utc>) -> Result<bool, TrafficError> {
        Ok(matches!(self.last_swap().await?, Some((source, dest, at))
            if at >= since && ((source.eq_ignore_ascii_case(&self.slot) && dest.eq_ignore_ascii_case("production"))
                || (dest.eq_ignore_ascii_case(&self.slot) && source.eq_ignore_ascii_case("production")))))
    }

    async fn swap(&self) -> Result<(), TrafficError> {
        let body = json!({"targetSlot": "production", "preserveVnet": true});
        let url = format!("{}/slots/{}/slotsswap?{API}", self.site, self.slot);
        self.arm.long_running(reqwest::Method::POST, &url, Some(&body), SWAP_BUDGET).await.map_err(failed)?;
        Ok(())
    }

    async fn stop_slot(&self) -> Result<(), TrafficError> {
        let url = format!("{}/slots/{}/stop?{API}", self.site, self.slot);
        self.arm.send(reqwest::Method::POST, &url, None).await.map_err(failed)?;
        Ok(())
    }
}

#[async_trait]
impl Traffic for AppServiceSlots {
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError> {
        self.set_rules(weight).await?;
        let actual = self.read_weight().await?;
        if actual != weight {
            return Err(TrafficError::NotApplied { wanted: weight, actual });
        }
        Ok(actual)
    }

    async fn promote(&self, since: DateTime<Utc>) -> Result<(), TrafficError> {
        if !self.swapped_since(since).await? {
            self.swap().await?;
        }
        self.set_rules(Weight::ZERO).await?;
        Ok(())
    }

    async fn revert(&self, undo_promotion: bool, since: DateTime<Utc>) -> Result<Weight, TrafficError> {
        // Fastest first: no new request goes to the canary.
        self.set_rules(Weight::ZERO).await?;
        if undo_promotion && !self.swapped_since(since).await? {
            self.swap().await?;
        }
        if self.pinned == Pinned::StopSlot {
            self.stop_slot().await?;
        }
        self.read_weight().await
    }

    async fn current(&self) -> Result<Routing, TrafficError> {
        Ok(Routing { weight: self.read_weight().await?, promoted: false })
    }

    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        self.write_rule(Weight::ZERO).await?;
        let actual = self.read_weight().await?;
        if actual != Weight::ZERO {
            return Err(TrafficError::NotApplied { wanted: Weight::ZERO, actual });
        }
        let site = self.arm.send(reqwest::Method::GET, &format!("{}?{API}", self.site), None).await.map_err(failed)?;
        let app = site.body.pointer("/properties/defaultHostName").and_then(Value::as_str).unwrap_or("<the app's address>").to_string();
        let slot = &self.slot;
        Ok(PreviewAddress {
            url: format!("https://{}", self.host().await?),
            headers: Default::default(),
            how: format!(
                "the {slot} slot's own address; in a browser, https://{app}/?x-ms-routing-name={slot} opts in on the app's \
                 address (a cookie keeps it; ?x-ms-routing-name=self opts out), and no user is sent there automatically"
            ),
        })
    }

    async fn scale_down_previous(&self) -> Result<(), TrafficError> {
        self.stop_slot().await
    }

    async fn caveats(&self) -> Vec<String> {
        let after = match self.pinned {
            Pinned::StopSlot => "a rollback stops the canary slot so they cannot stay",
            Pinned::Leave => "with pinnedUsers: none they stay on the canary after a rollback until the cookie expires",
        };
        vec![format!("appServiceSlots: the x-ms-routing-name cookie pins each user to the slot first picked for about an hour; {after}")]
    }

    async fn preflight(&self) -> Vec<Check> {
        let mut found = Vec::new();
        if let Err(e) = self.arm.send(reqwest::Method::GET, &format!("{}?{API}", self.site), None).await {
            found.push(Check::blocker("router", "app", format!("cannot be read: {e}")));
            return found;
        }
        found.push(Check::ok("router", "app", "exists and is readable"));
        match self.host().await {
            Ok(host) => found.push(Check::ok("router", format!("slot {}", self.slot), format!("exists; canary host {host}"))),
            Err(e) => found.push(Check::blocker("router", format!("slot {}", self.slot), e.to_string())),
        }
        let url = format!("{}/providers/Microsoft.Authorization/permissions?{PERMISSIONS_API}", self.site);
        match self.arm.send(reqwest::Method::GET, &url, None).await {
            Ok(listed) => found.extend(ACTIONS.iter().map(|(action, why)| {
                let name = format!("permission {action}");
                if allowed(&listed.body, action) {
                    Check::ok("router", name, format!("granted ({why})"))
                } else {
                    Check::blocker(
                        "router",
                        name,
                        format!("not granted to Sluice's identity: needed for {why}; assign Website Contributor on the app"),
                    )
                }
            })),
            Err(e) => found.push(Check::warning("router", "permissions", format!("cannot be listed ({e}); the first rollout will tell"))),
        }
        found.push(routing_readable(self.current().await));
        found
    }
}
