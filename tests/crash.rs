//! Crashes and pauses of a real converting process, and what every other process
//! then does: the original (or a verified new file) is always in place, the same
//! host takes over at once, another host only after `--lock-timeout`, `locks clean`
//! leaves nothing behind, a paused holder never swaps after a takeover, and a host
//! whose clock is hours off never breaks a lock that is heartbeating.
//!
//! A fake ffmpeg first on `PATH` holds the converter at an exact moment (right after
//! the claim, right after verification): it runs the real ffmpeg for everything
//! else. Mid-transcode is the real ffmpeg on a longer clip. The converter's children
//! die with it (`PR_SET_PDEATHSIG`), which the tests check too.
#![cfg(target_os = "linux")]

mod common;
mod workload;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::FakeClock;
use media_converter::identity::HostIdentity;
use media_converter::lock::{Acquire, LockRecord, LockSettings, Locker, lock_path};
use serde_json::Value;
use workload::{Launch, Process, debris, make_clips, video_codec};

/// The thresholds of every process here: stale after 3 s without a heartbeat.
const SHORT_LOCKS: &[&str] = &["--lock-timeout", "3s", "--heartbeat", "1s"];
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
const RUN: Duration = Duration::from_secs(60);

/// One scenario at a time: these tests time heartbeats against a 3 s timeout, and
/// three of them converting at once on two cores would blur that.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the fake ffmpeg stops the converter.
#[derive(Debug, Clone, Copy)]
enum Fake {
    /// The encode (`...partial...` output) never starts: the process sits right
    /// after its claim.
    AfterClaim,
    /// The encode starts after `secs` seconds of sleep, then runs for real.
    SlowEncode(u32),
    /// The decode check (`-f null`) runs for real, then never returns: verified,
    /// not yet swapped.
    AfterVerify,
    /// As `AfterVerify`, but returns once the file `go` appears.
    AfterVerifyUntilGo,
}

/// A library with one real clip, a place for logs, and a fake ffmpeg.
struct Scene {
    _temp: tempfile::TempDir,
    library: PathBuf,
    logs: PathBuf,
    fakebin: PathBuf,
    marks: PathBuf,
    clip: PathBuf,
    original: Vec<u8>,
}

impl Scene {
    /// One 1 s clip, or (for `long`) a clip long enough to catch its transcode
    /// mid-way.
    fn new(long: bool) -> Scene {
        let temp = tempfile::tempdir().expect("temp dir");
        let library = temp.path().join("lib");
        let logs = temp.path().join("logs");
        let fakebin = temp.path().join("fakebin");
        let marks = temp.path().join("marks");
        for dir in [&logs, &fakebin, &marks] {
            fs::create_dir_all(dir).expect("scene dirs");
        }
        let clip = if long {
            fs::create_dir_all(&library).expect("library");
            let clip = library.join("clip-00.mkv");
            let status = std::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
                .args(["-f", "lavfi", "-i", "testsrc2=s=320x180:r=24:d=40"])
                .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8"])
                .arg(&clip)
                .status()
                .expect("ffmpeg must be installed for the tests");
            assert!(status.success());
            clip
        } else {
            let names = make_clips(&library, 1);
            library.join(&names[0])
        };
        let original = fs::read(&clip).expect("read the clip");
        Scene {
            _temp: temp,
            library,
            logs,
            fakebin,
            marks,
            clip,
            original,
        }
    }

    fn lock(&self) -> PathBuf {
        lock_path(&self.clip).expect("lock path")
    }

    fn mark(&self, name: &str) -> PathBuf {
        self.marks.join(name)
    }

    /// Installs the fake ffmpeg for `fake`.
    fn fake(&self, fake: Fake) {
        let real = which::which("ffmpeg").expect("ffmpeg must be installed for the tests");
        let marks = self.marks.display();
        let body = match fake {
            Fake::AfterClaim => format!(
                r#"if [[ "$*" == *.partial.* ]]; then echo $$ > "{marks}/encode.pid"; exec sleep 1000; fi"#
            ),
            Fake::SlowEncode(secs) => {
                format!(
                    r#"if [[ "$*" == *.partial.* ]]; then touch "{marks}/encoding"; sleep {secs}; fi"#
                )
            }
            Fake::AfterVerify => format!(
                r#"if [[ "$*" == *"-enc_time_base:v -1 -f null -"* ]]; then "{real}" "$@" || exit $?; echo $$ > "{marks}/verified.pid"; exec sleep 1000; fi"#,
                real = real.display()
            ),
            Fake::AfterVerifyUntilGo => format!(
                r#"if [[ "$*" == *"-enc_time_base:v -1 -f null -"* ]]; then "{real}" "$@" || exit $?; echo $$ > "{marks}/verified.pid"; until [[ -e "{marks}/go" ]]; do sleep 0.05; done; exit 0; fi"#,
                real = real.display()
            ),
        };
        let script = format!(
            "#!/bin/bash\n# Fake ffmpeg for tests/crash.rs: {fake:?}\n{body}\nexec \"{}\" \"$@\"\n",
            real.display()
        );
        let path = self.fakebin.join("ffmpeg");
        fs::write(&path, script).expect("write the fake ffmpeg");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Starts a converter as `host`; with the fake ffmpeg first on PATH if asked.
    fn start(
        &self,
        host: &str,
        tag: &str,
        args: &[&str],
        faked: bool,
        env: &[(&str, &str)],
    ) -> Process {
        let mut all: Vec<&str> = Launch::DEFAULT_ARGS.to_vec();
        all.extend_from_slice(args);
        let launch = Launch {
            logs: &self.logs,
            args: &all,
            path_first: faked.then_some(self.fakebin.as_path()),
            env,
        };
        launch.start(host, &self.library, tag)
    }

    /// Runs a converter to its end.
    fn run(&self, host: &str, tag: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
        self.start(host, tag, args, false, &[]).finish(RUN)
    }

    /// Runs `locks clean` as `host` and returns its JSON events.
    fn clean(&self, host: &str, args: &[&str]) -> Vec<Value> {
        let out = self.clean_output(host, args);
        assert!(
            out.status.success(),
            "locks clean failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Runs `locks clean --json` as `host`, whatever its exit.
    fn clean_output(&self, host: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_media-converter"))
            .args(["locks", "clean"])
            .arg(&self.library)
            .arg("--json")
            .args(args)
            .env("MEDIA_CONVERTER_HOSTNAME", host)
            .env("MEDIA_CONVERTER_HOST_ID", format!("id-{host}"))
            .output()
            .expect("run locks clean")
    }

    fn assert_original_intact(&self, when: &str) {
        let now = fs::read(&self.clip).unwrap_or_default();
        assert!(now == self.original, "the original changed {when}");
    }

    /// Waits for a file to appear (the fake's marks, a temp output).
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn() -> bool,
        process: &mut Process,
    ) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                process.try_wait().is_none(),
                "the converter exited before {what}: {}\n{}",
                process.stderr(),
                process.notable_events()
            );
            assert!(Instant::now() < deadline, "no {what} within {timeout:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock_mtime(&self) -> SystemTime {
        fs::metadata(self.lock())
            .and_then(|meta| meta.modified())
            .expect("the lock exists")
    }

    /// Sleeps until the lock has not been stamped for longer than the timeout.
    fn wait_until_stale(&self) {
        let stale_at = self.lock_mtime() + LOCK_TIMEOUT + Duration::from_millis(300);
        if let Ok(left) = stale_at.duration_since(SystemTime::now()) {
            thread::sleep(left);
        }
    }

    /// The temp outputs beside the clip.
    fn temp_outputs(&self) -> Vec<PathBuf> {
        fs::read_dir(&self.library)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.to_string_lossy().contains(".partial."))
            .collect()
    }
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn skipped_as_locked(events: &[Value]) -> bool {
    of_kind(events, "skipped")
        .iter()
        .any(|e| e["reason"] == "locked")
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie of ours does not count (we never reap
    // the fake's children, init does).
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    matches!(state, Some(Some(state)) if state != 'Z')
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: plain syscall on a child we spawned and have not reaped.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// SIGKILLs `process` and checks that the child the fake left sleeping (its pid in
/// `mark`) died with it.
fn kill_and_check_child_died(process: &mut Process, mark: &Path) {
    let child: i32 = fs::read_to_string(mark)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .expect("the fake recorded its pid");
    process.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(child) {
        assert!(
            Instant::now() < deadline,
            "ffmpeg (pid {child}) outlived the converter"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The end every scenario must reach: the file converted exactly once overall, by
/// the runs given, and nothing of the protocol left.
fn assert_converted_once_and_clean(scene: &Scene, runs: &[&[Value]]) {
    let converting: usize = runs.iter().map(|r| of_kind(r, "converting").len()).sum();
    let converted: usize = runs.iter().map(|r| of_kind(r, "converted").len()).sum();
    assert_eq!((converting, converted), (1, 1), "{runs:#?}");
    assert_eq!(video_codec(&scene.clip), "hevc");
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

#[test]
fn killed_right_after_its_claim_the_same_host_takes_over_at_once() {
    let _serial = serial();
    let scene = Scene::new(false);
    scene.fake(Fake::AfterClaim);
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &[]);
    scene.wait_for(
        "the encode",
        RUN,
        || scene.mark("encode.pid").exists(),
        &mut holder,
    );
    assert!(scene.lock().exists());
    kill_and_check_child_died(&mut holder, &scene.mark("encode.pid"));
    scene.assert_original_intact("after the kill");

    // Another host must wait for the timeout; `locks clean` leaves the live lock.
    let (code, other) = scene.run("host-2", "other", SHORT_LOCKS);
    assert_eq!(code, Some(0));
    assert!(skipped_as_locked(&other), "{other:#?}");
    let cleaned = scene.clean("host-2", SHORT_LOCKS);
    assert_eq!(
        cleaned.last().map(|e| &e["live_locks"]),
        Some(&Value::from(1))
    );
    assert!(scene.lock().exists());
    scene.assert_original_intact("while another host waits");

    // What ffmpeg had written by the kill: a partial output named with the dead claim's id.
    let dead_id = LockRecord::parse(&fs::read(scene.lock()).expect("the lock"))
        .ok()
        .and_then(|record| record.lock_id)
        .expect("the dead claim's id");
    let partial = scene
        .library
        .join(format!(".clip-00.mkv.mediabox-{dead_id}.partial.mkv"));
    fs::write(&partial, vec![0u8; 64 * 1024]).expect("write the partial output");

    // Its own host sees the pid gone: at once, even with the default 30 min timeout
    // that would keep every other host away; and breaking the dead lock removes the dead
    // run's partial output (it stayed before, until someone ran `locks clean`).
    let started = Instant::now();
    let (code, same) = scene.run("host-1", "same", &[]);
    assert_eq!(code, Some(0), "{same:#?}");
    assert!(started.elapsed() < RUN);
    assert!(!partial.exists(), "the dead run's partial output is left");
    assert_converted_once_and_clean(&scene, &[&other, &same]);
}

#[test]
fn killed_mid_transcode_another_host_takes_over_only_after_the_timeout() {
    let _serial = serial();
    let scene = Scene::new(true);
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, false, &[]);
    scene.wait_for(
        "a growing temp output",
        RUN,
        || {
            scene
                .temp_outputs()
                .iter()
                .any(|path| fs::metadata(path).is_ok_and(|meta| meta.len() > 4096))
        },
        &mut holder,
    );
    let temp = scene.temp_outputs().remove(0);
    let needle = temp
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(ffmpeg_running_on(&needle), "ffmpeg is transcoding");
    holder.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ffmpeg_running_on(&needle) {
        assert!(Instant::now() < deadline, "ffmpeg outlived the converter");
        thread::sleep(Duration::from_millis(20));
    }
    scene.assert_original_intact("after the kill");

    let (code, early) = scene.run("host-2", "early", SHORT_LOCKS);
    assert_eq!(code, Some(0));
    assert!(skipped_as_locked(&early), "{early:#?}");
    scene.assert_original_intact("while another host waits");

    scene.wait_until_stale();
    let (code, late) = scene.run("host-2", "late", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{late:#?}");
    assert_eq!(of_kind(&late, "converted").len(), 1, "{late:#?}");
    // Breaking the dead run's lock removed its own partial output (before, it stayed,
    // hidden, until someone ran `locks clean`).
    assert!(
        !temp.exists(),
        "the dead run's output is left: {}",
        temp.display()
    );
    let cleaned = scene.clean("host-2", SHORT_LOCKS);
    assert!(
        cleaned.iter().all(|e| e["event"] == "summary"),
        "nothing left for locks clean: {cleaned:#?}"
    );
    assert_converted_once_and_clean(&scene, &[&early, &late]);
}

#[test]
fn killed_after_verification_the_original_stays_and_locks_clean_tidies_up() {
    let _serial = serial();
    let scene = Scene::new(false);
    scene.fake(Fake::AfterVerify);
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &[]);
    scene.wait_for(
        "verification",
        RUN,
        || scene.mark("verified.pid").exists(),
        &mut holder,
    );
    kill_and_check_child_died(&mut holder, &scene.mark("verified.pid"));
    scene.assert_original_intact("after a kill between verification and swap");
    assert_eq!(scene.temp_outputs().len(), 1, "the verified output waits");

    let (code, early) = scene.run("host-2", "early", SHORT_LOCKS);
    assert_eq!(code, Some(0));
    assert!(skipped_as_locked(&early), "{early:#?}");

    scene.wait_until_stale();
    let cleaned = scene.clean("host-2", SHORT_LOCKS);
    let actions: Vec<&str> = cleaned
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"broke_stale_lock"), "{cleaned:#?}");
    assert!(actions.contains(&"removed_temp_output"), "{cleaned:#?}");
    assert_eq!(debris(&scene.library), Vec::<String>::new());
    scene.assert_original_intact("after locks clean");

    let (code, late) = scene.run("host-2", "late", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{late:#?}");
    assert_converted_once_and_clean(&scene, &[&early, &late]);
}

#[test]
fn a_paused_holder_never_swaps_after_another_host_took_over() {
    let _serial = serial();
    let scene = Scene::new(false);
    scene.fake(Fake::AfterVerifyUntilGo);
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &[]);
    scene.wait_for(
        "verification",
        RUN,
        || scene.mark("verified.pid").exists(),
        &mut holder,
    );
    // Paused right before its swap, long past the timeout.
    signal(holder.pid(), libc::SIGSTOP);
    scene.wait_until_stale();
    let (code, other) = scene.run("host-2", "other", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{other:#?}");
    assert_eq!(of_kind(&other, "converted").len(), 1, "{other:#?}");
    let theirs = fs::read(&scene.clip).expect("the new file");
    assert_ne!(theirs, scene.original);

    signal(holder.pid(), libc::SIGCONT);
    fs::write(scene.mark("go"), b"").expect("let the fake return");
    let (code, held) = holder.finish(RUN);
    assert_eq!(
        code,
        Some(1),
        "the paused holder must fail its file: {held:#?}"
    );
    assert!(of_kind(&held, "converted").is_empty(), "{held:#?}");
    let failed = of_kind(&held, "failed");
    assert!(
        failed.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|error| error.contains("lost the claim"))),
        "{held:#?}"
    );
    assert!(
        fs::read(&scene.clip).expect("the new file") == theirs,
        "the other host's result stands"
    );
    // Its failure came from the broken claim, not the file: not counted against it.
    let cache = fs::read(scene.library.join(".mediabox_cache.json")).unwrap_or_default();
    let cache: Value = serde_json::from_slice(&cache).unwrap_or_default();
    let entry = &cache["files"]["clip-00.mkv"];
    assert!(entry.is_object(), "no cache entry: {cache:#}");
    assert!(
        entry["failed"].is_null(),
        "a failure was recorded: {entry:#}"
    );
    // The paused holder had emitted `converting` too: two encodes, one swap.
    assert_eq!(of_kind(&held, "converting").len(), 1);
    assert_eq!(video_codec(&scene.clip), "hevc");
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

#[test]
fn a_heartbeating_holder_is_never_broken_by_hosts_whose_clocks_are_hours_off() {
    let _serial = serial();
    let scene = Scene::new(false);
    // The encode takes 6 s, twice the lock timeout: only heartbeats keep the claim.
    scene.fake(Fake::SlowEncode(6));
    let faketime = FakeClock::find();
    let slow = match &faketime {
        Some(clock) => clock.env("-5h"),
        None => {
            // Past the harness's capture: a weaker check must not pass unseen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** NOTE: libfaketime not installed (apt-get install libfaketime): the \
                 holder runs on the true clock; the breakers' clocks are still 5 h fast ***\n"
            );
            Vec::new()
        }
    };
    let fast = faketime
        .as_ref()
        .map_or_else(Vec::new, |clock| clock.env("+5h"));
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &slow);
    scene.wait_for(
        "the encode",
        RUN,
        || scene.mark("encoding").exists(),
        &mut holder,
    );

    // In-process breaker through the lock module's clock seam: 5 h fast, and
    // impatient (its own stale_after is 0.1 s; the owner declared 3 s).
    let breaker = Locker::new(
        HostIdentity {
            hostname: "skewed".into(),
            host_id: "id-skewed".into(),
        },
        LockSettings {
            stale_after: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            ..LockSettings::default()
        },
    )
    .with_wall_clock(|| SystemTime::now() + Duration::from_secs(5 * 3600));
    let until = Instant::now() + Duration::from_millis(5500);
    let (mut attempts, mut cli_runs, mut skew_seen) = (0, 0, false);
    while Instant::now() < until && holder.try_wait().is_none() {
        match breaker.try_acquire(&scene.clip).expect("try_acquire") {
            Acquire::Acquired(guard) => {
                let _ = guard.release();
                panic!("a host with a skewed clock broke a heartbeating lock");
            }
            Acquire::Held(who) => assert!(!who.verdict.is_stale(), "{who}"),
        }
        attempts += 1;
        if attempts % 8 == 0 {
            // A real converter whose clock is 5 h fast.
            let (code, events) = scene
                .start(
                    "host-3",
                    &format!("skewed-{attempts}"),
                    SHORT_LOCKS,
                    false,
                    &fast,
                )
                .finish(RUN);
            assert_eq!(code, Some(0));
            assert!(skipped_as_locked(&events), "{events:#?}");
            cli_runs += 1;
        }
        if faketime.is_some() && !skew_seen {
            // The holder's clock is 5 h slow, yet its record's timestamp is the file
            // server's clock (the original tool judges locks by it).
            if let Ok(record) = LockRecord::parse(&fs::read(scene.lock()).unwrap_or_default()) {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                assert!(
                    (record.timestamp - now).abs() < 60.0,
                    "the record's timestamp is not the server's clock: {record:?}"
                );
                skew_seen = record.locked_at.starts_with("20") && record.timestamp_is_servers();
            }
        }
        thread::sleep(Duration::from_millis(150));
    }
    assert!(
        attempts >= 15 && cli_runs >= 1,
        "{attempts} attempts, {cli_runs} runs"
    );
    if faketime.is_some() {
        assert!(skew_seen, "the holder's record was never read");
    }
    let (code, held) = holder.finish(RUN);
    assert_eq!(code, Some(0), "{held:#?}");
    assert_converted_once_and_clean(&scene, &[&held]);
}

/// Whether any ffmpeg process is running whose command line mentions `needle`.
fn ffmpeg_running_on(needle: &str) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        text.split('\0')
            .next()
            .is_some_and(|arg0| arg0.ends_with("ffmpeg"))
            && text.contains(needle)
            && pid_alive(entry.file_name().to_string_lossy().parse().unwrap_or(0))
    })
}

/// `--keep-original` twice on one name (the file was replaced in between): the second run
/// must not replace the file it cannot keep, and `locks clean` must not delete it either.
/// Before, the second run swapped, failed to keep the replaced version aside (the kept name
/// was taken) and `locks clean` then removed that version as a leftover backup.
#[test]
fn keep_original_never_loses_a_replaced_version() {
    let _serial = serial();
    let scene = Scene::new(false);
    let keep = &["--keep-original"];
    let (code, first) = scene.run("host-1", "first", keep);
    assert_eq!(code, Some(0), "{first:#?}");
    assert_eq!(of_kind(&first, "converted").len(), 1, "{first:#?}");
    let kept = scene.library.join(".clip-00.mkv.mediabox-kept");
    assert!(fs::read(&kept).expect("the kept original") == scene.original);

    // The user puts a new version in place.
    let elsewhere = scene.logs.join("new-version");
    let names = make_clips(&elsewhere, 2);
    let new_version = fs::read(elsewhere.join(&names[1])).expect("the new version");
    assert_ne!(new_version, scene.original);
    fs::write(&scene.clip, &new_version).expect("replace the file");

    let (code, second) = scene.run("host-1", "second", keep);
    assert_eq!(code, Some(1), "{second:#?}");
    assert!(of_kind(&second, "converting").is_empty(), "{second:#?}");
    let failed = of_kind(&second, "failed");
    assert!(
        failed.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|error| error.contains("mediabox-kept") && error.contains("move it"))),
        "{second:#?}"
    );
    assert!(fs::read(&scene.clip).unwrap_or_default() == new_version);

    let cleaned = scene.clean("host-1", &[]);
    assert!(
        !cleaned.iter().any(|e| e["action"] == "removed_backup"),
        "{cleaned:#?}"
    );
    assert!(fs::read(&scene.clip).unwrap_or_default() == new_version);
    assert!(fs::read(&kept).unwrap_or_default() == scene.original);
}

/// Makes `name` beside the scene's clip: the clip's video remuxed into another container.
fn remux_beside(scene: &Scene, name: &str) -> PathBuf {
    let path = scene.library.join(name);
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-i"])
        .arg(&scene.clip)
        .args(["-c", "copy", "-bsf:v", "h264_mp4toannexb"])
        .arg(&path)
        .status()
        .expect("ffmpeg must be installed for the tests");
    assert!(status.success());
    path
}

/// `clip-01.avi` and `clip-01.ts` both become `clip-01.mkv`, a name that does not exist yet
/// (a taken name is a plan-time skip): the claim must cover the new name too. Before, a
/// second host encoded the ts while the first was about to place the avi's output there,
/// and one of the two films was lost.
#[test]
fn a_conversion_to_a_new_name_claims_that_name_too() {
    let _serial = serial();
    let scene = Scene::new(false);
    let avi = remux_beside(&scene, "clip-01.avi");
    let ts = remux_beside(&scene, "clip-01.ts");
    let ts_bytes = fs::read(&ts).expect("the ts");
    let output = scene.library.join("clip-01.mkv");
    scene.fake(Fake::AfterVerifyUntilGo);
    // The holder converts only the avi (it is given the file alone) and stops after its
    // verification, before it places clip-01.mkv.
    let avi_arg = avi.to_string_lossy().into_owned();
    let holder = std::process::Command::new(env!("CARGO_BIN_EXE_media-converter"))
        .args([
            "--json",
            "--min-age",
            "0s",
            "--preset",
            "ultrafast",
            "--file",
            &avi_arg,
        ])
        .env(
            "PATH",
            format!(
                "{}:{}",
                scene.fakebin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MEDIA_CONVERTER_HOSTNAME", "host-1")
        .env("MEDIA_CONVERTER_HOST_ID", "id-host-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the holder");
    // A failed assertion must not leave the holder waiting for its "go" forever.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut holder = KillOnDrop(holder);
    let deadline = Instant::now() + RUN;
    while !scene.mark("verified.pid").exists() {
        assert!(
            holder.0.try_wait().ok().flatten().is_none(),
            "the holder exited"
        );
        assert!(Instant::now() < deadline, "no verification within {RUN:?}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!output.exists(), "the holder has not placed its output yet");

    let (code, other) = scene.run("host-2", "other", &[]);
    assert_eq!(code, Some(0), "{other:#?}");
    let ts_name = ts.to_string_lossy().into_owned();
    assert!(
        !of_kind(&other, "converting")
            .iter()
            .any(|e| e["file"] == ts_name.as_str()),
        "{other:#?}"
    );
    let ts_skip = of_kind(&other, "skipped")
        .into_iter()
        .find(|e| e["file"] == ts_name.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(ts_skip["reason"], "locked", "{other:#?}");
    assert!(
        ts_skip["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("new name")),
        "{ts_skip:#?}"
    );

    fs::write(scene.mark("go"), b"").expect("let the fake return");
    let status = holder.0.wait().expect("the holder ends");
    assert!(status.success(), "{status:?}");
    assert_eq!(video_codec(&output), "hevc");
    assert!(!avi.exists(), "the avi became clip-01.mkv");
    assert!(
        fs::read(&ts).unwrap_or_default() == ts_bytes,
        "the ts is untouched"
    );
}

/// On a share without hard links (`link()` fails with EPERM, played by strace), a
/// conversion to a new name reserves that name before it renames into it, and an in-place
/// conversion goes through its two renames: both convert, and no other file is touched.
#[test]
fn without_hard_links_both_swaps_convert_and_overwrite_nothing() {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    let avi = remux_beside(&scene, "clip-01.avi");
    let bystander = scene.library.join("clip-01.txt");
    fs::write(&bystander, b"not media").expect("a bystander");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=link,linkat:error=EPERM",
        ])
        .arg(env!("CARGO_BIN_EXE_media-converter"))
        .args([
            "--json",
            "--min-age",
            "0s",
            "--preset",
            "ultrafast",
            "--dir",
        ])
        .arg(&scene.library)
        .env("MEDIA_CONVERTER_HOSTNAME", "host-1")
        .env("MEDIA_CONVERTER_HOST_ID", "id-host-1")
        .output()
        .expect("run under strace");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_eq!(of_kind(&events, "converted").len(), 2, "{events:#?}");
    assert_eq!(video_codec(&scene.clip), "hevc");
    assert_eq!(video_codec(&scene.library.join("clip-01.mkv")), "hevc");
    assert!(!avi.exists());
    assert_eq!(fs::read(&bystander).unwrap_or_default(), b"not media");
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

/// Plays a kernel CIFS client for the lock of `scene`: every write of the holder is
/// restamped with the holder's own clock, `skew` behind the server's, until `stop`.
fn restamp_with_writers_clock(
    lock: PathBuf,
    skew: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> thread::JoinHandle<u32> {
    thread::spawn(move || {
        let mut restamped = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let fresh = fs::metadata(&lock)
                .and_then(|meta| meta.modified())
                .is_ok_and(|mtime| {
                    SystemTime::now()
                        .duration_since(mtime)
                        .is_ok_and(|age| age < Duration::from_secs(60))
                });
            if fresh {
                let stamped = fs::File::options()
                    .write(true)
                    .open(&lock)
                    .and_then(|file| file.set_modified(SystemTime::now() - skew));
                restamped += u32::from(stamped.is_ok());
            }
            thread::sleep(Duration::from_millis(10));
        }
        restamped
    })
}

/// Kernel CIFS stamps a write's mtime with the writer's clock. A holder 2 h slow (the
/// real binary under libfaketime, its lock's mtime restamped as CIFS would) must never
/// be broken by hosts with a true clock or one 2 h fast; once it is killed, another host
/// takes over after the timeout. Before, its live lock was judged "stale: no heartbeat
/// for 2h00m" on first sight.
#[test]
fn a_holder_2h_slow_on_a_share_stamping_the_writers_clock_is_never_broken() {
    let Some(faketime) = FakeClock::find() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED: libfaketime not installed (apt-get install libfaketime)\n"
        );
        return;
    };
    let _serial = serial();
    let (slow, fast) = (faketime.env("-2h"), faketime.env("+2h"));
    let scene = Scene::new(false);
    scene.fake(Fake::SlowEncode(30));
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &slow);
    scene.wait_for(
        "the encode",
        RUN,
        || scene.mark("encoding").exists(),
        &mut holder,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restamper = restamp_with_writers_clock(
        scene.lock(),
        Duration::from_secs(2 * 3600),
        std::sync::Arc::clone(&stop),
    );
    // Hosts with a true clock and one 2 h fast, over more than the timeout.
    let started = Instant::now();
    let mut runs = 0;
    while runs < 3 || started.elapsed() < LOCK_TIMEOUT + Duration::from_secs(1) {
        let env = if runs % 2 == 0 { &[][..] } else { &fast[..] };
        let (code, events) = scene
            .start(
                "host-2",
                &format!("breaker-{runs}"),
                SHORT_LOCKS,
                false,
                env,
            )
            .finish(RUN);
        assert_eq!(code, Some(0), "{events:#?}");
        assert!(skipped_as_locked(&events), "run {runs}: {events:#?}");
        runs += 1;
    }
    // Killed, it stops heartbeating: another host takes over once the timeout has
    // passed on the record's server-clock timestamp, its mtime still 2 h behind.
    holder.kill();
    scene.wait_until_stale();
    thread::sleep(LOCK_TIMEOUT);
    let (code, late) = scene.run("host-2", "late", SHORT_LOCKS);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let restamped = restamper.join().unwrap_or(0);
    assert!(restamped >= 2, "the lock was restamped {restamped} times");
    assert_eq!(code, Some(0), "{late:#?}");
    assert_converted_once_and_clean(&scene, &[&late]);
}

/// Two processes with one machine id and host name in different pid namespaces (Docker
/// with a shared machine id, `unshare --pid`): the holder's pid means nothing outside its
/// namespace, so its live lock must be judged by its heartbeats, not by a pid lookup.
/// Before, the outer process found the pid gone (or another process's) and broke the
/// live lock at once, and `locks clean` removed the holder's verified output.
#[test]
fn a_holder_in_another_pid_namespace_is_never_taken_for_dead() {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED: `unshare --pid --fork --mount-proc` does not work here (needs root)\n"
        );
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    scene.fake(Fake::AfterVerify);
    let mut holder = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_media-converter"))
        .args(["--json", "--min-age", "0s", "--preset", "ultrafast"])
        .args(SHORT_LOCKS)
        .arg("--dir")
        .arg(&scene.library)
        .env(
            "PATH",
            format!(
                "{}:{}",
                scene.fakebin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MEDIA_CONVERTER_HOSTNAME", "host-1")
        .env("MEDIA_CONVERTER_HOST_ID", "id-host-1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the holder in its own pid namespace");
    let deadline = Instant::now() + RUN;
    while !scene.mark("verified.pid").exists() {
        assert!(
            holder.try_wait().ok().flatten().is_none(),
            "the holder exited"
        );
        assert!(Instant::now() < deadline, "no verification within {RUN:?}");
        thread::sleep(Duration::from_millis(20));
    }
    let record = LockRecord::parse(&fs::read(scene.lock()).expect("the lock")).expect("record");
    assert!(record.pid < 10, "pid {} inside the namespace", record.pid);
    let temp = scene.temp_outputs();
    assert_eq!(temp.len(), 1, "the verified output waits");

    // The same machine id and host name, outside the namespace, within the timeout.
    let (code, same) = scene.run("host-1", "same", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{same:#?}");
    assert!(skipped_as_locked(&same), "{same:#?}");
    let cleaned = scene.clean("host-1", SHORT_LOCKS);
    assert_eq!(
        cleaned.last().map(|e| &e["live_locks"]),
        Some(&Value::from(1)),
        "{cleaned:#?}"
    );
    assert!(
        temp[0].exists(),
        "locks clean removed the live holder's output"
    );
    scene.assert_original_intact("while the holder works in its namespace");

    // Killed, its lock goes stale by the timeout, like any other host's.
    let _ = holder.kill();
    let _ = holder.wait();
    scene.wait_until_stale();
    let (code, late) = scene.run("host-1", "late", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{late:#?}");
    assert_converted_once_and_clean(&scene, &[&same, &late]);
}

/// `--min-age` compares a file's mtime with the file server's clock. A host whose clock
/// is 10 min fast (the real binary under libfaketime) must leave alone a file written a
/// minute ago; before, it saw the file 11 min old and converted it mid-download.
#[test]
fn min_age_is_judged_on_the_file_servers_clock() {
    let Some(faketime) = FakeClock::find() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED: libfaketime not installed (apt-get install libfaketime)\n"
        );
        return;
    };
    let scene = Scene::new(false);
    fs::File::options()
        .write(true)
        .open(&scene.clip)
        .and_then(|file| file.set_modified(SystemTime::now() - Duration::from_secs(60)))
        .expect("a file written a minute ago");
    let run = |offset: &str| -> Vec<Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-converter"))
            .args([
                "--json",
                "--min-age",
                "5m",
                "--preset",
                "ultrafast",
                "--dir",
            ])
            .arg(&scene.library)
            .envs(faketime.env(offset))
            .output()
            .expect("run the converter");
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    for offset in ["+10m", "-10m", "+0"] {
        let events = run(offset);
        let skipped = of_kind(&events, "skipped");
        assert!(
            skipped.iter().any(|e| e["reason"] == "too_new"),
            "{offset}: {events:#?}"
        );
        assert!(of_kind(&events, "converting").is_empty(), "{offset}");
        scene.assert_original_intact(offset);
    }
}

/// A full disk while the cache's update lock is taken (strace injects ENOSPC into the
/// lock's write, then into its mkdir) must leave no lock behind. Before, the lock was a
/// file created empty and then written: ENOSPC on that write left an empty lock that
/// blocked every cache write in the directory for 30 s, longer than the final write
/// waits, so outcomes went unrecorded.
#[test]
fn a_full_disk_while_taking_the_cache_lock_leaves_nothing_that_blocks_writes() {
    if common::strace_missing() {
        return;
    }
    let scene = Scene::new(false);
    let lock = scene.library.join(".mediabox_cache.json.lock");
    let cache = scene.library.join(".mediabox_cache.json");
    let build = |strace: Option<&str>| -> std::process::Output {
        let mut command = match strace {
            Some(inject) => {
                let mut command = std::process::Command::new("strace");
                command
                    .args(["-f", "-qq", "-o", "/dev/null", "-P"])
                    .arg(&lock)
                    .args(["-e", inject])
                    .arg(env!("CARGO_BIN_EXE_media-converter"));
                command
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_media-converter")),
        };
        command
            .args(["cache", "build", "--json", "--min-age", "0s"])
            .arg(&scene.library)
            .output()
            .expect("run cache build")
    };
    for inject in [
        "inject=write,pwrite64:error=ENOSPC",
        "inject=mkdir,mkdirat:error=ENOSPC",
    ] {
        let _ = fs::remove_file(&cache);
        let out = build(Some(inject));
        assert!(
            fs::symlink_metadata(&lock).is_err(),
            "{inject}: a lock was left behind: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The next writer is not held up.
        let started = Instant::now();
        let out = build(None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(cache.exists(), "{inject}: the next write did not happen");
        assert!(started.elapsed() < Duration::from_secs(20), "{inject}");
    }
}

/// A converter stalled right after the swap's hard link (strace delays the `link` call's
/// return), while the user replaces the original: the swap must check the original again
/// and stop, leaving the user's version. Before, it renamed its output over the user's new
/// version and then removed the backup: the new version was gone.
#[test]
fn a_swap_stalled_after_its_hard_link_never_replaces_a_file_changed_meanwhile() {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    let options = ["-e", "inject=link,linkat:delay_exit=3000000"].map(String::from);
    let mut converter = start_on_library(&scene, Some(&options));
    wait_for_name(&scene, &mut converter, ".orig.", RUN);
    // The user puts a new version in place (by rename, as a download or copy tool does).
    let new_version = b"the user's new version".to_vec();
    let staged = scene.logs.join("new-version.mkv");
    fs::write(&staged, &new_version).expect("stage the new version");
    fs::copy(&staged, scene.library.join(".incoming")).expect("copy into the library");
    fs::rename(scene.library.join(".incoming"), &scene.clip).expect("replace the file");

    let events = events_at_end(converter);
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    assert!(
        of_kind(&events, "failed").iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|error| error.contains("original changed"))),
        "{events:#?}"
    );
    assert!(
        fs::read(&scene.clip).unwrap_or_default() == new_version,
        "the user's new version was replaced"
    );
    assert_eq!(debris(&scene.library), Vec::<String>::new());
    // Not the file's fault: no failure is held against it.
    let cache = fs::read(scene.library.join(".mediabox_cache.json")).unwrap_or_default();
    let cache: Value = serde_json::from_slice(&cache).unwrap_or_default();
    let failed = &cache["files"]["clip-00.mkv"]["failed"];
    assert!(failed.is_null(), "a failure was recorded: {cache:#}");
}

/// The scan's view of a file may be older than the file server's: a network client answers
/// a plain stat from its cache (sshfs keeps attributes 20 s). So "changed during conversion"
/// is judged against the original as the file server had it at the claim, read fresh, not
/// against the scan's view. Here the original's mtime moves (its content stays) after the
/// scan and before the claim, which strace holds for 5 s at the `mkdir` of its acquire
/// guard: the file is converted, where before it failed as "changed during conversion".
#[test]
fn an_original_touched_between_the_scan_and_the_claim_is_converted() {
    const HOLD: Duration = Duration::from_secs(5);
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    let guard = scene.lock().with_extension("lock.acquire");
    // strace writes a call's arguments as it enters it: the held `mkdir` shows there at once.
    let trace = scene.logs.join("claim.trace");
    let options = [
        "-o".into(),
        trace.display().to_string(),
        "-e".into(),
        "trace=mkdir".into(),
        "-P".into(),
        guard.display().to_string(),
        "-e".into(),
        format!("inject=mkdir:delay_enter={}:when=1", HOLD.as_micros()),
    ];
    let converter = start_on_library(&scene, Some(&options));
    // The scan has read the mtime once the claim is under way.
    let started = Instant::now();
    let claiming = || fs::read_to_string(&trace).is_ok_and(|t| t.contains("lock.acquire"));
    while !claiming() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the claim's guard was never made"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let holding = Instant::now();
    let touched = SystemTime::now() + Duration::from_secs(7);
    touch(&scene.clip, touched);
    assert!(
        holding.elapsed() < HOLD,
        "the claim was let go before the touch"
    );
    let events = events_at_end(converter);
    assert!(of_kind(&events, "failed").is_empty(), "{events:#?}");
    assert_eq!(of_kind(&events, "converted").len(), 1, "{events:#?}");
    assert_eq!(video_codec(&scene.clip), "hevc");
    assert_eq!(
        fs::metadata(&scene.clip).and_then(|m| m.modified()).ok(),
        Some(touched),
        "the converted file carries the original's mtime as the claim saw it"
    );
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

/// A real change while the file is encoded is still caught, however small: the original's
/// mtime moves (its content stays) while the encode runs. The file fails as changed during
/// conversion, the original stays as it is, and nothing is left behind.
#[test]
fn an_original_touched_during_its_encode_is_never_replaced() {
    const RUN: Duration = Duration::from_secs(120);
    let _serial = serial();
    let scene = Scene::new(true);
    let mut converter = start_on_library(&scene, None);
    wait_for_name(&scene, &mut converter, ".partial.", RUN);
    let touched = SystemTime::now() + Duration::from_secs(7);
    touch(&scene.clip, touched);
    let events = events_at_end(converter);
    assert!(of_kind(&events, "converted").is_empty(), "{events:#?}");
    assert!(
        of_kind(&events, "failed").iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|error| error.contains("original changed during conversion"))),
        "{events:#?}"
    );
    assert!(
        fs::read(&scene.clip).unwrap_or_default() == scene.original,
        "the original was replaced"
    );
    assert_eq!(
        fs::metadata(&scene.clip).and_then(|m| m.modified()).ok(),
        Some(touched)
    );
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

/// The converter on the scene's library as host-1, its JSON events on a pipe; under
/// `strace -f` with `strace` (its options) when given.
fn start_on_library(scene: &Scene, strace: Option<&[String]>) -> std::process::Child {
    let binary = env!("CARGO_BIN_EXE_media-converter");
    let mut command = match strace {
        Some(options) => {
            let mut command = std::process::Command::new("strace");
            command.args(["-f", "-qq", "-o", "/dev/null"]).args(options);
            command.arg("--").arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    command
        .args([
            "--json",
            "--min-age",
            "0s",
            "--preset",
            "ultrafast",
            "--dir",
        ])
        .arg(&scene.library)
        .env("MEDIA_CONVERTER_HOSTNAME", "host-1")
        .env("MEDIA_CONVERTER_HOST_ID", "id-host-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the converter")
}

/// Waits, up to `limit`, for a name in the library containing `part`, while `converter` runs.
fn wait_for_name(scene: &Scene, converter: &mut std::process::Child, part: &str, limit: Duration) {
    let seen = || {
        fs::read_dir(&scene.library)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().contains(part))
    };
    let deadline = Instant::now() + limit;
    while !seen() {
        assert!(
            converter.try_wait().ok().flatten().is_none(),
            "the converter exited before a {part} name showed"
        );
        assert!(Instant::now() < deadline, "no {part} name within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON events of a converter started by [`start_on_library`], once it has ended.
fn events_at_end(converter: std::process::Child) -> Vec<Value> {
    let out = converter.wait_with_output().expect("the converter ends");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Moves `path`'s mtime to `when`, its content untouched.
fn touch(path: &Path, when: SystemTime) {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .expect("open the clip");
    file.set_modified(when).expect("move the mtime");
}

/// Runs the converter on `file` as host-1 under `strace -f` with the given `-e inject=`
/// expressions; returns its exit code and JSON events. strace counts `when=` per thread:
/// the worker that converts the file renames its claim's acquire guard away, then (for a
/// new name) the output claim's, then swaps. It runs with `--file`, so the main thread
/// writes no presence record: its renames (that record's, the cache's) would otherwise
/// reach the count before the worker's. `extra` goes to the converter.
fn run_injected(file: &Path, injects: &[&str], extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    run_injected_on(&[], file, injects, extra)
}

/// As [`run_injected`], counting (and hitting) only calls on `paths` (strace's `-P`).
fn run_injected_on(
    paths: &[&Path],
    file: &Path,
    injects: &[&str],
    extra: &[&str],
) -> (Option<i32>, Vec<Value>) {
    let mut command = std::process::Command::new("strace");
    command.args(["-f", "-qq", "-o", "/dev/null"]);
    for path in paths {
        command.arg("-P").arg(path);
    }
    for inject in injects {
        command.args(["-e", inject]);
    }
    let out = command
        .arg(env!("CARGO_BIN_EXE_media-converter"))
        .args(["--json", "--min-age", "0s", "--preset", "ultrafast"])
        .args(extra)
        .arg("--file")
        .arg(file)
        .env("MEDIA_CONVERTER_HOSTNAME", "host-1")
        .env("MEDIA_CONVERTER_HOST_ID", "id-host-1")
        .output()
        .expect("run under strace");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (out.status.code(), events)
}

/// Without hard links the in-place swap renames the original aside, then the new file into
/// its name; a SIGKILL between the two leaves the name empty. The same host's next run must
/// put the original back and convert it. Before, no run ever saw the file again (the scan
/// finds nothing at its name, so nothing broke the dead lock), and only `locks clean`
/// restored it.
#[test]
fn a_swap_killed_between_its_renames_is_finished_by_the_next_run() {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    // The worker's renames: its acquire guard, the original aside, the new file in.
    let (code, killed) = run_injected(
        &scene.clip,
        &[
            "inject=link,linkat:error=EPERM",
            "inject=rename,renameat,renameat2:signal=KILL:when=3",
        ],
        &[],
    );
    assert_ne!(code, Some(0), "the run was not killed: {killed:#?}");
    assert!(
        !scene.clip.exists(),
        "the kill did not fall between the renames"
    );

    let (code, rerun) = scene.run("host-1", "rerun", &[]);
    assert_eq!(code, Some(0), "{rerun:#?}");
    assert_converted_once_and_clean(&scene, &[&rerun]);
}

/// Without hard links a conversion to a new name reserves it (an empty file) and renames
/// the new file over the reservation; killed in between, the empty reservation stayed and
/// every later run failed "a file already exists at clip-00.mkv". The next run must remove
/// the dead claim's reservation and convert.
#[test]
fn a_reservation_left_by_a_killed_placement_is_removed_by_the_next_run() {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    let avi = remux_beside(&scene, "clip-00.avi");
    fs::remove_file(&scene.clip).expect("only the avi");
    // The worker's renames: its two acquire guards, the new file over its reservation.
    let (code, killed) = run_injected(
        &avi,
        &[
            "inject=link,linkat:error=EPERM",
            "inject=rename,renameat,renameat2:signal=KILL:when=3",
        ],
        &[],
    );
    assert_ne!(code, Some(0), "the run was not killed: {killed:#?}");
    assert_eq!(
        fs::metadata(&scene.clip).map(|meta| meta.len()).ok(),
        Some(0),
        "the kill did not fall between the reservation and the rename"
    );

    let (code, rerun) = scene.run("host-1", "rerun", &[]);
    assert_eq!(code, Some(0), "{rerun:#?}");
    assert_eq!(of_kind(&rerun, "converted").len(), 1, "{rerun:#?}");
    assert!(!avi.exists());
    assert_eq!(video_codec(&scene.clip), "hevc");
    assert_eq!(debris(&scene.library), Vec::<String>::new());
}

/// NFS answers ESTALE when a lock this client had cached was retired through another
/// client. Read by name again, the lock is found (or found gone) and the claim goes on.
/// Before, ESTALE on opening the lock was an I/O error: "cannot claim it".
#[test]
fn a_stale_nfs_handle_on_the_lock_is_read_again_by_name() {
    if common::strace_missing() {
        return;
    }
    let scene = Scene::new(false);
    // A dead host's lock, an hour old: to be broken on the way to the claim.
    let record = LockRecord {
        hostname: "gone".into(),
        pid: 4242,
        lock_id: Some("d".repeat(32)),
        host_id: Some("id-gone".into()),
        ..LockRecord::default()
    };
    fs::write(scene.lock(), record.to_json().expect("json")).expect("write the lock");
    fs::File::options()
        .write(true)
        .open(scene.lock())
        .and_then(|file| file.set_modified(SystemTime::now() - Duration::from_secs(3600)))
        .expect("age the lock");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(scene.lock())
        .args(["-e", "inject=openat:error=ESTALE:when=1..2"])
        .arg(env!("CARGO_BIN_EXE_media-converter"))
        .args([
            "--json",
            "--min-age",
            "0s",
            "--preset",
            "ultrafast",
            "--dir",
        ])
        .arg(&scene.library)
        .output()
        .expect("run under strace");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(out.status.code(), Some(0), "{events:#?}");
    assert_converted_once_and_clean(&scene, &[&events]);
}

/// `--keep-original`, killed as the original goes from its backup name to its kept name:
/// the next run of the same host finishes that move. Before, the original stayed at the
/// hidden backup name after every recovery (the file, already HEVC, is never claimed
/// again, so nothing broke the dead lock), and `locks clean` left it there too.
#[test]
fn a_keep_original_swap_killed_before_the_keep_is_finished_by_the_next_run() {
    keep_interrupted_before_the_keep("signal=KILL");
}

/// With `--keep-original`, a rename of the backup to the kept name that fails (EIO: a share
/// that drops a request) used to leave the original under its hidden backup name for good:
/// the run released its lock, and with it the only record that the backup was meant to be
/// kept, so neither the next run, another host nor `locks clean` could place it. The lock
/// now stays, as a crash would leave it, and its durable phase settles it.
#[test]
fn a_keep_original_swap_failing_before_the_keep_is_finished_by_the_next_run() {
    keep_interrupted_before_the_keep("error=EIO");
}

/// A `--keep-original` conversion whose third rename (the backup to the kept name) meets
/// `fault`, then a run of the same host: the original must end at its kept name.
fn keep_interrupted_before_the_keep(fault: &str) {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    // The worker's renames: its acquire guard, the new file over the original, the backup
    // to the kept name.
    let (code, faulted) = run_injected(
        &scene.clip,
        &[&format!("inject=rename,renameat,renameat2:{fault}:when=3")],
        &["--keep-original"],
    );
    assert_ne!(code, Some(0), "the keep went through: {faulted:#?}");
    assert_eq!(
        video_codec(&scene.clip),
        "hevc",
        "interrupted before the new file was in"
    );
    let kept = scene.library.join(".clip-00.mkv.mediabox-kept");
    assert!(
        fs::read(&kept).unwrap_or_default() != scene.original,
        "interrupted after the keep"
    );

    let (code, rerun) = scene.run("host-1", "rerun", &[]);
    assert_eq!(code, Some(0), "{rerun:#?}");
    assert!(of_kind(&rerun, "converting").is_empty(), "{rerun:#?}");
    assert!(
        fs::read(&kept).unwrap_or_default() == scene.original,
        "the original is not at its kept name: {:?}",
        debris(&scene.library)
    );
    assert_eq!(
        debris(&scene.library),
        vec![kept.to_string_lossy().into_owned()]
    );
}

/// The cache's update guard, as a writer that died while holding it leaves it.
const CACHE_GUARD: &str = ".mediabox_cache.json.lock";

/// A run killed inside its acquire guard, between creating its lock and writing it, leaves
/// the guard and an empty lock; a cache writer that died leaves the cache's update guard; a
/// run killed while learning the server's clock leaves a probe. The default `locks clean`
/// must keep all of them while they are young (a live run on another host may hold each
/// one, and none says whose it is); `locks clean --force` ("no run is active") must leave
/// nothing, and the next run converts. Before, nothing removed them sooner than their
/// timeouts (minutes), and the cache's guard was not even looked at.
#[test]
fn locks_clean_force_leaves_nothing_a_crash_left_and_the_default_keeps_what_may_be_live() {
    if common::strace_missing() {
        return;
    }
    let _serial = serial();
    let scene = Scene::new(false);
    let lock = scene.lock();
    let (code, killed) = run_injected_on(
        &[&lock],
        &scene.clip,
        &["inject=write:signal=KILL:when=1"],
        SHORT_LOCKS,
    );
    assert_ne!(code, Some(0), "the run was not killed: {killed:#?}");
    assert_eq!(
        fs::read(&lock).map(|b| b.len()).ok(),
        Some(0),
        "no empty lock"
    );
    let guard = scene.library.join("clip-00.mkv.mediabox.lock.acquire");
    assert!(guard.is_dir(), "no acquire guard left");
    // The killed run's survey may have left its own cache guard already.
    let cache_guard = scene.library.join(CACHE_GUARD);
    if !cache_guard.is_dir() {
        fs::create_dir(&cache_guard).expect("a dead writer's cache guard");
    }
    fs::write(scene.library.join(".mediabox.clock-0123abcd"), b"").expect("a probe");
    let left = || {
        let mut left = debris(&scene.library);
        if scene.library.join(CACHE_GUARD).exists() {
            left.push(CACHE_GUARD.to_owned());
        }
        left
    };
    let crashed = left();
    assert_eq!(crashed.len(), 4, "{crashed:?}");

    let default = scene.clean("host-1", SHORT_LOCKS);
    assert_eq!(
        left(),
        crashed,
        "the default clean removed what may be live: {default:#?}"
    );
    scene.assert_original_intact("after locks clean");

    let forced = scene.clean("host-1", &[SHORT_LOCKS, &["--force"]].concat());
    assert_eq!(left(), Vec::<String>::new(), "{forced:#?}");
    scene.assert_original_intact("after locks clean --force");

    let (code, rerun) = scene.run("host-1", "rerun", SHORT_LOCKS);
    assert_eq!(code, Some(0), "{rerun:#?}");
    assert_converted_once_and_clean(&scene, &[&rerun]);
}

/// `locks clean --force` is told no run is active; when one is, it must see it and touch
/// nothing. A `--dir` run publishes its presence at the library's root, which says so to
/// this host and to any other (the locks' own watch is proved in `tests/lock.rs`).
#[test]
fn locks_clean_force_refuses_while_a_run_is_active() {
    let _serial = serial();
    let scene = Scene::new(false);
    scene.fake(Fake::AfterClaim);
    let mut holder = scene.start("host-1", "holder", SHORT_LOCKS, true, &[]);
    scene.wait_for(
        "the claim",
        RUN,
        || scene.mark("encode.pid").exists(),
        &mut holder,
    );
    assert!(scene.lock().exists(), "the holder holds no lock");
    for host in ["host-1", "host-2"] {
        let out = scene.clean_output(host, &[SHORT_LOCKS, &["--force"]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{host}: forced past a live run");
        assert!(stderr.contains("a run is active"), "{host}: {stderr}");
        assert!(stderr.contains("presence record"), "{host}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(r#""event":"refused""#), "{host}: {stdout}");
        assert!(scene.lock().exists(), "{host}: the live lock was removed");
    }
    assert!(
        pid_alive(i32::try_from(holder.pid()).expect("pid")),
        "the holder died"
    );
    kill_and_check_child_died(&mut holder, &scene.mark("encode.pid"));
    scene.assert_original_intact("after the refused cleans");
    // Its own host knows at once that it is gone: nothing is refused, nothing is left.
    let forced = scene.clean("host-1", &[SHORT_LOCKS, &["--force"]].concat());
    assert_eq!(debris(&scene.library), Vec::<String>::new(), "{forced:#?}");
    scene.assert_original_intact("after locks clean --force");
}
