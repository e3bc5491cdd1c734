//! Human durations on the command line: `90s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// The longest duration accepted: a hundred years. Every deadline and age in the program is
/// a clock reading plus or minus one of these, and that arithmetic must never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses a duration such as `45s`, `5m`, `1h30m` or `2d`; a bare number means seconds.
/// Anything longer than [`MAX_DURATION`] is refused with a reason, never a panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let parsed = if text.bytes().all(|byte| byte.is_ascii_digit()) {
        // Only too many digits make a bare number fail to parse.
        let secs = text.parse::<u64>().map_err(|_| too_long(text))?;
        Duration::from_secs(secs)
    } else {
        parse_with_units(text)?
    };
    if parsed > MAX_DURATION {
        return Err(too_long(text));
    }
    Ok(parsed)
}

fn too_long(text: &str) -> String {
    format!("'{text}' is longer than the limit of 100 years")
}

fn parse_with_units(text: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut number = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86_400.0,
            _ => {
                return Err(format!(
                    "unknown unit '{ch}' in '{text}' (use s, m, h or d)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("expected a number before '{ch}' in '{text}'"))?;
        total += value * unit;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("'{text}' ends without a unit (use s, m, h or d)"));
    }
    // Digits alone ("99999999999999999999") may not fit a u64 but do fit an f64, and
    // an f64 sum may be too large for a Duration or, from "1e400"-like input, infinite.
    Duration::try_from_secs_f64(total).map_err(|_| too_long(text))
}

/// Formats seconds compactly for people: `42s`, `3m05s`, `2h04m`.
pub fn format_secs(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("1h30")
                .unwrap_err()
                .contains("without a unit")
        );
        assert!(
            parse_duration("m")
                .unwrap_err()
                .contains("expected a number")
        );
    }

    #[test]
    fn huge_durations_are_refused_not_a_panic() {
        for huge in [
            "99999999999999999999d",
            "99999999999999999999",
            "18446744073709551615",
            "36501d",
            "9999999999999999999999999999999999999999h",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.contains("limit of 100 years"), "{huge}: {err}");
        }
        assert_eq!(
            parse_duration("36500d").unwrap(),
            Duration::from_secs(36_500 * 86_400)
        );
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_secs(42.4), "42s");
        assert_eq!(format_secs(185.0), "3m05s");
        assert_eq!(format_secs(7440.0), "2h04m");
    }
}
