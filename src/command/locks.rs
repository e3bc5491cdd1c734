//! `media-converter locks list|clean [DIR]`: every claim on a library, and the repair of
//! what crashed hosts left behind.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use serde_json::json;

use crate::duration::format_secs;
use crate::exit_codes::ExitCode;
use crate::identity::HostIdentity;
use crate::lock::{self, CleanAction, CleanOptions, LockSettings, Locker};
use crate::output::{Reporter, display_name};

/// Lists every lock under `dir`, live or stale, on stdout.
pub fn list(dir: &Path, settings: LockSettings, json: bool) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let locker = Locker::new(HostIdentity::current(), settings);
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    if !json {
        writeln!(
            out,
            "{:<16} {:>7} {:>7}  {:<14} {:<22} {:<6} FILE",
            "HOST", "PID", "AGE", "PHASE", "PROGRESS", "STATE"
        )?;
    }
    for entry in lock::list_locks(dir, &locker) {
        let status = match entry {
            Ok(status) => status,
            Err(err) => {
                failed = true;
                eprintln!("warning: {err}");
                continue;
            }
        };
        let holder = &status.holder;
        let progress = holder.progress.as_ref().map(|p| {
            let mut text = format!("{:.0}%", p.percent);
            if let Some(fps) = p.fps {
                text.push_str(&format!(" {fps:.0} fps"));
            }
            if let Some(eta) = p.eta_secs {
                text.push_str(&format!(" ETA {}", format_secs(eta)));
            }
            text
        });
        let state = if holder.verdict.is_stale() {
            "stale"
        } else {
            "live"
        };
        if json {
            let line = json!({
                "event": "lock",
                "file": status.media_path.to_string_lossy(),
                "lock": status.lock_path.to_string_lossy(),
                "host": holder.hostname,
                "host_id": holder.host_id,
                "pid": holder.pid,
                "lock_id": holder.lock_id,
                "age_secs": holder.age.as_secs_f64(),
                "phase": holder.phase,
                "progress": holder.progress,
                "state": state,
                "why": holder.verdict.to_string(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{:<16} {:>7} {:>7}  {:<14} {:<22} {:<6} {}  ({})",
                holder.hostname.as_deref().unwrap_or("?"),
                holder.pid.map_or("?".into(), |p| p.to_string()),
                format_secs(holder.age.as_secs_f64()),
                holder.phase.as_deref().unwrap_or("-"),
                progress.unwrap_or_else(|| "-".into()),
                state,
                display_name(&status.media_path.to_string_lossy()),
                holder.verdict,
            )?;
        }
    }
    Ok(if failed {
        ExitCode::SomeFailed
    } else {
        ExitCode::Success
    })
}

/// Breaks stale locks and removes debris no live claim owns; live locks are never touched.
/// With `--force` (no run is active anywhere) whatever is ours goes however young, unless a
/// run is seen active after all: then nothing is done, and the exit says so.
pub fn clean(
    dir: &Path,
    settings: LockSettings,
    options: CleanOptions,
    reporter: &Reporter,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let dry_run = options.dry_run;
    let locker = Locker::new(HostIdentity::current(), settings);
    if options.force && !json {
        reporter.note(&format!(
            "--force: looking for an active run first (a live-looking lock is watched for up \
             to {})",
            format_secs((settings.heartbeat * 3 / 2).as_secs_f64() + 1.0)
        ));
    }
    let report = lock::clean(dir, &locker, options);
    if let Some(active) = &report.refused {
        if json {
            let line = json!({"event": "refused", "why": active, "dry_run": dry_run});
            writeln!(std::io::stdout().lock(), "{line}")?;
        }
        eprintln!(
            "media-converter: locks clean --force refused, nothing was changed: {active}. \
             Stop that run (or let it finish), or run `locks clean` without --force: it \
             leaves live claims alone."
        );
        return Ok(ExitCode::SomeFailed);
    }
    let mut out = std::io::stdout().lock();
    let verb = if dry_run { "would" } else { "did" };
    for action in &report.actions {
        if json {
            let line = json!({
                "event": "cleaned",
                "action": action_name(action),
                "dry_run": dry_run,
                "detail": action.to_string(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{verb}: {}", display_name(&action.to_string()))?;
        }
    }
    for err in &report.errors {
        reporter.note(&format!("warning: {err}"));
    }
    let summary = format!(
        "{} action(s){}, {} live lock(s) left alone, {} error(s)",
        report.actions.len(),
        if dry_run { " planned (dry run)" } else { "" },
        report.live_locks,
        report.errors.len()
    );
    if json {
        writeln!(
            out,
            "{}",
            json!({"event": "summary", "actions": report.actions.len(), "live_locks": report.live_locks,
                   "errors": report.errors.len(), "dry_run": dry_run})
        )?;
    } else {
        reporter.note(&summary);
    }
    Ok(if report.errors.is_empty() {
        ExitCode::Success
    } else {
        ExitCode::SomeFailed
    })
}

fn action_name(action: &CleanAction) -> &'static str {
    match action {
        CleanAction::BrokeStaleLock { .. } => "broke_stale_lock",
        CleanAction::BrokeStaleGuard { .. } => "broke_stale_guard",
        CleanAction::RemovedTombstone { .. } => "removed_tombstone",
        CleanAction::RemovedClockProbe { .. } => "removed_clock_probe",
        CleanAction::BrokeCacheGuard { .. } => "broke_cache_guard",
        CleanAction::RemovedCacheDebris { .. } => "removed_cache_debris",
        CleanAction::RemovedTempOutput { .. } => "removed_temp_output",
        CleanAction::RemovedBackup { .. } => "removed_backup",
        CleanAction::RestoredOriginal { .. } => "restored_original",
        CleanAction::KeptOriginal { .. } => "kept_original",
        CleanAction::RemovedReservation { .. } => "removed_reservation",
        CleanAction::KeptOrphan { .. } => "kept_orphan",
    }
}
