//! Retrying a file operation that fails only because another program has the file open:
//! the one backoff of the crate and of its users.
//!
//! On Windows a player, a thumbnailer or an antivirus scanner that opens a file without
//! `FILE_SHARE_DELETE` makes every rename, replace or delete of it fail with a sharing
//! violation (`ERROR_SHARING_VIOLATION`, 32) or a lock violation (`ERROR_LOCK_VIOLATION`, 33)
//! until it lets go, usually within seconds. Such an operation is retried a few times with a
//! growing wait, and if the file stays busy the failure says so plainly. The operations
//! retried here are all-or-nothing (a rename, a delete, `ReplaceFileW` before it has moved
//! anything), so a failure leaves the original where it was.
//!
//! POSIX systems have no mandatory sharing modes: there the predicate never matches and an
//! operation runs exactly once.

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

/// How many times an operation is tried and how long to wait between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included; at least one is always made.
    pub attempts: u32,
    /// The wait after the first failure; each later wait doubles it...
    pub first_delay: Duration,
    /// ... up to this.
    pub max_delay: Duration,
}

impl Backoff {
    /// For a file another program has open: 5 tries, the waits (0.625 + 1.25 + 2.5 + 5 s)
    /// adding up to about 10 s, long enough for a scanner or a player's preview to let go,
    /// short enough that a run does not stall on a file someone is watching.
    pub const FILE_IN_USE: Backoff = Backoff {
        attempts: 5,
        first_delay: Duration::from_millis(625),
        max_delay: Duration::MAX,
    };

    /// For a file that others only read, each for milliseconds: 6 tries, the waits (20 +
    /// 40 + 80 + 160 + 320 ms) adding up to about 0.6 s.
    pub const READERS_LET_GO: Backoff = Backoff {
        attempts: 6,
        first_delay: Duration::from_millis(20),
        max_delay: Duration::MAX,
    };

    /// For a lock, guard or tombstone that another client of the share has open for a
    /// moment: smbnetfs refuses to rename or delete such a file, also for some milliseconds
    /// after the other client closed it (FUSE closes asynchronously). 36 tries, the waits
    /// doubling from 2 ms to at most 100 ms, about 3 s in all.
    pub const SHARE_BUSY: Backoff = Backoff {
        attempts: 36,
        first_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(100),
    };

    /// The wait after failed try number `failed` (1-based).
    fn delay_after(&self, failed: u32) -> Duration {
        // Capped exponent: a policy with many attempts must not overflow into a zero wait.
        self.first_delay
            .saturating_mul(1u32 << (failed - 1).min(16))
            .min(self.max_delay)
    }

    /// The total wait when every try fails.
    pub fn total_wait(&self) -> Duration {
        (1..self.attempts).map(|n| self.delay_after(n)).sum()
    }
}

/// The error of an operation that kept failing because the file was in use; the original
/// error is its `source`.
#[derive(Debug)]
pub struct StillInUse {
    pub attempts: u32,
    pub waited: Duration,
    pub source: io::Error,
}

impl fmt::Display for StillInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; still in use after {} tries over {:.0} s: another program (a media player, a \
             preview, a scanner, another host of the share) has the file open; close it and run \
             again",
            self.source,
            self.attempts,
            self.waited.as_secs_f64()
        )
    }
}

impl Error for StillInUse {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether an error means that another process has the file open (Windows sharing or lock
/// violation). Always false on other systems, where those numbers mean something else.
pub fn is_file_in_use(err: &io::Error) -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::{ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION};
        matches!(
            err.raw_os_error().map(|code| code as u32),
            Some(ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION)
        )
    }
    #[cfg(not(windows))]
    {
        let _ = err;
        false
    }
}

/// Whether an error may mean that the file renamed over is open for reading somewhere:
/// besides a sharing violation, Windows refuses to replace a file that any handle has open,
/// even one that shares deletion, with "Access denied" (`ERROR_ACCESS_DENIED`, 5), unless
/// the file system does POSIX-style renames (local NTFS does; SMB shares and Wine do not).
/// Always false on other systems.
pub fn may_be_open_for_reading(err: &io::Error) -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::ERROR_ACCESS_DENIED;
        is_file_in_use(err)
            || err.raw_os_error().map(|code| code as u32) == Some(ERROR_ACCESS_DENIED)
    }
    #[cfg(not(windows))]
    {
        let _ = err;
        false
    }
}

/// Renames `from` over `to`, a file that readers open for a moment at a time (a cache, a
/// lock): on Windows a reader that has it open at that instant makes the rename fail, so it
/// is tried again for about half a second. A rename that keeps failing (a read-only share)
/// fails with the last error.
pub fn rename_over_readers(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    retry(
        &Backoff::READERS_LET_GO,
        may_be_open_for_reading,
        &mut std::thread::sleep,
        || std::fs::rename(from, to),
    )
}

/// Runs `op`, retrying while the file it works on is in use (see the module docs).
pub fn while_in_use<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    retry(
        &Backoff::FILE_IN_USE,
        is_file_in_use,
        &mut std::thread::sleep,
        op,
    )
}

/// Runs `op` up to `policy.attempts` times while it fails with an error `transient` accepts,
/// calling `sleep` between tries. Any other error is returned at once, unchanged, so a caller
/// can still branch on its code. When the tries run out the last error comes back wrapped in
/// [`StillInUse`], with the same [`io::ErrorKind`].
pub fn retry<T>(
    policy: &Backoff,
    transient: impl Fn(&io::Error) -> bool,
    sleep: &mut dyn FnMut(Duration),
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let attempts = policy.attempts.max(1);
    let mut waited = Duration::ZERO;
    let mut failed = 0;
    loop {
        let err = match op() {
            Ok(value) => return Ok(value),
            Err(err) if !transient(&err) => return Err(err),
            Err(err) => err,
        };
        failed += 1;
        if failed == attempts {
            return Err(io::Error::new(
                err.kind(),
                StillInUse {
                    attempts,
                    waited,
                    source: err,
                },
            ));
        }
        let delay = policy.delay_after(failed);
        sleep(delay);
        waited += delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation that fails with the given errors in turn, then succeeds.
    fn scripted(errors: Vec<io::Error>) -> (impl FnMut() -> io::Result<&'static str>, Calls) {
        let calls = Calls::default();
        let counter = calls.clone();
        let mut errors = errors.into_iter();
        let op = move || {
            counter.0.set(counter.0.get() + 1);
            errors.next().map_or(Ok("done"), Err)
        };
        (op, calls)
    }

    #[derive(Default, Clone)]
    struct Calls(std::rc::Rc<std::cell::Cell<u32>>);

    fn busy() -> io::Error {
        io::Error::new(io::ErrorKind::ResourceBusy, "busy")
    }

    fn is_busy(err: &io::Error) -> bool {
        err.kind() == io::ErrorKind::ResourceBusy
    }

    const FAST: Backoff = Backoff {
        attempts: 4,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::MAX,
    };

    #[test]
    fn the_file_in_use_policy_waits_about_ten_seconds_in_five_tries() {
        let policy = Backoff::FILE_IN_USE;
        assert_eq!(policy.attempts, 5);
        let total = policy.total_wait();
        assert!(
            total >= Duration::from_secs(8) && total <= Duration::from_secs(12),
            "{total:?}"
        );
    }

    #[test]
    fn success_at_once_never_sleeps() {
        let (op, calls) = scripted(vec![]);
        let mut sleeps = vec![];
        let value = retry(&FAST, is_busy, &mut |d| sleeps.push(d), op).unwrap();
        assert_eq!(value, "done");
        assert_eq!(calls.0.get(), 1);
        assert!(sleeps.is_empty());
    }

    #[test]
    fn transient_failures_are_retried_with_doubling_waits() {
        let (op, calls) = scripted(vec![busy(), busy()]);
        let mut sleeps = vec![];
        let value = retry(&FAST, is_busy, &mut |d| sleeps.push(d), op).unwrap();
        assert_eq!(value, "done");
        assert_eq!(calls.0.get(), 3);
        assert_eq!(
            sleeps,
            [Duration::from_millis(10), Duration::from_millis(20)]
        );
    }

    #[test]
    fn a_file_that_stays_busy_fails_clearly_after_the_last_try() {
        let (op, calls) = scripted((0..10).map(|_| busy()).collect());
        let mut sleeps = vec![];
        let err = retry(&FAST, is_busy, &mut |d| sleeps.push(d), op).unwrap_err();
        assert_eq!(calls.0.get(), 4, "tries");
        assert_eq!(sleeps.len(), 3, "no wait after the last try");
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<StillInUse>())
            .expect("wrapped in StillInUse");
        assert_eq!(inner.attempts, 4);
        assert_eq!(inner.waited, Duration::from_millis(10 + 20 + 40));
        let text = err.to_string();
        assert!(
            text.starts_with("busy; still in use after 4 tries"),
            "{text}"
        );
        assert!(text.contains("close it and run again"), "{text}");
    }

    #[test]
    fn other_errors_come_back_at_once_and_unchanged() {
        let (op, calls) = scripted(vec![io::Error::from_raw_os_error(2)]);
        let mut sleeps = vec![];
        let err = retry(&FAST, is_busy, &mut |d| sleeps.push(d), op).unwrap_err();
        assert_eq!(calls.0.get(), 1);
        assert!(sleeps.is_empty());
        assert_eq!(
            err.raw_os_error(),
            Some(2),
            "the code must survive for callers"
        );
    }

    #[test]
    fn the_share_busy_policy_waits_about_three_seconds_never_more_than_100_ms_at_once() {
        let policy = Backoff::SHARE_BUSY;
        let waits: Vec<Duration> = (1..policy.attempts)
            .map(|n| policy.delay_after(n))
            .collect();
        assert_eq!(waits[..3], [2, 4, 8].map(Duration::from_millis));
        assert!(waits.iter().all(|&wait| wait <= Duration::from_millis(100)));
        let total = policy.total_wait();
        assert!(
            (Duration::from_millis(2900)..=Duration::from_millis(3100)).contains(&total),
            "{total:?}"
        );
    }

    #[test]
    fn a_zero_attempt_policy_still_tries_once() {
        let (op, calls) = scripted(vec![busy()]);
        let policy = Backoff {
            attempts: 0,
            ..FAST
        };
        assert!(retry(&policy, is_busy, &mut |_| {}, op).is_err());
        assert_eq!(calls.0.get(), 1);
    }

    #[test]
    fn long_policies_do_not_overflow() {
        let policy = Backoff {
            attempts: 100,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::MAX,
        };
        assert!(policy.delay_after(99) >= policy.delay_after(17));
        assert!(policy.total_wait() > Duration::from_secs(60));
    }

    #[test]
    fn only_windows_sharing_and_lock_violations_count_as_in_use() {
        let sharing = io::Error::from_raw_os_error(32);
        let lock = io::Error::from_raw_os_error(33);
        let not_found = io::Error::from_raw_os_error(2);
        // On POSIX 32 and 33 are EPIPE and EDOM: nothing to wait for.
        assert_eq!(is_file_in_use(&sharing), cfg!(windows));
        assert_eq!(is_file_in_use(&lock), cfg!(windows));
        assert!(!is_file_in_use(&not_found));
        assert!(!is_file_in_use(&busy()));
    }

    #[cfg(windows)]
    #[test]
    fn a_file_held_open_without_delete_sharing_is_waited_for() {
        use std::os::windows::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("held.mkv"), dir.path().join("moved.mkv"));
        std::fs::write(&from, b"x").unwrap();
        // Share read and write but not delete, as many players do.
        let holder = std::fs::File::options()
            .read(true)
            .share_mode(0x1 | 0x2)
            .open(&from)
            .unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            drop(holder);
        });
        let first = std::fs::rename(&from, &to).unwrap_err();
        assert!(is_file_in_use(&first), "{first:?}");
        while_in_use(|| std::fs::rename(&from, &to)).unwrap();
        released.join().unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"x");
    }

    #[cfg(windows)]
    #[test]
    fn a_rename_over_a_file_being_read_waits_for_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (new, cache) = (dir.path().join("cache.tmp"), dir.path().join("cache.json"));
        std::fs::write(&cache, b"old").unwrap();
        std::fs::write(&new, b"new").unwrap();
        // A reader as std opens files: sharing reading, writing and deletion.
        let reader = std::fs::File::open(&cache).unwrap();
        let refused = std::fs::rename(&new, &cache).unwrap_err();
        assert!(may_be_open_for_reading(&refused), "{refused:?}");
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(reader);
        });
        rename_over_readers(&new, &cache).unwrap();
        done.join().unwrap();
        assert_eq!(std::fs::read(&cache).unwrap(), b"new");
    }

    #[test]
    fn readers_are_waited_for_about_half_a_second_and_only_on_windows() {
        let total = Backoff::READERS_LET_GO.total_wait();
        assert_eq!(total, Duration::from_millis(620));
        let denied = io::Error::from_raw_os_error(5);
        // On POSIX 5 is EIO: a real error, never waited out.
        assert_eq!(may_be_open_for_reading(&denied), cfg!(windows));
        assert!(!may_be_open_for_reading(&io::Error::from_raw_os_error(2)));
    }
}
