//! What an idle Sluice costs in invocations: each timer function's
//! occurrences in a day, counted from its schedule exactly as the host
//! fires it (`function.json`, NCRONTAB). The queue and HTTP functions run
//! only for a message or a request, and a Sluice with nothing due has none
//! scheduled: waits, measurements, retries and a release's gate timeout
//! each keep their own scheduled message, and the timer is the safety net.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::host::definitions::{self, Trigger};

/// One timer function's invocations in a day.
#[derive(Debug, Clone, Serialize)]
pub struct TimerCost {
    /// The function.
    pub function: String,
    /// Its schedule.
    pub schedule: String,
    /// Occurrences in 24 hours.
    pub per_day: u64,
}

/// Every timer function of this build, with its occurrences in the day
/// that starts at `from`.
pub fn idle(from: DateTime<Utc>) -> Result<Vec<TimerCost>, String> {
    let mut costs = Vec::new();
    for def in definitions::embedded_definitions()? {
        let Trigger::Timer { schedule } = &def.trigger else { continue };
        costs.push(TimerCost { function: def.name.clone(), schedule: schedule.clone(), per_day: per_day(schedule, from)? });
    }
    Ok(costs)
}

/// Occurrences of `schedule` in the 24 hours from `from` (`from` excluded).
pub fn per_day(schedule: &str, from: DateTime<Utc>) -> Result<u64, String> {
    let cron = definitions::ncrontab(schedule)?;
    let end = from + TimeDelta::days(1);
    let mut count = 0;
    let mut at = from;
    while let Ok(next) = cron.find_next_occurrence(&at, false) {
        if next > end {
            break;
        }
        count += 1;
        at = next;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_a_schedule_is_counted_as_the_host_fires_it() {
        let midnight = DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z").map(|t| t.with_timezone(&Utc)).expect("time");
        assert_eq!(per_day("*/10 * * * * *", midnight), Ok(8640), "the timer before issue 27");
        assert_eq!(per_day("0 */5 * * * *", midnight), Ok(288));
        let tick = idle(midnight).expect("definitions");
        assert_eq!(tick.iter().map(|t| (t.function.as_str(), t.per_day)).collect::<Vec<_>>(), [("tick", 288)]);
    }
}
