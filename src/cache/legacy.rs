//! Reading the original Python tool's `.mediabox_cache.json`.
//!
//! That tool (mediabox, `scripts/media_database.py`, its `MEDIA_DATABASE_VERSION` 1.0.0)
//! wrote one flat JSON object per directory: keys are SHA-256 hashes of `name|size|mtime`,
//! values are entries such as
//!
//! ```json
//! {"file_name": "Movie.mkv", "file_path": "/tv/Show/Movie.mkv", "file_size": 1234,
//!  "file_mtime": 1700000000.25, "codec_video": "h264", "codec_audio": "aac",
//!  "width": 1920, "height": 1080, "duration": 5400.1, "bitrate": 8000000,
//!  "is_hdr": false, "color_transfer": "bt709", "bit_depth": 8,
//!  "action": "skip", "conversion_count": 1, "processing_error": null, ...}
//! ```
//!
//! A changed file got a new hash and its old entry stayed, so one name can have several
//! entries: the newest mtime wins. Its facts are enough to decide (the video codec) but not to
//! convert (no stream list, no Dolby Vision flag): they are marked [`FactsSource::Legacy`] and
//! a conversion probes the file first. Its history fields are kept as they were.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use compact_str::CompactString;
use serde_json::{Map, Value};

use super::{Entry, FactsSource, key};
use crate::probe::{Color, MediaInfo, Stream, StreamKind};

/// The legacy fields that are history rather than facts about the media: kept verbatim.
const HISTORY_FIELDS: &[&str] = &[
    "action",
    "conversion_count",
    "conversion_params",
    "last_conversion_duration",
    "last_processed",
    "last_scanned",
    "processing_error",
    "processing_version",
];

/// The entries of a legacy cache, keyed like ours; `None` when `map` is not one.
///
/// Every value must be an object naming its file: anything else is not this format, and is
/// better treated as corrupt than half-read.
pub(super) fn parse(map: &Map<String, Value>) -> Option<BTreeMap<CompactString, Entry>> {
    let mut files: BTreeMap<CompactString, Entry> = BTreeMap::new();
    for value in map.values() {
        let fields = value.as_object()?;
        let name = file_name(fields)?;
        let Some(entry) = entry(fields) else {
            // Without size and mtime no fingerprint can match it: there is nothing to keep.
            continue;
        };
        let Some(name) = key(OsStr::new(name)) else {
            continue;
        };
        let newer = files
            .get(name.as_str())
            .is_none_or(|existing| entry.mtime > existing.mtime);
        if newer {
            files.insert(name.into(), entry);
        }
    }
    Some(files)
}

/// `file_name`, or the last component of `file_path` (a POSIX or Windows path).
fn file_name(fields: &Map<String, Value>) -> Option<&str> {
    if let Some(name) = fields.get("file_name").and_then(Value::as_str) {
        return Some(name);
    }
    let path = fields.get("file_path").and_then(Value::as_str)?;
    path.rsplit(['/', '\\']).next().filter(|n| !n.is_empty())
}

fn entry(fields: &Map<String, Value>) -> Option<Entry> {
    let size = number(fields, "file_size").filter(|s| *s >= 0.0)? as u64;
    let mtime = number(fields, "file_mtime")?;
    let mut entry = Entry::new(super::Fingerprint { size, mtime });
    entry.info = facts(fields);
    entry.facts = FactsSource::Legacy;
    let history: Map<String, Value> = HISTORY_FIELDS
        .iter()
        .filter_map(|&field| {
            let value = fields.get(field).filter(|v| !v.is_null())?;
            Some((field.to_owned(), value.clone()))
        })
        .collect();
    entry.legacy = (!history.is_empty()).then_some(history);
    Some(entry)
}

/// The legacy facts as a [`MediaInfo`]: the main video and first audio stream, as recorded.
fn facts(fields: &Map<String, Value>) -> Option<MediaInfo> {
    let video_codec = text(fields, "codec_video");
    let audio_codec = text(fields, "codec_audio");
    if video_codec.is_none() && audio_codec.is_none() {
        return None;
    }
    let mut streams = Vec::new();
    if let Some(codec) = video_codec {
        let color = Color {
            primaries: text(fields, "color_primaries").map(Into::into),
            transfer: text(fields, "color_transfer").map(Into::into),
            space: text(fields, "color_space").map(Into::into),
            range: None,
        };
        streams.push(Stream {
            index: 0,
            kind: StreamKind::Video,
            codec: codec.into(),
            profile: None,
            pix_fmt: None,
            bit_depth: number(fields, "bit_depth")
                .filter(|d| (1.0..=32.0).contains(d))
                .map(|d| d as u8),
            width: dimension(fields, "width"),
            height: dimension(fields, "height"),
            language: None,
            is_default: false,
            forced: false,
            hearing_impaired: false,
            attached_pic: false,
            filename: None,
            mimetype: None,
            color: (color != Color::default()).then_some(color),
            dolby_vision: false,
            closed_captions: false,
            undescribed: false,
        });
    }
    if let Some(codec) = audio_codec {
        streams.push(Stream::new(streams.len() as u32, StreamKind::Audio, codec));
    }
    Some(MediaInfo {
        // Not recorded by the legacy tool.
        container: CompactString::default(),
        duration_secs: number(fields, "duration").filter(|d| *d > 0.0),
        bit_rate: number(fields, "bitrate")
            .filter(|b| *b > 0.0)
            .map(|b| b as u64),
        streams,
        chapters: 0,
    })
}

/// A non-empty string field.
fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A numeric field; Python's `json.dump(default=str)` may have written it as a string.
fn number(fields: &Map<String, Value>, name: &str) -> Option<f64> {
    match fields.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

fn dimension(fields: &Map<String, Value>, name: &str) -> Option<u32> {
    number(fields, name)
        .filter(|d| *d >= 1.0 && *d <= f64::from(u32::MAX))
        .map(|d| d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Shaped like `MediaDatabase.store_probe` output, after a conversion and a re-download.
    const SAMPLE: &str = r#"{
      "3f1c": {"fingerprint_hash": "3f1c", "file_path": "/Storage/media/tv/Show/Movie.mkv",
        "file_name": "Movie.mkv", "file_size": 1000, "file_mtime": 1700000000.5,
        "last_scanned": "2024-01-01T10:00:00", "codec_video": "h264", "codec_audio": "aac",
        "resolution": "1920x1080", "width": 1920, "height": 1080, "duration": 60.5,
        "bitrate": 8000000, "is_hdr": true, "hdr_type": "HDR10", "color_transfer": "smpte2084",
        "color_primaries": "bt2020", "color_space": "bt2020nc", "bit_depth": 10,
        "audio_channels": "6", "audio_layout": "5.1", "has_stereo_track": false,
        "has_surround_track": true, "action": "needs_conversion", "conversion_params": null,
        "processing_version": "1.0.0", "conversion_count": 0, "last_conversion_duration": null},
      "aa00": {"file_path": "C:\\media\\Old.avi", "file_size": "500", "file_mtime": 1600000000,
        "codec_video": "hevc", "codec_audio": null, "width": 0, "height": 0, "duration": 0,
        "bitrate": 0, "bit_depth": 8, "action": "skip", "conversion_count": 1,
        "processing_error": null},
      "bb00": {"file_name": "Movie.mkv", "file_size": 900, "file_mtime": 1500000000.0,
        "codec_video": "mpeg4"},
      "cc00": {"file_name": "nosize.mkv", "codec_video": "h264"}
    }"#;

    #[test]
    fn legacy_entries_become_entries_with_facts_and_history() {
        let files = parse(&map(SAMPLE)).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["Movie.mkv", "Old.avi"],
            "an entry without a fingerprint has nothing to keep"
        );

        let movie = &files["Movie.mkv"];
        assert_eq!((movie.size, movie.mtime), (1000, 1_700_000_000.5));
        assert_eq!(movie.facts, FactsSource::Legacy);
        let info = movie.info.as_ref().unwrap();
        let video = info.main_video().unwrap();
        assert_eq!(
            video.codec, "h264",
            "the newest of the two Movie.mkv entries"
        );
        assert_eq!(
            (video.width, video.height, video.bit_depth),
            (Some(1920), Some(1080), Some(10))
        );
        assert!(video.is_hdr());
        assert_eq!(info.main_audio().unwrap().codec, "aac");
        assert_eq!(info.duration_secs, Some(60.5));
        assert_eq!(info.bit_rate, Some(8_000_000));
        let history = movie.legacy.as_ref().unwrap();
        assert_eq!(history["action"], "needs_conversion");
        assert!(
            !history.contains_key("conversion_params"),
            "nulls are not kept"
        );
        assert!(
            !history.contains_key("codec_video"),
            "facts are not history"
        );

        let old = &files["Old.avi"];
        assert_eq!(old.size, 500, "a number written as a string still counts");
        let info = old.info.as_ref().unwrap();
        assert_eq!(info.streams.len(), 1);
        assert_eq!(info.main_video().unwrap().width, None, "0 means unknown");
        assert_eq!(info.duration_secs, None);
        assert_eq!(old.legacy.as_ref().unwrap()["conversion_count"], 1);
    }

    #[test]
    fn objects_that_are_not_legacy_entries_are_rejected() {
        assert!(parse(&map(r#"{"a": 1}"#)).is_none());
        assert!(parse(&map(r#"{"a": {"codec_video": "h264"}}"#)).is_none());
        assert!(parse(&map("{}")).unwrap().is_empty());
    }
}
