//! media-converter: shrinks media libraries on shared disks by re-encoding video to HEVC.
//!
//! See `ARCHITECTURE.md` for the flow of a run and which module owns each step.
//!
//! The public modules are those the binary (`cli`, `exit_codes`) and the integration tests
//! and examples (`config`, `decide`, `header`, `lock`, `probe`, `scan`, `verify`, and the
//! coordination core re-exported from `share-lock`) reach; `cache` too, whose `Cache::len`,
//! `Cache::is_empty` and `Recorder::host` only its tests use. Everything else is private.

mod atomic;
pub mod cache;
mod claim;
pub mod cli;
mod clock;
mod command;
pub mod config;
pub mod decide;
mod duration;
mod encoder;
pub mod exit_codes;
mod gpu;
pub mod header;
pub mod lock;
mod neighbours;
mod output;
mod presence;
mod priority;
pub mod probe;
mod process;
mod progress;
mod quality;
pub mod scan;
mod share;
mod signal;
mod space;
mod survey;
mod swap;
mod tools;
mod transcode;
mod unattended;
pub mod verify;
#[cfg(any(windows, test))]
mod winpath;

// The coordination core, where this crate's modules have always found it.
pub use share_lock::{fresh, identity, retry};

use cli::{Cli, RunCommand};
use exit_codes::ExitCode;
use output::Reporter;

/// Runs a parsed command line and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    tools::choose(cli.tool_choice());
    let (command, output) = cli.into_command();
    process::trace_commands(output.verbose && !output.json);
    let reporter = match Reporter::new(output) {
        Ok(reporter) => reporter,
        Err(err) => {
            eprintln!("media-converter: {err:#}");
            return ExitCode::UsageOrSetup;
        }
    };
    if let Err(err) = signal::install() {
        eprintln!("media-converter: cannot install the Ctrl-C handler: {err}");
        return ExitCode::UsageOrSetup;
    }
    let json = reporter.json();
    let result = match command {
        RunCommand::Convert(config) => command::convert::run(&config, &reporter),
        RunCommand::Doctor(config) => Ok(command::doctor::run(&config, json)),
        RunCommand::Pause { dir, reason } => command::pause::pause(&dir, reason, &reporter),
        RunCommand::Resume { dir } => command::pause::resume(&dir, &reporter),
        RunCommand::LocksList { dir, lock } => command::locks::list(&dir, lock, json),
        RunCommand::LocksClean {
            dir,
            lock,
            dry_run,
            force,
        } => command::locks::clean(
            &dir,
            lock,
            lock::CleanOptions { dry_run, force },
            &reporter,
            json,
        ),
        RunCommand::CacheBuild(config) => command::cache::build(&config, &reporter),
        RunCommand::Status(config) => command::status::run(&config, &reporter),
        RunCommand::CacheStats(config) => command::cache::stats(&config, &reporter),
        RunCommand::Dashboard(config) => command::dashboard::run(&config, &reporter),
        RunCommand::Metrics(config) => command::dashboard::metrics(&config, &reporter),
        RunCommand::Generate(artifact) => command::generate::run(artifact),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("media-converter: {err:#}");
            ExitCode::UsageOrSetup
        }
    }
}
