//! The rollout spec: what a pipeline posts to say "roll out v2 of this API".
//!
//! The types here are the single source of truth: serde reads them, schemars
//! turns them into the JSON Schema committed under `schema/`, and
//! [`validate`] checks a document against that same schema (so the schema
//! cannot drift from what is accepted) before the cross-field checks and the
//! compilation into a [`crate::domain::rollout::Plan`]. Modelled on Argo Rollouts'
//! `canary.steps` and `blueGreen` so its users feel at home.

pub mod catalog;
mod check;
pub use check::{against_schema, check_name};
mod condition;
mod duration;
pub mod placeholders;
mod problems;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use condition::{Comparison, Condition};
pub use duration::{format_duration_ms as duration_text, parse_duration_ms};
pub use problems::{Problem, Problems};

use crate::domain::ids::{Span, TargetName, Weight};
use crate::domain::rollout::Plan;

/// A complete rollout request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Sluice rollout spec")]
pub struct RolloutSpec {
    /// What is being rolled out and the router that moves its traffic.
    pub target: Target,
    /// How traffic moves: `canary` steps or a `blueGreen` swap.
    pub strategy: Strategy,
    /// Named analyses that steps refer to by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub analysis_templates: Vec<AnalysisTemplate>,
    /// What to do on alerts and inconclusive analysis, and the error-budget gate.
    #[serde(default)]
    pub policy: Policy,
    /// Where the issue goes when the rollout fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogRef>,
    /// Where people hear about the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub notifications: Vec<ChannelRef>,
}

/// The service being rolled out: one active rollout per target at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Stable name of the service (letters, digits, `-`, `_`, `.`); alerts and
    /// the one-active-rollout rule key on it.
    pub name: TargetName,
    /// The router that splits traffic between the two versions.
    pub router: RouterRef,
    /// The version serving users now.
    pub stable: VersionRef,
    /// The version being rolled out.
    pub canary: VersionRef,
    /// Azure resource ids (app, slots) whose alerts concern this target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_ids: Vec<String>,
}

/// One side of the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionRef {
    /// Identity at the router: a slot name, an upstream name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The release being served, e.g. `v2` or a build number.
    #[schemars(length(min = 1))]
    pub version: String,
}

/// A traffic router and its provider-specific settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterRef {
    /// Registered traffic provider, e.g. `local`.
    #[schemars(extend("x-sluice-provider" = "traffic"))]
    pub provider: String,
    /// Provider settings; secrets are referenced by app-setting name, never inline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
}

/// A backlog (issue tracker) and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BacklogRef {
    /// Registered backlog provider, e.g. `local`.
    #[schemars(extend("x-sluice-provider" = "backlog"))]
    pub provider: String,
    /// Provider settings; secrets are referenced by app-setting name, never inline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
}

/// A notification channel and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelRef {
    /// Registered notification provider, e.g. `console`.
    #[schemars(extend("x-sluice-provider" = "notify"))]
    pub provider: String,
    /// Provider settings; secrets are referenced by app-setting name, never inline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
}

/// How traffic moves from stable to canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Strategy {
    /// Weighted steps, as in Argo Rollouts' `canary.steps`.
    Canary(CanaryStrategy),
    /// Preview, then an all-at-once switch, as in Argo Rollouts' `blueGreen`.
    BlueGreen(BlueGreenStrategy),
}

/// Canary: the steps run in order; after the last one the canary is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The steps, run in order.
    #[schemars(length(min = 1, max = 100))]
    pub steps: Vec<CanaryStep>,
    /// Background analysis that runs across all steps until promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRef>,
    /// After promotion, how long to keep the previous version before the
    /// router scales it down (a Container Apps revision is deactivated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Span>,
}

/// One canary step: exactly one of the keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CanaryStep {
    /// Send this percentage of traffic to the canary.
    SetWeight(Weight),
    /// Hold for a duration, or (without one) until someone resumes the rollout.
    Pause(PauseStep),
    /// Run an analysis and wait for its verdict.
    Analysis(AnalysisRef),
    /// Wait for people to approve.
    Approval(ApprovalGate),
    /// Let testers and a smoke check reach the canary before any user does.
    Preview(PreviewStep),
}

/// A look at the canary at 0 %: the router's own way to reach it (App
/// Service's slot address, a Container Apps label's address, a Gateway API
/// header match, the local router's header), then a smoke check, a
/// person's approval, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewStep {
    /// Probes the preview address; the rollout moves on once it passes and
    /// rolls back if no attempt does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<SmokeCheck>,
    /// People who look at the preview and approve it. Without a check, one
    /// approval from anyone is needed unless this says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
}

/// An HTTP smoke check of the preview: the first attempt that answers as
/// expected passes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmokeCheck {
    /// Path and query on the preview address, e.g. `/healthz`.
    #[serde(default = "root_path")]
    #[schemars(length(min = 1, max = 2000), extend("x-sluice-format" = "url-path"))]
    pub path: String,
    /// The status the canary must answer.
    #[serde(default = "ok_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: u16,
    /// Text the answer's body must contain, e.g. the new version's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub body_contains: Option<String>,
    /// Tries before the check fails (a canary may still be warming up).
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 20))]
    pub attempts: u32,
    /// Between tries.
    #[serde(default = "ten_seconds")]
    pub interval: Span,
    /// How long one try may take.
    #[serde(default = "five_seconds")]
    pub timeout: Span,
}

impl Default for SmokeCheck {
    fn default() -> Self {
        SmokeCheck {
            path: root_path(),
            expect_status: ok_status(),
            body_contains: None,
            attempts: three(),
            interval: ten_seconds(),
            timeout: five_seconds(),
        }
    }
}

fn root_path() -> String {
    "/".into()
}

fn ok_status() -> u16 {
    200
}

fn three() -> u32 {
    3
}

fn ten_seconds() -> Span {
    Span::of_ms(10_000)
}

fn five_seconds() -> Span {
    Span::of_ms(5_000)
}

/// A pause: timed, or until resumed with `promote` or `approve`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// How long to hold, e.g. `30s`, `5m`; absent means until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Span>,
}

/// An approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalGate {
    /// How many distinct people must approve.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_approvers: u32,
    /// Who may approve or reject; empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Whether the person who started the rollout may approve it.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// How long to wait before `onTimeout` applies; absent waits forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
    /// What happens when nobody decides in time.
    #[serde(default)]
    pub on_timeout: TimeoutAction,
}

fn one() -> u32 {
    1
}

/// One approval from anyone but the initiator, waiting as long as it takes.
impl Default for ApprovalGate {
    fn default() -> Self {
        ApprovalGate {
            min_approvers: one(),
            approvers: Vec::new(),
            allow_self_approval: false,
            timeout: None,
            on_timeout: TimeoutAction::default(),
        }
    }
}

/// What an approval timeout does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimeoutAction {
    /// Put traffic back on stable and open a backlog issue.
    #[default]
    Rollback,
    /// Put traffic back on stable quietly (no backlog issue).
    Abort,
    /// Carry on as if approved.
    Proceed,
}

/// Blue-green: preview, optional checks, switch, bake, promote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// The router shows the new version to testers (and a smoke check)
    /// first, as a canary `preview` step does.
    // Boxed: large, and rarely set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Box<PreviewStep>>,
    /// Analysis of the preview before any user traffic reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisRef>,
    /// People who must approve the switch (exclusive with `autoPromoteAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGate>,
    /// Switch automatically after this long (exclusive with `approval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote_after: Option<Span>,
    /// Analysis while all traffic is on the new version, before the swap is made permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisRef>,
    /// How long the previous version stays ready for a fast switch back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<Span>,
}

/// An analysis: named templates and/or inline metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisRef {
    /// Names of `analysisTemplates` to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub templates: Vec<String>,
    /// Metrics defined right here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub metrics: Vec<Metric>,
}

/// A named, reusable set of metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplate {
    /// How steps refer to it.
    #[schemars(extend("x-sluice-format" = "name"))]
    pub name: String,
    /// The metrics it measures.
    #[schemars(length(min = 1, max = 20))]
    pub metrics: Vec<Metric>,
}

/// One measured health signal and the rule it must satisfy: a threshold on
/// a query (`query` + `successCondition`, optionally against the stable
/// baseline), or a statistical comparison with stable (`judge`), or a
/// ready-made metric from Sluice's catalogue (`template`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metric {
    /// Unique within its analysis.
    #[schemars(extend("x-sluice-format" = "name"))]
    pub name: String,
    /// A ready-made metric (`appinsights-error-rate`, `prometheus-latency-vs-stable`, …;
    /// `sluice templates` lists them); the fields written here override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-format" = "name"))]
    pub template: Option<String>,
    /// Registered metrics provider, e.g. `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-provider" = "metrics"))]
    pub provider: Option<String>,
    /// Provider query; `{{name}}`, `{{version}}` and `{{window}}` are filled in per side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub query: Option<String>,
    /// Provider settings (endpoints); secrets by app-setting name only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
    /// The rule a measurement must meet, e.g. `< 0.01` or `>= 0.99`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-sluice-format" = "condition"))]
    pub success_condition: Option<String>,
    /// Compare the canary with stable statistically instead of a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,
    /// Time between measurements (and the query window).
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// Measurements to take; default 1 in a step, unlimited in background analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Wait before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Span>,
    /// Failed measurements tolerated; one more fails the analysis (default 0,
    /// or no limit when `consecutiveFailureLimit` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Failed measurements in a row tolerated; one more fails the analysis.
    /// "Above the threshold for N consecutive minutes" is `interval: 1m` with
    /// `consecutiveFailureLimit: N - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_limit: Option<u32>,
    /// Consecutive provider errors tolerated; one more fails the analysis.
    #[serde(default = "default_consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the analysis inconclusive.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Fewer canary requests than this make a measurement inconclusive, never
    /// a pass; with `maxSoak`, the phase waits for them instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample_size: Option<u64>,
    /// Query giving the sample count, for providers that do not report one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_query: Option<String>,
    /// With `minSampleSize`: how long a phase may extend its soak, measuring
    /// over everything since it began, until the canary has seen enough requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_soak: Option<Span>,
    /// Also compare the canary with the stable version measured the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// A statistical comparison of canary and stable over the same window. Each
/// decides pass (the data rule out a harm beyond the tolerance), fail
/// (significantly worse, beyond the tolerance) or inconclusive (not enough data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "test", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Judge {
    /// Failures over requests per side: two-proportion z-test, Fisher's exact test for small counts.
    ErrorRate {
        /// Query for one side's failed requests in the window (local: `error_count`).
        #[schemars(length(min = 1))]
        failures: String,
        /// Query for one side's requests in the window (local: `request_count`).
        #[schemars(length(min = 1))]
        requests: String,
        /// Tolerated increase of the error rate, absolute (0.01 = one percentage point).
        #[serde(default = "default_max_increase")]
        #[schemars(range(min = 0.0, max = 1.0))]
        max_increase: f64,
        /// Confidence level of the decision.
        #[serde(default = "default_confidence")]
        #[schemars(range(min = 0.5, max = 0.999))]
        confidence: f64,
    },
    /// Request durations per side as histogram buckets: Mann-Whitney U test.
    Latency {
        /// Query for one side's duration buckets in the window (local: `latency_histogram`;
        /// Prometheus: `sum by (le) (increase(…_bucket{…}[{{window}}]))`).
        #[schemars(length(min = 1))]
        histogram: String,
        /// Tolerated effect: a canary request may be slower than a stable one in
        /// 50 % + this share of pairs (0.1 → 60 %).
        #[serde(default = "default_max_effect")]
        #[schemars(range(min = 0.0, max = 0.5))]
        max_effect: f64,
        /// Confidence level of the decision.
        #[serde(default = "default_confidence")]
        #[schemars(range(min = 0.5, max = 0.999))]
        confidence: f64,
    },
}

fn default_max_increase() -> f64 {
    0.01
}

fn default_max_effect() -> f64 {
    0.1
}

fn default_confidence() -> f64 {
    0.95
}

impl Judge {
    /// The rule in words, where a threshold metric shows its condition.
    pub fn rule(&self) -> String {
        match self {
            Judge::ErrorRate { max_increase, confidence, .. } => {
                format!("error rate at most {:+.2} points above stable ({:.0} % confidence)", max_increase * 100.0, confidence * 100.0)
            }
            Judge::Latency { max_effect, confidence, .. } => format!(
                "canary slower than stable in at most {:.0} % of request pairs ({:.0} % confidence)",
                (0.5 + max_effect) * 100.0,
                confidence * 100.0
            ),
        }
    }
}

fn default_interval() -> Span {
    Span::of_ms(60_000)
}

fn default_consecutive_error_limit() -> u32 {
    4
}

/// Canary-versus-stable comparison: for a lower-is-better condition (`<`)
/// the canary must be at most `factor` × stable + `slack`; for higher-is-better
/// (`>`) at least `factor` × stable − `slack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Baseline {
    /// Multiplier on the stable value, e.g. 1.1.
    #[schemars(range(min = 0.0))]
    pub factor: f64,
    /// Absolute allowance, so a stable value of zero does not make any canary value fail.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub slack: f64,
}

/// Rollback policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// What a firing alert does.
    #[serde(default)]
    pub on_alert: OnAlert,
    /// What an inconclusive analysis does.
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// With `onInconclusive: extend`, how many times an analysis may be re-run before pausing.
    #[serde(default = "default_max_extensions")]
    pub max_extensions: u32,
    /// Refuse to start while the service's remaining error budget is below a floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget: Option<ErrorBudgetGate>,
    /// After traffic is put back on stable, check that canary traffic really
    /// stopped (users pinned to a slot keep reaching it for a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_rollback: Option<RollbackCheck>,
    /// Compare the split asked for with the split users get (each side's
    /// request counts from a canary-vs-stable metric), and act when they
    /// stay apart: sticky sessions, affinity cookies and cached DNS keep
    /// users on one side whatever the router says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_split: Option<ObservedSplit>,
    /// When the rollout may start, raise the canary's weight or promote:
    /// allowed days and hours in a time zone, and freezes. Outside them it
    /// waits; a rollback or an abort never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::domain::window::Windows>,
    /// This rollout fixes an alert that is firing: alerts that began before
    /// it was created do not roll it back. A new firing, a re-fire after
    /// the alert resolved, and a failed analysis still do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_forward: Option<FixForward>,
}

/// The alerts a fix-forward rollout leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixForward {
    /// The alerts it fixes, by rule name or alert id, as the alert names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub alerts: Vec<String>,
    /// Every alert already firing when the rollout was created (began before it), whatever its rule.
    #[serde(default)]
    pub firing_at_start: bool,
}

impl FixForward {
    /// Whether an alert that began before the rollout is one it fixes, and why.
    pub fn covers(&self, rule: &str, id: &str) -> Option<&'static str> {
        if self.alerts.iter().any(|a| a == rule || a == id) {
            Some("its rule is listed in policy.fixForward.alerts")
        } else if self.firing_at_start {
            Some("policy.fixForward.firingAtStart")
        } else {
            None
        }
    }
}

/// The observed-split check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObservedSplit {
    /// Largest difference, in percentage points, between the weight asked
    /// for and the canary's observed share of requests.
    #[serde(default = "default_split_tolerance")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub tolerance: f64,
    /// Measurements in a row out of tolerance before it counts as sustained.
    #[serde(default = "default_split_checks")]
    #[schemars(range(min = 1))]
    pub checks: u32,
    /// Fewest requests (both sides) for a measurement to count.
    #[serde(default = "default_split_min_requests")]
    pub min_requests: u64,
    /// What a sustained difference does.
    #[serde(default)]
    pub on_mismatch: OnSplitMismatch,
}

/// What a sustained difference between asked and observed split does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnSplitMismatch {
    /// Say so in the history and status, and carry on.
    #[default]
    Note,
    /// Hold the current weight for a person.
    Pause,
    /// Put all traffic back on stable and open a backlog issue.
    Rollback,
}

fn default_split_tolerance() -> f64 {
    10.0
}

fn default_split_checks() -> u32 {
    3
}

fn default_split_min_requests() -> u64 {
    100
}

/// How to confirm a rollback from metrics: the query (canary requests per
/// minute, say) must fall to `maxValue` within `attempts` checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackCheck {
    /// Registered metrics provider.
    #[schemars(extend("x-sluice-provider" = "metrics"))]
    pub provider: String,
    /// Query for the canary's remaining traffic.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Provider settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
    /// The most traffic that still counts as "none".
    #[schemars(range(min = 0.0))]
    pub max_value: f64,
    /// Between checks.
    #[serde(default = "default_check_interval")]
    pub interval: Span,
    /// Checks before the rollback is marked done but unverified.
    #[serde(default = "default_check_attempts")]
    #[schemars(range(min = 1))]
    pub attempts: u32,
}

fn default_check_interval() -> Span {
    Span::of_ms(30_000)
}

fn default_check_attempts() -> u32 {
    10
}

fn default_max_extensions() -> u32 {
    2
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            on_alert: OnAlert::default(),
            on_inconclusive: OnInconclusive::default(),
            max_extensions: default_max_extensions(),
            error_budget: None,
            verify_rollback: None,
            observed_split: None,
            windows: None,
            fix_forward: None,
        }
    }
}

/// What an alert does to a rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnAlert {
    /// Put all traffic back on stable and open a backlog issue.
    #[default]
    Rollback,
    /// Hold the current weight until the alert resolves or a person decides.
    Pause,
}

/// What an inconclusive analysis does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnInconclusive {
    /// Hold and wait for a person (`promote` to continue, `retry` to re-measure).
    #[default]
    Pause,
    /// Treat it as a failure.
    Rollback,
    /// Measure again, up to `maxExtensions` times, then pause.
    Extend,
}

/// The error-budget gate, checked once before any traffic moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorBudgetGate {
    /// Registered metrics provider answering the remaining budget (0..1).
    #[schemars(extend("x-sluice-provider" = "metrics"))]
    pub provider: String,
    /// Query returning the remaining fraction of the error budget.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Provider settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
    /// The smallest remaining fraction that allows a start.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_remaining: f64,
}

/// The metric setting that carries a preview's headers to its smoke check's
/// probe: set by Sluice from the router's answer, refused in a spec.
pub const PREVIEW_HEADERS_SETTING: &str = "sluicePreviewHeaders";

/// The provider names each port knows, so validation can reject an unknown
/// one instead of falling back silently.
#[derive(Debug, Clone, Default)]
pub struct ProviderNames {
    /// Traffic routers.
    pub traffic: Vec<&'static str>,
    /// Metric providers.
    pub metrics: Vec<&'static str>,
    /// Backlogs.
    pub backlog: Vec<&'static str>,
    /// Notification channels.
    pub notify: Vec<&'static str>,
    /// Traffic routers that cannot show the canary at 0 %, and why.
    pub no_preview: Vec<(&'static str, &'static str)>,
}

impl ProviderNames {
    fn for_kind(&self, kind: &str) -> Option<&[&'static str]> {
        match kind {
            "traffic" => Some(&self.traffic),
            "metrics" => Some(&self.metrics),
            "backlog" => Some(&self.backlog),
            "notify" => Some(&self.notify),
            _ => None,
        }
    }
}

/// The JSON Schema of [`RolloutSpec`], as committed under `schema/`.
pub fn json_schema() -> Value {
    schemars::schema_for!(RolloutSpec).to_value()
}

/// The format a spec document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON (what the API takes).
    Json,
    /// YAML (the CLI also reads it).
    Yaml,
}

impl Format {
    /// Picks the format from a file name: `.yaml`/`.yml` are YAML, the rest JSON.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Format::Yaml,
            _ => Format::Json,
        }
    }
}

/// Parses a document into a JSON value, with a located error.
pub fn parse_document(text: &str, format: Format) -> Result<Value, Problems> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| Problems::one("", format!("not valid JSON: {e}"))),
        Format::Yaml => {
            let value: Value = yaml_serde::from_str(text).map_err(|e| Problems::one("", format!("not valid YAML: {e}")))?;
            Ok(value)
        }
    }
}

/// Checks a spec document and compiles it: every problem at once, each with
/// its path, or the typed spec and its plan.
pub fn validate(doc: &Value, providers: &ProviderNames) -> Result<(RolloutSpec, Plan), Problems> {
    let mut problems = check::structural(doc, providers);
    problems.extend(check::cross_field(doc));
    problems.extend(check::previews(doc, providers));
    if !problems.is_empty() {
        return Err(Problems::new(problems));
    }
    let spec: RolloutSpec =
        serde_json::from_value(doc.clone()).map_err(|e| Problems::one("", format!("does not match the spec types: {e}")))?;
    let plan = Plan::compile(&spec)?;
    Ok((spec, plan))
}

/// Parses and validates a document in one go.
pub fn load(text: &str, format: Format, providers: &ProviderNames) -> Result<(RolloutSpec, Plan), Problems> {
    let doc = parse_document(text, format)?;
    validate(&doc, providers)
}

#[cfg(test)]
mod tests;
