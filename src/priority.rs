//! The priority file: files and folders that every host converts first, whatever its
//! `--order`, so that someone can say "this film next" from the dashboard.
//!
//! `.mediabox.priority` at the library root holds a JSON list of paths relative to the root
//! (`/`-separated), the first the most urgent. A run moves the candidates under those paths
//! to the front of its order, in the list's order; the rest keep `--order`. The file is
//! replaced whole (temp file and rename); readers take at most [`MAX_ENTRIES`] entries of a
//! file of at most 64 KiB, and a file they cannot read changes nothing.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::config::Target;

/// The priority file's name at the library root.
pub const PRIORITY_FILE: &str = ".mediabox.priority";

/// At most this many entries are kept and read.
pub const MAX_ENTRIES: usize = 200;

const MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct PriorityFile {
    #[serde(default)]
    paths: Vec<String>,
}

/// The library's priority list, most urgent first; empty when there is none.
pub fn read(root: &Path) -> Vec<String> {
    let mut bytes = Vec::new();
    let read = File::open(root.join(PRIORITY_FILE))
        .and_then(|file| file.take(MAX_BYTES).read_to_end(&mut bytes));
    if read.is_err() {
        return Vec::new();
    }
    let mut list = serde_json::from_slice::<PriorityFile>(&bytes)
        .map(|file| file.paths)
        .unwrap_or_default();
    list.retain(|path| is_relative_inside(path));
    list.truncate(MAX_ENTRIES);
    list
}

/// Whether `path` names something inside a library: relative, no `..`, no root or drive.
pub fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && !path.contains('\\')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Puts `path` (relative to `root`) first in the list; it leaves its old place.
pub fn push_front(root: &Path, path: &str) -> io::Result<Vec<String>> {
    let mut list = read(root);
    list.retain(|p| p != path);
    list.insert(0, path.to_owned());
    list.truncate(MAX_ENTRIES);
    write(root, &list)?;
    Ok(list)
}

/// Takes `path` off the list; the file goes when the list is empty.
pub fn remove(root: &Path, path: &str) -> io::Result<Vec<String>> {
    let mut list = read(root);
    list.retain(|p| p != path);
    if list.is_empty() {
        match fs::remove_file(root.join(PRIORITY_FILE)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    } else {
        write(root, &list)?;
    }
    Ok(list)
}

fn write(root: &Path, list: &[String]) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(&PriorityFile {
        paths: list.to_vec(),
    })
    .map_err(io::Error::other)?;
    bytes.push(b'\n');
    atomic::write_atomic(&root.join(PRIORITY_FILE), &bytes)
}

/// Moves the items under the library's priority paths to the front, in the list's order,
/// keeping the order among the rest. `--file` runs have no library root and keep theirs.
pub fn to_front<T>(target: &Target, items: &mut Vec<T>, path_of: impl Fn(&T) -> &Path) {
    let ranks = Ranks::read(target);
    if ranks.list.is_empty() {
        return;
    }
    // A stable sort: ties (and everything not listed) keep `--order`.
    let mut ranked: Vec<(usize, T)> = items
        .drain(..)
        .map(|item| (ranks.rank(path_of(&item)), item))
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    items.extend(ranked.into_iter().map(|(_, item)| item));
}

/// The priority list as read once: each path's place in it.
#[derive(Debug, Default)]
pub struct Ranks<'a> {
    root: Option<&'a Path>,
    list: Vec<String>,
}

impl<'a> Ranks<'a> {
    /// The library's list now; empty for a `--file` run, which has no library root.
    pub fn read(target: &'a Target) -> Ranks<'a> {
        match target {
            Target::Dir(root) => Ranks {
                root: Some(root),
                list: read(root),
            },
            Target::File(_) => Ranks::default(),
        }
    }

    /// The place of the first listed path that holds `path`, most urgent 0; `usize::MAX`
    /// when none does.
    pub fn rank(&self, path: &Path) -> usize {
        let Some(root) = self.root else {
            return usize::MAX;
        };
        path.strip_prefix(root)
            .ok()
            .and_then(|relative| {
                self.list
                    .iter()
                    .position(|p| relative.starts_with(Path::new(p)))
            })
            .unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn listed_paths_go_first_in_the_lists_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut items: Vec<PathBuf> = ["a.mkv", "TV/s1/e1.mkv", "b.mkv", "TV/s1/e2.mkv", "c.mkv"]
            .iter()
            .map(|p| root.join(p))
            .collect();
        let target = Target::Dir(root.to_owned());
        to_front(&target, &mut items, |p| p);
        assert_eq!(items[0], root.join("a.mkv"), "no list: unchanged");

        push_front(root, "TV/s1").unwrap();
        push_front(root, "c.mkv").unwrap();
        assert_eq!(read(root), ["c.mkv", "TV/s1"]);
        to_front(&target, &mut items, |p| p);
        let names: Vec<_> = items
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["c.mkv", "TV/s1/e1.mkv", "TV/s1/e2.mkv", "a.mkv", "b.mkv"]
        );

        // A --file run has no library root to read a list from.
        let mut one = vec![root.join("b.mkv"), root.join("c.mkv")];
        to_front(&Target::File(root.join("b.mkv")), &mut one, |p| p);
        assert_eq!(one[0], root.join("b.mkv"));

        // Pushing again moves it; removing the last entry removes the file.
        assert_eq!(push_front(root, "TV/s1").unwrap(), ["TV/s1", "c.mkv"]);
        remove(root, "TV/s1").unwrap();
        assert_eq!(remove(root, "c.mkv").unwrap(), Vec::<String>::new());
        assert!(!root.join(PRIORITY_FILE).exists());
        assert!(
            fs::read_dir(root).unwrap().next().is_none(),
            "no temp file left"
        );
    }

    #[test]
    fn only_paths_inside_the_library_count() {
        for bad in ["", "/etc", "../x", "a/../../x", "a\\..\\x", "a\0b"] {
            assert!(!is_relative_inside(bad), "{bad:?}");
        }
        for good in ["a", "a/b.mkv", "./a", "Movies/Heat (1995)/Heat.mkv"] {
            assert!(is_relative_inside(good), "{good:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(PRIORITY_FILE),
            br#"{"paths":["../../etc/passwd","/abs","ok.mkv"]}"#,
        )
        .unwrap();
        assert_eq!(
            read(dir.path()),
            ["ok.mkv"],
            "a hand-edited file is filtered too"
        );
        fs::write(dir.path().join(PRIORITY_FILE), b"garbage").unwrap();
        assert!(read(dir.path()).is_empty());
    }
}
