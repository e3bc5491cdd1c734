//! Encoder choice, fallback and `doctor`, end to end.
//!
//! A real GPU cannot be had on the test machines, so a fake ffmpeg stands first on `PATH`
//! where one is needed: it passes `hevc_nvenc` trial encodes (or fails them, on request) and
//! fails every real `hevc_nvenc` encode the way a driver out of sessions does, or, on
//! request, has the real ffmpeg's libx265 play NVENC (at a deliberately poor quality for the
//! whole file where a test needs a hardware encode that misses its quality target), or
//! kills every achieved-score pass as the OOM killer would; everything else it hands to the
//! real ffmpeg, or to a `GatedTool` in front of it that holds one call (a pass the test then
//! kills, or lets run once it has taken the file's claim over).
//!
//! Unix only: the fake ffmpeg is a bash script.
#![cfg(unix)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// What the fake prints for a real NVENC encode: a consumer card out of encode sessions.
const SESSION_LIMIT: &str = "OpenEncodeSessionEx failed: incompatible client key (21)";

/// A directory holding the fake `ffmpeg` and a link to the real `ffprobe`, to put first on
/// `PATH`.
struct FakeGpu {
    dir: tempfile::TempDir,
}

impl FakeGpu {
    fn new() -> FakeGpu {
        FakeGpu::over(&tool_on_path("ffmpeg"))
    }

    /// The fake, handing what it does not fake to `real_ffmpeg` (the real one, or a
    /// [`GatedTool`] in front of it).
    fn over(real_ffmpeg: &Path) -> FakeGpu {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            r#"#!/bin/bash
# Fake ffmpeg: hevc_nvenc passes one-frame trials (unless FAKE_NVENC_TRIAL_FAILS is set)
# and fails real encodes, or with FAKE_NVENC_ENCODES set has them done by libx265: NVENC's
# CQ as x265's CRF, except the whole-file encode (the one reporting -progress), which gets
# FAKE_NVENC_WHOLE_CRF when that is set: a hardware encoder whose whole file falls short of
# what its samples promised. libx265's trial waits FAKE_X265_TRIAL_SECS first when that is
# set. With FAKE_PASS_KILLED set, every achieved-score pass (SSIM against a temp output
# beside the original) dies as the OOM killer would have it. Anything else runs the real
# ffmpeg.
if [ -n "$FAKE_PASS_KILLED" ]; then
  case " $* " in *ssim*)
    case " $* " in *.mediabox-*.partial.*) kill -KILL $$ ;; esac ;;
  esac
fi
case " $* " in
  *" lavfi "*" libx265 "*" null "*)
    # libx265's one-frame trial as on a machine too busy to finish it quickly.
    [ -n "$FAKE_X265_TRIAL_SECS" ] && sleep "$FAKE_X265_TRIAL_SECS" ;;
esac
case " $* " in
  *" hevc_nvenc "*)
    case " $* " in
      *" lavfi "*" null "*)
        if [ -n "$FAKE_NVENC_TRIAL_FAILS" ]; then
          echo "[hevc_nvenc @ 0x55d0c1d3a540] OpenEncodeSessionEx failed: unsupported device (2): (no details)" >&2
          echo "[hevc_nvenc @ 0x55d0c1d3a540] No capable devices found" >&2
          exit 1
        fi
        exit 0 ;;
      *)
        if [ -z "$FAKE_NVENC_ENCODES" ]; then
          echo "[hevc_nvenc @ 0x55d0c1d3a540] {SESSION_LIMIT}: (no details)" >&2
          echo "Error initializing output stream 0:0 -- Error while opening encoder for output stream #0:0" >&2
          exit 1
        fi
        whole=
        case " $* " in *" -progress "*) whole=1 ;; esac
        args=()
        while [ $# -gt 0 ]; do
          case "$1" in
            -c:v:*) [ "$2" = hevc_nvenc ] && args+=("$1" libx265) || args+=("$1" "$2"); shift 2 ;;
            -rc:v:*|-b:v:*|-spatial_aq:v:*|-gpu:v:*) shift 2 ;;
            -preset:v:*) args+=("$1" ultrafast); shift 2 ;;
            -cq:v:*)
              q=$2
              [ -n "$whole" ] && [ -n "$FAKE_NVENC_WHOLE_CRF" ] && q=$FAKE_NVENC_WHOLE_CRF
              args+=("-crf:${{1#-cq:}}" "$q"); shift 2 ;;
            *) args+=("$1"); shift ;;
          esac
        done
        exec '{ffmpeg}' "${{args[@]}}" ;;
    esac ;;
esac
exec '{ffmpeg}' "$@"
"#,
            ffmpeg = real_ffmpeg.display()
        );
        write_script(&dir.path().join("ffmpeg"), &script);
        std::os::unix::fs::symlink(tool_on_path("ffprobe"), dir.path().join("ffprobe")).unwrap();
        FakeGpu { dir }
    }

    /// `PATH` with the fake first.
    fn path(&self) -> std::ffi::OsString {
        path_with_first(self.dir.path())
    }

    fn run(&self, library: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
        self.run_with(&[], library, extra)
    }

    /// A run with the fake's `FAKE_*` settings in `env`.
    fn run_with(
        &self,
        env: &[(&str, &str)],
        library: &Path,
        extra: &[&str],
    ) -> (Output, Vec<Value>) {
        run_json_with(self.command(env), library, extra)
    }

    /// The binary through the fake, with only the fake's `FAKE_*` settings in `env`.
    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut command = cmd();
        command
            .env("PATH", self.path())
            .env_remove("FAKE_NVENC_TRIAL_FAILS")
            .env_remove("FAKE_NVENC_ENCODES")
            .env_remove("FAKE_NVENC_WHOLE_CRF")
            .env_remove("FAKE_X265_TRIAL_SECS")
            .env_remove("FAKE_PASS_KILLED")
            .envs(env.iter().copied());
        command
    }
}

fn only<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(events, kind);
    assert_eq!(found.len(), 1, "one {kind} event expected: {events:#?}");
    found[0]
}

/// Files whose name starts with a dot: temp outputs, backups, probes.
fn debris(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

#[cfg(unix)]
#[test]
fn a_failed_hardware_encode_is_redone_with_libx265() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    age_all(d);

    let (out, events) = gpu.run(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");

    // auto trusts the trial: NVENC "works", so it is chosen over libx265.
    let chosen = only(&events, "encoder_chosen");
    assert_eq!(chosen["encoder"], "hevc_nvenc", "{chosen}");
    let rejected = chosen["rejected"].as_array().unwrap();
    assert!(
        rejected.iter().any(
            |r| r["encoder"] == "libx265" && r["reason"] == "works, but hevc_nvenc comes first"
        ),
        "{chosen}"
    );

    // The real encode fails, is announced, and libx265 does the file.
    let converting: Vec<&str> = of_kind(&events, "converting")
        .iter()
        .map(|e| e["encoder"].as_str().unwrap())
        .collect();
    assert_eq!(converting, ["hevc_nvenc", "libx265"]);
    let fallback = only(&events, "fallback");
    assert_eq!(
        (fallback["from"].as_str(), fallback["to"].as_str()),
        (Some("hevc_nvenc"), Some("libx265"))
    );
    assert!(
        fallback["error"].as_str().unwrap().contains(SESSION_LIMIT),
        "ffmpeg's reason is kept: {fallback}"
    );

    // The outcome says which encoder made the file and what failed first: what the cache
    // records.
    let converted = only(&events, "converted");
    assert_eq!(converted["encoder"], "libx265");
    assert_eq!(converted["fallback"]["from"], "hevc_nvenc");
    assert!(
        converted["fallback"]["error"]
            .as_str()
            .unwrap()
            .contains(SESSION_LIMIT),
        "{converted}"
    );
    assert_eq!(video_codec(&d.join("movie.mkv")), "hevc");
    assert!(debris(d).is_empty(), "left behind: {:?}", debris(d));

    // The shared cache records the encoder that finally produced the file.
    let cache = read_cache(d);
    let history = &cache["files"]["movie.mkv"]["converted"];
    assert_eq!(history["encoder"], "libx265", "{cache}");
}

#[cfg(unix)]
#[test]
fn no_fallback_fails_the_file_cleanly_and_keeps_the_original() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    age_all(d);
    let before = fs::read(d.join("movie.mkv")).unwrap();

    let (out, events) = gpu.run(d, &["--no-fallback"]);
    assert_eq!(out.status.code(), Some(1), "{events:#?}");
    assert!(of_kind(&events, "fallback").is_empty(), "{events:#?}");
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    let failed = only(&events, "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains(SESSION_LIMIT), "{error}");
    assert!(
        error.contains("not retried with libx265: --no-fallback"),
        "{error}"
    );
    assert_eq!(fs::read(d.join("movie.mkv")).unwrap(), before);
    assert_eq!(walk(d), [d.join("movie.mkv")], "nothing left behind");
}

#[cfg(unix)]
#[test]
fn hdr10_never_goes_to_a_hardware_encoder() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    hdr10_mkv(&d.join("hdr.mkv"));
    age_all(d);
    let before = fs::read(d.join("hdr.mkv")).unwrap();

    // Forced to NVENC: the HDR file is skipped, untouched, with the reason.
    let (out, events) = gpu.run(d, &["--encoder", "hevc_nvenc"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skipped = only(&events, "skipped");
    assert_eq!(skipped["reason"], "hdr_on_hardware");
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("--encoder libx265"),
        "{skipped}"
    );
    assert!(of_kind(&events, "converting").is_empty(), "{events:#?}");
    assert_eq!(fs::read(d.join("hdr.mkv")).unwrap(), before);

    // auto with NVENC working: libx265 does the HDR file, and NVENC is never tried on it.
    let (out, events) = gpu.run(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(only(&events, "encoder_chosen")["encoder"], "hevc_nvenc");
    assert_eq!(only(&events, "converting")["encoder"], "libx265");
    let converted = only(&events, "converted");
    assert_eq!(converted["encoder"], "libx265");
    assert!(converted.get("fallback").is_none(), "{converted}");
    let probe = ffprobe(&d.join("hdr.mkv"));
    assert_eq!(probe["streams"][0]["color_transfer"], "smpte2084");
}

#[cfg(unix)]
#[test]
fn a_forced_encoder_that_fails_its_trial_falls_back_unless_told_not_to() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_10bit_mkv(&d.join("movie.mkv"));
    age_all(d);
    let before = fs::read(d.join("movie.mkv")).unwrap();
    let run = |extra: &[&str]| {
        let forced = [&["--encoder", "hevc_nvenc"], extra].concat();
        gpu.run_with(&[("FAKE_NVENC_TRIAL_FAILS", "1")], d, &forced)
    };

    // --no-fallback: the file fails with the trial's reason and is left alone.
    let (out, events) = run(&["--no-fallback"]);
    assert_eq!(out.status.code(), Some(1), "{events:#?}");
    let error = only(&events, "failed")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with(
            "hevc_nvenc does not work here: OpenEncodeSessionEx failed: unsupported device"
        ),
        "{error}"
    );
    assert!(
        error.contains("without --no-fallback, libx265 would be used"),
        "{error}"
    );
    assert_eq!(fs::read(d.join("movie.mkv")).unwrap(), before);

    // With fallback allowed, a warning says so and libx265 converts it.
    let (out, events) = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let warning = only(&events, "warning");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .ends_with("libx265 is used instead"),
        "{warning}"
    );
    assert_eq!(only(&events, "encoder_chosen")["encoder"], "libx265");
    assert_eq!(only(&events, "converted")["encoder"], "libx265");
    assert_eq!(video_codec(&d.join("movie.mkv")), "hevc");
}

/// libx265 has no driver to hang: a trial slower than a hardware encoder's timeout means a
/// busy machine, and every file of such a run once failed as "libx265 does not work here".
#[cfg(unix)]
#[test]
fn a_slow_libx265_trial_on_a_busy_machine_still_converts() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    age_all(d);
    // Over the 15 s a hardware encoder's trial gets before it counts as a hung driver.
    let slower_than_a_driver = "17";

    let (out, events) = gpu.run_with(
        &[("FAKE_X265_TRIAL_SECS", slower_than_a_driver)],
        d,
        &["--encoder", "libx265"],
    );
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(only(&events, "encoder_chosen")["encoder"], "libx265");
    assert_eq!(only(&events, "converted")["encoder"], "libx265");
    assert_eq!(video_codec(&d.join("movie.mkv")), "hevc");
}

/// The SSIM target of the quality tests, and how far a file may fall short of it
/// (`Metric::tolerance`).
const TARGET_SSIM: f64 = 0.98;
const SSIM_TOLERANCE: f64 = 0.002;

fn target_args() -> Vec<&'static str> {
    vec![
        "--target-ssim",
        "0.98",
        "--min-savings",
        "0",
        "--preset",
        "veryfast",
    ]
}

fn encoders_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a str> {
    of_kind(events, kind)
        .iter()
        .map(|e| e["encoder"].as_str().unwrap())
        .collect()
}

/// NVENC (played by libx265) encodes the whole file far below what its samples promised:
/// the achieved score misses the target, the file is redone with libx265 at libx265's own
/// searched quality, and the final file meets the target. With --no-fallback the file fails
/// instead and keeps its original.
#[cfg(unix)]
#[test]
fn a_hardware_encode_that_misses_the_target_is_redone_with_libx265() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    smooth_clip(&d.join("clip.mkv"));
    age_all(d);
    let before = fs::read(d.join("clip.mkv")).unwrap();
    let missing = [("FAKE_NVENC_ENCODES", "1"), ("FAKE_NVENC_WHOLE_CRF", "51")];

    // --no-fallback: the miss fails the file, and the original stays.
    let mut extra = target_args();
    extra.push("--no-fallback");
    let (out, events) = gpu.run_with(&missing, d, &extra);
    assert_eq!(out.status.code(), Some(1), "{events:#?}");
    assert_eq!(encoders_of(&events, "converting"), ["hevc_nvenc"]);
    assert!(of_kind(&events, "fallback").is_empty(), "{events:#?}");
    let error = only(&events, "failed")["error"].as_str().unwrap();
    assert!(
        error.starts_with("hevc_nvenc: its file scored SSIM 0.")
            && error.contains("short of the target 0.9800")
            && error.ends_with("(not redone with libx265: --no-fallback)"),
        "{error}"
    );
    assert_eq!(fs::read(d.join("clip.mkv")).unwrap(), before);
    assert_eq!(walk(d), [d.join("clip.mkv")], "nothing left behind");

    // With fallback allowed: searched and encoded on NVENC, scored, redone with libx265
    // after a search of libx265's own.
    let (out, events) = gpu.run_with(&missing, d, &target_args());
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(only(&events, "encoder_chosen")["encoder"], "hevc_nvenc");
    // NVENC's search was cached by the first run; libx265's is made now.
    let searched = of_kind(&events, "searched");
    let searched: Vec<(&str, bool)> = searched
        .iter()
        .map(|e| (e["encoder"].as_str().unwrap(), e["cached"] == true))
        .collect();
    assert_eq!(searched, [("hevc_nvenc", true), ("libx265", false)]);
    assert_eq!(
        encoders_of(&events, "converting"),
        ["hevc_nvenc", "libx265"]
    );
    let fallback = only(&events, "fallback");
    assert_eq!(
        (fallback["from"].as_str(), fallback["to"].as_str()),
        (Some("hevc_nvenc"), Some("libx265"))
    );
    let why = fallback["error"].as_str().unwrap();
    assert!(
        why.contains("short of the target 0.9800") && why.contains("tolerance of 0.0020"),
        "{why}"
    );

    let converted = only(&events, "converted");
    assert_redone_with_libx265(d, converted);
    let missed = converted["fallback"]["score"]["value"].as_f64().unwrap();
    assert!(
        missed < TARGET_SSIM - SSIM_TOLERANCE,
        "NVENC's miss: {missed}"
    );
    let achieved = converted["score"]["value"].as_f64().unwrap();
    assert!(
        achieved >= TARGET_SSIM - SSIM_TOLERANCE,
        "the final file meets the target: {achieved}"
    );
}

/// `clip.mkv` of `library` was converted by libx265 after NVENC's file was set aside, nothing
/// is left beside it, and the cache records both, as the `converted` event does: the
/// encoder that made the file with its score (if it has one), and the hardware encode with
/// why it was redone and its own score (if it has one).
fn assert_redone_with_libx265(library: &Path, converted: &Value) {
    assert_eq!(converted["encoder"], "libx265", "{converted}");
    assert_eq!(converted["fallback"]["from"], "hevc_nvenc", "{converted}");
    assert_eq!(video_codec(&library.join("clip.mkv")), "hevc");
    assert!(
        debris(library).is_empty(),
        "left behind: {:?}",
        debris(library)
    );
    let cache = read_cache(library);
    let record = &cache["files"]["clip.mkv"]["converted"];
    assert_eq!(record["encoder"], "libx265", "{cache:#}");
    assert_eq!(record.get("score"), converted.get("score"), "{cache:#}");
    assert_eq!(record["fallback"], converted["fallback"], "{cache:#}");
}

/// NVENC (played by libx265) whose whole file is what its samples promised: the target is
/// met and the file is kept as NVENC made it, with no second encode.
#[cfg(unix)]
#[test]
fn a_hardware_encode_that_meets_the_target_is_kept() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    smooth_clip(&d.join("clip.mkv"));
    age_all(d);

    let (out, events) = gpu.run_with(&[("FAKE_NVENC_ENCODES", "1")], d, &target_args());
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(encoders_of(&events, "searched"), ["hevc_nvenc"]);
    assert_eq!(encoders_of(&events, "converting"), ["hevc_nvenc"]);
    assert!(of_kind(&events, "fallback").is_empty(), "{events:#?}");
    let converted = only(&events, "converted");
    assert_eq!(converted["encoder"], "hevc_nvenc");
    assert!(converted.get("fallback").is_none(), "{converted}");
    let achieved = converted["score"]["value"].as_f64().unwrap();
    assert!(achieved >= TARGET_SSIM - SSIM_TOLERANCE, "{achieved}");
    let cache = read_cache(d);
    let record = &cache["files"]["clip.mkv"]["converted"];
    assert_eq!(record["encoder"], "hevc_nvenc", "{cache:#}");
    assert!(record.get("fallback").is_none(), "{cache:#}");
}

/// A run of `library` on NVENC (played by libx265, at the quality its samples promised)
/// whose achieved-score pass's ffmpeg is held, then killed from outside (the OOM killer, a
/// user). The exit code and events of the run.
fn run_with_the_pass_killed(library: &Path, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    run_with_the_pass_held(library, extra, |_, held| held.kill())
}

/// A run of `library` as host `a` on NVENC (played by libx265, at the quality its samples
/// promised) whose achieved-score pass's ffmpeg is held while `meanwhile` acts: while it is
/// held, the new file waits beside the original, which is untouched. The exit code and
/// events of the run, which must end within two minutes.
fn run_with_the_pass_held(
    library: &Path,
    extra: &[&str],
    meanwhile: impl FnOnce(&GatedTool, &Held),
) -> (Option<i32>, Vec<Value>) {
    let name = "clip.mkv";
    let original = library.join(name);
    let before = fs::read(&original).unwrap();
    // The pass reads the hidden temp output beside the original; the trials' samples lie in
    // a temp folder, and the verification computes no SSIM.
    let gate = GatedTool::holding("ffmpeg", &["ssim", &format!(".{name}.mediabox-")]);
    let gate_bin = std::env::split_paths(&gate.path_var()).next().unwrap();
    let gpu = FakeGpu::over(&gate_bin.join("ffmpeg"));
    let mut run = Running(
        gpu.command(&[("FAKE_NVENC_ENCODES", "1")])
            .env("MEDIA_CONVERTER_HOSTNAME", "a")
            .env("MEDIA_CONVERTER_HOST_ID", "a-id")
            .arg("--dir")
            .arg(library)
            .arg("--json")
            .args(target_args())
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = run.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let held = gate.wait_held(&mut run.0, 120);
    assert_eq!(fs::read(&original).unwrap(), before);
    let temps = temp_outputs(&original);
    assert_eq!(
        temps.len(),
        1,
        "the new file beside the original: {temps:?}"
    );
    meanwhile(&gate, &held);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= until {
            held.kill();
            panic!("the run never ended");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    held.kill();
    let stdout = reader.join().unwrap();
    let events = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (status.code(), events)
}

/// What a fallback or failure says of a hardware encode whose score could not be taken.
const NOT_MEASURED: &str = "its achieved SSIM could not be measured";

/// NVENC's file may meet the target, but its achieved-score pass dies, so nobody knows: it is
/// not kept unverified. With --no-fallback the file fails and keeps its original; otherwise
/// it is redone with libx265 at libx265's own searched quality, scored, and the event and
/// the cache say that NVENC's file was not measured and what libx265's scored.
#[cfg(unix)]
#[test]
fn a_hardware_encode_whose_score_cannot_be_taken_is_redone_with_libx265() {
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    smooth_clip(&d.join("clip.mkv"));
    age_all(d);
    let before = fs::read(d.join("clip.mkv")).unwrap();

    // --no-fallback: an encode not known to meet the target fails the file, as a miss does.
    let (code, events) = run_with_the_pass_killed(d, &["--no-fallback"]);
    assert_eq!(code, Some(1), "{events:#?}");
    assert_eq!(encoders_of(&events, "converting"), ["hevc_nvenc"]);
    assert!(of_kind(&events, "fallback").is_empty(), "{events:#?}");
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    let error = only(&events, "failed")["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("hevc_nvenc: {NOT_MEASURED}"))
            && error.ends_with("(not redone with libx265: --no-fallback)"),
        "{error}"
    );
    assert_eq!(fs::read(d.join("clip.mkv")).unwrap(), before);
    assert_eq!(walk(d), [d.join("clip.mkv")], "nothing left behind");

    // With fallback allowed: redone with libx265 after a search of its own, and scored.
    let (code, events) = run_with_the_pass_killed(d, &[]);
    assert_eq!(code, Some(0), "{events:#?}");
    assert_eq!(
        encoders_of(&events, "converting"),
        ["hevc_nvenc", "libx265"]
    );
    assert_eq!(encoders_of(&events, "searched"), ["hevc_nvenc", "libx265"]);
    let fallback = only(&events, "fallback");
    assert_eq!(
        (fallback["from"].as_str(), fallback["to"].as_str()),
        (Some("hevc_nvenc"), Some("libx265"))
    );
    let why = fallback["error"].as_str().unwrap();
    assert!(why.starts_with(NOT_MEASURED), "{why}");
    assert!(why.contains("target 0.9800"), "{why}");
    let converted = only(&events, "converted");
    assert_redone_with_libx265(d, converted);
    assert_eq!(converted["fallback"]["error"], fallback["error"]);
    assert!(
        converted["fallback"].get("score").is_none(),
        "no score claimed for NVENC's file: {converted}"
    );
    assert_eq!(converted["score"]["metric"], "ssim");
    let achieved = converted["score"]["value"].as_f64().unwrap();
    assert!(achieved >= TARGET_SSIM - SSIM_TOLERANCE, "{achieved}");
}

/// Host `b` takes `a`'s claim on NVENC's file over during its pass and removes the new file
/// (as a breaker settles a dead claim), so the pass fails: that is no score missing, and the
/// file is no longer `a`'s to redo. It is abandoned for its lost claim, with no libx265
/// encode in a file another host now owns, the original untouched and `b`'s lock left alone.
#[cfg(unix)]
#[test]
fn a_hardware_encode_whose_pass_fails_with_its_claim_lost_is_not_redone() {
    use media_converter::lock::{LockRecord, lock_path};
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    let original = d.join("clip.mkv");
    smooth_clip(&original);
    age_all(d);
    let before = fs::read(&original).unwrap();
    let mut taken = None;
    let (code, events) = run_with_the_pass_held(d, &[], |gate, _| {
        taken = Some(take_over_live(&original, true));
        gate.go();
    });
    let taken = taken.unwrap();
    assert_eq!(code, Some(1), "{events:#?}");
    assert_eq!(encoders_of(&events, "converting"), ["hevc_nvenc"]);
    assert!(of_kind(&events, "fallback").is_empty(), "{events:#?}");
    assert!(of_kind(&events, "warning").is_empty(), "{events:#?}");
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    let error = only(&events, "failed")["error"].as_str().unwrap();
    assert!(error.contains("lost the claim"), "{error}");
    assert_eq!(fs::read(&original).unwrap(), before);
    let record = LockRecord::parse(&fs::read(lock_path(&original).unwrap()).unwrap()).unwrap();
    assert_eq!(record.lock_id.as_deref(), Some(taken.lock_id()));
    taken.release().unwrap();
    assert_eq!(walk(d), [original], "nothing left behind");
}

/// Every achieved-score pass dies, NVENC's and then libx265's: the libx265 file is kept as
/// any libx265 encode whose score cannot be taken (its quality rests on its search), with a
/// warning naming the file, and no score is claimed for either file.
#[cfg(unix)]
#[test]
fn when_libx265s_redo_cannot_be_scored_either_it_is_kept_on_its_search() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    smooth_clip(&d.join("clip.mkv"));
    age_all(d);

    let env = [("FAKE_NVENC_ENCODES", "1"), ("FAKE_PASS_KILLED", "1")];
    let (out, events) = gpu.run_with(&env, d, &target_args());
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(
        encoders_of(&events, "converting"),
        ["hevc_nvenc", "libx265"]
    );
    let why = only(&events, "fallback")["error"].as_str().unwrap();
    assert!(why.starts_with(NOT_MEASURED), "{why}");
    // A killed ffmpeg prints nothing: its exit status names what ended it.
    assert!(why.ends_with("failed: signal: 9 (SIGKILL)"), "{why}");
    let warning = only(&events, "warning");
    assert_eq!(warning["file"], d.join("clip.mkv").to_str().unwrap());
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with(NOT_MEASURED),
        "{warning}"
    );
    let converted = only(&events, "converted");
    assert_redone_with_libx265(d, converted);
    assert!(converted.get("score").is_none(), "{converted}");
    assert!(converted["fallback"].get("score").is_none(), "{converted}");
}

/// Under a target, a hardware encoder that fails (here already in the search's trial
/// encodes) falls back as a failed encode does: libx265 searches its own quality and
/// converts the file, instead of the file failing.
#[cfg(unix)]
#[test]
fn a_failed_hardware_encode_under_a_target_is_redone_at_libx265s_own_quality() {
    let gpu = FakeGpu::new();
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    smooth_clip(&d.join("clip.mkv"));
    age_all(d);

    let (out, events) = gpu.run(d, &target_args());
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    // NVENC's search started and failed; libx265 searched its own quality and encoded.
    assert!(!of_kind(&events, "searching").is_empty(), "{events:#?}");
    assert_eq!(encoders_of(&events, "searched"), ["libx265"]);
    assert_eq!(encoders_of(&events, "converting"), ["libx265"]);
    let fallback = only(&events, "fallback");
    assert_eq!(fallback["from"], "hevc_nvenc");
    let why = fallback["error"].as_str().unwrap();
    assert!(
        why.starts_with("searching the quality for SSIM 0.9800: ") && why.contains(SESSION_LIMIT),
        "{why}"
    );
    let converted = only(&events, "converted");
    assert_eq!(converted["encoder"], "libx265");
    let error = converted["fallback"]["error"].as_str().unwrap();
    assert!(error.contains(SESSION_LIMIT), "{error}");
    assert!(converted["fallback"].get("score").is_none(), "{converted}");
    let achieved = converted["score"]["value"].as_f64().unwrap();
    assert!(achieved >= TARGET_SSIM - SSIM_TOLERANCE, "{achieved}");
}

/// The static ffmpeg 6.0 has no NVENC at all (nor QSV, VAAPI): a run that asks for it says
/// so, rather than the first NVENC option its trial's command line stumbles on
/// ("Unrecognized option 'rc:v:0'"), both under `auto` and with `--encoder hevc_nvenc`.
#[test]
fn an_encoder_this_ffmpeg_lacks_is_named_as_missing_not_as_a_bad_option() {
    let Some(dir6) = ffmpeg6("naming an encoder that ffmpeg 6.0 lacks") else {
        return;
    };
    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    age_all(d);
    let before = fs::read(d.join("movie.mkv")).unwrap();
    let run = |extra: &[&str]| {
        let mut command = cmd();
        command
            .arg("--ffmpeg")
            .arg(dir6.join("ffmpeg"))
            .arg("--ffprobe")
            .arg(dir6.join("ffprobe"));
        run_json_with(command, d, extra)
    };

    // The encoder is chosen while the library is scanned, even when no file is converted.
    let (out, events) = run(&["--max-files", "0"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let chosen = only(&events, "encoder_chosen");
    assert_eq!(chosen["encoder"], "libx265", "{chosen}");
    let reason_for = |name: &str| {
        chosen["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["encoder"] == name)
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        reason_for("hevc_nvenc"),
        "this ffmpeg was built without hevc_nvenc",
        "{chosen}"
    );

    let (out, events) = run(&["--encoder", "hevc_nvenc", "--no-fallback"]);
    assert_eq!(out.status.code(), Some(1), "{events:#?}");
    let error = only(&events, "failed")["error"].as_str().unwrap();
    assert!(
        error
            .starts_with("hevc_nvenc does not work here: this ffmpeg was built without hevc_nvenc"),
        "{error}"
    );
    assert!(!error.contains("Unrecognized option"), "{error}");
    assert_eq!(fs::read(d.join("movie.mkv")).unwrap(), before);
}

/// `doctor --json` on this machine, with the real ffmpeg.
fn doctor(extra: &[&std::ffi::OsStr]) -> (Output, Value) {
    let out = cmd()
        .args(["doctor", "--json"])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("doctor --json printed {text:?}: {e}"));
    (out, report)
}

#[test]
fn auto_uses_what_doctor_finds_and_libx265_without_a_gpu() {
    let (_, report) = doctor(&[]);
    let expected = report["auto"].as_str().unwrap().to_string();
    let hardware_works = report["encoders"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["encoder"] != "libx265" && e["status"] == "works");
    if !hardware_works {
        assert_eq!(expected, "libx265");
    }

    let library = tempfile::tempdir().unwrap();
    let d = library.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    age_all(d);
    let (out, events) = run_json(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let chosen = only(&events, "encoder_chosen");
    let device = chosen["device"]
        .as_str()
        .map(|d| format!(" on {d}"))
        .unwrap_or_default();
    assert_eq!(
        format!("{}{device}", chosen["encoder"].as_str().unwrap()),
        expected
    );
    // Every other encoder is listed with a reason (more than once where there are several
    // render nodes).
    let rejected = chosen["rejected"].as_array().unwrap();
    assert!(rejected.len() >= 5, "{chosen}");
    assert!(
        rejected
            .iter()
            .all(|r| !r["reason"].as_str().unwrap().is_empty())
    );
    assert_eq!(only(&events, "converted")["encoder"], chosen["encoder"]);
}

#[test]
fn doctor_reports_each_encoder_and_the_share_and_cleans_up() {
    let share = tempfile::tempdir().unwrap();
    fs::write(share.path().join("Movie.mkv"), b"media").unwrap();
    let (out, report) = doctor(&[std::ffi::OsStr::new("--dir"), share.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["event"], "doctor");
    assert_eq!(report["ok"], true);
    assert!(report["ffmpeg"]["version"].as_str().is_some(), "{report:#}");
    assert!(report["ffprobe"]["path"].as_str().is_some(), "{report:#}");

    let encoders = report["encoders"].as_array().unwrap();
    let names: Vec<&str> = encoders
        .iter()
        .map(|e| e["encoder"].as_str().unwrap())
        .collect();
    for name in [
        "hevc_nvenc",
        "hevc_qsv",
        "hevc_vaapi",
        "hevc_amf",
        "hevc_videotoolbox",
        "libx265",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let libx265 = encoders.iter().find(|e| e["encoder"] == "libx265").unwrap();
    assert_eq!(libx265["status"], "works");
    for encoder in encoders.iter().filter(|e| e["status"] != "works") {
        let reason = encoder["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{encoder}");
        assert!(
            !reason.contains(" @ 0x"),
            "ffmpeg's noise is trimmed: {reason}"
        );
    }
    // The test machines have no NVIDIA driver: NVENC is unusable, and ffmpeg said why.
    if report["nvidia"]["status"] == "unavailable" {
        let nvenc = encoders
            .iter()
            .find(|e| e["encoder"] == "hevc_nvenc")
            .unwrap();
        assert_eq!(nvenc["status"], "failed", "{nvenc}");
        assert!(
            nvenc["reason"]
                .as_str()
                .unwrap()
                .contains("NVML: no NVIDIA driver"),
            "{nvenc}"
        );
    }

    let share_report = &report["share"];
    for check in [
        "exclusive_create",
        "rename_over",
        "hard_link",
        "free_space",
        "clock",
    ] {
        assert_eq!(share_report[check]["ok"], true, "{check}: {share_report:#}");
    }
    assert!(share_report["free_bytes"].as_u64().unwrap() > 0);
    assert!(
        share_report["clock_offset"]["offset_secs"]
            .as_f64()
            .unwrap()
            .abs()
            < 1.0
    );
    assert_eq!(walk(share.path()), [share.path().join("Movie.mkv")]);

    // The text form says the same for people.
    let text = cmd().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("\n  libx265              works\n"), "{text}");
    assert!(text.ends_with("Ready: this host can convert.\n"), "{text}");
}

#[test]
fn doctor_without_ffmpeg_exits_2_and_names_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let out = cmd()
        .args(["doctor"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ffmpeg   MISSING: ffmpeg not found on PATH"),
        "{text}"
    );
    assert!(text.contains("Cannot run:"), "{text}");
    assert!(text.contains("sudo apt-get install ffmpeg"), "{text}");

    let out = cmd()
        .args(["doctor", "--json"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["encoders"], serde_json::json!([]));
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("install ffmpeg")
    );
}

#[test]
fn doctor_on_a_missing_share_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = doctor(&[
        std::ffi::OsStr::new("--dir"),
        dir.path().join("not mounted").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    assert_eq!(report["share"]["exclusive_create"]["ok"], false);
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("cannot hold conversions safely"),
        "{report:#}"
    );
}
