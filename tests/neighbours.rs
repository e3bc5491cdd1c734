//! The original mediabox tool at work in the same library: its `<file>.lock` is honoured by
//! its own rules, never removed, and its presence said once, loudly; it reads our caches
//! without crashing and never takes our work files for media. Its steps are restated in
//! `tests/data/mediabox_cache.py`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

/// Runs one step of the original tool (`tests/data/mediabox_cache.py`, a restatement of its
/// `media_update.py` and `media_database.py`) on `dir`: its JSON answer, or its traceback.
fn original_tool(dir: &Path, step: &[&str]) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mediabox_cache.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .args(step)
        .output()
        .expect("python3 runs (the original tool is Python; .ci/run installs it)");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary's JSON events for `args`, with `probe` counting ffprobe's runs.
fn run(probe: &CountingFfprobe, args: &[&str], dir: &Path) -> Vec<Value> {
    let out = cmd()
        .env("PATH", probe.path_var())
        .args(args)
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:#?}\n{}",
        events(&out),
        stderr(&out)
    );
    events(&out)
}

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
    assert_eq!(notices(&events), 1, "said once, not per file: {events:#?}");
    // Our own claims on the files left to it are released.
    let ours: Vec<_> = walk(d)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".mediabox"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[test]
fn the_original_tool_reads_our_cache_and_we_read_what_it_adds() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    let (a, b) = (lib.join("a.mkv"), lib.join("b.mkv"));
    h264_10bit_mkv(&a);
    hevc_mkv(&b);
    age_all(lib);
    let probe = CountingFfprobe::new();
    let build = |probe: &CountingFfprobe| run(probe, &["cache", "build"], lib);
    build(&probe);
    assert_eq!(probe.calls().len(), 2);

    // The original's start (media_update.py: cleanup_stale_entries on every directory) and
    // its statistics walk every top-level value as an entry.
    let written = fs::read(lib.join(CACHE_FILE)).unwrap();
    assert_eq!(
        original_tool(lib, &["cleanup"]),
        Ok(serde_json::json!({"removed": 0}))
    );
    assert_eq!(fs::read(lib.join(CACHE_FILE)).unwrap(), written);
    original_tool(lib, &["stats"]).unwrap();
    for (key, value) in read_cache(lib).as_object().unwrap() {
        assert!(
            value.is_object() && value.get("file_name").is_none(),
            "{key}: every top-level value is an object the original takes for no file's entry"
        );
    }

    // The original adds its own entry and rewrites the file its way; we still read ours.
    original_tool(lib, &["store", "a.mkv"]).unwrap();
    build(&probe);
    assert_eq!(probe.calls().len(), 2, "{:#?}", probe.calls());
    assert!(
        cache_files(lib)
            .iter()
            .all(|p| !p.to_string_lossy().contains("corrupt")),
        "{:?}",
        cache_files(lib)
    );
    original_tool(lib, &["cleanup"]).unwrap();

    // A cache in our earlier shape (a top-level "version") stops the original at start; it is
    // still read, and rewritten in the shape both read by the next run that sees it.
    let mut earlier = read_cache(lib);
    let files = earlier["files"].take();
    let earlier = serde_json::json!({"version": 1, "written_by": "media-converter 0.1.0",
                                     "files": files});
    fs::write(lib.join(CACHE_FILE), serde_json::to_vec(&earlier).unwrap()).unwrap();
    let crash = original_tool(lib, &["cleanup"]).unwrap_err();
    assert!(crash.contains("AttributeError"), "{crash}");
    let events = run(&probe, &["--dry-run", "--dir"], lib);
    assert_eq!(probe.calls().len(), 2, "{:#?}", probe.calls());
    let plan_of_b = of_kind(&events, "planned")
        .into_iter()
        .find(|e| e["file"] == b.to_str().unwrap())
        .cloned();
    assert_eq!(plan_of_b.unwrap()["reason"], "already_efficient");
    let cache = read_cache(lib);
    assert!(cache.get("version").is_none(), "{cache:#}");
    assert_eq!(
        cache["files"]["a.mkv"]["info"]["streams"][0]["codec"],
        "h264"
    );
    assert_eq!(
        original_tool(lib, &["cleanup"]),
        Ok(serde_json::json!({"removed": 0}))
    );
}

/// Every name a conversion leaves beside the media, however briefly (the temp output, the
/// backup, the kept original), is media neither to our scan nor to the original tool's (nor
/// to Plex, Jellyfin, Sonarr or Radarr, which go by extension too).
#[test]
fn work_files_are_never_taken_for_media() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    fs::create_dir(&lib).unwrap();
    long_h264_mkv(&lib.join("clip.mkv"), 4, "320x240");
    avi(&lib.join("old.avi"));
    age_all(&lib);
    let before: BTreeSet<_> = names(&lib);

    let mut run = Running(
        cmd()
            .args(["--json", "--preset", "medium", "--keep-original", "--dir"])
            .arg(&lib)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the conversion did not end");
        seen.extend(names(&lib));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(run.wait().unwrap().success());
    seen.extend(names(&lib));
    let outputs = BTreeSet::from(["clip.mkv".to_string(), "old.mkv".to_string()]);
    let work: Vec<_> = seen
        .iter()
        .filter(|n| !before.contains(*n) && !outputs.contains(*n) && !n.contains("cache"))
        .cloned()
        .collect();
    assert!(
        work.iter().any(|n| n.contains(".partial.")),
        "the temp output was seen: {work:?}"
    );
    assert!(
        work.iter().any(|n| n.contains("mediabox-kept")),
        "the kept originals: {work:?}"
    );

    // Empty files of every name seen, in a library of their own: nothing for either tool.
    let copy = dir.path().join("names");
    fs::create_dir(&copy).unwrap();
    for name in &work {
        fs::write(copy.join(name), b"").unwrap();
    }
    age_all(&copy);
    assert_eq!(
        original_tool(&copy, &["scan"]),
        Ok(serde_json::json!({"media": []})),
        "{work:?}"
    );
    let out = cmd()
        .args(["--json", "--dry-run", "--dir"])
        .arg(&copy)
        .output()
        .unwrap();
    let planned = of_kind(&events(&out), "planned").len();
    assert_eq!(planned, 0, "{work:?}");
    for name in &work {
        let ext = Path::new(name).extension().unwrap_or_default();
        assert!(
            !["mkv", "avi", "mp4"].contains(&ext.to_str().unwrap()),
            "{name} ends in a media extension"
        );
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What the original tool sees of a file this one is converting, by its own rules: the
/// older original (`<file>.mediabox.lock`, the name this tool's lock has) sees it held by
/// this host and leaves it; the current original (`<file>.lock`) sees nothing and would take
/// it, which is why the README's migration section says to stop it on every host first.
#[test]
fn what_the_original_sees_of_a_file_we_hold() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    long_h264_mkv(&lib.join("film.mkv"), 20, "640x360");
    age_all(lib);
    let run = convert_as(lib, "converter-1");
    let ours = lib.join("film.mkv.mediabox.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ours.exists() || fs::read(&ours).map_or(true, |b| b.is_empty()) {
        assert!(Instant::now() < deadline, "no claim taken: {:?}", walk(lib));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past a heartbeat: what the older original reads is a renewed record, not the first.
    std::thread::sleep(Duration::from_millis(1500));
    let older = original_tool(lib, &["lock", "film.mkv", ".mediabox.lock"]).unwrap();
    assert_eq!(
        older,
        serde_json::json!({"sees": "held", "host": "converter-1", "takes_the_file": false}),
        "{}",
        String::from_utf8_lossy(&fs::read(&ours).unwrap())
    );
    let current = original_tool(lib, &["lock", "film.mkv", ".lock"]).unwrap();
    assert_eq!(
        current,
        serde_json::json!({"sees": "nothing", "takes_the_file": true})
    );
    drop(run);
}

/// The original at work is said once, loudly, to a person too (stderr, not only JSON).
#[test]
fn the_original_at_work_is_said_once_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    library_held_by_the_original(d, &["one.mkv", "two.mkv"], &[]);
    let out = cmd()
        .args(["--preset", "ultrafast", "--dir"])
        .arg(d)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("ORIGINAL MEDIABOX TOOL").count(), 1, "{err}");
}

/// A dry run shows the files the original holds as the run would leave them, and says once
/// that the original is at work.
#[test]
fn a_dry_run_shows_what_the_original_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    library_held_by_the_original(d, &["held.mkv"], &["free.mkv"]);
    let out = cmd()
        .args(["--json", "--dry-run", "--dir"])
        .arg(d)
        .output()
        .unwrap();
    let events = events(&out);
    let plan = |name: &str| {
        of_kind(&events, "planned")
            .into_iter()
            .find(|e| e["file"].as_str().unwrap().ends_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("no plan for {name}: {events:#?}"))
    };
    assert_eq!(plan("held.mkv")["reason"], "locked", "{events:#?}");
    assert_eq!(plan("free.mkv")["action"], "convert", "{events:#?}");
    assert_eq!(notices(&events), 1, "{events:#?}");
}

/// Clips in `dir`, those named in `held` under a minute-old lock of the original's.
fn library_held_by_the_original(dir: &Path, held: &[&str], free: &[&str]) {
    for name in held.iter().chain(free) {
        h264_aac_srt_mkv(&dir.join(name));
    }
    age_all(dir);
    for name in held {
        original_lock(&dir.join(name), "nas", Duration::from_secs(60));
    }
}

/// How many times the events say the original is at work.
fn notices(events: &[Value]) -> usize {
    of_kind(events, "warning")
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("ORIGINAL MEDIABOX TOOL")
        })
        .count()
}
