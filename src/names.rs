//! The names of the files this tool writes beside media, in one place, so that the pipeline
//! that writes them and `locks clean` that removes them agree.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Suffix of a lock file: `Movie.mkv` -> `Movie.mkv.mediabox.lock`.
pub const LOCK_SUFFIX: &str = ".mediabox.lock";

/// Most file systems cap a name at 255 bytes; NTFS and SMB at 255 UTF-16 units, and a name
/// never has fewer UTF-8 bytes than UTF-16 units, so the same cut fits there too.
const MAX_NAME_BYTES: usize = 255;

/// The hidden temp output for a conversion: `.<name>.mediabox-<lock_id>.partial.<ext>`.
///
/// Hidden, so Plex and Jellyfin ignore it; in the same directory, so the swap is a rename.
pub fn temp_output_path(original: &Path, lock_id: &str, ext: &str) -> PathBuf {
    sibling(original, &format!(".mediabox-{lock_id}.partial.{ext}"))
}

/// Where the original waits during a swap (and stays with `--keep-original`):
/// `.<name>.mediabox-<lock_id>.orig.<ext>`.
pub fn backup_path(original: &Path, lock_id: &str) -> PathBuf {
    let ext = original
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bak".into());
    sibling(original, &format!(".mediabox-{lock_id}.orig.{ext}"))
}

/// The lock file of a media file.
pub fn lock_path(media: &Path) -> PathBuf {
    let mut name = media
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    name.push(LOCK_SUFFIX);
    media.with_file_name(name)
}

/// `dir/.<name><suffix>`, shortening `<name>` (never the suffix) to fit the name limit.
fn sibling(original: &Path, suffix: &str) -> PathBuf {
    let name = original
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let room = MAX_NAME_BYTES - 1 - suffix.len();
    let mut cut = name.len().min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut hidden = OsString::from(".");
    hidden.push(&name[..cut]);
    hidden.push(suffix);
    original.with_file_name(hidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names_follow_the_design() {
        let movie = Path::new("/lib/Movie 1.avi");
        assert_eq!(
            temp_output_path(movie, ID, "mkv"),
            PathBuf::from(format!("/lib/.Movie 1.avi.mediabox-{ID}.partial.mkv"))
        );
        assert_eq!(
            backup_path(movie, ID),
            PathBuf::from(format!("/lib/.Movie 1.avi.mediabox-{ID}.orig.avi"))
        );
        assert_eq!(
            lock_path(movie),
            PathBuf::from("/lib/Movie 1.avi.mediabox.lock")
        );
    }

    #[test]
    fn long_names_are_shortened_on_a_char_boundary() {
        let long = format!("/lib/{}.mkv", "é".repeat(120));
        let temp = temp_output_path(Path::new(&long), ID, "mkv");
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(name.ends_with(&format!(".mediabox-{ID}.partial.mkv")));
    }

    #[cfg(windows)]
    #[test]
    fn drive_share_and_extended_paths_keep_their_directory() {
        for dir in [
            r"Z:\movies",
            r"\\server\media\TV",
            r"\\?\Z:\movies",
            r"\\?\UNC\server\media",
            r"\\server\media",
        ] {
            let movie = Path::new(dir).join("Movie 1.avi");
            for own in [
                temp_output_path(&movie, ID, "mkv"),
                backup_path(&movie, ID),
                lock_path(&movie),
            ] {
                // A share root's files have `\\server\media\` as parent: compare with the
                // media file's own.
                assert_eq!(own.parent(), movie.parent(), "{}", own.display());
                assert!(own.starts_with(dir), "{}", own.display());
            }
            assert_eq!(
                lock_path(&movie),
                PathBuf::from(format!(r"{dir}\Movie 1.avi.mediabox.lock"))
            );
        }
    }
}
