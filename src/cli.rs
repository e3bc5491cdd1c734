//! The command line: clap types, turned into plain config structs by [`Cli::into_command`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    CacheBuildConfig, CacheStatsConfig, ConvertConfig, DashboardConfig, DoctorConfig,
    EncoderRequest, MediaType, MetricsConfig, Order, OutputConfig, StatusConfig, Target,
    VerifyMode,
};
use crate::duration::parse_duration;
use crate::encoder::{EncodeSettings, Encoder};
use crate::lock::{HumanDuration, LockSettings};
use crate::quality;

/// `--lock-timeout` must be at least this many `--heartbeat`s.
const MIN_TIMEOUT_HEARTBEATS: u32 = 3;
use crate::unattended::{Limits, parse_time_of_day};

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

    #[command(flatten)]
    tools: ToolArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stop every host from starting new files in a library (running ones finish).
    Pause {
        /// The library's root directory.
        dir: PathBuf,
        /// Why, shown by `status` and in every host's log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let hosts start new files in a paused library again.
    Resume {
        /// The library's root directory.
        dir: PathBuf,
    },
    /// Show or repair the claims hosts hold on a library's files.
    Locks {
        #[command(subcommand)]
        command: LocksCommand,
    },
    /// What the fleet is doing, from the share alone: files in progress (host, phase, percent,
    /// fps, ETA), totals from the caches, and the hosts seen.
    Status {
        /// The library's root directory.
        dir: PathBuf,
        /// Which media the totals count.
        #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
        media_type: TypeArg,
        /// Redraw every few seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` redraws.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// A web page of the whole fleet, read from the share alone: hosts, files in progress,
    /// totals, space saved over time, failures. Also /api/status (JSON) and /metrics.
    Dashboard {
        /// The library's root directory.
        dir: PathBuf,
        /// Where to serve the page.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Allow --listen on an address other machines can reach.
        #[arg(long)]
        allow_remote: bool,
        /// Offer pause, resume, retry and priority on the page (each change needs the token
        /// printed at start).
        #[arg(long)]
        allow_control: bool,
        /// Which media the totals count.
        #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
        media_type: TypeArg,
    },
    /// The dashboard's figures once, in Prometheus's text format.
    Metrics {
        /// The library's root directory.
        dir: PathBuf,
        /// Write them atomically into this file (node_exporter's textfile collector) instead
        /// of stdout.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
        /// Which media the totals count.
        #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
        media_type: TypeArg,
    },
    /// Check that this machine and share can run conversions: ffmpeg, every encoder, GPUs,
    /// and with --dir the share itself. Exit 0 when the tool can run, 2 when it cannot.
    Doctor(DoctorArgs),
    /// The shared metadata cache (`.mediabox_cache.json` in each directory).
    #[command(subcommand)]
    Cache(CacheCommand),
    #[command(flatten)]
    Generate(generate::GenerateCommand),
}

#[derive(Debug, Subcommand)]
enum LocksCommand {
    /// Every lock under DIR: host, pid, age since the last heartbeat, phase, progress, and
    /// whether it is live or stale and why.
    List {
        /// The library (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Break stale locks by the protocol and remove debris no live lock owns (abandoned temp
    /// outputs, tombstones, guards); restore an original a crashed swap left aside. Live locks
    /// are never touched.
    Clean {
        /// The library (default: the current directory).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Say what would be done, and do nothing.
        #[arg(long)]
        dry_run: bool,
        /// No run is active on this library, on any host: remove every lock, guard, probe
        /// and tombstone however young (a crash's leftovers), not only those old enough to
        /// be certainly dead. Refused when a run is seen active (a lock whose process runs
        /// here, or that changes while watched for one heartbeat).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// Also test this directory on the share: exclusive create, rename over, hard links,
    /// free space, and the offset between this host's clock and the file server's.
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Probe every file the cache does not know yet (or that changed), in parallel.
    Build(CacheBuildArgs),
    /// What the cache says about a library: codecs, containers, savings so far, work left.
    Stats(CacheStatsArgs),
}

#[derive(Debug, Args)]
struct CacheBuildArgs {
    /// The library directory, scanned recursively.
    #[arg(value_name = "DIR", allow_hyphen_values = true)]
    dir: PathBuf,

    /// Which media to probe.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
    media_type: TypeArg,

    /// Leave files modified more recently than this for later (e.g. 30s, 5m, 2h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    min_age: Duration,

    /// Follow symbolic links while scanning.
    #[arg(long)]
    follow_links: bool,

    /// How many ffprobe processes run at once [default: number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    probe_jobs: Option<u16>,
}

#[derive(Debug, Args)]
struct CacheStatsArgs {
    /// The library directory, scanned recursively.
    #[arg(value_name = "DIR", allow_hyphen_values = true)]
    dir: PathBuf,

    /// Which media to count.
    #[arg(long = "type", value_enum, default_value_t = TypeArg::Video)]
    media_type: TypeArg,

    /// Follow symbolic links while scanning.
    #[arg(long)]
    follow_links: bool,
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

    /// Print the plan (codec, decision, estimated size) and change no media file; what it
    /// probes is recorded in the cache, so the real run that follows does not probe again.
    #[arg(long)]
    dry_run: bool,

    /// Quality, CRF-like: lower is better and bigger (0-51).
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u8).range(0..=51))]
    quality: u8,

    /// Search each file for the quality whose VMAF meets N (e.g. 95), instead of a fixed
    /// --quality: samples are encoded with the run's encoder and scored at the video's native
    /// resolution (no upscale to 1080p). Needs an ffmpeg with libvmaf. See docs/quality.md.
    #[arg(long, value_name = "N", conflicts_with_all = ["quality", "target_ssim"],
          value_parser = parse_vmaf_target)]
    target_vmaf: Option<f64>,

    /// Like --target-vmaf, with SSIM (0-1, e.g. 0.98), which every ffmpeg has.
    #[arg(long, value_name = "X", conflicts_with = "quality", value_parser = parse_ssim_target)]
    target_ssim: Option<f64>,

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

    /// Convert videos with an alpha channel too, losing it (named in `dropped`).
    #[arg(long)]
    allow_alpha_loss: bool,

    /// Convert videos carrying closed captions (CEA-608/708) too, losing them (named in
    /// `dropped`).
    #[arg(long)]
    allow_caption_loss: bool,

    /// HEVC encoder; `auto` picks the fastest one that passes a one-frame trial here.
    #[arg(long, value_enum, default_value_t = EncoderArg::Auto)]
    encoder: EncoderArg,

    /// Fail a file whose hardware encode fails instead of redoing it with libx265.
    #[arg(long)]
    no_fallback: bool,

    /// How many files are surveyed at once: native header reads, or ffprobe processes where
    /// the headers cannot decide [default: number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    probe_jobs: Option<u16>,

    /// Which files to convert first.
    #[arg(long, value_enum, default_value_t = OrderArg::Largest)]
    order: OrderArg,

    /// Try again files that failed 3 times (on any hosts); they are skipped otherwise.
    #[arg(long)]
    retry_failed: bool,

    /// Conversions at once on this host (for GPUs with several encode sessions).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,

    /// Start at most N conversions in this run.
    #[arg(long, value_name = "N")]
    max_files: Option<u64>,

    /// Start no new file after this local time (HH:MM, the next occurrence).
    #[arg(long, value_name = "HH:MM", value_parser = parse_time_of_day)]
    until: Option<chrono::NaiveTime>,

    /// Start no new file once this long has passed since the run's first conversion started
    /// (e.g. 4h; the scan before it is not counted, so a run with work to do converts at
    /// least one file).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_runtime: Option<Duration>,

    /// At the deadline, also stop the conversion in progress (it is left for a later run).
    #[arg(long)]
    stop_at_deadline: bool,

    #[command(flatten)]
    lock: LockArgs,
}

/// The lock protocol's thresholds; every host of a library should use the same.
#[derive(Debug, Args)]
struct LockArgs {
    /// A lock whose heartbeat is older than this (on the file server's clock) is stale.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    lock_timeout: Duration,

    /// How often a working host renews its locks.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    heartbeat: Duration,
}

impl LockArgs {
    /// A lock timeout close to the heartbeat lets a host break a live lock between two
    /// heartbeats of its holder (a slow share, a busy client, an attribute cache), and
    /// then two hosts convert one file at once.
    fn check(&self) -> Result<(), String> {
        let least = self
            .heartbeat
            .checked_mul(MIN_TIMEOUT_HEARTBEATS)
            .ok_or_else(|| "--heartbeat is too long".to_owned())?;
        if self.lock_timeout < least {
            return Err(format!(
                "--lock-timeout {} must be at least {MIN_TIMEOUT_HEARTBEATS} times --heartbeat {} \
                 (at least {}): a shorter timeout lets another host break a lock whose holder \
                 is still working; raise --lock-timeout or lower --heartbeat, on every host",
                HumanDuration(self.lock_timeout),
                HumanDuration(self.heartbeat),
                HumanDuration(least),
            ));
        }
        Ok(())
    }

    fn settings(&self) -> LockSettings {
        LockSettings {
            heartbeat: self.heartbeat,
            stale_after: self.lock_timeout,
            ..LockSettings::default()
        }
    }
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

    /// Also append plain timestamped log lines to this file.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ToolArgs {
    /// The ffmpeg to run (else $MEDIA_CONVERTER_FFMPEG, else the first on PATH).
    #[arg(long, global = true, value_name = "PATH")]
    ffmpeg: Option<PathBuf>,

    /// The ffprobe to run (else $MEDIA_CONVERTER_FFPROBE, else the first on PATH).
    #[arg(long, global = true, value_name = "PATH")]
    ffprobe: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Video,
    Audio,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncoderArg {
    Auto,
    #[value(name = "libx265")]
    Libx265,
    #[value(name = "hevc_nvenc")]
    HevcNvenc,
    #[value(name = "hevc_qsv")]
    HevcQsv,
    #[value(name = "hevc_vaapi")]
    HevcVaapi,
    #[value(name = "hevc_amf")]
    HevcAmf,
    #[value(name = "hevc_videotoolbox")]
    HevcVideotoolbox,
}

impl EncoderArg {
    fn request(self) -> EncoderRequest {
        let forced = match self {
            EncoderArg::Auto => return EncoderRequest::Auto,
            EncoderArg::Libx265 => Encoder::Libx265,
            EncoderArg::HevcNvenc => Encoder::HevcNvenc,
            EncoderArg::HevcQsv => Encoder::HevcQsv,
            EncoderArg::HevcVaapi => Encoder::HevcVaapi,
            EncoderArg::HevcAmf => Encoder::HevcAmf,
            EncoderArg::HevcVideotoolbox => Encoder::HevcVideotoolbox,
        };
        EncoderRequest::Forced(forced)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VerifyArg {
    Quick,
    Full,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OrderArg {
    /// The biggest estimated saving first: the most space back soonest.
    Largest,
    /// The most recently modified first.
    Newest,
    /// The least recently modified first.
    Oldest,
    /// By path.
    Name,
}

impl TypeArg {
    fn into_config(self) -> MediaType {
        match self {
            TypeArg::Video => MediaType::Video,
            TypeArg::Audio => MediaType::Audio,
            TypeArg::Both => MediaType::Both,
        }
    }
}

/// A parsed command line, ready to run.
#[derive(Debug)]
pub enum RunCommand {
    Convert(ConvertConfig),
    Doctor(DoctorConfig),
    Pause {
        dir: PathBuf,
        reason: Option<String>,
    },
    Resume {
        dir: PathBuf,
    },
    LocksList {
        dir: PathBuf,
        lock: LockSettings,
    },
    LocksClean {
        dir: PathBuf,
        lock: LockSettings,
        dry_run: bool,
        force: bool,
    },
    CacheBuild(CacheBuildConfig),
    Status(StatusConfig),
    CacheStats(CacheStatsConfig),
    Dashboard(DashboardConfig),
    Metrics(MetricsConfig),
    /// Print a completion script or the man page.
    Generate(generate::Artifact),
}

impl Cli {
    /// Parses the process's arguments; on a usage error, says why and exits with code 2
    /// (clap's usage exit), as for any other malformed argument.
    pub fn parse_checked() -> Cli {
        match Cli::try_parse_checked_from(std::env::args_os()) {
            Ok(cli) => cli,
            Err(err) => err.exit(),
        }
    }

    /// Parses `args` and checks what clap cannot check alone: combinations of values.
    pub fn try_parse_checked_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::CommandFactory;
        let cli = Cli::try_parse_from(args)?;
        if let Some(lock) = cli.lock_args() {
            lock.check().map_err(|why| {
                Cli::command().error(clap::error::ErrorKind::ValueValidation, why)
            })?;
        }
        Ok(cli)
    }

    /// The lock thresholds of the command, if it takes any.
    fn lock_args(&self) -> Option<&LockArgs> {
        match &self.command {
            None => Some(&self.convert.lock),
            Some(Command::Locks {
                command: LocksCommand::List { lock, .. } | LocksCommand::Clean { lock, .. },
            })
            | Some(Command::Status { lock, .. }) => Some(lock),
            Some(_) => None,
        }
    }

    /// The ffmpeg and ffprobe named on the command line.
    pub fn tool_choice(&self) -> crate::tools::ToolChoice {
        crate::tools::ToolChoice {
            ffmpeg: self.tools.ffmpeg.clone(),
            ffprobe: self.tools.ffprobe.clone(),
        }
    }

    /// Turns the clap types into plain configuration.
    pub fn into_command(self) -> (RunCommand, OutputConfig) {
        let output = OutputConfig {
            json: self.output.json,
            quiet: self.output.quiet,
            verbose: self.output.verbose,
            stderr_is_tty: std::io::stderr().is_terminal(),
            log_file: self.output.log_file,
        };
        let command = match self.command {
            None => RunCommand::Convert(self.convert.into_config()),
            Some(Command::Doctor(args)) => RunCommand::Doctor(DoctorConfig { dir: args.dir }),
            Some(Command::Pause { dir, reason }) => RunCommand::Pause { dir, reason },
            Some(Command::Resume { dir }) => RunCommand::Resume { dir },
            Some(Command::Locks { command }) => match command {
                LocksCommand::List { dir, lock } => RunCommand::LocksList {
                    dir,
                    lock: lock.settings(),
                },
                LocksCommand::Clean {
                    dir,
                    dry_run,
                    force,
                    lock,
                } => RunCommand::LocksClean {
                    dir,
                    lock: lock.settings(),
                    dry_run,
                    force,
                },
            },
            Some(Command::Status {
                dir,
                media_type,
                watch,
                interval,
                lock,
            }) => RunCommand::Status(StatusConfig {
                dir,
                media_type: media_type.into_config(),
                watch: watch.then_some(interval),
                lock: lock.settings(),
            }),
            Some(Command::Cache(CacheCommand::Build(args))) => {
                RunCommand::CacheBuild(CacheBuildConfig {
                    dir: args.dir,
                    media_type: args.media_type.into_config(),
                    min_age: args.min_age,
                    follow_links: args.follow_links,
                    probe_jobs: args
                        .probe_jobs
                        .map(usize::from)
                        .unwrap_or_else(default_parallelism),
                })
            }
            Some(Command::Cache(CacheCommand::Stats(args))) => {
                RunCommand::CacheStats(CacheStatsConfig {
                    dir: args.dir,
                    media_type: args.media_type.into_config(),
                    follow_links: args.follow_links,
                })
            }
            Some(Command::Dashboard {
                dir,
                listen,
                allow_remote,
                allow_control,
                media_type,
            }) => RunCommand::Dashboard(DashboardConfig {
                dir,
                listen,
                allow_remote,
                allow_control,
                media_type: media_type.into_config(),
            }),
            Some(Command::Metrics {
                dir,
                textfile,
                media_type,
            }) => RunCommand::Metrics(MetricsConfig {
                dir,
                textfile,
                media_type: media_type.into_config(),
            }),
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
            media_type: self.media_type.into_config(),
            dry_run: self.dry_run,
            encode: EncodeSettings {
                quality: crate::encoder::Quality::whole(self.quality),
                preset: self.preset,
            },
            quality_target: match (self.target_vmaf, self.target_ssim) {
                (Some(score), _) => Some(quality::Target {
                    metric: quality::Metric::Vmaf,
                    score,
                }),
                (None, Some(score)) => Some(quality::Target {
                    metric: quality::Metric::Ssim,
                    score,
                }),
                (None, None) => None,
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
            allow: crate::decide::AllowedLosses {
                alpha: self.allow_alpha_loss,
                captions: self.allow_caption_loss,
            },
            probe_jobs: self
                .probe_jobs
                .map(usize::from)
                .unwrap_or_else(default_parallelism),
            encoder: self.encoder.request(),
            fallback: !self.no_fallback,
            jobs: usize::from(self.jobs),
            limits: Limits {
                max_files: self.max_files,
                until: self.until,
                max_runtime: self.max_runtime,
                stop_at_deadline: self.stop_at_deadline,
            },
            lock: self.lock.settings(),
            order: match self.order {
                OrderArg::Largest => Order::Largest,
                OrderArg::Newest => Order::Newest,
                OrderArg::Oldest => Order::Oldest,
                OrderArg::Name => Order::Name,
            },
            retry_failed: self.retry_failed,
        }
    }
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `--target-vmaf`: a VMAF score worth aiming at, 50 to 100.
fn parse_vmaf_target(text: &str) -> Result<f64, String> {
    parse_score(text, 50.0, 100.0, "a VMAF score from 50 to 100, e.g. 95")
}

/// `--target-ssim`: an SSIM, 0.5 to 1.
fn parse_ssim_target(text: &str) -> Result<f64, String> {
    parse_score(text, 0.5, 1.0, "an SSIM from 0.5 to 1, e.g. 0.98")
}

fn parse_score(text: &str, min: f64, max: f64, wanted: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(score) if (min..=max).contains(&score) => Ok(score),
        _ => Err(format!("{text:?} is not {wanted}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<RunCommand, clap::Error> {
        let mut full = vec!["media-converter"];
        full.extend_from_slice(args);
        Cli::try_parse_checked_from(full).map(|cli| cli.into_command().0)
    }

    fn convert(args: &[&str]) -> ConvertConfig {
        match parse(args) {
            Ok(RunCommand::Convert(config)) => config,
            other => panic!("{args:?} is not a conversion: {other:?}"),
        }
    }

    #[test]
    fn a_lock_timeout_within_three_heartbeats_is_refused_everywhere() {
        for args in [
            &["--dir", "lib", "--lock-timeout", "10s"][..],
            &["--dir", "lib", "--lock-timeout", "2m", "--heartbeat", "1m"],
            &["locks", "clean", "lib", "--lock-timeout", "59s"],
            &[
                "locks",
                "list",
                "lib",
                "--lock-timeout",
                "1s",
                "--heartbeat",
                "1s",
            ],
            &["status", "lib", "--lock-timeout", "100s"],
        ] {
            let err = parse(args).expect_err("accepted");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(
                text.contains("--lock-timeout") && text.contains("3 times --heartbeat"),
                "{args:?}: {text}"
            );
        }
        for args in [
            &["--dir", "lib", "--lock-timeout", "3s", "--heartbeat", "1s"][..],
            &["--dir", "lib"],
            &["locks", "clean", "lib", "--lock-timeout", "3m"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn a_huge_lock_timeout_is_a_usage_error_not_a_panic() {
        let err = parse(&["--dir", "lib", "--lock-timeout", "99999999999999999999d"])
            .expect_err("accepted");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("100 years"), "{err}");
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
        assert_eq!(config.encode.quality, crate::encoder::Quality::whole(22));
        assert_eq!(config.encode.preset, "medium");
        assert_eq!(config.encode, EncodeSettings::default());
        assert_eq!(config.min_savings_pct, 10.0);
        assert_eq!(config.min_age, Duration::from_secs(300));
        assert_eq!(config.verify, VerifyMode::Quick);
        assert!(!config.dry_run && !config.keep_original && !config.follow_links);
        assert_eq!(config.encoder, EncoderRequest::Auto);
        assert!(config.fallback);
        assert_eq!(config.order, Order::Largest);
        assert!(!config.retry_failed);
    }

    #[test]
    fn encoder_names_are_ffmpegs_and_no_fallback_turns_it_off() {
        for encoder in Encoder::ALL {
            let config = convert(&["--dir", "a", "--encoder", encoder.name(), "--no-fallback"]);
            assert_eq!(config.encoder, EncoderRequest::Forced(encoder));
            assert!(!config.fallback);
        }
        assert!(parse(&["--dir", "a", "--encoder", "hevc-nvenc"]).is_err());
        assert!(parse(&["--dir", "a", "--encoder", "h264_nvenc"]).is_err());
    }

    #[test]
    fn doctor_takes_an_optional_dir_and_needs_no_convert_target() {
        match parse(&["doctor"]) {
            Ok(RunCommand::Doctor(config)) => assert_eq!(config.dir, None),
            other => panic!("{other:?}"),
        }
        match parse(&["doctor", "--dir", "/mnt/media", "--json"]) {
            Ok(RunCommand::Doctor(config)) => {
                assert_eq!(config.dir, Some(PathBuf::from("/mnt/media")))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["--dir", "a", "doctor"]).is_err());
    }

    #[test]
    fn cache_subcommands_parse_into_their_configs() {
        let RunCommand::CacheBuild(build) =
            parse(&["cache", "build", "/lib", "--probe-jobs", "3"]).unwrap()
        else {
            panic!("cache build")
        };
        assert_eq!(build.dir, PathBuf::from("/lib"));
        assert_eq!(build.probe_jobs, 3);
        assert_eq!(build.min_age, Duration::from_secs(300));
        let RunCommand::CacheStats(stats) =
            parse(&["cache", "stats", "/lib", "--json", "--type", "both"]).unwrap()
        else {
            panic!("cache stats")
        };
        assert_eq!(stats.media_type, MediaType::Both);
        assert!(parse(&["cache", "build"]).is_err(), "DIR is required");
        assert!(parse(&["cache", "stats", "/lib", "--probe-jobs", "2"]).is_err());
        let RunCommand::Convert(config) =
            parse(&["--dir", "/lib", "--order", "oldest", "--retry-failed"]).unwrap()
        else {
            panic!("a convert run")
        };
        assert_eq!(config.order, Order::Oldest);
        assert!(config.retry_failed);
        assert!(parse(&["--dir", "/lib", "--order", "biggest"]).is_err());
    }

    #[test]
    fn dir_and_file_are_exclusive_and_one_is_required() {
        assert!(parse(&["--dir", "a", "--file", "b"]).is_err());
        assert!(parse(&["--type", "audio"]).is_err());
        let config = convert(&["--file", "-x.mkv"]);
        assert_eq!(config.target, Target::File("-x.mkv".into()));
    }

    #[test]
    fn unattended_limits_parse() {
        let RunCommand::Convert(config) = parse(&[
            "--dir",
            "l",
            "--max-files",
            "3",
            "--until",
            "06:30",
            "--max-runtime",
            "2h",
            "--stop-at-deadline",
            "--jobs",
            "2",
        ])
        .unwrap() else {
            panic!("expected a conversion")
        };
        assert_eq!(config.limits.max_files, Some(3));
        assert_eq!(config.limits.max_runtime, Some(Duration::from_secs(7200)));
        assert!(config.limits.stop_at_deadline);
        assert_eq!(config.jobs, 2);
        assert!(parse(&["--dir", "l", "--until", "6pm"]).is_err());
        assert!(parse(&["--dir", "l", "--jobs", "0"]).is_err());
    }

    #[test]
    fn pause_and_resume_are_subcommands() {
        assert!(matches!(
            parse(&["pause", "/lib", "--reason", "backup"]).unwrap(),
            RunCommand::Pause {
                reason: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse(&["resume", "/lib"]).unwrap(),
            RunCommand::Resume { .. }
        ));
    }

    #[test]
    fn dashboard_listens_on_loopback_by_default_and_controls_are_opt_in() {
        let RunCommand::Dashboard(config) = parse(&["dashboard", "/lib"]).unwrap() else {
            panic!("dashboard")
        };
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!config.allow_control && !config.allow_remote);
        let RunCommand::Dashboard(config) = parse(&[
            "dashboard",
            "/lib",
            "--listen",
            "0.0.0.0:9000",
            "--allow-remote",
            "--allow-control",
        ])
        .unwrap() else {
            panic!("dashboard")
        };
        assert!(config.allow_control && config.allow_remote);
        assert!(parse(&["dashboard", "/lib", "--listen", "localhost"]).is_err());
        let RunCommand::Metrics(config) =
            parse(&["metrics", "/lib", "--textfile", "/var/lib/node/m.prom"]).unwrap()
        else {
            panic!("metrics")
        };
        assert_eq!(config.textfile, Some(PathBuf::from("/var/lib/node/m.prom")));
    }

    #[test]
    fn rejects_out_of_range_quality_and_bad_durations() {
        assert!(parse(&["--dir", "a", "--quality", "60"]).is_err());
        assert!(parse(&["--dir", "a", "--min-age", "5 parsecs"]).is_err());
    }

    #[test]
    fn probe_jobs_help_names_what_each_command_runs_at_once() {
        let help = |command: &clap::Command| {
            let arg = command.get_arguments().find(|a| a.get_id() == "probe_jobs");
            arg.and_then(|a| a.get_long_help().or(a.get_help()))
                .map(|h| h.to_string())
                .unwrap()
        };
        let root = Cli::command();
        // A run's survey reads headers itself and runs ffprobe only where they cannot decide.
        let convert = help(&root);
        assert!(convert.contains("header reads"), "{convert}");
        assert!(convert.contains("ffprobe"), "{convert}");
        // `cache build` wants ffprobe's full facts: ffprobe for every file.
        let cache = root.find_subcommand("cache").unwrap();
        let build = help(cache.find_subcommand("build").unwrap());
        assert!(build.contains("ffprobe processes"), "{build}");
        assert!(!build.contains("header"), "{build}");
    }
}
