//! `sluice bench judge`: how the statistical judges behave on generated
//! canaries at 5 % of traffic — how often a healthy one fails (the false
//! positive rate, which the confidence level bounds), how often it passes
//! (power to clear a good release), and how often a degraded one is caught.
//! Deterministic (seeded), so the figures are the same on every machine.

use serde::Serialize;

use crate::domain::stats::sim::{Experiment, Profile, Rates};
use crate::ports::local_router::LATENCY_BOUNDS_MS;

/// One sample size, both judges, healthy and degraded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeRow {
    /// Canary requests per comparison.
    pub canary_n: u64,
    /// Stable requests per comparison.
    pub stable_n: u64,
    /// Which judge.
    pub test: &'static str,
    /// Share of healthy canaries failed.
    pub healthy_fail: f64,
    /// Share of healthy canaries passed.
    pub healthy_pass: f64,
    /// Share of degraded canaries failed.
    pub degraded_fail: f64,
}

/// The whole table and the profiles behind it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeReport {
    /// Comparisons per cell.
    pub trials: u32,
    /// Confidence level.
    pub confidence: f64,
    /// What "healthy" and "degraded" mean here.
    pub profiles: String,
    /// One row per sample size and judge.
    pub rows: Vec<JudgeRow>,
}

/// Stable: 1 % errors, median 40 ms. Degraded canary: 3 % errors, median 52 ms (+30 %).
const STABLE: Profile = Profile { error_rate: 0.01, median_ms: 40.0, sigma: 0.5 };
const DEGRADED: Profile = Profile { error_rate: 0.03, median_ms: 52.0, sigma: 0.5 };
const MAX_INCREASE: f64 = 0.01;
const MAX_EFFECT: f64 = 0.1;

/// Runs `trials` comparisons per cell for canary samples of 50 to 2 000 requests.
pub fn judge(trials: u32) -> JudgeReport {
    let confidence = 0.95;
    let mut rows = Vec::new();
    for (i, canary_n) in [50u64, 150, 500, 2000].into_iter().enumerate() {
        let stable_n = canary_n * 19;
        let healthy = Experiment { canary_n, stable_n, stable: STABLE, canary: STABLE, confidence };
        let degraded = Experiment { canary: DEGRADED, ..healthy };
        let seed = 1000 * (i as u64 + 1);
        rows.push(row(
            &healthy,
            "errorRate (tolerance +1 point)",
            healthy.error_rates(seed, trials, MAX_INCREASE),
            degraded.error_rates(seed + 1, trials, MAX_INCREASE),
        ));
        rows.push(row(
            &healthy,
            "latency (tolerance 60 %)",
            healthy.latency(seed + 2, trials, MAX_EFFECT, &LATENCY_BOUNDS_MS),
            degraded.latency(seed + 3, trials, MAX_EFFECT, &LATENCY_BOUNDS_MS),
        ));
    }
    // With no tolerance each judge is a plain one-sided test: healthy canaries
    // then fail at about 1 − confidence, the rate the spec states.
    let healthy = Experiment { canary_n: 500, stable_n: 9500, stable: STABLE, canary: STABLE, confidence };
    let degraded = Experiment { canary: DEGRADED, ..healthy };
    rows.push(row(&healthy, "errorRate (no tolerance)", healthy.error_rates(7, trials, 0.0), degraded.error_rates(8, trials, 0.0)));
    rows.push(row(
        &healthy,
        "latency (no tolerance)",
        healthy.latency(9, trials, 0.0, &LATENCY_BOUNDS_MS),
        degraded.latency(10, trials, 0.0, &LATENCY_BOUNDS_MS),
    ));
    JudgeReport {
        trials,
        confidence,
        profiles: "canary at 5 % of traffic (stable has 19 × its requests); healthy = stable = 1 % errors, log-normal latency median 40 ms (σ 0.5); degraded = 3 % errors, median 52 ms (+30 %); latency in the local router's buckets".into(),
        rows,
    }
}

fn row(e: &Experiment, test: &'static str, healthy: Rates, degraded: Rates) -> JudgeRow {
    JudgeRow {
        canary_n: e.canary_n,
        stable_n: e.stable_n,
        test,
        healthy_fail: healthy.fail,
        healthy_pass: healthy.pass,
        degraded_fail: degraded.fail,
    }
}

/// The report as a table.
pub fn text(r: &JudgeReport) -> String {
    let mut out = format!("{} comparisons per cell at {:.0} % confidence; {}\n\n", r.trials, r.confidence * 100.0, r.profiles);
    out.push_str(&format!(
        "{:>8} {:>8}  {:<31} {:>13} {:>13} {:>15}\n",
        "canary n", "stable n", "judge", "healthy fail", "healthy pass", "degraded fail"
    ));
    for row in &r.rows {
        out.push_str(&format!(
            "{:>8} {:>8}  {:<31} {:>12.1}% {:>12.1}% {:>14.1}%\n",
            row.canary_n,
            row.stable_n,
            row.test,
            row.healthy_fail * 100.0,
            row.healthy_pass * 100.0,
            row.degraded_fail * 100.0
        ));
    }
    out
}
