//! Everything the user sees. Core code emits [`Event`]s; this module alone decides how they
//! look: JSON lines on stdout, progress bars on a terminal, or sparse timestamped lines in a
//! log.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use compact_str::CompactString;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cache::stats::{Stats, Tally};
use crate::clock;
use crate::config::OutputConfig;
use crate::decide::SkipReason;
use crate::duration::format_secs;
use crate::encoder::Quality;
use crate::quality::Score;

/// Something that happened during a run. Serialized as one JSON object per line with an
/// `event` field; the README documents every field.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A file the scan or a setup step could not use; the run goes on.
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        message: String,
    },
    /// `--dry-run`: what would happen to one file.
    Planned {
        file: String,
        /// Inline, as a stream's codec is: a plan names one for every file.
        codec: CompactString,
        action: PlannedAction,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<SkipReason>,
        detail: String,
        size_bytes: u64,
        estimated_bytes: u64,
        /// The score a cached quality search predicts (`--target-*`); `estimated_bytes` is
        /// then that search's predicted size.
        #[serde(skip_serializing_if = "Option::is_none")]
        predicted_score: Option<f64>,
    },
    /// A conversion starts.
    Converting {
        file: String,
        codec: String,
        encoder: String,
        size_bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_secs: Option<f64>,
    },
    /// A quality search (`--target-vmaf`/`--target-ssim`) is under way: sent when it starts
    /// (trial 0) and after each trial is scored.
    Searching {
        file: String,
        /// The target, e.g. `VMAF 95.00`.
        target: String,
        /// Trials scored so far.
        trial: usize,
        /// The last trial's `--quality` and score.
        #[serde(skip_serializing_if = "Option::is_none")]
        quality: Option<Quality>,
        #[serde(skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
        /// At the start: the neighbour's result the first trial takes (`docs/quality.md`).
        #[serde(skip_serializing_if = "Option::is_none")]
        seeded_from: Option<crate::cache::Seed>,
    },
    /// A file's quality is settled: searched now, or read from the cache.
    Searched {
        file: String,
        target: String,
        /// The encoder the search ran on.
        encoder: String,
        /// The `--quality` found; absent when no quality meets the target.
        #[serde(skip_serializing_if = "Option::is_none")]
        quality: Option<Quality>,
        /// The whole file's predicted size and score at that quality.
        predicted_bytes: u64,
        predicted_score: f64,
        /// Trials the search made.
        trials: usize,
        /// Seconds of the source its samples covered (the whole duration for a short file).
        sample_secs: f64,
        /// Seconds the search took (when it was made).
        seconds: f64,
        /// Whether the result came from the cache, with no trial encode on this host.
        cached: bool,
        /// The host that searched, when the result came from the cache.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The search ended at a trial under the target whose predicted size already missed
        /// `--min-savings`: no quality, the predicted bytes a lower bound (`docs/quality.md`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cut_short: bool,
    },
    /// How far a conversion is.
    Progress {
        file: String,
        percent: f64,
        fps: f64,
        speed: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        eta_secs: Option<f64>,
    },
    /// A file was replaced by its verified HEVC (or FLAC) version.
    Converted {
        file: String,
        output: String,
        before_bytes: u64,
        after_bytes: u64,
        seconds: f64,
        /// The encoder that produced the file: libx265 after a fallback.
        encoder: String,
        /// Set when a hardware encode failed and libx265 redid it.
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback: Option<Fallback>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        dropped: Vec<String>,
        /// The score the new file achieved against the original (`--target-*` runs).
        #[serde(skip_serializing_if = "Option::is_none")]
        score: Option<Score>,
    },
    /// The encoder this run uses, chosen once, and why the others were not.
    EncoderChosen {
        /// ffmpeg's name for it.
        encoder: String,
        /// The device, where the encoder runs on a particular one.
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// Why this one, in a line.
        detail: String,
        /// Every other candidate, with its reason.
        rejected: Vec<RejectedEncoder>,
    },
    /// A hardware encode failed; the file is being redone with libx265.
    Fallback {
        file: String,
        /// The hardware encoder that failed.
        from: String,
        /// The encoder that redoes the file.
        to: String,
        /// ffmpeg's error or the failed verification.
        error: String,
    },
    /// A file was left as it is, and why.
    Skipped {
        file: String,
        reason: SkipReason,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// A file could not be converted; its original is untouched.
    Failed { file: String, error: String },
    /// A message about the run as a whole (paused, resumed, a deadline reached).
    Notice { message: String },
    /// The last event of every run.
    Summary(Summary),
    /// `cache build` is done.
    CacheBuilt {
        dir: String,
        files: u64,
        /// Modified within `--min-age`: left for a later build.
        too_new: u64,
        /// Already known: a fresh cache entry, no ffprobe.
        from_cache: u64,
        probed: u64,
        unreadable: u64,
        seconds: f64,
        interrupted: bool,
    },
    /// `cache stats`: the figures, on stdout.
    CacheStats(Stats),
}

/// A hardware encode redone with libx265 before the file was made; recorded with the
/// outcome so that the cache can say which encoder really made it, and what came first.
pub use crate::cache::Fallback;

/// An encoder the run did not choose, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedEncoder {
    /// ffmpeg's name, with ` on DEVICE` where it was tried on a particular one.
    pub encoder: String,
    /// Its trial's failure, or why it was not tried or not preferred.
    pub reason: String,
}

/// What `--dry-run` would do with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannedAction {
    Convert,
    Skip,
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub converted: u64,
    pub skipped: u64,
    pub failed: u64,
    pub before_bytes: u64,
    pub after_bytes: u64,
    pub saved_bytes: u64,
    /// `--dry-run`: what converting every candidate would save, roughly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_saving_bytes: Option<u64>,
    pub seconds: f64,
    pub interrupted: bool,
}

/// Writes a command's report (`doctor`) to stdout, which is for data.
pub fn print_data(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// File names as shown on a terminal: control characters escaped, so a name with a newline
/// or an escape sequence cannot garble the screen.
pub fn display_name(name: &str) -> String {
    shown_name(name).into_owned()
}

/// [`display_name`] without a copy of a name that needs no escape: for the plan's lines,
/// one a file.
fn shown_name(name: &str) -> Cow<'_, str> {
    // A control character is below 0x20, 0x7f, or (U+0080 to U+009F) starts with 0xc2 in
    // UTF-8: a name with none of those bytes, nearly every name, is shown as it is.
    if !name.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
        return Cow::Borrowed(name);
    }
    let mut shown = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// Receives every event and shows it in the way the output configuration asks for.
pub struct Reporter {
    config: OutputConfig,
    state: Mutex<State>,
    multi: Option<MultiProgress>,
    log: Option<Mutex<File>>,
    /// Batched stdout (see [`Reporter::write_stdout`]).
    stdout: Mutex<Vec<u8>>,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // A batched plan must not be lost when a run ends without a summary (a setup error).
        self.write_stdout("", false);
    }
}

/// How much of a dry run's plan is gathered before it is written.
const STDOUT_BATCH_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct State {
    files: HashMap<String, FileProgress>,
    overall: Option<ProgressBar>,
}

struct FileProgress {
    bar: Option<ProgressBar>,
    /// The percent last written as a plain line or JSON object.
    last_percent: f64,
    last_logged: Instant,
}

/// Plain logs get a progress line every this many percent...
const LOG_EVERY_PERCENT: f64 = 10.0;
/// ...or after this long, whichever comes first.
const LOG_EVERY: Duration = Duration::from_secs(60);

impl Reporter {
    /// A reporter for this run's output settings; fails only if `--log-file` cannot be opened.
    pub fn new(config: OutputConfig) -> anyhow::Result<Reporter> {
        let log = match &config.log_file {
            Some(path) => Some(Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open --log-file {}", path.display()))?,
            )),
            None => None,
        };
        let bars = !config.json && !config.quiet && config.stderr_is_tty;
        Ok(Reporter {
            config,
            state: Mutex::new(State::default()),
            multi: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            log,
            stdout: Mutex::new(Vec::new()),
        })
    }

    /// Shows the overall bar (files and bytes to convert), on a terminal only.
    pub fn start_overall(&self, files: u64, bytes: u64) {
        let Some(multi) = &self.multi else { return };
        let bar = multi.add(ProgressBar::new(bytes));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {binary_bytes}/{binary_total_bytes}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix("overall");
        bar.set_message(format!("0/{files} files"));
        if let Ok(mut state) = self.state.lock() {
            state.overall = Some(bar);
        }
    }

    /// More files for the overall bar, found while the run goes on.
    pub fn grow_overall(&self, bytes: u64) {
        if let Ok(state) = self.state.lock() {
            if let Some(bar) = &state.overall {
                bar.inc_length(bytes);
            }
        }
    }

    /// Advances the overall bar after a file is done (whatever its outcome).
    pub fn file_done(&self, done: u64, total: u64, bytes: u64) {
        if let Ok(state) = self.state.lock() {
            if let Some(bar) = &state.overall {
                bar.inc(bytes);
                bar.set_message(format!("{done}/{total} files"));
            }
        }
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        if let Event::Progress { .. } = event {
            self.progress(&event);
            return;
        }
        match &event {
            Event::Converting { file, .. } => self.start_file(file, "encoding"),
            Event::Searching { file, trial: 0, .. } => self.start_file(file, "searching"),
            Event::Searching { file, trial, .. } => self.set_file_position(
                file,
                (*trial as u64 * 1000 / crate::quality::MAX_TRIALS as u64).min(1000),
            ),
            Event::Searched { file, .. } => self.finish_file(file),
            // After a fallback the failed attempt's bar goes; the retry's `converting` starts
            // a new one.
            Event::Converted { file, .. }
            | Event::Failed { file, .. }
            | Event::Fallback { file, .. } => self.finish_file(file),
            Event::Summary(_) => self.finish_overall(),
            _ => {}
        }
        if self.config.json {
            self.write_json(&event);
        } else if let Event::Planned { .. } = event {
            self.write_stdout_with(true, |out| write_plan_line(out, &event));
        } else if let Event::CacheStats(stats) = &event {
            self.write_stdout(&stats_text(stats), false);
        } else if self.shown_on_stderr(&event) {
            if let Event::Summary(_) = event {
                // The plan lines before it go first.
                self.write_stdout("", false);
            }
            if let Some(text) = human_text(&event) {
                // Line by line, so that every line of a log is timestamped (an encoder
                // choice lists its rejects, an ffmpeg error its command, on lines of their own).
                text.lines().for_each(|line| self.print_stderr(line));
            }
        }
        if self.log.is_some() && !matches!(event, Event::Planned { .. }) {
            if let Some(text) = human_text(&event) {
                text.lines().for_each(|line| self.write_log(line));
            }
        }
    }

    /// Whether output is JSON lines (`--json`).
    pub fn json(&self) -> bool {
        self.config.json
    }

    /// A message for people that is not about one file (pause, resume, setup notes).
    pub fn note(&self, message: &str) {
        if self.config.json {
            self.write_json(&Event::Notice {
                message: message.into(),
            });
        } else if !self.config.quiet {
            self.print_stderr(message);
        }
        self.write_log(message);
    }

    /// Verbose detail (command lines, reasons); shown only with `-v`.
    pub fn debug(&self, text: &str) {
        if self.config.verbose && !self.config.json {
            self.print_stderr(text);
        }
    }

    fn shown_on_stderr(&self, event: &Event) -> bool {
        match event {
            Event::Failed { .. }
            | Event::Warning { .. }
            | Event::Fallback { .. }
            | Event::Summary(_) => true,
            // The encoder choice is detail, for `-v`.
            Event::EncoderChosen { .. } => self.config.verbose,
            // So is each trial of a quality search; its start and result are shown.
            Event::Searching { trial, .. } if *trial > 0 => self.config.verbose,
            _ if self.config.quiet => false,
            Event::Skipped { reason, .. } => {
                self.config.verbose || !matches!(reason, SkipReason::AlreadyEfficient)
            }
            _ => true,
        }
    }

    fn write_json(&self, event: &Event) {
        self.write_stdout_with(matches!(event, Event::Planned { .. }), |out| {
            let start = out.len();
            if serde_json::to_writer(&mut *out, event).is_ok() {
                out.push(b'\n');
            } else {
                out.truncate(start);
            }
        });
    }

    fn write_stdout(&self, text: &str, batch: bool) {
        self.write_stdout_with(batch, |out| out.extend_from_slice(text.as_bytes()));
    }

    /// Writes to stdout what `write` puts in the buffer, in place: no line of its own is
    /// made first. A dry run's plan is batched: it is one line per file, and one write each
    /// would cost a 100,000-file plan more than its whole scan. Everything else is written at
    /// once, so a consumer sees each event as it happens (and after the plan lines before it).
    fn write_stdout_with(&self, batch: bool, write: impl FnOnce(&mut Vec<u8>)) {
        let Ok(mut pending) = self.stdout.lock() else {
            return;
        };
        write(&mut pending);
        if !batch || pending.len() >= STDOUT_BATCH_BYTES {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&pending);
            let _ = stdout.flush();
            pending.clear();
        }
    }

    /// A counter of `total` work items: a bar on a terminal, a line every tenth (or minute)
    /// in a log, nothing with `--json` or `--quiet`.
    pub fn counter(&self, label: &str, total: u64) -> Counter<'_> {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {pos}/{len}  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        });
        Counter {
            reporter: self,
            bar,
            label: label.to_owned(),
            total,
            done: 0,
            last_logged_percent: 0.0,
            last_logged: Instant::now(),
        }
    }

    fn set_file_position(&self, file: &str, position: u64) {
        if let Ok(state) = self.state.lock() {
            if let Some(FileProgress { bar: Some(bar), .. }) = state.files.get(file) {
                bar.set_position(position);
            }
        }
    }

    /// A bar for one file's work: `encoding`, or `searching` for its quality.
    fn start_file(&self, file: &str, what: &str) {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.insert_from_back(1, ProgressBar::new(1000));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {percent:>3}%  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.to_owned());
            bar.set_message(display_name(file));
            bar
        });
        if let Ok(mut state) = self.state.lock() {
            state.files.insert(
                file.to_string(),
                FileProgress {
                    bar,
                    last_percent: 0.0,
                    last_logged: Instant::now(),
                },
            );
        }
    }

    fn finish_file(&self, file: &str) {
        if let Ok(mut state) = self.state.lock() {
            if let Some(FileProgress { bar: Some(bar), .. }) = state.files.remove(file) {
                bar.finish_and_clear();
            }
        }
    }

    fn finish_overall(&self) {
        if let Ok(mut state) = self.state.lock() {
            if let Some(bar) = state.overall.take() {
                bar.finish_and_clear();
            }
        }
    }

    /// Progress: a bar on a terminal; in JSON at most one object per whole percent and
    /// second; in plain logs a line every 10% or minute.
    fn progress(&self, event: &Event) {
        let Event::Progress {
            file,
            percent,
            fps,
            speed,
            eta_secs,
        } = event
        else {
            return;
        };
        let eta = eta_secs.map_or_else(|| "?".into(), format_secs);
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(entry) = state.files.get_mut(file) else {
            return;
        };
        if let Some(bar) = &entry.bar {
            bar.set_position((percent * 10.0) as u64);
            bar.set_message(format!(
                "{fps:.0} fps {speed:.2}x ETA {eta}  {}",
                display_name(file)
            ));
        }
        let due = if self.config.json {
            percent.floor() > entry.last_percent.floor()
                && entry.last_logged.elapsed() >= Duration::from_secs(1)
        } else {
            percent - entry.last_percent >= LOG_EVERY_PERCENT
                || entry.last_logged.elapsed() >= LOG_EVERY
        };
        if !due {
            return;
        }
        entry.last_percent = *percent;
        entry.last_logged = Instant::now();
        drop(state);
        let text = format!(
            "progress {percent:.0}% {fps:.0} fps {speed:.2}x ETA {eta}: {}",
            display_name(file)
        );
        if self.config.json {
            self.write_json(event);
        } else if self.multi.is_none() && !self.config.quiet && !self.config.stderr_is_tty {
            self.print_stderr(&text);
        }
        self.write_log(&text);
    }

    fn print_stderr(&self, text: &str) {
        if let Some(multi) = &self.multi {
            let _ = multi.println(text);
            return;
        }
        let mut stderr = std::io::stderr().lock();
        if self.config.stderr_is_tty {
            let _ = writeln!(stderr, "{text}");
        } else {
            let _ = writeln!(stderr, "{} {text}", clock::now_for_log());
        }
    }

    fn write_log(&self, text: &str) {
        if let Some(log) = &self.log {
            if let Ok(mut file) = log.lock() {
                let _ = writeln!(file, "{} {text}", clock::now_for_log());
            }
        }
    }
}

/// Bytes for people, in binary units to two decimals: `1.50 GiB`, `300.00 MiB`, `512 B`.
/// Every size the program shows goes through here. A plan prints two a line, so the
/// hundredths are worked out in integers, rounded as the float formatting rounds (half to
/// even); sizes beyond 2^53 bytes, which a float cannot hold exactly, take the float's way.
pub fn human_bytes(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// [`human_bytes`] formatted where it is written, with no `String` of its own; a width
/// (`{:>10}`) pads it as it pads a string.
#[derive(Debug, Clone, Copy)]
pub struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "1023 B" and "1023.99 EiB" are the longest there are.
        let mut text = ShortText::default();
        write_human_bytes(&mut text, self.0)?;
        f.pad(text.as_str())
    }
}

fn write_human_bytes(out: &mut impl fmt::Write, bytes: u64) -> fmt::Result {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return write!(out, "{bytes} B");
    }
    if bytes >= 1 << 53 {
        let mut value = bytes as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        return write!(out, "{value:.2} {}", UNITS[unit]);
    }
    let mut unit = 0;
    let mut divisor: u64 = 1024;
    while bytes / divisor >= 1024 && unit + 1 < UNITS.len() {
        divisor *= 1024;
        unit += 1;
    }
    let scaled = bytes * 100;
    let (mut hundredths, rest) = (scaled / divisor, scaled % divisor);
    if 2 * rest > divisor || (2 * rest == divisor && hundredths % 2 == 1) {
        hundredths += 1;
    }
    write!(
        out,
        "{}.{:02} {}",
        hundredths / 100,
        hundredths % 100,
        UNITS[unit]
    )
}

/// A few bytes of text on the stack, for a figure that is then padded.
#[derive(Default)]
struct ShortText {
    bytes: [u8; 24],
    len: usize,
}

impl ShortText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for ShortText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes the line `--dry-run` prints on stdout for a planned file, its newline included,
/// straight into `out`: a plan has one a file.
fn write_plan_line(out: &mut Vec<u8>, event: &Event) {
    let Event::Planned {
        file,
        codec,
        action,
        detail,
        size_bytes,
        estimated_bytes,
        predicted_score,
        ..
    } = event
    else {
        return;
    };
    let (size, file) = (HumanBytes(*size_bytes), shown_name(file));
    // Writing to memory cannot fail.
    let _ = match action {
        PlannedAction::Convert => {
            let estimate = HumanBytes(*estimated_bytes);
            match predicted_score {
                Some(s) => writeln!(
                    out,
                    "convert  {codec:<10} {size:>10} -> ~{estimate:<10} {file}  \
                     ({detail}; predicted score {s:.4})"
                ),
                None => writeln!(
                    out,
                    "convert  {codec:<10} {size:>10} -> ~{estimate:<10} {file}"
                ),
            }
        }
        PlannedAction::Skip => writeln!(
            out,
            "skip     {codec:<10} {size:>10}    {:<10} {file}  ({detail})",
            ""
        ),
    };
}

/// The line a person reads for an event; `None` for events with no line of their own.
fn human_text(event: &Event) -> Option<String> {
    Some(match event {
        Event::Warning {
            file: Some(file),
            message,
        } => format!("warning: {}: {message}", display_name(file)),
        Event::Warning {
            file: None,
            message,
        } => format!("warning: {message}"),
        Event::Notice { message } => message.clone(),
        Event::Converting {
            file,
            codec,
            encoder,
            size_bytes,
            ..
        } => format!(
            "converting {} ({codec}, {}) with {encoder}",
            display_name(file),
            human_bytes(*size_bytes)
        ),
        Event::Converted {
            file,
            before_bytes,
            after_bytes,
            seconds,
            dropped,
            score,
            ..
        } => {
            let saved = 100.0 - (*after_bytes as f64 * 100.0 / (*before_bytes).max(1) as f64);
            let mut text = format!(
                "converted {}: {} -> {} ({saved:.0}% smaller) in {}",
                display_name(file),
                human_bytes(*before_bytes),
                human_bytes(*after_bytes),
                format_secs(*seconds)
            );
            if let Some(score) = score {
                text.push_str(&format!(
                    "; {} {}",
                    score.metric.name(),
                    score.metric.format(score.value)
                ));
            }
            if !dropped.is_empty() {
                text.push_str(&format!("; dropped {}", dropped.join(", ")));
            }
            text
        }
        Event::Searching {
            file,
            target,
            trial: 0,
            seeded_from,
            ..
        } => match seeded_from {
            None => format!("searching {} for {target}", display_name(file)),
            Some(seed) => format!(
                "searching {} for {target}, from --quality {} as {} found",
                display_name(file),
                seed.quality,
                seed.file
            ),
        },
        Event::Searching {
            file,
            trial,
            quality,
            score,
            ..
        } => format!(
            "searching {}: trial {trial}, --quality {} scored {:.4}",
            display_name(file),
            quality.map(|q| q.to_string()).unwrap_or_default(),
            score.unwrap_or_default()
        ),
        Event::Searched {
            file,
            target,
            encoder,
            quality,
            predicted_bytes,
            predicted_score,
            trials,
            seconds,
            cached,
            host,
            cut_short,
            ..
        } => match (quality, cached) {
            (None, cached) if *cut_short => format!(
                "{}: not searched further for {target} ({encoder}): a trial under it already \
                 predicts at least {}, {}",
                display_name(file),
                human_bytes(*predicted_bytes),
                if *cached {
                    format!("searched by {}", host.as_deref().unwrap_or("?"))
                } else {
                    let plural = if *trials == 1 { "" } else { "s" };
                    format!("after {trials} trial{plural} in {}", format_secs(*seconds))
                }
            ),
            (None, _) => format!("{}: no quality meets {target}", display_name(file)),
            (Some(q), true) => format!(
                "{}: --quality {q} for {target} ({encoder}; predicted {} at score \
                 {predicted_score:.4}), searched by {}",
                display_name(file),
                human_bytes(*predicted_bytes),
                host.as_deref().unwrap_or("?")
            ),
            (Some(q), false) => format!(
                "{}: --quality {q} for {target} ({encoder}; predicted {} at score \
                 {predicted_score:.4}) after {trials} trials in {}",
                display_name(file),
                human_bytes(*predicted_bytes),
                format_secs(*seconds)
            ),
        },
        Event::Skipped { file, detail, .. } => {
            format!("skipped {}: {detail}", display_name(file))
        }
        Event::Failed { file, error } => format!(
            "FAILED {}: {error} (the original is untouched)",
            display_name(file)
        ),
        Event::Fallback {
            file,
            from,
            to,
            error,
        } => format!(
            "{from} failed on {}, redoing it with {to}: {error}",
            display_name(file)
        ),
        Event::EncoderChosen {
            encoder,
            device,
            detail,
            rejected,
        } => {
            let on = device
                .as_ref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default();
            let mut text = format!("encoder: {encoder}{on} ({detail})");
            for r in rejected {
                text.push_str(&format!("\n  not {}: {}", r.encoder, r.reason));
            }
            text
        }
        Event::Summary(s) => summary_text(s),
        Event::CacheBuilt {
            dir,
            files,
            too_new,
            from_cache,
            probed,
            unreadable,
            seconds,
            interrupted,
        } => format!(
            "cache build {}: {files} files, {from_cache} already known, {probed} probed \
             ({unreadable} unreadable), {too_new} too new, in {}{}",
            display_name(dir),
            format_secs(*seconds),
            if *interrupted { " (interrupted)" } else { "" }
        ),
        Event::Progress { .. } | Event::Planned { .. } | Event::CacheStats(_) => return None,
    })
}

fn summary_text(s: &Summary) -> String {
    let mut text = format!(
        "{} converted, {} skipped, {} failed; saved {} ({} -> {}) in {}",
        s.converted,
        s.skipped,
        s.failed,
        human_bytes(s.saved_bytes),
        human_bytes(s.before_bytes),
        human_bytes(s.after_bytes),
        format_secs(s.seconds)
    );
    if let Some(estimate) = s.estimated_saving_bytes {
        text = format!(
            "dry run: {} to convert, {} skipped, {} unreadable; estimated saving {}",
            s.converted,
            s.skipped,
            s.failed,
            human_bytes(estimate)
        );
    }
    if s.interrupted {
        text.push_str(" (interrupted)");
    }
    text
}

/// Counts work items done; see [`Reporter::counter`]. The bar goes when it is dropped.
pub struct Counter<'a> {
    reporter: &'a Reporter,
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    last_logged_percent: f64,
    last_logged: Instant,
}

impl Counter<'_> {
    /// More items to do, learned on the way.
    pub fn add_total(&mut self, items: u64) {
        self.total += items;
        if let Some(bar) = &self.bar {
            bar.inc_length(items);
        }
    }

    /// One more item done.
    pub fn inc(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            return;
        }
        let config = &self.reporter.config;
        if config.json || config.quiet || config.stderr_is_tty {
            return;
        }
        let percent = self.done as f64 * 100.0 / self.total.max(1) as f64;
        if percent - self.last_logged_percent >= LOG_EVERY_PERCENT
            || self.last_logged.elapsed() >= LOG_EVERY
        {
            self.last_logged_percent = percent;
            self.last_logged = Instant::now();
            self.reporter.print_stderr(&format!(
                "{} {}/{} ({percent:.0}%)",
                self.label, self.done, self.total
            ));
        }
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// What the candidates of `cache stats` and `status` leave out, for people; `None` when the
/// caches know every file. A run decides from a file's own headers and records only what
/// ffprobe read (a claimed file's facts, a dry run's candidates), so a file it left for later
/// or skipped from its headers alone is neither a candidate nor a skip in the caches. The
/// dashboard's card (`command/dashboard/app.js`) uses the same words.
pub fn unsurveyed_line(unknown: &Tally) -> Option<String> {
    (unknown.files > 0).then(|| {
        format!(
            "not surveyed by ffprobe yet: {} file(s) ({}), counted as neither candidates nor \
             skips; `cache build` surveys them",
            unknown.files,
            human_bytes(unknown.bytes)
        )
    })
}

/// `cache stats` for people: aligned columns on stdout.
fn stats_text(s: &Stats) -> String {
    let row = |label: &str, t: &Tally| {
        format!(
            "  {:<24} {:>8} files {:>12}\n",
            display_name(label),
            t.files,
            human_bytes(t.bytes)
        )
    };
    let mut text = format!("library {}\n", display_name(&s.dir));
    text.push_str(&row("media files", &s.files));
    text.push_str(&row("not in the cache yet", &s.unknown));
    for (title, map) in [("by codec", &s.by_codec), ("by container", &s.by_container)] {
        text.push_str(&format!("{title}\n"));
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        for (name, tally) in rows {
            text.push_str(&row(name, tally));
        }
    }
    text.push_str(&format!(
        "history\n  converted {:>8} files, {} -> {} (saved {})\n",
        s.converted,
        human_bytes(s.converted_before_bytes),
        human_bytes(s.converted_after_bytes),
        human_bytes(s.saved_bytes)
    ));
    text.push_str(&row("not smaller (kept)", &s.not_smaller));
    text.push_str(&row("failed at least once", &s.failed));
    text.push_str(&row("failed too often", &s.failed_out));
    for line in s.score_lines() {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!(
        "work left\n  candidates {:>7} files {:>12}, estimated saving {}\n",
        s.candidates.files,
        human_bytes(s.candidates.bytes),
        human_bytes(s.estimated_saving_bytes)
    ));
    if let Some(line) = unsurveyed_line(&s.unknown) {
        text.push_str(&format!("  {line}\n"));
    }
    if !s.hosts.is_empty() {
        text.push_str("by host\n");
        for (host, tally) in &s.hosts {
            text.push_str(&format!(
                "  {:<24} {:>8} files, saved {}, last {}\n",
                display_name(host),
                tally.converted,
                human_bytes(tally.saved_bytes),
                tally.last_converted_at
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        const GIB: u64 = 1 << 30;
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.00 KiB");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(256 << 20), "256.00 MiB");
        assert_eq!(human_bytes(3 * GIB / 2), "1.50 GiB");
        assert_eq!(human_bytes(5 << 40), "5.00 TiB");
        assert_eq!(human_bytes(u64::MAX), "16.00 EiB");
        // The sizes the summary and `status` printed before (indicatif's `HumanBytes`) read
        // the same.
        for bytes in (0..64).flat_map(|shift| [1u64 << shift, (1u64 << shift) / 2 * 3 + 7]) {
            let before = indicatif::HumanBytes(bytes).to_string();
            assert_eq!(human_bytes(bytes), before, "{bytes}");
        }
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(display_name("a\nb\x1b[31m.mkv"), "a\\nb\\u{1b}[31m.mkv");
        assert_eq!(display_name("Amélie (2001).mkv"), "Amélie (2001).mkv");
    }

    #[test]
    fn names_are_escaped_char_by_char_only_when_a_control_character_may_be_there() {
        // U+0085 and U+009F are C1 controls, two bytes from 0xc2; © and U+00A0 share the
        // lead byte and are shown.
        assert_eq!(display_name("a\u{85}b\u{9f}.mkv"), "a\\u{85}b\\u{9f}.mkv");
        assert_eq!(display_name("© \u{a0}x\u{7f}.mkv"), "© \u{a0}x\\u{7f}.mkv");
        assert!(matches!(shown_name("Amélie (2001).mkv"), Cow::Borrowed(_)));
        assert!(matches!(shown_name("© 2001.mkv"), Cow::Owned(_)));
        for c in (0..0x800).filter_map(char::from_u32) {
            let name = format!("x{c}y");
            let slow: String = name
                .chars()
                .flat_map(|c| {
                    let escaped: Vec<char> = if c.is_control() {
                        c.escape_debug().collect()
                    } else {
                        vec![c]
                    };
                    escaped
                })
                .collect();
            assert_eq!(display_name(&name), slow, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn sizes_in_integers_round_as_the_float_formatting_does() {
        fn by_float(bytes: u64) -> String {
            const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
            if bytes < 1024 {
                return format!("{bytes} B");
            }
            let mut value = bytes as f64 / 1024.0;
            let mut unit = 0;
            while value >= 1024.0 && unit + 1 < UNITS.len() {
                value /= 1024.0;
                unit += 1;
            }
            format!("{value:.2} {}", UNITS[unit])
        }
        let mut sizes: Vec<u64> = (0..300_000).collect();
        for unit in 1..6u32 {
            let divisor = 1u64 << (10 * unit);
            // Exact halves of a hundredth (bytes * 100 = divisor * (k + 1/2)), odd and even
            // k, and the units' edges.
            for n in 0..2_000u64 {
                sizes.push(divisor / 8 * 25 * (2 * n + 1));
            }
            sizes.extend([divisor - 1, divisor, divisor + 1, 1024 * divisor - 1]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sizes.push(x >> (x % 60));
        }
        sizes.extend([(1 << 53) - 1, 1 << 53, u64::MAX]);
        let halves = sizes
            .iter()
            .filter(|&&bytes| {
                let divisor = (1..6u32)
                    .map(|unit| 1u64 << (10 * unit))
                    .take_while(|&d| bytes / d > 0)
                    .find(|&d| bytes / d < 1024);
                divisor.is_some_and(|d| bytes < 1 << 53 && (bytes * 100) % d == d / 2)
            })
            .count();
        assert!(halves > 1_500, "{halves} exact halves");
        for bytes in sizes {
            assert_eq!(human_bytes(bytes), by_float(bytes), "{bytes}");
        }
    }

    #[test]
    fn events_serialize_with_an_event_field() {
        let json = serde_json::to_value(Event::Skipped {
            file: "a.mkv".into(),
            reason: SkipReason::AlreadyEfficient,
            detail: "video is already hevc".into(),
            host: None,
        })
        .unwrap();
        assert_eq!(json["event"], "skipped");
        assert_eq!(json["reason"], "already_efficient");
        assert!(json.get("host").is_none());

        let json = serde_json::to_value(Event::Summary(Summary {
            converted: 2,
            ..Summary::default()
        }))
        .unwrap();
        assert_eq!(json["event"], "summary");
        assert_eq!(json["converted"], 2);
    }

    #[test]
    fn stats_text_shows_every_figure() {
        let mut stats = Stats::new("/lib".into());
        stats.files = Tally {
            files: 3,
            bytes: 3 << 30,
        };
        stats
            .by_codec
            .insert("h264".into(), Tally { files: 2, bytes: 1 });
        stats.candidates = Tally { files: 2, bytes: 1 };
        stats.estimated_saving_bytes = 1 << 30;
        let text = stats_text(&stats);
        assert!(
            text.contains("media files") && text.contains("3.00 GiB"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("h264") && l.contains(" 2 files")),
            "{text}"
        );
        assert!(text.contains("estimated saving 1.00 GiB"), "{text}");
        assert!(!text.contains("not surveyed"), "{text}");
        stats.unknown = Tally {
            files: 1,
            bytes: 2048,
        };
        let text = stats_text(&stats);
        let work_left = text.split("work left").nth(1).unwrap();
        assert!(
            work_left.contains("not surveyed by ffprobe yet: 1 file(s) (2.00 KiB)"),
            "{text}"
        );
        let json = serde_json::to_value(Event::CacheStats(stats)).unwrap();
        assert_eq!(json["event"], "cache_stats");
        assert_eq!(json["candidates"]["files"], 2);
        assert_eq!(json["by_codec"]["h264"]["files"], 2);
    }

    #[test]
    fn a_search_and_an_achieved_score_read_as_one_line_each() {
        let searched = Event::Searched {
            file: "/lib/a.mkv".into(),
            target: "VMAF 95.00".into(),
            encoder: "libx265".into(),
            quality: Some(Quality::whole(27)),
            predicted_bytes: 1 << 20,
            predicted_score: 95.31,
            trials: 4,
            sample_secs: 24.0,
            seconds: 61.0,
            cached: false,
            host: None,
            cut_short: false,
        };
        assert_eq!(
            human_text(&searched).unwrap(),
            "/lib/a.mkv: --quality 27 for VMAF 95.00 (libx265; predicted 1.00 MiB at score \
             95.3100) after 4 trials in 1m01s"
        );
        let cut = Event::Searched {
            file: "/lib/c.mkv".into(),
            target: "VMAF 95.00".into(),
            encoder: "libx265".into(),
            quality: None,
            predicted_bytes: 1 << 20,
            predicted_score: 93.64,
            trials: 1,
            sample_secs: 24.0,
            seconds: 61.0,
            cached: false,
            host: None,
            cut_short: true,
        };
        assert_eq!(
            human_text(&cut).unwrap(),
            "/lib/c.mkv: not searched further for VMAF 95.00 (libx265): a trial under it \
             already predicts at least 1.00 MiB, after 1 trial in 1m01s"
        );
        let json = serde_json::to_value(&cut).unwrap();
        assert_eq!(json["cut_short"], true, "{json}");
        assert!(
            serde_json::to_value(&searched)
                .unwrap()
                .get("cut_short")
                .is_none()
        );
        let seeded = Event::Searching {
            file: "/lib/b.mkv".into(),
            target: "VMAF 95.00".into(),
            trial: 0,
            quality: None,
            score: None,
            seeded_from: Some(crate::cache::Seed {
                file: "a.mkv".into(),
                quality: Quality::from_tenths(263),
            }),
        };
        assert_eq!(
            human_text(&seeded).unwrap(),
            "searching /lib/b.mkv for VMAF 95.00, from --quality 26.3 as a.mkv found"
        );
        let json = serde_json::to_value(&seeded).unwrap();
        assert_eq!(json["seeded_from"]["quality"], 26.3, "{json}");
        let converted = Event::Converted {
            file: "/lib/a.mkv".into(),
            output: "/lib/a.mkv".into(),
            before_bytes: 4 << 20,
            after_bytes: 1 << 20,
            seconds: 5.0,
            encoder: "libx265".into(),
            fallback: None,
            dropped: Vec::new(),
            score: Some(Score {
                metric: crate::quality::Metric::Vmaf,
                value: 95.123,
            }),
        };
        assert!(
            human_text(&converted)
                .unwrap()
                .ends_with("in 5s; VMAF 95.12"),
            "{:?}",
            human_text(&converted)
        );
    }

    /// The plan's lines, written in place, read as lines formatted from `human_bytes`'
    /// strings do: each figure padded to its column.
    #[test]
    fn plan_lines_pad_their_figures_into_columns() {
        let planned = |action, size_bytes, predicted_score| Event::Planned {
            file: "/lib/Show\u{1b}.mkv".into(),
            codec: "h264".into(),
            action,
            reason: None,
            detail: "hevc, mkv".into(),
            size_bytes,
            estimated_bytes: size_bytes / 3,
            predicted_score,
        };
        let line = |event: &Event| {
            let mut out = Vec::new();
            write_plan_line(&mut out, event);
            String::from_utf8(out).unwrap()
        };
        for size in [0, 1023, 1536, 7 << 30, u64::MAX] {
            let (sz, est) = (human_bytes(size), human_bytes(size / 3));
            assert_eq!(
                line(&planned(PlannedAction::Convert, size, None)),
                format!("convert  h264       {sz:>10} -> ~{est:<10} /lib/Show\\u{{1b}}.mkv\n")
            );
            assert_eq!(
                line(&planned(PlannedAction::Convert, size, Some(95.12345))),
                format!(
                    "convert  h264       {sz:>10} -> ~{est:<10} /lib/Show\\u{{1b}}.mkv  \
                     (hevc, mkv; predicted score 95.1235)\n"
                )
            );
            assert_eq!(
                line(&planned(PlannedAction::Skip, size, None)),
                format!(
                    "skip     h264       {sz:>10}               /lib/Show\\u{{1b}}.mkv  (hevc, mkv)\n"
                )
            );
        }
        assert_eq!(format!("[{:>10}]", HumanBytes(1536)), "[  1.50 KiB]");
        assert_eq!(format!("[{:<9}]", HumanBytes(u64::MAX)), "[16.00 EiB]");
    }

    #[test]
    fn summary_text_names_the_dry_run() {
        let s = Summary {
            converted: 3,
            estimated_saving_bytes: Some(1 << 30),
            ..Summary::default()
        };
        assert!(summary_text(&s).starts_with("dry run: 3 to convert"));
    }
}
