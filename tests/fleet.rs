//! Host presence: every converting host's record on the share, as `status` shows it.

mod common;

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

fn host<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name}: {status:#}"))
}

#[test]
fn status_shows_a_host_working_then_stopped_and_a_crashed_one_gone_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    long_h264_mkv(&d.join("long.mkv"), 12, "480x270");
    age_all(d);

    let mut worker = convert_as(d, "den-pc");

    // While it converts: working, with the file and its progress, from the record alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let working = loop {
        let now = status_json(d);
        let den = now["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == "den-pc")
            .cloned()
            .unwrap_or_default();
        let job = &den["presence"]["jobs"][0];
        if den["state"] == "working" && job["percent"].as_f64().is_some_and(|p| p > 0.0) {
            break den;
        }
        assert!(Instant::now() < deadline, "never saw it working: {now:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let presence = &working["presence"];
    assert_eq!(presence["host_id"], "den-pc-id");
    assert_eq!(presence["jobs"][0]["file"], "long.mkv");
    assert_eq!(presence["jobs"][0]["phase"], "transcoding");
    assert_eq!(presence["version"], env!("CARGO_PKG_VERSION"));
    assert!(presence["os"].as_str().unwrap().starts_with("linux"));
    let seen = presence["unchanged_secs"].as_f64().unwrap();
    assert!(seen < 30.0, "judged on the share's clock: {seen}");

    assert_eq!(worker.wait().unwrap().code(), Some(0));
    let after = status_json(d);
    let den = host(&after, "den-pc");
    assert_eq!(den["state"], "stopped", "{after:#}");
    assert_eq!(den["presence"]["run_converted"], 1);
    assert_eq!(den["presence"]["encoders"][0], "libx265");
    assert!(den["presence"]["run_saved_bytes"].as_u64().unwrap() > 0);
    assert_eq!(den["converted"], 1, "the history and the record meet");
    let text = cmd().arg("status").arg(d).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("den-pc") && l.contains("stopped")),
        "{text}"
    );

    // A host killed outright leaves its record "working"; once the file server's clock says
    // it has not been renewed for long, it has gone quiet.
    long_h264_mkv(&d.join("second.mkv"), 10, "320x180");
    age_all(d);
    let mut doomed = convert_as(d, "attic");
    let record = d.join(".mediabox-hosts").join("attic-id.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&record).is_ok_and(|t| t.contains("\"transcoding\"")) {
        assert!(Instant::now() < deadline, "attic never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    assert_eq!(host(&status_json(d), "attic")["state"], "working");
    // Ten minutes pass on the server's clock: the mtime is what it judges by.
    fs::File::options()
        .write(true)
        .open(&record)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    let later = status_json(d);
    let attic = host(&later, "attic");
    assert_eq!(attic["state"], "gone_quiet", "{later:#}");
    assert!(attic["presence"]["unchanged_secs"].as_f64().unwrap() > 590.0);
    // Working hosts first, then idle, gone quiet, stopped.
    let order: Vec<_> = later["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["attic", "den-pc"]);
    let text = cmd().arg("status").arg(d).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("attic") && l.contains("gone quiet")),
        "{text}"
    );
}

#[test]
fn a_share_that_refuses_the_presence_record_gets_one_warning_and_the_run_goes_on() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("a.mkv"));
    age_all(d);
    let folder = d.join(".mediabox-hosts");
    // The presence folder cannot be made, as on a share that refuses it; nothing else fails.
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(&folder)
        .args([
            "-e",
            "trace=mkdir,mkdirat",
            "-e",
            "inject=mkdir,mkdirat:error=EACCES",
        ])
        .arg(bin())
        .env("MEDIA_CONVERTER_HOSTNAME", "attic")
        .env("MEDIA_CONVERTER_HOST_ID", "attic-id")
        .arg("--dir")
        .arg(d)
        .args(["--json", "--preset", "ultrafast"])
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    assert_eq!(video_codec(&d.join("a.mkv")), "hevc");
    let warnings: Vec<_> = of_kind(&events, "warning")
        .into_iter()
        .filter(|w| w["message"].as_str().unwrap().contains("presence record"))
        .collect();
    assert_eq!(warnings.len(), 1, "said once: {events:#?}");
    assert!(
        warnings[0]["file"]
            .as_str()
            .unwrap()
            .ends_with(".mediabox-hosts"),
        "{warnings:?}"
    );
    assert!(!folder.exists());
}

#[test]
fn the_presence_fault_case_cannot_pass_by_skipping_where_strace_is_required() {
    assert_strace_case_skips_only_where_allowed(
        "a_share_that_refuses_the_presence_record_gets_one_warning_and_the_run_goes_on",
    );
}
