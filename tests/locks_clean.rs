//! `locks clean` against real processes holding real claims: the children are this test
//! binary re-run as the coordination crate's lock hammer (its `tests/scene`).

#[path = "../crates/share-lock/tests/scene/mod.rs"]
mod scene;

use std::error::Error;
use std::fs;
use std::path::PathBuf;

use media_converter::lock::{CleanAction, CleanOptions, Locker, clean, lock_path};
use scene::{Scene, hammer, settings};
use share_lock::testing::host;

type TestResult = Result<(), Box<dyn Error>>;

/// Not a test: the entry point of the child processes the tests spawn. Run
/// without [`hammer::child::ARGS`], as in every normal test run, it does nothing.
#[test]
fn hammer_child() {
    hammer::child::main();
}

/// A tombstone of a lock (a release or break killed between its rename and its delete)
/// holds the lock's record. `locks clean` used to keep any younger than `stale_after` (30
/// min by default), though a tombstone lives for milliseconds; it now judges the record: a
/// live holder's is kept (it may be put back), a dead one's goes at once.
#[test]
fn locks_clean_judges_a_lock_tombstone_by_the_record_it_holds() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.holder("nas-a")?;
    let lock = lock_path(&scene.media()).ok_or("no lock path")?;
    let tomb = PathBuf::from(format!("{}.tomb-0123456789abcdef", lock.display()));
    // As a retire leaves it: the live lock's bytes under the tombstone's name.
    fs::copy(&lock, &tomb)?;
    let same_host = Locker::new(host("nas-a"), settings());
    let report = clean(&scene.library, &same_host, CleanOptions::default());
    assert!(
        tomb.exists(),
        "a live holder's tombstone was removed: {report:?}"
    );

    holder.kill()?;
    let report = clean(&scene.library, &same_host, CleanOptions::default());
    assert!(
        !tomb.exists(),
        "a dead holder's tombstone stayed: {report:?}"
    );
    assert!(
        report
            .actions
            .iter()
            .any(|a| matches!(a, CleanAction::RemovedTombstone { path } if *path == tomb)),
        "{report:?}"
    );
    assert_eq!(scene.leftovers(), Vec::<String>::new());
    Ok(())
}

/// `locks clean --force` (the user says no run is active) must still see a live holder, and
/// then change nothing: on its own host by its process, on another host by its lock
/// changing while watched for a heartbeat (the holder here publishes no presence, as a
/// `--file` run does not).
#[test]
fn locks_clean_force_sees_a_live_holder_by_its_process_or_its_heartbeat() -> TestResult {
    let scene = Scene::new()?;
    let mut holder = scene.holder("nas-a")?;
    let force = CleanOptions {
        dry_run: false,
        force: true,
    };
    for (name, seen) in [
        ("nas-a", "on this host"),
        ("nas-b", "changed while watched"),
    ] {
        let report = clean(&scene.library, &Locker::new(host(name), settings()), force);
        let refused = report.refused.as_deref().unwrap_or_default();
        assert!(refused.contains(seen), "{name}: {report:?}");
        assert!(report.actions.is_empty(), "{name}: {report:?}");
        assert!(lock_path(&scene.media()).is_some_and(|l| l.exists()));
    }
    holder.kill()?;
    // Dead, its lock no longer changes: the other host's forced clean removes it.
    let report = clean(
        &scene.library,
        &Locker::new(host("nas-b"), settings()),
        force,
    );
    assert_eq!(report.refused, None, "{report:?}");
    assert_eq!(scene.leftovers(), Vec::<String>::new(), "{report:?}");
    Ok(())
}
