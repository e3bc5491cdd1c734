//! The few file operations the protocol trusts on a network share, and how their
//! failures are read.
//!
//! `mkdir` is the only create every server decides atomically (smbnetfs ignores
//! `O_EXCL`); exclusive create is atomic everywhere else; rename is atomic but
//! overwrites (and on smbnetfs is not even atomic over an existing file). Nothing
//! here uses link, `RENAME_NOREPLACE` or flock, which fail or lie on some share.
//! See `docs/locking.md` for what each mount was measured to do.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Instant, SystemTime};

use super::error::LockError;
use super::verdict::Content;
use crate::names::{CLOCK_PROBE_PREFIX, parent_dir, tomb_path, unique_hex};
use crate::retry::{self, Backoff};

/// Lock records are a few hundred bytes; anything much bigger is not one of ours,
/// and reading it whole could cost a lot on a slow share.
const MAX_LOCK_BYTES: u64 = 64 * 1024;

/// What a failed exclusive create means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CreateFailure {
    /// Someone may hold the name: read it.
    MaybeHeld,
    /// Nothing can be created in the directory.
    DirectoryNotWritable,
    /// Any other failure (disk full, I/O error).
    Other,
}

/// Reads a failed `create_new`. Shares answer "exists" with EEXIST, but sshfs and
/// Windows (a file pending deletion) answer EACCES or EPERM, so those mean "maybe
/// held" too, unless the file is certainly absent: then the directory refused us.
/// `exists` is asked only when needed; `None` means it could not be told.
pub(super) fn classify_create_error(
    err: &io::Error,
    exists: impl FnOnce() -> Option<bool>,
) -> CreateFailure {
    match err.kind() {
        io::ErrorKind::AlreadyExists => CreateFailure::MaybeHeld,
        io::ErrorKind::PermissionDenied => match exists() {
            Some(false) => CreateFailure::DirectoryNotWritable,
            Some(true) | None => CreateFailure::MaybeHeld,
        },
        io::ErrorKind::ReadOnlyFilesystem => CreateFailure::DirectoryNotWritable,
        _ if is_write_protected(err) => CreateFailure::DirectoryNotWritable,
        _ => CreateFailure::Other,
    }
}

#[cfg(windows)]
fn is_write_protected(err: &io::Error) -> bool {
    use windows_sys::Win32::Foundation::ERROR_WRITE_PROTECT;
    err.raw_os_error() == i32::try_from(ERROR_WRITE_PROTECT).ok()
}

#[cfg(not(windows))]
fn is_write_protected(_err: &io::Error) -> bool {
    false
}

/// Whether `path` exists, as far as can be told.
pub(super) fn exists(path: &Path) -> Option<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Some(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// Creates `path` exclusively holding `bytes`, durably and stamped by the server:
/// `Ok(true)` when created, `Ok(false)` when the name may be held by someone else.
///
/// Exclusive only where the server honours `O_EXCL` (smbnetfs does not): callers
/// hold the name's acquire guard, which makes it exclusive everywhere.
///
/// A file we created but could not write completely is retired again, so a failed
/// create leaves nothing behind.
pub(super) fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<bool, LockError> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => file,
        Err(err) => {
            return match classify_create_error(&err, || exists(path)) {
                CreateFailure::MaybeHeld => Ok(false),
                CreateFailure::DirectoryNotWritable => Err(LockError::DirectoryNotWritable {
                    dir: parent_dir(path).to_owned(),
                    source: err,
                }),
                CreateFailure::Other => Err(LockError::io(path)(err)),
            };
        }
    };
    // sync_all's error is the one that tells of a write the server refused (NFS
    // reports ENOSPC or EDQUOT only here, and dropping the file ignores close's).
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| stamp_server_time(&file));
    drop(file);
    if let Err(err) = written {
        // Only ever a prefix of what we meant to write is ours to remove; anything
        // else goes back (the caller holds the acquire guard).
        if let Ok(Retired::Displaced { tomb }) = retire(path, |found| bytes.starts_with(found)) {
            let _ = put_back(&tomb, path);
        }
        return Err(LockError::io(path)(err));
    }
    Ok(true)
}

/// A lock (or guard) file as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Snapshot {
    /// Stamped by the file server at the last write or heartbeat.
    pub mtime: SystemTime,
    pub size: u64,
    /// What we could read (at most [`MAX_LOCK_BYTES`]).
    pub bytes: Vec<u8>,
    pub content: Content,
}

impl Snapshot {
    pub fn lock_id(&self) -> Option<&str> {
        self.content.record()?.lock_id.as_deref()
    }
}

/// How many times an operation by name is tried again when NFS answers ESTALE.
const STALE_HANDLE_TRIES: usize = 3;

/// Whether `err` is NFS's "stale file handle": the file this client had cached under
/// the name was replaced or deleted through another client (a lock retired, a new one
/// created).
#[cfg(unix)]
pub(super) fn is_stale_handle(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ESTALE)
}

/// Windows shares answer a replaced file with other errors, read as they are.
#[cfg(not(unix))]
pub(super) fn is_stale_handle(_err: &io::Error) -> bool {
    false
}

/// Runs `op`, which works on a file by its name, again while NFS answers ESTALE (each try
/// looks the name up anew, which refreshes the client's handle); if it persists, the file
/// that was there is gone, and the error says NotFound.
pub(super) fn by_name<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        match op() {
            Err(err) if is_stale_handle(&err) => {
                tries += 1;
                if tries >= STALE_HANDLE_TRIES {
                    return Err(io::Error::new(io::ErrorKind::NotFound, err));
                }
            }
            result => return result,
        }
    }
}

/// Reads the lock at `path`; `None` when there is none.
pub(super) fn read_snapshot(path: &Path) -> io::Result<Option<Snapshot>> {
    match by_name(|| read_snapshot_once(path)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        result => result,
    }
}

fn read_snapshot_once(path: &Path) -> io::Result<Option<Snapshot>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            // Another user's lock we may not read is still a lock: judge it by its
            // mtime like any unreadable one.
            return match fs::metadata(path) {
                Ok(meta) => Ok(Some(Snapshot {
                    mtime: meta.modified()?,
                    size: meta.len(),
                    bytes: Vec::new(),
                    content: Content::Unreadable(format!("cannot read it: {err}")),
                })),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(err),
            };
        }
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    let (bytes, complete) = read_bounded(file)?;
    let content = if complete {
        Content::from_bytes(&bytes)
    } else {
        Content::Unreadable(format!("larger than {MAX_LOCK_BYTES} bytes"))
    };
    Ok(Some(Snapshot {
        mtime: meta.modified()?,
        size: meta.len(),
        bytes,
        content,
    }))
}

/// Reads at most [`MAX_LOCK_BYTES`]; `false` when there was more.
pub(super) fn read_bounded(file: impl Read) -> io::Result<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    file.take(MAX_LOCK_BYTES + 1).read_to_end(&mut bytes)?;
    let complete = bytes.len() as u64 <= MAX_LOCK_BYTES;
    bytes.truncate(MAX_LOCK_BYTES as usize);
    Ok((bytes, complete))
}

/// Reads at most [`MAX_LOCK_BYTES`] of the file at `path`.
pub(super) fn read_path_bounded(path: &Path) -> io::Result<Vec<u8>> {
    by_name(|| read_bounded(File::open(path)?).map(|(bytes, _)| bytes))
}

/// Makes sure the file's mtime is the file server's "now" after a write.
///
/// The write itself has the server stamp the file, with its own clock and full
/// precision, on local disks, NFS, SMB and both FUSE mounts measured (sshfs,
/// smbnetfs). Only NFS gets a `UTIME_NOW` on top, which travels as "set to server
/// time" and covers clients that may stamp delegated writes themselves. Anywhere
/// else `UTIME_NOW` would be wrong: sshfs and smbnetfs turn it into the *client's*
/// clock in whole seconds, overwriting the server's stamp, and a host whose clock
/// is off would then make its live lock look stale (or a dead one fresh).
#[cfg(target_os = "linux")]
pub(super) fn stamp_server_time(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `NFS_SUPER_MAGIC` from `linux/magic.h`.
    const NFS_SUPER_MAGIC: i64 = 0x6969;
    // SAFETY: an all-zero statfs is a valid value to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the whole call and `fs` is writable.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is i64 on some targets and narrower on others.
    #[allow(clippy::unnecessary_cast)]
    let f_type = fs.f_type as i64;
    if f_type != NFS_SUPER_MAGIC {
        return Ok(());
    }
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: the descriptor is open for the whole call and `times` has the two
    // entries futimens reads.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the write that precedes every call has the server stamp the file
/// already (Windows has no "server now" for file times at all).
#[cfg(not(target_os = "linux"))]
pub(super) fn stamp_server_time(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Whether `err` says someone else has the file open (EBUSY through smbnetfs, a
/// sharing violation on Windows).
fn is_busy(err: &io::Error) -> bool {
    #[cfg(unix)]
    let busy = err.raw_os_error() == Some(libc::EBUSY);
    #[cfg(not(unix))]
    let busy = false;
    busy || retry::is_file_in_use(err)
}

/// Runs `op`, retrying by [`Backoff::SHARE_BUSY`] (about 3 s) while the file is busy.
pub(super) fn retry_busy<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    retry::retry(&Backoff::SHARE_BUSY, is_busy, &mut thread::sleep, op)
}

/// How retiring a file went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Retired {
    /// It held what we expected and is gone.
    Done,
    /// It was already gone (or someone removed our tombstone).
    Vanished,
    /// It held something else, which now lies at `tomb`: the caller puts it back
    /// (see [`put_back`]) or drops it.
    Displaced {
        /// Where the displaced file lies.
        tomb: PathBuf,
    },
}

/// Removes `path` only if it holds what `is_expected` accepts, without the race of
/// check-then-delete: rename it to a unique tombstone (atomic, so afterwards nobody
/// else can change what we look at), read the tombstone, and delete it only if it
/// is what we expected. Never deletes by the original path.
pub(super) fn retire(path: &Path, is_expected: impl Fn(&[u8]) -> bool) -> io::Result<Retired> {
    let tomb = tomb_path(path, &unique_hex(8));
    match retry_busy(|| fs::rename(path, &tomb)) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Retired::Vanished),
        Err(err) => return Err(err),
    }
    let bytes = match read_path_bounded(&tomb) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Retired::Vanished),
        Err(err) => {
            // Unverifiable: put it back rather than destroy what may be a live lock.
            let _ = put_back(&tomb, path);
            return Err(err);
        }
    };
    if is_expected(&bytes) {
        remove_if_present(&tomb)?;
        return Ok(Retired::Done);
    }
    Ok(Retired::Displaced { tomb })
}

/// Puts a displaced file back at `path` if the name is still free; otherwise drops
/// it, and its owner finds another claim (or none) at its next heartbeat and
/// stands down. `Ok(true)` when put back.
///
/// The name is checked by opening it (an open is answered by the server on every
/// mount; a stat may come from a cache) and then taken by a plain rename, which is
/// exclusive only because the caller holds the name's acquire guard.
pub(super) fn put_back(tomb: &Path, path: &Path) -> io::Result<bool> {
    let free = match by_name(|| File::open(path)) {
        Ok(_) => false,
        Err(err) if err.kind() == io::ErrorKind::NotFound => true,
        Err(_) => false,
    };
    if free {
        retry_busy(|| fs::rename(tomb, path))?;
    } else {
        remove_if_present(tomb)?;
    }
    Ok(free)
}

/// Renames `from` to `to` unless `to` exists; `Ok(false)` when it does.
///
/// Rename replaces silently and `RENAME_NOREPLACE` fails on NFS and FUSE, so the
/// name is first reserved by exclusive create and the empty placeholder then
/// replaced by the rename. A crash in between leaves an empty file at `to`, which
/// every reader here treats as "nothing there yet". smbnetfs does not honour the
/// exclusive create (it truncates), so `to` is opened first: that narrows, but
/// cannot close, the window in which a file appearing at `to` could be replaced.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    if by_name(|| File::open(to)).is_ok() {
        return Ok(false);
    }
    match OpenOptions::new().write(true).create_new(true).open(to) {
        Ok(placeholder) => {
            drop(placeholder);
            if let Err(err) = retry_busy(|| fs::rename(from, to)) {
                // Our reservation must not stay to block the name for ever; it is ours
                // only while still empty.
                if crate::fresh::metadata(to).is_ok_and(|meta| meta.len() == 0) {
                    let _ = fs::remove_file(to);
                }
                return Err(err);
            }
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    }
}

/// Deletes a file whose name only we know (a tombstone or probe).
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match retry_busy(|| fs::remove_file(path)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// The file server's clock, read once.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerClock {
    /// The server's time at `at`.
    pub server_time: SystemTime,
    /// When that was, on our monotonic clock (immune to steps of our wall clock).
    pub at: Instant,
}

impl ServerClock {
    /// The server's time now, extrapolated on our monotonic clock.
    pub fn now(&self) -> SystemTime {
        self.server_time + self.at.elapsed()
    }
}

/// Learns the file server's clock by creating a probe file exclusively and reading its
/// mtime, then deleting it. A file made by exclusive create is stamped by the server on
/// every share measured, where a *write* is stamped with the writer's clock by kernel
/// CIFS clients. On sshfs, whose protocol carries whole seconds, the answer is up to a
/// second early, like every mtime read there.
pub(super) fn probe_server_clock(dir: &Path) -> Result<ServerClock, LockError> {
    let probe = dir.join(format!("{CLOCK_PROBE_PREFIX}{}", unique_hex(8)));
    let before = Instant::now();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|err| match classify_create_error(&err, || Some(false)) {
            CreateFailure::DirectoryNotWritable => LockError::DirectoryNotWritable {
                dir: dir.to_owned(),
                source: err,
            },
            _ => LockError::io(&probe)(err),
        })?;
    let stamped = file.metadata().and_then(|meta| meta.modified());
    let after = Instant::now();
    drop(file);
    // A probe we fail to delete is harmless debris that `locks clean` removes; it
    // must not fail the lock operation that needed the clock.
    let _ = remove_if_present(&probe);
    let server_time = stamped.map_err(LockError::io(&probe))?;
    Ok(ServerClock {
        server_time,
        // The server stamped somewhere between the two instants.
        at: before + (after - before) / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[cfg(unix)]
    #[test]
    fn failed_creates_are_read_as_the_design_says() {
        use CreateFailure::*;
        let never = || -> Option<bool> { panic!("existence is not needed for this error") };
        assert_eq!(
            classify_create_error(&os_error(libc::EEXIST), never),
            MaybeHeld
        );
        assert_eq!(
            classify_create_error(&os_error(libc::EROFS), never),
            DirectoryNotWritable
        );
        assert_eq!(classify_create_error(&os_error(libc::ENOSPC), never), Other);
        assert_eq!(classify_create_error(&os_error(libc::EIO), never), Other);
        for code in [libc::EACCES, libc::EPERM] {
            let err = os_error(code);
            assert_eq!(classify_create_error(&err, || Some(true)), MaybeHeld);
            assert_eq!(classify_create_error(&err, || None), MaybeHeld);
            assert_eq!(
                classify_create_error(&err, || Some(false)),
                DirectoryNotWritable
            );
        }
    }

    #[cfg(windows)]
    #[test]
    fn failed_creates_are_read_as_the_design_says() {
        use CreateFailure::*;
        // ERROR_FILE_EXISTS, ERROR_ACCESS_DENIED (also: delete pending), ERROR_WRITE_PROTECT
        assert_eq!(classify_create_error(&os_error(80), || None), MaybeHeld);
        assert_eq!(
            classify_create_error(&os_error(5), || Some(true)),
            MaybeHeld
        );
        assert_eq!(
            classify_create_error(&os_error(5), || Some(false)),
            DirectoryNotWritable
        );
        assert_eq!(
            classify_create_error(&os_error(19), || None),
            DirectoryNotWritable
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_stale_nfs_handle_is_tried_again_by_name_then_read_as_gone() {
        // Before, ESTALE (a lock the other NFS client had just retired) came back as an
        // I/O error and failed the claim.
        let mut left = 2;
        let passes = by_name(|| {
            if left > 0 {
                left -= 1;
                Err(os_error(libc::ESTALE))
            } else {
                Ok(7)
            }
        });
        assert_eq!(passes.ok(), Some(7));
        let mut tries = 0;
        let persists = by_name(|| -> io::Result<()> {
            tries += 1;
            Err(os_error(libc::ESTALE))
        });
        assert_eq!(
            persists.map_err(|err| err.kind()),
            Err(io::ErrorKind::NotFound)
        );
        assert_eq!(tries, STALE_HANDLE_TRIES);
        let other = by_name(|| -> io::Result<()> { Err(os_error(libc::EIO)) });
        assert_eq!(
            other.map_err(|err| err.raw_os_error()),
            Err(Some(libc::EIO))
        );
    }

    #[test]
    fn unique_hex_is_hex_of_the_asked_length_and_varies() {
        let a = unique_hex(16);
        let b = unique_hex(16);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn bounded_read_flags_oversized_files() {
        let small = read_bounded(&b"{}"[..]).unwrap_or_default();
        assert_eq!(small, (b"{}".to_vec(), true));
        let big = vec![b' '; MAX_LOCK_BYTES as usize + 10];
        let (bytes, complete) = read_bounded(&big[..]).unwrap_or_default();
        assert_eq!((bytes.len() as u64, complete), (MAX_LOCK_BYTES, false));
    }

    #[test]
    fn retire_deletes_only_what_it_expects_and_restores_the_rest() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let lock = dir.path().join("a.mkv.mediabox.lock");
        fs::write(&lock, b"mine")?;
        assert_eq!(retire(&lock, |b| b == b"mine")?, Retired::Done);
        assert!(!lock.exists());
        assert_eq!(retire(&lock, |_| true)?, Retired::Vanished);

        fs::write(&lock, b"theirs")?;
        let Retired::Displaced { tomb } = retire(&lock, |b| b == b"mine")? else {
            panic!("retired a lock it did not expect");
        };
        assert!(!lock.exists());
        assert_eq!(fs::read(&tomb)?, b"theirs");
        assert!(put_back(&tomb, &lock)?);
        assert_eq!(fs::read(&lock)?, b"theirs");
        // Nothing but the restored lock is left: no tombstone, no placeholder.
        assert_eq!(fs::read_dir(dir.path())?.count(), 1);
        Ok(())
    }

    #[test]
    fn put_back_never_replaces_a_newer_claim() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let lock = dir.path().join("a.mkv.mediabox.lock");
        let tomb = tomb_path(&lock, "ab");
        fs::write(&tomb, b"displaced")?;
        fs::write(&lock, b"newer claim")?;
        assert!(!put_back(&tomb, &lock)?);
        assert_eq!(fs::read(&lock)?, b"newer claim");
        assert!(!tomb.exists());
        Ok(())
    }

    #[test]
    fn server_clock_probe_leaves_nothing_behind() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let clock = probe_server_clock(dir.path())?;
        let drift = clock
            .now()
            .duration_since(SystemTime::now())
            .or_else(|err| Ok::<_, std::time::SystemTimeError>(err.duration()))?;
        // A local disk's "server" is this machine: same clock, up to timestamp
        // granularity.
        assert!(drift < std::time::Duration::from_secs(1), "{drift:?}");
        assert_eq!(fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }
}
