//! Azure API Management load-balanced backend pools through ARM: the
//! stable and canary backends are two services of one `Pool` backend, and
//! the canary percentage is their `weight` (canary `p`, stable `100 − p`;
//! other services in the pool keep theirs). The pool is read with its
//! `ETag` and written with `PATCH` and `If-Match`, so a change someone made
//! meanwhile is never overwritten: a weight change then fails (the rollout
//! retries it), a rollback reads again and writes again until it wins.
//!
//! Settings: `subscriptionId`, `resourceGroup`, `service`, `pool` (the pool
//! backend's id), `stableBackend`, `canaryBackend` (backend ids as the pool
//! lists them, `…/backends/{id}`); optional `armEndpoint`.
//!
//! Source: Azure REST API specs, Microsoft.ApiManagement stable 2024-05-01
//! (apimbackends.json): `Backend_Get` (200 with `ETag`), `Backend_Update`
//! (`PATCH …/service/{service}/backends/{backendId}`, `If-Match` required,
//! body `BackendUpdateParameters`), `BackendContract.properties.pool.services[]`
//! (`id`, `priority`, `weight`); and "Backends in API Management — load-balanced
//! pool" (learn.microsoft.com/azure/api-management/backends).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{call_failed, failed, share, Absolute, Split, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::spec::Target;
use crate::ports::azure::http::{AzureHttp, Call};
use crate::ports::env::{req_str, AdapterEnv, AdapterError};

const API: &str = "api-version=2024-05-01";

/// One pool backend and the two services in it Sluice moves.
pub struct ApiManagement {
    arm: AzureHttp,
    pool: String,
    stable: String,
    canary: String,
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "apiManagement";
    let (arm, prefix) = super::arm(name, s, env)?;
    Ok(Arc::new(Absolute(ApiManagement {
        pool: format!(
            "{prefix}/Microsoft.ApiManagement/service/{}/backends/{}?{API}",
            req_str(name, s, "service")?,
            req_str(name, s, "pool")?
        ),
        stable: req_str(name, s, "stableBackend")?.to_string(),
        canary: req_str(name, s, "canaryBackend")?.to_string(),
        arm,
    })))
}

/// Whether a pool service id names `backend` (`/backends/{id}`, full ARM id or not).
fn names(service: &Value, backend: &str) -> bool {
    let id = service.get("id").and_then(Value::as_str).unwrap_or("");
    id.rsplit('/').next().map(|last| last.eq_ignore_ascii_case(backend)).unwrap_or(false) && id.to_ascii_lowercase().contains("/backends/")
}

impl ApiManagement {
    /// The pool's services and its ETag.
    async fn read(&self) -> Result<(Vec<Value>, String), TrafficError> {
        let r = self.arm.send(reqwest::Method::GET, &self.pool, None).await.map_err(failed)?;
        let kind = r.body.pointer("/properties/type").and_then(Value::as_str).unwrap_or("Single");
        if !kind.eq_ignore_ascii_case("pool") {
            return Err(TrafficError::Failed(format!("the backend is of type {kind}, not a load-balanced Pool")));
        }
        let services = r.body.pointer("/properties/pool/services").and_then(Value::as_array).cloned().unwrap_or_default();
        for backend in [&self.stable, &self.canary] {
            if !services.iter().any(|s| names(s, backend)) {
                return Err(TrafficError::Failed(format!("the pool has no service for backend '{backend}'")));
            }
        }
        let etag = r.etag.ok_or_else(|| TrafficError::Failed("the pool was read without an ETag".into()))?;
        Ok((services, etag))
    }

    fn weight_of(&self, services: &[Value]) -> Result<Weight, TrafficError> {
        let sum = |backend: &str| {
            services.iter().filter(|s| names(s, backend)).filter_map(|s| s.get("weight").and_then(Value::as_f64)).sum::<f64>()
        };
        share(sum(&self.canary), sum(&self.stable))
    }

    async fn write_split(&self, canary: Weight) -> Result<Weight, TrafficError> {
        let (mut services, etag) = self.read().await?;
        for service in &mut services {
            if names(service, &self.canary) {
                service["weight"] = json!(canary.percent());
            } else if names(service, &self.stable) {
                service["weight"] = json!(100 - canary.percent());
            }
        }
        let body = json!({"properties": {"pool": {"services": services}}});
        let call = Call::new(reqwest::Method::PATCH, &self.pool).json(&body).header("If-Match", etag);
        self.arm.call(&call).await.map_err(call_failed)?;
        self.weight_of(&self.read().await?.0)
    }
}

#[async_trait]
impl Split for ApiManagement {
    async fn apply(&self, weight: Weight) -> Result<Weight, TrafficError> {
        self.write_split(weight).await
    }

    async fn weight(&self) -> Result<Weight, TrafficError> {
        self.weight_of(&self.read().await?.0)
    }

    async fn caveats(&self) -> Vec<String> {
        let Ok(r) = self.arm.send(reqwest::Method::GET, &self.pool, None).await else { return Vec::new() };
        match r.body.pointer("/properties/pool/sessionAffinity") {
            Some(v) if !v.is_null() => {
                vec!["apiManagement: the pool has session affinity, so clients keep the backend their session names; \
                 weight changes reach only new sessions"
                    .into()]
            }
            _ => Vec::new(),
        }
    }
}
