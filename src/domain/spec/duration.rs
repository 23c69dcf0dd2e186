//! Durations as people write them in specs: `500ms`, `30s`, `5m`, `1h30m`, `2d`.

/// Parses a duration into milliseconds, or says what is wrong with it.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let shown = crate::domain::ids::shown(text);
    if s.is_empty() {
        return Err("is empty; write a duration like 30s, 5m or 1h".into());
    }
    let mut chars = s.chars().peekable();
    let mut total: u64 = 0;
    while chars.peek().is_some() {
        let mut digits = String::new();
        while let Some(c) = chars.next_if(char::is_ascii_digit) {
            digits.push(c);
        }
        if digits.is_empty() {
            return Err(format!("'{shown}' is not a duration like 30s, 5m or 1h"));
        }
        let number: u64 = digits.parse().map_err(|_| format!("'{shown}' has a number that is too large"))?;
        let mut unit = String::new();
        while let Some(c) = chars.next_if(char::is_ascii_alphabetic) {
            unit.push(c);
        }
        let unit_ms: u64 = match unit.as_str() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("'{shown}' needs a unit (ms, s, m, h or d)")),
            other => return Err(format!("'{shown}' has an unknown unit '{}' (use ms, s, m, h or d)", crate::domain::ids::shown(other))),
        };
        let part = number.checked_mul(unit_ms).ok_or_else(|| format!("'{shown}' is too long"))?;
        total = total.checked_add(part).ok_or_else(|| format!("'{shown}' is too long"))?;
    }
    // Ten years is more than any rollout wait; beyond it is surely a typo.
    if total > 10 * 365 * 86_400_000 {
        return Err(format!("'{shown}' is longer than ten years"));
    }
    Ok(total)
}

/// Writes milliseconds back the way people write them (`90000` → `1m30s`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{}", secs / size, unit));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_duration_ms(" 0s "), Ok(0));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("30").expect_err("an error").contains("needs a unit"));
        assert!(parse_duration_ms("30x").expect_err("an error").contains("unknown unit 'x'"));
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert!(parse_duration_ms("99999999999999999999s").is_err());
        assert!(parse_duration_ms("20000d").expect_err("an error").contains("ten years"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration_ms(90_000), "1m30s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_duration_ms(3_600_000), "1h");
        assert_eq!(format_duration_ms(0), "0s");
    }
}
