//! A cold library: conversions start while the survey goes on, and hosts starting together
//! share the probing instead of each probing every file.
//!
//! The slow survey is real: many files that only ffprobe can read (MP3s, hard links of one
//! tiny file, so the library costs one encode), probed one at a time.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;

/// `count` hard links of one MP3 in `dir`: as many files for the survey, each needing ffprobe
/// (the native reader reads no MP3) and each left alone as lossy.
fn mp3_links(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let first = dir.join("track000.mp3");
    mp3(&first);
    age(&first);
    for n in 1..count {
        std::fs::hard_link(&first, dir.join(format!("track{n:03}.mp3"))).unwrap();
    }
}

#[test]
fn the_first_conversion_starts_while_the_survey_goes_on() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    let movie = root.join("movie.mkv");
    long_h264_mkv(&movie, 1, "160x90");
    age(&movie);
    let tracks = 120;
    mp3_links(&root.join("music"), tracks);

    let out = cmd()
        .arg("--dir")
        .arg(root)
        .args([
            "--json",
            "--type",
            "both",
            "--jobs",
            "1",
            "--probe-jobs",
            "1",
        ])
        .output()
        .unwrap();
    let events = events(&out);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default())
        .collect();
    let converting = kinds
        .iter()
        .position(|k| *k == "converting")
        .unwrap_or_else(|| panic!("no conversion: {kinds:?}"));
    let skipped_after = kinds[converting..]
        .iter()
        .filter(|k| **k == "skipped")
        .count();
    // Surveyed first, the movie would be converted after all of them were probed.
    assert!(
        skipped_after >= tracks / 2,
        "only {skipped_after} of {tracks} files were surveyed after the conversion began"
    );
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["converted"], 1, "{summary}");
    assert_eq!(summary["skipped"], tracks as u64, "{summary}");
    assert_eq!(video_codec(&movie), "hevc");
}

/// The files one host's run handed to ffprobe, in order, for the library's MP3s.
fn probed(ffprobe: &CountingFfprobe) -> Vec<String> {
    ffprobe
        .calls()
        .iter()
        .filter_map(|call| call.rsplit(' ').next())
        .filter(|path| path.ends_with(".mp3"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn hosts_starting_together_probe_in_their_own_orders_and_each_file_about_once() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    let (dirs, per_dir) = (10, 6);
    mp3_links(&root.join("album00"), per_dir);
    let first = root.join("album00/track000.mp3");
    for d in 1..dirs {
        let dir = root.join(format!("album{d:02}"));
        std::fs::create_dir(&dir).unwrap();
        for n in 0..per_dir {
            std::fs::hard_link(&first, dir.join(format!("track{n:03}.mp3"))).unwrap();
        }
    }
    let files = dirs * per_dir;

    let hosts = ["alpha", "bravo"];
    let counters: Vec<CountingFfprobe> = hosts.iter().map(|_| CountingFfprobe::new()).collect();
    let logs = tempfile::tempdir().unwrap();
    let log_of = |host: &str| logs.path().join(format!("{host}.jsonl"));
    let mut runs: Vec<Running> = hosts
        .iter()
        .zip(&counters)
        .map(|(host, ffprobe)| {
            let child = cmd()
                .env("PATH", ffprobe.path_var())
                .env("MEDIA_CONVERTER_HOSTNAME", host)
                .env("MEDIA_CONVERTER_HOST_ID", format!("{host}-id"))
                .arg("--dir")
                .arg(root)
                .args(["--json", "--type", "audio", "--probe-jobs", "1"])
                .stdout(std::fs::File::create(log_of(host)).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            Running(child)
        })
        .collect();
    for run in &mut runs {
        assert!(run.wait().unwrap().success());
    }
    let summaries: Vec<Value> = hosts
        .iter()
        .map(|host| {
            let text = std::fs::read_to_string(log_of(host)).unwrap();
            let summary = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|event| event["event"] == "summary");
            summary.unwrap_or_else(|| panic!("{host} printed no summary: {text}"))
        })
        .collect();
    for summary in &summaries {
        assert_eq!(summary["skipped"], files as u64, "{summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
    }

    let orders: Vec<Vec<String>> = counters.iter().map(probed).collect();
    let head = |order: &[String]| order.iter().take(6).cloned().collect::<Vec<_>>();
    assert_ne!(
        head(&orders[0]),
        head(&orders[1]),
        "both hosts began with the same files"
    );
    let total: usize = orders.iter().map(Vec::len).sum();
    eprintln!(
        "ffprobe ran {total} times on {files} files: {} by {}, {} by {}",
        orders[0].len(),
        hosts[0],
        orders[1].len(),
        hosts[1]
    );
    let mut distinct: Vec<&String> = orders.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), files, "some files were never probed");
    // Each host alone would probe all of them: twice the files for two hosts. Where they
    // meet, in one directory and within a cache write's delay, some are probed twice.
    assert!(
        total <= files * 3 / 2,
        "the fleet ran ffprobe {total} times on {files} files ({} by {}, {} by {})",
        orders[0].len(),
        hosts[0],
        orders[1].len(),
        hosts[1]
    );
}

/// The file a run converted.
fn converted(events: &[Value]) -> Vec<String> {
    of_kind(events, "converted")
        .iter()
        .map(|e| e["file"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn on_a_warm_library_order_and_the_priority_file_choose_among_every_file() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    let big = root.join("Movies/big.mkv");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    long_h264_mkv(&big, 2, "320x180");
    let next = root.join("TV/next.mkv");
    std::fs::create_dir_all(next.parent().unwrap()).unwrap();
    long_h264_mkv(&next, 1, "160x90");
    // 300 episodes in 60 directories, each directory's cache copied from the first (as
    // hosts sharing a library find them): the survey answers them all at once, and the
    // largest file is only one of 302.
    let template = root.join("Shows/season00");
    std::fs::create_dir_all(&template).unwrap();
    long_h264_mkv(&template.join("episode0.mkv"), 1, "160x90");
    for e in 1..5 {
        std::fs::hard_link(
            template.join("episode0.mkv"),
            template.join(format!("episode{e}.mkv")),
        )
        .unwrap();
    }
    age_all(root);
    let built = cmd()
        .arg("cache")
        .arg("build")
        .arg(&template)
        .output()
        .unwrap();
    assert!(built.status.success());
    for d in 1..60 {
        let dir = root.join(format!("Shows/season{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in 0..5 {
            let name = format!("episode{e}.mkv");
            std::fs::hard_link(template.join(&name), dir.join(name)).unwrap();
        }
        std::fs::copy(template.join(CACHE_FILE), dir.join(CACHE_FILE)).unwrap();
    }
    let built = cmd().arg("cache").arg("build").arg(root).output().unwrap();
    assert!(built.status.success());

    let run = || {
        let out = cmd()
            .env("MEDIA_CONVERTER_HOST_ID", "order-id")
            .arg("--dir")
            .arg(root)
            .args(["--json", "--jobs", "1", "--max-files", "1"])
            .output()
            .unwrap();
        converted(&events(&out))
    };
    assert_eq!(run(), [big.to_string_lossy()], "--order largest");
    std::fs::write(root.join(".mediabox.priority"), r#"{"paths": ["TV"]}"#).unwrap();
    assert_eq!(run(), [next.to_string_lossy()], "the priority file");
}
