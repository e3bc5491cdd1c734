//! The protocol on a real directory, within one process. Races between processes
//! are in this crate's `tests/lock.rs`.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::names;
use crate::testing::{
    Library, acquired, foreign_record, host, names_in, set_mtime, short_settings as settings,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HOUR: Duration = Duration::from_secs(3600);

fn locker(name: &str) -> Locker {
    Locker::new(host(name), settings())
}

fn held(acquire: Acquire) -> Result<Holder, String> {
    match acquire {
        Acquire::Held(holder) => Ok(holder),
        Acquire::Acquired(guard) => Err(format!("expected held, acquired {guard:?}")),
    }
}

#[test]
fn a_claim_excludes_others_until_released_and_leaves_nothing() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let (a, b) = (locker("nas-a"), locker("nas-b"));

    let guard = acquired(a.try_acquire(&media)?)?;
    let holder = held(b.try_acquire(&media)?)?;
    assert_eq!(holder.hostname.as_deref(), Some("nas-a"));
    assert_eq!(holder.host_id.as_deref(), Some("id-nas-a"));
    assert_eq!(holder.pid, Some(std::process::id()));
    assert_eq!(holder.lock_id.as_deref(), Some(guard.lock_id()));
    assert_eq!(holder.phase.as_deref(), Some(PHASE_CLAIMED));
    assert!(matches!(
        holder.verdict,
        Verdict::Live(LiveReason::Heartbeating { .. })
    ));
    // Our own host asks the process table, not the clock.
    let holder = held(a.try_acquire(&media)?)?;
    assert!(matches!(
        holder.verdict,
        Verdict::Live(LiveReason::OwnerRunning { .. })
    ));

    guard.release()?;
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    acquired(b.try_acquire(&media)?)?.release()?;
    Ok(())
}

#[test]
fn the_record_on_disk_has_every_field() -> TestResult {
    let library = Library::new()?;
    let guard = acquired(locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?)?;
    assert_eq!(guard.path(), library.lock("Movie1.mkv"));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(guard.path())?)?;
    assert_eq!(json["hostname"], "nas-a");
    assert_eq!(json["pid"], std::process::id());
    assert!(json["timestamp"].as_f64().is_some_and(|t| t > 1.6e9));
    assert_eq!(json["file"], "Movie1.mkv");
    let locked_at = json["locked_at"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(locked_at).is_ok(),
        "{locked_at}"
    );
    assert_eq!(json["lock_id"], guard.lock_id());
    assert!(names::is_lock_id(guard.lock_id().as_bytes()));
    assert_eq!(json["host_id"], "id-nas-a");
    if cfg!(target_os = "linux") {
        assert!(
            json["process_start"]
                .as_str()
                .is_some_and(|t| t.starts_with("linux:"))
        );
    }
    assert_eq!(json["heartbeat_secs"], 0.5);
    assert_eq!(json["stale_after_secs"], 2.0);
    assert_eq!(json["phase"], "claimed");
    assert_eq!(json["tool_version"], env!("CARGO_PKG_VERSION"));
    // Our record in memory is what is on disk (floats compared to the microsecond).
    let on_disk = LockRecord::parse(&fs::read(guard.path())?)?;
    assert!((guard.record().timestamp - on_disk.timestamp).abs() < 1e-6);
    assert_eq!(
        LockRecord {
            timestamp: 0.0,
            ..guard.record()
        },
        LockRecord {
            timestamp: 0.0,
            ..on_disk
        }
    );
    guard.release()?;
    Ok(())
}

#[test]
fn heartbeat_rewrites_the_record_and_has_the_server_stamp_it() -> TestResult {
    let library = Library::new()?;
    let guard = acquired(locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?)?;
    set_mtime(guard.path(), SystemTime::now() - HOUR)?;
    let progress = Progress {
        percent: 42.0,
        fps: Some(120.0),
        eta_secs: Some(33.0),
    };
    guard.heartbeat("transcoding", Some(progress))?;

    let record = LockRecord::parse(&fs::read(guard.path())?)?;
    assert_eq!(record.phase.as_deref(), Some("transcoding"));
    assert_eq!(record.progress, Some(progress));
    assert_eq!(record.lock_id.as_deref(), Some(guard.lock_id()));
    let mtime = fs::metadata(guard.path())?.modified()?;
    let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
    assert!(age < Duration::from_secs(5), "{age:?}");
    // A shorter record leaves no tail of the longer one behind.
    guard.heartbeat("verifying", None)?;
    assert_eq!(LockRecord::parse(&fs::read(guard.path())?)?.progress, None);
    guard.release()?;
    Ok(())
}

#[test]
fn a_claim_broken_behind_our_back_is_lost_and_never_recreated() -> TestResult {
    let library = Library::new()?;
    let guard = acquired(locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?)?;
    let lock = guard.path().to_owned();

    fs::write(
        &lock,
        foreign_record("nas-b", "b".repeat(32).as_str()).to_json()?,
    )?;
    let lost = guard
        .heartbeat("transcoding", None)
        .err()
        .ok_or("heartbeat succeeded")?;
    assert!(lost.is_definitive());
    assert!(matches!(&lost.reason, LostReason::Replaced { hostname: Some(h) } if h == "nas-b"));
    assert!(guard.verify_owned().is_err());
    // The other claim is untouched.
    assert_eq!(LockRecord::parse(&fs::read(&lock)?)?.hostname, "nas-b");

    fs::remove_file(&lock)?;
    let lost = guard
        .heartbeat("transcoding", None)
        .err()
        .ok_or("heartbeat succeeded")?;
    assert!(matches!(lost.reason, LostReason::Missing));
    assert!(!lock.exists(), "a heartbeat must never create the lock");

    fs::write(&lock, b"")?;
    let lost = guard.verify_owned().err().ok_or("verified an empty lock")?;
    assert!(!lost.is_definitive());

    let err = guard
        .release()
        .err()
        .ok_or("released a lock that is not ours")?;
    assert!(matches!(err, LockError::Lost(_)), "{err:?}");
    assert!(lock.exists(), "release must not remove what is not ours");
    Ok(())
}

#[test]
fn another_hosts_lock_is_broken_only_after_stale_after_on_its_mtime() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let b = locker("nas-b");
    let record = foreign_record("nas-a", &"a".repeat(32));

    library.foreign_lock("Movie1.mkv", &record, Duration::from_secs(1))?;
    held(b.try_acquire(&media)?)?;

    // Not changed since, and now older than stale_after (2 s) on the server clock.
    set_mtime(
        &library.lock("Movie1.mkv"),
        SystemTime::now() - Duration::from_secs(3),
    )?;
    let other = locker("nas-c");
    let guard = acquired(other.try_acquire(&media)?)?;
    assert_eq!(
        names_in(&library.root),
        vec!["Movie1.mkv.mediabox.lock".to_owned()],
        "no guard or tombstone left"
    );
    guard.release()?;
    Ok(())
}

#[test]
fn a_lock_seen_changing_is_not_stale_however_old_its_mtime() -> TestResult {
    // A client stamping mtimes with a clock hours slow: every heartbeat looks old,
    // but this run sees the lock change.
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let b = locker("nas-b");
    let mut record = foreign_record("nas-a", &"a".repeat(32));
    library.foreign_lock("Movie1.mkv", &record, Duration::ZERO)?;
    held(b.try_acquire(&media)?)?;

    record.progress = Some(Progress {
        percent: 50.0,
        ..Progress::default()
    });
    library.foreign_lock("Movie1.mkv", &record, 5 * HOUR)?;
    let holder = held(b.try_acquire(&media)?)?;
    assert!(
        matches!(
            holder.verdict,
            Verdict::Live(LiveReason::SeenChanging { .. })
        ),
        "{holder}"
    );
    // A locker that never saw it change judges it by its mtime alone.
    acquired(locker("nas-c").try_acquire(&media)?)?.release()?;
    Ok(())
}

#[test]
fn a_lock_with_a_future_mtime_is_fresh() -> TestResult {
    let library = Library::new()?;
    let record = foreign_record("nas-a", &"a".repeat(32));
    library.foreign_lock("Movie1.mkv", &record, Duration::ZERO)?;
    set_mtime(&library.lock("Movie1.mkv"), SystemTime::now() + 3 * HOUR)?;
    let holder = held(locker("nas-b").try_acquire(&library.media("Movie1.mkv"))?)?;
    assert_eq!(holder.age, Duration::ZERO);
    Ok(())
}

#[test]
fn legacy_locks_are_read_and_judged_by_mtime() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let lock = library.lock("Movie1.mkv");
    fs::write(
        &lock,
        br#"{"hostname": "old-nas", "pid": 99, "timestamp": 1714000000.5,
            "file": "Movie1.mkv", "locked_at": "2024-04-25T01:06:40.500000"}"#,
    )?;
    let holder = held(locker("nas-b").try_acquire(&media)?)?;
    assert_eq!(holder.hostname.as_deref(), Some("old-nas"));
    assert_eq!(holder.pid, Some(99));
    assert_eq!(holder.lock_id, None);

    set_mtime(&lock, SystemTime::now() - HOUR)?;
    acquired(locker("nas-c").try_acquire(&media)?)?.release()?;
    Ok(())
}

#[test]
fn empty_and_corrupt_locks_are_held_for_the_grace_then_broken() -> TestResult {
    let library = Library::new()?;
    for (name, bytes) in [
        ("Empty.mkv", &b""[..]),
        ("Partial.mkv", br#"{"hostname": "nas-a", "pi"#),
        ("Garbage.mkv", b"\x00\x01binary"),
        ("Array.mkv", b"[1, 2, 3]"),
    ] {
        let media = library.media(name);
        let lock = library.lock(name);
        fs::write(&lock, bytes)?;
        let holder = held(locker("nas-b").try_acquire(&media)?)?;
        assert!(
            matches!(
                holder.verdict,
                Verdict::Live(LiveReason::BeingWritten { .. })
            ),
            "{name}: {holder}"
        );
        assert_eq!(holder.hostname, None);

        set_mtime(&lock, SystemTime::now() - Duration::from_secs(2))?;
        let guard = acquired(locker("nas-c").try_acquire(&media)?)?;
        assert_eq!(
            LockRecord::parse(&fs::read(&lock)?)?.lock_id.as_deref(),
            Some(guard.lock_id())
        );
        guard.release()?;
    }
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_same_host_lock_whose_process_is_gone_is_stale_at_once() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let ours = locker("nas-a");
    let mut record = foreign_record("nas-a", &"a".repeat(32));
    // A pid far above pid_max: certainly no process; recorded in this boot and pid
    // namespace (elsewhere a pid cannot be judged).
    let own = crate::identity::process_start_token(std::process::id()).unwrap_or_default();
    let (world, _) = own.rsplit_once(':').unwrap_or_default();
    record.pid = 0x7fff_fff0;
    record.process_start = Some(format!("{world}:12345"));
    library.foreign_lock("Movie1.mkv", &record, Duration::ZERO)?;
    // Another host must wait for stale_after...
    held(locker("nas-b").try_acquire(&media)?)?;
    // ...while the owner's own host knows at once.
    acquired(ours.try_acquire(&media)?)?.release()?;

    // A live pid with another start token is a reused pid: gone too.
    record.pid = std::process::id();
    record.process_start = Some(format!("{world}:1"));
    library.foreign_lock("Movie1.mkv", &record, Duration::ZERO)?;
    acquired(ours.try_acquire(&media)?)?.release()?;
    Ok(())
}

#[test]
fn a_breaker_holding_the_guard_makes_others_wait_unless_it_is_old() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let lock = library.lock("Movie1.mkv");
    library.foreign_lock(
        "Movie1.mkv",
        &foreign_record("nas-a", &"a".repeat(32)),
        HOUR,
    )?;
    let guard_file = names::guard_path(&lock);
    fs::write(
        &guard_file,
        foreign_record("nas-c", &"c".repeat(32)).to_json()?,
    )?;

    let holder = held(locker("nas-b").try_acquire(&media)?)?;
    assert!(holder.verdict.is_stale(), "{holder}");
    assert!(lock.exists() && guard_file.exists());

    set_mtime(&guard_file, SystemTime::now() - Duration::from_secs(2))?;
    acquired(locker("nas-b").try_acquire(&media)?)?.release()?;
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_breaker_holding_a_guard_directory_makes_others_wait_unless_it_is_old() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let lock = library.lock("Movie1.mkv");
    library.foreign_lock(
        "Movie1.mkv",
        &foreign_record("nas-a", &"a".repeat(32)),
        HOUR,
    )?;
    let guard_dir = names::guard_path(&lock);
    fs::create_dir(&guard_dir)?;

    let holder = held(locker("nas-b").try_acquire(&media)?)?;
    assert!(holder.verdict.is_stale(), "{holder}");
    assert!(lock.exists() && guard_dir.is_dir());

    set_mtime(&guard_dir, SystemTime::now() - Duration::from_secs(2))?;
    acquired(locker("nas-b").try_acquire(&media)?)?.release()?;
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_claim_waits_for_a_busy_acquire_guard_and_retires_an_abandoned_one() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let acquire = names::acquire_guard_path(&library.lock("Movie1.mkv"));

    // Another host is between its "is there a lock?" and its create: wait, then
    // report the file as changing hands, never create beside it.
    fs::create_dir(&acquire)?;
    let started = std::time::Instant::now();
    let holder = held(locker("nas-b").try_acquire(&media)?)?;
    assert_eq!(holder.verdict, Verdict::Live(LiveReason::Contended));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!library.lock("Movie1.mkv").exists());

    // A guard released while we wait is taken.
    let releaser = std::thread::spawn({
        let acquire = acquire.clone();
        move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::remove_dir(&acquire)
        }
    });
    let guard = acquired(locker("nas-b").try_acquire(&media)?)?;
    releaser.join().map_err(|_| "releaser panicked")??;
    guard.release()?;

    // A guard older than guard_timeout (1 s) was left by a crash: retired at once.
    fs::create_dir(&acquire)?;
    set_mtime(&acquire, SystemTime::now() - Duration::from_secs(2))?;
    let started = std::time::Instant::now();
    acquired(locker("nas-b").try_acquire(&media)?)?.release()?;
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_live_holder_is_reported_while_its_acquire_guard_lingers() -> TestResult {
    let library = Library::new()?;
    let media = library.media("Movie1.mkv");
    let guard = acquired(locker("nas-a").try_acquire(&media)?)?;
    fs::create_dir(names::acquire_guard_path(guard.path()))?;
    let holder = held(locker("nas-b").try_acquire(&media)?)?;
    assert_eq!(holder.hostname.as_deref(), Some("nas-a"));
    assert!(!holder.verdict.is_stale());
    guard.release()?;
    Ok(())
}

#[test]
fn a_lock_displaced_by_a_release_goes_back_under_the_acquire_guard() -> TestResult {
    // Our claim was broken and the file claimed again between our release's check
    // and its rename: the new claim must survive our release.
    let library = Library::new()?;
    let lock = library.lock("Movie1.mkv");
    let (tomb, newer) = (names::tomb_path(&lock, "0a"), b"newer claim".to_vec());
    fs::write(&tomb, &newer)?;
    assert!(restore_lock(&lock, &tomb, Duration::from_secs(1))?);
    assert_eq!(fs::read(&lock)?, newer);

    // With the acquire guard busy (someone is creating a claim right now), the
    // displaced lock is dropped rather than put back beside it.
    fs::remove_file(&lock)?;
    fs::write(&tomb, &newer)?;
    let acquire = names::acquire_guard_path(&lock);
    fs::create_dir(&acquire)?;
    assert!(!restore_lock(&lock, &tomb, Duration::from_secs(1))?);
    assert!(!lock.exists() && !tomb.exists());
    fs::remove_dir(&acquire)?;
    assert_eq!(names_in(&library.root), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_media_path_without_a_file_name_is_an_error() {
    let result = locker("nas-a").try_acquire(Path::new("/"));
    assert!(
        matches!(result, Err(LockError::NoFileName { .. })),
        "{result:?}"
    );
}

#[test]
fn holder_reads_well() {
    let holder = Holder {
        hostname: Some("nas-2".into()),
        host_id: None,
        pid: Some(4242),
        lock_id: None,
        age: Duration::from_secs(12),
        phase: Some("transcoding".into()),
        progress: Some(Progress {
            percent: 41.6,
            fps: None,
            eta_secs: None,
        }),
        verdict: Verdict::Live(LiveReason::Heartbeating {
            age: Duration::from_secs(12),
            limit: Duration::from_secs(1800),
        }),
    };
    assert_eq!(
        holder.to_string(),
        "nas-2 pid 4242, transcoding 42%, changed 12s ago \
         (live: last heartbeat 12s ago (stale after 30m00s))"
    );
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

fn phase_on_disk(path: &Path) -> Option<String> {
    LockRecord::parse(&fs::read(path).ok()?).ok()?.phase
}

#[test]
fn heartbeat_thread_writes_phases_promptly_and_stops_at_once() -> TestResult {
    let library = Library::new()?;
    let guard = Arc::new(acquired(
        locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?,
    )?);
    let lock = guard.path().to_owned();
    // An interval far longer than the test: only a phase change makes it write.
    let heartbeat = Heartbeat::start(Arc::clone(&guard), Duration::from_secs(60))?;
    heartbeat.set_phase("verifying");
    assert!(wait_until(Duration::from_secs(2), || {
        phase_on_disk(&lock).as_deref() == Some("verifying")
    }));

    let progress = Progress {
        percent: 99.0,
        ..Progress::default()
    };
    heartbeat.set_progress(Some(progress));
    heartbeat.set_phase("swapping");
    heartbeat.beat_now()?;
    let record = LockRecord::parse(&fs::read(&lock)?)?;
    assert_eq!(record.phase.as_deref(), Some("swapping"));
    assert_eq!(record.progress, Some(progress));

    let stopping = std::time::Instant::now();
    heartbeat.stop();
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "{:?}",
        stopping.elapsed()
    );
    guard.verify_owned()?;
    Arc::try_unwrap(guard)
        .map_err(|_| "the heartbeat kept its guard")?
        .release()?;
    Ok(())
}

#[test]
fn heartbeat_thread_keeps_the_mtime_fresh_and_notices_a_lost_claim() -> TestResult {
    let library = Library::new()?;
    let guard = Arc::new(acquired(
        locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?,
    )?);
    let lock = guard.path().to_owned();
    set_mtime(&lock, SystemTime::now() - HOUR)?;
    let heartbeat = Heartbeat::start(Arc::clone(&guard), Duration::from_millis(100))?;
    assert!(wait_until(Duration::from_secs(2), || {
        fs::metadata(&lock)
            .and_then(|meta| meta.modified())
            .is_ok_and(|mtime| mtime > SystemTime::now() - Duration::from_secs(5))
    }));
    assert!(!heartbeat.lost());

    let theirs = foreign_record("nas-b", &"b".repeat(32)).to_json()?;
    fs::write(&lock, &theirs)?;
    assert!(wait_until(Duration::from_secs(2), || heartbeat.lost()));
    let reason = heartbeat.lost_reason().unwrap_or_default();
    assert!(reason.contains("nas-b"), "{reason}");
    assert_eq!(fs::read(&lock)?, theirs, "a lost claim writes nothing");
    heartbeat.stop();
    Ok(())
}

/// A heartbeat whose file system call never returns (a share that stopped answering, an
/// NFSv4.1+ `open()` asleep in the kernel) is the claim lost once no heartbeat has got
/// through for half of `stale_after`, said with the lock's name, and stopping does not
/// wait for it. The lock is swapped for a FIFO, which blocks the heartbeat's read in
/// the kernel as a hung share would, until the test writes to it.
#[cfg(unix)]
#[test]
fn a_heartbeat_stuck_in_the_file_system_is_lost_after_the_tolerance_and_stops_at_once() -> TestResult
{
    use std::io::Write;
    let library = Library::new()?;
    let guard = Arc::new(acquired(
        locker("nas-a").try_acquire(&library.media("Movie1.mkv"))?,
    )?);
    let lock = guard.path().to_owned();
    let tolerance = guard.stale_after() / 2;
    let heartbeat = Heartbeat::start(Arc::clone(&guard), Duration::from_millis(100))?;
    assert!(wait_until(Duration::from_secs(2), || {
        phase_on_disk(&lock).is_some() && !heartbeat.lost()
    }));
    fs::remove_file(&lock)?;
    let fifo = std::ffi::CString::new(lock.as_os_str().as_encoded_bytes())?;
    // SAFETY: `fifo` is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let stuck_since = std::time::Instant::now();
    let lost = wait_until(tolerance + Duration::from_secs(2), || heartbeat.lost());
    let lost_after = stuck_since.elapsed();
    let reason = heartbeat.lost_reason().unwrap_or_default();
    let (stopped, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        heartbeat.stop();
        let _ = stopped.send(());
    });
    let stop_waited = stop.recv_timeout(Duration::from_secs(2));
    // Let the stuck read return before any assertion (the record it gets is not ours:
    // the thread ends).
    let mut writer = fs::OpenOptions::new().write(true).open(&lock)?;
    writer.write_all(&foreign_record("nas-b", &"b".repeat(32)).to_json()?)?;
    drop(writer);

    assert!(
        lost,
        "a heartbeat stuck for {lost_after:?} (tolerance {tolerance:?}) is not reported lost"
    );
    assert!(lost_after >= tolerance / 2, "{lost_after:?}");
    assert!(reason.contains(&*lock.to_string_lossy()), "{reason}");
    assert!(reason.contains("has not returned"), "{reason}");
    assert!(
        stop_waited.is_ok(),
        "stopping waited for the stuck heartbeat"
    );
    Ok(())
}

/// Plays a kernel CIFS client: the lock's mtime is set to the writer's clock, `skew` off
/// the server's, after each of its writes.
fn stamp_with_writers_clock(lock: &Path, skew_secs: i64) -> std::io::Result<()> {
    let now = SystemTime::now();
    let writers = if skew_secs < 0 {
        now - Duration::from_secs(skew_secs.unsigned_abs())
    } else {
        now + Duration::from_secs(skew_secs.unsigned_abs())
    };
    set_mtime(lock, writers)
}

#[test]
fn writer_clock_mtimes_2h_off_never_break_a_live_lock_and_a_dead_one_goes_after_the_limit()
-> TestResult {
    for skew in [-2 * 3600, 2 * 3600] {
        let library = Library::new()?;
        let media = library.media("Movie1.mkv");
        let holder = acquired(locker("nas-a").try_acquire(&media)?)?;
        let lock = holder.path().to_owned();
        // The record's timestamp is the server's clock, whatever the mtime says.
        let record = LockRecord::parse(&fs::read(&lock)?)?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
        assert!(
            (record.timestamp - now.as_secs_f64()).abs() < 5.0,
            "{record:?}"
        );
        assert!(record.timestamp_is_servers());
        stamp_with_writers_clock(&lock, skew)?;

        // A breaker that looks for longer than the limit while the holder works.
        let breaker = locker("nas-b");
        let working_until =
            std::time::Instant::now() + settings().stale_after + Duration::from_millis(500);
        while std::time::Instant::now() < working_until {
            let who = held(breaker.try_acquire(&media)?)?;
            assert!(!who.verdict.is_stale(), "{skew}: {who}");
            holder.heartbeat("transcoding", None)?;
            stamp_with_writers_clock(&lock, skew)?;
            std::thread::sleep(Duration::from_millis(200));
        }
        // A fresh host, on first sight: live too (before: "stale: no heartbeat for 2h00m").
        let first_sight = held(locker("nas-c").try_acquire(&media)?)?;
        assert!(!first_sight.verdict.is_stale(), "{skew}: {first_sight}");

        // The holder dies (its lock stays): stale once its last heartbeat is older
        // than the limit.
        holder.heartbeat("transcoding", None)?;
        stamp_with_writers_clock(&lock, skew)?;
        let died = std::time::Instant::now();
        drop(holder);
        let taken = loop {
            match breaker.try_acquire(&media)? {
                Acquire::Acquired(guard) => break guard,
                Acquire::Held(who) => assert!(!who.verdict.is_stale(), "{who}"),
            }
            assert!(
                died.elapsed() < Duration::from_secs(10),
                "{skew}: never broken"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            died.elapsed() >= settings().stale_after,
            "{skew}: broken too soon"
        );
        taken.release()?;
    }
    Ok(())
}

/// A `mkdir` of a guard answered "no such file" is taken for the guard changing hands
/// (NFS clients answer so when another client renames it away) only while the directory is
/// there: a claim in a directory that is gone is an error at once, not a busy guard.
#[test]
fn a_claim_in_a_missing_directory_is_an_error_not_a_busy_guard() -> TestResult {
    let dir = tempfile::tempdir()?;
    let media = dir.path().join("gone").join("Movie1.mkv");
    let result = locker("nas-a").try_acquire(&media);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    Ok(())
}
