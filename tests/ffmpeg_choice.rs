//! Choosing the ffmpeg and ffprobe to run: `--ffmpeg`/`--ffprobe`, the environment, `PATH`,
//! and `doctor` saying which.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A real ffmpeg (or ffprobe) behind a script that notes each call in `log`.
fn noting_wrapper(dir: &Path, tool: &str, log: &Path) -> PathBuf {
    let real = which_on_path(tool);
    let script = dir.join(format!("noting-{tool}"));
    write_script(
        &script,
        &format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    script
}

fn which_on_path(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} must be installed"))
}

#[test]
fn the_ffmpeg_named_by_flag_or_environment_is_the_one_run_and_doctor_says_so() {
    let tools = tempfile::tempdir().unwrap();
    let library = tempfile::tempdir().unwrap();
    let log = tools.path().join("calls.log");
    let ffmpeg = noting_wrapper(tools.path(), "ffmpeg", &log);
    let ffprobe = noting_wrapper(tools.path(), "ffprobe", &log);
    h264_aac_srt_mkv(&library.path().join("a.mkv"));
    age_all(library.path());

    let out = cmd()
        .env_remove("MEDIA_CONVERTER_FFMPEG")
        .env("MEDIA_CONVERTER_FFPROBE", &ffprobe)
        .arg("--ffmpeg")
        .arg(&ffmpeg)
        .args(["--json", "--preset", "ultrafast", "--dir"])
        .arg(library.path())
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    let calls = fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("-c:v:0 libx265"),
        "the encode ran elsewhere: {calls}"
    );
    assert!(
        calls.contains("-show_streams"),
        "the probe ran elsewhere: {calls}"
    );

    let out = cmd()
        .env("MEDIA_CONVERTER_FFMPEG", &ffmpeg)
        .env_remove("MEDIA_CONVERTER_FFPROBE")
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["ffmpeg"]["path"],
        ffmpeg.to_str().unwrap(),
        "{report}"
    );
    assert_eq!(report["ffmpeg"]["chosen_by"], "environment", "{report}");
    assert_eq!(report["ffprobe"]["chosen_by"], "path", "{report}");
}

#[test]
fn a_named_ffprobe_that_is_not_there_is_a_setup_error_that_says_so() {
    let library = tempfile::tempdir().unwrap();
    let out = cmd()
        .args(["--ffprobe", "/nowhere/ffprobe", "--dir"])
        .arg(library.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ffprobe names /nowhere/ffprobe, which is not an executable file"),
        "{stderr}"
    );
}
