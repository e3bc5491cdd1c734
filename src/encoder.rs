//! The HEVC encoders ffmpeg can drive, and how one `--quality` scale maps onto each one's
//! own controls.
//!
//! Every encoder-specific flag lives here, so that the transcode step only asks for "the
//! arguments that encode this stream", and the trial encode in [`crate::gpu`] runs exactly
//! the arguments a real encode will. The mapping is documented in `docs/encoders.md`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::probe::{HdrMetadata, Stream};

/// How the encoder is driven: the knobs shared by every encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeSettings {
    /// CRF-like quality: lower is better and bigger.
    pub quality: Quality,
    /// Encoder speed preset (libx265 names: ultrafast … placebo).
    pub preset: String,
}

impl Default for EncodeSettings {
    /// The command line's defaults (`--quality 22 --preset medium`), for `doctor`'s trials.
    fn default() -> EncodeSettings {
        EncodeSettings {
            quality: Quality::whole(22),
            preset: "medium".into(),
        }
    }
}

/// A value of the `--quality` scale, to a tenth: what `--quality` gives (whole) or a quality
/// search finds (a tenth where the encoder's control takes one, [`Encoder::quality_step`]).
/// In JSON it is a number: a whole value as an integer, as before tenths existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quality(u16);

impl Quality {
    /// A whole value: `--quality 22`.
    pub const fn whole(value: u8) -> Quality {
        Quality(value as u16 * 10)
    }

    /// A value in tenths: `from_tenths(263)` is 26.3.
    pub const fn from_tenths(tenths: u16) -> Quality {
        Quality(tenths)
    }

    pub const fn tenths(self) -> u16 {
        self.0
    }

    pub fn value(self) -> f64 {
        f64::from(self.0) / 10.0
    }

    /// The nearest whole value, for the controls that take only integers.
    pub fn rounded(self) -> u8 {
        u8::try_from(self.0.saturating_add(5) / 10).unwrap_or(u8::MAX)
    }

    pub fn is_whole(self) -> bool {
        self.0 % 10 == 0
    }

    fn clamp_whole(self, low: u8, high: u8) -> Quality {
        Quality(self.0.clamp(Quality::whole(low).0, Quality::whole(high).0))
    }
}

impl fmt::Display for Quality {
    /// `26` or `26.3`: what ffmpeg's float options read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 % 10 {
            0 => write!(f, "{}", self.0 / 10),
            tenth => write!(f, "{}.{tenth}", self.0 / 10),
        }
    }
}

impl serde::Serialize for Quality {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_whole() {
            serializer.serialize_u16(self.0 / 10)
        } else {
            serializer.serialize_f64(self.value())
        }
    }
}

impl<'de> serde::Deserialize<'de> for Quality {
    /// Any number from 0 to 255, to the nearest tenth: the integers written before tenths
    /// existed read as they were.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Quality, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if !(0.0..=255.0).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "a quality of {value}, outside 0-255"
            )));
        }
        Ok(Quality((value * 10.0).round() as u16))
    }
}

/// An HEVC encoder ffmpeg can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoder {
    /// Software x265: slow, everywhere, the reference for quality and HDR metadata.
    Libx265,
    /// NVIDIA NVENC (GeForce, Quadro; not data-centre GPUs such as the H100).
    HevcNvenc,
    /// Intel Quick Sync Video.
    HevcQsv,
    /// VAAPI on Linux: Intel and AMD through Mesa or the Intel media driver.
    HevcVaapi,
    /// AMD AMF on Windows.
    HevcAmf,
    /// Apple VideoToolbox on macOS.
    HevcVideotoolbox,
}

impl Encoder {
    /// Every encoder, hardware first in order of preference, software last.
    pub const ALL: [Encoder; 6] = [
        Encoder::HevcNvenc,
        Encoder::HevcQsv,
        Encoder::HevcVaapi,
        Encoder::HevcAmf,
        Encoder::HevcVideotoolbox,
        Encoder::Libx265,
    ];

    /// ffmpeg's name for the encoder, as recorded in events and the cache.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Libx265 => "libx265",
            Encoder::HevcNvenc => "hevc_nvenc",
            Encoder::HevcQsv => "hevc_qsv",
            Encoder::HevcVaapi => "hevc_vaapi",
            Encoder::HevcAmf => "hevc_amf",
            Encoder::HevcVideotoolbox => "hevc_videotoolbox",
        }
    }

    /// Whether the encoder runs on a GPU or media engine, and so may fail where software
    /// would not (no driver, a session limit, a device that went away).
    pub fn is_hardware(self) -> bool {
        self != Encoder::Libx265
    }

    /// Whether this tool trusts the encoder to carry HDR10 static metadata (mastering
    /// display, content light level) into the stream.
    ///
    /// Only x265 is given that metadata explicitly (`master-display`, `max-cll`). The
    /// hardware encoders could at best copy it from frame side data, which depends on the
    /// ffmpeg version, the driver and the source, and cannot be confirmed by a trial encode:
    /// HDR sources therefore never go to them, so HDR is never silently lost.
    pub fn carries_hdr10(self) -> bool {
        self == Encoder::Libx265
    }
}

impl Encoder {
    /// The `--quality` values a search may try with this encoder: its own scale, as
    /// [`EncoderSetup::video_args`] maps `--quality` onto it (x265's CRF, NVENC's CQ, Quick
    /// Sync's ICQ, VAAPI's and AMF's QP, VideoToolbox's q), cut to the span where a
    /// quality target is ever met: below 10 nothing is saved, above 42 nothing is watchable.
    pub fn search_range(self) -> std::ops::RangeInclusive<u8> {
        // One span serves every encoder: each maps it onto its own scale (CQ and ICQ, which
        // start at 1, never see the 0 they would read as "automatic").
        10..=42
    }

    /// The name of the encoder's own quality control, for people: what a found `--quality`
    /// becomes on the command line.
    pub fn quality_control(self) -> &'static str {
        match self {
            Encoder::Libx265 => "CRF",
            Encoder::HevcNvenc => "CQ",
            Encoder::HevcQsv => "ICQ",
            Encoder::HevcVaapi | Encoder::HevcAmf => "QP",
            Encoder::HevcVideotoolbox => "q",
        }
    }

    /// The finest step of the encoder's own quality control, on the `--quality` scale: a
    /// tenth where it takes fractions (x265's `-crf` and NVENC's `-cq` are floats), one
    /// where it takes integers only (Quick Sync's `global_quality`, VAAPI's and AMF's QP) or
    /// maps the scale coarsely (VideoToolbox's q, two per step).
    pub fn quality_step(self) -> Quality {
        match self {
            Encoder::Libx265 | Encoder::HevcNvenc => Quality::from_tenths(1),
            Encoder::HevcQsv
            | Encoder::HevcVaapi
            | Encoder::HevcAmf
            | Encoder::HevcVideotoolbox => Quality::whole(1),
        }
    }

    /// The encoder's own value for a `--quality` value: what `video_args` passes (rounded
    /// to a whole value for the controls that take integers only).
    pub fn own_quality(self, quality: Quality) -> Quality {
        match self {
            Encoder::Libx265 => quality,
            Encoder::HevcNvenc => quality.clamp_whole(1, 51),
            Encoder::HevcQsv => Quality::whole(quality.rounded().clamp(1, 51)),
            Encoder::HevcVaapi | Encoder::HevcAmf => Quality::whole(quality.rounded().min(51)),
            Encoder::HevcVideotoolbox => Quality::whole(videotoolbox_quality(quality.rounded())),
        }
    }
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Encoders appear in JSON under ffmpeg's name.
impl serde::Serialize for Encoder {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A name that is not one of [`Encoder::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEncoder(pub String);

impl fmt::Display for UnknownEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown encoder {:?}", self.0)
    }
}

impl std::error::Error for UnknownEncoder {}

impl FromStr for Encoder {
    type Err = UnknownEncoder;

    fn from_str(name: &str) -> Result<Encoder, UnknownEncoder> {
        Encoder::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| UnknownEncoder(name.to_string()))
    }
}

/// Which device a hardware encoder runs on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    /// Whatever the encoder picks by itself (the only choice for software, AMF and
    /// VideoToolbox).
    Default,
    /// A Linux DRM render node, e.g. `/dev/dri/renderD128` (VAAPI, Quick Sync).
    RenderNode(PathBuf),
    /// An NVIDIA GPU by index, in PCI bus order (NVML's order; see
    /// [`crate::process::media_command`], which makes CUDA count the same way).
    NvidiaGpu(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Default => f.write_str("default device"),
            Device::RenderNode(node) => write!(f, "{}", node.display()),
            Device::NvidiaGpu(index) => write!(f, "GPU {index}"),
        }
    }
}

/// An encoder set up on a device: everything needed to build its command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EncoderSetup {
    /// Which encoder.
    pub encoder: Encoder,
    /// Where it runs.
    pub device: Device,
    /// The preset names this ffmpeg's NVENC takes (unused by the other encoders).
    pub nvenc_presets: NvencPresets,
}

/// The `-preset` names an ffmpeg's `hevc_nvenc` accepts, which changed with ffmpeg 4.3: an
/// older ffmpeg (Ubuntu 20.04's 4.2, Windows builds from before mid-2020) fails the encode
/// on `p5` with "Undefined constant or missing '(' in 'p5'".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NvencPresets {
    /// `p1` (fastest) … `p7` (best): ffmpeg 4.3 and later.
    #[default]
    Numbered,
    /// `fast`, `medium`, `slow` (and `hp`, `hq`, …), without the numbered ones: before 4.3.
    Named,
    /// Neither could be read: no `-preset` is passed, and the encoder uses its default.
    Unknown,
}

impl NvencPresets {
    /// Reads the names from `ffmpeg -h encoder=hevc_nvenc`'s output: the constants listed
    /// under its `-preset` option.
    pub fn from_help(help: &str) -> NvencPresets {
        let names = nvenc_preset_constants(help);
        let has_all = |wanted: &[&str]| wanted.iter().all(|w| names.contains(w));
        if has_all(&["p1", "p2", "p3", "p4", "p5", "p6", "p7"]) {
            NvencPresets::Numbered
        } else if has_all(&["fast", "medium", "slow"]) {
            NvencPresets::Named
        } else {
            NvencPresets::Unknown
        }
    }

    /// NVENC's preset for an x265 preset name, or `None` for the encoder's default.
    fn for_x265(self, x265: &str) -> Option<&'static str> {
        match self {
            NvencPresets::Numbered => Some(match x265 {
                "ultrafast" | "superfast" => "p1",
                "veryfast" => "p2",
                "faster" => "p3",
                "fast" => "p4",
                "slow" => "p6",
                "slower" | "veryslow" | "placebo" => "p7",
                _ => "p5",
            }),
            // "hp 1 pass", "hq 1 pass", "hq 2 passes", as that ffmpeg describes them.
            NvencPresets::Named => Some(match x265 {
                "ultrafast" | "superfast" | "veryfast" | "faster" => "fast",
                "slow" | "slower" | "veryslow" | "placebo" => "slow",
                _ => "medium",
            }),
            NvencPresets::Unknown => None,
        }
    }
}

/// The constants of the `-preset` option in an encoder's help: the indented lines below it,
/// up to the next option.
fn nvenc_preset_constants(help: &str) -> Vec<&str> {
    help.lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-preset "))
        .skip(1)
        .take_while(|line| !line.is_empty() && !line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

impl fmt::Display for EncoderSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.device {
            Device::Default => write!(f, "{}", self.encoder),
            device => write!(f, "{} on {device}", self.encoder),
        }
    }
}

/// The hardware device name the `-init_hw_device` options below give their device, so the
/// `-filter_hw_device` option can refer to it.
const HW_DEVICE_NAME: &str = "mc";

impl EncoderSetup {
    /// libx265, which needs no device and works wherever ffmpeg was built with it.
    pub fn software() -> EncoderSetup {
        EncoderSetup::on(Encoder::Libx265, Device::Default)
    }

    /// `encoder` on `device`, for an ffmpeg whose NVENC takes the current preset names.
    pub fn on(encoder: Encoder, device: Device) -> EncoderSetup {
        EncoderSetup {
            encoder,
            device,
            nvenc_presets: NvencPresets::default(),
        }
    }

    /// Global options that open the hardware device; they go before the input.
    pub fn input_args(&self) -> Vec<OsString> {
        let node = match &self.device {
            Device::RenderNode(node) => Some(node.to_string_lossy().into_owned()),
            _ => None,
        };
        let init = match (self.encoder, node) {
            (Encoder::HevcVaapi, Some(node)) => format!("vaapi={HW_DEVICE_NAME}:{node}"),
            (Encoder::HevcVaapi, None) => format!("vaapi={HW_DEVICE_NAME}"),
            // Quick Sync on Linux sits on a VAAPI render node; naming it picks the Intel GPU
            // when there are several.
            (Encoder::HevcQsv, Some(node)) => {
                format!("qsv={HW_DEVICE_NAME}:hw_any,child_device={node}")
            }
            (Encoder::HevcQsv, None) => format!("qsv={HW_DEVICE_NAME}:hw_any"),
            _ => return Vec::new(),
        };
        [
            "-init_hw_device".to_string(),
            init,
            // The upload filter in `video_args` puts frames on this device.
            "-filter_hw_device".to_string(),
            HW_DEVICE_NAME.to_string(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }

    /// Output options that encode output video stream `out_index` (`-c:v:N`) of `source`.
    ///
    /// Ten-bit sources stay ten-bit on every encoder (Main10 from `yuv420p10le` or `p010`
    /// surfaces); a device that cannot do that fails the encode, and the run falls back to
    /// libx265 rather than quietly dropping to eight bits.
    pub fn video_args(
        &self,
        out_index: usize,
        source: &Stream,
        settings: &EncodeSettings,
        hdr: Option<&HdrMetadata>,
    ) -> Vec<OsString> {
        let spec = |flag: &str| format!("-{flag}:v:{out_index}");
        let ten_bit = source.is_high_bit_depth();
        let quality = settings.quality;
        let mut args: Vec<String> = vec![spec("c"), self.encoder.name().into()];
        let mut push = |flag: &str, value: String| args.extend([spec(flag), value]);
        match self.encoder {
            Encoder::Libx265 => {
                push("preset", settings.preset.clone());
                push("crf", quality.to_string());
                // 10-bit sources stay 10-bit (Main10); dropping to 8 bits would band gradients.
                push(
                    "pix_fmt",
                    if ten_bit { "yuv420p10le" } else { "yuv420p" }.into(),
                );
                push("profile", if ten_bit { "main10" } else { "main" }.into());
            }
            Encoder::HevcNvenc => {
                if let Some(preset) = self.nvenc_presets.for_x265(&settings.preset) {
                    push("preset", preset.into());
                }
                // Constant quality: VBR with a CQ target and no bitrate cap. CQ 0 means
                // "automatic" to NVENC, not "best", so the scale starts at 1.
                push("rc", "vbr".into());
                push("cq", self.encoder.own_quality(quality).to_string());
                push("b", "0".into());
                // Spreads bits by local contrast, as x265's default AQ does.
                push("spatial_aq", "1".into());
                push("pix_fmt", if ten_bit { "p010le" } else { "yuv420p" }.into());
                push("profile", if ten_bit { "main10" } else { "main" }.into());
                if let Device::NvidiaGpu(index) = self.device {
                    push("gpu", index.to_string());
                }
            }
            Encoder::HevcQsv => {
                push("filter", upload_filter(ten_bit, true));
                push("preset", qsv_preset(&settings.preset).into());
                // ICQ, Quick Sync's constant-quality mode: what ffmpeg picks when
                // global_quality is set and no bitrate is.
                push(
                    "global_quality",
                    self.encoder.own_quality(quality).to_string(),
                );
                push("profile", if ten_bit { "main10" } else { "main" }.into());
            }
            Encoder::HevcVaapi => {
                push("filter", upload_filter(ten_bit, false));
                // Constant QP is the one rate control every VAAPI driver (Intel iHD and i965,
                // Mesa for AMD) offers for HEVC. The profile follows the surface format.
                push("rc_mode", "CQP".into());
                push("qp", self.encoder.own_quality(quality).to_string());
            }
            Encoder::HevcAmf => {
                push("quality", amf_quality(&settings.preset).into());
                push("rc", "cqp".into());
                let qp = self.encoder.own_quality(quality).to_string();
                push("qp_i", qp.clone());
                push("qp_p", qp);
                push("pix_fmt", if ten_bit { "p010le" } else { "nv12" }.into());
            }
            Encoder::HevcVideotoolbox => {
                push("q", self.encoder.own_quality(quality).to_string());
                push("pix_fmt", if ten_bit { "p010le" } else { "nv12" }.into());
                push("profile", if ten_bit { "main10" } else { "main" }.into());
            }
        }

        let mut x265_params = vec!["log-level=error".to_string()];
        if let Some(color) = &source.color {
            // Colour tags go both in the container/stream (ffmpeg options, which every
            // encoder writes into the VUI) and in x265's own VUI parameters, since players
            // read one or the other.
            for (flag, value, x265_key) in [
                ("color_primaries", &color.primaries, "colorprim"),
                ("color_trc", &color.transfer, "transfer"),
                ("colorspace", &color.space, "colormatrix"),
            ] {
                if let Some(value) = value {
                    args.extend([spec(flag), value.to_string()]);
                    x265_params.push(format!("{x265_key}={value}"));
                }
            }
            if let Some(range) = &color.range {
                args.extend([spec("color_range"), range.to_string()]);
            }
        }
        if self.encoder == Encoder::Libx265 {
            if source.is_hdr() {
                // hdr10-opt tunes for PQ; repeat-headers lets players join mid-stream.
                x265_params
                    .extend(["hdr10=1", "hdr10-opt=1", "repeat-headers=1"].map(String::from));
                if let Some(hdr) = hdr {
                    if let Some(md) = &hdr.master_display {
                        x265_params.push(format!("master-display={md}"));
                    }
                    if let Some(cll) = &hdr.max_cll {
                        x265_params.push(format!("max-cll={cll}"));
                    }
                }
            }
            args.extend([spec("x265-params"), x265_params.join(":")]);
        }
        args.into_iter().map(OsString::from).collect()
    }
}

/// The filter that moves decoded frames onto the VAAPI or Quick Sync device: convert to the
/// surface format first (NV12, or P010 for ten bits), then upload.
fn upload_filter(ten_bit: bool, qsv: bool) -> String {
    let surface = if ten_bit { "p010" } else { "nv12" };
    if qsv {
        // Quick Sync's encoder wants a pool of frames beyond what it holds for look-ahead.
        format!("format={surface},hwupload=extra_hw_frames=64,format=qsv")
    } else {
        format!("format={surface},hwupload")
    }
}

/// x265 preset names to Quick Sync's, which lack the two fastest and the slowest.
fn qsv_preset(x265: &str) -> &'static str {
    match x265 {
        "ultrafast" | "superfast" | "veryfast" => "veryfast",
        "faster" => "faster",
        "fast" => "fast",
        "slow" => "slow",
        "slower" => "slower",
        "veryslow" | "placebo" => "veryslow",
        _ => "medium",
    }
}

/// x265 preset names to AMF's three quality levels.
fn amf_quality(x265: &str) -> &'static str {
    match x265 {
        "ultrafast" | "superfast" | "veryfast" | "faster" => "speed",
        "slow" | "slower" | "veryslow" | "placebo" => "quality",
        _ => "balanced",
    }
}

/// The CRF-like scale (0 best … 51 worst) to VideoToolbox's constant quality (100 best …
/// 1 worst): the default 22 becomes 56, about the quality x265 gives at CRF 22.
pub fn videotoolbox_quality(quality: u8) -> u8 {
    100u8.saturating_sub(quality.saturating_mul(2)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Color, StreamKind};

    fn video(pix_fmt: &str, depth: u8, color: Option<Color>) -> Stream {
        Stream {
            pix_fmt: Some(pix_fmt.into()),
            bit_depth: Some(depth),
            width: Some(160),
            height: Some(90),
            color,
            ..Stream::new(0, StreamKind::Video, "h264")
        }
    }

    fn settings() -> EncodeSettings {
        EncodeSettings {
            quality: Quality::whole(22),
            preset: "medium".into(),
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn setup(encoder: Encoder, device: Device) -> EncoderSetup {
        EncoderSetup::on(encoder, device)
    }

    fn joined(setup: &EncoderSetup, depth: u8) -> String {
        let pix_fmt = if depth > 8 { "yuv420p10le" } else { "yuv420p" };
        strings(setup.video_args(0, &video(pix_fmt, depth, None), &settings(), None)).join(" ")
    }

    #[test]
    fn eight_bit_sdr_is_main_profile() {
        let args = strings(EncoderSetup::software().video_args(
            1,
            &video("yuv420p", 8, None),
            &settings(),
            None,
        ));
        let joined = args.join(" ");
        assert!(
            joined.contains("-c:v:1 libx265 -preset:v:1 medium -crf:v:1 22"),
            "{joined}"
        );
        assert!(
            joined.contains("-pix_fmt:v:1 yuv420p -profile:v:1 main "),
            "{joined}"
        );
        assert!(
            joined.ends_with("-x265-params:v:1 log-level=error"),
            "{joined}"
        );
    }

    #[test]
    fn hdr10_keeps_tags_and_mastering_metadata() {
        let color = Color {
            primaries: Some("bt2020".into()),
            transfer: Some("smpte2084".into()),
            space: Some("bt2020nc".into()),
            range: Some("tv".into()),
        };
        let hdr = HdrMetadata {
            master_display: Some("G(1,2)B(3,4)R(5,6)WP(7,8)L(9,10)".into()),
            max_cll: Some("1000,400".into()),
        };
        let args = strings(EncoderSetup::software().video_args(
            0,
            &video("yuv420p10le", 10, Some(color)),
            &settings(),
            Some(&hdr),
        ));
        let joined = args.join(" ");
        assert!(
            joined.contains("-pix_fmt:v:0 yuv420p10le -profile:v:0 main10"),
            "{joined}"
        );
        assert!(joined.contains("-color_trc:v:0 smpte2084"), "{joined}");
        let params = args.last().unwrap();
        for part in [
            "colorprim=bt2020",
            "transfer=smpte2084",
            "colormatrix=bt2020nc",
            "hdr10=1",
            "master-display=G(1,2)B(3,4)R(5,6)WP(7,8)L(9,10)",
            "max-cll=1000,400",
        ] {
            assert!(params.contains(part), "{params} lacks {part}");
        }
    }

    #[test]
    fn nvenc_uses_constant_quality_on_the_chosen_gpu() {
        let nvenc = setup(Encoder::HevcNvenc, Device::NvidiaGpu(1));
        let eight = joined(&nvenc, 8);
        assert!(
            eight.starts_with(
                "-c:v:0 hevc_nvenc -preset:v:0 p5 -rc:v:0 vbr -cq:v:0 22 -b:v:0 0 \
                 -spatial_aq:v:0 1 -pix_fmt:v:0 yuv420p -profile:v:0 main -gpu:v:0 1"
            ),
            "{eight}"
        );
        assert!(!eight.contains("x265"), "{eight}");
        let ten = joined(&nvenc, 10);
        assert!(
            ten.contains("-pix_fmt:v:0 p010le -profile:v:0 main10"),
            "{ten}"
        );
        assert!(nvenc.input_args().is_empty());
        // On the default device no -gpu is passed: NVENC picks.
        assert!(!joined(&setup(Encoder::HevcNvenc, Device::Default), 8).contains("-gpu"));
    }

    #[test]
    fn vaapi_and_qsv_open_the_render_node_and_upload_frames() {
        let node = Device::RenderNode("/dev/dri/renderD129".into());
        let vaapi = setup(Encoder::HevcVaapi, node.clone());
        assert_eq!(
            strings(vaapi.input_args()).join(" "),
            "-init_hw_device vaapi=mc:/dev/dri/renderD129 -filter_hw_device mc"
        );
        let args = joined(&vaapi, 10);
        assert!(
            args.contains("-filter:v:0 format=p010,hwupload -rc_mode:v:0 CQP -qp:v:0 22"),
            "{args}"
        );
        // A pixel format would add a software conversion after the upload and fail.
        assert!(!args.contains("pix_fmt"), "{args}");

        let qsv = setup(Encoder::HevcQsv, node);
        assert_eq!(
            strings(qsv.input_args()).join(" "),
            "-init_hw_device qsv=mc:hw_any,child_device=/dev/dri/renderD129 -filter_hw_device mc"
        );
        let args = joined(&qsv, 8);
        assert!(
            args.contains(
                "-filter:v:0 format=nv12,hwupload=extra_hw_frames=64,format=qsv \
                 -preset:v:0 medium -global_quality:v:0 22 -profile:v:0 main"
            ),
            "{args}"
        );
    }

    #[test]
    fn amf_and_videotoolbox_map_quality_onto_their_scales() {
        let amf = joined(&setup(Encoder::HevcAmf, Device::Default), 10);
        assert!(
            amf.contains(
                "-quality:v:0 balanced -rc:v:0 cqp -qp_i:v:0 22 -qp_p:v:0 22 -pix_fmt:v:0 p010le"
            ),
            "{amf}"
        );
        let vt = joined(&setup(Encoder::HevcVideotoolbox, Device::Default), 8);
        assert!(
            vt.contains("-q:v:0 56 -pix_fmt:v:0 nv12 -profile:v:0 main"),
            "{vt}"
        );
        assert_eq!(videotoolbox_quality(0), 100);
        assert_eq!(videotoolbox_quality(51), 1);
        assert_eq!(videotoolbox_quality(255), 1);
    }

    #[test]
    fn hardware_encoders_get_colour_tags_but_no_x265_params() {
        let color = Color {
            primaries: Some("bt709".into()),
            transfer: Some("bt709".into()),
            space: Some("bt709".into()),
            range: None,
        };
        let args = strings(setup(Encoder::HevcNvenc, Device::Default).video_args(
            0,
            &video("yuv420p", 8, Some(color)),
            &settings(),
            None,
        ))
        .join(" ");
        assert!(
            args.contains("-color_primaries:v:0 bt709 -color_trc:v:0 bt709"),
            "{args}"
        );
        assert!(!args.contains("x265-params"), "{args}");
    }

    #[test]
    fn presets_map_to_each_encoders_names() {
        assert_eq!(NvencPresets::Numbered.for_x265("ultrafast"), Some("p1"));
        assert_eq!(NvencPresets::Numbered.for_x265("veryslow"), Some("p7"));
        assert_eq!(NvencPresets::Numbered.for_x265("nonsense"), Some("p5"));
        assert_eq!(NvencPresets::Named.for_x265("superfast"), Some("fast"));
        assert_eq!(NvencPresets::Named.for_x265("medium"), Some("medium"));
        assert_eq!(NvencPresets::Named.for_x265("slower"), Some("slow"));
        assert_eq!(qsv_preset("superfast"), "veryfast");
        assert_eq!(qsv_preset("placebo"), "veryslow");
        assert_eq!(amf_quality("faster"), "speed");
        assert_eq!(amf_quality("slower"), "quality");
    }

    /// `ffmpeg -h encoder=hevc_nvenc`, captured from real builds (tests/data/ffmpeg/README.md).
    const NVENC_HELP_2018_WINDOWS: &str =
        include_str!("../tests/data/ffmpeg/hevc_nvenc-help-N-92722-windows.txt");
    const NVENC_HELP_5_1_DEBIAN: &str =
        include_str!("../tests/data/ffmpeg/hevc_nvenc-help-5.1-debian.txt");
    const NVENC_HELP_6_0_WINDOWS: &str =
        include_str!("../tests/data/ffmpeg/hevc_nvenc-help-6.0-windows.txt");

    const X265_PRESETS: [&str; 10] = [
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
        "placebo",
    ];

    #[test]
    fn nvenc_presets_are_read_from_real_ffmpeg_help() {
        assert_eq!(
            NvencPresets::from_help(NVENC_HELP_2018_WINDOWS),
            NvencPresets::Named
        );
        assert_eq!(
            NvencPresets::from_help(NVENC_HELP_5_1_DEBIAN),
            NvencPresets::Numbered
        );
        assert_eq!(
            NvencPresets::from_help(NVENC_HELP_6_0_WINDOWS),
            NvencPresets::Numbered
        );
        // An ffmpeg built without NVENC says so instead of listing options.
        assert_eq!(
            NvencPresets::from_help("Codec 'hevc_nvenc' is not recognized by FFmpeg.\n"),
            NvencPresets::Unknown
        );
        assert_eq!(NvencPresets::from_help(""), NvencPresets::Unknown);
        // Every x265 preset becomes a name that the ffmpeg in question lists.
        for help in [
            NVENC_HELP_2018_WINDOWS,
            NVENC_HELP_5_1_DEBIAN,
            NVENC_HELP_6_0_WINDOWS,
        ] {
            let listed = nvenc_preset_constants(help);
            let presets = NvencPresets::from_help(help);
            for x265 in X265_PRESETS {
                let name = presets.for_x265(x265).unwrap();
                assert!(listed.contains(&name), "{name} for {x265}: {listed:?}");
            }
        }
    }

    #[test]
    fn an_old_ffmpeg_gets_nvenc_preset_names_it_knows() {
        let old = EncoderSetup {
            nvenc_presets: NvencPresets::from_help(NVENC_HELP_2018_WINDOWS),
            ..setup(Encoder::HevcNvenc, Device::NvidiaGpu(0))
        };
        let args = joined(&old, 8);
        assert!(args.contains("-preset:v:0 medium -rc:v:0 vbr"), "{args}");
        let unknown = EncoderSetup {
            nvenc_presets: NvencPresets::Unknown,
            ..old
        };
        let args = joined(&unknown, 8);
        assert!(!args.contains("-preset"), "{args}");
        assert!(args.starts_with("-c:v:0 hevc_nvenc -rc:v:0 vbr"), "{args}");
    }

    #[test]
    fn names_round_trip_and_only_x265_carries_hdr10() {
        for encoder in Encoder::ALL {
            assert_eq!(encoder.name().parse::<Encoder>(), Ok(encoder));
            assert_eq!(encoder.is_hardware(), encoder != Encoder::Libx265);
            assert_eq!(encoder.carries_hdr10(), encoder == Encoder::Libx265);
        }
        assert!("hevc_v4l2m2m".parse::<Encoder>().is_err());
        assert_eq!(Encoder::ALL.last(), Some(&Encoder::Libx265));
    }
}
