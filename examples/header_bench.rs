//! Native header reads against ffprobe on the same files: files per second for each, and
//! the fraction the native reader left to ffprobe. Run by bench/header.sh.
//!
//! Usage: header_bench DIR JOBS

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use media_converter::{header, probe};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(jobs)) = (args.get(1), args.get(2).and_then(|j| j.parse().ok())) else {
        eprintln!("usage: header_bench DIR JOBS");
        std::process::exit(2);
    };
    let jobs: usize = jobs;
    let files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["mkv", "webm", "mp4", "m4v", "mov", "avi"].contains(&e))
        })
        .collect();
    let n = files.len();

    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let fell_back = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if header::read(path).is_err()
                        && let Ok(mut list) = fell_back.lock()
                    {
                        list.push(path.clone());
                    }
                }
            });
        }
    });
    let native_secs = start.elapsed().as_secs_f64();
    let fell_back = fell_back.into_inner().unwrap_or_default();

    let ffprobe = PathBuf::from("ffprobe");
    let start = Instant::now();
    let probed = probe::probe_many(&ffprobe, &files, jobs, &|_| {});
    let ffprobe_secs = start.elapsed().as_secs_f64();
    let unreadable = probed.iter().filter(|r| r.is_err()).count();

    let start = Instant::now();
    probe::probe_many(&ffprobe, &fell_back, jobs, &|_| {});
    let fallback_secs = start.elapsed().as_secs_f64();

    let rate = |secs: f64| n as f64 / secs.max(1e-9);
    let mixed = native_secs + fallback_secs;
    println!("files                       {n} ({jobs} jobs)");
    println!(
        "native reader               {native_secs:8.3} s  {:10.0} files/s",
        rate(native_secs)
    );
    println!(
        "ffprobe                     {ffprobe_secs:8.3} s  {:10.0} files/s  ({unreadable} unreadable)",
        rate(ffprobe_secs)
    );
    println!(
        "native, ffprobe for the rest{mixed:8.3} s  {:10.0} files/s  ({} of {n} = {:.1}% needed ffprobe)",
        rate(mixed),
        fell_back.len(),
        100.0 * fell_back.len() as f64 / n.max(1) as f64
    );
    println!(
        "speed-up                    {:.1}x native alone, {:.1}x with the fallback",
        ffprobe_secs / native_secs.max(1e-9),
        ffprobe_secs / mixed.max(1e-9)
    );
}
