//! `doctor --dir` does on the share what a conversion does, and tells whose clock stamps a
//! write there: checked with the real binary, a failing flush injected with strace, and a
//! host clock an hour off through libfaketime.
//!
//! Unix only: strace and libfaketime are Linux tools. Where one is missing or cannot run,
//! the test says so loudly on stderr and checks only what it can; a missing strace fails
//! instead where `STRACE_TESTS_REQUIRED=1` (`.ci/run` sets it wherever strace can trace).
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// `doctor --dir DIR --json`, run through `wrapper` (e.g. strace) when given, with `envs`.
fn doctor_on(dir: &Path, wrapper: &[&str], envs: &[(&str, &str)]) -> (Output, Value) {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(bin());
            command
        }
        None => Command::new(bin()),
    };
    let out = command
        .args(["doctor", "--json", "--dir"])
        .arg(dir)
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed {text:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// Past the harness's capture, so that a weaker check is seen even in a passing run.
fn loud(note: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** NOTE: {note} ***\n");
}

#[test]
fn a_share_passes_a_conversions_own_steps_and_keeps_nothing() {
    let share = tempfile::tempdir().unwrap();
    std::fs::write(share.path().join("Movie.mkv"), b"media").unwrap();
    let (out, report) = doctor_on(share.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let share_report = &report["share"];
    assert_eq!(share_report["conversion"]["ok"], true, "{share_report:#}");
    assert_eq!(
        share_report["conversion"]["detail"],
        "a work file was written, flushed, swapped over an original and removed"
    );
    // One kernel stamps and reads the time: the clocks agree, so whose stamps a write
    // cannot be told, and the report says so rather than guessing.
    assert_eq!(share_report["write_stamp"]["ok"], true, "{share_report:#}");
    assert!(
        share_report.get("write_stamped_by").is_none(),
        "{share_report:#}"
    );
    assert_eq!(walk(share.path()), [share.path().join("Movie.mkv")]);
}

#[test]
fn a_share_that_cannot_flush_cannot_convert() {
    if strace_missing() {
        return;
    }
    let share = tempfile::tempdir().unwrap();
    // Every fsync fails, as on an NFS share out of quota (the error comes at the flush) or
    // a Windows handle without write access (FlushFileBuffers: access denied). Creating,
    // renaming and linking still work, which is all doctor checked before.
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync",
        "-e",
        "inject=fsync:error=EIO",
    ];
    let (out, report) = doctor_on(share.path(), &wrapper, &[]);
    let share_report = &report["share"];
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    assert_eq!(report["ok"], false);
    for check in ["exclusive_create", "rename_over", "hard_link"] {
        assert_eq!(share_report[check]["ok"], true, "{check}: {share_report:#}");
    }
    let conversion = share_report["conversion"]["detail"].as_str().unwrap();
    assert_eq!(share_report["conversion"]["ok"], false, "{share_report:#}");
    assert!(
        conversion.starts_with("flushing the work file to the server failed")
            && conversion.contains("Input/output error"),
        "{conversion}"
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("flushing the work file")),
        "{problems:?}"
    );
    assert!(walk(share.path()).is_empty(), "probe files left behind");
}

#[test]
fn the_failing_flush_case_cannot_pass_by_skipping_where_strace_is_required() {
    assert_strace_case_skips_only_where_allowed("a_share_that_cannot_flush_cannot_convert");
}

#[test]
fn a_write_is_seen_stamped_by_the_file_servers_clock() {
    let Some(clock) = FakeClock::find() else {
        loud(
            "libfaketime not installed (apt-get install libfaketime): whose clock stamps a \
             write was not told apart from this host's",
        );
        return;
    };
    let share = tempfile::tempdir().unwrap();
    // This host's clock an hour slow; the kernel, the "file server" here, stamps files
    // with the true time, creations and writes alike.
    let envs = clock.env("-1h");
    let (out, report) = doctor_on(share.path(), &[], &envs);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let share_report = &report["share"];
    let offset = share_report["clock_offset"]["offset_secs"]
        .as_f64()
        .unwrap();
    assert!((offset - 3600.0).abs() < 5.0, "{share_report:#}");
    assert_eq!(
        share_report["write_stamped_by"], "file_server",
        "{share_report:#}"
    );
    assert_eq!(share_report["write_stamp"]["ok"], true);
    assert!(walk(share.path()).is_empty(), "probe files left behind");
}
