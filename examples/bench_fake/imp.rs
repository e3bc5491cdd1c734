//! The fakes themselves (Unix: they exec and take byte paths).

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn main() -> ExitCode {
    let mut args = env::args_os();
    let name = args.next().map(PathBuf::from).unwrap_or_default();
    let args: Vec<OsString> = args.collect();
    let result = match name.file_name().and_then(|n| n.to_str()) {
        Some("ffmpeg") => ffmpeg(&args),
        Some("ffprobe") => ffprobe(&args),
        _ => Err("run me as ffmpeg or ffprobe (a symlink)".to_owned()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("bench_fake: {err}");
            ExitCode::from(2)
        }
    }
}

fn var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("{name} is not set"))
}

/// The path of a media argument (`file:` prefixed by the converter).
fn media_path(arg: &OsString) -> PathBuf {
    let bytes = arg.as_bytes();
    let bytes = bytes.strip_prefix(b"file:").unwrap_or(bytes);
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

fn ffmpeg(args: &[OsString]) -> Result<u8, String> {
    let output = args.last().map(media_path).unwrap_or_default();
    if output.to_string_lossy().contains(".partial.") {
        log("start", &output)?;
        let secs: f64 = var("BENCH_ENCODE_SECS")?
            .to_string_lossy()
            .parse()
            .map_err(|err| format!("BENCH_ENCODE_SECS: {err}"))?;
        std::thread::sleep(Duration::from_secs_f64(secs));
        fs::copy(var("BENCH_HEVC")?, &output).map_err(|err| format!("copy: {err}"))?;
        log("end", &output)?;
        return Ok(0);
    }
    let decode_check = args
        .windows(4)
        .any(|w| w[0] == "-1" && w[1] == "-f" && w[2] == "null" && w[3] == "-");
    if decode_check {
        return Ok(0);
    }
    Err(format!(
        "cannot run the real ffmpeg: {}",
        Command::new(var("BENCH_REAL_FFMPEG")?).args(args).exec()
    ))
}

fn log(what: &str, output: &Path) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let line = format!(
        "{what} {now:.6} {} {}\n",
        output.display(),
        std::os::unix::process::parent_id()
    );
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(var("BENCH_LOG")?)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .map_err(|err| format!("log: {err}"))
}

fn ffprobe(args: &[OsString]) -> Result<u8, String> {
    let path = args.last().map(media_path).unwrap_or_default();
    // Every probe is counted, memoized or not: how many the fleet ran is what is measured.
    log("probe", &path)?;
    let size = fs::metadata(&path).map_or(0, |meta| meta.len());
    let mut hasher = DefaultHasher::new();
    args[..args.len().saturating_sub(1)].hash(&mut hasher);
    size.hash(&mut hasher);
    let memo = PathBuf::from(var("BENCH_MEMO")?).join(format!("{:016x}", hasher.finish()));
    let answer = match fs::read(&memo) {
        Ok(answer) => answer,
        Err(_) => {
            let out = Command::new(var("BENCH_REAL_FFPROBE")?)
                .args(args)
                .output()
                .map_err(|err| format!("cannot run the real ffprobe: {err}"))?;
            let code = out.status.code().unwrap_or(1).clamp(0, 255) as u8;
            let mut answer = vec![code];
            answer.extend((out.stdout.len() as u64).to_le_bytes());
            answer.extend(&out.stdout);
            answer.extend(&out.stderr);
            // Written aside and renamed: concurrent probes never read half an answer.
            let temp = memo.with_extension(format!("tmp{}", std::process::id()));
            fs::write(&temp, &answer)
                .and_then(|()| fs::rename(&temp, &memo))
                .map_err(|err| format!("memo: {err}"))?;
            answer
        }
    };
    let (code, rest) = answer.split_first().ok_or("empty memo")?;
    let (len, rest) = rest.split_at_checked(8).ok_or("short memo")?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "bad memo")?) as usize;
    let (stdout, stderr) = rest.split_at_checked(len).ok_or("short memo")?;
    std::io::stdout()
        .write_all(stdout)
        .and_then(|()| std::io::stderr().write_all(stderr))
        .map_err(|err| err.to_string())?;
    Ok(*code)
}
