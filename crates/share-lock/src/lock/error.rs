//! The lock errors callers branch on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A lock operation failed.
#[derive(Debug)]
pub enum LockError {
    /// Nothing can be created in `dir` (permissions, read-only share). Report it
    /// once and skip the directory: every file in it would fail the same way.
    DirectoryNotWritable {
        /// The directory.
        dir: PathBuf,
        /// The error the create returned.
        source: io::Error,
    },
    /// An I/O error on `path`.
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The media path names no file (`/`, `..`), so it can have no lock.
    NoFileName {
        /// The path given.
        path: PathBuf,
    },
    /// The lock turned out not to be ours (any more).
    Lost(LockLost),
}

impl LockError {
    /// Wraps an I/O error about `path`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
        move |source| LockError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::DirectoryNotWritable { dir, .. } => {
                write!(f, "cannot create lock files in {}", dir.display())
            }
            LockError::Io { path, .. } => write!(f, "lock I/O failed on {}", path.display()),
            LockError::NoFileName { path } => {
                write!(f, "{} names no file to lock", path.display())
            }
            LockError::Lost(lost) => lost.fmt(f),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::DirectoryNotWritable { source, .. } | LockError::Io { source, .. } => {
                Some(source)
            }
            LockError::NoFileName { .. } => None,
            LockError::Lost(lost) => lost.source(),
        }
    }
}

impl From<LockLost> for LockError {
    fn from(lost: LockLost) -> LockError {
        LockError::Lost(lost)
    }
}

/// Our claim on a file is gone, or could not be confirmed: stop working on the file
/// and touch nothing but our own temp output.
#[derive(Debug)]
pub struct LockLost {
    /// The lock file.
    pub path: PathBuf,
    /// What we found instead of our lock.
    pub reason: LostReason,
}

/// What was found where our lock should be.
#[derive(Debug)]
pub enum LostReason {
    /// No lock file at all: it was broken (and not yet re-taken).
    Missing,
    /// Another claim: our lock was broken and the file claimed again.
    Replaced {
        /// The new owner's host name, if the record names one.
        hostname: Option<String>,
    },
    /// A lock that is not a readable record (being written by someone else).
    Unreadable(String),
    /// The lock could not be read or written.
    Io(io::Error),
}

impl LockLost {
    /// Whether the lock is certainly not ours any more, rather than unconfirmed
    /// (an I/O error or an unreadable file may pass; the heartbeat retries those).
    pub fn is_definitive(&self) -> bool {
        matches!(
            self.reason,
            LostReason::Missing | LostReason::Replaced { .. }
        )
    }
}

impl fmt::Display for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.reason {
            LostReason::Missing => write!(f, "lock {path} is gone: it was broken"),
            LostReason::Replaced {
                hostname: Some(host),
            } => write!(f, "lock {path} now belongs to {host}"),
            LostReason::Replaced { hostname: None } => {
                write!(f, "lock {path} now belongs to someone else")
            }
            LostReason::Unreadable(why) => write!(f, "lock {path} cannot be confirmed: {why}"),
            LostReason::Io(_) => write!(f, "lock {path} cannot be confirmed"),
        }
    }
}

impl std::error::Error for LockLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            LostReason::Io(err) => Some(err),
            _ => None,
        }
    }
}
