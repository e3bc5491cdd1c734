//! The native header reader against ffprobe, on clips the real ffmpeg makes and on the
//! real-media corpus when it is there; and against truncated and mutated headers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

mod common;

use common::ffmpeg;
use media_converter::config::MediaKind;
use media_converter::decide::{self, AllowedLosses, Rules};
use media_converter::header::{self, MAX_HEADER_BYTES};
use media_converter::probe::{self, MediaInfo, StreamKind};
use media_converter::scan::{MediaFile, media_kind};

fn has_encoder(name: &str) -> bool {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(name))
}

const VIDEO: [&str; 4] = ["-f", "lavfi", "-i", "testsrc2=s=160x90:r=24:d=0.5"];
const TONE: [&str; 4] = ["-f", "lavfi", "-i", "sine=f=440:d=0.5"];

/// One clip: a name and the ffmpeg arguments between the inputs given above and the output.
struct Clip {
    name: &'static str,
    args: Vec<String>,
}

fn clip(name: &'static str, args: &[&str]) -> Clip {
    Clip {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Makes the clips in `dir`: every container, codec, colour and stream layout the reader
/// claims to understand.
fn make_clips(dir: &Path) -> Vec<PathBuf> {
    let srt = dir.join("sub.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:00,400\nhello\n").unwrap();
    let cover = dir.join("cover.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=red:s=64x64",
        "-frames:v",
        "1",
        cover.to_str().unwrap(),
    ]);
    let srt = srt.to_str().unwrap().to_string();
    let cover = cover.to_str().unwrap().to_string();
    let x264 = ["-c:v", "libx264", "-preset", "ultrafast"];
    let x265 = [
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error",
    ];
    let hdr = [
        "-pix_fmt",
        "yuv420p10le",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
    ];
    let mut clips = vec![
        // H.264, two audio languages, forced and default subtitles, cover art attached.
        clip(
            "h264_langs_cover.mkv",
            &[
                &VIDEO[..],
                &TONE[..],
                &TONE[..],
                &["-i", &srt, "-i", &srt],
                &[
                    "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map", "4",
                ],
                &x264[..],
                &["-c:a", "aac", "-c:s", "srt"],
                &[
                    "-metadata:s:a:0",
                    "language=eng",
                    "-metadata:s:a:1",
                    "language=fra",
                ],
                &[
                    "-metadata:s:s:0",
                    "language=ger",
                    "-metadata:s:s:1",
                    "language=und",
                ],
                &["-disposition:s:0", "forced", "-disposition:s:1", "default"],
                &["-attach", &cover, "-metadata:s:t", "mimetype=image/jpeg"],
            ]
            .concat(),
        ),
        clip(
            "h264_high10.mp4",
            &[
                &VIDEO[..],
                &TONE[..],
                &x264[..],
                &["-pix_fmt", "yuv420p10le", "-c:a", "aac"],
            ]
            .concat(),
        ),
        clip(
            "h264_cover.mp4",
            &[
                &VIDEO[..],
                &TONE[..],
                &["-i", &cover],
                &["-map", "0", "-map", "1", "-map", "2"],
                &x264[..],
                &[
                    "-c:a",
                    "aac",
                    "-c:v:1",
                    "mjpeg",
                    "-disposition:v:1",
                    "attached_pic",
                ],
                &["-metadata:s:a:0", "language=spa"],
            ]
            .concat(),
        ),
        clip(
            "h264_text.mov",
            &[
                &VIDEO[..],
                &TONE[..],
                &TONE[..],
                &["-map", "0", "-map", "1", "-map", "2"],
                &x264[..],
                &["-c:a", "aac"],
                &[
                    "-metadata:s:a:0",
                    "language=eng",
                    "-metadata:s:a:1",
                    "language=fra",
                ],
            ]
            .concat(),
        ),
        clip(
            "h264_mov_text.mp4",
            &[
                &VIDEO[..],
                &TONE[..],
                &["-i", &srt],
                &["-map", "0", "-map", "1", "-map", "2"],
                &x264[..],
                &["-c:a", "aac", "-c:s", "mov_text"],
                &["-metadata:s:s:0", "language=eng"],
            ]
            .concat(),
        ),
        clip(
            "hevc8.mkv",
            &[&VIDEO[..], &TONE[..], &x265[..], &["-c:a", "flac"]].concat(),
        ),
        clip(
            "hevc10_hdr10.mkv",
            &[&VIDEO[..], &TONE[..], &x265[..], &hdr[..], &["-c:a", "aac"]].concat(),
        ),
        clip(
            "hevc10_hdr10.mp4",
            &[
                &VIDEO[..],
                &TONE[..],
                &x265[..],
                &hdr[..],
                &["-tag:v", "hvc1", "-c:a", "aac"],
            ]
            .concat(),
        ),
        clip(
            "hevc8_hlg.mov",
            &[
                &VIDEO[..],
                &x265[..],
                &["-color_trc", "arib-std-b67", "-tag:v", "hvc1"],
            ]
            .concat(),
        ),
        clip(
            "vp9_opus.webm",
            &[
                &VIDEO[..],
                &TONE[..],
                &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                ],
                &["-c:a", "libopus", "-metadata:s:a:0", "language=jpn"],
            ]
            .concat(),
        ),
        clip(
            "vp9_10bit.mkv",
            &[
                &VIDEO[..],
                &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                ],
                &["-pix_fmt", "yuv420p10le"],
            ]
            .concat(),
        ),
        clip(
            "vp9.mp4",
            &[
                &VIDEO[..],
                &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                ],
            ]
            .concat(),
        ),
        clip(
            "mpeg4_mp3.avi",
            &[
                &VIDEO[..],
                &TONE[..],
                &["-c:v", "mpeg4", "-c:a", "libmp3lame"],
            ]
            .concat(),
        ),
        clip(
            "xvid_mp2_ac3.avi",
            &[
                &VIDEO[..],
                &TONE[..],
                &TONE[..],
                &["-map", "0", "-map", "1", "-map", "2"],
                &[
                    "-c:v", "mpeg4", "-vtag", "XVID", "-c:a:0", "mp2", "-c:a:1", "ac3",
                ],
            ]
            .concat(),
        ),
        clip(
            "msmpeg4v3_aac.avi",
            &[&VIDEO[..], &TONE[..], &["-c:v", "msmpeg4", "-c:a", "aac"]].concat(),
        ),
        clip(
            "mjpeg_pcm.avi",
            &[
                &VIDEO[..],
                &TONE[..],
                &["-c:v", "mjpeg", "-c:a", "pcm_s16le"],
            ]
            .concat(),
        ),
        clip(
            "mpeg4_mp3.mkv",
            &[
                &VIDEO[..],
                &TONE[..],
                &["-c:v", "mpeg4", "-c:a", "libmp3lame"],
            ]
            .concat(),
        ),
    ];
    if has_encoder("libsvtav1") {
        let av1 = ["-c:v", "libsvtav1", "-preset", "12"];
        clips.push(clip(
            "av1.mkv",
            &[&VIDEO[..], &TONE[..], &av1[..], &["-c:a", "libopus"]].concat(),
        ));
        clips.push(clip(
            "av1_10bit.mp4",
            &[&VIDEO[..], &av1[..], &["-pix_fmt", "yuv420p10le"]].concat(),
        ));
    } else {
        eprintln!("!!! AV1 NOT CHECKED: this ffmpeg has no libsvtav1 encoder");
    }
    clips
        .into_iter()
        .map(|c| {
            let out = dir.join(c.name);
            let mut args: Vec<&str> = c.args.iter().map(String::as_str).collect();
            args.push(out.to_str().unwrap());
            ffmpeg(&args);
            out
        })
        .collect()
}

/// Holds the native facts against ffprobe's: every field the decision reads, the decision
/// itself, and every other field the native reader fills in.
fn assert_agrees(path: &Path, native: &MediaInfo, probed: &MediaInfo) {
    let name = path.display();
    assert_eq!(native.container, probed.container, "{name}: container");
    // AVI leaves it unknown (see `header::read`); the others must give ffprobe's.
    if native.container != "avi" || native.duration_secs.is_some() {
        let (a, b) = (native.duration_secs.unwrap(), probed.duration_secs.unwrap());
        assert!((a - b).abs() < 0.05, "{name}: duration {a} vs ffprobe {b}");
    }
    let kinds = |info: &MediaInfo| -> Vec<(u32, StreamKind, String)> {
        info.streams
            .iter()
            .map(|s| (s.index, s.kind, s.codec.to_string()))
            .collect()
    };
    assert_eq!(kinds(native), kinds(probed), "{name}: streams");
    for (n, p) in native.streams.iter().zip(&probed.streams) {
        let what = format!("{name} stream {}", n.index);
        assert_eq!(n.language, p.language, "{what}: language");
        assert_eq!(n.attached_pic, p.attached_pic, "{what}: cover art");
        assert_eq!(n.dolby_vision, p.dolby_vision, "{what}: Dolby Vision");
        if n.kind != StreamKind::Video || n.attached_pic {
            continue;
        }
        assert_eq!((n.width, n.height), (p.width, p.height), "{what}: size");
        // Colour as the container signals it; where the container is silent and only
        // the bitstream carries it, the native reader says nothing (see `header::read`).
        if n.color.is_some() {
            assert_eq!(n.is_hdr(), p.is_hdr(), "{what}: HDR");
        }
        if matches!(n.codec.as_str(), "h264" | "hevc" | "av1") {
            assert!(
                n.bit_depth.is_some(),
                "{what}: the bit depth of {}",
                n.codec
            );
        }
        for (field, ours, theirs) in [
            ("profile", &n.profile, &p.profile),
            ("pix_fmt", &n.pix_fmt, &p.pix_fmt),
        ] {
            if ours.is_some() {
                assert_eq!(ours, theirs, "{what}: {field}");
            }
        }
        if n.bit_depth.is_some() {
            assert_eq!(n.bit_depth, p.bit_depth, "{what}: bit depth");
        }
        if let Some(color) = &n.color {
            let theirs = p.color.clone().unwrap_or_default();
            assert_eq!(color.transfer, theirs.transfer, "{what}: transfer");
            assert_eq!(color.primaries, theirs.primaries, "{what}: primaries");
            assert_eq!(color.space, theirs.space, "{what}: matrix");
        }
    }
    // The survey decides a skip on these facts alone: the decision must be ffprobe's with
    // every flag that lets a file through, so that no skip reason hides behind another.
    let file = MediaFile {
        path: path.to_path_buf(),
        kind: media_kind(path).unwrap_or(MediaKind::Video),
        size: std::fs::metadata(path).unwrap().len(),
        modified: SystemTime::UNIX_EPOCH,
        listing: None,
    };
    for allowed in 0..8u8 {
        let rules = Rules {
            min_age: Duration::ZERO,
            min_savings_pct: 10.0,
            allow_dv_loss: allowed & 1 != 0,
            allow: AllowedLosses {
                alpha: allowed & 2 != 0,
                captions: allowed & 4 != 0,
            },
            now: SystemTime::now(),
        };
        assert_eq!(
            decide::decide(&file, native, &rules),
            decide::decide(&file, probed, &rules),
            "{name}: decision with {rules:?}"
        );
    }
}

fn ffprobe_path() -> PathBuf {
    PathBuf::from("ffprobe")
}

/// The clips, made once for all the tests of this binary, in Cargo's scratch directory.
fn clips() -> &'static [PathBuf] {
    static CLIPS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    CLIPS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header-clips");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        make_clips(&dir)
    })
}

#[test]
fn native_facts_match_ffprobe_on_every_kind_of_clip() {
    let clips = clips();
    for path in clips {
        let native = header::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let probed = probe::probe(&ffprobe_path(), path).unwrap();
        assert_agrees(path, &native, &probed);
    }
    // The clips hold what they are meant to: the comparison above saw each of these.
    let all: Vec<MediaInfo> = clips.iter().map(|p| header::read(p).unwrap()).collect();
    let seen = |pred: &dyn Fn(&MediaInfo) -> bool| all.iter().any(pred);
    assert!(seen(&|i| i.main_video().is_some_and(|v| v.is_hdr()
        && v.bit_depth == Some(10)
        && v.codec == "hevc")));
    assert!(seen(&|i| i.streams.iter().any(|s| s.attached_pic)));
    assert!(seen(&|i| i.languages(StreamKind::Audio) == ["eng", "fra"]));
    assert!(seen(
        &|i| i.languages(StreamKind::Subtitle) == ["ger", "und"]
    ));
}

/// Every field the survey's decision reads, native against ffprobe, on media other people
/// made (scripts/corpus.sh). With `MEDIA_CONVERTER_CORPUS_REQUIRED=1` (CI) a missing corpus
/// fails the test.
#[test]
fn the_real_media_corpus_agrees_or_falls_back() {
    let shown = common::corpus_dir();
    let required = std::env::var("MEDIA_CONVERTER_CORPUS_REQUIRED").is_ok_and(|v| v == "1");
    let Ok(files) = std::fs::read_dir(&shown) else {
        assert!(
            !required,
            "the real-media corpus is absent from {}: run scripts/corpus.sh",
            shown.display()
        );
        eprintln!(
            "!!! REAL-MEDIA CORPUS NOT CHECKED: {} is absent (fetch it with scripts/corpus.sh)",
            shown.display()
        );
        return;
    };
    let mut paths: Vec<PathBuf> = files
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    let (mut vouched, mut fell_back) = (0, 0);
    for path in &paths {
        let Ok(probed) = probe::probe(&ffprobe_path(), path) else {
            assert!(
                header::read(path).is_err(),
                "{}: vouched for a file ffprobe cannot read",
                path.display()
            );
            continue;
        };
        match header::read(path) {
            Ok(native) => {
                assert_agrees(path, &native, &probed);
                vouched += 1;
            }
            Err(why) => {
                eprintln!("{}: {why}", path.display());
                fell_back += 1;
            }
        }
    }
    eprintln!("corpus: {vouched} files read natively, {fell_back} left to ffprobe");
    if required {
        assert!(vouched > 0, "no file of the corpus was read natively");
    }
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_and_mutated_headers_never_panic_or_read_unbounded() {
    let clips = clips();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut refused, mut total) = (0, 0);
    for path in clips {
        let data = std::fs::read(path).unwrap();
        let (_, whole) = header::read_bytes_counted(&data).unwrap();
        assert!(whole < 64 * 1024, "{}: read {whole} bytes", path.display());
        // Every truncation: a file cut anywhere is refused or read, never a panic.
        for len in 0..data.len() {
            total += 1;
            if header::read_bytes(&data[..len]).is_err() {
                refused += 1;
            }
        }
        // Random byte changes, most of them in the headers.
        for _ in 0..3000 {
            let mut bad = data.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % bad.len().min(4096 + rng.next() as usize % 64);
                let at = if rng.next() % 4 == 0 {
                    bad.len() - 1 - at.min(bad.len() - 1)
                } else {
                    at
                };
                bad[at] = rng.next() as u8;
            }
            total += 1;
            match header::read_bytes_counted(&bad) {
                Ok((_, read)) => assert!(read <= MAX_HEADER_BYTES),
                Err(_) => refused += 1,
            }
        }
    }
    eprintln!("hostile headers: {total} tried, {refused} refused, none panicked");
    assert!(refused > 0);
}

/// Sizes that claim far more than the file holds are refused without being allocated.
#[test]
fn lying_length_fields_are_refused() {
    // An MP4 whose moov claims 2^62 bytes (64-bit size).
    let mut mp4 = b"\0\0\0\x10ftypisom\0\0\0\0".to_vec();
    mp4.extend_from_slice(&[0, 0, 0, 1]);
    mp4.extend_from_slice(b"moov");
    mp4.extend_from_slice(&(1u64 << 62).to_be_bytes());
    mp4.extend_from_slice(&[0; 64]);
    let err = header::read_bytes(&mp4).unwrap_err();
    assert!(err.0.contains("does not fit"), "{err}");
    // Matroska whose segment holds a Tracks element claiming 2^40 bytes.
    let mut mkv = vec![0x1A, 0x45, 0xDF, 0xA3, 0x88, 0x42, 0x82, 0x85];
    mkv.extend_from_slice(b"webm\0");
    mkv.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    mkv.push(0xFF);
    mkv.extend_from_slice(&[0x16, 0x54, 0xAE, 0x6B, 0x01, 0, 0, 1, 0, 0, 0, 0]);
    mkv.extend_from_slice(&[0; 32]);
    assert!(header::read_bytes(&mkv).is_err());
}

/// A video the headers show already efficient is skipped by a dry run without ffprobe; one
/// to convert is still probed, so that the plan shows every skip ffprobe would find.
#[test]
fn the_survey_skips_efficient_video_read_natively_without_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let clips = clips();
    let pick = |name: &str| {
        let from = clips.iter().find(|p| p.ends_with(name)).unwrap();
        let to = lib.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    let (hevc, vp9, h264) = (
        pick("hevc10_hdr10.mp4"),
        pick("vp9_10bit.mkv"),
        pick("h264_high10.mp4"),
    );
    common::age_all(&lib);
    let probe = common::CountingFfprobe::new();
    let out = common::cmd()
        .env("PATH", probe.path_var())
        .args(["--dir".as_ref(), lib.as_os_str(), "--dry-run".as_ref()])
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let events = common::events(&out);
    let planned = common::of_kind(&events, "planned");
    for file in [&hevc, &vp9] {
        assert_eq!(probe.calls_on(file), 0, "{} was probed", file.display());
        assert!(
            planned.iter().any(|e| e["file"] == file.to_str().unwrap()
                && e["action"] == "skip"
                && e["reason"] == "already_efficient"),
            "{} not skipped as efficient: {events:#?}",
            file.display()
        );
    }
    // A plan shows what ffprobe would find in a file to convert (captions inside the
    // video): the headers decide its skips, ffprobe its conversions.
    assert_eq!(probe.calls_on(&h264), 1, "H.264 is still read by ffprobe");
}
