use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::{json, Value};

use super::spec::{validate, with_bake};
use super::*;
use crate::domain::rollout::{Outcome, Phase, RefusalKind, Stage};
use crate::domain::spec::ProviderNames;

fn names() -> ProviderNames {
    ProviderNames { traffic: vec!["local"], metrics: vec!["local"], backlog: vec!["local"], notify: vec!["console"], no_preview: vec![] }
}

fn target(name: &str, version: &str) -> Value {
    json!({
        "name": name,
        "router": {"provider": "local", "settings": {"url": "http://127.0.0.1:1"}},
        "stable": {"name": "stable", "version": "v1"},
        "canary": {"name": "canary", "version": version}
    })
}

fn doc() -> Value {
    json!({
        "name": "shop",
        "version": "v2",
        "waves": [
            {"name": "ring0", "targets": [target("shop-a", "v2")], "strategy": {"canary": {"steps": [{"setWeight": 20}]}}, "bake": "1h",
             "approval": {"minApprovers": 2}},
            {"name": "ring1", "targets": [target("shop-b", "v2"), target("shop-c", "v2")],
             "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}
        ],
        "backlog": {"provider": "local"}
    })
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time")
}

fn release_of(doc: &Value) -> Release {
    let (spec, _) = validate(doc, &names()).expect("valid");
    Release::new(RolloutId::parse("shop-1").expect("id"), spec, Actor::parse("ci").expect("actor"), now()).0
}

fn phases(r: &Release, wave: usize, phase: Phase) -> Vec<(RolloutId, Phase)> {
    r.runs[wave].iter().map(|t| (t.rollout.clone(), phase)).collect()
}

fn observe(r: &Release, seen: Vec<(RolloutId, Phase)>) -> ReleaseDecision {
    decide(r, &ReleaseEvent::Observed(seen.into_iter().map(|(id, phase)| Seen::new(id, phase)).collect()), now())
}

#[test]
fn every_problem_is_reported_at_its_path_in_the_release() {
    let mut bad = doc();
    bad["waves"][0]["targets"][0]["canary"]["version"] = json!("v3");
    bad["waves"][1]["targets"][1]["name"] = json!("shop-a");
    bad["waves"][1]["approval"] = json!({"minApprovers": 1});
    bad["waves"][1]["targets"][0]["router"]["provider"] = json!("nope");
    bad["waves"][0]["strategy"]["canary"]["steps"][0]["setWeight"] = json!(140);
    // All at once: the schema's (a weight over 100, an unknown provider) and the release's own.
    let problems: Vec<String> = validate(&bad, &names()).expect_err("invalid").iter().map(|p| p.path.clone()).collect();
    for path in [
        "waves[0].strategy.canary.steps[0].setWeight",
        "waves[1].targets[0].router.provider",
        "waves[0].targets[0].canary.version",
        "waves[1].targets[1].name",
        "waves[1].approval",
    ] {
        assert!(problems.contains(&path.to_string()), "{path} missing from {problems:?}");
    }
    // With the schema's fixed, the release's own are still there, found beside the targets' checks.
    bad["waves"][0]["strategy"]["canary"]["steps"][0]["setWeight"] = json!(40);
    bad["waves"][1]["targets"][0]["router"]["provider"] = json!("local");
    let problems: Vec<String> = validate(&bad, &names()).expect_err("invalid").iter().map(|p| p.path.clone()).collect();
    assert_eq!(problems, ["waves[0].targets[0].canary.version", "waves[1].approval", "waves[1].targets[1].name"], "{problems:?}");
}

#[test]
fn a_target_problem_found_by_the_rollout_checks_is_placed_in_its_wave() {
    let mut bad = doc();
    bad["waves"][1]["strategy"] = json!({"canary": {"steps": [{"analysis": {"templates": ["missing"]}}]}});
    let problems = validate(&bad, &names()).expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.iter().all(|p| p.starts_with("waves[1].strategy.canary.steps[0]")), "{paths:?}");
    // Reported once although both targets of the wave share the strategy.
    assert_eq!(paths.len(), 1, "{paths:?}");
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/release-spec.schema.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("schema file")).expect("json");
    assert_eq!(
        committed,
        spec::json_schema(),
        "regenerate with: cargo run --release -- schema --release > schema/release-spec.schema.json"
    );
}

#[test]
fn the_example_release_validates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/releases/three-regions.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("json");
    let (spec, plans) = validate(&doc, &names()).expect("valid");
    assert_eq!(spec.waves.len(), 3);
    assert!(plans[0][0].summary().contains("100% → pause 1d → promote"), "{}", plans[0][0].summary());
}

#[test]
fn a_bake_holds_everyone_on_the_new_version_before_promotion() {
    let (_, plans) = validate(&doc(), &names()).expect("valid");
    assert_eq!(
        plans[0][0].stages,
        vec![
            Stage::SetWeight { weight: 20.try_into().expect("w") },
            Stage::SetWeight { weight: 100.try_into().expect("w") },
            Stage::Pause { duration_ms: Some(3_600_000) },
            Stage::Promote
        ]
    );
    // Already at 100 %: no second setWeight.
    let baked = with_bake(with_bake(plans[1][0].clone(), 1000), 2000);
    let weights = baked.stages.iter().filter(|s| matches!(s, Stage::SetWeight { weight } if u8::from(*weight) == 100)).count();
    assert_eq!(weights, 1, "{:?}", baked.stages);
}

#[test]
fn rollout_ids_are_derived_valid_and_bounded() {
    let long = RolloutId::parse(&"r".repeat(60)).expect("id");
    let id = rollout_id(&long, 3, &"t".repeat(60));
    assert!(id.len() <= 63, "{id}");
    assert_eq!(id, rollout_id(&long, 3, &"t".repeat(60)), "the same on every try");
    assert_ne!(id, rollout_id(&long, 2, &"t".repeat(60)));
    assert_eq!(rollout_id(&RolloutId::parse("shop-1").expect("id"), 0, "shop-a").as_str(), "shop-1-w1-shop-a");
}

#[test]
fn waves_start_in_order_and_a_gate_waits_for_distinct_approvers() {
    let r = release_of(&doc());
    let d = observe(&r, vec![]);
    assert_eq!(d.commands, vec![ReleaseCommand::StartRollout { wave: 0, target: 0 }]);
    // Created but not finished: nothing new; a repeated observation starts nothing twice.
    let d = observe(&d.release, phases(&r, 0, Phase::Progressing));
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    let d = observe(&d.release, phases(&r, 0, Phase::Succeeded));
    assert_eq!(d.release.phase, ReleasePhase::AwaitingApproval);
    assert!(d.commands.is_empty());
    let gated = d.release;
    let by = |n: &str| Actor::parse(n).expect("actor");
    let self_approval = decide(&gated, &ReleaseEvent::Approved { by: by("ci") }, now());
    assert!(matches!(self_approval.outcome, Outcome::Refused(ref r) if r.kind == RefusalKind::Forbidden));
    let one = decide(&gated, &ReleaseEvent::Approved { by: by("alice") }, now());
    assert_eq!(one.release.phase, ReleasePhase::AwaitingApproval);
    let again = decide(&one.release, &ReleaseEvent::Approved { by: by("alice") }, now());
    assert!(matches!(again.outcome, Outcome::Refused(ref r) if r.kind == RefusalKind::Conflict));
    let two = decide(&one.release, &ReleaseEvent::Approved { by: by("bob") }, now());
    assert_eq!((two.release.phase, two.release.wave), (ReleasePhase::Running, 1));
    assert_eq!(
        two.commands,
        vec![ReleaseCommand::StartRollout { wave: 1, target: 0 }, ReleaseCommand::StartRollout { wave: 1, target: 1 }]
    );
    let done = observe(&two.release, phases(&two.release, 1, Phase::Succeeded));
    assert_eq!(done.release.phase, ReleasePhase::Succeeded);
    assert!(done.release.settled() && done.release.wake_at.is_none());
}

#[test]
fn a_failed_target_halts_the_release_stops_its_siblings_and_files_one_issue() {
    let mut doc = doc();
    doc["waves"][0].as_object_mut().expect("wave").remove("approval");
    let r = release_of(&doc);
    let r = observe(&r, phases(&r, 0, Phase::Succeeded)).release;
    assert_eq!(r.wave, 1);
    let (b, c) = (r.runs[1][0].rollout.clone(), r.runs[1][1].rollout.clone());
    let failed = Seen { rollout: b.clone(), phase: Phase::RolledBack, cause: Some("error-rate 0.2 is not < 0.02".into()) };
    let d = decide(&r, &ReleaseEvent::Observed(vec![failed, Seen::new(c.clone(), Phase::Progressing)]), now());
    assert_eq!(d.release.phase, ReleasePhase::Halted);
    let failure = d.release.failure.clone().expect("failure");
    assert_eq!(failure.reason, "target shop-b in wave ring1 rolled back: error-rate 0.2 is not < 0.02");
    assert_eq!((failure.wave, failure.target.as_deref(), failure.rollout.as_ref()), (1, Some("shop-b"), Some(&b)));
    assert!(d.commands.contains(&ReleaseCommand::AbortRollout { rollout: c.clone(), reason: "release shop-1 halted".into() }));
    assert!(d.commands.contains(&ReleaseCommand::OpenIssue));
    // Default policy: the promoted first wave stays.
    assert!(!d.commands.iter().any(|c| matches!(c, ReleaseCommand::RevertPromoted { .. })), "{:?}", d.commands);
    // Seen again: no second issue, no second halt entry.
    let again = observe(&d.release, vec![(b, Phase::RolledBack), (c.clone(), Phase::RollingBack)]);
    assert!(!again.commands.contains(&ReleaseCommand::OpenIssue));
    assert!(again.history.is_empty(), "{:?}", again.history);
    let filed = decide(&again.release, &ReleaseEvent::IssueOpened { issue: IssueRef { id: "1".into(), url: "file:///1".into() } }, now());
    assert!(!filed.release.settled(), "a sibling is still rolling back");
    let settled = observe(&filed.release, vec![(c, Phase::Aborted)]);
    assert!(settled.release.settled() && settled.release.wake_at.is_none());
}

#[test]
fn the_roll_back_policy_puts_promoted_waves_back_and_retries_until_it_holds() {
    let mut doc = doc();
    doc["waves"][0].as_object_mut().expect("wave").remove("approval");
    doc["onFailure"] = json!({"earlierWaves": "rollBack"});
    let r = release_of(&doc);
    let r = observe(&r, phases(&r, 0, Phase::Succeeded)).release;
    let a = r.runs[0][0].rollout.clone();
    let d = observe(&r, vec![(r.runs[1][0].rollout.clone(), Phase::RolledBack), (r.runs[1][1].rollout.clone(), Phase::Succeeded)]);
    // The first wave and the promoted sibling of the failed target.
    let reverts: Vec<_> = d.commands.iter().filter(|c| matches!(c, ReleaseCommand::RevertPromoted { .. })).collect();
    assert_eq!(reverts.len(), 2, "{:?}", d.commands);
    assert!(d.commands.contains(&ReleaseCommand::RevertPromoted { rollout: a.clone() }));
    let failed = decide(&d.release, &ReleaseEvent::RevertFailed { rollout: a.clone(), error: "503".into() }, now());
    let later = failed.release.wake_at.expect("a retry is scheduled");
    let early = decide(&failed.release, &ReleaseEvent::Observed(vec![]), now());
    assert!(!early.commands.contains(&ReleaseCommand::RevertPromoted { rollout: a.clone() }), "not before its time");
    let retried = decide(&failed.release, &ReleaseEvent::Observed(vec![]), later);
    assert!(retried.commands.contains(&ReleaseCommand::RevertPromoted { rollout: a.clone() }));
    let done = decide(&retried.release, &ReleaseEvent::Reverted { rollout: a }, later);
    assert!(done.release.runs[0][0].reverted.as_ref().map(|v| v.done).unwrap_or(false));
}

#[test]
fn an_abort_stops_running_targets_and_files_no_issue_and_a_gate_times_out_by_its_rule() {
    let r = release_of(&doc());
    let r = observe(&r, phases(&r, 0, Phase::Progressing)).release;
    let d = decide(&r, &ReleaseEvent::AbortRequested { by: Actor::parse("alice").expect("a"), reason: "freeze".into() }, now());
    assert_eq!(d.release.phase, ReleasePhase::Aborted);
    assert_eq!(
        d.commands,
        vec![ReleaseCommand::AbortRollout { rollout: r.runs[0][0].rollout.clone(), reason: "release shop-1 aborted by alice".into() }]
    );
    let twice = decide(&d.release, &ReleaseEvent::AbortRequested { by: Actor::parse("alice").expect("a"), reason: String::new() }, now());
    assert!(matches!(twice.outcome, Outcome::Refused(_)));

    let mut timed = doc();
    timed["waves"][0]["approval"] = json!({"minApprovers": 1, "timeout": "10m", "onTimeout": "rollback"});
    let r = release_of(&timed);
    let gated = observe(&r, phases(&r, 0, Phase::Succeeded)).release;
    assert_eq!(gated.wake_at, Some(now() + TimeDelta::minutes(10)));
    let late = decide(&gated, &ReleaseEvent::Observed(vec![]), now() + TimeDelta::minutes(11));
    assert_eq!(late.release.phase, ReleasePhase::Halted);
    assert!(late.commands.contains(&ReleaseCommand::OpenIssue));
}
