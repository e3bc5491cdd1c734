//! `locks list` and `locks clean`: every lock under a directory, and the debris that
//! crashed runs leave beside media files.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::WalkDir;

use super::files::{Retired, parent_dir, read_snapshot, remove_if_present, rename_noreplace};
use super::names::{Artifact, LOCK_SUFFIX, WorkFileKind, WorkFileName, classify};
use super::{BreakOutcome, Holder, LockError, Locker};

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
            let Artifact::Lock { media_name } = artifact else {
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
    let Some(observed) = locker.observe(lock)? else {
        return Ok(None);
    };
    let (now, clock) = match locker.server_now(parent_dir(lock)) {
        Ok(now) => (now, ClockSource::Server),
        Err(_) => ((locker.wall_clock)(), ClockSource::Local),
    };
    Ok(Some((locker.judge(&observed, now), clock)))
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
    /// Retired a break guard left by a crashed breaker.
    BrokeStaleGuard {
        /// The guard file.
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
                write!(f, "broke abandoned break guard {}", guard.display())
            }
            CleanAction::RemovedTombstone { path } => {
                write!(f, "removed tombstone {}", path.display())
            }
            CleanAction::RemovedClockProbe { path } => {
                write!(f, "removed clock probe {}", path.display())
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
            CleanAction::KeptOrphan { path, why } => write!(f, "kept {}: {why}", path.display()),
        }
    }
}

/// The outcome of [`clean`].
#[derive(Debug, Default)]
pub struct CleanReport {
    /// Whether this was a dry run (`actions` then says what would be done).
    pub dry_run: bool,
    /// What was done, in order.
    pub actions: Vec<CleanAction>,
    /// Locks left alone because they are live (or another host is breaking them).
    pub live_locks: usize,
    /// What could not be done; a directory that cannot be written is reported once.
    pub errors: Vec<LockError>,
}

/// Breaks the stale locks under `dir` (recursively) by the protocol, then removes
/// the debris no live claim owns: tombstones, abandoned break guards and clock
/// probes, temp outputs and backups whose lock id is not that of a live lock.
///
/// An original is never lost: a backup whose original name is missing (a swap that
/// died midway) is renamed back instead of deleted, and a temp output whose
/// original is missing is kept. With `dry_run`, nothing is changed and the report
/// says what would be.
pub fn clean(dir: &Path, locker: &Locker, dry_run: bool) -> CleanReport {
    let mut cleaner = Cleaner {
        locker,
        report: CleanReport {
            dry_run,
            ..CleanReport::default()
        },
        unwritable: HashSet::new(),
        restored: HashSet::new(),
    };
    let mut found = Vec::new();
    for entry in walk(dir) {
        match entry {
            Ok(entry) => found.push(entry),
            Err(err) => cleaner.report.errors.push(err),
        }
    }
    // Locks first: whether a temp output is debris depends on the lock that
    // survives. And each work file's lock is read only after the file was listed:
    // a claim creates its lock before its temp output, so a lock missing now was
    // released, not yet to come.
    for (path, artifact) in &found {
        if matches!(artifact, Artifact::Lock { .. }) {
            cleaner.step(path, Cleaner::lock);
        }
    }
    for (path, artifact) in &found {
        match artifact {
            Artifact::Lock { .. } | Artifact::Work(_) => {}
            Artifact::Guard => cleaner.step(path, Cleaner::guard),
            Artifact::Tombstone => cleaner.step(path, Cleaner::tombstone),
            Artifact::ClockProbe => cleaner.step(path, Cleaner::clock_probe),
        }
    }
    // Backups before temp outputs: a temp output whose original is missing is
    // kept, and restoring a backup is what brings the original back.
    for kind in [WorkFileKind::Backup, WorkFileKind::TempOutput] {
        for (path, artifact) in &found {
            if let Artifact::Work(work) = artifact {
                if work.kind == kind {
                    cleaner.step(path, |cleaner, path| cleaner.work_file(path, work));
                }
            }
        }
    }
    cleaner.report
}

/// Every artifact of ours under `dir`, in a stable order.
fn walk(dir: &Path) -> impl Iterator<Item = Result<(PathBuf, Artifact), LockError>> + '_ {
    WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(move |entry| match entry {
            Ok(entry) if entry.file_type().is_file() => {
                let artifact = classify(entry.file_name())?;
                Some(Ok((entry.into_path(), artifact)))
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
    report: CleanReport,
    unwritable: HashSet<PathBuf>,
    /// Originals restored (or, in a dry run, that would be), so a dry run reports
    /// the temp outputs beside them as the real run would treat them.
    restored: HashSet<PathBuf>,
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
                Some((_, holder)) if holder.verdict.is_stale() => BreakOutcome::Broken(holder),
                Some((_, holder)) => BreakOutcome::Live(holder),
                None => BreakOutcome::Vanished,
            }
        } else {
            self.locker.break_if_stale(lock)?
        };
        match outcome {
            BreakOutcome::Broken(holder) => self.act(CleanAction::BrokeStaleLock {
                lock: lock.to_owned(),
                holder,
            }),
            BreakOutcome::Live(_) | BreakOutcome::Busy(_) => self.report.live_locks += 1,
            BreakOutcome::Vanished => {}
        }
        Ok(())
    }

    fn guard(&mut self, guard: &Path) -> Result<(), LockError> {
        let abandoned = if self.report.dry_run {
            let Some(snapshot) = read_snapshot(guard).map_err(LockError::io(guard))? else {
                return Ok(());
            };
            self.locker.age(guard, &snapshot)? >= self.locker.settings.guard_timeout
        } else {
            self.locker.retire_abandoned_guard(guard)? == Some(Retired::Done)
        };
        if abandoned {
            self.act(CleanAction::BrokeStaleGuard {
                guard: guard.to_owned(),
            });
        }
        Ok(())
    }

    /// A tombstone lives for the milliseconds between a rename and a delete, but a
    /// rename keeps the mtime, so only `stale_after` tells a crash's leftover from
    /// a live lock being put back.
    fn tombstone(&mut self, path: &Path) -> Result<(), LockError> {
        if !self.is_older_than(path, self.locker.settings.stale_after)? {
            return Ok(());
        }
        self.remove(path)?;
        self.act(CleanAction::RemovedTombstone {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn clock_probe(&mut self, path: &Path) -> Result<(), LockError> {
        if !self.is_older_than(path, self.locker.settings.guard_timeout)? {
            return Ok(());
        }
        self.remove(path)?;
        self.act(CleanAction::RemovedClockProbe {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn work_file(&mut self, path: &Path, work: &WorkFileName) -> Result<(), LockError> {
        let dir = parent_dir(path);
        let mut lock_name = work.media_name.clone();
        lock_name.push(LOCK_SUFFIX);
        if self.owned_by_live_lock(&dir.join(lock_name), &work.lock_id)? {
            return Ok(());
        }
        let original = dir.join(&work.media_name);
        match work.kind {
            WorkFileKind::TempOutput => self.orphan_temp_output(path, &original),
            WorkFileKind::Backup => self.orphan_backup(path, &original),
        }
    }

    /// Whether a live lock may own work files made under `lock_id`. A live lock
    /// whose id we cannot read (unreadable, legacy) may be the owner: keep.
    fn owned_by_live_lock(&self, lock: &Path, lock_id: &str) -> Result<bool, LockError> {
        Ok(match self.locker.inspect(lock)? {
            None => false,
            Some((_, holder)) if holder.verdict.is_stale() => false,
            Some((_, holder)) => holder.lock_id.as_deref().is_none_or(|id| id == lock_id),
        })
    }

    fn orphan_temp_output(&mut self, path: &Path, original: &Path) -> Result<(), LockError> {
        let state = if self.restored.contains(original) {
            Original::Present
        } else {
            original_state(original)?
        };
        let action = match state {
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
        };
        self.act(action);
        Ok(())
    }

    fn orphan_backup(&mut self, backup: &Path, original: &Path) -> Result<(), LockError> {
        let backup_is_empty = fs::symlink_metadata(backup)
            .map_err(LockError::io(backup))?
            .len()
            == 0;
        let action = match original_state(original)? {
            // The swap finished (or never began): the backup is a leftover copy.
            Original::Present => {
                self.remove(backup)?;
                CleanAction::RemovedBackup {
                    path: backup.to_owned(),
                }
            }
            Original::Empty if backup_is_empty => {
                self.remove(backup)?;
                CleanAction::RemovedBackup {
                    path: backup.to_owned(),
                }
            }
            // The swap died between its renames (an empty original is a reserved
            // name it never filled): the backup is the only copy.
            Original::Missing | Original::Empty => {
                if !self.report.dry_run && !self.put_back(backup, original)? {
                    self.act(CleanAction::KeptOrphan {
                        path: backup.to_owned(),
                        why: "its original reappeared while it was being restored",
                    });
                    return Ok(());
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
        };
        self.act(action);
        Ok(())
    }

    /// Renames `backup` to `original`, replacing at most an empty file, never
    /// content that appeared meanwhile.
    fn put_back(&self, backup: &Path, original: &Path) -> Result<bool, LockError> {
        if matches!(original_state(original)?, Original::Empty) {
            fs::rename(backup, original).map_err(LockError::io(original))?;
            return Ok(true);
        }
        rename_noreplace(backup, original).map_err(LockError::io(original))
    }

    fn is_older_than(&self, path: &Path, limit: std::time::Duration) -> Result<bool, LockError> {
        let mtime = match fs::symlink_metadata(path).and_then(|meta| meta.modified()) {
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
}

/// What stands at a work file's original name.
enum Original {
    Present,
    Missing,
    Empty,
    NotAFile,
}

fn original_state(original: &Path) -> Result<Original, LockError> {
    match fs::symlink_metadata(original) {
        Ok(meta) if !meta.is_file() => Ok(Original::NotAFile),
        Ok(meta) if meta.len() == 0 => Ok(Original::Empty),
        Ok(_) => Ok(Original::Present),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Original::Missing),
        Err(err) => Err(LockError::io(original)(err)),
    }
}
