//! Checking a new file before it may replace the original.
//!
//! ffmpeg and ffprobe both exit 0 on truncated files, so the exit code proves nothing: the
//! output is probed, compared with the source stream by stream, and decoded.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;

use crate::config::VerifyMode;
use crate::decide::Container;
use crate::probe::{MediaInfo, ProbeError, StreamKind, probe};
use crate::process::{CommandFailed, media_arg, run_captured};

/// Length of each window decoded by a quick verification, seconds.
///
/// A second of frames at three places finds a file cut short or damaged where it matters,
/// for the price of one decoder start-up.
const QUICK_WINDOW_SECS: f64 = 1.0;

/// Shorter files are decoded whole even by a quick verification: a seek decodes from the
/// keyframe before it, x265 puts one about every 10 s (keyint 250), so three windows of a
/// short file decode as much as the whole file, or more (measured on a 10 s clip with one
/// keyframe: 0.49 s for the windows, 0.33 s for everything).
const QUICK_MIN_SECS: f64 = 60.0;

/// Why a new file is not trusted.
#[derive(Debug)]
pub enum VerifyError {
    Unreadable(ProbeError),
    WrongCodec {
        expected: &'static str,
        found: String,
    },
    Duration {
        source: f64,
        output: f64,
    },
    StreamCount {
        kind: StreamKind,
        source: usize,
        output: usize,
    },
    Languages {
        kind: StreamKind,
        source: Vec<String>,
        output: Vec<String>,
    },
    /// A default, forced or hearing-impaired mark of the source is missing in the output.
    Dispositions {
        kind: StreamKind,
        lost: Vec<String>,
    },
    /// Fewer chapters than the source.
    Chapters {
        source: u32,
        output: u32,
    },
    /// Cover art did not come back as cover art (a cover turned into a video track).
    CoverArt {
        source: usize,
        output: usize,
    },
    Decode(CommandFailed),
    /// The decoder finished but reported damage (it conceals errors and exits 0).
    DecodeErrors {
        lines: Vec<String>,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Unreadable(err) => write!(f, "the new file does not probe: {err}"),
            VerifyError::WrongCodec { expected, found } => {
                write!(f, "the new file's codec is {found}, not {expected}")
            }
            VerifyError::Duration { source, output } => write!(
                f,
                "the new file lasts {output:.2}s but the original {source:.2}s \
                 (the original may be truncated or damaged)"
            ),
            VerifyError::StreamCount {
                kind,
                source,
                output,
            } => write!(
                f,
                "the new file has {output} {kind:?} streams, the original {source}"
            ),
            VerifyError::Languages {
                kind,
                source,
                output,
            } => write!(
                f,
                "{kind:?} languages differ: original {source:?}, new {output:?}"
            ),
            VerifyError::Dispositions { kind, lost } => {
                write!(f, "{kind:?} streams lost their marks: {}", lost.join(", "))
            }
            VerifyError::Chapters { source, output } => write!(
                f,
                "the new file has {output} chapters, the original {source}"
            ),
            VerifyError::CoverArt { source, output } => write!(
                f,
                "the new file has {output} cover images, the original {source} (a cover \
                 would come back as a video track)"
            ),
            VerifyError::Decode(err) => write!(f, "the new file does not decode: {err}"),
            VerifyError::DecodeErrors { lines } => write!(
                f,
                "decoding the new file reported errors: {}",
                lines.join(" | ")
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The duration tolerance: max(1 s, 0.5%).
pub fn duration_tolerance(source_secs: f64) -> f64 {
    (source_secs * 0.005).max(1.0)
}

/// Verifies `output` against the source's probe; returns the output's probe on success.
pub fn verify(
    ffmpeg: &Path,
    ffprobe: &Path,
    (source_path, source): (&Path, &MediaInfo),
    output: &Path,
    container: Container,
    mode: VerifyMode,
) -> Result<MediaInfo, VerifyError> {
    // The probe and the decode are independent processes: run them side by side. The
    // decode's windows are placed by the source's duration, which the comparison then holds
    // the output to; a short output fails that comparison whatever its windows found.
    let (probed, decoded) = std::thread::scope(|scope| {
        let decode = scope.spawn(|| decode_check(ffmpeg, output, source.duration_secs, mode));
        let probed = probe(ffprobe, output);
        let decoded = decode.join().unwrap_or_else(|_| {
            Err(VerifyError::DecodeErrors {
                lines: vec!["the decode check crashed".into()],
            })
        });
        (probed, decoded)
    });
    let new = probed.map_err(VerifyError::Unreadable)?;
    compare(source, &new, container)?;
    if let Err(err) = decoded {
        let window = (source.duration_secs, mode);
        return match own_decode_errors(ffmpeg, source_path, output, window) {
            None => Ok(new),
            // ffmpeg stopped without a word: its own errors are the reason to show.
            Some(lines) if matches!(&err, VerifyError::Decode(f) if f.stderr_tail.is_empty()) => {
                Err(VerifyError::DecodeErrors { lines })
            }
            Some(_) => Err(err),
        };
    }
    Ok(new)
}

/// The new file's decode errors that its source does not have, or `None` when every one is
/// also the source's: a copied audio track with a cut last frame is exactly as damaged in
/// both, and not the new file's fault. Both are decoded through the same windows without
/// stopping at the first error; a new file with no error at all is not excused (a failure
/// with nothing said is not explained).
fn own_decode_errors(
    ffmpeg: &Path,
    source: &Path,
    output: &Path,
    (duration, mode): (Option<f64>, VerifyMode),
) -> Option<Vec<String>> {
    let errors = |path| {
        let args = decode_args(path, duration, mode, false);
        let tail = match run_captured(ffmpeg, &args) {
            Ok(captured) => captured.stderr_tail,
            Err(failed) => failed.stderr_tail,
        };
        tail.iter()
            .map(|l| without_addresses(l))
            .collect::<Vec<_>>()
    };
    let (theirs, ours) = std::thread::scope(|scope| {
        let theirs = scope.spawn(|| errors(source));
        let ours = errors(output);
        (theirs.join().unwrap_or_default(), ours)
    });
    let own: Vec<String> = ours
        .iter()
        .filter(|line| !theirs.contains(line))
        .cloned()
        .collect();
    match (ours.is_empty(), own.is_empty()) {
        (false, true) => None,
        (true, _) => Some(vec![
            "the strict decode failed, the full one found no error".into(),
        ]),
        (false, false) => Some(own),
    }
}

/// An ffmpeg log line without the context addresses (`[wmav2 @ 0x55d0c8a4e2c0]`), which
/// differ from one process to the next.
fn without_addresses(line: &str) -> String {
    match (line.find(" @ 0x"), line.find(']')) {
        (Some(at), Some(end)) if at < end => format!("{}{}", &line[..at], &line[end..]),
        _ => line.to_string(),
    }
}

/// The structural comparison: codec, duration, stream counts and languages.
pub fn compare(
    source: &MediaInfo,
    new: &MediaInfo,
    container: Container,
) -> Result<(), VerifyError> {
    let (expected, kind) = match container {
        Container::Flac => ("flac", StreamKind::Audio),
        _ => ("hevc", StreamKind::Video),
    };
    let found = match kind {
        StreamKind::Audio => new.main_audio(),
        _ => new.main_video(),
    }
    .map(|s| s.codec.to_string())
    .unwrap_or_else(|| "missing".into());
    if found != expected {
        return Err(VerifyError::WrongCodec { expected, found });
    }
    let covers = |info: &MediaInfo| info.streams.iter().filter(|s| s.attached_pic).count();
    if covers(source) != covers(new) {
        return Err(VerifyError::CoverArt {
            source: covers(source),
            output: covers(new),
        });
    }
    if let Some(source_secs) = source.duration_secs {
        let output = new.duration_secs.unwrap_or(0.0);
        if (output - source_secs).abs() > duration_tolerance(source_secs) {
            return Err(VerifyError::Duration {
                source: source_secs,
                output,
            });
        }
    }
    for kind in [
        StreamKind::Audio,
        StreamKind::Subtitle,
        StreamKind::Attachment,
    ] {
        let (a, b) = (source.languages(kind), new.languages(kind));
        if a.len() != b.len() {
            return Err(VerifyError::StreamCount {
                kind,
                source: a.len(),
                output: b.len(),
            });
        }
        if kind != StreamKind::Attachment && a != b {
            return Err(VerifyError::Languages {
                kind,
                source: a,
                output: b,
            });
        }
        let lost = lost_marks(source, new, kind);
        if !lost.is_empty() {
            return Err(VerifyError::Dispositions { kind, lost });
        }
    }
    // Only a loss counts: a cache written before chapters were counted says 0.
    if new.chapters < source.chapters {
        return Err(VerifyError::Chapters {
            source: source.chapters,
            output: new.chapters,
        });
    }
    Ok(())
}

/// The default, forced and hearing-impaired marks of the source's streams of `kind` that
/// the output's stream in the same place lacks. A mark the output adds is no loss (Matroska
/// marks the first track default when the source marked none).
fn lost_marks(source: &MediaInfo, new: &MediaInfo, kind: StreamKind) -> Vec<String> {
    let mut lost = Vec::new();
    for (i, (a, b)) in source
        .streams_of(kind)
        .zip(new.streams_of(kind))
        .enumerate()
    {
        for (name, had, has) in [
            ("default", a.is_default, b.is_default),
            ("forced", a.forced, b.forced),
            ("hearing impaired", a.hearing_impaired, b.hearing_impaired),
        ] {
            if had && !has {
                lost.push(format!("#{i} {name}"));
            }
        }
    }
    lost
}

/// Decodes the new file: windows at start, middle and end (quick) or everything (full).
///
/// One ffmpeg process opens the file once per window, so quick costs one start-up.
fn decode_check(
    ffmpeg: &Path,
    output: &Path,
    duration: Option<f64>,
    mode: VerifyMode,
) -> Result<(), VerifyError> {
    let args = decode_args(output, duration, mode, true);
    let captured = run_captured(ffmpeg, &args).map_err(VerifyError::Decode)?;
    // A decoder that conceals damage still exits 0, but says so on stderr.
    if captured.stderr_tail.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::DecodeErrors {
            lines: captured.stderr_tail,
        })
    }
}

/// The decode command: windows at start, middle and end (quick) or everything (full);
/// `strict` stops at the first error.
fn decode_args(
    path: &Path,
    duration: Option<f64>,
    mode: VerifyMode,
    strict: bool,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-hide_banner", "-nostdin", "-v", "error"]
        .iter()
        .map(OsString::from)
        .collect();
    if strict {
        args.push("-xerror".into());
    }
    let windows = match (mode, duration) {
        (VerifyMode::Quick, Some(d)) if d > QUICK_MIN_SECS => {
            vec![
                0.0,
                d / 2.0 - QUICK_WINDOW_SECS / 2.0,
                d - QUICK_WINDOW_SECS - 0.5,
            ]
        }
        _ => vec![],
    };
    if windows.is_empty() {
        args.extend(["-i".into(), media_arg(path)]);
        args.extend(["-map", "0:v?", "-map", "0:a?"].map(OsString::from));
    } else {
        for start in &windows {
            args.extend(
                [
                    "-ss",
                    &format!("{start:.3}"),
                    "-t",
                    &QUICK_WINDOW_SECS.to_string(),
                    "-i",
                ]
                .map(OsString::from),
            );
            args.push(media_arg(path));
        }
        for i in 0..windows.len() {
            args.extend(["-map".into(), format!("{i}:v?").into()]);
            args.extend(["-map".into(), format!("{i}:a?").into()]);
        }
    }
    // The demuxer's time base: with the default (1/fps), frames near a seek point can round
    // to the same timestamp and the null muxer complains, which would read as damage.
    args.extend(["-enc_time_base:v", "-1", "-f", "null", "-"].map(OsString::from));
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::parse_ffprobe_json;

    fn info(video: &str, duration: f64, audio_langs: &[&str]) -> MediaInfo {
        let mut streams = vec![format!(
            r#"{{"index":0,"codec_type":"video","codec_name":"{video}"}}"#
        )];
        for (i, lang) in audio_langs.iter().enumerate() {
            streams.push(format!(
                r#"{{"index":{},"codec_type":"audio","codec_name":"aac","tags":{{"language":"{lang}"}}}}"#,
                i + 1
            ));
        }
        let json = format!(
            r#"{{"streams":[{}],"format":{{"format_name":"matroska,webm","duration":"{duration}"}}}}"#,
            streams.join(",")
        );
        parse_ffprobe_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn accepts_a_faithful_output() {
        let source = info("h264", 100.0, &["eng", "fra"]);
        let new = info("hevc", 100.4, &["eng", "fra"]);
        assert!(compare(&source, &new, Container::Matroska).is_ok());
    }

    #[test]
    fn rejects_wrong_codec_short_output_and_lost_streams() {
        let source = info("h264", 100.0, &["eng", "fra"]);
        let err = compare(
            &source,
            &info("h264", 100.0, &["eng", "fra"]),
            Container::Matroska,
        );
        assert!(matches!(err, Err(VerifyError::WrongCodec { .. })));
        let err = compare(
            &source,
            &info("hevc", 98.5, &["eng", "fra"]),
            Container::Matroska,
        );
        assert!(matches!(err, Err(VerifyError::Duration { .. })), "{err:?}");
        let err = compare(&source, &info("hevc", 100.0, &["eng"]), Container::Matroska);
        assert!(matches!(
            err,
            Err(VerifyError::StreamCount {
                source: 2,
                output: 1,
                ..
            })
        ));
        let err = compare(
            &source,
            &info("hevc", 100.0, &["fra", "eng"]),
            Container::Matroska,
        );
        assert!(matches!(err, Err(VerifyError::Languages { .. })));
    }

    #[test]
    fn log_lines_compare_without_their_addresses() {
        assert_eq!(
            without_addresses("[wmav2 @ 0x55d0c8a4e2c0] Input packet size too small (82 < 96)"),
            "[wmav2] Input packet size too small (82 < 96)"
        );
        assert_eq!(
            without_addresses("Error while decoding"),
            "Error while decoding"
        );
    }

    #[test]
    fn a_lost_forced_or_default_mark_or_chapter_fails_an_added_one_does_not() {
        let mut source = info("h264", 10.0, &["eng", "fra"]);
        source.streams[2].forced = true;
        source.chapters = 3;
        let mut new = info("hevc", 10.0, &["eng", "fra"]);
        new.chapters = 3;
        let err = compare(&source, &new, Container::Matroska);
        assert!(
            matches!(&err, Err(VerifyError::Dispositions { lost, .. }) if lost == &["#1 forced"]),
            "{err:?}"
        );
        new.streams[2].forced = true;
        new.streams[1].is_default = true;
        assert!(compare(&source, &new, Container::Matroska).is_ok());
        new.chapters = 0;
        let err = compare(&source, &new, Container::Matroska);
        assert!(
            matches!(
                err,
                Err(VerifyError::Chapters {
                    source: 3,
                    output: 0
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_cover_that_became_a_video_track_fails() {
        let mut source = info("h264", 10.0, &["eng"]);
        let mut cover = crate::probe::Stream::new(2, StreamKind::Video, "png");
        cover.attached_pic = true;
        source.streams.push(cover.clone());
        let mut new = info("hevc", 10.0, &["eng"]);
        cover.attached_pic = false;
        new.streams.push(cover);
        let err = compare(&source, &new, Container::Matroska);
        assert!(
            matches!(
                err,
                Err(VerifyError::CoverArt {
                    source: 1,
                    output: 0
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn tolerance_is_a_second_or_half_a_percent() {
        assert_eq!(duration_tolerance(10.0), 1.0);
        assert_eq!(duration_tolerance(7200.0), 36.0);
    }
}
