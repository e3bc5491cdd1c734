//! The names of every file the lock protocol and the swap leave beside a media file.
//!
//! They live in one place so that the pipeline that creates them, `locks clean` that
//! removes them and the scan that must skip them can never disagree.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use share_lock::names::{
    GUARD_SUFFIX, LOCK_ID_HEX_LEN, ProtocolFile, TOMB_MARK, is_lock_id, os_string_from,
};
pub use share_lock::names::{LOCK_SUFFIX, lock_path};
#[cfg(test)]
use {
    share_lock::names::{CLOCK_PROBE_PREFIX, acquire_guard_path, guard_path, tomb_path},
    std::path::PathBuf,
};

/// Separates the media name from the lock id in temp outputs and backups.
const WORK_MARK: &str = ".mediabox-";
const TEMP_OUTPUT_KIND: &str = "partial";
const BACKUP_KIND: &str = "orig";
/// Ends every work file name, so that no tool that finds media by extension (Plex,
/// Jellyfin, Sonarr, Radarr, the original mediabox tool, which does not skip hidden files)
/// takes a half-written output or a backup for media. Earlier versions ended the names in
/// the container's extension; those are still recognised.
const WORK_END: &str = ".work";
/// Ends the name of an original kept by `--keep-original`, for the same reason.
const KEPT_MARK: &str = ".mediabox-kept";
/// The hidden file ffmpeg writes for `media_file_name` under the claim `lock_id`:
/// `.<name>.mediabox-<lock_id>.partial.<ext>.work` (ffmpeg is told the muxer; the name
/// only says what it will be). Carrying the lock id lets `locks clean`
/// tell a live job's output from a dead one's.
pub fn temp_output_name(media_file_name: &OsStr, lock_id: &str, ext: &str) -> OsString {
    work_file_name(media_file_name, lock_id, TEMP_OUTPUT_KIND, ext)
}

/// The hidden name the original keeps during a swap under the claim `lock_id`:
/// `.<name>.mediabox-<lock_id>.orig.<ext>.work`.
pub fn backup_name(media_file_name: &OsStr, lock_id: &str, ext: &str) -> OsString {
    work_file_name(media_file_name, lock_id, BACKUP_KIND, ext)
}

fn work_file_name(media_file_name: &OsStr, lock_id: &str, kind: &str, ext: &str) -> OsString {
    let mut name = OsString::from(".");
    name.push(media_file_name);
    name.push(WORK_MARK);
    name.push(lock_id);
    name.push(".");
    name.push(kind);
    let ext = ext.trim_start_matches('.');
    if !ext.is_empty() {
        name.push(".");
        name.push(ext);
    }
    name.push(WORK_END);
    name
}

/// Most file systems cap a name at 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Whether every name the protocol and the swap derive from `media_file_name` (lock, guard,
/// tombstones, temp output with `output_ext`, backup) stays within [`MAX_NAME_BYTES`].
///
/// Names are never shortened: `locks clean` must be able to read the media name back out
/// of a backup to put an original back.
pub fn fits_work_names(media_file_name: &OsStr, output_ext: &str) -> bool {
    let name = media_file_name.len();
    let original_ext = Path::new(media_file_name).extension().map_or(0, OsStr::len);
    // `.<name>.mediabox-<id>.partial.<ext>.work` and `.<name>.mediabox-<id>.orig.<ext>.work`
    let work = 1 + name + WORK_MARK.len() + LOCK_ID_HEX_LEN + 1 + WORK_END.len();
    let temp = work + TEMP_OUTPUT_KIND.len() + 1 + output_ext.len();
    let backup = work + BACKUP_KIND.len() + 1 + original_ext;
    // `<name>.mediabox.lock.break.tomb-<32 hex>`, the longest lock artifact
    let tomb = name + LOCK_SUFFIX.len() + GUARD_SUFFIX.len() + TOMB_MARK.len() + 32;
    temp.max(backup).max(tomb) <= MAX_NAME_BYTES
}

/// Where `--keep-original` keeps the original once the new file is in place:
/// `.<name>.mediabox-kept`, ending in no media extension. Not a work file: `locks clean`
/// never touches it.
pub fn kept_original_name(media_file_name: &OsStr) -> OsString {
    let mut name = OsString::from(".");
    name.push(media_file_name);
    name.push(KEPT_MARK);
    name
}

/// Which work file a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkFileKind {
    /// A transcode output not yet swapped in (`.partial.`).
    TempOutput,
    /// The original kept aside during a swap (`.orig.`); possibly its only copy.
    Backup,
}

/// A temp output or backup name taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkFileName {
    /// Temp output or backup.
    pub kind: WorkFileKind,
    /// The file name of the media file it belongs to (`Movie1.mkv`).
    pub media_name: OsString,
    /// The claim it was made under.
    pub lock_id: String,
    /// Its extension, without the dot; empty when it has none.
    pub ext: String,
}

/// Parses a name made by [`temp_output_name`] or [`backup_name`]; `None` for any
/// other name.
pub fn parse_work_file_name(file_name: &OsStr) -> Option<WorkFileName> {
    let rest = file_name.as_encoded_bytes().strip_prefix(b".")?;
    let mark = WORK_MARK.as_bytes();
    // From the right, so a media name that itself contains ".mediabox-" still parses.
    (0..rest.len().saturating_sub(mark.len()) + 1)
        .rev()
        .filter(|&at| rest[at..].starts_with(mark))
        .find_map(|at| {
            let media_name = &rest[..at];
            let after = &rest[at + mark.len()..];
            let (lock_id, tail) = after.split_at_checked(LOCK_ID_HEX_LEN)?;
            if media_name.is_empty() || !is_lock_id(lock_id) {
                return None;
            }
            let (kind, ext) = parse_kind_and_ext(tail)?;
            Some(WorkFileName {
                kind,
                media_name: os_string_from(media_name)?,
                lock_id: String::from_utf8(lock_id.to_vec()).ok()?,
                ext: String::from_utf8(ext.to_vec()).ok()?,
            })
        })
}

/// `.partial`, `.orig`, optionally followed by `.ext` with no further dot, then `.work`
/// (or nothing, as earlier versions named them).
fn parse_kind_and_ext(tail: &[u8]) -> Option<(WorkFileKind, &[u8])> {
    let tail = tail.strip_prefix(b".")?;
    let tail = tail.strip_suffix(WORK_END.as_bytes()).unwrap_or(tail);
    [
        (TEMP_OUTPUT_KIND, WorkFileKind::TempOutput),
        (BACKUP_KIND, WorkFileKind::Backup),
    ]
    .into_iter()
    .find_map(|(word, kind)| {
        let after = tail.strip_prefix(word.as_bytes())?;
        let ext = match after {
            [] => after,
            [b'.', ext @ ..] if !ext.is_empty() && !ext.contains(&b'.') => ext,
            _ => return None,
        };
        Some((kind, ext))
    })
}

/// Every kind of file this module leaves in a media directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Artifact {
    /// `<media>.mediabox.lock`
    Lock { media_name: OsString },
    /// `<media>.mediabox.lock.break` or `<media>.mediabox.lock.acquire`: a
    /// directory (or, from older versions, a file) held for milliseconds.
    Guard,
    /// A lock or guard renamed aside while being retired.
    Tombstone,
    /// A probe left by a crash while learning the server's clock.
    ClockProbe,
    /// A temp output or backup.
    Work(WorkFileName),
}

/// What `file_name` is, if it is one of ours.
pub(super) fn classify(file_name: &OsStr) -> Option<Artifact> {
    if let Some(file) = share_lock::names::classify(file_name) {
        return Some(match file {
            ProtocolFile::Lock { target_name } => Artifact::Lock {
                media_name: target_name,
            },
            ProtocolFile::Guard => Artifact::Guard,
            ProtocolFile::Tombstone => Artifact::Tombstone,
            ProtocolFile::ClockProbe => Artifact::ClockProbe,
        });
    }
    parse_work_file_name(file_name).map(Artifact::Work)
}

/// Whether a directory entry is one of the files the lock protocol or the swap
/// makes; the scan must never take one for media.
pub fn is_lock_artifact(file_name: &OsStr) -> bool {
    classify(file_name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn os(text: &str) -> &OsStr {
        OsStr::new(text)
    }

    #[test]
    fn lock_path_sits_beside_the_media_file() {
        assert_eq!(
            lock_path(Path::new("/m/Movie1.mkv")),
            Some(PathBuf::from("/m/Movie1.mkv.mediabox.lock"))
        );
        assert_eq!(
            lock_path(Path::new("Movie1.mkv")),
            Some(PathBuf::from("Movie1.mkv.mediabox.lock"))
        );
        assert_eq!(lock_path(Path::new("/")), None);
        assert_eq!(lock_path(Path::new("/m/..")), None);
    }

    #[test]
    fn work_names_have_the_documented_shape() {
        assert_eq!(
            temp_output_name(os("Movie1.avi"), ID, "mkv"),
            format!(".Movie1.avi.mediabox-{ID}.partial.mkv.work").as_str()
        );
        assert_eq!(
            backup_name(os("Movie1.mkv"), ID, ".mkv"),
            format!(".Movie1.mkv.mediabox-{ID}.orig.mkv.work").as_str()
        );
        assert_eq!(
            backup_name(os("README"), ID, ""),
            format!(".README.mediabox-{ID}.orig.work").as_str()
        );
    }

    #[test]
    fn no_work_name_ends_in_a_media_extension() {
        use crate::scan::{AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, media_kind};
        for ext in VIDEO_EXTENSIONS.iter().chain(AUDIO_EXTENSIONS) {
            let media = format!("Movie1.{ext}");
            for name in [
                temp_output_name(os(&media), ID, ext),
                backup_name(os(&media), ID, ext),
                kept_original_name(os(&media)),
            ] {
                assert_eq!(media_kind(Path::new(&name)), None, "{name:?}");
            }
        }
    }

    #[test]
    fn work_names_of_earlier_versions_are_still_recognised() {
        // Earlier versions ended work files in the container's extension.
        for (name, kind, ext) in [
            (
                ".Movie1.avi.mediabox-{ID}.partial.mkv",
                WorkFileKind::TempOutput,
                "mkv",
            ),
            (
                ".Movie1.mkv.mediabox-{ID}.orig.mkv",
                WorkFileKind::Backup,
                "mkv",
            ),
            (".README.mediabox-{ID}.orig", WorkFileKind::Backup, ""),
        ] {
            let name = name.replace("{ID}", ID);
            let parsed = parse_work_file_name(os(&name)).unwrap();
            assert_eq!((parsed.kind, parsed.ext.as_str()), (kind, ext), "{name}");
            assert_eq!(classify(os(&name)), Some(Artifact::Work(parsed)));
        }
    }

    #[test]
    fn names_that_would_overflow_are_refused_not_shortened() {
        let fits = format!("{}.mkv", "a".repeat(150));
        let too_long = format!("{}.mkv", "a".repeat(200));
        assert!(fits_work_names(os(&fits), "mkv"));
        assert!(!fits_work_names(os(&too_long), "mkv"));
        // The refusal is exact: the longest derived name of an accepted file fits.
        let mut longest = 1;
        while fits_work_names(os(&format!("{}.mkv", "a".repeat(longest))), "mkv") {
            longest += 1;
        }
        let name = format!("{}.mkv", "a".repeat(longest - 1));
        let temp = temp_output_name(os(&name), ID, "mkv");
        assert!(temp.len() <= MAX_NAME_BYTES, "{}", temp.len());
    }

    #[test]
    fn a_kept_original_is_not_debris() {
        let kept = kept_original_name(os("Movie1.avi"));
        assert_eq!(kept, ".Movie1.avi.mediabox-kept");
        assert!(parse_work_file_name(&kept).is_none());
    }

    #[test]
    fn work_names_round_trip_through_the_parser() {
        for media in [
            "Movie1.mkv",
            "a b (2019).mkv",
            ".hidden.mp4",
            "x.mediabox-y.mkv",
            "ü.avi",
        ] {
            for ext in ["mkv", ""] {
                let temp = parse_work_file_name(&temp_output_name(os(media), ID, ext));
                let backup = parse_work_file_name(&backup_name(os(media), ID, ext));
                for (parsed, kind) in [
                    (temp, WorkFileKind::TempOutput),
                    (backup, WorkFileKind::Backup),
                ] {
                    assert_eq!(
                        parsed,
                        Some(WorkFileName {
                            kind,
                            media_name: media.into(),
                            lock_id: ID.to_owned(),
                            ext: ext.to_owned(),
                        }),
                        "{media:?} {ext:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn parser_rejects_look_alikes() {
        for name in [
            "Movie1.mkv",
            format!("Movie1.mkv.mediabox-{ID}.partial.mkv").as_str(), // not hidden
            format!("..mediabox-{ID}.partial.mkv").as_str(),          // no media name
            ".Movie1.mkv.mediabox-0123.partial.mkv",                  // short id
            format!(".Movie1.mkv.mediabox-{}.partial.mkv", ID.to_uppercase()).as_str(),
            format!(".Movie1.mkv.mediabox-{ID}.partialx.mkv").as_str(),
            format!(".Movie1.mkv.mediabox-{ID}.partial.").as_str(),
            format!(".Movie1.mkv.mediabox-{ID}.partial.tar.gz").as_str(),
            format!(".Movie1.mkv.mediabox-{ID}.done.mkv").as_str(),
        ] {
            assert_eq!(parse_work_file_name(os(name)), None, "{name}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_media_names_survive() {
        use std::os::unix::ffi::OsStrExt;
        let media = OsStr::from_bytes(b"caf\xe9.avi");
        let parsed = parse_work_file_name(&temp_output_name(media, ID, "mkv"));
        assert_eq!(parsed.map(|p| p.media_name), Some(media.to_owned()));
        let lock = lock_path(&Path::new("/m").join(media)).unwrap_or_default();
        assert_eq!(
            classify(lock.file_name().unwrap_or_default()),
            Some(Artifact::Lock {
                media_name: media.to_owned()
            })
        );
    }

    #[test]
    fn every_protocol_file_is_an_artifact_and_media_is_not() {
        let lock = PathBuf::from("/m/Movie1.mkv.mediabox.lock");
        let guard = guard_path(&lock);
        let acquire = acquire_guard_path(&lock);
        let names = [
            lock.clone(),
            guard.clone(),
            acquire.clone(),
            tomb_path(&lock, "00ff"),
            tomb_path(&guard, "00ff"),
            tomb_path(&acquire, "00ff"),
            PathBuf::from(format!("{CLOCK_PROBE_PREFIX}0a1b")),
            PathBuf::from(temp_output_name(os("Movie1.mkv"), ID, "mkv")),
            PathBuf::from(backup_name(os("Movie1.mkv"), ID, "mkv")),
        ];
        for name in &names {
            assert!(
                is_lock_artifact(name.file_name().unwrap_or_default()),
                "{name:?}"
            );
        }
        assert_eq!(
            classify(os("Movie1.mkv.mediabox.lock")),
            Some(Artifact::Lock {
                media_name: "Movie1.mkv".into()
            })
        );
        assert_eq!(
            classify(os("Movie1.mkv.mediabox.lock.break")),
            Some(Artifact::Guard)
        );
        assert_eq!(
            classify(os("Movie1.mkv.mediabox.lock.acquire")),
            Some(Artifact::Guard)
        );
        for media in [
            "Movie1.mkv",
            ".mediabox.lock",
            "Movie1.mkv.mediabox.lock.tomb-",
            "Movie1.mkv.mediabox.lock.tomb-xyz",
            "Movie1.mkv.acquire",
            "Movie1.mkv.mediabox.lock.acquire.tomb-",
            "Movie1.mkv.tomb-00ff",
            ".mediabox.clock-",
            ".mediabox_cache.json",
        ] {
            assert!(!is_lock_artifact(os(media)), "{media}");
        }
    }

    #[cfg(windows)]
    #[test]
    fn drive_share_and_extended_paths_keep_their_directory() {
        for dir in [
            r"Z:\movies",
            r"\\server\media\TV",
            r"\\server\media",
            r"\\?\Z:\movies",
            r"\\?\UNC\server\media",
        ] {
            let movie = Path::new(dir).join("Movie 1.avi");
            let lock = lock_path(&movie).unwrap();
            // A share root's files have `\\server\media\` as parent: compare with the
            // media file's own.
            assert_eq!(lock.parent(), movie.parent(), "{}", lock.display());
            assert_eq!(
                lock,
                PathBuf::from(format!(r"{dir}\Movie 1.avi.mediabox.lock"))
            );
            let temp = movie.with_file_name(temp_output_name(
                movie.file_name().unwrap(),
                &"0".repeat(LOCK_ID_HEX_LEN),
                "mkv",
            ));
            assert_eq!(temp.parent(), movie.parent(), "{}", temp.display());
            assert!(temp.starts_with(dir), "{}", temp.display());
        }
    }
}
