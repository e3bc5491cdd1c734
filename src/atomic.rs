//! Replacing a small file on the share whole, so that no reader ever sees half of one.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Whether the new content must be on disk before it takes the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// `fsync` first: after a power cut the file holds the old content or the new.
    ToDisk,
    /// No `fsync`: for a file rewritten every few seconds, whose readers take an empty or
    /// garbled one in their stride (presence records); it saves the share a round trip.
    NotNeeded,
}

/// Writes `bytes` to a hidden temp file beside `file` (`.<name>.<pid>.tmp`), flushes it to
/// disk and renames it over `file`. The temp file is removed if any step fails.
pub fn write_atomic(file: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(file, bytes, Flush::ToDisk)
}

/// [`write_atomic`], with the flush chosen: no reader ever sees half a file either way.
pub fn replace(file: &Path, bytes: &[u8], flush: Flush) -> io::Result<()> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let temp = file.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        out.write_all(bytes)?;
        if flush == Flush::ToDisk {
            out.sync_all()?;
        }
        // Closed before the rename, which Windows needs; there a reader holding the file
        // for a moment fails the rename, so it is tried again.
        drop(out);
        crate::retry::rename_over_readers(&temp, file)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory in the way: the error is returned and the temp file removed.
        let blocked = dir.path().join("dir");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"three").is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
