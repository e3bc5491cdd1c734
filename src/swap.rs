//! Replacing the original with the verified new file, so that at no moment neither exists.
//!
//! POSIX: hard-link the original to a backup name, rename the new file over the original,
//! check, then drop the backup (or keep it with `--keep-original`). Where hard links are not
//! supported (SMB), two renames, each announced first through `on_phase` so whoever finds the
//! lock next knows how far the swap got.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// A step of the swap, written into the lock's `phase` before it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapPhase {
    /// About to hard-link or rename the original to the backup name.
    BackingUp,
    /// The original is at the backup name only; the new file is about to take its place.
    OriginalAtBackup,
    /// The new file is in place.
    Done,
}

impl SwapPhase {
    /// The text stored in the lock record.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapPhase::BackingUp => "swap:backing-up",
            SwapPhase::OriginalAtBackup => "swap:original-at-backup",
            SwapPhase::Done => "swap:done",
        }
    }
}

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
    file.set_permissions(original.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Only root may give a file away; anyone else keeps ownership, which is fine.
        let _ = std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()));
    }
    Ok(())
}

/// Performs the swap; `on_phase` is called before each step that changes the library.
pub fn swap(s: &Swap<'_>, on_phase: &mut dyn FnMut(SwapPhase)) -> Result<(), SwapError> {
    let new_len = fs::metadata(s.new_file)
        .map_err(|e| err("reading", s.new_file, e))?
        .len();
    if s.destination == s.original {
        replace_in_place(s, new_len, on_phase)
    } else {
        place_beside(s, new_len, on_phase)
    }
}

fn replace_in_place(
    s: &Swap<'_>,
    new_len: u64,
    on_phase: &mut dyn FnMut(SwapPhase),
) -> Result<(), SwapError> {
    on_phase(SwapPhase::BackingUp);
    let linked = fs::hard_link(s.original, s.backup).is_ok();
    if linked {
        // The original now has two names; renaming over one of them is atomic.
        fs::rename(s.new_file, s.original).map_err(|e| {
            let _ = fs::remove_file(s.backup);
            err("renaming the new file over", s.original, e)
        })?;
    } else {
        on_phase(SwapPhase::OriginalAtBackup);
        fs::rename(s.original, s.backup).map_err(|e| err("moving aside", s.original, e))?;
        if let Err(e) = fs::rename(s.new_file, s.original) {
            return Err(match fs::rename(s.backup, s.original) {
                Ok(()) => err("renaming the new file to", s.original, e),
                Err(_) => SwapError {
                    original_at: Some(s.backup.to_path_buf()),
                    ..err("renaming the new file to", s.original, e)
                },
            });
        }
    }
    let placed = fs::metadata(s.original).map(|m| m.len());
    if placed.as_ref().ok() != Some(&new_len) {
        // Should never happen; keep the backup so nothing is lost, and say where it is.
        return Err(SwapError {
            original_at: Some(s.backup.to_path_buf()),
            ..err(
                "checking",
                s.original,
                io::Error::other(format!(
                    "size after rename is {placed:?}, expected {new_len}"
                )),
            )
        });
    }
    on_phase(SwapPhase::Done);
    match s.keep_as {
        Some(keep) => keep_aside(s.backup, keep),
        None => fs::remove_file(s.backup).map_err(|e| err("removing the backup", s.backup, e)),
    }
}

fn place_beside(
    s: &Swap<'_>,
    new_len: u64,
    on_phase: &mut dyn FnMut(SwapPhase),
) -> Result<(), SwapError> {
    // A new name (Movie.avi -> Movie.mkv) must never overwrite a file that is already there.
    match fs::hard_link(s.new_file, s.destination) {
        Ok(()) => {
            let _ = fs::remove_file(s.new_file);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(err(
                "placing the new file: a file already exists at",
                s.destination,
                e,
            ));
        }
        Err(_) => {
            if fs::symlink_metadata(s.destination).is_ok() {
                return Err(err(
                    "placing the new file: a file already exists at",
                    s.destination,
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
            fs::rename(s.new_file, s.destination)
                .map_err(|e| err("placing the new file at", s.destination, e))?;
        }
    }
    let placed = fs::metadata(s.destination).map(|m| m.len()).ok();
    if placed != Some(new_len) {
        return Err(err(
            "checking",
            s.destination,
            io::Error::other(format!(
                "size after placing is {placed:?}, expected {new_len}"
            )),
        ));
    }
    on_phase(SwapPhase::Done);
    match s.keep_as {
        Some(keep) => keep_aside(s.original, keep),
        None => {
            fs::remove_file(s.original).map_err(|e| err("removing the original", s.original, e))
        }
    }
}

/// Moves the original to its kept name; if that name is taken, it stays where it is, which is
/// just as safe and said in the error.
fn keep_aside(from: &Path, keep: &Path) -> Result<(), SwapError> {
    if fs::symlink_metadata(keep).is_ok() {
        return Err(SwapError {
            original_at: Some(from.to_path_buf()),
            ..err(
                "keeping the original: a file already exists at",
                keep,
                io::Error::from(io::ErrorKind::AlreadyExists),
            )
        });
    }
    fs::rename(from, keep).map_err(|e| SwapError {
        original_at: Some(from.to_path_buf()),
        ..err("keeping the original as", keep, e)
    })
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
        fn names(&self) -> Vec<String> {
            let mut names: Vec<_> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn in_place_swap_replaces_and_drops_the_backup() {
        let f = Fixture::new();
        let (orig, new, backup) = (f.p("movie.mkv"), f.p(".new"), f.p(".bak"));
        let mut phases = vec![];
        swap(
            &Swap {
                original: &orig,
                new_file: &new,
                destination: &orig,
                backup: &backup,
                keep_as: None,
            },
            &mut |p| phases.push(p),
        )
        .unwrap();
        assert_eq!(fs::read(&orig).unwrap(), b"new");
        assert_eq!(f.names(), ["movie.mkv"]);
        assert_eq!(phases, [SwapPhase::BackingUp, SwapPhase::Done]);
    }

    #[test]
    fn keep_original_leaves_the_backup() {
        let f = Fixture::new();
        let (orig, new, backup, kept) = (f.p("movie.mkv"), f.p(".new"), f.p(".bak"), f.p(".kept"));
        let s = Swap {
            original: &orig,
            new_file: &new,
            destination: &orig,
            backup: &backup,
            keep_as: Some(&kept),
        };
        swap(&s, &mut |_| {}).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"original bytes");
        assert!(!backup.exists());
        assert_eq!(fs::read(&orig).unwrap(), b"new");
    }

    #[test]
    fn new_name_never_overwrites_an_existing_file() {
        let f = Fixture::new();
        fs::write(f.p("movie.avi"), b"old avi").unwrap();
        let (orig, new, backup, dest) =
            (f.p("movie.avi"), f.p(".new"), f.p(".bak"), f.p("movie.mkv"));
        let s = Swap {
            original: &orig,
            new_file: &new,
            destination: &dest,
            backup: &backup,
            keep_as: None,
        };
        let e = swap(&s, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(fs::read(&orig).unwrap(), b"old avi");
        assert_eq!(fs::read(&dest).unwrap(), b"original bytes");
        assert!(e.original_at.is_none());
    }

    #[test]
    fn new_name_swap_moves_and_removes_the_original() {
        let f = Fixture::new();
        fs::write(f.p("clip.avi"), b"old avi").unwrap();
        let (orig, new, backup, dest) =
            (f.p("clip.avi"), f.p(".new"), f.p(".bak"), f.p("clip.mkv"));
        let s = Swap {
            original: &orig,
            new_file: &new,
            destination: &dest,
            backup: &backup,
            keep_as: None,
        };
        swap(&s, &mut |_| {}).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
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
