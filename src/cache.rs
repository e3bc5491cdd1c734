//! The shared metadata cache: one `.mediabox_cache.json` per media directory, read and
//! written by every host that works on the library.
//!
//! An entry is keyed by the file's name (Unicode NFC), never by a path, so hosts that mount
//! the share at `/mnt/media`, `/Volumes/media` or `Z:\` share it. It holds the file's
//! fingerprint (size, mtime), its probe facts ([`MediaInfo`]) and its history (converted,
//! not smaller, failed). A fresh entry answers without running ffprobe.
//!
//! Writers update a directory's cache under a short lock (`.mediabox_cache.json.lock`, a
//! `mkdir` guard like the claim's), re-read it, merge their news into what is there now, write a temp
//! file, `sync_all` it and rename it over. Readers never lock. A cache that cannot be read,
//! locked or written costs re-probing, never a run: every problem comes back as a value.
//!
//! The format is documented in `docs/cache.md`; the original Python tool's format is read by
//! `cache/legacy.rs`.

mod legacy;
/// `cache stats`: the figures and how they are counted.
pub mod stats;
mod store;

pub(crate) use store::{Leftover, leftover};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use unicode_normalization::{UnicodeNormalization, is_nfc};

use crate::clock;
use crate::decide::{self, Calibration, SkipReason, SourceVideo};
use crate::encoder::Quality;
use crate::probe::MediaInfo;
use crate::quality::{Metric, Score, Target};
use crate::scan::MediaFile;

/// The cache file in each media directory. Hidden and containing `.mediabox`, so scans skip it.
pub const CACHE_FILE_NAME: &str = ".mediabox_cache.json";

/// The schema version this build reads and writes. It changes only when older builds must
/// not use a file any more; they then leave it alone (see `docs/cache.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// After this many failures, on any hosts, a file is skipped until `--retry-failed`.
pub const FAILURE_LIMIT: u32 = 3;

/// How far apart two mtimes may be and still be the same file's.
///
/// FAT stores mtimes in 2-second steps and SMB servers may drop the sub-second part, so the
/// same unchanged file can show mtimes up to 2 s apart on two hosts. Sizes must match exactly.
pub const MTIME_TOLERANCE_SECS: f64 = 2.0;

/// How long a write waits for another host's cache lock while a run is busy.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(2);

/// How long the last write of a run waits: it is all that stands between this run's news and
/// the next host.
pub const FINAL_WRITE_PATIENCE: Duration = Duration::from_secs(10);

/// Most stderr lines kept with a failure: enough to see why, small enough to keep caches small.
const MAX_STDERR_LINES: usize = 10;

/// Most characters kept of one error or stderr line.
const MAX_MESSAGE_CHARS: usize = 1000;

/// What tells an unchanged file from a changed one without reading it: its size and mtime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fingerprint {
    /// Bytes.
    pub size: u64,
    /// Seconds since the Unix epoch (negative before it).
    pub mtime: f64,
}

impl Fingerprint {
    /// The fingerprint of a scanned file, from the metadata the scan already read.
    pub fn of(file: &MediaFile) -> Fingerprint {
        Fingerprint {
            size: file.size,
            mtime: unix_secs(file.modified),
        }
    }

    /// Same size, and mtimes within [`MTIME_TOLERANCE_SECS`].
    pub fn matches(self, other: Fingerprint) -> bool {
        self.size == other.size && (self.mtime - other.mtime).abs() <= MTIME_TOLERANCE_SECS
    }
}

/// Seconds since the Unix epoch, negative for earlier times.
pub fn unix_secs(time: SystemTime) -> f64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// The cache key of a file name: the name in Unicode NFC.
///
/// macOS clients may hand the share decomposed (NFD) names where Linux and Windows clients
/// use composed ones; normalising makes both find the same entry. A name that is not valid
/// Unicode has no key: such a file is probed every time rather than risk two names sharing an
/// entry.
pub fn key(name: &OsStr) -> Option<String> {
    key_of(name).map(Cow::into_owned)
}

/// [`key`] without a copy when the name is already NFC, as nearly every name is: lookups of a
/// large library make one per file.
pub fn key_of(name: &OsStr) -> Option<Cow<'_, str>> {
    let name = name.to_str()?;
    Some(if is_nfc(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    })
}

/// Where an entry's probe facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactsSource {
    /// A full ffprobe of the file.
    #[default]
    Ffprobe,
    /// The original tool's cache: enough to decide, not to convert (no stream list).
    Legacy,
    /// The file's own headers, read natively by the survey: enough to skip video that is
    /// already efficient, not to convert; never recorded.
    Headers,
}

impl FactsSource {
    fn is_ffprobe(&self) -> bool {
        *self == FactsSource::Ffprobe
    }
}

/// What the cache knows about one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The fingerprint the facts and the fingerprint-bound history belong to: bytes...
    pub size: u64,
    /// ...and mtime, seconds since the Unix epoch.
    pub mtime: f64,
    /// The probe facts; absent when the file could not be probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<MediaInfo>,
    #[serde(default, skip_serializing_if = "FactsSource::is_ffprobe")]
    pub facts: FactsSource,
    /// The last conversion that produced this file. Kept when the file changes later: it is
    /// history, not a claim about the current content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted: Option<Box<Converted>>,
    /// A conversion was not worth keeping; no host tries again while the fingerprint holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_smaller: Option<Box<NotSmaller>>,
    /// Probing or converting failed; counts toward [`FAILURE_LIMIT`] while the fingerprint holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Box<Failed>>,
    /// A `--target-vmaf`/`--target-ssim` search of this content: no host repeats it while
    /// the fingerprint holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Box<Searched>>,
    /// Searches of this content for other questions (another encoder, target or preset)
    /// made before `search`: a GPU host's NVENC search stays beside the libx265 search of
    /// its redone encode, so that a GPU host meeting the file again does not search again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_searches: Vec<Searched>,
    /// The original tool's history fields (`action`, `conversion_count`, ...), kept as found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A conversion that replaced the original.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Converted {
    /// When, by the converting host's clock (RFC 3339, UTC); for people, never compared.
    pub at: String,
    /// The converting host's name.
    pub host: String,
    /// ffmpeg's name of the encoder (`libx265`, `hevc_nvenc`, ...).
    pub encoder: String,
    /// The hardware encode that came first and was redone with libx265, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// The original's size.
    pub before_bytes: u64,
    /// The converted file's size.
    pub after_bytes: u64,
    /// Wall-clock seconds the conversion took, verification included.
    pub seconds: f64,
    /// The original's name when the conversion changed it (`old.avi` -> `old.mkv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The original's video, which the estimates of later plans of its kind go by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceVideo>,
    /// The score the new file achieved against the original (`--target-*` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    /// The quality search of the original's content, kept from its entry as history: a
    /// neighbour's search may start from it ([`DirCache::searches`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Box<Searched>>,
}

/// A hardware encode that was redone with libx265: it failed, its output failed
/// verification, or its output missed the quality target (`docs/encoders.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fallback {
    /// The hardware encoder.
    pub from: String,
    /// Why it was redone: ffmpeg's message, the failed verification, or the score missed.
    pub error: String,
    /// The score its output achieved against the original, when that is why it was redone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

/// What a conversion made, as [`Recorder::converted`] records it.
#[derive(Debug, Clone)]
pub struct Made<'a> {
    /// The new file: the original's path, or the same name with a new extension.
    pub output: &'a Path,
    pub after_bytes: u64,
    pub encoder: &'a str,
    /// The hardware encode redone with libx265 first, if one was.
    pub fallback: Option<Fallback>,
    pub seconds: f64,
    /// The original's video, which later estimates of its kind go by.
    pub source: Option<SourceVideo>,
    /// The score the new file achieved against the original (`--target-*` runs).
    pub score: Option<Score>,
}

/// What a quality search found for one file's content (`docs/quality.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Searched {
    /// When, by the searching host's clock (RFC 3339, UTC).
    pub at: String,
    /// The searching host.
    pub host: String,
    /// The metric of the target.
    pub metric: Metric,
    /// The score aimed at.
    pub target: f64,
    /// The encoder the trials ran on, and its preset: a search holds for those only.
    pub encoder: String,
    pub preset: String,
    /// The `--quality` value found; absent when even the best value missed the target.
    /// A whole value, or a tenth where the encoder takes one; records written before
    /// tenths existed hold integers, which read as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// The whole file's predicted size at that quality.
    pub predicted_bytes: u64,
    /// The samples' score at that quality.
    pub predicted_score: f64,
    /// Seconds of the source the samples covered.
    pub sample_secs: f64,
    /// Wall-clock seconds the search took.
    pub seconds: f64,
    /// Every trial, in the order made.
    pub trials: Vec<Trial>,
    /// The neighbour's result the search started from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
    /// Ended at a trial below the target whose predicted size already missed
    /// `--min-savings`: no quality is claimed, and the prediction (bytes, score) is that
    /// trial's, the bytes a lower bound of what meeting the target takes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_short: bool,
}

/// A neighbour's search result another file's search starts from: its first trial is
/// that quality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seed {
    /// The neighbour's name in the folder.
    pub file: String,
    /// The quality its search found.
    pub quality: Quality,
}

/// One trial of a search: the samples encoded at one `--quality` value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub quality: Quality,
    /// The samples' mean score, frame-weighted.
    pub score: f64,
    /// The encoded samples' bytes.
    pub bytes: u64,
}

impl Searched {
    /// Its predicted size, as the history keeps it when that was too large: a lower bound
    /// for a search cut short.
    pub fn too_large(&self) -> TooLarge {
        TooLarge {
            bytes: self.predicted_bytes,
            at_least: self.cut_short,
        }
    }

    /// Whether the search answers a run's question: the same target, encoder and preset.
    pub fn answers(&self, target: Target, encoder: &str, preset: &str) -> bool {
        self.metric == target.metric
            && (self.target - target.score).abs() < 1e-9
            && self.encoder == encoder
            && self.preset == preset
    }

    /// The question it answers: its target, encoder and preset.
    fn question(&self) -> (Target, String, String) {
        let target = Target {
            metric: self.metric,
            score: self.target,
        };
        (target, self.encoder.clone(), self.preset.clone())
    }
}

/// A conversion whose result was not enough smaller; the original was kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotSmaller {
    /// When, by that host's clock (RFC 3339, UTC).
    pub at: String,
    /// The host that tried.
    pub host: String,
    /// How far it got and why the result was not kept.
    pub detail: String,
    /// The new file's size that decided it (made by the encode, or predicted by the quality
    /// search), when known: a run whose `--min-savings` that size meets tries the file again.
    /// Absent in records written before it existed, and for an encode stopped as it grew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `bytes` is only a lower bound (a search cut short): the size may be larger still.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub at_least: bool,
}

impl NotSmaller {
    /// Whether the new file still misses `min_savings_pct` of the original's `size`: always
    /// when no size was recorded; else by the recorded size (a lower bound that meets the
    /// bar may still miss it, and the file is tried again to find out).
    pub fn misses(&self, size: u64, min_savings_pct: f64) -> bool {
        self.bytes
            .is_none_or(|bytes| !decide::saves_enough(size, bytes, min_savings_pct))
    }
}

/// The new file's size that made a conversion not worth keeping, for the history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TooLarge {
    pub bytes: u64,
    /// Only a lower bound of the size (a search cut short).
    pub at_least: bool,
}

/// The failures of a file, on all hosts, since its fingerprint last changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// When the last failure happened, by that host's clock.
    pub at: String,
    /// The host of the last failure.
    pub host: String,
    /// The last failure's error.
    pub error: String,
    /// Failures so far, on all hosts.
    pub attempts: u32,
    /// The last lines the failing tool wrote to stderr, when they were available apart from
    /// the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
}

impl Entry {
    fn new(fingerprint: Fingerprint) -> Entry {
        Entry {
            size: fingerprint.size,
            mtime: fingerprint.mtime,
            info: None,
            facts: FactsSource::Ffprobe,
            converted: None,
            not_smaller: None,
            failed: None,
            search: None,
            other_searches: Vec::new(),
            legacy: None,
        }
    }

    /// The search of this content that answers a run's question (the same target, encoder
    /// and preset), if a host made one.
    pub fn search_for(&self, target: Target, encoder: &str, preset: &str) -> Option<&Searched> {
        self.search
            .as_deref()
            .into_iter()
            .chain(&self.other_searches)
            .find(|s| s.answers(target, encoder, preset))
    }

    /// Records `searched` as this content's latest search; the one it follows stays in
    /// `other_searches` unless it answered the same question.
    fn add_search(&mut self, searched: Searched) {
        let question = searched.question();
        self.other_searches
            .retain(|s| !s.answers(question.0, &question.1, &question.2));
        if let Some(previous) = self.search.replace(Box::new(searched))
            && !previous.answers(question.0, &question.1, &question.2)
        {
            self.other_searches.push(*previous);
        }
    }

    /// The fingerprint the entry describes.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            size: self.size,
            mtime: self.mtime,
        }
    }

    /// Whether the history says to leave the file alone: failed too often, or not smaller
    /// enough for a run asking `min_savings_pct` (a record made under a higher bar may not
    /// hold under a lower one).
    pub fn history_skip(&self, retry_failed: bool, min_savings_pct: f64) -> Option<HistorySkip> {
        if let Some(failed) = &self.failed {
            if failed.attempts >= FAILURE_LIMIT && !retry_failed {
                return Some(HistorySkip {
                    reason: SkipReason::TooManyFailures,
                    detail: format!(
                        "failed {} times, last on {}: {}; --retry-failed tries again",
                        failed.attempts,
                        failed.host,
                        first_line(&failed.error)
                    ),
                    host: failed.host.clone(),
                });
            }
        }
        let size = self.size;
        let not_smaller = self.not_smaller.as_ref();
        not_smaller
            .filter(|record| record.misses(size, min_savings_pct))
            .map(|not_smaller| HistorySkip {
                reason: SkipReason::NotSmaller,
                detail: format!(
                    "{} found it would not shrink enough: {}",
                    not_smaller.host, not_smaller.detail
                ),
                host: not_smaller.host.clone(),
            })
    }

    /// Moves the entry to a new fingerprint: facts and the history bound to the old content go.
    fn refingerprint(&mut self, fingerprint: Fingerprint) {
        if !self.fingerprint().matches(fingerprint) {
            self.info = None;
            self.facts = FactsSource::Ffprobe;
            self.not_smaller = None;
            self.failed = None;
            self.search = None;
            self.other_searches.clear();
        }
        self.size = fingerprint.size;
        self.mtime = fingerprint.mtime;
    }
}

/// Why the history skips a file, and which host learned it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySkip {
    /// `not_smaller` or `too_many_failures`.
    pub reason: SkipReason,
    /// For people: what happened, where, and what to do about it.
    pub detail: String,
    /// The host that learned it.
    pub host: String,
}

/// One directory's cache as read, for lookups.
#[derive(Debug, Default)]
pub struct DirCache {
    files: BTreeMap<CompactString, Entry>,
    needs_rewrite: bool,
}

/// A cache file that could not be used as it is. The run goes on without it.
#[derive(Debug)]
pub enum LoadProblem {
    /// Not JSON of a known shape: ignored now, set aside and rebuilt by the next write.
    Corrupt(String),
    /// Written by a newer media-converter: ignored and never overwritten by this one.
    Newer(u32),
    /// Could not be read at all (permissions, I/O error).
    Unreadable(std::io::Error),
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadProblem::Corrupt(why) => write!(
                f,
                "the cache is corrupt ({why}): ignored; the next write sets it aside as \
                 {CACHE_FILE_NAME}.corrupt-<time> and rebuilds it"
            ),
            LoadProblem::Newer(version) => write!(
                f,
                "the cache has schema version {version}, newer than this media-converter's \
                 {SCHEMA_VERSION}; it is ignored and left as it is (upgrade media-converter)"
            ),
            LoadProblem::Unreadable(err) => write!(f, "the cache cannot be read ({err})"),
        }
    }
}

/// A directory's cache and what was wrong with it, if anything.
#[derive(Debug)]
pub struct Loaded {
    /// What could be read; empty when nothing could.
    pub cache: DirCache,
    /// What was wrong, to report once.
    pub problem: Option<LoadProblem>,
    /// The stamp of the file read; `None` when there was none, or it could not be read.
    pub stamp: Option<CacheStamp>,
}

/// The size and mtime of a directory's cache file: a change means another writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStamp {
    len: u64,
    modified: SystemTime,
}

impl CacheStamp {
    /// The stamp of `dir`'s cache now; `None` when there is none.
    pub fn of(dir: &Path) -> Option<CacheStamp> {
        CacheStamp::of_metadata(&std::fs::metadata(dir.join(CACHE_FILE_NAME)).ok()?)
    }

    fn of_metadata(meta: &std::fs::Metadata) -> Option<CacheStamp> {
        Some(CacheStamp {
            len: meta.len(),
            modified: meta.modified().ok()?,
        })
    }
}

/// A directory's cache file as read and not yet parsed: the read is I/O and the parse is
/// CPU, so a walk reads each directory's cache on its own thread while another thread parses
/// (see [`DirCache::load`]).
#[derive(Debug)]
pub struct RawCache(std::io::Result<Option<(Vec<u8>, Option<CacheStamp>)>>);

impl RawCache {
    /// Reads `dir`'s cache file as the file server has it now (see [`DirCache::load`]).
    pub fn read(dir: &Path) -> RawCache {
        RawCache(store::read(dir))
    }

    /// Parses what was read. Never fails: a missing, unreadable or corrupt cache reads as
    /// empty, with the problem alongside for the caller to report.
    pub fn parse(self) -> Loaded {
        let (bytes, stamp) = match self.0 {
            Ok(Some(read)) => read,
            Ok(None) => {
                return Loaded {
                    cache: DirCache::default(),
                    problem: None,
                    stamp: None,
                };
            }
            Err(err) => {
                return Loaded {
                    cache: DirCache::default(),
                    problem: Some(LoadProblem::Unreadable(err)),
                    stamp: None,
                };
            }
        };
        let (cache, problem) = match parse(&bytes) {
            Parsed::Current(files) => (
                DirCache {
                    files,
                    needs_rewrite: false,
                },
                None,
            ),
            Parsed::Earlier(files) | Parsed::Legacy(files) => (
                DirCache {
                    files,
                    needs_rewrite: true,
                },
                None,
            ),
            Parsed::Newer(version) => (DirCache::default(), Some(LoadProblem::Newer(version))),
            Parsed::Corrupt(why) => (
                DirCache {
                    files: BTreeMap::new(),
                    needs_rewrite: true,
                },
                Some(LoadProblem::Corrupt(why)),
            ),
        };
        Loaded {
            cache,
            problem,
            stamp,
        }
    }
}

impl DirCache {
    /// Reads `dir`'s cache. Never fails: a missing, unreadable or corrupt cache reads as empty,
    /// with the problem alongside for the caller to report.
    pub fn load(dir: &Path) -> Loaded {
        RawCache::read(dir).parse()
    }

    /// The entry for a key (see [`key`]), fresh or not.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.files.get(key)
    }

    /// The entry for a key if it describes the file as it is now.
    pub fn fresh(&self, key: &str, fingerprint: Fingerprint) -> Option<&Entry> {
        self.get(key)
            .filter(|entry| entry.fingerprint().matches(fingerprint))
    }

    /// Whether the file on disk should be rewritten even with nothing new to add: it is in the
    /// legacy format, or corrupt.
    pub fn needs_rewrite(&self) -> bool {
        self.needs_rewrite
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every quality search the cache holds, with the file it was made of and that file's
    /// video frame size when known: the current content's searches, and those kept with
    /// conversions. What a neighbour's search starts from (`docs/quality.md`).
    pub fn searches(&self) -> impl Iterator<Item = (&str, Option<(u32, u32)>, &Searched)> {
        self.files.iter().flat_map(|(name, entry)| {
            let video = entry
                .info
                .as_ref()
                .and_then(SourceVideo::of)
                .map(|v| (v.width, v.height));
            let current = entry
                .search
                .as_deref()
                .into_iter()
                .chain(&entry.other_searches)
                .map(move |search| (name.as_str(), video, search));
            let kept = entry.converted.as_ref().and_then(|converted| {
                let video = converted.source.as_ref().map(|v| (v.width, v.height));
                let name = converted.from.as_deref().unwrap_or(name);
                converted
                    .search
                    .as_deref()
                    .map(|search| (name, video, search))
            });
            current.into_iter().chain(kept)
        })
    }

    /// Adds what its conversions came to, and its conversions not worth keeping (no saving),
    /// to `calibration`.
    pub fn teach(&self, calibration: &mut Calibration) {
        for entry in self.files.values() {
            if let Some(Converted {
                source: Some(source),
                before_bytes,
                after_bytes,
                ..
            }) = entry.converted.as_deref()
            {
                calibration.learn(source, *before_bytes, *after_bytes);
            }
            let kept = entry.not_smaller.as_ref().zip(entry.info.as_ref());
            if let Some(source) = kept.and_then(|(_, info)| SourceVideo::of(info)) {
                calibration.learn(&source, entry.size, entry.size);
            }
        }
    }
}

/// The key of the object that carries the schema version and the writer's name.
///
/// The original tool reads every top-level value of the file as one of its entries (it calls
/// `.get` on each), so every top-level value is an object, and neither this one nor `files`
/// has the `file_name` it looks for. Earlier builds wrote `version` and `written_by` at the
/// top level, which stops the original at start; such files are read, then rewritten.
const MARKER_KEY: &str = "media_converter";

/// The schema version and the writer, for readers and for people debugging a library.
#[derive(Serialize, Deserialize)]
struct Marker {
    version: u32,
    #[serde(default)]
    written_by: String,
}

/// The file format, version 1. Unknown top-level keys (entries the original tool added) are
/// ignored.
#[derive(Deserialize)]
struct CacheFile {
    #[serde(rename = "media_converter")]
    marker: Option<Marker>,
    /// Where earlier builds kept the schema version.
    version: Option<u32>,
    files: BTreeMap<CompactString, Entry>,
}

enum Parsed {
    Current(BTreeMap<CompactString, Entry>),
    /// Ours, in the earlier shape the original tool cannot read: rewritten at the next write.
    Earlier(BTreeMap<CompactString, Entry>),
    Legacy(BTreeMap<CompactString, Entry>),
    Newer(u32),
    Corrupt(String),
}

fn parse(bytes: &[u8]) -> Parsed {
    // The common case, parsed straight into the typed form: a warm scan reads thousands.
    // Checked as UTF-8 once, whole, the text's strings are not checked again one by one
    // (a tenth of the parse); a file that is not UTF-8 takes the byte parser for its error.
    let typed = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<CacheFile>(text),
        Err(_) => serde_json::from_slice::<CacheFile>(bytes),
    };
    let typed_error = match typed {
        Ok(file) => match (file.marker, file.version) {
            (Some(Marker { version, .. }), _) | (None, Some(version))
                if version > SCHEMA_VERSION =>
            {
                return Parsed::Newer(version);
            }
            (Some(_), _) => return Parsed::Current(file.files),
            (None, Some(_)) => return Parsed::Earlier(file.files),
            (None, None) => None,
        },
        Err(err) => Some(err),
    };
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(err) => return Parsed::Corrupt(err.to_string()),
    };
    // A newer schema may have changed a field's shape; its version still says so.
    let version = value
        .get(MARKER_KEY)
        .and_then(|marker| marker.get("version"))
        .or_else(|| value.get("version"))
        .and_then(serde_json::Value::as_u64);
    if let Some(version) = version.filter(|&v| v > u64::from(SCHEMA_VERSION)) {
        return Parsed::Newer(u32::try_from(version).unwrap_or(u32::MAX));
    }
    let why = typed_error.map_or_else(|| "no schema version".to_string(), |e| e.to_string());
    match value {
        serde_json::Value::Object(map)
            if !map.contains_key("version") && !map.contains_key(MARKER_KEY) =>
        {
            match legacy::parse(&map) {
                Some(files) => Parsed::Legacy(files),
                None => Parsed::Corrupt(format!("not a cache of a known format ({why})")),
            }
        }
        _ => Parsed::Corrupt(why),
    }
}

fn serialize(files: &BTreeMap<CompactString, Entry>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(rename = "media_converter")]
        marker: Marker,
        files: &'a BTreeMap<CompactString, Entry>,
    }
    let out = Out {
        marker: Marker {
            version: SCHEMA_VERSION,
            written_by: concat!("media-converter ", env!("CARGO_PKG_VERSION")).to_string(),
        },
        files,
    };
    // Serializing plain data to memory cannot fail; an empty Vec would only mean "no cache".
    serde_json::to_vec(&out).unwrap_or_default()
}

/// One change to a directory's cache, applied under its lock to what is there then.
#[derive(Debug, Clone)]
enum Update {
    Facts {
        name: String,
        fingerprint: Fingerprint,
        info: MediaInfo,
        source: FactsSource,
    },
    Failed {
        name: String,
        fingerprint: Fingerprint,
        failure: Failed,
    },
    NotSmaller {
        name: String,
        fingerprint: Fingerprint,
        record: NotSmaller,
    },
    Converted {
        original: String,
        output: String,
        output_fingerprint: Option<Fingerprint>,
        record: Converted,
    },
    /// Nothing new, but the file on disk must be rewritten (legacy format, corrupt).
    Rewrite,
}

/// Applies updates to the entries read under the lock. Increments (failure attempts) are
/// applied here, to the current count, so that two hosts failing at once count two.
fn merge(files: &mut BTreeMap<CompactString, Entry>, updates: Vec<Update>) {
    for update in updates {
        match update {
            Update::Facts {
                name,
                fingerprint,
                info,
                source,
            } => {
                let entry = files
                    .entry(name.into())
                    .or_insert_with(|| Entry::new(fingerprint));
                entry.refingerprint(fingerprint);
                // Full facts are never replaced by the legacy tool's partial ones.
                if source == FactsSource::Ffprobe
                    || entry.info.is_none()
                    || entry.facts == FactsSource::Legacy
                {
                    entry.info = Some(info);
                    entry.facts = source;
                }
            }
            Update::Failed {
                name,
                fingerprint,
                mut failure,
            } => {
                let entry = files
                    .entry(name.into())
                    .or_insert_with(|| Entry::new(fingerprint));
                entry.refingerprint(fingerprint);
                let before = entry.failed.as_ref().map_or(0, |f| f.attempts);
                failure.attempts = before.saturating_add(1);
                entry.failed = Some(Box::new(failure));
            }
            Update::NotSmaller {
                name,
                fingerprint,
                record,
            } => {
                let entry = files
                    .entry(name.into())
                    .or_insert_with(|| Entry::new(fingerprint));
                entry.refingerprint(fingerprint);
                entry.not_smaller = Some(Box::new(record));
            }
            Update::Converted {
                original,
                output,
                output_fingerprint,
                record,
            } => {
                let mut previous = files.remove(original.as_str());
                let mut record = record;
                // The search that was made of the original's content stays, as history.
                if record.search.is_none() {
                    record.search = previous.as_mut().and_then(|p| p.search.take());
                }
                if output != original {
                    // The original name is gone; its entry would only be pruned later.
                    files.remove(output.as_str());
                }
                // An unknown fingerprint never matches a file, so the output is probed next
                // time; the record survives either way.
                let fingerprint = output_fingerprint.unwrap_or(Fingerprint {
                    size: 0,
                    mtime: f64::MIN,
                });
                let mut entry = Entry::new(fingerprint);
                entry.legacy = previous.and_then(|p| p.legacy);
                entry.converted = Some(Box::new(record));
                files.insert(output.into(), entry);
            }
            Update::Rewrite => {}
        }
    }
}

/// The name of this host in the history, as locks name it too.
fn host_name() -> String {
    crate::identity::HostIdentity::current().hostname
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What the cache's history says about a file now, read afresh: for a run about to start
/// long work on a file that it surveyed a while ago.
pub fn history_now(
    file: &MediaFile,
    retry_failed: bool,
    min_savings_pct: f64,
) -> Option<HistorySkip> {
    let name = file.path.file_name().and_then(key_of)?;
    DirCache::load(&dir_of(&file.path))
        .cache
        .fresh(&name, Fingerprint::of(file))?
        .history_skip(retry_failed, min_savings_pct)
}

/// The quality search the cache holds for the file's current content, read afresh.
pub fn search_now(file: &MediaFile) -> Option<Searched> {
    let name = file.path.file_name().and_then(key_of)?;
    DirCache::load(&dir_of(&file.path))
        .cache
        .fresh(&name, Fingerprint::of(file))?
        .search
        .as_deref()
        .cloned()
}

/// Writes a quality search into the file's directory cache at once, for every host to use;
/// signed with this host's name.
pub fn record_search(file: &MediaFile, mut searched: Searched) -> std::io::Result<()> {
    let Some(name) = file.path.file_name().and_then(key) else {
        return Ok(());
    };
    searched.host = host_name();
    let fingerprint = Fingerprint::of(file);
    store::update(&dir_of(&file.path), FINAL_WRITE_PATIENCE, |files| {
        let entry = files
            .entry(name.as_str().into())
            .or_insert_with(|| Entry::new(fingerprint));
        entry.refingerprint(fingerprint);
        entry.add_search(searched.clone());
    })
    .map_err(|err| match err {
        store::WriteError::Io(err) => err,
        store::WriteError::Busy => std::io::Error::other("another host holds the cache's lock"),
        store::WriteError::Newer(v) => std::io::Error::other(format!(
            "the cache is of a newer version ({v}); not written"
        )),
    })
}

/// Forgets the failures recorded for the file named `name` in `dir`'s cache, so that every
/// host tries it again (the dashboard's retry); `Ok(false)` when it had none.
pub fn forget_failures(dir: &Path, name: &str) -> std::io::Result<bool> {
    let mut had = false;
    store::update(dir, FINAL_WRITE_PATIENCE, |files| {
        had = files.get_mut(name).and_then(|e| e.failed.take()).is_some();
    })
    .map_err(|err| match err {
        store::WriteError::Io(err) => err,
        store::WriteError::Busy => std::io::Error::other("another host holds the cache's lock"),
        store::WriteError::Newer(v) => std::io::Error::other(format!(
            "the cache is of a newer version ({v}); not written"
        )),
    })?;
    Ok(had)
}

/// The directory a file's cache lives in: its parent, or `.` for a bare relative name.
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What a flush could not do, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheWarning {
    /// The directory whose cache it is about.
    pub dir: PathBuf,
    /// For people: what went wrong and what happens now.
    pub message: String,
}

/// Collects what a run learns, per directory, and writes it to the caches.
///
/// Writes are bounded in time: a directory whose cache lock stays held keeps its news for the
/// next flush. A cache that cannot be written at all (a read-only share) is reported once per
/// run and the run goes on.
pub struct Recorder {
    host: String,
    pending: HashMap<PathBuf, Vec<Update>>,
    /// Directories whose cache is newer than this build: never written.
    newer: HashMap<PathBuf, u32>,
    warned_unwritable: bool,
    unwritable: usize,
    calibration: Calibration,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that signs its history with this host's name.
    pub fn new() -> Recorder {
        Recorder {
            host: host_name(),
            pending: HashMap::new(),
            newer: HashMap::new(),
            warned_unwritable: false,
            unwritable: 0,
            calibration: Calibration::default(),
        }
    }

    /// Learns what `cache`'s conversions came to, for the estimates of this run's plans.
    pub fn learn(&mut self, cache: &DirCache) {
        cache.teach(&mut self.calibration);
    }

    /// What the caches read so far say conversions come to.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// The host name written into history records.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn push(&mut self, file: &MediaFile, make: impl FnOnce(String, Fingerprint) -> Update) {
        let Some(name) = file.path.file_name().and_then(key) else {
            return;
        };
        let update = make(name, Fingerprint::of(file));
        self.pending
            .entry(dir_of(&file.path))
            .or_default()
            .push(update);
    }

    /// Remembers what ffprobe (or the legacy cache) said about a file.
    pub fn facts(&mut self, file: &MediaFile, info: MediaInfo, source: FactsSource) {
        self.push(file, |name, fingerprint| Update::Facts {
            name,
            fingerprint,
            info,
            source,
        });
    }

    /// Counts a failure to probe or convert a file toward [`FAILURE_LIMIT`].
    pub fn failed(&mut self, file: &MediaFile, error: &str, stderr_tail: &[String]) {
        let failure = Failed {
            at: clock::now_rfc3339(),
            host: self.host.clone(),
            error: bounded(error),
            // Filled in by the merge, from the count on disk at that moment.
            attempts: 0,
            stderr_tail: stderr_tail
                .iter()
                .rev()
                .take(MAX_STDERR_LINES)
                .rev()
                .map(|line| bounded(line))
                .collect(),
        };
        self.push(file, |name, fingerprint| Update::Failed {
            name,
            fingerprint,
            failure,
        });
    }

    /// Remembers that converting a file was not worth it, and by what size, so that no host
    /// tries again under a bar that size misses.
    pub fn not_smaller(&mut self, file: &MediaFile, detail: &str, size: Option<TooLarge>) {
        let record = NotSmaller {
            at: clock::now_rfc3339(),
            host: self.host.clone(),
            detail: bounded(detail),
            bytes: size.map(|s| s.bytes),
            at_least: size.is_some_and(|s| s.at_least),
        };
        self.push(file, |name, fingerprint| Update::NotSmaller {
            name,
            fingerprint,
            record,
        });
    }

    /// Records a conversion of `file` into `made.output` (the same path, or a new extension).
    pub fn converted(&mut self, file: &MediaFile, made: Made<'_>) {
        let Made {
            output,
            after_bytes,
            encoder,
            fallback,
            seconds,
            source,
            score,
        } = made;
        let Some(output_name) = output.file_name().and_then(key) else {
            return;
        };
        // The output keeps the original's mtime (the swap carries it over); stat it anyway,
        // since the fingerprint must be what the next scan will see.
        let output_fingerprint = std::fs::metadata(output).ok().map(|meta| Fingerprint {
            size: meta.len(),
            mtime: meta.modified().map_or(0.0, unix_secs),
        });
        let record = Converted {
            at: clock::now_rfc3339(),
            host: self.host.clone(),
            encoder: encoder.to_owned(),
            fallback,
            before_bytes: file.size,
            after_bytes,
            seconds,
            from: None,
            source,
            score,
            search: None,
        };
        self.push(file, |original, _| {
            let mut record = record;
            if original != output_name {
                record.from = Some(original.clone());
            }
            Update::Converted {
                original,
                output: output_name,
                output_fingerprint,
                record,
            }
        });
    }

    /// Asks for `dir`'s cache to be rewritten at the next flush (legacy format, corrupt).
    pub fn rewrite(&mut self, dir: &Path) {
        self.pending
            .entry(dir.to_path_buf())
            .or_default()
            .push(Update::Rewrite);
    }

    /// Notes that `dir`'s cache is newer than this build, so it is never written.
    pub fn leave_alone(&mut self, dir: &Path, version: u32) {
        self.newer.insert(dir.to_path_buf(), version);
        self.pending.remove(dir);
    }

    /// Whether anything waits to be written for `dir`.
    pub fn has_pending(&self, dir: &Path) -> bool {
        self.pending.contains_key(dir)
    }

    /// Writes what is pending for one directory, waiting at most `patience` for its lock.
    pub fn flush(&mut self, dir: &Path, patience: Duration) -> Vec<CacheWarning> {
        let Some(updates) = self.pending.remove(dir) else {
            return Vec::new();
        };
        if self.newer.contains_key(dir) {
            return Vec::new();
        }
        match store::update(dir, patience, |files| merge(files, updates.clone())) {
            // A corrupt cache was reported when it was read: once is enough.
            Ok(_) => Vec::new(),
            Err(store::WriteError::Busy) => {
                // Kept for the next flush; the run's last flush reports what never got written.
                self.pending.insert(dir.to_path_buf(), updates);
                Vec::new()
            }
            Err(store::WriteError::Newer(version)) => {
                self.newer.insert(dir.to_path_buf(), version);
                vec![CacheWarning {
                    dir: dir.to_path_buf(),
                    message: LoadProblem::Newer(version).to_string(),
                }]
            }
            Err(store::WriteError::Io(err)) => {
                self.unwritable += 1;
                if self.warned_unwritable {
                    return Vec::new();
                }
                self.warned_unwritable = true;
                vec![CacheWarning {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "cannot write the cache ({err}); going on without it (a read-only \
                         share?). Further cache write errors in this run are not reported \
                         one by one"
                    ),
                }]
            }
        }
    }

    /// Writes everything pending, waiting at most `patience` for each lock; what stays
    /// locked out is kept for a later flush.
    pub fn flush_all(&mut self, patience: Duration) -> Vec<CacheWarning> {
        let mut dirs: Vec<PathBuf> = self.pending.keys().cloned().collect();
        dirs.sort();
        dirs.iter()
            .flat_map(|dir| self.flush(dir, patience))
            .collect()
    }

    /// The run's last flush: writes everything pending and reports what could not be saved.
    pub fn finish(&mut self, patience: Duration) -> Vec<CacheWarning> {
        let mut warnings = self.flush_all(patience);
        let mut unsaved: Vec<PathBuf> = self.pending.drain().map(|(dir, _)| dir).collect();
        unsaved.sort();
        for dir in unsaved {
            warnings.push(CacheWarning {
                message: format!(
                    "the cache lock {} stayed held for {}s; this run's news for that \
                     directory is not saved (it will be learned again)",
                    dir.join(store::LOCK_FILE_NAME).display(),
                    patience.as_secs()
                ),
                dir,
            });
        }
        if self.unwritable > 1 {
            warnings.push(CacheWarning {
                dir: PathBuf::from("."),
                message: format!(
                    "{} directories' caches could not be written in this run",
                    self.unwritable
                ),
            });
        }
        self.unwritable = 0;
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediaKind;
    use crate::probe::{Stream, StreamKind};
    use std::fs;

    pub(super) fn info(codec: &str) -> MediaInfo {
        MediaInfo {
            container: "matroska,webm".into(),
            duration_secs: Some(1.0),
            bit_rate: Some(1000),
            streams: vec![Stream {
                pix_fmt: Some("yuv420p".into()),
                bit_depth: Some(8),
                width: Some(160),
                height: Some(90),
                ..Stream::new(0, StreamKind::Video, codec)
            }],
            chapters: 0,
        }
    }

    fn media(dir: &Path, name: &str, bytes: &[u8]) -> MediaFile {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        let meta = fs::metadata(&path).unwrap();
        MediaFile {
            path,
            kind: MediaKind::Video,
            size: meta.len(),
            modified: meta.modified().unwrap(),
            listing: None,
        }
    }

    /// The parse moves every file's entry twice (out of the JSON, into the map): the rare
    /// records (a conversion, a search, a failure, a conversion not worth keeping) live
    /// behind a pointer, not inline in every entry (808 bytes with them inline).
    #[test]
    fn an_entry_keeps_its_rare_records_out_of_line() {
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 256, "Entry is {size} bytes");
    }

    #[test]
    fn fingerprints_tolerate_coarse_timestamps_but_not_size_changes() {
        let base = Fingerprint {
            size: 100,
            mtime: 1_700_000_000.75,
        };
        // FAT rounds to 2 s; SMB may drop the fraction.
        for mtime in [1_700_000_000.0, 1_700_000_002.0, 1_699_999_998.75] {
            assert!(base.matches(Fingerprint { size: 100, mtime }), "{mtime}");
        }
        assert!(!base.matches(Fingerprint {
            size: 100,
            mtime: 1_700_000_003.0
        }));
        assert!(!base.matches(Fingerprint {
            size: 101,
            mtime: base.mtime
        }));
    }

    #[test]
    fn keys_are_nfc_and_reject_invalid_unicode() {
        let composed = "Am\u{e9}lie.mkv";
        let decomposed = "Ame\u{301}lie.mkv";
        assert_eq!(key(OsStr::new(decomposed)).as_deref(), Some(composed));
        assert_eq!(key(OsStr::new(composed)).as_deref(), Some(composed));
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            assert_eq!(key(OsStr::from_bytes(b"bad\xff.mkv")), None);
        }
    }

    #[test]
    fn unix_secs_handles_times_before_the_epoch() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(unix_secs(before), -1.5);
    }

    #[test]
    fn a_written_cache_reads_back_fresh_and_stale_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        let mut recorder = Recorder::new();
        recorder.facts(&file, info("h264"), FactsSource::Ffprobe);
        assert!(recorder.flush(dir.path(), WRITE_PATIENCE).is_empty());
        assert!(!recorder.has_pending(dir.path()));

        let loaded = DirCache::load(dir.path());
        assert!(loaded.problem.is_none());
        let entry = loaded.cache.fresh("a.mkv", Fingerprint::of(&file)).unwrap();
        assert_eq!(entry.info.as_ref().unwrap().streams[0].codec, "h264");
        let changed = Fingerprint {
            size: file.size + 1,
            ..Fingerprint::of(&file)
        };
        assert!(loaded.cache.fresh("a.mkv", changed).is_none());
        // Nothing absolute is stored: hosts with other mount points share the file.
        let text = fs::read_to_string(dir.path().join(CACHE_FILE_NAME)).unwrap();
        assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
    }

    #[test]
    fn failures_count_across_writers_and_reset_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "bad.mkv", b"garbage");
        for attempt in 1..=FAILURE_LIMIT {
            // A new recorder each time, as a new run (or another host) would be.
            let mut recorder = Recorder::new();
            recorder.failed(&file, "ffprobe cannot read it", &["line".into()]);
            recorder.flush(dir.path(), WRITE_PATIENCE);
            let loaded = DirCache::load(dir.path());
            let entry = loaded.cache.get("bad.mkv").unwrap();
            assert_eq!(entry.failed.as_ref().unwrap().attempts, attempt);
            assert_eq!(
                entry.history_skip(false, 10.0).is_some(),
                attempt >= FAILURE_LIMIT
            );
        }
        let entry = DirCache::load(dir.path())
            .cache
            .get("bad.mkv")
            .cloned()
            .unwrap();
        let skip = entry.history_skip(false, 10.0).unwrap();
        assert_eq!(skip.reason, SkipReason::TooManyFailures);
        assert!(skip.detail.contains("--retry-failed"), "{}", skip.detail);
        assert!(entry.history_skip(true, 10.0).is_none());

        // New content (a re-download): the old failures no longer apply.
        let replaced = media(dir.path(), "bad.mkv", b"a new download");
        let mut recorder = Recorder::new();
        recorder.facts(&replaced, info("h264"), FactsSource::Ffprobe);
        recorder.flush(dir.path(), WRITE_PATIENCE);
        let entry = DirCache::load(dir.path())
            .cache
            .get("bad.mkv")
            .cloned()
            .unwrap();
        assert!(entry.failed.is_none() && entry.info.is_some());
    }

    #[test]
    fn a_conversion_moves_the_entry_to_the_output_name_and_gone_files_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let original = media(dir.path(), "old.avi", b"0123456789");
        let other = media(dir.path(), "gone.mkv", b"x");
        let mut recorder = Recorder::new();
        recorder.facts(&original, info("mpeg4"), FactsSource::Ffprobe);
        recorder.facts(&other, info("h264"), FactsSource::Ffprobe);
        recorder.flush(dir.path(), WRITE_PATIENCE);
        assert_eq!(DirCache::load(dir.path()).cache.len(), 2);

        fs::remove_file(&other.path).unwrap();
        fs::rename(&original.path, dir.path().join("old.mkv")).unwrap();
        fs::write(dir.path().join("old.mkv"), b"0123").unwrap();
        recorder.converted(
            &original,
            Made {
                output: &dir.path().join("old.mkv"),
                after_bytes: 4,
                encoder: "libx265",
                fallback: None,
                seconds: 1.5,
                source: None,
                score: None,
            },
        );
        recorder.flush(dir.path(), WRITE_PATIENCE);

        let cache = DirCache::load(dir.path()).cache;
        assert_eq!(cache.len(), 1, "gone.mkv and old.avi are dropped");
        let entry = cache.get("old.mkv").unwrap();
        let converted = entry.converted.as_ref().unwrap();
        assert_eq!((converted.before_bytes, converted.after_bytes), (10, 4));
        assert_eq!(converted.from.as_deref(), Some("old.avi"));
        assert_eq!(entry.size, 4);
        assert!(entry.info.is_none(), "the output is probed next time");
    }

    #[test]
    fn not_smaller_is_remembered_for_the_same_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        let mut recorder = Recorder::new();
        recorder.facts(&file, info("h264"), FactsSource::Ffprobe);
        recorder.not_smaller(&file, "the new file is bigger", None);
        recorder.flush(dir.path(), WRITE_PATIENCE);
        let cache = DirCache::load(dir.path()).cache;
        let entry = cache.fresh("a.mkv", Fingerprint::of(&file)).unwrap();
        let skip = entry.history_skip(false, 10.0).unwrap();
        assert_eq!(skip.reason, SkipReason::NotSmaller);
        assert_eq!(skip.host, recorder.host());
        assert!(entry.info.is_some(), "facts survive a history record");
    }

    /// A record with the size that decided it holds only under a bar that size misses; a
    /// lower bound counts as the size (a file it no longer rules out is tried again); a
    /// record without a size (older, or an encode stopped as it grew) holds under any bar.
    #[test]
    fn not_smaller_holds_while_its_recorded_size_misses_the_bar() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", &[0; 100]);
        let skips = |size: Option<TooLarge>, pct: f64| {
            let mut recorder = Recorder::new();
            recorder.not_smaller(&file, "not smaller", size);
            recorder.flush(dir.path(), WRITE_PATIENCE);
            let cache = DirCache::load(dir.path()).cache;
            let entry = cache.fresh("a.mkv", Fingerprint::of(&file)).unwrap();
            entry.history_skip(false, pct).is_some()
        };
        for at_least in [false, true] {
            let made = Some(TooLarge {
                bytes: 60,
                at_least,
            });
            assert!(skips(made, 50.0), "60 of 100 bytes saves less than 50%");
            assert!(skips(made, 40.5), "nor 40.5%");
            assert!(!skips(made, 40.0), "it saves 40%");
            assert!(!skips(made, 0.0));
        }
        assert!(skips(None, 0.0));
        assert!(skips(None, 50.0));

        // Written by a build that recorded no size: held under any bar.
        let old = r#"{"at": "2024-01-01T00:00:00Z", "host": "nas", "detail": "x"}"#;
        let old: NotSmaller = serde_json::from_str(old).unwrap();
        assert_eq!((old.bytes, old.at_least), (None, false));
        assert!(old.misses(100, 0.0));
    }

    #[test]
    fn history_now_sees_what_another_host_recorded_since() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        assert_eq!(history_now(&file, false, 10.0), None);
        // Another host, another recorder.
        let mut other = Recorder::new();
        other.not_smaller(&file, "bigger", None);
        other.flush(dir.path(), WRITE_PATIENCE);
        let skip = history_now(&file, false, 10.0).unwrap();
        assert_eq!(skip.reason, SkipReason::NotSmaller);
        let changed = MediaFile {
            size: 4,
            ..file.clone()
        };
        assert_eq!(
            history_now(&changed, false, 10.0),
            None,
            "only for the same content"
        );
    }

    #[test]
    fn corrupt_caches_are_ignored_then_set_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        fs::write(
            dir.path().join(CACHE_FILE_NAME),
            b"{\"version\": 1, \"files\": {",
        )
        .unwrap();
        let loaded = DirCache::load(dir.path());
        assert!(matches!(loaded.problem, Some(LoadProblem::Corrupt(_))));
        assert!(loaded.cache.is_empty() && loaded.cache.needs_rewrite());

        let mut recorder = Recorder::new();
        recorder.facts(&file, info("h264"), FactsSource::Ffprobe);
        assert!(recorder.flush(dir.path(), WRITE_PATIENCE).is_empty());
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mediabox_cache.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            fs::read(dir.path().join(&aside[0])).unwrap(),
            b"{\"version\": 1, \"files\": {"
        );
        let loaded = DirCache::load(dir.path());
        assert!(loaded.problem.is_none());
        assert!(loaded.cache.get("a.mkv").is_some());
    }

    #[test]
    fn a_newer_schema_is_read_as_nothing_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        let newer = br#"{"version": 99, "files": {"a.mkv": {"whatever": true}}}"#;
        fs::write(dir.path().join(CACHE_FILE_NAME), newer).unwrap();
        let loaded = DirCache::load(dir.path());
        assert!(matches!(loaded.problem, Some(LoadProblem::Newer(99))));
        let mut recorder = Recorder::new();
        recorder.facts(&file, info("h264"), FactsSource::Ffprobe);
        let warnings = recorder.flush(dir.path(), WRITE_PATIENCE);
        assert!(warnings[0].message.contains("newer"), "{warnings:?}");
        assert_eq!(fs::read(dir.path().join(CACHE_FILE_NAME)).unwrap(), newer);
    }

    #[test]
    fn an_unwritable_directory_is_reported_once_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"abc");
        let gone = dir.path().join("no such directory").join("a.mkv");
        let ghost = MediaFile {
            path: gone.clone(),
            ..file.clone()
        };
        let mut recorder = Recorder::new();
        recorder.facts(&ghost, info("h264"), FactsSource::Ffprobe);
        let first = recorder.flush(&dir_of(&gone), WRITE_PATIENCE);
        assert_eq!(first.len(), 1);
        assert!(
            first[0].message.contains("cannot write the cache"),
            "{first:?}"
        );
        recorder.facts(&ghost, info("h264"), FactsSource::Ffprobe);
        assert!(recorder.flush(&dir_of(&gone), WRITE_PATIENCE).is_empty());
    }

    #[test]
    fn many_writers_at_once_lose_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<MediaFile> = (0..64)
            .map(|i| media(dir.path(), &format!("f{i:02}.mkv"), b"x"))
            .collect();
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for chunk in files.chunks(8) {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for file in chunk {
                        // One write per file: the most contention a directory can see.
                        let mut recorder = Recorder::new();
                        recorder.facts(file, info("h264"), FactsSource::Ffprobe);
                        let warnings = recorder.finish(FINAL_WRITE_PATIENCE);
                        assert!(warnings.is_empty(), "{warnings:?}");
                    }
                });
            }
        });
        let cache = DirCache::load(dir.path()).cache;
        assert_eq!(cache.len(), files.len());
        assert!(!dir.path().join(store::LOCK_FILE_NAME).exists());
    }

    #[test]
    fn parse_tells_current_earlier_legacy_newer_and_corrupt_apart() {
        assert!(matches!(
            parse(br#"{"media_converter":{"version":1},"files":{}}"#),
            Parsed::Current(f) if f.is_empty()
        ));
        // What the original tool adds beside our entries is ignored.
        assert!(matches!(
            parse(br#"{"media_converter":{"version":1},"files":{},"ab12":{"file_name":"x"}}"#),
            Parsed::Current(f) if f.is_empty()
        ));
        assert!(matches!(
            parse(br#"{"version":1,"files":{}}"#),
            Parsed::Earlier(f) if f.is_empty()
        ));
        assert!(matches!(parse(b"{}"), Parsed::Legacy(f) if f.is_empty()));
        // Names beyond ASCII, as they are and escaped, read alike.
        let entry = r#"{"size":1,"mtime":1.0}"#;
        for written in [r#""Straße.mkv""#, r#""Stra\u00dfe.mkv""#] {
            let text =
                format!(r#"{{"media_converter":{{"version":1}},"files":{{{written}:{entry}}}}}"#);
            assert!(
                matches!(parse(text.as_bytes()), Parsed::Current(f) if f.contains_key("Straße.mkv")),
                "{text}"
            );
        }
        for newer in [
            &br#"{"version":2,"files":[]}"#[..],
            br#"{"media_converter":{"version":2},"files":{}}"#,
            br#"{"media_converter":{"version":2},"files":[]}"#,
        ] {
            assert!(matches!(parse(newer), Parsed::Newer(2)));
        }
        for bad in [
            &b""[..],
            b"[1,2]",
            b"{\"version\":1}",
            b"{\"media_converter\":{\"version\":1}}",
            b"{\"files\":{}}",
            b"\x00\x01",
            b"{\"a\": 1}",
            // A name that is not UTF-8 makes the whole file unreadable as JSON.
            b"{\"media_converter\":{\"version\":1},\"files\":{\"\xff.mkv\":{\"size\":1,\"mtime\":1.0}}}",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Corrupt(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A cache as the builds before the short strings were kept inline wrote it reads, and
    /// is written back, byte for byte: the inline form changes nothing on the share, so
    /// older and newer hosts read each other's caches. File names short and long, in their
    /// order; every field of a stream, strings inline and not (a name of 24 bytes, the
    /// inline limit, and of 25), beyond ASCII and escaped; and a conversion's source video.
    #[test]
    fn a_cache_written_before_the_inline_strings_reads_and_writes_back_the_same() {
        let written = concat!(
            r#"{"media_converter":{"version":1,"written_by":"media-converter "#,
            env!("CARGO_PKG_VERSION"),
            r#""},"files":{"#,
            r#""Show Name - S01E01 - Pilot.mkv":{"size":1,"mtime":1.0},"#,
            r#""a.mp4":{"size":1000,"mtime":1700000000.5,"info":{"#,
            r#""container":"mov,mp4,m4a,3gp,3g2,mj2","duration_secs":60.0,"#,
            r#""bit_rate":4000000,"streams":[{"index":0,"kind":"video","codec":"hevc","#,
            r#""profile":"Main 10","pix_fmt":"yuv420p10le","bit_depth":10,"width":3840,"#,
            r#""height":2160,"language":"und","is_default":true,"color":{"#,
            r#""primaries":"bt2020","transfer":"smpte2084","space":"bt2020nc","range":"tv"},"#,
            r#""dolby_vision":true},{"index":1,"kind":"audio","codec":"eac3","#,
            r#""profile":"Dolby Digital Plus + Dolby Atmos","language":"fre","#,
            r#""forced":true,"hearing_impaired":true},{"index":2,"kind":"video","#,
            r#""codec":"mjpeg","attached_pic":true,"#,
            r#""filename":"couverture de l’été \"2\".jpg","mimetype":"image/jpeg"},"#,
            r#"{"index":3,"kind":"subtitle","codec":"a codec name of 25 bytes!","#,
            r#""language":"日本語"}],"chapters":12}},"#,
            r#""b.mkv":{"size":4,"mtime":1700000001.0,"converted":{"#,
            r#""at":"2026-01-01T00:00:00Z","host":"nas","encoder":"libx265","#,
            r#""before_bytes":10,"after_bytes":4,"seconds":1.5,"from":"b.avi","#,
            r#""source":{"codec":"a codec name of 24 bytes","width":720,"height":576}}}}}"#,
        );
        let Parsed::Current(files) = parse(written.as_bytes()) else {
            panic!("not read as a current cache");
        };
        let names: Vec<_> = files.keys().map(|name| name.is_heap_allocated()).collect();
        assert_eq!(
            names,
            [true, false, false],
            "a long name, and two short ones inline"
        );
        let info = files["a.mp4"].info.as_ref().unwrap();
        assert_eq!(info.streams[3].codec, "a codec name of 25 bytes!");
        assert!(info.streams[3].codec.is_heap_allocated());
        assert_eq!(
            info.streams[2].filename.as_deref(),
            Some("couverture de l’été \"2\".jpg")
        );
        // The point of the type: the names a warm scan reads by the hundred thousand take
        // no allocation of their own.
        let video = &info.streams[0];
        for short in [
            &info.container,
            &video.codec,
            video.profile.as_ref().unwrap(),
            video.pix_fmt.as_ref().unwrap(),
            video.language.as_ref().unwrap(),
            video.color.as_ref().unwrap().transfer.as_ref().unwrap(),
        ] {
            assert!(!short.is_heap_allocated(), "{short}");
        }
        let source = files["b.mkv"].converted.as_ref().unwrap().source.as_ref();
        assert!(!source.unwrap().codec.is_heap_allocated());
        assert_eq!(String::from_utf8(serialize(&files)).unwrap(), written);
    }

    #[test]
    fn a_search_for_another_encoder_keeps_the_first_beside_it() {
        // A GPU host searched with NVENC, its encode missed the target and was redone with
        // libx265, whose search was recorded too; the file was not converted in the end
        // (interrupted). When a GPU host meets it again, NVENC's search still answers.
        let dir = tempfile::tempdir().unwrap();
        let file = media(dir.path(), "a.mkv", b"content");
        let target = Target {
            metric: Metric::Vmaf,
            score: 95.0,
        };
        let searched = |encoder: &str, tenths: u16| Searched {
            at: "2026-01-01T00:00:00Z".into(),
            host: String::new(),
            metric: Metric::Vmaf,
            target: 95.0,
            encoder: encoder.into(),
            preset: "medium".into(),
            quality: Some(Quality::from_tenths(tenths)),
            predicted_bytes: 1,
            predicted_score: 95.1,
            sample_secs: 8.0,
            seconds: 1.0,
            trials: Vec::new(),
            seed: None,
            cut_short: false,
        };
        record_search(&file, searched("hevc_nvenc", 280)).unwrap();
        record_search(&file, searched("libx265", 263)).unwrap();
        // The same question again replaces its answer, never adds a second.
        record_search(&file, searched("libx265", 264)).unwrap();
        let cache = DirCache::load(dir.path()).cache;
        let entry = cache.fresh("a.mkv", Fingerprint::of(&file)).unwrap();
        let found = |encoder| {
            entry
                .search_for(target, encoder, "medium")
                .and_then(|s| s.quality)
        };
        assert_eq!(found("hevc_nvenc"), Some(Quality::from_tenths(280)));
        assert_eq!(found("libx265"), Some(Quality::from_tenths(264)));
        assert_eq!(
            entry.search.as_ref().unwrap().encoder,
            "libx265",
            "the latest"
        );
        assert_eq!(cache.searches().count(), 2, "both seed neighbours");
    }
}
