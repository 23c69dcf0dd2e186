//! The provider names every port's registry knows, gathered for spec
//! validation so an unknown `provider:` is rejected before anything moves
//! instead of failing mid-rollout; and the deployment's own check of a spec:
//! every adapter it names is built (never called) under the rules of
//! [`crate::ports::reach`], so a field that would send a credential
//! elsewhere, or name a setting specs may not name, is refused at the edge.

use serde_json::Value;

use crate::domain::release::spec::ReleaseSpec;
use crate::domain::rollout::Plan;
use crate::domain::spec::{self, Problem, Problems, ProviderNames, RolloutSpec};
use crate::ports::env::{AdapterEnv, Refused, Settings};
use crate::ports::{backlog, metrics, notify, traffic};

fn names_of<F>(registry: &[(&'static str, F)]) -> Vec<&'static str> {
    registry.iter().map(|(name, _)| *name).collect()
}

/// Names accepted in specs, per port.
pub fn names() -> ProviderNames {
    ProviderNames {
        traffic: names_of(crate::ports::traffic::PROVIDERS),
        metrics: names_of(crate::ports::metrics::PROVIDERS),
        backlog: names_of(crate::ports::backlog::PROVIDERS),
        notify: names_of(crate::ports::notify::PROVIDERS),
        no_preview: crate::ports::traffic::NO_PREVIEW.to_vec(),
    }
}

/// A rollout spec as this deployment accepts it: the spec's own rules,
/// then the deployment's rules on where its credentials go.
pub fn validate(doc: &Value, env: &AdapterEnv) -> Result<(RolloutSpec, Plan), Problems> {
    let (spec, plan) = spec::validate(doc, &names())?;
    match refusals(doc, &spec, env) {
        found if found.is_empty() => Ok((spec, plan)),
        found => Err(Problems::new(found)),
    }
}

/// A release spec as this deployment accepts it: each target's composed
/// rollout spec checked as [`validate`] checks a rollout's, at its path in
/// the release document.
pub fn validate_release(doc: &Value, env: &AdapterEnv) -> Result<(ReleaseSpec, Vec<Vec<Plan>>), Problems> {
    let (release, plans) = crate::domain::release::spec::validate(doc, &names())?;
    let mut found: Vec<Problem> = Vec::new();
    if let Some(b) = &release.backlog {
        let mut audit = Audit::new(env);
        audit.built(backlog::build(&b.provider, &b.settings, &audit.env), "backlog");
        found = audit.found;
    }
    for (w, wave) in release.waves.iter().enumerate() {
        for t in 0..wave.targets.len() {
            let Some(rollout) = release.rollout_spec(w, t) else { continue };
            let Ok(rollout_doc) = serde_json::to_value(&rollout) else { continue };
            for p in refusals(&rollout_doc, &rollout, env) {
                let p = Problem { path: crate::domain::release::spec::release_path(&p.path, w, t), message: p.message };
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
    }
    if found.is_empty() {
        Ok((release, plans))
    } else {
        Err(Problems::new(found))
    }
}

/// What the deployment's rules refuse in a validated spec, by path.
pub fn refusals(doc: &Value, spec: &RolloutSpec, env: &AdapterEnv) -> Vec<Problem> {
    let mut audit = Audit::new(env);
    audit.built(traffic::build(&spec.target, &audit.env), "target.router");
    if let Some(b) = &spec.backlog {
        audit.built(backlog::build(&b.provider, &b.settings, &audit.env), "backlog");
    }
    for (i, channel) in spec.notifications.iter().enumerate() {
        audit.built(notify::build(&channel.provider, &channel.settings, &audit.env), &format!("notifications[{i}]"));
    }
    let mut measured = Vec::new();
    metric_settings(doc, String::new(), &mut measured);
    for (path, provider, settings) in measured {
        audit.built(metrics::build(&provider, &settings, &spec.target, &audit.env), &path);
    }
    audit.found
}

/// Adapters built in an auditing environment, and what the rules refused.
struct Audit {
    env: AdapterEnv,
    sink: std::sync::Arc<std::sync::Mutex<Vec<Refused>>>,
    found: Vec<Problem>,
}

impl Audit {
    fn new(env: &AdapterEnv) -> Audit {
        let (env, sink) = env.auditing();
        Audit { env, sink, found: Vec::new() }
    }

    /// Collects the refusals of the adapter just built (and drops it unused)
    /// at `at`'s settings.
    fn built<T, E>(&mut self, _adapter: Result<T, E>, at: &str) {
        let refused: Vec<Refused> = self.sink.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default();
        for r in refused {
            let p = Problem { path: format!("{at}.settings.{}", r.field), message: r.message };
            if !self.found.contains(&p) {
                self.found.push(p);
            }
        }
    }
}

/// Every object with provider settings that is not the router, the backlog
/// or a channel: a metric (inline, in a template, background) or the
/// rollback check. A metric from Sluice's catalogue takes its provider and
/// settings from there, merged with the spec's.
fn metric_settings(value: &Value, path: String, out: &mut Vec<(String, String, Settings)>) {
    match value {
        Value::Object(obj) => {
            let not_metric = path == "target.router" || path == "backlog" || path.starts_with("notifications[");
            if let (false, Some(Value::Object(_))) = (not_metric, obj.get("settings")) {
                if let Some((provider, settings)) = provider_of(value) {
                    out.push((path.clone(), provider, settings));
                }
            }
            for (key, child) in obj {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                metric_settings(child, at, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                metric_settings(item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn provider_of(value: &Value) -> Option<(String, Settings)> {
    let own: Settings = serde_json::from_value(value.get("settings")?.clone()).ok()?;
    if let Some(provider) = value.get("provider").and_then(Value::as_str) {
        if value.get("template").is_none() {
            return Some((provider.to_string(), own));
        }
    }
    let metric: spec::Metric = serde_json::from_value(value.clone()).ok()?;
    let resolved = spec::catalog::resolve(&metric).ok()?;
    Some((resolved.provider?, resolved.settings))
}
