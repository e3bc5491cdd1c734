//! The command line: clap types, turned into plain config structs by [`Cli::into_command`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConvertConfig, EncodeSettings, MediaType, OutputConfig, Target, VerifyMode};
use crate::duration::parse_duration;

pub mod generate;

/// Shrink a media library by re-encoding video to HEVC with ffmpeg, safely, from many hosts at once.
#[derive(Debug, Parser)]
#[command(name = "media-converter", version, about, long_about = None)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    convert: ConvertArgs,

    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(generate::GenerateCommand),
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// Convert everything eligible under this directory, recursively.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "file",
        required_unless_present = "file",
        allow_hyphen_values = true
    )]
    dir: Option<PathBuf>,

    /// Convert this one file.
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    file: Option<PathBuf>,

    /// Which media to convert.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
    media_type: TypeArg,

    /// Print the plan (codec, decision, estimated size) and change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Quality, CRF-like: lower is better and bigger (0-51).
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u8).range(0..=51))]
    quality: u8,

    /// Encoder preset (ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow).
    #[arg(long, default_value = "medium")]
    preset: String,

    /// Keep the original unless the new file is at least this many percent smaller.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    min_savings: f64,

    /// Skip files modified more recently than this (e.g. 30s, 5m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    min_age: Duration,

    /// How thoroughly the new file is decoded before it replaces the original.
    #[arg(long, value_enum, default_value_t = VerifyArg::Quick)]
    verify: VerifyArg,

    /// Keep the original beside the new file under a hidden backup name.
    #[arg(long)]
    keep_original: bool,

    /// Follow symbolic links while scanning.
    #[arg(long)]
    follow_links: bool,

    /// Convert Dolby Vision sources too, losing the Dolby Vision layer.
    #[arg(long)]
    allow_dv_loss: bool,

    /// How many ffprobe processes run at once [default: number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    probe_jobs: Option<u16>,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Write one JSON object per line to stdout (see the README for the events).
    #[arg(long, global = true)]
    json: bool,

    /// Only errors and the summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// More detail: the ffmpeg command lines, each decision's reason.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Video,
    Audio,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VerifyArg {
    Quick,
    Full,
}

/// A parsed command line, ready to run.
#[derive(Debug)]
pub enum RunCommand {
    Convert(ConvertConfig),
    /// Print a completion script or the man page.
    Generate(generate::Artifact),
}

impl Cli {
    /// Turns the clap types into plain configuration.
    pub fn into_command(self) -> (RunCommand, OutputConfig) {
        let output = OutputConfig {
            json: self.output.json,
            quiet: self.output.quiet,
            verbose: self.output.verbose,
            stderr_is_tty: std::io::stderr().is_terminal(),
        };
        let command = match self.command {
            None => RunCommand::Convert(self.convert.into_config()),
            Some(Command::Generate(generate)) => RunCommand::Generate(generate.into_artifact()),
        };
        (command, output)
    }
}

impl ConvertArgs {
    fn into_config(self) -> ConvertConfig {
        let target = match (self.dir, self.file) {
            (_, Some(file)) => Target::File(file),
            (Some(dir), None) => Target::Dir(dir),
            // clap's required_unless_present rules this out.
            (None, None) => Target::Dir(PathBuf::from(".")),
        };
        ConvertConfig {
            target,
            media_type: match self.media_type {
                TypeArg::Video => MediaType::Video,
                TypeArg::Audio => MediaType::Audio,
                TypeArg::Both => MediaType::Both,
            },
            dry_run: self.dry_run,
            encode: EncodeSettings {
                quality: self.quality,
                preset: self.preset,
            },
            min_savings_pct: self.min_savings.clamp(0.0, 100.0),
            min_age: self.min_age,
            verify: match self.verify {
                VerifyArg::Quick => VerifyMode::Quick,
                VerifyArg::Full => VerifyMode::Full,
            },
            keep_original: self.keep_original,
            follow_links: self.follow_links,
            allow_dv_loss: self.allow_dv_loss,
            probe_jobs: self
                .probe_jobs
                .map(usize::from)
                .unwrap_or_else(default_parallelism),
        }
    }
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<RunCommand, clap::Error> {
        let mut full = vec!["media-converter"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).map(|cli| cli.into_command().0)
    }

    fn convert(args: &[&str]) -> ConvertConfig {
        match parse(args) {
            Ok(RunCommand::Convert(config)) => config,
            other => panic!("{args:?} is not a conversion: {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let config = convert(&["--dir", "/lib"]);
        assert_eq!(config.target, Target::Dir("/lib".into()));
        assert_eq!(config.media_type, MediaType::Video);
        assert_eq!(config.encode.quality, 22);
        assert_eq!(config.encode.preset, "medium");
        assert_eq!(config.min_savings_pct, 10.0);
        assert_eq!(config.min_age, Duration::from_secs(300));
        assert_eq!(config.verify, VerifyMode::Quick);
        assert!(!config.dry_run && !config.keep_original && !config.follow_links);
    }

    #[test]
    fn dir_and_file_are_exclusive_and_one_is_required() {
        assert!(parse(&["--dir", "a", "--file", "b"]).is_err());
        assert!(parse(&["--type", "audio"]).is_err());
        let config = convert(&["--file", "-x.mkv"]);
        assert_eq!(config.target, Target::File("-x.mkv".into()));
    }

    #[test]
    fn rejects_out_of_range_quality_and_bad_durations() {
        assert!(parse(&["--dir", "a", "--quality", "60"]).is_err());
        assert!(parse(&["--dir", "a", "--min-age", "5 parsecs"]).is_err());
    }
}
