//! Running ffmpeg for one file: the declarative command line, progress, and stopping early.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::decide::{Container, Plan};
use crate::encoder::{EncodeSettings, EncoderSetup};
use crate::probe::{HdrMetadata, MediaInfo, StreamKind};
use crate::process::{
    self, CommandFailed, StderrTail, display_command, kill_and_reap, media_arg, media_command,
};
use crate::progress::{FfmpegProgress, ProgressParser};

/// The fraction of the duration after which a growing output is given up on.
pub const EARLY_ABORT_FRACTION: f64 = 0.2;

/// The least output, in seconds, before a projection is trusted: the first keyframe and the
/// headers make the start of any file look expensive.
pub const EARLY_ABORT_MIN_SECS: f64 = 5.0;

/// An ffmpeg command line, with what it leaves out and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FfmpegArgs {
    pub args: Vec<OsString>,
    /// Streams the target container cannot hold, dropped on purpose, said in the events.
    pub dropped: Vec<String>,
}

/// What to encode and how.
#[derive(Debug)]
pub struct Job<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub info: &'a MediaInfo,
    pub plan: &'a Plan,
    pub encoder: &'a EncoderSetup,
    pub settings: &'a EncodeSettings,
    pub hdr: Option<&'a HdrMetadata>,
    /// Cover images taken out of the source to be attached again (see [`Covers`]).
    pub covers: &'a Covers,
}

/// Cover art that Matroska must carry as attachments. Read from Matroska, a cover image is
/// an attached picture; written back by ffmpeg (5.1, 6.0) it becomes a one-frame video
/// track that players take for a second video. So each is copied out of the source, byte
/// for byte, into a file of the system's temp directory, attached to the new file with its
/// name and MIME type, and the file removed when this is dropped.
#[derive(Debug, Default)]
pub struct Covers {
    files: Vec<Cover>,
}

#[derive(Debug)]
struct Cover {
    stream_index: u32,
    path: std::path::PathBuf,
    filename: String,
    mimetype: String,
}

impl Covers {
    /// No covers to attach.
    pub fn none() -> Covers {
        Covers::default()
    }

    /// Copies out the source's cover images when the output is Matroska; none otherwise
    /// (MP4, MOV and FLAC keep an attached picture as one).
    pub fn extract(
        ffmpeg: &Path,
        input: &Path,
        info: &MediaInfo,
        container: Container,
    ) -> Result<Covers, CommandFailed> {
        let mut covers = Covers::none();
        if container != Container::Matroska {
            return Ok(covers);
        }
        for stream in info.streams.iter().filter(|s| s.attached_pic) {
            let (mimetype, ext) = match stream.codec.as_str() {
                "png" => ("image/png", "png"),
                "mjpeg" => ("image/jpeg", "jpg"),
                "bmp" => ("image/bmp", "bmp"),
                "gif" => ("image/gif", "gif"),
                "webp" => ("image/webp", "webp"),
                // Any other image stays mapped; verification then says what became of it.
                _ => continue,
            };
            let unique = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir().join(format!(
                "media-converter-cover-{}-{unique}-{}.{ext}",
                std::process::id(),
                stream.index
            ));
            let args: Vec<OsString> = vec![
                "-hide_banner".into(),
                "-nostdin".into(),
                "-v".into(),
                "error".into(),
                "-y".into(),
                "-i".into(),
                media_arg(input),
                "-map".into(),
                format!("0:{}", stream.index).into(),
                "-c".into(),
                "copy".into(),
                "-frames:v".into(),
                "1".into(),
                "-f".into(),
                "image2".into(),
                media_arg(&path),
            ];
            // Pushed first, so a failed copy's partial file is removed too.
            covers.files.push(Cover {
                stream_index: stream.index,
                path,
                filename: stream
                    .filename
                    .as_ref()
                    .map_or_else(|| format!("cover.{ext}"), ToString::to_string),
                mimetype: stream
                    .mimetype
                    .as_ref()
                    .map_or_else(|| mimetype.into(), ToString::to_string),
            });
            process::run_captured(ffmpeg, &args)?;
        }
        Ok(covers)
    }
}

impl Drop for Covers {
    fn drop(&mut self) {
        for cover in &self.files {
            let _ = std::fs::remove_file(&cover.path);
        }
    }
}

/// Builds the ffmpeg arguments for a job; pure, so every flag is unit-tested.
pub fn ffmpeg_args(job: &Job<'_>) -> FfmpegArgs {
    let mut args: Vec<OsString> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        // Progress goes to stdout as key=value blocks; the stats line would only be noise.
        "-nostats",
        "-progress",
        "pipe:1",
        "-y",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if job.plan.container != Container::Flac {
        // Hardware devices are opened before the input, for the upload filter to find.
        args.extend(job.encoder.input_args());
    }
    args.push("-i".into());
    args.push(media_arg(job.input));

    let mut dropped = Vec::new();
    // Every stream, in order, so output indices match input indices among each kind.
    push(&mut args, &["-map", "0"]);
    for cover in &job.covers.files {
        // Attached again below, as an attachment.
        push(&mut args, &["-map", &format!("-0:{}", cover.stream_index)]);
    }
    for stream in &job.info.streams {
        if matches!(stream.kind, StreamKind::Data | StreamKind::Other) {
            // Timecode and similar data tracks: Matroska and FLAC cannot store them, and
            // no player shows them. Dropped, and said so.
            push(&mut args, &["-map", &format!("-0:{}", stream.index)]);
            dropped.push(format!("stream #{} ({} data)", stream.index, stream.codec));
        }
    }
    push(&mut args, &["-c", "copy"]);

    match job.plan.container {
        Container::Flac => push(&mut args, &["-c:a", "flac"]),
        container => {
            if let Some(main) = job.info.main_video() {
                // Its place among the output's video streams: covers attached again as
                // attachments are not among them.
                let out_index = job
                    .info
                    .streams_of(StreamKind::Video)
                    .take_while(|s| s.index != main.index)
                    .filter(|s| !job.covers.files.iter().any(|c| c.stream_index == s.index))
                    .count();
                let mut video = job
                    .encoder
                    .video_args(out_index, main, job.settings, job.hdr);
                if let Some((w, h)) = job.plan.crop_to {
                    crop_first(&mut video, out_index, w, h);
                }
                // Accepted on the command line (decided at plan time), and said.
                if main.has_alpha() {
                    dropped.push(format!("alpha channel of stream #{}", main.index));
                }
                if main.closed_captions {
                    dropped.push(format!("closed captions of stream #{}", main.index));
                }
                args.extend(video);
                if container.is_iso_family() {
                    // Apple players only play HEVC tagged hvc1, not ffmpeg's default hev1.
                    push(&mut args, &[&format!("-tag:v:{out_index}"), "hvc1"]);
                }
            }
            if container == Container::Matroska {
                for (i, sub) in job.info.streams_of(StreamKind::Subtitle).enumerate() {
                    if sub.codec == "mov_text" {
                        // Matroska has no mov_text; SubRip carries the same text losslessly.
                        push(&mut args, &[&format!("-c:s:{i}"), "srt"]);
                    }
                }
            }
        }
    }

    // Attachments made by -attach come after the mapped ones.
    let mapped_attachments = job.info.streams_of(StreamKind::Attachment).count();
    for (i, cover) in job.covers.files.iter().enumerate() {
        let spec = format!("-metadata:s:t:{}", mapped_attachments + i);
        args.push("-attach".into());
        args.push(media_arg(&cover.path));
        push(&mut args, &[&spec, &format!("mimetype={}", cover.mimetype)]);
        push(&mut args, &[&spec, &format!("filename={}", cover.filename)]);
    }

    push(&mut args, &["-map_metadata", "0", "-map_chapters", "0"]);
    // Sparse subtitle streams can otherwise overflow the default muxing queue.
    push(&mut args, &["-max_muxing_queue_size", "4096"]);
    if job.plan.container == Container::Mp4 {
        // The index up front lets players start streaming before the whole file is read.
        push(&mut args, &["-movflags", "+faststart"]);
    }
    push(&mut args, &["-f", job.plan.container.muxer()]);
    args.push(media_arg(job.output));
    FfmpegArgs { args, dropped }
}

/// Puts a crop to `w`x`h` (from the top left) before the encoder's own filter of the main
/// video (a hardware upload), or as its only filter.
fn crop_first(video_args: &mut Vec<OsString>, out_index: usize, w: u32, h: u32) {
    let option = format!("-filter:v:{out_index}");
    let crop = format!("crop={w}:{h}:0:0");
    match video_args.iter().position(|a| *a == *option) {
        Some(at) if at + 1 < video_args.len() => {
            let chain = format!("{crop},{}", video_args[at + 1].to_string_lossy());
            video_args[at + 1] = chain.into();
        }
        _ => {
            video_args.push(option.into());
            video_args.push(crop.into());
        }
    }
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

/// Why an encode was stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The output is on course to be larger than the original.
    WouldNotShrink,
    /// Our lock was lost or taken over: someone else owns this file now.
    LockLost,
    /// The run's deadline passed and `--stop-at-deadline` was given.
    Deadline,
}

/// How an encode ended when ffmpeg did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    Stopped(StopReason),
}

/// Whether an encode 20% (and at least 5 s) through is heading for an output larger than
/// `source_size`.
pub fn will_not_shrink(progress: &FfmpegProgress, duration: Option<f64>, source_size: u64) -> bool {
    let far_enough = progress.out_time_secs >= EARLY_ABORT_MIN_SECS
        && progress
            .fraction(duration)
            .is_some_and(|f| (EARLY_ABORT_FRACTION..1.0).contains(&f));
    far_enough
        && progress
            .projected_size(duration)
            .is_some_and(|projected| projected > source_size)
}

/// Runs ffmpeg, calling `watch` on every progress update and at least every 200 ms (with
/// `None`), so it can stop the encode for any reason.
pub fn run(
    ffmpeg: &Path,
    args: &[OsString],
    mut watch: impl FnMut(Option<&FfmpegProgress>) -> Option<StopReason>,
) -> Result<Outcome, CommandFailed> {
    let failed = |status, stderr_tail| CommandFailed {
        command: display_command(ffmpeg, args),
        status,
        stderr_tail,
    };
    let mut child = process::spawn(
        media_command(ffmpeg, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|err| failed(None, vec![err.to_string()]))?;
    let tail = child.stderr.take().map(StderrTail::drain);
    let (tx, rx) = mpsc::channel();
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            let mut parser = ProgressParser::default();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(update) = parser.feed(&line) {
                    if tx.send(update).is_err() {
                        break;
                    }
                }
            }
        })
    });

    let stop = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(update) => {
                if let Some(reason) = watch(Some(&update)) {
                    break Some(reason);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(reason) = watch(None) {
                    break Some(reason);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };

    if let Some(reason) = stop {
        kill_and_reap(&mut child);
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        let _ = tail.map(StderrTail::finish);
        return Ok(Outcome::Stopped(reason));
    }
    let status = child.wait();
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let stderr_tail = tail.map(StderrTail::finish).unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(Outcome::Finished),
        Ok(status) => Err(failed(Some(status), stderr_tail)),
        Err(err) => Err(failed(None, vec![err.to_string()])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::parse_ffprobe_json;
    use std::path::PathBuf;

    fn plan(container: Container) -> Plan {
        Plan {
            container,
            output_path: PathBuf::from("out"),
            estimated_bytes: 0,
            source: None,
            min_savings_pct: 10.0,
            crop_to: None,
        }
    }

    fn args_for(json: &str, container: Container) -> (String, Vec<String>) {
        args_with(json, container, &EncoderSetup::software())
    }

    fn args_with(
        json: &str,
        container: Container,
        encoder: &EncoderSetup,
    ) -> (String, Vec<String>) {
        args_with_covers(json, container, encoder, &Covers::none())
    }

    fn args_with_covers(
        json: &str,
        container: Container,
        encoder: &EncoderSetup,
        covers: &Covers,
    ) -> (String, Vec<String>) {
        let info = parse_ffprobe_json(json.as_bytes()).unwrap();
        let plan = plan(container);
        let settings = EncodeSettings {
            quality: crate::encoder::Quality::whole(22),
            preset: "medium".into(),
        };
        let job = Job {
            input: Path::new("-in put.avi"),
            output: Path::new(".tmp.mkv"),
            info: &info,
            plan: &plan,
            encoder,
            settings: &settings,
            hdr: None,
            covers,
        };
        let built = ffmpeg_args(&job);
        let text: Vec<String> = built
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        (text.join(" "), built.dropped)
    }

    const MP4_WITH_COVER_AND_TEXT: &str = r#"{"streams":[
        {"index":0,"codec_type":"video","codec_name":"mjpeg","disposition":{"attached_pic":1}},
        {"index":1,"codec_type":"video","codec_name":"h264","pix_fmt":"yuv420p"},
        {"index":2,"codec_type":"audio","codec_name":"aac"},
        {"index":3,"codec_type":"subtitle","codec_name":"mov_text"},
        {"index":4,"codec_type":"data","codec_name":"bin_data"}],
        "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"1.0"}}"#;

    #[test]
    fn encodes_only_the_main_video_and_copies_the_rest() {
        let (args, dropped) = args_for(MP4_WITH_COVER_AND_TEXT, Container::Mp4);
        assert!(
            args.contains("-i file:-in put.avi -map 0 -map -0:4 -c copy -c:v:1 libx265"),
            "{args}"
        );
        assert!(args.contains("-tag:v:1 hvc1"), "{args}");
        assert!(args.contains("-map_metadata 0 -map_chapters 0"), "{args}");
        assert!(
            args.ends_with("-movflags +faststart -f mp4 file:.tmp.mkv"),
            "{args}"
        );
        assert!(!args.contains("-c:s:0 srt"), "mp4 keeps mov_text: {args}");
        assert_eq!(dropped, ["stream #4 (bin_data data)"]);
    }

    #[test]
    fn a_cover_goes_into_matroska_as_an_attachment_not_a_video_track() {
        // As ffprobe shows a Matroska file with a font and a cover (tests/corpus:
        // flashmob.mkv).
        let json = r#"{"streams":[
            {"index":0,"codec_type":"video","codec_name":"h264","pix_fmt":"yuv420p"},
            {"index":1,"codec_type":"audio","codec_name":"vorbis"},
            {"index":2,"codec_type":"attachment","tags":{"filename":"main.avs.gz"}},
            {"index":3,"codec_type":"video","codec_name":"png","disposition":{"attached_pic":1},
             "tags":{"filename":"front.png","mimetype":"image/png"}}],
            "format":{"format_name":"matroska,webm","duration":"17.8"}}"#;
        let info = parse_ffprobe_json(json.as_bytes()).unwrap();
        assert_eq!(info.streams[3].filename.as_deref(), Some("front.png"));
        let covers = Covers {
            files: vec![Cover {
                stream_index: 3,
                path: PathBuf::from("/tmp/cover.png"),
                filename: "front.png".into(),
                mimetype: "image/png".into(),
            }],
        };
        let (args, _) = args_with_covers(
            json,
            Container::Matroska,
            &EncoderSetup::software(),
            &covers,
        );
        assert!(args.contains("-map 0 -map -0:3 -c copy"), "{args}");
        assert!(args.contains("-c:v:0 libx265"), "{args}");
        // The font is attachment 0, the cover attachment 1.
        assert!(
            args.contains(
                "-attach file:/tmp/cover.png -metadata:s:t:1 mimetype=image/png \
                 -metadata:s:t:1 filename=front.png -map_metadata 0"
            ),
            "{args}"
        );
        // Dropping the list removes the copies; a missing one is no error.
        drop(covers);

        // A cover before the main video: the video is the output's first video stream.
        let json = r#"{"streams":[
            {"index":0,"codec_type":"video","codec_name":"mjpeg","disposition":{"attached_pic":1}},
            {"index":1,"codec_type":"video","codec_name":"mpeg4","pix_fmt":"yuv420p"}],
            "format":{"format_name":"avi","duration":"1.0"}}"#;
        let covers = Covers {
            files: vec![Cover {
                stream_index: 0,
                path: PathBuf::from("/tmp/cover.jpg"),
                filename: "cover.jpg".into(),
                mimetype: "image/jpeg".into(),
            }],
        };
        let (args, _) = args_with_covers(
            json,
            Container::Matroska,
            &EncoderSetup::software(),
            &covers,
        );
        assert!(args.contains("-map -0:0 -c copy -c:v:0 libx265"), "{args}");
    }

    #[test]
    fn an_odd_size_is_cropped_before_any_upload_filter() {
        let mut plain: Vec<OsString> = vec!["-c:v:1".into(), "libx265".into()];
        crop_first(&mut plain, 1, 720, 404);
        assert_eq!(plain[2..], ["-filter:v:1", "crop=720:404:0:0"]);
        let mut upload: Vec<OsString> = vec!["-filter:v:0".into(), "format=nv12,hwupload".into()];
        crop_first(&mut upload, 0, 720, 404);
        assert_eq!(
            upload,
            ["-filter:v:0", "crop=720:404:0:0,format=nv12,hwupload"]
        );
    }

    #[test]
    fn matroska_turns_mov_text_into_srt_and_needs_no_hvc1() {
        let (args, _) = args_for(MP4_WITH_COVER_AND_TEXT, Container::Matroska);
        assert!(args.contains("-c:s:0 srt"), "{args}");
        assert!(!args.contains("hvc1"), "{args}");
        assert!(args.ends_with("-f matroska file:.tmp.mkv"), "{args}");
    }

    #[test]
    fn a_hardware_device_is_opened_before_the_input() {
        use crate::encoder::{Device, Encoder};
        let vaapi = EncoderSetup::on(
            Encoder::HevcVaapi,
            Device::RenderNode("/dev/dri/renderD128".into()),
        );
        let (args, _) = args_with(MP4_WITH_COVER_AND_TEXT, Container::Mp4, &vaapi);
        assert!(
            args.contains(
                "-y -init_hw_device vaapi=mc:/dev/dri/renderD128 -filter_hw_device mc \
                 -i file:-in put.avi"
            ),
            "{args}"
        );
        // Only the main video (output video stream 1) is uploaded and encoded; the cover art
        // is copied.
        assert!(
            args.contains("-c:v:1 hevc_vaapi -filter:v:1 format=nv12,hwupload"),
            "{args}"
        );
    }

    #[test]
    fn audio_becomes_flac_keeping_cover_art_and_tags() {
        let json = r#"{"streams":[{"index":0,"codec_type":"audio","codec_name":"alac"},
            {"index":1,"codec_type":"video","codec_name":"png","disposition":{"attached_pic":1}}],
            "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2"}}"#;
        let (args, dropped) = args_for(json, Container::Flac);
        assert!(
            args.contains("-map 0 -c copy -c:a flac -map_metadata 0"),
            "{args}"
        );
        assert!(!args.contains("libx265"), "{args}");
        assert!(dropped.is_empty());
    }

    #[test]
    fn early_abort_only_after_a_fifth_and_only_when_growing() {
        let at = |secs: f64, size: u64| FfmpegProgress {
            out_time_secs: secs,
            total_size: size,
            ..Default::default()
        };
        // 10% in and already as large as the source: too early to judge.
        assert!(!will_not_shrink(&at(10.0, 1_000), Some(100.0), 1_000));
        // 30% of a 10 s clip is 3 s: too little output to project from.
        assert!(!will_not_shrink(&at(3.0, 1_000), Some(10.0), 1_000));
        // 25% in, projected 4x 300 = 1200 > 1000.
        assert!(will_not_shrink(&at(25.0, 300), Some(100.0), 1_000));
        // 25% in, projected 800 < 1000.
        assert!(!will_not_shrink(&at(25.0, 200), Some(100.0), 1_000));
        // Unknown duration: never guess.
        assert!(!will_not_shrink(&at(25.0, 300), None, 1_000));
    }
}
