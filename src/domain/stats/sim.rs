//! Generated canaries for measuring the judge: how often a healthy canary
//! fails (the false-positive rate) and how often a degraded one is caught
//! (the detection rate). Deterministic from a seed, so the property tests
//! and `sluice bench judge` report the same figures on every machine.

use super::{compare_error_rates, compare_latency, Decision, Histogram, Proportion};

/// SplitMix64: small, fast, and good enough to draw test samples.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A service's request profile: error rate and log-normal latency.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Share of requests that fail.
    pub error_rate: f64,
    /// Median latency in milliseconds.
    pub median_ms: f64,
    /// Spread of log-latency.
    pub sigma: f64,
}

impl Profile {
    /// Failures among `n` requests.
    pub fn failures(&self, rng: &mut Rng, n: u64) -> Proportion {
        let failures = (0..n).filter(|_| rng.uniform() < self.error_rate).count() as u64;
        Proportion { failures, total: n }
    }

    /// `n` request durations bucketed by `bounds` (milliseconds).
    pub fn latencies(&self, rng: &mut Rng, n: u64, bounds: &[f64]) -> Histogram {
        let mut counts = vec![0u64; bounds.len() + 1];
        for _ in 0..n {
            let ms = self.median_ms * (self.sigma * rng.normal()).exp();
            let i = bounds.iter().position(|b| ms <= *b).unwrap_or(bounds.len());
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        Histogram { bounds: bounds.to_vec(), counts }
    }
}

/// What a batch of generated comparisons decided.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Comparisons run.
    pub trials: u32,
    /// Share that failed.
    pub fail: f64,
    /// Share that passed.
    pub pass: f64,
}

fn tally(decisions: impl Iterator<Item = Decision>) -> Rates {
    let (mut trials, mut fail, mut pass) = (0u32, 0u32, 0u32);
    for d in decisions {
        trials += 1;
        match d {
            Decision::Fail => fail += 1,
            Decision::Pass => pass += 1,
            Decision::Inconclusive => {}
        }
    }
    let share = |k: u32| if trials == 0 { 0.0 } else { f64::from(k) / f64::from(trials) };
    Rates { trials, fail: share(fail), pass: share(pass) }
}

/// One generated experiment: sample sizes and the two profiles.
#[derive(Debug, Clone, Copy)]
pub struct Experiment {
    /// Canary requests per comparison.
    pub canary_n: u64,
    /// Stable requests per comparison.
    pub stable_n: u64,
    /// The stable version.
    pub stable: Profile,
    /// The canary.
    pub canary: Profile,
    /// Confidence level.
    pub confidence: f64,
}

impl Experiment {
    /// Runs the error-rate judge `trials` times.
    pub fn error_rates(&self, seed: u64, trials: u32, max_increase: f64) -> Rates {
        let mut rng = Rng::new(seed);
        tally((0..trials).map(|_| {
            let c = self.canary.failures(&mut rng, self.canary_n);
            let s = self.stable.failures(&mut rng, self.stable_n);
            compare_error_rates(c, s, max_increase, self.confidence).map(|j| j.decision).unwrap_or(Decision::Inconclusive)
        }))
    }

    /// Runs the latency judge `trials` times.
    pub fn latency(&self, seed: u64, trials: u32, max_effect: f64, bounds: &[f64]) -> Rates {
        let mut rng = Rng::new(seed);
        tally((0..trials).map(|_| {
            let c = self.canary.latencies(&mut rng, self.canary_n, bounds);
            let s = self.stable.latencies(&mut rng, self.stable_n, bounds);
            compare_latency(&c, &s, max_effect, self.confidence).map(|j| j.decision).unwrap_or(Decision::Inconclusive)
        }))
    }
}
