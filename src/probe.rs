//! What a media file contains, as ffprobe reports it, reduced to the facts decisions need.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::process::{CommandFailed, media_arg, run_captured};

/// The facts about one file that decide whether and how it is converted.
///
/// Serializable, because the shared cache stores exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// ffprobe's `format_name`, e.g. `matroska,webm` or `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: CompactString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_rate: Option<u64>,
    pub streams: Vec<Stream>,
    /// How many chapters it has (0 in caches written before they were counted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chapters: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One stream of a media file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub index: u32,
    pub kind: StreamKind,
    pub codec: CompactString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix_fmt: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<CompactString>,
    /// The dispositions players act on: the track chosen by default, one shown even with
    /// subtitles off (forced), one for the hard of hearing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_default: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hearing_impaired: bool,
    /// Cover art stored as a video stream: never the main video.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached_pic: bool,
    /// A Matroska attachment's file name and MIME type (cover art read from Matroska is an
    /// attachment shown as a video stream), so a cover can be attached again as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dolby_vision: bool,
    /// CEA-608/708 closed captions carried inside the video stream (A53 side data).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_captions: bool,
    /// An audio stream whose sample rate or channel count ffprobe could not find (a
    /// damaged or cut track): no muxer can write it, so the file cannot be converted whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undescribed: bool,
}

/// The colour description of a video stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Color {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<CompactString>,
}

/// What kind of data a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Attachment,
    Data,
    Other,
}

impl MediaInfo {
    /// The stream that is re-encoded: the first video stream that is not cover art.
    pub fn main_video(&self) -> Option<&Stream> {
        self.streams
            .iter()
            .find(|s| s.kind == StreamKind::Video && !s.attached_pic)
    }

    /// The first audio stream.
    pub fn main_audio(&self) -> Option<&Stream> {
        self.streams.iter().find(|s| s.kind == StreamKind::Audio)
    }

    /// Streams of one kind, in file order.
    pub fn streams_of(&self, kind: StreamKind) -> impl Iterator<Item = &Stream> {
        self.streams.iter().filter(move |s| s.kind == kind)
    }

    /// The languages of the streams of one kind, in order (`und` where untagged).
    pub fn languages(&self, kind: StreamKind) -> Vec<String> {
        self.streams_of(kind)
            .map(|s| s.language.as_deref().unwrap_or("und").to_owned())
            .collect()
    }
}

impl Stream {
    /// A stream of `kind` in `codec` about which nothing else is known yet.
    pub fn new(index: u32, kind: StreamKind, codec: impl Into<CompactString>) -> Stream {
        Stream {
            index,
            kind,
            codec: codec.into(),
            profile: None,
            pix_fmt: None,
            bit_depth: None,
            width: None,
            height: None,
            language: None,
            is_default: false,
            forced: false,
            hearing_impaired: false,
            attached_pic: false,
            filename: None,
            mimetype: None,
            color: None,
            dolby_vision: false,
            closed_captions: false,
            undescribed: false,
        }
    }

    /// Whether this video stream is HDR10/HLG (PQ or HLG transfer), whose colour must survive.
    pub fn is_hdr(&self) -> bool {
        self.color
            .as_ref()
            .and_then(|c| c.transfer.as_deref())
            .is_some_and(|t| t == "smpte2084" || t == "arib-std-b67")
    }

    /// Whether the pixels carry an alpha channel (`argb` of QuickTime RLE, `yuva420p`, ...).
    pub fn has_alpha(&self) -> bool {
        self.pix_fmt.as_deref().is_some_and(pix_fmt_has_alpha)
    }

    /// More than 8 bits per sample.
    pub fn is_high_bit_depth(&self) -> bool {
        self.bit_depth.is_some_and(|d| d > 8)
    }
}

/// ffprobe could not read the file: it is damaged, truncated, empty or not media.
#[derive(Debug)]
pub struct ProbeError(pub CommandFailed);

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self
            .0
            .stderr_tail
            .last()
            .map_or("no reason given", String::as_str);
        write!(
            f,
            "ffprobe cannot read it ({reason}): it is damaged, incomplete or not media"
        )
    }
}

impl std::error::Error for ProbeError {}

/// Runs ffprobe on one file.
pub fn probe(ffprobe: &Path, path: &Path) -> Result<MediaInfo, ProbeError> {
    let args: Vec<OsString> = [
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-show_chapters",
        // ffprobe 5.x reports a stream's `closed_captions` only once its own decoder has seen
        // them: without decoding a few packets, CEA-608/708 captions inside the video read as
        // absent, and a conversion would drop them without a word. The frames themselves
        // are not wanted, only their stream.
        "-read_intervals",
        "%+#16",
        "-show_entries",
        "frame=stream_index",
    ]
    .iter()
    .map(OsString::from)
    .chain([media_arg(path)])
    .collect();
    let stdout = run_captured(ffprobe, &args).map_err(ProbeError)?.stdout;
    parse_ffprobe_json(&stdout).map_err(|err| {
        ProbeError(CommandFailed {
            command: crate::process::display_command(ffprobe, &args),
            status: None,
            stderr_tail: vec![format!("unexpected ffprobe output: {err}")],
        })
    })
}

/// Probes many files with up to `jobs` ffprobe processes at once, results in input order.
pub fn probe_many<P: AsRef<Path> + Sync>(
    ffprobe: &Path,
    paths: &[P],
    jobs: usize,
    on_done: &(dyn Fn(usize) + Sync),
) -> Vec<Result<MediaInfo, ProbeError>> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<MediaInfo, ProbeError>>> =
        (0..paths.len()).map(|_| None).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, paths.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let result = probe(ffprobe, path.as_ref());
                    if let Ok(mut slots) = slots.lock() {
                        slots[i] = Some(result);
                    }
                    on_done(i);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ProbeError(CommandFailed {
                    command: "ffprobe".into(),
                    status: None,
                    stderr_tail: vec!["probe worker stopped".into()],
                }))
            })
        })
        .collect()
}

/// ffprobe's JSON, only the fields we use.
#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
    #[serde(default)]
    chapters: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawFormat {
    format_name: Option<CompactString>,
    duration: Option<String>,
    bit_rate: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<CompactString>,
    profile: Option<CompactString>,
    pix_fmt: Option<CompactString>,
    bits_per_raw_sample: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    color_primaries: Option<CompactString>,
    color_transfer: Option<CompactString>,
    color_space: Option<CompactString>,
    color_range: Option<CompactString>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
    #[serde(default)]
    tags: std::collections::HashMap<String, CompactString>,
    #[serde(default)]
    side_data_list: Vec<serde_json::Value>,
    sample_rate: Option<String>,
    channels: Option<u32>,
    closed_captions: Option<u8>,
}

/// Parses `ffprobe -show_format -show_streams -print_format json` output.
pub fn parse_ffprobe_json(bytes: &[u8]) -> Result<MediaInfo, serde_json::Error> {
    let raw: RawProbe = serde_json::from_slice(bytes)?;
    let format = raw.format;
    let streams = raw
        .streams
        .into_iter()
        .map(Stream::from_raw)
        .collect::<Vec<_>>();
    Ok(MediaInfo {
        container: format
            .as_ref()
            .and_then(|f| f.format_name.clone())
            .unwrap_or_default(),
        duration_secs: format
            .as_ref()
            .and_then(|f| f.duration.as_deref())
            .and_then(|d| d.parse().ok()),
        bit_rate: format
            .as_ref()
            .and_then(|f| f.bit_rate.as_deref())
            .and_then(|b| b.parse().ok()),
        streams,
        chapters: u32::try_from(raw.chapters.len()).unwrap_or(u32::MAX),
    })
}

impl Stream {
    fn from_raw(raw: RawStream) -> Stream {
        let kind = match raw.codec_type.as_deref() {
            Some("video") => StreamKind::Video,
            Some("audio") => StreamKind::Audio,
            Some("subtitle") => StreamKind::Subtitle,
            Some("attachment") => StreamKind::Attachment,
            Some("data") => StreamKind::Data,
            _ => StreamKind::Other,
        };
        let bit_depth = raw
            .pix_fmt
            .as_deref()
            .and_then(bit_depth_of_pix_fmt)
            .or_else(|| raw.bits_per_raw_sample.as_deref()?.parse().ok());
        let color = (kind == StreamKind::Video)
            .then(|| Color {
                primaries: raw.color_primaries.filter(|v| v != "unknown"),
                transfer: raw.color_transfer.filter(|v| v != "unknown"),
                space: raw.color_space.filter(|v| v != "unknown"),
                range: raw.color_range.filter(|v| v != "unknown"),
            })
            .filter(|c| c != &Color::default());
        let dolby_vision = raw.side_data_list.iter().any(|sd| {
            sd.get("side_data_type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.contains("DOVI"))
        });
        let tag = |name: &str| {
            raw.tags
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let language = tag("language");
        let flag = |name: &str| raw.disposition.get(name).is_some_and(|&v| v != 0);
        let attached_pic = flag("attached_pic");
        let (filename, mimetype) = if attached_pic {
            (tag("filename"), tag("mimetype"))
        } else {
            (None, None)
        };
        Stream {
            index: raw.index,
            kind,
            codec: raw.codec_name.unwrap_or_else(|| "unknown".into()),
            profile: raw.profile,
            pix_fmt: raw.pix_fmt,
            bit_depth,
            width: raw.width,
            height: raw.height,
            language,
            is_default: flag("default"),
            forced: flag("forced"),
            hearing_impaired: flag("hearing_impaired"),
            attached_pic,
            filename,
            mimetype,
            color,
            dolby_vision,
            closed_captions: raw.closed_captions.is_some_and(|c| c != 0),
            undescribed: kind == StreamKind::Audio
                && (raw.sample_rate.as_deref().is_some_and(|r| r == "0")
                    || raw.channels == Some(0)),
        }
    }
}

/// Whether a pixel format carries alpha: `yuva*`, `rgba*`, `bgra*`, `argb`, `abgr`,
/// `gbrap*`, `ya8`, `ya16*`, `ayuv*`.
pub fn pix_fmt_has_alpha(pix_fmt: &str) -> bool {
    [
        "yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya8", "ya16", "ayuv",
    ]
    .iter()
    .any(|prefix| pix_fmt.starts_with(prefix))
}

/// Bits per sample implied by a pixel format name: `yuv420p10le` -> 10, `yuv420p` -> 8.
pub fn bit_depth_of_pix_fmt(pix_fmt: &str) -> Option<u8> {
    if pix_fmt.contains("p010") {
        return Some(10);
    }
    let trimmed = pix_fmt.trim_end_matches("le").trim_end_matches("be");
    let digits: String = trimmed
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    match digits.parse::<u8>() {
        Ok(d @ 9..=16) if trimmed.len() > digits.len() && trimmed.starts_with("yuv") => Some(d),
        _ if pix_fmt.starts_with("yuv") || pix_fmt.starts_with("nv12") => Some(8),
        _ => None,
    }
}

/// HDR10 static metadata of a video stream, as x265 wants it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HdrMetadata {
    /// `G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)` in x265's units.
    pub master_display: Option<String>,
    /// `max_content,max_average` in cd/m².
    pub max_cll: Option<String>,
}

/// Reads the mastering-display and content-light metadata from the first frame of a stream.
///
/// Only HDR sources pay for this second ffprobe call.
pub fn hdr_metadata(
    ffprobe: &Path,
    path: &Path,
    stream_index: u32,
) -> Result<HdrMetadata, ProbeError> {
    let args: Vec<OsString> = vec![
        "-v".into(),
        "error".into(),
        "-select_streams".into(),
        stream_index.to_string().into(),
        "-read_intervals".into(),
        "%+#1".into(),
        "-show_entries".into(),
        "frame=side_data_list".into(),
        "-print_format".into(),
        "json".into(),
        media_arg(path),
    ];
    let stdout = run_captured(ffprobe, &args).map_err(ProbeError)?.stdout;
    Ok(parse_hdr_side_data(&stdout))
}

/// Parses the frame side data that [`hdr_metadata`] asks for.
pub fn parse_hdr_side_data(bytes: &[u8]) -> HdrMetadata {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return HdrMetadata::default();
    };
    let side_data = value["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|frame| frame["side_data_list"].as_array())
        .flatten();
    let mut meta = HdrMetadata::default();
    for item in side_data {
        match item["side_data_type"].as_str() {
            Some("Mastering display metadata") => {
                let chroma =
                    |key: &str| rational(&item[key]).map(|v| (v * 50_000.0).round() as u64);
                let luma = |key: &str| rational(&item[key]).map(|v| (v * 10_000.0).round() as u64);
                let parts = (
                    chroma("green_x"),
                    chroma("green_y"),
                    chroma("blue_x"),
                    chroma("blue_y"),
                    chroma("red_x"),
                    chroma("red_y"),
                    chroma("white_point_x"),
                    chroma("white_point_y"),
                    luma("max_luminance"),
                    luma("min_luminance"),
                );
                if let (
                    Some(gx),
                    Some(gy),
                    Some(bx),
                    Some(by),
                    Some(rx),
                    Some(ry),
                    Some(wx),
                    Some(wy),
                    Some(lmax),
                    Some(lmin),
                ) = parts
                {
                    meta.master_display = Some(format!(
                        "G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({lmax},{lmin})"
                    ));
                }
            }
            Some("Content light level metadata") => {
                if let (Some(max), Some(avg)) =
                    (item["max_content"].as_u64(), item["max_average"].as_u64())
                {
                    meta.max_cll = Some(format!("{max},{avg}"));
                }
            }
            _ => {}
        }
    }
    meta
}

/// `"34000/50000"` -> 0.68.
fn rational(value: &serde_json::Value) -> Option<f64> {
    let text = value.as_str()?;
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let (num, den): (f64, f64) = (num.parse().ok()?, den.parse().ok()?);
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_depth_from_pixel_formats() {
        assert_eq!(bit_depth_of_pix_fmt("yuv420p"), Some(8));
        assert_eq!(bit_depth_of_pix_fmt("yuv420p10le"), Some(10));
        assert_eq!(bit_depth_of_pix_fmt("yuv422p12be"), Some(12));
        assert_eq!(bit_depth_of_pix_fmt("yuvj420p"), Some(8));
        assert_eq!(bit_depth_of_pix_fmt("p010le"), Some(10));
        assert_eq!(bit_depth_of_pix_fmt("rgb24"), None);
    }

    /// Trimmed from real `ffprobe -show_format -show_streams` output of an mkv with cover art.
    const SAMPLE: &str = r#"{
      "streams": [
        {"index": 0, "codec_name": "h264", "profile": "High 10", "codec_type": "video",
         "width": 160, "height": 90, "pix_fmt": "yuv420p10le", "color_transfer": "smpte2084",
         "color_primaries": "bt2020", "color_space": "bt2020nc", "color_range": "tv",
         "disposition": {"default": 1, "attached_pic": 0}, "tags": {"DURATION": "00:00:01"}},
        {"index": 1, "codec_name": "aac", "codec_type": "audio", "tags": {"language": "fra"}},
        {"index": 2, "codec_name": "subrip", "codec_type": "subtitle", "tags": {"LANGUAGE": "eng"}},
        {"index": 3, "codec_name": "mjpeg", "codec_type": "video", "pix_fmt": "yuvj420p",
         "disposition": {"attached_pic": 1}}
      ],
      "format": {"format_name": "matroska,webm", "duration": "1.023000", "bit_rate": "141231"}
    }"#;

    #[test]
    fn chapters_and_the_marks_players_act_on_are_read() {
        let json = br#"{"streams":[
            {"index":0,"codec_type":"subtitle","codec_name":"subrip",
             "disposition":{"default":1,"forced":1,"hearing_impaired":0}},
            {"index":1,"codec_type":"subtitle","codec_name":"subrip",
             "disposition":{"default":0,"forced":0,"hearing_impaired":1}}],
            "chapters":[{"id":0},{"id":1}],
            "format":{"format_name":"matroska,webm"}}"#;
        let info = parse_ffprobe_json(json).unwrap();
        assert_eq!(info.chapters, 2);
        let marks: Vec<_> = info
            .streams
            .iter()
            .map(|s| (s.is_default, s.forced, s.hearing_impaired))
            .collect();
        assert_eq!(marks, [(true, true, false), (false, false, true)]);
    }

    #[test]
    fn alpha_and_closed_captions_are_seen() {
        let json = br#"{"streams":[
            {"index":0,"codec_type":"video","codec_name":"h264","pix_fmt":"yuv420p",
             "closed_captions":1},
            {"index":1,"codec_type":"video","codec_name":"qtrle","pix_fmt":"argb",
             "closed_captions":0}],
            "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2"}}"#;
        let info = parse_ffprobe_json(json).unwrap();
        let seen: Vec<(bool, bool)> = info
            .streams
            .iter()
            .map(|s| (s.closed_captions, s.has_alpha()))
            .collect();
        assert_eq!(seen, [(true, false), (false, true)]);
        for plain in ["yuv420p", "yuv420p10le", "rgb24", "pal8", "gray"] {
            assert!(!pix_fmt_has_alpha(plain), "{plain}");
        }
    }

    #[test]
    fn an_audio_track_without_rate_or_channels_is_undescribed() {
        // As ffprobe 5.1 prints a cut MP3 track in an MPEG-TS (tests/corpus: sample.ts).
        let json = br#"{"streams":[
            {"index":0,"codec_type":"video","codec_name":"mpeg2video","width":720,"height":576},
            {"index":1,"codec_type":"audio","codec_name":"mp3","sample_rate":"0","channels":0},
            {"index":2,"codec_type":"audio","codec_name":"aac","sample_rate":"48000","channels":2}],
            "format":{"format_name":"mpegts"}}"#;
        let info = parse_ffprobe_json(json).unwrap();
        let undescribed: Vec<bool> = info.streams.iter().map(|s| s.undescribed).collect();
        assert_eq!(undescribed, [false, true, false]);
    }

    #[test]
    fn parses_streams_languages_and_colour() {
        let info = parse_ffprobe_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(info.container, "matroska,webm");
        assert_eq!(info.duration_secs, Some(1.023));
        assert_eq!(info.bit_rate, Some(141_231));
        let video = info.main_video().unwrap();
        assert_eq!((video.index, video.codec.as_str()), (0, "h264"));
        assert_eq!(video.bit_depth, Some(10));
        assert!(video.is_hdr() && video.is_high_bit_depth());
        assert_eq!(info.languages(StreamKind::Audio), ["fra"]);
        assert_eq!(info.languages(StreamKind::Subtitle), ["eng"]);
        assert!(info.streams[3].attached_pic);
    }

    #[test]
    fn cover_art_is_never_the_main_video() {
        let mut info = parse_ffprobe_json(SAMPLE.as_bytes()).unwrap();
        info.streams.remove(0);
        assert!(info.main_video().is_none());
    }

    #[test]
    fn dolby_vision_is_detected_from_side_data() {
        let json = r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"hevc",
            "side_data_list":[{"side_data_type":"DOVI configuration record","dv_profile":8}]}],
            "format":{"format_name":"matroska,webm"}}"#;
        let info = parse_ffprobe_json(json.as_bytes()).unwrap();
        assert!(info.main_video().unwrap().dolby_vision);
    }

    #[test]
    fn hdr_side_data_becomes_x265_parameters() {
        // Real ffprobe output for a clip encoded with master-display and max-cll.
        let json = r#"{"frames":[{"side_data_list":[
            {"side_data_type":"Mastering display metadata","red_x":"34000/50000",
             "red_y":"16000/50000","green_x":"13250/50000","green_y":"34500/50000",
             "blue_x":"7500/50000","blue_y":"3000/50000","white_point_x":"15635/50000",
             "white_point_y":"16450/50000","min_luminance":"50/10000",
             "max_luminance":"10000000/10000"},
            {"side_data_type":"Content light level metadata","max_content":1000,"max_average":400}
        ]}]}"#;
        let meta = parse_hdr_side_data(json.as_bytes());
        assert_eq!(
            meta.master_display.as_deref(),
            Some("G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)")
        );
        assert_eq!(meta.max_cll.as_deref(), Some("1000,400"));
    }

    #[test]
    fn garbage_side_data_gives_no_metadata() {
        assert_eq!(parse_hdr_side_data(b"not json"), HdrMetadata::default());
    }
}
