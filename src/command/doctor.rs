//! `media-converter doctor [--dir DIR] [--json]`: whether this host can run conversions, and
//! if not, what to fix. ffmpeg and ffprobe, every candidate encoder with its trial result,
//! the GPUs NVML sees, and with `--dir` the share itself.
//!
//! The report is the command's data, so it goes to stdout: text, or with `--json` one
//! object with `"event": "doctor"`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::config::{DoctorConfig, EncoderRequest};
use crate::encoder::{Device, EncodeSettings, Encoder, NvencPresets};
use crate::exit_codes::ExitCode;
use crate::gpu::{self, Assessment, Nvenc, Nvidia, Platform, Verdict};
use crate::output;
use crate::process::run_captured;
use crate::share::{self, Check, ShareReport};

/// ffmpeg or ffprobe: where it is and which version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolReport {
    /// `ffmpeg` or `ffprobe`.
    pub name: &'static str,
    /// Where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What chose it: `flag` (`--ffmpeg`), `environment` (`MEDIA_CONVERTER_FFMPEG`), `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_by: Option<crate::tools::ChosenBy>,
    /// The first line of `-version`, up to the copyright.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it is missing or broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One candidate encoder and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncoderReport {
    pub encoder: Encoder,
    /// The render node or GPU it was tried on, where it matters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `status` and `reason` in JSON.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoctorReport {
    /// Always `doctor`, like the `event` field of every other JSON line.
    pub event: &'static str,
    /// Whether this host can run conversions (exit 0).
    pub ok: bool,
    /// This tool's version.
    pub version: &'static str,
    pub platform: Platform,
    pub ffmpeg: ToolReport,
    pub ffprobe: ToolReport,
    /// The GPUs NVML sees, or why none.
    pub nvidia: Nvidia,
    /// Linux DRM render nodes, for VAAPI and Quick Sync.
    pub render_nodes: Vec<String>,
    /// Every candidate, hardware first; empty without ffmpeg.
    pub encoders: Vec<EncoderReport>,
    /// What `--encoder auto` would use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    /// With `--dir`: what the share can do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<ShareReport>,
    /// What stops the tool, each with its fix; empty when `ok`.
    pub problems: Vec<String>,
}

/// Runs the checks, prints the report, and exits 0 when the tool can run, 2 when not.
pub fn run(config: &DoctorConfig, json: bool) -> ExitCode {
    let report = examine(config);
    let text = if json {
        serde_json::to_string(&report)
            .map(|line| line + "\n")
            .unwrap_or_else(|err| format!("{{\"event\":\"doctor\",\"error\":\"{err}\"}}\n"))
    } else {
        render(&report)
    };
    output::print_data(&text);
    if report.ok {
        ExitCode::Success
    } else {
        ExitCode::UsageOrSetup
    }
}

/// Gathers the report on this machine.
pub fn examine(config: &DoctorConfig) -> DoctorReport {
    let ffmpeg = locate("ffmpeg");
    let ffprobe = locate("ffprobe");
    let mut problems = Vec::new();
    for tool in [&ffmpeg, &ffprobe] {
        if let Some(error) = &tool.error {
            problems.push(error.clone());
        }
    }

    let (facts, assessments) = match ffmpeg.path.as_deref().filter(|_| ffmpeg.error.is_none()) {
        Some(path) => {
            let (facts, assessments) = gpu::detect(
                Path::new(path),
                &Encoder::ALL,
                &EncodeSettings::default(),
                gpu::Scope::Everything,
            );
            (facts, assessments)
        }
        None => (
            gpu::Facts {
                platform: Platform::current(),
                listed: None,
                render_nodes: gpu::render_nodes(Path::new("/dev/dri")),
                nvidia: gpu::query_nvidia(),
                cuda_devices_restricted: false,
                nvenc_presets: NvencPresets::Unknown,
            },
            Vec::new(),
        ),
    };
    let auto = if assessments.is_empty() {
        None
    } else {
        match gpu::choose(&assessments, EncoderRequest::Auto) {
            Ok(choice) => Some(choice.setup.to_string()),
            Err(err) => {
                problems.push(format!(
                    "no HEVC encoder works: {err}; install an ffmpeg built with libx265"
                ));
                None
            }
        }
    };

    let share = config.dir.as_deref().map(share::check);
    if let Some(share) = &share {
        if !share.usable() {
            problems.push(format!(
                "{} cannot hold conversions safely: {}",
                share.dir,
                share
                    .failures()
                    .map(|c| c.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }

    DoctorReport {
        event: "doctor",
        ok: problems.is_empty(),
        version: env!("CARGO_PKG_VERSION"),
        platform: facts.platform,
        ffmpeg,
        ffprobe,
        nvidia: facts.nvidia,
        render_nodes: facts
            .render_nodes
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        encoders: assessments.into_iter().map(encoder_report).collect(),
        auto,
        share,
        problems,
    }
}

fn encoder_report(assessment: Assessment) -> EncoderReport {
    EncoderReport {
        encoder: assessment.setup.encoder,
        device: match assessment.setup.device {
            Device::Default => None,
            device => Some(device.to_string()),
        },
        verdict: assessment.verdict,
    }
}

fn locate(name: &'static str) -> ToolReport {
    let missing = |error: String| ToolReport {
        name,
        path: None,
        chosen_by: None,
        version: None,
        error: Some(error),
    };
    let found = match crate::tools::find(name) {
        Ok(found) => found,
        Err(err) => return missing(err.to_string()),
    };
    let shown = found.path.to_string_lossy().into_owned();
    let chosen_by = Some(found.chosen_by);
    match run_captured(&found.path, &[OsString::from("-version")]) {
        Ok(out) => ToolReport {
            name,
            path: Some(shown),
            chosen_by,
            version: version_line(&String::from_utf8_lossy(&out.stdout)),
            error: None,
        },
        Err(err) => ToolReport {
            name,
            path: Some(shown),
            chosen_by,
            version: None,
            error: Some(format!(
                "{name} (from {}) does not run: {err}",
                found.chosen_by.describe(name)
            )),
        },
    }
}

/// `ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 …` -> `5.1.9-0+deb12u1`.
pub fn version_line(text: &str) -> Option<String> {
    let first = text.lines().next()?.trim();
    let version = first.split(" version ").nth(1)?;
    let version = version.split(" Copyright").next().unwrap_or(version).trim();
    (!version.is_empty()).then(|| version.to_string())
}

/// The report as text for people.
pub fn render(report: &DoctorReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason only.
    let _ = writeln!(out, "media-converter {} doctor\n", report.version);
    for tool in [&report.ffmpeg, &report.ffprobe] {
        let _ = match (&tool.path, &tool.error) {
            (Some(path), None) => writeln!(
                out,
                "{:<8} {path} (version {}, from {})",
                tool.name,
                tool.version.as_deref().unwrap_or("unknown"),
                tool.chosen_by
                    .map_or_else(|| "PATH".into(), |c| c.describe(tool.name))
            ),
            (_, Some(error)) => writeln!(out, "{:<8} MISSING: {error}", tool.name),
            (None, None) => writeln!(out, "{:<8} not found", tool.name),
        };
    }

    let _ = writeln!(out);
    match &report.nvidia {
        Nvidia::Unavailable { reason } => {
            let _ = writeln!(out, "NVIDIA GPUs (NVML): none: {reason}");
        }
        Nvidia::Available {
            driver_version,
            gpus,
        } => {
            let _ = writeln!(
                out,
                "NVIDIA GPUs (NVML): driver {}, {} GPU(s)",
                driver_version.as_deref().unwrap_or("unknown"),
                gpus.len()
            );
            for gpu in gpus {
                let nvenc = match gpu.nvenc {
                    Nvenc::Present => "has NVENC",
                    Nvenc::Absent => "no NVENC",
                    Nvenc::Unknown => "NVENC unknown",
                };
                let load = gpu
                    .encoder_utilization
                    .map_or_else(String::new, |u| format!(", encoder {u}% busy"));
                let _ = writeln!(out, "  GPU {}: {} ({nvenc}{load})", gpu.index, gpu.name);
            }
        }
    }
    let nodes = if report.render_nodes.is_empty() {
        "none".to_string()
    } else {
        report.render_nodes.join(", ")
    };
    let _ = writeln!(out, "GPU render nodes: {nodes}");

    if !report.encoders.is_empty() {
        let _ = writeln!(
            out,
            "\nEncoders (each tried with a one-frame encode through this ffmpeg):"
        );
        for row in &report.encoders {
            let name = match &row.device {
                Some(device) => format!("{} on {device}", row.encoder),
                None => row.encoder.name().to_string(),
            };
            let verdict = match &row.verdict {
                Verdict::Works => "works".to_string(),
                Verdict::Failed(reason) => format!("unusable: {reason}"),
                Verdict::Unavailable(reason) => format!("unavailable: {reason}"),
            };
            let _ = writeln!(out, "  {name:<20} {verdict}");
        }
    }
    if let Some(auto) = &report.auto {
        let _ = writeln!(out, "--encoder auto uses: {auto}");
    }

    if let Some(share) = &report.share {
        let _ = writeln!(out, "\nShare {}:", share.dir);
        let rows: [(&str, &Check); 7] = [
            ("exclusive create", &share.exclusive_create),
            ("rename over", &share.rename_over),
            ("hard links", &share.hard_link),
            ("conversion", &share.conversion),
            ("free space", &share.free_space),
            ("clock", &share.clock),
            ("write stamps", &share.write_stamp),
        ];
        for (what, check) in rows {
            let mark = if check.ok { "ok" } else { "NO" };
            let _ = writeln!(out, "  {what:<17} {mark:<3} {}", check.detail);
        }
    }

    let _ = writeln!(out);
    if report.ok {
        let _ = writeln!(out, "Ready: this host can convert.");
    } else {
        let _ = writeln!(out, "Cannot run:");
        for problem in &report.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::NvidiaGpu;

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            version_line(
                "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers\n\
                 built with gcc 12"
            )
            .as_deref(),
            Some("5.1.9-0+deb12u1")
        );
        assert_eq!(
            version_line("ffprobe version n7.1 Copyright (c) 2007-2024").as_deref(),
            Some("n7.1")
        );
        assert_eq!(version_line("garbage"), None);
        assert_eq!(version_line(""), None);
    }

    fn report(ok: bool) -> DoctorReport {
        DoctorReport {
            event: "doctor",
            ok,
            version: "0.1.0",
            platform: Platform::Linux,
            ffmpeg: ToolReport {
                name: "ffmpeg",
                path: Some("/usr/bin/ffmpeg".into()),
                chosen_by: Some(crate::tools::ChosenBy::Environment),
                version: Some("5.1.9".into()),
                error: None,
            },
            ffprobe: ToolReport {
                name: "ffprobe",
                path: None,
                chosen_by: None,
                version: None,
                error: Some("ffprobe not found on PATH; install ffmpeg".into()),
            },
            nvidia: Nvidia::Available {
                driver_version: Some("550.54.15".into()),
                gpus: vec![NvidiaGpu {
                    index: 0,
                    name: "NVIDIA H100 80GB HBM3".into(),
                    encoder_utilization: None,
                    nvenc: Nvenc::Absent,
                }],
            },
            render_nodes: Vec::new(),
            encoders: vec![
                EncoderReport {
                    encoder: Encoder::HevcNvenc,
                    device: None,
                    verdict: Verdict::Failed("OpenEncodeSessionEx failed".into()),
                },
                EncoderReport {
                    encoder: Encoder::Libx265,
                    device: None,
                    verdict: Verdict::Works,
                },
            ],
            auto: Some("libx265".into()),
            share: None,
            problems: if ok {
                Vec::new()
            } else {
                vec!["ffprobe not found on PATH; install ffmpeg".into()]
            },
        }
    }

    #[test]
    fn the_text_names_gpus_verdicts_and_problems() {
        let text = render(&report(false));
        assert!(
            text.contains("ffmpeg   /usr/bin/ffmpeg (version 5.1.9, from MEDIA_CONVERTER_FFMPEG)"),
            "{text}"
        );
        assert!(
            text.contains("ffprobe  MISSING: ffprobe not found on PATH"),
            "{text}"
        );
        assert!(
            text.contains("NVIDIA GPUs (NVML): driver 550.54.15, 1 GPU(s)\n  GPU 0: NVIDIA H100 80GB HBM3 (no NVENC)"),
            "{text}"
        );
        assert!(
            text.contains("  hevc_nvenc           unusable: OpenEncodeSessionEx failed"),
            "{text}"
        );
        assert!(text.contains("  libx265              works"), "{text}");
        assert!(text.contains("--encoder auto uses: libx265"), "{text}");
        assert!(
            text.ends_with("Cannot run:\n  - ffprobe not found on PATH; install ffmpeg\n"),
            "{text}"
        );
        assert!(render(&report(true)).ends_with("Ready: this host can convert.\n"));
    }

    #[test]
    fn the_json_is_one_doctor_object() {
        let value = serde_json::to_value(report(true)).unwrap();
        assert_eq!(value["event"], "doctor");
        assert_eq!(value["ok"], true);
        assert_eq!(value["nvidia"]["status"], "available");
        assert_eq!(value["nvidia"]["gpus"][0]["nvenc"], "absent");
        assert_eq!(value["encoders"][0]["encoder"], "hevc_nvenc");
        assert_eq!(value["encoders"][0]["status"], "failed");
        assert_eq!(value["encoders"][0]["reason"], "OpenEncodeSessionEx failed");
        assert_eq!(value["encoders"][1]["status"], "works");
        assert!(value.get("share").is_none());
    }
}
