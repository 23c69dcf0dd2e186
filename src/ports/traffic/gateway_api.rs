//! Kubernetes Gateway API (AKS with the Istio-based service mesh add-on,
//! or any Gateway API implementation): the weights of an `HTTPRoute`'s
//! `backendRefs` to the stable and canary Services (canary `p`, stable
//! `100 − p`, in every rule that routes to both). The route is read, its
//! rules rewritten, and applied with server-side apply under Sluice's own
//! field manager, carrying the `resourceVersion` read so that a change
//! made meanwhile is never overwritten (the API server answers `409`): a
//! weight change then fails and the rollout retries it; a rollback reads
//! again and applies again until it wins.
//!
//! Settings: `apiServer` (the cluster's URL), `namespace`, `route`,
//! `stableService`, `canaryService`; optional `caCertificate` (PEM of the
//! cluster's CA, when it is not publicly trusted), `tokenSetting` (the app
//! setting holding a service account's bearer token; without it, an Entra
//! ID token for AKS — the cluster must have Microsoft Entra integration and
//! Azure RBAC or a RoleBinding for Sluice's identity), `fieldManager`
//! (default `sluice`), `previewUrl` (where testers reach the route, for a
//! preview; default `https://` and the route's first host name).
//!
//! A preview puts, before the rules, one rule per splitting rule with the
//! same matches plus the header `x-sluice-preview: canary`, routing to the
//! canary Service alone: an equally specific path with more header
//! matches wins (HTTPRoute match precedence). The next write of the split
//! (a weight, the promotion, a rollback) takes them out again.
//!
//! Source: Kubernetes API reference, "Server-Side Apply"
//! (kubernetes.io/docs/reference/using-api/server-side-apply: `PATCH` with
//! `Content-Type: application/apply-patch+yaml`, `fieldManager`, `force`,
//! a `resourceVersion` in the applied object makes the apply conditional);
//! Gateway API v1 `HTTPRoute` (gateway-api.sigs.k8s.io/reference/spec:
//! `spec.rules[].backendRefs[]` `name`, `port`, `weight`,
//! `spec.rules[].sessionPersistence`, `spec.rules[].matches[].headers[]`
//! `{type: Exact, name, value}`, at most 16 rules; precedence among matches:
//! exact path, longest prefix, method, "largest number of header matches",
//! kubernetes-sigs/gateway-api `apis/v1/httproute_types.go`); AKS "Use kubelogin with managed
//! identity" (the AKS Microsoft Entra server application
//! `6dae42f8-4368-4678-94ff-3960e28e3630` as the token's resource).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{call_failed, failed, share, Absolute, Split, Traffic, TrafficError};
use crate::domain::ids::Weight;
use crate::domain::rollout::PreviewAddress;
use crate::domain::spec::Target;
use crate::ports::azure::http::{Auth, AzureHttp, Call};
use crate::ports::env::{opt_str, req_str, AdapterEnv, AdapterError};
use crate::ports::reach::{SecretUse, Service};

/// The resource an AKS cluster's Entra ID tokens are issued for.
pub const AKS_RESOURCE: &str = "6dae42f8-4368-4678-94ff-3960e28e3630";
/// The header that reaches the canary in a preview, and its value.
pub const PREVIEW_HEADER: (&str, &str) = ("x-sluice-preview", "canary");
/// An HTTPRoute holds at most this many rules, and a match this many header matches.
const MAX_RULES: usize = 16;
const MAX_HEADER_MATCHES: usize = 16;
/// Server-side apply's content type.
pub const APPLY_CONTENT_TYPE: &str = "application/apply-patch+yaml";

/// One HTTPRoute and the two Services it splits between.
pub struct GatewayApi {
    api: AzureHttp,
    url: String,
    namespace: String,
    route: String,
    stable: String,
    canary: String,
    field_manager: String,
    preview_url: Option<String>,
}

/// Builds the adapter from the target's router settings.
pub fn build(target: &Target, env: &AdapterEnv) -> Result<Arc<dyn Traffic>, AdapterError> {
    let s = &target.router.settings;
    let name = "gatewayApi";
    let config = |message: String| AdapterError::Config { provider: name.into(), message };
    // Where the token goes, and which token, before anything else is read.
    let server = env.endpoint(name, s, "apiServer", Service::Kubernetes)?;
    let server = server.as_str();
    let token_setting = env.secret_name(name, s, "tokenSetting", None, SecretUse::Kubernetes)?;
    let http = match opt_str(s, "caCertificate") {
        Some(pem) => {
            let bad = |why: String| config(format!("caCertificate is not a PEM certificate: {why}"));
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad("no BEGIN CERTIFICATE block".into()));
            }
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
            reqwest::Client::builder()
                .add_root_certificate(ca)
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(std::time::Duration::from_secs(5))
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| config(format!("cannot build a client for the cluster: {e}")))?
        }
        None => env.http.clone(),
    };
    let auth = match token_setting {
        Some(setting) => Auth::Bearer(env.secret(&setting).ok_or_else(|| config(format!("app setting {setting} is not set")))?),
        None => Auth::Entra { credential: env.azure_identity(name)?, resource: AKS_RESOURCE.into() },
    };
    let (namespace, route) = (req_str(name, s, "namespace")?, req_str(name, s, "route")?);
    Ok(Arc::new(Absolute(GatewayApi {
        url: format!("{server}/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes/{route}"),
        api: AzureHttp::with_auth(http, auth, server),
        namespace: namespace.to_string(),
        route: route.to_string(),
        stable: req_str(name, s, "stableService")?.to_string(),
        canary: req_str(name, s, "canaryService")?.to_string(),
        field_manager: opt_str(s, "fieldManager").unwrap_or("sluice").to_string(),
        preview_url: match opt_str(s, "previewUrl") {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => Some(u.trim_end_matches('/').to_string()),
            Some(u) => return Err(config(format!("previewUrl '{u}' is not an http(s) URL"))),
            None => None,
        },
    })))
}

/// Whether a rule is a preview's: every match carries the preview header.
fn is_preview(rule: &Value) -> bool {
    let (name, value) = PREVIEW_HEADER;
    let matches = rule.get("matches").and_then(Value::as_array).cloned().unwrap_or_default();
    !matches.is_empty()
        && matches.iter().all(|m| {
            m.get("headers").and_then(Value::as_array).is_some_and(|headers| {
                headers.iter().any(|h| {
                    h.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name))
                        && h.get("value").and_then(Value::as_str) == Some(value)
                })
            })
        })
}

/// Whether a backendRef is the core Service `name`.
fn is_service(backend: &Value, name: &str) -> bool {
    let kind = backend.get("kind").and_then(Value::as_str).unwrap_or("Service");
    let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
    kind == "Service" && group.is_empty() && backend.get("name").and_then(Value::as_str) == Some(name)
}

impl GatewayApi {
    async fn read(&self) -> Result<Value, TrafficError> {
        Ok(self.api.send(reqwest::Method::GET, &self.url, None).await.map_err(failed)?.body)
    }

    /// Whether a rule routes to both Services.
    fn splits(&self, rule: &Value) -> bool {
        let refs = rule.get("backendRefs").and_then(Value::as_array);
        let has = |name: &str| refs.map(|r| r.iter().any(|b| is_service(b, name))).unwrap_or(false);
        has(&self.stable) && has(&self.canary)
    }

    /// The rules that route to both Services.
    fn split_rules<'a>(&self, route: &'a Value) -> Vec<&'a Value> {
        let rules: Vec<&Value> = route.pointer("/spec/rules").and_then(Value::as_array).map(|r| r.iter().collect()).unwrap_or_default();
        rules.into_iter().filter(|rule| self.splits(rule)).collect()
    }

    fn weight_of(&self, route: &Value) -> Result<Weight, TrafficError> {
        let rule = *self.split_rules(route).first().ok_or_else(|| {
            failed(format!("no rule of HTTPRoute {}/{} routes to both {} and {}", self.namespace, self.route, self.stable, self.canary))
        })?;
        let weight = |name: &str| -> f64 {
            let refs = rule.get("backendRefs").and_then(Value::as_array).cloned().unwrap_or_default();
            // A backendRef without a weight has weight 1.
            refs.iter().filter(|b| is_service(b, name)).map(|b| b.get("weight").and_then(Value::as_f64).unwrap_or(1.0)).sum()
        };
        share(weight(&self.canary), weight(&self.stable))
    }

    /// A splitting rule's preview: its matches, each with the header, to the canary alone.
    fn preview_rule(&self, rule: &Value) -> Value {
        let (name, value) = PREVIEW_HEADER;
        let header = json!({"type": "Exact", "name": name, "value": value});
        let mut matches = rule.get("matches").and_then(Value::as_array).cloned().unwrap_or_default();
        if matches.is_empty() {
            matches.push(json!({"path": {"type": "PathPrefix", "value": "/"}}));
        }
        for m in &mut matches {
            let headers = m.as_object_mut().map(|o| o.entry("headers").or_insert_with(|| json!([])));
            if let Some(list) = headers.and_then(Value::as_array_mut) {
                list.push(header.clone());
            }
        }
        let canary: Vec<Value> = rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|b| is_service(b, &self.canary))
            .map(|b| {
                let mut b = b.clone();
                b.as_object_mut().map(|o| o.remove("weight"));
                b
            })
            .collect();
        let mut preview = rule.clone();
        preview["matches"] = json!(matches);
        preview["backendRefs"] = json!(canary);
        if let Some(o) = preview.as_object_mut() {
            // A rule's name is unique within its route; sessions pin to the split's backends.
            o.remove("name");
            o.remove("sessionPersistence");
        }
        preview
    }

    /// Applies `rules` with the version of `route` read before.
    async fn apply_rules(&self, route: &Value, rules: Value) -> Result<Value, TrafficError> {
        let version = route.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        let body = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": self.route, "namespace": self.namespace, "resourceVersion": version},
            "spec": {"rules": rules}
        });
        let url = format!("{}?fieldManager={}&force=true", self.url, self.field_manager);
        // JSON is YAML: the apply body is sent as JSON under the apply-patch content type.
        let call = Call::new(reqwest::Method::PATCH, &url).body(APPLY_CONTENT_TYPE, body.to_string().into_bytes());
        Ok(self.api.call(&call).await.map_err(call_failed)?.body)
    }

    /// The route's rules without any preview's.
    fn user_rules(route: &Value) -> Vec<Value> {
        route.pointer("/spec/rules").and_then(Value::as_array).into_iter().flatten().filter(|r| !is_preview(r)).cloned().collect()
    }

    async fn write_preview(&self) -> Result<PreviewAddress, TrafficError> {
        let route = self.read().await?;
        let rules = Self::user_rules(&route);
        let previews: Vec<Value> = rules.iter().filter(|r| self.splits(r)).map(|r| self.preview_rule(r)).collect();
        if previews.is_empty() {
            return Err(failed(format!(
                "no rule of HTTPRoute {}/{} routes to both {} and {}",
                self.namespace, self.route, self.stable, self.canary
            )));
        }
        let crowded = previews
            .iter()
            .flat_map(|r| r["matches"].as_array().cloned().unwrap_or_default())
            .any(|m| m["headers"].as_array().is_some_and(|h| h.len() > MAX_HEADER_MATCHES));
        if crowded {
            return Err(failed(format!(
                "a match of HTTPRoute {}/{} already has {MAX_HEADER_MATCHES} header matches: no room for the preview's",
                self.namespace, self.route
            )));
        }
        if previews.len() + rules.len() > MAX_RULES {
            return Err(failed(format!(
                "a preview needs {} more rules and HTTPRoute {}/{} has {}: a route holds at most {MAX_RULES}",
                previews.len(),
                self.namespace,
                self.route,
                rules.len()
            )));
        }
        let host = route.pointer("/spec/hostnames/0").and_then(Value::as_str);
        let url = match (&self.preview_url, host) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) if !host.starts_with('*') => format!("https://{host}"),
            _ => return Err(failed("the route has no host name to reach it by; set previewUrl in the router settings")),
        };
        let applied = self.apply_rules(&route, json!(previews.into_iter().chain(rules).collect::<Vec<_>>())).await?;
        if !Self::has_preview(&applied) {
            return Err(failed("the API server did not keep the preview rules"));
        }
        let (name, value) = PREVIEW_HEADER;
        Ok(PreviewAddress {
            url,
            headers: [(name.to_string(), value.to_string())].into(),
            how: format!("requests carrying {name}: {value} go to {} alone, by a rule that the next weight change removes", self.canary),
        })
    }

    fn has_preview(route: &Value) -> bool {
        route.pointer("/spec/rules").and_then(Value::as_array).is_some_and(|rules| rules.iter().any(is_preview))
    }

    async fn write_split(&self, canary: Weight) -> Result<Weight, TrafficError> {
        let route = self.read().await?;
        self.weight_of(&route)?;
        // A preview ends with the next change of the split.
        let mut rules = json!(Self::user_rules(&route));
        // Only the rules that split between the two Services change.
        for rule in rules.as_array_mut().into_iter().flatten().filter(|rule| self.splits(rule)) {
            for backend in rule.get_mut("backendRefs").and_then(Value::as_array_mut).into_iter().flatten() {
                if is_service(backend, &self.canary) {
                    backend["weight"] = json!(canary.percent());
                } else if is_service(backend, &self.stable) {
                    backend["weight"] = json!(100 - canary.percent());
                }
            }
        }
        let applied = self.apply_rules(&route, rules).await?;
        self.weight_of(&applied)
    }
}

#[async_trait]
impl Split for GatewayApi {
    async fn apply(&self, weight: Weight) -> Result<Weight, TrafficError> {
        self.write_split(weight).await
    }

    async fn weight(&self) -> Result<Weight, TrafficError> {
        self.weight_of(&self.read().await?)
    }

    async fn preview(&self) -> Result<PreviewAddress, TrafficError> {
        self.write_preview().await
    }

    async fn caveats(&self) -> Vec<String> {
        let Ok(route) = self.read().await else { return Vec::new() };
        let pinned = self.split_rules(&route).iter().any(|rule| rule.get("sessionPersistence").map(|v| !v.is_null()).unwrap_or(false));
        if pinned {
            vec!["gatewayApi: the route has sessionPersistence, so clients keep the backend their session names until it expires".into()]
        } else {
            Vec::new()
        }
    }
}
