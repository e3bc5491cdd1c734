//! The lock protocol and the claim workload on REAL network mounts: two independent
//! FUSE mounts of one export (sshfs or smbnetfs against a local server), each
//! playing one host, as `scripts/netmounts.sh` sets them up.
//!
//! Every test here is `#[ignore]`: a plain `cargo test` mounts nothing. Run them
//! with `scripts/net-tests.sh` (as root), which runs
//! `scripts/netmounts.sh run sshfs|smb -- cargo test --test netmount -- --include-ignored`.
//! Run without the mounts (`MC_NET_A` unset), each test prints that it was SKIPPED.
//!
//! Child processes are this test binary re-run with `--exact hammer_child`, started by the
//! coordination crate's race scene (`crates/share-lock/tests/scene`) on a mount.

#[path = "../crates/share-lock/tests/scene/mod.rs"]
mod scene;
mod workload;

use std::env;
use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use media_converter::identity::HostIdentity;
use media_converter::lock::{Acquire, LockSettings, Locker, lock_path};
use workload::{Host, Launch, assert_exactly_once, copy_all, debris, loud, make_clips, wait_for};

type TestResult = Result<(), Box<dyn Error>>;

/// Not a test: the entry point of the hammer children. Without [`scene::hammer::child::ARGS`] it
/// does nothing.
#[test]
fn hammer_child() {
    scene::hammer::child::main();
}

/// The two mounts of one export, and the export as the server sees it.
struct Net {
    kind: String,
    a: PathBuf,
    b: PathBuf,
    export: PathBuf,
}

impl Net {
    /// The mounts, or `None` after saying loudly that `test` is skipped.
    fn get(test: &str) -> Option<Net> {
        let var = |name: &str| env::var_os(name).filter(|value| !value.is_empty());
        match (
            var("MC_NET_KIND"),
            var("MC_NET_A"),
            var("MC_NET_B"),
            var("MC_NET_EXPORT"),
        ) {
            (Some(kind), Some(a), Some(b), Some(export)) => Some(Net {
                kind: kind.to_string_lossy().into_owned(),
                a: a.into(),
                b: b.into(),
                export: export.into(),
            }),
            _ => {
                loud(&format!(
                    "SKIPPED {test}: no network mounts (MC_NET_A/MC_NET_B/MC_NET_EXPORT \
                     unset). Run scripts/net-tests.sh as root."
                ));
                None
            }
        }
    }

    /// A fresh directory on the export, made through mount A and visible through
    /// both; returns its name.
    fn fresh_dir(&self, prefix: &str) -> Result<String, Box<dyn Error>> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let name = format!("{prefix}-{}-{nanos:08x}", std::process::id());
        fs::create_dir(self.a.join(&name))?;
        wait_for(Duration::from_secs(10), || self.b.join(&name).is_dir())
            .then_some(())
            .ok_or("the new directory never showed through mount B")?;
        Ok(name)
    }
}

fn host(name: &str) -> HostIdentity {
    HostIdentity {
        hostname: name.to_owned(),
        host_id: format!("id-{name}"),
    }
}

/// Two processes through mount A (one host), two through mount B (another), 100
/// claims each of one lock: no two hold intervals overlap, every claim was held, and
/// the export holds nothing afterwards.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn hammer_across_two_mounts_never_overlaps() -> TestResult {
    const CYCLES: usize = 100;
    let Some(net) = Net::get("hammer_across_two_mounts_never_overlaps") else {
        return Ok(());
    };
    let dir = net.fresh_dir("hammer")?;
    let work = tempfile::tempdir()?;
    let cycles = CYCLES.to_string();
    let args = [
        "--iterations",
        &cycles,
        "--hold-ms",
        "1",
        "--timeout-ms",
        "100000",
    ];
    let plan = [
        ("a1", &net.a, "net-a"),
        ("a2", &net.a, "net-a"),
        ("b1", &net.b, "net-b"),
        ("b2", &net.b, "net-b"),
    ];
    let started = Instant::now();
    let mut children = Vec::new();
    for (name, mount, host) in plan {
        let child = scene::spawn_on(&mount.join(&dir), work.path(), name, host, &args)?;
        children.push((name, child));
    }
    let mut intervals = Vec::new();
    for (name, child) in &mut children {
        let status = child.wait(Duration::from_secs(300))?;
        let log = child.log();
        assert!(status.success(), "{name}: {status}; log:\n{log}");
        eprintln!("{} hammer {name}: {}", net.kind, log.trim());
        for line in child.output().lines() {
            let (start, end) = line.split_once(' ').ok_or("bad interval line")?;
            intervals.push((start.parse::<u128>()?, end.parse::<u128>()?));
        }
    }
    eprintln!(
        "{} hammer: {} claims in {:.1} s",
        net.kind,
        intervals.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(intervals.len(), 4 * CYCLES, "every claim was held");
    intervals.sort_unstable();
    for pair in intervals.windows(2) {
        let ((_, end), (start, _)) = (pair[0], pair[1]);
        assert!(end < start, "two processes held the lock at once: {pair:?}");
    }
    let left = debris(&net.export.join(&dir));
    assert_eq!(
        left,
        Vec::<String>::new(),
        "no lock, guard or tombstone left"
    );
    fs::remove_dir(net.a.join(&dir))?;
    Ok(())
}

/// One thread per mount claims the same fresh file at the same instant, 100 times:
/// exactly one wins each round. smbnetfs lets both exclusive creates of such a race
/// succeed; the acquire guard must not.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn simultaneous_claims_through_two_mounts_have_one_winner() -> TestResult {
    const ROUNDS: usize = 100;
    let Some(net) = Net::get("simultaneous_claims_through_two_mounts_have_one_winner") else {
        return Ok(());
    };
    let dir = net.fresh_dir("race")?;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [(net.a.join(&dir), "net-a"), (net.b.join(&dir), "net-b")]
        .into_iter()
        .map(|(library, name)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<Vec<bool>, String> {
                let locker = Locker::new(host(name), LockSettings::default());
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    let media = library.join(format!("race-{round:03}.mkv"));
                    barrier.wait();
                    let acquired = locker.try_acquire(&media).map_err(|e| e.to_string())?;
                    // Both have tried before either releases.
                    barrier.wait();
                    won.push(match acquired {
                        Acquire::Acquired(guard) => {
                            guard.release().map_err(|e| e.to_string())?;
                            true
                        }
                        Acquire::Held(_) => false,
                    });
                }
                Ok(won)
            })
        })
        .collect();
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.join().map_err(|_| "racer panicked")??);
    }
    let both = (0..ROUNDS)
        .filter(|&n| results[0][n] && results[1][n])
        .count();
    let neither = (0..ROUNDS)
        .filter(|&n| !results[0][n] && !results[1][n])
        .count();
    let a_won = results[0].iter().filter(|&&won| won).count();
    eprintln!(
        "{} race: {ROUNDS} rounds, A won {a_won}, B won {}, both {both}, neither {neither}",
        net.kind,
        ROUNDS - a_won - neither + both
    );
    assert_eq!(
        both, 0,
        "both mounts acquired the same lock in {both} rounds"
    );
    // A round may end with no winner (a claim reports "changing hands" while the
    // other holds the acquire guard and its create is not yet visible), but not
    // most of them.
    assert!(neither <= ROUNDS / 10, "{neither} rounds without a winner");
    assert_eq!(debris(&net.export.join(&dir)), Vec::<String>::new());
    fs::remove_dir(net.a.join(&dir))?;
    Ok(())
}

/// Heartbeats and first writes stamp the lock with the server's clock at full
/// precision: the export (the server's own view) shows sub-second mtimes, which a
/// `UTIME_NOW` through either FUSE client would have cut to the client's whole
/// seconds.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn locks_are_stamped_by_the_servers_clock_not_the_clients() -> TestResult {
    let Some(net) = Net::get("locks_are_stamped_by_the_servers_clock_not_the_clients") else {
        return Ok(());
    };
    let dir = net.fresh_dir("stamp")?;
    // The export's own file system must keep sub-second times for this to tell.
    let control = net.export.join(&dir).join("control");
    fs::write(&control, b"x")?;
    let control_nanos = fs::metadata(&control)?
        .modified()?
        .duration_since(UNIX_EPOCH)?;
    fs::remove_file(&control)?;
    if control_nanos.subsec_nanos() == 0 {
        loud("SKIPPED stamp check: the export keeps whole seconds only");
        return Ok(());
    }
    let locker = Locker::new(host("net-a"), LockSettings::default());
    let media = net.a.join(&dir).join("Movie1.mkv");
    let Acquire::Acquired(guard) = locker.try_acquire(&media)? else {
        return Err("a fresh lock was held".into());
    };
    let server_lock = lock_path(&net.export.join(&dir).join("Movie1.mkv")).ok_or("no lock path")?;
    let mut whole_seconds = 0;
    for beat in 0..4 {
        if beat > 0 {
            thread::sleep(Duration::from_millis(300));
            guard.heartbeat("transcoding", None)?;
        }
        let mtime = fs::metadata(&server_lock)?.modified()?;
        let since_epoch = mtime.duration_since(UNIX_EPOCH)?;
        if since_epoch.subsec_nanos() == 0 {
            whole_seconds += 1;
        }
        // Server and clients share this machine's clock here, so "now" is the
        // server's now.
        let off = SystemTime::now()
            .duration_since(mtime)
            .unwrap_or_else(|err| err.duration());
        assert!(
            off < Duration::from_secs(2),
            "lock stamped {off:?} away from now"
        );
    }
    assert_eq!(
        whole_seconds, 0,
        "stamps cut to whole seconds: a client-side UTIME_NOW"
    );
    guard.release()?;
    assert_eq!(debris(&net.export.join(&dir)), Vec::<String>::new());
    fs::remove_dir(net.a.join(&dir))?;
    Ok(())
}

/// A file swapped through mount A (what a converting host does) is seen with its
/// new size through mount B at once by `fresh::metadata`, which the pipeline uses
/// after a claim: a stale size would let B convert the file a second time.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn a_swap_through_one_mount_is_seen_at_once_through_the_other() -> TestResult {
    use media_converter::fresh;
    let Some(net) = Net::get("a_swap_through_one_mount_is_seen_at_once_through_the_other") else {
        return Ok(());
    };
    let dir = net.fresh_dir("swap")?;
    let mut stale_stats = 0;
    for round in 0..5 {
        let name = format!("clip-{round}.mkv");
        let (via_a, via_b) = (net.a.join(&dir).join(&name), net.b.join(&dir).join(&name));
        fs::write(&via_a, vec![b'o'; 1000])?;
        if !wait_for(Duration::from_secs(10), || {
            fs::metadata(&via_b).is_ok_and(|meta| meta.len() == 1000)
        }) {
            return Err("the original never showed through mount B".into());
        }
        let temp = net.a.join(&dir).join(format!(".{name}.new"));
        fs::write(&temp, vec![b'n'; 10])?;
        fs::rename(&temp, &via_a)?;
        if fs::metadata(&via_b)?.len() != 10 {
            stale_stats += 1;
        }
        assert_eq!(fresh::metadata(&via_b)?.len(), 10, "round {round}");
    }
    eprintln!(
        "{}: a plain stat through B showed the old size in {stale_stats} of 5 rounds",
        net.kind
    );
    fs::remove_dir_all(net.export.join(&dir))?;
    Ok(())
}

/// Three hosts, two processes each, spread over the two mounts, converting the
/// same 30 real clips: each converted exactly once, nothing left behind.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn claim_workload_across_two_mounts_converts_every_file_exactly_once() -> TestResult {
    let Some(net) = Net::get("claim_workload_across_two_mounts_converts_every_file_exactly_once")
    else {
        return Ok(());
    };
    let dir = net.fresh_dir("workload")?;
    let local = tempfile::tempdir()?;
    let clips = local.path().join("clips");
    let logs = local.path().join("logs");
    fs::create_dir(&logs)?;
    let names = make_clips(&clips, 30);
    let library_a = net.a.join(&dir).join("lib");
    let library_b = net.b.join(&dir).join("lib");
    copy_all(&clips, &library_a);
    if !wait_for(Duration::from_secs(30), || {
        fs::read_dir(&library_b).map_or(0, |entries| entries.count()) == names.len()
    }) {
        return Err("the clips never all showed through mount B".into());
    }

    let hosts = [
        Host::new("host-1", &library_a, 2),
        Host::new("host-2", &library_b, 2),
        Host::new("host-3", &library_a, 2),
    ];
    let launch = Launch {
        logs: &logs,
        args: Launch::DEFAULT_ARGS,
        path_first: None,
        env: &[],
    };
    let label = format!("{} claim workload", net.kind);
    let outcome = launch.run(&hosts, names.len(), Duration::from_secs(150), &label);
    assert_exactly_once(&outcome, &names, &net.export.join(&dir).join("lib"));
    fs::remove_dir_all(net.export.join(&dir))?;
    Ok(())
}

/// A presence record renewed through mount A (a host's renewal: a new file renamed over the
/// old) is read with its new mtime through mount B at once, as the file server has it:
/// `status` and the dashboard judge a host "gone quiet" by that mtime, and a cached one
/// ages a working host by the client's cache time.
#[test]
#[ignore = "needs real network mounts: scripts/net-tests.sh"]
fn a_presence_record_renewed_through_one_mount_is_read_fresh_through_the_other() -> TestResult {
    const PAUSE: Duration = Duration::from_secs(4);
    let Some(net) =
        Net::get("a_presence_record_renewed_through_one_mount_is_read_fresh_through_the_other")
    else {
        return Ok(());
    };
    let dir = net.fresh_dir("presence")?;
    let (root_a, root_b) = (net.a.join(&dir), net.b.join(&dir));
    // A run on an empty library leaves its record (stopped) in the presence folder.
    let run = Command::new(env!("CARGO_BIN_EXE_media-converter"))
        .arg("--dir")
        .arg(&root_a)
        .args(["--json", "--quiet"])
        .env("MEDIA_CONVERTER_HOSTNAME", "net-a")
        .env("MEDIA_CONVERTER_HOST_ID", "id-net-a")
        .output()?;
    assert!(run.status.success(), "{run:?}");
    let record_a = root_a.join(".mediabox-hosts").join("id-net-a.json");
    let record = fs::read(&record_a)?;
    let unchanged_via_b = || -> Result<f64, Box<dyn Error>> {
        let out = Command::new(env!("CARGO_BIN_EXE_media-converter"))
            .arg("status")
            .arg(&root_b)
            .arg("--json")
            .output()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        status["hosts"][0]["presence"]["unchanged_secs"]
            .as_f64()
            .ok_or_else(|| format!("no host's age in {status}").into())
    };
    unchanged_via_b()?;
    let mut ages = Vec::new();
    for _ in 0..4 {
        thread::sleep(PAUSE);
        let temp = record_a.with_file_name(".id-net-a.json.tmp");
        fs::write(&temp, &record)?;
        fs::rename(&temp, &record_a)?;
        let renewed = Instant::now();
        let age = unchanged_via_b()?;
        ages.push((age, renewed.elapsed().as_secs_f64()));
    }
    eprintln!(
        "{}: renewed records read through B as unchanged for (s, with s since the renewal) \
         {ages:?}",
        net.kind
    );
    // Through sshfs both the record's mtime and the server's clock probe are whole seconds,
    // so a fresh read is at most 1 s more than the time since the renewal, however long
    // `status` took; a cached mtime, the previous renewal's, at least PAUSE - 1 s more.
    assert!(
        ages.iter().all(|&(age, since)| age < since + 2.0),
        "a renewed record read as older than it is through the other mount: {ages:?}"
    );
    fs::remove_dir_all(net.export.join(&dir))?;
    Ok(())
}
