//! What each scanned file is: answered by the directory's cache where its entry is fresh,
//! else by ffprobe, many at once; what ffprobe says is recorded for every host.
//!
//! A warm survey costs one read of each directory's cache and nothing per file beyond the
//! scan's one stat: no ffprobe, no second stat. Files are handed to the caller one at a time
//! and not kept, so a library of any size is surveyed in little memory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use crate::cache::{
    self, CacheStamp, CacheWarning, DirCache, FactsSource, Fingerprint, HistorySkip, LoadProblem,
    Loaded, RawCache, Recorder,
};
use crate::config::MediaType;
use crate::decide::{self, Decision, Rules, SkipReason};
use crate::header;
use crate::output::{Counter, Event, Reporter};
use crate::probe::{self, MediaInfo};
use crate::scan::{self, MediaFile, WalkOrder};
use crate::signal;

/// How a survey runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The ffprobe to run.
    pub ffprobe: &'a Path,
    /// Files too new by these rules (a download in progress) are skipped before anything
    /// reads them.
    pub rules: &'a Rules,
    /// How many probes (native reads or ffprobe processes) run at once.
    pub probe_jobs: usize,
    /// Look again at files that failed [`cache::FAILURE_LIMIT`] times.
    pub retry_failed: bool,
    /// Count ffprobe failures toward the failure limit (not in a dry run, which only looks).
    pub record_failures: bool,
    /// Read Matroska and MP4 headers natively before asking ffprobe (see [`header`]).
    pub native_headers: bool,
    /// The order in which each directory's files are probed: a host's own, so that hosts
    /// starting together probe different files first.
    pub order: WalkOrder,
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
    /// The facts were partial (the legacy cache's, or the headers'), and the caller needs a
    /// full probe (to convert).
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
    /// Of those, answered by an entry another host wrote while this survey went on.
    pub from_fleet: u64,
    /// Decided by the facts read natively from their headers: no ffprobe.
    pub from_headers: u64,
    /// Probed by ffprobe.
    pub probed: u64,
    /// ffprobe could not read them.
    pub unreadable: u64,
}

/// A directory's cache is written at least this often while its files are being probed, so
/// that hosts surveying the same library find what this one learned and do not probe it
/// again.
const SHARE_EVERY: Duration = Duration::from_secs(1);

/// Surveys files given directory by directory (see [`walk_library`]), calling `on_known`
/// once for each file (twice for one it sends back with [`Next::ProbeFully`]) as soon as the
/// file is known: while the walk and the probes of other files go on. `on_known` is called
/// by one thread at a time: the calling thread for what the caches answer, and a thread of
/// the survey's own for what the probes find, so that a probe finished while the walk keeps
/// the calling thread waiting (a slow share) is heard of at once. What ffprobe learns is
/// recorded in the caches of the files' directories, before `on_known` hears of it, and
/// written at least every [`SHARE_EVERY`] and as soon as a directory's last file is probed.
pub fn survey(
    batches: impl IntoIterator<Item = DirBatch>,
    options: &Options<'_>,
    recorder: &Mutex<Recorder>,
    reporter: &Reporter,
    on_known: impl FnMut(&MediaFile, Known<'_>) -> Next + Send,
) -> Report {
    let queue = JobQueue::default();
    let (sender, results) = mpsc::channel::<(Job, Probed)>();
    let survey = Mutex::new(Surveyor {
        options,
        recorder,
        reporter,
        queue: &queue,
        on_known,
        report: Report::default(),
        dirs: Vec::new(),
        counter: reporter.counter("probing", 0),
    });
    std::thread::scope(|scope| {
        for _ in 0..options.probe_jobs.max(1) {
            let sender = sender.clone();
            let queue = &queue;
            scope.spawn(move || {
                while let Some(job) = queue.pop() {
                    let probed = probe_job(&job, options);
                    if sender.send((job, probed)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        // Ends when the last probe worker hangs up: everything probed, or Ctrl-C.
        let settling = scope.spawn(|| {
            for (job, probed) in results {
                lock(&survey).settle(job, probed);
            }
        });
        for batch in batches {
            if signal::interrupted() {
                break;
            }
            lock(&survey).batch(batch);
        }
        queue.finish_when_empty();
        settling
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
    let Surveyor {
        report, counter, ..
    } = survey.into_inner().unwrap_or_else(PoisonError::into_inner);
    drop(counter);
    // Directories left with news: lock held too long, or interrupted before their last probe.
    report_warnings(reporter, lock(recorder).flush_all(cache::WRITE_PATIENCE));
    report
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A survey's state, on the thread that hears of every file.
struct Surveyor<'a, F> {
    options: &'a Options<'a>,
    recorder: &'a Mutex<Recorder>,
    reporter: &'a Reporter,
    queue: &'a JobQueue,
    on_known: F,
    report: Report,
    dirs: Vec<SurveyedDir>,
    counter: Counter<'a>,
}

impl<F: FnMut(&MediaFile, Known<'_>) -> Next> Surveyor<'_, F> {
    /// Answers a directory's files from its cache where it can; queues the rest for the
    /// probe workers, in this host's order.
    fn batch(&mut self, batch: DirBatch) {
        let DirBatch {
            dir,
            files,
            cache: loaded,
            stamp,
        } = batch;
        match loaded.problem {
            Some(LoadProblem::Newer(version)) => {
                lock(self.recorder).leave_alone(&dir, version);
                warn(
                    self.reporter,
                    &dir,
                    &LoadProblem::Newer(version).to_string(),
                );
            }
            Some(problem) => warn(self.reporter, &dir, &problem.to_string()),
            None => {}
        }
        if loaded.cache.needs_rewrite() {
            lock(self.recorder).rewrite(&dir);
        }
        lock(self.recorder).learn(&loaded.cache);
        let mut unprobed = Vec::new();
        for file in files {
            self.report.files += 1;
            if let Some(Decision::Skip { reason, detail }) =
                decide::too_new(&file, self.options.rules)
            {
                self.report.too_new += 1;
                let host = None;
                (self.on_known)(
                    &file,
                    Known::Skip {
                        reason,
                        detail,
                        host,
                    },
                );
                continue;
            }
            match known_by(&loaded.cache, &file, self.options) {
                Some(known) => match (self.on_known)(&file, known) {
                    Next::Done => self.report.from_cache += 1,
                    // Partial facts from the cache: only ffprobe can complete them.
                    Next::ProbeFully => unprobed.push((file, true)),
                },
                None => unprobed.push((file, false)),
            }
        }
        self.options
            .order
            .arrange(&mut unprobed, |(file, _)| file_name_bytes(&file.path));
        self.counter.add_total(unprobed.len() as u64);
        let group = self.dirs.len();
        self.dirs.push(SurveyedDir {
            path: dir.clone(),
            unprobed: unprobed.len(),
            written: Instant::now(),
        });
        let view = Arc::new(DirView {
            dir: dir.clone(),
            seen: Mutex::new(Seen { stamp, cache: None }),
        });
        for (file, ffprobe_only) in unprobed {
            self.queue.push(Job {
                file,
                group,
                dir: Arc::clone(&view),
                ffprobe_only,
            });
        }
        if self.dirs[group].unprobed == 0 {
            self.write(group);
        }
    }

    /// Hands one probe's result to `on_known`; the job goes back to the queue when the
    /// caller wants ffprobe's full facts.
    fn settle(&mut self, job: Job, probed: Probed) {
        let next = self.known(&job.file, probed);
        self.counter.inc();
        if next == Next::ProbeFully {
            self.counter.add_total(1);
            // First in line: a candidate waits for these facts to be converted.
            self.queue.push_front(Job {
                ffprobe_only: true,
                ..job
            });
        } else {
            let dir = &mut self.dirs[job.group];
            dir.unprobed -= 1;
            if dir.unprobed == 0 || dir.written.elapsed() >= SHARE_EVERY {
                self.write(job.group);
            }
        }
        self.queue.settled();
    }

    fn known(&mut self, file: &MediaFile, probed: Probed) -> Next {
        let report = &mut self.report;
        match probed {
            Probed::Cached(learned) => {
                let next = match learned {
                    Learned::Facts(info, source) => (self.on_known)(
                        file,
                        Known::Facts {
                            info: &info,
                            source,
                        },
                    ),
                    Learned::Skip(skip) => (self.on_known)(
                        file,
                        Known::Skip {
                            reason: skip.reason,
                            detail: skip.detail,
                            host: Some(skip.host),
                        },
                    ),
                };
                if next == Next::Done {
                    report.from_cache += 1;
                    report.from_fleet += 1;
                }
                next
            }
            Probed::Headers(info) => {
                let source = FactsSource::Headers;
                let next = (self.on_known)(
                    file,
                    Known::Facts {
                        info: &info,
                        source,
                    },
                );
                if next == Next::Done {
                    report.from_headers += 1;
                }
                next
            }
            Probed::Ffprobe(Ok(info)) => {
                report.probed += 1;
                // Recorded before anyone hears of it: a conversion of this file records its
                // outcome after these facts, never before.
                lock(self.recorder).facts(file, info.clone(), FactsSource::Ffprobe);
                let source = FactsSource::Ffprobe;
                (self.on_known)(
                    file,
                    Known::Facts {
                        info: &info,
                        source,
                    },
                );
                Next::Done
            }
            Probed::Ffprobe(Err(err)) => {
                report.unreadable += 1;
                let error = err.to_string();
                // ffprobe ran and could not read the file: that is the file's failure. One
                // that could not even start says nothing about the file.
                if self.options.record_failures && err.0.status.is_some() {
                    lock(self.recorder).failed(file, &error, &err.0.stderr_tail);
                }
                (self.on_known)(file, Known::Unreadable { error });
                Next::Done
            }
        }
    }

    /// Writes what was learned about a directory to its cache, for every host.
    fn write(&mut self, group: usize) {
        let dir = &mut self.dirs[group];
        let mut recorder = lock(self.recorder);
        if recorder.has_pending(&dir.path) {
            dir.written = Instant::now();
            let warnings = recorder.flush(&dir.path, cache::WRITE_PATIENCE);
            drop(recorder);
            report_warnings(self.reporter, warnings);
        }
    }
}

/// What a directory's cache says about a file as it is now, if it says anything; its history
/// judged by this run's `--retry-failed` and `--min-savings`.
fn known_by<'c>(cache: &'c DirCache, file: &MediaFile, options: &Options<'_>) -> Option<Known<'c>> {
    let entry = file
        .path
        .file_name()
        .and_then(cache::key_of)
        .and_then(|key| cache.fresh(&key, Fingerprint::of(file)))?;
    match entry.history_skip(options.retry_failed, options.rules.min_savings_pct) {
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
    }
}

fn file_name_bytes(path: &Path) -> &[u8] {
    path.file_name().unwrap_or_default().as_encoded_bytes()
}

/// One directory of a survey: how many of its files are still being probed, and when its
/// cache was last written.
struct SurveyedDir {
    path: PathBuf,
    unprobed: usize,
    written: Instant,
}

/// A file for a probe worker.
struct Job {
    file: MediaFile,
    /// Its directory's place in the survey.
    group: usize,
    dir: Arc<DirView>,
    /// Partial facts are known already: only ffprobe can add to them.
    ffprobe_only: bool,
}

/// A directory's cache as the probe workers last saw it.
struct DirView {
    dir: PathBuf,
    seen: Mutex<Seen>,
}

/// The stamp of the cache last read, and what it held when another writer had changed it.
struct Seen {
    stamp: Option<CacheStamp>,
    /// Read by a probe worker; `None` while the survey's own read is the latest.
    cache: Option<DirCache>,
}

/// What one probe worker found out about a file.
enum Probed {
    /// Another host's probe, written to the cache since this host read it.
    Cached(Learned),
    /// Facts read natively from the headers.
    Headers(MediaInfo),
    Ffprobe(Result<MediaInfo, probe::ProbeError>),
}

/// Finds out about one file: from its directory's cache if another host has written there
/// since, else from its headers where the native reader vouches for them, else by ffprobe.
fn probe_job(job: &Job, options: &Options<'_>) -> Probed {
    if !job.ffprobe_only {
        if let Some(known) = learned_meanwhile(job, options) {
            return Probed::Cached(known);
        }
        if options.native_headers {
            if let Ok(info) = header::read(&job.file.path) {
                return Probed::Headers(info);
            }
        }
    }
    Probed::Ffprobe(probe::probe(options.ffprobe, &job.file.path))
}

/// What another host wrote into a cache: owned, to cross from a probe worker.
enum Learned {
    Facts(MediaInfo, FactsSource),
    Skip(HistorySkip),
}

/// What another host wrote about this file into its directory's cache since this host last
/// read it. One stat of the cache per file; the cache is read again only when it changed.
fn learned_meanwhile(job: &Job, options: &Options<'_>) -> Option<Learned> {
    let mut seen = lock(&job.dir.seen);
    let now = CacheStamp::of(&job.dir.dir);
    if now.is_some() && now != seen.stamp {
        seen.stamp = now;
        seen.cache = Some(DirCache::load(&job.dir.dir).cache);
    }
    let cache = seen.cache.as_ref()?;
    Some(match known_by(cache, &job.file, options)? {
        Known::Facts { info, source } => Learned::Facts(info.clone(), source),
        Known::Skip {
            reason,
            detail,
            host,
        } => Learned::Skip(HistorySkip {
            reason,
            detail,
            host: host.unwrap_or_default(),
        }),
        Known::Unreadable { .. } => return None,
    })
}

/// The probe workers' queue: first in, first out. Workers end once no more jobs will come,
/// the queue is empty and every result handed out has been settled (a settled result may
/// send its file back for ffprobe).
#[derive(Default)]
struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Popped, and not yet settled by the survey.
    in_flight: usize,
    /// No more jobs will come but those sent back.
    finishing: bool,
}

impl JobQueue {
    fn push(&self, job: Job) {
        lock(&self.state).jobs.push_back(job);
        self.ready.notify_one();
    }

    fn push_front(&self, job: Job) {
        lock(&self.state).jobs.push_front(job);
        self.ready.notify_one();
    }

    fn finish_when_empty(&self) {
        lock(&self.state).finishing = true;
        self.ready.notify_all();
    }

    /// One popped job's result has been handled.
    fn settled(&self) {
        let mut state = lock(&self.state);
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            self.ready.notify_all();
        }
    }

    /// The next job; `None` once all is done, or on Ctrl-C.
    fn pop(&self) -> Option<Job> {
        let mut state = lock(&self.state);
        loop {
            if signal::interrupted() {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                state.in_flight += 1;
                return Some(job);
            }
            if state.finishing && state.in_flight == 0 {
                return None;
            }
            state = self
                .ready
                .wait_timeout(state, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
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
    /// The stamp of the cache file read: a later change is another writer's.
    pub stamp: Option<CacheStamp>,
}

impl DirBatch {
    /// Reads the cache of `dir` for these files.
    pub fn load(dir: PathBuf, files: Vec<MediaFile>) -> DirBatch {
        let raw = RawCache::read(&dir);
        DirBatch::parse(dir, files, raw)
    }

    /// Parses the cache of `dir`, read already, for these files.
    fn parse(dir: PathBuf, files: Vec<MediaFile>, raw: RawCache) -> DirBatch {
        let cache = raw.parse();
        let stamp = cache.stamp;
        DirBatch {
            dir,
            files,
            cache,
            stamp,
        }
    }
}

/// Directories are handed over in chunks of about this many files: one hand-off per
/// directory would wake the survey thread ten thousand times for a large library, and those
/// wake-ups cost more than the hand-over itself.
const CHUNK_FILES: usize = 1000;

/// How many chunks the walk may get ahead of the survey: enough to keep both busy, little
/// enough that a huge library is never all in memory.
const WALK_BACKLOG: usize = 16;

/// Walks a library on another thread while `consume` surveys each directory's files: the
/// walk is mostly the kernel listing, stat-ing and reading each directory's cache file, the
/// survey mostly parsing and deciding, so on two cores they overlap. Caches are read by the
/// walker (one buffer a directory) and parsed here, on the consuming thread: their many
/// small allocations are then freed by the thread that made them, which glibc's allocator
/// does far faster. What the walk cannot read is reported as it is found.
pub fn walk_library<R>(
    root: &Path,
    follow_links: bool,
    media_type: MediaType,
    reporter: &Reporter,
    consume: impl FnOnce(&mut dyn Iterator<Item = DirBatch>) -> R,
) -> R {
    walk_library_in(
        WalkOrder::Name,
        root,
        follow_links,
        media_type,
        reporter,
        consume,
    )
}

/// [`walk_library`], visiting each directory's subdirectories in `order`.
pub fn walk_library_in<R>(
    order: WalkOrder,
    root: &Path,
    follow_links: bool,
    media_type: MediaType,
    reporter: &Reporter,
    consume: impl FnOnce(&mut dyn Iterator<Item = DirBatch>) -> R,
) -> R {
    let (sender, receiver) =
        mpsc::sync_channel::<Vec<(PathBuf, Vec<MediaFile>, RawCache)>>(WALK_BACKLOG);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut chunk = Vec::new();
            let mut chunk_files = 0;
            // Once the consumer has stopped listening the sends fail, and nothing is lost.
            scan::walk(
                root,
                follow_links,
                order,
                &mut |dir, mut files| {
                    files.retain(|f| media_type.includes(f.kind));
                    if files.is_empty() {
                        return;
                    }
                    chunk_files += files.len();
                    let raw = RawCache::read(&dir);
                    chunk.push((dir, files, raw));
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
                .map(|(dir, files, raw)| DirBatch::parse(dir, files, raw)),
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
