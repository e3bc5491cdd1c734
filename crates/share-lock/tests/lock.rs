//! The lock protocol raced by real processes.
//!
//! The processes are children of this very test binary, re-run with `--exact
//! hammer_child` and their arguments in the environment; they run the code of the
//! `lock_hammer` example. That keeps the tests independent of whether (and for
//! which profile) the example binary was built.

mod scene;

use scene::{Scene, hammer, settings, short_thresholds};

use std::error::Error;
use std::fs;
use std::path::Path;

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use share_lock::testing::host;
use share_lock::{
    Acquire, Holder, LiveReason, LockGuard, LockRecord, LockSettings, Locker, Verdict, lock_path,
};

type TestResult = Result<(), Box<dyn Error>>;

/// Not a test: the entry point of the child processes the tests spawn. Run
/// without [`hammer::child::ARGS`], as in every normal test run, it does nothing.
#[test]
fn hammer_child() {
    hammer::child::main();
}

fn try_acquire(locker: &Locker, media: &Path) -> Result<Acquire, Box<dyn Error>> {
    Ok(locker.try_acquire(media)?)
}

fn expect_held(acquire: Acquire) -> Result<Holder, String> {
    match acquire {
        Acquire::Held(holder) => Ok(holder),
        Acquire::Acquired(guard) => Err(format!("expected the lock to be held, got {guard:?}")),
    }
}

/// Polls `try_acquire` until it succeeds; returns the guard and how many times
/// the lock was held.
fn acquire_within(
    locker: &Locker,
    media: &Path,
    timeout: Duration,
) -> Result<(LockGuard, u32), Box<dyn Error>> {
    let deadline = Instant::now() + timeout;
    let mut held = 0;
    loop {
        match try_acquire(locker, media)? {
            Acquire::Acquired(guard) => return Ok((guard, held)),
            Acquire::Held(holder) if Instant::now() >= deadline => {
                return Err(format!("still held after {timeout:?}: {holder}").into());
            }
            Acquire::Held(_) => held += 1,
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn four_processes_hammering_one_lock_never_overlap() -> TestResult {
    const PROCESSES: usize = 4;
    const CYCLES: usize = 100;
    let scene = Scene::new()?;
    // Two share a host id, so both the process-table and the mtime rules run.
    let hosts = ["nas-a", "nas-a", "nas-b", "nas-c"];
    let mut hammers = hosts
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let cycles = CYCLES.to_string();
            scene.spawn(
                &format!("hammer{n}"),
                host,
                &[
                    "--iterations",
                    &cycles,
                    "--hold-ms",
                    "1",
                    "--timeout-ms",
                    "30000",
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut intervals = Vec::new();
    for hammer in &mut hammers {
        let status = hammer.wait(Duration::from_secs(60))?;
        assert!(status.success(), "{status}; log:\n{}", hammer.log());
        for line in hammer.output().lines() {
            let (start, end) = line.split_once(' ').ok_or("bad interval line")?;
            intervals.push((start.parse::<u128>()?, end.parse::<u128>()?));
        }
    }
    assert_eq!(intervals.len(), PROCESSES * CYCLES, "every claim was held");
    intervals.sort_unstable();
    for pair in intervals.windows(2) {
        let ((_, end), (start, _)) = (pair[0], pair[1]);
        assert!(end < start, "two processes held the lock at once: {pair:?}");
    }
    assert_eq!(
        scene.leftovers(),
        Vec::<String>::new(),
        "no lock, tombstone or guard left"
    );
    Ok(())
}

/// `lock_hammer --stall-after-ms` polls a lock that reads as changing hands (its acquire
/// guard busy, no claim to name) as slowly as a claim that stands: once it has lasted
/// that long, every 6 s, and the wait is counted. A guard held by a process stuck in
/// its `open()` of the lock is what NFSv4.1+ against nfs-ganesha can leave, and polling
/// it every few milliseconds keeps that `open()` asleep (`docs/locking.md`, "A stall
/// in NFSv4.1+ `open()`"). Here the guard is a directory made by hand, removed after 3 s.
#[test]
fn a_lock_changing_hands_past_stall_after_is_polled_every_6_s_and_counted() -> TestResult {
    let scene = Scene::new()?;
    let guard = share_lock::names::acquire_guard_path(&scene.lock());
    fs::create_dir(&guard)?;
    let mut waiter = scene.spawn(
        "waiter",
        "nas-b",
        &[
            "--iterations",
            "1",
            "--stall-after-ms",
            "300",
            "--timeout-ms",
            "30000",
        ],
    )?;
    thread::sleep(Duration::from_secs(3));
    fs::remove_dir(&guard)?;
    let status = waiter.wait(Duration::from_secs(30))?;
    let log = waiter.log();
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains(" stalls=1 "), "one stall counted: {log}");
    assert!(log.contains(" unnamed_stalls=1 "), "on no claim id: {log}");
    // Polled at about 0.3 s and then 6 s later only: not at once after the 3 s.
    let waited: f64 = log
        .split_whitespace()
        .find_map(|field| field.strip_prefix("stall_waits_s=["))
        .and_then(|wait| wait.strip_suffix(']'))
        .ok_or("no stall_waits_s")?
        .parse()?;
    assert!(waited >= 6.0, "claimed after {waited} s: {log}");
    assert_eq!(waiter.output().lines().count(), 1, "the claim was held");
    Ok(())
}

#[test]
fn a_killed_holder_is_taken_over_at_once_by_its_own_host() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.holder("nas-a")?;
    let other_host = Locker::new(host("nas-b"), settings());
    let same_host = Locker::new(host("nas-a"), settings());
    // While it runs, even its own host leaves it alone.
    let running = expect_held(try_acquire(&same_host, &scene.media())?)?;
    assert_eq!(
        running.verdict,
        Verdict::Live(LiveReason::OwnerRunning { pid: holder.pid() })
    );

    holder.kill()?;
    let killed = Instant::now();
    // Another host cannot know yet...
    expect_held(try_acquire(&other_host, &scene.media())?)?;
    // ...but the owner's host sees the pid gone and takes over at once.
    let (guard, held) = acquire_within(&same_host, &scene.media(), Duration::from_secs(1))?;
    assert_eq!(held, 0);
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    guard.release()?;
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_killed_holder_is_taken_over_by_another_host_only_after_stale_after() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.holder("nas-a")?;
    // Let it heartbeat a few times first.
    thread::sleep(Duration::from_millis(700));
    holder.kill()?;
    let killed = Instant::now();
    let last_heartbeat = fs::metadata(scene.lock())?.modified()?;

    let other_host = Locker::new(host("nas-b"), settings());
    let (guard, held) = acquire_within(&other_host, &scene.media(), Duration::from_secs(10))?;
    assert!(held > 0);
    assert_silent_for_stale_after(last_heartbeat)?;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    guard.release()?;
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_stopped_holder_is_broken_and_learns_it_lost_when_it_resumes() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.holder("nas-a")?;
    let other_host = Locker::new(host("nas-b"), settings());
    expect_held(try_acquire(&other_host, &scene.media())?)?;

    signal(holder.pid(), libc::SIGSTOP)?;
    let last_heartbeat = fs::metadata(scene.lock())?.modified()?;
    let (guard, _) = acquire_within(&other_host, &scene.media(), Duration::from_secs(10))?;
    assert_silent_for_stale_after(last_heartbeat)?;

    signal(holder.pid(), libc::SIGCONT)?;
    let status = holder.wait(Duration::from_secs(10))?;
    assert_eq!(
        status.code(),
        Some(3),
        "the holder must see its claim lost; log:\n{}",
        holder.log()
    );
    assert!(holder.output().contains("\nlost "), "{}", holder.output());
    // And it wrote nothing over the new claim on its way out.
    guard.verify_owned()?;
    guard.release()?;
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

/// A lock last stamped at `last_heartbeat` was just broken: no sooner than
/// `stale_after` (2 s) later. On a local disk the file server's clock is ours.
fn assert_silent_for_stale_after(last_heartbeat: SystemTime) -> Result<(), Box<dyn Error>> {
    let silent = SystemTime::now().duration_since(last_heartbeat)?;
    // Less a little for coarse file timestamps (one kernel tick).
    assert!(
        silent >= Duration::from_millis(1950),
        "broken after only {silent:?}"
    );
    Ok(())
}

#[cfg(unix)]
fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: plain syscall on a child we spawned and have not reaped.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn a_heartbeating_holder_is_never_broken_by_an_impatient_host_with_a_skewed_clock() -> TestResult {
    let scene = Scene::new()?;
    // The holder's clock is 5 h slow, the breaker's 5 h fast, and the breaker
    // would call a lock stale after 0.1 s.
    let mut holder = scene.spawn(
        "holder",
        "nas-a",
        &short_thresholds(&[
            "--mode",
            "hold",
            "--hold-ms",
            "4500",
            "--clock-offset-secs",
            "-18000",
        ]),
    )?;
    holder.wait_for("acquired", Duration::from_secs(10))?;
    let breaker = Locker::new(
        host("nas-b"),
        LockSettings {
            stale_after: Duration::from_millis(100),
            ..settings()
        },
    )
    .with_wall_clock(|| SystemTime::now() + Duration::from_secs(5 * 3600));

    let until = Instant::now() + Duration::from_secs(3);
    let mut attempts = 0;
    while Instant::now() < until {
        let holder = expect_held(try_acquire(&breaker, &scene.media())?)?;
        assert!(!holder.verdict.is_stale(), "{holder}");
        attempts += 1;
        thread::sleep(Duration::from_millis(50));
    }
    assert!(attempts > 20);
    // The holder's record carries the file server's clock, not its own 5 h slow one
    // (the original tool judges locks by this timestamp).
    let record = LockRecord::parse(&fs::read(scene.lock())?)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(
        (record.timestamp - now).abs() < 60.0,
        "{}",
        record.timestamp
    );

    let status = holder.wait(Duration::from_secs(10))?;
    assert!(status.success(), "{status}; log:\n{}", holder.log());
    assert!(holder.output().ends_with("released\n"));
    let (guard, held) = acquire_within(&breaker, &scene.media(), Duration::from_secs(1))?;
    assert_eq!(held, 0);
    guard.release()?;
    Ok(())
}

#[test]
fn empty_and_corrupt_locks_left_by_a_crash_are_broken_after_the_grace() -> TestResult {
    let scene = Scene::new()?;
    let lock_of = |name: &str| lock_path(&scene.library.join(name)).unwrap_or_default();
    fs::write(lock_of("Empty.mkv"), b"")?;
    fs::write(lock_of("Cut.mkv"), br#"{"hostname": "nas-a", "pid": 12"#)?;
    let written = Instant::now();
    let mut children = ["Empty.mkv", "Cut.mkv"]
        .iter()
        .map(|file| {
            scene.spawn(
                file,
                "nas-b",
                &short_thresholds(&["--file", file, "--iterations", "1", "--timeout-ms", "10000"]),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for child in &mut children {
        let status = child.wait(Duration::from_secs(15))?;
        assert!(status.success(), "{status}; log:\n{}", child.log());
    }
    // Held for the grace (1 s), taken after it.
    assert!(written.elapsed() >= Duration::from_secs(1));
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_reused_pid_does_not_keep_a_lock() -> TestResult {
    use share_lock::identity::process_start_token;

    let scene = Scene::new()?;
    let us = Locker::new(host("nas-a"), settings());
    let mut stranger = std::process::Command::new("sleep").arg("30").spawn()?;
    let pid = stranger.id();
    let write_lock = |process_start: Option<String>| -> std::io::Result<()> {
        let record = LockRecord {
            hostname: "nas-a".into(),
            pid,
            host_id: Some("id-nas-a".into()),
            process_start,
            lock_id: Some("a".repeat(32)),
            stale_after_secs: Some(2.0),
            ..LockRecord::default()
        };
        fs::write(
            scene.lock(),
            record.to_json().map_err(std::io::Error::other)?,
        )
    };

    // Our host, a running pid, but not the process that wrote the lock (same boot and
    // pid namespace, another start).
    let token = process_start_token(pid).unwrap_or_default();
    let (world, _) = token.rsplit_once(':').unwrap_or_default();
    write_lock(Some(format!("{world}:1")))?;
    let (guard, held) = acquire_within(&us, &scene.media(), Duration::ZERO)?;
    assert_eq!(held, 0);
    guard.release()?;

    // The same pid with its own start token is the owner: held.
    write_lock(process_start_token(pid))?;
    let owner = expect_held(try_acquire(&us, &scene.media())?)?;
    assert!(
        matches!(
            owner.verdict,
            Verdict::Live(LiveReason::OwnerRunning { .. })
        ),
        "{owner}"
    );

    // Once it is gone, the lock goes at once.
    stranger.kill()?;
    stranger.wait()?;
    let (guard, held) = acquire_within(&us, &scene.media(), Duration::ZERO)?;
    assert_eq!(held, 0);
    guard.release()?;
    Ok(())
}

#[cfg(target_os = "linux")]
#[test]
fn a_directory_that_refuses_new_files_is_reported_as_not_writable() -> TestResult {
    use share_lock::LockError;
    use share_lock::testing::Immutable;

    let scene = Scene::new()?;
    // Tests run as root, which ignores permission bits; the immutable attribute
    // binds root too.
    let Some(_immutable) = Immutable::set(&scene.library)? else {
        eprintln!("skipped: chattr +i does not work here (not root, or not ext4/xfs/btrfs)");
        return Ok(());
    };
    let result = Locker::new(host("nas-a"), settings()).try_acquire(&scene.media());
    match result {
        Err(LockError::DirectoryNotWritable { dir, .. }) => assert_eq!(dir, scene.library),
        other => return Err(format!("expected DirectoryNotWritable, got {other:?}").into()),
    }
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

/// A heartbeat rewrites its lock in place: a write, then a cut to length. A process killed
/// between the two (the fault matrix's SIGKILL at `ftruncate`) left its new record followed
/// by the tail of the old, longer one: unparseable, so its phase and lock id were lost and
/// `locks clean` kept the backup of a finished swap as a possible only copy. The write alone
/// must leave one whole record: a shorter one is padded with JSON's whitespace.
#[test]
fn a_heartbeats_write_alone_leaves_a_whole_record() -> TestResult {
    let scene = Scene::new()?;
    let locker = Locker::new(host("nas-a"), settings());
    let guard = match try_acquire(&locker, &scene.media())? {
        Acquire::Acquired(guard) => guard,
        Acquire::Held(holder) => return Err(format!("held: {holder:?}").into()),
    };
    let lock = lock_path(&scene.media()).ok_or("no lock path")?;
    guard.heartbeat("swap:replacing:keeping-original", None)?;
    let longer = fs::read(&lock)?.len();
    guard.heartbeat("swap:done", None)?;
    let bytes = fs::read(&lock)?;
    assert_eq!(
        bytes.len(),
        longer,
        "the shorter record was cut: a kill before the cut would leave the old tail"
    );
    let record: LockRecord = serde_json::from_slice(&bytes)?;
    assert_eq!(record.phase.as_deref(), Some("swap:done"));
    guard.release()?;
    Ok(())
}
