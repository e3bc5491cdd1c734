//! `media-converter --dir DIR` / `--file FILE`: scan, decide, claim, transcode, verify,
//! swap, record, release.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

use crate::cache::{self, FactsSource, Recorder};
use crate::config::{ConvertConfig, Target};
use crate::decide::{self, Container, Decision, Plan, Rules, SkipReason};
use crate::encoder::Encoder;
use crate::exit_codes::ExitCode;
use crate::names;
use crate::output::{Event, PlannedAction, Reporter, Summary};
use crate::probe::{self, MediaInfo};
use crate::process::{Tools, display_command};
use crate::scan::{self, MediaFile};
use crate::signal;
use crate::survey::{self, DirBatch, Known, Next};
use crate::swap::{self, Swap};
use crate::transcode::{self, Job, Outcome, StopReason};
use crate::verify;

/// Runs a conversion (or, with `--dry-run`, a plan) over the configured target.
pub fn run(config: &ConvertConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tools = Tools::locate()?;
    let rules = Rules {
        min_age: config.min_age,
        min_savings_pct: config.min_savings_pct,
        allow_dv_loss: config.allow_dv_loss,
        now: SystemTime::now(),
    };

    let mut summary = Summary::default();
    // A dry run keeps only what its plan lines need: a warm survey of a huge library must not
    // hold every file's stream list.
    let mut candidates: Vec<(MediaFile, Option<MediaInfo>, String, Plan)> = Vec::new();
    let mut recorder = Recorder::new();
    let options = survey::Options {
        ffprobe: &tools.ffprobe,
        rules: &rules,
        probe_jobs: config.probe_jobs,
        retry_failed: config.retry_failed,
        record_failures: !config.dry_run,
    };
    let on_known = |file: &MediaFile, known: Known<'_>| match known {
        Known::Facts { info, source } => match decide::decide(file, info, &rules) {
            Decision::Skip { reason, detail } => {
                let codec = main_codec(info);
                skipped(reporter, &mut summary, config, file, &codec, reason, detail);
                Next::Done
            }
            // The legacy cache's facts decide, but converting needs every stream.
            Decision::Convert(_) if source == FactsSource::Legacy && !config.dry_run => {
                Next::ProbeFully
            }
            Decision::Convert(plan) => {
                let kept = (!config.dry_run).then(|| info.clone());
                candidates.push((file.clone(), kept, main_codec(info), plan));
                Next::Done
            }
        },
        Known::Skip {
            reason,
            detail,
            host: None,
        } => {
            skipped(reporter, &mut summary, config, file, "?", reason, detail);
            Next::Done
        }
        Known::Skip {
            reason,
            detail,
            host: Some(host),
        } => {
            summary.skipped += 1;
            emit_history_skip(reporter, config, file, reason, detail, host);
            Next::Done
        }
        Known::Unreadable { error } => {
            failed(reporter, &mut summary, &file.path, error);
            Next::Done
        }
    };
    with_target_files(config, reporter, |groups| {
        survey::survey(groups, &options, &mut recorder, reporter, on_known)
    })?;
    decide::sort_by_order(&mut candidates, config.order, |(file, _, _, plan)| {
        (file, plan)
    });

    if config.dry_run {
        let mut estimate = 0;
        for (file, _, codec, plan) in &candidates {
            summary.converted += 1;
            estimate += file.size.saturating_sub(plan.estimated_bytes);
            reporter.emit(Event::Planned {
                file: shown(&file.path),
                codec: codec.clone(),
                action: PlannedAction::Convert,
                reason: None,
                detail: format!("to HEVC in {}", plan.container.muxer()),
                size_bytes: file.size,
                estimated_bytes: plan.estimated_bytes,
            });
        }
        summary.estimated_saving_bytes = Some(estimate);
        survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
        return Ok(finish(reporter, summary, started));
    }

    let total_bytes = candidates.iter().map(|(f, _, _, _)| f.size).sum();
    reporter.start_overall(candidates.len() as u64, total_bytes);
    let count = candidates.len() as u64;
    for (done, (file, info, codec, plan)) in candidates.into_iter().enumerate() {
        if signal::interrupted() {
            break;
        }
        let Some(info) = info else {
            // Only a dry run drops the facts, and it never gets here.
            continue;
        };
        // Conversions take long: another host may have learned meanwhile that this one is
        // not worth it, or failed it out. One cache read is cheap next to a transcode.
        if let Some(history) = cache::history_now(&file, config.retry_failed) {
            summary.skipped += 1;
            emit_history_skip(
                reporter,
                config,
                &file,
                history.reason,
                history.detail,
                history.host,
            );
            reporter.file_done(done as u64 + 1, count, file.size);
            continue;
        }
        let file_started = Instant::now();
        let outcome = convert_one(&tools, config, reporter, &file, &info, &plan);
        match outcome {
            FileOutcome::Converted { after_bytes } => {
                summary.converted += 1;
                summary.before_bytes += file.size;
                summary.after_bytes += after_bytes;
                summary.saved_bytes += file.size.saturating_sub(after_bytes);
                recorder.converted(
                    &file,
                    &plan.output_path,
                    after_bytes,
                    // The encoder convert_one used; it chooses none other yet.
                    Encoder::Libx265.name(),
                    file_started.elapsed().as_secs_f64(),
                );
            }
            FileOutcome::Skipped(reason, detail) => {
                if reason == SkipReason::NotSmaller {
                    recorder.not_smaller(&file, &detail);
                }
                skipped(
                    reporter,
                    &mut summary,
                    config,
                    &file,
                    &codec,
                    reason,
                    detail,
                )
            }
            FileOutcome::Failed(error) => {
                recorder.failed(&file, &error, &[]);
                failed(reporter, &mut summary, &file.path, error)
            }
            FileOutcome::Interrupted => break,
        }
        // Right away, so other hosts learn it before they pick their next file.
        let dir = cache::dir_of(&file.path);
        survey::report_warnings(reporter, recorder.flush(&dir, cache::WRITE_PATIENCE));
        reporter.file_done(done as u64 + 1, count, file.size);
    }
    survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
    Ok(finish(reporter, summary, started))
}

/// Hands the run's files, of the requested type, to `consume` directory by directory: a
/// `--dir` is walked in the background meanwhile; a `--file` is one directory of one file.
fn with_target_files<R>(
    config: &ConvertConfig,
    reporter: &Reporter,
    consume: impl FnOnce(&mut dyn Iterator<Item = DirBatch>) -> R,
) -> anyhow::Result<R> {
    match &config.target {
        Target::Dir(dir) => {
            let meta = fs::metadata(dir)
                .with_context(|| format!("cannot read --dir {}", dir.display()))?;
            if !meta.is_dir() {
                bail!(
                    "--dir {} is not a directory (use --file for one file)",
                    dir.display()
                );
            }
            Ok(survey::walk_library(
                dir,
                config.follow_links,
                config.media_type,
                reporter,
                consume,
            ))
        }
        Target::File(file) => {
            let file = scan::scan_file(file)
                .map_err(|e| anyhow::anyhow!("--file {}: {e}", file.display()))?;
            let mut group = config
                .media_type
                .includes(file.kind)
                .then(|| DirBatch::load(cache::dir_of(&file.path), vec![file]))
                .into_iter();
            Ok(consume(&mut group))
        }
    }
}

/// How one file ended.
enum FileOutcome {
    Converted { after_bytes: u64 },
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

fn convert_one(
    tools: &Tools,
    config: &ConvertConfig,
    reporter: &Reporter,
    file: &MediaFile,
    info: &MediaInfo,
    plan: &Plan,
) -> FileOutcome {
    let started = Instant::now();
    let encoder = Encoder::Libx265;
    let lock_id = new_lock_id();
    let ext = match plan.container {
        Container::Matroska => "mkv",
        Container::Mp4 => "mp4",
        Container::Mov => "mov",
        Container::Flac => "flac",
    };
    let temp = TempOutput(names::temp_output_path(&file.path, &lock_id, ext));

    let hdr = match info.main_video().filter(|v| v.is_hdr()) {
        Some(video) => match probe::hdr_metadata(&tools.ffprobe, &file.path, video.index) {
            Ok(meta) => Some(meta),
            Err(err) => return FileOutcome::Failed(format!("reading HDR metadata: {err}")),
        },
        None => None,
    };
    let built = transcode::ffmpeg_args(&Job {
        input: &file.path,
        output: &temp.0,
        info,
        plan,
        encoder,
        settings: &config.encode,
        hdr: hdr.as_ref(),
    });
    reporter.debug(&format!(
        "running: {}",
        display_command(&tools.ffmpeg, &built.args)
    ));
    reporter.emit(Event::Converting {
        file: shown(&file.path),
        codec: main_codec(info),
        encoder: encoder.name().into(),
        size_bytes: file.size,
        duration_secs: info.duration_secs,
    });

    let name = shown(&file.path);
    let outcome = transcode::run(&tools.ffmpeg, &built.args, |update| {
        if signal::interrupted() {
            return Some(StopReason::Interrupted);
        }
        let update = update?;
        if let Some(fraction) = update.fraction(info.duration_secs) {
            reporter.emit(Event::Progress {
                file: name.clone(),
                percent: fraction * 100.0,
                fps: update.fps,
                speed: update.speed,
                eta_secs: update.eta_secs(info.duration_secs),
            });
        }
        transcode::will_not_shrink(update, info.duration_secs, file.size)
            .then_some(StopReason::WouldNotShrink)
    });
    match outcome {
        Ok(Outcome::Finished) => {}
        Ok(Outcome::Stopped(StopReason::Interrupted)) => return FileOutcome::Interrupted,
        Ok(Outcome::Stopped(StopReason::WouldNotShrink)) => {
            return FileOutcome::Skipped(
                SkipReason::NotSmaller,
                format!(
                    "stopped after {:.0}% of the duration: the new file was heading past the original's {} bytes",
                    transcode::EARLY_ABORT_FRACTION * 100.0,
                    file.size
                ),
            );
        }
        Ok(Outcome::Stopped(StopReason::LockLost)) => {
            return FileOutcome::Failed(
                "lost the claim on the file; another host owns it now".into(),
            );
        }
        Err(err) => return FileOutcome::Failed(format!("ffmpeg failed: {err}")),
    }

    if let Err(err) = File::open(&temp.0).and_then(|f| f.sync_all()) {
        return FileOutcome::Failed(format!("flushing {} to disk: {err}", temp.0.display()));
    }
    if let Err(err) = verify::verify(
        &tools.ffmpeg,
        &tools.ffprobe,
        info,
        &temp.0,
        plan.container,
        config.verify,
    ) {
        return FileOutcome::Failed(format!("verification failed: {err}"));
    }
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

    // Self-fence: the original must be exactly what was probed, or someone changed it while
    // we worked and our output describes a file that no longer exists.
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
    let backup = names::backup_path(&file.path, &lock_id);
    let swapped = swap::swap(
        &Swap {
            original: &file.path,
            new_file: &temp.0,
            destination: &plan.output_path,
            backup: &backup,
            keep_original: config.keep_original,
        },
        &mut |_phase| {},
    );
    if let Err(err) = swapped {
        return FileOutcome::Failed(format!("replacing the original: {err}"));
    }
    reporter.emit(Event::Converted {
        file: shown(&file.path),
        output: shown(&plan.output_path),
        before_bytes: file.size,
        after_bytes,
        seconds: started.elapsed().as_secs_f64(),
        encoder: encoder.name().into(),
        dropped: built.dropped,
    });
    FileOutcome::Converted { after_bytes }
}

fn new_lock_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: time and pid still make a name no other process uses.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
        bytes[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main_codec(info: &MediaInfo) -> String {
    info.main_video()
        .or_else(|| info.main_audio())
        .map_or_else(|| "none".into(), |s| s.codec.clone())
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

/// A file the cache's history rules out: reported like any skip, naming the host that
/// learned it.
fn emit_history_skip(
    reporter: &Reporter,
    config: &ConvertConfig,
    file: &MediaFile,
    reason: SkipReason,
    detail: String,
    host: String,
) {
    if config.dry_run {
        reporter.emit(Event::Planned {
            file: shown(&file.path),
            codec: "?".into(),
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
            host: Some(host),
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
