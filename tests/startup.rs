//! What a run costs before its first conversion and after its last: the processes it starts
//! and the time it takes where there is nothing (left) for it to do. Every host of a fleet
//! pays these on every run, a nightly run over a converted library pays nothing else.

mod common;

use std::path::Path;

use common::*;

/// A conversion run of `dir` through `tools`, as `host`.
fn run_as(dir: &Path, tools: &CountingTool, host: &str) -> std::process::Output {
    cmd()
        .env("PATH", tools.path_var())
        .env("MEDIA_CONVERTER_HOSTNAME", host)
        .env("MEDIA_CONVERTER_HOST_ID", format!("{host}-id"))
        .arg("--dir")
        .arg(dir)
        .args(["--json", "--min-age", "0s"])
        .output()
        .unwrap()
}

#[test]
fn a_run_with_nothing_to_encode_starts_no_ffmpeg() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // Already HEVC, and lossy audio: nothing here is worth an encode, and the encoder choice
    // (the trial encodes of every encoder that could work here) is never needed.
    for dir in ["show", "music"] {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    hevc_mkv(&root.join("show/episode.mkv"));
    mp3(&root.join("music/track.mp3"));
    let ffmpeg = CountingTool::wrapping("ffmpeg");
    let out = run_as(root, &ffmpeg, "idle");
    let events = events(&out);
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["converted"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(
        of_kind(&events, "encoder_chosen").is_empty(),
        "an encoder was chosen for nothing: {events:#?}"
    );
    assert_eq!(
        ffmpeg.calls(),
        Vec::<String>::new(),
        "ffmpeg ran though nothing was to be encoded"
    );
}
