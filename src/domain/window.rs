//! Deployment windows and freezes: when a rollout may start, raise its
//! canary weight or promote. Pure: the time is an argument, and the time
//! zone rules come compiled in (`chrono-tz`, the IANA database), so a host
//! without `/usr/share/zoneinfo` answers the same as one with it.
//!
//! A policy is days and hours in one named zone, and freezes (local dates
//! or times, each with a reason). Several policies (the spec's and the
//! deployment's shared one, `SLUICE_WINDOWS`) all have to be open: a spec
//! can narrow the shared policy, never widen it. Only moves toward the
//! canary wait; a rollback or an abort never does.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::domain::ids::shown;

/// How far ahead an opening is looked for; a policy closed for longer is
/// looked at again then (a freeze of more than a year is a mistake, not a plan).
pub const HORIZON_DAYS: u64 = 400;

/// One policy: allowed days and hours in a zone, and freezes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Windows {
    /// IANA time zone the days, hours and freezes are read in, e.g. `Europe/Berlin`.
    pub time_zone: ZoneName,
    /// When moves are allowed; none listed: at any time outside a freeze.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub allow: Vec<Allowed>,
    /// Periods when nothing moves, whatever `allow` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub freezes: Vec<Freeze>,
}

/// Days and hours when moves are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allowed {
    /// The days the window opens on; none listed: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Day>,
    /// Local opening time, `HH:MM` (default `00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ClockTime>,
    /// Local closing time, `HH:MM` or `24:00` (default `24:00`); earlier
    /// than `from`, the window runs past midnight into the next day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ClockTime>,
}

/// A period when nothing moves toward the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freeze {
    /// First local day (`YYYY-MM-DD`, from its start) or time (`YYYY-MM-DDTHH:MM`).
    pub from: LocalStamp,
    /// Last local day (`YYYY-MM-DD`, through its end) or the time it ends (`YYYY-MM-DDTHH:MM`).
    pub to: LocalStamp,
    /// Why, as people will read it (e.g. `holiday freeze`).
    #[schemars(length(min = 1, max = 200))]
    pub reason: String,
}

/// A day of the week, as `Mon` … `Sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    fn of(weekday: Weekday) -> Day {
        match weekday {
            Weekday::Mon => Day::Mon,
            Weekday::Tue => Day::Tue,
            Weekday::Wed => Day::Wed,
            Weekday::Thu => Day::Thu,
            Weekday::Fri => Day::Fri,
            Weekday::Sat => Day::Sat,
            Weekday::Sun => Day::Sun,
        }
    }
}

/// Why a value of a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidWindow(pub String);

/// Text types of a policy: serde and the schema go through `parse`, and
/// the schema's `x-sluice-format` makes the spec check apply the same rule.
macro_rules! window_text {
    ($name:ident, $format:literal) => {
        impl TryFrom<String> for $name {
            type Error = InvalidWindow;
            fn try_from(text: String) -> Result<Self, InvalidWindow> {
                $name::parse(&text)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "x-sluice-format": $format})
            }
        }
    };
}

/// An IANA time zone name, e.g. `Europe/Berlin` or `UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ZoneName(Tz);
window_text!(ZoneName, "time-zone");

impl ZoneName {
    /// Parses a zone's name as the IANA database spells it.
    pub fn parse(text: &str) -> Result<ZoneName, InvalidWindow> {
        text.parse::<Tz>()
            .map(ZoneName)
            .map_err(|_| InvalidWindow(format!("'{}' is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)", shown(text))))
    }
}

impl fmt::Display for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// A local time of day, `HH:MM`, or `24:00` for the end of a day (minutes since midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime(u16);
window_text!(ClockTime, "clock-time");

const DAY_MINUTES: u16 = 24 * 60;

impl ClockTime {
    /// Parses `HH:MM` (two digits each) or `24:00`.
    pub fn parse(text: &str) -> Result<ClockTime, InvalidWindow> {
        let bad = || InvalidWindow(format!("'{}' is not a time of day as HH:MM (00:00 to 24:00)", shown(text)));
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        let minutes = h * 60 + m;
        if m > 59 || minutes > DAY_MINUTES {
            return Err(bad());
        }
        Ok(ClockTime(minutes))
    }

    fn naive(self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(u32::from(self.0 / 60), u32::from(self.0 % 60), 0)
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// A local day (`YYYY-MM-DD`) or day and time (`YYYY-MM-DDTHH:MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LocalStamp {
    /// A whole day.
    Day(NaiveDate),
    /// A time on a day.
    Time(NaiveDateTime),
}
window_text!(LocalStamp, "local-time");

impl LocalStamp {
    /// Parses a local day or day and time.
    pub fn parse(text: &str) -> Result<LocalStamp, InvalidWindow> {
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            if text.len() == 10 {
                return Ok(LocalStamp::Day(day));
            }
        }
        match NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M") {
            Ok(t) if text.len() == 16 => Ok(LocalStamp::Time(t)),
            _ => Err(InvalidWindow(format!("'{}' is not a local day (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM)", shown(text)))),
        }
    }

    /// Where a freeze starting here starts.
    fn start(self) -> NaiveDateTime {
        match self {
            LocalStamp::Day(d) => d.and_time(NaiveTime::MIN),
            LocalStamp::Time(t) => t,
        }
    }

    /// Where a freeze ending here ends: a day is frozen through its end.
    fn end(self) -> NaiveDateTime {
        match self {
            LocalStamp::Day(d) => d.checked_add_days(Days::new(1)).unwrap_or(d).and_time(NaiveTime::MIN),
            LocalStamp::Time(t) => t,
        }
    }
}

impl fmt::Display for LocalStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalStamp::Day(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            LocalStamp::Time(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M")),
        }
    }
}

/// The rules a schema cannot say, as (path under the policy, message).
pub fn problems(w: &Windows) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, a) in w.allow.iter().enumerate() {
        let (from, to) = a.span();
        if a.from.is_some_and(|f| f.0 == DAY_MINUTES) {
            out.push((format!("allow[{i}].from"), "24:00 ends a day; a window opens at 23:59 at the latest".into()));
        } else if from == to {
            out.push((
                format!("allow[{i}].to"),
                format!("the window opens and closes at {}; leave both out for the whole day", a.to_or_end()),
            ));
        }
        let mut seen = Vec::new();
        for (j, d) in a.days.iter().enumerate() {
            if seen.contains(d) {
                out.push((format!("allow[{i}].days[{j}]"), format!("{d:?} is listed twice")));
            }
            seen.push(*d);
        }
    }
    for (i, f) in w.freezes.iter().enumerate() {
        if f.to.end() <= f.from.start() {
            out.push((format!("freezes[{i}].to"), format!("the freeze ends ({}) before it starts ({})", f.to, f.from)));
        }
        if f.reason.trim().is_empty() {
            out.push((format!("freezes[{i}].reason"), "say why (people read it while they wait)".into()));
        }
    }
    out
}

/// Reads a policy document on its own (the shared `SLUICE_WINDOWS`), with
/// every problem named by its path, as a spec's `policy.windows` is checked.
pub fn parse_policy(doc: &serde_json::Value) -> Result<Windows, Vec<crate::domain::spec::Problem>> {
    use crate::domain::spec::Problem;
    let schema = schemars::schema_for!(Windows).to_value();
    let found = crate::domain::spec::against_schema(&schema, doc, &Default::default());
    if !found.is_empty() {
        return Err(found);
    }
    let w: Windows = serde_json::from_value(doc.clone()).map_err(|e| vec![Problem { path: String::new(), message: e.to_string() }])?;
    match problems(&w) {
        rules if rules.is_empty() => Ok(w),
        rules => Err(rules.into_iter().map(|(path, message)| Problem { path, message }).collect()),
    }
}

impl Allowed {
    /// Opening and closing minutes.
    fn span(&self) -> (u16, u16) {
        (self.from.map_or(0, |t| t.0), self.to.map_or(DAY_MINUTES, |t| t.0))
    }

    fn to_or_end(&self) -> ClockTime {
        self.to.unwrap_or(ClockTime(DAY_MINUTES))
    }

    fn on(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&Day::of(day))
    }

    fn contains(&self, local: NaiveDateTime) -> bool {
        let minute = (local.time().signed_duration_since(NaiveTime::MIN).num_minutes()) as u16;
        let (from, to) = self.span();
        let day = local.weekday();
        if from < to {
            self.on(day) && minute >= from && minute < to
        } else {
            (self.on(day) && minute >= from) || (self.on(day.pred()) && minute < to)
        }
    }

    fn describe(&self) -> String {
        let days = if self.days.is_empty() {
            "every day".to_string()
        } else {
            self.days.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ")
        };
        match (self.from, self.to) {
            (None, None) => days,
            _ => format!("{days} {}–{}", self.from.unwrap_or(ClockTime(0)), self.to_or_end()),
        }
    }
}

/// Why a policy holds moves, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The first instant every policy is open again.
    pub opens_at: DateTime<Utc>,
    /// That instant as people read it, in the zone of the policy that held.
    pub opens_local: String,
    /// Why now is closed: the freeze and its reason, or the window.
    pub why: String,
}

impl Windows {
    fn tz(&self) -> Tz {
        self.time_zone.0
    }

    /// Why this policy is closed at `t`, or `None` when open.
    fn closed_at(&self, t: DateTime<Utc>) -> Option<String> {
        let local = t.with_timezone(&self.tz()).naive_local();
        if let Some(f) = self.freezes.iter().find(|f| f.from.start() <= local && local < f.to.end()) {
            return Some(format!("freeze until {} {}: {}", f.to, self.time_zone, f.reason));
        }
        if self.allow.is_empty() || self.allow.iter().any(|a| a.contains(local)) {
            return None;
        }
        let windows: Vec<String> = self.allow.iter().map(Allowed::describe).collect();
        Some(format!("outside the deployment window ({} {})", windows.join("; "), self.time_zone))
    }

    /// The instants from `now` on where this policy may turn open: window
    /// openings and freeze ends, in UTC.
    fn openings(&self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let tz = self.tz();
        let today = now.with_timezone(&tz).date_naive();
        let mut out = Vec::new();
        for offset in 0..=HORIZON_DAYS {
            let Some(day) = today.checked_add_days(Days::new(offset)) else { break };
            for a in self.allow.iter().filter(|a| a.on(day.weekday())) {
                if let Some(at) = a.from.unwrap_or(ClockTime(0)).naive().and_then(|t| instant(tz, day.and_time(t))) {
                    out.push(at);
                }
            }
        }
        out.extend(self.freezes.iter().filter_map(|f| instant(tz, f.to.end())));
        out.retain(|t| *t > now);
        out
    }

    /// `t` in this policy's zone, as people read it.
    fn local_text(&self, t: DateTime<Utc>) -> String {
        format!("{} {}", t.with_timezone(&self.tz()).format("%a %Y-%m-%d %H:%M"), self.time_zone)
    }
}

/// The first instant at or after the local time `at`: the time itself, the
/// earlier of two when clocks go back, and the end of the gap when clocks
/// go forward past it (a 02:30 opening on a spring-forward day opens at 03:00).
fn instant(tz: Tz, at: NaiveDateTime) -> Option<DateTime<Utc>> {
    (0..=24 * 60).find_map(|m| tz.from_local_datetime(&(at + chrono::TimeDelta::minutes(m))).earliest()).map(|t| t.with_timezone(&Utc))
}

/// Whether every policy allows a move at `now`; if not, why and when they all do.
pub fn closed_until(policies: &[Windows], now: DateTime<Utc>) -> Option<Closed> {
    let (held_by, why) = policies.iter().find_map(|p| p.closed_at(now).map(|why| (p, why)))?;
    let mut candidates: Vec<DateTime<Utc>> = policies.iter().flat_map(|p| p.openings(now)).collect();
    candidates.sort();
    candidates.dedup();
    let horizon = now + chrono::TimeDelta::days(HORIZON_DAYS as i64);
    let opens_at = candidates
        .into_iter()
        .take_while(|t| *t <= horizon)
        .find(|t| policies.iter().all(|p| p.closed_at(*t).is_none()))
        .unwrap_or(horizon);
    Some(Closed { opens_at, opens_local: held_by.local_text(opens_at), why })
}

#[cfg(test)]
mod tests;
