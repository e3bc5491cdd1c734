//! A library of locks and the child processes that race on it, for the tests of this crate
//! and of the crates that use it (included by `#[path]`). The children are the test binary
//! itself, re-run with `--exact hammer_child`: every including test file defines that test.

#![allow(dead_code)]

#[path = "../../examples/lock_hammer/hammer.rs"]
pub mod hammer;

use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use share_lock::{LockSettings, lock_path};

/// Short thresholds so staleness shows within seconds.
pub fn settings() -> LockSettings {
    LockSettings {
        heartbeat: Duration::from_millis(300),
        stale_after: Duration::from_secs(2),
        unreadable_grace: Duration::from_secs(1),
        guard_timeout: Duration::from_secs(1),
    }
}

/// `args` and the arguments that give a child the thresholds of [`settings`].
pub fn short_thresholds<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--heartbeat-ms",
        "300",
        "--stale-after-ms",
        "2000",
        "--grace-ms",
        "1000",
        "--guard-timeout-ms",
        "1000",
    ]);
    all
}

/// A library directory for the locks, and a separate one for the children's
/// output, so "nothing left behind" can be checked on the first.
pub struct Scene {
    _temp: tempfile::TempDir,
    pub library: PathBuf,
    pub work: PathBuf,
}

impl Scene {
    pub fn new() -> std::io::Result<Scene> {
        let temp = tempfile::tempdir()?;
        let library = temp.path().join("library");
        let work = temp.path().join("work");
        fs::create_dir(&library)?;
        fs::create_dir(&work)?;
        Ok(Scene {
            _temp: temp,
            library,
            work,
        })
    }

    pub fn media(&self) -> PathBuf {
        self.library.join("Movie1.mkv")
    }

    pub fn lock(&self) -> PathBuf {
        lock_path(&self.media()).unwrap_or_default()
    }

    pub fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.library)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            // The hosts' presence records are bookkeeping, tested in their own place.
            .filter(|name| name != ".mediabox-hosts")
            .collect();
        names.sort();
        names
    }

    /// Starts a child as host `host` on this scene's library.
    /// A child on `host` that holds the lock for a minute, once it has it.
    pub fn holder(&self, host: &str) -> Result<Hammer, Box<dyn Error>> {
        let mut holder = self.spawn(
            "holder",
            host,
            &short_thresholds(&["--mode", "hold", "--hold-ms", "60000"]),
        )?;
        holder.wait_for("acquired", Duration::from_secs(10))?;
        Ok(holder)
    }

    pub fn spawn(&self, name: &str, host: &str, args: &[&str]) -> Result<Hammer, Box<dyn Error>> {
        spawn_on(&self.library, &self.work, name, host, args)
    }
}

/// Starts a child named `name` as host `host` on the locks in `library` (a scene's, or a
/// network mount's), its output and log in `work`.
pub fn spawn_on(
    library: &Path,
    work: &Path,
    name: &str,
    host: &str,
    args: &[&str],
) -> Result<Hammer, Box<dyn Error>> {
    let out = work.join(format!("{name}.out"));
    let log_path = work.join(format!("{name}.log"));
    let mut all = vec![
        "lock_hammer".to_owned(),
        "--dir".to_owned(),
        library.to_string_lossy().into_owned(),
        "--out".to_owned(),
        out.to_string_lossy().into_owned(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let log = File::create(&log_path)?;
    let child = Command::new(env::current_exe()?)
        .args(["--exact", "hammer_child", "--nocapture", "--test-threads=1"])
        .env(hammer::child::ARGS, serde_json::to_string(&all)?)
        .env("MEDIA_CONVERTER_HOSTNAME", host)
        .env("MEDIA_CONVERTER_HOST_ID", format!("id-{host}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(Hammer {
        child,
        out,
        log: log_path,
    })
}

/// A child process; killed if a test ends while it still runs.
pub struct Hammer {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl Hammer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the child to exit; kills it and fails after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "child did not exit in {timeout:?}; log:\n{}",
                        self.log()
                    ));
                }
                Err(err) => return Err(err.to_string()),
            }
        }
    }

    /// Waits until the child's output contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.contains(needle) {
                return Ok(output);
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(format!(
                    "no {needle:?} from the child; output {output:?}; log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child the hard way (SIGKILL on unix) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
