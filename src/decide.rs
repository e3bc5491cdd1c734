//! Whether a file needs work, and what the work is: the output container and name.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::config::{MediaKind, Order};
use crate::probe::{MediaInfo, StreamKind};
use crate::scan::{MediaFile, WalkOrder, seeded_key};

/// Video codecs that are already efficient: re-encoding them would lose quality for little gain.
pub const EFFICIENT_VIDEO_CODECS: &[&str] = &["hevc", "av1", "vp9"];

/// Why a file is left alone. The names are part of the JSON contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Video already HEVC, AV1 or VP9; audio already FLAC.
    AlreadyEfficient,
    /// Dolby Vision would be lost; `--allow-dv-loss` converts anyway.
    DolbyVision,
    /// Modified within `--min-age`: maybe still being written.
    TooNew,
    /// Lossy audio: re-encoding it to FLAC would only grow it.
    Lossy,
    /// No video stream to convert (an audio-only mp4, say).
    NoVideo,
    /// Another process holds the file's lock.
    Locked,
    /// The new file was not enough smaller; the original stays.
    NotSmaller,
    /// HDR10, and `--encoder` forces a hardware encoder that would lose its metadata.
    HdrOnHardware,
    /// The share lacks room for the new file.
    NoSpace,
    /// Stopped at the run's deadline (`--stop-at-deadline`); a later run does it.
    Deadline,
    /// Its directory does not let us create lock files (read-only share, permissions).
    NotWritable,
    /// It changed between the scan and the claim (another host converted it, say).
    Changed,
    /// Its name is so long that the names derived from it would not fit the file system.
    NameTooLong,
    /// Failed `cache::FAILURE_LIMIT` times on any hosts; `--retry-failed` tries again.
    TooManyFailures,
    /// Its converted name (`x.avi` -> `x.mkv`) is already another file's.
    OutputExists,
    /// A stream ffprobe cannot describe (an audio track with no sample rate): no muxer
    /// takes it, so every encode would fail.
    UndescribedStream,
    /// The video has an alpha channel, which the HEVC encode cannot keep;
    /// `--allow-alpha-loss` converts anyway.
    Alpha,
    /// The video carries closed captions (A53), which the HEVC encode does not keep;
    /// `--allow-caption-loss` converts anyway.
    ClosedCaptions,
    /// The quality search predicts that the quality meeting `--target-vmaf`/`--target-ssim`
    /// saves less than `--min-savings`: skipped before the long encode.
    PredictedNotSmaller,
    /// Not even the best quality the search tries meets the `--target-*` score.
    TargetUnreachable,
}

/// Losses the user accepted on the command line, each named in the `converted` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowedLosses {
    /// `--allow-alpha-loss`
    pub alpha: bool,
    /// `--allow-caption-loss`
    pub captions: bool,
}

/// The outcome of looking at one file.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Convert(Plan),
    Skip { reason: SkipReason, detail: String },
}

/// What converting a file will produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub container: Container,
    /// Where the converted file ends up: the original's path, or a new extension beside it.
    pub output_path: PathBuf,
    /// A guess of the size after conversion, for `--dry-run` and ordering: from the library's
    /// own conversions when it has enough of this kind ([`Calibration`]), else a rough model.
    pub estimated_bytes: u64,
    /// The source's video, which the estimate and the conversion record go by.
    pub source: Option<SourceVideo>,
    /// The least saving, in percent, that makes the new file worth keeping.
    pub min_savings_pct: f64,
    /// The even frame size an odd-sized video is cropped to (its last column or row):
    /// HEVC in 4:2:0 has no odd sizes, and x265 refuses them.
    pub crop_to: Option<(u32, u32)>,
}

impl Plan {
    /// What the conversion does, for the dry run and the log.
    pub fn describe(&self) -> String {
        describe(self.container, self.crop_to)
    }
}

/// What a conversion into `container`, cropped to `crop_to`, does: [`Plan::describe`].
pub fn describe(container: Container, crop_to: Option<(u32, u32)>) -> String {
    if container == Container::Flac {
        return "to FLAC".into();
    }
    let mut text = format!("to HEVC in {}", container.muxer());
    if let Some((w, h)) = crop_to {
        text += &format!(", cropped to {w}x{h} (HEVC needs an even width and height)");
    }
    text
}

/// The containers this tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Matroska,
    Mp4,
    Mov,
    Flac,
}

impl Container {
    /// ffmpeg's muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Matroska => "matroska",
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Flac => "flac",
        }
    }

    /// The extension of files in this container, for temp names.
    pub fn extension(self) -> &'static str {
        match self {
            Container::Matroska => "mkv",
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Flac => "flac",
        }
    }

    /// Apple players need HEVC tagged `hvc1` in the ISO family.
    pub fn is_iso_family(self) -> bool {
        matches!(self, Container::Mp4 | Container::Mov)
    }
}

/// Inputs to the decision other than the file itself.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub min_age: Duration,
    pub min_savings_pct: f64,
    pub allow_dv_loss: bool,
    pub allow: AllowedLosses,
    pub now: SystemTime,
}

/// Whether a new file of `new_bytes` saves at least `min_savings_pct` of the original's
/// `original_bytes`: the bar a conversion is kept by.
pub fn saves_enough(original_bytes: u64, new_bytes: u64, min_savings_pct: f64) -> bool {
    new_bytes as f64 <= largest_new_file(original_bytes, min_savings_pct)
}

/// The largest new file of an `original_bytes` original that saves `min_savings_pct`.
pub fn largest_new_file(original_bytes: u64, min_savings_pct: f64) -> f64 {
    original_bytes as f64 * (1.0 - min_savings_pct / 100.0)
}

/// Whether a file is too new to touch; checked before probing, so a download in progress
/// is not even read.
pub fn too_new(file: &MediaFile, rules: &Rules) -> Option<Decision> {
    let age = rules
        .now
        .duration_since(file.modified)
        .unwrap_or(Duration::ZERO);
    (age < rules.min_age).then(|| Decision::Skip {
        reason: SkipReason::TooNew,
        detail: format!(
            "modified {}s ago, less than --min-age {}s",
            age.as_secs(),
            rules.min_age.as_secs()
        ),
    })
}

/// Decides what to do with a probed file.
pub fn decide(file: &MediaFile, info: &MediaInfo, rules: &Rules) -> Decision {
    if let Some(skip) = too_new(file, rules) {
        return skip;
    }
    // An audio extension that holds a real video (Theora in .ogg) is judged by its video.
    let decision = match file.kind {
        MediaKind::Audio if info.main_video().is_none() => decide_audio(file, info, rules),
        _ => decide_video(file, info, rules),
    };
    match decision {
        Decision::Convert(plan) => settle_names(file, info, plan),
        skip => skip,
    }
}

/// What the plan's names and streams allow: checked at plan time, so a dry run shows it and
/// no encode is spent on a file that cannot be written whole.
fn settle_names(file: &MediaFile, info: &MediaInfo, plan: Plan) -> Decision {
    if let Some(stream) = info.streams.iter().find(|s| s.undescribed) {
        return skip(
            SkipReason::UndescribedStream,
            format!(
                "audio stream #{} ({}) has no sample rate or channel count: the track is \
                 damaged or cut, and no container can take it; repair or remux the file to \
                 convert it",
                stream.index, stream.codec
            ),
        );
    }
    // The walk's listing answers for a new name beside the file: a stat only where it held it.
    // The new name is the file's own, or its own with another extension ([`output_path`]),
    // so it is always beside the file: no parent of either is worked out for every file.
    debug_assert_eq!(plan.output_path.parent(), file.path.parent());
    let may_be_taken = file.sibling_may_exist(plan.output_path.file_name().unwrap_or_default());
    if let Some(taken) = may_be_taken
        .then(|| output_taken(&file.path, &plan))
        .flatten()
    {
        return taken;
    }
    if !fits_work_names(file, &plan) {
        return skip(
            SkipReason::NameTooLong,
            format!(
                "its name is {} bytes: the temp and backup names beside it would pass the \
                 {}-byte limit; rename it to under about 190 bytes to convert it",
                file.path.file_name().map_or(0, |n| n.len()),
                crate::lock::MAX_NAME_BYTES
            ),
        );
    }
    Decision::Convert(plan)
}

/// A skip when the plan's new name is already another file's: at plan time, and again once
/// the file is claimed, since two files of a library can become one name (`demo.ogg` and
/// `demo.ogv` both `demo.mkv`) and the first converted takes it.
pub fn output_taken(original: &Path, plan: &Plan) -> Option<Decision> {
    let taken =
        plan.output_path != original && std::fs::symlink_metadata(&plan.output_path).is_ok();
    taken.then(|| {
        let name = plan.output_path.file_name().unwrap_or_default();
        skip(
            SkipReason::OutputExists,
            format!(
                "it would become {}, which is already another file; rename one of the two to \
                 convert it",
                name.to_string_lossy()
            ),
        )
    })
}

fn fits_work_names(file: &MediaFile, plan: &Plan) -> bool {
    file.path
        .file_name()
        .is_some_and(|name| crate::lock::fits_work_names(name, plan.container.extension()))
}

fn skip(reason: SkipReason, detail: impl Into<String>) -> Decision {
    Decision::Skip {
        reason,
        detail: detail.into(),
    }
}

fn decide_video(file: &MediaFile, info: &MediaInfo, rules: &Rules) -> Decision {
    let Some(video) = info.main_video() else {
        return skip(SkipReason::NoVideo, "no video stream other than cover art");
    };
    if EFFICIENT_VIDEO_CODECS.contains(&video.codec.as_str()) {
        return skip(
            SkipReason::AlreadyEfficient,
            format!("video is already {}", video.codec),
        );
    }
    if video.dolby_vision && !rules.allow_dv_loss {
        return skip(
            SkipReason::DolbyVision,
            "Dolby Vision would be lost; pass --allow-dv-loss to convert anyway",
        );
    }
    if video.has_alpha() && !rules.allow.alpha {
        return skip(
            SkipReason::Alpha,
            format!(
                "the video has an alpha channel ({}), which the HEVC encode cannot keep; \
                 pass --allow-alpha-loss to convert it without",
                video.pix_fmt.as_deref().unwrap_or_default()
            ),
        );
    }
    if video.closed_captions && !rules.allow.captions {
        return skip(
            SkipReason::ClosedCaptions,
            "the video carries closed captions (CEA-608/708 inside the video stream), which \
             the HEVC encode does not keep; pass --allow-caption-loss to convert it without",
        );
    }
    let container = video_container(&file.path);
    let crop_to = match (video.width, video.height) {
        (Some(w), Some(h)) if w % 2 == 1 || h % 2 == 1 => Some((w & !1, h & !1)),
        _ => None,
    };
    Decision::Convert(Plan {
        container,
        output_path: output_path(&file.path, container),
        estimated_bytes: estimate_video_bytes(file.size, info, &video.codec),
        source: SourceVideo::of(info),
        min_savings_pct: rules.min_savings_pct,
        crop_to,
    })
}

fn decide_audio(file: &MediaFile, info: &MediaInfo, rules: &Rules) -> Decision {
    let Some(audio) = info.main_audio() else {
        return skip(SkipReason::NoVideo, "no audio stream");
    };
    let codec = audio.codec.as_str();
    if codec == "flac" {
        return skip(SkipReason::AlreadyEfficient, "audio is already FLAC");
    }
    let pcm = codec.starts_with("pcm_");
    let compressed_lossless = matches!(codec, "ape" | "wavpack" | "alac" | "tta");
    if !pcm && !compressed_lossless {
        return skip(
            SkipReason::Lossy,
            format!("{codec} is lossy; re-encoding it would only lose quality"),
        );
    }
    Decision::Convert(Plan {
        container: Container::Flac,
        output_path: output_path(&file.path, Container::Flac),
        // PCM typically halves; the other lossless codecs compress about as well as FLAC.
        estimated_bytes: if pcm { file.size * 55 / 100 } else { file.size },
        // A compressed lossless source becomes FLAC for compatibility, as long as it does
        // not grow; PCM must save what the user asked.
        min_savings_pct: if pcm { rules.min_savings_pct } else { 0.0 },
        source: None,
        crop_to: None,
    })
}

/// Sorts the files to convert into the order `--order` asks for. Ties keep path order, so a
/// plan is the same on every run and every host: the order of [`compare`].
///
/// The sort moves indices, then the items into place by swaps: a sort moves its elements
/// many times over, and a candidate is hundreds of bytes (a warm plan of 70,000 spent a
/// tenth of its time copying them). It sorts by the order's key alone, computed once an
/// item, and compares paths only among items of one key, most often never: a walk hands
/// each directory's files over sorted by name, and a stable sort keeps that order among
/// equals, so each run of equals is only checked (a warm plan of 70,000 spent most of its
/// sorting time comparing paths and walking to each item's fields).
pub fn sort_by_order<T>(items: &mut [T], order: Order, key_of: impl Fn(&T) -> OrderKey<'_>) {
    let saving = |k: &OrderKey<'_>| k.size.saturating_sub(k.estimated_bytes);
    // `from[i]`: where the item that belongs at `i` is now.
    let mut from = match order {
        Order::Largest => sorted_by_key(items, &key_of, |k| Reverse((saving(k), k.size))),
        Order::Newest => sorted_by_key(items, &key_of, |k| Reverse(k.modified)),
        Order::Oldest => sorted_by_key(items, &key_of, |k| k.modified),
        Order::Name => sorted_by_key(items, &key_of, |_| ()),
    };
    // Each cycle of the permutation in turn; a place done points at itself.
    for start in 0..items.len() {
        let mut at = start;
        loop {
            let source = std::mem::replace(&mut from[at], at);
            if source == start {
                break;
            }
            items.swap(at, source);
            at = source;
        }
    }
}

/// What [`sort_by_order`] sorts a file to convert by: what [`compare`] compares.
#[derive(Debug, Clone, Copy)]
pub struct OrderKey<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub modified: SystemTime,
    /// The plan's estimate of the new file's size.
    pub estimated_bytes: u64,
}

impl<'a> OrderKey<'a> {
    pub fn of(file: &'a MediaFile, plan: &Plan) -> OrderKey<'a> {
        OrderKey {
            path: &file.path,
            size: file.size,
            modified: file.modified,
            estimated_bytes: plan.estimated_bytes,
        }
    }
}

/// Where each item goes when sorted by `key`, then by path among equal keys (paths differ,
/// so this is one order): the index of the item that belongs at each place.
fn sorted_by_key<T, K: Ord>(
    items: &[T],
    key_of: &impl Fn(&T) -> OrderKey<'_>,
    key: impl Fn(&OrderKey<'_>) -> K,
) -> Vec<usize> {
    let mut keyed: Vec<(K, usize)> = items
        .iter()
        .map(|item| key(&key_of(item)))
        .zip(0..)
        .collect();
    // Stable: equals stay in the order they came in, most often their paths' order already.
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut from: Vec<usize> = keyed.iter().map(|&(_, at)| at).collect();
    let path_of = |at: usize| key_of(&items[at]).path.as_os_str().as_encoded_bytes();
    let by_path = |&a: &usize, &b: &usize| path_of(a).cmp(path_of(b));
    let mut start = 0;
    while start < keyed.len() {
        let end = start
            + keyed[start..]
                .iter()
                .take_while(|(k, _)| *k == keyed[start].0)
                .count();
        let run = &mut from[start..end];
        if !run.is_sorted_by(|a, b| by_path(a, b).is_lt()) {
            run.sort_unstable_by(by_path);
        }
        start = end;
    }
    from
}

/// Which of two files to convert first by `--order` (`Less`: the first); ties go by path.
pub fn compare(order: Order, a: (&MediaFile, &Plan), b: (&MediaFile, &Plan)) -> std::cmp::Ordering {
    compare_spread(order, WalkOrder::Name, a, b)
}

/// [`compare`], with files equal by `--order` `largest`, `newest` or `oldest` (the same
/// saving and size, the same mtime) taken in the seeded order `ties` before the order of
/// their paths: hosts that start together then spread over equal files, each beginning with
/// another, rather than all reaching for the same one and all but one finding it locked.
pub fn compare_spread(
    order: Order,
    ties: WalkOrder,
    (fa, pa): (&MediaFile, &Plan),
    (fb, pb): (&MediaFile, &Plan),
) -> std::cmp::Ordering {
    let saving = |f: &MediaFile, p: &Plan| f.size.saturating_sub(p.estimated_bytes);
    let first = match order {
        Order::Largest => saving(fb, pb)
            .cmp(&saving(fa, pa))
            .then(fb.size.cmp(&fa.size)),
        Order::Newest => fb.modified.cmp(&fa.modified),
        Order::Oldest => fa.modified.cmp(&fb.modified),
        Order::Name => return by_path(fa, fb),
    };
    first
        .then_with(|| match ties {
            WalkOrder::Seeded(seed) => {
                seeded_key(seed, path_bytes(fa)).cmp(&seeded_key(seed, path_bytes(fb)))
            }
            WalkOrder::Name => std::cmp::Ordering::Equal,
        })
        .then_with(|| by_path(fa, fb))
}

/// Byte order of the paths: any fixed order makes ties stable across runs and hosts, and
/// bytes compare far faster than path components.
fn by_path(a: &MediaFile, b: &MediaFile) -> std::cmp::Ordering {
    path_bytes(a).cmp(path_bytes(b))
}

fn path_bytes(file: &MediaFile) -> &[u8] {
    file.path.as_os_str().as_encoded_bytes()
}

/// mkv, mp4, m4v and mov keep their container; everything else becomes Matroska, which can
/// carry any stream those old containers hold.
fn video_container(path: &Path) -> Container {
    // Compared without a lowercase copy: a plan asks this of every video file.
    let ext = path.extension().unwrap_or_default();
    let is = |name: &str| ext.eq_ignore_ascii_case(name);
    if is("mp4") || is("m4v") {
        Container::Mp4
    } else if is("mov") {
        Container::Mov
    } else {
        Container::Matroska
    }
}

/// Whether a video's converted file keeps the source's own container ([`video_container`]:
/// mkv and webm stay Matroska, mp4, m4v and mov stay theirs); every other becomes Matroska.
pub fn keeps_video_container(path: &Path) -> bool {
    match video_container(path) {
        Container::Matroska => has_extension(path, &["mkv", "webm"]),
        Container::Mp4 | Container::Mov => true,
        Container::Flac => false,
    }
}

/// The converted file's path: the same name when the container keeps its extension.
pub fn output_path(original: &Path, container: Container) -> PathBuf {
    let keeps_name = match container {
        Container::Matroska => has_extension(original, &["mkv"]),
        Container::Mp4 => has_extension(original, &["mp4", "m4v"]),
        Container::Mov => has_extension(original, &["mov"]),
        Container::Flac => has_extension(original, &["flac"]),
    };
    if keeps_name {
        original.to_path_buf()
    } else {
        original.with_extension(container.extension())
    }
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// A rough size after conversion: HEVC needs about half of H.264's bits for the same
/// quality and a third of MPEG-2/MPEG-4 Part 2's; audio and subtitles are copied as they are.
fn estimate_video_bytes(size: u64, info: &MediaInfo, codec: &str) -> u64 {
    let factor = match codec {
        "h264" => 0.5,
        "mpeg2video" | "mpeg1video" | "mpeg4" | "msmpeg4v3" | "msmpeg4v2" | "wmv1" | "wmv2"
        | "wmv3" | "vc1" | "flv1" | "h263" | "mjpeg" => 0.35,
        _ => 0.6,
    };
    // Streams copied as they are keep their size; without per-stream bit rates (ffprobe
    // rarely has them for mkv) assume video is nine tenths of the file.
    let other = if info.streams_of(StreamKind::Audio).next().is_some() {
        0.1
    } else {
        0.0
    };
    ((size as f64) * (other + (1.0 - other) * factor)) as u64
}

/// A source's main video as far as the size of its conversion goes: codec and frame size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVideo {
    pub codec: CompactString,
    pub width: u32,
    pub height: u32,
}

impl SourceVideo {
    /// The main video of `info`, when its size is known.
    pub fn of(info: &MediaInfo) -> Option<SourceVideo> {
        let video = info.main_video()?;
        Some(SourceVideo {
            codec: video.codec.clone(),
            width: video.width?,
            height: video.height?,
        })
    }

    /// The resolution class conversions are compared within: SD, 720p, 1080p, beyond.
    fn class(&self) -> u8 {
        match u64::from(self.width) * u64::from(self.height) {
            0..=480_000 => 0,
            480_001..=1_000_000 => 1,
            1_000_001..=2_500_000 => 2,
            _ => 3,
        }
    }
}

/// What a library's cache has seen conversions of this kind come to: the bytes before and
/// after, summed by source codec and resolution class, and by codec alone.
///
/// A conversion not worth keeping counts with no saving, so the estimate is what a plan of
/// this kind is expected to save, not what a successful one saves.
#[derive(Debug, Default)]
pub struct Calibration {
    by_class: HashMap<(CompactString, u8), Tally>,
    by_codec: HashMap<CompactString, Tally>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    before: u64,
    after: u64,
    files: u32,
}

/// Fewer conversions of a kind than this say too little; the next coarser tally, or the
/// model, estimates instead.
const CALIBRATION_MIN_FILES: u32 = 3;

impl Calibration {
    /// Counts one outcome: `before` bytes became `after` (equal when the original was kept).
    pub fn learn(&mut self, source: &SourceVideo, before: u64, after: u64) {
        if before == 0 {
            return;
        }
        self.by_class
            .entry((source.codec.clone(), source.class()))
            .or_default()
            .add(before, after);
        self.by_codec
            .entry(source.codec.clone())
            .or_default()
            .add(before, after);
    }

    /// The expected size after converting `size` bytes of `source`, when the library has seen
    /// enough conversions of its codec (and, preferably, its resolution class).
    pub fn estimate(&self, source: &SourceVideo, size: u64) -> Option<u64> {
        let enough = |t: &&Tally| t.files >= CALIBRATION_MIN_FILES;
        // A class holds no more files than its codec: without enough of the codec there is
        // no class to look up, and no key to copy (a plan asks this of every file).
        let by_codec = self.by_codec.get(&source.codec).filter(enough)?;
        let tally = self
            .by_class
            .get(&(source.codec.clone(), source.class()))
            .filter(enough)
            .unwrap_or(by_codec);
        Some((size as f64 * tally.after as f64 / tally.before as f64) as u64)
    }
}

impl Tally {
    fn add(&mut self, before: u64, after: u64) {
        self.before += before;
        self.after += after.min(before);
        self.files += 1;
    }
}

/// Replaces the model's estimate of `plan` with the library's own figure, where it has one.
pub fn calibrate(plan: &mut Plan, size: u64, calibration: &Calibration) {
    calibrate_estimate(
        &mut plan.estimated_bytes,
        plan.source.as_ref(),
        size,
        calibration,
    );
}

/// [`calibrate`], for a plan kept as its estimate and its source's video alone.
pub fn calibrate_estimate(
    estimated_bytes: &mut u64,
    source: Option<&SourceVideo>,
    size: u64,
    calibration: &Calibration,
) {
    if let Some(estimate) = source.and_then(|source| calibration.estimate(source, size)) {
        *estimated_bytes = estimate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Stream, StreamKind};

    fn stream(kind: StreamKind, codec: &str) -> Stream {
        Stream::new(0, kind, codec)
    }

    fn info(streams: Vec<Stream>) -> MediaInfo {
        MediaInfo {
            container: "matroska,webm".into(),
            duration_secs: Some(60.0),
            bit_rate: None,
            streams,
            chapters: 0,
        }
    }

    fn file(name: &str, kind: MediaKind, age_secs: u64) -> (MediaFile, Rules) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let file = MediaFile {
            path: PathBuf::from("/lib").join(name),
            kind,
            size: 1_000_000,
            modified: now - Duration::from_secs(age_secs),
            listing: None,
        };
        let rules = Rules {
            min_age: Duration::from_secs(300),
            min_savings_pct: 10.0,
            allow_dv_loss: false,
            allow: AllowedLosses::default(),
            now,
        };
        (file, rules)
    }

    #[test]
    fn alpha_and_captions_are_skipped_unless_their_loss_is_allowed() {
        let (f, mut rules) = file("a.mov", MediaKind::Video, 3600);
        let mut rle = stream(StreamKind::Video, "qtrle");
        rle.pix_fmt = Some("argb".into());
        let mut cc = stream(StreamKind::Video, "h264");
        cc.closed_captions = true;
        assert_eq!(
            reason(decide(&f, &info(vec![rle.clone()]), &rules)),
            SkipReason::Alpha
        );
        assert_eq!(
            reason(decide(&f, &info(vec![cc.clone()]), &rules)),
            SkipReason::ClosedCaptions
        );
        rules.allow = AllowedLosses {
            alpha: true,
            captions: true,
        };
        assert!(matches!(
            decide(&f, &info(vec![rle]), &rules),
            Decision::Convert(_)
        ));
        assert!(matches!(
            decide(&f, &info(vec![cc]), &rules),
            Decision::Convert(_)
        ));
    }

    #[test]
    fn an_odd_frame_size_is_cropped_to_even_at_plan_time() {
        let (f, rules) = file("a.mpg", MediaKind::Video, 3600);
        let mut video = stream(StreamKind::Video, "mpeg1video");
        (video.width, video.height) = (Some(720), Some(405));
        let Decision::Convert(plan) = decide(&f, &info(vec![video.clone()]), &rules) else {
            panic!("an odd size converts, cropped")
        };
        assert_eq!(plan.crop_to, Some((720, 404)));
        assert!(
            plan.describe().contains("cropped to 720x404"),
            "{}",
            plan.describe()
        );
        (video.width, video.height) = (Some(1920), Some(1080));
        let Decision::Convert(plan) = decide(&f, &info(vec![video]), &rules) else {
            panic!()
        };
        assert_eq!(plan.crop_to, None);
        assert_eq!(plan.describe(), "to HEVC in matroska");
    }

    #[test]
    fn a_taken_output_name_is_a_skip_at_plan_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, rules) = file("x", MediaKind::Video, 3600);
        f.path = dir.path().join("test.avi");
        std::fs::write(&f.path, b"avi").unwrap();
        std::fs::write(dir.path().join("test.mkv"), b"mkv").unwrap();
        let i = info(vec![stream(StreamKind::Video, "mpeg4")]);
        let Decision::Skip { reason, detail } = decide(&f, &i, &rules) else {
            panic!("test.avi cannot become test.mkv")
        };
        assert_eq!(reason, SkipReason::OutputExists);
        assert!(
            detail.contains("test.mkv") && detail.contains("rename"),
            "{detail}"
        );
        // The same file keeping its name is no clash.
        f.path = dir.path().join("test.mkv");
        assert!(matches!(decide(&f, &i, &rules), Decision::Convert(_)));
    }

    #[test]
    fn a_stream_ffprobe_cannot_describe_is_a_skip_naming_it() {
        let (f, rules) = file("a.ts", MediaKind::Video, 3600);
        let mut audio = stream(StreamKind::Audio, "mp3");
        audio.index = 1;
        audio.undescribed = true;
        let i = info(vec![stream(StreamKind::Video, "mpeg2video"), audio]);
        let Decision::Skip { reason, detail } = decide(&f, &i, &rules) else {
            panic!("no muxer takes an audio track without a sample rate")
        };
        assert_eq!(reason, SkipReason::UndescribedStream);
        assert!(detail.starts_with("audio stream #1 (mp3)"), "{detail}");
    }

    #[test]
    fn theora_in_ogg_is_judged_by_its_video() {
        let (f, rules) = file("a.ogg", MediaKind::Audio, 3600);
        let i = info(vec![
            stream(StreamKind::Video, "theora"),
            stream(StreamKind::Audio, "vorbis"),
        ]);
        let Decision::Convert(plan) = decide(&f, &i, &rules) else {
            panic!("Theora is converted, not skipped for its Vorbis audio")
        };
        assert_eq!(plan.output_path, PathBuf::from("/lib/a.mkv"));
        // Vorbis alone, or with cover art, is still lossy audio.
        let mut cover = stream(StreamKind::Video, "mjpeg");
        cover.attached_pic = true;
        let i = info(vec![stream(StreamKind::Audio, "vorbis"), cover]);
        assert_eq!(reason(decide(&f, &i, &rules)), SkipReason::Lossy);
    }

    fn reason(decision: Decision) -> SkipReason {
        match decision {
            Decision::Skip { reason, .. } => reason,
            Decision::Convert(plan) => panic!("expected a skip, got {plan:?}"),
        }
    }

    #[test]
    fn efficient_codecs_are_skipped_and_h264_converts() {
        let (f, rules) = file("a.mkv", MediaKind::Video, 3600);
        for codec in ["hevc", "av1", "vp9"] {
            let i = info(vec![stream(StreamKind::Video, codec)]);
            assert_eq!(reason(decide(&f, &i, &rules)), SkipReason::AlreadyEfficient);
        }
        let i = info(vec![
            stream(StreamKind::Video, "h264"),
            stream(StreamKind::Audio, "aac"),
        ]);
        let Decision::Convert(plan) = decide(&f, &i, &rules) else {
            panic!("h264 should convert")
        };
        assert_eq!(plan.container, Container::Matroska);
        assert_eq!(plan.output_path, PathBuf::from("/lib/a.mkv"));
        assert!(plan.estimated_bytes < f.size && plan.estimated_bytes > f.size / 3);
    }

    #[test]
    fn cover_art_does_not_count_as_main_video() {
        let (f, rules) = file("a.mp4", MediaKind::Video, 3600);
        let mut cover = stream(StreamKind::Video, "hevc");
        cover.attached_pic = true;
        let i = info(vec![cover, stream(StreamKind::Video, "h264")]);
        assert!(matches!(decide(&f, &i, &rules), Decision::Convert(_)));
    }

    #[test]
    fn dolby_vision_needs_explicit_consent() {
        let (f, mut rules) = file("a.mkv", MediaKind::Video, 3600);
        let mut dv = stream(StreamKind::Video, "h264");
        dv.dolby_vision = true;
        let i = info(vec![dv]);
        assert_eq!(reason(decide(&f, &i, &rules)), SkipReason::DolbyVision);
        rules.allow_dv_loss = true;
        assert!(matches!(decide(&f, &i, &rules), Decision::Convert(_)));
    }

    #[test]
    fn a_name_too_long_for_the_work_files_is_skipped_with_advice() {
        let long = format!("{}.mkv", "x".repeat(220));
        let (f, rules) = file(&long, MediaKind::Video, 3600);
        let i = info(vec![stream(StreamKind::Video, "h264")]);
        let Decision::Skip { reason, detail } = decide(&f, &i, &rules) else {
            panic!("a 224-byte name cannot get a temp name beside it")
        };
        assert_eq!(reason, SkipReason::NameTooLong);
        assert!(detail.contains("rename it"), "{detail}");
    }

    #[test]
    fn recent_files_are_too_new() {
        let (f, rules) = file("a.mkv", MediaKind::Video, 10);
        assert_eq!(reason(too_new(&f, &rules).unwrap()), SkipReason::TooNew);
        let (f, rules) = file("a.mkv", MediaKind::Video, 301);
        assert!(too_new(&f, &rules).is_none());
    }

    #[test]
    fn old_containers_become_matroska_and_iso_stays_iso() {
        assert_eq!(video_container(Path::new("x.AVI")), Container::Matroska);
        assert_eq!(video_container(Path::new("x.m4v")), Container::Mp4);
        assert_eq!(video_container(Path::new("x.mov")), Container::Mov);
        // Whatever the extension's case.
        assert_eq!(video_container(Path::new("x.MP4")), Container::Mp4);
        assert_eq!(video_container(Path::new("x.M4v")), Container::Mp4);
        assert_eq!(video_container(Path::new("x.MoV")), Container::Mov);
        assert_eq!(
            video_container(Path::new("x.mp4.part")),
            Container::Matroska
        );
        assert_eq!(video_container(Path::new("mp4")), Container::Matroska);
        assert_eq!(
            output_path(Path::new("/l/x.avi"), Container::Matroska),
            PathBuf::from("/l/x.mkv")
        );
        assert_eq!(
            output_path(Path::new("/l/x.M4V"), Container::Mp4),
            PathBuf::from("/l/x.M4V")
        );
        assert_eq!(
            output_path(Path::new("/l/song.wav"), Container::Flac),
            PathBuf::from("/l/song.flac")
        );
    }

    /// An H.264 video file of `size` bytes, `age_secs` old, and the plan that converts it.
    fn h264_candidate(name: &str, size: u64, age_secs: u64, rules: &Rules) -> (MediaFile, Plan) {
        let mut f = file(name, MediaKind::Video, age_secs).0;
        f.size = size;
        let Decision::Convert(plan) =
            decide(&f, &info(vec![stream(StreamKind::Video, "h264")]), rules)
        else {
            panic!("h264 converts")
        };
        (f, plan)
    }

    #[test]
    fn candidates_sort_by_the_requested_order() {
        let (_, rules) = file("x.mkv", MediaKind::Video, 3600);
        let make =
            |name: &str, size: u64, age_secs: u64| h264_candidate(name, size, age_secs, &rules);
        let mut items = vec![
            make("b.mkv", 100, 4000),
            make("a.mkv", 300, 5000),
            make("c.mkv", 200, 3700),
            make("d.mkv", 300, 3800),
        ];
        let names = |items: &[(MediaFile, Plan)]| -> Vec<String> {
            items
                .iter()
                .map(|(f, _)| f.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        sort_by_order(&mut items, Order::Largest, |(f, p)| OrderKey::of(f, p));
        assert_eq!(names(&items), ["a.mkv", "d.mkv", "c.mkv", "b.mkv"]);
        sort_by_order(&mut items, Order::Newest, |(f, p)| OrderKey::of(f, p));
        assert_eq!(names(&items), ["c.mkv", "d.mkv", "b.mkv", "a.mkv"]);
        sort_by_order(&mut items, Order::Oldest, |(f, p)| OrderKey::of(f, p));
        assert_eq!(names(&items), ["a.mkv", "b.mkv", "d.mkv", "c.mkv"]);
        sort_by_order(&mut items, Order::Name, |(f, p)| OrderKey::of(f, p));
        assert_eq!(names(&items), ["a.mkv", "b.mkv", "c.mkv", "d.mkv"]);
    }

    /// The sort by indices puts every item where a plain sort by [`compare`] does: many ties
    /// by size and age, names given out of order.
    #[test]
    fn sorting_by_order_agrees_with_the_comparison_it_sorts_by() {
        let (_, rules) = file("x.mkv", MediaKind::Video, 3600);
        let items: Vec<(MediaFile, Plan)> = (0..60u64)
            .map(|n| {
                let name = format!("e{:02}.mkv", (n * 37) % 60);
                h264_candidate(&name, 100 + 100 * (n % 4), 4000 + 100 * (n % 3), &rules)
            })
            .collect();
        // Sorted by `sort_by_order` and by a plain sort on `compare`, for every order.
        let both = |given: &[(MediaFile, Plan)], order: Order| {
            let mut sorted = given.to_vec();
            sort_by_order(&mut sorted, order, |(f, p)| OrderKey::of(f, p));
            let mut expected = given.to_vec();
            expected.sort_by(|a, b| compare(order, (&a.0, &a.1), (&b.0, &b.1)));
            (sorted, expected)
        };
        let orders = [Order::Largest, Order::Newest, Order::Oldest, Order::Name];
        for order in orders {
            let (sorted, expected) = both(&items, order);
            assert_eq!(sorted, expected, "{order:?}");
            assert_ne!(
                sorted, items,
                "{order:?}: the names were given out of order"
            );
        }
        // As a walk hands them over: by path, except one directory's files given in reverse
        // among others in order, so that some runs of equals are sorted and some are not.
        let mut walked = items.clone();
        walked.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        walked[20..40].reverse();
        for order in orders {
            let (sorted, expected) = both(&walked, order);
            assert_eq!(sorted, expected, "{order:?}, in walk order");
        }
    }

    #[test]
    fn ties_go_by_each_hosts_seeded_order_and_the_rest_by_the_order_asked() {
        let (_, rules) = file("x.mkv", MediaKind::Video, 3600);
        let make = |name: &str, size: u64| h264_candidate(name, size, 4000, &rules);
        // Twenty episodes of one size and age, and one larger film.
        let mut items: Vec<(MediaFile, Plan)> = (0..20)
            .map(|n| make(&format!("episode{n:02}.mkv"), 1000))
            .collect();
        items.push(make("film.mkv", 5000));
        let first_of = |order: Order, ties: WalkOrder| -> Vec<String> {
            let mut items = items.clone();
            items.sort_by(|a, b| compare_spread(order, ties, (&a.0, &a.1), (&b.0, &b.1)));
            items
                .iter()
                .map(|(f, _)| f.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let (alpha, bravo) = (
            WalkOrder::of_host("alpha-id"),
            WalkOrder::of_host("bravo-id"),
        );
        for order in [Order::Largest, Order::Newest, Order::Oldest] {
            let (a, b) = (first_of(order, alpha), first_of(order, bravo));
            if order == Order::Largest {
                // What the order decides, it still decides.
                assert_eq!((a[0].as_str(), b[0].as_str()), ("film.mkv", "film.mkv"));
            }
            assert_ne!(
                a[..3],
                b[..3],
                "{order:?}: both hosts begin with the same files"
            );
            assert_eq!(
                a,
                first_of(order, alpha),
                "{order:?}: a host keeps its order"
            );
            let mut sorted = a.clone();
            sorted.sort();
            assert_ne!(a, sorted, "{order:?}: ties went by name");
        }
        // Without a seed (a dry run's plan), and for `--order name`, ties go by path.
        let plain = first_of(Order::Largest, WalkOrder::Name);
        assert_eq!(plain[..3], ["film.mkv", "episode00.mkv", "episode01.mkv"]);
        let named = first_of(Order::Name, alpha);
        assert_eq!(named[..2], ["episode00.mkv", "episode01.mkv"]);
    }

    #[test]
    fn audio_lossless_converts_and_lossy_is_skipped() {
        let (f, rules) = file("a.wav", MediaKind::Audio, 3600);
        let pcm = info(vec![stream(StreamKind::Audio, "pcm_s16le")]);
        let Decision::Convert(plan) = decide(&f, &pcm, &rules) else {
            panic!()
        };
        assert_eq!(
            (plan.container, plan.min_savings_pct),
            (Container::Flac, 10.0)
        );
        let ape = info(vec![stream(StreamKind::Audio, "ape")]);
        let Decision::Convert(plan) = decide(&f, &ape, &rules) else {
            panic!()
        };
        assert_eq!(plan.min_savings_pct, 0.0);
        let mp3 = info(vec![stream(StreamKind::Audio, "mp3")]);
        assert_eq!(reason(decide(&f, &mp3, &rules)), SkipReason::Lossy);
        let flac = info(vec![stream(StreamKind::Audio, "flac")]);
        assert_eq!(
            reason(decide(&f, &flac, &rules)),
            SkipReason::AlreadyEfficient
        );
    }

    #[test]
    fn calibration_goes_by_codec_and_resolution_then_codec_then_the_model() {
        let video = |codec: &str, width, height| SourceVideo {
            codec: codec.into(),
            width,
            height,
        };
        let (hd, sd) = (video("h264", 1920, 1080), video("h264", 640, 480));
        let mut calibration = Calibration::default();
        calibration.learn(&hd, 1000, 300);
        calibration.learn(&hd, 1000, 500);
        assert_eq!(calibration.estimate(&hd, 100), None, "two say too little");
        // A conversion not worth keeping counts with no saving.
        calibration.learn(&hd, 1000, 1000);
        assert_eq!(calibration.estimate(&hd, 100), Some(60));
        // No SD conversion seen: the codec's figure over every size.
        assert_eq!(calibration.estimate(&sd, 100), Some(60));
        for _ in 0..3 {
            calibration.learn(&sd, 1000, 200);
        }
        assert_eq!(calibration.estimate(&sd, 100), Some(20));
        assert_eq!(calibration.estimate(&hd, 100), Some(60));
        assert_eq!(
            calibration.estimate(&video("mpeg2video", 720, 576), 100),
            None
        );

        let (mut file, rules) = file("a.mkv", MediaKind::Video, 3600);
        file.size = 1000;
        let info = info(vec![Stream {
            width: Some(640),
            height: Some(480),
            ..stream(StreamKind::Video, "h264")
        }]);
        let Decision::Convert(mut plan) = decide(&file, &info, &rules) else {
            panic!("h264 converts");
        };
        assert_eq!(plan.source, Some(sd));
        calibrate(&mut plan, file.size, &calibration);
        assert_eq!(plan.estimated_bytes, 200);
    }
}
