//! The claim step of a conversion: a lock taken through [`crate::lock`], kept alive by a
//! heartbeat while the file is worked on, and released however the work ends. What the
//! claim is doing is reported to this run's presence record as it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::lock::{self, Acquire, Heartbeat, Holder, LockError, LockGuard, Locker, Progress};
use crate::presence;

/// A file this process owns until the claim is dropped or released.
pub struct Claim {
    guard: Option<Arc<LockGuard>>,
    heartbeat: Option<Heartbeat>,
}

/// Why a file could not be claimed.
#[derive(Debug)]
pub enum ClaimRefused {
    /// A live holder has it.
    Held(Box<Holder>),
    /// Locks cannot be created in its directory; reported once per directory.
    DirectoryNotWritable { dir: PathBuf, first_time: bool },
    /// Anything else, with the file named.
    Failed(String),
}

/// Takes claims for one run, remembering which directories turned out read-only.
pub struct Claimer {
    locker: Locker,
    read_only: Mutex<HashSet<PathBuf>>,
}

impl Claimer {
    /// A claimer over `locker` (one per run: it remembers what it saw of each lock). A dead
    /// claim it breaks on its way has its work files settled ([`lock::settling`]).
    pub fn new(locker: Locker) -> Claimer {
        Claimer {
            locker: lock::settling(locker),
            read_only: Mutex::new(HashSet::new()),
        }
    }

    /// The locker, for listing and cleaning.
    pub fn locker(&self) -> &Locker {
        &self.locker
    }

    /// Claims `media` and starts its heartbeat.
    pub fn claim(&self, media: &Path) -> Result<Claim, ClaimRefused> {
        if let Some(dir) = media.parent() {
            if self.read_only.lock().is_ok_and(|dirs| dirs.contains(dir)) {
                return Err(ClaimRefused::DirectoryNotWritable {
                    dir: dir.to_path_buf(),
                    first_time: false,
                });
            }
        }
        let guard = match self.locker.try_acquire(media) {
            Ok(Acquire::Acquired(guard)) => Arc::new(guard),
            Ok(Acquire::Held(holder)) => return Err(ClaimRefused::Held(Box::new(holder))),
            Err(LockError::DirectoryNotWritable { dir, .. }) => {
                let first_time = self
                    .read_only
                    .lock()
                    .map_or(true, |mut dirs| dirs.insert(dir.clone()));
                return Err(ClaimRefused::DirectoryNotWritable { dir, first_time });
            }
            Err(err) => return Err(ClaimRefused::Failed(format!("cannot claim it: {err}"))),
        };
        let heartbeat = Heartbeat::start(Arc::clone(&guard), self.locker.settings().heartbeat);
        if let Ok(heartbeat) = &heartbeat {
            presence::job_update(guard.path(), &heartbeat.phase(), None);
        }
        let mut claim = Claim {
            guard: Some(guard),
            heartbeat: None,
        };
        // On error `claim` is dropped by the `?`, which releases the lock.
        claim.heartbeat =
            Some(heartbeat.map_err(|err| {
                ClaimRefused::Failed(format!("cannot start the heartbeat: {err}"))
            })?);
        Ok(claim)
    }
}

impl Claim {
    /// The claim's id: it names the temp and backup files, so `locks clean` can tell whose
    /// they are.
    pub fn lock_id(&self) -> &str {
        self.guard.as_ref().map_or("", |g| g.lock_id())
    }

    /// Records what is being done, for `locks list` and `status` on any host.
    pub fn set_phase(&self, phase: &str) {
        if let (Some(heartbeat), Some(guard)) = (&self.heartbeat, &self.guard) {
            heartbeat.set_phase(phase);
            presence::job_update(guard.path(), phase, heartbeat.progress());
        }
    }

    /// Records `phase` durably: written and synced through a fresh heartbeat, which also
    /// proves the lock is still ours. Before each step of the swap, so that whoever finds
    /// the lock of a dead swap knows how far it got.
    pub fn set_phase_durably(&self, phase: &str) -> Result<(), String> {
        self.set_phase(phase);
        self.confirm()
    }

    /// Records how far the transcode is.
    pub fn set_progress(&self, progress: Progress) {
        if let (Some(heartbeat), Some(guard)) = (&self.heartbeat, &self.guard) {
            heartbeat.set_progress(Some(progress));
            presence::job_update(guard.path(), &heartbeat.phase(), Some(progress));
        }
    }

    /// Whether the heartbeat found the lock gone or someone else's.
    pub fn lost(&self) -> bool {
        self.heartbeat.as_ref().is_some_and(Heartbeat::lost)
    }

    /// Proves the lock is still ours right now (a fresh heartbeat): the self-fence before
    /// the swap.
    pub fn confirm(&self) -> Result<(), String> {
        match &self.heartbeat {
            Some(heartbeat) => heartbeat.beat_now().map_err(|lost| lost.to_string()),
            None => Err("no heartbeat".into()),
        }
    }

    /// Stops the heartbeat and leaves the lock where it is, as a crash would: for a swap
    /// that failed with the original under its backup name only, the lock's durable phase
    /// is the one record of how far it got, and whoever settles the dead claim (the next
    /// run, another host, `locks clean`) finishes it from there (`docs/locking.md`).
    pub fn leave_for_settling(mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop();
        }
        self.guard = None;
    }

    /// Stops the heartbeat and releases the lock, saying what went wrong, if anything.
    pub fn release(mut self) -> Result<(), String> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), String> {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.stop();
        }
        let Some(guard) = self.guard.take() else {
            return Ok(());
        };
        presence::job_ended(guard.path());
        match Arc::try_unwrap(guard) {
            Ok(guard) => guard.release().map_err(|err| err.to_string()),
            Err(_) => Err("the lock is still in use".into()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Early returns and panics release too; a crash leaves the lock to go stale.
        let _ = self.release_inner();
    }
}
