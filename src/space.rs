//! Room on the share for a conversion's output, checked before each transcode.
//!
//! Running out mid-encode would not lose the original, but it would waste the encode and,
//! worse, leave the share full for everyone: other hosts could no longer create their lock
//! files, and downloads landing there would fail.

use std::fmt;
use std::io;
use std::path::Path;

use crate::output::human_bytes;

/// Space left free for everything else that writes to the share.
pub const RESERVE_BYTES: u64 = 256 * 1024 * 1024;

/// The bytes available to this user in the file system holding `dir` (the fs4 crate:
/// `statvfs` on Unix, `GetDiskFreeSpaceExW` on Windows, so quotas and root reserves count).
pub fn available(dir: &Path) -> io::Result<u64> {
    // smbnetfs answers statfs with all zeros: a size of 0 means "cannot say", not "full".
    if fs4::total_space(dir)? == 0 {
        return Err(io::Error::other("the file system reports no size"));
    }
    fs4::available_space(dir)
}

/// The share lacks room for a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    /// Bytes available on the share.
    pub available: u64,
    /// The original's size, which the new file may reach before it is abandoned.
    pub source_size: u64,
}

impl NoRoom {
    /// The bytes the conversion needed.
    pub fn needed(&self) -> u64 {
        needed_for(self.source_size)
    }
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not enough free space on the share: {} available, {} needed (room for a new \
             file as large as the original, {}, plus {} kept free for others); free some \
             space or convert smaller files first",
            human_bytes(self.available),
            human_bytes(self.needed()),
            human_bytes(self.source_size),
            human_bytes(RESERVE_BYTES)
        )
    }
}

impl std::error::Error for NoRoom {}

/// The space a conversion of a `source_size`-byte file needs: the temp output can grow to
/// about the original's size before the early abort or the savings gate throws it away, and
/// the swap itself needs none (a hard link or a rename).
pub fn needed_for(source_size: u64) -> u64 {
    source_size.saturating_add(RESERVE_BYTES)
}

/// Whether `available` bytes leave room to convert a `source_size`-byte file.
pub fn judge(available: u64, source_size: u64) -> Result<(), NoRoom> {
    if available >= needed_for(source_size) {
        Ok(())
    } else {
        Err(NoRoom {
            available,
            source_size,
        })
    }
}

/// Checks the room in `dir` for converting a `source_size`-byte file there.
///
/// When the file system cannot say (some FUSE mounts), the conversion goes ahead: a full
/// disk fails the encode cleanly, and refusing everything would stop the run for nothing.
pub fn check(dir: &Path, source_size: u64) -> Result<(), NoRoom> {
    match available(dir) {
        Ok(available) => judge(available, source_size),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn room_for_the_original_size_plus_the_reserve_is_needed() {
        assert_eq!(judge(5 * GIB, 4 * GIB), Ok(()));
        assert_eq!(judge(4 * GIB + RESERVE_BYTES, 4 * GIB), Ok(()));
        let err = judge(4 * GIB + RESERVE_BYTES - 1, 4 * GIB).unwrap_err();
        assert_eq!(err.needed(), 4 * GIB + RESERVE_BYTES);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "not enough free space on the share: 4.25 GiB available, 4.25 GiB needed"
            ),
            "{text}"
        );
        assert!(
            text.contains("as large as the original, 4.00 GiB"),
            "{text}"
        );
        // A size near u64::MAX does not overflow into "fits".
        assert!(judge(u64::MAX - 1, u64::MAX).is_err());
    }

    #[test]
    fn a_real_directory_has_some_space_and_a_missing_one_is_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available(dir.path()).unwrap() > 0);
        // Where the space cannot be learnt, nothing is refused. Windows resolves any path to
        // its volume (GetVolumePathNameW), so there a missing directory has the volume's
        // space and is judged by it.
        let missing = dir.path().join("missing");
        if cfg!(windows) {
            assert!(available(&missing).is_ok());
        } else {
            assert!(available(&missing).is_err());
            assert_eq!(check(&missing, u64::MAX / 2), Ok(()));
        }
        // No disk has room for an exabyte-sized original.
        assert!(check(dir.path(), 1 << 60).is_err());
    }
}
