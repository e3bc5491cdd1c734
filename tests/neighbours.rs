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
    assert_eq!(plan_of(&events, "held.mkv")["reason"], "locked");
    assert_eq!(plan_of(&events, "free.mkv")["action"], "convert");
    assert_eq!(notices(&events), 1, "{events:#?}");
}

/// The plan line a dry run's `events` give for the file whose path ends with `name`.
fn plan_of<'a>(events: &'a [Value], name: &str) -> &'a Value {
    of_kind(events, "planned")
        .into_iter()
        .find(|e| e["file"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no plan for {name}: {events:#?}"))
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

/// A warm dry run looks for the original's `<file>.lock` and for a file at each new name in
/// the walk's listing of the directory, and stats only what the listing holds: beyond the
/// walk's one stat a file, no stat per file, and none that finds nothing (strace counts
/// them). The lock it lists is still read and honoured, the taken name still skipped.
#[test]
fn a_warm_dry_run_stats_each_file_once() {
    if which::which("strace").is_err() {
        eprintln!("!!! SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    const DIRS: usize = 4;
    const PER_DIR: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let (mkv, avi_clip) = (dir.path().join("clip.mkv"), dir.path().join("clip.avi"));
    h264_aac_srt_mkv(&mkv);
    avi(&avi_clip);
    for d in 0..DIRS {
        let sub = library.join(format!("Show {d}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..PER_DIR {
            // Half of them avi: each has a new name, `.mkv`, to look for.
            let (clip, ext) = if f % 2 == 0 {
                (&mkv, "mkv")
            } else {
                (&avi_clip, "avi")
            };
            fs::copy(clip, sub.join(format!("Episode {f}.{ext}"))).unwrap();
        }
    }
    // One avi whose new name is already taken by another file.
    let taken = library.join("Show 0/Episode 1.mkv");
    fs::write(&taken, b"another file").unwrap();
    age_all(&library);
    original_lock(
        &library.join("Show 1/Episode 2.mkv"),
        "nas",
        Duration::from_secs(60),
    );
    let files = DIRS * PER_DIR + 1;

    let dry_run = |d: &Path| {
        let trace = dir.path().join("stat.trace");
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", "trace=execve,statx,?newfstatat,?fstat,?stat,?lstat"])
            .arg(bin())
            .env_remove("MEDIA_CONVERTER_HOSTNAME")
            .env_remove("MEDIA_CONVERTER_HOST_ID")
            .env("NO_COLOR", "1")
            .args(["--json", "--dry-run", "--dir"])
            .arg(d)
            .output()
            .expect("run under strace");
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
        // The tool's own calls, not those of the programs it starts (ffprobe's library
        // loading): every process but the first begins with an execve.
        let trace = fs::read_to_string(&trace).unwrap();
        let pid = |line: &str| {
            line.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let started: BTreeSet<String> = trace
            .lines()
            .filter(|l| l.contains(" execve("))
            .skip(1)
            .map(pid)
            .collect();
        let ours: Vec<&str> = trace
            .lines()
            .filter(|l| !started.contains(&pid(l)) && !l.contains("execve"))
            .collect();
        // A call cut by another thread's is two lines, its result on the second.
        let calls = ours.iter().filter(|l| !l.contains("resumed>")).count();
        let missing = ours.iter().filter(|l| l.contains("ENOENT")).count();
        (events(&out), calls, missing)
    };
    // Cold: the facts go to the caches.
    dry_run(&library);
    let (_, base_stats, base_missing) = dry_run(&empty);
    let (events, stats, missing) = dry_run(&library);

    for (name, field, expected) in [
        ("Show 1/Episode 2.mkv", "reason", "locked"),
        ("Show 0/Episode 1.avi", "reason", "output_exists"),
        ("Show 2/Episode 3.avi", "action", "convert"),
        ("Show 2/Episode 4.mkv", "action", "convert"),
    ] {
        assert_eq!(plan_of(&events, name)[field], expected, "{name}");
    }

    let (stats, missing) = (stats - base_stats, missing.saturating_sub(base_missing));
    // A few a directory (its listing, its cache's stamp and read) and the two names found:
    // one more for each planned file (a lock or a new name looked for) passes it.
    let bound = files + 6 * DIRS + 4;
    eprintln!(
        "{files} files in {DIRS} dirs: {stats} stat calls beyond an empty library's \
         {base_stats}, {missing} of them for names that do not exist (bound {bound})"
    );
    assert!(
        stats <= bound,
        "{stats} stat calls for {files} files: more than {bound}"
    );
    assert!(missing <= 2, "{missing} stats of names that do not exist");
}
