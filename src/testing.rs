//! Helpers shared by the unit tests of several modules.

use std::path::Path;
use std::time::SystemTime;

/// Sets the mtime of a file or directory. POSIX: a read-only open, since directories cannot
/// be opened for writing.
#[cfg(not(windows))]
pub fn set_mtime(path: &Path, mtime: SystemTime) -> std::io::Result<()> {
    std::fs::File::open(path)?.set_modified(mtime)
}

/// Sets the mtime of a file or directory. Windows opens a directory only with backup
/// semantics, and changing a time needs the right to write attributes.
#[cfg(windows)]
pub fn set_mtime(path: &Path, mtime: SystemTime) -> std::io::Result<()> {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_WRITE_ATTRIBUTES: u32 = 0x0100;
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    std::fs::OpenOptions::new()
        .access_mode(FILE_WRITE_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?
        .set_modified(mtime)
}
