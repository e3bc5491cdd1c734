//! End-to-end conversion on one host: the real binary, real ffmpeg, real files.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn event_for<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
    file: &Path,
) -> Option<&'a serde_json::Value> {
    events
        .iter()
        .find(|e| e["event"] == kind && e["file"] == file.to_str().unwrap())
}

#[test]
fn a_mixed_library_converts_and_bad_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mixed_library(d);
    age_all(d);

    let sources: Vec<_> = MIXED_CONVERTED
        .iter()
        .map(|n| Source::read(&d.join(n)))
        .collect();
    let already_before = fs::read(d.join("already.mkv")).unwrap();
    let truncated_before = fs::read(d.join("truncated.mkv")).unwrap();
    let empty_meta = fs::metadata(d.join("empty.mkv")).unwrap();

    let (out, events) = run_json(d, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad files make the exit code 1: {events:#?}"
    );

    for source in &sources {
        let converted = event_for(&events, "converted", &source.path)
            .unwrap_or_else(|| panic!("{} not converted: {events:#?}", source.path.display()));
        assert!(converted["after_bytes"].as_u64() < converted["before_bytes"].as_u64());
        source.assert_converted();
    }
    assert!(
        !d.join("old.avi").exists(),
        "the avi is replaced by the mkv"
    );

    assert_mixed_formats_kept(d);
    let hdr = ffprobe(&d.join("hdr.mkv"));
    assert_eq!(hdr["streams"][0]["color_space"], "bt2020nc");

    // Already HEVC: skipped and byte-identical.
    let skip = event_for(&events, "skipped", &d.join("already.mkv")).unwrap();
    assert_eq!(skip["reason"], "already_efficient");
    assert_eq!(fs::read(d.join("already.mkv")).unwrap(), already_before);

    // Bad files: reported with the file named, left untouched.
    for name in MIXED_BAD {
        let failed = event_for(&events, "failed", &d.join(name))
            .unwrap_or_else(|| panic!("{name} should fail: {events:#?}"));
        assert!(!failed["error"].as_str().unwrap().is_empty());
    }
    assert_eq!(fs::read(d.join("truncated.mkv")).unwrap(), truncated_before);
    assert_eq!(
        fs::metadata(d.join("empty.mkv")).unwrap().len(),
        empty_meta.len()
    );

    // No temp or backup files left behind.
    let debris: Vec<_> = walk(d)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(debris.is_empty(), "left behind: {debris:?}");

    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["converted"], 6);
    assert_eq!(summary["failed"], 3);
    assert_eq!(summary["skipped"], 1);
}

#[test]
fn dry_run_changes_nothing_and_prints_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("a.mkv"));
    hevc_mkv(&d.join("b.mkv"));
    age_all(d);
    let before: Vec<_> = walk(d)
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();

    let (out, events) = run_json(d, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let planned = of_kind(&events, "planned");
    assert_eq!(planned.len(), 2);
    let a = event_for(&events, "planned", &d.join("a.mkv")).unwrap();
    assert_eq!(
        (a["action"].as_str(), a["codec"].as_str()),
        (Some("convert"), Some("h264"))
    );
    assert!(a["estimated_bytes"].as_u64().unwrap() < a["size_bytes"].as_u64().unwrap());
    let b = event_for(&events, "planned", &d.join("b.mkv")).unwrap();
    assert_eq!(b["reason"], "already_efficient");
    assert!(
        events.last().unwrap()["estimated_saving_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    let after: Vec<_> = walk(d)
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    assert_eq!(before, after, "--dry-run must not change anything");

    // The human form prints one plan line per file on stdout.
    let human = cmd().arg("--dir").arg(d).arg("--dry-run").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("convert") && l.contains("a.mkv")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("skip") && l.contains("b.mkv")),
        "{text}"
    );
}

#[test]
fn an_output_that_does_not_shrink_keeps_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("a.mkv"));
    age_all(d);
    let before = fs::read(d.join("a.mkv")).unwrap();
    // No encode can be 99% smaller: the savings gate must refuse it.
    let (out, events) = run_json(d, &["--min-savings", "99"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skip = event_for(&events, "skipped", &d.join("a.mkv")).unwrap();
    assert_eq!(skip["reason"], "not_smaller");
    assert_eq!(fs::read(d.join("a.mkv")).unwrap(), before);
    assert_eq!(walk(d), vec![d.join("a.mkv")]);
}

#[test]
fn a_growing_output_is_abandoned_early() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A tiny, very compressed source: HEVC at the best quality is bound to be bigger.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=320x180:r=24:d=20",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "45",
        d.join("small.mkv").to_str().unwrap(),
    ]);
    age_all(d);
    let before = fs::read(d.join("small.mkv")).unwrap();
    let started = Instant::now();
    let (out, events) = run_json(d, &["--quality", "0", "--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skip = event_for(&events, "skipped", &d.join("small.mkv")).unwrap();
    assert_eq!(skip["reason"], "not_smaller");
    assert!(
        skip["detail"]
            .as_str()
            .unwrap()
            .contains("stopped after 20%"),
        "{skip}"
    );
    let last_progress = of_kind(&events, "progress")
        .last()
        .map_or(0.0, |p| p["percent"].as_f64().unwrap());
    assert!(
        last_progress < 90.0,
        "stopped early, not at {last_progress}%"
    );
    assert_eq!(fs::read(d.join("small.mkv")).unwrap(), before);
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn audio_lossless_becomes_flac_and_lossy_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    wav(&d.join("tone.wav"));
    mp3(&d.join("song.mp3"));
    h264_aac_srt_mkv(&d.join("video.mkv"));
    age_all(d);
    let (out, events) = run_json(d, &["--type", "audio"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert!(!d.join("tone.wav").exists());
    let flac = ffprobe(&d.join("tone.flac"));
    assert_eq!(flac["streams"][0]["codec_name"], "flac");
    assert_eq!(
        flac["format"]["tags"]["title"], "Tone",
        "tags are kept: {flac}"
    );
    assert_eq!(
        event_for(&events, "skipped", &d.join("song.mp3")).unwrap()["reason"],
        "lossy"
    );
    assert!(
        event_for(&events, "converting", &d.join("video.mkv")).is_none(),
        "--type audio leaves video"
    );
    assert_eq!(video_codec(&d.join("video.mkv")), "h264");
}

#[test]
fn strange_file_names_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = [
        "-leading dash.mkv",
        "it's \"quoted\".mkv",
        "Amélie – 東京.mkv",
        "new\nline.mkv",
        "a: colon.mkv",
    ];
    for name in names {
        h264_10bit_mkv(&d.join(name));
    }
    age_all(d);
    let (out, events) = run_json(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    for name in names {
        assert!(
            event_for(&events, "converted", &d.join(name)).is_some(),
            "{name:?}: {events:#?}"
        );
        assert_eq!(video_codec(&d.join(name)), "hevc", "{name:?}");
    }
    // --file with a leading dash is a file, not an option.
    h264_10bit_mkv(&d.join("-x.mkv"));
    age(&d.join("-x.mkv"));
    let out = cmd().arg("--file").arg(d.join("-x.mkv")).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(video_codec(&d.join("-x.mkv")), "hevc");
}

#[test]
fn recent_files_are_left_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("downloading.mkv"));
    let (out, events) = run_json(d, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        event_for(&events, "skipped", &d.join("downloading.mkv")).unwrap()["reason"],
        "too_new"
    );
    let (_, events) = run_json(d, &["--min-age", "0s"]);
    assert!(event_for(&events, "converted", &d.join("downloading.mkv")).is_some());
}

#[test]
fn keep_original_leaves_a_hidden_backup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("a.mkv"));
    age_all(d);
    let before = fs::read(d.join("a.mkv")).unwrap();
    let mtime = fs::metadata(d.join("a.mkv")).unwrap().modified().unwrap();
    let (out, _) = run_json(d, &["--keep-original"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        walk(d),
        vec![d.join(".a.mkv.mediabox-kept"), d.join("a.mkv")],
        "the original is kept under its hidden name, nothing else is left"
    );
    assert_eq!(fs::read(d.join(".a.mkv.mediabox-kept")).unwrap(), before);
    assert_eq!(video_codec(&d.join("a.mkv")), "hevc");
    assert_eq!(
        fs::metadata(d.join("a.mkv")).unwrap().modified().unwrap(),
        mtime,
        "mtime kept"
    );
}

#[test]
fn exit_codes_match_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nothing to do: 0.
    assert_eq!(
        cmd().arg("--dir").arg(d).output().unwrap().status.code(),
        Some(0)
    );
    // Usage errors: 2.
    assert_eq!(cmd().output().unwrap().status.code(), Some(2));
    assert_eq!(
        cmd()
            .args(["--dir", "a", "--file", "b"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    let missing = cmd().arg("--dir").arg(d.join("nope")).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    // ffmpeg missing: 2, with the fix named.
    let no_ffmpeg = cmd()
        .arg("--dir")
        .arg(d)
        .env("PATH", d)
        // Nothing names another ffmpeg either (the tests also run against a second build).
        .env_remove("MEDIA_CONVERTER_FFMPEG")
        .env_remove("MEDIA_CONVERTER_FFPROBE")
        .output()
        .unwrap();
    assert_eq!(no_ffmpeg.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_ffmpeg.stderr).contains("install ffmpeg"));
    // A failing file: 1 (covered with real bad files above); an unreadable --file: 2.
    fs::write(d.join("bad.mkv"), b"garbage").unwrap();
    age(&d.join("bad.mkv"));
    assert_eq!(
        cmd()
            .arg("--file")
            .arg(d.join("bad.mkv"))
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}

#[cfg(unix)]
#[test]
fn sigterm_and_sigkill_mid_transcode_leave_the_original_and_no_ffmpeg() {
    use std::process::Stdio;

    for signal in [libc_sig::TERM, libc_sig::KILL] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        long_h264_mkv(&d.join("long.mkv"), 60, "640x360");
        age_all(d);
        let before = fs::read(d.join("long.mkv")).unwrap();
        let mut child = cmd()
            .arg("--dir")
            .arg(d)
            .args(["--json", "--preset", "slow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until ffmpeg is writing the temp file.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !walk(d)
            .iter()
            .any(|p| p.to_string_lossy().contains(".partial."))
        {
            assert!(Instant::now() < deadline, "transcode never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        if signal == libc_sig::TERM {
            assert_eq!(exit.code(), Some(130));
            assert_eq!(
                walk(d),
                vec![d.join("long.mkv")],
                "SIGTERM removes the temp file"
            );
        }
        // ffmpeg must not outlive us: the parent-death signal kills it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ffmpeg_running_on(d.to_str().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "ffmpeg outlived media-converter after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            fs::read(d.join("long.mkv")).unwrap(),
            before,
            "original intact after SIG{signal}"
        );
    }
}

#[cfg(unix)]
mod libc_sig {
    pub const TERM: &str = "TERM";
    pub const KILL: &str = "KILL";
}

#[test]
fn long_files_are_verified_in_windows_and_damage_is_caught() {
    use media_converter::config::VerifyMode;
    use media_converter::decide::Container;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Over a minute, so quick verification seeks to windows instead of decoding everything.
    long_h264_mkv(&d.join("long.mkv"), 70, "160x90");
    age_all(d);
    let (out, events) = run_json(d, &["--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(video_codec(&d.join("long.mkv")), "hevc");
    let (out, events) = run_json(d, &["--verify", "full"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");

    // A damaged HEVC output (cut short) must not pass verification against its source.
    let source = media_converter::probe::probe(Path::new("ffprobe"), &d.join("long.mkv")).unwrap();
    let bytes = fs::read(d.join("long.mkv")).unwrap();
    fs::write(d.join("cut.mkv"), &bytes[..bytes.len() / 2]).unwrap();
    for mode in [VerifyMode::Quick, VerifyMode::Full] {
        let verdict = media_converter::verify::verify(
            Path::new("ffmpeg"),
            Path::new("ffprobe"),
            (&d.join("long.mkv"), &source),
            &d.join("cut.mkv"),
            Container::Matroska,
            mode,
        );
        assert!(
            verdict.is_err(),
            "a file cut in half passed {mode:?} verification"
        );
    }
    // And the intact file passes both.
    for mode in [VerifyMode::Quick, VerifyMode::Full] {
        media_converter::verify::verify(
            Path::new("ffmpeg"),
            Path::new("ffprobe"),
            (&d.join("long.mkv"), &source),
            &d.join("long.mkv"),
            Container::Matroska,
            mode,
        )
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

#[test]
fn an_odd_frame_size_is_cropped_to_even_and_the_dry_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let odd = d.join("odd.mkv");
    // 4:4:4 lets H.264 have odd sizes; HEVC in 4:2:0 cannot.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=322x182:r=24:d=1",
        "-vf",
        "format=yuv444p,crop=321:181:0:0",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        odd.to_str().unwrap(),
    ]);
    age_all(d);
    let (_, events) = run_json(d, &["--dry-run"]);
    let plan = event_for(&events, "planned", &odd).expect("planned");
    assert_eq!(plan["action"], "convert", "{plan}");
    assert!(
        plan["detail"]
            .as_str()
            .unwrap()
            .contains("cropped to 320x180"),
        "{plan}"
    );

    let (out, events) = run_json(d, &["--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert!(
        event_for(&events, "converted", &odd).is_some(),
        "{events:#?}"
    );
    let probe = ffprobe(&odd);
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "hevc");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(180))
    );
}

#[test]
fn an_alpha_channel_is_kept_or_the_file_skipped_and_its_loss_named_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rle = d.join("titles.mov");
    // QuickTime RLE with alpha, as title cards and motion graphics come.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=160x90:r=24:d=1",
        "-vf",
        "format=argb",
        "-c:v",
        "qtrle",
        rle.to_str().unwrap(),
    ]);
    age_all(d);
    let before = fs::read(&rle).unwrap();
    let (_, events) = run_json(d, &["--dry-run"]);
    let plan = event_for(&events, "planned", &rle).expect("planned");
    assert_eq!(plan["reason"], "alpha", "{plan}");
    let (out, events) = run_json(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skipped = event_for(&events, "skipped", &rle).expect("skipped");
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("--allow-alpha-loss"),
        "{skipped}"
    );
    assert_eq!(fs::read(&rle).unwrap(), before);

    let (out, events) = run_json(d, &["--allow-alpha-loss", "--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let converted = event_for(&events, "converted", &rle).expect("converted");
    let dropped = converted["dropped"].to_string();
    assert!(dropped.contains("alpha channel"), "{converted}");
}

#[test]
fn chapters_and_forced_subtitles_come_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let chapters = d.join("chapters.txt");
    fs::write(
        &chapters,
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n",
    )
    .unwrap();
    let plain = d.join("plain.mkv");
    h264_aac_srt_mkv(&plain);
    let film = d.join("film.mkv");
    ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-i",
        chapters.to_str().unwrap(),
        "-map",
        "0",
        "-map_chapters",
        "1",
        "-c",
        "copy",
        "-disposition:s:0",
        "forced",
        film.to_str().unwrap(),
    ]);
    fs::remove_file(&plain).unwrap();
    fs::remove_file(&chapters).unwrap();
    age_all(d);
    let (out, events) = run_json(d, &["--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert!(
        event_for(&events, "converted", &film).is_some(),
        "{events:#?}"
    );
    let info = media_converter::probe::probe(Path::new("ffprobe"), &film).unwrap();
    assert_eq!(info.chapters, 2);
    let sub = info
        .streams
        .iter()
        .find(|s| s.kind == media_converter::probe::StreamKind::Subtitle)
        .unwrap();
    assert!(sub.forced, "{sub:?}");
}
