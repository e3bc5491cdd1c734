//! Whether a lock still has an owner: the pure decision, with every fact injected.
//!
//! Time here is the *file server's* time: "now" is learned from a probe file the server
//! creates, and the owner writes its record's `timestamp` from the server's clock it
//! learned the same way. A lock's mtime is the server's clock too on most shares, but a
//! kernel CIFS client stamps a write with the *writer's* clock, which may be hours off.
//! So the mtime is trusted only while it agrees with the record's `timestamp`; when the
//! two disagree, a lock is stale only once this run has watched it unchanged for the
//! whole limit on its own monotonic clock.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::record::{LockRecord, RecordError};
use super::settings::LockSettings;
use crate::identity::{HostIdentity, Liveness};

/// The longest `stale_after_secs` a record may declare for itself; beyond it a
/// garbage value would keep a dead lock forever.
const MAX_DECLARED_STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How far a lock's mtime and its record's `timestamp` may lie apart and still be taken
/// for two readings of one clock. Both are taken at the same write (the timestamp from
/// the owner's estimate of the server's clock, good to a second or two; sshfs cuts mtimes
/// to whole seconds), so anything beyond this means the mtime is some writer's own clock.
pub(crate) const CLOCKS_AGREE: Duration = Duration::from_secs(120);

/// What a lock file held when it was read.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A record (possibly a legacy one with few fields).
    Record(Box<LockRecord>),
    /// Bytes that are not a record, or a file we may not read.
    Unreadable(String),
}

impl Content {
    /// Reads the bytes of a lock file.
    pub(super) fn from_bytes(bytes: &[u8]) -> Content {
        match LockRecord::parse(bytes) {
            Ok(record) => Content::Record(Box::new(record)),
            Err(RecordError::Empty) => Content::Unreadable("empty".to_owned()),
            Err(err) => Content::Unreadable(err.to_string()),
        }
    }

    /// The record, when there is one.
    pub fn record(&self) -> Option<&LockRecord> {
        match self {
            Content::Record(record) => Some(record),
            Content::Unreadable(_) => None,
        }
    }
}

/// Why a lock is taken to have a working owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveReason {
    /// Written on this host by a process that still runs (same pid, same start).
    OwnerRunning {
        /// The owner's pid.
        pid: u32,
    },
    /// Its last heartbeat is recent enough.
    Heartbeating {
        /// Since the last heartbeat, on the server's clock.
        age: Duration,
        /// After how long without one it would be stale.
        limit: Duration,
    },
    /// This run saw it change recently, whatever its mtime says.
    SeenChanging {
        /// How long ago, on our monotonic clock.
        ago: Duration,
    },
    /// Not (yet) a readable record, but too young to call abandoned: its writer may
    /// be between create and write.
    BeingWritten {
        /// Since it last changed, on the server's clock.
        age: Duration,
        /// How long an unreadable lock is given.
        grace: Duration,
    },
    /// It changed hands several times while we tried to take it.
    Contended,
    /// Its mtime and its record's server-clock timestamp disagree (a share that stamps
    /// writes with the writer's clock, which is off): its age is read from the timestamp,
    /// and it is stale at the latest once this run watched it unchanged for the limit.
    ClocksDisagree {
        /// Since its record's server-clock timestamp.
        age: Duration,
        /// How long this run has watched it unchanged.
        watched: Duration,
        /// How long it must be watched unchanged to be stale.
        limit: Duration,
    },
}

/// Why a lock is taken to be abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// Written on this host by a process that no longer runs (or whose pid now
    /// belongs to another process).
    OwnerGone {
        /// The owner's pid.
        pid: u32,
    },
    /// No heartbeat for longer than the limit, on the server's clock.
    NoHeartbeat {
        /// Since the last heartbeat.
        age: Duration,
        /// The limit it exceeded.
        limit: Duration,
    },
    /// Watched unchanged by this run for longer than the limit (its mtime and
    /// timestamp disagree, so its age could not be read from the share).
    UnchangedWhileWatched {
        /// How long it was watched.
        watched: Duration,
        /// The limit it exceeded.
        limit: Duration,
    },
    /// Unreadable and unchanged for longer than the grace period.
    Abandoned {
        /// Since it last changed.
        age: Duration,
    },
}

/// The judgement on one lock, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Someone works under it: leave it alone.
    Live(LiveReason),
    /// Nobody does: it may be broken by the protocol.
    Stale(StaleReason),
}

impl Verdict {
    /// Whether the lock may be broken.
    pub fn is_stale(&self) -> bool {
        matches!(self, Verdict::Stale(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Live(LiveReason::OwnerRunning { pid }) => {
                write!(f, "live: owner pid {pid} still runs on this host")
            }
            Verdict::Live(LiveReason::Heartbeating { age, limit }) => write!(
                f,
                "live: last heartbeat {} ago (stale after {})",
                HumanDuration(*age),
                HumanDuration(*limit)
            ),
            Verdict::Live(LiveReason::SeenChanging { ago }) => {
                write!(f, "live: seen changing {} ago", HumanDuration(*ago))
            }
            Verdict::Live(LiveReason::BeingWritten { age, grace }) => write!(
                f,
                "live: unreadable but changed {} ago (grace {})",
                HumanDuration(*age),
                HumanDuration(*grace)
            ),
            Verdict::Live(LiveReason::Contended) => f.write_str("live: changing hands"),
            Verdict::Live(LiveReason::ClocksDisagree {
                age,
                watched,
                limit,
            }) => write!(
                f,
                "live: last heartbeat {} ago by its record (its mtime is a writer's clock), \
                 watched unchanged for {} (stale after {})",
                HumanDuration(*age),
                HumanDuration(*watched),
                HumanDuration(*limit)
            ),
            Verdict::Stale(StaleReason::UnchangedWhileWatched { watched, limit }) => write!(
                f,
                "stale: watched unchanged for {} (limit {})",
                HumanDuration(*watched),
                HumanDuration(*limit)
            ),
            Verdict::Stale(StaleReason::OwnerGone { pid }) => {
                write!(f, "stale: owner pid {pid} no longer runs on this host")
            }
            Verdict::Stale(StaleReason::NoHeartbeat { age, limit }) => write!(
                f,
                "stale: no heartbeat for {} (limit {})",
                HumanDuration(*age),
                HumanDuration(*limit)
            ),
            Verdict::Stale(StaleReason::Abandoned { age }) => write!(
                f,
                "stale: unreadable and unchanged for {}",
                HumanDuration(*age)
            ),
        }
    }
}

/// A duration as people read it: `42s`, `3m05s`, `2h01m`.
#[derive(Debug, Clone, Copy)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0..60 if self.0 < Duration::from_secs(10) => write!(f, "{:.1}s", self.0.as_secs_f64()),
            0..60 => write!(f, "{secs}s"),
            60..3600 => write!(f, "{}m{:02}s", secs / 60, secs % 60),
            _ => write!(f, "{}h{:02}m", secs / 3600, secs % 3600 / 60),
        }
    }
}

/// Everything [`judge`] needs to know about one lock, gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    /// What the lock file holds.
    pub content: &'a Content,
    /// Its mtime, stamped by the file server.
    pub mtime: SystemTime,
    /// The file server's clock now.
    pub server_now: SystemTime,
    /// How long ago this run last saw it change (mtime, size or lock id), on our
    /// monotonic clock; `None` if this run never saw it change.
    pub last_change_seen: Option<Duration>,
    /// How long this run has seen it unchanged: since it last changed, or since this run
    /// first saw it, on our monotonic clock.
    pub unchanged_for: Duration,
    /// Who is asking.
    pub us: &'a HostIdentity,
    /// Our thresholds.
    pub settings: &'a LockSettings,
}

impl Facts<'_> {
    /// Since the lock last changed on the server's clock. An mtime in the future
    /// (stamped by a client with a fast clock) counts as "just now": such a lock is
    /// never judged older than it can be shown to be.
    pub fn age(&self) -> Duration {
        self.server_now
            .duration_since(self.mtime)
            .unwrap_or(Duration::ZERO)
    }
}

/// Judges a lock. `liveness` is asked only about a pid recorded on this very host.
pub(crate) fn judge(
    facts: &Facts<'_>,
    liveness: impl FnOnce(u32, Option<&str>) -> Liveness,
) -> Verdict {
    let age = facts.age();
    let record = match facts.content {
        Content::Record(record) => record,
        Content::Unreadable(_) => {
            let grace = facts.settings.unreadable_grace;
            return match facts.last_change_seen {
                Some(ago) if ago < grace => Verdict::Live(LiveReason::SeenChanging { ago }),
                _ if age < grace => Verdict::Live(LiveReason::BeingWritten { age, grace }),
                _ => Verdict::Stale(StaleReason::Abandoned { age }),
            };
        }
    };
    if is_same_host(record, facts.us) {
        match liveness(record.pid, record.process_start.as_deref()) {
            Liveness::Alive => {
                return Verdict::Live(LiveReason::OwnerRunning { pid: record.pid });
            }
            Liveness::Gone => return Verdict::Stale(StaleReason::OwnerGone { pid: record.pid }),
            Liveness::Unknown => {}
        }
    }
    let limit = stale_limit(record, facts.settings);
    match facts.last_change_seen {
        Some(ago) if ago < limit => Verdict::Live(LiveReason::SeenChanging { ago }),
        // The mtime is some writer's clock: the record's own server-clock timestamp
        // tells the age instead, and a lock watched unchanged for the whole limit is
        // stale whatever it says (an owner whose idea of the server's clock is off).
        _ if !mtime_agrees(record, facts.mtime) => {
            let age = timestamp_age(record, facts.server_now);
            let watched = facts.unchanged_for;
            if age >= limit {
                Verdict::Stale(StaleReason::NoHeartbeat { age, limit })
            } else if watched >= limit {
                Verdict::Stale(StaleReason::UnchangedWhileWatched { watched, limit })
            } else {
                Verdict::Live(LiveReason::ClocksDisagree {
                    age,
                    watched,
                    limit,
                })
            }
        }
        _ if age < limit => Verdict::Live(LiveReason::Heartbeating { age, limit }),
        _ => Verdict::Stale(StaleReason::NoHeartbeat { age, limit }),
    }
}

/// Whether the lock's mtime agrees with its record's `timestamp` (written from the
/// server's clock at the same write), so that the mtime can be read as the server's
/// clock. A record without a server-clock timestamp (the original tool's, older
/// versions') leaves only the mtime, which is trusted.
fn mtime_agrees(record: &LockRecord, mtime: SystemTime) -> bool {
    mtime_apart(record, mtime).is_none_or(|apart| apart <= CLOCKS_AGREE)
}

/// Since the record's server-clock `timestamp`; zero when it is in the future.
fn timestamp_age(record: &LockRecord, server_now: SystemTime) -> Duration {
    Duration::try_from_secs_f64(record.timestamp)
        .ok()
        .and_then(|stamped| {
            server_now
                .duration_since(SystemTime::UNIX_EPOCH + stamped)
                .ok()
        })
        .unwrap_or(Duration::ZERO)
}

/// How far the mtime lies from the record's server-clock `timestamp`; `None` when the
/// record has none.
fn mtime_apart(record: &LockRecord, mtime: SystemTime) -> Option<Duration> {
    if !record.timestamp_is_servers() {
        return None;
    }
    let stamped = Duration::try_from_secs_f64(record.timestamp).ok()?;
    if stamped.is_zero() {
        return None;
    }
    let stamped = SystemTime::UNIX_EPOCH + stamped;
    Some(
        mtime
            .duration_since(stamped)
            .unwrap_or_else(|early| early.duration()),
    )
}

/// Same machine id *and* same host name. The name is a second key because
/// containers and cloned VMs can share a machine id while their pids live in
/// different worlds; a mismatch only costs the fast path, never safety.
fn is_same_host(record: &LockRecord, us: &HostIdentity) -> bool {
    record.host_id.as_deref() == Some(us.host_id.as_str()) && record.hostname == us.hostname
}

/// Our limit, or the owner's if it promised a longer one: an owner configured to
/// heartbeat rarely must not be broken by a host configured impatiently.
fn stale_limit(record: &LockRecord, settings: &LockSettings) -> Duration {
    let declared = record
        .stale_after_secs
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .map(|declared| declared.min(MAX_DECLARED_STALE_AFTER));
    declared.map_or(settings.stale_after, |declared| {
        declared.max(settings.stale_after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn us() -> HostIdentity {
        HostIdentity {
            hostname: "nas-1".into(),
            host_id: "machine-1".into(),
        }
    }

    fn settings() -> LockSettings {
        LockSettings {
            heartbeat: MIN,
            stale_after: 30 * MIN,
            unreadable_grace: 3 * MIN,
            guard_timeout: 2 * MIN,
        }
    }

    /// A record whose last heartbeat was at `stamped` on the server's clock (its
    /// `timestamp`).
    fn record_from(hostname: &str, host_id: &str, stamped: SystemTime) -> Content {
        Content::Record(Box::new(LockRecord {
            hostname: hostname.into(),
            pid: 4242,
            timestamp: stamped
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            host_id: Some(host_id.into()),
            process_start: Some("linux:boot:99".into()),
            stale_after_secs: Some(1800.0),
            timestamp_clock: Some(super::super::record::TIMESTAMP_FROM_SERVER.into()),
            ..LockRecord::default()
        }))
    }

    /// A scene on one file server whose clock reads `server_now`.
    struct Scene {
        server_now: SystemTime,
        settings: LockSettings,
        us: HostIdentity,
    }

    impl Scene {
        fn new() -> Scene {
            Scene {
                server_now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                settings: settings(),
                us: us(),
            }
        }

        /// Judges `content` stamped `mtime` by the server, for a pid on another host.
        fn judge(&self, content: &Content, mtime: SystemTime, seen: Option<Duration>) -> Verdict {
            self.judge_with(content, mtime, seen, |_, _| {
                panic!("liveness asked about another host's pid")
            })
        }

        fn judge_with(
            &self,
            content: &Content,
            mtime: SystemTime,
            last_change_seen: Option<Duration>,
            liveness: impl FnOnce(u32, Option<&str>) -> Liveness,
        ) -> Verdict {
            let facts = Facts {
                content,
                mtime,
                server_now: self.server_now,
                last_change_seen,
                // First sight, unless it was seen changing.
                unchanged_for: last_change_seen.unwrap_or(Duration::ZERO),
                us: &self.us,
                settings: &self.settings,
            };
            judge(&facts, liveness)
        }

        /// Judges a lock this run has watched, unchanged, for `watched`.
        fn judge_watched(
            &self,
            content: &Content,
            mtime: SystemTime,
            watched: Duration,
        ) -> Verdict {
            let facts = Facts {
                content,
                mtime,
                server_now: self.server_now,
                last_change_seen: None,
                unchanged_for: watched,
                us: &self.us,
                settings: &self.settings,
            };
            judge(&facts, |_, _| {
                panic!("liveness asked about another host's pid")
            })
        }

        fn ago(&self, age: Duration) -> SystemTime {
            self.server_now - age
        }
    }

    #[test]
    fn other_hosts_lock_is_live_until_stale_after_on_the_server_clock() {
        let scene = Scene::new();
        let other = record_from("nas-2", "machine-2", scene.ago(29 * MIN));
        assert_eq!(
            scene.judge(&other, scene.ago(29 * MIN), None),
            Verdict::Live(LiveReason::Heartbeating {
                age: 29 * MIN,
                limit: 30 * MIN
            })
        );
        let other = record_from("nas-2", "machine-2", scene.ago(30 * MIN));
        assert_eq!(
            scene.judge(&other, scene.ago(30 * MIN), None),
            Verdict::Stale(StaleReason::NoHeartbeat {
                age: 30 * MIN,
                limit: 30 * MIN
            })
        );
    }

    #[test]
    fn on_a_share_that_stamps_the_servers_clock_owner_skew_changes_nothing() {
        // Owners 2 h behind or ahead: their records carry the server's clock they
        // learned, and the server stamps the mtime; both agree.
        let scene = Scene::new();
        for age in [MIN, 29 * MIN] {
            let live = record_from("nas-2", "machine-2", scene.ago(age));
            assert!(
                !scene.judge(&live, scene.ago(age), None).is_stale(),
                "{age:?}"
            );
        }
        let dead = record_from("nas-2", "machine-2", scene.ago(31 * MIN));
        assert!(scene.judge(&dead, scene.ago(31 * MIN), None).is_stale());
    }

    #[test]
    fn on_a_share_that_stamps_the_writers_clock_skew_never_breaks_a_live_lock() {
        // Kernel CIFS: the mtime is the owner's clock, 2 h slow or fast; the record's
        // timestamp is the server's. Before, a 2 h slow owner's live lock was judged
        // "stale: no heartbeat for 2h00m" on first sight.
        let scene = Scene::new();
        for skew in [-2.0 * 3600.0, 2.0 * 3600.0] {
            let shifted = |at: SystemTime| {
                if skew < 0.0 {
                    at - Duration::from_secs_f64(-skew)
                } else {
                    at + Duration::from_secs_f64(skew)
                }
            };
            // Heartbeating: a minute ago.
            let live = record_from("nas-2", "machine-2", scene.ago(MIN));
            let verdict = scene.judge(&live, shifted(scene.ago(MIN)), None);
            assert_eq!(
                verdict,
                Verdict::Live(LiveReason::ClocksDisagree {
                    age: MIN,
                    watched: Duration::ZERO,
                    limit: 30 * MIN
                }),
                "{skew}"
            );
            // Dead for 31 minutes: its timestamp says so, on first sight.
            let dead = record_from("nas-2", "machine-2", scene.ago(31 * MIN));
            let mtime = shifted(scene.ago(31 * MIN));
            assert_eq!(
                scene.judge(&dead, mtime, None),
                Verdict::Stale(StaleReason::NoHeartbeat {
                    age: 31 * MIN,
                    limit: 30 * MIN
                }),
                "{skew}"
            );
            // An owner whose idea of the server's clock was 2 h fast: stale once watched
            // unchanged for the whole limit.
            let confused = record_from("nas-2", "machine-2", scene.server_now + 2 * HOUR);
            let mtime = scene.server_now + 5 * HOUR;
            assert!(!scene.judge_watched(&confused, mtime, 29 * MIN).is_stale());
            assert!(scene.judge_watched(&confused, mtime, 30 * MIN).is_stale());
        }
    }

    #[test]
    fn a_record_without_a_timestamp_is_judged_by_its_mtime() {
        let scene = Scene::new();
        let mut record = LockRecord {
            hostname: "nas-2".into(),
            timestamp_clock: Some(super::super::record::TIMESTAMP_FROM_SERVER.into()),
            ..LockRecord::default()
        };
        for timestamp in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            record.timestamp = timestamp;
            let content = Content::Record(Box::new(record.clone()));
            assert!(scene.judge(&content, scene.ago(31 * MIN), None).is_stale());
        }
    }

    #[test]
    fn mtime_in_the_future_counts_as_fresh() {
        // A client that stamps mtimes with its own clock 3 h fast.
        let scene = Scene::new();
        let other = record_from("nas-2", "machine-2", scene.server_now);
        assert_eq!(
            scene.judge(&other, scene.server_now + 3 * HOUR, None),
            Verdict::Live(LiveReason::ClocksDisagree {
                age: Duration::ZERO,
                watched: Duration::ZERO,
                limit: 30 * MIN
            })
        );
        // A legacy record without a timestamp: the mtime is all there is.
        let legacy = record_from("nas-2", "machine-2", SystemTime::UNIX_EPOCH);
        assert_eq!(
            scene.judge(&legacy, scene.server_now + 3 * HOUR, None),
            Verdict::Live(LiveReason::Heartbeating {
                age: Duration::ZERO,
                limit: 30 * MIN
            })
        );
    }

    #[test]
    fn seen_changing_beats_an_old_mtime_until_it_stops_changing() {
        // A client that stamps mtimes with its own clock 3 h slow: the mtime looks
        // ancient, but this run watched the lock change a minute ago.
        let scene = Scene::new();
        let other = record_from("nas-2", "machine-2", scene.server_now);
        let ancient = scene.ago(3 * HOUR);
        assert_eq!(
            scene.judge(&other, ancient, Some(MIN)),
            Verdict::Live(LiveReason::SeenChanging { ago: MIN })
        );
        assert!(scene.judge(&other, ancient, Some(31 * MIN)).is_stale());
    }

    #[test]
    fn same_host_dead_owner_is_stale_at_once() {
        let scene = Scene::new();
        let ours = record_from("nas-1", "machine-1", scene.server_now);
        let verdict = scene.judge_with(
            &ours,
            scene.server_now,
            Some(Duration::ZERO),
            |pid, token| {
                assert_eq!((pid, token), (4242, Some("linux:boot:99")));
                Liveness::Gone
            },
        );
        assert_eq!(
            verdict,
            Verdict::Stale(StaleReason::OwnerGone { pid: 4242 })
        );
    }

    #[test]
    fn same_host_running_owner_is_live_however_old() {
        let scene = Scene::new();
        let ours = record_from("nas-1", "machine-1", scene.server_now);
        let verdict = scene.judge_with(&ours, scene.ago(10 * HOUR), None, |_, _| Liveness::Alive);
        assert_eq!(
            verdict,
            Verdict::Live(LiveReason::OwnerRunning { pid: 4242 })
        );
    }

    #[test]
    fn same_host_unknown_owner_falls_back_to_the_mtime() {
        let scene = Scene::new();
        let ours = record_from("nas-1", "machine-1", scene.ago(MIN));
        let unknown = |_: u32, _: Option<&str>| Liveness::Unknown;
        assert!(
            !scene
                .judge_with(&ours, scene.ago(MIN), None, unknown)
                .is_stale()
        );
        let ours = record_from("nas-1", "machine-1", scene.ago(31 * MIN));
        assert!(
            scene
                .judge_with(&ours, scene.ago(31 * MIN), None, unknown)
                .is_stale()
        );
    }

    #[test]
    fn shared_machine_id_with_another_name_is_another_host() {
        // A cloned VM or container: same machine id, different host name. Its pids
        // mean nothing here, so liveness must not be asked.
        let scene = Scene::new();
        let clone = record_from("nas-1-clone", "machine-1", scene.server_now);
        assert!(!scene.judge(&clone, scene.ago(MIN), None).is_stale());
    }

    #[test]
    fn legacy_record_is_judged_by_mtime_alone() {
        let scene = Scene::new();
        let legacy = Content::Record(Box::new(LockRecord {
            hostname: "nas-1".into(),
            pid: 4242,
            timestamp: 0.0,
            ..LockRecord::default()
        }));
        assert!(!scene.judge(&legacy, scene.ago(MIN), None).is_stale());
        assert!(scene.judge(&legacy, scene.ago(30 * MIN), None).is_stale());
    }

    #[test]
    fn owner_declared_longer_limit_wins_but_is_capped() {
        let scene = Scene::new();
        let mut patient = LockRecord {
            stale_after_secs: Some(2.0 * 3600.0),
            ..LockRecord::default()
        };
        let verdict = scene.judge(
            &Content::Record(Box::new(patient.clone())),
            scene.ago(HOUR),
            None,
        );
        assert!(!verdict.is_stale(), "{verdict}");
        for garbage in [f64::INFINITY, f64::NAN, -1.0, 1e300, 1e10] {
            patient.stale_after_secs = Some(garbage);
            let verdict = scene.judge(
                &Content::Record(Box::new(patient.clone())),
                scene.ago(25 * HOUR),
                None,
            );
            assert!(verdict.is_stale(), "{garbage}: {verdict}");
        }
        // A shorter declared limit never shortens ours.
        patient.stale_after_secs = Some(1.0);
        let verdict = scene.judge(&Content::Record(Box::new(patient)), scene.ago(MIN), None);
        assert!(!verdict.is_stale());
    }

    #[test]
    fn unreadable_lock_gets_only_the_grace_period() {
        let scene = Scene::new();
        for content in [Content::from_bytes(b""), Content::from_bytes(b"{\"hostna")] {
            assert_eq!(
                scene.judge(&content, scene.ago(MIN), None),
                Verdict::Live(LiveReason::BeingWritten {
                    age: MIN,
                    grace: 3 * MIN
                })
            );
            assert_eq!(
                scene.judge(&content, scene.ago(3 * MIN), None),
                Verdict::Stale(StaleReason::Abandoned { age: 3 * MIN })
            );
            // Still being rewritten under our eyes.
            assert!(!scene.judge(&content, scene.ago(HOUR), Some(MIN)).is_stale());
        }
    }

    #[test]
    fn verdicts_read_well() {
        let stale = Verdict::Stale(StaleReason::NoHeartbeat {
            age: 2 * HOUR + 3 * MIN,
            limit: 30 * MIN,
        });
        assert_eq!(
            stale.to_string(),
            "stale: no heartbeat for 2h03m (limit 30m00s)"
        );
        let live = Verdict::Live(LiveReason::Heartbeating {
            age: Duration::from_millis(2500),
            limit: 30 * MIN,
        });
        assert_eq!(
            live.to_string(),
            "live: last heartbeat 2.5s ago (stale after 30m00s)"
        );
    }
}
