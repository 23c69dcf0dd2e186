//! What a failed rollout's issue and its later comments say: written once
//! here for every tracker, as a [`Doc`] each adapter renders.

use chrono::{DateTime, Utc};

use super::doc::{code, strong, text, Block, Doc, Span};
use super::TITLE_CHARS;
use super::{marker, CommentDraft, IssueDraft};
use crate::domain::bounded::clip;
use crate::domain::rollout::{Evidence, HistoryEntry, PipelineFailure, Reported, Rollout, Verdict};
use crate::domain::spec::Target;

/// Timeline rows kept in an issue (the newest; the status page has them all).
const TIMELINE_ROWS: usize = 40;

/// The issue for a failed rollout.
pub fn draft(rollout: &Rollout, history: &[HistoryEntry], evidence: &Evidence, public_url: &str) -> IssueDraft {
    let t = &rollout.spec.target;
    let title = clip(&format!("Rollout of {} {} rolled back: {}", t.name, t.canary.version, evidence.headline()), TITLE_CHARS);
    let mut body = failure_report(rollout, history, evidence, public_url);
    body.push(Block::Marker(marker(&rollout.id)));
    body.push(Block::Marker(super::failure_marker(&rollout.id)));
    IssueDraft {
        rollout_id: rollout.id.to_string(),
        title,
        body,
        labels: vec!["sluice".into(), "rollback".into(), format!("service:{}", t.name)],
        not_before: rollout.created_at - super::RELEASE_LOOKBACK,
        rollout_failure: true,
    }
}

/// The comment telling an issue what it does not say yet (`told` is what it says).
pub fn update(rollout: &Rollout, history: &[HistoryEntry], told: &Reported, public_url: &str) -> CommentDraft {
    let now = Reported::of(rollout);
    let t = &rollout.spec.target;
    let mut body = Doc::default();
    let failure = rollout.failure.as_ref();
    if now.failure && !told.failure {
        match rollout.retry_of.as_deref() {
            Some(original) => {
                body.push(Block::Heading(format!("Failed again: rollout {}", rollout.id)));
                body.push(Block::Para(vec![
                    text(format!("{} {} was rolled out again as ", t.name, t.canary.version)),
                    code(rollout.id.as_str()),
                    text(format!(" (a retry of {original}), and failed again.")),
                ]));
            }
            None => {
                body.push(Block::Heading(format!("The rollout failed too: {}", rollout.id)));
                body.push(Block::Para(vec![
                    text(format!("{} {} was then rolled out as ", t.name, t.canary.version)),
                    code(rollout.id.as_str()),
                    text(", and Sluice rolled it back."),
                ]));
            }
        }
        if let Some(f) = failure {
            body.extend(failure_report(rollout, history, &f.evidence, public_url));
        }
    } else {
        if let (true, false, Some(failed)) = (now.fixing, told.fixing, rollout.fixes.as_deref()) {
            body.push(Block::Heading(format!("A fix is rolling out: {}", rollout.id)));
            body.push(Block::Para(vec![
                text(format!("{} {} is being rolled out as ", t.name, t.canary.version)),
                code(rollout.id.as_str()),
                text(format!(
                    " to fix forward the failure of {failed}. Alerts that began before it was created do not roll it back; a new firing, a re-fire after an alert resolves, or a failed analysis still does, and its failure would be told here."
                )),
            ]));
        }
        let mut items = Vec::new();
        if let (true, false, Some(at)) = (now.reverted, told.reverted, failure.and_then(|f| f.reverted_at)) {
            items.push(vec![
                strong(format!("Traffic is back on {}", t.stable.version)),
                text(format!(" since {} (the router confirmed 0% on {}).", when(at), t.canary.version)),
            ]);
        }
        if now.verified && !told.verified {
            if let Some(item) = failure.and_then(|_| verification_item(rollout)) {
                items.push(item);
            }
        }
        if !items.is_empty() {
            body.push(Block::Heading("Update".into()));
            body.push(Block::List(items));
        }
    }
    if let Some(f) = failure {
        for later in f.later.iter().skip(told.later) {
            body.push(Block::Heading(format!("Another failure at {}", when(later.at))));
            body.push(Block::Para(vec![text(later.evidence.headline())]));
            body.extend(evidence_section(&later.evidence));
        }
    }
    body.push(Block::List(links(rollout, public_url)));
    let marker = format!("sluice:update={}/{}", rollout.id, now.key());
    body.push(Block::Marker(marker.clone()));
    if now.failure && !told.failure {
        body.push(Block::Marker(super::failure_marker(&rollout.id)));
    }
    CommentDraft { marker, body }
}

/// Everything about one failure: what, where, evidence, what Sluice did, timeline, links.
fn failure_report(rollout: &Rollout, history: &[HistoryEntry], evidence: &Evidence, public_url: &str) -> Doc {
    let t = &rollout.spec.target;
    let failure = rollout.failure.as_ref();
    let stage = failure.map(|f| f.stage).unwrap_or(rollout.stage);
    let stage_text = rollout.plan.stages.get(stage).map(|s| s.describe()).unwrap_or_default();
    let mut d = Doc::default();
    d.push(Block::Heading("What happened".into()));
    d.push(Block::Para(vec![
        text("Sluice rolled "),
        strong(t.name.as_str()),
        text(" back from "),
        strong(&t.canary.version),
        text(" to "),
        strong(&t.stable.version),
        text("."),
    ]));
    let mut facts = vec![vec![strong("Cause: "), text(evidence.headline())]];
    if let Some(f) = failure {
        facts.push(vec![
            strong("Where: "),
            text(format!(
                "step {}/{} ({stage_text}), phase {}, with {}% of traffic on {}",
                stage + 1,
                rollout.plan.stages.len(),
                f.phase,
                f.weight,
                t.canary.version
            )),
        ]);
        let by = f.by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default();
        facts.push(vec![strong("Decided: "), text(format!("{}{by}", when(f.at)))]);
    }
    facts.push(vec![
        strong("Rollout: "),
        code(rollout.id.as_str()),
        text(format!(" started by {} at {}", rollout.created_by, when(rollout.created_at))),
    ]);
    d.push(Block::List(facts));
    d.extend(evidence_section(evidence));

    d.push(Block::Heading("What Sluice did".into()));
    let mut done = Vec::new();
    match failure.and_then(|f| f.reverted_at) {
        Some(at) => done.push(vec![text(format!(
            "Put all traffic back on {} at {} (the router confirmed 0% on {}).",
            t.stable.version,
            when(at),
            t.canary.version
        ))]),
        None => done.push(vec![
            text(format!("Asked the router to put all traffic back on {}; ", t.stable.version)),
            strong("not yet confirmed"),
            text(" — Sluice keeps retrying and will add it here."),
        ]),
    }
    if let Some(item) = verification_item(rollout) {
        done.push(item);
    }
    if let Some(item) = observed_split_item(rollout) {
        done.push(item);
    }
    done.push(vec![text("Stopped all analysis and timers for this rollout.")]);
    d.push(Block::List(done));

    d.push(Block::Heading("Timeline".into()));
    let skip = history.len().saturating_sub(TIMELINE_ROWS);
    let mut rows = Vec::new();
    if skip > 0 {
        rows.push(vec!["…".into(), String::new(), String::new(), String::new(), String::new(), format!("{skip} earlier entries")]);
    }
    for h in &history[skip..] {
        let phase = if h.from == h.to { h.to.to_string() } else { format!("{} → {}", h.from, h.to) };
        rows.push(vec![
            h.at.format("%H:%M:%S").to_string(),
            phase,
            format!("{}%", h.weight),
            h.cause.clone(),
            h.by.clone().unwrap_or_default(),
            h.summary.clone(),
        ]);
    }
    d.push(Block::Table { head: cols(&["time", "phase", "weight", "event", "by", "what"]), rows });
    d.push(Block::Heading("Links".into()));
    d.push(Block::List(links(rollout, public_url)));
    d
}

/// The evidence in detail: the measurements against the threshold, or the alert.
fn evidence_section(evidence: &Evidence) -> Doc {
    let mut d = Doc::default();
    match evidence {
        Evidence::Analysis { analysis, metric, condition, reason, measurements } => {
            d.push(Block::Heading("Evidence".into()));
            d.push(Block::Para(vec![
                text("Analysis "),
                strong(analysis),
                text(": metric "),
                code(metric),
                text(" must be "),
                code(condition),
                text(format!("; it {reason}.")),
            ]));
            let rows = measurements
                .iter()
                .map(|m| {
                    let verdict = match m.verdict {
                        Verdict::Pass => "pass",
                        Verdict::Fail => "FAIL",
                        Verdict::Inconclusive => "inconclusive",
                        Verdict::Waiting => "waiting for data",
                        Verdict::Error => "error",
                    };
                    vec![
                        (m.index + 1).to_string(),
                        m.at.format("%H:%M:%S").to_string(),
                        num(m.canary),
                        num(m.stable),
                        m.samples.map(|s| s.to_string()).unwrap_or_else(|| "–".into()),
                        verdict.into(),
                        m.note.clone(),
                    ]
                })
                .collect();
            d.push(Block::Table { head: cols(&["#", "at", "canary", "stable", "samples", "verdict", "detail"]), rows });
        }
        Evidence::Alert { alert } => {
            d.push(Block::Heading("Evidence".into()));
            let mut items = vec![
                vec![strong("Alert rule: "), text(&alert.rule)],
                vec![strong("Severity: "), text(&alert.severity)],
                vec![strong("Source: "), text(&alert.source)],
            ];
            if let Some(at) = alert.fired_at {
                items.push(vec![strong("Fired: "), text(when(at))]);
            }
            items.push(vec![strong("Summary: "), text(&alert.summary)]);
            items.push(vec![strong("Alert id: "), code(&alert.id)]);
            if let Some(link) = &alert.link {
                items.push(vec![strong("Link: "), Span::Link(link.clone(), link.clone())]);
            }
            d.push(Block::List(items));
        }
        Evidence::Pipeline { failure } => {
            d.push(Block::Heading("Evidence".into()));
            d.extend(pipeline_section(failure));
        }
        Evidence::Router { command, error, attempts } => {
            d.push(Block::Heading("Evidence".into()));
            d.push(Block::Para(vec![
                text("The router failed "),
                code(command),
                text(format!(" {attempts} times; last error: ")),
                code(error),
            ]));
        }
        Evidence::SplitMismatch { requested, observed, requests, checks, tolerance } => {
            d.push(Block::Heading("Evidence".into()));
            d.push(Block::Para(vec![
                text(format!("The router was asked for {requested}% on the canary, but ")),
                strong(format!("{observed:.1}%")),
                text(format!(
                    " of {requests} requests reached it, {checks} measurements in a row beyond {tolerance} points. \
                     Sticky sessions, affinity cookies or cached DNS keep users on one side whatever the router says."
                )),
            ]));
        }
        _ => {}
    }
    d
}

/// The failed stage, its run and the end of its log.
fn pipeline_section(failure: &PipelineFailure) -> Doc {
    let mut d = Doc::default();
    let mut items = vec![vec![strong("Failed stage: "), text(&failure.stage)], vec![strong("Reported by: "), text(failure.by.as_str())]];
    if let Some(url) = &failure.run_url {
        items.push(vec![strong("Run: "), Span::Link(url.clone(), url.clone())]);
    }
    d.push(Block::List(items));
    if !failure.excerpt.trim().is_empty() {
        d.push(Block::Para(vec![strong("End of the log:")]));
        d.push(Block::Code(failure.excerpt.clone()));
    }
    d
}

/// The issue for a release whose pipeline failed before its rollout could
/// fail (a build, deploy or smoke test): keyed by the release's rollout id,
/// so the rollout, if it runs and fails later, finds it instead of opening another.
pub fn release_failure(release: &str, target: &Target, failure: &PipelineFailure, now: DateTime<Utc>) -> IssueDraft {
    let title = clip(&format!("Release of {} {} failed: stage '{}'", target.name, target.canary.version, failure.stage), TITLE_CHARS);
    let mut body = Doc::default();
    body.push(Block::Heading("What happened".into()));
    body.push(Block::Para(vec![
        text("The release pipeline of "),
        strong(target.name.as_str()),
        text(" "),
        strong(&target.canary.version),
        text(" failed at stage "),
        strong(&failure.stage),
        text(format!(" ({}). ", when(now))),
        text(format!("No traffic was moved: {} still serves everyone.", target.stable.version)),
    ]));
    body.push(Block::List(vec![vec![strong("Release: "), code(release)]]));
    body.push(Block::Heading("Evidence".into()));
    body.extend(pipeline_section(failure));
    body.push(Block::Marker(marker(release)));
    IssueDraft {
        rollout_id: release.to_string(),
        title,
        body,
        labels: vec!["sluice".into(), "release-failed".into(), format!("service:{}", target.name)],
        not_before: now - super::RELEASE_LOOKBACK,
        rollout_failure: false,
    }
}

/// The comment telling a release's issue that another pipeline stage failed.
pub fn release_failure_comment(release: &str, failure: &PipelineFailure) -> CommentDraft {
    let mut body = Doc::default();
    body.push(Block::Heading(format!("Pipeline stage '{}' failed", failure.stage)));
    body.extend(pipeline_section(failure));
    let marker = format!("sluice:release-failure={release}/{}", failure.stage);
    body.push(Block::Marker(marker.clone()));
    CommentDraft { marker, body }
}

/// The split users got beside the one asked for, as last measured.
fn observed_split_item(rollout: &Rollout) -> Option<Vec<Span>> {
    let o = rollout.traffic.observed.as_ref()?;
    let sustained = if o.acted {
        " — a sustained difference beyond the policy's tolerance (sticky sessions, affinity cookies or cached DNS)"
    } else {
        ""
    };
    Some(vec![
        strong("Observed split: "),
        text(format!(
            "{:.1}% of {} requests reached {} while the router was asked for {}% (measured {}){sustained}.",
            o.share,
            o.requests,
            rollout.spec.target.canary.version,
            o.requested,
            when(o.at)
        )),
    ])
}

/// What the rollback check showed, if the policy asks for one.
fn verification_item(rollout: &Rollout) -> Option<Vec<Span>> {
    let f = rollout.failure.as_ref()?;
    let seen = f.verification.clone().unwrap_or_default();
    match (f.verified, &rollout.plan.rollback_check) {
        (Some(true), _) => Some(vec![strong("Verified: "), text(format!("metrics show canary traffic stopped ({seen})."))]),
        (Some(false), _) => Some(vec![
            strong("NOT verified: "),
            text(format!(
                "metrics did not show canary traffic stopping ({seen}); users may still reach {}.",
                rollout.spec.target.canary.version
            )),
        ]),
        (None, Some(check)) => Some(vec![text(format!(
            "Checking that canary traffic stops ({} {}); the result will be added here.",
            check.name,
            check.rule()
        ))]),
        (None, None) => None,
    }
}

fn links(rollout: &Rollout, public_url: &str) -> Vec<Vec<Span>> {
    let base = public_url.trim_end_matches('/');
    let id = &rollout.id;
    vec![
        vec![Span::Link("Status".into(), format!("{base}/api/rollouts/{id}"))],
        vec![Span::Link("Timeline".into(), format!("{base}/api/dashboard/{id}"))],
        vec![text("CLI: "), code(format!("sluice status {id}"))],
    ]
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
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
