//! The benchmark scripts' own behaviour (not their figures): what they build before measuring.
//! The scripts are bash, run where the benchmarks run: Unix only.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// bench/locks.sh with `cargo` a recorder and every tool it would build already there, so
/// that it stops at its first measurement (the lock_hammer here fails); `bench_bin` as
/// BENCH_BIN. Returns the run and the `cargo` calls it made.
fn locks_bench(dir: &Path, bench_bin: Option<&Path>) -> (Output, String) {
    let bin = dir.join("bin");
    let examples = dir.join("target/release/examples");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&examples).unwrap();
    let log = dir.join("cargo.log");
    write_script(
        &bin.join("cargo"),
        &format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n", log.display()),
    );
    for tool in ["lock_hammer", "bench_fake"] {
        write_script(&examples.join(tool), "#!/bin/sh\nexit 1\n");
    }
    let mut command = Command::new("bash");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/locks.sh"))
        .arg("--no-net")
        .env("PATH", path_with_first(&bin))
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("BENCH_BIN");
    if let Some(bench_bin) = bench_bin {
        command.env("BENCH_BIN", bench_bin);
    }
    let out = command.current_dir(dir).output().unwrap();
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn locks_bench_builds_no_converter_when_bench_bin_names_one() {
    let dir = tempfile::tempdir().unwrap();
    // Without BENCH_BIN it builds this tree's release binary: the recorder is the cargo run.
    let (_, calls) = locks_bench(dir.path(), None);
    assert!(calls.contains("--bin media-converter"), "{calls:?}");
    let dir = tempfile::tempdir().unwrap();
    let (out, calls) = locks_bench(dir.path(), Some(&bin()));
    assert_eq!(
        calls,
        "",
        "built with BENCH_BIN set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn locks_bench_names_a_bench_bin_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-converter");
    let (out, calls) = locks_bench(dir.path(), Some(&missing));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert_eq!(calls, "", "{stderr}");
}

#[test]
fn locks_bench_takes_a_relative_bench_bin_from_where_it_was_started() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin(), dir.path().join("converter")).unwrap();
    let (out, calls) = locks_bench(dir.path(), Some(Path::new("./converter")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("measuring"), "{stderr}");
    assert_eq!(calls, "", "{stderr}");
}
