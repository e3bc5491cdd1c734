//! `locks list` and `locks clean`: every lock under a directory, and the debris that
//! crashed runs leave beside media files.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime};

use walkdir::WalkDir;

use share_lock::names::parent_dir;
use share_lock::{
    Abandoned, BreakOutcome, Holder, HumanDuration, LiveReason, LockError, Locker, Verdict,
    remove_guard_entry, remove_if_present, rename_noreplace,
};

use super::names::{
    Artifact, LOCK_SUFFIX, WorkFileKind, WorkFileName, classify, kept_original_name,
    parse_work_file_name,
};
use super::{
    PHASE_KEEPING_SUFFIX, PHASE_SWAP_DONE, PHASE_SWAP_ORIGINAL_AT_BACKUP, PHASE_SWAP_PLACING,
    PHASE_SWAP_REPLACING,
};
use crate::cache::{self, Leftover};

/// One lock found by [`list_locks`].
#[derive(Debug, Clone, PartialEq)]
pub struct LockStatus {
    /// The lock file.
    pub lock_path: PathBuf,
    /// The media file it claims.
    pub media_path: PathBuf,
    /// Who holds it, how long since its last heartbeat, and the verdict.
    pub holder: Holder,
    /// Which clock the age was measured on.
    pub clock: ClockSource,
}

/// The clock a listed lock's age was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    /// The file server's, as the protocol requires.
    Server,
    /// Ours, because no probe file could be created (a read-only share): ages and
    /// verdicts are then only as good as the agreement of the two clocks.
    Local,
}

/// Every lock under `dir` (recursively), judged. Errors (an unreadable directory
/// or lock) are listed in place; a lock that vanishes while we look is skipped.
pub fn list_locks(dir: &Path, locker: &Locker) -> Vec<Result<LockStatus, LockError>> {
    walk(dir)
        .filter_map(|entry| {
            let (lock, artifact) = match entry {
                Ok(found) => found,
                Err(err) => return Some(Err(err)),
            };
            let Item::Ours(Artifact::Lock { media_name }) = artifact else {
                return None;
            };
            let status = inspect_for_listing(locker, &lock).transpose()?;
            Some(status.map(|(holder, clock)| LockStatus {
                media_path: parent_dir(&lock).join(media_name),
                lock_path: lock,
                holder,
                clock,
            }))
        })
        .collect()
}

fn inspect_for_listing(
    locker: &Locker,
    lock: &Path,
) -> Result<Option<(Holder, ClockSource)>, LockError> {
    let (now, clock) = match locker.server_now(parent_dir(lock)) {
        Ok(now) => (now, ClockSource::Server),
        Err(_) => (locker.wall_now(), ClockSource::Local),
    };
    Ok(locker.inspect_at(lock, now)?.map(|holder| (holder, clock)))
}

/// What [`clean`] did, or would do in a dry run.
#[derive(Debug, Clone, PartialEq)]
pub enum CleanAction {
    /// Broke a stale lock by the protocol.
    BrokeStaleLock {
        /// The lock file.
        lock: PathBuf,
        /// Whose it was, and why it was stale.
        holder: Holder,
    },
    /// Retired a guard (acquire or break) left by a crashed host.
    BrokeStaleGuard {
        /// The guard directory (or, from an older version, file).
        guard: PathBuf,
    },
    /// Removed a tombstone left by a crash mid-break or mid-release.
    RemovedTombstone {
        /// The tombstone.
        path: PathBuf,
    },
    /// Removed a clock probe left by a crash.
    RemovedClockProbe {
        /// The probe file.
        path: PathBuf,
    },
    /// Retired the cache's update guard, left by a writer that died holding it.
    BrokeCacheGuard {
        /// The guard directory (or, from an older version, file).
        guard: PathBuf,
    },
    /// Removed a temp file or tombstone a cache writer left.
    RemovedCacheDebris {
        /// The file or directory.
        path: PathBuf,
    },
    /// Removed a transcode output no live claim owns.
    RemovedTempOutput {
        /// The temp output.
        path: PathBuf,
    },
    /// Removed the backup of an original that is back in place.
    RemovedBackup {
        /// The backup.
        path: PathBuf,
    },
    /// A swap died with the original under its backup name: renamed it back.
    RestoredOriginal {
        /// Where the original was.
        backup: PathBuf,
        /// Where it is again.
        original: PathBuf,
    },
    /// A swap to a new name died after reserving it: removed the empty reservation.
    RemovedReservation {
        /// The reserved name.
        path: PathBuf,
    },
    /// A swap with `--keep-original` died after the new file was in place: moved the
    /// original from its backup name to its kept name.
    KeptOriginal {
        /// Where the original was.
        backup: PathBuf,
        /// Where it is kept now.
        kept: PathBuf,
    },
    /// Left a file no claim owns, because it may be the only copy of something.
    KeptOrphan {
        /// The file.
        path: PathBuf,
        /// Why it stays.
        why: &'static str,
    },
}

impl fmt::Display for CleanAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CleanAction::BrokeStaleLock { lock, holder } => {
                write!(f, "broke stale lock {} ({holder})", lock.display())
            }
            CleanAction::BrokeStaleGuard { guard } => {
                write!(f, "broke abandoned guard {}", guard.display())
            }
            CleanAction::RemovedTombstone { path } => {
                write!(f, "removed tombstone {}", path.display())
            }
            CleanAction::RemovedClockProbe { path } => {
                write!(f, "removed clock probe {}", path.display())
            }
            CleanAction::BrokeCacheGuard { guard } => {
                write!(
                    f,
                    "broke the cache's abandoned update guard {}",
                    guard.display()
                )
            }
            CleanAction::RemovedCacheDebris { path } => {
                write!(f, "removed a cache writer's leftover {}", path.display())
            }
            CleanAction::RemovedTempOutput { path } => {
                write!(f, "removed abandoned output {}", path.display())
            }
            CleanAction::RemovedBackup { path } => {
                write!(f, "removed backup of a swapped original {}", path.display())
            }
            CleanAction::RestoredOriginal { backup, original } => write!(
                f,
                "restored original {} from {}",
                original.display(),
                backup.display()
            ),
            CleanAction::RemovedReservation { path } => write!(
                f,
                "removed the empty reservation {} of a placement that died",
                path.display()
            ),
            CleanAction::KeptOriginal { backup, kept } => write!(
                f,
                "kept the original {} as {}",
                backup.display(),
                kept.display()
            ),
            CleanAction::KeptOrphan { path, why } => write!(f, "kept {}: {why}", path.display()),
        }
    }
}

impl CleanAction {
    /// The file or directory the action was about.
    pub fn path(&self) -> &Path {
        match self {
            CleanAction::BrokeStaleLock { lock: path, .. }
            | CleanAction::BrokeStaleGuard { guard: path }
            | CleanAction::RemovedTombstone { path }
            | CleanAction::RemovedClockProbe { path }
            | CleanAction::BrokeCacheGuard { guard: path }
            | CleanAction::RemovedCacheDebris { path }
            | CleanAction::RemovedTempOutput { path }
            | CleanAction::RemovedBackup { path }
            | CleanAction::RemovedReservation { path }
            | CleanAction::RestoredOriginal { backup: path, .. }
            | CleanAction::KeptOriginal { backup: path, .. }
            | CleanAction::KeptOrphan { path, .. } => path,
        }
    }
}

/// How [`clean`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOptions {
    /// Say what would be done, and change nothing.
    pub dry_run: bool,
    /// The user says no run is active on the library, on any host: whatever is ours goes,
    /// however young, once [`clean`] has looked for an active run itself and seen none.
    pub force: bool,
}

/// The outcome of [`clean`].
#[derive(Debug, Default)]
pub struct CleanReport {
    /// Whether this was a dry run (`actions` then says what would be done).
    pub dry_run: bool,
    /// With [`CleanOptions::force`]: the active run that was seen, and nothing was done.
    pub refused: Option<String>,
    /// What was done, in order.
    pub actions: Vec<CleanAction>,
    /// Locks left alone because they are live (or another host is breaking them).
    pub live_locks: usize,
    /// What could not be done; a directory that cannot be written is reported once.
    pub errors: Vec<LockError>,
}

/// Breaks the stale locks under `dir` (recursively) by the protocol, then removes
/// the debris no live claim owns: tombstones, abandoned acquire and break guards,
/// clock probes, the cache's abandoned update guard and its writers' leftovers, temp
/// outputs and backups whose lock id is not that of a live lock.
///
/// By default only what is certainly dead goes, judged from fresh reads: a lock by the
/// protocol's verdict, a tombstone of a lock by the record it holds, a guard or probe (which
/// say nothing of their owner) by its age on the file server's clock. With
/// [`CleanOptions::force`] the user says no run is active: locks, guards, probes and
/// tombstones go whatever their age, after a look for an active run (a lock whose process
/// runs on this host, or one that changes while watched for a heartbeat) that refuses the
/// whole clean if it sees one.
///
/// An original is never lost, in either mode: a backup whose original name is missing (a
/// swap that died midway) is renamed back instead of deleted, and a temp output whose
/// original is missing is kept. With `dry_run`, nothing is changed and the report says
/// what would be.
pub fn clean(dir: &Path, locker: &Locker, options: CleanOptions) -> CleanReport {
    let mut cleaner = Cleaner {
        locker,
        force: options.force,
        report: CleanReport {
            dry_run: options.dry_run,
            ..CleanReport::default()
        },
        unwritable: HashSet::new(),
        work: WorkFiles::new(options.dry_run),
        handled: HashSet::new(),
    };
    let mut found = Vec::new();
    for entry in walk(dir) {
        match entry {
            Ok(entry) => found.push(entry),
            Err(err) => cleaner.report.errors.push(err),
        }
    }
    let locks: Vec<&Path> = found
        .iter()
        .filter(|(_, item)| matches!(item, Item::Ours(Artifact::Lock { .. })))
        .map(|(path, _)| path.as_path())
        .collect();
    if options.force {
        cleaner.report.refused = active_run(locker, dir, &locks);
        if cleaner.report.refused.is_some() {
            return cleaner.report;
        }
    }
    // Guards before locks: a break guard left by a crash would keep its lock from being
    // broken.
    for (path, item) in &found {
        match item {
            Item::Ours(Artifact::Lock { .. } | Artifact::Work(_)) => {}
            Item::Ours(Artifact::Guard) => cleaner.step(path, Cleaner::guard),
            Item::Ours(Artifact::Tombstone) => cleaner.step(path, Cleaner::tombstone),
            Item::Ours(Artifact::ClockProbe) => cleaner.step(path, Cleaner::clock_probe),
            Item::Cache(leftover) => {
                cleaner.step(path, |cleaner, path| {
                    cleaner.cache_leftover(path, *leftover)
                });
            }
        }
    }
    // Locks next: whether a temp output is debris depends on the lock that survives. And
    // each work file's lock is read only after the file was listed: a claim creates its
    // lock before its temp output, so a lock missing now was released, not yet to come.
    for lock in &locks {
        cleaner.step(lock, Cleaner::lock);
    }
    // Backups before temp outputs: a temp output whose original is missing is
    // kept, and restoring a backup is what brings the original back.
    for kind in [WorkFileKind::Backup, WorkFileKind::TempOutput] {
        for (path, item) in &found {
            if let Item::Ours(Artifact::Work(work)) = item {
                if work.kind == kind {
                    cleaner.step(path, |cleaner, path| cleaner.work_file(path, work));
                }
            }
        }
    }
    cleaner.report
}

/// For `locks clean --force`: a sign that a run is active after all, said for people, or
/// `None`. A host's presence record (`--dir` runs publish one at the library's root) that
/// says it runs and has not gone quiet is one, unless its process is gone from this host; a
/// lock whose process runs on this host is one; a lock judged live for any other reason (a
/// recent heartbeat, a record still being written, clocks that disagree) is watched for one
/// heartbeat and a half: a live owner rewrites it in that time, a dead one cannot. Guards
/// and probes say nothing of their owner and live for milliseconds: a `--file` run between
/// its claims is not seen (`docs/locking.md`).
fn active_run(locker: &Locker, dir: &Path, locks: &[&Path]) -> Option<String> {
    if let Some(host) = present_host(locker, dir) {
        return Some(host);
    }
    let mut watched = Vec::new();
    for &lock in locks {
        let Ok(Some(holder)) = locker.inspect(lock) else {
            continue;
        };
        let Ok(Some(bytes)) = locker.lock_bytes(lock) else {
            continue;
        };
        match holder.verdict {
            Verdict::Stale(_) => {}
            Verdict::Live(LiveReason::OwnerRunning { pid }) => {
                return Some(format!(
                    "a run is active: pid {pid} on this host holds {}",
                    lock.display()
                ));
            }
            Verdict::Live(_) => watched.push((lock, bytes, holder)),
        }
    }
    if watched.is_empty() {
        return None;
    }
    let heartbeat = locker.settings().heartbeat;
    thread::sleep(heartbeat + heartbeat / 2 + Duration::from_secs(1));
    for (lock, bytes, holder) in watched {
        let now = locker.lock_bytes(lock).ok().flatten();
        if now.is_none_or(|now| now != bytes) {
            return Some(format!(
                "a run is active: {} changed while watched (held by {} pid {})",
                lock.display(),
                holder.hostname.as_deref().unwrap_or("an unknown host"),
                holder.pid.map_or("?".to_owned(), |pid| pid.to_string()),
            ));
        }
    }
    None
}

/// A host whose presence record, in `dir`'s library (the presence folder is at its root:
/// `dir` or one of its parents), says it is running now; `None` when none does.
fn present_host(locker: &Locker, dir: &Path) -> Option<String> {
    use crate::identity::{Liveness, process_liveness};
    use crate::presence::{self, HostState};
    let root = dir
        .ancestors()
        .find(|at| at.join(presence::PRESENCE_DIR).is_dir())?;
    let found = presence::read_all(root);
    let unchanged = presence::by_server_clock(root, &found);
    found.iter().zip(unchanged).find_map(|(found, unchanged)| {
        let record = found.record.as_ref().ok()?;
        let state = presence::judge(record, unchanged);
        if !matches!(state, HostState::Working | HostState::Idle) {
            return None;
        }
        let gone_from_here = record.host_id == locker.identity().host_id
            && process_liveness(record.pid, record.process_start.as_deref()) == Liveness::Gone;
        (!gone_from_here).then(|| {
            format!(
                "a run is active: {} pid {} is {} (its presence record {}); a run that \
                 crashed counts as active until its record goes quiet ({})",
                record.host,
                record.pid,
                state.word(),
                found.path.display(),
                HumanDuration(record.quiet_after()),
            )
        })
    })
}

/// Settles, before a run scans `dir`, the claims that died there: breaks every stale lock
/// (live ones are left alone), which settles the dead claim's work files (see
/// [`Locker::try_acquire`]). A scan alone would miss those whose file it never claims: an
/// original a swap left at its backup name (nothing at its own name to scan), or a
/// converted file whose `--keep-original` copy is still at its backup name (already
/// HEVC, so never claimed again). What was done is returned.
pub fn settle_dead_claims(dir: &Path, locker: &Locker) -> Vec<CleanAction> {
    let mut actions = Vec::new();
    for (lock, item) in walk(dir).flatten() {
        if !matches!(item, Item::Ours(Artifact::Lock { .. })) {
            continue;
        }
        if let Ok(BreakOutcome::Broken(holder, settled)) = locker.break_if_stale(&lock, settle_now)
        {
            actions.push(CleanAction::BrokeStaleLock { lock, holder });
            actions.extend(settled.actions.into_iter().flatten());
        }
    }
    actions
}

/// What [`walk`] finds.
#[derive(Debug)]
enum Item {
    /// A file of the claim protocol or the swap.
    Ours(Artifact),
    /// The cache's update guard, or a leftover of its writers.
    Cache(Leftover),
}

/// Every artifact of ours under `dir`, in a stable order: files, and the guard
/// directories and their tombstones; the cache writers' guard and leftovers too.
fn walk(dir: &Path) -> impl Iterator<Item = Result<(PathBuf, Item), LockError>> + '_ {
    let item = |name: &std::ffi::OsStr| {
        classify(name)
            .map(Item::Ours)
            .or_else(|| cache::leftover(&name.to_string_lossy()).map(Item::Cache))
    };
    WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(move |entry| match entry {
            Ok(entry) if entry.file_type().is_file() => {
                let item = item(entry.file_name())?;
                Some(Ok((entry.into_path(), item)))
            }
            Ok(entry) if entry.file_type().is_dir() && entry.depth() > 0 => {
                let item = item(entry.file_name())?;
                matches!(
                    item,
                    Item::Ours(Artifact::Guard | Artifact::Tombstone) | Item::Cache(_)
                )
                .then(|| Ok((entry.into_path(), item)))
            }
            Ok(_) => None,
            Err(err) => {
                let path = err.path().unwrap_or(dir).to_owned();
                let source = match err.into_io_error() {
                    Some(source) => source,
                    None => io::Error::other("symbolic link loop"),
                };
                Some(Err(LockError::Io { path, source }))
            }
        })
}

struct Cleaner<'a> {
    locker: &'a Locker,
    /// `locks clean --force`: no run is active, whatever is ours goes, however young.
    force: bool,
    report: CleanReport,
    unwritable: HashSet<PathBuf>,
    /// What was done to work files, and which originals came back.
    work: WorkFiles,
    /// Work files already dealt with when their dead claim's lock was broken.
    handled: HashSet<PathBuf>,
}

impl Cleaner<'_> {
    /// Runs one step, recording its error; once a directory proved unwritable its
    /// other files are skipped rather than reported one by one.
    fn step(&mut self, path: &Path, step: impl FnOnce(&mut Self, &Path) -> Result<(), LockError>) {
        if self.unwritable.contains(parent_dir(path)) {
            return;
        }
        if let Err(err) = step(self, path) {
            if let LockError::DirectoryNotWritable { dir, .. } = &err {
                self.unwritable.insert(dir.clone());
            }
            self.report.errors.push(err);
        }
    }

    fn act(&mut self, action: CleanAction) {
        self.report.actions.push(action);
    }

    fn lock(&mut self, lock: &Path) -> Result<(), LockError> {
        let outcome = if self.report.dry_run {
            match self.locker.inspect(lock)? {
                Some(holder) if self.force || holder.verdict.is_stale() => {
                    let settled = settle_dead_claim(lock, &holder, true);
                    BreakOutcome::Broken(holder, settled)
                }
                Some(holder) => BreakOutcome::Live(holder),
                None => BreakOutcome::Vanished,
            }
        } else if self.force {
            self.locker.break_assumed_dead(lock, settle_now)?
        } else {
            self.locker.break_if_stale(lock, settle_now)?
        };
        match outcome {
            BreakOutcome::Broken(holder, settled) => {
                self.act(CleanAction::BrokeStaleLock {
                    lock: lock.to_owned(),
                    holder,
                });
                for result in settled.actions {
                    match result {
                        Ok(action) => {
                            self.handled.insert(action.path().to_owned());
                            self.act(action);
                        }
                        Err(err) => self.report.errors.push(err),
                    }
                }
                self.work.restored.extend(settled.restored);
            }
            BreakOutcome::Live(_) | BreakOutcome::Busy(_) => self.report.live_locks += 1,
            BreakOutcome::Vanished => {}
        }
        Ok(())
    }

    fn guard(&mut self, guard: &Path) -> Result<(), LockError> {
        if self.retire_guard(guard, self.locker.settings().guard_timeout)? {
            self.act(CleanAction::BrokeStaleGuard {
                guard: guard.to_owned(),
            });
        }
        Ok(())
    }

    /// Retires a guard older than `timeout` on the server's clock (with `--force`, of any
    /// age); whether it did (or, in a dry run, would).
    fn retire_guard(&mut self, guard: &Path, timeout: Duration) -> Result<bool, LockError> {
        let timeout = if self.force { Duration::ZERO } else { timeout };
        if self.report.dry_run {
            return self.is_older_than(guard, timeout);
        }
        Ok(self.locker.retire_guard_older_than(guard, timeout)? == Abandoned::Retired)
    }

    fn cache_leftover(&mut self, path: &Path, leftover: Leftover) -> Result<(), LockError> {
        match leftover {
            Leftover::UpdateGuard(timeout) => {
                if self.retire_guard(path, timeout)? {
                    self.act(CleanAction::BrokeCacheGuard {
                        guard: path.to_owned(),
                    });
                }
            }
            Leftover::Debris(age) => {
                if !self.force && !self.is_older_than(path, age)? {
                    return Ok(());
                }
                self.remove_entry(path)?;
                self.act(CleanAction::RemovedCacheDebris {
                    path: path.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// A tombstone lives for the milliseconds between a rename and a delete. A lock's
    /// holds the record it was renamed with: a live one may be put back, so it goes only
    /// once that record is judged stale (its process gone from this host, or silent past
    /// `stale_after`). A guard's goes once older than `guard_timeout`: only a younger one
    /// is ever put back. With `--force`, any.
    fn tombstone(&mut self, path: &Path) -> Result<(), LockError> {
        let is_dir = fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
        let dead = self.force
            || if is_dir {
                self.is_older_than(path, self.locker.settings().guard_timeout)?
            } else {
                self.locker
                    .inspect(path)?
                    .is_none_or(|holder| holder.verdict.is_stale())
            };
        if !dead {
            return Ok(());
        }
        self.remove_entry(path)?;
        self.act(CleanAction::RemovedTombstone {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn clock_probe(&mut self, path: &Path) -> Result<(), LockError> {
        if !self.force && !self.is_older_than(path, self.locker.settings().guard_timeout)? {
            return Ok(());
        }
        self.remove(path)?;
        self.act(CleanAction::RemovedClockProbe {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn work_file(&mut self, path: &Path, work: &WorkFileName) -> Result<(), LockError> {
        if self.handled.contains(path) {
            return Ok(());
        }
        let dir = parent_dir(path);
        let mut lock_name = work.media_name.clone();
        lock_name.push(LOCK_SUFFIX);
        if self.owned_by_live_lock(&dir.join(lock_name), &work.lock_id)? {
            return Ok(());
        }
        // Without the lock's record nobody can tell how far its swap got.
        if let Some(action) = self.work.settle(path, work, None)? {
            self.act(action);
        }
        Ok(())
    }

    /// Whether a live lock may own work files made under `lock_id`. A live lock
    /// whose id we cannot read (unreadable, legacy) may be the owner: keep.
    fn owned_by_live_lock(&self, lock: &Path, lock_id: &str) -> Result<bool, LockError> {
        Ok(match self.locker.inspect(lock)? {
            None => false,
            Some(holder) if holder.verdict.is_stale() => false,
            Some(holder) => holder.lock_id.as_deref().is_none_or(|id| id == lock_id),
        })
    }

    fn is_older_than(&self, path: &Path, limit: std::time::Duration) -> Result<bool, LockError> {
        // A directory (a guard's tombstone) cannot be opened everywhere (Windows).
        let meta = crate::fresh::metadata(path).or_else(|_| fs::symlink_metadata(path));
        let mtime = match meta.and_then(|meta| meta.modified()) {
            Ok(mtime) => mtime,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(LockError::io(path)(err)),
        };
        let now: SystemTime = self.locker.server_now(parent_dir(path))?;
        Ok(now.duration_since(mtime).is_ok_and(|age| age >= limit))
    }

    fn remove(&self, path: &Path) -> Result<(), LockError> {
        if self.report.dry_run {
            return Ok(());
        }
        remove_if_present(path).map_err(LockError::io(path))
    }

    /// Removes a file, or an empty directory (a guard's tombstone).
    fn remove_entry(&self, path: &Path) -> Result<(), LockError> {
        if self.report.dry_run {
            return Ok(());
        }
        let is_dir = fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
        remove_guard_entry(path, is_dir).map_err(LockError::io(path))
    }
}

/// What stands at a work file's original name.
enum Original {
    Present,
    Missing,
    Empty,
    NotAFile,
}

/// Read past network clients' caches (`fresh::metadata`): a size cached as 0 would have a
/// backup renamed over content, a stale "present" would have a temp output removed that
/// may be the only copy.
fn original_state(original: &Path) -> Result<Original, LockError> {
    let not_found = |err: &io::Error| err.kind() == io::ErrorKind::NotFound;
    match fs::symlink_metadata(original) {
        Ok(meta) if !meta.is_file() => return Ok(Original::NotAFile),
        Ok(_) => {}
        Err(err) if not_found(&err) => return Ok(Original::Missing),
        Err(err) => return Err(LockError::io(original)(err)),
    }
    match crate::fresh::metadata(original) {
        Ok(meta) if meta.len() == 0 => Ok(Original::Empty),
        Ok(_) => Ok(Original::Present),
        Err(err) if not_found(&err) => Ok(Original::Missing),
        Err(err) => Err(LockError::io(original)(err)),
    }
}

/// Deals with the work files of claims that are over: temp outputs and backups, as their
/// original's state (and, when known, the dead claim's last phase) says, never deleting the
/// only copy of anything.
struct WorkFiles {
    dry_run: bool,
    /// Originals restored (or, in a dry run, that would be), so a dry run reports
    /// the temp outputs beside them as the real run would treat them.
    restored: HashSet<PathBuf>,
}

impl WorkFiles {
    fn new(dry_run: bool) -> WorkFiles {
        WorkFiles {
            dry_run,
            restored: HashSet::new(),
        }
    }

    /// One work file of a claim that is over; `phase` is the claim's last phase when its
    /// record was read as its lock was broken. `None` when the file is gone already.
    fn settle(
        &mut self,
        path: &Path,
        work: &WorkFileName,
        phase: Option<&str>,
    ) -> Result<Option<CleanAction>, LockError> {
        if !fs::exists(path).map_err(LockError::io(path))? {
            return Ok(None);
        }
        let dir = parent_dir(path);
        let original = dir.join(&work.media_name);
        let action = match work.kind {
            WorkFileKind::TempOutput => self.orphan_temp_output(path, &original)?,
            WorkFileKind::Backup => self.orphan_backup(path, &original, work, phase)?,
        };
        Ok(Some(action))
    }

    fn orphan_temp_output(
        &mut self,
        path: &Path,
        original: &Path,
    ) -> Result<CleanAction, LockError> {
        let state = if self.restored.contains(original) {
            Original::Present
        } else {
            original_state(original)?
        };
        Ok(match state {
            Original::Present => {
                self.remove(path)?;
                CleanAction::RemovedTempOutput {
                    path: path.to_owned(),
                }
            }
            Original::Missing | Original::Empty => CleanAction::KeptOrphan {
                path: path.to_owned(),
                why: "its original is missing, so it may be the only copy",
            },
            Original::NotAFile => CleanAction::KeptOrphan {
                path: path.to_owned(),
                why: "its original is not a regular file",
            },
        })
    }

    fn orphan_backup(
        &mut self,
        backup: &Path,
        original: &Path,
        work: &WorkFileName,
        phase: Option<&str>,
    ) -> Result<CleanAction, LockError> {
        let backup_is_empty = crate::fresh::metadata(backup)
            .map_err(LockError::io(backup))?
            .len()
            == 0;
        let removed = |this: &Self| -> Result<CleanAction, LockError> {
            this.remove(backup)?;
            Ok(CleanAction::RemovedBackup {
                path: backup.to_owned(),
            })
        };
        let (phase, keeping) = match phase.map(split_keeping) {
            Some((base, keeping)) => (Some(base), keeping),
            None => (None, false),
        };
        let new_file_in_place = || -> Result<bool, LockError> {
            Ok(match phase {
                // The lock said so durably before anything was to be removed.
                Some(PHASE_SWAP_DONE) => true,
                // Died between the rename of the new file into the name and saying so:
                // the new file carries the original's mtime, which nothing else at that
                // name would have.
                Some(PHASE_SWAP_REPLACING | PHASE_SWAP_ORIGINAL_AT_BACKUP) => {
                    same_mtime(backup, original)?
                }
                _ => false,
            })
        };
        Ok(match original_state(original)? {
            // The swap never replaced the original: the backup is a second name of it.
            Original::Present if same_file(backup, original)? => removed(self)?,
            // The new file is in place: the conversion meant the original to go...
            Original::Present if !keeping && new_file_in_place()? => removed(self)?,
            // ... or to be kept aside: finish that.
            Original::Present if keeping && new_file_in_place()? => {
                let kept = parent_dir(backup).join(kept_original_name(&work.media_name));
                if !self.dry_run && !put_back_original(backup, &kept)? {
                    return Ok(CleanAction::KeptOrphan {
                        path: backup.to_owned(),
                        why: "it is the original a conversion meant to keep, and the kept \
                              name is taken: rename it yourself",
                    });
                }
                CleanAction::KeptOriginal {
                    backup: backup.to_owned(),
                    kept,
                }
            }
            // Whatever stands at the name now (a new file of a swap that died before
            // saying it was done, or a file a user put there), the backup differs from
            // it and may be the only copy of what was there before.
            Original::Present => CleanAction::KeptOrphan {
                path: backup.to_owned(),
                why: "it differs from the file at its original name and may be the only \
                      copy of an earlier version: keep or delete it yourself",
            },
            Original::Empty if backup_is_empty => removed(self)?,
            // The swap died between its renames (an empty original is a reserved
            // name it never filled): the backup is the only copy.
            Original::Missing | Original::Empty => {
                if !self.dry_run && !put_back_original(backup, original)? {
                    return Ok(CleanAction::KeptOrphan {
                        path: backup.to_owned(),
                        why: "its original reappeared while it was being restored",
                    });
                }
                self.restored.insert(original.to_owned());
                CleanAction::RestoredOriginal {
                    backup: backup.to_owned(),
                    original: original.to_owned(),
                }
            }
            Original::NotAFile => CleanAction::KeptOrphan {
                path: backup.to_owned(),
                why: "its original is not a regular file",
            },
        })
    }

    fn remove(&self, path: &Path) -> Result<(), LockError> {
        if self.dry_run {
            return Ok(());
        }
        remove_if_present(path).map_err(LockError::io(path))
    }
}

/// Renames `backup` to `original` (or to its kept name), replacing at most an empty file
/// (a reservation a dead swap made), never content that appeared meanwhile.
fn put_back_original(backup: &Path, original: &Path) -> Result<bool, LockError> {
    if matches!(original_state(original)?, Original::Empty) {
        fs::rename(backup, original).map_err(LockError::io(original))?;
        return Ok(true);
    }
    rename_noreplace(backup, original).map_err(LockError::io(original))
}

/// Whether `a` and `b` have one mtime (the swap gives the new file the original's).
fn same_mtime(a: &Path, b: &Path) -> Result<bool, LockError> {
    let mtime = |path: &Path| {
        crate::fresh::metadata(path)
            .and_then(|meta| meta.modified())
            .map_err(LockError::io(path))
    };
    Ok(mtime(a)? == mtime(b)?)
}

/// Whether `a` and `b` are one file under two names, or hold the same bytes. Shares that
/// give hard links their own inode numbers (sshfs) are caught by the comparison.
fn same_file(a: &Path, b: &Path) -> Result<bool, LockError> {
    let meta_a = crate::fresh::metadata(a).map_err(LockError::io(a))?;
    let meta_b = crate::fresh::metadata(b).map_err(LockError::io(b))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (meta_a.dev(), meta_a.ino()) == (meta_b.dev(), meta_b.ino()) {
            return Ok(true);
        }
    }
    if meta_a.len() != meta_b.len() {
        return Ok(false);
    }
    same_bytes(a, b).map_err(LockError::io(a))
}

fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        if n != read_full(&mut b, &mut buf_b)? || buf_a[..n] != buf_b[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
    fn read_full(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// Settles the work files of the dead claim whose lock was just broken.
fn settle_now(lock: &Path, holder: &Holder) -> Settled {
    settle_dead_claim(lock, holder, false)
}

/// What breaking a dead claim's lock did to the work files it left.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// One entry per work file of the claim.
    pub actions: Vec<Result<CleanAction, LockError>>,
    /// Originals restored from a backup.
    pub restored: HashSet<PathBuf>,
}

/// Deals with the work files of the claim `holder` whose lock `lock` was just broken (or,
/// with `dry_run`, would be): its temp output is removed (its original is in place), a
/// backup is restored, removed or kept aside as the claim's last durable phase says. Only
/// files named with the dead claim's own lock id are touched.
pub(super) fn settle_dead_claim(lock: &Path, holder: &Holder, dry_run: bool) -> Settled {
    let mut settled = Settled::default();
    let Some(lock_id) = holder.lock_id.as_deref() else {
        return settled;
    };
    let Some(Artifact::Lock { media_name }) = lock.file_name().and_then(classify) else {
        return settled;
    };
    let dir = parent_dir(lock);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            settled.actions.push(Err(LockError::io(dir)(err)));
            return settled;
        }
    };
    let mut mine: Vec<(PathBuf, WorkFileName)> = entries
        .flatten()
        .filter_map(|entry| {
            let work = parse_work_file_name(&entry.file_name())?;
            (work.lock_id == lock_id && work.media_name == media_name).then(|| (entry.path(), work))
        })
        .collect();
    // Backups first: restoring one is what brings an original back, and a temp output
    // is removed only beside an original.
    mine.sort_by_key(|(path, work)| (work.kind != WorkFileKind::Backup, path.clone()));
    let mut work = WorkFiles::new(dry_run);
    for (path, file) in &mine {
        match work.settle(path, file, holder.phase.as_deref()) {
            Ok(Some(action)) => settled.actions.push(Ok(action)),
            Ok(None) => {}
            Err(err) => settled.actions.push(Err(err)),
        }
    }
    settled.restored = work.restored;
    // A claim that died placing a new file may leave its reservation of the name: an empty
    // file that would block every later placement there. With `--keep-original` the phase
    // carries the keeping suffix (`swap:placing:keeping-original`).
    let own_name = dir.join(&media_name);
    let placing = holder
        .phase
        .as_deref()
        .is_some_and(|phase| split_keeping(phase).0 == PHASE_SWAP_PLACING);
    if placing && matches!(original_state(&own_name), Ok(Original::Empty)) {
        let removed = if dry_run {
            Ok(())
        } else {
            remove_if_present(&own_name).map_err(LockError::io(&own_name))
        };
        settled
            .actions
            .push(removed.map(|()| CleanAction::RemovedReservation { path: own_name }));
    }
    settled
}

/// A swap phase without its `--keep-original` suffix, and whether it had one.
fn split_keeping(phase: &str) -> (&str, bool) {
    match phase.strip_suffix(PHASE_KEEPING_SUFFIX) {
        Some(base) => (base, true),
        None => (phase, false),
    }
}
