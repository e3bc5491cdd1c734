//! The body of `lock_hammer`, shared with this crate's `tests/lock.rs` and the
//! application's `tests/netmount.rs` and `tests/kernel_clients.rs`, which run it in child
//! processes of their own test binaries (so the tests never depend on the example
//! having been built).
//!
//! `cycle` mode claims one file `--iterations` times, holding each claim
//! `--hold-ms`, and writes every hold interval as `start_ns end_ns` on
//! `CLOCK_MONOTONIC` (one clock for all processes of a machine, so intervals from
//! processes on different mounts can be compared). `hold` mode claims once,
//! heartbeats, and writes `acquired`, then `released` or `lost` to `--out`.
//!
//! Exit codes: 0 done, 2 error or timeout, 3 claim lost.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use share_lock::identity::HostIdentity;
use share_lock::{Acquire, Heartbeat, LockGuard, LockSettings, Locker};

/// Hammers the lock of one media file from this process.
///
/// Identity comes from MEDIA_CONVERTER_HOSTNAME and MEDIA_CONVERTER_HOST_ID.
#[derive(Debug, Parser)]
#[command(name = "lock_hammer")]
struct Options {
    /// Directory of the media file; run processes on different mounts of one share
    /// to race hosts.
    #[arg(long)]
    dir: PathBuf,
    /// Media file name (it need not exist: only its lock is used).
    #[arg(long, default_value = "Movie1.mkv")]
    file: String,
    /// Claims to make, in `cycle` mode.
    #[arg(long, default_value_t = 100)]
    iterations: u32,
    /// How long to hold each claim.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Where to write hold intervals (`cycle`) or events (`hold`).
    #[arg(long)]
    out: PathBuf,
    /// What to do.
    #[arg(long, value_enum, default_value_t = Mode::Cycle)]
    mode: Mode,
    /// Heartbeat interval in `hold` mode.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Lock `stale_after` (default: the tool's).
    #[arg(long)]
    stale_after_ms: Option<u64>,
    /// Lock `unreadable_grace` (default: the tool's).
    #[arg(long)]
    grace_ms: Option<u64>,
    /// Lock `guard_timeout` (default: the tool's).
    #[arg(long)]
    guard_timeout_ms: Option<u64>,
    /// Shift this process's wall clock (record timestamps only), to play a host
    /// whose clock is off.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    clock_offset_secs: f64,
    /// In `cycle` mode, create this file exclusively right after each claim and
    /// remove it right before the release, failing if it exists: a witness of
    /// mutual exclusion that needs no common clock, when every process reaches
    /// one directory with a trustworthy `O_EXCL` (virtual machines of one host).
    #[arg(long)]
    witness: Option<PathBuf>,
    /// Give up (exit 2) when a claim takes longer than this.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// In `cycle` mode, once one claim of another process has stood this long, or the
    /// lock has read with no claim id (changing hands: its acquire guard busy; or a
    /// record not yet readable) for this long, look at it again only every
    /// [`STALL_POLL`] until that changes: for
    /// NFSv4.1+ mounts, where a holder's `open()` of the lock can sleep for as long as
    /// other processes of its host keep opening the file (`docs/locking.md`, "A stall
    /// in NFSv4.1+ `open()`"). Off by default: every retry waits 0.2 to 2 ms.
    #[arg(long)]
    stall_after_ms: Option<u64>,
}

/// How often a claim seen standing past `--stall-after-ms` is looked at again: longer
/// than the 5 s that Linux's NFSv4.1+ client lets an `open()` wait for an out-of-order
/// open stateid, a wait that starts over whenever the file's open state changes on
/// that client.
const STALL_POLL: Duration = Duration::from_millis(6_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Cycle,
    Hold,
}

const EXIT_ERROR: u8 = 2;
const EXIT_LOST: u8 = 3;

/// How a test binary runs the hammer in child processes of its own: it re-runs itself with
/// the hammer's arguments in [`child::ARGS`] and only its `hammer_child` test, which calls
/// [`child::main`].
// The example binary runs the hammer from its own `main`, and uses none of this.
#[allow(dead_code)]
pub mod child {
    /// Where a child finds its arguments (a JSON array, program name first).
    pub const ARGS: &str = "MEDIA_CONVERTER_TEST_HAMMER_ARGS";

    /// Runs the hammer and exits with its code when [`ARGS`] is set; returns at once
    /// otherwise, as in every normal test run.
    pub fn main() {
        let Ok(args) = std::env::var(ARGS) else {
            return;
        };
        let code = match serde_json::from_str::<Vec<String>>(&args) {
            Ok(args) => super::run(args),
            Err(err) => {
                eprintln!("bad {ARGS}: {err}");
                2
            }
        };
        std::process::exit(i32::from(code));
    }
}

/// Runs the hammer with `args` (program name first); returns the exit code.
pub fn run<T: Into<OsString> + Clone>(args: impl IntoIterator<Item = T>) -> u8 {
    let options = match Options::try_parse_from(args) {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { EXIT_ERROR } else { 0 };
        }
    };
    let result = match options.mode {
        Mode::Cycle => cycle(&options),
        Mode::Hold => hold(&options),
    };
    result.unwrap_or_else(|err| {
        eprintln!("lock_hammer: {err}");
        EXIT_ERROR
    })
}

fn locker(options: &Options) -> Locker {
    let defaults = LockSettings::default();
    let ms = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
    let settings = LockSettings {
        heartbeat: ms(options.heartbeat_ms, defaults.heartbeat),
        stale_after: ms(options.stale_after_ms, defaults.stale_after),
        unreadable_grace: ms(options.grace_ms, defaults.unreadable_grace),
        guard_timeout: ms(options.guard_timeout_ms, defaults.guard_timeout),
    };
    let offset = options.clock_offset_secs;
    Locker::new(HostIdentity::current(), settings).with_wall_clock(move || shifted(offset))
}

fn shifted(offset_secs: f64) -> SystemTime {
    let now = SystemTime::now();
    let shift = Duration::try_from_secs_f64(offset_secs.abs()).unwrap_or_default();
    let shifted = if offset_secs < 0.0 {
        now.checked_sub(shift)
    } else {
        now.checked_add(shift)
    };
    shifted.unwrap_or(now)
}

/// A claim (or a lock changing hands) that stood longer than `--stall-after-ms` while
/// we waited.
struct Stall {
    /// How long we waited for it.
    waited: Duration,
    /// Whether what stood had no claim id (changing hands, or a record not yet
    /// readable) when we first polled it slowly.
    unnamed: bool,
}

/// Claims `media`, retrying while it is held, until `timeout`; with `stall_after`,
/// a claim that stands that long is polled every [`STALL_POLL`] only, and reported.
/// A lock read as changing hands has no claim id: readings of it in a row count as one
/// claim standing, so a holder stuck under the acquire guard (in its `open()` of the
/// lock, say) is polled as slowly as one stuck holding the lock.
fn acquire(
    locker: &Locker,
    media: &Path,
    timeout: Duration,
    stall_after: Option<Duration>,
    jitter: &mut Jitter,
) -> Result<(LockGuard, u64, Option<Stall>), String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut held = 0;
    // The claim we are waiting on (`None`: changing hands), and since when we see it.
    let mut standing: Option<(Option<String>, Instant)> = None;
    // Set once a reading stood past `stall_after`: whether that one had no claim id.
    let mut stalled: Option<bool> = None;
    loop {
        match locker.try_acquire(media).map_err(|err| error_chain(&err))? {
            Acquire::Acquired(guard) => {
                let stall = stalled.map(|unnamed| Stall {
                    waited: started.elapsed(),
                    unnamed,
                });
                return Ok((guard, held, stall));
            }
            Acquire::Held(holder) => {
                held += 1;
                let now = Instant::now();
                if now >= deadline {
                    return Err(format!("still held after {timeout:?}: {holder}"));
                }
                let since = match &standing {
                    Some((id, since)) if *id == holder.lock_id => *since,
                    _ => now,
                };
                standing = Some((holder.lock_id.clone(), since));
                let stuck = stall_after.is_some_and(|after| now.duration_since(since) >= after);
                if stuck && stalled.is_none() {
                    stalled = Some(holder.lock_id.is_none());
                }
                let pause = if stuck { STALL_POLL } else { jitter.pause() };
                thread::sleep(pause.min(deadline.saturating_duration_since(now)));
            }
        }
    }
}

fn cycle(options: &Options) -> Result<u8, String> {
    let locker = locker(options);
    let media = options.dir.join(&options.file);
    let timeout = Duration::from_millis(options.timeout_ms);
    let stall_after = options.stall_after_ms.map(Duration::from_millis);
    let mut jitter = Jitter::new();
    let mut intervals = String::new();
    let mut held_total = 0;
    let mut stalls = Vec::new();
    let mut unnamed_stalls = 0;
    let started = Instant::now();
    for _ in 0..options.iterations {
        let (guard, held, stall) = acquire(&locker, &media, timeout, stall_after, &mut jitter)?;
        held_total += held;
        if let Some(stall) = stall {
            stalls.push(stall.waited.as_secs_f64());
            unnamed_stalls += usize::from(stall.unnamed);
        }
        let start = monotonic_ns();
        if let Some(witness) = &options.witness {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(witness)
                .map_err(|err| format!("two holders at once? {}: {err}", witness.display()))?;
        }
        if options.hold_ms > 0 {
            thread::sleep(Duration::from_millis(options.hold_ms));
        }
        if let Some(witness) = &options.witness {
            fs::remove_file(witness).map_err(|err| format!("{}: {err}", witness.display()))?;
        }
        let end = monotonic_ns();
        // Release checks the claim is still ours: an overlap would fail here too.
        guard.release().map_err(|err| error_chain(&err))?;
        intervals.push_str(&format!("{start} {end}\n"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    write_atomically(&options.out, &intervals)?;
    let stalled: Vec<String> = stalls.iter().map(|secs| format!("{secs:.1}")).collect();
    println!(
        "cycles={} held_retries={held_total} seconds={elapsed:.3} cycles_per_second={:.0} \
         stalls={} unnamed_stalls={unnamed_stalls} stall_waits_s=[{}]",
        options.iterations,
        f64::from(options.iterations) / elapsed.max(f64::EPSILON),
        stalls.len(),
        stalled.join(",")
    );
    Ok(0)
}

fn hold(options: &Options) -> Result<u8, String> {
    let locker = locker(options);
    let media = options.dir.join(&options.file);
    let timeout = Duration::from_millis(options.timeout_ms);
    let (guard, ..) = acquire(&locker, &media, timeout, None, &mut Jitter::new())?;
    let guard = Arc::new(guard);
    let interval = locker.settings().heartbeat;
    let heartbeat = Heartbeat::start(Arc::clone(&guard), interval)
        .map_err(|err| format!("cannot start the heartbeat: {err}"))?;
    heartbeat.set_phase("transcoding");
    let acquired = format!("acquired {} {}\n", guard.lock_id(), std::process::id());
    write_atomically(&options.out, &acquired)?;
    let until = Instant::now() + Duration::from_millis(options.hold_ms);
    while Instant::now() < until {
        if heartbeat.lost() {
            let reason = heartbeat.lost_reason().unwrap_or_default();
            write_atomically(&options.out, &format!("{acquired}lost {reason}\n"))?;
            return Ok(EXIT_LOST);
        }
        thread::sleep(Duration::from_millis(20));
    }
    heartbeat.stop();
    let guard = Arc::try_unwrap(guard).map_err(|_| "the heartbeat kept the guard".to_owned())?;
    guard.release().map_err(|err| error_chain(&err))?;
    write_atomically(&options.out, &format!("{acquired}released\n"))?;
    Ok(0)
}

/// Writes through a temp file and a rename, so a reader polling `path` never sees
/// half a line.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    fs::write(&temp, text)
        .and_then(|()| fs::rename(&temp, path))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Nanoseconds on `CLOCK_MONOTONIC`: unlike `Instant`, comparable between
/// processes on one machine.
#[cfg(unix)]
fn monotonic_ns() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u128::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u128::try_from(now.tv_nsec).unwrap_or(0)
}

/// Windows has no shared monotonic clock in std; the wall clock is shared by all
/// processes of a machine, and steps of it are rare over a test.
#[cfg(not(unix))]
fn monotonic_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// Pauses of 0.2 to 2 ms, different in every process, so retrying hammers do not
/// fall into lockstep.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        Jitter(u64::from(std::process::id()) | 1)
    }

    fn pause(&mut self) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(200 + self.0 % 1800)
    }
}
