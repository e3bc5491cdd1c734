//! Keeping a claim alive while ffmpeg works, from a background thread.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{LockLost, LostReason};
use super::record::Progress;
use super::{LockGuard, PHASE_CLAIMED, lock_ignoring_poison};

/// Heartbeats closer together than this would only load the share.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// How often stopping looks whether a heartbeat under way has ended.
const STOP_POLL: Duration = Duration::from_millis(5);

/// Heartbeats a [`LockGuard`] every interval on a background thread.
///
/// The pipeline reports its phase and progress here (cheap: a mutex, no I/O) and
/// polls [`Heartbeat::lost`] to stop ffmpeg when the claim is gone. A heartbeat
/// that fails for a reason that may pass (an I/O error, a lock caught mid-write)
/// is retried; the claim counts as lost once the lock is certainly someone else's,
/// or no heartbeat has got through for half of `stale_after`, from which point
/// another host may rightly break it. That holds for a heartbeat stuck in the file
/// system too (a share that stopped answering, an NFSv4.1+ `open()` asleep in the
/// kernel): [`Heartbeat::lost`] says so once the stuck call has kept every heartbeat
/// out for that long, whatever the thread is waiting on.
///
/// Stopping (or dropping) joins the thread at once, not after an interval; a thread
/// stuck in the file system is waited for only until it counts as lost, then left to
/// end by itself when the call returns, writing nothing more.
#[derive(Debug)]
pub struct Heartbeat {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    guard: Arc<LockGuard>,
    state: Mutex<State>,
    wake: Condvar,
    lost: AtomicBool,
    /// Held from reading the state to the end of the write, so a write from
    /// [`Heartbeat::beat_now`] is never followed by an older one from the thread.
    beat: Mutex<()>,
    /// When heartbeats last got through, and since when one is under way.
    beats: Mutex<Beats>,
    /// Half of `stale_after`: no heartbeat through for this long and the claim is lost.
    tolerance: Duration,
}

#[derive(Debug)]
struct Beats {
    last_success: Instant,
    in_flight_since: Option<Instant>,
}

#[derive(Debug)]
struct State {
    phase: String,
    progress: Option<Progress>,
    phase_changed: bool,
    stop: bool,
    lost_reason: Option<String>,
}

impl Heartbeat {
    /// Starts heartbeating `guard` every `interval` (at least 50 ms). Fails only if
    /// the OS refuses a thread.
    pub fn start(guard: Arc<LockGuard>, interval: Duration) -> io::Result<Heartbeat> {
        let phase = guard
            .record()
            .phase
            .unwrap_or_else(|| PHASE_CLAIMED.to_owned());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                phase,
                progress: None,
                phase_changed: false,
                stop: false,
                lost_reason: None,
            }),
            wake: Condvar::new(),
            lost: AtomicBool::new(false),
            beat: Mutex::new(()),
            beats: Mutex::new(Beats {
                last_success: Instant::now(),
                in_flight_since: None,
            }),
            tolerance: guard.stale_after() / 2,
            guard,
        });
        let thread = std::thread::Builder::new()
            .name("lock-heartbeat".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.run(interval.max(MIN_INTERVAL))
            })?;
        Ok(Heartbeat {
            shared,
            thread: Some(thread),
        })
    }

    /// Sets the phase, written at once by the thread (phases are few and `locks
    /// list` should show them). For a phase that must be on disk before the next
    /// step (the swap), follow with [`Heartbeat::beat_now`].
    pub fn set_phase(&self, phase: &str) {
        let mut state = lock_ignoring_poison(&self.shared.state);
        phase.clone_into(&mut state.phase);
        state.phase_changed = true;
        self.shared.wake.notify_all();
    }

    /// Sets the progress, written with the next heartbeat.
    pub fn set_progress(&self, progress: Option<Progress>) {
        let mut state = lock_ignoring_poison(&self.shared.state);
        state.progress = progress;
    }

    /// The phase last set.
    pub fn phase(&self) -> String {
        lock_ignoring_poison(&self.shared.state).phase.clone()
    }

    /// The progress last set.
    pub fn progress(&self) -> Option<Progress> {
        lock_ignoring_poison(&self.shared.state).progress
    }

    /// Heartbeats now, on this thread, with the current phase and progress.
    pub fn beat_now(&self) -> Result<(), LockLost> {
        let result = self.shared.beat();
        if let Err(lost) = &result {
            if lost.is_definitive() {
                self.shared.mark_lost(lost);
            }
        }
        result
    }

    /// Whether the claim is lost: stop working on the file. Also true once a heartbeat
    /// stuck in the file system has kept every heartbeat out for half of `stale_after`.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire) || self.shared.stuck()
    }

    /// Why the claim was lost, once it is.
    pub fn lost_reason(&self) -> Option<String> {
        lock_ignoring_poison(&self.shared.state).lost_reason.clone()
    }

    /// Stops heartbeating and waits for the thread, which wakes at once.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        lock_ignoring_poison(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // A thread between heartbeats wakes at once. One in the middle of a heartbeat is
        // waited for until that heartbeat counts as stuck; then it is left behind (it
        // writes nothing more once the call returns: `stop` is set).
        while !thread.is_finished() {
            if self.shared.stuck() {
                return;
            }
            std::thread::sleep(STOP_POLL);
        }
        // The thread cannot panic short of a bug; nothing is left to clean up if it did.
        let _ = thread.join();
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn run(&self, interval: Duration) {
        let mut next_beat = Instant::now() + interval;
        loop {
            if !self.wait_until(next_beat) {
                return;
            }
            let result = self.beat();
            // Lost while this heartbeat was stuck, or stopped meanwhile: write nothing more.
            if self.lost.load(Ordering::Acquire) || lock_ignoring_poison(&self.state).stop {
                return;
            }
            match result {
                Ok(()) => next_beat = Instant::now() + interval,
                Err(lost)
                    if lost.is_definitive()
                        || lock_ignoring_poison(&self.beats).last_success.elapsed()
                            >= self.tolerance =>
                {
                    self.mark_lost(&lost);
                    return;
                }
                // Maybe passing: try again sooner than a full interval.
                Err(_) => next_beat = Instant::now() + interval / 4,
            }
        }
    }

    /// Sleeps until `deadline` or a phase change; `false` when asked to stop.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut state = lock_ignoring_poison(&self.state);
        loop {
            if state.stop {
                return false;
            }
            if state.phase_changed {
                state.phase_changed = false;
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = match self.wake.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn beat(&self) -> Result<(), LockLost> {
        let _serial = lock_ignoring_poison(&self.beat);
        let (phase, progress) = {
            let state = lock_ignoring_poison(&self.state);
            (state.phase.clone(), state.progress)
        };
        lock_ignoring_poison(&self.beats).in_flight_since = Some(Instant::now());
        let result = self.guard.heartbeat(&phase, progress);
        let mut beats = lock_ignoring_poison(&self.beats);
        beats.in_flight_since = None;
        if result.is_ok() {
            beats.last_success = Instant::now();
        }
        result
    }

    /// Whether a heartbeat under way has not returned while none got through for the
    /// tolerance; marks the claim lost, with the lock's name, when so.
    fn stuck(&self) -> bool {
        let stuck_for = {
            let beats = lock_ignoring_poison(&self.beats);
            match beats.in_flight_since {
                Some(since) if beats.last_success.elapsed() >= self.tolerance => since.elapsed(),
                _ => return false,
            }
        };
        let why = format!(
            "a heartbeat has not returned for {:.1} s (the share does not answer), and none \
             got through for {:.1} s, half of stale_after",
            stuck_for.as_secs_f64(),
            self.tolerance.as_secs_f64()
        );
        self.mark_lost(&LockLost {
            path: self.guard.path().to_owned(),
            reason: LostReason::Io(io::Error::new(io::ErrorKind::TimedOut, why)),
        });
        true
    }

    /// Marks the claim lost; the first reason given is the one kept.
    fn mark_lost(&self, lost: &LockLost) {
        let mut reason = lost.to_string();
        if let Some(source) = std::error::Error::source(lost) {
            reason = format!("{reason}: {source}");
        }
        let mut state = lock_ignoring_poison(&self.state);
        state.lost_reason.get_or_insert(reason);
        self.lost.store(true, Ordering::Release);
    }
}
