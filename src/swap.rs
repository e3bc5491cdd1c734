//! Replacing the original with the verified new file, so that at no moment neither exists.
//!
//! POSIX: hard-link the original to a backup name, rename the new file over the original,
//! check, then drop the backup (or keep it with `--keep-original`). Windows: `ReplaceFileW`
//! with the backup name, which does the same in one call and keeps the original's attributes
//! and ACLs. Where neither works (no hard links on SMB), two renames, each announced first
//! through `on_phase` so whoever finds the lock next knows how far the swap got.
//!
//! On Windows a program that has a file open (a player, a scanner) blocks renaming, replacing
//! and deleting it; each such step waits for it a few seconds ([`crate::retry`]) and then
//! fails with the original still in place.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::retry;

/// A step of the swap, written durably into the lock's `phase` before it is taken, so that
/// whoever finds the lock of a dead swap knows how far it got (see `lock::settle_dead_claim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPhase {
    /// About to hard-link or rename the original to the backup name.
    BackingUp,
    /// The original has a second name (the backup); the new file is about to be renamed
    /// over its first. Not a step on Windows, where `ReplaceFileW` does both at once; a dead
    /// claim from another host may still have written it.
    #[cfg_attr(windows, allow(dead_code))]
    Replacing,
    /// The new file is about to be placed at a new name (hard link, or reservation by
    /// exclusive create and rename over it).
    Placing,
    /// The original is at the backup name only; the new file is about to take its place.
    OriginalAtBackup,
    /// The new file is in place; the original's other name is about to be removed (or,
    /// with `--keep-original`, renamed to the kept name).
    Done,
}

impl SwapPhase {
    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapPhase::BackingUp => "swap:backing-up",
            SwapPhase::Replacing => crate::lock::PHASE_SWAP_REPLACING,
            SwapPhase::Placing => crate::lock::PHASE_SWAP_PLACING,
            SwapPhase::OriginalAtBackup => crate::lock::PHASE_SWAP_ORIGINAL_AT_BACKUP,
            SwapPhase::Done => crate::lock::PHASE_SWAP_DONE,
        }
    }

    /// The text stored in the lock record: the name, and whether the original is to be
    /// kept (`--keep-original`), so that whoever settles a dead swap knows both.
    pub fn text(self, keeping_original: bool) -> String {
        let keeping = if keeping_original {
            crate::lock::PHASE_KEEPING_SUFFIX
        } else {
            ""
        };
        format!("{}{keeping}", self.as_str())
    }
}

/// What `on_phase` says before a step: go on, or stop here because the claim or the original
/// is no longer what the conversion was made for.
pub type PhaseCheck = Result<(), String>;

/// The files a swap moves.
#[derive(Debug, Clone)]
pub struct Swap<'a> {
    pub original: &'a Path,
    /// The verified new file (hidden temp name, same directory).
    pub new_file: &'a Path,
    /// Where the new file ends up: the original's path, or a new extension beside it.
    pub destination: &'a Path,
    pub backup: &'a Path,
    /// With `--keep-original`: where the original stays once the new file is in place.
    pub keep_as: Option<&'a Path>,
}

/// A swap that could not be completed. The original is in place unless `original_at` says
/// otherwise.
#[derive(Debug)]
pub struct SwapError {
    pub step: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
    /// Where the original is now, when it is not at its own name (a failure nobody could
    /// roll back); `None` means the original is untouched at its name.
    pub original_at: Option<PathBuf>,
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.step, self.path.display(), self.source)?;
        if let Some(at) = &self.original_at {
            write!(
                f,
                "; the original is safe at {} (rename it back, or run `media-converter locks clean`)",
                at.display()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SwapError {}

fn err(step: &'static str, path: &Path, source: io::Error) -> SwapError {
    SwapError {
        step,
        path: path.to_path_buf(),
        source,
        original_at: None,
    }
}

/// Gives the new file the original's modification time and permissions (and owner, where
/// allowed), so the library looks untouched to anything that sorts by date.
pub fn carry_over_metadata(original: &Metadata, new_file: &Path) -> io::Result<()> {
    let file = File::options().write(true).open(new_file)?;
    if let Ok(modified) = original.modified() {
        file.set_modified(modified)?;
    }
    // On Windows permissions are the read-only flag, which would stop the swap from
    // replacing or deleting this file; `swap` sets it on the result instead.
    #[cfg(not(windows))]
    file.set_permissions(original.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Only root may give a file away; anyone else keeps ownership, which is fine.
        let _ = std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()));
    }
    Ok(())
}

/// Performs the swap. `on_phase` is called before each step that changes the library; it
/// records the phase and checks that the claim and the original are still as they were, and
/// an `Err` stops the swap before that step (undoing what can be undone).
pub fn swap(
    s: &Swap<'_>,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<(), SwapError> {
    // Windows refuses to replace or delete a read-only file: the flag is lifted for the swap
    // and put back on whichever files hold the original's place and bytes afterwards.
    #[cfg(windows)]
    let read_only =
        windows::lift_read_only(s.original).map_err(|e| err("reading", s.original, e))?;
    let swapped = swap_files(s, on_phase);
    #[cfg(windows)]
    if read_only {
        windows::restore_read_only(s, &swapped);
    }
    swapped
}

fn swap_files(
    s: &Swap<'_>,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<(), SwapError> {
    let new_len = fs::metadata(s.new_file)
        .map_err(|e| err("reading", s.new_file, e))?
        .len();
    if s.destination == s.original {
        replace_in_place(s, new_len, on_phase)
    } else {
        place_beside(s, new_len, on_phase)
    }
}

/// A swap stopped by `on_phase` before `step`: nothing of it was done.
fn stopped(step: &'static str, path: &Path, why: String) -> SwapError {
    err(step, path, io::Error::other(format!("stopped: {why}")))
}

fn replace_in_place(
    s: &Swap<'_>,
    new_len: u64,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<(), SwapError> {
    on_phase(SwapPhase::BackingUp).map_err(|why| stopped("backing up", s.original, why))?;
    if !replace_keeping_backup(s, on_phase)? {
        on_phase(SwapPhase::OriginalAtBackup)
            .map_err(|why| stopped("moving aside", s.original, why))?;
        retry::while_in_use(|| fs::rename(s.original, s.backup))
            .map_err(|e| err("moving aside", s.original, e))?;
        if let Err(e) = retry::while_in_use(|| fs::rename(s.new_file, s.original)) {
            return Err(
                match retry::while_in_use(|| fs::rename(s.backup, s.original)) {
                    Ok(()) => err("renaming the new file to", s.original, e),
                    Err(_) => SwapError {
                        original_at: Some(s.backup.to_path_buf()),
                        ..err("renaming the new file to", s.original, e)
                    },
                },
            );
        }
    }
    settle(s, new_len, s.backup, "removing the backup", on_phase)
}

/// Puts the new file at the original's name while the original stays reachable under the
/// backup name. `Ok(false)`: this file system cannot do it in one step, and nothing changed.
///
/// POSIX: a second name for the original, then an atomic rename over the first.
#[cfg(not(windows))]
fn replace_keeping_backup(
    s: &Swap<'_>,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<bool, SwapError> {
    if fs::hard_link(s.original, s.backup).is_err() {
        return Ok(false);
    }
    // Checked again now that the backup exists: a host that stalled here while another
    // took the file over, or a user who replaced the original meanwhile, must not have
    // the new file renamed over what is there now.
    if let Err(why) = on_phase(SwapPhase::Replacing) {
        let _ = fs::remove_file(s.backup);
        return Err(stopped("renaming the new file over", s.original, why));
    }
    // The original now has two names; renaming over one of them is atomic.
    fs::rename(s.new_file, s.original).map_err(|e| {
        let _ = fs::remove_file(s.backup);
        err("renaming the new file over", s.original, e)
    })?;
    Ok(true)
}

/// Windows: `ReplaceFileW(original, new_file, backup)`.
#[cfg(windows)]
fn replace_keeping_backup(
    s: &Swap<'_>,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<bool, SwapError> {
    use windows_sys::Win32::Foundation::{
        ERROR_INVALID_FUNCTION, ERROR_NOT_SUPPORTED, ERROR_UNABLE_TO_REMOVE_REPLACED,
    };

    let code = |e: &io::Error| e.raw_os_error().map(|c| c as u32);
    // ReplaceFileW moves the original to the backup name, then the new file to the
    // original's: a crash between the two leaves the original at the backup name only.
    on_phase(SwapPhase::OriginalAtBackup).map_err(|why| stopped("replacing", s.original, why))?;
    let replaced = retry::retry(
        &retry::Backoff::FILE_IN_USE,
        // "Unable to remove replaced" is how ReplaceFileW reports an original that another
        // program has open; documented to leave both files at their own names.
        |e| retry::is_file_in_use(e) || code(e) == Some(ERROR_UNABLE_TO_REMOVE_REPLACED),
        &mut std::thread::sleep,
        || windows::replace_file(s.original, s.new_file, s.backup),
    );
    let Err(e) = replaced else {
        return Ok(true);
    };
    let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
    if exists(s.original) {
        // Some network file systems do not implement it; fall back to renames, but only
        // from the untouched starting point.
        let unsupported = matches!(code(&e), Some(ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED));
        if unsupported && exists(s.new_file) && !exists(s.backup) {
            return Ok(false);
        }
        return Err(err("replacing", s.original, e));
    }
    // The original went to the backup name and the new file did not follow
    // (ERROR_UNABLE_TO_MOVE_REPLACEMENT_2): put the original back.
    Err(
        match retry::while_in_use(|| fs::rename(s.backup, s.original)) {
            Ok(()) => err("replacing", s.original, e),
            Err(_) if exists(s.backup) => SwapError {
                original_at: Some(s.backup.to_path_buf()),
                ..err("replacing", s.original, e)
            },
            Err(_) => err("replacing", s.original, e),
        },
    )
}

#[cfg(windows)]
mod windows {
    use std::fs;
    use std::io;
    use std::path::Path;

    use windows_sys::Win32::Storage::FileSystem::{
        REPLACEFILE_IGNORE_ACL_ERRORS, REPLACEFILE_IGNORE_MERGE_ERRORS, REPLACEFILE_WRITE_THROUGH,
        ReplaceFileW,
    };

    use crate::winpath::to_wide_nul;

    fn set_read_only(path: &Path, read_only: bool) -> io::Result<()> {
        let mut permissions = fs::metadata(path)?.permissions();
        permissions.set_readonly(read_only);
        fs::set_permissions(path, permissions)
    }

    /// Clears `original`'s read-only flag; `Ok(true)` when it had one.
    pub(super) fn lift_read_only(original: &Path) -> io::Result<bool> {
        if !fs::metadata(original)?.permissions().readonly() {
            return Ok(false);
        }
        set_read_only(original, false)?;
        Ok(true)
    }

    /// Puts the read-only flag back: on the new file and the kept original after a swap,
    /// or on the original wherever a failed swap left it. Best effort: the bytes are what
    /// matter, and a flag that cannot be set loses nothing.
    pub(super) fn restore_read_only(s: &super::Swap<'_>, swapped: &Result<(), super::SwapError>) {
        let paths: Vec<&Path> = match swapped {
            Ok(()) => [Some(s.destination), s.keep_as]
                .into_iter()
                .flatten()
                .collect(),
            Err(e) => vec![e.original_at.as_deref().unwrap_or(s.original)],
        };
        for path in paths {
            let _ = set_read_only(path, true);
        }
    }

    /// `ReplaceFileW`: `new_file`'s content at `original`'s name, with `original`'s
    /// attributes and ACLs, and the old `original` at `backup`.
    pub(super) fn replace_file(original: &Path, new_file: &Path, backup: &Path) -> io::Result<()> {
        let (original, new_file, backup) = (
            to_wide_nul(original)?,
            to_wide_nul(new_file)?,
            to_wide_nul(backup)?,
        );
        // WRITE_THROUGH is documented as unsupported (ignored); it is passed to ask for it
        // where it is honoured, but durability comes from the new file having been synced
        // before verification. Merge and ACL errors (a NAS that cannot take the original's
        // ACL) are ignored as fchown's are on POSIX: the content is what must be right, and
        // refusing would leave every file on such a share unconverted.
        let flags = REPLACEFILE_WRITE_THROUGH
            | REPLACEFILE_IGNORE_MERGE_ERRORS
            | REPLACEFILE_IGNORE_ACL_ERRORS;
        // SAFETY: three NUL-terminated UTF-16 strings that outlive the call; the exclude and
        // reserved arguments must be null.
        let ok = unsafe {
            ReplaceFileW(
                original.as_ptr(),
                new_file.as_ptr(),
                backup.as_ptr(),
                flags,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn place_beside(
    s: &Swap<'_>,
    new_len: u64,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<(), SwapError> {
    on_phase(SwapPhase::Placing).map_err(|why| stopped("placing", s.destination, why))?;
    let taken = || {
        err(
            "placing the new file: a file already exists at",
            s.destination,
            io::Error::from(io::ErrorKind::AlreadyExists),
        )
    };
    // A new name (Movie.avi -> Movie.mkv) must never overwrite a file that is already there.
    match fs::hard_link(s.new_file, s.destination) {
        Ok(()) => {
            // Only a leftover name of the new file, which is safe at the destination; a
            // failure here leaves hidden debris for `locks clean`, nothing worse.
            let _ = retry::while_in_use(|| fs::remove_file(s.new_file));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(taken()),
        // No hard links on this share: reserve the name by exclusive create, then rename
        // over the reservation. The destination's claim keeps other converters away;
        // this keeps away whatever else may write there.
        Err(_) => match crate::lock::rename_noreplace(s.new_file, s.destination) {
            Ok(true) => {}
            Ok(false) => return Err(taken()),
            Err(e) => return Err(err("placing the new file at", s.destination, e)),
        },
    }
    settle(s, new_len, s.original, "removing the original", on_phase)
}

/// The last steps of either swap. The new file must be whole at its destination; then the
/// original's remaining name, `leftover` (the backup, or the original itself beside a new
/// name), is kept under `keep_as` or removed.
///
/// A failed check removes nothing: the original stays at `leftover`, and the error says so
/// when that is not its own name.
fn settle(
    s: &Swap<'_>,
    new_len: u64,
    leftover: &Path,
    removing: &'static str,
    on_phase: &mut dyn FnMut(SwapPhase) -> PhaseCheck,
) -> Result<(), SwapError> {
    let placed = fs::metadata(s.destination).map(|m| m.len()).ok();
    if placed != Some(new_len) {
        // Should never happen; nothing is lost, and the error says where the original is.
        return Err(SwapError {
            original_at: (leftover != s.original).then(|| leftover.to_path_buf()),
            ..err(
                "checking",
                s.destination,
                io::Error::other(format!(
                    "size after the swap is {placed:?}, expected {new_len}"
                )),
            )
        });
    }
    // Nothing more is removed unless the lock durably says the new file is in place.
    if let Err(why) = on_phase(SwapPhase::Done) {
        return Err(SwapError {
            original_at: (leftover != s.original).then(|| leftover.to_path_buf()),
            ..stopped(removing, leftover, why)
        });
    }
    match s.keep_as {
        Some(keep) => keep_aside(leftover, keep),
        None => retry::while_in_use(|| fs::remove_file(leftover))
            .map_err(|e| err(removing, leftover, e)),
    }
}

/// Moves the original to its kept name; if that name is taken, it stays where it is, which is
/// just as safe and said in the error.
fn keep_aside(from: &Path, keep: &Path) -> Result<(), SwapError> {
    let taken = || SwapError {
        original_at: Some(from.to_path_buf()),
        ..err(
            "keeping the original: a file already exists at",
            keep,
            io::Error::from(io::ErrorKind::AlreadyExists),
        )
    };
    match retry::while_in_use(|| crate::lock::rename_noreplace(from, keep)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(taken()),
        Err(e) => Err(SwapError {
            original_at: Some(from.to_path_buf()),
            ..err("keeping the original as", keep, e)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("movie.mkv"), b"original bytes").unwrap();
            fs::write(dir.path().join(".new"), b"new").unwrap();
            Fixture { dir }
        }
        fn p(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        /// `movie.mkv` replaced in place by `.new`, by way of `.bak`.
        fn in_place(&self) -> Names {
            self.swap_of("movie.mkv", "movie.mkv")
        }
        /// `original` replaced by `.new` at `destination`, by way of `.bak`; an original
        /// other than `movie.mkv` is made here, holding `old avi`.
        fn swap_of(&self, original: &str, destination: &str) -> Names {
            if !self.p(original).exists() {
                fs::write(self.p(original), b"old avi").unwrap();
            }
            Names {
                original: self.p(original),
                new_file: self.p(".new"),
                destination: self.p(destination),
                backup: self.p(".bak"),
                kept: None,
            }
        }
        fn names(&self) -> Vec<String> {
            let mut names: Vec<_> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    /// The names of one swap.
    struct Names {
        original: PathBuf,
        new_file: PathBuf,
        destination: PathBuf,
        backup: PathBuf,
        kept: Option<PathBuf>,
    }

    impl Names {
        fn swap(&self) -> Swap<'_> {
            Swap {
                original: &self.original,
                new_file: &self.new_file,
                destination: &self.destination,
                backup: &self.backup,
                keep_as: self.kept.as_deref(),
            }
        }
    }

    #[test]
    fn in_place_swap_replaces_and_drops_the_backup() {
        let f = Fixture::new();
        let names = f.in_place();
        let mut phases = vec![];
        swap(&names.swap(), &mut |p| {
            phases.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&names.original).unwrap(), b"new");
        assert_eq!(f.names(), ["movie.mkv"]);
        // ReplaceFileW passes through "original at the backup name" and says so first.
        let expected: &[SwapPhase] = if cfg!(windows) {
            &[
                SwapPhase::BackingUp,
                SwapPhase::OriginalAtBackup,
                SwapPhase::Done,
            ]
        } else {
            &[SwapPhase::BackingUp, SwapPhase::Replacing, SwapPhase::Done]
        };
        assert_eq!(phases, expected);
    }

    /// Opens `path` as a player does on Windows: sharing reads and writes, not deletion,
    /// which blocks every rename, replace and delete of it until the handle is closed.
    #[cfg(windows)]
    fn hold_open_like_a_player(path: &Path) -> File {
        use std::os::windows::fs::OpenOptionsExt;
        use windows_sys::Win32::Storage::FileSystem::{FILE_SHARE_READ, FILE_SHARE_WRITE};
        File::options()
            .read(true)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .open(path)
            .unwrap()
    }

    #[cfg(windows)]
    #[test]
    fn a_player_letting_go_within_seconds_is_waited_for() {
        let f = Fixture::new();
        let names = f.in_place();
        let orig = &names.original;
        let player = hold_open_like_a_player(orig);
        let closes = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            drop(player);
        });
        let s = names.swap();
        swap(&s, &mut |_| Ok(())).unwrap();
        closes.join().unwrap();
        assert_eq!(fs::read(orig).unwrap(), b"new");
        assert_eq!(f.names(), ["movie.mkv"]);
    }

    #[cfg(windows)]
    #[test]
    fn a_player_that_keeps_the_file_open_fails_the_swap_and_loses_nothing() {
        let f = Fixture::new();
        let names = f.in_place();
        let (orig, new, backup) = (&names.original, &names.new_file, &names.backup);
        let _player = hold_open_like_a_player(orig);
        let s = names.swap();
        let started = std::time::Instant::now();
        let e = swap(&s, &mut |_| Ok(())).unwrap_err();
        let waited = started.elapsed();
        assert!(e.original_at.is_none(), "{e}");
        assert!(e.to_string().contains("still in use"), "{e}");
        let policy = crate::retry::Backoff::FILE_IN_USE;
        assert!(waited >= policy.total_wait(), "gave up after {waited:?}");
        assert_eq!(fs::read(orig).unwrap(), b"original bytes");
        assert_eq!(
            fs::read(new).unwrap(),
            b"new",
            "the new file is kept to retry"
        );
        assert!(!backup.exists());
    }

    #[cfg(windows)]
    #[test]
    fn paths_past_max_path_are_replaced() {
        let f = Fixture::new();
        let deep = f.dir.path().join("d".repeat(120)).join("e".repeat(120));
        fs::create_dir_all(&deep).unwrap();
        let (orig, new, backup, kept) = (
            deep.join("movie.mkv"),
            deep.join(format!(".{}.new", "n".repeat(40))),
            deep.join(format!(".{}.bak", "b".repeat(40))),
            deep.join(format!(".{}.kept", "k".repeat(40))),
        );
        fs::write(&orig, b"original bytes").unwrap();
        fs::write(&new, b"new").unwrap();
        let s = Swap {
            original: &orig,
            new_file: &new,
            destination: &orig,
            backup: &backup,
            keep_as: Some(&kept),
        };
        swap(&s, &mut |_| Ok(())).unwrap();
        assert_eq!(fs::read(&orig).unwrap(), b"new");
        assert_eq!(fs::read(&kept).unwrap(), b"original bytes");
        assert!(!new.exists());
        assert!(!backup.exists());
    }

    /// Files copied from a disc, or on a Samba share without write bits, are read-only on
    /// Windows, which refuses to replace or delete them.
    #[cfg(windows)]
    #[test]
    fn read_only_originals_are_swapped_and_stay_read_only() {
        let read_only = |path: &Path| fs::metadata(path).unwrap().permissions().readonly();
        let f = Fixture::new();
        fs::write(f.p("clip.avi"), b"old avi").unwrap();
        for (original, destination, keep) in [
            ("movie.mkv", "movie.mkv", None),
            ("clip.avi", "clip.mkv", None),
        ]
        .into_iter()
        .chain([("again.mkv", "again.mkv", Some(".again.kept"))])
        {
            let (orig, dest, new, backup) =
                (f.p(original), f.p(destination), f.p(".new"), f.p(".bak"));
            if !orig.exists() {
                fs::write(&orig, b"original bytes").unwrap();
            }
            fs::write(&new, b"new").unwrap();
            let mut permissions = fs::metadata(&orig).unwrap().permissions();
            permissions.set_readonly(true);
            fs::set_permissions(&orig, permissions).unwrap();
            carry_over_metadata(&fs::metadata(&orig).unwrap(), &new).unwrap();
            let kept = keep.map(|k| f.p(k));
            let s = Swap {
                original: &orig,
                new_file: &new,
                destination: &dest,
                backup: &backup,
                keep_as: kept.as_deref(),
            };
            swap(&s, &mut |_| Ok(())).unwrap_or_else(|e| panic!("{original}: {e}"));
            assert_eq!(fs::read(&dest).unwrap(), b"new", "{original}");
            assert!(
                read_only(&dest),
                "{destination} keeps the original's read-only flag"
            );
            assert!(
                !new.exists() && !backup.exists(),
                "{original}: {:?}",
                f.names()
            );
            if let Some(kept) = &kept {
                assert_eq!(fs::read(kept).unwrap(), b"original bytes");
                assert!(read_only(kept));
            } else if orig != dest {
                assert!(!orig.exists(), "{original} is removed: {:?}", f.names());
            }
        }
    }

    #[test]
    fn a_check_that_fails_mid_swap_stops_it_with_the_original_in_place() {
        // Every check an in-place swap makes before its first irreversible step: Windows'
        // ReplaceFileW moves the original aside itself, POSIX renames over a hard link.
        let last_check = if cfg!(windows) {
            SwapPhase::OriginalAtBackup
        } else {
            SwapPhase::Replacing
        };
        for stop_at in [SwapPhase::BackingUp, last_check] {
            let f = Fixture::new();
            let names = f.in_place();
            let orig = &names.original;
            let s = names.swap();
            let e = swap(&s, &mut |phase| {
                if phase == stop_at {
                    Err("the claim is lost".into())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
            assert!(e.to_string().contains("the claim is lost"), "{e}");
            assert!(e.original_at.is_none(), "{stop_at:?}: {e}");
            assert_eq!(fs::read(orig).unwrap(), b"original bytes");
            assert_eq!(f.names(), [".new", "movie.mkv"], "{stop_at:?}");
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn a_check_that_fails_once_the_new_file_is_in_place_removes_nothing() {
        let f = Fixture::new();
        let names = f.in_place();
        let (orig, backup) = (&names.original, &names.backup);
        let s = names.swap();
        let e = swap(&s, &mut |phase| match phase {
            SwapPhase::Done => Err("the claim is lost".into()),
            _ => Ok(()),
        })
        .unwrap_err();
        assert_eq!(e.original_at.as_deref(), Some(backup.as_path()), "{e}");
        assert_eq!(fs::read(backup).unwrap(), b"original bytes");
        assert_eq!(fs::read(orig).unwrap(), b"new");
    }

    #[test]
    fn keep_original_leaves_the_backup() {
        let f = Fixture::new();
        let names = Names {
            kept: Some(f.p(".kept")),
            ..f.in_place()
        };
        let (orig, backup) = (&names.original, &names.backup);
        let kept = f.p(".kept");
        let s = names.swap();
        swap(&s, &mut |_| Ok(())).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"original bytes");
        assert!(!backup.exists());
        assert_eq!(fs::read(orig).unwrap(), b"new");
    }

    #[test]
    fn new_name_never_overwrites_an_existing_file() {
        let f = Fixture::new();
        let names = f.swap_of("movie.avi", "movie.mkv");
        let (orig, dest) = (&names.original, &names.destination);
        let s = names.swap();
        let e = swap(&s, &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(fs::read(orig).unwrap(), b"old avi");
        assert_eq!(fs::read(dest).unwrap(), b"original bytes");
        assert!(e.original_at.is_none());
    }

    #[test]
    fn new_name_swap_moves_and_removes_the_original() {
        let f = Fixture::new();
        let names = f.swap_of("clip.avi", "clip.mkv");
        let dest = &names.destination;
        let s = names.swap();
        swap(&s, &mut |_| Ok(())).unwrap();
        assert_eq!(fs::read(dest).unwrap(), b"new");
        assert_eq!(f.names(), ["clip.mkv", "movie.mkv"]);
    }

    #[test]
    fn metadata_is_carried_over() {
        let f = Fixture::new();
        let orig = f.p("movie.mkv");
        let when =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(&orig)
            .unwrap()
            .set_modified(when)
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&orig, fs::Permissions::from_mode(0o640)).unwrap();
        }
        carry_over_metadata(&fs::metadata(&orig).unwrap(), &f.p(".new")).unwrap();
        let new_meta = fs::metadata(f.p(".new")).unwrap();
        assert_eq!(new_meta.modified().unwrap(), when);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(new_meta.permissions().mode() & 0o777, 0o640);
        }
    }
}
