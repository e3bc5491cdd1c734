//! Guard directories: the two short critical sections of the protocol, creating a
//! lock and breaking one, are each serialized by a directory beside the lock
//! (`<lock>.acquire`, `<lock>.break`).
//!
//! `mkdir` is the one create that every share measured decides exclusively at the
//! server. Exclusive create is not: smbnetfs creates with `smbc_creat`, which
//! truncates, so two hosts racing through it both "create" the lock and the later
//! one wipes the first's record. A guard lives for a few round trips to the server;
//! one older than `guard_timeout` on the server's clock was left by a crash and is
//! retired: renamed to a unique tombstone, checked to be the guard that was judged
//! (same mtime), then removed. See `docs/locking.md` for the interleavings.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::Locker;
use super::error::LockError;
use super::files::{
    CreateFailure, classify_create_error, exists, put_back, remove_if_present, retry_busy,
};
use crate::names::{acquire_guard_path, parent_dir, tomb_path, unique_hex};

/// How long a busy guard is waited for before the caller hears "busy". Guards are
/// held for a few round trips to the server, so this is generous on a LAN; on
/// sshfs a mount that once saw a guard keeps seeing it for up to 20 s after it is
/// gone (its attribute cache), and waiting longer would not help.
const GUARD_PATIENCE: Duration = Duration::from_millis(300);
/// The longest pause between two tries while waiting.
const MAX_POLL: Duration = Duration::from_millis(20);

/// A guard directory we created.
#[derive(Debug)]
pub(super) struct DirGuard {
    path: PathBuf,
    taken: Instant,
    /// How long it is certainly still ours: half of `guard_timeout`, after which
    /// another host may take it for abandoned (its clocks, cached mtimes and
    /// sshfs's whole-second stamps are a little off from ours).
    trusted_for: Duration,
}

/// How releasing a guard went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Released {
    /// Removed.
    Removed,
    /// Already gone: someone retired it as abandoned while we held it.
    Vanished,
    /// Left in place: we held it so long that it may be someone else's by now, and
    /// a guard is never removed by path unless it is certainly ours. If it is still
    /// ours it is retired as abandoned after `guard_timeout`.
    Expired,
}

impl DirGuard {
    /// Whether we held the guard so long that another host may have retired it.
    pub(super) fn expired(&self) -> bool {
        self.taken.elapsed() >= self.trusted_for
    }

    /// Gives the guard up: renames it to a unique tombstone, then removes that.
    ///
    /// Never `rmdir` by the guard's own name: on SMB a directory being removed is
    /// "delete pending" for a moment, and another host's `mkdir` of the same name
    /// then gets `STATUS_DELETE_PENDING`, which smbnetfs answers by dropping its
    /// connection (every call through that mount fails with EIO for a while). A
    /// rename frees the name at once; the tombstone's name nobody else uses.
    pub(super) fn release(self) -> Result<Released, LockError> {
        if self.expired() {
            return Ok(Released::Expired);
        }
        let tomb = tomb_path(&self.path, &unique_hex(8));
        match retry_busy(|| fs::rename(&self.path, &tomb)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Released::Vanished),
            Err(err) => return Err(LockError::io(&self.path)(err)),
        }
        // The guard is released; a tombstone we fail to remove is debris that
        // `locks clean` removes, not a reason to fail the claim.
        let _ = remove_guard_entry(&tomb, true);
        Ok(Released::Removed)
    }
}

/// What one try to create a guard found.
#[derive(Debug)]
enum Try {
    Taken(DirGuard),
    /// The guard exists.
    Busy,
    /// An error that is most likely the guard being removed right now: smbnetfs
    /// answers EIO to a `mkdir` that meets a directory in "delete pending" (another
    /// host's `rmdir` in flight). Busy if it passes, an error if it persists.
    Transient(io::Error),
}

fn try_once(path: &Path, trusted_for: Duration) -> Result<Try, LockError> {
    let taken = Instant::now();
    match fs::create_dir(path) {
        Ok(()) => Ok(Try::Taken(DirGuard {
            path: path.to_owned(),
            taken,
            trusted_for,
        })),
        // NFS clients (v3 and v4.2, Linux 6.1) were seen to answer ENOENT to a `mkdir` that
        // meets another client's guard being renamed away: with the directory still there,
        // that is the guard changing hands, as EIO is through smbnetfs.
        Err(err)
            if err.kind() == io::ErrorKind::NotFound && exists(parent_dir(path)) == Some(true) =>
        {
            Ok(Try::Transient(err))
        }
        Err(err) => match classify_create_error(&err, || exists(path)) {
            CreateFailure::MaybeHeld => Ok(Try::Busy),
            CreateFailure::DirectoryNotWritable => Err(LockError::DirectoryNotWritable {
                dir: parent_dir(path).to_owned(),
                source: err,
            }),
            CreateFailure::Other if is_io_error(&err) => Ok(Try::Transient(err)),
            CreateFailure::Other => Err(LockError::io(path)(err)),
        },
    }
}

#[cfg(unix)]
fn is_io_error(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EIO)
}

#[cfg(not(unix))]
fn is_io_error(_err: &io::Error) -> bool {
    false
}

/// Tries once to create the guard `path`; `None` when it exists (or is being
/// removed).
pub(super) fn try_take(path: &Path, trusted_for: Duration) -> Result<Option<DirGuard>, LockError> {
    match try_once(path, trusted_for)? {
        Try::Taken(guard) => Ok(Some(guard)),
        Try::Busy | Try::Transient(_) => Ok(None),
    }
}

/// Tries to create the guard `path` for up to [`GUARD_PATIENCE`]; `None` when it
/// stayed busy. Never retires an abandoned guard (see [`Locker::take_guard`]).
pub(super) fn wait_for(path: &Path, trusted_for: Duration) -> Result<Option<DirGuard>, LockError> {
    let deadline = Instant::now() + GUARD_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        let error = match try_once(path, trusted_for)? {
            Try::Taken(guard) => return Ok(Some(guard)),
            Try::Busy => None,
            Try::Transient(err) => Some(err),
        };
        if Instant::now() >= deadline {
            return match error {
                Some(err) => Err(LockError::io(path)(err)),
                None => Ok(None),
            };
        }
        thread::sleep(pause);
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Puts a lock that a retire displaced back at `lock`, under the lock's acquire
/// guard, so that no creator is between its "is there a lock?" and its create while
/// the name is briefly free. Dropped when the guard stays busy (someone is creating
/// a new claim right now) or the name is taken: its owner learns at its next
/// heartbeat. `Ok(true)` when put back.
pub(super) fn restore_lock(lock: &Path, tomb: &Path, trusted_for: Duration) -> io::Result<bool> {
    let guard = match wait_for(&acquire_guard_path(lock), trusted_for) {
        Ok(guard) => guard,
        Err(err) => {
            remove_if_present(tomb)?;
            return Err(io::Error::other(err));
        }
    };
    let Some(guard) = guard else {
        remove_if_present(tomb)?;
        return Ok(false);
    };
    let restored = put_back(tomb, lock);
    let _ = guard.release();
    restored
}

/// What [`Locker::retire_abandoned_guard`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// The guard is younger than `guard_timeout`: its holder is at work.
    Young,
    /// It was abandoned and is gone now.
    Retired,
    /// There was no guard (any more).
    Vanished,
    /// A new guard was taken between our look and our rename; it was put back if
    /// the name was still free.
    Displaced,
}

impl Locker {
    /// Takes the guard directory `guard`: at once if free, after retiring it if it
    /// was abandoned, or by waiting a moment for its holder; `None` when it stays
    /// busy.
    pub(super) fn take_guard(&self, guard: &Path) -> Result<Option<DirGuard>, LockError> {
        let trusted_for = self.settings.guard_timeout / 2;
        if let Some(taken) = try_take(guard, trusted_for)? {
            return Ok(Some(taken));
        }
        if let Abandoned::Retired | Abandoned::Vanished = self.retire_abandoned_guard(guard)? {
            if let Some(taken) = try_take(guard, trusted_for)? {
                return Ok(Some(taken));
            }
        }
        wait_for(guard, trusted_for)
    }

    /// Retires the guard at `guard` if it is older than `guard_timeout` on the
    /// server's clock (see [`retire_abandoned`]).
    pub fn retire_abandoned_guard(&self, guard: &Path) -> Result<Abandoned, LockError> {
        self.retire_guard_older_than(guard, self.settings.guard_timeout)
    }

    /// Retires the guard at `guard` if it is older than `timeout` (zero: whatever its age)
    /// on the server's clock, as [`Locker::retire_abandoned_guard`] does.
    pub fn retire_guard_older_than(
        &self,
        guard: &Path,
        timeout: Duration,
    ) -> Result<Abandoned, LockError> {
        retire_abandoned(guard, timeout, || self.server_now(parent_dir(guard)))
    }
}

/// Retires the guard at `guard` if it is older than `timeout` on the server's clock
/// (`server_now`, asked only when there is a guard), and only if the tombstone it was
/// renamed to is still the guard that was judged (same mtime: a guard taken meanwhile is
/// younger). A guard file left by an older version is retired the same way.
fn retire_abandoned(
    guard: &Path,
    timeout: Duration,
    server_now: impl FnOnce() -> Result<SystemTime, LockError>,
) -> Result<Abandoned, LockError> {
    let judged = match fs::symlink_metadata(guard) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Abandoned::Vanished),
        Err(err) => return Err(LockError::io(guard)(err)),
    };
    let mtime = judged.modified().map_err(LockError::io(guard))?;
    let now = server_now()?;
    let age = now.duration_since(mtime).unwrap_or(Duration::ZERO);
    if age < timeout {
        return Ok(Abandoned::Young);
    }
    let tomb = tomb_path(guard, &unique_hex(8));
    match retry_busy(|| fs::rename(guard, &tomb)) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Abandoned::Vanished),
        Err(err) => return Err(LockError::io(guard)(err)),
    }
    let found = match fs::symlink_metadata(&tomb) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Abandoned::Vanished),
        Err(err) => return Err(LockError::io(&tomb)(err)),
    };
    if found.modified().ok() == Some(mtime) && found.is_dir() == judged.is_dir() {
        remove_guard_entry(&tomb, found.is_dir()).map_err(LockError::io(&tomb))?;
        return Ok(Abandoned::Retired);
    }
    // Someone retired the abandoned guard first and a new holder took the name
    // before our rename: give it back if nobody took the name since. (Renaming a
    // directory over an empty one would replace it, so look first.)
    let restored = exists(guard) == Some(false) && retry_busy(|| fs::rename(&tomb, guard)).is_ok();
    if !restored {
        remove_guard_entry(&tomb, found.is_dir()).map_err(LockError::io(&tomb))?;
    }
    Ok(Abandoned::Displaced)
}

/// Removes a guard (a directory, or a file from an older version) or its tombstone.
pub fn remove_guard_entry(path: &Path, is_dir: bool) -> io::Result<()> {
    let removed = if is_dir {
        retry_busy(|| fs::remove_dir(path))
    } else {
        retry_busy(|| fs::remove_file(path))
    };
    match removed {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A guard directory held for a few round trips to the file server: the primitive of the
/// claim's acquire and break guards, for other short critical sections on the share (the
/// cache's read-merge-write). `mkdir` is exclusive on every share measured, where exclusive
/// create is not (smbnetfs), and it writes nothing, so a full disk or a crash cannot leave a
/// half-made guard: `mkdir` fails and leaves nothing, or there is a whole guard.
///
/// Released on drop: renamed to a unique tombstone, then removed.
#[derive(Debug)]
pub struct ShortGuard {
    guard: Option<DirGuard>,
}

impl ShortGuard {
    /// Takes the guard `path`, waiting up to `patience` while another holds it. A guard
    /// older than `abandoned_after` on the file server's clock (`server_now`) was left by a
    /// crash: it is retired on the way. `None` when it stayed busy.
    pub fn take(
        path: &Path,
        patience: Duration,
        abandoned_after: Duration,
        server_now: impl Fn() -> SystemTime,
    ) -> Result<Option<ShortGuard>, LockError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let error = match try_once(path, abandoned_after / 2)? {
                Try::Taken(guard) => return Ok(Some(ShortGuard { guard: Some(guard) })),
                Try::Busy => None,
                Try::Transient(err) => Some(err),
            };
            if error.is_none() {
                let retired = retire_abandoned(path, abandoned_after, || Ok(server_now()))?;
                if matches!(retired, Abandoned::Retired | Abandoned::Vanished) {
                    continue;
                }
            }
            if started.elapsed() >= patience {
                return match error {
                    Some(err) => Err(LockError::io(path)(err)),
                    None => Ok(None),
                };
            }
            thread::sleep(jittered(pause));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether the guard is certainly still ours: held for less than half of
    /// `abandoned_after`, before which nobody takes it for abandoned.
    pub fn is_ours(&self) -> bool {
        self.guard.as_ref().is_some_and(|guard| !guard.expired())
    }
}

impl Drop for ShortGuard {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            // A guard that could not be released is retired as abandoned later.
            let _ = guard.release();
        }
    }
}

/// A pause between `base` and twice it, so that waiting hosts do not retry in step.
fn jittered(base: Duration) -> Duration {
    let spread = u32::from_str_radix(&unique_hex(1), 16).ok().unwrap_or(128);
    base + base * spread / 256
}
