//! `media-converter --dir DIR` / `--file FILE`: scan, decide, claim, transcode, verify,
//! swap, record, release.

mod encode;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use compact_str::CompactString;

use crate::cache::{self, FactsSource, Recorder, TooLarge};
use crate::claim::{Claim, ClaimRefused, Claimer};
use crate::config::{ConvertConfig, MediaType, Target};
use crate::decide::{self, Container, Decision, Plan, Rules, SkipReason, SourceVideo};
use crate::encoder::EncoderSetup;
use crate::exit_codes::ExitCode;
use crate::identity::HostIdentity;
use crate::lock::{self, Locker};
use crate::output::{Event, Fallback, PlannedAction, Reporter, Summary};
use crate::probe::{self, HdrMetadata, MediaInfo};
use crate::process::Tools;
use crate::quality::{self, Achieved, Score};
use crate::scan::{self, MediaFile, WalkOrder};
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
    if let Some(target) = config.quality_target.filter(|_| !config.dry_run) {
        if target.metric == quality::Metric::Vmaf && !quality::has_libvmaf(&tools.ffmpeg) {
            bail!(quality::no_libvmaf_message(&tools.ffmpeg));
        }
    }
    let _presence = crate::presence::publish(config, reporter);
    let rules = Rules {
        min_age: config.min_age,
        min_savings_pct: config.min_savings_pct,
        allow_dv_loss: config.allow_dv_loss,
        allow: config.allow,
        now: library_now(config, reporter),
    };

    let recorder = Mutex::new(Recorder::new());
    let host = HostIdentity::current();
    let order = if config.dry_run {
        // A plan reads the same on every host.
        WalkOrder::Name
    } else {
        // Hosts starting together on a cold library begin in different places.
        WalkOrder::of_host(&host.host_id)
    };
    let options = survey::Options {
        ffprobe: &tools.ffprobe,
        rules: &rules,
        probe_jobs: config.probe_jobs,
        retry_failed: config.retry_failed,
        record_failures: !config.dry_run,
        native_headers: true,
        order,
    };
    let judge = Judge {
        rules: &rules,
        config,
        reporter,
    };
    let claimer = Claimer::new(Locker::new(host, config.lock));
    if let (Target::Dir(dir), false) = (&config.target, config.dry_run) {
        // Before the scan: an original that a crashed swap left at its backup name is back
        // at its own in time to be seen, and a kept original reaches its kept name.
        for action in lock::settle_dead_claims(dir, claimer.locker()) {
            reporter.note(&format!("settled a dead claim: {action}"));
        }
    }
    if config.dry_run {
        return plan(config, reporter, &options, &judge, recorder, started);
    }

    let encoders = encode::Encoders::new(&tools, config);
    let ctx = Context {
        claimer: &claimer,
        rules: &rules,
        tools: &tools,
        encoders: &encoders,
        config,
        reporter,
        deadline: unattended::Deadline::new(&config.limits, Instant::now(), &chrono::Local::now()),
    };
    // Conversions start as soon as the survey finds the first candidate, while it goes on.
    let candidates = Candidates::new(config, order, reporter);
    let mut summary = Summary::default();
    reporter.start_overall(0, 0);
    let (surveyed, stopped) = std::thread::scope(|scope| {
        // The encoder trials run once the survey finds a file that needs a video encoder,
        // beside the survey and that file's claim: a run with nothing to encode (an
        // audio-only run, a library already converted) starts no trial at all.
        if config.media_type != MediaType::Audio {
            scope.spawn(|| {
                if candidates.video_wanted() {
                    encoders.prefetch(reporter);
                }
            });
        }
        let surveying = scope.spawn(|| {
            let _closing = candidates.closing();
            let mut found = Summary::default();
            with_target_files(config, order, reporter, |groups| {
                let walked = std::iter::from_fn(|| {
                    candidates.walked();
                    None
                });
                survey::survey(
                    groups.chain(walked),
                    &options,
                    &recorder,
                    reporter,
                    |file, known| {
                        // Estimated from what this library's caches have seen so far.
                        let mut calibrated = |mut c: Candidate| {
                            let calibration = lock_ignoring_poison(&recorder);
                            decide::calibrate(&mut c.plan, c.file.size, calibration.calibration());
                            drop(calibration);
                            candidates.add(c);
                        };
                        judge.known(&mut found, &mut calibrated, file, known)
                    },
                )
            })
            .map(|_| found)
        });
        let stopped = convert_all(&ctx, &candidates, &mut summary, &recorder);
        let surveyed = surveying
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (surveyed, stopped)
    });
    let found = surveyed?;
    summary.skipped += found.skipped;
    summary.failed += found.failed;
    if let Some(reason) = stopped {
        let left = candidates.left();
        reporter.note(&format!("{reason}: {left} file(s) left for a later run"));
    }
    let mut recorder = recorder
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
    Ok(finish(reporter, summary, started))
}

/// `--dry-run`: the whole survey, then the plan, sorted by `--order`.
fn plan(
    config: &ConvertConfig,
    reporter: &Reporter,
    options: &survey::Options<'_>,
    judge: &Judge<'_>,
    recorder: Mutex<Recorder>,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let mut summary = Summary::default();
    // A dry run keeps only what its plan lines need: a warm survey of a huge library must not
    // hold every file's stream list.
    let mut candidates: Vec<Planned> = Vec::new();
    with_target_files(config, options.order, reporter, |groups| {
        survey::survey(groups, options, &recorder, reporter, |file, known| {
            let mut keep = |c: Candidate| candidates.push(Planned::from(c));
            judge.known(&mut summary, &mut keep, file, known)
        })
    })?;
    let mut recorder = recorder
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    for c in &mut candidates {
        let calibration = recorder.calibration();
        decide::calibrate_estimate(
            &mut c.estimated_bytes,
            c.source.as_ref(),
            c.file.size,
            calibration,
        );
    }
    decide::sort_by_order(&mut candidates, config.order, |c| c.order_key());
    crate::priority::to_front(&config.target, &mut candidates, |c| &c.file.path);
    let mut estimate = 0;
    let mut partial = 0;
    // A quality search this content already had predicts its size and score.
    let mut searches = quality::KnownSearches::default();
    for Planned {
        file,
        codec,
        facts,
        estimated_bytes,
        container,
        crop_to,
        ..
    } in &candidates
    {
        summary.converted += 1;
        let searched = config
            .quality_target
            .and_then(|target| searches.lookup(file, target, &config.encode.preset));
        let (estimated_bytes, predicted_score) = match searched {
            Some(s) if s.quality.is_some() => (s.predicted_bytes, Some(s.predicted_score)),
            _ => (*estimated_bytes, None),
        };
        estimate += file.size.saturating_sub(estimated_bytes);
        let mut detail = decide::describe(*container, *crop_to);
        if let Some(from) = partial_facts(*facts) {
            partial += 1;
            detail +=
                &format!(" (planned from {from}; ffprobe reads it whole before it is converted)");
        }
        reporter.emit(Event::Planned {
            file: shown(&file.path),
            codec: codec.clone(),
            action: PlannedAction::Convert,
            reason: None,
            detail,
            size_bytes: file.size,
            estimated_bytes,
            predicted_score,
        });
    }
    if partial > 0 {
        reporter.note(&format!(
            "{partial} of the {} files to convert were planned without ffprobe, from the \
             original tool's cache: a run has ffprobe read each one whole once it claims it, \
             and still skips it if ffprobe finds what that cache does not say (Dolby Vision, \
             closed captions inside the video, an audio track with no sample rate)",
            candidates.len()
        ));
    }
    summary.estimated_saving_bytes = Some(estimate);
    survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
    Ok(finish(reporter, summary, started))
}

/// Turns what the survey learns of each file into a skip, a failure or a candidate.
struct Judge<'a> {
    rules: &'a Rules,
    config: &'a ConvertConfig,
    reporter: &'a Reporter,
}

impl Judge<'_> {
    fn known(
        &self,
        summary: &mut Summary,
        keep: &mut dyn FnMut(Candidate),
        file: &MediaFile,
        known: Known<'_>,
    ) -> Next {
        let Judge {
            rules,
            config,
            reporter,
        } = *self;
        match known {
            Known::Facts { info, source } => match decide::decide(file, info, rules) {
                Decision::Skip { reason, detail } => {
                    let codec = main_codec(info);
                    let skip = Skip::here(reason, detail);
                    skipped(reporter, summary, config, file, &codec, skip);
                    Next::Done
                }
                // A plan shows every skip ffprobe would find (captions inside the video, a
                // damaged audio track), which the headers do not: a dry run has ffprobe read
                // every file it would convert.
                Decision::Convert(_) if config.dry_run && source == FactsSource::Headers => {
                    Next::ProbeFully
                }
                // Otherwise facts other than ffprobe's decide here too (a file the headers
                // show worth converting is a candidate at once); the worker that claims it
                // has ffprobe read it whole, and decides again, before anything is encoded.
                Decision::Convert(plan) => {
                    // A dry run shows a file the original holds as the run would leave it.
                    let held = config
                        .dry_run
                        .then(|| original_skip(&file.path, file.listing.as_deref(), reporter));
                    if let Some((host, detail)) = held.flatten() {
                        let skip = Skip {
                            host: Some(host),
                            ..Skip::here(SkipReason::Locked, detail)
                        };
                        skipped(reporter, summary, config, file, &main_codec(info), skip);
                        return Next::Done;
                    }
                    keep(Candidate {
                        file: file.clone(),
                        info: (!config.dry_run).then(|| info.clone()),
                        facts: source,
                        codec: main_codec(info),
                        plan,
                    });
                    Next::Done
                }
            },
            Known::Skip {
                reason,
                detail,
                host,
            } => {
                let skip = Skip {
                    host,
                    ..Skip::here(reason, detail)
                };
                skipped(reporter, summary, config, file, "?", skip);
                Next::Done
            }
            Known::Unreadable { error } => {
                failed(reporter, summary, &file.path, error);
                Next::Done
            }
        }
    }
}

/// How long workers wait for the walk to be over before they choose: on a warm library the
/// whole walk and every cache's answer take well under this, and the first choice is then
/// among all the library's candidates; a slow walk (a huge library on a NAS) keeps no one
/// waiting longer.
const WALK_GRACE: Duration = Duration::from_secs(2);

/// The candidates the survey has found and no worker has taken yet. Workers take the first
/// by the priority file, then `--order`, among those known at that moment.
struct Candidates<'a> {
    config: &'a ConvertConfig,
    /// This host's order among files `--order` finds equal.
    ties: WalkOrder,
    reporter: &'a Reporter,
    state: Mutex<Found>,
    ready: Condvar,
    created: Instant,
}

struct Found {
    waiting: Vec<Candidate>,
    /// Every candidate found so far, taken or not.
    total: u64,
    surveying: bool,
    /// The walk is over, and every file the caches know has been judged.
    walked: bool,
    /// A candidate found so far needs a video encoder.
    video: bool,
}

/// Ends the survey's part in [`Candidates`] when dropped, however the survey ends.
struct Closing<'c, 'a>(&'c Candidates<'a>);

impl Drop for Closing<'_, '_> {
    fn drop(&mut self) {
        lock_ignoring_poison(&self.0.state).surveying = false;
        self.0.ready.notify_all();
    }
}

impl<'a> Candidates<'a> {
    fn new(config: &'a ConvertConfig, ties: WalkOrder, reporter: &'a Reporter) -> Candidates<'a> {
        Candidates {
            config,
            ties,
            reporter,
            state: Mutex::new(Found {
                waiting: Vec::new(),
                total: 0,
                surveying: true,
                walked: false,
                video: false,
            }),
            ready: Condvar::new(),
            created: Instant::now(),
        }
    }

    /// The walk is over: what remains of the survey are probes.
    fn walked(&self) {
        lock_ignoring_poison(&self.state).walked = true;
        self.ready.notify_all();
    }

    /// The survey is going on until the returned guard is dropped.
    fn closing(&self) -> Closing<'_, 'a> {
        Closing(self)
    }

    fn add(&self, candidate: Candidate) {
        self.reporter.grow_overall(candidate.file.size);
        let mut found = lock_ignoring_poison(&self.state);
        let first_video = !found.video && candidate.plan.container != Container::Flac;
        found.video |= first_video;
        found.waiting.push(candidate);
        found.total += 1;
        if first_video {
            // The encoder detection waits for this one too.
            self.ready.notify_all();
        } else {
            self.ready.notify_one();
        }
    }

    /// Waits until the survey finds a candidate that needs a video encoder (`true`), or ends
    /// without one (`false`).
    fn video_wanted(&self) -> bool {
        let mut found = lock_ignoring_poison(&self.state);
        loop {
            if found.video {
                return true;
            }
            if !found.surveying || signal::interrupted() {
                return false;
            }
            found = self
                .ready
                .wait_timeout(found, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A candidate taken and then not started goes back for a later taker.
    fn put_back(&self, candidate: Candidate) {
        lock_ignoring_poison(&self.state).waiting.push(candidate);
        self.ready.notify_one();
    }

    /// The first candidate known now, waiting for the survey to find one; `None` once the
    /// survey is over and all are taken, or as soon as `give_up` says so.
    fn next(&self, give_up: &dyn Fn() -> bool) -> Option<Candidate> {
        loop {
            if give_up() {
                return None;
            }
            {
                let found = lock_ignoring_poison(&self.state);
                let choose =
                    found.walked || !found.surveying || self.created.elapsed() >= WALK_GRACE;
                if found.waiting.is_empty() && !found.surveying {
                    return None;
                }
                if found.waiting.is_empty() || !choose {
                    drop(
                        self.ready
                            .wait_timeout(found, Duration::from_millis(50))
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                    continue;
                }
            }
            // Read before each choice, outside the lock: a file put first from the dashboard
            // goes next.
            let ranks = crate::priority::Ranks::read(&self.config.target);
            let order = self.config.order;
            let mut found = lock_ignoring_poison(&self.state);
            let first = found
                .waiting
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    ranks
                        .rank(&a.file.path)
                        .cmp(&ranks.rank(&b.file.path))
                        .then_with(|| {
                            let (a, b) = ((&a.file, &a.plan), (&b.file, &b.plan));
                            decide::compare_spread(order, self.ties, a, b)
                        })
                })
                .map(|(index, _)| index);
            // Another worker may have taken the last one meanwhile.
            if let Some(index) = first {
                return Some(found.waiting.swap_remove(index));
            }
        }
    }

    /// Candidates found and not converted.
    fn left(&self) -> usize {
        lock_ignoring_poison(&self.state).waiting.len()
    }

    /// Candidates found so far.
    fn total(&self) -> u64 {
        lock_ignoring_poison(&self.state).total
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    deadline: unattended::Deadline,
    claimer: &'a Claimer,
    /// What a file ffprobe reads after its claim is decided by again.
    rules: &'a Rules,
}

/// A file to convert, as the survey found it.
struct Candidate {
    /// The scan's view of it.
    file: MediaFile,
    /// The facts it was judged on (none in a dry run, which keeps only its plan lines).
    info: Option<MediaInfo>,
    /// Where they came from: facts other than ffprobe's (its headers, the original tool's
    /// cache) are completed by ffprobe once the file is claimed.
    facts: FactsSource,
    /// Its main codec, for the events.
    codec: CompactString,
    plan: Plan,
}

/// A file a dry run would convert: what its plan line shows and sorts by. Not a
/// [`Candidate`]: 70,000 of them are held until the plan is sorted, so no room for facts
/// a dry run does not keep, no output path, which its lines do not show, and no hold on its
/// directory's listing, which the judging needed and the plan does not.
struct Planned {
    file: MediaFile,
    codec: CompactString,
    facts: FactsSource,
    /// The plan's, calibrated once the survey is over by its source's video.
    estimated_bytes: u64,
    source: Option<SourceVideo>,
    container: Container,
    crop_to: Option<(u32, u32)>,
}

impl Planned {
    fn order_key(&self) -> decide::OrderKey<'_> {
        decide::OrderKey {
            path: &self.file.path,
            size: self.file.size,
            modified: self.file.modified,
            estimated_bytes: self.estimated_bytes,
        }
    }
}

impl From<Candidate> for Planned {
    fn from(candidate: Candidate) -> Planned {
        let Candidate {
            file,
            info: _,
            facts,
            codec,
            plan,
        } = candidate;
        Planned {
            file: MediaFile {
                listing: None,
                ..file
            },
            codec,
            facts,
            estimated_bytes: plan.estimated_bytes,
            source: plan.source,
            container: plan.container,
            crop_to: plan.crop_to,
        }
    }
}

impl Candidate {
    /// Whether ffprobe must describe it before it is encoded.
    fn needs_ffprobe(&self) -> bool {
        self.facts != FactsSource::Ffprobe
    }
}

/// Converts the candidates, `--jobs` at a time, as the survey finds them, until it is done
/// or a limit says stop (then returns why). Workers convert; this thread alone accounts for
/// outcomes and writes them to the cache, at once, so other hosts learn them before they
/// pick their next file.
fn convert_all(
    ctx: &Context<'_>,
    candidates: &Candidates<'_>,
    summary: &mut Summary,
    recorder: &Mutex<Recorder>,
) -> Option<String> {
    let gate = StartGate::new(ctx);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..ctx.config.jobs {
            let done_tx = done_tx.clone();
            let gate = &gate;
            scope.spawn(move || {
                let give_up = || signal::interrupted() || gate.stopped_because().is_some();
                while let Some(candidate) = candidates.next(&give_up) {
                    if !gate.may_start() {
                        candidates.put_back(candidate);
                        break;
                    }
                    let finished = convert_one(ctx, candidate);
                    // `--max-files` counts conversions: one that ended at its claim frees
                    // its count.
                    gate.ended(finished.nothing_started);
                    if done_tx.send(finished).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for (done, finished) in done_rx.into_iter().enumerate() {
            let Finished {
                file,
                codec,
                plan,
                outcome,
                probed,
                ..
            } = finished;
            let mut recorder = lock_ignoring_poison(recorder);
            if let Some(info) = probed {
                // Before the outcome: a conversion's record replaces the file's entry.
                recorder.facts(&file, info, FactsSource::Ffprobe);
            }
            record(ctx, summary, &mut recorder, &file, &codec, &plan, outcome);
            let dir = cache::dir_of(&file.path);
            let warnings = recorder.flush(&dir, cache::WRITE_PATIENCE);
            drop(recorder);
            survey::report_warnings(ctx.reporter, warnings);
            let found = candidates.total();
            ctx.reporter.file_done(done as u64 + 1, found, file.size);
        }
    });
    gate.stopped_because()
}

/// How one candidate ended, for the thread that accounts for outcomes.
struct Finished {
    file: MediaFile,
    codec: CompactString,
    plan: Plan,
    outcome: FileOutcome,
    /// ffprobe's facts, when the worker had ffprobe read the file after claiming it: they
    /// go into the cache, for the fleet and the next run.
    probed: Option<MediaInfo>,
    /// Ended before anything was started: another host holds it or its new name, or had
    /// converted it already; its new name was taken since the survey; or ffprobe's facts
    /// decided a skip that the survey's could not see.
    nothing_started: bool,
}

impl Finished {
    fn new(candidate: Candidate, outcome: FileOutcome) -> Finished {
        Finished {
            file: candidate.file,
            codec: candidate.codec,
            plan: candidate.plan,
            outcome,
            probed: None,
            nothing_started: false,
        }
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
            fallback,
            seconds,
            output,
            score,
        } => {
            summary.converted += 1;
            summary.before_bytes += file.size;
            summary.after_bytes += after_bytes;
            summary.saved_bytes += file.size.saturating_sub(after_bytes);
            crate::presence::converted(file.size.saturating_sub(after_bytes), &encoder);
            let made = cache::Made {
                output: &plan.output_path,
                after_bytes,
                encoder: &encoder,
                fallback: fallback.map(|f| *f),
                seconds,
                source: plan.source.clone(),
                score,
            };
            recorder.converted(file, made);
            // The swap carried the original's mtime over, so this is the fingerprint the next
            // scan sees, and it needs no ffprobe.
            let new_file = MediaFile {
                path: plan.output_path.clone(),
                size: after_bytes,
                listing: None,
                ..file.clone()
            };
            recorder.facts(&new_file, *output, FactsSource::Ffprobe);
        }
        FileOutcome::Skipped(skip) => {
            // Only this host's own finding: another host's history is not ours to repeat.
            let not_worth_it = matches!(
                skip.reason,
                SkipReason::NotSmaller | SkipReason::PredictedNotSmaller
            );
            if not_worth_it && skip.host.is_none() {
                recorder.not_smaller(file, &skip.detail, skip.too_large);
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
    counts: Mutex<Counts>,
    /// Signalled when a counted file ends: a worker held at `--max-files` looks again.
    file_ended: Condvar,
    stopped: Mutex<Option<String>>,
}

/// The files [`StartGate`] let start.
#[derive(Default)]
struct Counts {
    /// Conversions started, or maybe started: what `--max-files` counts.
    started: u64,
    /// Let start and not ended yet: any may still end at its claim, and then not count.
    in_flight: u64,
}

/// What `--max-files` says to one more file.
enum Limit {
    Taken,
    Reached,
    /// At the limit, with files in flight: wait for one to end, then ask again.
    Wait,
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
            counts: Mutex::new(Counts::default()),
            file_ended: Condvar::new(),
            stopped: Mutex::new(None),
        }
    }

    /// Whether one more file may start; counts it when it may. At `--max-files` while files
    /// counted are in flight, waits for them: one that ends at its claim frees its count.
    fn may_start(&self) -> bool {
        loop {
            if signal::interrupted() || self.stopped_because().is_some() {
                return false;
            }
            if let Some(may) = self.may_start_now() {
                return may;
            }
        }
    }

    /// [`StartGate::may_start`] as things are now; `None` after waiting for a file to end.
    fn may_start_now(&self) -> Option<bool> {
        let reason = if let Some((file, info)) = unattended::find_pause(&self.pause_root) {
            Some(format!(
                "paused by {} since {} ({}); `media-converter resume` lifts it",
                info.host,
                info.since,
                file.display()
            ))
        } else if self.ctx.deadline.passed(Instant::now()) {
            Some("deadline reached".to_string())
        } else {
            match self.take_one() {
                Limit::Taken => None,
                Limit::Reached => Some(format!(
                    "--max-files {} reached",
                    self.ctx.config.limits.max_files.unwrap_or(0)
                )),
                Limit::Wait => return None,
            }
        };
        Some(match reason {
            None => {
                self.ctx.deadline.work_starts(Instant::now());
                true
            }
            Some(reason) => {
                if let Ok(mut stopped) = self.stopped.lock() {
                    stopped.get_or_insert(reason);
                }
                false
            }
        })
    }

    /// Counts one more file under `--max-files`; at the limit with files in flight, waits
    /// (a while at most, so that Ctrl-C and a pause are seen) for one to end.
    fn take_one(&self) -> Limit {
        let limit = self.ctx.config.limits.max_files;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if limit.is_none_or(|max| counts.started < max) {
            counts.started += 1;
            counts.in_flight += 1;
            return Limit::Taken;
        }
        if counts.in_flight == 0 {
            return Limit::Reached;
        }
        let _ = self
            .file_ended
            .wait_timeout(counts, Duration::from_millis(500));
        Limit::Wait
    }

    /// A file counted by [`StartGate::may_start`] ended; with `nothing_started` (it ended at
    /// its claim) it no longer counts.
    fn ended(&self, nothing_started: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.in_flight = counts.in_flight.saturating_sub(1);
        if nothing_started {
            counts.started = counts.started.saturating_sub(1);
        }
        drop(counts);
        self.file_ended.notify_all();
    }

    fn stopped_because(&self) -> Option<String> {
        self.stopped.lock().ok().and_then(|s| s.clone())
    }
}

/// Hands the run's files, of the requested type, to `consume` directory by directory: a
/// `--dir` is walked in the background meanwhile; a `--file` is one directory of one file.
fn with_target_files<R>(
    config: &ConvertConfig,
    order: WalkOrder,
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
            Ok(survey::walk_library_in(
                order,
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
        /// The hardware encode redone with libx265 first, if one was.
        fallback: Option<Box<Fallback>>,
        seconds: f64,
        /// The new file's verified probe.
        output: Box<MediaInfo>,
        /// Its score against the original (`--target-*` runs).
        score: Option<Score>,
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

/// Converts one file: claims it; where the survey judged it on facts that were not
/// ffprobe's, has ffprobe read it whole and decides again; then encodes and verifies the new
/// file and commits it (swaps it into place, releases the claims). A phase either hands the
/// next what it needs or ends the file with its outcome.
fn convert_one(ctx: &Context<'_>, candidate: Candidate) -> Finished {
    let started = Instant::now();
    let file = &candidate.file;
    // A file whose size already says another host converted it since the survey is not
    // claimed: a claim costs a lock written and synced, a heartbeat and two presence
    // updates, and near the end of a fleet's run most candidates left are such files.
    if let Some(changed) = changed_at_a_glance(file) {
        return Finished {
            nothing_started: true,
            ..Finished::new(candidate, changed)
        };
    }
    // Claimed first: the host that claims a candidate is the one that probes it, so the
    // fleet probes each file once.
    let (claim, original) = match claim_name(ctx, &file.path, None).and_then(|claim| {
        unchanged_since_scan(ctx, file, &candidate.plan.output_path)
            .map(|original| (claim, original))
    }) {
        Ok(claimed) => claimed,
        // Held by another host, or changed since the survey: nothing was started.
        Err(ended) => {
            return Finished {
                nothing_started: true,
                ..Finished::new(candidate, ended)
            };
        }
    };
    let (info, plan, probed) = match (candidate.needs_ffprobe(), &candidate.info) {
        (false, Some(info)) => (info.clone(), candidate.plan.clone(), None),
        // Only a dry run drops the facts, and it converts nothing; ffprobe reads them again.
        _ => {
            claim.set_phase("probing");
            match described(ctx, file, &candidate.plan) {
                Described::Convert(info, plan) => (*info.clone(), plan, Some(*info)),
                Described::Skip(info, skip) => {
                    drop(claim);
                    let mut finished = Finished::new(candidate, FileOutcome::Skipped(skip));
                    finished.codec = main_codec(&info);
                    finished.probed = Some(*info);
                    finished.nothing_started = true;
                    return finished;
                }
                Described::Ended(ended) => return Finished::new(candidate, ended),
            }
        }
    };
    let one = OneFile {
        ctx,
        file,
        info: &info,
        plan: &plan,
        started,
    };
    let (outcome, nothing_started) = match one.claim(claim, original) {
        Ok(claims) => (one.convert(claims).unwrap_or_else(|ended| ended), false),
        // Its new name held or taken, the original tool's lock beside it: nothing was
        // started.
        Err(ended) => (ended, true),
    };
    Finished {
        codec: main_codec(&info),
        probed,
        outcome,
        plan,
        nothing_started,
        ..Finished::new(candidate, FileOutcome::Interrupted)
    }
}

/// What ffprobe makes of a claimed file.
enum Described {
    /// Still worth converting: its full facts and the plan they give.
    Convert(Box<MediaInfo>, Plan),
    /// A skip the survey's facts could not show (closed captions inside the video, an audio
    /// track with no sample rate).
    Skip(Box<MediaInfo>, Skip),
    /// ffprobe could not read it.
    Ended(FileOutcome),
}

/// Has ffprobe read a claimed file whole and decides again on what it says, before anything
/// is planned for the encode: the survey may have judged it on its headers, which decide
/// fast but are not all that ffprobe sees.
fn described(ctx: &Context<'_>, file: &MediaFile, surveyed: &Plan) -> Described {
    let info = match probe::probe(&ctx.tools.ffprobe, &file.path) {
        Ok(info) => Box::new(info),
        // ffprobe ran and could not read the file: the file's failure. One that could not
        // start says nothing about the file.
        Err(err) if err.0.status.is_some() => {
            return Described::Ended(FileOutcome::Failed(err.to_string()));
        }
        Err(err) => return Described::Ended(FileOutcome::Abandoned(err.to_string())),
    };
    match decide::decide(file, &info, ctx.rules) {
        Decision::Convert(mut plan) => {
            // Calibrated by the survey from the library's history; the order went by it.
            plan.estimated_bytes = surveyed.estimated_bytes;
            Described::Convert(info, plan)
        }
        Decision::Skip { reason, detail } => Described::Skip(info, Skip::here(reason, detail)),
    }
}

/// Now that the file is ours, is it still worth it? Another host may have converted it
/// between our scan and our claim (the swap keeps the mtime, never the size), or learned
/// that it is not worth it, or failed it out: one cache read is cheap next to a transcode.
/// Returns the original as the file server has it now, which the swap must find unchanged:
/// not the scan's view, which a network client may have answered from its cache (sshfs
/// keeps attributes 20 s), so that a stale mtime there never fails a file as changed during
/// its conversion.
fn unchanged_since_scan(
    ctx: &Context<'_>,
    file: &MediaFile,
    new_name: &Path,
) -> Result<Original, FileOutcome> {
    let original = match crate::fresh::metadata(&file.path) {
        Ok(meta) if meta.len() == file.size => Original::of(&meta),
        Ok(_) => return Err(changed_since_scan()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(gone_since_scan(file, new_name));
        }
        Err(err) => {
            return Err(FileOutcome::Abandoned(format!(
                "cannot read it since the scan: {err}"
            )));
        }
    };
    let config = ctx.config;
    match cache::history_now(file, config.retry_failed, config.min_savings_pct) {
        Some(history) => Err(FileOutcome::skipped_for(
            history.reason,
            history.detail,
            history.host,
        )),
        None => Ok(original),
    }
}

/// The file's size as this host sees it now, without a claim, differs from the survey's:
/// it changed since (a conversion keeps the mtime, never the size). A size that looks the
/// same proves nothing (a network client may answer from its attribute cache): the claim
/// reads it fresh.
fn changed_at_a_glance(file: &MediaFile) -> Option<FileOutcome> {
    let meta = fs::metadata(&file.path).ok()?;
    (meta.len() != file.size).then(changed_since_scan)
}

/// The file is gone since the survey: most often another host converted it under its new
/// name (`Movie.avi` -> `Movie.mkv`) meanwhile, else it was moved or deleted. Neither is a
/// failure, of ours or of the file's: a skip that says which, and the next run looks again.
fn gone_since_scan(file: &MediaFile, new_name: &Path) -> FileOutcome {
    if new_name != file.path {
        if let Some(host) = converted_into(file, new_name) {
            return FileOutcome::skipped_for(
                SkipReason::Changed,
                format!(
                    "converted by {host} into {} since the scan",
                    new_name.display()
                ),
                host,
            );
        }
        if fs::metadata(new_name).is_ok() {
            return FileOutcome::skipped(
                SkipReason::Changed,
                format!(
                    "gone since the scan, and {} is there now (converted by another host?); \
                     the next run looks again",
                    new_name.display()
                ),
            );
        }
    }
    FileOutcome::skipped(
        SkipReason::Changed,
        "gone since the scan (moved or deleted?); the next run looks again".into(),
    )
}

/// The host that, by the cache, converted `file` into `new_name`.
fn converted_into(file: &MediaFile, new_name: &Path) -> Option<String> {
    let original = file.path.file_name().and_then(cache::key_of)?;
    let output = new_name.file_name().and_then(cache::key_of)?;
    let loaded = cache::DirCache::load(&cache::dir_of(new_name));
    let converted = loaded.cache.get(&output)?.converted.as_ref()?;
    (converted.from.as_deref() == Some(&*original)).then(|| converted.host.clone())
}

fn changed_since_scan() -> FileOutcome {
    FileOutcome::skipped(
        SkipReason::Changed,
        "changed since the scan (converted by another host?); the next run looks again".into(),
    )
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
    /// The original as the file server had it once claimed: what the encode reads, and what
    /// the swap must still find.
    original: Original,
    /// Set by a swap that failed with the original at its backup name only: the locks stay,
    /// as a crash would leave them, for whoever settles dead claims to finish the swap.
    settle_later: std::cell::Cell<bool>,
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

    /// Leaves every lock where it is, heartbeats stopped (see `settle_later`).
    fn leave_for_settling(self) {
        self.file.leave_for_settling();
        if let Some(output) = self.output {
            output.leave_for_settling();
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
    /// Its score against the original (`--target-*` runs).
    score: Option<Score>,
}

/// What one encode into the temp output made: a [`NewFile`] but for the temp output itself,
/// which a redo writes again.
struct Made {
    bytes: u64,
    encoded: encode::Encoded,
    /// What its achieved-score pass came to (`--target-*` runs).
    achieved: Option<Achieved>,
}

impl Made {
    fn score(&self) -> Option<Score> {
        self.achieved.as_ref().and_then(Achieved::score)
    }

    fn in_place_of(self, temp: TempOutput) -> NewFile {
        NewFile {
            temp,
            bytes: self.bytes,
            score: self.score(),
            encoded: self.encoded,
        }
    }
}

/// A new file in place of the original.
struct Placed {
    bytes: u64,
    encoded: encode::Encoded,
    score: Option<Score>,
}

impl OneFile<'_> {
    /// Encodes, verifies and commits the file, every claim held (see [`OneFile::claim`]).
    fn convert(&self, claims: Claims) -> Result<FileOutcome, FileOutcome> {
        let placed = self
            .encode_and_verify(&claims)
            .and_then(|new_file| self.commit(&claims, new_file));
        match placed {
            Ok(placed) => Ok(self.converted(claims, placed)),
            Err(ended) if claims.settle_later.get() => {
                claims.leave_for_settling();
                Err(ended)
            }
            Err(ended) => Err(claims.judge(ended)),
        }
    }

    // ---- claim ----

    /// Makes the file's new name ours too, and checks, now that the file is ours, that it is
    /// still ours to convert.
    fn claim(&self, file: Claim, original: Original) -> Result<Claims, FileOutcome> {
        let path = &self.file.path;
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
        self.no_kept_original_in_the_way()?;
        Ok(Claims {
            file,
            output,
            original,
            settle_later: std::cell::Cell::new(false),
        })
    }

    /// The original mediabox tool, still at work beside this one, takes no part in our
    /// claims: its own lock next to the file keeps us away.
    fn not_held_by_original(&self) -> Result<(), FileOutcome> {
        match original_skip(&self.file.path, None, self.ctx.reporter) {
            Some((host, detail)) => Err(FileOutcome::skipped_for(SkipReason::Locked, detail, host)),
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
    /// that is not smaller enough is discarded here. With a `--target-*`, a hardware encode
    /// whose file misses the target by more than the tolerance, or whose score could not be
    /// taken, is redone with libx265 at libx265's own searched quality, as a failed one is.
    fn encode_and_verify(&self, claims: &Claims) -> Result<NewFile, FileOutcome> {
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
        let first = self.encode_scored(claims, &temp, setup, hdr.as_ref())?;
        let Some(unverified) = self.not_known_to_meet(&first) else {
            return Ok(self.kept(first, temp));
        };
        let config = self.ctx.config;
        if !config.fallback {
            return Err(FileOutcome::Failed(format!(
                "{}: {unverified} (not redone with libx265: --no-fallback)",
                first.encoded.encoder
            )));
        }
        let software = EncoderSetup::software();
        self.ctx.reporter.emit(Event::Fallback {
            file: shown(&self.file.path),
            from: first.encoded.encoder.clone(),
            to: software.encoder.name().into(),
            error: unverified.clone(),
        });
        let mut redone = self.encode_scored(claims, &temp, software, hdr.as_ref())?;
        redone.encoded.fallback = Some(Fallback {
            score: first.score(),
            from: first.encoded.encoder,
            error: unverified,
        });
        Ok(self.kept(redone, temp))
    }

    /// Why a hardware encode's file is not kept though it was made and verified: its
    /// achieved score is short of the target by more than the metric's tolerance (the
    /// same tolerance the search's prediction is held to, `docs/quality.md`), or its score
    /// could not be taken, so that nobody knows whether it meets the target. `None` for a
    /// hit, for software (whose quality rests on its search when it cannot be scored), and
    /// for a pass that failed because the file is no longer ours (the fence before the swap
    /// says so).
    fn not_known_to_meet(&self, made: &Made) -> Option<String> {
        let target = self.ctx.config.quality_target?;
        // After a failed hardware encode libx265 made the file: nothing left to redo.
        let hardware = (made.encoded.encoder.parse::<crate::encoder::Encoder>())
            .is_ok_and(|e| e.is_hardware());
        if !hardware {
            return None;
        }
        let metric = target.metric;
        match made.achieved.as_ref()? {
            Achieved::Scored(score) => {
                let tolerance = metric.tolerance();
                let short = target.score - score.value;
                (short > tolerance).then(|| {
                    format!(
                        "its file scored {} {} against the original, short of the target {} \
                         by {} (more than the tolerance of {})",
                        metric.name(),
                        metric.format(score.value),
                        metric.format(target.score),
                        metric.format(short),
                        metric.format(tolerance)
                    )
                })
            }
            Achieved::Unmeasured(error) => Some(format!(
                "{}, so its file is not known to meet the target {}: {error}",
                not_measured(metric),
                metric.format(target.score)
            )),
            Achieved::NotOurs => None,
        }
    }

    /// `made` as the new file, with a warning naming the file where its score could not
    /// be taken: a score that cannot be taken never fails a file its search vouches for.
    fn kept(&self, made: Made, temp: TempOutput) -> NewFile {
        if let (Some(Achieved::Unmeasured(error)), Some(target)) =
            (&made.achieved, self.ctx.config.quality_target)
        {
            self.ctx.reporter.emit(Event::Warning {
                file: Some(self.file.path.to_string_lossy().into_owned()),
                message: format!("{}: {error}", not_measured(target.metric)),
            });
        }
        made.in_place_of(temp)
    }

    /// One encode of the file into `temp` with `setup` (and its fallback to libx265 if it
    /// fails): with a `--target-*`, at the quality searched for the encoder that encodes (or
    /// read from the cache), and scored against the original once verified and smaller
    /// enough.
    fn encode_scored(
        &self,
        claims: &Claims,
        temp: &TempOutput,
        setup: EncoderSetup,
        hdr: Option<&HdrMetadata>,
    ) -> Result<Made, FileOutcome> {
        let Context {
            tools,
            config,
            reporter,
            ..
        } = *self.ctx;
        let should_stop = || self.should_stop(claims);
        let settings_for = |setup: &EncoderSetup| match config.quality_target {
            Some(target) if self.plan.container != Container::Flac => {
                let question = quality::Question {
                    file: self.file,
                    ask: quality::Ask {
                        ffmpeg: &tools.ffmpeg,
                        ffprobe: &tools.ffprobe,
                        source: &self.file.path,
                        info: self.info,
                        size: self.file.size,
                        crop_to: self.plan.crop_to,
                        setup,
                        settings: &config.encode,
                        target,
                        should_stop: &should_stop,
                    },
                    min_savings_pct: self.plan.min_savings_pct,
                    reporter,
                    set_phase: &|phase| claims.file.set_phase(phase),
                };
                let quality = quality::settle(&question).map_err(|unsettled| match unsettled {
                    // The trial encodes failed: on hardware, as a failed encode does.
                    quality::Unsettled::Failed(error) => encode::Failure::Encoder(error),
                    other => encode::Failure::Final(unsettled_outcome(other)),
                })?;
                Ok(config.with_quality(quality).encode)
            }
            _ => Ok(config.encode.clone()),
        };
        let attempt = encode::Attempt {
            tools,
            config,
            reporter,
            file: self.file,
            info: self.info,
            plan: self.plan,
            temp: &temp.0,
            hdr,
            should_stop: &should_stop,
            set_phase: &|phase| claims.file.set_phase(phase),
            set_progress: &|progress| claims.file.set_progress(progress),
        };
        let encoded = encode::encode_verified(&attempt, setup, config.fallback, &settings_for)?;
        let bytes = fs::metadata(&temp.0)
            .map_err(|err| FileOutcome::Failed(format!("reading {}: {err}", temp.0.display())))?
            .len();
        self.smaller_enough(bytes)?;
        if signal::interrupted() {
            return Err(FileOutcome::Interrupted);
        }
        let achieved = match config.quality_target {
            None => None,
            Some(target) => {
                claims.file.set_phase("scoring");
                let new_file = (temp.0.as_path(), self.plan.crop_to);
                let (ffmpeg, file, info) = (&tools.ffmpeg, self.file, self.info);
                let metric = target.metric;
                // A stop here ends the file as during the encode: before the swap, so the
                // new file goes and the original (and the search's record) stays. A pass
                // that fails once the file is no longer ours leaves the reason to the fence
                // before the swap.
                let achieved = quality::achieved_watched(
                    ffmpeg,
                    file,
                    info,
                    new_file,
                    metric,
                    &quality::Watch {
                        should_stop: &should_stop,
                        no_longer_ours: &|| self.self_fence(claims).is_err(),
                    },
                )
                .map_err(|reason| stopped_outcome(reason, "scoring its new file"))?;
                Some(achieved)
            }
        };
        Ok(Made {
            bytes,
            encoded,
            achieved,
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
        if limits.stop_at_deadline && self.ctx.deadline.passed(Instant::now()) {
            return Some(StopReason::Deadline);
        }
        None
    }

    fn smaller_enough(&self, bytes: u64) -> Result<(), FileOutcome> {
        let (size, pct) = (self.file.size, self.plan.min_savings_pct);
        if !decide::saves_enough(size, bytes, pct) {
            let detail = format!(
                "the new file ({bytes} bytes) is not {pct}% smaller than the original ({size} \
                 bytes)"
            );
            return Err(FileOutcome::too_large(
                SkipReason::NotSmaller,
                detail,
                TooLarge {
                    bytes,
                    at_least: false,
                },
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
            score: new_file.score,
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
        original_unchanged(self.file, claims.original)
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
            // The original is at its backup name only (the new file is at its name):
            // released, the lock would take along the record of how far the swap got, and
            // the backup would be an orphan nobody may place. Left, it settles as a crashed
            // swap does.
            if err
                .original_at
                .as_deref()
                .is_some_and(|at| at != self.file.path)
            {
                claims.settle_later.set(true);
                let outcome = format!(
                    "replacing the original: {err}; its lock stays for the next run or `locks \
                     clean` to settle"
                );
                return if stopped.get() {
                    FileOutcome::Abandoned(outcome)
                } else {
                    FileOutcome::Failed(outcome)
                };
            }
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
            score: placed.score,
            file: shown(&self.file.path),
            output: shown(&self.plan.output_path),
            before_bytes: self.file.size,
            after_bytes: placed.bytes,
            seconds,
            encoder: placed.encoded.encoder.clone(),
            fallback: placed.encoded.fallback.clone(),
            dropped: placed.encoded.dropped,
        });
        FileOutcome::Converted {
            after_bytes: placed.bytes,
            encoder: placed.encoded.encoder,
            fallback: placed.encoded.fallback.map(Box::new),
            seconds,
            output: Box::new(placed.encoded.output),
            score: placed.score,
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
        self.file
            .path
            .with_file_name(lock::kept_original_name(self.file_name()))
    }
}

/// The start of what a warning or a fallback says of a new file whose `metric` could not be
/// measured.
fn not_measured(metric: quality::Metric) -> String {
    format!("its achieved {} could not be measured", metric.name())
}

/// How a file whose quality could not be settled ends.
fn unsettled_outcome(unsettled: quality::Unsettled) -> FileOutcome {
    match unsettled {
        quality::Unsettled::Skip(reason, detail, None) => FileOutcome::skipped(reason, detail),
        quality::Unsettled::Skip(reason, detail, Some(too_large)) => {
            FileOutcome::too_large(reason, detail, too_large)
        }
        quality::Unsettled::Failed(error) => FileOutcome::Failed(error),
        quality::Unsettled::Stopped(reason) => stopped_outcome(reason, "searching its quality"),
    }
}

/// How a file ends that was stopped from outside while `doing` something before its swap.
fn stopped_outcome(reason: StopReason, doing: &str) -> FileOutcome {
    match reason {
        StopReason::Deadline => FileOutcome::skipped(
            SkipReason::Deadline,
            format!("stopped at the deadline while {doing}; left for a later run"),
        ),
        StopReason::LockLost => FileOutcome::Abandoned(format!(
            "lost the claim while {doing} (another host took the file over)"
        )),
        StopReason::Interrupted | StopReason::WouldNotShrink => FileOutcome::Interrupted,
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
        | SwapPhase::Placing => original_unchanged(file, claims.original).map(drop),
        SwapPhase::Done => Ok(()),
    }
}

/// A file's size and mtime, as one fresh read of the file server gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Original {
    size: u64,
    modified: Option<SystemTime>,
}

impl Original {
    fn of(meta: &fs::Metadata) -> Original {
        Original {
            size: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// The original as the file server has it now, if it is still the file that was claimed and
/// converted (same size, same mtime, both read fresh).
fn original_unchanged(file: &MediaFile, at_claim: Original) -> Result<fs::Metadata, String> {
    let meta = crate::fresh::metadata(&file.path)
        .map_err(|err| format!("the original vanished during conversion: {err}"))?;
    if Original::of(&meta) != at_claim {
        return Err("the original changed during conversion".into());
    }
    Ok(meta)
}

/// What a plan was made from, where it was not ffprobe.
fn partial_facts(facts: FactsSource) -> Option<&'static str> {
    match facts {
        FactsSource::Ffprobe => None,
        FactsSource::Headers => Some("its headers"),
        FactsSource::Legacy => Some("the original tool's cache"),
    }
}

/// The codec a file's events name: its main video's, else its first audio's. Inline, as
/// the stream's own name is: a plan names one for every file of the library.
fn main_codec(info: &MediaInfo) -> CompactString {
    info.main_video()
        .or_else(|| info.main_audio())
        .map_or_else(|| CompactString::const_new("none"), |s| s.codec.clone())
}

fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Why a file is left alone, and the host whose lock or history says so, if another's.
struct Skip {
    reason: SkipReason,
    detail: String,
    host: Option<String>,
    /// The new file's size that made it not worth converting (made or predicted here), for
    /// the history.
    too_large: Option<TooLarge>,
}

impl Skip {
    fn here(reason: SkipReason, detail: String) -> Skip {
        Skip {
            reason,
            detail,
            host: None,
            too_large: None,
        }
    }
}

impl FileOutcome {
    /// Skipped for a reason of this host's.
    fn skipped(reason: SkipReason, detail: String) -> FileOutcome {
        FileOutcome::Skipped(Skip::here(reason, detail))
    }

    /// Not worth converting here: the new file made or predicted is `too_large`.
    fn too_large(reason: SkipReason, detail: String, too_large: TooLarge) -> FileOutcome {
        FileOutcome::Skipped(Skip {
            too_large: Some(too_large),
            ..Skip::here(reason, detail)
        })
    }

    /// Skipped because of `host`: it holds the file, or its history says so.
    fn skipped_for(reason: SkipReason, detail: String, host: String) -> FileOutcome {
        FileOutcome::Skipped(Skip {
            host: Some(host),
            ..Skip::here(reason, detail)
        })
    }
}

/// Counts and reports a skipped file: a `skipped` event, or a plan line in a dry run.
/// The original tool's hold on `path`, as the skip's `(host, detail)`; the first one seen
/// is also said, loudly, once.
fn original_skip(
    path: &Path,
    listing: Option<&crate::scan::Listing>,
    reporter: &Reporter,
) -> Option<(String, String)> {
    crate::neighbours::original_skip(path, listing, SystemTime::now(), |message| {
        reporter.emit(Event::Warning {
            file: None,
            message,
        });
    })
}

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
        ..
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
            predicted_score: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediaKind;
    use std::sync::Arc;

    /// A dry run holds its planned files until the plan is sorted: none of them may keep
    /// its directory's listing (or the facts it was judged on) alive that long.
    #[test]
    fn a_planned_file_lets_its_listing_go() {
        let listing = Arc::new(scan::Listing::default());
        let candidate = Candidate {
            file: MediaFile {
                path: PathBuf::from("/lib/a.avi"),
                kind: MediaKind::Video,
                size: 1000,
                modified: SystemTime::UNIX_EPOCH,
                listing: Some(Arc::clone(&listing)),
            },
            info: None,
            facts: FactsSource::Ffprobe,
            codec: "h264".into(),
            plan: Plan {
                container: Container::Matroska,
                output_path: PathBuf::from("/lib/a.mkv"),
                estimated_bytes: 400,
                source: None,
                min_savings_pct: 10.0,
                crop_to: None,
            },
        };
        let planned = Planned::from(candidate);
        assert!(planned.file.listing.is_none());
        assert_eq!(Arc::strong_count(&listing), 1);
        assert_eq!(
            (
                planned.file.path.as_path(),
                planned.file.size,
                planned.codec.as_str()
            ),
            (Path::new("/lib/a.avi"), 1000, "h264")
        );
        assert_eq!(planned.estimated_bytes, 400);
    }
}
