//! The one-frame trial encode that tells a working encoder from one ffmpeg merely lists.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::encoder::{EncodeSettings, Encoder, EncoderSetup};
use crate::probe::{Stream, StreamKind};
use crate::process::{StderrTail, kill_and_reap, media_command};

/// How long a hardware encoder's trial may take before it counts as failed: a hung driver
/// must not hang the run.
pub const TRIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long libx265's trial may take. It has no driver to hang: a slow trial means a busy
/// machine, not a broken encoder (one 256x256 frame took over 15 s on two cores at a load
/// average of 30, and every file of that run failed as "libx265 does not work here"), and
/// libx265 is the encoder every fallback ends on. A build that cannot encode fails at once.
pub const SOFTWARE_TRIAL_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a trial of `encoder` may take before it counts as failed.
pub fn trial_timeout(encoder: Encoder) -> Duration {
    if encoder.is_hardware() {
        TRIAL_TIMEOUT
    } else {
        SOFTWARE_TRIAL_TIMEOUT
    }
}

/// The generated input: black 256x256 frames. NVENC refuses frames below about 145x49 and
/// some VAAPI drivers want sizes aligned to 16, so the trial stays well clear of both.
const TRIAL_SOURCE: &str = "color=c=black:s=256x256:r=25:d=1";

/// The arguments of a trial: one generated frame through exactly the device options and
/// encoder options (with the run's `settings`) a real encode of an 8-bit source uses, into
/// the null muxer.
pub fn trial_args(setup: &EncoderSetup, settings: &EncodeSettings) -> Vec<OsString> {
    let source = Stream {
        pix_fmt: Some("yuv420p".into()),
        bit_depth: Some(8),
        width: Some(256),
        height: Some(256),
        ..Stream::new(0, StreamKind::Video, "rawvideo")
    };
    let mut args: Vec<OsString> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .map(OsString::from)
        .into();
    args.extend(setup.input_args());
    args.extend(["-f", "lavfi", "-i", TRIAL_SOURCE].map(OsString::from));
    args.extend(setup.video_args(0, &source, settings, None));
    args.extend(["-frames:v", "1", "-an", "-f", "null", "-"].map(OsString::from));
    args
}

/// Runs a trial encode of `setup` through `ffmpeg`, killing it after `timeout`.
///
/// `Err` carries the reason in ffmpeg's own words, shortened to the lines that say
/// something.
pub fn run_trial(
    ffmpeg: &Path,
    setup: &EncoderSetup,
    settings: &EncodeSettings,
    timeout: Duration,
) -> Result<(), String> {
    let args = trial_args(setup, settings);
    let mut child = crate::process::spawn(
        media_command(ffmpeg, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(|err| format!("cannot start {}: {err}", ffmpeg.display()))?;
    let tail = child.stderr.take().map(StderrTail::drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_and_reap(&mut child);
                break Err(format!(
                    "the trial encode did not finish within {} s (a hung driver, or a machine \
                     too busy?) and was stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => {
                kill_and_reap(&mut child);
                break Err(format!("waiting for the trial encode: {err}"));
            }
        }
    };
    let lines = tail.map(StderrTail::finish).unwrap_or_default();
    match status? {
        status if status.success() => Ok(()),
        status => Err(trial_reason(&lines).unwrap_or_else(|| format!("ffmpeg {status}"))),
    }
}

/// The informative part of a failed trial's stderr: ffmpeg's generic follow-up lines dropped,
/// the `[hevc_nvenc @ 0x55d…]` prefixes removed, the rest joined.
pub fn trial_reason(lines: &[String]) -> Option<String> {
    const GENERIC: &[&str] = &[
        "Error initializing output stream",
        "Error while processing the decoded data",
        "Error reinitializing filters",
        "Error while opening encoder",
        "Error while filtering",
        "Error parsing global options",
        "Conversion failed",
    ];
    let useful: Vec<&str> = lines
        .iter()
        .map(|line| strip_context(line.trim()))
        .filter(|line| !line.is_empty() && !GENERIC.iter().any(|g| line.starts_with(g)))
        .collect();
    if useful.is_empty() {
        return lines.last().map(|l| strip_context(l.trim()).to_string());
    }
    Some(useful.join("; "))
}

/// `[hevc_nvenc @ 0x55d0c1d3a540] Cannot load libcuda.so.1` -> `Cannot load libcuda.so.1`.
fn strip_context(line: &str) -> &str {
    match (line.starts_with('['), line.find("] ")) {
        (true, Some(end)) if line[..end].contains(" @ ") => &line[end + 2..],
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{Device, Encoder};

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn reasons_are_ffmpegs_own_words_without_the_noise() {
        // Captured from Debian 12's ffmpeg 5.1 on a machine without any GPU.
        let nvenc = lines(
            "[hevc_nvenc @ 0x5654bfccc540] Cannot load libcuda.so.1\n\
             Error initializing output stream 0:0 -- Error while opening encoder for output \
             stream #0:0 - maybe incorrect parameters such as bit_rate, rate, width or height",
        );
        assert_eq!(
            trial_reason(&nvenc).as_deref(),
            Some("Cannot load libcuda.so.1")
        );
        let qsv = lines(
            "[hevc_qsv @ 0x55b37ef83540] Error initializing an internal MFX session: \
             unsupported (-3)\nError initializing output stream 0:0 -- boom",
        );
        assert_eq!(
            trial_reason(&qsv).as_deref(),
            Some("Error initializing an internal MFX session: unsupported (-3)")
        );
        assert_eq!(
            trial_reason(&lines("Unknown encoder 'hevc_amf'")).as_deref(),
            Some("Unknown encoder 'hevc_amf'")
        );
        // Only generic lines: the last one is still better than nothing.
        assert_eq!(
            trial_reason(&lines("Conversion failed!")).as_deref(),
            Some("Conversion failed!")
        );
        assert_eq!(trial_reason(&[]), None);
    }

    #[test]
    fn a_trial_is_one_generated_frame_with_the_real_encoder_options() {
        let setup = EncoderSetup::on(
            Encoder::HevcVaapi,
            Device::RenderNode("/dev/dri/renderD128".into()),
        );
        let args: Vec<String> = trial_args(&setup, &EncodeSettings::default())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let text = args.join(" ");
        assert!(
            text.starts_with(
                "-hide_banner -nostdin -loglevel error -init_hw_device vaapi=mc:/dev/dri/renderD128 \
                 -filter_hw_device mc -f lavfi -i color=c=black:s=256x256:r=25:d=1 \
                 -c:v:0 hevc_vaapi -filter:v:0 format=nv12,hwupload"
            ),
            "{text}"
        );
        assert!(text.ends_with("-frames:v 1 -an -f null -"), "{text}");
    }

    #[test]
    fn libx265_passes_a_real_trial_and_a_missing_gpu_fails_with_a_reason() {
        let Ok(ffmpeg) = which::which("ffmpeg") else {
            panic!("ffmpeg must be installed for the tests (apt-get install ffmpeg)");
        };
        assert_eq!(
            run_trial(
                &ffmpeg,
                &EncoderSetup::software(),
                &EncodeSettings::default(),
                TRIAL_TIMEOUT
            ),
            Ok(())
        );
        // No GPU on the test machines: NVENC's trial must fail, naming why.
        let nvenc = EncoderSetup::on(Encoder::HevcNvenc, Device::Default);
        match run_trial(&ffmpeg, &nvenc, &EncodeSettings::default(), TRIAL_TIMEOUT) {
            Err(reason) => assert!(!reason.is_empty() && !reason.contains("0x"), "{reason}"),
            Ok(()) => eprintln!("this machine has a working NVENC; nothing to check"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_hung_trial_is_stopped_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("ffmpeg");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'waiting for a driver' >&2\nexec sleep 30\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let started = Instant::now();
        let err = run_trial(
            &fake,
            &EncoderSetup::software(),
            &EncodeSettings::default(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(err.contains("did not finish within"), "{err}");
    }
}
