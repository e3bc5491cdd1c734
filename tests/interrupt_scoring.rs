//! Ctrl-C while a `--target-vmaf` conversion scores its new file against the original (the
//! achieved-score pass, after the encode and its verification, before the swap): the run
//! stops at once, as at any step before the swap: the scoring ffmpeg killed, the new file
//! removed, the original and the cache's search kept, exit 130. The next run encodes at the
//! cached quality without a trial.
//!
//! VMAF needs the static ffmpeg 6.0 that `scripts/ffmpeg-6.sh` fetches (with libvmaf);
//! without it the test says so LOUDLY and passes, unless `MEDIA_CONVERTER_FFMPEG6_REQUIRED=1`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{
    age_all, cmd, ctrl_c_while_frozen, ffmpeg6, of_kind, read_cache, smooth_clip, wait_for_child,
    walk,
};
use serde_json::Value;

/// `--file FILE --target-vmaf 93 --min-savings 0` with the ffmpeg 6.0 in `dir6`, its JSON
/// events on a pipe.
fn spawn_vmaf(file: &Path, dir6: &Path) -> Child {
    cmd()
        .args(["--file", file.to_str().unwrap()])
        .args(["--target-vmaf", "93", "--min-savings", "0"])
        .arg("--ffmpeg")
        .arg(dir6.join("ffmpeg"))
        .arg("--ffprobe")
        .arg(dir6.join("ffprobe"))
        .args(["--json", "--preset", "ultrafast"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The scorer is frozen before the Ctrl-C, so a run that waited for its pass to end would
/// never end; one that stops it ends within a moment.
#[test]
fn ctrl_c_during_the_achieved_score_pass_stops_the_run_at_once() {
    let Some(dir6) = ffmpeg6("the achieved-score interrupt test (libvmaf)") else {
        return;
    };
    let lib = tempfile::tempdir().unwrap();
    let file = lib.path().join("clip.mkv");
    smooth_clip(&file);
    age_all(lib.path());
    let before = std::fs::read(&file).unwrap();

    let mut run = spawn_vmaf(&file, &dir6);
    let stdout = run.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    // The achieved-score pass: libvmaf reading the new file, the hidden temp output beside
    // the original (a trial's samples are in a temp folder).
    let scorer = wait_for_child(&mut run, &["libvmaf", ".mediabox-"], 180);
    let (code, stopped_after) = ctrl_c_while_frozen(&mut run, scorer);
    let events = reader.join().unwrap();
    assert_eq!(code, Some(130), "{events:#?}");
    assert!(
        stopped_after < Duration::from_millis(1500),
        "{stopped_after:?} after Ctrl-C"
    );
    let scorer_state = std::fs::read_to_string(format!("/proc/{scorer}/stat")).unwrap_or_default();
    assert!(
        scorer_state.is_empty(),
        "the scoring ffmpeg {scorer} outlived the run: {scorer_state}"
    );
    // Stopped before the swap: nothing converted, the new file gone, the original as it was.
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    assert_eq!(of_kind(&events, "summary")[0]["interrupted"], true);
    assert_eq!(walk(lib.path()), vec![file.clone()]);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // The search, recorded when it ended, is kept for the next run.
    let cache = read_cache(lib.path());
    let entry = &cache["files"]["clip.mkv"];
    assert!(entry.get("search").is_some(), "{cache:#}");
    assert!(entry.get("converted").is_none(), "{cache:#}");

    let mut again = spawn_vmaf(&file, &dir6);
    let lines = BufReader::new(again.stdout.take().unwrap()).lines();
    let events: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(again.wait().unwrap().code(), Some(0), "{events:#?}");
    let searched = of_kind(&events, "searched");
    assert_eq!(searched.len(), 1, "{events:#?}");
    assert_eq!(searched[0]["cached"], true, "{events:#?}");
    let converted = of_kind(&events, "converted");
    assert_eq!(converted.len(), 1, "{events:#?}");
    assert!(converted[0]["score"]["value"].as_f64().unwrap() > 80.0);
}
