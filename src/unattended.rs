//! What cron and Task Scheduler runs need: limits on how much a run does and until when, and
//! the pause file that stops every host from starting new work.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

/// The file at a library's root that pauses every host.
pub const PAUSE_FILE: &str = ".mediabox.pause";

/// How much one run may do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Start at most this many conversions.
    pub max_files: Option<u64>,
    /// No new file starts after this local time of day (the next one after the start).
    pub until: Option<NaiveTime>,
    /// No new file starts once this long has passed since the run's first conversion started.
    pub max_runtime: Option<Duration>,
    /// At the deadline, stop the conversion in progress too (it is left for a later run).
    pub stop_at_deadline: bool,
}

impl Limits {
    /// How long after `start` the next `--until` falls (today or tomorrow), if there is one.
    pub fn until_after<Tz: TimeZone>(&self, start: &DateTime<Tz>) -> Option<Duration> {
        self.until.map(|until| {
            let today = start.date_naive().and_time(until);
            let start_naive = start.naive_local();
            let target = if today > start_naive {
                today
            } else {
                today + chrono::Duration::days(1)
            };
            (target - start_naive).to_std().unwrap_or(Duration::ZERO)
        })
    }
}

/// When a run stops starting new files: at `--until` on the clock, or once `--max-runtime`
/// has passed since its first conversion started, whichever comes first.
///
/// The budget counts from the first conversion, not from the start of the process: the scan
/// up to the first candidate, the probes and the encoder detection take what a slow share or
/// a loaded machine makes them take, and a budget spent before any work would end a run with
/// nothing done. So every run that has work to do, and is not past `--until`, converts at
/// least one file.
#[derive(Debug)]
pub struct Deadline {
    until: Option<Instant>,
    max_runtime: Option<Duration>,
    first_start: OnceLock<Instant>,
}

impl Deadline {
    /// The deadline of a run that started at `now`, `local` on the local clock.
    pub fn new<Tz: TimeZone>(limits: &Limits, now: Instant, local: &DateTime<Tz>) -> Deadline {
        Deadline {
            until: limits.until_after(local).map(|after| now + after),
            max_runtime: limits.max_runtime,
            first_start: OnceLock::new(),
        }
    }

    /// Says a conversion starts at `now`: the first one starts the `--max-runtime` budget.
    pub fn work_starts(&self, now: Instant) {
        self.first_start.get_or_init(|| now);
    }

    /// Whether the deadline has passed at `now`. Before the first conversion, only `--until`
    /// can have.
    pub fn passed(&self, now: Instant) -> bool {
        let budget_end = self
            .max_runtime
            .zip(self.first_start.get())
            .map(|(budget, &first)| first + budget);
        self.until.into_iter().chain(budget_end).any(|at| now >= at)
    }
}

/// Parses `--until HH:MM`.
pub fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("'{text}' is not a time of day like 06:30"))
}

/// Who paused a library, and when; stored in the pause file for `status` and for the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseInfo {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The pause file that applies to `path`: the nearest `.mediabox.pause` in it or above it.
///
/// Hosts mount the library at different depths, so a `--file` run looks upwards.
pub fn find_pause(path: &Path) -> Option<(PathBuf, PauseInfo)> {
    let start = if path.is_dir() { path } else { path.parent()? };
    start.ancestors().find_map(|dir| {
        let file = dir.join(PAUSE_FILE);
        // An unreadable or empty pause file still pauses: its presence is what counts.
        // A regular file only: smbnetfs shows any name at its server level as a
        // share, so `exists()` there is true for every name.
        let text = fs::read_to_string(&file)
            .ok()
            .or_else(|| file.is_file().then(String::new))?;
        let info = serde_json::from_str(&text).unwrap_or(PauseInfo {
            host: "unknown".into(),
            since: "unknown".into(),
            reason: None,
        });
        Some((file, info))
    })
}

/// Pauses the library at `dir`.
pub fn pause(dir: &Path, host: &str, reason: Option<String>) -> io::Result<PathBuf> {
    let info = PauseInfo {
        host: host.into(),
        since: crate::clock::now_rfc3339(),
        reason,
    };
    let file = dir.join(PAUSE_FILE);
    let json = serde_json::to_string_pretty(&info).map_err(io::Error::other)?;
    fs::write(&file, json + "\n")?;
    Ok(file)
}

/// Lifts the pause of the library at `dir`; `Ok(false)` when it was not paused.
pub fn resume(dir: &Path) -> io::Result<bool> {
    match fs::remove_file(dir.join(PAUSE_FILE)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(h: u32, m: u32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 3, 1, h, m, 0)
            .unwrap()
    }

    #[test]
    fn until_is_the_next_occurrence() {
        let limits = Limits {
            until: Some(parse_time_of_day("06:00").unwrap()),
            ..Limits::default()
        };
        assert_eq!(
            limits.until_after(&at(1, 0)),
            Some(Duration::from_secs(5 * 3600))
        );
        // Started at 23:00: the deadline is tomorrow morning, not in the past.
        assert_eq!(
            limits.until_after(&at(23, 0)),
            Some(Duration::from_secs(7 * 3600))
        );
        assert_eq!(Limits::default().until_after(&at(5, 30)), None);
    }

    #[test]
    fn the_budget_counts_from_the_first_conversion_and_the_earlier_limit_wins() {
        let hour = Duration::from_secs(3600);
        let limits = Limits {
            until: Some(parse_time_of_day("06:00").unwrap()),
            max_runtime: Some(hour),
            ..Limits::default()
        };
        let run = Instant::now();
        // Started at 01:00: --until falls at 06:00, five hours in.
        let deadline = Deadline::new(&limits, run, &at(1, 0));
        // A start-up longer than the budget spends none of it.
        assert!(!deadline.passed(run + 2 * hour));
        deadline.work_starts(run + 2 * hour);
        // Only the first conversion starts the budget.
        deadline.work_starts(run + 2 * hour + hour / 2);
        assert!(!deadline.passed(run + 3 * hour - Duration::from_secs(1)));
        assert!(deadline.passed(run + 3 * hour));
        // Started at 05:30: --until comes first, work or not.
        let deadline = Deadline::new(&limits, run, &at(5, 30));
        assert!(!deadline.passed(run + hour / 2 - Duration::from_secs(1)));
        assert!(deadline.passed(run + hour / 2));
        // No limits: never.
        let deadline = Deadline::new(&Limits::default(), run, &at(5, 30));
        deadline.work_starts(run);
        assert!(!deadline.passed(run + 1000 * hour));
    }

    #[test]
    fn times_of_day_are_validated() {
        assert!(parse_time_of_day("25:00").is_err());
        assert!(parse_time_of_day("6").is_err());
        assert_eq!(
            parse_time_of_day(" 07:15 ").unwrap(),
            NaiveTime::from_hms_opt(7, 15, 0).unwrap()
        );
    }

    #[test]
    fn pause_applies_below_and_resume_lifts_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("Movies/Heat");
        fs::create_dir_all(&sub).unwrap();
        assert!(find_pause(&sub).is_none());
        pause(dir.path(), "nas", Some("disk check".into())).unwrap();
        let (file, info) = find_pause(&sub.join("Heat.mkv")).unwrap();
        assert_eq!(file, dir.path().join(PAUSE_FILE));
        assert_eq!(
            (info.host.as_str(), info.reason.as_deref()),
            ("nas", Some("disk check"))
        );
        assert!(resume(dir.path()).unwrap());
        assert!(!resume(dir.path()).unwrap());
        assert!(find_pause(&sub).is_none());
    }

    #[test]
    fn a_garbled_pause_file_still_pauses() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(PAUSE_FILE), b"\xff not json").unwrap();
        assert!(find_pause(dir.path()).is_some());
    }
}
