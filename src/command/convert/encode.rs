//! The encode step of one file: which encoder (detected once per run), and a hardware
//! encode that fails, or whose output fails verification, redone with libx265.

use std::path::Path;
use std::sync::OnceLock;

use crate::config::{ConvertConfig, EncoderRequest};
use crate::decide::{Container, Plan, SkipReason};
use crate::encoder::{Device, EncodeSettings, Encoder, EncoderSetup};
use crate::gpu::{self, Choice, ForSource};
use crate::lock::Progress;
use crate::output::{Event, Fallback, RejectedEncoder, Reporter};
use crate::probe::{HdrMetadata, MediaInfo};
use crate::process::Tools;
use crate::scan::MediaFile;
use crate::share;
use crate::transcode::{self, Job, Outcome, StopReason};
use crate::verify;

use super::{FileOutcome, main_codec, shown};

/// The run's video encoder, detected once: in the background as soon as the survey finds a
/// file that needs one (never in a dry run, an audio-only run, or a run with nothing to
/// encode), or on first use, whichever comes first.
pub(super) struct Encoders<'a> {
    ffmpeg: &'a Path,
    request: EncoderRequest,
    fallback: bool,
    settings: &'a EncodeSettings,
    choice: OnceLock<Result<Choice, String>>,
}

impl<'a> Encoders<'a> {
    pub(super) fn new(tools: &'a Tools, config: &'a ConvertConfig) -> Encoders<'a> {
        Encoders {
            ffmpeg: &tools.ffmpeg,
            request: config.encoder,
            fallback: config.fallback,
            settings: &config.encode,
            choice: OnceLock::new(),
        }
    }

    /// Detects the encoder now, if no one has yet; run beside the survey and the first
    /// candidate's claim and probe, so the trial encodes cost the first conversion little
    /// time.
    pub(super) fn prefetch(&self, reporter: &Reporter) {
        self.choice.get_or_init(|| self.detect(reporter));
    }

    /// The encoder for one source's main video, or how the file ends without an encode.
    pub(super) fn for_video(
        &self,
        reporter: &Reporter,
        info: &MediaInfo,
    ) -> Result<EncoderSetup, FileOutcome> {
        let choice = self
            .choice
            .get_or_init(|| self.detect(reporter))
            .as_ref()
            .map_err(|err| FileOutcome::Failed(err.clone()))?;
        let hdr = info.main_video().is_some_and(|v| v.is_hdr());
        match gpu::for_source(choice, hdr) {
            ForSource::Use(setup) => Ok(setup),
            ForSource::Software { reason } => {
                reporter.debug(&reason);
                Ok(EncoderSetup::software())
            }
            ForSource::Skip { reason } => {
                Err(FileOutcome::skipped(SkipReason::HdrOnHardware, reason))
            }
        }
    }

    fn detect(&self, reporter: &Reporter) -> Result<Choice, String> {
        let (_, assessments) = gpu::detect(
            self.ffmpeg,
            &gpu::wanted_for(self.request),
            self.settings,
            gpu::Scope::Plausible,
        );
        let choice = match gpu::choose(&assessments, self.request) {
            Ok(choice) => choice,
            // A forced hardware encoder that fails its trial: never turn a run that software
            // could do into a failing one, unless asked to.
            Err(unusable) if unusable.encoder.is_hardware() && self.fallback => {
                let forced_software = EncoderRequest::Forced(Encoder::Libx265);
                let mut choice = gpu::choose(&assessments, forced_software)
                    .map_err(|software| format!("{unusable}; and {software}"))?;
                choice.detail = format!("{unusable}; libx265 is used instead");
                reporter.emit(Event::Warning {
                    file: None,
                    message: choice.detail.clone(),
                });
                choice
            }
            Err(unusable) if unusable.encoder.is_hardware() => {
                return Err(format!(
                    "{unusable} (without --no-fallback, libx265 would be used)"
                ));
            }
            Err(unusable) => {
                return Err(format!(
                    "{unusable}; install an ffmpeg built with libx265 (Debian/Ubuntu: \
                     `sudo apt-get install ffmpeg`)"
                ));
            }
        };
        reporter.emit(Event::EncoderChosen {
            encoder: choice.setup.encoder.name().into(),
            device: match &choice.setup.device {
                Device::Default => None,
                device => Some(device.to_string()),
            },
            detail: choice.detail.clone(),
            rejected: choice
                .rejected
                .iter()
                .map(|(setup, reason)| RejectedEncoder {
                    encoder: setup.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
        });
        Ok(choice)
    }
}

/// One file's encode, from the source to a verified temp output.
pub(super) struct Attempt<'a> {
    pub tools: &'a Tools,
    pub config: &'a ConvertConfig,
    pub reporter: &'a Reporter,
    pub file: &'a MediaFile,
    pub info: &'a MediaInfo,
    pub plan: &'a Plan,
    pub temp: &'a Path,
    pub hdr: Option<&'a HdrMetadata>,
    /// Asked at least every 200 ms during an encode: a reason to stop it now (Ctrl-C, the
    /// deadline, a lost claim), or `None` to go on.
    pub should_stop: &'a dyn Fn() -> Option<StopReason>,
    /// Told what the file is going through (`transcoding`, `verifying`), for the lock.
    pub set_phase: &'a dyn Fn(&str),
    /// Told how far the encode is, for the lock.
    pub set_progress: &'a dyn Fn(Progress),
}

/// A verified temp output and how it was made.
pub(super) struct Encoded {
    /// The encoder that produced it, as events and the cache name it.
    pub encoder: String,
    /// The hardware encode that failed first, if one did.
    pub fallback: Option<Fallback>,
    /// Streams left out on purpose.
    pub dropped: Vec<String>,
    /// The verified output's probe: the cache learns the new file without probing it again.
    pub output: MediaInfo,
}

/// Why one try did not produce a verified file.
pub(super) enum Failure {
    /// The encoder or its output failed: worth redoing in software.
    Encoder(String),
    /// Anything else decides the file's outcome at once: an interruption, an output heading
    /// past the original's size, a disk error.
    Final(FileOutcome),
}

/// The encode settings for one encoder: the run's, or with a `--target-*` the quality
/// searched for that encoder (each encoder has its own scale); or why there are none: a
/// search whose trial encodes failed (redone in software like a failed encode), or how the
/// file ends instead.
pub(super) type SettingsFor<'a> = dyn Fn(&EncoderSetup) -> Result<EncodeSettings, Failure> + 'a;

/// Encodes and verifies, redoing a failed hardware encode with libx265 where allowed, at the
/// settings `settings_for` gives each encoder.
pub(super) fn encode_verified(
    attempt: &Attempt<'_>,
    first: EncoderSetup,
    fallback_allowed: bool,
    settings_for: &SettingsFor<'_>,
) -> Result<Encoded, FileOutcome> {
    let mut setup = first;
    let mut fallback = None;
    loop {
        let tried =
            settings_for(&setup).and_then(|settings| encode_once(attempt, &setup, &settings));
        let error = match tried {
            Ok((dropped, output)) => {
                return Ok(Encoded {
                    encoder: encoder_name(attempt.plan, &setup).into(),
                    fallback,
                    dropped,
                    output,
                });
            }
            Err(Failure::Final(outcome)) => return Err(outcome),
            Err(Failure::Encoder(error)) => error,
        };
        if !setup.encoder.is_hardware() {
            return Err(FileOutcome::Failed(error));
        }
        if !fallback_allowed {
            return Err(FileOutcome::Failed(format!(
                "{error} (not retried with libx265: --no-fallback)"
            )));
        }
        let software = EncoderSetup::software();
        attempt.reporter.emit(Event::Fallback {
            file: shown(&attempt.file.path),
            from: setup.encoder.name().into(),
            to: software.encoder.name().into(),
            error: error.clone(),
        });
        fallback = Some(Fallback {
            from: setup.encoder.name().into(),
            error,
            score: None,
        });
        setup = software;
    }
}

/// FLAC jobs use no video encoder; their events say `flac`.
fn encoder_name(plan: &Plan, setup: &EncoderSetup) -> &'static str {
    if plan.container == Container::Flac {
        "flac"
    } else {
        setup.encoder.name()
    }
}

/// One encode with one encoder, then the verification of its output.
fn encode_once(
    a: &Attempt<'_>,
    setup: &EncoderSetup,
    settings: &EncodeSettings,
) -> Result<(Vec<String>, MediaInfo), Failure> {
    let covers =
        transcode::Covers::extract(&a.tools.ffmpeg, &a.file.path, a.info, a.plan.container)
            .map_err(|err| {
                Failure::Final(FileOutcome::Failed(format!("copying the cover art: {err}")))
            })?;
    let built = transcode::ffmpeg_args(&Job {
        input: &a.file.path,
        output: a.temp,
        info: a.info,
        plan: a.plan,
        encoder: setup,
        settings,
        hdr: a.hdr,
        covers: &covers,
    });
    a.reporter.emit(Event::Converting {
        file: shown(&a.file.path),
        codec: main_codec(a.info).into(),
        encoder: encoder_name(a.plan, setup).into(),
        size_bytes: a.file.size,
        duration_secs: a.info.duration_secs,
    });

    (a.set_phase)("transcoding");
    let name = shown(&a.file.path);
    let outcome = transcode::run(&a.tools.ffmpeg, &built.args, |update| {
        if let Some(reason) = (a.should_stop)() {
            return Some(reason);
        }
        let update = update?;
        if let Some(fraction) = update.fraction(a.info.duration_secs) {
            let eta_secs = update.eta_secs(a.info.duration_secs);
            (a.set_progress)(Progress {
                percent: fraction * 100.0,
                fps: Some(update.fps),
                eta_secs,
            });
            a.reporter.emit(Event::Progress {
                file: name.clone(),
                percent: fraction * 100.0,
                fps: update.fps,
                speed: update.speed,
                eta_secs,
            });
        }
        transcode::will_not_shrink(update, a.info.duration_secs, a.file.size)
            .then_some(StopReason::WouldNotShrink)
    });
    match outcome {
        Ok(Outcome::Finished) => {}
        Ok(Outcome::Stopped(StopReason::Interrupted)) => {
            return Err(Failure::Final(FileOutcome::Interrupted));
        }
        Ok(Outcome::Stopped(StopReason::Deadline)) => {
            return Err(Failure::Final(FileOutcome::skipped(
                SkipReason::Deadline,
                "stopped at the deadline (--stop-at-deadline); left for a later run".into(),
            )));
        }
        Ok(Outcome::Stopped(StopReason::WouldNotShrink)) => {
            return Err(Failure::Final(FileOutcome::skipped(
                SkipReason::NotSmaller,
                format!(
                    "stopped after {:.0}% of the duration: the new file was heading past the original's {} bytes",
                    transcode::EARLY_ABORT_FRACTION * 100.0,
                    a.file.size
                ),
            )));
        }
        Ok(Outcome::Stopped(StopReason::LockLost)) => {
            return Err(Failure::Final(FileOutcome::Abandoned(
                "lost the claim while transcoding (another host took the file over); the new \
                 file was discarded and the original left to it"
                    .into(),
            )));
        }
        Err(err) => return Err(Failure::Encoder(format!("ffmpeg failed: {err}"))),
    }

    (a.set_phase)("verifying");
    if let Err(err) = share::flush(a.temp) {
        return Err(Failure::Final(FileOutcome::Failed(format!(
            "flushing {} to disk: {err}",
            a.temp.display()
        ))));
    }
    match verify::verify(
        &a.tools.ffmpeg,
        &a.tools.ffprobe,
        (&a.file.path, a.info),
        a.temp,
        a.plan.container,
        a.config.verify,
    ) {
        Ok(output) => Ok((built.dropped, output)),
        Err(err) => Err(Failure::Encoder(format!("verification failed: {err}"))),
    }
}
