//! Three hosts, two processes each, one library on local disk: every file is
//! converted exactly once and nothing of the lock protocol is left behind. The same
//! workload runs across real network mounts in `tests/netmount.rs`.

mod workload;

use std::time::Duration;

use workload::{Host, Launch, assert_exactly_once, make_clips};

#[test]
fn three_hosts_with_two_processes_each_convert_every_file_exactly_once() {
    let temp = tempfile::tempdir().expect("temp dir");
    let library = temp.path().join("lib");
    let logs = temp.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let names = make_clips(&library, 30);

    let hosts = [
        Host::new("host-1", &library, 2),
        Host::new("host-2", &library, 2),
        Host::new("host-3", &library, 2),
    ];
    let launch = Launch {
        logs: &logs,
        args: Launch::DEFAULT_ARGS,
        path_first: None,
        env: &[],
    };
    let outcome = launch.run(
        &hosts,
        names.len(),
        Duration::from_secs(240),
        "claim workload (local disk)",
    );
    assert_exactly_once(&outcome, &names, &library);
}
