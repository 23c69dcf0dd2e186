use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::domain::ids::Weight;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid time") + TimeDelta::seconds(secs)
}

fn facts(service: &str, phase: Phase, finished: Option<i64>) -> Facts {
    Facts {
        id: format!("{service}-{}", finished.unwrap_or(-1)),
        service: service.into(),
        created_at: t(0),
        finished_at: finished.map(t),
        phase,
        cause: None,
        failed_at_weight: None,
        revert_ms: None,
        exposure: 0,
        approval_wait_ms: 0,
        steps: Vec::new(),
        backlog_failures: 0,
        notify_failures: 0,
    }
}

fn failed(service: &str, at_weight: u64, cause: &'static str, revert_ms: u64, exposure: u64) -> Facts {
    Facts {
        cause: Some(cause),
        failed_at_weight: Some(Weight::new(at_weight).expect("weight")),
        revert_ms: Some(revert_ms),
        exposure,
        ..facts(service, Phase::RolledBack, Some(100))
    }
}

fn sample() -> Vec<Facts> {
    let mut ok = facts("orders", Phase::Succeeded, Some(50));
    ok.approval_wait_ms = 90_000;
    ok.steps = vec![StepTime { stage: 1, kind: "analysis".into(), ms: 20_000, passed: true }];
    let mut flaky = failed("orders", 20, "alert", 4_000, 300);
    flaky.backlog_failures = 2;
    vec![
        ok,
        facts("orders", Phase::Succeeded, Some(60)),
        flaky,
        failed("payments", 100, "analysis", 2_000, 5_000),
        facts("payments", Phase::Aborted, Some(70)),
        facts("payments", Phase::Progressing, None),
    ]
}

#[test]
fn the_report_counts_deployments_failures_restore_time_and_where_failures_were_caught() {
    let r = report(&sample(), t(0), t(7 * 86_400), None);
    let all = &r.overall;
    assert_eq!((all.finished, all.deployments, all.failed, all.aborted, all.active), (5, 2, 2, 1, 1));
    assert_eq!(all.deploys_per_week, 2.0);
    assert_eq!(all.change_failure_rate, Some(0.5), "2 failed of 4 changes (the abort is not a change that failed)");
    assert_eq!(all.mean_time_to_restore_secs, Some(3.0), "(4 s + 2 s) / 2");
    assert_eq!(all.caught_at.get("20"), Some(&1));
    assert_eq!(all.escaped, 1, "the failure found at 100 % reached everyone");
    assert_eq!(all.exposure_requests, 5_300);
    assert_eq!((all.approval_wait_secs, all.mean_approval_wait_secs), (90.0, Some(90.0)));
    assert_eq!(all.causes.get("alert"), Some(&1));
    let names: Vec<&str> = r.services.iter().map(|h| h.service.as_str()).collect();
    assert_eq!(names, ["orders", "payments"]);
    assert_eq!(r.services[0].change_failure_rate, Some(0.33));
    assert_eq!(r.services[1].change_failure_rate, Some(1.0));
}

#[test]
fn the_report_keeps_to_its_period_and_service() {
    let r = report(&sample(), t(55), t(80), Some("orders"));
    assert_eq!(r.services.len(), 1);
    assert_eq!((r.overall.deployments, r.overall.failed, r.overall.finished), (1, 0, 1), "only the deployment finished at 60 s");
    let empty = report(&[], t(0), t(10), None);
    assert_eq!((empty.overall.change_failure_rate, empty.overall.mean_time_to_restore_secs), (None, None));
}

#[test]
fn the_exposition_has_each_family_once_and_cumulative_buckets() {
    let text = exposition(&sample());
    for family in [
        "sluice_rollouts_active",
        "sluice_rollouts_finished_total",
        "sluice_rollbacks_total",
        "sluice_time_to_revert_seconds",
        "sluice_step_decision_seconds",
        "sluice_failed_canary_requests_total",
        "sluice_backlog_failures_total",
        "sluice_notification_failures_total",
        "sluice_approval_wait_seconds_total",
    ] {
        assert_eq!(text.matches(&format!("# TYPE {family} ")).count(), 1, "{family}");
    }
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    has(r#"sluice_rollouts_active{service="payments",phase="Progressing"} 1"#);
    has(r#"sluice_rollouts_finished_total{service="orders",outcome="succeeded"} 2"#);
    has(r#"sluice_rollbacks_total{service="orders",cause="alert"} 1"#);
    has(r#"sluice_time_to_revert_seconds_bucket{le="1"} 0"#);
    has(r#"sluice_time_to_revert_seconds_bucket{le="2"} 1"#);
    has(r#"sluice_time_to_revert_seconds_bucket{le="5"} 2"#);
    has(r#"sluice_time_to_revert_seconds_bucket{le="+Inf"} 2"#);
    has("sluice_time_to_revert_seconds_sum 6");
    has(r#"sluice_step_decision_seconds_bucket{kind="analysis",result="passed",le="30"} 1"#);
    has(r#"sluice_failed_canary_requests_total{service="payments"} 5000"#);
    has(r#"sluice_backlog_failures_total{service="orders"} 2"#);
    has(r#"sluice_approval_wait_seconds_total{service="orders"} 90"#);
    assert!(!text.contains("sluice_notification_failures_total{"), "a counter at zero is left out:\n{text}");
}

#[test]
fn label_values_are_escaped() {
    let mut f = failed("a\"b\\c", 5, "alert", 1, 1);
    f.service.push('\n');
    let text = exposition(&[f]);
    assert!(text.contains(r#"service="a\"b\\c\n""#), "{text}");
}

#[test]
fn the_log_line_is_one_json_object_after_its_prefix() {
    let line = failed("orders", 5, "alert", 1500, 42).log_line();
    let json = line.strip_prefix(METRIC_LINE_PREFIX).expect("prefix");
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    assert_eq!((v["service"].as_str(), v["cause"].as_str(), v["revertMs"].as_u64()), (Some("orders"), Some("alert"), Some(1500)));
    assert!(!line.contains('\n'));
}

#[test]
fn facts_read_from_a_stored_state_match_those_of_the_state() {
    let doc = serde_json::json!({
        "target": {"name": "orders", "router": {"provider": "local"},
                   "stable": {"name": "s", "version": "v1"}, "canary": {"name": "c", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}
    });
    let names =
        crate::domain::spec::ProviderNames { traffic: vec!["local"], metrics: vec![], backlog: vec![], notify: vec![], no_preview: vec![] };
    let (spec, plan) = crate::domain::spec::validate(&doc, &names).expect("valid");
    let id = crate::domain::ids::RolloutId::parse("r-1").expect("id");
    let (mut r, _) = Rollout::new(id, spec, plan, crate::domain::ids::Actor::parse("ci").expect("actor"), t(0));
    r.tally.approval_wait_ms = 1234;
    let stored = serde_json::to_string(&r).expect("json");
    assert_eq!(Facts::from_stored(&stored).expect("facts"), Facts::of(&r));
    assert!(Facts::from_stored("{\"id\": 1}").is_err(), "a broken state is an error, not empty facts");
}

#[test]
fn the_trend_counts_finished_rollouts_by_day_or_week_of_finishing() {
    let day = 86_400;
    let mut rollouts = vec![
        facts("orders", Phase::Succeeded, Some(10)),
        facts("orders", Phase::Succeeded, Some(day + 5)),
        failed("orders", 20, "analysis", 100, 10),
        facts("orders", Phase::Aborted, Some(6 * day + 1)),
        facts("orders", Phase::Progressing, None),
    ];
    rollouts[2].finished_at = Some(t(day + 9));
    // t(0) is 08:00 UTC: the days are calendar days, the first from midnight.
    let midnight = t(-8 * 3600);
    assert_eq!(midnight.format("%H:%M").to_string(), "00:00");
    let week = report(&rollouts, t(0), t(7 * day), None).trend;
    assert_eq!(week.bucket_days, 1);
    let counts: Vec<(u64, u64, u64)> = week.buckets.iter().map(|b| (b.deployments, b.failed, b.aborted)).collect();
    assert_eq!(counts, [(1, 0, 0), (1, 1, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0)]);
    assert_eq!((week.buckets[0].from, week.buckets[1].from), (midnight, midnight + TimeDelta::days(1)), "a bucket a calendar day");
    // A rollout finishing at 07:00 on the last day is under that day's date, not the day before.
    let last_morning = report(&[facts("orders", Phase::Succeeded, Some(7 * day - 3600))], t(0), t(7 * day), None).trend;
    let bucket = last_morning.buckets.iter().find(|b| b.deployments == 1).expect("counted");
    assert_eq!(bucket.from.date_naive(), t(7 * day - 3600).date_naive());
    let month = report(&rollouts, t(0), t(30 * day), None).trend;
    assert_eq!((month.bucket_days, month.buckets.len()), (7, 5), "30 days: four weeks and two days");
    assert_eq!((month.buckets[0].deployments, month.buckets[0].failed, month.buckets[0].aborted), (2, 1, 1));
    let year = report(&rollouts, t(0), t(365 * day), None).trend;
    assert_eq!((year.bucket_days, year.buckets.len()), (30, 13));
    let end = report(&[facts("orders", Phase::Succeeded, Some(7 * day))], t(0), t(7 * day), None).trend;
    assert_eq!(end.buckets.last().map(|b| b.deployments), Some(1), "a rollout finishing at the very end is in the last bucket");
}

/// Facts drawn from a small world, so services, phases and steps collide.
fn arbitrary_facts() -> impl proptest::strategy::Strategy<Value = Facts> {
    use proptest::prelude::*;
    let phases = prop_oneof![
        Just(Phase::Progressing),
        Just(Phase::AwaitingApproval),
        Just(Phase::Succeeded),
        Just(Phase::RolledBack),
        Just(Phase::Aborted)
    ];
    (
        0..3usize,
        phases,
        proptest::option::of(0u64..700_000),
        0u64..10_000,
        0u64..200_000,
        proptest::collection::vec((0..3usize, 0u64..90_000_000, any::<bool>()), 0..4),
        0u32..3,
    )
        .prop_map(|(s, phase, revert, exposure, wait, steps, backlog)| {
            let finished = phase.is_terminal().then_some(100);
            let mut f = facts(["orders", "payments", "a\"b"][s], phase, finished);
            if phase == Phase::RolledBack {
                f.cause = Some("alert");
                f.revert_ms = revert;
            }
            f.exposure = exposure;
            f.approval_wait_ms = wait;
            f.backlog_failures = backlog;
            f.steps = steps
                .into_iter()
                .map(|(k, ms, passed)| StepTime { stage: k, kind: ["analysis", "pause", "approval"][k].into(), ms, passed })
                .collect();
            f
        })
}

proptest::proptest! {
    /// What a store keeps — each rollout's contribution added as it is written, its old one
    /// taken back, a deleted one's taken back — draws the same exposition as the facts of
    /// what is left, and survives a round trip through JSON.
    #[test]
    fn kept_sums_draw_the_exposition_of_what_is_stored(
        first in proptest::collection::vec(arbitrary_facts(), 0..12),
        later in proptest::collection::vec(arbitrary_facts(), 0..12),
        deleted in proptest::collection::vec(proptest::bool::ANY, 12),
    ) {
        let mut kept = Tallies::default();
        let mut stored: Vec<Facts> = Vec::new();
        for f in &first {
            kept.add(&Tallies::of(f), 1);
            stored.push(f.clone());
        }
        // Each rollout written again with other facts: the change is added.
        for (i, f) in later.iter().enumerate().take(stored.len()) {
            kept.add(&Tallies::change(&Tallies::of(&stored[i]), &Tallies::of(f)), 1);
            stored[i] = f.clone();
        }
        let mut left = Vec::new();
        for (i, f) in stored.into_iter().enumerate() {
            if deleted[i] {
                kept.add(&Tallies::of(&f), -1);
            } else {
                left.push(f);
            }
        }
        proptest::prop_assert_eq!(render(&kept), exposition(&left));
        proptest::prop_assert_eq!(&kept, &Tallies::sum(&left));
        let json = serde_json::to_string(&kept).expect("json");
        proptest::prop_assert_eq!(serde_json::from_str::<Tallies>(&json).expect("read back"), kept);
    }
}

#[test]
fn nothing_kept_draws_every_family_and_no_series() {
    let text = render(&Tallies::default());
    assert_eq!(text, exposition(&[]));
    assert!(text.contains("sluice_time_to_revert_seconds_count 0"), "{text}");
    assert!(!text.contains("service="), "{text}");
}
