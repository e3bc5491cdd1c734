//! The names of the files the protocol makes beside a claimed file: the lock, its two guard
//! directories, tombstones and clock probes.
//!
//! They live in one place so that the code that creates them and the code that must
//! recognise them (a scan that skips them, a clean-up that removes them) can never disagree.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `bytes` random bytes as lowercase hex: the one source of unique names on the share (lock
/// ids, tombstones, clock probes, and its users' temp files). From the OS; without OS
/// randomness, the time and the pid still make a name no other process uses.
pub fn unique_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    if getrandom::fill(&mut buffer).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = nanos
            .to_le_bytes()
            .into_iter()
            .chain(std::process::id().to_le_bytes());
        for (byte, from) in buffer.iter_mut().zip(seed.cycle()) {
            *byte = from;
        }
    }
    buffer.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Appended to a file's name to name its lock: `Movie1.mkv.mediabox.lock`.
pub const LOCK_SUFFIX: &str = ".mediabox.lock";
/// Appended to a lock's name to name the guard directory taken while breaking it.
pub const GUARD_SUFFIX: &str = ".break";
/// Appended to a lock's name to name the guard directory that serializes the hosts
/// creating it (`mkdir` is exclusive on every share; exclusive create is not on
/// smbnetfs).
pub const ACQUIRE_SUFFIX: &str = ".acquire";
/// Both guard suffixes.
const GUARD_SUFFIXES: [&str; 2] = [GUARD_SUFFIX, ACQUIRE_SUFFIX];
/// Appended (with random hex) to a lock or guard being retired.
pub const TOMB_MARK: &str = ".tomb-";
/// Start of the name of a probe file that learns the file server's clock.
pub const CLOCK_PROBE_PREFIX: &str = ".mediabox.clock-";
/// A lock id is 128 random bits in lowercase hex.
pub const LOCK_ID_HEX_LEN: usize = 32;

/// The lock file that claims `target`, beside it; `None` when `target` names no file
/// (`/`, `..`).
pub fn lock_path(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?;
    let mut lock = name.to_owned();
    lock.push(LOCK_SUFFIX);
    Some(target.with_file_name(lock))
}

/// The guard directory taken while breaking `lock`.
pub fn guard_path(lock: &Path) -> PathBuf {
    with_suffix(lock, GUARD_SUFFIX)
}

/// The guard directory taken while creating `lock`.
pub fn acquire_guard_path(lock: &Path) -> PathBuf {
    with_suffix(lock, ACQUIRE_SUFFIX)
}

/// A unique name beside `path` to retire it to.
pub fn tomb_path(path: &Path, random_hex: &str) -> PathBuf {
    with_suffix(path, &format!("{TOMB_MARK}{random_hex}"))
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Whether `text` has the shape of a lock id (what [`crate::Locker`] generates).
pub fn is_lock_id(text: &[u8]) -> bool {
    text.len() == LOCK_ID_HEX_LEN && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file of the protocol, recognised by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolFile {
    /// `<target>.mediabox.lock`, with the name of the file it claims.
    Lock {
        /// The claimed file's name.
        target_name: OsString,
    },
    /// `<target>.mediabox.lock.break` or `<target>.mediabox.lock.acquire`: a directory
    /// (or, from older versions, a file) held for milliseconds.
    Guard,
    /// A lock or guard renamed aside while being retired.
    Tombstone,
    /// A probe left by a crash while learning the server's clock.
    ClockProbe,
}

/// What `file_name` is, if the protocol made it.
pub fn classify(file_name: &OsStr) -> Option<ProtocolFile> {
    let bytes = file_name.as_encoded_bytes();
    if let Some(target_name) = bytes.strip_suffix(LOCK_SUFFIX.as_bytes()) {
        if target_name.is_empty() {
            return None;
        }
        return os_string_from(target_name).map(|target_name| ProtocolFile::Lock { target_name });
    }
    // No string built per suffix: a library walk asks this of every name it lists.
    if GUARD_SUFFIXES.iter().any(|suffix| {
        bytes
            .strip_suffix(suffix.as_bytes())
            .is_some_and(|head| head.ends_with(LOCK_SUFFIX.as_bytes()))
    }) {
        return Some(ProtocolFile::Guard);
    }
    if is_tombstone(bytes) {
        return Some(ProtocolFile::Tombstone);
    }
    if bytes
        .strip_prefix(CLOCK_PROBE_PREFIX.as_bytes())
        .is_some_and(is_hex)
    {
        return Some(ProtocolFile::ClockProbe);
    }
    None
}

fn is_tombstone(name: &[u8]) -> bool {
    let mark = TOMB_MARK.as_bytes();
    let Some(at) = (0..name.len().saturating_sub(mark.len()) + 1)
        .rev()
        .find(|&at| name[at..].starts_with(mark))
    else {
        return false;
    };
    let (head, random) = (&name[..at], &name[at + mark.len()..]);
    let head = GUARD_SUFFIXES
        .iter()
        .find_map(|suffix| head.strip_suffix(suffix.as_bytes()))
        .unwrap_or(head);
    is_hex(random) && head.ends_with(LOCK_SUFFIX.as_bytes())
}

fn is_hex(text: &[u8]) -> bool {
    !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Rebuilds a name from a slice of an `OsStr`'s encoded bytes cut at ASCII
/// boundaries. Unix names are bytes; on other platforms a name that is not UTF-8 is
/// left alone (`None`) rather than converted unsafely.
#[cfg(unix)]
pub fn os_string_from(bytes: &[u8]) -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    Some(OsStr::from_bytes(bytes).to_owned())
}

/// Rebuilds a name from a slice of an `OsStr`'s encoded bytes cut at ASCII
/// boundaries. Unix names are bytes; on other platforms a name that is not UTF-8 is
/// left alone (`None`) rather than converted unsafely.
#[cfg(not(unix))]
pub fn os_string_from(bytes: &[u8]) -> Option<OsString> {
    std::str::from_utf8(bytes).ok().map(OsString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(text: &str) -> &OsStr {
        OsStr::new(text)
    }

    #[test]
    fn every_protocol_file_is_recognised_and_nothing_else() {
        let lock = lock_path(Path::new("Movie1.mkv")).unwrap_or_default();
        assert_eq!(lock, Path::new("Movie1.mkv.mediabox.lock"));
        for (path, kind) in [
            (guard_path(&lock), ProtocolFile::Guard),
            (acquire_guard_path(&lock), ProtocolFile::Guard),
            (tomb_path(&lock, "00ff"), ProtocolFile::Tombstone),
            (
                tomb_path(&guard_path(&lock), "00ff"),
                ProtocolFile::Tombstone,
            ),
            (
                tomb_path(&acquire_guard_path(&lock), "00ff"),
                ProtocolFile::Tombstone,
            ),
        ] {
            assert_eq!(classify(path.as_os_str()), Some(kind), "{}", path.display());
        }
        assert_eq!(
            classify(lock.as_os_str()),
            Some(ProtocolFile::Lock {
                target_name: "Movie1.mkv".into()
            })
        );
        assert_eq!(
            classify(os(".mediabox.clock-0a1b")),
            Some(ProtocolFile::ClockProbe)
        );
        for other in [
            "Movie1.mkv",
            ".mediabox.lock",
            ".mediabox.clock-",
            ".mediabox.clock-xyz",
            "Movie1.mkv.tomb-00ff",
            "Movie1.mkv.mediabox.lock.tomb-",
            "Movie1.mkv.mediabox.lock.tomb-zz",
        ] {
            assert_eq!(classify(os(other)), None, "{other}");
        }
    }

    #[test]
    fn lock_ids_are_32_lowercase_hex_digits() {
        assert!(is_lock_id(b"0123456789abcdef0123456789abcdef"));
        assert!(!is_lock_id(b"0123456789ABCDEF0123456789abcdef"));
        assert!(!is_lock_id(b"0123456789abcdef"));
    }

    #[test]
    fn a_bare_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("a.lock")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/m/a.lock")), Path::new("/m"));
    }
}
