//! Host presence on the share: each converting host keeps one small record in a hidden
//! folder at the library root, so that `status` and `dashboard` can show every host, idle,
//! working, stopped or gone quiet, from the share alone (there is no server).
//!
//! A record is rewritten whole (temp file and rename, so no reader ever sees half of one)
//! every few seconds while the run lasts, carrying what the host is doing; a clean exit
//! writes it one last time as `stopped`. A host that dies leaves its record as it was, and
//! readers see it go quiet: judged, like a lock (`docs/locking.md`), only by times one clock
//! made. Either the file server's (the record's mtime against a probe stamped the same way)
//! or the reader's monotonic clock watching the record unchanged; never the writer's clock
//! against the reader's.
//!
//! The run reports into the one presence of its process through free functions
//! ([`job_update`], [`job_ended`], [`converted`], [`failed`]) that cost a mutex and do
//! nothing when no presence is published (dry runs, `--file`, tests of other modules).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Flush};
use crate::clock;
use crate::config::{ConvertConfig, Target};
use crate::identity::{self, HostIdentity, Liveness};
use crate::lock::{LOCK_SUFFIX, Progress};
use crate::output::{Event, Reporter};

/// The hidden folder at the library root that holds one record per host.
pub const PRESENCE_DIR: &str = ".mediabox-hosts";

/// The record format's version, written into every record.
pub const SCHEMA_VERSION: u32 = 1;

/// Records are renewed at least this often, however long the lock heartbeat: the dashboard
/// shows progress from them, and a record of a few hundred bytes costs the share nothing.
const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// Nor more often than this, whatever the heartbeat.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(200);

/// A host whose record has not changed for this many renewal intervals has gone quiet...
const QUIET_AFTER_RENEWALS: u32 = 3;

/// ...and never sooner than this: network clients show other hosts' writes late (sshfs
/// 20 s, NFS attribute caches up to 60 s).
const MIN_QUIET_AFTER: Duration = Duration::from_secs(90);

/// Records not renewed for this long (on the file server's clock) are removed by the next
/// host that starts: their hosts have been retired or renamed.
pub const RETIRE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The GPUs are asked for this long after the start at most (or one renewal, if sooner).
const GPUS_AFTER: Duration = Duration::from_secs(5);

/// How soon a record that could not be written is tried again.
const RETRY_FAILED_WRITE: Duration = Duration::from_secs(1);

/// A temp or clock-probe file this old was left by a writer that crashed.
const LEFTOVER_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A reader reads at most this many records...
const MAX_RECORDS: usize = 1000;

/// ...of at most this many bytes each: a record is well under 4 KiB, and a reader must
/// never be made to swallow a huge file somebody dropped into the folder.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// What a host is doing, as its record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Converting at least one file.
    Working,
    /// Running, but converting nothing right now (scanning, or out of work).
    #[default]
    Idle,
    /// Its run ended cleanly.
    Stopped,
}

/// One file a host is converting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    /// The file, relative to the library root, `/`-separated.
    pub file: String,
    /// `claimed`, `transcoding`, `verifying`, `swapping`...
    pub phase: String,
    /// 0 to 100, while transcoding.
    pub percent: Option<f64>,
    /// Frames per second, when ffmpeg has reported them.
    pub fps: Option<f64>,
    /// Seconds to go, when known.
    pub eta_secs: Option<f64>,
}

/// The content of one host's presence file.
///
/// Times written by the host (`started_at`, `seen_at`) are its own clock's, for people:
/// no reader compares them with its own clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceRecord {
    pub schema: u32,
    /// Host name, for people.
    pub host: String,
    /// Stable machine id (the lock records' `host_id`).
    pub host_id: String,
    /// The process that writes this record.
    pub pid: u32,
    /// Its start token, so a reader on the same host can tell it is gone at once.
    pub process_start: Option<String>,
    /// media-converter's version.
    pub version: String,
    /// Operating system and architecture, e.g. `linux x86_64`.
    pub os: String,
    /// The encoders that produced files in this run, in the order first used.
    pub encoders: Vec<String>,
    /// GPUs the host has: NVIDIA GPUs by name, and Linux render nodes.
    pub gpus: Vec<String>,
    pub activity: Activity,
    /// Files being converted now.
    pub jobs: Vec<Job>,
    /// Files converted in this run.
    pub converted: u64,
    /// Files failed in this run.
    pub failed: u64,
    /// Bytes saved in this run.
    pub saved_bytes: u64,
    /// When the run started (RFC 3339, the host's clock).
    pub started_at: String,
    /// When the record was last written (RFC 3339, the host's clock).
    pub seen_at: String,
    /// Incremented on every write: a reader that sees it change knows the host is alive,
    /// whatever the mtimes say.
    pub beat: u64,
    /// How often the host renews the record.
    pub renew_secs: f64,
}

impl PresenceRecord {
    /// Reads a record, forgiving unknown and missing fields (records of other versions).
    pub fn parse(bytes: &[u8]) -> Result<PresenceRecord, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !value.is_object() {
            return Err("not a JSON object".into());
        }
        PresenceRecord::deserialize(value).map_err(|e| e.to_string())
    }

    /// After how long unchanged this record's host counts as gone quiet.
    pub fn quiet_after(&self) -> Duration {
        let renew = if self.renew_secs.is_finite() && self.renew_secs > 0.0 {
            Duration::from_secs_f64(self.renew_secs.min(3600.0))
        } else {
            MAX_RENEW_INTERVAL
        };
        (renew * QUIET_AFTER_RENEWALS).max(MIN_QUIET_AFTER)
    }
}

// ------------------------------------------------------------------------------------------
// Publishing this host's record.
// ------------------------------------------------------------------------------------------

/// This process's record on the share, renewed by a background thread until dropped; the
/// drop writes it once more as `stopped`.
#[derive(Debug)]
pub struct Presence {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    file: PathBuf,
    interval: Duration,
    board: Mutex<Board>,
    wake: Condvar,
}

#[derive(Debug)]
struct Board {
    record: PresenceRecord,
    /// Jobs by lock file: the heartbeat knows its lock, not the run's names.
    jobs: BTreeMap<PathBuf, Job>,
    changed: bool,
    /// Something readers should see before the next renewal (the GPUs, once known).
    write_now: bool,
    stop: bool,
}

/// The presence of this process, when one is published.
fn current() -> &'static Mutex<Option<Arc<Shared>>> {
    static CURRENT: OnceLock<Mutex<Option<Arc<Shared>>>> = OnceLock::new();
    CURRENT.get_or_init(|| Mutex::new(None))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Applies `update` to the published presence, if any; with `file`, only when that file lies
/// in its library (the run's own claims, nothing else).
fn with_board(file: Option<&Path>, update: impl FnOnce(&mut Board)) {
    let shared = lock(current()).clone();
    if let Some(shared) = shared.filter(|s| file.is_none_or(|f| f.starts_with(&s.root))) {
        let mut board = lock(&shared.board);
        update(&mut board);
        board.changed = true;
        shared.wake.notify_all();
    }
}

/// A file's heartbeat reports its phase and progress (cheap: no I/O).
pub fn job_update(lock_file: &Path, phase: &str, progress: Option<Progress>) {
    with_board(Some(lock_file), |board| {
        let job = board.jobs.entry(lock_file.to_owned()).or_default();
        phase.clone_into(&mut job.phase);
        job.percent = progress.map(|p| p.percent);
        job.fps = progress.and_then(|p| p.fps);
        job.eta_secs = progress.and_then(|p| p.eta_secs);
    });
}

/// A file's heartbeat stopped: the host no longer works on it.
pub fn job_ended(lock_file: &Path) {
    with_board(Some(lock_file), |board| {
        board.jobs.remove(lock_file);
    });
}

/// The run converted a file, saving `saved_bytes`, with `encoder`.
pub fn converted(saved_bytes: u64, encoder: &str) {
    with_board(None, |board| {
        let record = &mut board.record;
        record.converted += 1;
        record.saved_bytes += saved_bytes;
        if !record.encoders.iter().any(|e| e == encoder) {
            record.encoders.push(encoder.to_owned());
        }
    });
}

/// The run failed a file.
pub fn failed() {
    with_board(None, |board| board.record.failed += 1);
}

/// Publishes this host's presence for a conversion run over a library (`--dir`); dry runs
/// and `--file` runs publish none. A share where the record cannot be written gets one
/// warning, and the run goes on without it.
pub fn publish(config: &ConvertConfig, reporter: &Reporter) -> Option<Presence> {
    let Target::Dir(root) = &config.target else {
        return None;
    };
    if config.dry_run || !root.is_dir() {
        return None;
    }
    match Presence::start(root, &HostIdentity::current(), config.lock.heartbeat) {
        Ok(presence) => Some(presence),
        Err(err) => {
            reporter.emit(Event::Warning {
                file: Some(root.join(PRESENCE_DIR).to_string_lossy().into_owned()),
                message: format!(
                    "cannot write this host's presence record ({err}): `status` and \
                     `dashboard` will not show this host; the run goes on"
                ),
            });
            None
        }
    }
}

impl Presence {
    /// Publishes this host's record under `root` (the library), renewed every `heartbeat`
    /// (at most every 10 s), and starts reporting the run's jobs into it. The first write
    /// happens here, so a share where it cannot be written says so at once.
    pub fn start(
        root: &Path,
        identity: &HostIdentity,
        heartbeat: Duration,
    ) -> io::Result<Presence> {
        let dir = root.join(PRESENCE_DIR);
        fs::create_dir_all(&dir)?;
        let file = dir.join(record_file_name(&dir, identity));
        let interval = heartbeat.clamp(MIN_RENEW_INTERVAL, MAX_RENEW_INTERVAL);
        let pid = std::process::id();
        let record = PresenceRecord {
            schema: SCHEMA_VERSION,
            host: identity.hostname.clone(),
            host_id: identity.host_id.clone(),
            pid,
            process_start: identity::process_start_token(pid),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            started_at: clock::now_rfc3339(),
            renew_secs: interval.as_secs_f64(),
            ..PresenceRecord::default()
        };
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            file,
            interval,
            board: Mutex::new(Board {
                record,
                jobs: BTreeMap::new(),
                changed: false,
                write_now: false,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        shared.write()?;
        let thread = std::thread::Builder::new().name("presence".into()).spawn({
            let shared = Arc::clone(&shared);
            move || shared.run()
        })?;
        *lock(current()) = Some(Arc::clone(&shared));
        Ok(Presence {
            shared,
            thread: Some(thread),
        })
    }

    /// The record file this process writes.
    #[cfg(test)]
    pub fn file(&self) -> &Path {
        &self.shared.file
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        {
            let mut current = lock(current());
            if current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.shared))
            {
                *current = None;
            }
        }
        {
            let mut board = lock(&self.shared.board);
            board.stop = true;
            board.jobs.clear();
            board.record.activity = Activity::Stopped;
        }
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Best effort: a record left `working` is seen to go quiet instead.
        let _ = self.shared.write();
    }
}

impl Shared {
    fn run(self: &Arc<Self>) {
        // What GPUs the host has, asked once on a thread of its own: NVML may take seconds
        // (15 at worst), which must delay neither the renewals nor the end of a short run.
        let asking = Arc::clone(self);
        let _ = std::thread::Builder::new()
            .name("presence-gpus".into())
            .spawn(move || {
                // Not while the run starts: its encoder trials are on the critical path.
                std::thread::sleep(asking.interval.min(GPUS_AFTER));
                let gpus = gpus();
                let mut board = lock(&asking.board);
                board.record.gpus = gpus;
                board.write_now = true;
                drop(board);
                asking.wake.notify_all();
            });
        retire_old_records(&self.file);
        let mut next = Instant::now() + self.interval;
        loop {
            {
                let mut board = lock(&self.board);
                loop {
                    if board.stop {
                        return;
                    }
                    let now = Instant::now();
                    // A job that starts or ends is shown at once, progress at the interval.
                    let started_or_ended =
                        board.changed && board.jobs.len() != board.record.jobs.len();
                    if now >= next || started_or_ended || board.write_now {
                        break;
                    }
                    board = match self.wake.wait_timeout(board, next - now) {
                        Ok((board, _)) => board,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            }
            // A failed write is retried within a second, so that a job starting or ending
            // is not hidden for a whole interval; readers see the host go quiet if it never
            // gets through.
            let retry_in = match self.write() {
                Ok(()) => self.interval,
                Err(_) => self.interval.min(RETRY_FAILED_WRITE),
            };
            next = Instant::now() + retry_in;
        }
    }

    /// Writes the record: a temp file beside it, flushed, renamed over it.
    fn write(&self) -> io::Result<()> {
        let bytes = {
            let mut board = lock(&self.board);
            let board = &mut *board;
            board.changed = false;
            board.write_now = false;
            board.record.jobs = board
                .jobs
                .iter()
                .map(|(lock_file, job)| Job {
                    file: relative_media(&self.root, lock_file),
                    ..job.clone()
                })
                .collect();
            if board.record.activity != Activity::Stopped {
                board.record.activity = if board.jobs.is_empty() {
                    Activity::Idle
                } else {
                    Activity::Working
                };
            }
            board.record.beat += 1;
            board.record.seen_at = clock::now_rfc3339();
            let mut bytes = serde_json::to_vec_pretty(&board.record).map_err(io::Error::other)?;
            bytes.push(b'\n');
            bytes
        };
        atomic::replace(&self.file, &bytes, Flush::NotNeeded)
    }
}

/// The media file a lock file claims, relative to the library, `/`-separated.
fn relative_media(root: &Path, lock_file: &Path) -> String {
    let relative = lock_file.strip_prefix(root).unwrap_or(lock_file);
    let text = relative.to_string_lossy().replace('\\', "/");
    text.strip_suffix(LOCK_SUFFIX).unwrap_or(&text).to_owned()
}

/// `<host id>.json`, unless another process of this host that still runs writes that one
/// (two runs on one machine): then `<host id>-<pid>.json`.
fn record_file_name(dir: &Path, identity: &HostIdentity) -> String {
    let id: String = identity
        .host_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let shared_name = format!("{id}.json");
    let ours = std::process::id();
    let taken = read_bounded(&dir.join(&shared_name))
        .ok()
        .and_then(|bytes| PresenceRecord::parse(&bytes).ok())
        .is_some_and(|other| {
            other.host_id == identity.host_id
                && other.pid != ours
                && other.activity != Activity::Stopped
                && identity::process_liveness(other.pid, other.process_start.as_deref())
                    == Liveness::Alive
        });
    if taken {
        format!("{id}-{ours}.json")
    } else {
        shared_name
    }
}

/// Removes records nobody renewed for [`RETIRE_AFTER`], and temp and probe files a crashed
/// writer left a day ago or more, judged against the mtime of our own record, just written:
/// all stamped the same way by the same file server.
fn retire_old_records(ours: &Path) {
    let Some(dir) = ours.parent() else { return };
    let Ok(server_now) = crate::fresh::metadata(ours).and_then(|m| m.modified()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok).take(MAX_RECORDS * 2) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let limit = if name.starts_with('.') && (name.ends_with(".tmp") || name.ends_with(".probe"))
        {
            LEFTOVER_AFTER
        } else if name.ends_with(".json") && !name.starts_with('.') {
            RETIRE_AFTER
        } else {
            continue;
        };
        let old = |mtime: SystemTime| server_now.duration_since(mtime).unwrap_or_default() > limit;
        let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        // Asked again past the client's cache before a record is removed: a cached mtime
        // would make one renewed a moment ago look as old as the cache.
        let fresh_mtime = || crate::fresh::metadata(&path).and_then(|m| m.modified());
        if path != ours && old(mtime) && fresh_mtime().is_ok_and(old) {
            let _ = fs::remove_file(&path);
        }
    }
}

fn gpus() -> Vec<String> {
    use crate::gpu::{Nvidia, query_nvidia, render_nodes};
    // NVML and the render nodes alone: the record names GPUs, and asking ffmpeg anything here
    // would start one more ffmpeg in every run (under Wine, one that a kill mid-start can
    // leave behind).
    let mut gpus = Vec::new();
    if let Nvidia::Available { gpus: nvidia, .. } = query_nvidia() {
        gpus.extend(nvidia.into_iter().map(|gpu| gpu.name));
    }
    gpus.extend(
        render_nodes(Path::new("/dev/dri"))
            .iter()
            .map(|node| node.to_string_lossy().into_owned()),
    );
    gpus
}

// ------------------------------------------------------------------------------------------
// Reading every host's record.
// ------------------------------------------------------------------------------------------

/// One record file as read from the share.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    /// Its mtime, as the file server stamped it.
    pub mtime: SystemTime,
    /// The record, or why it could not be read.
    pub record: Result<PresenceRecord, String>,
}

/// Every record under `root`'s presence folder, at most [`MAX_RECORDS`], each read up to
/// [`MAX_RECORD_BYTES`]. A library no host has published to has none.
pub fn read_all(root: &Path) -> Vec<Found> {
    read_dir_bounded(&root.join(PRESENCE_DIR))
}

fn read_dir_bounded(dir: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .take(MAX_RECORDS)
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            // As the file server has it now: a client's cached mtime would age a host that
            // just renewed its record by as long as the cache keeps it (sshfs: 20 s).
            let mtime = crate::fresh::metadata(&path)
                .and_then(|m| m.modified())
                .ok()?;
            let record = read_bounded(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| PresenceRecord::parse(&bytes));
            Some(Found {
                path,
                mtime,
                record,
            })
        })
        .collect()
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(io::Error::other(format!(
            "larger than {MAX_RECORD_BYTES} bytes: not a presence record"
        )));
    }
    Ok(bytes)
}

/// A host as a reader judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Working,
    Idle,
    Stopped,
    /// It says it runs, but has not renewed its record for [`PresenceRecord::quiet_after`]:
    /// asleep, cut off from the share, or crashed.
    GoneQuiet,
}

impl HostState {
    /// The word people read.
    pub fn word(self) -> &'static str {
        match self {
            HostState::Working => "working",
            HostState::Idle => "idle",
            HostState::Stopped => "stopped",
            HostState::GoneQuiet => "gone quiet",
        }
    }
}

/// How long a record has gone unchanged, by a clock a reader may trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    /// Since its mtime, on the file server's clock.
    ServerClock(Duration),
    /// Since the reader, watching on its monotonic clock, saw it change.
    Watched(Duration),
    /// At least this long: unchanged since the reader began watching it.
    WatchedFromStart(Duration),
    /// The reader has no clock for it yet (it has just started watching).
    Unknown,
}

impl Unchanged {
    /// The clock it was measured on, for people: `server`, `watched`, `watched_from_start`.
    pub fn clock(self) -> Option<&'static str> {
        match self {
            Unchanged::ServerClock(_) => Some("server"),
            Unchanged::Watched(_) => Some("watched"),
            Unchanged::WatchedFromStart(_) => Some("watched_from_start"),
            Unchanged::Unknown => None,
        }
    }

    /// The duration, when there is one.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Unchanged::ServerClock(d) | Unchanged::Watched(d) | Unchanged::WatchedFromStart(d) => {
                Some(d)
            }
            Unchanged::Unknown => None,
        }
    }
}

/// Judges a record: what its host is doing, as far as the reader can tell.
pub fn judge(record: &PresenceRecord, unchanged: Unchanged) -> HostState {
    if record.activity == Activity::Stopped {
        return HostState::Stopped;
    }
    if unchanged
        .duration()
        .is_some_and(|d| d > record.quiet_after())
    {
        return HostState::GoneQuiet;
    }
    match record.activity {
        Activity::Working => HostState::Working,
        Activity::Idle | Activity::Stopped => HostState::Idle,
    }
}

/// The file server's clock now, learned by stamping a probe file in the presence folder the
/// way records are stamped (created, written, renamed), reading it back and removing it.
/// `None` where nothing may be written (a read-only share).
pub fn server_now(root: &Path) -> Option<SystemTime> {
    let dir = root.join(PRESENCE_DIR);
    if !dir.is_dir() {
        return None;
    }
    let probe = dir.join(format!(".clock-{}.probe", std::process::id()));
    let before = Instant::now();
    let stamped =
        atomic::write_atomic(&probe, b"\n").and_then(|()| fs::metadata(&probe)?.modified());
    let _ = fs::remove_file(&probe);
    Some(stamped.ok()? + before.elapsed() / 2)
}

/// How long each record has gone unchanged on the file server's clock, for a one-shot
/// reader that may write a probe (`status`, `metrics`); `Unknown` where none can be written.
pub fn by_server_clock(root: &Path, found: &[Found]) -> Vec<Unchanged> {
    let now = if found.is_empty() {
        None
    } else {
        server_now(root)
    };
    found
        .iter()
        .map(|f| match now {
            Some(now) => Unchanged::ServerClock(now.duration_since(f.mtime).unwrap_or_default()),
            None => Unchanged::Unknown,
        })
        .collect()
}

/// Follows records over time on the reader's monotonic clock, for a reader that runs long
/// and must not write to the share (the dashboard).
#[derive(Debug, Default)]
pub struct Watcher {
    /// Each record's fingerprint, when it was last seen to change (or first seen), and
    /// whether it has been seen to change at all.
    seen: HashMap<PathBuf, (Fingerprint, Instant, bool)>,
}

type Fingerprint = (SystemTime, u64, u32, String);

impl Watcher {
    /// How long each record has been seen unchanged; forgets records that are gone.
    pub fn observe(&mut self, found: &[Found]) -> Vec<Unchanged> {
        let now = Instant::now();
        let mut seen = HashMap::with_capacity(found.len());
        let judged = found
            .iter()
            .map(|f| {
                let print = match &f.record {
                    Ok(r) => (f.mtime, r.beat, r.pid, r.host_id.clone()),
                    Err(_) => (f.mtime, 0, 0, String::new()),
                };
                let (unchanged, since, changed) = match self.seen.get(&f.path) {
                    // First sight: nothing says how long it has been like this.
                    None => (Unchanged::Unknown, now, false),
                    Some((before, ..)) if *before != print => {
                        (Unchanged::Watched(Duration::ZERO), now, true)
                    }
                    Some((_, since, true)) => (Unchanged::Watched(now - *since), *since, true),
                    Some((_, since, false)) => {
                        (Unchanged::WatchedFromStart(now - *since), *since, false)
                    }
                };
                seen.insert(f.path.clone(), (print, since, changed));
                unchanged
            })
            .collect();
        self.seen = seen;
        judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One presence per process: the tests that publish one take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn identity(name: &str) -> HostIdentity {
        HostIdentity {
            hostname: name.into(),
            host_id: format!("{name}-id"),
        }
    }

    fn record(activity: Activity, renew_secs: f64) -> PresenceRecord {
        PresenceRecord {
            activity,
            renew_secs,
            ..PresenceRecord::default()
        }
    }

    #[test]
    fn states_follow_the_record_until_it_goes_quiet() {
        let working = record(Activity::Working, 60.0);
        let quiet = working.quiet_after();
        assert_eq!(quiet, Duration::from_secs(180));
        for unchanged in [
            Unchanged::Unknown,
            Unchanged::ServerClock(quiet),
            Unchanged::Watched(Duration::from_secs(5)),
        ] {
            assert_eq!(judge(&working, unchanged), HostState::Working);
        }
        assert_eq!(
            judge(
                &working,
                Unchanged::ServerClock(quiet + Duration::from_secs(1))
            ),
            HostState::GoneQuiet
        );
        assert_eq!(
            judge(
                &record(Activity::Idle, 1.0),
                Unchanged::Watched(Duration::from_secs(89))
            ),
            HostState::Idle,
            "never quiet before network clients could have shown a renewal"
        );
        assert_eq!(
            judge(
                &record(Activity::Idle, 1.0),
                Unchanged::Watched(Duration::from_secs(91))
            ),
            HostState::GoneQuiet
        );
        // A clean exit is final, however old.
        assert_eq!(
            judge(
                &record(Activity::Stopped, 1.0),
                Unchanged::ServerClock(Duration::from_secs(1 << 30))
            ),
            HostState::Stopped
        );
        // A garbage interval cannot keep a dead host "working" for ever.
        assert_eq!(
            record(Activity::Working, f64::INFINITY).quiet_after(),
            Duration::from_secs(90)
        );
        assert_eq!(
            record(Activity::Working, 1e12).quiet_after(),
            Duration::from_secs(3 * 3600)
        );
    }

    #[test]
    fn a_watcher_trusts_only_what_it_saw_change() {
        let _serial = lock(&SERIAL);
        let dir = tempfile::tempdir().unwrap();
        let presence =
            Presence::start(dir.path(), &identity("den"), Duration::from_secs(3600)).unwrap();
        // The second write, with the GPUs, comes as soon as they are known.
        let beat = || read_all(dir.path())[0].record.as_ref().unwrap().beat;
        let deadline = Instant::now() + Duration::from_secs(20);
        while beat() < 2 {
            assert!(Instant::now() < deadline, "the thread never wrote");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut watcher = Watcher::default();
        let first = watcher.observe(&read_all(dir.path()));
        assert_eq!(first, vec![Unchanged::Unknown]);
        std::thread::sleep(Duration::from_millis(20));
        let second = watcher.observe(&read_all(dir.path()));
        assert!(
            matches!(second[0], Unchanged::WatchedFromStart(d) if d >= Duration::from_millis(20)),
            "{second:?}"
        );
        // A renewal (a job starting) resets it.
        job_update(&dir.path().join("a.mkv.mediabox.lock"), "transcoding", None);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = read_all(dir.path());
            let jobs = found[0].record.as_ref().unwrap().jobs.len();
            let seen = watcher.observe(&found);
            if jobs == 1 {
                assert_eq!(seen[0], Unchanged::Watched(Duration::ZERO));
                std::thread::sleep(Duration::from_millis(20));
                let after = watcher.observe(&read_all(dir.path()));
                assert!(
                    matches!(after[0], Unchanged::Watched(d) if d >= Duration::from_millis(20)),
                    "{after:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the job never reached the record"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(presence);
    }

    #[test]
    fn a_record_carries_the_run_and_a_clean_exit_marks_it_stopped() {
        let _serial = lock(&SERIAL);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let presence = Presence::start(root, &identity("den"), Duration::from_millis(200)).unwrap();
        assert_eq!(presence.file(), root.join(PRESENCE_DIR).join("den-id.json"));
        let lock_file = root.join("Movies").join("Heat.mkv.mediabox.lock");
        job_update(
            &lock_file,
            "transcoding",
            Some(Progress {
                percent: 42.5,
                fps: Some(30.0),
                eta_secs: Some(12.0),
            }),
        );
        // Claims outside the library are not this run's.
        job_update(Path::new("/elsewhere/b.mkv.mediabox.lock"), "claimed", None);
        converted(1000, "libx265");
        converted(500, "libx265");
        failed();
        let deadline = Instant::now() + Duration::from_secs(10);
        let record = loop {
            let found = read_all(root);
            assert_eq!(found.len(), 1);
            let record = found[0].record.clone().unwrap();
            if record.converted == 2 && record.failed == 1 && !record.jobs.is_empty() {
                break record;
            }
            assert!(Instant::now() < deadline, "never renewed: {record:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(record.activity, Activity::Working);
        assert_eq!(
            (record.host.as_str(), record.host_id.as_str()),
            ("den", "den-id")
        );
        assert_eq!(record.pid, std::process::id());
        assert_eq!(record.saved_bytes, 1500);
        assert_eq!(record.encoders, vec!["libx265".to_string()]);
        assert_eq!(record.jobs.len(), 1, "{:?}", record.jobs);
        assert_eq!(record.jobs[0].file, "Movies/Heat.mkv");
        assert_eq!(record.jobs[0].percent, Some(42.5));
        assert!(record.version.starts_with(env!("CARGO_PKG_VERSION")));

        job_ended(&lock_file);
        drop(presence);
        let last = read_all(root)[0].record.clone().unwrap();
        assert_eq!(last.activity, Activity::Stopped);
        assert!(last.jobs.is_empty());
        assert!(last.beat > record.beat);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(root.join(PRESENCE_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Reports with no presence published are ignored.
        converted(1, "x");
    }

    #[test]
    fn readers_are_bounded_and_forgiving() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(PRESENCE_DIR);
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join("big.json"), vec![b' '; 100_000]).unwrap();
        fs::write(folder.join("garbled.json"), b"{not json").unwrap();
        fs::write(
            folder.join("future.json"),
            br#"{"host":"nas","activity":"idle","new_field":[1]}"#,
        )
        .unwrap();
        fs::write(folder.join(".x.json.1.tmp"), b"{}").unwrap();
        let found = read_all(dir.path());
        assert_eq!(found.len(), 3, "temp files are not records: {found:?}");
        let by_name = |n: &str| found.iter().find(|f| f.path.ends_with(n)).unwrap();
        assert!(
            by_name("big.json")
                .record
                .as_ref()
                .unwrap_err()
                .contains("larger")
        );
        assert!(by_name("garbled.json").record.is_err());
        assert_eq!(by_name("future.json").record.as_ref().unwrap().host, "nas");
        assert!(server_now(dir.path()).is_some());
        assert_eq!(read_all(dir.path()).len(), 3, "the clock probe is gone");
    }

    #[test]
    fn old_records_are_retired_by_the_servers_clock() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join(PRESENCE_DIR);
        fs::create_dir_all(&folder).unwrap();
        let old = folder.join("old.json");
        let recent = folder.join("recent.json");
        for file in [&old, &recent] {
            fs::write(file, b"{}").unwrap();
        }
        let day = Duration::from_secs(24 * 3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - 31 * day)
            .unwrap();
        File::options()
            .write(true)
            .open(&recent)
            .unwrap()
            .set_modified(SystemTime::now() - 29 * day)
            .unwrap();
        let left = folder.join(".gone.json.123.tmp");
        let fresh_temp = folder.join(".busy.json.456.tmp");
        for file in [&left, &fresh_temp] {
            fs::write(file, b"{").unwrap();
        }
        File::options()
            .write(true)
            .open(&left)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * day)
            .unwrap();
        let ours = folder.join("ours.json");
        fs::write(&ours, b"{}").unwrap();
        retire_old_records(&ours);
        assert!(!old.exists() && !left.exists());
        assert!(recent.exists() && ours.exists() && fresh_temp.exists());
    }
}
