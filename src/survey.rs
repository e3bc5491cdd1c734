//! What each scanned file is: answered by the directory's cache where its entry is fresh,
//! else by ffprobe, many at once; what ffprobe says is recorded for every host.
//!
//! A warm survey costs one read of each directory's cache and nothing per file beyond the
//! scan's one stat: no ffprobe, no second stat. Files are handed to the caller one at a time
//! and not kept, so a library of any size is surveyed in little memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::cache::{
    self, CacheWarning, DirCache, FactsSource, Fingerprint, HistorySkip, LoadProblem, Recorder,
};
use crate::output::{Event, Reporter};
use crate::probe::{self, MediaInfo};
use crate::scan::MediaFile;
use crate::signal;

/// How a survey runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub ffprobe: &'a Path,
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
    /// The cache's history says to leave it alone (not smaller, failed too often).
    Skip(HistorySkip),
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
    pub files: u64,
    /// Answered by a fresh cache entry, without ffprobe.
    pub from_cache: u64,
    /// Probed by ffprobe.
    pub probed: u64,
    /// ffprobe could not read them.
    pub unreadable: u64,
}

/// Surveys `files`, calling `on_known` once for each (twice for one it sends back with
/// [`Next::ProbeFully`]), and records what ffprobe learns in the caches of their directories,
/// each directory's as soon as its last file is probed.
pub fn survey(
    files: Vec<MediaFile>,
    options: &Options<'_>,
    recorder: &mut Recorder,
    reporter: &Reporter,
    mut on_known: impl FnMut(&MediaFile, Known<'_>) -> Next,
) -> Report {
    let mut report = Report::default();
    let groups = group_by_dir(files);
    let mut dirs = Vec::with_capacity(groups.len());
    let mut unprobed = vec![0usize; groups.len()];
    let mut jobs: Vec<(usize, MediaFile)> = Vec::new();

    for (group, (dir, files)) in groups.into_iter().enumerate() {
        let loaded = DirCache::load(&dir);
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
        for file in files {
            report.files += 1;
            let entry = file
                .path
                .file_name()
                .and_then(cache::key)
                .and_then(|key| loaded.cache.fresh(&key, Fingerprint::of(&file)));
            let known = entry.and_then(|entry| match entry.history_skip(options.retry_failed) {
                Some(skip) => Some(Known::Skip(skip)),
                // No facts: an earlier probe failed, below the limit; try again.
                None => entry.info.as_ref().map(|info| Known::Facts {
                    info,
                    source: entry.facts,
                }),
            });
            let next = match known {
                Some(known) => on_known(&file, known),
                None => Next::ProbeFully,
            };
            match next {
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

/// Files grouped by directory, in first-seen order, so each cache is read once.
pub fn group_by_dir(files: Vec<MediaFile>) -> Vec<(PathBuf, Vec<MediaFile>)> {
    let mut groups: Vec<(PathBuf, Vec<MediaFile>)> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    for file in files {
        let dir = cache::dir_of(&file.path);
        // A scan yields a directory's files mostly together: try the last group first.
        let group = match groups.last() {
            Some((last, _)) if *last == dir => groups.len() - 1,
            _ => *index.entry(dir.clone()).or_insert_with(|| {
                groups.push((dir, Vec::new()));
                groups.len() - 1
            }),
        };
        groups[group].1.push(file);
    }
    groups
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediaKind;
    use std::time::SystemTime;

    fn file(path: &str) -> MediaFile {
        MediaFile {
            path: PathBuf::from(path),
            kind: MediaKind::Video,
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn files_are_grouped_by_directory_in_first_seen_order() {
        let groups = group_by_dir(
            [
                "/l/a/1.mkv",
                "/l/a/b/2.mkv",
                "/l/a/3.mkv",
                "/l/c/4.mkv",
                "5.mkv",
            ]
            .map(file)
            .to_vec(),
        );
        let shape: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|(dir, files)| {
                (
                    dir.to_string_lossy().into_owned(),
                    files
                        .iter()
                        .map(|f| f.path.to_string_lossy().into_owned())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (
                    "/l/a".into(),
                    vec!["/l/a/1.mkv".into(), "/l/a/3.mkv".into()]
                ),
                ("/l/a/b".into(), vec!["/l/a/b/2.mkv".into()]),
                ("/l/c".into(), vec!["/l/c/4.mkv".into()]),
                (".".into(), vec!["5.mkv".into()]),
            ]
        );
    }
}
