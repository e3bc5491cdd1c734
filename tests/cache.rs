//! The shared metadata cache, end to end: the real binary, real ffprobe (counted by a wrapper
//! first on PATH), real media, real processes racing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;

/// The binary as host `host`, with the counting ffprobe first on PATH.
fn run(probe: &CountingFfprobe, host: &str, args: &[&std::ffi::OsStr]) -> (Output, Vec<Value>) {
    let out = cmd()
        .env("PATH", probe.path_var())
        .env("MEDIA_CONVERTER_HOSTNAME", host)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let events = events(&out);
    (out, events)
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn dry_run(probe: &CountingFfprobe, host: &str, dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![os("--dir"), dir.as_os_str(), os("--dry-run")];
    args.extend(extra.iter().map(|a| os(a)));
    let (out, events) = run(probe, host, &args);
    assert_eq!(out.status.code(), Some(0), "{events:#?}\n{}", stderr(&out));
    events
}

fn build(probe: &CountingFfprobe, host: &str, dir: &Path) -> Value {
    let (out, events) = run(probe, host, &[os("cache"), os("build"), dir.as_os_str()]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{events:#?}\n{}",
        stderr(&out)
    );
    of_kind(&events, "cache_built")
        .first()
        .cloned()
        .cloned()
        .unwrap_or_else(|| panic!("no cache_built event: {events:#?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn planned<'a>(events: &'a [Value], file: &Path) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "planned" && e["file"] == file.to_str().unwrap())
        .unwrap_or_else(|| panic!("no plan for {}: {events:#?}", file.display()))
}

fn set_mtime(path: &Path, time: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// lib/top.mkv (h264), lib/a/x.mkv (h264), lib/a/y.mkv (hevc), lib/b/z.avi (mpeg4); aged.
fn small_library(root: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("b")).unwrap();
    let files = vec![
        root.join("top.mkv"),
        root.join("a/x.mkv"),
        root.join("a/y.mkv"),
        root.join("b/z.avi"),
    ];
    // Separate files, not hard links: a link shares its mtime, and some tests touch one.
    h264_10bit_mkv(&files[0]);
    h264_10bit_mkv(&files[1]);
    hevc_mkv(&files[2]);
    avi(&files[3]);
    age_all(root);
    files
}

#[cfg(unix)]
#[test]
fn two_mount_paths_share_one_cache_and_a_warm_run_runs_no_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    let files = small_library(&lib);
    // The second host's view of the same share, at another path.
    let other = dir.path().join("mnt").join("media");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&lib, &other).unwrap();

    let probe = CountingFfprobe::new();
    let built = build(&probe, "host-a", &lib);
    assert_eq!(
        (built["files"].as_u64(), built["probed"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(probe.calls().len(), 4);
    let caches = cache_files(&lib);
    assert_eq!(
        caches,
        [
            lib.join(CACHE_FILE),
            lib.join("a").join(CACHE_FILE),
            lib.join("b").join(CACHE_FILE)
        ]
    );
    for cache in &caches {
        let text = fs::read_to_string(cache).unwrap();
        assert!(
            !text.contains(dir.path().to_str().unwrap()),
            "no absolute path is stored: {text}"
        );
    }
    assert_eq!(
        read_cache(&lib.join("a"))["files"]["x.mkv"]["info"]["streams"][0]["codec"],
        "h264"
    );

    // Host B, through its own mount path: everything is known, ffprobe never runs.
    let events = dry_run(&probe, "host-b", &other, &[]);
    assert_eq!(
        probe.calls().len(),
        4,
        "the warm dry run ran ffprobe: {:#?}",
        probe.calls()
    );
    let via = |f: &Path| other.join(f.strip_prefix(&lib).unwrap());
    assert_eq!(planned(&events, &via(&files[1]))["action"], "convert");
    assert_eq!(planned(&events, &via(&files[1]))["codec"], "h264");
    assert_eq!(
        planned(&events, &via(&files[2]))["reason"],
        "already_efficient"
    );
    assert_eq!(planned(&events, &via(&files[3]))["codec"], "mpeg4");
    assert_eq!(of_kind(&events, "planned").len(), 4);

    // And a build through that path finds nothing to do.
    let again = build(&probe, "host-b", &other);
    assert_eq!(
        (again["from_cache"].as_u64(), again["probed"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(probe.calls().len(), 4);
}

#[test]
fn a_changed_file_is_probed_again_and_a_rounded_mtime_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    let files = small_library(lib);
    let probe = CountingFfprobe::new();
    build(&probe, "host-a", lib);
    assert_eq!(probe.calls().len(), 4);

    // A host whose file system rounds mtimes to 2 s sees the same file.
    set_mtime(&files[1], mtime(&files[1]) + Duration::from_millis(1500));
    dry_run(&probe, "host-a", lib, &[]);
    assert_eq!(probe.calls().len(), 4, "{:#?}", probe.calls());

    // Touched an hour later: probed again, that file only.
    set_mtime(&files[1], mtime(&files[1]) + Duration::from_secs(3600));
    dry_run(&probe, "host-a", lib, &["--min-age", "0s"]);
    assert_eq!(probe.calls().len(), 5);
    assert_eq!(probe.calls_on(&files[1]), 2);

    // Replaced by other content with the same mtime (a size change): probed, and the new
    // facts decide.
    let old_mtime = mtime(&files[2]);
    fs::remove_file(&files[2]).unwrap();
    h264_aac_srt_mkv(&files[2]);
    set_mtime(&files[2], old_mtime);
    let events = dry_run(&probe, "host-a", lib, &[]);
    assert_eq!(probe.calls_on(&files[2]), 2);
    assert_eq!(planned(&events, &files[2])["action"], "convert");
    assert_eq!(
        probe.calls().len(),
        6,
        "nothing else probed: {:#?}",
        probe.calls()
    );

    // Deleted: its entry goes at the next write of that directory.
    fs::remove_file(&files[1]).unwrap();
    set_mtime(&files[2], old_mtime + Duration::from_secs(60));
    dry_run(&probe, "host-a", lib, &[]);
    let cache = read_cache(&lib.join("a"));
    let names: Vec<&String> = cache["files"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["y.mkv"]);
}

#[test]
fn a_legacy_cache_is_used_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    let (a, b, c) = (lib.join("a.mkv"), lib.join("b.mkv"), lib.join("c.mkv"));
    h264_aac_srt_mkv(&a);
    hevc_mkv(&b);
    fs::hard_link(&a, &c).unwrap();
    age_all(lib);
    let fingerprint = |p: &Path| {
        let meta = fs::metadata(p).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        (meta.len(), mtime)
    };
    let entry = |p: &Path, codec: &str, mtime_shift: f64| {
        let (size, mtime) = fingerprint(p);
        serde_json::json!({
            "fingerprint_hash": "ignored",
            "file_path": format!("/Storage/media/{}", p.file_name().unwrap().to_str().unwrap()),
            "file_name": p.file_name().unwrap().to_str().unwrap(),
            "file_size": size, "file_mtime": mtime + mtime_shift,
            "last_scanned": "2024-05-01T10:00:00.000000",
            "codec_video": codec, "codec_audio": "aac", "resolution": "160x90",
            "width": 160, "height": 90, "duration": 1.0, "bitrate": 100000,
            "is_hdr": false, "hdr_type": null, "color_transfer": "", "color_primaries": "",
            "color_space": "", "bit_depth": 8, "audio_channels": "1", "audio_layout": "mono",
            "has_stereo_track": false, "has_surround_track": false,
            "action": "needs_conversion", "conversion_params": null,
            "processing_version": "1.0.0", "conversion_count": 0,
            "last_conversion_duration": null
        })
    };
    let legacy = serde_json::json!({
        "1111": entry(&a, "h264", 0.0),
        "2222": entry(&b, "hevc", 0.0),
        // c.mkv changed since the legacy tool saw it: its facts must not be used.
        "3333": entry(&c, "hevc", -86400.0),
        "4444": {"file_name": "gone.mkv", "file_size": 1, "file_mtime": 1.0,
                 "codec_video": "h264", "action": "skip", "conversion_count": 1}
    });
    fs::write(
        lib.join(CACHE_FILE),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();

    let probe = CountingFfprobe::new();
    let events = dry_run(&probe, "host-a", lib, &[]);
    assert_eq!(
        probe.calls().len(),
        1,
        "only the stale entry is probed: {:#?}",
        probe.calls()
    );
    assert_eq!(probe.calls_on(&c), 1);
    assert_eq!(planned(&events, &a)["action"], "convert");
    assert_eq!(planned(&events, &b)["reason"], "already_efficient");
    assert_eq!(
        planned(&events, &c)["codec"],
        "h264",
        "c.mkv's own probe, not the stale entry"
    );
    assert!(of_kind(&events, "warning").is_empty(), "{events:#?}");

    // Rewritten in the new format, keeping what the legacy tool knew.
    let cache = read_cache(lib);
    assert_eq!(cache["media_converter"]["version"], 1);
    let files = cache["files"].as_object().unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["a.mkv", "b.mkv", "c.mkv"],
        "gone.mkv is gone"
    );
    assert_eq!(files["a.mkv"]["facts"], "legacy");
    assert_eq!(files["a.mkv"]["info"]["streams"][0]["codec"], "h264");
    assert_eq!(files["a.mkv"]["legacy"]["action"], "needs_conversion");
    assert_eq!(files["b.mkv"]["info"]["streams"][0]["codec"], "hevc");
    assert!(
        files["c.mkv"].get("facts").is_none(),
        "c.mkv has ffprobe's facts"
    );

    // A real run may decide from legacy facts, but converts only what it fully probed; a
    // build replaces legacy facts with ffprobe's.
    build(&probe, "host-a", lib);
    assert_eq!(probe.calls_on(&a), 1);
    assert_eq!(probe.calls_on(&b), 1);
    let cache = read_cache(lib);
    assert!(cache["files"]["a.mkv"].get("facts").is_none());
    assert_eq!(
        cache["files"]["a.mkv"]["info"]["streams"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        cache["files"]["a.mkv"]["legacy"]["action"],
        "needs_conversion"
    );
}

#[test]
fn a_corrupt_cache_is_set_aside_reported_once_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    h264_10bit_mkv(&lib.join("a.mkv"));
    age_all(lib);
    let garbage = b"{\"version\": 1, \"files\": {\"a.mkv\": {\"size\": tru";
    fs::write(lib.join(CACHE_FILE), garbage).unwrap();

    // `cache stats` (which `status` and the dashboard share) names it, and only reads.
    let probe = CountingFfprobe::new();
    let (out, events) = run(
        &probe,
        "host-a",
        &[os("cache"), os("stats"), lib.as_os_str()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warnings = of_kind(&events, "warning");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["file"], lib.join(CACHE_FILE).to_str().unwrap());
    assert_eq!(of_kind(&events, "cache_stats")[0]["unknown"]["files"], 1);
    assert_eq!(fs::read(lib.join(CACHE_FILE)).unwrap(), garbage);

    let events = dry_run(&probe, "host-a", lib, &[]);
    let warnings = of_kind(&events, "warning");
    assert_eq!(warnings.len(), 1, "reported once: {warnings:#?}");
    assert!(
        warnings[0]["message"].as_str().unwrap().contains("corrupt"),
        "{warnings:#?}"
    );
    assert_eq!(planned(&events, &lib.join("a.mkv"))["action"], "convert");

    let aside: Vec<PathBuf> = fs::read_dir(lib)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_string_lossy()
                .contains(".mediabox_cache.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(&aside[0]).unwrap(), garbage);
    assert_eq!(
        read_cache(lib)["files"]["a.mkv"]["info"]["streams"][0]["codec"],
        "h264"
    );

    let events = dry_run(&probe, "host-a", lib, &[]);
    assert!(of_kind(&events, "warning").is_empty(), "{events:#?}");
    assert_eq!(probe.calls().len(), 1);
}

#[cfg(unix)]
#[test]
fn the_failure_limit_holds_across_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    fs::create_dir(&lib).unwrap();
    let other = dir.path().join("other");
    std::os::unix::fs::symlink(&lib, &other).unwrap();
    let bad = lib.join("bad.mkv");
    fs::write(&bad, b"this is not a video").unwrap();
    hevc_mkv(&lib.join("fine.mkv"));
    age_all(&lib);

    let probe = CountingFfprobe::new();
    let convert = |host: &str, root: &Path, extra: &[&str]| {
        let mut args = vec![os("--dir"), root.as_os_str()];
        args.extend(extra.iter().map(|a| os(a)));
        run(&probe, host, &args)
    };
    for (attempt, (host, root)) in [("host-a", &lib), ("host-b", &other), ("host-c", &lib)]
        .into_iter()
        .enumerate()
    {
        let (out, events) = convert(host, root, &[]);
        assert_eq!(out.status.code(), Some(1), "{events:#?}");
        assert_eq!(of_kind(&events, "failed").len(), 1, "{events:#?}");
        let failed = &read_cache(&lib)["files"]["bad.mkv"]["failed"];
        assert_eq!(failed["attempts"], attempt as u64 + 1);
        assert_eq!(failed["host"], host);
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("ffprobe cannot read it")
        );
    }
    let probes_on_bad = probe.calls_on(&bad) + probe.calls_on(&other.join("bad.mkv"));
    assert_eq!(probes_on_bad, 3);

    // A fourth host skips it, says why, and runs no ffprobe at all.
    let calls = probe.calls().len();
    let (out, events) = convert("host-d", &other, &[]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let skip = of_kind(&events, "skipped")
        .into_iter()
        .find(|e| e["file"] == other.join("bad.mkv").to_str().unwrap())
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(skip["reason"], "too_many_failures");
    assert_eq!(skip["host"], "host-c");
    assert!(
        skip["detail"].as_str().unwrap().contains("failed 3 times"),
        "{skip}"
    );
    assert_eq!(probe.calls().len(), calls);

    // --retry-failed looks again, and the count goes on.
    let (out, _) = convert("host-d", &lib, &["--retry-failed"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(probe.calls().len(), calls + 1);
    assert_eq!(
        read_cache(&lib)["files"]["bad.mkv"]["failed"]["attempts"],
        4
    );
}

/// Real processes, released at the same instant into the cache write, many times: no entry
/// may be lost.
#[cfg(unix)]
#[test]
fn many_processes_updating_one_cache_lose_no_entry() {
    use std::process::Stdio;
    use std::time::Instant;
    const PROCESSES: usize = 12;
    const ROUNDS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    fs::create_dir(&lib).unwrap();
    let first = lib.join("f00.mkv");
    h264_10bit_mkv(&first);
    let files: Vec<PathBuf> = (0..PROCESSES)
        .map(|i| {
            let path = lib.join(format!("f{i:02}.mkv"));
            if i > 0 {
                fs::hard_link(&first, &path).unwrap();
            }
            path
        })
        .collect();
    age_all(&lib);

    // An ffprobe that probes at once but answers only when the test says go, so that every
    // process reaches its cache write at the same moment.
    let gate = dir.path().join("gate");
    fs::create_dir(&gate).unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let real = which::which("ffprobe").unwrap();
    write_script(
        &bin.join("ffprobe"),
        &format!(
            "#!/bin/sh\nout=$('{real}' \"$@\"); rc=$?\ntouch '{gate}/ready.'$$\n\
             while [ ! -e '{gate}/go' ]; do sleep 0.005; done\nprintf '%s' \"$out\"\nexit $rc\n",
            real = real.display(),
            gate = gate.display()
        ),
    );
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();

    for round in 0..ROUNDS {
        let _ = fs::remove_file(lib.join(CACHE_FILE));
        for entry in fs::read_dir(&gate).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let children: Vec<_> = files
            .iter()
            .map(|file| {
                cmd()
                    .env("PATH", &path)
                    .arg("--file")
                    .arg(file)
                    .args(["--dry-run", "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while fs::read_dir(&gate).unwrap().count() < PROCESSES {
            assert!(
                Instant::now() < deadline,
                "round {round}: the probes never finished"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        fs::write(gate.join("go"), b"").unwrap();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let events = events(&out);
            assert!(
                of_kind(&events, "warning").is_empty(),
                "round {round}: {events:#?}"
            );
        }
        let cache = read_cache(&lib);
        let names: Vec<&String> = cache["files"].as_object().unwrap().keys().collect();
        assert_eq!(
            names.len(),
            PROCESSES,
            "round {round}: entries lost: {names:?}"
        );
        let leftovers: Vec<_> = fs::read_dir(&lib)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mediabox_cache.json."))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
    }
}

#[test]
fn stats_report_codecs_history_and_work_left() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    small_library(lib);
    let probe = CountingFfprobe::new();
    let stats = |probe: &CountingFfprobe| {
        let (out, events) = run(
            probe,
            "host-a",
            &[os("cache"), os("stats"), lib.as_os_str()],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        of_kind(&events, "cache_stats")[0].clone()
    };
    let cold = stats(&probe);
    assert_eq!(cold["files"]["files"], 4);
    assert_eq!(cold["unknown"]["files"], 4);
    assert_eq!(probe.calls().len(), 0, "stats never probe");

    build(&probe, "host-a", lib);
    let warm = stats(&probe);
    assert_eq!(warm["unknown"]["files"], 0);
    assert_eq!(warm["by_codec"]["h264"]["files"], 2);
    assert_eq!(warm["by_codec"]["hevc"]["files"], 1);
    assert_eq!(warm["by_codec"]["mpeg4"]["files"], 1);
    assert_eq!(warm["by_container"]["avi"]["files"], 1);
    assert_eq!(warm["candidates"]["files"], 3);
    let total = warm["files"]["bytes"].as_u64().unwrap();
    let saving = warm["estimated_saving_bytes"].as_u64().unwrap();
    assert!(saving > 0 && saving < total, "{warm}");

    let human = cmd().args(["cache", "stats"]).arg(lib).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("h264") && l.contains("2 files")),
        "{text}"
    );
    assert!(text.contains("candidates"), "{text}");
}

#[test]
fn a_real_run_records_conversions_and_not_smaller_for_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    h264_aac_srt_mkv(&lib.join("a.mkv"));
    avi(&lib.join("old.avi"));
    age_all(lib);
    let probe = CountingFfprobe::new();

    // Nothing can be 99% smaller: both are kept, and remembered as not worth it.
    let (out, events) = run(
        &probe,
        "host-a",
        &[os("--dir"), lib.as_os_str(), os("--min-savings"), os("99")],
    );
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(of_kind(&events, "skipped").len(), 2, "{events:#?}");
    assert_eq!(
        read_cache(lib)["files"]["a.mkv"]["not_smaller"]["host"],
        "host-a"
    );
    // Under the same bar (a lower one that the new file meets tries again:
    // tests/min_savings_history.rs).
    let same_bar = [os("--dir"), lib.as_os_str(), os("--min-savings"), os("99")];
    let (_, events) = run(&probe, "host-b", &same_bar);
    assert!(
        of_kind(&events, "converting").is_empty(),
        "host-b retried: {events:#?}"
    );
    let skip = of_kind(&events, "skipped")[0];
    assert_eq!(
        (skip["reason"].as_str(), skip["host"].as_str()),
        (Some("not_smaller"), Some("host-a"))
    );

    // New content clears the verdict; the conversion is recorded under the output's name.
    fs::remove_file(lib.join("a.mkv")).unwrap();
    fs::remove_file(lib.join("old.avi")).unwrap();
    avi(&lib.join("old.avi"));
    set_mtime(
        &lib.join("old.avi"),
        SystemTime::now() - Duration::from_secs(7200),
    );
    let (out, events) = run(&probe, "host-b", &[os("--dir"), lib.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    let cache = read_cache(lib);
    let files = cache["files"].as_object().unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), ["old.mkv"], "{cache:#}");
    let converted = &files["old.mkv"]["converted"];
    assert_eq!(converted["host"], "host-b");
    assert_eq!(converted["encoder"], "libx265");
    assert_eq!(converted["from"], "old.avi");
    let after = fs::metadata(lib.join("old.mkv")).unwrap().len();
    assert_eq!(converted["after_bytes"], after);
    assert!(converted["before_bytes"].as_u64().unwrap() > after);
    assert!(converted["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(files["old.mkv"]["size"], after);

    // The verified output's facts were recorded with the conversion: no probe needed.
    let before = probe.calls().len();
    let events = dry_run(&probe, "host-c", lib, &[]);
    assert_eq!(
        planned(&events, &lib.join("old.mkv"))["reason"],
        "already_efficient"
    );
    let events = dry_run(&probe, "host-c", lib, &[]);
    assert_eq!(
        planned(&events, &lib.join("old.mkv"))["reason"],
        "already_efficient"
    );
    assert_eq!(probe.calls().len(), before, "{:?}", probe.calls());
    let stats = run(
        &probe,
        "host-c",
        &[os("cache"), os("stats"), lib.as_os_str()],
    )
    .1;
    let stats = of_kind(&stats, "cache_stats")[0];
    assert_eq!(stats["converted"], 1);
    assert!(stats["saved_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn order_puts_the_biggest_saving_first_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    long_h264_mkv(&lib.join("a small.mkv"), 1, "160x90");
    long_h264_mkv(&lib.join("b big.mkv"), 3, "320x180");
    long_h264_mkv(&lib.join("c medium.mkv"), 2, "160x90");
    age_all(lib);
    set_mtime(
        &lib.join("c medium.mkv"),
        SystemTime::now() - Duration::from_secs(600),
    );
    let probe = CountingFfprobe::new();
    let order = |extra: &[&str]| -> Vec<String> {
        of_kind(&dry_run(&probe, "host-a", lib, extra), "planned")
            .iter()
            .map(|e| {
                Path::new(e["file"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(order(&[]), ["b big.mkv", "c medium.mkv", "a small.mkv"]);
    assert_eq!(
        order(&["--order", "name"]),
        ["a small.mkv", "b big.mkv", "c medium.mkv"]
    );
    assert_eq!(order(&["--order", "newest"])[0], "c medium.mkv");
    assert_eq!(order(&["--order", "oldest"])[2], "c medium.mkv");
}

#[test]
fn cache_build_without_ffprobe_or_directory_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd()
        .args(["cache", "build"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = Command::new(bin())
        .args(["cache", "build"])
        .arg(dir.path())
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("install ffmpeg"), "{}", stderr(&out));
}

#[test]
fn a_dry_run_estimates_from_what_the_library_has_converted() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path();
    for name in ["a.mkv", "b.mkv", "c.mkv"] {
        long_h264_mkv(&lib.join(name), 2, "320x240");
    }
    age_all(lib);
    let probe = CountingFfprobe::new();
    let (out, events) = run(
        &probe,
        "host-a",
        &[
            os("--dir"),
            lib.as_os_str(),
            os("--preset"),
            os("ultrafast"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{events:#?}\n{}", stderr(&out));
    let cache = read_cache(lib);
    let (mut before, mut after) = (0u64, 0u64);
    for name in ["a.mkv", "b.mkv", "c.mkv"] {
        let converted = &cache["files"][name]["converted"];
        assert_eq!(
            converted["source"],
            serde_json::json!({"codec": "h264", "width": 320, "height": 240}),
            "{cache:#}"
        );
        before += converted["before_bytes"].as_u64().unwrap();
        after += converted["after_bytes"].as_u64().unwrap();
    }

    // A new file of the same codec and size class is estimated from those three.
    let new = lib.join("new.mkv");
    long_h264_mkv(&new, 3, "320x240");
    age(&new);
    let events = dry_run(&probe, "host-a", lib, &[]);
    let size = fs::metadata(&new).unwrap().len();
    let expected = (size as f64 * after as f64 / before as f64) as u64;
    let estimated = planned(&events, &new)["estimated_bytes"].as_u64().unwrap();
    assert!(
        estimated.abs_diff(expected) <= 1,
        "estimated {estimated}, the library's ratio gives {expected} ({after}/{before} of {size})"
    );
}

/// A warm dry run reads each directory's cache with one open, and takes the cache's stamp
/// (what tells another writer's change) from the very file it read: no stat of the cache by
/// its name, which walks the whole path again from the root, and no seek; no ffprobe either.
/// strace shows each call with the file its descriptor is open on.
#[cfg(target_os = "linux")]
#[test]
fn a_warm_dry_run_opens_each_cache_once_and_stats_none_by_name() {
    if which::which("strace").is_err() {
        eprintln!("!!! SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    const DIRS: usize = 3;
    const PER_DIR: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    let (mkv, hevc) = (dir.path().join("h264.mkv"), dir.path().join("hevc.mkv"));
    h264_aac_srt_mkv(&mkv);
    hevc_mkv(&hevc);
    for d in 0..DIRS {
        let season = library.join(format!("Season {d}"));
        fs::create_dir_all(&season).unwrap();
        fs::copy(&mkv, season.join("Episode 1.mkv")).unwrap();
        fs::copy(&hevc, season.join("Episode 2.mkv")).unwrap();
    }
    age_all(&library);
    let probe = CountingFfprobe::new();
    build(&probe, "alpha", &library);
    let probed = probe.calls().len();
    assert_eq!(probed, DIRS * PER_DIR, "the cold build probes every file");

    let trace = dir.path().join("cache.trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-o"])
        .arg(&trace)
        .args(["-e", "trace=openat,statx,newfstatat,lseek"])
        .arg(bin())
        .env("PATH", probe.path_var())
        .env("NO_COLOR", "1")
        .args(["--json", "--dry-run", "--dir"])
        .arg(&library)
        .output()
        .expect("run under strace");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = events(&out);
    assert_eq!(
        probe.calls().len(),
        probed,
        "a warm dry run runs no ffprobe"
    );
    assert_eq!(
        of_kind(&events, "planned").len(),
        DIRS * PER_DIR,
        "{events:#?}"
    );

    let trace = fs::read_to_string(&trace).unwrap();
    // By name: the path in quotes; by descriptor: the path strace names after the number.
    let calls = |call: &str, on: &str| {
        trace
            .lines()
            .filter(|l| l.contains(&format!("{call}(")) && l.contains(on))
            .count()
    };
    let (by_name, by_fd) = (".mediabox_cache.json\"", ".mediabox_cache.json>");
    assert_eq!(calls("openat", by_name), DIRS, "one open a cache:\n{trace}");
    assert_eq!(
        calls("statx", by_name) + calls("newfstatat", by_name),
        0,
        "a stat of a cache by its name:\n{trace}"
    );
    assert_eq!(calls("lseek", by_fd), 0, "a seek in a cache:\n{trace}");
    assert!(
        calls("statx", by_fd) <= 2 * DIRS,
        "more than two stats of an open cache:\n{trace}"
    );
}
