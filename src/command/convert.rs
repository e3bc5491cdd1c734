//! `media-converter --dir DIR` / `--file FILE`: scan, decide, claim, transcode, verify,
//! swap, record, release.

mod encode;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};

use crate::claim::{ClaimRefused, Claimer};
use crate::config::{ConvertConfig, Target};
use crate::decide::{self, Container, Decision, Plan, Rules, SkipReason};
use crate::encoder::EncoderSetup;
use crate::exit_codes::ExitCode;
use crate::identity::HostIdentity;
use crate::lock::{self, Locker};
use crate::output::{Event, PlannedAction, Reporter, Summary};
use crate::probe::{self, MediaInfo};
use crate::process::Tools;
use crate::scan::{self, MediaFile};
use crate::signal;
use crate::space;
use crate::swap::{self, Swap};
use crate::transcode::StopReason;
use crate::unattended;

/// Runs a conversion (or, with `--dry-run`, a plan) over the configured target.
pub fn run(config: &ConvertConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tools = Tools::locate()?;
    let files = find_files(config, reporter)?;
    let rules = Rules {
        min_age: config.min_age,
        min_savings_pct: config.min_savings_pct,
        allow_dv_loss: config.allow_dv_loss,
        now: SystemTime::now(),
    };

    let mut summary = Summary::default();
    let mut candidates = Vec::new();
    let mut to_probe = Vec::new();
    for file in files {
        match decide::too_new(&file, &rules) {
            Some(Decision::Skip { reason, detail }) => {
                skipped(reporter, &mut summary, config, &file, "?", reason, detail)
            }
            _ => to_probe.push(file),
        }
    }
    let probes = probe::probe_many(
        &tools.ffprobe,
        &paths(&to_probe),
        config.probe_jobs,
        &|_| {},
    );
    for (file, probed) in to_probe.into_iter().zip(probes) {
        let info = match probed {
            Ok(info) => info,
            Err(err) => {
                failed(reporter, &mut summary, &file.path, err.to_string());
                continue;
            }
        };
        let codec = main_codec(&info);
        match decide::decide(&file, &info, &rules) {
            Decision::Skip { reason, detail } => skipped(
                reporter,
                &mut summary,
                config,
                &file,
                &codec,
                reason,
                detail,
            ),
            Decision::Convert(plan) => candidates.push((file, info, plan)),
        }
    }

    if config.dry_run {
        let mut estimate = 0;
        for (file, info, plan) in &candidates {
            summary.converted += 1;
            estimate += file.size.saturating_sub(plan.estimated_bytes);
            reporter.emit(Event::Planned {
                file: shown(&file.path),
                codec: main_codec(info),
                action: PlannedAction::Convert,
                reason: None,
                detail: format!("to HEVC in {}", plan.container.muxer()),
                size_bytes: file.size,
                estimated_bytes: plan.estimated_bytes,
            });
        }
        summary.estimated_saving_bytes = Some(estimate);
        return Ok(finish(reporter, summary, started));
    }

    let claimer = Claimer::new(Locker::new(HostIdentity::current(), config.lock));
    let encoders = encode::Encoders::new(&tools, config);
    let ctx = Context {
        claimer: &claimer,
        tools: &tools,
        encoders: &encoders,
        config,
        reporter,
        deadline: config
            .limits
            .deadline_after(&chrono::Local::now())
            .map(|after| started + after),
    };
    convert_all(&ctx, candidates, &mut summary);
    Ok(finish(reporter, summary, started))
}

/// What every conversion of a run shares.
struct Context<'a> {
    tools: &'a Tools,
    /// The run's video encoder, detected when the first video file needs it.
    encoders: &'a encode::Encoders<'a>,
    config: &'a ConvertConfig,
    reporter: &'a Reporter,
    /// No new file starts after this (`--until`, `--max-runtime`).
    deadline: Option<Instant>,
    claimer: &'a Claimer,
}

/// Converts the candidates, `--jobs` at a time, until done or a limit says stop.
fn convert_all(
    ctx: &Context<'_>,
    candidates: Vec<(MediaFile, MediaInfo, Plan)>,
    summary: &mut Summary,
) {
    let total = candidates.len() as u64;
    ctx.reporter
        .start_overall(total, candidates.iter().map(|(f, _, _)| f.size).sum());
    let queue = Mutex::new(VecDeque::from(candidates));
    let gate = StartGate::new(ctx);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..ctx.config.jobs {
            let done_tx = done_tx.clone();
            let (queue, gate) = (&queue, &gate);
            scope.spawn(move || {
                while gate.may_start() {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((file, info, plan)) = next else {
                        break;
                    };
                    let outcome = convert_one(ctx, &file, &info, &plan);
                    if done_tx.send((file, info, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for (done, (file, info, outcome)) in done_rx.into_iter().enumerate() {
            record(ctx, summary, &file, &info, outcome);
            ctx.reporter.file_done(done as u64 + 1, total, file.size);
        }
    });
    let left = queue.lock().map_or(0, |q| q.len());
    if let Some(reason) = gate.stopped_because() {
        ctx.reporter
            .note(&format!("{reason}: {left} file(s) left for a later run"));
    }
}

/// Accounts for one finished file.
fn record(
    ctx: &Context<'_>,
    summary: &mut Summary,
    file: &MediaFile,
    info: &MediaInfo,
    outcome: FileOutcome,
) {
    match outcome {
        FileOutcome::Converted { after_bytes } => {
            summary.converted += 1;
            summary.before_bytes += file.size;
            summary.after_bytes += after_bytes;
            summary.saved_bytes += file.size.saturating_sub(after_bytes);
        }
        FileOutcome::Skipped(reason, detail) => skipped(
            ctx.reporter,
            summary,
            ctx.config,
            file,
            &main_codec(info),
            reason,
            detail,
        ),
        FileOutcome::Locked { host, detail } => {
            summary.skipped += 1;
            ctx.reporter.emit(Event::Skipped {
                file: shown(&file.path),
                reason: SkipReason::Locked,
                detail,
                host: Some(host),
            });
        }
        FileOutcome::Failed(error) => failed(ctx.reporter, summary, &file.path, error),
        FileOutcome::Interrupted => {}
    }
}

/// Decides, before each new file, whether the run may start it: not interrupted, not
/// paused, before the deadline, under `--max-files`.
struct StartGate<'a> {
    ctx: &'a Context<'a>,
    pause_root: PathBuf,
    started: AtomicU64,
    stopped: Mutex<Option<String>>,
}

impl<'a> StartGate<'a> {
    fn new(ctx: &'a Context<'a>) -> StartGate<'a> {
        let pause_root = match &ctx.config.target {
            Target::Dir(dir) => dir.clone(),
            Target::File(file) => file.clone(),
        };
        StartGate {
            ctx,
            pause_root,
            started: AtomicU64::new(0),
            stopped: Mutex::new(None),
        }
    }

    /// Whether one more file may start; counts it when it may.
    fn may_start(&self) -> bool {
        if signal::interrupted() || self.stopped_because().is_some() {
            return false;
        }
        let reason = if let Some((file, info)) = unattended::find_pause(&self.pause_root) {
            Some(format!(
                "paused by {} since {} ({}); `media-converter resume` lifts it",
                info.host,
                info.since,
                file.display()
            ))
        } else if self.ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            Some("deadline reached".to_string())
        } else {
            let limit = self.ctx.config.limits.max_files;
            let taken = self
                .started
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (limit.is_none_or(|max| n < max)).then_some(n + 1)
                });
            taken
                .is_err()
                .then(|| format!("--max-files {} reached", limit.unwrap_or(0)))
        };
        match reason {
            None => true,
            Some(reason) => {
                if let Ok(mut stopped) = self.stopped.lock() {
                    stopped.get_or_insert(reason);
                }
                false
            }
        }
    }

    fn stopped_because(&self) -> Option<String> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }
}

/// The files the run looks at, of the requested type.
fn find_files(config: &ConvertConfig, reporter: &Reporter) -> anyhow::Result<Vec<MediaFile>> {
    let files = match &config.target {
        Target::Dir(dir) => {
            let meta = fs::metadata(dir)
                .with_context(|| format!("cannot read --dir {}", dir.display()))?;
            if !meta.is_dir() {
                bail!(
                    "--dir {} is not a directory (use --file for one file)",
                    dir.display()
                );
            }
            let (files, warnings) = scan::scan_dir(dir, config.follow_links);
            for warning in warnings {
                reporter.emit(Event::Warning {
                    file: Some(shown(&warning.path)),
                    message: warning.message,
                });
            }
            files
        }
        Target::File(file) => vec![
            scan::scan_file(file).map_err(|e| anyhow::anyhow!("--file {}: {e}", file.display()))?,
        ],
    };
    Ok(files
        .into_iter()
        .filter(|f| config.media_type.includes(f.kind))
        .collect())
}

/// How one file ended.
enum FileOutcome {
    Converted {
        after_bytes: u64,
    },
    /// Another host holds it.
    Locked {
        host: String,
        detail: String,
    },
    Skipped(SkipReason, String),
    Failed(String),
    Interrupted,
}

/// A temp output that is removed unless it was moved into place.
struct TempOutput(PathBuf);

impl Drop for TempOutput {
    fn drop(&mut self) {
        // It may already have been renamed over the original; then there is nothing here.
        let _ = fs::remove_file(&self.0);
    }
}

fn convert_one(ctx: &Context<'_>, file: &MediaFile, info: &MediaInfo, plan: &Plan) -> FileOutcome {
    let Context {
        tools,
        encoders,
        config,
        reporter,
        deadline,
        claimer,
    } = *ctx;
    let started = Instant::now();

    let claim = match claimer.claim(&file.path) {
        Ok(claim) => claim,
        Err(ClaimRefused::Held(holder)) => {
            return FileOutcome::Locked {
                host: holder.hostname.clone().unwrap_or_else(|| "unknown".into()),
                detail: format!("locked by {holder}"),
            };
        }
        Err(ClaimRefused::DirectoryNotWritable { dir, first_time }) => {
            if first_time {
                reporter.emit(Event::Warning {
                    file: Some(shown(&dir)),
                    message: "cannot create lock files here (read-only share or no write \
                              permission), so its files are skipped; grant write access to \
                              convert them"
                        .into(),
                });
            }
            return FileOutcome::Skipped(
                SkipReason::NotWritable,
                format!("{} is not writable", dir.display()),
            );
        }
        Err(ClaimRefused::Failed(error)) => return FileOutcome::Failed(error),
    };
    // Another host may have converted the file between our scan and our claim: the swap
    // keeps the mtime, but never the size.
    match fs::metadata(&file.path) {
        Ok(meta) if meta.len() == file.size => {}
        Ok(_) => {
            return FileOutcome::Skipped(
                SkipReason::Changed,
                "changed since the scan (converted by another host?); the next run looks again"
                    .into(),
            );
        }
        Err(err) => return FileOutcome::Failed(format!("gone since the scan: {err}")),
    }

    let file_name = file.path.file_name().unwrap_or_default();
    let temp = TempOutput(file.path.with_file_name(lock::temp_output_name(
        file_name,
        claim.lock_id(),
        plan.container.extension(),
    )));

    let hdr = match info.main_video().filter(|v| v.is_hdr()) {
        Some(video) => match probe::hdr_metadata(&tools.ffprobe, &file.path, video.index) {
            Ok(meta) => Some(meta),
            Err(err) => return FileOutcome::Failed(format!("reading HDR metadata: {err}")),
        },
        None => None,
    };
    let setup = if plan.container == Container::Flac {
        // FLAC needs no video encoder, and no detection of one.
        EncoderSetup::software()
    } else {
        match encoders.for_video(reporter, info) {
            Ok(setup) => setup,
            Err(outcome) => return outcome,
        }
    };
    let room = temp.0.parent().unwrap_or(Path::new("."));
    if let Err(no_room) = space::check(room, file.size) {
        return FileOutcome::Skipped(SkipReason::NoSpace, no_room.to_string());
    }
    let should_stop = || {
        if signal::interrupted() {
            return Some(StopReason::Interrupted);
        }
        if claim.lost() {
            return Some(StopReason::LockLost);
        }
        if config.limits.stop_at_deadline && deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(StopReason::Deadline);
        }
        None
    };
    let attempt = encode::Attempt {
        tools,
        config,
        reporter,
        file,
        info,
        plan,
        temp: &temp.0,
        hdr: hdr.as_ref(),
        should_stop: &should_stop,
        set_phase: &|phase| claim.set_phase(phase),
        set_progress: &|progress| claim.set_progress(progress),
    };
    let encoded = match encode::encode_verified(&attempt, setup, config.fallback) {
        Ok(encoded) => encoded,
        Err(outcome) => return outcome,
    };
    let after_bytes = match fs::metadata(&temp.0) {
        Ok(meta) => meta.len(),
        Err(err) => return FileOutcome::Failed(format!("reading {}: {err}", temp.0.display())),
    };
    let limit = file.size as f64 * (1.0 - plan.min_savings_pct / 100.0);
    if after_bytes as f64 > limit {
        return FileOutcome::Skipped(
            SkipReason::NotSmaller,
            format!(
                "the new file ({after_bytes} bytes) is not {}% smaller than the original ({} bytes)",
                plan.min_savings_pct, file.size
            ),
        );
    }
    if signal::interrupted() {
        return FileOutcome::Interrupted;
    }

    // Self-fence: the claim must still be ours (a fresh heartbeat, not the last one), and
    // the original exactly what was probed; otherwise someone else owns this file now, or
    // changed it while we worked, and our output must not replace anything.
    if let Err(lost) = claim.confirm() {
        return FileOutcome::Failed(format!(
            "lost the claim before the swap ({lost}); the new file was discarded"
        ));
    }
    let original_meta = match fs::metadata(&file.path) {
        Ok(meta) => meta,
        Err(err) => {
            return FileOutcome::Failed(format!("the original vanished during conversion: {err}"));
        }
    };
    if original_meta.len() != file.size || original_meta.modified().ok() != Some(file.modified) {
        return FileOutcome::Failed(
            "the original changed during conversion; the new file was discarded".into(),
        );
    }
    if let Err(err) = swap::carry_over_metadata(&original_meta, &temp.0) {
        return FileOutcome::Failed(format!("copying mtime and permissions: {err}"));
    }
    let original_ext = file
        .path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let backup =
        file.path
            .with_file_name(lock::backup_name(file_name, claim.lock_id(), &original_ext));
    let kept = file
        .path
        .with_file_name(lock::kept_original_name(file_name, &original_ext));
    let swapped = swap::swap(
        &Swap {
            original: &file.path,
            new_file: &temp.0,
            destination: &plan.output_path,
            backup: &backup,
            keep_as: config.keep_original.then_some(kept.as_path()),
        },
        &mut |phase| claim.set_phase(phase.as_str()),
    );
    if let Err(err) = swapped {
        return FileOutcome::Failed(format!("replacing the original: {err}"));
    }
    if let Err(err) = claim.release() {
        reporter.emit(Event::Warning {
            file: Some(shown(&file.path)),
            message: format!(
                "converted, but its lock could not be released ({err}); \
                 `media-converter locks clean` removes it"
            ),
        });
    }
    reporter.emit(Event::Converted {
        file: shown(&file.path),
        output: shown(&plan.output_path),
        before_bytes: file.size,
        after_bytes,
        seconds: started.elapsed().as_secs_f64(),
        encoder: encoded.encoder,
        fallback: encoded.fallback,
        dropped: encoded.dropped,
    });
    FileOutcome::Converted { after_bytes }
}

fn main_codec(info: &MediaInfo) -> String {
    info.main_video()
        .or_else(|| info.main_audio())
        .map_or_else(|| "none".into(), |s| s.codec.clone())
}

fn paths(files: &[MediaFile]) -> Vec<&Path> {
    files.iter().map(|f| f.path.as_path()).collect()
}

fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn skipped(
    reporter: &Reporter,
    summary: &mut Summary,
    config: &ConvertConfig,
    file: &MediaFile,
    codec: &str,
    reason: SkipReason,
    detail: String,
) {
    summary.skipped += 1;
    if config.dry_run {
        reporter.emit(Event::Planned {
            file: shown(&file.path),
            codec: codec.into(),
            action: PlannedAction::Skip,
            reason: Some(reason),
            detail,
            size_bytes: file.size,
            estimated_bytes: file.size,
        });
    } else {
        reporter.emit(Event::Skipped {
            file: shown(&file.path),
            reason,
            detail,
            host: None,
        });
    }
}

fn failed(reporter: &Reporter, summary: &mut Summary, path: &Path, error: String) {
    summary.failed += 1;
    reporter.emit(Event::Failed {
        file: shown(path),
        error,
    });
}

fn finish(reporter: &Reporter, mut summary: Summary, started: Instant) -> ExitCode {
    summary.seconds = started.elapsed().as_secs_f64();
    summary.interrupted = signal::interrupted();
    let code = if summary.interrupted {
        ExitCode::Interrupted
    } else if summary.failed > 0 {
        ExitCode::SomeFailed
    } else {
        ExitCode::Success
    };
    reporter.emit(Event::Summary(summary));
    code
}
