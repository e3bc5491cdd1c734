//! The cache file on the share: reading with retries, the short write lock, and the atomic
//! replace.
//!
//! The lock is the directory `.mediabox_cache.json.lock`, a [`ShortGuard`]: the same `mkdir`
//! guard the claim protocol takes (`docs/locking.md`), because `mkdir` is exclusive on every
//! share measured where exclusive create is not (smbnetfs), and because it writes nothing, so
//! a full disk cannot leave an empty lock behind that blocks every writer. It is held for
//! milliseconds, so one older than [`STALE_LOCK`] belonged to a writer that died. Its age is
//! judged on the file server's clock, read from the mtime of the temp file this writer has
//! just created in the same directory, never from this host's clock. Older versions took a
//! lock *file* of the same name; either kind excludes the other.

use compact_str::CompactString;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::{CACHE_FILE_NAME, CacheStamp, Entry, Parsed, key, parse, serialize};
use crate::lock::ShortGuard;

/// The write lock beside the cache.
pub(crate) const LOCK_FILE_NAME: &str = ".mediabox_cache.json.lock";

/// A cache lock older than this, on the server's clock, is a dead writer's.
const STALE_LOCK: Duration = Duration::from_secs(30);

/// Temp files and broken locks older than this are a dead writer's debris.
const DEBRIS_AGE: Duration = Duration::from_secs(3600);

/// How often, and how long apart, a reader looks again for a cache that a writer is replacing.
const READ_RETRIES: u32 = 5;
const READ_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Why a write did not happen.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Another writer held the lock for longer than we were willing to wait.
    Busy,
    /// The cache on disk is of a newer schema; we must not overwrite it.
    Newer(u32),
    /// The directory cannot be written (read-only share, permissions, I/O).
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(err: io::Error) -> WriteError {
        WriteError::Io(err)
    }
}

/// Reads the cache file of `dir`; `None` when there is none.
///
/// Some SMB servers replace a file in two steps, so a reader can find no file for a moment
/// while a writer holds the lock: then it looks again, briefly. Without a lock there is no
/// writer, and a missing file is simply missing (no sleep: a cold library has thousands).
/// The stamp is that of the file read (see [`CacheStamp`]).
pub(crate) fn read(dir: &Path) -> io::Result<Option<(Vec<u8>, Option<CacheStamp>)>> {
    let mut tries = 0;
    loop {
        match read_once(dir)? {
            None if tries < READ_RETRIES && lock_exists(dir) => {
                tries += 1;
                std::thread::sleep(READ_RETRY_DELAY);
            }
            read => {
                return Ok(read.map(|(bytes, meta)| (bytes, CacheStamp::of_metadata(&meta))));
            }
        }
    }
}

/// One read of the cache file, as the file server has it now, with the file's metadata;
/// `None` when there is none.
fn read_once(dir: &Path) -> io::Result<Option<(Vec<u8>, fs::Metadata)>> {
    match crate::fresh::read_with_metadata(&dir.join(CACHE_FILE_NAME)) {
        Ok(read) => Ok(Some(read)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// How many times, and how far apart, a cache that reads as corrupt under the lock is read
/// again before it is set aside: a network client can show another host's fresh rename
/// half-way for a moment, and setting aside a good cache would drop every host's history.
const CORRUPT_REREADS: u32 = 3;
const CORRUPT_REREAD_DELAY: Duration = Duration::from_millis(300);

/// Reads the cache under the lock; a corrupt read is tried again a few times, so only a
/// cache that stays corrupt is set aside.
fn read_settled(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let bytes_once = || Ok::<_, io::Error>(read_once(dir)?.map(|(bytes, _)| bytes));
    let mut read = bytes_once()?;
    for _ in 0..CORRUPT_REREADS {
        match &read {
            Some(bytes) if matches!(parse(bytes), Parsed::Corrupt(_)) => {
                std::thread::sleep(CORRUPT_REREAD_DELAY);
                read = bytes_once()?;
            }
            _ => break,
        }
    }
    Ok(read)
}

/// Whether a writer holds (or left) the lock of `dir`'s cache.
pub(crate) fn lock_exists(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(LOCK_FILE_NAME)).is_ok()
}

/// Updates `dir`'s cache: lock, re-read, `apply`, prune gone files, write a temp file,
/// `sync_all`, rename over, unlock. Waits at most `patience` for another writer's lock.
pub(crate) fn update(
    dir: &Path,
    patience: Duration,
    apply: impl FnOnce(&mut BTreeMap<CompactString, Entry>),
) -> Result<(), WriteError> {
    let nonce = share_lock::names::unique_hex(16);
    let mut temp = TempFile::create(dir.join(format!("{CACHE_FILE_NAME}.{nonce}.tmp")))?;
    // The file server stamped this mtime: "now" on the clock that stamps the lock too.
    let server_now = temp.modified()?;
    let started = Instant::now();
    let lock = ShortGuard::take(&dir.join(LOCK_FILE_NAME), patience, STALE_LOCK, || {
        server_now + started.elapsed()
    })
    .map_err(|err| WriteError::Io(io::Error::other(err)))?
    .ok_or(WriteError::Busy)?;

    // Under the lock no writer is mid-replace: a missing file is missing.
    let mut files = match read_settled(dir)?.map(|bytes| parse(&bytes)) {
        None => BTreeMap::new(),
        Some(Parsed::Current(files) | Parsed::Earlier(files) | Parsed::Legacy(files)) => files,
        Some(Parsed::Newer(version)) => return Err(WriteError::Newer(version)),
        Some(Parsed::Corrupt(_)) => {
            let aside = dir.join(format!(
                "{CACHE_FILE_NAME}.corrupt-{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                &nonce[..8]
            ));
            // Kept for whoever wants to see what went wrong; the read already reported it.
            fs::rename(dir.join(CACHE_FILE_NAME), &aside)?;
            BTreeMap::new()
        }
    };
    apply(&mut files);
    prune(dir, &mut files, server_now);

    temp.write_and_sync(&serialize(&files))?;
    // A writer that stalled past half of STALE_LOCK may have had its lock taken for abandoned:
    // then another writer may be mid-update, and our rename would drop its news. Back off and
    // merge again later.
    if !lock.is_ours() {
        return Err(WriteError::Busy);
    }
    temp.persist(&dir.join(CACHE_FILE_NAME))?;
    drop(lock);
    Ok(())
}

/// Drops the entries of files that are gone, and a dead writer's debris.
///
/// A name missing from the listing is confirmed with a stat before its entry goes: a listing
/// on a network mount can lag behind a file another host has just created.
fn prune(dir: &Path, files: &mut BTreeMap<CompactString, Entry>, server_now: SystemTime) {
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let mut present = HashSet::with_capacity(files.len());
    for item in listing {
        let Ok(item) = item else {
            // A listing cut short proves nothing about what is missing.
            return;
        };
        let name = item.file_name();
        if is_debris(&name.to_string_lossy()) {
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| server_now.duration_since(modified).ok())
                .is_some_and(|age| age > DEBRIS_AGE);
            if old {
                let _ = match item.file_type() {
                    Ok(kind) if kind.is_dir() => fs::remove_dir(item.path()),
                    _ => fs::remove_file(item.path()),
                };
            }
            continue;
        }
        if let Some(name) = key(&name) {
            present.insert(name);
        }
    }
    files.retain(|name, _| {
        present.contains(name.as_str())
            || !matches!(
                fs::symlink_metadata(dir.join(name)),
                Err(err) if err.kind() == io::ErrorKind::NotFound
            )
    });
}

/// What a cache writer may leave beside the cache when it dies: what `locks clean` looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// The update guard (or an older version's lock file), held for milliseconds: one older
    /// than the returned age on the file server's clock belonged to a writer that died.
    UpdateGuard(Duration),
    /// A temp file, a guard's tombstone or an older version's broken lock: a dead writer's
    /// once older than the returned age (as each writer's own pruning judges them).
    Debris(Duration),
}

/// What `name` is of the cache's writers' files, if anything (the cache itself is not).
pub(crate) fn leftover(name: &str) -> Option<Leftover> {
    if name == LOCK_FILE_NAME {
        Some(Leftover::UpdateGuard(STALE_LOCK))
    } else {
        is_debris(name).then_some(Leftover::Debris(DEBRIS_AGE))
    }
}

/// A temp file or broken lock left by a cache writer: a lock guard's tombstone, or an older
/// version's broken lock file.
fn is_debris(name: &str) -> bool {
    name.strip_prefix(CACHE_FILE_NAME).is_some_and(|rest| {
        (rest.starts_with('.') && rest.ends_with(".tmp"))
            || (rest.starts_with(".lock.") && rest.ends_with(".stale"))
            || rest.starts_with(".lock.tomb-")
    })
}

/// A temp file that is removed unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
    persisted: bool,
}

impl TempFile {
    fn create(path: PathBuf) -> io::Result<TempFile> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
            persisted: false,
        })
    }

    fn modified(&self) -> io::Result<SystemTime> {
        match &self.file {
            Some(file) => file.metadata()?.modified(),
            None => fs::metadata(&self.path)?.modified(),
        }
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(io::Error::other("temp file already closed"));
        };
        file.write_all(bytes)?;
        // Durable before it becomes the cache: a crash must leave the old cache or the new,
        // never an empty one. Closed before the rename, which Windows needs.
        file.sync_all()
    }

    fn persist(&mut self, to: &Path) -> io::Result<()> {
        // Readers never lock, and on Windows one that has the cache open blocks the rename.
        crate::retry::rename_over_readers(&self.path, to)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            self.file = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_lock::testing::set_mtime;

    fn age(path: &Path, secs: u64) {
        set_mtime(path, SystemTime::now() - Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn a_held_lock_makes_a_write_give_up_in_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE_NAME), b"held").unwrap();
        let started = Instant::now();
        let result = update(dir.path(), Duration::from_millis(300), |_| {});
        assert!(matches!(result, Err(WriteError::Busy)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(fs::read(dir.path().join(LOCK_FILE_NAME)).unwrap(), b"held");
        assert!(!dir.path().join(CACHE_FILE_NAME).exists());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temp file is removed: {left:?}");
    }

    #[test]
    fn a_stale_lock_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE_NAME);
        fs::write(&lock, b"left by a dead writer").unwrap();
        age(&lock, 120);
        update(dir.path(), Duration::from_millis(300), |_| {}).unwrap();
        assert!(dir.path().join(CACHE_FILE_NAME).exists());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [CACHE_FILE_NAME], "no lock, tombstone or temp left");
    }

    #[test]
    fn a_held_guard_directory_excludes_and_an_abandoned_one_is_retired() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE_NAME);
        fs::create_dir(&lock).unwrap();
        let result = update(dir.path(), Duration::from_millis(300), |_| {});
        assert!(matches!(result, Err(WriteError::Busy)), "{result:?}");
        assert!(lock.is_dir());
        age(&lock, 120);
        update(dir.path(), Duration::from_millis(300), |_| {}).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [CACHE_FILE_NAME], "no lock, tombstone or temp left");
    }

    #[test]
    fn old_debris_is_removed_and_fresh_debris_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(format!("{CACHE_FILE_NAME}.dead.tmp"));
        let fresh = dir.path().join(format!("{CACHE_FILE_NAME}.live.tmp"));
        fs::write(&old, b"").unwrap();
        fs::write(&fresh, b"").unwrap();
        age(&old, 2 * 3600);
        update(dir.path(), Duration::from_millis(300), |_| {}).unwrap();
        assert!(!old.exists());
        assert!(fresh.exists(), "another writer's temp file is not touched");
    }

    #[test]
    fn a_missing_cache_reads_as_none_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        assert!(read(dir.path()).unwrap().is_none());
        assert!(started.elapsed() < READ_RETRY_DELAY);
    }

    #[test]
    fn debris_names_are_recognised() {
        assert!(is_debris(".mediabox_cache.json.0123.tmp"));
        assert!(is_debris(".mediabox_cache.json.lock.0123.stale"));
        assert!(is_debris(".mediabox_cache.json.lock.tomb-0a1b"));
        assert!(!is_debris(".mediabox_cache.json"));
        assert!(!is_debris(".mediabox_cache.json.lock"));
        assert!(!is_debris(
            ".mediabox_cache.json.corrupt-20240101T000000Z-01234567"
        ));
    }
}
