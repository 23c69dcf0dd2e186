//! Per-version request counters for the local router: cumulative totals for
//! Prometheus, and a ring of one-second buckets so analysis can ask for the
//! error rate and latency quantiles of the last N seconds of real traffic.

use std::sync::Mutex;

use serde::Serialize;

use crate::ports::local_router::WindowStats;

pub use crate::ports::local_router::LATENCY_BOUNDS_MS as BUCKETS_MS;
const N: usize = BUCKETS_MS.len() + 1;
/// Seconds of history kept for windows.
pub const RING_SECONDS: usize = 300;

#[derive(Clone, Copy)]
struct Counts {
    requests: u64,
    errors: u64,
    latency_sum_ms: f64,
    hist: [u64; N],
}

impl Counts {
    const ZERO: Counts = Counts { requests: 0, errors: 0, latency_sum_ms: 0.0, hist: [0; N] };

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_sum_ms += other.latency_sum_ms;
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a += b;
        }
    }

    fn record(&mut self, error: bool, latency_ms: f64) {
        self.requests += 1;
        if error {
            self.errors += 1;
        }
        self.latency_sum_ms += latency_ms;
        let i = BUCKETS_MS.iter().position(|b| latency_ms <= *b).unwrap_or(N - 1);
        self.hist[i] += 1;
    }

    /// Quantile by linear interpolation inside the bucket, as Prometheus'
    /// `histogram_quantile` does.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut cumulative = 0u64;
        for (i, count) in self.hist.iter().enumerate() {
            let before = cumulative;
            cumulative += count;
            if cumulative as f64 >= rank && *count > 0 {
                if i == N - 1 {
                    return Some(BUCKETS_MS[N - 2]);
                }
                let lower = if i == 0 { 0.0 } else { BUCKETS_MS[i - 1] };
                let upper = BUCKETS_MS[i];
                let within = (rank - before as f64) / *count as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
        }
        Some(BUCKETS_MS[N - 2])
    }
}

struct Side {
    total: Counts,
    ring: Vec<(u64, Counts)>,
}

impl Side {
    fn new() -> Self {
        Side { total: Counts::ZERO, ring: vec![(u64::MAX, Counts::ZERO); RING_SECONDS] }
    }
}

/// Which side of the split a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The stable version.
    Stable,
    /// The canary.
    Canary,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

/// Counters for both sides.
pub struct Stats {
    sides: Mutex<[Side; 2]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { sides: Mutex::new([Side::new(), Side::new()]) }
    }
}

fn index(role: Role) -> usize {
    match role {
        Role::Stable => 0,
        Role::Canary => 1,
    }
}

impl Stats {
    /// Records one request at `now_secs` (Unix seconds).
    pub fn record(&self, role: Role, error: bool, latency_ms: f64, now_secs: u64) {
        let Ok(mut sides) = self.sides.lock() else { return };
        let side = &mut sides[index(role)];
        side.total.record(error, latency_ms);
        let slot = &mut side.ring[(now_secs as usize) % RING_SECONDS];
        if slot.0 != now_secs {
            *slot = (now_secs, Counts::ZERO);
        }
        slot.1.record(error, latency_ms);
    }

    /// The last `window_secs` whole seconds plus the current, partial one, so
    /// a window always holds at least `window_secs` of traffic.
    pub fn window(&self, role: Role, window_secs: u64, now_secs: u64) -> WindowStats {
        let window = window_secs.clamp(1, RING_SECONDS as u64 - 2);
        let mut sum = Counts::ZERO;
        if let Ok(sides) = self.sides.lock() {
            let side = &sides[index(role)];
            for s in now_secs.saturating_sub(window)..=now_secs {
                let slot = &side.ring[(s as usize) % RING_SECONDS];
                if slot.0 == s {
                    sum.add(&slot.1);
                }
            }
        }
        WindowStats {
            requests: sum.requests,
            errors: sum.errors,
            error_rate: (sum.requests > 0).then(|| sum.errors as f64 / sum.requests as f64),
            p50_ms: sum.quantile(0.50),
            p95_ms: sum.quantile(0.95),
            p99_ms: sum.quantile(0.99),
            buckets: sum.hist.to_vec(),
        }
    }

    /// Cumulative counters in Prometheus text format.
    pub fn prometheus(&self, versions: [(Role, &str); 2]) -> String {
        let mut out = String::new();
        out.push_str("# HELP sluice_router_requests_total Requests proxied, by role and version.\n");
        out.push_str("# TYPE sluice_router_requests_total counter\n");
        let Ok(sides) = self.sides.lock() else { return out };
        for (role, version) in versions {
            let t = &sides[index(role)].total;
            out.push_str(&format!("sluice_router_requests_total{{role=\"{}\",version=\"{}\"}} {}\n", role.as_str(), version, t.requests));
        }
        out.push_str("# HELP sluice_router_errors_total Requests answered 5xx or not answered, by role and version.\n");
        out.push_str("# TYPE sluice_router_errors_total counter\n");
        for (role, version) in versions {
            let t = &sides[index(role)].total;
            out.push_str(&format!("sluice_router_errors_total{{role=\"{}\",version=\"{}\"}} {}\n", role.as_str(), version, t.errors));
        }
        out.push_str("# HELP sluice_router_request_duration_seconds Request latency through the router.\n");
        out.push_str("# TYPE sluice_router_request_duration_seconds histogram\n");
        for (role, version) in versions {
            let t = &sides[index(role)].total;
            let labels = format!("role=\"{}\",version=\"{}\"", role.as_str(), version);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_MS.iter().enumerate() {
                cumulative += t.hist[i];
                out.push_str(&format!(
                    "sluice_router_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}\n",
                    bound / 1000.0
                ));
            }
            cumulative += t.hist[N - 1];
            out.push_str(&format!("sluice_router_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n"));
            out.push_str(&format!("sluice_router_request_duration_seconds_sum{{{labels}}} {}\n", t.latency_sum_ms / 1000.0));
            out.push_str(&format!("sluice_router_request_duration_seconds_count{{{labels}}} {}\n", t.requests));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_only_recent_seconds() {
        let s = Stats::default();
        for i in 0..100 {
            s.record(Role::Canary, i % 10 == 0, 20.0, 1000);
        }
        for _ in 0..50 {
            s.record(Role::Canary, false, 20.0, 1005);
        }
        let w = s.window(Role::Canary, 4, 1005);
        assert_eq!((w.requests, w.errors), (50, 0));
        let w = s.window(Role::Canary, 5, 1005);
        assert_eq!((w.requests, w.errors), (150, 10), "five whole seconds back plus the current one");
        let w = s.window(Role::Canary, 10, 1005);
        assert_eq!((w.requests, w.errors), (150, 10));
        assert!((w.error_rate.expect("requests") - 10.0 / 150.0).abs() < 1e-9);
        assert_eq!(s.window(Role::Stable, 10, 1005).error_rate, None);
        // The ring slot of second 1000 is reused 300 seconds later.
        s.record(Role::Canary, false, 20.0, 1300);
        assert_eq!(s.window(Role::Canary, 1, 1300).requests, 1);
        assert_eq!(s.window(Role::Canary, 1, 1301).requests, 1, "the previous whole second counts");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let s = Stats::default();
        for i in 0..100 {
            s.record(Role::Stable, false, if i < 90 { 8.0 } else { 400.0 }, 50);
        }
        let w = s.window(Role::Stable, 1, 50);
        let p50 = w.p50_ms.expect("data");
        let p95 = w.p95_ms.expect("data");
        assert!(p50 > 5.0 && p50 <= 10.0, "{p50}");
        assert!(p95 > 300.0 && p95 <= 500.0, "{p95}");
    }

    #[test]
    fn prometheus_text_is_cumulative_and_labelled() {
        let s = Stats::default();
        s.record(Role::Canary, true, 3.0, 1);
        s.record(Role::Canary, false, 30000.0, 2);
        let text = s.prometheus([(Role::Stable, "v1"), (Role::Canary, "v2")]);
        assert!(text.contains("sluice_router_requests_total{role=\"canary\",version=\"v2\"} 2\n"));
        assert!(text.contains("sluice_router_errors_total{role=\"canary\",version=\"v2\"} 1\n"));
        assert!(text.contains("sluice_router_request_duration_seconds_bucket{role=\"canary\",version=\"v2\",le=\"0.005\"} 1\n"));
        assert!(text.contains("sluice_router_request_duration_seconds_bucket{role=\"canary\",version=\"v2\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("sluice_router_requests_total{role=\"stable\",version=\"v1\"} 0\n"));
    }
}
