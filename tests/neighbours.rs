//! The original mediabox tool at work in the same library: its `<file>.lock` is honoured by
//! its own rules, never removed, and its presence said once, loudly.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

/// A lock as the original's `file_lock.py` writes it, `age` old by its timestamp.
fn original_lock(media: &Path, host: &str, age: Duration) -> std::path::PathBuf {
    let stamp = SystemTime::now() - age;
    let unix = stamp.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let lock = media.with_file_name(format!(
        "{}.lock",
        media.file_name().unwrap().to_string_lossy()
    ));
    fs::write(
        &lock,
        format!(
            r#"{{
  "lock_id": "{host}_4242_0a1b2c3d",
  "hostname": "{host}",
  "pid": 4242,
  "timestamp": {},
  "file": "{}",
  "locked_at": "2027-01-15T08:00:00.000000"
}}"#,
            unix.as_secs_f64(),
            media.display()
        ),
    )
    .unwrap();
    let file = fs::File::options().write(true).open(&lock).unwrap();
    file.set_modified(stamp).unwrap();
    lock
}

#[test]
fn a_file_the_original_holds_is_left_to_it_and_its_presence_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["held.mkv", "also held.mkv", "stale.mkv"] {
        h264_aac_srt_mkv(&d.join(name));
    }
    age_all(d);
    let held_lock = original_lock(&d.join("held.mkv"), "nas", Duration::from_secs(600));
    let also_lock = original_lock(&d.join("also held.mkv"), "nas", Duration::from_secs(60));
    // Past the original's 30 minutes: it would take this file over itself.
    let stale_lock = original_lock(&d.join("stale.mkv"), "nas", Duration::from_secs(3600));
    let held_before = fs::read(d.join("held.mkv")).unwrap();
    let lock_before = fs::read(&held_lock).unwrap();

    let out = cmd()
        .args(["--json", "--preset", "ultrafast", "--dir"])
        .arg(d)
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    for name in ["held.mkv", "also held.mkv"] {
        let skipped = of_kind(&events, "skipped")
            .into_iter()
            .find(|e| e["file"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} not skipped: {events:#?}"));
        assert_eq!(skipped["reason"], "locked", "{skipped}");
        assert_eq!(skipped["host"], "nas", "{skipped}");
    }
    assert_eq!(fs::read(d.join("held.mkv")).unwrap(), held_before);
    assert_eq!(
        fs::read(&held_lock).unwrap(),
        lock_before,
        "its lock is not ours to touch"
    );
    assert!(also_lock.exists() && stale_lock.exists());
    assert_eq!(video_codec(&d.join("stale.mkv")), "hevc");
    let notices: Vec<_> = of_kind(&events, "warning")
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("ORIGINAL MEDIABOX TOOL")
        })
        .collect();
    assert_eq!(notices.len(), 1, "said once, not per file: {events:#?}");
    // Our own claims on the files left to it are released.
    let ours: Vec<_> = walk(d)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".mediabox"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}
