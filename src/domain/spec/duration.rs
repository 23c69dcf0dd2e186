//! Durations as people write them in specs: `500ms`, `30s`, `5m`, `1h30m`, `2d`.

/// Parses a duration into milliseconds, or says what is wrong with it.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("is empty; write a duration like 30s, 5m or 1h".into());
    }
    let bytes = s.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("'{text}' is not a duration like 30s, 5m or 1h"));
        }
        let number: u64 = s[start..i].parse().map_err(|_| format!("'{text}' has a number that is too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u64 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("'{text}' needs a unit (ms, s, m, h or d)")),
            other => return Err(format!("'{text}' has an unknown unit '{other}' (use ms, s, m, h or d)")),
        };
        let part = number.checked_mul(unit_ms).ok_or_else(|| format!("'{text}' is too long"))?;
        total = total.checked_add(part).ok_or_else(|| format!("'{text}' is too long"))?;
    }
    // Ten years is more than any rollout wait; beyond it is surely a typo.
    if total > 10 * 365 * 86_400_000 {
        return Err(format!("'{text}' is longer than ten years"));
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
