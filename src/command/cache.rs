//! `media-converter cache build DIR` and `media-converter cache stats DIR`.

use std::fs;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use crate::cache::stats::Stats;
use crate::cache::{self, Entry, FactsSource, Fingerprint, Recorder};
use crate::config::{CacheBuildConfig, CacheStatsConfig};
use crate::decide::Rules;
use crate::exit_codes::ExitCode;
use crate::output::{Event, Reporter};
use crate::process::Tools;
use crate::scan::{MediaFile, WalkOrder};
use crate::signal;
use crate::survey::{self, DirBatch, Known, Next};

/// Probes every file the cache does not know (or that changed since), `probe_jobs` at once,
/// and writes each directory's cache as soon as its files are done.
pub fn build(config: &CacheBuildConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tools = Tools::locate()?;
    check_dir(&config.dir)?;
    let rules = Rules {
        // A download in progress would be probed half-written; it is probed when it settles.
        min_age: config.min_age,
        min_savings_pct: 0.0,
        allow_dv_loss: false,
        allow: Default::default(),
        now: SystemTime::now(),
    };
    let recorder = Mutex::new(Recorder::new());
    let options = survey::Options {
        ffprobe: &tools.ffprobe,
        rules: &rules,
        probe_jobs: config.probe_jobs,
        retry_failed: false,
        record_failures: true,
        // Warming the cache wants ffprobe's full facts, not the headers'.
        native_headers: false,
        order: WalkOrder::Name,
    };
    let on_known = |file: &MediaFile, known: Known<'_>| match known {
        // Warming the cache is the moment to replace partial facts with ffprobe's.
        Known::Facts {
            source: FactsSource::Legacy | FactsSource::Headers,
            ..
        } => Next::ProbeFully,
        Known::Unreadable { error } => {
            reporter.emit(Event::Failed {
                file: file.path.to_string_lossy().into_owned(),
                error,
            });
            Next::Done
        }
        Known::Facts { .. } | Known::Skip { .. } => Next::Done,
    };
    let report = survey::walk_library(
        &config.dir,
        config.follow_links,
        config.media_type,
        reporter,
        |groups| survey::survey(groups, &options, &recorder, reporter, on_known),
    );
    let mut recorder = recorder
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    survey::report_warnings(reporter, recorder.finish(cache::FINAL_WRITE_PATIENCE));
    let interrupted = signal::interrupted();
    reporter.emit(Event::CacheBuilt {
        dir: config.dir.to_string_lossy().into_owned(),
        files: report.files,
        too_new: report.too_new,
        from_cache: report.from_cache,
        probed: report.probed,
        unreadable: report.unreadable,
        seconds: started.elapsed().as_secs_f64(),
        interrupted,
    });
    Ok(if interrupted {
        ExitCode::Interrupted
    } else if report.unreadable > 0 {
        ExitCode::SomeFailed
    } else {
        ExitCode::Success
    })
}

/// Reports what the caches know about a library. Reads only: no ffprobe, no writes.
pub fn stats(config: &CacheStatsConfig, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let stats = gather_stats(config, reporter)?;
    reporter.emit(Event::CacheStats(stats));
    Ok(ExitCode::Success)
}

/// What the caches say about the library at `config.dir`, without running ffprobe; shared by
/// `cache stats` and `status`.
pub fn gather_stats(config: &CacheStatsConfig, reporter: &Reporter) -> anyhow::Result<Stats> {
    check_dir(&config.dir)?;
    let rules = stats_rules();
    let mut stats = Stats::new(config.dir.to_string_lossy().into_owned());
    survey::walk_library(
        &config.dir,
        config.follow_links,
        config.media_type,
        reporter,
        |groups| {
            // One directory's cache in memory at a time, however large the library.
            for batch in groups {
                for (file, fresh) in fresh_entries(&batch, reporter) {
                    stats.add(file, fresh, &rules);
                }
            }
        },
    );
    Ok(stats)
}

/// The rules [`Stats`] judge candidates by: the library as it is, including files that a run
/// would leave for later.
pub fn stats_rules() -> Rules {
    Rules {
        min_age: Duration::ZERO,
        min_savings_pct: 10.0,
        allow_dv_loss: false,
        allow: Default::default(),
        now: SystemTime::now(),
    }
}

/// Each media file of one directory with its cache entry, when the entry is still fresh,
/// after a warning when the cache could not be read; what `cache stats`, `status` and the
/// dashboard count. A file whose name is not valid Unicode has no entry: it counts as not
/// surveyed, never as nothing.
pub fn fresh_entries<'a>(
    batch: &'a DirBatch,
    reporter: &Reporter,
) -> impl Iterator<Item = (&'a MediaFile, Option<&'a Entry>)> {
    if let Some(problem) = &batch.cache.problem {
        reporter.emit(Event::Warning {
            file: Some(
                batch
                    .dir
                    .join(cache::CACHE_FILE_NAME)
                    .to_string_lossy()
                    .into_owned(),
            ),
            message: problem.to_string(),
        });
    }
    batch.files.iter().map(|file| {
        let fresh = file
            .path
            .file_name()
            .and_then(cache::key_of)
            .and_then(|key| batch.cache.cache.fresh(&key, Fingerprint::of(file)));
        (file, fresh)
    })
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}
