//! The lock protocol raced by real processes.
//!
//! The processes are children of this very test binary, re-run with `--exact
//! hammer_child` and their arguments in the environment; they run the code of the
//! `lock_hammer` example. That keeps the tests independent of whether (and for
//! which profile) the example binary was built.

#[path = "../examples/lock_hammer/hammer.rs"]
mod hammer;

use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// Short thresholds so staleness shows within seconds.
fn settings() -> LockSettings {
    LockSettings {
        heartbeat: Duration::from_millis(300),
        stale_after: Duration::from_secs(2),
        unreadable_grace: Duration::from_secs(1),
        guard_timeout: Duration::from_secs(1),
    }
}

/// `args` and the arguments that give a child the thresholds of [`settings`].
fn short_thresholds<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--heartbeat-ms",
        "300",
        "--stale-after-ms",
        "2000",
        "--grace-ms",
        "1000",
        "--guard-timeout-ms",
        "1000",
    ]);
    all
}

/// A library directory for the locks, and a separate one for the children's
/// output, so "nothing left behind" can be checked on the first.
struct Scene {
    _temp: tempfile::TempDir,
    library: PathBuf,
    work: PathBuf,
}

impl Scene {
    fn new() -> std::io::Result<Scene> {
        let temp = tempfile::tempdir()?;
        let library = temp.path().join("library");
        let work = temp.path().join("work");
        fs::create_dir(&library)?;
        fs::create_dir(&work)?;
        Ok(Scene {
            _temp: temp,
            library,
            work,
        })
    }

    fn media(&self) -> PathBuf {
        self.library.join("Movie1.mkv")
    }

    fn lock(&self) -> PathBuf {
        lock_path(&self.media()).unwrap_or_default()
    }

    fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.library)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            // The hosts' presence records are bookkeeping, tested in their own place.
            .filter(|name| name != ".mediabox-hosts")
            .collect();
        names.sort();
        names
    }

    /// Starts a child as host `host` on this scene's library.
    fn spawn(&self, name: &str, host: &str, args: &[&str]) -> Result<Hammer, Box<dyn Error>> {
        let out = self.work.join(format!("{name}.out"));
        let log_path = self.work.join(format!("{name}.log"));
        let mut all = vec![
            "lock_hammer".to_owned(),
            "--dir".to_owned(),
            self.library.to_string_lossy().into_owned(),
            "--out".to_owned(),
            out.to_string_lossy().into_owned(),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        let log = File::create(&log_path)?;
        let child = Command::new(env::current_exe()?)
            .args(["--exact", "hammer_child", "--nocapture", "--test-threads=1"])
            .env(hammer::child::ARGS, serde_json::to_string(&all)?)
            .env("MEDIA_CONVERTER_HOSTNAME", host)
            .env("MEDIA_CONVERTER_HOST_ID", format!("id-{host}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Hammer {
            child,
            out,
            log: log_path,
        })
    }
}

/// A child process; killed if a test ends while it still runs.
struct Hammer {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl Hammer {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the child to exit; kills it and fails after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "child did not exit in {timeout:?}; log:\n{}",
                        self.log()
                    ));
                }
                Err(err) => return Err(err.to_string()),
            }
        }
    }

    /// Waits until the child's output contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.contains(needle) {
                return Ok(output);
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(format!(
                    "no {needle:?} from the child; output {output:?}; log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child the hard way (SIGKILL on unix) and reaps it.
    fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

#[test]
fn a_killed_holder_is_taken_over_at_once_by_its_own_host() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.spawn(
        "holder",
        "nas-a",
        &short_thresholds(&["--mode", "hold", "--hold-ms", "60000"]),
    )?;
    holder.wait_for("acquired", Duration::from_secs(10))?;
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
    let mut holder = scene.spawn(
        "holder",
        "nas-a",
        &short_thresholds(&["--mode", "hold", "--hold-ms", "60000"]),
    )?;
    holder.wait_for("acquired", Duration::from_secs(10))?;
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
    let mut holder = scene.spawn(
        "holder",
        "nas-a",
        &short_thresholds(&["--mode", "hold", "--hold-ms", "60000"]),
    )?;
    holder.wait_for("acquired", Duration::from_secs(10))?;
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
    let mut stranger = Command::new("sleep").arg("30").spawn()?;
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
