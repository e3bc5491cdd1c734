//! `status`: the fleet seen from the share by another process.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn status_shows_another_hosts_conversion_and_the_totals_after() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_h264_mkv(&d.join("long.mkv"), 20, "640x360");
    h264_aac_srt_mkv(&d.join("short.mkv"));
    age_all(d);
    // Both known from the cache as the walk reads the folder: the first file converted is
    // long.mkv, the larger saving, whatever the load, not whichever file the survey happened
    // to read first (short.mkv, converted first, is the job seen).
    build_cache(d);

    let mut worker = cmd()
        .env("MEDIA_CONVERTER_HOSTNAME", "den-pc")
        .env("MEDIA_CONVERTER_HOST_ID", "den-pc-id")
        .arg("--dir")
        .arg(d)
        .args(["--json", "--preset", "slow", "--heartbeat", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // While it works, another process sees the file, its host, phase and percent.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let now = status_json(d);
        let job = now["in_progress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["percent"].as_f64().is_some_and(|p| p > 0.0))
            .cloned();
        if let Some(job) = job {
            break job;
        }
        assert!(Instant::now() < deadline, "never saw progress: {now}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(seen["host"], "den-pc");
    assert_eq!(seen["phase"], "transcoding");
    assert_eq!(
        seen["file"], "long.mkv",
        "files are named relative to the library"
    );
    assert!(seen["heartbeat_age_secs"].as_f64().unwrap() < 30.0);
    assert_eq!(worker.wait().unwrap().code(), Some(0));

    // Afterwards: nothing in progress, both conversions in the totals and under the host.
    let after = status_json(d);
    assert!(
        after["in_progress"].as_array().unwrap().is_empty(),
        "{after}"
    );
    let totals = &after["totals"];
    assert_eq!(totals["converted"], 2, "{after}");
    assert!(totals["saved_bytes"].as_u64().unwrap() > 0);
    assert_eq!(totals["candidates"]["files"], 0);
    let hosts = after["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{after}");
    assert_eq!(hosts[0]["host"], "den-pc");
    assert_eq!(hosts[0]["converted"], 2);
    assert_eq!(hosts[0]["saved_bytes"], totals["saved_bytes"]);
    assert!(after["paused"].is_null());

    // A pause shows, with who paused it, in the human form too.
    let pause = cmd()
        .arg("pause")
        .arg(d)
        .args(["--reason", "rebuild"])
        .output()
        .unwrap();
    assert_eq!(pause.status.code(), Some(0));
    assert_eq!(status_json(d)["paused"]["reason"], "rebuild");
    let human = cmd().arg("status").arg(d).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("PAUSED by"), "{text}");
    assert!(
        text.contains("den-pc") && text.contains("converted      2"),
        "{text}"
    );
}

#[test]
fn status_of_a_missing_library_is_a_setup_error() {
    let out = cmd()
        .args(["status", "/nonexistent/library"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/library"));
}

/// A run decides from the files' own headers and records only what ffprobe read, so after a
/// run that converted nothing the caches know none of a cold library: `status` and `cache
/// stats` must say that their candidates leave those files out, and how many they are.
#[test]
fn files_not_surveyed_by_ffprobe_are_named_beside_the_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["a.mkv", "b.mkv", "c.mkv"] {
        h264_aac_srt_mkv(&d.join(name));
    }
    hevc_mkv(&d.join("done.mkv"));
    age_all(d);
    let run = |args: &[&str]| {
        let out = cmd().args(args).arg(d).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let size_of = |names: &[&str]| -> u64 {
        let bytes = names.iter().map(|n| d.join(n).metadata().unwrap().len());
        bytes.sum()
    };
    let human = |bytes: u64| format!("{:.2} KiB", bytes as f64 / 1024.0);

    run(&["--max-files", "0", "--dir"]);
    let all = size_of(&["a.mkv", "b.mkv", "c.mkv", "done.mkv"]);
    let line = format!("not surveyed by ffprobe yet: 4 file(s) ({})", human(all));
    let stats = run(&["cache", "stats", "--json"]);
    let stats: Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(stats["unknown"]["files"], 4, "{stats:#}");
    assert_eq!(stats["candidates"]["files"], 0, "{stats:#}");
    let text = run(&["cache", "stats"]);
    let work_left = text.split("work left").nth(1).unwrap_or_default();
    assert!(work_left.contains(&line), "{text}");
    let text = run(&["status"]);
    assert!(text.contains(&line), "{text}");

    // A dry run reads every file it would convert with ffprobe, and records it; the file
    // whose headers alone said "already HEVC" stays unsurveyed.
    run(&["--dry-run", "--dir"]);
    let line = format!(
        "not surveyed by ffprobe yet: 1 file(s) ({})",
        human(size_of(&["done.mkv"]))
    );
    let status = status_json(d);
    assert_eq!(status["totals"]["candidates"]["files"], 3, "{status:#}");
    assert_eq!(status["totals"]["unknown"]["files"], 1, "{status:#}");
    let text = run(&["status"]);
    assert!(text.contains(&line), "{text}");
    let text = run(&["cache", "stats"]);
    assert!(text.contains(&line), "{text}");
}
