//! The Windows binary end to end, under Wine, with Windows builds of ffmpeg and ffprobe:
//! what a Windows host does to a library on a share, checked from the Linux side with the
//! Linux ffprobe.
//!
//! Every test here is ignored by a plain `cargo test`: it needs Wine, the Windows build of
//! the binary, Windows ffmpeg and ffprobe and a small holder program, which
//! `scripts/windows-e2e.sh` fetches, builds and names in these variables before it runs
//! `cargo test --test windows_e2e -- --ignored`:
//!
//! - `WINEPREFIX`: the Wine prefix;
//! - `MC_E2E_WINE`: the `wine64` loader;
//! - `MC_E2E_EXE`: `media-converter.exe`;
//! - `MC_E2E_FFMPEG_DIR`: the directory holding `ffmpeg.exe` and `ffprobe.exe`;
//! - `MC_E2E_HOLD`: `hold.exe` (`.ci/wine/hold.c`), which holds a file open as a player does.
//!
//! Wine maps the drive `Z:` to `/`, so the library `/tmp/x` is `Z:\tmp\x` to the binary.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The Windows side, from the variables the script sets.
struct Windows {
    wine: PathBuf,
    exe: PathBuf,
    ffmpeg_dir: PathBuf,
    hold: PathBuf,
}

fn var(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run scripts/windows-e2e.sh"))
}

impl Windows {
    fn new() -> Windows {
        let _ = var("WINEPREFIX");
        Windows {
            wine: var("MC_E2E_WINE"),
            exe: var("MC_E2E_EXE"),
            ffmpeg_dir: var("MC_E2E_FFMPEG_DIR"),
            hold: var("MC_E2E_HOLD"),
        }
    }

    /// `media-converter.exe ARGS` under Wine, with the Windows ffmpeg first on its `PATH`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.wine);
        command
            .arg(&self.exe)
            .args(args)
            .env("WINEPATH", win(&self.ffmpeg_dir))
            .env("WINEDEBUG", "-all")
            .env("NO_COLOR", "1")
            .env_remove("MEDIA_CONVERTER_HOSTNAME")
            .env_remove("MEDIA_CONVERTER_HOST_ID")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// A conversion of `dir` with `--json`, and its events.
    fn convert(&self, dir: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
        let dir = win(dir);
        let mut args = vec!["--dir", dir.as_str(), "--json"];
        args.extend(extra);
        let out = self.run(&args);
        let events = events(&out);
        (out, events)
    }
}

/// The path Windows sees for a Linux path: Wine's drive `Z:` is `/`.
fn win(path: &Path) -> String {
    format!("Z:{}", path.to_str().unwrap().replace('/', "\\"))
}

fn event_for<'a>(events: &'a [Value], kind: &str, file: &Path) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["event"] == kind && e["file"] == win(file).as_str())
}

fn summary(events: &[Value]) -> &Value {
    let last = events.last().expect("no events");
    assert_eq!(last["event"], "summary", "{events:#?}");
    last
}

/// Hidden files the tool left beside the media (temp outputs, backups, locks), not counting
/// the cache and what `--keep-original` keeps.
fn debris(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(".mediabox") && !name.ends_with(".mediabox-kept")
        })
        .collect()
}

/// Linux processes whose command line mentions `needle`: Wine runs each Windows process
/// as one, with the Windows command line as its own.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && cmdline.contains("ffmpeg.exe") {
            found.push(cmdline);
        }
    }
    found
}

/// A one-second test pattern and tone, as the shared fixtures use.
const PICTURE: &[&str] = &["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1"];
const TONE: &[&str] = &["-f", "lavfi", "-i", "sine=d=1"];
/// x264 at a quality that HEVC clearly shrinks, and AAC.
const H264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8"];
const AAC: &[&str] = &["-c:a", "aac"];

/// H.264 and AAC in Matroska with two chapters and a font attachment.
fn chapters_and_font_mkv(out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let chapters = dir.path().join("chapters.txt");
    fs::write(
        &chapters,
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=One\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n",
    )
    .unwrap();
    let font = dir.path().join("font.ttf");
    fs::write(&font, [7u8; 3000]).unwrap();
    let (chapters, font) = (chapters.to_str().unwrap(), font.to_str().unwrap());
    let inputs: &[&str] = &[
        "-i",
        chapters,
        "-map",
        "0",
        "-map",
        "1",
        "-map_chapters",
        "2",
    ];
    let tag = "mimetype=application/x-truetype-font";
    let attach: &[&str] = &["-attach", font, "-metadata:s:t", tag, out.to_str().unwrap()];
    ffmpeg(&[PICTURE, TONE, inputs, H264, AAC, attach].concat());
}

/// H.264 and AAC in MP4 with a PNG cover picture.
fn cover_art_mp4(out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let cover = dir.path().join("cover.png");
    let cover = cover.to_str().unwrap();
    let red: &[&str] = &[
        "-f",
        "lavfi",
        "-i",
        "color=red:s=64x64",
        "-frames:v",
        "1",
        cover,
    ];
    ffmpeg(red);
    let inputs: &[&str] = &["-i", cover, "-map", "0", "-map", "1", "-map", "2"];
    let picture: &[&str] = &["-c:v:1", "png", "-disposition:v:1", "attached_pic"];
    let out = out.to_str().unwrap();
    ffmpeg(&[PICTURE, TONE, inputs, H264, AAC, picture, &[out]].concat());
}

/// Chapter titles, in order.
fn chapter_titles(path: &Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_chapters"])
        .arg(path)
        .output()
        .unwrap();
    let probe: Value = serde_json::from_slice(&out.stdout).unwrap();
    probe["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tags"]["title"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The library of the Linux convert tests, with names Windows allows (no `"`, no `:`),
/// and one file deep enough that its path is past MAX_PATH (260 characters).
struct Library {
    dir: tempfile::TempDir,
    deep: PathBuf,
}

/// Converted beside the mixed library's own ([`MIXED_CONVERTED`]).
const CONVERTED_TOO: [&str; 4] = [
    "extras.mkv",
    "cover.mp4",
    "it's 'quoted'.mkv",
    "Amélie – 東京.mkv",
];

impl Library {
    fn new() -> Library {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        mixed_library(d);
        chapters_and_font_mkv(&d.join("extras.mkv"));
        cover_art_mp4(&d.join("cover.mp4"));
        h264_aac_srt_mkv(&d.join("it's 'quoted'.mkv"));
        h264_aac_srt_mkv(&d.join("Amélie – 東京.mkv"));
        let deep_dir = d
            .join("Films with long names ".repeat(4).trim_end())
            .join("Season ".repeat(12).trim_end())
            .join("Disc ".repeat(10).trim_end());
        fs::create_dir_all(&deep_dir).unwrap();
        let deep = deep_dir.join(format!("{} (1999).mkv", "A Very Long Title".repeat(4)));
        h264_aac_srt_mkv(&deep);
        age_all(d);
        assert!(
            win(&deep).len() > 260,
            "{} is not past MAX_PATH",
            win(&deep)
        );
        Library { dir, deep }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn a_mixed_library_converts_through_a_drive_letter() {
    let windows = Windows::new();
    let lib = Library::new();
    let d = lib.dir.path();
    let mut sources: Vec<Source> = MIXED_CONVERTED
        .iter()
        .chain(&CONVERTED_TOO)
        .map(|n| Source::read(&lib.path(n)))
        .collect();
    sources.push(Source::read(&lib.deep));
    let untouched: Vec<(PathBuf, Vec<u8>)> = ["already.mkv", "truncated.mkv", "not media.mp4"]
        .iter()
        .map(|n| (lib.path(n), fs::read(lib.path(n)).unwrap()))
        .collect();

    let (out, events) = windows.convert(d, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bad files make it 1: {events:#?}"
    );
    let warnings: Vec<_> = events.iter().filter(|e| e["event"] == "warning").collect();
    assert!(warnings.is_empty(), "{warnings:#?}");

    for source in &sources {
        let converted = event_for(&events, "converted", &source.path)
            .unwrap_or_else(|| panic!("{} not converted: {events:#?}", source.path.display()));
        assert_eq!(converted["output"], win(&source.output()).as_str());
        assert!(converted["after_bytes"].as_u64() < converted["before_bytes"].as_u64());
        source.assert_converted();
    }
    assert!(
        !lib.path("old.avi").exists(),
        "the avi is replaced by the mkv"
    );
    assert_mixed_formats_kept(d);
    // Attachments and chapters (extras.mkv: the font is among the streams compared above),
    // and cover art, which is copied, never encoded.
    assert_eq!(chapter_titles(&lib.path("extras.mkv")), ["One", "Two"]);
    let cover = ffprobe(&lib.path("cover.mp4"));
    let pictures: Vec<&Value> = cover["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["disposition"]["attached_pic"] == 1)
        .collect();
    assert_eq!(pictures.len(), 1, "{cover:#}");
    assert_eq!(pictures[0]["codec_name"], "png");

    let already = event_for(&events, "skipped", &lib.path("already.mkv")).unwrap();
    assert_eq!(already["reason"], "already_efficient");
    for name in MIXED_BAD {
        let failed = event_for(&events, "failed", &lib.path(name))
            .unwrap_or_else(|| panic!("{name} should fail, named: {events:#?}"));
        assert!(!failed["error"].as_str().unwrap().is_empty());
    }
    for (path, bytes) in &untouched {
        assert_eq!(
            &fs::read(path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    assert!(debris(d).is_empty(), "left behind: {:?}", debris(d));
    let summary = summary(&events);
    assert_eq!(summary["converted"], 11, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");

    // `status` reads the same story back from the share, through the drive letter.
    let status = windows.run(&["status", &win(d), "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["library"], win(d).as_str());
    assert_eq!(status["totals"]["converted"], 11, "{status:#}");
    assert_eq!(status["in_progress"], serde_json::json!([]), "{status:#}");

    // A second run finds nothing left to do and changes nothing.
    let listing = walk(d);
    let (out, events) = windows.convert(d, &[]);
    assert_eq!(of_kind(&events, "converted").len(), 0, "{events:#?}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the bad files still fail: {events:#?}"
    );
    assert_eq!(walk(d), listing);
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn keep_original_and_a_file_that_does_not_shrink() {
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep");
    let small = dir.path().join("small");
    fs::create_dir_all(&keep).unwrap();
    fs::create_dir_all(&small).unwrap();
    h264_aac_srt_mkv(&keep.join("a.mkv"));
    h264_aac_srt_mkv(&small.join("b.mkv"));
    age_all(dir.path());
    let a = fs::read(keep.join("a.mkv")).unwrap();
    let b = fs::read(small.join("b.mkv")).unwrap();

    let (out, events) = windows.convert(&keep, &["--keep-original"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let kept = keep.join(".a.mkv.mediabox-kept");
    assert_eq!(walk(&keep), [kept.clone(), keep.join("a.mkv")]);
    assert_eq!(
        fs::read(&kept).unwrap(),
        a,
        "the original is kept byte for byte"
    );
    assert_eq!(video_codec(&keep.join("a.mkv")), "hevc");

    // No encode is 99% smaller: the original stays, byte for byte, and nothing is left.
    let (out, events) = windows.convert(&small, &["--min-savings", "99"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skipped = event_for(&events, "skipped", &small.join("b.mkv")).unwrap();
    assert_eq!(skipped["reason"], "not_smaller");
    assert_eq!(fs::read(small.join("b.mkv")).unwrap(), b);
    assert_eq!(walk(&small), [small.join("b.mkv")]);
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn read_only_originals_convert_and_stay_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    h264_aac_srt_mkv(&d.join("movie.mkv"));
    avi(&d.join("old.avi"));
    // No write bits: Wine shows the file with the read-only attribute, as Samba does.
    for name in ["movie.mkv", "old.avi"] {
        fs::set_permissions(d.join(name), fs::Permissions::from_mode(0o444)).unwrap();
    }
    age_all(d);
    let (out, events) = windows.convert(d, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(walk(d), [d.join("movie.mkv"), d.join("old.mkv")]);
    for name in ["movie.mkv", "old.mkv"] {
        assert_eq!(video_codec(&d.join(name)), "hevc");
        let mode = fs::metadata(d.join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "{name} stays read-only: {mode:o}");
    }
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn two_processes_claim_one_file_and_it_is_converted_once() {
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    let movie = dir.path().join("movie.mkv");
    long_h264_mkv(&movie, 20, "320x240");
    age(&movie);
    let args = ["--dir", &win(dir.path()), "--json", "--preset", "ultrafast"].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let racers: Vec<Child> = (0..2)
        .map(|_| {
            windows
                .command(&args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let all: Vec<Vec<Value>> = outputs.iter().map(events).collect();
    let converted: usize = all.iter().map(|e| of_kind(e, "converted").len()).sum();
    assert_eq!(converted, 1, "converted exactly once: {all:#?}");
    for (out, events) in outputs.iter().zip(&all) {
        assert_eq!(out.status.code(), Some(0), "{events:#?}");
        assert!(of_kind(events, "failed").is_empty(), "{events:#?}");
    }
    // The other one saw the claim, or the file already done, and said so.
    let loser = all
        .iter()
        .find(|e| of_kind(e, "converted").is_empty())
        .unwrap();
    let skipped = event_for(loser, "skipped", &movie)
        .unwrap_or_else(|| panic!("the other run said nothing of the file: {loser:#?}"));
    let reason = skipped["reason"].as_str().unwrap();
    assert!(
        ["locked", "already_efficient", "changed"].contains(&reason),
        "{skipped}"
    );
    assert_eq!(video_codec(&movie), "hevc");
    assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
}

/// Starts a conversion and kills it (SIGKILL to the Wine process, as Task Manager's "End
/// task" does) once ffmpeg has made some progress.
fn kill_mid_encode(windows: &Windows, dir: &Path) {
    let d = win(dir);
    let mut child = windows
        .command(&["--dir", &d, "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut progressed = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "progress" && event["percent"].as_f64().unwrap() > 5.0 {
            progressed = event["percent"].as_f64();
            break;
        }
        assert!(
            !["converted", "failed", "summary"].contains(&event["event"].as_str().unwrap()),
            "the encode ended before it could be killed: {event}"
        );
    }
    let percent = progressed.expect("no progress before the output ended");
    assert!(percent < 90.0, "too late to kill mid-encode: {percent}%");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn a_conversion_killed_mid_encode_takes_ffmpeg_with_it_and_is_recovered() {
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    let movie = dir.path().join("movie.mkv");
    long_h264_mkv(&movie, 30, "320x240");
    age(&movie);
    let original = fs::read(&movie).unwrap();
    let tag = dir
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    kill_mid_encode(&windows, dir.path());
    // The job object dies with media-converter.exe, and ffmpeg.exe with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&tag).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        processes_mentioning(&tag),
        Vec::<String>::new(),
        "ffmpeg.exe outlived it"
    );
    assert_eq!(
        fs::read(&movie).unwrap(),
        original,
        "the original is intact"
    );
    let left = debris(dir.path());
    assert!(
        left.iter()
            .any(|p| p.to_string_lossy().ends_with(".mediabox.lock")),
        "the dead run's lock stays: {left:?}"
    );

    // `locks list` sees the dead owner; `locks clean` breaks its lock and removes its output.
    let list = windows.run(&["locks", "list", &win(dir.path()), "--json"]);
    let locks = events(&list);
    assert_eq!(locks.len(), 1, "{locks:#?}");
    assert_eq!(locks[0]["state"], "stale", "{locks:#?}");
    assert_eq!(locks[0]["phase"], "transcoding", "{locks:#?}");
    let clean = windows.run(&["locks", "clean", &win(dir.path())]);
    assert_eq!(clean.status.code(), Some(0));
    let said = String::from_utf8_lossy(&clean.stdout);
    assert!(said.contains("broke stale lock"), "{said}");
    assert!(said.contains("removed abandoned output"), "{said}");
    assert_eq!(debris(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(fs::read(&movie).unwrap(), original);

    // Killed again, and this time the next run itself recovers: the dead owner's lock is
    // broken and the file converted.
    kill_mid_encode(&windows, dir.path());
    let (out, events) = windows.convert(dir.path(), &["--preset", "ultrafast"]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert!(
        event_for(&events, "converted", &movie).is_some(),
        "{events:#?}"
    );
    assert_eq!(video_codec(&movie), "hevc");
    assert!((duration(&movie) - 30.0).abs() <= 1.0);
    let list = windows.run(&["locks", "list", &win(dir.path()), "--json"]);
    assert_eq!(
        common::events(&list),
        Vec::<Value>::new(),
        "no lock is left"
    );
    // The killed run's partial output (written under its own claim's name) is at most all
    // that is left, and `locks clean` removes it.
    let left = debris(dir.path());
    assert!(
        left.iter()
            .all(|p| p.to_string_lossy().contains(".partial.mkv")),
        "{left:?}"
    );
    let clean = windows.run(&["locks", "clean", &win(dir.path())]);
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(debris(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(video_codec(&movie), "hevc");
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn a_file_held_open_at_swap_time_fails_safely_and_converts_once_let_go() {
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    let movie = dir.path().join("movie.mkv");
    h264_aac_srt_mkv(&movie);
    age(&movie);
    let original = fs::read(&movie).unwrap();

    // A player holds the movie open without delete sharing for longer than the swap waits
    // (it is stopped as soon as the run ends).
    let mut holder = Command::new(&windows.wine)
        .arg(&windows.hold)
        .arg(win(&movie))
        .arg("300")
        .env("WINEDEBUG", "-all")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), "held");

    let (out, events) = windows.convert(dir.path(), &[]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(1), "{events:#?}");
    let failed = event_for(&events, "failed", &movie).unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("still in use"), "{error}");
    assert!(error.contains("close it and run again"), "{error}");
    assert_eq!(
        fs::read(&movie).unwrap(),
        original,
        "the original is untouched"
    );
    assert_eq!(debris(dir.path()), Vec::<PathBuf>::new());

    // Let go: the next run converts it.
    let (out, events) = windows.convert(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert!(
        event_for(&events, "converted", &movie).is_some(),
        "{events:#?}"
    );
    assert_eq!(video_codec(&movie), "hevc");
    assert_eq!(debris(dir.path()), Vec::<PathBuf>::new());
}

#[test]
#[ignore = "needs Wine and Windows ffmpeg: run scripts/windows-e2e.sh"]
fn doctor_checks_the_share_through_a_drive_letter() {
    let windows = Windows::new();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Movie.mkv"), b"media").unwrap();
    let out = windows.run(&["doctor", "--json", "--dir", &win(dir.path())]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["platform"], "windows");
    assert!(
        report["ffmpeg"]["path"]
            .as_str()
            .unwrap()
            .ends_with("ffmpeg.exe"),
        "{report:#}"
    );
    let share = &report["share"];
    for check in [
        "exclusive_create",
        "rename_over",
        "conversion",
        "write_stamp",
    ] {
        assert_eq!(share[check]["ok"], true, "{check}: {share:#}");
    }
    assert_eq!(walk(dir.path()), [dir.path().join("Movie.mkv")]);
    let encoders = report["encoders"].as_array().unwrap();
    let libx265 = encoders.iter().find(|e| e["encoder"] == "libx265").unwrap();
    assert_eq!(libx265["status"], "works", "{report:#}");
    // No NVIDIA driver here, so NVENC fails; but on the driver, never on a preset name
    // this ffmpeg does not know (the p1-p7 names came with ffmpeg 4.3).
    let nvenc = encoders
        .iter()
        .find(|e| e["encoder"] == "hevc_nvenc")
        .unwrap();
    let reason = nvenc["reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("Undefined constant"), "{nvenc}");
    assert!(!reason.contains("preset"), "{nvenc}");
}
