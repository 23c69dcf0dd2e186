//! Tests of the state machine: one per rule, plus property tests over
//! random event sequences.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};

use super::*;
use crate::domain::ids::{Actor, RequestId, RolloutId, Weight};
use crate::domain::spec::{validate, ProviderNames};

fn names() -> ProviderNames {
    ProviderNames { traffic: vec!["local"], metrics: vec!["local"], backlog: vec!["local"], notify: vec!["console"], no_preview: vec![] }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid time")
}

fn metric(name: &str, count: Option<u32>) -> Value {
    let mut m = json!({"name": name, "provider": "local", "query": "error_rate", "successCondition": "< 0.05",
                   "interval": "10s", "minSampleSize": 10});
    if let Some(c) = count {
        m["count"] = json!(c);
    }
    m
}

fn base(strategy: Value) -> Value {
    json!({
        "target": {"name": "api", "router": {"provider": "local"},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": strategy,
        "backlog": {"provider": "local"}
    })
}

/// 5% → analysis(2) → 20% → approval(2 of alice, bob, carol; 1h, rollback) → 50% → pause 10s → pause → promote
fn canary_doc() -> Value {
    base(json!({"canary": {"steps": [
        {"setWeight": 5},
        {"analysis": {"metrics": [metric("errors", Some(2))]}},
        {"setWeight": 20},
        {"approval": {"minApprovers": 2, "approvers": ["alice", "bob", "carol"], "timeout": "1h"}},
        {"setWeight": 50},
        {"pause": {"duration": "10s"}},
        {"pause": {}}
    ]}}))
}

fn blue_green_doc() -> Value {
    base(json!({"blueGreen": {
        "prePromotionAnalysis": {"metrics": [metric("preview", Some(1))]},
        "autoPromoteAfter": "30s",
        "postPromotionAnalysis": {"metrics": [metric("bake", Some(2))]},
        "scaleDownDelay": "5m"
    }}))
}

fn new_rollout(doc: Value) -> Rollout {
    let (spec, plan) = validate(&doc, &names()).unwrap_or_else(|p| panic!("{p}"));
    Rollout::new(RolloutId::parse("r-1").expect("id"), spec, plan, actor("ci"), t0()).0
}

/// Applies an event that must be applied, returning the decision.
fn step(r: &mut Rollout, event: Event, now: DateTime<Utc>) -> Decision {
    let d = decide(r, event.clone(), now);
    assert!(!d.is_ignored(), "{event:?} was ignored in {}: {:?}", r.phase, d.outcome);
    *r = d.next.clone();
    d
}

fn actor(name: &str) -> Actor {
    Actor::parse(name).expect("actor")
}

fn w(percent: u64) -> Weight {
    Weight::new(percent).expect("weight")
}

/// Checks that a refused event changed nothing but, for a person's request,
/// one history row saying who asked and why it was refused.
fn assert_only_recorded(r: &Rollout, event: &Event, d: &Decision) {
    assert!(d.commands.is_empty(), "{event:?} emitted {:?}", d.commands);
    if event.actor().is_some() && matches!(d.outcome, Outcome::Refused(_)) && !d.history.is_empty() {
        assert_eq!(d.history.len(), 1);
        assert!(d.history[0].cause.ends_with("Refused"), "{:?}", d.history[0]);
        assert_eq!(d.history[0].by.as_deref(), event.actor().map(|a| a.as_str()));
        let mut same = d.next.clone();
        same.version = r.version;
        same.history_len = r.history_len;
        same.updated_at = r.updated_at;
        same.refused_requests = r.refused_requests.clone();
        assert_eq!(same, *r, "{event:?} changed more than the history");
    } else {
        assert_eq!(d.next, *r, "{event:?} changed the state");
        assert!(d.history.is_empty());
    }
}

fn ignored(r: &Rollout, event: Event, now: DateTime<Utc>) -> String {
    let d = decide(r, event.clone(), now);
    assert_only_recorded(r, &event, &d);
    match d.outcome {
        Outcome::Refused(refusal) => refusal.reason,
        Outcome::Duplicate => "duplicate".into(),
        Outcome::Applied => panic!("{event:?} was applied"),
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn pass() -> MeasureOutcome {
    MeasureOutcome::Value { canary: 0.01, stable: None, samples: Some(100) }
}

fn breach() -> MeasureOutcome {
    MeasureOutcome::Value { canary: 0.2, stable: None, samples: Some(100) }
}

fn measure_keys(d: &Decision) -> Vec<MeasurementKey> {
    d.commands.iter().filter_map(|c| if let Command::Measure { key, .. } = c { Some(key.clone()) } else { None }).collect()
}

fn alert(id: &str) -> Event {
    Event::AlertFired {
        alert: AlertInfo {
            id: id.into(),
            rule: "canary-5xx".into(),
            severity: "Sev1".into(),
            summary: "5xx above 5%".into(),
            source: "Azure Monitor".into(),
            fired_at: None,
            link: None,
        },
    }
}

/// Walks the canary plan to its approval gate.
fn to_approval(r: &mut Rollout) {
    let d = step(r, Event::Start, at(0));
    assert_eq!(d.commands[0], Command::SetWeight { weight: w(5), id: 1 });
    let d = step(r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let keys = measure_keys(&d);
    assert_eq!(keys.len(), 1);
    let d = step(r, Event::Measured { key: keys[0].clone(), outcome: pass() }, at(11));
    let keys = measure_keys(&d);
    step(r, Event::Measured { key: keys[0].clone(), outcome: pass() }, at(21));
    assert_eq!(r.traffic.weight, 20);
    let d = step(r, Event::TrafficConfirmed { weight: w(20) }, at(22));
    assert_eq!(r.phase, Phase::AwaitingApproval);
    assert!(d.commands.iter().any(|c| matches!(c, Command::RequestApproval { .. })));
}

/// A crash between the router's swap and the save makes the engine decide
/// the promotion again, later, from the same saved state: the router must
/// recognise it as the same promotion, or it swaps back.
#[test]
fn a_promotion_decided_again_after_a_crash_is_named_the_same() {
    let mut paused = new_rollout(canary_doc());
    to_approval(&mut paused);
    step(&mut paused, Event::Approved { by: actor("alice"), stage: None, request: None }, at(30));
    step(&mut paused, Event::Approved { by: actor("bob"), stage: None, request: None }, at(31));
    let d = step(&mut paused, Event::TrafficConfirmed { weight: w(50) }, at(32));
    let Command::ScheduleStep { seq, .. } = d.commands[0] else { panic!("expected a scheduled step, got {:?}", d.commands) };
    step(&mut paused, Event::StepDue { seq }, at(42));
    let promote = |now: i64| {
        let mut r = paused.clone();
        let d = step(&mut r, Event::PromoteRequested { by: actor("alice"), full: false, stage: None, request: None }, at(now));
        let since = d.commands.iter().find_map(|c| match c {
            Command::Promote { since, .. } => Some(*since),
            _ => None,
        });
        (since, r.traffic.pending.map(|p| (p.since, p.issued_at)))
    };
    let (first, again) = (promote(50), promote(95));
    assert_eq!(first.0, Some(paused.created_at), "a promotion is named by the rollout's creation");
    assert_eq!(first.0, again.0, "decided again later, it is the same promotion");
    assert_eq!(first.1, Some((paused.created_at, at(50))), "kept for its retries; issued when decided");
    assert_eq!(again.1, Some((paused.created_at, at(95))));
}

#[test]
fn a_canary_walks_every_phase_to_success() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    step(&mut r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(30));
    assert_eq!(r.phase, Phase::AwaitingApproval, "one of two approvals");
    let d = step(&mut r, Event::Approved { by: actor("bob"), stage: None, request: None }, at(31));
    assert!(matches!(d.commands[0], Command::SetWeight { weight, .. } if weight == 50));
    assert_eq!(r.phase, Phase::Progressing);
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(50) }, at(32));
    let seq = match d.commands[0] {
        Command::ScheduleStep { seq, at: when } => {
            assert_eq!(when, at(42));
            seq
        }
        ref other => panic!("expected a scheduled step, got {other:?}"),
    };
    step(&mut r, Event::StepDue { seq }, at(42));
    assert_eq!(r.phase, Phase::Paused, "an untimed pause waits for a person");
    step(&mut r, Event::PromoteRequested { by: actor("alice"), full: false, stage: None, request: None }, at(50));
    assert_eq!(r.phase, Phase::Promoting);
    let d = step(&mut r, Event::Promoted, at(51));
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(d.commands.iter().any(|c| matches!(c, Command::Notify { kind: NotifyKind::Succeeded, .. })));
    assert_eq!(r.history_len, 12, "one history entry per applied event plus creation");
    assert!(r.runs.iter().all(|run| run.status != RunStatus::Running));
}

#[test]
fn rollback_is_possible_from_every_non_terminal_phase() {
    // Reach each phase, fire an alert, and check the rollback.
    let mut cases: Vec<(&str, Rollout)> = Vec::new();
    let r = new_rollout(canary_doc());
    cases.push(("pending", r.clone()));
    let mut p = r.clone();
    step(&mut p, Event::Start, at(0));
    cases.push(("progressing", p.clone()));
    let mut a = r.clone();
    to_approval(&mut a);
    cases.push(("awaiting approval", a.clone()));
    let mut paused = a.clone();
    step(&mut paused, Event::Approved { by: actor("alice"), stage: None, request: None }, at(30));
    step(&mut paused, Event::Approved { by: actor("carol"), stage: None, request: None }, at(31));
    step(&mut paused, Event::TrafficConfirmed { weight: w(50) }, at(32));
    let seq = paused.seq;
    step(&mut paused, Event::StepDue { seq }, at(42));
    assert_eq!(paused.phase, Phase::Paused);
    cases.push(("paused", paused.clone()));
    let mut promoting = paused.clone();
    step(&mut promoting, Event::PromoteRequested { by: actor("bob"), full: false, stage: None, request: None }, at(50));
    assert_eq!(promoting.phase, Phase::Promoting);
    cases.push(("promoting", promoting));

    let mut bg = new_rollout(blue_green_doc());
    let d = step(&mut bg, Event::Start, at(0));
    let key = measure_keys(&d)[0].clone();
    step(&mut bg, Event::Measured { key, outcome: pass() }, at(10));
    let seq = bg.seq;
    step(&mut bg, Event::StepDue { seq }, at(40));
    let d = step(&mut bg, Event::TrafficConfirmed { weight: w(100) }, at(41));
    assert!(!measure_keys(&d).is_empty(), "post-promotion bake is measuring");
    cases.push(("post-promotion bake", bg.clone()));
    let d = step(&mut bg, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: pass() }, at(51));
    step(&mut bg, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: pass() }, at(61));
    step(&mut bg, Event::Promoted, at(62));
    assert_eq!(bg.phase, Phase::Promoting, "scale-down delay");
    assert!(bg.traffic.promoted);
    cases.push(("scale-down window", bg));

    for (name, r) in cases {
        let phase = r.phase;
        let promoted = r.traffic.promoted;
        let mut r = r;
        let d = step(&mut r, alert("a-1"), at(100));
        assert!(
            matches!(d.commands[0], Command::RevertTraffic { undo_promotion, .. } if undo_promotion == promoted),
            "{name}: RevertTraffic must come first, got {:?}",
            d.commands
        );
        assert_eq!(r.phase, Phase::RollingBack, "{name}");
        assert_eq!(d.commands.iter().filter(|c| matches!(c, Command::OpenBacklogIssue { .. })).count(), 1, "{name}");
        let entry = &d.history[0];
        assert_eq!((entry.from, entry.to, entry.cause.as_str()), (phase, Phase::RollingBack, "AlertFired"), "{name}");
        assert!(matches!(&entry.evidence, Some(Evidence::Alert { alert }) if alert.id == "a-1"), "{name}");
        step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(101));
        assert_eq!((r.phase, r.traffic.weight), (Phase::RolledBack, w(0)), "{name}");
        assert_eq!(r.failure.as_ref().and_then(|f| f.reverted_at), Some(at(101)), "{name}");
        assert!(r.runs.iter().all(|run| run.status != RunStatus::Running), "{name}: analysis stopped");
    }
}

#[test]
fn stale_and_late_events_change_nothing() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    assert!(ignored(&r, Event::StepDue { seq: 99 }, at(1)).starts_with("stale timer"));
    assert!(ignored(&r, Event::TrafficConfirmed { weight: w(20) }, at(1)).starts_with("stale confirmation"));
    assert!(ignored(&r, Event::Start, at(1)).starts_with("already started"));
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let key = measure_keys(&d)[0].clone();
    step(&mut r, Event::Measured { key: key.clone(), outcome: pass() }, at(11));
    assert!(ignored(&r, Event::Measured { key, outcome: breach() }, at(12)).starts_with("stale measurement"));
    step(&mut r, Event::AbortRequested { by: actor("alice"), reason: "wrong build".into(), request: None }, at(13));
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(14));
    assert_eq!(r.phase, Phase::Aborted);
    assert!(matches!(r.backlog, BacklogState::None), "an abort opens no issue");
    for e in [alert("x"), Event::Approved { by: actor("bob"), stage: None, request: None }, Event::Start, Event::Tick, Event::Promoted] {
        assert!(!ignored(&r, e, at(20)).is_empty());
    }
}

#[test]
fn a_thousand_alerts_make_one_rollback_and_one_issue() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    let mut reverts = 0;
    let mut issues = 0;
    for i in 0..1000 {
        let d = decide(&r, alert(&format!("a-{}", i % 3)), at(100 + i));
        reverts += d.commands.iter().filter(|c| matches!(c, Command::RevertTraffic { .. })).count();
        issues += d.commands.iter().filter(|c| matches!(c, Command::OpenBacklogIssue { .. })).count();
        r = d.next;
        if i == 10 {
            r = decide(&r, Event::TrafficConfirmed { weight: w(0) }, at(111)).next;
        }
    }
    assert_eq!((reverts, issues, r.phase), (1, 1, Phase::RolledBack));
}

#[test]
fn past_the_history_limit_only_transitions_get_rows_and_the_rest_is_counted() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    let (start, spam) = (r.history_len, HISTORY_ROWS_KEPT + 3_000);
    let mut last_seq = start;
    for _ in 0..spam {
        let d = decide(&r, Event::Approved { by: actor("mallory"), stage: None, request: None }, at(30));
        assert!(matches!(d.outcome, Outcome::Refused(_)), "{:?}", d.outcome);
        for row in &d.history {
            assert_eq!(row.seq, last_seq + 1, "rows stay gap-free");
            last_seq = row.seq;
        }
        r = d.next;
    }
    assert_eq!(r.history_len, HISTORY_ROWS_KEPT, "no row past the limit for a refused request");
    let folded = spam - (HISTORY_ROWS_KEPT - start);
    assert_eq!(r.unrecorded.get("ApprovedRefused"), Some(&folded));
    // The rollback is a transition: it gets its row, which tells what was folded.
    let d = step(&mut r, alert("past-the-limit"), at(40));
    assert_eq!(r.phase, Phase::RollingBack);
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].seq, HISTORY_ROWS_KEPT + 1);
    assert!(d.history[0].summary.contains(&format!("ApprovedRefused ×{folded}")), "{}", d.history[0].summary);
    assert!(r.unrecorded.is_empty());
}

#[test]
fn approvals_need_distinct_allowed_people_and_not_the_initiator() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    assert_eq!(
        ignored(&r, Event::Approved { by: actor("mallory"), stage: None, request: None }, at(30)),
        "mallory is not an allowed approver (allowed: alice, bob, carol)"
    );
    step(&mut r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(31));
    assert_eq!(ignored(&r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(32)), "alice has already approved");
    assert_eq!(r.approvals.len(), 1);
    assert!(r.waiting_for(at(33)).starts_with("approval 1/2 from alice, bob, carol"));
    step(&mut r, Event::Approved { by: actor("carol"), stage: None, request: None }, at(34));
    assert_eq!(r.phase, Phase::Progressing);

    let mut doc = canary_doc();
    doc["strategy"]["canary"]["steps"][3] = json!({"approval": {}});
    let mut r = new_rollout(doc);
    to_approval(&mut r);
    assert_eq!(
        ignored(&r, Event::Approved { by: actor("ci"), stage: None, request: None }, at(30)),
        "ci started this rollout and cannot approve it"
    );
    doc = canary_doc();
    doc["strategy"]["canary"]["steps"][3] = json!({"approval": {"allowSelfApproval": true}});
    let mut r = new_rollout(doc);
    to_approval(&mut r);
    step(&mut r, Event::Approved { by: actor("ci"), stage: None, request: None }, at(30));
    assert_eq!(r.phase, Phase::Progressing);
}

#[test]
fn approvers_are_compared_by_id_named_in_any_case_or_by_group() {
    let person =
        |name: &str, id: &str, groups: &[&str]| Actor::identified(name, id, groups.iter().map(|g| g.to_string()).collect()).expect("actor");
    let mut doc = canary_doc();
    doc["strategy"]["canary"]["steps"][3] = json!({"approval": {"approvers": ["Alice@Contoso.com", "group:0b1c"], "minApprovers": 2}});
    let mut r = new_rollout(doc);
    to_approval(&mut r);
    // "CI" is whoever started it ("ci"), whatever the case.
    assert_eq!(
        ignored(&r, Event::Approved { by: actor("CI"), stage: None, request: None }, at(30)),
        "CI is not an allowed approver (allowed: Alice@Contoso.com, group:0b1c)"
    );
    step(&mut r, Event::Approved { by: person("alice@contoso.com", "t/oid-a", &[]), stage: None, request: None }, at(31));
    // The same person under another display name has already approved.
    assert_eq!(
        ignored(&r, Event::Approved { by: person("Alice Smith", "t/oid-a", &["0b1c"]), stage: None, request: None }, at(32)),
        "Alice Smith has already approved"
    );
    assert_eq!(
        ignored(&r, Event::Approved { by: person("dave@contoso.com", "t/oid-d", &["ffff"]), stage: None, request: None }, at(33)),
        "dave@contoso.com is not an allowed approver (allowed: Alice@Contoso.com, group:0b1c)"
    );
    step(&mut r, Event::Approved { by: person("bob@contoso.com", "t/oid-b", &["0B1C"]), stage: None, request: None }, at(34));
    assert_eq!(r.phase, Phase::Progressing);
}

#[test]
fn whoever_started_a_rollout_cannot_approve_it_under_another_name() {
    let mut doc = canary_doc();
    doc["strategy"]["canary"]["steps"][3] = json!({"approval": {}});
    let started_by = Actor::identified("orders pipeline", "gh#repo:contoso/orders:environment:prod", vec![]).expect("actor");
    let (spec, plan) = validate(&doc, &names()).unwrap_or_else(|p| panic!("{p}"));
    let mut r = Rollout::new(RolloutId::parse("r-self").expect("id"), spec, plan, started_by, t0()).0;
    to_approval(&mut r);
    let again = Actor::identified("someone else", "gh#repo:contoso/orders:environment:prod", vec![]).expect("actor");
    assert_eq!(
        ignored(&r, Event::Approved { by: again, stage: None, request: None }, at(30)),
        "someone else started this rollout and cannot approve it"
    );
}

#[test]
fn approval_timeout_applies_its_policy() {
    for (policy, phase, backlog) in
        [("rollback", Phase::RolledBack, true), ("abort", Phase::Aborted, false), ("proceed", Phase::Progressing, false)]
    {
        let mut doc = canary_doc();
        doc["strategy"]["canary"]["steps"][3]["approval"]["onTimeout"] = json!(policy);
        let mut r = new_rollout(doc);
        to_approval(&mut r);
        let due = r.due_at.expect("a deadline");
        assert_eq!(due, at(22 + 3600));
        assert_eq!(ignored(&r, Event::Tick, at(60)), "nothing is due");
        let d = step(&mut r, Event::Tick, due);
        if phase != Phase::Progressing {
            assert!(matches!(d.commands[0], Command::RevertTraffic { .. }));
            step(&mut r, Event::TrafficConfirmed { weight: w(0) }, due);
        } else {
            assert!(matches!(d.commands[0], Command::SetWeight { weight, .. } if weight == 50));
        }
        assert_eq!(r.phase, phase, "{policy}");
        assert_eq!(!matches!(r.backlog, BacklogState::None), backlog, "{policy}");
    }
}

#[test]
fn rejection_rolls_back_with_who_and_why() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    let d = step(&mut r, Event::Rejected { by: actor("bob"), reason: "p95 doubled".into(), stage: None, request: None }, at(40));
    assert!(matches!(d.commands[0], Command::RevertTraffic { .. }));
    let entry = &d.history[0];
    assert_eq!(entry.by.as_deref(), Some("bob"));
    assert_eq!(entry.evidence, Some(Evidence::Rejected { by: "bob".into(), reason: "p95 doubled".into() }));
}

#[test]
fn breaching_analysis_rolls_back_with_the_measurements_as_evidence() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: breach() }, at(11));
    assert!(matches!(d.commands[0], Command::RevertTraffic { .. }));
    match &d.history[0].evidence {
        Some(Evidence::Analysis { metric, condition, measurements, reason, .. }) => {
            assert_eq!((metric.as_str(), condition.as_str()), ("errors", "< 0.05"));
            assert_eq!(measurements[0].canary, Some(0.2));
            assert!(reason.starts_with("failed 1 of 1 measurements (failure limit 0)"), "{reason}");
        }
        other => panic!("expected analysis evidence, got {other:?}"),
    }
    let issue = d.commands.iter().find_map(|c| if let Command::OpenBacklogIssue { evidence, .. } = c { Some(evidence) } else { None });
    assert!(matches!(issue, Some(Evidence::Analysis { .. })));
}

#[test]
fn no_data_is_inconclusive_and_follows_the_policy() {
    for (policy, expect) in [("pause", Phase::Paused), ("rollback", Phase::RollingBack), ("extend", Phase::Progressing)] {
        let mut doc = canary_doc();
        doc["policy"] = json!({"onInconclusive": policy, "maxExtensions": 1});
        let mut r = new_rollout(doc);
        step(&mut r, Event::Start, at(0));
        let d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
        let d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: MeasureOutcome::NoData }, at(11));
        assert_eq!(r.phase, expect, "{policy}");
        if policy == "extend" {
            // Extended once; the next inconclusive pauses: never a pass.
            let key = measure_keys(&d)[0].clone();
            let few = MeasureOutcome::Value { canary: 0.0, stable: None, samples: Some(3) };
            step(&mut r, Event::Measured { key, outcome: few }, at(21));
            assert_eq!(r.phase, Phase::Paused);
            // A person can re-measure with retry…
            let d = step(&mut r, Event::RetryRequested { by: actor("alice"), request: None }, at(30));
            assert_eq!(r.phase, Phase::Progressing);
            assert_eq!(measure_keys(&d).len(), 1, "re-runs the stage's analysis");
        }
        if policy == "pause" {
            // …or accept the step and move on with promote.
            step(&mut r, Event::PromoteRequested { by: actor("alice"), full: false, stage: None, request: None }, at(30));
            assert_eq!((r.phase, r.traffic.weight), (Phase::Progressing, w(20)));
        }
    }
}

#[test]
fn consecutive_provider_errors_fail_the_analysis() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let mut d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    for i in 0..4 {
        let err = MeasureOutcome::Error { message: "503 from provider".into() };
        d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: err }, at(10 + i));
        assert_eq!(r.phase, Phase::Progressing, "error {i} is within the limit of 4");
    }
    let err = MeasureOutcome::Error { message: "503 from provider".into() };
    step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: err }, at(20));
    assert_eq!(r.phase, Phase::RollingBack);
}

#[test]
fn alert_pause_policy_holds_and_resumes_when_resolved() {
    let mut doc = canary_doc();
    doc["policy"] = json!({"onAlert": "pause"});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let d = step(&mut r, alert("a-9"), at(5));
    assert_eq!((r.phase, r.traffic.weight), (Phase::Paused, w(5)));
    assert!(d.commands.iter().all(|c| !c.is_traffic()), "pausing holds the weight");
    assert!(ignored(&r, alert("a-10"), at(6)).starts_with("already paused"));
    assert!(ignored(&r, Event::AlertResolved { alert_id: "zzz".into() }, at(7)).starts_with("not paused for alert"));
    let d = step(&mut r, Event::AlertResolved { alert_id: "a-9".into() }, at(8));
    assert_eq!(r.phase, Phase::Progressing);
    assert_eq!(measure_keys(&d).len(), 1, "the stage's analysis is re-run");
}

#[test]
fn full_promotion_skips_to_the_next_approval_gate_and_that_gate_waits() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, Event::PromoteRequested { by: actor("alice"), full: true, stage: None, request: None }, at(1));
    assert_eq!((r.phase, r.stage), (Phase::AwaitingApproval, 3), "step 4 is the gate");
    assert!(d.commands.iter().any(|c| matches!(c, Command::RequestApproval { stage: 3, .. })), "{:?}", d.commands);
    assert!(!d.commands.iter().any(|c| matches!(c, Command::Promote { .. } | Command::SetWeight { .. })), "{:?}", d.commands);
    // The router's late confirmation of 5 % lands at the gate and does not move past it.
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(2));
    assert_eq!((r.phase, r.stage), (Phase::AwaitingApproval, 3));
    assert_eq!(
        ignored(&r, Event::PromoteRequested { by: actor("alice"), full: true, stage: None, request: None }, at(3)),
        "this step needs approval: use approve"
    );
    // Past the gate, with no gate left, a full promotion promotes.
    step(&mut r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(4));
    step(&mut r, Event::Approved { by: actor("bob"), stage: None, request: None }, at(5));
    assert_eq!(r.stage, 4);
    let d = step(&mut r, Event::PromoteRequested { by: actor("alice"), full: true, stage: None, request: None }, at(6));
    assert_eq!(r.phase, Phase::Promoting);
    assert!(matches!(d.commands[0], Command::Promote { .. }));
}

#[test]
fn a_router_that_cannot_be_driven_rolls_back_after_three_attempts() {
    let mut r = new_rollout(canary_doc());
    let d = step(&mut r, Event::Start, at(0));
    let Command::SetWeight { id, .. } = d.commands[0] else { panic!("expected SetWeight") };
    let mut id = id;
    for attempt in 1..=3 {
        let failed = Event::CommandFailed { command: CommandRef { kind: CommandKind::SetWeight, id }, error: "HTTP 500".into() };
        step(&mut r, failed.clone(), at(attempt * 100));
        assert!(!ignored(&r, failed, at(attempt * 100)).is_empty(), "a duplicate failure report counts once");
        if attempt < 3 {
            assert_eq!(ignored(&r, Event::Tick, at(attempt * 100 + 1)), "nothing is due", "backoff");
            let d = step(&mut r, Event::Tick, at(attempt * 100 + 60));
            let Command::SetWeight { id: next, .. } = d.commands[0] else { panic!("expected a retry") };
            id = next;
        }
    }
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(matches!(r.failure.as_ref().map(|f| &f.evidence), Some(Evidence::Router { attempts: 3, .. })));
}

#[test]
fn a_failing_revert_keeps_retrying_and_stays_rolling_back() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    let Command::RevertTraffic { mut id, .. } = d.commands[0] else { panic!("revert first") };
    for i in 0..10 {
        let now = at(10 + i * 100);
        step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::RevertTraffic, id }, error: "503".into() }, now);
        assert_eq!(r.phase, Phase::RollingBack);
        let d = step(&mut r, Event::Tick, now + TimeDelta::seconds(31));
        let Command::RevertTraffic { id: next, .. } = d.commands[0] else { panic!("retry revert") };
        id = next;
    }
    assert!(r.waiting_for(at(2000)).contains("put all traffic on stable"));
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(2000));
    assert_eq!(r.phase, Phase::RolledBack);
}

#[test]
fn a_failed_call_is_the_wake_ups_and_a_call_in_flight_the_sweeps() {
    let mut r = new_rollout(canary_doc());
    let d = step(&mut r, Event::Start, at(0));
    let Command::SetWeight { id, .. } = d.commands[0] else { panic!("expected SetWeight") };
    // In flight: lost only if its process dies, which the sweep finds; no wake-up is kept for it.
    assert_eq!(r.next_visit(), r.next_wake());
    assert!(r.sweep_at().is_some());
    step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::SetWeight, id }, error: "HTTP 500".into() }, at(100));
    // Failed: the wake-up comes when the backoff ends, and then the retry is due.
    let retry = r.next_visit().expect("a wake-up for the retry");
    assert!(retry > at(100) && Some(retry) == r.sweep_at(), "{retry} vs sweep {:?}", r.sweep_at());
    assert_eq!(ignored(&r, Event::Tick, retry - TimeDelta::milliseconds(1)), "nothing is due");
    assert!(matches!(step(&mut r, Event::Tick, retry).commands[0], Command::SetWeight { .. }));
}

#[test]
fn a_lost_traffic_command_is_reissued_by_the_tick() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    assert_eq!(ignored(&r, Event::Tick, at(10)), "nothing is due");
    let d = step(&mut r, Event::Tick, at(31));
    assert!(matches!(d.commands[0], Command::SetWeight { weight, .. } if weight == 5));
}

#[test]
fn backlog_outage_still_reverts_at_once_and_opens_the_issue_later() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    assert!(matches!(d.commands[0], Command::RevertTraffic { .. }));
    let issue_id = d.commands.iter().find_map(|c| if let Command::OpenBacklogIssue { id, .. } = c { Some(*id) } else { None });
    let issue_id = issue_id.expect("an issue is requested");
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(2));
    assert_eq!(r.phase, Phase::RolledBack);
    step(
        &mut r,
        Event::CommandFailed { command: CommandRef { kind: CommandKind::OpenBacklogIssue, id: issue_id }, error: "502".into() },
        at(3),
    );
    assert!(r.waiting_for(at(4)).contains("backlog issue not yet opened"));
    assert_eq!(ignored(&r, Event::Tick, at(5)), "nothing is due");
    let d = step(&mut r, Event::Tick, at(14));
    assert_eq!(r.phase, Phase::RolledBack, "terminal phase unchanged");
    assert!(d.commands.iter().all(|c| matches!(c, Command::OpenBacklogIssue { .. })));
    let issue = IssueRef { id: "7".into(), url: "file:///backlog/7.md".into() };
    let facts = Reported::of(&r);
    let d = step(&mut r, Event::BacklogOpened { issue: issue.clone(), reported: facts }, at(15));
    assert!(d.commands.is_empty(), "the issue says everything: {:?}", d.commands);
    assert_eq!(r.backlog, BacklogState::Opened { issue, reported: Reported::of(&r), updating: None });
    assert!(!ignored(&r, Event::Tick, at(1000)).is_empty());
}

fn comments(d: &Decision) -> Vec<(u64, Reported)> {
    d.commands
        .iter()
        .filter_map(|c| if let Command::CommentBacklogIssue { id, told, .. } = c { Some((*id, *told)) } else { None })
        .collect()
}

fn opens(d: &Decision) -> usize {
    d.commands.iter().filter(|c| matches!(c, Command::OpenBacklogIssue { .. })).count()
}

fn issue7() -> IssueRef {
    IssueRef { id: "7".into(), url: "https://tracker/7".into() }
}

#[test]
fn a_second_alert_during_the_rollback_comments_on_the_same_issue() {
    let mut doc = canary_doc();
    doc["policy"] =
        json!({"verifyRollback": {"provider": "local", "query": "request_count", "maxValue": 1, "interval": "10s", "attempts": 3}});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    assert_eq!(opens(&d), 1);
    // The same alert delivered again (at-least-once) changes nothing.
    assert_eq!(ignored(&r, alert("a"), at(2)), "already rolling back");
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(2));
    assert_eq!(r.phase, Phase::RollingBack, "waiting for the rollback check");
    let told = Reported::of(&r);
    assert_eq!(told, Reported { failure: true, reverted: true, verified: false, later: 0, fixing: false });
    let d = step(&mut r, Event::BacklogOpened { issue: issue7(), reported: told }, at(3));
    assert!(comments(&d).is_empty());
    assert_eq!(ignored(&r, alert("a"), at(4)), "already rolling back");
    // A different alert is a second failure: recorded, and a comment — never a second issue.
    let d = step(&mut r, alert("b"), at(5));
    assert_eq!(opens(&d), 0);
    assert!(d.commands.iter().all(|c| !c.is_traffic()));
    let [(id, told_then)] = comments(&d)[..] else { panic!("one comment: {:?}", d.commands) };
    assert_eq!(told_then, told);
    assert_eq!(r.failure.as_ref().map(|f| f.later.len()), Some(1));
    assert_eq!(ignored(&r, alert("b"), at(6)), "already rolling back");
    // While that comment is in flight, news waits for the next one.
    let d = step(&mut r, alert("c"), at(7));
    assert!(comments(&d).is_empty());
    let facts = Reported::of(&r);
    let d = step(&mut r, Event::BacklogCommented { id, reported: facts }, at(8));
    assert!(comments(&d).is_empty(), "the comment covered c as well");
    assert!(matches!(r.backlog, BacklogState::Opened { reported: Reported { later: 2, .. }, updating: None, .. }));
    assert!(ignored(&r, Event::BacklogCommented { id, reported: Reported::of(&r) }, at(9)).contains("stale"));
}

#[test]
fn a_storm_of_alerts_during_a_rollback_records_a_bounded_few() {
    let mut doc = canary_doc();
    doc["policy"] =
        json!({"verifyRollback": {"provider": "local", "query": "request_count", "maxValue": 1, "interval": "10s", "attempts": 3}});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    step(&mut r, alert("first"), at(1));
    let rows_before = r.history_len;
    for i in 0..9_000 {
        let d = decide(&r, alert(&format!("storm-{i}")), at(2));
        r = d.next;
    }
    assert_eq!(r.phase, Phase::RollingBack);
    let kept = crate::domain::rollout::backlog::LATER_FAILURES_KEPT;
    assert_eq!(r.failure.as_ref().map(|f| f.later.len()), Some(kept));
    assert_eq!(r.history_len - rows_before, kept as u64, "one row per kept alert, none for the rest");
    assert!(ignored(&r, alert("one-more"), at(3)).contains("in the alert log"));
}

#[test]
fn news_after_the_issue_was_written_becomes_one_comment() {
    let mut doc = canary_doc();
    doc["policy"] =
        json!({"verifyRollback": {"provider": "local", "query": "request_count", "maxValue": 1, "interval": "10s", "attempts": 3}});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    let Command::RevertTraffic { id: revert, .. } = d.commands[0] else { panic!("revert first") };
    // The router is down: the issue is written before traffic is confirmed back.
    step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::RevertTraffic, id: revert }, error: "503".into() }, at(2));
    let told = Reported::of(&r);
    assert!(!told.reverted);
    step(&mut r, Event::BacklogOpened { issue: issue7(), reported: told }, at(3));
    let d = step(&mut r, Event::Tick, at(5));
    let Command::RevertTraffic { .. } = d.commands[0] else { panic!("revert retried") };
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(6));
    let [(id, t)] = comments(&d)[..] else { panic!("one comment: {:?}", d.commands) };
    assert_eq!(t, told);
    // The comment fails; the tick retries it after the backoff, not before.
    step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::CommentBacklogIssue, id }, error: "502".into() }, at(7));
    assert!(r.waiting_for(at(8)).contains("metrics to show canary traffic stopped"));
    let d = decide(&r, Event::Tick, at(10));
    assert!(comments(&d).is_empty());
    let d = step(&mut r, Event::Tick, at(18));
    let [(id2, _)] = comments(&d)[..] else { panic!("retried: {:?}", d.commands) };
    assert_ne!(id, id2);
    let facts = Reported::of(&r);
    step(&mut r, Event::BacklogCommented { id: id2, reported: facts }, at(19));
    assert!(matches!(r.backlog, BacklogState::Opened { reported: Reported { reverted: true, .. }, updating: None, .. }));
}

#[test]
fn a_revert_the_router_keeps_refusing_is_a_later_failure() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    let Command::RevertTraffic { mut id, .. } = d.commands[0] else { panic!("revert first") };
    let facts = Reported::of(&r);
    step(&mut r, Event::BacklogOpened { issue: issue7(), reported: facts }, at(2));
    let mut commented = 0;
    for i in 0..5 {
        let now = at(10 + i * 100);
        let d =
            step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::RevertTraffic, id }, error: "503".into() }, now);
        for (cid, _) in comments(&d) {
            commented += 1;
            let facts = Reported::of(&r);
            step(&mut r, Event::BacklogCommented { id: cid, reported: facts }, now);
        }
        let d = step(&mut r, Event::Tick, now + TimeDelta::seconds(31));
        let Command::RevertTraffic { id: next, .. } = d.commands[0] else { panic!("retry revert") };
        id = next;
    }
    assert_eq!(commented, 1, "one comment when the revert counts as failing, not one per attempt");
    assert!(matches!(r.failure.as_ref().map(|f| &f.later[..]), Some([LaterFailure { evidence: Evidence::Router { .. }, .. }])));
}

#[test]
fn a_retry_that_fails_again_comments_on_the_inherited_issue() {
    let mut r = new_rollout(canary_doc());
    r.retry_of = Some(RolloutId::parse("r-0").expect("id"));
    r.backlog = BacklogState::Opened { issue: issue7(), reported: Reported::default(), updating: None };
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, alert("a"), at(1));
    assert!(matches!(d.commands[0], Command::RevertTraffic { .. }));
    assert_eq!(opens(&d), 0, "no second issue");
    let [(_, told)] = comments(&d)[..] else { panic!("one comment: {:?}", d.commands) };
    assert_eq!(told, Reported::default());
    // An abort of a retry is not a failure: nothing to add.
    let mut r = new_rollout(canary_doc());
    r.backlog = BacklogState::Opened { issue: issue7(), reported: Reported::default(), updating: None };
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, Event::AbortRequested { by: actor("ann"), reason: String::new(), request: None }, at(1));
    assert!(comments(&d).is_empty());
}

#[test]
fn error_budget_gate_refuses_to_start_without_moving_traffic() {
    let mut doc = canary_doc();
    doc["policy"] = json!({"errorBudget": {"provider": "local", "query": "budget", "minRemaining": 0.25}});
    let mut r = new_rollout(doc.clone());
    let d = step(&mut r, Event::Start, at(0));
    assert_eq!(r.phase, Phase::Pending);
    let key = measure_keys(&d)[0].clone();
    let d = step(&mut r, Event::Measured { key, outcome: MeasureOutcome::Value { canary: 0.1, stable: None, samples: None } }, at(1));
    assert_eq!(r.phase, Phase::Aborted);
    assert!(d.commands.iter().all(|c| !c.is_traffic()));
    assert!(matches!(r.failure.as_ref().map(|f| &f.evidence), Some(Evidence::ErrorBudget { remaining: Some(_), .. })));

    let mut r = new_rollout(doc);
    let d = step(&mut r, Event::Start, at(0));
    let key = measure_keys(&d)[0].clone();
    let d = step(&mut r, Event::Measured { key, outcome: MeasureOutcome::Value { canary: 0.5, stable: None, samples: None } }, at(1));
    assert_eq!(r.phase, Phase::Progressing);
    assert!(matches!(d.commands[0], Command::SetWeight { weight, .. } if weight == 5));
}

#[test]
fn background_analysis_runs_across_steps_and_stops_at_promotion() {
    let mut doc = canary_doc();
    doc["strategy"]["canary"]["analysis"] = json!({"metrics": [metric("bg", None)]});
    let mut r = new_rollout(doc);
    let d = step(&mut r, Event::Start, at(0));
    let mut bg_key = measure_keys(&d).into_iter().find(|k| k.metric == "bg").expect("background measure");
    for i in 0..5 {
        let d = step(&mut r, Event::Measured { key: bg_key.clone(), outcome: pass() }, at(10 + i * 10));
        bg_key = measure_keys(&d).into_iter().find(|k| k.metric == "bg").expect("keeps measuring");
    }
    let d = step(&mut r, Event::Measured { key: bg_key, outcome: breach() }, at(100));
    assert!(matches!(d.commands[0], Command::RevertTraffic { .. }), "a background breach rolls back");
}

#[test]
fn tick_takes_over_a_lost_measurement() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let key = measure_keys(&d)[0].clone();
    // Due one interval (10 s) after the weight was confirmed; the tick takes it 15 s after that.
    let d = decide(&r, Event::Tick, at(1 + 10 + 15 + 1));
    assert_eq!(d.outcome, Outcome::Applied);
    assert!(d.history.is_empty(), "re-issuing a measurement records nothing");
    assert_eq!(d.commands, vec![Command::Measure { key, at: at(27) }]);
}

fn verified_doc() -> Value {
    let mut doc = canary_doc();
    doc["policy"] =
        json!({"verifyRollback": {"provider": "local", "query": "request_count", "maxValue": 1, "interval": "10s", "attempts": 3}});
    doc
}

#[test]
fn a_rollback_waits_for_metrics_to_show_canary_traffic_stopped() {
    let mut r = new_rollout(verified_doc());
    step(&mut r, Event::Start, at(0));
    step(&mut r, alert("a"), at(1));
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(2));
    assert_eq!((r.phase, r.traffic.weight), (Phase::RollingBack, w(0)), "not done until verified");
    assert!(r.waiting_for(at(2)).starts_with("metrics to show canary traffic stopped (check 1/3)"), "{}", r.waiting_for(at(2)));
    let key = measure_keys(&d)[0].clone();
    let d = step(&mut r, Event::Measured { key, outcome: MeasureOutcome::Value { canary: 40.0, stable: None, samples: None } }, at(2));
    assert_eq!(r.phase, Phase::RollingBack, "pinned users still reach the canary");
    let key = measure_keys(&d)[0].clone();
    assert_eq!(r.next_wake(), Some(at(12)));
    step(&mut r, Event::Measured { key, outcome: MeasureOutcome::Value { canary: 0.0, stable: None, samples: None } }, at(12));
    assert_eq!(r.phase, Phase::RolledBack);
    let f = r.failure.as_ref().expect("failure");
    assert_eq!(f.verified, Some(true));
    assert_eq!(f.reverted_at, Some(at(2)), "traffic was back at the router's confirmation");
}

#[test]
fn a_rollback_that_cannot_be_verified_finishes_and_says_so() {
    let mut r = new_rollout(verified_doc());
    step(&mut r, Event::Start, at(0));
    step(&mut r, alert("a"), at(1));
    let mut d = step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(2));
    for i in 0..3 {
        let key = measure_keys(&d)[0].clone();
        d = step(
            &mut r,
            Event::Measured { key, outcome: MeasureOutcome::Value { canary: 25.0, stable: None, samples: None } },
            at(10 + i * 10),
        );
    }
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(r.failure.as_ref().and_then(|f| f.verified), Some(false));
    assert!(d.history[0].summary.contains("did NOT stop"), "{}", d.history[0].summary);
}

#[test]
fn the_wake_up_fires_measurements_when_due_and_next_wake_is_the_earliest_timer() {
    let mut doc = canary_doc();
    doc["strategy"]["canary"]["analysis"] = json!({"metrics": [{"name": "bg", "provider": "local", "query": "q",
        "successCondition": "< 1", "interval": "10s", "initialDelay": "25s"}]});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    assert_eq!(r.next_wake(), Some(at(25)), "the background measurement");
    let d = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let key = measure_keys(&d).into_iter().find(|k| k.metric == "errors").expect("the step analysis");
    assert_eq!(r.next_wake(), Some(at(11)), "the step analysis measures one interval after the weight is confirmed");
    assert_eq!(ignored(&r, Event::Wake, at(10)), "nothing is due");
    let d = decide(&r, Event::Wake, at(11));
    assert_eq!(d.commands, vec![Command::Measure { key: key.clone(), at: at(11) }], "a wake-up measures what is due now");
    let d = decide(&r, Event::Tick, at(11));
    assert!(d.is_ignored(), "the sweep leaves due measurements to the wake-up for a while");
    step(&mut r, Event::Measured { key, outcome: pass() }, at(12));
    assert_eq!(r.next_wake(), Some(at(22)));
    step(&mut r, alert("stop"), at(3));
    assert_eq!(r.next_wake(), None, "nothing is due once rolling back");
}

#[test]
fn history_records_from_to_cause_who_and_evidence() {
    let mut r = new_rollout(canary_doc());
    let mut entries = Vec::new();
    to_approval(&mut r);
    for (event, when) in [
        (Event::Approved { by: actor("alice"), stage: None, request: None }, at(30)),
        (Event::Rejected { by: actor("carol"), reason: "no".into(), stage: None, request: None }, at(31)),
        (Event::TrafficConfirmed { weight: w(0) }, at(32)),
    ] {
        entries.extend(step(&mut r, event, when).history);
    }
    assert_eq!(entries[0].by.as_deref(), Some("alice"));
    assert_eq!((entries[0].from, entries[0].to), (Phase::AwaitingApproval, Phase::AwaitingApproval));
    assert_eq!((entries[1].from, entries[1].to, entries[1].cause.as_str()), (Phase::AwaitingApproval, Phase::RollingBack, "Rejected"));
    assert_eq!((entries[2].from, entries[2].to, entries[2].weight), (Phase::RollingBack, Phase::RolledBack, w(0)));
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![r.history_len - 2, r.history_len - 1, r.history_len]);
}

// ----- property tests ----------------------------------------------------

const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "ci"];

/// Builds an event from three random bytes, often the one the state is
/// waiting for, so random sequences reach deep into the plan.
fn make_event(r: &Rollout, (kind, a, b): (u8, u8, u8), n: usize) -> Event {
    let person = actor(PEOPLE[a as usize % PEOPLE.len()]);
    let request = RequestId::parse(&format!("req-{n}")).ok();
    match kind % 20 {
        0..=3 => Event::TrafficConfirmed { weight: if b % 4 == 0 { w([0, 5, 20, 50, 100][a as usize % 5]) } else { r.traffic.weight } },
        4..=6 => match r.due_measurements(r.updated_at + TimeDelta::days(1)).into_iter().nth(a as usize % 2) {
            Some(key) => Event::Measured {
                key,
                outcome: match b % 6 {
                    0 => breach(),
                    1 => MeasureOutcome::NoData,
                    2 => MeasureOutcome::Error { message: "boom".into() },
                    _ => pass(),
                },
            },
            None => Event::Start,
        },
        7 => Event::StepDue { seq: if b % 3 == 0 { r.seq.saturating_sub(1) } else { r.seq } },
        8 | 9 => Event::Approved { by: person, stage: Some(r.stage), request },
        10 => Event::Rejected { by: person, reason: "no".into(), stage: Some(r.stage), request },
        11 if a % 4 == 0 => pipeline_failed(["smoke", "load"][b as usize % 2]),
        11 => alert(&format!("a{}", b % 3)),
        12 => Event::AlertResolved { alert_id: format!("a{}", b % 3) },
        13 => Event::AbortRequested { by: person, reason: String::new(), request },
        14 => Event::PromoteRequested { by: person, full: b % 2 == 0, stage: Some(r.stage), request },
        15 => Event::RetryRequested { by: person, request },
        16 => {
            let pending = r.traffic.pending.as_ref().map(|p| (p.kind, p.id));
            let backlog = match &r.backlog {
                BacklogState::Opening { attempt } => Some((CommandKind::OpenBacklogIssue, attempt.id)),
                BacklogState::Opened { updating: Some(attempt), .. } => Some((CommandKind::CommentBacklogIssue, attempt.id)),
                _ => None,
            };
            match if b % 2 == 0 { pending.or(backlog) } else { backlog.or(pending) } {
                Some((kind, id)) => Event::CommandFailed { command: CommandRef { kind, id }, error: "boom".into() },
                None => Event::Tick,
            }
        }
        17 => Event::Promoted,
        18 if b % 3 == 0 => match r.backlog.attempt() {
            Some(a) => Event::BacklogCommented { id: a.id + (b % 2) as u64, reported: Reported::of(r) },
            None => Event::Tick,
        },
        18 => Event::BacklogOpened {
            issue: IssueRef { id: format!("{}", b % 2), url: "u".into() },
            reported: if b % 2 == 0 { Reported::of(r) } else { Reported { failure: true, ..Reported::default() } },
        },
        _ if b % 2 == 0 => Event::Wake,
        _ => Event::Tick,
    }
}

fn spec_for(choice: u8) -> Value {
    let mut doc = if choice % 2 == 0 { canary_doc() } else { blue_green_doc() };
    if choice % 4 >= 2 {
        doc["policy"] = json!({"onAlert": "pause", "onInconclusive": "extend", "maxExtensions": 1});
        if choice % 2 == 0 {
            doc["strategy"]["canary"]["analysis"] = json!({"metrics": [metric("bg", None)]});
        }
    }
    if choice >= 4 {
        doc["policy"]["verifyRollback"] =
            json!({"provider": "local", "query": "request_count", "maxValue": 1, "interval": "10s", "attempts": 2});
    }
    doc
}

/// Runs the sequence, checking the per-step invariants, and returns the
/// events as delivered with their times, and the final state.
fn run_sequence(spec_choice: u8, picks: &[(u8, u8, u8, u8)]) -> (Vec<(Event, DateTime<Utc>)>, Rollout) {
    let mut r = new_rollout(spec_for(spec_choice));
    let mut now = t0();
    let mut delivered = Vec::new();
    let mut issues_opened = 0u32;
    let mut backlog_failures = 0u32;
    for (n, &(kind, a, b, dt)) in picks.iter().enumerate() {
        now += TimeDelta::seconds(dt as i64 * 3);
        let event = make_event(&r, (kind, a, b), n);
        assert_sweep_at_is_exact(&r, now);
        let d = decide(&r, event.clone(), now);
        // Weight stays a percentage.
        assert!(d.next.traffic.weight <= 100);
        // Terminal phases absorb everything: phase and traffic never change again,
        // and no traffic command is issued.
        if r.phase.is_terminal() {
            assert_eq!(d.next.phase, r.phase);
            assert_eq!(d.next.traffic, r.traffic);
            assert!(d.commands.iter().all(|c| !c.is_traffic()), "{:?}", d.commands);
        }
        // A rollback starts with RevertTraffic.
        if d.next.phase == Phase::RollingBack && r.phase != Phase::RollingBack {
            assert!(matches!(d.commands.first(), Some(Command::RevertTraffic { .. })), "{:?}", d.commands);
        }
        // Ignored means untouched and silent, but a person's refused request is recorded.
        if d.is_ignored() {
            assert_only_recorded(&r, &event, &d);
        }
        // History is gap-free.
        for h in &d.history {
            assert_eq!(h.seq, r.history_len + 1);
        }
        if matches!(event, Event::CommandFailed { command: CommandRef { kind: CommandKind::OpenBacklogIssue, .. }, .. }) && !d.is_ignored()
        {
            backlog_failures += 1;
        }
        // At most one backlog issue: it is asked for again only by the timer
        // (after a reported failure, or when the request was lost) or by a person.
        let requests = d.commands.iter().filter(|c| matches!(c, Command::OpenBacklogIssue { .. })).count() as u32;
        match &event {
            Event::Tick | Event::Wake | Event::RetryRequested { .. } => {
                if requests > 0 {
                    let BacklogState::Opening { attempt: Attempt { failed_at, issued_at, .. } } = &r.backlog else {
                        panic!("re-requested an issue that was not being opened: {:?}", r.backlog)
                    };
                    assert!(failed_at.is_some() || *issued_at + TimeDelta::milliseconds(decide::LOST_COMMAND_MS as i64) <= now);
                }
            }
            _ => issues_opened += requests,
        }
        assert!(issues_opened <= 1, "{issues_opened} issues requested ({backlog_failures} failures)");
        // Comments: only on an open issue, one at a time; a new one while one is
        // in flight only when the timer or a person retries it.
        let comment_count = d.commands.iter().filter(|c| matches!(c, Command::CommentBacklogIssue { .. })).count();
        if comment_count > 0 {
            assert_eq!(comment_count, 1);
            assert!(requests == 0, "open and comment at once: {:?}", d.commands);
            match &r.backlog {
                BacklogState::Opened { updating: None, .. } => {}
                BacklogState::Opened { updating: Some(a), .. } => {
                    assert!(matches!(event, Event::Tick | Event::Wake | Event::RetryRequested { .. }), "{event:?}");
                    assert!(a.failed_at.is_some() || a.issued_at + TimeDelta::milliseconds(decide::LOST_COMMAND_MS as i64) <= now);
                }
                BacklogState::Opening { .. } => {
                    assert!(matches!(event, Event::BacklogOpened { .. }), "comment before the issue exists: {event:?}");
                }
                BacklogState::None => panic!("comment without an issue: {event:?}"),
            }
        }
        if r.backlog.issue().is_some() {
            assert!(requests == 0, "a second issue requested: {:?}", d.commands);
        }
        if d.next.phase == Phase::RolledBack {
            assert_eq!(d.next.traffic.weight, 0);
        }
        delivered.push((event, now));
        r = d.next;
    }
    (delivered, r)
}

/// The stores index rollouts by `sweep_at` and the timer visits only those
/// due, so it must be exact: a tick before it finds nothing (else work would
/// be missed), and a tick at it finds something (else the rollout would be
/// visited on every sweep for nothing).
fn assert_sweep_at_is_exact(r: &Rollout, now: DateTime<Utc>) {
    match r.sweep_at() {
        None => {
            for later in [now, now + TimeDelta::days(400)] {
                assert!(decide(r, Event::Tick, later).is_ignored(), "sweep_at is None but a tick at {later} acts on {r:?}");
            }
        }
        Some(at) => {
            assert!(decide(r, Event::Tick, at - TimeDelta::milliseconds(1)).is_ignored(), "a tick before sweep_at {at} acts");
            assert!(!decide(r, Event::Tick, at).is_ignored(), "a tick at sweep_at {at} finds nothing: {r:?}");
        }
    }
}

proptest! {
    // PROPTEST_CASES raises the count for a deeper search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_over_random_sequences(spec in 0u8..8, picks in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 0u8..8), 1..120)) {
        run_sequence(spec, &picks);
    }

    #[test]
    fn delivering_every_event_twice_changes_nothing(spec in 0u8..8, picks in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 0u8..8), 1..120)) {
        let (events, once) = run_sequence(spec, &picks);
        let mut twice = new_rollout(spec_for(spec));
        for (event, now) in events {
            twice = decide(&twice, event.clone(), now).next;
            twice = decide(&twice, event, now).next;
        }
        prop_assert_eq!(twice, once);
    }
}

#[test]
fn random_walks_reach_every_phase() {
    // A guard on the generator itself: the property tests mean little if
    // random sequences never get past the first step.
    let mut seen = std::collections::BTreeSet::new();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (0u8..8, proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), 0u8..8), 1..120));
    for _ in 0..400 {
        let (spec, picks) = strategy.new_tree(&mut runner).expect("generates").current();
        let (events, _) = run_sequence(spec, &picks);
        let mut r = new_rollout(spec_for(spec));
        for (e, now) in events {
            r = decide(&r, e, now).next;
            seen.insert(r.phase.as_str());
        }
    }
    let all: std::collections::BTreeSet<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(seen, all);
}

fn one_step_analysis(metric: Value) -> Rollout {
    new_rollout(base(json!({"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [metric]}}, {"setWeight": 20}]}})))
}

fn first_measurement(r: &mut Rollout) -> MeasurementKey {
    step(r, Event::Start, at(0));
    let d = step(r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    measure_keys(&d)[0].clone()
}

/// Like Flagger's interval and Argo's `initialDelay`: the first measurement
/// waits one interval (or the metric's `initialDelay`), and looks back no
/// further than the moment the weight was confirmed.
#[test]
fn a_measurement_counts_only_traffic_since_its_weight_was_confirmed() {
    let errors = json!({"name": "errors", "provider": "local", "query": "error_rate", "successCondition": "< 0.05", "interval": "10s"});
    let mut r = one_step_analysis(errors.clone());
    let key = first_measurement(&mut r);
    assert_eq!(r.next_wake(), Some(at(11)), "one interval after the weight was confirmed (at 1)");
    assert_eq!(r.measurement_window(&key, at(11)), Some(10_000));
    let mut quick = errors;
    quick["initialDelay"] = json!("2s");
    let mut r = one_step_analysis(quick);
    let key = first_measurement(&mut r);
    assert_eq!(r.next_wake(), Some(at(3)), "the metric's initialDelay");
    assert_eq!(r.measurement_window(&key, at(3)), Some(2_000), "not the 8 s before the weight was confirmed");
}

#[test]
fn a_judged_metric_rolls_back_with_its_numbers_in_the_evidence() {
    let mut r = one_step_analysis(json!({"name": "errors", "provider": "local", "interval": "10s",
        "judge": {"test": "errorRate", "failures": "error_count", "requests": "request_count", "maxIncrease": 0.01}}));
    let key = first_measurement(&mut r);
    let outcome = MeasureOutcome::Proportions {
        canary: crate::domain::stats::Proportion { failures: 30, total: 300 },
        stable: crate::domain::stats::Proportion { failures: 30, total: 3000 },
    };
    let d = step(&mut r, Event::Measured { key, outcome }, at(11));
    assert_eq!(r.phase, Phase::RollingBack);
    let Some(Evidence::Analysis { condition, measurements, .. }) = d.history[0].evidence.clone() else { panic!("{:?}", d.history) };
    assert_eq!(condition, "error rate at most +1.00 points above stable (95 % confidence)");
    let last = measurements.last().expect("a measurement");
    let j = last.judgement.as_ref().expect("the judge's numbers are kept");
    assert_eq!((j.canary_n, j.stable_n, j.decision), (300, 3000, crate::domain::stats::Decision::Fail));
    assert!(j.p_value < 1e-6);
    assert!(last.note.starts_with("canary 10.00 % errors (30 of 300) vs stable 1.00 % (30 of 3000): +9.00 points"), "{}", last.note);
}

#[test]
fn a_quiet_canary_soaks_until_its_sample_is_reached() {
    let metric = json!({"name": "errors", "provider": "local", "query": "error_rate", "successCondition": "< 0.05",
                        "interval": "10s", "minSampleSize": 100, "maxSoak": "1m"});
    let mut r = one_step_analysis(metric.clone());
    let key = first_measurement(&mut r);
    let quiet = |n| MeasureOutcome::Value { canary: 0.0, stable: None, samples: Some(n) };
    let d = step(&mut r, Event::Measured { key, outcome: quiet(20) }, at(11));
    assert_eq!(r.phase, Phase::Progressing, "too few requests neither pass nor stop the phase");
    assert_eq!(d.history[0].measurement.as_ref().map(|m| m.verdict), Some(Verdict::Waiting));
    let wait = r.runs[0].metrics[0].waiting.clone().expect("waiting for data");
    assert_eq!((wait.have, wait.need, wait.eta_ms, wait.soaked_ms), (20, 100, Some(40_000), 10_000));
    assert!(
        d.history[0].summary.contains("waiting for data: 20 of 100 canary requests, 80 more needed (about 40s at the current rate)"),
        "{}",
        d.history[0].summary
    );
    assert!(
        r.waiting_for(at(12)).ends_with("errors 0/1 (waiting for data: 20 of 100 canary requests, 80 more needed (about 40s at the current rate); soaked 10s of at most 1m)"),
        "{}",
        r.waiting_for(at(12))
    );
    let next = measure_keys(&d)[0].clone();
    assert_eq!(r.measurement_window(&next, at(21)), Some(20_000), "the next measurement looks back over the whole soak");
    let d = step(&mut r, Event::Measured { key: next, outcome: quiet(60) }, at(21));
    let next = measure_keys(&d)[0].clone();
    assert_eq!(r.measurement_window(&next, at(31)), Some(30_000));
    step(&mut r, Event::Measured { key: next, outcome: quiet(120) }, at(31));
    assert_eq!(r.traffic.weight, 20, "enough requests: judged, passed, moved on");
    assert_eq!(r.runs[0].metrics[0].waiting, None);

    // A service that never gets there stops soaking at the cap and follows onInconclusive.
    let mut r = one_step_analysis(metric);
    let mut key = first_measurement(&mut r);
    for i in 1..=6 {
        let d = step(&mut r, Event::Measured { key: key.clone(), outcome: quiet(3) }, at(1 + 10 * i));
        match measure_keys(&d).first() {
            Some(k) => key = k.clone(),
            None => break,
        }
    }
    assert_eq!(r.phase, Phase::Paused, "capped at 1m, then inconclusive pauses for a person");
}

#[test]
fn a_judged_metric_needs_its_own_rule_and_a_template_fills_one() {
    let bad = base(json!({"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [
        {"name": "a", "provider": "local", "query": "error_rate"},
        {"name": "b", "provider": "local", "query": "error_rate", "successCondition": "< 1",
         "judge": {"test": "latency", "histogram": "latency_histogram"}},
        {"name": "c", "template": "nope"},
        {"name": "d", "provider": "local", "query": "error_rate", "successCondition": "< 1", "maxSoak": "1m"}
    ]}}]}}));
    let problems = validate(&bad, &names()).expect_err("invalid").to_string();
    for expected in [
        "strategy.canary.steps[1].analysis.metrics[0].successCondition: is required",
        "metrics[1].successCondition: cannot be combined with judge",
        "metrics[2].template: no metric template named 'nope'",
        "metrics[3].maxSoak: has no effect without minSampleSize",
    ] {
        assert!(problems.contains(expected), "missing '{expected}' in:\n{problems}");
    }
    let good = one_step_analysis(json!({"name": "slower", "template": "local-latency-vs-stable"}));
    let Some(Stage::Analysis { analysis }) = good.plan.stages.get(1) else { panic!("{:?}", good.plan.stages) };
    assert!(matches!(analysis.metrics[0].judge, Some(crate::domain::spec::Judge::Latency { .. })));
}

#[test]
fn a_background_metric_soaks_afresh_after_each_verdict() {
    let metric = json!({"name": "bg", "provider": "local", "query": "error_rate", "successCondition": "< 0.05",
                        "interval": "10s", "minSampleSize": 100, "maxSoak": "30s"});
    let mut r = new_rollout(base(json!({"canary": {"analysis": {"metrics": [metric]}, "steps": [{"setWeight": 5}, {"pause": {}}]}})));
    let d = step(&mut r, Event::Start, at(0));
    let d2 = step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let key = measure_keys(&d).into_iter().chain(measure_keys(&d2)).next().expect("background analysis measures");
    let quiet = |n| MeasureOutcome::Value { canary: 0.0, stable: None, samples: Some(n) };
    let d = step(&mut r, Event::Measured { key, outcome: quiet(500) }, at(100));
    assert_eq!(d.history[0].measurement.as_ref().map(|m| m.verdict), Some(Verdict::Pass));
    // Long after the rollout began, a thin window soaks from its own start, not the rollout's.
    let d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: quiet(20) }, at(200));
    assert_eq!(d.history[0].measurement.as_ref().map(|m| m.verdict), Some(Verdict::Waiting), "{}", d.history[0].summary);
    let d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: quiet(40) }, at(210));
    assert_eq!(d.history[0].measurement.as_ref().map(|m| m.verdict), Some(Verdict::Waiting), "soaked 20s of 30s");
    let d = step(&mut r, Event::Measured { key: measure_keys(&d)[0].clone(), outcome: quiet(60) }, at(220));
    assert_eq!(d.history[0].measurement.as_ref().map(|m| m.verdict), Some(Verdict::Inconclusive), "the cap: judged as it stands");
}

fn pipeline_failed(stage: &str) -> Event {
    let failure =
        PipelineFailure::new(stage, actor("github-actions"), Some("https://github.com/o/r/actions/runs/9"), "step failed\nexit 1")
            .expect("valid report");
    Event::ReleaseFailed { failure }
}

#[test]
fn a_failed_pipeline_stage_rolls_back_even_where_alerts_only_pause() {
    let mut doc = canary_doc();
    doc["policy"] = json!({"onAlert": "pause"});
    let mut r = new_rollout(doc);
    step(&mut r, Event::Start, at(0));
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let d = step(&mut r, pipeline_failed("smoke test"), at(2));
    assert_eq!((r.phase, r.traffic.weight), (Phase::RollingBack, w(0)));
    assert_eq!(opens(&d), 1);
    let entry = d.history.last().expect("recorded");
    assert!(matches!(&entry.evidence, Some(Evidence::Pipeline { failure }) if failure.stage == "smoke test"), "{entry:?}");
    // Reported again (a re-run step): one failure; another stage: a later failure, never a second issue.
    assert_eq!(ignored(&r, pipeline_failed("smoke test"), at(3)), "stage 'smoke test' was already reported");
    let d = step(&mut r, pipeline_failed("load test"), at(4));
    assert_eq!(opens(&d), 0);
    assert_eq!(r.failure.as_ref().map(|f| f.later.len()), Some(1));
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(5));
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(ignored(&r, pipeline_failed("deploy"), at(6)), "the rollout has finished (RolledBack)");
}

#[test]
fn pipeline_reports_are_checked_and_bounded_at_the_edge() {
    let by = actor("ci");
    assert!(PipelineFailure::new("", by.clone(), None, "").is_err());
    assert!(PipelineFailure::new("a\u{7}b", by.clone(), None, "").is_err());
    assert!(PipelineFailure::new("build", by.clone(), Some("javascript:alert(1)"), "").is_err());
    let log: String = (0..500).map(|i| format!("line {i} Authorization: Bearer s3cret\n")).collect();
    let f = PipelineFailure::new(" build ", by, Some("https://dev.azure.com/o/p/_build/results?buildId=7"), &log).expect("valid");
    assert_eq!(f.stage, "build");
    assert_eq!(f.excerpt.lines().count(), event::EXCERPT_MAX_LINES);
    assert!(f.excerpt.ends_with("line 499 Authorization: Bearer [redacted]"), "{}", f.excerpt);
    assert!(!f.excerpt.contains("s3cret"));
    let wire = json!({"stage": "deploy", "by": "ci", "runUrl": "ftp://x"});
    assert!(serde_json::from_value::<PipelineFailure>(wire).is_err(), "the wire form obeys the same rules");
}

#[test]
fn a_split_users_do_not_get_is_recorded_and_acted_on_by_policy_once_sustained() {
    let judged = json!({"name": "errors", "provider": "local", "interval": "10s", "count": 5,
        "judge": {"test": "errorRate", "failures": "error_count", "requests": "request_count", "maxIncrease": 0.01}});
    let counts = |canary: u64, stable: u64| MeasureOutcome::Proportions {
        canary: crate::domain::stats::Proportion { failures: canary / 100, total: canary },
        stable: crate::domain::stats::Proportion { failures: stable / 100, total: stable },
    };
    for (action, phase) in [("note", Phase::Progressing), ("pause", Phase::Paused), ("rollback", Phase::RollingBack)] {
        let mut doc =
            base(json!({"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [judged.clone()]}}, {"setWeight": 20}]}}));
        doc["policy"] = json!({"observedSplit": {"tolerance": 10, "checks": 3, "onMismatch": action}});
        let mut r = new_rollout(doc);
        let mut key = first_measurement(&mut r);
        // Within tolerance: recorded, nothing said.
        let d = step(&mut r, Event::Measured { key, outcome: counts(600, 9400) }, at(11));
        let observed = r.traffic.observed.clone().expect("recorded");
        assert_eq!((observed.share, observed.requested, observed.off, observed.requests), (6.0, w(5), 0, 10_000));
        assert!(!d.history[0].summary.contains("observed split"), "{}", d.history[0].summary);
        key = measure_keys(&d)[0].clone();
        // Sticky users: 30 % of requests reach a 5 % canary, three measurements in a row.
        let mut said = Vec::new();
        for i in 0..3 {
            assert_eq!(r.phase, Phase::Progressing, "{action}: nothing happens before it is sustained");
            let d = step(&mut r, Event::Measured { key: key.clone(), outcome: counts(3000, 7000) }, at(21 + 10 * i));
            said.extend(d.history.iter().map(|h| h.summary.clone()));
            if let Some(next) = measure_keys(&d).first() {
                key = next.clone();
            }
        }
        let observed = r.traffic.observed.clone().expect("recorded");
        assert_eq!((observed.share, observed.off, observed.acted), (30.0, 3, true), "{action}");
        assert_eq!(r.phase, phase, "{action}");
        let told: Vec<&String> =
            said.iter().filter(|s| s.contains("observed split: 30.0% of 10000 requests reached the canary where 5% was asked")).collect();
        assert_eq!(told.len(), 1, "{action}: said once: {said:?}");
        if action == "rollback" {
            let Some(Evidence::SplitMismatch { requested, observed, checks, .. }) = r.failure.as_ref().map(|f| f.evidence.clone()) else {
                panic!("{:?}", r.failure)
            };
            assert_eq!((requested, observed, checks), (w(5), 30.0, 3));
        }
        if action == "note" {
            // Back within tolerance: said so once, and the episode ends.
            let d = step(&mut r, Event::Measured { key, outcome: counts(500, 9500) }, at(61));
            assert!(d.history[0].summary.contains("observed split back within tolerance"), "{}", d.history[0].summary);
            assert_eq!(r.traffic.observed.as_ref().map(|o| (o.off, o.acted)), Some((0, false)));
        }
    }
}

#[test]
fn the_split_a_failing_measurement_counted_is_kept_with_its_rollback() {
    let judged = json!({"name": "errors", "provider": "local", "interval": "10s", "count": 3,
        "judge": {"test": "errorRate", "failures": "error_count", "requests": "request_count", "maxIncrease": 0.01}});
    let mut r = new_rollout(base(json!({"canary": {"steps": [{"setWeight": 5}, {"analysis": {"metrics": [judged]}}]}})));
    let key = first_measurement(&mut r);
    // 30 % of the canary's requests fail, 0.1 % of stable's: the first judgement fails it.
    let outcome = MeasureOutcome::Proportions {
        canary: crate::domain::stats::Proportion { failures: 600, total: 2000 },
        stable: crate::domain::stats::Proportion { failures: 8, total: 8000 },
    };
    step(&mut r, Event::Measured { key, outcome }, at(11));
    assert_eq!(r.phase, Phase::RollingBack);
    let observed = r.traffic.observed.clone().expect("the split the failing canary saw is recorded");
    assert_eq!((observed.share, observed.requested, observed.requests, observed.at), (20.0, w(5), 10_000, at(11)));
}

#[test]
fn a_canary_can_keep_the_previous_version_for_a_scale_down_delay() {
    let r = new_rollout(base(json!({"canary": {"steps": [{"setWeight": 50}], "scaleDownDelay": "10m"}})));
    assert_eq!(r.plan.stages.last(), Some(&Stage::ScaleDown { delay_ms: 600_000 }));
    assert!(r.plan.summary().ends_with("promote → scale down after 10m"), "{}", r.plan.summary());
}

#[test]
fn router_caveats_are_recorded_once_in_state_and_history() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let caveats = vec!["frontDoor: session affinity is on".to_string()];
    let d = step(&mut r, Event::RouterCaveats { caveats: caveats.clone() }, at(1));
    assert_eq!(r.traffic.caveats, caveats);
    assert!(d.history[0].summary.contains("router caveat: frontDoor: session affinity is on"), "{}", d.history[0].summary);
    assert!(ignored(&r, Event::RouterCaveats { caveats: vec!["again".into()] }, at(2)).contains("already recorded"));
    assert_eq!(r.traffic.caveats, caveats, "the first report stands");
}

#[test]
fn the_tally_times_each_step_to_its_decision_and_counts_the_wait_and_exposure() {
    let mut r = new_rollout(canary_doc());
    to_approval(&mut r);
    step(&mut r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(30));
    step(&mut r, Event::Approved { by: actor("bob"), stage: None, request: None }, at(31));
    let steps: Vec<(usize, &str, u64, bool)> = r.tally.steps.iter().map(|s| (s.stage, s.kind.as_str(), s.ms, s.passed)).collect();
    assert_eq!(
        steps,
        vec![(0, "setWeight", 1000, true), (1, "analysis", 20_000, true), (2, "setWeight", 1000, true), (3, "approval", 9000, true)]
    );
    assert_eq!(r.tally.approval_wait_ms, 9000, "from the gate at 22 s to the second approval at 31 s");
    assert_eq!(r.tally.awaiting_since, None);
    assert_eq!(r.tally.canary_requests.get("errors"), Some(&200), "two judged measurements of 100 canary requests");
    assert_eq!(r.tally.exposure(), 200);
    assert_eq!(r.tally.stage_since, Some(at(31)));
}

#[test]
fn the_tally_records_the_step_a_rollback_stopped_and_failed_calls() {
    let mut r = new_rollout(canary_doc());
    step(&mut r, Event::Start, at(0));
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, at(1));
    let d = step(&mut r, alert("a"), at(4));
    let stopped = r.tally.steps.last().map(|s| (s.stage, s.kind.clone(), s.ms, s.passed));
    assert_eq!(stopped, Some((1, "analysis".to_string(), 3000, false)), "the analysis step ended in a rollback after 3 s");
    let notify = d.commands.iter().find_map(|c| if let Command::Notify { id, .. } = c { Some(*id) } else { None });
    let issue = d.commands.iter().find_map(|c| if let Command::OpenBacklogIssue { id, .. } = c { Some(*id) } else { None });
    step(&mut r, Event::TrafficConfirmed { weight: w(0) }, at(5));
    let steps_before = r.tally.steps.len();
    let failed =
        |kind, id: Option<u64>| Event::CommandFailed { command: CommandRef { kind, id: id.expect("issued") }, error: "503".into() };
    step(&mut r, failed(CommandKind::Notify, notify), at(6));
    step(&mut r, failed(CommandKind::OpenBacklogIssue, issue), at(7));
    assert_eq!((r.tally.notify_failures, r.tally.backlog_failures), (1, 1));
    assert_eq!(r.tally.steps.len(), steps_before, "a finished rollout decides no more steps");
}

#[test]
fn an_alert_keeps_only_a_web_link() {
    for (link, kept) in [
        ("javascript:alert(1)", false),
        ("file:///etc/passwd", false),
        ("data:text/html,x", false),
        ("https://portal.azure.com/#blade/x", true),
        ("HTTP://prometheus:9090/graph", true),
    ] {
        let Event::AlertFired { mut alert } = alert("linked") else { panic!("an alert") };
        alert.link = Some(link.into());
        let Event::AlertFired { alert } = (Event::AlertFired { alert }).bounded() else { panic!("still an alert") };
        assert_eq!(alert.link.is_some(), kept, "{link}");
    }
}

/// 5% → pause 10s → 20% → promote, allowed Monday to Friday 09:00–17:00 UTC.
fn office_hours_doc() -> Value {
    let mut doc = base(json!({"canary": {"steps": [{"setWeight": 5}, {"pause": {"duration": "10s"}}, {"setWeight": 20}]}}));
    doc["policy"] =
        json!({"windows": {"timeZone": "UTC", "allow": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "from": "09:00", "to": "17:00"}]}});
    doc
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
}

fn scheduled(d: &Decision) -> Vec<DateTime<Utc>> {
    d.commands.iter().filter_map(|c| if let Command::ScheduleStep { at, .. } = c { Some(*at) } else { None }).collect()
}

#[test]
fn a_weight_increase_after_hours_waits_for_the_window_and_goes_on_when_it_opens() {
    let mut r = new_rollout(office_hours_doc());
    // Friday 2027-01-15 16:59:50: open, so the first step goes.
    let friday = utc("2027-01-15T16:59:50Z");
    let d = step(&mut r, Event::Start, friday);
    assert_eq!(d.commands[0], Command::SetWeight { weight: w(5), id: 1 });
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, friday + TimeDelta::seconds(1));
    // The pause ends at 17:00:01, after hours: 20% waits for Monday 09:00, the wake-up scheduled for it.
    let due = Event::StepDue { seq: r.seq };
    let d = step(&mut r, due, utc("2027-01-15T17:00:01Z"));
    let monday = utc("2027-01-18T09:00:00Z");
    assert_eq!((r.phase, r.stage, r.traffic.weight), (Phase::Paused, 2, w(5)));
    assert_eq!(scheduled(&d), [monday]);
    assert_eq!(r.due_at, Some(monday));
    assert!(d.commands.iter().any(|c| matches!(c, Command::Notify { kind: NotifyKind::Paused, .. })), "{:?}", d.commands);
    assert!(d.history[0].summary.contains("step 3/4 held: outside the deployment window"), "{}", d.history[0].summary);
    let waiting = r.waiting_for(utc("2027-01-16T09:00:00Z"));
    assert!(waiting.contains("opens Mon 2027-01-18 09:00 UTC") && waiting.contains("2d left"), "{waiting}");
    // No person's promote jumps it; a rollback never waits.
    let promote = Event::PromoteRequested { by: actor("alice"), full: false, stage: None, request: None };
    assert!(ignored(&r, promote, utc("2027-01-16T10:00:00Z")).contains("held by a deployment window"));
    let abort = decide(&r, Event::AbortRequested { by: actor("alice"), reason: "no".into(), request: None }, utc("2027-01-16T10:00:00Z"));
    assert_eq!(abort.next.phase, Phase::RollingBack);
    assert!(matches!(abort.commands[0], Command::RevertTraffic { .. }), "{:?}", abort.commands);
    let alert = decide(&r, alert("a-1"), utc("2027-01-16T10:00:00Z"));
    assert_eq!(alert.next.phase, Phase::RollingBack);
    // Monday 09:00: the wake-up raises the weight.
    let due = Event::StepDue { seq: r.seq };
    let d = step(&mut r, due, monday);
    assert_eq!((r.phase, r.traffic.weight), (Phase::Progressing, w(20)));
    assert!(d.commands.iter().any(|c| matches!(c, Command::SetWeight { weight, .. } if *weight == w(20))), "{:?}", d.commands);
    assert!(d.history[0].summary.starts_with("deployment window open"), "{}", d.history[0].summary);
}

#[test]
fn a_start_outside_the_window_waits_and_an_admin_override_lets_it_through_once_with_a_reason() {
    let mut r = new_rollout(office_hours_doc());
    let saturday = utc("2027-01-16T10:00:00Z");
    let d = step(&mut r, Event::Start, saturday);
    assert_eq!((r.phase, r.traffic.weight), (Phase::Paused, Weight::ZERO));
    assert!(!d.commands.iter().any(|c| matches!(c, Command::SetWeight { .. })), "{:?}", d.commands);
    assert!(r.waiting_for(saturday).contains("window for the start"), "{}", r.waiting_for(saturday));
    let override_ = |reason: &str| Event::OverrideRequested { by: actor("olga"), reason: reason.into(), request: None };
    assert!(ignored(&r, override_("  "), saturday).contains("needs a reason"));
    let d = step(&mut r, override_("hotfix for INC-42"), saturday);
    assert_eq!(d.history[0].by.as_deref(), Some("olga"));
    assert!(d.history[0].summary.contains("overridden by olga: hotfix for INC-42"), "{}", d.history[0].summary);
    assert!(d.commands.iter().any(|c| matches!(c, Command::SetWeight { weight, .. } if *weight == w(5))), "{:?}", d.commands);
    assert!(
        d.commands.iter().any(|c| matches!(c, Command::Notify { summary, .. } if summary.contains("overridden by olga"))),
        "{:?}",
        d.commands
    );
    assert_eq!(r.phase, Phase::Progressing);
    // Once: the next increase waits for Monday again.
    step(&mut r, Event::TrafficConfirmed { weight: w(5) }, saturday + TimeDelta::seconds(1));
    let due = Event::StepDue { seq: r.seq };
    step(&mut r, due, saturday + TimeDelta::seconds(12));
    assert_eq!((r.phase, r.stage), (Phase::Paused, 2));
    assert_eq!(r.due_at, Some(utc("2027-01-18T09:00:00Z")));
    // Nothing held: an override is refused.
    let mut open = new_rollout(office_hours_doc());
    step(&mut open, Event::Start, utc("2027-01-18T10:00:00Z"));
    assert!(ignored(&open, override_("why not"), utc("2027-01-18T10:00:01Z")).contains("nothing is held"));
}

fn alert_began(id: &str, rule: &str, began: DateTime<Utc>) -> Event {
    let Event::AlertFired { mut alert } = alert(id) else { unreachable!("alert() makes an AlertFired") };
    alert.rule = rule.into();
    alert.fired_at = Some(began);
    Event::AlertFired { alert }
}

fn fix_forward_doc(policy: Value) -> Value {
    let mut doc = base(json!({"canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}]}}));
    doc["policy"] = json!({"fixForward": policy});
    doc
}

#[test]
fn a_fix_forward_leaves_the_alert_that_began_before_it_alone_and_nothing_else() {
    let mut r = new_rollout(fix_forward_doc(json!({"alerts": ["canary-5xx"]})));
    step(&mut r, Event::Start, at(0));
    step(&mut r, Event::TrafficConfirmed { weight: w(10) }, at(1));
    // Still firing from the bad version: ignored, and the history says which and why.
    let old = alert_began("a-1", "canary-5xx", at(-600));
    let d = step(&mut r, old.clone(), at(5));
    assert_eq!((r.phase, r.traffic.weight), (Phase::Progressing, w(10)));
    let row = &d.history[0].summary;
    assert!(row.contains("alert canary-5xx (a-1) ignored on purpose") && row.contains("policy.fixForward.alerts"), "{row}");
    assert!(d.commands.is_empty(), "{:?}", d.commands);
    // The same alert delivered again: nothing more.
    assert!(ignored(&r, old, at(6)).contains("already ignored"));
    // Another rule that began before: not this rollout's to ignore.
    let other = decide(&r, alert_began("a-2", "latency", at(-600)), at(7));
    assert_eq!(other.next.phase, Phase::RollingBack);
    // The same rule firing anew (after a resolution), or an alert that does not say when it began: rollback.
    let refired = decide(&r, alert_began("a-3", "canary-5xx", at(3)), at(8));
    assert_eq!(refired.next.phase, Phase::RollingBack);
    let undated = decide(&r, alert("a-4"), at(9));
    assert_eq!(undated.next.phase, Phase::RollingBack);
    // Whatever rule began before creation, with firingAtStart.
    let mut any = new_rollout(fix_forward_doc(json!({"firingAtStart": true})));
    step(&mut any, Event::Start, at(0));
    let d = step(&mut any, alert_began("a-5", "latency", at(-1)), at(2));
    assert!(d.history[0].summary.contains("policy.fixForward.firingAtStart"), "{}", d.history[0].summary);
    assert_eq!(any.phase, Phase::Progressing);
}

#[test]
fn a_fix_forward_tells_the_issue_it_took_over_at_its_start_and_again_if_it_fails() {
    let mut r = new_rollout(fix_forward_doc(json!({"firingAtStart": true})));
    let issue = IssueRef { id: "42".into(), url: "https://github.com/contoso/orders/issues/42".into() };
    r.fixes = Some(RolloutId::parse("r-0").expect("id"));
    r.backlog = BacklogState::Opened { issue: issue.clone(), reported: Reported::default(), updating: None };
    let d = step(&mut r, Event::Start, at(0));
    let told =
        d.commands
            .iter()
            .find_map(|c| if let Command::CommentBacklogIssue { issue: i, id, .. } = c { Some((i.clone(), *id)) } else { None });
    let (commented, id) = told.expect("the issue is told the fix started");
    assert_eq!(commented, issue);
    assert!(Reported::of(&r).fixing);
    let reported = Reported::of(&r);
    step(&mut r, Event::BacklogCommented { id, reported }, at(1));
    // Its own failure goes to the same issue, as news.
    let d = step(&mut r, alert_began("a-9", "canary-5xx", at(2)), at(3));
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(d.commands.iter().any(|c| matches!(c, Command::CommentBacklogIssue { .. })), "{:?}", d.commands);
}

fn preview_doc(preview: Value) -> Value {
    base(json!({"canary": {"steps": [{"preview": preview}, {"setWeight": 5}]}}))
}

fn preview_address() -> PreviewAddress {
    PreviewAddress {
        url: "http://127.0.0.1:9000".into(),
        headers: [("x-sluice-preview".to_string(), "canary".to_string())].into(),
        how: "a header".into(),
    }
}

fn probe(ok: bool) -> MeasureOutcome {
    MeasureOutcome::Value { canary: if ok { 1.0 } else { 0.0 }, stable: None, samples: Some(1) }
}

/// Starts a preview rollout and has the router answer with its address.
fn previewed(doc: Value) -> (Rollout, Decision) {
    let mut r = new_rollout(doc);
    let d = step(&mut r, Event::Start, at(0));
    assert!(matches!(d.commands.as_slice(), [Command::Preview { .. }, ..]), "{:?}", d.commands);
    assert_eq!(r.traffic.weight, w(0), "a preview moves no user");
    let d = step(&mut r, Event::PreviewReady { address: preview_address() }, at(1));
    assert_eq!(r.traffic.preview, Some(preview_address()));
    assert!(d.history.iter().any(|h| h.summary.contains("preview ready: http://127.0.0.1:9000 -H 'x-sluice-preview: canary'")));
    (r, d)
}

#[test]
fn a_preview_smoke_check_probes_the_preview_address_and_its_first_pass_moves_on() {
    let doc = preview_doc(json!({"check": {"path": "/healthz", "bodyContains": "v2", "attempts": 3, "interval": "5s"}}));
    let (mut r, d) = previewed(doc);
    assert_eq!(r.plan.summary(), "canary: preview → analysis(smoke) → 5% → promote");
    let key = measure_keys(&d).pop().expect("the smoke check measures at once");
    let metric = r.metric_to_run(&key).expect("the probe");
    assert_eq!((metric.provider.as_str(), metric.query.as_str()), ("httpProbe", "http://127.0.0.1:9000/healthz"));
    assert_eq!(metric.settings.get(crate::domain::spec::PREVIEW_HEADERS_SETTING), Some(&json!({"x-sluice-preview": "canary"})));
    assert_eq!(metric.settings.get("bodyContains"), Some(&json!("v2")));
    let d = step(&mut r, Event::Measured { key, outcome: probe(false) }, at(2));
    assert_eq!(r.phase, Phase::Progressing, "one failed try of three is not a failed check");
    let key = measure_keys(&d).pop().expect("tried again");
    let d = step(&mut r, Event::Measured { key, outcome: probe(true) }, at(7));
    assert!(d.commands.iter().any(|c| matches!(c, Command::SetWeight { weight, .. } if *weight == w(5))), "{:?}", d.commands);
}

#[test]
fn a_lost_preview_is_asked_again_and_a_routers_junk_address_is_refused() {
    let mut r = new_rollout(preview_doc(json!({})));
    step(&mut r, Event::Start, at(0));
    assert!(ignored(&r, Event::Tick, at(10)).contains("nothing is due"), "a preview in flight is left alone");
    let d = step(&mut r, Event::Tick, at(31));
    assert!(d.commands.iter().any(|c| matches!(c, Command::Preview { .. })), "asked again: {:?}", d.commands);
    let lost = TimeDelta::milliseconds(decide::LOST_COMMAND_MS as i64);
    assert_eq!(r.sweep_at(), r.traffic.pending.as_ref().map(|p| p.issued_at + lost), "the sweep visits it when it is lost");

    let junk = |url: &str, headers: usize| PreviewAddress {
        url: url.into(),
        headers: (0..headers).map(|i| (format!("x-{i}"), "1".to_string())).collect(),
        how: "é".repeat(5000),
    };
    assert!(junk("javascript:alert(1)", 0).checked().is_err());
    assert!(junk(&format!("https://{}", "a".repeat(2000)), 0).checked().is_err());
    assert!(junk("https://ok.example", 9).checked().is_err());
    let kept = junk("https://ok.example", 1).checked().expect("a fair answer");
    assert!(kept.how.chars().count() <= 500, "the words are clipped");
    let mut painted = junk("https://ok.example", 0);
    painted.how = "\u{1b}[2Jall clear\r\n".into();
    assert_eq!(painted.checked().expect("kept").how, "[2Jall clear", "no escape reaches a terminal");
}

#[test]
fn a_background_analysis_waits_for_users_when_a_preview_comes_first() {
    let mut doc = preview_doc(json!({"check": {}}));
    doc["strategy"]["canary"]["analysis"] = json!({"metrics": [metric("bg", None)]});
    let (mut r, d) = previewed(doc);
    let background = |r: &Rollout| r.runs.iter().filter(|run| run.kind == RunKind::Background).count();
    assert_eq!(background(&r), 0, "nothing to judge at 0 %");
    let key = measure_keys(&d).pop().expect("the smoke check");
    step(&mut r, Event::Measured { key, outcome: probe(true) }, at(2));
    assert_eq!((r.traffic.weight, background(&r)), (w(5), 1), "it starts with the first weight");
}

#[test]
fn a_smoke_check_that_never_passes_rolls_back_with_its_evidence() {
    let (mut r, mut d) = previewed(preview_doc(json!({"check": {"attempts": 2}})));
    for i in 0..2 {
        let key = measure_keys(&d).pop().expect("a try");
        d = step(&mut r, Event::Measured { key, outcome: probe(false) }, at(2 + 10 * i));
    }
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(d.commands.iter().any(|c| matches!(c, Command::RevertTraffic { .. })));
    assert!(d.history.iter().any(|h| h.summary.contains("analysis smoke failed")), "{:?}", d.history);
}

#[test]
fn a_preview_without_a_check_waits_for_a_person_and_a_failed_router_is_retried() {
    let mut r = new_rollout(preview_doc(json!({})));
    let d = step(&mut r, Event::Start, at(0));
    let Some(Command::Preview { id }) = d.commands.first().cloned() else { panic!("{:?}", d.commands) };
    step(&mut r, Event::CommandFailed { command: CommandRef { kind: CommandKind::Preview, id }, error: "busy".into() }, at(1));
    let d = step(&mut r, Event::Tick, at(60));
    assert!(d.commands.iter().any(|c| matches!(c, Command::Preview { .. })), "retried: {:?}", d.commands);
    step(&mut r, Event::PreviewReady { address: preview_address() }, at(61));
    assert!(ignored(&r, Event::PreviewReady { address: preview_address() }, at(62)).contains("no preview is pending"));
    assert_eq!(r.phase, Phase::AwaitingApproval, "testers look, a person approves");
    let d = step(&mut r, Event::Approved { by: actor("alice"), stage: None, request: None }, at(70));
    assert!(d.commands.iter().any(|c| matches!(c, Command::SetWeight { weight, .. } if *weight == w(5))));
}
