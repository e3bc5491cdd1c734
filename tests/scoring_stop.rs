//! What happens to a `--target-ssim` conversion when, during the achieved-score pass (after
//! the encode and its verification, before the swap), another host breaks its claim, the
//! deadline passes, or someone else changes or removes the original; and when the pass's
//! ffmpeg dies.
//!
//! The real ffmpeg (Debian's 5.1: SSIM needs no libvmaf) does everything; a wrapper first on `PATH` holds the one call that
//! scores the new file (SSIM, reading the hidden temp output beside the original) until the
//! test has made its change, or never lets it run, to prove the run stops it by itself. Each
//! case asserts the original is byte for byte what it should be, nothing is left beside it,
//! the JSON stream names the file and the reason, the exit code, that the run goes on with
//! the next file where it may, and that no wait is unbounded. The files' searches are cached
//! beforehand, once for all cases, so that each run goes straight to its encode and pass.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use common::{
    CACHE_FILE, GatedTool, Held, Running, age, cmd, of_kind, read_cache, signal, take_over_live,
    temp_outputs, walk,
};
use media_converter::identity::HostIdentity;
use media_converter::lock::{Acquire, LockGuard, LockRecord, LockSettings, Locker, lock_path};
use serde_json::Value;

/// `first.mkv`'s achieved-score pass: ffmpeg's `ssim` filter reading the temp output, whose
/// hidden name (`.first.mkv.mediabox-ID.partial.mkv`) lies beside the original; a trial's
/// samples are in a temp folder, and the verification computes no SSIM.
const SCORING: &[&str] = &["ssim", ".first.mkv.mediabox-"];

/// How long a run may take to reach the pass (its file's search, the encode and its
/// verification); about 5 s with a search, 1 s without, on an idle machine.
const TO_THE_PASS: u64 = 120;

/// A run's `--max-runtime` where the deadline must pass during the pass: the encode and the
/// verification (the search is cached), of both files where `next.mkv` goes first, fit in it,
/// and the held pass outlasts it.
const RUNTIME: Duration = Duration::from_secs(5);

/// Two clips a `--target-ssim` run converts: `first.mkv`, whose pass is held, and `next.mkv`,
/// which the run converts before or after it (`--order name` puts `first.mkv` first, but a
/// file is started as soon as the survey has probed it, so either may start first). Both
/// searches are in the folder's cache already ([`template`]): a run goes straight to the
/// encode and the pass, as after an interrupted run or another host's search.
struct Library {
    dir: tempfile::TempDir,
    first: PathBuf,
    next: PathBuf,
}

impl Library {
    fn new() -> Library {
        let template = template();
        let dir = tempfile::tempdir().unwrap();
        for name in ["first.mkv", "next.mkv", CACHE_FILE] {
            let from = template.join(name);
            let to = dir.path().join(name);
            std::fs::copy(&from, &to).unwrap();
            // The same fingerprint (size and mtime), so the cache's searches hold.
            let modified = std::fs::metadata(&from).unwrap().modified().unwrap();
            let file = std::fs::File::options().write(true).open(&to).unwrap();
            file.set_modified(modified).unwrap();
        }
        let first = dir.path().join("first.mkv");
        let next = dir.path().join("next.mkv");
        Library { dir, first, next }
    }

    /// Every file in the library is one of the two clips: no temp output, backup or lock.
    fn assert_nothing_else(&self) {
        assert_eq!(
            walk(self.dir.path()),
            vec![self.first.clone(), self.next.clone()]
        );
    }
}

/// The folder every [`Library`] is copied from, made once per test process: the two clips,
/// and a cache holding each one's search, made by a run of each stopped with Ctrl-C during
/// its pass (the search is recorded when it ends; `tests/interrupt_scoring.rs`).
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scoring_stop");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Both at once, each its own file: they share the cache as hosts do.
        let runs: Vec<_> = [("first.mkv", "256x144"), ("next.mkv", "160x90")]
            .into_iter()
            .map(|(name, size)| {
                let clip_path = dir.join(name);
                clip(&clip_path, size);
                age(&clip_path);
                let needle = format!(".{name}.mediabox-");
                let ffmpeg = GatedTool::holding("ffmpeg", &["ssim", &needle]);
                let run = cmd()
                    .env("PATH", ffmpeg.path_var())
                    .arg("--file")
                    .arg(&clip_path)
                    .args(RUN_ARGS)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (name, ffmpeg, Running(run))
            })
            .collect();
        for (name, ffmpeg, mut run) in runs {
            let held = ffmpeg.wait_held(&mut run.0, TO_THE_PASS);
            signal(run.0.id(), "INT");
            let status = run.wait().unwrap();
            held.kill();
            assert_eq!(status.code(), Some(130), "the template's run of {name}");
        }
        let cache = read_cache(&dir);
        for name in ["first.mkv", "next.mkv"] {
            assert!(
                cache["files"][name]["search"]["quality"].is_number(),
                "{cache:#}"
            );
        }
        dir
    })
}

/// One second of smooth pictures at `size`, nearly lossless: libx265 shrinks it at any
/// quality a search may choose, and its search takes a few trials of a second each.
fn clip(out: &Path, size: &str) {
    common::mpeg4_clip_of(out, &format!("testsrc2=size={size}:rate=24"), 1);
}

/// What every run here converts with, the template's too.
const RUN_ARGS: &[&str] = &[
    "--json",
    "--target-ssim",
    "0.97",
    "--min-savings",
    "0",
    "--preset",
    "ultrafast",
];

/// A conversion run of the library as host `a` through the gated ffmpeg, its JSON events
/// read as they come, each with when it came.
struct Run {
    child: Running,
    events: Arc<Mutex<Vec<(Instant, Value)>>>,
    reader: Option<JoinHandle<()>>,
}

impl Run {
    fn start(library: &Library, ffmpeg: &GatedTool, extra: &[&str]) -> Run {
        let mut child = cmd()
            .env("PATH", ffmpeg.path_var())
            .env("MEDIA_CONVERTER_HOSTNAME", "a")
            .env("MEDIA_CONVERTER_HOST_ID", "a-id")
            .arg("--dir")
            .arg(library.dir.path())
            .args(RUN_ARGS)
            .args(["--jobs", "1", "--order", "name"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let read = Arc::clone(&events);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let event = serde_json::from_str(&line.unwrap()).unwrap();
                read.lock().unwrap().push((Instant::now(), event));
            }
        });
        Run {
            child: Running(child),
            events,
            reader: Some(reader),
        }
    }

    /// Waits for the held scoring call.
    fn held_pass(&mut self, ffmpeg: &GatedTool) -> Held {
        ffmpeg.wait_held(&mut self.child.0, TO_THE_PASS)
    }

    /// When the run's first file had certainly started: the first event about a claimed file
    /// (its search, cached or not, begins once it is claimed).
    fn first_start_bound(&self) -> Instant {
        let events = self.events.lock().unwrap();
        let claimed = ["searching", "searched", "converting"];
        let first = events
            .iter()
            .find(|(_, e)| claimed.iter().any(|kind| e["event"] == *kind));
        first.expect("no file was started").0
    }

    /// Waits up to `secs` for the run to end (a run still going then is killed and fails
    /// the test: nothing here may wait for ever), then checks that the scoring call `held`
    /// did not outlive it. Its exit code and events.
    fn finish(mut self, secs: u64, held: &Held) -> (Option<i32>, Vec<Value>) {
        let until = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                held.kill();
                panic!("still running after {secs} s: {:#?}", self.events());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let orphan = held.running();
        held.kill();
        let events = self.events();
        assert!(
            !orphan,
            "the scoring call {} outlived the run: {events:#?}",
            held.pid
        );
        (status.code(), events)
    }

    /// Every event, once the run's output has ended.
    fn events(&mut self) -> Vec<Value> {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let events = self.events.lock().unwrap();
        events.iter().map(|(_, e)| e.clone()).collect()
    }
}

/// The events of `kind` about `file`.
fn about<'a>(events: &'a [Value], kind: &str, file: &Path) -> Vec<&'a Value> {
    let file = file.to_str().unwrap();
    of_kind(events, kind)
        .into_iter()
        .filter(|e| e["file"] == file)
        .collect()
}

/// The one `failed` event of `file`: its error.
fn failure<'a>(events: &'a [Value], file: &Path) -> &'a str {
    let failed = about(events, "failed", file);
    assert_eq!(failed.len(), 1, "{events:#?}");
    failed[0]["error"].as_str().unwrap()
}

/// `file` was not converted, and no event but a search trial's claims a score for it.
fn assert_not_converted(events: &[Value], file: &Path) {
    assert!(about(events, "converted", file).is_empty(), "{events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| e["file"] == file.to_str().unwrap() && e["event"] != "searching")
            .all(|e| e.get("score").is_none()),
        "{events:#?}"
    );
}

/// The run went on: `next.mkv` was converted at its cached search's quality, scored over its
/// whole pass.
fn assert_next_converted(library: &Library, events: &[Value]) {
    let searched = about(events, "searched", &library.next);
    assert_eq!(searched.len(), 1, "{events:#?}");
    assert_eq!(searched[0]["cached"], true, "{events:#?}");
    let converted = about(events, "converted", &library.next);
    assert_eq!(converted.len(), 1, "{events:#?}");
    assert_eq!(converted[0]["score"]["metric"], "ssim", "{events:#?}");
    assert!(
        converted[0]["score"]["value"].as_f64().unwrap() > 0.9,
        "{events:#?}"
    );
    assert_eq!(common::video_codec(&library.next), "hevc");
}

/// The summary's count of `what`.
fn summary(events: &[Value], what: &str) -> u64 {
    let summary = of_kind(events, "summary");
    assert_eq!(summary.len(), 1, "{events:#?}");
    summary[0][what].as_u64().unwrap()
}

/// Host `b`, as a run makes it: breaking a dead claim on its way to its own, it settles what
/// the dead claim left (the temp output goes).
fn host_b() -> Locker {
    media_converter::lock::settling(Locker::new(
        HostIdentity {
            hostname: "b".into(),
            host_id: "b-id".into(),
        },
        LockSettings {
            stale_after: LOCK_TIMEOUT,
            heartbeat: Duration::from_secs(1),
            ..LockSettings::default()
        },
    ))
}

/// The thresholds of host `a` where host `b` breaks its claim as stale.
const SHORT_LOCKS: &[&str] = &["--lock-timeout", "3s", "--heartbeat", "1s"];
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// Host `a` (the run) stalls, as a host on a share that stops answering does, until host `b`
/// has judged its claim on `media` stale, broken it and claimed the file; then, after
/// `meanwhile`, `a` goes on.
fn stall_until_taken_over(run: &Run, media: &Path, meanwhile: impl FnOnce()) -> LockGuard {
    let pid = run.child.0.id();
    signal(pid, "STOP");
    // However this ends, `a` goes on: a stopped run would hold the test's end.
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            signal(self.0, "CONT");
        }
    }
    let _resume = Resume(pid);
    let host_b = host_b();
    let until = Instant::now() + LOCK_TIMEOUT * 10;
    loop {
        match host_b.try_acquire(media).unwrap() {
            Acquire::Acquired(guard) => {
                meanwhile();
                return guard;
            }
            Acquire::Held(holder) => assert!(
                Instant::now() < until,
                "a's claim never went stale: {holder}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lock on `media` is still `taken`'s (the run neither released nor removed it); then
/// host `b` lets it go.
fn assert_still_taken(media: &Path, taken: LockGuard) {
    let bytes = std::fs::read(lock_path(media).unwrap()).unwrap();
    let record = LockRecord::parse(&bytes).unwrap();
    assert_eq!(record.hostname, "b");
    assert_eq!(record.lock_id.as_deref(), Some(taken.lock_id()));
    taken.release().unwrap();
}

/// After the run: `first.mkv` abandoned with `reason` (lost claim), untouched, its lock
/// still host `b`'s, its search still cached and no failure counted against it; the run
/// went on with `next.mkv`; nothing left beside them; exit 1, as for any file that could not
/// be converted.
fn assert_abandoned_to_b(
    library: &Library,
    before: &[u8],
    taken: LockGuard,
    (code, events): (Option<i32>, Vec<Value>),
    reason: &str,
) {
    let error = failure(&events, &library.first);
    assert!(error.contains(reason), "{error}");
    assert!(
        about(&events, "warning", &library.first).is_empty(),
        "{events:#?}"
    );
    assert_not_converted(&events, &library.first);
    assert_still_taken(&library.first, taken);
    assert_next_converted(library, &events);
    assert_eq!(std::fs::read(&library.first).unwrap(), before);
    library.assert_nothing_else();
    assert_search_kept_and_no_failure(library);
    assert_eq!(summary(&events, "failed"), 1);
    assert_eq!(summary(&events, "converted"), 1);
    assert_eq!(code, Some(1), "{events:#?}");
}

/// The cache still holds `first.mkv`'s search for the next run, and neither a conversion
/// nor a failure: what stopped it was not the file's doing.
fn assert_search_kept_and_no_failure(library: &Library) {
    let cache = read_cache(library.dir.path());
    let entry = &cache["files"]["first.mkv"];
    assert!(entry["search"]["quality"].is_number(), "{cache:#}");
    assert!(entry.get("converted").is_none(), "{cache:#}");
    assert!(entry.get("failed").is_none(), "{cache:#}");
}

/// Host `a` stalls during the pass long enough for host `b` to break its claim as stale (and
/// remove its temp output, as a breaker settles a dead claim), then goes on: its heartbeat
/// finds the claim gone, and the run stops the pass by itself (the scoring call is never let
/// go), abandons the file without touching it or `b`'s lock, and converts the next one.
#[test]
fn a_claim_broken_during_the_pass_stops_it_and_the_run_goes_on() {
    let library = Library::new();
    let before = std::fs::read(&library.first).unwrap();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let mut run = Run::start(&library, &ffmpeg, SHORT_LOCKS);
    let held = run.held_pass(&ffmpeg);
    assert_eq!(temp_outputs(&library.first).len(), 1);
    let taken = stall_until_taken_over(&run, &library.first, || ());
    assert_eq!(temp_outputs(&library.first), Vec::<PathBuf>::new());
    // The gate stays shut: only a run that watches its claim during the pass ever ends.
    let ended = run.finish(60, &held);
    let reason = "lost the claim while scoring its new file";
    assert_abandoned_to_b(&library, &before, taken, ended, reason);
}

/// Host `b` takes the claim over while host `a`, heartbeating once a minute (the default),
/// has not noticed: the pass ends with a score, but the fresh look at the claim before the
/// swap finds it gone, so the new file is discarded, and no event claims its score.
#[test]
fn a_claim_taken_over_during_the_pass_is_caught_before_the_swap() {
    let library = Library::new();
    let before = std::fs::read(&library.first).unwrap();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let mut run = Run::start(&library, &ffmpeg, &[]);
    let held = run.held_pass(&ffmpeg);
    let taken = take_over_live(&library.first, false);
    ffmpeg.go();
    let ended = run.finish(60, &held);
    let reason = "lost the claim before the swap";
    assert_abandoned_to_b(&library, &before, taken, ended, reason);
}

/// As above, but host `b` removed the new file as it took the claim over (as a breaker
/// settles a dead claim): the pass cannot read it. The file is abandoned for its lost claim,
/// not warned about as a score that could not be measured.
#[test]
fn a_claim_taken_over_with_the_new_file_during_the_pass_is_named_as_lost() {
    let library = Library::new();
    let before = std::fs::read(&library.first).unwrap();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let mut run = Run::start(&library, &ffmpeg, &[]);
    let held = run.held_pass(&ffmpeg);
    let taken = take_over_live(&library.first, true);
    assert_eq!(temp_outputs(&library.first), Vec::<PathBuf>::new());
    ffmpeg.go();
    let ended = run.finish(60, &held);
    assert_abandoned_to_b(&library, &before, taken, ended, "lost the claim");
}

/// `next.mkv` was either converted before `first.mkv`'s search began, or never started; its
/// bytes say which.
fn assert_next_not_started_after_first(library: &Library, events: &[Value], before: &[u8]) {
    let first = library.first.to_str().unwrap();
    let next = library.next.to_str().unwrap();
    let first_began = events.iter().position(|e| e["file"] == first).unwrap();
    let after: Vec<_> = events[first_began..]
        .iter()
        .filter(|e| e["file"] == next)
        .collect();
    assert!(after.is_empty(), "started after the deadline: {events:#?}");
    if about(events, "converted", &library.next).is_empty() {
        assert_eq!(std::fs::read(&library.next).unwrap(), before);
    } else {
        assert_eq!(common::video_codec(&library.next), "hevc");
    }
}

/// `--max-runtime` with `--stop-at-deadline`, passing while the pass is held: the run stops
/// the pass by itself, leaves the file for a later run (its search kept in the cache, so that
/// run encodes without a trial), starts nothing else, and exits 0 as any deadline does.
#[test]
fn the_deadline_during_the_pass_stops_it_with_stop_at_deadline() {
    let library = Library::new();
    let (first, next) = (
        std::fs::read(&library.first).unwrap(),
        std::fs::read(&library.next).unwrap(),
    );
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let runtime = format!("{}s", RUNTIME.as_secs());
    let mut run = Run::start(
        &library,
        &ffmpeg,
        &["--max-runtime", &runtime, "--stop-at-deadline"],
    );
    let held = run.held_pass(&ffmpeg);
    let deadline = run.first_start_bound() + RUNTIME;
    assert!(
        Instant::now() < deadline,
        "the pass began after the deadline: the machine is too slow for --max-runtime {runtime}"
    );
    // The gate stays shut: only a run that stops the pass at the deadline ever ends.
    let (code, events) = run.finish(60, &held);
    let late = Instant::now().saturating_duration_since(deadline);
    assert!(
        late < Duration::from_secs(10),
        "ended {late:?} after the deadline"
    );
    let skipped = about(&events, "skipped", &library.first);
    assert_eq!(skipped.len(), 1, "{events:#?}");
    assert_eq!(skipped[0]["reason"], "deadline", "{events:#?}");
    let detail = skipped[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("stopped at the deadline while scoring its new file"),
        "{detail}"
    );
    assert_not_converted(&events, &library.first);
    assert_eq!(std::fs::read(&library.first).unwrap(), first);
    assert_next_not_started_after_first(&library, &events, &next);
    assert_eq!(summary(&events, "failed"), 0);
    library.assert_nothing_else();
    assert_search_kept_and_no_failure(&library);
    assert_eq!(code, Some(0), "{events:#?}");
}

/// `--max-runtime` without `--stop-at-deadline`, passing while the pass is held: the
/// deadline only keeps new files from starting, so the pass ends and the file is converted
/// with its whole score; nothing else is started.
#[test]
fn the_deadline_during_the_pass_lets_it_end_without_stop_at_deadline() {
    let library = Library::new();
    let next = std::fs::read(&library.next).unwrap();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let runtime = format!("{}s", RUNTIME.as_secs());
    let mut run = Run::start(&library, &ffmpeg, &["--max-runtime", &runtime]);
    let held = run.held_pass(&ffmpeg);
    let deadline = run.first_start_bound() + RUNTIME;
    assert!(
        Instant::now() < deadline,
        "the pass began after the deadline: the machine is too slow for --max-runtime {runtime}"
    );
    std::thread::sleep(deadline - Instant::now() + Duration::from_millis(300));
    ffmpeg.go();
    let (code, events) = run.finish(60, &held);
    let converted = about(&events, "converted", &library.first);
    assert_eq!(converted.len(), 1, "{events:#?}");
    assert_eq!(converted[0]["score"]["metric"], "ssim", "{events:#?}");
    assert!(converted[0]["score"]["value"].as_f64().unwrap() > 0.9);
    assert_eq!(common::video_codec(&library.first), "hevc");
    assert_next_not_started_after_first(&library, &events, &next);
    library.assert_nothing_else();
    assert_eq!(code, Some(0), "{events:#?}");
}

/// Someone else changes the original while the pass is held: the fresh look at the
/// original before the swap finds it changed (or gone), so the new file is discarded and the
/// original stays as that someone left it, `after` (`None`: gone); the run converts the next
/// file.
fn original_changed_during_the_pass(change: impl FnOnce(&Path), reason: &str) {
    let library = Library::new();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let mut run = Run::start(&library, &ffmpeg, &[]);
    let held = run.held_pass(&ffmpeg);
    change(&library.first);
    let after = std::fs::read(&library.first).ok();
    ffmpeg.go();
    let (code, events) = run.finish(60, &held);
    let error = failure(&events, &library.first);
    assert!(
        error.contains(reason) && error.contains("the new file was discarded"),
        "{error}"
    );
    // A pass that could not read the original failed for that, not as a measurement.
    assert!(
        about(&events, "warning", &library.first).is_empty(),
        "{events:#?}"
    );
    assert_not_converted(&events, &library.first);
    assert_next_converted(&library, &events);
    assert_eq!(std::fs::read(&library.first).ok(), after);
    match after {
        Some(_) => library.assert_nothing_else(),
        None => assert_eq!(walk(library.dir.path()), vec![library.next.clone()]),
    }
    // No failure counted against a file someone else changed.
    let cache = read_cache(library.dir.path());
    assert!(
        cache["files"]["first.mkv"].get("failed").is_none(),
        "{cache:#}"
    );
    assert_eq!(code, Some(1), "{events:#?}");
}

/// Its mtime changed, its size not: a rewrite in place of as many bytes, or a tag editor.
#[test]
fn an_original_touched_during_the_pass_is_not_replaced() {
    let touch = |original: &Path| {
        let size = std::fs::metadata(original).unwrap().len();
        let file = std::fs::File::options().write(true).open(original).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        assert_eq!(std::fs::metadata(original).unwrap().len(), size);
    };
    original_changed_during_the_pass(touch, "the original changed during conversion");
}

/// Removed (a user deleting it, another host moving it): no new file takes its place.
#[test]
fn an_original_removed_during_the_pass_is_not_replaced() {
    let remove = |original: &Path| std::fs::remove_file(original).unwrap();
    original_changed_during_the_pass(remove, "the original vanished during conversion");
}

/// The pass's ffmpeg dies (killed from outside: the OOM killer, a user): the score cannot be
/// taken, which never fails a file, so the file is converted with a warning naming it, and
/// its `converted` event claims no score.
#[test]
fn a_pass_whose_ffmpeg_dies_converts_without_claiming_a_score() {
    let library = Library::new();
    let ffmpeg = GatedTool::holding("ffmpeg", SCORING);
    let mut run = Run::start(&library, &ffmpeg, &[]);
    let held = run.held_pass(&ffmpeg);
    held.kill();
    let (code, events) = run.finish(60, &held);
    let converted = about(&events, "converted", &library.first);
    assert_eq!(converted.len(), 1, "{events:#?}");
    assert!(converted[0].get("score").is_none(), "{events:#?}");
    let warnings = about(&events, "warning", &library.first);
    assert!(
        warnings.iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("its achieved SSIM could not be measured")),
        "{events:#?}"
    );
    let cache = read_cache(library.dir.path());
    let record = &cache["files"]["first.mkv"]["converted"];
    assert!(record.is_object(), "{cache:#}");
    assert!(record.get("score").is_none(), "{cache:#}");
    assert_next_converted(&library, &events);
    library.assert_nothing_else();
    assert_eq!(code, Some(0), "{events:#?}");
}
