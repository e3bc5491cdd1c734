//! Helpers for tests of this crate and of crates that use it (the `testing` feature).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::identity::HostIdentity;
use crate::{Acquire, LockGuard, LockRecord, LockSettings, lock_path};

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

/// Thresholds short enough for staleness to show within seconds: a 500 ms heartbeat, stale
/// after 2 s, unreadable records given 1 s, guards 1 s.
pub fn short_settings() -> LockSettings {
    LockSettings {
        heartbeat: Duration::from_millis(500),
        stale_after: Duration::from_secs(2),
        unreadable_grace: Duration::from_secs(1),
        guard_timeout: Duration::from_secs(1),
    }
}

/// The identity of a made-up host `name`, with the machine id `id-<name>`.
pub fn host(name: &str) -> HostIdentity {
    HostIdentity {
        hostname: name.to_owned(),
        host_id: format!("id-{name}"),
    }
}

/// The guard of an acquired claim; an error naming the holder otherwise.
pub fn acquired(acquire: Acquire) -> Result<LockGuard, String> {
    match acquire {
        Acquire::Acquired(guard) => Ok(guard),
        Acquire::Held(holder) => Err(format!("expected to acquire, held by {holder}")),
    }
}

/// The names in `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The record of a claim on `Movie1.mkv` by another host, `hostname`, with `lock_id`.
pub fn foreign_record(hostname: &str, lock_id: &str) -> LockRecord {
    LockRecord {
        hostname: hostname.to_owned(),
        pid: 4242,
        file: "Movie1.mkv".to_owned(),
        lock_id: Some(lock_id.to_owned()),
        host_id: Some(format!("id-{hostname}")),
        stale_after_secs: Some(2.0),
        phase: Some("transcoding".to_owned()),
        ..LockRecord::default()
    }
}

/// A temporary directory of files to claim, removed when dropped.
pub struct Library {
    _dir: tempfile::TempDir,
    /// The directory.
    pub root: PathBuf,
}

impl Library {
    /// A new, empty one.
    pub fn new() -> std::io::Result<Library> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_owned();
        Ok(Library { _dir: dir, root })
    }

    /// The file `name` in it.
    pub fn media(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The lock of the file `name`.
    pub fn lock(&self, name: &str) -> PathBuf {
        lock_path(&self.media(name)).unwrap_or_default()
    }

    /// A lock on `name` written by another host, last heartbeat `age` ago.
    pub fn foreign_lock(
        &self,
        name: &str,
        record: &LockRecord,
        age: Duration,
    ) -> std::io::Result<()> {
        let lock = self.lock(name);
        std::fs::write(&lock, record.to_json().map_err(std::io::Error::other)?)?;
        set_mtime(&lock, SystemTime::now() - age)
    }
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
