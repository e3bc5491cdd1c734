//! What a directory on the share can do, measured rather than assumed: the facts the lock
//! protocol and the swap build on (exclusive create, rename over, hard links, the file
//! server's clock and whose clock stamps a write; see `docs/locking.md`), and a conversion's
//! own steps on a work file, for `media-converter doctor --dir`. Also the one step of a
//! conversion that is about the share rather than the media: [`flush`].
//!
//! Every probe file is hidden, named with a random nonce so that hosts checking the same
//! share at once never meet, and removed again on every path, errors included.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::space;
use crate::swap::{self, Swap};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether the tool can rely on it.
    pub ok: bool,
    /// What was seen, and for a failure what it means.
    pub detail: String,
}

impl Check {
    fn ok(detail: impl Into<String>) -> Check {
        Check {
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> Check {
        Check {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// How far the file server's clock is from this host's, learnt from a new file's mtime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockOffset {
    /// Server minus this host, in seconds: positive when the server is ahead.
    pub offset_secs: f64,
    /// Half the time the probe took: the offset is known only this closely (plus the file
    /// system's timestamp granularity, 2 s on FAT).
    pub uncertainty_secs: f64,
}

/// Whose clock a write's mtime carries on a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StampClock {
    /// The file server's, as a new file's: what lock heartbeats rely on.
    FileServer,
    /// The writing host's: every host's clock then times its own heartbeats.
    ThisHost,
}

/// Everything `doctor --dir` learns about a directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareReport {
    /// The directory checked, as given.
    pub dir: String,
    /// A second exclusive create of the same name fails: the lock primitive.
    pub exclusive_create: Check,
    /// A rename replaces an existing file: the swap primitive.
    pub rename_over: Check,
    /// Hard links work (the swap keeps a backup by link; without, it uses two renames).
    pub hard_link: Check,
    /// A conversion's own steps on a work file: write it, flush it, swap it over an
    /// original by the run's swap, remove the result.
    pub conversion: Check,
    /// Bytes available to this user, or why it is unknown.
    pub free_space: Check,
    /// The bytes available, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// The offset between the clocks, or why it could not be measured.
    pub clock: Check,
    /// The measured offset, when it could be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_offset: Option<ClockOffset>,
    /// Whose clock stamps a write here, or why that cannot be told.
    pub write_stamp: Check,
    /// Whose clock stamps a write, when it could be told apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_stamped_by: Option<StampClock>,
}

impl ShareReport {
    /// Whether conversions can run safely in this directory. Hard links are optional, and
    /// free space and the clocks are information.
    pub fn usable(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The checks that stop conversions here.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        [&self.exclusive_create, &self.rename_over, &self.conversion]
            .into_iter()
            .filter(|check| !check.ok)
    }
}

/// Probe files made in a directory, removed when this goes out of scope, whatever happened.
struct Probes {
    dir: PathBuf,
    nonce: String,
    made: Vec<PathBuf>,
}

impl Probes {
    fn new(dir: &Path) -> Probes {
        Probes {
            dir: dir.to_path_buf(),
            nonce: share_lock::names::unique_hex(8),
            made: Vec::new(),
        }
    }

    /// A hidden probe path, remembered for removal before anything is created there.
    fn path(&mut self, what: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!(".mediabox-doctor-{}-{what}.probe", self.nonce));
        self.made.push(path.clone());
        path
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for path in &self.made {
            // Most were renamed away or never created; only what exists is removed.
            let _ = fs::remove_file(path);
        }
    }
}

/// Checks a directory on the share. Never fails: each check says what went wrong.
pub fn check(dir: &Path) -> ShareReport {
    let mut probes = Probes::new(dir);
    let exclusive_create = exclusive_create(&mut probes);
    let rename_over = rename_over(&mut probes);
    let hard_link = hard_link(&mut probes);
    let conversion = conversion(&mut probes);
    let (free_space, free_bytes) = match space::available(dir) {
        Ok(bytes) => (
            Check::ok(format!("{} available", crate::output::human_bytes(bytes))),
            Some(bytes),
        ),
        Err(err) => (Check::failed(format!("cannot tell: {err}")), None),
    };
    let (clock, clock_offset, write_stamp, write_stamped_by) = match stamps(&mut probes) {
        Ok(stamps) => {
            let (write_stamp, by) = describe_write_stamp(&stamps);
            let clock = Check::ok(describe_offset(stamps.created));
            (clock, Some(stamps.created), write_stamp, by)
        }
        Err(err) => {
            let why = format!("cannot measure: {err}");
            (Check::failed(&why), None, Check::failed(why), None)
        }
    };
    ShareReport {
        dir: dir.to_string_lossy().into_owned(),
        exclusive_create,
        rename_over,
        hard_link,
        conversion,
        free_space,
        free_bytes,
        clock,
        clock_offset,
        write_stamp,
        write_stamped_by,
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

fn exclusive_create(probes: &mut Probes) -> Check {
    let path = probes.path("excl");
    if let Err(err) = create_new(&path) {
        return Check::failed(format!(
            "cannot create a file here ({err}): check the directory exists and is writable"
        ));
    }
    match create_new(&path) {
        Ok(_) => Check::failed(
            "a second exclusive create of the same name succeeded: this file system does not \
             honour O_EXCL, so hosts cannot claim files safely here",
        ),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            Check::ok("a second create of the same name fails with \"already exists\"")
        }
        // sshfs and Windows (delete pending) say EACCES or EPERM; the lock treats both as
        // "maybe held".
        Err(err) if err.kind() == ErrorKind::PermissionDenied => Check::ok(format!(
            "a second create of the same name fails, as \"{err}\" rather than \"already \
             exists\" (handled)"
        )),
        Err(err) => Check::failed(format!(
            "a second exclusive create failed in an unexpected way: {err}"
        )),
    }
}

fn rename_over(probes: &mut Probes) -> Check {
    let from = probes.path("rename-from");
    let to = probes.path("rename-to");
    let result = (|| -> io::Result<bool> {
        create_new(&from)?.write_all(b"new")?;
        create_new(&to)?.write_all(b"old")?;
        fs::rename(&from, &to)?;
        Ok(fs::read(&to)? == b"new" && !from.exists())
    })();
    match result {
        Ok(true) => Check::ok("a rename replaces an existing file"),
        Ok(false) => Check::failed(
            "a rename over an existing file left the old content: the swap cannot work here",
        ),
        Err(err) => Check::failed(format!(
            "a rename over an existing file failed ({err}): the swap cannot work here"
        )),
    }
}

fn hard_link(probes: &mut Probes) -> Check {
    let original = probes.path("link-a");
    let link = probes.path("link-b");
    if let Err(err) = create_new(&original).and_then(|mut f| f.write_all(b"linked")) {
        return Check::failed(format!("cannot create the probe file: {err}"));
    }
    if let Err(err) = fs::hard_link(&original, &link) {
        return Check::failed(format!(
            "not supported ({err}): the swap uses two renames instead, recorded in the lock"
        ));
    }
    match fs::read(&link) {
        Ok(bytes) if bytes == b"linked" => {}
        Ok(_) => return Check::failed("the link does not show the file's content"),
        Err(err) => return Check::failed(format!("the link cannot be read: {err}")),
    }
    match link_count(&original) {
        Some(2) | None => Check::ok("hard links work"),
        Some(n) => Check::ok(format!(
            "hard links work, but the link count reads {n} instead of 2 (sshfs does this; \
             the tool never relies on link counts)"
        )),
    }
}

/// What a conversion does on the share, on probe files: the work file (ffmpeg's output)
/// written and closed, flushed by [`flush`], given the original's times and permissions and
/// swapped over it by [`swap::swap`] (ReplaceFileW on Windows, link and rename elsewhere),
/// then removed as doctor's own.
fn conversion(probes: &mut Probes) -> Check {
    let original = probes.path("original");
    let work = probes.path("work");
    let backup = probes.path("backup");
    let step = |what: &str, err: &dyn std::fmt::Display| {
        Check::failed(format!(
            "{what} failed ({err}): conversions cannot finish here"
        ))
    };
    if let Err(err) = create_new(&original).and_then(|mut f| f.write_all(b"original")) {
        return step("creating a file", &err);
    }
    if let Err(err) = create_new(&work).and_then(|mut f| f.write_all(b"converted")) {
        return step("writing a work file", &err);
    }
    if let Err(err) = flush(&work) {
        return step("flushing the work file to the server", &err);
    }
    let carried = fs::metadata(&original).and_then(|meta| swap::carry_over_metadata(&meta, &work));
    if let Err(err) = carried {
        return step("giving the work file the original's times", &err);
    }
    let placed = swap::swap(
        &Swap {
            original: &original,
            new_file: &work,
            destination: &original,
            backup: &backup,
            keep_as: None,
        },
        &mut |_| Ok(()),
    );
    if let Err(err) = placed {
        return step("swapping the work file over the original", &err);
    }
    match fs::read(&original) {
        Ok(bytes) if bytes == b"converted" => {}
        Ok(_) => return Check::failed("after the swap the original's name holds the wrong bytes"),
        Err(err) => return step("reading the swapped file", &err),
    }
    if let Err(err) = fs::remove_file(&original) {
        return step("removing the converted file", &err);
    }
    Check::ok("a work file was written, flushed, swapped over an original and removed")
}

#[cfg(unix)]
fn link_count(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.nlink())
}

#[cfg(not(unix))]
fn link_count(_path: &Path) -> Option<u64> {
    None
}

/// Flushes a finished file (a conversion's temp output) to the file server, so that what is
/// verified next and swapped in is what the server holds.
///
/// The handle may write, though nothing is written: Windows' `FlushFileBuffers` refuses a
/// handle opened only for reading ("Access denied"), which POSIX `fsync` accepts.
pub fn flush(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.sync_all()
}

/// A probe file's mtime twice, each against this host's clock around the step that set it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamps {
    /// After its exclusive create: the file server's clock on every network file system.
    pub created: ClockOffset,
    /// After a write, a flush and the close: the clock of whoever stamps writes, as lock
    /// heartbeats are stamped.
    pub written: ClockOffset,
}

/// Creates a probe and reads its mtime, then writes to it and reads it again.
fn stamps(probes: &mut Probes) -> io::Result<Stamps> {
    let path = probes.path("clock");
    let before = SystemTime::now();
    let mut file = create_new(&path)?;
    let after = SystemTime::now();
    let created = offset_between(before, after, fs::metadata(&path)?.modified()?);
    let before = SystemTime::now();
    file.write_all(b"clock")?;
    // Flushing makes a network file system send the write, so it is stamped now; some
    // clients set the time at close, which is why the mtime is read after it.
    file.sync_all()?;
    drop(file);
    let after = SystemTime::now();
    let written = offset_between(before, after, fs::metadata(&path)?.modified()?);
    Ok(Stamps { created, written })
}

/// Timestamps this far apart count as the same clock: sshfs carries whole seconds, FAT
/// two-second steps.
const SAME_CLOCK_SECS: f64 = 2.0;

/// Whose clock stamped the write, judged against this host's clock: `None` when the file
/// server's clock and this host's are too close to tell apart, or the write's stamp
/// matches neither.
pub fn write_stamped_by(stamps: &Stamps) -> Option<StampClock> {
    let Stamps { created, written } = stamps;
    let slack = same_clock_slack(stamps);
    if clocks_agree(stamps) {
        None
    } else if (written.offset_secs - created.offset_secs).abs() <= slack {
        Some(StampClock::FileServer)
    } else if written.offset_secs.abs() <= slack {
        Some(StampClock::ThisHost)
    } else {
        None
    }
}

/// How far apart two readings of one clock may be, this probe's own uncertainty included.
fn same_clock_slack(stamps: &Stamps) -> f64 {
    SAME_CLOCK_SECS + stamps.created.uncertainty_secs + stamps.written.uncertainty_secs
}

/// Whether the file server's clock (a new file's stamp) is this host's, as far as can be told.
fn clocks_agree(stamps: &Stamps) -> bool {
    stamps.created.offset_secs.abs() <= same_clock_slack(stamps)
}

/// Seconds with their sign, and no "-0.0".
fn signed_secs(secs: f64) -> String {
    let secs = if (secs * 10.0).round() == 0.0 {
        0.0
    } else {
        secs
    };
    format!("{secs:+.1} s")
}

fn describe_write_stamp(stamps: &Stamps) -> (Check, Option<StampClock>) {
    let by = write_stamped_by(stamps);
    let (created, written) = (
        signed_secs(stamps.created.offset_secs),
        signed_secs(stamps.written.offset_secs),
    );
    let check = match by {
        Some(StampClock::FileServer) => Check::ok(format!(
            "a write is stamped with the file server's clock, as a new file is ({written} from \
             this host's): lock heartbeats are timed by one clock"
        )),
        Some(StampClock::ThisHost) => Check::failed(format!(
            "a write is stamped with this host's clock ({written}), a new file with the file \
             server's ({created}): each host times its own lock heartbeats, so every host's \
             clock must be right: run NTP on all of them"
        )),
        None if clocks_agree(stamps) => Check::ok(format!(
            "cannot tell whose clock stamps a write: the file server's clock and this host's \
             agree within {SAME_CLOCK_SECS:.0} s (a new file read {created}, a write \
             {written}), so either stamp is right"
        )),
        None => Check::failed(format!(
            "a write is stamped {written} from this host's clock, and a new file {created}: \
             neither clock; lock ages here cannot be trusted"
        )),
    };
    (check, by)
}

/// The offset of `server` (an mtime stamped between `before` and `after` on our clock).
pub fn offset_between(before: SystemTime, after: SystemTime, server: SystemTime) -> ClockOffset {
    let half = after.duration_since(before).unwrap_or(Duration::ZERO) / 2;
    let middle = before + half;
    let offset_secs = match server.duration_since(middle) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    ClockOffset {
        offset_secs,
        uncertainty_secs: half.as_secs_f64(),
    }
}

/// Beyond this the offset is worth a warning: `--min-age` compares file times (the server's
/// clock) with this host's clock.
const NOTABLE_OFFSET_SECS: f64 = 2.0;

fn describe_offset(offset: ClockOffset) -> String {
    let ClockOffset {
        offset_secs,
        uncertainty_secs,
    } = offset;
    let direction = if offset_secs >= 0.0 {
        "ahead of"
    } else {
        "behind"
    };
    let mut text = format!(
        "the file server's clock is {:.1} s {direction} this host's (±{uncertainty_secs:.1} s)",
        offset_secs.abs()
    );
    if offset_secs.abs() > NOTABLE_OFFSET_SECS {
        text.push_str(
            "; locks only compare the server's times with each other, but --min-age \
             compares them with this clock: run NTP on both",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_directory_passes_and_no_probe_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Movie.mkv"), b"media").unwrap();
        let report = check(dir.path());
        assert!(report.exclusive_create.ok, "{report:?}");
        assert!(report.rename_over.ok, "{report:?}");
        assert!(report.hard_link.ok, "{report:?}");
        assert_eq!(report.hard_link.detail, "hard links work");
        assert!(report.conversion.ok, "{report:?}");
        assert!(report.free_bytes.is_some_and(|b| b > 0), "{report:?}");
        let offset = report.clock_offset.expect("the clock offset is measured");
        // One kernel stamps the file and reads the clock: no real offset.
        assert!(offset.offset_secs.abs() < 1.0, "{offset:?}");
        assert!(report.usable());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["Movie.mkv"], "probe files left behind");
    }

    #[test]
    fn a_missing_directory_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let report = check(&dir.path().join("not there"));
        assert!(!report.usable());
        assert!(
            report
                .exclusive_create
                .detail
                .starts_with("cannot create a file here"),
            "{report:?}"
        );
        assert!(!report.clock.ok, "{report:?}");
        // Windows finds the volume's free space from the path alone (see space.rs).
        assert_eq!(report.free_space.ok, cfg!(windows), "{report:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_directory_fails_the_checks_and_is_left_clean() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let writable_anyway = File::create(ro.join("root-can-write")).is_ok();
        let report = check(&ro);
        if writable_anyway {
            // Root ignores permissions: the directory really is writable, and must pass.
            assert!(report.usable(), "{report:?}");
            std::fs::remove_file(ro.join("root-can-write")).unwrap();
        } else {
            assert!(!report.usable(), "{report:?}");
        }
        assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
    }

    #[test]
    fn a_finished_file_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".movie.partial.mkv");
        std::fs::write(&path, b"encoded").unwrap();
        // Windows' FlushFileBuffers refuses a handle opened only for reading.
        flush(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"encoded");
        let missing = flush(&dir.path().join("gone.mkv")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound);
    }

    fn stamps(created: f64, written: f64) -> Stamps {
        let at = |offset_secs| ClockOffset {
            offset_secs,
            uncertainty_secs: 0.05,
        };
        Stamps {
            created: at(created),
            written: at(written),
        }
    }

    #[test]
    fn whose_clock_stamps_a_write_is_told_from_the_two_offsets() {
        // The server an hour ahead, and the write stamped an hour ahead too: its clock.
        let server = stamps(3600.0, 3600.4);
        assert_eq!(write_stamped_by(&server), Some(StampClock::FileServer));
        assert!(describe_write_stamp(&server).0.ok);
        // The write carries this host's time although new files carry the server's.
        let host = stamps(-300.0, 0.2);
        assert_eq!(write_stamped_by(&host), Some(StampClock::ThisHost));
        let (check, _) = describe_write_stamp(&host);
        assert!(!check.ok && check.detail.contains("run NTP"), "{check:?}");
        // Clocks that agree cannot be told apart, and that is said, not guessed.
        let agree = stamps(0.3, -0.1);
        assert_eq!(write_stamped_by(&agree), None);
        let (check, _) = describe_write_stamp(&agree);
        assert!(
            check.ok && check.detail.starts_with("cannot tell"),
            "{check:?}"
        );
        // Neither clock: the lock ages on such a share mean nothing.
        let neither = stamps(600.0, -900.0);
        assert_eq!(write_stamped_by(&neither), None);
        assert!(!describe_write_stamp(&neither).0.ok);
    }

    #[test]
    fn offsets_are_server_minus_local_around_the_probes_midpoint() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t1 = t0 + Duration::from_millis(200);
        let ahead = offset_between(t0, t1, t0 + Duration::from_secs(30));
        assert!((ahead.offset_secs - 29.9).abs() < 1e-6, "{ahead:?}");
        assert!((ahead.uncertainty_secs - 0.1).abs() < 1e-6);
        let behind = offset_between(t0, t1, t0 - Duration::from_secs(5));
        assert!((behind.offset_secs + 5.1).abs() < 1e-6, "{behind:?}");
        assert!(describe_offset(behind).starts_with("the file server's clock is 5.1 s behind"));
        assert!(describe_offset(behind).contains("run NTP"));
        assert!(
            !describe_offset(ClockOffset {
                offset_secs: 0.3,
                uncertainty_secs: 0.0
            })
            .contains("NTP")
        );
    }
}
