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

use crate::cache::{self, FactsSource, Recorder};
use crate::claim::{Claim, ClaimRefused, Claimer};
use crate::config::{ConvertConfig, MediaType, Target};
use crate::decide::{self, Container, Decision, Plan, Rules, SkipReason};
use crate::encoder::EncoderSetup;
use crate::exit_codes::ExitCode;
use crate::identity::HostIdentity;
use crate::lock::{self, Locker};
use crate::output::{Event, PlannedAction, Reporter, Summary};
use crate::probe::{self, HdrMetadata, MediaInfo};
use crate::process::Tools;
use crate::scan::{self, MediaFile};
use crate::signal;
use crate::space;
use crate::survey::{self, DirBatch, Known, Next};
use crate::swap::{self, Swap, SwapPhase};
use crate::transcode::StopReason;
use crate::unattended;

/// Runs a conversion (or, with `--dry-run`, a plan) over the configured target.
pub fn run(config: &ConvertConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tools = Tools::locate()?;
    let _presence = crate::presence::publish(config, reporter);
    let rules = Rules {
        min_age: config.min_age,
        min_savings_pct: config.min_savings_pct,
        allow_dv_loss: config.allow_dv_loss,
        allow: config.allow,
        now: library_now(config, reporter),
    };

    let mut summary = Summary::default();
    // A dry run keeps only what its plan lines need: a warm survey of a huge library must not
    // hold every file's stream list.
    let mut candidates: Vec<Candidate> = Vec::new();
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
                let skip = Skip::here(reason, detail);
                skipped(reporter, &mut summary, config, file, &codec, skip);
                Next::Done
            }
            // Partial facts decide, but converting needs every stream.
            Decision::Convert(_) if source != FactsSource::Ffprobe && !config.dry_run => {
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
            host,
        } => {
            let skip = Skip {
                reason,
                detail,
                host,
            };
            skipped(reporter, &mut summary, config, file, "?", skip);
            Next::Done
        }
        Known::Unreadable { error } => {
            failed(reporter, &mut summary, &file.path, error);
            Next::Done
        }
    };
    let claimer = Claimer::new(Locker::new(HostIdentity::current(), config.lock));
    if let (Target::Dir(dir), false) = (&config.target, config.dry_run) {
        // Before the scan: an original that a crashed swap left at its backup name is back
        // at its own in time to be seen, and a kept original reaches its kept name.
        for action in lock::settle_dead_claims(dir, claimer.locker()) {
            reporter.note(&format!("settled a dead claim: {action}"));
        }
    }
    let encoders = encode::Encoders::new(&tools, config);
    // The encoder trials run while the library is scanned and probed; a dry run, or an
    // audio-only one, needs no video encoder.
    let detect_early = !config.dry_run && config.media_type != MediaType::Audio;
    std::thread::scope(|scope| {
        if detect_early {
            scope.spawn(|| encoders.prefetch(reporter));
        }
        with_target_files(config, reporter, |groups| {
            survey::survey(groups, &options, &mut recorder, reporter, on_known)
        })
    })?;
    decide::sort_by_order(&mut candidates, config.order, |(file, _, _, plan)| {
        (file, plan)
    });
    crate::priority::to_front(&config.target, &mut candidates, |(file, ..)| &file.path);

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
                detail: plan.describe(),
                size_bytes: file.size,
                estimated_bytes: plan.estimated_bytes,
            });
        }
        summary.estimated_saving_bytes = Some(estimate);
        survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
        return Ok(finish(reporter, summary, started));
    }

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
    convert_all(&ctx, candidates, &mut summary, &mut recorder);
    survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
    Ok(finish(reporter, summary, started))
}

/// "Now" for `--min-age`: the file server's clock, which stamps the library's mtimes. This
/// host's clock may be minutes off, and a file still being downloaded would look old
/// enough to a host whose clock is fast.
fn library_now(config: &ConvertConfig, reporter: &Reporter) -> SystemTime {
    if config.min_age.is_zero() {
        return SystemTime::now();
    }
    let dir = match &config.target {
        Target::Dir(dir) => dir.as_path(),
        Target::File(file) => file.parent().unwrap_or(Path::new(".")),
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match lock::server_now(dir) {
        Ok(now) => now,
        // A missing --dir is reported as such further on.
        Err(_) if !dir.is_dir() => SystemTime::now(),
        Err(err) => {
            reporter.note(&format!(
                "cannot learn the file server's clock in {} ({err}); --min-age compares \
                 mtimes with this host's clock",
                dir.display()
            ));
            SystemTime::now()
        }
    }
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

/// A file to convert: the scan's view of it, its probe, its main codec and the plan.
type Candidate = (MediaFile, Option<MediaInfo>, String, Plan);

/// Converts the candidates, `--jobs` at a time, until done or a limit says stop. Workers
/// convert; this thread alone accounts for outcomes and writes them to the cache, at once,
/// so other hosts learn them before they pick their next file.
fn convert_all(
    ctx: &Context<'_>,
    candidates: Vec<Candidate>,
    summary: &mut Summary,
    recorder: &mut Recorder,
) {
    let total = candidates.len() as u64;
    ctx.reporter
        .start_overall(total, candidates.iter().map(|(f, ..)| f.size).sum());
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
                    let Some((file, info, codec, plan)) = next else {
                        break;
                    };
                    let outcome = match &info {
                        Some(info) => convert_one(ctx, &file, info, &plan),
                        // Only a dry run drops the facts, and it never gets here.
                        None => continue,
                    };
                    if done_tx.send((file, codec, plan, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for (done, (file, codec, plan, outcome)) in done_rx.into_iter().enumerate() {
            record(ctx, summary, recorder, &file, &codec, &plan, outcome);
            let dir = cache::dir_of(&file.path);
            survey::report_warnings(ctx.reporter, recorder.flush(&dir, cache::WRITE_PATIENCE));
            ctx.reporter.file_done(done as u64 + 1, total, file.size);
        }
    });
    let left = queue.lock().map_or(0, |q| q.len());
    if let Some(reason) = gate.stopped_because() {
        ctx.reporter
            .note(&format!("{reason}: {left} file(s) left for a later run"));
    }
}

/// Accounts for one finished file: the summary, its event, and its history in the cache.
fn record(
    ctx: &Context<'_>,
    summary: &mut Summary,
    recorder: &mut Recorder,
    file: &MediaFile,
    codec: &str,
    plan: &Plan,
    outcome: FileOutcome,
) {
    match outcome {
        FileOutcome::Converted {
            after_bytes,
            encoder,
            seconds,
            output,
        } => {
            summary.converted += 1;
            summary.before_bytes += file.size;
            summary.after_bytes += after_bytes;
            summary.saved_bytes += file.size.saturating_sub(after_bytes);
            crate::presence::converted(file.size.saturating_sub(after_bytes), &encoder);
            recorder.converted(file, &plan.output_path, after_bytes, &encoder, seconds);
            // The swap carried the original's mtime over, so this is the fingerprint the next
            // scan sees, and it needs no ffprobe.
            let new_file = MediaFile {
                path: plan.output_path.clone(),
                size: after_bytes,
                ..file.clone()
            };
            recorder.facts(&new_file, *output, FactsSource::Ffprobe);
        }
        FileOutcome::Skipped(skip) => {
            // Only this host's own finding: another host's history is not ours to repeat.
            if skip.reason == SkipReason::NotSmaller && skip.host.is_none() {
                recorder.not_smaller(file, &skip.detail);
            }
            skipped(ctx.reporter, summary, ctx.config, file, codec, skip)
        }
        FileOutcome::Failed(error) => {
            crate::presence::failed();
            recorder.failed(file, &error, &[]);
            failed(ctx.reporter, summary, &file.path, error)
        }
        FileOutcome::Abandoned(error) => failed(ctx.reporter, summary, &file.path, error),
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

/// Claims `path` for a conversion: the file itself, or (`for_file` set) the new name the
/// conversion of `for_file` will write.
fn claim_name(
    ctx: &Context<'_>,
    path: &Path,
    for_file: Option<&Path>,
) -> Result<Claim, FileOutcome> {
    match ctx.claimer.claim(path) {
        Ok(claim) => Ok(claim),
        Err(ClaimRefused::Held(holder)) => Err(FileOutcome::skipped_for(
            SkipReason::Locked,
            match for_file {
                None => format!("locked by {holder}"),
                Some(_) => format!(
                    "its new name {} is locked by {holder}; a later run converts it",
                    path.display()
                ),
            },
            holder.hostname.clone().unwrap_or_else(|| "unknown".into()),
        )),
        Err(ClaimRefused::DirectoryNotWritable { dir, first_time }) => {
            if first_time {
                ctx.reporter.emit(Event::Warning {
                    file: Some(shown(&dir)),
                    message: "cannot create lock files here (read-only share or no write \
                              permission), so its files are skipped; grant write access to \
                              convert them"
                        .into(),
                });
            }
            Err(FileOutcome::skipped(
                SkipReason::NotWritable,
                format!("{} is not writable", dir.display()),
            ))
        }
        Err(ClaimRefused::Failed(error)) => Err(FileOutcome::Abandoned(match for_file {
            None => error,
            Some(_) => format!("its new name {}: {error}", path.display()),
        })),
    }
}

/// How one file ended.
enum FileOutcome {
    Converted {
        after_bytes: u64,
        /// The encoder that finally produced it (after any fallback).
        encoder: String,
        seconds: f64,
        /// The new file's verified probe.
        output: Box<MediaInfo>,
    },
    /// Left alone: not worth it, not possible now, or another host's (it holds the file,
    /// or its history says so).
    Skipped(Skip),
    /// The file could not be converted: it counts towards the failure limit.
    Failed(String),
    /// The work was given up for reasons that are not the file's (a lost claim, a change
    /// under our feet): reported as a failure, but not held against the file.
    Abandoned(String),
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

/// Converts one file in three phases: claim it, encode and verify the new file, commit it
/// (swap it into place, release the claims). A phase either hands the next what it needs or
/// ends the file with its outcome.
fn convert_one(ctx: &Context<'_>, file: &MediaFile, info: &MediaInfo, plan: &Plan) -> FileOutcome {
    let one = OneFile {
        ctx,
        file,
        info,
        plan,
        started: Instant::now(),
    };
    one.convert().unwrap_or_else(|ended| ended)
}

/// What every phase of one file's conversion reads.
struct OneFile<'a> {
    ctx: &'a Context<'a>,
    file: &'a MediaFile,
    info: &'a MediaInfo,
    plan: &'a Plan,
    started: Instant,
}

/// The claims one conversion holds: the file's, and its new name's when the name changes.
struct Claims {
    file: Claim,
    output: Option<Claim>,
}

impl Claims {
    fn iter(&self) -> impl Iterator<Item = &Claim> {
        std::iter::once(&self.file).chain(&self.output)
    }

    /// Proves every claim is still ours right now (a fresh heartbeat, not the last one).
    fn confirm(&self) -> Result<(), String> {
        self.iter().try_for_each(Claim::confirm)
    }

    /// The outcome of a file that ended while claimed. A failure once a claim is gone is not
    /// the file's: whoever broke the lock also removed our temp output. It must not count
    /// towards the file's failure limit.
    fn judge(&self, ended: FileOutcome) -> FileOutcome {
        match ended {
            FileOutcome::Failed(error) if self.confirm().is_err() => FileOutcome::Abandoned(
                format!("lost the claim, then: {error}; not counted against the file"),
            ),
            other => other,
        }
    }

    /// Releases every claim, even after one fails; says what went wrong, if anything.
    fn release(self) -> Result<(), String> {
        let file = self.file.release();
        let output = self.output.map_or(Ok(()), Claim::release);
        file.and(output)
    }
}

/// A verified new file, not yet in place.
struct NewFile {
    temp: TempOutput,
    bytes: u64,
    encoded: encode::Encoded,
}

/// A new file in place of the original.
struct Placed {
    bytes: u64,
    encoded: encode::Encoded,
}

impl OneFile<'_> {
    fn convert(&self) -> Result<FileOutcome, FileOutcome> {
        let claims = self.claim()?;
        let placed = self
            .encode_and_verify(&claims)
            .and_then(|new_file| self.commit(&claims, new_file))
            .map_err(|ended| claims.judge(ended))?;
        Ok(self.converted(claims, placed))
    }

    // ---- claim ----

    /// Makes the file ours, and checks, now that it is, that it is still ours to convert.
    fn claim(&self) -> Result<Claims, FileOutcome> {
        let path = &self.file.path;
        let file = claim_name(self.ctx, path, None)?;
        // A new name (Movie.avi -> Movie.mkv) is claimed too: another host may be converting
        // Movie.mkv in place, or clip.mpg into the same clip.mkv, and no two conversions may
        // write one name.
        let output = if self.plan.output_path == *path {
            None
        } else {
            Some(claim_name(self.ctx, &self.plan.output_path, Some(path))?)
        };
        self.not_held_by_original()?;
        // Two files can become one name (demo.ogg and demo.ogv both demo.mkv): the first
        // took it.
        if let Some(Decision::Skip { reason, detail }) = decide::output_taken(path, self.plan) {
            return Err(FileOutcome::skipped(reason, detail));
        }
        self.unchanged_since_scan()?;
        self.no_kept_original_in_the_way()?;
        Ok(Claims { file, output })
    }

    /// The original mediabox tool, still at work beside this one, takes no part in our
    /// claims: its own lock next to the file keeps us away.
    fn not_held_by_original(&self) -> Result<(), FileOutcome> {
        let Some(hold) = crate::neighbours::held_by_original(&self.file.path, SystemTime::now())
        else {
            return Ok(());
        };
        if crate::neighbours::first_sighting() {
            self.ctx.reporter.emit(Event::Warning {
                file: None,
                message: crate::neighbours::at_work_message(&hold),
            });
        }
        Err(FileOutcome::skipped_for(
            SkipReason::Locked,
            format!(
                "held by the original mediabox tool ({})",
                hold.lock.display()
            ),
            hold.hostname.unwrap_or_else(|| "unknown".into()),
        ))
    }

    /// Now that the file is ours, is it still worth it? Another host may have converted it
    /// between our scan and our claim (the swap keeps the mtime, never the size), or learned
    /// that it is not worth it, or failed it out: one cache read is cheap next to a
    /// transcode.
    fn unchanged_since_scan(&self) -> Result<(), FileOutcome> {
        match crate::fresh::metadata(&self.file.path) {
            Ok(meta) if meta.len() == self.file.size => {}
            Ok(_) => {
                return Err(FileOutcome::skipped(
                    SkipReason::Changed,
                    "changed since the scan (converted by another host?); the next run looks \
                     again"
                        .into(),
                ));
            }
            Err(err) => {
                return Err(FileOutcome::Abandoned(format!(
                    "gone since the scan: {err}"
                )));
            }
        }
        match cache::history_now(self.file, self.ctx.config.retry_failed) {
            Some(history) => Err(FileOutcome::skipped_for(
                history.reason,
                history.detail,
                history.host,
            )),
            None => Ok(()),
        }
    }

    /// An original kept by an earlier conversion is never replaced, so a second
    /// `--keep-original` conversion of a file replaced since could not keep its own: say so
    /// before encoding, with nothing touched.
    fn no_kept_original_in_the_way(&self) -> Result<(), FileOutcome> {
        let kept = self.kept_name();
        if self.ctx.config.keep_original && fs::symlink_metadata(&kept).is_ok() {
            return Err(FileOutcome::Abandoned(format!(
                "{} already holds the original of an earlier conversion, and --keep-original \
                 never replaces it; move it elsewhere to convert this file again",
                kept.display()
            )));
        }
        Ok(())
    }

    // ---- encode and verify ----

    /// Encodes the file into a temp output beside it and verifies the result; a new file
    /// that is not smaller enough is discarded here.
    fn encode_and_verify(&self, claims: &Claims) -> Result<NewFile, FileOutcome> {
        let Context {
            tools,
            config,
            reporter,
            ..
        } = *self.ctx;
        let temp = TempOutput(self.file.path.with_file_name(lock::temp_output_name(
            self.file_name(),
            claims.file.lock_id(),
            self.plan.container.extension(),
        )));
        let hdr = self.hdr_metadata()?;
        let setup = self.encoder_setup()?;
        let room = temp.0.parent().unwrap_or(Path::new("."));
        if let Err(no_room) = space::check(room, self.file.size) {
            return Err(FileOutcome::skipped(
                SkipReason::NoSpace,
                no_room.to_string(),
            ));
        }
        let should_stop = || self.should_stop(claims);
        let attempt = encode::Attempt {
            tools,
            config,
            reporter,
            file: self.file,
            info: self.info,
            plan: self.plan,
            temp: &temp.0,
            hdr: hdr.as_ref(),
            should_stop: &should_stop,
            set_phase: &|phase| claims.file.set_phase(phase),
            set_progress: &|progress| claims.file.set_progress(progress),
        };
        let encoded = encode::encode_verified(&attempt, setup, config.fallback)?;
        let bytes = fs::metadata(&temp.0)
            .map_err(|err| FileOutcome::Failed(format!("reading {}: {err}", temp.0.display())))?
            .len();
        self.smaller_enough(bytes)?;
        if signal::interrupted() {
            return Err(FileOutcome::Interrupted);
        }
        Ok(NewFile {
            temp,
            bytes,
            encoded,
        })
    }

    /// The HDR metadata the encoder must carry over, for an HDR source.
    fn hdr_metadata(&self) -> Result<Option<HdrMetadata>, FileOutcome> {
        let Some(video) = self.info.main_video().filter(|v| v.is_hdr()) else {
            return Ok(None);
        };
        probe::hdr_metadata(&self.ctx.tools.ffprobe, &self.file.path, video.index)
            .map(Some)
            .map_err(|err| FileOutcome::Failed(format!("reading HDR metadata: {err}")))
    }

    fn encoder_setup(&self) -> Result<EncoderSetup, FileOutcome> {
        if self.plan.container == Container::Flac {
            // FLAC needs no video encoder, and no detection of one.
            return Ok(EncoderSetup::software());
        }
        self.ctx.encoders.for_video(self.ctx.reporter, self.info)
    }

    /// Why a running encode must stop now, if it must.
    fn should_stop(&self, claims: &Claims) -> Option<StopReason> {
        if signal::interrupted() {
            return Some(StopReason::Interrupted);
        }
        if claims.file.lost() {
            return Some(StopReason::LockLost);
        }
        let limits = &self.ctx.config.limits;
        if limits.stop_at_deadline && self.ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(StopReason::Deadline);
        }
        None
    }

    fn smaller_enough(&self, bytes: u64) -> Result<(), FileOutcome> {
        let (size, pct) = (self.file.size, self.plan.min_savings_pct);
        if bytes as f64 > size as f64 * (1.0 - pct / 100.0) {
            return Err(FileOutcome::skipped(
                SkipReason::NotSmaller,
                format!(
                    "the new file ({bytes} bytes) is not {pct}% smaller than the original \
                     ({size} bytes)"
                ),
            ));
        }
        Ok(())
    }

    // ---- commit ----

    /// Puts the new file in place of the original, each step only while the claims are
    /// still ours and the original is what was converted.
    fn commit(&self, claims: &Claims, new_file: NewFile) -> Result<Placed, FileOutcome> {
        let original_meta = self.self_fence(claims)?;
        swap::carry_over_metadata(&original_meta, &new_file.temp.0)
            .map_err(|err| FileOutcome::Failed(format!("copying mtime and permissions: {err}")))?;
        self.swap(claims, &new_file.temp.0)?;
        Ok(Placed {
            bytes: new_file.bytes,
            encoded: new_file.encoded,
        })
    }

    /// The claims must still be ours (a fresh heartbeat, not the last one), and the original
    /// exactly what was probed; otherwise someone else owns this file now, or changed it
    /// while we worked, and our output must not replace anything. The swap checks both again
    /// before each of its steps.
    fn self_fence(&self, claims: &Claims) -> Result<fs::Metadata, FileOutcome> {
        claims.confirm().map_err(|lost| {
            FileOutcome::Abandoned(format!(
                "lost the claim before the swap ({lost}); the new file was discarded"
            ))
        })?;
        original_unchanged(self.file)
            .map_err(|why| FileOutcome::Abandoned(format!("{why}; the new file was discarded")))
    }

    fn swap(&self, claims: &Claims, new_file: &Path) -> Result<(), FileOutcome> {
        let keep_original = self.ctx.config.keep_original;
        let kept = self.kept_name();
        let backup = self.file.path.with_file_name(lock::backup_name(
            self.file_name(),
            claims.file.lock_id(),
            &self.original_ext(),
        ));
        let stopped = std::cell::Cell::new(false);
        let swapped = swap::swap(
            &Swap {
                original: &self.file.path,
                new_file,
                destination: &self.plan.output_path,
                backup: &backup,
                keep_as: keep_original.then_some(kept.as_path()),
            },
            &mut |phase| {
                let text = phase.text(keep_original);
                let checked = swap_step_allowed(phase, &text, self.file, claims);
                stopped.set(checked.is_err());
                checked
            },
        );
        swapped.map_err(|err| {
            // Stopped by a check: the claim or the original changed under us, not the
            // file's fault.
            if stopped.get() {
                FileOutcome::Abandoned(format!("the swap stopped: {err}"))
            } else {
                FileOutcome::Failed(format!("replacing the original: {err}"))
            }
        })
    }

    /// Releases the claims of a converted file and reports it.
    fn converted(&self, claims: Claims, placed: Placed) -> FileOutcome {
        let reporter = self.ctx.reporter;
        if let Err(err) = claims.release() {
            reporter.emit(Event::Warning {
                file: Some(shown(&self.file.path)),
                message: format!(
                    "converted, but its lock could not be released ({err}); \
                     `media-converter locks clean` removes it"
                ),
            });
        }
        let seconds = self.started.elapsed().as_secs_f64();
        reporter.emit(Event::Converted {
            file: shown(&self.file.path),
            output: shown(&self.plan.output_path),
            before_bytes: self.file.size,
            after_bytes: placed.bytes,
            seconds,
            encoder: placed.encoded.encoder.clone(),
            fallback: placed.encoded.fallback,
            dropped: placed.encoded.dropped,
        });
        FileOutcome::Converted {
            after_bytes: placed.bytes,
            encoder: placed.encoded.encoder,
            seconds,
            output: Box::new(placed.encoded.output),
        }
    }

    // ---- names ----

    fn file_name(&self) -> &std::ffi::OsStr {
        self.file.path.file_name().unwrap_or_default()
    }

    fn original_ext(&self) -> String {
        self.file
            .path
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Where `--keep-original` keeps the original.
    fn kept_name(&self) -> PathBuf {
        self.file.path.with_file_name(lock::kept_original_name(
            self.file_name(),
            &self.original_ext(),
        ))
    }
}

/// Before each step of the swap: the step durably in every claim's record (a fresh
/// heartbeat, which proves the claim is still ours), and, while the original is still at its
/// name, the original unchanged.
fn swap_step_allowed(
    phase: SwapPhase,
    text: &str,
    file: &MediaFile,
    claims: &Claims,
) -> Result<(), String> {
    for claimed in claims.iter() {
        claimed
            .set_phase_durably(text)
            .map_err(|lost| format!("lost the claim ({lost})"))?;
    }
    match phase {
        SwapPhase::BackingUp
        | SwapPhase::Replacing
        | SwapPhase::OriginalAtBackup
        | SwapPhase::Placing => original_unchanged(file).map(drop),
        SwapPhase::Done => Ok(()),
    }
}

/// The original as the file server has it now, if it is still the file that was scanned and
/// converted (same size, same mtime).
fn original_unchanged(file: &MediaFile) -> Result<fs::Metadata, String> {
    let meta = crate::fresh::metadata(&file.path)
        .map_err(|err| format!("the original vanished during conversion: {err}"))?;
    if meta.len() != file.size || meta.modified().ok() != Some(file.modified) {
        return Err("the original changed during conversion".into());
    }
    Ok(meta)
}

fn main_codec(info: &MediaInfo) -> String {
    info.main_video()
        .or_else(|| info.main_audio())
        .map_or_else(|| "none".into(), |s| s.codec.clone())
}

fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Why a file is left alone, and the host whose lock or history says so, if another's.
struct Skip {
    reason: SkipReason,
    detail: String,
    host: Option<String>,
}

impl Skip {
    fn here(reason: SkipReason, detail: String) -> Skip {
        Skip {
            reason,
            detail,
            host: None,
        }
    }
}

impl FileOutcome {
    /// Skipped for a reason of this host's.
    fn skipped(reason: SkipReason, detail: String) -> FileOutcome {
        FileOutcome::Skipped(Skip::here(reason, detail))
    }

    /// Skipped because of `host`: it holds the file, or its history says so.
    fn skipped_for(reason: SkipReason, detail: String, host: String) -> FileOutcome {
        FileOutcome::Skipped(Skip {
            reason,
            detail,
            host: Some(host),
        })
    }
}

/// Counts and reports a skipped file: a `skipped` event, or a plan line in a dry run.
fn skipped(
    reporter: &Reporter,
    summary: &mut Summary,
    config: &ConvertConfig,
    file: &MediaFile,
    codec: &str,
    skip: Skip,
) {
    summary.skipped += 1;
    let Skip {
        reason,
        detail,
        host,
    } = skip;
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
            host,
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
