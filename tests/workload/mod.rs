//! The claim workload: several "hosts", each running the real binary in several
//! processes on the same library, possibly through different mounts of it. Shared by
//! `tests/claim_workload.rs` (local disk) and `tests/netmount.rs` (sshfs, smbnetfs).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use media_converter::lock::is_lock_artifact;
use serde_json::Value;

/// One host of the workload: its identity, the library as its mount shows it, and
/// how many processes it runs there.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub library: PathBuf,
    pub processes: usize,
}

impl Host {
    pub fn new(name: &str, library: &Path, processes: usize) -> Host {
        Host {
            name: name.to_owned(),
            library: library.to_owned(),
            processes,
        }
    }
}

/// Makes `count` distinct 1 s 160x90 H.264 clips (high quality, so HEVC is clearly
/// smaller) named `clip-NN.mkv` in `dir`, two ffmpeg processes at a time.
pub fn make_clips(dir: &Path, count: usize) -> Vec<String> {
    fs::create_dir_all(dir).expect("clip directory");
    let names: Vec<String> = (0..count).map(|n| format!("clip-{n:02}.mkv")).collect();
    for pair in names.chunks(2) {
        let children: Vec<(String, Child)> = pair
            .iter()
            .map(|name| {
                let n: u32 = name[5..7].parse().unwrap_or(0);
                let child = Command::new("ffmpeg")
                    .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
                    .args(["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=1"])
                    // A different hue per clip: distinct files, like a real library.
                    .args(["-vf", &format!("hue=h={}", n * 12)])
                    .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8"])
                    .arg(dir.join(name))
                    .stdin(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("ffmpeg must be installed for the tests");
                (name.clone(), child)
            })
            .collect();
        for (name, child) in children {
            let out = child.wait_with_output().expect("ffmpeg ran");
            assert!(
                out.status.success(),
                "ffmpeg failed to make {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    names
}

/// Copies every file of `from` into `to` (made if needed): clips made on local disk
/// are put on a mount this way.
pub fn copy_all(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("target directory");
    for entry in fs::read_dir(from).expect("source directory").flatten() {
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a clip");
    }
}

/// One process of the workload, with where its output went.
pub struct Process {
    pub host: String,
    pub library: PathBuf,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its JSON events so far.
    pub fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Its failures, warnings and skips, one JSON line each, for messages.
    pub fn notable_events(&self) -> String {
        self.events()
            .iter()
            .filter(|e| matches!(e["event"].as_str(), Some("failed" | "warning" | "skipped")))
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `deadline`; kills the process and fails past it.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus, String> {
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "{} (pid {}) did not finish in time; stderr:\n{}",
                    self.host,
                    self.pid(),
                    self.stderr()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process and returns its exit code and events.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, Vec<Value>) {
        let status = self
            .wait_until(Instant::now() + timeout)
            .unwrap_or_else(|err| panic!("{err}"));
        (status.code(), self.events())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// How to start the processes of a workload.
pub struct Launch<'a> {
    /// Where stdout and stderr of every process go (not on the share).
    pub logs: &'a Path,
    /// Arguments after `--dir <library>`.
    pub args: &'a [&'a str],
    /// A directory put first on `PATH` (a fake ffmpeg), if any.
    pub path_first: Option<&'a Path>,
    /// More environment for every process.
    pub env: &'a [(&'a str, &'a str)],
}

impl Launch<'_> {
    /// The arguments every workload run uses: JSON out, fresh files welcome, a
    /// fast preset.
    pub const DEFAULT_ARGS: &'static [&'static str] =
        &["--json", "--min-age", "0s", "--preset", "ultrafast"];

    /// Starts one process as `host` on `library`.
    pub fn start(&self, host: &str, library: &Path, tag: &str) -> Process {
        let stdout = self.logs.join(format!("{tag}.stdout"));
        let stderr = self.logs.join(format!("{tag}.stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_media-converter"));
        command
            .arg("--dir")
            .arg(library)
            .args(self.args)
            .env("MEDIA_CONVERTER_HOSTNAME", host)
            .env("MEDIA_CONVERTER_HOST_ID", format!("id-{host}"))
            .env("NO_COLOR", "1")
            .envs(self.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout log"))
            .stderr(File::create(&stderr).expect("stderr log"));
        if let Some(dir) = self.path_first {
            let mut path = OsString::from(dir);
            path.push(":");
            path.push(std::env::var_os("PATH").unwrap_or_default());
            command.env("PATH", path);
        }
        let child = command.spawn().expect("start media-converter");
        Process {
            host: host.to_owned(),
            library: library.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Starts every process of every host, interleaved across hosts.
    pub fn start_all(&self, hosts: &[Host]) -> Vec<Process> {
        let most = hosts.iter().map(|h| h.processes).max().unwrap_or(0);
        let mut processes = Vec::new();
        for n in 0..most {
            for host in hosts.iter().filter(|h| n < h.processes) {
                processes.push(self.start(
                    &host.name,
                    &host.library,
                    &format!("{}-{n}", host.name),
                ));
            }
        }
        processes
    }

    /// Starts every host's processes, waits for all of them (at most `timeout`), and logs
    /// how long the `files` took and how many each host converted.
    pub fn run(&self, hosts: &[Host], files: usize, timeout: Duration, label: &str) -> Outcome {
        let started = Instant::now();
        let mut processes = self.start_all(hosts);
        let outcome = finish(&mut processes, started, timeout);
        eprintln!(
            "{label}: {files} files in {:.1} s, per host {:?}",
            outcome.elapsed.as_secs_f64(),
            outcome.per_host
        );
        outcome
    }
}

/// What a finished workload showed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `converting` events per file name, over every process.
    pub converting: BTreeMap<String, usize>,
    /// `converted` events per file name.
    pub converted: BTreeMap<String, usize>,
    /// `failed` events, as (host, file, error).
    pub failed: Vec<(String, String, String)>,
    /// How many files each host converted.
    pub per_host: BTreeMap<String, usize>,
    /// `skipped` events per reason, with one example detail each.
    pub skipped: BTreeMap<String, (usize, String)>,
    /// Wall time until the last process exited.
    pub elapsed: Duration,
}

/// Waits for every process (all must exit 0 within `timeout`) and tallies events.
pub fn finish(processes: &mut [Process], started: Instant, timeout: Duration) -> Outcome {
    let deadline = started + timeout;
    let mut outcome = Outcome::default();
    for process in processes.iter_mut() {
        let status = process
            .wait_until(deadline)
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(
            status.success(),
            "{} (pid {}) exited {status}; stderr:\n{}\nevents other than progress:\n{}",
            process.host,
            process.pid(),
            process.stderr(),
            process.notable_events()
        );
    }
    outcome.elapsed = started.elapsed();
    for process in processes.iter() {
        outcome.tally(&process.host, &process.events());
    }
    outcome
}

impl Outcome {
    /// Counts the `events` of one process of `host`.
    pub fn tally(&mut self, host: &str, events: &[Value]) {
        for event in events {
            let file = event["file"].as_str().map(file_name).unwrap_or_default();
            match event["event"].as_str() {
                Some("converting") => {
                    *self.converting.entry(file).or_default() += 1;
                }
                Some("converted") => {
                    *self.converted.entry(file).or_default() += 1;
                    *self.per_host.entry(host.to_owned()).or_default() += 1;
                }
                Some("skipped") => {
                    let reason = event["reason"].as_str().unwrap_or_default().to_owned();
                    let entry = self.skipped.entry(reason).or_default();
                    entry.0 += 1;
                    if entry.1.is_empty() {
                        entry.1 = event["detail"].as_str().unwrap_or_default().to_owned();
                    }
                }
                Some("failed") => self.failed.push((
                    host.to_owned(),
                    file,
                    event["error"].as_str().unwrap_or_default().to_owned(),
                )),
                _ => {}
            }
        }
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shared metadata cache's own files (`src/cache`): not the lock protocol's,
/// judged by the cache's tests.
const CACHE_PREFIX: &str = ".mediabox_cache.json";

/// The hosts' presence records (`src/presence.rs`), judged by their own tests.
const PRESENCE_DIR: &str = ".mediabox-hosts";

/// Every file or directory under `dir` that the lock protocol or the pipeline
/// leaves behind: locks, guards, tombstones, clock probes, temp outputs, backups,
/// anything hidden but the shared cache's files.
pub fn debris(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy().into_owned();
            // The hosts' presence folder is bookkeeping too; a temp file left in it is not.
            let ours = is_lock_artifact(&name)
                || (text.starts_with('.')
                    && !text.starts_with(CACHE_PREFIX)
                    && text != PRESENCE_DIR);
            if ours {
                found.push(entry.path().to_string_lossy().into_owned());
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Asserts the workload's promise: every file converted exactly once, nothing
/// failed, every file is HEVC now, no debris.
pub fn assert_exactly_once(outcome: &Outcome, names: &[String], server_view: &Path) {
    let twice: Vec<_> = outcome.converting.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "converted more than once: {twice:?}");
    assert!(outcome.failed.is_empty(), "failures: {:?}", outcome.failed);
    for name in names {
        assert_eq!(
            outcome.converting.get(name),
            Some(&1),
            "{name} was not converted exactly once: {:?}; skipped: {:?}",
            outcome.converting,
            outcome.skipped
        );
        assert_eq!(outcome.converted.get(name), Some(&1), "{name}");
        let codec = video_codec(&server_view.join(name));
        assert_eq!(codec, "hevc", "{name} is {codec} after the run");
    }
    assert_eq!(
        debris(server_view),
        Vec::<String>::new(),
        "no lock, guard, tombstone, probe or temp file may be left"
    );
    let set_aside = cache_set_asides(server_view);
    if !set_aside.is_empty() {
        // The cache's business, not the lock protocol's: said loudly, past the
        // harness's capture, but not failed here.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** NOTE: the shared cache was read as corrupt and set aside {} time(s) \
             during this run: {set_aside:?} ***\n",
            set_aside.len()
        );
    }
}

/// Caches the cache module set aside as corrupt (`.mediabox_cache.json.corrupt-*`).
pub fn cache_set_asides(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&format!("{CACHE_PREFIX}.corrupt-")))
        .collect();
    found.sort();
    found
}

/// The codec of a file's first video stream, by ffprobe.
pub fn video_codec(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe must be installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Says `message` on stderr past the test harness's capture (which takes only
/// `eprintln!`), so a skip is seen even in a passing run.
pub fn loud(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
}

/// Polls `done` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
