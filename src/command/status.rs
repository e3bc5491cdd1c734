//! `media-converter status DIR [--json] [--watch]`: what the fleet is doing, from the share
//! alone. Files in progress come from the lock heartbeats, totals and hosts from the caches;
//! no server, and any host can ask.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::cache::stats::Stats;
use crate::command::cache::gather_stats;
use crate::config::{CacheStatsConfig, StatusConfig};
use crate::duration::format_secs;
use crate::exit_codes::ExitCode;
use crate::identity::HostIdentity;
use crate::lock::{self, Locker};
use crate::output::{Reporter, display_name, human_bytes, unsurveyed_line};
use crate::presence::{self, Found, HostState, Job, Unchanged};
use crate::signal;
use crate::unattended::{self, PauseInfo};

/// The fleet, as the share shows it. Serialized as the `status` JSON object.
#[derive(Debug, Serialize)]
pub struct Status {
    pub library: String,
    /// Set while `.mediabox.pause` stops new work.
    pub paused: Option<PauseInfo>,
    /// Files some host is converting now (live locks).
    pub in_progress: Vec<InProgress>,
    /// Locks whose holder is gone; `locks clean` breaks them, any run takes them over.
    pub stale_locks: usize,
    /// Every host seen in the history or holding a lock now.
    pub hosts: Vec<HostSeen>,
    /// The caches' figures (`cache stats`).
    pub totals: Stats,
}

/// A file being converted, as `status` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct InProgress {
    pub file: String,
    pub host: String,
    pub phase: String,
    pub percent: Option<f64>,
    pub fps: Option<f64>,
    pub eta_secs: Option<f64>,
    /// Since its lock's last heartbeat, where it was read from the lock (`status`); the
    /// dashboard reads the hosts' presence records, which have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_age_secs: Option<f64>,
}

/// A host and what it has done.
#[derive(Debug, Clone, Serialize)]
pub struct HostSeen {
    pub host: String,
    pub converted: u64,
    pub saved_bytes: u64,
    pub last_converted_at: Option<String>,
    /// Files it is converting now.
    pub working_on: usize,
    /// Working, idle, stopped or gone quiet, from its presence record; `None` for a host
    /// known only from the history (or from a lock, by a version that kept no record).
    pub state: Option<HostState>,
    /// What its presence record says.
    pub presence: Option<HostPresence>,
}

/// A host's presence record, as a reader sees it.
#[derive(Debug, Clone, Serialize)]
pub struct HostPresence {
    pub host_id: String,
    pub version: String,
    pub os: String,
    pub encoders: Vec<String>,
    pub gpus: Vec<String>,
    /// The files it reports converting now, with their progress.
    pub jobs: Vec<Job>,
    /// This run's figures.
    pub run_converted: u64,
    pub run_failed: u64,
    pub run_saved_bytes: u64,
    /// By the host's own clock (RFC 3339), for people.
    pub started_at: String,
    pub seen_at: String,
    /// How long the record has gone unrenewed, on a clock the reader trusts; `None` when it
    /// cannot tell yet.
    pub unchanged_secs: Option<f64>,
    /// Which: `server` (the file server's clock), `watched` (since the reader saw it change),
    /// `watched_from_start` (at least: unchanged since the reader began watching).
    pub unchanged_clock: Option<&'static str>,
    /// The record could not be read: why (the host is shown as gone quiet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Prints the status once, or every `watch` interval until interrupted.
pub fn run(config: &StatusConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    if !config.dir.is_dir() {
        bail!("{} is not a directory", config.dir.display());
    }
    let locker = Locker::new(HostIdentity::current(), config.lock);
    let redraw = config.watch.is_some() && std::io::stdout().is_terminal() && !reporter.json();
    loop {
        let started = Instant::now();
        let status = gather(config, &locker, reporter)?;
        let mut out = std::io::stdout().lock();
        if reporter.json() {
            let mut value = serde_json::to_value(&status)?;
            value["event"] = "status".into();
            writeln!(out, "{value}")?;
        } else {
            if redraw {
                // Clear the screen and go home: a dashboard, not a scroll.
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{}", render(&status))?;
        }
        out.flush()?;
        drop(out);
        let Some(every) = config.watch else {
            return Ok(ExitCode::Success);
        };
        while started.elapsed() < every {
            if signal::interrupted() {
                return Ok(ExitCode::Success);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads the share: the pause file, every lock, every cache.
pub fn gather(
    config: &StatusConfig,
    locker: &Locker,
    reporter: &Reporter,
) -> anyhow::Result<Status> {
    let paused = unattended::find_pause(&config.dir).map(|(_, info)| info);
    let mut in_progress = Vec::new();
    let mut stale_locks = 0;
    for entry in lock::list_locks(&config.dir, locker) {
        let Ok(status) = entry else { continue };
        let holder = status.holder;
        if holder.verdict.is_stale() {
            stale_locks += 1;
            continue;
        }
        in_progress.push(InProgress {
            file: relative(&config.dir, &status.media_path),
            host: holder.hostname.unwrap_or_else(|| "?".into()),
            phase: holder.phase.unwrap_or_else(|| "claimed".into()),
            percent: holder.progress.as_ref().map(|p| p.percent),
            fps: holder.progress.as_ref().and_then(|p| p.fps),
            eta_secs: holder.progress.as_ref().and_then(|p| p.eta_secs),
            heartbeat_age_secs: Some(holder.age.as_secs_f64()),
        });
    }
    let totals = gather_stats(
        &CacheStatsConfig {
            dir: config.dir.clone(),
            media_type: config.media_type,
            follow_links: false,
        },
        reporter,
    )?;
    let mut hosts = hosts_from_history(&totals);
    for job in &in_progress {
        match hosts.iter_mut().find(|h| h.host == job.host) {
            Some(host) => host.working_on += 1,
            None => hosts.push(HostSeen {
                host: job.host.clone(),
                converted: 0,
                saved_bytes: 0,
                last_converted_at: None,
                working_on: 1,
                state: None,
                presence: None,
            }),
        }
    }
    let found = presence::read_all(&config.dir);
    add_presence(
        &mut hosts,
        &found,
        &presence::by_server_clock(&config.dir, &found),
    );
    Ok(Status {
        library: config.dir.to_string_lossy().into_owned(),
        paused,
        in_progress,
        stale_locks,
        hosts,
        totals,
    })
}

/// Every host the caches' history names, with its conversions.
pub fn hosts_from_history(totals: &Stats) -> Vec<HostSeen> {
    totals
        .hosts
        .iter()
        .map(|(host, tally)| HostSeen {
            host: host.clone(),
            converted: tally.converted,
            saved_bytes: tally.saved_bytes,
            last_converted_at: Some(tally.last_converted_at.clone()),
            working_on: 0,
            state: None,
            presence: None,
        })
        .collect()
}

/// Adds every presence record to the hosts (by host name), judged by how long each has gone
/// unchanged, and sorts them: working hosts first, then idle, gone quiet, stopped, and the
/// ones known only from the history; the busiest and most recent first within each.
pub fn add_presence(hosts: &mut Vec<HostSeen>, found: &[Found], unchanged: &[Unchanged]) {
    for (found, unchanged) in found.iter().zip(unchanged) {
        let (name, state, presence) = match &found.record {
            Ok(record) => (
                record.host.clone(),
                presence::judge(record, *unchanged),
                HostPresence {
                    host_id: record.host_id.clone(),
                    version: record.version.clone(),
                    os: record.os.clone(),
                    encoders: record.encoders.clone(),
                    gpus: record.gpus.clone(),
                    jobs: record.jobs.clone(),
                    run_converted: record.converted,
                    run_failed: record.failed,
                    run_saved_bytes: record.saved_bytes,
                    started_at: record.started_at.clone(),
                    seen_at: record.seen_at.clone(),
                    unchanged_secs: unchanged.duration().map(|d| d.as_secs_f64()),
                    unchanged_clock: unchanged.clock(),
                    problem: None,
                },
            ),
            Err(why) => (
                found
                    .path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                HostState::GoneQuiet,
                HostPresence {
                    host_id: String::new(),
                    version: String::new(),
                    os: String::new(),
                    encoders: Vec::new(),
                    gpus: Vec::new(),
                    jobs: Vec::new(),
                    run_converted: 0,
                    run_failed: 0,
                    run_saved_bytes: 0,
                    started_at: String::new(),
                    seen_at: String::new(),
                    unchanged_secs: unchanged.duration().map(|d| d.as_secs_f64()),
                    unchanged_clock: unchanged.clock(),
                    problem: Some(format!("{}: {why}", found.path.display())),
                },
            ),
        };
        match hosts
            .iter_mut()
            .find(|h| h.host == name && h.presence.is_none())
        {
            Some(host) => {
                host.state = Some(state);
                host.presence = Some(presence);
            }
            None => hosts.push(HostSeen {
                host: name,
                converted: 0,
                saved_bytes: 0,
                last_converted_at: None,
                working_on: 0,
                state: Some(state),
                presence: Some(presence),
            }),
        }
    }
    let rank = |state: Option<HostState>| match state {
        Some(HostState::Working) => 0,
        Some(HostState::Idle) => 1,
        Some(HostState::GoneQuiet) => 2,
        Some(HostState::Stopped) => 3,
        None => 4,
    };
    hosts.sort_by(|a, b| {
        rank(a.state)
            .cmp(&rank(b.state))
            .then(b.working_on.cmp(&a.working_on))
            .then(b.last_converted_at.cmp(&a.last_converted_at))
            .then(a.host.cmp(&b.host))
    });
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The status for people.
pub fn render(status: &Status) -> String {
    let mut text = format!("library {}\n", display_name(&status.library));
    match &status.paused {
        Some(pause) => text.push_str(&format!(
            "  PAUSED by {} since {}{}: no host starts new files (`media-converter resume`)\n",
            pause.host,
            pause.since,
            pause
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        None => text.push_str("  active\n"),
    }
    text.push_str(&format!("in progress: {}\n", status.in_progress.len()));
    for job in &status.in_progress {
        let progress = match (job.percent, job.fps, job.eta_secs) {
            (Some(p), fps, eta) => format!(
                "{p:>5.1}%{}{}",
                fps.map(|f| format!(" {f:.0} fps")).unwrap_or_default(),
                eta.map(|e| format!(" ETA {}", format_secs(e)))
                    .unwrap_or_default()
            ),
            _ => "-".into(),
        };
        text.push_str(&format!(
            "  {:<16} {:<24} {:<26} {}\n",
            display_name(&job.host),
            job.phase,
            progress,
            display_name(&job.file)
        ));
    }
    if status.stale_locks > 0 {
        text.push_str(&format!(
            "  {} stale lock(s) of crashed runs: any run takes them over, `locks clean` clears them\n",
            status.stale_locks
        ));
    }
    let t = &status.totals;
    text.push_str(&format!(
        "totals: {} media files ({})\n  converted {} (saved {})\n  not smaller {}, failed {} ({} given up on)\n  candidates left {} ({}), estimated saving {}\n",
        t.files.files,
        human_bytes(t.files.bytes),
        t.converted,
        human_bytes(t.saved_bytes),
        t.not_smaller.files,
        t.failed.files,
        t.failed_out.files,
        t.candidates.files,
        human_bytes(t.candidates.bytes),
        human_bytes(t.estimated_saving_bytes),
    ));
    for line in t.score_lines() {
        text.push_str(&format!("  {line}\n"));
    }
    if let Some(line) = unsurveyed_line(&t.unknown) {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str("hosts:\n");
    for host in &status.hosts {
        text.push_str(&format!(
            "  {:<16} {:<10} converted {:>6}, saved {:>10}, last {}{}\n",
            display_name(&host.host),
            host.state.map_or("-", HostState::word),
            host.converted,
            human_bytes(host.saved_bytes).to_string(),
            host.last_converted_at.as_deref().unwrap_or("-"),
            if host.working_on > 0 {
                format!(", working on {}", host.working_on)
            } else {
                String::new()
            }
        ));
        if let Some(p) = &host.presence {
            text.push_str(&format!("  {:<16} {}\n", "", presence_line(host, p)));
        }
    }
    text
}

/// The second line of a host with a presence record: its run, its machine, when last seen.
fn presence_line(host: &HostSeen, p: &HostPresence) -> String {
    if let Some(problem) = &p.problem {
        return format!("unreadable presence record: {}", display_name(problem));
    }
    let seen = match p.unchanged_secs {
        Some(secs) => format!("last seen {} ago", format_secs(secs)),
        None => format!("last seen {} (its clock)", p.seen_at),
    };
    let mut parts = vec![
        format!(
            "this run: {} converted, {} failed, saved {}",
            p.run_converted,
            p.run_failed,
            human_bytes(p.run_saved_bytes)
        ),
        seen,
        format!("v{} {}", p.version, p.os),
    ];
    if !p.encoders.is_empty() {
        parts.push(p.encoders.join(" "));
    }
    if !p.gpus.is_empty() {
        parts.push(display_name(&p.gpus.join(", ")));
    }
    if host.state == Some(HostState::GoneQuiet) {
        parts.push("asleep, cut off from the share, or crashed".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_progress_has_a_heartbeat_age_only_where_it_was_read_from_its_lock() {
        let job = |heartbeat_age_secs| InProgress {
            file: "Movie.mkv".into(),
            host: "den-pc".into(),
            phase: "transcoding".into(),
            percent: Some(42.0),
            fps: None,
            eta_secs: Some(9.5),
            heartbeat_age_secs,
        };
        // `status`, from the lock.
        let from_lock = serde_json::to_value(job(Some(1.5))).unwrap();
        assert_eq!(from_lock["heartbeat_age_secs"], 1.5);
        assert_eq!(from_lock["percent"], 42.0);
        // The dashboard, from a presence record: the same fields, and no age at all
        // (not a null the page would show as "0 s ago").
        let from_presence = serde_json::to_value(job(None)).unwrap();
        let fields: Vec<&str> = from_presence
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["eta_secs", "file", "fps", "host", "percent", "phase"]
        );
    }
}
