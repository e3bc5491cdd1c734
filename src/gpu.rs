//! Which HEVC encoders really work on this machine, and which one a run uses
//! (`docs/encoders.md`).
//!
//! Detection gathers [`Facts`] (the platform, what `ffmpeg -encoders` lists, the Linux render
//! nodes, what NVML reports), turns them into candidates, confirms each candidate by a
//! one-frame trial encode through the actual ffmpeg, and [`choose`]s. An encoder ffmpeg
//! lists is often unusable (no driver, no device, a data-centre GPU without NVENC), so only
//! the trial counts. The facts and the trial are injected into [`assess`], which is why every
//! decision here is unit-tested without any GPU.

mod nvml;
mod trial;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::EncoderRequest;
use crate::encoder::{Device, EncodeSettings, Encoder, EncoderSetup, NvencPresets};
use crate::process::run_captured;

pub use nvml::query_nvidia;
pub use trial::{run_trial, trial_timeout};

/// The operating system, which decides which hardware encoders can exist at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// VAAPI and Quick Sync on render nodes, NVENC.
    Linux,
    /// NVENC, Quick Sync, AMF.
    Windows,
    /// VideoToolbox.
    MacOs,
    /// Software only.
    Other,
}

impl Platform {
    /// The platform this binary was built for.
    pub fn current() -> Platform {
        if cfg!(target_os = "linux") {
            Platform::Linux
        } else if cfg!(windows) {
            Platform::Windows
        } else if cfg!(target_os = "macos") {
            Platform::MacOs
        } else {
            Platform::Other
        }
    }

    /// Whether `encoder` can exist on this platform.
    pub fn has(self, encoder: Encoder) -> bool {
        match encoder {
            Encoder::Libx265 => true,
            Encoder::HevcNvenc | Encoder::HevcQsv => {
                matches!(self, Platform::Linux | Platform::Windows)
            }
            Encoder::HevcVaapi => self == Platform::Linux,
            Encoder::HevcAmf => self == Platform::Windows,
            Encoder::HevcVideotoolbox => self == Platform::MacOs,
        }
    }
}

/// Whether an NVIDIA GPU has a hardware encoder, as NVML tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Nvenc {
    /// NVML reports HEVC encoder capacity.
    Present,
    /// NVML reports none: a data-centre GPU such as the A100, H100 or H200.
    Absent,
    /// NVML could not say (an old GPU or driver).
    Unknown,
}

/// One NVIDIA GPU seen by NVML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvidiaGpu {
    /// NVML's index, in PCI bus order.
    pub index: u32,
    /// The marketing name, e.g. `NVIDIA GeForce RTX 3060`.
    pub name: String,
    /// How busy the encoder is, in percent, where NVML knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_utilization: Option<u32>,
    /// Whether it has a hardware encoder at all.
    pub nvenc: Nvenc,
}

/// What NVML reports about NVIDIA GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Nvidia {
    /// No NVIDIA driver, no NVML library, or NVML failed: the reason.
    Unavailable {
        /// Why, in words that point at the fix.
        reason: String,
    },
    /// NVML answered.
    Available {
        /// The NVIDIA driver's version, e.g. `550.54.15`.
        #[serde(skip_serializing_if = "Option::is_none")]
        driver_version: Option<String>,
        /// Every GPU, in NVML's (PCI bus) order.
        gpus: Vec<NvidiaGpu>,
    },
}

/// Everything detection knows before any trial encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Which encoders can exist at all.
    pub platform: Platform,
    /// The HEVC encoders `ffmpeg -encoders` lists; `None` when it could not be asked, and
    /// then every encoder of the platform gets a trial.
    pub listed: Option<BTreeSet<Encoder>>,
    /// Linux DRM render nodes (`/dev/dri/renderD*`), sorted.
    pub render_nodes: Vec<PathBuf>,
    /// What NVML reports: which GPU NVENC should use, and why its trial may fail.
    pub nvidia: Nvidia,
    /// The preset names this ffmpeg's NVENC takes.
    pub nvenc_presets: NvencPresets,
    /// `CUDA_VISIBLE_DEVICES` is set: CUDA's GPU numbers are no longer NVML's, so no GPU is
    /// picked by number and NVENC uses the first one it sees.
    pub cuda_devices_restricted: bool,
}

impl Facts {
    /// Gathers the facts of this machine that matter for the `wanted` encoders: asks ffmpeg
    /// for its encoders, lists render nodes, and asks NVML (loaded at run time; a machine
    /// without the driver gets a reason) when NVENC is wanted.
    ///
    /// The list is asked in a run too, where hardware is wanted: the trial of an encoder
    /// this ffmpeg lacks fails on the first of its options that no other encoder has (a
    /// static ffmpeg 6.0 without NVENC says "Unrecognized option 'rc:v:0'"), which hides the
    /// real reason. Where only libx265 is wanted its trial says all there is to know, and
    /// [`detect`] asks for the list only to explain a trial that fails: one ffmpeg process
    /// fewer at every start.
    pub fn gather(ffmpeg: &Path, wanted: &[Encoder]) -> Facts {
        let platform = Platform::current();
        let nvenc = wanted.contains(&Encoder::HevcNvenc) && platform.has(Encoder::HevcNvenc);
        let hardware = wanted.iter().any(|e| e.is_hardware());
        Facts {
            platform,
            listed: hardware.then(|| listed_encoders(ffmpeg)).flatten(),
            render_nodes: render_nodes(Path::new("/dev/dri")),
            nvidia: if nvenc {
                query_nvidia()
            } else {
                Nvidia::Unavailable {
                    reason: "not asked: NVENC is not wanted".into(),
                }
            },
            cuda_devices_restricted: std::env::var_os("CUDA_VISIBLE_DEVICES").is_some(),
            nvenc_presets: if nvenc {
                nvenc_presets(ffmpeg)
            } else {
                NvencPresets::default()
            },
        }
    }
}

/// The preset names this ffmpeg's NVENC takes, from its help; a help that cannot be read
/// means no `-preset` (the trial then tells whether NVENC works at all).
fn nvenc_presets(ffmpeg: &Path) -> NvencPresets {
    let args = ["-hide_banner", "-h", "encoder=hevc_nvenc"].map(Into::into);
    match run_captured(ffmpeg, &args) {
        Ok(out) => NvencPresets::from_help(&String::from_utf8_lossy(&out.stdout)),
        Err(_) => NvencPresets::Unknown,
    }
}

/// The HEVC encoders ffmpeg was built with, or `None` if it could not be asked.
fn listed_encoders(ffmpeg: &Path) -> Option<BTreeSet<Encoder>> {
    let args = ["-hide_banner", "-encoders"].map(Into::into);
    let out = run_captured(ffmpeg, &args).ok()?;
    Some(parse_encoder_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `ffmpeg -encoders`: after a legend, lines such as
/// ` V....D hevc_nvenc           NVIDIA NVENC hevc encoder (codec hevc)`.
pub fn parse_encoder_list(text: &str) -> BTreeSet<Encoder> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let flags = words.next()?;
            let name = words.next()?;
            // The legend's lines (" V..... = Video") have the same shape; real entries have
            // six flag characters and a video flag.
            (flags.len() == 6 && flags.starts_with('V'))
                .then(|| name.parse().ok())
                .flatten()
        })
        .collect()
}

/// The `renderD*` nodes in `dir`, sorted so the choice is stable from run to run.
pub fn render_nodes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        .map(|e| e.path())
        .collect();
    nodes.sort();
    nodes
}

/// What became of one candidate encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// The trial encode succeeded.
    Works,
    /// The trial encode failed: ffmpeg's reason.
    Failed(String),
    /// Not tried: the encoder does not exist on this platform, or this ffmpeg lacks it.
    Unavailable(String),
}

/// One candidate and its verdict: a line of `doctor`, and of the verbose log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The encoder and the device it was tried on.
    pub setup: EncoderSetup,
    /// How its trial went.
    pub verdict: Verdict,
}

impl Assessment {
    fn works(&self) -> bool {
        self.verdict == Verdict::Works
    }

    /// Why this candidate is not usable, or `None` when it works.
    pub fn reason(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Works => None,
            Verdict::Failed(reason) | Verdict::Unavailable(reason) => Some(reason),
        }
    }
}

/// A trial encode: `Ok` when the encoder produced a frame, else the reason.
pub type Trial<'a> = dyn Fn(&EncoderSetup) -> Result<(), String> + Sync + 'a;

/// Assesses `wanted` encoders (in [`Encoder::ALL`]'s order of preference) on a machine with
/// these facts, running `trial` on every candidate in parallel.
pub fn assess(facts: &Facts, wanted: &[Encoder], trial: &Trial<'_>) -> Vec<Assessment> {
    let mut rows: Vec<(EncoderSetup, Option<Verdict>)> = Vec::new();
    for encoder in Encoder::ALL.into_iter().filter(|e| wanted.contains(e)) {
        let unavailable = |reason: String| {
            let setup = EncoderSetup::on(encoder, Device::Default);
            (setup, Some(Verdict::Unavailable(reason)))
        };
        if !facts.platform.has(encoder) {
            rows.push(unavailable(format!(
                "{encoder} does not exist on {}",
                platform_name(facts.platform)
            )));
            continue;
        }
        if facts.listed.as_ref().is_some_and(|l| !l.contains(&encoder)) {
            rows.push(unavailable(not_built_with(encoder)));
            continue;
        }
        match encoder {
            Encoder::HevcVaapi | Encoder::HevcQsv
                if facts.platform == Platform::Linux && !facts.render_nodes.is_empty() =>
            {
                // Each node may be a different GPU: an Intel one works, an NVIDIA one not.
                for node in &facts.render_nodes {
                    let device = Device::RenderNode(node.clone());
                    rows.push((EncoderSetup::on(encoder, device), None));
                }
            }
            Encoder::HevcNvenc => {
                let device = nvenc_device(&facts.nvidia, facts.cuda_devices_restricted);
                let setup = EncoderSetup {
                    nvenc_presets: facts.nvenc_presets,
                    ..EncoderSetup::on(encoder, device)
                };
                rows.push((setup, None));
            }
            _ => rows.push((EncoderSetup::on(encoder, Device::Default), None)),
        }
    }

    // The trials are independent processes, most of which fail within milliseconds; running
    // them at once keeps detection as fast as the slowest one.
    let results: Vec<Option<Result<(), String>>> = std::thread::scope(|scope| {
        let running: Vec<_> = rows
            .iter()
            .map(|(setup, verdict)| verdict.is_none().then(|| scope.spawn(move || trial(setup))))
            .collect();
        running
            .into_iter()
            .map(|handle| {
                handle.map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("the trial encode crashed".into()))
                })
            })
            .collect()
    });
    for ((setup, verdict), result) in rows.iter_mut().zip(results) {
        *verdict = match result {
            None => verdict.take(),
            Some(Ok(())) => Some(Verdict::Works),
            Some(Err(reason)) => Some(Verdict::Failed(explain_failure(setup, reason, facts))),
        };
    }
    rows.into_iter()
        .map(|(setup, verdict)| Assessment {
            setup,
            verdict: verdict.unwrap_or(Verdict::Failed("not tried".into())),
        })
        .collect()
}

fn not_built_with(encoder: Encoder) -> String {
    format!("this ffmpeg was built without {encoder}")
}

fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Linux => "Linux",
        Platform::Windows => "Windows",
        Platform::MacOs => "macOS",
        Platform::Other => "this operating system",
    }
}

/// The GPU NVENC should use: the least busy one with an encoder, by NVML's number.
///
/// With a single GPU, or when `CUDA_VISIBLE_DEVICES` renumbers them, NVENC picks by itself.
pub fn nvenc_device(nvidia: &Nvidia, cuda_devices_restricted: bool) -> Device {
    let Nvidia::Available { gpus, .. } = nvidia else {
        return Device::Default;
    };
    if gpus.len() < 2 || cuda_devices_restricted {
        return Device::Default;
    }
    gpus.iter()
        .filter(|g| g.nvenc != Nvenc::Absent)
        // An unknown load counts as idle: old GPUs do not report it, and are still usable.
        .min_by_key(|g| (g.encoder_utilization.unwrap_or(0), g.index))
        .map_or(Device::Default, |g| Device::NvidiaGpu(g.index))
}

/// ffmpeg's reason for a failed trial, with what the facts add to it.
fn explain_failure(setup: &EncoderSetup, reason: String, facts: &Facts) -> String {
    match setup.encoder {
        Encoder::HevcNvenc => explain_nvenc_failure(&reason, &facts.nvidia),
        Encoder::HevcVaapi | Encoder::HevcQsv
            if facts.platform == Platform::Linux && facts.render_nodes.is_empty() =>
        {
            format!(
                "{reason} (no GPU render node /dev/dri/renderD*: no GPU driver, or the device \
                 is not passed into this container)"
            )
        }
        _ => reason,
    }
}

/// ffmpeg's reason for a failed NVENC trial, with what NVML knows: a data-centre GPU has no
/// NVENC at all, which ffmpeg words only as "unsupported device".
fn explain_nvenc_failure(reason: &str, nvidia: &Nvidia) -> String {
    match nvidia {
        Nvidia::Unavailable { reason: nvml } => format!("{reason} (NVML: {nvml})"),
        Nvidia::Available { gpus, .. } if gpus.is_empty() => {
            format!("{reason} (NVML sees no NVIDIA GPU)")
        }
        Nvidia::Available { gpus, .. } => {
            let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
            let names = names.join(", ");
            if gpus.iter().all(|g| g.nvenc == Nvenc::Absent) {
                format!(
                    "{reason} (NVML sees {names}, with no hardware video encoder: data-centre \
                     GPUs such as the A100, H100 and H200 have no NVENC)"
                )
            } else {
                format!("{reason} (NVML sees {names})")
            }
        }
    }
}

/// The encoder a run uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The encoder and device every video file starts with.
    pub setup: EncoderSetup,
    /// Whether `--encoder` named it: then HDR sources it cannot carry are skipped, not
    /// redone in software.
    pub forced: bool,
    /// One line on why this one.
    pub detail: String,
    /// Every other candidate and why it was not used.
    pub rejected: Vec<(EncoderSetup, String)>,
}

/// No usable encoder for the request, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEncoder {
    /// The encoder asked for (libx265 for `auto`, which always ends there).
    pub encoder: Encoder,
    /// Its trial results, joined.
    pub reason: String,
}

impl std::fmt::Display for NoEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} does not work here: {}", self.encoder, self.reason)
    }
}

impl std::error::Error for NoEncoder {}

/// Picks from assessed candidates: for `auto` the first that works (hardware before
/// software); for a forced encoder, that encoder on the first device where it works.
pub fn choose(assessments: &[Assessment], request: EncoderRequest) -> Result<Choice, NoEncoder> {
    let wanted = |a: &&Assessment| match request {
        EncoderRequest::Auto => true,
        EncoderRequest::Forced(encoder) => a.setup.encoder == encoder,
    };
    let Some(chosen) = assessments.iter().filter(wanted).find(|a| a.works()) else {
        let encoder = match request {
            EncoderRequest::Forced(encoder) => encoder,
            EncoderRequest::Auto => Encoder::Libx265,
        };
        let reasons: Vec<&str> = assessments
            .iter()
            .filter(|a| a.setup.encoder == encoder)
            .filter_map(Assessment::reason)
            .collect();
        return Err(NoEncoder {
            encoder,
            reason: if reasons.is_empty() {
                "it was not tried".into()
            } else {
                reasons.join("; ")
            },
        });
    };
    let rejected = assessments
        .iter()
        .filter(|a| a.setup != chosen.setup)
        .map(|a| {
            let reason = a.reason().map_or_else(
                || format!("works, but {} comes first", chosen.setup.encoder),
                str::to_string,
            );
            (a.setup.clone(), reason)
        })
        .collect();
    let forced = matches!(request, EncoderRequest::Forced(_));
    let detail = match (forced, chosen.setup.encoder.is_hardware()) {
        (true, _) => "named by --encoder; its trial encode works".to_string(),
        (false, true) => "the first hardware encoder whose trial encode works".to_string(),
        (false, false) => "no hardware encoder works here".to_string(),
    };
    Ok(Choice {
        setup: chosen.setup.clone(),
        forced,
        detail,
        rejected,
    })
}

/// The encoders worth a trial for a request: a forced encoder and libx265 (the fallback), or
/// all of them.
pub fn wanted_for(request: EncoderRequest) -> Vec<Encoder> {
    match request {
        EncoderRequest::Auto => Encoder::ALL.to_vec(),
        EncoderRequest::Forced(encoder) => {
            let mut wanted = vec![encoder];
            if encoder != Encoder::Libx265 {
                wanted.push(Encoder::Libx265);
            }
            wanted
        }
    }
}

/// How many candidates get a trial encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every candidate, so that `doctor` can show ffmpeg's own reason for each.
    Everything,
    /// Only those that could work here: a conversion run rules out hardware whose device or
    /// driver is plainly absent without starting ffmpeg for it.
    Plausible,
}

/// Hardware that cannot work on this machine whatever ffmpeg says, and why: on Linux, QSV
/// and VAAPI open a render node, and without one there is nothing to open.
///
/// NVENC is always tried: its driver can be present where NVML is not.
pub fn implausible(facts: &Facts, wanted: &[Encoder]) -> Vec<(Encoder, String)> {
    let no_node = facts.platform == Platform::Linux && facts.render_nodes.is_empty();
    wanted
        .iter()
        .filter(|e| no_node && matches!(e, Encoder::HevcQsv | Encoder::HevcVaapi))
        .map(|&encoder| {
            let reason = "no GPU render node /dev/dri/renderD*: no GPU driver, or the device \
                          is not passed into this container";
            (encoder, reason.to_string())
        })
        .collect()
}

/// Runs detection on this machine: the facts, then a trial of each wanted candidate (all
/// of them, or the plausible ones) through `ffmpeg` with the run's `settings`.
pub fn detect(
    ffmpeg: &Path,
    wanted: &[Encoder],
    settings: &EncodeSettings,
    scope: Scope,
) -> (Facts, Vec<Assessment>) {
    let mut facts = Facts::gather(ffmpeg, wanted);
    let ruled_out = match scope {
        Scope::Everything => Vec::new(),
        Scope::Plausible => implausible(&facts, wanted),
    };
    let tried: Vec<Encoder> = wanted
        .iter()
        .copied()
        .filter(|e| !ruled_out.iter().any(|(out, _)| out == e))
        .collect();
    let mut assessments = assess(&facts, &tried, &|setup| {
        run_trial(ffmpeg, setup, settings, trial_timeout(setup.encoder))
    });
    let failed = |a: &Assessment| matches!(a.verdict, Verdict::Failed(_));
    if facts.listed.is_none() && assessments.iter().any(failed) {
        // Not asked before the trials (see [`Facts::gather`]): a build without the encoder
        // is named as such, not by ffmpeg's words for an unknown one.
        facts.listed = listed_encoders(ffmpeg);
        if let Some(listed) = &facts.listed {
            for a in assessments.iter_mut().filter(|a| failed(a)) {
                if !listed.contains(&a.setup.encoder) {
                    a.verdict = Verdict::Unavailable(not_built_with(a.setup.encoder));
                }
            }
        }
    }
    assessments.extend(ruled_out.into_iter().map(|(encoder, reason)| Assessment {
        setup: EncoderSetup::on(encoder, Device::Default),
        verdict: Verdict::Unavailable(reason),
    }));
    // The preference order decides the choice, whichever way a candidate was judged.
    assessments.sort_by_key(|a| Encoder::ALL.iter().position(|&e| e == a.setup.encoder));
    (facts, assessments)
}

/// How an encoder choice applies to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForSource {
    /// Encode with this.
    Use(EncoderSetup),
    /// HDR10 that the chosen (hardware) encoder cannot carry, so software does it.
    Software {
        /// Why, for the verbose log.
        reason: String,
    },
    /// HDR10 that the forced (hardware) encoder cannot carry: leave the file alone.
    Skip {
        /// Why, for the `skipped` event.
        reason: String,
    },
}

/// Whether the run's encoder may encode a video stream: HDR10 goes to an encoder that
/// carries its metadata, or to none.
pub fn for_source(choice: &Choice, hdr: bool) -> ForSource {
    let encoder = choice.setup.encoder;
    if !hdr || encoder.carries_hdr10() {
        return ForSource::Use(choice.setup.clone());
    }
    let why = format!(
        "HDR10 source: {encoder} is not trusted to keep its mastering-display and \
         content-light metadata"
    );
    if choice.forced {
        ForSource::Skip {
            reason: format!("{why}; run with --encoder libx265 (or auto) to convert it"),
        }
    } else {
        ForSource::Software {
            reason: format!("{why}, so libx265 encodes it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn linux(listed: &[Encoder], nodes: &[&str], nvidia: Nvidia) -> Facts {
        Facts {
            platform: Platform::Linux,
            listed: Some(listed.iter().copied().collect()),
            render_nodes: nodes.iter().map(PathBuf::from).collect(),
            nvidia,
            cuda_devices_restricted: false,
            nvenc_presets: NvencPresets::default(),
        }
    }

    fn no_nvml() -> Nvidia {
        Nvidia::Unavailable {
            reason: "no NVIDIA driver (libnvidia-ml.so.1 not found)".into(),
        }
    }

    fn gpu(index: u32, name: &str, load: Option<u32>, nvenc: Nvenc) -> NvidiaGpu {
        NvidiaGpu {
            index,
            name: name.into(),
            encoder_utilization: load,
            nvenc,
        }
    }

    /// Debian's ffmpeg: lists the encoders of every vendor, whatever the hardware.
    const DEBIAN: &[Encoder] = &[
        Encoder::Libx265,
        Encoder::HevcNvenc,
        Encoder::HevcQsv,
        Encoder::HevcVaapi,
    ];

    /// A trial that succeeds for the listed setups and fails with ffmpeg's words otherwise,
    /// recording what was tried.
    struct FakeTrials {
        working: Vec<EncoderSetup>,
        failure: String,
        tried: Mutex<Vec<EncoderSetup>>,
    }

    impl FakeTrials {
        fn new(working: &[EncoderSetup], failure: &str) -> FakeTrials {
            FakeTrials {
                working: working.to_vec(),
                failure: failure.into(),
                tried: Mutex::new(Vec::new()),
            }
        }

        fn run(&self, setup: &EncoderSetup) -> Result<(), String> {
            self.tried.lock().unwrap().push(setup.clone());
            if self.working.contains(setup) {
                Ok(())
            } else {
                Err(format!("{}: {}", setup.encoder, self.failure))
            }
        }

        fn tried(&self) -> Vec<Encoder> {
            let mut tried: Vec<Encoder> = self
                .tried
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.encoder)
                .collect();
            tried.sort();
            tried
        }
    }

    fn on(encoder: Encoder, device: Device) -> EncoderSetup {
        EncoderSetup::on(encoder, device)
    }

    fn node(path: &str) -> Device {
        Device::RenderNode(path.into())
    }

    fn verdict_of(assessments: &[Assessment], setup: &EncoderSetup) -> Verdict {
        assessments
            .iter()
            .find(|a| &a.setup == setup)
            .unwrap_or_else(|| panic!("{setup} not assessed: {assessments:?}"))
            .verdict
            .clone()
    }

    #[test]
    fn a_run_tries_only_what_could_work_here() {
        // No render node: QSV and VAAPI are out without a trial; NVENC is still tried.
        let facts = linux(DEBIAN, &[], no_nvml());
        let out = implausible(&facts, &Encoder::ALL);
        let names: Vec<Encoder> = out.iter().map(|(e, _)| *e).collect();
        assert_eq!(names, [Encoder::HevcQsv, Encoder::HevcVaapi]);
        assert!(out[0].1.contains("/dev/dri/renderD"), "{out:?}");
        // With a render node, the trial decides.
        let nodes = ["/dev/dri/renderD128"];
        assert!(implausible(&linux(DEBIAN, &nodes, no_nvml()), &Encoder::ALL).is_empty());
    }

    #[test]
    fn no_gpu_picks_libx265_and_says_why_each_hardware_encoder_is_out() {
        let facts = linux(DEBIAN, &[], no_nvml());
        let trials = FakeTrials::new(&[EncoderSetup::software()], "no device");
        let assessments = assess(&facts, &Encoder::ALL, &|s| trials.run(s));
        // Everything this ffmpeg lists is tried, for ffmpeg's own reason; AMF and
        // VideoToolbox are for other systems.
        assert_eq!(trials.tried(), DEBIAN);

        let choice = choose(&assessments, EncoderRequest::Auto).unwrap();
        assert_eq!(choice.setup, EncoderSetup::software());
        assert!(!choice.forced);
        assert_eq!(choice.detail, "no hardware encoder works here");
        let rejected: Vec<(Encoder, &str)> = choice
            .rejected
            .iter()
            .map(|(s, r)| (s.encoder, r.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    Encoder::HevcNvenc,
                    "hevc_nvenc: no device \
                     (NVML: no NVIDIA driver (libnvidia-ml.so.1 not found))"
                ),
                (
                    Encoder::HevcQsv,
                    "hevc_qsv: no device (no GPU render node /dev/dri/renderD*: no GPU \
                     driver, or the device is not passed into this container)"
                ),
                (
                    Encoder::HevcVaapi,
                    "hevc_vaapi: no device (no GPU render node /dev/dri/renderD*: no GPU \
                     driver, or the device is not passed into this container)"
                ),
                (Encoder::HevcAmf, "hevc_amf does not exist on Linux"),
                (
                    Encoder::HevcVideotoolbox,
                    "hevc_videotoolbox does not exist on Linux"
                ),
            ]
        );
    }

    #[test]
    fn a_data_centre_gpu_has_nvml_but_no_nvenc_and_libx265_is_used() {
        // What an H100 machine reports: NVML works and lists the GPU, the encoder query is
        // "not supported", and ffmpeg's NVENC trial fails.
        let nvidia = Nvidia::Available {
            driver_version: Some("550.54.15".into()),
            gpus: vec![gpu(0, "NVIDIA H100 80GB HBM3", None, Nvenc::Absent)],
        };
        let facts = linux(DEBIAN, &[], nvidia);
        let trials = FakeTrials::new(
            &[EncoderSetup::software()],
            "OpenEncodeSessionEx failed: unsupported device (2): (no details) | \
             No capable devices found",
        );
        let assessments = assess(&facts, &Encoder::ALL, &|s| trials.run(s));
        let nvenc = verdict_of(&assessments, &on(Encoder::HevcNvenc, Device::Default));
        let Verdict::Failed(reason) = nvenc else {
            panic!("NVENC must fail its trial: {nvenc:?}");
        };
        assert!(
            reason.starts_with("hevc_nvenc: OpenEncodeSessionEx failed: unsupported device"),
            "ffmpeg's reason comes first: {reason}"
        );
        assert!(
            reason.contains("NVML sees NVIDIA H100 80GB HBM3, with no hardware video encoder"),
            "{reason}"
        );
        let choice = choose(&assessments, EncoderRequest::Auto).unwrap();
        assert_eq!(choice.setup.encoder, Encoder::Libx265);
    }

    #[test]
    fn a_working_nvidia_card_wins_over_intel_and_software() {
        let nvidia = Nvidia::Available {
            driver_version: Some("550.54".into()),
            gpus: vec![gpu(0, "NVIDIA GeForce RTX 3060", Some(0), Nvenc::Present)],
        };
        let facts = linux(DEBIAN, &["/dev/dri/renderD128"], nvidia);
        let working = [
            on(Encoder::HevcNvenc, Device::Default),
            on(Encoder::HevcQsv, node("/dev/dri/renderD128")),
            on(Encoder::HevcVaapi, node("/dev/dri/renderD128")),
            EncoderSetup::software(),
        ];
        let trials = FakeTrials::new(&working, "unused");
        let assessments = assess(&facts, &Encoder::ALL, &|s| trials.run(s));
        let choice = choose(&assessments, EncoderRequest::Auto).unwrap();
        assert_eq!(choice.setup, on(Encoder::HevcNvenc, Device::Default));
        assert_eq!(
            choice.detail,
            "the first hardware encoder whose trial encode works"
        );
        let qsv = choice
            .rejected
            .iter()
            .find(|(s, _)| s.encoder == Encoder::HevcQsv)
            .unwrap();
        assert_eq!(qsv.1, "works, but hevc_nvenc comes first");
    }

    #[test]
    fn nvenc_is_tried_and_used_with_the_preset_names_of_this_ffmpeg() {
        let nvidia = Nvidia::Available {
            driver_version: Some("550.54".into()),
            gpus: vec![gpu(0, "NVIDIA GeForce RTX 3060", Some(0), Nvenc::Present)],
        };
        let facts = Facts {
            nvenc_presets: NvencPresets::Named,
            ..linux(DEBIAN, &[], nvidia)
        };
        let tried = Mutex::new(Vec::new());
        let assessments = assess(&facts, &[Encoder::HevcNvenc], &|setup| {
            tried.lock().unwrap().push(setup.clone());
            Ok(())
        });
        let choice = choose(&assessments, EncoderRequest::Auto).unwrap();
        assert_eq!(choice.setup.nvenc_presets, NvencPresets::Named);
        assert_eq!(*tried.lock().unwrap(), [choice.setup]);
    }

    #[test]
    fn each_render_node_is_tried_and_the_working_one_is_used() {
        // renderD128 is an NVIDIA card without a VAAPI driver, renderD129 the Intel iGPU.
        let facts = linux(
            DEBIAN,
            &["/dev/dri/renderD128", "/dev/dri/renderD129"],
            no_nvml(),
        );
        let intel = node("/dev/dri/renderD129");
        let trials = FakeTrials::new(
            &[
                on(Encoder::HevcVaapi, intel.clone()),
                EncoderSetup::software(),
            ],
            "Failed to initialise VAAPI connection: -1 (unknown libva error)",
        );
        let assessments = assess(&facts, &Encoder::ALL, &|s| trials.run(s));
        assert!(matches!(
            verdict_of(&assessments, &on(Encoder::HevcQsv, intel.clone())),
            Verdict::Failed(_)
        ));
        let choice = choose(&assessments, EncoderRequest::Auto).unwrap();
        assert_eq!(choice.setup, on(Encoder::HevcVaapi, intel));
        // Forced to QSV, which works nowhere: the reasons of both nodes are given.
        let err = choose(&assessments, EncoderRequest::Forced(Encoder::HevcQsv)).unwrap_err();
        assert_eq!(err.encoder, Encoder::HevcQsv);
        assert_eq!(err.reason.matches("unknown libva error").count(), 2);
    }

    #[test]
    fn an_encoder_ffmpeg_does_not_list_is_not_tried() {
        let facts = linux(&[Encoder::Libx265], &["/dev/dri/renderD128"], no_nvml());
        let trials = FakeTrials::new(&[EncoderSetup::software()], "unused");
        let assessments = assess(&facts, &Encoder::ALL, &|s| trials.run(s));
        assert_eq!(trials.tried(), [Encoder::Libx265]);
        assert_eq!(
            verdict_of(&assessments, &on(Encoder::HevcVaapi, Device::Default)),
            Verdict::Unavailable("this ffmpeg was built without hevc_vaapi".into())
        );
        // When the list could not be read, everything possible gets a trial instead.
        let unknown = Facts {
            listed: None,
            ..facts
        };
        let trials = FakeTrials::new(&[EncoderSetup::software()], "unused");
        assess(&unknown, &Encoder::ALL, &|s| trials.run(s));
        assert_eq!(
            trials.tried(),
            [
                Encoder::Libx265,
                Encoder::HevcNvenc,
                Encoder::HevcQsv,
                Encoder::HevcVaapi
            ]
        );
    }

    #[test]
    fn windows_and_macos_have_their_own_candidates() {
        let all: Vec<Encoder> = Encoder::ALL.to_vec();
        let trials = FakeTrials::new(&[], "unused");
        let windows = Facts {
            platform: Platform::Windows,
            listed: Some(all.iter().copied().collect()),
            render_nodes: Vec::new(),
            nvidia: no_nvml(),
            cuda_devices_restricted: false,
            nvenc_presets: NvencPresets::default(),
        };
        assess(&windows, &all, &|s| trials.run(s));
        assert_eq!(
            trials.tried(),
            [
                Encoder::Libx265,
                Encoder::HevcNvenc,
                Encoder::HevcQsv,
                Encoder::HevcAmf
            ]
        );
        let trials = FakeTrials::new(&[], "unused");
        let mac = Facts {
            platform: Platform::MacOs,
            ..windows
        };
        assess(&mac, &all, &|s| trials.run(s));
        assert_eq!(
            trials.tried(),
            [Encoder::Libx265, Encoder::HevcVideotoolbox]
        );
    }

    #[test]
    fn the_least_busy_gpu_with_an_encoder_is_chosen() {
        let gpus = vec![
            gpu(0, "NVIDIA H100", None, Nvenc::Absent),
            gpu(1, "RTX A4000", Some(80), Nvenc::Present),
            gpu(2, "RTX A4000", Some(10), Nvenc::Present),
            gpu(3, "RTX A4000", Some(10), Nvenc::Unknown),
        ];
        let nvidia = Nvidia::Available {
            driver_version: None,
            gpus,
        };
        assert_eq!(nvenc_device(&nvidia, false), Device::NvidiaGpu(2));
        // CUDA_VISIBLE_DEVICES renumbers GPUs: no number can be trusted.
        assert_eq!(nvenc_device(&nvidia, true), Device::Default);
        let one = Nvidia::Available {
            driver_version: None,
            gpus: vec![gpu(0, "RTX 3060", Some(90), Nvenc::Present)],
        };
        assert_eq!(nvenc_device(&one, false), Device::Default);
        assert_eq!(nvenc_device(&no_nvml(), false), Device::Default);
    }

    #[test]
    fn a_forced_encoder_is_used_only_where_its_trial_works() {
        let facts = linux(DEBIAN, &[], no_nvml());
        let nvenc = on(Encoder::HevcNvenc, Device::Default);
        let trials = FakeTrials::new(&[nvenc.clone(), EncoderSetup::software()], "unused");
        let wanted = wanted_for(EncoderRequest::Forced(Encoder::HevcNvenc));
        assert_eq!(wanted, [Encoder::HevcNvenc, Encoder::Libx265]);
        let assessments = assess(&facts, &wanted, &|s| trials.run(s));
        let choice = choose(&assessments, EncoderRequest::Forced(Encoder::HevcNvenc)).unwrap();
        assert_eq!((choice.setup, choice.forced), (nvenc, true));

        let broken = FakeTrials::new(&[EncoderSetup::software()], "Cannot load libcuda.so.1");
        let assessments = assess(&facts, &wanted, &|s| broken.run(s));
        let err = choose(&assessments, EncoderRequest::Forced(Encoder::HevcNvenc)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("hevc_nvenc does not work here: hevc_nvenc: Cannot load libcuda"),
            "{err}"
        );
        // An ffmpeg without a working libx265 leaves auto nothing.
        let nothing = FakeTrials::new(&[], "Unknown encoder 'libx265'");
        let assessments = assess(&facts, &Encoder::ALL, &|s| nothing.run(s));
        let err = choose(&assessments, EncoderRequest::Auto).unwrap_err();
        assert_eq!(err.encoder, Encoder::Libx265);
        assert!(err.reason.contains("Unknown encoder 'libx265'"), "{err}");
    }

    #[test]
    fn hdr_sources_never_go_to_hardware() {
        let choice = |encoder, forced| Choice {
            setup: on(encoder, Device::Default),
            forced,
            detail: String::new(),
            rejected: Vec::new(),
        };
        let nvenc = on(Encoder::HevcNvenc, Device::Default);
        assert_eq!(
            for_source(&choice(Encoder::HevcNvenc, false), false),
            ForSource::Use(nvenc)
        );
        assert!(matches!(
            for_source(&choice(Encoder::HevcNvenc, false), true),
            ForSource::Software { reason } if reason.contains("libx265 encodes it")
        ));
        assert!(matches!(
            for_source(&choice(Encoder::HevcVaapi, true), true),
            ForSource::Skip { reason } if reason.contains("--encoder libx265")
        ));
        assert_eq!(
            for_source(&choice(Encoder::Libx265, true), true),
            ForSource::Use(EncoderSetup::software())
        );
    }

    #[test]
    fn parses_the_encoder_list_of_a_real_ffmpeg() {
        // Captured from Debian 12's ffmpeg 5.1 (abridged).
        let text = "Encoders:
 V..... = Video
 A..... = Audio
 S..... = Subtitle
 .F.... = Frame-level multithreading
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libx265              libx265 H.265 / HEVC (codec hevc)
 V....D hevc_nvenc           NVIDIA NVENC hevc encoder (codec hevc)
 V..... hevc_qsv             HEVC (Intel Quick Sync Video acceleration) (codec hevc)
 V..... hevc_v4l2m2m         V4L2 mem2mem HEVC encoder wrapper (codec hevc)
 V....D hevc_vaapi           H.265/HEVC (VAAPI) (codec hevc)
 A....D aac                  AAC (Advanced Audio Coding)
";
        let listed: Vec<Encoder> = parse_encoder_list(text).into_iter().collect();
        assert_eq!(listed, DEBIAN);
    }

    #[test]
    fn render_nodes_are_found_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["renderD129", "card0", "renderD128", "by-path"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            render_nodes(dir.path()),
            [dir.path().join("renderD128"), dir.path().join("renderD129")]
        );
        assert!(render_nodes(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn verdicts_serialize_with_status_and_reason() {
        let json = serde_json::to_value(Verdict::Failed("boom".into())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "failed", "reason": "boom"})
        );
        let json = serde_json::to_value(Verdict::Works).unwrap();
        assert_eq!(json, serde_json::json!({"status": "works"}));
    }
}
