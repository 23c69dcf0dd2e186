#![allow(dead_code)]

//! Wire-level fakes of every Azure traffic router (only the router tests
//! include this module, so the other test binaries do not compile it), built from each
//! service's published REST contract (cited on each model). Each fake keeps
//! the state the service would (weights, ETags, resource versions), checks
//! every request exactly — path, api-version, auth header, content type,
//! body shape, `If-Match` — and answers a wrong one with the status the
//! service would (400, 401, 412, 415, 428), so a case fails on any drift.
//! Faults are injected the same way for all of them: throttling with
//! `Retry-After`, outages, writes that fail after they were applied,
//! writes the service ignores, and a write held in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::recorder::{Answer, Recorded, Recorder};
use sluice::domain::spec::Target;
use sluice::ports::env::AdapterEnv;

pub const IDENTITY_HEADER: &str = "identity-header-router-fakes";
pub const K8S_TOKEN: &str = "sa-token-for-sluice";
pub const APPCONFIG_ID: &str = "ak-id-1";
pub const APPCONFIG_SECRET: &[u8] = b"appconfig-secret-key";
const ARM_TOKEN: &str = "Bearer token-for-management.azure.com";

pub fn ok(body: Value) -> Answer {
    (200, vec![("content-type".into(), "application/json".into())], body.to_string())
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Answer {
    (
        status,
        vec![("content-type".into(), "application/json".into())],
        json!({"error": {"code": code, "message": message.into()}}).to_string(),
    )
}

/// What a fake lets a test arrange.
#[derive(Default)]
pub struct Faults {
    /// The next writes answered 429 with `Retry-After: 1`, not applied.
    pub throttle_writes: u32,
    /// Every request answered 503 with `Retry-After: 0`.
    pub unavailable: bool,
    /// The next reads answered 503 with `Retry-After: 1`.
    pub unavailable_reads: u32,
    /// Writes applied, then answered 500 (the caller cannot know it happened).
    pub fail_after_write: bool,
    /// Writes answered as applied but not applied.
    pub ignore_writes: bool,
    /// The next write held: for ETag-checked services a 429 (`Retry-After:
    /// 1`) before it is applied; for ARM, applied and reported as a
    /// long-running operation that finishes a second later.
    pub hold_next_write: bool,
    /// Long-running operations stay in progress until cleared, so a test
    /// decides when a held ARM write finishes instead of a clock.
    pub keep_operations_running: bool,
}

/// One service's model behind the fake.
pub trait Service: Send + 'static {
    /// Answers a request that passed the faults (writes may be ignored).
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer;
    /// Whether the request carries the credentials the service wants.
    fn authorized(&self, r: &Recorded) -> bool;
    /// The share of users on the new version now, in percent.
    fn new_version_share(&self) -> u8;
    /// Whether writes are checked by ETag or resource version.
    fn conditional(&self) -> bool;
    /// Writes after which no backend served at all.
    fn dark_moments(&self) -> u32 {
        0
    }
}

struct Shared {
    service: Box<dyn Service>,
    faults: Faults,
    ops: u32,
}

/// A running fake router service.
pub struct FakeRouter {
    pub recorder: Recorder,
    shared: Arc<Mutex<Shared>>,
}

impl FakeRouter {
    pub async fn start(service: impl Service) -> FakeRouter {
        let shared = Arc::new(Mutex::new(Shared { service: Box::new(service), faults: Faults::default(), ops: 0 }));
        let inner = shared.clone();
        let recorder = Recorder::start(move |r: &Recorded| respond(&mut inner.lock().expect("fake"), r)).await;
        FakeRouter { recorder, shared }
    }

    pub fn url(&self) -> &str {
        &self.recorder.url
    }

    pub fn share(&self) -> u8 {
        self.shared.lock().expect("fake").service.new_version_share()
    }

    pub fn dark_moments(&self) -> u32 {
        self.shared.lock().expect("fake").service.dark_moments()
    }

    pub fn faults<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T {
        f(&mut self.shared.lock().expect("fake").faults)
    }

    pub fn seen(&self) -> Vec<Recorded> {
        self.recorder.seen().into_iter().filter(|r| r.path != "/msi/token").collect()
    }
}

fn is_write(r: &Recorded) -> bool {
    r.method != "GET" && r.method != "HEAD"
}

fn respond(shared: &mut Shared, r: &Recorded) -> Answer {
    if let Some(answer) = token_answer(r) {
        return answer;
    }
    if r.path.starts_with("/_ops/") {
        if shared.faults.keep_operations_running {
            let location = format!("{}{}", r.header("host").map(|h| format!("http://{h}")).unwrap_or_default(), r.path);
            return (202, vec![("location".into(), location), ("retry-after".into(), "1".into())], String::new());
        }
        return (200, vec![], "{}".into());
    }
    if !shared.service.authorized(r) {
        return error(401, "Unauthorized", "missing or wrong credentials");
    }
    if shared.faults.unavailable {
        return (503, vec![("retry-after".into(), "0".into())], "{}".into());
    }
    if !is_write(r) {
        if shared.faults.unavailable_reads > 0 {
            shared.faults.unavailable_reads -= 1;
            return (503, vec![("retry-after".into(), "1".into())], "{}".into());
        }
        return shared.service.answer(r, true);
    }
    if shared.faults.throttle_writes > 0 {
        shared.faults.throttle_writes -= 1;
        return (429, vec![("retry-after".into(), "1".into())], error(429, "TooManyRequests", "slow down").2);
    }
    if shared.faults.hold_next_write && shared.service.conditional() {
        shared.faults.hold_next_write = false;
        return (429, vec![("retry-after".into(), "1".into())], "{}".into());
    }
    let answer = shared.service.answer(r, !shared.faults.ignore_writes);
    if shared.faults.fail_after_write && answer.0 < 300 {
        return error(500, "InternalServerError", "the operation may or may not have happened");
    }
    if shared.faults.hold_next_write && answer.0 < 300 {
        shared.faults.hold_next_write = false;
        shared.ops += 1;
        let location = format!("{}/_ops/{}", r.header("host").map(|h| format!("http://{h}")).unwrap_or_default(), shared.ops);
        return (202, vec![("location".into(), location), ("retry-after".into(), "1".into())], String::new());
    }
    answer
}

/// A managed-identity token endpoint as App Service serves it (tokens name their resource).
fn token_answer(r: &Recorded) -> Option<Answer> {
    if r.path != "/msi/token" {
        return None;
    }
    if r.header("x-identity-header") != Some(IDENTITY_HEADER) {
        return Some((400, vec![], "{\"error\":\"bad identity request\"}".into()));
    }
    let resource = r.param("resource").unwrap_or_default();
    let token = format!("token-for-{}", resource.trim_start_matches("https://").trim_end_matches('/'));
    let expires = (Utc::now() + TimeDelta::hours(1)).timestamp().to_string();
    Some(ok(json!({"access_token": token, "expires_on": expires, "resource": resource, "token_type": "Bearer"})))
}

/// The environment every router is built in: a managed identity served by
/// the fake, a cluster token and an App Configuration connection string.
pub fn env_for(fake: &FakeRouter) -> AdapterEnv {
    let connection =
        format!("Endpoint={};Id={APPCONFIG_ID};Secret={}", fake.url(), base64::engine::general_purpose::STANDARD.encode(APPCONFIG_SECRET));
    let settings: BTreeMap<&'static str, String> = BTreeMap::from([
        ("IDENTITY_ENDPOINT", format!("{}/msi/token", fake.url())),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_string()),
        ("K8S_TOKEN", K8S_TOKEN.to_string()),
        ("APPCONFIG_CONNECTION", connection),
        // The fakes listen on loopback: a deployment would refuse them.
        ("SLUICE_ALLOW_LOOPBACK_ENDPOINTS", "true".to_string()),
    ]);
    let settings = Arc::new(move |k: &str| settings.get(k).cloned());
    AdapterEnv::with_settings(std::env::temp_dir(), "http://sluice.test".into(), settings)
}

pub fn target(router: Value) -> Target {
    serde_json::from_value(json!({
        "name": "orders",
        "router": router,
        "stable": {"name": "orders-v1", "version": "v1"},
        "canary": {"name": "orders-v2", "version": "v2"}
    }))
    .expect("target")
}

fn api_version(r: &Recorded, wanted: &str) -> Option<Answer> {
    (r.param("api-version").as_deref() != Some(wanted)).then(|| error(400, "InvalidApiVersion", format!("want api-version {wanted}")))
}

fn json_body(r: &Recorded) -> Result<Value, Answer> {
    if r.header("content-type") != Some("application/json") {
        return Err(error(415, "UnsupportedMediaType", "want application/json"));
    }
    serde_json::from_str(&r.body).map_err(|_| error(400, "InvalidRequestContent", "not JSON"))
}

fn not_found(r: &Recorded) -> Answer {
    error(404, "NotFound", format!("{} {}", r.method, r.path))
}

// ---------------------------------------------------------------- App Service

/// App Service slots. Source: Microsoft.Web `WebApps_UpdateConfiguration`
/// (`PATCH …/config/web`, `experiments.rampUpRules`), `WebApps_SwapSlot`
/// (`POST …/slots/{slot}/slotsswap`), `WebApps_GetSlot`
/// (`properties.defaultHostName`), `WebApps_StopSlot`; api-version 2023-12-01.
/// A rule of 0 % is kept as written: only then may a browser opt in to the
/// slot with `x-ms-routing-name` (learn.microsoft.com/azure/app-service/deploy-staging-slots).
#[derive(Default)]
pub struct AppServiceModel {
    pub rules: u8,
    /// Whether a rule to the slot exists (0 % included): users may opt in.
    pub opt_in: bool,
    pub swapped: bool,
    pub swaps: u32,
    swap_status: Option<Value>,
}

pub const SITE: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/orders";
pub const SLOT_HOST: &str = "orders-canary-a1b2c3.westeurope-01.azurewebsites.net";
pub const SITE_HOST: &str = "orders-d4e5f6.westeurope-01.azurewebsites.net";

impl Service for AppServiceModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if let Some(bad) = api_version(r, "2023-12-01") {
            return bad;
        }
        let opt_in = self.opt_in;
        let rules = |pct: u8| {
            if pct == 0 && !opt_in {
                json!([])
            } else {
                json!([{"name": "canary", "actionHostName": SLOT_HOST, "reroutePercentage": f64::from(pct)}])
            }
        };
        match (r.method.as_str(), r.path.strip_prefix(SITE).unwrap_or("?")) {
            ("GET", "") => {
                ok(json!({"location": "East US", "properties": {"defaultHostName": SITE_HOST, "slotSwapStatus": self.swap_status.clone()}}))
            }
            ("GET", "/slots/canary") => ok(json!({"properties": {"defaultHostName": SLOT_HOST}})),
            ("GET", "/config/web") => ok(json!({"properties": {"experiments": {"rampUpRules": rules(self.rules)}}})),
            ("PATCH", "/config/web") => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(a) => return a,
                };
                let Some(list) = body.pointer("/properties/experiments/rampUpRules").and_then(Value::as_array) else {
                    return error(400, "BadRequest", "want properties.experiments.rampUpRules");
                };
                let pct = list.first().and_then(|x| x["reroutePercentage"].as_f64()).unwrap_or(0.0);
                if list.len() > 1 || list.first().map(|x| x["actionHostName"] != SLOT_HOST).unwrap_or(false) {
                    return error(400, "BadRequest", "one rule to the slot's host");
                }
                if apply {
                    self.rules = pct as u8;
                    self.opt_in = !list.is_empty();
                }
                ok(json!({}))
            }
            ("POST", "/slots/canary/slotsswap") => {
                if json_body(r).ok() != Some(json!({"targetSlot": "production", "preserveVnet": true})) {
                    return error(400, "BadRequest", "want targetSlot production");
                }
                if apply {
                    self.swaps += 1;
                    self.swapped = !self.swapped;
                    self.swap_status = Some(
                        json!({"timestampUtc": Utc::now().to_rfc3339(), "sourceSlotName": "canary", "destinationSlotName": "production"}),
                    );
                }
                ok(json!({}))
            }
            ("POST", "/slots/canary/stop") => ok(json!({})),
            _ => not_found(r),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        r.header("authorization") == Some(ARM_TOKEN)
    }

    fn new_version_share(&self) -> u8 {
        if self.swapped {
            100 - self.rules
        } else {
            self.rules
        }
    }

    fn conditional(&self) -> bool {
        false
    }
}

// ------------------------------------------------------------- Container Apps

/// Container Apps. Source: Microsoft.App 2025-01-01 `ContainerApps_Get` /
/// `ContainerApps_Update` (JSON merge patch of
/// `properties.configuration.ingress.traffic`; the body is a ContainerApp,
/// a TrackedResource whose `location` is required, as `ContainerApps_Patch.json`
/// sends it), `activeRevisionsMode`,
/// `ContainerAppsRevisions_DeactivateRevision`.
pub struct ContainerAppsModel {
    pub traffic: Value,
    pub mode: &'static str,
    pub deactivated: Vec<String>,
}

impl Default for ContainerAppsModel {
    fn default() -> Self {
        ContainerAppsModel { traffic: json!([{"revisionName": "orders--v1", "weight": 100}]), mode: "Multiple", deactivated: Vec::new() }
    }
}

pub const CONTAINER_APP: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.App/containerApps/orders";

impl Service for ContainerAppsModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if let Some(bad) = api_version(r, "2025-01-01") {
            return bad;
        }
        match (r.method.as_str(), r.path.strip_prefix(CONTAINER_APP).unwrap_or("?")) {
            ("GET", "") => ok(json!({"location": "East US", "properties": {
                "latestRevisionName": "orders--v2",
                "configuration": {"activeRevisionsMode": self.mode, "ingress": {"external": true, "targetPort": 8080,
                    "fqdn": "orders.kindocean-a1b2c3.eastus.azurecontainerapps.io", "traffic": self.traffic}}
            }})),
            ("PATCH", "") => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(a) => return a,
                };
                let keys: Vec<&String> = body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
                let traffic = body.pointer("/properties/configuration/ingress/traffic").cloned();
                if body.get("location").and_then(Value::as_str) != Some("East US") {
                    return error(400, "LocationRequired", "location: the app's location is required");
                }
                let Some(traffic) = traffic.filter(|_| keys == ["location", "properties"]) else {
                    return error(400, "BadRequest", "want only location and properties.configuration.ingress.traffic");
                };
                let total: u64 = traffic.as_array().into_iter().flatten().filter_map(|e| e["weight"].as_u64()).sum();
                if total != 100 {
                    return error(400, "ContainerAppInvalidTrafficWeight", format!("weights add up to {total}, not 100"));
                }
                if self.mode != "Multiple" {
                    return error(400, "ContainerAppSingleRevisionMode", "traffic cannot be split in single mode");
                }
                if apply {
                    self.traffic = traffic;
                }
                ok(json!({}))
            }
            ("POST", p) if p.starts_with("/revisions/") && p.ends_with("/deactivate") => {
                self.deactivated.push(p.trim_start_matches("/revisions/").trim_end_matches("/deactivate").to_string());
                ok(json!({}))
            }
            _ => not_found(r),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        r.header("authorization") == Some(ARM_TOKEN)
    }

    fn new_version_share(&self) -> u8 {
        let w: u64 = self
            .traffic
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["revisionName"] == "orders--v2")
            .filter_map(|e| e["weight"].as_u64())
            .sum();
        w as u8
    }

    fn conditional(&self) -> bool {
        false
    }
}

// ------------------------------------------------------------------ Front Door

/// Front Door Standard/Premium. Source: Microsoft.Cdn 2024-02-01
/// `AFDOrigins_Get` / `AFDOrigins_Update` (`properties.weight` 1–1000,
/// `properties.enabledState`), `AFDOriginGroups_Get` (`sessionAffinityState`).
pub struct FrontDoorModel {
    pub origins: BTreeMap<&'static str, (u64, bool)>,
    /// Writes that left the group without an enabled origin.
    pub dark: u32,
}

impl Default for FrontDoorModel {
    fn default() -> Self {
        FrontDoorModel { origins: BTreeMap::from([("stable", (1000, true)), ("canary", (1, false))]), dark: 0 }
    }
}

pub const ORIGIN_GROUP: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Cdn/profiles/edge/originGroups/orders";

impl Service for FrontDoorModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if let Some(bad) = api_version(r, "2024-02-01") {
            return bad;
        }
        let rest = r.path.strip_prefix(ORIGIN_GROUP).unwrap_or("?");
        if (r.method.as_str(), rest) == ("GET", "") {
            return ok(json!({"properties": {"sessionAffinityState": "Disabled"}}));
        }
        let Some(name) = rest.strip_prefix("/origins/").and_then(|n| self.origins.keys().find(|k| **k == n).copied()) else {
            return not_found(r);
        };
        match r.method.as_str() {
            "GET" => {
                let (weight, on) = self.origins[name];
                ok(
                    json!({"properties": {"hostName": format!("{name}.example.net"), "weight": weight, "enabledState": if on { "Enabled" } else { "Disabled" }}}),
                )
            }
            "PATCH" => {
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(a) => return a,
                };
                let weight = body.pointer("/properties/weight").and_then(Value::as_u64);
                let state = body.pointer("/properties/enabledState").and_then(Value::as_str);
                let (Some(weight @ 1..=1000), Some(state @ ("Enabled" | "Disabled"))) = (weight, state) else {
                    return error(400, "BadRequest", "weight must be 1-1000 and enabledState Enabled or Disabled");
                };
                if apply {
                    self.origins.insert(name, (weight, state == "Enabled"));
                    if self.origins.values().all(|(_, on)| !on) {
                        self.dark += 1;
                    }
                }
                ok(json!({}))
            }
            _ => not_found(r),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        r.header("authorization") == Some(ARM_TOKEN)
    }

    fn dark_moments(&self) -> u32 {
        self.dark
    }

    fn new_version_share(&self) -> u8 {
        let eff = |k: &str| self.origins.get(k).map(|(w, on)| if *on { *w as f64 } else { 0.0 }).unwrap_or(0.0);
        let total = eff("stable") + eff("canary");
        if total == 0.0 {
            0
        } else {
            (100.0 * eff("canary") / total).round() as u8
        }
    }

    fn conditional(&self) -> bool {
        false
    }
}

// ------------------------------------------------------------- API Management

/// API Management pool backends. Source: Microsoft.ApiManagement
/// 2024-05-01 `Backend_Get` (ETag header), `Backend_Update` (`PATCH`,
/// `If-Match` required), `properties.pool.services[{id, priority, weight}]`.
pub struct ApiManagementModel {
    pub services: Value,
    pub etag: u32,
}

impl Default for ApiManagementModel {
    fn default() -> Self {
        ApiManagementModel {
            services: json!([
                {"id": "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ApiManagement/service/gw/backends/orders-v1", "priority": 1, "weight": 100},
                {"id": "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ApiManagement/service/gw/backends/orders-v2", "priority": 1, "weight": 0},
                {"id": "/backends/orders-dr", "priority": 2, "weight": 1}
            ]),
            etag: 1,
        }
    }
}

pub const POOL: &str = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ApiManagement/service/gw/backends/orders-pool";

impl ApiManagementModel {
    fn weight(&self, backend: &str) -> u64 {
        self.services
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["id"].as_str().unwrap_or("").ends_with(backend))
            .filter_map(|s| s["weight"].as_u64())
            .sum()
    }
}

impl Service for ApiManagementModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if let Some(bad) = api_version(r, "2024-05-01") {
            return bad;
        }
        if r.path != POOL {
            return not_found(r);
        }
        let etag = format!("\"{}\"", self.etag);
        match r.method.as_str() {
            "GET" => {
                let (s, mut h, b) = ok(json!({"properties": {"type": "Pool", "pool": {"services": self.services}}}));
                h.push(("etag".into(), etag));
                (s, h, b)
            }
            "PATCH" => {
                match r.header("if-match") {
                    None => return error(428, "PreconditionRequired", "If-Match is required"),
                    Some(m) if m != etag => return error(412, "PreconditionFailed", "the entity changed"),
                    _ => {}
                }
                let body = match json_body(r) {
                    Ok(b) => b,
                    Err(a) => return a,
                };
                let Some(services) = body.pointer("/properties/pool/services").filter(|s| s.is_array()) else {
                    return error(400, "ValidationError", "want properties.pool.services");
                };
                let ids = |v: &Value| v.as_array().into_iter().flatten().map(|s| s["id"].clone()).collect::<Vec<_>>();
                if ids(services) != ids(&self.services)
                    || services.as_array().into_iter().flatten().any(|s| s["weight"].as_u64().map(|w| w > 100).unwrap_or(true))
                {
                    return error(400, "ValidationError", "the pool's services changed or a weight is out of 0-100");
                }
                if apply {
                    self.services = services.clone();
                    self.etag += 1;
                }
                ok(json!({}))
            }
            _ => not_found(r),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        r.header("authorization") == Some(ARM_TOKEN)
    }

    fn new_version_share(&self) -> u8 {
        let (v1, v2) = (self.weight("/orders-v1"), self.weight("/orders-v2"));
        (100 * v2).checked_div(v1 + v2).unwrap_or(0) as u8
    }

    fn conditional(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------- App Configuration

/// An App Configuration feature flag. Source: data-plane 2023-11-01
/// `GetKeyValue` / `PutKeyValue` (`/kv/{key}?label=`, ETag, `If-Match`,
/// request content type `application/vnd.microsoft.appconfig.kv+json`),
/// the feature-flag content type and schema, and HMAC authentication
/// (string-to-sign `METHOD\npath?query\nx-ms-date;host;x-ms-content-sha256`).
pub struct AppConfigModel {
    pub flag: Value,
    pub etag: u32,
}

impl Default for AppConfigModel {
    fn default() -> Self {
        AppConfigModel {
            flag: json!({"id": "orders-v2", "description": "the v2 order flow", "enabled": false, "conditions": {"client_filters": [
                {"name": "Microsoft.Targeting", "parameters": {"Audience": {"Users": ["qa@contoso.com"], "Groups": [], "DefaultRolloutPercentage": 0}}}
            ]}}),
            etag: 7,
        }
    }
}

pub const FLAG_PATH: &str = "/kv/.appconfig.featureflag%2Forders-v2";
const FF: &str = "application/vnd.microsoft.appconfig.ff+json;charset=utf-8";

impl Service for AppConfigModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if let Some(bad) = api_version(r, "2023-11-01") {
            return bad;
        }
        if r.path != FLAG_PATH || r.param("label").as_deref() != Some("prod") {
            return not_found(r);
        }
        let etag = format!("etag-{}", self.etag);
        match r.method.as_str() {
            "GET" => {
                let body = json!({"etag": etag, "key": ".appconfig.featureflag/orders-v2", "label": "prod", "content_type": FF,
                                  "value": self.flag.to_string(), "tags": {"team": "orders"}, "locked": false});
                (
                    200,
                    vec![
                        ("content-type".into(), "application/vnd.microsoft.appconfig.kv+json".into()),
                        ("etag".into(), format!("W/\"{etag}\"")),
                    ],
                    body.to_string(),
                )
            }
            "PUT" => {
                if r.header("content-type") != Some("application/vnd.microsoft.appconfig.kv+json") {
                    return error(415, "UnsupportedMediaType", "want application/vnd.microsoft.appconfig.kv+json");
                }
                if r.header("if-match") != Some(format!("\"{etag}\"").as_str()) {
                    return error(412, "PreconditionFailed", "the key-value changed");
                }
                let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                let value = body["value"].as_str().and_then(|v| serde_json::from_str::<Value>(v).ok());
                let (Some(value), true, true) = (value, body["content_type"] == FF, body["tags"] == json!({"team": "orders"})) else {
                    return error(400, "BadRequest", "want a feature-flag value, its content type and the tags kept");
                };
                if value["id"] != "orders-v2" || !value["enabled"].is_boolean() {
                    return error(400, "BadRequest", "not a feature flag");
                }
                if apply {
                    self.flag = value;
                    self.etag += 1;
                }
                ok(json!({}))
            }
            _ => not_found(r),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        hmac_valid(r)
    }

    fn new_version_share(&self) -> u8 {
        if self.flag["enabled"] != true {
            return 0;
        }
        let filters = self.flag.pointer("/conditions/client_filters").and_then(Value::as_array).cloned().unwrap_or_default();
        filters
            .iter()
            .find_map(|f| f.pointer("/parameters/Audience/DefaultRolloutPercentage").and_then(Value::as_u64))
            .map(|p| p as u8)
            .unwrap_or(100)
    }

    fn conditional(&self) -> bool {
        true
    }
}

/// Checks App Configuration's HMAC-SHA256 signature from the request as received.
fn hmac_valid(r: &Recorded) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(auth), Some(date), Some(hash), Some(host)) =
        (r.header("authorization"), r.header("x-ms-date"), r.header("x-ms-content-sha256"), r.header("host"))
    else {
        return false;
    };
    if hash != b64.encode(Sha256::digest(r.body.as_bytes())) {
        return false;
    }
    let Some(rest) = auth.strip_prefix("HMAC-SHA256 ") else { return false };
    let parts: BTreeMap<&str, &str> = rest.split('&').filter_map(|p| p.split_once('=')).collect();
    if parts.get("Credential") != Some(&APPCONFIG_ID) || parts.get("SignedHeaders") != Some(&"x-ms-date;host;x-ms-content-sha256") {
        return false;
    }
    let path_and_query = if r.query.is_empty() { r.path.clone() } else { format!("{}?{}", r.path, r.query) };
    let to_sign = format!("{}\n{path_and_query}\n{date};{host};{hash}", r.method);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(APPCONFIG_SECRET).expect("key");
    mac.update(to_sign.as_bytes());
    parts.get("Signature").map(|s| *s == b64.encode(mac.finalize().into_bytes())).unwrap_or(false)
}

// ------------------------------------------------------------------ Gateway API

/// A Kubernetes API server holding one HTTPRoute. Source: Kubernetes
/// server-side apply (`PATCH` `application/apply-patch+yaml`,
/// `fieldManager`, `force`; a stale `metadata.resourceVersion` is a 409
/// `Status`), Gateway API v1 `HTTPRoute.spec.rules[].backendRefs[].weight`.
pub struct GatewayApiModel {
    pub route: Value,
    pub version: u32,
}

impl Default for GatewayApiModel {
    fn default() -> Self {
        GatewayApiModel {
            route: json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "orders", "namespace": "shop", "resourceVersion": "1"},
            "spec": {"parentRefs": [{"name": "public"}], "hostnames": ["orders.contoso.com"], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/health"}}], "backendRefs": [{"name": "orders-v1", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [
                    {"name": "orders-v1", "port": 80, "weight": 100}, {"name": "orders-v2", "port": 80, "weight": 0}]}
            ]}}),
            version: 1,
        }
    }
}

pub const ROUTE_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/orders";

fn k8s_status(code: u16, reason: &str, message: &str) -> Answer {
    (
        code,
        vec![("content-type".into(), "application/json".into())],
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}).to_string(),
    )
}

impl Service for GatewayApiModel {
    fn answer(&mut self, r: &Recorded, apply: bool) -> Answer {
        if r.path != ROUTE_PATH {
            return k8s_status(404, "NotFound", "httproutes.gateway.networking.k8s.io not found");
        }
        match r.method.as_str() {
            "GET" => ok(self.route.clone()),
            "PATCH" => {
                if r.header("content-type") != Some("application/apply-patch+yaml") {
                    return k8s_status(415, "UnsupportedMediaType", "want application/apply-patch+yaml");
                }
                if r.param("fieldManager").as_deref() != Some("sluice") || r.param("force").as_deref() != Some("true") {
                    return k8s_status(400, "BadRequest", "want fieldManager=sluice&force=true");
                }
                let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                if body["apiVersion"] != "gateway.networking.k8s.io/v1"
                    || body["kind"] != "HTTPRoute"
                    || body.pointer("/metadata/name") != Some(&json!("orders"))
                {
                    return k8s_status(400, "BadRequest", "not this HTTPRoute");
                }
                if body.pointer("/metadata/resourceVersion") != Some(&json!(self.version.to_string())) {
                    return k8s_status(409, "Conflict", "the object has been modified; please apply your changes to the latest version");
                }
                let Some(rules) = body.pointer("/spec/rules").filter(|r| r.is_array()) else {
                    return k8s_status(400, "BadRequest", "want spec.rules");
                };
                // The rules keep their matches: only weights may change, and
                // a preview's rules come and go (each checked on its own).
                let is_preview = |rule: &Value| {
                    rule["matches"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| m["headers"].as_array().into_iter().flatten().any(|h| h["name"] == "x-sluice-preview"))
                };
                for preview in rules.as_array().into_iter().flatten().filter(|r| is_preview(r)) {
                    let headers_exact = preview["matches"].as_array().into_iter().flatten().all(|m| {
                        m["headers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|h| h == &json!({"type": "Exact", "name": "x-sluice-preview", "value": "canary"}))
                    });
                    let canary_only = preview["backendRefs"].as_array().into_iter().flatten().all(|b| b["name"] == "orders-v2");
                    if !headers_exact || !canary_only || !preview["backendRefs"].as_array().is_some_and(|b| !b.is_empty()) {
                        return k8s_status(400, "BadRequest", "a preview rule matches the exact header and routes to the canary alone");
                    }
                }
                let strip = |v: &Value| {
                    let mut v = json!(v.as_array().into_iter().flatten().filter(|r| !is_preview(r)).cloned().collect::<Vec<_>>());
                    for rule in v.as_array_mut().into_iter().flatten() {
                        for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
                            b.as_object_mut().map(|o| o.remove("weight"));
                        }
                    }
                    v
                };
                if strip(rules) != strip(&self.route["spec"]["rules"]) {
                    return k8s_status(400, "BadRequest", "rules changed beyond weights");
                }
                if apply {
                    self.version += 1;
                    self.route["spec"]["rules"] = rules.clone();
                    self.route["metadata"]["resourceVersion"] = json!(self.version.to_string());
                }
                ok(self.route.clone())
            }
            _ => k8s_status(405, "MethodNotAllowed", "no"),
        }
    }

    fn authorized(&self, r: &Recorded) -> bool {
        r.header("authorization") == Some(format!("Bearer {K8S_TOKEN}").as_str())
    }

    fn new_version_share(&self) -> u8 {
        let rules = self.route["spec"]["rules"].as_array().cloned().unwrap_or_default();
        let splitting = |r: &&Value| r["backendRefs"].as_array().is_some_and(|b| b.len() == 2);
        let rule = &rules.iter().find(splitting).cloned().unwrap_or(Value::Null)["backendRefs"];
        let w = |name: &str| {
            rule.as_array().into_iter().flatten().filter(|b| b["name"] == name).filter_map(|b| b["weight"].as_u64()).sum::<u64>()
        };
        let (v1, v2) = (w("orders-v1"), w("orders-v2"));
        (100 * v2).checked_div(v1 + v2).unwrap_or(0) as u8
    }

    fn conditional(&self) -> bool {
        true
    }
}

/// Each router with its fake: the settings a spec would carry.
pub async fn router_and_fake(kind: &str) -> (Arc<dyn sluice::ports::traffic::Traffic>, FakeRouter) {
    let fake = match kind {
        "appServiceSlots" => FakeRouter::start(AppServiceModel::default()).await,
        "containerApps" => FakeRouter::start(ContainerAppsModel::default()).await,
        "frontDoor" => FakeRouter::start(FrontDoorModel::default()).await,
        "apiManagement" => FakeRouter::start(ApiManagementModel::default()).await,
        "appConfigFlag" => FakeRouter::start(AppConfigModel::default()).await,
        "gatewayApi" => FakeRouter::start(GatewayApiModel::default()).await,
        other => panic!("no fake for {other}"),
    };
    let arm = |extra: Value| {
        let mut s = json!({"subscriptionId": "sub-1", "resourceGroup": "rg-1", "armEndpoint": fake.url()});
        s.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        s
    };
    let settings = match kind {
        "appServiceSlots" => arm(json!({"app": "orders", "slot": "canary", "pinnedUsers": "stopSlot"})),
        "containerApps" => {
            arm(json!({"app": "orders", "stableRevision": "orders--v1", "canaryRevision": "orders--v2", "deactivateStable": true}))
        }
        "frontDoor" => arm(json!({"profile": "edge", "originGroup": "orders", "stableOrigin": "stable", "canaryOrigin": "canary"})),
        "apiManagement" => arm(json!({"service": "gw", "pool": "orders-pool", "stableBackend": "orders-v1", "canaryBackend": "orders-v2"})),
        "appConfigFlag" => {
            json!({"endpoint": fake.url(), "flag": "orders-v2", "label": "prod", "connectionStringSetting": "APPCONFIG_CONNECTION"})
        }
        _ => {
            json!({"apiServer": fake.url(), "namespace": "shop", "route": "orders", "stableService": "orders-v1", "canaryService": "orders-v2", "tokenSetting": "K8S_TOKEN"})
        }
    };
    let t = target(json!({"provider": kind, "settings": settings}));
    let router = sluice::ports::traffic::build(&t, &env_for(&fake)).unwrap_or_else(|e| panic!("{kind}: {e}"));
    (router, fake)
}
