//! Plain run configuration, built from the command line before any I/O.
//!
//! Nothing below `cli.rs` sees clap: modules take these structs.

use std::path::PathBuf;
use std::time::Duration;

use crate::encoder::{EncodeSettings, Encoder};

/// Which kinds of media a run converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Video,
    Audio,
    Both,
}

impl MediaType {
    /// Whether files of `kind` are in scope for this run.
    pub fn includes(self, kind: MediaKind) -> bool {
        matches!(
            (self, kind),
            (MediaType::Both, _)
                | (MediaType::Video, MediaKind::Video)
                | (MediaType::Audio, MediaKind::Audio)
        )
    }
}

/// What a single file is, judged by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
}

/// How thoroughly a new file is decoded before it replaces the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Decode short windows at the start, middle and end.
    Quick,
    /// Decode every frame of every stream.
    Full,
}

/// Where a run takes its files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir(PathBuf),
    File(PathBuf),
}

/// The order in which a run converts its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The biggest estimated saving first: the most space back soonest.
    Largest,
    /// The most recently modified first.
    Newest,
    /// The least recently modified first.
    Oldest,
    /// By path.
    Name,
}

/// Which encoder a run uses: `--encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderRequest {
    /// The best encoder that passes a trial encode on this machine, libx265 at worst.
    Auto,
    /// This one encoder; files it cannot do are retried with libx265 (unless
    /// `--no-fallback`) or skipped (HDR on hardware).
    Forced(Encoder),
}

/// Everything a conversion run needs to know.
#[derive(Debug, Clone)]
pub struct ConvertConfig {
    pub target: Target,
    pub media_type: MediaType,
    pub dry_run: bool,
    pub encode: EncodeSettings,
    /// `--target-vmaf`/`--target-ssim`: each file's quality is searched for this score
    /// (`encode.quality` is then only where the search starts).
    pub quality_target: Option<crate::quality::Target>,
    /// The new file must be at least this many percent smaller, or the original stays.
    pub min_savings_pct: f64,
    /// Files modified more recently than this are skipped (a download in progress).
    pub min_age: Duration,
    pub verify: VerifyMode,
    pub keep_original: bool,
    pub follow_links: bool,
    pub allow_dv_loss: bool,
    pub allow: crate::decide::AllowedLosses,
    /// How many files are surveyed at once (native header reads or ffprobe processes).
    pub probe_jobs: usize,
    /// How many conversions run at once on this host.
    pub jobs: usize,
    pub limits: crate::unattended::Limits,
    /// Heartbeat interval and staleness threshold of the lock protocol.
    pub lock: crate::lock::LockSettings,
    /// `--encoder`: auto-detected, or named.
    pub encoder: EncoderRequest,
    /// Whether a failed hardware encode is redone with libx265 (false: `--no-fallback`).
    pub fallback: bool,
    /// The order in which candidates are converted.
    pub order: Order,
    /// Try files again that failed `cache::FAILURE_LIMIT` times.
    pub retry_failed: bool,
}

impl ConvertConfig {
    /// The same run at another `--quality`: what a quality search found for one file.
    pub fn with_quality(&self, quality: crate::encoder::Quality) -> ConvertConfig {
        let mut config = self.clone();
        config.encode.quality = quality;
        config
    }
}

/// What `media-converter doctor` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorConfig {
    /// A directory on the share to test: exclusive create, rename, hard links, space, clock.
    pub dir: Option<PathBuf>,
}

/// `cache build`: probe every file whose cache entry is not fresh.
#[derive(Debug, Clone)]
pub struct CacheBuildConfig {
    /// The library, walked recursively.
    pub dir: PathBuf,
    /// Which media to probe.
    pub media_type: MediaType,
    /// Files modified more recently than this are left for later (a download in progress).
    pub min_age: Duration,
    /// Follow symbolic links while walking.
    pub follow_links: bool,
    /// How many ffprobe processes run at once.
    pub probe_jobs: usize,
}

/// `cache stats`: what the caches say about a library.
#[derive(Debug, Clone)]
pub struct CacheStatsConfig {
    /// The library, walked recursively.
    pub dir: PathBuf,
    /// Which media to count.
    pub media_type: MediaType,
    /// Follow symbolic links while walking.
    pub follow_links: bool,
}

/// How output is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputConfig {
    /// One JSON object per line on stdout.
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    /// Whether stderr is a terminal (progress bars) or a log (plain lines).
    pub stderr_is_tty: bool,
    /// Also append plain timestamped lines to this file.
    pub log_file: Option<PathBuf>,
}

/// What `status` looks at.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The library's root.
    pub dir: PathBuf,
    /// Which media the totals count.
    pub media_type: MediaType,
    /// Redraw every this often until Ctrl-C; `None` prints once.
    pub watch: Option<Duration>,
    /// Thresholds for judging locks live or stale.
    pub lock: crate::lock::LockSettings,
}

/// What `dashboard` serves.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The library's root.
    pub dir: PathBuf,
    /// Where the page is served.
    pub listen: std::net::SocketAddr,
    /// Listening on an address other machines can reach was asked for explicitly.
    pub allow_remote: bool,
    /// Pause, resume, retry and priority controls, each request with the printed token.
    pub allow_control: bool,
    /// Which media the totals count.
    pub media_type: MediaType,
}

/// What `metrics` reads and where it writes.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The library's root.
    pub dir: PathBuf,
    /// Written atomically here (node_exporter's textfile collector); stdout without it.
    pub textfile: Option<PathBuf>,
    /// Which media the totals count.
    pub media_type: MediaType,
}
