//! The backlog port: open (or find) the one issue a failed rollout gets.
//! [`draft`] writes what a responder needs to act — service, versions, where
//! it failed, the cause with its numbers, the timeline and what Sluice did —
//! the same for every tracker; adapters only deliver it.

pub mod local;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::adapters::{lookup, AdapterEnv, AdapterError, Settings};
use crate::rollout::{Evidence, HistoryEntry, IssueRef, Rollout, Verdict};

/// An issue ready to file.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueDraft {
    /// The rollout it is about (the de-duplication key).
    pub rollout_id: String,
    /// One line.
    pub title: String,
    /// Markdown body; ends with [`marker`] so a lost mapping can be recovered.
    pub body: String,
    /// Labels or tags.
    pub labels: Vec<String>,
}

/// What can go wrong filing an issue.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// The tracker failed or could not be reached (no secrets in the text).
    #[error("{0}")]
    Failed(String),
}

/// An issue tracker.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// Opens the rollout's issue, or returns the one already open for it.
    async fn open(&self, draft: &IssueDraft) -> Result<IssueRef, BacklogError>;
    /// Adds a comment to an issue.
    async fn comment(&self, issue: &IssueRef, body: &str) -> Result<(), BacklogError>;
}

/// Builds a backlog from its settings.
pub type Factory = fn(&Settings, &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError>;

/// Backlogs by provider name. A new tracker is one file and one line here.
pub const PROVIDERS: &[(&str, Factory)] = &[("local", local::build)];

/// The backlog a spec names.
pub fn build(provider: &str, settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError> {
    lookup("backlog", PROVIDERS, provider)?(settings, env)
}

/// The hidden marker that ties an issue to its rollout.
pub fn marker(rollout_id: &str) -> String {
    format!("<!-- sluice:rollout={rollout_id} -->")
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// The issue for a failed rollout.
pub fn draft(rollout: &Rollout, history: &[HistoryEntry], evidence: &Evidence, public_url: &str) -> IssueDraft {
    let t = &rollout.spec.target;
    let headline = evidence.headline();
    let mut title = format!("Rollout of {} {} rolled back: {headline}", t.name, t.canary.version);
    if title.chars().count() > 120 {
        title = title.chars().take(119).collect::<String>() + "…";
    }
    let failure = rollout.failure.as_ref();
    let stage = failure.map(|f| f.stage).unwrap_or(rollout.stage);
    let stage_text = rollout.plan.stages.get(stage).map(|s| s.describe()).unwrap_or_default();
    let mut b = String::new();
    b.push_str("## What happened\n\n");
    b.push_str(&format!(
        "Sluice rolled **{}** back from **{}** to **{}**.\n\n",
        t.name, t.canary.version, t.stable.version
    ));
    b.push_str(&format!("- **Cause:** {headline}\n"));
    if let Some(f) = failure {
        b.push_str(&format!(
            "- **Where:** step {}/{} ({stage_text}), phase {}, with {}% of traffic on {}\n",
            stage + 1,
            rollout.plan.stages.len(),
            f.phase,
            f.weight,
            t.canary.version
        ));
        b.push_str(&format!("- **Decided:** {}{}\n", when(f.at), f.by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()));
    }
    b.push_str(&format!("- **Rollout:** `{}` started by {} at {}\n\n", rollout.id, rollout.created_by, when(rollout.created_at)));

    b.push_str("## Evidence\n\n");
    match evidence {
        Evidence::Analysis { analysis, metric, condition, reason, measurements } => {
            b.push_str(&format!("Analysis **{analysis}**: metric `{metric}` must be `{condition}`; it {reason}.\n\n"));
            b.push_str("| # | at | canary | stable | samples | verdict | detail |\n|---|---|---|---|---|---|---|\n");
            for m in measurements {
                let verdict = match m.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "**fail**",
                    Verdict::Inconclusive => "inconclusive",
                    Verdict::Error => "error",
                };
                b.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {verdict} | {} |\n",
                    m.index + 1,
                    m.at.format("%H:%M:%S"),
                    num(m.canary),
                    num(m.stable),
                    m.samples.map(|s| s.to_string()).unwrap_or_else(|| "–".into()),
                    m.note.replace('|', "\\|")
                ));
            }
            b.push('\n');
        }
        Evidence::Alert { alert } => {
            b.push_str(&format!("- **Alert rule:** {}\n- **Severity:** {}\n- **Source:** {}\n", alert.rule, alert.severity, alert.source));
            if let Some(at) = alert.fired_at {
                b.push_str(&format!("- **Fired:** {}\n", when(at)));
            }
            b.push_str(&format!("- **Summary:** {}\n- **Alert id:** `{}`\n", alert.summary, alert.id));
            if let Some(link) = &alert.link {
                b.push_str(&format!("- **Link:** {link}\n"));
            }
            b.push('\n');
        }
        other => b.push_str(&format!("{}\n\n", other.headline())),
    }

    b.push_str("## What Sluice did\n\n");
    match failure.and_then(|f| f.reverted_at) {
        Some(at) => b.push_str(&format!(
            "- Put all traffic back on {} at {} (the router confirmed 0% on {}).\n",
            t.stable.version,
            when(at),
            t.canary.version
        )),
        None => b.push_str(&format!(
            "- Asked the router to put all traffic back on {}; **not yet confirmed** — Sluice keeps retrying (see status).\n",
            t.stable.version
        )),
    }
    b.push_str("- Stopped all analysis and timers for this rollout.\n\n");

    b.push_str("## Timeline\n\n| time | phase | weight | event | by | what |\n|---|---|---|---|---|---|\n");
    let skip = history.len().saturating_sub(40);
    if skip > 0 {
        b.push_str(&format!("| … | | | | | {skip} earlier entries |\n"));
    }
    for h in &history[skip..] {
        let phase = if h.from == h.to { h.to.to_string() } else { format!("{} → {}", h.from, h.to) };
        b.push_str(&format!(
            "| {} | {} | {}% | {} | {} | {} |\n",
            h.at.format("%H:%M:%S"),
            phase,
            h.weight,
            h.cause,
            h.by.as_deref().unwrap_or(""),
            h.summary.replace('|', "\\|")
        ));
    }
    let base = public_url.trim_end_matches('/');
    b.push_str(&format!(
        "\n## Links\n\n- Status: {base}/api/rollouts/{id}\n- Timeline: {base}/api/dashboard/{id}\n- CLI: `sluice status {id}`\n\n{}\n",
        marker(&rollout.id),
        id = rollout.id
    ));
    IssueDraft {
        rollout_id: rollout.id.clone(),
        title,
        body: b,
        labels: vec!["sluice".into(), "rollback".into(), format!("service:{}", t.name)],
    }
}
