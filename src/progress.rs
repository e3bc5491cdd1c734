//! Parsing ffmpeg's `-progress` output: `key=value` lines, one block per update.

/// One update from ffmpeg, emitted at each `progress=` line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FfmpegProgress {
    /// Position in the output, seconds.
    pub out_time_secs: f64,
    /// Bytes written so far.
    pub total_size: u64,
    pub fps: f64,
    /// Encoding speed as a multiple of real time.
    pub speed: f64,
    /// ffmpeg said `progress=end`.
    pub finished: bool,
}

/// Accumulates `key=value` lines until a block ends.
#[derive(Debug, Default)]
pub struct ProgressParser {
    current: FfmpegProgress,
}

impl ProgressParser {
    /// Feeds one line; returns the block's values when the line ends a block.
    pub fn feed(&mut self, line: &str) -> Option<FfmpegProgress> {
        let (key, value) = line.trim().split_once('=')?;
        let value = value.trim();
        match key {
            // `out_time_ms` is, despite its name, microseconds too; prefer the honest key.
            "out_time_us" | "out_time_ms" => {
                if let Ok(us) = value.parse::<i64>() {
                    self.current.out_time_secs = us.max(0) as f64 / 1e6;
                }
            }
            "total_size" => {
                if let Ok(size) = value.parse() {
                    self.current.total_size = size;
                }
            }
            "fps" => self.current.fps = value.parse().unwrap_or(self.current.fps),
            "speed" => {
                if let Ok(speed) = value.trim_end_matches('x').trim().parse() {
                    self.current.speed = speed;
                }
            }
            "progress" => {
                self.current.finished = value == "end";
                return Some(self.current);
            }
            _ => {}
        }
        None
    }
}

impl FfmpegProgress {
    /// Fraction done, 0 to 1, given the source duration.
    pub fn fraction(&self, duration_secs: Option<f64>) -> Option<f64> {
        let duration = duration_secs.filter(|d| *d > 0.0)?;
        Some((self.out_time_secs / duration).clamp(0.0, 1.0))
    }

    /// Seconds left at the current speed.
    pub fn eta_secs(&self, duration_secs: Option<f64>) -> Option<f64> {
        let duration = duration_secs.filter(|d| *d > 0.0)?;
        (self.speed > 0.0).then(|| ((duration - self.out_time_secs) / self.speed).max(0.0))
    }

    /// The output size this encode is heading for, once far enough in to tell.
    pub fn projected_size(&self, duration_secs: Option<f64>) -> Option<u64> {
        let fraction = self.fraction(duration_secs).filter(|f| *f > 0.0)?;
        Some((self.total_size as f64 / fraction) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `ffmpeg -progress pipe:1 -nostats` encoding with libx265.
    const CAPTURED: &str = "frame=48\nfps=31.52\nstream_0_0_q=-0.0\nbitrate= 109.6kbits/s\n\
        total_size=27473\nout_time_us=2005333\nout_time_ms=2005333\nout_time=00:00:02.005333\n\
        dup_frames=0\ndrop_frames=0\nspeed=1.32x\nprogress=continue\n\
        frame=240\nfps=33.10\nstream_0_0_q=-0.0\nbitrate=  95.2kbits/s\ntotal_size=119104\n\
        out_time_us=10010000\nout_time_ms=10010000\nout_time=00:00:10.010000\ndup_frames=0\n\
        drop_frames=0\nspeed=1.39x\nprogress=end\n";

    #[test]
    fn parses_real_blocks() {
        let mut parser = ProgressParser::default();
        let updates: Vec<_> = CAPTURED.lines().filter_map(|l| parser.feed(l)).collect();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].total_size, 27_473);
        assert!((updates[0].out_time_secs - 2.005333).abs() < 1e-9);
        assert!((updates[0].fps - 31.52).abs() < 1e-9);
        assert!((updates[0].speed - 1.32).abs() < 1e-9);
        assert!(!updates[0].finished);
        assert!(updates[1].finished);
        assert!((updates[1].fraction(Some(10.0)).unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn survives_na_and_negative_values() {
        let mut parser = ProgressParser::default();
        for line in ["out_time_us=N/A", "speed=N/A", "fps=nan?", "total_size=N/A"] {
            assert!(parser.feed(line).is_none());
        }
        assert!(parser.feed("out_time_us=-5000").is_none());
        let update = parser.feed("progress=continue").unwrap();
        assert_eq!(update.out_time_secs, 0.0);
        assert_eq!(update.eta_secs(Some(10.0)), None);
    }

    #[test]
    fn projection_and_eta() {
        let p = FfmpegProgress {
            out_time_secs: 20.0,
            total_size: 1_000,
            fps: 24.0,
            speed: 2.0,
            finished: false,
        };
        assert_eq!(p.projected_size(Some(100.0)), Some(5_000));
        assert_eq!(p.eta_secs(Some(100.0)), Some(40.0));
        assert_eq!(p.fraction(None), None);
    }
}
