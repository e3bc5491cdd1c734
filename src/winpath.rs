//! Windows path forms: drive letters (`Z:\movies`), UNC shares (`\\server\media`), and the
//! extended-length form (`\\?\Z:\...`, `\\?\UNC\server\media\...`) that paths of MAX_PATH
//! (260) characters or more need.
//!
//! `std::fs` already turns long paths into the extended form behind every call it makes, so
//! the scanner and the file operations need nothing. What std does not wrap needs it done
//! here: Win32 calls made directly (`ReplaceFileW` in the swap) and paths handed to ffmpeg.
//! ffmpeg 5.1 and newer extend long paths on its own and pass extended ones through
//! untouched; older builds hand the path straight to `_wsopen`, which fails on a long plain
//! path but opens an extended one. So an extended path works with every ffmpeg.

/// `\\?\`: the path is passed to the file system as it is, without the 260-character limit
/// and without normalisation (no `/`, `.` or `..` may appear in it).
const VERBATIM: &[u16] = &[b'\\' as u16, b'\\' as u16, b'?' as u16, b'\\' as u16];

/// `\\?\UNC\`, the extended form of the `\\` that starts a share path.
const VERBATIM_UNC: &[u16] = &[
    b'\\' as u16,
    b'\\' as u16,
    b'?' as u16,
    b'\\' as u16,
    b'U' as u16,
    b'N' as u16,
    b'C' as u16,
    b'\\' as u16,
];

/// Whether a path is already in a form Windows takes as it is: `\\?\...`, the NT form
/// `\??\...`, or a device path `\\.\...`.
fn is_verbatim(path: &[u16]) -> bool {
    let [a, b, c, d, ..] = path else {
        return false;
    };
    let backslash = b'\\' as u16;
    *a == backslash
        && (*b == backslash || *b == b'?' as u16)
        && (*c == b'?' as u16 || *c == b'.' as u16)
        && *d == backslash
}

/// The extended-length form of an absolute, normalised path (what `GetFullPathNameW`, and so
/// `std::path::absolute`, returns). Paths already verbatim, and anything that is neither a
/// drive path nor a share path, come back unchanged.
fn extended_form(full: &[u16]) -> Vec<u16> {
    let backslash = b'\\' as u16;
    if is_verbatim(full) {
        return full.to_vec();
    }
    match full {
        // \\server\share\dir -> \\?\UNC\server\share\dir
        [a, b, rest @ ..] if *a == backslash && *b == backslash => [VERBATIM_UNC, rest].concat(),
        // Z:\dir -> \\?\Z:\dir
        [letter, colon, slash, ..]
            if *colon == b':' as u16
                && *slash == backslash
                && char::from_u32(u32::from(*letter)).is_some_and(|c| c.is_ascii_alphabetic()) =>
        {
            [VERBATIM, full].concat()
        }
        _ => full.to_vec(),
    }
}

#[cfg(windows)]
pub use windows::*;

#[cfg(windows)]
mod windows {
    use std::ffi::OsString;
    use std::io;
    use std::os::windows::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    /// From this length on (in UTF-16 units) a path gets the extended form: MAX_PATH less the
    /// 12 that directory creation reserves for an 8.3 name, the threshold std uses too.
    const LEGACY_MAX_PATH: usize = 248;

    /// The form of `path` to give a Win32 call or a child process: as it is when short, and
    /// absolute in the extended form (`\\?\Z:\...`, `\\?\UNC\server\share\...`) when long.
    pub fn long_path_safe(path: &Path) -> io::Result<PathBuf> {
        let wide: Vec<u16> = path.as_os_str().encode_wide().collect();
        if super::is_verbatim(&wide) {
            return Ok(path.to_path_buf());
        }
        // Measured after making it absolute: a short relative name in a deep working
        // directory is a long path to the file system. absolute() is GetFullPathNameW, which
        // also turns `/` into `\` and resolves `.` and `..`, as the verbatim form requires.
        let full = std::path::absolute(path)?;
        let full_wide: Vec<u16> = full.as_os_str().encode_wide().collect();
        if full_wide.len() < LEGACY_MAX_PATH {
            return Ok(path.to_path_buf());
        }
        Ok(PathBuf::from(OsString::from_wide(&super::extended_form(
            &full_wide,
        ))))
    }

    /// `path` as a NUL-terminated UTF-16 string for a Win32 call, long-path safe.
    pub fn to_wide_nul(path: &Path) -> io::Result<Vec<u16>> {
        let path = long_path_safe(path)?;
        let mut wide: Vec<u16> = path.as_os_str().encode_wide().collect();
        if wide.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("path contains a NUL character: {}", path.display()),
            ));
        }
        wide.push(0);
        Ok(wide)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn extended(s: &str) -> String {
        String::from_utf16(&extended_form(&wide(s))).unwrap()
    }

    #[test]
    fn drive_paths_get_the_verbatim_prefix() {
        assert_eq!(extended(r"Z:\movies\a.mkv"), r"\\?\Z:\movies\a.mkv");
        assert_eq!(extended(r"c:\x"), r"\\?\c:\x");
    }

    #[test]
    fn share_paths_get_the_unc_prefix() {
        assert_eq!(
            extended(r"\\server\media\TV\a.mkv"),
            r"\\?\UNC\server\media\TV\a.mkv"
        );
    }

    #[test]
    fn verbatim_and_device_paths_are_left_alone() {
        for path in [
            r"\\?\Z:\a.mkv",
            r"\\?\UNC\s\m\a.mkv",
            r"\??\Z:\a",
            r"\\.\pipe\x",
        ] {
            assert_eq!(extended(path), path);
        }
    }

    #[test]
    fn what_is_not_absolute_is_left_alone() {
        for path in ["a.mkv", r"movies\a.mkv", "Z:a.mkv", "", "é"] {
            assert_eq!(extended(path), path);
        }
    }

    #[cfg(windows)]
    #[test]
    fn short_paths_stay_as_given_and_long_ones_become_extended() {
        use std::path::Path;
        let short = Path::new(r"movies\a.mkv");
        assert_eq!(long_path_safe(short).unwrap(), short);

        let dir = tempfile::tempdir().unwrap();
        let long = dir
            .path()
            .join("d".repeat(120))
            .join("e".repeat(120))
            .join("a.mkv");
        let safe = long_path_safe(&long).unwrap();
        let text = safe.to_string_lossy();
        assert!(text.starts_with(r"\\?\"), "{text}");
        assert!(text.ends_with(r"\a.mkv"), "{text}");

        // Mixed separators are normalised before the prefix, which forbids `/`.
        let mixed = format!("{}/{}/a.mkv", dir.path().display(), "f".repeat(250));
        let safe = long_path_safe(Path::new(&mixed)).unwrap();
        assert!(!safe.to_string_lossy().contains('/'), "{}", safe.display());
    }

    #[cfg(windows)]
    #[test]
    fn wide_strings_end_in_nul_and_refuse_inner_nul() {
        use std::path::Path;
        assert_eq!(to_wide_nul(Path::new("a")).unwrap(), [b'a' as u16, 0]);
        assert!(to_wide_nul(Path::new("a\0b")).is_err());
    }
}
