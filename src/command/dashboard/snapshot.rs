//! What the dashboard shows, read from the share alone: the hosts' presence records (every
//! couple of seconds), the pause and priority files, and the caches' history (a full walk,
//! less often). Nothing here writes to the share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::cache::FAILURE_LIMIT;
use crate::cache::stats::Stats;
use crate::command;
use crate::command::status::{self, HostSeen, InProgress};
use crate::config::MediaType;
use crate::output::Reporter;
use crate::presence::{self, HostState, Watcher};
use crate::priority;
use crate::survey;
use crate::unattended::{self, PauseInfo};

/// The most failures and not-smaller files listed (the most recent); the counts are whole.
const MAX_LISTED: usize = 100;

/// Everything the page shows; served as `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub library: String,
    pub version: &'static str,
    /// Whether the controls are on (`--allow-control`).
    pub control: bool,
    pub paused: Option<PauseInfo>,
    /// Every host: working, idle, gone quiet, stopped, or known only from the history.
    pub hosts: Vec<HostSeen>,
    /// The files hosts that are alive report converting, with their progress.
    pub in_progress: Vec<InProgress>,
    /// The caches' figures; `None` until the first read of the library ends.
    pub totals: Option<Stats>,
    /// Source bytes a second the live hosts convert, from their past conversions.
    pub pace_bytes_per_sec: Option<f64>,
    /// How long the candidates left would take at that pace.
    pub eta_secs: Option<f64>,
    /// Space saved per day (by the converting host's clock) and host.
    pub history: Vec<DaySaved>,
    /// Files that failed, most recent first (at most 100).
    pub failures: Vec<FailedFile>,
    /// Files kept because their conversion was not smaller, most recent first (at most 100).
    pub not_smaller: Vec<KeptFile>,
    /// The priority list: converted first by every host.
    pub priority: Vec<String>,
    /// How long the last read of the library took, and how long ago it ended.
    pub library_read_secs: Option<f64>,
    pub library_read_ago_secs: Option<f64>,
}

/// What one host's conversions saved on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaySaved {
    /// `YYYY-MM-DD`, UTC, by the converting host's clock.
    pub day: String,
    pub host: String,
    pub files: u64,
    pub saved_bytes: u64,
}

/// A file that failed.
#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    pub file: String,
    pub host: String,
    pub error: String,
    pub attempts: u32,
    /// At the failure limit: no host tries it until it is retried.
    pub given_up: bool,
    pub at: String,
}

/// A file kept because converting it did not save enough.
#[derive(Debug, Clone, Serialize)]
pub struct KeptFile {
    pub file: String,
    pub host: String,
    pub detail: String,
    pub at: String,
}

/// What a walk of the library learned from the caches.
#[derive(Debug, Clone, Default)]
pub struct LibraryView {
    pub stats: Stats,
    pub history: Vec<DaySaved>,
    /// Per host: source bytes converted and the seconds it took.
    pub throughput: BTreeMap<String, (u64, f64)>,
    pub failures: Vec<FailedFile>,
    pub not_smaller: Vec<KeptFile>,
    pub read_secs: f64,
}

/// Reads every directory's cache under `root`: the figures of `cache stats`, and the history
/// behind the chart, the pace and the lists.
pub fn read_library(root: &Path, media_type: MediaType, reporter: &Reporter) -> LibraryView {
    let started = Instant::now();
    let rules = command::cache::stats_rules();
    let mut view = LibraryView {
        stats: Stats::new(root.to_string_lossy().into_owned()),
        ..LibraryView::default()
    };
    let mut days: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    survey::walk_library(root, false, media_type, reporter, |groups| {
        for batch in groups {
            for (file, entry) in command::cache::fresh_entries(&batch, reporter) {
                view.stats.add(file, entry, &rules);
                let Some(entry) = entry else { continue };
                let name = relative(root, &file.path);
                if let Some(done) = &entry.converted {
                    let day = done.at.get(..10).unwrap_or("unknown").to_owned();
                    let saved = done.before_bytes.saturating_sub(done.after_bytes);
                    let slot = days.entry((day, done.host.clone())).or_default();
                    slot.0 += 1;
                    slot.1 += saved;
                    if done.seconds.is_finite() && done.seconds > 0.0 {
                        let pace = view.throughput.entry(done.host.clone()).or_default();
                        pace.0 += done.before_bytes;
                        pace.1 += done.seconds;
                    }
                }
                if let Some(failed) = &entry.failed {
                    view.failures.push(FailedFile {
                        file: name.clone(),
                        host: failed.host.clone(),
                        error: failed.error.clone(),
                        attempts: failed.attempts,
                        given_up: failed.attempts >= FAILURE_LIMIT,
                        at: failed.at.clone(),
                    });
                }
                if let Some(kept) = &entry.not_smaller {
                    view.not_smaller.push(KeptFile {
                        file: name,
                        host: kept.host.clone(),
                        detail: kept.detail.clone(),
                        at: kept.at.clone(),
                    });
                }
            }
        }
    });
    view.history = days
        .into_iter()
        .map(|((day, host), (files, saved_bytes))| DaySaved {
            day,
            host,
            files,
            saved_bytes,
        })
        .collect();
    view.failures.sort_by(|a, b| b.at.cmp(&a.at));
    view.failures.truncate(MAX_LISTED);
    view.not_smaller.sort_by(|a, b| b.at.cmp(&a.at));
    view.not_smaller.truncate(MAX_LISTED);
    view.read_secs = started.elapsed().as_secs_f64();
    view
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// How a reader judges how long presence records have gone unchanged.
pub enum Judge<'a> {
    /// Watching them on its own monotonic clock: a long-running reader that writes nothing.
    Watching(&'a mut Watcher),
    /// On the file server's clock, learned from a probe file: a one-shot reader.
    ServerClock,
}

/// Puts a snapshot together from the presence records (read now), the pause and priority
/// files, and the latest library view (`None` before the first read ends).
pub fn compose(
    root: &Path,
    control: bool,
    judge: Judge<'_>,
    library: Option<(&LibraryView, Instant)>,
) -> Snapshot {
    let found = presence::read_all(root);
    let unchanged = match judge {
        Judge::Watching(watcher) => watcher.observe(&found),
        Judge::ServerClock => presence::by_server_clock(root, &found),
    };
    let mut hosts = library.map_or_else(Vec::new, |(view, _)| {
        status::hosts_from_history(&view.stats)
    });
    status::add_presence(&mut hosts, &found, &unchanged);
    let mut in_progress = Vec::new();
    let mut pace = 0.0;
    let mut live = 0;
    for host in &mut hosts {
        let alive = matches!(host.state, Some(HostState::Working | HostState::Idle));
        let Some(presence) = host.presence.as_ref().filter(|_| alive) else {
            continue;
        };
        live += 1;
        host.working_on = presence.jobs.len();
        in_progress.extend(presence.jobs.iter().map(|job| InProgress {
            file: job.file.clone(),
            host: host.host.clone(),
            phase: job.phase.clone(),
            percent: job.percent,
            fps: job.fps,
            eta_secs: job.eta_secs,
            heartbeat_age_secs: None,
        }));
        let past = library.and_then(|(view, _)| view.throughput.get(&host.host));
        if let Some(&(bytes, secs)) = past {
            pace += bytes as f64 / secs * presence.jobs.len().max(1) as f64;
        }
    }
    let totals = library.map(|(view, _)| view.stats.clone());
    let pace_bytes_per_sec = (live > 0 && pace > 0.0).then_some(pace);
    let eta_secs = match (&totals, pace_bytes_per_sec) {
        (Some(totals), Some(pace)) => Some(totals.candidates.bytes as f64 / pace),
        _ => None,
    };
    Snapshot {
        library: root.to_string_lossy().into_owned(),
        version: env!("CARGO_PKG_VERSION"),
        control,
        paused: unattended::find_pause(root).map(|(_, info)| info),
        hosts,
        in_progress,
        totals,
        pace_bytes_per_sec,
        eta_secs,
        history: library.map_or_else(Vec::new, |(view, _)| view.history.clone()),
        failures: library.map_or_else(Vec::new, |(view, _)| view.failures.clone()),
        not_smaller: library.map_or_else(Vec::new, |(view, _)| view.not_smaller.clone()),
        priority: priority::read(root),
        library_read_secs: library.map(|(view, _)| view.read_secs),
        library_read_ago_secs: library.map(|(_, at)| at.elapsed().as_secs_f64()),
    }
}
