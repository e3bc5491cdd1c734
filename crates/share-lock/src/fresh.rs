//! Reading a file as the file server has it now, past the caches of network clients.
//!
//! A plain stat or read through a network client may answer from a cache: sshfs keeps
//! attributes 20 s, the FUSE kernel side 1 s, NFS up to 60 s, and a read is cut to the size
//! the client believes. Opening the file refreshes sshfs's own cache (and NFS's, by
//! close-to-open); `AT_STATX_FORCE_SYNC` then makes the kernel ask the client instead of
//! its own cache.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

/// The size and mtime of `path` as the file server has them now, for the checks
/// after a claim ("did another host convert it since our scan?") and before the swap.
///
/// A plain stat through a network client may answer from a cache: sshfs keeps
/// attributes 20 s, the FUSE kernel side 1 s, NFS up to 60 s. So a file another host
/// swapped a moment ago (it released the lock we just took) still shows its old size,
/// and we would convert it a second time. Opening the file refreshes sshfs's own
/// cache (and NFS's, close-to-open); `AT_STATX_FORCE_SYNC` then makes the kernel ask
/// the client instead of its own cache.
pub fn metadata(path: &Path) -> io::Result<fs::Metadata> {
    let file = File::open(path)?;
    force_attribute_refresh(&file);
    file.metadata()
}

/// Asks the file system for the file's attributes, past the kernel's cache (best
/// effort: a kernel or libc without statx just keeps what it has).
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn force_attribute_refresh(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero statx is a valid value to be overwritten.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the whole call, the path is an empty
    // C string (AT_EMPTY_PATH: the descriptor itself) and `stat` is writable.
    unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS,
            &mut stat,
        );
    }
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn force_attribute_refresh(_file: &File) {}

/// The whole content of `path`, read after the attributes are refreshed, so a file another
/// host replaced a moment ago is not read to its old length.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_with_metadata(path).map(|(bytes, _)| bytes)
}

/// [`read`], with the size and mtime of the very file read: another writer that replaces
/// the name a moment later changes what a stat of the name says, never these.
pub fn read_with_metadata(path: &Path) -> io::Result<(Vec<u8>, fs::Metadata)> {
    let file = File::open(path)?;
    force_attribute_refresh(&file);
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    // Room for the whole file and one byte more, which finds the end at once. The length is
    // only a hint (a failed reservation just reads in steps), and `take` keeps the standard
    // library from a stat and a seek of its own for the same hint: a warm scan reads a cache
    // in each of thousands of directories.
    let hint = usize::try_from(meta.len()).map_or(0, |len| len.saturating_add(1));
    let _ = bytes.try_reserve_exact(hint);
    (&file).take(u64::MAX).read_to_end(&mut bytes)?;
    Ok((bytes, meta))
}
