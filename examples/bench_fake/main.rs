//! bench_fake: the fake ffmpeg and the memoizing ffprobe of `bench/locks.sh`,
//! compiled so that the benchmark measures the converters' coordination, not the
//! cost of forking shell scripts. It acts by the name it is run as (symlink it as
//! `ffmpeg` and `ffprobe` into a directory put first on `PATH`).
//!
//! As `ffmpeg`: an encode (its output is a `.partial.` temp file) logs its start,
//! sleeps `BENCH_ENCODE_SECS`, copies the real HEVC clip `BENCH_HEVC` to the output
//! and logs its end (`BENCH_LOG`: `start|end <unix secs> <output> <ppid>`). The
//! decode check of verification exits 0 at once. Anything else (encoder trials) is
//! the real ffmpeg, `BENCH_REAL_FFMPEG`.
//!
//! As `ffprobe`: logs the call (`probe <unix secs> <file> <ppid>`), then the real
//! ffprobe (`BENCH_REAL_FFPROBE`), its answer memoized in
//! `BENCH_MEMO` per (arguments, file size). The benchmark's files are copies of one
//! source clip and of one HEVC clip, so equal size means equal bytes and the same
//! answer the real ffprobe would give.

#[cfg(unix)]
mod imp;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    imp::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("bench_fake runs on Unix only, like bench/locks.sh");
}
