//! The protocol's thresholds.

use std::time::Duration;

/// How often owners heartbeat and how long others wait before breaking a lock.
///
/// Network file systems show other hosts' changes late (about 1 s on SMB, 20 s on
/// sshfs, up to 60 s in NFS attribute caches), so every wait here must dwarf that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// How often an owner rewrites its lock while working.
    pub heartbeat: Duration,
    /// After how long without a heartbeat (on the file server's clock) another host
    /// may break a lock.
    pub stale_after: Duration,
    /// How long an empty or unparseable lock is taken to be mid-write.
    pub unreadable_grace: Duration,
    /// After how long a break guard (held for milliseconds normally) is taken to be
    /// left by a crashed breaker.
    pub guard_timeout: Duration,
}

impl Default for LockSettings {
    fn default() -> LockSettings {
        LockSettings {
            heartbeat: Duration::from_secs(60),
            stale_after: Duration::from_secs(30 * 60),
            // A healthy lock reads as unparseable only for the instant between create
            // and write, or while a heartbeat rewrites it in place. But the mtime a
            // reader sees may be a cached one up to a heartbeat plus an attribute
            // cache (60 s + 60 s) old, so the grace must exceed both. A lock left
            // empty by a crash is rare and costs only this wait.
            unreadable_grace: Duration::from_secs(3 * 60),
            // A guard is held for the milliseconds a break takes; an older one was
            // left by a breaker that crashed or stalls. Breaking a stalled breaker's
            // guard is still safe (the tombstone check catches a displaced lock), so
            // this need only outlast ordinary NFS stalls.
            guard_timeout: Duration::from_secs(2 * 60),
        }
    }
}
