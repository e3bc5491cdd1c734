//! The dashboard's figures as Prometheus text (exposition format 0.0.4): served at
//! `/metrics`, and written by `media-converter metrics DIR --textfile PATH` for
//! node_exporter's textfile collector.

use std::fmt::Write as _;

use super::snapshot::Snapshot;
use crate::presence::HostState;

/// The snapshot in Prometheus's text format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let library = [("library", snapshot.library.as_str())];
    gauge(
        &mut out,
        "mediaconverter_paused",
        "1 while the pause file stops new work on every host.",
        &[(&library, f64::from(u8::from(snapshot.paused.is_some())))],
    );
    if let Some(t) = &snapshot.totals {
        let figures: [(&str, &str, u64); 12] = [
            (
                "mediaconverter_media_files",
                "Media files in the library.",
                t.files.files,
            ),
            (
                "mediaconverter_media_bytes",
                "Bytes of media in the library.",
                t.files.bytes,
            ),
            (
                "mediaconverter_unprobed_files",
                "Media files the caches know nothing fresh about yet.",
                t.unknown.files,
            ),
            (
                "mediaconverter_converted_files",
                "Files converted by any host.",
                t.converted,
            ),
            (
                "mediaconverter_saved_bytes",
                "Bytes saved by the conversions.",
                t.saved_bytes,
            ),
            (
                "mediaconverter_not_smaller_files",
                "Files kept because converting them did not save enough.",
                t.not_smaller.files,
            ),
            (
                "mediaconverter_failed_files",
                "Files that failed at least once.",
                t.failed.files,
            ),
            (
                "mediaconverter_given_up_files",
                "Files at the failure limit, skipped until retried.",
                t.failed_out.files,
            ),
            (
                "mediaconverter_candidate_files",
                "Files a run would convert.",
                t.candidates.files,
            ),
            (
                "mediaconverter_candidate_bytes",
                "Bytes of the files a run would convert.",
                t.candidates.bytes,
            ),
            (
                "mediaconverter_estimated_saving_bytes",
                "Roughly what converting the candidates would save.",
                t.estimated_saving_bytes,
            ),
            (
                "mediaconverter_in_progress_files",
                "Files hosts are converting now.",
                snapshot.in_progress.len() as u64,
            ),
        ];
        for (name, help, value) in figures {
            gauge(&mut out, name, help, &[(&library, value as f64)]);
        }
    }
    if let Some(eta) = snapshot.eta_secs {
        gauge(
            &mut out,
            "mediaconverter_eta_seconds",
            "How long the candidates left would take at the live hosts' pace.",
            &[(&library, eta)],
        );
    }
    let states = [
        HostState::Working,
        HostState::Idle,
        HostState::GoneQuiet,
        HostState::Stopped,
    ];
    let mut host_state: Rows<'_> = Vec::new();
    let mut host_converted: Rows<'_> = Vec::new();
    let mut host_saved: Rows<'_> = Vec::new();
    for host in &snapshot.hosts {
        for state in states {
            let labels = vec![("host", host.host.as_str()), ("state", state_label(state))];
            host_state.push((labels, f64::from(u8::from(host.state == Some(state)))));
        }
        host_converted.push((vec![("host", host.host.as_str())], host.converted as f64));
        host_saved.push((vec![("host", host.host.as_str())], host.saved_bytes as f64));
    }
    gauge_rows(
        &mut out,
        "mediaconverter_host_state",
        "1 for the state each host is in, from its presence record.",
        &host_state,
    );
    gauge_rows(
        &mut out,
        "mediaconverter_host_converted_files",
        "Files each host has converted, from the caches' history.",
        &host_converted,
    );
    gauge_rows(
        &mut out,
        "mediaconverter_host_saved_bytes",
        "Bytes each host's conversions saved, from the caches' history.",
        &host_saved,
    );
    let jobs: Rows<'_> = snapshot
        .in_progress
        .iter()
        .filter_map(|job| {
            let labels = vec![("host", job.host.as_str()), ("file", job.file.as_str())];
            Some((labels, job.percent?))
        })
        .collect();
    gauge_rows(
        &mut out,
        "mediaconverter_job_progress_percent",
        "How far each conversion in progress has come.",
        &jobs,
    );
    out
}

/// Labelled values of one metric.
type Rows<'a> = Vec<(Vec<(&'static str, &'a str)>, f64)>;

fn state_label(state: HostState) -> &'static str {
    match state {
        HostState::Working => "working",
        HostState::Idle => "idle",
        HostState::GoneQuiet => "gone_quiet",
        HostState::Stopped => "stopped",
    }
}

fn gauge(out: &mut String, name: &str, help: &str, rows: &[(&[(&'static str, &str)], f64)]) {
    let rows: Rows<'_> = rows
        .iter()
        .map(|(labels, v)| (labels.to_vec(), *v))
        .collect();
    gauge_rows(out, name, help, &rows);
}

fn gauge_rows(out: &mut String, name: &str, help: &str, rows: &Rows<'_>) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in rows {
        let labels: Vec<String> = labels
            .iter()
            .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {}", labels.join(","), number(*value));
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.is_finite() {
        format!("{value}")
    } else {
        "NaN".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_plain() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(f64::INFINITY), "NaN");
        let mut out = String::new();
        gauge_rows(
            &mut out,
            "m",
            "help",
            &vec![(vec![("file", "x\"y.mkv")], 1.0)],
        );
        assert_eq!(
            out,
            "# HELP m help\n# TYPE m gauge\nm{file=\"x\\\"y.mkv\"} 1\n"
        );
    }
}
