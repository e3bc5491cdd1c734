//! The history's `not_smaller` skip against the `--min-savings` of the run asking: a file
//! that was not worth keeping under a higher bar may be worth it under a lower one. The
//! record carries the size that decided it (what the encode made, what the search
//! predicted, or a lower bound of it), and the skip holds only while that size still
//! misses the bar. The real binary and Debian's ffmpeg (SSIM needs no libvmaf).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use common::{age_all, cmd, events, mpeg4_clip, of_kind, read_cache, signal, smooth_clip};
use serde_json::Value;

/// `--file FILE --json --preset veryfast` with `args` and `--min-savings PCT`: its exit
/// code, events and the cache's record of the file afterwards.
fn run(file: &Path, args: &[&str], min_savings: &str) -> (Vec<Value>, Value) {
    let out = cmd()
        .arg("--file")
        .arg(file)
        .args([
            "--json",
            "--preset",
            "veryfast",
            "--min-savings",
            min_savings,
        ])
        .args(args)
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{events:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let record = read_cache(dir)["files"][name].clone();
    (events, record)
}

/// The one `skipped` event's reason, or `None` when nothing was skipped.
fn skip_reason(events: &[Value]) -> Option<String> {
    let skipped = of_kind(events, "skipped");
    assert!(skipped.len() <= 1, "{events:#?}");
    skipped
        .first()
        .map(|s| s["reason"].as_str().unwrap().to_owned())
}

/// A library of one clip, old enough to convert.
fn library(make: fn(&Path)) -> (tempfile::TempDir, std::path::PathBuf) {
    let lib = tempfile::tempdir().unwrap();
    let file = lib.path().join("clip.mkv");
    make(&file);
    age_all(lib.path());
    (lib, file)
}

/// Grain that moves every frame: it shrinks, but not by much.
fn grain(out: &Path) {
    mpeg4_clip(
        out,
        "testsrc2=size=256x144:rate=24,noise=alls=30:allf=t+u,gblur=sigma=0.6",
    );
}

/// An encode that did not save 99%: a higher bar skips it from the history without an
/// encode, a lower one converts it.
#[test]
fn a_file_not_smaller_enough_is_converted_when_the_bar_is_lowered() {
    let (_lib, file) = library(smooth_clip);
    let size = std::fs::metadata(&file).unwrap().len();

    let (first, record) = run(&file, &[], "99");
    assert_eq!(of_kind(&first, "converting").len(), 1, "{first:#?}");
    assert_eq!(skip_reason(&first).as_deref(), Some("not_smaller"));
    let made = record["not_smaller"]["bytes"].as_u64().unwrap();
    assert!(made < size, "{record:#}");
    assert!(
        record["not_smaller"].get("at_least").is_none(),
        "{record:#}"
    );

    // Held to a bar the made size misses as well: no encode.
    let (higher, _) = run(&file, &[], "99.5");
    assert!(of_kind(&higher, "converting").is_empty(), "{higher:#?}");
    assert_eq!(skip_reason(&higher).as_deref(), Some("not_smaller"));

    // A bar the made size meets: converted.
    let (lower, record) = run(&file, &[], "0");
    assert_eq!(skip_reason(&lower), None, "{lower:#?}");
    assert_eq!(of_kind(&lower, "converted").len(), 1, "{lower:#?}");
    assert!(record.get("not_smaller").is_none(), "{record:#}");
}

/// The search of `file` for `target` at `--min-savings 0`, the run stopped (Ctrl-C) once
/// it is done: the quality and the predicted size are in the cache, nothing is encoded.
fn search_only(file: &Path, target: &[&str]) -> u64 {
    let mut run = cmd()
        .arg("--file")
        .arg(file)
        .args(["--json", "--preset", "veryfast", "--min-savings", "0"])
        .args(target)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let mut predicted = None;
    for line in lines {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event["event"] == "searched" {
            assert!(event["quality"].is_number(), "{event}");
            predicted = event["predicted_bytes"].as_u64();
            signal(run.id(), "INT");
        }
    }
    assert_eq!(run.wait().unwrap().code(), Some(130));
    predicted.expect("no search ended")
}

/// A prediction that missed the bar: a higher bar skips the file from the history, without
/// the search's answer even being read; a lower one that the prediction meets encodes at
/// the cached quality, without a trial.
#[test]
fn a_prediction_that_meets_a_lower_bar_is_encoded_without_searching_again() {
    let (_lib, file) = library(smooth_clip);
    let size = std::fs::metadata(&file).unwrap().len();
    let target = ["--target-ssim", "0.98"];
    let predicted = search_only(&file, &target);
    // The bars around the prediction, in whole percent.
    let saves = 100.0 * (1.0 - predicted as f64 / size as f64);
    let missed = (saves.floor() + 1.0).to_string();
    let higher = (saves.floor() + 2.0).to_string();

    let (first, record) = run(&file, &target, &missed);
    assert!(of_kind(&first, "searching").is_empty(), "{first:#?}");
    assert_eq!(
        skip_reason(&first).as_deref(),
        Some("predicted_not_smaller")
    );
    assert_eq!(record["not_smaller"]["bytes"], predicted, "{record:#}");
    assert!(
        record["not_smaller"].get("at_least").is_none(),
        "{record:#}"
    );

    let (higher, _) = run(&file, &target, &higher);
    assert!(of_kind(&higher, "searched").is_empty(), "{higher:#?}");
    assert!(of_kind(&higher, "converting").is_empty(), "{higher:#?}");
    assert_eq!(skip_reason(&higher).as_deref(), Some("not_smaller"));

    let (lower, record) = run(&file, &target, "0");
    assert!(of_kind(&lower, "searching").is_empty(), "{lower:#?}");
    assert_eq!(of_kind(&lower, "searched")[0]["cached"], true, "{lower:#?}");
    assert_eq!(skip_reason(&lower), None, "{lower:#?}");
    assert_eq!(of_kind(&lower, "converted").len(), 1, "{lower:#?}");
    assert!(record.get("not_smaller").is_none(), "{record:#}");
}

/// A search cut short knows only a lower bound of the size: a bar that bound still misses
/// skips without a search; one it no longer rules out searches again.
#[test]
fn a_search_cut_short_is_searched_again_only_when_its_bound_meets_the_bar() {
    let (_lib, file) = library(grain);
    let target = ["--target-ssim", "0.98"];

    let (first, record) = run(&file, &target, "99");
    assert_eq!(
        of_kind(&first, "searched")[0]["cut_short"],
        true,
        "{first:#?}"
    );
    let bound = record["search"]["predicted_bytes"].as_u64().unwrap();
    assert_eq!(record["not_smaller"]["bytes"], bound, "{record:#}");
    assert_eq!(record["not_smaller"]["at_least"], true, "{record:#}");

    let (same, _) = run(&file, &target, "99");
    assert!(of_kind(&same, "searching").is_empty(), "{same:#?}");
    assert_eq!(skip_reason(&same).as_deref(), Some("not_smaller"));

    let (lower, _) = run(&file, &target, "0");
    let searched = of_kind(&lower, "searched");
    assert_eq!(searched[0]["cached"], false, "{lower:#?}");
    assert!(searched[0]["quality"].is_number(), "{lower:#?}");
    assert_eq!(of_kind(&lower, "converted").len(), 1, "{lower:#?}");
}
