//! The release spec: one version, rolled out wave by wave (rings, regions).
//! Each wave's targets are ordinary rollout targets; the shared parts
//! (analysis templates, policy, notifications) are written once. A target's
//! rollout spec is composed from them and checked by the rollout spec's own
//! validation, so a release accepts exactly what a rollout would, and every
//! problem is reported at its path in the release document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::ids::{Span, TargetName, Weight};
use crate::domain::rollout::{Plan, Stage};
use crate::domain::spec::{
    against_schema, AnalysisTemplate, ApprovalGate, BacklogRef, ChannelRef, Policy, Problem, Problems, ProviderNames, RolloutSpec,
    Strategy, Target,
};

/// One version across ordered waves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Sluice release spec")]
pub struct ReleaseSpec {
    /// What is released (a product or service name), for lists and the backlog issue.
    pub name: TargetName,
    /// The one version every target's canary carries.
    #[schemars(length(min = 1))]
    pub version: String,
    /// The waves, in order: a wave starts when the one before it has finished, baked and passed its gate.
    #[schemars(length(min = 1, max = 20))]
    pub waves: Vec<WaveSpec>,
    /// What a failure does to the waves already promoted.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Named analyses that every wave's steps may refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub analysis_templates: Vec<AnalysisTemplate>,
    /// Alert and inconclusive policy for every target's rollout.
    #[serde(default)]
    pub policy: Policy,
    /// Where the release's one issue goes when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogRef>,
    /// Where people hear about every target's rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub notifications: Vec<ChannelRef>,
}

/// One wave: its targets roll out together, each with the wave's strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaveSpec {
    /// The wave's name (`ring-0`, `eastus`).
    #[schemars(extend("x-sluice-format" = "name"))]
    pub name: String,
    /// The targets of this wave, each a target as a rollout spec writes it.
    #[schemars(length(min = 1, max = 50))]
    pub targets: Vec<Target>,
    /// How each target's traffic moves: `canary` steps or `blueGreen`.
    pub strategy: Strategy,
    /// After its steps, how long each target serves everyone on the new
    /// version, alerts still rolling it back, before it is promoted and the
    /// next wave may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Span>,
    /// People who must approve before the next wave starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
}

/// The failure policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnFailure {
    /// `stay` (default: they have baked) or `rollBack` (put them back on the stable version too).
    #[serde(default)]
    pub earlier_waves: EarlierWaves,
}

/// What happens to promoted targets when a later target fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EarlierWaves {
    /// They keep the new version.
    #[default]
    Stay,
    /// They are put back on their stable version.
    RollBack,
}

/// The JSON Schema of [`ReleaseSpec`], as committed under `schema/`.
pub fn json_schema() -> Value {
    schemars::schema_for!(ReleaseSpec).to_value()
}

/// Whether a document is a release rather than a rollout spec (it has `waves`).
pub fn is_release(doc: &Value) -> bool {
    doc.get("waves").is_some()
}

impl ReleaseSpec {
    /// The rollout spec of one target, as its rollout runs it: the wave's
    /// strategy, the shared parts, no backlog of its own (the release files one issue).
    pub fn rollout_spec(&self, wave: usize, target: usize) -> Option<RolloutSpec> {
        let w = self.waves.get(wave)?;
        Some(RolloutSpec {
            target: w.targets.get(target)?.clone(),
            strategy: w.strategy.clone(),
            analysis_templates: self.analysis_templates.clone(),
            policy: self.policy.clone(),
            backlog: None,
            notifications: self.notifications.clone(),
        })
    }

    /// Every target of every wave: (wave, target index, target).
    pub fn targets(&self) -> impl Iterator<Item = (usize, usize, &Target)> {
        self.waves.iter().enumerate().flat_map(|(w, wave)| wave.targets.iter().enumerate().map(move |(t, target)| (w, t, target)))
    }
}

/// Adds a bake to a compiled plan: before promotion, everyone on the new
/// version for `ms`, so an alert in that time is an ordinary rollback.
pub fn with_bake(mut plan: Plan, ms: u64) -> Plan {
    let Some(promote) = plan.stages.iter().position(|s| matches!(s, Stage::Promote)) else { return plan };
    let mut added = Vec::new();
    let last_weight = plan.stages[..promote].iter().rev().find_map(|s| match s {
        Stage::SetWeight { weight } => Some(*weight),
        _ => None,
    });
    if last_weight != Some(Weight::FULL) {
        added.push(Stage::SetWeight { weight: Weight::FULL });
    }
    added.push(Stage::Pause { duration_ms: Some(ms) });
    plan.stages.splice(promote..promote, added);
    plan
}

/// Checks a release document: the schema, then each target's composed
/// rollout spec, then what only a release can get wrong. Every problem at
/// once, at its path in the release document.
pub fn validate(doc: &Value, providers: &ProviderNames) -> Result<(ReleaseSpec, Vec<Vec<Plan>>), Problems> {
    // Every problem at once: the release-wide checks read the document, so they run beside the
    // schema's; the targets' own checks need the typed spec, so a schema problem stops before them.
    let mut problems = against_schema(&json_schema(), doc, providers);
    let schema_found = !problems.is_empty();
    for p in cross_checks(doc) {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    if schema_found {
        return Err(Problems::new(problems));
    }
    let spec: ReleaseSpec =
        serde_json::from_value(doc.clone()).map_err(|e| Problems::one("", format!("does not match the release types: {e}")))?;
    let mut plans = Vec::new();
    for (w, wave) in spec.waves.iter().enumerate() {
        let mut wave_plans = Vec::new();
        for (t, _) in wave.targets.iter().enumerate() {
            match compose(&spec, w, t, providers) {
                Ok(plan) => wave_plans.push(plan),
                Err(found) => {
                    for p in found {
                        if !problems.contains(&p) {
                            problems.push(p);
                        }
                    }
                }
            }
        }
        plans.push(wave_plans);
    }
    if !problems.is_empty() {
        return Err(Problems::new(problems));
    }
    Ok((spec, plans))
}

/// One target's plan, bake included; its problems at release paths.
fn compose(spec: &ReleaseSpec, w: usize, t: usize, providers: &ProviderNames) -> Result<Plan, Vec<Problem>> {
    let Some(rollout) = spec.rollout_spec(w, t) else {
        return Err(vec![Problem { path: format!("waves[{w}]"), message: "missing".into() }]);
    };
    let doc = serde_json::to_value(&rollout).unwrap_or_else(|_| json!({}));
    match crate::domain::spec::validate(&doc, providers) {
        Ok((_, plan)) => Ok(match spec.waves[w].bake.as_ref() {
            Some(bake) => with_bake(plan, bake.ms()),
            None => plan,
        }),
        Err(problems) => Err(problems.iter().map(|p| Problem { path: release_path(&p.path, w, t), message: p.message.clone() }).collect()),
    }
}

/// Where a problem of a composed rollout spec sits in the release document.
pub fn release_path(path: &str, w: usize, t: usize) -> String {
    for (field, to) in [("target", format!("waves[{w}].targets[{t}]")), ("strategy", format!("waves[{w}].strategy"))] {
        if path == field {
            return to;
        }
        if let Some(rest) = path.strip_prefix(field).filter(|r| r.starts_with('.') || r.starts_with('[')) {
            return format!("{to}{rest}");
        }
    }
    path.to_string()
}

/// One version, unique names, gates only where a next wave follows. Read
/// from the document, not the typed spec, so they are found even when the
/// schema finds something else; what is missing or mistyped is the schema's.
fn cross_checks(doc: &Value) -> Vec<Problem> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let waves = doc.get("waves").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let version = text(doc, "version");
    let mut problems = Vec::new();
    let mut seen_waves: Vec<String> = Vec::new();
    let mut seen_targets: Vec<(String, usize)> = Vec::new();
    for (w, wave) in waves.iter().enumerate() {
        if let Some(name) = text(wave, "name") {
            if seen_waves.contains(&name) {
                problems.push(Problem { path: format!("waves[{w}].name"), message: format!("'{name}' names an earlier wave too") });
            }
            seen_waves.push(name);
        }
        if wave.get("approval").is_some_and(|a| !a.is_null()) && w + 1 == waves.len() {
            problems.push(Problem {
                path: format!("waves[{w}].approval"),
                message: "the last wave has no next wave to gate; put the approval in its steps".into(),
            });
        }
        let targets = wave.get("targets").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (t, target) in targets.iter().enumerate() {
            let canary = target.get("canary").and_then(|c| text(c, "version"));
            if let (Some(canary), Some(version)) = (canary, version.as_ref()) {
                if canary != *version {
                    problems.push(Problem {
                        path: format!("waves[{w}].targets[{t}].canary.version"),
                        message: format!("'{canary}' is not the release's version '{version}'"),
                    });
                }
            }
            let Some(name) = text(target, "name") else { continue };
            if let Some((_, earlier)) = seen_targets.iter().find(|(seen, _)| *seen == name) {
                problems.push(Problem {
                    path: format!("waves[{w}].targets[{t}].name"),
                    message: format!("'{name}' is already a target of waves[{earlier}]; a target is released once"),
                });
            }
            seen_targets.push((name, w));
        }
    }
    problems
}
