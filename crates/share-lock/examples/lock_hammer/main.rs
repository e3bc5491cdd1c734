//! lock_hammer: races one lock from this process, to prove the lock protocol with
//! real processes, on one disk or across network mounts of one share.
//!
//! ```text
//! MEDIA_CONVERTER_HOST_ID=host-a cargo run -p share-lock --example lock_hammer -- \
//!     --dir /mnt/a/library --iterations 1000 --hold-ms 2 --out a.intervals
//! MEDIA_CONVERTER_HOST_ID=host-b cargo run -p share-lock --example lock_hammer -- \
//!     --dir /mnt/b/library --iterations 1000 --hold-ms 2 --out b.intervals
//! ```
//!
//! then check that no interval in `a.intervals` overlaps one in `b.intervals`.

mod hammer;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(hammer::run(std::env::args_os()))
}
