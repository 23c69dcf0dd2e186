//! Azure Container Apps revisions through ARM. The canary weight is the
//! canary revision's entry in `configuration.ingress.traffic` (the stable
//! revision gets the rest), written with `PATCH` — a JSON merge patch, so
//! the rest of the ingress is left alone and the traffic array is replaced
//! whole — and read back to confirm. Splitting needs the app in
//! `Multiple` active-revisions mode; an app in `Single` mode is refused
//! with what to change. Promotion sends 100 % to the canary revision;
//! `deactivateStable` (default off) deactivates the old revision when the
//! rollout scales it down, after its `scaleDownDelay`.
//!
//! Settings: `subscriptionId`, `resourceGroup`, `app`, `stableRevision`,
//! `canaryRevision`; optional `stableLabel`/`canaryLabel` (kept on the
//! traffic entries so label URLs keep working), `deactivateStable`,
//! `armEndpoint`.
//!
//! Source: Azure REST API specs, Microsoft.App stable 2025-01-01:
//! `ContainerApps_Get` / `ContainerApps_Update` (`PATCH
//! …/Microsoft.App/containerApps/{app}`, long-running: 202 with `Location`
//! or `Azure-AsyncOperation`), `properties.configuration.activeRevisionsMode`
//! (`Single` / `Multiple`), `ingress.traffic[]` (`revisionName`, `label`,
//! `latestRevision`, `weight`), `ingress.stickySessions.affinity`
//! (`sticky` / `none`), `ContainerAppsRevisions_DeactivateRevision` (`POST
//! …/revisions/{name}/deactivate`); and "Traffic splitting in Azure
//! Container Apps" (learn.microsoft.com/azure/container-apps/traffic-splitting).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{call_failed, confirm, failed, opt_bool, until_applied, Routing, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError};

const API: &str = "api-version=2025-01-01";
/// How long an ingress update may take to apply.
const UPDATE_BUDGET: Duration = Duration::from_secs(180);

/// One container app and the two revisions it splits between.
pub struct ContainerApps {
    arm: AzureHttp,
    app: String,
    stable: Side,
    canary: Side,
    deactivate_stable: bool,
}

/// A revision and its optional traffic label.
struct Side {
    revision: String,
    label: Option<String>,
}

impl Side {
    fn entry(&self, weight: u8) -> Value {
        let mut entry = json!({"revisionName": self.revision, "weight": weight});
        if let Some(label) = &self.label {
            entry["label"] = json!(label);
        }
        entry
    }

    /// Whether a traffic entry routes to this revision.
    fn matches(&self, entry: &Value, latest: Option<&str>) -> bool {
        let text = |k: &str| entry.get(k).and_then(Value::as_str);
        text("revisionName") == Some(self.revision.as_str())
            || (entry.get("latestRevision").and_then(Value::as_bool) == Some(true) && latest == Some(self.revision.as_str()))
    }
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "containerApps";
    let (arm, prefix) = super::arm(name, s, env)?;
    let side = |revision: &str, label: &str| -> Result<Side, AdapterError> {
        Ok(Side { revision: req_str(name, s, revision)?.to_string(), label: opt_str(s, label).map(str::to_string) })
    };
    Ok(Arc::new(ContainerApps {
        app: format!("{prefix}/Microsoft.App/containerApps/{}", req_str(name, s, "app")?),
        stable: side("stableRevision", "stableLabel")?,
        canary: side("canaryRevision", "canaryLabel")?,
        deactivate_stable: opt_bool(s, "deactivateStable").unwrap_or(false),
        arm,
    }))
}

impl ContainerApps {
    /// The app as ARM describes it, refused if it cannot split traffic.
    async fn read_app(&self) -> Result<Value, TrafficError> {
        let app = self.arm.send(reqwest::Method::GET, &format!("{}?{API}", self.app), None).await.map_err(failed)?.body;
        let mode = app.pointer("/properties/configuration/activeRevisionsMode").and_then(Value::as_str).unwrap_or("Single");
        if !mode.eq_ignore_ascii_case("multiple") {
            return Err(TrafficError::Failed(format!(
                "the container app is in {mode} revision mode, where traffic cannot be split; switch it to multiple \
                 (az containerapp revision set-mode --mode multiple)"
            )));
        }
        Ok(app)
    }

    fn canary_weight(&self, app: &Value) -> Weight {
        let latest = app.pointer("/properties/latestRevisionName").and_then(Value::as_str);
        let traffic = app.pointer("/properties/configuration/ingress/traffic").and_then(Value::as_array).cloned().unwrap_or_default();
        let canary: u64 =
            traffic.iter().filter(|e| self.canary.matches(e, latest)).filter_map(|e| e.get("weight").and_then(Value::as_u64)).sum();
        Weight::new(canary).unwrap_or(Weight::FULL)
    }

    async fn write(&self, canary: Weight) -> Result<Weight, TrafficError> {
        self.read_app().await?;
        let traffic = json!([self.stable.entry(100 - canary.percent()), self.canary.entry(canary.percent())]);
        let body = json!({"properties": {"configuration": {"ingress": {"traffic": traffic}}}});
        let url = format!("{}?{API}", self.app);
        self.arm.long_running(reqwest::Method::PATCH, &url, Some(&body), UPDATE_BUDGET).await.map_err(call_failed)?;
        Ok(self.canary_weight(&self.read_app().await?))
    }
}

#[async_trait]
impl Traffic for ContainerApps {
    async fn set_weight(&self, weight: Weight) -> Result<Weight, TrafficError> {
        confirm(weight, self.write(weight).await?)
    }

    async fn promote(&self, _since: DateTime<Utc>) -> Result<(), TrafficError> {
        confirm(Weight::FULL, self.write(Weight::FULL).await?).map(|_| ())
    }

    async fn revert(&self, _undo_promotion: bool, _since: DateTime<Utc>) -> Result<Weight, TrafficError> {
        // One write puts everything on the stable revision, promoted or not.
        until_applied(|| self.write(Weight::ZERO)).await
    }

    async fn current(&self) -> Result<Routing, TrafficError> {
        Ok(Routing { weight: self.canary_weight(&self.read_app().await?), promoted: false })
    }

    async fn scale_down_previous(&self) -> Result<(), TrafficError> {
        if !self.deactivate_stable {
            return Ok(());
        }
        let url = format!("{}/revisions/{}/deactivate?{API}", self.app, self.stable.revision);
        self.arm.send(reqwest::Method::POST, &url, None).await.map_err(failed)?;
        Ok(())
    }

    async fn caveats(&self) -> Vec<String> {
        let Ok(app) = self.read_app().await else { return Vec::new() };
        let sticky = app.pointer("/properties/configuration/ingress/stickySessions/affinity").and_then(Value::as_str);
        match sticky {
            Some(a) if a.eq_ignore_ascii_case("sticky") => {
                vec!["containerApps: ingress sticky sessions are on, so clients keep the revision their affinity cookie names; \
                 a weight change (and a rollback) reaches them only when the cookie expires"
                    .into()]
            }
            _ => Vec::new(),
        }
    }
}
