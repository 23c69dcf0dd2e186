//! Azure Container Apps revisions through ARM. The canary weight is the
//! canary revision's entry in `configuration.ingress.traffic` (the stable
//! revision gets the rest), written with `PATCH` — a JSON merge patch, so
//! the rest of the ingress is left alone and the traffic array is replaced
//! whole; with the app's `location`, which the body's schema requires — and
//! read back to confirm. Splitting needs the app in
//! `Multiple` active-revisions mode; an app in `Single` mode is refused
//! with what to change. Promotion sends 100 % to the canary revision;
//! `deactivateStable` (default off) deactivates the old revision when the
//! rollout scales it down, after its `scaleDownDelay`.
//!
//! Settings: `subscriptionId`, `resourceGroup`, `app`, and for each side a
//! revision name or a traffic label (`stableRevision` or `stableLabel`,
//! `canaryRevision` or `canaryLabel`; a label alone is resolved to the
//! revision the app's traffic gives it, and kept on the entry so label URLs
//! keep working); optional `deactivateStable`, `armEndpoint`.
//!
//! A preview gives the canary revision's traffic entry, at weight 0, a
//! label — its own `canaryLabel`, or `preview` — whose address
//! (`<app>---<label>.<the rest of the app's ingress fqdn>`) reaches that
//! revision alone. Without `canaryLabel` the label goes with the next write
//! of the split.
//!
//! Source: Azure REST API specs, Microsoft.App stable 2025-01-01:
//! `ContainerApps_Get` / `ContainerApps_Update` (`PATCH
//! …/Microsoft.App/containerApps/{app}`, long-running: 202 with `Location`
//! or `Azure-AsyncOperation`), `properties.configuration.activeRevisionsMode`
//! (`Single` / `Multiple`), `ingress.traffic[]` (`revisionName`, `label`,
//! `latestRevision`, `weight`), `ingress.stickySessions.affinity`
//! (`sticky` / `none`), `ContainerAppsRevisions_DeactivateRevision` (`POST
//! …/revisions/{name}/deactivate`); and "Traffic splitting in Azure
//! Container Apps" (learn.microsoft.com/azure/container-apps/traffic-splitting);
//! `ingress.fqdn` and "Blue-Green Deployment in Azure Container Apps"
//! (learn.microsoft.com/azure/container-apps/blue-green-deployment: a
//! revision at `weight: 0` with a `label` is tested at
//! `https://<app>---<label>.<environment default domain>`); "Communicate
//! between container apps" (connect-apps: `<APP_NAME>---<LABEL>.` before
//! the environment's domain, `.internal.` for internal ingress).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{call_failed, failed, opt_bool, Absolute, Split, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::rollout::PreviewAddress;
use crate::domain::spec::Target;
use crate::ports::azure::http::AzureHttp;
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError};

const API: &str = "api-version=2025-01-01";
/// The canary's label for a preview when the settings give it none.
pub const PREVIEW_LABEL: &str = "preview";
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

/// A side: a revision, or a traffic label naming one, or both.
struct Side {
    revision: Option<String>,
    label: Option<String>,
}

impl Side {
    /// The revision this side is, on the app as it is now.
    fn revision(&self, app: &Value) -> Result<String, TrafficError> {
        if let Some(r) = &self.revision {
            return Ok(r.clone());
        }
        let label = self.label.as_deref().unwrap_or_default();
        let latest = app.pointer("/properties/latestRevisionName").and_then(Value::as_str);
        traffic(app)
            .iter()
            .filter(|e| e.get("label").and_then(Value::as_str) == Some(label))
            .find_map(|e| match e.get("revisionName").and_then(Value::as_str) {
                Some(name) => Some(name.to_string()),
                None if e.get("latestRevision").and_then(Value::as_bool) == Some(true) => latest.map(str::to_string),
                None => None,
            })
            .ok_or_else(|| TrafficError::Failed(format!("no traffic entry of the app carries the label '{label}'; give the revision name")))
    }

    fn entry(&self, revision: &str, weight: u8) -> Value {
        let mut entry = json!({"revisionName": revision, "weight": weight});
        if let Some(label) = &self.label {
            entry["label"] = json!(label);
        }
        entry
    }
}

/// The app's traffic entries.
fn traffic(app: &Value) -> Vec<Value> {
    app.pointer("/properties/configuration/ingress/traffic").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// Whether a traffic entry routes to `revision`.
fn routes_to(entry: &Value, revision: &str, latest: Option<&str>) -> bool {
    entry.get("revisionName").and_then(Value::as_str) == Some(revision)
        || (entry.get("latestRevision").and_then(Value::as_bool) == Some(true) && latest == Some(revision))
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "containerApps";
    let (arm, prefix) = super::arm(name, s, env)?;
    let side = |revision: &str, label: &str| -> Result<Side, AdapterError> {
        let side = Side { revision: opt_str(s, revision).map(str::to_string), label: opt_str(s, label).map(str::to_string) };
        if side.revision.is_none() && side.label.is_none() {
            return Err(AdapterError::Config { provider: name.into(), message: format!("'{revision}' or '{label}' is required") });
        }
        Ok(side)
    };
    Ok(Arc::new(Absolute(ContainerApps {
        app: format!("{prefix}/Microsoft.App/containerApps/{}", req_str(name, s, "app")?),
        stable: side("stableRevision", "stableLabel")?,
        canary: side("canaryRevision", "canaryLabel")?,
        deactivate_stable: opt_bool(s, "deactivateStable").unwrap_or(false),
        arm,
    })))
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

    fn canary_weight(&self, app: &Value) -> Result<Weight, TrafficError> {
        let latest = app.pointer("/properties/latestRevisionName").and_then(Value::as_str);
        let revision = self.canary.revision(app)?;
        let canary: u64 =
            traffic(app).iter().filter(|e| routes_to(e, &revision, latest)).filter_map(|e| e.get("weight").and_then(Value::as_u64)).sum();
        Ok(Weight::new(canary).unwrap_or(Weight::FULL))
    }

    /// Writes the split; a preview labels the canary's entry if its side has no label.
    async fn write_split(&self, canary: Weight, preview: bool) -> Result<Weight, TrafficError> {
        let app = self.read_app().await?;
        let (stable, canary_revision) = (self.stable.revision(&app)?, self.canary.revision(&app)?);
        let mut canary_entry = self.canary.entry(&canary_revision, canary.percent());
        if preview && canary_entry.get("label").is_none() {
            canary_entry["label"] = json!(PREVIEW_LABEL);
        }
        let traffic = json!([self.stable.entry(&stable, 100 - canary.percent()), canary_entry]);
        // The body is a ContainerApp, a TrackedResource whose `location` is
        // required (common-types `TrackedResource`; the spec's own
        // `ContainerApps_Patch.json` sends it): the app's own, from the GET.
        let Some(location) = app.get("location").and_then(Value::as_str) else {
            return Err(TrafficError::Failed("the container app as ARM describes it has no location".into()));
        };
        let body = json!({"location": location, "properties": {"configuration": {"ingress": {"traffic": traffic}}}});
        let url = format!("{}?{API}", self.app);
        self.arm.long_running(reqwest::Method::PATCH, &url, Some(&body), UPDATE_BUDGET).await.map_err(call_failed)?;
        self.canary_weight(&self.read_app().await?)
    }
}

#[async_trait]
impl Split for ContainerApps {
    async fn apply(&self, weight: Weight) -> Result<Weight, TrafficError> {
        self.write_split(weight, false).await
    }

    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        super::confirm(Weight::ZERO, self.write_split(Weight::ZERO, true).await?)?;
        let app = self.read_app().await?;
        let label = self.canary.label.as_deref().unwrap_or(PREVIEW_LABEL);
        let ingress = app.pointer("/properties/configuration/ingress");
        let fqdn = ingress.and_then(|i| i.get("fqdn")).and_then(Value::as_str).unwrap_or_default();
        let Some((name, domain)) = fqdn.split_once('.').filter(|(name, domain)| !name.is_empty() && !domain.is_empty()) else {
            return Err(TrafficError::Failed(
                "the container app has no ingress fqdn to make a label's address from (is ingress on?)".into(),
            ));
        };
        let internal = ingress.and_then(|i| i.get("external")).and_then(Value::as_bool) == Some(false);
        let reach = if internal { ", from inside its environment only (ingress is internal)" } else { "" };
        Ok(PreviewAddress {
            url: format!("https://{name}---{label}.{domain}"),
            headers: Default::default(),
            how: format!("the address of the traffic label '{label}', which reaches the canary revision alone{reach}"),
        })
    }

    async fn weight(&self) -> Result<Weight, TrafficError> {
        self.canary_weight(&self.read_app().await?)
    }

    async fn scale_down(&self) -> Result<(), TrafficError> {
        if !self.deactivate_stable {
            return Ok(());
        }
        let stable = self.stable.revision(&self.read_app().await?)?;
        let url = format!("{}/revisions/{stable}/deactivate?{API}", self.app);
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
