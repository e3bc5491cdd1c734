//! The protocol on a real directory, within one process. Races between processes
//! are in `tests/lock.rs`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::testing::set_mtime;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HOUR: Duration = Duration::from_secs(3600);

fn settings() -> LockSettings {
    LockSettings {
        heartbeat: Duration::from_millis(500),
        stale_after: Duration::from_secs(2),
        unreadable_grace: Duration::from_secs(1),
        guard_timeout: Duration::from_secs(1),
    }
}

fn host(name: &str) -> HostIdentity {
    HostIdentity {
        hostname: name.to_owned(),
        host_id: format!("id-{name}"),
    }
}

fn locker(name: &str) -> Locker {
    Locker::new(host(name), settings())
}

fn acquired(acquire: Acquire) -> Result<LockGuard, String> {
    match acquire {
        Acquire::Acquired(guard) => Ok(guard),
        Acquire::Held(holder) => Err(format!("expected to acquire, held by {holder}")),
    }
}

fn held(acquire: Acquire) -> Result<Holder, String> {
    match acquire {
        Acquire::Held(holder) => Ok(holder),
        Acquire::Acquired(guard) => Err(format!("expected held, acquired {guard:?}")),
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn record_json(record: &LockRecord) -> Vec<u8> {
    record.to_json().unwrap_or_default()
}

fn foreign_record(hostname: &str, lock_id: &str) -> LockRecord {
    LockRecord {
        hostname: hostname.to_owned(),
        pid: 4242,
        file: "Movie1.mkv".to_owned(),
        lock_id: Some(lock_id.to_owned()),
        host_id: Some(format!("id-{hostname}")),
        stale_after_secs: Some(2.0),
        phase: Some("transcoding".to_owned()),
        ..LockRecord::default()
    }
}

struct Library {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Library {
    fn new() -> std::io::Result<Library> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_owned();
        Ok(Library { _dir: dir, root })
    }

    fn media(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn lock(&self, name: &str) -> PathBuf {
        lock_path(&self.media(name)).unwrap_or_default()
    }

    /// A lock written by another host, last heartbeat `age` ago.
    fn foreign_lock(&self, name: &str, record: &LockRecord, age: Duration) -> TestResult {
        let lock = self.lock(name);
        fs::write(&lock, record_json(record))?;
        set_mtime(&lock, SystemTime::now() - age)?;
        Ok(())
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
        record_json(&foreign_record("nas-b", "b".repeat(32).as_str())),
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
        record_json(&foreign_record("nas-c", &"c".repeat(32))),
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
fn list_reports_every_lock_with_holder_phase_progress_and_verdict() -> TestResult {
    let library = Library::new()?;
    let season = library.root.join("Show").join("Season 1");
    fs::create_dir_all(&season)?;
    let a = locker("nas-a");
    let live = acquired(a.try_acquire(&season.join("E01.mkv"))?)?;
    live.heartbeat(
        "transcoding",
        Some(Progress {
            percent: 12.5,
            fps: None,
            eta_secs: None,
        }),
    )?;
    library.foreign_lock(
        "Movie1.mkv",
        &foreign_record("nas-c", &"c".repeat(32)),
        HOUR,
    )?;

    let statuses: Vec<LockStatus> = list_locks(&library.root, &locker("nas-b"))
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(statuses.len(), 2);
    let (stale, live_status) = (&statuses[0], &statuses[1]);
    assert_eq!(stale.media_path, library.media("Movie1.mkv"));
    assert_eq!(stale.holder.hostname.as_deref(), Some("nas-c"));
    assert!(stale.holder.verdict.is_stale());
    // Less a few ms: a file system stamps with a coarse clock.
    assert!(stale.holder.age >= HOUR - Duration::from_secs(1));
    assert_eq!(live_status.lock_path, live.path());
    assert_eq!(live_status.media_path, season.join("E01.mkv"));
    assert_eq!(live_status.holder.phase.as_deref(), Some("transcoding"));
    assert_eq!(live_status.holder.progress.map(|p| p.percent), Some(12.5));
    assert!(!live_status.holder.verdict.is_stale());
    assert_eq!(live_status.clock, ClockSource::Server);
    // Listing changes nothing.
    assert!(library.lock("Movie1.mkv").exists());
    live.release()?;
    Ok(())
}

#[test]
fn clean_breaks_stale_locks_removes_debris_and_never_loses_an_original() -> TestResult {
    let library = Library::new()?;
    let root = &library.root;
    let (dead, old) = ("d".repeat(32), "0".repeat(32));
    let os = |name: &str| OsStr::new(name).to_owned();
    let write = |name: &OsStr, bytes: &[u8]| fs::write(root.join(name), bytes);

    // Movie1: a swap died between its renames: only the backup holds the original.
    library.foreign_lock("Movie1.mkv", &foreign_record("nas-a", &dead), HOUR)?;
    write(&backup_name(&os("Movie1.mkv"), &dead, "mkv"), b"original 1")?;
    write(
        &temp_output_name(&os("Movie1.mkv"), &dead, "mkv"),
        b"converted 1",
    )?;
    // Movie2: live claim with its temp output, plus a dead run's output.
    write(&os("Movie2.mkv"), b"original 2")?;
    let live = acquired(locker("nas-a").try_acquire(&library.media("Movie2.mkv"))?)?;
    let live_temp = temp_output_name(&os("Movie2.mkv"), live.lock_id(), "mkv");
    write(&live_temp, b"converting 2")?;
    write(
        &temp_output_name(&os("Movie2.mkv"), &old, "mkv"),
        b"abandoned 2",
    )?;
    // Movie3: a backup beside another file, no lock. Movie4: output, original gone.
    write(&os("Movie3.mkv"), b"converted 3")?;
    write(&backup_name(&os("Movie3.mkv"), &old, "mkv"), b"original 3")?;
    write(
        &temp_output_name(&os("Movie4.mkv"), &old, "mkv"),
        b"only copy 4",
    )?;
    // Crash leftovers of the protocol itself.
    let tomb = names::tomb_path(&library.lock("Movie5.mkv"), "00ff");
    fs::write(&tomb, record_json(&foreign_record("nas-a", &old)))?;
    set_mtime(&tomb, SystemTime::now() - HOUR)?;
    let guard = names::guard_path(&library.lock("Movie6.mkv"));
    fs::write(&guard, b"{}")?;
    set_mtime(&guard, SystemTime::now() - HOUR)?;
    // Guard directories (and a retired one's tombstone) left by crashed hosts; a
    // young guard is someone at work and stays.
    let acquire = names::acquire_guard_path(&library.lock("Movie7.mkv"));
    fs::create_dir(&acquire)?;
    set_mtime(&acquire, SystemTime::now() - HOUR)?;
    let breaking = names::guard_path(&library.lock("Movie8.mkv"));
    fs::create_dir(&breaking)?;
    set_mtime(&breaking, SystemTime::now() - HOUR)?;
    let guard_tomb = names::tomb_path(&acquire, "0b");
    fs::create_dir(&guard_tomb)?;
    set_mtime(&guard_tomb, SystemTime::now() - HOUR)?;
    let young = names::acquire_guard_path(&library.lock("Movie9.mkv"));
    fs::create_dir(&young)?;
    let probe = root.join(".mediabox.clock-0123abcd");
    fs::write(&probe, b"\n")?;
    set_mtime(&probe, SystemTime::now() - HOUR)?;
    let before = names_in(root);

    let b = locker("nas-b");
    let dry = clean(root, &b, true);
    assert!(dry.errors.is_empty(), "{:?}", dry.errors);
    assert_eq!(names_in(root), before, "a dry run changes nothing");

    let report = clean(root, &b, false);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // The dry run told the truth (up to the ages of the locks, which moved on).
    let without_ages = |actions: &[CleanAction]| -> Vec<CleanAction> {
        actions
            .iter()
            .cloned()
            .map(|mut action| {
                if let CleanAction::BrokeStaleLock { holder, .. } = &mut action {
                    holder.age = Duration::ZERO;
                    holder.verdict = Verdict::Live(LiveReason::Contended);
                }
                action
            })
            .collect()
    };
    assert_eq!(without_ages(&report.actions), without_ages(&dry.actions));
    assert_eq!(report.live_locks, 1);
    let mut expected = vec![
        "Movie1.mkv".to_owned(),
        "Movie2.mkv".to_owned(),
        "Movie2.mkv.mediabox.lock".to_owned(),
        live_temp.to_string_lossy().into_owned(),
        "Movie3.mkv".to_owned(),
        // No lock tells whether Movie3's swap finished: its backup may be the only copy
        // of an earlier version, and stays.
        backup_name(&os("Movie3.mkv"), &old, "mkv")
            .to_string_lossy()
            .into_owned(),
        temp_output_name(&os("Movie4.mkv"), &old, "mkv")
            .to_string_lossy()
            .into_owned(),
        "Movie9.mkv.mediabox.lock.acquire".to_owned(),
    ];
    expected.sort();
    assert_eq!(names_in(root), expected);
    assert_eq!(fs::read(library.media("Movie1.mkv"))?, b"original 1");
    assert_eq!(fs::read(library.media("Movie3.mkv"))?, b"converted 3");
    let restored = report.actions.iter().any(|action| {
        matches!(action, CleanAction::RestoredOriginal { original, .. } if *original == library.media("Movie1.mkv"))
    });
    assert!(restored, "{:#?}", report.actions);
    assert!(
        report
            .actions
            .iter()
            .any(|action| matches!(action, CleanAction::KeptOrphan { .. }))
    );
    assert!(
        report
            .actions
            .iter()
            .any(|action| matches!(action, CleanAction::BrokeStaleLock { .. }))
    );
    let guards_broken = report
        .actions
        .iter()
        .filter(|action| matches!(action, CleanAction::BrokeStaleGuard { .. }))
        .count();
    assert_eq!(guards_broken, 3, "{:#?}", report.actions);
    live.release()?;
    Ok(())
}

#[test]
fn clean_restores_over_an_empty_placeholder_but_not_over_content() -> TestResult {
    let library = Library::new()?;
    let old = "0".repeat(32);
    let backup = library
        .root
        .join(backup_name(OsStr::new("Movie1.mkv"), &old, "mkv"));
    fs::write(&backup, b"original")?;
    fs::write(library.media("Movie1.mkv"), b"")?;
    let report = clean(&library.root, &locker("nas-b"), false);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(fs::read(library.media("Movie1.mkv"))?, b"original");
    assert!(!backup.exists());
    Ok(())
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

    let theirs = record_json(&foreign_record("nas-b", &"b".repeat(32)));
    fs::write(&lock, &theirs)?;
    assert!(wait_until(Duration::from_secs(2), || heartbeat.lost()));
    let reason = heartbeat.lost_reason().unwrap_or_default();
    assert!(reason.contains("nas-b"), "{reason}");
    assert_eq!(fs::read(&lock)?, theirs, "a lost claim writes nothing");
    heartbeat.stop();
    Ok(())
}

/// A dead claim on `Movie1.mkv` (lock id `dead`, last phase `phase`) with the work files
/// `files` (name, bytes) beside the original `original`; a claim by another host breaks it.
fn break_dead_claim(
    phase: &str,
    original: Option<&[u8]>,
    files: &[(OsString, &[u8])],
) -> Result<(Library, Vec<String>), Box<dyn std::error::Error>> {
    break_dead_claim_at(phase, original, files, None)
}

/// As [`break_dead_claim`]; the file at the original's name gets the mtime `mtime` when
/// given, else every file has the one mtime a swap leaves (the new file carries the
/// original's).
fn break_dead_claim_at(
    phase: &str,
    original: Option<&[u8]>,
    files: &[(OsString, &[u8])],
    mtime: Option<SystemTime>,
) -> Result<(Library, Vec<String>), Box<dyn std::error::Error>> {
    let library = Library::new()?;
    let when = SystemTime::now() - Duration::from_secs(600);
    let mut record = foreign_record("nas-a", &"d".repeat(32));
    record.phase = Some(phase.to_owned());
    library.foreign_lock("Movie1.mkv", &record, HOUR)?;
    if let Some(bytes) = original {
        fs::write(library.media("Movie1.mkv"), bytes)?;
        set_mtime(&library.media("Movie1.mkv"), mtime.unwrap_or(when))?;
    }
    for (name, bytes) in files {
        fs::write(library.root.join(name), bytes)?;
        set_mtime(&library.root.join(name), when)?;
    }
    let guard = acquired(locker("nas-b").try_acquire(&library.media("Movie1.mkv"))?)?;
    guard.release()?;
    let names = names_in(&library.root);
    Ok((library, names))
}

use std::ffi::OsString;

#[test]
fn breaking_a_dead_claim_removes_its_temp_output_and_nothing_else() -> TestResult {
    let dead = "d".repeat(32);
    let other = "0".repeat(32);
    let media = OsStr::new("Movie1.mkv");
    let (_library, names) = break_dead_claim(
        "transcoding",
        Some(b"original"),
        &[
            (temp_output_name(media, &dead, "mkv"), b"half a film"),
            // Another claim's output is not this break's business.
            (temp_output_name(media, &other, "mkv"), b"someone else's"),
            (
                temp_output_name(OsStr::new("Movie2.mkv"), &dead, "mkv"),
                b"x",
            ),
        ],
    )?;
    let mut expected = vec![
        "Movie1.mkv".to_owned(),
        temp_output_name(media, &other, "mkv")
            .to_string_lossy()
            .into_owned(),
        temp_output_name(OsStr::new("Movie2.mkv"), &dead, "mkv")
            .to_string_lossy()
            .into_owned(),
    ];
    expected.sort();
    assert_eq!(names, expected);
    Ok(())
}

#[test]
fn breaking_a_dead_swap_restores_removes_or_keeps_its_backup_as_its_phase_says() -> TestResult {
    let dead = "d".repeat(32);
    let media = OsStr::new("Movie1.mkv");
    let backup = backup_name(media, &dead, "mkv");
    let kept = kept_original_name(media, "mkv");
    let name = |os: &OsString| os.to_string_lossy().into_owned();
    // Died between the two renames of a swap without hard links: the original comes back.
    let (library, names) = break_dead_claim(
        "swap:original-at-backup",
        None,
        &[(backup.clone(), b"original")],
    )?;
    assert_eq!(names, ["Movie1.mkv"]);
    assert_eq!(fs::read(library.media("Movie1.mkv"))?, b"original");
    // Died after the new file was in place, saying so: the original was meant to go...
    let (_, names) = break_dead_claim("swap:done", Some(b"new"), &[(backup.clone(), b"original")])?;
    assert_eq!(names, ["Movie1.mkv"]);
    // ... or to be kept aside (it failed before on a SIGKILL here: the backup was removed).
    let (library, names) = break_dead_claim(
        "swap:done:keeping-original",
        Some(b"new"),
        &[(backup.clone(), b"original")],
    )?;
    let mut expected = vec!["Movie1.mkv".to_owned(), name(&kept)];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(fs::read(library.root.join(&kept))?, b"original");
    // ... unless the kept name is taken: then it stays where it is.
    let (library, names) = break_dead_claim(
        "swap:done:keeping-original",
        Some(b"new"),
        &[(backup.clone(), b"original"), (kept.clone(), b"older")],
    )?;
    let mut expected = vec!["Movie1.mkv".to_owned(), name(&backup), name(&kept)];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(fs::read(library.root.join(&kept))?, b"older");
    // Died before saying the swap was done, with another file at the name (another
    // mtime than the original's): the backup may be the only copy of what was there.
    let (_, names) = break_dead_claim_at(
        "swap:replacing",
        Some(b"something else"),
        &[(backup.clone(), b"original")],
        Some(SystemTime::now() - HOUR),
    )?;
    let mut expected = vec!["Movie1.mkv".to_owned(), name(&backup)];
    expected.sort();
    assert_eq!(names, expected);
    // Died right after renaming the new file in (it carries the original's mtime), with
    // --keep-original: the original goes to its kept name.
    let (library, names) = break_dead_claim(
        "swap:replacing:keeping-original",
        Some(b"new"),
        &[(backup.clone(), b"original")],
    )?;
    let mut expected = vec!["Movie1.mkv".to_owned(), name(&kept)];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(fs::read(library.root.join(&kept))?, b"original");
    // A backup that is the original under a second name is just removed.
    let (_, names) = break_dead_claim(
        "swap:replacing",
        Some(b"original"),
        &[(backup, b"original")],
    )?;
    assert_eq!(names, ["Movie1.mkv"]);
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
