//! Which ffmpeg and ffprobe a run uses.
//!
//! Users have Debian's 5.1, distribution builds of 6 and 7 and static builds side by side,
//! and they behave differently (6.0's libx265 carries A53 captions, 5.1's does not). The
//! choice, for each tool: `--ffmpeg PATH` / `--ffprobe PATH`, else the environment
//! (`MEDIA_CONVERTER_FFMPEG` / `MEDIA_CONVERTER_FFPROBE`), else `PATH`. `doctor` says which.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::process::ToolsMissing;

/// The environment variable that names the ffmpeg to use.
pub const FFMPEG_ENV: &str = "MEDIA_CONVERTER_FFMPEG";
/// The environment variable that names the ffprobe to use.
pub const FFPROBE_ENV: &str = "MEDIA_CONVERTER_FFPROBE";

/// The tools named on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolChoice {
    pub ffmpeg: Option<PathBuf>,
    pub ffprobe: Option<PathBuf>,
}

static CHOICE: OnceLock<ToolChoice> = OnceLock::new();

/// Records the command line's choice, once, before anything looks for a tool.
pub fn choose(choice: ToolChoice) {
    let _ = CHOICE.set(choice);
}

/// What chose a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    /// `--ffmpeg` or `--ffprobe`.
    Flag,
    /// `MEDIA_CONVERTER_FFMPEG` or `MEDIA_CONVERTER_FFPROBE`.
    Environment,
    /// The first on `PATH`.
    Path,
}

impl ChosenBy {
    /// How `doctor` says it, for `name`.
    pub fn describe(self, name: &str) -> String {
        match self {
            ChosenBy::Flag => format!("--{name}"),
            ChosenBy::Environment => env_name(name).into(),
            ChosenBy::Path => "PATH".into(),
        }
    }
}

/// A tool found, and what chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub chosen_by: ChosenBy,
}

fn env_name(name: &str) -> &'static str {
    if name == "ffprobe" {
        FFPROBE_ENV
    } else {
        FFMPEG_ENV
    }
}

/// Finds `ffmpeg` or `ffprobe` by the order above.
pub fn find(name: &'static str) -> Result<Found, ToolsMissing> {
    let choice = CHOICE.get().cloned().unwrap_or_default();
    let flag = if name == "ffprobe" {
        choice.ffprobe
    } else {
        choice.ffmpeg
    };
    let env = std::env::var_os(env_name(name)).filter(|v| !v.is_empty());
    find_with(name, flag.as_deref(), env)
}

fn find_with(
    name: &'static str,
    flag: Option<&Path>,
    env: Option<OsString>,
) -> Result<Found, ToolsMissing> {
    let named = |path: &Path, chosen_by: ChosenBy| {
        // `which` on a path checks that it is an executable file.
        which::which(path)
            .map(|path| Found { path, chosen_by })
            .map_err(|_| ToolsMissing {
                name,
                chosen: Some(format!(
                    "{} names {}, which is not an executable file",
                    chosen_by.describe(name),
                    path.display()
                )),
            })
    };
    if let Some(path) = flag {
        return named(path, ChosenBy::Flag);
    }
    if let Some(path) = env {
        return named(Path::new(&path), ChosenBy::Environment);
    }
    which::which(name)
        .map(|path| Found {
            path,
            chosen_by: ChosenBy::Path,
        })
        .map_err(|_| ToolsMissing { name, chosen: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Executable files are a Unix notion here; Windows goes by PATHEXT.
    #[cfg(unix)]
    #[test]
    fn a_flag_beats_the_environment_which_beats_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("ffmpeg-6"), dir.path().join("ffmpeg-7"));
        for tool in [&a, &b] {
            std::fs::write(tool, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let found = find_with("ffmpeg", Some(&a), Some(b.clone().into_os_string())).unwrap();
        assert_eq!((found.path, found.chosen_by), (a.clone(), ChosenBy::Flag));
        let found = find_with("ffmpeg", None, Some(b.clone().into_os_string())).unwrap();
        assert_eq!(
            (found.path, found.chosen_by),
            (b.clone(), ChosenBy::Environment)
        );
    }

    #[test]
    fn a_chosen_tool_that_is_not_there_is_named_with_what_chose_it() {
        let err = find_with("ffprobe", None, Some("/nowhere/ffprobe".into())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("MEDIA_CONVERTER_FFPROBE names /nowhere/ffprobe"),
            "{text}"
        );
        let err = find_with("ffmpeg", Some(Path::new("/nowhere/ffmpeg")), None).unwrap_err();
        assert!(err.to_string().starts_with("--ffmpeg names"), "{err}");
    }
}
