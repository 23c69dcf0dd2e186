use proptest::prelude::*;

use super::sim::{Experiment, Profile};
use super::*;

const BOUNDS: [f64; 11] = [5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0];

fn p(failures: u64, total: u64) -> Proportion {
    Proportion { failures, total }
}

fn hist(counts: &[u64]) -> Histogram {
    Histogram { bounds: BOUNDS[..counts.len() - 1].to_vec(), counts: counts.to_vec() }
}

#[test]
fn fisher_exact_for_small_counts_matches_the_hypergeometric_tail() {
    // P(X >= 3), X ~ Hypergeometric(N = 330, K = 4, n = 30): 0.0025668 (computed with exact binomials).
    let j = compare_error_rates(p(3, 30), p(1, 300), 0.01, 0.95).expect("comparable");
    assert_eq!(j.test, Test::FisherExact);
    assert!((j.p_value - 0.002_566_79).abs() < 1e-6, "p = {}", j.p_value);
    assert_eq!(j.decision, Decision::Fail, "{}", j.words);
    let j = compare_error_rates(p(5, 20), p(0, 200), 0.01, 0.95).expect("comparable");
    assert!((j.p_value - 3.779_098_7e-6).abs() < 1e-9, "p = {}", j.p_value);
}

#[test]
fn z_test_for_large_counts_and_words_a_responder_reads() {
    let j = compare_error_rates(p(30, 1000), p(100, 10_000), 0.01, 0.95).expect("comparable");
    assert_eq!(j.test, Test::TwoProportionZ);
    assert!(j.p_value < 1e-6, "p = {}", j.p_value);
    assert_eq!(j.decision, Decision::Fail);
    assert!((j.effect - 0.02).abs() < 1e-12);
    assert!(j
        .words
        .starts_with("canary 3.00 % errors (30 of 1000) vs stable 1.00 % (100 of 10000): +2.00 points (tolerated +1.00 points)"));
    assert!(j.words.ends_with("→ the canary is significantly worse than tolerated"), "{}", j.words);
}

#[test]
fn zero_failures_pass_only_with_enough_requests() {
    let few = compare_error_rates(p(0, 10), p(0, 200), 0.01, 0.95).expect("comparable");
    assert_eq!(few.decision, Decision::Inconclusive, "{}", few.words);
    let many = compare_error_rates(p(0, 2000), p(0, 20_000), 0.01, 0.95).expect("comparable");
    assert_eq!(many.decision, Decision::Pass, "{}", many.words);
}

#[test]
fn empty_or_impossible_sides_are_errors_not_verdicts() {
    assert_eq!(compare_error_rates(p(0, 0), p(0, 10), 0.01, 0.95), Err(StatsError::Empty("canary")));
    assert!(matches!(compare_error_rates(p(11, 10), p(0, 10), 0.01, 0.95), Err(StatsError::Invalid(_))));
    assert!(matches!(compare_error_rates(p(1, 10), p(0, 10), 0.01, 1.0), Err(StatsError::Invalid(_))));
    assert!(compare_error_rates(p(1, 10), p(0, 10), 0.01, 0.5).is_ok(), "the schema's lowest confidence is accepted");
    assert_eq!(compare_latency(&hist(&[0, 0]), &hist(&[1, 1]), 0.1, 0.95), Err(StatsError::Empty("canary")));
    let other = Histogram { bounds: vec![1.0], counts: vec![1, 1] };
    assert!(matches!(compare_latency(&hist(&[1, 1]), &other, 0.1, 0.95), Err(StatsError::Invalid(_))));
}

#[test]
fn mann_whitney_counts_ties_by_bucket() {
    // Canary: 2 in bucket 1, 2 in bucket 2; stable: 4 in bucket 1.
    // U = 2 × (0 + 4/2) + 2 × (4 + 0) = 12 of 16 pairs.
    let j = compare_latency(&hist(&[0, 2, 2]), &hist(&[0, 4, 0]), 0.1, 0.95).expect("comparable");
    assert_eq!(j.u, Some(12.0));
    assert!((j.effect - 0.25).abs() < 1e-12);
    assert_eq!(j.decision, Decision::Inconclusive, "8 requests prove nothing: {}", j.words);
}

#[test]
fn a_clearly_slower_canary_fails_and_an_equal_one_passes() {
    let slow = compare_latency(&hist(&[0, 0, 10, 80, 10]), &hist(&[10, 80, 10, 0, 0]), 0.1, 0.95).expect("comparable");
    assert_eq!(slow.decision, Decision::Fail, "{}", slow.words);
    assert!(slow.words.contains("slower than a stable one 100 % of the time"), "{}", slow.words);
    let same = compare_latency(&hist(&[100, 800, 100]), &hist(&[1000, 8000, 1000]), 0.1, 0.95).expect("comparable");
    assert_eq!(same.decision, Decision::Pass, "{}", same.words);
    assert!(same.p_value > 0.3);
}

#[test]
fn healthy_canaries_fail_no_more_often_than_the_confidence_allows() {
    let healthy = Profile { error_rate: 0.01, median_ms: 40.0, sigma: 0.5 };
    let e = Experiment { canary_n: 300, stable_n: 3000, stable: healthy, canary: healthy, confidence: 0.95 };
    // With no tolerance the judge is a plain one-sided test at 5 %.
    let strict = e.error_rates(7, 2000, 0.0);
    assert!(strict.fail <= 0.05 + 0.015, "error-rate false positives {:.3}", strict.fail);
    let tolerant = e.error_rates(8, 2000, 0.01);
    assert!(
        tolerant.fail <= strict.fail,
        "a tolerance never adds false positives: with a 1-point tolerance, false positives {:.3}",
        tolerant.fail
    );
    let latency = e.latency(9, 1000, 0.0, &BOUNDS);
    assert!(latency.fail <= 0.05 + 0.02, "latency false positives {:.3}", latency.fail);
    let latency = e.latency(10, 1000, 0.1, &BOUNDS);
    assert!(latency.fail <= 0.001 && latency.pass >= 0.9, "latency with tolerance: {latency:?}");
}

#[test]
fn a_shifted_canary_is_caught() {
    let stable = Profile { error_rate: 0.01, median_ms: 40.0, sigma: 0.5 };
    let worse = Profile { error_rate: 0.05, median_ms: 60.0, sigma: 0.5 };
    let e = Experiment { canary_n: 300, stable_n: 3000, stable, canary: worse, confidence: 0.95 };
    let errors = e.error_rates(11, 500, 0.01);
    assert!(errors.fail >= 0.95, "errors 1 % → 5 %: caught {:.3}", errors.fail);
    let latency = e.latency(12, 500, 0.1, &BOUNDS);
    assert!(latency.fail >= 0.95, "median 40 → 60 ms: caught {:.3}", latency.fail);
}

proptest! {
    #[test]
    fn a_verdict_always_agrees_with_its_numbers(
        cf in 0u64..50, cn in 1u64..2000, sf in 0u64..50, sn in 1u64..5000, tol in 0.0f64..0.05, conf in 0.8f64..0.995,
    ) {
        let (cf, sf) = (cf.min(cn), sf.min(sn));
        let j = compare_error_rates(p(cf, cn), p(sf, sn), tol, conf).expect("comparable");
        prop_assert!((0.0..=1.0).contains(&j.p_value));
        prop_assert!(j.upper >= j.effect - 1e-12, "the bound is above the estimate");
        match j.decision {
            Decision::Fail => prop_assert!(j.p_value < 1.0 - conf && j.effect > tol),
            Decision::Pass => prop_assert!(j.upper <= tol),
            Decision::Inconclusive => prop_assert!(j.upper > tol && !(j.p_value < 1.0 - conf && j.effect > tol)),
        }
    }

    #[test]
    fn u_for_both_sides_adds_up_to_all_pairs(
        c in proptest::collection::vec(0u64..40, 6), s in proptest::collection::vec(0u64..40, 6),
    ) {
        let (c, s) = (hist(&c), hist(&s));
        prop_assume!(c.total() > 0 && s.total() > 0);
        let a = compare_latency(&c, &s, 0.1, 0.95).expect("comparable");
        let b = compare_latency(&s, &c, 0.1, 0.95).expect("comparable");
        let pairs = (c.total() * s.total()) as f64;
        prop_assert!((a.u.unwrap_or(0.0) + b.u.unwrap_or(0.0) - pairs).abs() < 1e-6);
        prop_assert!(!(a.decision == Decision::Fail && b.decision == Decision::Fail), "both cannot be slower");
    }

    #[test]
    fn more_canary_failures_never_turn_a_failure_into_a_pass(
        cf in 0u64..40, extra in 1u64..40, cn in 100u64..1000, sf in 0u64..40, sn in 100u64..5000,
    ) {
        let before = compare_error_rates(p(cf, cn), p(sf, sn), 0.01, 0.95).expect("comparable");
        let after = compare_error_rates(p((cf + extra).min(cn), cn), p(sf, sn), 0.01, 0.95).expect("comparable");
        if before.decision == Decision::Fail {
            prop_assert_eq!(after.decision, Decision::Fail);
        }
        if after.decision == Decision::Pass {
            prop_assert_eq!(before.decision, Decision::Pass);
        }
    }
}
