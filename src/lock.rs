//! Claims on media files, as this tool uses them: the lock protocol of the `share-lock`
//! crate, plus what only a media converter knows, the names of its work files (temp
//! output, backup, kept original) and what a dead claim left of them.
//!
//! A claim broken as stale (by [`Locker::try_acquire`] on a locker made [`settling`], by
//! [`settle_dead_claims`] before a scan, or by `locks clean`) settles the dead claim's work
//! files by the last phase it wrote durably; see `docs/locking.md`.

mod maintenance;
mod names;

pub use maintenance::{
    CleanAction, CleanOptions, CleanReport, ClockSource, LockStatus, clean, list_locks,
    settle_dead_claims,
};
pub use names::{
    LOCK_SUFFIX, MAX_NAME_BYTES, WorkFileKind, WorkFileName, backup_name, fits_work_names,
    is_lock_artifact, kept_original_name, lock_path, parse_work_file_name, temp_output_name,
};
pub use share_lock::{
    Acquire, Heartbeat, Holder, HumanDuration, LiveReason, LockError, LockGuard, LockLost,
    LockRecord, LockSettings, Locker, LostReason, PHASE_CLAIMED, Progress, ShortGuard, StaleReason,
    Verdict, rename_noreplace, server_now,
};

/// The phase a swap to a new name writes, durably, before it reserves that name by
/// exclusive create: an empty file at a dead claim's name in this phase is its reservation.
pub const PHASE_SWAP_PLACING: &str = "swap:placing";
/// The phase an in-place swap writes, durably, before it renames the new file over the
/// original (which has a second name, the backup, by then).
pub const PHASE_SWAP_REPLACING: &str = "swap:replacing";
/// The phase an in-place swap without hard links writes, durably, before it renames the
/// original to the backup name.
pub const PHASE_SWAP_ORIGINAL_AT_BACKUP: &str = "swap:original-at-backup";
/// The phase a swap writes, durably, once the new file is in place and before the
/// original's other name is removed: a dead claim's backup is then debris.
pub const PHASE_SWAP_DONE: &str = "swap:done";
/// Appended to a swap phase with `--keep-original`: a dead claim's backup is then the
/// original to keep aside (`swap:done:keeping-original`).
pub const PHASE_KEEPING_SUFFIX: &str = ":keeping-original";

/// `locker`, made to settle the work files of every dead claim it breaks on its way to a
/// claim: its temp output (gigabytes, hidden) is removed and its backup restored, removed
/// or kept aside at once, not left for a `locks clean` nobody may run.
pub fn settling(locker: Locker) -> Locker {
    locker.on_break(|lock, holder| {
        maintenance::settle_dead_claim(lock, holder, false);
    })
}

#[cfg(test)]
mod tests;
