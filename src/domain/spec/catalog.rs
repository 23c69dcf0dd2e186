//! Ready-made metrics for what teams measure, so a spec can say
//! `{"name": "errors", "template": "appinsights-error-rate", "settings": {"appId": "…"}}`
//! and write no KQL or PromQL. A template fills the provider, the queries and
//! the rule; `{{name}}` is each side's name (App Insights `cloud_RoleName`,
//! a Prometheus `service` label), so canary and stable are measured alike.
//! Whatever the spec writes next to `template` wins; settings merge key by key.

use serde_json::{json, Map, Value};

use super::Metric;

/// A named metric and what it is for.
pub struct Template {
    /// The name a spec uses.
    pub name: &'static str,
    /// One line for `sluice templates`.
    pub about: &'static str,
    /// The settings the team must add (resource identities).
    pub needs: &'static [&'static str],
    fields: fn() -> Value,
}

/// The catalogue, in the order `sluice templates` prints it.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "appinsights-error-rate",
        about: "share of failed requests per cloud_RoleName, below 1 %",
        needs: &["appId"],
        fields: || {
            json!({"provider": "applicationInsights", "successCondition": "< 0.01", "minSampleSize": 50,
                   "query": "requests | where cloud_RoleName == '{{name}}' | summarize value = todouble(countif(success == false)) / count(), samples = count()"})
        },
    },
    Template {
        name: "appinsights-p95-latency",
        about: "95th percentile request duration (ms) per cloud_RoleName, within 1.2 × stable + 50 ms",
        needs: &["appId"],
        fields: || {
            json!({"provider": "applicationInsights", "successCondition": "< 2000", "minSampleSize": 50,
                   "baseline": {"factor": 1.2, "slack": 50},
                   "query": "requests | where cloud_RoleName == '{{name}}' | summarize value = percentile(duration, 95), samples = count()"})
        },
    },
    Template {
        name: "appinsights-exceptions",
        about: "exceptions thrown per cloud_RoleName in the window, none tolerated",
        needs: &["appId"],
        fields: || {
            json!({"provider": "applicationInsights", "successCondition": "< 1",
                   "query": "exceptions | where cloud_RoleName == '{{name}}' | summarize value = count()"})
        },
    },
    Template {
        name: "appinsights-health",
        about: "share of successful /health requests per cloud_RoleName, at least 99 %",
        needs: &["appId"],
        fields: || {
            json!({"provider": "applicationInsights", "successCondition": ">= 0.99",
                   "query": "requests | where cloud_RoleName == '{{name}}' and name has 'health' | summarize value = avg(iff(success == true, 1.0, 0.0)), samples = count()"})
        },
    },
    Template {
        name: "appinsights-errors-vs-stable",
        about: "canary vs stable failed requests per cloud_RoleName, statistically (two-proportion / Fisher)",
        needs: &["appId"],
        fields: || {
            json!({"provider": "applicationInsights", "minSampleSize": 50, "judge": {"test": "errorRate",
                   "failures": "requests | where cloud_RoleName == '{{name}}' | summarize value = countif(success == false)",
                   "requests": "requests | where cloud_RoleName == '{{name}}' | summarize value = count()"}})
        },
    },
    Template {
        name: "prometheus-error-ratio",
        about: "5xx share of http_requests_total{service} over the window, below 1 %",
        needs: &["url"],
        fields: || {
            json!({"provider": "prometheus", "successCondition": "< 0.01", "minSampleSize": 50,
                   "query": "sum(rate(http_requests_total{service=\"{{name}}\",code=~\"5..\"}[{{window}}])) / sum(rate(http_requests_total{service=\"{{name}}\"}[{{window}}]))",
                   "sampleQuery": "sum(increase(http_requests_total{service=\"{{name}}\"}[{{window}}]))"})
        },
    },
    Template {
        name: "prometheus-latency-p95",
        about: "histogram_quantile(0.95) of http_request_duration_seconds{service}, within 1.2 × stable + 0.05 s",
        needs: &["url"],
        fields: || {
            json!({"provider": "prometheus", "successCondition": "< 2", "baseline": {"factor": 1.2, "slack": 0.05},
                   "query": "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{service=\"{{name}}\"}[{{window}}])))"})
        },
    },
    Template {
        name: "prometheus-errors-vs-stable",
        about: "canary vs stable 5xx counts of http_requests_total{service}, statistically",
        needs: &["url"],
        fields: || {
            json!({"provider": "prometheus", "minSampleSize": 50, "judge": {"test": "errorRate",
                   "failures": "sum(increase(http_requests_total{service=\"{{name}}\",code=~\"5..\"}[{{window}}]))",
                   "requests": "sum(increase(http_requests_total{service=\"{{name}}\"}[{{window}}]))"}})
        },
    },
    Template {
        name: "prometheus-latency-vs-stable",
        about: "canary vs stable http_request_duration_seconds buckets, Mann-Whitney U",
        needs: &["url"],
        fields: || {
            json!({"provider": "prometheus", "minSampleSize": 50, "judge": {"test": "latency",
                   "histogram": "sum by (le) (increase(http_request_duration_seconds_bucket{service=\"{{name}}\"}[{{window}}]))"}})
        },
    },
    Template {
        name: "azuremonitor-http5xx",
        about: "App Service Http5xx / Requests of the slot, below 1 % (resourceId with {{name}} for the slot)",
        needs: &["resourceId"],
        fields: || {
            json!({"provider": "azureMonitor", "query": "Http5xx/Requests", "successCondition": "< 0.01", "minSampleSize": 50,
                   "settings": {"aggregation": "Total"}})
        },
    },
    Template {
        name: "azuremonitor-response-time",
        about: "App Service average HttpResponseTime (s; the successor of AverageResponseTime), within 1.2 × stable + 0.05 s",
        needs: &["resourceId"],
        fields: || {
            json!({"provider": "azureMonitor", "query": "HttpResponseTime", "successCondition": "< 2",
                   "baseline": {"factor": 1.2, "slack": 0.05}, "settings": {"aggregation": "Average"}})
        },
    },
    Template {
        name: "local-errors-vs-stable",
        about: "the local router's canary vs stable errors, statistically (demo and tests)",
        needs: &[],
        fields: || json!({"provider": "local", "judge": {"test": "errorRate", "failures": "error_count", "requests": "request_count"}}),
    },
    Template {
        name: "local-latency-vs-stable",
        about: "the local router's canary vs stable latency buckets, Mann-Whitney U (demo and tests)",
        needs: &[],
        fields: || json!({"provider": "local", "judge": {"test": "latency", "histogram": "latency_histogram"}}),
    },
];

/// The template with this name.
pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// The names, for error messages.
pub fn names() -> String {
    TEMPLATES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// A metric with its template's fields filled in under what it wrote itself.
pub fn resolve(metric: &Metric) -> Result<Metric, String> {
    let Some(name) = &metric.template else { return Ok(metric.clone()) };
    let template = find(name).ok_or_else(|| format!("no metric template named '{name}' (known: {})", names()))?;
    let mut merged = (template.fields)();
    let own = serde_json::to_value(metric).map_err(|e| e.to_string())?;
    if let (Some(base), Value::Object(own)) = (merged.as_object_mut(), own) {
        for (key, value) in own {
            match (key.as_str(), base.get_mut("settings"), &value) {
                ("settings", Some(Value::Object(settings)), Value::Object(written)) => {
                    settings.extend(written.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                _ => {
                    base.insert(key, value);
                }
            }
        }
        base.remove("template");
    }
    let mut resolved: Metric = serde_json::from_value(merged).map_err(|e| format!("template '{name}' does not fit this metric: {e}"))?;
    resolved.template = None;
    let missing: Vec<&str> = template.needs.iter().copied().filter(|k| !resolved.settings.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(format!("template '{name}' needs settings.{}", missing.join(", settings.")));
    }
    Ok(resolved)
}

/// Every template as JSON, for `sluice templates --json`.
pub fn describe() -> Value {
    Value::Array(
        TEMPLATES
            .iter()
            .map(|t| {
                let mut m = Map::new();
                m.insert("name".into(), json!(t.name));
                m.insert("about".into(), json!(t.about));
                m.insert("needsSettings".into(), json!(t.needs));
                m.insert("fields".into(), (t.fields)());
                Value::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(v: Value) -> Metric {
        serde_json::from_value(v).expect("a metric")
    }

    #[test]
    fn a_template_fills_what_the_metric_leaves_out_and_yields_to_what_it_writes() {
        let m = metric(json!({"name": "errors", "template": "appinsights-error-rate", "successCondition": "< 0.02",
                              "settings": {"appId": "app-1"}}));
        let r = resolve(&m).expect("resolves");
        assert_eq!(r.provider.as_deref(), Some("applicationInsights"));
        assert_eq!(r.success_condition.as_deref(), Some("< 0.02"), "the spec's own condition wins");
        assert!(r.query.as_deref().unwrap_or("").contains("cloud_RoleName == '{{name}}'"));
        assert_eq!(r.min_sample_size, Some(50));
        assert_eq!(r.template, None);
    }

    #[test]
    fn settings_merge_and_missing_identities_are_named() {
        let m = metric(json!({"name": "5xx", "template": "azuremonitor-http5xx", "settings": {"resourceId": "/sub/x/slots/{{name}}"}}));
        let r = resolve(&m).expect("resolves");
        assert_eq!(r.settings.get("aggregation"), Some(&json!("Total")));
        assert_eq!(r.settings.get("resourceId"), Some(&json!("/sub/x/slots/{{name}}")));
        let bare = metric(json!({"name": "5xx", "template": "azuremonitor-http5xx"}));
        assert_eq!(resolve(&bare).err().as_deref(), Some("template 'azuremonitor-http5xx' needs settings.resourceId"));
        let unknown = metric(json!({"name": "x", "template": "nope"}));
        assert!(resolve(&unknown).err().unwrap_or_default().starts_with("no metric template named 'nope' (known: appinsights-error-rate"));
    }

    #[test]
    fn every_template_resolves_to_a_complete_metric() {
        for t in TEMPLATES {
            let settings: Map<String, Value> = t.needs.iter().map(|k| (k.to_string(), json!("x"))).collect();
            let r = resolve(&metric(json!({"name": "m", "template": t.name, "settings": settings}))).expect(t.name);
            assert!(r.provider.is_some(), "{}", t.name);
            assert!(r.judge.is_some() || (r.query.is_some() && r.success_condition.is_some()), "{} has a rule", t.name);
        }
    }
}
