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
    let mut file = File::open(path)?;
    force_attribute_refresh(&file);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}
