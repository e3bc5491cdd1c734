//! The video encoder and how one `--quality` scale maps onto its controls.
//!
//! Every encoder-specific flag lives here, so that the transcode step only asks for
//! "the arguments that encode this stream".

use std::ffi::OsString;

use crate::config::EncodeSettings;
use crate::probe::{HdrMetadata, Stream};

/// An HEVC encoder ffmpeg can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// Software x265: slow, everywhere, the reference for quality and HDR metadata.
    Libx265,
}

impl Encoder {
    /// ffmpeg's name for the encoder, as recorded in events and the cache.
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Libx265 => "libx265",
        }
    }

    /// Output options that encode output video stream `out_index` (`-c:v:N`) of `source`.
    pub fn video_args(
        self,
        out_index: usize,
        source: &Stream,
        settings: &EncodeSettings,
        hdr: Option<&HdrMetadata>,
    ) -> Vec<OsString> {
        let spec = |flag: &str| format!("-{flag}:v:{out_index}");
        let ten_bit = source.is_high_bit_depth();
        let mut args: Vec<String> = vec![
            spec("c"),
            self.name().into(),
            spec("preset"),
            settings.preset.clone(),
            spec("crf"),
            settings.quality.to_string(),
            // 10-bit sources stay 10-bit (Main10); dropping to 8 bits would band gradients.
            spec("pix_fmt"),
            if ten_bit { "yuv420p10le" } else { "yuv420p" }.into(),
            spec("profile"),
            if ten_bit { "main10" } else { "main" }.into(),
        ];
        let mut x265_params = vec!["log-level=error".to_string()];
        if let Some(color) = &source.color {
            // Colour tags go both in the container/stream (ffmpeg options) and in the HEVC
            // VUI (x265 params), since players read one or the other.
            for (flag, value, x265_key) in [
                ("color_primaries", &color.primaries, "colorprim"),
                ("color_trc", &color.transfer, "transfer"),
                ("colorspace", &color.space, "colormatrix"),
            ] {
                if let Some(value) = value {
                    args.extend([spec(flag), value.clone()]);
                    x265_params.push(format!("{x265_key}={value}"));
                }
            }
            if let Some(range) = &color.range {
                args.extend([spec("color_range"), range.clone()]);
            }
        }
        if source.is_hdr() {
            // hdr10-opt tunes for PQ; repeat-headers lets players join mid-stream.
            x265_params.extend(["hdr10=1", "hdr10-opt=1", "repeat-headers=1"].map(String::from));
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
        args.into_iter().map(OsString::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Color, StreamKind};

    fn video(pix_fmt: &str, depth: u8, color: Option<Color>) -> Stream {
        Stream {
            index: 0,
            kind: StreamKind::Video,
            codec: "h264".into(),
            profile: None,
            pix_fmt: Some(pix_fmt.into()),
            bit_depth: Some(depth),
            width: Some(160),
            height: Some(90),
            language: None,
            attached_pic: false,
            color,
            dolby_vision: false,
        }
    }

    fn settings() -> EncodeSettings {
        EncodeSettings {
            quality: 22,
            preset: "medium".into(),
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn eight_bit_sdr_is_main_profile() {
        let args =
            strings(Encoder::Libx265.video_args(1, &video("yuv420p", 8, None), &settings(), None));
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
        let args = strings(Encoder::Libx265.video_args(
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
}
