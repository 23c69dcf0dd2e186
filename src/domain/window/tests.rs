use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn policy(json: serde_json::Value) -> Windows {
    serde_json::from_value(json).expect("a policy")
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
}

fn office() -> Windows {
    policy(
        serde_json::json!({"timeZone": "Europe/Berlin", "allow": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "from": "09:00", "to": "17:00"}]}),
    )
}

#[test]
fn inside_the_hours_nothing_waits_and_after_them_the_next_working_morning_opens() {
    // Tuesday 2026-12-08 10:00 in Berlin is 09:00 UTC (CET, +1).
    assert_eq!(closed_until(&[office()], utc("2026-12-08T09:00:00Z")), None);
    // Friday 17:00 local: closed; Monday 09:00 CET is 08:00 UTC.
    let closed = closed_until(&[office()], utc("2026-12-11T16:00:00Z")).expect("closed at five");
    assert_eq!(closed.opens_at, utc("2026-12-14T08:00:00Z"));
    assert_eq!(closed.opens_local, "Mon 2026-12-14 09:00 Europe/Berlin");
    assert_eq!(closed.why, "outside the deployment window (Mon, Tue, Wed, Thu, Fri 09:00–17:00 Europe/Berlin)");
}

#[test]
fn a_window_across_midnight_belongs_to_the_day_it_opens() {
    let night = policy(serde_json::json!({"timeZone": "UTC", "allow": [{"days": ["Fri"], "from": "22:00", "to": "02:00"}]}));
    // 2026-12-11 is a Friday: open from 22:00 until Saturday 02:00.
    assert!(closed_until(std::slice::from_ref(&night), utc("2026-12-11T21:59:00Z")).is_some());
    assert_eq!(closed_until(std::slice::from_ref(&night), utc("2026-12-11T23:00:00Z")), None);
    assert_eq!(closed_until(std::slice::from_ref(&night), utc("2026-12-12T01:59:00Z")), None);
    let closed = closed_until(&[night], utc("2026-12-12T02:00:00Z")).expect("closed at two on Saturday");
    assert_eq!(closed.opens_at, utc("2026-12-18T22:00:00Z"));
}

#[test]
fn daylight_saving_moves_the_opening_in_utc_and_a_skipped_hour_opens_at_its_end() {
    // The United States change on 2027-03-14: Monday 09:00 is 13:00 UTC, a week before 14:00 UTC.
    let ny = policy(serde_json::json!({"timeZone": "America/New_York", "allow": [{"days": ["Mon"], "from": "09:00", "to": "17:00"}]}));
    assert_eq!(closed_until(std::slice::from_ref(&ny), utc("2027-03-06T12:00:00Z")).expect("closed").opens_at, utc("2027-03-08T14:00:00Z"));
    assert_eq!(closed_until(&[ny], utc("2027-03-13T12:00:00Z")).expect("closed").opens_at, utc("2027-03-15T13:00:00Z"));
    // Berlin skips 02:00–03:00 on 2027-03-28: a 02:30 opening opens at 03:00 CEST (01:00 UTC).
    let early = policy(serde_json::json!({"timeZone": "Europe/Berlin", "allow": [{"from": "02:30", "to": "05:00"}]}));
    assert_eq!(
        closed_until(std::slice::from_ref(&early), utc("2027-03-28T00:30:00Z")).expect("01:30 CET is closed").opens_at,
        utc("2027-03-28T01:00:00Z")
    );
    // Berlin repeats 02:00–03:00 on 2026-10-25: a 02:30 opening opens at the first 02:30 (CEST, 00:30 UTC).
    assert_eq!(
        closed_until(std::slice::from_ref(&early), utc("2026-10-24T23:00:00Z")).expect("01:00 CEST is closed").opens_at,
        utc("2026-10-25T00:30:00Z")
    );
    // and both 02:30s are inside it.
    assert_eq!(closed_until(&[early], utc("2026-10-25T01:30:00Z")), None);
}

#[test]
fn a_freeze_holds_through_its_last_day_and_says_why() {
    let mut p = office();
    p.freezes = vec![Freeze {
        from: LocalStamp::parse("2026-12-21").expect("day"),
        to: LocalStamp::parse("2027-01-04").expect("day"),
        reason: "holiday freeze".into(),
    }];
    let closed = closed_until(std::slice::from_ref(&p), utc("2026-12-22T10:00:00Z")).expect("frozen");
    assert_eq!(closed.why, "freeze until 2027-01-04 Europe/Berlin: holiday freeze");
    // 2027-01-04 is a Monday, frozen through its end: Tuesday 09:00 CET.
    assert_eq!(closed.opens_at, utc("2027-01-05T08:00:00Z"));
    // A freeze to a time ends at it.
    p.freezes[0].to = LocalStamp::parse("2027-01-04T12:00").expect("time");
    assert_eq!(closed_until(&[p], utc("2026-12-22T10:00:00Z")).expect("frozen").opens_at, utc("2027-01-04T11:00:00Z"));
}

#[test]
fn every_policy_must_be_open_so_a_spec_narrows_the_shared_one_and_never_widens_it() {
    let shared = office();
    let team = policy(serde_json::json!({"timeZone": "UTC", "allow": [{"days": ["Wed"], "from": "00:00", "to": "24:00"}]}));
    // Tuesday 10:00 Berlin: the shared window is open, the team's is not; Wednesday 09:00 Berlin both are.
    let closed = closed_until(&[shared.clone(), team.clone()], utc("2026-12-08T09:00:00Z")).expect("the team's window is closed");
    assert_eq!(closed.opens_at, utc("2026-12-09T08:00:00Z"));
    assert!(closed.why.contains("Wed"), "{}", closed.why);
    // Saturday: the team's wider window cannot open what the shared one holds.
    let weekend = policy(serde_json::json!({"timeZone": "UTC"}));
    assert!(closed_until(&[shared, weekend], utc("2026-12-12T12:00:00Z")).is_some());
}

#[test]
fn a_policy_closed_past_the_horizon_is_looked_at_again_then() {
    let p = policy(serde_json::json!({"timeZone": "UTC", "freezes": [{"from": "2026-01-01", "to": "2028-12-31", "reason": "forever"}]}));
    let now = utc("2026-12-08T09:00:00Z");
    assert_eq!(closed_until(&[p], now).expect("frozen").opens_at, now + chrono::TimeDelta::days(HORIZON_DAYS as i64));
}

#[test]
fn values_are_parsed_with_their_rule_named() {
    for bad in ["9:00", "24:01", "12:60", "ab:cd", "", "12:00:00", "１２:00"] {
        assert!(ClockTime::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(ClockTime::parse("24:00").expect("the end of a day").to_string(), "24:00");
    assert_eq!(ClockTime::parse("07:05").expect("a time").to_string(), "07:05");
    assert!(ZoneName::parse("Mars/Olympus_Mons").expect_err("no such zone").0.contains("not an IANA time zone"));
    assert_eq!(ZoneName::parse("Asia/Kolkata").expect("a zone").to_string(), "Asia/Kolkata");
    for bad in ["2026-13-01", "2026-12-01T25:00", "2026-12-01 10:00", "2026-12-01T10:00:00", "tomorrow"] {
        assert!(LocalStamp::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(LocalStamp::parse("2026-12-01T10:00").expect("a time").to_string(), "2026-12-01T10:00");
}

#[test]
fn the_rules_a_schema_cannot_say_are_named_by_path() {
    let p = policy(serde_json::json!({
        "timeZone": "UTC",
        "allow": [{"days": ["Mon", "Mon"], "from": "10:00", "to": "10:00"}, {"from": "24:00"}],
        "freezes": [{"from": "2026-12-24", "to": "2026-12-23", "reason": " "}]
    }));
    let found: Vec<String> = problems(&p).into_iter().map(|(path, _)| path).collect();
    assert_eq!(found, ["allow[0].to", "allow[0].days[1]", "allow[1].from", "freezes[0].to", "freezes[0].reason"]);
    assert!(problems(&office()).is_empty());
}

fn arbitrary_policy() -> impl Strategy<Value = Windows> {
    let zones = prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]);
    let allowed =
        (prop::collection::vec(0u8..7, 0..4), 0u16..1440, 1u16..=1440).prop_filter_map("a window opens and closes", |(days, from, to)| {
            let days = days
                .into_iter()
                .map(|d| [Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri, Day::Sat, Day::Sun][usize::from(d)])
                .collect::<Vec<_>>();
            (from != to).then_some(Allowed { days, from: Some(ClockTime(from)), to: Some(ClockTime(to)) })
        });
    let freeze = (0i64..60, 1i64..20).prop_map(|(start, days)| {
        let from = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a day") + chrono::TimeDelta::days(start);
        Freeze { from: LocalStamp::Day(from), to: LocalStamp::Day(from + chrono::TimeDelta::days(days)), reason: "frozen".into() }
    });
    (zones, prop::collection::vec(allowed, 0..3), prop::collection::vec(freeze, 0..2)).prop_map(|(zone, allow, freezes)| Windows {
        time_zone: ZoneName::parse(zone).expect("a zone"),
        allow,
        freezes,
    })
}

proptest! {
    /// The opening found is open for every policy, and no minute before it is.
    #[test]
    fn the_opening_is_the_first_minute_every_policy_is_open(policies in prop::collection::vec(arbitrary_policy(), 1..3), minutes in 0i64..(90 * 24 * 60)) {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).single().expect("a time") + chrono::TimeDelta::minutes(minutes);
        let open = |t: DateTime<Utc>| policies.iter().all(|p| p.closed_at(t).is_none());
        match closed_until(&policies, now) {
            None => prop_assert!(open(now)),
            Some(c) => {
                prop_assert!(!open(now));
                prop_assert!(c.opens_at > now);
                let horizon = now + chrono::TimeDelta::days(HORIZON_DAYS as i64);
                prop_assert!(open(c.opens_at) || c.opens_at == horizon, "{:?} is not open", c.opens_at);
                let mut t = now;
                while t < c.opens_at && t < now + chrono::TimeDelta::days(40) {
                    prop_assert!(!open(t), "open at {t} before the opening {}", c.opens_at);
                    t += chrono::TimeDelta::minutes(13);
                }
            }
        }
    }
}
