//! media-converter: shrinks media libraries on shared disks by re-encoding video to HEVC.
//!
//! See `ARCHITECTURE.md` for the flow of a run and which module owns each step.

pub mod cli;
pub mod command;
pub mod config;
pub mod decide;
pub mod duration;
pub mod encoder;
pub mod exit_codes;
pub mod names;
pub mod output;
pub mod probe;
pub mod process;
pub mod progress;
pub mod retry;
pub mod scan;
pub mod signal;
pub mod swap;
pub mod transcode;
pub mod verify;
#[cfg(any(windows, test))]
pub mod winpath;

use cli::{Cli, RunCommand};
use exit_codes::ExitCode;
use output::Reporter;

/// Runs a parsed command line and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    let (command, output) = cli.into_command();
    let reporter = Reporter::new(output);
    process::trace_commands(output.verbose && !output.json);
    if let Err(err) = signal::install() {
        eprintln!("media-converter: cannot install the Ctrl-C handler: {err}");
        return ExitCode::UsageOrSetup;
    }
    let result = match command {
        RunCommand::Convert(config) => command::convert::run(&config, &reporter),
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
