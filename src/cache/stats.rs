//! `cache stats`: what the caches say about a library, without running ffprobe.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Entry;
use crate::decide::{self, Decision, Rules};
use crate::quality::Metric;
use crate::scan::MediaFile;

/// A number of files and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// How many files.
    pub files: u64,
    /// Their sizes added up.
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// The figures `cache stats` reports. Part of the JSON contract (`docs/cache.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// The library, as given on the command line.
    pub dir: String,
    /// Media files found by the scan, and their bytes.
    pub files: Tally,
    /// Of those, files the caches have no fresh facts for (`cache build` probes them).
    pub unknown: Tally,
    /// Files by main codec (video, or audio for audio files).
    pub by_codec: BTreeMap<String, Tally>,
    /// Files by container as ffprobe names it (`matroska,webm`).
    pub by_container: BTreeMap<String, Tally>,
    /// Files this tool converted (any host), their sizes before and after.
    pub converted: u64,
    /// Their originals' sizes added up.
    pub converted_before_bytes: u64,
    /// Their sizes now, added up.
    pub converted_after_bytes: u64,
    /// What converting them saved.
    pub saved_bytes: u64,
    /// Files whose conversion was not worth keeping: no host tries them again.
    pub not_smaller: Tally,
    /// Files that failed at least once, and those at the failure limit (skipped until
    /// `--retry-failed`).
    pub failed: Tally,
    /// Of those, the files at the failure limit.
    pub failed_out: Tally,
    /// Files a run would convert, and roughly how much that would save.
    pub candidates: Tally,
    /// Roughly what converting the candidates would save.
    pub estimated_saving_bytes: u64,
    /// What each host has converted, by the host names in the history.
    pub hosts: BTreeMap<String, HostTally>,
    /// The scores converted files achieved against their originals (`--target-*` runs), by
    /// metric (`vmaf`, `ssim`); absent for a metric no conversion was scored with.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<Metric, Scores>,
}

/// The achieved scores of one metric: how many, the median and the lowest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    values: Vec<f64>,
}

impl Scores {
    fn add(&mut self, value: f64) {
        if value.is_finite() {
            self.values.push(value);
        }
    }

    /// How many conversions were scored.
    pub fn files(&self) -> usize {
        self.values.len()
    }

    /// The middle score (the mean of the middle two for an even count).
    pub fn median(&self) -> Option<f64> {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        }
    }

    /// The worst score.
    pub fn lowest(&self) -> Option<f64> {
        self.values.iter().copied().min_by(f64::total_cmp)
    }
}

impl Stats {
    /// One line per metric for people: `achieved VMAF: 12 files, median 95.31, lowest 94.62`.
    pub fn score_lines(&self) -> Vec<String> {
        self.scores
            .iter()
            .filter_map(|(metric, scores)| {
                Some(format!(
                    "achieved {}: {} files, median {}, lowest {}",
                    metric.name(),
                    scores.files(),
                    metric.format(scores.median()?),
                    metric.format(scores.lowest()?)
                ))
            })
            .collect()
    }
}

/// `{"files": 12, "median": 95.3, "lowest": 94.6}`.
impl Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("Scores", 3)?;
        out.serialize_field("files", &self.files())?;
        out.serialize_field("median", &self.median())?;
        out.serialize_field("lowest", &self.lowest())?;
        out.end()
    }
}

/// One host's share of the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostTally {
    /// Files it converted.
    pub converted: u64,
    /// What those conversions saved.
    pub saved_bytes: u64,
    /// Its latest conversion, by its own clock (RFC 3339): for people, never compared.
    pub last_converted_at: String,
}

impl Stats {
    /// Empty figures for the library at `dir`.
    pub fn new(dir: String) -> Stats {
        Stats {
            dir,
            ..Stats::default()
        }
    }

    /// Counts one scanned file, with its fresh cache entry if there is one.
    pub fn add(&mut self, file: &MediaFile, fresh: Option<&Entry>, rules: &Rules) {
        self.files.add(file.size);
        let Some(entry) = fresh else {
            self.unknown.add(file.size);
            return;
        };
        if let Some(converted) = &entry.converted {
            self.converted += 1;
            self.converted_before_bytes += converted.before_bytes;
            self.converted_after_bytes += converted.after_bytes;
            let saved = converted.before_bytes.saturating_sub(converted.after_bytes);
            self.saved_bytes += saved;
            let host = self.hosts.entry(converted.host.clone()).or_default();
            host.converted += 1;
            host.saved_bytes += saved;
            // RFC 3339 in UTC sorts as text.
            if converted.at > host.last_converted_at {
                host.last_converted_at = converted.at.clone();
            }
            if let Some(score) = converted.score {
                self.scores
                    .entry(score.metric)
                    .or_default()
                    .add(score.value);
            }
        }
        if let Some(failed) = &entry.failed {
            self.failed.add(file.size);
            if failed.attempts >= super::FAILURE_LIMIT {
                self.failed_out.add(file.size);
            }
        }
        let Some(info) = &entry.info else {
            if entry.failed.is_none() {
                self.unknown.add(file.size);
            }
            return;
        };
        let codec = info
            .main_video()
            .or_else(|| info.main_audio())
            .map_or("none", |s| s.codec.as_str());
        tally(&mut self.by_codec, codec, file.size);
        let container = if info.container.is_empty() {
            "unknown"
        } else {
            &info.container
        };
        tally(&mut self.by_container, container, file.size);

        if entry.not_smaller.is_some() {
            self.not_smaller.add(file.size);
            return;
        }
        if entry.history_skip(false, rules.min_savings_pct).is_some() {
            return;
        }
        if let Decision::Convert(plan) = decide::decide(file, info, rules) {
            self.candidates.add(file.size);
            self.estimated_saving_bytes += file.size.saturating_sub(plan.estimated_bytes);
        }
    }
}

fn tally(map: &mut BTreeMap<String, Tally>, key: &str, bytes: u64) {
    match map.get_mut(key) {
        Some(t) => t.add(bytes),
        None => {
            let mut t = Tally::default();
            t.add(bytes);
            map.insert(key.to_owned(), t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::info;
    use super::super::{Converted, Failed, Fingerprint, NotSmaller};
    use super::*;
    use crate::config::MediaKind;
    use crate::quality::Score;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    fn file(name: &str, size: u64) -> MediaFile {
        MediaFile {
            path: PathBuf::from("/lib").join(name),
            kind: MediaKind::Video,
            size,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            listing: None,
        }
    }

    fn entry(file: &MediaFile, codec: &str) -> Entry {
        let mut entry = Entry::new(Fingerprint::of(file));
        entry.info = Some(info(codec));
        entry
    }

    #[test]
    fn stats_count_codecs_history_and_candidates() {
        let rules = crate::command::cache::stats_rules();
        let mut stats = Stats::new("/lib".into());

        let h264 = file("a.mkv", 1000);
        stats.add(&h264, Some(&entry(&h264, "h264")), &rules);

        let hevc = file("b.mkv", 400);
        let mut converted = entry(&hevc, "hevc");
        converted.converted = Some(Box::new(Converted {
            at: "2024-01-01T00:00:00Z".into(),
            host: "nas".into(),
            encoder: "libx265".into(),
            fallback: None,
            before_bytes: 1000,
            after_bytes: 400,
            seconds: 10.0,
            from: None,
            source: None,
            score: Some(Score {
                metric: Metric::Vmaf,
                value: 95.4,
            }),
            search: None,
        }));
        stats.add(&hevc, Some(&converted), &rules);

        let kept = file("c.mkv", 500);
        let mut not_smaller = entry(&kept, "h264");
        not_smaller.not_smaller = Some(Box::new(NotSmaller {
            at: String::new(),
            host: "nas".into(),
            detail: "bigger".into(),
            bytes: None,
            at_least: false,
        }));
        stats.add(&kept, Some(&not_smaller), &rules);

        let bad = file("d.mkv", 7);
        let mut failed = Entry::new(Fingerprint::of(&bad));
        failed.failed = Some(Box::new(Failed {
            at: String::new(),
            host: "nas".into(),
            error: "unreadable".into(),
            attempts: 3,
            stderr_tail: vec![],
        }));
        stats.add(&bad, Some(&failed), &rules);

        stats.add(&file("e.mkv", 50), None, &rules);

        assert_eq!(
            stats.files,
            Tally {
                files: 5,
                bytes: 1957
            }
        );
        assert_eq!(
            stats.unknown,
            Tally {
                files: 1,
                bytes: 50
            }
        );
        assert_eq!(
            stats.by_codec["h264"],
            Tally {
                files: 2,
                bytes: 1500
            }
        );
        assert_eq!(stats.by_codec["hevc"].files, 1);
        assert_eq!(stats.by_container["matroska,webm"].files, 3);
        assert_eq!((stats.converted, stats.saved_bytes), (1, 600));
        assert_eq!(stats.not_smaller.files, 1);
        assert_eq!((stats.failed.files, stats.failed_out.files), (1, 1));
        assert_eq!(
            stats.candidates,
            Tally {
                files: 1,
                bytes: 1000
            }
        );
        assert!(stats.estimated_saving_bytes > 0 && stats.estimated_saving_bytes < 1000);
        let vmaf = &stats.scores[&Metric::Vmaf];
        assert_eq!(
            (vmaf.files(), vmaf.median(), vmaf.lowest()),
            (1, Some(95.4), Some(95.4))
        );
    }

    #[test]
    fn scores_give_their_median_and_lowest_in_json() {
        let mut scores = Scores::default();
        for value in [96.0, 94.5, 95.0, 97.5, f64::NAN] {
            scores.add(value);
        }
        assert_eq!(scores.median(), Some(95.5));
        assert_eq!(scores.lowest(), Some(94.5));
        let json = serde_json::to_value(&scores).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"files": 4, "median": 95.5, "lowest": 94.5})
        );
        assert_eq!(Scores::default().median(), None);
        let mut stats = Stats::new("/lib".into());
        stats.scores.insert(Metric::Vmaf, scores);
        assert_eq!(
            stats.score_lines(),
            ["achieved VMAF: 4 files, median 95.50, lowest 94.50"]
        );
    }
}
