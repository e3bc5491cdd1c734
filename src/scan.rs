//! Finding the media files of a library: extensions, hidden and own files, links, age.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::MediaKind;

/// Video file extensions, lower case: what libraries, cameras (`mts`, `3gp`) and the web
/// (`webm`, `ogv`) leave.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mkv", "mp4", "m4v", "avi", "mov", "wmv", "flv", "ts", "m2ts", "mpg", "mpeg", "vob", "webm",
    "mts", "m2t", "ogv", "3gp", "3g2", "asf", "divx", "f4v",
];

/// Audio file extensions, lower case.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "aiff", "aif", "ape", "wv", "flac", "m4a", "mp3", "ogg", "opus", "wma",
];

/// A media file found by the scan, with the metadata read while walking.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaFile {
    pub path: PathBuf,
    pub kind: MediaKind,
    pub size: u64,
    pub modified: SystemTime,
    /// Every name its directory held when the walk listed it; `None` for a file named on
    /// the command line, or when the listing could not be read whole.
    pub listing: Option<Arc<Listing>>,
}

impl MediaFile {
    /// Whether a file named `name` may sit beside this one: `false` only when the walk's
    /// listing of its directory held no such name, so a caller stats only what may exist.
    pub fn sibling_may_exist(&self, name: &OsStr) -> bool {
        self.listing
            .as_ref()
            .is_none_or(|listing| listing.may_hold(name))
    }
}

/// The names of one directory as its listing gave them, to answer "is there a file named
/// this beside it" with no stat. Each name is kept as a hash of its case-folded form: on a
/// share that ignores case a stat of `Movie.mkv` finds `movie.MKV`, so the listing must
/// never say "absent" where a stat would say "present". A match (or a hash collision) is
/// only "may exist": the caller's stat confirms it. No allocation a name.
#[derive(Default, PartialEq)]
pub struct Listing {
    folded: Vec<u64>,
}

impl Listing {
    fn add(&mut self, name: &OsStr) {
        self.folded.push(folded_hash(name));
    }

    /// Sorted, for the lookups.
    fn seal(mut self) -> Listing {
        self.folded.sort_unstable();
        self.folded.dedup();
        self
    }

    /// Whether the listing held `name`, or a name that differs only in case.
    pub fn may_hold(&self, name: &OsStr) -> bool {
        self.folded.binary_search(&folded_hash(name)).is_ok()
    }
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listing({} names)", self.folded.len())
    }
}

/// FNV-1a over the name lower- then upper-cased, so that names a case-insensitive share
/// takes as one (`ſ` and `s`, the Kelvin sign and `k`) hash alike; an ASCII byte is just
/// upper-cased, which is the same.
fn folded_hash(name: &OsStr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    match name.to_str() {
        Some(ascii) if ascii.is_ascii() => ascii.bytes().for_each(|b| feed(b.to_ascii_uppercase())),
        _ => {
            let mut buf = [0; 4];
            for c in name.to_string_lossy().chars().flat_map(char::to_lowercase) {
                for upper in c.to_uppercase() {
                    upper.encode_utf8(&mut buf).bytes().for_each(&mut feed);
                }
            }
        }
    }
    hash
}

/// Something the scan could not read; reported, never fatal.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanWarning {
    pub path: PathBuf,
    pub message: String,
}

/// The kind of media a file name denotes, if any (case-insensitive extension).
pub fn media_kind(path: &Path) -> Option<MediaKind> {
    kind_of_extension(path.extension()?.as_encoded_bytes())
}

/// The kind an extension (without its dot) denotes, compared without a copy: the walk asks
/// once for every file of a library.
fn kind_of_extension(ext: &[u8]) -> Option<MediaKind> {
    let is = |known: &&str| known.as_bytes().eq_ignore_ascii_case(ext);
    if VIDEO_EXTENSIONS.iter().any(is) {
        Some(MediaKind::Video)
    } else if AUDIO_EXTENSIONS.iter().any(is) {
        Some(MediaKind::Audio)
    } else {
        None
    }
}

/// Extensions of files that another program is still writing: a download client's
/// (`.part`, qBittorrent's `.!qB`, uTorrent's `.!ut`, a browser's `.crdownload`). Taking one
/// for media would convert half a file.
const MID_WRITE_EXTENSIONS: &[&str] =
    &["part", "partial", "tmp", "temp", "!qb", "!ut", "crdownload"];

/// The same marks before a media extension, as encoders and downloaders name their output
/// until it is done (`Movie.tmp.mp4`, `Movie.part.mkv`).
const MID_WRITE_INFIXES: &[&str] = &["part", "partial", "tmp", "temp"];

/// Whether a name is a file that another program is still writing (see
/// `MID_WRITE_EXTENSIONS` and `MID_WRITE_INFIXES`).
pub fn is_mid_write(name: &std::ffi::OsStr) -> bool {
    let one_of = |marks: &[&str], part: &[u8]| {
        marks
            .iter()
            .any(|mark| mark.as_bytes().eq_ignore_ascii_case(part))
    };
    let mut parts = name.as_encoded_bytes().rsplit(|&b| b == b'.');
    let last = parts.next().unwrap_or_default();
    let before = parts.next();
    one_of(MID_WRITE_EXTENSIONS, last)
        || (before.is_some_and(|infix| one_of(MID_WRITE_INFIXES, infix))
            && parts.next().is_some()
            && kind_of_extension(last).is_some())
}

/// Whether a name is hidden (dot file) or one of this tool's own lock, temp or cache files.
pub fn is_hidden_or_own(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".") || crate::lock::is_lock_artifact(name)
}

/// Windows hides with attributes rather than a leading dot: `$RECYCLE.BIN` (deleted media,
/// never to be converted), `System Volume Information` (unreadable), `Thumbs.db`. A directory
/// listing on Windows already carries the attributes, so this costs no extra call.
#[cfg(windows)]
fn hidden_by_attribute(entry: &std::fs::DirEntry) -> bool {
    use std::os::windows::fs::MetadataExt;
    use windows_sys::Win32::Storage::FileSystem::{FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_SYSTEM};
    entry.metadata().is_ok_and(|meta| {
        meta.file_attributes() & (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM) != 0
    })
}

#[cfg(not(windows))]
fn hidden_by_attribute(_entry: &std::fs::DirEntry) -> bool {
    false
}

/// Walks `root` and returns its media files (each directory's files sorted by name, before
/// its subdirectories), plus what could not be read.
pub fn scan_dir(root: &Path, follow_links: bool) -> (Vec<MediaFile>, Vec<ScanWarning>) {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    walk(
        root,
        follow_links,
        WalkOrder::Name,
        &mut |_, batch| files.extend(batch),
        &mut |warning| warnings.push(warning),
    );
    (files, warnings)
}

/// The order in which a walk visits the subdirectories of each directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkOrder {
    /// By name: the same on every host.
    Name,
    /// Shuffled by this seed, the same on every run of one host: hosts that start together
    /// on a cold library then begin in different places, and each probes what the others
    /// have not reached yet (see [`seeded_key`]).
    Seeded(u64),
}

impl WalkOrder {
    /// The order of a host: seeded by its host id.
    pub fn of_host(host_id: &str) -> WalkOrder {
        WalkOrder::Seeded(seeded_key(0, host_id.as_bytes()))
    }

    /// Puts names into this order.
    pub fn arrange<T>(self, items: &mut [T], name: impl Fn(&T) -> &[u8]) {
        if let WalkOrder::Seeded(seed) = self {
            items.sort_by_cached_key(|item| seeded_key(seed, name(item)));
        }
    }
}

/// A name's place in a seeded order: FNV-1a over the seed and the name, then a final mix
/// (splitmix64) so that names differing in their last byte land far apart. Written out
/// rather than taken from `std`'s hasher, whose output may change between Rust releases:
/// a host must keep its order across upgrades.
pub fn seeded_key(seed: u64, name: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(name) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// `dir.join(name)` (what `DirEntry::path` gives) made in one allocation: a join copies
/// `dir`, then grows the copy for the name, and a walk makes one for every file.
fn child(dir: &Path, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
    path.push(dir);
    path.push(name);
    path
}

/// Walks `root`, handing each directory's media files to `on_dir` in one batch, sorted by
/// name, before the directory's subdirectories (depth first, in `order`). What cannot be
/// read goes to `on_warning` and the walk goes on.
///
/// Each file is stat-ed once, relative to its open directory (`DirEntry::metadata`), not by
/// its full path: on a deep library most of a path lookup is the directories above, again
/// and again. One batch per directory lets a caller read each directory's cache once, while
/// the walk goes on.
pub fn walk(
    root: &Path,
    follow_links: bool,
    order: WalkOrder,
    on_dir: &mut dyn FnMut(PathBuf, Vec<MediaFile>),
    on_warning: &mut dyn FnMut(ScanWarning),
) {
    // With links followed, a directory reached twice (a loop, or two links to one place) is
    // walked once: its files must not be planned twice.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    // The names of the directory listed last: room for as many in the next, whose size no
    // listing tells beforehand (a library's directories are mostly alike: seasons, films).
    let mut last_names = 0;
    while let Some(dir) = stack.pop() {
        let walked_before =
            follow_links && std::fs::canonicalize(&dir).is_ok_and(|real| !seen.insert(real));
        if walked_before {
            on_warning(ScanWarning {
                path: dir,
                message: "already walked through another link (a symlink loop?); skipped".into(),
            });
            continue;
        }
        let (files, mut subdirs) = list(&dir, follow_links, &mut last_names, on_warning);
        if !files.is_empty() {
            on_dir(dir, files);
        }
        // By name, not path: a host keeps its order whatever the share is mounted as.
        order.arrange(&mut subdirs, |dir| {
            dir.file_name().unwrap_or_default().as_encoded_bytes()
        });
        // Popped from the end: reversed, the first name is walked first.
        subdirs.reverse();
        stack.extend(subdirs);
    }
}

/// One directory's media files and subdirectories, each sorted by name. `names`: how many
/// names the last directory listed held, room reserved for as many; set to this one's.
fn list(
    dir: &Path,
    follow_links: bool,
    names: &mut usize,
    on_warning: &mut dyn FnMut(ScanWarning),
) -> (Vec<MediaFile>, Vec<PathBuf>) {
    let mut files = Vec::with_capacity(*names);
    let mut subdirs = Vec::new();
    let mut listing = Some(Listing {
        folded: Vec::with_capacity(*names),
    });
    *names = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            on_warning(ScanWarning {
                path: dir.to_path_buf(),
                message: format!("cannot read: {err}; check its permissions"),
            });
            return (files, subdirs);
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                on_warning(ScanWarning {
                    path: dir.to_path_buf(),
                    message: format!("cannot read all of it: {err}"),
                });
                listing = None;
                break;
            }
        };
        let name = entry.file_name();
        *names += 1;
        if let Some(listing) = &mut listing {
            listing.add(&name);
        }
        if is_hidden_or_own(&name) || hidden_by_attribute(&entry) || is_mid_write(&name) {
            continue;
        }
        // The type comes with the listing on most file systems: no stat for directories.
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(err) => {
                on_warning(ScanWarning {
                    path: entry.path(),
                    message: format!("cannot read its type: {err}"),
                });
                continue;
            }
        };
        let followed = if file_type.is_symlink() {
            if !follow_links {
                continue;
            }
            match std::fs::metadata(entry.path()) {
                Ok(meta) => Some(meta),
                Err(err) => {
                    on_warning(ScanWarning {
                        path: entry.path(),
                        message: format!("a link that cannot be followed: {err}"),
                    });
                    continue;
                }
            }
        } else {
            None
        };
        let is_dir = followed.as_ref().map_or(file_type.is_dir(), |m| m.is_dir());
        if is_dir {
            subdirs.push(child(dir, &name));
            continue;
        }
        let is_file = followed
            .as_ref()
            .map_or(file_type.is_file(), |m| m.is_file());
        let Some(kind) = is_file.then(|| media_kind(Path::new(&name))).flatten() else {
            continue;
        };
        let meta = match followed {
            Some(meta) => Ok(meta),
            None => entry.metadata(),
        };
        match meta {
            Ok(meta) => files.push(MediaFile {
                path: child(dir, &name),
                kind,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                listing: None,
            }),
            Err(err) => on_warning(ScanWarning {
                path: entry.path(),
                message: format!("cannot read its metadata: {err}"),
            }),
        }
    }
    if let Some(listing) = listing
        .filter(|_| !files.is_empty())
        .map(|l| Arc::new(l.seal()))
    {
        for file in &mut files {
            file.listing = Some(Arc::clone(&listing));
        }
    }
    // Every path is `dir` and a name: their bytes sort as the names do, with no parse of
    // the paths into components.
    files.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    subdirs.sort_unstable();
    (files, subdirs)
}

/// Reads one file named on the command line.
pub fn scan_file(path: &Path) -> Result<MediaFile, String> {
    let meta = std::fs::metadata(path).map_err(|err| format!("cannot read it: {err}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let kind = media_kind(path).ok_or_else(|| {
        format!(
            "not a media file by its extension (video: {}; audio: {})",
            VIDEO_EXTENSIONS.join(", "),
            AUDIO_EXTENSIONS.join(", ")
        )
    })?;
    Ok(MediaFile {
        path: path.to_path_buf(),
        kind,
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        listing: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_child_path_is_the_join_of_its_directory_and_name() {
        for dir in [
            "/lib/Show",
            "/lib/Show/",
            "lib",
            ".",
            "/",
            "",
            "//server/share/Films",
        ] {
            for name in ["S01E01.mkv", "a b.avi", ".hidden", "été.mp4"] {
                let (dir, name) = (Path::new(dir), OsStr::new(name));
                let path = child(dir, name);
                assert_eq!(path, dir.join(name), "{dir:?} {name:?}");
                assert_eq!(
                    path.as_os_str().as_encoded_bytes(),
                    dir.join(name).as_os_str().as_encoded_bytes(),
                    "{dir:?} {name:?}"
                );
            }
        }
    }

    #[test]
    fn a_listing_holds_a_name_whatever_its_case() {
        let mut listing = Listing::default();
        for name in ["Movie.mkv.LOCK", "straße.mkv", "ſong.avi"] {
            listing.add(OsStr::new(name));
        }
        let listing = listing.seal();
        for name in [
            "movie.MKV.lock",
            "STRASSE.mkv",
            "Straße.MKV",
            "song.AVI",
            "SONG.avi",
        ] {
            // ß upper-cases to SS: a share may or may not take them as one, so it is asked.
            assert!(listing.may_hold(OsStr::new(name)), "{name}");
        }
        assert!(!listing.may_hold(OsStr::new("Movie.mkv")));
        assert!(!listing.may_hold(OsStr::new("song.mkv")));
    }

    #[test]
    fn kinds_by_extension_ignore_case() {
        assert_eq!(media_kind(Path::new("a/Movie.MKV")), Some(MediaKind::Video));
        assert_eq!(media_kind(Path::new("x.M2ts")), Some(MediaKind::Video));
        assert_eq!(media_kind(Path::new("song.flac")), Some(MediaKind::Audio));
        assert_eq!(media_kind(Path::new("notes.txt")), None);
        assert_eq!(media_kind(Path::new("mkv")), None);
        assert_eq!(media_kind(Path::new("a.mkvx")), None);
        assert_eq!(media_kind(Path::new("a.mk")), None);
        assert_eq!(
            media_kind(Path::new("Ünïcode.FLAC")),
            Some(MediaKind::Audio)
        );
        for camera_or_web in [
            "a.MTS", "a.m2t", "a.webm", "a.ogv", "a.3gp", "a.3g2", "a.asf",
        ] {
            assert_eq!(
                media_kind(Path::new(camera_or_web)),
                Some(MediaKind::Video),
                "{camera_or_web}"
            );
        }
    }

    #[test]
    fn files_still_being_written_are_not_media() {
        for name in [
            "Movie.tmp.mp4",
            "Movie.TEMP.mkv",
            "Movie.part.mkv",
            "Movie.mkv.part",
            "Movie.mkv.!qB",
            "Movie.mkv.!ut",
            "Movie.mp4.crdownload",
            "Movie.partial",
            "Épisode.Part.MKV",
        ] {
            assert!(is_mid_write(name.as_ref()), "{name}");
        }
        // A name that only looks like one: the mark is the whole stem, or not before the
        // media extension.
        for name in [
            "tmp.mkv",
            "Part.One.mkv",
            "The.Temp.Job.1999.mkv",
            "Movie.mkv",
            "Free.Download.mkv",
            "Movie.part.txt",
            "Movie.partial.",
        ] {
            assert!(!is_mid_write(name.as_ref()), "{name}");
        }
    }

    #[test]
    fn skips_hidden_own_and_non_media_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut names = vec![
            "a.mkv",
            "b.MP4",
            ".hidden.mkv",
            "a.mkv.mediabox.lock",
            "a.mkv.mediabox.lock.break",
            "My.mediabox.Home.mkv",
            ".a.mkv.mediabox-0123.partial.mkv",
            "notes.txt",
            "-dash.avi",
            "download.tmp.mp4",
            "download.mkv.part",
            "torrent.mkv.!qB",
        ];
        // Windows forbids control characters in names.
        if cfg!(unix) {
            names.push("new\nline.mkv");
        }
        for name in names {
            fs::write(root.join(name), b"x").unwrap();
        }
        fs::create_dir(root.join(".git")).unwrap();
        fs::write(root.join(".git/c.mkv"), b"x").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/c.wav"), b"xx").unwrap();

        let (files, warnings) = scan_dir(root, false);
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                let relative = f.path.strip_prefix(root).unwrap();
                let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
                parts.join("/")
            })
            .collect();
        let mut expected = vec!["-dash.avi", "My.mediabox.Home.mkv", "a.mkv", "b.MP4"];
        if cfg!(unix) {
            expected.push("new\nline.mkv");
        }
        expected.push("sub/c.wav");
        assert_eq!(names, expected);
        let wav = files.last().unwrap();
        assert_eq!(wav.kind, MediaKind::Audio);
        assert_eq!(wav.size, 2);
        assert!(warnings.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("real.mkv"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("real.mkv"), dir.path().join("link.mkv"))
            .unwrap();
        assert!(scan_dir(dir.path(), false).0.is_empty());
        assert_eq!(scan_dir(dir.path(), true).0.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("a/x.mkv"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("a/loop")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("again")).unwrap();
        let (files, warnings) = scan_dir(dir.path(), true);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .all(|w| w.message.contains("already walked"))
        );
    }

    #[test]
    fn each_directory_comes_in_one_sorted_batch_before_its_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.mkv", "a/x.mkv", "c.mkv", "a/b/y.mkv", "a.mkv", "z/w.mkv"] {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"x").unwrap();
        }
        let mut batches = Vec::new();
        walk(
            dir.path(),
            false,
            WalkOrder::Name,
            &mut |d, files| {
                let names: Vec<String> = files
                    .iter()
                    .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                    .collect();
                batches.push((d.strip_prefix(dir.path()).unwrap().to_path_buf(), names));
            },
            &mut |w| panic!("{w:?}"),
        );
        let expected: Vec<(PathBuf, Vec<String>)> = vec![
            (
                "".into(),
                vec!["a.mkv".into(), "b.mkv".into(), "c.mkv".into()],
            ),
            ("a".into(), vec!["x.mkv".into()]),
            ("a/b".into(), vec!["y.mkv".into()]),
            ("z".into(), vec!["w.mkv".into()]),
        ];
        assert_eq!(batches, expected);
    }

    #[test]
    fn seeded_orders_differ_between_hosts_and_never_within_one() {
        let names: Vec<String> = (0..40).map(|n| format!("dir{n:02}")).collect();
        let arranged = |order: WalkOrder| {
            let mut names = names.clone();
            order.arrange(&mut names, |n| n.as_bytes());
            names
        };
        let alpha = arranged(WalkOrder::of_host("alpha-id"));
        assert_eq!(alpha, arranged(WalkOrder::of_host("alpha-id")));
        assert_ne!(alpha, arranged(WalkOrder::of_host("bravo-id")));
        assert_ne!(alpha[..5], arranged(WalkOrder::of_host("bravo-id"))[..5]);
        assert_eq!(arranged(WalkOrder::Name), names);
        // Fixed values: a host keeps its order across builds and Rust releases.
        assert_ne!(seeded_key(1, b"a"), seeded_key(2, b"a"));
        assert_eq!(seeded_key(7, b"Movies"), 0x3d7b_a853_aee4_5c7f_u64);
    }

    #[cfg(windows)]
    #[test]
    fn hidden_and_system_entries_are_skipped_on_windows() {
        use std::os::windows::fs::OpenOptionsExt;
        use windows_sys::Win32::Storage::FileSystem::{
            FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_SYSTEM,
        };
        let dir = tempfile::tempdir().unwrap();
        let create = |name: &str, attributes: u32| {
            fs::File::options()
                .write(true)
                .create_new(true)
                .attributes(attributes)
                .open(dir.path().join(name))
                .unwrap();
        };
        create("shown.mkv", 0);
        create("hidden.mkv", FILE_ATTRIBUTE_HIDDEN);
        create("system.mkv", FILE_ATTRIBUTE_SYSTEM);
        let (files, warnings) = scan_dir(dir.path(), false);
        let names: Vec<_> = files.iter().map(|f| f.path.file_name().unwrap()).collect();
        assert_eq!(names, ["shown.mkv"]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[cfg(windows)]
    #[test]
    fn long_and_extended_length_roots_are_scanned_on_windows() {
        let dir = tempfile::tempdir().unwrap();
        // Over 260 characters below the root: past MAX_PATH for any API not made long-path
        // aware.
        let deep = dir
            .path()
            .join("a".repeat(100))
            .join("b".repeat(100))
            .join("c".repeat(100));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("movie.mkv"), b"xyz").unwrap();
        let extended = crate::winpath::long_path_safe(&deep).unwrap();
        assert!(extended.to_string_lossy().starts_with(r"\\?\"));

        let verbatim_root = std::path::PathBuf::from(format!(
            r"\\?\{}",
            std::path::absolute(dir.path()).unwrap().display()
        ));
        for root in [dir.path(), verbatim_root.as_path()] {
            let (files, warnings) = scan_dir(root, false);
            assert!(warnings.is_empty(), "{root:?}: {warnings:?}");
            assert_eq!(files.len(), 1, "{root:?}");
            assert_eq!(files[0].size, 3);
            assert!(files[0].path.ends_with("movie.mkv"));
            assert_eq!(
                fs::read(&files[0].path).unwrap(),
                b"xyz",
                "the found path opens"
            );
        }
    }

    #[test]
    fn a_missing_root_is_a_warning_not_a_panic() {
        let (files, warnings) = scan_dir(Path::new("/nonexistent/library"), false);
        assert!(files.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].message.contains("cannot read"),
            "{:?}",
            warnings[0]
        );
    }

    #[test]
    fn scan_file_explains_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("x.txt");
        fs::write(&txt, b"x").unwrap();
        assert!(scan_file(&txt).unwrap_err().contains("not a media file"));
        assert!(
            scan_file(&dir.path().join("gone.mkv"))
                .unwrap_err()
                .contains("cannot read")
        );
        assert!(
            scan_file(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
