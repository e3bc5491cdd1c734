//! A cold library: conversions start while the survey goes on, and hosts starting together
//! share the probing instead of each probing every file.
//!
//! The slow survey is real: many files that only ffprobe can read (MP3s, hard links of one
//! tiny file, so the library costs one encode), probed one at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use media_converter::header;
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
    // At the root, the movie is surveyed before `music/` (the walk hands a directory's files
    // over before its subdirectories; one probe worker takes them in that order): the case
    // measures whether its conversion waits for the survey, not where the survey finds it.
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

/// ffprobe and ffmpeg wrappers, first on `PATH`, that write every call into one log in the
/// order they came: `ffprobe claimed ARGS` when the file named last already had its lock,
/// `ffprobe unclaimed ARGS` when not, `ffmpeg ARGS`.
struct Calls {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    /// The `PATH` after the wrappers: where they find the tools they run.
    rest: std::ffi::OsString,
    log: PathBuf,
}

impl Calls {
    fn new() -> Calls {
        Calls::over(&std::env::var_os("PATH").unwrap_or_default())
    }

    /// The wrappers in front of the tools found on `path` (which may be other wrappers).
    fn over(path: &std::ffi::OsStr) -> Calls {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls.log");
        for tool in ["ffprobe", "ffmpeg"] {
            let next = which::which_in(tool, Some(path), "/").unwrap();
            let claimed = if tool == "ffprobe" {
                r#"for last; do :; done
last=${last#file:}
if [ -e "$last.mediabox.lock" ]; then state=claimed; else state=unclaimed; fi
"#
            } else {
                "state=\n"
            };
            let script = format!(
                "#!/bin/sh\n{claimed}printf '%s %s %s\\n' {tool} \"$state\" \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                next.display()
            );
            write_script(&bin.join(tool), &script);
        }
        Calls {
            _dir: dir,
            bin,
            rest: path.to_owned(),
            log,
        }
    }

    fn path_var(&self) -> std::ffi::OsString {
        let mut paths = vec![self.bin.clone()];
        paths.extend(std::env::split_paths(&self.rest));
        std::env::join_paths(paths).unwrap()
    }

    /// Every call so far, in order.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The calls of `tool` that name `file`, with their place in the log.
    fn on(&self, tool: &str, file: &Path) -> Vec<(usize, String)> {
        let name = file.to_str().unwrap();
        self.lines()
            .into_iter()
            .enumerate()
            .filter(|(_, line)| line.starts_with(&format!("{tool} ")) && line.contains(name))
            .collect()
    }
}

/// An H.264 clip (`secs` seconds at `size`) carrying CEA-608 closed captions inside its video
/// stream (A/53 user data in an SEI before every picture), in Matroska: its headers show an
/// H.264 video like any other; only decoding it shows the captions.
fn captioned_h264_mkv(out: &Path, secs: u32, size: &str) {
    let raw = out.with_extension("h264");
    let src = format!("testsrc2=s={size}:r=24:d={secs}");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        raw.to_str().unwrap(),
    ]);
    let plain = std::fs::read(&raw).unwrap();
    // NAL type 6 (SEI), payload type 4 (ITU-T T.35), 14 bytes: country 0xB5, provider 0x31
    // (ATSC), "GA94", cc_data (type 3): one valid 608 pair, 0x94 0x2C (erase displayed memory).
    let sei: [u8; 22] = [
        0, 0, 0, 1, 0x06, 0x04, 0x0E, 0xB5, 0x00, 0x31, b'G', b'A', b'9', b'4', 0x03, 0x41, 0xFF,
        0xFC, 0x94, 0x2C, 0xFF, 0x80,
    ];
    let mut starts = Vec::new();
    let mut at = 0;
    while let Some(found) = plain[at..].windows(3).position(|w| w == [0, 0, 1]) {
        let code = at + found;
        let start = if code > 0 && plain[code - 1] == 0 {
            code - 1
        } else {
            code
        };
        starts.push((start, code + 3));
        at = code + 3;
    }
    let mut captioned = Vec::new();
    let mut pictures = 0;
    for (n, &(start, header)) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(plain.len(), |next| next.0);
        // Before each slice of a picture (non-IDR 1, IDR 5).
        if matches!(plain[header] & 0x1f, 1 | 5) {
            captioned.extend_from_slice(&sei);
            pictures += 1;
        }
        captioned.extend_from_slice(&plain[start..end]);
    }
    assert!(pictures >= 24, "only {pictures} pictures in the clip");
    std::fs::write(&raw, captioned).unwrap();
    ffmpeg(&[
        "-f",
        "h264",
        "-r",
        "24",
        "-i",
        raw.to_str().unwrap(),
        "-c",
        "copy",
        out.to_str().unwrap(),
    ]);
    std::fs::remove_file(raw).unwrap();
}

#[test]
fn a_candidate_read_from_its_headers_is_probed_once_after_its_claim_and_before_its_encode() {
    let library = tempfile::tempdir().unwrap();
    let movie = library.path().join("movie.mkv");
    long_h264_mkv(&movie, 1, "160x90");
    age(&movie);
    assert!(
        header::read(&movie).is_ok(),
        "the headers of an H.264 mkv are read natively"
    );
    let calls = Calls::new();
    let out = cmd()
        .env("PATH", calls.path_var())
        .arg("--dir")
        .arg(library.path())
        .args(["--json", "--jobs", "1"])
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(
        of_kind(&events, "summary")[0]["converted"],
        1,
        "{events:#?}"
    );
    assert_eq!(video_codec(&movie), "hevc");

    let log = calls.lines();
    let probes = calls.on("ffprobe", &movie);
    // The survey decided from the headers; ffprobe read the file once, by the worker that
    // held its lock. (The new file is probed under its temp name, which is not the movie's.)
    assert_eq!(probes.len(), 1, "ffprobe on the movie: {log:#?}");
    let (probed_at, probe) = &probes[0];
    assert!(
        probe.starts_with("ffprobe claimed "),
        "ffprobe ran before the claim: {log:#?}"
    );
    let (encoded_at, _) = calls
        .on("ffmpeg", &movie)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no ffmpeg read the movie: {log:#?}"));
    assert!(
        probed_at < &encoded_at,
        "the movie was encoded before ffprobe described it: {log:#?}"
    );
}

/// An H.264 clip with PCM audio in Matroska: a candidate whose headers the native reader does
/// not vouch for (PCM), so that its survey is an ffprobe.
fn h264_pcm_mkv(out: &Path) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=160x90:r=24:d=1",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:d=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "8",
        "-c:a",
        "pcm_s16le",
        out.to_str().unwrap(),
    ]);
}

/// Waits up to `secs` seconds for `done` while `run` lives (a run that ends first, or a
/// condition never met, fails the test).
fn wait_until(run: &mut std::process::Child, secs: u64, what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        if let Some(status) = run.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(
            started.elapsed().as_secs() < secs,
            "{what} did not come in {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_file_its_headers_call_a_candidate_and_ffprobe_a_skip_is_released_unencoded() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // The worker must take the captioned file first, for `--max-files 1` to show that it
    // does not count. Neither the walk nor `--order` decides that here: the movie is walked
    // first (the root's files come before `sub/`'s) and is read by ffprobe (its PCM audio is
    // not read natively), and that survey waits until the worker has claimed the captioned
    // file, so that the captioned file is the only candidate at the worker's first choice,
    // whatever the load.
    let movie = root.join("movie.mkv");
    h264_pcm_mkv(&movie);
    let captioned = root.join("sub/captioned.mkv");
    std::fs::create_dir(root.join("sub")).unwrap();
    captioned_h264_mkv(&captioned, 3, "320x180");
    age_all(root);
    let native = header::read(&captioned).expect("its headers are read natively");
    assert!(
        !native.main_video().unwrap().closed_captions,
        "the headers cannot show captions inside the video"
    );
    assert!(
        header::read(&movie).is_err(),
        "the movie's headers are read natively: its survey would not wait on ffprobe"
    );
    let original = std::fs::read(&captioned).unwrap();

    let gate = GatedTool::holding("ffprobe", &[movie.to_str().unwrap()]);
    let calls = Calls::over(&gate.path_var());
    // Two probe workers: the one held on the movie leaves the other to read the captioned
    // file.
    let run = || {
        let mut command = cmd();
        command
            .env("PATH", calls.path_var())
            .arg("--dir")
            .arg(root)
            .args(["--json", "--jobs", "1", "--probe-jobs", "2"])
            .args(["--max-files", "1"]);
        command
    };
    let mut first = Running(
        run()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    gate.wait_held(&mut first.0, 60);
    wait_until(&mut first.0, 60, "the captioned file's claim", || {
        calls
            .on("ffprobe", &captioned)
            .iter()
            .any(|(_, call)| call.starts_with("ffprobe claimed "))
    });
    gate.go();
    let out = first.output().unwrap();
    let events = events(&out);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let surveyed = calls.on("ffprobe", &movie);
    assert!(
        surveyed
            .first()
            .is_some_and(|(_, call)| call.starts_with("ffprobe unclaimed ")),
        "the held call was not the movie's survey: {surveyed:#?}"
    );
    let log = calls.lines();
    let skipped = of_kind(&events, "skipped");
    assert!(
        skipped
            .iter()
            .any(|e| e["file"] == captioned.to_str().unwrap() && e["reason"] == "closed_captions"),
        "not skipped for its captions: {events:#?}"
    );
    assert!(
        calls.on("ffmpeg", &captioned).is_empty(),
        "the captioned file was encoded: {log:#?}"
    );
    let probes = calls.on("ffprobe", &captioned);
    assert_eq!(probes.len(), 1, "{log:#?}");
    assert!(probes[0].1.starts_with("ffprobe claimed "), "{log:#?}");
    assert_eq!(std::fs::read(&captioned).unwrap(), original);
    assert!(
        !root.join("sub/captioned.mkv.mediabox.lock").exists(),
        "its claim was not released"
    );
    // Nothing was started on it: `--max-files 1` still converts the next file.
    assert_eq!(converted(&events), [movie.to_string_lossy()], "{events:#?}");
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["converted"], 1, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");

    // ffprobe's facts are in the cache: the next run knows the skip without ffprobe.
    let cache = read_cache(&root.join("sub"));
    let entry = &cache["files"]["captioned.mkv"];
    assert_eq!(
        entry["info"]["streams"][0]["closed_captions"], true,
        "{cache:#}"
    );
    assert!(entry.get("facts").is_none(), "not ffprobe's facts: {entry}");
    let before = calls.lines().len();
    let events = common::events(&run().output().unwrap());
    assert!(
        of_kind(&events, "skipped")
            .iter()
            .any(|e| e["file"] == captioned.to_str().unwrap() && e["reason"] == "closed_captions"),
        "{events:#?}"
    );
    assert!(
        calls.lines()[before..]
            .iter()
            .all(|line| !line.contains(captioned.to_str().unwrap())),
        "the second run read it again: {:#?}",
        &calls.lines()[before..]
    );
}

#[test]
fn the_slow_walk_case_cannot_pass_by_skipping() {
    assert_strace_case_skips_only_where_allowed(
        "probes_finished_while_the_walk_is_slow_reach_the_workers_before_it_ends",
    );
}

#[test]
fn probes_finished_while_the_walk_is_slow_reach_the_workers_before_it_ends() {
    if strace_missing() {
        return;
    }
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // The root is walked first: a film to convert among 1,000 files already HEVC (hard
    // links of one), enough for the walk to hand the root over at once.
    let movie = root.join("movie.mkv");
    long_h264_mkv(&movie, 1, "160x90");
    let efficient = root.join("hevc0000.mkv");
    hevc_mkv(&efficient);
    for n in 1..1000 {
        std::fs::hard_link(&efficient, root.join(format!("hevc{n:04}.mkv"))).unwrap();
    }
    // Then 40 directories of one file each, on a slow share: every directory listing takes
    // 150 ms more (strace delays each getdents64), so the walk lasts 12 s or more.
    let later = 40;
    for d in 0..later {
        let dir = root.join(format!("later/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::hard_link(&efficient, dir.join("episode.mkv")).unwrap();
    }
    age_all(root);
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=getdents64"])
        .args(["-e", "inject=getdents64:delay_exit=150000"])
        .arg(bin())
        .env_remove("MEDIA_CONVERTER_HOSTNAME")
        .env("MEDIA_CONVERTER_HOST_ID", "slow-walk-id")
        .arg("--dir")
        .arg(root)
        .args(["--json", "--jobs", "1", "--probe-jobs", "1"])
        .output()
        .unwrap();
    let events = events(&out);
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let kind = e["event"].as_str().unwrap_or_default().to_owned();
            (kind, e["file"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let converting = kinds
        .iter()
        .position(|(kind, _)| kind == "converting")
        .unwrap_or_else(|| panic!("no conversion: {events:#?}"));
    let later_dir = root.join("later");
    let later_dir = later_dir.to_str().unwrap();
    let walked_after = kinds[converting..]
        .iter()
        .filter(|(kind, file)| kind == "skipped" && file.starts_with(later_dir))
        .count();
    // Held until the walk's next hand-over, the film's probe would reach the workers with
    // the last directories, and its conversion would start after they were surveyed.
    assert!(
        walked_after >= later / 2,
        "only {walked_after} of the {later} directories walked after the conversion began"
    );
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["converted"], 1, "{summary}");
    assert_eq!(summary["skipped"], 1000 + later as u64, "{summary}");
}
