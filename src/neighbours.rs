//! Other programs at work on the same library: the original mediabox tool this one replaces.
//!
//! The original (`scripts/media_update.py` with `scripts/file_lock.py`) claims a file with
//! `<file>.lock` beside it, holding JSON with at least `hostname`, `timestamp` (unix seconds
//! of its own clock) and `file`. It never renews the lock; it treats the lock as free once
//! `timestamp` is more than 30 minutes old by its clock, or when the file does not parse or
//! lacks one of those fields. It converts to H.264, so left side by side the two tools
//! convert each other's output. This module applies the original's own rules, from this
//! side, to never touch a file it holds: the README's "Migrating from the original tool"
//! says why to stop it first.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::scan::Listing;

/// How long the original holds a file after it wrote its lock (its `FileLock(timeout=1800)`).
pub const ORIGINAL_LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A lock that does not parse may be one the original is writing at this moment (it creates
/// the file, then writes the JSON): it is taken as held while it is this young.
const HALF_WRITTEN_GRACE: Duration = Duration::from_secs(60);

/// The original tool's hold on a file.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalHold {
    pub lock: PathBuf,
    pub hostname: Option<String>,
    /// How long ago it was taken, by the younger of the two clocks that say so.
    pub age: Duration,
}

/// The original tool's lock for a media file: `<file>.lock`.
pub fn original_lock_path(media: &Path) -> PathBuf {
    media.with_file_name(original_lock_name(media))
}

/// The file name of [`original_lock_path`].
fn original_lock_name(media: &Path) -> OsString {
    let mut name = media.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    name
}

/// Whether `listing` may hold [`original_lock_name`] of `media`. The name is only hashed, so
/// it is put together in a buffer this thread keeps, not a new one a file.
fn may_hold_original_lock(listing: &Listing, media: &Path) -> bool {
    thread_local! {
        static NAME: RefCell<OsString> = RefCell::new(OsString::new());
    }
    NAME.with_borrow_mut(|name| {
        name.clear();
        name.push(media.file_name().unwrap_or_default());
        name.push(".lock");
        listing.may_hold(name)
    })
}

/// Whether the original tool holds `media` now, by its own rules, read conservatively: the
/// lock's age is the younger of its `timestamp` (the original's clock) and its mtime (the
/// share's or the writer's), so a clock running ahead on either side never frees it early.
pub fn held_by_original(media: &Path, now: SystemTime) -> Option<OriginalHold> {
    let lock = original_lock_path(media);
    let meta = std::fs::metadata(&lock).ok()?;
    let mtime_age = meta
        .modified()
        .ok()
        .map(|m| now.duration_since(m).unwrap_or(Duration::ZERO));
    let content = std::fs::read(&lock).unwrap_or_default();
    let now_unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    judge(&content, mtime_age, now_unix).map(|(hostname, age)| OriginalHold {
        lock,
        hostname,
        age,
    })
}

/// The original's rule on one lock's content: `Some((hostname, age))` while it holds it.
fn judge(
    content: &[u8],
    mtime_age: Option<Duration>,
    now_unix: f64,
) -> Option<(Option<String>, Duration)> {
    let fields = serde_json::from_slice::<serde_json::Value>(content)
        .ok()
        .filter(|v| {
            ["hostname", "timestamp", "file"]
                .iter()
                .all(|k| v.get(k).is_some())
        });
    let Some(fields) = fields else {
        // Not a lock the original honours, unless it is one being written right now.
        return mtime_age
            .filter(|age| *age < HALF_WRITTEN_GRACE)
            .map(|age| (None, age));
    };
    let timestamp = fields["timestamp"].as_f64().unwrap_or(0.0);
    let stamped_age =
        Duration::try_from_secs_f64((now_unix - timestamp).max(0.0)).unwrap_or(Duration::MAX);
    let age = mtime_age.map_or(stamped_age, |m| m.min(stamped_age));
    let hostname = fields["hostname"].as_str().map(String::from);
    (age <= ORIGINAL_LOCK_TIMEOUT).then_some((hostname, age))
}

/// The skip a run or a dry run shows for a file the original holds, as `(host, detail)`;
/// the first in this process also hands `warn` the loud notice that the original is at work.
///
/// With the walk's `listing` of the file's directory at hand (a plan), a lock it did not hold
/// costs no stat; a claim passes `None`, to see the lock as it is now.
pub fn original_skip(
    media: &Path,
    listing: Option<&Listing>,
    now: SystemTime,
    warn: impl FnOnce(String),
) -> Option<(String, String)> {
    // Only the name for the listing: a plan asks this of every file it would convert.
    if listing.is_some_and(|l| !may_hold_original_lock(l, media)) {
        return None;
    }
    let hold = held_by_original(media, now)?;
    if first_sighting() {
        warn(at_work_message(&hold));
    }
    let detail = format!(
        "held by the original mediabox tool ({})",
        hold.lock.display()
    );
    Some((hold.hostname.unwrap_or_else(|| "unknown".into()), detail))
}

static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// True the first time in this process: the original at work is said once, not per file.
pub fn first_sighting() -> bool {
    !ANNOUNCED.swap(true, Ordering::Relaxed)
}

/// What to tell the user the first time the original is seen at work.
pub fn at_work_message(hold: &OriginalHold) -> String {
    format!(
        "THE ORIGINAL MEDIABOX TOOL IS CONVERTING IN THIS LIBRARY ({} on {}, {} min ago). \
         Its files are left to it, but the two tools re-encode each other's output and it \
         ignores this tool's locks: stop media_update.py on every host before running this \
         one (README: Migrating from the original tool)",
        hold.lock.display(),
        hold.hostname.as_deref().unwrap_or("an unknown host"),
        hold.age.as_secs() / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    fn lock(timestamp: f64) -> Vec<u8> {
        format!(
            r#"{{"lock_id": "nas_4242_0a1b2c3d", "hostname": "nas", "pid": 4242,
                "timestamp": {timestamp}, "file": "/media/Movie.mkv",
                "locked_at": "2027-01-15T08:00:00"}}"#
        )
        .into_bytes()
    }

    /// The lock's name is put together in one buffer for file after file: each asks the
    /// listing for its own lock, whatever names came before it.
    #[test]
    fn each_file_asks_the_listing_for_its_own_lock() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a long name.mkv", "b.mkv", "c.mkv", "é.mkv"];
        for name in names {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        for held in ["b.mkv.lock", "é.mkv.lock"] {
            std::fs::write(dir.path().join(held), b"").unwrap();
        }
        let mut files = Vec::new();
        crate::scan::walk(
            dir.path(),
            false,
            crate::scan::WalkOrder::Name,
            &mut |_, batch| files.extend(batch),
            &mut |w| panic!("{w:?}"),
        );
        let asked: Vec<(String, bool)> = files
            .iter()
            .map(|f| {
                let listing = f.listing.as_deref().expect("the walk's listing");
                let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, may_hold_original_lock(listing, &f.path))
            })
            .collect();
        let expected: Vec<(String, bool)> = names
            .iter()
            .map(|n| (n.to_string(), n.starts_with('b') || n.starts_with('é')))
            .collect();
        assert_eq!(asked, expected);
    }

    #[test]
    fn a_lock_is_held_for_thirty_minutes_by_its_timestamp() {
        let held = judge(&lock(NOW - 600.0), None, NOW).expect("10 min old");
        assert_eq!(held, (Some("nas".into()), Duration::from_secs(600)));
        assert!(judge(&lock(NOW - 1799.0), None, NOW).is_some());
        assert!(
            judge(&lock(NOW - 1801.0), None, NOW).is_none(),
            "stale by its rule"
        );
    }

    #[test]
    fn the_younger_clock_decides_so_a_skewed_host_never_frees_it_early() {
        // Its writer's clock ran an hour behind: the timestamp says stale, the share's mtime
        // (2 min) says it was just written.
        let held = judge(&lock(NOW - 3600.0), Some(Duration::from_secs(120)), NOW);
        assert_eq!(held.map(|h| h.1), Some(Duration::from_secs(120)));
        // A timestamp from the future is age zero, not a negative age or a panic.
        assert!(judge(&lock(NOW + 900.0), None, NOW).is_some());
    }

    #[test]
    fn what_the_original_would_not_honour_is_free_unless_being_written() {
        for content in [
            &b""[..],
            b"{not json",
            br#"{"hostname": "nas", "timestamp": 1.0}"#, // no "file"
            b"[1, 2]",
        ] {
            assert!(judge(content, Some(Duration::from_secs(3600)), NOW).is_none());
            assert!(
                judge(content, Some(Duration::from_secs(5)), NOW).is_some(),
                "a lock 5 s old may be mid-write: {content:?}"
            );
        }
    }

    #[test]
    fn its_lock_sits_beside_the_file_and_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("Movie (1999).mkv");
        assert_eq!(
            original_lock_path(&media),
            dir.path().join("Movie (1999).mkv.lock")
        );
        assert!(held_by_original(&media, SystemTime::now()).is_none());
        let now = SystemTime::now();
        let unix = now.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        std::fs::write(original_lock_path(&media), lock(unix.as_secs_f64() - 60.0)).unwrap();
        let hold = held_by_original(&media, now).expect("held");
        assert_eq!(hold.hostname.as_deref(), Some("nas"));
        assert!(at_work_message(&hold).contains("stop media_update.py on every host"));
    }
}
