//! The plan: a validated spec compiled into one linear list of stages, so the
//! state machine walks canary and blue-green rollouts with the same code.

use crate::domain::ids::{Span, Weight};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::spec::{
    AnalysisRef, ApprovalGate, Baseline, BlueGreenStrategy, CanaryStep, Condition, Judge, Metric, OnAlert, OnInconclusive, PreviewStep,
    Problem, Problems, RolloutSpec, SmokeCheck, Strategy, TimeoutAction,
};

/// Which strategy a plan came from (for display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyKind {
    /// Weighted canary steps.
    Canary,
    /// Blue-green switch.
    BlueGreen,
}

/// One stage of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "stage")]
pub enum Stage {
    /// Route this percentage to the canary and wait for the router to confirm.
    SetWeight {
        /// Percentage 0..=100.
        weight: Weight,
    },
    /// Hold for a time, or until resumed when `duration_ms` is `None`.
    Pause {
        /// How long.
        duration_ms: Option<u64>,
    },
    /// A blocking analysis.
    Analysis {
        /// What to measure.
        analysis: AnalysisPlan,
    },
    /// Wait for people.
    Approval {
        /// Who and how many.
        gate: ApprovalPlan,
    },
    /// Have the router show the canary to testers at 0 % (a smoke check or
    /// an approval follows as stages of their own).
    Preview,
    /// Make the canary the new stable (slot swap).
    Promote,
    /// Keep the previous version ready this long, then scale it down.
    ScaleDown {
        /// How long.
        delay_ms: u64,
    },
}

/// A resolved analysis: template metrics and inline metrics together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisPlan {
    /// Short label for people, e.g. `error-rate+latency`.
    pub label: String,
    /// Metrics to measure.
    pub metrics: Vec<MetricPlan>,
}

/// A metric with every default applied and every string parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPlan {
    /// Unique within its analysis.
    pub name: String,
    /// Provider name (registry key).
    pub provider: String,
    /// Provider query (empty for a judged metric, which reads its own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// Provider settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Value>,
    /// Success condition (none for a judged metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Statistical comparison with stable, instead of the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,
    /// Between measurements, and the query window.
    pub interval_ms: u64,
    /// Measurements needed; `None` runs until the rollout is promoted.
    pub count: Option<u32>,
    /// Before the first measurement.
    pub initial_delay_ms: u64,
    /// Failures tolerated.
    pub failure_limit: u32,
    /// Failures in a row tolerated, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_limit: Option<u32>,
    /// Consecutive provider errors tolerated.
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements tolerated.
    pub inconclusive_limit: u32,
    /// Below this many samples a measurement is inconclusive.
    pub min_samples: Option<u64>,
    /// Query for the sample count.
    pub sample_query: Option<String>,
    /// Canary-versus-stable comparison.
    pub baseline: Option<Baseline>,
    /// With `min_samples`: how long an under-sampled phase may keep measuring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_soak_ms: Option<u64>,
    /// Measured until one passes (a smoke check): the first pass ends it,
    /// and only the limits fail it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_pass: bool,
}

impl MetricPlan {
    /// A threshold check Sluice runs of its own (the error budget, the
    /// rollback check): one query, measured at once, no judge or baseline,
    /// and no failure, error or inconclusive result allowed unless set after.
    fn check(name: &str, source: (&str, &str, &BTreeMap<String, Value>), condition: Condition, interval_ms: u64, count: u32) -> MetricPlan {
        let (provider, query, settings) = source;
        MetricPlan {
            name: name.into(),
            provider: provider.into(),
            query: query.into(),
            settings: settings.clone(),
            condition: Some(condition),
            judge: None,
            interval_ms,
            count: Some(count),
            initial_delay_ms: 0,
            failure_limit: 0,
            consecutive_failure_limit: None,
            consecutive_error_limit: 0,
            inconclusive_limit: 0,
            min_samples: None,
            sample_query: None,
            baseline: None,
            max_soak_ms: None,
            until_pass: false,
        }
    }

    /// Whether it probes the preview address, which exists only once the
    /// rollout's preview step has run (so nothing can measure it before).
    pub fn needs_preview(&self) -> bool {
        self.query.starts_with(PREVIEW_URL)
    }

    /// The rule in words: the condition, or the judge's.
    pub fn rule(&self) -> String {
        match (&self.judge, &self.condition) {
            (Some(j), _) => j.rule(),
            (None, Some(c)) => c.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A resolved approval gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPlan {
    /// Distinct approvals needed.
    pub min_approvers: u32,
    /// Allowed approvers; empty means anyone.
    pub approvers: Vec<String>,
    /// Whether the initiator may approve.
    pub allow_self_approval: bool,
    /// Wait limit.
    pub timeout_ms: Option<u64>,
    /// What the limit does.
    pub on_timeout: TimeoutAction,
}

/// The compiled plan the state machine follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Where it came from.
    pub strategy: StrategyKind,
    /// Stages in order; the last is `Promote` or `ScaleDown`.
    pub stages: Vec<Stage>,
    /// Background analysis across all stages until promotion.
    pub background: Option<AnalysisPlan>,
    /// Alert policy.
    pub on_alert: OnAlert,
    /// Inconclusive policy.
    pub on_inconclusive: OnInconclusive,
    /// Re-runs allowed with `extend`.
    pub max_extensions: u32,
    /// Error-budget gate as a one-shot metric.
    pub error_budget: Option<MetricPlan>,
    /// Check that canary traffic stopped after a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_check: Option<MetricPlan>,
    /// Whether a failure opens a backlog issue.
    pub backlog: bool,
    /// Deployment windows and freezes, all of which must be open for a
    /// start, a weight increase or a promotion: the spec's, and the
    /// deployment's shared one (`SLUICE_WINDOWS`) added at creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<crate::domain::window::Windows>,
    /// The alerts that began before the rollout and do not roll it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_forward: Option<crate::domain::spec::FixForward>,
}

impl Plan {
    /// Compiles a spec whose document already passed [`crate::domain::spec::validate`]'s checks;
    /// still reports (never panics) if something does not resolve.
    pub fn compile(spec: &RolloutSpec) -> Result<Plan, Problems> {
        let mut c = Compiler { spec, problems: Vec::new() };
        let (strategy, stages, background) = match &spec.strategy {
            Strategy::Canary(canary) => {
                let mut stages = Vec::new();
                for (i, step) in canary.steps.iter().enumerate() {
                    let path = format!("strategy.canary.steps[{i}]");
                    match step {
                        CanaryStep::SetWeight(w) => stages.push(Stage::SetWeight { weight: *w }),
                        CanaryStep::Pause(p) => stages.push(Stage::Pause { duration_ms: p.duration.as_ref().map(Span::ms) }),
                        CanaryStep::Analysis(a) => {
                            stages.push(Stage::Analysis { analysis: c.analysis(a, &format!("{path}.analysis"), Some(1)) })
                        }
                        CanaryStep::Approval(g) => stages.push(Stage::Approval { gate: Compiler::approval(g) }),
                        CanaryStep::Preview(p) => stages.extend(Compiler::preview(p, false)),
                    }
                }
                stages.push(Stage::Promote);
                if let Some(d) = &canary.scale_down_delay {
                    stages.push(Stage::ScaleDown { delay_ms: d.ms() });
                }
                let background = canary.analysis.as_ref().map(|a| c.analysis(a, "strategy.canary.analysis", None));
                (StrategyKind::Canary, stages, background)
            }
            Strategy::BlueGreen(bg) => (StrategyKind::BlueGreen, c.blue_green(bg), None),
        };
        let error_budget = spec.policy.error_budget.as_ref().map(|g| {
            let condition = Condition { op: crate::domain::spec::Comparison::GreaterOrEqual, threshold: g.min_remaining };
            let check = MetricPlan::check("error-budget", (&g.provider, &g.query, &g.settings), condition, 60_000, 1);
            MetricPlan { consecutive_error_limit: 2, ..check }
        });
        let rollback_check = spec.policy.verify_rollback.as_ref().map(|v| {
            let attempts = v.attempts.max(1);
            let condition = Condition { op: crate::domain::spec::Comparison::LessOrEqual, threshold: v.max_value };
            let check =
                MetricPlan::check("rollback-check", (&v.provider, &v.query, &v.settings), condition, v.interval.ms().max(1_000), attempts);
            // Every check may fail but the last: the first pass ends it.
            MetricPlan { failure_limit: attempts, consecutive_error_limit: attempts, inconclusive_limit: attempts, ..check }
        });
        if !c.problems.is_empty() {
            return Err(Problems::new(c.problems));
        }
        Ok(Plan {
            strategy,
            stages,
            background,
            on_alert: spec.policy.on_alert,
            on_inconclusive: spec.policy.on_inconclusive,
            max_extensions: spec.policy.max_extensions,
            error_budget,
            rollback_check,
            backlog: spec.backlog.is_some(),
            windows: spec.policy.windows.iter().cloned().collect(),
            fix_forward: spec.policy.fix_forward.clone(),
        })
    }

    /// One line a person can read: `canary: 5% → analysis(error-rate) → 20% → approval(1) → promote`.
    pub fn summary(&self) -> String {
        let stages: Vec<String> = self.stages.iter().map(Stage::describe).collect();
        let mut s = format!(
            "{}: {}",
            match self.strategy {
                StrategyKind::Canary => "canary",
                StrategyKind::BlueGreen => "blue-green",
            },
            stages.join(" → ")
        );
        if let Some(bg) = &self.background {
            s.push_str(&format!("; background analysis({})", bg.label));
        }
        if let Some(budget) = &self.error_budget {
            s.push_str(&format!("; error budget {} to start", budget.rule()));
        }
        if !self.windows.is_empty() {
            s.push_str("; within deployment windows");
        }
        if self.fix_forward.is_some() {
            s.push_str("; fixes forward");
        }
        s
    }
}

impl Stage {
    /// The step's kind as the spec names it, a label for per-step telemetry.
    pub fn kind(&self) -> &'static str {
        match self {
            Stage::SetWeight { .. } => "setWeight",
            Stage::Pause { .. } => "pause",
            Stage::Analysis { .. } => "analysis",
            Stage::Approval { .. } => "approval",
            Stage::Promote => "promote",
            Stage::ScaleDown { .. } => "scaleDown",
            Stage::Preview => "preview",
        }
    }

    /// Short description for summaries and timelines.
    pub fn describe(&self) -> String {
        use crate::domain::spec::duration_text;
        match self {
            Stage::SetWeight { weight } => format!("{weight}%"),
            Stage::Pause { duration_ms: Some(d) } => format!("pause {}", duration_text(*d)),
            Stage::Pause { duration_ms: None } => "pause until resumed".into(),
            Stage::Analysis { analysis } => format!("analysis({})", analysis.label),
            Stage::Approval { gate } => format!("approval({})", gate.min_approvers),
            Stage::Promote => "promote".into(),
            Stage::Preview => "preview".into(),
            Stage::ScaleDown { delay_ms } => format!("scale down after {}", duration_text(*delay_ms)),
        }
    }
}

/// Where the smoke check's probe goes: filled in from the rollout's
/// preview address when it measures ([`crate::domain::rollout::Rollout::metric_to_run`]).
pub const PREVIEW_URL: &str = "{{preview.url}}";

/// The smoke check as a metric: the `httpProbe` of the preview address,
/// 1 when the answer is as expected; one pass ends it, `attempts` failures fail it.
fn smoke_metric(check: &SmokeCheck) -> MetricPlan {
    let mut settings = BTreeMap::new();
    settings.insert("expectStatus".to_string(), Value::from(check.expect_status));
    settings.insert("timeoutMs".to_string(), Value::from(check.timeout.ms()));
    if let Some(text) = &check.body_contains {
        settings.insert("bodyContains".to_string(), Value::from(text.clone()));
    }
    let condition = Condition { op: crate::domain::spec::Comparison::GreaterOrEqual, threshold: 1.0 };
    let attempts = check.attempts.max(1);
    let probe =
        MetricPlan::check("smoke", ("httpProbe", &format!("{PREVIEW_URL}{}", check.path), &settings), condition, check.interval.ms(), 1);
    MetricPlan {
        failure_limit: attempts - 1,
        consecutive_error_limit: attempts - 1,
        inconclusive_limit: attempts - 1,
        count: None,
        until_pass: true,
        ..probe
    }
}

struct Compiler<'a> {
    spec: &'a RolloutSpec,
    problems: Vec<Problem>,
}

impl Compiler<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_string(), message: message.into() });
    }

    fn blue_green(&mut self, bg: &BlueGreenStrategy) -> Vec<Stage> {
        let base = "strategy.blueGreen";
        let mut stages = Vec::new();
        if let Some(p) = &bg.preview {
            stages.extend(Self::preview(p, bg.approval.is_some()));
        }
        if let Some(a) = &bg.pre_promotion_analysis {
            stages.push(Stage::Analysis { analysis: self.analysis(a, &format!("{base}.prePromotionAnalysis"), Some(1)) });
        }
        if let Some(g) = &bg.approval {
            stages.push(Stage::Approval { gate: Self::approval(g) });
        } else if let Some(d) = &bg.auto_promote_after {
            stages.push(Stage::Pause { duration_ms: Some(d.ms()) });
        }
        stages.push(Stage::SetWeight { weight: Weight::FULL });
        if let Some(a) = &bg.post_promotion_analysis {
            stages.push(Stage::Analysis { analysis: self.analysis(a, &format!("{base}.postPromotionAnalysis"), Some(1)) });
        }
        stages.push(Stage::Promote);
        if let Some(d) = &bg.scale_down_delay {
            let ms = d.ms();
            stages.push(Stage::ScaleDown { delay_ms: ms });
        }
        stages
    }

    /// The preview, then its smoke check (an analysis of one probe that the
    /// first passing attempt ends), then its approval: the spec's, or one
    /// from anyone when there is no check and no approval follows anyway
    /// (`people_follow`: a blue-green switch's own).
    fn preview(p: &PreviewStep, people_follow: bool) -> Vec<Stage> {
        let mut stages = vec![Stage::Preview];
        if let Some(check) = &p.check {
            stages.push(Stage::Analysis { analysis: AnalysisPlan { label: "smoke".into(), metrics: vec![smoke_metric(check)] } });
        }
        match (&p.approval, &p.check) {
            (Some(g), _) => stages.push(Stage::Approval { gate: Self::approval(g) }),
            (None, None) if !people_follow => stages.push(Stage::Approval { gate: Self::approval(&ApprovalGate::default()) }),
            (None, _) => {}
        }
        stages
    }

    fn approval(g: &ApprovalGate) -> ApprovalPlan {
        ApprovalPlan {
            min_approvers: g.min_approvers.max(1),
            approvers: g.approvers.clone(),
            allow_self_approval: g.allow_self_approval,
            timeout_ms: g.timeout.as_ref().map(Span::ms),
            on_timeout: g.on_timeout,
        }
    }

    fn analysis(&mut self, a: &AnalysisRef, path: &str, default_count: Option<u32>) -> AnalysisPlan {
        let mut metrics = Vec::new();
        let mut labels = Vec::new();
        for (i, name) in a.templates.iter().enumerate() {
            match self.spec.analysis_templates.iter().find(|t| &t.name == name) {
                Some(t) => {
                    labels.push(name.clone());
                    for (j, m) in t.metrics.iter().enumerate() {
                        let p = format!("analysisTemplates[{name}].metrics[{j}]");
                        metrics.push(self.metric(m, &p, default_count));
                    }
                }
                None => self.problem(&format!("{path}.templates[{i}]"), format!("no analysis template named '{name}'")),
            }
        }
        for (j, m) in a.metrics.iter().enumerate() {
            labels.push(m.name.clone());
            metrics.push(self.metric(m, &format!("{path}.metrics[{j}]"), default_count));
        }
        if metrics.is_empty() {
            self.problem(path, "needs at least one template or metric");
        }
        AnalysisPlan { label: labels.join("+"), metrics }
    }

    fn metric(&mut self, written: &Metric, path: &str, default_count: Option<u32>) -> MetricPlan {
        let m = match crate::domain::spec::catalog::resolve(written) {
            Ok(m) => m,
            Err(e) => {
                self.problem(&format!("{path}.template"), e);
                written.clone()
            }
        };
        let condition = match (&m.success_condition, &m.judge) {
            (Some(text), None) => match Condition::parse(text) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.problem(&format!("{path}.successCondition"), e);
                    None
                }
            },
            (None, None) => {
                self.problem(&format!("{path}.successCondition"), "is required (or a judge, or a template that has one)");
                None
            }
            (Some(_), Some(_)) => {
                self.problem(&format!("{path}.successCondition"), "cannot be combined with judge (make it a second metric)");
                None
            }
            (None, Some(_)) => None,
        };
        if m.judge.is_some() && (m.query.is_some() || m.baseline.is_some()) {
            let field = if m.query.is_some() { "query" } else { "baseline" };
            self.problem(&format!("{path}.{field}"), "has no effect with judge, which reads its own queries and compares with stable");
        }
        if m.judge.is_none() && m.query.is_none() {
            self.problem(&format!("{path}.query"), "is required (or a judge, or a template that has one)");
        }
        if m.provider.is_none() {
            self.problem(&format!("{path}.provider"), "is required (or a template that names one)");
        }
        if m.max_soak.is_some() && m.min_sample_size.is_none() {
            self.problem(&format!("{path}.maxSoak"), "has no effect without minSampleSize");
        }
        let interval_ms = m.interval.ms().max(1_000);
        MetricPlan {
            name: m.name.clone(),
            provider: m.provider.clone().unwrap_or_default(),
            query: m.query.clone().unwrap_or_default(),
            settings: m.settings.clone(),
            condition,
            judge: m.judge.clone(),
            interval_ms,
            count: m.count.or(default_count),
            initial_delay_ms: m.initial_delay.as_ref().map(Span::ms).unwrap_or(interval_ms),
            failure_limit: m.failure_limit.unwrap_or(if m.consecutive_failure_limit.is_some() { u32::MAX } else { 0 }),
            consecutive_failure_limit: m.consecutive_failure_limit,
            consecutive_error_limit: m.consecutive_error_limit,
            inconclusive_limit: m.inconclusive_limit,
            min_samples: m.min_sample_size,
            sample_query: m.sample_query.clone(),
            baseline: m.baseline.clone(),
            max_soak_ms: m.max_soak.as_ref().map(Span::ms),
            until_pass: false,
        }
    }
}
