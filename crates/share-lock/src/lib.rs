//! How independent hosts agree through nothing but a shared directory.
//!
//! Hosts that share a network directory (NFS, SMB, sshfs) and nothing else, not even a
//! clock, claim files in it with no coordinator. This crate is that agreement:
//!
//! - **The claim** ([`Locker`], [`LockGuard`], [`Heartbeat`]): a lock file
//!   `<name>.mediabox.lock` beside the claimed file, created under an `mkdir` guard,
//!   holding one [`LockRecord`] with a random lock id (the one nonce every other name
//!   is derived from), rewritten by a heartbeat, judged stale only on the file
//!   server's clock, broken only by the guarded protocol and removed only by a rename
//!   to a tombstone whose content is checked.
//! - **Short guards** ([`ShortGuard`]): the `mkdir` guard the claim takes around its
//!   own creation and breaking, for any other short critical section on the share (a
//!   read-merge-write of a shared file).
//! - **The file server's clock** ([`server_now`]): learned from a probe file the server
//!   stamps, never this host's.
//! - **Fresh reads** ([`fresh`]): a file's size, mtime and content as the server has
//!   them now, past the caches of network clients.
//! - **Who is running** ([`identity`]): host ids and process start tokens that tell a
//!   dead claimant from a live one on the same host, across pid namespaces and reboots.
//! - **Patience** ([`retry`]): the one backoff for operations refused because another
//!   client has the file open.
//!
//! The crate knows nothing of what is claimed: what a claimant does with the file, and
//! what must be tidied when a dead claim is broken, belong to the caller ([`Locker::on_break`],
//! [`Locker::break_if_stale`]). The protocol, the interleavings it survives and what each
//! kind of share was measured to guarantee are in the repository's `docs/locking.md`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use share_lock::identity::HostIdentity;
//! use share_lock::{Acquire, Heartbeat, LockSettings, Locker};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let share = std::env::temp_dir().join(format!("share-lock-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&share)?;
//! let film = share.join("Movie1.mkv");
//!
//! let host = HostIdentity {
//!     hostname: "nas-a".into(),
//!     host_id: "id-nas-a".into(),
//! };
//! let locker = Locker::new(host, LockSettings::default());
//! let Acquire::Acquired(guard) = locker.try_acquire(&film)? else {
//!     return Err("someone else holds it".into());
//! };
//! // Another locker (another host) finds the claim live and is told who holds it.
//! let other = Locker::new(
//!     HostIdentity { hostname: "nas-b".into(), host_id: "id-nas-b".into() },
//!     LockSettings::default(),
//! );
//! match other.try_acquire(&film)? {
//!     Acquire::Held(holder) => assert_eq!(holder.hostname.as_deref(), Some("nas-a")),
//!     Acquire::Acquired(_) => unreachable!("two holders at once"),
//! }
//!
//! // Keep the claim alive while working; the phase is for `locks list` on any host.
//! let guard = Arc::new(guard);
//! let heartbeat = Heartbeat::start(Arc::clone(&guard), Duration::from_secs(60))?;
//! heartbeat.set_phase("working");
//! heartbeat.beat_now()?;
//! heartbeat.stop();
//!
//! // Releasing checks the claim is still ours and leaves nothing behind.
//! Arc::try_unwrap(guard).map_err(|_| "still shared")?.release()?;
//! assert_eq!(std::fs::read_dir(&share)?.count(), 0);
//! # std::fs::remove_dir(&share)?;
//! # Ok(())
//! # }
//! ```

pub mod fresh;
pub mod identity;
mod lock;
pub mod names;
pub mod retry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use lock::{
    Abandoned, Acquire, BreakOutcome, Heartbeat, Holder, HumanDuration, LiveReason, LockError,
    LockGuard, LockLost, LockRecord, LockSettings, Locker, LostReason, PHASE_CLAIMED, Progress,
    RecordError, ShortGuard, StaleReason, Verdict, remove_guard_entry, remove_if_present,
    rename_noreplace, server_now,
};
pub use names::lock_path;
