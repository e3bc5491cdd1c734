//! Unattended runs: limits, deadlines, the pause file, the log file and parallel jobs.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn library(files: &[&str], secs: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in files {
        long_h264_mkv(&dir.path().join(name), secs, "320x180");
    }
    age_all(dir.path());
    dir
}

#[test]
fn max_files_stops_after_n_conversions() {
    let dir = library(&["a.mkv", "b.mkv", "c.mkv"], 1);
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--max-files", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let events = events(&out);
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    assert_eq!(of_kind(&events, "converting").len(), 1);
    let notice = of_kind(&events, "notice");
    assert!(
        notice[0]["message"]
            .as_str()
            .unwrap()
            .contains("--max-files 1 reached: 2 file(s) left"),
        "{notice:?}"
    );
    let hevc = ["a.mkv", "b.mkv", "c.mkv"]
        .iter()
        .filter(|n| video_codec(&dir.path().join(n)) == "hevc")
        .count();
    assert_eq!(hevc, 1);
}

#[test]
fn the_deadline_stops_new_files_and_optionally_the_current_one() {
    // Without --stop-at-deadline, the file in progress finishes; nothing new starts. The
    // budget counts from the first conversion, so however long the start-up takes on a
    // loaded machine the first file starts, and the second never does: encoding 4 s at
    // `slow` takes longer than 1 s, and load only makes it longer.
    let dir = library(&["a.mkv", "b.mkv"], 4);
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--max-runtime", "1s", "--preset", "slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let events = events(&out);
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    assert!(
        of_kind(&events, "notice")[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("deadline reached: 1 file(s) left")
    );

    // With it, the file in progress is stopped cleanly and left as it was.
    let dir = library(&["a.mkv"], 20);
    let before = fs::read(dir.path().join("a.mkv")).unwrap();
    let started = Instant::now();
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args([
            "--json",
            "--max-runtime",
            "2s",
            "--stop-at-deadline",
            "--preset",
            "slow",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped at the deadline, not at the end"
    );
    let stopped = common::events(&out);
    let skipped = of_kind(&stopped, "skipped");
    assert_eq!(skipped.len(), 1, "{stopped:#?}");
    assert_eq!(skipped[0]["reason"], "deadline");
    assert_eq!(fs::read(dir.path().join("a.mkv")).unwrap(), before);
    assert_eq!(
        walk(dir.path()),
        vec![dir.path().join("a.mkv")],
        "no temp file left"
    );
}

/// `--max-runtime` counts from the run's first conversion, so a run whose start-up (the
/// presence record, the scan, the probes) outlasts the budget still converts one file: a
/// slow share or a loaded machine never makes a run with work to do end with nothing done.
/// The start-up is made slow on purpose: strace holds the `mkdir` of the presence folder,
/// the first thing a run does on the share, for 1.5 s.
#[test]
fn a_budget_shorter_than_the_start_up_still_converts_one_file() {
    if strace_missing() {
        return;
    }
    let dir = library(&["a.mkv", "b.mkv"], 4);
    let presence = dir.path().join(".mediabox-hosts");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=mkdir", "-P"])
        .arg(&presence)
        .args(["-e", "inject=mkdir:delay_enter=1500000", "--"])
        .arg(common::bin())
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--max-runtime", "1s", "--preset", "slow"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run under strace");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let events = events(&out);
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    let notice = of_kind(&events, "notice");
    assert!(
        notice[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("deadline reached: 1 file(s) left"),
        "{notice:?}"
    );
}

#[test]
fn a_pause_from_another_process_stops_new_work() {
    let dir = library(&["a.mkv", "b.mkv", "c.mkv"], 6);
    let mut runner = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--preset", "slow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(runner.stdout.take().unwrap()).lines();
    // Once the first conversion is under way, a second process pauses the library.
    loop {
        let line = lines
            .next()
            .expect("the run ended before converting")
            .unwrap();
        if line.contains(r#""event":"converting""#) {
            break;
        }
    }
    let pause = cmd()
        .args(["pause"])
        .arg(dir.path())
        .args(["--reason", "backup window"])
        .output()
        .unwrap();
    assert_eq!(
        pause.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pause.stderr)
    );
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(runner.wait().unwrap().code(), Some(0));
    assert_eq!(
        of_kind(&rest, "converted").len(),
        1,
        "only the file in progress: {rest:#?}"
    );
    assert!(
        of_kind(&rest, "converting").is_empty(),
        "nothing new started: {rest:#?}"
    );
    let notice = of_kind(&rest, "notice");
    assert!(
        notice[0]["message"].as_str().unwrap().contains("paused by"),
        "{notice:?}"
    );

    // A new run does nothing while paused, and everything after `resume`.
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .output()
        .unwrap();
    assert!(of_kind(&events(&out), "converting").is_empty());
    let resume = cmd().arg("resume").arg(dir.path()).output().unwrap();
    assert_eq!(resume.status.code(), Some(0));
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--preset", "ultrafast"])
        .output()
        .unwrap();
    assert_eq!(of_kind(&events(&out), "converted").len(), 2);
}

#[test]
fn two_jobs_convert_two_files_at_once_without_double_work() {
    let dir = library(&["a.mkv", "b.mkv", "c.mkv", "d.mkv"], 4);
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .args(["--json", "--jobs", "2", "--preset", "slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let events = events(&out);
    // Two conversions start before the first one ends.
    let first_done = events
        .iter()
        .position(|e| e["event"] == "converted")
        .unwrap();
    let started_before = events[..first_done]
        .iter()
        .filter(|e| e["event"] == "converting")
        .count();
    assert_eq!(started_before, 2, "{events:#?}");
    // Every file exactly once.
    for name in ["a.mkv", "b.mkv", "c.mkv", "d.mkv"] {
        let path = dir.path().join(name);
        let count = of_kind(&events, "converting")
            .iter()
            .filter(|e| e["file"] == path.to_str().unwrap())
            .count();
        assert_eq!(count, 1, "{name}");
        assert_eq!(video_codec(&path), "hevc");
    }
}

#[test]
fn the_log_file_gets_plain_lines() {
    let dir = library(&["a.mkv"], 1);
    let log = dir.path().join("run.log");
    let out = cmd()
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("converted") && l.contains("a.mkv")),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("1 converted, 0 skipped, 0 failed"),
        "{text}"
    );
    // Every line starts with a timestamp.
    assert!(
        text.lines()
            .all(|l| l.chars().take(4).all(|c| c.is_ascii_digit())),
        "{text}"
    );
    // An unwritable log file is a setup error, named.
    let bad = cmd()
        .arg("--dir")
        .arg(dir.path())
        .arg("--log-file")
        .arg(dir.path().join("no/such/dir/run.log"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--log-file"));
}

#[test]
fn a_pause_says_since_when_as_the_share_s_other_records_do() {
    let dir = tempfile::tempdir().unwrap();
    let before = chrono::Utc::now().timestamp();
    // A host east of Greenwich: its local time is not what the share records.
    let pause = cmd()
        .arg("pause")
        .arg(dir.path())
        .env("TZ", "Asia/Kolkata")
        .output()
        .unwrap();
    assert_eq!(pause.status.code(), Some(0), "{pause:?}");
    let after = chrono::Utc::now().timestamp();
    let text = fs::read_to_string(dir.path().join(".mediabox.pause")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    let since = info["since"].as_str().unwrap();
    // RFC 3339 in UTC to the second, `2026-12-01T18:30:00Z`, as clock::now_rfc3339 writes.
    assert_eq!(since.len(), 20, "{since}");
    assert!(since.ends_with('Z'), "{since}");
    let at = chrono::DateTime::parse_from_rfc3339(since)
        .unwrap()
        .timestamp();
    assert!((before..=after).contains(&at), "{since}");
    let status = cmd().arg("status").arg(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains(&format!("since {since}")), "{shown}");
}
