//! Claiming a media file with no coordinator: the lock protocol described in
//! `docs/locking.md`.
//!
//! Hosts share nothing but the files on the share, so a claim is a lock file
//! `<name>.mediabox.lock` beside the media file, created exclusively (the one
//! primitive every file server decides atomically) and holding a [`LockRecord`]
//! with a random `lock_id`. Everything else follows from three rules:
//!
//! - **Only the server's clock counts.** A lock's age is its mtime, stamped at every
//!   heartbeat, against "server now" learned from a probe file the server creates;
//!   where the mtime is a writer's clock (kernel CIFS), the record's own timestamp,
//!   written from the server's clock, tells the age. Hosts' clocks may be hours apart
//!   and it does not matter.
//! - **Never remove a lock by its path.** A path names whatever is there *now*, which
//!   may be a claim made a millisecond ago. Locks are renamed to a unique tombstone
//!   first, and the tombstone is deleted only if it holds the lock we meant.
//! - **Doubt means held.** Unreadable, changing, or otherwise puzzling locks are left
//!   alone; a stale lock costs a file one run, a broken live one costs the library.
//!
//! Who breaks what: [`Locker::try_acquire`] breaks stale locks on its way to a claim,
//! [`clean`] breaks them for `locks clean` and removes debris. Both go through
//! `Locker::break_if_stale`.
//!
//! Creating and breaking a lock each happen under a guard directory
//! (`<lock>.acquire`, `<lock>.break`): `mkdir` is exclusive on every share, where
//! exclusive create is not (smbnetfs ignores `O_EXCL`). `docs/locking.md` walks
//! through the interleavings and what each mount was measured to do.

mod error;
mod files;
mod guard;
mod heartbeat;
mod record;
mod settings;
mod verdict;

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub use error::{LockError, LockLost, LostReason};
pub use files::{remove_if_present, rename_noreplace};
pub use guard::{Abandoned, ShortGuard, remove_guard_entry};
pub use heartbeat::Heartbeat;
pub use record::{LockRecord, Progress, RecordError};
pub use settings::LockSettings;
use verdict::Content;
pub use verdict::{HumanDuration, LiveReason, StaleReason, Verdict};

use crate::identity::{HostIdentity, process_liveness, process_start_token};
use crate::names::{acquire_guard_path, guard_path, lock_path, parent_dir};
use files::{
    Retired, ServerClock, Snapshot, create_exclusive, probe_server_clock, put_back, read_bounded,
    read_path_bounded, read_snapshot, retire, stamp_server_time,
};
use guard::{Released, restore_lock};
use verdict::{Facts, judge};

/// The phase written when a file is first claimed.
pub const PHASE_CLAIMED: &str = "claimed";
/// How long a learned server clock is trusted before probing again. Our monotonic
/// clock and the server's drift apart by parts per million; this only catches a
/// server whose clock is stepped.
const CLOCK_REFRESH: Duration = Duration::from_secs(5 * 60);

/// How many times [`Locker::try_acquire`] goes round create / read / break before
/// calling a lock that keeps changing hands "held".
const ACQUIRE_ROUNDS: usize = 4;

/// What an attempt to create a lock under its acquire guard found.
#[derive(Debug)]
enum Created {
    /// The lock is ours.
    Owned(Box<OwnedFile>),
    /// There is a lock (or something we could not tell from one).
    Exists,
    /// Another host holds the acquire guard: it is creating the lock right now.
    Busy,
}

/// Where record timestamps come from; injectable so tests can play a host whose
/// clock is hours off.
type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What runs after this locker broke a stale lock on its way to a claim.
type OnBreak = Arc<dyn Fn(&Path, &Holder) + Send + Sync>;

/// Takes, inspects and breaks locks for one run of this host.
///
/// It remembers, for every lock it has looked at, what it last saw (mtime, size,
/// lock id) and when it last saw that change, because a lock seen changing has an
/// owner whatever its mtime claims; and, for every directory, the file server's
/// clock. Share one `Locker` across a run (it is `Sync`); a new one forgets both.
pub struct Locker {
    identity: HostIdentity,
    settings: LockSettings,
    wall_clock: WallClock,
    on_break: Option<OnBreak>,
    pid: u32,
    process_start: Option<String>,
    seen: Mutex<HashMap<PathBuf, Seen>>,
    clocks: Mutex<HashMap<PathBuf, ServerClock>>,
}

/// What this run last saw of one lock.
#[derive(Debug)]
struct Seen {
    mtime: SystemTime,
    size: u64,
    /// The record's bytes: every heartbeat rewrites its server-clock timestamp, so they
    /// change even where the mtime tells nothing (a writer's clock, coarse stamps).
    bytes: Vec<u8>,
    first_seen: Instant,
    last_change: Option<Instant>,
}

/// A lock as read now, with what this run remembers of it.
#[derive(Debug)]
struct Observed {
    snapshot: Snapshot,
    last_change_seen: Option<Duration>,
    unchanged_for: Duration,
}

/// The result of [`Locker::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// The file is ours until released.
    Acquired(LockGuard),
    /// Someone else's claim stands: skip the file.
    Held(Holder),
}

/// Who holds a lock, as far as its record tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// The owner's host name; `None` for an unreadable lock.
    pub hostname: Option<String>,
    /// The owner's machine id; `None` for legacy and unreadable locks.
    pub host_id: Option<String>,
    /// The owner's pid on its host.
    pub pid: Option<u32>,
    /// The claim's id; `None` for legacy and unreadable locks.
    pub lock_id: Option<String>,
    /// Since the lock last changed (its last heartbeat), on the file server's clock.
    pub age: Duration,
    /// What the owner said it was doing.
    pub phase: Option<String>,
    /// How far along it said it was.
    pub progress: Option<Progress>,
    /// Whether the claim stands, and why.
    pub verdict: Verdict,
}

impl Holder {
    fn new(snapshot: &Snapshot, age: Duration, verdict: Verdict) -> Holder {
        let record = snapshot.content.record();
        Holder {
            hostname: record
                .map(|record| record.hostname.clone())
                .filter(|name| !name.is_empty()),
            host_id: record.and_then(|record| record.host_id.clone()),
            pid: record.map(|record| record.pid).filter(|&pid| pid != 0),
            lock_id: snapshot.lock_id().map(str::to_owned),
            age,
            phase: record.and_then(|record| record.phase.clone()),
            progress: record.and_then(|record| record.progress),
            verdict,
        }
    }

    fn contended() -> Holder {
        Holder {
            hostname: None,
            host_id: None,
            pid: None,
            lock_id: None,
            age: Duration::ZERO,
            phase: None,
            progress: None,
            verdict: Verdict::Live(LiveReason::Contended),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hostname.as_deref().unwrap_or("unknown host"))?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        if let Some(phase) = &self.phase {
            write!(f, ", {phase}")?;
        }
        if let Some(progress) = &self.progress {
            write!(f, " {:.0}%", progress.percent)?;
        }
        write!(
            f,
            ", changed {} ago ({})",
            HumanDuration(self.age),
            self.verdict
        )
    }
}

/// How [`Locker::break_if_stale`] ended; `S` is what the caller's tidying of a dead
/// claim returned.
#[derive(Debug)]
pub enum BreakOutcome<S> {
    /// It was stale and is gone now, with what tidying the dead claim's leftovers
    /// returned (the default when another host retired it first).
    Broken(Holder, S),
    /// It is live.
    Live(Holder),
    /// It is stale, but another host is breaking it right now.
    Busy(Holder),
    /// There was no lock.
    Vanished,
}

impl Locker {
    /// A locker for this process, claiming as `identity`.
    pub fn new(identity: HostIdentity, settings: LockSettings) -> Locker {
        let pid = std::process::id();
        Locker {
            identity,
            settings,
            wall_clock: Arc::new(SystemTime::now),
            on_break: None,
            pid,
            process_start: process_start_token(pid),
            seen: Mutex::new(HashMap::new()),
            clocks: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces this host's wall clock (tests: a host whose clock is hours off). It
    /// is read only where no file server's clock can be learned (`locks list` on a
    /// read-only share); records and judgements use the server's.
    pub fn with_wall_clock(
        mut self,
        clock: impl Fn() -> SystemTime + Send + Sync + 'static,
    ) -> Locker {
        self.wall_clock = Arc::new(clock);
        self
    }

    /// Runs `tidy` whenever [`Locker::try_acquire`] breaks a stale lock on its way to a
    /// claim, right after the lock is retired, with the lock's path and its last record:
    /// the place to deal with what the dead claim left (its temp files are named by its
    /// lock id). A break the caller asks for ([`Locker::break_if_stale`]) gets its own.
    pub fn on_break(mut self, tidy: impl Fn(&Path, &Holder) + Send + Sync + 'static) -> Locker {
        self.on_break = Some(Arc::new(tidy));
        self
    }

    /// Who this locker claims as.
    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    /// The thresholds in force.
    pub fn settings(&self) -> &LockSettings {
        &self.settings
    }

    /// Tries to claim `media`: creates its lock, or reports who holds it. A stale
    /// lock is broken on the way (by the guarded protocol) and the claim retried.
    ///
    /// Returns [`LockError::DirectoryNotWritable`] when no lock can be created
    /// beside `media`; the caller should report that once and skip the directory.
    pub fn try_acquire(&self, media: &Path) -> Result<Acquire, LockError> {
        let lock = lock_path(media).ok_or_else(|| LockError::NoFileName {
            path: media.to_owned(),
        })?;
        let media_name = media
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        for _ in 0..ACQUIRE_ROUNDS {
            match self.create_guarded(&lock, &media_name)? {
                Created::Owned(owned) => {
                    return Ok(Acquire::Acquired(LockGuard {
                        owned,
                        stale_after: self.settings.stale_after,
                    }));
                }
                Created::Busy => return Ok(Acquire::Held(self.busy_holder(&lock)?)),
                Created::Exists => {}
            }
            let tidy = |lock: &Path, holder: &Holder| {
                if let Some(on_break) = &self.on_break {
                    on_break(lock, holder);
                }
            };
            match self.break_if_stale(&lock, tidy)? {
                BreakOutcome::Live(holder) | BreakOutcome::Busy(holder) => {
                    return Ok(Acquire::Held(holder));
                }
                BreakOutcome::Broken(..) | BreakOutcome::Vanished => {}
            }
        }
        Ok(Acquire::Held(Holder::contended()))
    }

    /// A new record of the claim `lock_id` on `media_name`.
    /// `now` is the file server's clock: the original tool judges a lock by its
    /// `timestamp`, and readers compare it with the lock's mtime.
    fn new_record(
        &self,
        lock_id: &str,
        media_name: &str,
        phase: &str,
        now: SystemTime,
    ) -> LockRecord {
        LockRecord {
            hostname: self.identity.hostname.clone(),
            pid: self.pid,
            timestamp: unix_secs(now),
            file: media_name.to_owned(),
            locked_at: iso8601(now),
            lock_id: Some(lock_id.to_owned()),
            host_id: Some(self.identity.host_id.clone()),
            process_start: self.process_start.clone(),
            heartbeat_secs: Some(self.settings.heartbeat.as_secs_f64()),
            stale_after_secs: Some(self.settings.stale_after.as_secs_f64()),
            phase: Some(phase.to_owned()),
            progress: None,
            tool_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            timestamp_clock: Some(record::TIMESTAMP_FROM_SERVER.to_owned()),
        }
    }

    /// Creates the lock `lock` under its acquire guard: take the guard, look for a
    /// lock by opening it (an open is answered by the server on every mount, where
    /// a stat may be answered from a cache), create it only if absent, write and
    /// sync the record, read it back, give the guard up.
    fn create_guarded(&self, lock: &Path, media_name: &str) -> Result<Created, LockError> {
        let Some(guard) = self.take_guard(&acquire_guard_path(lock))? else {
            return Ok(Created::Busy);
        };
        let created = self.create_under_guard(lock, media_name);
        let expired = guard.expired();
        let released = guard.release();
        let owned = match created? {
            Created::Owned(owned) => owned,
            other => {
                released?;
                return Ok(other);
            }
        };
        match released {
            Ok(Released::Removed) if !expired => Ok(Created::Owned(owned)),
            // We held the guard so long (a stalled process, a hung share) that
            // another host may have taken it for abandoned and be creating the lock
            // too: give our claim up rather than trust it.
            Ok(_) => {
                let _ = owned.release();
                Ok(Created::Exists)
            }
            Err(err) => {
                let _ = owned.release();
                Err(err)
            }
        }
    }

    fn create_under_guard(&self, lock: &Path, media_name: &str) -> Result<Created, LockError> {
        match files::by_name(|| File::open(lock)) {
            Ok(_) => return Ok(Created::Exists),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // Another user's lock we may not read is still a lock.
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(Created::Exists);
            }
            Err(err) => return Err(LockError::io(lock)(err)),
        }
        Ok(match self.create_owned(lock, media_name)? {
            Some(owned) => Created::Owned(Box::new(owned)),
            None => Created::Exists,
        })
    }

    /// Creates `path` exclusively with a new record and confirms it by reading it
    /// back; `None` when the name is held (or our fresh file was displaced at once).
    /// The caller holds the acquire guard.
    fn create_owned(&self, path: &Path, media_name: &str) -> Result<Option<OwnedFile>, LockError> {
        let lock_id = crate::names::unique_hex(16);
        let server_clock = self.server_clock(parent_dir(path))?;
        let record = self.new_record(&lock_id, media_name, PHASE_CLAIMED, server_clock.now());
        let bytes = record
            .to_json()
            .map_err(|err| LockError::io(path)(io::Error::other(err)))?;
        // Still exclusive create: it is what excludes hosts running an older
        // version, which take no acquire guard, on every share but smbnetfs.
        if !create_exclusive(path, &bytes)? {
            return Ok(None);
        }
        let owned = OwnedFile {
            path: path.to_owned(),
            lock_id,
            record: Mutex::new(record),
            guard_trust: self.settings.guard_timeout / 2,
            server_clock,
        };
        // Re-open and read back: what the server kept is what counts, and a breaker
        // that took our just-created, still-empty file for abandoned shows up here.
        match owned.verify() {
            Ok(()) => Ok(Some(owned)),
            Err(LockLost {
                reason: LostReason::Io(source),
                ..
            }) => {
                if let Ok(Retired::Displaced { tomb }) =
                    retire(path, |bytes| has_lock_id(bytes, &owned.lock_id))
                {
                    let _ = put_back(&tomb, path);
                }
                Err(LockError::io(path)(source))
            }
            Err(_) => Ok(None),
        }
    }

    /// Whom to report while another host holds a lock's acquire guard: the lock's
    /// holder if there is a live one, else "changing hands".
    fn busy_holder(&self, lock: &Path) -> Result<Holder, LockError> {
        Ok(match self.inspect(lock)? {
            Some(holder) if !holder.verdict.is_stale() => holder,
            _ => Holder::contended(),
        })
    }

    /// Breaks the lock at `lock` if it is stale, by the guarded protocol: take the
    /// guard `<lock>.break`, re-read and re-judge under it, retire the lock to a
    /// tombstone and delete that only if it still holds what was judged stale. Then,
    /// still under the guard, `tidy` deals with what the dead claim left; its result
    /// comes back in [`BreakOutcome::Broken`].
    pub fn break_if_stale<S: Default>(
        &self,
        lock: &Path,
        tidy: impl FnOnce(&Path, &Holder) -> S,
    ) -> Result<BreakOutcome<S>, LockError> {
        self.break_lock(lock, false, tidy)
    }

    /// As [`Locker::break_if_stale`], and breaks a lock judged live too: for a clean-up
    /// whose user says no run is active, and which has watched the lock first
    /// ([`Locker::lock_bytes`]).
    pub fn break_assumed_dead<S: Default>(
        &self,
        lock: &Path,
        tidy: impl FnOnce(&Path, &Holder) -> S,
    ) -> Result<BreakOutcome<S>, LockError> {
        self.break_lock(lock, true, tidy)
    }

    fn break_lock<S: Default>(
        &self,
        lock: &Path,
        assume_dead: bool,
        tidy: impl FnOnce(&Path, &Holder) -> S,
    ) -> Result<BreakOutcome<S>, LockError> {
        let Some((_, holder)) = self.observe_and_judge(lock)? else {
            return Ok(BreakOutcome::Vanished);
        };
        if !(assume_dead || holder.verdict.is_stale()) {
            return Ok(BreakOutcome::Live(holder));
        }
        let Some(guard) = self.take_guard(&guard_path(lock))? else {
            return Ok(BreakOutcome::Busy(holder));
        };
        let outcome = self.break_under_guard(lock, assume_dead, tidy);
        // A break guard held too long is left for others to retire; the break itself
        // was safe regardless (the tombstone check).
        let released = guard.release();
        let outcome = outcome?;
        released?;
        Ok(outcome)
    }

    fn break_under_guard<S: Default>(
        &self,
        lock: &Path,
        assume_dead: bool,
        tidy: impl FnOnce(&Path, &Holder) -> S,
    ) -> Result<BreakOutcome<S>, LockError> {
        // Someone may have broken and re-taken it since we judged: judge again.
        let Some((observed, holder)) = self.observe_and_judge(lock)? else {
            return Ok(BreakOutcome::Vanished);
        };
        if !(assume_dead || holder.verdict.is_stale()) {
            return Ok(BreakOutcome::Live(holder));
        }
        let judged = observed.snapshot.bytes;
        match retire(lock, |bytes| bytes == judged.as_slice()).map_err(LockError::io(lock))? {
            Retired::Done => {
                // What the dead claim left (a temp file of gigabytes) is dealt with
                // now, not left for a clean-up nobody may run.
                let tidied = tidy(lock, &holder);
                Ok(BreakOutcome::Broken(holder, tidied))
            }
            Retired::Vanished => Ok(BreakOutcome::Broken(holder, Default::default())),
            // It changed between our last read and the rename: an owner is alive
            // after all. Its lock goes back if the name is still free.
            Retired::Displaced { tomb } => {
                restore_lock(lock, &tomb, self.settings.guard_timeout / 2)
                    .map_err(LockError::io(lock))?;
                Ok(match self.observe_and_judge(lock)? {
                    Some((_, now)) if !now.verdict.is_stale() => BreakOutcome::Live(now),
                    Some((_, now)) => BreakOutcome::Busy(now),
                    None => BreakOutcome::Busy(holder),
                })
            }
        }
    }

    /// Reads and judges the lock at `lock` on the file server's clock; `None` when there
    /// is none.
    pub fn inspect(&self, lock: &Path) -> Result<Option<Holder>, LockError> {
        Ok(self.observe_and_judge(lock)?.map(|(_, holder)| holder))
    }

    /// The lock's bytes as they are now; `None` when there is none. A live owner rewrites
    /// them at every heartbeat (its record carries a server-clock timestamp), so bytes
    /// that stay the same for a heartbeat and a half say the owner is gone, whatever the
    /// share's mtimes tell.
    pub fn lock_bytes(&self, lock: &Path) -> Result<Option<Vec<u8>>, LockError> {
        Ok(self.observe(lock)?.map(|observed| observed.snapshot.bytes))
    }

    /// Reads the lock at `lock` and judges it as of `now`: for a listing where no file
    /// server's clock can be learned (a read-only share), with [`Locker::wall_now`].
    pub fn inspect_at(&self, lock: &Path, now: SystemTime) -> Result<Option<Holder>, LockError> {
        Ok(self
            .observe(lock)?
            .map(|observed| self.judge(&observed, now)))
    }

    /// This host's wall clock (injectable, [`Locker::with_wall_clock`]): only for where the
    /// file server's cannot be learned.
    pub fn wall_now(&self) -> SystemTime {
        (self.wall_clock)()
    }

    fn observe_and_judge(&self, lock: &Path) -> Result<Option<(Observed, Holder)>, LockError> {
        let Some(observed) = self.observe(lock)? else {
            return Ok(None);
        };
        let server_now = self.server_now(parent_dir(lock))?;
        let holder = self.judge(&observed, server_now);
        Ok(Some((observed, holder)))
    }

    fn judge(&self, observed: &Observed, server_now: SystemTime) -> Holder {
        let snapshot = &observed.snapshot;
        let facts = Facts {
            content: &snapshot.content,
            mtime: snapshot.mtime,
            server_now,
            last_change_seen: observed.last_change_seen,
            unchanged_for: observed.unchanged_for,
            us: &self.identity,
            settings: &self.settings,
        };
        let verdict = judge(&facts, process_liveness);
        Holder::new(snapshot, facts.age(), verdict)
    }

    /// Reads the lock at `lock` and updates what this run remembers of it.
    fn observe(&self, lock: &Path) -> Result<Option<Observed>, LockError> {
        let Some(snapshot) = read_snapshot(lock).map_err(LockError::io(lock))? else {
            return Ok(None);
        };
        let (last_change_seen, unchanged_for) = self.remember(lock, &snapshot);
        Ok(Some(Observed {
            snapshot,
            last_change_seen,
            unchanged_for,
        }))
    }

    /// Records this sighting; returns how long ago this run last saw the lock
    /// change (mtime, size or content), if it ever did, and how long it has seen it
    /// unchanged (since that change, or since it first saw it).
    fn remember(&self, lock: &Path, snapshot: &Snapshot) -> (Option<Duration>, Duration) {
        let now = Instant::now();
        let mut seen = lock_ignoring_poison(&self.seen);
        let entry = seen.entry(lock.to_owned()).or_insert_with(|| Seen {
            mtime: snapshot.mtime,
            size: snapshot.size,
            bytes: snapshot.bytes.clone(),
            first_seen: now,
            last_change: None,
        });
        if (entry.mtime, entry.size, &entry.bytes)
            != (snapshot.mtime, snapshot.size, &snapshot.bytes)
        {
            *entry = Seen {
                mtime: snapshot.mtime,
                size: snapshot.size,
                bytes: snapshot.bytes.clone(),
                first_seen: entry.first_seen,
                last_change: Some(now),
            };
        }
        let since = entry.last_change.unwrap_or(entry.first_seen);
        (
            entry.last_change.map(|at| now.duration_since(at)),
            now.duration_since(since),
        )
    }

    /// The file server's clock for `dir` now (learned at most every few minutes).
    pub fn server_now(&self, dir: &Path) -> Result<SystemTime, LockError> {
        self.server_clock(dir).map(|clock| clock.now())
    }

    /// The file server's clock for `dir`, probed at most every [`CLOCK_REFRESH`].
    fn server_clock(&self, dir: &Path) -> Result<ServerClock, LockError> {
        if let Some(clock) = lock_ignoring_poison(&self.clocks).get(dir) {
            if clock.at.elapsed() < CLOCK_REFRESH {
                return Ok(*clock);
            }
        }
        // Probe without holding the mutex: threads working in other directories
        // need not wait for this one's I/O.
        let clock = probe_server_clock(dir)?;
        lock_ignoring_poison(&self.clocks).insert(dir.to_owned(), clock);
        Ok(clock)
    }
}

impl fmt::Debug for Locker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locker")
            .field("identity", &self.identity)
            .field("settings", &self.settings)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// A lock we created and hold by its lock id.
#[derive(Debug)]
struct OwnedFile {
    path: PathBuf,
    lock_id: String,
    /// The record as last written; heartbeats hold this mutex while writing, so
    /// two threads never interleave their rewrites.
    record: Mutex<LockRecord>,
    /// How long an acquire guard taken to put back a displaced lock is trusted.
    guard_trust: Duration,
    /// The file server's clock, which stamps the record's `timestamp`.
    server_clock: ServerClock,
}

impl OwnedFile {
    /// Whether the file at our path still holds our lock id.
    fn verify(&self) -> Result<(), LockLost> {
        let bytes = read_path_bounded(&self.path).map_err(|err| self.lost_io(err))?;
        self.check(&bytes)
    }

    fn check(&self, bytes: &[u8]) -> Result<(), LockLost> {
        let reason = match Content::from_bytes(bytes) {
            Content::Record(record) if record.lock_id.as_deref() == Some(&self.lock_id) => {
                return Ok(());
            }
            Content::Record(record) => LostReason::Replaced {
                hostname: Some(record.hostname).filter(|name| !name.is_empty()),
            },
            Content::Unreadable(why) => LostReason::Unreadable(why),
        };
        Err(self.lost(reason))
    }

    fn lost(&self, reason: LostReason) -> LockLost {
        LockLost {
            path: self.path.clone(),
            reason,
        }
    }

    /// A lock we hold open that NFS calls a stale handle was replaced or deleted through
    /// another client: it is not ours any more.
    fn lost_io(&self, err: io::Error) -> LockLost {
        if err.kind() == io::ErrorKind::NotFound || files::is_stale_handle(&err) {
            self.lost(LostReason::Missing)
        } else {
            self.lost(LostReason::Io(err))
        }
    }

    /// Verifies, then retires the file: renamed to a tombstone, deleted only if the
    /// tombstone holds our lock id.
    fn release(self) -> Result<(), LockError> {
        self.verify()?;
        let lock_id = &self.lock_id;
        match retire(&self.path, |bytes| has_lock_id(bytes, lock_id))
            .map_err(LockError::io(&self.path))?
        {
            Retired::Done => Ok(()),
            Retired::Vanished => Err(self.lost(LostReason::Missing).into()),
            // Someone broke our claim and claimed the file between our check and
            // our rename: theirs goes back.
            Retired::Displaced { tomb } => {
                restore_lock(&self.path, &tomb, self.guard_trust)
                    .map_err(LockError::io(&self.path))?;
                Err(self.lost(LostReason::Replaced { hostname: None }).into())
            }
        }
    }
}

/// Our claim on one media file.
///
/// Dropping a guard without [`LockGuard::release`] deliberately leaves the lock in
/// place: a process that cannot release (a crash, a lost share) leaves it to the
/// staleness rules, which this host resolves at once (its pid is gone) and others
/// after `stale_after`. Deleting on drop would run on paths where we no longer know
/// the lock is ours.
pub struct LockGuard {
    owned: Box<OwnedFile>,
    stale_after: Duration,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("path", &self.owned.path)
            .field("lock_id", &self.owned.lock_id)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The id of our claim, for temp output and backup names.
    pub fn lock_id(&self) -> &str {
        &self.owned.lock_id
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.owned.path
    }

    /// The record as last written.
    pub fn record(&self) -> LockRecord {
        lock_ignoring_poison(&self.owned.record).clone()
    }

    /// The `stale_after` this claim was made under; a heartbeat that cannot get
    /// through for half of it must give the claim up.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// Proves we still work: opens the existing lock (never creating it), checks
    /// our lock id, rewrites the record with `phase` and `progress` and syncs; the
    /// write has the server stamp the mtime with its clock. Then reads the lock back
    /// by path, which catches a break that renamed the file while we wrote to it.
    pub fn heartbeat(&self, phase: &str, progress: Option<Progress>) -> Result<(), LockLost> {
        let owned = &self.owned;
        let mut record = lock_ignoring_poison(&owned.record);
        let mut file =
            files::by_name(|| OpenOptions::new().read(true).write(true).open(&owned.path))
                .map_err(|err| owned.lost_io(err))?;
        let (bytes, _) = read_bounded(&mut file).map_err(|err| owned.lost_io(err))?;
        owned.check(&bytes)?;
        let mut next = record.clone();
        next.timestamp = unix_secs(owned.server_clock.now());
        next.phase = Some(phase.to_owned());
        next.progress = progress;
        let mut json = next
            .to_json()
            .map_err(|err| owned.lost_io(io::Error::other(err)))?;
        // Overwrite in place: a reader never sees an empty file. A shorter record is
        // padded with spaces (JSON's whitespace) to the length it replaces, so the write
        // alone leaves one whole record: a crash before the cut must not leave the tail of
        // the old one, which would not parse and would take the phase along.
        json.resize(json.len().max(bytes.len()), b' ');
        let json_len = json.len() as u64;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&json))
            .and_then(|()| file.set_len(json_len))
            .and_then(|()| file.sync_all())
            .and_then(|()| stamp_server_time(&file))
            .map_err(|err| owned.lost_io(err))?;
        drop(file);
        owned.verify()?;
        *record = next;
        Ok(())
    }

    /// Whether the lock is still ours: call it right before any step that must
    /// not happen without the claim (the swap).
    pub fn verify_owned(&self) -> Result<(), LockLost> {
        self.owned.verify()
    }

    /// Gives the claim up: verifies our lock id, renames the lock to a tombstone,
    /// checks the tombstone holds our lock id, deletes it.
    pub fn release(self) -> Result<(), LockError> {
        self.owned.release()
    }
}

/// The file server's clock for the files in `dir`, learned from the mtime of a probe file
/// created there (and deleted): what a file's mtime must be compared with, never this
/// host's clock. Fails where nothing can be created (a read-only share).
pub fn server_now(dir: &Path) -> Result<SystemTime, LockError> {
    probe_server_clock(dir).map(|clock| clock.now())
}

/// Whether `bytes` are a record with lock id `lock_id`.
fn has_lock_id(bytes: &[u8], lock_id: &str) -> bool {
    LockRecord::parse(bytes).is_ok_and(|record| record.lock_id.as_deref() == Some(lock_id))
}

/// A cache or a record stays usable after a panic elsewhere; never propagate one.
fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_secs(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

fn iso8601(time: SystemTime) -> String {
    let Ok(since) = time.duration_since(SystemTime::UNIX_EPOCH) else {
        return String::new();
    };
    i64::try_from(since.as_secs())
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, since.subsec_nanos()))
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
