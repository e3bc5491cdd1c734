//! Helpers for tests of this crate and of crates that use it (the `testing` feature).

use std::path::Path;
#[cfg(target_os = "linux")]
use std::path::PathBuf;
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

/// Sets `chattr +i` on a directory for the life of the value.
#[cfg(target_os = "linux")]
pub struct Immutable(PathBuf);

#[cfg(target_os = "linux")]
impl Immutable {
    /// Sets it; `None` where the attribute does not stop a create (not root, another
    /// file system).
    pub fn set(dir: &Path) -> std::io::Result<Option<Immutable>> {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        let immutable = Immutable(dir.to_owned());
        if !matches!(status, Ok(status) if status.success()) {
            return Ok(None);
        }
        // Only a create that really fails proves the attribute works here.
        match std::fs::File::create_new(dir.join("probe")) {
            Ok(_) => {
                drop(immutable);
                std::fs::remove_file(dir.join("probe"))?;
                Ok(None)
            }
            Err(_) => Ok(Some(immutable)),
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}
