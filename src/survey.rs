//! What each scanned file is: answered by the directory's cache where its entry is fresh,
//! else by ffprobe, many at once; what ffprobe says is recorded for every host.
//!
//! A warm survey costs one read of each directory's cache and nothing per file beyond the
//! scan's one stat: no ffprobe, no second stat. Files are handed to the caller one at a time
//! and not kept, so a library of any size is surveyed in little memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::cache::{
    self, CacheWarning, DirCache, FactsSource, Fingerprint, HistorySkip, LoadProblem, Loaded,
    Recorder,
};
use crate::config::{MediaKind, MediaType};
use crate::decide::{self, Decision, Rules, SkipReason};
use crate::header;
use crate::output::{Event, Reporter};
use crate::probe::{self, MediaInfo};
use crate::scan::{self, MediaFile};
use crate::signal;

/// How a survey runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The ffprobe to run.
    pub ffprobe: &'a Path,
    /// Files too new by these rules (a download in progress) are skipped before anything
    /// reads them.
    pub rules: &'a Rules,
    /// How many ffprobe processes run at once.
    pub probe_jobs: usize,
    /// Look again at files that failed [`cache::FAILURE_LIMIT`] times.
    pub retry_failed: bool,
    /// Count ffprobe failures toward the failure limit (not in a dry run, which only looks).
    pub record_failures: bool,
}

/// What is known about one file.
#[derive(Debug)]
pub enum Known<'a> {
    /// Its probe facts, from the cache or from ffprobe just now.
    Facts {
        info: &'a MediaInfo,
        source: FactsSource,
    },
    /// Left alone before probing: too new, or the cache's history says so (not smaller,
    /// failed too often; then `host` is the host that learned it).
    Skip {
        reason: SkipReason,
        detail: String,
        host: Option<String>,
    },
    /// ffprobe cannot read it.
    Unreadable { error: String },
}

/// What the caller wants after seeing a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    /// The facts were the legacy cache's, and the caller needs a full probe (to convert).
    ProbeFully,
}

/// Counts of a survey.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Files surveyed.
    pub files: u64,
    /// Modified within `--min-age`: left for later, not read.
    pub too_new: u64,
    /// Answered by a fresh cache entry, without ffprobe.
    pub from_cache: u64,
    /// Video already efficient by its headers, read natively: no ffprobe.
    pub from_headers: u64,
    /// Probed by ffprobe.
    pub probed: u64,
    /// ffprobe could not read them.
    pub unreadable: u64,
}

/// Surveys files given directory by directory (see [`walk_library`]), calling `on_known` once for each file (twice for one
/// it sends back with [`Next::ProbeFully`]), and records what ffprobe learns in the caches
/// of their directories, each directory's as soon as its last file is probed.
pub fn survey(
    batches: impl IntoIterator<Item = DirBatch>,
    options: &Options<'_>,
    recorder: &mut Recorder,
    reporter: &Reporter,
    mut on_known: impl FnMut(&MediaFile, Known<'_>) -> Next,
) -> Report {
    let mut report = Report::default();
    let mut dirs = Vec::new();
    let mut unprobed = Vec::new();
    let mut jobs: Vec<(usize, MediaFile)> = Vec::new();

    for (group, batch) in batches.into_iter().enumerate() {
        unprobed.push(0usize);
        let DirBatch {
            dir,
            files,
            cache: loaded,
        } = batch;
        match loaded.problem {
            Some(LoadProblem::Newer(version)) => {
                recorder.leave_alone(&dir, version);
                warn(reporter, &dir, &LoadProblem::Newer(version).to_string());
            }
            Some(problem) => warn(reporter, &dir, &problem.to_string()),
            None => {}
        }
        if loaded.cache.needs_rewrite() {
            recorder.rewrite(&dir);
        }
        recorder.learn(&loaded.cache);
        for file in files {
            report.files += 1;
            if let Some(Decision::Skip { reason, detail }) = decide::too_new(&file, options.rules) {
                report.too_new += 1;
                on_known(
                    &file,
                    Known::Skip {
                        reason,
                        detail,
                        host: None,
                    },
                );
                continue;
            }
            let entry = file
                .path
                .file_name()
                .and_then(cache::key_of)
                .and_then(|key| loaded.cache.fresh(&key, Fingerprint::of(&file)));
            let known = entry.and_then(|entry| match entry.history_skip(options.retry_failed) {
                Some(HistorySkip {
                    reason,
                    detail,
                    host,
                }) => Some(Known::Skip {
                    reason,
                    detail,
                    host: Some(host),
                }),
                // No facts: an earlier probe failed, below the limit; try again.
                None => entry.info.as_ref().map(|info| Known::Facts {
                    info,
                    source: entry.facts,
                }),
            });
            let native = known
                .is_none()
                .then(|| efficient_by_headers(&file))
                .flatten();
            let next = match (known, &native) {
                (Some(known), _) => on_known(&file, known),
                (None, Some(info)) => on_known(
                    &file,
                    Known::Facts {
                        info,
                        source: FactsSource::Headers,
                    },
                ),
                (None, None) => Next::ProbeFully,
            };
            match next {
                Next::Done if native.is_some() => report.from_headers += 1,
                Next::Done => report.from_cache += 1,
                Next::ProbeFully => {
                    unprobed[group] += 1;
                    jobs.push((group, file));
                }
            }
        }
        if unprobed[group] == 0 && recorder.has_pending(&dir) {
            report_warnings(reporter, recorder.flush(&dir, cache::WRITE_PATIENCE));
        }
        dirs.push(dir);
    }

    probe_all(&jobs, options, reporter, |group, file, result| {
        match result {
            Ok(info) => {
                report.probed += 1;
                on_known(
                    file,
                    Known::Facts {
                        info: &info,
                        source: FactsSource::Ffprobe,
                    },
                );
                recorder.facts(file, info, FactsSource::Ffprobe);
            }
            Err(err) => {
                report.unreadable += 1;
                let error = err.to_string();
                // ffprobe ran and could not read the file: that is the file's failure. One
                // that could not even start says nothing about the file.
                if options.record_failures && err.0.status.is_some() {
                    recorder.failed(file, &error, &err.0.stderr_tail);
                }
                on_known(file, Known::Unreadable { error });
            }
        }
        unprobed[group] -= 1;
        if unprobed[group] == 0 {
            report_warnings(
                reporter,
                recorder.flush(&dirs[group], cache::WRITE_PATIENCE),
            );
        }
    });
    // Directories left with news: lock held too long, or interrupted before their last probe.
    report_warnings(reporter, recorder.flush_all(cache::WRITE_PATIENCE));
    report
}

/// A video file's facts read natively from its headers, when they show its main video
/// already efficient: all the survey needs to skip it. Anything else goes to ffprobe.
fn efficient_by_headers(file: &MediaFile) -> Option<MediaInfo> {
    if file.kind != MediaKind::Video {
        return None;
    }
    let info = header::read(&file.path).ok()?;
    let video = info.main_video()?;
    decide::EFFICIENT_VIDEO_CODECS
        .contains(&video.codec.as_str())
        .then_some(info)
}

/// Runs ffprobe on every job, `probe_jobs` at a time, handing each result to `done` on the
/// calling thread as soon as it is ready. Stops starting new probes on Ctrl-C.
fn probe_all(
    jobs: &[(usize, MediaFile)],
    options: &Options<'_>,
    reporter: &Reporter,
    mut done: impl FnMut(usize, &MediaFile, Result<MediaInfo, probe::ProbeError>),
) {
    if jobs.is_empty() {
        return;
    }
    let mut counter = reporter.counter("probing", jobs.len() as u64);
    let next = AtomicUsize::new(0);
    let (sender, results) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..options.probe_jobs.clamp(1, jobs.len()) {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || {
                while !signal::interrupted() {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, file)) = jobs.get(index) else {
                        break;
                    };
                    let result = probe::probe(options.ffprobe, &file.path);
                    if sender.send((index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        // The loop below ends when the last worker hangs up.
        drop(sender);
        for (index, result) in results {
            if let Some((group, file)) = jobs.get(index) {
                done(*group, file, result);
            }
            counter.inc();
        }
    });
}

/// A directory as a survey takes it: its media files (of the run's type) and its cache.
#[derive(Debug)]
pub struct DirBatch {
    /// The directory, as the walk reached it.
    pub dir: PathBuf,
    /// Its media files of the run's type, sorted by name.
    pub files: Vec<MediaFile>,
    /// Its cache as read.
    pub cache: Loaded,
}

impl DirBatch {
    /// Reads the cache of `dir` for these files.
    pub fn load(dir: PathBuf, files: Vec<MediaFile>) -> DirBatch {
        let cache = DirCache::load(&dir);
        DirBatch { dir, files, cache }
    }
}

/// Directories are handed over in chunks of about this many files: one hand-off per
/// directory would wake the survey thread ten thousand times for a large library, and those
/// wake-ups cost more than the hand-over itself.
const CHUNK_FILES: usize = 1000;

/// How many chunks the walk may get ahead of the survey: enough to keep both busy, little
/// enough that a huge library is never all in memory.
const WALK_BACKLOG: usize = 16;

/// Walks a library on another thread while `consume` reads each directory's cache and
/// surveys its files: the walk is mostly the kernel listing and stat-ing, the survey mostly
/// parsing and deciding, so on two cores they overlap. Caches are read here, on the
/// consuming thread, not by the walker: their many small allocations are then freed by the
/// thread that made them, which glibc's allocator does far faster. What the walk cannot
/// read is reported as it is found.
pub fn walk_library<R>(
    root: &Path,
    follow_links: bool,
    media_type: MediaType,
    reporter: &Reporter,
    consume: impl FnOnce(&mut dyn Iterator<Item = DirBatch>) -> R,
) -> R {
    let (sender, receiver) = mpsc::sync_channel::<Vec<(PathBuf, Vec<MediaFile>)>>(WALK_BACKLOG);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut chunk = Vec::new();
            let mut chunk_files = 0;
            // Once the consumer has stopped listening the sends fail, and nothing is lost.
            scan::walk(
                root,
                follow_links,
                &mut |dir, mut files| {
                    files.retain(|f| media_type.includes(f.kind));
                    if files.is_empty() {
                        return;
                    }
                    chunk_files += files.len();
                    chunk.push((dir, files));
                    if chunk_files >= CHUNK_FILES {
                        chunk_files = 0;
                        let _ = sender.send(std::mem::take(&mut chunk));
                    }
                },
                &mut |warning| {
                    reporter.emit(Event::Warning {
                        file: Some(warning.path.to_string_lossy().into_owned()),
                        message: warning.message,
                    });
                },
            );
            if !chunk.is_empty() {
                let _ = sender.send(chunk);
            }
        });
        consume(
            &mut receiver
                .into_iter()
                .flatten()
                .map(|(dir, files)| DirBatch::load(dir, files)),
        )
    })
}

fn warn(reporter: &Reporter, dir: &Path, message: &str) {
    reporter.emit(Event::Warning {
        file: Some(
            dir.join(cache::CACHE_FILE_NAME)
                .to_string_lossy()
                .into_owned(),
        ),
        message: message.to_owned(),
    });
}

/// Shows what the cache could not do; the run goes on regardless.
pub fn report_warnings(reporter: &Reporter, warnings: Vec<CacheWarning>) {
    for warning in warnings {
        warn(reporter, &warning.dir, &warning.message);
    }
}
