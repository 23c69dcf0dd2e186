//! The statistical judge: is the canary worse than stable by more than the
//! team tolerates, with the confidence the spec sets?
//!
//! Two tests, both one-sided ("worse", never "different"):
//! - error rates: canary vs stable failures over requests, by a pooled
//!   two-proportion z-test, or Fisher's exact test when an expected cell
//!   count is below 5; the effect is the difference in rates, bounded by
//!   Newcombe's hybrid score interval (Wilson intervals per side), which
//!   stays honest at zero failures;
//! - latency: canary vs stable request durations, given as histograms with
//!   shared bucket bounds (Prometheus `_bucket` series, the local router's
//!   buckets), by a Mann-Whitney U test with the tie correction (a bucket is
//!   a group of ties); the effect is U / (n₁·n₂), the probability that a
//!   random canary request is slower than a random stable one (0.5 = no
//!   difference), bounded by Hanley & McNeil's standard error.
//!
//! The decision is three-way, so a small sample can never pass:
//! - **fail** when the test says "worse" at the confidence level
//!   (p < 1 − confidence) and the effect is beyond the tolerance;
//! - **pass** when the effect's upper confidence bound is within the
//!   tolerance (the data rule out a harm bigger than tolerated);
//! - **inconclusive** otherwise: not enough data for either claim.
//!
//! Distributions come from `statrs`; nothing here does I/O.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, DiscreteCDF, Hypergeometric, Normal};

/// Failures out of requests for one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proportion {
    /// Failed requests.
    pub failures: u64,
    /// All requests.
    pub total: u64,
}

impl Proportion {
    /// The failure rate; zero without requests.
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failures as f64 / self.total as f64
        }
    }
}

/// Request durations for one side, bucketed: `counts[i]` requests took at
/// most `bounds[i]` and more than `bounds[i - 1]` (not cumulative); the
/// last count, one past the bounds, is everything slower (Prometheus' `+Inf`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// Finite upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Requests per bucket: one per bound, then one above them all.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Requests in all buckets.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound under which a share `q` of the requests fall (an
    /// upper estimate, as a responder reads a histogram).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bound, count) in self.bounds.iter().chain(std::iter::once(&f64::INFINITY)).zip(&self.counts) {
            seen += count;
            if seen >= rank {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }
}

/// Which test produced a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Test {
    /// Pooled two-proportion z-test.
    TwoProportionZ,
    /// Fisher's exact test (small counts).
    FisherExact,
    /// Mann-Whitney U with tie correction.
    MannWhitneyU,
}

impl Test {
    fn words(self) -> &'static str {
        match self {
            Test::TwoProportionZ => "two-proportion z-test",
            Test::FisherExact => "Fisher's exact test",
            Test::MannWhitneyU => "Mann-Whitney U test",
        }
    }
}

/// The three-way decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Not worse than tolerated, with confidence.
    Pass,
    /// Significantly worse, by more than tolerated.
    Fail,
    /// The data support neither claim.
    Inconclusive,
}

/// The numbers behind a decision, kept in the history and the backlog issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    /// The decision.
    pub decision: Decision,
    /// The test used.
    pub test: Test,
    /// Canary requests.
    pub canary_n: u64,
    /// Stable requests.
    pub stable_n: u64,
    /// The U statistic (Mann-Whitney only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<f64>,
    /// One-sided p-value for "the canary is worse".
    pub p_value: f64,
    /// The effect: rate difference, or P(canary slower).
    pub effect: f64,
    /// The effect's upper confidence bound.
    pub upper: f64,
    /// The largest effect tolerated.
    pub tolerated: f64,
    /// The confidence level.
    pub confidence: f64,
    /// The decision in words a responder understands.
    pub words: String,
}

/// Why two samples cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A side had no requests.
    #[error("no {0} requests in the window")]
    Empty(&'static str),
    /// Failures above requests, mismatched buckets, a bad confidence.
    #[error("{0}")]
    Invalid(String),
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The one-sided critical value for a confidence level in [0.5, 1), the
/// range the spec's schema allows.
fn z_for(confidence: f64) -> Result<f64, StatsError> {
    if !(0.5..1.0).contains(&confidence) {
        return Err(StatsError::Invalid(format!("confidence {confidence} is not from 0.5 up to 1")));
    }
    Ok(standard_normal().inverse_cdf(confidence))
}

/// Wilson score interval for one proportion at critical value `z`.
fn wilson(p: Proportion, z: f64) -> (f64, f64) {
    let n = p.total as f64;
    let phat = p.rate();
    let z2 = z * z;
    let centre = (phat + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (phat * (1.0 - phat) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// One-sided p-value that the canary fails more often, and the test used.
fn proportion_p_value(canary: Proportion, stable: Proportion) -> (f64, Test) {
    let (nc, ns) = (canary.total as f64, stable.total as f64);
    let failures = canary.failures + stable.failures;
    let n = canary.total + stable.total;
    let pooled = failures as f64 / n as f64;
    let smallest_expected = [nc * pooled, nc * (1.0 - pooled), ns * pooled, ns * (1.0 - pooled)].into_iter().fold(f64::INFINITY, f64::min);
    if smallest_expected < 5.0 {
        // X = canary failures ~ Hypergeometric(N, K, n_c) given the margins; p = P(X >= observed).
        let p = match (canary.failures, Hypergeometric::new(n, failures, canary.total)) {
            (0, _) => 1.0,
            (x, Ok(h)) => h.sf(x - 1),
            (_, Err(_)) => 1.0,
        };
        return (p.clamp(0.0, 1.0), Test::FisherExact);
    }
    let se = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / ns)).sqrt();
    let diff = canary.rate() - stable.rate();
    let p = if se > 0.0 { standard_normal().sf(diff / se) } else { 1.0 };
    (p, Test::TwoProportionZ)
}

/// Judges error rates: fails when the canary's rate is significantly above
/// stable's and more than `max_increase` (absolute, 0.01 = one percentage
/// point) above it; passes when the upper bound of the increase is within it.
pub fn compare_error_rates(canary: Proportion, stable: Proportion, max_increase: f64, confidence: f64) -> Result<Judgement, StatsError> {
    let z = z_for(confidence)?;
    for (side, p) in [("canary", canary), ("stable", stable)] {
        if p.total == 0 {
            return Err(StatsError::Empty(side));
        }
        if p.failures > p.total {
            return Err(StatsError::Invalid(format!("{side} has {} failures of {} requests", p.failures, p.total)));
        }
    }
    let (pc, ps) = (canary.rate(), stable.rate());
    let diff = pc - ps;
    let (_, uc) = wilson(canary, z);
    let (ls, _) = wilson(stable, z);
    // Newcombe (1998), method 10, one-sided upper bound of pc - ps.
    let upper = diff + ((uc - pc).powi(2) + (ps - ls).powi(2)).sqrt();
    let (p_value, test) = proportion_p_value(canary, stable);
    let decision = decide(p_value, diff, upper, max_increase, confidence);
    let pct = |r: f64| format!("{:.2} %", r * 100.0);
    let pts = |d: f64| format!("{:+.2} points", d * 100.0);
    let verdict = match decision {
        Decision::Fail => "the canary is significantly worse than tolerated".to_string(),
        Decision::Pass => "the data rule out an increase beyond the tolerance".to_string(),
        Decision::Inconclusive => "not enough data to say either way".to_string(),
    };
    let words = format!(
        "canary {} errors ({} of {}) vs stable {} ({} of {}): {} (tolerated {}); {} p {}; {:.0} % upper bound {} → {verdict}",
        pct(pc),
        canary.failures,
        canary.total,
        pct(ps),
        stable.failures,
        stable.total,
        pts(diff),
        pts(max_increase),
        test.words(),
        p_text(p_value),
        confidence * 100.0,
        pts(upper),
    );
    Ok(Judgement {
        decision,
        test,
        canary_n: canary.total,
        stable_n: stable.total,
        u: None,
        p_value,
        effect: diff,
        upper,
        tolerated: max_increase,
        confidence,
        words,
    })
}

/// Judges latency: fails when canary requests are significantly slower and
/// the probability that a canary request is slower than a stable one exceeds
/// 0.5 + `max_effect`; passes when that probability's upper bound is within it.
pub fn compare_latency(canary: &Histogram, stable: &Histogram, max_effect: f64, confidence: f64) -> Result<Judgement, StatsError> {
    let z = z_for(confidence)?;
    if canary.bounds != stable.bounds || canary.counts.len() != canary.bounds.len() + 1 || stable.counts.len() != stable.bounds.len() + 1 {
        return Err(StatsError::Invalid("the two histograms do not have the same buckets".into()));
    }
    let (n1, n2) = (canary.total(), stable.total());
    if n1 == 0 {
        return Err(StatsError::Empty("canary"));
    }
    if n2 == 0 {
        return Err(StatsError::Empty("stable"));
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    // U for the canary: pairs where the canary request is slower, ties count half.
    let mut stable_below = 0u64;
    let mut u = 0.0;
    let mut ties = 0.0;
    for (c, s) in canary.counts.iter().zip(&stable.counts) {
        u += *c as f64 * (stable_below as f64 + *s as f64 / 2.0);
        stable_below += s;
        let t = (c + s) as f64;
        ties += t * t * t - t;
    }
    let n = n1f + n2f;
    let variance = n1f * n2f / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let mean = n1f * n2f / 2.0;
    let p_value = if variance > 0.0 { standard_normal().sf((u - mean - 0.5) / variance.sqrt()) } else { 1.0 };
    let a = u / (n1f * n2f);
    // Hanley & McNeil (1982) standard error of the AUC-like effect.
    let q1 = a / (2.0 - a);
    let q2 = 2.0 * a * a / (1.0 + a);
    let var_a = (a * (1.0 - a) + (n1f - 1.0) * (q1 - a * a) + (n2f - 1.0) * (q2 - a * a)) / (n1f * n2f);
    let upper = (a + z * var_a.max(0.0).sqrt()).min(1.0);
    let effect = a - 0.5;
    let decision = decide(p_value, effect, upper - 0.5, max_effect, confidence);
    let median = |h: &Histogram| quantile_text(h, 0.5);
    let p95 = |h: &Histogram| quantile_text(h, 0.95);
    let verdict = match decision {
        Decision::Fail => "the canary is significantly slower than tolerated",
        Decision::Pass => "the data rule out a slowdown beyond the tolerance",
        Decision::Inconclusive => "not enough data to say either way",
    };
    let words = format!(
        "a canary request is slower than a stable one {:.0} % of the time (tolerated {:.0} %; canary median {}, p95 {}; stable median {}, p95 {}; {} vs {} requests); {} U = {:.0}, p {}; {:.0} % upper bound {:.0} % → {verdict}",
        a * 100.0,
        (0.5 + max_effect) * 100.0,
        median(canary),
        p95(canary),
        median(stable),
        p95(stable),
        n1,
        n2,
        Test::MannWhitneyU.words(),
        u,
        p_text(p_value),
        confidence * 100.0,
        upper * 100.0,
    );
    Ok(Judgement {
        decision,
        test: Test::MannWhitneyU,
        canary_n: n1,
        stable_n: n2,
        u: Some(u),
        p_value,
        effect,
        upper: upper - 0.5,
        tolerated: max_effect,
        confidence,
        words,
    })
}

/// The three-way rule shared by both tests.
fn decide(p_value: f64, effect: f64, upper: f64, tolerated: f64, confidence: f64) -> Decision {
    if p_value < 1.0 - confidence && effect > tolerated {
        Decision::Fail
    } else if upper <= tolerated {
        Decision::Pass
    } else {
        Decision::Inconclusive
    }
}

fn p_text(p: f64) -> String {
    if p < 0.0001 {
        "< 0.0001".into()
    } else {
        format!("= {p:.4}")
    }
}

/// Where a quantile falls, as a histogram can tell: `≤ 0.25`, or `> 0.25`
/// when it lies in the overflow bucket.
fn quantile_text(h: &Histogram, q: f64) -> String {
    match h.quantile_bound(q) {
        Some(b) if b.is_finite() => format!("≤ {b}"),
        Some(_) => h.bounds.last().map(|b| format!("> {b}")).unwrap_or_else(|| "-".into()),
        None => "-".into(),
    }
}

pub mod sim;

#[cfg(test)]
mod tests;
