//! Listing, cleaning and settling dead claims on a real directory. The protocol itself is
//! tested beside it, in the `share-lock` crate.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::time::{Duration, SystemTime};

use share_lock::testing::{
    Library, acquired, foreign_record, host, names_in, set_mtime, short_settings as settings,
};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const HOUR: Duration = Duration::from_secs(3600);

/// A locker as the application makes one: breaking a dead claim settles its work files.
fn locker(name: &str) -> Locker {
    settling(Locker::new(host(name), settings()))
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
    let tomb = share_lock::names::tomb_path(&library.lock("Movie5.mkv"), "00ff");
    fs::write(&tomb, foreign_record("nas-a", &old).to_json()?)?;
    set_mtime(&tomb, SystemTime::now() - HOUR)?;
    let guard = share_lock::names::guard_path(&library.lock("Movie6.mkv"));
    fs::write(&guard, b"{}")?;
    set_mtime(&guard, SystemTime::now() - HOUR)?;
    // Guard directories (and a retired one's tombstone) left by crashed hosts; a
    // young guard is someone at work and stays.
    let acquire = share_lock::names::acquire_guard_path(&library.lock("Movie7.mkv"));
    fs::create_dir(&acquire)?;
    set_mtime(&acquire, SystemTime::now() - HOUR)?;
    let breaking = share_lock::names::guard_path(&library.lock("Movie8.mkv"));
    fs::create_dir(&breaking)?;
    set_mtime(&breaking, SystemTime::now() - HOUR)?;
    let guard_tomb = share_lock::names::tomb_path(&acquire, "0b");
    fs::create_dir(&guard_tomb)?;
    set_mtime(&guard_tomb, SystemTime::now() - HOUR)?;
    let young = share_lock::names::acquire_guard_path(&library.lock("Movie9.mkv"));
    fs::create_dir(&young)?;
    let probe = root.join(".mediabox.clock-0123abcd");
    fs::write(&probe, b"\n")?;
    set_mtime(&probe, SystemTime::now() - HOUR)?;
    let before = names_in(root);

    let b = locker("nas-b");
    let dry = clean(
        root,
        &b,
        CleanOptions {
            dry_run: true,
            force: false,
        },
    );
    assert!(dry.errors.is_empty(), "{:?}", dry.errors);
    assert_eq!(names_in(root), before, "a dry run changes nothing");

    let report = clean(
        root,
        &b,
        CleanOptions {
            dry_run: false,
            force: false,
        },
    );
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
    let report = clean(
        &library.root,
        &locker("nas-b"),
        CleanOptions {
            dry_run: false,
            force: false,
        },
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(fs::read(library.media("Movie1.mkv"))?, b"original");
    assert!(!backup.exists());
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
    let kept = kept_original_name(media);
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

#[cfg(target_os = "linux")]
#[test]
fn clean_reports_a_directory_that_refuses_new_files_once_and_changes_nothing() -> TestResult {
    use share_lock::testing::Immutable;

    let library = Library::new()?;
    // A stale lock and a tombstone that `clean` would deal with, were it allowed.
    let stale = library.lock("Movie2.mkv");
    fs::write(&stale, b"{}")?;
    set_mtime(&stale, SystemTime::now() - HOUR)?;
    let tomb = library.root.join("Movie3.mkv.mediabox.lock.tomb-00ff");
    fs::write(&tomb, b"{}")?;
    let before = names_in(&library.root);
    // Tests run as root, which ignores permission bits; the immutable attribute
    // binds root too.
    let Some(_immutable) = Immutable::set(&library.root)? else {
        eprintln!("skipped: chattr +i does not work here (not root, or not ext4/xfs/btrfs)");
        return Ok(());
    };
    let report = clean(&library.root, &locker("nas-b"), CleanOptions::default());
    assert!(report.actions.is_empty(), "{:?}", report.actions);
    assert_eq!(
        report.errors.len(),
        1,
        "reported once per directory: {:?}",
        report.errors
    );
    assert!(
        matches!(&report.errors[0], LockError::DirectoryNotWritable { dir, .. } if *dir == library.root)
    );
    assert_eq!(names_in(&library.root), before);
    Ok(())
}
