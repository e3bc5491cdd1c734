//! Clock readings as text: the one form the records on the share carry, and the one form
//! log lines carry.

use chrono::{DateTime, Local, SecondsFormat, TimeZone, Utc};

/// This host's clock now, as the records on the share carry it (the cache's history,
/// presence records): RFC 3339 in UTC to the second, `2026-12-01T18:30:00Z`. Every host
/// reads it the same way, whatever its time zone, and it sorts as text.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

/// This host's local time now, as a log line starts: `2026-12-01 19:30:00`.
pub fn now_for_log() -> String {
    for_log(Local::now())
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn for_log<Tz: TimeZone>(time: DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    time.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    #[test]
    fn records_carry_utc_to_the_second() {
        let utc = DateTime::from_timestamp(1_796_149_800, 987_654_321).unwrap();
        assert_eq!(rfc3339(utc), "2026-12-01T18:30:00Z");
        // What is written is read back as the same second.
        let now = now_rfc3339();
        let read = DateTime::parse_from_rfc3339(&now).unwrap();
        assert!(
            (Utc::now() - read.with_timezone(&Utc)).num_seconds().abs() <= 2,
            "{now}"
        );
        assert!(now.ends_with('Z') && now.len() == 20, "{now}");
    }

    #[test]
    fn log_lines_carry_the_local_time_to_the_second() {
        let east = FixedOffset::east_opt(2 * 3600).unwrap();
        let time = DateTime::from_timestamp(1_796_149_800, 0)
            .unwrap()
            .with_timezone(&east);
        assert_eq!(for_log(time), "2026-12-01 20:30:00");
        let now = now_for_log();
        assert!(
            chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S").is_ok(),
            "{now}"
        );
    }
}
