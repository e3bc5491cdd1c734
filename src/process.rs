//! Running ffmpeg and ffprobe: command lines shown in errors, stderr always drained into a
//! bounded tail, and children that never outlive us.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// How many of a child's last stderr lines are kept for error messages.
pub const STDERR_TAIL_LINES: usize = 20;

/// The external programs a run uses, found once at start-up.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Tools {
    /// Finds ffmpeg and ffprobe as chosen (`crate::tools`: flag, environment, `PATH`), or
    /// says how to install them.
    pub fn locate() -> Result<Tools, ToolsMissing> {
        let find = |name: &'static str| crate::tools::find(name).map(|found| found.path);
        Ok(Tools {
            ffmpeg: find("ffmpeg")?,
            ffprobe: find("ffprobe")?,
        })
    }
}

/// ffmpeg or ffprobe is not installed.
#[derive(Debug)]
pub struct ToolsMissing {
    pub name: &'static str,
    /// Why the tool named by `--ffmpeg`/`--ffprobe` or the environment is not usable.
    pub chosen: Option<String>,
}

impl fmt::Display for ToolsMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(chosen) = &self.chosen {
            return write!(f, "{chosen}");
        }
        write!(
            f,
            "{} not found on PATH; install ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`, \
             Fedora: `sudo dnf install ffmpeg`, macOS: `brew install ffmpeg`, \
             Windows: `winget install Gyan.FFmpeg`), or run installers/install.sh \
             (Linux, macOS) or installers/install.ps1 (Windows)",
            self.name
        )
    }
}

impl std::error::Error for ToolsMissing {}

/// A child process that failed, with what is needed to understand why.
#[derive(Debug)]
pub struct CommandFailed {
    /// The full command line, quoted for a shell.
    pub command: String,
    pub status: Option<ExitStatus>,
    pub stderr_tail: Vec<String>,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} ({status})", self.program())?,
            None => write!(f, "{} could not be started", self.program())?,
        }
        if !self.stderr_tail.is_empty() {
            write!(f, ": {}", self.stderr_tail.join(" | "))?;
        }
        write!(f, "\n  command: {}", self.command)
    }
}

impl CommandFailed {
    fn program(&self) -> &str {
        let first = self.command.split(' ').next().unwrap_or("command");
        Path::new(first.trim_matches('\''))
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(first)
    }
}

impl std::error::Error for CommandFailed {}

/// Renders a command line for logs and errors, quoting what a shell would need quoted.
pub fn display_command(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| shell_quote(&arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+%@#".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A path as an ffmpeg/ffprobe input or output argument.
///
/// The `file:` prefix stops ffmpeg from reading a leading `-` as an option or a `name:` prefix
/// as a protocol (and a drive letter, `Z:\movies`, as one). On Windows a path of MAX_PATH
/// characters or more is given in its extended-length form (`file:\\?\Z:\...`), which every
/// ffmpeg opens; see [`crate::winpath`].
pub fn media_arg(path: &Path) -> OsString {
    #[cfg(windows)]
    let long_safe = crate::winpath::long_path_safe(path);
    // Only an empty path cannot be made absolute; ffmpeg then reports it as it is.
    #[cfg(windows)]
    let path = long_safe.as_deref().unwrap_or(path);
    let mut arg = OsString::from("file:");
    arg.push(path.as_os_str());
    arg
}

static TRACE: AtomicBool = AtomicBool::new(false);

/// Prints every media command line to stderr before it runs (`--verbose`); the benchmark
/// replays them to compare media-converter with the bare commands.
pub fn trace_commands(on: bool) {
    TRACE.store(on, Ordering::Relaxed);
}

/// Builds a `Command` for a media tool: no stdin, GPUs numbered as NVML numbers them, and, on
/// Linux, killed when we die.
pub fn media_command(program: &Path, args: &[OsString]) -> Command {
    if TRACE.load(Ordering::Relaxed) {
        eprintln!("running: {}", display_command(program, args));
    }
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    if std::env::var_os("CUDA_DEVICE_ORDER").is_none() {
        // CUDA numbers GPUs fastest first, NVML (which picks the least busy one) by PCI bus;
        // this makes NVENC's `-gpu N` mean the GPU that NVML calls N.
        command.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    }
    die_with_parent(&mut command);
    command
}

/// Starts a command built by [`media_command`]. On Windows the child joins a job object
/// that the system kills when this process ends, however it ends: Windows has no
/// parent-death signal.
pub fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let child = command.spawn()?;
    #[cfg(windows)]
    job::adopt(&child);
    Ok(child)
}

#[cfg(windows)]
mod job {
    use std::os::windows::io::AsRawHandle;
    use std::process::Child;
    use std::sync::OnceLock;

    use windows_sys::Win32::Foundation::HANDLE;
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject,
    };

    /// The job every child joins. Its handle is never closed: the system closes it when
    /// this process ends, and then kills every process in the job.
    struct Job(HANDLE);

    // SAFETY: a job handle may be used from any thread; it is only ever read.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    static JOB: OnceLock<Option<Job>> = OnceLock::new();

    fn job() -> Option<&'static Job> {
        JOB.get_or_init(|| {
            // SAFETY: plain Win32 calls with valid arguments; the handle is checked.
            unsafe {
                let handle = CreateJobObjectW(std::ptr::null(), std::ptr::null());
                if handle.is_null() {
                    return None;
                }
                let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
                limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                let set = SetInformationJobObject(
                    handle,
                    JobObjectExtendedLimitInformation,
                    (&raw const limits).cast(),
                    size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                );
                (set != 0).then_some(Job(handle))
            }
        })
        .as_ref()
    }

    /// Puts `child` in the job; best effort (a process already in a job that forbids
    /// nesting stays out, and is still killed by every explicit stop).
    pub(super) fn adopt(child: &Child) {
        if let Some(job) = job() {
            // SAFETY: both handles are valid for the duration of the call.
            unsafe {
                AssignProcessToJobObject(job.0, child.as_raw_handle() as HANDLE);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::process::{Command, Stdio};
        use windows_sys::Win32::System::JobObjects::IsProcessInJob;

        #[test]
        fn children_join_the_job_that_dies_with_us() {
            let exe = std::env::current_exe().unwrap();
            let mut child = crate::process::spawn(
                Command::new(exe)
                    .arg("--list")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .unwrap();
            let mut inside = 0;
            // SAFETY: both handles are valid; `inside` is writable.
            let asked = unsafe {
                IsProcessInJob(
                    child.as_raw_handle() as HANDLE,
                    job().expect("the job object").0,
                    &mut inside,
                )
            };
            let _ = child.wait();
            assert_ne!(asked, 0, "IsProcessInJob failed");
            assert_ne!(inside, 0, "the child is not in the job");
        }
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and setpgid are async-signal-safe and touch only the child.
    unsafe {
        command.pre_exec(|| {
            // The child dies with the thread that spawned it, so a SIGKILLed converter never
            // leaves an ffmpeg writing to the share.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own process group: a terminal's Ctrl-C reaches only us, and we stop the
            // child ourselves after deciding what to clean up.
            libc::setpgid(0, 0);
            Ok(())
        });
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}

#[cfg(not(unix))]
fn die_with_parent(_command: &mut Command) {}

/// Reads a child's stderr to the end on a thread, keeping only the last lines.
pub struct StderrTail {
    handle: JoinHandle<Vec<String>>,
}

impl StderrTail {
    /// Starts draining `stderr`: a child whose pipe fills up would block forever.
    pub fn drain(stderr: ChildStderr) -> StderrTail {
        let handle = std::thread::spawn(move || {
            let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        if text.is_empty() {
                            continue;
                        }
                        if tail.len() == STDERR_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(text);
                    }
                }
            }
            tail.into()
        });
        StderrTail { handle }
    }

    /// Waits for the end of the stream and returns the kept lines.
    pub fn finish(self) -> Vec<String> {
        self.handle.join().unwrap_or_default()
    }
}

/// What a successful child printed.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr_tail: Vec<String>,
}

/// Runs a command to completion, returning what it printed; a failure carries stderr's tail.
pub fn run_captured(program: &Path, args: &[OsString]) -> Result<Captured, CommandFailed> {
    let command_line = || display_command(program, args);
    let mut child = spawn(
        media_command(program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|err| CommandFailed {
        command: command_line(),
        status: None,
        stderr_tail: vec![err.to_string()],
    })?;
    let tail = child.stderr.take().map(StderrTail::drain);
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    let status = child.wait();
    let stderr_tail = tail.map(StderrTail::finish).unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(Captured {
            stdout,
            stderr_tail,
        }),
        Ok(status) => Err(CommandFailed {
            command: command_line(),
            status: Some(status),
            stderr_tail,
        }),
        Err(err) => Err(CommandFailed {
            command: command_line(),
            status: None,
            stderr_tail: vec![err.to_string()],
        }),
    }
}

/// Stops a child and reaps it; used on every early exit path.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_quoting() {
        let args: Vec<OsString> = ["-i", "file:my movie's.mkv", "-c:v", "libx265"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            display_command(Path::new("/usr/bin/ffmpeg"), &args),
            r"/usr/bin/ffmpeg -i 'file:my movie'\''s.mkv' -c:v libx265"
        );
    }

    #[test]
    fn media_arg_protects_leading_dash_and_colons() {
        assert_eq!(
            media_arg(Path::new("-x.mkv")),
            OsString::from("file:-x.mkv")
        );
        assert_eq!(
            media_arg(Path::new("Alien: Director's Cut.mkv")),
            OsString::from("file:Alien: Director's Cut.mkv")
        );
    }

    #[cfg(windows)]
    #[test]
    fn media_arg_keeps_drive_and_share_paths_and_extends_long_ones() {
        for path in [
            r"Z:\movies\a.mkv",
            r"\\server\media\TV\a.mkv",
            r"movies\a.mkv",
        ] {
            assert_eq!(
                media_arg(Path::new(path)),
                OsString::from(format!("file:{path}"))
            );
        }
        let long = format!(r"Z:\movies\{}\a.mkv", "x".repeat(250));
        assert_eq!(
            media_arg(Path::new(&long)),
            OsString::from(format!(r"file:\\?\{long}"))
        );
        let long_share = format!(r"\\server\media\{}\a.mkv", "x".repeat(250));
        let expected = format!(r"file:\\?\UNC\{}", &long_share[2..]);
        assert_eq!(media_arg(Path::new(&long_share)), OsString::from(expected));
    }

    #[cfg(unix)]
    #[test]
    fn failed_command_names_program_status_and_stderr() {
        let err = run_captured(
            Path::new("sh"),
            &["-c".into(), "echo boom >&2; exit 3".into()],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("sh (exit status: 3): boom"), "{text}");
        assert!(text.contains("command: sh -c"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn stderr_tail_is_bounded() {
        let err = run_captured(
            Path::new("sh"),
            &[
                "-c".into(),
                "for i in $(seq 1 500); do echo line$i >&2; done; exit 1".into(),
            ],
        )
        .unwrap_err();
        assert_eq!(err.stderr_tail.len(), STDERR_TAIL_LINES);
        assert_eq!(err.stderr_tail.last().unwrap(), "line500");
    }

    #[cfg(windows)]
    #[test]
    fn failures_and_bounded_stderr_tails_on_windows() {
        let err = run_captured(
            Path::new("cmd"),
            &[
                "/C".into(),
                "(for /L %i in (1,1,500) do @echo line%i 1>&2) & exit /b 3".into(),
            ],
        )
        .unwrap_err();
        assert_eq!(err.status.and_then(|s| s.code()), Some(3));
        assert_eq!(err.stderr_tail.len(), STDERR_TAIL_LINES);
        assert_eq!(err.stderr_tail.last().unwrap(), "line500");
        assert!(err.to_string().starts_with("cmd (exit code: 3): "), "{err}");
    }
}
