//! Shared test fixtures: real media made by the real ffmpeg, and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use media_converter::identity::HostIdentity;
use media_converter::lock::{Acquire, LockGuard, LockSettings, Locker, lock_path};
use serde_json::Value;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_media-converter"))
}

/// A command for the binary with a clean, deterministic environment.
pub fn cmd() -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_remove("MEDIA_CONVERTER_HOSTNAME")
        .env_remove("MEDIA_CONVERTER_HOST_ID")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs ffmpeg with the given arguments, panicking with its stderr when it fails.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed for the tests (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ffprobe's JSON for a file.
pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    assert!(out.status.success(), "ffprobe {} failed", path.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The full path of `name` on `PATH`, for a test that puts a wrapper of it first there.
pub fn tool_on_path(name: &str) -> PathBuf {
    which::which(name).unwrap_or_else(|_| panic!("{name} must be installed for the tests"))
}

/// `PATH` with `dir` first: how a test puts a wrapper or a fake of a tool before the real one.
pub fn path_with_first(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// The binary converting `dir` with `--json` and `extra`: its output and events.
pub fn run_json(dir: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
    run_json_with(cmd(), dir, extra)
}

/// As [`run_json`], through `command`: [`cmd`] with what the test sets on it (environment).
pub fn run_json_with(mut command: Command, dir: &Path, extra: &[&str]) -> (Output, Vec<Value>) {
    let out = command
        .arg("--dir")
        .arg(dir)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let events = events(&out);
    (out, events)
}

/// Surveys `dir` into its caches (`cache build`, ffprobe's facts): a run then knows every
/// file as its walk reads the folder, and its first choice is among them all by `--order`,
/// whatever the load; on a cold library it is among those surveyed so far.
pub fn build_cache(dir: &Path) {
    let built = cmd()
        .args(["cache", "build"])
        .arg(dir)
        .args(["--min-age", "0s", "-q"])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
}

/// `status DIR --json`, which must succeed: its one object.
pub fn status_json(dir: &Path) -> Value {
    let out = cmd().arg("status").arg(dir).arg("--json").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = events(&out);
    assert_eq!(events.len(), 1, "one status object: {events:?}");
    events[0].clone()
}

/// The video input every fixture uses: a moving test pattern, 1 s at 160x90.
const VIDEO: &[&str] = &["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1"];
const TONE: &[&str] = &["-f", "lavfi", "-i", "sine=f=440:d=1"];
const TONE2: &[&str] = &["-f", "lavfi", "-i", "sine=f=880:d=1"];

/// x264 at a high quality, so that HEVC at the default quality is clearly smaller, as it is
/// for real libraries.
const H264_SOURCE: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8"];

/// A one-line SubRip file beside a fixture, removed when dropped.
struct Subtitle(PathBuf);

impl Subtitle {
    fn beside(out: &Path) -> Subtitle {
        let srt = out.with_extension("fixture.srt");
        std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:00,900\nhello\n").unwrap();
        Subtitle(srt)
    }

    fn path(&self) -> String {
        self.0.to_str().unwrap().to_string()
    }
}

impl Drop for Subtitle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run_fixture(parts: &[&[&str]], out: &Path) {
    let mut args: Vec<&str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let out = out.to_str().expect("fixture paths are UTF-8");
    args.push(out);
    ffmpeg(&args);
}

/// H.264 + AAC + an English SRT subtitle in Matroska.
pub fn h264_aac_srt_mkv(out: &Path) {
    let subtitle = Subtitle::beside(out);
    let srt_s = subtitle.path();
    run_fixture(
        &[
            VIDEO,
            TONE,
            &["-i", &srt_s],
            &["-map", "0", "-map", "1", "-map", "2"],
            H264_SOURCE,
            &[
                "-c:a",
                "aac",
                "-c:s",
                "srt",
                "-metadata:s:s:0",
                "language=eng",
            ],
        ],
        out,
    );
}

/// Two audio tracks (eng, fra) and two subtitle tracks (eng, spa) in Matroska.
pub fn multi_track_mkv(out: &Path) {
    let subtitle = Subtitle::beside(out);
    let srt_s = subtitle.path();
    run_fixture(
        &[
            VIDEO,
            TONE,
            TONE2,
            &["-i", &srt_s, "-i", &srt_s],
            &[
                "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map", "4",
            ],
            H264_SOURCE,
            &["-c:a", "aac", "-c:s", "srt"],
            &[
                "-metadata:s:a:0",
                "language=eng",
                "-metadata:s:a:1",
                "language=fra",
            ],
            &[
                "-metadata:s:s:0",
                "language=eng",
                "-metadata:s:s:1",
                "language=spa",
            ],
        ],
        out,
    );
}

/// MP4 with a mov_text subtitle.
pub fn mp4_mov_text(out: &Path) {
    let subtitle = Subtitle::beside(out);
    let srt_s = subtitle.path();
    run_fixture(
        &[
            VIDEO,
            TONE,
            &["-i", &srt_s],
            &["-map", "0", "-map", "1", "-map", "2"],
            H264_SOURCE,
            &[
                "-c:a",
                "aac",
                "-c:s",
                "mov_text",
                "-metadata:s:s:0",
                "language=eng",
            ],
        ],
        out,
    );
}

/// 10-bit H.264 (High 10).
pub fn h264_10bit_mkv(out: &Path) {
    run_fixture(&[VIDEO, H264_SOURCE, &["-pix_fmt", "yuv420p10le"]], out);
}

/// 10-bit H.264 tagged HDR10 (BT.2020 primaries, PQ transfer).
pub fn hdr10_mkv(out: &Path) {
    run_fixture(
        &[
            VIDEO,
            H264_SOURCE,
            &["-pix_fmt", "yuv420p10le"],
            &[
                "-color_primaries",
                "bt2020",
                "-color_trc",
                "smpte2084",
                "-colorspace",
                "bt2020nc",
            ],
        ],
        out,
    );
}

/// HEVC with AAC: already efficient.
pub fn hevc_mkv(out: &Path) {
    run_fixture(
        &[
            VIDEO,
            TONE,
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
            ],
            &["-c:a", "aac"],
        ],
        out,
    );
}

/// MPEG-4 Part 2 with MP3 in AVI.
pub fn avi(out: &Path) {
    run_fixture(
        &[
            VIDEO,
            TONE,
            &["-c:v", "mpeg4", "-q:v", "2", "-c:a", "libmp3lame"],
        ],
        out,
    );
}

/// A longer clip (`secs` seconds) for tests that need to catch a transcode mid-way.
pub fn long_h264_mkv(out: &Path, secs: u32, size: &str) {
    let src = format!("testsrc2=s={size}:r=24:d={secs}");
    run_fixture(&[&["-f", "lavfi", "-i", &src], H264_SOURCE], out);
}

/// Smooth synthetic pictures at 256x144: easy to encode.
pub const SMOOTH_PICTURES: &str = "testsrc2=size=256x144:rate=24";

/// A 3-second clip of what the `lavfi` `source` describes, nearly lossless MPEG-4 Part 2: a
/// file every encoder shrinks at any sensible quality, and big enough for a quality search.
pub fn mpeg4_clip(out: &Path, source: &str) {
    mpeg4_clip_of(out, source, 3);
}

/// [`mpeg4_clip`] lasting `secs` seconds.
pub fn mpeg4_clip_of(out: &Path, source: &str, secs: u32) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        source,
        "-t",
        &secs.to_string(),
        "-c:v",
        "mpeg4",
        "-q:v",
        "2",
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
}

/// [`mpeg4_clip`] of [`SMOOTH_PICTURES`].
pub fn smooth_clip(out: &Path) {
    mpeg4_clip(out, SMOOTH_PICTURES);
}

/// PCM WAV with a title tag.
pub fn wav(out: &Path) {
    run_fixture(
        &[TONE, &["-c:a", "pcm_s16le", "-metadata", "title=Tone"]],
        out,
    );
}

/// An MP3: lossy, left alone.
pub fn mp3(out: &Path) {
    run_fixture(&[TONE, &["-c:a", "libmp3lame"]], out);
}

/// A valid H.264 Matroska file cut to its first third.
pub fn truncated_mkv(out: &Path) {
    let full = out.with_extension("full.mkv");
    long_h264_mkv(&full, 3, "160x90");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(out, &bytes[..bytes.len() / 3]).unwrap();
    std::fs::remove_file(full).unwrap();
}

/// Sets a file's mtime into the past, so `--min-age` does not skip it.
pub fn age(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

/// Ages every file under a directory.
pub fn age_all(dir: &Path) {
    for entry in walk(dir) {
        age(&entry);
    }
}

/// The shared metadata cache: the tool's own bookkeeping, not debris and not media.
pub const CACHE_FILE: &str = ".mediabox_cache.json";

/// The folder of host presence records at a library's root: the tool's own bookkeeping.
pub const PRESENCE_DIR: &str = ".mediabox-hosts";

/// Every regular file under `dir`, sorted, except the metadata caches (see `cache_files`)
/// and the hosts' presence records (temp files left in their folder are still listed).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file()
                && entry.file_name() != CACHE_FILE
                && !is_presence_record(&entry.path())
            {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn is_presence_record(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.parent()
        .is_some_and(|dir| dir.file_name().is_some_and(|n| n == PRESENCE_DIR))
        && name.ends_with(".json")
        && !name.starts_with('.')
}

/// A child process that is killed, and reaped, if the test ends (or fails) first.
pub struct Running(pub Child);

impl Running {
    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    /// Kills it now.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    /// Its stdout (piped at its spawn) to the end, and its status once it ends; its stderr
    /// is not collected.
    pub fn output(mut self) -> std::io::Result<Output> {
        let mut stdout = Vec::new();
        if let Some(mut pipe) = self.0.stdout.take() {
            std::io::Read::read_to_end(&mut pipe, &mut stdout)?;
        }
        let status = self.0.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr: Vec::new(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A conversion of `dir` as host `name` (host id `<name>-id`), heartbeating every second,
/// with a slow preset so that it can be watched at work.
pub fn convert_as(dir: &Path, name: &str) -> Running {
    let child = cmd()
        .env("MEDIA_CONVERTER_HOSTNAME", name)
        .env("MEDIA_CONVERTER_HOST_ID", format!("{name}-id"))
        .arg("--dir")
        .arg(dir)
        .args(["--json", "--preset", "slow", "--heartbeat", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// The JSON events of a run's stdout.
pub fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The events of one kind.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// The main video codec of a file.
pub fn video_codec(path: &Path) -> String {
    let probe = ffprobe(path);
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .map(|s| s["codec_name"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Stream (type, language) pairs of a file, video excluded.
pub fn stream_languages(path: &Path) -> Vec<(String, String)> {
    ffprobe(path)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] != "video")
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().to_string(),
                s["tags"]["language"].as_str().unwrap_or("und").to_string(),
            )
        })
        .collect()
}

/// The container duration of a file in seconds.
pub fn duration(path: &Path) -> f64 {
    ffprobe(path)["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether any ffmpeg process is running whose command line mentions `needle`.
pub fn ffmpeg_running_on(needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        (text.starts_with("ffmpeg\0") || text.contains("/ffmpeg\0")) && text.contains(needle)
    })
}

/// An `ffprobe` first on `PATH` that logs each call's arguments, one line each, then runs the
/// real one: how tests prove that a cache answered instead of ffprobe.
pub type CountingFfprobe = CountingTool;

/// A tool (`ffprobe`, `ffmpeg`) first on `PATH` that logs each call's arguments, one line
/// each, then runs the real one.
pub struct CountingTool {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

impl CountingTool {
    /// A counting `ffprobe`.
    pub fn new() -> CountingTool {
        CountingTool::wrapping("ffprobe")
    }

    /// A counting `tool`.
    pub fn wrapping(tool: &str) -> CountingTool {
        let dir = tempfile::tempdir().unwrap();
        let real = tool_on_path(tool);
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls.log");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        );
        write_script(&bin.join(tool), &script);
        CountingTool {
            _dir: dir,
            bin,
            log,
        }
    }

    /// `PATH` with the wrapper first.
    pub fn path_var(&self) -> std::ffi::OsString {
        path_with_first(&self.bin)
    }

    /// The argument lines of every call so far.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many calls named `file` (its path ends the argument line).
    pub fn calls_on(&self, file: &Path) -> usize {
        let end = file.to_str().unwrap();
        self.calls().iter().filter(|c| c.ends_with(end)).count()
    }
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Every metadata cache under `dir`, sorted.
pub fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() == CACHE_FILE {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// A directory's cache, parsed.
pub fn read_cache(dir: &Path) -> Value {
    let bytes = std::fs::read(dir.join(CACHE_FILE))
        .unwrap_or_else(|e| panic!("no cache in {}: {e}", dir.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// libfaketime, to run a real process on a clock hours off this host's.
pub struct FakeClock {
    lib: String,
}

impl FakeClock {
    /// `None` where libfaketime is not installed (`apt-get install libfaketime`).
    pub fn find() -> Option<FakeClock> {
        [
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/faketime/libfaketimeMT.so.1",
        ]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .map(|lib| FakeClock { lib: lib.into() })
    }

    /// The environment that puts a process's clock `offset` off (`"-2h"`, `"+5h"`). Its
    /// monotonic clock stays true, so its timeouts and heartbeats keep their pace.
    pub fn env<'a>(&'a self, offset: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("LD_PRELOAD", self.lib.as_str()),
            ("FAKETIME", offset),
            ("DONT_FAKE_MONOTONIC", "1"),
        ]
    }
}

/// The files of [`mixed_library`] that a run converts (`old.avi` into `old.mkv`).
pub const MIXED_CONVERTED: [&str; 6] = [
    "plain.mkv",
    "multi.mkv",
    "text.mp4",
    "ten bit.mkv",
    "hdr.mkv",
    "old.avi",
];

/// The files of [`mixed_library`] that must fail, each named with a reason.
pub const MIXED_BAD: [&str; 3] = ["truncated.mkv", "empty.mkv", "not media.mp4"];

/// The mixed library of the convert tests, made in `dir`: [`MIXED_CONVERTED`], one file
/// already HEVC (`already.mkv`) and [`MIXED_BAD`]. Not aged: callers add their own files,
/// then age them all.
pub fn mixed_library(dir: &Path) {
    h264_aac_srt_mkv(&dir.join("plain.mkv"));
    multi_track_mkv(&dir.join("multi.mkv"));
    mp4_mov_text(&dir.join("text.mp4"));
    h264_10bit_mkv(&dir.join("ten bit.mkv"));
    hdr10_mkv(&dir.join("hdr.mkv"));
    avi(&dir.join("old.avi"));
    hevc_mkv(&dir.join("already.mkv"));
    truncated_mkv(&dir.join("truncated.mkv"));
    std::fs::write(dir.join("empty.mkv"), b"").unwrap();
    std::fs::write(dir.join("not media.mp4"), b"this is a text file").unwrap();
}

/// What the conversion of a source must keep: its streams (kinds and languages) and its
/// duration, read before the run.
pub struct Source {
    pub path: PathBuf,
    languages: Vec<(String, String)>,
    secs: f64,
}

impl Source {
    pub fn read(path: &Path) -> Source {
        Source {
            path: path.to_path_buf(),
            languages: stream_languages(path),
            secs: duration(path),
        }
    }

    /// Where its conversion lands: an avi becomes an mkv, anything else keeps its name.
    pub fn output(&self) -> PathBuf {
        match self.path.extension() {
            Some(ext) if ext == "avi" => self.path.with_extension("mkv"),
            _ => self.path.clone(),
        }
    }

    /// Asserts that its output is HEVC with the same streams and about the same duration.
    pub fn assert_converted(&self) {
        let output = self.output();
        let shown = output.display();
        assert_eq!(video_codec(&output), "hevc", "{shown}");
        assert_eq!(
            stream_languages(&output),
            self.languages,
            "{shown}: streams and languages kept"
        );
        assert!(
            (duration(&output) - self.secs).abs() <= 1.0,
            "{shown}: duration within tolerance"
        );
    }
}

/// Asserts what [`mixed_library`]'s converted files keep beyond their streams: the mp4
/// stays mp4 with mov_text and the Apple tag, 10-bit stays 10-bit Main 10, HDR tags survive.
pub fn assert_mixed_formats_kept(dir: &Path) {
    let mp4 = ffprobe(&dir.join("text.mp4"));
    assert_eq!(mp4["streams"][0]["codec_tag_string"], "hvc1");
    assert_eq!(mp4["streams"][2]["codec_name"], "mov_text");
    let ten = ffprobe(&dir.join("ten bit.mkv"));
    assert_eq!(ten["streams"][0]["pix_fmt"], "yuv420p10le");
    assert_eq!(ten["streams"][0]["profile"], "Main 10");
    let hdr = ffprobe(&dir.join("hdr.mkv"));
    assert_eq!(hdr["streams"][0]["color_transfer"], "smpte2084");
    assert_eq!(hdr["streams"][0]["color_primaries"], "bt2020");
}

/// The folder of the static ffmpeg 6.0 (with libvmaf, without any hardware encoder) that
/// `scripts/ffmpeg-6.sh` fetches, or `None`, said LOUDLY, when it is absent; absent while
/// `MEDIA_CONVERTER_FFMPEG6_REQUIRED=1` (set by `.ci/run` after fetching it) is a failure.
pub fn ffmpeg6(needed_for: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MEDIA_CONVERTER_FFMPEG6_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("media-converter").join("ffmpeg-6.0"))
        })?;
    if dir.join("ffmpeg").is_file() && dir.join("ffprobe").is_file() {
        return Some(dir);
    }
    let why = format!(
        "{} has no ffmpeg and ffprobe; run scripts/ffmpeg-6.sh to fetch the ffmpeg 6.0",
        dir.display()
    );
    if std::env::var_os("MEDIA_CONVERTER_FFMPEG6_REQUIRED").is_some_and(|v| v == "1") {
        panic!("MEDIA_CONVERTER_FFMPEG6_REQUIRED=1, but {why}");
    }
    eprintln!("\n!!! SKIPPED: {needed_for} needs ffmpeg 6.0: {why}\n");
    None
}

/// Whether strace runs here and can rewrite a call (`-e inject=`): the probe `.ci/run` makes,
/// a traced program whose call strace rewrites.
pub fn strace_can_inject() -> bool {
    Command::new("strace")
        .args([
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=getpid:retval=1",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether strace is missing or may not trace here (containers may forbid ptrace), so that
/// a case injecting faults with it must be skipped: said loudly, and a failure instead where
/// `STRACE_TESTS_REQUIRED=1` (`.ci/run` sets it wherever strace can trace), so a CI run
/// cannot pass by skipping.
pub fn strace_missing() -> bool {
    if strace_can_inject() {
        return false;
    }
    let why = "strace is not installed (apt-get install strace) or may not trace here \
               (CAP_SYS_PTRACE)";
    assert!(
        std::env::var_os("STRACE_TESTS_REQUIRED").is_none_or(|v| v != "1"),
        "{why}, and STRACE_TESTS_REQUIRED=1"
    );
    // Past the harness's capture, so that the skip is seen even in a passing run.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED: {why}\n");
    true
}

/// Proves that the strace case `name` of the calling test binary cannot pass by skipping:
/// run again alone with no strace on `PATH`, it fails where `STRACE_TESTS_REQUIRED=1` and
/// passes, saying it skipped, where not.
pub fn assert_strace_case_skips_only_where_allowed(name: &str) {
    let run = |required: bool| -> (bool, String) {
        let no_tools = tempfile::tempdir().unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env("PATH", no_tools.path());
        if required {
            command.env("STRACE_TESTS_REQUIRED", "1");
        } else {
            command.env_remove("STRACE_TESTS_REQUIRED");
        }
        let out = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (passed, text) = run(true);
    assert!(
        !passed && text.contains("1 failed") && text.contains("STRACE_TESTS_REQUIRED=1"),
        "{name} without strace but with STRACE_TESTS_REQUIRED=1 must fail, naming it:\n{text}"
    );
    let (passed, text) = run(false);
    assert!(
        passed && text.contains("1 passed") && text.contains("SKIPPED"),
        "{name} without strace and not required must skip, loudly:\n{text}"
    );
}

/// The children of `pid` whose command line contains every one of `needles`, from /proc
/// (Linux; none elsewhere).
pub fn children_with(pid: u32, needles: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the parent after the command's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            ppid == Some(pid) && needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

/// Sends signal `name` (`INT`, `STOP`, ...) to `pid` with `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Ctrl-C to `run` while its child `child` is frozen (SIGSTOP): a run that waited for that
/// child would never end. Returns the run's exit code and how long it took to end after the
/// signal; fails (letting both go) if it still runs 10 s later.
pub fn ctrl_c_while_frozen(run: &mut Child, child: u32) -> (Option<i32>, Duration) {
    signal(child, "STOP");
    signal(run.id(), "INT");
    let signalled = std::time::Instant::now();
    loop {
        if let Some(status) = run.try_wait().unwrap() {
            return (status.code(), signalled.elapsed());
        }
        if signalled.elapsed().as_secs() >= 10 {
            signal(child, "CONT");
            let _ = run.kill();
            let _ = run.wait();
            panic!("still running 10 s after Ctrl-C, waiting for its frozen child {child}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first child of `run` whose command line contains every one of `needles`, waited for
/// up to `secs` seconds (the run must not end first).
pub fn wait_for_child(run: &mut Child, needles: &[&str], secs: u64) -> u32 {
    let started = std::time::Instant::now();
    loop {
        if let Some(&child) = children_with(run.id(), needles).first() {
            return child;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before running a child with {needles:?}"
        );
        assert!(
            started.elapsed().as_secs() < secs,
            "no child with {needles:?} in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where `scripts/corpus.sh` keeps the real-media corpus: `$MEDIA_CONVERTER_CORPUS`, else
/// `${XDG_CACHE_HOME:-~/.cache}/media-converter/corpus`, as the script itself decides.
pub fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MEDIA_CONVERTER_CORPUS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("media-converter").join("corpus")
}

/// A wrapper of `tool` first on `PATH` that holds the first call whose arguments contain
/// every one of a set of needles until the test says go: the test makes its change while
/// the run waits on that exact call, then lets the real tool run (or never does, to prove
/// the run stops it). Every other call runs the real tool at once.
pub struct GatedTool {
    dir: tempfile::TempDir,
}

impl GatedTool {
    /// A gated `tool`, holding its first call whose argument line contains all `needles`.
    pub fn holding(tool: &str, needles: &[&str]) -> GatedTool {
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path();
        let bin = gate.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tests: String = needles
            .iter()
            .map(|needle| {
                assert!(!needle.contains('\''), "a needle with a quote: {needle}");
                format!(" && case \"$*\" in *'{needle}'*) true ;; *) false ;; esac")
            })
            .collect();
        // `mkdir` is atomic: one call only is held, however many match at once. The held
        // call's pid is its own to the end (`exec`), so the test can watch it.
        let script = format!(
            "#!/bin/sh\nif true{tests} && mkdir '{g}/held' 2>/dev/null; then\n  \
             echo $$ > '{g}/entered.tmp' && mv '{g}/entered.tmp' '{g}/entered'\n  \
             while [ ! -e '{g}/go' ]; do sleep 0.05; done\nfi\nexec '{real}' \"$@\"\n",
            g = gate.display(),
            real = tool_on_path(tool).display()
        );
        write_script(&bin.join(tool), &script);
        GatedTool { dir }
    }

    /// `PATH` with the wrapper first.
    pub fn path_var(&self) -> std::ffi::OsString {
        path_with_first(&self.dir.path().join("bin"))
    }

    /// The held call once it has started, waited for up to `secs` seconds while `run` lives
    /// (a run that ends first, or a call that never comes, fails the test).
    pub fn wait_held(&self, run: &mut Child, secs: u64) -> Held {
        let entered = self.dir.path().join("entered");
        let started = std::time::Instant::now();
        loop {
            if let Ok(pid) = std::fs::read_to_string(&entered) {
                let pid = pid.trim().parse().unwrap();
                // `sh WRAPPER ARGS...`: the arguments, which the real tool keeps after `exec`.
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args = cmdline.split_inclusive(|b| *b == 0).skip(2).flatten();
                return Held {
                    pid,
                    args: args.copied().collect(),
                };
            }
            if let Some(status) = run.try_wait().unwrap() {
                panic!("the run ended ({status}) before the held call");
            }
            assert!(
                started.elapsed().as_secs() < secs,
                "no held call in {secs} s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets the held call (and any later one) run.
    pub fn go(&self) {
        std::fs::write(self.dir.path().join("go"), "").unwrap();
    }
}

/// The call a [`GatedTool`] holds: its pid, and its arguments, which name it whether it still
/// waits in the wrapper or runs the real tool, and never another process that took its pid.
pub struct Held {
    pub pid: u32,
    args: Vec<u8>,
}

impl Held {
    /// Whether it still runs.
    pub fn running(&self) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        !self.args.is_empty() && cmdline.ends_with(&self.args) && process_alive(self.pid)
    }

    /// Kills it if it still runs.
    pub fn kill(&self) {
        if self.running() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Whether process `pid` still exists (a zombie not yet reaped counts as gone).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// The temp outputs beside `media` (`.NAME.mediabox-ID.partial.EXT`).
pub fn temp_outputs(media: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        ".{}.mediabox-",
        media.file_name().unwrap().to_str().unwrap()
    );
    walk(media.parent().unwrap())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(&prefix) && name.contains(".partial.")
        })
        .collect()
}

/// Replaces host `a`'s claim on `media` with host `b`'s while `a` keeps heartbeating (too
/// rarely to notice before its swap): the real lock module retires the lock, as a break
/// does, and `b` claims the file. `a`'s temp output is removed where `settle`, as a breaker
/// settling a dead claim removes it, and left where it is otherwise.
pub fn take_over_live(media: &Path, settle: bool) -> LockGuard {
    let breaker = Locker::new(
        HostIdentity {
            hostname: "b".into(),
            host_id: "b-id".into(),
        },
        LockSettings::default(),
    );
    let lock = lock_path(media).unwrap();
    let tidy = |_: &Path, _: &_| {
        if settle {
            for temp in temp_outputs(media) {
                std::fs::remove_file(temp).unwrap();
            }
        }
    };
    let broken = breaker.break_assumed_dead(&lock, tidy).unwrap();
    assert!(
        matches!(broken, share_lock::BreakOutcome::Broken(..)),
        "host a held no claim to break"
    );
    match breaker.try_acquire(media).unwrap() {
        Acquire::Acquired(guard) => guard,
        Acquire::Held(holder) => panic!("held again by {holder}"),
    }
}
