//! The one issue a halted release gets: which wave and target failed and
//! why, what the failure policy did, and a link to every target's rollout.

use super::doc::{code, strong, text, Block, Doc, Span};
use super::IssueDraft;
use super::TITLE_CHARS;
use crate::domain::bounded::clip;
use crate::domain::release::{EarlierWaves, Release};

/// How far back an issue of this release may have been opened.
const LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The issue of a halted release; keyed by the release's id, so a retry finds it.
pub fn release_halted(release: &Release, public_url: &str) -> IssueDraft {
    let base = public_url.trim_end_matches('/');
    let spec = &release.spec;
    let failure = release.failure.as_ref();
    let wave_name = failure.and_then(|f| spec.waves.get(f.wave)).map(|w| w.name.as_str()).unwrap_or("?");
    let target = failure.and_then(|f| f.target.clone());
    let title = match &target {
        Some(t) => format!("Release of {} {} halted: {t} failed in wave {wave_name}", spec.name, spec.version),
        None => format!("Release of {} {} halted at wave {wave_name}", spec.name, spec.version),
    };
    let title = clip(&title, TITLE_CHARS);
    let mut body = Doc::default();
    body.push(Block::Heading("What happened".into()));
    body.push(Block::Para(vec![
        text("The release "),
        code(release.id.as_str()),
        text(" of "),
        strong(spec.name.as_str()),
        text(" "),
        strong(&spec.version),
        text(" halted: "),
        text(failure.map(|f| f.reason.clone()).unwrap_or_default()),
        text(". No further wave will start."),
    ]));
    let policy = match spec.on_failure.earlier_waves {
        EarlierWaves::Stay => "Targets already promoted stay on the new version (policy: stay).",
        EarlierWaves::RollBack => "Targets already promoted are being put back on their stable version (policy: rollBack).",
    };
    body.push(Block::Para(vec![text(policy)]));
    body.push(Block::Heading("Waves".into()));
    let mut rows = Vec::new();
    for (w, runs) in release.runs.iter().enumerate() {
        for run in runs {
            let phase = run.phase.map(|p| p.to_string()).unwrap_or_else(|| "not started".into());
            let phase = if run.reverted.is_some() { format!("{phase}, reverted by policy") } else { phase };
            rows.push(vec![spec.waves[w].name.clone(), run.target.clone(), phase, run.rollout.to_string()]);
        }
    }
    body.push(Block::Table { head: vec!["Wave".into(), "Target".into(), "Phase".into(), "Rollout".into()], rows });
    body.push(Block::Heading("Links".into()));
    let mut links = vec![vec![
        Span::Link("Release".into(), format!("{base}/api/waves/{}", release.id)),
        text(" · "),
        code(format!("sluice status {}", release.id)),
    ]];
    for run in release.runs.iter().flatten().filter(|r| r.phase.is_some()) {
        links.push(vec![
            text(format!("{}: ", run.target)),
            Span::Link(run.rollout.to_string(), format!("{base}/api/dashboard/{}", run.rollout)),
        ]);
    }
    body.push(Block::List(links));
    body.push(Block::Marker(super::marker(&release.id)));
    body.push(Block::Marker(super::failure_marker(&release.id)));
    let mut labels = vec!["sluice".into(), "release-halted".into(), format!("service:{}", spec.name)];
    if let Some(t) = target {
        labels.push(format!("target:{t}"));
    }
    IssueDraft { rollout_id: release.id.to_string(), title, body, labels, not_before: release.created_at - LOOKBACK, rollout_failure: true }
}
