//! What a run costs before its first conversion and after its last: the processes it starts
//! and the time it takes where there is nothing (left) for it to do. Every host of a fleet
//! pays these on every run, a nightly run over a converted library pays nothing else.

mod common;

use std::path::Path;

use common::*;

/// The tool run as host `host` (its name, and `<host>-id` as its id).
fn as_host(host: &str) -> std::process::Command {
    let mut command = cmd();
    command
        .env("MEDIA_CONVERTER_HOSTNAME", host)
        .env("MEDIA_CONVERTER_HOST_ID", format!("{host}-id"));
    command
}

/// A conversion run of `dir` through `tools`, as `host`.
fn run_as(dir: &Path, tools: &CountingTool, host: &str) -> std::process::Output {
    as_host(host)
        .env("PATH", tools.path_var())
        .arg("--dir")
        .arg(dir)
        .args(["--json", "--min-age", "0s"])
        .output()
        .unwrap()
}

#[test]
fn a_run_with_nothing_to_encode_starts_no_ffmpeg() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // Already HEVC, and lossy audio: nothing here is worth an encode, and the encoder choice
    // (the trial encodes of every encoder that could work here) is never needed.
    for dir in ["show", "music"] {
        std::fs::create_dir(root.join(dir)).unwrap();
    }
    hevc_mkv(&root.join("show/episode.mkv"));
    mp3(&root.join("music/track.mp3"));
    let ffmpeg = CountingTool::wrapping("ffmpeg");
    let out = run_as(root, &ffmpeg, "idle");
    let events = events(&out);
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["converted"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(
        of_kind(&events, "encoder_chosen").is_empty(),
        "an encoder was chosen for nothing: {events:#?}"
    );
    assert_eq!(
        ffmpeg.calls(),
        Vec::<String>::new(),
        "ffmpeg ran though nothing was to be encoded"
    );
}

/// Waits up to a minute for `path` to exist.
fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_candidate_another_host_converted_since_the_survey_is_skipped_without_a_claim() {
    if strace_missing() {
        return;
    }
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    let files = 6;
    let first = root.join("clip0.mkv");
    long_h264_mkv(&first, 1, "160x90");
    for n in 1..files {
        std::fs::copy(&first, root.join(format!("clip{n}.mkv"))).unwrap();
    }
    // All six known from the cache as B's walk reads the folder: B's survey has found every
    // one a candidate before its first claim, whatever the load (read from their headers
    // instead, a file read after A converted it would never be a candidate of B's).
    build_cache(root);
    // Host B's first ffprobe (the one it runs on the first file it claims) waits for the
    // test's word: meanwhile host A converts every other file, which B's survey has already
    // found to be candidates.
    let ffprobe = GatedTool::holding("ffprobe", &[]);
    let traces = tempfile::tempdir().unwrap();
    let trace = traces.path().join("b.trace");
    let b = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=mkdir", "-o"])
        .arg(&trace)
        .arg(bin())
        .env("PATH", ffprobe.path_var())
        .env("MEDIA_CONVERTER_HOSTNAME", "b")
        .env("MEDIA_CONVERTER_HOST_ID", "b-id")
        .arg("--dir")
        .arg(root)
        .args([
            "--json",
            "--min-age",
            "0s",
            "--jobs",
            "1",
            "--preset",
            "ultrafast",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut b = Running(b);
    ffprobe.wait_held(&mut b.0, 60);
    let held: Vec<_> = (0..files)
        .filter(|n| root.join(format!("clip{n}.mkv.mediabox.lock")).exists())
        .collect();
    assert_eq!(held.len(), 1, "the held ffprobe is not B's first claim's");
    let a = as_host("a")
        .arg("--dir")
        .arg(root)
        .args(["--json", "--min-age", "0s", "--preset", "ultrafast"])
        .output()
        .unwrap();
    ffprobe.go();
    let b = b.output().unwrap();
    let (a, b) = (events(&a), events(&b));
    let converted = |events: &[serde_json::Value]| of_kind(events, "converted").len();
    assert_eq!(converted(&a) + converted(&b), files, "{a:#?}\n{b:#?}");
    assert!(
        converted(&a) >= files - 1,
        "host A waited on nothing: {a:#?}"
    );
    let changed = of_kind(&b, "skipped")
        .iter()
        .filter(|e| e["reason"] == "changed")
        .count();
    assert_eq!(changed, files - converted(&b), "{b:#?}");
    // B claimed only what it converted: a file whose size already says another host
    // converted it costs no lock, no heartbeat and no presence update.
    let claims = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains(".mkv.mediabox.lock.acquire\"") && l.ends_with("= 0"))
        .count();
    assert_eq!(claims, converted(&b), "host B's claims");
}

#[test]
fn a_software_run_starts_one_ffmpeg_before_its_first_encode_its_trial() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    long_h264_mkv(&root.join("movie.mkv"), 1, "160x90");
    let ffmpeg = CountingTool::wrapping("ffmpeg");
    let out = cmd()
        .env("PATH", ffmpeg.path_var())
        .arg("--dir")
        .arg(root)
        .args(["--json", "--min-age", "0s", "--encoder", "libx265"])
        .args(["--preset", "ultrafast"])
        .output()
        .unwrap();
    let events = events(&out);
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    let calls = ffmpeg.calls();
    // The encode writes its temp output, a `.partial.` name.
    let first_encode = calls
        .iter()
        .position(|c| c.contains(".partial."))
        .unwrap_or_else(|| panic!("no encode: {calls:#?}"));
    // libx265 alone is wanted: its trial says all there is to know, and `ffmpeg -encoders`
    // is asked only to explain a trial that fails.
    let before = &calls[..first_encode];
    assert_eq!(before.len(), 1, "{before:#?}");
    assert!(
        before[0].contains("libx265") && before[0].contains("lavfi"),
        "{before:#?}"
    );
}

#[test]
fn an_ffmpeg_without_libx265_is_named_as_such_when_its_trial_fails() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    let movie = root.join("movie.mkv");
    long_h264_mkv(&movie, 1, "160x90");
    let before = std::fs::read(&movie).unwrap();
    // An ffmpeg built without libx265: it lists no libx265, and its trial fails as such a
    // build fails it.
    let fake = tempfile::tempdir().unwrap();
    let real = which::which("ffmpeg").unwrap();
    write_script(
        &fake.path().join("ffmpeg"),
        &format!(
            "#!/bin/sh\ncase \" $* \" in\n  *\" -encoders \"*)\n    '{real}' \"$@\" | grep -v \
             libx265; exit 0 ;;\n  *\" libx265 \"*)\n    echo \"Unknown encoder 'libx265'\" >&2; \
             exit 1 ;;\nesac\nexec '{real}' \"$@\"\n",
            real = real.display()
        ),
    );
    let out = cmd()
        .arg("--dir")
        .arg(root)
        .arg("--ffmpeg")
        .arg(fake.path().join("ffmpeg"))
        .args(["--json", "--min-age", "0s", "--encoder", "libx265"])
        .output()
        .unwrap();
    let events = events(&out);
    let failed = of_kind(&events, "failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("this ffmpeg was built without libx265"),
        "{error}"
    );
    assert_eq!(std::fs::read(&movie).unwrap(), before);
}

#[test]
fn a_file_another_host_holds_does_not_count_against_max_files() {
    another_host_holds_the_first_of_two_with_max_files_1("1");
}

/// With two workers, the second asks for a file while the first's is still at its claim:
/// it must wait for that claim's end, not stop the run at the limit.
#[test]
fn a_file_another_host_holds_does_not_count_against_max_files_with_two_workers() {
    another_host_holds_the_first_of_two_with_max_files_1("2");
}

/// Host A converts the larger of two files, slowly; host B, with `jobs` workers and
/// `--max-files 1`, meets A's claim first and must convert the other.
fn another_host_holds_the_first_of_two_with_max_files_1(jobs: &str) {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // The larger file comes first by `--order largest`, and host A is converting it, slowly.
    let held = root.join("held.mkv");
    long_h264_mkv(&held, 20, "640x360");
    let free = root.join("free.mkv");
    long_h264_mkv(&free, 1, "160x90");
    // Both known from the cache as B's walk reads the folder: B's first choice is the held
    // file, whatever the load, not whichever file its survey happened to finish first.
    build_cache(root);
    let a = as_host("a")
        .arg("--file")
        .arg(&held)
        .args(["--json", "--min-age", "0s", "--preset", "veryslow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _a = Running(a);
    wait_for(&root.join("held.mkv.mediabox.lock"));
    let out = as_host("b")
        .arg("--dir")
        .arg(root)
        .args([
            "--json",
            "--min-age",
            "0s",
            "--max-files",
            "1",
            "--jobs",
            jobs,
        ])
        .args(["--order", "largest", "--preset", "ultrafast"])
        .output()
        .unwrap();
    let events = events(&out);
    let locked = of_kind(&events, "skipped");
    assert!(
        locked
            .iter()
            .any(|e| e["reason"] == "locked" && e["file"] == held.to_str().unwrap()),
        "host B did not meet A's claim first: {events:#?}"
    );
    // Started nothing of the held file: its one conversion is the free file's.
    let converted = of_kind(&events, "converted");
    assert_eq!(converted.len(), 1, "{events:#?}");
    assert_eq!(converted[0]["file"], free.to_str().unwrap());
}

#[test]
fn a_file_another_host_converted_under_a_new_name_is_a_skip_not_a_failure() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // Host B surveys both and starts on the larger; its encode waits for the test's word.
    let big = root.join("big.mkv");
    long_h264_mkv(&big, 10, "640x360");
    let movie = root.join("Movie.avi");
    avi(&movie);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&big) > size(&movie), "big.mkv must come first");
    // Both known from the cache as B's walk reads the folder: Movie.avi is surveyed before
    // B's first claim, whatever the load.
    build_cache(root);
    let ffmpeg = GatedTool::holding("ffmpeg", &[big.to_str().unwrap()]);
    let b = as_host("b")
        .env("PATH", ffmpeg.path_var())
        .arg("--dir")
        .arg(root)
        .args(["--json", "--min-age", "0s", "--jobs", "1"])
        .args(["--order", "largest", "--preset", "ultrafast"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut b = Running(b);
    ffmpeg.wait_held(&mut b.0, 60);
    assert!(
        root.join("big.mkv.mediabox.lock").exists(),
        "host B ran ffmpeg on big.mkv without its claim"
    );
    // Meanwhile host A converts Movie.avi into Movie.mkv: the .avi is gone.
    let a = as_host("a")
        .arg("--file")
        .arg(&movie)
        .args(["--json", "--min-age", "0s", "--preset", "ultrafast"])
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!movie.exists() && root.join("Movie.mkv").exists());
    ffmpeg.go();
    let out = b.output().unwrap();
    let status = out.status;
    let events = events(&out);
    assert!(of_kind(&events, "failed").is_empty(), "{events:#?}");
    let skipped = of_kind(&events, "skipped");
    let gone = skipped
        .iter()
        .find(|e| e["file"] == movie.to_str().unwrap())
        .unwrap_or_else(|| panic!("Movie.avi was not skipped: {events:#?}"));
    assert_eq!(gone["reason"], "changed", "{gone}");
    let detail = gone["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("converted by a") && detail.contains("Movie.mkv"),
        "{gone}"
    );
    let summary = of_kind(&events, "summary")[0];
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["converted"], 1, "{summary}");
    assert!(status.success(), "{summary}");
}

#[test]
fn a_file_whose_new_name_was_taken_at_its_claim_does_not_count_against_max_files() {
    let library = tempfile::tempdir().unwrap();
    let root = library.path();
    // demo.avi and demo.mpg both become demo.mkv: the one that saves more converts first
    // and takes the name, and the other finds it taken at its claim. free.mkv, small and
    // already H.264, saves least and comes last.
    let demos = [root.join("demo.avi"), root.join("demo.mpg")];
    avi(&demos[0]);
    let second = &demos[1];
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=320x180:r=24:d=3",
        "-c:v",
        "mpeg2video",
        "-q:v",
        "4",
        "-f",
        "mpeg",
        second.to_str().unwrap(),
    ]);
    let free = root.join("free.mkv");
    long_h264_mkv(&free, 1, "160x90");
    build_cache(root);
    let out = cmd()
        .arg("--dir")
        .arg(root)
        .args([
            "--json",
            "--min-age",
            "0s",
            "--max-files",
            "2",
            "--jobs",
            "1",
        ])
        .args(["--order", "largest", "--preset", "ultrafast"])
        .output()
        .unwrap();
    let events = events(&out);
    let file_of = |kind: &str| -> Vec<String> {
        of_kind(&events, kind)
            .iter()
            .map(|e| e["file"].as_str().unwrap().to_owned())
            .collect()
    };
    let converted = file_of("converted");
    assert_eq!(converted.len(), 2, "{events:#?}");
    let took = demos
        .iter()
        .position(|demo| converted[0] == demo.to_str().unwrap())
        .unwrap_or_else(|| panic!("no demo file converted first: {events:#?}"));
    let other = &demos[1 - took];
    let skipped = of_kind(&events, "skipped");
    assert!(
        skipped
            .iter()
            .any(|e| e["reason"] == "output_exists" && e["file"] == other.to_str().unwrap()),
        "{} did not find its new name taken at its claim: {events:#?}",
        other.display()
    );
    assert_eq!(converted[1], free.to_str().unwrap(), "{events:#?}");
}
