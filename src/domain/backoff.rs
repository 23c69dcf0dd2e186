//! One backoff policy for every retry Sluice makes: a first wait that
//! doubles with each attempt up to a ceiling. The decision core schedules
//! its retries of router and backlog calls with it; the adapters space
//! their quick in-call retries (notifications, Azure REST) with it too.

use std::time::Duration;

/// Exponential backoff: `first_ms` before the second attempt, doubling, at most `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failed attempt.
    pub first_ms: u64,
    /// The longest wait.
    pub max_ms: u64,
}

impl Backoff {
    /// A policy.
    pub const fn new(first_ms: u64, max_ms: u64) -> Self {
        Backoff { first_ms, max_ms }
    }

    /// The wait after `attempts` failed attempts (1 or more; 0 counts as 1).
    pub fn delay_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(20);
        self.first_ms.saturating_mul(1u64 << doublings).min(self.max_ms)
    }

    /// [`Backoff::delay_ms`] as a duration.
    pub fn delay(&self, attempts: u32) -> Duration {
        Duration::from_millis(self.delay_ms(attempts))
    }
}

/// Router commands retried by the timer: 2 s doubling, at most 30 s.
pub const TRAFFIC: Backoff = Backoff::new(2_000, 30_000);
/// Backlog calls retried by the timer: 10 s doubling, at most 5 min.
pub const BACKLOG: Backoff = Backoff::new(10_000, 300_000);
/// Quick retries inside one notification send: 200 ms, 400 ms.
pub const NOTIFY: Backoff = Backoff::new(200, 800);
/// Quick retries inside one Azure REST call (unless Azure says `Retry-After`): 500 ms doubling, at most 30 s.
pub const AZURE_REST: Backoff = Backoff::new(500, 30_000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_never_overflows() {
        assert_eq!((1..=6).map(|a| TRAFFIC.delay_ms(a)).collect::<Vec<_>>(), [2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(TRAFFIC.delay_ms(0), 2_000);
        assert_eq!(BACKLOG.delay_ms(u32::MAX), 300_000);
        assert_eq!(Backoff::new(u64::MAX / 2, u64::MAX).delay_ms(40), u64::MAX);
        assert_eq!(NOTIFY.delay(2), Duration::from_millis(400));
    }
}
